//! One scenario: its targets started and warmed up, then interleaved rounds (each target
//! once per round, in turn), then the constant-rate runs; the targets stopped and their
//! runs summarised.

use crate::configs::{Scenario, Tls};
use crate::h2load::{self, H2loadCounts};
use crate::procs::{self, Proc};
use crate::records::{ratios, summarize, CpuSplit, RunRecord, ScenarioResult, Stat3};
use crate::targets::{start_target, Ctx, Dirs, Live};
use crate::wrk::WrkResult;
use crate::{h2idle, loadgen, page};
use crate::{log, truncate, wrk};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Runs `sc` on `targets`; `subject`'s ratios to the others go with the result. The
/// targets' files go under `tmp`, the configurations kept under `out`.
pub fn run_scenario(
    sc: &Scenario,
    cx: &Ctx,
    targets: &[String],
    subject: &str,
    tmp: &Path,
    out: &Path,
) -> ScenarioResult {
    let t0 = Instant::now();
    let dirs = Dirs {
        dir: tmp.join(sc.name),
        out_cfg: out.join("configs").join(sc.name),
    };
    let _ = std::fs::create_dir_all(&dirs.dir);
    let _ = std::fs::create_dir_all(&dirs.out_cfg);
    let mut r = ScenarioResult {
        name: sc.name.into(),
        what: sc.what.into(),
        connections: sc.connections,
        idle: sc.idle,
        tls: sc.tls != Tls::None,
        h2: sc.h2,
        streams: sc.streams,
        page: sc.page,
        ..Default::default()
    };
    let script = dirs.dir.join("scenario.lua");
    if !sc.h2 {
        let lua = wrk::lua_script(sc);
        let _ = std::fs::write(&script, &lua);
        let _ = std::fs::write(dirs.out_cfg.join("scenario.lua"), &lua);
        if !sc.idle {
            r.lua_script = Some(lua);
        }
    }
    let mut live: Vec<Live> = targets.iter().map(|t| start(sc, cx, &dirs, t)).collect();
    for l in &live {
        log_na(sc, l);
    }
    // warm-up: also proves that the target answers this scenario at all
    for l in live.iter_mut().filter(|l| l.res.available) {
        let h2log = dirs.dir.join(format!("{}-h2load.log", l.name));
        warm_up(sc, cx, &script, &h2log, l);
        log_na(sc, l);
    }
    let rounds = Rounds {
        sc,
        cx,
        dirs: &dirs,
        script,
        req: loadgen::request_bytes(sc, "127.0.0.1"),
    };
    for round in 0..cx.set.runs {
        for l in live.iter_mut() {
            rounds.run(l, round);
        }
        mark_exited(&mut live);
    }
    if !sc.idle && !sc.page {
        r.constant_rate_rps = constant_rate_runs(sc, cx, &mut live, &rounds.req);
    }
    for l in live.iter_mut() {
        if let Some(p) = l.proc(cx.os) {
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

/// Starts target `t` for `sc`; h2-page runs through the engine (and the baseline) only,
/// with the page's uris.txt beside its configuration.
fn start(sc: &Scenario, cx: &Ctx, dirs: &Dirs, t: &str) -> Live {
    if sc.page && t != "engine" && t != "baseline" {
        return Live::na(
            t,
            "h2-page compares HTTP/1.1 with HTTP/2 through the engine only".into(),
        );
    }
    let l = start_target(t, sc, cx, dirs);
    if sc.page && l.res.available {
        let u = page::uris(l.port);
        let _ = std::fs::write(dirs.dir.join(t).join("uris.txt"), &u);
        let _ = std::fs::write(dirs.out_cfg.join(format!("{t}-uris.txt")), &u);
    }
    l
}

/// One timed run of the scenario's client: wrk, or for HTTP/2 h2load (`-c` connections
/// x `-m` streams, its request log in `h2log`, read and deleted).
fn load(
    sc: &Scenario,
    script: &Path,
    h2log: &Path,
    url: &str,
    secs: u64,
) -> Result<(WrkResult, Option<H2loadCounts>), String> {
    if sc.h2 {
        h2load::run(url, sc.connections, sc.streams, secs, h2log).map(|(w, c)| (w, Some(c)))
    } else {
        wrk::run(script, url, sc.connections, secs).map(|(w, _)| (w, None))
    }
}

fn log_na(sc: &Scenario, l: &Live) {
    if let Some(why) = &l.res.reason {
        log(&format!(
            "{} / {}: n/a: {}",
            sc.name,
            l.name,
            truncate(why, 200)
        ));
    }
}

/// The warm-up run; a target that gets no (or mostly no) successful answer is n/a (for
/// HTTP/2, also one that does not negotiate h2).
fn warm_up(sc: &Scenario, cx: &Ctx, script: &Path, h2log: &Path, l: &mut Live) {
    let url = l.res.url.clone().expect("url");
    match load(sc, script, h2log, &url, cx.set.warmup.max(1)) {
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
}

/// A target that exited during a round is n/a from then on.
fn mark_exited(live: &mut [Live]) {
    for l in live.iter_mut() {
        if let Some(p) = l.proc.as_mut() {
            if l.res.available && !p.alive() {
                l.res.available = false;
                l.res.reason = Some(format!("exited during the runs: {}", p.log_tail(4)));
            }
        }
    }
}

/// What every round of one scenario runs with.
struct Rounds<'a> {
    sc: &'a Scenario,
    cx: &'a Ctx<'a>,
    dirs: &'a Dirs,
    script: PathBuf,
    /// the request of the harness's own generator
    req: Vec<u8>,
}

impl Rounds<'_> {
    /// Round `round` (from 0) of target `l`: one run recorded.
    fn run(&self, l: &mut Live, round: usize) {
        if !l.res.available {
            return;
        }
        if self.sc.idle && round > 0 && l.proc.is_some() && !self.restart(l) {
            return;
        }
        let Some(p) = l.proc(self.cx.os) else { return };
        let mut rec = RunRecord {
            round: round + 1,
            ..Default::default()
        };
        if self.sc.page {
            self.page_run(l, p, &mut rec);
        } else if self.sc.idle {
            self.idle_run(l, p, &mut rec);
        } else {
            self.load_run(l, p, &mut rec);
        }
        l.res.runs.push(rec);
    }

    /// h2load's request log for target `l`.
    fn h2log(&self, l: &Live) -> PathBuf {
        self.dirs.dir.join(format!("{}-h2load.log", l.name))
    }

    /// h2-page: the page loads of both protocols.
    fn page_run(&self, l: &Live, p: &Proc, rec: &mut RunRecord) {
        rec.page = page::round(p, self.cx.set.page_loads, &self.dirs.dir.join(&l.name));
        for s in &rec.page {
            log(&format!(
                "{} / {} round {}: {} on {} connection(s): page load p50 {:.2} ms, p99 {:.2} ms, {:.0} us CPU/page, {} of {} loads failed",
                self.sc.name, l.name, rec.round, s.protocol, s.connections, s.p50_ms, s.p99_ms, s.cpu_us_per_load, s.failed_loads, s.loads
            ));
            if let Some(e) = &s.first_failure {
                rec.error = Some(format!(
                    "{} {} loads failed, the first: {e}",
                    s.failed_loads, s.protocol
                ));
            }
        }
    }

    /// A fresh process per round: freed connection memory stays in the allocator, so a
    /// second round in the same process would show no growth. False: it did not start.
    fn restart(&self, l: &mut Live) -> bool {
        if let Some(mut old) = l.proc.take() {
            old.stop();
        }
        let mut fresh = start_target(&l.name, self.sc, self.cx, self.dirs);
        if fresh.res.available {
            if let Some(u) = fresh.res.url.clone() {
                let secs = self.cx.set.warmup.max(1);
                let _ = load(self.sc, &self.script, &self.h2log(l), &u, secs);
            }
            l.proc = fresh.proc.take();
            l.port = fresh.port;
            true
        } else {
            l.res.available = false;
            l.res.reason = fresh.res.reason.take();
            false
        }
    }

    /// Idle clients (arriving one by one, or in bursts) and a trickle of requests; over
    /// TLS (HTTP/2, or HTTP/1.1), up to 5,000 h2load connections held idle (no trickle).
    fn idle_run(&self, l: &Live, p: &Proc, rec: &mut RunRecord) {
        let (sc, set) = (self.sc, self.cx.set);
        let hold = Duration::from_secs(set.cr_duration.max(1));
        let ir = if sc.tls != Tls::None {
            // a fresh process each round, on a port of its own
            let url = wrk::url(sc, l.port);
            let run = h2idle::IdleRun {
                h1: !sc.h2,
                url: &url,
                port: l.port,
                clients: set.idle_clients.min(5000),
                hold,
                dir: &self.dirs.dir.join(&l.name),
            };
            rec.client_command = Some(h2idle::command_line(&run));
            match h2idle::idle_test(&run, p) {
                Ok(ir) => ir,
                Err(e) => {
                    log(&format!(
                        "{} / {} round {}: {e}",
                        sc.name, l.name, rec.round
                    ));
                    rec.error = Some(e);
                    return;
                }
            }
        } else {
            let addr: SocketAddr = format!("127.0.0.1:{}", l.port).parse().expect("addr");
            let clients = if sc.burst > 1 {
                set.idle_clients.min(5000)
            } else {
                set.idle_clients
            };
            let arrival = loadgen::Arrival {
                clients,
                burst: sc.burst,
            };
            loadgen::idle_test(addr, Some(p), arrival, 200.0, hold, &self.req)
        };
        self.idle_record(l, ir, rec);
    }

    /// An idle run's figures into its record, and the log line.
    fn idle_record(&self, l: &Live, ir: loadgen::IdleResult, rec: &mut RunRecord) {
        rec.cpu_seconds = ir.cpu_seconds;
        rec.cpu_us_per_req = ir.cpu_us_per_req;
        rec.rss_kib = ir.rss_after_kib;
        if ir.clients_open < ir.clients_wanted {
            rec.error = Some(format!(
                "only {} of {} clients connected",
                ir.clients_open, ir.clients_wanted
            ));
        }
        let trickle = if ir.trickle.connections > 0 {
            format!(", trickle p99 {:.0} us", ir.trickle.p99_us)
        } else {
            String::new()
        };
        log(&format!(
            "{} / {} round {}: {} clients, {:.0} B per idle connection ({:.0} B 1 s after the last answer){trickle}",
            self.sc.name,
            l.name,
            rec.round,
            ir.clients_open,
            ir.bytes_per_idle_conn,
            ir.bytes_per_idle_conn_1s,
        ));
        rec.idle = Some(ir);
    }

    /// One wrk (or h2load) run, with the CPU of the target, the origins, the client and
    /// the machine around it.
    fn load_run(&self, l: &Live, p: &Proc, rec: &mut RunRecord) {
        let os = self.cx.os;
        let url = l.res.url.clone().expect("url");
        let (c0, y0) = p.cpu_times();
        let o0 = os.cpu_seconds();
        let k0 = procs::children_cpu_seconds();
        let m0 = procs::MachineCpu::now();
        let w = load(
            self.sc,
            &self.script,
            &self.h2log(l),
            &url,
            self.cx.set.duration,
        );
        let m1 = procs::MachineCpu::now();
        let k1 = procs::children_cpu_seconds();
        let o1 = os.cpu_seconds();
        let (c1, y1) = p.cpu_times();
        rec.rss_kib = p.rss_kib().0;
        rec.cpu_seconds = c1 - c0;
        let w = match w {
            Ok((w, counts)) => {
                rec.h2load = counts;
                w
            }
            Err(e) => {
                log(&format!(
                    "{} / {} round {}: {e}",
                    self.sc.name, l.name, rec.round
                ));
                rec.error = Some(e);
                return;
            }
        };
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
        if let Some(c) = rec
            .h2load
            .as_ref()
            .filter(|_| w.errors > 0 || w.non_2xx > 0)
        {
            rec.error = Some(format!(
                "{} failed streams ({} errored, {} timeout), {} 4xx/5xx",
                c.failed, c.errored, c.timeout, w.non_2xx
            ));
        } else if w.errors > 0 || w.non_2xx > 0 {
            rec.error = Some(format!(
                "{} socket errors, {} non-2xx/3xx",
                w.errors, w.non_2xx
            ));
        }
        log(&format!(
            "{} / {} round {}: {:.0} req/s, p99 {:.0} us, {:.1} us CPU/req",
            self.sc.name, l.name, rec.round, w.rps, w.p99_us, rec.cpu_us_per_req
        ));
        rec.wrk = Some(w);
    }
}

/// Half the slowest proxy's median req/s (the slowest first round of any target when no
/// proxy was measured): infinite when nothing was.
fn half_capacity_base(live: &[Live]) -> f64 {
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
    let fallback = if proxies.is_empty() {
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
    };
    proxies
        .iter()
        .copied()
        .fold(f64::INFINITY, f64::min)
        .min(fallback)
}

/// Constant rate: the same rate for every target, half the slowest proxy's capacity.
/// Returns the rate when it was run.
fn constant_rate_runs(sc: &Scenario, cx: &Ctx, live: &mut [Live], req: &[u8]) -> Option<f64> {
    let set = cx.set;
    let rate = set
        .cr_rate
        .unwrap_or((half_capacity_base(live) * 0.5).floor());
    let cr_na = if sc.tls != Tls::None {
        Some(format!(
            "the harness's generator speaks plain HTTP/1.1 only ({} figures above)",
            if sc.h2 { "h2load" } else { "wrk" }
        ))
    } else if !rate.is_finite() || rate < 1.0 {
        Some("no target measured".to_string())
    } else {
        None
    };
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
            req,
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
    cr_na.is_none().then_some(rate)
}
