//! The engine as a separate process (the release binary), for what only a process can
//! show: signals, exit status, privilege drop, what it writes on standard error. Also the
//! helpers for any child process: the engine binary built on demand ([`engine_bin`]),
//! signals ([`signal`]) and a bounded wait for an exit ([`wait_exit`]). Engines bind port
//! 0 and say the port they got on standard error ([`Bound`], [`wait_bound`]): no port is
//! found free and released.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A running engine binary: its configuration folder, its stderr in a file, the
/// addresses it bound.
pub struct EngineProc {
    pub child: Child,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub stderr: PathBuf,
    pub bound: Bound,
}

/// Where an engine listens, as it said on standard error when it started:
/// `listening frontend=NAME addr=ADDR` per bind, `stats listening addr=ADDR`.
#[derive(Debug, Clone, Default)]
pub struct Bound {
    pub frontends: Vec<(String, SocketAddr)>,
    pub stats: Option<SocketAddr>,
}

impl Bound {
    /// The binds of the last start in `stderr` (a takeover's successor may share the file).
    pub fn parse(stderr: &str) -> Bound {
        let mut b = Bound::default();
        let mut done = false;
        for line in stderr.lines() {
            let field = |name: &str| {
                line.split_whitespace()
                    .find_map(|w| w.strip_prefix(name))
                    .map(|v| v.trim_matches('"').to_string())
            };
            let addr = || field("addr=").and_then(|a| a.parse::<SocketAddr>().ok());
            if line.contains(" engine running") {
                done = true;
            } else if line.contains(" stats listening ") {
                b.stats = addr();
            } else if line.contains(" listening ") {
                if done {
                    b = Bound::default();
                    done = false;
                }
                if let (Some(f), Some(a)) = (field("frontend="), addr()) {
                    b.frontends.push((f, a));
                }
            }
        }
        b
    }

    /// Every address of `frontend`, in the order bound.
    pub fn addrs(&self, frontend: &str) -> Vec<SocketAddr> {
        self.frontends
            .iter()
            .filter(|(f, _)| f == frontend)
            .map(|(_, a)| *a)
            .collect()
    }

    /// The first address of `frontend`; panics if it has none.
    pub fn addr(&self, frontend: &str) -> SocketAddr {
        *self
            .addrs(frontend)
            .first()
            .unwrap_or_else(|| panic!("no bind of frontend {frontend:?} in {self:?}"))
    }

    /// The stats endpoint's address; panics if there is none.
    pub fn stats(&self) -> SocketAddr {
        self.stats
            .unwrap_or_else(|| panic!("the engine said no stats address: {self:?}"))
    }
}

/// Waits (up to `limit`) until the engine writing its standard error to `stderr` says
/// `engine running`, and returns where it listens; `Err` with what it said if it exited
/// or the time ran out first.
pub fn wait_bound(child: &mut Child, stderr: &Path, limit: Duration) -> Result<Bound, String> {
    let said = || std::fs::read_to_string(stderr).unwrap_or_default();
    let running = || said().lines().any(|l| l.contains(" engine running"));
    crate::poll_for(limit, || {
        running() || child.try_wait().ok().flatten().is_some()
    });
    if running() {
        Ok(Bound::parse(&said()))
    } else {
        Err(said())
    }
}

/// How to start one.
pub struct Spawn<'a> {
    pub args: Vec<&'a str>,
    /// Runs in the child between fork and exec (setgroups, rlimits).
    pub pre_exec: Option<Box<dyn FnMut() -> std::io::Result<()> + Send + Sync>>,
}

impl Default for Spawn<'_> {
    fn default() -> Self {
        Spawn {
            args: vec!["--cores", "2"],
            pre_exec: None,
        }
    }
}

impl EngineProc {
    /// Writes `text` to `dir/lb.toml`, starts the release binary on it and waits until it
    /// runs and its first bind has as many listeners as cores asked for (2 unless
    /// `--cores` says).
    pub fn start(dir: &Path, text: &str, how: Spawn) -> EngineProc {
        let config = dir.join("lb.toml");
        std::fs::write(&config, text).expect("write lb.toml");
        let stderr = dir.join("engine.stderr");
        let mut cmd = Command::new(engine_bin(true));
        cmd.args(&how.args)
            .arg("-c")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).expect("stderr file"));
        if let Some(f) = how.pre_exec {
            use std::os::unix::process::CommandExt;
            // SAFETY: the closure only makes async-signal-safe system calls.
            unsafe {
                cmd.pre_exec(f);
            }
        }
        let child = cmd.spawn().expect("spawn the engine");
        let cores: usize = how
            .args
            .iter()
            .position(|a| *a == "--cores")
            .and_then(|i| how.args.get(i + 1))
            .and_then(|n| n.parse().ok())
            .unwrap_or(2);
        let mut p = EngineProc {
            child,
            dir: dir.to_path_buf(),
            config,
            stderr,
            bound: Bound::default(),
        };
        match wait_bound(&mut p.child, &p.stderr, Duration::from_secs(20)) {
            Ok(b) => p.bound = b,
            Err(said) => {
                let _ = p.child.kill();
                let _ = p.child.wait();
                panic!("the engine did not start:\n{said}");
            }
        }
        let port = p.port();
        if !crate::poll_for(Duration::from_secs(5), || {
            crate::listeners_on(port) >= cores
        }) {
            panic!(
                "{} listeners on {port}, wanted {cores}",
                crate::listeners_on(port)
            );
        }
        p
    }

    /// The first address of `frontend`.
    pub fn addr(&self, frontend: &str) -> SocketAddr {
        self.bound.addr(frontend)
    }

    /// The port of the first bind (of any frontend).
    pub fn port(&self) -> u16 {
        self.bound
            .frontends
            .first()
            .map(|(_, a)| a.port())
            .unwrap_or_else(|| panic!("the engine bound no frontend:\n{}", self.said()))
    }

    /// What it wrote on standard error so far.
    pub fn said(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    pub fn signal(&self, sig: i32) {
        signal(&self.child, sig);
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Still running?
    pub fn running(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_none()
    }

    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        wait_exit(&mut self.child, limit)
    }
}

impl Drop for EngineProc {
    fn drop(&mut self) {
        if self.running() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The workspace root (tests/..).
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// The target folder (CARGO_TARGET_DIR or workspace/target).
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) => {
            let p = PathBuf::from(d);
            if p.is_absolute() {
                p
            } else {
                workspace().join(p)
            }
        }
        None => workspace().join("target"),
    }
}

/// The engine binary of that profile, built first (`cargo build -p engine`, with
/// `--release` for release) so that it is current. Builds at most once per test binary
/// and profile.
pub fn engine_bin(release: bool) -> PathBuf {
    use std::sync::OnceLock;
    static DEBUG: OnceLock<PathBuf> = OnceLock::new();
    static RELEASE: OnceLock<PathBuf> = OnceLock::new();
    let cell = if release { &RELEASE } else { &DEBUG };
    cell.get_or_init(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.current_dir(workspace())
            .args(["build", "-p", "engine", "--bin", "engine"]);
        if release {
            cmd.arg("--release");
        }
        let out = cmd.output().expect("run cargo build");
        assert!(
            out.status.success(),
            "cargo build -p engine{} failed:\n{}",
            if release { " --release" } else { "" },
            String::from_utf8_lossy(&out.stderr)
        );
        let p = target_dir()
            .join(if release { "release" } else { "debug" })
            .join("engine");
        assert!(p.exists(), "{} missing after the build", p.display());
        p
    })
    .clone()
}

/// Sends a signal to a child process.
pub fn signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) on our own child's pid.
    let r = unsafe { libc::kill(child.id() as i32, sig) };
    assert_eq!(r, 0, "kill({}, {sig})", child.id());
}

pub const SIGINT: i32 = libc::SIGINT;
pub const SIGTERM: i32 = libc::SIGTERM;

/// Waits for a child to exit within `limit`; kills it (and panics) otherwise.
pub fn wait_exit(child: &mut Child, limit: Duration) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            return st;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("process {} did not exit within {limit:?}", child.id());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
