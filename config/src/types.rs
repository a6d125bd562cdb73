//! Validated configuration: what the engine receives. Every value here has already been
//! checked; nothing in this module can fail.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The whole validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file it came from (`<inline>` for a string without a file).
    pub source: PathBuf,
    pub global: Global,
    pub limits: Limits,
    pub log: Log,
    pub frontends: Vec<Frontend>,
    pub backends: Vec<Backend>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Global {
    /// Client connections held at once, all cores together. Default 20000.
    pub maxconn: u32,
    pub admin_socket: Option<PathBuf>,
    pub stats: Option<SocketAddr>,
    pub user: Option<String>,
    pub group: Option<String>,
}

/// `[limits]`: an addition to the spec. Every limit a client or a server controls.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Whole request or response head (request line / status line and headers), bytes.
    /// Past it: 431 (request) or 502 (response). Default 16384.
    pub max_head_bytes: usize,
    /// Request target length, bytes. Past it: 414. Default 8192.
    pub max_target_bytes: usize,
    /// Header count in one head. Past it: 431 / 502. Default 100.
    pub max_headers: usize,
    /// Request body, bytes; 0 means no limit. Past it: 413. Default 1 GiB.
    pub max_body_bytes: u64,
    /// Idle pooled server connections kept per core and per server; 0 disables pooling.
    /// Default: the global `maxconn`, which no core's requests in flight to one server can
    /// pass, so a peak never closes a connection only to reconnect it for the next request;
    /// the ones a peak leaves unused close after `pool_idle_timeout`.
    pub pool_max_idle_per_server: usize,
    /// How long an idle pooled server connection is kept. Default 30s.
    pub pool_idle_timeout: Duration,
    /// Request headers whose names hold an underscore are not forwarded (nginx's and
    /// Apache's rule): PHP sees `X_Forwarded_Proto` as `HTTP_X_FORWARDED_PROTO`, the
    /// same as the header the engine sets. Default true. Whatever this says, a name that
    /// differs from a header the engine sets only by `_` for `-` is never forwarded.
    pub drop_underscore_headers: bool,
    /// HTTP/2: streams open at once on one connection (SETTINGS_MAX_CONCURRENT_STREAMS).
    /// Default 100.
    pub h2_max_concurrent_streams: u32,
    /// HTTP/2: the largest header list a client may send, bytes, as RFC 9113 counts it
    /// (SETTINGS_MAX_HEADER_LIST_SIZE). Default 65536.
    pub h2_max_header_list_size: u32,
    /// HTTP/2: streams a client may reset per second on one connection (rapid reset);
    /// past it the connection ends with GOAWAY ENHANCE_YOUR_CALM. Default 100.
    pub h2_max_resets_per_second: u32,
    /// HTTP/2: SETTINGS, PING, PRIORITY and empty DATA frames a client may send per
    /// second on one connection; past it GOAWAY ENHANCE_YOUR_CALM. Default 100.
    pub h2_max_control_frames_per_second: u32,
    /// HTTP/2: CONTINUATION frames in one header block; past it GOAWAY
    /// ENHANCE_YOUR_CALM. Default 16.
    pub h2_max_continuation_frames: u32,
    /// HTTP/2: a stream that makes no progress for this long (a flow-control window that
    /// never opens, a body that stops coming) is reset. Default 30s.
    pub h2_stream_idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head_bytes: 16384,
            max_target_bytes: 8192,
            max_headers: 100,
            max_body_bytes: 1 << 30,
            // the default maxconn's; `validate` sets the configured maxconn's
            pool_max_idle_per_server: 20000,
            pool_idle_timeout: Duration::from_secs(30),
            drop_underscore_headers: true,
            h2_max_concurrent_streams: 100,
            h2_max_header_list_size: 65536,
            h2_max_resets_per_second: 100,
            h2_max_control_frames_per_second: 100,
            h2_max_continuation_frames: 16,
            h2_stream_idle_timeout: Duration::from_secs(30),
        }
    }
}

/// The `timeout_*` and `retries` fields: `[defaults]`, overridden per frontend or backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    pub client: Duration,
    pub server: Duration,
    pub http_request: Duration,
    pub keep_alive: Duration,
    pub queue: Duration,
    pub retries: u32,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(5),
            client: Duration::from_secs(50),
            server: Duration::from_secs(50),
            http_request: Duration::from_secs(10),
            keep_alive: Duration::from_secs(10),
            queue: Duration::from_secs(30),
            retries: 3,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Httplog,
    Json,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogTarget {
    Stdout,
    Syslog,
    File(PathBuf),
    Off,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Log {
    pub access: LogTarget,
    pub format: LogFormat,
    pub dontlognull: bool,
}

impl Default for Log {
    fn default() -> Self {
        Log {
            access: LogTarget::Stdout,
            format: LogFormat::Httplog,
            dontlognull: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Frontend {
    pub name: String,
    /// At least one address.
    pub bind: Vec<SocketAddr>,
    /// Index into `Config::backends`; `None` only when every request is redirected.
    pub backend: Option<usize>,
    pub redirect_https: Option<RedirectHttps>,
    pub tls: Option<Tls>,
    /// Headers set on every request forwarded from this frontend, in file order; each
    /// replaces any header of the same name the client sent.
    pub set_headers: Vec<(String, String)>,
    /// X-Forwarded-For: the client's address, replacing any sent. Default true.
    pub forwarded_for: bool,
    pub timeouts: Timeouts,
    /// The protocols offered in the TLS handshake (ALPN), in order of preference: `h2`
    /// and/or `http/1.1`. Default both, h2 first; `["http/1.1"]` turns HTTP/2 off.
    pub alpn: Vec<Alpn>,
    /// Plain-text HTTP/2 with prior knowledge (h2c) on this frontend (without TLS): a
    /// connection that opens with the HTTP/2 preface is served as HTTP/2. Default false.
    pub h2c: bool,
}

/// An ALPN protocol the engine speaks to clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alpn {
    H2,
    Http11,
}

impl Alpn {
    pub fn as_str(self) -> &'static str {
        match self {
            Alpn::H2 => "h2",
            Alpn::Http11 => "http/1.1",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedirectHttps {
    /// 301, 302, 303, 307 or 308.
    pub code: u16,
    /// Requests whose path starts with one of these go to the backend.
    pub except_prefixes: Vec<String>,
    /// The port in the Location (our addition). Default none: the Location names the
    /// host alone (port 443); the Host's own port is never kept.
    pub port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Tls {
    /// At least one; the first is the default for clients without (matching) SNI.
    pub certs: Vec<CertSource>,
    /// A handshake not finished in this time is dropped. Default 10s.
    pub handshake_timeout: Duration,
    /// Session tickets and the session cache (our addition). Default true; false makes
    /// every handshake a full one (HAProxy's `no-tls-tickets` with no cache).
    pub session_resumption: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertSource {
    /// One PEM file holding the chain and the key (HAProxy's `crt`).
    Combined(PathBuf),
    /// A PEM chain and a PEM key in two files.
    Separate { cert: PathBuf, key: PathBuf },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    RoundRobin,
    LeastConn,
}

/// A file read at load time (errorfile, waiting room page).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedFile {
    pub path: PathBuf,
    pub bytes: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Backend {
    pub name: String,
    pub balance: Balance,
    /// A complete raw HTTP response, sent as it is.
    pub errorfile_503: Option<LoadedFile>,
    pub cookie: Option<Cookie>,
    /// The application's own session cookie (default `MoodleSession`).
    pub app_cookie: String,
    /// Requests waiting in this backend past which new ones get the waiting room.
    pub max_queue: Option<u32>,
    /// An HTML page; `None` means the built-in page.
    pub waiting_room: Option<LoadedFile>,
    pub check: Option<Check>,
    /// Roundrobin only (leastconn does it unasked): a server whose recent median response
    /// time is above this, and well above the other servers', gets fewer new clients.
    /// Default none.
    pub slow_response: Option<Duration>,
    /// Panic threshold, percent (1 to 100): while fewer than that share of the non-backup
    /// servers are UP, every server that accepts connections takes new clients, DOWN or
    /// not. Default none (off).
    pub panic_below: Option<u32>,
    /// At least one.
    pub servers: Vec<Server>,
    pub timeouts: Timeouts,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CookieMode {
    Insert,
    Prefix,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    Strict,
    Lax,
    None,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cookie {
    pub name: String,
    pub mode: CookieMode,
    pub indirect: bool,
    pub nocache: bool,
    pub httponly: bool,
    pub secure: bool,
    pub samesite: Option<SameSite>,
    pub domain: Option<String>,
    pub maxidle: Option<Duration>,
    pub maxlife: Option<Duration>,
    /// Secret for the HMAC that signs the cookie value.
    pub key: Option<String>,
}

/// An inclusive range of status codes, `"200"` or `"200-399"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusRange {
    pub lo: u16,
    pub hi: u16,
}

impl StatusRange {
    pub fn contains(&self, status: u16) -> bool {
        self.lo <= status && status <= self.hi
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub method: String,
    pub uri: String,
    pub host: Option<String>,
    pub expect_status: StatusRange,
    pub expect_string: Option<String>,
    pub interval: Duration,
    pub rise: u32,
    pub fall: u32,
    pub timeout: Duration,
    /// Passive observation (our addition): this many connection failures or 5xx
    /// responses seen by the cores within 10 s take the server DOWN before its next
    /// probe. 0 turns it off. Default 10.
    pub observe_errors: u32,
    /// A server that comes back UP ramps its weight from 1 to its own over this time.
    /// Default none.
    pub slowstart: Option<Duration>,
    /// A check that fails by timing out does not count towards `fall` while the cores
    /// have relayed successful responses (status below 500) from the server within the
    /// last `interval x fall` and no connection to it failed in that time: a node slow
    /// under load is not a dead one. Refusals, resets, a wrong status or a missing
    /// `expect_string` still count at once. Default true.
    pub live_traffic: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    pub name: String,
    pub address: SocketAddr,
    /// The persistence cookie value; defaults to the server's name.
    pub cookie: String,
    /// 1..=256.
    pub weight: u32,
    /// 0: no limit.
    pub maxconn: u32,
    pub backup: bool,
    pub check: bool,
}
