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
use crate::control::{new_hist, ControlMsg, CoreReport, ServerReport};
use crate::idle::IdleSet;
use crate::log::AccessLog;
use crate::snapshot::{Snapshot, States, Update};
use hdrhistogram::Histogram;

/// The sweep period: keep-alive expiry and buffer release happen on these ticks.
pub const TICK: Duration = Duration::from_millis(100);
/// Ticks an idle connection keeps its read buffer before giving it back.
pub const HOLD_TICKS: u64 = 2;
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
    /// Responses with a status below 500 (live traffic, for the health checks).
    pub ok_responses: u64,
    /// Requests of this core waiting for a slot on this server (sticky clients).
    pub queued: u32,
    /// Passive health: this core avoids the server until then (after a connect failure).
    pub avoid_until: Option<Instant>,
}

/// What all cores share.
#[derive(Debug)]
pub struct Shared {
    pub stop: AtomicBool,
    /// Client connections open, all cores together (global.maxconn).
    pub conns: AtomicUsize,
    /// The configured maxconn, lowered to what RLIMIT_NOFILE allows.
    pub maxconn: AtomicUsize,
    /// Client connections the descriptor limit allows, two descriptors each (see
    /// [`crate::runtime::fit_fd_limit`]).
    pub fd_maxconn: usize,
    /// Bumped by a core that ran out of descriptors: every core then closes its idle
    /// pooled server connections on its next sweep (they are only a cache).
    pub fd_pressure: AtomicU64,
    pub started: Instant,
    pub cores: usize,
    pub driver: std::sync::OnceLock<DriverKind>,
    /// Signs the waiting room's turn cookies (random per process).
    pub turn_key: aws_lc_rs::hmac::Key,
}

/// Failed TLS handshakes on one core: counted per frontend (for the stats), and logged
/// at most once a second, with the number left unsaid since (a scan or a broken client
/// must not flood the log).
#[derive(Debug, Default)]
pub struct TlsFailures {
    pub counts: Vec<u64>,
    last_line: Option<Instant>,
    unsaid: u64,
}

impl TlsFailures {
    /// Counts a failure; returns the number of earlier ones left unsaid when this one
    /// should be logged, `None` when it should not.
    pub fn record(&mut self, frontend: usize, now: Instant) -> Option<u64> {
        if let Some(c) = self.counts.get_mut(frontend) {
            *c += 1;
        }
        match self.last_line {
            Some(t) if now.duration_since(t) < Duration::from_secs(1) => {
                self.unsaid += 1;
                None
            }
            _ => {
                self.last_line = Some(now);
                Some(std::mem::take(&mut self.unsaid))
            }
        }
    }
}

/// A server connection in use, for the descriptor budget (see [`Worker::pool_put`]).
pub struct Busy<'a>(&'a Cell<usize>);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}

/// A pooled idle server connection.
pub struct Pooled {
    pub stream: TcpStream,
    pub since: Instant,
}

/// A backend's waiting requests on one core: (ticket, the sticky server it waits for).
type Waiters = std::collections::VecDeque<(u64, Option<usize>)>;

pub struct Worker {
    pub id: usize,
    pub shared: Arc<Shared>,
    /// The core's own handles on the shared snapshots: cloning an `Rc` touches no
    /// cache line another core writes.
    pub snap: RefCell<Rc<Arc<Snapshot>>>,
    pub states: RefCell<Rc<Arc<States>>>,
    updates: Receiver<Update>,
    pub pools: RefCell<Vec<Vec<Pooled>>>,
    bufs: RefCell<Spares<Vec<u8>>>,
    /// Empty pipes for splicing large bodies (read end, write end).
    pipes: RefCell<Spares<Pipe>>,
    /// Server connections this core's requests are using now (see [`Busy`]).
    busy: Cell<usize>,
    /// The last [`Shared::fd_pressure`] this core acted on.
    fd_pressure_seen: Cell<u64>,
    /// False once splice was refused on this core: large bodies are copied instead.
    pub splice_ok: Cell<bool>,
    pub idle: IdleSet,
    /// Plain-TCP connections idle past their hold (see [`crate::park`]).
    pub park: Option<crate::park::Park>,
    pub log: RefCell<AccessLog>,
    pub rr: RefCell<Vec<RoundRobin>>,
    pub counters: RefCell<Vec<ServerCounters>>,
    /// Client connections on this core.
    pub conns: Cell<usize>,
    /// Accept loops running (each holds its listener until it ends).
    accepting: Cell<usize>,
    pub stopping: Cell<bool>,
    pub tls: RefCell<Vec<Option<monoio_rustls::TlsAcceptor>>>,
    pub driver: DriverKind,
    pub control: crossbeam_channel::Sender<ControlMsg>,
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
    /// Memory freed since the last collect that returned it to the system: buffers
    /// freed, and connections parked (their task's memory).
    freed: Cell<u64>,
    /// Per backend: this core's waiting requests in order (ticket, sticky server).
    queue: RefCell<Vec<Waiters>>,
    next_ticket: Cell<u64>,
}

impl Worker {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: usize,
        shared: Arc<Shared>,
        snap: Arc<Snapshot>,
        states: Arc<States>,
        updates: Receiver<Update>,
        log: AccessLog,
        driver: DriverKind,
        control: crossbeam_channel::Sender<ControlMsg>,
    ) -> Worker {
        let pressure = shared.fd_pressure.load(Ordering::Relaxed);
        let w = Worker {
            id,
            shared,
            snap: RefCell::new(Rc::new(snap.clone())),
            states: RefCell::new(Rc::new(states)),
            updates,
            pools: RefCell::new(Vec::new()),
            bufs: RefCell::new(Spares::new(MIN_POOLED_BUFS, MAX_POOLED_BUFS)),
            pipes: RefCell::new(Spares::new(MIN_POOLED_PIPES, MAX_POOLED_PIPES)),
            busy: Cell::new(0),
            fd_pressure_seen: Cell::new(pressure),
            splice_ok: Cell::new(true),
            idle: IdleSet::new(),
            park: crate::park::Park::new(),
            log: RefCell::new(log),
            rr: RefCell::new(Vec::new()),
            counters: RefCell::new(Vec::new()),
            conns: Cell::new(0),
            accepting: Cell::new(0),
            stopping: Cell::new(false),
            tls: RefCell::new(Vec::new()),
            driver,
            control,
            hist: RefCell::new(Vec::new()),
            queued: RefCell::new(Vec::new()),
            queue_hist: RefCell::new(Vec::new()),
            tls_failures: RefCell::new(TlsFailures::default()),
            ticks: Cell::new(0),
            counters_gen: Cell::new(u64::MAX),
            freed: Cell::new(0),
            queue: RefCell::new(Vec::new()),
            next_ticket: Cell::new(0),
        };
        w.install(&snap);
        w
    }

    fn install(&self, snap: &Arc<Snapshot>) {
        *self.pools.borrow_mut() = (0..snap.servers.len()).map(|_| Vec::new()).collect();
        *self.rr.borrow_mut() = snap
            .backends
            .iter()
            .map(|b| RoundRobin::new(b.count))
            .collect();
        *self.counters.borrow_mut() = vec![ServerCounters::default(); snap.servers.len()];
        self.counters_gen.set(snap.generation);
        *self.hist.borrow_mut() = (0..snap.servers.len()).map(|_| new_hist()).collect();
        *self.queued.borrow_mut() = vec![0; snap.backends.len()];
        *self.queue.borrow_mut() = (0..snap.backends.len())
            .map(|_| std::collections::VecDeque::new())
            .collect();
        *self.queue_hist.borrow_mut() = (0..snap.backends.len()).map(|_| new_hist()).collect();
        self.tls_failures.borrow_mut().counts = vec![0; snap.frontends.len()];
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
                    *self.snap.borrow_mut() = Rc::new(snap);
                    *self.states.borrow_mut() = Rc::new(states);
                }
                Update::States(s) => {
                    if s.generation == self.snap.borrow().generation {
                        *self.states.borrow_mut() = Rc::new(s);
                    }
                }
                Update::Log(sink, format, dontlognull) => {
                    self.log.borrow_mut().replace(sink, format, dontlognull);
                }
            }
        }
    }

    pub fn snapshot(&self) -> Rc<Arc<Snapshot>> {
        self.snap.borrow().clone()
    }

    /// An empty buffer of [`BUF_SIZE`] capacity, from the core's pool or new.
    pub fn get_buf(&self) -> Vec<u8> {
        self.bufs
            .borrow_mut()
            .take()
            .unwrap_or_else(|| Vec::with_capacity(BUF_SIZE))
    }

    /// An empty pipe for splicing, from the core's pool or new.
    pub fn get_pipe(&self) -> Option<Pipe> {
        if let Some(p) = self.pipes.borrow_mut().take() {
            return Some(p);
        }
        Pipe::new().ok()
    }

    /// Returns a pipe that is known to be empty; one that may hold bytes is dropped.
    pub fn put_pipe(&self, p: Pipe) {
        self.pipes.borrow_mut().put(p);
    }

    /// Gives a buffer back: kept if it is one of the pool's size and the pool has room.
    pub fn put_buf(&self, mut b: Vec<u8>) {
        let had_memory = b.capacity() > 0;
        let kept = b.capacity() == BUF_SIZE && {
            b.clear();
            self.bufs.borrow_mut().put(b)
        };
        if !kept && had_memory {
            self.freed.set(self.freed.get() + 1);
        }
    }

    pub fn counters_generation(&self) -> u64 {
        self.counters_gen.get()
    }

    /// Updates a server's counters, if they belong to `generation`.
    #[inline]
    pub fn counter(&self, generation: u64, server: usize, f: impl FnOnce(&mut ServerCounters)) {
        if generation == self.counters_gen.get() {
            if let Some(c) = self.counters.borrow_mut().get_mut(server) {
                f(c);
            }
        }
    }

    /// A copy of a server's counters (zero for another generation).
    #[inline]
    pub fn counter_get(&self, generation: u64, server: usize) -> ServerCounters {
        if generation == self.counters_gen.get() {
            if let Some(c) = self.counters.borrow().get(server) {
                return c.clone();
            }
        }
        ServerCounters::default()
    }

    /// The first non-sticky waiter of a backend's queue on this core.
    pub fn queue_front(&self, be: usize) -> Option<u64> {
        self.queue
            .borrow()
            .get(be)
            .and_then(|q| q.iter().find(|(_, s)| s.is_none()).map(|(t, _)| *t))
    }

    pub fn queue_push(&self, be: usize, sticky: Option<usize>) -> u64 {
        let t = self.next_ticket.get();
        self.next_ticket.set(t + 1);
        if let Some(q) = self.queue.borrow_mut().get_mut(be) {
            q.push_back((t, sticky));
        }
        if let Some(n) = self.queued.borrow_mut().get_mut(be) {
            *n += 1;
        }
        if let Some(s) = sticky {
            if let Some(c) = self.counters.borrow_mut().get_mut(s) {
                c.queued += 1;
            }
        }
        t
    }

    pub fn queue_remove(&self, be: usize, ticket: u64, sticky: Option<usize>) {
        if let Some(q) = self.queue.borrow_mut().get_mut(be) {
            q.retain(|(t, _)| *t != ticket);
        }
        if let Some(n) = self.queued.borrow_mut().get_mut(be) {
            *n = n.saturating_sub(1);
        }
        if let Some(s) = sticky {
            if let Some(c) = self.counters.borrow_mut().get_mut(s) {
                c.queued = c.queued.saturating_sub(1);
            }
        }
    }

    /// Counts a server connection in use until the guard is dropped.
    pub fn upstream_busy(&self) -> Busy<'_> {
        self.busy.set(self.busy.get() + 1);
        Busy(&self.busy)
    }

    /// Closes every idle pooled server connection of this core; returns how many.
    pub fn shed_pools(&self) -> usize {
        let mut n = 0;
        for p in self.pools.borrow_mut().iter_mut() {
            n += p.len();
            p.clear();
        }
        n
    }

    /// After an error: when it says the process is out of descriptors (EMFILE, ENFILE),
    /// tells the other cores and frees this core's idle pooled connections. Returns how
    /// many were freed (0: the error was something else, or there was nothing to free).
    pub fn out_of_descriptors(&self, e: &std::io::Error) -> usize {
        if !matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) {
            return 0;
        }
        self.shared.fd_pressure.fetch_add(1, Ordering::Relaxed);
        let n = self.shed_pools();
        if n > 0 {
            tracing::debug!(
                core = self.id,
                "out of descriptors: closed {n} idle server connections"
            );
        }
        n
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
        // The descriptor budget: this core's share is two per client connection it could
        // hold. Its client connections and the server connections in use take theirs
        // first; its idle pooled ones (all servers together) get what that leaves. With a
        // limit that fits maxconn, this never binds.
        let share = (self.shared.fd_maxconn / self.shared.cores).saturating_mul(2);
        let spare = share.saturating_sub(self.conns.get() + self.busy.get());
        if pools.iter().map(Vec::len).sum::<usize>() >= spare {
            return;
        }
        if let Some(p) = pools.get_mut(server) {
            if p.len() < max {
                p.push(Pooled {
                    stream,
                    since: Instant::now(),
                });
            }
        }
    }

    /// The periodic sweep: idle waits, parked connections, pooled connections past their
    /// idle timeout, log.
    fn tick(self: &Rc<Self>) {
        self.refresh();
        let stopping = self.shared.stop.load(Ordering::Relaxed);
        if stopping && !self.stopping.get() {
            self.stopping.set(true);
            self.shed_pools();
        }
        self.idle.tick(stopping);
        if let Some(park) = &self.park {
            let now = self.idle.now.get().min(u32::MAX as u64) as u32;
            for gone in park.sweep(now, stopping) {
                match gone {
                    crate::park::Gone::Expired(p) => crate::proxy::expire_parked(self.clone(), p),
                    crate::park::Gone::Stopped(p) => {
                        drop(p);
                        self.conn_closed();
                    }
                }
            }
        }
        let pressure = self.shared.fd_pressure.load(Ordering::Relaxed);
        if pressure != self.fd_pressure_seen.get() {
            self.fd_pressure_seen.set(pressure);
            self.shed_pools();
        }
        let trimmed = self.bufs.borrow_mut().trim();
        self.freed.set(self.freed.get() + trimmed as u64);
        self.pipes.borrow_mut().trim();
        let timeout = self.snap.borrow().cfg.limits.pool_idle_timeout;
        let now = Instant::now();
        for p in self.pools.borrow_mut().iter_mut() {
            p.retain(|c| now.duration_since(c.since) < timeout);
        }
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
        if t.is_multiple_of(2) && self.freed.get() >= 64 {
            self.freed.set(0);
            // SAFETY: mi_collect may be called at any time from any thread.
            unsafe { libmimalloc_sys::mi_collect(true) };
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
        };
        let _ = self.control.send(ControlMsg::Report(Box::new(r)));
    }

    /// Passive observation: tells the health-check thread that a server failed.
    pub fn passive(&self, server: usize, kind: crate::control::PassiveKind) {
        let generation = self.snap.borrow().generation;
        let _ = self.control.send(ControlMsg::Passive {
            generation,
            server,
            kind,
        });
    }

    /// A connection left its task for the park: its memory can go back to the system.
    pub fn parked_one(&self) {
        self.freed.set(self.freed.get() + 1);
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
    monoio::spawn(crate::park::waiter(w.clone()));
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

async fn accept_loop(w: Rc<Worker>, fe: usize, l: TcpListener) {
    // Woken by a graceful stop (the sweep ends every idle wait then).
    let stop = w.idle.register(u64::MAX);
    w.accepting.set(w.accepting.get() + 1);
    loop {
        if w.stopping.get() {
            break;
        }
        // global.maxconn: leave connections in the kernel's queue while at the limit.
        let max = w.shared.maxconn.load(Ordering::Relaxed);
        if w.shared.conns.load(Ordering::Relaxed) >= max {
            monoio::time::sleep(Duration::from_millis(5)).await;
            continue;
        }
        let accepted = monoio::select! {
            r = l.accept() => Some(r),
            _ = w.idle.woken(stop) => None,
        };
        let Some(accepted) = accepted else { break };
        match accepted {
            Ok((stream, peer)) => {
                // Another core may have taken the last slot between the check above and
                // this accept: then this connection waits here for one (the client sees
                // what it would in the kernel's queue), and this listener accepts nothing
                // more meanwhile. Never accepted and dropped.
                while !take_conn_slot(&w.shared) && !w.stopping.get() {
                    monoio::time::sleep(Duration::from_millis(5)).await;
                }
                if w.stopping.get() {
                    // Stopping: it is still answered (and then closed), past the limit.
                    w.shared.conns.fetch_add(1, Ordering::Relaxed);
                }
                w.conn_opened();
                crate::proxy::spawn_accepted(w.clone(), fe, stream, peer);
            }
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

pub fn peer_of(s: &TcpStream) -> SocketAddr {
    s.peer_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
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
    fn tls_failures_log_once_a_second_and_count_all() {
        let mut f = TlsFailures {
            counts: vec![0, 0],
            ..Default::default()
        };
        let t0 = Instant::now();
        assert_eq!(f.record(1, t0), Some(0));
        for i in 1..100 {
            assert_eq!(f.record(1, t0 + Duration::from_millis(i * 5)), None);
        }
        assert_eq!(f.record(0, t0 + Duration::from_millis(1001)), Some(99));
        assert_eq!(f.counts, [1, 100]);
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
