//! CONNECT: a pooled connection to the server when a quiet one is there, else a new one
//! within `timeout_connect` (after freeing the idle pool once when descriptors ran out).

use std::io;
use std::time::Duration;

use monoio::net::TcpStream;

use crate::core::Worker;
use crate::ids::ServerId;
use crate::snapshot::Snapshot;

/// A connection to the server, and whether it came from the pool.
pub async fn connect(
    w: &Worker,
    snap: &Snapshot,
    s: ServerId,
    timeout: Duration,
    fresh_only: bool,
) -> io::Result<(TcpStream, bool)> {
    // A pooled connection is reused only when nothing at all is readable on it: no stray
    // bytes a server wrote after its last response (they would reach the next client as
    // its answer), and no close. Every reuse is checked, whatever the request.
    while let Some(p) = if fresh_only { None } else { w.pool_take(s) } {
        if quiet(&p.stream) {
            return Ok((p.stream, true));
        }
    }
    let addr = snap.server(s).addr;
    let mut freed = false;
    loop {
        match monoio::time::timeout(timeout, TcpStream::connect_addr(addr)).await {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                return Ok((s, false));
            }
            // Out of descriptors: the idle pooled connections go first, then one more try.
            Ok(Err(e)) if !freed && w.out_of_descriptors(&e) > 0 => freed = true,
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(io::Error::new(io::ErrorKind::TimedOut, "connect timeout")),
        }
    }
}

/// A connect that failed for want of something here (descriptors, memory, source
/// ports), not because of the server.
pub fn local_shortage(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM | libc::EADDRNOTAVAIL)
    )
}

/// Whether an idle pooled connection is fit for a new request: still open (the server
/// has not closed it) and holding no unread byte. A non-blocking peek.
fn quiet(s: &TcpStream) -> bool {
    use std::os::fd::AsRawFd;
    let mut b = [0u8; 1];
    // SAFETY: valid fd and buffer.
    let n = unsafe {
        libc::recv(
            s.as_raw_fd(),
            b.as_mut_ptr().cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock
}
