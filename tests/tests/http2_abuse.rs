//! The HTTP/2 protocol suite (issue 15), both drivers: tests/py/h2_abuse.py (PyPI's
//! `h2`, its validation off, with hand-encoded HEADERS where h2 would not send them)
//! sends each request HTTP/2 may not carry, and each flood. Every malformed request is
//! refused (a stream reset PROTOCOL_ERROR, or 400 for `:authority` and Host that differ;
//! fields with CR, LF, NUL or upper case fail the whole header block, which the `h2`
//! crate answers with GOAWAY PROTOCOL_ERROR) and nothing reaches the origin. Every flood
//! ends the connection with GOAWAY ENHANCE_YOUR_CALM; a stream whose window never opens
//! is reset (CANCEL) after `h2_stream_idle_timeout`. The engine serves on after all. A
//! reload and a graceful stop send GOAWAY (NO_ERROR) and let an open stream finish.

use std::process::Command;
use std::time::{Duration, Instant};

use engine_tests::*;

both_drivers!(
    malformed_requests_are_refused_and_reach_no_server,
    floods_end_the_connection,
    reload_and_stop_send_goaway_and_let_streams_finish,
);

const PROTOCOL_ERROR: u64 = 1;
const CANCEL: u64 = 8;
const ENHANCE_YOUR_CALM: u64 = 11;

fn require_h2() {
    let ok = Command::new("python3")
        .args(["-c", "import h2, hpack"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "Python's h2 is needed (python3 -m pip install h2; tests/run.sh installs it)"
    );
}

fn engine(o: &Origin, driver: DriverChoice) -> Running {
    let text = format!(
        "[log]\naccess = \"off\"\n[limits]\nh2_stream_idle_timeout = \"1s\"\n\
         [[frontend]]\nname = \"h2c\"\nbind = [\"127.0.0.1:0\"]\nbackend = \"b\"\nh2c = true\n\
         [[backend]]\nname = \"b\"\n[[backend.server]]\nname = \"s1\"\naddress = \"{}\"\n",
        o.addr()
    );
    start(cfg(&text, &[]), driver)
}

/// Runs one case; its outcome as JSON.
fn case(r: &Running, name: &str) -> serde_json::Value {
    let a = r.addr("h2c");
    let out = Command::new("python3")
        .arg(workspace().join("tests/py/h2_abuse.py"))
        .args([a.ip().to_string(), a.port().to_string(), name.to_string()])
        .output()
        .expect("run python3");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{name}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{name}: {e}: {text}"))
}

fn code(v: &serde_json::Value, k: &str) -> Option<u64> {
    v[k].as_u64()
}

fn serves(r: &Running) {
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{http_version}",
            "--http2-prior-knowledge",
        ])
        .arg(format!("http://127.0.0.1:{}/", r.addr("h2c").port()))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200 2");
}

fn malformed_requests_are_refused_and_reach_no_server(driver: DriverChoice) {
    require_h2();
    let o = origins(1);
    let r = engine(&o[0], driver);
    let cases: Vec<String> = serde_json::from_value(case(&r, "list")).unwrap();
    assert!(cases.len() >= 17, "{cases:?}");
    let before = o[0].requests();
    for name in &cases {
        let v = case(&r, name);
        let refused = match name.as_str() {
            "authority-host-differ" => v["status"] == 400,
            // A field no field may be: the header block itself fails (h2's connection
            // error), never a request.
            "cr-in-value" | "lf-in-value" | "nul-in-value" | "upper-case-name" => {
                code(&v, "goaway") == Some(PROTOCOL_ERROR)
                    || code(&v, "reset") == Some(PROTOCOL_ERROR)
            }
            _ => code(&v, "reset") == Some(PROTOCOL_ERROR),
        };
        assert!(refused, "{name}: {v}");
        assert_eq!(
            o[0].requests(),
            before,
            "{name}: nothing reaches the server"
        );
    }
    serves(&r);
}

fn floods_end_the_connection(driver: DriverChoice) {
    require_h2();
    let o = origins(1);
    let r = engine(&o[0], driver);
    for name in [
        "rapid-reset",
        "flood-ping",
        "flood-settings",
        "flood-empty-data",
        "flood-continuation",
    ] {
        let v = case(&r, name);
        assert_eq!(code(&v, "goaway"), Some(ENHANCE_YOUR_CALM), "{name}: {v}");
    }
    let t = Instant::now();
    let v = case(&r, "window-never-opens");
    assert_eq!(code(&v, "reset"), Some(CANCEL), "{v}");
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(8),
        "reset after {took:?}"
    );
    serves(&r);
}

/// Runs the GOAWAY case; `during` is called once the slow request has reached `o`.
fn goaway_case(r: &Running, o: &Origin, during: impl FnOnce()) -> serde_json::Value {
    use std::io::BufRead;
    let a = r.addr("h2c");
    let before = o.requests();
    let mut child = Command::new("python3")
        .arg(workspace().join("tests/py/h2_abuse.py"))
        .args([
            a.ip().to_string(),
            a.port().to_string(),
            "goaway-with-a-stream-open".into(),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run python3");
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "sent");
    wait_until(
        Duration::from_secs(5),
        "the request reaches the origin",
        || o.requests() > before,
    );
    during();
    line.clear();
    out.read_line(&mut line).unwrap();
    assert!(child.wait().unwrap().success());
    serde_json::from_str(line.trim()).unwrap_or_else(|e| panic!("{e}: {line}"))
}

fn reload_and_stop_send_goaway_and_let_streams_finish(driver: DriverChoice) {
    require_h2();
    let o = origins(1);
    let r = engine(&o[0], driver);
    let text = format!(
        "[log]\naccess = \"off\"\n[[frontend]]\nname = \"h2c\"\nbind = [\"127.0.0.1:{}\"]\nbackend = \"b\"\nh2c = true\n\
         [[backend]]\nname = \"b\"\n[[backend.server]]\nname = \"s1\"\naddress = \"{}\"\n",
        r.addr("h2c").port(),
        o[0].addr()
    );
    let v = goaway_case(&r, &o[0], || r.reload(cfg(&text, &[])).expect("reload"));
    assert_eq!(
        (v["status"].as_u64(), v["ended"].as_bool()),
        (Some(200), Some(true)),
        "{v}"
    );
    assert_eq!(
        code(&v, "goaway"),
        Some(0),
        "GOAWAY NO_ERROR at the reload: {v}"
    );
    serves(&r);
    let stop = r.stop_handle();
    let v = goaway_case(&r, &o[0], || stop.stop());
    assert_eq!(
        (v["status"].as_u64(), v["ended"].as_bool()),
        (Some(200), Some(true)),
        "{v}"
    );
    assert_eq!(
        code(&v, "goaway"),
        Some(0),
        "GOAWAY NO_ERROR at the stop: {v}"
    );
}
