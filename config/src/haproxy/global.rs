//! The `global` section: `[global]` (maxconn, admin_socket from `stats socket`, user,
//! group), `[limits]` (`tune.http.maxhdr`), the syslog targets the proxies' `log global`
//! refer to, and `crt-base`; then `[log]` once the proxies are known.

use std::path::{Path, PathBuf};

use super::emit::{at, toml_str, At, Table};
use super::model::{kw, Directive};
use super::report::{ReportKind, Reports};
use super::settings::{unknown, LogSpec, Settings};

#[derive(Debug, Default)]
pub(crate) struct Global {
    pub maxconn: Option<At<i64>>,
    pub admin_socket: Option<At<String>>,
    pub stats: Option<At<String>>,
    pub user: Option<At<String>>,
    pub group: Option<At<String>>,
    pub max_headers: Option<At<i64>>,
    /// `log TARGET ...` lines of `global`, for `log global`.
    pub logs: Vec<(Directive, String)>,
    pub crt_base: Option<PathBuf>,
}

impl Global {
    pub fn apply(&mut self, d: &Directive, base: &Path, rep: &mut Reports) {
        let arg = d.words.get(1).cloned().unwrap_or_default();
        match kw(d, 0).as_str() {
            "maxconn" => match arg.parse::<i64>() {
                Ok(n) if n >= 1 && n <= i64::from(u32::MAX) => {
                    self.maxconn = Some(at(n, d.no));
                    rep.carried(d, format!("[global] maxconn = {n}"));
                }
                _ => rep.not_carried(d, "not a connection count", "[global] maxconn = 20000"),
            },
            "user" | "group" if !arg.is_empty() => {
                let key = kw(d, 0);
                rep.carried(d, format!("[global] {key} = \"{arg}\": the engine switches to it once its ports are bound"));
                if key == "user" {
                    self.user = Some(at(arg, d.no));
                } else {
                    self.group = Some(at(arg, d.no));
                }
            }
            "stats" if kw(d, 1) == "socket" => self.stats_socket(d, rep),
            "log" if !arg.is_empty() => {
                self.logs.push((d.clone(), arg));
            }
            "crt-base" if !arg.is_empty() => {
                let (p, _) = super::files::resolve(&arg, base);
                rep.carried(
                    d,
                    format!("relative certificate paths are written under {p}"),
                );
                self.crt_base = Some(PathBuf::from(p));
            }
            "ca-base" => rep.not_needed(d, "the engine verifies no client certificates"),
            "tune.http.maxhdr" => match arg.parse::<i64>() {
                Ok(n) if (8..=1000).contains(&n) => {
                    self.max_headers = Some(at(n, d.no));
                    rep.carried(d, format!("[limits] max_headers = {n}"));
                }
                _ => rep.not_carried(
                    d,
                    "outside the engine's range (8 to 1000)",
                    "[limits] max_headers = 100",
                ),
            },
            _ => unknown(d, rep),
        }
    }

    /// `stats socket PATH [mode M] [level L] [expose-fd listeners] ...`
    fn stats_socket(&mut self, d: &Directive, rep: &mut Reports) {
        let Some(path) = d.words.get(2) else {
            return rep.not_carried(
                d,
                "a stats socket without a path",
                "[global] admin_socket = \"/run/engine-admin.sock\"",
            );
        };
        if !path.starts_with('/') && !path.starts_with("unix@") {
            return rep.not_carried(
                d,
                format!("\"{path}\": the engine's admin socket is a UNIX socket"),
                "[global] admin_socket = \"/run/engine-admin.sock\"",
            );
        }
        let path = path.trim_start_matches("unix@").to_owned();
        let mut msg = format!("[global] admin_socket = \"{path}\" (mode 0660; every command of HAProxy's `level admin` that the engine has: show servers, disable/enable server, set server state, set weight)");
        if d.words.iter().any(|w| w == "expose-fd") {
            msg.push_str(
                "; `expose-fd listeners` is not needed: the engine reloads in place on SIGHUP",
            );
        }
        rep.carried(d, msg);
        if let Some(dir) = Path::new(&path).parent().filter(|p| !p.is_dir()) {
            rep.changed(d, format!("the folder {} does not exist on this machine: the engine cannot create its socket there until it does (systemd RuntimeDirectory=), or write admin_socket = \"/run/engine-admin.sock\"", dir.display()));
        }
        self.admin_socket = Some(at(path, d.no));
    }

    pub fn tables(&self) -> Vec<Table> {
        let mut g = Table::new("[global]", 0, "");
        g.opt_int("maxconn", &self.maxconn);
        g.opt_str("admin_socket", &self.admin_socket);
        g.opt_str("stats", &self.stats);
        g.opt_str("user", &self.user);
        g.opt_str("group", &self.group);
        let mut l = Table::new("[limits]", 0, "");
        l.opt_int("max_headers", &self.max_headers);
        vec![g, l]
    }

    /// `[log]` from the frontends' settings: where the first frontend that logs sends its
    /// lines, and whether any of them drops null connections.
    pub fn log_table(&self, fronts: &[&Settings], rep: &mut Reports) -> Table {
        let mut t = Table::new("[log]", 0, "");
        let logged: Vec<&&Settings> = fronts
            .iter()
            .filter(|s| s.log.as_ref().is_some_and(|l| l.v != LogSpec::Off))
            .collect();
        let Some(first) = logged.first() else {
            t.raw("access", toml_str("off"), 0);
            for (d, _) in &self.logs {
                rep.changed(d, "no frontend logs its requests in HAProxy (no `log global` or `log` line in defaults or a frontend): written [log] access = \"off\"");
            }
            return t;
        };
        let target = match first.log.as_ref().map(|l| &l.v) {
            Some(LogSpec::Target(x)) => first.log.as_ref().map(|l| (l.line, x.clone())),
            _ => self.logs.first().map(|(d, x)| (d.no, x.clone())),
        };
        match target {
            Some((line, x)) => {
                let (access, note) = access_of(&x);
                t.raw("access", toml_str(access), line);
                for (d, y) in &self.logs {
                    if *y == x {
                        match &note {
                            Some(n) => rep.changed(d, n.clone()),
                            None => rep.carried(d, format!("[log] access = \"{access}\" (the engine logs as local0, level info)")),
                        }
                    } else {
                        rep.not_carried(
                            d,
                            "a second log target: the engine writes one access log",
                            "have the syslog daemon copy the lines where they are needed",
                        );
                    }
                }
            }
            None => t.raw("access", toml_str("off"), 0),
        }
        let fmt_line = first.httplog.as_ref().filter(|h| h.v).map_or(0, |h| h.line);
        t.raw("format", toml_str("httplog"), fmt_line);
        if let Some(s) = logged
            .iter()
            .find(|s| s.httplog.as_ref().is_none_or(|h| !h.v))
        {
            if let Some(l) = &s.log {
                rep.at_line(ReportKind::Changed, l.line, "a frontend logs without `option httplog`: the engine writes HAProxy's httplog fields for every request (it has no TCP log format)", "");
            }
        }
        if let Some(dn) = fronts
            .iter()
            .find_map(|s| s.dontlognull.clone().filter(|d| d.v))
        {
            t.bool("dontlognull", &dn);
        }
        t
    }
}

/// The engine's `[log] access` for an HAProxy log target, with a note when it differs.
fn access_of(x: &str) -> (&'static str, Option<String>) {
    match x {
        "/dev/log" => ("syslog", None),
        "stdout" => ("stdout", None),
        "stderr" => ("stdout", Some("stderr: written [log] access = \"stdout\" (the engine's diagnostics go to stderr, the access log to stdout)".into())),
        p if p.starts_with('/') || p.starts_with("unix@") => ("syslog", Some(format!("{p}: the engine's syslog is /dev/log; written [log] access = \"syslog\""))),
        other => ("syslog", Some(format!("{other}: the engine writes syslog to the local daemon (/dev/log); written [log] access = \"syslog\": have the daemon forward to {other}"))),
    }
}
