//! The access log: one line per request in HAProxy's httplog field order (or one JSON
//! object per line), formatted into a per-core buffer and written by the core's periodic
//! flush: no lock and no syscall per request.
//!
//! httplog line:
//! `client:port [date] frontend backend/server Tq/Tw/Tc/Tr/Tt status bytes cookie term "request line"`
//! where `cookie` is the persistence cookie flags (2 characters, HAProxy's) and `term` the
//! termination state (2 characters, HAProxy's).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::net::UnixDatagram;
use std::time::SystemTime;

use config::{LogFormat, LogTarget};

/// What one request leaves in the log.
#[derive(Debug, Clone)]
pub struct Record {
    pub client: SocketAddr,
    pub start: SystemTime,
    pub frontend_idx: usize,
    pub backend: Option<usize>,
    pub server: Option<usize>,
    /// Milliseconds; -1 where the phase was not reached.
    pub tq: i64,
    pub tw: i64,
    pub tc: i64,
    pub tr: i64,
    pub tt: i64,
    pub status: u16,
    pub bytes: u64,
    pub cookie: [u8; 2],
    pub term: [u8; 2],
    pub request: String,
}

/// Where lines go.
pub enum Sink {
    Off,
    Stdout,
    File(File),
    Syslog(UnixDatagram),
}

impl Sink {
    pub fn open(target: &LogTarget) -> std::io::Result<Sink> {
        Ok(match target {
            LogTarget::Off => Sink::Off,
            LogTarget::Stdout => Sink::Stdout,
            LogTarget::File(p) => Sink::File(OpenOptions::new().create(true).append(true).open(p)?),
            LogTarget::Syslog => {
                let s = UnixDatagram::unbound()?;
                s.connect("/dev/log")?;
                s.set_nonblocking(true)?;
                Sink::Syslog(s)
            }
        })
    }

    pub fn try_clone(&self) -> std::io::Result<Sink> {
        Ok(match self {
            Sink::Off => Sink::Off,
            Sink::Stdout => Sink::Stdout,
            Sink::File(f) => Sink::File(f.try_clone()?),
            Sink::Syslog(s) => Sink::Syslog(s.try_clone()?),
        })
    }
}

/// The names a line shows.
struct Names<'a> {
    fe: &'a str,
    be: &'a str,
    sv: &'a str,
}

/// A core's log buffer.
pub struct AccessLog {
    sink: Sink,
    format: LogFormat,
    pub dontlognull: bool,
    buf: Vec<u8>,
    date_sec: u64,
    date: String,
}

const FLUSH_AT: usize = 32 * 1024;

impl AccessLog {
    pub fn new(sink: Sink, format: LogFormat, dontlognull: bool) -> Self {
        let cap = if sink_kind(&sink) == 0 {
            0
        } else {
            FLUSH_AT + 4096
        };
        AccessLog {
            sink,
            format,
            dontlognull,
            buf: Vec::with_capacity(cap),
            date_sec: u64::MAX,
            date: String::new(),
        }
    }

    pub fn enabled(&self) -> bool {
        !matches!(self.sink, Sink::Off)
    }

    /// Writes what is buffered to the old sink, then logs to `sink` (a reopened file
    /// after logrotate moved the old one, or a reloaded `[log]`).
    pub fn replace(&mut self, sink: Sink, format: LogFormat, dontlognull: bool) {
        self.flush();
        if self.buf.capacity() == 0 && sink_kind(&sink) != 0 {
            self.buf.reserve(FLUSH_AT + 4096);
        }
        self.sink = sink;
        self.format = format;
        self.dontlognull = dontlognull;
    }

    pub fn push(
        &mut self,
        r: &Record,
        frontends: &[crate::snapshot::FrontendRt],
        backends: &[crate::snapshot::BackendRt],
        servers: &[crate::snapshot::ServerRt],
    ) {
        if !self.enabled() {
            return;
        }
        let fe = frontends
            .get(r.frontend_idx)
            .map(|f| f.name.as_str())
            .unwrap_or("-");
        let be = r
            .backend
            .and_then(|b| backends.get(b))
            .map(|b| b.name.as_str())
            .unwrap_or("<NOSRV>");
        let sv = r
            .server
            .and_then(|s| servers.get(s))
            .map(|s| s.name.as_str())
            .unwrap_or("<NOSRV>");
        let be = if r.backend.is_none() { fe } else { be };
        let since = r
            .start
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        if since.as_secs() != self.date_sec {
            self.date_sec = since.as_secs();
            self.date = format_date(self.date_sec);
        }
        let names = Names { fe, be, sv };
        match self.format {
            LogFormat::Httplog => self.httplog(r, &names, since.subsec_millis()),
            LogFormat::Json => self.json(r, &names, since.subsec_millis()),
        }
        if self.buf.len() >= FLUSH_AT {
            self.flush();
        }
    }

    fn httplog(&mut self, r: &Record, n: &Names<'_>, ms: u32) {
        let (fe, be, sv) = (n.fe, n.be, n.sv);
        let cookie = std::str::from_utf8(&r.cookie).unwrap_or("--");
        let term = std::str::from_utf8(&r.term).unwrap_or("--");
        {
            let _ = writeln!(
                self.buf,
                "{} [{}.{:03}] {} {}/{} {}/{}/{}/{}/{} {} {} {} {} \"{}\"",
                r.client,
                self.date,
                ms,
                fe,
                be,
                sv,
                r.tq,
                r.tw,
                r.tc,
                r.tr,
                r.tt,
                r.status,
                r.bytes,
                cookie,
                term,
                escape_line(&r.request)
            );
        }
    }

    fn json(&mut self, r: &Record, n: &Names<'_>, ms: u32) {
        let (fe, be, sv) = (n.fe, n.be, n.sv);
        let cookie = std::str::from_utf8(&r.cookie).unwrap_or("--");
        let term = std::str::from_utf8(&r.term).unwrap_or("--");
        {
            let v = serde_json::json!({
                "client": r.client.to_string(),
                "time": format!("{}.{:03}", self.date, ms),
                "frontend": fe,
                "backend": be,
                "server": sv,
                "tq": r.tq, "tw": r.tw, "tc": r.tc, "tr": r.tr, "tt": r.tt,
                "status": r.status,
                "bytes": r.bytes,
                "cookie": cookie,
                "termination": term,
                "request": r.request,
            });
            let _ = serde_json::to_writer(&mut self.buf, &v);
            self.buf.push(b'\n');
        }
    }

    /// Writes what is buffered: in pieces of at most 4 KiB ending at a line, so that lines
    /// from several cores never interleave on a pipe.
    pub fn flush(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let buf = std::mem::take(&mut self.buf);
        match &mut self.sink {
            Sink::Off => {}
            Sink::Stdout => {
                let out = std::io::stdout();
                let fd = std::os::fd::AsRawFd::as_raw_fd(&out);
                write_lines(fd, &buf);
            }
            Sink::File(f) => {
                let fd = std::os::fd::AsRawFd::as_raw_fd(f);
                write_lines(fd, &buf);
            }
            Sink::Syslog(s) => {
                for line in buf.split(|&c| c == b'\n').filter(|l| !l.is_empty()) {
                    let mut msg = Vec::with_capacity(line.len() + 16);
                    msg.extend_from_slice(b"<134>engine: ");
                    msg.extend_from_slice(line);
                    let _ = s.send(&msg);
                }
            }
        }
        self.buf = buf;
        self.buf.clear();
    }
}

fn sink_kind(s: &Sink) -> u8 {
    match s {
        Sink::Off => 0,
        _ => 1,
    }
}

fn write_lines(fd: i32, mut buf: &[u8]) {
    while !buf.is_empty() {
        let mut end = buf.len().min(4096);
        if end < buf.len() {
            if let Some(p) = buf[..end].iter().rposition(|&c| c == b'\n') {
                end = p + 1;
            }
        }
        let mut piece = &buf[..end];
        while !piece.is_empty() {
            // SAFETY: fd is open for the life of the sink; piece is valid memory.
            let n = unsafe { libc::write(fd, piece.as_ptr().cast(), piece.len()) };
            if n <= 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return;
            }
            piece = &piece[n as usize..];
        }
        buf = &buf[end..];
    }
}

fn escape_line(s: &str) -> String {
    if s.bytes()
        .all(|c| c != b'"' && c != b'\\' && (0x20..0x7f).contains(&c))
    {
        return s.to_string();
    }
    let mut o = String::new();
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                o.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => o.push(c),
        }
    }
    o
}

/// `01/Dec/2026:09:30:00` in UTC.
pub fn format_date(secs: u64) -> String {
    let days = secs / 86400;
    let rem = secs % 86400;
    let (y, m, d) = civil_from_days(days as i64);
    const MON: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{:02}/{}/{}:{:02}:{:02}:{:02}",
        d,
        MON[(m - 1) as usize],
        y,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Howard Hinnant's days-to-civil.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719468;
    let era = if z >= 0 { z } else { z - 146096 } / 146097;
    let doe = (z - era * 146097) as u64;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe as i64 + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(format_date(0), "01/Jan/1970:00:00:00");
        assert_eq!(format_date(1_795_944_600), "29/Nov/2026:09:30:00");
    }

    #[test]
    fn escapes() {
        assert_eq!(escape_line("GET / HTTP/1.1"), "GET / HTTP/1.1");
        assert_eq!(escape_line("a\"b"), "a\\\"b");
    }
}
