//! HTTP/1.1 and 1.0 proxying (point 3): keep-alive on both sides, pipelining, the three
//! body framings byte-exact at 10 MiB, re-framing, HEAD/204/304, Expect: 100-continue,
//! hop-by-hop headers, X-Forwarded-For, set_headers, WebSocket tunnel, upstream pooling.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Barrier;
use std::time::Duration;

use engine_tests::*;
use sha2::{Digest, Sha256};

both_drivers!(
    keep_alive_both_sides,
    pipelining_in_order,
    download_10mib_three_framings,
    upload_10mib_cl_and_chunked,
    close_delimited_to_http10_client,
    http10_keep_alive_and_host,
    bodyless_responses,
    expect_100_continue,
    hop_by_hop_request_headers,
    hop_by_hop_response_headers,
    websocket_tunnel,
    pooled_connection_closed_by_server,
    pool_survives_a_peak,
);

const TEN_MIB: usize = 10 * 1024 * 1024;

fn keep_alive_both_sides(driver: DriverChoice) {
    let o = origins(1);
    let r = start(Web::new(&[&o[0]]).config(), driver);
    // One client connection, many requests.
    let mut c = conn(&r);
    for i in 0..50 {
        let resp = c
            .request("GET", "/login/index.php", &[], b"")
            .expect("request");
        assert_eq!(resp.status, 200, "request {i}");
        assert_eq!(resp.header("x-node"), Some("s1"));
        assert!(resp
            .header("connection")
            .is_none_or(|v| !v.eq_ignore_ascii_case("close")));
    }
    assert!(
        !c.is_closed_within(Duration::from_millis(50)),
        "client connection kept"
    );
    assert_eq!(r.connections(), 1, "one client connection open");
    // Many client connections, a few requests each.
    for _ in 0..20 {
        let mut c = conn(&r);
        for _ in 0..5 {
            assert_eq!(c.request("GET", "/", &[], b"").unwrap().status, 200);
        }
    }
    assert_eq!(o[0].requests(), 150);
    // Pooled per core: at most a couple per core (2 cores), never one per request.
    assert!(
        o[0].connections() <= 4,
        "upstream connections reused: {} connections for 150 requests",
        o[0].connections()
    );
}

fn pipelining_in_order(driver: DriverChoice) {
    let o = origins(1);
    let r = start(Web::new(&[&o[0]]).config(), driver);
    let mut c = conn(&r);
    c.send(
        b"GET /slow?ms=150 HTTP/1.1\r\nHost: a\r\n\r\n\
          GET /status?code=201 HTTP/1.1\r\nHost: a\r\n\r\n\
          POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello\
          HEAD /download?size=77 HTTP/1.1\r\nHost: a\r\n\r\n\
          GET /echo/last HTTP/1.1\r\nHost: a\r\n\r\n",
    )
    .unwrap();
    let a = c.read_response(false).unwrap();
    assert_eq!((a.status, a.text().as_str()), (200, "slow 150"));
    let b = c.read_response(false).unwrap();
    assert_eq!(b.status, 201);
    let u = c.read_response(false).unwrap();
    assert_eq!(u.status, 200);
    assert!(u.text().starts_with("len=5 "), "{}", u.text());
    let h = c.read_response(true).unwrap();
    assert_eq!(h.status, 200);
    assert_eq!(h.header("content-length"), Some("77"));
    let e = c.read_response(false).unwrap();
    assert_eq!(e.status, 200);
    assert!(
        e.text().starts_with("GET /echo/last HTTP/1.1\r\n"),
        "{}",
        e.text()
    );
    assert_eq!(o[0].requests(), 5);
}

fn check_pattern(body: &[u8], len: usize, what: &str) {
    assert_eq!(body.len(), len, "{what}: length");
    let want = tools::pattern(len);
    if let Some(i) = body.iter().zip(&want).position(|(a, b)| a != b) {
        panic!("{what}: first differing byte at offset {i}");
    }
}

fn download_10mib_three_framings(driver: DriverChoice) {
    let o = origins(1);
    let r = start(Web::new(&[&o[0]]).config(), driver);
    let mut c = conn(&r);
    c.set_timeout(Duration::from_secs(30));
    for (mode, want) in [
        ("cl", Framing::Length),
        ("chunked", Framing::Chunked),
        // close-delimited from the server: re-framed as chunked for an HTTP/1.1 client
        ("close", Framing::Chunked),
    ] {
        let resp = c
            .request(
                "GET",
                &format!("/download?size={TEN_MIB}&mode={mode}"),
                &[],
                b"",
            )
            .expect("download");
        assert_eq!(resp.status, 200, "mode={mode}");
        assert!(resp.complete, "mode={mode}: complete body");
        assert_eq!(
            resp.framing, want,
            "mode={mode}: framing towards the client"
        );
        check_pattern(&resp.body, TEN_MIB, &format!("mode={mode}"));
        // the client connection survives every framing, including close-delimited
        let next = c
            .request("GET", "/", &[], b"")
            .expect("request after the download");
        assert_eq!(next.status, 200, "keep-alive after mode={mode}");
    }
}

fn upload_10mib_cl_and_chunked(driver: DriverChoice) {
    let o = origins(1);
    let r = start(Web::new(&[&o[0]]).config(), driver);
    let body = tools::pattern(TEN_MIB);
    let want = format!(
        "len={} sha256={}",
        TEN_MIB,
        hex::encode(Sha256::digest(&body))
    );
    let mut c = conn(&r);
    c.set_timeout(Duration::from_secs(30));
    let resp = c.request("POST", "/upload", &[], &body).expect("CL upload");
    assert_eq!(
        (resp.status, resp.text()),
        (200, want.clone()),
        "Content-Length upload"
    );
    // chunked, chunks of uneven sizes
    let mut enc = Vec::with_capacity(TEN_MIB + 4096);
    let mut off = 0;
    let sizes = [65536usize, 1, 4095, 100_000, 7];
    let mut k = 0;
    while off < body.len() {
        let n = sizes[k % sizes.len()].min(body.len() - off);
        k += 1;
        enc.extend_from_slice(format!("{n:x}\r\n").as_bytes());
        enc.extend_from_slice(&body[off..off + n]);
        enc.extend_from_slice(b"\r\n");
        off += n;
    }
    enc.extend_from_slice(b"0\r\n\r\n");
    let resp = c
        .request("PUT", "/upload", &[("Transfer-Encoding", "chunked")], &enc)
        .expect("chunked upload");
    assert_eq!((resp.status, resp.text()), (200, want), "chunked upload");
    // and the connection is still good
    assert_eq!(c.request("GET", "/", &[], b"").unwrap().status, 200);
}

fn close_delimited_to_http10_client(driver: DriverChoice) {
    let o = origins(1);
    let r = start(Web::new(&[&o[0]]).config(), driver);
    for mode in ["close", "chunked"] {
        let size = 300_000;
        let req = format!("GET /download?size={size}&mode={mode} HTTP/1.0\r\nHost: a\r\n\r\n");
        let (raw, closed) = raw_exchange(r.addr("web"), req.as_bytes(), Duration::from_secs(10));
        assert!(
            closed,
            "mode={mode}: the engine closes after a close-delimited body"
        );
        let end = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("head") + 4;
        let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
        assert_eq!(status_of(&raw), 200, "{head}");
        assert!(
            !head.contains("transfer-encoding"),
            "mode={mode}: no chunked to HTTP/1.0: {head}"
        );
        assert!(!head.contains("content-length"), "mode={mode}: {head}");
        check_pattern(&raw[end..], size, &format!("HTTP/1.0 mode={mode}"));
    }
}

fn http10_keep_alive_and_host(driver: DriverChoice) {
    let o = origins(1);
    let r = start(Web::new(&[&o[0]]).config(), driver);
    // HTTP/1.0 without keep-alive: answered, then closed.
    let (raw, closed) = raw_exchange(
        r.addr("web"),
        b"GET /echo HTTP/1.0\r\n\r\n",
        Duration::from_secs(5),
    );
    assert!(closed);
    assert_eq!(status_of(&raw), 200);
    let text = String::from_utf8_lossy(&raw).to_string();
    // a Host is added towards the server for an HTTP/1.0 request without one
    let echoed = &text[text.find("\r\n\r\n").unwrap() + 4..];
    assert!(echoed.starts_with("GET /echo HTTP/1.1\r\n"), "{echoed}");
    assert!(
        echoed.to_ascii_lowercase().contains("\r\nhost: "),
        "{echoed}"
    );
    // HTTP/1.0 asking for keep-alive, with a Content-Length response: kept.
    let mut s = TcpStream::connect(r.addr("web")).unwrap();
    s.write_all(b"GET /status?code=200 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .unwrap();
    let mut c_head = Vec::new();
    let mut b = [0u8; 4096];
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    while !c_head.windows(11).any(|w| w == b"status 200\n") {
        let n = s.read(&mut b).expect("read");
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&c_head));
        c_head.extend_from_slice(&b[..n]);
    }
    let head = String::from_utf8_lossy(&c_head).to_ascii_lowercase();
    assert!(head.contains("connection: keep-alive"), "{head}");
    assert!(head.contains("content-length: 11"), "{head}");
    s.write_all(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .unwrap();
    let n = s.read(&mut b).expect("second response");
    assert!(
        n > 0 && status_of(&b[..n]) == 200,
        "second request on the kept HTTP/1.0 connection"
    );
}

fn bodyless_responses(driver: DriverChoice) {
    let o = origins(1);
    let r = start(Web::new(&[&o[0]]).config(), driver);
    let mut c = conn(&r);
    for mode in ["cl", "chunked", "close"] {
        let h = c
            .request(
                "HEAD",
                &format!("/download?size=5000&mode={mode}"),
                &[],
                b"",
            )
            .unwrap();
        assert_eq!(h.status, 200, "HEAD mode={mode}");
        assert!(h.body.is_empty());
        if mode == "close" {
            // the server closes after a close-delimited HEAD: reconnect
            c = conn(&r);
        }
    }
    let h = c.request("HEAD", "/download?size=5000", &[], b"").unwrap();
    assert_eq!(
        h.header("content-length"),
        Some("5000"),
        "HEAD keeps Content-Length"
    );
    for code in [204, 304] {
        let resp = c
            .request("GET", &format!("/status?code={code}"), &[], b"")
            .unwrap();
        assert_eq!(resp.status, code);
        assert!(resp.body.is_empty());
        assert!(
            resp.header("transfer-encoding").is_none(),
            "{code}: no chunked framing"
        );
    }
    // Nothing stray on the connection: the next response parses and is the right one.
    let resp = c.request("GET", "/status?code=202", &[], b"").unwrap();
    assert_eq!(resp.status, 202);
    assert_eq!(resp.text(), "status 202\n");
}

fn expect_100_continue(driver: DriverChoice) {
    let o = origins(1);
    let r = start(Web::new(&[&o[0]]).config(), driver);
    let mut c = conn(&r);
    c.send(
        b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\n",
    )
    .unwrap();
    // The 100 arrives before any body byte is sent.
    let mut got = Vec::new();
    let mut b = [0u8; 1024];
    c.stream()
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = c.stream().read(&mut b).expect("interim response");
        assert!(n > 0, "closed before 100 Continue");
        got.extend_from_slice(&b[..n]);
    }
    assert!(
        got.starts_with(b"HTTP/1.1 100"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    assert!(
        got.ends_with(b"\r\n\r\n"),
        "nothing but the 100 before the body: {}",
        String::from_utf8_lossy(&got)
    );
    c.send(b"hello world").unwrap();
    let resp = c.read_response(false).unwrap();
    assert_eq!(resp.status, 200);
    assert!(resp.text().starts_with("len=11 "), "{}", resp.text());
    // no second 100 Continue leaks into the stream
    let next = c.request("GET", "/status?code=200", &[], b"").unwrap();
    assert_eq!(next.status, 200);
}

fn hop_by_hop_request_headers(driver: DriverChoice) {
    let o = origins(1);
    let r = start(
        Web::new(&[&o[0]])
            .frontend(r#"set_headers = { "X-Forwarded-Proto" = "https", "X-Custom" = "from-lb" }"#)
            .config(),
        driver,
    );
    let mut c = conn(&r);
    let resp = c
        .request(
            "POST",
            "/echo",
            &[
                ("Connection", "keep-alive, X-Secret"),
                ("X-Secret", "hop"),
                ("Keep-Alive", "timeout=5"),
                ("TE", "trailers"),
                ("Proxy-Connection", "keep-alive"),
                ("X-Forwarded-For", "6.6.6.6"),
                ("X-Forwarded-Proto", "gopher"),
                ("X-Custom", "from-client"),
                ("X-End-To-End", "kept"),
                ("Transfer-Encoding", "chunked"),
            ],
            b"5\r\nhello\r\n0\r\n\r\n",
        )
        .unwrap();
    assert_eq!(resp.status, 200);
    let text = resp.text();
    let head_end = text.find("\r\n\r\n").expect("echoed head") + 4;
    let head = &text[..head_end];
    let lower = head.to_ascii_lowercase();
    let count = |name: &str| {
        lower
            .split("\r\n")
            .filter(|l| l.starts_with(&format!("{name}:")))
            .count()
    };
    for gone in ["x-secret", "keep-alive", "te", "proxy-connection"] {
        assert_eq!(count(gone), 0, "{gone} must not reach the server:\n{head}");
    }
    assert!(
        !lower.contains("connection: keep-alive, x-secret"),
        "{head}"
    );
    assert_eq!(
        count("transfer-encoding"),
        1,
        "one framing header of the engine's own:\n{head}"
    );
    assert_eq!(count("x-forwarded-for"), 1, "{head}");
    assert!(
        lower.contains("\r\nx-forwarded-for: 127.0.0.1\r\n"),
        "XFF replaced:\n{head}"
    );
    assert!(!lower.contains("6.6.6.6"), "{head}");
    assert_eq!(count("x-forwarded-proto"), 1, "{head}");
    assert!(lower.contains("\r\nx-forwarded-proto: https\r\n"), "{head}");
    assert_eq!(count("x-custom"), 1, "{head}");
    assert!(
        lower.contains("\r\nx-custom: from-lb\r\n"),
        "set_headers replaces:\n{head}"
    );
    assert!(lower.contains("\r\nx-end-to-end: kept\r\n"), "{head}");
    assert_eq!(&text[head_end..], "hello", "decoded body");
}

fn hop_by_hop_response_headers(driver: DriverChoice) {
    let srv = raw_server(|s, _head| {
        let _ = s.write_all(
            b"HTTP/1.1 200 OK\r\nConnection: X-Private\r\nX-Private: secret\r\nKeep-Alive: timeout=3\r\n\
              Proxy-Connection: keep-alive\r\nTrailer: X-T\r\nUpgrade: h2c\r\nX-Kept: yes\r\nContent-Length: 2\r\n\r\nok",
        );
    });
    let text = Web::new(&[]).text()
        + &format!(
            "[[backend.server]]\nname = \"raw\"\naddress = \"{}\"\n",
            srv.addr
        );
    let r = start(cfg(&text, &[]), driver);
    let mut c = conn(&r);
    let resp = c.request("GET", "/", &[], b"").unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), "ok");
    for gone in [
        "x-private",
        "keep-alive",
        "proxy-connection",
        "upgrade",
        "trailer",
    ] {
        assert!(
            resp.header(gone).is_none(),
            "{gone} must not reach the client: {:?}",
            resp.headers
        );
    }
    assert!(
        resp.headers_all("connection")
            .iter()
            .all(|v| !v.to_ascii_lowercase().contains("x-private")),
        "{:?}",
        resp.headers
    );
    assert_eq!(resp.header("x-kept"), Some("yes"));
}

fn websocket_tunnel(driver: DriverChoice) {
    let o = origins(1);
    let r = start(Web::new(&[&o[0]]).config(), driver);
    let mut c = conn(&r);
    c.send(
        b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .unwrap();
    let resp = c.read_response(false).unwrap();
    assert_eq!(resp.status, 101);
    assert!(resp
        .header("upgrade")
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket")));
    assert!(resp
        .header("connection")
        .is_some_and(|v| v.to_ascii_lowercase().contains("upgrade")));
    let mut got = c.take_buffered();
    let s = c.stream();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    for msg in [&b"hello over the tunnel"[..], &tools::pattern(100_000)[..]] {
        s.write_all(msg).unwrap();
        let mut b = vec![0u8; 65536];
        while got.len() < msg.len() {
            let n = s.read(&mut b).expect("echo");
            assert!(n > 0, "tunnel closed early");
            got.extend_from_slice(&b[..n]);
        }
        assert_eq!(&got[..], msg, "bytes echoed through the tunnel");
        got.clear();
    }
    // Closing our side ends the tunnel: the engine closes back.
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let (_, closed) = read_until_close(s, Duration::from_secs(5));
    assert!(closed, "the tunnel closes after the client's half-close");
}

fn pooled_connection_closed_by_server(driver: DriverChoice) {
    let o = origins(1);
    let r = start(Web::new(&[&o[0]]).config(), driver);
    let mut c = conn(&r);
    for round in 0..5 {
        assert_eq!(
            c.request("GET", "/", &[], b"").unwrap().status,
            200,
            "round {round}"
        );
        // The server closes its idle keep-alive connections (the pooled ones).
        o[0].set_fault(Fault::Refuse);
        o[0].set_fault(Fault::None);
        let g = c
            .request("GET", "/login/index.php", &[], b"")
            .expect("GET after the close");
        assert_eq!(
            g.status, 200,
            "round {round}: GET on a closed pooled connection"
        );
        o[0].set_fault(Fault::Refuse);
        o[0].set_fault(Fault::None);
        let p = c
            .request("POST", "/upload", &[], b"not idempotent")
            .expect("POST after the close");
        assert_eq!(
            p.status, 200,
            "round {round}: POST on a closed pooled connection"
        );
    }
}

/// The exam-start peak: 200 students at once on keep-alive connections, all in flight
/// together (each request waits 100 ms at the server), four times over. After the first
/// peak every server connection goes back to its core's pool and is used again: the
/// engine never opens more server connections than requests in flight at once. (With a
/// small pool cap, each peak closed the connections past the cap and the next one
/// reconnected them: a connect and a TIME_WAIT per request past the cap.)
fn pool_survives_a_peak(driver: DriverChoice) {
    const CLIENTS: usize = 200;
    const ROUNDS: usize = 4;
    let o = origins(1);
    let r = start(Web::new(&[&o[0]]).config(), driver);
    let go = Barrier::new(CLIENTS);
    std::thread::scope(|s| {
        for _ in 0..CLIENTS {
            s.spawn(|| {
                let mut c = conn(&r);
                for round in 0..ROUNDS {
                    go.wait();
                    let resp = c
                        .request("GET", "/slow?ms=100", &[], b"")
                        .expect("request at the peak");
                    assert_eq!(resp.status, 200, "round {round}");
                }
            });
        }
    });
    assert_eq!(o[0].requests(), (CLIENTS * ROUNDS) as u64);
    assert!(
        o[0].connections() <= CLIENTS as u64,
        "{} server connections for {} clients: pooled connections were closed after a peak",
        o[0].connections(),
        CLIENTS
    );
}
