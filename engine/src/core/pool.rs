//! A core's idle server connections, per server, most recently used first, and the
//! descriptor budget they live within: they are a cache, which the client connections
//! and the server connections in use come before.

use std::cell::Cell;
use std::sync::atomic::Ordering;
use std::time::Instant;

use monoio::net::TcpStream;

use super::Worker;
use crate::ids::ServerId;

/// A server connection in use, for the descriptor budget (see [`Worker::pool_put`]).
pub struct Busy<'a>(&'a Cell<usize>);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}

/// A pooled idle server connection.
pub struct Pooled {
    pub stream: TcpStream,
    pub since: Instant,
}

impl Worker {
    /// Counts a server connection in use until the guard is dropped.
    pub fn upstream_busy(&self) -> Busy<'_> {
        self.busy.set(self.busy.get() + 1);
        Busy(&self.busy)
    }

    /// Closes every idle pooled server connection of this core; returns how many.
    pub fn shed_pools(&self) -> usize {
        let mut n = 0;
        for p in self.pools.borrow_mut().iter_mut() {
            n += p.len();
            p.clear();
        }
        n
    }

    /// After an error: when it says the process is out of descriptors (EMFILE, ENFILE),
    /// tells the other cores and frees this core's idle pooled connections. Returns how
    /// many were freed (0: the error was something else, or there was nothing to free).
    pub fn out_of_descriptors(&self, e: &std::io::Error) -> usize {
        if !matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) {
            return 0;
        }
        self.shared.fd_pressure.fetch_add(1, Ordering::Relaxed);
        let n = self.shed_pools();
        if n > 0 {
            tracing::debug!(
                core = self.id,
                "out of descriptors: closed {n} idle server connections"
            );
        }
        n
    }

    /// Takes an idle connection to `server` from this core's pool.
    pub fn pool_take(&self, server: ServerId) -> Option<Pooled> {
        self.pools.borrow_mut().get_mut(server.index())?.pop()
    }

    /// Keeps a server connection for the next request to `server`, within the pool's cap
    /// and the descriptor budget.
    pub fn pool_put(&self, server: ServerId, stream: TcpStream, generation: u64) {
        if self.stopping.get() || generation != self.snap.borrow().generation {
            return;
        }
        let max = self.snap.borrow().cfg.limits.pool_max_idle_per_server;
        let mut pools = self.pools.borrow_mut();
        // The descriptor budget: this core's share is two per client connection it could
        // hold. Its client connections and the server connections in use take theirs
        // first; its idle pooled ones (all servers together) get what that leaves. With a
        // limit that fits maxconn, this never binds.
        let share = (self.shared.fd_maxconn / self.shared.cores).saturating_mul(2);
        let spare = share.saturating_sub(self.conns.get() + self.busy.get());
        if pools.iter().map(Vec::len).sum::<usize>() >= spare {
            return;
        }
        if let Some(p) = pools.get_mut(server.index()) {
            if p.len() < max {
                p.push(Pooled {
                    stream,
                    since: Instant::now(),
                });
            }
        }
    }

    /// The sweep's part: closes pooled connections idle past `pool_idle_timeout`, and
    /// all of them when another core ran out of descriptors.
    pub(super) fn sweep_pools(&self) {
        let pressure = self.shared.fd_pressure.load(Ordering::Relaxed);
        if pressure != self.fd_pressure_seen.get() {
            self.fd_pressure_seen.set(pressure);
            self.shed_pools();
        }
        let timeout = self.snap.borrow().cfg.limits.pool_idle_timeout;
        let now = Instant::now();
        for p in self.pools.borrow_mut().iter_mut() {
            p.retain(|c| now.duration_since(c.since) < timeout);
        }
    }
}
