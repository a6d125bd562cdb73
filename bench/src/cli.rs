//! The command line (clap) and the settings of one bench run derived from it.

use crate::configs::{self, Scenario};
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "engine-bench",
    about = "engine vs HAProxy vs nginx vs direct, under wrk"
)]
pub struct Cli {
    /// short runs (about 3 minutes in all): 2 rounds of 1 s, 2,000 idle clients, 50 page
    /// loads
    #[arg(long)]
    pub quick: bool,
    /// comma-separated scenario names (default: all)
    #[arg(long, value_delimiter = ',')]
    pub scenarios: Vec<String>,
    /// comma-separated targets among engine,haproxy,nginx,direct (default: all)
    #[arg(long, value_delimiter = ',')]
    pub targets: Vec<String>,
    /// interleaved rounds per scenario (default 3; quick 2)
    #[arg(long)]
    pub runs: Option<usize>,
    /// seconds per wrk run (default 10; quick 1)
    #[arg(long)]
    pub duration: Option<u64>,
    /// seconds of warm-up per target and scenario (default 2; quick 1)
    #[arg(long)]
    pub warmup: Option<u64>,
    /// seconds of the constant-rate run per target (default 5; quick 1)
    #[arg(long)]
    pub cr_duration: Option<u64>,
    /// idle clients in idle-10k (default 10000; quick 2000)
    #[arg(long)]
    pub idle_clients: Option<usize>,
    /// page loads per protocol and round in h2-page (default 200; quick 50)
    #[arg(long)]
    pub page_loads: Option<usize>,
    /// fixed rate of the constant-rate runs (default: half the slowest proxy's median req/s)
    #[arg(long)]
    pub cr_rate: Option<f64>,
    /// output directory (default bench/results/<YYYY-MM-DD>)
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// pin the engine's workers to cores (its default in production). Off here: HAProxy
    /// and nginx are not pinned either, and on cores shared with wrk and the origins a
    /// pinned worker waits for its own core while the other may be free.
    #[arg(long)]
    pub pin_engine: bool,
    /// another engine binary (e.g. the build of an earlier commit) run as the target
    /// `baseline`, interleaved with the others, for before/after comparisons
    #[arg(long)]
    pub baseline: Option<PathBuf>,
    /// the target whose ratios against the others are reported
    #[arg(long, default_value = "engine")]
    pub subject: String,
    /// where engine, bench-origin (or origin) are (default: this binary's directory)
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub cmd: Option<Cmd>,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// profile a target (the engine) in the main scenario with perf and/or callgrind
    Profile {
        /// perf, callgrind or both
        #[arg(long, default_value = "both")]
        tool: String,
        /// seconds of load under perf (callgrind runs a third of it, at most 10 s)
        #[arg(long, default_value_t = 10)]
        duration: u64,
        /// scenario to profile
        #[arg(long, default_value = "get-ka-sticky")]
        scenario: String,
        /// engine (default), haproxy or nginx
        #[arg(long, default_value = "engine")]
        target: String,
        /// output directory (default bench/results/<YYYY-MM-DD>)
        #[arg(long)]
        out: Option<PathBuf>,
        #[arg(long)]
        bin_dir: Option<PathBuf>,
    },
}

#[derive(Clone, Debug)]
pub struct Settings {
    pub runs: usize,
    pub duration: u64,
    pub warmup: u64,
    pub cr_duration: u64,
    pub idle_clients: usize,
    pub idle_clients_requested: usize,
    pub cr_rate: Option<f64>,
    /// h2-page: page loads per protocol and round
    pub page_loads: usize,
    /// maxconn given to every proxy: what RLIMIT_NOFILE allows HAProxy
    pub maxconn: usize,
    /// the engine runs pinned (`--pin-engine`) or with `--no-pin`
    pub pin_engine: bool,
    /// the engine binary run as the target `baseline`
    pub baseline: Option<PathBuf>,
}

/// The targets run when `--targets` is not given (`baseline` joins them with
/// `--baseline`).
pub const TARGETS: [&str; 4] = ["engine", "haproxy", "nginx", "direct"];

impl Settings {
    /// The settings `cli` asks for; `maxconn` is what RLIMIT_NOFILE allows HAProxy.
    pub fn from_cli(cli: &Cli, maxconn: usize) -> Settings {
        let idle_requested = cli
            .idle_clients
            .unwrap_or(if cli.quick { 2000 } else { 10_000 });
        Settings {
            runs: cli.runs.unwrap_or(if cli.quick { 2 } else { 3 }).max(1),
            duration: cli
                .duration
                .unwrap_or(if cli.quick { 1 } else { 10 })
                .max(1),
            warmup: cli.warmup.unwrap_or(if cli.quick { 1 } else { 2 }),
            cr_duration: cli.cr_duration.unwrap_or(if cli.quick { 1 } else { 5 }),
            idle_clients: idle_requested.min(maxconn.saturating_sub(150)),
            idle_clients_requested: idle_requested,
            cr_rate: cli.cr_rate,
            page_loads: cli
                .page_loads
                .unwrap_or(if cli.quick { 50 } else { 200 })
                .max(1),
            maxconn,
            pin_engine: cli.pin_engine,
            baseline: cli.baseline.clone(),
        }
    }
}

impl Cli {
    /// The scenarios asked for (all by default); Err names an unknown one.
    pub fn scenarios(&self) -> Result<Vec<Scenario>, String> {
        let all = configs::all_scenarios();
        if self.scenarios.is_empty() {
            return Ok(all);
        }
        let mut v = Vec::new();
        for n in &self.scenarios {
            match all.iter().find(|s| s.name == n) {
                Some(s) => v.push(s.clone()),
                None => {
                    return Err(format!(
                        "unknown scenario {n}; known: {}",
                        all.iter().map(|s| s.name).collect::<Vec<_>>().join(",")
                    ))
                }
            }
        }
        Ok(v)
    }

    /// The targets asked for ([`TARGETS`], and `baseline` second with `--baseline`, by
    /// default); Err names an unknown one.
    pub fn targets(&self) -> Result<Vec<String>, String> {
        if self.targets.is_empty() {
            let mut t: Vec<String> = TARGETS.iter().map(|s| s.to_string()).collect();
            if self.baseline.is_some() {
                t.insert(1, "baseline".into());
            }
            return Ok(t);
        }
        for t in &self.targets {
            if t == "baseline" && self.baseline.is_some() {
                continue;
            }
            if !TARGETS.contains(&t.as_str()) {
                return Err(format!("unknown target {t}; known: {}", TARGETS.join(",")));
            }
        }
        Ok(self.targets.clone())
    }
}
