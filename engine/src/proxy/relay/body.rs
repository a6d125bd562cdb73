//! Bodies in both directions, streamed, never buffered whole: the request body to the
//! server ([`send_body`]: Content-Length, or chunked with its framing checked and the
//! size limit kept) and the response body to the client ([`relay_body`]: passed on as it
//! is, de-chunked for an HTTP/1.0 client, a close-delimited one re-framed as chunked for
//! an HTTP/1.1 client). Large Content-Length bodies on plain TCP are spliced.

use std::time::Duration;

use monoio::buf::IoBufMut;
use monoio::io::AsyncReadRent;
use monoio::net::TcpStream;

use super::splice::{splice_body, Limits, RESPONSE, UPLOAD};
use super::{LARGE_BODY, LARGE_BUF};
use crate::core::{Buf, Worker, BUF_SIZE};
use crate::http::chunked::{chunk_header, ChunkedDecoder};
use crate::http::head::BodyLen;
use crate::proxy::client_io::{read_into, write_all, ClientBuf, ClientIo};
use crate::proxy::outcome::{Kind, Phase, ProxyError, Side};

/// What decoding some chunked bytes gave.
pub struct Decoded {
    /// Data bytes (not counting chunk framing).
    pub data: u64,
    /// The body ended.
    pub fin: bool,
    /// Bytes followed the end of the body in the same input: the connection must not be
    /// reused, and they are never passed on.
    pub overrun: bool,
}

/// Decodes chunked bytes: appends them as they are (to a chunked client) or only their
/// data. `Err` when they are malformed.
pub fn decode_into(
    dec: &mut ChunkedDecoder,
    input: &[u8],
    passthrough: bool,
    out: &mut Vec<u8>,
) -> Result<Decoded, crate::http::chunked::ChunkError> {
    let mut pos = 0;
    let mut data = 0u64;
    while pos < input.len() {
        let s = dec.step(&input[pos..])?;
        let chunk = &input[pos..pos + s.consumed];
        if passthrough {
            out.extend_from_slice(chunk);
        } else {
            out.extend_from_slice(&chunk[s.data.clone()]);
        }
        data += s.data.len() as u64;
        pos += s.consumed;
        if s.done {
            return Ok(Decoded {
                data,
                fin: true,
                overrun: pos < input.len(),
            });
        }
        if s.consumed == 0 {
            break;
        }
    }
    Ok(Decoded {
        data,
        fin: false,
        overrun: false,
    })
}

/// Close-delimited bytes for the client: as a chunk (an HTTP/1.1 client) or as they are.
pub fn reframe_into(data: &[u8], chunked: bool, out: &mut Vec<u8>) {
    if chunked {
        chunk_header(data.len(), out);
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
    } else {
        out.extend_from_slice(data);
    }
}

/// The rest of a response body, from the server to the client.
pub struct ResponseBody {
    /// How the server frames it, and how the client gets it.
    pub server: BodyLen,
    pub client: BodyLen,
    /// Body bytes already passed on with the head.
    pub sent: u64,
    pub dec: ChunkedDecoder,
    pub client_t: Duration,
    pub server_t: Duration,
}

fn client_gone(e: std::io::Error) -> ProxyError {
    ProxyError::client(Phase::Data, Kind::Aborted).because(e)
}

/// Streams the rest of the response body. Returns the bytes sent to the client and
/// whether the server's connection ended cleanly (reusable), or the failure with the
/// bytes sent before it.
pub async fn relay_body<S: ClientIo>(
    w: &Worker,
    up: &mut TcpStream,
    io: &mut S,
    mut b: ResponseBody,
) -> Result<(u64, bool), (ProxyError, u64)> {
    // A large body is spliced from the server to a plain TCP client; under TLS, or where
    // splice is refused, it moves in 64 KiB reads and writes, a quarter of the system
    // calls, with a buffer that lives only while the body does (not pooled).
    let mut sb = w.buf();
    if let BodyLen::Length(n) = b.server {
        if n - b.sent > LARGE_BODY {
            if let Some(client) = io.plain() {
                let t = Limits {
                    src: b.server_t,
                    dst: b.client_t,
                };
                if let Some(r) = splice_body(w, (up, client), n - b.sent, t, &RESPONSE).await {
                    return r.map(|moved| (moved, true));
                }
            }
            sb = Buf::own(LARGE_BUF);
        }
    }
    let mut ob = w.buf();
    let mut total = 0u64;
    loop {
        let want = match b.server {
            BodyLen::Length(n) => ((n - b.sent) as usize).min(sb.capacity()),
            _ => sb.capacity(),
        };
        sb.clear();
        let read = up.read(std::mem::take(&mut sb).slice_mut(0..want));
        let (r, s) = match w.idle.bounded(b.server_t, read).await {
            Ok(x) => x,
            Err(_) => return Err((ProxyError::server(Phase::Data, Kind::TimedOut), total)),
        };
        sb = s.into_inner();
        let n = r.unwrap_or_default();
        if let (BodyLen::Length(len), true) = (b.server, n > 0) {
            // As it came: the read buffer itself is written, no copy.
            b.sent += n as u64;
            let (r, back) = write_all(w, io, std::mem::take(&mut sb), b.client_t).await;
            sb = back;
            r.map_err(|e| (client_gone(e), total))?;
            total += n as u64;
            if b.sent >= len {
                return Ok((total, true));
            }
            continue;
        }
        ob.clear();
        let step = pass_on(&mut b, &sb[..n], &mut ob).map_err(|e| (e, total))?;
        if !ob.is_empty() {
            let k = ob.len() as u64;
            let (r, back) = write_all(w, io, std::mem::take(&mut ob), b.client_t).await;
            ob = back;
            r.map_err(|e| (client_gone(e), total))?;
            total += k;
        }
        if let Some(clean) = step {
            return Ok((total, clean));
        }
    }
}

/// What `n` bytes just read from the server give the client, into `out`. `Ok(Some(clean))`
/// when the body is over (and whether the server's connection may be reused).
fn pass_on(
    b: &mut ResponseBody,
    data: &[u8],
    out: &mut Vec<u8>,
) -> Result<Option<bool>, ProxyError> {
    if data.is_empty() {
        if b.server == BodyLen::Close {
            // The end of a close-delimited body.
            if b.client == BodyLen::Chunked {
                out.extend_from_slice(b"0\r\n\r\n");
            }
            return Ok(Some(false));
        }
        // The server died mid-body: the client gets a cut response.
        return Err(ProxyError::server(Phase::Data, Kind::Aborted));
    }
    match b.server {
        BodyLen::Length(len) => {
            b.sent += data.len() as u64;
            out.extend_from_slice(data);
            Ok((b.sent >= len).then_some(true))
        }
        BodyLen::Chunked => {
            let d = decode_into(&mut b.dec, data, b.client == BodyLen::Chunked, out)
                .map_err(|_| ProxyError::server(Phase::Data, Kind::Malformed))?;
            // Bytes after the last chunk: the connection is not reused.
            Ok(d.fin.then_some(!d.overrun))
        }
        BodyLen::Close => {
            reframe_into(data, b.client == BodyLen::Chunked, out);
            Ok(None)
        }
        BodyLen::None => Ok(Some(true)),
    }
}

/// The request body, from the client to the server.
pub struct RequestBody<'a> {
    pub body: BodyLen,
    /// Body bytes already sent with the head.
    pub already: u64,
    pub dec: &'a mut Option<ChunkedDecoder>,
    pub max_body: u64,
    pub client_t: Duration,
    pub server_t: Duration,
}

/// A request body the engine refuses (malformed chunks, past `max_body_bytes`).
fn refused(status: u16) -> ProxyError {
    ProxyError::new(Side::Proxy, Phase::Request, Kind::Refused(status))
}

fn server_gone(e: std::io::Error) -> ProxyError {
    ProxyError::server(Phase::Data, Kind::Aborted).because(e)
}

/// Streams the request body to the server, validating chunked framing and the limit.
pub async fn send_body<S: ClientIo>(
    w: &Worker,
    io: &mut S,
    cb: &mut ClientBuf,
    up: &mut TcpStream,
    b: RequestBody<'_>,
) -> Result<(), ProxyError> {
    match b.body {
        BodyLen::None | BodyLen::Close => Ok(()),
        BodyLen::Length(n) => send_length(w, io, cb, up, n - b.already, &b).await,
        BodyLen::Chunked => send_chunked(w, io, cb, up, b).await,
    }
}

async fn send_length<S: ClientIo>(
    w: &Worker,
    io: &mut S,
    cb: &mut ClientBuf,
    up: &mut TcpStream,
    mut remaining: u64,
    b: &RequestBody<'_>,
) -> Result<(), ProxyError> {
    // What is already buffered first.
    if !cb.is_empty() && remaining > 0 {
        let take = (cb.data().len() as u64).min(remaining) as usize;
        let mut out = w.buf();
        out.extend_from_slice(&cb.data()[..take]);
        cb.consume(take);
        remaining -= take as u64;
        write_all(w, up, out, b.server_t)
            .await
            .0
            .map_err(server_gone)?;
    }
    if remaining > LARGE_BODY {
        if let Some(client) = io.plain() {
            // A large upload on plain TCP: spliced, like large responses.
            let t = Limits {
                src: b.client_t,
                dst: b.server_t,
            };
            if let Some(r) = splice_body(w, (client, up), remaining, t, &UPLOAD).await {
                return r.map(|_| ()).map_err(|(e, _)| e);
            }
        }
    }
    let mut buf = w.buf();
    while remaining > 0 {
        let want = (remaining as usize).min(buf.capacity());
        buf.clear();
        let read = io.read(std::mem::take(&mut buf).slice_mut(0..want));
        let (r, s) = w
            .idle
            .bounded(b.client_t, read)
            .await
            .map_err(|_| ProxyError::client(Phase::Data, Kind::TimedOut))?;
        buf = s.into_inner();
        match r {
            Ok(0) => return Err(ProxyError::client(Phase::Data, Kind::Aborted)),
            Err(e) => return Err(client_gone(e)),
            Ok(k) => remaining -= k as u64,
        }
        let (r, back) = write_all(w, up, std::mem::take(&mut buf), b.server_t).await;
        buf = back;
        r.map_err(server_gone)?;
    }
    Ok(())
}

async fn send_chunked<S: ClientIo>(
    w: &Worker,
    io: &mut S,
    cb: &mut ClientBuf,
    up: &mut TcpStream,
    b: RequestBody<'_>,
) -> Result<(), ProxyError> {
    let dec = b.dec.get_or_insert_with(ChunkedDecoder::new);
    let mut out = w.buf();
    loop {
        if cb.is_empty() {
            cb.make_room(w, BUF_SIZE);
            match w.idle.bounded(b.client_t, read_into(io, cb)).await {
                Ok(Ok(0)) => return Err(ProxyError::client(Phase::Data, Kind::Aborted)),
                Ok(Err(e)) => return Err(client_gone(e)),
                Ok(Ok(_)) => {}
                Err(_) => return Err(ProxyError::client(Phase::Data, Kind::TimedOut)),
            }
        }
        out.clear();
        let d = chunks(dec, cb, &mut out)?;
        if b.max_body > 0 && dec.total > b.max_body {
            return Err(refused(413));
        }
        if !out.is_empty() {
            let (r, back) = write_all(w, up, std::mem::take(&mut out), b.server_t).await;
            out = back;
            r.map_err(server_gone)?;
        }
        if d {
            return Ok(());
        }
    }
}

/// Takes the chunked bytes of `cb` that belong to the body into `out`, as they are.
/// `Ok(true)` when the body ended.
fn chunks(
    dec: &mut ChunkedDecoder,
    cb: &mut ClientBuf,
    out: &mut Vec<u8>,
) -> Result<bool, ProxyError> {
    let data = cb.data();
    let mut pos = 0;
    let mut fin = false;
    while pos < data.len() {
        let s = dec.step(&data[pos..]).map_err(|_| refused(400))?;
        out.extend_from_slice(&data[pos..pos + s.consumed]);
        pos += s.consumed;
        if s.done {
            fin = true;
            break;
        }
        if s.consumed == 0 {
            break;
        }
    }
    cb.consume(pos);
    Ok(fin)
}
