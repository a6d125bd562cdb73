//! Health checks (issue 5, points 1 and 2): one health-check thread probes every server at
//! `interval` with the configured HTTP/1.1 request; DOWN after `fall` failures (status,
//! missing string), UP after `rise` passes (the string found across reads, through
//! chunked encoding, far into the body); faster probes while a server changes state;
//! exactly one probe per server per interval whatever the number of cores; each change
//! logged once with its reason (binary); passive observation of 5xx bursts and connect
//! failures; slowstart.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use engine_tests::*;

both_drivers!(
    fall_and_rise_route_traffic,
    expect_string_across_reads_and_chunks,
    passive_5xx_burst_takes_server_down,
    passive_connect_failures_take_server_down,
);

const NEEDLE: &str = "Moodle-OK";

/// What a [`CheckServer`] answers on `/health`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Mode {
    /// 200, Content-Length, the needle in the body.
    Pass = 0,
    /// 200, chunked, the needle split over three chunks sent in separate writes.
    PassChunkedSplit = 1,
    /// 200, Content-Length, 200 KB of filler before the needle, sent in pieces.
    PassLate = 2,
    /// 503 with the needle in the body: the status alone fails it.
    Fail503 = 3,
    /// 200 without the needle.
    NoString = 4,
    /// Reads the request and never answers.
    Stall = 5,
}

impl Mode {
    fn from_u8(v: u8) -> Mode {
        match v {
            1 => Mode::PassChunkedSplit,
            2 => Mode::PassLate,
            3 => Mode::Fail503,
            4 => Mode::NoString,
            5 => Mode::Stall,
            _ => Mode::Pass,
        }
    }
}

/// One request head a [`CheckServer`] received.
#[derive(Debug, Clone)]
struct Seen {
    at: Instant,
    request_line: String,
    path: String,
    headers: Vec<(String, String)>,
}

impl Seen {
    fn header(&self, n: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.as_str())
    }
}

/// A hand-written origin that records every request head, answers `/health` according
/// to its [`Mode`] and everything else with `traffic` status and `X-Node: <name>`.
struct CheckServer {
    name: String,
    addr: SocketAddr,
    mode: Arc<AtomicU8>,
    traffic: Arc<AtomicU16>,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
}

impl Drop for CheckServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

impl CheckServer {
    fn start(name: &str) -> CheckServer {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind check server");
        let addr = l.local_addr().unwrap();
        let s = CheckServer {
            name: name.to_string(),
            addr,
            mode: Arc::new(AtomicU8::new(Mode::Pass as u8)),
            traffic: Arc::new(AtomicU16::new(200)),
            seen: Arc::new(Mutex::new(Vec::new())),
            stop: Arc::new(AtomicBool::new(false)),
        };
        let (mode, traffic, seen, stop, name) = (
            s.mode.clone(),
            s.traffic.clone(),
            s.seen.clone(),
            s.stop.clone(),
            s.name.clone(),
        );
        std::thread::spawn(move || {
            for c in l.incoming() {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(c) = c else { continue };
                let (mode, traffic, seen, stop, name) = (
                    mode.clone(),
                    traffic.clone(),
                    seen.clone(),
                    stop.clone(),
                    name.clone(),
                );
                std::thread::spawn(move || serve(c, &name, &mode, &traffic, &seen, &stop));
            }
        });
        s
    }

    fn set_mode(&self, m: Mode) {
        self.mode.store(m as u8, Ordering::SeqCst);
    }

    fn set_traffic_status(&self, s: u16) {
        self.traffic.store(s, Ordering::SeqCst);
    }

    fn probes(&self) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.path == "/health")
            .cloned()
            .collect()
    }

    fn probe_count(&self) -> usize {
        self.probes().len()
    }

    fn traffic_count(&self) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.path != "/health")
            .count()
    }
}

fn serve(
    mut c: TcpStream,
    name: &str,
    mode: &AtomicU8,
    traffic: &AtomicU16,
    seen: &Mutex<Vec<Seen>>,
    stop: &AtomicBool,
) {
    c.set_read_timeout(Some(Duration::from_secs(20))).ok();
    c.set_nodelay(true).ok();
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let end = loop {
            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            let mut b = [0u8; 4096];
            match c.read(&mut b) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&b[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        buf.drain(..end);
        let mut lines = head.split("\r\n");
        let request_line = lines.next().unwrap_or("").to_string();
        let path = request_line.split(' ').nth(1).unwrap_or("").to_string();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| {
                l.split_once(':')
                    .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            })
            .collect();
        // Record and read the mode together, so a count taken after set_mode only holds
        // heads answered in the new mode.
        let m = {
            let mut s = seen.lock().unwrap();
            s.push(Seen {
                at: Instant::now(),
                request_line,
                path: path.clone(),
                headers,
            });
            Mode::from_u8(mode.load(Ordering::SeqCst))
        };
        if path != "/health" {
            let st = traffic.load(Ordering::SeqCst);
            let body = format!("node {name}\n");
            let resp = format!(
                "HTTP/1.1 {st} X\r\nX-Node: {name}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            if c.write_all(resp.as_bytes()).is_err() {
                return;
            }
            continue;
        }
        let _ = answer_check(&mut c, name, m, stop);
        return;
    }
}

/// Head and body in one write (one segment), as most servers send a small answer.
fn one_write(c: &mut TcpStream, status: u16, reason: &str, body: &str) -> std::io::Result<()> {
    let all = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    c.write_all(all.as_bytes())
}

fn answer_check(c: &mut TcpStream, name: &str, m: Mode, stop: &AtomicBool) -> std::io::Result<()> {
    // Kept: the server's own pacing, so that each part goes out in a segment of its own.
    let pause = || std::thread::sleep(Duration::from_millis(25));
    match m {
        Mode::Pass => {
            let body = format!("OK {NEEDLE} {name}\n");
            one_write(c, 200, "OK", &body)?;
        }
        Mode::PassChunkedSplit => {
            c.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")?;
            c.flush()?;
            pause();
            // "Moodle-OK" as "xx Moo" | "dle-" | "OK yy", each chunk its own write.
            for part in ["xx Moo", "dle-", "OK yy\n"] {
                write!(c, "{:x}\r\n{part}\r\n", part.len())?;
                c.flush()?;
                pause();
            }
            c.write_all(b"0\r\n\r\n")?;
        }
        Mode::PassLate => {
            let filler = vec![b'x'; 200 * 1024];
            let tail = format!(" {NEEDLE}\n");
            write!(
                c,
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                filler.len() + tail.len()
            )?;
            for piece in filler.chunks(32 * 1024) {
                c.write_all(piece)?;
                c.flush()?;
            }
            pause();
            c.write_all(tail.as_bytes())?;
        }
        Mode::Fail503 => {
            let body = format!("maintenance {NEEDLE} {name}\n");
            one_write(c, 503, "Service Unavailable", &body)?;
        }
        Mode::NoString => {
            let body = format!("OK but not the marker {name}\n");
            one_write(c, 200, "OK", &body)?;
        }
        Mode::Stall => {
            let until = Instant::now() + Duration::from_secs(10);
            while Instant::now() < until && !stop.load(Ordering::SeqCst) {
                // Kept: the subject, a server that never answers (until stopped).
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    c.flush()
}

/// The usual config shape over hand-written servers.
fn web_text(servers: &[(&str, SocketAddr, &str)], backend_extra: &str) -> String {
    Web {
        defaults: "",
        frontend_extra: "",
        backend_extra,
        tail: "",
        servers: servers
            .iter()
            .map(|(n, a, e)| (n.to_string(), *a, e.to_string()))
            .collect(),
    }
    .text()
}

fn check_block(interval: &str, rise: u32, fall: u32, extra: &str) -> String {
    format!(
        "[backend.check]\nmethod = \"GET\"\nuri = \"/health\"\nhost = \"moodle.test\"\nexpect_status = \"200\"\nexpect_string = \"{NEEDLE}\"\ninterval = \"{interval}\"\nrise = {rise}\nfall = {fall}\ntimeout = \"500ms\"\n{extra}\n"
    )
}

/// `show servers` as name -> (state, weight).
fn servers(r: &Running) -> HashMap<String, (String, u32)> {
    let ans = r.admin("show servers");
    assert!(
        ans.starts_with("# "),
        "show servers answers its header line (an error here means the health-check thread no longer answers): {ans:?}"
    );
    ans.lines()
        .skip(1)
        .filter(|l| !l.is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(f.len(), 8, "show servers line: {l:?}");
            (
                f[0].to_string(),
                (f[2].to_string(), f[3].parse().expect("weight")),
            )
        })
        .collect()
}

fn state(r: &Running, name: &str) -> String {
    servers(r)
        .get(name)
        .unwrap_or_else(|| panic!("{name} in show servers"))
        .0
        .clone()
}

/// `n` requests, each on a new connection (SO_REUSEPORT spreads them over the cores);
/// X-Node -> count. Every one must be answered with `want`.
fn spread(addr: SocketAddr, n: usize, want: u16) -> HashMap<String, u32> {
    let mut m = HashMap::new();
    for i in 0..n {
        let resp = tools::client::get(addr, "/").unwrap_or_else(|e| panic!("request {i}: {e}"));
        assert_eq!(resp.status, want, "request {i}: {}", resp.text());
        *m.entry(resp.header("x-node").unwrap_or("?").to_string())
            .or_insert(0) += 1;
    }
    m
}

fn fall_and_rise_route_traffic(driver: DriverChoice) {
    let a = CheckServer::start("a");
    let b = CheckServer::start("b");
    let text = web_text(
        &[("a", a.addr, ""), ("b", b.addr, "")],
        &check_block("200ms", 2, 2, ""),
    );
    let r = start(cfg(&text, &[]), driver);
    let addr = r.addr("web");

    // The probe: the configured method, uri and Host, HTTP/1.1.
    wait_until(Duration::from_secs(5), "two probes of each server", || {
        a.probe_count() >= 2 && b.probe_count() >= 2
    });
    let p = &a.probes()[0];
    assert_eq!(p.request_line, "GET /health HTTP/1.1", "{p:?}");
    assert_eq!(p.header("host"), Some("moodle.test"), "{p:?}");
    assert_eq!(state(&r, "app/a"), "UP");
    let m = spread(addr, 40, 200);
    assert!(m.get("a").copied().unwrap_or(0) >= 10, "a serves: {m:?}");

    // 503 (with the string in the body): DOWN after `fall` failed probes, no traffic.
    let before = a.probe_count();
    a.set_mode(Mode::Fail503);
    wait_until(Duration::from_secs(5), "a DOWN after 503s", || {
        state(&r, "app/a") == "DOWN"
    });
    let n = a.probe_count() - before;
    assert!(
        (2..=3).contains(&n),
        "DOWN after fall = 2 failed probes, seen after {n}"
    );
    assert_eq!(state(&r, "app/b"), "UP");
    let m = spread(addr, 100, 200);
    assert_eq!(m.get("b").copied(), Some(100), "a is DOWN: {m:?}");

    // Plain passes: UP after `rise`.
    let before = a.probe_count();
    a.set_mode(Mode::Pass);
    wait_until(Duration::from_secs(5), "a UP after passes", || {
        state(&r, "app/a") == "UP"
    });
    let n = a.probe_count() - before;
    assert!(
        (2..=3).contains(&n),
        "UP after rise = 2 passed probes, seen after {n}"
    );
    let m = spread(addr, 40, 200);
    assert!(m.get("a").copied().unwrap_or(0) >= 10, "a is back: {m:?}");
    assert_eq!(state(&r, "app/b"), "UP");
}

/// `expect_string` is searched across reads: through chunked encoding with the string
/// split over chunks sent apart, and 200 KB into a body, not in a fixed window; a 200
/// without it fails.
fn expect_string_across_reads_and_chunks(driver: DriverChoice) {
    let a = CheckServer::start("a");
    let b = CheckServer::start("b");
    let text = web_text(
        &[("a", a.addr, ""), ("b", b.addr, "")],
        &check_block("200ms", 2, 2, ""),
    );
    let r = start(cfg(&text, &[]), driver);
    let addr = r.addr("web");

    // 200 without the string: a failure.
    a.set_mode(Mode::NoString);
    wait_until(Duration::from_secs(5), "a DOWN, string missing", || {
        state(&r, "app/a") == "DOWN"
    });
    let m = spread(addr, 40, 200);
    assert_eq!(m.get("b").copied(), Some(40), "a is DOWN: {m:?}");

    // Passes whose string is split over chunks sent in separate writes: UP after `rise`.
    let before = a.probe_count();
    a.set_mode(Mode::PassChunkedSplit);
    wait_until(
        Duration::from_secs(5),
        "a UP after chunked passes with the string split over chunks",
        || state(&r, "app/a") == "UP",
    );
    let n = a.probe_count() - before;
    assert!(
        (2..=3).contains(&n),
        "UP after rise = 2 passed probes, seen after {n}"
    );
    let m = spread(addr, 40, 200);
    assert!(m.get("a").copied().unwrap_or(0) >= 10, "a is back: {m:?}");

    a.set_mode(Mode::NoString);
    wait_until(Duration::from_secs(5), "a DOWN, string missing", || {
        state(&r, "app/a") == "DOWN"
    });

    // The string 200 KB into the body: a pass.
    a.set_mode(Mode::PassLate);
    wait_until(
        Duration::from_secs(5),
        "a UP with the string 200 KB into the body",
        || state(&r, "app/a") == "UP",
    );
    let m = spread(addr, 40, 200);
    assert!(m.get("a").copied().unwrap_or(0) >= 10, "a is back: {m:?}");
    assert_eq!(state(&r, "app/b"), "UP");
}

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

/// A burst of 5xx responses takes a server DOWN long before its next probe (interval
/// 60 s: the first probe is seconds away); below `observe_errors` it stays UP.
fn passive_5xx_burst_takes_server_down(driver: DriverChoice) {
    let a = CheckServer::start("a");
    let b = CheckServer::start("b");
    a.set_traffic_status(500);
    let text = web_text(
        &[("a", a.addr, ""), ("b", b.addr, "")],
        &check_block("60s", 2, 3, "observe_errors = 5"),
    );
    let r = start(cfg(&text, &[]), driver);
    let addr = r.addr("web");
    // Four 5xx: below the threshold.
    let mut sent = 0;
    while a.traffic_count() < 4 {
        let _ = tools::client::get(addr, "/").expect("request");
        sent += 1;
        assert!(sent < 100, "a never got traffic");
    }
    // Kept: nothing is to happen here; a moment for a wrong passive DOWN to show.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(state(&r, "app/a"), "UP", "4 of observe_errors = 5");
    // The fifth.
    while a.traffic_count() < 5 {
        let _ = tools::client::get(addr, "/").expect("request");
        sent += 1;
        assert!(sent < 200, "a never got its fifth request");
    }
    wait_until(
        Duration::from_secs(2),
        "a DOWN after 5 responses 5xx",
        || state(&r, "app/a") == "DOWN",
    );
    assert_eq!(
        a.probe_count(),
        0,
        "DOWN from passive observation, before any probe"
    );
    let before = a.traffic_count();
    let m = spread(addr, 40, 200);
    assert_eq!(m.get("b").copied(), Some(40), "{m:?}");
    assert_eq!(a.traffic_count(), before, "no traffic to a once DOWN");
    assert_eq!(state(&r, "app/b"), "UP");
}

fn passive_connect_failures_take_server_down(driver: DriverChoice) {
    let a = Origin::start("a").unwrap();
    let b = CheckServer::start("b");
    a.set_fault(Fault::Refuse);
    let text = web_text(
        &[("a", a.addr(), ""), ("b", b.addr, "")],
        &check_block("60s", 2, 3, "observe_errors = 2"),
    );
    let r = start(cfg(&text, &[]), driver);
    let addr = r.addr("web");
    // The cores retry elsewhere; each reports its failed connects.
    let mut sent = 0;
    let ok = poll_for(Duration::from_secs(7), || {
        let resp = tools::client::get(addr, "/").expect("request");
        assert_eq!(resp.status, 200, "retried on b");
        sent += 1;
        state(&r, "app/a") == "DOWN"
    });
    assert!(
        ok,
        "a DOWN from connect failures (observe_errors = 2) within 7s, {sent} requests sent; fall = 3 probes at 60s could not do it"
    );
    assert_eq!(state(&r, "app/b"), "UP");
}

#[test]
fn observe_errors_zero_turns_passive_off() {
    let a = CheckServer::start("a");
    let b = CheckServer::start("b");
    a.set_traffic_status(500);
    let text = web_text(
        &[("a", a.addr, ""), ("b", b.addr, "")],
        &check_block("60s", 2, 3, "observe_errors = 0"),
    );
    let r = start(cfg(&text, &[]), DriverChoice::Auto);
    let addr = r.addr("web");
    let mut sent = 0;
    while a.traffic_count() < 20 {
        let _ = tools::client::get(addr, "/").expect("request");
        sent += 1;
        assert!(sent < 200);
    }
    // Kept: nothing is to happen here; a moment for a wrong passive DOWN to show.
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(
        state(&r, "app/a"),
        "UP",
        "observe_errors = 0: no passive DOWN"
    );
    let before = a.traffic_count();
    for _ in 0..20 {
        let _ = tools::client::get(addr, "/").expect("request");
    }
    assert!(
        a.traffic_count() >= before + 5,
        "a stays in rotation: {} more requests of 20",
        a.traffic_count() - before
    );
}

#[test]
fn slowstart_ramps_a_returning_server() {
    let a = CheckServer::start("a");
    let b = CheckServer::start("b");
    let text = web_text(
        &[("a", a.addr, "weight = 100"), ("b", b.addr, "weight = 100")],
        &check_block("200ms", 2, 2, "slowstart = \"2s\""),
    );
    let r = start(cfg(&text, &[]), DriverChoice::Auto);
    wait_until(Duration::from_secs(3), "first probes", || {
        a.probe_count() >= 2
    });
    assert_eq!(servers(&r)["app/a"], ("UP".to_string(), 100));
    a.set_mode(Mode::Fail503);
    wait_until(Duration::from_secs(5), "a DOWN", || {
        state(&r, "app/a") == "DOWN"
    });
    a.set_mode(Mode::Pass);
    wait_until(Duration::from_secs(5), "a UP", || {
        state(&r, "app/a") == "UP"
    });
    let up_at = Instant::now();
    let mut samples = Vec::new();
    while up_at.elapsed() < Duration::from_millis(2800) {
        let (st, w) = servers(&r)["app/a"].clone();
        assert_eq!(st, "UP");
        samples.push((up_at.elapsed().as_millis(), w));
        // Kept: the sampling pace of the weight over slowstart.
        std::thread::sleep(Duration::from_millis(100));
    }
    let first = samples[0].1;
    assert!(
        first <= 40,
        "just back UP with slowstart 2s: weight {first}, not 100: {samples:?}"
    );
    assert!(
        samples.windows(2).all(|w| w[0].1 <= w[1].1),
        "the weight only grows: {samples:?}"
    );
    assert!(
        samples.iter().any(|(_, w)| (30..=90).contains(w)),
        "a ramp, not a jump: {samples:?}"
    );
    assert_eq!(
        samples.last().unwrap().1,
        100,
        "full weight after slowstart: {samples:?}"
    );
    // b was never down: full weight throughout.
    assert_eq!(servers(&r)["app/b"], ("UP".to_string(), 100));
}
