//! Moodle nodes that break the rules (issue 16): bytes written on an idle keep-alive
//! connection never reach another client, a trickled head ends in 504 at timeout_server,
//! an unrequested 101 is a 502, a server that closes without a byte is a 502 after the
//! retries, and every answer the engine makes itself is logged with its bytes.

use std::io::Write;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use engine_tests::raw::{ka_server, ok_response, write_later, KaServer};
use engine_tests::*;

both_drivers!(
    stray_response_after_keep_alive_never_reaches_the_next_client,
    head_answered_with_a_late_body_never_reaches_the_next_client,
    bytes_after_the_last_chunk_are_never_passed_on,
    trickled_response_head_is_504_at_timeout_server,
    unrequested_switching_protocols_is_502,
    server_closing_without_a_byte_is_502_after_retries,
    own_answers_logged_with_their_bytes,
    empty_bodies_and_codings_are_framed_for_the_client,
    connection_naming_host_keeps_the_host,
);

/// The web frontend in front of raw servers, with extra `[defaults]`.
fn engine_for(servers: &[&KaServer], defaults: &str, driver: DriverChoice) -> Running {
    let mut web = Web::new(&[]).defaults(defaults);
    web.servers = servers
        .iter()
        .enumerate()
        .map(|(i, s)| (format!("r{}", i + 1), s.addr, String::new()))
        .collect();
    start(web.config(), driver)
}

/// `n` GETs, each from a new client connection, `gap` apart; returns the ones whose
/// body was not their own page, as (path, body).
fn wrong_pages(addr: SocketAddr, n: usize, gap: Duration, method: &str) -> Vec<(String, String)> {
    let mut wrong = Vec::new();
    for i in 0..n {
        let path = format!("/student/{i}");
        let mut c = Conn::connect(addr).expect("connect");
        c.set_timeout(Duration::from_secs(5));
        let resp = c.request(method, &path, &[], b"");
        match resp {
            Ok(r) if method == "HEAD" && r.status == 200 => {}
            Ok(r) if r.status == 200 && r.text() == format!("page of {path}") => {}
            Ok(r) => wrong.push((path, format!("{} {}", r.status, r.text()))),
            Err(e) => wrong.push((path, format!("error: {e}"))),
        }
        // Kept: the students' pace, as the test asks.
        std::thread::sleep(gap);
    }
    wrong
}

fn stray_response_after_keep_alive_never_reaches_the_next_client(driver: DriverChoice) {
    // Every response is followed, 20 ms later, by a second one nobody asked for.
    let s = ka_server(|c, req| {
        let page = format!("page of {}", req.target());
        let _ = c.write_all(&ok_response(&page));
        write_later(
            c,
            Duration::from_millis(20),
            ok_response(&format!("STRAY after {}", req.target())),
        );
        true
    });
    let r = engine_for(&[&s], "", driver);
    let wrong = wrong_pages(r.addr("web"), 30, Duration::from_millis(60), "GET");
    assert!(
        wrong.is_empty(),
        "pages that reached the wrong client: {wrong:?}"
    );
}

fn head_answered_with_a_late_body_never_reaches_the_next_client(driver: DriverChoice) {
    // HEAD is answered with its headers, then 5 ms later with a body it must not have;
    // every other request gets its own page.
    let s = ka_server(|c, req| {
        let page = format!("page of {}", req.target());
        let resp = ok_response(&page);
        if req.method() == "HEAD" {
            let head_len = resp.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
            let _ = c.write_all(&resp[..head_len]);
            write_later(c, Duration::from_millis(5), page.into_bytes());
        } else {
            let _ = c.write_all(&resp);
        }
        true
    });
    let r = engine_for(&[&s], "", driver);
    let addr = r.addr("web");
    let mut wrong = Vec::new();
    for i in 0..15 {
        wrong.extend(wrong_pages(addr, 1, Duration::from_millis(40), "HEAD"));
        let mut got = wrong_pages(addr, 1, Duration::from_millis(40), "GET");
        for g in &mut got {
            g.0 = format!("GET #{i} {}", g.0);
        }
        wrong.extend(got);
    }
    assert!(
        wrong.is_empty(),
        "pages that reached the wrong client: {wrong:?}"
    );
}

fn bytes_after_the_last_chunk_are_never_passed_on(driver: DriverChoice) {
    // A chunked page, and in the same write a second response after its last chunk.
    let s = ka_server(|c, req| {
        let page = format!("page of {}", req.target());
        let mut out = format!(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{page}\r\n0\r\n\r\n",
            page.len()
        )
        .into_bytes();
        out.extend_from_slice(&ok_response("EVIL"));
        let _ = c.write_all(&out);
        true
    });
    let r = engine_for(&[&s], "", driver);
    let wrong = wrong_pages(r.addr("web"), 20, Duration::from_millis(10), "GET");
    assert!(
        wrong.is_empty(),
        "pages that reached the wrong client: {wrong:?}"
    );
    assert_eq!(
        s.connections.load(std::sync::atomic::Ordering::SeqCst),
        20,
        "a connection with bytes after its response is never reused"
    );
}

fn trickled_response_head_is_504_at_timeout_server(driver: DriverChoice) {
    // One byte of the head every 0.5 s: a head that would take 20 s.
    let s = ka_server(|c, _| {
        for b in ok_response("late").iter().take(40) {
            if c.write_all(&[*b]).is_err() {
                return false;
            }
            // Kept: the subject, a head trickled a byte every 0.5 s.
            std::thread::sleep(Duration::from_millis(500));
        }
        false
    });
    let r = engine_for(&[&s], "timeout_server = \"3s\"\n", driver);
    let mut c = conn(&r);
    c.set_timeout(Duration::from_secs(30));
    let t0 = Instant::now();
    let resp = c.request("GET", "/", &[], b"").expect("an answer");
    let took = t0.elapsed();
    assert_eq!(resp.status, 504, "{}", resp.text());
    assert!(
        took >= Duration::from_millis(2900) && took < Duration::from_secs(10),
        "504 after {took:?}, want about 3 s"
    );
}

fn unrequested_switching_protocols_is_502(driver: DriverChoice) {
    let s = ka_server(|c, _| {
        let _ = c.write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nraw bytes");
        // Kept: the server holds the switched connection open a moment.
        std::thread::sleep(Duration::from_millis(200));
        false
    });
    let r = engine_for(&[&s], "", driver);
    let mut c = conn(&r);
    let resp = c.request("GET", "/", &[], b"").expect("an answer");
    assert_eq!(resp.status, 502, "{}", resp.text());
    assert!(!resp.text().contains("raw bytes"));
}

fn server_closing_without_a_byte_is_502_after_retries(driver: DriverChoice) {
    // Two servers that read the request and close (one cleanly, one with a reset).
    let close = ka_server(|_, _| false);
    let reset = ka_server(|c, _| {
        let s = socket2::SockRef::from(&*c);
        let _ = s.set_linger(Some(Duration::ZERO));
        false
    });
    let r = engine_for(&[&close, &reset], "retries = 3\n", driver);
    for _ in 0..4 {
        let mut c = conn(&r);
        let resp = c.request("GET", "/", &[], b"").expect("an answer");
        assert_eq!(resp.status, 502, "{}", resp.text());
    }
}

fn own_answers_logged_with_their_bytes(driver: DriverChoice) {
    let dir = tmpdir("own-answers");
    let log = dir.join("access.log");
    let ok = ka_server(|c, req| c.write_all(&ok_response(&req.target())).is_ok());
    let tail = format!(
        "[log]\naccess = \"{}\"\n[limits]\nmax_body_bytes = 10\n",
        log.display()
    );
    let mut web = Web::new(&[]).tail(&tail);
    web.servers = vec![("r1".into(), ok.addr, String::new())];
    let r = start(web.config(), driver);
    let addr = r.addr("web");
    let (bad, _) = raw_exchange(addr, b"GET / HTTP/1.1\r\n\r\n", Duration::from_secs(5));
    assert_eq!(status_of(&bad), 400);
    let (big, _) = raw_exchange(
        addr,
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\nhello world",
        Duration::from_secs(5),
    );
    assert_eq!(status_of(&big), 413);
    let lines = read_lines_until(&log, 2, Duration::from_secs(5));
    for (status, sent) in [("400", bad.len()), ("413", big.len())] {
        // client [date] frontend backend/server timers status bytes ...
        let line = lines
            .iter()
            .find(|l| l.split(' ').nth(5) == Some(status))
            .unwrap_or_else(|| panic!("no {status} line in {lines:#?}"));
        let bytes: usize = line.split(' ').nth(6).unwrap().parse().expect("bytes");
        assert!(
            bytes > 0 && bytes == sent,
            "bytes logged as sent ({sent}): {line}"
        );
    }
}

fn empty_bodies_and_codings_are_framed_for_the_client(driver: DriverChoice) {
    // Found by the fuzz harness: an empty 200 (Content-Length: 0) reached the client with
    // no framing at all, so a keep-alive client waited for the close; a status below 100
    // was written as `HTTP/1.1 0`; `Transfer-Encoding: gzip, chunked` lost its gzip.
    let s = ka_server(|c, req| {
        let out: &[u8] = match req.target().as_str() {
            "/empty" => b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
            "/zero" => b"HTTP/1.1 000 OK\r\nContent-Length: 2\r\n\r\nok",
            _ => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\nzz\r\n0\r\n\r\n",
        };
        c.write_all(out).is_ok()
    });
    let r = engine_for(&[&s], "", driver);
    let mut c = conn(&r);
    c.set_timeout(Duration::from_secs(3));
    for _ in 0..3 {
        let t0 = Instant::now();
        let resp = c
            .request("GET", "/empty", &[], b"")
            .expect("framed, not read to close");
        assert_eq!(
            (resp.status, resp.header("content-length")),
            (200, Some("0"))
        );
        assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
    }
    let resp = c.request("GET", "/gz", &[], b"").expect("an answer");
    assert_eq!(resp.header("transfer-encoding"), Some("gzip, chunked"));
    let resp = conn(&r)
        .request("GET", "/zero", &[], b"")
        .expect("an answer");
    assert_eq!(resp.status, 502);
}

fn connection_naming_host_keeps_the_host(driver: DriverChoice) {
    let s = ka_server(|c, req| {
        let head = String::from_utf8_lossy(req.head).to_string();
        let hosts = head
            .lines()
            .filter(|l| l.to_ascii_lowercase().starts_with("host:"))
            .count();
        c.write_all(&ok_response(&format!("hosts={hosts}"))).is_ok()
    });
    let r = engine_for(&[&s], "", driver);
    let (out, _) = raw_exchange(
        r.addr("web"),
        b"GET / HTTP/1.1\r\nHost: a.example\r\nConnection: Host, close\r\n\r\n",
        Duration::from_secs(5),
    );
    assert!(
        String::from_utf8_lossy(&out).ends_with("hosts=1"),
        "{}",
        String::from_utf8_lossy(&out)
    );
}
