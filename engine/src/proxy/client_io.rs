//! The client side's I/O, plain TCP or TLS ([`ClientIo`]): the wait for the next request
//! with a buffer (the hold), the wait without one, the park; the client's read buffer
//! ([`ClientBuf`]); and writes bounded by the core's sweep ([`write_all`]).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, CancelableAsyncReadRent};
use monoio::net::TcpStream;

use crate::core::idle::Wake;
use crate::core::park::Parked;
use crate::core::{Buf, Worker, BUF_SIZE};
use crate::ids::FrontendId;
use crate::shared::{HOLD_TICKS, TICK};

/// A client stream: plain TCP or TLS.
pub trait ClientIo: AsyncReadRent + AsyncWriteRent + monoio::io::Split + 'static {
    /// Waits for the next request's first bytes right after a response, with a read
    /// buffer; ends with [`Idle::Demote`] when the connection should wait on without one
    /// (see [`crate::core::idle`]).
    fn hold_read(
        &mut self,
        w: &Worker,
        buf: Buf,
        expire_ticks: u64,
        canceller: &mut Option<monoio::io::Canceller>,
    ) -> impl Future<Output = Idle>;

    /// Waits without a buffer for up to `expire_ticks` (after [`Idle::Demote`]).
    fn long_wait(&mut self, w: &Worker, expire_ticks: u64) -> impl Future<Output = Idle>;

    /// The plain TCP stream, when there is one to splice into (not under TLS).
    fn plain(&mut self) -> Option<&mut TcpStream> {
        None
    }

    /// An HTTP/2 stream (its request logged as `HTTP/2.0`).
    fn http2(&self) -> bool {
        false
    }

    /// Leaves the connection in the core's park for its long idle (see
    /// [`crate::core::park`]); gives it back where it cannot be parked (TLS, or epoll
    /// refused), or `None` when it was lost on the way (the connection is then closed).
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
    pub fe: FrontendId,
    pub first: bool,
    pub accepted: Instant,
    /// Ticks until its keep-alive (or first-request) timeout.
    pub ticks: u64,
}

/// How a wait for the next request ended.
pub enum Idle {
    /// Bytes arrived (the buffer may still be empty after a buffer-less wait).
    Ready(Buf),
    /// Still idle after the hold: wait on without a buffer, `left` ticks at most.
    Demote {
        left: u64,
    },
    Eof,
    Expired,
    Stopped,
}

fn wake_to_idle(wk: Wake) -> Idle {
    if wk == Wake::Stop {
        Idle::Stopped
    } else {
        Idle::Expired
    }
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
        let p = Parked {
            fd,
            peer: how.peer,
            fe: how.fe,
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
        buf: Buf,
        expire_ticks: u64,
        canceller: &mut Option<monoio::io::Canceller>,
    ) -> Idle {
        // Keep the buffer for a short while after a response: most next requests come
        // soon, and a read straight into it costs nothing extra.
        let b = if buf.is_held() { buf } else { w.buf() };
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
            Ok(0) => return Idle::Eof,
            Ok(_) => return Idle::Ready(b),
            Err(_) => drop(b),
        }
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
                    Ok(_) => Idle::Ready(w.buf()),
                    Err(_) => Idle::Eof,
                },
                wk = woken => wake_to_idle(wk),
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
        buf: Buf,
        expire_ticks: u64,
        _canceller: &mut Option<monoio::io::Canceller>,
    ) -> Idle {
        let buf = if buf.is_held() { buf } else { w.buf() };
        let key = w.idle.register(expire_ticks);
        let len = buf.len();
        let woken = w.idle.woken(key);
        let read = self.read(buf.slice_mut(len..));
        let out = monoio::select! {
            (r, s) = read => match r {
                Ok(0) | Err(_) => Idle::Eof,
                Ok(_) => Idle::Ready(s.into_inner()),
            },
            wk = woken => wake_to_idle(wk),
        };
        w.idle.remove(key);
        out
    }

    async fn long_wait(&mut self, w: &Worker, expire_ticks: u64) -> Idle {
        // Not reached (hold_read never demotes); the same wait, for completeness.
        let mut none = None;
        self.hold_read(w, Buf::none(), expire_ticks, &mut none)
            .await
    }
}

/// The client's read buffer: `v[start..]` holds bytes not yet used.
pub struct ClientBuf {
    pub v: Buf,
    pub start: usize,
}

impl ClientBuf {
    pub fn new(v: Buf) -> ClientBuf {
        ClientBuf { v, start: 0 }
    }

    pub fn data(&self) -> &[u8] {
        &self.v[self.start..]
    }

    pub fn is_empty(&self) -> bool {
        self.start >= self.v.len()
    }

    pub fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start >= self.v.len() {
            self.start = 0;
            self.v.clear();
        }
    }

    /// Makes room to append: moves unread bytes to the front, grows up to `limit`.
    pub fn make_room(&mut self, w: &Worker, limit: usize) {
        if !self.v.is_held() {
            self.v = w.buf();
        }
        if self.start > 0 {
            self.v.drain(..self.start);
            self.start = 0;
        }
        if self.v.len() == self.v.capacity() && self.v.capacity() < limit {
            let len = self.v.len();
            self.v.reserve(limit.max(BUF_SIZE) - len);
        }
    }

    /// Gives the buffer back when nothing is left in it.
    pub fn release(&mut self) {
        if self.is_empty() {
            self.v = Buf::none();
            self.start = 0;
        }
    }
}

/// Appends what the next read brings to `cb`.
pub async fn read_into<R: AsyncReadRent>(r: &mut R, cb: &mut ClientBuf) -> io::Result<usize> {
    let v = std::mem::take(&mut cb.v);
    let len = v.len();
    let (res, s) = r.read(v.slice_mut(len..)).await;
    cb.v = s.into_inner();
    res
}

/// Writes all of `buf` within `t` (kept by the core's sweep); gives the buffer back.
pub async fn write_all<W: AsyncWriteRent, B: IoBuf + Default>(
    w: &Worker,
    wr: &mut W,
    buf: B,
    t: Duration,
) -> (io::Result<()>, B) {
    match w.idle.bounded(t, wr.write_all(buf)).await {
        Ok((Ok(_), b)) => (Ok(()), b),
        Ok((Err(e), b)) => (Err(e), b),
        Err(_) => (
            Err(io::Error::new(io::ErrorKind::TimedOut, "write timeout")),
            B::default(),
        ),
    }
}
