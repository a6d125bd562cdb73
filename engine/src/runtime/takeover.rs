//! Binary takeover, the new process's side: `engine --takeover ADMIN_SOCKET -c FILE`.
//!
//! [`receive`] asks the running engine on its admin socket for its listening sockets
//! (see [`crate::shared::handover`] for the exchange). The new engine starts on them
//! (`start_with`): every core accepts on the sockets it was dealt, cores past their
//! number bind more in the same SO_REUSEPORT group, binds the old engine did not have
//! are bound afresh, and its health-check thread begins with the servers' handed-over
//! states (health, MAINT and DRAIN, run-time weights). It renames its own admin socket
//! over the old one's path, then [`Inherited::finish`] tells the old engine, which stops
//! accepting and drains. No connection is refused on the way: the listening sockets are
//! the same ones, open all along, and both processes accept on them for a moment.
//!
//! Anything wrong before the end (a path that is not an engine's admin socket, a file
//! that does not load, a bind refused) stops the new process with an error and leaves
//! the running engine as it was.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::balance::ServerState;
use crate::shared::handover::{recv_byte_with_fds, ListenerInfo, Manifest, ServerHandover};
use crate::shared::handover::{DONE, HELLO};
use crate::snapshot::{Snapshot, States};

/// Why a takeover could not begin (the running engine is untouched).
#[derive(Debug, thiserror::Error)]
pub enum TakeoverError {
    #[error(
        "cannot reach an engine on {path}: {err} (is it the running engine's global.admin_socket?)"
    )]
    Connect { path: PathBuf, err: std::io::Error },
    #[error("{path} did not answer as an engine's admin socket does ({what}): is it the running engine's global.admin_socket?")]
    NotEngine { path: PathBuf, what: String },
    #[error("the engine on {path} refused to hand over its sockets: {why}")]
    Refused { path: PathBuf, why: String },
    #[error("the engine on {path} stopped answering before the takeover ended: {err}")]
    Lost { path: PathBuf, err: std::io::Error },
}

/// What the running engine handed over.
pub struct Inherited {
    pub from: PathBuf,
    pub pid: u32,
    listeners: Vec<(ListenerInfo, Option<std::net::TcpListener>)>,
    stats: Option<(SocketAddr, std::net::TcpListener)>,
    pub servers: Vec<ServerHandover>,
    conn: UnixStream,
}

/// How long the running engine has to answer each step.
const ANSWER: Duration = Duration::from_secs(5);

/// Asks the engine on `path` for its sockets and states.
pub fn receive(path: &Path) -> Result<Inherited, TakeoverError> {
    let from = path.to_path_buf();
    let conn = UnixStream::connect(path).map_err(|err| TakeoverError::Connect {
        path: from.clone(),
        err,
    })?;
    let lost = |err| TakeoverError::Lost {
        path: from.clone(),
        err,
    };
    conn.set_read_timeout(Some(ANSWER)).map_err(lost)?;
    (&conn)
        .write_all(format!("{HELLO}\n").as_bytes())
        .map_err(|err| TakeoverError::Connect {
            path: from.clone(),
            err,
        })?;
    let not_engine = |what: String| TakeoverError::NotEngine {
        path: from.clone(),
        what,
    };
    let mut fds: Vec<OwnedFd> = Vec::new();
    let first = loop {
        match recv_byte_with_fds(conn.as_raw_fd()) {
            Ok(Some((b'F', got))) => fds.extend(got),
            Ok(Some((b, _))) => break b,
            Ok(None) => return Err(not_engine("it closed the connection".into())),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                return Err(not_engine(format!(
                    "no answer within {}s",
                    ANSWER.as_secs()
                )))
            }
            Err(e) => return Err(not_engine(e.to_string())),
        }
    };
    let mut r = BufReader::new(&conn);
    let mut line = String::new();
    r.read_line(&mut line)
        .map_err(|e| not_engine(e.to_string()))?;
    let line = format!("{}{}", first as char, line.trim_end());
    if let Some(why) = line.strip_prefix("error: ") {
        // An engine, but one that cannot hand over (it may be an older one).
        return Err(TakeoverError::Refused {
            path: from.clone(),
            why: why.to_string(),
        });
    }
    let manifest = read_manifest(&line, &mut r, fds.len()).map_err(not_engine)?;
    drop(r);
    Ok(Inherited::new(from, manifest, fds, conn))
}

/// The `TAKEOVER <fds> <bytes>` line and the JSON after it.
fn read_manifest(line: &str, r: &mut impl Read, fds: usize) -> Result<Manifest, String> {
    let mut parts = line.split_whitespace();
    let (Some("TAKEOVER"), Some(n), Some(len)) = (parts.next(), parts.next(), parts.next()) else {
        let shown: String = line.chars().take(80).collect();
        return Err(format!("it said {shown:?}"));
    };
    let n: usize = n.parse().map_err(|_| format!("bad count {n:?}"))?;
    let len: usize = len.parse().map_err(|_| format!("bad length {len:?}"))?;
    if n != fds || len > 16 << 20 {
        return Err(format!("{fds} sockets arrived where {n} were announced"));
    }
    let mut json = vec![0; len];
    r.read_exact(&mut json).map_err(|e| e.to_string())?;
    let m: Manifest = serde_json::from_slice(&json).map_err(|e| e.to_string())?;
    if m.version != 1 || m.listeners.len() + usize::from(m.stats.is_some()) != n {
        return Err("its manifest does not match the sockets".into());
    }
    Ok(m)
}

impl Inherited {
    fn new(from: PathBuf, m: Manifest, fds: Vec<OwnedFd>, conn: UnixStream) -> Inherited {
        let mut fds = fds.into_iter();
        let listeners = m
            .listeners
            .into_iter()
            .map(|info| (info, fds.next().map(std::net::TcpListener::from)))
            .collect();
        let stats = m
            .stats
            .and_then(|a| Some((a, std::net::TcpListener::from(fds.next()?))));
        Inherited {
            from,
            pid: m.pid,
            listeners,
            stats,
            servers: m.servers,
            conn,
        }
    }

    /// The handed-over listeners of the configuration's address `a`.
    pub fn take(&mut self, a: SocketAddr) -> Vec<std::net::TcpListener> {
        self.listeners
            .iter_mut()
            .filter(|(info, _)| info.configured == a || info.real == a)
            .filter_map(|(_, l)| l.take())
            .collect()
    }

    /// The stats endpoint's listener, if it was on `a`.
    pub fn take_stats(&mut self, a: SocketAddr) -> Option<std::net::TcpListener> {
        match &self.stats {
            Some((addr, _)) if *addr == a || (a.port() == 0 && a.ip() == addr.ip()) => {
                self.stats.take().map(|(_, l)| l)
            }
            _ => None,
        }
    }

    /// Addresses the old engine listened on that this configuration does not keep (they
    /// close when the old engine stops).
    pub fn left(&self) -> Vec<SocketAddr> {
        let mut v: Vec<SocketAddr> = self
            .listeners
            .iter()
            .filter(|(_, l)| l.is_some())
            .map(|(i, _)| i.real)
            .collect();
        v.dedup();
        v
    }

    /// Tells the old engine that this one accepts: it stops accepting and drains.
    pub fn finish(self) -> Result<(), TakeoverError> {
        let lost = |err| TakeoverError::Lost {
            path: self.from.clone(),
            err,
        };
        (&self.conn)
            .write_all(format!("{DONE}\n").as_bytes())
            .map_err(lost)?;
        let mut r = BufReader::new(&self.conn);
        let mut line = String::new();
        r.read_line(&mut line).map_err(lost)?;
        if line.trim() != "ok" {
            return Err(TakeoverError::Refused {
                path: self.from.clone(),
                why: line.trim().to_string(),
            });
        }
        Ok(())
    }
}

/// The server states a new engine starts with: those handed over, by backend/name and
/// address (a server in MAINT is never offered a request in between).
pub fn initial_states(snap: &Snapshot, handed: &[ServerHandover]) -> States {
    let mut s = States::initial(snap);
    for h in handed {
        let Some(id) = snap.find_server(&h.key) else {
            continue;
        };
        if snap.server(id).addr != h.addr {
            continue;
        }
        let st = &mut s.servers[id.index()];
        st.state = match (h.admin.as_str(), h.up) {
            ("maint", _) => ServerState::Maint,
            (_, false) => ServerState::Down,
            ("drain", true) => ServerState::Drain,
            _ => ServerState::Up,
        };
        if let Some(w) = h.weight {
            st.weight = w;
        }
    }
    s
}
