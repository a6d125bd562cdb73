//! Active health checks (issue 5): one health-check thread probes every server at
//! `interval` with the configured HTTP/1.1 request; DOWN after `fall` failures (status,
//! missing string), UP after `rise` passes (the string found across reads, through
//! chunked encoding, far into the body). The pace of the probes and the log of changes
//! are in health_probes.rs, passive observation and slowstart in health_passive.rs; the
//! check server in tests/src/health.rs.

use std::time::Duration;

use engine_tests::health::*;
use engine_tests::*;

both_drivers!(
    fall_and_rise_route_traffic,
    expect_string_across_reads_and_chunks,
);

fn fall_and_rise_route_traffic(driver: DriverChoice) {
    let a = CheckServer::start("a");
    let b = CheckServer::start("b");
    let text = web_text(
        &[("a", a.addr, ""), ("b", b.addr, "")],
        &check_block("200ms", 2, 2, ""),
    );
    let r = start(cfg(&text, &[]), driver);
    let addr = r.addr("web");

    // The probe: the configured method, uri and Host, HTTP/1.1.
    wait_until(Duration::from_secs(5), "two probes of each server", || {
        a.probe_count() >= 2 && b.probe_count() >= 2
    });
    let p = &a.probes()[0];
    assert_eq!(p.request_line, "GET /health HTTP/1.1", "{p:?}");
    assert_eq!(p.header("host"), Some("moodle.test"), "{p:?}");
    assert_eq!(state(&r, "app/a"), "UP");
    let m = spread(addr, 40, 200);
    assert!(m.get("a").copied().unwrap_or(0) >= 10, "a serves: {m:?}");

    // 503 (with the string in the body): DOWN after `fall` failed probes, no traffic.
    let before = a.probe_count();
    a.set_mode(Mode::Fail503);
    wait_until(Duration::from_secs(5), "a DOWN after 503s", || {
        state(&r, "app/a") == "DOWN"
    });
    let n = a.probe_count() - before;
    assert!(
        (2..=3).contains(&n),
        "DOWN after fall = 2 failed probes, seen after {n}"
    );
    assert_eq!(state(&r, "app/b"), "UP");
    let m = spread(addr, 100, 200);
    assert_eq!(m.get("b").copied(), Some(100), "a is DOWN: {m:?}");

    // Plain passes: UP after `rise`.
    let before = a.probe_count();
    a.set_mode(Mode::Pass);
    wait_until(Duration::from_secs(5), "a UP after passes", || {
        state(&r, "app/a") == "UP"
    });
    let n = a.probe_count() - before;
    assert!(
        (2..=3).contains(&n),
        "UP after rise = 2 passed probes, seen after {n}"
    );
    let m = spread(addr, 40, 200);
    assert!(m.get("a").copied().unwrap_or(0) >= 10, "a is back: {m:?}");
    assert_eq!(state(&r, "app/b"), "UP");
}

/// `expect_string` is searched across reads: through chunked encoding with the string
/// split over chunks sent apart, and 200 KB into a body, not in a fixed window; a 200
/// without it fails.
fn expect_string_across_reads_and_chunks(driver: DriverChoice) {
    let a = CheckServer::start("a");
    let b = CheckServer::start("b");
    let text = web_text(
        &[("a", a.addr, ""), ("b", b.addr, "")],
        &check_block("200ms", 2, 2, ""),
    );
    let r = start(cfg(&text, &[]), driver);
    let addr = r.addr("web");

    // 200 without the string: a failure.
    a.set_mode(Mode::NoString);
    wait_until(Duration::from_secs(5), "a DOWN, string missing", || {
        state(&r, "app/a") == "DOWN"
    });
    let m = spread(addr, 40, 200);
    assert_eq!(m.get("b").copied(), Some(40), "a is DOWN: {m:?}");

    // Passes whose string is split over chunks sent in separate writes: UP after `rise`.
    let before = a.probe_count();
    a.set_mode(Mode::PassChunkedSplit);
    wait_until(
        Duration::from_secs(5),
        "a UP after chunked passes with the string split over chunks",
        || state(&r, "app/a") == "UP",
    );
    let n = a.probe_count() - before;
    assert!(
        (2..=3).contains(&n),
        "UP after rise = 2 passed probes, seen after {n}"
    );
    let m = spread(addr, 40, 200);
    assert!(m.get("a").copied().unwrap_or(0) >= 10, "a is back: {m:?}");

    a.set_mode(Mode::NoString);
    wait_until(Duration::from_secs(5), "a DOWN, string missing", || {
        state(&r, "app/a") == "DOWN"
    });

    // The string 200 KB into the body: a pass.
    a.set_mode(Mode::PassLate);
    wait_until(
        Duration::from_secs(5),
        "a UP with the string 200 KB into the body",
        || state(&r, "app/a") == "UP",
    );
    let m = spread(addr, 40, 200);
    assert!(m.get("a").copied().unwrap_or(0) >= 10, "a is back: {m:?}");
    assert_eq!(state(&r, "app/b"), "UP");
}
