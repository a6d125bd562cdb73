//! A core's own counters: per server (written by the core only, reported to the
//! health-check thread about every 500 ms) and its failed TLS handshakes.

use std::time::{Duration, Instant};

/// Per-core counters for one server, written by the core only.
#[derive(Debug, Default, Clone)]
pub struct ServerCounters {
    pub active: u32,
    pub total: u64,
    pub failures: u64,
    pub responses_5xx: u64,
    /// Responses with a status below 500 (live traffic, for the health checks).
    pub ok_responses: u64,
    /// Requests of this core waiting for a slot on this server (sticky clients).
    pub queued: u32,
    /// Passive health: this core avoids the server until then (after a connect failure).
    pub avoid_until: Option<Instant>,
}

/// Failed TLS handshakes on one core: counted per frontend (for the stats), and logged
/// at most once a second, with the number left unsaid since (a scan or a broken client
/// must not flood the log).
#[derive(Debug, Default)]
pub struct TlsFailures {
    pub counts: Vec<u64>,
    last_line: Option<Instant>,
    unsaid: u64,
}

impl TlsFailures {
    /// Counts a failure; returns the number of earlier ones left unsaid when this one
    /// should be logged, `None` when it should not.
    pub fn record(&mut self, frontend: usize, now: Instant) -> Option<u64> {
        if let Some(c) = self.counts.get_mut(frontend) {
            *c += 1;
        }
        match self.last_line {
            Some(t) if now.duration_since(t) < Duration::from_secs(1) => {
                self.unsaid += 1;
                None
            }
            _ => {
                self.last_line = Some(now);
                Some(std::mem::take(&mut self.unsaid))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_failures_log_once_a_second_and_count_all() {
        let mut f = TlsFailures {
            counts: vec![0, 0],
            ..Default::default()
        };
        let t0 = Instant::now();
        assert_eq!(f.record(1, t0), Some(0));
        for i in 1..100 {
            assert_eq!(f.record(1, t0 + Duration::from_millis(i * 5)), None);
        }
        assert_eq!(f.record(0, t0 + Duration::from_millis(1001)), Some(99));
        assert_eq!(f.counts, [1, 100]);
    }
}
