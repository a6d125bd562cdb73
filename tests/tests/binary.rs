//! The command line (points 1, 2, 8, 9) on the debug binary: `engine check`, `--cores N`
//! giving N SO_REUSEPORT listeners (also in-process), `--driver auto|uring|epoll`, SIGTERM
//! exits 0, bad arguments exit 2, `engine demo` answers and stops on SIGINT.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use engine_tests::*;

both_drivers!(in_process_cores_give_listeners, binary_cores_and_driver);

fn engine() -> Command {
    Command::new(engine_bin(false))
}

fn check(path: &Path) -> (i32, String) {
    let out = engine()
        .arg("check")
        .arg("-c")
        .arg(path)
        .output()
        .expect("run engine check");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn check_accepts_the_spec_example() {
    let (code, out) = check(Path::new("/work/shared/spec/lb.example.toml"));
    assert_eq!(
        code, 0,
        "engine check on the spec's lb.example.toml:\n{out}"
    );
}

#[test]
fn check_prints_errors_and_exits_1() {
    let dir = tmpdir("check-bad");
    let p = dir.join("lb.toml");
    std::fs::write(
        &p,
        "[defaults]\ntimeout_connect = \"5 parsecs\"\n\n[[frontend]]\nname = \"web\"\nbind = [\"127.0.0.1:8080\"]\nbackend = \"nope\"\n",
    )
    .unwrap();
    let (code, out) = check(&p);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("{}:2: error", p.display())),
        "file:line of the bad duration:\n{out}"
    );
    assert!(out.contains("fix:"), "a fix for each mistake:\n{out}");
    assert!(out.contains("nope"), "the unknown backend named:\n{out}");
    // An unknown field is an error too.
    std::fs::write(&p, "[global]\nmaxconnn = 5\n").unwrap();
    let (code, out) = check(&p);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("maxconnn"), "{out}");
}

#[test]
fn check_prints_warnings_and_exits_0() {
    let o = origins(1);
    let dir = tmpdir("check-warn");
    let p = dir.join("lb.toml");
    let text = Web::new(&[&o[0]]).text()
        + &format!(
            "[[backend]]\nname = \"unused\"\n[[backend.server]]\nname = \"u1\"\naddress = \"{}\"\n",
            o[0].addr()
        );
    std::fs::write(&p, text).unwrap();
    let (code, out) = check(&p);
    assert_eq!(code, 0, "warnings only:\n{out}");
    assert!(out.contains("warning"), "the warning is printed:\n{out}");
    assert!(out.contains("unused"), "{out}");
}

#[test]
fn bad_arguments_exit_2_and_version_0() {
    let st = engine().arg("--no-such-flag").output().unwrap().status;
    assert_eq!(st.code(), Some(2));
    let st = engine()
        .args(["--driver", "floppy", "check", "-c", "x"])
        .output()
        .unwrap()
        .status;
    assert_eq!(st.code(), Some(2));
    let out = engine().arg("--version").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let v = String::from_utf8_lossy(&out.stdout);
    assert!(v.contains("io_uring") || v.contains("epoll"), "{v}");
}

#[test]
fn refused_configuration_exits_1() {
    let dir = tmpdir("refused");
    let p = dir.join("lb.toml");
    std::fs::write(&p, "[global]\nmaxconn = \"lots\"\n").unwrap();
    let out = engine().arg("-c").arg(&p).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn in_process_cores_give_listeners(driver: DriverChoice) {
    let o = origins(1);
    let r = start_cores(Web::new(&[&o[0]]).config(), driver, 3);
    let port = r.addr("web").port();
    assert_eq!(
        listeners_on(port),
        3,
        "3 cores: 3 SO_REUSEPORT listeners on port {port}"
    );
    assert_eq!(r.frontend_addrs("web").len(), 1);
    for _ in 0..10 {
        assert_eq!(tools::client::get(r.addr("web"), "/").unwrap().status, 200);
    }
}

/// Runs the binary on a config file (its port 0 bind resolved by the engine); waits for
/// `cores` listeners on the port it says it bound, and returns that address.
fn run_engine(args: &[&str], cfg: &Path, cores: usize) -> (Child, std::net::SocketAddr) {
    let said = cfg.with_extension("stderr");
    let mut child = engine()
        .args(args)
        .arg("-c")
        .arg(cfg)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&said).unwrap())
        .spawn()
        .expect("spawn engine");
    let addr = match process::wait_bound(&mut child, &said, Duration::from_secs(10)) {
        Ok(b) => b.addr("web"),
        Err(text) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the engine did not start ({args:?}):\n{text}");
        }
    };
    let port = addr.port();
    let ok = poll_for(Duration::from_secs(10), || listeners_on(port) == cores);
    if !ok {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "{} listeners on port {port}, wanted {cores} ({args:?})",
            listeners_on(port)
        );
    }
    (child, addr)
}

fn binary_cores_and_driver(driver: DriverChoice) {
    let flag = match driver {
        DriverChoice::Uring => "uring",
        DriverChoice::Epoll => "epoll",
        DriverChoice::Auto => "auto",
    };
    let o = origins(1);
    let dir = tmpdir("bin");
    let p = dir.join("lb.toml");
    let web = Web::new(&[&o[0]]);
    let text = web.text();
    std::fs::write(&p, &text).unwrap();
    let (mut child, addr) = run_engine(&["--cores", "3", "--driver", flag], &p, 3);
    for _ in 0..10 {
        assert_eq!(tools::client::get(addr, "/").unwrap().status, 200);
    }
    signal(&child, SIGTERM);
    let st = wait_exit(&mut child, Duration::from_secs(10));
    assert_eq!(st.code(), Some(0), "SIGTERM: clean exit");
}

#[test]
fn binary_auto_driver_and_one_core() {
    let o = origins(1);
    let dir = tmpdir("bin-auto");
    let p = dir.join("lb.toml");
    let text = Web::new(&[&o[0]]).text();
    std::fs::write(&p, &text).unwrap();
    let (mut child, addr) = run_engine(&["--cores", "1", "--driver", "auto"], &p, 1);
    assert_eq!(tools::client::get(addr, "/").unwrap().status, 200);
    signal(&child, SIGINT);
    let st = wait_exit(&mut child, Duration::from_secs(10));
    assert_eq!(st.code(), Some(0), "SIGINT: clean exit");
}

/// A descriptor limit too low for maxconn (LimitNOFILE left at a low default): the
/// engine raises it where it may; where it may not, it says so at start, holds only the
/// client connections the limit has room for and leaves the rest in the kernel's queue.
/// No student gets an error for it, and no server is blamed for the engine's shortage.
#[test]
fn descriptor_limit_below_maxconn() {
    use std::os::unix::process::CommandExt;
    const LIMIT: u64 = 256;
    const CLIENTS: usize = 150;
    const EACH: usize = 4;
    let o = origins(1);
    let dir = tmpdir("bin-nofile");
    let p = dir.join("lb.toml");
    let text = Web::new(&[&o[0]]).tail("[global]\nmaxconn = 1000\n").text();
    std::fs::write(&p, &text).unwrap();
    let log = dir.join("stderr.log");
    let mut cmd = engine();
    cmd.args(["--cores", "1", "-c"])
        .arg(&p)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    // SAFETY: only setrlimit between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let r = libc::rlimit {
                rlim_cur: LIMIT,
                rlim_max: LIMIT,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &r) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    let mut child = cmd.spawn().expect("spawn engine");
    let addr = process::wait_bound(&mut child, &log, Duration::from_secs(10))
        .unwrap_or_else(|said| panic!("the engine did not start:\n{said}"))
        .addr("web");
    let port = addr.port();
    assert!(
        poll_for(Duration::from_secs(10), || listeners_on(port) == 1),
        "the engine listens"
    );
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id())).unwrap();
    let soft: u64 = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .expect("Max open files in /proc/PID/limits");
    let need = 2 * 1000 + 64 + 32;
    let said = std::fs::read_to_string(&log).unwrap();
    if soft >= need {
        // Allowed to raise the hard limit (CAP_SYS_RESOURCE): it fits maxconn.
        assert_eq!(soft, need, "raised to what maxconn needs");
    } else {
        assert_eq!(soft, LIMIT, "the hard limit stays");
        assert!(
            said.contains(
                "RLIMIT_NOFILE is 256: room for 80 client connections at once, below maxconn 1000"
            ) && said.contains("LimitNOFILE=2096"),
            "the engine says what the limit allows and what to set:\n{said}"
        );
    }
    // More clients at once than there is room for, each a few times over.
    let failed = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..CLIENTS {
            s.spawn(|| {
                for _ in 0..EACH {
                    match tools::client::get(addr, "/") {
                        Ok(r) if r.status == 200 => {}
                        _ => {
                            failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                }
            });
        }
    });
    let said = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        failed.into_inner(),
        0,
        "requests failed for want of descriptors; the engine said:\n{said}"
    );
    assert_eq!(o[0].requests(), (CLIENTS * EACH) as u64);
    assert!(
        !said.contains("Too many open files"),
        "the engine ran out of descriptors:\n{said}"
    );
    signal(&child, SIGTERM);
    let st = wait_exit(&mut child, Duration::from_secs(10));
    assert_eq!(st.code(), Some(0), "SIGTERM: clean exit");
}

#[test]
fn demo_starts_answers_and_stops() {
    // Another program already listens on the ports the demo prefers: it moves each
    // frontend to a port of its own (before: two frontends on 8081, refused, exit 1).
    let held: Vec<std::net::TcpListener> = [8080u16, 8443, 8081]
        .iter()
        .filter_map(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).ok())
        .collect();
    let mut child = engine()
        .args(["demo", "--cores", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn engine demo");
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut urls = Vec::new();
    while std::time::Instant::now() < deadline {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(l) => {
                for w in l.split_whitespace() {
                    if w.starts_with("http://") || w.starts_with("https://") {
                        urls.push(w.to_string());
                    }
                }
                let end = l.contains("Ctrl-C");
                lines.push(l);
                if end {
                    break;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let plain = urls
        .iter()
        .find(|u| u.starts_with("http://") && u.ends_with("/login/index.php"));
    let Some(_) = plain else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("no URL in the demo's output: {lines:#?}");
    };
    // Every plain http:// URL answers: the redirecting one with 301, the plain one with
    // the Moodle login page.
    let mut saw_login = false;
    for u in urls.iter().filter(|u| u.starts_with("http://")) {
        let rest = &u["http://".len()..];
        let (hostport, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let addr: std::net::SocketAddr = hostport.parse().expect("host:port");
        let resp = tools::client::get(addr, if path.is_empty() { "/" } else { path })
            .expect("demo answers");
        assert!(matches!(resp.status, 200 | 301), "{u}: {}", resp.status);
        if resp.status == 301 {
            assert!(
                resp.header("location")
                    .is_some_and(|l| l.starts_with("https://")),
                "{u}"
            );
        } else if path == "/login/index.php" {
            assert!(resp.text().contains("Moodle"), "{u}");
            saw_login = true;
        }
    }
    assert!(
        saw_login,
        "the plain frontend serves the login page: {lines:#?}"
    );
    for u in &urls {
        for p in [":8080/", ":8443/", ":8081/"] {
            assert!(!u.contains(p), "{u}: a port another program holds");
        }
    }
    drop(held);
    signal(&child, SIGINT);
    let st = wait_exit(&mut child, Duration::from_secs(10));
    assert_eq!(st.code(), Some(0), "engine demo exits 0 after Ctrl-C");
}

#[test]
fn config_load_str_in_process() {
    let text = std::fs::read_to_string("/work/shared/spec/lb.example.toml").unwrap();
    let l = config::load_str(&text, Path::new("/work/shared/spec/lb.toml"))
        .expect("the spec example loads");
    let be = &l.config.backends[0];
    assert_eq!(be.servers.len(), 4);
    assert!(be.servers[3].backup);
    let ef = be.errorfile_503.as_ref().expect("errorfile_503");
    assert_eq!(
        ef.path,
        Path::new("/work/shared/spec/errors/503.http"),
        "relative to the file's folder"
    );
    let bad = config::load_str(
        "[global]\nmaxconn = 1\nbogus = 2\n",
        Path::new("/tmp/x/lb.toml"),
    )
    .unwrap_err();
    assert!(
        bad.iter()
            .any(|d| d.is_error() && d.line == 3 && d.to_string().contains("bogus")),
        "{bad:?}"
    );
}
