//! One request's exchange: the [`Exchange`] that carries what the phases share (the
//! snapshot, the frontend and backend, the request's plan, its timers and its log
//! record), and the retry loop: queue for a server, connect, send and relay; a failed
//! connect goes to another server, up to `retries`, and an idempotent request that no
//! server answered a byte of goes again. Every request ends here with one log line.

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use monoio::net::TcpStream;

use super::client_io::{write_all, ClientBuf, ClientIo};
use super::conn::Next;
use super::outcome::{CookieFlags, Kind, Phase, ProxyError, Side, Term};
use super::relay::response::{send_and_relay, Attempt, Relay};
use super::rewrite::request::finish_head;
use super::route::{self, Forward, Route};
use super::upstream::connect::{connect, local_shortage};
use super::upstream::queue::{acquire, waiting_room_response, Acquired, Want};
use super::upstream::slots::Slot;
use crate::core::{Buf, Worker};
use crate::http::error_response;
use crate::http::head::{BodyLen, Method, RequestHead};
use crate::ids::{BackendId, FrontendId, ServerId};
use crate::log::Record;
use crate::persist;
use crate::shared::msg::PassiveKind;
use crate::snapshot::{BackendRt, FrontendRt, Snapshot};

/// Where a request came from, as read head hands it over.
pub struct Start<'a> {
    pub snap: &'a Snapshot,
    pub fe: FrontendId,
    pub peer: SocketAddr,
    pub started: Instant,
    pub xff: &'a str,
}

/// The facts of the request the phases after the route need (its head is gone by then:
/// the rewritten one waits in the exchange's out buffer).
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub method: Method,
    pub body: BodyLen,
    pub client_minor: u8,
    pub client_ka: bool,
    pub expect_continue: bool,
    pub upgrade: bool,
    /// An HTTP/1.0 request without Host: the server's address is written as one.
    pub need_host: bool,
}

impl Plan {
    pub fn of(req: &RequestHead) -> Plan {
        Plan {
            method: req.method,
            body: req.body,
            client_minor: req.minor,
            client_ka: req.client_keep_alive(),
            expect_continue: req.expect_continue && req.minor == 1,
            upgrade: req.upgrade.is_some(),
            need_host: req.host.is_none(),
        }
    }

    /// Only an idempotent request without a body may go again (RFC 9110 §9.2.2).
    pub fn replayable(&self) -> bool {
        self.method.is_idempotent() && self.body == BodyLen::None && !self.upgrade
    }
}

/// What the phases of one request share.
pub struct Exchange<'a> {
    pub w: &'a Worker,
    pub snap: &'a Snapshot,
    pub fe: &'a FrontendRt,
    pub rec: Record,
    pub cookie: CookieFlags,
    pub started: Instant,
    /// The valid persistence cookie the request carried.
    pub sticky: Option<persist::Valid>,
    pub plan: Plan,
}

impl Exchange<'_> {
    /// Sends an answer the engine makes itself; the log counts its bytes once sent.
    pub async fn reply<S: ClientIo>(&mut self, io: &mut S, resp: Vec<u8>) -> bool {
        let n = resp.len() as u64;
        let (r, _) = write_all(self.w, io, resp, self.fe.cfg.timeouts.client).await;
        self.rec.bytes = if r.is_ok() { n } else { 0 };
        r.is_ok()
    }

    /// The request's one log line.
    pub fn log(&mut self, status: u16, term: Term) {
        self.rec.status = status;
        self.rec.term = term.as_bytes();
        self.rec.cookie = self.cookie.as_bytes();
        if !self.w.log.borrow().enabled() {
            return;
        }
        self.rec.tt = self.started.elapsed().as_millis() as i64;
        let snap = self.snap;
        self.w
            .log
            .borrow_mut()
            .push(&self.rec, &snap.frontends, &snap.backends, &snap.servers);
    }

    /// Answers a failure (unless the client already got part of a response) and logs it.
    pub async fn fail<S: ClientIo>(&mut self, io: &mut S, e: &ProxyError, answered: bool) {
        if answered {
            let status = self.rec.status;
            self.log(status, e.term());
            return;
        }
        let status = e.status();
        let resp = match (status, self.rec.backend) {
            (503, Some(b)) => self.snap.backends[b].response_503(),
            _ => error_response(status, true),
        };
        self.reply(io, resp).await;
        self.log(status, e.term());
    }
}

/// Runs the exchange for a request head read from `cb`.
pub async fn run<S: ClientIo>(
    w: &Worker,
    start: Start<'_>,
    io: &mut S,
    cb: &mut ClientBuf,
    req: RequestHead,
) -> Next {
    let snap = start.snap;
    let fe = snap.frontend(start.fe);
    let logging = w.log.borrow().enabled();
    let rec = Record {
        client: start.peer,
        start: SystemTime::now() - start.started.elapsed(),
        frontend_idx: start.fe.index(),
        backend: fe.backend.map(BackendId::index),
        server: None,
        tq: start.started.elapsed().as_millis() as i64,
        tw: -1,
        tc: -1,
        tr: -1,
        tt: 0,
        status: 0,
        bytes: 0,
        cookie: *b"--",
        term: *b"--",
        request: if logging {
            let line = req.request_line(cb.data());
            match line.strip_suffix(" HTTP/1.1") {
                Some(l) if io.http2() => format!("{l} HTTP/2.0"),
                _ => line,
            }
        } else {
            String::new()
        },
    };
    let mut ex = Exchange {
        w,
        snap,
        fe,
        rec,
        cookie: CookieFlags::default(),
        started: start.started,
        sticky: None,
        plan: Plan::of(&req),
    };
    match route::route(&mut ex, io, cb, req, start.xff).await {
        Route::Answered(next) => next,
        Route::Forward(f) => forward(&mut ex, io, cb, f).await,
    }
}

/// Where the retry loop stands.
struct Attempts {
    tried: Vec<ServerId>,
    attempts: u32,
    retries: u32,
    /// The server to reconnect to afresh (its pooled connection was stale).
    fresh_for: Option<ServerId>,
    /// A server took the request and closed without a byte of response (it was retried).
    answered_badly: bool,
    t_queue: Instant,
    t_connect: Instant,
}

/// QUEUE, CONNECT, SEND and RELAY, with retries on other servers.
async fn forward<S: ClientIo>(
    ex: &mut Exchange<'_>,
    io: &mut S,
    cb: &mut ClientBuf,
    mut f: Forward,
) -> Next {
    let be = ex.snap.backend(f.backend);
    let now = Instant::now();
    let mut at = Attempts {
        tried: Vec::new(),
        attempts: 0,
        retries: be.cfg.timeouts.retries,
        fresh_for: None,
        answered_badly: false,
        t_queue: now,
        t_connect: now,
    };
    let mut head_done = false;
    loop {
        let Some((mut up, sid, reused, slot)) = server(ex, io, &mut f, &mut at).await else {
            return Next::Close;
        };
        // Counted against the core's descriptor budget until this attempt is over.
        let _busy = ex.w.upstream_busy();
        let connected = Instant::now();
        ex.rec.tc = connected.duration_since(at.t_connect).as_millis() as i64;
        if !head_done {
            head_done = true;
            complete_head(ex, cb, &mut f, sid);
        }
        let gen = ex.snap.generation;
        ex.w.counter(gen, sid, |c| {
            c.active += 1;
            c.total += 1;
        });
        let out = std::mem::take(&mut f.out);
        let at_server = Attempt {
            up: &mut up,
            sid,
            reused,
            connected,
        };
        let result = send_and_relay(ex, io, cb, at_server, out, &mut f).await;
        ex.w.counter(gen, sid, |c| c.active = c.active.saturating_sub(1));
        drop(slot);
        ex.w.record_time(gen, sid, ex.started.elapsed().as_micros() as u64);
        match result {
            Relay::Retry { out, stale } => {
                f.out = out;
                if let Some(next) = retry(ex, io, &mut f, &mut at, sid, stale).await {
                    return next;
                }
            }
            Relay::Done {
                keep_server,
                keep_client,
            } => {
                if keep_server {
                    ex.w.pool_put(sid, up, gen);
                }
                return if keep_client {
                    Next::KeepAlive
                } else {
                    Next::Close
                };
            }
            Relay::Upgrade => return Next::Tunnel(up),
            Relay::Failed(e, answered) => {
                ex.fail(io, &e, answered).await;
                return if e.lingers() {
                    Next::Linger
                } else {
                    Next::Close
                };
            }
        }
    }
}

/// The head's end (Host for an HTTP/1.0 request, once the server is known) and, when it
/// is all here and small, the request body with it.
fn complete_head(ex: &Exchange<'_>, cb: &mut ClientBuf, f: &mut Forward, sid: ServerId) {
    let host = ex
        .plan
        .need_host
        .then(|| ex.snap.server(sid).host_header.as_str());
    finish_head(&mut f.out, host);
    match ex.plan.body {
        BodyLen::Length(n) => {
            let avail = cb.data().len() as u64;
            if avail >= n && (n as usize) < 64 * 1024 {
                f.out.extend_from_slice(&cb.data()[..n as usize]);
                cb.consume(n as usize);
                f.body_sent_in_head = n;
                f.whole_request_in_out = true;
            }
        }
        BodyLen::None => f.whole_request_in_out = true,
        _ => {}
    }
}

/// A server connection for the request: a slot, then a connection; `None` when the
/// request was answered (503, the waiting room, 502) and logged.
async fn server<'s, S: ClientIo>(
    ex: &mut Exchange<'s>,
    io: &mut S,
    f: &mut Forward,
    at: &mut Attempts,
) -> Option<(TcpStream, ServerId, bool, Slot<'s>)> {
    loop {
        let (sid, slot) = slot(ex, io, f, at).await?;
        ex.rec.server = Some(sid.index());
        let bt = ex.snap.backend(f.backend).cfg.timeouts;
        match connect(ex.w, ex.snap, sid, bt.connect, at.fresh_for == Some(sid)).await {
            Ok((s, reused)) => return Some((s, sid, reused, slot)),
            Err(e) => {
                drop(slot);
                let side = match connect_failed(ex, f, at, sid, e) {
                    AfterConnect::Again => continue,
                    AfterConnect::GiveUp(side) => side,
                };
                let resp = ex.snap.backend(f.backend).response_503();
                ex.reply(io, resp).await;
                ex.rec.tc = at.t_connect.elapsed().as_millis() as i64;
                let e = ProxyError::new(side, Phase::Connect, Kind::Unavailable);
                ex.log(503, e.term());
                return None;
            }
        }
    }
}

/// What follows a failed connect.
enum AfterConnect {
    /// Another server (or the same, afresh).
    Again,
    /// Answer 503 now, naming who failed: the servers, or a resource of the engine.
    GiveUp(Side),
}

/// After a failed connect: the server blamed (unless the shortage was ours) and another
/// tried.
fn connect_failed(
    ex: &mut Exchange<'_>,
    f: &mut Forward,
    at: &mut Attempts,
    sid: ServerId,
    e: std::io::Error,
) -> AfterConnect {
    let w = ex.w;
    // Out of descriptors, memory or source ports here: not the server's fault, so it is
    // not blamed (no failure, no avoid, no passive check), and no other server would do
    // better.
    if local_shortage(&e) {
        tracing::warn!(core = w.id, server = %ex.snap.server(sid).name, "cannot connect: {e}");
        return AfterConnect::GiveUp(Side::Resource);
    }
    tracing::debug!(server = %ex.snap.server(sid).name, "connect failed: {e}");
    w.counter(ex.snap.generation, sid, |c| {
        c.failures += 1;
        c.avoid_until = Some(Instant::now() + Duration::from_secs(2));
    });
    // Its idle pooled connections are likely dead too.
    if let Some(p) = w.pools.borrow_mut().get_mut(sid.index()) {
        p.clear();
    }
    w.passive(sid, PassiveKind::ConnectFailed);
    if f.sticky_server == Some(sid) {
        // The sticky server failed: balance anew, with a fresh cookie.
        f.sticky_server = None;
        ex.cookie.seen = super::outcome::CookieSeen::Down;
    }
    at.tried.push(sid);
    at.attempts += 1;
    if at.attempts > at.retries {
        AfterConnect::GiveUp(Side::Server)
    } else {
        AfterConnect::Again
    }
}

/// A slot on a server (waiting in the queue if need be); `None` when the request was
/// answered instead (the waiting room, 503, or 502 when a server closed on it).
async fn slot<'s, S: ClientIo>(
    ex: &mut Exchange<'s>,
    io: &mut S,
    f: &Forward,
    at: &mut Attempts,
) -> Option<(ServerId, Slot<'s>)> {
    let (w, snap) = (ex.w, ex.snap);
    let be: &BackendRt = snap.backend(f.backend);
    let now_s = persist::now_secs();
    let turn_since = f
        .turn
        .as_ref()
        .and_then(|v| persist::turn_since(&w.shared.turn_key, v, now_s));
    let want = Want {
        backend: f.backend,
        sticky: f.sticky_server,
        tried: &at.tried,
        timeout: be.cfg.timeouts.queue,
        has_turn: turn_since.is_some(),
    };
    let (resp, e) = match acquire(w, snap, want).await {
        Acquired::Server(sid, slot, waited) => {
            if at.attempts == 0 && waited {
                at.t_connect = Instant::now();
                ex.rec.tw = at.t_connect.duration_since(at.t_queue).as_millis() as i64;
            } else if at.attempts == 0 {
                ex.rec.tw = 0;
            }
            return Some((sid, slot));
        }
        // The turn cookie keeps the student's place: a returning student goes before
        // those who arrived after it.
        Acquired::WaitingRoom => (
            waiting_room_response(
                &be.waiting_room,
                &persist::turn_value(&w.shared.turn_key, turn_since.unwrap_or(now_s)),
            ),
            ProxyError::server(Phase::Queue, Kind::TimedOut),
        ),
        Acquired::QueueTimeout => (
            be.response_503(),
            ProxyError::server(Phase::Queue, Kind::TimedOut),
        ),
        // A server took the request and closed without answering, and no other is left
        // to try: a bad gateway, not an unavailable service.
        Acquired::Nothing if at.answered_badly => (
            error_response(502, true),
            ProxyError::server(Phase::Headers, Kind::Aborted),
        ),
        Acquired::Nothing => (
            be.response_503(),
            ProxyError::server(Phase::Connect, Kind::Unavailable),
        ),
    };
    ex.reply(io, resp).await;
    if e.phase == Phase::Queue {
        ex.rec.tw = at.t_queue.elapsed().as_millis() as i64;
    }
    ex.log(e.status(), e.term());
    None
}

/// After a request went on a connection and nothing answered: again on a new
/// connection to the same server (a stale pooled one), or on another server. `Some`
/// when the request was answered (502) instead.
async fn retry<S: ClientIo>(
    ex: &mut Exchange<'_>,
    io: &mut S,
    f: &mut Forward,
    at: &mut Attempts,
    sid: ServerId,
    stale: bool,
) -> Option<Next> {
    if stale {
        // A pooled connection the server had already closed: nothing reached it. The
        // same server, on a new connection.
        at.fresh_for = Some(sid);
        f.sticky_server = Some(sid);
        return None;
    }
    // The server closed without answering an idempotent request: another server, like
    // a failed connect.
    at.answered_badly = true;
    at.tried.push(sid);
    at.attempts += 1;
    if f.sticky_server == Some(sid) {
        f.sticky_server = None;
    }
    ex.w.passive(sid, PassiveKind::ConnectFailed);
    if at.attempts <= at.retries {
        return None;
    }
    f.out = Buf::none();
    let e = ProxyError::server(Phase::Headers, Kind::Aborted);
    ex.fail(io, &e, false).await;
    Some(Next::Close)
}
