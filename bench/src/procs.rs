//! Child processes in their own process groups, killed on drop (and on SIGINT/SIGTERM of
//! the harness), and what /proc says about them: CPU time, RSS, peak RSS.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

const SLOTS: usize = 256;
static PGIDS: [AtomicI32; SLOTS] = [const { AtomicI32::new(0) }; SLOTS];

fn register(pgid: i32) {
    for s in &PGIDS {
        if s.compare_exchange(0, pgid, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            return;
        }
    }
}

fn unregister(pgid: i32) {
    for s in &PGIDS {
        let _ = s.compare_exchange(pgid, 0, Ordering::SeqCst, Ordering::SeqCst);
    }
}

extern "C" fn on_signal(sig: libc::c_int) {
    for s in &PGIDS {
        let g = s.load(Ordering::SeqCst);
        if g > 0 {
            // SAFETY: kill is async-signal-safe.
            unsafe { libc::kill(-g, libc::SIGKILL) };
        }
    }
    // SAFETY: _exit is async-signal-safe.
    unsafe { libc::_exit(128 + sig) };
}

/// Kills every registered process group when the harness is interrupted.
pub fn install_signal_handlers() {
    // SAFETY: installing a handler that only calls async-signal-safe functions.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGHUP, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
}

/// Raises RLIMIT_NOFILE (soft and, as root, hard) so that 10,000 idle connections fit;
/// children inherit it. Returns the soft limit now in force.
pub fn raise_nofile(want: u64) -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain getrlimit/setrlimit.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
        let mut n = r;
        n.rlim_cur = want.max(r.rlim_cur);
        n.rlim_max = want.max(r.rlim_max);
        if libc::setrlimit(libc::RLIMIT_NOFILE, &n) != 0 {
            n.rlim_max = r.rlim_max;
            n.rlim_cur = want.min(r.rlim_max).max(r.rlim_cur);
            libc::setrlimit(libc::RLIMIT_NOFILE, &n);
        }
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
    }
    r.rlim_cur
}

pub struct Proc {
    pub child: Child,
    pub pgid: i32,
    pub log: PathBuf,
    pub command: String,
    stopped: bool,
}

pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@%+".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

pub fn command_line(cmd: &Command) -> String {
    let mut parts: Vec<String> = cmd
        .get_envs()
        .filter_map(|(k, v)| {
            v.map(|v| {
                format!(
                    "{}={}",
                    k.to_string_lossy(),
                    shell_quote(&v.to_string_lossy())
                )
            })
        })
        .collect();
    parts.push(shell_quote(&cmd.get_program().to_string_lossy()));
    parts.extend(cmd.get_args().map(|a| shell_quote(&a.to_string_lossy())));
    parts.join(" ")
}

impl Proc {
    /// Starts `cmd` in a new process group, stdout and stderr to `log`.
    pub fn spawn(mut cmd: Command, log: &Path) -> std::io::Result<Proc> {
        let f = fs::File::create(log)?;
        let command = command_line(&cmd);
        cmd.stdin(Stdio::null())
            .stdout(f.try_clone()?)
            .stderr(f)
            .process_group(0);
        let child = cmd.spawn()?;
        let pgid = child.id() as i32;
        register(pgid);
        Ok(Proc {
            child,
            pgid,
            log: log.to_path_buf(),
            command,
            stopped: false,
        })
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Every process of the group (nginx: master and workers).
    pub fn pids(&self) -> Vec<i32> {
        let mut out = Vec::new();
        if let Ok(rd) = fs::read_dir("/proc") {
            for e in rd.flatten() {
                let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                    continue;
                };
                if let Some(st) = read_stat(pid) {
                    if st.pgrp == self.pgid {
                        out.push(pid);
                    }
                }
            }
        }
        out
    }

    /// utime+stime of the whole group, in seconds.
    pub fn cpu_seconds(&self) -> f64 {
        self.cpu_times().0
    }

    /// (user + system, system) CPU seconds used so far by the group's processes, from
    /// one pass over /proc.
    pub fn cpu_times(&self) -> (f64, f64) {
        let tck = clk_tck();
        self.pids()
            .iter()
            .filter_map(|p| read_stat(*p))
            .fold((0.0, 0.0), |(all, sys), s| {
                (
                    all + (s.utime + s.stime) as f64 / tck,
                    sys + s.stime as f64 / tck,
                )
            })
    }

    /// (VmRSS, VmHWM) summed over the group, in KiB.
    pub fn rss_kib(&self) -> (u64, u64) {
        let mut rss = 0;
        let mut hwm = 0;
        for p in self.pids() {
            if let Ok(s) = fs::read_to_string(format!("/proc/{p}/status")) {
                for l in s.lines() {
                    if let Some(v) = l.strip_prefix("VmRSS:") {
                        rss += parse_kb(v);
                    } else if let Some(v) = l.strip_prefix("VmHWM:") {
                        hwm += parse_kb(v);
                    }
                }
            }
        }
        (rss, hwm)
    }

    pub fn log_tail(&self, max: usize) -> String {
        let s = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        let from = lines.len().saturating_sub(max);
        lines[from..].join(" | ")
    }

    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        // SAFETY: signalling our own process group.
        unsafe { libc::kill(-self.pgid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() > deadline => break,
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        // whatever is left of the group (nginx workers, a stuck child)
        // SAFETY: as above.
        unsafe { libc::kill(-self.pgid, libc::SIGKILL) };
        let _ = self.child.wait();
        unregister(self.pgid);
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

pub struct Stat {
    pub pgrp: i32,
    pub utime: u64,
    pub stime: u64,
}

pub fn read_stat(pid: i32) -> Option<Stat> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // fields after the command: index = field number - 3
    Some(Stat {
        pgrp: f.get(2)?.parse().ok()?,
        utime: f.get(11)?.parse().ok()?,
        stime: f.get(12)?.parse().ok()?,
    })
}

fn parse_kb(v: &str) -> u64 {
    v.split_whitespace()
        .next()
        .and_then(|x| x.parse().ok())
        .unwrap_or(0)
}

pub fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// `n` distinct free TCP ports on 127.0.0.1.
pub fn free_ports(n: usize) -> Vec<u16> {
    let ls: Vec<TcpListener> = (0..n)
        .filter_map(|_| TcpListener::bind("127.0.0.1:0").ok())
        .collect();
    ls.iter()
        .filter_map(|l| l.local_addr().ok().map(|a| a.port()))
        .collect()
}

/// Waits until `GET /` on `addr` (plain HTTP) answers with a status line.
pub fn wait_http(addr: SocketAddr, timeout: Duration, proc: &mut Proc) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let mut last = String::from("no answer");
    while Instant::now() < deadline {
        if !proc.alive() {
            return Err(format!("exited: {}", proc.log_tail(6)));
        }
        match probe(addr) {
            Ok(status) if status.starts_with("HTTP/1.1 2") || status.starts_with("HTTP/1.0 2") => {
                return Ok(())
            }
            Ok(status) => last = format!("answered {status:?}"),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!(
        "not ready after {:?} ({last}); log: {}",
        timeout,
        proc.log_tail(6)
    ))
}

fn probe(addr: SocketAddr) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")?;
    let mut buf = [0u8; 256];
    let n = s.read(&mut buf)?;
    let text = String::from_utf8_lossy(&buf[..n]);
    Ok(text.lines().next().unwrap_or("").to_string())
}

/// Waits until something accepts TCP connections on `addr`.
pub fn wait_tcp(addr: SocketAddr, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// Output of a short command, for version strings; stderr included.
pub fn cmd_output(prog: &str, args: &[&str]) -> String {
    match Command::new(prog).args(args).stdin(Stdio::null()).output() {
        Ok(o) => {
            let mut s = String::from_utf8_lossy(&o.stdout).to_string();
            s.push_str(&String::from_utf8_lossy(&o.stderr));
            s.trim().to_string()
        }
        Err(e) => format!("unavailable: {e}"),
    }
}

/// Runs a command to completion with a deadline (in its own process group, killed past
/// the deadline). Returns (exit success, stdout, stderr).
pub fn run_bounded(mut cmd: Command, limit: Duration) -> std::io::Result<(bool, String, String)> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = cmd.spawn()?;
    let pgid = child.id() as i32;
    register(pgid);
    let mut out = child.stdout.take().expect("piped");
    let mut err = child.stderr.take().expect("piped");
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait()? {
            Some(st) => break Some(st),
            None if Instant::now() > deadline => break None,
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    // SAFETY: our own process group.
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
    let _ = child.wait();
    unregister(pgid);
    let so = t_out.join().unwrap_or_default();
    let mut se = t_err.join().unwrap_or_default();
    if status.is_none() {
        se.push_str(&format!("\n(killed after {limit:?})"));
    }
    Ok((status.map(|s| s.success()).unwrap_or(false), so, se))
}

/// CPU seconds (user + system) of this process's terminated and reaped children: read
/// before and after a `run_bounded` command, the difference is that command's CPU.
pub fn children_cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) } != 0 {
        return 0.0;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// The machine's CPU time from the first line of /proc/stat, in ticks.
#[derive(Clone, Copy, Debug, Default)]
pub struct MachineCpu {
    /// everything but idle and iowait (io_uring's waits count as iowait)
    pub busy: u64,
    pub total: u64,
}

impl MachineCpu {
    pub fn now() -> MachineCpu {
        let s = fs::read_to_string("/proc/stat").unwrap_or_default();
        let Some(line) = s.lines().find(|l| l.starts_with("cpu ")) else {
            return MachineCpu::default();
        };
        // user nice system idle iowait irq softirq steal (guest time is inside user)
        let f: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .take(8)
            .filter_map(|x| x.parse().ok())
            .collect();
        if f.len() < 8 {
            return MachineCpu::default();
        }
        let total: u64 = f.iter().sum();
        MachineCpu {
            busy: total - f[3] - f[4],
            total,
        }
    }

    /// (busy CPU seconds, idle share) from `self` to `later`.
    pub fn since(&self, later: &MachineCpu) -> (f64, f64) {
        let busy = later.busy.saturating_sub(self.busy);
        let total = later.total.saturating_sub(self.total);
        if total == 0 {
            return (0.0, 0.0);
        }
        (busy as f64 / clk_tck(), 1.0 - busy as f64 / total as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_cpu_busy_and_idle_share() {
        let a = MachineCpu {
            busy: 1000,
            total: 2000,
        };
        let b = MachineCpu {
            busy: 1900,
            total: 3000,
        };
        let (busy, idle) = a.since(&b);
        assert!((busy - 900.0 / clk_tck()).abs() < 1e-9);
        assert!((idle - 0.1).abs() < 1e-9);
        assert!(MachineCpu::now().total > 0);
    }
}
