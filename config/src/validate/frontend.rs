//! `[[frontend]]`: its name (unique among frontends), the addresses it binds,
//! `redirect_https`, the backend it names (with "did you mean"), `set_headers` and its
//! timeouts. Its `tls` table is checked in `tls`.

use super::addr::Bind;
use super::backend::BackendSet;
use super::{
    closest_name, fld, is_tchar, is_token, parse_addr_opts, quote_list, section_label, tls, Ctx,
    NOWHERE,
};
use crate::raw::{OrderedMap, RawBackend, RawConfig, RawFrontend, RawRedirect, Scalar, S};
use crate::types::{Alpn, Frontend, RedirectHttps, Timeouts};
use std::collections::HashSet;
use std::ops::Range;

/// What each frontend is checked against: the sections validated before it.
struct Env<'r> {
    defaults: &'r Timeouts,
    backends: &'r BackendSet,
    raw_backends: &'r [S<RawBackend>],
}

/// Every frontend, and for each backend whether a frontend uses it. The addresses they
/// bind are added to `binds`.
pub(super) fn validate_frontends(
    raw: &RawConfig,
    defaults: &Timeouts,
    backends: &BackendSet,
    binds: &mut Vec<Bind>,
    cx: &mut Ctx,
) -> (Vec<Frontend>, Vec<bool>) {
    let env = Env {
        defaults,
        backends,
        raw_backends: &raw.backend,
    };
    let mut frontends = Vec::new();
    let mut names: HashSet<String> = HashSet::new();
    let mut used = vec![false; backends.backends.len()];
    for (i, f) in raw.frontend.iter().enumerate() {
        let label = section_label("frontend", f.get_ref().name.as_ref(), i);
        check_frontend_name(f, &label, &mut names, cx);
        let fe = validate_frontend(f, &label, i, &env, binds, cx);
        if let Some(b) = fe.backend {
            used[b] = true;
        }
        frontends.push(fe);
    }
    if raw.frontend.is_empty() {
        cx.err(
            &NOWHERE,
            "frontend".into(),
            "there is no [[frontend]]: the engine would listen on nothing",
            "add a [[frontend]] with name = \"http\", bind = [\"0.0.0.0:80\"] and backend = \"<a backend's name>\"",
        );
    }
    (frontends, used)
}

/// A frontend needs a name, not empty and not another frontend's.
fn check_frontend_name(f: &S<RawFrontend>, label: &str, names: &mut HashSet<String>, cx: &mut Ctx) {
    match &f.get_ref().name {
        None => cx.err(
            &f.span(),
            fld(label, "name"),
            "a frontend needs a name",
            "write name = \"http\" (any name, unique among frontends)",
        ),
        Some(n) if n.get_ref().trim().is_empty() => cx.err(
            &n.span(),
            fld(label, "name"),
            "is empty",
            "write name = \"http\" (any name, unique among frontends)",
        ),
        Some(n) => {
            if !names.insert(n.get_ref().clone()) {
                cx.err(
                    &n.span(),
                    fld(label, "name"),
                    format!("a second frontend is named \"{}\"", n.get_ref()),
                    "give each frontend its own name",
                );
            }
        }
    }
}

fn validate_frontend(
    f: &S<RawFrontend>,
    label: &str,
    index: usize,
    env: &Env,
    binds: &mut Vec<Bind>,
    cx: &mut Ctx,
) -> Frontend {
    let rf = f.get_ref();
    let name = rf
        .name
        .as_ref()
        .map(|n| n.get_ref().clone())
        .unwrap_or_default();
    let head = rf.name.as_ref().map_or_else(|| f.span(), |n| n.span());

    let bind = validate_binds(rf, &head, (label, index), binds, cx);
    let redirect = rf
        .redirect_https
        .as_ref()
        .map(|r| validate_redirect(r.get_ref(), label, cx));
    let every_request_redirected = rf.redirect_https.as_ref().is_some_and(|r| {
        r.get_ref()
            .except_prefixes
            .as_ref()
            .is_none_or(|e| e.is_empty())
    });
    let backend = if rf.backend.is_none() && every_request_redirected {
        None
    } else {
        backend_ref(rf, &head, label, env, cx)
    };

    let tls = rf.tls.as_ref().map(|t| tls::validate_tls(t, label, cx));
    if let (Some(_), Some(r)) = (&rf.tls, &rf.redirect_https) {
        cx.warn(
            &r.span(),
            fld(label, "redirect_https"),
            "this frontend terminates TLS and also redirects to HTTPS: clients already on HTTPS are redirected to HTTPS again",
            "put redirect_https on the plain-HTTP frontend only, and remove it here",
        );
    }

    let set_headers = rf
        .set_headers
        .as_ref()
        .map_or_else(Vec::new, |h| validate_set_headers(h, label, cx));

    let timeouts = cx.timeouts(&rf.timeouts(), env.defaults, label);
    let (alpn, h2c) = validate_http2(rf, label, cx);
    Frontend {
        name,
        bind,
        backend,
        redirect_https: redirect,
        tls,
        set_headers,
        forwarded_for: rf.forwarded_for.as_ref().is_none_or(|v| *v.get_ref()),
        timeouts,
        alpn,
        h2c,
    }
}

/// `alpn` (TLS frontends: the protocols offered, h2 and/or http/1.1) and `h2c`
/// (plain-text HTTP/2 with prior knowledge, on a frontend without TLS).
fn validate_http2(rf: &RawFrontend, label: &str, cx: &mut Ctx) -> (Vec<Alpn>, bool) {
    let mut alpn = vec![Alpn::H2, Alpn::Http11];
    if let Some(list) = &rf.alpn {
        let mut got = Vec::new();
        for p in list.get_ref() {
            let a = match p.get_ref().as_str() {
                "h2" => Alpn::H2,
                "http/1.1" => Alpn::Http11,
                other => {
                    cx.err(
                        &p.span(),
                        fld(label, "alpn"),
                        format!("{other:?} is not a protocol the engine speaks to clients"),
                        "write alpn = [\"h2\", \"http/1.1\"] (the default), or [\"http/1.1\"] to turn HTTP/2 off",
                    );
                    continue;
                }
            };
            if got.contains(&a) {
                cx.err(
                    &p.span(),
                    fld(label, "alpn"),
                    format!("{:?} is listed twice", a.as_str()),
                    "name each protocol once",
                );
                continue;
            }
            got.push(a);
        }
        if list.get_ref().is_empty() {
            cx.err(
                &list.span(),
                fld(label, "alpn"),
                "is empty: no client could speak to this frontend",
                "write alpn = [\"h2\", \"http/1.1\"] (the default), or [\"http/1.1\"] to turn HTTP/2 off",
            );
        }
        if rf.tls.is_none() {
            cx.warn(
                &list.span(),
                fld(label, "alpn"),
                "this frontend has no TLS: ALPN is part of the TLS handshake and changes nothing here",
                "remove alpn, or set h2c = true for plain-text HTTP/2 with prior knowledge",
            );
        }
        if !got.is_empty() {
            alpn = got;
        }
    }
    let h2c = rf.h2c.as_ref().is_some_and(|v| *v.get_ref());
    if let (true, Some(_), Some(v)) = (h2c, &rf.tls, &rf.h2c) {
        cx.err(
            &v.span(),
            fld(label, "h2c"),
            "h2c is plain-text HTTP/2: this frontend terminates TLS, where HTTP/2 is negotiated with alpn",
            "remove h2c here (alpn already offers h2), or set it on a frontend without tls",
        );
    }
    (alpn, h2c)
}

/// The addresses of `bind`, each also added to `binds` with the frontend's (label, index).
fn validate_binds(
    rf: &RawFrontend,
    head: &Range<usize>,
    (label, index): (&str, usize),
    binds: &mut Vec<Bind>,
    cx: &mut Ctx,
) -> Vec<std::net::SocketAddr> {
    let mut bind = Vec::new();
    match &rf.bind {
        None => cx.err(
            head,
            fld(label, "bind"),
            "a frontend needs at least one address to listen on",
            "write bind = [\"0.0.0.0:80\"]",
        ),
        Some(b) if b.get_ref().is_empty() => cx.err(
            &b.span(),
            fld(label, "bind"),
            "is an empty list",
            "write bind = [\"0.0.0.0:80\"]",
        ),
        Some(b) => {
            let default_port = if rf.tls.is_some() { 443 } else { 80 };
            for a in b.get_ref() {
                match parse_addr_opts(a.get_ref(), default_port, true) {
                    Ok(addr) => {
                        bind.push(addr);
                        binds.push(Bind {
                            addr,
                            frontend: index,
                            label: label.to_owned(),
                            span: a.span(),
                        });
                    }
                    Err((m, fx)) => cx.err(&a.span(), fld(label, "bind"), m, fx),
                }
            }
        }
    }
    bind
}

fn validate_redirect(rr: &RawRedirect, label: &str, cx: &mut Ctx) -> RedirectHttps {
    let mut code = 301u16;
    if let Some(c) = &rr.code {
        let n = *c.get_ref();
        if [301, 302, 303, 307, 308].contains(&n) {
            code = n as u16;
        } else {
            cx.err(
                &c.span(),
                format!("{label} redirect_https `code`"),
                format!("{n} is not a redirect status"),
                "write code = 301 (or 302, 303, 307, 308)",
            );
        }
    }
    let mut except = Vec::new();
    for p in rr.except_prefixes.iter().flatten() {
        let s = p.get_ref();
        if !s.starts_with('/') {
            cx.err(
                &p.span(),
                format!("{label} redirect_https `except_prefixes`"),
                format!("\"{s}\" does not start with \"/\": it would match no request path"),
                format!("write \"/{}\"", s.trim_start_matches('/')),
            );
        } else {
            except.push(s.clone());
        }
    }
    let port = rr
        .port
        .as_ref()
        .and_then(|v| {
            cx.int(
                v,
                label,
                "redirect_https.port",
                1,
                65535,
                "write port = 443 (the port of the HTTPS frontend that clients reach)",
            )
        })
        .map(|p| p as u16);
    RedirectHttps {
        code,
        except_prefixes: except,
        port,
    }
}

/// The index of the backend the frontend names; an error when it names none that exists,
/// or none at all while some requests are not redirected.
fn backend_ref(
    rf: &RawFrontend,
    head: &Range<usize>,
    label: &str,
    env: &Env,
    cx: &mut Ctx,
) -> Option<usize> {
    let Some(b) = &rf.backend else {
        let first = env
            .raw_backends
            .first()
            .and_then(|b| b.get_ref().name.as_ref())
            .map_or("moodle".to_owned(), |n| n.get_ref().clone());
        let msg = if rf.redirect_https.is_some() {
            "requests under except_prefixes go to the backend, but this frontend has none"
        } else {
            "a frontend needs a backend (unless redirect_https redirects every request)"
        };
        cx.err(
            head,
            fld(label, "backend"),
            msg,
            format!("write backend = \"{first}\""),
        );
        return None;
    };
    let bn = b.get_ref();
    if let Some(&i) = env.backends.index.get(bn) {
        return Some(i);
    }
    let names: Vec<&str> = env
        .raw_backends
        .iter()
        .filter_map(|rb| rb.get_ref().name.as_ref().map(|n| n.get_ref().as_str()))
        .collect();
    let fix = if names.is_empty() {
        format!("define it: [[backend]] with name = \"{bn}\" and its [[backend.server]] tables")
    } else if let Some(c) = closest_name(bn, names.iter().copied()) {
        format!(
            "did you mean backend = \"{c}\"? the backends are: {}",
            quote_list(&names)
        )
    } else {
        format!(
            "write one of {}, or define a [[backend]] named \"{bn}\"",
            quote_list(&names)
        )
    };
    cx.err(
        &b.span(),
        fld(label, "backend"),
        format!("no backend is named \"{bn}\""),
        fix,
    );
    None
}

/// The headers of `set_headers` that pass, in file order.
fn validate_set_headers(h: &S<OrderedMap>, label: &str, cx: &mut Ctx) -> Vec<(String, String)> {
    let mut set_headers: Vec<(String, String)> = Vec::new();
    let p = format!("{label} set_headers");
    for (k, v) in &h.get_ref().0 {
        let name = k.get_ref();
        let name_ok = header_name_ok(k, &p, &set_headers, cx);
        let value = header_value(v, &p, name, cx);
        if let (true, Some(value)) = (name_ok, value) {
            set_headers.push((name.clone(), value));
        }
    }
    set_headers
}

/// A header name that is a token, does not frame the body and is not set twice.
fn header_name_ok(k: &S<String>, p: &str, set: &[(String, String)], cx: &mut Ctx) -> bool {
    let name = k.get_ref();
    if !is_token(name) {
        let clean: String = name.chars().filter(|c| is_tchar(*c)).collect();
        cx.err(
            &k.span(),
            fld(p, name),
            format!(
                "\"{name}\" is not a valid header name (letters, digits and !#$%&'*+-.^_`|~ only)"
            ),
            format!(
                "write \"{}\"",
                if clean.is_empty() {
                    "X-Example"
                } else {
                    &clean
                }
            ),
        );
        false
    } else if name.eq_ignore_ascii_case("content-length")
        || name.eq_ignore_ascii_case("transfer-encoding")
    {
        cx.err(
            &k.span(),
            fld(p, name),
            format!("{name} frames the request body and cannot be set"),
            "remove it",
        );
        false
    } else if set.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)) {
        cx.err(
            &k.span(),
            fld(p, name),
            format!("\"{name}\" is set twice (header names ignore case)"),
            "keep one of them",
        );
        false
    } else {
        true
    }
}

/// A header value: a quoted string on one line.
fn header_value(v: &S<Scalar>, p: &str, name: &str, cx: &mut Ctx) -> Option<String> {
    match v.get_ref() {
        Scalar::Str(s) => {
            if s.contains(['\r', '\n', '\0']) {
                cx.err(
                    &v.span(),
                    fld(p, name),
                    "the value contains a line break or a NUL byte, which would split the request",
                    "write the value on one line",
                );
                return None;
            }
            Some(s.clone())
        }
        Scalar::Int(n) => {
            cx.err(
                &v.span(),
                fld(p, name),
                format!("{n} is not in quotes"),
                format!("write \"{name}\" = \"{n}\""),
            );
            None
        }
        other => {
            let shown = match other {
                Scalar::Float(f) => f.to_string(),
                Scalar::Bool(b) => b.to_string(),
                Scalar::Other(w) => (*w).to_owned(),
                _ => String::new(),
            };
            cx.err(
                &v.span(),
                fld(p, name),
                format!("{shown} is not a quoted string"),
                format!("write \"{name}\" = \"value\""),
            );
            None
        }
    }
}
