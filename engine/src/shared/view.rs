//! The stats page's data, as the health-check thread merges it from the cores' reports.

/// Everything the stats page shows.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StatsView {
    pub version: String,
    pub uptime_seconds: u64,
    pub cores: usize,
    pub driver: String,
    pub connections: usize,
    /// HTTP/2 to clients, all cores together.
    pub http2: Http2View,
    pub frontends: Vec<FrontendView>,
    pub backends: Vec<BackendView>,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Http2View {
    /// HTTP/2 connections open now.
    pub connections: u64,
    /// HTTP/2 connections since start.
    pub connections_total: u64,
    /// Streams (requests) since start.
    pub streams_total: u64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct FrontendView {
    pub name: String,
    pub tls: bool,
    pub tls_handshake_failures: u64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct BackendView {
    pub name: String,
    pub balance: String,
    pub queued: u64,
    pub queue_p50_ms: f64,
    pub queue_p99_ms: f64,
    /// Below `panic_below`: every server that accepts connections takes new clients.
    pub panic: bool,
    pub servers: Vec<ServerView>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ServerView {
    pub name: String,
    pub address: String,
    pub state: String,
    pub weight: u32,
    pub backup: bool,
    pub active: u64,
    pub queued: u64,
    pub total: u64,
    pub failures: u64,
    pub responses_5xx: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub check: Option<CheckView>,
    /// Check timeouts not counted because live traffic showed the server alive.
    pub checks_vetoed: u64,
    /// Slow (well above the others' response times): gets fewer new clients.
    pub slow: bool,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct CheckView {
    pub result: String,
    pub status: Option<u16>,
    pub seconds_ago: Option<f64>,
}
