//! The health-check thread: one thread, its own small runtime, for the whole engine. It
//! probes every checked server at its interval (faster while a server changes state),
//! takes passive reports from the cores (connect failures, bursts of 5xx), applies admin
//! commands, and publishes each new [`States`] snapshot to every core through its
//! channel. It also merges the cores' periodic counter reports for the stats page.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, Sender};
use hdrhistogram::Histogram;

use crate::balance::ServerState;
use crate::health::{self, ProbeFail, Tracker};
use crate::snapshot::{ServerStatus, Snapshot, States, Update};
use crate::worker::Shared;

/// What reaches the health-check thread.
pub enum ControlMsg {
    /// An admin command line and where to send the answer.
    Admin(String, Sender<String>),
    /// A core's counters (sent about once a second).
    Report(Box<CoreReport>),
    /// A core saw a server fail.
    Passive {
        generation: u64,
        server: usize,
        kind: PassiveKind,
    },
    /// A reloaded configuration (the cores get it from here).
    Config(Arc<Snapshot>),
    /// The data of the stats page.
    Stats(Sender<Box<StatsView>>),
    Stop,
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

/// Admin state, set by the admin socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminState {
    Ready,
    Drain,
    Maint,
}

/// Everything the stats page shows.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StatsView {
    pub version: String,
    pub uptime_seconds: u64,
    pub cores: usize,
    pub driver: String,
    pub connections: usize,
    pub frontends: Vec<FrontendView>,
    pub backends: Vec<BackendView>,
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

pub fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 2)
        .unwrap_or_else(|_| Histogram::new(2).expect("histogram"))
}

struct State {
    snap: Arc<Snapshot>,
    shared: Arc<Shared>,
    senders: Vec<Sender<Update>>,
    health: Vec<Tracker>,
    admin: Vec<AdminState>,
    weight: Vec<u32>,
    /// Recent passive failures per server (time of each).
    passive: Vec<VecDeque<Instant>>,
    /// When a server last came back up (slowstart).
    up_since: Vec<Option<Instant>>,
    reports: Vec<Option<CoreReport>>,
    /// What live traffic says about each server (see [`crate::live`]).
    live: crate::live::Live,
    published: States,
    out: Arc<std::sync::Mutex<Arc<States>>>,
}

/// Passive observation: this many failures within [`PASSIVE_WINDOW`] take a server down.
pub const PASSIVE_WINDOW: Duration = Duration::from_secs(10);

impl State {
    fn new(
        snap: Arc<Snapshot>,
        shared: Arc<Shared>,
        senders: Vec<Sender<Update>>,
        out: Arc<std::sync::Mutex<Arc<States>>>,
    ) -> State {
        let n = snap.servers.len();
        let cores = shared.cores;
        let published = States::initial(&snap);
        State {
            weight: snap.servers.iter().map(|s| s.weight).collect(),
            snap,
            shared,
            senders,
            health: vec![Tracker::default(); n],
            admin: vec![AdminState::Ready; n],
            passive: vec![VecDeque::new(); n],
            up_since: vec![None; n],
            reports: vec![None; cores],
            live: crate::live::Live::new(n),
            published,
            out,
        }
    }

    fn install(&mut self, snap: Arc<Snapshot>) {
        // Keep admin states and health of servers that keep their backend/name.
        let old = std::mem::replace(&mut self.snap, snap);
        let n = self.snap.servers.len();
        let mut health = vec![Tracker::default(); n];
        let mut admin = vec![AdminState::Ready; n];
        let mut live = crate::live::Live::new(n);
        for (i, s) in self.snap.servers.iter().enumerate() {
            let key = format!("{}/{}", self.snap.backends[s.backend].name, s.name);
            if let Some(j) = old.find_server(&key) {
                health[i] = self.health[j].clone();
                admin[i] = self.admin[j];
                if let Some(l) = self.live.servers.get(j) {
                    live.servers[i] = l.clone();
                }
            }
        }
        self.live = live;
        self.health = health;
        self.admin = admin;
        self.weight = self.snap.servers.iter().map(|s| s.weight).collect();
        self.passive = vec![VecDeque::new(); n];
        self.up_since = vec![None; n];
        self.reports = vec![None; self.shared.cores];
        let states = self.compute();
        self.published = states.clone();
        let states = Arc::new(states);
        if let Ok(mut o) = self.out.lock() {
            *o = states.clone();
        }
        for s in &self.senders {
            let _ = s.send(Update::Config(self.snap.clone(), states.clone()));
        }
    }

    fn slowstart(&self, i: usize) -> Option<Duration> {
        let s = &self.snap.servers[i];
        self.snap.backends[s.backend]
            .cfg
            .check
            .as_ref()
            .and(self.snap.backends[s.backend].slowstart)
    }

    fn compute(&self) -> States {
        let servers = (0..self.snap.servers.len())
            .map(|i| {
                let state = match self.admin[i] {
                    AdminState::Maint => ServerState::Maint,
                    _ if !self.health[i].up => ServerState::Down,
                    AdminState::Drain => ServerState::Drain,
                    AdminState::Ready => ServerState::Up,
                };
                let mut weight = self.weight[i];
                // Slow: a smaller share of new clients (see crate::live).
                let share = self.live.servers.get(i).map_or(1000, |l| l.share);
                if let (Some(ss), Some(since)) = (self.slowstart(i), self.up_since[i]) {
                    let el = since.elapsed();
                    if el < ss && weight > 0 {
                        let frac = el.as_secs_f64() / ss.as_secs_f64();
                        weight = ((weight as f64 * frac).ceil() as u32).max(1);
                    }
                }
                ServerStatus {
                    state,
                    weight,
                    share,
                }
            })
            .collect();
        let panic = self
            .snap
            .backends
            .iter()
            .map(|b| {
                let primaries =
                    (b.first..b.first + b.count).filter(|&i| !self.snap.servers[i].backup);
                let (mut up, mut total) = (0, 0);
                for i in primaries {
                    total += 1;
                    if self.health[i].up && self.admin[i] != AdminState::Maint {
                        up += 1;
                    }
                }
                crate::live::in_panic(up, total, b.cfg.panic_below)
            })
            .collect();
        States {
            generation: self.snap.generation,
            servers,
            panic,
        }
    }

    /// A core's report: its counters for the stats, and what its traffic says about each
    /// server (a slow one's share of new clients may change).
    fn report(&mut self, r: CoreReport) {
        let c = r.core;
        if c >= self.reports.len() {
            return;
        }
        let now = Instant::now();
        if r.generation == self.snap.generation {
            self.live.on_report(self.reports[c].as_ref(), &r, now);
        }
        self.reports[c] = Some(r);
        self.update_shares(now);
    }

    /// Recomputes each slow server's share of new clients (leastconn always; roundrobin
    /// with `slow_response`); logs each change once.
    fn update_shares(&mut self, now: Instant) {
        let mut changed = false;
        for b in &self.snap.backends {
            let threshold = match (b.balance, b.cfg.slow_response) {
                (config::Balance::LeastConn, t) => t,
                (config::Balance::RoundRobin, Some(t)) => Some(t),
                (config::Balance::RoundRobin, None) => continue,
            };
            let range = b.first..b.first + b.count;
            let p50: Vec<Option<u64>> = range
                .clone()
                .map(|i| {
                    let usable = self.health[i].up && self.admin[i] != AdminState::Maint;
                    usable.then(|| self.live.recent_p50(i, now)).flatten()
                })
                .collect();
            let shares = crate::live::shed_factors(&p50, threshold.map(|t| t.as_micros() as u64));
            for (k, i) in range.enumerate() {
                let old = self.live.servers[i].share;
                let usable = self.health[i].up && self.admin[i] != AdminState::Maint;
                if old == shares[k] || (p50[k].is_none() && usable) {
                    // Not enough answers to judge again: a slow server stays slow.
                    continue;
                }
                changed = true;
                self.live.servers[i].share = shares[k];
                let ms = p50[k].unwrap_or(0) as f64 / 1000.0;
                if shares[k] < 1000 && old == 1000 {
                    tracing::warn!(server = %self.name(i), "server is slow (median {ms:.0} ms, well above the others'): it gets {}% of its share of new clients; sticky clients stay", shares[k] / 10);
                } else if shares[k] == 1000 {
                    tracing::info!(server = %self.name(i), "server no longer slow (median {ms:.0} ms): its full share of new clients again");
                }
            }
        }
        if changed {
            self.publish();
        }
    }

    /// Publishes when anything changed.
    fn publish(&mut self) {
        let states = self.compute();
        if states == self.published {
            return;
        }
        for (b, (&now, &before)) in states.panic.iter().zip(&self.published.panic).enumerate() {
            let be = &self.snap.backends[b];
            if now && !before {
                tracing::warn!(backend = %be.name, "panic: fewer than {}% of the servers are UP; every server that accepts connections takes new clients, DOWN or not", be.cfg.panic_below.unwrap_or(0));
            } else if before && !now {
                tracing::info!(backend = %be.name, "panic over: enough servers are UP again");
            }
        }
        self.published = states.clone();
        let states = Arc::new(states);
        if let Ok(mut o) = self.out.lock() {
            *o = states.clone();
        }
        for s in &self.senders {
            let _ = s.send(Update::States(states.clone()));
        }
    }

    fn name(&self, i: usize) -> String {
        let s = &self.snap.servers[i];
        format!("{}/{}", self.snap.backends[s.backend].name, s.name)
    }

    /// A probe that timed out while live traffic shows the server alive is not counted
    /// (`check.live_traffic`): logged once until the server changes state.
    fn vetoes(&mut self, i: usize, r: &Result<u16, ProbeFail>, check: &config::Check) -> bool {
        let timed_out = matches!(r, Err(ProbeFail::Timeout));
        let window = check.interval.saturating_mul(check.fall.max(1));
        if !(check.live_traffic && timed_out && self.live.says_up(i, window, Instant::now())) {
            return false;
        }
        let tr = &mut self.health[i];
        tr.last = Some(Err(ProbeFail::Timeout));
        tr.last_at = Some(SystemTime::now());
        let name = self.name(i);
        let l = &mut self.live.servers[i];
        l.vetoed += 1;
        if !std::mem::replace(&mut l.veto_said, true) {
            tracing::warn!(server = %name, "check timed out, not counted: the cores relayed answers from the server within the last {}s and no connection to it failed (slow under load, not dead); said once until the server changes state", window.as_secs());
        }
        true
    }

    fn on_change(&mut self, i: usize, up: bool, reason: &str) {
        if let Some(l) = self.live.servers.get_mut(i) {
            l.veto_said = false;
        }
        if up {
            tracing::info!(server = %self.name(i), "server is UP: {reason}");
            self.up_since[i] = Some(Instant::now());
        } else {
            tracing::warn!(server = %self.name(i), "server is DOWN: {reason}");
            self.up_since[i] = None;
        }
        self.publish();
    }

    fn passive(&mut self, generation: u64, i: usize, kind: PassiveKind) {
        if generation != self.snap.generation || i >= self.snap.servers.len() {
            return;
        }
        if kind == PassiveKind::ConnectFailed {
            self.live.on_failure(i, Instant::now());
        }
        let be = &self.snap.backends[self.snap.servers[i].backend];
        let limit = be.observe_errors;
        if limit == 0 || be.cfg.check.is_none() || !self.snap.servers[i].check_enabled {
            return;
        }
        let now = Instant::now();
        let q = &mut self.passive[i];
        q.push_back(now);
        while q
            .front()
            .map(|t| now.duration_since(*t) > PASSIVE_WINDOW)
            .unwrap_or(false)
        {
            q.pop_front();
        }
        if q.len() as u32 >= limit && self.health[i].force_down() {
            q.clear();
            let what = match kind {
                PassiveKind::ConnectFailed => "connection failures",
                PassiveKind::Status5xx => "5xx responses",
            };
            self.on_change(
                i,
                false,
                &format!(
                    "{limit} {what} seen by the cores within {}s",
                    PASSIVE_WINDOW.as_secs()
                ),
            );
        }
    }

    fn admin(&mut self, line: &str) -> String {
        let words: Vec<&str> = line.split_whitespace().collect();
        let find = |st: &State, name: &str| {
            st.snap.find_server(name).ok_or_else(|| {
                format!("error: no server {name:?} (write it as backend/server)\n\n")
            })
        };
        let ok = "ok\n\n".to_string();
        match words.as_slice() {
            ["show", "servers"] => self.show_servers(),
            ["show", "info"] => self.show_info(),
            ["disable", "server", name] => match find(self, name) {
                Ok(i) => {
                    self.admin[i] = AdminState::Maint;
                    self.publish();
                    ok
                }
                Err(e) => e,
            },
            ["enable", "server", name] => match find(self, name) {
                Ok(i) => {
                    self.admin[i] = AdminState::Ready;
                    self.publish();
                    ok
                }
                Err(e) => e,
            },
            ["set", "server", name, "state", st] => {
                let new = match *st {
                    "ready" => AdminState::Ready,
                    "drain" => AdminState::Drain,
                    "maint" => AdminState::Maint,
                    _ => return format!("error: unknown state {st:?}: use ready, drain or maint\n\n"),
                };
                match find(self, name) {
                    Ok(i) => {
                        self.admin[i] = new;
                        self.publish();
                        ok
                    }
                    Err(e) => e,
                }
            }
            ["set", "weight", name, w] => {
                let Ok(w) = w.parse::<u32>() else {
                    return format!("error: weight {w:?} is not a number from 0 to 256\n\n");
                };
                if w > 256 {
                    return format!("error: weight {w} is over 256\n\n");
                }
                match find(self, name) {
                    Ok(i) => {
                        self.weight[i] = w;
                        self.publish();
                        ok
                    }
                    Err(e) => e,
                }
            }
            ["help"] => "commands: show servers | show info | disable server B/S | enable server B/S | set server B/S state ready|drain|maint | set weight B/S N\n\n".into(),
            _ => format!("error: unknown command {:?}; try: help\n\n", line.trim()),
        }
    }

    fn show_servers(&self) -> String {
        let v = self.view();
        let mut out =
            String::from("# backend/server address state weight active queued total vetoed\n");
        for b in &v.backends {
            for s in &b.servers {
                out.push_str(&format!(
                    "{}/{} {} {} {} {} {} {} {}\n",
                    b.name,
                    s.name,
                    s.address,
                    s.state,
                    s.weight,
                    s.active,
                    s.queued,
                    s.total,
                    s.checks_vetoed
                ));
            }
        }
        out.push('\n');
        out
    }

    fn show_info(&self) -> String {
        format!(
            "version: {}\nuptime: {}s\ncores: {}\ndriver: {}\nconnections: {}\n\n",
            env!("CARGO_PKG_VERSION"),
            self.shared.started.elapsed().as_secs(),
            self.shared.cores,
            self.shared
                .driver
                .get()
                .map(|d| d.as_str())
                .unwrap_or("io_uring"),
            self.shared.conns.load(Ordering::Relaxed)
        )
    }

    fn view(&self) -> StatsView {
        let snap = &self.snap;
        let reports: Vec<&CoreReport> = self
            .reports
            .iter()
            .flatten()
            .filter(|r| r.generation == snap.generation)
            .collect();
        let mut backends = Vec::new();
        for (bi, b) in snap.backends.iter().enumerate() {
            let mut servers = Vec::new();
            let mut qh = new_hist();
            let mut bq = 0u64;
            for r in &reports {
                if let Some(h) = r.queue_wait.get(bi) {
                    let _ = qh.add(h);
                }
                bq += r.queued.get(bi).copied().unwrap_or(0) as u64;
            }
            for i in b.first..b.first + b.count {
                let s = &snap.servers[i];
                let mut h = new_hist();
                let (mut active, mut total, mut fails, mut e5, mut queued) =
                    (0u64, 0u64, 0u64, 0u64, 0u64);
                for r in &reports {
                    if let Some(sr) = r.servers.get(i) {
                        active += sr.active as u64;
                        total += sr.total;
                        fails += sr.failures;
                        e5 += sr.responses_5xx;
                        queued += sr.queued as u64;
                        let _ = h.add(&sr.hist);
                    }
                }
                let st = self
                    .published
                    .servers
                    .get(i)
                    .copied()
                    .unwrap_or(ServerStatus {
                        state: ServerState::Up,
                        weight: s.weight,
                        share: 1000,
                    });
                let tr = &self.health[i];
                let check = if b.cfg.check.is_some() && s.check_enabled {
                    Some(CheckView {
                        result: match &tr.last {
                            None => "not yet".into(),
                            Some(Ok(code)) => format!("passed ({code})"),
                            Some(Err(e)) => format!("failed: {e}"),
                        },
                        status: match &tr.last {
                            Some(Ok(c)) => Some(*c),
                            Some(Err(ProbeFail::Status(c))) => Some(*c),
                            _ => None,
                        },
                        seconds_ago: tr
                            .last_at
                            .and_then(|t| SystemTime::now().duration_since(t).ok())
                            .map(|d| (d.as_secs_f64() * 10.0).round() / 10.0),
                    })
                } else {
                    None
                };
                servers.push(ServerView {
                    name: s.name.clone(),
                    address: s.addr.to_string(),
                    state: st.state.as_str().to_string(),
                    weight: st.weight,
                    backup: s.backup,
                    active,
                    queued,
                    total,
                    failures: fails,
                    responses_5xx: e5,
                    p50_ms: ms(&h, 50.0),
                    p99_ms: ms(&h, 99.0),
                    check,
                    checks_vetoed: self.live.servers.get(i).map_or(0, |l| l.vetoed),
                    slow: self.live.servers.get(i).is_some_and(|l| l.share < 1000),
                });
            }
            backends.push(BackendView {
                name: b.name.clone(),
                balance: match b.balance {
                    config::Balance::RoundRobin => "roundrobin".into(),
                    config::Balance::LeastConn => "leastconn".into(),
                },
                queued: bq,
                queue_p50_ms: ms(&qh, 50.0),
                queue_p99_ms: ms(&qh, 99.0),
                panic: self.published.panic.get(bi).copied().unwrap_or(false),
                servers,
            });
        }
        StatsView {
            version: env!("CARGO_PKG_VERSION").into(),
            uptime_seconds: self.shared.started.elapsed().as_secs(),
            cores: self.shared.cores,
            driver: self
                .shared
                .driver
                .get()
                .map(|d| d.as_str())
                .unwrap_or("io_uring")
                .into(),
            connections: self.shared.conns.load(Ordering::Relaxed),
            frontends: snap
                .frontends
                .iter()
                .enumerate()
                .map(|(fi, f)| FrontendView {
                    name: f.name.clone(),
                    tls: f.tls.is_some(),
                    tls_handshake_failures: reports
                        .iter()
                        .map(|r| r.tls_failures.get(fi).copied().unwrap_or(0))
                        .sum(),
                })
                .collect(),
            backends,
        }
    }
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    if h.is_empty() {
        return 0.0;
    }
    (h.value_at_quantile(q / 100.0) as f64 / 1000.0 * 100.0).round() / 100.0
}

/// Handle to the health-check thread.
pub struct Control {
    pub tx: Sender<ControlMsg>,
    pub thread: Option<std::thread::JoinHandle<()>>,
    pub states: Arc<std::sync::Mutex<Arc<States>>>,
}

/// The listeners the health-check thread serves besides its probes.
#[derive(Default)]
pub struct Endpoints {
    pub admin: Option<std::os::unix::net::UnixListener>,
    pub stats: Option<std::net::TcpListener>,
}

impl Control {
    pub fn start(
        snap: Arc<Snapshot>,
        shared: Arc<Shared>,
        senders: Vec<Sender<Update>>,
        (tx, rx): (Sender<ControlMsg>, Receiver<ControlMsg>),
        endpoints: Endpoints,
    ) -> std::io::Result<Control> {
        let states = Arc::new(std::sync::Mutex::new(Arc::new(States::initial(&snap))));
        let out = states.clone();
        let thread = std::thread::Builder::new()
            .name("engine-health".into())
            .spawn(move || {
                let rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
                    .enable_timer()
                    .build();
                let mut rt = match rt {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!("health-check thread cannot start its runtime: {e}");
                        return;
                    }
                };
                rt.block_on(run(State::new(snap, shared, senders, out), rx, endpoints));
            })?;
        Ok(Control {
            tx,
            thread: Some(thread),
            states,
        })
    }

    /// Sends an admin command and waits for the answer.
    pub fn admin(&self, line: &str) -> String {
        let (tx, rx) = crossbeam_channel::bounded(1);
        if self
            .tx
            .send(ControlMsg::Admin(line.to_string(), tx))
            .is_err()
        {
            return "error: the engine is stopping\n\n".into();
        }
        rx.recv_timeout(Duration::from_secs(5))
            .unwrap_or_else(|_| "error: no answer from the health-check thread\n\n".into())
    }

    pub fn stats(&self) -> Option<Box<StatsView>> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.tx.send(ControlMsg::Stats(tx)).ok()?;
        rx.recv_timeout(Duration::from_secs(5)).ok()
    }

    pub fn stop(&mut self) {
        let _ = self.tx.send(ControlMsg::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn run(state: State, rx: Receiver<ControlMsg>, endpoints: Endpoints) {
    let st = Rc::new(RefCell::new(state));
    spawn_probes(&st);
    if let Some(l) = endpoints.admin {
        let st = st.clone();
        let answer: crate::admin::Answer = Rc::new(move |line| st.borrow_mut().admin(line));
        monoio::spawn(crate::admin::serve(l, answer));
    }
    if let Some(l) = endpoints.stats {
        let st = st.clone();
        let view: crate::stats::View = Rc::new(move || st.borrow().view());
        monoio::spawn(crate::stats::serve(l, view));
    }
    let mut last_slowstart = Instant::now();
    loop {
        monoio::time::sleep(Duration::from_millis(20)).await;
        while let Ok(m) = rx.try_recv() {
            match m {
                ControlMsg::Stop => return,
                ControlMsg::Admin(line, reply) => {
                    let ans = st.borrow_mut().admin(&line);
                    let _ = reply.send(ans);
                }
                ControlMsg::Report(r) => st.borrow_mut().report(*r),
                ControlMsg::Passive {
                    generation,
                    server,
                    kind,
                } => st.borrow_mut().passive(generation, server, kind),
                ControlMsg::Config(snap) => {
                    st.borrow_mut().install(snap);
                    spawn_probes(&st);
                }
                ControlMsg::Stats(reply) => {
                    let v = st.borrow().view();
                    let _ = reply.send(Box::new(v));
                }
            }
        }
        // Slowstart ramps are re-published a few times a second while they run.
        if last_slowstart.elapsed() >= Duration::from_millis(250) {
            last_slowstart = Instant::now();
            let ramping = {
                let s = st.borrow();
                (0..s.snap.servers.len()).any(|i| matches!((s.slowstart(i), s.up_since[i]), (Some(ss), Some(t)) if t.elapsed() < ss + Duration::from_millis(300)))
            };
            if ramping {
                st.borrow_mut().publish();
            }
        }
    }
}

fn spawn_probes(st: &Rc<RefCell<State>>) {
    let s = st.borrow();
    let generation = s.snap.generation;
    for (i, srv) in s.snap.servers.iter().enumerate() {
        let be = &s.snap.backends[srv.backend];
        let Some(check) = be.cfg.check.clone() else {
            continue;
        };
        if !srv.check_enabled {
            continue;
        }
        let st = st.clone();
        let addr = srv.addr;
        monoio::spawn(async move {
            // Spread the first probes over the interval.
            let n = (i as u32 % 16) + 1;
            monoio::time::sleep(check.interval / 17 * n).await;
            loop {
                if st.borrow().snap.generation != generation {
                    return;
                }
                let maint = st.borrow().admin[i] == AdminState::Maint;
                let pace = if maint {
                    check.interval
                } else {
                    let r = health::probe(addr, &check).await;
                    let mut s = st.borrow_mut();
                    if s.snap.generation != generation {
                        return;
                    }
                    if s.vetoes(i, &r, &check) {
                        check.interval
                    } else {
                        let reason = match &r {
                            Ok(code) => format!("check passed, status {code}"),
                            Err(e) => format!("check failed: {e}"),
                        };
                        if let Some(up) = s.health[i].record(r, check.rise, check.fall) {
                            s.on_change(i, up, &reason);
                        }
                        if s.health[i].transitioning() {
                            health::fast_interval(check.interval)
                        } else {
                            check.interval
                        }
                    }
                };
                monoio::time::sleep(pace).await;
            }
        });
    }
}
