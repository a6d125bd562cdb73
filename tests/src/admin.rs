//! A client of the admin socket: one command per line, each answer read up to the empty
//! line that ends it. Also [`show_line`]: one server's `show servers` line from an
//! in-process engine.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// One connection to the admin socket.
pub struct Admin {
    pub w: UnixStream,
    pub r: BufReader<UnixStream>,
}

impl Admin {
    pub fn connect(path: &Path) -> Admin {
        let s = UnixStream::connect(path)
            .unwrap_or_else(|e| panic!("connect to {}: {e}", path.display()));
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Admin {
            w: s.try_clone().unwrap(),
            r: BufReader::new(s),
        }
    }

    /// `show binds`: every frontend's bound address (port 0 resolved), in order.
    pub fn binds(&mut self) -> Vec<(String, std::net::SocketAddr)> {
        self.ask("show binds")
            .iter()
            .filter_map(|l| {
                let (name, addr) = l.strip_prefix("frontend/")?.split_once(' ')?;
                Some((name.to_string(), addr.parse().ok()?))
            })
            .collect()
    }

    /// Sends one line; returns the answer's lines up to (not including) the empty line.
    pub fn ask(&mut self, line: &str) -> Vec<String> {
        self.w
            .write_all(format!("{line}\n").as_bytes())
            .expect("write to the admin socket");
        self.answer(line)
    }

    /// Reads the next answer (to a line already written, e.g. pipelined).
    pub fn ask_more(&mut self) -> Vec<String> {
        self.answer("(pipelined)")
    }

    fn answer(&mut self, line: &str) -> Vec<String> {
        let mut out = Vec::new();
        loop {
            let mut l = String::new();
            let n = self
                .r
                .read_line(&mut l)
                .unwrap_or_else(|e| panic!("reading the answer to {line:?}: {e}; so far {out:?}"));
            assert!(
                n > 0,
                "admin socket closed before the empty line ending the answer to {line:?}: {out:?}"
            );
            assert!(
                l.ends_with('\n'),
                "answer to {line:?} cut short: {out:?} {l:?}"
            );
            let l = l.trim_end_matches('\n').trim_end_matches('\r');
            if l.is_empty() {
                return out;
            }
            out.push(l.to_string());
        }
    }

    /// A command that must succeed: its answer does not begin with `error:`.
    pub fn ok(&mut self, line: &str) -> Vec<String> {
        let a = self.ask(line);
        assert!(
            !a.first().is_some_and(|l| l.starts_with("error:")),
            "{line:?} answered {a:?}"
        );
        a
    }

    /// `show servers`: "backend/server" -> the other six fields.
    pub fn servers(&mut self) -> HashMap<String, ServerLine> {
        let a = self.ask("show servers");
        assert!(
            a.first().is_some_and(|l| l.starts_with("# ")),
            "show servers begins with a header line `# `: {a:?}"
        );
        a[1..]
            .iter()
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                assert_eq!(
                    f.len(),
                    8,
                    "`backend/server address state weight active queued total vetoed`: {l:?}"
                );
                let n = |i: usize| -> u64 {
                    f[i].parse()
                        .unwrap_or_else(|_| panic!("field {i} of {l:?} is a number"))
                };
                (
                    f[0].to_string(),
                    ServerLine {
                        address: f[1].to_string(),
                        state: f[2].to_string(),
                        weight: n(3),
                        active: n(4),
                        queued: n(5),
                        total: n(6),
                    },
                )
            })
            .collect()
    }

    pub fn state(&mut self, name: &str) -> (String, u64) {
        let s = self.servers();
        let l = s
            .get(name)
            .unwrap_or_else(|| panic!("{name} in show servers: {s:?}"));
        (l.state.clone(), l.weight)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerLine {
    pub address: String,
    pub state: String,
    pub weight: u64,
    pub active: u64,
    pub queued: u64,
    pub total: u64,
}

/// The `show servers` line of `backend/server`, split in columns:
/// `backend/server address state weight active queued total`.
pub fn show_line(r: &crate::Running, bs: &str) -> Vec<String> {
    let ans = r.admin("show servers");
    assert!(
        ans.starts_with("# backend/server address state weight active queued total"),
        "show servers header:\n{ans}"
    );
    assert!(ans.ends_with("\n\n"), "the answer ends with an empty line");
    ans.lines()
        .find(|l| l.split_whitespace().next() == Some(bs))
        .unwrap_or_else(|| panic!("no line for {bs} in show servers:\n{ans}"))
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// Column `i` of a [`show_line`] as a number.
pub fn col(line: &[String], i: usize) -> u64 {
    line[i]
        .parse()
        .unwrap_or_else(|_| panic!("column {i} of {line:?}"))
}
