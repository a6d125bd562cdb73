//! A reference model of how a request head must be judged, written from RFC 9112 and the
//! README's promises, independently of `engine::http::head`.
//!
//! It reads lines the way RFC 9112 §2.2 describes (LF ends a line, a CR before it is part
//! of the line end), then applies the rules one by one. Where the RFC leaves a choice the
//! engine's documented choice is taken and marked "policy".
//!
//! A refusal carries every rule the input breaks: the engine may stop at any of them, so
//! its error has to be one of the set.

use engine::http::{BodyLen, HeadLimits, RequestError as E};

use super::{elements, field_line, head_lines, named, tchar, Line};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// Bytes of the buffer up to and including the empty line.
    pub head_len: usize,
    pub minor: u8,
    pub method: Vec<u8>,
    pub target: Vec<u8>,
    pub body: BodyLen,
    /// The Host value without surrounding whitespace.
    pub host: Option<Vec<u8>>,
    /// Whether the client lets the connection carry another request (RFC 9112 §9.3;
    /// policy: Proxy-Connection counts like Connection).
    pub keep_alive: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// No empty line yet. `too_large`: the bytes seen already exceed the head limit, so the
    /// answer has to be a refusal now.
    Incomplete {
        too_large: bool,
    },
    Refuse(Vec<E>),
    Accept(Accepted),
}

/// Judges `buf` (a head, maybe followed by a body or the next request).
pub fn judge(buf: &[u8], limits: &HeadLimits) -> Verdict {
    let (_, leading_bare_lf, lines, end) = head_lines(buf);
    // Policy: the head limit counts from the request line, after at most four leading
    // empty lines (CRLF); any further leading bytes count.
    let exempt = 2 * buf.chunks(2).take(4).take_while(|c| *c == b"\r\n").count();
    let Some(end) = end else {
        let too_large = buf.len() >= limits.max_head_bytes + exempt
            || request_line_too_long(&lines, buf, limits);
        return Verdict::Incomplete { too_large };
    };
    let mut why = Vec::new();
    if leading_bare_lf || lines.iter().any(|l| !l.crlf) {
        why.push(E::BareLf); // README: bare LF is refused
    }
    if end - exempt > limits.max_head_bytes {
        why.push(E::HeadTooLarge);
    }
    let req_line = lines[0].text;
    let (method, target, minor) = request_line(req_line, limits, &mut why);
    let fields = header_lines(&lines[1..lines.len() - 1], limits, &mut why);
    if why.contains(&E::HeadTooLarge) || why.contains(&E::TargetTooLong) {
        // The engine may stop reading before it sees anything else.
        why.extend([E::Malformed, E::BareLf, E::TooManyHeaders]);
    }
    let framing = framing(minor.unwrap_or(1), &fields, &mut why);
    match (why.is_empty(), minor, framing) {
        (true, Some(minor), Some((body, host))) => Verdict::Accept(Accepted {
            head_len: end,
            minor,
            method: method.to_vec(),
            target: target.to_vec(),
            body,
            host,
            keep_alive: keep_alive(minor, &fields),
        }),
        _ => {
            if why.is_empty() {
                why.push(E::Malformed);
            }
            Verdict::Refuse(why)
        }
    }
}

fn request_line_too_long(lines: &[Line<'_>], buf: &[u8], limits: &HeadLimits) -> bool {
    let first = lines
        .first()
        .map(|l| l.text)
        .unwrap_or_else(|| buf.strip_prefix(b"\r\n").unwrap_or(buf));
    let target = first.split(|&c| c == b' ').nth(1).unwrap_or(b"");
    // Policy (RFC 9112 §3: 414): known too long once the target passes the limit by
    // a margin, even before the line ends.
    target.len() > limits.max_target_bytes + 64
}

/// method SP request-target SP HTTP-version (RFC 9112 §3).
fn request_line<'a>(
    line: &'a [u8],
    limits: &HeadLimits,
    why: &mut Vec<E>,
) -> (&'a [u8], &'a [u8], Option<u8>) {
    let parts: Vec<&[u8]> = line.split(|&c| c == b' ').collect();
    if parts.len() != 3 || parts.iter().any(|p| p.is_empty()) {
        why.push(E::Malformed);
        if parts.len() >= 2 && parts[1].len() > limits.max_target_bytes {
            why.push(E::TargetTooLong);
        }
        return (b"", b"", None);
    }
    let (method, target, version) = (parts[0], parts[1], parts[2]);
    // Methods are case-sensitive tokens; policy: refuse lower-case letters (no Moodle
    // client sends them, and some servers upper-case them).
    if !method.iter().all(|&c| tchar(c) && !c.is_ascii_lowercase()) {
        why.push(E::Malformed);
    }
    let minor = match version {
        b"HTTP/1.1" => Some(1),
        b"HTTP/1.0" => Some(0),
        _ => {
            why.push(E::Malformed);
            None
        }
    };
    if target.len() > limits.max_target_bytes {
        why.push(E::TargetTooLong);
    }
    target_rules(method, target, why);
    (method, target, minor)
}

/// Request-target forms (RFC 9112 §3.2); policy: printable ASCII only.
fn target_rules(method: &[u8], target: &[u8], why: &mut Vec<E>) {
    if target.iter().any(|&c| c <= b' ' || c == 0x7f) {
        why.push(E::Malformed);
        why.push(E::BadTarget);
        return;
    }
    if target.iter().any(|&c| c >= 0x80) {
        // Non-ASCII: refused (not UTF-8: httparse already refuses it as malformed).
        why.extend([E::BadTarget, E::Malformed]);
        return;
    }
    let lower = target.to_ascii_lowercase();
    let ok = match target[0] {
        b'*' => target == b"*" && method == b"OPTIONS", // asterisk-form
        b'/' => true,                                   // origin-form
        _ => {
            method == b"CONNECT" // authority-form
                // absolute-form, with something after the scheme
                || (lower.starts_with(b"http://") && target.len() > 7)
                || (lower.starts_with(b"https://") && target.len() > 8)
        }
    };
    if !ok {
        why.push(E::BadTarget);
    }
}

/// field-line = field-name ":" OWS field-value OWS (RFC 9112 §5). Returns the well-formed
/// fields (name, value without OWS).
fn header_lines<'a>(
    lines: &[Line<'a>],
    limits: &HeadLimits,
    why: &mut Vec<E>,
) -> Vec<(&'a [u8], &'a [u8])> {
    if lines.len() > limits.max_headers {
        why.push(E::TooManyHeaders);
    }
    let mut fields = Vec::new();
    for l in lines {
        match field_line(l.text) {
            Some(f) => fields.push(f),
            None => why.push(E::Malformed),
        }
    }
    fields
}

/// Host, Content-Length and Transfer-Encoding (RFC 9112 §3.2, §6.1, §6.3; RFC 9110 §8.6).
/// Returns the body framing and the Host when nothing is wrong with them.
fn framing(
    minor: u8,
    fields: &[(&[u8], &[u8])],
    why: &mut Vec<E>,
) -> Option<(BodyLen, Option<Vec<u8>>)> {
    let before = why.len();
    let hosts: Vec<&[u8]> = named(fields, "host").collect();
    if hosts.len() > 1 {
        why.push(E::RepeatedHost);
    }
    if hosts.iter().any(|h| !host_ok(h)) {
        why.push(E::BadHost);
    }
    if hosts.is_empty() && minor == 1 {
        why.push(E::MissingHost);
    }
    let cls: Vec<&[u8]> = named(fields, "content-length").flat_map(elements).collect();
    let mut length = None;
    for e in &cls {
        // 1*DIGIT; policy: at most 19 digits (fits u64). A list of equal values is one.
        let n = (!e.is_empty() && e.len() <= 19 && e.iter().all(u8::is_ascii_digit))
            .then(|| std::str::from_utf8(e).unwrap().parse::<u64>().unwrap());
        match (n, length) {
            (None, _) => why.push(E::BadContentLength),
            (Some(n), Some(l)) if n != l => why.push(E::BadContentLength),
            (Some(n), _) => length = Some(n),
        }
    }
    let te: Vec<&[u8]> = named(fields, "transfer-encoding").collect();
    if !te.is_empty() {
        transfer_coding(minor, &te, !cls.is_empty(), why);
    }
    if why.len() > before {
        return None;
    }
    let body = match (te.is_empty(), length) {
        (false, _) => BodyLen::Chunked,
        (true, Some(0) | None) => BodyLen::None,
        (true, Some(n)) => BodyLen::Length(n),
    };
    Some((body, hosts.first().map(|h| h.to_vec())))
}

fn transfer_coding(minor: u8, te: &[&[u8]], has_cl: bool, why: &mut Vec<E>) {
    let codings: Vec<Vec<u8>> = te
        .iter()
        .flat_map(|v| elements(v))
        .filter(|e| !e.is_empty())
        .map(|e| e.to_ascii_lowercase())
        .collect();
    if te.iter().any(|v| v.is_empty()) {
        why.push(E::Malformed); // policy: an empty Transfer-Encoding is malformed
    }
    const KNOWN: [&[u8]; 5] = [b"chunked", b"gzip", b"deflate", b"compress", b"x-gzip"];
    if codings.iter().any(|c| !KNOWN.contains(&c.as_slice())) {
        why.push(E::UnknownCoding); // 501
    }
    let chunked = codings
        .iter()
        .filter(|c| c.as_slice() == b"chunked")
        .count();
    if chunked != 1 || codings.last().map(|c| c.as_slice()) != Some(b"chunked") {
        why.push(E::ChunkedNotLast);
    }
    if minor == 0 {
        why.push(E::TransferEncodingHttp10);
    }
    if has_cl {
        why.push(E::LengthAndChunked);
    }
}

fn keep_alive(minor: u8, fields: &[(&[u8], &[u8])]) -> bool {
    let tokens: Vec<Vec<u8>> = named(fields, "connection")
        .chain(named(fields, "proxy-connection"))
        .flat_map(elements)
        .map(|t| t.to_ascii_lowercase())
        .collect();
    let close = tokens.iter().any(|t| t == b"close");
    let keep = tokens.iter().any(|t| t == b"keep-alive");
    !close && (minor == 1 || keep)
}

/// uri-host [ ":" port ] (RFC 9110 §7.2, RFC 3986 §3.2.2). Policy: not empty, at most 255
/// bytes, a port of at most 5 digits, IP-literals of hex digits, colons and dots.
pub fn host_ok(h: &[u8]) -> bool {
    if h.is_empty() || h.len() > 255 {
        return false;
    }
    let (host, port) = if let Some(rest) = h.strip_prefix(b"[") {
        let Some(close) = rest.iter().position(|&c| c == b']') else {
            return false;
        };
        let inner = &rest[..close];
        if inner.is_empty()
            || !inner
                .iter()
                .all(|&c| c.is_ascii_hexdigit() || c == b':' || c == b'.')
        {
            return false;
        }
        (None, &rest[close + 1..])
    } else {
        match h.iter().rposition(|&c| c == b':') {
            Some(p) => (Some(&h[..p]), &h[p..]),
            None => (Some(h), &b""[..]),
        }
    };
    let port_ok = match port {
        [] => true,
        [b':', digits @ ..] => digits.len() <= 5 && digits.iter().all(u8::is_ascii_digit),
        _ => false,
    };
    // reg-name: unreserved / pct-encoded / sub-delims ('%' taken as a plain character).
    let name_ok = host.is_none_or(|n| {
        !n.is_empty()
            && n.iter()
                .all(|&c| c.is_ascii_alphanumeric() || b"-._~%!$&'()*+,;=".contains(&c))
    });
    port_ok && name_ok
}
