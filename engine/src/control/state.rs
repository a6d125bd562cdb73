//! The health-check thread's state: every server's health (rise/fall), admin state
//! (MAINT, DRAIN, a weight set at run time), what live traffic says of it, and the
//! [`States`] computed from them and published to the cores.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::Sender;

use super::health::{ProbeFail, Tracker};
use crate::balance::ServerState;
use crate::shared::handover::ServerHandover;
use crate::shared::msg::{CoreReport, PassiveKind};
use crate::shared::Shared;
use crate::snapshot::{ServerStatus, Snapshot, States, Update};

/// Admin state, set by the admin socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminState {
    Ready,
    Drain,
    Maint,
}

pub(super) struct State {
    pub(super) snap: Arc<Snapshot>,
    pub(super) shared: Arc<Shared>,
    pub(super) senders: Vec<Sender<Update>>,
    pub(super) health: Vec<Tracker>,
    pub(super) admin: Vec<AdminState>,
    pub(super) weight: Vec<u32>,
    /// The weight was set at run time (`set weight`): a reload keeps it.
    pub(super) weight_set: Vec<bool>,
    /// Reads the configuration file again and applies it (the admin `reload`), when the
    /// engine was started from a file.
    pub(super) reloader: Option<super::Reloader>,
    /// Starts a successor (the admin `upgrade`), when the engine was started from a file
    /// with an admin socket.
    pub(super) upgrader: Option<super::Upgrader>,
    /// The frontends' bound addresses (the admin `show binds`).
    pub(super) binds: Option<super::BindList>,
    /// Where the stats endpoint listens, when it does.
    pub(super) stats_addr: Option<std::net::SocketAddr>,
    /// Recent passive failures per server (time of each).
    pub(super) passive: Vec<VecDeque<Instant>>,
    /// When a server last came back up (slowstart).
    pub(super) up_since: Vec<Option<Instant>>,
    pub(super) reports: Vec<Option<CoreReport>>,
    /// What live traffic says about each server (see [`super::live`]).
    pub(super) live: super::live::Live,
    pub(super) published: States,
    pub(super) out: Arc<std::sync::Mutex<Arc<States>>>,
}

/// Passive observation: this many failures within [`PASSIVE_WINDOW`] take a server down.
pub const PASSIVE_WINDOW: Duration = Duration::from_secs(10);

impl State {
    pub(super) fn new(
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
            weight_set: vec![false; n],
            reloader: None,
            upgrader: None,
            binds: None,
            stats_addr: None,
            snap,
            shared,
            senders,
            health: vec![Tracker::default(); n],
            admin: vec![AdminState::Ready; n],
            passive: vec![VecDeque::new(); n],
            up_since: vec![None; n],
            reports: vec![None; cores],
            live: super::live::Live::new(n),
            published,
            out,
        }
    }

    /// A reload: the servers whose backend, name and address are unchanged keep their
    /// health, admin state, weight set at run time, slowstart ramp, recent failures and
    /// what live traffic says of them; the cores get the new snapshot with those states,
    /// then the listeners the reload removed and added.
    pub(super) fn install(&mut self, r: crate::shared::msg::Reloaded) {
        let old = std::mem::replace(&mut self.snap, r.snap);
        let n = self.snap.servers.len();
        let mut health = vec![Tracker::default(); n];
        let mut admin = vec![AdminState::Ready; n];
        let mut weight: Vec<u32> = self.snap.servers.iter().map(|s| s.weight).collect();
        let mut weight_set = vec![false; n];
        let mut passive = vec![VecDeque::new(); n];
        let mut up_since = vec![None; n];
        let mut live = super::live::Live::new(n);
        for (new, was) in self.snap.kept_from(&old) {
            let (i, j) = (new.index(), was.index());
            health[i] = self.health[j].clone();
            admin[i] = self.admin[j];
            if self.weight_set[j] {
                weight[i] = self.weight[j];
                weight_set[i] = true;
            }
            passive[i] = std::mem::take(&mut self.passive[j]);
            up_since[i] = self.up_since[j];
            if let Some(l) = self.live.servers.get(j) {
                live.servers[i] = l.clone();
            }
        }
        (self.health, self.admin, self.weight, self.weight_set) =
            (health, admin, weight, weight_set);
        (self.passive, self.up_since, self.live) = (passive, up_since, live);
        self.reports = vec![None; self.shared.cores];
        let states = self.compute();
        self.published = states.clone();
        let states = Arc::new(states);
        if let Ok(mut o) = self.out.lock() {
            *o = states.clone();
        }
        let mut listen = r.listen.into_iter();
        for s in &self.senders {
            let _ = s.send(Update::Config(self.snap.clone(), states.clone()));
            if !r.unlisten.is_empty() {
                let _ = s.send(Update::Unlisten(r.unlisten.clone()));
            }
            let l = listen.next().unwrap_or_default();
            if !l.is_empty() {
                let _ = s.send(Update::Listen(l));
            }
        }
    }

    /// Every server's state, for a takeover.
    pub(super) fn handover_servers(&self) -> Vec<ServerHandover> {
        self.snap
            .servers
            .iter()
            .enumerate()
            .map(|(i, s)| ServerHandover {
                key: self.name(i),
                addr: s.addr,
                up: self.health[i].up,
                admin: match self.admin[i] {
                    AdminState::Ready => "ready",
                    AdminState::Drain => "drain",
                    AdminState::Maint => "maint",
                }
                .into(),
                weight: self.weight_set[i].then_some(self.weight[i]),
            })
            .collect()
    }

    /// Takes over the states a previous engine handed over (by backend/name and
    /// address), and publishes them.
    pub(super) fn apply_handover(&mut self, servers: &[ServerHandover]) {
        for h in servers {
            let Some(id) = self.snap.find_server(&h.key) else {
                continue;
            };
            let i = id.index();
            if self.snap.servers[i].addr != h.addr {
                continue;
            }
            self.health[i].up = h.up;
            self.admin[i] = match h.admin.as_str() {
                "maint" => AdminState::Maint,
                "drain" => AdminState::Drain,
                _ => AdminState::Ready,
            };
            if let Some(w) = h.weight {
                self.weight[i] = w;
                self.weight_set[i] = true;
            }
        }
        self.publish();
    }

    pub(super) fn slowstart(&self, i: usize) -> Option<Duration> {
        let s = &self.snap.servers[i];
        self.snap
            .backend(s.backend)
            .cfg
            .check
            .as_ref()
            .and(self.snap.backend(s.backend).slowstart)
    }

    pub(super) fn compute(&self) -> States {
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
                super::live::in_panic(up, total, b.cfg.panic_below)
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
    pub(super) fn report(&mut self, r: CoreReport) {
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
    pub(super) fn update_shares(&mut self, now: Instant) {
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
            let shares = super::live::shed_factors(&p50, threshold.map(|t| t.as_micros() as u64));
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
    pub(super) fn publish(&mut self) {
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

    pub(super) fn name(&self, i: usize) -> String {
        let s = &self.snap.servers[i];
        format!("{}/{}", self.snap.backend(s.backend).name, s.name)
    }

    /// A probe that timed out while live traffic shows the server alive is not counted
    /// (`check.live_traffic`): logged once until the server changes state.
    pub(super) fn vetoes(
        &mut self,
        i: usize,
        r: &Result<u16, ProbeFail>,
        check: &config::Check,
    ) -> bool {
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

    pub(super) fn on_change(&mut self, i: usize, up: bool, reason: &str) {
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

    pub(super) fn passive(&mut self, generation: u64, i: usize, kind: PassiveKind) {
        if generation != self.snap.generation || i >= self.snap.servers.len() {
            return;
        }
        if kind == PassiveKind::ConnectFailed {
            self.live.on_failure(i, Instant::now());
        }
        let be = self.snap.backend(self.snap.servers[i].backend);
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
}
