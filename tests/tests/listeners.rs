//! One engine per address (issue 16): SO_REUSEPORT would let a second engine of the same
//! user join a running one's listeners silently and take half its connections. Before it
//! binds, the engine checks that no other socket listens on the address, and refuses
//! with exit 1, naming it. (The first engine binds port 0; the second is given the port
//! it got.)

use std::process::{Command, Stdio};
use std::time::Duration;

use engine_tests::*;

/// The [`Web`] text with its port 0 bind on `addr` instead.
fn on(text: &str, addr: std::net::SocketAddr) -> String {
    assert!(text.contains("\"127.0.0.1:0\""), "{text}");
    text.replace("\"127.0.0.1:0\"", &format!("\"{addr}\""))
}

#[test]
fn a_second_engine_on_the_same_address_is_refused_in_process() {
    let o = origins(1);
    let text = Web::new(&[&o[0]]).text();
    let first = start(cfg(&text, &[]), DriverChoice::Auto);
    let addr = first.addr("web");
    let same = cfg(&on(&text, addr), &[]);
    match engine::start(same, engine::Options::default()) {
        Ok(_) => panic!("a second engine started on {addr}"),
        Err(e) => assert!(e.to_string().contains(&addr.to_string()), "{e}"),
    }
    // The first keeps every connection.
    for _ in 0..20 {
        assert_eq!(tools::client::get(addr, "/").unwrap().status, 200);
    }
    assert_eq!(
        listeners_on(addr.port()),
        2,
        "only the first engine's two listeners"
    );
}

#[test]
fn a_second_engine_binary_exits_1_naming_the_address() {
    let o = origins(1);
    let dir = tmpdir("second-engine");
    let text = Web::new(&[&o[0]]).text();
    let first = start(cfg_in(&dir, &text, &[]), DriverChoice::Auto);
    let addr = first.addr("web");
    let path = dir.join("lb.toml");
    std::fs::write(&path, on(&text, addr)).unwrap();
    let err_path = dir.join("stderr");
    let mut child = Command::new(engine_bin(true))
        .args(["--cores", "2", "-c"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .expect("spawn");
    let status = wait_exit(&mut child, Duration::from_secs(10));
    let err = std::fs::read_to_string(&err_path).unwrap_or_default();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains(&addr.to_string()), "names the address: {err}");
    assert!(poll_for(Duration::from_secs(1), || listeners_on(
        addr.port()
    ) == 2));
}

#[test]
fn a_plain_listener_on_the_address_is_refused_too() {
    let o = origins(1);
    let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = other.local_addr().unwrap().port();
    let text = on(&Web::new(&[&o[0]]).text(), other.local_addr().unwrap());
    match engine::start(cfg(&text, &[]), engine::Options::default()) {
        Ok(_) => panic!("started on a port another program listens on"),
        Err(e) => assert!(e.to_string().contains(&format!("127.0.0.1:{port}")), "{e}"),
    }
    drop(other);
}
