//! The abuse limits the `h2` crate cannot see from its API: the bytes a client sends are
//! read through [`Sniffer`], which follows the frame headers (9 bytes each, the payloads
//! skipped) and counts, per connection and per second, streams the client resets (rapid
//! reset) and control frames (SETTINGS, PING, PRIORITY, empty DATA), and CONTINUATION
//! frames in one header block. Past a limit it raises a flag that the connection task
//! turns into GOAWAY ENHANCE_YOUR_CALM, and reads nothing more from the client.

use std::cell::{Cell, RefCell};
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The client connection preface (RFC 9113 §3.4).
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const PRIORITY: u8 = 0x2;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

/// The limits, from `[limits]`.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub resets_per_second: u32,
    pub control_per_second: u32,
    pub continuation_frames: u32,
}

/// What was exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Abuse {
    RapidReset,
    ControlFlood,
    Continuation,
}

impl Abuse {
    pub fn as_str(self) -> &'static str {
        match self {
            Abuse::RapidReset => "streams reset by the client faster than h2_max_resets_per_second",
            Abuse::ControlFlood => {
                "SETTINGS, PING, PRIORITY or empty DATA frames faster than h2_max_control_frames_per_second"
            }
            Abuse::Continuation => "more CONTINUATION frames in one header block than h2_max_continuation_frames",
        }
    }
}

/// The frame-header follower (sans-io): feed it what the client sent.
#[derive(Debug)]
pub struct Frames {
    limits: Limits,
    /// Preface bytes still to skip.
    preface: usize,
    header: [u8; 9],
    have: usize,
    /// Payload bytes of the current frame still to skip.
    skip: usize,
    continuations: u32,
    window: Instant,
    resets: u32,
    control: u32,
}

impl Frames {
    pub fn new(limits: Limits, now: Instant) -> Frames {
        Frames {
            limits,
            preface: PREFACE.len(),
            header: [0; 9],
            have: 0,
            skip: 0,
            continuations: 0,
            window: now,
            resets: 0,
            control: 0,
        }
    }

    /// Follows `bytes`; the first abuse seen, if any.
    pub fn feed(&mut self, mut bytes: &[u8], now: Instant) -> Option<Abuse> {
        if now.duration_since(self.window) >= Duration::from_secs(1) {
            self.window = now;
            self.resets = 0;
            self.control = 0;
        }
        while !bytes.is_empty() {
            if self.preface > 0 {
                let n = self.preface.min(bytes.len());
                self.preface -= n;
                bytes = &bytes[n..];
                continue;
            }
            if self.skip > 0 {
                let n = self.skip.min(bytes.len());
                self.skip -= n;
                bytes = &bytes[n..];
                continue;
            }
            let n = (9 - self.have).min(bytes.len());
            self.header[self.have..self.have + n].copy_from_slice(&bytes[..n]);
            self.have += n;
            bytes = &bytes[n..];
            if self.have == 9 {
                self.have = 0;
                if let Some(a) = self.frame() {
                    return Some(a);
                }
            }
        }
        None
    }

    fn frame(&mut self) -> Option<Abuse> {
        let h = &self.header;
        let len = (h[0] as usize) << 16 | (h[1] as usize) << 8 | h[2] as usize;
        let (kind, flags) = (h[3], h[4]);
        self.skip = len;
        match kind {
            RST_STREAM => self.resets += 1,
            SETTINGS | PING if flags & ACK == 0 => self.control += 1,
            PRIORITY => self.control += 1,
            DATA if len == 0 && flags & END_STREAM == 0 => self.control += 1,
            HEADERS if flags & END_HEADERS == 0 => self.continuations = 0,
            CONTINUATION => {
                self.continuations += 1;
                if self.continuations > self.limits.continuation_frames {
                    return Some(Abuse::Continuation);
                }
            }
            _ => {}
        }
        if self.resets > self.limits.resets_per_second {
            return Some(Abuse::RapidReset);
        }
        if self.control > self.limits.control_per_second {
            return Some(Abuse::ControlFlood);
        }
        None
    }
}

/// The flag a connection task waits on.
#[derive(Default)]
pub struct Flag {
    abuse: Cell<Option<Abuse>>,
    waker: RefCell<Option<Waker>>,
}

impl Flag {
    fn raise(&self, a: Abuse) {
        if self.abuse.get().is_none() {
            self.abuse.set(Some(a));
            if let Some(w) = self.waker.borrow_mut().take() {
                w.wake();
            }
        }
    }

    /// Completes when the flag is raised.
    pub fn raised(self: &Rc<Self>) -> impl std::future::Future<Output = Abuse> + '_ {
        std::future::poll_fn(move |cx| match self.abuse.get() {
            Some(a) => Poll::Ready(a),
            None => {
                *self.waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
    }
}

/// The client connection as `h2` reads it, followed frame by frame.
pub struct Sniffer<T> {
    inner: T,
    frames: Frames,
    flag: Rc<Flag>,
}

impl<T> Sniffer<T> {
    pub fn new(inner: T, limits: Limits) -> (Sniffer<T>, Rc<Flag>) {
        let flag = Rc::new(Flag::default());
        let s = Sniffer {
            inner,
            frames: Frames::new(limits, Instant::now()),
            flag: flag.clone(),
        };
        (s, flag)
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Sniffer<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        if me.flag.abuse.get().is_some() {
            // Nothing more from this client; the GOAWAY still goes out.
            return Poll::Pending;
        }
        let before = buf.filled().len();
        let r = Pin::new(&mut me.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &r {
            if let Some(a) = me.frames.feed(&buf.filled()[before..], Instant::now()) {
                me.flag.raise(a);
            }
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Sniffer<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: Limits = Limits {
        resets_per_second: 3,
        control_per_second: 3,
        continuation_frames: 2,
    };

    fn frame(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
        let n = payload.len();
        let mut v = vec![
            (n >> 16) as u8,
            (n >> 8) as u8,
            n as u8,
            kind,
            flags,
            0,
            0,
            0,
            1,
        ];
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn rapid_resets_past_the_limit_in_one_second_are_abuse_not_before() {
        let t = Instant::now();
        let mut f = Frames::new(L, t);
        assert_eq!(f.feed(PREFACE, t), None);
        let rst = frame(RST_STREAM, 0, &[0, 0, 0, 8]);
        for _ in 0..3 {
            assert_eq!(f.feed(&rst, t), None);
        }
        // A new second: the count starts again.
        let later = t + Duration::from_millis(1100);
        for _ in 0..3 {
            assert_eq!(f.feed(&rst, later), None);
        }
        assert_eq!(f.feed(&rst, later), Some(Abuse::RapidReset));
    }

    #[test]
    fn floods_of_control_frames_and_endless_continuations_split_anywhere() {
        let t = Instant::now();
        let mut f = Frames::new(L, t);
        let mut all = PREFACE.to_vec();
        for _ in 0..4 {
            all.extend(frame(PING, 0, &[0; 8]));
        }
        // Byte by byte: frame headers split across reads are followed all the same.
        let got: Vec<_> = all.iter().filter_map(|b| f.feed(&[*b], t)).collect();
        assert_eq!(got, [Abuse::ControlFlood]);
        // PING and SETTINGS acknowledgements, and DATA that ends a stream, are not counted.
        let mut f = Frames::new(L, t);
        f.feed(PREFACE, t);
        for _ in 0..10 {
            assert_eq!(f.feed(&frame(PING, ACK, &[0; 8]), t), None);
            assert_eq!(f.feed(&frame(SETTINGS, ACK, &[]), t), None);
            assert_eq!(f.feed(&frame(DATA, END_STREAM, &[]), t), None);
            assert_eq!(f.feed(&frame(DATA, 0, b"x"), t), None);
        }
        let mut f = Frames::new(L, t);
        f.feed(PREFACE, t);
        assert_eq!(f.feed(&frame(HEADERS, 0, &[0x82]), t), None);
        assert_eq!(f.feed(&frame(CONTINUATION, 0, &[]), t), None);
        assert_eq!(f.feed(&frame(CONTINUATION, 0, &[]), t), None);
        assert_eq!(
            f.feed(&frame(CONTINUATION, 0, &[]), t),
            Some(Abuse::Continuation)
        );
    }
}
