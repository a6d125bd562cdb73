//! Starting and stopping the cores. [`start`] binds one SO_REUSEPORT listener per core
//! and bind address (port 0 resolved once, then shared), spawns the named worker threads,
//! each pinned to its core with its own monoio runtime (io_uring with SINGLE_ISSUER and
//! DEFER_TASKRUN, falling back to a plain ring, then to epoll under `auto`), and waits
//! until every core reports its driver. Before that, [`fit_fd_limit`] raises
//! RLIMIT_NOFILE to fit `maxconn`, or lowers the maxconn in force to what the limit has
//! room for (and says so).

mod driver;
mod fdlimit;
mod listen;

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

pub use driver::oversubscribed;
pub use fdlimit::{fit_fd_limit, FdRoom};

use crate::control::{Control, ControlMsg};
use crate::core::{Worker, WorkerParts};
use crate::ids::FrontendId;
use crate::log::{AccessLog, Sink};
use crate::shared::{DriverKind, Shared};
use crate::snapshot::{Snapshot, States, Update};
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
    _admin: Option<crate::control::admin::AdminSocket>,
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

/// Starts the engine on `opts.cores` cores. Returns when every core runs.
pub fn start(cfg: config::Config, opts: Options) -> Result<Running, EngineError> {
    let cores = opts.cores.max(1);
    let snap = Arc::new(Snapshot::build(cfg, 0)?);
    let states = Arc::new(States::initial(&snap));
    let bound = listen::bind_frontends(&snap, cores)?;
    let sink = Sink::open(&snap.cfg.log.access).map_err(EngineError::Log)?;
    let shared = make_shared(&snap, cores);
    if let Some(w) = oversubscribed(cores, available_cores(), opts.pin) {
        tracing::warn!("{w}");
    }
    let (ctl_tx, ctl_rx) = crossbeam_channel::unbounded::<ControlMsg>();
    let spawn = CoreSpawn {
        shared: &shared,
        snap: &snap,
        states: &states,
        sink: &sink,
        ctl: &ctl_tx,
        opts: &opts,
    };
    let cores_up = spawn.all(bound.per_core)?;
    let (threads, cores_tx, driver) = (cores_up.threads, cores_up.tx, cores_up.driver);
    let _ = shared.driver.set(driver);
    let stop_all = |threads: Vec<JoinHandle<()>>| {
        shared.stop.store(true, Ordering::Relaxed);
        for t in threads {
            let _ = t.join();
        }
    };
    let ends = match Endpoints::bind(&snap.cfg.global) {
        Ok(e) => e,
        Err(e) => {
            stop_all(threads);
            return Err(e);
        }
    };
    let control = Control::start(
        snap.clone(),
        shared.clone(),
        cores_tx.clone(),
        (ctl_tx, ctl_rx),
        ends.listeners,
    );
    let control = match control {
        Ok(c) => c,
        Err(e) => {
            stop_all(threads);
            return Err(EngineError::Thread(e));
        }
    };
    tracing::info!(cores, driver = driver.as_str(), "engine running");
    Ok(Running {
        shared,
        threads,
        addrs: bound.addrs,
        current: Mutex::new(snap),
        generation: AtomicU64::new(0),
        driver,
        control,
        cores_tx,
        _admin: ends.admin,
        stats_addr: ends.stats_addr,
    })
}

/// The atomics every core shares, with maxconn fitted to the descriptor limit.
fn make_shared(snap: &Snapshot, cores: usize) -> Arc<Shared> {
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
    Arc::new(Shared {
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
    })
}

/// How long a stopping core waits for its connections to finish.
fn grace(snap: &Snapshot) -> Duration {
    snap.cfg
        .frontends
        .iter()
        .map(|f| f.timeouts.client)
        .chain(snap.cfg.backends.iter().map(|b| b.timeouts.server))
        .max()
        .unwrap_or(Duration::from_secs(30))
        .min(Duration::from_secs(60))
}

/// What starting the cores needs.
struct CoreSpawn<'a> {
    shared: &'a Arc<Shared>,
    snap: &'a Arc<Snapshot>,
    states: &'a Arc<States>,
    sink: &'a Sink,
    ctl: &'a Sender<ControlMsg>,
    opts: &'a Options,
}

/// The cores, running.
struct CoresUp {
    threads: Vec<JoinHandle<()>>,
    tx: Vec<Sender<Update>>,
    driver: DriverKind,
}

/// The request path, as each core gets it.
const SERVE: crate::core::Serve = crate::core::Serve {
    accepted: crate::proxy::spawn_accepted,
    resume: crate::proxy::resume,
    expire: crate::proxy::expire_parked,
};

impl CoreSpawn<'_> {
    /// Starts a thread per core with its listeners; returns once each reported its
    /// driver (or the first refusal).
    fn all(
        &self,
        per_core: Vec<Vec<(FrontendId, std::net::TcpListener)>>,
    ) -> Result<CoresUp, EngineError> {
        let core_ids = if self.opts.pin {
            core_affinity::get_core_ids().unwrap_or_default()
        } else {
            Vec::new()
        };
        let (report_tx, report_rx) = std::sync::mpsc::channel::<Result<DriverKind, EngineError>>();
        let mut up = CoresUp {
            threads: Vec::new(),
            tx: Vec::new(),
            driver: DriverKind::Epoll,
        };
        for (i, listeners) in per_core.into_iter().enumerate() {
            let pin = core_ids.get(i % core_ids.len().max(1)).copied();
            let (tx, rx) = crossbeam_channel::unbounded();
            up.tx.push(tx);
            let t = self.one(i, pin, rx, listeners, report_tx.clone())?;
            up.threads.push(t);
        }
        drop(report_tx);
        let mut driver = None;
        for _ in 0..up.threads.len() {
            match report_rx.recv() {
                Ok(Ok(d)) => driver = Some(driver.unwrap_or(d)),
                Ok(Err(e)) => {
                    self.shared.stop.store(true, Ordering::Relaxed);
                    for t in up.threads {
                        let _ = t.join();
                    }
                    return Err(e);
                }
                Err(_) => break,
            }
        }
        up.driver = driver.unwrap_or(DriverKind::Epoll);
        Ok(up)
    }

    /// One core's thread: pinned, its runtime built, its worker run.
    fn one(
        &self,
        i: usize,
        pin: Option<core_affinity::CoreId>,
        updates: crossbeam_channel::Receiver<Update>,
        listeners: Vec<(FrontendId, std::net::TcpListener)>,
        report: std::sync::mpsc::Sender<Result<DriverKind, EngineError>>,
    ) -> Result<JoinHandle<()>, EngineError> {
        let (shared, snap, states) = (self.shared.clone(), self.snap.clone(), self.states.clone());
        let sink = self.sink.try_clone().map_err(EngineError::Log)?;
        let (choice, ctl, grace) = (self.opts.driver, self.ctl.clone(), grace(self.snap));
        std::thread::Builder::new()
            .name(format!("engine-worker-{i}"))
            .spawn(move || {
                if let Some(c) = pin {
                    if !core_affinity::set_for_current(c) {
                        tracing::warn!(core = i, "could not pin the worker to its core");
                    }
                }
                let log = AccessLog::new(sink, snap.cfg.log.format, snap.cfg.log.dontlognull);
                let make = move |driver: DriverKind| {
                    let w = Rc::new(Worker::new(WorkerParts {
                        id: i,
                        shared,
                        snap,
                        states,
                        updates,
                        log,
                        driver,
                        control: ctl,
                        serve: SERVE,
                    }));
                    crate::core::sweep::run(w, listeners, grace)
                };
                driver::run_worker(i, choice, report, make);
            })
            .map_err(EngineError::Thread)
    }
}

/// The admin socket and the stats endpoint, bound.
struct Endpoints {
    admin: Option<crate::control::admin::AdminSocket>,
    stats_addr: Option<SocketAddr>,
    listeners: crate::control::Endpoints,
}

impl Endpoints {
    fn bind(g: &config::Global) -> Result<Endpoints, EngineError> {
        let mut e = Endpoints {
            admin: None,
            stats_addr: None,
            listeners: crate::control::Endpoints::default(),
        };
        if let Some(p) = &g.admin_socket {
            let (a, l) = crate::control::admin::bind(p).map_err(|err| EngineError::Admin {
                path: p.clone(),
                err,
            })?;
            e.admin = Some(a);
            e.listeners.admin = Some(l);
        }
        if let Some(a) = g.stats {
            let (l, real) =
                crate::control::stats::bind(a).map_err(|err| EngineError::Bind { addr: a, err })?;
            e.stats_addr = Some(real);
            e.listeners.stats = Some(l);
        }
        Ok(e)
    }
}
