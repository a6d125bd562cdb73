//! A client connection's life: accepted (a TLS handshake first where the frontend has
//! TLS), then *active* (requests one after another, each followed by a short hold with
//! its read buffer kept) and *long idle* (parked, or waiting without a buffer), until it
//! ends: closed, lingered on after a 4xx, answered 408 when it never sent a request, or
//! turned into a tunnel after `101 Switching Protocols`.
//!
//! It owns the connection's state across requests ([`Conn`]) and nothing of one
//! request: that is [`super::read_head`] and [`super::exchange`], in a boxed future of
//! its own so that an idle connection's future stays small.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::time::{Duration, Instant};

use monoio::io::{AsyncReadRent, AsyncWriteRent};
use monoio::net::TcpStream;

use super::client_io::{write_all, ClientBuf, ClientIo, Idle, Parking};
use super::read_head::{log_simple, request, Simple};
use super::relay::tunnel;
use crate::core::idle::ticks_for;
use crate::core::park::Parked;
use crate::core::{Buf, ConnGuard, Worker};
use crate::http::error_response;
use crate::ids::FrontendId;
use crate::shared::TICK;

/// What the client connection does after an exchange.
pub enum Next {
    KeepAlive,
    Close,
    /// Shut down writing, drain briefly, then close (after a 4xx, RFC 9112 §9.6).
    Linger,
    Tunnel(TcpStream),
}

/// A connection's state that lives across its requests.
pub struct Conn {
    /// X-Forwarded-For, rendered once per connection.
    pub xff: Box<str>,
    pub cb: ClientBuf,
    pub canceller: Option<monoio::io::Canceller>,
    pub accepted: Instant,
    /// No request yet: the wait is bounded by `timeout_http_request`, and ends with 408.
    pub first: bool,
}

impl Conn {
    fn new(peer: SocketAddr, accepted: Instant, first: bool, buf: Buf) -> Conn {
        Conn {
            xff: peer.ip().to_canonical().to_string().into_boxed_str(),
            cb: ClientBuf::new(buf),
            canceller: None,
            accepted,
            first,
        }
    }
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

/// Entry point for an accepted connection: the task the core spawns is the plain
/// connection's future itself (no wrapper holding a second copy of the stream), or the
/// TLS one, whose large state only TLS connections pay for.
pub fn spawn_accepted(w: Rc<Worker>, fe: FrontendId, stream: TcpStream, peer: SocketAddr) {
    let tls = w
        .snap
        .borrow()
        .frontends
        .get(fe.index())
        .map(|f| f.tls.is_some());
    match tls {
        None => w.conn_closed(),
        Some(true) => {
            monoio::spawn(serve_tls(w, fe, stream, peer));
        }
        Some(false) => {
            let h2c = w.snap.borrow().frontend(fe).cfg.h2c;
            if h2c {
                monoio::spawn(serve_h2c(w, fe, stream, peer));
                return;
            }
            let st = Conn::new(peer, Instant::now(), true, Buf::none());
            monoio::spawn(serve(w, fe, stream, peer, false, st, false));
        }
    }
}

/// A plain connection on a frontend with `h2c`: HTTP/2 if it opens with the preface
/// (prior knowledge), HTTP/1.1 otherwise (the bytes read so far are its first).
async fn serve_h2c(w: Rc<Worker>, fe: FrontendId, mut stream: TcpStream, peer: SocketAddr) {
    use super::h2::sniff::PREFACE;
    let mut guard = ConnGuard::new(&w);
    let t = w.snap.borrow().frontend(fe).cfg.timeouts.http_request;
    let mut cb = ClientBuf::new(w.buf());
    let deadline = Instant::now() + t;
    loop {
        let got = cb.data();
        let n = got.len().min(PREFACE.len());
        if got[..n] != PREFACE[..n] || n == PREFACE.len() {
            break;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match w
            .idle
            .bounded(left, super::client_io::read_into(&mut stream, &mut cb))
            .await
        {
            Ok(Ok(n)) if n > 0 => {}
            // Gone or silent before a whole preface: as HTTP/1.1 would see it.
            _ => break,
        }
    }
    guard.hand_over();
    if cb.data().starts_with(PREFACE) {
        let io = super::h2::prefixed::Prefixed::new(cb.data().to_vec(), stream);
        return Box::pin(super::h2::serve(w, fe, io, peer)).await;
    }
    let ready = !cb.is_empty();
    let mut st = Conn::new(peer, Instant::now(), true, Buf::none());
    st.cb = cb;
    serve(w, fe, stream, peer, false, st, ready).await;
}

async fn serve_tls(w: Rc<Worker>, fe: FrontendId, stream: TcpStream, peer: SocketAddr) {
    let mut guard = ConnGuard::new(&w);
    let snap = w.snapshot();
    let Some(front) = snap.frontends.get(fe.index()) else {
        return;
    };
    let Some(t) = &front.tls else { return };
    let acceptor = w.tls.borrow().get(fe.index()).cloned().flatten();
    let Some(acc) = acceptor else { return };
    let why = match monoio::time::timeout(t.handshake_timeout, acc.accept(stream)).await {
        Ok(Ok(tls)) => {
            // From here `serve` counts the connection out.
            guard.hand_over();
            if tls.alpn_protocol().as_deref() == Some(b"h2") {
                // Boxed: an HTTP/1.1 connection's future holds none of it.
                return Box::pin(super::h2::serve(w, fe, tls, peer)).await;
            }
            let st = Conn::new(peer, Instant::now(), true, Buf::none());
            return serve(w, fe, tls, peer, true, st, false).await;
        }
        Ok(Err(e)) => format!("TLS handshake failed: {e}"),
        Err(_) => "TLS handshake timed out".to_string(),
    };
    // Counted always, logged at most once a second per core.
    let unsaid = w
        .tls_failures
        .borrow_mut()
        .record(fe.index(), Instant::now());
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

/// When a parked connection was accepted, from its tick.
fn accepted_at(w: &Worker, p: &Parked) -> Instant {
    let ticks = w.idle.now.get().saturating_sub(u64::from(p.accepted_tick));
    let ago = TICK.saturating_mul(ticks.min(u32::MAX as u64) as u32);
    Instant::now().checked_sub(ago).unwrap_or_else(Instant::now)
}

/// Serves a connection that comes back from the park: bytes (or a close) arrived.
pub fn resume(w: Rc<Worker>, p: Parked) {
    let (fe, peer, first, accepted) = (p.fe, p.peer, p.first, accepted_at(&w, &p));
    let Ok(stream) = p.stream() else {
        w.conn_closed();
        return;
    };
    let st = Conn::new(peer, accepted, first, w.buf());
    monoio::spawn(serve(w, fe, stream, peer, false, st, true));
}

/// A parked connection past its timeout: closed, after a 408 when it never sent a
/// request.
pub fn expire_parked(w: Rc<Worker>, p: Parked) {
    let (fe, peer, accepted) = (p.fe, p.peer, accepted_at(&w, &p));
    let stream = if p.first { p.stream().ok() } else { None };
    let Some(mut stream) = stream else {
        w.conn_closed();
        return;
    };
    monoio::spawn(async move {
        let _guard = ConnGuard::new(&w);
        answer_408(&w, fe, &mut stream, peer, accepted).await;
    });
}

/// Serves one client connection to its end.
///
/// A connection alternates between two phases. **Active**: requests and the short hold
/// after each response (with a read buffer), in one boxed future that lives while the
/// client keeps sending. **Long idle**: parked (plain TCP), or a buffer-less wait in the
/// task's own small future. `ready`: bytes already arrived, read them at once.
///
/// (A function returning an `async move` block rather than an `async fn`: the block uses
/// its captures in place, where an `async fn` keeps a second copy of its arguments in
/// every connection's future.)
#[allow(clippy::manual_async_fn)]
fn serve<S: ClientIo>(
    w: Rc<Worker>,
    fe: FrontendId,
    mut io: S,
    peer: SocketAddr,
    tls: bool,
    mut st: Conn,
    mut ready: bool,
) -> impl Future<Output = ()> {
    async move {
        let mut guard = ConnGuard::new(&w);
        // Nothing but the boxes and the long wait is held across the awaits below.
        let end = loop {
            let fut: Pin<Box<dyn Future<Output = Phase> + '_>> =
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
                    guard.hand_over();
                    return;
                }
                Err(Some(back)) => io = back,
                Err(None) => return,
            }
            match io.long_wait(&w, ticks).await {
                Idle::Ready(v) => {
                    st.cb = ClientBuf::new(v);
                    ready = true;
                }
                Idle::Expired if st.first => {
                    // Nothing arrived within timeout_http_request.
                    let fut: Pin<Box<dyn Future<Output = ()> + '_>> =
                        Box::pin(answer_408(&w, fe, &mut io, peer, st.accepted));
                    fut.await;
                    break End::Close;
                }
                Idle::Demote { .. } | Idle::Eof | Idle::Expired | Idle::Stopped => {
                    break End::Close
                }
            }
        };
        finish(io, end, tls).await;
    }
}

/// The end of a connection: close_notify under TLS, or the tunnel.
async fn finish<S: ClientIo>(mut io: S, end: End, tls: bool) {
    match end {
        End::Close => {
            if tls {
                // close_notify, so that the client can tell a complete close-delimited
                // body from a cut one.
                let fut: Pin<Box<dyn Future<Output = ()> + '_>> = Box::pin(async {
                    let _ = monoio::time::timeout(Duration::from_secs(1), io.shutdown()).await;
                });
                fut.await;
            }
        }
        End::Tunnel(t) => {
            let (up, leftover, idle) = *t;
            let fut: Pin<Box<dyn Future<Output = ()>>> =
                Box::pin(tunnel::tunnel(io, up, leftover, idle));
            fut.await;
        }
    }
}

/// How long the next wait for a request may last: the first request's head, or the
/// keep-alive timeout.
fn wait_ticks(w: &Worker, fe: FrontendId, first: bool) -> Option<u64> {
    let snap = w.snap.borrow();
    let t = &snap.frontends.get(fe.index())?.cfg.timeouts;
    Some(ticks_for(if first { t.http_request } else { t.keep_alive }))
}

/// The active phase: requests one after another, each followed by a short wait for the
/// next with the read buffer kept; ends when the connection ends or idles past the hold.
/// `ready`: the long wait saw bytes arrive, so read them at once.
async fn active<S: ClientIo>(
    w: &Rc<Worker>,
    fe: FrontendId,
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
            let Some(ticks) = wait_ticks(w, fe, st.first) else {
                return Phase::End(End::Close);
            };
            let buf = std::mem::take(&mut st.cb.v);
            match io.hold_read(w, buf, ticks, &mut st.canceller).await {
                Idle::Ready(v) => st.cb = ClientBuf::new(v),
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
        if let Some(end) = after(w, fe, io, st, next).await {
            return Phase::End(end);
        }
    }
}

/// What the connection does after a request; `None`: the next request.
async fn after<S: ClientIo>(
    w: &Worker,
    fe: FrontendId,
    io: &mut S,
    st: &mut Conn,
    next: Next,
) -> Option<End> {
    match next {
        // Stopping after an answer that said keep-alive: its client may be sending the
        // next request now, so the connection waits for it (a moment: the sweep closes
        // one quiet for the hold), and that one is answered with `Connection: close`.
        Next::KeepAlive => {
            st.cb.release();
            None
        }
        Next::Close => {
            st.cb.release();
            Some(End::Close)
        }
        Next::Linger => {
            st.cb.release();
            linger(io).await;
            Some(End::Close)
        }
        Next::Tunnel(up) => {
            let leftover = st.cb.data().to_vec();
            st.cb = ClientBuf::new(Buf::none());
            let idle = w
                .snap
                .borrow()
                .frontends
                .get(fe.index())
                .map(|f| f.cfg.timeouts.client.max(f.cfg.timeouts.server))
                .unwrap_or(Duration::from_secs(50));
            Some(End::Tunnel(Box::new((up, leftover, idle))))
        }
    }
}

/// A connection that sent nothing within `timeout_http_request`: 408, logged unless
/// `dontlognull`.
pub async fn answer_408<S: ClientIo>(
    w: &Worker,
    fe: FrontendId,
    io: &mut S,
    peer: SocketAddr,
    accepted: Instant,
) {
    let snap_rc = w.snapshot();
    let Some(front) = snap_rc.frontends.get(fe.index()) else {
        return;
    };
    let resp = error_response(408, true);
    let n = resp.len() as u64;
    let _ = write_all(w, io, resp, front.cfg.timeouts.client).await;
    if !w.log.borrow().dontlognull {
        let s = Simple {
            fe,
            peer,
            started: accepted,
            status: 408,
            term: super::outcome::ProxyError::client(
                super::outcome::Phase::Request,
                super::outcome::Kind::TimedOut,
            )
            .term(),
            bytes: n,
        };
        log_simple(w, &snap_rc, &s);
    }
}

/// After a 4xx: shut down writing and drain briefly, so that the close does not turn
/// into a reset that destroys the answer (RFC 9112 §9.6).
async fn linger<S: AsyncReadRent + AsyncWriteRent>(io: &mut S) {
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
