//! What an operator does to a running engine, on the release binary (issue 16):
//! SIGUSR1 reopens the access log after logrotate moved it, SIGUSR2 and SIGPIPE kill
//! nothing; the privilege drop clears supplementary groups and refuses a user that does
//! not exist; the log has no colour codes when it is not a terminal; more workers than
//! cores are warned about; failed TLS handshakes are counted and logged at most once a
//! second per core.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use engine_tests::process::{EngineProc, Spawn};
use engine_tests::*;

fn get_ok(addr: SocketAddr, path: &str) {
    let r = tools::client::get(addr, path).expect("request");
    assert_eq!(r.status, 200, "{path}");
}

#[test]
fn usr1_reopens_the_access_log_and_usr2_and_pipe_kill_nothing() {
    let o = origins(1);
    let dir = tmpdir("usr1");
    let log = dir.join("access.log");
    let text = Web::new(&[&o[0]])
        .tail(&format!("[log]\naccess = \"{}\"\n", log.display()))
        .text();
    let mut e = EngineProc::start(&dir, &text, Spawn::default());
    let port = e.port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    for i in 0..5 {
        get_ok(addr, &format!("/echo/before/{i}"));
    }
    read_lines_until(&log, 5, Duration::from_secs(5));
    // logrotate: move the file, then signal.
    let moved = dir.join("access.log.1");
    std::fs::rename(&log, &moved).unwrap();
    e.signal(libc::SIGUSR1);
    // A slow request in flight across the other signals.
    let slow = std::thread::spawn(move || tools::client::get(addr, "/slow?ms=800"));
    wait_until(Duration::from_secs(5), "the slow request in flight", || {
        o[0].active() >= 1
    });
    for sig in [libc::SIGUSR2, libc::SIGPIPE, libc::SIGUSR2] {
        e.signal(sig);
    }
    assert!(
        poll_for(Duration::from_secs(5), || log.exists()),
        "a new log file"
    );
    for i in 0..5 {
        get_ok(addr, &format!("/echo/after/{i}"));
    }
    let resp = slow
        .join()
        .unwrap()
        .expect("the slow request survives the signals");
    assert_eq!(resp.status, 200);
    let new = read_lines_until(&log, 6, Duration::from_secs(5));
    assert!(new.iter().any(|l| l.contains("/after/4")), "{new:#?}");
    assert!(!new.iter().any(|l| l.contains("/before/")), "{new:#?}");
    let old = file_lines(&moved);
    assert_eq!(old.iter().filter(|l| l.contains("/before/")).count(), 5);
    assert!(!old.iter().any(|l| l.contains("/after/")), "{old:#?}");
    assert!(
        e.running(),
        "alive after SIGUSR1, SIGUSR2, SIGPIPE:\n{}",
        e.said()
    );
    e.signal(SIGTERM);
    assert_eq!(e.wait_exit(Duration::from_secs(10)).code(), Some(0));
}

#[test]
fn privilege_drop_clears_supplementary_groups() {
    let o = origins(1);
    let dir = tmpdir("groups");
    let text = Web::new(&[&o[0]])
        .tail("[global]\nuser = \"nobody\"\n")
        .text();
    // Started (as root) with the groups adm (4) and sudo (27).
    let how = Spawn {
        pre_exec: Some(Box::new(|| {
            let groups: [libc::gid_t; 2] = [4, 27];
            // SAFETY: setgroups on a local array, between fork and exec.
            if unsafe { libc::setgroups(2, groups.as_ptr()) } == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        })),
        ..Spawn::default()
    };
    let mut e = EngineProc::start(&dir, &text, how);
    let port = e.port();
    assert!(
        poll_for(Duration::from_secs(5), || {
            std::fs::read_to_string(format!("/proc/{}/status", e.pid()))
                .is_ok_and(|s| s.contains("Uid:\t65534"))
        }),
        "runs as nobody"
    );
    let status = std::fs::read_to_string(format!("/proc/{}/status", e.pid())).unwrap();
    let groups: Vec<&str> = status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(groups, ["65534"], "only nobody's own group:\n{status}");
    get_ok(SocketAddr::from(([127, 0, 0, 1], port)), "/");
    e.signal(SIGTERM);
    assert_eq!(e.wait_exit(Duration::from_secs(10)).code(), Some(0));
}

#[test]
fn an_engine_already_running_as_its_user_starts_as_systemds_user_would_start_it() {
    // The unit's `User=engine` with `user = "engine"` in the file, and an `upgrade`'s
    // successor, which its predecessor started after it switched: no groups to set.
    let o = origins(1);
    let dir = tmpdir("already-user");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let text = Web::new(&[&o[0]])
        .tail("[global]\nuser = \"nobody\"\ngroup = \"nogroup\"\n")
        .text();
    let how = Spawn {
        pre_exec: Some(Box::new(|| {
            // SAFETY: credential calls between fork and exec.
            let ok = unsafe {
                libc::setgroups(0, std::ptr::null()) == 0
                    && libc::setgid(65534) == 0
                    && libc::setuid(65534) == 0
            };
            if ok {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        })),
        ..Spawn::default()
    };
    let mut e = EngineProc::start(&dir, &text, how);
    let port = e.port();
    get_ok(SocketAddr::from(([127, 0, 0, 1], port)), "/");
    assert!(e.running(), "{}", e.said());
    e.signal(SIGTERM);
    assert_eq!(e.wait_exit(Duration::from_secs(10)).code(), Some(0));
}

#[test]
fn a_user_that_does_not_exist_stops_the_engine_with_exit_1() {
    let o = origins(1);
    let dir = tmpdir("nouser");
    let text = Web::new(&[&o[0]])
        .tail("[global]\nuser = \"no-such-user-here\"\n")
        .text();
    std::fs::write(dir.join("lb.toml"), &text).unwrap();
    let out = std::process::Command::new(engine_bin(true))
        .args(["--cores", "1", "-c"])
        .arg(dir.join("lb.toml"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("no-such-user-here"), "{err}");
}

#[test]
fn the_log_has_no_colour_off_a_terminal_and_warns_of_more_workers_than_cores() {
    let o = origins(1);
    let dir = tmpdir("colour");
    let text = Web::new(&[&o[0]]).text();
    let how = Spawn {
        args: vec!["--cores", "8", "--no-pin"],
        ..Spawn::default()
    };
    let mut e = EngineProc::start(&dir, &text, how);
    let cores = std::thread::available_parallelism().unwrap().get();
    let said = e.said();
    assert!(said.contains("engine running"), "{said}");
    assert!(
        !said.contains('\u{1b}'),
        "no ANSI colour codes in a file:\n{said}"
    );
    if cores < 8 {
        assert!(
            said.contains(&format!("8 worker cores on a host with {cores}")),
            "{said}"
        );
        assert!(said.contains("core 0: workers 0,"), "{said}");
    }
    e.signal(SIGTERM);
    assert_eq!(e.wait_exit(Duration::from_secs(10)).code(), Some(0));
}

#[test]
fn failed_tls_handshakes_are_counted_and_logged_at_most_once_a_second() {
    let o = origins(1);
    let dir = tmpdir("tls-fail");
    let cert = tools::certs::write_combined(&dir, "site.pem", &["localhost"]);
    let text = Web::new(&[&o[0]])
        .frontend(&format!("tls = {{ certs = [\"{}\"] }}", cert.display()))
        .tail("[global]\nstats = \"127.0.0.1:0\"\n")
        .text();
    let mut e = EngineProc::start(&dir, &text, Spawn::default());
    let port = e.port();
    let t0 = Instant::now();
    for _ in 0..100 {
        // Plain HTTP on the TLS port: a failed handshake.
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        let _ = read_until_close(&mut s, Duration::from_secs(5));
    }
    // A second later, one more: its line says how many went unsaid. (Kept: the subject,
    // the log's one-second rate window has to pass.)
    std::thread::sleep(Duration::from_millis(1100));
    for _ in 0..2 {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        let _ = read_until_close(&mut s, Duration::from_secs(5));
    }
    let secs = t0.elapsed().as_secs() + 2;
    let summed = poll_for(Duration::from_secs(5), || {
        e.said().contains("more failed handshakes")
    });
    let said = e.said();
    let lines = said.lines().filter(|l| l.contains("TLS handshake")).count() as u64;
    assert!(
        (1..=2 * secs).contains(&lines),
        "{lines} lines for 100 failures in about {secs} s:\n{said}"
    );
    assert!(summed, "{said}");
    e.signal(SIGTERM);
    assert_eq!(e.wait_exit(Duration::from_secs(10)).code(), Some(0));
}

#[test]
fn failed_tls_handshakes_show_in_the_stats() {
    let o = origins(1);
    let dir = tmpdir("tls-stats");
    let cert = tools::certs::write_combined(&dir, "site.pem", &["localhost"]);
    let text = Web::new(&[&o[0]])
        .frontend(&format!("tls = {{ certs = [\"{}\"] }}", cert.display()))
        .tail("[global]\nstats = \"127.0.0.1:0\"\n")
        .text();
    let r = start(cfg_in(&dir, &text, &[]), DriverChoice::Auto);
    for _ in 0..30 {
        let mut s = TcpStream::connect(r.addr("web")).unwrap();
        let _ = s.write_all(b"not TLS at all\r\n\r\n");
        let _ = read_until_close(&mut s, Duration::from_secs(5));
    }
    let stats = r.stats_addr().unwrap();
    wait_until(
        Duration::from_secs(5),
        "30 failed handshakes in /stats.json",
        || {
            let mut c = Conn::connect(stats).unwrap();
            let j: serde_json::Value =
                serde_json::from_str(&c.request("GET", "/stats.json", &[], b"").unwrap().text())
                    .unwrap();
            j["frontends"][0]["tls_handshake_failures"] == 30
        },
    );
    let mut c = Conn::connect(stats).unwrap();
    let m = c.request("GET", "/metrics", &[], b"").unwrap().text();
    assert!(
        m.contains("engine_frontend_tls_handshake_failures_total{frontend=\"web\"} 30"),
        "{m}"
    );
}
