//! An HTTP/2 request as the HTTP/1.1 request head the rest of the request path reads
//! (sans-io, unit-tested): pseudo-headers to the request line and Host, cookies joined
//! (RFC 9113 §8.2.3), the body's framing said (its length, or chunked).
//!
//! Downgrade safety (RFC 9113 §8.2.2, §8.3.1): what an HTTP/2 request may not carry is
//! refused here, never passed on. The `h2` crate refuses most of it already (pseudo-
//! headers missing, duplicated or unknown, connection-specific headers, TE other than
//! `trailers`, bytes no field may hold); this says it again, so that the rule does not
//! rest on a dependency, and adds what the crate leaves to the application: `:authority`
//! and Host that differ, several Host, content-length values that disagree.

use http::header::{self, HeaderMap, HeaderName};
use http::request::Parts;

/// Why a request is refused: a stream reset (malformed, RFC 9113 §8.1.1) or an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// RST_STREAM PROTOCOL_ERROR.
    Malformed(&'static str),
    /// An HTTP error answer (400).
    Status(u16, &'static str),
}

/// The HTTP/1.1 head, and how the body follows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head1 {
    pub bytes: Vec<u8>,
    pub body: Body1,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body1 {
    /// END_STREAM came with the headers.
    None,
    /// content-length: the DATA is passed as it is.
    Length(u64),
    /// No content-length: the DATA goes as chunks, trailers as a chunked trailer section.
    Chunked,
}

/// Headers that only mean something on one HTTP/1.1 connection (RFC 9113 §8.2.2).
const CONNECTION_SPECIFIC: [&str; 5] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
];

/// Whether a field value holds a byte no field may (CR, LF, NUL; RFC 9113 §8.2.1).
fn bad_value(v: &[u8]) -> bool {
    v.iter().any(|&c| c == b'\r' || c == b'\n' || c == 0)
}

fn check_fields(h: &HeaderMap) -> Result<(), Refusal> {
    for (name, value) in h {
        let n = name.as_str();
        if CONNECTION_SPECIFIC.contains(&n) {
            return Err(Refusal::Malformed("a connection-specific header"));
        }
        if name == header::TE && value.as_bytes() != b"trailers" {
            return Err(Refusal::Malformed("TE other than trailers"));
        }
        if n.bytes().any(|c| c.is_ascii_uppercase()) {
            return Err(Refusal::Malformed("an upper-case field name"));
        }
        if bad_value(value.as_bytes()) {
            return Err(Refusal::Malformed("CR, LF or NUL in a field value"));
        }
    }
    Ok(())
}

/// The declared content-length, every value the same.
fn content_length(h: &HeaderMap) -> Result<Option<u64>, Refusal> {
    let mut n = None;
    for v in h.get_all(header::CONTENT_LENGTH) {
        let s = v
            .to_str()
            .map_err(|_| Refusal::Malformed("a bad content-length"))?;
        for part in s.split(',') {
            let x: u64 = part
                .trim()
                .parse()
                .map_err(|_| Refusal::Malformed("a bad content-length"))?;
            if n.is_some_and(|y| y != x) {
                return Err(Refusal::Malformed("content-length values that disagree"));
            }
            n = Some(x);
        }
    }
    Ok(n)
}

/// The Host the server gets: `:authority`, or the Host header; both, only if equal.
fn host(parts: &Parts) -> Result<String, Refusal> {
    let mut hosts = parts.headers.get_all(header::HOST).iter();
    let h = hosts.next();
    if hosts.next().is_some() {
        return Err(Refusal::Status(400, "two Host headers"));
    }
    let authority = parts.uri.authority().map(|a| a.as_str());
    match (authority, h) {
        (Some(a), Some(h)) => {
            if !h.as_bytes().eq_ignore_ascii_case(a.as_bytes()) {
                return Err(Refusal::Status(400, ":authority and Host differ"));
            }
            Ok(a.to_string())
        }
        (Some(a), None) => Ok(a.to_string()),
        (None, Some(h)) => h
            .to_str()
            .map(str::to_string)
            .map_err(|_| Refusal::Status(400, "a Host that is not text")),
        (None, None) => Err(Refusal::Status(400, "no :authority and no Host")),
    }
}

/// The HTTP/1.1 head for `parts`; `end_stream`: no body follows.
pub fn to_http1(parts: &Parts, end_stream: bool) -> Result<Head1, Refusal> {
    check_fields(&parts.headers)?;
    let length = content_length(&parts.headers)?;
    let host = host(parts)?;
    if bad_value(host.as_bytes()) {
        return Err(Refusal::Malformed("CR, LF or NUL in :authority"));
    }
    let target = match parts.uri.path_and_query() {
        Some(p) if !p.as_str().is_empty() => p.as_str(),
        _ if parts.method == http::Method::CONNECT => {
            return Err(Refusal::Status(405, "CONNECT is not proxied"))
        }
        _ => return Err(Refusal::Malformed("no :path")),
    };
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    out.extend_from_slice(host.as_bytes());
    out.extend_from_slice(b"\r\n");
    let mut cookies: Vec<&[u8]> = Vec::new();
    for (name, value) in &parts.headers {
        if name == header::HOST || name == header::CONTENT_LENGTH || name == header::TE {
            continue;
        }
        if name == header::COOKIE {
            cookies.push(value.as_bytes());
            continue;
        }
        field(&mut out, name, value.as_bytes());
    }
    if !cookies.is_empty() {
        // RFC 9113 §8.2.3: split crumbs joined again with "; " for HTTP/1.1.
        field(&mut out, &header::COOKIE, &cookies.join(&b"; "[..]));
    }
    let body = match (end_stream, length) {
        (true, Some(n)) if n > 0 => {
            return Err(Refusal::Malformed("content-length with no DATA"));
        }
        (true, _) => Body1::None,
        (false, Some(n)) => Body1::Length(n),
        (false, None) => Body1::Chunked,
    };
    match body {
        Body1::Length(n) => out.extend_from_slice(format!("content-length: {n}\r\n").as_bytes()),
        Body1::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Body1::None => {
            if length == Some(0) {
                out.extend_from_slice(b"content-length: 0\r\n");
            }
        }
    }
    out.extend_from_slice(b"\r\n");
    Ok(Head1 { bytes: out, body })
}

fn field(out: &mut Vec<u8>, name: &HeaderName, value: &[u8]) {
    out.extend_from_slice(name.as_str().as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// The trailer section of a chunked body for HTTP/2 trailers (after the last chunk).
pub fn chunked_end(trailers: Option<&HeaderMap>) -> Vec<u8> {
    let mut out = b"0\r\n".to_vec();
    for (name, value) in trailers.into_iter().flatten() {
        let n = name.as_str();
        // What may not be a trailer, or not on HTTP/1.1, is dropped.
        if CONNECTION_SPECIFIC.contains(&n)
            || name == header::CONTENT_LENGTH
            || name == header::HOST
            || name == header::TE
            || bad_value(value.as_bytes())
        {
            continue;
        }
        field(&mut out, name, value.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(method: &str, uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut b = http::Request::builder().method(method).uri(uri);
        for (n, v) in headers {
            b = b.header(*n, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    fn text(h: &Head1) -> String {
        String::from_utf8(h.bytes.clone()).unwrap()
    }

    #[test]
    fn pseudo_headers_become_the_request_line_and_host_and_cookies_are_joined() {
        let p = parts(
            "GET",
            "https://moodle.example.edu/my/?x=1",
            &[
                ("cookie", "SERVERID=s1"),
                ("accept", "text/html"),
                ("cookie", "MoodleSession=abc"),
            ],
        );
        let h = to_http1(&p, true).unwrap();
        assert_eq!(
            text(&h),
            "GET /my/?x=1 HTTP/1.1\r\nhost: moodle.example.edu\r\naccept: text/html\r\ncookie: SERVERID=s1; MoodleSession=abc\r\n\r\n"
        );
        assert_eq!(h.body, Body1::None);
    }

    #[test]
    fn a_body_keeps_its_length_or_goes_chunked() {
        let p = parts("POST", "https://m/upload", &[("content-length", "10")]);
        let h = to_http1(&p, false).unwrap();
        assert!(
            text(&h).ends_with("content-length: 10\r\n\r\n"),
            "{}",
            text(&h)
        );
        assert_eq!(h.body, Body1::Length(10));
        let p = parts("POST", "https://m/upload", &[]);
        let h = to_http1(&p, false).unwrap();
        assert!(text(&h).ends_with("transfer-encoding: chunked\r\n\r\n"));
        assert_eq!(h.body, Body1::Chunked);
    }

    #[test]
    fn what_http2_may_not_carry_is_refused() {
        let malformed = |h: &[(&str, &str)]| {
            matches!(
                to_http1(&parts("GET", "https://m/", h), true),
                Err(Refusal::Malformed(_))
            )
        };
        for h in [
            ("connection", "keep-alive"),
            ("keep-alive", "5"),
            ("proxy-connection", "x"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("te", "gzip"),
        ] {
            assert!(malformed(&[h]), "{h:?}");
        }
        assert!(!malformed(&[("te", "trailers")]));
        assert!(malformed(&[
            ("content-length", "5"),
            ("content-length", "6")
        ]));
        assert!(
            malformed(&[("content-length", "5")]),
            "a length with END_STREAM on HEADERS"
        );
        assert_eq!(
            to_http1(
                &parts("GET", "https://a.example/", &[("host", "b.example")]),
                true
            ),
            Err(Refusal::Status(400, ":authority and Host differ"))
        );
        assert_eq!(
            to_http1(&parts("GET", "/", &[]), true),
            Err(Refusal::Status(400, "no :authority and no Host"))
        );
        let h = to_http1(&parts("GET", "/", &[("host", "m.example")]), true).unwrap();
        assert!(text(&h).starts_with("GET / HTTP/1.1\r\nhost: m.example\r\n"));
    }

    #[test]
    fn trailers_end_the_chunked_body_without_what_cannot_be_one() {
        let mut t = HeaderMap::new();
        t.insert("x-checksum", "abc".parse().unwrap());
        t.insert("content-length", "5".parse().unwrap());
        assert_eq!(chunked_end(Some(&t)), b"0\r\nx-checksum: abc\r\n\r\n");
        assert_eq!(chunked_end(None), b"0\r\n\r\n");
    }
}
