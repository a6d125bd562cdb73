//! The admin socket (issue 5, point 3; the spec's "Admin socket"): a Unix socket of mode
//! 0660, one command per line, each answer ending with an empty line; `show servers`,
//! `show info`, `show binds` (port 0 resolved), `disable` / `enable`, `set server B/S state`, `set weight`, each changing
//! routing on both cores at once (many new connections, spread by SO_REUSEPORT); DRAIN and
//! weight 0 keep sticky clients; anything unknown answers `error:` and changes nothing.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::PathBuf;
use std::time::Duration;

use engine_tests::admin::Admin;
use engine_tests::*;

both_drivers!(
    disable_and_enable_on_both_cores,
    drain_keeps_sticky_clients,
    set_weight_on_both_cores,
);

/// Three origins s1..s3, the admin socket in a temp dir, `backend_extra` pasted in.
fn setup(driver: DriverChoice, backend_extra: &str) -> (Vec<Origin>, Running, PathBuf) {
    let o = origins(3);
    let dir = tmpdir("admin");
    let sock = dir.join("admin.sock");
    let tail = format!("[global]\nadmin_socket = \"{}\"\n", sock.display());
    let text = Web::new(&[&o[0], &o[1], &o[2]])
        .backend(backend_extra)
        .tail(&tail)
        .text();
    let r = start(cfg_in(&dir, &text, &[]), driver);
    wait_until(Duration::from_secs(5), "the admin socket", || sock.exists());
    (o, r, sock)
}

/// `n` GETs of `/`, each on a new connection (SO_REUSEPORT spreads them over both cores),
/// with optional extra headers; X-Node -> count. Each must be a 200.
fn spread(addr: SocketAddr, n: usize, headers: &[(&str, &str)]) -> HashMap<String, u32> {
    let mut m = HashMap::new();
    for i in 0..n {
        let mut c = Conn::connect(addr).expect("connect");
        let resp = c
            .request("GET", "/", headers, b"")
            .unwrap_or_else(|e| panic!("request {i}: {e}"));
        assert_eq!(resp.status, 200, "request {i}");
        *m.entry(resp.header("x-node").unwrap_or("?").to_string())
            .or_insert(0) += 1;
    }
    m
}

fn got(m: &HashMap<String, u32>, n: &str) -> u32 {
    m.get(n).copied().unwrap_or(0)
}

/// Port 0 binds: `show binds` names the port each got (and the stats endpoint's), and so
/// does the log at start, where a test or an operator reads it.
#[test]
fn show_binds_names_the_ports_that_port_0_got() {
    let o = origins(1);
    let dir = tmpdir("admin-binds");
    let sock = dir.join("admin.sock");
    let text = format!(
        "[global]\nadmin_socket = \"{}\"\nstats = \"127.0.0.1:0\"\n[log]\naccess = \"off\"\n\
         [[frontend]]\nname = \"web\"\nbind = [\"127.0.0.1:0\", \"127.0.0.2:0\"]\nbackend = \"app\"\n\
         [[frontend]]\nname = \"other\"\nbind = [\"127.0.0.1:0\"]\nbackend = \"app\"\n\
         [[backend]]\nname = \"app\"\n[[backend.server]]\nname = \"s1\"\naddress = \"{}\"\n",
        sock.display(),
        o[0].addr()
    );
    let e = process::EngineProc::start(&dir, &text, process::Spawn::default());
    let mut a = Admin::connect(&sock);
    let answer = a.ask("show binds");
    assert_eq!(answer[0], "# listener address", "{answer:?}");
    let binds = a.binds();
    let web = e.bound.addrs("web");
    assert_eq!(
        binds,
        [
            ("web".to_string(), web[0]),
            ("web".to_string(), web[1]),
            ("other".to_string(), e.addr("other"))
        ],
        "show binds and the log at start agree"
    );
    assert_eq!(web[0].ip().to_string(), "127.0.0.1");
    assert_eq!(web[1].ip().to_string(), "127.0.0.2");
    for (_, addr) in &binds {
        assert_ne!(addr.port(), 0, "{binds:?}");
        assert_eq!(
            tools::client::get(*addr, "/").unwrap().status,
            200,
            "{addr}"
        );
    }
    let stats = e.bound.stats();
    assert_eq!(
        answer.last().unwrap(),
        &format!("stats {stats}"),
        "{answer:?}"
    );
    assert_eq!(tools::client::get(stats, "/metrics").unwrap().status, 200);
}

#[test]
fn socket_mode_and_show_commands() {
    let (o, r, sock) = setup(DriverChoice::Auto, "");
    let md = std::fs::metadata(&sock).unwrap();
    assert!(md.file_type().is_socket(), "a Unix socket");
    assert_eq!(
        md.permissions().mode() & 0o777,
        0o660,
        "mode 0660, got {:o}",
        md.permissions().mode() & 0o777
    );
    let mut a = Admin::connect(&sock);
    let s = a.servers();
    assert_eq!(s.len(), 3, "one line per server: {s:?}");
    for (i, org) in o.iter().enumerate() {
        let l = &s[&format!("app/s{}", i + 1)];
        assert_eq!(l.address, org.addr().to_string());
        assert_eq!((l.state.as_str(), l.weight), ("UP", 1), "{l:?}");
        assert_eq!((l.active, l.queued), (0, 0), "{l:?}");
    }
    // Totals: all cores together (the cores report about once a second).
    let m = spread(r.addr("web"), 30, &[]);
    assert_eq!(m.values().sum::<u32>(), 30);
    wait_until(Duration::from_secs(5), "totals in show servers", || {
        let s = a.servers();
        (1..=3).all(|i| s[&format!("app/s{i}")].total == got(&m, &format!("s{i}")) as u64)
    });

    // show info, on the same connection.
    let info = a.ok("show info").join("\n").to_lowercase();
    for k in ["version", "uptime", "cores", "driver", "connections"] {
        assert!(info.contains(k), "show info names {k}: {info}");
    }
    let driver = match r.driver() {
        DriverKind::IoUring => "io_uring",
        DriverKind::Epoll => "epoll",
    };
    assert!(info.contains(driver), "show info: driver {driver}: {info}");
    assert!(
        info.lines().any(
            |l| l.contains("cores") && l.split(|c: char| !c.is_ascii_digit()).any(|w| w == "2")
        ),
        "show info: 2 cores: {info}"
    );
    assert!(
        info.contains(env!("CARGO_PKG_VERSION")),
        "show info: version {}: {info}",
        env!("CARGO_PKG_VERSION")
    );
    // A second client at the same time.
    let mut b = Admin::connect(&sock);
    assert_eq!(b.servers().len(), 3);
    assert_eq!(a.servers().len(), 3);
}

fn disable_and_enable_on_both_cores(driver: DriverChoice) {
    let (o, r, sock) = setup(driver, "");
    let addr = r.addr("web");
    let mut a = Admin::connect(&sock);
    // Both cores have balanced over all three.
    let m = spread(addr, 60, &[]);
    assert!((1..=3).all(|i| got(&m, &format!("s{i}")) >= 10), "{m:?}");

    a.ok("disable server app/s1");
    assert_eq!(a.state("app/s1").0, "MAINT");
    // At once, on every core: no wait.
    let before = o[0].requests();
    let m = spread(addr, 90, &[]);
    assert_eq!(got(&m, "s1"), 0, "s1 in MAINT took traffic: {m:?}");
    assert!(got(&m, "s2") >= 30 && got(&m, "s3") >= 30, "{m:?}");
    assert_eq!(o[0].requests(), before, "no request at all reached s1");

    a.ok("enable server app/s1");
    assert_eq!(a.state("app/s1").0, "UP");
    let m = spread(addr, 60, &[]);
    assert!(
        got(&m, "s1") >= 15,
        "s1 takes traffic again after enable: {m:?}"
    );
}

/// Requests on new connections until one lands on `node`; returns its persistence cookie
/// as `NAME=value`.
fn cookie_for(addr: SocketAddr, node: &str) -> String {
    for _ in 0..50 {
        let resp = tools::client::get(addr, "/").unwrap();
        if resp.header("x-node") == Some(node) {
            let sc = resp
                .headers_all("set-cookie")
                .into_iter()
                .find(|c| c.starts_with("SRV="))
                .unwrap_or_else(|| panic!("Set-Cookie SRV= from {node}: {:?}", resp.headers))
                .to_string();
            return sc.split(';').next().unwrap().trim().to_string();
        }
    }
    panic!("no request reached {node}");
}

fn drain_keeps_sticky_clients(driver: DriverChoice) {
    let (_o, r, sock) = setup(driver, "cookie = { name = \"SRV\" }");
    let addr = r.addr("web");
    let mut a = Admin::connect(&sock);
    let sticky = cookie_for(addr, "s1");
    let with = [("Cookie", sticky.as_str())];
    assert_eq!(got(&spread(addr, 10, &with), "s1"), 10, "the cookie sticks");

    a.ok("set server app/s1 state drain");
    assert_eq!(a.state("app/s1").0, "DRAIN");
    // Sticky clients keep s1, on every core.
    let m = spread(addr, 60, &with);
    assert_eq!(
        got(&m, "s1"),
        60,
        "DRAIN keeps clients whose cookie names it: {m:?}"
    );
    // New clients never get it.
    let m = spread(addr, 60, &[]);
    assert_eq!(got(&m, "s1"), 0, "DRAIN takes no new clients: {m:?}");

    // maint: even the sticky clients go elsewhere, with a fresh cookie.
    a.ok("set server app/s1 state maint");
    assert_eq!(a.state("app/s1").0, "MAINT");
    for i in 0..30 {
        let mut c = Conn::connect(addr).unwrap();
        let resp = c.request("GET", "/", &with, b"").unwrap();
        assert_eq!(resp.status, 200);
        assert_ne!(
            resp.header("x-node"),
            Some("s1"),
            "request {i}: s1 in MAINT"
        );
        let fresh = resp
            .headers_all("set-cookie")
            .into_iter()
            .find(|c| c.starts_with("SRV="))
            .map(|c| c.split(';').next().unwrap().trim().to_string());
        assert!(
            fresh.as_ref().is_some_and(|f| *f != sticky),
            "request {i}: a fresh cookie for another server, got {fresh:?}"
        );
    }

    a.ok("set server app/s1 state ready");
    assert_eq!(a.state("app/s1").0, "UP");
    let m = spread(addr, 60, &[]);
    assert!(got(&m, "s1") >= 15, "ready: new clients again: {m:?}");
}

fn set_weight_on_both_cores(driver: DriverChoice) {
    let (_o, r, sock) = setup(driver, "cookie = { name = \"SRV\" }");
    let addr = r.addr("web");
    let mut a = Admin::connect(&sock);
    let sticky = cookie_for(addr, "s1");
    let with = [("Cookie", sticky.as_str())];

    a.ok("set weight app/s1 0");
    assert_eq!(a.state("app/s1"), ("UP".to_string(), 0));
    let m = spread(addr, 90, &[]);
    assert_eq!(got(&m, "s1"), 0, "weight 0 takes no new clients: {m:?}");
    let m = spread(addr, 20, &with);
    assert_eq!(
        got(&m, "s1"),
        20,
        "weight 0 keeps sticky clients, like DRAIN: {m:?}"
    );

    // 3:1:1 on each core (smooth weighted round-robin over the cores' new connections).
    a.ok("set weight app/s1 3");
    assert_eq!(a.state("app/s1"), ("UP".to_string(), 3));
    let m = spread(addr, 100, &[]);
    assert!(
        (50..=70).contains(&got(&m, "s1")),
        "weight 3 of 5: about 60 of 100, got {m:?}"
    );

    a.ok("set weight app/s1 1");
    let m = spread(addr, 90, &[]);
    assert!(
        (1..=3).all(|i| (22..=38).contains(&got(&m, &format!("s{i}")))),
        "weights back to 1:1:1: {m:?}"
    );
}

#[test]
fn unknown_command_or_server_changes_nothing() {
    let (_o, r, sock) = setup(DriverChoice::Auto, "");
    let addr = r.addr("web");
    let mut a = Admin::connect(&sock);
    let states = |a: &mut Admin| -> Vec<(String, String, u64)> {
        let mut v: Vec<_> = a
            .servers()
            .into_iter()
            .map(|(k, l)| (k, l.state, l.weight))
            .collect();
        v.sort();
        v
    };
    let before = states(&mut a);
    for bad in [
        "frobnicate",
        "show",
        "show everything",
        "disable",
        "disable server",
        "disable server app/nope",
        "disable server nope/s1",
        "disable server app/s1 now",
        "enable server app/nope",
        "set server app/s1 state sleepy",
        "set server app/nope state drain",
        "set server app/s1 state",
        "set weight app/s1",
        "set weight app/s1 abc",
        "set weight app/s1 -1",
        "set weight app/s1 257",
        "set weight app/nope 5",
    ] {
        let ans = a.ask(bad);
        assert!(
            ans.first().is_some_and(|l| l.starts_with("error:")),
            "{bad:?} answers a line beginning error:, got {ans:?}"
        );
        assert_eq!(states(&mut a), before, "{bad:?} changed nothing");
    }
    // The connection still works, and routing is untouched on every core.
    let m = spread(addr, 60, &[]);
    assert!((1..=3).all(|i| got(&m, &format!("s{i}")) >= 15), "{m:?}");
    let st = r.states();
    assert!(
        st.servers.iter().all(|s| s.weight == 1),
        "published weights untouched"
    );
}
