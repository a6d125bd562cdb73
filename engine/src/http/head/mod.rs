//! Sans-io request and response heads: httparse for the syntax, then the framing rules
//! that httparse leaves to us (RFC 9112 §6, §7; RFC 9110 §7.6.1).
//!
//! Parsing borrows the read buffer; what the proxy needs afterwards (framing, connection
//! options, the Host, cookies) is computed here once.

mod request;
mod response;
mod rules;
#[cfg(test)]
mod tests;

pub use request::parse_request;
pub use response::parse_response;

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
