//! Response heads: a reference model of the framing decision (RFC 9112 §6.3) and the
//! properties of what the engine keeps from a response head.

use std::panic::{catch_unwind, AssertUnwindSafe};

use engine::http::head::parse_response;
use engine::http::head::Hdr;
use engine::http::{BodyLen, HeadLimits, ResponseHead};

use super::{crlf_only, elements, field_line, head_lines, named, show, tchar, BIG};

macro_rules! ensure {
    ($c:expr, $($m:tt)*) => {
        if !$c {
            return Err(format!($($m)*));
        }
    };
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RespAccepted {
    pub head_len: usize,
    pub status: u16,
    pub minor: u8,
    pub body: BodyLen,
    /// Whether the connection may carry another response afterwards.
    pub reusable: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RespVerdict {
    Incomplete { too_large: bool },
    Refuse,
    Accept(RespAccepted),
}

/// Rules the engine once broke (found by this harness, fixed since): each is checked by
/// the main property and again by a `known_bug_*` regression test over the `bug-*`
/// corpus files. `Default` (all on) is what the main property checks.
#[derive(Debug, Clone, Copy)]
pub struct Strictness {
    /// RFC 9112 §6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing and
    /// the connection is closed after it.
    pub http10_te_closes: bool,
    /// A response with `Content-Length: 0` (not HEAD, not 304) must reach the client with
    /// a length, not as a head without framing (which a client reads until close).
    pub empty_body_framed: bool,
    /// A status code the engine writes is three digits (RFC 9112 §4).
    pub status_three_digits: bool,
}

impl Default for Strictness {
    fn default() -> Self {
        Strictness {
            http10_te_closes: true,
            empty_body_framed: true,
            status_three_digits: true,
        }
    }
}

/// HTTP-version SP 3DIGIT [ SP reason-phrase ] (RFC 9112 §4). Policy, as httparse: the
/// SP before an empty reason may be missing.
fn status_line(l: &[u8]) -> Option<(u8, u16)> {
    let minor = match l.get(..8)? {
        b"HTTP/1.1" => 1,
        b"HTTP/1.0" => 0,
        _ => return None,
    };
    let rest = &l[8..];
    let code = rest.strip_prefix(b" ")?.get(..3)?;
    if !code.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let reason = &rest[4..];
    let reason_ok = reason.is_empty()
        || (reason[0] == b' '
            && reason[1..]
                .iter()
                .all(|&c| c == b'\t' || c == b' ' || (0x21..=0x7e).contains(&c) || c >= 0x80));
    let code: u16 = std::str::from_utf8(code).ok()?.parse().ok()?;
    // 000-099 are no status (RFC 9110 §15): refused, a 502 for the client.
    (reason_ok && code >= 100).then_some((minor, code))
}

/// Judges a response head read from `buf`, for a request that was HEAD or not.
pub fn judge_response(
    buf: &[u8],
    head_request: bool,
    limits: &HeadLimits,
    strict: Strictness,
) -> RespVerdict {
    // RFC 9112 §2.2: a recipient MAY take a bare LF as a line end; the engine does for
    // responses (it writes its own head to the client).
    let (_, _, lines, end) = head_lines(buf);
    let Some(end) = end else {
        return RespVerdict::Incomplete {
            too_large: buf.len() >= limits.max_head_bytes,
        };
    };
    if end > limits.max_head_bytes || lines.len() - 2 > limits.max_headers {
        return RespVerdict::Refuse;
    }
    let Some((minor, status)) = status_line(lines[0].text) else {
        return RespVerdict::Refuse;
    };
    let mut fields = Vec::new();
    for l in &lines[1..lines.len() - 1] {
        match field_line(l.text) {
            Some(f) => fields.push(f),
            None => return RespVerdict::Refuse, // includes obs-fold
        }
    }
    // Content-Length: 1*DIGIT, equal values when repeated; policy: refused when invalid
    // even where TE or the status makes it moot (a 502 rather than a guess).
    let mut length = None;
    for e in named(&fields, "content-length").flat_map(elements) {
        let ok = !e.is_empty() && e.len() <= 19 && e.iter().all(u8::is_ascii_digit);
        let n: Option<u64> = ok.then(|| std::str::from_utf8(e).unwrap().parse().unwrap());
        match (n, length) {
            (None, _) => return RespVerdict::Refuse,
            (Some(n), Some(l)) if n != l => return RespVerdict::Refuse,
            (Some(n), _) => length = Some(n),
        }
    }
    let te: Vec<&[u8]> = named(&fields, "transfer-encoding").collect();
    // Policy: a Transfer-Encoding line without any coding (invalid) leaves chunked not
    // last, so the body is read until close (conservative: the connection is not reused).
    let last_coding = te
        .last()
        .and_then(|v| elements(v).filter(|e| !e.is_empty()).last());
    let last_coding = last_coding.or_else(|| te.last().map(|_| &b""[..]));
    let no_body = head_request || (100..200).contains(&status) || status == 204 || status == 304;
    let body = if no_body {
        BodyLen::None
    } else if !te.is_empty() {
        // §6.3 item 4: chunked last: chunked; otherwise read until close.
        match last_coding {
            Some(c) if c.eq_ignore_ascii_case(b"chunked") => BodyLen::Chunked,
            _ => BodyLen::Close,
        }
    } else {
        match length {
            Some(0) => BodyLen::None,
            Some(n) => BodyLen::Length(n),
            None => BodyLen::Close,
        }
    };
    let reusable = reusable(&fields, minor, body, &te, length.is_some(), strict);
    RespVerdict::Accept(RespAccepted {
        head_len: end,
        status,
        minor,
        body,
        reusable,
    })
}

/// RFC 9112 §9.3; policy: Proxy-Connection counts like Connection.
fn reusable(
    fields: &[(&[u8], &[u8])],
    minor: u8,
    body: BodyLen,
    te: &[&[u8]],
    has_cl: bool,
    strict: Strictness,
) -> bool {
    let tokens: Vec<Vec<u8>> = named(fields, "connection")
        .chain(named(fields, "proxy-connection"))
        .flat_map(elements)
        .map(|t| t.to_ascii_lowercase())
        .collect();
    let close = tokens.iter().any(|t| t == b"close");
    let keep = tokens.iter().any(|t| t == b"keep-alive");
    let faulty = (!te.is_empty() && has_cl) // §6.3 item 3: close after it
        || (strict.http10_te_closes && minor == 0 && !te.is_empty());
    body != BodyLen::Close && !faulty && if minor == 0 { keep && !close } else { !close }
}

/// The response property for one input.
pub fn check_response(
    buf: &[u8],
    head_request: bool,
    limits: &HeadLimits,
    strict: Strictness,
) -> Result<(), String> {
    let got = catch_unwind(AssertUnwindSafe(|| {
        parse_response(buf, head_request, limits)
    }))
    .map_err(|_| "parse_response panicked".to_string())?;
    let want = judge_response(buf, head_request, limits, strict);
    match (got, want) {
        (Ok(None), RespVerdict::Incomplete { too_large: false }) => Ok(()),
        (Err(_), RespVerdict::Incomplete { .. }) => Ok(()), // httparse refuses early
        (Err(_), RespVerdict::Refuse) => Ok(()),
        (Ok(Some(h)), RespVerdict::Accept(a)) => {
            let h = &h;
            let seen = RespAccepted {
                head_len: h.head_len,
                status: h.status,
                minor: h.minor,
                body: h.body,
                reusable: h.server_keep_alive(),
            };
            ensure!(seen == a, "parser {seen:?}, model {a:?}");
            kept_fields(buf, h)?;
            reserialised(buf, h, head_request, strict)
        }
        (got, want) => Err(format!(
            "parser and model disagree: parser {:?}, model {want:?}",
            got.map(|o| o.map(|h| (h.head_len, h.status, h.body)))
        )),
    }
}

const HOP: [&[u8]; 7] = [
    b"connection",
    b"keep-alive",
    b"te",
    b"trailer",
    b"proxy-connection",
    b"transfer-encoding",
    b"content-length",
];

/// The fields the engine passes on: no framing or hop-by-hop header (Upgrade only on a
/// 101), none that Connection names, no CR, LF or NUL in a name, value or the reason.
fn kept_fields(buf: &[u8], h: &ResponseHead) -> Result<(), String> {
    let named_by_conn: Vec<Vec<u8>> = h
        .fields
        .iter()
        .filter(|f| f.kind == Hdr::Connection)
        .flat_map(|f| elements(f.value(buf)).map(|t| t.to_ascii_lowercase()))
        .filter(|t| t != b"close" && t != b"keep-alive" && !(h.status == 101 && t == b"upgrade"))
        .collect();
    let reason = &buf[h.reason.0 as usize..h.reason.1 as usize];
    ensure!(
        !reason.iter().any(|&c| c == b'\r' || c == b'\n' || c == 0),
        "reason {}",
        show(reason)
    );
    for f in h.fields.iter().filter(|f| !f.drop) {
        let (n, v) = (f.name(buf), f.value(buf));
        let lc = n.to_ascii_lowercase();
        ensure!(
            !n.is_empty() && n.iter().all(|&c| tchar(c)),
            "name {}",
            show(n)
        );
        ensure!(
            !v.iter().any(|&c| c == b'\r' || c == b'\n' || c == 0),
            "value {}",
            show(v)
        );
        ensure!(!HOP.contains(&lc.as_slice()), "hop-by-hop {} kept", show(n));
        ensure!(
            h.status == 101 || lc != b"upgrade",
            "Upgrade kept on a {}",
            h.status
        );
        ensure!(
            !named_by_conn.contains(&lc),
            "{} is named by Connection",
            show(n)
        );
    }
    Ok(())
}

/// The head as the engine writes it for an HTTP/1.1 client (proxy.rs: status line from
/// the number, kept fields, its own framing header; for HEAD and 304 the server's
/// Content-Length again). Cookie rewriting is left out: it only touches Set-Cookie and
/// Cache-Control values.
fn client_head(buf: &[u8], h: &ResponseHead, head_request: bool) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {} ", h.status).into_bytes();
    let reason = &buf[h.reason.0 as usize..h.reason.1 as usize];
    let default = engine::http::reason(h.status).as_bytes();
    out.extend_from_slice(if reason.is_empty() { default } else { reason });
    out.extend_from_slice(b"\r\n");
    for f in h.fields.iter().filter(|f| !f.drop) {
        out.extend_from_slice(&[f.name(buf), b": ", f.value(buf), b"\r\n"].concat());
    }
    match h.body {
        BodyLen::Length(n) => out.extend_from_slice(format!("Content-Length: {n}\r\n").as_bytes()),
        // A close-delimited body reaches an HTTP/1.1 client chunked.
        BodyLen::Chunked | BodyLen::Close => {
            out.extend_from_slice(b"Transfer-Encoding: ");
            if let Some((a, b)) = h.te_codings {
                for t in engine::http::head::tokens(&buf[a as usize..b as usize]) {
                    if !t.eq_ignore_ascii_case(b"chunked") {
                        out.extend_from_slice(&[t, b", "].concat());
                    }
                }
            }
            out.extend_from_slice(b"chunked\r\n")
        }
        BodyLen::None if head_request || h.status == 304 => {
            let cl = h
                .fields
                .iter()
                .find(|f| f.name(buf).eq_ignore_ascii_case(b"content-length"));
            if let Some(f) = cl {
                out.extend_from_slice(&[&b"Content-Length: "[..], f.value(buf), b"\r\n"].concat());
            }
        }
        BodyLen::None if !(100..200).contains(&h.status) && h.status != 204 => {
            out.extend_from_slice(b"Content-Length: 0\r\n")
        }
        BodyLen::None => {}
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// The client's head is CRLF-only and parses back to the same status and framing.
fn reserialised(
    buf: &[u8],
    h: &ResponseHead,
    head_request: bool,
    strict: Strictness,
) -> Result<(), String> {
    let out = client_head(buf, h, head_request);
    ensure!(crlf_only(&out), "client head not CRLF-only: {}", show(&out));
    if h.status < 100 && !strict.status_three_digits {
        return Ok(()); // known: written as "HTTP/1.1 0 ..." (see Strictness)
    }
    let again = parse_response(&out, head_request, &BIG);
    let Ok(Some(a)) = again else {
        return Err(format!("client head refused: {}", show(&out)));
    };
    let bodiless =
        head_request || (100..200).contains(&h.status) || h.status == 204 || h.status == 304;
    let want = match h.body {
        BodyLen::Close => BodyLen::Chunked,
        BodyLen::None if !bodiless && !strict.empty_body_framed => a.body, // known
        b => b,
    };
    ensure!(a.head_len == out.len(), "re-parsed head_len");
    ensure!(a.status == h.status, "status changed");
    ensure!(
        a.body == want,
        "the client reads framing {:?} where the server sent {:?}: {}",
        a.body,
        h.body,
        show(&out)
    );
    Ok(())
}
