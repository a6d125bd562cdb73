//! Access log (point 7): httplog and json to a file, exactly one line per request,
//! failures included (400, 408, 504, 503).

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use engine_tests::*;

both_drivers!(httplog_one_line_per_request, json_one_line_per_request);

/// What each request should leave: (status, request line or None for <BADREQ>, server).
type Want = (u16, Option<&'static str>, Option<&'static str>);

const WANT: &[Want] = &[
    (200, Some("GET /login/index.php HTTP/1.1"), Some("s1")),
    (200, Some("POST /upload HTTP/1.1"), Some("s1")),
    (404, Some("GET /status?code=404 HTTP/1.1"), Some("s1")),
    (504, Some("GET /slow?ms=3000 HTTP/1.1"), Some("s1")),
    (503, Some("GET /refused HTTP/1.1"), None),
    (400, None, None),
    (408, None, None),
];

/// Runs the requests of [`WANT`] against an engine logging to `log` in `format`.
fn traffic(driver: DriverChoice, format: &str, log: &Path) {
    let o = origins(1);
    let dead = Origin::start("dead").unwrap();
    let dead_addr = dead.addr();
    drop(dead);
    let tail = format!(
        "[log]\naccess = \"{}\"\nformat = \"{format}\"\n",
        log.display()
    );
    let text = Web::new(&[&o[0]])
        .defaults("timeout_server = \"300ms\"\ntimeout_http_request = \"300ms\"\n")
        .tail(&tail)
        .text()
        + &format!(
            "[[frontend]]\nname = \"other\"\nbind = [\"127.0.0.1:0\"]\nbackend = \"gone\"\n\
             [[backend]]\nname = \"gone\"\nretries = 0\n[[backend.server]]\nname = \"dead\"\naddress = \"{dead_addr}\"\n",
        );
    let r = start(cfg(&text, &[]), driver);
    let mut c = conn(&r);
    assert_eq!(
        c.request("GET", "/login/index.php", &[], b"")
            .unwrap()
            .status,
        200
    );
    assert_eq!(
        c.request("POST", "/upload", &[], b"abc").unwrap().status,
        200
    );
    assert_eq!(
        c.request("GET", "/status?code=404", &[], b"")
            .unwrap()
            .status,
        404
    );
    assert_eq!(
        c.request("GET", "/slow?ms=3000", &[], b"").unwrap().status,
        504
    );
    let resp = tools::client::get(r.addr("other"), "/refused").unwrap();
    assert_eq!(resp.status, 503);
    let (raw, _) = raw_exchange(
        r.addr("web"),
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        Duration::from_secs(5),
    );
    assert_eq!(status_of(&raw), 400);
    let mut s = TcpStream::connect(r.addr("web")).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\n").unwrap();
    let (raw, _) = read_until_close(&mut s, Duration::from_secs(5));
    assert_eq!(status_of(&raw), 408);
    // The log is flushed by the cores' sweep; keep the engine running while polling.
    let lines = read_lines_until(log, WANT.len(), Duration::from_secs(5));
    assert_eq!(
        lines.len(),
        WANT.len(),
        "exactly one line per request: {lines:#?}"
    );
    r.stop();
}

/// Finds the line for each wanted request (any order: two cores write); each line used
/// once.
fn match_lines<T>(lines: &[T], wanted: &[Want], matches: impl Fn(&T, &Want) -> bool) {
    let mut used = vec![false; lines.len()];
    for w in wanted {
        let i = (0..lines.len()).find(|&i| !used[i] && matches(&lines[i], w));
        match i {
            Some(i) => used[i] = true,
            None => panic!("no log line for {w:?}"),
        }
    }
}

fn httplog_one_line_per_request(driver: DriverChoice) {
    let dir = tmpdir("httplog");
    let log = dir.join("access.log");
    traffic(driver, "httplog", &log);
    let lines = file_lines(&log);
    for l in &lines {
        // client:port [date] frontend backend/server Tq/Tw/Tc/Tr/Tt status bytes cookie term "request"
        let f: Vec<&str> = l.splitn(10, ' ').collect();
        assert_eq!(f.len(), 10, "httplog fields: {l}");
        assert!(f[0].starts_with("127.0.0.1:"), "client address: {l}");
        assert!(f[1].starts_with('[') && f[1].ends_with(']'), "date: {l}");
        assert!(f[2] == "web" || f[2] == "other", "frontend: {l}");
        assert!(f[3].contains('/'), "backend/server: {l}");
        let timers: Vec<&str> = f[4].split('/').collect();
        assert_eq!(timers.len(), 5, "Tq/Tw/Tc/Tr/Tt: {l}");
        assert!(
            timers.iter().all(|t| t.parse::<i64>().is_ok()),
            "timers: {l}"
        );
        assert!(f[5].parse::<u16>().is_ok(), "status: {l}");
        assert!(f[6].parse::<u64>().is_ok(), "bytes: {l}");
        assert_eq!(f[7].len(), 2, "cookie flags: {l}");
        assert_eq!(f[8].len(), 2, "termination state: {l}");
        assert!(
            f[9].starts_with('"') && f[9].ends_with('"'),
            "request line: {l}"
        );
    }
    match_lines(&lines, WANT, |l, (status, req, srv)| {
        let f: Vec<&str> = l.splitn(10, ' ').collect();
        f[5] == status.to_string()
            && req.is_none_or(|q| f[9] == format!("\"{q}\""))
            && srv.is_none_or(|s| f[3] == format!("app/{s}"))
    });
    let ok = lines
        .iter()
        .find(|l| l.contains("GET /login/index.php"))
        .unwrap();
    assert!(ok.contains(" web app/s1 "), "{ok}");
    let slow = lines.iter().find(|l| l.contains(" 504 ")).unwrap();
    let timers: Vec<i64> = slow
        .split(' ')
        .nth(4)
        .unwrap()
        .split('/')
        .map(|t| t.parse().unwrap())
        .collect();
    assert!(
        timers[4] >= 250,
        "Tt of the 504 counts the server timeout: {slow}"
    );
}

fn json_one_line_per_request(driver: DriverChoice) {
    let dir = tmpdir("jsonlog");
    let log = dir.join("access.log");
    traffic(driver, "json", &log);
    let lines = file_lines(&log);
    let objs: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    for v in &objs {
        for k in [
            "client",
            "time",
            "frontend",
            "backend",
            "server",
            "tq",
            "tw",
            "tc",
            "tr",
            "tt",
            "status",
            "bytes",
            "cookie",
            "termination",
            "request",
        ] {
            assert!(v.get(k).is_some(), "field {k} missing: {v}");
        }
    }
    match_lines(&objs, WANT, |v, (status, req, srv)| {
        v["status"].as_u64() == Some(u64::from(*status))
            && req.is_none_or(|q| v["request"].as_str() == Some(q))
            && srv.is_none_or(|s| {
                v["server"].as_str() == Some(s) && v["backend"].as_str() == Some("app")
            })
    });
}
