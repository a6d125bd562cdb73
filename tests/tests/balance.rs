//! Balancing (point 4): smooth weighted round-robin over 2 cores, leastconn, backup
//! servers, connect failures retried, no replay once bytes reached a server, 503 pages;
//! and a server killed mid-run without a failed idempotent request.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use engine_tests::*;

both_drivers!(
    weighted_round_robin_1000_requests,
    leastconn_prefers_idle_server,
    backup_only_while_no_other_is_up,
    full_primaries_queue_rather_than_use_the_backup,
    connect_failure_retried_elsewhere,
    no_replay_once_bytes_reached_server,
    errorfile_503_sent_as_is,
    builtin_503_without_errorfile,
    server_killed_mid_run,
);

fn node(resp: &Response) -> String {
    resp.header("x-node").unwrap_or("?").to_string()
}

fn weighted_round_robin_1000_requests(driver: DriverChoice) {
    let o = origins(3);
    let r = start(
        Web::new(&[&o[0], &o[1], &o[2]])
            .server_extra(0, "weight = 1")
            .server_extra(1, "weight = 2")
            .server_extra(2, "weight = 3")
            .config(),
        driver,
    );
    let addr = r.addr("web");
    // 10 clients x 100 keep-alive requests; the kernel spreads the connections over the
    // 2 cores.
    let counts: Vec<HashMap<String, u32>> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..10)
            .map(|_| {
                sc.spawn(move || {
                    let mut c = Conn::connect(addr).unwrap();
                    let mut m = HashMap::new();
                    for _ in 0..100 {
                        let resp = c.request("GET", "/", &[], b"").expect("request");
                        assert_eq!(resp.status, 200);
                        *m.entry(node(&resp)).or_insert(0) += 1;
                    }
                    m
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut total: HashMap<String, u32> = HashMap::new();
    for m in counts {
        for (k, v) in m {
            *total.entry(k).or_insert(0) += v;
        }
    }
    assert_eq!(total.values().sum::<u32>(), 1000);
    let got = |n: &str| total.get(n).copied().unwrap_or(0);
    // Smooth WRR per core: each core is exact within a cycle of 6, so the whole is within
    // a few requests of 1/6, 2/6, 3/6.
    for (n, want) in [("s1", 167i64), ("s2", 333), ("s3", 500)] {
        let d = (got(n) as i64 - want).abs();
        assert!(
            d <= 12,
            "{n}: {} requests, expected about {want}: {total:?}",
            got(n)
        );
    }
    assert_eq!(o.iter().map(|o| o.requests()).sum::<u64>(), 1000);
    assert!(r.cores() == 2);
}

fn leastconn_prefers_idle_server(driver: DriverChoice) {
    let o = origins(2);
    // One core: leastconn counts are per core.
    let r = start_cores(
        Web::new(&[&o[0], &o[1]])
            .backend("balance = \"leastconn\"")
            .config(),
        driver,
        1,
    );
    let addr = r.addr("web");
    std::thread::scope(|sc| {
        let slow = sc.spawn(move || {
            let resp = tools::client::get(addr, "/slow?ms=1500").unwrap();
            assert_eq!(resp.status, 200);
            node(&resp)
        });
        wait_until(Duration::from_secs(5), "the slow request in flight", || {
            o[0].active() + o[1].active() == 1
        });
        let busy = if o[0].active() == 1 { "s1" } else { "s2" };
        let mut c = Conn::connect(addr).unwrap();
        for i in 0..10 {
            let resp = c.request("GET", "/", &[], b"").unwrap();
            assert_ne!(
                node(&resp),
                busy,
                "request {i} went to the busy server under leastconn"
            );
        }
        assert_eq!(slow.join().unwrap(), busy);
    });
}

fn backup_only_while_no_other_is_up(driver: DriverChoice) {
    let mut o = origins(2);
    o.push(Origin::start("bk").unwrap());
    let r = start(
        Web::new(&[&o[0], &o[1], &o[2]])
            .defaults("timeout_connect = \"500ms\"\nretries = 3\n")
            .server_extra(2, "backup = true")
            .config(),
        driver,
    );
    let addr = r.addr("web");
    for i in 0..40 {
        let resp = tools::client::get(addr, "/").unwrap();
        assert_eq!(resp.status, 200);
        assert_ne!(
            node(&resp),
            "bk",
            "request {i}: the backup took traffic while others were up"
        );
    }
    assert_eq!(o[2].requests(), 0);
    // Both normal servers die: the backup takes over, no request lost.
    o[0].set_fault(Fault::Refuse);
    o[1].set_fault(Fault::Refuse);
    for i in 0..20 {
        let resp = tools::client::get(addr, "/").unwrap();
        assert_eq!(
            (resp.status, node(&resp)),
            (200, "bk".to_string()),
            "request {i} with s1 and s2 down"
        );
    }
    // s1 comes back: traffic returns to it (within the engine's retry-after window, which
    // each core keeps for itself: wait until every core sends to s1 again), and the backup
    // is left alone again.
    o[0].set_fault(Fault::None);
    wait_until(
        Duration::from_secs(8),
        "s1 taking traffic again on every core",
        || (0..10).all(|_| tools::client::get(addr, "/").is_ok_and(|r| node(&r) == "s1")),
    );
    let before = o[2].requests();
    for i in 0..20 {
        let resp = tools::client::get(addr, "/").unwrap();
        assert_eq!(
            (resp.status, node(&resp)),
            (200, "s1".to_string()),
            "request {i} after s1 came back"
        );
    }
    assert_eq!(o[2].requests(), before, "backup idle while s1 is up");
}

fn full_primaries_queue_rather_than_use_the_backup(driver: DriverChoice) {
    // Two primaries that take one request at a time, and a backup: six requests at once
    // wait for the primaries, none goes to the backup (HAProxy: a backup serves only
    // while no primary is up).
    let mut o = origins(2);
    o.push(Origin::start("bk").unwrap());
    let r = start(
        Web::new(&[&o[0], &o[1], &o[2]])
            .server_extra(0, "maxconn = 1")
            .server_extra(1, "maxconn = 1")
            .server_extra(2, "backup = true")
            .config(),
        driver,
    );
    let addr = r.addr("web");
    let nodes: Vec<String> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..6)
            .map(|_| {
                sc.spawn(move || {
                    tools::client::get(addr, "/slow?ms=300").map(|r| (r.status, node(&r)))
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| match h.join().unwrap() {
                Ok((200, n)) => n,
                other => format!("{other:?}"),
            })
            .collect()
    });
    assert!(
        nodes.iter().all(|n| n == "s1" || n == "s2"),
        "every request on a primary, none on the backup: {nodes:?}"
    );
    assert_eq!(o[2].requests(), 0, "the backup took no request");
}

fn connect_failure_retried_elsewhere(driver: DriverChoice) {
    let o = origins(3);
    o[0].set_fault(Fault::Refuse);
    o[1].set_fault(Fault::Refuse);
    let r = start(
        Web::new(&[&o[0], &o[1], &o[2]])
            .defaults("retries = 2\n")
            .config(),
        driver,
    );
    let mut c = conn(&r);
    for i in 0..30 {
        // POST too: a refused connect sent nothing, so it may go elsewhere.
        let resp = if i % 2 == 0 {
            c.request("GET", "/", &[], b"").unwrap()
        } else {
            c.request("POST", "/upload", &[], b"data").unwrap()
        };
        assert_eq!(
            (resp.status, node(&resp)),
            (200, "s3".to_string()),
            "request {i}"
        );
    }
    // Every server refusing: 503 once the retries are spent (s3's pooled connections
    // were closed with it).
    o[2].set_fault(Fault::Refuse);
    let resp = tools::client::get(r.addr("web"), "/").unwrap();
    assert_eq!(resp.status, 503);
}

fn no_replay_once_bytes_reached_server(driver: DriverChoice) {
    // s1 reads each request head and resets; bk would answer but is a backup: a replay
    // could only go there.
    let s1 = Origin::start("s1").unwrap();
    let bk = Origin::start("bk").unwrap();
    s1.set_fault(Fault::ResetAfterRequest);
    let r = start(
        Web::new(&[&s1, &bk])
            .server_extra(1, "backup = true")
            .config(),
        driver,
    );
    // A POST reached s1: it is never replayed, the client gets 502.
    let before = s1.requests();
    let mut c = conn(&r);
    let resp = c
        .request("POST", "/upload", &[], b"once")
        .expect("an answer");
    assert_eq!(
        resp.status, 502,
        "POST: the server reset after receiving it"
    );
    assert_eq!(s1.requests(), before + 1, "POST: sent exactly once");
    assert_eq!(bk.requests(), 0, "POST: never replayed on another server");
    // An idempotent GET without a body that a server closed on without answering may go
    // once more, to another server (RFC 9110 §9.2.2): here only the backup is left.
    let before = s1.requests();
    let mut c = conn(&r);
    let resp = c.request("GET", "/", &[], b"").expect("an answer");
    assert_eq!(resp.status, 200, "GET: answered by the backup");
    assert_eq!(resp.header("x-node"), Some("bk"));
    assert_eq!(s1.requests(), before + 1, "GET: s1 saw it once");
    assert_eq!(bk.requests(), 1, "GET: replayed exactly once");
}

fn errorfile_503_sent_as_is(driver: DriverChoice) {
    let dir = tmpdir("errorfile");
    let page = std::fs::read("/work/shared/spec/errors/503.http").unwrap();
    std::fs::write(dir.join("503.http"), &page).unwrap();
    let o = origins(1);
    o[0].set_fault(Fault::Refuse);
    let text = Web::new(&[&o[0]])
        .backend("errorfile_503 = \"503.http\"")
        .text();
    let r = start(cfg_in(&dir, &text, &[]), driver);
    let (raw, closed) = raw_exchange(
        r.addr("web"),
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        Duration::from_secs(5),
    );
    assert!(closed);
    assert_eq!(
        String::from_utf8_lossy(&raw),
        String::from_utf8_lossy(&page),
        "the errorfile, byte for byte"
    );
}

fn builtin_503_without_errorfile(driver: DriverChoice) {
    let o = origins(2);
    o[0].set_fault(Fault::Refuse);
    o[1].set_fault(Fault::Refuse);
    let r = start(Web::new(&[&o[0], &o[1]]).config(), driver);
    let resp = tools::client::get(r.addr("web"), "/").unwrap();
    assert_eq!(resp.status, 503);
    assert!(!resp.body.is_empty(), "a short built-in page");
    assert!(resp.complete);
}

fn server_killed_mid_run(driver: DriverChoice) {
    let mut o = origins(3);
    let r = start(
        Web::new(&[&o[0], &o[1], &o[2]])
            .defaults("timeout_connect = \"500ms\"\n")
            .config(),
        driver,
    );
    let addr = r.addr("web");
    let stop = AtomicBool::new(false);
    let done = AtomicU64::new(0);
    let failures = std::sync::Mutex::new(Vec::<String>::new());
    std::thread::scope(|sc| {
        for t in 0..4 {
            let (stop, done, failures) = (&stop, &done, &failures);
            sc.spawn(move || {
                let mut c = Conn::connect(addr).unwrap();
                let mut i = 0;
                while !stop.load(Ordering::SeqCst) && i < 2000 {
                    i += 1;
                    let path = if i % 5 == 0 {
                        "/slow?ms=20"
                    } else {
                        "/login/index.php"
                    };
                    match c.request("GET", path, &[], b"") {
                        Ok(resp) if resp.status == 200 && resp.complete => {}
                        Ok(resp) => {
                            failures.lock().unwrap().push(format!(
                                "client {t} GET {path}: status {} complete {}",
                                resp.status, resp.complete
                            ));
                            c = Conn::connect(addr).unwrap();
                        }
                        Err(e) => {
                            failures
                                .lock()
                                .unwrap()
                                .push(format!("client {t} GET {path}: {e}"));
                            c = Conn::connect(addr).unwrap();
                        }
                    }
                    done.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
        wait_until(Duration::from_secs(10), "traffic flowing", || {
            done.load(Ordering::SeqCst) >= 200
        });
        // Kill s2 in the middle of the run: its listener and every connection go.
        let killed = o.remove(1);
        drop(killed);
        let at = done.load(Ordering::SeqCst);
        wait_until(Duration::from_secs(20), "traffic after the kill", || {
            done.load(Ordering::SeqCst) >= at + 400
        });
        stop.store(true, Ordering::SeqCst);
    });
    let f = failures.into_inner().unwrap();
    assert!(
        f.is_empty(),
        "{} failed idempotent request(s) of {}: {f:#?}",
        f.len(),
        done.load(Ordering::SeqCst)
    );
}
