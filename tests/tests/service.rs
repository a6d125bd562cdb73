//! Running as a service (issue 13): the systemd unit in tools/systemd passes
//! `systemd-analyze verify`; the readiness protocol (`Type=notify`) as systemd reads it,
//! over a datagram socket: READY=1 once every core listens, RELOADING=1 with
//! MONOTONIC_USEC then READY=1 around a reload (SIGHUP and the admin socket's), and
//! STOPPING=1 on the way out; the access log reopened by a reload (logrotate); `engine
//! check --host` with each finding and its fix; `engine status`, keepalived's check.

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use engine_tests::admin::Admin;
use engine_tests::process::{Bound, EngineProc};
use engine_tests::*;

fn config(dir: &Path, o: &[Origin], log: &Path) -> String {
    let servers: String = o
        .iter()
        .enumerate()
        .map(|(i, o)| {
            format!(
                "[[backend.server]]\nname = \"m{}\"\naddress = \"{}\"\n\n",
                i + 1,
                o.addr()
            )
        })
        .collect();
    format!(
        "[global]\nadmin_socket = \"{dir}/admin.sock\"\n\n[log]\naccess = \"{log}\"\n\n\
         [[frontend]]\nname = \"web\"\nbind = [\"127.0.0.1:0\"]\nbackend = \"moodle\"\n\n\
         [[backend]]\nname = \"moodle\"\n[backend.check]\nuri = \"/health\"\ninterval = \"200ms\"\nrise = 1\nfall = 1\n\n{servers}",
        dir = dir.display(),
        log = log.display()
    )
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    let ok = Command::new("systemd-analyze")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "systemd-analyze is needed (apt-get install systemd; tests/run.sh installs it)"
    );
    // The unit as shipped, with its two paths where this machine has them: the binary
    // just built and a configuration beside the unit.
    let dir = tmpdir("unit");
    let unit = std::fs::read_to_string(workspace().join("tools/systemd/engine.service")).unwrap();
    for want in [
        "Type=notify",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "LimitNOFILE=",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "User=engine",
        "Group=engine",
    ] {
        assert!(unit.contains(want), "the unit has {want}");
    }
    let bin = engine_bin(true);
    let unit = unit
        .replace("/usr/local/bin/engine", bin.to_str().unwrap())
        .replace("/etc/engine/lb.toml", dir.join("lb.toml").to_str().unwrap());
    let path = dir.join("engine.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "systemd-analyze verify:\n{said}");
    assert!(
        !said.contains("engine.service:"),
        "no complaint about the unit:\n{said}"
    );
}

/// The datagrams systemd would receive, each as text.
fn messages(
    sock: &UnixDatagram,
    until: impl Fn(&[String]) -> bool,
    limit: Duration,
) -> Vec<String> {
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    let mut buf = vec![0u8; 4096];
    while !until(&got) && Instant::now() < deadline {
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        if let Ok(n) = sock.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    got
}

#[test]
fn systemd_hears_ready_reloading_and_stopping_and_a_reload_reopens_the_log() {
    let o = origins(1);
    let dir = tmpdir("notify");
    let log = dir.join("access.log");
    let notify = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&notify).unwrap();
    let cfg = dir.join("lb.toml");
    std::fs::write(&cfg, config(&dir, &o, &log)).unwrap();
    let child = Command::new(engine_bin(true))
        .args(["--cores", "2", "-c"])
        .arg(&cfg)
        .env("NOTIFY_SOCKET", &notify)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("engine.stderr")).unwrap())
        .spawn()
        .unwrap();
    let mut e = EngineProc {
        child,
        dir: dir.clone(),
        config: cfg.clone(),
        stderr: dir.join("engine.stderr"),
        bound: Default::default(),
    };
    let ready = messages(&sock, |m| !m.is_empty(), Duration::from_secs(20));
    assert!(
        ready.first().is_some_and(|m| m.starts_with("READY=1\n")),
        "{ready:?}\n{}",
        e.said()
    );
    // READY means every core listens, on the port it said it bound.
    let addr = Bound::parse(&e.said()).addr("web");
    let port = addr.port();
    assert_eq!(
        listeners_on(port),
        2,
        "READY=1 came after both cores listened"
    );
    assert_eq!(tools::client::get(addr, "/").unwrap().status, 200);

    // logrotate moves the file; the reload opens a new one.
    read_lines_until(&log, 1, Duration::from_secs(5));
    let moved = dir.join("access.log.1");
    std::fs::rename(&log, &moved).unwrap();
    e.signal(libc::SIGHUP);
    let around = messages(&sock, |m| m.len() >= 2, Duration::from_secs(10));
    assert_eq!(around.len(), 2, "{around:?}");
    let mut first = around[0].lines();
    assert_eq!(first.next(), Some("RELOADING=1"), "{around:?}");
    let usec: u64 = first
        .next()
        .and_then(|l| l.strip_prefix("MONOTONIC_USEC="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("MONOTONIC_USEC with RELOADING=1: {around:?}"));
    assert!(usec > 0);
    assert!(around[1].starts_with("READY=1\n"), "{around:?}");
    wait_until(Duration::from_secs(5), "a new log file", || log.exists());
    for i in 0..3 {
        assert_eq!(
            tools::client::get(addr, &format!("/after/{i}"))
                .unwrap()
                .status,
            404
        );
    }
    let new = read_lines_until(&log, 3, Duration::from_secs(5));
    assert!(new.iter().any(|l| l.contains("/after/2")), "{new:#?}");
    assert!(!file_lines(&moved).iter().any(|l| l.contains("/after/")));

    // The admin socket's reload says the same.
    let mut admin = Admin::connect(&dir.join("admin.sock"));
    assert_eq!(admin.ask("reload"), ["ok"]);
    let around = messages(&sock, |m| m.len() >= 2, Duration::from_secs(10));
    assert!(
        around[0].starts_with("RELOADING=1\n") && around[1].starts_with("READY=1\n"),
        "{around:?}"
    );
    // A refused one too: the running configuration stays, and systemd is told so.
    std::fs::write(&cfg, "[global\n").unwrap();
    let answer = admin.ask("reload");
    assert!(answer[0].starts_with("error: reload refused"), "{answer:?}");
    let around = messages(&sock, |m| m.len() >= 2, Duration::from_secs(10));
    assert!(around[1].starts_with("READY=1\n"), "{around:?}");

    e.signal(SIGTERM);
    let stopping = messages(&sock, |m| !m.is_empty(), Duration::from_secs(10));
    assert!(
        stopping
            .first()
            .is_some_and(|m| m.starts_with("STOPPING=1\n")),
        "{stopping:?}"
    );
    assert_eq!(e.wait_exit(Duration::from_secs(20)).code(), Some(0));
}

fn engine(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(engine_bin(true)).args(args).output().unwrap();
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn check_host_names_each_limit_found_needed_and_its_fix() {
    let o = origins(1);
    let dir = tmpdir("check-host");
    let cfg = dir.join("lb.toml");
    let text = config(&dir, &o, &dir.join("a.log"));
    std::fs::write(
        &cfg,
        text.replace(
            "[global]
",
            "[global]
maxconn = 1000
",
        ),
    )
    .unwrap();
    let (code, out) = engine(&["check", "--host", "-c", cfg.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{out}");
    for what in [
        "RLIMIT_NOFILE",
        "RLIMIT_MEMLOCK",
        "net.core.somaxconn",
        "net.ipv4.ip_local_port_range",
    ] {
        assert!(
            out.lines()
                .any(|l| l.starts_with("ok: ") && l.contains(what)),
            "{what}:\n{out}"
        );
    }
    assert!(out.contains("this host holds the configuration"), "{out}");
    // No local port range holds a million server connections.
    std::fs::write(
        &cfg,
        text.replace("[global]\n", "[global]\nmaxconn = 1000000\n"),
    )
    .unwrap();
    let (code, out) = engine(&["check", "--host", "-c", cfg.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{out}");
    let fail = out
        .lines()
        .find(|l| l.starts_with("FAIL: ") && l.contains("ip_local_port_range"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        fail.contains("needed 1000000 ports")
            && fail.contains("fix: sysctl -w net.ipv4.ip_local_port_range"),
        "{fail}"
    );
    // An invalid file is 1 too, before any host check.
    std::fs::write(&cfg, "[global\n").unwrap();
    let (code, out) = engine(&["check", "--host", "-c", cfg.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{out}");
}

#[test]
fn status_exits_0_only_with_a_server_up_in_every_backend() {
    let o = origins(2);
    let dir = tmpdir("status");
    let e = EngineProc::start(
        &dir,
        &config(&dir, &o, &dir.join("a.log")),
        engine_tests::process::Spawn::default(),
    );
    let sock = dir.join("admin.sock");
    let status = || engine(&["status", "-s", sock.to_str().unwrap()]);
    wait_until(Duration::from_secs(10), "status 0", || {
        status().0 == Some(0)
    });
    let (_, out) = status();
    assert_eq!(
        out.trim(),
        "engine running: every backend has a server UP (1 backend)"
    );
    assert_eq!(out.lines().count(), 1);
    let mut admin = Admin::connect(&sock);
    admin.ok("disable server moodle/m1");
    o[1].set_healthy(false);
    wait_until(
        Duration::from_secs(10),
        "status 1 with no server UP",
        || status().0 == Some(1),
    );
    let (_, out) = status();
    assert!(
        out.contains("no server UP in: moodle (m1 MAINT, m2 DOWN)"),
        "{out}"
    );
    o[1].set_healthy(true);
    wait_until(Duration::from_secs(10), "status 0 again", || {
        status().0 == Some(0)
    });
    drop(e);
    // No engine: 1, and why.
    let (code, out) = status();
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.starts_with("engine not running: cannot connect to"),
        "{out}"
    );
    // A socket that is not an engine's.
    let other = dir.join("other.sock");
    let l = std::os::unix::net::UnixListener::bind(&other).unwrap();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for mut c in l.incoming().flatten() {
            let mut b = [0u8; 64];
            let _ = c.read(&mut b);
            let _ = c.write_all(b"hello\n\n");
        }
    });
    let (code, out) = engine(&["status", "-s", other.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{out}");
}
