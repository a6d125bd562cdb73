//! The origin, driven through `tools::client`.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tools::client::{get, Conn, Framing};
use tools::origin::{Fault, Origin};
use tools::pattern;

const MIB10: usize = 10 << 20;

fn origin(name: &str) -> Origin {
    Origin::start(name).expect("start origin")
}

fn sha_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

#[test]
fn root_health_404_and_node_header() {
    let o = origin("n1");
    let r = get(o.addr(), "/").unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.version, "HTTP/1.1");
    assert_eq!(r.header("x-node"), Some("n1"));
    assert!(r.text().contains("n1"));
    let r = get(o.addr(), "/health").unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.text().trim(), "OK Moodle n1");
    let r = get(o.addr(), "/nope").unwrap();
    assert_eq!(r.status, 404);
    assert_eq!(r.header("X-Node"), Some("n1"));
    assert_eq!(o.requests(), 3);
    assert_eq!(o.connections(), 3);
}

#[test]
fn unhealthy_answers_503_without_moodle() {
    let o = origin("n1");
    o.set_healthy(false);
    for p in ["/health", "/login/index.php"] {
        let r = get(o.addr(), p).unwrap();
        assert_eq!(r.status, 503, "{p}");
        assert!(!r.text().contains("Moodle"), "{p}: {}", r.text());
        assert_eq!(r.header("x-node"), Some("n1"));
    }
    o.set_healthy(true);
    assert_eq!(get(o.addr(), "/health").unwrap().status, 200);
}

#[test]
fn status_slow_and_head() {
    let o = origin("n1");
    let mut c = Conn::connect(o.addr()).unwrap();
    for code in [200u16, 201, 302, 404, 500, 503] {
        let r = c
            .request("GET", &format!("/status?code={code}"), &[], b"")
            .unwrap();
        assert_eq!(r.status, code);
        assert_eq!(r.text().trim(), format!("status {code}"));
    }
    for code in [204u16, 304] {
        let r = c
            .request("GET", &format!("/status?code={code}"), &[], b"")
            .unwrap();
        assert_eq!(r.status, code);
        assert!(r.body.is_empty());
        assert_eq!(r.framing, Framing::None);
    }
    let t = Instant::now();
    let r = c.request("GET", "/slow?ms=200", &[], b"").unwrap();
    assert!(t.elapsed() >= Duration::from_millis(200));
    assert_eq!(r.text(), "slow 200");
    let r = c.request("HEAD", "/", &[], b"").unwrap();
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    let cl: usize = r.header("content-length").unwrap().parse().unwrap();
    assert!(cl > 0);
    let r = c.request("HEAD", "/download?size=12345", &[], b"").unwrap();
    assert_eq!(r.header("content-length"), Some("12345"));
    assert!(r.body.is_empty());
    // still in sync
    assert_eq!(c.request("GET", "/health", &[], b"").unwrap().status, 200);
    assert_eq!(o.connections(), 1);
    // bad query values
    assert_eq!(
        c.request("GET", "/status?code=abc", &[], b"")
            .unwrap()
            .status,
        400
    );
    assert!(c.is_closed_within(Duration::from_secs(5)));
}

#[test]
fn login_dashboard_and_redirects() {
    let a = origin("a");
    let b = origin("b");
    let r = get(a.addr(), "/login/index.php").unwrap();
    assert_eq!(r.status, 200);
    let t = r.text();
    assert!(t.contains("Moodle") && t.contains('a') && t.contains("<form"));

    let mut c = Conn::connect(a.addr()).unwrap();
    let r = c
        .request(
            "POST",
            "/login/index.php",
            &[("Content-Type", "application/x-www-form-urlencoded")],
            b"username=alice&password=x",
        )
        .unwrap();
    assert_eq!(r.status, 303);
    assert_eq!(r.header("location"), Some("/my/"));
    let sc = r.header("set-cookie").unwrap().to_string();
    assert!(sc.starts_with("MoodleSession=") && sc.contains("path=/") && sc.contains("HttpOnly"));
    let cookie = sc.split(';').next().unwrap().to_string();

    let r = c
        .request("GET", "/my/", &[("Cookie", &cookie)], b"")
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "Dashboard of alice on a");
    // among other cookies
    let mixed = format!("other=1; {cookie}; x=y");
    let r = c
        .request("GET", "/my/", &[("Cookie", &mixed)], b"")
        .unwrap();
    assert_eq!(r.text(), "Dashboard of alice on a");

    // without the cookie, or on the wrong node: the login loop
    let r = c.request("GET", "/my/", &[], b"").unwrap();
    assert_eq!(r.status, 303);
    assert_eq!(r.header("location"), Some("/login/index.php"));
    let mut cb = Conn::connect(b.addr()).unwrap();
    let r = cb
        .request("GET", "/my/", &[("Cookie", &cookie)], b"")
        .unwrap();
    assert_eq!(r.status, 303);
    assert_eq!(r.header("location"), Some("/login/index.php"));
    assert_eq!(a.sessions(), 1);
    assert_eq!(b.sessions(), 0);

    // missing username
    let r = c
        .request("POST", "/login/index.php", &[], b"password=x")
        .unwrap();
    assert_eq!(r.status, 400);
}

#[test]
fn quiz_submissions_are_counted() {
    let o = origin("q");
    let mut c = Conn::connect(o.addr()).unwrap();
    let r = c
        .request("POST", "/login/index.php", &[], b"username=bob")
        .unwrap();
    let cookie = r
        .header("set-cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let h = [("Cookie", cookie.as_str())];
    let r = c
        .request(
            "POST",
            "/mod/quiz/processattempt.php",
            &h,
            b"attempt=7&answer=42",
        )
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "submitted bob attempt 7 on q");
    let r = c
        .request(
            "POST",
            "/mod/quiz/processattempt.php",
            &h,
            b"attempt=8&answer=1",
        )
        .unwrap();
    assert_eq!(r.status, 200);
    let r = c
        .request(
            "POST",
            "/mod/quiz/processattempt.php",
            &h,
            b"attempt=7&answer=42",
        )
        .unwrap();
    assert_eq!(r.status, 200, "a repeat is answered too");
    assert_eq!(o.submissions().get("bob"), Some(&3));
    assert_eq!(
        o.attempts().get(&("bob".to_string(), "7".to_string())),
        Some(&2)
    );
    let r = c
        .request("POST", "/mod/quiz/processattempt.php", &[], b"attempt=9")
        .unwrap();
    assert_eq!(r.status, 303);
    assert_eq!(r.header("location"), Some("/login/index.php"));
    assert_eq!(o.submissions().get("bob"), Some(&3));
}

#[test]
fn echo_returns_exact_head_and_body() {
    let o = origin("e");
    let mut c = Conn::connect(o.addr()).unwrap();
    let head =
        b"POST /echo/x?y=1 HTTP/1.1\r\nHost: h\r\nX-Weird:   spaced  \r\ncontent-length: 5\r\n\r\n";
    let mut raw = head.to_vec();
    raw.extend_from_slice(b"hello");
    c.send(&raw).unwrap();
    let r = c.read_response(false).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/plain"));
    assert_eq!(r.body, raw);
    // chunked request body comes back decoded
    let head = b"PUT /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n";
    let mut raw = head.to_vec();
    raw.extend_from_slice(b"3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\nTrailer: t\r\n\r\n");
    c.send(&raw).unwrap();
    let r = c.read_response(false).unwrap();
    let mut want = head.to_vec();
    want.extend_from_slice(b"abcde");
    assert_eq!(r.body, want);
    let r = c.request("GET", "/echo", &[], b"").unwrap();
    assert!(r.text().starts_with("GET /echo HTTP/1.1\r\nHost: test\r\n"));
    assert_eq!(o.connections(), 1);
}

#[test]
fn upload_10mib_content_length_and_chunked() {
    let o = origin("u");
    let data = pattern(MIB10);
    let want = format!("len={} sha256={}", data.len(), sha_hex(&data));
    let mut c = Conn::connect(o.addr()).unwrap();
    let r = c.request("POST", "/upload", &[], &data).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), want);

    let mut enc = Vec::with_capacity(data.len() + 4096);
    let mut off = 0;
    let sizes = [65536usize, 1, 1000, 300_000, 17];
    let mut k = 0;
    while off < data.len() {
        let n = sizes[k % sizes.len()].min(data.len() - off);
        k += 1;
        enc.extend_from_slice(format!("{n:x}\r\n").as_bytes());
        enc.extend_from_slice(&data[off..off + n]);
        enc.extend_from_slice(b"\r\n");
        off += n;
    }
    enc.extend_from_slice(b"0\r\n\r\n");
    let r = c
        .request("PUT", "/upload", &[("Transfer-Encoding", "chunked")], &enc)
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), want);
    let r = c.request("POST", "/upload", &[], b"").unwrap();
    assert_eq!(r.text(), format!("len=0 sha256={}", sha_hex(b"")));
    assert_eq!(o.connections(), 1);
}

#[test]
fn expect_100_continue() {
    let o = origin("x");
    let mut c = Conn::connect(o.addr()).unwrap();
    c.send(
        b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n",
    )
    .unwrap();
    let mut buf = [0u8; 64];
    let want = b"HTTP/1.1 100 Continue\r\n\r\n";
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    c.stream()
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    while got.len() < want.len() && Instant::now() < deadline {
        let n = c.stream().read(&mut buf[..want.len() - got.len()]).unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(&got[..], &want[..]);
    c.send(b"abc").unwrap();
    let r = c.read_response(false).unwrap();
    assert_eq!(r.text(), format!("len=3 sha256={}", sha_hex(b"abc")));
    // and through request(), which skips the 100
    let r = c
        .request("POST", "/upload", &[("Expect", "100-continue")], b"xyz")
        .unwrap();
    assert_eq!(r.status, 200);
}

#[test]
fn download_10mib_all_modes_byte_exact() {
    let o = origin("d");
    let want = pattern(MIB10);
    let mut c = Conn::connect(o.addr()).unwrap();
    let r = c
        .request("GET", &format!("/download?size={MIB10}&mode=cl"), &[], b"")
        .unwrap();
    assert_eq!(r.framing, Framing::Length);
    assert!(r.complete);
    assert!(r.body == want, "cl body differs");
    let r = c
        .request(
            "GET",
            &format!("/download?size={MIB10}&mode=chunked"),
            &[],
            b"",
        )
        .unwrap();
    assert_eq!(r.framing, Framing::Chunked);
    assert!(r.complete);
    assert!(r.body == want, "chunked body differs");
    assert_eq!(o.connections(), 1);
    let r = c
        .request(
            "GET",
            &format!("/download?size={MIB10}&mode=close"),
            &[],
            b"",
        )
        .unwrap();
    assert_eq!(r.framing, Framing::Close);
    assert!(r.header("content-length").is_none() && r.header("transfer-encoding").is_none());
    assert!(r.complete);
    assert!(r.body == want, "close-delimited body differs");
    // small and empty sizes
    for size in [0usize, 1, 7, 16384, 16385, 100_000] {
        for mode in ["cl", "chunked", "close"] {
            let r = get(o.addr(), &format!("/download?size={size}&mode={mode}")).unwrap();
            assert!(r.complete, "{size} {mode}");
            assert!(r.body == want[..size], "{size} {mode}");
        }
    }
}

#[test]
fn keep_alive_reuse_and_close_rules() {
    let o = origin("k");
    let mut c = Conn::connect(o.addr()).unwrap();
    for _ in 0..5 {
        assert_eq!(c.request("GET", "/", &[], b"").unwrap().status, 200);
    }
    assert_eq!(o.connections(), 1);
    assert_eq!(o.requests(), 5);
    assert!(!c.is_closed_within(Duration::from_millis(100)));
    let r = c
        .request("GET", "/", &[("Connection", "close")], b"")
        .unwrap();
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c.is_closed_within(Duration::from_secs(5)));

    // HTTP/1.0 closes unless keep-alive is asked for
    let mut c = Conn::connect(o.addr()).unwrap();
    c.send(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    assert_eq!(c.read_response(false).unwrap().status, 200);
    assert!(c.is_closed_within(Duration::from_secs(5)));
    let mut c = Conn::connect(o.addr()).unwrap();
    c.send(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .unwrap();
    let r = c.read_response(false).unwrap();
    assert_eq!(r.header("connection"), Some("keep-alive"));
    c.send(b"GET /health HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .unwrap();
    assert_eq!(c.read_response(false).unwrap().status, 200);
}

#[test]
fn pipelining_two_requests() {
    let o = origin("p");
    let mut c = Conn::connect(o.addr()).unwrap();
    c.send(b"GET /status?code=201 HTTP/1.1\r\nHost: t\r\n\r\nPOST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhiGET /health HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let r1 = c.read_response(false).unwrap();
    let r2 = c.read_response(false).unwrap();
    let r3 = c.read_response(false).unwrap();
    assert_eq!(r1.status, 201);
    assert_eq!(r2.text(), format!("len=2 sha256={}", sha_hex(b"hi")));
    assert_eq!(r3.text().trim(), "OK Moodle p");
    assert_eq!(o.connections(), 1);
}

#[test]
fn websocket_upgrade_echoes() {
    let o = origin("w");
    let mut c = Conn::connect(o.addr()).unwrap();
    let r = c
        .request(
            "GET",
            "/ws",
            &[("Upgrade", "websocket"), ("Connection", "Upgrade")],
            b"",
        )
        .unwrap();
    assert_eq!(r.status, 101);
    assert_eq!(r.header("x-node"), Some("w"));
    c.send(b"ping-1").unwrap();
    let mut got = c.take_buffered();
    let mut buf = [0u8; 64];
    let deadline = Instant::now() + Duration::from_secs(5);
    while got.len() < 6 && Instant::now() < deadline {
        let n = c.stream().read(&mut buf).unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(&got[..], b"ping-1");
    c.stream().shutdown(std::net::Shutdown::Write).unwrap();
    assert!(c.is_closed_within(Duration::from_secs(5)));
    let r = get(o.addr(), "/ws").unwrap();
    assert_eq!(r.status, 426);
}

#[test]
fn bad_input_is_400_and_close() {
    let o = origin("b");
    let cases: [&[u8]; 6] = [
        b"this is not http\r\n\r\n",
        b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"POST /upload HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"POST /upload HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"GET nope HTTP/1.1\r\n\r\n",
    ];
    for raw in cases {
        let mut c = Conn::connect(o.addr()).unwrap();
        c.send(raw).unwrap();
        let r = c.read_response(false).unwrap();
        assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(raw));
        assert!(c.is_closed_within(Duration::from_secs(5)));
    }
    // an oversized head
    let mut c = Conn::connect(o.addr()).unwrap();
    let mut raw = b"GET / HTTP/1.1\r\nX: ".to_vec();
    raw.resize(70 * 1024, b'a');
    let _ = c.send(&raw);
    let r = c.read_response(false).unwrap();
    assert_eq!(r.status, 400);
    // a cut connection
    let mut s = TcpStream::connect(o.addr()).unwrap();
    s.write_all(b"POST /upload HTTP/1.1\r\nContent-Length: 100\r\n\r\nabc")
        .unwrap();
    drop(s);
    // still serving
    assert_eq!(get(o.addr(), "/health").unwrap().status, 200);
}

#[test]
fn fault_close_mid_body() {
    let o = origin("f");
    let mut c = Conn::connect(o.addr()).unwrap();
    assert!(c.request("GET", "/", &[], b"").unwrap().complete);
    o.set_fault(Fault::CloseMidBody);
    let r = c.request("GET", "/download?size=100000", &[], b"").unwrap();
    assert_eq!(r.framing, Framing::Length);
    assert!(!r.complete);
    assert_eq!(r.body.len(), 50_000);
    assert!(r.body == pattern(50_000));
    let r = get(o.addr(), "/download?size=100000&mode=chunked").unwrap();
    assert_eq!(r.framing, Framing::Chunked);
    assert!(!r.complete);
    assert!(r.body.len() <= 50_000 && !r.body.is_empty());
    let r = get(o.addr(), "/download?size=100000&mode=close").unwrap();
    assert_eq!(r.framing, Framing::Length);
    assert!(!r.complete);
    let r = get(o.addr(), "/").unwrap();
    assert!(!r.complete);
    // /health is exempt
    let r = get(o.addr(), "/health").unwrap();
    assert!(r.complete && r.status == 200);
    o.set_fault(Fault::None);
    assert!(get(o.addr(), "/download?size=100000").unwrap().complete);
}

#[test]
fn fault_stall() {
    let o = origin("s");
    o.set_fault(Fault::Stall);
    let mut c = Conn::connect(o.addr()).unwrap();
    c.set_timeout(Duration::from_millis(300));
    let e = c.request("GET", "/", &[], b"").unwrap_err();
    assert!(
        matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        "{e}"
    );
    assert!(!c.is_closed_within(Duration::from_millis(200)));
    assert_eq!(o.active(), 1);
    assert_eq!(get(o.addr(), "/health").unwrap().status, 200);
    o.set_fault(Fault::None);
    assert_eq!(get(o.addr(), "/").unwrap().status, 200);
    // stopping closes the stalled connection
    let addr = o.addr();
    o.stop();
    assert!(c.is_closed_within(Duration::from_secs(5)));
    assert!(TcpStream::connect(addr).is_err());
}

#[test]
fn fault_refuse_and_rebind_same_port() {
    let o = origin("r");
    let addr = o.addr();
    let mut idle = Conn::connect(addr).unwrap();
    assert_eq!(idle.request("GET", "/", &[], b"").unwrap().status, 200);
    o.set_fault(Fault::Refuse);
    let e = TcpStream::connect(addr).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ConnectionRefused);
    assert!(idle.is_closed_within(Duration::from_secs(5)));
    o.set_fault(Fault::None);
    assert_eq!(o.addr(), addr);
    assert_eq!(get(addr, "/health").unwrap().status, 200);
    // twice more
    for _ in 0..2 {
        o.set_fault(Fault::Refuse);
        assert!(get(addr, "/").is_err());
        o.set_fault(Fault::None);
        assert_eq!(get(addr, "/").unwrap().status, 200);
    }
}

#[test]
fn fault_reset_after_request() {
    let o = origin("z");
    o.set_fault(Fault::ResetAfterRequest);
    let mut c = Conn::connect(o.addr()).unwrap();
    assert!(c.request("GET", "/", &[], b"").is_err());
    assert!(c.is_closed_within(Duration::from_secs(1)));
    assert_eq!(get(o.addr(), "/health").unwrap().status, 200);
    o.set_fault(Fault::None);
    assert_eq!(get(o.addr(), "/").unwrap().status, 200);
    assert_eq!(o.requests(), 3);
}

#[test]
fn active_and_max_active() {
    let o = origin("c");
    let addr = o.addr();
    let handles: Vec<_> = (0..4)
        .map(|_| std::thread::spawn(move || get(addr, "/slow?ms=500").unwrap().status))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(5);
    while o.active() < 4 && Instant::now() < deadline {
        std::thread::yield_now();
    }
    assert_eq!(o.active(), 4);
    for h in handles {
        assert_eq!(h.join().unwrap(), 200);
    }
    assert_eq!(o.max_active(), 4);
    let deadline = Instant::now() + Duration::from_secs(5);
    while o.active() > 0 && Instant::now() < deadline {
        std::thread::yield_now();
    }
    assert_eq!(o.active(), 0);
}

#[test]
fn stop_ends_slow_requests_quickly() {
    let o = origin("st");
    let addr = o.addr();
    let h = std::thread::spawn(move || get(addr, "/slow?ms=60000"));
    let deadline = Instant::now() + Duration::from_secs(5);
    while o.active() < 1 && Instant::now() < deadline {
        std::thread::yield_now();
    }
    let t = Instant::now();
    drop(o);
    assert!(t.elapsed() < Duration::from_secs(4));
    let _ = h.join().unwrap();
}

#[test]
fn many_keep_alive_requests_on_one_connection() {
    let o = origin("ka");
    let mut c = Conn::connect(o.addr()).unwrap();
    let t = Instant::now();
    for _ in 0..2000 {
        let r = c.request("GET", "/health", &[], b"").unwrap();
        assert_eq!(r.status, 200);
    }
    assert_eq!(o.connections(), 1);
    assert_eq!(o.requests(), 2000);
    eprintln!("2000 keep-alive requests in {:?}", t.elapsed());
}
