//! `engine status -s ADMIN_SOCKET` (keepalived's `vrrp_script`: one line, exit 0 when
//! the engine runs with a server UP in every backend) and `engine check --host`.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

/// What `show servers` says, as `status` judges it.
#[derive(Debug, PartialEq, Eq)]
pub struct Verdict {
    pub ok: bool,
    pub line: String,
}

/// Judges `show servers` output: every backend needs a server UP (DRAIN takes no new
/// students, so it does not count).
pub fn judge(show_servers: &str) -> Verdict {
    // backend -> (servers, states not UP)
    let mut backends: Vec<(String, usize, Vec<String>)> = Vec::new();
    let mut up: Vec<String> = Vec::new();
    for l in show_servers
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let mut f = l.split_whitespace();
        let (Some(name), Some(_addr), Some(state)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        let (b, s) = name.split_once('/').unwrap_or((name, ""));
        let i = match backends.iter().position(|x| x.0 == b) {
            Some(i) => i,
            None => {
                backends.push((b.to_string(), 0, Vec::new()));
                backends.len() - 1
            }
        };
        backends[i].1 += 1;
        if state == "UP" {
            up.push(b.to_string());
        } else {
            backends[i].2.push(format!("{s} {state}"));
        }
    }
    let down: Vec<String> = backends
        .iter()
        .filter(|(b, _, _)| !up.contains(b))
        .map(|(b, _, why)| format!("{b} ({})", why.join(", ")))
        .collect();
    if backends.is_empty() {
        return Verdict {
            ok: false,
            line: "engine running, but it has no backend".into(),
        };
    }
    if down.is_empty() {
        Verdict {
            ok: true,
            line: format!(
                "engine running: every backend has a server UP ({} backend{})",
                backends.len(),
                if backends.len() == 1 { "" } else { "s" }
            ),
        }
    } else {
        Verdict {
            ok: false,
            line: format!("engine running, but no server UP in: {}", down.join("; ")),
        }
    }
}

/// Asks the engine on `socket` for its servers.
fn show_servers(socket: &Path) -> Result<String, String> {
    let s = UnixStream::connect(socket).map_err(|e| {
        format!(
            "engine not running: cannot connect to {}: {e}",
            socket.display()
        )
    })?;
    let t = Some(Duration::from_secs(2));
    let _ = s.set_read_timeout(t);
    let _ = s.set_write_timeout(t);
    (&s).write_all(b"show servers\n")
        .map_err(|e| format!("engine not answering on {}: {e}", socket.display()))?;
    let mut out = String::new();
    let mut r = BufReader::new(&s);
    loop {
        let mut line = String::new();
        match r.read_line(&mut line) {
            Ok(0) => break,
            Ok(_) if line == "\n" => return Ok(out),
            Ok(_) => out.push_str(&line),
            Err(e) => return Err(format!("engine not answering on {}: {e}", socket.display())),
        }
    }
    Err(format!(
        "engine on {} closed the connection",
        socket.display()
    ))
}

pub fn status(socket: &Path) -> ExitCode {
    match show_servers(socket) {
        Ok(out) if !out.starts_with("# ") => {
            println!(
                "{} did not answer as an engine: {}",
                socket.display(),
                out.trim()
            );
            ExitCode::from(1)
        }
        Ok(out) => {
            let v = judge(&out);
            println!("{}", v.line);
            if v.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            println!("{e}");
            ExitCode::from(1)
        }
    }
}

/// `engine check --host`: the host against the (valid) file; 1 when a limit cannot
/// hold it.
pub fn check_host(path: &Path, cores: usize) -> ExitCode {
    let cfg = match config::load_file(path) {
        Ok(l) => l.config,
        Err(_) => return ExitCode::from(1),
    };
    let host = crate::runtime::preflight::Host::read();
    let findings = crate::runtime::preflight::check(&host, cfg.global.maxconn as u64, cores);
    for f in &findings {
        println!("{f}");
    }
    let failed = findings.iter().filter(|f| !f.ok).count();
    if failed == 0 {
        println!("{}: this host holds the configuration", path.display());
        ExitCode::SUCCESS
    } else {
        println!(
            "{}: this host cannot hold the configuration ({failed} failed)",
            path.display()
        );
        ExitCode::from(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str = "# backend/server address state weight active queued total vetoed\n";

    #[test]
    fn every_backend_with_a_server_up_is_healthy() {
        let v = judge(&format!(
            "{HEAD}moodle/m1 127.0.0.1:1 UP 1 0 0 0 0\nmoodle/m2 127.0.0.1:2 DOWN 1 0 0 0 0\nstatic/s1 127.0.0.1:3 UP 1 0 0 0 0\n"
        ));
        assert!(v.ok, "{v:?}");
        assert!(v.line.contains("2 backends"), "{v:?}");
    }

    #[test]
    fn a_backend_with_nothing_up_says_which_and_why() {
        let v = judge(&format!(
            "{HEAD}moodle/m1 127.0.0.1:1 MAINT 1 0 0 0 0\nmoodle/m2 127.0.0.1:2 DRAIN 1 0 0 0 0\nstatic/s1 127.0.0.1:3 UP 1 0 0 0 0\n"
        ));
        assert!(!v.ok);
        assert_eq!(
            v.line,
            "engine running, but no server UP in: moodle (m1 MAINT, m2 DRAIN)"
        );
    }
}
