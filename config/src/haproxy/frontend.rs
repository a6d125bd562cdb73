//! Frontends (and the front half of `listen`): `bind` lines with their addresses, `ssl
//! crt` and `alpn`; `redirect scheme https` (from the frontend, or from `defaults`, where
//! HAProxy refuses it: carried to the plain frontends); `http-request set-header`;
//! `option forwardfor`. A frontend with both plain and TLS binds becomes two engine
//! frontends (the engine terminates TLS per frontend): NAME and NAME_tls.

use std::path::Path;

use super::cond::{self, Ssl};
use super::emit::{at, toml_str, toml_str_array, At, Table};
use super::files::{self, Cert};
use super::model::Directive;
use super::report::Reports;
use super::servers::bind_addresses;
use super::translate::{timeout_fields, Cx, Proxy};

/// One `bind` line.
#[derive(Debug, Clone)]
struct Bind {
    d: Directive,
    addrs: Vec<String>,
    tls: bool,
    certs: Vec<Cert>,
    alpn: Option<Vec<String>>,
    no_tickets: bool,
}

const BIND_ARG: &[&str] = &[
    "crt",
    "crt-list",
    "alpn",
    "npn",
    "ciphers",
    "ciphersuites",
    "curves",
    "ecdhe",
    "ca-file",
    "crl-file",
    "verify",
    "ssl-min-ver",
    "ssl-max-ver",
    "name",
    "id",
    "maxconn",
    "backlog",
    "process",
    "thread",
    "interface",
    "mss",
    "namespace",
    "nice",
    "mode",
    "uid",
    "gid",
    "user",
    "group",
    "level",
    "severity-output",
    "tcp-ut",
    "proto",
    "ca-ignore-err",
    "crt-ignore-err",
    "ca-sign-file",
    "ca-sign-pass",
    "sigalgs",
    "client-sigalgs",
    "tls-ticket-keys",
    "label",
    "ca-verify-file",
    "shards",
    "idle-ping",
    "guid-prefix",
    "quic-cc-algo",
];

const NO_COUNTERPART: &str =
    "no counterpart in the engine: leave it out (the engine's own behaviour applies)";

const TLS_TUNING: &[&str] = &[
    "ssl-min-ver",
    "ssl-max-ver",
    "no-sslv3",
    "no-tlsv10",
    "no-tlsv11",
    "force-tlsv12",
    "ciphers",
    "ciphersuites",
    "curves",
    "ecdhe",
    "prefer-client-ciphers",
    "sigalgs",
    "npn",
];

fn parse_bind(d: &Directive, crt_base: &Path, rep: &mut Reports) -> Bind {
    let mut b = Bind {
        d: d.clone(),
        addrs: Vec::new(),
        tls: false,
        certs: Vec::new(),
        alpn: None,
        no_tickets: false,
    };
    let v6only = d.words.iter().any(|w| w == "v6only");
    let mut i = 2;
    while i < d.words.len() {
        let w = d.words[i].to_ascii_lowercase();
        let arg = if BIND_ARG.contains(&w.as_str()) {
            i += 1;
            d.words.get(i).cloned().unwrap_or_default()
        } else {
            String::new()
        };
        match w.as_str() {
            "ssl" => b.tls = true,
            "crt" => b.certs.extend(files::certs(d, &arg, crt_base, rep)),
            "alpn" => b.alpn = Some(arg.split(',').map(str::to_owned).collect()),
            "no-tls-tickets" => b.no_tickets = true,
            "v6only" | "v4v6" => {}
            "ssl-min-ver" if arg.eq_ignore_ascii_case("TLSv1.3") => rep.not_carried(d, "TLS 1.3 only: the engine offers TLS 1.2 and 1.3", "none: TLS 1.2 clients are served too"),
            t if TLS_TUNING.contains(&t) => rep.not_needed(d, format!("`{t}`: the engine's TLS (rustls) offers TLS 1.2 and 1.3 only, with modern cipher suites: nothing to tune")),
            "name" | "id" | "process" | "thread" | "defer-accept" | "tfo" | "nice" => {
                rep.not_needed(d, format!("`{w}`: a listener option the engine does not need"))
            }
            o => rep.not_carried(d, format!("the bind option `{o}{}`", if arg.is_empty() { String::new() } else { format!(" {arg}") }), NO_COUNTERPART),
        }
        i += 1;
    }
    for a in d.words.get(1).map(String::as_str).unwrap_or("").split(',') {
        match bind_addresses(a, v6only) {
            Ok((list, note)) => {
                b.addrs.extend(list);
                if let Some(n) = note {
                    rep.changed(d, n);
                }
            }
            Err((why, instead)) => rep.not_carried(d, why, instead),
        }
    }
    if !b.certs.is_empty() && !b.tls {
        rep.not_carried(
            d,
            "`crt` without `ssl`: HAProxy does not terminate TLS on this bind either",
            "add `ssl` if TLS was meant",
        );
        b.certs.clear();
    }
    let what = if b.tls { "TLS" } else { "plain HTTP" };
    rep.carried(d, format!("bind = {} ({what})", toml_str_array(&b.addrs)));
    b
}

/// The engine frontends of proxy `p`, going to `backend`.
pub(crate) fn frontend_tables(
    p: &Proxy,
    backend: Option<&At<String>>,
    cx: &mut Cx,
    rep: &mut Reports,
) -> Vec<Table> {
    let name = p.sec.name_or("frontend");
    let crt_base = cx.crt_base.clone().unwrap_or_else(|| cx.base.clone());
    let binds: Vec<Bind> = p
        .binds
        .iter()
        .map(|d| parse_bind(d, &crt_base, rep))
        .collect();
    let plain: Vec<&Bind> = binds.iter().filter(|b| !b.tls).collect();
    let tls: Vec<&Bind> = binds.iter().filter(|b| b.tls).collect();
    let mut halves = Vec::new();
    if !plain.is_empty() && !tls.is_empty() {
        rep.changed(&p.sec.head, format!("plain and TLS binds in one frontend: the engine terminates TLS per frontend, so it becomes frontend \"{name}\" (plain HTTP) and frontend \"{name}_tls\" (TLS)"));
        halves.push((name.clone(), plain));
        halves.push((format!("{name}_tls"), tls));
    } else {
        halves.push((name.clone(), if tls.is_empty() { plain } else { tls }));
    }
    let mut out = Vec::new();
    let mut used_acls = Vec::new();
    let mut applied = vec![false; p.s.headers.len()];
    let both = halves.len() == 2;
    for (hname, hbinds) in &halves {
        let is_tls = hbinds.first().is_some_and(|b| b.tls);
        out.push(main_table(p, hname, hbinds, backend, cx, rep));
        if !is_tls {
            out.extend(redirect_table(p, hname, both, cx, rep, &mut used_acls));
        } else {
            tls_table(hbinds, &mut out);
            not_on_tls(p, hname, rep);
        }
        out.extend(headers_table(p, is_tls, &mut applied, rep));
    }
    for (h, ok) in p.s.headers.iter().zip(applied) {
        if !ok && p.sec.holds(h.d.no) {
            rep.not_needed(&h.d, "its condition is never true on this frontend");
        }
    }
    report_acls(p, &used_acls, rep);
    out
}

/// The `[[frontend]]` table itself: name, bind, backend, forwarded_for, timeouts, and
/// alpn.
fn main_table(
    p: &Proxy,
    name: &str,
    binds: &[&Bind],
    backend: Option<&At<String>>,
    cx: &Cx,
    rep: &mut Reports,
) -> Table {
    let mut t = Table::new("[[frontend]]", p.sec.head.no, p.sec.head.raw.clone());
    t.str("name", &at(name.to_owned(), p.sec.head.no));
    let items = binds
        .iter()
        .flat_map(|b| b.addrs.iter().map(|a| (toml_str(a), b.d.no)))
        .collect();
    t.array("bind", items);
    if let Some(b) = backend {
        t.str("backend", b);
    }
    forwarded_for(p, &mut t, rep);
    timeout_fields(&mut t, &p.s, &p.sec, cx.single_defaults, &[1, 3, 4], rep);
    if let Some(b) = binds.iter().find(|b| b.alpn.is_some() && b.tls) {
        alpn_field(b, &mut t, rep);
    }
    t
}

/// `alpn`: the protocols the engine speaks (h2, http/1.1) carried in their order; others
/// (http/1.0, spdy, ...) left out with a line saying so.
fn alpn_field(b: &Bind, t: &mut Table, rep: &mut Reports) {
    let all = b.alpn.clone().unwrap_or_default();
    let (kept, dropped): (Vec<String>, Vec<String>) = all
        .iter()
        .cloned()
        .partition(|p| p == "h2" || p == "http/1.1");
    if kept.is_empty() {
        rep.changed(&b.d, format!("alpn {}: none of these is h2 or http/1.1; the engine's default (h2, http/1.1) applies", all.join(",")));
        return;
    }
    t.raw("alpn", toml_str_array(&kept), b.d.no);
    if dropped.is_empty() {
        rep.carried(
            &b.d,
            format!("alpn {} as alpn = {}", all.join(","), toml_str_array(&kept)),
        );
    } else {
        rep.changed(
            &b.d,
            format!(
                "alpn {}: carried as alpn = {}; {} left out (the engine speaks h2 and http/1.1)",
                all.join(","),
                toml_str_array(&kept),
                dropped.join(", ")
            ),
        );
    }
}

/// ACLs: carried when a carried redirect used them (its except_prefixes), else listed.
fn report_acls(p: &Proxy, used: &[String], rep: &mut Reports) {
    for a in &p.s.acls {
        if used.contains(&a.name) {
            rep.carried(
                &a.d,
                "used by the redirect: its paths are the redirect's except_prefixes",
            );
        } else {
            rep.not_carried(
                &a.d,
                "ACLs with conditions: the engine has no conditions (only redirect_https's except_prefixes)",
                "route by frontend (address or port) and backend instead; or keep the condition in Moodle",
            );
        }
    }
}

fn forwarded_for(p: &Proxy, t: &mut Table, rep: &mut Reports) {
    match &p.s.forwardfor {
        Some(f) => t.bool("forwarded_for", f),
        None => {
            t.noted(
                "forwarded_for",
                "true".into(),
                0,
                "no `option forwardfor`: see the report",
            );
            rep.changed(&p.sec.head, "no `option forwardfor`: HAProxy passed on whatever X-Forwarded-For a client sent, and Moodle trusts that header by default (getremoteaddrconf), so a student could forge the address Moodle logs and checks quiz network restrictions against. Written forwarded_for = true: the engine replaces it by the client's real address (write false to keep HAProxy's behaviour)");
        }
    }
}

fn tls_table(binds: &[&Bind], out: &mut Vec<Table>) {
    let line = binds.first().map_or(0, |b| b.d.no);
    let mut t = Table::new("[frontend.tls]", line, "ssl crt");
    let mut seen = Vec::new();
    let mut items = Vec::new();
    for b in binds {
        for c in &b.certs {
            if !seen.contains(c) {
                seen.push(c.clone());
                items.push((c.literal(), b.d.no));
            }
        }
    }
    t.array("certs", items);
    if let Some(b) = binds.iter().find(|b| b.no_tickets) {
        t.raw("session_resumption", "false".into(), b.d.no);
    }
    out.push(t);
}

/// Redirect rules of a TLS frontend: `!{ ssl_fc }` never fires there.
fn not_on_tls(p: &Proxy, name: &str, rep: &mut Reports) {
    for r in &p.s.redirects {
        if !p.sec.holds(r.d.no) {
            continue;
        }
        match cond::parse(&r.cond, &p.s.acls, true) {
            Ok(c) if c.ssl == Ssl::Plain => rep.not_needed(&r.d, format!("`!{{ ssl_fc }}` is never true on the TLS frontend \"{name}\"")),
            Ok(_) => rep.not_carried(&r.d, "a redirect to HTTPS on a frontend that already is HTTPS would loop", "put redirect_https on the plain frontend only"),
            Err(e) => rep.not_carried(&r.d, format!("its condition: {e}"), "the engine redirects plain frontends only: put redirect_https on the plain frontend"),
        }
    }
}

/// `[frontend.redirect_https]` of a plain frontend: the first `redirect scheme https`
/// that applies to plain connections.
fn redirect_table(
    p: &Proxy,
    name: &str,
    split: bool,
    cx: &mut Cx,
    rep: &mut Reports,
    used: &mut Vec<String>,
) -> Option<Table> {
    let mut chosen: Option<Table> = None;
    for r in &p.s.redirects {
        let own = p.sec.holds(r.d.no);
        let c = match cond::parse(&r.cond, &p.s.acls, true) {
            Ok(c) => c,
            Err(e) => {
                rep.not_carried(&r.d, format!("its condition cannot be carried: {e}"), "redirect_https redirects every request of a plain frontend except the paths in except_prefixes (from `!{ path_beg ... }`)");
                continue;
            }
        };
        if c.ssl == Ssl::Tls {
            if own && !split {
                rep.not_needed(&r.d, "`{ ssl_fc }` is never true on a plain-HTTP frontend");
            }
            continue;
        }
        if chosen.is_some() {
            rep.not_carried(
                &r.d,
                "a second redirect: the first one already takes these requests",
                "one redirect_https per frontend",
            );
            continue;
        }
        let code = if [301, 302, 303, 307, 308].contains(&r.code.v) {
            r.code.clone()
        } else {
            rep.not_carried(
                &r.d,
                format!("code {}: not a redirect status", r.code.v),
                "code = 301, 302, 303, 307 or 308 (302 is written)",
            );
            at(302, r.d.no)
        };
        used.extend(c.acls.iter().cloned());
        let mut t = Table::new("[frontend.redirect_https]", r.d.no, "redirect scheme https");
        t.int("code", &code);
        if !c.except.is_empty() {
            t.array(
                "except_prefixes",
                c.except.iter().map(|e| (toml_str(e), r.d.no)).collect(),
            );
        }
        let what = format!(
            "redirect_https = {{ code = {}{} }}",
            code.v,
            if c.except.is_empty() {
                String::new()
            } else {
                format!(", except_prefixes = {}", toml_str_array(&c.except))
            }
        );
        if own {
            let default = if !r.d.words.iter().any(|w| w == "code") {
                " (302 is HAProxy's default code)"
            } else {
                ""
            };
            rep.carried(&r.d, format!("{what}{default}"));
        } else {
            cx.defaults_redirects.push((r.d.no, name.to_owned()));
        }
        chosen = Some(t);
    }
    chosen
}

/// `[frontend.set_headers]` of one half: the set-header and add-header rules that apply
/// to its connections, the last of one name winning as in HAProxy.
fn headers_table(p: &Proxy, tls: bool, applied: &mut [bool], rep: &mut Reports) -> Option<Table> {
    let mut set: Vec<(String, At<String>)> = Vec::new();
    for (i, h) in p.s.headers.iter().enumerate() {
        let c = match cond::parse(&h.cond, &p.s.acls, false) {
            Ok(c) => c,
            Err(e) => {
                rep.not_carried(&h.d, format!("its condition cannot be carried: {e}"), "set_headers applies to every request of the frontend; conditions on TLS are carried by splitting plain and TLS frontends");
                applied[i] = true;
                continue;
            }
        };
        let fits = match c.ssl {
            Ssl::Any => true,
            Ssl::Plain => !tls,
            Ssl::Tls => tls,
        };
        if !fits {
            continue;
        }
        applied[i] = true;
        let msg = format!("set_headers {} = {}", toml_str(&h.name), toml_str(&h.value));
        if h.add {
            rep.changed(&h.d, format!("{msg}: set, replacing any the client sent (the engine removes a client's X-Forwarded-Proto and X-Forwarded-SSL on every frontend)"));
        } else {
            rep.carried(&h.d, msg);
        }
        set.retain(|(n, _)| !n.eq_ignore_ascii_case(&h.name));
        set.push((h.name.clone(), at(h.value.clone(), h.d.no)));
    }
    let first = set.first()?.1.line;
    let mut t = Table::new("[frontend.set_headers]", first, "http-request set-header");
    for (n, v) in &set {
        t.raw(&toml_str(n), toml_str(&v.v), v.line);
    }
    Some(t)
}
