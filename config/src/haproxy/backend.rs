//! Backends (and the back half of `listen`): `balance`, `cookie` (an insert cookie named
//! like Moodle's session cookie becomes SERVERID: with it every login loops), `errorfile
//! 503`, the servers and their health check.

use super::check::check_table;
use super::emit::{at, toml_str, At, Table};
use super::files;
use super::model::{Directive, Kind};
use super::report::Reports;
use super::settings::CookieSpec;
use super::translate::{timeout_fields, Cx, Proxy};

/// The persistence cookie name the engine writes instead of Moodle's own.
pub(crate) const SAFE_COOKIE: &str = "SERVERID";

/// The tables of backend `p`; `fallback_errorfile`: a frontend's `errorfile 503` for a
/// backend without its own.
pub(crate) fn backend_tables(
    p: &Proxy,
    fallback_errorfile: Option<&At<String>>,
    cx: &mut Cx,
    rep: &mut Reports,
) -> Vec<Table> {
    let name = p.sec.name_or("backend");
    let mut t = Table::new("[[backend]]", p.sec.head.no, p.sec.head.raw.clone());
    t.str("name", &at(name.clone(), p.sec.head.no));
    t.opt_str("balance", &p.s.balance);
    if let Some(e) = p.s.errorfile_503.as_ref().or(fallback_errorfile) {
        errorfile(&mut t, e, &name, cx, rep);
    }
    let mut extra = Vec::new();
    if let Some(c) = &p.s.cookie {
        if let Some((ct, app)) = cookie_table(c, &p.servers, rep) {
            if let Some(app) = app {
                t.str("app_cookie", &app);
            }
            extra.push(ct);
        }
    }
    timeout_fields(&mut t, &p.s, &p.sec, cx.single_defaults, &[0, 2, 5], rep);
    if let Some(r) = &p.s.retries {
        if !cx.single_defaults || p.sec.holds(r.line) {
            t.int("retries", r);
        }
    }
    let check = check_table(&p.s, &p.servers, rep);
    let checked = check.is_some();
    extra.extend(check);
    if p.sec.kind == Kind::Backend {
        front_rules_here(p, rep);
    }
    for d in &p.s.default_server {
        rep.carried(d, "its options are applied to each server line after it");
    }
    let mut out = vec![t];
    out.extend(extra);
    for s in &p.servers {
        let what = match &s.address {
            Some(a) => format!("[[backend.server]] name = \"{}\", address = \"{a}\"", s.name),
            None => format!("[[backend.server]] name = \"{}\" (its address as written: engine check refuses it)", s.name),
        };
        rep.carried(&s.d, what);
        out.push(s.table(checked));
    }
    if p.servers.is_empty() {
        rep.changed(&p.sec.head, "a backend without servers: HAProxy answers 503; the engine refuses a backend without servers (add one, or point the frontends elsewhere)");
    }
    out
}

fn errorfile(t: &mut Table, e: &At<String>, backend: &str, cx: &Cx, rep: &mut Reports) {
    match files::errorfile(e, &cx.base) {
        Ok((path, made_absolute)) => {
            t.raw("errorfile_503", toml_str(&path), e.line);
            let note = if made_absolute {
                format!(" (the relative path written as {path})")
            } else {
                String::new()
            };
            rep.at_line(
                super::report::ReportKind::Carried,
                e.line,
                format!("errorfile_503 = \"{path}\"{note}"),
                "",
            );
        }
        Err(why) => {
            let (path, _) = files::resolve(&e.v, &cx.base);
            t.commented(
                "errorfile_503",
                toml_str(&path),
                e.line,
                "the file is not there yet",
            );
            rep.at_line(
                super::report::ReportKind::NotCarried,
                e.line,
                format!("{why}: written as a comment (# errorfile_503 = ...), and until then the engine answers 503 with its own short page"),
                format!("copy the file there (a complete raw HTTP response, as HAProxy's), then uncomment errorfile_503 in the backend \"{backend}\""),
            );
        }
    }
}

/// `[backend.cookie]`, and the backend's `app_cookie` for prefix mode on another cookie.
fn cookie_table(
    c: &CookieSpec,
    servers: &[super::servers::ServerSpec],
    rep: &mut Reports,
) -> Option<(Table, Option<At<String>>)> {
    let d = c.d.as_ref()?;
    let mode = match c.mode.as_deref() {
        Some(m @ ("insert" | "prefix")) => m,
        Some(_) => {
            rep.not_carried(d, "rewrite mode (HAProxy rewrites a cookie the servers set)", "[backend.cookie] mode = \"insert\" with name = \"SERVERID\" (a cookie of the engine's own), or mode = \"prefix\" on the application's session cookie");
            return None;
        }
        None => {
            rep.not_carried(d, "a cookie without insert or prefix (HAProxy only reads a cookie the servers set themselves)", "[backend.cookie] mode = \"insert\" with name = \"SERVERID\"");
            return None;
        }
    };
    let mut t = Table::new("[backend.cookie]", d.no, "cookie");
    let mut app = None;
    let moodle = c.name.to_ascii_lowercase().starts_with("moodlesession");
    if mode == "insert" && moodle {
        t.raw("name", toml_str(SAFE_COOKIE), d.no);
        rep.fixed(
            d,
            format!("the persistence cookie is named {}, like Moodle's own session cookie, in insert mode: HAProxy (and the engine) then remove {} from every request Moodle receives (indirect) and replace the Set-Cookie Moodle sends, so Moodle never sees its session and every login loops back to the login page", c.name, c.name),
            format!("name = \"{SAFE_COOKIE}\" is written: a cookie of the load balancer's own beside Moodle's (in HAProxy: `cookie {SAFE_COOKIE} insert indirect nocache`)"),
        );
    } else {
        t.str("name", &at(c.name.clone(), d.no));
        if mode == "prefix" && !c.name.eq_ignore_ascii_case("MoodleSession") {
            app = Some(at(c.name.clone(), d.no));
        }
    }
    t.raw("mode", toml_str(mode), d.no);
    attributes(&mut t, c, d, mode == "insert", rep);
    if !(mode == "insert" && moodle) {
        let extra = if app.is_some() {
            format!(
                "; app_cookie = \"{}\" (prefix mode prefixes the application's cookie)",
                c.name
            )
        } else {
            String::new()
        };
        rep.carried(
            d,
            format!(
                "[backend.cookie] name = \"{}\", mode = \"{mode}\"{extra}",
                c.name
            ),
        );
    }
    if mode == "insert" && !c.indirect {
        rep.changed(d, "indirect = false is written (HAProxy's default): the servers see the persistence cookie too");
    }
    let bare: Vec<&str> = servers
        .iter()
        .filter(|s| s.cookie.is_none())
        .map(|s| s.name.as_str())
        .collect();
    if !bare.is_empty() {
        rep.changed(d, format!("servers without a `cookie` value ({}) had no persistence in HAProxy; the engine uses each server's name as its cookie value", bare.join(", ")));
    }
    Some((t, app))
}

/// The cookie's flags and attributes, as HAProxy had them (its defaults are not the
/// engine's: indirect and nocache are written either way).
fn attributes(t: &mut Table, c: &CookieSpec, d: &Directive, insert: bool, rep: &mut Reports) {
    if insert {
        t.raw("indirect", c.indirect.to_string(), d.no);
    }
    t.raw("nocache", c.nocache.to_string(), d.no);
    if c.httponly {
        t.raw("httponly", "true".into(), d.no);
    }
    if c.secure {
        t.raw("secure", "true".into(), d.no);
    }
    if let Some(s) = &c.samesite {
        t.raw("samesite", toml_str(s), d.no);
    }
    if let Some(dom) = c.domains.first() {
        t.raw("domain", toml_str(dom), d.no);
    }
    if c.domains.len() > 1 {
        rep.not_carried(
            d,
            "several cookie domains: the engine sets one",
            format!("domain = \"{}\" is written", c.domains[0]),
        );
    }
    if let Some(m) = &c.maxidle {
        t.raw("maxidle", toml_str(m), d.no);
    }
    if let Some(m) = &c.maxlife {
        t.raw("maxlife", toml_str(m), d.no);
    }
}

/// Redirects and header rules written in a backend section: the engine applies them in
/// frontends only.
fn front_rules_here(p: &Proxy, rep: &mut Reports) {
    let rules = p.s.redirects.iter().map(|r| (&r.d, "redirect_https"));
    let headers = p.s.headers.iter().map(|h| (&h.d, "set_headers"));
    for (d, field) in rules.chain(headers) {
        if p.sec.holds(d.no) {
            rep.not_carried(
                d,
                "a rule in a backend section: the engine applies redirects and headers in frontends",
                format!("write {field} in the frontends that use this backend"),
            );
        }
    }
}
