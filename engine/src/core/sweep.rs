//! A core's life: its accept loops (one per listener), the 100 ms sweep that keeps
//! every timeout, idle pool and spare in check, and the graceful stop.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use monoio::io::{CancelHandle, Canceller};
use monoio::net::TcpListener;

use super::park::Gone;
use super::Worker;
use crate::ids::FrontendId;
use crate::shared::{Shared, TICK};

impl Worker {
    /// The periodic sweep: idle waits, parked connections, pooled connections past their
    /// idle timeout, spares, log, the report to the health-check thread.
    fn tick(self: &Rc<Self>) {
        self.refresh();
        let added = std::mem::take(&mut *self.new_listeners.borrow_mut());
        if !added.is_empty() && !self.stopping.get() {
            self.listen(added);
        }
        let stopping = self.shared.stop.load(Ordering::Relaxed);
        if stopping && !self.stopping.get() {
            self.stopping.set(true);
            self.stop_tick.set(self.idle.now.get());
            self.unlisten_all();
            self.shed_pools();
        }
        self.idle.tick(stopping);
        // Parked connections (quiet since their hold at least) close once the stop is a
        // second old, unless they send their next request first.
        let quiet = self.idle.now.get().saturating_sub(self.stop_tick.get())
            >= super::idle::STOP_QUIET_TICKS;
        self.sweep_park(stopping && quiet);
        self.sweep_pools();
        self.bufs.trim();
        self.pipes.trim();
        self.log.borrow_mut().flush();
        let t = self.ticks.get() + 1;
        self.ticks.set(t);
        if t.is_multiple_of(5) {
            self.report();
        }
        // After a burst, give the memory it used back to the system within a few ticks:
        // idle connections hold next to none (they are parked), so RSS should come down
        // with them. A forced collect costs well under a millisecond; it runs only
        // after churn (buffers freed, connections parked), at most every 200 ms.
        let churn = self.bufs.freed.get() + self.parked.get();
        if t.is_multiple_of(2) && churn >= 64 {
            self.bufs.freed.set(0);
            self.parked.set(0);
            // SAFETY: mi_collect may be called at any time from any thread.
            unsafe { libmimalloc_sys::mi_collect(true) };
        }
    }

    /// Parked connections past their timeout (or all of them, stopping) are closed.
    fn sweep_park(self: &Rc<Self>, stopping: bool) {
        let Some(park) = &self.park else { return };
        let now = self.idle.now.get().min(u32::MAX as u64) as u32;
        for gone in park.sweep(now, stopping) {
            match gone {
                Gone::Expired(p) => (self.serve.expire)(self.clone(), p),
                Gone::Stopped(p) => {
                    drop(p);
                    self.conn_closed();
                }
            }
        }
    }
}

/// A core's life: accept on its listeners, sweep every tick, and on stop wait for its
/// connections to finish (at most `grace`).
pub async fn run(w: Rc<Worker>, listeners: Vec<(String, std::net::TcpListener)>, grace: Duration) {
    w.listen(listeners);
    monoio::spawn(super::park::waiter(w.clone()));
    let mut stop_deadline: Option<Instant> = None;
    loop {
        monoio::time::sleep(TICK).await;
        w.tick();
        if w.stopping.get() {
            let deadline = *stop_deadline.get_or_insert_with(|| Instant::now() + grace);
            if w.conns.get() == 0 || Instant::now() >= deadline {
                break;
            }
        }
    }
    // The accept loops end (and close their listeners) before the runtime does: a task
    // left pending would keep its listener open for the life of the process.
    let until = Instant::now() + Duration::from_secs(1);
    while w.accepting.get() > 0 && Instant::now() < until {
        monoio::time::sleep(Duration::from_millis(1)).await;
    }
    w.log.borrow_mut().flush();
    w.report();
}

/// An accept loop of this core: its listener's address, and the wait that ends it.
pub struct Listening {
    pub addr: SocketAddr,
    key: usize,
}

impl Worker {
    /// Starts an accept loop on each listener (at start, and for binds a reload added).
    pub fn listen(self: &Rc<Self>, listeners: Vec<(String, std::net::TcpListener)>) {
        for (fe, l) in listeners {
            let addr = l
                .local_addr()
                .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
            match TcpListener::from_std(l) {
                Ok(l) => {
                    // Ended by a graceful stop, or by `unlisten`: the accept in flight is
                    // cancelled, and awaited (a connection it took still gets served).
                    let (key, handle) = self.idle.register_with(Canceller::new(), 0, u64::MAX);
                    self.listening.borrow_mut().push(Listening { addr, key });
                    monoio::spawn(accept_loop(self.clone(), fe.into(), l, key, handle));
                }
                Err(e) => tracing::error!(core = self.id, "listener refused by the driver: {e}"),
            }
        }
    }

    /// Stops accepting on these addresses (binds a reload removed); their listeners
    /// close, their connections finish.
    pub fn unlisten(&self, addrs: &[SocketAddr]) {
        let mut l = self.listening.borrow_mut();
        for x in l.iter().filter(|x| addrs.contains(&x.addr)) {
            self.idle.end(x.key);
        }
        l.retain(|x| !addrs.contains(&x.addr));
    }

    /// Stops accepting everywhere (a graceful stop).
    fn unlisten_all(&self) {
        for x in self.listening.borrow_mut().drain(..) {
            self.idle.end(x.key);
        }
    }

    /// The frontend a listener serves, by name, in the newest configuration (retired
    /// there when a reload removed it while this connection was being accepted: it is
    /// served under its last configuration all the same).
    fn frontend_named(&self, name: &str) -> Option<FrontendId> {
        let snap = self.snap.borrow();
        let i = snap.frontends.iter().position(|f| f.name == name)?;
        snap.frontend_id(i)
    }
}

async fn accept_loop(w: Rc<Worker>, fe: Rc<str>, l: TcpListener, stop: usize, h: CancelHandle) {
    w.accepting.set(w.accepting.get() + 1);
    loop {
        if w.stopping.get() || w.idle.ended(stop) {
            break;
        }
        // global.maxconn: leave connections in the kernel's queue while at the limit.
        let max = w.shared.maxconn.load(Ordering::Relaxed);
        if w.shared.conns.load(Ordering::Relaxed) >= max {
            monoio::time::sleep(Duration::from_millis(5)).await;
            continue;
        }
        match l.cancelable_accept(h.clone()).await {
            // Taken even when the cancel raced it: never accepted and dropped.
            Ok((stream, peer)) => accepted_one(&w, &fe, stream, peer).await,
            Err(_) if w.idle.ended(stop) => break,
            Err(e) => {
                if w.out_of_descriptors(&e) > 0 {
                    continue;
                }
                // Nothing to free here: back off briefly rather than spin.
                tracing::warn!(core = w.id, "accept failed: {e}");
                monoio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    w.idle.remove(stop);
    w.accepting.set(w.accepting.get() - 1);
    // Stopped: the listener closes here, so that new connections are refused at once
    // (a client can go elsewhere) rather than queued and reset at exit. A process that
    // took the sockets over holds copies of its own.
}

/// A connection just accepted: a `maxconn` slot for it, then its task.
async fn accepted_one(w: &Rc<Worker>, fe: &str, stream: monoio::net::TcpStream, peer: SocketAddr) {
    // Another core may have taken the last slot between the check before the accept and
    // the accept: then this connection waits here for one (the client sees what it
    // would in the kernel's queue), and this listener accepts nothing more meanwhile.
    // Never accepted and dropped.
    while !take_conn_slot(&w.shared) && !w.stopping.get() {
        monoio::time::sleep(Duration::from_millis(5)).await;
    }
    if w.stopping.get() {
        // Stopping: it is still answered (and then closed), past the limit.
        w.shared.conns.fetch_add(1, Ordering::Relaxed);
    }
    w.conn_opened();
    w.refresh();
    match w.frontend_named(fe) {
        Some(id) => (w.serve.accepted)(w.clone(), id, stream, peer),
        None => w.conn_closed(),
    }
}

/// Takes one of `global.maxconn`'s slots (all cores together) if one is free.
fn take_conn_slot(shared: &Shared) -> bool {
    let max = shared.maxconn.load(Ordering::Relaxed);
    let mut cur = shared.conns.load(Ordering::Relaxed);
    loop {
        if cur >= max {
            return false;
        }
        match shared
            .conns
            .compare_exchange_weak(cur, cur + 1, Ordering::AcqRel, Ordering::Relaxed)
        {
            Ok(_) => return true,
            Err(c) => cur = c,
        }
    }
}
