//! Timeouts (point 6), short values: connect, client (mid-body and a client that stops
//! reading), keep-alive idle; global.maxconn. (timeout_http_request and timeout_server
//! are in bad_input.rs: 408 and 504.)

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use engine_tests::*;

both_drivers!(
    connect_timeout,
    client_timeout_mid_body,
    client_stops_reading,
    keep_alive_idle_closed,
    maxconn_limits_client_connections,
);

/// A listener that never accepts, its queue full: further SYNs are dropped, so a connect
/// to it hangs until the connector gives up.
fn blackhole() -> (socket2::Socket, Vec<TcpStream>, SocketAddr) {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    s.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    s.listen(0).unwrap();
    let addr = s.local_addr().unwrap().as_socket().unwrap();
    let mut fill = Vec::new();
    for _ in 0..4 {
        if let Ok(c) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            fill.push(c);
        }
    }
    // Check that it does hang now.
    let t0 = Instant::now();
    let probe = TcpStream::connect_timeout(&addr, Duration::from_millis(300));
    assert!(
        probe.is_err() && t0.elapsed() >= Duration::from_millis(250),
        "the blackhole listener should make connects hang"
    );
    (s, fill, addr)
}

fn connect_timeout(driver: DriverChoice) {
    let (_l, _fill, hole) = blackhole();
    let text = Web::new(&[])
        .defaults("timeout_connect = \"300ms\"\nretries = 0\n")
        .text()
        + &format!("[[backend.server]]\nname = \"hole\"\naddress = \"{hole}\"\n");
    let r = start(cfg(&text, &[]), driver);
    let t0 = Instant::now();
    let resp = tools::client::get(r.addr("web"), "/").expect("an answer");
    let took = t0.elapsed();
    assert_eq!(
        resp.status, 503,
        "connect timed out: no server could take it"
    );
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(3),
        "503 after {took:?}, timeout_connect = 300ms"
    );
}

/// A client silent mid-body gets a 408 after timeout_client: a small body, and a large
/// one (more than 32 KiB to come, which is spliced on plain TCP).
fn client_timeout_mid_body(driver: DriverChoice) {
    let o = origins(1);
    let r = start(
        Web::new(&[&o[0]])
            .defaults("timeout_client = \"300ms\"\n")
            .config(),
        driver,
    );
    for (len, sent) in [(100usize, 10usize), (1_000_000, 40_000)] {
        let mut s = TcpStream::connect(r.addr("web")).unwrap();
        let mut req = format!("POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: {len}\r\n\r\n")
            .into_bytes();
        req.extend_from_slice(&tools::pattern(sent));
        s.write_all(&req).unwrap();
        let t0 = Instant::now();
        let (raw, closed) = read_until_close(&mut s, Duration::from_secs(5));
        let took = t0.elapsed();
        assert!(
            closed,
            "{len}: the engine gives up on a client silent mid-body"
        );
        assert!(
            took >= Duration::from_millis(250) && took < Duration::from_secs(3),
            "{len}: closed after {took:?}"
        );
        assert_eq!(
            status_of(&raw),
            408,
            "{len}: {:?}",
            String::from_utf8_lossy(&raw)
        );
    }
}

fn client_stops_reading(driver: DriverChoice) {
    let o = origins(1);
    let r = start(
        Web::new(&[&o[0]])
            .defaults("timeout_client = \"300ms\"\n")
            .config(),
        driver,
    );
    let mut s = TcpStream::connect(r.addr("web")).unwrap();
    s.write_all(b"GET /download?size=200000000 HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    wait_until(Duration::from_secs(5), "the download in flight", || {
        o[0].active() == 1
    });
    // We never read: once the socket buffers are full, timeout_client ends it.
    wait_until(
        Duration::from_secs(5),
        "the engine dropping the stalled client",
        || r.connections() == 0,
    );
    wait_until(
        Duration::from_secs(5),
        "the server connection released",
        || o[0].active() == 0,
    );
    drop(s);
}

fn keep_alive_idle_closed(driver: DriverChoice) {
    let o = origins(1);
    let r = start(
        Web::new(&[&o[0]])
            .defaults("timeout_keep_alive = \"400ms\"\ntimeout_http_request = \"5s\"\n")
            .config(),
        driver,
    );
    // Busy: a request every 150 ms keeps the connection for well past the timeout.
    let mut c = conn(&r);
    for i in 0..8 {
        if i > 0 {
            // Kept: the subject, the client's pace.
            std::thread::sleep(Duration::from_millis(150));
        }
        let resp = c
            .request("GET", "/", &[], b"")
            .unwrap_or_else(|e| panic!("request {i}: {e}"));
        assert_eq!(resp.status, 200);
    }
    // Idle: closed by the engine after about timeout_keep_alive (100 ms sweep ticks).
    let t0 = Instant::now();
    assert!(
        c.is_closed_within(Duration::from_secs(3)),
        "idle keep-alive connection closed"
    );
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(300),
        "closed after only {took:?}"
    );
    wait_until(Duration::from_secs(2), "no connection left", || {
        r.connections() == 0
    });
}

fn maxconn_limits_client_connections(driver: DriverChoice) {
    let o = origins(1);
    let r = start(
        Web::new(&[&o[0]]).tail("[global]\nmaxconn = 2\n").config(),
        driver,
    );
    let mut c1 = conn(&r);
    let mut c2 = conn(&r);
    assert_eq!(c1.request("GET", "/", &[], b"").unwrap().status, 200);
    assert_eq!(c2.request("GET", "/", &[], b"").unwrap().status, 200);
    wait_until(Duration::from_secs(2), "2 connections counted", || {
        r.connections() == 2
    });
    // A third: not served while two are held (left in the queue, or closed).
    let mut c3 = conn(&r);
    c3.set_timeout(Duration::from_millis(600));
    let _ = c3.send(b"GET /status?code=201 HTTP/1.1\r\nHost: a\r\n\r\n");
    if let Ok(resp) = c3.read_response(false) {
        panic!(
            "a third connection was served past maxconn = 2: {}",
            resp.status
        );
    }
    assert!(
        r.connections() <= 2,
        "{} connections past maxconn = 2",
        r.connections()
    );
    // One goes: a new connection is served.
    drop(c1);
    drop(c3);
    wait_until(
        Duration::from_secs(5),
        "a new connection served after one closed",
        || {
            Conn::connect(r.addr("web"))
                .ok()
                .and_then(|mut c| {
                    c.set_timeout(Duration::from_millis(500));
                    c.request("GET", "/", &[], b"").ok()
                })
                .is_some_and(|r| r.status == 200)
        },
    );
    assert_eq!(c2.request("GET", "/", &[], b"").unwrap().status, 200);
}
