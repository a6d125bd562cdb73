//! Immutable snapshots that reach the cores: the configuration as the request path needs
//! it ([`Snapshot`], swapped by a reload) and the servers' states ([`States`], published
//! by the health-check thread and the admin socket). A core picks up the newest of each
//! between requests; nothing here is locked.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use config::{Balance, Config, Cookie};

use crate::balance::ServerState;
use crate::http::HeadLimits;
use crate::ids::{BackendId, FrontendId, ServerId};

/// A frontend, ready for the request path.
#[derive(Debug)]
pub struct FrontendRt {
    pub name: String,
    /// Removed by a reload: it accepts nothing more, and the connections it had finish
    /// under its last configuration (it keeps its place, so that their ids stay valid).
    pub retired: bool,
    pub backend: Option<BackendId>,
    pub cfg: config::Frontend,
    /// `set_headers` names lower-cased, for matching what the client sent.
    pub set_names_lc: Vec<Vec<u8>>,
    /// Pre-rendered `Name: value\r\n` lines of set_headers.
    pub set_lines: Vec<u8>,
    pub tls: Option<crate::tls::TlsServer>,
    /// `:port` for redirect Locations (empty for 443).
    pub redirect_port: String,
}

#[derive(Debug)]
pub struct BackendRt {
    pub name: String,
    pub balance: Balance,
    pub cookie: Option<Cookie>,
    pub app_cookie: String,
    /// Index of this backend's first server in [`Snapshot::servers`].
    pub first: usize,
    pub count: usize,
    pub errorfile_503: Option<Vec<u8>>,
    /// Passive observation threshold (0: off).
    pub observe_errors: u32,
    pub slowstart: Option<std::time::Duration>,
    /// Requests waiting for a server slot in this backend, all cores together.
    pub queued: Arc<AtomicU32>,
    /// The waiting-room response, rendered once.
    pub waiting_room: Vec<u8>,
    /// The persistence cookie's value codec (when `cookie` is set).
    pub codec: Option<crate::persist::Codec>,
    pub cfg: config::Backend,
}

#[derive(Debug)]
pub struct ServerRt {
    pub backend: BackendId,
    pub name: String,
    pub addr: SocketAddr,
    pub cookie: String,
    pub weight: u32,
    pub backup: bool,
    pub maxconn: u32,
    /// Health-checked (`server.check` and a `backend.check`).
    pub check_enabled: bool,
    /// `addr` rendered once, for a Host header on HTTP/1.0 requests without one.
    pub host_header: String,
    /// Requests in flight on this server, all cores together (per-server maxconn).
    pub inflight: Arc<AtomicU32>,
}

/// The frontends of `cfg` in the order `prev` had them (by name), the removed ones
/// retired in their place, the new ones after.
fn frontends_after(
    cfg: &Config,
    prev: Option<&Snapshot>,
) -> Result<Vec<FrontendRt>, crate::EngineError> {
    let mut out = Vec::new();
    if let Some(p) = prev {
        for old in &p.frontends {
            match cfg.frontends.iter().find(|f| f.name == old.name) {
                Some(f) => out.push(FrontendRt::build(f)?),
                None => {
                    let be_name = old.backend.map(|b| p.backend(b).name.as_str());
                    out.push(FrontendRt::retired(old, be_name, cfg));
                }
            }
        }
    }
    for f in &cfg.frontends {
        if !out.iter().any(|x| x.name == f.name) {
            out.push(FrontendRt::build(f)?);
        }
    }
    Ok(out)
}

impl ServerRt {
    fn build(s: &config::Server, b: &config::Backend, backend: BackendId) -> ServerRt {
        ServerRt {
            backend,
            name: s.name.clone(),
            addr: s.address,
            cookie: s.cookie.clone(),
            weight: s.weight,
            backup: s.backup,
            maxconn: s.maxconn,
            check_enabled: s.check && b.check.is_some(),
            host_header: s.address.to_string(),
            inflight: Arc::new(AtomicU32::new(0)),
        }
    }
}

impl FrontendRt {
    /// A frontend a reload removed: its last configuration (a connection accepted as its
    /// listener closed is still served, TLS included), its backend found again by name
    /// in the new configuration.
    fn retired(old: &FrontendRt, backend_name: Option<&str>, cfg: &Config) -> FrontendRt {
        let backend = backend_name.and_then(|n| cfg.backends.iter().position(|b| b.name == n));
        let mut c = old.cfg.clone();
        c.backend = backend;
        FrontendRt {
            name: old.name.clone(),
            retired: true,
            backend: backend.map(BackendId::at),
            cfg: c,
            set_names_lc: old.set_names_lc.clone(),
            set_lines: old.set_lines.clone(),
            tls: old.tls.clone(),
            redirect_port: old.redirect_port.clone(),
        }
    }

    fn build(f: &config::Frontend) -> Result<FrontendRt, crate::EngineError> {
        let redirect_port = match f.redirect_https.as_ref().and_then(|r| r.port) {
            Some(443) | None => String::new(),
            Some(p) => format!(":{p}"),
        };
        let mut set_lines = Vec::new();
        let mut set_names_lc = Vec::new();
        for (k, v) in &f.set_headers {
            set_names_lc.push(k.to_ascii_lowercase().into_bytes());
            set_lines.extend_from_slice(k.as_bytes());
            set_lines.extend_from_slice(b": ");
            set_lines.extend_from_slice(v.as_bytes());
            set_lines.extend_from_slice(b"\r\n");
        }
        let tls = match &f.tls {
            Some(t) => Some(
                crate::tls::TlsServer::load(t, &f.alpn)
                    .map_err(|e| crate::EngineError::Tls(f.name.clone(), e))?,
            ),
            None => None,
        };
        Ok(FrontendRt {
            name: f.name.clone(),
            retired: false,
            backend: f.backend.map(BackendId::at),
            cfg: f.clone(),
            set_names_lc,
            set_lines,
            tls,
            redirect_port,
        })
    }
}

impl BackendRt {
    /// A backend whose servers start at `first` in the snapshot's list.
    fn build(b: &config::Backend, first: usize) -> BackendRt {
        let cookies: Vec<String> = b.servers.iter().map(|s| s.cookie.clone()).collect();
        BackendRt {
            name: b.name.clone(),
            balance: b.balance,
            cookie: b.cookie.clone(),
            app_cookie: b.app_cookie.clone(),
            first,
            count: b.servers.len(),
            errorfile_503: b.errorfile_503.as_ref().map(|f| f.bytes.clone()),
            observe_errors: b.check.as_ref().map(|c| c.observe_errors).unwrap_or(0),
            slowstart: b.check.as_ref().and_then(|c| c.slowstart),
            queued: Arc::new(AtomicU32::new(0)),
            codec: b
                .cookie
                .as_ref()
                .map(|c| crate::persist::Codec::new(c, &cookies)),
            waiting_room: crate::http::waiting_room(
                b.waiting_room.as_ref().map(|f| f.bytes.as_slice()),
            ),
            cfg: b.clone(),
        }
    }

    /// This backend's servers, in order.
    pub fn servers(&self) -> impl Iterator<Item = ServerId> + Clone {
        (self.first..self.first + self.count).map(ServerId::at)
    }

    /// The position of `s` among this backend's servers (for its balancing state).
    pub fn rank(&self, s: ServerId) -> usize {
        s.index() - self.first
    }

    /// The server at `rank` among this backend's servers.
    pub fn at_rank(&self, rank: usize) -> ServerId {
        ServerId::at(self.first + rank)
    }

    /// What a client gets when no server can take its request: the errorfile as it is,
    /// else the built-in page.
    pub fn response_503(&self) -> Vec<u8> {
        self.errorfile_503
            .clone()
            .unwrap_or_else(|| crate::http::error_response(503, true))
    }
}

/// One configuration generation.
#[derive(Debug)]
pub struct Snapshot {
    pub generation: u64,
    pub cfg: Arc<Config>,
    pub frontends: Vec<FrontendRt>,
    pub backends: Vec<BackendRt>,
    pub servers: Vec<ServerRt>,
    pub head_limits: HeadLimits,
}

impl Snapshot {
    pub fn build(cfg: Config, generation: u64) -> Result<Snapshot, crate::EngineError> {
        Snapshot::build_after(cfg, generation, None)
    }

    /// The snapshot of `cfg` that follows `prev` (a reload): frontends keep their place
    /// by name (a removed one stays, retired), and a server whose backend, name and
    /// address are unchanged keeps its connection slots (all cores together), as a
    /// backend keeps its queue count.
    pub fn build_after(
        cfg: Config,
        generation: u64,
        prev: Option<&Snapshot>,
    ) -> Result<Snapshot, crate::EngineError> {
        let mut backends = Vec::new();
        let mut servers = Vec::new();
        for (bi, b) in cfg.backends.iter().enumerate() {
            let mut be = BackendRt::build(b, servers.len());
            if let Some(old) = prev.and_then(|p| p.backends.iter().find(|x| x.name == b.name)) {
                be.queued = old.queued.clone();
            }
            backends.push(be);
            for s in &b.servers {
                let mut srv = ServerRt::build(s, b, BackendId::at(bi));
                let key = format!("{}/{}", b.name, s.name);
                let old = prev.and_then(|p| p.find_server(&key).map(|id| p.server(id)));
                if let Some(old) = old.filter(|o| o.addr == s.address) {
                    srv.inflight = old.inflight.clone();
                }
                servers.push(srv);
            }
        }
        let frontends = frontends_after(&cfg, prev)?;
        let head_limits = HeadLimits {
            max_head_bytes: cfg.limits.max_head_bytes,
            max_target_bytes: cfg.limits.max_target_bytes,
            max_headers: cfg.limits.max_headers,
        };
        Ok(Snapshot {
            generation,
            cfg: Arc::new(cfg),
            frontends,
            backends,
            servers,
            head_limits,
        })
    }

    /// Finds a server by `backend/server`.
    pub fn find_server(&self, name: &str) -> Option<ServerId> {
        let (b, s) = name.split_once('/')?;
        let be = self.backends.iter().find(|x| x.name == b)?;
        be.servers().find(|&i| self.server(i).name == s)
    }

    /// The servers of this snapshot that a reload kept from `prev` (same backend, name
    /// and address): (id here, id in `prev`).
    pub fn kept_from(&self, prev: &Snapshot) -> Vec<(ServerId, ServerId)> {
        self.server_ids()
            .filter_map(|id| {
                let s = self.server(id);
                let key = format!("{}/{}", self.backend(s.backend).name, s.name);
                let old = prev.find_server(&key)?;
                (prev.server(old).addr == s.addr).then_some((id, old))
            })
            .collect()
    }

    #[inline]
    pub fn frontend(&self, id: FrontendId) -> &FrontendRt {
        &self.frontends[id.index()]
    }

    #[inline]
    pub fn backend(&self, id: BackendId) -> &BackendRt {
        &self.backends[id.index()]
    }

    #[inline]
    pub fn server(&self, id: ServerId) -> &ServerRt {
        &self.servers[id.index()]
    }

    /// The frontend at position `i` of the configuration, if there is one.
    pub fn frontend_id(&self, i: usize) -> Option<FrontendId> {
        (i < self.frontends.len()).then(|| FrontendId::at(i))
    }

    /// Every server, in order.
    pub fn server_ids(&self) -> impl Iterator<Item = ServerId> {
        (0..self.servers.len()).map(ServerId::at)
    }

    /// Every backend, in order.
    pub fn backend_ids(&self) -> impl Iterator<Item = BackendId> {
        (0..self.backends.len()).map(BackendId::at)
    }
}

impl States {
    /// The state of server `s`, when it is of this generation.
    pub fn of(&self, s: ServerId) -> Option<ServerStatus> {
        self.servers.get(s.index()).copied()
    }

    pub fn in_panic(&self, b: BackendId) -> bool {
        self.panic.get(b.index()).copied().unwrap_or(false)
    }
}

/// The state of every server (flat, as in [`Snapshot::servers`]), for one generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct States {
    pub generation: u64,
    pub servers: Vec<ServerStatus>,
    /// Per backend: in panic (`panic_below`): DOWN servers take new clients too.
    pub panic: Vec<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerStatus {
    pub state: ServerState,
    pub weight: u32,
    /// The share of its weight a slow server keeps for new clients, permille (1000: all;
    /// see [`crate::control::live`]).
    pub share: u32,
}

impl States {
    pub fn initial(snap: &Snapshot) -> States {
        States {
            generation: snap.generation,
            servers: snap
                .servers
                .iter()
                .map(|s| ServerStatus {
                    state: ServerState::Up,
                    weight: s.weight,
                    share: 1000,
                })
                .collect(),
            panic: vec![false; snap.backends.len()],
        }
    }
}

/// What a core receives between requests.
pub enum Update {
    Config(Arc<Snapshot>, Arc<States>),
    States(Arc<States>),
    /// The access log, reopened (SIGUSR1, reload).
    Log(crate::log::Sink, config::LogFormat, bool),
    /// Listeners a reload added: (frontend name, listener).
    Listen(Vec<(String, std::net::TcpListener)>),
    /// Addresses a reload removed: stop accepting there.
    Unlisten(Vec<SocketAddr>),
}

/// Counters one core writes and anyone may read (single writer: plain load+store).
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    #[inline]
    pub fn add(&self, n: u64) {
        self.0
            .store(self.0.load(Ordering::Relaxed) + n, Ordering::Relaxed);
    }
    #[inline]
    pub fn sub(&self, n: u64) {
        self.0.store(
            self.0.load(Ordering::Relaxed).saturating_sub(n),
            Ordering::Relaxed,
        );
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}
