//! The HTTP/2 scenarios' parts of report.md: how h2 and h2-idle ran, h2load's counts, the
//! h2-page table and its HTTP/2 / HTTP/1.1 ratios.

use crate::page::PAGE_REQUESTS;
use crate::records::{ScenarioResult, TargetResult};
use crate::report::stat_range;
use std::fmt::Write as _;

/// How h2 ran.
pub fn load_intro(m: &mut String, r: &ScenarioResult) {
    let _ = writeln!(
        m,
        "h2load: `-t 1 -c {} -m {} -D <duration> --log-file=<log> https://127.0.0.1:<port>/` ({} connections x {} concurrent streams; each target's command in results.json). h2load prints no percentiles: p50 / p99 / p99.9 are nearest-rank percentiles over the latency of every response in its log; req/s is responses / duration. The harness's constant-rate generator speaks plain HTTP/1.1 only.\n",
        r.connections, r.streams, r.connections, r.streams
    );
}

/// How h2-idle (HTTP/2) and tls-idle (HTTP/1.1) ran.
pub fn idle_intro(m: &mut String, h2: bool) {
    let (what, flag) = if h2 {
        ("TLS (ALPN h2)", "")
    } else {
        ("TLS, HTTP/1.1", "--h1 ")
    };
    let _ = writeln!(
        m,
        "One h2load process opens the connections over {what}: `h2load {flag}-t 1 -c N -m 1 --rps 0.001 -D <long> --log-file=<log> https://127.0.0.1:<port>/`, so each connection makes one request at once and then none for 1,000 s. Once every answer is in the log, the RSS of the target's processes is read 1 s later, then again after the constant-rate duration (settled; nothing is sent in between, so the two differ only if the target frees or grows memory by itself), and h2load is stopped. Memory per idle connection = RSS growth / connections open (from /proc/net/tcp); TLS state included (compare h2-idle with tls-idle for HTTP/2's own share). No trickle runs over them (h2load cannot spread requests over held connections); CPU µs/req here is per connection: its TLS handshake{} and one request.\n",
        if h2 { ", HTTP/2 setup" } else { "" }
    );
}

/// h2load's counts per target, summed over the rounds.
pub fn counts(m: &mut String, r: &ScenarioResult) {
    let rows: Vec<&TargetResult> = r
        .targets
        .iter()
        .filter(|t| t.runs.iter().any(|x| x.h2load.is_some()))
        .collect();
    if rows.is_empty() {
        return;
    }
    m.push_str("\nh2load's counts, summed over the rounds: responses, of which 2xx/3xx (succeeded); streams that failed (reset or cut off: of which errored, timed out); 4xx and 5xx answers.\n\n| target | protocol | responses | succeeded | failed (errored, timeout) | 4xx | 5xx |\n|---|---|---|---|---|---|---|\n");
    for t in rows {
        let c: Vec<_> = t.runs.iter().filter_map(|x| x.h2load.as_ref()).collect();
        let sum = |g: fn(&crate::h2load::H2loadCounts) -> u64| c.iter().map(|x| g(x)).sum::<u64>();
        let _ = writeln!(
            m,
            "| {} | {} | {} | {} | {} ({}, {}) | {} | {} |",
            t.target,
            c.first().map(|x| x.protocol.as_str()).unwrap_or(""),
            sum(|x| x.done.saturating_sub(x.failed)),
            sum(|x| x.succeeded),
            sum(|x| x.failed),
            sum(|x| x.errored),
            sum(|x| x.timeout),
            sum(|x| x.status_4xx),
            sum(|x| x.status_5xx),
        );
    }
}

/// h2-page: page-load time per protocol, per target that ran it.
pub fn page_section(m: &mut String, r: &ScenarioResult) {
    let _ = writeln!(
        m,
        "Each page load is one h2load process: new connections and TLS handshakes, then the page and its 40 assets ({PAGE_REQUESTS} requests, uris.txt under configs/{}/): HTTP/2 `h2load -n 41 -c 1 -m 41 -i uris.txt` (one connection, every request a concurrent stream), HTTP/1.1 `h2load --h1 -n 41 -c 6 -m 1 -i uris.txt` (6 connections, one request at a time on each, as a browser). Page-load time = h2load's \"finished in\", from before the first connect to the last response. h2load gives each client the list from its start, so over HTTP/1.1 the 6 connections each fetch the page and the first 5 or 6 assets (41 requests, all small answers). Loads alternate between the protocols in blocks of 10; CPU per page is the target's, read around each block. Figures: median (min–max) of the rounds' values.\n",
        r.name
    );
    m.push_str("| target | protocol | connections | page loads (failed) | page load p50, ms | page load p99, ms | CPU µs/page |\n|---|---|---|---|---|---|---|\n");
    for t in &r.targets {
        if !t.available && t.runs.is_empty() {
            let _ = writeln!(
                m,
                "| {} | n/a: {} | | | | | |",
                t.target,
                crate::truncate(t.reason.as_deref().unwrap_or("?"), 160).replace('|', "/")
            );
            continue;
        }
        for s in &t.summary.page {
            let loads: usize = t
                .runs
                .iter()
                .flat_map(|x| x.page.iter())
                .filter(|x| x.protocol == s.protocol)
                .map(|x| x.loads)
                .sum();
            let conns = if s.protocol == "h2" { 1 } else { 6 };
            let _ = writeln!(
                m,
                "| {} | {} | {conns} | {loads} ({}) | {} | {} | {} |",
                t.target,
                s.protocol,
                s.failed_loads,
                stat_range(&s.p50_ms, 2),
                stat_range(&s.p99_ms, 2),
                stat_range(&s.cpu_us_per_load, 0),
            );
        }
    }
    m.push('\n');
    page_ratio_lines(m, r);
}

/// "HTTP/2 / HTTP/1.1" ratio lines of an h2-page result.
fn page_ratio_lines(m: &mut String, r: &ScenarioResult) {
    for x in &r.ratios {
        let what = match x.metric.as_str() {
            "page_load_p50" => "page-load p50",
            "page_load_p99" => "page-load p99",
            "cpu_per_page" => "CPU per page",
            other => other,
        };
        let v = match &x.stat {
            Some(s) if s.n > 1 => format!("{:.2} ({:.2}–{:.2})", s.median, s.min, s.max),
            Some(s) => format!("{:.2}", s.median),
            None => format!("n/a ({})", x.reason.as_deref().unwrap_or("")),
        };
        let _ = writeln!(m, "- {what}, {} / {}: {v}", x.subject, x.base);
    }
}

/// The h2-page ratios under the main ratio table.
pub fn page_ratios(m: &mut String, r: &ScenarioResult) {
    if r.ratios.is_empty() {
        return;
    }
    let _ = writeln!(
        m,
        "\n{}: HTTP/2 / HTTP/1.1 through the same target, per round (median, min–max; lower is better for HTTP/2):\n",
        r.name
    );
    page_ratio_lines(m, r);
}
