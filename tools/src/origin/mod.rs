//! A Moodle-like HTTP/1.1 origin: blocking std networking, one thread per connection.
//! The endpoints and faults are listed in the crate documentation.
//!
//! This file owns the public API ([`Origin`], [`Fault`]) and the state the threads share
//! (`Inner`). The parts:
//! - `listener`: binding, the accept loop (and its rebinding after `Refuse`), one thread
//!   per connection, and the connection loop (`Session::serve`).
//! - `request`: reading and parsing a request head and its body (Content-Length or
//!   chunked), query and form fields.
//! - `response`: writing a response head and a whole response.
//! - `routes`: which endpoint answers a request.
//! - `moodle`: the Moodle-like pages: home, health, login, dashboard, quiz submissions,
//!   and the per-node sessions.
//! - `bodies`: the transfer endpoints: echo, upload, download (three framings), slow,
//!   status, the websocket tunnel.
//! - `faults`: the faults' encoding and their effects (refusing and rebinding, reset,
//!   stall).

mod bodies;
mod faults;
mod listener;
mod moodle;
mod request;
mod response;
mod routes;

use std::collections::HashMap;
use std::io;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use socket2::Socket;

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

struct ListenState {
    /// A duplicate of the listening socket, to shut it down from another thread.
    ctl: Option<Socket>,
    listening: bool,
}

struct ConnEntry {
    stream: TcpStream,
    busy: Arc<AtomicBool>,
}

/// What the accept thread, the connection threads and [`Origin`] share.
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
        let listener = listener::bind(addr)?;
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
            .spawn(move || listener::accept_loop(i2, listener))?;
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
            inner.start_refusing(deadline);
        } else if old == Fault::Refuse && f != Fault::Refuse {
            inner.stop_refusing(deadline);
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
