//! One core: a thread with its own monoio runtime, and everything it owns. Everything
//! here is `Rc`/`RefCell`, touched by the core's thread only; what crosses threads is the
//! update channel (read with `try_recv` between requests), the control channel (reports
//! and failures, sent, never waited on) and a few atomics in [`Shared`].
//!
//! Its parts:
//! - this file: [`Worker`], the core's state, and what installs a new configuration or
//!   server states;
//! - [`buffers`]: the spare buffers and splice pipes, and the guards that lend them;
//! - [`pool`]: idle server connections, and the descriptor budget;
//! - [`queue`]: requests waiting for a server slot, in order;
//! - [`counters`]: per-server counters and failed TLS handshakes;
//! - [`idle`]: waits and timeouts kept by the sweep instead of timers;
//! - [`park`]: plain-TCP connections idle past their hold, out of any task;
//! - [`sweep`]: the core's life: accept loops, the 100 ms sweep, the graceful stop.
//!
//! The core knows nothing of HTTP: what serves a connection is handed to it
//! ([`Serve`]) by the runtime.

pub mod buffers;
pub mod counters;
pub mod idle;
pub mod park;
pub mod pool;
pub mod queue;
pub mod sweep;

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use hdrhistogram::Histogram;
use monoio::net::TcpStream;

pub use crate::shared::msg::H2Counts;
pub use buffers::{Buf, PipeLease, BUF_SIZE, PIPE_SIZE};
pub use counters::{ServerCounters, TlsFailures};

use crate::balance::RoundRobin;
use crate::ids::{BackendId, FrontendId, ServerId};
use crate::log::AccessLog;
use crate::shared::msg::{new_hist, ControlMsg, CoreReport, PassiveKind, ServerReport};
use crate::shared::{DriverKind, Shared};
use crate::snapshot::{Snapshot, States, Update};

/// What serves the connections a core accepts or takes back from its park (the request
/// path, handed in by the runtime: the core does not depend on it).
#[derive(Clone, Copy)]
pub struct Serve {
    /// A connection just accepted on a listener of frontend `FrontendId`.
    pub accepted: fn(Rc<Worker>, FrontendId, TcpStream, SocketAddr),
    /// A parked connection with bytes (or a close) to read.
    pub resume: fn(Rc<Worker>, park::Parked),
    /// A parked connection past its timeout.
    pub expire: fn(Rc<Worker>, park::Parked),
}

/// What a core starts with.
pub struct WorkerParts {
    pub id: usize,
    pub shared: Arc<Shared>,
    pub snap: Arc<Snapshot>,
    pub states: Arc<States>,
    pub updates: Receiver<Update>,
    pub log: AccessLog,
    pub driver: DriverKind,
    pub control: Sender<ControlMsg>,
    pub serve: Serve,
}

pub struct Worker {
    pub id: usize,
    pub shared: Arc<Shared>,
    /// The core's own handles on the shared snapshots: cloning an `Rc` touches no
    /// cache line another core writes.
    pub snap: RefCell<Rc<Arc<Snapshot>>>,
    pub states: RefCell<Rc<Arc<States>>>,
    updates: Receiver<Update>,
    pub serve: Serve,
    pub pools: RefCell<Vec<Vec<pool::Pooled>>>,
    bufs: Rc<buffers::BufHome>,
    pipes: Rc<buffers::PipeHome>,
    /// Server connections this core's requests are using now (see [`pool::Busy`]).
    busy: Cell<usize>,
    /// The last [`Shared::fd_pressure`] this core acted on.
    fd_pressure_seen: Cell<u64>,
    /// False once splice was refused on this core: large bodies are copied instead.
    pub splice_ok: Cell<bool>,
    pub idle: idle::IdleSet,
    /// Plain-TCP connections idle past their hold (see [`park`]).
    pub park: Option<park::Park>,
    pub log: RefCell<AccessLog>,
    pub rr: RefCell<Vec<RoundRobin>>,
    pub counters: RefCell<Vec<ServerCounters>>,
    /// Client connections on this core.
    pub conns: Cell<usize>,
    /// Accept loops running (each holds its listener until it ends).
    accepting: Cell<usize>,
    /// This core's listeners, by address.
    listening: RefCell<Vec<sweep::Listening>>,
    /// Listeners a reload added, waiting for the sweep to start their accept loops.
    new_listeners: RefCell<Vec<(String, std::net::TcpListener)>>,
    pub stopping: Cell<bool>,
    /// The sweep tick at which the graceful stop began.
    stop_tick: Cell<u64>,
    /// HTTP/2 connections and streams on this core.
    pub h2: Cell<H2Counts>,
    /// The waits that end this core's HTTP/2 connections (GOAWAY) at a reload.
    pub h2_ends: RefCell<Vec<usize>>,
    pub tls: RefCell<Vec<Option<monoio_rustls::TlsAcceptor>>>,
    pub driver: DriverKind,
    pub control: Sender<ControlMsg>,
    /// Response times per server (microseconds), merged by the health thread.
    pub hist: RefCell<Vec<Histogram<u64>>>,
    /// Requests of this core waiting per backend, and their waiting times.
    pub queued: RefCell<Vec<u32>>,
    pub queue_hist: RefCell<Vec<Histogram<u64>>>,
    /// Failed TLS handshakes per frontend, and the rate limit on their log lines.
    pub tls_failures: RefCell<TlsFailures>,
    ticks: Cell<u64>,
    /// The generation `counters`, `hist` and `queue` are sized for: a request that
    /// started before a reload leaves them alone.
    counters_gen: Cell<u64>,
    /// Connections parked since the last collect (their task's memory is free).
    parked: Cell<u64>,
    /// Per backend: this core's waiting requests in order (ticket, sticky server).
    queue: RefCell<Vec<queue::Waiters>>,
    next_ticket: Cell<u64>,
}

impl Worker {
    pub fn new(p: WorkerParts) -> Worker {
        let pressure = p.shared.fd_pressure.load(Ordering::Relaxed);
        let w = Worker {
            id: p.id,
            shared: p.shared,
            snap: RefCell::new(Rc::new(p.snap.clone())),
            states: RefCell::new(Rc::new(p.states)),
            updates: p.updates,
            serve: p.serve,
            pools: RefCell::new(Vec::new()),
            bufs: buffers::BufHome::new(),
            pipes: buffers::PipeHome::new(),
            busy: Cell::new(0),
            fd_pressure_seen: Cell::new(pressure),
            splice_ok: Cell::new(true),
            idle: idle::IdleSet::new(),
            park: park::Park::new(),
            log: RefCell::new(p.log),
            rr: RefCell::new(Vec::new()),
            counters: RefCell::new(Vec::new()),
            conns: Cell::new(0),
            accepting: Cell::new(0),
            listening: RefCell::new(Vec::new()),
            new_listeners: RefCell::new(Vec::new()),
            stopping: Cell::new(false),
            stop_tick: Cell::new(0),
            h2: Cell::new(H2Counts::default()),
            h2_ends: RefCell::new(Vec::new()),
            tls: RefCell::new(Vec::new()),
            driver: p.driver,
            control: p.control,
            hist: RefCell::new(Vec::new()),
            queued: RefCell::new(Vec::new()),
            queue_hist: RefCell::new(Vec::new()),
            tls_failures: RefCell::new(TlsFailures::default()),
            ticks: Cell::new(0),
            counters_gen: Cell::new(u64::MAX),
            parked: Cell::new(0),
            queue: RefCell::new(Vec::new()),
            next_ticket: Cell::new(0),
        };
        w.install(&p.snap, None);
        w
    }

    /// Sizes every per-server and per-backend table for `snap`, and makes its TLS
    /// acceptors. After a reload (`prev`), a server whose backend, name and address are
    /// unchanged keeps its counters, response times and pooled connections.
    fn install(&self, snap: &Arc<Snapshot>, prev: Option<&Snapshot>) {
        let (servers, backends) = (snap.servers.len(), snap.backends.len());
        let mut pools: Vec<Vec<pool::Pooled>> = (0..servers).map(|_| Vec::new()).collect();
        let mut counters = vec![ServerCounters::default(); servers];
        let mut hist: Vec<Histogram<u64>> = (0..servers).map(|_| new_hist()).collect();
        if let Some(prev) = prev {
            let mut old_pools = std::mem::take(&mut *self.pools.borrow_mut());
            let old_counters = self.counters.borrow();
            let mut old_hist = std::mem::take(&mut *self.hist.borrow_mut());
            for (new, old) in snap.kept_from(prev) {
                let (n, o) = (new.index(), old.index());
                if let Some(p) = old_pools.get_mut(o) {
                    pools[n] = std::mem::take(p);
                }
                if let Some(c) = old_counters.get(o) {
                    // What is in flight finishes under the old generation's counters.
                    counters[n] = ServerCounters {
                        active: 0,
                        queued: 0,
                        ..c.clone()
                    };
                }
                if let Some(h) = old_hist.get_mut(o) {
                    hist[n] = std::mem::replace(h, new_hist());
                }
            }
        }
        *self.pools.borrow_mut() = pools;
        *self.counters.borrow_mut() = counters;
        *self.hist.borrow_mut() = hist;
        *self.rr.borrow_mut() = snap
            .backends
            .iter()
            .map(|b| RoundRobin::new(b.count))
            .collect();
        self.counters_gen.set(snap.generation);
        *self.queued.borrow_mut() = vec![0; backends];
        *self.queue.borrow_mut() = (0..backends).map(|_| Default::default()).collect();
        *self.queue_hist.borrow_mut() = (0..backends).map(|_| new_hist()).collect();
        // Frontends keep their place across a reload (a removed one stays, retired).
        self.tls_failures
            .borrow_mut()
            .counts
            .resize(snap.frontends.len(), 0);
        *self.tls.borrow_mut() = tls_acceptors(snap);
    }

    /// Applies the newest updates, if any. Cheap when there are none.
    #[inline]
    pub fn refresh(&self) {
        if self.updates.is_empty() {
            return;
        }
        while let Ok(u) = self.updates.try_recv() {
            match u {
                Update::Config(snap, states) => {
                    // The whole time this core serves nothing for a reload.
                    let t = std::time::Instant::now();
                    let prev = self.snapshot();
                    self.install(&snap, Some(&prev));
                    let generation = snap.generation;
                    *self.snap.borrow_mut() = Rc::new(snap);
                    *self.states.borrow_mut() = Rc::new(states);
                    drop(prev);
                    // HTTP/2 connections say GOAWAY: their clients come back to the new
                    // configuration (its SETTINGS) while their open streams finish.
                    for &k in self.h2_ends.borrow().iter() {
                        self.idle.end(k);
                    }
                    tracing::info!(
                        core = self.id,
                        generation,
                        "configuration installed in {} µs",
                        t.elapsed().as_micros()
                    );
                }
                Update::States(s) => {
                    if s.generation == self.snap.borrow().generation {
                        *self.states.borrow_mut() = Rc::new(s);
                    }
                }
                Update::Log(sink, format, dontlognull) => {
                    self.log.borrow_mut().replace(sink, format, dontlognull);
                }
                Update::Unlisten(addrs) => self.unlisten(&addrs),
                Update::Listen(l) => self.new_listeners.borrow_mut().extend(l),
            }
        }
    }

    pub fn snapshot(&self) -> Rc<Arc<Snapshot>> {
        self.snap.borrow().clone()
    }

    /// A buffer of [`BUF_SIZE`] capacity, empty, from the core's pool or new; it goes
    /// back when dropped.
    #[inline]
    pub fn buf(&self) -> Buf {
        self.bufs.lend()
    }

    /// An empty splice pipe, from the core's pool or new.
    pub fn pipe(&self) -> Option<PipeLease> {
        self.pipes.lend()
    }

    pub fn counters_generation(&self) -> u64 {
        self.counters_gen.get()
    }

    /// Updates a server's counters, if they belong to `generation`.
    #[inline]
    pub fn counter(&self, generation: u64, s: ServerId, f: impl FnOnce(&mut ServerCounters)) {
        if generation == self.counters_gen.get() {
            if let Some(c) = self.counters.borrow_mut().get_mut(s.index()) {
                f(c);
            }
        }
    }

    /// A copy of a server's counters (zero for another generation).
    #[inline]
    pub fn counter_get(&self, generation: u64, s: ServerId) -> ServerCounters {
        if generation == self.counters_gen.get() {
            if let Some(c) = self.counters.borrow().get(s.index()) {
                return c.clone();
            }
        }
        ServerCounters::default()
    }

    /// Records a response time for server `s`, if of this core's generation.
    pub fn record_time(&self, generation: u64, s: ServerId, micros: u64) {
        if generation == self.counters_gen.get() {
            if let Some(h) = self.hist.borrow_mut().get_mut(s.index()) {
                h.saturating_record(micros.max(1));
            }
        }
    }

    /// Records a queue wait in backend `b`.
    pub fn record_queue_wait(&self, b: BackendId, micros: u64) {
        if let Some(h) = self.queue_hist.borrow_mut().get_mut(b.index()) {
            h.saturating_record(micros.max(1));
        }
    }

    /// Sends this core's counters to the health-check thread (off the request path).
    pub fn report(&self) {
        let counters = self.counters.borrow();
        let hist = self.hist.borrow();
        let servers = counters
            .iter()
            .zip(hist.iter())
            .map(|(c, h)| ServerReport {
                active: c.active,
                total: c.total,
                failures: c.failures,
                responses_5xx: c.responses_5xx,
                ok_responses: c.ok_responses,
                queued: c.queued,
                hist: h.clone(),
            })
            .collect();
        let r = CoreReport {
            core: self.id,
            generation: self.snap.borrow().generation,
            conns: self.conns.get(),
            servers,
            queued: self.queued.borrow().clone(),
            queue_wait: self.queue_hist.borrow().clone(),
            tls_failures: self.tls_failures.borrow().counts.clone(),
            h2: self.h2.get(),
        };
        let _ = self.control.send(ControlMsg::Report(Box::new(r)));
    }

    /// Passive observation: tells the health-check thread that a server failed.
    pub fn passive(&self, server: ServerId, kind: PassiveKind) {
        let generation = self.snap.borrow().generation;
        let _ = self.control.send(ControlMsg::Passive {
            generation,
            server,
            kind,
        });
    }

    /// An HTTP/2 connection began (its handshake done).
    pub fn h2_opened(&self) {
        let mut c = self.h2.get();
        c.open += 1;
        c.connections += 1;
        self.h2.set(c);
    }

    pub fn h2_closed(&self) {
        let mut c = self.h2.get();
        c.open = c.open.saturating_sub(1);
        self.h2.set(c);
    }

    pub fn h2_stream(&self) {
        let mut c = self.h2.get();
        c.streams += 1;
        self.h2.set(c);
    }

    /// A connection left its task for the park: its memory can go back to the system.
    pub fn parked_one(&self) {
        self.parked.set(self.parked.get() + 1);
    }

    pub fn conn_opened(&self) {
        self.conns.set(self.conns.get() + 1);
    }

    pub fn conn_closed(&self) {
        self.conns.set(self.conns.get() - 1);
        self.shared.conns.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Counts a connection out when dropped, however its task ends.
pub struct ConnGuard(Option<Rc<Worker>>);

impl ConnGuard {
    pub fn new(w: &Rc<Worker>) -> ConnGuard {
        ConnGuard(Some(w.clone()))
    }

    /// The connection is counted elsewhere from now on (the park, a task it moved to).
    pub fn hand_over(&mut self) {
        self.0 = None;
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        if let Some(w) = self.0.take() {
            w.conn_closed();
        }
    }
}

pub fn peer_of(s: &TcpStream) -> SocketAddr {
    s.peer_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
}

/// Each frontend's TLS acceptor (this core's own session cache).
fn tls_acceptors(snap: &Snapshot) -> Vec<Option<monoio_rustls::TlsAcceptor>> {
    snap.frontends
        .iter()
        .map(|f| {
            let t = f.tls.as_ref()?;
            match t.server_config() {
                Ok(c) => Some(monoio_rustls::TlsAcceptor::from(c)),
                Err(e) => {
                    tracing::error!(frontend = %f.name, "TLS configuration refused: {e}");
                    None
                }
            }
        })
        .collect()
}
