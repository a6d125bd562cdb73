//! One core: its listeners, its connections, its upstream pools, buffers and counters.
//! Everything here is `Rc`/`RefCell`, owned by the core's thread; what crosses threads is
//! the update channel (read with `try_recv` between requests) and a few atomics in
//! [`Shared`] (the stop flag and the global connection count).

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use monoio::net::{TcpListener, TcpStream};

use crate::balance::RoundRobin;
use crate::idle::IdleSet;
use crate::log::AccessLog;
use crate::snapshot::{Snapshot, States, Update};

/// The sweep period: keep-alive expiry and buffer release happen on these ticks.
pub const TICK: Duration = Duration::from_millis(100);
/// Ticks an idle connection keeps its read buffer before giving it back.
pub const HOLD_TICKS: u64 = 3;
/// Size of the buffers in the per-core pool.
pub const BUF_SIZE: usize = 16 * 1024;
const MAX_POOLED_BUFS: usize = 512;

/// Which I/O driver a core runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriverKind {
    IoUring,
    Epoll,
}

impl DriverKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DriverKind::IoUring => "io_uring",
            DriverKind::Epoll => "epoll",
        }
    }
}

/// Per-core counters for one server, written by the core only.
#[derive(Debug, Default, Clone)]
pub struct ServerCounters {
    pub active: u32,
    pub total: u64,
    pub failures: u64,
    pub responses_5xx: u64,
    /// Passive health: this core avoids the server until then (after a connect failure).
    pub avoid_until: Option<Instant>,
}

/// What all cores share.
#[derive(Debug)]
pub struct Shared {
    pub stop: AtomicBool,
    /// Client connections open, all cores together (global.maxconn).
    pub conns: AtomicUsize,
    pub maxconn: AtomicUsize,
    pub started: Instant,
    pub cores: usize,
    pub driver: std::sync::OnceLock<DriverKind>,
    pub total_requests: AtomicU64,
    /// Workers still running.
    pub running: AtomicUsize,
}

/// A pooled idle server connection.
pub struct Pooled {
    pub stream: TcpStream,
    pub since: Instant,
}

pub struct Worker {
    pub id: usize,
    pub shared: Arc<Shared>,
    pub snap: RefCell<Arc<Snapshot>>,
    pub states: RefCell<Arc<States>>,
    updates: Receiver<Update>,
    pub pools: RefCell<Vec<Vec<Pooled>>>,
    bufs: RefCell<Vec<Vec<u8>>>,
    pub idle: IdleSet,
    pub log: RefCell<AccessLog>,
    pub rr: RefCell<Vec<RoundRobin>>,
    pub counters: RefCell<Vec<ServerCounters>>,
    /// Client connections on this core.
    pub conns: Cell<usize>,
    pub stopping: Cell<bool>,
    pub tls: RefCell<Vec<Option<monoio_rustls::TlsAcceptor>>>,
    pub driver: DriverKind,
}

impl Worker {
    pub fn new(
        id: usize,
        shared: Arc<Shared>,
        snap: Arc<Snapshot>,
        states: Arc<States>,
        updates: Receiver<Update>,
        log: AccessLog,
        driver: DriverKind,
    ) -> Worker {
        let w = Worker {
            id,
            shared,
            snap: RefCell::new(snap.clone()),
            states: RefCell::new(states),
            updates,
            pools: RefCell::new(Vec::new()),
            bufs: RefCell::new(Vec::new()),
            idle: IdleSet::new(),
            log: RefCell::new(log),
            rr: RefCell::new(Vec::new()),
            counters: RefCell::new(Vec::new()),
            conns: Cell::new(0),
            stopping: Cell::new(false),
            tls: RefCell::new(Vec::new()),
            driver,
        };
        w.install(&snap);
        w
    }

    fn install(&self, snap: &Arc<Snapshot>) {
        *self.pools.borrow_mut() = (0..snap.servers.len()).map(|_| Vec::new()).collect();
        *self.rr.borrow_mut() = snap.backends.iter().map(|b| RoundRobin::new(b.count)).collect();
        *self.counters.borrow_mut() = vec![ServerCounters::default(); snap.servers.len()];
        let mut tls = Vec::new();
        for f in &snap.frontends {
            tls.push(match &f.tls {
                Some(t) => match t.server_config() {
                    Ok(c) => Some(monoio_rustls::TlsAcceptor::from(c)),
                    Err(e) => {
                        tracing::error!(frontend = %f.name, "TLS configuration refused: {e}");
                        None
                    }
                },
                None => None,
            });
        }
        *self.tls.borrow_mut() = tls;
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
                    self.install(&snap);
                    *self.snap.borrow_mut() = snap;
                    *self.states.borrow_mut() = states;
                }
                Update::States(s) => {
                    if s.generation == self.snap.borrow().generation {
                        *self.states.borrow_mut() = s;
                    }
                }
            }
        }
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snap.borrow().clone()
    }

    pub fn get_buf(&self) -> Vec<u8> {
        self.bufs.borrow_mut().pop().unwrap_or_else(|| Vec::with_capacity(BUF_SIZE))
    }

    pub fn put_buf(&self, mut b: Vec<u8>) {
        if b.capacity() == BUF_SIZE {
            let mut bufs = self.bufs.borrow_mut();
            if bufs.len() < MAX_POOLED_BUFS {
                b.clear();
                bufs.push(b);
            }
        }
    }

    /// Takes an idle connection to `server` from this core's pool.
    pub fn pool_take(&self, server: usize) -> Option<Pooled> {
        self.pools.borrow_mut().get_mut(server)?.pop()
    }

    pub fn pool_put(&self, server: usize, stream: TcpStream, generation: u64) {
        if self.stopping.get() || generation != self.snap.borrow().generation {
            return;
        }
        let max = self.snap.borrow().cfg.limits.pool_max_idle_per_server;
        let mut pools = self.pools.borrow_mut();
        if let Some(p) = pools.get_mut(server) {
            if p.len() < max {
                p.push(Pooled { stream, since: Instant::now() });
            }
        }
    }

    /// The periodic sweep: idle waits, pooled connections past their idle timeout, log.
    fn tick(&self) {
        self.refresh();
        let stopping = self.shared.stop.load(Ordering::Relaxed);
        if stopping && !self.stopping.get() {
            self.stopping.set(true);
            self.pools.borrow_mut().iter_mut().for_each(|p| p.clear());
        }
        self.idle.tick(stopping);
        let timeout = self.snap.borrow().cfg.limits.pool_idle_timeout;
        let now = Instant::now();
        for p in self.pools.borrow_mut().iter_mut() {
            p.retain(|c| now.duration_since(c.since) < timeout);
        }
        self.log.borrow_mut().flush();
    }

    pub fn conn_opened(&self) {
        self.conns.set(self.conns.get() + 1);
    }

    pub fn conn_closed(&self) {
        self.conns.set(self.conns.get() - 1);
        self.shared.conns.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A core's life: accept on its listeners, sweep every tick, and on stop wait for its
/// connections to finish (at most `grace`).
pub async fn run(w: Rc<Worker>, listeners: Vec<(usize, std::net::TcpListener)>, grace: Duration) {
    for (fe, l) in listeners {
        match TcpListener::from_std(l) {
            Ok(l) => {
                monoio::spawn(accept_loop(w.clone(), fe, l));
            }
            Err(e) => tracing::error!(core = w.id, "listener refused by the driver: {e}"),
        }
    }
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
    w.log.borrow_mut().flush();
}

async fn accept_loop(w: Rc<Worker>, fe: usize, l: TcpListener) {
    loop {
        if w.stopping.get() {
            // Stop accepting; the listener stays open until the process exits so that
            // queued connections are not reset early.
            std::future::pending::<()>().await;
        }
        // global.maxconn: leave connections in the kernel's queue while at the limit.
        let max = w.shared.maxconn.load(Ordering::Relaxed);
        if w.shared.conns.load(Ordering::Relaxed) >= max {
            monoio::time::sleep(Duration::from_millis(5)).await;
            continue;
        }
        match l.accept().await {
            Ok((stream, peer)) => {
                if w.shared.conns.fetch_add(1, Ordering::Relaxed) >= max {
                    w.shared.conns.fetch_sub(1, Ordering::Relaxed);
                    drop(stream);
                    continue;
                }
                w.conn_opened();
                let _ = stream.set_nodelay(true);
                let w2 = w.clone();
                monoio::spawn(async move {
                    crate::proxy::serve_accepted(w2.clone(), fe, stream, peer).await;
                    w2.conn_closed();
                });
            }
            Err(e) => {
                // EMFILE and friends: back off briefly rather than spin.
                tracing::warn!(core = w.id, "accept failed: {e}");
                monoio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

pub fn peer_of(s: &TcpStream) -> SocketAddr {
    s.peer_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
}
