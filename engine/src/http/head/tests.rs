//! The head parsers on bytes.

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
        (
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            BadContentLength,
        ),
        (
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\n",
            BadContentLength,
        ),
        (
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
            BadContentLength,
        ),
        (
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n",
            BadContentLength,
        ),
        (
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            LengthAndChunked,
        ),
        (
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            ChunkedNotLast,
        ),
        (
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
            ChunkedNotLast,
        ),
        (
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
            ChunkedNotLast,
        ),
        (
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: foo\r\n\r\n",
            UnknownCoding,
        ),
        (
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            TransferEncodingHttp10,
        ),
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
