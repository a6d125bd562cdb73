//! Real PHP behind the engine: three `php -S` nodes running tools/php ([`PhpNode`],
//! [`php_nodes`]), whose file sessions are named MoodleSession and kept in a folder per
//! node (so a session lives on one node only), and the student script run through the
//! engine ([`run_exam`], [`assert_clean_run`]). PHP is required: tests/run.sh installs
//! php-cli; a test using these fails without it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use engine::balance::ServerState;

use crate::{exam, tmpdir, wait_until, workspace, Outcome, Running, Student};

/// One `php -S` node on its own process group (PHP_CLI_SERVER_WORKERS forks workers).
pub struct PhpNode {
    pub name: String,
    pub addr: SocketAddr,
    pub dir: PathBuf,
    child: Child,
}

impl PhpNode {
    pub fn start(name: &str) -> PhpNode {
        PhpNode::start_with(name, 2)
    }

    /// A node with `workers` PHP worker processes (a slow page holds one).
    pub fn start_with(name: &str, workers: usize) -> PhpNode {
        let dir = tmpdir(&format!("php-{name}"));
        let sessions = dir.join("sessions");
        std::fs::create_dir_all(&sessions).unwrap();
        let log = std::fs::File::create(dir.join("php.log")).unwrap();
        let child = Command::new("php")
            .arg("-d")
            .arg("session.name=MoodleSession")
            .arg("-d")
            .arg(format!("session.save_path={}", sessions.display()))
            .args([
                "-d",
                "session.use_strict_mode=1",
                "-d",
                "session.use_only_cookies=1",
                "-d",
                "session.gc_probability=0",
                "-d",
                "display_errors=stderr",
                "-d",
                "error_reporting=E_ALL",
            ])
            // Port 0: php binds a free one and says which ("Development Server
            // (http://127.0.0.1:PORT) started").
            .arg("-S")
            .arg("127.0.0.1:0")
            .arg("-t")
            .arg(workspace().join("tools/php"))
            .env("MOODLE_NODE", name)
            .env("MOODLE_DATA", &dir)
            .env("PHP_CLI_SERVER_WORKERS", workers.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run php ({e}): these tests need PHP's CLI; tests/run.sh installs it \
                     (apt-get install php-cli)"
                )
            });
        let mut node = PhpNode {
            name: name.to_string(),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            dir,
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(st)) = node.child.try_wait() {
                panic!(
                    "php -S for {name} exited ({st}):\n{}",
                    std::fs::read_to_string(node.dir.join("php.log")).unwrap_or_default()
                );
            }
            if node.addr.port() == 0 {
                node.addr = php_started_on(&node.dir.join("php.log")).unwrap_or(node.addr);
            }
            // "/" starts no session.
            let answer = (node.addr.port() != 0)
                .then(|| tools::client::get(node.addr, "/").ok())
                .flatten();
            if let Some(resp) = answer {
                assert_eq!(resp.status, 200, "{name}: {}", resp.text());
                assert!(resp.text().contains("Moodle"), "{name}: {}", resp.text());
                assert_eq!(resp.header("x-node"), Some(name));
                break;
            }
            assert!(
                Instant::now() < deadline,
                "php -S for {name} not answering on {}:\n{}",
                node.addr,
                std::fs::read_to_string(node.dir.join("php.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        node
    }

    /// (user, attempt) of every submission this node recorded.
    pub fn submissions(&self) -> Vec<(String, String)> {
        std::fs::read_to_string(self.dir.join("submissions.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .map(|(u, a)| (u.to_string(), a.to_string()))
            .collect()
    }

    /// Switches a behaviour of tools/php/health.php or lib.php (`health-slow-ms`,
    /// `health-status`, `fail-all`) on with `value`, or off with `None`.
    pub fn set(&self, switch: &str, value: Option<&str>) {
        let f = self.dir.join(switch);
        match value {
            Some(v) => std::fs::write(f, v).expect("write the switch"),
            None => {
                let _ = std::fs::remove_file(f);
            }
        }
    }

    /// Kills the node outright (SIGKILL to its process group).
    pub fn kill(&mut self) {
        let pgid = self.child.id() as i32;
        // SAFETY: a signal to the process group this node's child leads.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
        let _ = self.child.wait();
    }

    pub fn sessions(&self) -> usize {
        std::fs::read_dir(self.dir.join("sessions"))
            .map(|d| d.count())
            .unwrap_or(0)
    }
}

impl Drop for PhpNode {
    fn drop(&mut self) {
        let pgid = self.child.id() as i32;
        // SAFETY: signals to the process group this node's child leads (its workers).
        unsafe { libc::kill(-pgid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // SAFETY: as above; workers that outlived the master go too.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

/// Three nodes, p1, p2 and p3, started side by side.
/// The address in php -S's "Development Server (http://ADDR) started" line, once written.
fn php_started_on(log: &std::path::Path) -> Option<SocketAddr> {
    let text = std::fs::read_to_string(log).ok()?;
    let rest = text.split("Development Server (http://").nth(1)?;
    rest.split(')').next()?.parse().ok()
}

pub fn php_nodes() -> Vec<PhpNode> {
    let names = ["p1", "p2", "p3"];
    std::thread::scope(|sc| {
        let hs: Vec<_> = names
            .iter()
            .map(|n| sc.spawn(move || PhpNode::start(n)))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// How a run of the student script went: each finished user's node, the login loops, the
/// failures.
pub struct Run {
    pub homes: HashMap<String, String>,
    pub loops: Vec<String>,
    pub failures: Vec<String>,
}

/// `users` students named `{prefix}NNN`, `threads` at a time, each with a browser of its
/// own from `browser` (a new [`crate::Browser`] opens new connections, so that the kernel
/// spreads them over both cores).
pub fn run_exam<B: Student>(
    browser: impl Fn() -> B + Sync,
    prefix: &str,
    users: usize,
    threads: usize,
) -> Run {
    let next = AtomicUsize::new(0);
    let homes = Mutex::new(HashMap::new());
    let loops = Mutex::new(Vec::new());
    let failures = Mutex::new(Vec::new());
    let t0 = Instant::now();
    std::thread::scope(|sc| {
        for _ in 0..threads {
            let (next, homes, loops, failures, browser) =
                (&next, &homes, &loops, &failures, &browser);
            sc.spawn(move || loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= users || t0.elapsed() > Duration::from_secs(30) {
                    break;
                }
                let user = format!("{prefix}{i:03}");
                let mut b = browser();
                match exam(&mut b, &user, &format!("q{i}")) {
                    Ok(Outcome::Done(home)) => {
                        homes.lock().unwrap().insert(user, home);
                    }
                    Ok(Outcome::Loop(m)) => loops.lock().unwrap().push(m),
                    Err(m) => failures.lock().unwrap().push(m),
                }
            });
        }
    });
    Run {
        homes: homes.into_inner().unwrap(),
        loops: loops.into_inner().unwrap(),
        failures: failures.into_inner().unwrap(),
    }
}

/// Waits until the cores see every PHP node UP.
pub fn wait_up(r: &Running, n: usize) {
    wait_until(Duration::from_secs(10), "every PHP node UP", || {
        let s = r.states();
        (0..n).all(|i| s.servers.get(i).map(|x| x.state) == Some(ServerState::Up))
    });
}

/// The script passes: no loop, no failure, every submission once on the user's node.
pub fn assert_clean_run(nodes: &[PhpNode], run: &Run, prefix: &str, users: usize) {
    assert!(
        run.loops.is_empty(),
        "{} login loop(s) through the engine: {:?}",
        run.loops.len(),
        &run.loops[..run.loops.len().min(10)]
    );
    assert!(
        run.failures.is_empty(),
        "{} failed user(s): {:?}",
        run.failures.len(),
        &run.failures[..run.failures.len().min(10)]
    );
    assert_eq!(run.homes.len(), users, "every user finished");
    let mut count: HashMap<(String, String), Vec<String>> = HashMap::new();
    for n in nodes {
        for k in n.submissions() {
            if k.0.starts_with(prefix) {
                count.entry(k).or_default().push(n.name.clone());
            }
        }
    }
    for i in 0..users {
        let user = format!("{prefix}{i:03}");
        let on = count
            .get(&(user.clone(), format!("q{i}")))
            .unwrap_or_else(|| panic!("{user}'s submission lost"));
        assert_eq!(
            on,
            &vec![run.homes[&user].clone()],
            "{user}: submitted once, on their own node"
        );
    }
    assert_eq!(count.len(), users, "no submission of anyone else");
    for n in nodes {
        let mine = run.homes.values().filter(|h| **h == n.name).count();
        assert!(
            mine >= users / 6,
            "{} served {mine} of {users} users",
            n.name
        );
    }
}
