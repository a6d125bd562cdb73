//! h2-page: the Moodle quiz page (`/mod/quiz/view.php`) and its 40 assets, loaded through
//! the engine over TLS, over HTTP/1.1 on 6 connections as a browser does and over HTTP/2 on
//! one connection with every request a concurrent stream. One h2load process per page
//! load, so each load opens its connections afresh (TCP and TLS handshakes included):
//!
//! - HTTP/2: `h2load -n 41 -c 1 -m 41 -i uris.txt`
//! - HTTP/1.1: `h2load --h1 -n 41 -c 6 -m 1 -i uris.txt`
//!
//! uris.txt lists the page then the 40 assets. The page-load time is h2load's "finished
//! in" (from before the first connect to the last response). h2load hands each client
//! the list from its start, so over HTTP/1.1 each of the 6 connections asks for the first
//! 6 or 7 entries of the list (the page and the first assets), not 41 distinct ones: the
//! same 41 requests and connections as a browser, not quite the same bodies (all small).
//! Loads alternate in blocks of 10 between the protocols, and the target's CPU is read
//! around each block.

use crate::configs::{page_asset, PAGE_ASSETS};
use crate::h2load::{parse_summary, percentile};
use crate::procs::{command_line, run_bounded, Proc};
use crate::records::{Ratio, RunRecord, Stat3, TargetResult};
use serde::Serialize;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Requests per page load: the page and its assets.
pub const PAGE_REQUESTS: usize = PAGE_ASSETS + 1;
/// Page loads per block of one protocol.
const BLOCK: usize = 10;

/// One protocol's page loads in one round.
#[derive(Serialize, Clone, Debug, Default)]
pub struct PageStats {
    /// "http/1.1" or "h2"
    pub protocol: String,
    pub connections: usize,
    pub loads: usize,
    /// loads where not every request got a 2xx answer, or another protocol was negotiated
    /// (left out of the times)
    pub failed_loads: usize,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
    /// the target's CPU per page load
    pub cpu_us_per_load: f64,
    pub command: String,
    /// why the first failed load failed
    pub first_failure: Option<String>,
}

/// One protocol's page loads over all rounds: medians (min-max) of the rounds.
#[derive(Serialize, Clone, Debug, Default)]
pub struct PageSummary {
    pub protocol: String,
    pub p50_ms: Option<Stat3>,
    pub p99_ms: Option<Stat3>,
    pub cpu_us_per_load: Option<Stat3>,
    pub failed_loads: usize,
}

/// uris.txt for the target on `port`: the page, then its assets.
pub fn uris(port: u16) -> String {
    let base = format!("https://127.0.0.1:{port}");
    let mut s = format!("{base}/mod/quiz/view.php\n");
    for i in 0..PAGE_ASSETS {
        s.push_str(&format!("{base}{}\n", page_asset(i)));
    }
    s
}

/// The h2load command of one page load.
pub fn command(h2: bool, uris: &Path) -> Command {
    let mut cmd = Command::new("h2load");
    if !h2 {
        cmd.arg("--h1");
    }
    let (c, m) = if h2 { (1, PAGE_REQUESTS) } else { (6, 1) };
    cmd.args(["-n", &PAGE_REQUESTS.to_string()])
        .args(["-c", &c.to_string(), "-m", &m.to_string()])
        .arg("-i")
        .arg(uris);
    cmd
}

/// One page load: its time in ms, or why it failed.
fn load_once(h2: bool, uris: &Path) -> Result<f64, String> {
    let (_ok, out, err) = run_bounded(command(h2, uris), Duration::from_secs(20))
        .map_err(crate::h2load::not_started)?;
    let c = parse_summary(&out).ok_or_else(|| {
        format!(
            "h2load printed no summary: {}",
            crate::truncate(err.trim(), 200)
        )
    })?;
    let want = if h2 { "h2" } else { "http/1.1" };
    if c.protocol != want {
        return Err(format!("negotiated {:?}, not {want}", c.protocol));
    }
    if c.status_2xx as usize != PAGE_REQUESTS || c.failed > 0 {
        return Err(format!(
            "{} 2xx of {PAGE_REQUESTS}, {} failed, {} 4xx, {} 5xx",
            c.status_2xx, c.failed, c.status_4xx, c.status_5xx
        ));
    }
    Ok(c.finished_s * 1000.0)
}

/// What one protocol's loads collect during a round.
#[derive(Default)]
struct Acc {
    times: Vec<f64>,
    failed: usize,
    first_failure: Option<String>,
    cpu_s: f64,
}

/// `loads` page loads per protocol through `proc`'s target, alternating in blocks;
/// uris.txt is in `dir`.
pub fn round(proc: &Proc, loads: usize, dir: &Path) -> Vec<PageStats> {
    let uris = dir.join("uris.txt");
    let mut acc = [Acc::default(), Acc::default()];
    let mut done = 0;
    while done < loads {
        let n = BLOCK.min(loads - done);
        for (k, a) in acc.iter_mut().enumerate() {
            let c0 = proc.cpu_seconds();
            for _ in 0..n {
                match load_once(k == 1, &uris) {
                    Ok(ms) => a.times.push(ms),
                    Err(e) => {
                        a.failed += 1;
                        a.first_failure.get_or_insert(e);
                    }
                }
            }
            a.cpu_s += proc.cpu_seconds() - c0;
        }
        done += n;
    }
    acc.into_iter()
        .enumerate()
        .map(|(k, a)| stats(k == 1, a, loads, &uris))
        .collect()
}

fn stats(h2: bool, mut a: Acc, loads: usize, uris: &Path) -> PageStats {
    a.times.sort_by(|x, y| x.partial_cmp(y).expect("finite"));
    // percentile() ranks integers: work in ns
    let ns: Vec<u64> = a.times.iter().map(|ms| (ms * 1e6) as u64).collect();
    let q = |p: f64| percentile(&ns, p) / 1e6;
    PageStats {
        protocol: if h2 { "h2" } else { "http/1.1" }.into(),
        connections: if h2 { 1 } else { 6 },
        loads,
        failed_loads: a.failed,
        p50_ms: q(0.50),
        p90_ms: q(0.90),
        p99_ms: q(0.99),
        max_ms: a.times.last().copied().unwrap_or(0.0),
        mean_ms: if a.times.is_empty() {
            0.0
        } else {
            a.times.iter().sum::<f64>() / a.times.len() as f64
        },
        cpu_us_per_load: a.cpu_s * 1e6 / loads.max(1) as f64,
        command: command_line(&command(h2, uris)),
        first_failure: a.first_failure,
    }
}

/// The rounds' page figures, per protocol.
pub fn summarize(runs: &[RunRecord]) -> Vec<PageSummary> {
    ["http/1.1", "h2"]
        .iter()
        .filter_map(|p| {
            let s: Vec<&PageStats> = runs
                .iter()
                .flat_map(|r| r.page.iter())
                .filter(|s| s.protocol == *p && s.loads > s.failed_loads)
                .collect();
            if s.is_empty() {
                return None;
            }
            let of =
                |g: fn(&PageStats) -> f64| Stat3::of(&s.iter().map(|x| g(x)).collect::<Vec<_>>());
            Some(PageSummary {
                protocol: p.to_string(),
                p50_ms: of(|x| x.p50_ms),
                p99_ms: of(|x| x.p99_ms),
                cpu_us_per_load: of(|x| x.cpu_us_per_load).filter(|c| c.median > 0.0),
                failed_loads: runs
                    .iter()
                    .flat_map(|r| r.page.iter())
                    .filter(|x| x.protocol == *p)
                    .map(|x| x.failed_loads)
                    .sum(),
            })
        })
        .collect()
}

/// HTTP/2 over HTTP/1.1 per round, for each target: page-load p50, p99 and CPU per load
/// (lower is better for HTTP/2).
pub fn ratios(ts: &[TargetResult]) -> Vec<Ratio> {
    type Get = fn(&PageStats) -> f64;
    let metrics: [(&str, Get); 3] = [
        ("page_load_p50", |s| s.p50_ms),
        ("page_load_p99", |s| s.p99_ms),
        ("cpu_per_page", |s| s.cpu_us_per_load),
    ];
    let mut out = Vec::new();
    for t in ts.iter().filter(|t| !t.runs.is_empty()) {
        for (metric, get) in metrics {
            let v: Vec<f64> = t
                .runs
                .iter()
                .filter_map(|r| {
                    let by = |p: &str| {
                        r.page
                            .iter()
                            .find(|s| s.protocol == p && s.loads > s.failed_loads)
                    };
                    let (h1, h2) = (by("http/1.1")?, by("h2")?);
                    Some(get(h2) / get(h1)).filter(|x| x.is_finite() && get(h1) > 0.0)
                })
                .collect();
            out.push(Ratio {
                subject: format!("{} h2", t.target),
                base: format!("{} http/1.1", t.target),
                metric: metric.into(),
                stat: Stat3::of(&v),
                reason: Some("no paired rounds".into()).filter(|_| v.is_empty()),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_uris_are_the_page_then_its_assets() {
        let u = uris(8443);
        let lines: Vec<&str> = u.lines().collect();
        assert_eq!(lines.len(), PAGE_REQUESTS);
        assert_eq!(lines[0], "https://127.0.0.1:8443/mod/quiz/view.php");
        assert_eq!(lines[1], "https://127.0.0.1:8443/theme/styles0.css");
        assert_eq!(lines[2], "https://127.0.0.1:8443/theme/script1.js");
        assert_eq!(lines[40], "https://127.0.0.1:8443/theme/script39.js");
    }

    #[test]
    fn the_commands_are_one_h2_connection_or_six_h1_ones() {
        let f = Path::new("u.txt");
        assert_eq!(
            command_line(&command(true, f)),
            "h2load -n 41 -c 1 -m 41 -i u.txt"
        );
        assert_eq!(
            command_line(&command(false, f)),
            "h2load --h1 -n 41 -c 6 -m 1 -i u.txt"
        );
    }
}
