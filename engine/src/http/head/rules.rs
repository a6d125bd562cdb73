//! The framing and syntax rules httparse leaves to the engine (RFC 9112 §3, §6;
//! RFC 9110 §7.6.1): bare LF, Content-Length lists, Host, the request target, headers
//! named by Connection.

use super::{eq_ic, tokens, trim, Field, Method};

pub(super) fn off(buf: &[u8], s: &[u8]) -> u32 {
    (s.as_ptr() as usize - buf.as_ptr() as usize) as u32
}

pub(super) fn span(buf: &[u8], s: &[u8]) -> (u32, u32) {
    let a = off(buf, s);
    (a, a + s.len() as u32)
}

pub(super) fn has_bare_lf(head: &[u8]) -> bool {
    head.iter()
        .enumerate()
        .any(|(i, &c)| c == b'\n' && (i == 0 || head[i - 1] != b'\r'))
}

pub(super) fn parse_content_length(v: &[u8], current: &mut Option<u64>) -> Result<(), ()> {
    for t in v.split(|&c| c == b',') {
        let t = trim(t);
        if t.is_empty() || t.len() > 19 || !t.iter().all(u8::is_ascii_digit) {
            return Err(());
        }
        let n: u64 = std::str::from_utf8(t)
            .map_err(|_| ())?
            .parse()
            .map_err(|_| ())?;
        match current {
            Some(c) if *c != n => return Err(()),
            _ => *current = Some(n),
        }
    }
    Ok(())
}

pub(super) fn valid_host(h: &[u8]) -> bool {
    if h.is_empty() || h.len() > 255 {
        return false;
    }
    // reg-name or IP-literal, optional :port. No userinfo, no path, no whitespace.
    let (host, port) = if h[0] == b'[' {
        match h.iter().position(|&c| c == b']') {
            Some(p) => {
                let inner = &h[1..p];
                if inner.is_empty()
                    || !inner
                        .iter()
                        .all(|&c| c.is_ascii_hexdigit() || c == b':' || c == b'.')
                {
                    return false;
                }
                (&h[..=p], &h[p + 1..])
            }
            None => return false,
        }
    } else {
        match h.iter().rposition(|&c| c == b':') {
            Some(p) => (&h[..p], &h[p..]),
            None => (h, &h[h.len()..]),
        }
    };
    if !port.is_empty() {
        let digits = &port[1..];
        if port[0] != b':' || digits.len() > 5 || !digits.iter().all(u8::is_ascii_digit) {
            return false;
        }
    }
    if host.first() == Some(&b'[') {
        return true;
    }
    !host.is_empty()
        && host
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=%".contains(&c))
}

pub(super) fn valid_target(t: &[u8], method: Method) -> bool {
    if t.is_empty() {
        return false;
    }
    if !t.iter().all(|&c| c > 0x20 && c < 0x7f) {
        return false;
    }
    match t[0] {
        b'/' => true,
        b'*' => t.len() == 1 && method == Method::Options,
        _ => {
            // absolute-form (http://host/path) or authority-form for CONNECT.
            method == Method::Connect
                || t.len() > 7
                    && (t[..7].eq_ignore_ascii_case(b"http://")
                        || t.len() > 8 && t[..8].eq_ignore_ascii_case(b"https://"))
        }
    }
}

/// Marks the headers that a Connection header names as hop-by-hop (RFC 9110 §7.6.1).
/// `upgrading`: a 101 keeps its Upgrade header.
pub(super) fn drop_named(
    buf: &[u8],
    headers: &[httparse::Header<'_>],
    fields: &mut [Field],
    upgrading: bool,
) {
    for h in headers
        .iter()
        .filter(|h| eq_ic(h.name.as_bytes(), b"connection"))
    {
        for t in tokens(h.value) {
            if eq_ic(t, b"close") || eq_ic(t, b"keep-alive") || (upgrading && eq_ic(t, b"upgrade"))
            {
                continue;
            }
            // Host is never hop-by-hop (`Connection: Host` would otherwise send the server
            // a request without one).
            if eq_ic(t, b"host") {
                continue;
            }
            for f in fields.iter_mut() {
                if !f.drop && eq_ic(f.name(buf), t) {
                    f.drop = true;
                }
            }
        }
    }
}
