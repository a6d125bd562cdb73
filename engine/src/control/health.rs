//! One HTTP/1.1 health probe, and the rise/fall state machine. Probes run as tasks of
//! the health-check thread's own runtime (see [`crate::control`]), never on a core.

use std::net::SocketAddr;
use std::time::Duration;

use config::Check;
use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;

use crate::http::chunked::ChunkedDecoder;
use crate::http::head::{parse_response, BodyLen, HeadLimits, ResponseHead};

/// Why a probe failed, as the log and the stats page name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeFail {
    Timeout,
    Refused,
    Connect(String),
    Status(u16),
    StringMissing,
    BadResponse,
}

impl std::fmt::Display for ProbeFail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProbeFail::Timeout => write!(f, "timeout"),
            ProbeFail::Refused => write!(f, "connection refused"),
            ProbeFail::Connect(e) => write!(f, "connect: {e}"),
            ProbeFail::Status(s) => write!(f, "status {s}"),
            ProbeFail::StringMissing => write!(f, "string missing"),
            ProbeFail::BadResponse => write!(f, "malformed response"),
        }
    }
}

/// The probe request: `METHOD uri HTTP/1.1`, Host (`host`, else the server's address).
pub fn request_bytes(check: &Check, addr: SocketAddr) -> Vec<u8> {
    let host = check.host.clone().unwrap_or_else(|| addr.to_string());
    format!(
        "{} {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: engine-health-check\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        check.method, check.uri, host
    )
    .into_bytes()
}

/// Searches for `needle` across reads: keeps only the tail that could start a match.
#[derive(Debug, Default)]
pub struct Finder {
    tail: Vec<u8>,
    found: bool,
}

impl Finder {
    pub fn feed(&mut self, needle: &[u8], data: &[u8]) {
        if self.found || needle.is_empty() {
            self.found = true;
            return;
        }
        self.tail.extend_from_slice(data);
        if self.tail.windows(needle.len()).any(|w| w == needle) {
            self.found = true;
            self.tail.clear();
            return;
        }
        let keep = needle.len().saturating_sub(1).min(self.tail.len());
        let cut = self.tail.len() - keep;
        self.tail.drain(..cut);
    }
    pub fn found(&self) -> bool {
        self.found
    }
}

const PROBE_BODY_LIMIT: u64 = 4 << 20;

/// Runs one probe within `check.timeout`.
pub async fn probe(addr: SocketAddr, check: &Check) -> Result<u16, ProbeFail> {
    match monoio::time::timeout(check.timeout, probe_inner(addr, check)).await {
        Ok(r) => r,
        Err(_) => Err(ProbeFail::Timeout),
    }
}

async fn probe_inner(addr: SocketAddr, check: &Check) -> Result<u16, ProbeFail> {
    let mut s = TcpStream::connect_addr(addr).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::ConnectionRefused {
            ProbeFail::Refused
        } else {
            ProbeFail::Connect(e.to_string())
        }
    })?;
    let _ = s.set_nodelay(true);
    let (r, _) = s.write_all(request_bytes(check, addr)).await;
    r.map_err(|e| ProbeFail::Connect(e.to_string()))?;
    let (head, buf) = read_head(&mut s, check.method == "HEAD").await?;
    let status = head.status;
    if !check.expect_status.contains(status) {
        return Err(ProbeFail::Status(status));
    }
    let Some(needle) = check.expect_string.as_ref() else {
        return Ok(status);
    };
    let rest = buf[head.head_len..].to_vec();
    search_body(&mut s, &head, rest, needle.as_bytes()).await?;
    Ok(status)
}

/// The response head (interim ones skipped), and the buffer it was read into.
async fn read_head(
    s: &mut TcpStream,
    head_request: bool,
) -> Result<(ResponseHead, Vec<u8>), ProbeFail> {
    let limits = HeadLimits {
        max_head_bytes: 64 * 1024,
        max_target_bytes: 8192,
        max_headers: 200,
    };
    let mut buf: Vec<u8> = Vec::with_capacity(16 * 1024);
    loop {
        if let Some(h) =
            parse_response(&buf, head_request, &limits).map_err(|_| ProbeFail::BadResponse)?
        {
            if (100..200).contains(&h.status) {
                buf.drain(..h.head_len);
                continue;
            }
            return Ok((h, buf));
        }
        if buf.len() >= limits.max_head_bytes {
            return Err(ProbeFail::BadResponse);
        }
        if buf.len() == buf.capacity() {
            buf.reserve(16 * 1024);
        }
        let len = buf.len();
        let (r, b) = s.read(buf.slice_mut(len..)).await;
        buf = b.into_inner();
        match r {
            Ok(0) | Err(_) => return Err(ProbeFail::BadResponse),
            Ok(_) => {}
        }
    }
}

/// Where a body search stands.
struct Search<'a> {
    needle: &'a [u8],
    finder: Finder,
    dec: ChunkedDecoder,
    remaining: Option<u64>,
    seen: u64,
}

impl Search<'_> {
    /// Feeds what arrived, through the body's framing.
    fn feed(&mut self, body: BodyLen, rest: &[u8]) -> Result<(), ProbeFail> {
        match body {
            BodyLen::Chunked => {
                let mut pos = 0;
                while pos < rest.len() {
                    let st = self
                        .dec
                        .step(&rest[pos..])
                        .map_err(|_| ProbeFail::BadResponse)?;
                    self.finder.feed(self.needle, &rest[pos..][st.data.clone()]);
                    pos += st.consumed;
                    if st.done || st.consumed == 0 {
                        break;
                    }
                }
            }
            BodyLen::Length(_) => {
                let take = (rest.len() as u64).min(self.remaining.unwrap_or(0)) as usize;
                self.finder.feed(self.needle, &rest[..take]);
                self.remaining = self.remaining.map(|r| r - take as u64);
            }
            _ => self.finder.feed(self.needle, rest),
        }
        self.seen += rest.len() as u64;
        Ok(())
    }

    fn ended(&self, body: BodyLen) -> bool {
        match body {
            BodyLen::None => true,
            BodyLen::Length(_) => self.remaining == Some(0),
            BodyLen::Chunked => self.dec.is_done(),
            BodyLen::Close => false,
        }
    }
}

/// Searches the body for `needle`, across reads and through its framing.
async fn search_body(
    s: &mut TcpStream,
    head: &ResponseHead,
    mut rest: Vec<u8>,
    needle: &[u8],
) -> Result<(), ProbeFail> {
    let mut search = Search {
        needle,
        finder: Finder::default(),
        dec: ChunkedDecoder::new(),
        remaining: match head.body {
            BodyLen::Length(n) => Some(n),
            _ => None,
        },
        seen: 0,
    };
    loop {
        if !rest.is_empty() {
            search.feed(head.body, &rest)?;
        }
        if search.finder.found() {
            return Ok(());
        }
        if search.ended(head.body) || search.seen > PROBE_BODY_LIMIT {
            return Err(ProbeFail::StringMissing);
        }
        rest.clear();
        if rest.capacity() < 16 * 1024 {
            rest.reserve(16 * 1024);
        }
        let cap = rest.capacity();
        let (r, b) = s.read(std::mem::take(&mut rest).slice_mut(0..cap)).await;
        rest = b.into_inner();
        match r {
            Ok(0) | Err(_) => return Err(ProbeFail::StringMissing),
            Ok(_) => {}
        }
    }
}

/// Rise/fall bookkeeping for one server.
#[derive(Debug, Clone)]
pub struct Tracker {
    pub up: bool,
    pub passes: u32,
    pub fails: u32,
    pub last: Option<Result<u16, ProbeFail>>,
    pub last_at: Option<std::time::SystemTime>,
    pub last_change: Option<std::time::SystemTime>,
}

impl Default for Tracker {
    fn default() -> Self {
        Tracker {
            up: true,
            passes: 0,
            fails: 0,
            last: None,
            last_at: None,
            last_change: None,
        }
    }
}

impl Tracker {
    /// Records a probe result; returns `Some(new_up)` when the state changes.
    pub fn record(&mut self, r: Result<u16, ProbeFail>, rise: u32, fall: u32) -> Option<bool> {
        let ok = r.is_ok();
        self.last = Some(r);
        self.last_at = Some(std::time::SystemTime::now());
        if ok {
            self.fails = 0;
            self.passes = self.passes.saturating_add(1);
            if !self.up && self.passes >= rise {
                self.up = true;
                self.last_change = self.last_at;
                return Some(true);
            }
        } else {
            self.passes = 0;
            self.fails = self.fails.saturating_add(1);
            if self.up && self.fails >= fall {
                self.up = false;
                self.last_change = self.last_at;
                return Some(false);
            }
        }
        None
    }

    /// Forces the state (passive observation).
    pub fn force_down(&mut self) -> bool {
        let changed = self.up;
        self.up = false;
        self.passes = 0;
        if changed {
            self.last_change = Some(std::time::SystemTime::now());
        }
        changed
    }

    /// Whether the server is between states (probe at the faster pace).
    pub fn transitioning(&self) -> bool {
        (self.up && self.fails > 0) || (!self.up && self.passes > 0)
    }
}

/// The pace while a server is changing state: a quarter of the interval, at least 100 ms.
pub fn fast_interval(interval: Duration) -> Duration {
    (interval / 4).max(Duration::from_millis(100)).min(interval)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finder_across_reads() {
        let mut f = Finder::default();
        f.feed(b"Moodle", b"xxxxMoo");
        assert!(!f.found());
        f.feed(b"Moodle", b"dle yy");
        assert!(f.found());
    }

    #[test]
    fn rise_and_fall() {
        let mut t = Tracker::default();
        assert_eq!(t.record(Err(ProbeFail::Timeout), 2, 3), None);
        assert_eq!(t.record(Err(ProbeFail::Timeout), 2, 3), None);
        assert_eq!(t.record(Err(ProbeFail::Refused), 2, 3), Some(false));
        assert_eq!(t.record(Ok(200), 2, 3), None);
        assert!(t.transitioning());
        assert_eq!(t.record(Ok(200), 2, 3), Some(true));
        assert!(!t.transitioning());
    }

    #[test]
    fn request_has_host() {
        let c = Check {
            method: "GET".into(),
            uri: "/login/index.php".into(),
            host: Some("moodle.example.edu".into()),
            expect_status: config::StatusRange { lo: 200, hi: 200 },
            expect_string: Some("Moodle".into()),
            interval: Duration::from_secs(2),
            rise: 2,
            fall: 3,
            timeout: Duration::from_secs(2),
            observe_errors: 10,
            slowstart: None,
            live_traffic: true,
        };
        let r = String::from_utf8(request_bytes(&c, "127.0.0.1:1".parse().unwrap())).unwrap();
        assert!(r.starts_with("GET /login/index.php HTTP/1.1\r\nHost: moodle.example.edu\r\n"));
    }
}
