//! Host preflight: does this host hold the configuration? The descriptor limit against
//! `maxconn`, the locked-memory limit where io_uring needs it, `net.core.somaxconn`
//! against the listen backlog, and the local port range against the server connections
//! `maxconn` can need. Each finding says the value found, the value needed and the exact
//! setting that fixes it. `engine check --host` prints them (exit 1 when one fails); the
//! engine logs the failing ones at start.

use std::fmt;

/// The listen backlog the engine asks for.
pub const BACKLOG: u64 = 1024;

/// One check of the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub what: &'static str,
    pub found: String,
    pub needed: String,
    /// The setting that fixes it (when it fails).
    pub fix: String,
    pub ok: bool,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.ok {
            write!(
                f,
                "ok: {}: {} (needed: {})",
                self.what, self.found, self.needed
            )
        } else {
            write!(
                f,
                "FAIL: {}: {}, needed {}; fix: {}",
                self.what, self.found, self.needed, self.fix
            )
        }
    }
}

/// What the host offers, read once (a test can make one up).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Host {
    pub nofile_soft: u64,
    pub nofile_hard: u64,
    /// May raise the hard limit (root, CAP_SYS_RESOURCE).
    pub may_raise: bool,
    pub memlock_soft: u64,
    /// (major, minor) of the running kernel.
    pub kernel: (u32, u32),
    pub somaxconn: Option<u64>,
    pub port_range: Option<(u64, u64)>,
}

fn rlimit(res: libc::__rlimit_resource_t) -> (u64, u64) {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into a local struct.
    unsafe { libc::getrlimit(res, &mut r) };
    (r.rlim_cur, r.rlim_max)
}

fn read_sys(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

fn kernel() -> (u32, u32) {
    let release = read_sys("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release.trim().split(['.', '-']);
    let major = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let minor = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    (major, minor)
}

impl Host {
    /// This host, now.
    pub fn read() -> Host {
        let (nofile_soft, nofile_hard) = rlimit(libc::RLIMIT_NOFILE);
        let (memlock_soft, _) = rlimit(libc::RLIMIT_MEMLOCK);
        let port_range = read_sys("/proc/sys/net/ipv4/ip_local_port_range").and_then(|s| {
            let mut it = s.split_whitespace().filter_map(|v| v.parse().ok());
            Some((it.next()?, it.next()?))
        });
        Host {
            nofile_soft,
            nofile_hard,
            // SAFETY: geteuid has no preconditions.
            may_raise: unsafe { libc::geteuid() } == 0,
            memlock_soft,
            kernel: kernel(),
            somaxconn: read_sys("/proc/sys/net/core/somaxconn").and_then(|s| s.trim().parse().ok()),
            port_range,
        }
    }
}

/// The findings for `maxconn` client connections on `cores` cores.
pub fn check(host: &Host, maxconn: u64, cores: usize) -> Vec<Finding> {
    vec![
        nofile(host, maxconn, cores),
        memlock(host, cores),
        somaxconn(host),
        ports(host, maxconn),
    ]
}

fn nofile(host: &Host, maxconn: u64, cores: usize) -> Finding {
    let need = 2 * maxconn + super::fdlimit::fd_reserve(cores);
    Finding {
        what: "descriptor limit (RLIMIT_NOFILE)",
        found: format!("soft {}, hard {}", host.nofile_soft, host.nofile_hard),
        needed: format!(
            "{need} (two per client connection for maxconn {maxconn}, and 64 + 32 per core)"
        ),
        fix: format!(
            "LimitNOFILE={need} in the systemd unit (or `ulimit -n {need}` in the shell that starts it)"
        ),
        // The engine raises its soft limit itself, up to the hard one (past it as root).
        ok: host.nofile_hard >= need || host.may_raise,
    }
}

fn memlock(host: &Host, cores: usize) -> Finding {
    // Since 5.12 the kernel charges io_uring's rings to the memory cgroup, not memlock.
    let need_kib = cores as u64 * 512;
    if host.kernel >= (5, 12) {
        return Finding {
            what: "locked memory (RLIMIT_MEMLOCK) for io_uring",
            found: format!("kernel {}.{}", host.kernel.0, host.kernel.1),
            needed: "none from kernel 5.12 on (io_uring memory is charged to the cgroup)".into(),
            fix: String::new(),
            ok: true,
        };
    }
    Finding {
        what: "locked memory (RLIMIT_MEMLOCK) for io_uring",
        found: format!(
            "{} KiB on kernel {}.{}",
            host.memlock_soft / 1024,
            host.kernel.0,
            host.kernel.1
        ),
        needed: format!("{need_kib} KiB (a 4096-entry ring per core)"),
        fix: format!(
            "LimitMEMLOCK={} in the systemd unit, or run with --driver epoll",
            need_kib * 1024
        ),
        ok: host.memlock_soft / 1024 >= need_kib,
    }
}

fn somaxconn(host: &Host) -> Finding {
    Finding {
        what: "listen backlog (net.core.somaxconn)",
        found: host
            .somaxconn
            .map_or("unreadable".into(), |v| v.to_string()),
        needed: format!("{BACKLOG} (the backlog each listener asks for; the kernel caps it)"),
        fix: format!(
            "sysctl -w net.core.somaxconn={} (and in /etc/sysctl.d/60-engine.conf)",
            BACKLOG * 4
        ),
        ok: host.somaxconn.is_some_and(|v| v >= BACKLOG),
    }
}

fn ports(host: &Host, maxconn: u64) -> Finding {
    let size = host.port_range.map(|(lo, hi)| hi.saturating_sub(lo) + 1);
    Finding {
        what: "local port range (net.ipv4.ip_local_port_range)",
        found: host.port_range.map_or("unreadable".into(), |(lo, hi)| {
            format!("{lo}-{hi} ({} ports)", hi.saturating_sub(lo) + 1)
        }),
        needed: format!(
            "{maxconn} ports (a server connection per client connection, all to one server at worst)"
        ),
        fix: "sysctl -w net.ipv4.ip_local_port_range=\"1024 65535\" (and in /etc/sysctl.d/60-engine.conf)"
            .into(),
        ok: size.is_some_and(|s| s >= maxconn),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> Host {
        Host {
            nofile_soft: 1024,
            nofile_hard: 524288,
            may_raise: false,
            memlock_soft: 8 << 20,
            kernel: (6, 1),
            somaxconn: Some(4096),
            port_range: Some((32768, 60999)),
        }
    }

    #[test]
    fn each_finding_names_what_it_found_needs_and_the_fix() {
        let f = check(&host(), 20000, 2);
        assert!(f.iter().all(|x| x.ok), "{f:#?}");
        // 28,232 local ports cannot carry 40,000 server connections to one server.
        let f = check(&host(), 40000, 2);
        let p = f.iter().find(|x| x.what.contains("port range")).unwrap();
        assert!(!p.ok);
        assert!(p.to_string().contains("32768-60999 (28232 ports)"), "{p}");
        assert!(p.fix.contains("ip_local_port_range=\"1024 65535\""));
        let low = Host {
            nofile_hard: 4096,
            somaxconn: Some(128),
            kernel: (5, 4),
            memlock_soft: 64 << 10,
            ..host()
        };
        let f = check(&low, 20000, 2);
        let fails: Vec<&str> = f.iter().filter(|x| !x.ok).map(|x| x.what).collect();
        assert_eq!(fails.len(), 3, "{f:#?}");
        assert!(f[0].fix.contains("LimitNOFILE=40128"), "{}", f[0]);
        assert!(f[1].fix.contains("LimitMEMLOCK=1048576"), "{}", f[1]);
        assert!(f[2].fix.contains("net.core.somaxconn=4096"), "{}", f[2]);
    }
}
