//! engine-bench: the engine, HAProxy and nginx under wrk (and the harness's own
//! constant-rate generator), interleaved, against the same origins; see bench/README.md.

mod configs;
mod loadgen;
mod procs;
mod profile;
mod report;
mod wrk;

use clap::{Parser, Subcommand};
use configs::{Certs, Origins, Ports, Scenario, Tls};
use loadgen::{CrResult, IdleResult};
use procs::{cmd_output, free_ports, run_bounded, wait_http, wait_tcp, Proc};
use serde::Serialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use wrk::WrkResult;

#[derive(Parser, Debug)]
#[command(
    name = "engine-bench",
    about = "engine vs HAProxy vs nginx vs direct, under wrk"
)]
pub struct Cli {
    /// short runs (about 3 minutes in all): 2 rounds of 1 s, 2,000 idle clients
    #[arg(long)]
    quick: bool,
    /// comma-separated scenario names (default: all)
    #[arg(long, value_delimiter = ',')]
    scenarios: Vec<String>,
    /// comma-separated targets among engine,haproxy,nginx,direct (default: all)
    #[arg(long, value_delimiter = ',')]
    targets: Vec<String>,
    /// interleaved rounds per scenario (default 3; quick 2)
    #[arg(long)]
    runs: Option<usize>,
    /// seconds per wrk run (default 10; quick 1)
    #[arg(long)]
    duration: Option<u64>,
    /// seconds of warm-up per target and scenario (default 2; quick 1)
    #[arg(long)]
    warmup: Option<u64>,
    /// seconds of the constant-rate run per target (default 5; quick 1)
    #[arg(long)]
    cr_duration: Option<u64>,
    /// idle clients in idle-10k (default 10000; quick 2000)
    #[arg(long)]
    idle_clients: Option<usize>,
    /// fixed rate of the constant-rate runs (default: half the slowest proxy's median req/s)
    #[arg(long)]
    cr_rate: Option<f64>,
    /// output directory (default bench/results/<YYYY-MM-DD>)
    #[arg(long)]
    out: Option<PathBuf>,
    /// pin the engine's workers to cores (its default in production). Off here: HAProxy
    /// and nginx are not pinned either, and on cores shared with wrk and the origins a
    /// pinned worker waits for its own core while the other may be free.
    #[arg(long)]
    pin_engine: bool,
    /// another engine binary (e.g. the build of an earlier commit) run as the target
    /// `baseline`, interleaved with the others, for before/after comparisons
    #[arg(long)]
    baseline: Option<PathBuf>,
    /// the target whose ratios against the others are reported
    #[arg(long, default_value = "engine")]
    subject: String,
    /// where engine, bench-origin (or origin) are (default: this binary's directory)
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
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
    /// maxconn given to every proxy: what RLIMIT_NOFILE allows HAProxy
    pub maxconn: usize,
    /// the engine runs pinned (`--pin-engine`) or with `--no-pin`
    pub pin_engine: bool,
    /// the engine binary run as the target `baseline`
    pub baseline: Option<PathBuf>,
}

#[derive(Serialize, Clone, Debug, Default)]
pub struct RunRecord {
    pub round: usize,
    pub wrk: Option<WrkResult>,
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
    pub lua_script: Option<String>,
    pub constant_rate_rps: Option<f64>,
    pub targets: Vec<TargetResult>,
    pub ratios: Vec<Ratio>,
    pub seconds: f64,
}

pub const TARGETS: [&str; 4] = ["engine", "haproxy", "nginx", "direct"];

struct Bins {
    dir: PathBuf,
    origin: Option<PathBuf>,
}

fn find_bins(bin_dir: Option<PathBuf>) -> Bins {
    let dir = bin_dir.unwrap_or_else(|| {
        std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .unwrap_or_else(|| PathBuf::from("target/release"))
    });
    // our own epoll origin first (built to be fast); the tools crate's `origin` otherwise
    let origin = ["bench-origin", "origin"]
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.exists());
    Bins { dir, origin }
}

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

/// The origins, started once for the whole bench.
pub struct OriginSet {
    pub procs: Vec<Proc>,
    pub origins: Origins,
    pub command: Vec<String>,
}

impl OriginSet {
    /// CPU seconds used so far by all the origins.
    pub fn cpu_seconds(&self) -> f64 {
        self.procs.iter().map(|p| p.cpu_seconds()).sum()
    }
}

pub fn start_origins(bin: &Path, tmp: &Path, n: usize) -> Result<OriginSet, String> {
    let ports = free_ports(n);
    let mut procs = Vec::new();
    let mut servers = Vec::new();
    let mut command = Vec::new();
    let own = bin
        .file_name()
        .map(|f| f == "bench-origin")
        .unwrap_or(false);
    for (i, port) in ports.iter().enumerate() {
        let name = format!("s{}", i + 1);
        let mut cmd = Command::new(bin);
        cmd.args(["--name", &name, "--listen", &format!("127.0.0.1:{port}")]);
        if own {
            cmd.args(["--threads", "2"]);
        }
        let p = Proc::spawn(&name, cmd, &tmp.join(format!("origin-{name}.log")))
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        command.push(p.command.clone());
        procs.push(p);
        servers.push((name.clone(), name, *port));
    }
    for (p, (_, _, port)) in procs.iter_mut().zip(&servers) {
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        wait_http(addr, Duration::from_secs(5), p).map_err(|e| format!("origin {e}"))?;
    }
    Ok(OriginSet {
        procs,
        origins: Origins { servers },
        command,
    })
}

/// One proxy (or the direct origin) during one scenario.
struct Live {
    name: String,
    proc: Option<Proc>,
    port: u16,
    res: TargetResult,
}

impl Live {
    fn proc<'a>(&'a self, origins: &'a OriginSet) -> Option<&'a Proc> {
        if self.name == "direct" {
            origins.procs.first()
        } else {
            self.proc.as_ref()
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn start_target(
    name: &str,
    sc: &Scenario,
    set: &Settings,
    os: &OriginSet,
    certs: &Certs,
    bins: &Bins,
    dir: &Path,
    out_cfg: &Path,
) -> Live {
    let mut res = TargetResult {
        target: name.to_string(),
        ..Default::default()
    };
    let na = |mut res: TargetResult, why: String| -> Live {
        res.available = false;
        res.reason = Some(why);
        Live {
            name: res.target.clone(),
            proc: None,
            port: 0,
            res,
        }
    };
    let cert = certs.for_tls(sc.tls);
    if sc.tls != Tls::None && cert.is_none() {
        return na(res, format!("no certificate: {}", certs.error.trim()));
    }
    if name == "direct" {
        if sc.tls != Tls::None {
            return na(
                res,
                "the origins speak plain HTTP only; see the plain-HTTP scenarios for the ceiling"
                    .into(),
            );
        }
        let port = os.origins.servers[0].2;
        res.available = true;
        res.start_command = os.command.first().cloned();
        res.url = Some(wrk::url(sc, port));
        return Live {
            name: name.into(),
            proc: None,
            port,
            res,
        };
    }
    let ports = free_ports(2);
    let p = Ports {
        http: ports[0],
        https: ports[1],
        maxconn: set.maxconn,
    };
    let tdir = dir.join(name);
    let _ = std::fs::create_dir_all(&tdir);
    let (file, text, mut cmd) = match name {
        "engine" | "baseline" => {
            let bin = match (name, &set.baseline) {
                ("baseline", Some(b)) => b.clone(),
                _ => bins.dir.join("engine"),
            };
            if !bin.exists() {
                return na(res, format!("not built: {} is missing", bin.display()));
            }
            let f = tdir.join("lb.toml");
            let text = configs::engine_toml(sc, &os.origins, &p, cert);
            if let Err(e) = std::fs::write(&f, &text) {
                return na(res, format!("cannot write config: {e}"));
            }
            let mut check = Command::new(&bin);
            check.arg("check").arg("-c").arg(&f);
            match run_bounded(check, Duration::from_secs(10)) {
                Ok((true, _, _)) => {}
                Ok((false, o, e)) => {
                    let msg = format!("{o} {e}");
                    let msg: String = msg.split_whitespace().collect::<Vec<_>>().join(" ");
                    return na(
                        res,
                        format!("`engine check` refused the config: {}", truncate(&msg, 300)),
                    );
                }
                Err(e) => return na(res, format!("engine check did not run: {e}")),
            }
            let mut cmd = Command::new(&bin);
            cmd.env("MIMALLOC_ALLOW_THP", "0").args(["--cores", "2"]);
            if !set.pin_engine {
                cmd.arg("--no-pin");
            }
            cmd.arg("-c").arg(&f);
            (f, text, cmd)
        }
        "haproxy" => {
            let f = tdir.join("haproxy.cfg");
            let text = configs::haproxy_cfg(sc, &os.origins, &p, cert);
            if let Err(e) = std::fs::write(&f, &text) {
                return na(res, format!("cannot write config: {e}"));
            }
            let mut cmd = Command::new("haproxy");
            cmd.arg("-db").arg("-f").arg(&f);
            (f, text, cmd)
        }
        "nginx" => {
            let f = tdir.join("nginx.conf");
            let text = configs::nginx_conf(sc, &os.origins, &p, cert, &tdir);
            if let Err(e) = std::fs::write(&f, &text) {
                return na(res, format!("cannot write config: {e}"));
            }
            let mut cmd = Command::new("nginx");
            cmd.arg("-p").arg(&tdir).arg("-c").arg(&f);
            (f, text, cmd)
        }
        other => return na(res, format!("unknown target {other}")),
    };
    let kept = out_cfg.join(format!(
        "{}-{}",
        name,
        file.file_name().and_then(|f| f.to_str()).unwrap_or("conf")
    ));
    let _ = std::fs::write(&kept, &text);
    res.config_file = Some(kept.display().to_string());
    let mut proc = match Proc::spawn(
        name,
        std::mem::replace(&mut cmd, Command::new("true")),
        &tdir.join("out.log"),
    ) {
        Ok(p) => p,
        Err(e) => return na(res, format!("cannot start: {e}")),
    };
    res.start_command = Some(proc.command.clone());
    let addr: SocketAddr = format!("127.0.0.1:{}", p.http).parse().expect("addr");
    if let Err(e) = wait_http(addr, Duration::from_secs(8), &mut proc) {
        return na(res, format!("did not come up: {}", truncate(&e, 400)));
    }
    let port = if sc.tls != Tls::None {
        let a: SocketAddr = format!("127.0.0.1:{}", p.https).parse().expect("addr");
        if !wait_tcp(a, Duration::from_secs(3)) {
            return na(res, "no TLS listener came up".into());
        }
        p.https
    } else {
        p.http
    };
    res.available = true;
    res.url = Some(wrk::url(sc, port));
    Live {
        name: name.into(),
        proc: Some(proc),
        port,
        res,
    }
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

#[allow(clippy::too_many_arguments)]
fn run_scenario(
    sc: &Scenario,
    set: &Settings,
    targets: &[String],
    subject: &str,
    os: &OriginSet,
    certs: &Certs,
    bins: &Bins,
    tmp: &Path,
    out: &Path,
) -> ScenarioResult {
    let t0 = Instant::now();
    let dir = tmp.join(sc.name);
    let _ = std::fs::create_dir_all(&dir);
    let out_cfg = out.join("configs").join(sc.name);
    let _ = std::fs::create_dir_all(&out_cfg);
    let mut r = ScenarioResult {
        name: sc.name.into(),
        what: sc.what.into(),
        connections: sc.connections,
        ..Default::default()
    };
    let script = dir.join("scenario.lua");
    let lua = wrk::lua_script(sc);
    let _ = std::fs::write(&script, &lua);
    let _ = std::fs::write(out_cfg.join("scenario.lua"), &lua);
    if !sc.idle {
        r.lua_script = Some(lua);
    }
    let mut live: Vec<Live> = targets
        .iter()
        .map(|t| start_target(t, sc, set, os, certs, bins, &dir, &out_cfg))
        .collect();
    for l in &live {
        if let Some(why) = &l.res.reason {
            log(&format!(
                "{} / {}: n/a: {}",
                sc.name,
                l.name,
                truncate(why, 200)
            ));
        }
    }
    // warm-up: also proves that the target answers this scenario at all
    for l in live.iter_mut().filter(|l| l.res.available) {
        let url = l.res.url.clone().expect("url");
        match wrk::run(&script, &url, sc.connections, set.warmup.max(1)) {
            Ok((w, _)) => {
                let good = w.requests.saturating_sub(w.non_2xx);
                if good == 0 {
                    l.res.available = false;
                    l.res.reason = Some(format!(
                        "warm-up got no successful response ({} requests, {} non-2xx, {} socket errors)",
                        w.requests, w.non_2xx, w.errors
                    ));
                } else if w.non_2xx * 10 > w.requests {
                    l.res.available = false;
                    l.res.reason = Some(format!(
                        "warm-up: {} of {} responses were not 2xx/3xx",
                        w.non_2xx, w.requests
                    ));
                }
                l.res.warmup = Some(w);
            }
            Err(e) => {
                l.res.available = false;
                l.res.reason = Some(e);
            }
        }
        if let Some(why) = &l.res.reason {
            log(&format!(
                "{} / {}: n/a: {}",
                sc.name,
                l.name,
                truncate(why, 200)
            ));
        }
    }
    let req = loadgen::request_bytes(sc, "127.0.0.1");
    for round in 0..set.runs {
        for l in live.iter_mut() {
            if !l.res.available {
                continue;
            }
            if sc.idle && round > 0 && l.proc.is_some() {
                // a fresh process per round: freed connection memory stays in the
                // allocator, so a second round in the same process would show no growth
                if let Some(mut old) = l.proc.take() {
                    old.stop();
                }
                let mut fresh = start_target(&l.name, sc, set, os, certs, bins, &dir, &out_cfg);
                if fresh.res.available {
                    if let Some(u) = fresh.res.url.clone() {
                        let _ = wrk::run(&script, &u, sc.connections, set.warmup.max(1));
                    }
                    l.proc = fresh.proc.take();
                    l.port = fresh.port;
                } else {
                    l.res.available = false;
                    l.res.reason = fresh.res.reason.take();
                    continue;
                }
            }
            let Some(p) = l.proc(os) else { continue };
            let mut rec = RunRecord {
                round: round + 1,
                ..Default::default()
            };
            if sc.idle {
                let addr: SocketAddr = format!("127.0.0.1:{}", l.port).parse().expect("addr");
                let trickle = Duration::from_secs(set.cr_duration.max(1));
                let clients = if sc.burst > 1 {
                    set.idle_clients.min(5000)
                } else {
                    set.idle_clients
                };
                let arrival = loadgen::Arrival {
                    clients,
                    burst: sc.burst,
                };
                let ir = loadgen::idle_test(addr, Some(p), arrival, 200.0, trickle, &req);
                rec.cpu_seconds = ir.cpu_seconds;
                rec.cpu_us_per_req = ir.cpu_us_per_req;
                rec.rss_kib = ir.rss_after_kib;
                if ir.clients_open < ir.clients_wanted {
                    rec.error = Some(format!(
                        "only {} of {} clients connected",
                        ir.clients_open, ir.clients_wanted
                    ));
                }
                log(&format!(
                    "{} / {} round {}: {} clients, {:.0} B per idle connection ({:.0} B 1 s after the last answer), trickle p99 {:.0} us",
                    sc.name,
                    l.name,
                    round + 1,
                    ir.clients_open,
                    ir.bytes_per_idle_conn,
                    ir.bytes_per_idle_conn_1s,
                    ir.trickle.p99_us
                ));
                rec.idle = Some(ir);
            } else {
                let url = l.res.url.clone().expect("url");
                let (c0, y0) = p.cpu_times();
                let o0 = os.cpu_seconds();
                let k0 = procs::children_cpu_seconds();
                let m0 = procs::MachineCpu::now();
                let w = wrk::run(&script, &url, sc.connections, set.duration);
                let m1 = procs::MachineCpu::now();
                let k1 = procs::children_cpu_seconds();
                let o1 = os.cpu_seconds();
                let (c1, y1) = p.cpu_times();
                rec.rss_kib = p.rss_kib().0;
                rec.cpu_seconds = c1 - c0;
                match w {
                    Ok((w, _)) => {
                        if w.requests > 0 {
                            let n = w.requests as f64;
                            rec.cpu_us_per_req = rec.cpu_seconds * 1e6 / n;
                            let mut origins = o1 - o0;
                            if l.name == "direct" {
                                origins -= rec.cpu_seconds;
                            }
                            let wrk_cpu = k1 - k0;
                            let (busy, idle_share) = m0.since(&m1);
                            let other = busy - rec.cpu_seconds - origins.max(0.0) - wrk_cpu;
                            rec.split = Some(CpuSplit {
                                sys_us_per_req: (y1 - y0) * 1e6 / n,
                                origins_us_per_req: origins.max(0.0) * 1e6 / n,
                                wrk_us_per_req: wrk_cpu * 1e6 / n,
                                other_us_per_req: other.max(0.0) * 1e6 / n,
                                idle_share,
                            });
                        }
                        if w.errors > 0 || w.non_2xx > 0 {
                            rec.error = Some(format!(
                                "{} socket errors, {} non-2xx/3xx",
                                w.errors, w.non_2xx
                            ));
                        }
                        log(&format!(
                            "{} / {} round {}: {:.0} req/s, p99 {:.0} us, {:.1} us CPU/req",
                            sc.name,
                            l.name,
                            round + 1,
                            w.rps,
                            w.p99_us,
                            rec.cpu_us_per_req
                        ));
                        rec.wrk = Some(w);
                    }
                    Err(e) => {
                        log(&format!(
                            "{} / {} round {}: {e}",
                            sc.name,
                            l.name,
                            round + 1
                        ));
                        rec.error = Some(e);
                    }
                }
            }
            l.res.runs.push(rec);
        }
        for l in live.iter_mut() {
            if let Some(p) = l.proc.as_mut() {
                if l.res.available && !p.alive() {
                    l.res.available = false;
                    l.res.reason = Some(format!("exited during the runs: {}", p.log_tail(4)));
                }
            }
        }
    }
    // constant rate: the same rate for every target, half the slowest proxy's capacity
    if !sc.idle {
        let proxies: Vec<f64> = live
            .iter()
            .filter(|l| l.res.available && l.name != "direct")
            .filter_map(|l| {
                Stat3::of(
                    &l.res
                        .runs
                        .iter()
                        .filter_map(|r| r.wrk.as_ref().map(|w| w.rps))
                        .collect::<Vec<_>>(),
                )
            })
            .map(|s| s.median)
            .collect();
        let base =
            proxies
                .iter()
                .copied()
                .fold(f64::INFINITY, f64::min)
                .min(if proxies.is_empty() {
                    live.iter()
                        .filter(|l| l.res.available)
                        .filter_map(|l| {
                            l.res
                                .runs
                                .first()
                                .and_then(|r| r.wrk.as_ref())
                                .map(|w| w.rps)
                        })
                        .fold(f64::INFINITY, f64::min)
                } else {
                    f64::INFINITY
                });
        let rate = set.cr_rate.unwrap_or((base * 0.5).floor());
        let cr_na = if sc.tls != Tls::None {
            Some("the harness's generator speaks plain HTTP only (wrk figures above)".to_string())
        } else if !rate.is_finite() || rate < 1.0 {
            Some("no target measured".to_string())
        } else {
            None
        };
        if cr_na.is_none() {
            r.constant_rate_rps = Some(rate);
        }
        for l in live.iter_mut() {
            if !l.res.available {
                continue;
            }
            if let Some(why) = &cr_na {
                l.res.constant_rate_na = Some(why.clone());
                continue;
            }
            let addr: SocketAddr = format!("127.0.0.1:{}", l.port).parse().expect("addr");
            let conns = sc.connections.min(16);
            let cr = loadgen::constant_rate(
                addr,
                &req,
                sc.close,
                rate,
                conns,
                Duration::from_secs(set.cr_duration.max(1)),
            );
            log(&format!(
                "{} / {} constant {:.0} req/s: p50 {:.0} p99 {:.0} p99.9 {:.0} us, {} errors",
                sc.name, l.name, rate, cr.p50_us, cr.p99_us, cr.p999_us, cr.errors
            ));
            l.res.constant_rate = Some(cr);
        }
    }
    for l in live.iter_mut() {
        if let Some(p) = l.proc(os) {
            l.res.summary.peak_rss_kib = p.rss_kib().1;
        }
        if let Some(p) = l.proc.as_mut() {
            p.stop();
        }
        l.res.summary = summarize(&l.res, l.res.summary.peak_rss_kib);
    }
    r.ratios = ratios(
        sc,
        &live.iter().map(|l| l.res.clone()).collect::<Vec<_>>(),
        subject,
    );
    r.targets = live.into_iter().map(|l| l.res).collect();
    r.seconds = t0.elapsed().as_secs_f64();
    r
}

fn summarize(t: &TargetResult, peak: u64) -> Summary {
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
    };
    if let Some(i) = t.runs.iter().filter_map(|r| r.idle.as_ref()).next() {
        let tr: Vec<&CrResult> = t
            .runs
            .iter()
            .filter_map(|r| r.idle.as_ref().map(|i| &i.trickle))
            .collect();
        s.rps = Stat3::of(&tr.iter().map(|c| c.achieved_rps).collect::<Vec<_>>());
        s.p50_us = Stat3::of(&tr.iter().map(|c| c.p50_us).collect::<Vec<_>>());
        s.p99_us = Stat3::of(&tr.iter().map(|c| c.p99_us).collect::<Vec<_>>());
        s.p999_us = Stat3::of(&tr.iter().map(|c| c.p999_us).collect::<Vec<_>>());
        let _ = i;
    }
    s
}

/// subject/base per round (rounds are interleaved, so round i of each ran side by side).
fn ratios(sc: &Scenario, ts: &[TargetResult], subject: &str) -> Vec<Ratio> {
    let mut out = Vec::new();
    let Some(subj) = ts.iter().find(|t| t.target == subject) else {
        return out;
    };
    type Getter = Box<dyn Fn(&RunRecord) -> Option<f64>>;
    let metrics: Vec<(&str, Getter)> = if sc.idle {
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
    };
    for base in ts.iter().filter(|t| t.target != subject) {
        for (m, get) in &metrics {
            let mut ratio = Ratio {
                subject: subject.into(),
                base: base.target.clone(),
                metric: m.to_string(),
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
            out.push(ratio);
        }
        if !sc.idle && base.target != "direct" {
            // The most the subject's req/s could be, against this base, if the subject
            // itself cost no CPU: on cores shared by all, req/s is the busy CPU over the
            // CPU per request of everything, and wrk and the origins cost what they cost
            // whoever is in the middle. Per round: the base's whole CPU per request over
            // what wrk and the origins took per request in the subject's round.
            // The second ceiling keeps the subject's kernel time (its socket work) and
            // takes away only its user-space CPU.
            type Floor = fn(&RunRecord) -> Option<f64>;
            let floors: [(&str, Floor); 2] = [
                (CEILING, RunRecord::load_us_per_req),
                (CEILING_KERNEL, RunRecord::kernel_floor_us_per_req),
            ];
            for (metric, floor) in floors {
                let v: Vec<f64> = subj
                    .runs
                    .iter()
                    .zip(&base.runs)
                    .filter_map(|(a, b)| Some(b.accounted_us_per_req()? / floor(a)?))
                    .collect();
                out.push(Ratio {
                    subject: subject.into(),
                    base: base.target.clone(),
                    metric: metric.into(),
                    stat: Stat3::of(&v),
                    reason: Some("no CPU figures".into()).filter(|_| v.is_empty()),
                });
            }
        }
    }
    out
}

/// The ratio metric for the req/s ratio a subject of zero CPU would reach.
pub const CEILING: &str = "rps ceiling (zero-CPU subject)";
/// The same with the subject's kernel time kept: only its user space costs nothing.
pub const CEILING_KERNEL: &str = "rps ceiling (subject's kernel time only)";

fn machine_info(bins: &Bins) -> serde_json::Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':').map(|(_, v)| v.trim().to_string()))
        })
        .unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()
                .map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>().join(" "))
        })
        .unwrap_or_default();
    let first = |s: String| s.lines().next().unwrap_or("").to_string();
    let engine = bins.dir.join("engine");
    serde_json::json!({
        "nproc": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu": cpu,
        "memory": mem,
        "kernel": first(cmd_output("uname", &["-srm"])),
        "os": first(std::fs::read_to_string("/etc/os-release").unwrap_or_default().lines().find(|l| l.starts_with("PRETTY_NAME")).unwrap_or("").to_string()),
        "haproxy": first(cmd_output("haproxy", &["-v"])),
        "nginx": first(cmd_output("nginx", &["-v"])),
        "wrk": first(cmd_output("wrk", &["-v"])),
        "openssl": first(cmd_output("openssl", &["version"])),
        "engine": if engine.exists() { first(cmd_output(&engine.display().to_string(), &["--version"])) } else { "not built".to_string() },
        "origin": bins.origin.as_ref().map(|p| p.display().to_string()),
        "io_uring_disabled": std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled").map(|s| s.trim().to_string()).unwrap_or_default(),
    })
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
    let idle_requested = cli
        .idle_clients
        .unwrap_or(if cli.quick { 2000 } else { 10_000 });
    let set = Settings {
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
        maxconn,
        pin_engine: cli.pin_engine,
        baseline: cli.baseline.clone(),
    };
    let all = configs::all_scenarios();
    let scenarios: Vec<Scenario> = if cli.scenarios.is_empty() {
        all.clone()
    } else {
        let mut v = Vec::new();
        for n in &cli.scenarios {
            match all.iter().find(|s| s.name == n) {
                Some(s) => v.push(s.clone()),
                None => {
                    eprintln!(
                        "unknown scenario {n}; known: {}",
                        all.iter().map(|s| s.name).collect::<Vec<_>>().join(",")
                    );
                    return 2;
                }
            }
        }
        v
    };
    let targets: Vec<String> = if cli.targets.is_empty() {
        let mut t: Vec<String> = TARGETS.iter().map(|s| s.to_string()).collect();
        if cli.baseline.is_some() {
            t.insert(1, "baseline".into());
        }
        t
    } else {
        for t in &cli.targets {
            if t == "baseline" && cli.baseline.is_some() {
                continue;
            }
            if !TARGETS.contains(&t.as_str()) {
                eprintln!("unknown target {t}; known: {}", TARGETS.join(","));
                return 2;
            }
        }
        cli.targets.clone()
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
    for tool in ["wrk", "openssl"] {
        if cmd_output("which", &[tool]).is_empty() {
            eprintln!("{tool} is not installed: run bash bench/install.sh");
            return 1;
        }
    }
    let Some(origin_bin) = bins.origin.clone() else {
        eprintln!(
            "no origin binary in {} (bench-origin or origin): cargo build --release -p engine-bench",
            bins.dir.display()
        );
        return 1;
    };
    let certs = configs::make_certs(&tmp);
    let os = match start_origins(&origin_bin, &tmp, 2) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            return 1;
        }
    };
    let mut results = Vec::new();
    for sc in &scenarios {
        log(&format!("scenario {}: {}", sc.name, sc.what));
        let r = run_scenario(
            sc,
            &set,
            &targets,
            &cli.subject,
            &os,
            &certs,
            &bins,
            &tmp,
            &out,
        );
        results.push(r);
    }
    drop(os);
    let command: Vec<String> = std::env::args().collect();
    let command = std::iter::once("cargo run --release -p engine-bench --".to_string())
        .chain(command.into_iter().skip(1).map(|a| procs::shell_quote(&a)))
        .collect::<Vec<_>>()
        .join(" ");
    let meta = report::Meta {
        command,
        date: today(),
        machine,
        settings: set.clone(),
        subject: cli.subject.clone(),
        seconds: started.elapsed().as_secs_f64(),
        origin_command: origin_bin.display().to_string(),
    };
    let code = match report::write_all(&out, &meta, &results) {
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
    };
    let _ = std::fs::remove_dir_all(&tmp);
    code
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn machine_cpu_busy_and_idle_share() {
        let a = procs::MachineCpu {
            busy: 1000,
            total: 2000,
        };
        let b = procs::MachineCpu {
            busy: 1900,
            total: 3000,
        };
        let (busy, idle) = a.since(&b);
        assert!((busy - 900.0 / procs::clk_tck()).abs() < 1e-9);
        assert!((idle - 0.1).abs() < 1e-9);
        assert!(procs::MachineCpu::now().total > 0);
    }
}
