//! engine: a thread-per-core HTTP/1.1 load balancer for Moodle on io_uring.
//!
//! Map of the crate:
//! - [`runtime`]: [`start`] binds every listener (SO_REUSEPORT, one per core and address),
//!   spawns the pinned worker threads, each with its own monoio runtime, and returns a
//!   [`Running`] handle (addresses, reload, graceful stop).
//! - [`worker`]: one core's state: pools, buffers, splice pipes, counters, the periodic
//!   sweep.
//! - [`proxy`]: the request path, by phases (read head, route, connect, send, relay, log).
//! - [`http`]: sans-io HTTP/1.x heads and chunked coding.
//! - [`balance`]: server selection, a pure function of a state snapshot.
//! - [`persist`]: cookie persistence, sans-io.
//! - [`snapshot`]: the immutable config and state snapshots that reach the cores.
//! - [`idle`]: buffer-less idle keep-alive waits, expired by the sweep.
//! - [`park`]: plain-TCP connections idle past their hold, out of any task, in the
//!   core's epoll set.
//! - [`log`]: the access log, buffered per core.
//! - [`control`]: the one health-check thread: probes, passive reports, admin commands,
//!   publishing [`snapshot::States`] to the cores, merging their counters.
//! - [`health`]: one HTTP probe and the rise/fall state machine.
//! - [`live`]: what the cores' traffic says of each server (check timeouts vetoed, slow
//!   servers shed, panic), for the health-check thread.
//! - [`admin`]: the admin socket (a Unix socket, one command per line).
//! - [`stats`]: the stats endpoint: HTML, /stats.json, /metrics.
//! - [`tls`]: rustls server configuration and SNI certificate selection.
//! - [`cli`]: the command line (`main` only calls it).
//! - [`demo`]: `engine demo`.

pub mod admin;
pub mod balance;
pub mod cli;
pub mod control;
pub mod demo;
pub mod health;
pub mod http;
pub mod idle;
pub mod live;
pub mod log;
pub mod park;
pub mod persist;
pub mod proxy;
pub mod runtime;
pub mod snapshot;
pub mod stats;
pub mod tls;
pub mod worker;

pub use config;
pub use runtime::{start, DriverChoice, Options, Running};
pub use worker::DriverKind;

/// Errors from starting or reloading the engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("frontend {0:?}: {1}")]
    Tls(String, tls::TlsError),
    #[error(
        "another process already listens on {0} (a second engine?): stop it first, or \
         replace it without a gap with `engine --takeover`"
    )]
    InUse(std::net::SocketAddr),
    #[error("cannot listen on {addr}: {err}")]
    Bind {
        addr: std::net::SocketAddr,
        err: std::io::Error,
    },
    #[error("io_uring was asked for but the kernel refused it: {0}")]
    UringRefused(std::io::Error),
    #[error("cannot start the I/O driver: {0}")]
    Driver(std::io::Error),
    #[error("cannot open the access log: {0}")]
    Log(std::io::Error),
    #[error("cannot start a worker thread: {0}")]
    Thread(std::io::Error),
    #[error("cannot open the admin socket {path}: {err}")]
    Admin {
        path: std::path::PathBuf,
        err: std::io::Error,
    },
    #[error("reload refused: {0}")]
    Reload(String),
}
