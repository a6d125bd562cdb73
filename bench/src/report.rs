//! report.md, latency.svg and results.json.

use crate::cli::Settings;
use crate::records::{ScenarioResult, Stat3, TargetResult, CEILING, CEILING_KERNEL};
use std::fmt::Write as _;
use std::path::Path;

pub struct Meta {
    pub command: String,
    pub date: String,
    pub machine: serde_json::Value,
    pub settings: Settings,
    pub subject: String,
    pub seconds: f64,
    pub origin_command: String,
}

fn us(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.1} ms", v / 1000.0)
    } else if v >= 1000.0 {
        format!("{:.2} ms", v / 1000.0)
    } else {
        format!("{v:.0} µs")
    }
}

fn stat_us(s: &Option<Stat3>) -> String {
    s.as_ref()
        .map(|s| us(s.median))
        .unwrap_or_else(|| "n/a".into())
}

fn stat_range(s: &Option<Stat3>, digits: usize) -> String {
    match s {
        Some(s) if s.n > 1 => format!("{:.d$} ({:.d$}–{:.d$})", s.median, s.min, s.max, d = digits),
        Some(s) => format!("{:.d$}", s.median, d = digits),
        None => "n/a".into(),
    }
}

fn kib(v: u64) -> String {
    if v == 0 {
        "n/a".into()
    } else if v >= 10 * 1024 {
        format!("{:.1} MiB", v as f64 / 1024.0)
    } else {
        format!("{v} KiB")
    }
}

fn row_target(t: &TargetResult, idle: bool) -> String {
    if !t.available && t.runs.is_empty() {
        return format!(
            "| {} | n/a: {} | | | | | |\n",
            t.target,
            crate::truncate(t.reason.as_deref().unwrap_or("?"), 160).replace('|', "/")
        );
    }
    let s = &t.summary;
    let cr = match (&t.constant_rate, &t.constant_rate_na) {
        (Some(c), _) => format!(
            "{} / {} / {}{}",
            us(c.p50_us),
            us(c.p99_us),
            us(c.p999_us),
            if c.errors > 0 || c.unsent > 0 {
                format!(" ({} err, {} unsent)", c.errors, c.unsent)
            } else {
                String::new()
            }
        ),
        (None, Some(_)) => "n/a".into(),
        (None, None) => "".into(),
    };
    let errs: u64 = t
        .runs
        .iter()
        .filter_map(|r| r.wrk.as_ref())
        .map(|w| w.errors + w.non_2xx)
        .sum();
    let note = if errs > 0 {
        format!(" ({errs} errors)")
    } else {
        String::new()
    };
    if idle {
        let open = t
            .runs
            .iter()
            .filter_map(|r| r.idle.as_ref())
            .map(|i| format!("{}", i.clients_open))
            .collect::<Vec<_>>()
            .join("/");
        format!(
            "| {} | {} | {} | {} / {} / {} | {} | {} | {} | clients open {open} |\n",
            t.target,
            stat_range(&s.bytes_per_idle_conn_1s, 0),
            stat_range(&s.bytes_per_idle_conn, 0),
            stat_us(&s.p50_us),
            stat_us(&s.p99_us),
            stat_us(&s.p999_us),
            stat_range(&s.cpu_us_per_req, 1),
            kib(s.peak_rss_kib),
            stat_range(&s.rps, 0),
        )
    } else {
        format!(
            "| {} | {}{note} | {} / {} / {} | {} | {} | {} |\n",
            t.target,
            stat_range(&s.rps, 0),
            stat_us(&s.p50_us),
            stat_us(&s.p99_us),
            stat_us(&s.p999_us),
            cr,
            stat_range(&s.cpu_us_per_req, 1),
            kib(s.peak_rss_kib),
        )
    }
}

fn med(s: &Option<Stat3>) -> Option<f64> {
    s.as_ref().map(|s| s.median)
}

/// Where the machine's CPU went per request, and the ceilings that leaves the subject.
fn cpu_split(m: &mut String, r: &ScenarioResult, subject: &str) {
    let rows: Vec<&TargetResult> = r
        .targets
        .iter()
        .filter(|t| t.summary.wrk_us_per_req.is_some())
        .collect();
    if rows.is_empty() {
        return;
    }
    m.push_str("\nWhere the machine's CPU went, µs per request (median of rounds): the target's processes (of which kernel), the origins (for direct: the origin not measured as the target), wrk, and the rest (the harness, kernel threads such as ksoftirqd); idle is the machine's idle + iowait share of the run.\n\n| target | target (kernel) | origins | wrk | rest | total | idle |\n|---|---|---|---|---|---|---|\n");
    for t in rows {
        let s = &t.summary;
        let v = [
            med(&s.cpu_us_per_req),
            med(&s.origins_us_per_req),
            med(&s.wrk_us_per_req),
            med(&s.other_us_per_req),
        ];
        let total: f64 = v.iter().flatten().sum();
        let cell = |x: Option<f64>| x.map(|x| format!("{x:.1}")).unwrap_or_else(|| "n/a".into());
        let _ = writeln!(
            m,
            "| {} | {} ({}) | {} | {} | {} | {total:.1} | {} |",
            t.target,
            cell(v[0]),
            cell(med(&s.sys_us_per_req)),
            cell(v[1]),
            cell(v[2]),
            cell(v[3]),
            med(&s.idle_share)
                .map(|x| format!("{:.0} %", x * 100.0))
                .unwrap_or_else(|| "n/a".into())
        );
    }
    let of = |metric: &str| -> Vec<String> {
        r.ratios
            .iter()
            .filter(|x| x.metric == metric)
            .filter_map(|x| {
                x.stat
                    .as_ref()
                    .map(|s| format!("{:.2}x {}'s", s.median, x.base))
            })
            .collect()
    };
    let (zero, kernel) = (of(CEILING), of(CEILING_KERNEL));
    if !zero.is_empty() {
        let _ = writeln!(
            m,
            "\nCeilings (per round: the other target's whole CPU per request, target + origins + wrk, over what {subject}'s round left): with no CPU of its own, {subject} would reach at most {} req/s; with its kernel time (its socket work) and no user-space CPU, {}.",
            zero.join(", "),
            kernel.join(", ")
        );
    }
}

pub fn markdown(meta: &Meta, rs: &[ScenarioResult]) -> String {
    let mut m = String::new();
    header(&mut m, meta);
    ratios_table(&mut m, meta, rs);
    m.push_str("\n![latency](latency.svg)\n\n");
    for r in rs {
        scenario_section(&mut m, meta, r);
    }
    m.push_str(HOW);
    m
}

/// The title, the command, the settings and the machine.
fn header(m: &mut String, meta: &Meta) {
    let _ = writeln!(m, "# engine vs HAProxy vs nginx: {}\n", meta.date);
    let _ = writeln!(m, "Produced by:\n\n```\n{}\n```\n", meta.command);
    let _ = writeln!(
        m,
        "Settings: {} interleaved rounds of {} s per target after {} s of warm-up; constant-rate runs of {} s; {} idle clients{}; maxconn {} for every proxy. Whole run: {:.0} s.\n",
        meta.settings.runs,
        meta.settings.duration,
        meta.settings.warmup,
        meta.settings.cr_duration,
        meta.settings.idle_clients,
        if meta.settings.idle_clients < meta.settings.idle_clients_requested {
            format!(
                " ({} requested: RLIMIT_NOFILE's hard limit here allows HAProxy only maxconn {}, 2 descriptors per connection, and cannot be raised without CAP_SYS_RESOURCE)",
                meta.settings.idle_clients_requested, meta.settings.maxconn
            )
        } else {
            String::new()
        },
        meta.settings.maxconn,
        meta.seconds
    );
    let mi = &meta.machine;
    let g = |k: &str| mi.get(k).and_then(|v| v.as_str()).unwrap_or("").to_string();
    let _ = writeln!(
        m,
        "Machine: {} cores ({}), {} memory, {}, {}. {}; {}; {}; engine: {}. Origins: {} (2 servers, 2 threads each).\n",
        mi.get("nproc").and_then(|v| v.as_u64()).unwrap_or(0),
        g("cpu"),
        g("memory"),
        g("kernel"),
        g("os"),
        g("haproxy"),
        g("nginx"),
        g("wrk"),
        g("engine"),
        meta.origin_command
    );
    let _ = writeln!(
        m,
        "Everything (load generator, proxies, origins) shares the same cores on 127.0.0.1, so the ratios are what matters, not the absolute rates. \"direct\" is wrk against one origin with no proxy: the ceiling.\n"
    );
}

/// The headline: the subject's ratios to the others, per scenario and metric.
fn ratios_table(m: &mut String, meta: &Meta, rs: &[ScenarioResult]) {
    // the headline: ratios
    let _ = writeln!(
        m,
        "## Ratios ({} / other, median of per-round ratios, min–max)\n",
        meta.subject
    );
    let _ = writeln!(
        m,
        "Rounds are interleaved, so round i of each target ran side by side; each ratio is taken per round. req/s: higher is better for {s}; p99 and CPU/request: lower is better for {s}; idle-10k: bytes per idle connection, lower is better.\n",
        s = meta.subject
    );
    let _ = writeln!(
        m,
        "| scenario | metric | vs haproxy | vs nginx | vs direct |\n|---|---|---|---|---|"
    );
    for r in rs {
        let mut metrics: Vec<&str> = Vec::new();
        for x in &r.ratios {
            if !metrics.contains(&x.metric.as_str()) {
                metrics.push(&x.metric);
            }
        }
        for mt in metrics {
            let cell = |base: &str| -> String {
                match r.ratios.iter().find(|x| x.base == base && x.metric == mt) {
                    Some(x) => match &x.stat {
                        Some(s) => format!("{:.2} ({:.2}–{:.2})", s.median, s.min, s.max),
                        None => format!("n/a ({})", x.reason.as_deref().unwrap_or("")),
                    },
                    None => "–".into(),
                }
            };
            let _ = writeln!(
                m,
                "| {} | {} | {} | {} | {} |",
                r.name,
                mt,
                cell("haproxy"),
                cell("nginx"),
                cell("direct")
            );
        }
    }
}

/// One scenario: what it is, a row per target, where the CPU went, the errors.
fn scenario_section(m: &mut String, meta: &Meta, r: &ScenarioResult) {
    let idle = r.name.starts_with("idle");
    let _ = writeln!(m, "## {}\n\n{}.\n", r.name, r.what);
    if idle {
        let _ = writeln!(
            m,
            "Each client connects, makes one request, and stays open; then a trickle of 200 req/s runs one at a time over a stride of the whole set (latency from intended send time). Memory per idle connection = RSS growth of the target's processes / clients.\n"
        );
        m.push_str("| target | bytes per idle conn 1 s after the last answer | bytes per idle conn, settled | trickle p50 / p99 / p99.9 | CPU µs/req | peak RSS | trickle req/s | |\n|---|---|---|---|---|---|---|---|\n");
    } else {
        if let Some(rate) = r.constant_rate_rps {
            let _ = writeln!(
                m,
                "wrk: `-t1 -c{}` (script in configs/{}/scenario.lua). Constant rate: {:.0} req/s for every target (half the slowest proxy's median), {} connections, latency from each request's intended send time (no coordinated omission).\n",
                r.connections,
                r.name,
                rate,
                r.connections.min(16)
            );
        } else {
            let _ = writeln!(
                m,
                "wrk: `-t1 -c{}` (script in configs/{}/scenario.lua).\n",
                r.connections, r.name
            );
        }
        m.push_str("| target | req/s median (min–max) | wrk p50 / p99 / p99.9 | constant-rate p50 / p99 / p99.9 | CPU µs/req | peak RSS |\n|---|---|---|---|---|---|\n");
    }
    for t in &r.targets {
        m.push_str(&row_target(t, idle));
    }
    if !idle {
        cpu_split(m, r, &meta.subject);
    }
    let notes: Vec<String> = r
        .targets
        .iter()
        .filter(|t| t.available || !t.runs.is_empty())
        .flat_map(|t| {
            t.runs
                .iter()
                .filter_map(|x| {
                    x.error
                        .as_ref()
                        .map(|e| format!("{} round {}: {e}", t.target, x.round))
                })
                .collect::<Vec<_>>()
        })
        .collect();
    if !notes.is_empty() {
        m.push_str("\nNotes: ");
        m.push_str(&notes.join("; "));
        m.push('\n');
    }
    m.push('\n');
}

/// How the configurations are equivalent, and how to read the figures.
const HOW: &str = "## How the configurations are equivalent\n\n\
- Same two origins (round robin), upstream connections pooled and kept alive (engine: its pool; HAProxy: `http-reuse always`; nginx: `keepalive` as many as maxconn per worker, `proxy_http_version 1.1`, `Connection \"\"`).\n\
- Two workers each: engine `--cores 2` (`--no-pin` unless the run says `--pin-engine`: no proxy is pinned, as the cores are shared with wrk and the origins), HAProxy `nbthread 2`, nginx `worker_processes 2`; logging off everywhere; `X-Forwarded-For` added by all three; client keep-alive timeout 120 s; no request limit per connection (nginx `keepalive_requests 100000000`).\n\
- Sticky scenarios: engine `[backend.cookie] name=\"SERVERID\" mode=\"insert\" indirect nocache`, HAProxy `cookie SERVERID insert indirect nocache`. nginx OSS cannot insert a persistence cookie; the closest equivalent used here maps `$cookie_SERVERID` to a one-server upstream (exact stickiness), adds `Set-Cookie: SERVERID=<id>; Path=/` from `$upstream_addr` when the client sent none, and removes the cookie from what the origin receives.\n\
- TLS: the same self-signed certificate for all three (ECDSA P-256 for tls-ka, tls-handshake-ec and tls-resume, RSA-2048 for tls-handshake), TLS 1.2 and 1.3 in all three (nginx `ssl_protocols TLSv1.2 TLSv1.3`: 1.22's default stops at 1.2), TLS 1.3 negotiated. wrk offers its previous connection's session on each new one, so the tls-handshake scenarios turn resumption off in all three servers (engine `session_resumption = false`; HAProxy `no-tls-tickets` and `tune.ssl.cachesize 0`; nginx `ssl_session_tickets off`, `ssl_session_cache off`) and every handshake is a full one; tls-resume leaves it on (nginx `ssl_session_cache shared:tls:10m`).\n\
- The engine runs with `MIMALLOC_ALLOW_THP=0` so its RSS is not rounded up to huge pages.\n\
- Every generated configuration is under configs/<scenario>/, and every command in results.json.\n\n\
## How to read this\n\n\
- req/s: wrk `--latency -t1 -c64` (16 connections for 1 MiB); percentiles from wrk's `done` callback (its own histogram, subject to coordinated omission at saturation).\n\
- constant-rate: the harness's generator at a fixed rate below every proxy's capacity; its percentiles are the honest latency figures.\n\
- CPU µs/req: utime+stime of the target's processes (from /proc/PID/stat) over the run / requests. For direct, the origin's CPU.\n\
- Where the CPU went: the origins' CPU from /proc/PID/stat, wrk's from getrusage(RUSAGE_CHILDREN) around its run, the machine's busy time from /proc/stat; the rest is busy time no process here accounts for. With idle near 0 the cores are saturated and req/s is about cores / total CPU per request, so wrk and the origins bound every proxy's req/s: `rps ceiling (zero-CPU subject)` is the req/s ratio the subject would reach against each other target if its own CPU per request were zero, and `rps ceiling (subject's kernel time only)` the same if only its user-space CPU were zero (its kernel time, the socket work on loopback, kept).\n\
- peak RSS: VmHWM summed over the target's processes during the scenario (for direct, over the whole bench).\n";

const COLORS: [(&str, &str); 4] = [
    ("engine", "#d62728"),
    ("haproxy", "#1f77b4"),
    ("nginx", "#2ca02c"),
    ("direct", "#7f7f7f"),
];

/// Grouped bars, log scale: per scenario, per target, p50 / p99 / p99.9 (wrk).
pub fn svg(meta: &Meta, rs: &[ScenarioResult]) -> String {
    let c = Chart::new(rs);
    let (width, height, left) = (c.width, c.height, c.left);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{height:.0}\" font-family=\"sans-serif\" font-size=\"11\">"
    );
    let _ = writeln!(
        s,
        "<!-- produced by: {} -->",
        meta.command.replace("--", "- -")
    );
    let _ = writeln!(s, "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>");
    let _ = writeln!(
        s,
        "<text x=\"{left}\" y=\"22\" font-size=\"14\">Latency per scenario (wrk; bars: p50, p99, p99.9; log scale), {}</text>",
        meta.date
    );
    c.grid(&mut s);
    for (gi, r) in rs.iter().enumerate() {
        c.group(&mut s, gi, r);
    }
    c.legend(&mut s);
    s.push_str("</svg>\n");
    s
}

/// The latency chart's geometry and its log scale, from `lo` to `hi` µs.
struct Chart {
    bar: f64,
    tgap: f64,
    ggap: f64,
    /// the width of one scenario's group of bars
    gw: f64,
    left: f64,
    top: f64,
    h: f64,
    width: f64,
    height: f64,
    lo: f64,
    hi: f64,
}

impl Chart {
    fn new(rs: &[ScenarioResult]) -> Chart {
        let bar = 7.0;
        let tgap = 5.0;
        let ggap = 30.0;
        let ntargets = COLORS.len() as f64;
        let gw = ntargets * (3.0 * bar + tgap);
        let left = 70.0;
        let top = 50.0;
        let h = 300.0;
        let (lo, hi) = scale(rs);
        Chart {
            bar,
            tgap,
            ggap,
            gw,
            left,
            top,
            h,
            width: left + rs.len() as f64 * (gw + ggap) + 160.0,
            height: top + h + 90.0,
            lo,
            hi,
        }
    }

    fn y(&self, v: f64) -> f64 {
        let (lo, hi) = (self.lo, self.hi);
        self.top + self.h - (v.max(lo).log10() - lo.log10()) / (hi.log10() - lo.log10()) * self.h
    }

    /// A line per power of ten.
    fn grid(&self, s: &mut String) {
        let left = self.left;
        let mut v = self.lo;
        while v <= self.hi * 1.0001 {
            let yy = self.y(v);
            let _ = writeln!(
                s,
                "<line x1=\"{left}\" x2=\"{:.0}\" y1=\"{yy:.1}\" y2=\"{yy:.1}\" stroke=\"#ddd\"/><text x=\"{:.0}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
                self.width - 150.0,
                left - 5.0,
                yy + 4.0,
                us(v)
            );
            v *= 10.0;
        }
    }

    /// Scenario `gi`: three bars per target (n/a when it has no figures), its name below.
    fn group(&self, s: &mut String, gi: usize, r: &ScenarioResult) {
        let (bar, top, h) = (self.bar, self.top, self.h);
        let gx = self.left + 10.0 + gi as f64 * (self.gw + self.ggap);
        for (ti, (name, color)) in COLORS.iter().enumerate() {
            let tx = gx + ti as f64 * (3.0 * bar + self.tgap);
            let t = r.targets.iter().find(|t| t.target == *name);
            let st = t.map(|t| [&t.summary.p50_us, &t.summary.p99_us, &t.summary.p999_us]);
            match st {
                Some(arr) if arr.iter().any(|x| x.is_some()) => {
                    for (pi, p) in arr.iter().enumerate() {
                        if let Some(p) = p {
                            let yy = self.y(p.median.max(1.0));
                            let op = [1.0, 0.65, 0.35][pi];
                            let _ = writeln!(
                                s,
                                "<rect x=\"{:.1}\" y=\"{yy:.1}\" width=\"{bar}\" height=\"{:.1}\" fill=\"{color}\" fill-opacity=\"{op}\"><title>{} {name} p{}: {}</title></rect>",
                                tx + pi as f64 * bar,
                                top + h - yy,
                                r.name,
                                ["50", "99", "99.9"][pi],
                                us(p.median)
                            );
                        }
                    }
                }
                _ => {
                    let _ = writeln!(
                        s,
                        "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"8\" fill=\"{color}\" transform=\"rotate(-90 {:.1} {:.1})\">n/a</text>",
                        tx + 12.0,
                        top + h - 4.0,
                        tx + 12.0,
                        top + h - 4.0
                    );
                }
            }
        }
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            gx + self.gw / 2.0,
            top + h + 18.0,
            r.name
        );
    }

    /// The targets' colours, and which bar is which percentile.
    fn legend(&self, s: &mut String) {
        let top = self.top;
        let lx = self.width - 140.0;
        for (i, (name, color)) in COLORS.iter().enumerate() {
            let ly = top + 10.0 + i as f64 * 18.0;
            let _ = writeln!(
                s,
                "<rect x=\"{lx}\" y=\"{:.0}\" width=\"12\" height=\"12\" fill=\"{color}\"/><text x=\"{:.0}\" y=\"{:.0}\">{name}</text>",
                ly,
                lx + 18.0,
                ly + 10.0
            );
        }
        let _ = writeln!(
            s,
            "<text x=\"{lx}\" y=\"{:.0}\">dark → light:</text><text x=\"{lx}\" y=\"{:.0}\">p50, p99, p99.9</text>",
            top + 100.0,
            top + 114.0
        );
    }
}

/// The powers of ten below and above every percentile shown.
fn scale(rs: &[ScenarioResult]) -> (f64, f64) {
    let mut vals = Vec::new();
    for r in rs {
        for t in &r.targets {
            for s in [&t.summary.p50_us, &t.summary.p99_us, &t.summary.p999_us]
                .into_iter()
                .flatten()
            {
                vals.push(s.median.max(1.0));
            }
        }
    }
    let lo = 10f64
        .powf(
            vals.iter()
                .copied()
                .fold(f64::INFINITY, f64::min)
                .log10()
                .floor(),
        )
        .max(1.0);
    let hi = 10f64.powf(vals.iter().copied().fold(10.0, f64::max).log10().ceil());
    let lo = if lo.is_finite() {
        lo.min(hi / 10.0)
    } else {
        1.0
    };
    (lo, hi)
}

pub fn write_all(out: &Path, meta: &Meta, rs: &[ScenarioResult]) -> std::io::Result<()> {
    let graphable: Vec<ScenarioResult> = rs.to_vec();
    std::fs::write(out.join("report.md"), markdown(meta, rs))?;
    std::fs::write(out.join("latency.svg"), svg(meta, &graphable))?;
    let json = serde_json::json!({
        "command": meta.command,
        "date": meta.date,
        "machine": meta.machine,
        "settings": {
            "runs": meta.settings.runs,
            "duration_s": meta.settings.duration,
            "warmup_s": meta.settings.warmup,
            "constant_rate_s": meta.settings.cr_duration,
            "idle_clients": meta.settings.idle_clients,
            "idle_clients_requested": meta.settings.idle_clients_requested,
            "maxconn": meta.settings.maxconn,
            "constant_rate_rps_override": meta.settings.cr_rate,
        },
        "subject": meta.subject,
        "origin": meta.origin_command,
        "seconds": meta.seconds,
        "scenarios": rs,
    });
    std::fs::write(
        out.join("results.json"),
        serde_json::to_string_pretty(&json).unwrap_or_default(),
    )?;
    Ok(())
}
