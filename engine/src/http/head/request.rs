//! A request head: httparse for the syntax, then the request line's rules and each
//! header's (Host, Content-Length, Transfer-Encoding, Connection, Expect, Upgrade), then
//! the framing decision.

use std::mem::MaybeUninit;

use super::rules::{drop_named, has_bare_lf, parse_content_length, span, valid_host, valid_target};
use super::{
    eq_ic, hdr_kind, tokens, trim, BodyLen, ConnOpts, Field, Hdr, HeadLimits, Method, RequestError,
    RequestHead,
};
use crate::http::chunked::is_tchar;

pub(super) const STACK_HEADERS: usize = 128;

/// Header slots for httparse: on the stack for the usual limits.
pub(super) fn with_slots<'b, R>(
    max: usize,
    f: impl FnOnce(&mut [MaybeUninit<httparse::Header<'b>>]) -> R,
) -> R {
    let mut stack: [MaybeUninit<httparse::Header<'b>>; STACK_HEADERS] =
        [const { MaybeUninit::uninit() }; STACK_HEADERS];
    if max <= STACK_HEADERS {
        f(&mut stack[..max])
    } else {
        let mut heap: Vec<MaybeUninit<httparse::Header<'b>>> =
            (0..max).map(|_| MaybeUninit::uninit()).collect();
        f(&mut heap[..])
    }
}

/// Parses a request head from the start of `buf`. `Ok(None)`: incomplete, read more.
pub fn parse_request(buf: &[u8], limits: &HeadLimits) -> Result<Option<RequestHead>, RequestError> {
    // Skip at most a few leading empty lines (RFC 9112 §2.2 allows ignoring one or more).
    let mut skipped = 0;
    while skipped < 8 && buf[skipped..].starts_with(b"\r\n") {
        skipped += 2;
    }
    let data = &buf[skipped..];
    if data.is_empty() {
        return Ok(None);
    }
    let window = &data[..data.len().min(limits.max_head_bytes)];
    with_slots(limits.max_headers, |slots| {
        let mut req = httparse::Request::new(&mut []);
        let status = httparse::ParserConfig::default()
            .parse_request_with_uninit_headers(&mut req, window, slots);
        let head_len = match status {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return partial(window, data.len(), limits),
            Err(httparse::Error::TooManyHeaders) => return Err(RequestError::TooManyHeaders),
            Err(_) => return Err(RequestError::Malformed),
        };
        if has_bare_lf(&window[..head_len]) {
            return Err(RequestError::BareLf);
        }
        build(buf, &req, limits, skipped + head_len, skipped).map(Some)
    })
}

/// An incomplete head: 414 as soon as the request line is known to be too long, 431
/// once the head fills the limit, else read more.
fn partial(
    window: &[u8],
    have: usize,
    limits: &HeadLimits,
) -> Result<Option<RequestHead>, RequestError> {
    let line_len = window
        .iter()
        .position(|&c| c == b'\n')
        .unwrap_or(window.len());
    if line_len > limits.max_target_bytes + 32 {
        if let Some(sp) = window.iter().position(|&c| c == b' ') {
            let rest = &window[sp + 1..line_len];
            let tlen = rest.iter().position(|&c| c == b' ').unwrap_or(rest.len());
            if tlen > limits.max_target_bytes {
                return Err(RequestError::TargetTooLong);
            }
        }
    }
    if have >= limits.max_head_bytes {
        return Err(RequestError::HeadTooLarge);
    }
    Ok(None)
}

/// The request line's rules, then the headers', then the framing.
fn build(
    buf: &[u8],
    req: &httparse::Request<'_, '_>,
    limits: &HeadLimits,
    head_len: usize,
    skipped: usize,
) -> Result<RequestHead, RequestError> {
    let method_s = req.method.ok_or(RequestError::Malformed)?;
    let target_s = req.path.ok_or(RequestError::Malformed)?;
    let minor = req.version.ok_or(RequestError::Malformed)?;
    if !method_s
        .bytes()
        .all(|c| is_tchar(c) && !c.is_ascii_lowercase())
    {
        return Err(RequestError::Malformed);
    }
    let method = Method::from_bytes(method_s.as_bytes());
    if target_s.len() > limits.max_target_bytes {
        return Err(RequestError::TargetTooLong);
    }
    if !valid_target(target_s.as_bytes(), method) {
        return Err(RequestError::BadTarget);
    }
    let mut h = Headers::default();
    for hd in req.headers.iter() {
        h.add(buf, hd)?;
    }
    h.check(minor)?;
    // Headers named by Connection are hop-by-hop too.
    drop_named(buf, req.headers, &mut h.fields, false);
    let body = if h.chunked {
        BodyLen::Chunked
    } else {
        match h.content_length {
            Some(0) | None => BodyLen::None,
            Some(n) => BodyLen::Length(n),
        }
    };
    Ok(RequestHead {
        method,
        method_span: span(buf, method_s.as_bytes()),
        target: span(buf, target_s.as_bytes()),
        minor,
        head_len,
        skipped,
        body,
        host: h.host,
        expect_continue: h.expect_continue && body != BodyLen::None,
        upgrade: if h.conn.upgrade { h.upgrade } else { None },
        conn: h.conn,
        fields: h.fields,
    })
}

/// What a request's headers say, as they are read.
#[derive(Default)]
struct Headers {
    fields: Vec<Field>,
    host: Option<(u32, u32)>,
    content_length: Option<u64>,
    chunked: bool,
    te_seen: bool,
    conn: ConnOpts,
    expect_continue: bool,
    upgrade: Option<(u32, u32)>,
}

impl Headers {
    fn add(&mut self, buf: &[u8], h: &httparse::Header<'_>) -> Result<(), RequestError> {
        let (name, value) = (h.name.as_bytes(), h.value);
        let kind = hdr_kind(name);
        let mut f = Field {
            name: span(buf, name),
            value: span(buf, value),
            drop: false,
            kind,
        };
        match kind {
            Hdr::Other => {}
            Hdr::Host => {
                if self.host.is_some() {
                    return Err(RequestError::RepeatedHost);
                }
                let v = trim(value);
                if !valid_host(v) {
                    return Err(RequestError::BadHost);
                }
                self.host = Some(span(buf, v));
            }
            Hdr::ContentLength => {
                parse_content_length(value, &mut self.content_length)
                    .map_err(|_| RequestError::BadContentLength)?;
                f.drop = true; // re-emitted by the proxy from the validated value
            }
            Hdr::TransferEncoding => {
                f.drop = true;
                self.transfer_encoding(value)?;
            }
            Hdr::Connection | Hdr::ProxyConnection => {
                f.drop = true;
                self.conn.read(value);
            }
            Hdr::KeepAlive | Hdr::Te | Hdr::Trailer => f.drop = true,
            Hdr::Expect if eq_ic(trim(value), b"100-continue") => {
                self.expect_continue = true;
                f.drop = true;
            }
            Hdr::Upgrade => {
                f.drop = true;
                self.upgrade = Some(span(buf, trim(value)));
            }
            _ => {}
        }
        self.fields.push(f);
        Ok(())
    }

    /// Codings: chunked must be last, and known codings only before it.
    fn transfer_encoding(&mut self, value: &[u8]) -> Result<(), RequestError> {
        for t in tokens(value) {
            if self.chunked {
                // Anything after chunked (including a second chunked).
                return Err(RequestError::ChunkedNotLast);
            }
            if eq_ic(t, b"chunked") {
                self.chunked = true;
            } else if !(eq_ic(t, b"gzip")
                || eq_ic(t, b"deflate")
                || eq_ic(t, b"compress")
                || eq_ic(t, b"x-gzip"))
            {
                return Err(RequestError::UnknownCoding);
            }
            // A known coding, but not last: the chunked-last rule decides.
        }
        if value.iter().all(|&c| c == b' ' || c == b'\t') {
            return Err(RequestError::Malformed);
        }
        self.te_seen = true;
        Ok(())
    }

    /// The rules across headers (RFC 9112 §3.2, §6.1, §6.3).
    fn check(&self, minor: u8) -> Result<(), RequestError> {
        if self.te_seen && !self.chunked {
            return Err(RequestError::ChunkedNotLast);
        }
        if self.te_seen && minor == 0 {
            return Err(RequestError::TransferEncodingHttp10);
        }
        if self.te_seen && self.content_length.is_some() {
            return Err(RequestError::LengthAndChunked);
        }
        if minor == 1 && self.host.is_none() {
            return Err(RequestError::MissingHost);
        }
        Ok(())
    }
}

impl ConnOpts {
    /// The options a Connection (or Proxy-Connection) value gives.
    pub(super) fn read(&mut self, value: &[u8]) {
        for t in tokens(value) {
            if eq_ic(t, b"close") {
                self.close = true;
            } else if eq_ic(t, b"keep-alive") {
                self.keep_alive = true;
            } else if eq_ic(t, b"upgrade") {
                self.upgrade = true;
            }
        }
    }
}
