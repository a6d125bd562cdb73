//! Idle keep-alive connections without a timer each: a connection waiting for its next
//! request registers here, and the core's one periodic sweep cancels the wait when the
//! connection should give its read buffer back (after `hold`), when the keep-alive
//! timeout passes, or when the engine stops. A cancelled read returns its buffer and any
//! bytes that raced the cancel, so nothing is lost.
//!
//! The same sweep bounds the request path's reads and writes ([`IdleSet::bounded`]): a
//! timeout costs a slot here instead of a timer, and fires on the first tick at or after
//! it (never early, at most one tick late).

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use std::time::Duration;

use monoio::io::{CancelHandle, Canceller};

/// Sweep ticks ([`crate::shared::TICK`]) in `d`, rounded up, at least one.
pub fn ticks_for(d: Duration) -> u64 {
    (d.as_millis() as u64)
        .div_ceil(crate::shared::TICK.as_millis() as u64)
        .max(1)
}

/// A graceful stop closes an idle connection once it has been quiet this many ticks
/// (one second): what a client sends soon after an answer still gets one, with
/// `Connection: close`, even on a loaded machine where the client is slow to send it.
/// Closing under a client that is sending is the race every HTTP/1.1 server has; a
/// client quiet for a second is unlikely to be in the middle of it.
pub const STOP_QUIET_TICKS: u64 = 10;

/// A bounded operation took too long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed;

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
    /// A timeout on an operation: expires, but a graceful stop lets it run.
    bounded: bool,
}

/// The per-core set of idle waits.
pub struct IdleSet {
    entries: RefCell<Vec<Option<Entry>>>,
    free: RefCell<Vec<usize>>,
    /// Sweep ticks since the core started.
    pub now: Cell<u64>,
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
        }
    }

    /// Registers a wait that ends only by expiry or stop, watched through
    /// [`woken`](Self::woken) (no read to cancel). Returns the key.
    pub fn register(&self, expire_ticks: u64) -> usize {
        self.insert(self.entry(None, 0, expire_ticks, false))
    }

    /// Registers a wait with the connection's own canceller (reused from wait to wait;
    /// [`remove_with`](Self::remove_with) gives it back): demoted after `demote_ticks`
    /// (0: never), expired after `expire_ticks`. Returns the key and the handle to pass
    /// to the cancelable read.
    pub fn register_with(
        &self,
        canceller: Canceller,
        demote_ticks: u64,
        expire_ticks: u64,
    ) -> (usize, CancelHandle) {
        let handle = canceller.handle();
        let entry = self.entry(Some(canceller), demote_ticks, expire_ticks, false);
        (self.insert(entry), handle)
    }

    fn entry(
        &self,
        canceller: Option<Canceller>,
        demote_ticks: u64,
        expire_ticks: u64,
        bounded: bool,
    ) -> Entry {
        let now = self.now.get() as u32;
        let clamp = |t: u64| t.min(u32::MAX as u64) as u32;
        Entry {
            canceller,
            waker: None,
            since: now,
            demote_at: if demote_ticks == 0 {
                u32::MAX
            } else {
                now.saturating_add(clamp(demote_ticks))
            },
            expire_at: now.saturating_add(clamp(expire_ticks.max(1))),
            // Registered while stopping (a connection accepted just before its listener
            // closed): the sweep ends it once quiet for STOP_QUIET_TICKS, as the others.
            wake: Wake::Pending,
            bounded,
        }
    }

    fn insert(&self, entry: Entry) -> usize {
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
        key
    }

    /// Bounds `fut` by `d`: it ends with `Err(Elapsed)` on the first sweep tick at or
    /// after `d`. A graceful stop does not end it.
    pub fn bounded<F: Future>(&self, d: Duration, fut: F) -> Bounded<'_, F> {
        // One tick more: the wait may begin just before a tick.
        let key = self.insert(self.entry(None, 0, ticks_for(d) + 1, true));
        Bounded {
            set: self,
            key,
            fut,
        }
    }

    /// Ends the wait `key` now, as a stop would (an accept loop whose listener a reload
    /// removed).
    pub fn end(&self, key: usize) {
        let mut entries = self.entries.borrow_mut();
        if let Some(e) = entries.get_mut(key).and_then(|e| e.as_mut()) {
            e.wake = Wake::Stop;
            if let Some(c) = e.canceller.take() {
                e.canceller = Some(c.cancel());
            }
            if let Some(wk) = e.waker.take() {
                wk.wake();
            }
        }
    }

    /// Whether the wait `key` was ended (by the sweep, a stop or [`end`](Self::end)).
    pub fn ended(&self, key: usize) -> bool {
        self.entries
            .borrow()
            .get(key)
            .and_then(|e| e.as_ref())
            .is_none_or(|e| e.wake != Wake::Pending)
    }

    /// Ends a wait; says whether the sweep cancelled it and why.
    pub fn remove(&self, key: usize) -> Wake {
        self.remove_with(key).0
    }

    /// Ends a wait and gives back a canceller to reuse (a fresh one if it was used).
    pub fn remove_with(&self, key: usize) -> (Wake, Option<Canceller>) {
        let mut entries = self.entries.borrow_mut();
        match entries.get_mut(key).and_then(|e| e.take()) {
            Some(e) => {
                self.free.borrow_mut().push(key);
                (e.wake, e.canceller)
            }
            None => (Wake::Pending, None),
        }
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

    /// Ready with the reason once the sweep ends the wait `key` (`Expired` if it is
    /// gone); otherwise the waker is kept for the sweep.
    fn poll_wake(&self, key: usize, cx: &mut Context<'_>) -> Poll<Wake> {
        let mut entries = self.entries.borrow_mut();
        match entries.get_mut(key).and_then(|e| e.as_mut()) {
            Some(e) if e.wake == Wake::Pending => {
                match &e.waker {
                    Some(wk) if wk.will_wake(cx.waker()) => {}
                    _ => e.waker = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
            Some(e) => Poll::Ready(e.wake),
            None => Poll::Ready(Wake::Expired),
        }
    }

    /// The sweep: one tick passed.
    pub fn tick(&self, stopping: bool) {
        let now64 = self.now.get() + 1;
        self.now.set(now64);
        let now = now64 as u32;
        let mut entries = self.entries.borrow_mut();
        for e in entries.iter_mut().flatten() {
            if e.wake != Wake::Pending {
                continue;
            }
            // Stopping: a connection quiet for a moment is closed; one that just got its
            // answer is left its next request (answered with `Connection: close`), as
            // a client sends it at once: closing under it would fail that request.
            let quiet = now.saturating_sub(e.since) as u64 >= STOP_QUIET_TICKS;
            let w = if stopping && !e.bounded && quiet {
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
        self.set.poll_wake(self.key, cx)
    }
}

pin_project_lite::pin_project! {
    /// A future with a deadline kept by the sweep (see [`IdleSet::bounded`]).
    pub struct Bounded<'a, F> {
        set: &'a IdleSet,
        key: usize,
        #[pin]
        fut: F,
    }

    impl<'a, F> PinnedDrop for Bounded<'a, F> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            this.set.remove(*this.key);
        }
    }
}

impl<F: Future> Future for Bounded<'_, F> {
    type Output = Result<F::Output, Elapsed>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(v) = this.fut.poll(cx) {
            return Poll::Ready(Ok(v));
        }
        this.set.poll_wake(*this.key, cx).map(|_| Err(Elapsed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn poll_once<F: Future>(f: Pin<&mut F>) -> Poll<F::Output> {
        f.poll(&mut Context::from_waker(Waker::noop()))
    }

    #[test]
    fn a_bounded_operation_that_finishes_leaves_nothing_behind() {
        let set = IdleSet::new();
        {
            let mut f = std::pin::pin!(set.bounded(Duration::from_secs(1), async { 7 }));
            assert_eq!(poll_once(f.as_mut()), Poll::Ready(Ok(7)));
        }
        assert!(set.is_empty());
    }

    #[test]
    fn a_bounded_operation_ends_on_the_first_tick_past_its_deadline_never_before() {
        let set = IdleSet::new();
        // 250 ms: 3 ticks of 100 ms, plus one because it may start just before a tick.
        let mut f =
            std::pin::pin!(set.bounded(Duration::from_millis(250), std::future::pending::<()>()));
        for _ in 0..3 {
            assert_eq!(poll_once(f.as_mut()), Poll::Pending);
            set.tick(false);
        }
        assert_eq!(poll_once(f.as_mut()), Poll::Pending);
        set.tick(false);
        assert_eq!(poll_once(f.as_mut()), Poll::Ready(Err(Elapsed)));
    }

    #[test]
    fn a_graceful_stop_lets_bounded_operations_run_but_ends_idle_waits() {
        let set = IdleSet::new();
        let idle = set.register(1000);
        let mut f =
            std::pin::pin!(set.bounded(Duration::from_secs(10), std::future::pending::<()>()));
        assert_eq!(poll_once(f.as_mut()), Poll::Pending);
        for _ in 0..STOP_QUIET_TICKS {
            set.tick(true);
        }
        assert_eq!(poll_once(f.as_mut()), Poll::Pending);
        assert_eq!(set.remove(idle), Wake::Stop);
    }

    #[test]
    fn a_graceful_stop_leaves_a_connection_that_just_got_its_answer_time_for_the_next() {
        let set = IdleSet::new();
        for _ in 0..10 {
            set.tick(false);
        }
        let quiet = set.register(1000);
        for _ in 0..STOP_QUIET_TICKS {
            set.tick(false);
        }
        // A response just went out on this one: its client sends the next request now.
        let fresh = set.register(1000);
        set.tick(true);
        assert!(set.ended(quiet), "quiet for the whole hold: closed");
        assert!(
            !set.ended(fresh),
            "answered a moment ago: its next request is served"
        );
        for _ in 1..STOP_QUIET_TICKS {
            set.tick(true);
        }
        assert!(set.ended(fresh));
        assert_eq!(set.remove(fresh), Wake::Stop);
    }

    #[test]
    fn a_dropped_bounded_operation_gives_its_slot_back_once() {
        let set = IdleSet::new();
        {
            let mut f =
                std::pin::pin!(set.bounded(Duration::from_secs(1), std::future::pending::<()>()));
            assert_eq!(poll_once(f.as_mut()), Poll::Pending);
            assert_eq!(set.len(), 1);
        }
        assert!(set.is_empty());
        // Removing a key twice must not hand the slot out twice.
        let a = set.register(10);
        set.remove(a);
        set.remove(a);
        let b = set.register(10);
        let c = set.register(10);
        assert_ne!(b, c);
    }
}
