//! Addresses: an IP:port as the operator writes it (with a fix for each usual mistake),
//! and listening addresses that cannot all be bound (two frontends, or a frontend and the
//! stats endpoint, on one address).

use super::{fld, Ctx, NOWHERE};
use crate::raw::{RawGlobal, S};
use crate::types::Global;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;

/// An address a frontend listens on, for the overlap checks.
pub(super) struct Bind {
    pub addr: SocketAddr,
    /// The frontend's index.
    pub frontend: usize,
    /// The frontend's label.
    pub label: String,
    pub span: Range<usize>,
}

/// Parses an "ip:port" the operator wrote; on failure (message, fix).
pub(crate) fn parse_addr(s: &str, default_port: u16) -> Result<SocketAddr, (String, String)> {
    parse_addr_opts(s, default_port, false)
}

/// Like [`parse_addr`]; `listen`: port 0 is allowed (the system picks a free port, which
/// every core then shares; for tests and tools).
pub(crate) fn parse_addr_opts(
    s: &str,
    default_port: u16,
    listen: bool,
) -> Result<SocketAddr, (String, String)> {
    let t = s.trim();
    if let Ok(a) = t.parse::<SocketAddr>() {
        if a.port() == 0 && !listen {
            return Err((
                format!("\"{s}\" has port 0"),
                format!(
                    "write the real port, e.g. \"{}\"",
                    SocketAddr::new(a.ip(), default_port)
                ),
            ));
        }
        return Ok(a);
    }
    if let Ok(ip) = t.parse::<IpAddr>() {
        let a = SocketAddr::new(ip, default_port);
        return Err((
            format!("\"{s}\" has no port"),
            format!("write an IP:port such as \"{a}\""),
        ));
    }
    if let Ok(port) = t.parse::<u16>() {
        return Err((
            format!("\"{s}\" is a port without an address"),
            format!("write \"0.0.0.0:{port}\" for every IPv4 address or \"127.0.0.1:{port}\" for loopback only"),
        ));
    }
    let (host, port) = match t.rsplit_once(':') {
        Some((h, p)) => (h, p),
        None => {
            return Err((
                format!("\"{s}\" is not an IP:port"),
                format!(
                "write an address such as \"127.0.0.1:{default_port}\" (names are not resolved)"
            ),
            ))
        }
    };
    let port_txt = if port.parse::<u16>().is_ok() {
        port.to_owned()
    } else {
        default_port.to_string()
    };
    let (msg, fix) = match host {
        "*" | "" => (
            format!("\"{s}\" is not an IP:port (\"{host}\" is HAProxy's wildcard)"),
            format!("write \"0.0.0.0:{port_txt}\" for every IPv4 address, or \"[::]:{port_txt}\" for IPv6"),
        ),
        h if h.eq_ignore_ascii_case("localhost") => (
            format!("\"{s}\" is not an IP:port (names are not resolved)"),
            format!("write \"127.0.0.1:{port_txt}\""),
        ),
        h if h.contains(':') && !h.starts_with('[') => (
            format!("\"{s}\" is not an IP:port (an IPv6 address needs brackets)"),
            format!("write \"[{h}]:{port_txt}\""),
        ),
        _ => (
            format!("\"{s}\" is not an IP:port (names are not resolved)"),
            format!("write the server's IP address, e.g. \"127.0.0.1:{port_txt}\""),
        ),
    };
    Err((msg, fix))
}

/// Two listening addresses that cannot both be bound (same port, one is the wildcard).
fn overlaps(a: &SocketAddr, b: &SocketAddr) -> bool {
    if a.port() == 0 || b.port() == 0 {
        // Port 0: each bind gets a port of its own.
        return false;
    }
    a == b
        || (a.port() == b.port()
            && a.is_ipv4() == b.is_ipv4()
            && (a.ip().is_unspecified() || b.ip().is_unspecified()))
}

/// An error on each bind whose address an earlier bind already takes.
pub(super) fn check_bind_overlaps(binds: &[Bind], cx: &mut Ctx) {
    for (i, a) in binds.iter().enumerate() {
        for b in &binds[..i] {
            if overlaps(&a.addr, &b.addr) {
                let how = if a.addr == b.addr {
                    "is also bound".to_owned()
                } else {
                    format!("overlaps {}, bound", b.addr)
                };
                let by = if a.frontend == b.frontend {
                    "by this same frontend".to_owned()
                } else {
                    format!("by {}", b.label)
                };
                cx.err(
                    &a.span,
                    fld(&a.label, "bind"),
                    format!("{} {how} {by}", a.addr),
                    "each address may be bound once: remove one, or use another port",
                );
                break;
            }
        }
    }
}

/// An error when the stats endpoint's address is one a frontend binds.
pub(super) fn check_stats_overlap(
    global: &Global,
    raw: Option<&S<RawGlobal>>,
    binds: &[Bind],
    cx: &mut Ctx,
) {
    if let (Some(stats), Some(g)) = (global.stats, raw) {
        if let Some(b) = binds.iter().find(|b| overlaps(&b.addr, &stats)) {
            let span = g.get_ref().stats.as_ref().map_or(NOWHERE, |s| s.span());
            cx.err(
                &span,
                fld("global", "stats"),
                format!("{stats} is also bound by {} ({})", b.label, b.addr),
                "give the stats endpoint a port of its own, e.g. \"127.0.0.1:8404\"",
            );
        }
    }
}
