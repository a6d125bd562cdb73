//! The harness's own load: a constant-rate generator that measures each request's latency
//! from its intended send time (no coordinated omission), and the idle-connection test.

use crate::configs::Scenario;
use crate::procs::Proc;
use hdrhistogram::Histogram;
use serde::Serialize;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

#[derive(Serialize, Clone, Debug, Default)]
pub struct CrResult {
    pub target_rps: f64,
    pub achieved_rps: f64,
    pub connections: usize,
    pub duration_s: f64,
    pub requests: u64,
    pub errors: u64,
    /// intended sends that never went out before the deadline (the target was too slow)
    pub unsent: u64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
}

pub fn new_hist() -> Histogram<u64> {
    Histogram::<u64>::new_with_bounds(1, 120_000_000, 3).expect("histogram bounds")
}

pub fn request_bytes(s: &Scenario, host: &str) -> Vec<u8> {
    let mut r = format!("{} {} HTTP/1.1\r\nHost: {host}\r\n", s.method, s.path);
    if s.sticky {
        r.push_str("Cookie: SERVERID=s1\r\n");
    }
    if s.close {
        r.push_str("Connection: close\r\n");
    }
    if s.body_len > 0 {
        r.push_str(&format!(
            "Content-Type: application/octet-stream\r\nContent-Length: {}\r\n",
            s.body_len
        ));
    }
    r.push_str("\r\n");
    let mut b = r.into_bytes();
    b.extend(std::iter::repeat_n(b'x', s.body_len));
    b
}

fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "closed")
}

/// Reads more of the response into `into`; an error when the server closed.
fn read_more(s: &mut TcpStream, tmp: &mut [u8], into: &mut Vec<u8>) -> io::Result<()> {
    let n = s.read(tmp)?;
    if n == 0 {
        return Err(closed());
    }
    into.extend_from_slice(&tmp[..n]);
    Ok(())
}

/// What the response head says about the body and the connection.
struct Head {
    status: u16,
    keep: bool,
    clen: Option<usize>,
    chunked: bool,
}

fn parse_head(head: &[u8]) -> Head {
    let head = String::from_utf8_lossy(head).to_string();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|x| x.parse().ok())
        .unwrap_or(0);
    let mut h = Head {
        status,
        keep: status_line.starts_with("HTTP/1.1"),
        clen: None,
        chunked: false,
    };
    for l in lines {
        let Some((k, v)) = l.split_once(':') else {
            continue;
        };
        let v = v.trim();
        if k.eq_ignore_ascii_case("content-length") {
            h.clen = v.parse().ok();
        } else if k.eq_ignore_ascii_case("connection") {
            h.keep = !v.eq_ignore_ascii_case("close");
        } else if k.eq_ignore_ascii_case("transfer-encoding") {
            h.chunked = v.to_ascii_lowercase().contains("chunked");
        }
    }
    h
}

/// Reads and decodes a chunked body, `body` holding what came with the head, up to the
/// end of its trailers.
fn read_chunked(s: &mut TcpStream, tmp: &mut [u8], mut body: Vec<u8>) -> io::Result<()> {
    loop {
        // need a full size line
        let line_end = loop {
            if let Some(p) = body.windows(2).position(|w| w == b"\r\n") {
                break p;
            }
            read_more(s, tmp, &mut body)?;
        };
        let line = String::from_utf8_lossy(&body[..line_end]).to_string();
        let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| io::Error::other("bad chunk size"))?;
        let need = line_end + 2 + size + 2;
        if size == 0 {
            // trailers: read until an empty line
            loop {
                if body.len() >= line_end + 4
                    && body[line_end..].windows(4).any(|w| w == b"\r\n\r\n")
                {
                    return Ok(());
                }
                read_more(s, tmp, &mut body)?;
            }
        }
        while body.len() < need {
            read_more(s, tmp, &mut body)?;
        }
        body.drain(..need);
    }
}

/// Reads one response; returns (status, the server keeps the connection open).
pub fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<(u16, bool)> {
    buf.clear();
    let mut tmp = [0u8; 16384];
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        if buf.len() > 64 * 1024 {
            return Err(io::Error::other("response head too large"));
        }
        read_more(s, &mut tmp, buf)?;
    };
    let h = parse_head(&buf[..head_end]);
    if h.chunked {
        // keep the body in buf after the head and decode as it arrives
        read_chunked(s, &mut tmp, buf[head_end..].to_vec())?;
        return Ok((h.status, h.keep));
    }
    let mut keep = h.keep;
    let mut have = buf.len() - head_end;
    match h.clen {
        Some(len) => {
            while have < len {
                let n = s.read(&mut tmp)?;
                if n == 0 {
                    return Err(closed());
                }
                have += n;
            }
        }
        None => {
            // read until close
            while s.read(&mut tmp)? != 0 {}
            keep = false;
        }
    }
    Ok((h.status, keep))
}

fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    Ok(s)
}

/// `rate` requests/s over `conns` connections (one thread each, one request in flight per
/// connection), for `dur`. Each connection sends on a fixed schedule; a late response
/// delays the next send, and the delay counts in that request's latency.
pub fn constant_rate(
    addr: SocketAddr,
    req: &[u8],
    new_conn: bool,
    rate: f64,
    conns: usize,
    dur: Duration,
) -> CrResult {
    let conns = conns.max(1);
    let start = Instant::now() + Duration::from_millis(50);
    let plan = Schedule {
        addr,
        new_conn,
        conns,
        interval: Duration::from_secs_f64(conns as f64 / rate.max(1.0)),
        start,
        end: start + dur,
        grace: Duration::from_secs(3),
    };
    let handles: Vec<_> = (0..conns)
        .map(|i| {
            let req = req.to_vec();
            std::thread::spawn(move || plan.connection(i, &req))
        })
        .collect();
    let mut h = new_hist();
    let mut r = CrResult {
        target_rps: rate,
        connections: conns,
        duration_s: dur.as_secs_f64(),
        ..Default::default()
    };
    for t in handles {
        if let Ok(c) = t.join() {
            let _ = h.add(&c.hist);
            r.requests += c.done;
            r.errors += c.errors;
            r.unsent += c.unsent;
        }
    }
    r.achieved_rps = r.requests as f64 / dur.as_secs_f64();
    fill(&mut r, &h);
    r
}

/// The send schedule of a constant-rate run.
#[derive(Clone, Copy)]
struct Schedule {
    addr: SocketAddr,
    /// a new connection per request
    new_conn: bool,
    conns: usize,
    /// between two sends on one connection
    interval: Duration,
    start: Instant,
    end: Instant,
    /// how long past `end` answers are still waited for
    grace: Duration,
}

/// What one connection of a constant-rate run measured.
struct ConnResult {
    hist: Histogram<u64>,
    done: u64,
    errors: u64,
    unsent: u64,
}

impl Schedule {
    /// Connection `i` of the run: its sends offset by i/conns of the interval.
    fn connection(self, i: usize, req: &[u8]) -> ConnResult {
        let mut c = ConnResult {
            hist: new_hist(),
            done: 0,
            errors: 0,
            unsent: 0,
        };
        let mut stream: Option<TcpStream> = None;
        let mut buf = Vec::with_capacity(32 * 1024);
        let offset = self.interval.mul_f64(i as f64 / self.conns as f64);
        let mut k: u32 = 0;
        loop {
            let intended = self.start + offset + self.interval * k;
            if intended >= self.end {
                break;
            }
            let now = Instant::now();
            if now > self.end + self.grace {
                // the rest of the schedule never went out
                let left = (self.end - intended).as_secs_f64() / self.interval.as_secs_f64();
                c.unsent += left.ceil() as u64;
                break;
            }
            if now < intended {
                std::thread::sleep(intended - now);
            }
            k += 1;
            if stream.is_none() || self.new_conn {
                match connect(self.addr) {
                    Ok(s) => stream = Some(s),
                    Err(_) => {
                        c.errors += 1;
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                }
            }
            let s = stream.as_mut().expect("connected");
            match s.write_all(req).and_then(|_| read_response(s, &mut buf)) {
                Ok((status, keep)) => {
                    let lat = intended.elapsed().as_micros() as u64;
                    let _ = c.hist.record(lat.max(1));
                    if (200..400).contains(&status) {
                        c.done += 1;
                    } else {
                        c.errors += 1;
                    }
                    if !keep {
                        stream = None;
                    }
                }
                Err(_) => {
                    c.errors += 1;
                    stream = None;
                }
            }
        }
        c
    }
}

fn fill(r: &mut CrResult, h: &Histogram<u64>) {
    if h.is_empty() {
        return;
    }
    r.p50_us = h.value_at_quantile(0.50) as f64;
    r.p99_us = h.value_at_quantile(0.99) as f64;
    r.p999_us = h.value_at_quantile(0.999) as f64;
    r.max_us = h.max() as f64;
}

#[derive(Serialize, Clone, Debug, Default)]
pub struct IdleResult {
    pub clients_wanted: usize,
    pub clients_open: usize,
    pub open_errors: u64,
    pub open_seconds: f64,
    pub rss_before_kib: u64,
    pub rss_after_kib: u64,
    pub peak_rss_kib: u64,
    pub bytes_per_idle_conn: f64,
    /// RSS one second after the last client's answer (before the trickle).
    pub rss_1s_kib: u64,
    pub bytes_per_idle_conn_1s: f64,
    pub trickle: CrResult,
    pub cpu_seconds: f64,
    pub cpu_us_per_req: f64,
    /// connections the target had closed by the end
    pub closed_by_target: usize,
}

fn idle_connect(addr: SocketAddr, i: usize) -> io::Result<TcpStream> {
    use socket2::{Domain, Socket, Type};
    let sock = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    // several 127.0.0.x source addresses so the local port range is never the limit
    let one: libc::c_int = 1;
    // SAFETY: setting an integer socket option on our own socket.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            &one as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as u32,
        );
    }
    let src: SocketAddr = format!("127.0.0.{}:0", 2 + (i % 16)).parse().expect("addr");
    sock.bind(&src.into())?;
    sock.connect_timeout(&addr.into(), Duration::from_secs(2))?;
    let s: TcpStream = sock.into();
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    Ok(s)
}

/// How the idle clients arrive: `burst` at a time (1: one after another), each making one
/// request and then staying open.
pub struct Arrival {
    pub clients: usize,
    pub burst: usize,
}

/// Opens `n` keep-alive connections (one request each, so each is fully set up), then runs
/// a trickle of `rate` requests/s over them, spread round the whole set, for `trickle`.
/// Memory per idle connection is the growth of the target's RSS divided by `n`.
pub fn idle_test(
    addr: SocketAddr,
    proc: Option<&Proc>,
    arrival: Arrival,
    rate: f64,
    trickle: Duration,
    req: &[u8],
) -> IdleResult {
    let mut r = IdleResult {
        clients_wanted: arrival.clients,
        ..Default::default()
    };
    std::thread::sleep(Duration::from_millis(300));
    let rss = |p: Option<&Proc>| p.map(|p| p.rss_kib()).unwrap_or((0, 0));
    r.rss_before_kib = rss(proc).0;
    let t0 = Instant::now();
    let mut buf = Vec::with_capacity(16 * 1024);
    let mut conns = open_clients(addr, &arrival, req, &mut buf, &mut r.open_errors);
    r.open_seconds = t0.elapsed().as_secs_f64();
    r.clients_open = conns.len();
    std::thread::sleep(Duration::from_secs(1));
    r.rss_1s_kib = rss(proc).0;
    let cpu0 = proc.map(|p| p.cpu_seconds()).unwrap_or(0.0);
    let (tr, dead) = run_trickle(&mut conns, req, &mut buf, rate, trickle);
    let (after, hwm) = rss(proc);
    r.rss_after_kib = after;
    r.peak_rss_kib = hwm;
    r.cpu_seconds = proc.map(|p| p.cpu_seconds()).unwrap_or(0.0) - cpu0;
    if tr.requests > 0 {
        r.cpu_us_per_req = r.cpu_seconds * 1e6 / tr.requests as f64;
    }
    r.closed_by_target = closed_by_target(&conns, &dead);
    if r.clients_open > 0 {
        let per =
            |kib: u64| (kib as f64 - r.rss_before_kib as f64) * 1024.0 / r.clients_open as f64;
        r.bytes_per_idle_conn = per(r.rss_after_kib);
        r.bytes_per_idle_conn_1s = per(r.rss_1s_kib);
    }
    r.trickle = tr;
    drop(conns);
    std::thread::sleep(Duration::from_millis(300));
    r
}

/// The idle clients, each after its one answer; `open_errors` counts the ones that did
/// not make it. Gives up after 90 s or 200 errors.
fn open_clients(
    addr: SocketAddr,
    arrival: &Arrival,
    req: &[u8],
    buf: &mut Vec<u8>,
    open_errors: &mut u64,
) -> Vec<TcpStream> {
    let n = arrival.clients;
    let t0 = Instant::now();
    let open_limit = Duration::from_secs(90);
    let mut conns: Vec<TcpStream> = Vec::with_capacity(n);
    let burst = arrival.burst.max(1);
    let mut i = 0;
    while i < n {
        if t0.elapsed() > open_limit || *open_errors > 200 {
            break;
        }
        // A burst: every client of it connects and sends, then each reads its answer.
        let group: Vec<io::Result<TcpStream>> = (i..(i + burst).min(n))
            .map(|k| {
                idle_connect(addr, k).and_then(|mut s| {
                    s.write_all(req)?;
                    Ok(s)
                })
            })
            .collect();
        i += group.len();
        for s in group {
            let res = s.and_then(|mut s| {
                let (status, keep) = read_response(&mut s, buf)?;
                if !(200..400).contains(&status) || !keep {
                    return Err(io::Error::other(format!("status {status}, keep {keep}")));
                }
                Ok(s)
            });
            match res {
                Ok(s) => conns.push(s),
                Err(_) => *open_errors += 1,
            }
        }
    }
    conns
}

/// The trickle: one request at a time on a fixed schedule, over a stride of the clients.
/// Also returns which connections died (closed, or an error).
fn run_trickle(
    conns: &mut [TcpStream],
    req: &[u8],
    buf: &mut Vec<u8>,
    rate: f64,
    trickle: Duration,
) -> (CrResult, Vec<bool>) {
    let mut h = new_hist();
    let interval = Duration::from_secs_f64(1.0 / rate.max(1.0));
    let start = Instant::now();
    let end = start + trickle;
    let mut tr = CrResult {
        target_rps: rate,
        connections: conns.len(),
        duration_s: trickle.as_secs_f64(),
        ..Default::default()
    };
    let stride = 7919usize; // a prime: visits the whole set
    let mut idx = 0usize;
    let mut k: u32 = 0;
    let mut dead = vec![false; conns.len()];
    while !conns.is_empty() {
        let intended = start + interval * k;
        if intended >= end {
            break;
        }
        if Instant::now() > end + Duration::from_secs(3) {
            tr.unsent += ((end - intended).as_secs_f64() / interval.as_secs_f64()).ceil() as u64;
            break;
        }
        let now = Instant::now();
        if now < intended {
            std::thread::sleep(intended - now);
        }
        k += 1;
        idx = (idx + stride) % conns.len();
        if dead[idx] {
            tr.errors += 1;
            continue;
        }
        let s = &mut conns[idx];
        match s.write_all(req).and_then(|_| read_response(s, buf)) {
            Ok((status, keep)) => {
                let _ = h.record((intended.elapsed().as_micros() as u64).max(1));
                if (200..400).contains(&status) {
                    tr.requests += 1;
                } else {
                    tr.errors += 1;
                }
                if !keep {
                    dead[idx] = true;
                }
            }
            Err(_) => {
                tr.errors += 1;
                dead[idx] = true;
            }
        }
    }
    tr.achieved_rps = tr.requests as f64 / trickle.as_secs_f64();
    fill(&mut tr, &h);
    (tr, dead)
}

/// The connections the target closed while idle (a zero-byte peek sees EOF), the dead
/// ones included.
fn closed_by_target(conns: &[TcpStream], dead: &[bool]) -> usize {
    let mut closed = 0;
    for (i, s) in conns.iter().enumerate() {
        if dead[i] {
            closed += 1;
            continue;
        }
        let _ = s.set_nonblocking(true);
        let mut b = [0u8; 1];
        if let Ok(0) = s.peek(&mut b) {
            closed += 1;
        }
    }
    closed
}
