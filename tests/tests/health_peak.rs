//! Health checks at an exam peak (issue 18), on three PHP nodes. The setup being replaced
//! marks a node DOWN when its health page is slow under load, its students move to the
//! others, which slow down in turn: a cascade. Here:
//! - a check that times out does not count while live traffic shows the node answering
//!   (`check.live_traffic`, on by default): no node goes DOWN and no student gets a 503,
//!   where the same settings with `live_traffic = false` take every node DOWN;
//! - a node killed outright, or answering 500 to everything, still goes DOWN;
//! - below `panic_below`, every node that accepts connections takes students;
//! - a node much slower than the others gets fewer new clients.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use engine::balance::ServerState;
use engine_tests::php::PhpNode;
use engine_tests::raw::{ka_server, ok_response};
use engine_tests::*;

both_drivers!(
    slow_health_pages_under_traffic_take_no_node_down,
    a_killed_node_still_goes_down_with_traffic_running,
    panic_below_spreads_students_over_failing_nodes,
);

/// Three nodes p1..p3 with 4 PHP workers each (a slow health page holds one).
fn nodes() -> Vec<PhpNode> {
    std::thread::scope(|sc| {
        let hs: Vec<_> = ["p1", "p2", "p3"]
            .iter()
            .map(|n| sc.spawn(move || PhpNode::start_with(n, 4)))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// The usual frontend and a backend of the nodes, checked on /health.php every 500 ms
/// with a 250 ms timeout, rise 2, fall 3.
fn config(nodes: &[PhpNode], check_extra: &str, backend_extra: &str) -> config::Config {
    let extra = format!(
        "{backend_extra}\n[backend.check]\nuri = \"/health.php\"\nhost = \"localhost\"\nexpect_status = \"200\"\nexpect_string = \"Moodle\"\ninterval = \"500ms\"\ntimeout = \"250ms\"\nrise = 2\nfall = 3\n{check_extra}\n"
    );
    let mut web = Web::new(&[]).backend(&extra);
    web.servers = nodes
        .iter()
        .map(|n| (n.name.clone(), n.addr, String::new()))
        .collect();
    web.config()
}

/// Students loading the login page, four at a time, until `stop`: the statuses seen and
/// the node of each 200.
struct Traffic {
    stop: Arc<AtomicBool>,
    statuses: Arc<Mutex<HashMap<u16, u64>>>,
    by_node: Arc<Mutex<HashMap<String, u64>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Traffic {
    fn start(addr: SocketAddr) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let statuses = Arc::new(Mutex::new(HashMap::new()));
        let by_node = Arc::new(Mutex::new(HashMap::new()));
        let threads = (0..4)
            .map(|_| {
                let (stop, statuses, by_node) = (stop.clone(), statuses.clone(), by_node.clone());
                std::thread::spawn(move || {
                    let deadline = Instant::now() + Duration::from_secs(60);
                    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                        let status = match tools::client::get(addr, "/login/index.php") {
                            Ok(r) => {
                                if r.status == 200 {
                                    let n = r.header("x-node").unwrap_or("?").to_string();
                                    *by_node.lock().unwrap().entry(n).or_default() += 1;
                                }
                                r.status
                            }
                            Err(_) => 0,
                        };
                        *statuses.lock().unwrap().entry(status).or_default() += 1;
                        // Kept: the students' pace, not a wait for anything.
                        std::thread::sleep(Duration::from_millis(20));
                    }
                })
            })
            .collect();
        Traffic {
            stop,
            statuses,
            by_node,
            threads,
        }
    }

    /// Waits until every node has answered `n` students: the traffic reaches them all.
    fn wait_every_node(&self, nodes: &[PhpNode], n: u64) {
        wait_until(
            Duration::from_secs(10),
            &format!("{n} students answered by every node"),
            || {
                let m = self.by_node.lock().unwrap();
                nodes
                    .iter()
                    .all(|p| m.get(&p.name).copied().unwrap_or(0) >= n)
            },
        );
    }

    fn stop(mut self) -> (HashMap<u16, u64>, HashMap<String, u64>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        let s = self.statuses.lock().unwrap().clone();
        let n = self.by_node.lock().unwrap().clone();
        (s, n)
    }
}

fn states(r: &Running) -> Vec<ServerState> {
    r.states().servers.iter().map(|s| s.state).collect()
}

/// Watches the states for `d`: whether any server left UP.
fn any_down_within(r: &Running, d: Duration) -> Option<Vec<ServerState>> {
    let end = Instant::now() + d;
    while Instant::now() < end {
        let s = states(r);
        if s.iter().any(|s| *s != ServerState::Up) {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    None
}

fn slow_health_pages_under_traffic_take_no_node_down(driver: DriverChoice) {
    let ns = nodes();
    for live in [true, false] {
        let extra = if live { "" } else { "live_traffic = false" };
        let r = start(config(&ns, extra, ""), driver);
        let traffic = Traffic::start(r.addr("web"));
        traffic.wait_every_node(&ns, 5);
        // The peak: every health page now takes 600 ms, past the 250 ms timeout; the
        // other pages still answer at once.
        for n in &ns {
            n.set("health-slow-ms", Some("600"));
        }
        if live {
            // 5 s: about ten timed-out checks per node, three times `fall`.
            let down = any_down_within(&r, Duration::from_secs(5));
            let (statuses, _) = traffic.stop();
            assert_eq!(down, None, "a node went DOWN although it served traffic");
            assert_eq!(
                statuses.keys().copied().collect::<Vec<_>>(),
                [200],
                "every student got the page: {statuses:?}"
            );
            let vetoed: u64 = r
                .admin("show servers")
                .lines()
                .skip(1)
                .filter_map(|l| l.split_whitespace().nth(7)?.parse::<u64>().ok())
                .sum();
            assert!(
                vetoed >= 9,
                "timeouts not counted, in show servers: {vetoed}"
            );
        } else {
            wait_until(
                Duration::from_secs(10),
                "every node DOWN without live_traffic",
                || states(&r).iter().all(|s| *s == ServerState::Down),
            );
            traffic.stop();
        }
        for n in &ns {
            n.set("health-slow-ms", None);
        }
        r.stop();
    }
}

fn a_killed_node_still_goes_down_with_traffic_running(driver: DriverChoice) {
    let mut ns = nodes();
    let r = start(config(&ns, "", ""), driver);
    let traffic = Traffic::start(r.addr("web"));
    traffic.wait_every_node(&ns, 5);
    let t0 = Instant::now();
    ns[1].kill();
    wait_until(Duration::from_secs(10), "the killed node DOWN", || {
        states(&r)[1] == ServerState::Down
    });
    // fall = 3 checks at 500 ms, the first failure speeding them up to 125 ms: about
    // 1 s. 6 s is a margin a loaded machine cannot miss (the wait above gives up at 10 s).
    assert!(
        t0.elapsed() < Duration::from_secs(6),
        "DOWN after {:?}",
        t0.elapsed()
    );
    // A node answering 500 to everything goes DOWN as before.
    ns[2].set("fail-all", Some("1"));
    wait_until(
        Duration::from_secs(5),
        "the node answering 500 DOWN",
        || states(&r)[2] == ServerState::Down,
    );
    let (_, by_node) = traffic.stop();
    assert!(by_node.get("p1").copied().unwrap_or(0) > 0);
    assert_eq!(states(&r)[0], ServerState::Up);
}

fn panic_below_spreads_students_over_failing_nodes(driver: DriverChoice) {
    let ns = nodes();
    // Two of three nodes fail their checks (their health page answers 503) yet serve
    // every other page.
    for n in &ns[1..] {
        n.set("health-status", Some("503"));
    }
    for (panic, want) in [(true, 3), (false, 1)] {
        let extra = if panic { "panic_below = 50" } else { "" };
        let r = start(config(&ns, "", extra), driver);
        wait_until(Duration::from_secs(10), "p2 and p3 DOWN", || {
            states(&r)[1..].iter().all(|s| *s == ServerState::Down)
        });
        assert_eq!(r.states().panic, [panic]);
        let traffic = Traffic::start(r.addr("web"));
        // Kept: the subject, students served over a fixed window.
        std::thread::sleep(Duration::from_millis(1500));
        let (statuses, by_node) = traffic.stop();
        assert_eq!(
            statuses.keys().copied().collect::<Vec<_>>(),
            [200],
            "{statuses:?}"
        );
        assert_eq!(
            by_node.len(),
            want,
            "panic {panic}: students on {by_node:?}"
        );
        let stats = r.stats().expect("stats");
        assert_eq!(stats.backends[0].panic, panic);
        r.stop();
    }
}

/// Three keep-alive servers answering after `delay_ms[i]`.
fn delayed_servers(delay_ms: [u64; 3]) -> Vec<engine_tests::raw::KaServer> {
    delay_ms
        .iter()
        .map(|&d| {
            let delay = Arc::new(AtomicU64::new(d));
            ka_server(move |c, _| {
                // Kept: the subject, a server this slow.
                std::thread::sleep(Duration::from_millis(delay.load(Ordering::Relaxed)));
                std::io::Write::write_all(c, &ok_response("ok")).is_ok()
            })
        })
        .collect()
}

/// Requests one at a time for `d`; how many went to each server (by address).
fn spread_over(r: &Running, servers: &[engine_tests::raw::KaServer], d: Duration) -> Vec<u64> {
    let before: Vec<u64> = servers
        .iter()
        .map(|s| s.requests.load(Ordering::SeqCst))
        .collect();
    let end = Instant::now() + d;
    let mut c = conn(r);
    while Instant::now() < end {
        assert_eq!(c.request("GET", "/", &[], b"").unwrap().status, 200);
    }
    servers
        .iter()
        .zip(before)
        .map(|(s, b)| s.requests.load(Ordering::SeqCst) - b)
        .collect()
}

fn slow_server_gets_fewer_new_clients(driver: DriverChoice, backend_extra: &str) {
    let servers = delayed_servers([1, 1, 120]);
    let mut web = Web::new(&[]).backend(backend_extra);
    web.servers = servers
        .iter()
        .enumerate()
        .map(|(i, s)| (format!("d{i}"), s.addr, String::new()))
        .collect();
    let r = start(web.config(), driver);
    // Long enough for the cores' reports to show the medians (20 responses each).
    let warm = spread_over(&r, &servers, Duration::from_secs(4));
    let later = spread_over(&r, &servers, Duration::from_secs(3));
    let total: u64 = later.iter().sum();
    assert!(
        later[2] * 8 < total,
        "the slow server's share of new requests ({later:?}, warm-up {warm:?}) should fall well below a third"
    );
    let stats = r.stats().unwrap();
    assert!(stats.backends[0].servers[2].slow, "shown slow in the stats");
}

mod slow {
    use super::*;
    #[test]
    fn leastconn_uring() {
        slow_server_gets_fewer_new_clients(DriverChoice::Uring, "balance = \"leastconn\"");
    }
    #[test]
    fn leastconn_epoll() {
        slow_server_gets_fewer_new_clients(DriverChoice::Epoll, "balance = \"leastconn\"");
    }
    #[test]
    fn roundrobin_with_slow_response() {
        slow_server_gets_fewer_new_clients(DriverChoice::Auto, "slow_response = \"50ms\"");
    }
    #[test]
    fn roundrobin_without_slow_response_keeps_its_share() {
        let servers = delayed_servers([1, 1, 120]);
        let mut web = Web::new(&[]);
        web.servers = servers
            .iter()
            .enumerate()
            .map(|(i, s)| (format!("d{i}"), s.addr, String::new()))
            .collect();
        let r = start(web.config(), DriverChoice::Auto);
        spread_over(&r, &servers, Duration::from_secs(3));
        let later = spread_over(&r, &servers, Duration::from_secs(2));
        let total: u64 = later.iter().sum();
        assert!(
            later[2] * 4 >= total,
            "plain roundrobin keeps its third: {later:?}"
        );
    }
}
