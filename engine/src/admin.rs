//! The admin socket: a Unix stream socket (mode 0660), one command per line, each answer
//! ending with an empty line. Commands go to the health-check thread, which owns the
//! servers' admin states and publishes the result to every core at once.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crossbeam_channel::Sender;

use crate::control::ControlMsg;

/// Sends one command line to the health-check thread and waits for its answer.
pub fn ask(tx: &Sender<ControlMsg>, line: &str) -> String {
    let (rtx, rrx) = crossbeam_channel::bounded(1);
    if tx.send(ControlMsg::Admin(line.to_string(), rtx)).is_err() {
        return "error: the engine is stopping\n\n".into();
    }
    rrx.recv_timeout(Duration::from_secs(5))
        .unwrap_or_else(|_| "error: no answer\n\n".into())
}

/// The running socket; removed when dropped.
pub struct AdminSocket {
    path: PathBuf,
}

impl Drop for AdminSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Binds the socket (replacing a stale one) and serves it from a thread of its own.
pub fn start(path: &Path, tx: Sender<ControlMsg>) -> std::io::Result<AdminSocket> {
    if path.exists() {
        // A live engine answers on it; a stale file from a crash does not.
        if UnixStream::connect(path).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("{} is in use by another engine", path.display()),
            ));
        }
        let _ = std::fs::remove_file(path);
    }
    let l = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    std::thread::Builder::new()
        .name("engine-admin".into())
        .spawn(move || {
            for conn in l.incoming() {
                let Ok(conn) = conn else { continue };
                let tx = tx.clone();
                let _ = std::thread::Builder::new()
                    .name("engine-admin-conn".into())
                    .spawn(move || serve(conn, tx));
            }
        })?;
    Ok(AdminSocket {
        path: path.to_path_buf(),
    })
}

fn serve(conn: UnixStream, tx: Sender<ControlMsg>) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(300)));
    let Ok(mut w) = conn.try_clone() else { return };
    let r = BufReader::new(conn);
    for line in r.lines() {
        let Ok(line) = line else { return };
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if line == "quit" || line == "exit" {
            return;
        }
        let ans = ask(&tx, line);
        if w.write_all(ans.as_bytes()).is_err() {
            return;
        }
    }
}
