//! The `origin` binary prints its addresses and serves until killed.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

#[test]
fn origin_binary_serves() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_origin"))
        .args([
            "--name",
            "s1",
            "--listen",
            "127.0.0.1:0",
            "--listen",
            "s2=127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    for _ in 0..2 {
        let line = lines.next().unwrap().unwrap();
        let (head, addr) = line.rsplit_once(" listening on ").unwrap();
        let name = head.strip_prefix("origin ").unwrap().to_string();
        seen.push((name, addr.parse().unwrap()));
    }
    for (name, addr) in &seen {
        let r = tools::client::get(*addr, "/health").unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-node"), Some(name.as_str()));
    }
    assert_eq!(seen[0].0, "s1");
    assert_eq!(seen[1].0, "s2");
    child.kill().unwrap();
    child.wait().unwrap();
}
