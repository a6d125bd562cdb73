//! The health-check thread: one thread, its own small runtime, for the whole engine.
//! It probes every checked server at its interval (faster while a server changes state),
//! takes the cores' reports and failure messages, serves the admin socket and the stats
//! endpoint, and publishes each new [`States`] snapshot to every core through its
//! channel. It touches no core: what it knows of them arrives as messages
//! ([`crate::shared::msg`]).
//!
//! Its parts:
//! - this file: [`Control`], the thread's handle, its message loop and probe tasks;
//! - [`state`]: the servers' health and admin states, and what is published from them;
//! - [`live`]: what live traffic says of each server (check timeouts vetoed, slow
//!   servers shed, panic);
//! - [`health`]: one HTTP probe, and the rise/fall bookkeeping;
//! - [`commands`]: the admin commands; [`admin`]: the admin socket;
//! - [`view`]: the stats page's data; [`stats`]: the stats endpoint; [`render`]: the page
//!   and /metrics.

pub mod admin;
mod commands;
pub mod health;
pub mod live;
mod render;
mod state;
pub mod stats;
mod view;

use std::cell::RefCell;
use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

pub use state::AdminState;
use state::State;

use crate::shared::handover::{ListenerInfo, Manifest, ServerHandover};
pub use crate::shared::msg::{new_hist, ControlMsg, CoreReport, PassiveKind, ServerReport};
pub use crate::shared::view::StatsView;
use crate::shared::Shared;
use crate::snapshot::{Snapshot, States, Update};

/// Handle to the health-check thread.
pub struct Control {
    pub tx: Sender<ControlMsg>,
    pub thread: Option<std::thread::JoinHandle<()>>,
    pub states: Arc<std::sync::Mutex<Arc<States>>>,
}

/// Reads the configuration file again and applies it; `Err` holds the reasons.
pub type Reloader = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// Starts a successor that takes this engine over (the admin `upgrade`); its pid.
pub type Upgrader = Arc<dyn Fn() -> Result<u32, String> + Send + Sync>;

/// The addresses the frontends listen on (port 0 resolved), for the admin `show binds`:
/// one `(frontend, address)` per bind.
pub type BindList = Arc<dyn Fn() -> Vec<(String, std::net::SocketAddr)> + Send + Sync>;

/// Every listening socket of the cores, duplicated, for a takeover.
pub type ListenerSource =
    Arc<dyn Fn() -> Result<Vec<(ListenerInfo, OwnedFd)>, String> + Send + Sync>;

/// The listeners the health-check thread serves besides its probes, and what its admin
/// socket needs from the runtime.
#[derive(Default)]
pub struct Endpoints {
    pub admin: Option<std::os::unix::net::UnixListener>,
    pub stats: Option<std::net::TcpListener>,
    /// The admin `reload`.
    pub reloader: Option<Reloader>,
    /// The admin `upgrade`.
    pub upgrader: Option<Upgrader>,
    /// The cores' sockets, for a takeover.
    pub listeners: Option<ListenerSource>,
    /// The frontends' bound addresses (the admin `show binds`).
    pub binds: Option<BindList>,
    /// Server states a previous engine handed over (this one took over from it).
    pub handed: Vec<ServerHandover>,
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

async fn run(mut state: State, rx: Receiver<ControlMsg>, endpoints: Endpoints) {
    state.reloader = endpoints.reloader.clone();
    state.upgrader = endpoints.upgrader.clone();
    state.binds = endpoints.binds.clone();
    state.stats_addr = endpoints.stats.as_ref().and_then(|l| l.local_addr().ok());
    if !endpoints.handed.is_empty() {
        state.apply_handover(&endpoints.handed);
    }
    let st = Rc::new(RefCell::new(state));
    spawn_probes(&st);
    // A copy of the stats listener, to hand over with the cores' sockets.
    let stats_copy = endpoints.stats.as_ref().and_then(|l| l.try_clone().ok());
    if let Some(l) = endpoints.admin {
        let answer: admin::Answer = {
            let st = st.clone();
            Rc::new(move |line| st.borrow_mut().admin(line))
        };
        let handover = endpoints.listeners.clone().map(|src| {
            let st = st.clone();
            let h: admin::Handover =
                Rc::new(move || handover(&st.borrow(), &src, stats_copy.as_ref()));
            h
        });
        monoio::spawn(admin::serve(l, answer, handover));
    }
    if let Some(l) = endpoints.stats {
        let st = st.clone();
        let view: stats::View = Rc::new(move || st.borrow().view());
        monoio::spawn(stats::serve(l, view));
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
                } => st.borrow_mut().passive(generation, server.index(), kind),
                ControlMsg::Config(r) => {
                    st.borrow_mut().install(*r);
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

/// What a takeover hands over: every listening socket (the cores', then the stats
/// endpoint's) and the servers' states.
fn handover(
    st: &State,
    src: &ListenerSource,
    stats: Option<&std::net::TcpListener>,
) -> Result<(Manifest, Vec<OwnedFd>), String> {
    let (infos, mut fds): (Vec<ListenerInfo>, Vec<OwnedFd>) = src()?.into_iter().unzip();
    let stats = match stats {
        Some(l) => {
            let addr = l.local_addr().map_err(|e| e.to_string())?;
            fds.push(l.try_clone().map_err(|e| e.to_string())?.into());
            Some(addr)
        }
        None => None,
    };
    let manifest = Manifest {
        version: 1,
        pid: std::process::id(),
        listeners: infos,
        stats,
        servers: st.handover_servers(),
    };
    Ok((manifest, fds))
}

fn spawn_probes(st: &Rc<RefCell<State>>) {
    let s = st.borrow();
    let generation = s.snap.generation;
    for (i, srv) in s.snap.servers.iter().enumerate() {
        let be = s.snap.backend(srv.backend);
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
