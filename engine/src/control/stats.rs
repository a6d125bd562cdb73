//! The stats endpoint on `global.stats`: `GET /` an HTML page, `GET /stats.json` the same
//! data as JSON, `GET /metrics` the Prometheus text format. Served as tasks of the
//! health-check thread's runtime (no thread per connection), from the data that thread
//! merges from the cores' reports (their hdrhistograms included), off the request path.
//!
//! Bounded like everything a client controls: [`MAX_CONNS`] connections at once (past
//! it a new one is closed at once), a request head of at most 16 KiB, [`IDLE`] without a
//! request and the connection is closed.

use super::render::{render_html, render_metrics};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};

use crate::shared::view::StatsView;

/// Stats connections served at once.
pub const MAX_CONNS: usize = 64;
/// A connection with no request for this long is closed.
pub const IDLE: Duration = Duration::from_secs(10);
const MAX_HEAD: usize = 16 * 1024;

/// Binds the stats address. Returns the listener and the bound address.
pub fn bind(addr: SocketAddr) -> std::io::Result<(std::net::TcpListener, SocketAddr)> {
    let l = std::net::TcpListener::bind(addr)?;
    l.set_nonblocking(true)?;
    let real = l.local_addr()?;
    Ok((l, real))
}

/// The stats page's data, now (the health-check thread's state).
pub type View = Rc<dyn Fn() -> StatsView>;

/// Accepts stats connections until the runtime ends (a task of the health-check thread).
pub async fn serve(l: std::net::TcpListener, view: View) {
    let l = match monoio::net::TcpListener::from_std(l) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("stats listener refused by the runtime: {e}");
            return;
        }
    };
    let open = Rc::new(std::cell::Cell::new(0usize));
    loop {
        let Ok((conn, _)) = l.accept().await else {
            monoio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        if open.get() >= MAX_CONNS {
            drop(conn);
            continue;
        }
        open.set(open.get() + 1);
        let (open, view) = (open.clone(), view.clone());
        monoio::spawn(async move {
            connection(conn, &*view).await;
            open.set(open.get() - 1);
        });
    }
}

/// One parsed request: method, path (no query), whether the connection stays open.
struct Req {
    head_len: usize,
    method: String,
    path: String,
    keep: bool,
}

/// Parses a request head; `Err` for a malformed or oversized one.
fn parse(buf: &[u8]) -> Result<Option<Req>, ()> {
    let mut hdrs = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut hdrs);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => {
            let close = req.headers.iter().any(|h| {
                h.name.eq_ignore_ascii_case("connection") && h.value.eq_ignore_ascii_case(b"close")
            });
            let path = req.path.unwrap_or("/");
            Ok(Some(Req {
                head_len: n,
                method: req.method.unwrap_or("").to_string(),
                path: path.split('?').next().unwrap_or("/").to_string(),
                keep: req.version == Some(1) && !close,
            }))
        }
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => Ok(None),
        _ => Err(()),
    }
}

/// The whole response to one request.
fn respond(req: &Req, view: &dyn Fn() -> StatsView) -> Vec<u8> {
    let (status, ctype, body) = if req.method != "GET" && req.method != "HEAD" {
        (405, "text/plain", "only GET\n".to_string())
    } else {
        match req.path.as_str() {
            "/" => (200, "text/html; charset=utf-8", render_html(&view())),
            "/stats.json" => (
                200,
                "application/json",
                serde_json::to_string_pretty(&view()).unwrap_or_default(),
            ),
            "/metrics" => (
                200,
                "text/plain; version=0.0.4; charset=utf-8",
                render_metrics(&view()),
            ),
            _ => (
                404,
                "text/plain",
                "not found: try /, /stats.json or /metrics\n".to_string(),
            ),
        }
    };
    let head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nCache-Control: no-store\r\n{}\r\n",
        crate::http::reason(status),
        body.len(),
        if req.keep { "" } else { "Connection: close\r\n" }
    );
    let mut out = head.into_bytes();
    if req.method != "HEAD" {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

async fn connection(mut conn: monoio::net::TcpStream, view: &dyn Fn() -> StatsView) {
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    loop {
        let req = loop {
            match parse(&buf) {
                Ok(Some(r)) => break r,
                Ok(None) => {}
                Err(()) => {
                    let bad = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
                    let _ = monoio::time::timeout(IDLE, conn.write_all(bad.to_vec())).await;
                    return;
                }
            }
            if buf.len() == buf.capacity() {
                buf.reserve(4096);
            }
            let len = buf.len();
            let (r, b) = match monoio::time::timeout(IDLE, conn.read(buf.slice_mut(len..))).await {
                Ok(x) => x,
                Err(_) => return,
            };
            buf = b.into_inner();
            match r {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        };
        buf.drain(..req.head_len);
        let out = respond(&req, view);
        match monoio::time::timeout(IDLE, conn.write_all(out)).await {
            Ok((Ok(_), _)) if req.keep => {}
            _ => return,
        }
    }
}
