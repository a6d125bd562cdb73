//! What live traffic says about each server, kept by the health-check thread from the
//! cores' reports (about every 500 ms) and their failure messages, off the request path:
//! when a server last answered a request (status below 500), when a connection to it
//! last failed, and its recent response times. Three rules read it:
//!
//! - **live traffic outweighs a check timeout** ([`Live::says_up`]): a probe that timed
//!   out does not count while the server answered requests within `interval x fall` and
//!   no connection to it failed;
//! - **a slow server sheds load** ([`shed_factors`]): one whose recent median response
//!   time is well above the other servers' gets a smaller share of new clients;
//! - **panic** ([`in_panic`]): below `panic_below` percent of non-backup servers UP,
//!   every server that accepts connections takes new clients.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::shared::msg::CoreReport;

/// How far back the response times go.
pub const WINDOW: Duration = Duration::from_secs(5);
/// Responses a server needs in the window before it is judged slow or not...
pub const MIN_SAMPLES: u64 = 20;
/// ...and a slow one, which gets few, before it is judged again (until then it stays
/// slow: too few answers are no evidence that it recovered).
pub const MIN_SAMPLES_SLOW: u64 = 5;
/// Slow: a median above this many times the others' median...
pub const SLOW_RATIO: u64 = 2;
/// ...and at least this much above it (microseconds).
pub const SLOW_MARGIN_US: u64 = 20_000;
/// A slow server keeps at least this share of its weight (permille).
pub const MIN_SHARE: u32 = 125;

/// One server, as its traffic shows it.
#[derive(Debug, Default, Clone)]
pub struct ServerLive {
    pub last_ok: Option<Instant>,
    pub last_fail: Option<Instant>,
    /// Check timeouts not counted (since the start or the last reload).
    pub vetoed: u64,
    /// A vetoed timeout was logged since the server's last change of state.
    pub veto_said: bool,
    /// Response times (µs), one histogram per report that had any.
    recent: VecDeque<(Instant, Histogram<u64>)>,
    /// The share of its weight it keeps now, permille (1000: all).
    pub share: u32,
}

/// Every server of one configuration generation.
#[derive(Debug, Default)]
pub struct Live {
    pub servers: Vec<ServerLive>,
}

impl Live {
    pub fn new(n: usize) -> Live {
        Live {
            servers: vec![
                ServerLive {
                    share: 1000,
                    ..Default::default()
                };
                n
            ],
        }
    }

    /// A core's report; `old` is that core's report before it (the same generation).
    pub fn on_report(&mut self, old: Option<&CoreReport>, new: &CoreReport, now: Instant) {
        let Some(old) = old.filter(|o| o.generation == new.generation) else {
            // The core's first report of this generation: its counters began with it.
            for (s, n) in self.servers.iter_mut().zip(&new.servers) {
                if n.ok_responses > 0 {
                    s.last_ok = Some(now);
                }
            }
            return;
        };
        for (i, (n, o)) in new.servers.iter().zip(&old.servers).enumerate() {
            let Some(s) = self.servers.get_mut(i) else {
                break;
            };
            if n.ok_responses > o.ok_responses {
                s.last_ok = Some(now);
            }
            let mut d = n.hist.clone();
            if d.subtract(&o.hist).is_ok() && !d.is_empty() {
                s.recent.push_back((now, d));
            }
            while s
                .recent
                .front()
                .is_some_and(|(t, _)| now.duration_since(*t) > WINDOW)
            {
                s.recent.pop_front();
            }
        }
    }

    /// A connection to server `i` failed (a core said so).
    pub fn on_failure(&mut self, i: usize, now: Instant) {
        if let Some(s) = self.servers.get_mut(i) {
            s.last_fail = Some(now);
        }
    }

    /// Whether traffic shows server `i` alive over the last `window`: it answered a
    /// request and no connection to it failed.
    pub fn says_up(&self, i: usize, window: Duration, now: Instant) -> bool {
        let Some(s) = self.servers.get(i) else {
            return false;
        };
        let within = |t: Option<Instant>| t.is_some_and(|t| now.duration_since(t) <= window);
        within(s.last_ok) && !within(s.last_fail)
    }

    /// The median response time (µs) of server `i` over the window, when it had enough
    /// responses to judge (fewer are needed of a server already found slow).
    pub fn recent_p50(&self, i: usize, now: Instant) -> Option<u64> {
        let s = self.servers.get(i)?;
        let need = if s.share < 1000 {
            MIN_SAMPLES_SLOW
        } else {
            MIN_SAMPLES
        };
        let mut h = crate::shared::msg::new_hist();
        for (t, d) in &s.recent {
            if now.duration_since(*t) <= WINDOW {
                let _ = h.add(d);
            }
        }
        (h.len() >= need).then(|| h.value_at_quantile(0.5))
    }
}

/// The share of its weight (permille) each server of a backend keeps, from the servers'
/// recent medians (`None`: not enough responses to judge). A server is slow when its
/// median is at least [`SLOW_RATIO`] times the median of the other servers' medians and
/// [`SLOW_MARGIN_US`] above it, and past `threshold` when one is given; it then keeps
/// the others' median over its own, at least [`MIN_SHARE`].
pub fn shed_factors(p50: &[Option<u64>], threshold: Option<u64>) -> Vec<u32> {
    p50.iter()
        .enumerate()
        .map(|(i, own)| {
            let Some(own) = *own else { return 1000 };
            let mut others: Vec<u64> = p50
                .iter()
                .enumerate()
                .filter(|(k, _)| *k != i)
                .filter_map(|(_, v)| *v)
                .collect();
            if others.is_empty() {
                return 1000;
            }
            others.sort_unstable();
            let base = others[others.len() / 2].max(1);
            let slow = own >= base * SLOW_RATIO
                && own >= base + SLOW_MARGIN_US
                && threshold.is_none_or(|t| own > t);
            if !slow {
                return 1000;
            }
            ((base * 1000 / own) as u32).clamp(MIN_SHARE, 1000)
        })
        .collect()
}

/// Panic: fewer than `below` percent of a backend's `total` non-backup servers are UP.
pub fn in_panic(up: usize, total: usize, below: Option<u32>) -> bool {
    match below {
        Some(b) if total > 0 => (up as u64) * 100 < u64::from(b) * total as u64,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slow_server_keeps_the_others_share() {
        // 10 ms, 12 ms and 200 ms medians: the third keeps 12/200 of its weight, never
        // less than an eighth.
        let f = shed_factors(&[Some(10_000), Some(12_000), Some(200_000)], None);
        assert_eq!(f[..2], [1000, 1000]);
        assert_eq!(f[2], MIN_SHARE.max(1000 * 11_000 / 200_000));
        // Twice as slow but only 8 ms more: not slow.
        assert_eq!(
            shed_factors(&[Some(8_000), Some(16_000)], None),
            [1000, 1000]
        );
        // A threshold (roundrobin) the slow one is under: not shed.
        assert_eq!(
            shed_factors(&[Some(10_000), Some(80_000)], Some(100_000)),
            [1000, 1000]
        );
        assert_eq!(
            shed_factors(&[Some(10_000), Some(80_000)], Some(50_000))[1],
            125
        );
        // Not enough responses to judge: nothing changes.
        assert_eq!(shed_factors(&[None, Some(500_000)], None), [1000, 1000]);
    }

    #[test]
    fn panic_below_a_share_of_the_servers() {
        assert!(!in_panic(2, 3, Some(50)));
        assert!(in_panic(1, 3, Some(50)));
        assert!(in_panic(0, 3, Some(1)));
        assert!(!in_panic(0, 3, None));
        assert!(!in_panic(2, 4, Some(50)), "exactly half is not below half");
    }

    #[test]
    fn traffic_says_up_only_without_a_recent_failure() {
        let mut l = Live::new(1);
        let t0 = Instant::now();
        let w = Duration::from_secs(6);
        assert!(!l.says_up(0, w, t0), "no traffic yet");
        l.servers[0].last_ok = Some(t0);
        assert!(l.says_up(0, w, t0 + Duration::from_secs(5)));
        assert!(
            !l.says_up(0, w, t0 + Duration::from_secs(7)),
            "too long ago"
        );
        l.on_failure(0, t0 + Duration::from_secs(1));
        assert!(
            !l.says_up(0, w, t0 + Duration::from_secs(2)),
            "a connection failed"
        );
    }
}
