//! Idle keep-alive connections without a timer each: a connection waiting for its next
//! request registers here, and the core's one periodic sweep cancels the wait when the
//! connection should give its read buffer back (after `hold`), when the keep-alive
//! timeout passes, or when the engine stops. A cancelled read returns its buffer and any
//! bytes that raced the cancel, so nothing is lost.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use monoio::io::{CancelHandle, Canceller};

/// Why a wait ended early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// Still waiting (or completed by data).
    Pending,
    /// Time to release the read buffer and wait without one.
    Demote,
    /// The keep-alive timeout passed.
    Expired,
    /// The engine is stopping.
    Stop,
}

struct Entry {
    canceller: Option<Canceller>,
    waker: Option<Waker>,
    /// Ticks, as u32 (13 years at 100 ms): entries stay small, one per idle connection.
    since: u32,
    demote_at: u32,
    expire_at: u32,
    wake: Wake,
}

/// The per-core set of idle waits.
pub struct IdleSet {
    entries: RefCell<Vec<Option<Entry>>>,
    free: RefCell<Vec<usize>>,
    /// Sweep ticks since the core started.
    pub now: Cell<u64>,
    stopping: Cell<bool>,
}

impl Default for IdleSet {
    fn default() -> Self {
        Self::new()
    }
}

impl IdleSet {
    pub fn new() -> Self {
        IdleSet {
            entries: RefCell::new(Vec::new()),
            free: RefCell::new(Vec::new()),
            now: Cell::new(0),
            stopping: Cell::new(false),
        }
    }

    /// Registers a wait: demoted after `demote_ticks` (0: never), expired after
    /// `expire_ticks`. Returns the key and a handle to pass to the cancelable read.
    pub fn register(&self, demote_ticks: u64, expire_ticks: u64) -> (usize, CancelHandle) {
        self.register_with(Canceller::new(), demote_ticks, expire_ticks)
    }

    /// Like [`register`](Self::register) with the connection's own canceller (reused
    /// from wait to wait; [`remove_with`](Self::remove_with) gives it back).
    pub fn register_with(
        &self,
        canceller: Canceller,
        demote_ticks: u64,
        expire_ticks: u64,
    ) -> (usize, CancelHandle) {
        let now = self.now.get() as u32;
        let clamp = |t: u64| t.min(u32::MAX as u64) as u32;
        let handle = canceller.handle();
        let entry = Entry {
            canceller: Some(canceller),
            waker: None,
            since: now,
            demote_at: if demote_ticks == 0 {
                u32::MAX
            } else {
                now.saturating_add(clamp(demote_ticks))
            },
            expire_at: now.saturating_add(clamp(expire_ticks.max(1))),
            wake: if self.stopping.get() {
                Wake::Stop
            } else {
                Wake::Pending
            },
        };
        let mut entries = self.entries.borrow_mut();
        let key = match self.free.borrow_mut().pop() {
            Some(k) => {
                entries[k] = Some(entry);
                k
            }
            None => {
                entries.push(Some(entry));
                entries.len() - 1
            }
        };
        (key, handle)
    }

    /// Ends a wait; says whether the sweep cancelled it and why.
    pub fn remove(&self, key: usize) -> Wake {
        self.remove_with(key).0
    }

    /// Ends a wait and gives back a canceller to reuse (a fresh one if it was used).
    pub fn remove_with(&self, key: usize) -> (Wake, Option<Canceller>) {
        let mut entries = self.entries.borrow_mut();
        let (w, c) = entries
            .get_mut(key)
            .and_then(|e| e.take())
            .map(|e| (e.wake, e.canceller))
            .unwrap_or((Wake::Pending, None));
        self.free.borrow_mut().push(key);
        (w, c)
    }

    /// Ticks elapsed since the wait began.
    pub fn age(&self, key: usize) -> u64 {
        let since = self
            .entries
            .borrow()
            .get(key)
            .and_then(|e| e.as_ref())
            .map(|e| e.since)
            .unwrap_or(0);
        self.now.get().saturating_sub(since as u64)
    }

    /// A future that completes when the sweep ends this wait (for streams whose reads
    /// cannot be cancelled, such as TLS).
    pub fn woken(&self, key: usize) -> Woken<'_> {
        Woken { set: self, key }
    }

    /// The sweep: one tick passed.
    pub fn tick(&self, stopping: bool) {
        let now64 = self.now.get() + 1;
        self.now.set(now64);
        let now = now64 as u32;
        self.stopping.set(stopping);
        let mut entries = self.entries.borrow_mut();
        for e in entries.iter_mut().flatten() {
            if e.wake != Wake::Pending {
                continue;
            }
            let w = if stopping {
                Wake::Stop
            } else if now >= e.expire_at {
                Wake::Expired
            } else if now >= e.demote_at {
                Wake::Demote
            } else {
                continue;
            };
            e.wake = w;
            if let Some(c) = e.canceller.take() {
                e.canceller = Some(c.cancel());
            }
            if let Some(wk) = e.waker.take() {
                wk.wake();
            }
        }
    }

    pub fn len(&self) -> usize {
        self.entries.borrow().iter().filter(|e| e.is_some()).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

pub struct Woken<'a> {
    set: &'a IdleSet,
    key: usize,
}

impl Future for Woken<'_> {
    type Output = Wake;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Wake> {
        let mut entries = self.set.entries.borrow_mut();
        match entries.get_mut(self.key).and_then(|e| e.as_mut()) {
            Some(e) if e.wake == Wake::Pending => {
                e.waker = Some(cx.waker().clone());
                Poll::Pending
            }
            Some(e) => Poll::Ready(e.wake),
            None => Poll::Ready(Wake::Expired),
        }
    }
}
