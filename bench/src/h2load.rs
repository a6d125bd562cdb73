//! h2load runs (nghttp2's HTTP/2 load generator): the h2 scenario's timed load, and the
//! parsing of what h2load prints and of its `--log-file` (one line per request: start
//! time in µs since the epoch, status, µs until the end of the response; status -1 for a
//! failed stream). h2load prints no percentiles: they are computed from that file.

use crate::procs::{command_line, run_bounded};
use crate::wrk::WrkResult;
use serde::Serialize;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// What h2load's summary says, and what its log file held.
#[derive(Serialize, Clone, Debug, Default)]
pub struct H2loadCounts {
    /// the protocol negotiated ("Application protocol:"): h2, or http/1.1 with `--h1`
    pub protocol: String,
    /// "finished in": the whole run, connections included
    pub finished_s: f64,
    /// h2load's own req/s (succeeded / duration)
    pub rps: f64,
    pub total: u64,
    pub started: u64,
    pub done: u64,
    /// responses with a 2xx or 3xx status
    pub succeeded: u64,
    /// streams that ended without a response (reset, connection closed), of which
    /// `errored` by an error and `timeout` by a timeout
    pub failed: u64,
    pub errored: u64,
    pub timeout: u64,
    pub status_2xx: u64,
    pub status_3xx: u64,
    pub status_4xx: u64,
    pub status_5xx: u64,
    /// lines in the log file: responses (any status) and failed streams (-1)
    pub log_responses: u64,
    pub log_failed: u64,
}

/// Why h2load did not run (most often: nghttp2-client is not installed).
pub fn not_started(e: std::io::Error) -> String {
    format!("h2load did not start ({e}): apt-get install nghttp2-client, or bash bench/install.sh")
}

/// The count before `word` in `line` ("... 12 succeeded, ...").
fn count_before(line: &str, word: &str) -> u64 {
    let toks: Vec<&str> = line.split([' ', ',']).filter(|t| !t.is_empty()).collect();
    toks.windows(2)
        .find(|w| w[1] == word)
        .and_then(|w| w[0].parse().ok())
        .unwrap_or(0)
}

/// An h2load duration ("1.00s", "5.23ms", "523.00us") in seconds.
pub fn parse_duration(s: &str) -> Option<f64> {
    let s = s.trim().trim_end_matches(',');
    let (num, mult) = if let Some(v) = s.strip_suffix("ms") {
        (v, 1e-3)
    } else if let Some(v) = s.strip_suffix("us") {
        (v, 1e-6)
    } else if let Some(v) = s.strip_suffix('s') {
        (v, 1.0)
    } else {
        return None;
    };
    num.parse::<f64>().ok().map(|v| v * mult)
}

/// h2load's summary; None when it printed none (it did not run, or could not connect).
pub fn parse_summary(out: &str) -> Option<H2loadCounts> {
    let mut c = H2loadCounts::default();
    let mut seen = false;
    for l in out.lines() {
        if let Some(p) = l.strip_prefix("Application protocol:") {
            c.protocol = p.trim().to_string();
        } else if let Some(rest) = l.strip_prefix("finished in ") {
            let mut parts = rest.split(", ");
            c.finished_s = parts.next().and_then(parse_duration).unwrap_or(0.0);
            c.rps = parts
                .next()
                .and_then(|r| r.strip_suffix(" req/s"))
                .and_then(|r| r.parse().ok())
                .unwrap_or(0.0);
        } else if l.starts_with("requests: ") {
            seen = true;
            c.total = count_before(l, "total");
            c.started = count_before(l, "started");
            c.done = count_before(l, "done");
            c.succeeded = count_before(l, "succeeded");
            c.failed = count_before(l, "failed");
            c.errored = count_before(l, "errored");
            c.timeout = count_before(l, "timeout");
        } else if l.starts_with("status codes: ") {
            c.status_2xx = count_before(l, "2xx");
            c.status_3xx = count_before(l, "3xx");
            c.status_4xx = count_before(l, "4xx");
            c.status_5xx = count_before(l, "5xx");
        }
    }
    seen.then_some(c)
}

/// The latencies (µs) of the responses in an h2load log, sorted, and the number of
/// failed streams (status -1).
pub fn read_log(path: &Path) -> (Vec<u64>, u64) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut lat = Vec::new();
    let mut failed = 0;
    for l in text.lines() {
        let mut f = l.split('\t');
        let (_start, status, us) = (f.next(), f.next(), f.next());
        match (status.and_then(|s| s.trim().parse::<i32>().ok()), us) {
            (Some(s), _) if s < 0 => failed += 1,
            (Some(_), Some(us)) => {
                if let Ok(v) = us.trim().parse::<u64>() {
                    lat.push(v);
                }
            }
            _ => {}
        }
    }
    lat.sort_unstable();
    (lat, failed)
}

/// The nearest-rank percentile `q` (0..1) of `sorted`: the smallest value with at least
/// q of the values at or below it.
pub fn percentile(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64
}

/// `h2load -t1 -c C -m M -D S --log-file=LOG URL`: the figures as wrk's (responses,
/// req/s, percentiles from the log, failed streams as errors, 4xx/5xx as non-2xx) and
/// h2load's own counts. Err when it did not run or negotiated another protocol than h2.
pub fn run(
    url: &str,
    conns: usize,
    streams: usize,
    secs: u64,
    log: &Path,
) -> Result<(WrkResult, H2loadCounts), String> {
    // h2load appends to its log file
    let _ = std::fs::remove_file(log);
    let mut cmd = Command::new("h2load");
    cmd.args([
        "-t",
        "1",
        "-c",
        &conns.to_string(),
        "-m",
        &streams.to_string(),
    ])
    .args(["-D", &secs.to_string()])
    .arg(format!("--log-file={}", log.display()))
    .arg(url);
    let command = command_line(&cmd);
    let (_ok, out, err) = run_bounded(cmd, Duration::from_secs(secs + 30)).map_err(not_started)?;
    let Some(mut c) = parse_summary(&out) else {
        let _ = std::fs::remove_file(log);
        return Err(format!(
            "h2load printed no summary: {} {}",
            crate::truncate(out.lines().last().unwrap_or(""), 200),
            crate::truncate(err.trim(), 200)
        ));
    };
    let (lat, failed) = read_log(log);
    let _ = std::fs::remove_file(log);
    c.log_responses = lat.len() as u64;
    c.log_failed = failed;
    if c.protocol != "h2" {
        return Err(format!(
            "h2load negotiated {:?}, not h2",
            if c.protocol.is_empty() {
                "nothing"
            } else {
                &c.protocol
            }
        ));
    }
    Ok((wrk_like(&c, &lat, secs, command), c))
}

/// h2load's figures in the shape of wrk's, so that the summaries, ratios and report
/// treat both alike.
fn wrk_like(c: &H2loadCounts, lat: &[u64], secs: u64, command: String) -> WrkResult {
    let responses = c.done.saturating_sub(c.failed);
    let duration_s = secs as f64;
    WrkResult {
        requests: responses,
        duration_s,
        rps: responses as f64 / duration_s,
        bytes: 0,
        errors: c.failed,
        non_2xx: c.status_4xx + c.status_5xx,
        p50_us: percentile(lat, 0.50),
        p90_us: percentile(lat, 0.90),
        p99_us: percentile(lat, 0.99),
        p999_us: percentile(lat, 0.999),
        max_us: lat.last().copied().unwrap_or(0) as f64,
        mean_us: if lat.is_empty() {
            0.0
        } else {
            lat.iter().sum::<u64>() as f64 / lat.len() as f64
        },
        command,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUT: &str = "starting benchmark...\nTLS Protocol: TLSv1.3\nApplication protocol: h2\n\nfinished in 1.00s, 4000.00 req/s, 281.51KB/s\nrequests: 4022 total, 4036 started, 4022 done, 4000 succeeded, 22 failed, 22 errored, 0 timeout\nstatus codes: 4000 2xx, 0 3xx, 3 4xx, 1 5xx\ntraffic: 281.51KB (288264) total\n";

    #[test]
    fn the_summary_is_parsed() {
        let c = parse_summary(OUT).expect("summary");
        assert_eq!(c.protocol, "h2");
        assert_eq!((c.finished_s, c.rps), (1.0, 4000.0));
        assert_eq!((c.total, c.started, c.done), (4022, 4036, 4022));
        assert_eq!(
            (c.succeeded, c.failed, c.errored, c.timeout),
            (4000, 22, 22, 0)
        );
        assert_eq!((c.status_2xx, c.status_4xx, c.status_5xx), (4000, 3, 1));
        assert!(parse_summary("h2load: could not connect\n").is_none());
    }

    #[test]
    fn durations_and_percentiles() {
        assert_eq!(parse_duration("5.25ms"), Some(0.00525));
        assert_eq!(parse_duration("2.00s"), Some(2.0));
        assert_eq!(parse_duration("500.00us"), Some(0.0005));
        let v: Vec<u64> = (1..=1000).collect();
        assert_eq!(percentile(&v, 0.5), 500.0);
        assert_eq!(percentile(&v, 0.99), 990.0);
        assert_eq!(percentile(&v, 0.999), 999.0);
        assert_eq!(percentile(&[7], 0.99), 7.0);
        assert_eq!(percentile(&[], 0.99), 0.0);
    }

    #[test]
    fn the_log_gives_latencies_and_failures() {
        let f = std::env::temp_dir().join(format!("h2load-log-{}", std::process::id()));
        std::fs::write(&f, "1\t200\t300\n2\t-1\t0\n3\t404\t100\n4\t200\t200\n").expect("write");
        let (lat, failed) = read_log(&f);
        let _ = std::fs::remove_file(&f);
        assert_eq!(lat, vec![100, 200, 300]);
        assert_eq!(failed, 1);
    }
}
