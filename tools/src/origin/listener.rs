//! Accepting connections and serving each: binding the listening socket, the accept loop
//! (closing the listener for `Refuse` and binding the same port again when it clears), one
//! thread per connection with its registry entry, and the connection loop
//! (`Session::serve`: read a head, apply the fault, answer, keep alive or close).

use super::request::{Req, MAX_HEAD};
use super::response::Src;
use super::{lock, wait_timeout, ConnEntry, Fault, Inner, E};
use std::io::{self, Read};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use socket2::{Domain, Protocol, SockRef, Socket, Type};

pub(super) fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.bind(&addr.into())?;
    s.listen(4096)?;
    Ok(s.into())
}

/// Accepts until the origin stops; while [`Fault::Refuse`] holds, the listener is closed
/// and [`rebind`] waits to bind the same port again.
pub(super) fn accept_loop(inner: Arc<Inner>, listener: TcpListener) {
    let mut listener = Some(listener);
    while !inner.stopping() {
        let Some(l) = &listener else {
            match rebind(&inner) {
                Rebind::Stopped => break,
                Rebind::Bound(l) => listener = Some(l),
                Rebind::NotYet => {}
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

enum Rebind {
    /// The origin is stopping.
    Stopped,
    Bound(TcpListener),
    /// Refused again meanwhile, or the bind failed: try again.
    NotYet,
}

/// Refused: waits for the fault to clear, then binds the same port again.
fn rebind(inner: &Inner) -> Rebind {
    let mut st = lock(&inner.listen);
    while !inner.stopping() && inner.fault() == Fault::Refuse {
        st = wait_timeout(&inner.listen_cv, st, Duration::from_millis(200));
    }
    if inner.stopping() {
        return Rebind::Stopped;
    }
    drop(st);
    match bind(inner.addr) {
        Ok(l) => {
            let mut st = lock(&inner.listen);
            if inner.fault() == Fault::Refuse || inner.stopping() {
                return Rebind::NotYet; // refused again meanwhile: drop it
            }
            st.ctl = l.try_clone().ok().map(Socket::from);
            st.listening = true;
            inner.listen_cv.notify_all();
            Rebind::Bound(l)
        }
        Err(e) => {
            eprintln!("origin {}: rebinding {}: {e}", inner.name, inner.addr);
            inner.sleep(Duration::from_millis(50));
            Rebind::NotYet
        }
    }
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

/// One connection's state; buffers are reused from request to request.
pub(super) struct Session<'a> {
    pub(super) inner: &'a Inner,
    pub(super) stream: TcpStream,
    busy: Arc<AtomicBool>,
    pub(super) rbuf: Vec<u8>,
    pub(super) rpos: usize,
    pub(super) rend: usize,
    pub(super) wbuf: Vec<u8>,
    /// collected request body (after the head copy, for /echo)
    pub(super) body: Vec<u8>,
    /// response text body
    pub(super) tbuf: Vec<u8>,
    pub(super) hasher: Sha256,
    pub(super) hashed: u64,
    pub(super) req: Req,
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
}
