//! Starting, reloading and stopping the engine. [`start`] binds one SO_REUSEPORT
//! listener per core and bind address (port 0 resolved once, then shared), spawns the
//! named worker threads, each pinned to its core with its own monoio runtime (io_uring
//! with SINGLE_ISSUER and DEFER_TASKRUN, falling back to a plain ring, then to epoll
//! under `auto`), and the health-check thread, and waits until every core reports its
//! driver. Before that, [`fit_fd_limit`] raises RLIMIT_NOFILE to fit `maxconn`, or
//! lowers the maxconn in force to what the limit has room for (and says so).
//!
//! Its parts: [`start`](start()) (the start), `reload` (a new configuration applied
//! without a restart: binds added and removed, servers kept), `takeover` (a new process
//! receiving the listening sockets), `listen`, `fdlimit`, `driver`, [`notify`]
//! (systemd) and [`preflight`] (does this host hold the configuration?).

mod driver;
mod fdlimit;
mod listen;
pub mod notify;
pub mod preflight;
mod reload;
mod start;
pub mod takeover;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

pub use driver::oversubscribed;
pub use fdlimit::{fit_fd_limit, FdRoom};
pub use start::{start, start_with};

use crate::control::Control;
use crate::shared::{DriverKind, Shared};
use crate::snapshot::{Snapshot, States};
use crate::EngineError;
use reload::Inner;

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
    /// The file to read again on the admin socket's `reload` (and SIGHUP), with `--force`.
    pub reload_from: Option<(PathBuf, bool)>,
    /// How to start a successor for the admin socket's `upgrade` (`--takeover` is added).
    pub successor: Option<Successor>,
}

/// The command that starts this engine again (its binary, as the path it was started
/// from: a new binary installed there is the one started).
#[derive(Debug, Clone)]
pub struct Successor {
    pub exe: PathBuf,
    pub args: Vec<std::ffi::OsString>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            cores: available_cores(),
            driver: DriverChoice::Auto,
            pin: true,
            reload_from: None,
            successor: None,
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
    inner: Arc<Inner>,
    threads: Vec<JoinHandle<()>>,
    driver: DriverKind,
    control: Control,
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

    /// Whether a stop was asked (a signal, or the admin socket's takeover).
    pub fn stopping(&self) -> bool {
        self.0.stop.load(Ordering::Relaxed)
    }
}

impl Running {
    /// The bound addresses of a frontend (port 0 resolved).
    pub fn frontend_addrs(&self, name: &str) -> Vec<SocketAddr> {
        self.inner.frontend_addrs(name)
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
        self.inner.shared.cores
    }

    pub fn uptime(&self) -> Duration {
        self.inner.shared.started.elapsed()
    }

    /// Client connections open now, all cores together.
    pub fn connections(&self) -> usize {
        self.inner.shared.conns.load(Ordering::Relaxed)
    }

    pub fn stop_handle(&self) -> StopHandle {
        StopHandle(self.inner.shared.clone())
    }

    /// The snapshot the cores run now.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.inner.snapshot()
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

    /// Applies a new configuration without a restart: binds added and removed, servers
    /// whose backend, name and address are unchanged kept with their state (see
    /// `reload`). Refused as a whole, the running configuration untouched, when
    /// anything of it cannot be applied.
    pub fn reload(&self, cfg: config::Config) -> Result<(), EngineError> {
        self.inner.reload(cfg)
    }

    /// Reads the configuration file again (`reload_from`) and applies it: SIGHUP and the
    /// admin socket's `reload`. `Err` holds every reason it was refused.
    pub fn reload_file(&self) -> Result<(), String> {
        self.inner.reload_file()
    }

    /// Reopens the access log file (logrotate moved it: SIGUSR1) and hands it to every
    /// core, which writes what it has buffered to the old one first.
    pub fn reopen_log(&self) -> Result<(), EngineError> {
        self.inner.reopen_log()
    }

    /// Graceful stop: stop accepting, finish in-flight requests, close idle connections,
    /// join the cores.
    pub fn stop(self) {
        notify::notify(notify::State::Stopping);
        self.stop_handed_over();
    }

    /// The graceful stop of an engine a new one took over from: as [`Running::stop`],
    /// without telling systemd `STOPPING=1` (the unit's main process is the new one now,
    /// and it goes on serving).
    pub fn stop_handed_over(self) {
        self.inner.shared.stop.store(true, Ordering::Relaxed);
        self.wait();
    }

    /// Waits until the cores have stopped (after a [`StopHandle::stop`]).
    pub fn wait(mut self) {
        self.inner.drop_listeners();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        self.control.stop();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            self.inner.shared.stop.store(true, Ordering::Relaxed);
            for t in self.threads.drain(..) {
                let _ = t.join();
            }
        }
        self.control.stop();
    }
}
