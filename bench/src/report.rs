//! report.md, latency.svg and results.json.

use crate::cli::Settings;
use crate::records::{ScenarioResult, Stat3, TargetResult, CEILING, CEILING_KERNEL};
use crate::{chart, report_h2};
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

pub fn us(v: f64) -> String {
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

pub fn stat_range(s: &Option<Stat3>, digits: usize) -> String {
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
    let client = if r.h2 { "h2load" } else { "wrk" };
    let _ = write!(m, "\nWhere the machine's CPU went, µs per request (median of rounds): the target's processes (of which kernel), the origins (for direct: the origin not measured as the target), {client}, and the rest (the harness, kernel threads such as ksoftirqd); idle is the machine's idle + iowait share of the run.\n\n| target | target (kernel) | origins | {client} | rest | total | idle |\n|---|---|---|---|---|---|---|\n");
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
            "\nCeilings (per round: the other target's whole CPU per request, target + origins + {client}, over what {subject}'s round left): with no CPU of its own, {subject} would reach at most {} req/s; with its kernel time (its socket work) and no user-space CPU, {}.",
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
        "Settings: {} interleaved rounds of {} s per target after {} s of warm-up; constant-rate runs of {} s; {} idle clients{}; {} page loads per protocol and round (h2-page); maxconn {} for every proxy. Whole run: {:.0} s.\n",
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
        meta.settings.page_loads,
        meta.settings.maxconn,
        meta.seconds
    );
    let mi = &meta.machine;
    let g = |k: &str| mi.get(k).and_then(|v| v.as_str()).unwrap_or("").to_string();
    let _ = writeln!(
        m,
        "Machine: {} cores ({}), {} memory, {}, {}. {}; {}; {}; {}; engine: {}. Origins: {} (2 servers, 2 threads each).\n",
        mi.get("nproc").and_then(|v| v.as_u64()).unwrap_or(0),
        g("cpu"),
        g("memory"),
        g("kernel"),
        g("os"),
        g("haproxy"),
        g("nginx"),
        g("wrk"),
        g("h2load"),
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
    ratios_main(m, meta, rs);
    for r in rs.iter().filter(|r| r.page) {
        report_h2::page_ratios(m, r);
    }
}

/// The subject against the other targets.
fn ratios_main(m: &mut String, meta: &Meta, rs: &[ScenarioResult]) {
    // the headline: ratios
    let _ = writeln!(
        m,
        "## Ratios ({} / other, median of per-round ratios, min–max)\n",
        meta.subject
    );
    let _ = writeln!(
        m,
        "Rounds are interleaved, so round i of each target ran side by side; each ratio is taken per round. req/s: higher is better for {s}; p99 and CPU/request: lower is better for {s}; idle-10k, idle-burst, h2-idle, tls-idle: bytes per idle connection, lower is better.\n",
        s = meta.subject
    );
    let _ = writeln!(
        m,
        "| scenario | metric | vs haproxy | vs nginx | vs direct |\n|---|---|---|---|---|"
    );
    for r in rs.iter().filter(|r| !r.page) {
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
    let idle = r.idle;
    let _ = writeln!(m, "## {}\n\n{}.\n", r.name, r.what);
    if r.page {
        report_h2::page_section(m, r);
        notes(m, r);
        return;
    }
    if idle {
        if r.tls {
            report_h2::idle_intro(m, r.h2);
        } else {
            let _ = writeln!(
                m,
                "Each client connects, makes one request, and stays open; then a trickle of 200 req/s runs one at a time over a stride of the whole set (latency from intended send time). Memory per idle connection = RSS growth of the target's processes / clients.\n"
            );
        }
        m.push_str("| target | bytes per idle conn 1 s after the last answer | bytes per idle conn, settled | trickle p50 / p99 / p99.9 | CPU µs/req | peak RSS | trickle req/s | |\n|---|---|---|---|---|---|---|---|\n");
    } else if r.h2 {
        report_h2::load_intro(m, r);
        m.push_str("| target | req/s median (min–max) | h2load p50 / p99 / p99.9 | constant-rate p50 / p99 / p99.9 | CPU µs/req | peak RSS |\n|---|---|---|---|---|---|\n");
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
    if r.h2 && !idle {
        report_h2::counts(m, r);
    }
    notes(m, r);
}

/// The errors of every run, and a blank line.
fn notes(m: &mut String, r: &ScenarioResult) {
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
- HTTP/2 (h2, h2-idle, h2-page): the same TLS listener and certificate as tls-ka, ALPN offering h2 then http/1.1 in all three (engine `alpn = [\"h2\", \"http/1.1\"]` on the frontend, its default; HAProxy `bind ... ssl crt ... alpn h2,http/1.1`; nginx `listen ... ssl http2` before 1.25.1, `http2 on;` from it); HTTP/1.1 to the origins, pooled as above; the servers' default stream limits (engine and HAProxy 100, nginx 128 concurrent streams), above the 10 (41 in h2-page) the clients open. nginx's `keepalive_requests` and `keepalive_timeout` also bound its HTTP/2 connections (from 1.19.7), set as above.\n\
- The engine runs with `MIMALLOC_ALLOW_THP=0` so its RSS is not rounded up to huge pages.\n\
- Every generated configuration is under configs/<scenario>/, and every command in results.json.\n\n\
## How to read this\n\n\
- req/s: wrk `--latency -t1 -c64` (16 connections for 1 MiB); percentiles from wrk's `done` callback (its own histogram, subject to coordinated omission at saturation).\n\
- h2: h2load `-t 1 -c 64 -m 10 -D S --log-file=LOG`; req/s = responses / S; h2load prints no percentiles, so p50/p99/p99.9 are nearest-rank percentiles over the latency of every response in its log (as wrk's, at saturation: throughput figures). Failed streams and 4xx/5xx answers are counted from its summary.\n\
- h2-page: one h2load process per page load (connections and TLS handshakes included), `-n 41 -c 1 -m 41` over HTTP/2, `--h1 -n 41 -c 6 -m 1` over HTTP/1.1; the time is h2load's \"finished in\".\n\
- constant-rate: the harness's generator at a fixed rate below every proxy's capacity; its percentiles are the honest latency figures.\n\
- CPU µs/req: utime+stime of the target's processes (from /proc/PID/stat) over the run / requests. For direct, the origin's CPU.\n\
- Where the CPU went: the origins' CPU from /proc/PID/stat, wrk's from getrusage(RUSAGE_CHILDREN) around its run, the machine's busy time from /proc/stat; the rest is busy time no process here accounts for. With idle near 0 the cores are saturated and req/s is about cores / total CPU per request, so wrk and the origins bound every proxy's req/s: `rps ceiling (zero-CPU subject)` is the req/s ratio the subject would reach against each other target if its own CPU per request were zero, and `rps ceiling (subject's kernel time only)` the same if only its user-space CPU were zero (its kernel time, the socket work on loopback, kept).\n\
- peak RSS: VmHWM summed over the target's processes during the scenario (for direct, over the whole bench).\n";

pub fn write_all(out: &Path, meta: &Meta, rs: &[ScenarioResult]) -> std::io::Result<()> {
    // page-load times are in the h2-page section, not the latency chart
    let graphable: Vec<ScenarioResult> = rs.iter().filter(|r| !r.page).cloned().collect();
    std::fs::write(out.join("report.md"), markdown(meta, rs))?;
    std::fs::write(out.join("latency.svg"), chart::svg(meta, &graphable))?;
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
            "page_loads": meta.settings.page_loads,
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
