//! `global.maxconn` at its exact limit (issue 16): 2,000 clients arriving at once against
//! a limit of 500 on two cores. Every one of them is answered; none is accepted and then
//! dropped (a reset or an empty close). Past the limit, a connection waits.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Barrier;
use std::time::Duration;

use engine_tests::*;

both_drivers!(every_client_answered_at_the_exact_maxconn);

/// One client: connect, one keep-alive GET, read the whole answer, close. The answer's
/// status, or what went wrong.
fn one_client(addr: SocketAddr) -> Result<u16, String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(60))).ok();
    s.write_all(b"GET /login/index.php HTTP/1.1\r\nHost: moodle\r\n\r\n")
        .map_err(|e| format!("write: {e}"))?;
    let mut got = Vec::new();
    let mut b = [0u8; 8192];
    loop {
        match s.read(&mut b) {
            Ok(0) => return Err(format!("closed after {} bytes", got.len())),
            Ok(n) => got.extend_from_slice(&b[..n]),
            Err(e) => return Err(format!("{e} after {} bytes", got.len())),
        }
        // The origin's login page is small and has a Content-Length: the head and the
        // whole body are enough.
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if got.len() >= end + 4 + len {
                return Ok(status_of(&got));
            }
        }
    }
}

fn every_client_answered_at_the_exact_maxconn(driver: DriverChoice) {
    let o = origins(2);
    // Four bursts, each on a freshly started engine: the race at the limit shows best
    // while the first 500 fill up, and not in every burst.
    for round in 0..4 {
        let r = start(
            Web::new(&[&o[0], &o[1]])
                .defaults("timeout_keep_alive = \"5s\"\n")
                .tail("[global]\nmaxconn = 500\n")
                .config(),
            driver,
        );
        burst(r.addr("web"), round);
        assert!(r.connections() <= 500, "never past maxconn");
    }
}

fn burst(addr: SocketAddr, round: usize) {
    const CLIENTS: usize = 2000;
    let start_line = Barrier::new(CLIENTS);
    let results: Vec<Result<u16, String>> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..CLIENTS)
            .map(|_| {
                let b = &start_line;
                std::thread::Builder::new()
                    .stack_size(64 * 1024)
                    .spawn_scoped(sc, move || {
                        b.wait();
                        one_client(addr)
                    })
                    .expect("client thread")
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let failed: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    let not_ok = results
        .iter()
        .filter(|r| matches!(r, Ok(s) if *s != 200))
        .count();
    assert!(
        failed.is_empty() && not_ok == 0,
        "round {round}: {} of {CLIENTS} clients failed ({not_ok} not 200); first: {:?}",
        failed.len(),
        failed.iter().take(5).collect::<Vec<_>>()
    );
}
