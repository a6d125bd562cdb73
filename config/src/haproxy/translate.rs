//! The translation: sections to settings (each proxy starting from a copy of its
//! defaults, as in HAProxy), then the engine's tables in the order lb.toml writes them,
//! then the reports that need the whole picture (the `defaults` redirect HAProxy refuses,
//! timeouts whose HAProxy fallbacks differ, and every directive nothing else reported).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use super::backend::backend_tables;
use super::emit::{at, toml_str, At, Table};
use super::frontend::frontend_tables;
use super::global::Global;
use super::lexer::lex;
use super::model::{kw, sections, Directive, Kind, Section};
use super::report::{ReportKind, Reports};
use super::servers::{bind_addresses, ServerSpec};
use super::settings::{Settings, Took, TIMEOUT_KEYS};
use super::table::lookup;

/// What the translation of one proxy needs to know of the whole file.
#[derive(Debug)]
pub(crate) struct Cx {
    /// The HAProxy file's folder: relative paths are made absolute against it.
    pub base: PathBuf,
    pub crt_base: Option<PathBuf>,
    /// At most one `defaults` section: its timeouts go to `[defaults]`, and proxies write
    /// only their own. With several, every proxy writes what it inherited.
    pub single_defaults: bool,
    /// (line in a defaults section, frontend) for each defaults redirect carried.
    pub defaults_redirects: Vec<(usize, String)>,
}

/// A frontend, backend or listen section with its settings.
#[derive(Debug)]
pub(crate) struct Proxy {
    pub sec: Section,
    pub s: Settings,
    pub binds: Vec<Directive>,
    pub servers: Vec<ServerSpec>,
}

pub(crate) struct Translation {
    pub tables: Vec<Table>,
    pub rep: Reports,
}

/// Writes the timeouts of `s` among `slots` (indexes of `TIMEOUT_KEYS`) into `t`: with one
/// defaults section, those set by the section itself; else all.
pub(crate) fn timeout_fields(
    t: &mut Table,
    s: &Settings,
    sec: &Section,
    single_defaults: bool,
    slots: &[usize],
    rep: &mut Reports,
) {
    for (i, v) in s.timeouts.iter().enumerate() {
        let Some(v) = v else { continue };
        let own = sec.holds(v.line);
        if slots.contains(&i) {
            if !single_defaults || own {
                t.str(TIMEOUT_KEYS[i], v);
            }
        } else if own
            && ((sec.kind == Kind::Frontend && [0, 2, 5].contains(&i))
                || (sec.kind == Kind::Backend && [1, 3].contains(&i)))
        {
            rep.at_line(
                ReportKind::NotNeeded,
                v.line,
                format!(
                    "HAProxy ignores this timeout in a {} section",
                    sec.kind.word()
                ),
                "",
            );
        }
    }
}

/// The file read into sections and settings.
struct Read {
    proxies: Vec<Proxy>,
    /// How many defaults sections, and the settings of the last.
    defaults: usize,
    last_defaults: Option<Settings>,
    /// The redirect rules written in defaults sections.
    defaults_rules: Vec<Directive>,
    others: Vec<Section>,
}

/// Reads the file into proxies; global directives go to `g`.
fn read(text: &str, base: &Path, g: &mut Global, rep: &mut Reports) -> Read {
    let (lines, errors) = lex(text);
    for l in &lines {
        rep.raw.insert(l.no, l.raw.clone());
    }
    for e in errors {
        rep.raw.insert(e.no, e.raw.clone());
        rep.at_line(
            ReportKind::NotCarried,
            e.no,
            format!("the line cannot be read: {}", e.message),
            "fix the quoting in the HAProxy file and import again",
        );
    }
    let (secs, orphans) = sections(lines);
    for o in &orphans {
        rep.not_carried(
            o,
            "outside any section (HAProxy refuses it)",
            "put it in the section it belongs to",
        );
    }
    let mut named: HashMap<String, Settings> = HashMap::new();
    let mut current = Settings::default();
    let mut r = Read {
        proxies: Vec::new(),
        defaults: 0,
        last_defaults: None,
        defaults_rules: Vec::new(),
        others: Vec::new(),
    };
    for sec in secs {
        let inherited = match &sec.from {
            Some(f) => named.get(f).cloned().unwrap_or_default(),
            None if sec.kind == Kind::Defaults => Settings::default(),
            None => current.clone(),
        };
        match sec.kind {
            Kind::Global => sec.dirs.iter().for_each(|d| g.apply(d, base, rep)),
            Kind::Defaults => {
                let s = read_defaults(&sec, inherited, rep);
                current = s.clone();
                if let Some(n) = &sec.name {
                    named.insert(n.clone(), s.clone());
                }
                r.defaults_rules.extend(
                    s.redirects
                        .iter()
                        .filter(|x| sec.holds(x.d.no))
                        .map(|x| x.d.clone()),
                );
                r.defaults += 1;
                r.last_defaults = Some(s);
            }
            Kind::Other => r.others.push(sec),
            _ => r.proxies.push(read_proxy(sec, inherited, rep)),
        }
    }
    r
}

/// A defaults section applied over what it inherits (`from NAME`, else nothing).
fn read_defaults(sec: &Section, mut s: Settings, rep: &mut Reports) -> Settings {
    for d in &sec.dirs {
        if s.apply(d, Kind::Defaults, rep) == Took::Proxy {
            rep.not_carried(
                d,
                format!("`{}` in a defaults section (HAProxy refuses it)", kw(d, 0)),
                "put it in the frontend or backend it belongs to",
            );
        }
    }
    s
}

/// A frontend, backend or listen section applied over its defaults.
fn read_proxy(sec: Section, mut s: Settings, rep: &mut Reports) -> Proxy {
    let (mut binds, mut servers) = (Vec::new(), Vec::new());
    for d in &sec.dirs {
        if s.apply(d, sec.kind, rep) != Took::Proxy {
            continue;
        }
        match (kw(d, 0).as_str(), sec.kind) {
            ("bind", Kind::Backend) => rep.not_carried(
                d,
                "`bind` in a backend (HAProxy refuses it)",
                "put it in a frontend",
            ),
            ("server", Kind::Frontend) => rep.not_carried(
                d,
                "`server` in a frontend (HAProxy refuses it)",
                "put it in a backend",
            ),
            ("bind", _) => binds.push(d.clone()),
            _ => servers.extend(ServerSpec::parse(d, &s.default_server, rep)),
        }
    }
    Proxy {
        sec,
        s,
        binds,
        servers,
    }
}

/// The whole translation of an HAProxy file whose folder is `base`.
pub(crate) fn translate(text: &str, base: &Path) -> Translation {
    let mut rep = Reports::default();
    let mut g = Global::default();
    let r = read(text, base, &mut g, &mut rep);
    let mut cx = Cx {
        base: base.to_path_buf(),
        crt_base: g.crt_base.clone(),
        single_defaults: r.defaults <= 1,
        defaults_redirects: Vec::new(),
    };
    let mut skipped: HashSet<usize> = HashSet::new();
    report_others(&r.others, &mut rep, &mut skipped);
    let live: Vec<&Proxy> = r
        .proxies
        .iter()
        .filter(|p| keep(p, &mut rep, &mut skipped))
        .collect();
    let tcp_default: Vec<String> = live
        .iter()
        .filter(|p| !p.s.http_mode)
        .map(|p| format!("\"{}\"", p.sec.name_or("?")))
        .collect();
    if !tcp_default.is_empty() {
        rep.at_line(
            ReportKind::Changed,
            0,
            format!("no `mode http` applies to {}: HAProxy's default mode is tcp, in which cookies, http-check and http-request rules do nothing; carried as HTTP, the engine's only mode", tcp_default.join(", ")),
            "",
        );
    }
    let fronts = frontends(&live, &mut g, &mut cx, &mut rep);
    let mut backends = Vec::new();
    let backs = live.iter().filter(|p| {
        p.sec.kind == Kind::Backend || (p.sec.kind == Kind::Listen && !p.servers.is_empty())
    });
    for p in backs {
        let name = p.sec.name_or("backend");
        rep.carried(&p.sec.head, format!("[[backend]] name = \"{name}\""));
        let fallback = fronts.errorfiles.get(&name);
        backends.extend(backend_tables(p, fallback, &mut cx, &mut rep));
    }
    let mut tables = g.tables();
    tables.push(defaults_table(
        r.last_defaults.as_ref().filter(|_| cx.single_defaults),
    ));
    tables.push(g.log_table(&fronts.settings, &mut rep));
    tables.extend(fronts.tables);
    tables.extend(backends);
    defaults_redirect_reports(&r.defaults_rules, &cx, &mut rep);
    fallback_notes(&live, &mut rep);
    sweep(&r.proxies, &skipped, &mut rep);
    Translation { tables, rep }
}

/// Sections the engine has no counterpart for (userlist, peers, ...): reported by their
/// header; their lines are not reported one by one.
fn report_others(others: &[Section], rep: &mut Reports, skipped: &mut HashSet<usize>) {
    for o in others {
        let v = lookup(&o.head.words);
        let what = v.map_or("a section the engine has no counterpart for", |v| v.1);
        let instead = v.map_or("", |v| v.2);
        rep.not_carried(
            &o.head,
            format!("the {} section: {what}", kw(&o.head, 0)),
            instead,
        );
        skipped.extend(o.dirs.iter().map(|d| d.no));
    }
}

/// The engine frontends, the settings of the proxies they came from (for `[log]`), and
/// the `errorfile 503` each frontend section set, by the backend it goes to.
struct Fronts<'a> {
    tables: Vec<Table>,
    settings: Vec<&'a Settings>,
    errorfiles: HashMap<String, At<String>>,
}

fn frontends<'a>(live: &[&'a Proxy], g: &mut Global, cx: &mut Cx, rep: &mut Reports) -> Fronts<'a> {
    let mut f = Fronts {
        tables: Vec::new(),
        settings: Vec::new(),
        errorfiles: HashMap::new(),
    };
    for p in live
        .iter()
        .filter(|p| p.sec.kind.front() && p.sec.kind != Kind::Defaults)
    {
        if stats_proxy(p, g, rep) || (p.sec.kind == Kind::Listen && p.binds.is_empty()) {
            continue;
        }
        if p.binds.is_empty() {
            rep.not_carried(
                &p.sec.head,
                "a frontend without `bind`",
                "add bind = [\"0.0.0.0:80\"] to it in lb.toml",
            );
            continue;
        }
        let backend = route(p, rep);
        if let (Some(b), Some(e)) = (&backend, &p.s.errorfile_503) {
            if p.sec.holds(e.line) {
                f.errorfiles.entry(b.v.clone()).or_insert_with(|| e.clone());
            }
        }
        rep.carried(
            &p.sec.head,
            format!("[[frontend]] name = \"{}\"", p.sec.name_or("frontend")),
        );
        f.tables
            .extend(frontend_tables(p, backend.as_ref(), cx, rep));
        f.settings.push(&p.s);
    }
    f
}

/// The `[defaults]` table from the one defaults section.
fn defaults_table(s: Option<&Settings>) -> Table {
    let mut t = Table::new("[defaults]", 0, "");
    if let Some(s) = s {
        for (i, v) in s.timeouts.iter().enumerate() {
            if let Some(v) = v {
                t.str(TIMEOUT_KEYS[i], v);
            }
        }
        t.opt_int("retries", &s.retries);
    }
    t
}

/// False for a proxy that cannot be carried (not in HTTP mode): reported, with all its
/// directives.
fn keep(p: &Proxy, rep: &mut Reports, skipped: &mut HashSet<usize>) -> bool {
    let Some(m) = &p.s.mode else { return true };
    rep.not_carried(
        &p.sec.head,
        format!(
            "a proxy in `{}`: the engine proxies HTTP only, so it is left out",
            m.raw
        ),
        "keep HAProxy (or another TCP proxy) for this traffic",
    );
    for d in &p.sec.dirs {
        if !rep.has_line(d.no) {
            rep.not_carried(
                d,
                "left out with its proxy (not in HTTP mode)",
                "keep HAProxy (or another TCP proxy) for this traffic",
            );
        }
        skipped.insert(d.no);
    }
    false
}

/// The backend a frontend sends its requests to.
fn route(p: &Proxy, rep: &mut Reports) -> Option<At<String>> {
    if let Some(u) = &p.s.use_backend {
        if let Some(d) = p.s.default_backend.as_ref().filter(|d| p.sec.holds(d.line)) {
            rep.at_line(
                ReportKind::NotNeeded,
                d.line,
                "every request matches the `use_backend` without a condition first",
                "",
            );
        }
        rep.at_line(
            ReportKind::Carried,
            u.line,
            format!(
                "backend = \"{}\" (a use_backend without a condition takes every request)",
                u.v
            ),
            "",
        );
        return Some(u.clone());
    }
    if let Some(d) = &p.s.default_backend {
        rep.at_line(
            ReportKind::Carried,
            d.line,
            format!("backend = \"{}\"", d.v),
            "",
        );
        return Some(d.clone());
    }
    (p.sec.kind == Kind::Listen && !p.servers.is_empty())
        .then(|| at(p.sec.name_or("listen"), p.sec.head.no))
}

/// A frontend or listen that only serves HAProxy's stats page: `[global] stats`.
fn stats_proxy(p: &Proxy, g: &mut Global, rep: &mut Reports) -> bool {
    let own = p.s.stats.iter().any(|d| p.sec.holds(d.no));
    if !own {
        return false;
    }
    let proxying =
        !p.servers.is_empty() || p.s.default_backend.is_some() || p.s.use_backend.is_some();
    let first = p.binds.first().and_then(|b| {
        let a = b.words.get(1)?.split(',').next()?.to_owned();
        bind_addresses(&a, false)
            .ok()
            .map(|(v, _)| (b.clone(), v[0].clone()))
    });
    let taken = proxying || g.stats.is_some() || first.is_none();
    for d in &p.s.stats {
        match (taken, kw(d, 1).as_str()) {
            (true, _) => rep.not_carried(d, "a stats page inside a proxying frontend, or a second one", "[global] stats = \"127.0.0.1:8404\" (a port of its own)"),
            (false, "enable") => rep.carried(d, "the engine's stats endpoint: GET / (HTML), /stats.json, /metrics (Prometheus)"),
            (false, "uri") => rep.changed(d, "the engine serves its stats page at / (and /stats.json, /metrics), not at this URI"),
            (false, "auth" | "realm") => rep.not_carried(d, "the engine's stats page has no login", "bind [global] stats to loopback or a management network, and reach it through SSH or a VPN"),
            (false, "admin") => rep.not_carried(d, "changing servers from the stats page", "the admin socket: disable server, set server state, set weight"),
            (false, _) => rep.not_needed(d, "a stats page option the engine's page does not have"),
        }
    }
    if proxying {
        return false;
    }
    if let (false, Some((b, addr))) = (taken, first) {
        rep.carried(&b, format!("[global] stats = \"{addr}\""));
        g.stats = Some(at(addr, b.no));
    }
    rep.carried(&p.sec.head, "a stats page: [global] stats");
    true
}

/// The `redirect` in `defaults` that HAProxy refuses, reported as fixed where carried.
fn defaults_redirect_reports(rules: &[Directive], cx: &Cx, rep: &mut Reports) {
    for d in rules {
        let to: Vec<&str> = cx
            .defaults_redirects
            .iter()
            .filter(|(l, _)| *l == d.no)
            .map(|(_, f)| f.as_str())
            .collect();
        let refused = kw(d, 0) == "redirect";
        let why = if refused {
            "HAProxy refuses this file: `redirect` is not allowed in a `defaults` section (HAProxy 2.6 stops with an error, so the configuration as published never ran)"
        } else {
            "a redirect in `defaults` applies to every frontend"
        };
        let done = if to.is_empty() {
            "no plain-HTTP frontend takes it".to_owned()
        } else {
            format!("carried where it was meant, to the plain-HTTP frontend{} {} (redirect_https; code 302 unless the rule said otherwise)", if to.len() == 1 { "" } else { "s" }, to.iter().map(|f| format!("\"{f}\"")).collect::<Vec<_>>().join(", "))
        };
        if refused {
            rep.fixed(d, format!("{why}; {done}"), "in HAProxy itself the rule belongs in the plain frontend (`redirect scheme https code 301 if !{ ssl_fc }` under `frontend http_frontend`)");
        } else {
            rep.at_line(ReportKind::Carried, d.no, format!("{why}: {done}"), "");
        }
    }
}

/// Timeouts HAProxy fell back on that the engine does not: the request-head timeout
/// (HAProxy: timeout client), keep-alive (http-request, else client), queue (connect).
fn fallback_notes(live: &[&Proxy], rep: &mut Reports) {
    for p in live {
        let t = &p.s.timeouts;
        let note = |rep: &mut Reports, v: &At<String>, msg: String| {
            rep.at_line(ReportKind::Changed, v.line, msg, "")
        };
        if p.sec.kind.front() {
            if let (None, Some(c)) = (&t[3], &t[1]) {
                note(rep, c, format!("HAProxy also waited up to this timeout ({}) for a request head, as there is no `timeout http-request`; the engine's timeout_http_request is 10s (write timeout_http_request = {} to keep HAProxy's)", c.v, toml_str(&c.v)));
            }
            if let (None, Some(c)) = (&t[4], t[3].as_ref().or(t[1].as_ref())) {
                note(rep, c, format!("HAProxy also used it ({}) for idle keep-alive connections, as there is no `timeout http-keep-alive`; the engine's timeout_keep_alive is 10s", c.v));
            }
        }
        if p.sec.kind.back() {
            if let (None, Some(c)) = (&t[5], &t[0]) {
                note(rep, c, format!("HAProxy also used it ({}) as the queue timeout, as there is no `timeout queue`; the engine's timeout_queue is 30s, so that a surge waits (and past backend.max_queue, the waiting room answers)", c.v));
            }
        }
    }
}

/// Every directive nothing reported yet: nothing in the result uses it.
fn sweep(proxies: &[Proxy], skipped: &HashSet<usize>, rep: &mut Reports) {
    let mut missing: Vec<usize> = rep
        .raw
        .keys()
        .copied()
        .filter(|l| !rep.has_line(*l) && !skipped.contains(l))
        .collect();
    missing.sort_unstable();
    for l in missing {
        let head = rep.raw.get(&l).is_some_and(|r| {
            let w = r
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_ascii_lowercase();
            ["global", "defaults"].contains(&w.as_str())
        });
        if head {
            continue;
        }
        let in_proxy = proxies.iter().any(|p| p.sec.holds(l));
        let msg = if in_proxy {
            "nothing in the result uses it"
        } else {
            "nothing in the result uses it (no proxy takes it from these defaults)"
        };
        rep.at_line(ReportKind::NotNeeded, l, msg, "");
    }
}
