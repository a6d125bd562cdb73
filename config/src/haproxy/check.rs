//! Health checks: `option httpchk`, `http-check send` and `http-check expect` with the
//! servers' `check inter rise fall` become one `[backend.check]`. HAProxy ignores
//! http-check rules without `option httpchk` (the seed's mistake): they are carried as
//! the check they describe, and the report says so.

use super::emit::{at, toml_str, At, Table};
use super::model::{kw, Directive};
use super::report::Reports;
use super::servers::ServerSpec;
use super::settings::Settings;

impl Settings {
    /// `http-check send [meth M] [uri U] [ver V] [hdr NAME VALUE]... [body B]`
    pub(crate) fn check_send(&mut self, d: &Directive, rep: &mut Reports) {
        let w = &d.words;
        let mut i = 2;
        while i < w.len() {
            let key = w[i].to_ascii_lowercase();
            let val = w.get(i + 1).cloned().unwrap_or_default();
            match key.as_str() {
                "meth" => self.send.method = Some(at(val.to_ascii_uppercase(), d.no)),
                "uri" => self.send.uri = Some(at(val, d.no)),
                "ver" if val.starts_with("HTTP/1.") => {}
                "hdr" => {
                    let v = w.get(i + 2).cloned().unwrap_or_default();
                    if val.eq_ignore_ascii_case("host") {
                        self.send.host = Some(at(v, d.no));
                    } else {
                        rep.not_carried(
                            d,
                            format!("the check header `{val}`"),
                            "the engine's check sends Host only ([backend.check] host)",
                        );
                    }
                    i += 1;
                }
                "comment" => {}
                _ => rep.not_carried(
                    d,
                    format!("`{key}` in http-check send"),
                    "the engine's check sends method, uri and Host without a body",
                ),
            }
            i += 2;
        }
    }

    /// `http-check expect [options] [!] status|string PATTERN`
    pub(crate) fn check_expect(&mut self, d: &Directive, rep: &mut Reports) {
        let w = &d.words;
        let mut i = 2;
        while i + 1 < w.len()
            && matches!(
                kw(d, i).as_str(),
                "min-recv"
                    | "comment"
                    | "ok-status"
                    | "error-status"
                    | "tout-status"
                    | "on-success"
                    | "on-error"
                    | "status-code"
            )
        {
            i += 2;
        }
        let (what, pattern) = (kw(d, i), w.get(i + 1).cloned());
        match (what.as_str(), pattern) {
            ("status", Some(p)) if status_range(&p).is_some() => {
                self.expect_status = Some(at(status_range(&p).unwrap_or(p), d.no));
            }
            ("string", Some(p)) if !p.is_empty() => self.expect_string = Some(at(p, d.no)),
            ("!", _) => rep.not_carried(
                d,
                "a negated expectation",
                "expect_status (a status or a range) and expect_string (a string the body contains)",
            ),
            (m, _) => rep.not_carried(
                d,
                format!("http-check expect {m}: regular expressions, headers, status lists and custom expressions"),
                "expect_status = \"200\" or a range such as \"200-399\", and expect_string = \"Moodle\"",
            ),
        }
    }
}

/// A status or a range `A-B` as the engine writes it.
fn status_range(p: &str) -> Option<String> {
    let ok = |s: &str| s.len() == 3 && s.parse::<u16>().is_ok_and(|n| (100..=599).contains(&n));
    match p.split_once('-') {
        Some((a, b)) if ok(a) && ok(b) && a <= b => Some(format!("{a}-{b}")),
        None if ok(p) => Some(p.to_owned()),
        _ => None,
    }
}

fn first<T: Clone>(a: &Option<At<T>>, b: &Option<At<T>>) -> Option<At<T>> {
    a.clone().or_else(|| b.clone())
}

/// The `[backend.check]` of a backend whose servers are `servers`, or `None` when no
/// server has `check`.
pub(crate) fn check_table(
    s: &Settings,
    servers: &[ServerSpec],
    rep: &mut Reports,
) -> Option<Table> {
    let checked: Vec<&ServerSpec> = servers
        .iter()
        .filter(|x| x.check.as_ref().is_some_and(|c| c.v))
        .collect();
    let Some(lead) = checked.first() else {
        let rules = s.httpchk.iter().map(|(d, _)| d).chain(&s.check_rules);
        for d in rules {
            rep.not_needed(d, "no server of the backend has `check`: no server is probed, in HAProxy as in the engine");
        }
        return None;
    };
    let mut t = Table::new("[backend.check]", lead.d.no, "health check");
    probe(s, lead, &mut t, rep);
    t.opt_str("interval", &lead.inter);
    t.opt_int("rise", &lead.rise);
    t.opt_int("fall", &lead.fall);
    t.opt_str("timeout", &s.check_timeout);
    for o in &checked[1..] {
        let differs = o.inter.as_ref().map(|x| &x.v) != lead.inter.as_ref().map(|x| &x.v)
            || o.rise.as_ref().map(|x| x.v) != lead.rise.as_ref().map(|x| x.v)
            || o.fall.as_ref().map(|x| x.v) != lead.fall.as_ref().map(|x| x.v);
        if differs {
            rep.changed(&o.d, format!("its inter/rise/fall differ from server {}'s: the engine has one check per backend, and {}'s values are written", lead.name, lead.name));
        }
    }
    if let Some(ss) = servers.iter().find_map(|x| x.slowstart.clone()) {
        t.str("slowstart", &ss);
    }
    match checked.iter().find(|x| x.observe.is_some()) {
        Some(o) => {
            let n = o.error_limit.clone().unwrap_or(at(10, o.observe.unwrap_or(o.d.no)));
            t.int("observe_errors", &n);
        }
        None => rep.changed(&lead.d, "the engine also watches live traffic: 10 connection failures or 5xx answers within 10 s take a server DOWN before its next probe (observe_errors); write observe_errors = 0 in [backend.check] to rely on the probes alone, as HAProxy did"),
    }
    Some(t)
}

/// What the probe sends and expects, with the report of how the rules were carried.
fn probe(s: &Settings, lead: &ServerSpec, t: &mut Table, rep: &mut Reports) {
    let chk = s
        .httpchk
        .as_ref()
        .map(|(_, p)| p.clone())
        .unwrap_or_default();
    let mut method = first(&s.send.method, &chk.method);
    let options_default = method.is_none() && s.httpchk.is_some();
    if let (true, Some((d, _))) = (options_default, &s.httpchk) {
        method = Some(at("OPTIONS".to_owned(), d.no));
    }
    let uri = first(&s.send.uri, &chk.uri);
    let host = first(&s.send.host, &chk.host);
    let described = describe(&method, &uri, &host);
    match (&s.httpchk, s.check_rules.is_empty()) {
        (Some((d, _)), _) => {
            if options_default {
                rep.carried(d, format!("[backend.check] {described} (OPTIONS is HAProxy's default method)"));
            } else {
                rep.carried(d, format!("[backend.check] {described}"));
            }
            for r in &s.check_rules {
                rep.carried(r, "[backend.check]");
            }
        }
        (None, false) => {
            let lines: Vec<String> = s.check_rules.iter().map(|r| r.no.to_string()).collect();
            let (head, rest) = s.check_rules.split_at(1);
            for r in head {
                rep.fixed(
                    r,
                    format!("HAProxy ignores http-check rules without `option httpchk` (line{} {}): it only checked that a TCP connection to each server opened, so a node answering errors stayed UP. Carried as the HTTP check they describe ([backend.check] {described})", if lines.len() == 1 { "" } else { "s" }, lines.join(", ")),
                    "in HAProxy itself, `option httpchk` in the backend would have turned the rules on",
                );
            }
            for r in rest {
                rep.carried(r, format!("[backend.check], with line {} (HAProxy ignored it: see there)", head[0].no));
            }
        }
        (None, true) => rep.changed(
            &lead.d,
            "`check` without `option httpchk`: HAProxy only checked that a TCP connection opened; the engine's checks are HTTP, so [backend.check] probes GET / and passes on 200-399 (for Moodle, write uri = \"/login/index.php\", host = the wwwroot's host name, expect_status = \"200\", expect_string = \"Moodle\")",
        ),
    }
    t.opt_str("method", &method);
    t.opt_str("uri", &uri);
    t.opt_str("host", &host);
    match (&s.expect_status, &s.expect_string) {
        (Some(st), _) => t.str("expect_status", st),
        (None, Some(es)) => {
            t.raw("expect_status", toml_str("200"), es.line);
            if let Some(d) = s.check_rules.iter().find(|d| d.no == es.line) {
                rep.changed(d, "HAProxy's `expect string` alone passes any status whose body holds the string; expect_status = \"200\" is written as well, so that a redirect to the login page or an error page holding it does not pass");
            }
        }
        (None, None) => {}
    }
    t.opt_str("expect_string", &s.expect_string);
}

fn describe(m: &Option<At<String>>, u: &Option<At<String>>, h: &Option<At<String>>) -> String {
    let m = m.as_ref().map_or("GET", |x| x.v.as_str());
    let u = u.as_ref().map_or("/", |x| x.v.as_str());
    match h {
        Some(h) => format!("{m} {u} with Host {}", h.v),
        None => format!("{m} {u}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        assert_eq!(status_range("200").as_deref(), Some("200"));
        assert_eq!(status_range("200-399").as_deref(), Some("200-399"));
        assert_eq!(status_range("399-200"), None);
        assert_eq!(status_range("200,301"), None);
        assert_eq!(status_range("2xx"), None);
        assert_eq!(status_range("99"), None);
    }
}
