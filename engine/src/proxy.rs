//! The request path, by its phases: **read head** (buffer-less while idle), **route**
//! (redirect, limits, persistence, selection), **connect** (pool or new, retried on
//! another server), **send** (the rewritten head, then the body streamed), **relay** (the
//! response head rewritten, the body streamed and re-framed where needed), **log** (once
//! per request, failures included).
//!
//! Large Content-Length bodies between plain TCP sockets are spliced through a pipe of
//! the core's (`splice_body`); the rest is copied through pooled buffers.
//!
//! The per-request work is a boxed future of its own, so that an idle connection's
//! future stays small.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime};

use monoio::buf::IoBufMut;
use monoio::io::{
    AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, CancelableAsyncReadRent, Splitable,
};
use monoio::net::TcpStream;

use crate::balance::{self, Candidate};
use crate::http::chunked::{chunk_header, ChunkedDecoder};
use crate::http::head::{
    eq_ic, parse_request, parse_response, BodyLen, Hdr, Method, RequestHead, ResponseHead,
};
use crate::http::{error_response, push_u64, simple_response};
use crate::idle::{ticks_for, Wake};
use crate::log::Record;
use crate::persist;
use crate::snapshot::{FrontendRt, Snapshot};
use crate::worker::{Worker, BUF_SIZE, HOLD_TICKS, PIPE_SIZE, TICK};

/// The read size for large bodies.
const LARGE_BUF: usize = 64 * 1024;
/// A Content-Length body with more than this still to come is large: spliced on plain
/// TCP, else moved in `LARGE_BUF` reads and writes.
const LARGE_BODY: u64 = 2 * BUF_SIZE as u64;

/// What the client connection does after an exchange.
enum Next {
    KeepAlive,
    Close,
    /// Shut down writing, drain briefly, then close (after a 4xx, RFC 9112 §9.6).
    Linger,
    Tunnel(TcpStream),
}

/// A client stream: plain TCP or TLS.
pub trait ClientIo: AsyncReadRent + AsyncWriteRent + monoio::io::Split + 'static {
    /// Waits for the next request's first bytes right after a response, with a read
    /// buffer; ends with [`Idle::Demote`] when the connection should wait on without one
    /// (see [`crate::idle`]).
    fn hold_read(
        &mut self,
        w: &Worker,
        buf: Vec<u8>,
        expire_ticks: u64,
        canceller: &mut Option<monoio::io::Canceller>,
    ) -> impl Future<Output = Idle>;

    /// Waits without a buffer for up to `expire_ticks` (after [`Idle::Demote`]).
    fn long_wait(&mut self, w: &Worker, expire_ticks: u64) -> impl Future<Output = Idle>;

    /// The plain TCP stream, when there is one to splice into (not under TLS).
    fn plain(&mut self) -> Option<&mut TcpStream> {
        None
    }

    /// Leaves the connection in the core's park for its long idle (see [`crate::park`]);
    /// gives it back where it cannot be parked (TLS, or epoll refused), or `None` when it
    /// was lost on the way (the connection is then closed).
    fn park(self, w: &Worker, how: Parking) -> Result<(), Option<Self>>
    where
        Self: Sized,
    {
        let _ = (w, how);
        Err(Some(self))
    }
}

/// What a parked connection keeps.
pub struct Parking {
    pub peer: SocketAddr,
    pub fe: usize,
    pub first: bool,
    pub accepted: Instant,
    /// Ticks until its keep-alive (or first-request) timeout.
    pub ticks: u64,
}

pub enum Idle {
    /// Bytes arrived (the buffer may still be empty after a buffer-less wait).
    Ready(Vec<u8>),
    /// Still idle after the hold: wait on without a buffer, `left` ticks at most.
    Demote {
        left: u64,
    },
    Eof,
    Expired,
    Stopped,
}

impl ClientIo for TcpStream {
    fn plain(&mut self) -> Option<&mut TcpStream> {
        Some(self)
    }

    fn park(self, w: &Worker, how: Parking) -> Result<(), Option<Self>> {
        use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
        let Some(park) = w.park.as_ref() else {
            return Err(Some(self));
        };
        let now = w.idle.now.get();
        let tick = |t: u64| t.min(u32::MAX as u64) as u32;
        let accepted_ticks = (how.accepted.elapsed().as_millis() / TICK.as_millis()) as u64;
        // No operation is in flight on the stream here (the hold's read has completed),
        // so monoio gives its descriptor up (deregistered from the epoll driver).
        // SAFETY: into_raw_fd hands over sole ownership of an open descriptor.
        let fd = unsafe { OwnedFd::from_raw_fd(self.into_raw_fd()) };
        let p = crate::park::Parked {
            fd,
            peer: how.peer,
            fe: how.fe as u32,
            first: how.first,
            accepted_tick: tick(now.saturating_sub(accepted_ticks)),
            expire_at: tick(now.saturating_add(how.ticks)),
        };
        park.park(p).map_err(|p| p.stream().ok())?;
        w.parked_one();
        Ok(())
    }

    async fn hold_read(
        &mut self,
        w: &Worker,
        buf: Vec<u8>,
        expire_ticks: u64,
        canceller: &mut Option<monoio::io::Canceller>,
    ) -> Idle {
        // Keep the buffer for a short while after a response: most next requests come
        // soon, and a read straight into it costs nothing extra.
        let b = if buf.capacity() == 0 {
            w.get_buf()
        } else {
            buf
        };
        let (key, h) = w.idle.register_with(
            canceller.take().unwrap_or_default(),
            HOLD_TICKS,
            expire_ticks,
        );
        let (r, b) = self.cancelable_read(b, h).await;
        let age = w.idle.age(key);
        let (wake, c) = w.idle.remove_with(key);
        *canceller = c;
        match r {
            Ok(0) => {
                w.put_buf(b);
                return Idle::Eof;
            }
            Ok(_) => return Idle::Ready(b),
            Err(_) => {}
        }
        w.put_buf(b);
        match wake {
            Wake::Demote => {
                // A zero-length receive consumes nothing, so dropping it loses nothing:
                // no canceller (and none kept) while the connection idles long.
                *canceller = None;
                Idle::Demote {
                    left: expire_ticks.saturating_sub(age).max(1),
                }
            }
            Wake::Expired => Idle::Expired,
            Wake::Stop => Idle::Stopped,
            Wake::Pending => Idle::Eof,
        }
    }

    #[allow(clippy::manual_async_fn)]
    fn long_wait(&mut self, w: &Worker, expire_ticks: u64) -> impl Future<Output = Idle> {
        // An `async move` block, not an `async fn`: no second copy of the arguments in
        // the future every long-idle connection holds.
        async move {
            // A zero-length receive completes when data (or EOF) arrives.
            let key = w.idle.register(expire_ticks);
            let woken = w.idle.woken(key);
            let read = self.read(Vec::<u8>::new());
            let out = monoio::select! {
                (r, _) = read => match r {
                    Ok(_) => Idle::Ready(w.get_buf()),
                    Err(_) => Idle::Eof,
                },
                wk = woken => if wk == Wake::Stop { Idle::Stopped } else { Idle::Expired },
            };
            w.idle.remove(key);
            out
        }
    }
}

impl ClientIo for monoio_rustls::ServerTlsStream<TcpStream> {
    /// TLS reads cannot give their buffer back midway: the whole wait keeps it.
    async fn hold_read(
        &mut self,
        w: &Worker,
        buf: Vec<u8>,
        expire_ticks: u64,
        _canceller: &mut Option<monoio::io::Canceller>,
    ) -> Idle {
        let buf = if buf.capacity() == 0 {
            w.get_buf()
        } else {
            buf
        };
        let key = w.idle.register(expire_ticks);
        let len = buf.len();
        let woken = w.idle.woken(key);
        let read = self.read(buf.slice_mut(len..));
        let out = monoio::select! {
            (r, s) = read => {
                let buf = s.into_inner();
                match r {
                    Ok(0) | Err(_) => { w.put_buf(buf); Idle::Eof }
                    Ok(_) => Idle::Ready(buf),
                }
            },
            wk = woken => if wk == Wake::Stop { Idle::Stopped } else { Idle::Expired },
        };
        w.idle.remove(key);
        out
    }

    async fn long_wait(&mut self, w: &Worker, expire_ticks: u64) -> Idle {
        // Not reached (hold_read never demotes); the same wait, for completeness.
        let mut none = None;
        self.hold_read(w, Vec::new(), expire_ticks, &mut none).await
    }
}

/// The client's read buffer: `v[start..]` holds bytes not yet used.
struct ClientBuf {
    v: Vec<u8>,
    start: usize,
}

impl ClientBuf {
    fn data(&self) -> &[u8] {
        &self.v[self.start..]
    }
    fn is_empty(&self) -> bool {
        self.start >= self.v.len()
    }
    fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start >= self.v.len() {
            self.start = 0;
            self.v.clear();
        }
    }
    /// Makes room to append: moves unread bytes to the front, grows up to `limit`.
    fn make_room(&mut self, w: &Worker, limit: usize) {
        if self.v.capacity() == 0 {
            self.v = w.get_buf();
        }
        if self.start > 0 {
            self.v.drain(..self.start);
            self.start = 0;
        }
        if self.v.len() == self.v.capacity() && self.v.capacity() < limit {
            self.v.reserve(limit.max(BUF_SIZE) - self.v.len());
        }
    }
    fn release(&mut self, w: &Worker) {
        if self.is_empty() {
            let v = std::mem::take(&mut self.v);
            w.put_buf(v);
            self.start = 0;
        }
    }
}

async fn read_into<R: AsyncReadRent>(r: &mut R, cb: &mut ClientBuf) -> io::Result<usize> {
    let v = std::mem::take(&mut cb.v);
    let len = v.len();
    let (res, s) = r.read(v.slice_mut(len..)).await;
    cb.v = s.into_inner();
    res
}

async fn write_vec<W: AsyncWriteRent>(
    w: &Worker,
    wr: &mut W,
    buf: Vec<u8>,
    t: Duration,
) -> (io::Result<()>, Vec<u8>) {
    match w.idle.bounded(t, wr.write_all(buf)).await {
        Ok((Ok(_), b)) => (Ok(()), b),
        Ok((Err(e), b)) => (Err(e), b),
        Err(_) => (
            Err(io::Error::new(io::ErrorKind::TimedOut, "write timeout")),
            Vec::new(),
        ),
    }
}

/// Counts the connection out when its task ends, however it ends.
struct ConnGuard(Option<Rc<Worker>>);

impl Drop for ConnGuard {
    fn drop(&mut self) {
        if let Some(w) = self.0.take() {
            w.conn_closed();
        }
    }
}

/// Entry point for an accepted connection: the task the core spawns is the plain
/// connection's future itself (no wrapper holding a second copy of the stream), or the
/// TLS one, whose large state only TLS connections pay for.
pub fn spawn_accepted(w: Rc<Worker>, fe: usize, stream: TcpStream, peer: SocketAddr) {
    let tls = w.snap.borrow().frontends.get(fe).map(|f| f.tls.is_some());
    match tls {
        None => w.conn_closed(),
        Some(true) => {
            monoio::spawn(serve_tls(w, fe, stream, peer));
        }
        Some(false) => {
            monoio::spawn(serve(w, fe, stream, peer, false));
        }
    }
}

async fn serve_tls(w: Rc<Worker>, fe: usize, stream: TcpStream, peer: SocketAddr) {
    let mut guard = ConnGuard(Some(w.clone()));
    let snap = w.snapshot();
    let Some(front) = snap.frontends.get(fe) else {
        return;
    };
    let Some(t) = &front.tls else { return };
    let acceptor = w.tls.borrow().get(fe).cloned().flatten();
    let Some(acc) = acceptor else { return };
    let why = match monoio::time::timeout(t.handshake_timeout, acc.accept(stream)).await {
        Ok(Ok(tls)) => {
            // From here `serve` counts the connection out.
            guard.0 = None;
            return serve(w, fe, tls, peer, true).await;
        }
        Ok(Err(e)) => format!("TLS handshake failed: {e}"),
        Err(_) => "TLS handshake timed out".to_string(),
    };
    // Counted always, logged at most once a second per core.
    let unsaid = w.tls_failures.borrow_mut().record(fe, Instant::now());
    match unsaid {
        Some(0) => tracing::info!(client = %peer, frontend = %front.name, "{why}"),
        Some(n) => tracing::info!(
            client = %peer,
            frontend = %front.name,
            "{why} ({n} more failed handshakes on this core in the last second, not logged)"
        ),
        None => {}
    }
}

/// A connection's state that lives across its phases.
struct Conn {
    /// X-Forwarded-For, rendered once per connection.
    xff: Box<str>,
    cb: ClientBuf,
    canceller: Option<monoio::io::Canceller>,
    accepted: Instant,
    /// No request yet: the wait is bounded by `timeout_http_request`, and ends with 408.
    first: bool,
}

/// How a connection's active phase ended.
enum Phase {
    /// Idle past the hold: wait on without a buffer, for `ticks` at most.
    Idle {
        ticks: u64,
    },
    End(End),
}

/// How a connection's request loop ended.
enum End {
    Close,
    /// Boxed: kept small, as it is part of every connection's future.
    Tunnel(Box<(TcpStream, Vec<u8>, Duration)>),
}

/// Serves one client connection to its end.
///
/// A connection alternates between two phases. **Active**: requests and the short hold
/// after each response (with a read buffer), in one boxed future that lives while the
/// client keeps sending. **Long idle**: only a buffer-less wait, in the task's own small
/// future, which is all that an idle keep-alive connection costs.
///
/// (A function returning an `async move` block rather than an `async fn`: the block uses
/// its captures in place, where an `async fn` keeps a second copy of its arguments in
/// every connection's future.)
pub fn serve<S: ClientIo>(
    w: Rc<Worker>,
    fe: usize,
    io: S,
    peer: SocketAddr,
    tls: bool,
) -> impl Future<Output = ()> {
    let st = Conn {
        xff: peer.ip().to_canonical().to_string().into_boxed_str(),
        cb: ClientBuf {
            v: Vec::new(),
            start: 0,
        },
        canceller: None,
        accepted: Instant::now(),
        first: true,
    };
    serve_from(w, fe, io, peer, tls, st, false)
}

/// When a parked connection was accepted, from its tick.
fn accepted_at(w: &Worker, p: &crate::park::Parked) -> Instant {
    let ticks = w.idle.now.get().saturating_sub(u64::from(p.accepted_tick));
    let ago = TICK.saturating_mul(ticks.min(u32::MAX as u64) as u32);
    Instant::now().checked_sub(ago).unwrap_or_else(Instant::now)
}

/// Serves a connection that comes back from the park: bytes (or a close) arrived.
pub fn resume(w: Rc<Worker>, p: crate::park::Parked) {
    let (fe, peer, first, accepted) = (p.fe as usize, p.peer, p.first, accepted_at(&w, &p));
    let Ok(stream) = p.stream() else {
        w.conn_closed();
        return;
    };
    let st = Conn {
        xff: peer.ip().to_canonical().to_string().into_boxed_str(),
        cb: ClientBuf {
            v: w.get_buf(),
            start: 0,
        },
        canceller: None,
        accepted,
        first,
    };
    monoio::spawn(serve_from(w, fe, stream, peer, false, st, true));
}

/// A parked connection past its timeout: closed, after a 408 when it never sent a
/// request.
pub fn expire_parked(w: Rc<Worker>, p: crate::park::Parked) {
    let (fe, peer, accepted) = (p.fe as usize, p.peer, accepted_at(&w, &p));
    let stream = if p.first { p.stream().ok() } else { None };
    let Some(mut stream) = stream else {
        w.conn_closed();
        return;
    };
    monoio::spawn(async move {
        let _guard = ConnGuard(Some(w.clone()));
        answer_408(&w, fe, &mut stream, peer, accepted).await;
    });
}

#[allow(clippy::manual_async_fn)]
fn serve_from<S: ClientIo>(
    w: Rc<Worker>,
    fe: usize,
    mut io: S,
    peer: SocketAddr,
    tls: bool,
    mut st: Conn,
    mut ready: bool,
) -> impl Future<Output = ()> {
    async move {
        let mut guard = ConnGuard(Some(w.clone()));
        // Nothing but the boxes and the long wait is held across the awaits below.
        let end = loop {
            let fut: std::pin::Pin<Box<dyn Future<Output = Phase> + '_>> =
                Box::pin(active(&w, fe, &mut io, peer, &mut st, ready));
            let ticks = match fut.await {
                Phase::End(e) => break e,
                Phase::Idle { ticks } => ticks,
            };
            // Long idle: the connection leaves its task for the core's park (plain TCP);
            // where it cannot, it waits here without a buffer.
            let how = Parking {
                peer,
                fe,
                first: st.first,
                accepted: st.accepted,
                ticks,
            };
            match io.park(&w, how) {
                Ok(()) => {
                    // The park counts it now.
                    guard.0 = None;
                    return;
                }
                Err(Some(back)) => io = back,
                Err(None) => return,
            }
            match io.long_wait(&w, ticks).await {
                Idle::Ready(v) => {
                    st.cb.v = v;
                    st.cb.start = 0;
                    ready = true;
                }
                Idle::Expired if st.first => {
                    // Nothing arrived within timeout_http_request.
                    let fut: std::pin::Pin<Box<dyn Future<Output = ()> + '_>> =
                        Box::pin(answer_408(&w, fe, &mut io, peer, st.accepted));
                    fut.await;
                    break End::Close;
                }
                Idle::Demote { .. } | Idle::Eof | Idle::Expired | Idle::Stopped => {
                    break End::Close
                }
            }
        };
        match end {
            End::Close => {
                if tls {
                    // close_notify, so that the client can tell a complete close-delimited
                    // body from a cut one.
                    let fut: std::pin::Pin<Box<dyn Future<Output = ()> + '_>> = Box::pin(async {
                        let _ = monoio::time::timeout(Duration::from_secs(1), io.shutdown()).await;
                    });
                    fut.await;
                }
            }
            End::Tunnel(t) => {
                let (up, leftover, idle) = *t;
                let fut: std::pin::Pin<Box<dyn Future<Output = ()>>> =
                    Box::pin(tunnel(io, up, leftover, idle));
                fut.await;
            }
        }
    }
}

/// The active phase: requests one after another, each followed by a short wait for the
/// next with the read buffer kept; ends when the connection ends or idles past the hold.
/// `ready`: the long wait saw bytes arrive, so read them at once.
async fn active<S: ClientIo>(
    w: &Rc<Worker>,
    fe: usize,
    io: &mut S,
    peer: SocketAddr,
    st: &mut Conn,
    mut ready: bool,
) -> Phase {
    loop {
        w.refresh();
        // READ HEAD: wait (the buffer kept for the hold), then parse in `request`.
        let mut started = Instant::now();
        if st.cb.is_empty() && !ready {
            let ticks = {
                let snap = w.snap.borrow();
                let Some(front) = snap.frontends.get(fe) else {
                    return Phase::End(End::Close);
                };
                let t = &front.cfg.timeouts;
                ticks_for(if st.first {
                    t.http_request
                } else {
                    t.keep_alive
                })
            };
            let buf = std::mem::take(&mut st.cb.v);
            match io.hold_read(w, buf, ticks, &mut st.canceller).await {
                Idle::Ready(v) => {
                    st.cb.v = v;
                    st.cb.start = 0;
                }
                Idle::Demote { left } => return Phase::Idle { ticks: left },
                Idle::Eof | Idle::Stopped => return Phase::End(End::Close),
                Idle::Expired => {
                    if st.first {
                        // Nothing arrived within timeout_http_request.
                        answer_408(w, fe, io, peer, st.accepted).await;
                    }
                    return Phase::End(End::Close);
                }
            }
            started = Instant::now();
        }
        ready = false;
        let next = request(w, fe, io, &mut st.cb, peer, started, &st.xff).await;
        st.first = false;
        match next {
            Next::KeepAlive => {
                if w.stopping.get() {
                    st.cb.release(w);
                    return Phase::End(End::Close);
                }
                if st.cb.is_empty() {
                    st.cb.release(w);
                }
            }
            Next::Close => {
                st.cb.release(w);
                return Phase::End(End::Close);
            }
            Next::Linger => {
                st.cb.release(w);
                linger(io).await;
                return Phase::End(End::Close);
            }
            Next::Tunnel(up) => {
                let leftover = st.cb.data().to_vec();
                st.cb.release(w);
                let idle = {
                    let snap = w.snap.borrow();
                    snap.frontends
                        .get(fe)
                        .map(|f| f.cfg.timeouts.client.max(f.cfg.timeouts.server))
                        .unwrap_or(Duration::from_secs(50))
                };
                return Phase::End(End::Tunnel(Box::new((up, leftover, idle))));
            }
        }
    }
}

/// Reads one request head (the connection had bytes) and runs the exchange. Boxed by the
/// caller: an idle connection's future holds none of this.
#[allow(clippy::too_many_arguments)]
async fn request<S: ClientIo>(
    w: &Worker,
    fe: usize,
    io: &mut S,
    cb: &mut ClientBuf,
    peer: SocketAddr,
    started: Instant,
    xff: &str,
) -> Next {
    let snap_rc = w.snapshot();
    let snap: &Snapshot = &snap_rc;
    // The log's clock only when there is a log.
    let logging = w.log.borrow().enabled();
    let wall = if logging {
        SystemTime::now() - started.elapsed()
    } else {
        SystemTime::UNIX_EPOCH
    };
    let t = snap.frontends[fe].cfg.timeouts;
    let deadline = started + t.http_request;
    let head = loop {
        match parse_request(cb.data(), &snap.head_limits) {
            Ok(Some(h)) => break Ok(h),
            Ok(None) => {}
            Err(e) => break Err(Some(e)),
        }
        cb.make_room(w, snap.head_limits.max_head_bytes + 1024);
        let now = Instant::now();
        if now >= deadline {
            break Err(None);
        }
        match w.idle.bounded(deadline - now, read_into(io, cb)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                // The client left mid-head (or between requests: not an error).
                if !cb.is_empty() && !w.log.borrow().dontlognull {
                    log_simple(w, snap, fe, peer, wall, started, 400, "CR", 0);
                }
                cb.release(w);
                return Next::Close;
            }
            Ok(Ok(_)) => {}
            Err(_) => break Err(None),
        }
    };
    let head = match head {
        Ok(h) => h,
        Err(None) => {
            // The head did not arrive within timeout_http_request.
            let resp = error_response(408, true);
            let n = resp.len() as u64;
            let _ = write_vec(w, io, resp, t.client).await;
            log_simple(w, snap, fe, peer, wall, started, 408, "cR", n);
            cb.release(w);
            return Next::Close;
        }
        Err(Some(e)) => {
            let status = e.status();
            tracing::debug!(client = %peer, "refused request: {e}");
            let resp = error_response(status, true);
            let n = resp.len() as u64;
            let _ = write_vec(w, io, resp, t.client).await;
            log_simple(w, snap, fe, peer, wall, started, status, "PR", n);
            cb.release(w);
            return Next::Linger;
        }
    };
    let tq = if logging {
        started.elapsed()
    } else {
        Duration::ZERO
    };
    exchange(w, snap, fe, io, cb, peer, head, wall, started, tq, xff).await
}

async fn answer_408<S: ClientIo>(
    w: &Worker,
    fe: usize,
    io: &mut S,
    peer: SocketAddr,
    accepted: Instant,
) {
    let wall = SystemTime::now() - accepted.elapsed();
    let snap_rc = w.snapshot();
    let snap: &Snapshot = &snap_rc;
    let t = snap.frontends[fe].cfg.timeouts;
    let resp = error_response(408, true);
    let n = resp.len() as u64;
    let _ = write_vec(w, io, resp, t.client).await;
    if !w.log.borrow().dontlognull {
        log_simple(w, snap, fe, peer, wall, accepted, 408, "cR", n);
    }
}

async fn linger<S: ClientIo>(io: &mut S) {
    let _ = io.shutdown().await;
    let drain = async {
        let mut n = 0;
        let mut buf = Vec::with_capacity(4096);
        while n < 64 * 1024 {
            let (r, b) = io.read(buf).await;
            buf = b;
            buf.clear();
            match r {
                Ok(0) | Err(_) => break,
                Ok(k) => n += k,
            }
        }
    };
    let _ = monoio::time::timeout(Duration::from_millis(200), drain).await;
}

#[allow(clippy::too_many_arguments)]
fn log_simple(
    w: &Worker,
    snap: &Snapshot,
    fe: usize,
    peer: SocketAddr,
    wall: SystemTime,
    started: Instant,
    status: u16,
    term: &str,
    bytes: u64,
) {
    let tt = started.elapsed().as_millis() as i64;
    let rec = Record {
        client: peer,
        start: wall,
        frontend_idx: fe,
        backend: None,
        server: None,
        tq: tt,
        tw: -1,
        tc: -1,
        tr: -1,
        tt,
        status,
        bytes,
        cookie: *b"--",
        term: [term.as_bytes()[0], term.as_bytes()[1]],
        request: "<BADREQ>".into(),
    };
    w.log
        .borrow_mut()
        .push(&rec, &snap.frontends, &snap.backends, &snap.servers);
}

/// A failure on the request path: which side, what the client gets, how the log names it.
#[derive(Debug, Clone, Copy, thiserror::Error)]
enum Fail {
    #[error("server timed out")]
    ServerTimeout,
    #[error("server closed or sent a malformed response")]
    BadResponse,
    #[error("client aborted")]
    ClientAbort,
    #[error("client timed out")]
    ClientTimeout,
    #[error("client sent a malformed body")]
    BadBody,
    #[error("request body too large")]
    BodyTooLarge,
}

impl Fail {
    fn status(self) -> u16 {
        match self {
            Fail::ServerTimeout => 504,
            Fail::BadResponse => 502,
            Fail::ClientAbort => 400,
            Fail::ClientTimeout => 408,
            Fail::BadBody => 400,
            Fail::BodyTooLarge => 413,
        }
    }
}

struct Ctx<'a> {
    w: &'a Worker,
    snap: &'a Snapshot,
    fe: &'a FrontendRt,
    rec: Record,
    /// The valid persistence cookie the request carried.
    sticky: Option<persist::Valid>,
}

impl Ctx<'_> {
    /// Sends an answer the engine makes itself; the log counts its bytes once sent.
    async fn reply<S: ClientIo>(&mut self, io: &mut S, resp: Vec<u8>) {
        let n = resp.len() as u64;
        let (r, _) = write_vec(self.w, io, resp, self.fe.cfg.timeouts.client).await;
        self.rec.bytes = if r.is_ok() { n } else { 0 };
    }

    fn log(&mut self, status: u16, term: &[u8; 2], started: Instant) {
        self.rec.status = status;
        self.rec.term = *term;
        let snap = self.snap;
        if !self.w.log.borrow().enabled() {
            return;
        }
        self.rec.tt = started.elapsed().as_millis() as i64;
        self.w
            .log
            .borrow_mut()
            .push(&self.rec, &snap.frontends, &snap.backends, &snap.servers);
    }
}

fn is_excluded_header(name: &[u8], kind: Hdr, fe: &FrontendRt, drop_underscore: bool) -> bool {
    if name.contains(&b'_') {
        // PHP (CGI) turns `-` into `_`: `X_Forwarded_Proto` would reach Moodle as the
        // header the engine sets. Dropped unless allowed; even then never one that
        // passes for a protected name.
        return drop_underscore || {
            let dashed: Vec<u8> = name
                .iter()
                .map(|&c| if c == b'_' { b'-' } else { c })
                .collect();
            is_excluded_header(&dashed, crate::http::head::hdr_kind(&dashed), fe, true)
        };
    }
    (fe.cfg.forwarded_for && kind == Hdr::XForwardedFor)
        || kind == Hdr::XForwardedProto
        || kind == Hdr::XForwardedSsl
        || fe.set_names_lc.iter().any(|n| eq_ic(n, name))
}

/// Writes the request head for the server. Returns the server cookie the request named.
#[allow(clippy::too_many_arguments)]
#[doc(hidden)]
pub fn build_request_head(
    buf: &[u8],
    req: &RequestHead,
    fe: &FrontendRt,
    be: Option<&crate::snapshot::BackendRt>,
    xff: &str,
    drop_underscore: bool,
    out: &mut Vec<u8>,
    turn: &mut Option<Vec<u8>>,
) -> Option<Vec<u8>> {
    let mut sticky = None;
    out.extend_from_slice(req.method_str(buf));
    out.push(b' ');
    out.extend_from_slice(req.target(buf));
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let cookie_cfg = be.and_then(|b| b.cookie.as_ref());
    for f in &req.fields {
        if f.drop {
            continue;
        }
        let name = f.name(buf);
        if is_excluded_header(name, f.kind, fe, drop_underscore) {
            continue;
        }
        let mut value = f.value(buf);
        let stripped: Vec<u8>;
        if f.kind == Hdr::Cookie
            && value
                .windows(persist::TURN_COOKIE.len())
                .any(|x| x == persist::TURN_COOKIE.as_bytes())
        {
            // The waiting room's turn cookie is ours: the server never sees it.
            let (t, rest) = persist::take_cookie(value, persist::TURN_COOKIE.as_bytes());
            if turn.is_none() {
                *turn = t;
            }
            match rest {
                Some(r) => {
                    stripped = r;
                    value = &stripped;
                }
                None => continue,
            }
        }
        if let (Some(c), true) = (cookie_cfg, f.kind == Hdr::Cookie) {
            let (found, rewritten) = persist::rewrite_request_cookie(
                value,
                c,
                be.map(|b| b.app_cookie.as_str()).unwrap_or(""),
            );
            if sticky.is_none() {
                sticky = found;
            }
            if let Some(v) = rewritten {
                out.extend_from_slice(name);
                out.extend_from_slice(b": ");
                out.extend_from_slice(&v);
                out.extend_from_slice(b"\r\n");
            }
            continue;
        }
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    match req.body {
        BodyLen::Length(n) => {
            out.extend_from_slice(b"Content-Length: ");
            push_u64(out, n);
            out.extend_from_slice(b"\r\n");
        }
        BodyLen::Chunked => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
        _ => {}
    }
    if let Some((a, b)) = req.upgrade {
        out.extend_from_slice(b"Connection: Upgrade\r\nUpgrade: ");
        out.extend_from_slice(&buf[a as usize..b as usize]);
        out.extend_from_slice(b"\r\n");
    }
    if fe.cfg.forwarded_for {
        out.extend_from_slice(b"X-Forwarded-For: ");
        out.extend_from_slice(xff.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(&fe.set_lines);
    sticky
}

/// The placeholder index of the Host header for HTTP/1.0 requests without one: the head
/// ends with the empty line, which we write after possibly adding Host.
#[doc(hidden)]
pub fn finish_head(out: &mut Vec<u8>, need_host: Option<&str>) {
    if let Some(h) = need_host {
        out.extend_from_slice(b"Host: ");
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// `https://<host><port><target>` from the validated Host (its port replaced by the HTTPS
/// port) and the origin-form target.
fn redirect_location(buf: &[u8], req: &RequestHead, port: &str) -> Option<String> {
    let host = std::str::from_utf8(req.host(buf)?).ok()?;
    let target = std::str::from_utf8(req.target(buf)).ok()?;
    if !target.starts_with('/') {
        return None;
    }
    let name = if host.starts_with('[') {
        &host[..=host.find(']')?]
    } else {
        host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host)
    };
    Some(format!("https://{name}{port}{target}"))
}

#[allow(clippy::too_many_arguments)]
async fn exchange<S: ClientIo>(
    w: &Worker,
    snap: &Snapshot,
    fe_idx: usize,
    io: &mut S,
    cb: &mut ClientBuf,
    peer: SocketAddr,
    req: RequestHead,
    wall: SystemTime,
    started: Instant,
    tq: Duration,
    xff: &str,
) -> Next {
    let fe = &snap.frontends[fe_idx];
    let t = fe.cfg.timeouts;
    let logging = w.log.borrow().enabled();
    let request_line = if logging {
        req.request_line(cb.data())
    } else {
        String::new()
    };
    let mut cx = Ctx {
        w,
        snap,
        fe,
        rec: Record {
            client: peer,
            start: wall,
            frontend_idx: fe_idx,
            backend: fe.backend,
            server: None,
            tq: tq.as_millis() as i64,
            tw: -1,
            tc: -1,
            tr: -1,
            tt: 0,
            status: 0,
            bytes: 0,
            cookie: *b"--",
            term: *b"--",
            request: request_line,
        },
        sticky: None,
    };
    let client_ka = req.client_keep_alive();
    let has_body = req.body != BodyLen::None;

    // ROUTE: redirect to HTTPS unless the path is an exception.
    if let Some(r) = &fe.cfg.redirect_https {
        // Judged on the normalised path: a target with dot segments is never excepted.
        let excepted = crate::http::path::under_prefix(
            req.target(cb.data()),
            r.except_prefixes.iter().map(String::as_str),
        );
        if !excepted || fe.backend.is_none() {
            let (status, resp) = match redirect_location(cb.data(), &req, &fe.redirect_port) {
                Some(loc) => (
                    r.code,
                    simple_response(r.code, &[("Location", &loc)], "", has_body || !client_ka),
                ),
                None => (400, error_response(400, true)),
            };
            cb.consume(req.head_len);
            let close = has_body || !client_ka || status == 400;
            let n = resp.len() as u64;
            let (res, _) = write_vec(w, io, resp, t.client).await;
            cx.rec.backend = None;
            cx.rec.bytes = n;
            cx.log(status, if res.is_ok() { b"--" } else { b"CD" }, started);
            return if res.is_err() || close {
                Next::Close
            } else {
                Next::KeepAlive
            };
        }
    }
    let Some(be_idx) = fe.backend else {
        cb.consume(req.head_len);
        cx.reply(io, error_response(503, true)).await;
        cx.log(503, b"PR", started);
        return Next::Close;
    };
    let be = &snap.backends[be_idx];
    let bt = be.cfg.timeouts;

    // Limits on the body.
    let max_body = snap.cfg.limits.max_body_bytes;
    if let BodyLen::Length(n) = req.body {
        if max_body > 0 && n > max_body {
            cb.consume(req.head_len);
            cx.reply(io, error_response(413, true)).await;
            cx.log(413, b"PR", started);
            return Next::Linger;
        }
    }

    // The head for the server (the same whichever server takes it).
    let mut turn: Option<Vec<u8>> = None;
    let mut out = w.get_buf();
    let drop_underscore = snap.cfg.limits.drop_underscore_headers;
    let sticky = build_request_head(
        cb.data(),
        &req,
        fe,
        Some(be),
        xff,
        drop_underscore,
        &mut out,
        &mut turn,
    );
    let need_host = if req.host.is_none() { Some(()) } else { None };
    let method = req.method;
    let head_len = req.head_len;
    let expect_continue = req.expect_continue && req.minor == 1;
    let upgrade = req.upgrade.is_some();
    let client_minor = req.minor;
    let body_len = req.body;
    drop(req);
    cb.consume(head_len);

    // Persistence: does the cookie name a server that can take the request?
    let states = w.states.borrow().clone();
    let cookie_cfg = be.cookie.as_ref();
    let mut sticky_server = None;
    let now_s = persist::now_secs();
    if let (Some(c), Some(v)) = (cookie_cfg, sticky.as_ref()) {
        let found = match (c.mode, be.codec.as_ref()) {
            (config::CookieMode::Insert, Some(codec)) => codec.decode(v, now_s),
            _ => (0..be.count)
                .find(|&k| snap.servers[be.first + k].cookie.as_bytes() == v.as_slice())
                .map(|server| persist::Valid {
                    server,
                    issued: 0,
                    seen: 0,
                })
                .ok_or(persist::Refused::Invalid),
        };
        match found {
            Ok(valid) => {
                let i = be.first + valid.server;
                let c = candidate_ignoring_full(w, snap, &states, i, &[]);
                if balance::sticky_ok(&c) {
                    sticky_server = Some(i);
                    cx.sticky = Some(valid);
                    cx.rec.cookie[0] = b'V';
                } else {
                    cx.rec.cookie[0] = b'D';
                }
            }
            Err(persist::Refused::Expired) => cx.rec.cookie[0] = b'E',
            Err(persist::Refused::Invalid) => cx.rec.cookie[0] = b'I',
        }
    } else if cookie_cfg.is_some() {
        cx.rec.cookie[0] = b'N';
    }
    if cookie_cfg.is_some() {
        cx.rec.cookie[1] = b'N';
    }

    // Body bytes already here: sent with the head when the whole body is.
    let mut body_sent_in_head = 0u64;
    let mut chunked_dec = None;
    let mut out_tail_done = false;

    // A chunked body whose first bytes are already here is checked before any server
    // sees the head.
    if body_len == BodyLen::Chunked && !cb.is_empty() {
        let mut dry = ChunkedDecoder::new();
        let data = cb.data();
        let mut pos = 0;
        let mut bad = false;
        while pos < data.len() {
            match dry.step(&data[pos..]) {
                Ok(st) => {
                    pos += st.consumed;
                    if st.done || st.consumed == 0 {
                        break;
                    }
                }
                Err(_) => {
                    bad = true;
                    break;
                }
            }
        }
        if bad || (max_body > 0 && dry.total > max_body) {
            w.put_buf(out);
            let status = if bad { 400 } else { 413 };
            cx.reply(io, error_response(status, true)).await;
            cx.log(status, b"PR", started);
            return Next::Linger;
        }
    }

    // QUEUE and CONNECT, with retries on other servers.
    let t_queue = Instant::now();
    let mut tried: Vec<usize> = Vec::new();
    let retries = bt.retries;
    let mut attempts = 0u32;
    let mut t_connect = t_queue;
    let mut fresh_for: Option<usize> = None;
    let mut head_done = false;
    // A server took the request and closed without a byte of response (it was retried).
    let mut answered_badly = false;
    loop {
        let (mut up, sid, reused) = loop {
            let now_s = persist::now_secs();
            let turn_since = turn
                .as_ref()
                .and_then(|v| persist::turn_since(&w.shared.turn_key, v, now_s));
            let waited;
            let sid = match acquire(
                w,
                snap,
                be_idx,
                sticky_server,
                &tried,
                bt.queue,
                turn_since.is_some(),
            )
            .await
            {
                Acquired::Server(i, w8) => {
                    waited = w8;
                    i
                }
                refused => {
                    w.put_buf(out);
                    let (resp, term, queued) = match refused {
                        Acquired::WaitingRoom => {
                            // The turn cookie keeps the student's place: a returning student
                            // goes before those who arrived after it.
                            let since = turn_since.unwrap_or(now_s);
                            (
                                waiting_room_response(
                                    &be.waiting_room,
                                    &persist::turn_value(&w.shared.turn_key, since),
                                ),
                                b"sQ",
                                true,
                            )
                        }
                        Acquired::QueueTimeout => (be.response_503(), b"sQ", true),
                        // A server took the request and closed without answering, and no
                        // other is left to try: a bad gateway, not an unavailable service.
                        _ if answered_badly => (error_response(502, true), b"SH", false),
                        _ => (be.response_503(), b"SC", false),
                    };
                    let status = if term == b"SH" { 502 } else { 503 };
                    cx.rec.bytes = resp.len() as u64;
                    let _ = write_vec(w, io, resp, t.client).await;
                    if queued {
                        cx.rec.tw = t_queue.elapsed().as_millis() as i64;
                    }
                    cx.log(status, term, started);
                    return Next::Close;
                }
            };
            if attempts == 0 && waited {
                t_connect = Instant::now();
                cx.rec.tw = t_connect.duration_since(t_queue).as_millis() as i64;
            } else if attempts == 0 {
                cx.rec.tw = 0;
            }
            cx.rec.server = Some(sid);
            match connect(w, snap, sid, bt.connect, fresh_for == Some(sid)).await {
                Ok((s, reused)) => break (s, sid, reused),
                Err(e) => {
                    release(snap, sid);
                    // Out of descriptors, memory or source ports here: not the server's
                    // fault, so it is not blamed (no failure, no avoid, no passive check),
                    // and no other server would do better.
                    let local = local_shortage(&e);
                    if local {
                        tracing::warn!(core = w.id, server = %snap.servers[sid].name, "cannot connect: {e}");
                    } else {
                        tracing::debug!(server = %snap.servers[sid].name, "connect failed: {e}");
                        w.counter(snap.generation, sid, |c| {
                            c.failures += 1;
                            c.avoid_until = Some(Instant::now() + Duration::from_secs(2));
                        });
                        // Its idle pooled connections are likely dead too.
                        if let Some(p) = w.pools.borrow_mut().get_mut(sid) {
                            p.clear();
                        }
                        w.passive(sid, crate::control::PassiveKind::ConnectFailed);
                        if sticky_server == Some(sid) {
                            // The sticky server failed: balance anew, with a fresh cookie.
                            sticky_server = None;
                            cx.rec.cookie[0] = b'D';
                        }
                        tried.push(sid);
                        attempts += 1;
                    }
                    if local || attempts > retries {
                        w.put_buf(out);
                        let resp = be.response_503();
                        cx.rec.bytes = resp.len() as u64;
                        let _ = write_vec(w, io, resp, t.client).await;
                        cx.rec.tc = t_connect.elapsed().as_millis() as i64;
                        cx.log(503, if local { b"RC" } else { b"SC" }, started);
                        return Next::Close;
                    }
                }
            }
        };
        // Counted against the core's descriptor budget until this attempt is over.
        let _busy = w.upstream_busy();
        let connected = Instant::now();
        cx.rec.tc = connected.duration_since(t_connect).as_millis() as i64;
        if !head_done {
            head_done = true;
            let srv = &snap.servers[sid];
            let is_10_without_host = need_host.is_some();
            finish_head(
                &mut out,
                if is_10_without_host {
                    Some(&srv.host_header)
                } else {
                    None
                },
            );
            // Include the buffered body with the head when it is all there.
            if let BodyLen::Length(n) = body_len {
                let avail = cb.data().len() as u64;
                if avail >= n && (n as usize) < 64 * 1024 {
                    out.extend_from_slice(&cb.data()[..n as usize]);
                    cb.consume(n as usize);
                    body_sent_in_head = n;
                    out_tail_done = true;
                }
            } else if body_len == BodyLen::None {
                out_tail_done = true;
            }
        }
        w.counter(snap.generation, sid, |c| {
            c.active += 1;
            c.total += 1;
        });
        let result = send_and_relay(
            &mut cx,
            io,
            cb,
            &mut up,
            std::mem::take(&mut out),
            reused,
            out_tail_done,
            body_len,
            body_sent_in_head,
            &mut chunked_dec,
            method,
            expect_continue,
            client_minor,
            client_ka,
            upgrade,
            sid,
            started,
            connected,
        )
        .await;
        w.counter(snap.generation, sid, |c| {
            c.active = c.active.saturating_sub(1)
        });
        release(snap, sid);
        if w.counters_generation() == snap.generation {
            let us = started.elapsed().as_micros() as u64;
            let mut h = w.hist.borrow_mut();
            if let Some(h) = h.get_mut(sid) {
                h.saturating_record(us.max(1));
            }
        }
        return match result {
            Relay::Retry { out: again, stale } => {
                out = again;
                if stale {
                    // A pooled connection the server had already closed: nothing reached
                    // it. The same server, on a new connection.
                    fresh_for = Some(sid);
                    sticky_server = Some(sid);
                } else {
                    // The server closed without answering an idempotent request: another
                    // server, like a failed connect.
                    answered_badly = true;
                    tried.push(sid);
                    attempts += 1;
                    if sticky_server == Some(sid) {
                        sticky_server = None;
                    }
                    w.passive(sid, crate::control::PassiveKind::ConnectFailed);
                    if attempts > retries {
                        w.put_buf(out);
                        let resp = error_response(502, true);
                        cx.rec.bytes = resp.len() as u64;
                        let _ = write_vec(w, io, resp, t.client).await;
                        cx.log(502, b"SH", started);
                        return Next::Close;
                    }
                }
                continue;
            }
            Relay::Done {
                keep_server,
                keep_client,
            } => {
                w.put_buf(out);
                if keep_server {
                    w.pool_put(sid, up, snap.generation);
                }
                if keep_client {
                    Next::KeepAlive
                } else {
                    Next::Close
                }
            }
            Relay::Upgrade => {
                w.put_buf(out);
                Next::Tunnel(up)
            }
            Relay::Failed(f, term, answered) => {
                if !answered {
                    let status = f.status();
                    let resp = if status == 503 {
                        be.response_503()
                    } else {
                        error_response(status, true)
                    };
                    cx.reply(io, resp).await;
                    cx.log(status, &term, started);
                } else {
                    cx.log(cx.rec.status, &term, started);
                }
                w.put_buf(out);
                if matches!(f, Fail::BadBody | Fail::BodyTooLarge) {
                    Next::Linger
                } else {
                    Next::Close
                }
            }
        };
    }
}

/// The waiting room (pre-rendered) with the turn cookie added after its status line.
fn waiting_room_response(room: &[u8], turn: &str) -> Vec<u8> {
    let mut resp = Vec::with_capacity(room.len() + 96);
    let line_end = room
        .iter()
        .position(|&c| c == b'\n')
        .map(|p| p + 1)
        .unwrap_or(0);
    resp.extend_from_slice(&room[..line_end]);
    resp.extend_from_slice(b"Set-Cookie: ");
    resp.extend_from_slice(persist::TURN_COOKIE.as_bytes());
    resp.push(b'=');
    resp.extend_from_slice(turn.as_bytes());
    resp.extend_from_slice(b"; Path=/; Max-Age=600; HttpOnly\r\n");
    resp.extend_from_slice(&room[line_end..]);
    resp
}

/// The outcome of waiting for a server slot.
enum Acquired {
    /// The server, and whether the request waited in the queue for it.
    Server(usize, bool),
    /// Past the backend's max_queue: the waiting room.
    WaitingRoom,
    /// Waited timeout_queue for a slot.
    QueueTimeout,
    /// No server can take the request at all.
    Nothing,
}

/// Takes one of a server's maxconn slots (all cores together) if one is free.
fn try_take(snap: &Snapshot, i: usize) -> bool {
    let srv = &snap.servers[i];
    if srv.maxconn == 0 {
        return true;
    }
    let a = &srv.inflight;
    let mut cur = a.load(std::sync::atomic::Ordering::Relaxed);
    loop {
        if cur >= srv.maxconn {
            return false;
        }
        match a.compare_exchange_weak(
            cur,
            cur + 1,
            std::sync::atomic::Ordering::AcqRel,
            std::sync::atomic::Ordering::Relaxed,
        ) {
            Ok(_) => return true,
            Err(c) => cur = c,
        }
    }
}

fn release(snap: &Snapshot, i: usize) {
    let srv = &snap.servers[i];
    if srv.maxconn > 0 {
        srv.inflight
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// Picks a server and takes a slot on it; when every server that could take the request
/// is at its maxconn, waits in this core's queue (in order) up to timeout_queue. A sticky
/// request waits for its own server.
async fn acquire(
    w: &Worker,
    snap: &Snapshot,
    be_idx: usize,
    sticky: Option<usize>,
    tried: &[usize],
    timeout_queue: Duration,
    has_turn: bool,
) -> Acquired {
    let try_once = |w: &Worker| -> Result<usize, bool> {
        w.refresh();
        let states = w.states.borrow().clone();
        if let Some(i) = sticky {
            let c = candidate_ignoring_full(w, snap, &states, i, tried);
            if balance::sticky_ok(&c) {
                return if try_take(snap, i) { Ok(i) } else { Err(true) };
            }
        }
        match select(w, snap, &states, be_idx, tried) {
            Some(i) if try_take(snap, i) => Ok(i),
            Some(_) => Err(true),
            None => {
                // Would anything be eligible if it were not full?
                let be = &snap.backends[be_idx];
                let any_full = (be.first..be.first + be.count).any(|i| {
                    let c = candidate_ignoring_full(w, snap, &states, i, tried);
                    c.state == crate::balance::ServerState::Up
                        && c.weight > 0
                        && !c.excluded
                        && snap.servers[i].maxconn > 0
                });
                Err(any_full)
            }
        }
    };
    let queue_empty = w.queue_front(be_idx).is_none();
    if queue_empty {
        match try_once(w) {
            Ok(i) => return Acquired::Server(i, false),
            Err(false) => return Acquired::Nothing,
            Err(true) => {}
        }
    }
    // Wait in order.
    let be = &snap.backends[be_idx];
    if let Some(max) = be.cfg.max_queue {
        // Students back from the waiting room may queue past max_queue (up to twice it):
        // they keep their turn over newcomers.
        let limit = if has_turn {
            max.saturating_mul(2).max(1)
        } else {
            max
        };
        if be.queued.load(std::sync::atomic::Ordering::Relaxed) >= limit {
            return Acquired::WaitingRoom;
        }
    }
    let ticket = w.queue_push(be_idx, sticky);
    be.queued.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let start = Instant::now();
    let deadline = start + timeout_queue;
    let out = loop {
        if w.queue_front(be_idx) == Some(ticket) || sticky.is_some() {
            match try_once(w) {
                Ok(i) => break Acquired::Server(i, true),
                Err(false) => break Acquired::Nothing,
                Err(true) => {}
            }
        }
        if Instant::now() >= deadline {
            break Acquired::QueueTimeout;
        }
        monoio::time::sleep(Duration::from_millis(2)).await;
    };
    w.queue_remove(be_idx, ticket, sticky);
    be.queued.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    if let Some(h) = w.queue_hist.borrow_mut().get_mut(be_idx) {
        h.saturating_record((start.elapsed().as_micros() as u64).max(1));
    }
    out
}

fn candidate_ignoring_full(
    w: &Worker,
    snap: &Snapshot,
    states: &crate::snapshot::States,
    i: usize,
    tried: &[usize],
) -> Candidate {
    Candidate {
        full: false,
        ..candidate(w, snap, states, i, tried)
    }
}

enum Relay {
    /// Nothing was answered and the request may go again (idempotent, all of it in
    /// `out`); `stale`: it went on a pooled connection the server had closed.
    Retry {
        out: Vec<u8>,
        stale: bool,
    },
    Done {
        keep_server: bool,
        keep_client: bool,
    },
    Upgrade,
    /// Failed; `answered`: the client already got (part of) a response.
    Failed(Fail, [u8; 2], bool),
}

fn candidate(
    w: &Worker,
    snap: &Snapshot,
    states: &crate::snapshot::States,
    i: usize,
    tried: &[usize],
) -> Candidate {
    let st = states
        .servers
        .get(i)
        .copied()
        .unwrap_or(crate::snapshot::ServerStatus {
            state: crate::balance::ServerState::Up,
            weight: snap.servers[i].weight,
            share: 1000,
        });
    let c = w.counter_get(snap.generation, i);
    let avoid = c.avoid_until.map(|u| Instant::now() < u).unwrap_or(false);
    let srv = &snap.servers[i];
    // Panic (panic_below): a server DOWN by its checks still takes new clients.
    let panic = states.panic.get(srv.backend).copied().unwrap_or(false);
    let state = if panic && st.state == crate::balance::ServerState::Down {
        crate::balance::ServerState::Up
    } else {
        st.state
    };
    let full =
        srv.maxconn > 0 && srv.inflight.load(std::sync::atomic::Ordering::Relaxed) >= srv.maxconn;
    Candidate {
        state,
        // In thousandths: a slow server keeps `share` of its weight (crate::live).
        weight: st.weight * st.share,
        backup: srv.backup,
        active: c.active,
        excluded: tried.contains(&i) || avoid,
        full,
    }
}

/// Picks a server for a new client: a pure function of the states and this core's
/// balancing state.
fn select(
    w: &Worker,
    snap: &Snapshot,
    states: &crate::snapshot::States,
    be_idx: usize,
    tried: &[usize],
) -> Option<usize> {
    let be = &snap.backends[be_idx];
    // On the stack for the usual few servers.
    let mut stack = [Candidate {
        state: crate::balance::ServerState::Down,
        weight: 0,
        backup: false,
        active: 0,
        excluded: true,
        full: false,
    }; 32];
    let mut heap: Vec<Candidate>;
    let cands: &mut [Candidate] = if be.count <= stack.len() {
        for (k, i) in (be.first..be.first + be.count).enumerate() {
            stack[k] = candidate(w, snap, states, i, tried);
        }
        &mut stack[..be.count]
    } else {
        heap = (be.first..be.first + be.count)
            .map(|i| candidate(w, snap, states, i, tried))
            .collect();
        &mut heap[..]
    };
    let pick = |cands: &[Candidate]| {
        let mut rr = w.rr.borrow_mut();
        let rr = &mut rr[be_idx];
        match be.balance {
            config::Balance::RoundRobin => balance::pick_roundrobin(cands, rr),
            config::Balance::LeastConn => balance::pick_leastconn(cands, rr),
        }
    };
    if let Some(i) = pick(cands) {
        return Some(be.first + i);
    }
    // Every server was avoided after recent failures: try them anyway, except the ones
    // this request already tried.
    for (k, c) in cands.iter_mut().enumerate() {
        c.excluded = tried.contains(&(be.first + k));
    }
    pick(cands).map(|i| be.first + i)
}

/// A pooled connection when there is a quiet one, else a new one within timeout_connect.
async fn connect(
    w: &Worker,
    snap: &Snapshot,
    sid: usize,
    timeout: Duration,
    fresh_only: bool,
) -> io::Result<(TcpStream, bool)> {
    // A pooled connection is reused only when nothing at all is readable on it: no stray
    // bytes a server wrote after its last response (they would reach the next client as
    // its answer), and no close. Every reuse is checked, whatever the request.
    while let Some(p) = if fresh_only { None } else { w.pool_take(sid) } {
        if quiet(&p.stream) {
            return Ok((p.stream, true));
        }
    }
    let addr = snap.servers[sid].addr;
    let mut freed = false;
    loop {
        match monoio::time::timeout(timeout, TcpStream::connect_addr(addr)).await {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                return Ok((s, false));
            }
            // Out of descriptors: the idle pooled connections go first, then one more try.
            Ok(Err(e)) if !freed && w.out_of_descriptors(&e) > 0 => freed = true,
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(io::Error::new(io::ErrorKind::TimedOut, "connect timeout")),
        }
    }
}

/// A connect that failed for want of something here (descriptors, memory, source
/// ports), not because of the server.
fn local_shortage(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM | libc::EADDRNOTAVAIL)
    )
}

/// Whether an idle pooled connection is fit for a new request: still open (the server
/// has not closed it) and holding no unread byte. A non-blocking peek.
fn quiet(s: &TcpStream) -> bool {
    use std::os::fd::AsRawFd;
    let mut b = [0u8; 1];
    // SAFETY: valid fd and buffer.
    let n = unsafe {
        libc::recv(
            s.as_raw_fd(),
            b.as_mut_ptr().cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock
}

#[allow(clippy::too_many_arguments)]
async fn send_and_relay<S: ClientIo>(
    cx: &mut Ctx<'_>,
    io: &mut S,
    cb: &mut ClientBuf,
    up: &mut TcpStream,
    out: Vec<u8>,
    reused: bool,
    whole_request_in_out: bool,
    body_len: BodyLen,
    body_sent: u64,
    dec: &mut Option<ChunkedDecoder>,
    method: Method,
    expect_continue: bool,
    client_minor: u8,
    client_ka: bool,
    upgrade: bool,
    sid: usize,
    started: Instant,
    connected: Instant,
) -> Relay {
    let w = cx.w;
    let snap = cx.snap;
    let t = cx.fe.cfg.timeouts;
    let bt = snap.backends[snap.servers[sid].backend].cfg.timeouts;
    let max_body = snap.cfg.limits.max_body_bytes;

    // SEND: the head (with the whole body when it was here), then the body.
    // Only an idempotent request without a body goes again (RFC 9110 §9.2.2).
    let replayable =
        whole_request_in_out && method.is_idempotent() && body_len == BodyLen::None && !upgrade;
    let (r, out) = write_vec(w, up, out, bt.server).await;
    if r.is_err() {
        if replayable && !out.is_empty() {
            return Relay::Retry { out, stale: reused };
        }
        w.put_buf(out);
        return Relay::Failed(Fail::BadResponse, *b"SH", false);
    }
    // Kept until the response starts, in case the request must go again.
    let mut keep = Some(out);
    if expect_continue && client_minor == 1 {
        let (r, _) = write_vec(w, io, b"HTTP/1.1 100 Continue\r\n\r\n".to_vec(), t.client).await;
        if r.is_err() {
            return Relay::Failed(Fail::ClientAbort, *b"CR", true);
        }
    }
    if !whole_request_in_out {
        if let Err((f, term)) = send_body(
            w, io, cb, up, body_len, body_sent, dec, max_body, t.client, bt.server,
        )
        .await
        {
            return Relay::Failed(f, term, false);
        }
    }

    // RELAY: the response head. The whole head must arrive within timeout_server of the
    // request's end, however the server trickles it.
    let t_resp = connected;
    let head_deadline = Instant::now() + bt.server;
    let mut sb = w.get_buf();
    let head: ResponseHead = loop {
        match parse_response(&sb, method == Method::Head, &snap.head_limits) {
            Ok(Some(h)) if (100..200).contains(&h.status) && h.status != 101 => {
                // Interim responses are not forwarded (we answered 100 ourselves).
                sb.drain(..h.head_len);
                continue;
            }
            Ok(Some(h)) if h.status == 101 && !upgrade => {
                // Switching protocols that the client never asked for: not passed on.
                w.put_buf(sb);
                return Relay::Failed(Fail::BadResponse, *b"PH", false);
            }
            Ok(Some(h)) => break h,
            Ok(None) => {}
            Err(_) => {
                w.put_buf(sb);
                return Relay::Failed(Fail::BadResponse, *b"PH", false);
            }
        }
        if sb.len() == sb.capacity() {
            sb.reserve(snap.head_limits.max_head_bytes);
        }
        let len = sb.len();
        let left = head_deadline.saturating_duration_since(Instant::now());
        match w.idle.bounded(left, up.read(sb.slice_mut(len..))).await {
            Ok((Ok(0), s)) | Ok((Err(_), s)) => {
                sb = s.into_inner();
                if sb.is_empty() && replayable {
                    if let Some(out) = keep.take() {
                        w.put_buf(sb);
                        return Relay::Retry { out, stale: reused };
                    }
                }
                w.put_buf(sb);
                if let Some(o) = keep.take() {
                    w.put_buf(o);
                }
                return Relay::Failed(Fail::BadResponse, *b"SH", false);
            }
            Ok((Ok(_), s)) => sb = s.into_inner(),
            Err(_) => {
                return Relay::Failed(Fail::ServerTimeout, *b"sH", false);
            }
        }
    };
    if let Some(o) = keep.take() {
        w.put_buf(o);
    }
    cx.rec.tr = t_resp.elapsed().as_millis() as i64;
    cx.rec.status = head.status;
    if head.status >= 500 {
        w.counter(snap.generation, sid, |c| c.responses_5xx += 1);
        w.passive(sid, crate::control::PassiveKind::Status5xx);
    } else {
        // Live traffic: the server answers (see crate::live).
        w.counter(snap.generation, sid, |c| c.ok_responses += 1);
    }

    // The head for the client.
    let be = &snap.backends[snap.servers[sid].backend];
    let srv = &snap.servers[sid];
    let stopping = w.stopping.get();
    let is_upgrade = head.status == 101 && upgrade;
    // How the body reaches the client.
    let (client_framing, force_close) = match head.body {
        BodyLen::None => (BodyLen::None, false),
        BodyLen::Length(n) => (BodyLen::Length(n), false),
        BodyLen::Chunked if client_minor == 1 => (BodyLen::Chunked, false),
        BodyLen::Chunked => (BodyLen::Close, true),
        BodyLen::Close if client_minor == 1 => (BodyLen::Chunked, false),
        BodyLen::Close => (BodyLen::Close, true),
    };
    let keep_client = client_ka && !force_close && !stopping && !is_upgrade && head.status != 101;
    if head.te_codings.is_some() && client_framing != BodyLen::Chunked {
        // Codings besides chunked that an HTTP/1.0 client cannot be told of.
        w.put_buf(sb);
        return Relay::Failed(Fail::BadResponse, *b"PH", false);
    }
    let mut hb = w.get_buf();
    hb.extend_from_slice(b"HTTP/1.1 ");
    push_u64(&mut hb, head.status as u64);
    hb.push(b' ');
    if head.reason.1 > head.reason.0 {
        hb.extend_from_slice(&sb[head.reason.0 as usize..head.reason.1 as usize]);
    } else {
        hb.extend_from_slice(crate::http::reason(head.status).as_bytes());
    }
    hb.extend_from_slice(b"\r\n");
    let cookie_cfg = be.cookie.as_ref();
    let now_s = persist::now_secs();
    let sticky_same = cx.sticky.filter(|v| be.first + v.server == sid);
    let insert_cookie = matches!(cookie_cfg, Some(c) if c.mode == config::CookieMode::Insert)
        && match (sticky_same, be.codec.as_ref()) {
            (Some(v), Some(codec)) => codec.needs_refresh(&v, now_s),
            (Some(_), None) => false,
            (None, _) => true,
        };
    let mut has_cache_private = false;
    for f in &head.fields {
        if f.drop {
            continue;
        }
        let name = f.name(&sb);
        let value = f.value(&sb);
        if let Some(c) = cookie_cfg {
            if f.kind == Hdr::SetCookie {
                let cname = persist::set_cookie_name(value);
                if c.mode == config::CookieMode::Insert && cname == c.name.as_bytes() && c.indirect
                {
                    continue;
                }
                if c.mode == config::CookieMode::Prefix && cname == c.name.as_bytes() {
                    hb.extend_from_slice(b"Set-Cookie: ");
                    hb.extend_from_slice(&persist::prefix_set_cookie(value, &srv.cookie));
                    hb.extend_from_slice(b"\r\n");
                    if cx.rec.cookie[1] == b'-' || cx.rec.cookie[1] == b'I' {
                        cx.rec.cookie[1] = b'R';
                    }
                    continue;
                }
            }
            if insert_cookie && c.nocache && f.kind == Hdr::CacheControl {
                let v = value;
                if v.windows(7).any(|x| x.eq_ignore_ascii_case(b"private"))
                    || v.windows(8).any(|x| x.eq_ignore_ascii_case(b"no-store"))
                {
                    has_cache_private = true;
                } else {
                    // A cacheable response that sets our cookie is marked private.
                    hb.extend_from_slice(b"Cache-Control: private\r\n");
                    has_cache_private = true;
                    continue;
                }
            }
        }
        hb.extend_from_slice(name);
        hb.extend_from_slice(b": ");
        hb.extend_from_slice(value);
        hb.extend_from_slice(b"\r\n");
    }
    if insert_cookie && !is_upgrade {
        if let (Some(c), Some(codec)) = (cookie_cfg, be.codec.as_ref()) {
            let issued = sticky_same
                .map(|v| v.issued)
                .filter(|&i| i > 0)
                .unwrap_or(now_s);
            let value = codec.encode(sid - be.first, issued, now_s);
            persist::set_cookie_line(c, &value, &mut hb);
            cx.rec.cookie[1] = if sticky_same.is_some() { b'U' } else { b'I' };
            if c.nocache && !has_cache_private {
                hb.extend_from_slice(b"Cache-Control: private\r\n");
            }
        }
    }
    match client_framing {
        BodyLen::Length(n) => {
            hb.extend_from_slice(b"Content-Length: ");
            push_u64(&mut hb, n);
            hb.extend_from_slice(b"\r\n");
        }
        BodyLen::Chunked => {
            hb.extend_from_slice(b"Transfer-Encoding: ");
            if let Some((a, b)) = head.te_codings {
                // Codings besides chunked (gzip, chunked): the client is told of them.
                for t in crate::http::head::tokens(&sb[a as usize..b as usize]) {
                    if !eq_ic(t, b"chunked") {
                        hb.extend_from_slice(t);
                        hb.extend_from_slice(b", ");
                    }
                }
            }
            hb.extend_from_slice(b"chunked\r\n");
        }
        _ if head.body == BodyLen::None
            && method != Method::Head
            && !matches!(head.status, 100..=199 | 204 | 304) =>
        {
            // An empty body (Content-Length: 0) is framed as one, or the client would read
            // until the connection closes.
            hb.extend_from_slice(b"Content-Length: 0\r\n");
        }
        _ => {
            // HEAD and 304 keep the server's Content-Length header semantics: we dropped
            // it; for HEAD re-add it when the server sent one.
            if method == Method::Head || head.status == 304 {
                if let Some(f) = head
                    .fields
                    .iter()
                    .find(|f| eq_ic(f.name(&sb), b"content-length"))
                {
                    hb.extend_from_slice(b"Content-Length: ");
                    hb.extend_from_slice(f.value(&sb));
                    hb.extend_from_slice(b"\r\n");
                }
            }
        }
    }
    if is_upgrade {
        hb.extend_from_slice(b"Connection: Upgrade\r\n");
    } else if !keep_client {
        hb.extend_from_slice(b"Connection: close\r\n");
    } else if client_minor == 0 {
        hb.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    hb.extend_from_slice(b"\r\n");
    let head_bytes = hb.len() as u64;
    sb.drain(..head.head_len);

    // The body bytes that came with the head go out in the same write when they fit.
    let mut keep_server = head.server_keep_alive() && !is_upgrade;
    let mut sent_body: u64 = 0;
    let mut dec = ChunkedDecoder::new();
    let mut done = false;
    match head.body {
        BodyLen::None => {
            if !sb.is_empty() {
                keep_server = false;
            }
            done = true;
        }
        BodyLen::Length(n) => {
            let take = (sb.len() as u64).min(n) as usize;
            hb.extend_from_slice(&sb[..take]);
            if sb.len() > take {
                keep_server = false;
            }
            sb.clear();
            sent_body = take as u64;
            done = sent_body == n;
        }
        BodyLen::Chunked => {
            let (fwd, fin, bad) =
                decode_into(&mut dec, &sb, client_framing == BodyLen::Chunked, &mut hb);
            if fin && dec.overrun {
                // Bytes after the last chunk: never passed on, and the connection is not
                // reused.
                keep_server = false;
            }
            if bad {
                w.put_buf(sb);
                w.put_buf(hb);
                return Relay::Failed(Fail::BadResponse, *b"SD", false);
            }
            sent_body += fwd;
            if fin {
                done = true;
            }
            sb.clear();
        }
        BodyLen::Close => {
            if !sb.is_empty() {
                reframe_into(&sb, client_framing == BodyLen::Chunked, &mut hb);
                sent_body += sb.len() as u64;
                sb.clear();
            }
        }
    }
    let (r, hb) = write_vec(w, io, hb, t.client).await;
    w.put_buf(hb);
    if r.is_err() {
        w.put_buf(sb);
        return Relay::Failed(Fail::ClientAbort, *b"CD", true);
    }
    cx.rec.bytes = head_bytes + sent_body;
    if is_upgrade {
        w.put_buf(sb);
        cx.log(101, b"--", started);
        return Relay::Upgrade;
    }
    if !done {
        match relay_body(
            w,
            up,
            io,
            sb,
            head.body,
            client_framing,
            sent_body,
            dec,
            t.client,
            bt.server,
        )
        .await
        {
            Ok((n, clean_end)) => {
                cx.rec.bytes += n;
                if !clean_end {
                    keep_server = false;
                }
            }
            Err((f, term, n)) => {
                cx.rec.bytes += n;
                return Relay::Failed(f, term, true);
            }
        }
    } else {
        w.put_buf(sb);
    }
    // LOG
    let status = cx.rec.status;
    cx.log(status, b"--", started);
    Relay::Done {
        keep_server,
        keep_client,
    }
}

/// Decodes chunked bytes: appends them as they are (to a chunked client) or only their
/// data. Returns (data bytes, finished, malformed).
fn decode_into(
    dec: &mut ChunkedDecoder,
    input: &[u8],
    passthrough: bool,
    out: &mut Vec<u8>,
) -> (u64, bool, bool) {
    let mut pos = 0;
    let mut data = 0u64;
    while pos < input.len() {
        match dec.step(&input[pos..]) {
            Ok(s) => {
                let chunk = &input[pos..pos + s.consumed];
                if passthrough {
                    out.extend_from_slice(chunk);
                } else {
                    out.extend_from_slice(&chunk[s.data.clone()]);
                }
                data += s.data.len() as u64;
                pos += s.consumed;
                if s.done {
                    dec.overrun = pos < input.len();
                    return (data, true, false);
                }
                if s.consumed == 0 {
                    break;
                }
            }
            Err(_) => return (data, false, true),
        }
    }
    (data, false, false)
}

fn reframe_into(data: &[u8], chunked: bool, out: &mut Vec<u8>) {
    if chunked {
        chunk_header(data.len(), out);
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
    } else {
        out.extend_from_slice(data);
    }
}

/// Streams the rest of the response body. Returns the bytes sent and whether the
/// server's connection ended cleanly (reusable).
#[allow(clippy::too_many_arguments)]
async fn relay_body<S: ClientIo>(
    w: &Worker,
    up: &mut TcpStream,
    io: &mut S,
    mut sb: Vec<u8>,
    server_framing: BodyLen,
    client_framing: BodyLen,
    mut sent: u64,
    mut dec: ChunkedDecoder,
    client_t: Duration,
    server_t: Duration,
) -> Result<(u64, bool), (Fail, [u8; 2], u64)> {
    let mut total = 0u64;
    sb.clear();
    // A large body is spliced from the server to a plain TCP client; under TLS, or where
    // splice is refused, it moves in 64 KiB reads and writes, a quarter of the system
    // calls, with a buffer that lives only while the body does (not pooled).
    if let BodyLen::Length(n) = server_framing {
        if n - sent > LARGE_BODY {
            if let Some(client) = io.plain() {
                let spliced =
                    splice_body(w, up, client, n - sent, server_t, client_t, &RESPONSE).await;
                if let Some(r) = spliced {
                    w.put_buf(sb);
                    return r.map(|moved| (moved, true));
                }
            }
            w.put_buf(std::mem::replace(&mut sb, Vec::with_capacity(LARGE_BUF)));
        }
    }
    let mut ob = w.get_buf();
    let result = loop {
        // Read from the server.
        let want = match server_framing {
            BodyLen::Length(n) => ((n - sent) as usize).min(sb.capacity()),
            _ => sb.capacity(),
        };
        let (r, s) = match w
            .idle
            .bounded(
                server_t,
                up.read(std::mem::take(&mut sb).slice_mut(0..want)),
            )
            .await
        {
            Ok(x) => x,
            Err(_) => break Err((Fail::ServerTimeout, *b"sD")),
        };
        sb = s.into_inner();
        let n = r.unwrap_or_default();
        if n == 0 {
            if server_framing == BodyLen::Close {
                // The end of a close-delimited body.
                if client_framing == BodyLen::Chunked {
                    ob.clear();
                    ob.extend_from_slice(b"0\r\n\r\n");
                    let (r, b) = write_vec(w, io, std::mem::take(&mut ob), client_t).await;
                    ob = b;
                    if r.is_err() {
                        break Err((Fail::ClientAbort, *b"CD"));
                    }
                    total += 5;
                }
                break Ok(false);
            }
            // The server died mid-body: the client gets a cut response.
            break Err((Fail::BadResponse, *b"SD"));
        }
        match server_framing {
            BodyLen::Length(len) => {
                sent += n as u64;
                let (r, b) = write_vec(w, io, std::mem::take(&mut sb), client_t).await;
                sb = b;
                if r.is_err() {
                    break Err((Fail::ClientAbort, *b"CD"));
                }
                total += n as u64;
                sb.clear();
                if sent >= len {
                    break Ok(true);
                }
            }
            BodyLen::Chunked => {
                ob.clear();
                let (fwd, fin, bad) = decode_into(
                    &mut dec,
                    &sb[..n],
                    client_framing == BodyLen::Chunked,
                    &mut ob,
                );
                let _ = fwd;
                if bad {
                    break Err((Fail::BadResponse, *b"SD"));
                }
                if !ob.is_empty() {
                    let k = ob.len() as u64;
                    let (r, b) = write_vec(w, io, std::mem::take(&mut ob), client_t).await;
                    ob = b;
                    if r.is_err() {
                        break Err((Fail::ClientAbort, *b"CD"));
                    }
                    total += k;
                }
                sb.clear();
                if fin {
                    // Bytes after the last chunk: the connection is not reused.
                    break Ok(!dec.overrun);
                }
            }
            BodyLen::Close => {
                ob.clear();
                reframe_into(&sb[..n], client_framing == BodyLen::Chunked, &mut ob);
                let k = ob.len() as u64;
                let (r, b) = write_vec(w, io, std::mem::take(&mut ob), client_t).await;
                ob = b;
                if r.is_err() {
                    break Err((Fail::ClientAbort, *b"CD"));
                }
                total += k;
                sb.clear();
            }
            BodyLen::None => break Ok(true),
        }
    };
    w.put_buf(sb);
    w.put_buf(ob);
    result.map(|c| (total, c)).map_err(|(f, t)| (f, t, total))
}

/// How each side's failure is named in a splice: the source ended early or failed, the
/// source timed out, the destination failed or timed out.
struct SpliceSides {
    src_end: (Fail, [u8; 2]),
    src_timeout: (Fail, [u8; 2]),
    dst_fail: (Fail, [u8; 2]),
}

/// A response body: from the server to the client.
const RESPONSE: SpliceSides = SpliceSides {
    src_end: (Fail::BadResponse, *b"SD"),
    src_timeout: (Fail::ServerTimeout, *b"sD"),
    dst_fail: (Fail::ClientAbort, *b"CD"),
};

/// A request body: from the client to the server.
const UPLOAD: SpliceSides = SpliceSides {
    src_end: (Fail::ClientAbort, *b"CD"),
    src_timeout: (Fail::ClientTimeout, *b"cD"),
    dst_fail: (Fail::BadResponse, *b"SD"),
};

/// Moves `left` bytes of a Content-Length body between two plain TCP streams through a
/// pipe of the core's: the kernel hands pages over, nothing is copied through user
/// space. Non-blocking splice(2) calls, and a readiness wait (a poll on the ring) only
/// when one would block; the sockets are non-blocking meanwhile and get their flags back
/// after. A pipe that may still hold bytes afterwards is dropped, not pooled.
///
/// Returns the bytes moved, or the failure with the bytes moved before it; `None` when
/// splicing is unavailable here and nothing was moved (the caller copies instead).
#[allow(clippy::too_many_arguments)]
async fn splice_body(
    w: &Worker,
    src: &mut TcpStream,
    dst: &mut TcpStream,
    mut left: u64,
    src_t: Duration,
    dst_t: Duration,
    sides: &SpliceSides,
) -> Option<Result<u64, (Fail, [u8; 2], u64)>> {
    use std::os::fd::AsRawFd;
    if !w.splice_ok.get() {
        return None;
    }
    let pipe = w.get_pipe()?;
    let (sfd, dfd) = (src.as_raw_fd(), dst.as_raw_fd());
    // The sockets get their flags back however this ends, a dropped future included.
    let (Some(_src_flags), Some(_dst_flags)) = (Nonblocking::set(sfd), Nonblocking::set(dfd))
    else {
        w.put_pipe(pipe);
        return None;
    };
    let (pr, pw) = (pipe.r.as_raw_fd(), pipe.w.as_raw_fd());
    let mut moved = 0u64;
    let mut in_pipe = 0usize;
    let res = loop {
        if left == 0 && in_pipe == 0 {
            break Ok(());
        }
        if left > 0 && in_pipe < PIPE_SIZE {
            let want = (left as usize).min(PIPE_SIZE - in_pipe);
            match splice(sfd, pw, want) {
                Ok(0) => break Err(sides.src_end),
                Ok(n) => {
                    left -= n as u64;
                    in_pipe += n;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    // The source is empty (or the pipe full): wait only with nothing to pass on.
                    if in_pipe == 0 {
                        match w.idle.bounded(src_t, src.readable(false)).await {
                            Ok(Ok(())) => continue,
                            Ok(Err(_)) => break Err(sides.src_end),
                            Err(_) => break Err(sides.src_timeout),
                        }
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    if moved == 0 && in_pipe == 0 && refused(&e) {
                        w.splice_ok.set(false);
                        w.put_pipe(pipe);
                        return None;
                    }
                    break Err(sides.src_end);
                }
            }
        }
        if in_pipe > 0 {
            match splice(pr, dfd, in_pipe) {
                Ok(0) => break Err(sides.dst_fail),
                Ok(m) => {
                    in_pipe -= m.min(in_pipe);
                    moved += m as u64;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    match w.idle.bounded(dst_t, dst.writable(false)).await {
                        Ok(Ok(())) => {}
                        _ => break Err(sides.dst_fail),
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break Err(sides.dst_fail),
            }
        }
    };
    if res.is_ok() {
        w.put_pipe(pipe);
    }
    Some(res.map(|()| moved).map_err(|(f, t)| (f, t, moved)))
}

/// Errors that mean splice itself is unavailable (a seccomp profile, an old kernel).
fn refused(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINVAL | libc::ENOSYS | libc::EPERM | libc::EOPNOTSUPP)
    )
}

/// One non-blocking splice(2) of up to `len` bytes.
fn splice(from: std::os::fd::RawFd, to: std::os::fd::RawFd, len: usize) -> std::io::Result<usize> {
    // SAFETY: plain descriptors; no offsets (sockets and pipes have none).
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    if n < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// A socket made non-blocking for a splice; its flags come back when this is dropped.
struct Nonblocking {
    fd: std::os::fd::RawFd,
    /// The flags before, when O_NONBLOCK had to be added.
    restore: Option<libc::c_int>,
}

impl Nonblocking {
    fn set(fd: std::os::fd::RawFd) -> Option<Nonblocking> {
        // SAFETY: fcntl on a descriptor the caller owns.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        if flags < 0 {
            return None;
        }
        if flags & libc::O_NONBLOCK != 0 {
            return Some(Nonblocking { fd, restore: None });
        }
        // SAFETY: as above.
        if unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
            return None;
        }
        Some(Nonblocking {
            fd,
            restore: Some(flags),
        })
    }
}

impl Drop for Nonblocking {
    fn drop(&mut self) {
        if let Some(flags) = self.restore {
            // SAFETY: the descriptor outlives this guard (it borrows from a live stream).
            unsafe { libc::fcntl(self.fd, libc::F_SETFL, flags) };
        }
    }
}

/// Streams the request body to the server, validating chunked framing and the limit.
#[allow(clippy::too_many_arguments)]
async fn send_body<S: ClientIo>(
    w: &Worker,
    io: &mut S,
    cb: &mut ClientBuf,
    up: &mut TcpStream,
    body: BodyLen,
    already: u64,
    dec: &mut Option<ChunkedDecoder>,
    max_body: u64,
    client_t: Duration,
    server_t: Duration,
) -> Result<(), (Fail, [u8; 2])> {
    match body {
        BodyLen::None | BodyLen::Close => Ok(()),
        BodyLen::Length(n) => {
            let mut remaining = n - already;
            // What is already buffered first.
            if !cb.is_empty() && remaining > 0 {
                let take = (cb.data().len() as u64).min(remaining) as usize;
                let mut b = w.get_buf();
                b.extend_from_slice(&cb.data()[..take]);
                cb.consume(take);
                remaining -= take as u64;
                let (r, b) = write_vec(w, up, b, server_t).await;
                w.put_buf(b);
                if r.is_err() {
                    return Err((Fail::BadResponse, *b"SD"));
                }
            }
            if remaining > LARGE_BODY {
                if let Some(client) = io.plain() {
                    // A large upload on plain TCP: spliced, like large responses.
                    let spliced =
                        splice_body(w, client, up, remaining, client_t, server_t, &UPLOAD).await;
                    if let Some(r) = spliced {
                        return r.map(|_| ()).map_err(|(f, t, _)| (f, t));
                    }
                }
            }
            let mut b = w.get_buf();
            let res = loop {
                if remaining == 0 {
                    break Ok(());
                }
                let want = (remaining as usize).min(b.capacity());
                let (r, s) = match w
                    .idle
                    .bounded(client_t, io.read(std::mem::take(&mut b).slice_mut(0..want)))
                    .await
                {
                    Ok(x) => x,
                    Err(_) => break Err((Fail::ClientTimeout, *b"cD")),
                };
                b = s.into_inner();
                match r {
                    Ok(0) | Err(_) => break Err((Fail::ClientAbort, *b"CD")),
                    Ok(k) => {
                        remaining -= k as u64;
                        let (r, bb) = write_vec(w, up, std::mem::take(&mut b), server_t).await;
                        b = bb;
                        b.clear();
                        if r.is_err() {
                            break Err((Fail::BadResponse, *b"SD"));
                        }
                    }
                }
            };
            w.put_buf(b);
            res
        }
        BodyLen::Chunked => {
            let dec = dec.get_or_insert_with(ChunkedDecoder::new);
            let mut b = w.get_buf();
            let res = loop {
                if cb.is_empty() {
                    cb.make_room(w, BUF_SIZE);
                    match w.idle.bounded(client_t, read_into(io, cb)).await {
                        Ok(Ok(0)) | Ok(Err(_)) => break Err((Fail::ClientAbort, *b"CD")),
                        Ok(Ok(_)) => {}
                        Err(_) => break Err((Fail::ClientTimeout, *b"cD")),
                    }
                }
                let mut pos = 0;
                let data = cb.data();
                let mut fin = false;
                let mut bad = false;
                b.clear();
                while pos < data.len() {
                    match dec.step(&data[pos..]) {
                        Ok(s) => {
                            b.extend_from_slice(&data[pos..pos + s.consumed]);
                            pos += s.consumed;
                            if s.done {
                                fin = true;
                                break;
                            }
                            if s.consumed == 0 {
                                break;
                            }
                        }
                        Err(_) => {
                            bad = true;
                            break;
                        }
                    }
                }
                cb.consume(pos);
                if bad {
                    break Err((Fail::BadBody, *b"PR"));
                }
                if max_body > 0 && dec.total > max_body {
                    break Err((Fail::BodyTooLarge, *b"PR"));
                }
                if !b.is_empty() {
                    let (r, bb) = write_vec(w, up, std::mem::take(&mut b), server_t).await;
                    b = bb;
                    if r.is_err() {
                        break Err((Fail::BadResponse, *b"SD"));
                    }
                }
                if fin {
                    break Ok(());
                }
            };
            w.put_buf(b);
            res
        }
    }
}

/// A tunnel after 101 Switching Protocols: bytes both ways until either side closes.
async fn tunnel<S: ClientIo>(io: S, up: TcpStream, leftover: Vec<u8>, idle: Duration) {
    let (mut cr, mut cw) = io.into_split();
    let (mut sr, mut sw) = up.into_split();
    if !leftover.is_empty() {
        let (r, _) = sw.write_all(leftover).await;
        if r.is_err() {
            return;
        }
    }
    monoio::join!(pump(&mut cr, &mut sw, idle), pump(&mut sr, &mut cw, idle));
}

/// One direction of a tunnel: copies until EOF, an error or `idle` without data, then
/// shuts the other side's writing down.
async fn pump<R: AsyncReadRent, W: AsyncWriteRent>(r: &mut R, w: &mut W, idle: Duration) {
    let mut buf = Vec::with_capacity(16 * 1024);
    loop {
        let (res, b) = match monoio::time::timeout(idle, r.read(buf)).await {
            Ok(x) => x,
            Err(_) => break,
        };
        buf = b;
        match res {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let (res, b) = w.write_all(buf).await;
                buf = b;
                buf.clear();
                if res.is_err() {
                    break;
                }
            }
        }
    }
    let _ = w.shutdown().await;
}
