//! The start: the listeners bound (or taken over), the cores spawned and running, the
//! admin socket and stats endpoint bound, the health-check thread started.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use super::reload::Inner;
use super::takeover::Inherited;
use super::{available_cores, driver, fit_fd_limit, listen, notify, oversubscribed};
use super::{Options, Running};
use crate::control::{Control, ControlMsg};
use crate::core::{Worker, WorkerParts};
use crate::log::{AccessLog, Sink};
use crate::shared::handover::ListenerInfo;
use crate::shared::{DriverKind, Shared};
use crate::snapshot::{Snapshot, States, Update};
use crate::EngineError;

/// Starts the engine on `opts.cores` cores. Returns when every core runs.
pub fn start(cfg: config::Config, opts: Options) -> Result<Running, EngineError> {
    start_with(cfg, opts, None)
}

/// Starts the engine, on the sockets and with the server states a running engine handed
/// over when `inherited` is given (a takeover: see [`super::takeover`]).
pub fn start_with(
    cfg: config::Config,
    opts: Options,
    mut inherited: Option<&mut Inherited>,
) -> Result<Running, EngineError> {
    let cores = opts.cores.max(1);
    let taking_over = inherited.is_some();
    let snap = Arc::new(Snapshot::build(cfg, 0)?);
    let handed = inherited
        .as_ref()
        .map(|i| i.servers.clone())
        .unwrap_or_default();
    let states = Arc::new(super::takeover::initial_states(&snap, &handed));
    let bound = listen::bind_frontends(&snap, cores, inherited.as_deref_mut())?;
    if let Some(i) = inherited.as_deref() {
        for a in i.left() {
            tracing::warn!(addr = %a, "the engine taken over listens on {a}, which this configuration does not: it closes when that engine stops");
        }
    }
    let sink = Sink::open(&snap.cfg.log.access).map_err(EngineError::Log)?;
    let shared = make_shared(&snap, cores);
    if let Some(w) = oversubscribed(cores, available_cores(), opts.pin) {
        tracing::warn!("{w}");
    }
    preflight_warnings(&snap, cores);
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
    let inner = Arc::new(Inner::new(
        shared.clone(),
        snap.clone(),
        ctl_tx.clone(),
        cores_tx.clone(),
        bound.binds,
        opts.reload_from.clone(),
    ));
    let (ends, control) = match control(
        &snap,
        &shared,
        &inner,
        cores_tx,
        (ctl_tx, ctl_rx),
        inherited,
        opts.successor.clone(),
    ) {
        Ok(x) => x,
        Err(e) => {
            stop_all(threads);
            return Err(e);
        }
    };
    log_binds(&inner, ends.stats_addr);
    tracing::info!(cores, driver = driver.as_str(), "engine running");
    // A takeover's new process tells systemd once the old one is to stop
    // (`MAINPID=` with `READY=1`: see `cli::run`), not here.
    if !taking_over {
        notify::notify(notify::State::Ready);
    }
    Ok(Running {
        inner,
        threads,
        driver,
        control,
        _admin: ends.admin,
        stats_addr: ends.stats_addr,
    })
}

/// Where the engine listens, port 0 resolved: a line per bind (tests and operators read
/// the port from here; `show binds` says the same).
fn log_binds(inner: &Inner, stats: Option<std::net::SocketAddr>) {
    for (frontend, addr) in inner.bound() {
        tracing::info!(%frontend, %addr, "listening");
    }
    if let Some(addr) = stats {
        tracing::info!(%addr, "stats listening");
    }
}

/// The admin socket and stats endpoint bound, the health-check thread started.
fn control(
    snap: &Arc<Snapshot>,
    shared: &Arc<Shared>,
    inner: &Arc<Inner>,
    cores_tx: Vec<Sender<Update>>,
    ctl: (Sender<ControlMsg>, crossbeam_channel::Receiver<ControlMsg>),
    inherited: Option<&mut Inherited>,
    successor: Option<super::Successor>,
) -> Result<(Endpoints, Control), EngineError> {
    let mut ends = Endpoints::bind(&snap.cfg.global, inherited, inner)?;
    if let (Some(succ), Some(sock)) = (successor, &snap.cfg.global.admin_socket) {
        ends.listeners.upgrader = Some(upgrader(succ, sock.clone()));
    }
    let listeners = std::mem::take(&mut ends.listeners);
    let control = Control::start(snap.clone(), shared.clone(), cores_tx, ctl, listeners)
        .map_err(EngineError::Thread)?;
    Ok((ends, control))
}

/// The admin `upgrade`: starts `succ --takeover SOCK` (the binary at the path this one
/// was started from, so a new one installed there), once at a time. The successor is
/// this process's child, in its cgroup and with its NOTIFY_SOCKET: under systemd it
/// becomes the unit's main process (MAINPID) as this one drains.
fn upgrader(succ: super::Successor, sock: std::path::PathBuf) -> crate::control::Upgrader {
    let busy = Arc::new(AtomicBool::new(false));
    Arc::new(move || {
        if busy.swap(true, Ordering::AcqRel) {
            return Err("an upgrade is already under way".into());
        }
        let child = std::process::Command::new(&succ.exe)
            .args(&succ.args)
            .arg("--takeover")
            .arg(&sock)
            .stdin(std::process::Stdio::null())
            .spawn();
        match child {
            Ok(mut c) => {
                let pid = c.id();
                tracing::info!(pid, exe = %succ.exe.display(), "upgrade: a successor is starting");
                let busy = busy.clone();
                // Reaped here should it fail; it outlives this process otherwise.
                let _ = std::thread::Builder::new()
                    .name("engine-upgrade".into())
                    .spawn(move || {
                        if let Ok(st) = c.wait() {
                            if !st.success() {
                                tracing::error!(pid, "upgrade: the successor exited with {st}; this engine serves on");
                            }
                        }
                        busy.store(false, Ordering::Release);
                    });
                Ok(pid)
            }
            Err(e) => {
                busy.store(false, Ordering::Release);
                Err(format!("cannot start {}: {e}", succ.exe.display()))
            }
        }
    })
}

/// What the host preflight finds wrong, logged once at start.
fn preflight_warnings(snap: &Snapshot, cores: usize) {
    let host = super::preflight::Host::read();
    for f in super::preflight::check(&host, snap.cfg.global.maxconn as u64, cores) {
        if !f.ok {
            tracing::warn!("host preflight: {f}");
        }
    }
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
        per_core: Vec<Vec<(String, std::net::TcpListener)>>,
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
        listeners: Vec<(String, std::net::TcpListener)>,
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
    /// Binds them; in a takeover, the admin socket replaces the old engine's (same path)
    /// and the stats listener is the one handed over (same address).
    fn bind(
        g: &config::Global,
        mut inherited: Option<&mut Inherited>,
        inner: &Arc<Inner>,
    ) -> Result<Endpoints, EngineError> {
        let mut e = Endpoints {
            admin: None,
            stats_addr: None,
            listeners: crate::control::Endpoints::default(),
        };
        if let Some(a) = g.stats {
            let handed = inherited.as_deref_mut().and_then(|i| i.take_stats(a));
            let (l, real) = match handed {
                Some(l) => {
                    let real = l
                        .local_addr()
                        .map_err(|err| EngineError::Bind { addr: a, err })?;
                    l.set_nonblocking(true)
                        .map_err(|err| EngineError::Bind { addr: a, err })?;
                    (l, real)
                }
                None => crate::control::stats::bind(a)
                    .map_err(|err| EngineError::Bind { addr: a, err })?,
            };
            e.stats_addr = Some(real);
            e.listeners.stats = Some(l);
        }
        if let Some(p) = &g.admin_socket {
            let replace = inherited.as_deref().is_some_and(|i| same_file(&i.from, p));
            let (a, l) =
                crate::control::admin::bind(p, replace).map_err(|err| EngineError::Admin {
                    path: p.clone(),
                    err,
                })?;
            e.admin = Some(a);
            e.listeners.admin = Some(l);
        }
        e.listeners.handed = inherited.map(|i| i.servers.clone()).unwrap_or_default();
        let weak = Arc::downgrade(inner);
        e.listeners.binds = Some(Arc::new(move || {
            weak.upgrade().map(|i| i.bound()).unwrap_or_default()
        }));
        let binds = inner.binds.clone();
        e.listeners.listeners = Some(Arc::new(move || {
            let binds = binds
                .lock()
                .map_err(|_| "the binds are poisoned".to_string())?;
            let mut out = Vec::new();
            for b in binds.iter() {
                for l in &b.copies {
                    let fd = l
                        .try_clone()
                        .map_err(|e| format!("cannot copy a listener: {e}"))?;
                    let info = ListenerInfo {
                        frontend: b.frontend.clone(),
                        configured: b.configured,
                        real: b.real,
                    };
                    out.push((info, std::os::fd::OwnedFd::from(fd)));
                }
            }
            Ok(out)
        }));
        let weak = Arc::downgrade(inner);
        e.listeners.reloader = Some(Arc::new(move || match weak.upgrade() {
            Some(i) => i.reload_file(),
            None => Err("the engine is stopping".into()),
        }));
        Ok(e)
    }
}

/// Whether two paths name the same file (the admin socket taken over).
fn same_file(a: &std::path::Path, b: &std::path::Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}
