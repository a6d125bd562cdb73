//! The admin socket: a Unix stream socket (mode 0660), one command per line, each answer
//! ending with an empty line. It is served as tasks of the health-check thread's runtime
//! (no thread per connection), which owns the servers' admin states and publishes each
//! change to every core at once.
//!
//! Every line gets an answer, pipelined lines in order. Lines are bounded
//! ([`MAX_LINE`]): a longer one answers `error: line too long` and its bytes are never
//! held; a line that is not UTF-8 answers `error:`. Connections are bounded too
//! ([`MAX_CONNS`] at once, each closed after [`IDLE`] without a command).

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use std::os::fd::{AsRawFd, OwnedFd};

use monoio::io::{AsyncReadRent, AsyncWriteRentExt};

use crate::shared::handover::{send_handover, Manifest, DONE, HELLO};

/// The longest command line, newline excluded.
pub const MAX_LINE: usize = 4096;
/// Admin connections served at once; past it a new one is closed at once.
pub const MAX_CONNS: usize = 64;
/// A connection with no command for this long is closed.
pub const IDLE: Duration = Duration::from_secs(300);

/// The bound socket; its file is removed when this is dropped, unless another process
/// bound that path since (a takeover).
pub struct AdminSocket {
    path: PathBuf,
    /// The file's (device, inode) as bound.
    id: Option<(u64, u64)>,
}

fn file_id(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino()))
}

impl Drop for AdminSocket {
    fn drop(&mut self) {
        if self.id.is_some() && file_id(&self.path) == self.id {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Binds the socket (replacing a stale one, refusing one a live engine answers on). With
/// `replace` (a takeover), the running engine's socket is replaced: bound beside it, then
/// renamed over it, so that the path always answers.
pub fn bind(path: &Path, replace: bool) -> std::io::Result<(AdminSocket, UnixListener)> {
    if replace {
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(format!(".new-{}", std::process::id()));
        let tmp = PathBuf::from(tmp);
        let _ = std::fs::remove_file(&tmp);
        let l = UnixListener::bind(&tmp)?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o660))?;
        if let Err(e) = std::fs::rename(&tmp, path) {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        l.set_nonblocking(true)?;
        let id = file_id(path);
        return Ok((
            AdminSocket {
                path: path.to_path_buf(),
                id,
            },
            l,
        ));
    }
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
    l.set_nonblocking(true)?;
    Ok((
        AdminSocket {
            path: path.to_path_buf(),
            id: file_id(path),
        },
        l,
    ))
}

/// Answers one command line (the health-check thread's state).
pub type Answer = Rc<dyn Fn(&str) -> String>;

/// What a takeover hands over: the manifest and the descriptors it describes.
pub type Handover = Rc<dyn Fn() -> Result<(Manifest, Vec<OwnedFd>), String>>;

/// Accepts admin connections until the runtime ends (a task of the health-check thread).
pub async fn serve(l: UnixListener, answer: Answer, handover: Option<Handover>) {
    let l = match monoio::net::UnixListener::from_std(l) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("admin socket refused by the runtime: {e}");
            return;
        }
    };
    let open = Rc::new(std::cell::Cell::new(0usize));
    loop {
        let Ok((conn, _)) = l.accept().await else {
            monoio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        if open.get() >= MAX_CONNS {
            drop(conn);
            continue;
        }
        open.set(open.get() + 1);
        let (open, answer, handover) = (open.clone(), answer.clone(), handover.clone());
        monoio::spawn(async move {
            connection(conn, &*answer, handover).await;
            open.set(open.get() - 1);
        });
    }
}

/// What one line asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Line<'a> {
    Command(&'a str),
    Quit,
    Empty,
    NotUtf8,
    TooLong,
}

/// Splits what arrived into lines, bounded: holds at most [`MAX_LINE`] bytes of a line
/// and drops the rest of one that is longer (sans-io).
#[derive(Debug, Default)]
pub struct Lines {
    buf: Vec<u8>,
    /// Discarding the rest of a line past the limit.
    overlong: bool,
}

impl Lines {
    /// Feeds bytes; calls `each` for every complete line, in order.
    pub fn feed(&mut self, mut data: &[u8], mut each: impl FnMut(Line<'_>)) {
        while !data.is_empty() {
            let nl = data.iter().position(|&c| c == b'\n');
            let (part, rest) = match nl {
                Some(p) => (&data[..p], Some(&data[p + 1..])),
                None => (data, None),
            };
            if !self.overlong {
                if self.buf.len() + part.len() > MAX_LINE {
                    self.overlong = true;
                    self.buf = Vec::new();
                } else {
                    self.buf.extend_from_slice(part);
                }
            }
            let Some(rest) = rest else { return };
            data = rest;
            if std::mem::take(&mut self.overlong) {
                each(Line::TooLong);
                continue;
            }
            let line = std::mem::take(&mut self.buf);
            each(classify(&line));
        }
    }
}

fn classify(line: &[u8]) -> Line<'_> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    match std::str::from_utf8(line) {
        Err(_) => Line::NotUtf8,
        Ok(s) => match s.trim() {
            "" => Line::Empty,
            "quit" | "exit" => Line::Quit,
            c => Line::Command(c),
        },
    }
}

/// The answer to one line; `None` to close the connection.
pub fn respond(line: Line<'_>, answer: &dyn Fn(&str) -> String) -> Option<String> {
    Some(match line {
        Line::Command(c) => answer(c),
        Line::Quit => return None,
        Line::Empty => "error: empty line; try: help\n\n".into(),
        Line::NotUtf8 => "error: the command is not UTF-8 text; try: help\n\n".into(),
        Line::TooLong => format!("error: line too long (at most {MAX_LINE} bytes)\n\n"),
    })
}

async fn connection(
    conn: monoio::net::UnixStream,
    answer: &dyn Fn(&str) -> String,
    handover: Option<Handover>,
) {
    let mut conn = conn;
    let mut lines = Lines::default();
    let mut buf = Vec::with_capacity(4096);
    // This connection received the sockets (a takeover): it may say DONE.
    let mut handed = false;
    loop {
        let (r, b) = match monoio::time::timeout(IDLE, conn.read(buf)).await {
            Ok(x) => x,
            Err(_) => return,
        };
        buf = b;
        match r {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let mut out = String::new();
        let (mut quit, mut hello) = (false, false);
        lines.feed(&buf, |l| {
            if quit || hello {
                return;
            }
            match l {
                Line::Command(HELLO) => hello = true,
                Line::Command(DONE) if !handed => {
                    out.push_str("error: no takeover on this connection\n\n");
                }
                l => match respond(l, answer) {
                    Some(a) => out.push_str(&a),
                    None => quit = true,
                },
            }
        });
        buf.clear();
        if !out.is_empty() {
            let w = conn.write_all(out.into_bytes());
            match monoio::time::timeout(Duration::from_secs(10), w).await {
                Ok((Ok(_), _)) => {}
                _ => return,
            }
        }
        if hello {
            match hand_over(&conn, handover.as_ref()) {
                Ok(()) => handed = true,
                Err(e) => {
                    let w = conn.write_all(format!("error: {e}\n\n").into_bytes());
                    let _ = monoio::time::timeout(Duration::from_secs(10), w).await;
                    return;
                }
            }
        }
        if quit {
            return;
        }
    }
}

/// Sends the listening sockets and the manifest to the new process on `conn`.
fn hand_over(conn: &monoio::net::UnixStream, handover: Option<&Handover>) -> Result<(), String> {
    let Some(h) = handover else {
        return Err("this engine cannot hand over its sockets".into());
    };
    let (manifest, fds) = h()?;
    tracing::info!(
        sockets = fds.len(),
        "takeover: handing the listening sockets to a new process"
    );
    send_handover(conn.as_raw_fd(), &manifest, &fds)
        .map_err(|e| format!("cannot send the sockets: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_of(chunks: &[&[u8]]) -> Vec<String> {
        let mut l = Lines::default();
        let mut out = Vec::new();
        for c in chunks {
            l.feed(c, |x| out.push(format!("{x:?}")));
        }
        out
    }

    #[test]
    fn pipelined_lines_in_order_across_reads() {
        assert_eq!(
            lines_of(&[b"show info\nshow ser", b"vers\r\n\nquit\n"]),
            [
                "Command(\"show info\")",
                "Command(\"show servers\")",
                "Empty",
                "Quit"
            ]
        );
    }

    #[test]
    fn long_and_binary_lines_are_answered_and_never_held() {
        let mut l = Lines::default();
        let mut out = Vec::new();
        let big = vec![b'x'; 1 << 20];
        for _ in 0..64 {
            l.feed(&big, |x| out.push(format!("{x:?}")));
            assert!(l.buf.capacity() <= MAX_LINE, "never holds a long line");
        }
        l.feed(b"\n\xff\xfe\nshow info\n", |x| out.push(format!("{x:?}")));
        assert_eq!(out, ["TooLong", "NotUtf8", "Command(\"show info\")"]);
        let exact = vec![b'y'; MAX_LINE];
        let mut got = Vec::new();
        l.feed(&exact, |_| {});
        l.feed(b"\n", |x| got.push(matches!(x, Line::Command(_))));
        assert_eq!(got, [true], "a line of exactly the limit is a command");
    }
}
