//! Surges (issue 3, points 4 and 5): per-server maxconn holds across both cores; requests
//! over it wait in order, then get 503 after timeout_queue; past max_queue arriving
//! students get the waiting room (503, Retry-After, a page that refreshes itself) and keep
//! their session; queue lengths and waiting times show in `show servers` and the stats.
//! And the exam itself: 2,000 students logging in and submitting a quiz through 2 cores to
//! three nodes with node-local sessions, with no login loop, no lost or doubled
//! submission, and no node ever over its maxconn.

use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use engine_tests::*;

both_drivers!(
    maxconn_holds_across_cores,
    queue_serves_in_order,
    queue_timeout_then_503,
    waiting_room_past_max_queue,
    builtin_waiting_room,
    returning_student_keeps_turn,
    two_thousand_students,
);

fn stats(r: &Running) -> Box<engine::control::StatsView> {
    r.stats().expect("stats from a running engine")
}

/// The `show servers` line of `backend/server`, split in columns:
/// `backend/server address state weight active queued total`.
fn show_line(r: &Running, bs: &str) -> Vec<String> {
    let ans = r.admin("show servers");
    assert!(
        ans.starts_with("# backend/server address state weight active queued total"),
        "show servers header:\n{ans}"
    );
    assert!(ans.ends_with("\n\n"), "the answer ends with an empty line");
    ans.lines()
        .find(|l| l.split_whitespace().next() == Some(bs))
        .unwrap_or_else(|| panic!("no line for {bs} in show servers:\n{ans}"))
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

fn col(line: &[String], i: usize) -> u64 {
    line[i]
        .parse()
        .unwrap_or_else(|_| panic!("column {i} of {line:?}"))
}

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
        "[log]\naccess = \"off\"\n[[frontend]]\nname = \"web\"\nbind = [\"127.0.0.1:{}\"]\n\
         backend = \"app\"\n[[backend]]\nname = \"app\"\n\
         [[backend.server]]\nname = \"c1\"\naddress = \"{}\"\nmaxconn = 2\n\
         [[backend.server]]\nname = \"c2\"\naddress = \"{}\"\nmaxconn = 2\n",
        free_port(),
        c[0].srv.addr,
        c[1].srv.addr
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
    // No slot was lost: the next requests go straight through.
    for i in 0..3 {
        let t = Instant::now();
        let resp = tools::client::get(addr, "/login/index.php").unwrap();
        assert_eq!(resp.status, 200, "#{i} after the surge");
        assert!(
            t.elapsed() < Duration::from_millis(250),
            "#{i} did not queue"
        );
    }
}

// ---------------------------------------------------------------- the waiting room

const ROOM: &str = "<!doctype html><html><head><meta http-equiv=\"refresh\" content=\"5\">\
<title>Exam waiting room</title></head><body><h1>Please wait: the exam opens for you in a moment</h1>\
</body></html>\n";

fn waiting_room_past_max_queue(driver: DriverChoice) {
    let dir = tmpdir("surge-room");
    std::fs::write(dir.join("room.html"), ROOM).unwrap();
    let o = origins(1);
    let text = Web::new(&[&o[0]])
        .defaults("timeout_queue = \"20s\"\n")
        .backend(
            "max_queue = 2\nwaiting_room = \"room.html\"\n[backend.cookie]\nname = \"SERVERID\"\n",
        )
        .server_extra(0, "maxconn = 1")
        .text();
    let r = start(cfg_in(&dir, &text, &[]), driver);
    let addr = r.addr("web");

    // Alice logs in before the surge.
    let mut alice = Browser::new(addr);
    assert_eq!(
        alice
            .request("GET", "/login/index.php", None)
            .unwrap()
            .status,
        200
    );
    let resp = alice
        .request(
            "POST",
            "/login/index.php",
            Some("username=alice&password=x"),
        )
        .unwrap();
    assert_eq!(resp.status, 303);
    let jar_before = alice.cookie_header();
    assert!(jar_before.contains("SERVERID=s1") && jar_before.contains("MoodleSession="));
    let resp = alice.request("GET", "/my/", None).unwrap();
    assert_eq!(resp.text(), "Dashboard of alice on s1");

    std::thread::scope(|sc| {
        // One request holds s1's only slot; two sticky students wait behind it.
        let occupant = sc.spawn(move || {
            let mut c = Conn::connect(addr).unwrap();
            c.request("GET", "/slow?ms=5000", &[("Cookie", "SERVERID=s1")], b"")
                .unwrap()
                .status
        });
        wait_until(Duration::from_secs(5), "the occupant in flight", || {
            o[0].active() == 1
        });
        let waiters: Vec<_> = (0..2)
            .map(|i| {
                let h = sc.spawn(move || {
                    let mut c = Conn::connect(addr).unwrap();
                    c.set_timeout(Duration::from_secs(20));
                    c.request("GET", "/slow?ms=10", &[("Cookie", "SERVERID=s1")], b"")
                        .unwrap()
                        .status
                });
                wait_until(
                    Duration::from_secs(5),
                    &format!("{} waiting", i + 1),
                    || stats(&r).backends[0].queued == i + 1,
                );
                h
            })
            .collect();

        // The queue lengths, in the admin socket and the stats.
        wait_until(
            Duration::from_secs(5),
            "show servers: 1 active, 2 queued",
            || {
                let l = show_line(&r, "app/s1");
                col(&l, 4) == 1 && col(&l, 5) == 2
            },
        );
        let s = stats(&r);
        assert_eq!(s.backends[0].queued, 2);
        assert_eq!(s.backends[0].servers[0].queued, 2, "{:?}", s.backends[0]);
        assert_eq!(s.backends[0].servers[0].active, 1);

        // Alice arrives past max_queue: the waiting room at once, her session untouched.
        // At once: while the occupant (5 s) still holds the slot and both waiters still
        // wait, whatever the machine's load.
        let t = Instant::now();
        let resp = alice.request("GET", "/my/", None).unwrap();
        assert!(
            !occupant.is_finished() && stats(&r).backends[0].queued == 2,
            "answered at once, not queued: {:?}",
            t.elapsed()
        );
        assert_eq!(resp.status, 503, "{:?}", resp.headers);
        let retry: u64 = resp
            .header("retry-after")
            .unwrap_or_else(|| panic!("Retry-After: {:?}", resp.headers))
            .trim()
            .parse()
            .expect("Retry-After in seconds");
        assert!(retry > 0 && retry <= 120, "Retry-After {retry}");
        assert_eq!(resp.text(), ROOM, "the configured waiting room page");
        let refreshes = resp.header("refresh").is_some()
            || resp
                .text()
                .to_ascii_lowercase()
                .contains("http-equiv=\"refresh\"");
        assert!(refreshes, "the page refreshes itself");
        // The only cookie it sets is the engine's own turn cookie, which keeps the
        // student's place; the persistence and Moodle cookies are left alone.
        assert!(
            resp.headers_all("set-cookie")
                .iter()
                .all(|c| c.starts_with("engine_turn=")),
            "the waiting room leaves the student's cookies alone: {:?}",
            resp.headers
        );
        let without_turn = |jar: &str| {
            jar.split("; ")
                .filter(|c| !c.starts_with("engine_turn="))
                .collect::<Vec<_>>()
                .join("; ")
        };
        assert_eq!(
            without_turn(&alice.cookie_header()),
            without_turn(&jar_before)
        );
        assert!(
            alice.cookie_header().contains("engine_turn="),
            "her turn is kept"
        );
        // A new student too, and no one got to s1 meanwhile.
        let resp = tools::client::get(addr, "/login/index.php").unwrap();
        assert_eq!(resp.status, 503);
        assert_eq!(resp.text(), ROOM);
        assert!(resp
            .headers_all("set-cookie")
            .iter()
            .all(|c| c.starts_with("engine_turn=")));
        assert_eq!(
            o[0].requests(),
            4,
            "login page, login, dashboard, then the occupant"
        );

        assert_eq!(occupant.join().unwrap(), 200);
        for w in waiters {
            assert_eq!(w.join().unwrap(), 200, "the queued students got in");
        }
    });
    assert!(o[0].max_active() <= 1);
    // Alice's page refreshes: she is still logged in on her node.
    let resp = alice.request("GET", "/my/", None).unwrap();
    assert_eq!(
        (resp.status, resp.text()),
        (200, "Dashboard of alice on s1".to_string()),
        "after the waiting room the student's session is intact"
    );
    wait_until(
        Duration::from_secs(5),
        "queue empty, waiting times recorded",
        || {
            let s = stats(&r);
            let b = &s.backends[0];
            b.queued == 0 && b.servers[0].queued == 0 && b.queue_p50_ms > 0.0
        },
    );
    let l = show_line(&r, "app/s1");
    assert_eq!(col(&l, 5), 0, "{l:?}");
}

fn builtin_waiting_room(driver: DriverChoice) {
    let o = origins(1);
    let r = start(
        Web::new(&[&o[0]])
            .backend("max_queue = 0\n")
            .server_extra(0, "maxconn = 1")
            .config(),
        driver,
    );
    let addr = r.addr("web");
    std::thread::scope(|sc| {
        let occupant = sc.spawn(move || tools::client::get(addr, "/slow?ms=800").unwrap().status);
        wait_until(Duration::from_secs(5), "the occupant in flight", || {
            o[0].active() == 1
        });
        let resp = tools::client::get(addr, "/").unwrap();
        assert_eq!(resp.status, 503);
        assert!(resp.header("retry-after").is_some(), "{:?}", resp.headers);
        let body = resp.text().to_ascii_lowercase();
        assert!(body.contains("<html"), "an HTML page: {body}");
        assert!(
            resp.header("refresh").is_some() || body.contains("http-equiv=\"refresh\""),
            "the built-in page refreshes itself: {body}"
        );
        assert_eq!(occupant.join().unwrap(), 200);
    });
    assert_eq!(tools::client::get(addr, "/").unwrap().status, 200);
}

// ---------------------------------------------------------------- the exam

const STUDENTS: usize = 2000;
const LABS: usize = 24;
const MAXCONN: u64 = 6;

fn two_thousand_students(driver: DriverChoice) {
    let o = origins(3);
    let extra = format!("maxconn = {MAXCONN}");
    let r = start(
        Web::new(&[&o[0], &o[1], &o[2]])
            .backend("[backend.cookie]\nname = \"SERVERID\"\n")
            .server_extra(0, &extra)
            .server_extra(1, &extra)
            .server_extra(2, &extra)
            .config(),
        driver,
    );
    let addr = r.addr("web");
    let next = AtomicUsize::new(0);
    let homes = Mutex::new(HashMap::<String, String>::new());
    let loops = Mutex::new(Vec::new());
    let failures = Mutex::new(Vec::new());
    let t0 = Instant::now();
    std::thread::scope(|sc| {
        for _ in 0..LABS {
            let (next, homes, loops, failures) = (&next, &homes, &loops, &failures);
            sc.spawn(move || {
                // A lab machine: one keep-alive connection, a fresh cookie jar per student.
                let mut b = Browser::new(addr);
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= STUDENTS || t0.elapsed() > Duration::from_secs(40) {
                        break;
                    }
                    b.jar.clear();
                    let user = format!("student{i:04}");
                    match exam(&mut b, &user, &format!("a{i}")) {
                        Ok(Outcome::Done(home)) => {
                            homes.lock().unwrap().insert(user, home);
                        }
                        Ok(Outcome::Loop(m)) => loops.lock().unwrap().push(m),
                        Err(m) => {
                            failures.lock().unwrap().push(m);
                            b.conn = None;
                        }
                    }
                }
            });
        }
    });
    let took = t0.elapsed();
    let loops = loops.into_inner().unwrap();
    let failures = failures.into_inner().unwrap();
    let homes = homes.into_inner().unwrap();
    assert!(
        loops.is_empty(),
        "{} login loop(s): {:?}",
        loops.len(),
        &loops[..loops.len().min(10)]
    );
    assert!(
        failures.is_empty(),
        "{} failed student(s): {:?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
    assert_eq!(
        homes.len(),
        STUDENTS,
        "every student finished within 40 s (took {took:?})"
    );
    // Every submission recorded exactly once, on the student's own node.
    let mut seen: HashMap<(String, String), (u32, String)> = HashMap::new();
    for s in &o {
        for (k, n) in s.attempts() {
            let e = seen.entry(k).or_insert((0, s.name().to_string()));
            e.0 += n;
            e.1 = s.name().to_string();
        }
    }
    assert_eq!(seen.len(), STUDENTS, "no lost submission");
    for i in 0..STUDENTS {
        let user = format!("student{i:04}");
        let key = (user.clone(), format!("a{i}"));
        let (n, on) = seen
            .get(&key)
            .unwrap_or_else(|| panic!("{user}'s submission lost"));
        assert_eq!(*n, 1, "{user}'s submission recorded {n} times");
        assert_eq!(on, &homes[&user], "{user} submitted on their own node");
    }
    // Spread over the three nodes, none over its maxconn.
    for s in &o {
        let mine = homes.values().filter(|h| *h == s.name()).count();
        assert!(
            mine >= STUDENTS / 5,
            "{} has {mine} of {STUDENTS} students",
            s.name()
        );
        assert!(
            s.max_active() <= MAXCONN,
            "{}: {} requests in flight at once, maxconn {MAXCONN}",
            s.name(),
            s.max_active()
        );
        assert_eq!(s.sessions(), mine, "{}: one session per student", s.name());
    }
    assert!(took < Duration::from_secs(40), "took {took:?}");
}

/// A student sent to the waiting room comes back with its turn cookie and may queue past
/// max_queue, while a newcomer arriving after it still gets the waiting room; the turn
/// cookie never reaches the server.
fn returning_student_keeps_turn(driver: DriverChoice) {
    let o = origins(1);
    let text = Web::new(&[&o[0]])
        .defaults("timeout_queue = \"20s\"\n")
        .backend("max_queue = 1\n")
        .server_extra(0, "maxconn = 1")
        .text();
    let r = start(cfg_in(&tmpdir("surge-turn"), &text, &[]), driver);
    let addr = r.addr("web");
    std::thread::scope(|sc| {
        // One request holds the only slot, one waits: the queue is full.
        let occupant =
            sc.spawn(move || tools::client::get(addr, "/slow?ms=1500").map(|r| r.status));
        wait_until(Duration::from_secs(5), "the slot taken", || {
            o[0].active() == 1
        });
        let waiter = sc.spawn(move || tools::client::get(addr, "/echo").map(|r| r.status));
        wait_until(Duration::from_secs(5), "one request queued", || {
            stats(&r).backends[0].queued == 1
        });
        // Bob arrives: the waiting room, with a turn cookie.
        let resp = tools::client::get(addr, "/echo").unwrap();
        assert_eq!(resp.status, 503);
        let turn = resp
            .headers_all("set-cookie")
            .iter()
            .find_map(|c| {
                c.split(';')
                    .next()
                    .filter(|kv| kv.starts_with("engine_turn="))
                    .map(str::to_string)
            })
            .unwrap_or_else(|| panic!("a turn cookie: {:?}", resp.headers));
        // Bob comes back with it: he queues (past max_queue) and gets in.
        let bob = sc.spawn(move || {
            let mut c = Conn::connect(addr).unwrap();
            c.request("GET", "/echo", &[("Cookie", &format!("a=1; {turn}"))], b"")
                .map(|r| (r.status, r.text()))
        });
        wait_until(Duration::from_secs(5), "bob queued", || {
            stats(&r).backends[0].queued == 2
        });
        // Carol, a newcomer after Bob: the waiting room.
        let carol = tools::client::get(addr, "/echo").unwrap();
        assert_eq!(carol.status, 503, "the newcomer waits in the waiting room");
        assert_eq!(occupant.join().unwrap().unwrap(), 200);
        assert_eq!(waiter.join().unwrap().unwrap(), 200);
        let (status, echoed) = bob.join().unwrap().unwrap();
        assert_eq!(status, 200, "the returning student kept his turn");
        assert!(echoed.contains("Cookie: a=1"), "{echoed}");
        assert!(
            !echoed.contains("engine_turn"),
            "the turn cookie is the engine's: {echoed}"
        );
    });
}
