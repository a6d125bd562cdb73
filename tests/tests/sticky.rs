//! Sticky sessions (issue 3, points 1 to 3): insert mode with indirect, nocache, httponly,
//! secure, samesite and domain; prefix mode on the application's own cookie; a cookie
//! naming a server that is down, in maintenance, refusing connections or unknown is
//! balanced anew with a fresh cookie, while DRAIN (and weight 0) keep their sticky
//! clients; a signed and dated cookie that a client can neither forge nor read, expired
//! by maxidle and maxlife. The `engine check` lints that catch login loops are in
//! sticky_check.rs.
//!
//! The access log's two persistence letters (what the client sent: N none, V valid,
//! I invalid, D down, E expired; what the engine did: N nothing, I inserted, U updated)
//! tell "honoured" from "balanced anew" even when the new pick is the same server.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use engine::balance::ServerState;
use engine_tests::*;

both_drivers!(
    insert_indirect_with_attributes,
    server_set_cookie_of_ours_removed_and_cache_private,
    prefix_mode_on_the_application_cookie,
    unusable_server_balanced_anew_drain_keeps_clients,
    refusing_sticky_server_balanced_anew,
    signed_cookie_cannot_be_forged_or_read,
    dated_cookie_expires_by_maxidle_and_maxlife,
);

// ---------------------------------------------------------------- helpers

fn node(resp: &Response) -> String {
    resp.header("x-node").unwrap_or("?").to_string()
}

/// The Set-Cookie headers of `resp` that set cookie `name`.
fn set_cookies(resp: &Response, name: &str) -> Vec<String> {
    resp.headers_all("set-cookie")
        .into_iter()
        .filter(|v| v.split(['=', ';']).next().is_some_and(|n| n.trim() == name))
        .map(str::to_string)
        .collect()
}

/// The value a Set-Cookie header value sets.
fn sc_value(sc: &str) -> String {
    let first = sc.split(';').next().unwrap_or("");
    first
        .split_once('=')
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_default()
}

/// The attributes of a Set-Cookie header value, lowercased and trimmed.
fn sc_attrs(sc: &str) -> Vec<String> {
    sc.split(';')
        .skip(1)
        .map(|a| a.trim().to_ascii_lowercase())
        .collect()
}

/// The one Set-Cookie of `name` in `resp` (panics unless exactly one), as its value.
fn the_cookie(resp: &Response, name: &str, what: &str) -> String {
    let v = set_cookies(resp, name);
    assert_eq!(
        v.len(),
        1,
        "{what}: exactly one Set-Cookie {name}, got {v:?} in {:?}",
        resp.headers
    );
    sc_value(&v[0])
}

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

/// GET `path` on a new connection with the given Cookie header (if any).
fn get_with(r: &Running, path: &str, cookie: Option<&str>) -> Response {
    let mut c = conn(r);
    let h: Vec<(&str, &str)> = cookie.map(|v| ("Cookie", v)).into_iter().collect();
    c.request("GET", path, &h, b"")
        .unwrap_or_else(|e| panic!("GET {path} with cookie {cookie:?}: {e}"))
}

/// Waits until the state published to the cores for server `i` is `want`.
fn wait_state(r: &Running, i: usize, want: ServerState) {
    wait_until(
        Duration::from_secs(5),
        &format!("server #{i} published as {want:?}"),
        || r.states().servers.get(i).map(|s| s.state) == Some(want),
    );
}

/// The `show servers` line of `backend/server`, split in columns.
fn show_line(r: &Running, bs: &str) -> Vec<String> {
    let ans = r.admin("show servers");
    ans.lines()
        .find(|l| l.split_whitespace().next() == Some(bs))
        .unwrap_or_else(|| panic!("no line for {bs} in show servers:\n{ans}"))
        .split_whitespace()
        .map(str::to_string)
        .collect()
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

// ---------------------------------------------------------------- insert mode

fn insert_indirect_with_attributes(driver: DriverChoice) {
    let o = origins(3);
    let r = start(
        Web::new(&[&o[0], &o[1], &o[2]])
            .backend(
                "[backend.cookie]\nname = \"SERVERID\"\nmode = \"insert\"\nhttponly = true\n\
                 secure = true\nsamesite = \"Lax\"\ndomain = \"moodle.example.edu\"\n",
            )
            .server_extra(0, "cookie = \"k1\"")
            .server_extra(1, "cookie = \"k2\"")
            .server_extra(2, "cookie = \"k3\"")
            .config(),
        driver,
    );
    let want_cookie = |n: &str| format!("k{}", &n[1..]);

    // A first visit: the balancer picks, the response names the pick with every attribute.
    let resp = get_with(&r, "/login/index.php", None);
    assert_eq!(resp.status, 200);
    let scs = set_cookies(&resp, "SERVERID");
    assert_eq!(scs.len(), 1, "one SERVERID cookie: {:?}", resp.headers);
    let sc = &scs[0];
    assert_eq!(
        sc_value(sc),
        want_cookie(&node(&resp)),
        "the value is the server's cookie: {sc}"
    );
    let attrs = sc_attrs(sc);
    for a in [
        "path=/",
        "domain=moodle.example.edu",
        "httponly",
        "secure",
        "samesite=lax",
    ] {
        assert!(attrs.iter().any(|x| x == a), "attribute {a} in {sc:?}");
    }
    assert!(
        resp.headers_all("cache-control")
            .iter()
            .any(|v| v.to_ascii_lowercase().contains("private")),
        "nocache: a response that sets the cookie is Cache-Control: private: {:?}",
        resp.headers
    );

    // A client holding k2 always reaches s2, which never sees SERVERID; the cookie is not
    // sent again, and the other cookies go through untouched.
    let mut c = conn(&r);
    for i in 0..20 {
        let resp = c
            .request(
                "GET",
                "/echo",
                &[("Cookie", "MoodleSession=abc; SERVERID=k2; other=1")],
                b"",
            )
            .unwrap();
        assert_eq!((resp.status, node(&resp)), (200, "s2".to_string()), "#{i}");
        let echo = resp.text();
        assert!(
            !echo.contains("SERVERID") && !echo.contains("k2"),
            "indirect: the server never sees our cookie:\n{echo}"
        );
        let cookie_line = echo
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("cookie:"))
            .unwrap_or_else(|| panic!("the application's cookies are forwarded:\n{echo}"));
        assert!(
            cookie_line.contains("MoodleSession=abc") && cookie_line.contains("other=1"),
            "{cookie_line}"
        );
        assert!(
            set_cookies(&resp, "SERVERID").is_empty(),
            "#{i}: never emitted again to a client holding the right one: {:?}",
            resp.headers
        );
        assert!(
            !resp
                .headers_all("cache-control")
                .iter()
                .any(|v| v.contains("private")),
            "#{i}: nothing set, nothing marked private: {:?}",
            resp.headers
        );
    }
    // Only our cookie: the Cookie header goes away with it.
    let resp = get_with(&r, "/echo", Some("SERVERID=k3"));
    assert_eq!(node(&resp), "s3");
    let echo = resp.text();
    assert!(!echo.contains("SERVERID"), "{echo}");

    // Sticky over new connections (both cores): a logged-in student keeps their node.
    let mut jar_cookie = String::new();
    let mut home = String::new();
    for i in 0..12 {
        let mut c = conn(&r);
        let h: Vec<(&str, &str)> = if jar_cookie.is_empty() {
            vec![]
        } else {
            vec![("Cookie", jar_cookie.as_str())]
        };
        let resp = c.request("GET", "/", &h, b"").unwrap();
        if i == 0 {
            home = node(&resp);
            jar_cookie = format!("SERVERID={}", the_cookie(&resp, "SERVERID", "first"));
        } else {
            assert_eq!(node(&resp), home, "request {i} with {jar_cookie}");
            assert!(set_cookies(&resp, "SERVERID").is_empty());
        }
    }
}

fn server_set_cookie_of_ours_removed_and_cache_private(driver: DriverChoice) {
    // A server that sets SERVERID itself and marks its response cacheable.
    let srv = raw_server(|s, _head| {
        let body = b"cacheable page";
        let _ = write!(
            s,
            "HTTP/1.1 200 OK\r\nX-Node: raw\r\nCache-Control: public, max-age=600\r\n\
             Set-Cookie: SERVERID=evil; Path=/\r\nSet-Cookie: MoodleSession=m1; path=/\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let _ = s.write_all(body);
    });
    let text = format!(
        "[log]\naccess = \"off\"\n[[frontend]]\nname = \"web\"\nbind = [\"127.0.0.1:{}\"]\n\
         backend = \"app\"\n[[backend]]\nname = \"app\"\n[backend.cookie]\nname = \"SERVERID\"\n\
         [[backend.server]]\nname = \"raw\"\naddress = \"{}\"\ncookie = \"r1\"\n",
        free_port(),
        srv.addr
    );
    let r = start(cfg(&text, &[]), driver);

    // No cookie: ours replaces the server's, and the cacheable response becomes private.
    let resp = get_with(&r, "/", None);
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body, b"cacheable page");
    let scs = set_cookies(&resp, "SERVERID");
    assert_eq!(
        scs.iter().map(|s| sc_value(s)).collect::<Vec<_>>(),
        vec!["r1".to_string()],
        "the server's SERVERID removed, ours inserted: {:?}",
        resp.headers
    );
    assert_eq!(
        set_cookies(&resp, "MoodleSession").len(),
        1,
        "the application's cookie untouched"
    );
    let cc = resp.headers_all("cache-control");
    assert!(
        cc.iter()
            .any(|v| v.to_ascii_lowercase().contains("private")),
        "nocache: Cache-Control: private: {cc:?}"
    );
    assert!(
        !cc.iter().any(|v| v.to_ascii_lowercase().contains("public")),
        "no longer public, or a shared cache would hand this cookie to other students: {cc:?}"
    );

    // The right cookie: nothing of ours is set (the server's SERVERID still removed), and
    // the response keeps its caching.
    let resp = get_with(&r, "/", Some("SERVERID=r1"));
    assert_eq!(resp.status, 200);
    assert!(
        set_cookies(&resp, "SERVERID").is_empty(),
        "a Set-Cookie of our name from the server is removed: {:?}",
        resp.headers
    );
    assert!(
        resp.headers_all("cache-control")
            .iter()
            .any(|v| v.contains("public")),
        "a response that sets nothing of ours keeps its Cache-Control: {:?}",
        resp.headers
    );
}

// ---------------------------------------------------------------- prefix mode

fn prefix_mode_on_the_application_cookie(driver: DriverChoice) {
    let o = origins(3);
    let r = start(
        Web::new(&[&o[0], &o[1], &o[2]])
            .backend("[backend.cookie]\nname = \"MoodleSession\"\nmode = \"prefix\"\n")
            .server_extra(0, "cookie = \"n1\"")
            .server_extra(1, "cookie = \"n2\"")
            .server_extra(2, "cookie = \"n3\"")
            .config(),
        driver,
    );
    for user in ["alice", "bob", "carol", "dave"] {
        let mut c = conn(&r);
        let resp = c.request("GET", "/login/index.php", &[], b"").unwrap();
        assert_eq!(resp.status, 200);
        assert!(
            resp.headers_all("set-cookie").is_empty(),
            "prefix mode inserts no cookie of its own: {:?}",
            resp.headers
        );
        let body = format!("username={user}&password=x");
        let resp = c
            .request(
                "POST",
                "/login/index.php",
                &[("Content-Type", "application/x-www-form-urlencoded")],
                body.as_bytes(),
            )
            .unwrap();
        assert_eq!(resp.status, 303, "{user}: login");
        let home = node(&resp);
        let v = the_cookie(&resp, "MoodleSession", "login");
        let (prefix, id) = v
            .split_once('~')
            .unwrap_or_else(|| panic!("{user}: MoodleSession={v} carries no prefix"));
        assert_eq!(
            prefix,
            format!("n{}", &home[1..]),
            "{user}: the prefix is the server's cookie"
        );
        assert!(!id.is_empty() && !id.contains('~'));
        let sc = set_cookies(&resp, "MoodleSession").remove(0);
        assert!(
            sc_attrs(&sc).iter().any(|a| a == "httponly"),
            "the application's attributes kept: {sc}"
        );
        // Later requests, on new connections: to the same node, which gets its own value.
        let cookie = format!("MoodleSession={v}");
        for i in 0..6 {
            let resp = get_with(&r, "/my/", Some(&cookie));
            assert_eq!(
                (resp.status, resp.text()),
                (200, format!("Dashboard of {user} on {home}")),
                "{user}: dashboard #{i} with {cookie}"
            );
        }
    }
    // What the server receives: the original value, the prefix stripped.
    let resp = get_with(&r, "/echo", Some("a=1; MoodleSession=n2~secretid; b=2"));
    assert_eq!(node(&resp), "s2");
    let echo = resp.text();
    assert!(
        echo.contains("MoodleSession=secretid") && !echo.contains("n2~"),
        "{echo}"
    );
    assert!(echo.contains("a=1") && echo.contains("b=2"), "{echo}");
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
