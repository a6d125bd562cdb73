//! The waiting room (issue 3): past max_queue arriving students get the waiting room
//! (503, Retry-After, a page that refreshes itself) and keep their session, the queue
//! lengths showing in `show servers` and the stats; the built-in page; a student back
//! with its turn cookie keeps its turn.

use std::time::{Duration, Instant};

use engine_tests::surge::*;
use engine_tests::*;

both_drivers!(
    waiting_room_past_max_queue,
    builtin_waiting_room,
    returning_student_keeps_turn,
);

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
