//! A load generator for the tests that prove nothing is lost (a reload, a takeover):
//! `conns` keep-alive connections, each on its own thread, sending `GET path` one after
//! the other until stopped (bounded by a deadline), reconnecting when the engine says
//! `Connection: close`. Every non-2xx answer and every socket error is kept with what
//! it was; so is the longest gap between two responses on one connection (a connection
//! lives on one core: that gap bounds how long its core paused). With `cookie`, each
//! connection keeps the persistence cookie it is given, as a browser would, and the
//! server (the origin's name in the page) that answered it each time.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tools::client::Conn;

/// What one connection saw.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    pub ok: u64,
    /// "status N from S" for every answer that was not 2xx.
    pub bad_status: Vec<String>,
    /// Socket errors: refused or reset connections, EOF before an answer, cut bodies.
    pub errors: Vec<String>,
    /// Connections opened (1 + reconnects after `Connection: close`).
    pub connects: u64,
    /// The longest gap between two responses on one connection, and when it ended.
    pub max_gap: Duration,
    pub max_gap_end: Option<Instant>,
    /// The servers that answered, in order, each with the count of answers in a row.
    pub servers: Vec<(String, u64)>,
    /// Every gap between two responses over [`GAP_KEPT`]: (when it ended, how long).
    pub gaps: Vec<(Instant, Duration)>,
}

/// Gaps between responses at least this long are kept (with when they ended).
pub const GAP_KEPT: Duration = Duration::from_millis(2);

/// All connections together.
#[derive(Debug, Default)]
pub struct Report {
    pub ok: u64,
    pub bad_status: Vec<String>,
    pub errors: Vec<String>,
    pub connects: u64,
    pub max_gap: Duration,
    pub max_gap_end: Option<Instant>,
    pub per_conn: Vec<Tally>,
}

/// The longest gaps near some moments and away from them.
#[derive(Debug, Clone, Copy)]
pub struct Gaps {
    /// The longest gap on one connection overlapping a window after one of the moments.
    pub near: Duration,
    /// The longest elsewhere.
    pub elsewhere: Duration,
}

impl Report {
    /// The longest gap between two responses on one connection that overlaps
    /// `[t, t + window]` for one of `moments`, and the longest that overlaps none.
    pub fn gaps_near(&self, moments: &[Instant], window: Duration) -> Gaps {
        let mut g = Gaps {
            near: Duration::ZERO,
            elsewhere: Duration::ZERO,
        };
        for (end, len) in self.per_conn.iter().flat_map(|t| t.gaps.iter()) {
            let start = *end - *len;
            let near = moments.iter().any(|&m| start <= m + window && *end >= m);
            let slot = if near { &mut g.near } else { &mut g.elsewhere };
            *slot = (*slot).max(*len);
        }
        g
    }

    /// A one-line summary for the test's output.
    pub fn summary(&self) -> String {
        format!(
            "{} answers 2xx, {} not 2xx, {} socket errors, {} connections, longest gap between two responses on one connection {:.1} ms",
            self.ok,
            self.bad_status.len(),
            self.errors.len(),
            self.connects,
            self.max_gap.as_secs_f64() * 1000.0
        )
    }
}

/// Running load.
pub struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Tally>>,
}

/// How to load.
#[derive(Clone)]
pub struct Spec {
    pub addr: SocketAddr,
    pub conns: usize,
    pub path: String,
    /// The persistence cookie's name, to keep and send back.
    pub cookie: Option<String>,
    /// The longest the load may run (a bound, should the test never stop it).
    pub limit: Duration,
}

impl Load {
    pub fn start(spec: Spec) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..spec.conns)
            .map(|_| {
                let (spec, stop) = (spec.clone(), stop.clone());
                std::thread::spawn(move || one_connection(&spec, &stop))
            })
            .collect();
        Load { stop, threads }
    }

    /// Stops every connection after its current request; the report.
    pub fn stop(self) -> Report {
        self.stop.store(true, Ordering::Relaxed);
        let mut r = Report::default();
        for t in self.threads {
            let t = t.join().expect("a load thread panicked");
            r.ok += t.ok;
            r.bad_status.extend(t.bad_status.iter().cloned());
            r.errors.extend(t.errors.iter().cloned());
            r.connects += t.connects;
            if t.max_gap > r.max_gap {
                r.max_gap = t.max_gap;
                r.max_gap_end = t.max_gap_end;
            }
            r.per_conn.push(t);
        }
        r
    }
}

/// The origin's name in its home page ("Moodle-like origin NAME</h1>").
pub fn served_by(body: &str) -> Option<String> {
    let start = body.find("Moodle-like origin ")? + "Moodle-like origin ".len();
    let end = body[start..].find("</h1>")? + start;
    Some(body[start..end].to_string())
}

fn one_connection(spec: &Spec, stop: &AtomicBool) -> Tally {
    let deadline = Instant::now() + spec.limit;
    let mut t = Tally::default();
    let mut conn: Option<Conn> = None;
    let mut jar: Option<String> = None;
    let mut last = Instant::now();
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match Conn::connect(spec.addr) {
                Ok(c) => {
                    t.connects += 1;
                    conn.insert(c)
                }
                Err(e) => {
                    t.errors.push(format!("connect: {e}"));
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            },
        };
        let cookie = jar
            .as_ref()
            .map(|v| format!("{}={v}", spec.cookie.as_deref().unwrap_or("")));
        let headers: Vec<(&str, &str)> = cookie.iter().map(|c| ("Cookie", c.as_str())).collect();
        let resp = match c.request("GET", &spec.path, &headers, b"") {
            Ok(r) => r,
            Err(e) => {
                t.errors
                    .push(format!("request on connection {}: {e}", t.connects));
                conn = None;
                continue;
            }
        };
        let now = Instant::now();
        let gap = now - last;
        last = now;
        if t.ok > 0 {
            if gap > t.max_gap {
                t.max_gap = gap;
                t.max_gap_end = Some(now);
            }
            if gap >= GAP_KEPT {
                t.gaps.push((now, gap));
            }
        }
        let server = served_by(&resp.text()).unwrap_or_else(|| "?".into());
        if !resp.complete {
            t.errors.push(format!("body cut short from {server}"));
            conn = None;
            continue;
        }
        if !(200..300).contains(&resp.status) {
            t.bad_status
                .push(format!("status {} from {server}", resp.status));
        } else {
            t.ok += 1;
        }
        match t.servers.last_mut() {
            Some((s, n)) if *s == server => *n += 1,
            _ => t.servers.push((server, 1)),
        }
        if let Some(name) = &spec.cookie {
            if let Some(v) = set_cookie_value(&resp, name) {
                jar = Some(v);
            }
        }
        let close = resp
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        if close {
            conn = None;
        }
    }
    t
}

fn set_cookie_value(resp: &tools::client::Response, name: &str) -> Option<String> {
    resp.headers_all("set-cookie").iter().find_map(|h| {
        let first = h.split(';').next()?;
        let (k, v) = first.split_once('=')?;
        (k.trim() == name).then(|| v.trim().to_string())
    })
}
