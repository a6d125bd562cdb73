//! End-to-end suite: see tests/tests/*.rs. Shared helpers live here.
//!
//! - [`cfg`]: a configuration from a TOML string with `{name}` placeholders replaced;
//!   [`web`]: the usual one-frontend, one-backend shape.
//! - [`start`] / [`start_cores`]: the engine in-process on a given driver.
//! - [`both_drivers!`]: each listed test function run twice, `NAME::uring` and
//!   `NAME::epoll`.
//! - [`wait_until`], [`read_lines_until`]: polling with deadlines, never a bare sleep.
//! - [`raw_server`]: a one-shot hand-written origin for malformed responses.
//! - [`engine_bin`]: the engine binary (debug or release), built on demand.
//! - [`Browser`], [`Student`] and [`exam`]: a student's login, dashboard and quiz
//!   submission, which catches the login loop; [`curl::CurlBrowser`] runs it over HTTPS.
//! - [`php`]: three `php -S` nodes running tools/php, and the student script run against
//!   them through the engine.
//! - [`tls`]: curl and `openssl s_client` as clients, the shared certificates, an HTTPS
//!   engine, for tests/tests/tls_*.rs.
//! - [`ports`] ([`listeners_on`]), [`process`] ([`engine_bin`],
//!   [`signal`], [`wait_exit`], the engine binary as a process), [`student`] (the
//!   browser and the exam script), all re-exported here.
//! - [`health`] (the check server of tests/tests/health*.rs), [`sticky`] (Set-Cookie
//!   headers, requests with a cookie) and [`surge`] (stats, `show servers` columns).

pub mod curl;
pub mod php;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub mod admin;
pub mod health;
pub mod load;
pub mod netns;
pub mod ports;
pub mod process;
pub mod raw;
pub mod sticky;
pub mod student;
pub mod surge;
pub mod tls;

pub use engine::{DriverChoice, DriverKind, Running};
pub use ports::listeners_on;
pub use process::{engine_bin, signal, target_dir, wait_exit, workspace, SIGINT, SIGTERM};
pub use student::{exam, to_login, Browser, Outcome, Student};
pub use tools::client::{Conn, Framing, Response};
pub use tools::origin::{Fault, Origin};

/// Generates `mod NAME { #[test] fn uring(); #[test] fn epoll(); }` for each listed
/// function `fn NAME(driver: DriverChoice)`, so the whole suite runs on both drivers.
#[macro_export]
macro_rules! both_drivers {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[test]
                fn uring() {
                    super::$name($crate::DriverChoice::Uring)
                }
                #[test]
                fn epoll() {
                    super::$name($crate::DriverChoice::Epoll)
                }
            }
        )*
    };
}

/// A fresh folder under the system temp folder.
pub fn tmpdir(tag: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let d = std::env::temp_dir().join(format!(
        "engine-e2e-{}-{}-{}",
        std::process::id(),
        tag,
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create temp dir");
    d
}

/// Replaces each `{key}` in `text` by its value.
pub fn subst(text: &str, subs: &[(&str, String)]) -> String {
    let mut s = text.to_string();
    for (k, v) in subs {
        s = s.replace(&format!("{{{k}}}"), v);
    }
    s
}

/// Loads `text` (with `{key}` placeholders replaced) as if read from `dir/lb.toml`;
/// panics with every diagnostic when it is refused.
pub fn cfg_in(dir: &Path, text: &str, subs: &[(&str, String)]) -> config::Config {
    let text = subst(text, subs);
    match config::load_str(&text, &dir.join("lb.toml")) {
        Ok(l) => l.config,
        Err(d) => {
            let msgs: Vec<String> = d.iter().map(|d| d.to_string()).collect();
            panic!(
                "configuration refused:\n{}\n--- text ---\n{text}",
                msgs.join("\n")
            )
        }
    }
}

/// [`cfg_in`] relative to `/tmp/x/lb.toml`.
pub fn cfg(text: &str, subs: &[(&str, String)]) -> config::Config {
    cfg_in(Path::new("/tmp/x"), text, subs)
}

/// The usual shape: frontend `web` on 127.0.0.1:<free port> to backend `app` with the given
/// servers (`name`, address, extra server fields such as `weight = 3`). `defaults`,
/// `frontend_extra`, `backend_extra` and `tail` (extra tables, e.g. `[limits]`) are pasted
/// in. Access log off unless `tail` holds a `[log]` table.
pub struct Web<'a> {
    pub defaults: &'a str,
    pub frontend_extra: &'a str,
    pub backend_extra: &'a str,
    pub tail: &'a str,
    pub servers: Vec<(String, SocketAddr, String)>,
}

impl<'a> Web<'a> {
    pub fn new(origins: &[&Origin]) -> Web<'a> {
        Web {
            defaults: "",
            frontend_extra: "",
            backend_extra: "",
            tail: "",
            servers: origins
                .iter()
                .map(|o| (o.name().to_string(), o.addr(), String::new()))
                .collect(),
        }
    }
    pub fn defaults(mut self, d: &'a str) -> Self {
        self.defaults = d;
        self
    }
    pub fn frontend(mut self, d: &'a str) -> Self {
        self.frontend_extra = d;
        self
    }
    pub fn backend(mut self, d: &'a str) -> Self {
        self.backend_extra = d;
        self
    }
    pub fn tail(mut self, d: &'a str) -> Self {
        self.tail = d;
        self
    }
    /// Extra fields for the server at index `i`.
    pub fn server_extra(mut self, i: usize, extra: &str) -> Self {
        self.servers[i].2 = extra.to_string();
        self
    }
    pub fn text(&self) -> String {
        let mut s = String::new();
        s.push_str("[defaults]\n");
        s.push_str(self.defaults);
        s.push('\n');
        if !self.tail.contains("[log]") {
            s.push_str("[log]\naccess = \"off\"\n");
        }
        s.push_str(self.tail);
        s.push('\n');
        // Port 0: the engine binds a free port and says which (`Running::addr`,
        // `EngineProc::addr`).
        s.push_str("[[frontend]]\nname = \"web\"\nbind = [\"127.0.0.1:0\"]\nbackend = \"app\"\n");
        s.push_str(self.frontend_extra);
        s.push('\n');
        s.push_str("[[backend]]\nname = \"app\"\n");
        s.push_str(self.backend_extra);
        s.push('\n');
        for (n, a, extra) in &self.servers {
            s.push_str(&format!(
                "[[backend.server]]\nname = \"{n}\"\naddress = \"{a}\"\n{extra}\n"
            ));
        }
        s
    }
    pub fn config(&self) -> config::Config {
        cfg(&self.text(), &[])
    }
}

/// Starts `n` origins named `s1`, `s2`, ...
pub fn origins(n: usize) -> Vec<Origin> {
    (1..=n)
        .map(|i| Origin::start(&format!("s{i}")).expect("start origin"))
        .collect()
}

/// Starts the engine on 2 cores, unpinned, on `driver`; checks it got that driver.
pub fn start(cfg: config::Config, driver: DriverChoice) -> Running {
    start_cores(cfg, driver, 2)
}

pub fn start_cores(cfg: config::Config, driver: DriverChoice, cores: usize) -> Running {
    let r = engine::start(
        cfg,
        engine::Options {
            cores,
            driver,
            pin: false,
            reload_from: None,
            successor: None,
        },
    )
    .unwrap_or_else(|e| panic!("engine::start on {driver:?}: {e}"));
    let want = match driver {
        DriverChoice::Uring => Some(DriverKind::IoUring),
        DriverChoice::Epoll => Some(DriverKind::Epoll),
        DriverChoice::Auto => None,
    };
    if let Some(k) = want {
        assert_eq!(r.driver(), k, "engine runs the driver asked for");
    }
    assert_eq!(r.cores(), cores);
    r
}

/// Polls `f` every 10 ms until it is true; panics naming `what` after `limit`.
pub fn wait_until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    let mut polls = 0u64;
    loop {
        if f() {
            return;
        }
        polls += 1;
        if Instant::now() >= deadline || polls > 100_000 {
            panic!("timed out after {limit:?} waiting for: {what}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Like [`wait_until`] but returns false instead of panicking.
pub fn poll_for(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The complete lines of a file (an unfinished last line left out).
pub fn file_lines(path: &Path) -> Vec<String> {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    let mut lines: Vec<String> = s.split('\n').map(str::to_string).collect();
    lines.pop(); // after the last '\n': empty or unfinished
    lines
}

/// Polls the file until it holds at least `n` complete lines (the access log is flushed
/// about every 100 ms), then waits 300 ms more to catch extra lines; returns them all.
pub fn read_lines_until(path: &Path, n: usize, limit: Duration) -> Vec<String> {
    let ok = poll_for(limit, || file_lines(path).len() >= n);
    let lines = file_lines(path);
    assert!(
        ok,
        "expected at least {n} lines in {}, got {}: {lines:#?}",
        path.display(),
        lines.len()
    );
    // extra lines (a request logged twice) show up within a flush or two (kept: that no
    // extra line comes has no condition to wait on)
    std::thread::sleep(Duration::from_millis(300));
    file_lines(path)
}

/// A new client connection to the frontend `web`.
pub fn conn(r: &Running) -> Conn {
    Conn::connect(r.addr("web")).expect("connect to the engine")
}

/// Sends raw bytes on a new connection, reads everything until the engine closes (at
/// most `limit`). Returns the bytes and whether the engine closed.
pub fn raw_exchange(addr: SocketAddr, req: &[u8], limit: Duration) -> (Vec<u8>, bool) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_nodelay(true).ok();
    s.write_all(req).expect("write");
    read_until_close(&mut s, limit)
}

/// Reads until EOF or reset (true) or `limit` passes (false).
pub fn read_until_close(s: &mut TcpStream, limit: Duration) -> (Vec<u8>, bool) {
    let deadline = Instant::now() + limit;
    let mut out = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        let now = Instant::now();
        if now >= deadline {
            return (out, false);
        }
        s.set_read_timeout(Some((deadline - now).max(Duration::from_millis(1))))
            .ok();
        match s.read(&mut buf) {
            Ok(0) => return (out, true),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut
                    || e.kind() == std::io::ErrorKind::Interrupted =>
            {
                continue
            }
            Err(_) => return (out, true),
        }
    }
}

/// The status code of a raw response (0 when there is none).
pub fn status_of(raw: &[u8]) -> u16 {
    let s = String::from_utf8_lossy(raw);
    s.strip_prefix("HTTP/1.")
        .and_then(|r| r.get(2..5))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// A hand-written origin: for each accepted connection, reads a request head, calls
/// `answer` with the socket and the head, and closes when it returns. Counts heads.
pub struct RawServer {
    pub addr: SocketAddr,
    pub heads: Arc<AtomicU64>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for RawServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub fn raw_server<F>(answer: F) -> RawServer
where
    F: Fn(&mut TcpStream, &[u8]) + Send + Sync + 'static,
{
    let l = TcpListener::bind("127.0.0.1:0").expect("bind raw server");
    let addr = l.local_addr().unwrap();
    let heads = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (h2, s2) = (heads.clone(), stop.clone());
    let answer = Arc::new(answer);
    let thread = std::thread::spawn(move || {
        for s in l.incoming() {
            if s2.load(Ordering::SeqCst) {
                break;
            }
            let Ok(mut s) = s else { continue };
            let (h3, a) = (h2.clone(), answer.clone());
            std::thread::spawn(move || {
                s.set_read_timeout(Some(Duration::from_secs(10))).ok();
                let mut head = Vec::new();
                let mut b = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut b) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&b[..n]),
                    }
                }
                h3.fetch_add(1, Ordering::SeqCst);
                a(&mut s, &head);
            });
        }
    });
    RawServer {
        addr,
        heads,
        stop,
        thread: Some(thread),
    }
}
