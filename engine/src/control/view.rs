//! The stats page's data: the cores' reports of this generation merged (their
//! histograms included) with each server's published state and last check.

use std::sync::atomic::Ordering;
use std::time::SystemTime;

use hdrhistogram::Histogram;

use super::health::ProbeFail;
use super::state::State;
use crate::balance::ServerState;
use crate::shared::msg::{new_hist, CoreReport};
use crate::shared::view::{BackendView, CheckView, FrontendView, ServerView, StatsView};
use crate::snapshot::{BackendRt, ServerStatus};

impl State {
    pub(super) fn view(&self) -> StatsView {
        let snap = &self.snap;
        let reports: Vec<&CoreReport> = self
            .reports
            .iter()
            .flatten()
            .filter(|r| r.generation == snap.generation)
            .collect();
        let backends = snap
            .backends
            .iter()
            .enumerate()
            .map(|(bi, b)| self.backend_view(bi, b, &reports))
            .collect();
        StatsView {
            version: env!("CARGO_PKG_VERSION").into(),
            uptime_seconds: self.shared.started.elapsed().as_secs(),
            cores: self.shared.cores,
            driver: self
                .shared
                .driver
                .get()
                .map(|d| d.as_str())
                .unwrap_or("io_uring")
                .into(),
            connections: self.shared.conns.load(Ordering::Relaxed),
            http2: reports.iter().fold(
                Default::default(),
                |mut h: crate::shared::view::Http2View, r| {
                    h.connections += r.h2.open;
                    h.connections_total += r.h2.connections;
                    h.streams_total += r.h2.streams;
                    h
                },
            ),
            frontends: snap
                .frontends
                .iter()
                .enumerate()
                .filter(|(_, f)| !f.retired)
                .map(|(fi, f)| FrontendView {
                    name: f.name.clone(),
                    tls: f.tls.is_some(),
                    tls_handshake_failures: reports
                        .iter()
                        .map(|r| r.tls_failures.get(fi).copied().unwrap_or(0))
                        .sum(),
                })
                .collect(),
            backends,
        }
    }

    fn backend_view(&self, bi: usize, b: &BackendRt, reports: &[&CoreReport]) -> BackendView {
        let mut qh = new_hist();
        let mut queued = 0u64;
        for r in reports {
            if let Some(h) = r.queue_wait.get(bi) {
                let _ = qh.add(h);
            }
            queued += r.queued.get(bi).copied().unwrap_or(0) as u64;
        }
        BackendView {
            name: b.name.clone(),
            balance: match b.balance {
                config::Balance::RoundRobin => "roundrobin".into(),
                config::Balance::LeastConn => "leastconn".into(),
            },
            queued,
            queue_p50_ms: ms(&qh, 50.0),
            queue_p99_ms: ms(&qh, 99.0),
            panic: self.published.panic.get(bi).copied().unwrap_or(false),
            servers: b
                .servers()
                .map(|s| self.server_view(s.index(), b, reports))
                .collect(),
        }
    }

    fn server_view(&self, i: usize, b: &BackendRt, reports: &[&CoreReport]) -> ServerView {
        let s = &self.snap.servers[i];
        let mut h = new_hist();
        let mut v = ServerView {
            name: s.name.clone(),
            address: s.addr.to_string(),
            state: String::new(),
            weight: 0,
            backup: s.backup,
            active: 0,
            queued: 0,
            total: 0,
            failures: 0,
            responses_5xx: 0,
            p50_ms: 0.0,
            p99_ms: 0.0,
            check: None,
            checks_vetoed: self.live.servers.get(i).map_or(0, |l| l.vetoed),
            slow: self.live.servers.get(i).is_some_and(|l| l.share < 1000),
        };
        for sr in reports.iter().filter_map(|r| r.servers.get(i)) {
            v.active += sr.active as u64;
            v.total += sr.total;
            v.failures += sr.failures;
            v.responses_5xx += sr.responses_5xx;
            v.queued += sr.queued as u64;
            let _ = h.add(&sr.hist);
        }
        (v.p50_ms, v.p99_ms) = (ms(&h, 50.0), ms(&h, 99.0));
        let st = self
            .published
            .servers
            .get(i)
            .copied()
            .unwrap_or(ServerStatus {
                state: ServerState::Up,
                weight: s.weight,
                share: 1000,
            });
        (v.state, v.weight) = (st.state.as_str().to_string(), st.weight);
        if b.cfg.check.is_some() && s.check_enabled {
            v.check = Some(check_view(&self.health[i]));
        }
        v
    }
}

fn check_view(tr: &super::health::Tracker) -> CheckView {
    CheckView {
        result: match &tr.last {
            None => "not yet".into(),
            Some(Ok(code)) => format!("passed ({code})"),
            Some(Err(e)) => format!("failed: {e}"),
        },
        status: match &tr.last {
            Some(Ok(c)) => Some(*c),
            Some(Err(ProbeFail::Status(c))) => Some(*c),
            _ => None,
        },
        seconds_ago: tr
            .last_at
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .map(|d| (d.as_secs_f64() * 10.0).round() / 10.0),
    }
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    if h.is_empty() {
        return 0.0;
    }
    (h.value_at_quantile(q / 100.0) as f64 / 1000.0 * 100.0).round() / 100.0
}
