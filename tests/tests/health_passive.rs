//! Passive health checks and slowstart (issue 5): a burst of 5xx responses or of failed
//! connects takes a server DOWN before its next probe, `observe_errors = 0` turns that
//! off; a server back UP ramps its weight up over `slowstart`.

use std::time::{Duration, Instant};

use engine_tests::health::*;
use engine_tests::*;

both_drivers!(
    passive_5xx_burst_takes_server_down,
    passive_connect_failures_take_server_down,
);

/// A burst of 5xx responses takes a server DOWN long before its next probe (interval
/// 60 s: the first probe is seconds away); below `observe_errors` it stays UP.
fn passive_5xx_burst_takes_server_down(driver: DriverChoice) {
    let a = CheckServer::start("a");
    let b = CheckServer::start("b");
    a.set_traffic_status(500);
    let text = web_text(
        &[("a", a.addr, ""), ("b", b.addr, "")],
        &check_block("60s", 2, 3, "observe_errors = 5"),
    );
    let r = start(cfg(&text, &[]), driver);
    let addr = r.addr("web");
    // Four 5xx: below the threshold.
    let mut sent = 0;
    while a.traffic_count() < 4 {
        let _ = tools::client::get(addr, "/").expect("request");
        sent += 1;
        assert!(sent < 100, "a never got traffic");
    }
    // Kept: nothing is to happen here; a moment for a wrong passive DOWN to show.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(state(&r, "app/a"), "UP", "4 of observe_errors = 5");
    // The fifth.
    while a.traffic_count() < 5 {
        let _ = tools::client::get(addr, "/").expect("request");
        sent += 1;
        assert!(sent < 200, "a never got its fifth request");
    }
    wait_until(
        Duration::from_secs(2),
        "a DOWN after 5 responses 5xx",
        || state(&r, "app/a") == "DOWN",
    );
    assert_eq!(
        a.probe_count(),
        0,
        "DOWN from passive observation, before any probe"
    );
    let before = a.traffic_count();
    let m = spread(addr, 40, 200);
    assert_eq!(m.get("b").copied(), Some(40), "{m:?}");
    assert_eq!(a.traffic_count(), before, "no traffic to a once DOWN");
    assert_eq!(state(&r, "app/b"), "UP");
}

fn passive_connect_failures_take_server_down(driver: DriverChoice) {
    let a = Origin::start("a").unwrap();
    let b = CheckServer::start("b");
    a.set_fault(Fault::Refuse);
    let text = web_text(
        &[("a", a.addr(), ""), ("b", b.addr, "")],
        &check_block("60s", 2, 3, "observe_errors = 2"),
    );
    let r = start(cfg(&text, &[]), driver);
    let addr = r.addr("web");
    // The cores retry elsewhere; each reports its failed connects.
    let mut sent = 0;
    let ok = poll_for(Duration::from_secs(7), || {
        let resp = tools::client::get(addr, "/").expect("request");
        assert_eq!(resp.status, 200, "retried on b");
        sent += 1;
        state(&r, "app/a") == "DOWN"
    });
    assert!(
        ok,
        "a DOWN from connect failures (observe_errors = 2) within 7s, {sent} requests sent; fall = 3 probes at 60s could not do it"
    );
    assert_eq!(state(&r, "app/b"), "UP");
}

#[test]
fn observe_errors_zero_turns_passive_off() {
    let a = CheckServer::start("a");
    let b = CheckServer::start("b");
    a.set_traffic_status(500);
    let text = web_text(
        &[("a", a.addr, ""), ("b", b.addr, "")],
        &check_block("60s", 2, 3, "observe_errors = 0"),
    );
    let r = start(cfg(&text, &[]), DriverChoice::Auto);
    let addr = r.addr("web");
    let mut sent = 0;
    while a.traffic_count() < 20 {
        let _ = tools::client::get(addr, "/").expect("request");
        sent += 1;
        assert!(sent < 200);
    }
    // Kept: nothing is to happen here; a moment for a wrong passive DOWN to show.
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(
        state(&r, "app/a"),
        "UP",
        "observe_errors = 0: no passive DOWN"
    );
    let before = a.traffic_count();
    for _ in 0..20 {
        let _ = tools::client::get(addr, "/").expect("request");
    }
    assert!(
        a.traffic_count() >= before + 5,
        "a stays in rotation: {} more requests of 20",
        a.traffic_count() - before
    );
}

#[test]
fn slowstart_ramps_a_returning_server() {
    let a = CheckServer::start("a");
    let b = CheckServer::start("b");
    let text = web_text(
        &[("a", a.addr, "weight = 100"), ("b", b.addr, "weight = 100")],
        &check_block("200ms", 2, 2, "slowstart = \"2s\""),
    );
    let r = start(cfg(&text, &[]), DriverChoice::Auto);
    wait_until(Duration::from_secs(3), "first probes", || {
        a.probe_count() >= 2
    });
    assert_eq!(servers(&r)["app/a"], ("UP".to_string(), 100));
    a.set_mode(Mode::Fail503);
    wait_until(Duration::from_secs(5), "a DOWN", || {
        state(&r, "app/a") == "DOWN"
    });
    a.set_mode(Mode::Pass);
    wait_until(Duration::from_secs(5), "a UP", || {
        state(&r, "app/a") == "UP"
    });
    let up_at = Instant::now();
    let mut samples = Vec::new();
    while up_at.elapsed() < Duration::from_millis(2800) {
        let (st, w) = servers(&r)["app/a"].clone();
        assert_eq!(st, "UP");
        samples.push((up_at.elapsed().as_millis(), w));
        // Kept: the sampling pace of the weight over slowstart.
        std::thread::sleep(Duration::from_millis(100));
    }
    let first = samples[0].1;
    assert!(
        first <= 40,
        "just back UP with slowstart 2s: weight {first}, not 100: {samples:?}"
    );
    assert!(
        samples.windows(2).all(|w| w[0].1 <= w[1].1),
        "the weight only grows: {samples:?}"
    );
    assert!(
        samples.iter().any(|(_, w)| (30..=90).contains(w)),
        "a ramp, not a jump: {samples:?}"
    );
    assert_eq!(
        samples.last().unwrap().1,
        100,
        "full weight after slowstart: {samples:?}"
    );
    // b was never down: full weight throughout.
    assert_eq!(servers(&r)["app/b"], ("UP".to_string(), 100));
}
