//! Starting and stopping the cores. [`start`] binds one SO_REUSEPORT listener per core
//! and bind address (port 0 resolved once, then shared), spawns the named worker threads,
//! each pinned to its core with its own monoio runtime (io_uring with SINGLE_ISSUER and
//! DEFER_TASKRUN, falling back to a plain ring, then to epoll under `auto`), and waits
//! until every core reports its driver. Before that, [`fit_fd_limit`] raises
//! RLIMIT_NOFILE to fit `maxconn`, or lowers the maxconn in force to what the limit has
//! room for (and says so).

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

use crate::control::{Control, ControlMsg};
use crate::log::{AccessLog, Sink};
use crate::snapshot::{Snapshot, States};
use crate::worker::{self, DriverKind, Shared, Worker};
use crate::EngineError;

/// `--driver`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DriverChoice {
    #[default]
    Auto,
    Uring,
    Epoll,
}

/// How to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Worker cores (threads); at least 1.
    pub cores: usize,
    pub driver: DriverChoice,
    /// Pin each worker to its core.
    pub pin: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            cores: available_cores(),
            driver: DriverChoice::Auto,
            pin: true,
        }
    }
}

pub fn available_cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// The driver this kernel would give `auto`.
pub fn probe_driver() -> DriverKind {
    if monoio::utils::detect_uring() {
        DriverKind::IoUring
    } else {
        DriverKind::Epoll
    }
}

/// A running engine.
pub struct Running {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    addrs: Vec<(String, Vec<SocketAddr>)>,
    current: Mutex<Arc<Snapshot>>,
    generation: AtomicU64,
    driver: DriverKind,
    control: Control,
    /// Each core's update channel, for what does not go through the health-check thread
    /// (the reopened access log).
    cores_tx: Vec<crossbeam_channel::Sender<crate::snapshot::Update>>,
    _admin: Option<crate::admin::AdminSocket>,
    stats_addr: Option<SocketAddr>,
}

/// Something that can ask a running engine to stop (for signal handlers).
#[derive(Clone)]
pub struct StopHandle(Arc<Shared>);

impl StopHandle {
    pub fn stop(&self) {
        self.0.stop.store(true, Ordering::Relaxed);
    }
}

impl Running {
    /// The bound addresses of a frontend (port 0 resolved).
    pub fn frontend_addrs(&self, name: &str) -> Vec<SocketAddr> {
        self.addrs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| a.clone())
            .unwrap_or_default()
    }

    /// The first bound address of a frontend. Panics if there is no such frontend (for
    /// tests).
    pub fn addr(&self, name: &str) -> SocketAddr {
        self.frontend_addrs(name)[0]
    }

    pub fn driver(&self) -> DriverKind {
        self.driver
    }

    pub fn cores(&self) -> usize {
        self.shared.cores
    }

    pub fn uptime(&self) -> Duration {
        self.shared.started.elapsed()
    }

    /// Client connections open now, all cores together.
    pub fn connections(&self) -> usize {
        self.shared.conns.load(Ordering::Relaxed)
    }

    pub fn stop_handle(&self) -> StopHandle {
        StopHandle(self.shared.clone())
    }

    /// The snapshot the cores run now.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current
            .lock()
            .map(|c| c.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    /// The server states last published to the cores.
    pub fn states(&self) -> Arc<States> {
        self.control
            .states
            .lock()
            .map(|c| c.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    /// Runs an admin command (the same as a line on the admin socket) and returns its
    /// answer, which ends with an empty line.
    pub fn admin(&self, line: &str) -> String {
        self.control.admin(line)
    }

    /// The data of the stats page.
    pub fn stats(&self) -> Option<Box<crate::control::StatsView>> {
        self.control.stats()
    }

    /// Where the stats endpoint listens, when `global.stats` is set.
    pub fn stats_addr(&self) -> Option<SocketAddr> {
        self.stats_addr
    }

    /// Swaps the configuration on every core. The bind addresses must stay the same (a
    /// change there needs a restart); everything else takes effect for the next request.
    pub fn reload(&self, cfg: config::Config) -> Result<(), EngineError> {
        let cur = self.snapshot();
        let same_binds = cur.cfg.frontends.len() == cfg.frontends.len()
            && cur.cfg.frontends.iter().zip(&cfg.frontends).all(|(a, b)| {
                a.name == b.name && binds_match(&a.bind, &b.bind, &self.frontend_addrs(&a.name))
            });
        if !same_binds {
            return Err(EngineError::Reload(
                "the frontends or their bind addresses changed: restart the engine for that".into(),
            ));
        }
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        let snap = Arc::new(Snapshot::build(cfg, generation)?);
        // The access log reopened (its file may have moved) with the new [log] settings; a
        // log that cannot be opened refuses the reload.
        let sinks = self
            .open_log(&snap.cfg.log)
            .map_err(|e| EngineError::Reload(e.to_string()))?;
        self.install_log(sinks, &snap.cfg.log);
        let want = snap.cfg.global.maxconn as usize;
        if want > self.shared.fd_maxconn {
            tracing::warn!(
                "maxconn {want} is past what RLIMIT_NOFILE allows ({} client connections); \
                 the engine holds at most those: raise the limit and restart",
                self.shared.fd_maxconn
            );
        }
        self.shared
            .maxconn
            .store(want.min(self.shared.fd_maxconn), Ordering::Relaxed);
        if let Ok(mut c) = self.current.lock() {
            *c = snap.clone();
        }
        // The health-check thread keeps admin states and health of the servers that stay,
        // and sends the new snapshot with their states to every core.
        let _ = self.control.tx.send(ControlMsg::Config(snap));
        Ok(())
    }

    /// Reopens the access log file (logrotate moved it: SIGUSR1) and hands it to every
    /// core, which writes what it has buffered to the old one first.
    pub fn reopen_log(&self) -> Result<(), EngineError> {
        let log = self.snapshot().cfg.log.clone();
        let sinks = self.open_log(&log)?;
        self.install_log(sinks, &log);
        Ok(())
    }

    /// The access log opened once, a handle for each core.
    fn open_log(&self, log: &config::Log) -> Result<Vec<Sink>, EngineError> {
        let sink = Sink::open(&log.access).map_err(EngineError::Log)?;
        (0..self.cores_tx.len())
            .map(|_| sink.try_clone().map_err(EngineError::Log))
            .collect()
    }

    fn install_log(&self, sinks: Vec<Sink>, log: &config::Log) {
        for (tx, s) in self.cores_tx.iter().zip(sinks) {
            let _ = tx.send(crate::snapshot::Update::Log(s, log.format, log.dontlognull));
        }
    }

    /// Graceful stop: stop accepting, finish in-flight requests, close idle connections,
    /// join the cores.
    pub fn stop(self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.wait();
    }

    /// Waits until the cores have stopped (after a [`StopHandle::stop`]).
    pub fn wait(mut self) {
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        self.control.stop();
    }
}

fn binds_match(old: &[SocketAddr], new: &[SocketAddr], bound: &[SocketAddr]) -> bool {
    old.len() == new.len()
        && old
            .iter()
            .zip(new)
            .zip(bound)
            .all(|((o, n), b)| o == n || (n.port() == b.port() && n.ip() == b.ip()))
}

impl Drop for Running {
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            self.shared.stop.store(true, Ordering::Relaxed);
            for t in self.threads.drain(..) {
                let _ = t.join();
            }
        }
        self.control.stop();
    }
}

/// Refuses an address another socket listens on: a bind without SO_REUSEPORT fails
/// where any listener holds it, whereas SO_REUSEPORT would let this engine share it
/// silently with another process (a second engine taking half the connections).
fn probe_free(addr: SocketAddr) -> Result<(), EngineError> {
    if addr.port() == 0 {
        return Ok(());
    }
    let err = |err| EngineError::Bind { addr, err };
    let s =
        Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(err)?;
    // SO_REUSEADDR only: a port with connections in TIME_WAIT is free to listen on.
    s.set_reuse_address(true).map_err(err)?;
    if addr.is_ipv6() {
        s.set_only_v6(true).map_err(err)?;
    }
    match s.bind(&addr.into()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(EngineError::InUse(addr)),
        Err(e) => Err(err(e)),
    }
}

fn bind_one(addr: SocketAddr) -> Result<std::net::TcpListener, EngineError> {
    let err = |err| EngineError::Bind { addr, err };
    let s =
        Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(err)?;
    s.set_reuse_address(true).map_err(err)?;
    s.set_reuse_port(true).map_err(err)?;
    if addr.is_ipv6() {
        s.set_only_v6(true).map_err(err)?;
    }
    s.set_nonblocking(true).map_err(err)?;
    // Accepted sockets inherit TCP_NODELAY: no setsockopt per connection.
    s.set_nodelay(true).map_err(err)?;
    s.bind(&addr.into()).map_err(err)?;
    s.listen(1024).map_err(err)?;
    Ok(s.into())
}

/// Descriptors kept aside for everything but connections: per core its listeners, ring
/// and the splice pipes it keeps when quiet (eight, two descriptors each); health checks,
/// the log, admin and stats. A splice past those that finds no descriptor copies instead.
fn fd_reserve(cores: usize) -> u64 {
    64 + cores as u64 * 32
}

/// What the descriptor limit leaves room for, after [`fit_fd_limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdRoom {
    /// RLIMIT_NOFILE's soft limit now.
    pub limit: u64,
    /// The limit that maxconn needs.
    pub need: u64,
    /// Client connections the limit allows (two descriptors each).
    pub conns: usize,
}

/// Raises RLIMIT_NOFILE to fit `maxconn` client connections, two descriptors each: the
/// client's and its server connection (idle pooled server connections get what the
/// clients leave; see [`crate::worker::Worker::pool_put`]). The soft limit goes up to what
/// is needed, within the hard limit, and past it where the process may raise that. The
/// engine then holds no more client connections than [`FdRoom::conns`]; past it new
/// connections wait in the kernel's queue, rather than failing with EMFILE at accept or,
/// worse, at the connect to a server.
pub fn fit_fd_limit(maxconn: usize, cores: usize) -> FdRoom {
    let need = 2 * maxconn as u64 + fd_reserve(cores);
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain getrlimit/setrlimit on local structs.
    let ok = unsafe {
        let ok = libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0;
        if ok && r.rlim_cur < need {
            let both = libc::rlimit {
                rlim_cur: need,
                rlim_max: r.rlim_max.max(need),
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &both) != 0 {
                let soft = libc::rlimit {
                    rlim_cur: need.min(r.rlim_max),
                    rlim_max: r.rlim_max,
                };
                libc::setrlimit(libc::RLIMIT_NOFILE, &soft);
            }
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
        }
        ok
    };
    let conns = if ok {
        let n = (r.rlim_cur.saturating_sub(fd_reserve(cores)) / 2).max(1);
        usize::try_from(n).unwrap_or(usize::MAX)
    } else {
        usize::MAX
    };
    FdRoom {
        limit: r.rlim_cur,
        need,
        conns,
    }
}

/// Starts the engine on `opts.cores` cores. Returns when every core runs.
pub fn start(cfg: config::Config, opts: Options) -> Result<Running, EngineError> {
    let cores = opts.cores.max(1);
    let snap = Arc::new(Snapshot::build(cfg, 0)?);
    let states = Arc::new(States::initial(&snap));

    // Listeners: one per core and address; port 0 resolved by the first.
    let mut per_core: Vec<Vec<(usize, std::net::TcpListener)>> =
        (0..cores).map(|_| Vec::new()).collect();
    let mut addrs = Vec::new();
    for (fi, f) in snap.cfg.frontends.iter().enumerate() {
        let mut bound = Vec::new();
        for &a in &f.bind {
            probe_free(a)?;
            let first = bind_one(a)?;
            let real = first
                .local_addr()
                .map_err(|err| EngineError::Bind { addr: a, err })?;
            per_core[0].push((fi, first));
            for list in per_core.iter_mut().skip(1) {
                list.push((fi, bind_one(real)?));
            }
            bound.push(real);
        }
        addrs.push((f.name.clone(), bound));
    }

    let sink = Sink::open(&snap.cfg.log.access).map_err(EngineError::Log)?;
    let want = snap.cfg.global.maxconn as usize;
    let room = fit_fd_limit(want, cores);
    if room.conns < want {
        tracing::warn!(
            "RLIMIT_NOFILE is {}: room for {} client connections at once, below maxconn \
             {want}; past it new connections wait in the kernel's queue. Raise the limit \
             (systemd: LimitNOFILE={}; a shell: ulimit -n {}) or lower maxconn",
            room.limit,
            room.conns,
            room.need,
            room.need
        );
    }
    let shared = Arc::new(Shared {
        stop: AtomicBool::new(false),
        conns: AtomicUsize::new(0),
        maxconn: AtomicUsize::new(want.min(room.conns)),
        fd_maxconn: room.conns,
        fd_pressure: AtomicU64::new(0),
        started: Instant::now(),
        cores,
        driver: std::sync::OnceLock::new(),
        turn_key: {
            // getrandom(2) rather than aws-lc's generator: that one seeds itself with
            // jitter entropy, which costs a noticeable start-up time.
            let mut k = [0u8; 32];
            // SAFETY: k is a valid buffer of its length.
            let _ = unsafe { libc::getrandom(k.as_mut_ptr().cast(), k.len(), 0) };
            aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &k)
        },
    });
    let grace = snap
        .cfg
        .frontends
        .iter()
        .map(|f| f.timeouts.client)
        .chain(snap.cfg.backends.iter().map(|b| b.timeouts.server))
        .max()
        .unwrap_or(Duration::from_secs(30))
        .min(Duration::from_secs(60));
    let core_ids = if opts.pin {
        core_affinity::get_core_ids().unwrap_or_default()
    } else {
        Vec::new()
    };
    if let Some(w) = oversubscribed(cores, available_cores(), opts.pin) {
        tracing::warn!("{w}");
    }
    let (report_tx, report_rx) = std::sync::mpsc::channel::<Result<DriverKind, EngineError>>();
    let mut threads = Vec::new();
    let mut senders = Vec::new();
    let mut cores_tx = Vec::new();
    let (ctl_tx, ctl_rx) = crossbeam_channel::unbounded::<ControlMsg>();
    for (i, listeners) in per_core.into_iter().enumerate() {
        let (tx, rx) = crossbeam_channel::unbounded();
        cores_tx.push(tx.clone());
        senders.push(tx);
        let shared = shared.clone();
        let snap = snap.clone();
        let states = states.clone();
        let report = report_tx.clone();
        let core = core_ids.get(i % core_ids.len().max(1)).copied();
        let sink = sink.try_clone().map_err(EngineError::Log)?;
        let choice = opts.driver;
        let ctl = ctl_tx.clone();
        let t = std::thread::Builder::new()
            .name(format!("engine-worker-{i}"))
            .spawn(move || {
                if let Some(c) = core {
                    if !core_affinity::set_for_current(c) {
                        tracing::warn!(core = i, "could not pin the worker to its core");
                    }
                }
                let log = AccessLog::new(sink, snap.cfg.log.format, snap.cfg.log.dontlognull);
                let make = move |driver: DriverKind| {
                    let w = Rc::new(Worker::new(i, shared, snap, states, rx, log, driver, ctl));
                    worker::run(w, listeners, grace)
                };
                run_worker(i, choice, report, make);
            })
            .map_err(EngineError::Thread)?;
        threads.push(t);
    }
    drop(report_tx);
    let mut driver = None;
    for _ in 0..cores {
        match report_rx.recv() {
            Ok(Ok(d)) => driver = Some(driver.unwrap_or(d)),
            Ok(Err(e)) => {
                shared.stop.store(true, Ordering::Relaxed);
                for t in threads {
                    let _ = t.join();
                }
                return Err(e);
            }
            Err(_) => break,
        }
    }
    let driver = driver.unwrap_or(DriverKind::Epoll);
    let _ = shared.driver.set(driver);
    let stop_all = |threads: Vec<JoinHandle<()>>| {
        shared.stop.store(true, Ordering::Relaxed);
        for t in threads {
            let _ = t.join();
        }
    };
    let (admin, admin_listener) = match &snap.cfg.global.admin_socket {
        Some(p) => match crate::admin::bind(p) {
            Ok((a, l)) => (Some(a), Some(l)),
            Err(err) => {
                stop_all(threads);
                return Err(EngineError::Admin {
                    path: p.clone(),
                    err,
                });
            }
        },
        None => (None, None),
    };
    let (stats_addr, stats_listener) = match snap.cfg.global.stats {
        Some(a) => match crate::stats::bind(a) {
            Ok((l, real)) => (Some(real), Some(l)),
            Err(err) => {
                stop_all(threads);
                return Err(EngineError::Bind { addr: a, err });
            }
        },
        None => (None, None),
    };
    let endpoints = crate::control::Endpoints {
        admin: admin_listener,
        stats: stats_listener,
    };
    let control = match Control::start(
        snap.clone(),
        shared.clone(),
        senders,
        (ctl_tx.clone(), ctl_rx),
        endpoints,
    ) {
        Ok(c) => c,
        Err(e) => {
            stop_all(threads);
            return Err(EngineError::Thread(e));
        }
    };
    tracing::info!(cores, driver = driver.as_str(), "engine running");
    drop(states);
    Ok(Running {
        shared,
        threads,
        addrs,
        current: Mutex::new(snap),
        generation: AtomicU64::new(0),
        driver,
        control,
        cores_tx,
        _admin: admin,
        stats_addr,
    })
}

/// A warning when there are more workers than cores: which ones share a core.
pub fn oversubscribed(workers: usize, cores: usize, pinned: bool) -> Option<String> {
    if workers <= cores || cores == 0 {
        return None;
    }
    let shares: Vec<String> = (0..cores)
        .map(|c| {
            let ws: Vec<String> = (c..workers).step_by(cores).map(|w| w.to_string()).collect();
            format!("core {c}: workers {}", ws.join(", "))
        })
        .collect();
    Some(format!(
        "{workers} worker cores on a host with {cores}: workers share cores{} ({}); \
         use --cores {cores} or fewer",
        if pinned {
            ""
        } else {
            " (unpinned, as the scheduler places them)"
        },
        shares.join("; ")
    ))
}

const RING_ENTRIES: u32 = 4096;

/// Builds the core's runtime with the driver asked for and runs the worker on it.
fn run_worker<F, Fut>(
    core: usize,
    choice: DriverChoice,
    report: std::sync::mpsc::Sender<Result<DriverKind, EngineError>>,
    make: F,
) where
    F: FnOnce(DriverKind) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    use monoio::{IoUringDriver, LegacyDriver, RuntimeBuilder};
    if choice != DriverChoice::Epoll && std::env::var_os("MONOIO_FORCE_LEGACY_DRIVER").is_none() {
        // The fastest ring setup measured here, then a plain ring.
        let mut fast = io_uring::IoUring::builder();
        fast.setup_single_issuer().setup_defer_taskrun();
        let attempts = [
            ("single_issuer+defer_taskrun", fast),
            ("default", io_uring::IoUring::builder()),
        ];
        let mut last_err = None;
        for (name, urb) in attempts {
            match RuntimeBuilder::<IoUringDriver>::new()
                .with_entries(RING_ENTRIES)
                .uring_builder(urb)
                .enable_timer()
                .build()
            {
                Ok(mut rt) => {
                    tracing::debug!(core, setup = name, "io_uring ring built");
                    let _ = report.send(Ok(DriverKind::IoUring));
                    rt.block_on(make(DriverKind::IoUring));
                    return;
                }
                Err(e) => {
                    tracing::debug!(core, setup = name, "io_uring refused: {e}");
                    last_err = Some(e);
                }
            }
        }
        if choice == DriverChoice::Uring {
            let e = last_err.unwrap_or_else(|| std::io::Error::other("io_uring unavailable"));
            let _ = report.send(Err(EngineError::UringRefused(e)));
            return;
        }
        if core == 0 {
            tracing::warn!("io_uring refused by the kernel or a sandbox: falling back to epoll");
        }
    }
    match RuntimeBuilder::<LegacyDriver>::new().enable_timer().build() {
        Ok(mut rt) => {
            let _ = report.send(Ok(DriverKind::Epoll));
            rt.block_on(make(DriverKind::Epoll));
        }
        Err(e) => {
            let _ = report.send(Err(EngineError::Driver(e)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn more_workers_than_cores_is_said_with_the_sharing() {
        assert_eq!(oversubscribed(2, 2, true), None);
        let w = oversubscribed(8, 2, true).unwrap();
        assert!(w.contains("8 worker cores on a host with 2"), "{w}");
        assert!(w.contains("core 0: workers 0, 2, 4, 6"), "{w}");
        assert!(w.contains("core 1: workers 1, 3, 5, 7"), "{w}");
    }
}
