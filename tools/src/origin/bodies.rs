//! The transfer endpoints: `/echo` (the head as received and the decoded body), `/upload`
//! (length and SHA-256 of the body), `/download` (the test pattern with Content-Length,
//! chunked or close-delimited framing, cut at half for the mid-body faults), `/slow`,
//! `/status`, and `/ws` (101, then raw bytes echoed back).

use super::listener::Session;
use super::request::{query_param, Sink};
use super::response::{push_hex, push_num, Src, TEXT};
use super::E;
use crate::pattern_into;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::time::Duration;

use sha2::{Digest, Sha256};

/// Largest body `/echo` collects.
const MAX_ECHO: usize = 64 << 20;
const MAX_SLOW_MS: u64 = 600_000;
const DOWNLOAD_BLOCK: usize = 64 * 1024;
/// Chunk sizes of chunked downloads, cycled.
const CHUNK_SIZES: [usize; 8] = [16384, 16384, 8191, 1, 16384, 32768, 333, 16385];

/// The framing of a `/download` body.
#[derive(PartialEq)]
enum Mode {
    Cl,
    Chunked,
    Close,
}

impl Session<'_> {
    /// Any method on `/echo...`: the head as received, then the decoded body.
    pub(super) fn echo(&mut self, mid: bool) -> Result<bool, E> {
        self.read_body(Sink::Collect(MAX_ECHO))?;
        self.respond(200, "text/plain", &[], Src::Body, mid)
    }

    /// `POST`/`PUT /upload`: `len=<n> sha256=<hex>` of the body.
    pub(super) fn upload(&mut self, mid: bool) -> Result<bool, E> {
        self.hasher = Sha256::new();
        self.hashed = 0;
        self.read_body(Sink::Hash)?;
        let digest = std::mem::take(&mut self.hasher).finalize();
        self.tbuf.clear();
        self.tbuf.extend_from_slice(b"len=");
        push_num(&mut self.tbuf, self.hashed);
        self.tbuf.extend_from_slice(b" sha256=");
        self.tbuf.extend_from_slice(hex::encode(digest).as_bytes());
        self.respond(200, TEXT, &[], Src::Text, mid)
    }

    /// `GET /slow?ms=N`: waits N ms (cut short by stop), then `slow N`.
    pub(super) fn slow(&mut self, mid: bool) -> Result<bool, E> {
        self.read_body(Sink::Discard)?;
        let ms: u64 = query_param(&self.req.query, "ms")
            .and_then(|v| v.parse().ok())
            .filter(|&ms| ms <= MAX_SLOW_MS)
            .ok_or(E::Reject(400, "bad ms"))?;
        self.inner.sleep(Duration::from_millis(ms));
        self.tbuf.clear();
        self.tbuf.extend_from_slice(b"slow ");
        push_num(&mut self.tbuf, ms);
        self.respond(200, TEXT, &[], Src::Text, mid)
    }

    /// `GET /status?code=N`: that status, with a short body unless 204 or 304.
    pub(super) fn status(&mut self, mid: bool) -> Result<bool, E> {
        self.read_body(Sink::Discard)?;
        let code: u16 = query_param(&self.req.query, "code")
            .and_then(|v| v.parse().ok())
            .filter(|c| (200..=599).contains(c))
            .ok_or(E::Reject(400, "bad code"))?;
        self.tbuf.clear();
        if code != 204 && code != 304 {
            self.tbuf.extend_from_slice(b"status ");
            push_num(&mut self.tbuf, u64::from(code));
            self.tbuf.push(b'\n');
        }
        self.respond(code, TEXT, &[], Src::Text, mid)
    }

    /// `/ws`: the tunnel with the upgrade headers, 426 without.
    pub(super) fn websocket(&mut self, mid: bool) -> Result<bool, E> {
        self.read_body(Sink::Discard)?;
        if self.req.upgrade_ws && self.req.conn_upgrade {
            self.tunnel()
        } else {
            self.text(&[b"websocket upgrade required\n"]);
            self.respond(426, TEXT, &[("Upgrade", "websocket")], Src::Text, mid)
        }
    }

    /// `GET /download?size=N&mode=cl|chunked|close`: N bytes of the test pattern.
    pub(super) fn download(&mut self, mid: bool) -> Result<bool, E> {
        let size: u64 = query_param(&self.req.query, "size")
            .and_then(|v| v.parse().ok())
            .ok_or(E::Reject(400, "bad size"))?;
        let mode = match query_param(&self.req.query, "mode").unwrap_or("cl") {
            "cl" | "" => Mode::Cl,
            "chunked" => Mode::Chunked,
            "close" => Mode::Close,
            _ => return Err(E::Reject(400, "bad mode")),
        };
        // a cut close-delimited body would look complete: declare the length instead
        let mode = if mid && mode == Mode::Close {
            Mode::Cl
        } else {
            mode
        };
        const BIN: &str = "application/octet-stream";
        match mode {
            Mode::Cl => self.head_into(200, BIN, Some(size), &[]),
            Mode::Chunked => self.head_into(200, BIN, None, &[("Transfer-Encoding", "chunked")]),
            Mode::Close => {
                self.req.close = true;
                self.head_into(200, BIN, None, &[]);
            }
        }
        if self.req.head {
            (&self.stream).write_all(&self.wbuf)?;
            return Ok(!self.req.close);
        }
        let limit = if mid { size / 2 } else { size };
        match mode {
            Mode::Cl | Mode::Close => self.send_pattern(limit)?,
            Mode::Chunked => {
                if !self.send_chunked(size, limit, mid)? {
                    return Ok(false);
                }
            }
        }
        Ok(!self.req.close && !mid)
    }

    /// The head in `wbuf`, then the first `limit` pattern bytes, unframed.
    fn send_pattern(&mut self, limit: u64) -> Result<(), E> {
        let mut off: u64 = 0;
        while off < limit {
            let n = (limit - off).min(DOWNLOAD_BLOCK as u64) as usize;
            let at = self.wbuf.len();
            self.wbuf.resize(at + n, 0);
            pattern_into(off, &mut self.wbuf[at..]);
            (&self.stream).write_all(&self.wbuf)?;
            self.wbuf.clear();
            off += n as u64;
        }
        if !self.wbuf.is_empty() {
            (&self.stream).write_all(&self.wbuf)?;
        }
        Ok(())
    }

    /// The head in `wbuf`, then `size` pattern bytes in chunks of [`CHUNK_SIZES`]; `mid`:
    /// only the first `limit` bytes, without the last chunk. `Ok(false)`: cut.
    fn send_chunked(&mut self, size: u64, limit: u64, mid: bool) -> Result<bool, E> {
        let mut off: u64 = 0;
        let mut k = 0;
        while off < size {
            let n = (size - off).min(CHUNK_SIZES[k % CHUNK_SIZES.len()] as u64);
            k += 1;
            push_hex(&mut self.wbuf, n);
            self.wbuf.extend_from_slice(b"\r\n");
            let send = if mid {
                n.min(limit.saturating_sub(off))
            } else {
                n
            };
            let at = self.wbuf.len();
            self.wbuf.resize(at + send as usize, 0);
            pattern_into(off, &mut self.wbuf[at..]);
            if send < n {
                (&self.stream).write_all(&self.wbuf)?;
                return Ok(false);
            }
            self.wbuf.extend_from_slice(b"\r\n");
            (&self.stream).write_all(&self.wbuf)?;
            self.wbuf.clear();
            off += n;
        }
        if mid {
            // size 0, or the cut fell on a chunk boundary: stop before the last chunk
            if !self.wbuf.is_empty() {
                (&self.stream).write_all(&self.wbuf)?;
            }
            return Ok(false);
        }
        self.wbuf.extend_from_slice(b"0\r\n\r\n");
        (&self.stream).write_all(&self.wbuf)?;
        Ok(true)
    }

    /// 101, then echo raw bytes until EOF.
    fn tunnel(&mut self) -> Result<bool, E> {
        let w = &mut self.wbuf;
        w.clear();
        w.extend_from_slice(b"HTTP/1.1 101 Switching Protocols\r\nX-Node: ");
        w.extend_from_slice(self.inner.name.as_bytes());
        w.extend_from_slice(b"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n");
        (&self.stream).write_all(&self.wbuf)?;
        if self.rend > self.rpos {
            (&self.stream).write_all(&self.rbuf[self.rpos..self.rend])?;
            self.rpos = self.rend;
        }
        loop {
            match self.stream.read(&mut self.rbuf) {
                Ok(0) => break,
                Ok(n) => (&self.stream).write_all(&self.rbuf[..n])?,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Err(E::Io),
            }
        }
        let _ = self.stream.shutdown(Shutdown::Write);
        Err(E::Io) // closed; nothing more to send
    }
}
