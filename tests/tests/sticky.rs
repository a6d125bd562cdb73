//! Sticky sessions (issue 3): insert mode with indirect, nocache, httponly, secure,
//! samesite and domain; a server's own Set-Cookie of our name removed; prefix mode on the
//! application's own cookie. A cookie naming an unusable server, forged or expired is
//! balanced anew: sticky_anew.rs. The `engine check` lints that catch login loops are in
//! sticky_check.rs.

use std::io::Write;

use engine_tests::sticky::*;
use engine_tests::*;

both_drivers!(
    insert_indirect_with_attributes,
    server_set_cookie_of_ours_removed_and_cache_private,
    prefix_mode_on_the_application_cookie,
);

// ---------------------------------------------------------------- helpers

/// The attributes of a Set-Cookie header value, lowercased and trimmed.
fn sc_attrs(sc: &str) -> Vec<String> {
    sc.split(';')
        .skip(1)
        .map(|a| a.trim().to_ascii_lowercase())
        .collect()
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
        "[log]\naccess = \"off\"\n[[frontend]]\nname = \"web\"\nbind = [\"127.0.0.1:0\"]\n\
         backend = \"app\"\n[[backend]]\nname = \"app\"\n[backend.cookie]\nname = \"SERVERID\"\n\
         [[backend.server]]\nname = \"raw\"\naddress = \"{}\"\ncookie = \"r1\"\n",
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
