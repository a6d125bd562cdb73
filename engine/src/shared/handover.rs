//! Binary takeover's wire format, shared by the two sides: the running engine's admin
//! socket (which hands over) and the new process (which receives, see
//! `runtime::takeover`).
//!
//! On the admin socket the new process writes [`HELLO`]. The running engine answers
//! with its listening sockets, passed with SCM_RIGHTS in batches of at most
//! [`FDS_PER_MESSAGE`], each batch carried by one byte `F`, then a line
//! `TAKEOVER <fds> <bytes>` and a [`Manifest`] of that many bytes of JSON (what each
//! socket is, and every server's health and admin state). Once the new process accepts
//! on them it writes [`DONE`]; the running engine answers `ok` and stops gracefully
//! (stops accepting, finishes what is in flight, exits 0). A new process that goes
//! away before [`DONE`] leaves the running engine as it was.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// What the new process asks first.
pub const HELLO: &str = "_takeover v1";
/// What the new process says once it accepts on the sockets it received.
pub const DONE: &str = "_takeover done";
/// SCM_RIGHTS carries at most 253 descriptors a message (SCM_MAX_FD).
pub const FDS_PER_MESSAGE: usize = 200;

/// What the sockets are, and the servers' states.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Manifest {
    pub version: u32,
    pub pid: u32,
    /// One per descriptor, in order (every core's listener of every bind).
    pub listeners: Vec<ListenerInfo>,
    /// The stats endpoint's listener, the descriptor after the listeners'.
    pub stats: Option<SocketAddr>,
    pub servers: Vec<ServerHandover>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ListenerInfo {
    pub frontend: String,
    /// As the configuration wrote it (port 0 possible).
    pub configured: SocketAddr,
    /// As bound.
    pub real: SocketAddr,
}

/// One server's state, found again by backend/name and address.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ServerHandover {
    /// `backend/server`.
    pub key: String,
    pub addr: SocketAddr,
    pub up: bool,
    /// `ready`, `drain` or `maint`.
    pub admin: String,
    /// A weight set at run time (`set weight`), if any.
    pub weight: Option<u32>,
}

fn cmsg_space(n: usize) -> usize {
    // SAFETY: CMSG_SPACE is a pure computation.
    unsafe { libc::CMSG_SPACE((n * std::mem::size_of::<RawFd>()) as u32) as usize }
}

/// Sends `data` with descriptors `fds` (at most [`FDS_PER_MESSAGE`]) in one sendmsg,
/// waiting out a full socket buffer for up to 5 s.
pub fn send_with_fds(sock: RawFd, data: &[u8], fds: &[RawFd]) -> io::Result<()> {
    assert!(fds.len() <= FDS_PER_MESSAGE);
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    let mut control = vec![0u8; cmsg_space(fds.len().max(1))];
    // SAFETY: msghdr is plain data; every pointer set below points into live locals.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = cmsg_space(fds.len()) as _;
        // SAFETY: the control buffer has room for one header and fds.len() descriptors.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of_val(fds) as u32) as _;
            std::ptr::copy_nonoverlapping(
                fds.as_ptr(),
                libc::CMSG_DATA(c).cast::<RawFd>(),
                fds.len(),
            );
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        // SAFETY: msg is fully initialised above.
        let n = unsafe { libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL) };
        if n >= 0 {
            if (n as usize) < data.len() {
                // The descriptors went with the first byte; the rest is plain data.
                return write_all(sock, &data[n as usize..], deadline);
            }
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::WouldBlock || Instant::now() >= deadline {
            return Err(e);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn write_all(sock: RawFd, mut data: &[u8], deadline: Instant) -> io::Result<()> {
    while !data.is_empty() {
        // SAFETY: writes from a live slice.
        let n = unsafe { libc::send(sock, data.as_ptr().cast(), data.len(), libc::MSG_NOSIGNAL) };
        if n >= 0 {
            data = &data[n as usize..];
            continue;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::WouldBlock || Instant::now() >= deadline {
            return Err(e);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

/// The whole handover, as the running engine sends it.
pub fn send_handover(sock: RawFd, manifest: &Manifest, fds: &[OwnedFd]) -> io::Result<()> {
    let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
    for batch in raw.chunks(FDS_PER_MESSAGE) {
        send_with_fds(sock, b"F", batch)?;
    }
    let json = serde_json::to_vec(manifest).map_err(io::Error::other)?;
    let mut out = format!("TAKEOVER {} {}\n", raw.len(), json.len()).into_bytes();
    out.extend_from_slice(&json);
    write_all(sock, &out, Instant::now() + Duration::from_secs(5))
}

/// Reads one byte and the descriptors that came with it (blocking socket). `Ok(None)`
/// at EOF.
pub fn recv_byte_with_fds(sock: RawFd) -> io::Result<Option<(u8, Vec<OwnedFd>)>> {
    let mut byte = 0u8;
    let mut iov = libc::iovec {
        iov_base: (&mut byte as *mut u8).cast(),
        iov_len: 1,
    };
    let mut control = vec![0u8; cmsg_space(253)];
    // SAFETY: msghdr is plain data; its pointers point into live locals.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = control.len() as _;
    // SAFETY: msg is initialised; MSG_CMSG_CLOEXEC marks the descriptors close-on-exec.
    let n = unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut fds = Vec::new();
    // SAFETY: walks the control messages the kernel wrote, within msg_controllen.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let bytes = (*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                let p = libc::CMSG_DATA(c).cast::<RawFd>();
                for i in 0..bytes / std::mem::size_of::<RawFd>() {
                    fds.push(OwnedFd::from_raw_fd(std::ptr::read_unaligned(p.add(i))));
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    if n == 0 {
        return Ok(None);
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(io::Error::other(
            "descriptors were cut off in transit (MSG_CTRUNC)",
        ));
    }
    Ok(Some((byte, fds)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, Read};
    use std::os::unix::net::UnixStream;

    #[test]
    fn a_handover_carries_every_descriptor_and_the_manifest() {
        let (a, b) = UnixStream::pair().unwrap();
        // More than one batch.
        let listeners: Vec<std::net::TcpListener> = (0..FDS_PER_MESSAGE + 3)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let addrs: Vec<SocketAddr> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
        let manifest = Manifest {
            version: 1,
            pid: 7,
            listeners: addrs
                .iter()
                .map(|&a| ListenerInfo {
                    frontend: "web".into(),
                    configured: a,
                    real: a,
                })
                .collect(),
            stats: None,
            servers: vec![ServerHandover {
                key: "moodle/m1".into(),
                addr: "127.0.0.1:8080".parse().unwrap(),
                up: false,
                admin: "maint".into(),
                weight: Some(3),
            }],
        };
        let fds: Vec<OwnedFd> = listeners.into_iter().map(OwnedFd::from).collect();
        let sender = std::thread::spawn(move || send_handover(a.as_raw_fd(), &manifest, &fds));
        let mut got = Vec::new();
        let first = loop {
            let (byte, fds) = recv_byte_with_fds(b.as_raw_fd()).unwrap().unwrap();
            if byte != b'F' {
                break byte;
            }
            got.extend(fds);
        };
        assert_eq!(first, b'T');
        let mut r = std::io::BufReader::new(&b);
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        let mut parts = line.split_whitespace();
        assert_eq!(parts.next(), Some("AKEOVER"));
        let n: usize = parts.next().unwrap().parse().unwrap();
        let len: usize = parts.next().unwrap().parse().unwrap();
        let mut json = vec![0; len];
        r.read_exact(&mut json).unwrap();
        let m: Manifest = serde_json::from_slice(&json).unwrap();
        sender.join().unwrap().unwrap();
        assert_eq!(n, got.len());
        assert_eq!(got.len(), FDS_PER_MESSAGE + 3);
        for (fd, want) in got.into_iter().zip(&addrs) {
            let l = std::net::TcpListener::from(fd);
            assert_eq!(l.local_addr().unwrap(), *want);
        }
        assert_eq!(m.servers[0].admin, "maint");
    }
}
