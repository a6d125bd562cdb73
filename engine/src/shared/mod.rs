//! What the cores, the health-check thread and the runtime share without importing each
//! other: the atomics all cores touch ([`Shared`]), the tick of every core's sweep, the
//! messages to the health-check thread ([`msg`]) and the stats it answers with
//! ([`view`]).

pub mod handover;
pub mod msg;
pub mod view;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::time::{Duration, Instant};

/// The sweep period: keep-alive expiry and buffer release happen on these ticks.
pub const TICK: Duration = Duration::from_millis(100);
/// Ticks an idle connection keeps its read buffer before giving it back.
pub const HOLD_TICKS: u64 = 2;

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
