//! One HTTP/2 stream as the client stream of one HTTP/1.1 request ([`H2Io`]), so that
//! the request path runs on it unchanged: reading gives the request head (from
//! [`super::request`]) and then its body (DATA as it is, or as chunks, with the
//! trailers), then the end; what the request path writes, an HTTP/1.1 response, goes out
//! as HEADERS and DATA ([`super::response`]).
//!
//! Flow control both ways: a DATA frame's window is given back to the client only once
//! the request path has taken its bytes (a slow server slows the upload), and response
//! bytes are written only as the client's window opens (a slow client slows the
//! download: the request path stops reading from the server). Each wait is bounded by
//! `h2_stream_idle_timeout`.

use std::future::poll_fn;
use std::io;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use h2::server::SendResponse;
use h2::{Reason, RecvStream, SendStream};
use monoio::buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent};
use monoio::BufResult;

use super::request::{chunked_end, Body1, Head1};
use super::response::to_h2;
use crate::core::{Buf, Worker};
use crate::http::chunked::{chunk_header, ChunkedDecoder};
use crate::http::head::{BodyLen, HeadLimits};
use crate::proxy::client_io::{ClientIo, Idle};

/// Where the response stands.
enum Out {
    /// Head bytes so far.
    Head(Vec<u8>),
    Body {
        send: SendStream<Bytes>,
        framing: Framing,
    },
    Done,
}

enum Framing {
    Length(u64),
    Chunked(ChunkedDecoder),
    Close,
}

/// One stream, as a client stream.
pub struct H2Io {
    w: Rc<Worker>,
    /// Request bytes ready to be read, from `pos`.
    pending: Vec<u8>,
    pos: usize,
    /// The request body still to come (`None` once it ended).
    recv: Option<RecvStream>,
    chunked: bool,
    respond: Option<SendResponse<Bytes>>,
    out: Out,
    head_request: bool,
    limits: HeadLimits,
    idle: Duration,
}

fn broken(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, what.to_string())
}

impl H2Io {
    /// A stream answered by the engine itself (a refused request): nothing to read.
    pub fn answer_only(w: Rc<Worker>, respond: SendResponse<Bytes>) -> H2Io {
        let head = Head1 {
            bytes: Vec::new(),
            body: Body1::None,
        };
        H2Io::with(w, head, None, respond, false)
    }

    /// Sends a whole HTTP/1.1 response (the engine's own).
    pub async fn answer(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.take(bytes).await
    }

    pub fn new(
        w: Rc<Worker>,
        head: Head1,
        recv: RecvStream,
        respond: SendResponse<Bytes>,
        head_request: bool,
    ) -> H2Io {
        H2Io::with(w, head, Some(recv), respond, head_request)
    }

    fn with(
        w: Rc<Worker>,
        head: Head1,
        recv: Option<RecvStream>,
        respond: SendResponse<Bytes>,
        head_request: bool,
    ) -> H2Io {
        let snap = w.snapshot();
        let (limits, idle) = (snap.head_limits, snap.cfg.limits.h2_stream_idle_timeout);
        drop(snap);
        H2Io {
            w,
            pending: head.bytes,
            pos: 0,
            recv: recv.filter(|_| head.body != Body1::None),
            chunked: head.body == Body1::Chunked,
            respond: Some(respond),
            out: Out::Head(Vec::new()),
            head_request,
            limits,
            idle,
        }
    }

    /// Reads a whole body of `len` bytes before anything is forwarded (a small body
    /// with a content-length): a length the DATA disagrees with is then refused before
    /// a server sees a byte of the request.
    pub async fn prefetch(&mut self, len: u64) -> Result<(), Reason> {
        let Some(recv) = self.recv.as_mut() else {
            return Ok(());
        };
        let mut got = 0u64;
        loop {
            let d = self.w.idle.bounded(self.idle, recv.data()).await;
            match d {
                Ok(Some(Ok(b))) => {
                    got += b.len() as u64;
                    if got > len {
                        return Err(Reason::PROTOCOL_ERROR);
                    }
                    let _ = recv.flow_control().release_capacity(b.len());
                    self.pending.extend_from_slice(&b);
                }
                Ok(None) if got == len => break,
                Ok(None) => return Err(Reason::PROTOCOL_ERROR),
                Ok(Some(Err(e))) => return Err(e.reason().unwrap_or(Reason::PROTOCOL_ERROR)),
                Err(_) => return Err(Reason::CANCEL),
            }
        }
        self.recv = None;
        Ok(())
    }

    /// The next request bytes into `pending` (`false` at the end of the request).
    async fn fill(&mut self) -> io::Result<bool> {
        self.pending.clear();
        self.pos = 0;
        let Some(recv) = self.recv.as_mut() else {
            return Ok(false);
        };
        loop {
            let d = self.w.idle.bounded(self.idle, recv.data()).await;
            match d {
                Ok(Some(Ok(b))) => {
                    // The window opens again once the request path takes these bytes
                    // (at most a frame is held here).
                    let _ = recv.flow_control().release_capacity(b.len());
                    if b.is_empty() {
                        continue;
                    }
                    if self.chunked {
                        chunk_header(b.len(), &mut self.pending);
                        self.pending.extend_from_slice(&b);
                        self.pending.extend_from_slice(b"\r\n");
                    } else {
                        self.pending.extend_from_slice(&b);
                    }
                    return Ok(true);
                }
                Ok(None) => {
                    if self.chunked {
                        let t = self.w.idle.bounded(self.idle, recv.trailers()).await;
                        let t = t.ok().and_then(Result::ok).flatten();
                        self.pending = chunked_end(t.as_ref());
                    }
                    self.recv = None;
                    return Ok(!self.pending.is_empty());
                }
                Ok(Some(Err(e))) => return Err(io::Error::other(e)),
                Err(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "h2_stream_idle_timeout: no DATA",
                    ))
                }
            }
        }
    }

    /// Sends `data` as the client's window allows.
    async fn send(&mut self, mut data: &[u8]) -> io::Result<()> {
        let Out::Body { send, .. } = &mut self.out else {
            return Err(broken("no response to send a body on"));
        };
        while !data.is_empty() {
            send.reserve_capacity(data.len());
            let cap = self
                .w
                .idle
                .bounded(self.idle, poll_fn(|cx| send.poll_capacity(cx)))
                .await;
            let n = match cap {
                Ok(Some(Ok(n))) => n.min(data.len()),
                Ok(Some(Err(e))) => return Err(io::Error::other(e)),
                Ok(None) => return Err(broken("the client reset the stream")),
                Err(_) => {
                    send.send_reset(Reason::CANCEL);
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "h2_stream_idle_timeout: the client's window stayed shut",
                    ));
                }
            };
            if n == 0 {
                continue;
            }
            send.send_data(Bytes::copy_from_slice(&data[..n]), false)
                .map_err(io::Error::other)?;
            data = &data[n..];
        }
        Ok(())
    }

    fn end(&mut self) -> io::Result<()> {
        if let Out::Body { send, .. } = &mut self.out {
            send.send_data(Bytes::new(), true)
                .map_err(io::Error::other)?;
        }
        self.out = Out::Done;
        Ok(())
    }

    /// What the request path wrote: parsed, then sent.
    async fn take(&mut self, mut data: &[u8]) -> io::Result<()> {
        /// What to do with the next bytes, decided while `out` is borrowed.
        enum Act {
            Head,
            Send { n: usize, last: bool },
            Chunk(crate::http::chunked::Step),
        }
        while !data.is_empty() {
            let act = match &mut self.out {
                Out::Done => return Ok(()),
                Out::Head(_) => Act::Head,
                Out::Body { framing, .. } => match framing {
                    Framing::Length(left) => {
                        let n = (*left).min(data.len() as u64) as usize;
                        *left -= n as u64;
                        Act::Send {
                            n,
                            last: *left == 0,
                        }
                    }
                    Framing::Close => Act::Send {
                        n: data.len(),
                        last: false,
                    },
                    Framing::Chunked(dec) => {
                        Act::Chunk(dec.step(data).map_err(|e| broken(&e.to_string()))?)
                    }
                },
            };
            match act {
                Act::Head => {
                    let mut acc = match std::mem::replace(&mut self.out, Out::Done) {
                        Out::Head(acc) => acc,
                        _ => Vec::new(),
                    };
                    acc.extend_from_slice(data);
                    data = &[];
                    self.head(acc).await?;
                }
                Act::Send { n, last } => {
                    self.send(&data[..n]).await?;
                    data = &data[n..];
                    if last {
                        self.end()?;
                    }
                }
                Act::Chunk(step) => {
                    if step.consumed == 0 && !step.done {
                        return Ok(());
                    }
                    self.send(&data[step.data.clone()]).await?;
                    data = &data[step.consumed..];
                    if step.done {
                        self.end()?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Head bytes so far: the response sent once they hold a whole head (an interim 1xx
    /// is dropped); what follows the head is body.
    async fn head(&mut self, mut acc: Vec<u8>) -> io::Result<()> {
        loop {
            let parsed = to_h2(&acc, self.head_request, &self.limits)
                .map_err(|e| broken(&format!("response head: {e:?}")))?;
            let Some(h) = parsed else {
                self.out = Out::Head(acc);
                return Ok(());
            };
            let rest = acc.split_off(h.head_len);
            if h.interim {
                acc = rest;
                continue;
            }
            let Some(mut respond) = self.respond.take() else {
                return Err(broken("a second response"));
            };
            let no_body = h.body == BodyLen::None || h.body == BodyLen::Length(0);
            let send = respond
                .send_response(h.resp, no_body)
                .map_err(io::Error::other)?;
            if no_body {
                self.out = Out::Done;
                return Ok(());
            }
            let framing = match h.body {
                BodyLen::Length(n) => Framing::Length(n),
                BodyLen::Chunked => Framing::Chunked(ChunkedDecoder::new()),
                _ => Framing::Close,
            };
            self.out = Out::Body { send, framing };
            return Box::pin(self.take(&rest)).await;
        }
    }

    /// The request path is done with the stream: a close-delimited body ends here; a
    /// response cut short, or none at all, resets the stream.
    pub fn finish(&mut self) {
        match std::mem::replace(&mut self.out, Out::Done) {
            Out::Done => {}
            Out::Body {
                mut send,
                framing: Framing::Close,
            } => {
                let _ = send.send_data(Bytes::new(), true);
            }
            Out::Body { mut send, .. } => send.send_reset(Reason::INTERNAL_ERROR),
            Out::Head(_) => {
                if let Some(mut r) = self.respond.take() {
                    r.send_reset(Reason::INTERNAL_ERROR);
                }
            }
        }
    }

    /// Refuses the stream with RST_STREAM `reason`.
    pub fn reset(&mut self, reason: Reason) {
        if let Some(mut r) = self.respond.take() {
            r.send_reset(reason);
        }
        self.out = Out::Done;
    }
}

impl AsyncReadRent for H2Io {
    async fn read<T: IoBufMut>(&mut self, mut buf: T) -> BufResult<usize, T> {
        if self.pos >= self.pending.len() {
            match self.fill().await {
                Ok(true) => {}
                Ok(false) => return (Ok(0), buf),
                Err(e) => return (Err(e), buf),
            }
        }
        // As a socket read: written from write_ptr, at most bytes_total, then set_init.
        let n = buf.bytes_total().min(self.pending.len() - self.pos);
        // SAFETY: n bytes fit in the buffer from write_ptr.
        unsafe {
            std::ptr::copy_nonoverlapping(self.pending.as_ptr().add(self.pos), buf.write_ptr(), n);
            buf.set_init(n);
        }
        self.pos += n;
        (Ok(n), buf)
    }

    async fn readv<T: IoVecBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        (
            Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "readv on an HTTP/2 stream",
            )),
            buf,
        )
    }
}

impl AsyncWriteRent for H2Io {
    async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        // SAFETY: read_ptr is valid for bytes_init bytes while we hold the buffer.
        let data = unsafe { std::slice::from_raw_parts(buf.read_ptr(), buf.bytes_init()) };
        let n = data.len();
        match self.take(data).await {
            Ok(()) => (Ok(n), buf),
            Err(e) => (Err(e), buf),
        }
    }

    async fn writev<T: IoVecBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        (
            Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "writev on an HTTP/2 stream",
            )),
            buf,
        )
    }

    async fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        self.finish();
        Ok(())
    }
}

// SAFETY: never split (no tunnel on an HTTP/2 stream); the marker the trait asks for.
unsafe impl monoio::io::Split for H2Io {}

impl ClientIo for H2Io {
    /// One request per stream: after its response the stream has nothing more.
    async fn hold_read(
        &mut self,
        _w: &Worker,
        _buf: Buf,
        _expire_ticks: u64,
        _canceller: &mut Option<monoio::io::Canceller>,
    ) -> Idle {
        Idle::Eof
    }

    async fn long_wait(&mut self, _w: &Worker, _expire_ticks: u64) -> Idle {
        Idle::Eof
    }

    fn http2(&self) -> bool {
        true
    }
}
