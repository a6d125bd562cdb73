//! The descriptor limit: RLIMIT_NOFILE raised to fit `maxconn`, or the maxconn in force
//! lowered to what it has room for.

/// Descriptors kept aside for everything but connections: per core its listeners, ring
/// and the splice pipes it keeps when quiet (eight, two descriptors each); health checks,
/// the log, admin and stats. A splice past those that finds no descriptor copies instead.
pub(super) fn fd_reserve(cores: usize) -> u64 {
    64 + cores as u64 * 32
}

/// What the descriptor limit leaves room for, after [`fit_fd_limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdRoom {
    /// RLIMIT_NOFILE's soft limit now.
    pub limit: u64,
    /// The limit that maxconn needs.
    pub need: u64,
    /// Client connections the limit allows (two descriptors each).
    pub conns: usize,
}

/// Raises RLIMIT_NOFILE to fit `maxconn` client connections, two descriptors each: the
/// client's and its server connection (idle pooled server connections get what the
/// clients leave; see [`crate::core::Worker::pool_put`]). The soft limit goes up to what
/// is needed, within the hard limit, and past it where the process may raise that. The
/// engine then holds no more client connections than [`FdRoom::conns`]; past it new
/// connections wait in the kernel's queue, rather than failing with EMFILE at accept or,
/// worse, at the connect to a server.
pub fn fit_fd_limit(maxconn: usize, cores: usize) -> FdRoom {
    let need = 2 * maxconn as u64 + fd_reserve(cores);
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain getrlimit/setrlimit on local structs.
    let ok = unsafe {
        let ok = libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0;
        if ok && r.rlim_cur < need {
            let both = libc::rlimit {
                rlim_cur: need,
                rlim_max: r.rlim_max.max(need),
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &both) != 0 {
                let soft = libc::rlimit {
                    rlim_cur: need.min(r.rlim_max),
                    rlim_max: r.rlim_max,
                };
                libc::setrlimit(libc::RLIMIT_NOFILE, &soft);
            }
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
        }
        ok
    };
    let conns = if ok {
        let n = (r.rlim_cur.saturating_sub(fd_reserve(cores)) / 2).max(1);
        usize::try_from(n).unwrap_or(usize::MAX)
    } else {
        usize::MAX
    };
    FdRoom {
        limit: r.rlim_cur,
        need,
        conns,
    }
}
