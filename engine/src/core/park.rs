//! Parked connections: a plain-TCP keep-alive connection idle past its hold leaves its
//! task altogether. It waits in the core's park, a slab entry of under 200 bytes (the
//! stream, the peer, a few ticks) with its descriptor in an epoll set of the core's
//! own, where the kernel watches it. When bytes (or a close) arrive, the core's one
//! waiter task takes it out and spawns a task that serves it again; the sweep closes
//! the ones past their keep-alive timeout (a silent first connection gets its 408) and,
//! on a graceful stop, all of them.
//!
//! Nothing here is on the request path: a connection parks at most once per idle period,
//! after about 200 ms without a byte.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::rc::Rc;

use monoio::net::TcpStream;

use super::Worker;

/// A connection waiting in the park: 56 bytes. The stream is kept as its bare
/// descriptor (monoio's stream, 80 bytes and a shared allocation, is made again when the
/// connection comes back).
pub struct Parked {
    pub fd: OwnedFd,
    pub peer: SocketAddr,
    pub fe: crate::ids::FrontendId,
    /// No request yet: expiry is a 408, not a quiet close.
    pub first: bool,
    /// The tick ([`super::idle::IdleSet::now`]) it was accepted at, for a 408's log.
    pub accepted_tick: u32,
    /// The tick at which it is closed.
    pub expire_at: u32,
}

impl Parked {
    /// The connection as a monoio stream again.
    pub fn stream(self) -> std::io::Result<TcpStream> {
        TcpStream::from_std(std::net::TcpStream::from(self.fd))
    }
}

struct Slot {
    parked: Option<Parked>,
    /// Bumped at each reuse: an event for an earlier occupant is ignored.
    tag: u32,
}

/// A core's park.
pub struct Park {
    ep: OwnedFd,
    slots: RefCell<Vec<Slot>>,
    free: RefCell<Vec<u32>>,
    len: Cell<usize>,
}

/// Why a connection left the park without bytes to read.
pub enum Gone {
    Expired(Parked),
    Stopped(Parked),
}

impl Park {
    /// A park with its epoll set; `None` where epoll is refused (connections then wait in
    /// their own task, as before).
    pub fn new() -> Option<Park> {
        // SAFETY: epoll_create1 returns a new descriptor we own, or -1.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return None;
        }
        Some(Park {
            // SAFETY: fd was just created and is owned by nobody else.
            ep: unsafe { OwnedFd::from_raw_fd(fd) },
            slots: RefCell::new(Vec::new()),
            free: RefCell::new(Vec::new()),
            len: Cell::new(0),
        })
    }

    pub fn len(&self) -> usize {
        self.len.get()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Parks `p`; gives it back when its descriptor cannot be watched.
    pub fn park(&self, p: Parked) -> Result<(), Parked> {
        let fd = p.fd.as_raw_fd();
        let mut slots = self.slots.borrow_mut();
        let key = match self.free.borrow_mut().pop() {
            Some(k) => k,
            None => {
                slots.push(Slot {
                    parked: None,
                    tag: 0,
                });
                (slots.len() - 1) as u32
            }
        };
        let slot = &mut slots[key as usize];
        slot.tag = slot.tag.wrapping_add(1);
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLRDHUP) as u32,
            u64: (u64::from(slot.tag) << 32) | u64::from(key),
        };
        // SAFETY: both descriptors are open; ev is a valid event.
        if unsafe { libc::epoll_ctl(self.ep.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) } != 0 {
            self.free.borrow_mut().push(key);
            return Err(p);
        }
        slot.parked = Some(p);
        self.len.set(self.len.get() + 1);
        Ok(())
    }

    /// Takes the entry `key` out of the park (and its descriptor out of the epoll set).
    fn take(&self, key: u32, tag: Option<u32>) -> Option<Parked> {
        let mut slots = self.slots.borrow_mut();
        let slot = slots.get_mut(key as usize)?;
        if tag.is_some_and(|t| t != slot.tag) {
            return None;
        }
        let p = slot.parked.take()?;
        // SAFETY: a plain epoll_ctl on descriptors that are open.
        unsafe {
            libc::epoll_ctl(
                self.ep.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                p.fd.as_raw_fd(),
                std::ptr::null_mut(),
            )
        };
        self.free.borrow_mut().push(key);
        self.len.set(self.len.get() - 1);
        Some(p)
    }

    /// The parked connections that have bytes (or a close) to read, taken out.
    pub fn ready(&self) -> Vec<Parked> {
        let mut out = Vec::new();
        const N: usize = 128;
        let mut evs = [libc::epoll_event { events: 0, u64: 0 }; N];
        loop {
            // SAFETY: evs is a valid array of N events; timeout 0 never blocks.
            let n = unsafe { libc::epoll_wait(self.ep.as_raw_fd(), evs.as_mut_ptr(), N as i32, 0) };
            if n <= 0 {
                return out;
            }
            for ev in &evs[..n as usize] {
                let data = ev.u64;
                if let Some(p) = self.take(data as u32, Some((data >> 32) as u32)) {
                    out.push(p);
                }
            }
            if (n as usize) < N {
                return out;
            }
        }
    }

    /// The sweep's part: the ones past their expiry, or all of them when stopping.
    pub fn sweep(&self, now: u32, stopping: bool) -> Vec<Gone> {
        if self.is_empty() {
            return Vec::new();
        }
        let due: Vec<u32> = self
            .slots
            .borrow()
            .iter()
            .enumerate()
            .filter(|(_, s)| {
                s.parked
                    .as_ref()
                    .is_some_and(|p| stopping || now >= p.expire_at)
            })
            .map(|(k, _)| k as u32)
            .collect();
        let mut out: Vec<Gone> = due
            .into_iter()
            .filter_map(|k| self.take(k, None))
            .map(|p| {
                if stopping {
                    Gone::Stopped(p)
                } else {
                    Gone::Expired(p)
                }
            })
            .collect();
        out.shrink_to_fit();
        if self.is_empty() {
            // After a burst: the slab's memory goes back too.
            *self.slots.borrow_mut() = Vec::new();
            *self.free.borrow_mut() = Vec::new();
        }
        out
    }

    fn raw(&self) -> RawFd {
        self.ep.as_raw_fd()
    }
}

/// The core's waiter: wakes when any parked descriptor is readable and hands each such
/// connection to a new task. Runs for the life of the core.
pub async fn waiter(w: Rc<Worker>) {
    let Some(park) = w.park.as_ref() else { return };
    // monoio has no generic async descriptor: a TcpStream over a duplicate of the epoll
    // descriptor is used for its readiness wait only (a poll on io_uring, a readiness
    // wait on epoll), never read or written.
    // SAFETY: dup returns a new descriptor we own, or -1.
    let dup = unsafe { libc::dup(park.raw()) };
    if dup < 0 {
        return;
    }
    // SAFETY: dup is a fresh descriptor owned by nobody else; the std stream owns it.
    let std = unsafe { std::net::TcpStream::from_raw_fd(dup) };
    let Ok(watch) = TcpStream::from_std(std) else {
        return;
    };
    loop {
        if watch.readable(false).await.is_err() {
            monoio::time::sleep(crate::shared::TICK).await;
        }
        for p in park.ready() {
            (w.serve.resume)(w.clone(), p);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_parked_connection_is_small() {
        assert!(std::mem::size_of::<super::Slot>() <= 64);
    }
}
