//! Parked connections (issue 16, memory after a burst): a plain-TCP keep-alive
//! connection idle past its hold leaves its task for the core's park. It is served again
//! the moment it sends, closed at its keep-alive timeout, and closed on a graceful stop;
//! the engine counts it all along.

use std::time::{Duration, Instant};

use engine_tests::*;

both_drivers!(
    parked_connections_are_served_again_when_they_send,
    parked_connections_close_at_their_keep_alive_timeout,
    a_graceful_stop_closes_parked_connections,
);

/// `n` clients, one request each, kept open.
fn idle_clients(r: &Running, n: usize) -> Vec<Conn> {
    (0..n)
        .map(|i| {
            let mut c = conn(r);
            let resp = c
                .request("GET", &format!("/echo/first/{i}"), &[], b"")
                .unwrap();
            assert_eq!(resp.status, 200);
            c
        })
        .collect()
}

fn parked_connections_are_served_again_when_they_send(driver: DriverChoice) {
    let o = origins(1);
    let r = start(Web::new(&[&o[0]]).config(), driver);
    let mut clients = idle_clients(&r, 200);
    // Well past the hold (about 200 ms): every one of them is parked. (Kept: the
    // subject, clients idle on purpose; the engine shows no parked count to wait on.)
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(r.connections(), 200, "parked connections still count");
    for (i, c) in clients.iter_mut().enumerate() {
        let resp = c
            .request("GET", &format!("/echo/again/{i}"), &[], b"")
            .unwrap();
        assert_eq!(resp.status, 200, "client {i} after its long idle");
        assert!(resp.text().starts_with(&format!("GET /echo/again/{i} ")));
    }
    // Parked a second time (kept: idle on purpose), then pipelined requests on the way
    // back.
    std::thread::sleep(Duration::from_millis(700));
    let c = &mut clients[0];
    c.send(b"GET /echo/p1 HTTP/1.1\r\nHost: a\r\n\r\nGET /echo/p2 HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    assert!(c
        .read_response(false)
        .unwrap()
        .text()
        .starts_with("GET /echo/p1 "));
    assert!(c
        .read_response(false)
        .unwrap()
        .text()
        .starts_with("GET /echo/p2 "));
    drop(clients);
    wait_until(Duration::from_secs(5), "closed clients counted out", || {
        r.connections() == 0
    });
}

fn parked_connections_close_at_their_keep_alive_timeout(driver: DriverChoice) {
    let o = origins(1);
    let r = start(
        Web::new(&[&o[0]])
            .defaults("timeout_keep_alive = \"1s\"\n")
            .config(),
        driver,
    );
    let mut clients = idle_clients(&r, 50);
    let t0 = Instant::now();
    for c in clients.iter_mut() {
        assert!(
            c.is_closed_within(Duration::from_secs(5)),
            "closed by the engine"
        );
    }
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(800),
        "not before the timeout: {took:?}"
    );
    wait_until(Duration::from_secs(2), "counted out", || {
        r.connections() == 0
    });
}

fn a_graceful_stop_closes_parked_connections(driver: DriverChoice) {
    let o = origins(1);
    let r = start(Web::new(&[&o[0]]).config(), driver);
    let mut clients = idle_clients(&r, 50);
    // Kept: the subject, idle past the hold so that they are parked.
    std::thread::sleep(Duration::from_millis(700));
    let t0 = Instant::now();
    r.stop();
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "stop waited {:?}",
        t0.elapsed()
    );
    for c in clients.iter_mut() {
        assert!(c.is_closed_within(Duration::from_secs(2)), "closed on stop");
    }
}
