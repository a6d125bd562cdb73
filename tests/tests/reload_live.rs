//! Reload under load (issue 13): 64 keep-alive connections for 10 s through 10 reloads
//! of the release binary (SIGHUP and the admin socket's `reload`, in turn), alternating
//! between two files that differ in a weight, a server added and removed, and a bind
//! added and removed. Nothing is lost: zero non-2xx, zero socket errors; a server put in
//! MAINT before the reloads is still MAINT after them, its counters kept; a client whose
//! cookie names a server that stays is answered by it throughout; the added bind serves
//! while it is configured and refuses once removed. The longest gap between two
//! responses on one connection (each lives on one core) is printed.

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use engine_tests::admin::Admin;
use engine_tests::load::{served_by, Load, Spec};
use engine_tests::process::{EngineProc, Spawn};
use engine_tests::*;

struct Files {
    a: String,
    b: String,
}

/// File A: m1 (to be put in MAINT) and m2 at weight 1, bound on 127.0.0.1 port 0.
/// File B: m2 at weight 2, m3 added, and a second bind on `extra`.
fn files(dir: &Path, extra: &str, o: &[Origin]) -> Files {
    let head = format!(
        "[global]\nadmin_socket = \"{dir}/admin.sock\"\n\n[log]\naccess = \"{dir}/access.log\"\n\n",
        dir = dir.display()
    );
    let backend = |binds: &str, m2_weight: u32, m3: bool| {
        let mut t = format!(
            "[[frontend]]\nname = \"web\"\nbind = [{binds}]\nbackend = \"moodle\"\n\n\
             [[backend]]\nname = \"moodle\"\n\
             [backend.cookie]\nname = \"SERVERID\"\n\
             [backend.check]\nuri = \"/health\"\ninterval = \"300ms\"\nrise = 1\nfall = 2\n\n\
             [[backend.server]]\nname = \"m1\"\naddress = \"{}\"\ncookie = \"m1\"\n\n\
             [[backend.server]]\nname = \"m2\"\naddress = \"{}\"\ncookie = \"m2\"\nweight = {m2_weight}\n",
            o[0].addr(),
            o[1].addr()
        );
        if m3 {
            t.push_str(&format!(
                "\n[[backend.server]]\nname = \"m3\"\naddress = \"{}\"\ncookie = \"m3\"\n",
                o[2].addr()
            ));
        }
        t
    };
    let one = "\"127.0.0.1:0\"".to_string();
    let two = format!("\"127.0.0.1:0\", \"{extra}\"");
    Files {
        a: format!("{head}{}", backend(&one, 1, false)),
        b: format!("{head}{}", backend(&two, 2, true)),
    }
}

fn serves(addr: SocketAddr) -> bool {
    tools::client::get(addr, "/").is_ok_and(|r| r.status == 200)
}

fn refused(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err()
}

#[test]
fn ten_reloads_under_load_lose_nothing_and_keep_what_stays() {
    let o = origins(3);
    let dir = tmpdir("reload-live");
    // The added bind gets a new port each time (port 0): read from `show binds`.
    let f = files(&dir, "127.0.0.2:0", &o);
    let mut e = EngineProc::start(&dir, &f.a, Spawn::default());
    let addr = e.addr("web");
    let mut extra_addr = None;
    let sock = dir.join("admin.sock");
    let mut admin = Admin::connect(&sock);
    admin.ok("disable server moodle/m1");
    let mut sticky = tools::client::Conn::connect(addr).unwrap();
    let first = sticky.request("GET", "/", &[], b"").unwrap();
    let cookie = first
        .header("set-cookie")
        .and_then(|c| c.split(';').next())
        .expect("a persistence cookie")
        .to_string();
    assert_eq!(
        served_by(&first.text()).as_deref(),
        Some("s2"),
        "m1 is in MAINT"
    );

    let load = Load::start(Spec {
        addr,
        conns: 64,
        path: "/".into(),
        cookie: Some("SERVERID".into()),
        limit: Duration::from_secs(30),
    });
    let started = Instant::now();
    let mut reload_times = Vec::new();
    for i in 0..10 {
        // Spread over the 10 s.
        let due = started + Duration::from_millis(500 + 900 * i);
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        let text = if i % 2 == 0 { &f.b } else { &f.a };
        std::fs::write(&e.config, text).unwrap();
        let t = Instant::now();
        if i % 4 < 2 {
            e.signal(libc::SIGHUP);
        } else {
            assert_eq!(admin.ask("reload"), ["ok"], "reload {i}");
        }
        reload_times.push(t);
        // The added bind serves once reloaded; the removed one refuses.
        let with_extra = i % 2 == 0;
        let applied = poll_for(Duration::from_secs(5), || {
            if with_extra {
                extra_addr = admin.binds().iter().map(|b| b.1).find(|a| *a != addr);
                extra_addr.is_some_and(serves)
            } else {
                extra_addr.is_some_and(refused)
            }
        });
        assert!(
            applied,
            "reload {i}: the bind {} within 5 s:\n{}",
            if with_extra { "serves" } else { "refuses" },
            e.said()
        );
        // The sticky client stays on m2 across every reload.
        let r = sticky
            .request("GET", "/", &[("Cookie", &cookie)], b"")
            .unwrap();
        assert_eq!(served_by(&r.text()).as_deref(), Some("s2"), "reload {i}");
    }
    std::thread::sleep(
        (started + Duration::from_secs(10)).saturating_duration_since(Instant::now()),
    );
    let report = load.stop();
    println!("{}", report.summary());
    // How long a reload held each core (measured by the core itself), and what clients
    // saw: reported, not asserted (a timing is measured, not tested).
    let installs: Vec<u64> = e
        .said()
        .lines()
        .filter_map(|l| l.split("configuration installed in ").nth(1))
        .filter_map(|r| r.split(' ').next()?.parse().ok())
        .collect();
    assert_eq!(installs.len(), 20, "10 reloads on 2 cores: {installs:?}");
    let g = report.gaps_near(&reload_times, Duration::from_millis(200));
    println!(
        "reload pause per core: longest {} µs, median {} µs; longest gap between two responses on one connection: {:.1} ms within 200 ms of a reload, {:.1} ms elsewhere",
        installs.iter().max().unwrap(),
        {
            let mut v = installs.clone();
            v.sort();
            v[v.len() / 2]
        },
        g.near.as_secs_f64() * 1000.0,
        g.elsewhere.as_secs_f64() * 1000.0
    );
    assert!(report.ok > 1000, "{}", report.summary());
    assert!(
        report.bad_status.is_empty(),
        "{:?}",
        &report.bad_status[..report.bad_status.len().min(20)]
    );
    assert!(
        report.errors.is_empty(),
        "{:?}",
        &report.errors[..report.errors.len().min(20)]
    );
    // A connection whose cookie named m2 was answered by m2 from then on.
    for t in &report.per_conn {
        let m2 = t.servers.iter().position(|(s, _)| s == "s2");
        if let Some(i) = m2 {
            assert!(
                t.servers[i..].iter().all(|(s, _)| s == "s2"),
                "a client sent to m2 moved: {:?}",
                t.servers
            );
        }
    }
    let servers = admin.servers();
    assert_eq!(
        servers["moodle/m1"].state, "MAINT",
        "MAINT survives 10 reloads"
    );
    assert!(
        servers["moodle/m2"].total > 1000,
        "m2's counters kept: {:?}",
        servers["moodle/m2"]
    );
    assert!(
        e.said().matches("configuration reloaded").count() >= 10,
        "{}",
        e.said()
    );
    e.signal(SIGTERM);
    assert_eq!(e.wait_exit(Duration::from_secs(20)).code(), Some(0));
}

#[test]
fn a_refused_reload_answers_why_and_keeps_the_running_configuration() {
    let o = origins(3);
    let dir = tmpdir("reload-refused");
    // A bind another process holds: refused as a whole (m3 not added either).
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let extra = holder.local_addr().unwrap().port();
    let f = files(&dir, &format!("127.0.0.1:{extra}"), &o);
    let e = EngineProc::start(&dir, &f.a, Spawn::default());
    let addr = e.addr("web");
    let mut admin = Admin::connect(&dir.join("admin.sock"));
    std::fs::write(&e.config, &f.b).unwrap();
    let answer = admin.ask("reload");
    assert!(answer[0].starts_with("error: reload refused"), "{answer:?}");
    assert!(
        answer
            .iter()
            .any(|l| l.contains(&format!("127.0.0.1:{extra}"))),
        "{answer:?}"
    );
    drop(holder);
    let servers = admin.servers();
    assert!(
        !servers.contains_key("moodle/m3"),
        "nothing of the refused file applied"
    );
    // A file that does not parse: every reason, the running configuration stays.
    std::fs::write(&e.config, "[global\nmaxconn = 5\n").unwrap();
    let answer = admin.ask("reload");
    assert!(answer[0].starts_with("error: reload refused"), "{answer:?}");
    assert!(
        answer.iter().any(|l| l.contains("lb.toml")),
        "names the file: {answer:?}"
    );
    // A file that cannot be read.
    std::fs::remove_file(&e.config).unwrap();
    std::fs::create_dir(&e.config).unwrap();
    let answer = admin.ask("reload");
    assert!(answer[0].starts_with("error: reload refused"), "{answer:?}");
    assert!(serves(addr), "still serving");
    // A user that does not exist.
    std::fs::remove_dir(&e.config).unwrap();
    std::fs::write(
        &e.config,
        format!(
            "{}\n",
            f.a.replace("[global]\n", "[global]\nuser = \"no-such-user-here\"\n")
        ),
    )
    .unwrap();
    let answer = admin.ask("reload");
    assert!(
        answer
            .iter()
            .any(|l| l.contains("no-such-user-here") && l.contains("does not exist")),
        "{answer:?}"
    );
    assert!(serves(addr), "still serving");
}
