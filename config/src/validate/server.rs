//! `[[backend.server]]`: each server's name and address (unique in its backend), its
//! cookie value, weight, maxconn, backup and check; and the backend's lint when every
//! server is a backup.

use super::{check_name, fld, is_cookie_octet, parse_addr, section_label, Ctx};
use crate::raw::{RawBackend, RawServer, S};
use crate::types::Server;
use std::net::SocketAddr;
use std::ops::Range;

/// The backend the servers belong to, as their checks need it.
pub(super) struct BackendAt<'b> {
    /// Where the backend is named (or starts).
    pub head: &'b Range<usize>,
    pub label: &'b str,
    /// The backend's name ("" when it has none).
    pub name: &'b str,
    /// Its cookie is in prefix mode (a server's cookie value may not hold '~').
    pub prefix_mode: bool,
}

pub(super) fn validate_servers(rb: &RawBackend, at: &BackendAt, cx: &mut Ctx) -> Vec<Server> {
    let mut servers: Vec<Server> = Vec::new();
    for (i, s) in rb.server.iter().enumerate() {
        let server = validate_server(s, i, at, &servers, cx);
        servers.push(server);
    }
    if rb.server.is_empty() {
        cx.err(
            at.head,
            fld(at.label, "server"),
            "a backend needs at least one server",
            "add a [[backend.server]] table below it with name = \"moodle_app_1\" and address = \"127.0.0.1:9101\"",
        );
    } else if servers.iter().all(|s| s.backup) {
        cx.warn(
            at.head,
            at.label.to_owned(),
            "every server of this backend is a backup: with no main server ever up, the backups carry all the traffic all the time",
            "set backup = false on the main servers (backup = true is for the spare that takes over)",
        );
    }
    servers
}

/// The server being checked: its table, where it is named (or starts), its label.
struct ServerAt<'s> {
    rs: &'s RawServer,
    head: Range<usize>,
    label: String,
}

/// One server, checked against the servers before it (`earlier`).
fn validate_server(
    s: &S<RawServer>,
    i: usize,
    at: &BackendAt,
    earlier: &[Server],
    cx: &mut Ctx,
) -> Server {
    let rs = s.get_ref();
    let sa = ServerAt {
        rs,
        head: rs.name.as_ref().map_or_else(|| s.span(), |n| n.span()),
        label: section_label(&format!("{} server", at.label), rs.name.as_ref(), i),
    };
    let sname = server_name(&sa, i, at.name, earlier, cx);
    let address = server_address(&sa, earlier, cx);
    let scookie = server_cookie(&sa, sname.as_deref(), at.prefix_mode, earlier, cx);
    let weight = server_weight(&sa, at.name, sname.as_deref(), cx);
    let maxconn = rs
        .maxconn
        .as_ref()
        .and_then(|v| {
            cx.int(
                v,
                &sa.label,
                "maxconn",
                0,
                i64::from(u32::MAX),
                "write maxconn = 100, or 0 for no limit",
            )
        })
        .unwrap_or(0) as u32;
    Server {
        name: sname.unwrap_or_default(),
        address: address.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0))),
        cookie: scookie,
        weight,
        maxconn,
        backup: rs.backup.as_ref().is_some_and(|v| *v.get_ref()),
        check: rs.check.as_ref().is_none_or(|v| *v.get_ref()),
    }
}

/// The server's name: present, usable in the admin socket's paths, not taken in this
/// backend. `backend`: the backend's name, for the example.
fn server_name(
    sa: &ServerAt,
    i: usize,
    backend: &str,
    earlier: &[Server],
    cx: &mut Ctx,
) -> Option<String> {
    let sname = match &sa.rs.name {
        None => {
            cx.err(
                &sa.head,
                fld(&sa.label, "name"),
                "a server needs a name",
                format!(
                    "write name = \"{}_{}\"",
                    if backend.is_empty() { "app" } else { backend },
                    i + 1
                ),
            );
            None
        }
        Some(n) => check_name(cx, n, &sa.label, "server", "moodle_app_1"),
    };
    if let (Some(n), Some(rn)) = (&sname, &sa.rs.name) {
        if earlier.iter().any(|o| &o.name == n) {
            cx.err(
                &rn.span(),
                fld(&sa.label, "name"),
                format!("a second server in this backend is named \"{n}\""),
                "give each server of a backend its own name",
            );
        }
    }
    sname
}

/// The server's address: an IP:port, not a wildcard; a warning when another server of the
/// backend has it too.
fn server_address(sa: &ServerAt, earlier: &[Server], cx: &mut Ctx) -> Option<SocketAddr> {
    let Some(a) = &sa.rs.address else {
        cx.err(
            &sa.head,
            fld(&sa.label, "address"),
            "a server needs an address",
            "write address = \"127.0.0.1:9101\"",
        );
        return None;
    };
    match parse_addr(a.get_ref(), 80) {
        Ok(addr) => {
            if addr.ip().is_unspecified() {
                cx.err(
                    &a.span(),
                    fld(&sa.label, "address"),
                    format!("{addr} is a wildcard: the engine cannot connect to it"),
                    format!(
                        "write the server's own address, e.g. \"127.0.0.1:{}\"",
                        addr.port()
                    ),
                );
                None
            } else {
                if let Some(o) = earlier.iter().find(|o| o.address == addr) {
                    cx.warn(
                        &a.span(),
                        fld(&sa.label, "address"),
                        format!(
                            "{addr} is also the address of server \"{}\": one origin counted twice",
                            o.name
                        ),
                        "give each server its own address, or raise its weight instead",
                    );
                }
                Some(addr)
            }
        }
        Err((m, f)) => {
            cx.err(&a.span(), fld(&sa.label, "address"), m, f);
            None
        }
    }
}

/// The server's cookie value (its name unless set): cookie-octets only, no '~' in prefix
/// mode, not another server's.
fn server_cookie(
    sa: &ServerAt,
    sname: Option<&str>,
    prefix_mode: bool,
    earlier: &[Server],
    cx: &mut Ctx,
) -> String {
    let scookie = match &sa.rs.cookie {
        None => sname.unwrap_or_default().to_owned(),
        Some(c) => {
            let v = c.get_ref();
            if v.is_empty() {
                cx.err(
                    &c.span(),
                    fld(&sa.label, "cookie"),
                    "is empty",
                    "write cookie = \"s1\", or leave it out to use the server's name",
                );
            } else if !v.chars().all(is_cookie_octet) {
                cx.err(&c.span(), fld(&sa.label, "cookie"), format!("\"{v}\" holds a character a cookie value cannot (space, quote, comma, semicolon, backslash)"), "write letters, digits, '_' or '-', e.g. cookie = \"s1\"");
            }
            v.clone()
        }
    };
    if prefix_mode && scookie.contains('~') {
        let span = sa.rs.cookie.as_ref().map_or(sa.head.clone(), |c| c.span());
        cx.err(
            &span,
            fld(&sa.label, "cookie"),
            format!("\"{scookie}\" contains '~', the separator of prefix mode"),
            format!("write cookie = \"{}\"", scookie.replace('~', "_")),
        );
    }
    if !scookie.is_empty() {
        if let Some(o) = earlier.iter().find(|o| o.cookie == scookie) {
            let span = sa.rs.cookie.as_ref().map_or(sa.head.clone(), |c| c.span());
            cx.err(&span, fld(&sa.label, "cookie"), format!("server \"{}\" already has the cookie value \"{scookie}\": clients could not stick to one of them", o.name), "give each server of a backend its own cookie value, e.g. cookie = \"s2\"");
        }
    }
    scookie
}

/// The weight, 1 to 256 (1 unless set); 0 is refused with the runtime way to drain.
fn server_weight(sa: &ServerAt, backend: &str, sname: Option<&str>, cx: &mut Ctx) -> u32 {
    match &sa.rs.weight {
        None => 1,
        Some(w) if *w.get_ref() == 0 => {
            cx.err(
                &w.span(),
                fld(&sa.label, "weight"),
                "weight 0 is not accepted in the file",
                format!(
                    "to stop sending new clients to it, leave weight out here and use `set weight {}/{} 0` on the admin socket at runtime; to take it out for good, remove the server",
                    backend,
                    sname.unwrap_or("SERVER")
                ),
            );
            1
        }
        Some(w) => cx
            .int(
                w,
                &sa.label,
                "weight",
                1,
                256,
                "write weight = 1 (1 to 256; relative to the other servers)",
            )
            .unwrap_or(1) as u32,
    }
}
