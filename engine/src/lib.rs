//! engine: a thread-per-core HTTP/1.1 load balancer for Moodle on io_uring.
//!
//! Map of the crate, from the top down (each layer uses only the ones below it):
//! - [`runtime`]: [`start`] binds every listener (SO_REUSEPORT, one per core and
//!   address), spawns the pinned worker threads, each with its own monoio runtime, and
//!   the health-check thread, and returns a [`Running`] handle (addresses, reload,
//!   graceful stop). It hands each core the request path ([`core::Serve`]).
//! - [`proxy`]: the request path, one file per phase: a client connection's life, read
//!   head, route, the exchange with its retries, the heads rewritten, the upstream
//!   (selection, slots, queue, connect), the relay of bodies, the outcome and its log.
//! - [`control`]: the one health-check thread: probes, live traffic, admin commands and
//!   socket, the stats endpoint; publishes [`snapshot::States`] to the cores.
//! - [`core`]: one core's state and life: buffers, pools, queue, counters, the idle set,
//!   the park of idle connections, the sweep and the accept loops. It knows no HTTP.
//! - [`shared`]: what cores, the health-check thread and the runtime share: the
//!   atomics, the tick, the messages between them, the stats data.
//! - [`snapshot`] (and [`ids`]): the immutable configuration and server states that
//!   reach the cores, and the typed ids that index them.
//! - [`http`]: sans-io HTTP/1.x heads, the chunked coding, normalised paths.
//! - [`balance`]: server selection, a pure function of a state snapshot.
//! - [`persist`]: persistence cookies, sans-io.
//! - [`log`]: the access log, buffered per core.
//! - [`tls`]: rustls server configuration and SNI certificate selection.
//! - [`cli`]: the command line (`main` only calls it); [`demo`]: `engine demo`.

pub mod balance;
pub mod cli;
pub mod control;
pub mod core;
pub mod demo;
pub mod http;
pub mod ids;
pub mod log;
pub mod persist;
pub mod proxy;
pub mod runtime;
pub mod shared;
pub mod snapshot;
pub mod tls;

pub use config;
pub use runtime::{start, DriverChoice, Options, Running};
pub use shared::DriverKind;

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
