//! Sticky sessions balanced anew (issue 3): a cookie naming a server that is down, in
//! maintenance, refusing connections or unknown is balanced anew with a fresh cookie,
//! while DRAIN (and weight 0) keep their sticky clients; a signed and dated cookie that a
//! client can neither forge nor read, expired by maxidle and maxlife. Insert and prefix
//! modes are in sticky.rs.
//!
//! The access log's two persistence letters (what the client sent: N none, V valid,
//! I invalid, D down, E expired; what the engine did: N nothing, I inserted, U updated)
//! tell "honoured" from "balanced anew" even when the new pick is the same server.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use engine::balance::ServerState;
use engine_tests::admin::show_line;
use engine_tests::sticky::*;
use engine_tests::*;

both_drivers!(
    unusable_server_balanced_anew_drain_keeps_clients,
    refusing_sticky_server_balanced_anew,
    signed_cookie_cannot_be_forged_or_read,
    dated_cookie_expires_by_maxidle_and_maxlife,
);

// ---------------------------------------------------------------- helpers

/// Reads the json access log until a line whose request contains `tag` appears; returns
/// its `cookie` field (the two persistence letters).
fn log_flags(log: &Path, tag: &str) -> String {
    let mut found = None;
    let ok = poll_for(Duration::from_secs(5), || {
        for l in file_lines(log) {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&l) else {
                continue;
            };
            if v["request"].as_str().is_some_and(|r| r.contains(tag)) {
                found = Some(v["cookie"].as_str().unwrap_or("").to_string());
                return true;
            }
        }
        false
    });
    assert!(
        ok,
        "no access log line for {tag} in {}:\n{}",
        log.display(),
        file_lines(log).join("\n")
    );
    found.unwrap()
}

fn json_log(dir: &Path) -> (PathBuf, String) {
    let log = dir.join("access.log");
    let tail = format!("[log]\naccess = \"{}\"\nformat = \"json\"\n", log.display());
    (log, tail)
}

/// Waits until the state published to the cores for server `i` is `want`.
fn wait_state(r: &Running, i: usize, want: ServerState) {
    wait_until(
        Duration::from_secs(5),
        &format!("server #{i} published as {want:?}"),
        || r.states().servers.get(i).map(|s| s.state) == Some(want),
    );
}

fn admin_ok(r: &Running, cmd: &str) {
    let ans = r.admin(cmd);
    assert!(ans.starts_with("ok"), "{cmd}: {ans:?}");
    assert!(
        ans.ends_with("\n\n"),
        "{cmd}: answer ends with an empty line"
    );
}

/// Requests without a cookie until each of `want` servers has answered once; returns
/// node name -> the cookie value it was given.
fn cookie_per_node(r: &Running, name: &str, want: usize) -> HashMap<String, String> {
    let mut m = HashMap::new();
    for _ in 0..(want * 6) {
        let resp = get_with(r, "/", None);
        assert_eq!(resp.status, 200);
        let v = the_cookie(&resp, name, "a client without cookie");
        m.entry(node(&resp)).or_insert(v);
        if m.len() == want {
            return m;
        }
    }
    panic!("round-robin reached only {m:?}")
}

// ---------------------------------------------------------------- unusable servers

fn unusable_server_balanced_anew_drain_keeps_clients(driver: DriverChoice) {
    let dir = tmpdir("sticky-anew");
    let (log, tail) = json_log(&dir);
    let o = origins(3);
    let text = Web::new(&[&o[0], &o[1], &o[2]])
        .backend(
            "[backend.cookie]\nname = \"SERVERID\"\n\
             [backend.check]\nuri = \"/health\"\nhost = \"test\"\ninterval = \"100ms\"\n\
             rise = 1\nfall = 1\n",
        )
        .tail(&tail)
        .text();
    let r = start(cfg_in(&dir, &text, &[]), driver);
    for i in 0..3 {
        wait_state(&r, i, ServerState::Up);
    }
    let mut tag_n = 0;
    let mut tagged = |r: &Running, cookie: Option<&str>| -> (Response, String) {
        tag_n += 1;
        let tag = format!("t{tag_n}x");
        let resp = get_with(r, &format!("/?tag={tag}"), cookie);
        assert_eq!(resp.status, 200, "{tag} with {cookie:?}");
        (resp, tag)
    };

    // An unknown server: balanced anew, with a fresh cookie naming the server that answered.
    for _ in 0..3 {
        let (resp, tag) = tagged(&r, Some("SERVERID=nosuchserver"));
        assert_eq!(
            the_cookie(&resp, "SERVERID", "unknown server"),
            node(&resp),
            "a fresh cookie naming the server that answered"
        );
        assert_eq!(log_flags(&log, &tag), "II", "{tag}: invalid, inserted");
    }
    // Valid: honoured, nothing set.
    let (resp, tag) = tagged(&r, Some("SERVERID=s1"));
    assert_eq!(node(&resp), "s1");
    assert!(set_cookies(&resp, "SERVERID").is_empty());
    assert_eq!(log_flags(&log, &tag), "VN");

    // DOWN (failed health checks): never sent there, fresh cookie.
    o[0].set_healthy(false);
    wait_state(&r, 0, ServerState::Down);
    assert_eq!(show_line(&r, "app/s1")[2], "DOWN");
    for _ in 0..4 {
        let (resp, tag) = tagged(&r, Some("SERVERID=s1"));
        assert_ne!(node(&resp), "s1", "a DOWN server got a sticky request");
        assert_eq!(
            the_cookie(&resp, "SERVERID", "down server"),
            node(&resp),
            "{tag}"
        );
        assert_eq!(log_flags(&log, &tag), "DI", "{tag}: down, inserted");
    }
    o[0].set_healthy(true);
    wait_state(&r, 0, ServerState::Up);
    let (resp, tag) = tagged(&r, Some("SERVERID=s1"));
    assert_eq!(node(&resp), "s1", "back UP: its sticky clients return");
    assert_eq!(log_flags(&log, &tag), "VN");

    // MAINT (disable server): no traffic at all, the cookie replaced.
    admin_ok(&r, "disable server app/s2");
    wait_state(&r, 1, ServerState::Maint);
    for _ in 0..4 {
        let (resp, tag) = tagged(&r, Some("SERVERID=s2"));
        assert_ne!(node(&resp), "s2", "a MAINT server got a sticky request");
        assert_eq!(the_cookie(&resp, "SERVERID", "maint"), node(&resp));
        assert_eq!(log_flags(&log, &tag), "DI", "{tag}");
    }
    admin_ok(&r, "set server app/s2 state maint");
    let (resp, _) = tagged(&r, Some("SERVERID=s2"));
    assert_ne!(node(&resp), "s2", "state maint: the same as disable");
    admin_ok(&r, "enable server app/s2");
    wait_state(&r, 1, ServerState::Up);

    // DRAIN: the clients whose cookie names it stay; no new client goes there.
    admin_ok(&r, "set server app/s3 state drain");
    wait_state(&r, 2, ServerState::Drain);
    assert_eq!(show_line(&r, "app/s3")[2], "DRAIN");
    for i in 0..8 {
        let (resp, tag) = tagged(&r, Some("SERVERID=s3; MoodleSession=x"));
        assert_eq!(node(&resp), "s3", "#{i}: DRAIN keeps its sticky clients");
        assert!(
            set_cookies(&resp, "SERVERID").is_empty(),
            "#{i}: the sticky client keeps its cookie: {:?}",
            resp.headers
        );
        assert_eq!(log_flags(&log, &tag), "VN", "{tag}");
    }
    for i in 0..12 {
        let (resp, _) = tagged(&r, None);
        assert_ne!(node(&resp), "s3", "new client #{i} sent to a DRAIN server");
        assert_eq!(the_cookie(&resp, "SERVERID", "new client"), node(&resp));
    }
    admin_ok(&r, "set server app/s3 state ready");
    wait_state(&r, 2, ServerState::Up);

    // Weight 0: like DRAIN.
    admin_ok(&r, "set weight app/s1 0");
    wait_until(Duration::from_secs(5), "weight 0 published", || {
        r.states().servers[0].weight == 0
    });
    for i in 0..4 {
        let (resp, _) = tagged(&r, Some("SERVERID=s1"));
        assert_eq!(node(&resp), "s1", "#{i}: weight 0 keeps its sticky clients");
    }
    for i in 0..9 {
        let (resp, _) = tagged(&r, None);
        assert_ne!(
            node(&resp),
            "s1",
            "new client #{i} sent to a weight-0 server"
        );
    }
    // Nothing was sent to a server it should not have been: s1 got none while DOWN.
    r.stop();
}

fn refusing_sticky_server_balanced_anew(driver: DriverChoice) {
    let dir = tmpdir("sticky-refuse");
    let (log, tail) = json_log(&dir);
    let o = origins(3);
    let text = Web::new(&[&o[0], &o[1], &o[2]])
        .defaults("timeout_connect = \"500ms\"\n")
        .backend("[backend.cookie]\nname = \"SERVERID\"\n")
        .tail(&tail)
        .text();
    let r = start(cfg_in(&dir, &text, &[]), driver);
    o[1].set_fault(Fault::Refuse);
    for i in 0..6 {
        let tag = format!("refused{i}x");
        let mut c = conn(&r);
        // A POST too: nothing of it reached the refusing server.
        let resp = if i % 2 == 0 {
            c.request(
                "GET",
                &format!("/?tag={tag}"),
                &[("Cookie", "SERVERID=s2")],
                b"",
            )
        } else {
            c.request(
                "POST",
                &format!("/upload?tag={tag}"),
                &[("Cookie", "SERVERID=s2")],
                b"data",
            )
        }
        .unwrap();
        assert_eq!(resp.status, 200, "{tag}: retried on another server");
        assert_ne!(node(&resp), "s2");
        assert_eq!(
            the_cookie(&resp, "SERVERID", "refused"),
            node(&resp),
            "{tag}: a fresh cookie naming the server that answered"
        );
        assert_eq!(log_flags(&log, &tag), "DI", "{tag}");
    }
}

// ---------------------------------------------------------------- signed and dated

const KEY: &str = "0123456789abcdef-exam-secret";

fn signed_cookie_cannot_be_forged_or_read(driver: DriverChoice) {
    let dir = tmpdir("sticky-signed");
    let (log, tail) = json_log(&dir);
    let o = origins(3);
    let web = |key: &str, tail: &str| {
        Web::new(&[&o[0], &o[1], &o[2]])
            .tail(tail)
            .backend(&format!(
                "[backend.cookie]\nname = \"SERVERID\"\nkey = \"{key}\"\n"
            ))
            .server_extra(0, "cookie = \"srv_1\"")
            .server_extra(1, "cookie = \"srv_2\"")
            .server_extra(2, "cookie = \"srv_3\"")
            .text()
    };
    let text = web(KEY, &tail);
    let r = start(cfg_in(&dir, &text, &[]), driver);
    let per_node = cookie_per_node(&r, "SERVERID", 3);

    // The value does not carry the server's cookie (`srv_N`: an underscore is neither
    // hex nor base 36, so it cannot appear by chance).
    for (n, v) in &per_node {
        assert!(
            !v.contains("srv_"),
            "{n}'s cookie {v} gives its server's cookie away"
        );
        let resp = get_with(&r, "/", Some(&format!("SERVERID={v}")));
        assert_eq!(node(&resp), *n, "a signed cookie is honoured");
    }
    let values: Vec<&String> = per_node.values().collect();
    assert!(values[0] != values[1] && values[1] != values[2]);

    let mut tag_n = 0;
    let mut check_refused = |r: &Running, value: &str, what: &str| {
        tag_n += 1;
        let tag = format!("forged{tag_n}x");
        let resp = get_with(
            r,
            &format!("/?tag={tag}"),
            Some(&format!("SERVERID={value}")),
        );
        assert_eq!(resp.status, 200);
        let fresh = the_cookie(&resp, "SERVERID", what);
        assert_ne!(fresh, value, "{what}: a fresh cookie");
        assert_eq!(
            log_flags(&log, &tag),
            "II",
            "{what}: SERVERID={value} must be refused and balanced anew"
        );
        node(&resp)
    };

    // A client naming the server it wants, as plain HAProxy cookies would let it.
    let mut landed = Vec::new();
    for want in ["srv_2", "s2", "srv_2.0.0.0"] {
        for _ in 0..3 {
            landed.push(check_refused(&r, want, &format!("picked {want}")));
        }
    }
    assert!(
        landed.iter().any(|n| n != "s2"),
        "clients asking for s2 were balanced, not all sent there: {landed:?}"
    );
    // Any one character of a valid value changed: refused.
    let v = per_node["s1"].clone();
    for (i, ch) in v.char_indices() {
        let repl = if ch == '0' { '1' } else { '0' };
        let mut forged = v.clone();
        forged.replace_range(i..i + ch.len_utf8(), &repl.to_string());
        check_refused(&r, &forged, &format!("character {i} of {v} changed"));
    }
    // One server's value spliced with another's: refused.
    let v2 = per_node["s2"].clone();
    if let (Some((a1, r1)), Some((_, r2))) = (v.split_once('.'), v2.split_once('.')) {
        check_refused(&r, &format!("{a1}.{r2}"), "s1's tag with s2's signature");
        let (a2, _) = v2.split_once('.').unwrap();
        check_refused(&r, &format!("{a2}.{r1}"), "s2's tag with s1's signature");
    }
    check_refused(&r, &format!("{v}.{v}"), "two values joined");
    check_refused(&r, "", "an empty value");

    // A value signed with another key (another engine on the same servers): refused.
    let other = start(cfg(&web("another-key-of-sixteen-chars+", ""), &[]), driver);
    let theirs = cookie_per_node(&other, "SERVERID", 1);
    let foreign = theirs.values().next().unwrap().clone();
    check_refused(&r, &foreign, "a cookie signed with another key");
}

fn dated_cookie_expires_by_maxidle_and_maxlife(driver: DriverChoice) {
    let o = origins(3);
    let dir_idle = tmpdir("sticky-maxidle");
    let dir_life = tmpdir("sticky-maxlife");
    let run = |dir: &Path, cookie_extra: &str| {
        let (log, tail) = json_log(dir);
        let text = Web::new(&[&o[0], &o[1], &o[2]])
            .backend(&format!(
                "[backend.cookie]\nname = \"SERVERID\"\nkey = \"{KEY}\"\n{cookie_extra}"
            ))
            .tail(&tail)
            .text();
        (start(cfg_in(dir, &text, &[]), driver), log)
    };
    std::thread::scope(|sc| {
        // maxidle 2s: a student who keeps working keeps their server (the cookie is
        // refreshed); one idle for longer is balanced anew.
        let idle = sc.spawn(|| {
            let (r, log) = run(&dir_idle, "maxidle = \"2s\"\n");
            let first = get_with(&r, "/", None);
            let home = node(&first);
            let mut value = the_cookie(&first, "SERVERID", "first visit");
            let t0 = Instant::now();
            let mut refreshed = 0;
            let mut i = 0;
            while t0.elapsed() < Duration::from_millis(4200) {
                // Kept: the subject, a student working at this pace.
                std::thread::sleep(Duration::from_millis(600));
                i += 1;
                let tag = format!("busy{i}x");
                let resp = get_with(
                    &r,
                    &format!("/?tag={tag}"),
                    Some(&format!("SERVERID={value}")),
                );
                assert_eq!(node(&resp), home, "{tag}: a working student stays");
                let flags = log_flags(&log, &tag);
                assert!(
                    flags == "VN" || flags == "VU",
                    "{tag}: valid, maybe refreshed: {flags}"
                );
                if let Some(sc) = set_cookies(&resp, "SERVERID").first() {
                    assert_eq!(flags, "VU");
                    value = sc_value(sc);
                    refreshed += 1;
                }
            }
            assert!(
                refreshed >= 1,
                "past maxidle/4 the cookie's last-seen date is refreshed"
            );
            // Idle past maxidle (whole seconds: 3.2s > 2s plus rounding). Kept: the subject.
            std::thread::sleep(Duration::from_millis(3200));
            let resp = get_with(&r, "/?tag=idle1x", Some(&format!("SERVERID={value}")));
            let fresh = the_cookie(&resp, "SERVERID", "after maxidle");
            assert_ne!(fresh, value);
            assert_eq!(log_flags(&log, "idle1x"), "EI", "expired, inserted");
            let resp = get_with(&r, "/?tag=idle2x", Some(&format!("SERVERID={fresh}")));
            // Valid; refreshed too when a second boundary passed since it was issued
            // (dates are whole seconds and the refresh step is 1 s here).
            let flags = log_flags(&log, "idle2x");
            assert!(
                flags == "VN" || flags == "VU",
                "the fresh one is valid: {flags}"
            );
            assert_eq!(set_cookies(&resp, "SERVERID").is_empty(), flags == "VN");
        });
        // maxlife 3s: even a busy student's cookie ends.
        let life = sc.spawn(|| {
            let (r, log) = run(&dir_life, "maxlife = \"3s\"\n");
            let first = get_with(&r, "/", None);
            let home = node(&first);
            let value = the_cookie(&first, "SERVERID", "first visit");
            let t0 = Instant::now();
            let mut i = 0;
            while t0.elapsed() < Duration::from_millis(1800) {
                i += 1;
                let tag = format!("life{i}x");
                let resp = get_with(
                    &r,
                    &format!("/?tag={tag}"),
                    Some(&format!("SERVERID={value}")),
                );
                assert_eq!(node(&resp), home, "{tag}");
                assert_eq!(log_flags(&log, &tag), "VN", "{tag}");
                // Kept: the subject, a student working at this pace.
                std::thread::sleep(Duration::from_millis(400));
            }
            // Kept: the subject, time passing until maxlife is over.
            while t0.elapsed() < Duration::from_millis(4300) {
                std::thread::sleep(Duration::from_millis(100));
            }
            let resp = get_with(&r, "/?tag=lifeendx", Some(&format!("SERVERID={value}")));
            let fresh = the_cookie(&resp, "SERVERID", "after maxlife");
            assert_ne!(fresh, value);
            assert_eq!(log_flags(&log, "lifeendx"), "EI", "past maxlife: expired");
        });
        idle.join().unwrap();
        life.join().unwrap();
    });
}
