//! HTTP/2 to browsers (issue 15), both drivers: ALPN h2 on the HTTPS frontend (and
//! `alpn = ["http/1.1"]` turning it off), h2c with prior knowledge where `h2c = true`;
//! curl --http2 and nghttp through the engine to the Moodle-like origins: a login that
//! stays on its node, 10 MiB up and down byte-exact, the waiting room; the access log's
//! `HTTP/2.0`; the stats' HTTP/2 counts. The protocol suite (malformed requests and
//! floods) is tests/tests/http2_abuse.rs; Chromium is in tests/tests/http2_browser.rs.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use engine_tests::tls::{certs, curl, require_tools};
use engine_tests::*;

both_drivers!(
    h2_by_alpn_login_stays_on_its_node,
    ten_mib_up_and_down_byte_exact,
    waiting_room_over_h2,
    h2c_with_prior_knowledge_only_where_asked,
);

/// A TLS frontend `https` (h2 and http/1.1), a TLS frontend `h1` (alpn http/1.1 only),
/// an h2c frontend `h2c` and a plain one `plain`, all to backend `moodle` with sticky
/// cookies over `o`.
fn text(o: &[Origin], backend_extra: &str, log: &Path) -> String {
    let c = certs();
    let servers: String = o
        .iter()
        .map(|o| {
            format!(
                "[[backend.server]]\nname = \"{n}\"\naddress = \"{a}\"\ncookie = \"{n}\"\n",
                n = o.name(),
                a = o.addr()
            )
        })
        .collect();
    format!(
        "[global]\nstats = \"127.0.0.1:0\"\n[log]\naccess = \"{log}\"\n\n\
         [[frontend]]\nname = \"https\"\nbind = [\"127.0.0.1:0\"]\nbackend = \"moodle\"\n\
         tls = {{ certs = [\"{cert}\"] }}\nset_headers = {{ \"X-Forwarded-Proto\" = \"https\" }}\n\n\
         [[frontend]]\nname = \"h1\"\nbind = [\"127.0.0.1:0\"]\nbackend = \"moodle\"\n\
         tls = {{ certs = [\"{cert}\"] }}\nalpn = [\"http/1.1\"]\n\n\
         [[frontend]]\nname = \"h2c\"\nbind = [\"127.0.0.1:0\"]\nbackend = \"moodle\"\nh2c = true\n\n\
         [[frontend]]\nname = \"plain\"\nbind = [\"127.0.0.1:0\"]\nbackend = \"moodle\"\n\n\
         [[backend]]\nname = \"moodle\"\n{backend_extra}\n[backend.cookie]\nname = \"SERVERID\"\n\n{servers}",
        cert = c.default.display(),
        log = log.display(),
    )
}

fn engine(
    o: &[Origin],
    driver: DriverChoice,
    backend_extra: &str,
) -> (Running, std::path::PathBuf) {
    require_tools();
    let dir = tmpdir("h2");
    let log = dir.join("access.log");
    (
        start(cfg_in(&dir, &text(o, backend_extra, &log), &[]), driver),
        log,
    )
}

fn h2_by_alpn_login_stays_on_its_node(driver: DriverChoice) {
    let o = origins(3);
    let (r, log) = engine(&o, driver, "");
    let a = r.addr("https");
    let ca = &certs().default;
    let jar = tmpdir("h2-jar").join("cookies");
    let jar = jar.to_str().unwrap();
    let res = curl(
        a,
        "localhost",
        ca,
        "/login/index.php",
        &["--http2", "-c", jar, "-b", jar],
    );
    assert_eq!(
        (res.status, res.http_version.as_str()),
        (200, "2"),
        "{}",
        res.verbose
    );
    assert!(
        res.verbose.contains("ALPN: server accepted h2"),
        "{}",
        res.verbose
    );
    let res = curl(
        a,
        "localhost",
        ca,
        "/login/index.php",
        &[
            "--http2",
            "-c",
            jar,
            "-b",
            jar,
            "-d",
            "username=alice&password=secret",
        ],
    );
    assert_eq!(res.status, 303, "{}", res.verbose);
    // The dashboard, five times over new connections: the same node every time.
    let mut nodes = Vec::new();
    for _ in 0..5 {
        let res = curl(
            a,
            "localhost",
            ca,
            "/my/",
            &["--http2", "-c", jar, "-b", jar],
        );
        assert_eq!(
            (res.status, res.http_version.as_str()),
            (200, "2"),
            "{}",
            res.body
        );
        let node = res
            .body
            .split(" on ")
            .nth(1)
            .unwrap_or("")
            .trim()
            .to_string();
        assert!(
            res.body.contains("Dashboard of alice"),
            "no login loop: {}",
            res.body
        );
        nodes.push(node);
    }
    nodes.dedup();
    assert_eq!(nodes.len(), 1, "one node: {nodes:?}");
    // Many streams on one connection (nghttp), every one answered.
    let out = Command::new("nghttp")
        .args(["-nv", "-m", "20"])
        .arg(format!("https://127.0.0.1:{}/", a.port()))
        .output()
        .expect("nghttp is needed (apt-get install nghttp2-client; tests/run.sh installs it)");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(said.matches(":status: 200").count(), 20, "{said}");
    // The log says HTTP/2.0, one line per stream.
    let lines = read_lines_until(&log, 27, Duration::from_secs(5));
    let h2: Vec<&String> = lines.iter().filter(|l| l.contains("HTTP/2.0\"")).collect();
    assert!(h2.len() >= 27, "{lines:#?}");
    // alpn = ["http/1.1"]: no HTTP/2 there.
    let res = curl(r.addr("h1"), "localhost", ca, "/", &["--http2"]);
    assert_eq!(
        (res.status, res.http_version.as_str()),
        (200, "1.1"),
        "{}",
        res.verbose
    );
    // The stats count HTTP/2 connections and streams.
    let v = r.stats().unwrap();
    wait_until(Duration::from_secs(5), "HTTP/2 counted", || {
        let v = r.stats().unwrap();
        v.http2.connections_total >= 8 && v.http2.streams_total >= 27
    });
    assert!(v.http2.connections <= v.http2.connections_total);
}

fn sha256_hex(b: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(b))
}

fn ten_mib_up_and_down_byte_exact(driver: DriverChoice) {
    let o = origins(1);
    let (r, _) = engine(&o, driver, "");
    let a = r.addr("https");
    let ca = &certs().default;
    let dir = tmpdir("h2-big");
    let size = 10 << 20;
    let body = tools::pattern(size);
    let up = dir.join("up.bin");
    std::fs::write(&up, &body).unwrap();
    // Upload: streamed to the server with its length (flow control both ways).
    let res = curl(
        a,
        "localhost",
        ca,
        "/upload",
        &["--http2", "--data-binary", &format!("@{}", up.display())],
    );
    assert_eq!(
        (res.status, res.http_version.as_str()),
        (200, "2"),
        "{}",
        res.verbose
    );
    assert_eq!(
        res.body.trim(),
        format!("len={size} sha256={}", sha256_hex(&body))
    );
    // Upload without a length: chunked to the server.
    let res = curl(
        a,
        "localhost",
        ca,
        "/upload",
        &[
            "--http2",
            "-H",
            "Transfer-Encoding:",
            "-H",
            "Content-Length:",
            "-T",
            up.to_str().unwrap(),
        ],
    );
    assert_eq!(res.status, 200, "{}", res.verbose);
    assert!(res.body.contains(&format!("len={size}")), "{}", res.body);
    // Downloads, each framing from the server.
    for mode in ["cl", "chunked", "close"] {
        let out = dir.join(format!("down-{mode}.bin"));
        let res = curl(
            a,
            "localhost",
            ca,
            &format!("/download?size={size}&mode={mode}"),
            &["--http2", "-o", out.to_str().unwrap()],
        );
        assert_eq!(
            (res.status, res.http_version.as_str()),
            (200, "2"),
            "{mode}: {}",
            res.verbose
        );
        let got = std::fs::read(&out).unwrap();
        assert_eq!(got.len(), size, "{mode}");
        assert!(got == body, "{mode}: byte-exact");
    }
}

fn waiting_room_over_h2(driver: DriverChoice) {
    let o = origins(1);
    // One slot on the only server and no queue past one: the third request waits in
    // the waiting room.
    let extra = "max_queue = 1\n";
    let text = text(&o, extra, Path::new("/dev/null")).replace(
        &format!("cookie = \"{}\"\n", o[0].name()),
        &format!("cookie = \"{}\"\nmaxconn = 1\n", o[0].name()),
    );
    let dir = tmpdir("h2-wait");
    let r = start(
        cfg_in(
            &dir,
            &text.replace("access = \"/dev/null\"", "access = \"off\""),
            &[],
        ),
        driver,
    );
    let a = r.addr("https");
    let ca = certs().default.clone();
    let slow: Vec<_> = (0..2)
        .map(|_| {
            let ca = ca.clone();
            std::thread::spawn(move || curl(a, "localhost", &ca, "/slow?ms=3000", &["--http2"]))
        })
        .collect();
    wait_until(Duration::from_secs(5), "one in flight, one queued", || {
        o[0].active() >= 1
    });
    wait_until(
        Duration::from_secs(5),
        "the second one in the queue",
        || {
            r.stats()
                .is_some_and(|v| v.backends.iter().any(|b| b.queued >= 1))
        },
    );
    let res = curl(a, "localhost", &ca, "/", &["--http2", "-i"]);
    assert_eq!(
        (res.status, res.http_version.as_str()),
        (503, "2"),
        "{}",
        res.body
    );
    assert!(
        res.body.to_ascii_lowercase().contains("retry-after"),
        "{}",
        res.body
    );
    for t in slow {
        assert_eq!(t.join().unwrap().status, 200);
    }
}

fn h2c_with_prior_knowledge_only_where_asked(driver: DriverChoice) {
    let o = origins(1);
    let (r, _) = engine(&o, driver, "");
    let url = |f: &str| format!("http://127.0.0.1:{}/login/index.php", r.addr(f).port());
    let run = |args: &[&str]| {
        let out = Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code} %{http_version}",
                "--max-time",
                "10",
            ])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(run(&["--http2-prior-knowledge", &url("h2c")]), "200 2");
    // HTTP/1.1 on the same frontend still works.
    assert_eq!(run(&[&url("h2c")]), "200 1.1");
    // Without h2c the preface is not HTTP/1.1: refused, nothing reaches the origin.
    let before = o[0].requests();
    assert_ne!(run(&["--http2-prior-knowledge", &url("plain")]), "200 2");
    assert_eq!(o[0].requests(), before);
}
