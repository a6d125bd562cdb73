//! Surges (issue 3): per-server maxconn holds across both cores; requests over it wait in
//! order, then get 503 after timeout_queue; queue lengths and waiting times show in
//! `show servers` and the stats. The waiting room past max_queue is in
//! surge_waiting_room.rs, the exam of 2,000 students in surge_exam.rs.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use engine_tests::surge::*;
use engine_tests::*;

both_drivers!(
    maxconn_holds_across_cores,
    queue_serves_in_order,
    queue_timeout_then_503,
);

// ---------------------------------------------------------------- maxconn and the queue

/// A server that counts the requests in flight on it, race-free for this purpose: a
/// request counts from its head's arrival until just before its answer is written, so a
/// correct engine (which frees the slot only after the whole answer) never sees more than
/// maxconn. (The origin's own counter ends after the write, which a preempted origin thread
/// can stretch past the engine's next request.)
struct Counting {
    srv: RawServer,
    now: Arc<AtomicU64>,
    peak: Arc<AtomicU64>,
}

fn counting_server(ms: u64) -> Counting {
    let now = Arc::new(AtomicU64::new(0));
    let peak = Arc::new(AtomicU64::new(0));
    let (n2, p2) = (now.clone(), peak.clone());
    let srv = raw_server(move |s, _head| {
        let n = n2.fetch_add(1, Ordering::SeqCst) + 1;
        p2.fetch_max(n, Ordering::SeqCst);
        // Kept: the subject, a server busy this long.
        std::thread::sleep(Duration::from_millis(ms));
        n2.fetch_sub(1, Ordering::SeqCst);
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
    });
    Counting { srv, now, peak }
}

fn maxconn_holds_across_cores(driver: DriverChoice) {
    let c = [counting_server(40), counting_server(40)];
    let text = format!(
        "[log]\naccess = \"off\"\n[[frontend]]\nname = \"web\"\nbind = [\"127.0.0.1:0\"]\n\
         backend = \"app\"\n[[backend]]\nname = \"app\"\n\
         [[backend.server]]\nname = \"c1\"\naddress = \"{}\"\nmaxconn = 2\n\
         [[backend.server]]\nname = \"c2\"\naddress = \"{}\"\nmaxconn = 2\n",
        c[0].srv.addr, c[1].srv.addr
    );
    let r = start(cfg(&text, &[]), driver);
    let addr = r.addr("web");
    let failures = Mutex::new(Vec::new());
    std::thread::scope(|sc| {
        for t in 0..16 {
            let failures = &failures;
            sc.spawn(move || {
                for i in 0..8 {
                    // New connections: the kernel spreads them over both cores.
                    match tools::client::get(addr, "/") {
                        Ok(resp) if resp.status == 200 => {}
                        Ok(resp) => failures
                            .lock()
                            .unwrap()
                            .push(format!("{t}/{i}: {}", resp.status)),
                        Err(e) => failures.lock().unwrap().push(format!("{t}/{i}: {e}")),
                    }
                }
            });
        }
    });
    let f = failures.into_inner().unwrap();
    assert!(
        f.is_empty(),
        "requests over maxconn wait, they do not fail: {f:?}"
    );
    let peaks: Vec<u64> = c.iter().map(|c| c.peak.load(Ordering::SeqCst)).collect();
    for (i, p) in peaks.iter().enumerate() {
        assert!(
            *p <= 2,
            "c{}: {p} requests in flight at once, maxconn 2 (both cores together)",
            i + 1
        );
    }
    assert!(peaks.contains(&2), "the load reached maxconn: {peaks:?}");
    assert_eq!(
        c.iter().map(|c| c.now.load(Ordering::SeqCst)).sum::<u64>(),
        0
    );
    assert_eq!(
        c.iter()
            .map(|c| c.srv.heads.load(Ordering::SeqCst))
            .sum::<u64>(),
        128
    );
    // Waiting times show in the stats.
    wait_until(
        Duration::from_secs(5),
        "totals and queue times in the stats",
        || {
            let s = stats(&r);
            let b = &s.backends[0];
            b.servers.iter().map(|s| s.total).sum::<u64>() == 128 && b.queue_p50_ms > 0.0
        },
    );
}

fn queue_serves_in_order(driver: DriverChoice) {
    let o = origins(1);
    // One core: the order is per core (each core keeps its own queue).
    let r = start_cores(
        Web::new(&[&o[0]])
            .defaults("timeout_queue = \"10s\"\n")
            .server_extra(0, "maxconn = 1")
            .config(),
        driver,
        1,
    );
    let addr = r.addr("web");
    let done = Mutex::new(Vec::new());
    std::thread::scope(|sc| {
        let occupant = sc.spawn(move || tools::client::get(addr, "/slow?ms=4000").unwrap().status);
        wait_until(Duration::from_secs(5), "the occupant in flight", || {
            o[0].active() == 1
        });
        // The cores report their queues about every 500 ms: the occupant outlasts five.
        let mut hs = Vec::new();
        for i in 0..5u64 {
            let done = &done;
            hs.push(sc.spawn(move || {
                let resp = tools::client::get(addr, &format!("/slow?ms={}", 20 + i)).unwrap();
                done.lock().unwrap().push(i);
                resp.status
            }));
            // The next one arrives once this one waits.
            wait_until(
                Duration::from_secs(5),
                &format!("{} waiting in the backend's queue", i + 1),
                || stats(&r).backends[0].queued == i + 1,
            );
            assert_eq!(o[0].active(), 1, "maxconn 1: only the occupant runs");
        }
        let line = show_line(&r, "app/s1");
        assert_eq!(col(&line, 4), 1, "show servers: one active: {line:?}");
        assert_eq!(occupant.join().unwrap(), 200);
        for h in hs {
            assert_eq!(h.join().unwrap(), 200);
        }
    });
    assert_eq!(
        done.into_inner().unwrap(),
        vec![0, 1, 2, 3, 4],
        "waiting requests are served in the order they arrived"
    );
    assert_eq!(o[0].max_active(), 1);
    wait_until(Duration::from_secs(5), "the queue empty again", || {
        let s = stats(&r);
        s.backends[0].queued == 0 && s.backends[0].queue_p50_ms > 0.0
    });
}

fn queue_timeout_then_503(driver: DriverChoice) {
    let dir = tmpdir("surge-timeout");
    let page = std::fs::read("/work/shared/spec/errors/503.http").unwrap();
    std::fs::write(dir.join("503.http"), &page).unwrap();
    let o = origins(1);
    let text = Web::new(&[&o[0]])
        .defaults("timeout_queue = \"300ms\"\n")
        .backend("errorfile_503 = \"503.http\"")
        .server_extra(0, "maxconn = 1")
        .text();
    let r = start(cfg_in(&dir, &text, &[]), driver);
    let addr = r.addr("web");
    std::thread::scope(|sc| {
        let occupant = sc.spawn(move || tools::client::get(addr, "/slow?ms=5000").unwrap().status);
        wait_until(Duration::from_secs(5), "the occupant in flight", || {
            o[0].active() == 1
        });
        for i in 0..2 {
            let t = Instant::now();
            let (raw, _) = raw_exchange(
                addr,
                b"GET /login/index.php HTTP/1.1\r\nHost: a\r\n\r\n",
                Duration::from_secs(5),
            );
            let took = t.elapsed();
            assert_eq!(
                String::from_utf8_lossy(&raw),
                String::from_utf8_lossy(&page),
                "#{i}: the errorfile after timeout_queue"
            );
            // Waited timeout_queue, not the occupant: the answer came while the occupant
            // (5 s) still held the only slot, whatever the machine's load.
            assert!(
                took >= Duration::from_millis(280),
                "#{i}: waited timeout_queue (300ms): {took:?}"
            );
            assert!(
                !occupant.is_finished() && o[0].active() == 1,
                "#{i}: answered after {took:?}, not when the occupant was done"
            );
        }
        assert_eq!(
            o[0].requests(),
            1,
            "the timed-out requests never reached the server"
        );
        assert_eq!(occupant.join().unwrap(), 200);
    });
    // No slot was lost: the next requests go straight through (a lost slot would hold
    // them in the queue until timeout_queue and answer 503). No clock: a loaded machine
    // may be slow to answer, never slow enough to turn a free slot into a 503.
    for i in 0..3 {
        let resp = tools::client::get(addr, "/login/index.php").unwrap();
        assert_eq!(
            resp.status, 200,
            "#{i} after the surge: served, not queued out"
        );
    }
}
