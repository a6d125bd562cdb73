//! HTTP/2 to clients: ALPN `h2` on TLS frontends, prior-knowledge h2c on plain ones that
//! set `h2c`. The protocol is hyperium's `h2` crate over the connection through
//! monoio-compat's `StreamWrapper`; every stream becomes one HTTP/1.1 request that the
//! request path runs as it runs any other ([`io::H2Io`] is its client stream), so
//! persistence, balancing, the queue, the waiting room, retries, timeouts, the errorfile
//! and the access log (`HTTP/2.0` in the request line) are the same. HTTP/1.1 to the
//! servers.
//!
//! Its parts: this file (a connection: the handshake with the limits, its streams, its
//! end: GOAWAY on a graceful stop or reload and at its keep-alive timeout, GOAWAY
//! ENHANCE_YOUR_CALM on abuse); [`request`] (a stream's request as an HTTP/1.1 head, and
//! what is refused); [`response`] (an HTTP/1.1 response as HTTP/2); [`io`] (one stream
//! as a client stream, with flow control both ways); [`sniff`] (the abuse limits the
//! crate does not keep).

pub mod io;
pub mod prefixed;
pub mod request;
pub mod response;
pub mod sniff;

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::server::SendResponse;
use h2::Reason;
use monoio::io::{AsyncReadRent, AsyncWriteRent};

use self::io::H2Io;
use self::request::{Body1, Refusal};
use super::client_io::ClientBuf;
use super::outcome::{Kind, Phase, ProxyError, Side};
use super::read_head::{log_simple, Simple};
use crate::core::idle::{ticks_for, Wake};
use crate::core::{Buf, ConnGuard, Worker};
use crate::ids::FrontendId;

/// A body with a content-length up to this is read whole before it is forwarded, so
/// that a length the DATA disagrees with never reaches a server; a longer one streams.
pub const PREFETCH: u64 = 64 * 1024;

/// A stream as the connection accepts it.
type Accepted = (http::Request<h2::RecvStream>, SendResponse<Bytes>);

/// What ended a wait of the connection task.
enum Ev {
    Accept(Option<Result<Box<Accepted>, h2::Error>>),
    Abuse(sniff::Abuse),
    Wake(Wake),
}

fn builder(l: &config::Limits) -> h2::server::Builder {
    let mut b = h2::server::Builder::new();
    b.max_concurrent_streams(l.h2_max_concurrent_streams)
        .max_header_list_size(l.h2_max_header_list_size)
        // Room for uploads to flow without a round trip per 64 KiB; the connection's
        // window covers a few streams at once.
        .initial_window_size(256 * 1024)
        .initial_connection_window_size(1 << 20)
        .max_send_buffer_size(64 * 1024);
    b
}

type Conn<T> = h2::server::Connection<sniff::Sniffer<monoio_compat::StreamWrapper<T>>, Bytes>;

/// Serves one HTTP/2 connection to its end (the caller's connection count handed to it).
pub async fn serve<T>(w: Rc<Worker>, fe: FrontendId, io: T, peer: SocketAddr)
where
    T: AsyncReadRent + AsyncWriteRent + Unpin + 'static,
{
    let _guard = ConnGuard::new(&w);
    let Some((conn, flag, keep_alive)) = handshake(&w, fe, io, peer).await else {
        return;
    };
    w.h2_opened();
    let mut c = Connection {
        w: w.clone(),
        fe,
        peer,
        xff: peer.ip().to_canonical().to_string().into(),
        active: Rc::new(Cell::new(0)),
        idle_ticks: ticks_for(keep_alive),
        key: 0,
        end: w.idle.register(u64::MAX),
        shutting: false,
    };
    w.h2_ends.borrow_mut().push(c.end);
    c.key = w.idle.register(c.idle_ticks);
    c.run(conn, flag).await;
    w.h2_ends.borrow_mut().retain(|&k| k != c.end);
    w.idle.remove(c.end);
    w.idle.remove(c.key);
    w.h2_closed();
}

/// The connection preface and SETTINGS, within `timeout_http_request`.
async fn handshake<T>(
    w: &Worker,
    fe: FrontendId,
    io: T,
    peer: SocketAddr,
) -> Option<(Conn<T>, Rc<sniff::Flag>, Duration)>
where
    T: AsyncReadRent + AsyncWriteRent + Unpin + 'static,
{
    let snap = w.snapshot();
    let front = snap.frontends.get(fe.index())?;
    let l = &snap.cfg.limits;
    let limits = sniff::Limits {
        resets_per_second: l.h2_max_resets_per_second,
        control_per_second: l.h2_max_control_frames_per_second,
        continuation_frames: l.h2_max_continuation_frames,
    };
    let t = front.cfg.timeouts;
    let (sn, flag) = sniff::Sniffer::new(monoio_compat::StreamWrapper::new(io), limits);
    let hs = builder(l).handshake::<_, Bytes>(sn);
    drop(snap);
    match w.idle.bounded(t.http_request, hs).await {
        Ok(Ok(c)) => Some((c, flag, t.keep_alive)),
        Ok(Err(e)) => {
            tracing::debug!(client = %peer, "HTTP/2 handshake failed: {e}");
            None
        }
        Err(_) => None,
    }
}

/// One connection's state, as its task runs it.
struct Connection {
    w: Rc<Worker>,
    fe: FrontendId,
    peer: SocketAddr,
    xff: Rc<str>,
    active: Rc<Cell<usize>>,
    idle_ticks: u64,
    /// The keep-alive countdown (re-armed at each stream).
    key: usize,
    /// The wait a graceful stop or a reload ends.
    end: usize,
    /// GOAWAY sent: the open streams finish, no new one is taken.
    shutting: bool,
}

impl Connection {
    async fn run<T>(&mut self, mut conn: Conn<T>, flag: Rc<sniff::Flag>)
    where
        T: AsyncReadRent + AsyncWriteRent + Unpin + 'static,
    {
        loop {
            let ev = {
                let (w, key, end, shutting) = (&self.w, self.key, self.end, self.shutting);
                let stop = async move {
                    if shutting {
                        return std::future::pending::<Wake>().await;
                    }
                    monoio::select! {
                        wk = w.idle.woken(key) => wk,
                        wk = w.idle.woken(end) => wk,
                    }
                };
                monoio::select! {
                    r = conn.accept() => Ev::Accept(r.map(|r| r.map(Box::new))),
                    a = flag.raised() => Ev::Abuse(a),
                    wk = stop => Ev::Wake(wk),
                }
            };
            match ev {
                Ev::Accept(Some(Ok(accepted))) => self.stream(*accepted),
                Ev::Accept(Some(Err(e))) => {
                    tracing::debug!(client = %self.peer, "HTTP/2 connection ended: {e}");
                    return;
                }
                Ev::Accept(None) => return,
                Ev::Abuse(a) => {
                    tracing::warn!(client = %self.peer, "HTTP/2: {}: GOAWAY ENHANCE_YOUR_CALM", a.as_str());
                    conn.abrupt_shutdown(Reason::ENHANCE_YOUR_CALM);
                    // Drive the GOAWAY out, briefly.
                    let drain = async { while let Some(Ok(_)) = conn.accept().await {} };
                    let _ = monoio::time::timeout(Duration::from_secs(1), drain).await;
                    return;
                }
                Ev::Wake(Wake::Expired) if self.active.get() > 0 => self.rearm(),
                Ev::Wake(_) => {
                    // A graceful stop or a reload, or the keep-alive timeout with no
                    // stream open: GOAWAY, and the open streams finish.
                    conn.graceful_shutdown();
                    self.shutting = true;
                }
            }
        }
    }

    /// A new stream: its own task.
    fn stream(&mut self, (req, respond): Accepted) {
        self.active.set(self.active.get() + 1);
        self.w.h2_stream();
        let st = Stream {
            w: self.w.clone(),
            fe: self.fe,
            peer: self.peer,
            xff: self.xff.clone(),
            active: self.active.clone(),
        };
        monoio::spawn(st.run(req, respond));
        if !self.shutting {
            self.rearm();
        }
    }

    /// The keep-alive countdown starts again.
    fn rearm(&mut self) {
        self.w.idle.remove(self.key);
        self.key = self.w.idle.register(self.idle_ticks);
    }
}

/// One stream's task.
struct Stream {
    w: Rc<Worker>,
    fe: FrontendId,
    peer: SocketAddr,
    xff: Rc<str>,
    active: Rc<Cell<usize>>,
}

impl Stream {
    async fn run(self, req: http::Request<h2::RecvStream>, respond: SendResponse<Bytes>) {
        let started = Instant::now();
        let (parts, body) = req.into_parts();
        let head_request = parts.method == http::Method::HEAD;
        match request::to_http1(&parts, body.is_end_stream()) {
            Ok(head) => {
                let prefetch = match head.body {
                    Body1::Length(n) if n <= PREFETCH => Some(n),
                    _ => None,
                };
                let mut io = H2Io::new(self.w.clone(), head, body, respond, head_request);
                if let Some(n) = prefetch {
                    if let Err(r) = io.prefetch(n).await {
                        io.reset(r);
                        self.refused(
                            started,
                            400,
                            "a body that disagrees with its content-length",
                        );
                        return;
                    }
                }
                let mut cb = ClientBuf::new(Buf::none());
                let w = &self.w;
                let _ = super::read_head::request(
                    w, self.fe, &mut io, &mut cb, self.peer, started, &self.xff,
                )
                .await;
                io.finish();
            }
            Err(Refusal::Malformed(why)) => {
                let mut respond = respond;
                respond.send_reset(Reason::PROTOCOL_ERROR);
                self.refused(started, 400, why);
            }
            Err(Refusal::Status(code, why)) => {
                let mut io = H2Io::answer_only(self.w.clone(), respond);
                let _ = io.answer(&crate::http::error_response(code, true)).await;
                self.refused(started, code, why);
            }
        }
    }

    /// A stream refused before it became a request: logged as a bad request.
    fn refused(&self, started: Instant, status: u16, why: &str) {
        tracing::debug!(client = %self.peer, "HTTP/2 stream refused: {why}");
        let s = Simple {
            fe: self.fe,
            peer: self.peer,
            started,
            status,
            term: ProxyError::new(Side::Proxy, Phase::Request, Kind::Refused(status)).term(),
            bytes: 0,
        };
        log_simple(&self.w, &self.w.snapshot(), &s);
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.active.set(self.active.get().saturating_sub(1));
    }
}
