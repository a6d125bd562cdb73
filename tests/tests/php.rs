//! Real PHP behind the engine (issue 3): three `php -S` nodes running tools/php, whose
//! file-based sessions are named MoodleSession and kept in a folder per node (so a session
//! lives on one node only). A scripted login, dashboard and quiz submission for many users
//! passes through the engine's two cores with no login loop, in insert mode (SERVERID) and
//! in prefix mode (on MoodleSession); the same script through an insert cookie named
//! MoodleSession (forced past `engine check`) loops, which shows that the script catches
//! it. PHP is required: tests/run.sh installs php-cli; these tests fail without it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use engine::balance::ServerState;
use engine_tests::*;

both_drivers!(
    php_sessions_through_insert_cookie,
    php_sessions_through_prefix_cookie,
    php_insert_cookie_named_moodlesession_loops,
);

// ---------------------------------------------------------------- PHP nodes

/// One `php -S` node on its own process group (PHP_CLI_SERVER_WORKERS forks workers).
struct PhpNode {
    name: String,
    addr: SocketAddr,
    dir: PathBuf,
    child: Child,
}

impl PhpNode {
    fn start(name: &str) -> PhpNode {
        let dir = tmpdir(&format!("php-{name}"));
        let sessions = dir.join("sessions");
        std::fs::create_dir_all(&sessions).unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
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
            .arg("-S")
            .arg(addr.to_string())
            .arg("-t")
            .arg(workspace().join("tools/php"))
            .env("MOODLE_NODE", name)
            .env("MOODLE_DATA", &dir)
            .env("PHP_CLI_SERVER_WORKERS", "2")
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
            addr,
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
            // "/" starts no session.
            if let Ok(resp) = tools::client::get(addr, "/") {
                assert_eq!(resp.status, 200, "{name}: {}", resp.text());
                assert!(resp.text().contains("Moodle"), "{name}: {}", resp.text());
                assert_eq!(resp.header("x-node"), Some(name));
                break;
            }
            assert!(
                Instant::now() < deadline,
                "php -S for {name} not answering on {addr}:\n{}",
                std::fs::read_to_string(node.dir.join("php.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        node
    }

    /// (user, attempt) of every submission this node recorded.
    fn submissions(&self) -> Vec<(String, String)> {
        std::fs::read_to_string(self.dir.join("submissions.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .map(|(u, a)| (u.to_string(), a.to_string()))
            .collect()
    }

    fn sessions(&self) -> usize {
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

fn php_nodes() -> Vec<PhpNode> {
    let names = ["p1", "p2", "p3"];
    std::thread::scope(|sc| {
        let hs: Vec<_> = names
            .iter()
            .map(|n| sc.spawn(move || PhpNode::start(n)))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// The configuration text: frontend `web` on a free port to backend `moodle` with the
/// PHP nodes, a health check on the home page (which starts no session), and `cookie` (a `[backend.cookie]` table).
fn php_config(nodes: &[PhpNode], cookie: &str) -> String {
    let mut s = format!(
        "[log]\naccess = \"off\"\n\n[[frontend]]\nname = \"web\"\nbind = [\"127.0.0.1:{}\"]\n\
         backend = \"moodle\"\n\n[[backend]]\nname = \"moodle\"\n{cookie}\n\
         [backend.check]\nuri = \"/\"\nhost = \"moodle.test\"\n\
         expect_status = \"200\"\nexpect_string = \"Moodle\"\ninterval = \"500ms\"\n\n",
        free_port()
    );
    for n in nodes {
        s.push_str(&format!(
            "[[backend.server]]\nname = \"{}\"\naddress = \"{}\"\n\n",
            n.name, n.addr
        ));
    }
    s
}

// ---------------------------------------------------------------- the student script

struct Run {
    homes: HashMap<String, String>,
    loops: Vec<String>,
    failures: Vec<String>,
}

/// `users` students named `{prefix}NNN`, `threads` at a time, each on new connections
/// (so that the kernel spreads them over both cores).
fn run_exam(addr: SocketAddr, prefix: &str, users: usize, threads: usize) -> Run {
    let next = AtomicUsize::new(0);
    let homes = Mutex::new(HashMap::new());
    let loops = Mutex::new(Vec::new());
    let failures = Mutex::new(Vec::new());
    let t0 = Instant::now();
    std::thread::scope(|sc| {
        for _ in 0..threads {
            let (next, homes, loops, failures) = (&next, &homes, &loops, &failures);
            sc.spawn(move || loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= users || t0.elapsed() > Duration::from_secs(30) {
                    break;
                }
                let user = format!("{prefix}{i:03}");
                let mut b = Browser::new(addr);
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
fn wait_up(r: &Running, n: usize) {
    wait_until(Duration::from_secs(10), "every PHP node UP", || {
        let s = r.states();
        (0..n).all(|i| s.servers.get(i).map(|x| x.state) == Some(ServerState::Up))
    });
}

/// After a run: the health check on the PHP home page (`/`, sent in two parts, "Moodle"
/// in the second) has passed on every node, and the health-check thread still answers
/// and still probes.
fn assert_checks_alive(r: &Running) {
    let mut last = String::from("no answer");
    let ok = poll_for(Duration::from_secs(5), || {
        let Some(v) = r.stats() else {
            last = "r.stats() is None: the health-check thread does not answer".into();
            return false;
        };
        last = format!(
            "{:?}",
            v.backends[0]
                .servers
                .iter()
                .map(|s| (&s.name, &s.check))
                .collect::<Vec<_>>()
        );
        v.backends[0].servers.iter().all(|s| {
            s.check.as_ref().is_some_and(|c| {
                c.result.starts_with("passed")
                    && c.status == Some(200)
                    && c.seconds_ago.is_some_and(|a| a < 3.0)
            })
        })
    });
    assert!(
        ok,
        "the health check of every PHP node passes and keeps running: {last}"
    );
    let ans = r.admin("show servers");
    assert!(ans.starts_with("# "), "the admin answers: {ans}");
}

/// The script passes: no loop, no failure, every submission once on the user's node.
fn assert_clean_run(nodes: &[PhpNode], run: &Run, prefix: &str, users: usize) {
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

const USERS: usize = 60;

fn php_sessions_through_insert_cookie(driver: DriverChoice) {
    let nodes = php_nodes();
    let text = php_config(&nodes, "[backend.cookie]\nname = \"SERVERID\"\n");
    let r = start(cfg(&text, &[]), driver);
    assert_eq!(r.cores(), 2);
    wait_up(&r, nodes.len());
    let run = run_exam(r.addr("web"), "ins", USERS, 6);
    assert_clean_run(&nodes, &run, "ins", USERS);
    assert_checks_alive(&r);
    // Sessions stayed on their node: each node holds one session file per user of its
    // own (the login page's session, renewed at login), none for anyone else.
    for n in &nodes {
        let mine = run.homes.values().filter(|h| **h == n.name).count();
        assert_eq!(n.sessions(), mine, "{}: session files", n.name);
    }
}

fn php_sessions_through_prefix_cookie(driver: DriverChoice) {
    let nodes = php_nodes();
    let text = php_config(
        &nodes,
        "[backend.cookie]\nname = \"MoodleSession\"\nmode = \"prefix\"\n",
    );
    let r = start(cfg(&text, &[]), driver);
    wait_up(&r, nodes.len());
    let run = run_exam(r.addr("web"), "pre", USERS, 6);
    assert_clean_run(&nodes, &run, "pre", USERS);
    assert_checks_alive(&r);
    // What the browser holds: MoodleSession=<node>~<PHP's id>.
    let mut b = Browser::new(r.addr("web"));
    b.request("GET", "/login/index.php", None).unwrap();
    let jar = b.cookie_header();
    assert!(
        nodes
            .iter()
            .any(|n| jar.starts_with(&format!("MoodleSession={}~", n.name))),
        "prefix mode: {jar}"
    );
}

fn php_insert_cookie_named_moodlesession_loops(driver: DriverChoice) {
    let nodes = php_nodes();
    let text = php_config(&nodes, "[backend.cookie]\nname = \"MoodleSession\"\n");
    let path = Path::new("/tmp/x/lb.toml");
    // engine check refuses it ...
    let refused = config::load_str(&text, path);
    let diags = match refused {
        Ok(_) => panic!("an insert cookie named MoodleSession must be refused"),
        Err(d) => d
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("\n"),
    };
    assert!(diags.contains("MoodleSession"), "{diags}");
    // ... forced past it, the engine runs, and every student loops.
    let forced = config::load_str_with(&text, path, &config::LoadOptions { force: true })
        .unwrap_or_else(|d| panic!("forced: {d:?}"));
    let r = start(forced.config, driver);
    wait_up(&r, nodes.len());
    let users = 12;
    let run = run_exam(r.addr("web"), "loop", users, 4);
    assert!(
        run.failures.is_empty(),
        "the script itself works: {:?}",
        run.failures
    );
    assert_eq!(
        run.loops.len(),
        users,
        "with the persistence cookie named like PHP's session cookie, every login loops \
         (the script must catch it); finished: {:?}",
        run.homes
    );
    for n in &nodes {
        assert!(
            n.submissions().iter().all(|(u, _)| !u.starts_with("loop")),
            "{}: no one could submit",
            n.name
        );
    }
}
