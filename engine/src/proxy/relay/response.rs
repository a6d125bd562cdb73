//! SEND and RELAY for one attempt on one server connection: the rewritten head (and the
//! body) to the server, then its response head (within `timeout_server` of the
//! request's end, however it trickles), the client's head written with the first body
//! bytes, and the rest of the body relayed. The outcome says whether the request may go
//! again (nothing answered), and what becomes of both connections.

use std::time::Instant;

use monoio::buf::IoBufMut;
use monoio::io::AsyncReadRent;
use monoio::net::TcpStream;

use super::body::{decode_into, reframe_into, relay_body, send_body, RequestBody, ResponseBody};
use crate::core::{Buf, Worker};
use crate::http::chunked::ChunkedDecoder;
use crate::http::head::{parse_response, BodyLen, Method, ResponseHead};
use crate::ids::ServerId;
use crate::persist;
use crate::proxy::client_io::{write_all, ClientBuf, ClientIo};
use crate::proxy::exchange::Exchange;
use crate::proxy::outcome::{Kind, Phase, ProxyError, Side, Term};
use crate::proxy::rewrite::response::{client_framing, ClientConn, ResponseRewrite};
use crate::proxy::route::Forward;
use crate::shared::msg::PassiveKind;

/// How an attempt ended.
pub enum Relay {
    /// Nothing was answered and the request may go again (idempotent, all of it in
    /// `out`); `stale`: it went on a pooled connection the server had closed.
    Retry {
        out: Buf,
        stale: bool,
    },
    Done {
        keep_server: bool,
        keep_client: bool,
    },
    Upgrade,
    /// Failed; `true`: the client already got (part of) a response.
    Failed(ProxyError, bool),
}

fn malformed_response() -> ProxyError {
    ProxyError::new(Side::Proxy, Phase::Headers, Kind::Malformed)
}

/// One attempt's server connection.
pub struct Attempt<'a> {
    pub up: &'a mut TcpStream,
    pub sid: ServerId,
    /// It came from the pool.
    pub reused: bool,
    pub connected: Instant,
}

/// Sends the request on the attempt's connection and relays the response.
pub async fn send_and_relay<S: ClientIo>(
    ex: &mut Exchange<'_>,
    io: &mut S,
    cb: &mut ClientBuf,
    at: Attempt<'_>,
    out: Buf,
    f: &mut Forward,
) -> Relay {
    let Attempt {
        up,
        sid,
        reused,
        connected,
    } = at;
    let replayable = f.whole_request_in_out && ex.plan.replayable();
    let keep = match send(ex, io, cb, up, out, f, replayable).await {
        Ok(keep) => keep,
        Err(Relay::Retry { out, .. }) => return Relay::Retry { out, stale: reused },
        Err(r) => return r,
    };
    // RELAY: the response head.
    let (head, sb) = match read_head(ex, up, keep, replayable, reused).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    ex.rec.tr = connected.elapsed().as_millis() as i64;
    ex.rec.status = head.status;
    let gen = ex.snap.generation;
    if head.status >= 500 {
        ex.w.counter(gen, sid, |c| c.responses_5xx += 1);
        ex.w.passive(sid, PassiveKind::Status5xx);
    } else {
        // Live traffic: the server answers (see control::live).
        ex.w.counter(gen, sid, |c| c.ok_responses += 1);
    }
    relay(ex, io, up, head, sb, sid).await
}

/// SEND: the head (with the whole body when it was here), then the body. Returns the
/// request kept for a retry until the response starts.
async fn send<S: ClientIo>(
    ex: &mut Exchange<'_>,
    io: &mut S,
    cb: &mut ClientBuf,
    up: &mut TcpStream,
    out: Buf,
    f: &mut Forward,
    replayable: bool,
) -> Result<Option<Buf>, Relay> {
    let w = ex.w;
    let bt = ex.snap.backend(f.backend).cfg.timeouts;
    let (r, out) = write_all(w, up, out, bt.server).await;
    if r.is_err() {
        if replayable && !out.is_empty() {
            return Err(Relay::Retry { out, stale: false });
        }
        return Err(Relay::Failed(
            ProxyError::server(Phase::Headers, Kind::Aborted),
            false,
        ));
    }
    if ex.plan.expect_continue {
        let cont = b"HTTP/1.1 100 Continue\r\n\r\n".to_vec();
        if write_all(w, io, cont, ex.fe.cfg.timeouts.client)
            .await
            .0
            .is_err()
        {
            let e = ProxyError::client(Phase::Request, Kind::Aborted);
            return Err(Relay::Failed(e, true));
        }
    }
    if !f.whole_request_in_out {
        let body = RequestBody {
            body: ex.plan.body,
            already: f.body_sent_in_head,
            dec: &mut f.chunked,
            max_body: ex.snap.cfg.limits.max_body_bytes,
            client_t: ex.fe.cfg.timeouts.client,
            server_t: bt.server,
        };
        if let Err(e) = send_body(w, io, cb, up, body).await {
            return Err(Relay::Failed(e, false));
        }
    }
    Ok(Some(out))
}

/// Reads the response head, within `timeout_server` of the request's end; interim
/// responses are skipped (the engine answered 100 itself).
async fn read_head(
    ex: &Exchange<'_>,
    up: &mut TcpStream,
    mut keep: Option<Buf>,
    replayable: bool,
    reused: bool,
) -> Result<(ResponseHead, Buf), Relay> {
    let w: &Worker = ex.w;
    let limits = &ex.snap.head_limits;
    let server_t = ex
        .fe
        .backend
        .map(|b| ex.snap.backend(b).cfg.timeouts.server)
        .unwrap_or(ex.fe.cfg.timeouts.server);
    // The whole head must arrive within timeout_server, however the server trickles it.
    let deadline = Instant::now() + server_t;
    let mut sb = w.buf();
    loop {
        match parse_response(&sb, ex.plan.method == Method::Head, limits) {
            Ok(Some(h)) if (100..200).contains(&h.status) && h.status != 101 => {
                sb.drain(..h.head_len);
                continue;
            }
            // Switching protocols that the client never asked for: not passed on.
            Ok(Some(h)) if h.status == 101 && !ex.plan.upgrade => {
                return Err(Relay::Failed(malformed_response(), false))
            }
            Ok(Some(h)) => return Ok((h, sb)),
            Ok(None) => {}
            Err(_) => return Err(Relay::Failed(malformed_response(), false)),
        }
        if sb.len() == sb.capacity() {
            sb.reserve(limits.max_head_bytes);
        }
        let len = sb.len();
        let left = deadline.saturating_duration_since(Instant::now());
        match w.idle.bounded(left, up.read(sb.slice_mut(len..))).await {
            Ok((Ok(0), s)) | Ok((Err(_), s)) => {
                sb = s.into_inner();
                if let (true, true, Some(out)) = (sb.is_empty(), replayable, keep.take()) {
                    return Err(Relay::Retry { out, stale: reused });
                }
                let e = ProxyError::server(Phase::Headers, Kind::Aborted);
                return Err(Relay::Failed(e, false));
            }
            Ok((Ok(_), s)) => sb = s.into_inner(),
            Err(_) => {
                let e = ProxyError::server(Phase::Headers, Kind::TimedOut);
                return Err(Relay::Failed(e, false));
            }
        }
    }
}

/// The client's head and the body bytes that came with the server's, in one write.
struct First {
    hb: Buf,
    /// The head's own bytes (for the log).
    head_len: u64,
    sent_body: u64,
    done: bool,
    keep_server: bool,
    dec: ChunkedDecoder,
}

/// The client's head written with the first body bytes, then the rest of the body.
async fn relay<S: ClientIo>(
    ex: &mut Exchange<'_>,
    io: &mut S,
    up: &mut TcpStream,
    head: ResponseHead,
    mut sb: Buf,
    sid: ServerId,
) -> Relay {
    let w = ex.w;
    let plan = ex.plan;
    let is_upgrade = head.status == 101 && plan.upgrade;
    let (framing, force_close) = client_framing(head.body, plan.client_minor);
    let keep_client = plan.client_ka && !force_close && !w.stopping.get() && head.status != 101;
    if head.te_codings.is_some() && framing != BodyLen::Chunked {
        // Codings besides chunked that an HTTP/1.0 client cannot be told of.
        return Relay::Failed(malformed_response(), false);
    }
    let conn = match (is_upgrade, keep_client) {
        (true, _) => ClientConn::Upgrade,
        (false, true) => ClientConn::KeepAlive,
        (false, false) => ClientConn::Close,
    };
    let hb = client_head(ex, &sb, &head, sid, framing, conn);
    let Some(mut first) = first_bytes(hb, &mut sb, &head, framing) else {
        return Relay::Failed(ProxyError::server(Phase::Data, Kind::Malformed), false);
    };
    let t = ex.fe.cfg.timeouts;
    let head_bytes = first.head_len;
    let (r, _) = write_all(w, io, std::mem::take(&mut first.hb), t.client).await;
    if r.is_err() {
        return Relay::Failed(ProxyError::client(Phase::Data, Kind::Aborted), true);
    }
    ex.rec.bytes = head_bytes + first.sent_body;
    if is_upgrade {
        ex.log(101, Term::Normal);
        return Relay::Upgrade;
    }
    let mut keep_server = first.keep_server && head.server_keep_alive();
    if !first.done {
        let body = ResponseBody {
            server: head.body,
            client: framing,
            sent: first.sent_body,
            dec: first.dec,
            client_t: t.client,
            server_t: ex
                .snap
                .backend(ex.snap.server(sid).backend)
                .cfg
                .timeouts
                .server,
        };
        drop(sb);
        match relay_body(w, up, io, body).await {
            Ok((n, clean)) => {
                ex.rec.bytes += n;
                keep_server &= clean;
            }
            Err((e, n)) => {
                ex.rec.bytes += n;
                return Relay::Failed(e, true);
            }
        }
    }
    // LOG
    let status = ex.rec.status;
    ex.log(status, Term::Normal);
    Relay::Done {
        keep_server,
        keep_client,
    }
}

/// The client's response head (see [`crate::proxy::rewrite::response`]).
fn client_head(
    ex: &mut Exchange<'_>,
    sb: &[u8],
    head: &ResponseHead,
    sid: ServerId,
    framing: BodyLen,
    conn: ClientConn,
) -> Buf {
    let srv = ex.snap.server(sid);
    let be = ex.snap.backend(srv.backend);
    let rw = ResponseRewrite {
        be,
        server_cookie: &srv.cookie,
        rank: be.rank(sid),
        sticky: ex.sticky.filter(|v| be.at_rank(v.server) == sid),
        now_s: persist::now_secs(),
        head_request: ex.plan.method == Method::Head,
        client_minor: ex.plan.client_minor,
        framing,
        conn,
        done: ex.cookie.done,
    };
    let mut hb = ex.w.buf();
    ex.cookie.done = rw.head(sb, head, &mut hb);
    hb
}

/// The body bytes that came with the head, appended to it when they fit the framing;
/// `None` when they are malformed (chunked). Bytes past the body's framing are never
/// passed on, and the server connection is then not reused.
fn first_bytes(mut hb: Buf, sb: &mut Buf, head: &ResponseHead, framing: BodyLen) -> Option<First> {
    sb.drain(..head.head_len);
    let mut f = First {
        hb: Buf::none(),
        head_len: hb.len() as u64,
        sent_body: 0,
        done: false,
        keep_server: true,
        dec: ChunkedDecoder::new(),
    };
    match head.body {
        BodyLen::None => {
            f.keep_server = sb.is_empty();
            f.done = true;
        }
        BodyLen::Length(n) => {
            let take = (sb.len() as u64).min(n) as usize;
            hb.extend_from_slice(&sb[..take]);
            f.keep_server = sb.len() <= take;
            f.sent_body = take as u64;
            f.done = f.sent_body == n;
        }
        BodyLen::Chunked => {
            let d = decode_into(&mut f.dec, sb, framing == BodyLen::Chunked, &mut hb).ok()?;
            f.sent_body = d.data;
            f.done = d.fin;
            f.keep_server = !(d.fin && d.overrun);
        }
        BodyLen::Close => {
            if !sb.is_empty() {
                reframe_into(sb, framing == BodyLen::Chunked, &mut hb);
                f.sent_body = sb.len() as u64;
            }
        }
    }
    sb.clear();
    f.hb = hb;
    Some(f)
}
