//! Sans-io request and response heads: httparse for the syntax, then the framing rules
//! that httparse leaves to us (RFC 9112 §6, §7; RFC 9110 §7.6.1).
//!
//! Parsing borrows the read buffer; what the proxy needs afterwards (framing, connection
//! options, the Host, cookies) is computed here once.

use std::mem::MaybeUninit;

use super::chunked::is_tchar;

/// How a message body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyLen {
    None,
    Length(u64),
    Chunked,
    /// Until the server closes (responses only).
    Close,
}

/// Limits on a head.
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    pub max_head_bytes: usize,
    pub max_target_bytes: usize,
    pub max_headers: usize,
}

/// Why a request head is refused; each maps to the status the client gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("malformed request line or header")]
    Malformed,
    #[error("bare LF line ending")]
    BareLf,
    #[error("missing Host header in HTTP/1.1")]
    MissingHost,
    #[error("more than one Host header")]
    RepeatedHost,
    #[error("invalid Host header")]
    BadHost,
    #[error("invalid or differing Content-Length")]
    BadContentLength,
    #[error("Content-Length together with Transfer-Encoding")]
    LengthAndChunked,
    #[error("chunked is not the last transfer coding")]
    ChunkedNotLast,
    #[error("Transfer-Encoding in an HTTP/1.0 request")]
    TransferEncodingHttp10,
    #[error("unknown transfer coding")]
    UnknownCoding,
    #[error("request target too long")]
    TargetTooLong,
    #[error("request head too large")]
    HeadTooLarge,
    #[error("too many headers")]
    TooManyHeaders,
    #[error("invalid request target")]
    BadTarget,
}

impl RequestError {
    pub fn status(self) -> u16 {
        match self {
            RequestError::UnknownCoding => 501,
            RequestError::TargetTooLong => 414,
            RequestError::HeadTooLarge | RequestError::TooManyHeaders => 431,
            _ => 400,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Options,
    Trace,
    Connect,
    Patch,
    Other,
}

impl Method {
    fn from_bytes(m: &[u8]) -> Method {
        match m {
            b"GET" => Method::Get,
            b"HEAD" => Method::Head,
            b"POST" => Method::Post,
            b"PUT" => Method::Put,
            b"DELETE" => Method::Delete,
            b"OPTIONS" => Method::Options,
            b"TRACE" => Method::Trace,
            b"CONNECT" => Method::Connect,
            b"PATCH" => Method::Patch,
            _ => Method::Other,
        }
    }

    /// RFC 9110 §9.2.2.
    pub fn is_idempotent(self) -> bool {
        matches!(
            self,
            Method::Get
                | Method::Head
                | Method::Put
                | Method::Delete
                | Method::Options
                | Method::Trace
        )
    }
}

/// A header as byte offsets into the head buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    pub name: (u32, u32),
    pub value: (u32, u32),
    /// Hop-by-hop or otherwise not forwarded as received.
    pub drop: bool,
    /// Which of the headers the engine acts on this is.
    pub kind: Hdr,
}

/// The header names the engine acts on, recognised once per field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hdr {
    Host,
    ContentLength,
    TransferEncoding,
    Connection,
    ProxyConnection,
    KeepAlive,
    Te,
    Trailer,
    Expect,
    Upgrade,
    Cookie,
    SetCookie,
    CacheControl,
    XForwardedFor,
    XForwardedProto,
    XForwardedSsl,
    Other,
}

/// Classifies a header name: by length first, so most names cost one comparison.
#[inline]
pub fn hdr_kind(n: &[u8]) -> Hdr {
    let is = |k: &[u8]| n.eq_ignore_ascii_case(k);
    match n.len() {
        2 if is(b"te") => Hdr::Te,
        4 if is(b"host") => Hdr::Host,
        6 if is(b"cookie") => Hdr::Cookie,
        6 if is(b"expect") => Hdr::Expect,
        7 if is(b"upgrade") => Hdr::Upgrade,
        7 if is(b"trailer") => Hdr::Trailer,
        10 if is(b"connection") => Hdr::Connection,
        10 if is(b"keep-alive") => Hdr::KeepAlive,
        10 if is(b"set-cookie") => Hdr::SetCookie,
        13 if is(b"cache-control") => Hdr::CacheControl,
        14 if is(b"content-length") => Hdr::ContentLength,
        15 if is(b"x-forwarded-for") => Hdr::XForwardedFor,
        15 if is(b"x-forwarded-ssl") => Hdr::XForwardedSsl,
        16 if is(b"proxy-connection") => Hdr::ProxyConnection,
        17 if is(b"transfer-encoding") => Hdr::TransferEncoding,
        17 if is(b"x-forwarded-proto") => Hdr::XForwardedProto,
        _ => Hdr::Other,
    }
}

impl Field {
    pub fn name<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        &buf[self.name.0 as usize..self.name.1 as usize]
    }
    pub fn value<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        &buf[self.value.0 as usize..self.value.1 as usize]
    }
}

/// Connection options common to both directions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnOpts {
    pub close: bool,
    pub keep_alive: bool,
    pub upgrade: bool,
}

/// A parsed, validated request head. Offsets point into the buffer it was parsed from.
#[derive(Debug, Clone)]
pub struct RequestHead {
    pub method: Method,
    pub method_span: (u32, u32),
    pub target: (u32, u32),
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor: u8,
    pub fields: Vec<Field>,
    /// Bytes of the buffer that the head takes (through the empty line).
    pub head_len: usize,
    /// Leading empty lines skipped before the request line.
    pub skipped: usize,
    pub body: BodyLen,
    pub conn: ConnOpts,
    pub host: Option<(u32, u32)>,
    pub expect_continue: bool,
    /// An `Upgrade` header was sent (and named in Connection).
    pub upgrade: Option<(u32, u32)>,
}

impl RequestHead {
    pub fn target<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        &buf[self.target.0 as usize..self.target.1 as usize]
    }
    pub fn method_str<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        &buf[self.method_span.0 as usize..self.method_span.1 as usize]
    }
    pub fn host<'a>(&self, buf: &'a [u8]) -> Option<&'a [u8]> {
        self.host.map(|(a, b)| &buf[a as usize..b as usize])
    }
    /// Whether the client wants the connection kept after this exchange.
    pub fn client_keep_alive(&self) -> bool {
        if self.minor == 0 {
            self.conn.keep_alive && !self.conn.close
        } else {
            !self.conn.close
        }
    }
    /// The request line as sent (method SP target SP version), for the log.
    pub fn request_line(&self, buf: &[u8]) -> String {
        let start = self.method_span.0 as usize;
        let line_end = buf[start..]
            .iter()
            .position(|&c| c == b'\r')
            .map(|p| start + p)
            .unwrap_or(start);
        String::from_utf8_lossy(&buf[start..line_end]).into_owned()
    }
}

/// A parsed response head.
#[derive(Debug, Clone)]
pub struct ResponseHead {
    pub status: u16,
    pub minor: u8,
    pub fields: Vec<Field>,
    pub head_len: usize,
    pub body: BodyLen,
    pub conn: ConnOpts,
    /// Offset range of the reason phrase.
    pub reason: (u32, u32),
    /// The Transfer-Encoding value when it names a coding other than chunked (gzip,
    /// chunked): the client must be told of it.
    pub te_codings: Option<(u32, u32)>,
    /// The response had a Transfer-Encoding.
    pub te: bool,
}

impl ResponseHead {
    /// Whether the server lets us reuse the connection after this response.
    pub fn server_keep_alive(&self) -> bool {
        if self.body == BodyLen::Close {
            return false;
        }
        if self.minor == 0 && self.te {
            // Transfer-Encoding in HTTP/1.0: faulty framing, close after it (RFC 9112 §6.1).
            return false;
        }
        if self.minor == 0 {
            self.conn.keep_alive && !self.conn.close
        } else {
            !self.conn.close
        }
    }
}

/// Why a response head is refused: always a 502 for the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ResponseError {
    #[error("malformed response head")]
    Malformed,
    #[error("response head too large")]
    TooLarge,
    #[error("invalid or differing Content-Length in response")]
    BadContentLength,
    #[error("invalid Transfer-Encoding in response")]
    BadTransferEncoding,
}

fn off(buf: &[u8], s: &[u8]) -> u32 {
    (s.as_ptr() as usize - buf.as_ptr() as usize) as u32
}

fn span(buf: &[u8], s: &[u8]) -> (u32, u32) {
    let a = off(buf, s);
    (a, a + s.len() as u32)
}

pub fn eq_ic(a: &[u8], b: &[u8]) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// Splits a comma-separated header value into trimmed, non-empty elements.
pub fn tokens(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    v.split(|&c| c == b',').map(trim).filter(|t| !t.is_empty())
}

pub fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

fn has_bare_lf(head: &[u8]) -> bool {
    head.iter()
        .enumerate()
        .any(|(i, &c)| c == b'\n' && (i == 0 || head[i - 1] != b'\r'))
}

fn parse_content_length(v: &[u8], current: &mut Option<u64>) -> Result<(), ()> {
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

fn valid_host(h: &[u8]) -> bool {
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

fn valid_target(t: &[u8], method: Method) -> bool {
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

const STACK_HEADERS: usize = 128;

/// Marks the headers that a Connection header names as hop-by-hop (RFC 9110 §7.6.1).
/// `upgrading`: a 101 keeps its Upgrade header.
fn drop_named(buf: &[u8], headers: &[httparse::Header<'_>], fields: &mut [Field], upgrading: bool) {
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
    let mut stack: [MaybeUninit<httparse::Header<'_>>; STACK_HEADERS] =
        [const { MaybeUninit::uninit() }; STACK_HEADERS];
    let mut heap: Vec<MaybeUninit<httparse::Header<'_>>>;
    let slots: &mut [MaybeUninit<httparse::Header<'_>>] = if limits.max_headers <= STACK_HEADERS {
        &mut stack[..limits.max_headers]
    } else {
        heap = (0..limits.max_headers)
            .map(|_| MaybeUninit::uninit())
            .collect();
        &mut heap[..]
    };
    let mut req = httparse::Request::new(&mut []);
    let status = httparse::ParserConfig::default()
        .parse_request_with_uninit_headers(&mut req, window, slots);
    let head_len = match status {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            // Decide 414 as soon as the request line is known to be too long.
            let line_end = window.iter().position(|&c| c == b'\n');
            let line_len = line_end.unwrap_or(window.len());
            if line_len > limits.max_target_bytes + 32 {
                if let Some(sp) = window.iter().position(|&c| c == b' ') {
                    let rest = &window[sp + 1..line_len];
                    let tlen = rest.iter().position(|&c| c == b' ').unwrap_or(rest.len());
                    if tlen > limits.max_target_bytes {
                        return Err(RequestError::TargetTooLong);
                    }
                }
            }
            if data.len() >= limits.max_head_bytes {
                return Err(RequestError::HeadTooLarge);
            }
            return Ok(None);
        }
        Err(httparse::Error::TooManyHeaders) => return Err(RequestError::TooManyHeaders),
        Err(_) => {
            return Err(RequestError::Malformed);
        }
    };
    let head = &window[..head_len];
    if has_bare_lf(head) {
        return Err(RequestError::BareLf);
    }
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

    let mut fields = Vec::with_capacity(req.headers.len());
    let mut host = None;
    let mut content_length: Option<u64> = None;
    let mut chunked = false;
    let mut te_seen = false;
    let mut conn = ConnOpts::default();
    let mut expect_continue = false;
    let mut upgrade = None;
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        let value = h.value;
        let kind = hdr_kind(name);
        let mut f = Field {
            name: span(buf, name),
            value: span(buf, value),
            drop: false,
            kind,
        };
        if kind == Hdr::Other {
            fields.push(f);
            continue;
        }
        if kind == Hdr::Host {
            if host.is_some() {
                return Err(RequestError::RepeatedHost);
            }
            let v = trim(value);
            if !valid_host(v) {
                return Err(RequestError::BadHost);
            }
            host = Some(span(buf, v));
        } else if kind == Hdr::ContentLength {
            parse_content_length(value, &mut content_length)
                .map_err(|_| RequestError::BadContentLength)?;
            f.drop = true; // re-emitted by the proxy from the validated value
        } else if kind == Hdr::TransferEncoding {
            f.drop = true;
            for t in tokens(value) {
                if chunked {
                    // Anything after chunked (including a second chunked).
                    return Err(RequestError::ChunkedNotLast);
                }
                if eq_ic(t, b"chunked") {
                    chunked = true;
                } else if eq_ic(t, b"gzip")
                    || eq_ic(t, b"deflate")
                    || eq_ic(t, b"compress")
                    || eq_ic(t, b"x-gzip")
                {
                    // Known coding, but not last: handled by the chunked-last rule below.
                } else {
                    return Err(RequestError::UnknownCoding);
                }
            }
            if value.iter().all(|&c| c == b' ' || c == b'\t') {
                return Err(RequestError::Malformed);
            }
            te_seen = true;
        } else if kind == Hdr::Connection || kind == Hdr::ProxyConnection {
            f.drop = true;
            for t in tokens(value) {
                if eq_ic(t, b"close") {
                    conn.close = true;
                } else if eq_ic(t, b"keep-alive") {
                    conn.keep_alive = true;
                } else if eq_ic(t, b"upgrade") {
                    conn.upgrade = true;
                }
            }
        } else if matches!(kind, Hdr::KeepAlive | Hdr::Te | Hdr::Trailer) {
            f.drop = true;
        } else if kind == Hdr::Expect {
            if eq_ic(trim(value), b"100-continue") {
                expect_continue = true;
                f.drop = true;
            }
        } else if kind == Hdr::Upgrade {
            f.drop = true;
            upgrade = Some(span(buf, trim(value)));
        }
        fields.push(f);
    }
    if te_seen && !chunked {
        return Err(RequestError::ChunkedNotLast);
    }
    if te_seen && minor == 0 {
        return Err(RequestError::TransferEncodingHttp10);
    }
    if te_seen && content_length.is_some() {
        return Err(RequestError::LengthAndChunked);
    }
    if minor == 1 && host.is_none() {
        return Err(RequestError::MissingHost);
    }
    // Headers named by Connection are hop-by-hop too.
    drop_named(buf, req.headers, &mut fields, false);
    let upgrade = if conn.upgrade { upgrade } else { None };
    let body = if chunked {
        BodyLen::Chunked
    } else {
        match content_length {
            Some(0) | None => BodyLen::None,
            Some(n) => BodyLen::Length(n),
        }
    };
    Ok(Some(RequestHead {
        method,
        method_span: span(buf, method_s.as_bytes()),
        target: span(buf, target_s.as_bytes()),
        minor,
        fields,
        head_len: skipped + head_len,
        skipped,
        body,
        conn,
        host,
        expect_continue: expect_continue && body != BodyLen::None,
        upgrade,
    }))
}

/// Parses a response head. `request_was_head`: the body is empty whatever it says.
pub fn parse_response(
    buf: &[u8],
    request_was_head: bool,
    limits: &HeadLimits,
) -> Result<Option<ResponseHead>, ResponseError> {
    let window = &buf[..buf.len().min(limits.max_head_bytes)];
    let mut stack: [MaybeUninit<httparse::Header<'_>>; STACK_HEADERS] =
        [const { MaybeUninit::uninit() }; STACK_HEADERS];
    let mut heap: Vec<MaybeUninit<httparse::Header<'_>>>;
    let slots: &mut [MaybeUninit<httparse::Header<'_>>] = if limits.max_headers <= STACK_HEADERS {
        &mut stack[..limits.max_headers]
    } else {
        heap = (0..limits.max_headers)
            .map(|_| MaybeUninit::uninit())
            .collect();
        &mut heap[..]
    };
    let mut resp = httparse::Response::new(&mut []);
    let status = httparse::ParserConfig::default()
        .allow_obsolete_multiline_headers_in_responses(false)
        .parse_response_with_uninit_headers(&mut resp, window, slots);
    let head_len = match status {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            if buf.len() >= limits.max_head_bytes {
                return Err(ResponseError::TooLarge);
            }
            return Ok(None);
        }
        Err(httparse::Error::TooManyHeaders) => return Err(ResponseError::TooLarge),
        Err(_) => return Err(ResponseError::Malformed),
    };
    let code = resp.code.ok_or(ResponseError::Malformed)?;
    if code < 100 {
        // Three digits, 1xx to 5xx (RFC 9110 §15): 000-099 are no status at all.
        return Err(ResponseError::Malformed);
    }
    let minor = resp.version.ok_or(ResponseError::Malformed)?;
    let reason = resp.reason.unwrap_or("");
    let reason_span = if reason.is_empty() {
        (0, 0)
    } else {
        span(buf, reason.as_bytes())
    };
    let mut fields = Vec::with_capacity(resp.headers.len());
    let mut content_length: Option<u64> = None;
    let mut chunked = false;
    let mut te_seen = false;
    let mut te_codings = None;
    let mut conn = ConnOpts::default();
    for h in resp.headers.iter() {
        let name = h.name.as_bytes();
        let value = h.value;
        let kind = hdr_kind(name);
        let mut f = Field {
            name: span(buf, name),
            value: span(buf, value),
            drop: false,
            kind,
        };
        if kind == Hdr::Other {
            fields.push(f);
            continue;
        }
        if kind == Hdr::ContentLength {
            parse_content_length(value, &mut content_length)
                .map_err(|_| ResponseError::BadContentLength)?;
            f.drop = true;
        } else if kind == Hdr::TransferEncoding {
            f.drop = true;
            te_seen = true;
            chunked = false;
            for t in tokens(value) {
                chunked = eq_ic(t, b"chunked");
                if !chunked && te_codings.is_none() {
                    te_codings = Some(span(buf, value));
                }
            }
        } else if kind == Hdr::Connection || kind == Hdr::ProxyConnection {
            f.drop = true;
            for t in tokens(value) {
                if eq_ic(t, b"close") {
                    conn.close = true;
                } else if eq_ic(t, b"keep-alive") {
                    conn.keep_alive = true;
                } else if eq_ic(t, b"upgrade") {
                    conn.upgrade = true;
                }
            }
        } else if matches!(kind, Hdr::KeepAlive | Hdr::Te | Hdr::Trailer) {
            f.drop = true;
        } else if kind == Hdr::Upgrade {
            f.drop = code != 101;
        }
        fields.push(f);
    }
    drop_named(buf, resp.headers, &mut fields, code == 101);
    let body = if request_was_head || (100..200).contains(&code) || code == 204 || code == 304 {
        BodyLen::None
    } else if te_seen {
        if chunked {
            BodyLen::Chunked
        } else {
            // A response whose last coding is not chunked is close-delimited (§6.3).
            BodyLen::Close
        }
    } else {
        match content_length {
            Some(0) => BodyLen::None,
            Some(n) => BodyLen::Length(n),
            None => BodyLen::Close,
        }
    };
    if te_seen && content_length.is_some() {
        // §6.3: TE overrides CL; the connection is closed afterwards.
        conn.close = true;
    }
    Ok(Some(ResponseHead {
        status: code,
        minor,
        fields,
        head_len,
        body,
        conn,
        reason: reason_span,
        te_codings: if te_seen { te_codings } else { None },
        te: te_seen,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: HeadLimits = HeadLimits {
        max_head_bytes: 16384,
        max_target_bytes: 8192,
        max_headers: 100,
    };

    fn req(s: &str) -> Result<Option<RequestHead>, RequestError> {
        parse_request(s.as_bytes(), &L)
    }

    #[test]
    fn simple_get() {
        let r = req("GET /a?b=1 HTTP/1.1\r\nHost: x.example:8080\r\nAccept: */*\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(r.method, Method::Get);
        assert_eq!(r.minor, 1);
        assert_eq!(r.body, BodyLen::None);
        assert!(r.client_keep_alive());
        let b = b"GET /a?b=1 HTTP/1.1\r\nHost: x.example:8080\r\nAccept: */*\r\n\r\n";
        assert_eq!(r.target(b), b"/a?b=1");
        assert_eq!(r.host(b), Some(&b"x.example:8080"[..]));
        assert_eq!(r.head_len, b.len());
    }

    #[test]
    fn partial_is_none() {
        assert!(req("GET / HTTP/1.1\r\nHost: a\r\n").unwrap().is_none());
        assert!(req("").unwrap().is_none());
    }

    #[test]
    fn framing() {
        let r = req("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(r.body, BodyLen::Length(5));
        let r = req("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(r.body, BodyLen::Length(5));
        let r = req("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(r.body, BodyLen::Chunked);
    }

    #[test]
    fn refusals() {
        use RequestError::*;
        let cases: &[(&str, RequestError)] = &[
            ("GET / HTTP/1.1\r\n\r\n", MissingHost),
            ("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", RepeatedHost),
            ("GET / HTTP/1.1\r\nHost: a b\r\n\r\n", BadHost),
            ("GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", BadHost),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", BadContentLength),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\n", BadContentLength),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", BadContentLength),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n", BadContentLength),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", LengthAndChunked),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", ChunkedNotLast),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", ChunkedNotLast),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", ChunkedNotLast),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: foo\r\n\r\n", UnknownCoding),
            ("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", TransferEncodingHttp10),
            ("GET / HTTP/1.1\nHost: a\n\n", BareLf),
            ("GET  / HTTP/1.1\r\nHost: a\r\n\r\n", Malformed),
            ("get / HTTP/1.1\r\nHost: a\r\n\r\n", Malformed),
            ("GET / HTTP/2.0\r\nHost: a\r\n\r\n", Malformed),
            ("GET / HTTP/1.1\r\nHost : a\r\n\r\n", Malformed),
            ("GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n", Malformed),
            ("GET /\u{e9} HTTP/1.1\r\nHost: a\r\n\r\n", BadTarget),
            ("GET foo HTTP/1.1\r\nHost: a\r\n\r\n", BadTarget),
        ];
        for (input, want) in cases {
            assert_eq!(req(input).err(), Some(*want), "{input:?}");
        }
    }

    #[test]
    fn statuses() {
        assert_eq!(RequestError::UnknownCoding.status(), 501);
        assert_eq!(RequestError::TargetTooLong.status(), 414);
        assert_eq!(RequestError::HeadTooLarge.status(), 431);
        assert_eq!(RequestError::MissingHost.status(), 400);
    }

    #[test]
    fn limits() {
        let long = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(9000));
        assert_eq!(req(&long).err(), Some(RequestError::TargetTooLong));
        // Known to be too long before the line ends.
        let partial = format!("GET /{}", "a".repeat(9000));
        assert_eq!(req(&partial).err(), Some(RequestError::TargetTooLong));
        let big = format!("GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n", "b".repeat(17000));
        assert_eq!(req(&big).err(), Some(RequestError::HeadTooLarge));
        let many: String = (0..150).map(|i| format!("X-{i}: v\r\n")).collect();
        let many = format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n");
        assert_eq!(req(&many).err(), Some(RequestError::TooManyHeaders));
    }

    #[test]
    fn hop_by_hop_marked() {
        let s = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close, X-Secret\r\nX-Secret: 1\r\nKeep-Alive: 5\r\nTE: trailers\r\nX-Ok: 1\r\n\r\n";
        let r = parse_request(s, &L).unwrap().unwrap();
        let kept: Vec<&[u8]> = r
            .fields
            .iter()
            .filter(|f| !f.drop)
            .map(|f| f.name(s))
            .collect();
        assert_eq!(kept, vec![&b"Host"[..], &b"X-Ok"[..]]);
        assert!(!r.client_keep_alive());
    }

    #[test]
    fn http10_keep_alive() {
        let r = req("GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert!(!r.client_keep_alive());
        let r = req("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(r.client_keep_alive());
    }

    #[test]
    fn leading_empty_line_and_pipelining() {
        let s = b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n";
        let r = parse_request(s, &L).unwrap().unwrap();
        assert_eq!(r.skipped, 2);
        let r2 = parse_request(&s[r.head_len..], &L).unwrap().unwrap();
        assert_eq!(r2.target(&s[r.head_len..]), b"/2");
    }

    #[test]
    fn upgrade_and_expect() {
        let s = b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n";
        let r = parse_request(s, &L).unwrap().unwrap();
        assert!(r.upgrade.is_some());
        let s = b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n";
        let r = parse_request(s, &L).unwrap().unwrap();
        assert!(r.expect_continue);
    }

    fn resp(s: &str, head: bool) -> Result<Option<ResponseHead>, ResponseError> {
        parse_response(s.as_bytes(), head, &L)
    }

    #[test]
    fn responses() {
        let r = resp("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", false)
            .unwrap()
            .unwrap();
        assert_eq!(r.body, BodyLen::Length(10));
        assert!(r.server_keep_alive());
        let r = resp("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", true)
            .unwrap()
            .unwrap();
        assert_eq!(r.body, BodyLen::None);
        let r = resp("HTTP/1.1 204 No Content\r\n\r\n", false)
            .unwrap()
            .unwrap();
        assert_eq!(r.body, BodyLen::None);
        let r = resp(
            "HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
            false,
        )
        .unwrap()
        .unwrap();
        assert_eq!(r.body, BodyLen::None);
        let r = resp("HTTP/1.1 200 OK\r\n\r\n", false).unwrap().unwrap();
        assert_eq!(r.body, BodyLen::Close);
        assert!(!r.server_keep_alive());
        let r = resp(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            false,
        )
        .unwrap()
        .unwrap();
        assert_eq!(r.body, BodyLen::Chunked);
        let r = resp("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", false)
            .unwrap()
            .unwrap();
        assert!(!r.server_keep_alive());
        assert_eq!(
            resp(
                "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                false
            )
            .err(),
            Some(ResponseError::BadContentLength)
        );
        assert_eq!(
            resp("HTTP/1.1 2000 OK\r\n\r\n", false).err(),
            Some(ResponseError::Malformed)
        );
        assert_eq!(
            resp("garbage\r\n\r\n", false).err(),
            Some(ResponseError::Malformed)
        );
    }
}
