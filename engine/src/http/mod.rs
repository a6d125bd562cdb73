//! HTTP/1.x, sans-io: head parsing and validation ([`head`]), the chunked coding
//! ([`chunked`]), normalised paths for path rules ([`path`]), and the small writers the proxy uses to build heads.

pub mod chunked;
pub mod head;
pub mod path;

pub use head::{
    BodyLen, HeadLimits, Method, RequestError, RequestHead, ResponseError, ResponseHead,
};

/// Reason phrases for the statuses the engine produces itself.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        413 => "Content Too Large",
        414 => "URI Too Long",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Unknown",
    }
}

/// Appends a decimal number without going through `fmt`.
pub fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&tmp[i..]);
}

/// A complete small response produced by the engine itself (errors, redirects).
pub fn simple_response(
    status: u16,
    extra_headers: &[(&str, &str)],
    body: &str,
    close: bool,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(160 + body.len());
    out.extend_from_slice(b"HTTP/1.1 ");
    push_u64(&mut out, status as u64);
    out.push(b' ');
    out.extend_from_slice(reason(status).as_bytes());
    out.extend_from_slice(b"\r\n");
    for (k, v) in extra_headers {
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !body.is_empty() {
        out.extend_from_slice(b"Content-Type: text/html; charset=utf-8\r\n");
    }
    out.extend_from_slice(b"Content-Length: ");
    push_u64(&mut out, body.len() as u64);
    out.extend_from_slice(b"\r\nCache-Control: no-cache\r\n");
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body.as_bytes());
    out
}

/// The built-in page for a status the engine answers itself.
pub fn error_response(status: u16, close: bool) -> Vec<u8> {
    let body = format!(
        "<!doctype html><html><head><title>{status} {r}</title></head><body><h1>{status} {r}</h1></body></html>\n",
        r = reason(status)
    );
    simple_response(status, &[], &body, close)
}

/// Seconds a client in the waiting room waits before its page refreshes.
pub const WAITING_ROOM_RETRY: u32 = 10;

/// The waiting-room response: 503 with Retry-After and a page that refreshes itself.
/// `page`: the configured HTML, else the built-in page.
pub fn waiting_room(page: Option<&[u8]>) -> Vec<u8> {
    let builtin = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"{WAITING_ROOM_RETRY}\"><title>Waiting room</title></head>\
<body><h1>You are in the waiting room</h1><p>Many students are starting at the same moment. This page reloads by itself \
in {WAITING_ROOM_RETRY} seconds and takes you in as soon as there is room. Your work is safe; please do not close this page.</p></body></html>\n"
    );
    let body: &[u8] = page.unwrap_or(builtin.as_bytes());
    let mut out = Vec::with_capacity(body.len() + 200);
    out.extend_from_slice(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/html; charset=utf-8\r\nCache-Control: no-store\r\nRetry-After: ");
    push_u64(&mut out, WAITING_ROOM_RETRY as u64);
    out.extend_from_slice(b"\r\nRefresh: ");
    push_u64(&mut out, WAITING_ROOM_RETRY as u64);
    out.extend_from_slice(b"\r\nContent-Length: ");
    push_u64(&mut out, body.len() as u64);
    out.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
    out.extend_from_slice(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        let mut v = Vec::new();
        push_u64(&mut v, 0);
        push_u64(&mut v, 1234567890);
        assert_eq!(v, b"01234567890");
    }

    #[test]
    fn simple() {
        let r = simple_response(301, &[("Location", "https://a/b")], "", false);
        let s = String::from_utf8(r).unwrap();
        assert!(s.starts_with(
            "HTTP/1.1 301 Moved Permanently\r\nLocation: https://a/b\r\nContent-Length: 0\r\n"
        ));
        assert!(s.ends_with("\r\n\r\n"));
    }
}
