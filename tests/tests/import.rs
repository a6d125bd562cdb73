//! `engine import-haproxy` end to end (issue 17). The seed HAProxy file, its private
//! addresses replaced by three `php -S` nodes' loopback ones before importing and its
//! binds by free loopback ports (user, group, chroot and the syslog line left out for the
//! test), is imported and run in-process on both drivers: plain HTTP is redirected to
//! HTTPS (the `defaults` redirect HAProxy refused, carried to the plain frontend), and
//! students log in over HTTPS and stay on their node, with no login loop (the insert
//! cookie named MoodleSession became SERVERID; put back, every login loops). Then the
//! binary: its exit status, and its standard output passing `engine check`. PHP and curl
//! are required (tests/run.sh).

use std::path::{Path, PathBuf};
use std::process::Command;

use config::haproxy::{import, ReportKind};
use engine_tests::curl::{require_curl, CurlBrowser};
use engine_tests::php::*;
use engine_tests::*;

both_drivers!(imported_seed_keeps_students_on_their_node);

const SEED: &str = "/work/shared/seed/haproxy-moodle.cfg";
const USERS: usize = 24;

/// The seed with its three application nodes at `nodes` (loopback addresses; the
/// commented-out backup on loopback too): never the original's private addresses.
fn seed_on(nodes: &[String]) -> String {
    let mut text = std::fs::read_to_string(SEED).expect("the seed HAProxy file");
    for (i, a) in nodes.iter().enumerate() {
        text = text.replace(&format!("192.168.1.10{}:80", i + 1), a);
    }
    text = text.replace("192.168.1.104:80", "127.0.0.1:9");
    assert!(!text.contains("192.168."), "every private address replaced");
    text
}

/// A seed that runs here: binds on loopback port 0 (the engine picks the ports), its
/// certificate, errorfile and admin socket in `dir`, and no user, group, chroot or syslog
/// line.
fn runnable_seed(text: &str, dir: &Path) -> String {
    let cert = tools::certs::write_combined(dir, "moodle.pem", &["moodle.test", "127.0.0.1"]);
    std::fs::copy("/work/shared/spec/errors/503.http", dir.join("503.http")).unwrap();
    let subs = [
        ("bind *:80", "bind 127.0.0.1:0".to_string()),
        (
            "bind *:443 ssl crt /etc/haproxy/certs/moodle.pem",
            format!("bind 127.0.0.1:0 ssl crt {}", cert.display()),
        ),
        (
            "/etc/haproxy/errors/503.http",
            dir.join("503.http").display().to_string(),
        ),
        (
            "/run/haproxy/admin.sock",
            dir.join("admin.sock").display().to_string(),
        ),
    ];
    let mut out = text.to_owned();
    for (from, to) in &subs {
        assert!(out.contains(from), "the seed has {from:?}");
        out = out.replace(from, to);
    }
    let dropped = ["log /dev/log", "chroot ", "user haproxy", "group haproxy"];
    let out: String = out
        .lines()
        .filter(|l| !dropped.iter().any(|d| l.trim_start().starts_with(d)))
        .map(|l| format!("{l}\n"))
        .collect();
    out
}

fn imported_seed_keeps_students_on_their_node(driver: DriverChoice) {
    require_curl();
    let nodes = php_nodes();
    let dir = tmpdir("import-seed");
    let addrs: Vec<String> = nodes.iter().map(|n| n.addr.to_string()).collect();
    let text = runnable_seed(&seed_on(&addrs), &dir);
    let src = dir.join("haproxy.cfg");
    std::fs::write(&src, &text).unwrap();
    let imp = import(&text, &src);
    assert!(
        imp.runnable,
        "the imported seed runs:\n{}\n{}",
        imp.toml,
        imp.report_text()
    );
    let fixed = imp
        .report
        .iter()
        .filter(|r| r.kind == ReportKind::Fixed)
        .count();
    assert_eq!(fixed, 3, "{}", imp.report_text());
    assert!(imp.toml.contains("name = \"SERVERID\""), "{}", imp.toml);
    let lb = dir.join("lb.toml");
    std::fs::write(&lb, &imp.toml).unwrap();
    let cfg = config::load_file(&lb)
        .unwrap_or_else(|d| panic!("{d:?}"))
        .config;
    assert_eq!(
        imp.toml.matches("\"127.0.0.1:0\",").count(),
        2,
        "both binds carried over: {}",
        imp.toml
    );
    let r = start(cfg, driver);
    wait_up(&r, nodes.len());

    // Plain HTTP: sent to HTTPS (HAProxy's default code, 302), nothing reaches Moodle.
    let resp = tools::client::get(r.addr("http_frontend"), "/login/index.php?x=1").unwrap();
    assert_eq!(resp.status, 302, "{}", resp.text());
    assert_eq!(
        resp.header("location"),
        Some("https://test/login/index.php?x=1")
    );

    // HTTPS: every student logs in, submits and stays on their node.
    let addr = r.addr("https_frontend");
    let run = run_exam(|| CurlBrowser::new(addr, &dir), "imp", USERS, 4);
    assert_clean_run(&nodes, &run, "imp", USERS);

    // What a browser holds: SERVERID naming its node (s1..s3), beside Moodle's own cookie.
    let mut b = CurlBrowser::new(addr, &dir);
    let resp = b.request("GET", "/login/index.php", None).unwrap();
    let node = resp.header("x-node").unwrap_or("").to_owned();
    let jar = b.cookies();
    let serverid = jar
        .iter()
        .find(|(n, _)| n == "SERVERID")
        .map(|(_, v)| v.clone());
    let want = format!("s{}", node.trim_start_matches('p'));
    assert_eq!(
        serverid.as_deref(),
        Some(want.as_str()),
        "jar {jar:?}, node {node}"
    );
    assert!(
        jar.iter().any(|(n, _)| n == "MoodleSession"),
        "Moodle's own cookie kept: {jar:?}"
    );
    let servers = r.admin("show servers");
    assert_eq!(servers.matches(" UP ").count(), 3, "{servers}");
    r.stop();

    // The same file with the seed's cookie name put back (forced past engine check):
    // every login loops, which shows that the script over HTTPS catches it. Port 0 gives
    // new ports (a stopped engine keeps its listeners open until the process exits).
    let broken = imp
        .toml
        .replace("name = \"SERVERID\"", "name = \"MoodleSession\"");
    let forced = config::load_str_with(&broken, &lb, &config::LoadOptions { force: true })
        .unwrap_or_else(|d| panic!("{d:?}"));
    let r = start(forced.config, driver);
    wait_up(&r, nodes.len());
    let addr = r.addr("https_frontend");
    let run = run_exam(|| CurlBrowser::new(addr, &dir), "loop", 6, 3);
    assert!(run.failures.is_empty(), "{:?}", run.failures);
    assert_eq!(
        run.loops.len(),
        6,
        "every login loops with MoodleSession: {:?}",
        run.homes
    );
}

fn engine() -> Command {
    Command::new(engine_bin(false))
}

fn import_bin(path: &Path) -> (Option<i32>, String, String) {
    let out = engine()
        .arg("import-haproxy")
        .arg(path)
        .output()
        .expect("run engine import-haproxy");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn binary_imports_the_seed() {
    let dir = tmpdir("import-bin");
    let loopback: Vec<String> = (1..=3).map(|i| format!("127.0.0.1:910{i}")).collect();

    // As published: its certificate is not on this machine, so the result would not run
    // (exit 1), yet the TOML is written and the report names each defect.
    let published: PathBuf = dir.join("published.cfg");
    std::fs::write(&published, seed_on(&loopback)).unwrap();
    let (code, toml, report) = import_bin(&published);
    assert_eq!(code, Some(1), "{report}");
    assert!(
        toml.contains("[[frontend]]") && toml.contains("name = \"SERVERID\""),
        "{toml}"
    );
    assert_eq!(report.matches(": fixed: ").count(), 3, "{report}");
    assert!(
        report.contains("/etc/haproxy/certs/moodle.pem does not exist"),
        "{report}"
    );
    assert!(report.contains("the result would not run"), "{report}");

    // With its files here: exit 0, and standard output passes engine check.
    let text = runnable_seed(&seed_on(&loopback), &dir);
    let cfg = dir.join("haproxy.cfg");
    std::fs::write(&cfg, text).unwrap();
    let (code, toml, report) = import_bin(&cfg);
    assert_eq!(code, Some(0), "{report}");
    assert!(
        report.contains("== mistakes of the original, fixed in the result (3) =="),
        "{report}"
    );
    assert!(
        report.contains("the result passes engine check"),
        "{report}"
    );
    let lb = dir.join("lb.toml");
    std::fs::write(&lb, &toml).unwrap();
    let out = engine()
        .arg("check")
        .arg("-c")
        .arg(&lb)
        .output()
        .expect("run engine check");
    let shown = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "engine check on the imported file:\n{shown}\n{toml}"
    );
    assert!(shown.contains("configuration is valid"), "{shown}");

    // An unreadable file: exit 1 with the reason; no file named: exit 2 (bad arguments).
    let (code, toml, report) = import_bin(&dir.join("nowhere.cfg"));
    assert_eq!(code, Some(1));
    assert!(
        toml.is_empty() && report.contains("nowhere.cfg does not exist"),
        "{report}"
    );
    let out = engine().arg("import-haproxy").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}
