//! h2-idle: N HTTP/2 connections over TLS, each after one request, held idle, and the
//! target's RSS growth per connection, measured as idle-10k measures plain HTTP/1.1
//! clients; tls-idle: the same with HTTP/1.1 over TLS (h2load `--h1`), the baseline that
//! tells HTTP/2's share from TLS's.
//!
//! The clients are one h2load process: `h2load -t 1 -c N -m 1 --rps 0.001 -D S
//! --log-file=LOG URL`. In its timed mode each client connects, sends its first request
//! at once and then one per 1/rps = 1,000 s, so after the first answer every connection
//! stays open and idle until h2load is stopped. The harness waits for N lines in the log
//! (one per answer), counts the connections open from /proc/net/tcp, reads the target's
//! RSS one second later and again `hold` later, then stops h2load.

use crate::loadgen::IdleResult;
use crate::procs::Proc;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// How long the clients may take to connect and get their first answer.
const OPEN_LIMIT: Duration = Duration::from_secs(90);

/// The command that holds `run.clients` connections open for up to `secs` seconds.
fn command(run: &IdleRun, secs: u64, log: &Path) -> Command {
    let mut cmd = Command::new("h2load");
    if run.h1 {
        cmd.arg("--h1");
    }
    cmd.args(["-t", "1", "-c", &run.clients.to_string(), "-m", "1"])
        .args(["--rps", "0.001", "-D", &secs.to_string()])
        .arg(format!("--log-file={}", log.display()))
        .arg(run.url);
    cmd
}

/// The command [`idle_test`] runs for `run`.
pub fn command_line(run: &IdleRun) -> String {
    let log = run.dir.join(LOG);
    crate::procs::command_line(&command(run, hold_secs(run), &log))
}

/// h2load's -D: long enough to connect, measure and hold; h2load is stopped before.
fn hold_secs(run: &IdleRun) -> u64 {
    OPEN_LIMIT.as_secs() + run.hold.as_secs() + 10
}

/// h2load's request log, in the target's folder.
const LOG: &str = "h2-idle-requests.log";

/// Established client connections to 127.0.0.1:`port`, from /proc/net/tcp.
pub fn established_to(port: u16) -> usize {
    let text = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    text.lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let rem_port = f
                .get(2)
                .and_then(|a| a.split(':').nth(1))
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            rem_port == Some(port) && f.get(3) == Some(&"01")
        })
        .count()
}

/// (answers with a 2xx/3xx status, other answers and failed streams) in an h2load log.
fn answers(log: &Path) -> (usize, usize) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut ok = 0;
    let mut bad = 0;
    for l in text.lines() {
        match l
            .split('\t')
            .nth(1)
            .and_then(|s| s.trim().parse::<i32>().ok())
        {
            Some(s) if (200..400).contains(&s) => ok += 1,
            Some(_) => bad += 1,
            None => {}
        }
    }
    (ok, bad)
}

/// What one h2-idle measurement is run with.
pub struct IdleRun<'a> {
    /// HTTP/1.1 over TLS (`--h1`) rather than HTTP/2
    pub h1: bool,
    pub url: &'a str,
    pub port: u16,
    pub clients: usize,
    /// between the figure one second after the last answer and the settled one
    pub hold: Duration,
    /// where h2load's output and log go
    pub dir: &'a Path,
}

/// Opens the connections, measures, and closes them; `proc` is the target. Err: h2load
/// did not start, or negotiated another protocol than asked.
pub fn idle_test(run: &IdleRun, proc: &Proc) -> Result<IdleResult, String> {
    let mut r = IdleResult {
        clients_wanted: run.clients,
        ..Default::default()
    };
    std::thread::sleep(Duration::from_millis(300));
    r.rss_before_kib = proc.rss_kib().0;
    let cpu0 = proc.cpu_seconds();
    let log = run.dir.join(LOG);
    let _ = std::fs::remove_file(&log);
    let cmd = command(run, hold_secs(run), &log);
    let t0 = Instant::now();
    let out = run.dir.join("h2-idle-h2load.out");
    let mut h2load = Proc::spawn(cmd, &out).map_err(crate::h2load::not_started)?;
    let (ok, bad) = wait_answers(&log, run.clients, &mut h2load);
    r.open_seconds = t0.elapsed().as_secs_f64();
    let said = std::fs::read_to_string(&out).unwrap_or_default();
    let protocol = said
        .lines()
        .find_map(|l| l.strip_prefix("Application protocol:"))
        .map(|p| p.trim().to_string())
        .unwrap_or_default();
    let want = if run.h1 { "http/1.1" } else { "h2" };
    if protocol != want {
        h2load.stop();
        return Err(format!(
            "h2load negotiated {protocol:?}, not {want} ({ok} answers, {bad} failed): {}",
            h2load.log_tail(3)
        ));
    }
    std::thread::sleep(Duration::from_secs(1));
    r.clients_open = established_to(run.port).min(ok);
    r.open_errors = (run.clients - r.clients_open) as u64;
    r.rss_1s_kib = proc.rss_kib().0;
    std::thread::sleep(run.hold);
    let (after, hwm) = proc.rss_kib();
    r.rss_after_kib = after;
    r.peak_rss_kib = hwm;
    r.closed_by_target = r.clients_open.saturating_sub(established_to(run.port));
    r.cpu_seconds = proc.cpu_seconds() - cpu0;
    if ok > 0 {
        // every connection's handshake and its one request
        r.cpu_us_per_req = r.cpu_seconds * 1e6 / ok as f64;
    }
    if r.clients_open > 0 {
        let per =
            |kib: u64| (kib as f64 - r.rss_before_kib as f64) * 1024.0 / r.clients_open as f64;
        r.bytes_per_idle_conn = per(r.rss_after_kib);
        r.bytes_per_idle_conn_1s = per(r.rss_1s_kib);
    }
    h2load.stop();
    let _ = std::fs::remove_file(&log);
    std::thread::sleep(Duration::from_millis(300));
    Ok(r)
}

/// Waits until `want` answers are in the log (or h2load exits, or [`OPEN_LIMIT`], or
/// nothing was answered in a third of it).
fn wait_answers(log: &Path, want: usize, h2load: &mut Proc) -> (usize, usize) {
    let t0 = Instant::now();
    loop {
        let (ok, bad) = answers(log);
        let waited = t0.elapsed();
        let none = ok + bad == 0 && waited > OPEN_LIMIT / 3;
        if ok + bad >= want || waited > OPEN_LIMIT || none || !h2load.alive() {
            return (ok, bad);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listener_of_ours_is_counted_once_connected() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        let before = established_to(port);
        let _c = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        let (_s, _) = l.accept().expect("accept");
        assert_eq!(established_to(port), before + 1);
    }
}
