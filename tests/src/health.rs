//! The check server of the health-check tests (tests/tests/health*.rs): a hand-written
//! origin that records every request head and answers `/health` in the [`Mode`] it is
//! set to; the config shape with a `[backend.check]` block; `show servers` read as
//! states and weights; requests counted by the server that answered.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::{Running, Web};

const NEEDLE: &str = "Moodle-OK";

/// What a [`CheckServer`] answers on `/health`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
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
pub struct Seen {
    /// When the head arrived.
    pub at: Instant,
    /// Its first line.
    pub request_line: String,
    /// The path of the request line.
    pub path: String,
    /// The header fields, names and values trimmed.
    pub headers: Vec<(String, String)>,
}

impl Seen {
    /// The value of header `n` (any case), if the head has it.
    pub fn header(&self, n: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.as_str())
    }
}

/// A hand-written origin that records every request head, answers `/health` according
/// to its [`Mode`] and everything else with `traffic` status and `X-Node: <name>`.
pub struct CheckServer {
    /// The name it answers with in `X-Node`.
    pub name: String,
    /// Where it listens.
    pub addr: SocketAddr,
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
    /// Starts one on a free loopback port, in [`Mode::Pass`], traffic answered 200.
    pub fn start(name: &str) -> CheckServer {
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

    /// How `/health` is answered from now on.
    pub fn set_mode(&self, m: Mode) {
        self.mode.store(m as u8, Ordering::SeqCst);
    }

    /// The status every other path is answered with from now on.
    pub fn set_traffic_status(&self, s: u16) {
        self.traffic.store(s, Ordering::SeqCst);
    }

    /// The `/health` request heads received so far, in order.
    pub fn probes(&self) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.path == "/health")
            .cloned()
            .collect()
    }

    /// How many `/health` requests it received.
    pub fn probe_count(&self) -> usize {
        self.probes().len()
    }

    /// How many requests for other paths (client traffic) it received.
    pub fn traffic_count(&self) -> usize {
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
pub fn web_text(servers: &[(&str, SocketAddr, &str)], backend_extra: &str) -> String {
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

/// A `[backend.check]` block: GET /health, Host moodle.test, 200 and the needle expected.
pub fn check_block(interval: &str, rise: u32, fall: u32, extra: &str) -> String {
    format!(
        "[backend.check]\nmethod = \"GET\"\nuri = \"/health\"\nhost = \"moodle.test\"\nexpect_status = \"200\"\nexpect_string = \"{NEEDLE}\"\ninterval = \"{interval}\"\nrise = {rise}\nfall = {fall}\ntimeout = \"500ms\"\n{extra}\n"
    )
}

/// `show servers` as name -> (state, weight).
pub fn servers(r: &Running) -> HashMap<String, (String, u32)> {
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

/// The state of `name` (`backend/server`) in `show servers`.
pub fn state(r: &Running, name: &str) -> String {
    servers(r)
        .get(name)
        .unwrap_or_else(|| panic!("{name} in show servers"))
        .0
        .clone()
}

/// `n` requests, each on a new connection (SO_REUSEPORT spreads them over the cores);
/// X-Node -> count. Every one must be answered with `want`.
pub fn spread(addr: SocketAddr, n: usize, want: u16) -> HashMap<String, u32> {
    let mut m = HashMap::new();
    for i in 0..n {
        let resp = tools::client::get(addr, "/").unwrap_or_else(|e| panic!("request {i}: {e}"));
        assert_eq!(resp.status, want, "request {i}: {}", resp.text());
        *m.entry(resp.header("x-node").unwrap_or("?").to_string())
            .or_insert(0) += 1;
    }
    m
}
