//! A new configuration, applied without a restart.
//!
//! Everything that can fail happens before anything changes: the file is read and
//! validated, the binds it adds are bound (each refused as a whole where another process
//! holds the address), the snapshot is built (certificates loaded), the access log is
//! opened. Then, at once: the log goes to every core, the new snapshot to the
//! health-check thread, which sends it to every core with the server states it keeps,
//! followed by the addresses to stop accepting on and the new listeners. Servers whose
//! backend, name and address are unchanged keep their health, admin state, run-time
//! weight, counters, connection slots and pooled connections (see
//! [`Snapshot::build_after`] and the cores' and health-check thread's `install`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crossbeam_channel::Sender;

use super::listen::{self, Bound1};
use super::notify;
use crate::log::Sink;
use crate::shared::msg::{ControlMsg, Reloaded};
use crate::shared::Shared;
use crate::snapshot::{Snapshot, Update};
use crate::EngineError;

/// What a running engine keeps to reload, reopen its log and hand its sockets over.
pub struct Inner {
    pub shared: Arc<Shared>,
    current: Mutex<Arc<Snapshot>>,
    generation: AtomicU64,
    control_tx: Sender<ControlMsg>,
    cores_tx: Vec<Sender<Update>>,
    pub binds: Arc<Mutex<Vec<Bound1>>>,
    /// The file (and `--force`) a reload reads again.
    reload_from: Option<(PathBuf, bool)>,
    /// One reload at a time (SIGHUP and the admin socket may ask at once).
    reload_lock: Mutex<()>,
}

/// A reload's binds: what to bind, what to stop, what changes frontend.
struct BindPlan {
    added: Vec<(String, SocketAddr)>,
    /// Indices into the binds.
    removed: Vec<usize>,
    /// (index into the binds, new frontend).
    moved: Vec<(usize, String)>,
}

fn plan_binds(binds: &[Bound1], cfg: &config::Config) -> BindPlan {
    let wanted: Vec<(String, SocketAddr)> = cfg
        .frontends
        .iter()
        .flat_map(|f| f.bind.iter().map(|&a| (f.name.clone(), a)))
        .collect();
    let mut plan = BindPlan {
        added: Vec::new(),
        removed: Vec::new(),
        moved: Vec::new(),
    };
    for (name, a) in &wanted {
        match binds.iter().position(|b| b.is(*a)) {
            Some(i) if binds[i].frontend != *name => plan.moved.push((i, name.clone())),
            Some(_) => {}
            None => plan.added.push((name.clone(), *a)),
        }
    }
    for (i, b) in binds.iter().enumerate() {
        if !wanted.iter().any(|(_, a)| b.is(*a)) {
            plan.removed.push(i);
        }
    }
    plan
}

impl Inner {
    pub fn new(
        shared: Arc<Shared>,
        snap: Arc<Snapshot>,
        control_tx: Sender<ControlMsg>,
        cores_tx: Vec<Sender<Update>>,
        binds: Vec<Bound1>,
        reload_from: Option<(PathBuf, bool)>,
    ) -> Inner {
        Inner {
            shared,
            generation: AtomicU64::new(snap.generation),
            current: Mutex::new(snap),
            control_tx,
            cores_tx,
            binds: Arc::new(Mutex::new(binds)),
            reload_from,
            reload_lock: Mutex::new(()),
        }
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current
            .lock()
            .map(|c| c.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    /// Every bind as `(frontend, address bound)`, in the order bound.
    pub fn bound(&self) -> Vec<(String, SocketAddr)> {
        let binds = self.binds.lock().unwrap_or_else(|e| e.into_inner());
        binds.iter().map(|b| (b.frontend.clone(), b.real)).collect()
    }

    /// The bound addresses of a frontend, in its configuration's order.
    pub fn frontend_addrs(&self, name: &str) -> Vec<SocketAddr> {
        let binds = self.binds.lock().unwrap_or_else(|e| e.into_inner());
        let snap = self.snapshot();
        let Some(f) = snap.cfg.frontends.iter().find(|f| f.name == name) else {
            return Vec::new();
        };
        f.bind
            .iter()
            .filter_map(|&a| binds.iter().find(|b| b.frontend == name && b.is(a)))
            .map(|b| b.real)
            .collect()
    }

    /// Reads the file again and applies it. `Err` holds every reason it was refused
    /// (logged too).
    pub fn reload_file(&self) -> Result<(), String> {
        let Some((path, force)) = &self.reload_from else {
            return Err("this engine was not started from a file (-c FILE)".into());
        };
        let _one = self.reload_lock.lock().unwrap_or_else(|e| e.into_inner());
        notify::notify(notify::State::Reloading);
        let loaded = config::load_file_with(path, &config::LoadOptions { force: *force });
        let r = match loaded {
            Ok(l) => {
                for w in &l.warnings {
                    tracing::warn!("{w}");
                }
                self.apply_logged(l.config).map_err(|e| match e {
                    EngineError::Reload(why) => why,
                    e => e.to_string(),
                })
            }
            Err(diags) => {
                let why: Vec<String> = diags.iter().map(|d| d.to_string()).collect();
                let why = why.join("\n");
                tracing::error!("reload refused, the running configuration stays:\n{why}");
                Err(why)
            }
        };
        notify::notify(notify::State::Ready);
        r
    }

    /// Applies a new configuration (see the module's documentation).
    pub fn reload(&self, cfg: config::Config) -> Result<(), EngineError> {
        let _one = self.reload_lock.lock().unwrap_or_else(|e| e.into_inner());
        notify::notify(notify::State::Reloading);
        let r = self.apply_logged(cfg);
        notify::notify(notify::State::Ready);
        r
    }

    fn apply_logged(&self, cfg: config::Config) -> Result<(), EngineError> {
        let r = self.apply(cfg);
        match &r {
            Ok(()) => tracing::info!("configuration reloaded"),
            Err(e) => tracing::error!("{e}; the running configuration stays"),
        }
        r
    }

    fn apply(&self, cfg: config::Config) -> Result<(), EngineError> {
        let refuse = |why: String| EngineError::Reload(why);
        check_user(&cfg.global, &self.snapshot().cfg.global).map_err(refuse)?;
        let mut binds = self.binds.lock().unwrap_or_else(|e| e.into_inner());
        let plan = plan_binds(&binds, &cfg);
        let cores = self.cores_tx.len();
        // Bound first: an address another process holds refuses the whole reload.
        let mut fresh = listen::Bound::new(cores);
        for (name, a) in &plan.added {
            let (real, lists) =
                listen::bind_address(*a, cores).map_err(|e| refuse(e.to_string()))?;
            fresh
                .add(name, *a, real, lists)
                .map_err(|e| refuse(e.to_string()))?;
        }
        let cur = self.snapshot();
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        let snap = Snapshot::build_after(cfg, generation, Some(&cur))
            .map_err(|e| refuse(e.to_string()))?;
        let snap = Arc::new(snap);
        // The access log reopened (its file may have moved) with the new [log] settings.
        let sinks = self
            .open_log(&snap.cfg.log)
            .map_err(|e| refuse(e.to_string()))?;
        // Nothing can fail past here.
        self.install_log(sinks, &snap.cfg.log);
        self.set_maxconn(&snap);
        let mut listen = fresh.per_core;
        let mut unlisten = Vec::new();
        for (i, name) in &plan.moved {
            let b = &mut binds[*i];
            tracing::info!(addr = %b.real, from = %b.frontend, to = %name, "bind moves to another frontend");
            unlisten.push(b.real);
            for (core, l) in b.copies.iter().enumerate() {
                if let Ok(l) = l.try_clone() {
                    listen[core % cores.max(1)].push((name.clone(), l));
                }
            }
            b.frontend = name.clone();
        }
        for &i in plan.removed.iter().rev() {
            let b = binds.remove(i);
            tracing::info!(addr = %b.real, frontend = %b.frontend, "bind removed: no longer accepting there; its connections finish");
            unlisten.push(b.real);
        }
        for b in fresh.binds {
            tracing::info!(addr = %b.real, frontend = %b.frontend, "bind added");
            binds.push(b);
        }
        if let Ok(mut c) = self.current.lock() {
            *c = snap.clone();
        }
        let reloaded = Reloaded {
            snap,
            unlisten,
            listen,
        };
        let _ = self.control_tx.send(ControlMsg::Config(Box::new(reloaded)));
        Ok(())
    }

    fn set_maxconn(&self, snap: &Snapshot) {
        let want = snap.cfg.global.maxconn as usize;
        if want > self.shared.fd_maxconn {
            tracing::warn!(
                "maxconn {want} is past what RLIMIT_NOFILE allows ({} client connections); \
                 the engine holds at most those: raise the limit and restart",
                self.shared.fd_maxconn
            );
        }
        self.shared
            .maxconn
            .store(want.min(self.shared.fd_maxconn), Ordering::Relaxed);
    }

    /// Reopens the access log file and hands it to every core.
    pub fn reopen_log(&self) -> Result<(), EngineError> {
        let log = self.snapshot().cfg.log.clone();
        let sinks = self.open_log(&log)?;
        self.install_log(sinks, &log);
        Ok(())
    }

    /// The access log opened once, a handle for each core.
    fn open_log(&self, log: &config::Log) -> Result<Vec<Sink>, EngineError> {
        let sink = Sink::open(&log.access).map_err(EngineError::Log)?;
        (0..self.cores_tx.len())
            .map(|_| sink.try_clone().map_err(EngineError::Log))
            .collect()
    }

    fn install_log(&self, sinks: Vec<Sink>, log: &config::Log) {
        for (tx, s) in self.cores_tx.iter().zip(sinks) {
            let _ = tx.send(Update::Log(s, log.format, log.dontlognull));
        }
    }

    /// A graceful stop: the copies of the listeners close with the cores' own, so that
    /// new connections are refused at once rather than queued for nobody.
    pub fn drop_listeners(&self) {
        self.binds.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

/// A running engine cannot change the user it runs as: a reload that names another
/// (existing) user or group says it applies at the next start or takeover; one that
/// names a user or group that does not exist is refused.
fn check_user(new: &config::Global, cur: &config::Global) -> Result<(), String> {
    for (what, n, c, exists) in [
        (
            "user",
            &new.user,
            &cur.user,
            user_exists as fn(&str) -> bool,
        ),
        ("group", &new.group, &cur.group, group_exists),
    ] {
        if let Some(n) = n {
            if !exists(n) {
                return Err(format!(
                    "global.{what} {n:?} does not exist on this host: create it or fix the name"
                ));
            }
        }
        if n != c {
            tracing::warn!(
                "global.{what} changed to {n:?}: a running engine keeps its {what}; it applies at the next start or takeover"
            );
        }
    }
    Ok(())
}

pub fn user_exists(name: &str) -> bool {
    let Ok(c) = std::ffi::CString::new(name) else {
        return false;
    };
    // SAFETY: c is a valid C string; the result is only tested for NULL.
    !unsafe { libc::getpwnam(c.as_ptr()) }.is_null()
}

pub fn group_exists(name: &str) -> bool {
    let Ok(c) = std::ffi::CString::new(name) else {
        return false;
    };
    // SAFETY: c is a valid C string; the result is only tested for NULL.
    !unsafe { libc::getgrnam(c.as_ptr()) }.is_null()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bind(fe: &str, a: &str) -> Bound1 {
        let a: SocketAddr = a.parse().unwrap();
        Bound1 {
            frontend: fe.into(),
            configured: a,
            real: a,
            copies: Vec::new(),
        }
    }

    fn cfg(frontends: &[(&str, &[&str])]) -> config::Config {
        let mut toml = String::from("[[backend]]\nname = \"b\"\n[[backend.server]]\nname = \"s\"\naddress = \"127.0.0.1:9\"\n");
        for (name, binds) in frontends {
            let list: Vec<String> = binds.iter().map(|b| format!("{b:?}")).collect();
            toml.push_str(&format!(
                "[[frontend]]\nname = \"{name}\"\nbind = [{}]\nbackend = \"b\"\n",
                list.join(", ")
            ));
        }
        config::load_str(&toml, std::path::Path::new("test.toml"))
            .map_err(|d| format!("{d:?}"))
            .expect("valid")
            .config
    }

    #[test]
    fn binds_added_removed_and_moved_between_frontends() {
        let binds = [
            bind("web", "127.0.0.1:8080"),
            bind("web", "127.0.0.1:8081"),
            bind("old", "127.0.0.1:8082"),
        ];
        let new = cfg(&[
            ("web", &["127.0.0.1:8080", "127.0.0.1:8090"]),
            ("renamed", &["127.0.0.1:8082"]),
        ]);
        let p = plan_binds(&binds, &new);
        assert_eq!(
            p.added,
            [("web".to_string(), "127.0.0.1:8090".parse().unwrap())]
        );
        assert_eq!(p.removed, [1]);
        assert_eq!(p.moved, [(2, "renamed".to_string())]);
    }

    #[test]
    fn a_port_zero_bind_is_the_one_it_resolved_to() {
        let mut b = bind("web", "127.0.0.1:0");
        b.real = "127.0.0.1:40000".parse().unwrap();
        let p = plan_binds(&[b], &cfg(&[("web", &["127.0.0.1:0"])]));
        assert!(p.added.is_empty() && p.removed.is_empty() && p.moved.is_empty());
    }

    #[test]
    fn a_user_that_does_not_exist_is_refused() {
        let mut g = cfg(&[("web", &["127.0.0.1:0"])]).global;
        let cur = g.clone();
        g.user = Some("no-such-user-anywhere".into());
        let e = check_user(&g, &cur).unwrap_err();
        assert!(e.contains("does not exist"), "{e}");
    }
}
