//! redirect_https (issue 4, points 2 and 3): each code (301, 302, 303, 307, 308) with a
//! Location built only from the validated Host (its port dropped) and the request target,
//! the `port` option, the exception prefixes (ACME challenges) going to the backend, a
//! bad Host answered 400 rather than redirected, and client-sent X-Forwarded-Proto/SSL
//! removed on a plain frontend.

use std::net::SocketAddr;
use std::time::Duration;

use engine_tests::*;

both_drivers!(
    each_code_with_exact_location,
    port_option,
    exceptions_go_to_backend,
    exceptions_judged_on_the_normalised_path,
    bad_host_is_400_not_a_redirect,
    client_forwarded_headers_removed,
);

const CODES: [u16; 5] = [301, 302, 303, 307, 308];
const ACME: &str = "/.well-known/acme-challenge/";

/// One frontend `rNNN` per code (exceptions: ACME and /echo), `p8443` (code 301, port
/// 8443), `p443` (code 308, port 443) and `all` (no backend, no exception), all before
/// backend `app` on `origin`.
fn engine(o: &Origin, driver: DriverChoice) -> Running {
    let mut t = String::from("[log]\naccess = \"off\"\n");
    let fe = |name: &str, redirect: &str, backend: bool| {
        format!(
            "[[frontend]]\nname = \"{name}\"\nbind = [\"127.0.0.1:0\"]\n{}redirect_https = {redirect}\n",
            if backend { "backend = \"app\"\n" } else { "" }
        )
    };
    for c in CODES {
        t.push_str(&fe(
            &format!("r{c}"),
            &format!("{{ code = {c}, except_prefixes = [\"{ACME}\", \"/echo\"] }}"),
            true,
        ));
    }
    t.push_str(&fe("p8443", "{ code = 301, port = 8443 }", true));
    t.push_str(&fe(
        "p443",
        &format!("{{ code = 308, port = 443, except_prefixes = [\"{ACME}\"] }}"),
        true,
    ));
    t.push_str(&fe("all", "{ code = 302 }", false));
    t.push_str(&format!(
        "[[backend]]\nname = \"app\"\n[[backend.server]]\nname = \"{}\"\naddress = \"{}\"\n",
        o.name(),
        o.addr()
    ));
    start(cfg(&t, &[]), driver)
}

fn get(addr: SocketAddr, path: &str, host: &str) -> Response {
    let mut c = Conn::connect(addr).unwrap();
    c.request("GET", path, &[("Host", host)], b"").unwrap()
}

fn each_code_with_exact_location(driver: DriverChoice) {
    let o = origins(1);
    let r = engine(&o[0], driver);
    for code in CODES {
        let a = r.addr(&format!("r{code}"));
        for (host, path, want) in [
            (
                "moodle.example.edu",
                "/login/index.php?x=1&y=a%20b",
                "https://moodle.example.edu/login/index.php?x=1&y=a%20b",
            ),
            // The Host's own port is never kept.
            (
                "moodle.example.edu:8080",
                "/course/view.php?id=7",
                "https://moodle.example.edu/course/view.php?id=7",
            ),
            ("moodle.example.edu", "/", "https://moodle.example.edu/"),
            ("127.0.0.1:80", "/a/b/", "https://127.0.0.1/a/b/"),
            ("[::1]:8080", "/q?z", "https://[::1]/q?z"),
            ("[2001:db8::1]", "/q", "https://[2001:db8::1]/q"),
            // Close to an exception but not one: redirected.
            (
                "moodle.example.edu",
                "/.well-known/acme-challenge",
                "https://moodle.example.edu/.well-known/acme-challenge",
            ),
            (
                "moodle.example.edu",
                "/x/.well-known/acme-challenge/t",
                "https://moodle.example.edu/x/.well-known/acme-challenge/t",
            ),
            (
                "moodle.example.edu",
                "/ech",
                "https://moodle.example.edu/ech",
            ),
        ] {
            let resp = get(a, path, host);
            assert_eq!(resp.status, code, "code {code}, Host {host}, {path}");
            assert_eq!(
                resp.headers_all("location"),
                [want],
                "code {code}: Location for Host {host} and {path}"
            );
        }
        // Kept alive: several redirects on one connection, then an exception.
        let mut c = Conn::connect(a).unwrap();
        for i in 0..3 {
            let resp = c
                .request(
                    "GET",
                    &format!("/my/?i={i}"),
                    &[("Host", "moodle.example.edu")],
                    b"",
                )
                .unwrap();
            assert_eq!(resp.status, code);
            assert_eq!(
                resp.header("location"),
                Some(format!("https://moodle.example.edu/my/?i={i}").as_str())
            );
        }
        let resp = c
            .request(
                "GET",
                &format!("{ACME}tok"),
                &[("Host", "moodle.example.edu")],
                b"",
            )
            .unwrap();
        assert_eq!(resp.header("x-node"), Some("s1"), "code {code}: {resp:?}");
        // HEAD and POST are redirected the same way.
        let mut c = Conn::connect(a).unwrap();
        let resp = c
            .request("HEAD", "/h?1", &[("Host", "moodle.example.edu")], b"")
            .unwrap();
        assert_eq!(resp.status, code);
        assert_eq!(
            resp.header("location"),
            Some("https://moodle.example.edu/h?1")
        );
        let mut c = Conn::connect(a).unwrap();
        let resp = c
            .request(
                "POST",
                "/login/index.php",
                &[("Host", "moodle.example.edu")],
                b"username=a",
            )
            .unwrap();
        assert_eq!(resp.status, code);
        assert_eq!(
            resp.header("location"),
            Some("https://moodle.example.edu/login/index.php")
        );
    }
    // Without a backend and without exceptions: everything is redirected.
    let a = r.addr("all");
    let resp = get(a, &format!("{ACME}tok"), "moodle.example.edu");
    assert_eq!(resp.status, 302);
    assert_eq!(
        resp.header("location"),
        Some(format!("https://moodle.example.edu{ACME}tok").as_str())
    );
    // Only the two exception requests per code reached the origin.
    assert_eq!(o[0].requests(), CODES.len() as u64);
}

fn port_option(driver: DriverChoice) {
    let o = origins(1);
    let r = engine(&o[0], driver);
    let resp = get(r.addr("p8443"), "/a?b=c", "moodle.example.edu:8080");
    assert_eq!(resp.status, 301);
    assert_eq!(
        resp.header("location"),
        Some("https://moodle.example.edu:8443/a?b=c")
    );
    let resp = get(r.addr("p8443"), "/", "[::1]");
    assert_eq!(resp.header("location"), Some("https://[::1]:8443/"));
    // port = 443 is the default port: not written.
    let resp = get(r.addr("p443"), "/a", "moodle.example.edu:80");
    assert_eq!(resp.status, 308);
    assert_eq!(
        resp.header("location"),
        Some("https://moodle.example.edu/a")
    );
    assert_eq!(o[0].requests(), 0);
}

fn exceptions_go_to_backend(driver: DriverChoice) {
    let o = origins(1);
    let r = engine(&o[0], driver);
    for code in CODES {
        let a = r.addr(&format!("r{code}"));
        let before = o[0].requests();
        let resp = get(a, &format!("{ACME}abc123"), "moodle.example.edu");
        assert_eq!(
            resp.status, 404,
            "code {code}: the ACME challenge answered by the origin"
        );
        assert_eq!(resp.header("x-node"), Some("s1"));
        assert!(resp.header("location").is_none());
        let resp = get(a, "/echo/acme?x=1", "moodle.example.edu:8080");
        assert_eq!(resp.status, 200);
        let text = resp.text();
        assert!(
            text.starts_with("GET /echo/acme?x=1 HTTP/1.1\r\n"),
            "{text}"
        );
        assert!(text.contains("Host: moodle.example.edu:8080\r\n"), "{text}");
        assert_eq!(o[0].requests(), before + 2, "code {code}");
    }
    let resp = get(r.addr("p443"), &format!("{ACME}t"), "moodle.example.edu");
    assert_eq!(resp.header("x-node"), Some("s1"));
}

fn exceptions_judged_on_the_normalised_path(driver: DriverChoice) {
    // Dot segments (plain or percent-encoded) and encoded slashes never ride the ACME
    // exception to a page over plain HTTP: they are redirected like any other path.
    let o = origins(1);
    let r = engine(&o[0], driver);
    let a = r.addr("r301");
    for path in [
        "/.well-known/acme-challenge/../../index.php",
        "/.well-known/acme-challenge/%2e%2e/%2E%2E/login/index.php",
        "/.well-known/acme-challenge/.%2e/.%2e/my/",
        "/.well-known/acme-challenge/..%2f..%2findex.php",
        "/.well-known/acme-challenge/./token",
        "/echo/../index.php",
    ] {
        let before = o[0].requests();
        let resp = get(a, path, "moodle.example.edu");
        assert_eq!(resp.status, 301, "{path} redirected");
        assert_eq!(
            resp.header("location"),
            Some(format!("https://moodle.example.edu{path}").as_str())
        );
        assert_eq!(o[0].requests(), before, "{path} never reached the server");
    }
}

/// Sends `raw`, returns the status and the Location header (if any).
fn raw_status(addr: SocketAddr, raw: &str) -> (u16, Option<String>, String) {
    let (out, _) = raw_exchange(addr, raw.as_bytes(), Duration::from_secs(5));
    let text = String::from_utf8_lossy(&out).into_owned();
    let head = text.split("\r\n\r\n").next().unwrap_or("");
    let loc = head
        .lines()
        .find_map(|l| {
            l.split_once(':')
                .filter(|(n, _)| n.trim().eq_ignore_ascii_case("location"))
        })
        .map(|(_, v)| v.trim().to_string());
    (status_of(&out), loc, text)
}

fn bad_host_is_400_not_a_redirect(driver: DriverChoice) {
    let o = origins(1);
    let r = engine(&o[0], driver);
    for code in [301, 308] {
        let a = r.addr(&format!("r{code}"));
        for (what, raw) in [
            ("no Host", "GET /x HTTP/1.1\r\n\r\n".to_string()),
            (
                "two Hosts",
                "GET /x HTTP/1.1\r\nHost: moodle.example.edu\r\nHost: evil.example\r\n\r\n"
                    .to_string(),
            ),
            (
                "a path in Host",
                "GET /x HTTP/1.1\r\nHost: evil.example/phish\r\n\r\n".to_string(),
            ),
            (
                "userinfo in Host",
                "GET /x HTTP/1.1\r\nHost: moodle.example.edu@evil.example\r\n\r\n".to_string(),
            ),
            (
                "a space in Host",
                "GET /x HTTP/1.1\r\nHost: moodle example\r\n\r\n".to_string(),
            ),
            (
                "a bad port",
                "GET /x HTTP/1.1\r\nHost: moodle.example.edu:8o\r\n\r\n".to_string(),
            ),
            (
                "a bad IP literal",
                "GET /x HTTP/1.1\r\nHost: [evil.example]\r\n\r\n".to_string(),
            ),
            (
                "a backslash in Host",
                "GET /x HTTP/1.1\r\nHost: evil.example\\moodle\r\n\r\n".to_string(),
            ),
            (
                "an empty Host",
                "GET /x HTTP/1.1\r\nHost: \r\n\r\n".to_string(),
            ),
        ] {
            let (status, loc, text) = raw_status(a, &raw);
            assert_eq!(
                status, 400,
                "code {code}, {what}: 400, not a redirect:\n{text}"
            );
            assert!(loc.is_none(), "code {code}, {what}: no Location:\n{text}");
        }
        // An absolute-form target never puts its own authority into the Location.
        let (status, loc, text) = raw_status(
            a,
            "GET http://evil.example/x HTTP/1.1\r\nHost: moodle.example.edu\r\n\r\n",
        );
        assert!(
            status == 400 || status == code,
            "code {code}, absolute-form: {text}"
        );
        assert!(
            !loc.as_deref().unwrap_or("").contains("evil"),
            "code {code}, absolute-form target: the Location comes from Host: {text}"
        );
        // A target that is not a path: no redirect built from it.
        let (status, loc, text) =
            raw_status(a, "OPTIONS * HTTP/1.1\r\nHost: moodle.example.edu\r\n\r\n");
        assert!(
            loc.as_deref()
                .is_none_or(|l| l.starts_with("https://moodle.example.edu/")),
            "code {code}, OPTIONS *: {status} {text}"
        );
        // A good request on a fresh connection still redirects.
        let resp = get(a, "/ok", "moodle.example.edu");
        assert_eq!(resp.status, code);
    }
    assert_eq!(o[0].requests(), 0, "nothing bad reached the origin");
}

fn client_forwarded_headers_removed(driver: DriverChoice) {
    let o = origins(1);
    let r = engine(&o[0], driver);
    let a = r.addr("r301");
    let mut c = Conn::connect(a).unwrap();
    let resp = c
        .request(
            "GET",
            "/echo",
            &[
                ("Host", "moodle.example.edu"),
                ("X-Forwarded-Proto", "https"),
                ("X-Forwarded-SSL", "on"),
                ("x-forwarded-proto", "https"),
                ("X-FORWARDED-SSL", "on"),
                ("X-Custom", "kept"),
            ],
            b"",
        )
        .unwrap();
    assert_eq!(resp.status, 200);
    let text = resp.text().to_ascii_lowercase();
    let head = text.split("\r\n\r\n").next().unwrap_or("");
    assert!(
        !head.contains("x-forwarded-proto") && !head.contains("x-forwarded-ssl"),
        "a plain-HTTP client cannot pass as HTTPS:\n{}",
        resp.text()
    );
    assert!(head.contains("x-custom: kept"), "{}", resp.text());
}
