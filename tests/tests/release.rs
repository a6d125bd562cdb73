//! The release binary on a configuration in the spec's shape: lb.example.toml itself with
//! only its addresses (ports, admin socket) changed to free ones and its relative files
//! (certs/moodle.pem, errors/503.http) copied beside it. Alone in its test binary, so that
//! its `cargo build --release` holds up no other test.

use std::process::{Command, Stdio};
use std::time::Duration;

use engine_tests::*;

#[test]
fn release_binary_on_spec_shaped_config() {
    let bin = engine_bin(true);
    let names = [
        "moodle_app_1",
        "moodle_app_2",
        "moodle_app_3",
        "moodle_app_backup",
    ];
    let o: Vec<Origin> = names.iter().map(|n| Origin::start(n).unwrap()).collect();
    let dir = tmpdir("release");
    for sub in ["certs", "errors"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    std::fs::copy(
        "/work/shared/spec/certs/moodle.pem",
        dir.join("certs/moodle.pem"),
    )
    .unwrap();
    std::fs::copy(
        "/work/shared/spec/errors/503.http",
        dir.join("errors/503.http"),
    )
    .unwrap();
    // Port 0 everywhere: the engine says on standard error which ports it bound.
    let mut text = std::fs::read_to_string("/work/shared/spec/lb.example.toml").unwrap();
    let sock = dir.join("admin.sock");
    for (from, to) in [
        ("127.0.0.1:8080".to_string(), "127.0.0.1:0".to_string()),
        ("127.0.0.1:8443".to_string(), "127.0.0.1:0".to_string()),
        ("127.0.0.1:8404".to_string(), "127.0.0.1:0".to_string()),
        (
            "/run/engine-admin.sock".to_string(),
            sock.display().to_string(),
        ),
        ("127.0.0.1:9101".to_string(), o[0].addr().to_string()),
        ("127.0.0.1:9102".to_string(), o[1].addr().to_string()),
        ("127.0.0.1:9103".to_string(), o[2].addr().to_string()),
        ("127.0.0.1:9104".to_string(), o[3].addr().to_string()),
    ] {
        assert!(text.contains(&from), "{from} in lb.example.toml");
        text = text.replace(&from, &to);
    }
    let cfg_path = dir.join("lb.toml");
    std::fs::write(&cfg_path, &text).unwrap();

    let out = Command::new(&bin)
        .arg("check")
        .arg("-c")
        .arg(&cfg_path)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    let said = dir.join("engine.stderr");
    let mut child = Command::new(&bin)
        .args(["--cores", "2", "-c"])
        .arg(&cfg_path)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&said).unwrap())
        .spawn()
        .expect("spawn the release engine");
    let bound = process::wait_bound(&mut child, &said, Duration::from_secs(10))
        .unwrap_or_else(|text| panic!("the release engine did not start:\n{text}"));
    let (http, https) = (bound.addr("http").port(), bound.addr("https").port());
    let up = poll_for(Duration::from_secs(10), || {
        listeners_on(http) == 2 && listeners_on(https) == 2
    });
    if !up {
        let _ = child.kill();
        let _ = child.wait();
        panic!("release engine not listening on {http} and {https} with 2 cores each");
    }
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], http));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // Plain HTTP is redirected to HTTPS...
        let mut c = Conn::connect(addr).unwrap();
        let resp = c
            .request(
                "GET",
                "/login/index.php?x=1",
                &[("Host", "moodle.example.edu")],
                b"",
            )
            .unwrap();
        assert_eq!(resp.status, 301);
        // The spec: `Location: https://<host><path and query>`; checked at the end so that
        // the rest still runs.
        let location = resp.header("location").map(str::to_string);
        // ...except the ACME challenge prefix, which the backend serves, with a sticky
        // cookie; the backup takes nothing while the others are up.
        let mut seen = std::collections::HashSet::new();
        for _ in 0..12 {
            let resp = tools::client::get(addr, "/.well-known/acme-challenge/token").unwrap();
            let node = resp
                .header("x-node")
                .expect("served by a Moodle node")
                .to_string();
            assert_ne!(node, "moodle_app_backup");
            let sc = resp
                .header("set-cookie")
                .expect("persistence cookie inserted");
            assert!(sc.starts_with("SERVERID=s"), "{sc}");
            assert!(sc.contains("HttpOnly") && sc.contains("Secure"), "{sc}");
            seen.insert(node);
        }
        assert_eq!(seen.len(), 3, "round-robin over the three nodes: {seen:?}");
        // The cookie keeps a client on its node, and the node never sees it (indirect).
        let mut c = Conn::connect(addr).unwrap();
        for _ in 0..5 {
            let resp = c
                .request(
                    "GET",
                    "/.well-known/acme-challenge/t",
                    &[("Cookie", "SERVERID=s2")],
                    b"",
                )
                .unwrap();
            assert_eq!(resp.header("x-node"), Some("moodle_app_2"));
        }
        // Nothing can answer: the spec's errorfile, as is.
        for x in &o {
            x.set_fault(Fault::Refuse);
        }
        let (raw, _) = raw_exchange(
            addr,
            b"GET /.well-known/acme-challenge/t HTTP/1.1\r\nHost: a\r\n\r\n",
            Duration::from_secs(15),
        );
        let page = std::fs::read("/work/shared/spec/errors/503.http").unwrap();
        assert_eq!(
            String::from_utf8_lossy(&raw),
            String::from_utf8_lossy(&page)
        );
        assert_eq!(
            location.as_deref(),
            Some("https://moodle.example.edu/login/index.php?x=1"),
            "redirect_https Location for Host: moodle.example.edu (the https frontend is on port {https})"
        );
    }));
    signal(&child, SIGTERM);
    let st = wait_exit(&mut child, Duration::from_secs(15));
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
    assert_eq!(st.code(), Some(0), "SIGTERM: exit 0");
}
