//! Loopback ports: a free one for each frontend, and how many sockets listen on one.

use std::net::TcpListener;

/// A free loopback port (bound and released), never the same one twice in a test
/// binary. The configuration refuses port 0 in `bind`, so frontends get one of these.
pub fn free_port() -> u16 {
    use std::sync::Mutex;
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    for _ in 0..100 {
        let p = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let mut g = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if !g.contains(&p) {
            g.push(p);
            return p;
        }
    }
    panic!("no free port")
}

/// Listening sockets on `port` (IPv4 and IPv6), from /proc/net/tcp{,6}.
pub fn listeners_on(port: u16) -> usize {
    let mut n = 0;
    for f in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(s) = std::fs::read_to_string(f) else {
            continue;
        };
        for line in s.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() < 4 {
                continue;
            }
            let local_port = cols[1]
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if local_port == Some(port) && cols[3] == "0A" {
                n += 1;
            }
        }
    }
    n
}
