//! Messages from the cores (and the admin socket, the runtime) to the health-check thread.

use std::sync::Arc;

use crossbeam_channel::Sender;
use hdrhistogram::Histogram;

use crate::ids::ServerId;
use crate::shared::view::StatsView;
use crate::snapshot::Snapshot;

/// What reaches the health-check thread.
pub enum ControlMsg {
    /// An admin command line and where to send the answer.
    Admin(String, Sender<String>),
    /// A core's counters (sent about once a second).
    Report(Box<CoreReport>),
    /// A core saw a server fail.
    Passive {
        generation: u64,
        server: ServerId,
        kind: PassiveKind,
    },
    /// A reloaded configuration (the cores get it from here, with the listeners it adds
    /// and removes).
    Config(Box<Reloaded>),
    /// The data of the stats page.
    Stats(Sender<Box<StatsView>>),
    Stop,
}

/// A reload, as the cores get it: the new snapshot (with the server states the
/// health-check thread keeps), then the addresses to stop accepting on, then each core's
/// new listeners (by frontend name), in that order on each core's channel.
pub struct Reloaded {
    pub snap: Arc<Snapshot>,
    pub unlisten: Vec<std::net::SocketAddr>,
    /// One list per core.
    pub listen: Vec<Vec<(String, std::net::TcpListener)>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PassiveKind {
    ConnectFailed,
    Status5xx,
}

/// A core's counters for one configuration generation.
#[derive(Clone)]
pub struct CoreReport {
    pub core: usize,
    pub generation: u64,
    pub conns: usize,
    pub servers: Vec<ServerReport>,
    /// Requests waiting per backend on this core.
    pub queued: Vec<u32>,
    pub queue_wait: Vec<Histogram<u64>>,
    /// Failed TLS handshakes per frontend.
    pub tls_failures: Vec<u64>,
    /// HTTP/2 connections (open, since start) and streams since start.
    pub h2: H2Counts,
}

/// HTTP/2 on one core: connections open now, and connections and streams since start.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct H2Counts {
    pub open: u64,
    pub connections: u64,
    pub streams: u64,
}

#[derive(Clone)]
pub struct ServerReport {
    pub active: u32,
    pub total: u64,
    pub failures: u64,
    pub responses_5xx: u64,
    /// Responses below 500.
    pub ok_responses: u64,
    pub queued: u32,
    /// Response times in microseconds.
    pub hist: Histogram<u64>,
}

pub fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 2)
        .unwrap_or_else(|_| Histogram::new(2).expect("histogram"))
}
