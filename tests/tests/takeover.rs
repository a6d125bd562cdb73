//! Binary takeover (issue 13): `engine --takeover ADMIN_SOCKET -c FILE` under load.
//! The new process receives the running engine's listening sockets over its admin
//! socket, starts serving on them with the server states handed over (a MAINT stays
//! MAINT), and the old one stops accepting, drains, and exits 0. 64 keep-alive
//! connections through it see no error at all. A takeover that cannot happen (a socket
//! that is not an engine's, a path with nothing behind it, a user that does not exist)
//! fails with a clear error and leaves the running engine serving. Under systemd the
//! admin socket's `upgrade` starts the takeover from inside the unit: the successor says
//! `MAINPID=` itself and the old one, draining, never says `STOPPING=1`.

use std::net::SocketAddr;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use engine_tests::admin::Admin;
use engine_tests::load::{Load, Spec};
use engine_tests::process::{Bound, EngineProc, Spawn};
use engine_tests::*;

fn text(dir: &Path, o: &[Origin], extra_global: &str) -> String {
    format!(
        "[global]\nadmin_socket = \"{dir}/admin.sock\"\n{extra_global}\n\
         [log]\naccess = \"{dir}/access.log\"\n\n\
         [[frontend]]\nname = \"web\"\nbind = [\"127.0.0.1:0\"]\nbackend = \"moodle\"\n\n\
         [[backend]]\nname = \"moodle\"\n\
         [backend.cookie]\nname = \"SERVERID\"\n\
         [backend.check]\nuri = \"/health\"\ninterval = \"300ms\"\n\n\
         [[backend.server]]\nname = \"m1\"\naddress = \"{}\"\ncookie = \"m1\"\n\n\
         [[backend.server]]\nname = \"m2\"\naddress = \"{}\"\ncookie = \"m2\"\n",
        o[0].addr(),
        o[1].addr(),
        dir = dir.display()
    )
}

/// Starts `engine --cores N --takeover SOCK -c CONFIG` as a second process.
fn take_over(old: &EngineProc, cores: &str, config: &Path, tag: &str) -> EngineProc {
    let stderr = old.dir.join(format!("{tag}.stderr"));
    let child = Command::new(engine_bin(true))
        .args(["--cores", cores, "--takeover"])
        .arg(old.dir.join("admin.sock"))
        .arg("-c")
        .arg(config)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .expect("spawn the new engine");
    EngineProc {
        child,
        dir: old.dir.clone(),
        config: config.to_path_buf(),
        stderr,
        bound: Bound::default(),
    }
}

fn serves(addr: SocketAddr) -> bool {
    tools::client::get(addr, "/").is_ok_and(|r| r.status == 200)
}

fn takeover_under_load(new_cores: &str) {
    let o = origins(2);
    let dir = tmpdir(&format!("takeover-{new_cores}"));
    let mut old = EngineProc::start(&dir, &text(&dir, &o, ""), Spawn::default());
    let addr = old.addr("web");
    let sock = dir.join("admin.sock");
    Admin::connect(&sock).ok("disable server moodle/m1");
    Admin::connect(&sock).ok("set weight moodle/m2 7");
    let load = Load::start(Spec {
        addr,
        conns: 64,
        path: "/".into(),
        cookie: Some("SERVERID".into()),
        limit: Duration::from_secs(40),
    });
    std::thread::sleep(Duration::from_secs(2));
    let t = Instant::now();
    let mut new = take_over(&old, new_cores, &old.config, "new");
    let status = old.wait_exit(Duration::from_secs(30));
    let drained = t.elapsed();
    assert_eq!(
        status.code(),
        Some(0),
        "the old engine exits 0:\n{}",
        old.said()
    );
    assert!(new.running(), "the new engine runs:\n{}", new.said());
    // The new one alone now.
    std::thread::sleep(Duration::from_secs(2));
    let report = load.stop();
    println!(
        "takeover to {new_cores} cores, old drained in {drained:?}: {}",
        report.summary()
    );
    assert!(report.ok > 1000, "{}", report.summary());
    assert!(
        report.bad_status.is_empty(),
        "{:?}",
        &report.bad_status[..report.bad_status.len().min(20)]
    );
    assert!(
        report.errors.is_empty(),
        "{:?}\nold:\n{}\nnew:\n{}",
        &report.errors[..report.errors.len().min(20)],
        old.said(),
        new.said()
    );
    assert!(old.said().contains("takeover done"), "{}", old.said());
    assert!(
        new.said().contains("took over from the engine with pid"),
        "{}",
        new.said()
    );
    // The admin socket is the new engine's, with the states handed over.
    let mut admin = Admin::connect(&sock);
    let servers = admin.servers();
    assert_eq!(servers["moodle/m1"].state, "MAINT", "MAINT handed over");
    assert_eq!(
        servers["moodle/m2"].weight, 7,
        "the run-time weight handed over"
    );
    assert!(admin
        .ask("show info")
        .iter()
        .any(|l| l == &format!("pid: {}", new.pid())));
    assert!(serves(addr));
    new.signal(SIGTERM);
    assert_eq!(new.wait_exit(Duration::from_secs(20)).code(), Some(0));
    assert!(
        !sock.exists(),
        "the admin socket removed by the engine that owned it"
    );
}

#[test]
fn a_new_binary_takes_over_under_load_without_an_error() {
    takeover_under_load("2");
}

#[test]
fn a_takeover_onto_fewer_cores_accepts_on_every_socket_it_received() {
    // Two sockets arrive for one core: both are accepted on, none left unserved.
    takeover_under_load("1");
}

#[test]
fn a_takeover_that_cannot_happen_leaves_the_running_engine_serving() {
    let o = origins(2);
    let dir = tmpdir("takeover-bad");
    let mut old = EngineProc::start(&dir, &text(&dir, &o, ""), Spawn::default());
    let addr = old.addr("web");
    let run = |args: &[&str], config: &Path| {
        let out = Command::new(engine_bin(true))
            .args(args)
            .arg("-c")
            .arg(config)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // A socket that is not an engine's: it answers something else.
    let other = dir.join("other.sock");
    let l = std::os::unix::net::UnixListener::bind(&other).unwrap();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for mut c in l.incoming().flatten() {
            let mut b = [0u8; 64];
            let _ = c.read(&mut b);
            let _ = c.write_all(b"220 smtp.example ESMTP\r\n");
        }
    });
    let (code, err) = run(&["--takeover", other.to_str().unwrap()], &old.config);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("did not answer as an engine's admin socket"),
        "{err}"
    );
    assert!(err.contains("the running engine is untouched"), "{err}");
    // A path with nothing behind it.
    let (code, err) = run(&["--takeover", "/nonexistent/admin.sock"], &old.config);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("cannot reach an engine on /nonexistent/admin.sock"),
        "{err}"
    );
    // A file that cannot be read.
    let (code, err) = run(
        &["--takeover", dir.join("admin.sock").to_str().unwrap()],
        &dir.join("missing.toml"),
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("missing.toml"), "{err}");
    // A user that does not exist: refused before the sockets are asked for.
    let bad = dir.join("bad-user.toml");
    std::fs::write(&bad, text(&dir, &o, "user = \"no-such-user-here\"\n")).unwrap();
    let (code, err) = run(
        &["--takeover", dir.join("admin.sock").to_str().unwrap()],
        &bad,
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("no-such-user-here") && err.contains("does not exist"),
        "{err}"
    );
    // Untouched: serving, its admin socket answering, no stop begun.
    assert!(old.running(), "{}", old.said());
    assert!(serves(addr));
    let mut admin = Admin::connect(&dir.join("admin.sock"));
    assert!(admin
        .ask("show info")
        .iter()
        .any(|l| l == &format!("pid: {}", old.pid())));
    assert!(!old.said().contains("takeover done"), "{}", old.said());
}

/// Whether `pid` has exited (gone, or a zombie no one reaps: it was orphaned).
fn exited(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.rsplit(") ").next().is_some_and(|r| r.starts_with('Z')))
        .unwrap_or(true)
}

#[test]
fn the_admin_upgrade_starts_the_binary_again_and_tells_systemd_its_new_main_pid() {
    let o = origins(2);
    let dir = tmpdir("upgrade");
    let cfg = dir.join("lb.toml");
    std::fs::write(&cfg, text(&dir, &o, "")).unwrap();
    let notify = dir.join("notify.sock");
    let systemd = UnixDatagram::bind(&notify).unwrap();
    systemd
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let heard = |until: &dyn Fn(&[String]) -> bool, limit: Duration| {
        let deadline = Instant::now() + limit;
        let (mut got, mut buf) = (Vec::new(), vec![0u8; 4096]);
        while !until(&got) && Instant::now() < deadline {
            if let Ok(n) = systemd.recv(&mut buf) {
                got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
        got
    };
    let stderr = dir.join("engine.stderr");
    let child = Command::new(engine_bin(true))
        .args(["--cores", "2", "-c"])
        .arg(&cfg)
        .env("NOTIFY_SOCKET", &notify)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    let mut old = EngineProc {
        child,
        dir: dir.clone(),
        config: cfg.clone(),
        stderr,
        bound: Bound::default(),
    };
    let ready = heard(&|m| !m.is_empty(), Duration::from_secs(20));
    assert!(
        ready[0].starts_with("READY=1\n"),
        "{ready:?}\n{}",
        old.said()
    );
    let sock = dir.join("admin.sock");
    Admin::connect(&sock).ok("disable server moodle/m1");
    let addr = Bound::parse(&old.said()).addr("web");
    let load = Load::start(Spec {
        addr,
        conns: 16,
        path: "/".into(),
        cookie: Some("SERVERID".into()),
        limit: Duration::from_secs(40),
    });
    std::thread::sleep(Duration::from_secs(1));

    let answer = Admin::connect(&sock).ask("upgrade");
    let new_pid: u32 = answer[0]
        .strip_prefix("ok: pid ")
        .and_then(|r| r.split(' ').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{answer:?}"));
    assert!(answer[0].contains("is taking over"), "{answer:?}");
    let main_pid = format!("MAINPID={new_pid}\n");
    let told = heard(
        &|m| m.iter().any(|m| m.starts_with(&main_pid)),
        Duration::from_secs(20),
    );
    assert!(
        told.last().is_some_and(|m| m.contains("READY=1\n")),
        "the successor says it is the main process, and ready: {told:?}\n{}",
        old.said()
    );
    assert_eq!(old.wait_exit(Duration::from_secs(30)).code(), Some(0));
    let after = heard(&|_| false, Duration::from_secs(1));
    assert!(
        !told.iter().chain(&after).any(|m| m.contains("STOPPING=1")),
        "the old engine's drain is not the service's stop: {told:?} {after:?}"
    );
    std::thread::sleep(Duration::from_secs(1));
    let report = load.stop();
    assert!(report.ok > 100, "{}", report.summary());
    assert!(
        report.errors.is_empty() && report.bad_status.is_empty(),
        "{}\n{}",
        report.summary(),
        old.said()
    );
    let mut admin = Admin::connect(&sock);
    assert!(admin
        .ask("show info")
        .iter()
        .any(|l| l == &format!("pid: {new_pid}")));
    assert_eq!(admin.servers()["moodle/m1"].state, "MAINT", "handed over");
    // Stopping the successor is the service's stop.
    unsafe { libc::kill(new_pid as i32, SIGTERM) };
    let stopping = heard(&|m| !m.is_empty(), Duration::from_secs(10));
    assert!(stopping[0].starts_with("STOPPING=1\n"), "{stopping:?}");
    wait_until(Duration::from_secs(20), "the successor exits", || {
        exited(new_pid)
    });
}
