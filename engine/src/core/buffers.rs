//! A core's spare buffers and splice pipes, and the guards that lend them: a [`Buf`]
//! goes back to the core's pool when dropped, a [`PipeLease`] when it is known empty.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use monoio::buf::{IoBuf, IoBufMut};

/// Size of the buffers in the per-core pool.
pub const BUF_SIZE: usize = 16 * 1024;
/// Buffers a core keeps however quiet it is: at 10,000 idle connections every pooled
/// buffer counts.
const MIN_POOLED_BUFS: usize = 16;
/// Buffers a core may keep during a burst (8 MiB). Each sweep frees those that no request
/// took since the sweep before, down to [`MIN_POOLED_BUFS`].
const MAX_POOLED_BUFS: usize = 512;
/// Empty pipes a core keeps for splicing large bodies however quiet it is, and at most
/// during a burst (two descriptors each).
const MIN_POOLED_PIPES: usize = 8;
const MAX_POOLED_PIPES: usize = 64;

/// A core's spare buffers or pipes, most recently returned first. It grows to what a
/// burst needs (up to `max`) and each sweep frees the ones nothing took since the sweep
/// before, down to `min`.
pub struct Spares<T> {
    items: Vec<T>,
    /// The fewest held since the last sweep: that many went unused.
    low: usize,
    min: usize,
    max: usize,
}

impl<T> Spares<T> {
    pub const fn new(min: usize, max: usize) -> Self {
        Spares {
            items: Vec::new(),
            low: 0,
            min,
            max,
        }
    }

    /// The most recently returned one, if any.
    pub fn take(&mut self) -> Option<T> {
        let t = self.items.pop();
        self.low = self.low.min(self.items.len());
        t
    }

    /// Keeps `t` for reuse; false when it was dropped (the pool is full).
    pub fn put(&mut self, t: T) -> bool {
        if self.items.len() >= self.max {
            return false;
        }
        self.items.push(t);
        true
    }

    /// The sweep's part: frees those that stayed unused since the last call (keeping
    /// `min`); returns how many it freed.
    pub fn trim(&mut self) -> usize {
        let len = self.items.len();
        let keep = (len - self.low.min(len)).max(self.min.min(len));
        self.items.truncate(keep);
        self.low = keep;
        len - keep
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// A non-blocking pipe for moving large bodies with splice(2).
pub struct Pipe {
    pub r: std::os::fd::OwnedFd,
    pub w: std::os::fd::OwnedFd,
}

/// The capacity asked of each pipe: a splice moves up to this much at once.
pub const PIPE_SIZE: usize = 256 * 1024;

impl Pipe {
    fn new() -> std::io::Result<Pipe> {
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: pipe2 writes two descriptors into `fds`, which we then own.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: both descriptors were just created and are owned by nobody else.
        let p = unsafe {
            Pipe {
                r: OwnedFd::from_raw_fd(fds[0]),
                w: OwnedFd::from_raw_fd(fds[1]),
            }
        };
        // A larger pipe means fewer splices; the default (64 KiB) still works.
        // SAFETY: fcntl on a descriptor we own.
        unsafe {
            libc::fcntl(
                p.w.as_raw_fd(),
                libc::F_SETPIPE_SZ,
                PIPE_SIZE as libc::c_int,
            )
        };
        Ok(p)
    }
}

/// Where a core's spare buffers live; shared (by `Rc`) with every [`Buf`] lent out.
pub struct BufHome {
    spares: RefCell<Spares<Vec<u8>>>,
    /// Buffers freed (not kept) since the last collect: memory to give back.
    pub freed: Cell<u64>,
}

impl BufHome {
    pub fn new() -> Rc<BufHome> {
        Rc::new(BufHome {
            spares: RefCell::new(Spares::new(MIN_POOLED_BUFS, MAX_POOLED_BUFS)),
            freed: Cell::new(0),
        })
    }

    /// A buffer of [`BUF_SIZE`] capacity, empty, from the pool or new.
    pub fn lend(self: &Rc<Self>) -> Buf {
        let v = self
            .spares
            .borrow_mut()
            .take()
            .unwrap_or_else(|| Vec::with_capacity(BUF_SIZE));
        Buf {
            v,
            home: Some(self.clone()),
        }
    }

    fn give_back(&self, mut v: Vec<u8>) {
        let had_memory = v.capacity() > 0;
        let kept = v.capacity() == BUF_SIZE && {
            v.clear();
            self.spares.borrow_mut().put(v)
        };
        if !kept && had_memory {
            self.freed.set(self.freed.get() + 1);
        }
    }

    /// The sweep's part: frees the spares nothing took since the last sweep.
    pub fn trim(&self) {
        let n = self.spares.borrow_mut().trim();
        self.freed.set(self.freed.get() + n as u64);
    }
}

/// A buffer lent by the core's pool: a `Vec<u8>` (through `Deref`) that goes back to the
/// pool when dropped, wherever that happens (a finished read, a cancelled one whose
/// buffer the driver hands back later, an error path). One that grew past [`BUF_SIZE`]
/// is freed instead.
pub struct Buf {
    v: Vec<u8>,
    home: Option<Rc<BufHome>>,
}

impl Buf {
    /// A buffer of no capacity and no pool (for a connection that holds none).
    pub const fn none() -> Buf {
        Buf {
            v: Vec::new(),
            home: None,
        }
    }

    /// A buffer of its own, outside the pool (freed when dropped).
    pub fn own(capacity: usize) -> Buf {
        Buf {
            v: Vec::with_capacity(capacity),
            home: None,
        }
    }

    /// Whether it holds memory.
    pub fn is_held(&self) -> bool {
        self.v.capacity() > 0
    }
}

impl Default for Buf {
    fn default() -> Self {
        Buf::none()
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        if let Some(h) = self.home.take() {
            h.give_back(std::mem::take(&mut self.v));
        }
    }
}

impl std::ops::Deref for Buf {
    type Target = Vec<u8>;
    fn deref(&self) -> &Vec<u8> {
        &self.v
    }
}

impl std::ops::DerefMut for Buf {
    fn deref_mut(&mut self) -> &mut Vec<u8> {
        &mut self.v
    }
}

// SAFETY: the pointers and lengths are the inner Vec's, which the Buf owns and does not
// move while a driver holds the Buf.
unsafe impl IoBuf for Buf {
    fn read_ptr(&self) -> *const u8 {
        self.v.as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.v.len()
    }
}

// SAFETY: as above; set_init is only called by the driver with the bytes it wrote.
unsafe impl IoBufMut for Buf {
    fn write_ptr(&mut self) -> *mut u8 {
        self.v.as_mut_ptr()
    }
    fn bytes_total(&mut self) -> usize {
        self.v.capacity()
    }
    unsafe fn set_init(&mut self, pos: usize) {
        // SAFETY: the driver wrote `pos` bytes from the start.
        unsafe { self.v.set_len(pos) }
    }
}

/// Where a core's empty splice pipes live.
pub struct PipeHome {
    spares: RefCell<Spares<Pipe>>,
}

impl PipeHome {
    pub fn new() -> Rc<PipeHome> {
        Rc::new(PipeHome {
            spares: RefCell::new(Spares::new(MIN_POOLED_PIPES, MAX_POOLED_PIPES)),
        })
    }

    /// An empty pipe, from the pool or new; `None` when none can be made (descriptors).
    pub fn lend(self: &Rc<Self>) -> Option<PipeLease> {
        let pipe = match self.spares.borrow_mut().take() {
            Some(p) => p,
            None => Pipe::new().ok()?,
        };
        Some(PipeLease {
            pipe: Some(pipe),
            home: self.clone(),
            empty: false,
        })
    }

    pub fn trim(&self) {
        self.spares.borrow_mut().trim();
    }
}

/// A pipe lent by the core's pool. It goes back when dropped only once marked
/// [`empty`](PipeLease::empty): one that may still hold bytes is closed.
pub struct PipeLease {
    pipe: Option<Pipe>,
    home: Rc<PipeHome>,
    empty: bool,
}

impl PipeLease {
    pub fn pipe(&self) -> &Pipe {
        self.pipe
            .as_ref()
            .expect("a lease holds its pipe until dropped")
    }

    /// Nothing is left in the pipe: it may be lent again.
    pub fn empty(&mut self) {
        self.empty = true;
    }
}

impl Drop for PipeLease {
    fn drop(&mut self) {
        if let (true, Some(p)) = (self.empty, self.pipe.take()) {
            self.home.spares.borrow_mut().put(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buf() -> Vec<u8> {
        Vec::with_capacity(BUF_SIZE)
    }

    #[test]
    fn spares_grow_for_a_burst_and_shrink_after_it() {
        let mut p = Spares::new(MIN_POOLED_BUFS, MAX_POOLED_BUFS);
        // A burst: 200 requests hold a buffer each, then give them back.
        let held: Vec<_> = (0..200).map(|_| p.take().unwrap_or_else(buf)).collect();
        for b in held {
            assert!(p.put(b));
        }
        assert_eq!(p.len(), 200);
        assert_eq!(p.trim(), 0, "the sweep right after the burst keeps them");
        // The burst goes on with 150 at once at most: the 50 that nothing took in a
        // sweep period are freed, then the pool holds what the load needs.
        for expect in [50, 0, 0] {
            let held: Vec<_> = (0..150).map(|_| p.take().expect("pooled")).collect();
            held.into_iter().for_each(|b| assert!(p.put(b)));
            assert_eq!(p.trim(), expect);
            assert_eq!(p.len(), 150);
        }
        // Quiet: one period with nothing taken frees all but the floor.
        assert_eq!(p.trim(), 150 - MIN_POOLED_BUFS);
        assert_eq!(p.len(), MIN_POOLED_BUFS);
        assert_eq!(p.trim(), 0, "the floor stays");
        // Emptied during a period: nothing was spare.
        let held: Vec<_> = (0..MIN_POOLED_BUFS + 5)
            .map(|_| p.take().unwrap_or_else(buf))
            .collect();
        held.into_iter().for_each(|b| assert!(p.put(b)));
        assert_eq!(p.trim(), 0);
        assert_eq!(p.len(), MIN_POOLED_BUFS + 5);
    }

    #[test]
    fn spares_stop_at_their_cap() {
        let mut p = Spares::new(1, 3);
        assert!(p.take().is_none());
        for i in 0..3 {
            assert!(p.put(i));
        }
        assert!(!p.put(3), "full");
        assert_eq!(p.take(), Some(2), "most recently returned first");
    }
}
