//! engine-bench: the engine, HAProxy and nginx under wrk (and the harness's own
//! constant-rate generator), interleaved, against the same origins; see bench/README.md.
//!
//! - [`cli`]: the command line and the settings of a run;
//! - [`targets`]: starting and stopping each target (engine, baseline, HAProxy, nginx,
//!   direct) and the origins;
//! - [`run`]: one scenario's interleaved rounds and constant-rate runs;
//! - [`records`]: what is recorded, summarised and compared;
//! - [`h2load`], [`h2idle`], [`page`]: the HTTP/2 scenarios (h2load's timed load, idle
//!   HTTP/2 connections, the quiz page over HTTP/1.1 and HTTP/2);
//! - [`report`] and [`chart`]: report.md, latency.svg and results.json.

mod chart;
mod cli;
mod configs;
mod h2idle;
mod h2load;
mod loadgen;
mod page;
mod procs;
mod profile;
mod records;
mod report;
mod report_h2;
mod run;
mod targets;
mod wrk;

use clap::Parser;
use cli::{Cli, Cmd, Settings};
use procs::cmd_output;
use std::path::{Path, PathBuf};
use std::time::Instant;
use targets::{find_bins, machine_info, start_origins, Ctx};

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

pub fn today() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0) as i64;
    // civil-from-days (Howard Hinnant)
    let z = secs.div_euclid(86400) + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!("{y:04}-{m:02}-{d:02}")
}

pub fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}...", s.chars().take(n).collect::<String>())
    }
}

fn log(msg: &str) {
    eprintln!("[engine-bench] {msg}");
}

fn main() {
    let cli = Cli::parse();
    procs::install_signal_handlers();
    if let Some(Cmd::Profile {
        tool,
        duration,
        scenario,
        target,
        out,
        bin_dir,
    }) = &cli.cmd
    {
        let bins = find_bins(bin_dir.clone());
        let out = out
            .clone()
            .unwrap_or_else(|| workspace_root().join("bench/results").join(today()));
        let code = profile::run(&profile::Args {
            tool: tool.clone(),
            duration: *duration,
            scenario: scenario.clone(),
            target: target.clone(),
            out,
            bin_dir: bins.dir.clone(),
            origin: bins.origin.clone(),
        });
        std::process::exit(code);
    }
    std::process::exit(bench(cli));
}

fn bench(cli: Cli) -> i32 {
    let started = Instant::now();
    // HAProxy needs 2 descriptors per maxconn; without CAP_SYS_RESOURCE the hard limit stays
    let nofile = procs::raise_nofile(200_000) as usize;
    let maxconn = (nofile.saturating_sub(100) / 2).clamp(256, 40_000);
    let set = Settings::from_cli(&cli, maxconn);
    let (scenarios, targets) = match (cli.scenarios(), cli.targets()) {
        (Ok(s), Ok(t)) => (s, t),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("{e}");
            return 2;
        }
    };
    let out = cli
        .out
        .clone()
        .unwrap_or_else(|| workspace_root().join("bench/results").join(today()));
    if let Err(e) = std::fs::create_dir_all(&out) {
        eprintln!("cannot create {}: {e}", out.display());
        return 1;
    }
    let tmp = std::env::temp_dir().join(format!("engine-bench-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&tmp);
    let bins = find_bins(cli.bin_dir.clone());
    let machine = machine_info(&bins);
    log(&format!(
        "out {}, {} scenarios x {} targets, {} rounds of {} s, RLIMIT_NOFILE {}",
        out.display(),
        scenarios.len(),
        targets.len(),
        set.runs,
        set.duration,
        nofile
    ));
    let (origin_bin, certs, os) = match prepare(&bins, &tmp) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            return 1;
        }
    };
    let cx = Ctx {
        set: &set,
        os: &os,
        certs: &certs,
        bins: &bins,
    };
    let mut results = Vec::new();
    for sc in &scenarios {
        log(&format!("scenario {}: {}", sc.name, sc.what));
        results.push(run::run_scenario(
            sc,
            &cx,
            &targets,
            &cli.subject,
            &tmp,
            &out,
        ));
    }
    drop(os);
    let meta = report::Meta {
        command: command_line(),
        date: today(),
        machine,
        settings: set.clone(),
        subject: cli.subject.clone(),
        seconds: started.elapsed().as_secs_f64(),
        origin_command: origin_bin.display().to_string(),
    };
    let code = write_report(&out, &meta, &results, started);
    let _ = std::fs::remove_dir_all(&tmp);
    code
}

/// wrk and openssl installed, the origin binary built: the origins started and the
/// certificates made.
fn prepare(
    bins: &targets::Bins,
    tmp: &Path,
) -> Result<(PathBuf, configs::Certs, targets::OriginSet), String> {
    for tool in ["wrk", "openssl"] {
        if cmd_output("which", &[tool]).is_empty() {
            return Err(format!(
                "{tool} is not installed: run bash bench/install.sh"
            ));
        }
    }
    let Some(origin_bin) = bins.origin.clone() else {
        return Err(format!(
            "no origin binary in {} (bench-origin or origin): cargo build --release -p engine-bench",
            bins.dir.display()
        ));
    };
    let certs = configs::make_certs(tmp);
    let os = start_origins(&origin_bin, tmp, 2)?;
    Ok((origin_bin, certs, os))
}

/// This run's command line, as `cargo run` would take it.
fn command_line() -> String {
    let command: Vec<String> = std::env::args().collect();
    std::iter::once("cargo run --release -p engine-bench --".to_string())
        .chain(command.into_iter().skip(1).map(|a| procs::shell_quote(&a)))
        .collect::<Vec<_>>()
        .join(" ")
}

fn write_report(
    out: &Path,
    meta: &report::Meta,
    results: &[records::ScenarioResult],
    started: Instant,
) -> i32 {
    match report::write_all(out, meta, results) {
        Ok(()) => {
            log(&format!(
                "wrote {}/report.md, latency.svg, results.json in {:.0} s",
                out.display(),
                started.elapsed().as_secs_f64()
            ));
            0
        }
        Err(e) => {
            eprintln!("cannot write the report: {e}");
            1
        }
    }
}
