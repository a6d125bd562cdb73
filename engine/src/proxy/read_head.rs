//! READ HEAD: one request head read and parsed (sans-io, [`crate::http::head`]) within
//! `timeout_http_request`, then handed to the exchange. A refused head is answered
//! (400, 414, 431, 501, 408) and logged here; a clean EOF between requests is not an
//! error and leaves no line.

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use super::client_io::{read_into, write_all, ClientBuf, ClientIo};
use super::conn::Next;
use super::exchange;
use super::outcome::{Kind, Phase, ProxyError, Term};
use crate::core::Worker;
use crate::http::head::{parse_request, RequestHead};
use crate::http::{error_response, RequestError};
use crate::ids::FrontendId;
use crate::log::Record;
use crate::snapshot::Snapshot;

/// A request that ended before it had a request line: what its log line says.
pub struct Simple {
    pub fe: FrontendId,
    pub peer: SocketAddr,
    pub started: Instant,
    pub status: u16,
    pub term: Term,
    pub bytes: u64,
}

/// Logs a request that never had a request line (`<BADREQ>`).
pub fn log_simple(w: &Worker, snap: &Snapshot, s: &Simple) {
    let tt = s.started.elapsed().as_millis() as i64;
    let rec = Record {
        client: s.peer,
        start: SystemTime::now() - s.started.elapsed(),
        frontend_idx: s.fe.index(),
        backend: None,
        server: None,
        tq: tt,
        tw: -1,
        tc: -1,
        tr: -1,
        tt,
        status: s.status,
        bytes: s.bytes,
        cookie: *b"--",
        term: s.term.as_bytes(),
        request: "<BADREQ>".into(),
    };
    w.log
        .borrow_mut()
        .push(&rec, &snap.frontends, &snap.backends, &snap.servers);
}

/// How reading a head ended, short of a head.
enum Unread {
    /// The client left (mid-head: logged, unless `dontlognull`).
    Gone,
    /// Not complete within `timeout_http_request`.
    Late,
    Refused(RequestError),
}

/// Reads until a whole head is in `cb`, within `deadline`.
async fn read_head<S: ClientIo>(
    w: &Worker,
    snap: &Snapshot,
    io: &mut S,
    cb: &mut ClientBuf,
    deadline: Instant,
) -> Result<RequestHead, Unread> {
    loop {
        match parse_request(cb.data(), &snap.head_limits) {
            Ok(Some(h)) => return Ok(h),
            Ok(None) => {}
            Err(e) => return Err(Unread::Refused(e)),
        }
        cb.make_room(w, snap.head_limits.max_head_bytes + 1024);
        let now = Instant::now();
        if now >= deadline {
            return Err(Unread::Late);
        }
        match w.idle.bounded(deadline - now, read_into(io, cb)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Err(Unread::Gone),
            Ok(Ok(_)) => {}
            Err(_) => return Err(Unread::Late),
        }
    }
}

/// Reads one request head (the connection had bytes) and runs the exchange. Boxed by the
/// caller: an idle connection's future holds none of this.
pub async fn request<S: ClientIo>(
    w: &Worker,
    fe: FrontendId,
    io: &mut S,
    cb: &mut ClientBuf,
    peer: SocketAddr,
    started: Instant,
    xff: &str,
) -> Next {
    let snap_rc = w.snapshot();
    let snap: &Snapshot = &snap_rc;
    let Some(front) = snap.frontends.get(fe.index()) else {
        return Next::Close;
    };
    let t = front.cfg.timeouts;
    let head = read_head(w, snap, io, cb, started + t.http_request).await;
    let failed = match head {
        Ok(head) => {
            let ex = exchange::Start {
                snap,
                fe,
                peer,
                started,
                xff,
            };
            return exchange::run(w, ex, io, cb, head).await;
        }
        Err(u) => u,
    };
    let mut s = Simple {
        fe,
        peer,
        started,
        status: 0,
        term: Term::Normal,
        bytes: 0,
    };
    let next = match failed {
        Unread::Gone => {
            // Mid-head (between requests it is not an error, and leaves no line).
            if !cb.is_empty() && !w.log.borrow().dontlognull {
                s.status = 400;
                s.term = ProxyError::client(Phase::Request, Kind::Aborted).term();
                log_simple(w, snap, &s);
            }
            cb.release();
            return Next::Close;
        }
        Unread::Late => {
            s.term = ProxyError::client(Phase::Request, Kind::TimedOut).term();
            (408, Next::Close)
        }
        Unread::Refused(e) => {
            tracing::debug!(client = %peer, "refused request: {e}");
            s.term = ProxyError::new(
                super::outcome::Side::Proxy,
                Phase::Request,
                Kind::Refused(e.status()),
            )
            .term();
            (e.status(), Next::Linger)
        }
    };
    s.status = next.0;
    s.bytes = answer(w, io, s.status, t.client).await;
    log_simple(w, snap, &s);
    cb.release();
    next.1
}

/// Sends the engine's own short answer with `status`; returns the bytes sent.
async fn answer<S: ClientIo>(w: &Worker, io: &mut S, status: u16, t: Duration) -> u64 {
    let resp = error_response(status, true);
    let n = resp.len() as u64;
    match write_all(w, io, resp, t).await {
        (Ok(()), _) => n,
        _ => 0,
    }
}
