//! Large Content-Length bodies between two plain TCP sockets, through a pipe of the
//! core's: the kernel hands pages over, nothing is copied through user space.

use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use monoio::net::TcpStream;

use crate::core::{Worker, PIPE_SIZE};
use crate::proxy::outcome::{Kind, Phase, ProxyError, Side};

/// Which side a splice reads from and which it writes to: a failure is named after it.
pub struct Sides {
    pub src: Side,
    pub dst: Side,
}

/// A response body: from the server to the client.
pub const RESPONSE: Sides = Sides {
    src: Side::Server,
    dst: Side::Client,
};

/// A request body: from the client to the server.
pub const UPLOAD: Sides = Sides {
    src: Side::Client,
    dst: Side::Server,
};

impl Sides {
    fn src_end(&self) -> ProxyError {
        ProxyError::new(self.src, Phase::Data, Kind::Aborted)
    }
    fn src_timeout(&self) -> ProxyError {
        ProxyError::new(self.src, Phase::Data, Kind::TimedOut)
    }
    fn dst_fail(&self) -> ProxyError {
        ProxyError::new(self.dst, Phase::Data, Kind::Aborted)
    }
}

/// Timeouts of the two sides.
pub struct Limits {
    pub src: Duration,
    pub dst: Duration,
}

/// Moves `left` bytes of a Content-Length body between two plain TCP streams.
/// Non-blocking splice(2) calls, and a readiness wait (a poll on the ring) only when one
/// would block; the sockets are non-blocking meanwhile and get their flags back after.
/// A pipe that may still hold bytes afterwards is dropped, not pooled.
///
/// Returns the bytes moved, or the failure with the bytes moved before it; `None` when
/// splicing is unavailable here and nothing was moved (the caller copies instead).
pub async fn splice_body(
    w: &Worker,
    (src, dst): (&mut TcpStream, &mut TcpStream),
    left: u64,
    t: Limits,
    sides: &Sides,
) -> Option<Result<u64, (ProxyError, u64)>> {
    if !w.splice_ok.get() {
        return None;
    }
    let mut lease = w.pipe()?;
    let (sfd, dfd) = (src.as_raw_fd(), dst.as_raw_fd());
    // The sockets get their flags back however this ends, a dropped future included.
    let (Some(_src_flags), Some(_dst_flags)) = (Nonblocking::set(sfd), Nonblocking::set(dfd))
    else {
        lease.empty();
        return None;
    };
    let (pr, pw) = (lease.pipe().r.as_raw_fd(), lease.pipe().w.as_raw_fd());
    let mut m = Moving {
        left,
        in_pipe: 0,
        moved: 0,
    };
    let res = loop {
        if m.left == 0 && m.in_pipe == 0 {
            break Ok(());
        }
        match m.fill(w, src, (sfd, pw), &t, sides).await {
            Step::Go => {}
            Step::Fail(e) => break Err(e),
            Step::Refused => {
                w.splice_ok.set(false);
                lease.empty();
                return None;
            }
        }
        if let Err(e) = m.drain(w, dst, (pr, dfd), &t, sides).await {
            break Err(e);
        }
    };
    if res.is_ok() {
        lease.empty();
    }
    Some(res.map(|()| m.moved).map_err(|e| (e, m.moved)))
}

/// Where a splice is.
struct Moving {
    left: u64,
    in_pipe: usize,
    moved: u64,
}

enum Step {
    Go,
    Fail(ProxyError),
    /// Splice itself is unavailable here, and nothing was moved.
    Refused,
}

impl Moving {
    /// Source to pipe.
    async fn fill(
        &mut self,
        w: &Worker,
        src: &TcpStream,
        (sfd, pw): (RawFd, RawFd),
        t: &Limits,
        sides: &Sides,
    ) -> Step {
        if self.left == 0 || self.in_pipe >= PIPE_SIZE {
            return Step::Go;
        }
        let want = (self.left as usize).min(PIPE_SIZE - self.in_pipe);
        match splice(sfd, pw, want) {
            Ok(0) => Step::Fail(sides.src_end()),
            Ok(n) => {
                self.left -= n as u64;
                self.in_pipe += n;
                Step::Go
            }
            // The source is empty (or the pipe full): wait only with nothing to pass on.
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && self.in_pipe == 0 => {
                match w.idle.bounded(t.src, src.readable(false)).await {
                    Ok(Ok(())) => Step::Go,
                    Ok(Err(_)) => Step::Fail(sides.src_end()),
                    Err(_) => Step::Fail(sides.src_timeout()),
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Step::Go,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Step::Go,
            Err(e) if self.moved == 0 && self.in_pipe == 0 && refused(&e) => Step::Refused,
            Err(e) => Step::Fail(sides.src_end().because(e)),
        }
    }

    /// Pipe to destination.
    async fn drain(
        &mut self,
        w: &Worker,
        dst: &TcpStream,
        (pr, dfd): (RawFd, RawFd),
        t: &Limits,
        sides: &Sides,
    ) -> Result<(), ProxyError> {
        if self.in_pipe == 0 {
            return Ok(());
        }
        match splice(pr, dfd, self.in_pipe) {
            Ok(0) => Err(sides.dst_fail()),
            Ok(m) => {
                self.in_pipe -= m.min(self.in_pipe);
                self.moved += m as u64;
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                match w.idle.bounded(t.dst, dst.writable(false)).await {
                    Ok(Ok(())) => Ok(()),
                    _ => Err(sides.dst_fail()),
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Ok(()),
            Err(e) => Err(sides.dst_fail().because(e)),
        }
    }
}

/// Errors that mean splice itself is unavailable (a seccomp profile, an old kernel).
fn refused(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINVAL | libc::ENOSYS | libc::EPERM | libc::EOPNOTSUPP)
    )
}

/// One non-blocking splice(2) of up to `len` bytes.
fn splice(from: RawFd, to: RawFd, len: usize) -> std::io::Result<usize> {
    // SAFETY: plain descriptors; no offsets (sockets and pipes have none).
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    if n < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// A socket made non-blocking for a splice; its flags come back when this is dropped.
struct Nonblocking {
    fd: RawFd,
    /// The flags before, when O_NONBLOCK had to be added.
    restore: Option<libc::c_int>,
}

impl Nonblocking {
    fn set(fd: RawFd) -> Option<Nonblocking> {
        // SAFETY: fcntl on a descriptor the caller owns.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        if flags < 0 {
            return None;
        }
        if flags & libc::O_NONBLOCK != 0 {
            return Some(Nonblocking { fd, restore: None });
        }
        // SAFETY: as above.
        if unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
            return None;
        }
        Some(Nonblocking {
            fd,
            restore: Some(flags),
        })
    }
}

impl Drop for Nonblocking {
    fn drop(&mut self) {
        if let Some(flags) = self.restore {
            // SAFETY: the descriptor outlives this guard (it borrows from a live stream).
            unsafe { libc::fcntl(self.fd, libc::F_SETFL, flags) };
        }
    }
}
