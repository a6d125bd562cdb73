//! ROUTE: what becomes of a request before any server is chosen. The redirect to HTTPS
//! (unless the normalised path is an exception), a frontend with no backend, the body
//! limit on a declared length, the head rewritten for the server, the persistence
//! decision (does the cookie name a server that may take the request?), and a chunked
//! body whose first bytes are already here checked before any server sees the head.
//! Nothing here depends on HTTP/1.1 framing but the head it reads.

use super::client_io::{ClientBuf, ClientIo};
use super::conn::Next;
use super::exchange::Exchange;
use super::outcome::{CookieDone, CookieSeen, Kind, Phase, ProxyError, Side, Term};
use super::rewrite::request::{redirect_location, RequestRewrite};
use super::upstream::select::candidate_ignoring_full;
use crate::balance;
use crate::core::Buf;
use crate::http::chunked::ChunkedDecoder;
use crate::http::head::{BodyLen, RequestHead};
use crate::http::{error_response, simple_response};
use crate::ids::{BackendId, ServerId};
use crate::persist;
use crate::snapshot::BackendRt;

/// What the route decided.
pub enum Route {
    /// The request was answered here (a redirect, a refusal), and logged.
    Answered(Next),
    /// It goes to a server of this backend.
    Forward(Forward),
}

/// A request on its way to a server.
pub struct Forward {
    pub backend: BackendId,
    /// The head for the server (its end added once the server is known), and the body
    /// with it when it was all here and small.
    pub out: Buf,
    /// The server the persistence cookie names, when it may take the request.
    pub sticky_server: Option<ServerId>,
    /// The waiting room's turn cookie.
    pub turn: Option<Vec<u8>>,
    pub body_sent_in_head: u64,
    /// The whole request is in `out` (a retry sends it again as it is).
    pub whole_request_in_out: bool,
    pub chunked: Option<ChunkedDecoder>,
}

/// A refusal of the engine's own (the request never reaches a server).
fn refused(status: u16) -> ProxyError {
    ProxyError::new(Side::Proxy, Phase::Request, Kind::Refused(status))
}

pub async fn route<S: ClientIo>(
    ex: &mut Exchange<'_>,
    io: &mut S,
    cb: &mut ClientBuf,
    req: RequestHead,
    xff: &str,
) -> Route {
    if let Some(next) = redirect(ex, io, cb, &req).await {
        return Route::Answered(next);
    }
    let Some(b) = ex.fe.backend else {
        cb.consume(req.head_len);
        ex.reply(io, error_response(503, true)).await;
        ex.log(503, refused(503).term());
        return Route::Answered(Next::Close);
    };
    let be = ex.snap.backend(b);
    // Limits on the body.
    let max_body = ex.snap.cfg.limits.max_body_bytes;
    if let BodyLen::Length(n) = req.body {
        if max_body > 0 && n > max_body {
            cb.consume(req.head_len);
            return Route::Answered(refuse(ex, io, 413).await);
        }
    }
    // The head for the server (the same whichever server takes it).
    let mut out = ex.w.buf();
    let rw = RequestRewrite {
        fe: ex.fe,
        be: Some(be),
        xff,
        drop_underscore: ex.snap.cfg.limits.drop_underscore_headers,
    };
    let found = rw.head(cb.data(), &req, &mut out);
    cb.consume(req.head_len);
    drop(req);
    let sticky_server = persistence(ex, be, found.sticky.as_deref());
    if ex.plan.body == BodyLen::Chunked && !cb.is_empty() {
        if let Err(status) = precheck_chunked(cb.data(), max_body) {
            return Route::Answered(refuse(ex, io, status).await);
        }
    }
    Route::Forward(Forward {
        backend: b,
        out,
        sticky_server,
        turn: found.turn,
        body_sent_in_head: 0,
        whole_request_in_out: false,
        chunked: None,
    })
}

/// Answers an over-limit or malformed request body, then lingers.
async fn refuse<S: ClientIo>(ex: &mut Exchange<'_>, io: &mut S, status: u16) -> Next {
    ex.reply(io, error_response(status, true)).await;
    ex.log(status, refused(status).term());
    Next::Linger
}

/// The redirect to HTTPS, unless the request's normalised path is an exception (and the
/// frontend has a backend for it). `Some` when it was answered.
async fn redirect<S: ClientIo>(
    ex: &mut Exchange<'_>,
    io: &mut S,
    cb: &mut ClientBuf,
    req: &RequestHead,
) -> Option<Next> {
    let r = ex.fe.cfg.redirect_https.as_ref()?;
    // Judged on the normalised path: a target with dot segments is never excepted.
    let excepted = crate::http::path::under_prefix(
        req.target(cb.data()),
        r.except_prefixes.iter().map(String::as_str),
    );
    if excepted && ex.fe.backend.is_some() {
        return None;
    }
    let close = ex.plan.body != BodyLen::None || !ex.plan.client_ka;
    let (status, resp) = match redirect_location(cb.data(), req, &ex.fe.redirect_port) {
        Some(loc) => (
            r.code,
            simple_response(r.code, &[("Location", &loc)], "", close),
        ),
        None => (400, error_response(400, true)),
    };
    cb.consume(req.head_len);
    ex.rec.backend = None;
    let sent = ex.reply(io, resp).await;
    let term = if sent {
        Term::Normal
    } else {
        ProxyError::client(Phase::Data, Kind::Aborted).term()
    };
    ex.log(status, term);
    Some(if !sent || close || status == 400 {
        Next::Close
    } else {
        Next::KeepAlive
    })
}

/// Persistence: the server the request's cookie names, when it may take the request
/// (UP or DRAIN, not avoided); the cookie flags for the log either way.
fn persistence(ex: &mut Exchange<'_>, be: &BackendRt, value: Option<&[u8]>) -> Option<ServerId> {
    let c = be.cookie.as_ref()?;
    ex.cookie.done = CookieDone::Nothing;
    let Some(v) = value else {
        ex.cookie.seen = CookieSeen::None;
        return None;
    };
    let now_s = persist::now_secs();
    let found = match (c.mode, be.codec.as_ref()) {
        (config::CookieMode::Insert, Some(codec)) => codec.decode(v, now_s),
        _ => be
            .servers()
            .position(|s| ex.snap.server(s).cookie.as_bytes() == v)
            .map(|server| persist::Valid {
                server,
                issued: 0,
                seen: 0,
            })
            .ok_or(persist::Refused::Invalid),
    };
    let valid = match found {
        Ok(valid) => valid,
        Err(persist::Refused::Expired) => {
            ex.cookie.seen = CookieSeen::Expired;
            return None;
        }
        Err(persist::Refused::Invalid) => {
            ex.cookie.seen = CookieSeen::Invalid;
            return None;
        }
    };
    let s = be.at_rank(valid.server);
    let states = ex.w.states.borrow().clone();
    if balance::sticky_ok(&candidate_ignoring_full(ex.w, ex.snap, &states, s, &[])) {
        ex.sticky = Some(valid);
        ex.cookie.seen = CookieSeen::Valid;
        Some(s)
    } else {
        ex.cookie.seen = CookieSeen::Down;
        None
    }
}

/// A chunked body's first bytes, already here, checked before any server sees the
/// head: `Err(400)` malformed, `Err(413)` past the limit already.
fn precheck_chunked(data: &[u8], max_body: u64) -> Result<(), u16> {
    let mut dry = ChunkedDecoder::new();
    let mut pos = 0;
    while pos < data.len() {
        let st = dry.step(&data[pos..]).map_err(|_| 400u16)?;
        pos += st.consumed;
        if st.done || st.consumed == 0 {
            break;
        }
    }
    if max_body > 0 && dry.total > max_body {
        return Err(413);
    }
    Ok(())
}
