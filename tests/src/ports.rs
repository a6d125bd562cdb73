//! How many sockets listen on a port. (No port is found free here: engines, origins and
//! PHP nodes bind port 0 and say which port they got.)

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
