//! A Moodle-like HTTP/1.1 origin: blocking std networking, one thread per connection.
//! The endpoints and faults are listed in the crate documentation.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use socket2::{Domain, Protocol, SockRef, Socket, Type};

use crate::pattern_into;

/// Largest request head accepted (bigger: 400 and close).
const MAX_HEAD: usize = 64 * 1024;
const MAX_HEADERS: usize = 100;
/// Largest form body (login, quiz).
const MAX_FORM: usize = 1 << 20;
/// Largest body `/echo` collects.
const MAX_ECHO: usize = 64 << 20;
const MAX_SLOW_MS: u64 = 600_000;
const DOWNLOAD_BLOCK: usize = 64 * 1024;
/// Chunk sizes of chunked downloads, cycled.
const CHUNK_SIZES: [usize; 8] = [16384, 16384, 8191, 1, 16384, 32768, 333, 16385];
const SESSION_COOKIE: &str = "MoodleSession";

/// A fault an [`Origin`] injects into requests arriving after [`Origin::set_fault`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    /// Normal service.
    #[default]
    None,
    /// Declare the full body length (or chunked), send half the body, close.
    CloseMidBody,
    /// Read the request, never answer; keep the socket open until the origin stops.
    Stall,
    /// Close the listening socket (connects get ECONNREFUSED); clearing rebinds the port.
    Refuse,
    /// Read the request head, then reset the connection (SO_LINGER 0).
    ResetAfterRequest,
    /// Like [`Fault::CloseMidBody`], but then fall silent instead of closing: the socket
    /// stays open until the client closes it or the origin stops.
    StallMidBody,
}

impl Fault {
    fn to_u8(self) -> u8 {
        match self {
            Fault::None => 0,
            Fault::CloseMidBody => 1,
            Fault::Stall => 2,
            Fault::Refuse => 3,
            Fault::ResetAfterRequest => 4,
            Fault::StallMidBody => 5,
        }
    }
    fn from_u8(v: u8) -> Fault {
        match v {
            1 => Fault::CloseMidBody,
            2 => Fault::Stall,
            3 => Fault::Refuse,
            4 => Fault::ResetAfterRequest,
            5 => Fault::StallMidBody,
            _ => Fault::None,
        }
    }
}

struct ListenState {
    /// A duplicate of the listening socket, to shut it down from another thread.
    ctl: Option<Socket>,
    listening: bool,
}

struct ConnEntry {
    stream: TcpStream,
    busy: Arc<AtomicBool>,
}

struct Inner {
    name: String,
    addr: SocketAddr,
    fault: AtomicU8,
    healthy: AtomicBool,
    stopping: AtomicBool,
    requests: AtomicU64,
    connections: AtomicU64,
    active: AtomicU64,
    max_active: AtomicU64,
    next_conn: AtomicU64,
    /// session id -> user
    sessions: Mutex<HashMap<String, String>>,
    submissions: Mutex<HashMap<String, u32>>,
    attempts: Mutex<HashMap<(String, String), u32>>,
    conns: Mutex<HashMap<u64, ConnEntry>>,
    conns_cv: Condvar,
    listen: Mutex<ListenState>,
    listen_cv: Condvar,
    fault_lock: Mutex<()>,
    sleep_m: Mutex<()>,
    sleep_cv: Condvar,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn wait_timeout<'a, T>(cv: &Condvar, g: MutexGuard<'a, T>, d: Duration) -> MutexGuard<'a, T> {
    match cv.wait_timeout(g, d) {
        Ok((g, _)) => g,
        Err(e) => e.into_inner().0,
    }
}

impl Inner {
    fn fault(&self) -> Fault {
        Fault::from_u8(self.fault.load(Ordering::SeqCst))
    }
    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }
    /// Sleeps `d`, cut short when the origin stops.
    fn sleep(&self, d: Duration) {
        let deadline = Instant::now() + d;
        let mut g = lock(&self.sleep_m);
        loop {
            if self.stopping() {
                return;
            }
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            g = wait_timeout(&self.sleep_cv, g, deadline - now);
        }
    }
}

fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.bind(&addr.into())?;
    s.listen(4096)?;
    Ok(s.into())
}

/// A running origin. Dropping it (or [`Origin::stop`]) stops it: the listener closes, open
/// connections are shut down, sleeping and stalled requests end.
pub struct Origin {
    inner: Arc<Inner>,
    accept: Option<JoinHandle<()>>,
}

impl Origin {
    /// Starts an origin named `name` on 127.0.0.1 with a free port.
    pub fn start(name: &str) -> io::Result<Origin> {
        Origin::start_on(name, SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// Starts an origin named `name` on `addr` (SO_REUSEADDR).
    pub fn start_on(name: &str, addr: SocketAddr) -> io::Result<Origin> {
        let listener = bind(addr)?;
        let local = listener.local_addr()?;
        let ctl = Socket::from(listener.try_clone()?);
        let name: String = name
            .chars()
            .map(|c| if c.is_control() { '_' } else { c })
            .collect();
        let inner = Arc::new(Inner {
            name,
            addr: local,
            fault: AtomicU8::new(0),
            healthy: AtomicBool::new(true),
            stopping: AtomicBool::new(false),
            requests: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            active: AtomicU64::new(0),
            max_active: AtomicU64::new(0),
            next_conn: AtomicU64::new(0),
            sessions: Mutex::new(HashMap::new()),
            submissions: Mutex::new(HashMap::new()),
            attempts: Mutex::new(HashMap::new()),
            conns: Mutex::new(HashMap::new()),
            conns_cv: Condvar::new(),
            listen: Mutex::new(ListenState {
                ctl: Some(ctl),
                listening: true,
            }),
            listen_cv: Condvar::new(),
            fault_lock: Mutex::new(()),
            sleep_m: Mutex::new(()),
            sleep_cv: Condvar::new(),
        });
        let i2 = inner.clone();
        let accept = thread::Builder::new()
            .name(format!("origin-{}", inner.name))
            .spawn(move || accept_loop(i2, listener))?;
        Ok(Origin {
            inner,
            accept: Some(accept),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// The node name (sent as `X-Node`).
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Switches the fault for requests arriving from now on. Switching to
    /// [`Fault::Refuse`] returns once the listener is closed; switching away from it
    /// returns once the same port is bound again (each waits at most 5 s).
    pub fn set_fault(&self, f: Fault) {
        let inner = &self.inner;
        let _serial = lock(&inner.fault_lock);
        let old = Fault::from_u8(inner.fault.swap(f.to_u8(), Ordering::SeqCst));
        let deadline = Instant::now() + Duration::from_secs(5);
        if f == Fault::Refuse && old != Fault::Refuse {
            let mut st = lock(&inner.listen);
            if let Some(ctl) = st.ctl.take() {
                let _ = ctl.shutdown(Shutdown::Both);
            }
            while st.listening && !inner.stopping() {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                st = wait_timeout(&inner.listen_cv, st, deadline - now);
            }
            drop(st);
            // a dead server's idle keep-alive connections go away too
            for e in lock(&inner.conns).values() {
                if !e.busy.load(Ordering::SeqCst) {
                    let _ = e.stream.shutdown(Shutdown::Both);
                }
            }
        } else if old == Fault::Refuse && f != Fault::Refuse {
            let mut st = lock(&inner.listen);
            inner.listen_cv.notify_all();
            while !st.listening && !inner.stopping() {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                st = wait_timeout(&inner.listen_cv, st, deadline - now);
            }
        }
    }

    /// The current fault.
    pub fn fault(&self) -> Fault {
        self.inner.fault()
    }

    /// `false`: `/health` and `GET /login/index.php` answer 503 (body without "Moodle").
    pub fn set_healthy(&self, ok: bool) {
        self.inner.healthy.store(ok, Ordering::SeqCst);
    }

    /// Requests started (head received), in total.
    pub fn requests(&self) -> u64 {
        self.inner.requests.load(Ordering::SeqCst)
    }

    /// TCP connections accepted, in total.
    pub fn connections(&self) -> u64 {
        self.inner.connections.load(Ordering::SeqCst)
    }

    /// Requests in flight now: counted from the request head's arrival until the last
    /// byte of the answer is written (a stalled request stays in flight).
    pub fn active(&self) -> u64 {
        self.inner.active.load(Ordering::SeqCst)
    }

    /// The peak of [`Origin::active`].
    pub fn max_active(&self) -> u64 {
        self.inner.max_active.load(Ordering::SeqCst)
    }

    /// Quiz submissions per user on this node (repeats included).
    pub fn submissions(&self) -> HashMap<String, u32> {
        lock(&self.inner.submissions).clone()
    }

    /// Quiz submissions per (user, attempt id) on this node: a count above 1 is a doubled
    /// submission.
    pub fn attempts(&self) -> HashMap<(String, String), u32> {
        lock(&self.inner.attempts).clone()
    }

    /// Sessions this node has issued.
    pub fn sessions(&self) -> usize {
        lock(&self.inner.sessions).len()
    }

    /// Stops the origin (the same as dropping it).
    pub fn stop(self) {}

    fn shutdown(&mut self) {
        let inner = &self.inner;
        inner.stopping.store(true, Ordering::SeqCst);
        {
            let mut st = lock(&inner.listen);
            if let Some(ctl) = st.ctl.take() {
                let _ = ctl.shutdown(Shutdown::Both);
            }
            inner.listen_cv.notify_all();
        }
        {
            let _g = lock(&inner.sleep_m);
            inner.sleep_cv.notify_all();
        }
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut conns = lock(&inner.conns);
        for e in conns.values() {
            let _ = e.stream.shutdown(Shutdown::Both);
        }
        while !conns.is_empty() {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            conns = wait_timeout(&inner.conns_cv, conns, deadline - now);
        }
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn accept_loop(inner: Arc<Inner>, listener: TcpListener) {
    let mut listener = Some(listener);
    while !inner.stopping() {
        let Some(l) = &listener else {
            // refused: wait for the fault to clear, then bind the same port again
            let mut st = lock(&inner.listen);
            while !inner.stopping() && inner.fault() == Fault::Refuse {
                st = wait_timeout(&inner.listen_cv, st, Duration::from_millis(200));
            }
            if inner.stopping() {
                break;
            }
            drop(st);
            match bind(inner.addr) {
                Ok(l) => {
                    let mut st = lock(&inner.listen);
                    if inner.fault() == Fault::Refuse || inner.stopping() {
                        continue; // refused again meanwhile: drop it
                    }
                    st.ctl = l.try_clone().ok().map(Socket::from);
                    st.listening = true;
                    inner.listen_cv.notify_all();
                    listener = Some(l);
                }
                Err(e) => {
                    eprintln!("origin {}: rebinding {}: {e}", inner.name, inner.addr);
                    inner.sleep(Duration::from_millis(50));
                }
            }
            continue;
        };
        match l.accept() {
            Ok((s, _)) => {
                if inner.stopping() {
                    break;
                }
                if inner.fault() == Fault::Refuse {
                    let _ = SockRef::from(&s).set_linger(Some(Duration::ZERO));
                    continue;
                }
                inner.connections.fetch_add(1, Ordering::SeqCst);
                spawn_conn(&inner, s);
            }
            Err(_) => {
                if inner.stopping() {
                    break;
                }
                let mut st = lock(&inner.listen);
                if st.ctl.is_none() {
                    // shut down on purpose (Refuse): close it
                    listener = None;
                    st.listening = false;
                    inner.listen_cv.notify_all();
                } else {
                    // transient (EMFILE, ECONNABORTED, ...)
                    drop(st);
                    inner.sleep(Duration::from_millis(5));
                }
            }
        }
    }
    drop(listener);
    let mut st = lock(&inner.listen);
    st.listening = false;
    st.ctl = None;
    inner.listen_cv.notify_all();
}

/// Removes a connection from the registry when its thread ends, even by panic.
struct ConnGuard {
    inner: Arc<Inner>,
    id: u64,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let mut m = lock(&self.inner.conns);
        m.remove(&self.id);
        self.inner.conns_cv.notify_all();
    }
}

fn spawn_conn(inner: &Arc<Inner>, s: TcpStream) {
    let _ = s.set_nodelay(true);
    let id = inner.next_conn.fetch_add(1, Ordering::SeqCst);
    let busy = Arc::new(AtomicBool::new(false));
    if let Ok(clone) = s.try_clone() {
        lock(&inner.conns).insert(
            id,
            ConnEntry {
                stream: clone,
                busy: busy.clone(),
            },
        );
    }
    let guard = ConnGuard {
        inner: inner.clone(),
        id,
    };
    let spawned = thread::Builder::new()
        .name("origin-conn".into())
        .stack_size(512 * 1024)
        .spawn(move || {
            let g = guard;
            let mut c = Session::new(&g.inner, s, busy);
            c.serve();
        });
    if spawned.is_err() {
        // the closure (and the guard in it) was dropped: the entry is gone
    }
}

/// Counts a request in flight while alive.
struct Active<'a>(&'a Inner);

impl<'a> Active<'a> {
    fn new(inner: &'a Inner) -> Self {
        let now = inner.active.fetch_add(1, Ordering::SeqCst) + 1;
        inner.max_active.fetch_max(now, Ordering::SeqCst);
        Active(inner)
    }
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

enum E {
    /// The connection failed or ended: close without answering.
    Io,
    /// Answer this status with this reason, then close.
    Reject(u16, &'static str),
}

impl From<io::Error> for E {
    fn from(_: io::Error) -> E {
        E::Io
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum BodyKind {
    None,
    Length(u64),
    Chunked,
}

#[derive(Clone, Copy)]
enum Sink {
    Discard,
    /// Append to `Session::body`, up to this many bytes in all.
    Collect(usize),
    Hash,
}

#[derive(Clone, Copy)]
enum Src {
    /// `Session::tbuf`
    Text,
    /// `Session::body`
    Body,
}

#[derive(Default)]
struct Req {
    method: String,
    path: String,
    query: String,
    minor: u8,
    body: Option<BodyKind>,
    close: bool,
    upgrade_ws: bool,
    conn_upgrade: bool,
    expect_continue: bool,
    cookie: String,
    head: bool,
}

impl Req {
    fn body_kind(&self) -> BodyKind {
        self.body.unwrap_or(BodyKind::None)
    }
}

fn eq(a: &[u8], b: &str) -> bool {
    a.eq_ignore_ascii_case(b.as_bytes())
}

fn tokens(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    v.split(|&b| b == b',').map(|t| t.trim_ascii())
}

/// Fills `req` from a parsed head; copies the head into `echo` for `/echo`.
fn fill_req(
    req: &mut Req,
    echo: &mut Vec<u8>,
    r: &httparse::Request<'_, '_>,
    head: &[u8],
) -> Result<(), E> {
    const BAD: E = E::Reject(400, "bad request head");
    let method = r.method.ok_or(BAD)?;
    let target = r.path.ok_or(BAD)?;
    req.minor = r.version.ok_or(BAD)?;
    req.method.clear();
    req.method.push_str(method);
    req.head = method == "HEAD";
    // origin-form, or absolute-form reduced to its path
    let target = if target.starts_with('/') || target == "*" {
        target
    } else if let Some(rest) = target
        .strip_prefix("http://")
        .or_else(|| target.strip_prefix("https://"))
    {
        rest.find('/').map(|i| &rest[i..]).unwrap_or("/")
    } else {
        return Err(E::Reject(400, "bad request target"));
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    req.path.clear();
    req.path.push_str(path);
    req.query.clear();
    req.query.push_str(query);
    req.cookie.clear();
    req.upgrade_ws = false;
    req.conn_upgrade = false;
    req.expect_continue = false;
    let mut cl: Option<u64> = None;
    let mut te_seen = false;
    let mut te_chunked = false;
    let mut tok_close = false;
    let mut tok_keep = false;
    for h in r.headers.iter() {
        let n = h.name.as_bytes();
        let v = h.value;
        if eq(n, "content-length") {
            let v = v.trim_ascii();
            if v.is_empty() || v.len() > 18 || !v.iter().all(u8::is_ascii_digit) {
                return Err(E::Reject(400, "bad Content-Length"));
            }
            let x = v.iter().fold(0u64, |a, d| a * 10 + u64::from(d - b'0'));
            if cl.is_some_and(|c| c != x) {
                return Err(E::Reject(400, "conflicting Content-Length"));
            }
            cl = Some(x);
        } else if eq(n, "transfer-encoding") {
            te_seen = true;
            te_chunked = tokens(v)
                .filter(|t| !t.is_empty())
                .last()
                .is_some_and(|t| eq(t, "chunked"));
        } else if eq(n, "connection") {
            for t in tokens(v) {
                if eq(t, "close") {
                    tok_close = true;
                } else if eq(t, "keep-alive") {
                    tok_keep = true;
                } else if eq(t, "upgrade") {
                    req.conn_upgrade = true;
                }
            }
        } else if eq(n, "upgrade") {
            if tokens(v).any(|t| eq(t, "websocket")) {
                req.upgrade_ws = true;
            }
        } else if eq(n, "expect") {
            if eq(v.trim_ascii(), "100-continue") {
                req.expect_continue = true;
            }
        } else if eq(n, "cookie") {
            if let Ok(s) = std::str::from_utf8(v) {
                if !req.cookie.is_empty() {
                    req.cookie.push_str("; ");
                }
                req.cookie.push_str(s);
            }
        }
    }
    req.close = if req.minor == 0 { !tok_keep } else { tok_close };
    req.body = Some(if te_seen {
        if !te_chunked {
            return Err(E::Reject(400, "unsupported Transfer-Encoding"));
        }
        if cl.is_some() {
            req.close = true; // both framings: never reuse this connection
        }
        BodyKind::Chunked
    } else {
        match cl {
            Some(0) | None => BodyKind::None,
            Some(n) => BodyKind::Length(n),
        }
    });
    echo.clear();
    if req.path.starts_with("/echo") {
        echo.extend_from_slice(head);
    }
    Ok(())
}

fn query_param<'q>(q: &'q str, key: &str) -> Option<&'q str> {
    q.split('&')
        .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

fn url_decode(s: &[u8]) -> String {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = |b: u8| (b as char).to_digit(16);
                match (
                    s.get(i + 1).and_then(|&b| hex(b)),
                    s.get(i + 2).and_then(|&b| hex(b)),
                ) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn form_field(body: &[u8], key: &str) -> Option<String> {
    body.split(|&b| b == b'&').find_map(|kv| {
        let (k, v) = match kv.iter().position(|&b| b == b'=') {
            Some(i) => (&kv[..i], &kv[i + 1..]),
            None => (kv, &[][..]),
        };
        (url_decode(k) == key).then(|| url_decode(v))
    })
}

fn random_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    static CTR: AtomicU64 = AtomicU64::new(0);
    let mut out = String::with_capacity(32);
    for _ in 0..2 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(CTR.fetch_add(1, Ordering::Relaxed));
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        h.write_u128(t);
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out
}

fn push_num(w: &mut Vec<u8>, mut n: u64) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    w.extend_from_slice(&tmp[i..]);
}

fn push_hex(w: &mut Vec<u8>, mut n: u64) {
    let mut tmp = [0u8; 16];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b"0123456789abcdef"[(n & 15) as usize];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    w.extend_from_slice(&tmp[i..]);
}

fn reason(code: u16) -> &'static str {
    match code {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        413 => "Content Too Large",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

fn html_escape(out: &mut Vec<u8>, s: &str) {
    for c in s.bytes() {
        match c {
            b'<' => out.extend_from_slice(b"&lt;"),
            b'>' => out.extend_from_slice(b"&gt;"),
            b'&' => out.extend_from_slice(b"&amp;"),
            b'"' => out.extend_from_slice(b"&quot;"),
            c => out.push(c),
        }
    }
}

/// One connection's state; buffers are reused from request to request.
struct Session<'a> {
    inner: &'a Inner,
    stream: TcpStream,
    busy: Arc<AtomicBool>,
    rbuf: Vec<u8>,
    rpos: usize,
    rend: usize,
    wbuf: Vec<u8>,
    /// collected request body (after the head copy, for /echo)
    body: Vec<u8>,
    /// response text body
    tbuf: Vec<u8>,
    hasher: Sha256,
    hashed: u64,
    req: Req,
}

impl<'a> Session<'a> {
    fn new(inner: &'a Inner, stream: TcpStream, busy: Arc<AtomicBool>) -> Self {
        Session {
            inner,
            stream,
            busy,
            rbuf: vec![0u8; MAX_HEAD],
            rpos: 0,
            rend: 0,
            wbuf: Vec::with_capacity(4096),
            body: Vec::new(),
            tbuf: Vec::with_capacity(1024),
            hasher: Sha256::new(),
            hashed: 0,
            req: Req::default(),
        }
    }

    fn serve(&mut self) {
        loop {
            match self.read_head() {
                Ok(true) => {}
                Ok(false) => return,
                Err(E::Io) => return,
                Err(E::Reject(code, why)) => return self.reject(code, why),
            }
            self.busy.store(true, Ordering::SeqCst);
            self.inner.requests.fetch_add(1, Ordering::SeqCst);
            let active = Active::new(self.inner);
            let fault = self.inner.fault();
            let health = self.req.path == "/health";
            match fault {
                Fault::Refuse => return self.reset(),
                Fault::ResetAfterRequest if !health => return self.reset(),
                Fault::Stall if !health => return self.stall(),
                _ => {}
            }
            let mid = matches!(fault, Fault::CloseMidBody | Fault::StallMidBody) && !health;
            let outcome = self.handle(mid);
            if fault == Fault::StallMidBody && !health && outcome.is_ok() {
                return self.stall();
            }
            if let Err(E::Reject(code, why)) = outcome {
                self.send_reject(code, why);
            }
            // answered: no longer in flight, even while a closing connection drains
            drop(active);
            match outcome {
                Ok(true) => {}
                Ok(false) | Err(E::Reject(..)) => return self.close_gracefully(),
                Err(E::Io) => return,
            }
            // Paired with set_fault(Refuse), which stores the fault and then closes the
            // idle connections: one of the two sides sees the other's store.
            self.busy.store(false, Ordering::SeqCst);
            if self.inner.fault() == Fault::Refuse {
                return self.close_gracefully();
            }
        }
    }

    fn reset(&mut self) {
        let _ = SockRef::from(&self.stream).set_linger(Some(Duration::ZERO));
        // dropping the stream closes it with a reset
    }

    fn stall(&mut self) {
        // read and discard until the client closes or the origin stops
        while !self.inner.stopping() {
            match self.stream.read(&mut self.rbuf) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }

    /// Half-closes, then drains what the client still sends for a moment, so that
    /// unread input does not turn the close into a reset that destroys the answer.
    fn close_gracefully(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Write);
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut drained = 0usize;
        while drained < (4 << 20) && !self.inner.stopping() {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            if self.stream.set_read_timeout(Some(deadline - now)).is_err() {
                break;
            }
            match self.stream.read(&mut self.rbuf) {
                Ok(0) => break,
                Ok(n) => drained += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
    }

    fn reject(&mut self, code: u16, why: &'static str) {
        self.send_reject(code, why);
        self.close_gracefully();
    }

    fn send_reject(&mut self, code: u16, why: &'static str) {
        self.req.close = true;
        self.req.head = false;
        self.tbuf.clear();
        self.tbuf.extend_from_slice(why.as_bytes());
        self.tbuf.push(b'\n');
        let _ = self.respond(code, "text/plain", &[], Src::Text, false);
    }

    fn fill(&mut self) -> io::Result<usize> {
        if self.rpos == self.rend {
            self.rpos = 0;
            self.rend = 0;
        } else if self.rend == self.rbuf.len() && self.rpos > 0 {
            self.rbuf.copy_within(self.rpos..self.rend, 0);
            self.rend -= self.rpos;
            self.rpos = 0;
        }
        if self.rend == self.rbuf.len() {
            return Err(io::Error::other("read buffer full"));
        }
        loop {
            match self.stream.read(&mut self.rbuf[self.rend..]) {
                Ok(n) => {
                    self.rend += n;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads and parses the next request head into `self.req`. `Ok(false)`: clean EOF
    /// between requests.
    fn read_head(&mut self) -> Result<bool, E> {
        loop {
            if self.rend > self.rpos {
                let mut hdrs = [httparse::EMPTY_HEADER; MAX_HEADERS];
                let mut r = httparse::Request::new(&mut hdrs);
                let data = &self.rbuf[self.rpos..self.rend];
                match r.parse(data) {
                    Ok(httparse::Status::Complete(n)) => {
                        fill_req(&mut self.req, &mut self.body, &r, &data[..n])?;
                        self.rpos += n;
                        return Ok(true);
                    }
                    Ok(httparse::Status::Partial) => {}
                    Err(httparse::Error::TooManyHeaders) => {
                        return Err(E::Reject(400, "too many header fields"))
                    }
                    Err(_) => return Err(E::Reject(400, "malformed request head")),
                }
                if self.rend - self.rpos >= MAX_HEAD {
                    return Err(E::Reject(400, "request head too large"));
                }
            }
            let had = self.rend > self.rpos;
            match self.fill() {
                Ok(0) if !had => return Ok(false),
                Ok(0) => return Err(E::Io),
                Ok(_) => {}
                Err(_) => return Err(E::Io),
            }
        }
    }

    fn feed(&mut self, sink: Sink, from: usize, to: usize) -> Result<(), E> {
        let data = &self.rbuf[from..to];
        match sink {
            Sink::Discard => {}
            Sink::Collect(limit) => {
                if self.body.len() + data.len() > limit {
                    return Err(E::Reject(413, "request body too large"));
                }
                self.body.extend_from_slice(data);
            }
            Sink::Hash => {
                self.hasher.update(data);
                self.hashed += data.len() as u64;
            }
        }
        Ok(())
    }

    fn read_exact_body(&mut self, sink: Sink, mut n: u64) -> Result<(), E> {
        while n > 0 {
            if self.rpos == self.rend && self.fill()? == 0 {
                return Err(E::Io);
            }
            let take = ((self.rend - self.rpos) as u64).min(n) as usize;
            self.feed(sink, self.rpos, self.rpos + take)?;
            self.rpos += take;
            n -= take as u64;
        }
        Ok(())
    }

    /// The next line (without CR LF) as a range of `rbuf`, consumed.
    fn read_line(&mut self) -> Result<(usize, usize), E> {
        loop {
            if let Some(i) = self.rbuf[self.rpos..self.rend]
                .iter()
                .position(|&b| b == b'\n')
            {
                let start = self.rpos;
                let mut end = start + i;
                if end > start && self.rbuf[end - 1] == b'\r' {
                    end -= 1;
                }
                self.rpos = start + i + 1;
                return Ok((start, end));
            }
            if self.rend - self.rpos >= 8192 {
                return Err(E::Reject(400, "chunk line too long"));
            }
            if self.fill()? == 0 {
                return Err(E::Io);
            }
        }
    }

    /// Reads the request body into `sink`, after a 100 Continue if one was asked for.
    fn read_body(&mut self, sink: Sink) -> Result<(), E> {
        let kind = self.req.body_kind();
        if kind == BodyKind::None {
            return Ok(());
        }
        if self.req.expect_continue && self.req.minor >= 1 {
            (&self.stream).write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        }
        match kind {
            BodyKind::None => Ok(()),
            BodyKind::Length(n) => self.read_exact_body(sink, n),
            BodyKind::Chunked => {
                loop {
                    let (s, e) = self.read_line()?;
                    let line = &self.rbuf[s..e];
                    let size = line
                        .split(|&b| b == b';')
                        .next()
                        .unwrap_or(&[])
                        .trim_ascii();
                    if size.is_empty() || size.len() > 15 {
                        return Err(E::Reject(400, "bad chunk size"));
                    }
                    let mut n: u64 = 0;
                    for &b in size {
                        let d = (b as char)
                            .to_digit(16)
                            .ok_or(E::Reject(400, "bad chunk size"))?;
                        n = n * 16 + u64::from(d);
                    }
                    if n == 0 {
                        break;
                    }
                    self.read_exact_body(sink, n)?;
                    let (s, e) = self.read_line()?;
                    if s != e {
                        return Err(E::Reject(400, "chunk not followed by CRLF"));
                    }
                }
                // trailers
                for _ in 0..100 {
                    let (s, e) = self.read_line()?;
                    if s == e {
                        return Ok(());
                    }
                }
                Err(E::Reject(400, "too many trailer fields"))
            }
        }
    }

    /// Writes a response head into `wbuf` (cleared first).
    fn head_into(&mut self, status: u16, ctype: &str, len: Option<u64>, extra: &[(&str, &str)]) {
        let w = &mut self.wbuf;
        w.clear();
        w.extend_from_slice(b"HTTP/1.1 ");
        push_num(w, u64::from(status));
        w.push(b' ');
        w.extend_from_slice(reason(status).as_bytes());
        w.extend_from_slice(b"\r\nX-Node: ");
        w.extend_from_slice(self.inner.name.as_bytes());
        w.extend_from_slice(b"\r\n");
        if !ctype.is_empty() {
            w.extend_from_slice(b"Content-Type: ");
            w.extend_from_slice(ctype.as_bytes());
            w.extend_from_slice(b"\r\n");
        }
        if let Some(n) = len {
            w.extend_from_slice(b"Content-Length: ");
            push_num(w, n);
            w.extend_from_slice(b"\r\n");
        }
        for (n, v) in extra {
            w.extend_from_slice(n.as_bytes());
            w.extend_from_slice(b": ");
            w.extend_from_slice(v.as_bytes());
            w.extend_from_slice(b"\r\n");
        }
        if self.req.close {
            w.extend_from_slice(b"Connection: close\r\n");
        } else if self.req.minor == 0 {
            w.extend_from_slice(b"Connection: keep-alive\r\n");
        }
        w.extend_from_slice(b"\r\n");
    }

    /// Sends a whole response; `mid`: only half the body, then close.
    /// Returns whether the connection stays open.
    fn respond(
        &mut self,
        status: u16,
        ctype: &str,
        extra: &[(&str, &str)],
        src: Src,
        mid: bool,
    ) -> Result<bool, E> {
        let bodyless = status == 204 || status == 304 || status < 200;
        let len = match src {
            Src::Text => self.tbuf.len(),
            Src::Body => self.body.len(),
        };
        let declared = if status == 204 || status < 200 {
            None
        } else if status == 304 {
            (len > 0).then_some(len as u64)
        } else {
            Some(len as u64)
        };
        self.head_into(status, ctype, declared, extra);
        let send = !self.req.head && !bodyless;
        let body: &[u8] = match src {
            Src::Text => &self.tbuf,
            Src::Body => &self.body,
        };
        let part = if mid { &body[..body.len() / 2] } else { body };
        if !send {
            (&self.stream).write_all(&self.wbuf)?;
        } else if part.len() <= 64 * 1024 {
            self.wbuf.extend_from_slice(part);
            (&self.stream).write_all(&self.wbuf)?;
        } else {
            (&self.stream).write_all(&self.wbuf)?;
            (&self.stream).write_all(part)?;
        }
        Ok(!(self.req.close || (mid && send)))
    }

    fn text(&mut self, parts: &[&[u8]]) {
        self.tbuf.clear();
        for p in parts {
            self.tbuf.extend_from_slice(p);
        }
    }

    fn session_user(&self) -> Option<String> {
        let sessions = lock(&self.inner.sessions);
        self.req
            .cookie
            .split(';')
            .filter_map(|c| c.trim().split_once('='))
            .filter(|(k, _)| *k == SESSION_COOKIE)
            .find_map(|(_, v)| sessions.get(v.trim()).cloned())
    }

    fn handle(&mut self, mid: bool) -> Result<bool, E> {
        let inner = self.inner;
        let node = inner.name.as_bytes();
        let m = self.req.method.as_str();
        let get = m == "GET" || m == "HEAD";
        let post = m == "POST";
        let path = self.req.path.as_str();
        const HTML: &str = "text/html; charset=utf-8";
        const TEXT: &str = "text/plain; charset=utf-8";
        if path.starts_with("/echo") {
            self.read_body(Sink::Collect(MAX_ECHO))?;
            return self.respond(200, "text/plain", &[], Src::Body, mid);
        }
        match path {
            "/" if get => {
                self.read_body(Sink::Discard)?;
                self.tbuf.clear();
                self.tbuf.extend_from_slice(
                    b"<!DOCTYPE html><html><head><title>Moodle-like origin</title></head><body><h1>Moodle-like origin ",
                );
                html_escape(&mut self.tbuf, &inner.name);
                self.tbuf.extend_from_slice(
                    b"</h1><p><a href=\"/login/index.php\">Log in</a></p></body></html>\n",
                );
                self.respond(200, HTML, &[], Src::Text, mid)
            }
            "/health" if get => {
                self.read_body(Sink::Discard)?;
                if inner.healthy.load(Ordering::SeqCst) {
                    self.text(&[b"OK Moodle ", node, b"\n"]);
                    self.respond(200, TEXT, &[], Src::Text, false)
                } else {
                    self.text(&[b"unhealthy ", node, b"\n"]);
                    self.respond(503, TEXT, &[], Src::Text, false)
                }
            }
            "/login/index.php" if get => {
                self.read_body(Sink::Discard)?;
                if !inner.healthy.load(Ordering::SeqCst) {
                    self.text(&[b"site maintenance on ", node, b"\n"]);
                    return self.respond(503, TEXT, &[], Src::Text, mid);
                }
                self.tbuf.clear();
                self.tbuf.extend_from_slice(
                    b"<!DOCTYPE html><html><head><title>Moodle: Log in to the site</title></head><body><h1>Moodle</h1><p>Node: ",
                );
                html_escape(&mut self.tbuf, &inner.name);
                self.tbuf.extend_from_slice(
                    b"</p><form method=\"post\" action=\"/login/index.php\"><input type=\"text\" name=\"username\"><input type=\"password\" name=\"password\"><button type=\"submit\">Log in</button></form></body></html>\n",
                );
                self.respond(200, HTML, &[], Src::Text, mid)
            }
            "/login/index.php" if post => {
                self.body.clear();
                self.read_body(Sink::Collect(MAX_FORM))?;
                let user = match form_field(&self.body, "username") {
                    Some(u) if !u.is_empty() => u,
                    _ => return Err(E::Reject(400, "missing username")),
                };
                let id = random_id();
                lock(&inner.sessions).insert(id.clone(), user);
                let cookie = format!("{SESSION_COOKIE}={id}; path=/; HttpOnly");
                self.text(&[b"see /my/\n"]);
                self.respond(
                    303,
                    TEXT,
                    &[("Location", "/my/"), ("Set-Cookie", &cookie)],
                    Src::Text,
                    mid,
                )
            }
            "/my/" | "/my" | "/my/index.php" if get => {
                self.read_body(Sink::Discard)?;
                match self.session_user() {
                    Some(user) => {
                        self.text(&[b"Dashboard of ", user.as_bytes(), b" on ", node]);
                        self.respond(200, TEXT, &[], Src::Text, mid)
                    }
                    None => self.redirect_login(mid),
                }
            }
            "/mod/quiz/processattempt.php" if post => {
                self.body.clear();
                self.read_body(Sink::Collect(MAX_FORM))?;
                let Some(user) = self.session_user() else {
                    return self.redirect_login(mid);
                };
                let attempt = match form_field(&self.body, "attempt") {
                    Some(a) if !a.is_empty() => a,
                    _ => return Err(E::Reject(400, "missing attempt")),
                };
                *lock(&inner.submissions).entry(user.clone()).or_insert(0) += 1;
                *lock(&inner.attempts)
                    .entry((user.clone(), attempt.clone()))
                    .or_insert(0) += 1;
                self.text(&[
                    b"submitted ",
                    user.as_bytes(),
                    b" attempt ",
                    attempt.as_bytes(),
                    b" on ",
                    node,
                ]);
                self.respond(200, TEXT, &[], Src::Text, mid)
            }
            "/upload" if post || m == "PUT" => {
                self.hasher = Sha256::new();
                self.hashed = 0;
                self.read_body(Sink::Hash)?;
                let digest = std::mem::take(&mut self.hasher).finalize();
                self.tbuf.clear();
                self.tbuf.extend_from_slice(b"len=");
                push_num(&mut self.tbuf, self.hashed);
                self.tbuf.extend_from_slice(b" sha256=");
                self.tbuf.extend_from_slice(hex::encode(digest).as_bytes());
                self.respond(200, TEXT, &[], Src::Text, mid)
            }
            "/download" if get => {
                self.read_body(Sink::Discard)?;
                self.download(mid)
            }
            "/slow" if get => {
                self.read_body(Sink::Discard)?;
                let ms: u64 = query_param(&self.req.query, "ms")
                    .and_then(|v| v.parse().ok())
                    .filter(|&ms| ms <= MAX_SLOW_MS)
                    .ok_or(E::Reject(400, "bad ms"))?;
                inner.sleep(Duration::from_millis(ms));
                self.tbuf.clear();
                self.tbuf.extend_from_slice(b"slow ");
                push_num(&mut self.tbuf, ms);
                self.respond(200, TEXT, &[], Src::Text, mid)
            }
            "/status" if get => {
                self.read_body(Sink::Discard)?;
                let code: u16 = query_param(&self.req.query, "code")
                    .and_then(|v| v.parse().ok())
                    .filter(|c| (200..=599).contains(c))
                    .ok_or(E::Reject(400, "bad code"))?;
                self.tbuf.clear();
                if code != 204 && code != 304 {
                    self.tbuf.extend_from_slice(b"status ");
                    push_num(&mut self.tbuf, u64::from(code));
                    self.tbuf.push(b'\n');
                }
                self.respond(code, TEXT, &[], Src::Text, mid)
            }
            "/ws" => {
                self.read_body(Sink::Discard)?;
                if self.req.upgrade_ws && self.req.conn_upgrade {
                    self.tunnel()
                } else {
                    self.text(&[b"websocket upgrade required\n"]);
                    self.respond(426, TEXT, &[("Upgrade", "websocket")], Src::Text, mid)
                }
            }
            "/"
            | "/health"
            | "/login/index.php"
            | "/my/"
            | "/my"
            | "/my/index.php"
            | "/mod/quiz/processattempt.php"
            | "/upload"
            | "/download"
            | "/slow"
            | "/status" => {
                self.read_body(Sink::Discard)?;
                self.text(&[b"method not allowed\n"]);
                self.respond(405, TEXT, &[], Src::Text, mid)
            }
            _ => {
                self.read_body(Sink::Discard)?;
                self.text(&[b"not found\n"]);
                self.respond(404, TEXT, &[], Src::Text, mid)
            }
        }
    }

    fn redirect_login(&mut self, mid: bool) -> Result<bool, E> {
        self.text(&[b"see /login/index.php\n"]);
        self.respond(
            303,
            "text/plain; charset=utf-8",
            &[("Location", "/login/index.php")],
            Src::Text,
            mid,
        )
    }

    fn download(&mut self, mid: bool) -> Result<bool, E> {
        let size: u64 = query_param(&self.req.query, "size")
            .and_then(|v| v.parse().ok())
            .ok_or(E::Reject(400, "bad size"))?;
        #[derive(PartialEq)]
        enum Mode {
            Cl,
            Chunked,
            Close,
        }
        let mode = match query_param(&self.req.query, "mode").unwrap_or("cl") {
            "cl" | "" => Mode::Cl,
            "chunked" => Mode::Chunked,
            "close" => Mode::Close,
            _ => return Err(E::Reject(400, "bad mode")),
        };
        // a cut close-delimited body would look complete: declare the length instead
        let mode = if mid && mode == Mode::Close {
            Mode::Cl
        } else {
            mode
        };
        const BIN: &str = "application/octet-stream";
        match mode {
            Mode::Cl => self.head_into(200, BIN, Some(size), &[]),
            Mode::Chunked => self.head_into(200, BIN, None, &[("Transfer-Encoding", "chunked")]),
            Mode::Close => {
                self.req.close = true;
                self.head_into(200, BIN, None, &[]);
            }
        }
        if self.req.head {
            (&self.stream).write_all(&self.wbuf)?;
            return Ok(!self.req.close);
        }
        let limit = if mid { size / 2 } else { size };
        let mut off: u64 = 0;
        match mode {
            Mode::Cl | Mode::Close => {
                while off < limit {
                    let n = (limit - off).min(DOWNLOAD_BLOCK as u64) as usize;
                    let at = self.wbuf.len();
                    self.wbuf.resize(at + n, 0);
                    pattern_into(off, &mut self.wbuf[at..]);
                    (&self.stream).write_all(&self.wbuf)?;
                    self.wbuf.clear();
                    off += n as u64;
                }
                if !self.wbuf.is_empty() {
                    (&self.stream).write_all(&self.wbuf)?;
                }
            }
            Mode::Chunked => {
                let mut k = 0;
                while off < size {
                    let n = (size - off).min(CHUNK_SIZES[k % CHUNK_SIZES.len()] as u64);
                    k += 1;
                    push_hex(&mut self.wbuf, n);
                    self.wbuf.extend_from_slice(b"\r\n");
                    let send = if mid {
                        n.min(limit.saturating_sub(off))
                    } else {
                        n
                    };
                    let at = self.wbuf.len();
                    self.wbuf.resize(at + send as usize, 0);
                    pattern_into(off, &mut self.wbuf[at..]);
                    if send < n {
                        (&self.stream).write_all(&self.wbuf)?;
                        return Ok(false);
                    }
                    self.wbuf.extend_from_slice(b"\r\n");
                    (&self.stream).write_all(&self.wbuf)?;
                    self.wbuf.clear();
                    off += n;
                }
                if mid {
                    // size 0, or the cut fell on a chunk boundary: stop before the last chunk
                    if !self.wbuf.is_empty() {
                        (&self.stream).write_all(&self.wbuf)?;
                    }
                    return Ok(false);
                }
                self.wbuf.extend_from_slice(b"0\r\n\r\n");
                (&self.stream).write_all(&self.wbuf)?;
            }
        }
        Ok(!self.req.close && !mid)
    }

    /// 101, then echo raw bytes until EOF.
    fn tunnel(&mut self) -> Result<bool, E> {
        let w = &mut self.wbuf;
        w.clear();
        w.extend_from_slice(b"HTTP/1.1 101 Switching Protocols\r\nX-Node: ");
        w.extend_from_slice(self.inner.name.as_bytes());
        w.extend_from_slice(b"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n");
        (&self.stream).write_all(&self.wbuf)?;
        if self.rend > self.rpos {
            (&self.stream).write_all(&self.rbuf[self.rpos..self.rend])?;
            self.rpos = self.rend;
        }
        loop {
            match self.stream.read(&mut self.rbuf) {
                Ok(0) => break,
                Ok(n) => (&self.stream).write_all(&self.rbuf[..n])?,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Err(E::Io),
            }
        }
        let _ = self.stream.shutdown(Shutdown::Write);
        Err(E::Io) // closed; nothing more to send
    }
}
