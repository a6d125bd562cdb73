//! What a bench run records: one run of a target (RunRecord), a target's runs in one
//! scenario (TargetResult) and their summary, and the subject's ratios to the others.

use crate::configs::Scenario;
use crate::h2load::H2loadCounts;
use crate::loadgen::{CrResult, IdleResult};
use crate::page::{PageStats, PageSummary};
use crate::wrk::WrkResult;
use serde::Serialize;

#[derive(Serialize, Clone, Debug, Default)]
pub struct RunRecord {
    pub round: usize,
    /// wrk's figures, or h2load's in the same shape (HTTP/2 scenarios)
    pub wrk: Option<WrkResult>,
    /// h2load's own counts (HTTP/2 scenarios)
    pub h2load: Option<H2loadCounts>,
    /// h2-page: the page loads of each protocol
    pub page: Vec<PageStats>,
    /// the client's command when it is not in `wrk` (h2-idle's h2load)
    pub client_command: Option<String>,
    pub idle: Option<IdleResult>,
    pub cpu_seconds: f64,
    pub cpu_us_per_req: f64,
    /// Where the rest of the machine's CPU went during the run, per request (wrk runs
    /// only): the origins (for direct, the origins other than the one measured), wrk,
    /// and whatever no process here accounts for (the harness, kernel threads such as
    /// ksoftirqd); idle_share is the machine's idle + iowait share.
    pub split: Option<CpuSplit>,
    pub rss_kib: u64,
    pub error: Option<String>,
}

#[derive(Serialize, Clone, Debug, Default)]
pub struct CpuSplit {
    /// the target's system (kernel) time per request: its socket work
    pub sys_us_per_req: f64,
    pub origins_us_per_req: f64,
    pub wrk_us_per_req: f64,
    pub other_us_per_req: f64,
    pub idle_share: f64,
}

impl RunRecord {
    /// CPU per request of everything measured by process (target, origins, wrk).
    pub fn accounted_us_per_req(&self) -> Option<f64> {
        let s = self.split.as_ref()?;
        Some(self.cpu_us_per_req + s.origins_us_per_req + s.wrk_us_per_req)
            .filter(|_| self.cpu_us_per_req > 0.0)
    }

    /// CPU per request of wrk and the origins: what a target costing nothing would
    /// still leave the machine to do.
    pub fn load_us_per_req(&self) -> Option<f64> {
        let s = self.split.as_ref()?;
        Some(s.origins_us_per_req + s.wrk_us_per_req).filter(|x| *x > 0.0)
    }

    /// The same plus the target's own kernel time: what is left if the target's user
    /// space cost nothing but its socket work stayed.
    pub fn kernel_floor_us_per_req(&self) -> Option<f64> {
        Some(self.load_us_per_req()? + self.split.as_ref()?.sys_us_per_req)
    }
}

#[derive(Serialize, Clone, Debug, Default)]
pub struct Stat3 {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

impl Stat3 {
    pub fn of(v: &[f64]) -> Option<Stat3> {
        let mut v: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Stat3 {
            median,
            min: v[0],
            max: v[n - 1],
            n,
        })
    }
}

#[derive(Serialize, Clone, Debug, Default)]
pub struct Summary {
    pub rps: Option<Stat3>,
    pub p50_us: Option<Stat3>,
    pub p99_us: Option<Stat3>,
    pub p999_us: Option<Stat3>,
    pub cpu_us_per_req: Option<Stat3>,
    pub sys_us_per_req: Option<Stat3>,
    pub origins_us_per_req: Option<Stat3>,
    pub wrk_us_per_req: Option<Stat3>,
    pub other_us_per_req: Option<Stat3>,
    pub idle_share: Option<Stat3>,
    pub bytes_per_idle_conn: Option<Stat3>,
    pub bytes_per_idle_conn_1s: Option<Stat3>,
    pub peak_rss_kib: u64,
    /// h2-page: per protocol
    pub page: Vec<PageSummary>,
}

#[derive(Serialize, Clone, Debug, Default)]
pub struct TargetResult {
    pub target: String,
    pub available: bool,
    pub reason: Option<String>,
    pub start_command: Option<String>,
    pub config_file: Option<String>,
    pub url: Option<String>,
    pub warmup: Option<WrkResult>,
    pub runs: Vec<RunRecord>,
    pub constant_rate: Option<CrResult>,
    pub constant_rate_na: Option<String>,
    pub summary: Summary,
}

#[derive(Serialize, Clone, Debug, Default)]
pub struct Ratio {
    pub subject: String,
    pub base: String,
    pub metric: String,
    pub stat: Option<Stat3>,
    pub reason: Option<String>,
}

#[derive(Serialize, Clone, Debug, Default)]
pub struct ScenarioResult {
    pub name: String,
    pub what: String,
    pub connections: usize,
    /// idle clients: memory per connection
    pub idle: bool,
    /// the clients speak TLS
    pub tls: bool,
    /// HTTP/2 to the clients: h2load (streams per connection)
    pub h2: bool,
    pub streams: usize,
    /// page loads over HTTP/1.1 and HTTP/2
    pub page: bool,
    pub lua_script: Option<String>,
    pub constant_rate_rps: Option<f64>,
    pub targets: Vec<TargetResult>,
    pub ratios: Vec<Ratio>,
    pub seconds: f64,
}

/// The ratio metric for the req/s ratio a subject of zero CPU would reach.
pub const CEILING: &str = "rps ceiling (zero-CPU subject)";
/// The same with the subject's kernel time kept: only its user space costs nothing.
pub const CEILING_KERNEL: &str = "rps ceiling (subject's kernel time only)";

pub fn summarize(t: &TargetResult, peak: u64) -> Summary {
    let w: Vec<&WrkResult> = t.runs.iter().filter_map(|r| r.wrk.as_ref()).collect();
    let f = |g: &dyn Fn(&WrkResult) -> f64| Stat3::of(&w.iter().map(|x| g(x)).collect::<Vec<_>>());
    let split = |g: &dyn Fn(&CpuSplit) -> f64| {
        Stat3::of(
            &t.runs
                .iter()
                .filter_map(|r| r.split.as_ref().map(g))
                .collect::<Vec<_>>(),
        )
    };
    let mut s = Summary {
        rps: f(&|x| x.rps),
        p50_us: f(&|x| x.p50_us),
        p99_us: f(&|x| x.p99_us),
        p999_us: f(&|x| x.p999_us),
        cpu_us_per_req: Stat3::of(
            &t.runs
                .iter()
                .filter(|r| r.cpu_us_per_req > 0.0)
                .map(|r| r.cpu_us_per_req)
                .collect::<Vec<_>>(),
        ),
        sys_us_per_req: split(&|c| c.sys_us_per_req),
        origins_us_per_req: split(&|c| c.origins_us_per_req),
        wrk_us_per_req: split(&|c| c.wrk_us_per_req),
        other_us_per_req: split(&|c| c.other_us_per_req),
        idle_share: split(&|c| c.idle_share),
        bytes_per_idle_conn: Stat3::of(
            &t.runs
                .iter()
                .filter_map(|r| r.idle.as_ref().map(|i| i.bytes_per_idle_conn))
                .collect::<Vec<_>>(),
        ),
        bytes_per_idle_conn_1s: Stat3::of(
            &t.runs
                .iter()
                .filter_map(|r| r.idle.as_ref().map(|i| i.bytes_per_idle_conn_1s))
                .collect::<Vec<_>>(),
        ),
        peak_rss_kib: peak,
        page: crate::page::summarize(&t.runs),
    };
    // the trickle's figures (h2-idle runs none)
    let tr: Vec<&CrResult> = t
        .runs
        .iter()
        .filter_map(|r| r.idle.as_ref().map(|i| &i.trickle))
        .filter(|c| c.connections > 0)
        .collect();
    if !tr.is_empty() {
        s.rps = Stat3::of(&tr.iter().map(|c| c.achieved_rps).collect::<Vec<_>>());
        s.p50_us = Stat3::of(&tr.iter().map(|c| c.p50_us).collect::<Vec<_>>());
        s.p99_us = Stat3::of(&tr.iter().map(|c| c.p99_us).collect::<Vec<_>>());
        s.p999_us = Stat3::of(&tr.iter().map(|c| c.p999_us).collect::<Vec<_>>());
    }
    s
}

/// Reads one metric of a run.
type Getter = Box<dyn Fn(&RunRecord) -> Option<f64>>;

/// The metrics compared round by round: memory for the idle scenarios, req/s, p99 and CPU
/// per request for the others.
fn metrics(sc: &Scenario) -> Vec<(&'static str, Getter)> {
    if sc.idle {
        vec![
            (
                "bytes_per_idle_conn",
                Box::new(|r: &RunRecord| r.idle.as_ref().map(|i| i.bytes_per_idle_conn)),
            ),
            (
                "bytes_per_idle_conn_1s",
                Box::new(|r: &RunRecord| r.idle.as_ref().map(|i| i.bytes_per_idle_conn_1s)),
            ),
        ]
    } else {
        vec![
            (
                "rps",
                Box::new(|r: &RunRecord| r.wrk.as_ref().map(|w| w.rps)),
            ),
            (
                "p99",
                Box::new(|r: &RunRecord| r.wrk.as_ref().map(|w| w.p99_us)),
            ),
            (
                "cpu_per_req",
                Box::new(|r: &RunRecord| Some(r.cpu_us_per_req).filter(|x| *x > 0.0)),
            ),
        ]
    }
}

/// subject/base of one metric, per round.
fn paired_ratio(
    subject: &str,
    subj: &TargetResult,
    base: &TargetResult,
    metric: &str,
    get: &Getter,
) -> Ratio {
    let mut ratio = Ratio {
        subject: subject.into(),
        base: base.target.clone(),
        metric: metric.to_string(),
        ..Default::default()
    };
    if !subj.available && subj.runs.is_empty() {
        ratio.reason = Some(format!("{subject} n/a"));
    } else if !base.available && base.runs.is_empty() {
        ratio.reason = Some(format!("{} n/a", base.target));
    } else {
        let v: Vec<f64> = subj
            .runs
            .iter()
            .zip(&base.runs)
            .filter_map(|(a, b)| match (get(a), get(b)) {
                (Some(x), Some(y)) if y > 0.0 => Some(x / y),
                _ => None,
            })
            .collect();
        ratio.stat = Stat3::of(&v);
        if ratio.stat.is_none() {
            ratio.reason = Some("no paired runs".into());
        }
    }
    ratio
}

/// The most the subject's req/s could be, against this base, if the subject itself cost
/// no CPU: on cores shared by all, req/s is the busy CPU over the CPU per request of
/// everything, and wrk and the origins cost what they cost whoever is in the middle. Per
/// round: the base's whole CPU per request over what wrk and the origins took per request
/// in the subject's round. The second ceiling keeps the subject's kernel time (its socket
/// work) and takes away only its user-space CPU.
fn ceilings(subject: &str, subj: &TargetResult, base: &TargetResult) -> Vec<Ratio> {
    type Floor = fn(&RunRecord) -> Option<f64>;
    let floors: [(&str, Floor); 2] = [
        (CEILING, RunRecord::load_us_per_req),
        (CEILING_KERNEL, RunRecord::kernel_floor_us_per_req),
    ];
    floors
        .into_iter()
        .map(|(metric, floor)| {
            let v: Vec<f64> = subj
                .runs
                .iter()
                .zip(&base.runs)
                .filter_map(|(a, b)| Some(b.accounted_us_per_req()? / floor(a)?))
                .collect();
            Ratio {
                subject: subject.into(),
                base: base.target.clone(),
                metric: metric.into(),
                stat: Stat3::of(&v),
                reason: Some("no CPU figures".into()).filter(|_| v.is_empty()),
            }
        })
        .collect()
}

/// subject/base per round (rounds are interleaved, so round i of each ran side by side).
pub fn ratios(sc: &Scenario, ts: &[TargetResult], subject: &str) -> Vec<Ratio> {
    if sc.page {
        return crate::page::ratios(ts);
    }
    let mut out = Vec::new();
    let Some(subj) = ts.iter().find(|t| t.target == subject) else {
        return out;
    };
    let metrics = metrics(sc);
    for base in ts.iter().filter(|t| t.target != subject) {
        for (m, get) in &metrics {
            out.push(paired_ratio(subject, subj, base, m, get));
        }
        if !sc.idle && base.target != "direct" {
            out.extend(ceilings(subject, subj, base));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::configs;

    fn run(cpu: f64, sys: f64, origins: f64, wrk: f64) -> RunRecord {
        RunRecord {
            round: 1,
            cpu_us_per_req: cpu,
            split: Some(CpuSplit {
                sys_us_per_req: sys,
                origins_us_per_req: origins,
                wrk_us_per_req: wrk,
                other_us_per_req: 0.5,
                idle_share: 0.05,
            }),
            ..Default::default()
        }
    }

    fn main_scenario() -> Scenario {
        configs::all_scenarios()
            .into_iter()
            .find(|s| s.name == "get-ka-sticky")
            .expect("main scenario")
    }

    fn target(name: &str, runs: Vec<RunRecord>) -> TargetResult {
        TargetResult {
            target: name.into(),
            available: true,
            runs,
            ..Default::default()
        }
    }

    #[test]
    fn ceilings_are_the_base_cost_over_what_the_subject_leaves() {
        let sc = main_scenario();
        let ts = vec![
            // the subject: 20 µs of its own (15 in the kernel); origins + wrk 25 µs
            target("engine", vec![run(20.0, 15.0, 13.0, 12.0)]),
            // the base: 35 + 14 + 11 = 60 µs per request in all
            target("haproxy", vec![run(35.0, 22.0, 14.0, 11.0)]),
            target("direct", vec![run(12.0, 10.0, 0.0, 12.0)]),
        ];
        let rs = ratios(&sc, &ts, "engine");
        let get = |base: &str, metric: &str| {
            rs.iter()
                .find(|r| r.base == base && r.metric == metric)
                .and_then(|r| r.stat.as_ref())
                .map(|s| s.median)
        };
        assert_eq!(get("haproxy", CEILING), Some(60.0 / 25.0));
        assert_eq!(get("haproxy", CEILING_KERNEL), Some(60.0 / 40.0));
        assert_eq!(get("haproxy", "cpu_per_req"), Some(20.0 / 35.0));
        // no ceiling against direct: it is the ceiling already
        assert_eq!(get("direct", CEILING), None);
        assert!(rs.iter().all(|r| r.base != "direct" || r.metric != CEILING));
    }

    #[test]
    fn a_run_without_cpu_figures_has_no_ceiling() {
        let sc = main_scenario();
        let mut bare = run(20.0, 15.0, 13.0, 12.0);
        bare.split = None;
        let ts = vec![
            target("engine", vec![bare]),
            target("haproxy", vec![run(35.0, 22.0, 14.0, 11.0)]),
        ];
        let r = ratios(&sc, &ts, "engine")
            .into_iter()
            .find(|r| r.metric == CEILING)
            .expect("ceiling row");
        assert!(r.stat.is_none());
        assert_eq!(r.reason.as_deref(), Some("no CPU figures"));
    }
}
