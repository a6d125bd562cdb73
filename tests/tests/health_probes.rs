//! Health-check probes (issue 5): faster probes while a server changes state; exactly
//! one probe per server per interval whatever the number of cores; each change logged
//! once with its reason (binary).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use engine_tests::health::*;
use engine_tests::*;

#[test]
fn probes_faster_while_changing_state() {
    let a = CheckServer::start("a");
    let b = CheckServer::start("b");
    let text = web_text(
        &[("a", a.addr, ""), ("b", b.addr, "")],
        &check_block("1s", 3, 3, ""),
    );
    let r = start(cfg(&text, &[]), DriverChoice::Auto);
    wait_until(Duration::from_secs(6), "three steady probes of a", || {
        a.probe_count() >= 3
    });
    let gaps = |p: &[Seen]| -> Vec<Duration> { p.windows(2).map(|w| w[1].at - w[0].at).collect() };
    let steady = gaps(&a.probes());
    assert!(
        steady.iter().all(|g| *g >= Duration::from_millis(800)),
        "steady probes at the 1s interval: {steady:?}"
    );
    // Faster: each gap well under the steady ones measured here, and under the interval
    // (the fast pace is a quarter of it, 250 ms; the bound, 600 to 900 ms, is three times
    // that or so: a margin a loaded machine, which delays both paces alike, cannot miss).
    let fast = (*steady.iter().min().expect("steady gaps") * 3 / 4).min(Duration::from_millis(900));

    let before = a.probe_count();
    a.set_mode(Mode::Fail503);
    wait_until(Duration::from_secs(6), "a DOWN", || {
        state(&r, "app/a") == "DOWN"
    });
    let failing: Vec<Seen> = a.probes()[before..].to_vec();
    assert!(failing.len() >= 3, "{} failed probes", failing.len());
    let g = gaps(&failing[..3]);
    assert!(
        g.iter().all(|g| *g < fast),
        "after the first failure the next probes come faster than the 1s interval (under {fast:?}): {g:?}"
    );

    let before = a.probe_count();
    a.set_mode(Mode::Pass);
    wait_until(Duration::from_secs(6), "a UP", || {
        state(&r, "app/a") == "UP"
    });
    let passing: Vec<Seen> = a.probes()[before..].to_vec();
    assert!(passing.len() >= 3, "{} passed probes", passing.len());
    let g = gaps(&passing[..3]);
    assert!(
        g.iter().all(|g| *g < fast),
        "after the first pass the next probes come faster (under {fast:?}): {g:?}"
    );

    // Settled: back to the interval.
    let before = a.probe_count();
    wait_until(Duration::from_secs(5), "two more probes", || {
        a.probe_count() >= before + 2
    });
    let settled: Vec<Seen> = a.probes()[before - 1..].to_vec();
    let g = gaps(&settled);
    assert!(
        g.iter().all(|g| *g >= Duration::from_millis(800)),
        "settled probes at the 1s interval again: {g:?}"
    );
    assert_eq!(state(&r, "app/b"), "UP");
}

#[test]
fn one_probe_per_server_per_interval_whatever_the_cores() {
    let s: Vec<CheckServer> = (1..=3)
        .map(|i| CheckServer::start(&format!("c{i}")))
        .collect();
    let text = web_text(
        &[
            ("c1", s[0].addr, ""),
            ("c2", s[1].addr, ""),
            ("c3", s[2].addr, ""),
        ],
        &check_block("200ms", 2, 2, ""),
    );
    let window = Duration::from_secs(2);
    let mut per_cores = Vec::new();
    for cores in [1usize, 2] {
        let at_start: Vec<usize> = s.iter().map(|c| c.probe_count()).collect();
        let r = start_cores(cfg(&text, &[]), DriverChoice::Auto, cores);
        // No client traffic: every request the servers see is a probe. The window opens
        // once this engine's checks have reached every server.
        wait_until(
            Duration::from_secs(5),
            "a first probe of every server",
            || s.iter().zip(&at_start).all(|(c, n)| c.probe_count() > *n),
        );
        let before: Vec<usize> = s.iter().map(|c| c.probe_count()).collect();
        // The subject: probes counted over a fixed window.
        std::thread::sleep(window);
        let counts: Vec<usize> = s
            .iter()
            .zip(&before)
            .map(|(c, b)| c.probe_count() - b)
            .collect();
        drop(r);
        for (c, n) in s.iter().zip(&counts) {
            // 2 s / 200 ms = 10 probes.
            assert!(
                (8..=12).contains(n),
                "{cores} core(s): {} got {n} probes in {window:?} at a 200ms interval: {counts:?}",
                c.name
            );
        }
        assert!(
            s.iter().all(|c| c.traffic_count() == 0),
            "no client traffic in this test"
        );
        per_cores.push(counts);
        // Kept: no assertion follows; a pause between the two engines (the next window
        // opens only once the new engine has probed every server).
        std::thread::sleep(Duration::from_millis(300));
    }
    for (i, (one, two)) in per_cores[0].iter().zip(&per_cores[1]).enumerate() {
        assert!(
            one.abs_diff(*two) <= 2,
            "server c{}: {one} probes with 1 core, {two} with 2: the cores must not probe each",
            i + 1
        );
    }
}

/// Each change of state logged once, with its reason: timeout, refused, status 503,
/// string missing (the binary, its stderr).
#[test]
fn each_change_logged_once_with_its_reason() {
    let refused = Origin::start("refused_srv").unwrap();
    refused.set_fault(Fault::Refuse);
    let stall = CheckServer::start("stall_srv");
    stall.set_mode(Mode::Stall);
    let status = CheckServer::start("status_srv");
    status.set_mode(Mode::Fail503);
    let nostring = CheckServer::start("nostring_srv");
    nostring.set_mode(Mode::NoString);
    let fine = CheckServer::start("fine_srv");
    let text = web_text(
        &[
            ("refused_srv", refused.addr(), ""),
            ("stall_srv", stall.addr, ""),
            ("status_srv", status.addr, ""),
            ("nostring_srv", nostring.addr, ""),
            ("fine_srv", fine.addr, ""),
        ],
        &check_block("200ms", 2, 2, "").replace("timeout = \"500ms\"", "timeout = \"200ms\""),
    );
    let dir = tmpdir("health-log");
    let path = dir.join("lb.toml");
    std::fs::write(&path, &text).unwrap();
    let mut child = Command::new(engine_bin(false))
        .args(["--cores", "2", "-c"])
        .arg(&path)
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn engine");
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let stderr = child.stderr.take().unwrap();
    let l2 = lines.clone();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            l2.lock().unwrap().push(strip_ansi(&line));
        }
    });
    let matching = |what: &str, server: &str| -> Vec<String> {
        lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(what) && l.contains(&format!("app/{server}")))
            .cloned()
            .collect()
    };
    let all = || lines.lock().unwrap().join("\n");
    let down = ["refused_srv", "stall_srv", "status_srv", "nostring_srv"];
    let ok = poll_for(Duration::from_secs(10), || {
        down.iter().all(|s| !matching("is DOWN", s).is_empty())
    });
    if !ok {
        let _ = child.kill();
        let _ = child.wait();
        panic!("four servers DOWN in the log within 10s:\n{}", all());
    }
    // status_srv comes back.
    status.set_mode(Mode::Pass);
    let ok = poll_for(Duration::from_secs(5), || {
        !matching("is UP", "status_srv").is_empty()
    });
    // Many more probes (every 200 ms) of the same results: no line repeated.
    let probed = |s: &[&CheckServer]| s.iter().map(|c| c.probe_count()).collect::<Vec<_>>();
    let checked = [&stall, &status, &nostring, &fine];
    let before = probed(&checked);
    let more = poll_for(Duration::from_secs(10), || {
        probed(&checked)
            .iter()
            .zip(&before)
            .all(|(n, b)| *n >= b + 6)
    });
    signal(&child, SIGTERM);
    let st = wait_exit(&mut child, Duration::from_secs(10));
    let _ = reader.join();
    let log = all();
    assert!(ok, "status_srv UP in the log:\n{log}");
    assert!(more, "six more probes of every checked server:\n{log}");
    assert!(st.success(), "engine exit status {st:?}:\n{log}");
    for (server, reason) in [
        ("refused_srv", "refused"),
        ("stall_srv", "timeout"),
        ("status_srv", "503"),
        ("nostring_srv", "string missing"),
    ] {
        let d = matching("is DOWN", server);
        assert_eq!(d.len(), 1, "{server}: DOWN logged once:\n{log}");
        assert!(
            d[0].contains(reason),
            "{server}: the DOWN line gives the reason {reason:?}: {}",
            d[0]
        );
    }
    assert_eq!(
        matching("is UP", "status_srv").len(),
        1,
        "status_srv: UP logged once:\n{log}"
    );
    for s in ["refused_srv", "stall_srv", "nostring_srv", "fine_srv"] {
        assert!(
            matching("is UP", s).is_empty(),
            "{s}: never came UP:\n{log}"
        );
    }
    assert!(
        matching("is DOWN", "fine_srv").is_empty(),
        "fine_srv stays UP:\n{log}"
    );
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        if c == '\u{1b}' {
            if it.peek() == Some(&'[') {
                it.next();
                for c in it.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}
