//! Graceful stop (point 8, in-process): `Running::stop()` while a slow request is in
//! flight lets it complete, closes idle keep-alive connections, then returns. (SIGTERM on
//! the binary is in binary.rs and release.rs.)

use std::time::{Duration, Instant};

use engine_tests::*;

both_drivers!(stop_waits_for_in_flight_request, reload_keeps_serving);

fn stop_waits_for_in_flight_request(driver: DriverChoice) {
    let o = origins(1);
    let r = start(Web::new(&[&o[0]]).config(), driver);
    let addr = r.addr("web");
    // An idle keep-alive client, which stop should close.
    let mut idle = Conn::connect(addr).unwrap();
    assert_eq!(idle.request("GET", "/", &[], b"").unwrap().status, 200);
    let slow = std::thread::spawn(move || {
        let resp = tools::client::get(addr, "/slow?ms=800");
        (resp, Instant::now())
    });
    wait_until(
        Duration::from_secs(5),
        "the slow request at the server",
        || o[0].active() == 1,
    );
    let t0 = Instant::now();
    r.stop();
    let stopped_at = Instant::now();
    let (resp, answered_at) = slow.join().unwrap();
    let resp = resp.expect("the in-flight request completes");
    assert_eq!((resp.status, resp.text()), (200, "slow 800".to_string()));
    assert!(resp.complete);
    assert!(
        answered_at <= stopped_at,
        "stop returned before the in-flight request was answered"
    );
    let took = stopped_at - t0;
    assert!(took < Duration::from_secs(5), "stop took {took:?}");
    assert!(
        idle.is_closed_within(Duration::from_secs(2)),
        "idle keep-alive connection closed by stop"
    );
}

fn reload_keeps_serving(driver: DriverChoice) {
    let o = origins(2);
    let web = Web::new(&[&o[0]]);
    let text = web.text();
    let r = start(cfg(&text, &[]), driver);
    let mut c = conn(&r);
    assert_eq!(
        c.request("GET", "/", &[], b"").unwrap().header("x-node"),
        Some("s1")
    );
    // The same frontend, now pointing at s2.
    let new_text = text.replace(&o[0].addr().to_string(), &o[1].addr().to_string());
    r.reload(cfg(&new_text, &[])).expect("reload");
    wait_until(
        Duration::from_secs(3),
        "the new configuration in effect",
        || tools::client::get(r.addr("web"), "/").is_ok_and(|r| r.header("x-node") == Some("s2")),
    );
    // The kept client connection moves over too, without losing a request.
    wait_until(
        Duration::from_secs(3),
        "the kept connection served by s2",
        || {
            c.request("GET", "/", &[], b"")
                .expect("kept connection")
                .header("x-node")
                == Some("s2")
        },
    );
}
