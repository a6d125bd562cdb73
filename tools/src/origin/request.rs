//! Reading a request: the head (parsed with `httparse` into `Req`: method, target, version,
//! the framing of its body, connection tokens, upgrade, expect, cookies), then its body by
//! Content-Length or chunked (trailers accepted) into a `Sink`; and the query and form
//! fields the endpoints read.

use super::listener::Session;
use super::E;
use std::io::{self, Read, Write};

use sha2::Digest;

/// Largest request head accepted (bigger: 400 and close).
pub(super) const MAX_HEAD: usize = 64 * 1024;
const MAX_HEADERS: usize = 100;

#[derive(Clone, Copy, PartialEq, Eq)]
enum BodyKind {
    None,
    Length(u64),
    Chunked,
}

/// Where a request body goes.
#[derive(Clone, Copy)]
pub(super) enum Sink {
    Discard,
    /// Append to `Session::body`, up to this many bytes in all.
    Collect(usize),
    Hash,
}

/// The request being answered, as the endpoints need it.
#[derive(Default)]
pub(super) struct Req {
    pub(super) method: String,
    pub(super) path: String,
    pub(super) query: String,
    pub(super) minor: u8,
    body: Option<BodyKind>,
    /// Close after the answer.
    pub(super) close: bool,
    pub(super) upgrade_ws: bool,
    pub(super) conn_upgrade: bool,
    expect_continue: bool,
    /// The Cookie fields, joined with "; ".
    pub(super) cookie: String,
    /// A HEAD request: the answer has no body.
    pub(super) head: bool,
}

impl Req {
    fn body_kind(&self) -> BodyKind {
        self.body.unwrap_or(BodyKind::None)
    }
}

fn eq(a: &[u8], b: &str) -> bool {
    a.eq_ignore_ascii_case(b.as_bytes())
}

fn tokens(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    v.split(|&b| b == b',').map(|t| t.trim_ascii())
}

/// Fills `req` from a parsed head; copies the head into `echo` for `/echo`.
fn fill_req(
    req: &mut Req,
    echo: &mut Vec<u8>,
    r: &httparse::Request<'_, '_>,
    head: &[u8],
) -> Result<(), E> {
    const BAD: E = E::Reject(400, "bad request head");
    let method = r.method.ok_or(BAD)?;
    let target = r.path.ok_or(BAD)?;
    req.minor = r.version.ok_or(BAD)?;
    req.method.clear();
    req.method.push_str(method);
    req.head = method == "HEAD";
    let target = origin_form(target)?;
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    req.path.clear();
    req.path.push_str(path);
    req.query.clear();
    req.query.push_str(query);
    req.cookie.clear();
    req.upgrade_ws = false;
    req.conn_upgrade = false;
    req.expect_continue = false;
    let f = scan_headers(req, r.headers)?;
    req.close = if req.minor == 0 {
        !f.tok_keep
    } else {
        f.tok_close
    };
    req.body = Some(if f.te_seen {
        if !f.te_chunked {
            return Err(E::Reject(400, "unsupported Transfer-Encoding"));
        }
        if f.cl.is_some() {
            req.close = true; // both framings: never reuse this connection
        }
        BodyKind::Chunked
    } else {
        match f.cl {
            Some(0) | None => BodyKind::None,
            Some(n) => BodyKind::Length(n),
        }
    });
    echo.clear();
    if req.path.starts_with("/echo") {
        echo.extend_from_slice(head);
    }
    Ok(())
}

/// The target in origin-form: as sent, or an absolute-form target reduced to its path.
fn origin_form(target: &str) -> Result<&str, E> {
    if target.starts_with('/') || target == "*" {
        Ok(target)
    } else if let Some(rest) = target
        .strip_prefix("http://")
        .or_else(|| target.strip_prefix("https://"))
    {
        Ok(rest.find('/').map(|i| &rest[i..]).unwrap_or("/"))
    } else {
        Err(E::Reject(400, "bad request target"))
    }
}

/// What the headers say about the body's framing and the connection.
#[derive(Default)]
struct Framing {
    cl: Option<u64>,
    te_seen: bool,
    te_chunked: bool,
    tok_close: bool,
    tok_keep: bool,
}

/// Reads the headers: the framing is returned, the upgrade, expect and cookie fields go
/// into `req`.
fn scan_headers(req: &mut Req, headers: &[httparse::Header<'_>]) -> Result<Framing, E> {
    let mut f = Framing::default();
    for h in headers.iter() {
        let n = h.name.as_bytes();
        let v = h.value;
        if eq(n, "content-length") {
            let v = v.trim_ascii();
            if v.is_empty() || v.len() > 18 || !v.iter().all(u8::is_ascii_digit) {
                return Err(E::Reject(400, "bad Content-Length"));
            }
            let x = v.iter().fold(0u64, |a, d| a * 10 + u64::from(d - b'0'));
            if f.cl.is_some_and(|c| c != x) {
                return Err(E::Reject(400, "conflicting Content-Length"));
            }
            f.cl = Some(x);
        } else if eq(n, "transfer-encoding") {
            f.te_seen = true;
            f.te_chunked = tokens(v)
                .filter(|t| !t.is_empty())
                .last()
                .is_some_and(|t| eq(t, "chunked"));
        } else if eq(n, "connection") {
            for t in tokens(v) {
                if eq(t, "close") {
                    f.tok_close = true;
                } else if eq(t, "keep-alive") {
                    f.tok_keep = true;
                } else if eq(t, "upgrade") {
                    req.conn_upgrade = true;
                }
            }
        } else if eq(n, "upgrade") {
            if tokens(v).any(|t| eq(t, "websocket")) {
                req.upgrade_ws = true;
            }
        } else if eq(n, "expect") {
            if eq(v.trim_ascii(), "100-continue") {
                req.expect_continue = true;
            }
        } else if eq(n, "cookie") {
            if let Ok(s) = std::str::from_utf8(v) {
                if !req.cookie.is_empty() {
                    req.cookie.push_str("; ");
                }
                req.cookie.push_str(s);
            }
        }
    }
    Ok(f)
}

pub(super) fn query_param<'q>(q: &'q str, key: &str) -> Option<&'q str> {
    q.split('&')
        .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

fn url_decode(s: &[u8]) -> String {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = |b: u8| (b as char).to_digit(16);
                match (
                    s.get(i + 1).and_then(|&b| hex(b)),
                    s.get(i + 2).and_then(|&b| hex(b)),
                ) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(super) fn form_field(body: &[u8], key: &str) -> Option<String> {
    body.split(|&b| b == b'&').find_map(|kv| {
        let (k, v) = match kv.iter().position(|&b| b == b'=') {
            Some(i) => (&kv[..i], &kv[i + 1..]),
            None => (kv, &[][..]),
        };
        (url_decode(k) == key).then(|| url_decode(v))
    })
}

impl Session<'_> {
    fn fill(&mut self) -> io::Result<usize> {
        if self.rpos == self.rend {
            self.rpos = 0;
            self.rend = 0;
        } else if self.rend == self.rbuf.len() && self.rpos > 0 {
            self.rbuf.copy_within(self.rpos..self.rend, 0);
            self.rend -= self.rpos;
            self.rpos = 0;
        }
        if self.rend == self.rbuf.len() {
            return Err(io::Error::other("read buffer full"));
        }
        loop {
            match self.stream.read(&mut self.rbuf[self.rend..]) {
                Ok(n) => {
                    self.rend += n;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads and parses the next request head into `self.req`. `Ok(false)`: clean EOF
    /// between requests.
    pub(super) fn read_head(&mut self) -> Result<bool, E> {
        loop {
            if self.rend > self.rpos {
                let mut hdrs = [httparse::EMPTY_HEADER; MAX_HEADERS];
                let mut r = httparse::Request::new(&mut hdrs);
                let data = &self.rbuf[self.rpos..self.rend];
                match r.parse(data) {
                    Ok(httparse::Status::Complete(n)) => {
                        fill_req(&mut self.req, &mut self.body, &r, &data[..n])?;
                        self.rpos += n;
                        return Ok(true);
                    }
                    Ok(httparse::Status::Partial) => {}
                    Err(httparse::Error::TooManyHeaders) => {
                        return Err(E::Reject(400, "too many header fields"))
                    }
                    Err(_) => return Err(E::Reject(400, "malformed request head")),
                }
                if self.rend - self.rpos >= MAX_HEAD {
                    return Err(E::Reject(400, "request head too large"));
                }
            }
            let had = self.rend > self.rpos;
            match self.fill() {
                Ok(0) if !had => return Ok(false),
                Ok(0) => return Err(E::Io),
                Ok(_) => {}
                Err(_) => return Err(E::Io),
            }
        }
    }

    fn feed(&mut self, sink: Sink, from: usize, to: usize) -> Result<(), E> {
        let data = &self.rbuf[from..to];
        match sink {
            Sink::Discard => {}
            Sink::Collect(limit) => {
                if self.body.len() + data.len() > limit {
                    return Err(E::Reject(413, "request body too large"));
                }
                self.body.extend_from_slice(data);
            }
            Sink::Hash => {
                self.hasher.update(data);
                self.hashed += data.len() as u64;
            }
        }
        Ok(())
    }

    fn read_exact_body(&mut self, sink: Sink, mut n: u64) -> Result<(), E> {
        while n > 0 {
            if self.rpos == self.rend && self.fill()? == 0 {
                return Err(E::Io);
            }
            let take = ((self.rend - self.rpos) as u64).min(n) as usize;
            self.feed(sink, self.rpos, self.rpos + take)?;
            self.rpos += take;
            n -= take as u64;
        }
        Ok(())
    }

    /// The next line (without CR LF) as a range of `rbuf`, consumed.
    fn read_line(&mut self) -> Result<(usize, usize), E> {
        loop {
            if let Some(i) = self.rbuf[self.rpos..self.rend]
                .iter()
                .position(|&b| b == b'\n')
            {
                let start = self.rpos;
                let mut end = start + i;
                if end > start && self.rbuf[end - 1] == b'\r' {
                    end -= 1;
                }
                self.rpos = start + i + 1;
                return Ok((start, end));
            }
            if self.rend - self.rpos >= 8192 {
                return Err(E::Reject(400, "chunk line too long"));
            }
            if self.fill()? == 0 {
                return Err(E::Io);
            }
        }
    }

    /// Reads the request body into `sink`, after a 100 Continue if one was asked for.
    pub(super) fn read_body(&mut self, sink: Sink) -> Result<(), E> {
        let kind = self.req.body_kind();
        if kind == BodyKind::None {
            return Ok(());
        }
        if self.req.expect_continue && self.req.minor >= 1 {
            (&self.stream).write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        }
        match kind {
            BodyKind::None => Ok(()),
            BodyKind::Length(n) => self.read_exact_body(sink, n),
            BodyKind::Chunked => self.read_chunked(sink),
        }
    }

    /// A chunked body: the chunks into `sink`, then the trailers (read and dropped).
    fn read_chunked(&mut self, sink: Sink) -> Result<(), E> {
        loop {
            let n = self.read_chunk_size()?;
            if n == 0 {
                break;
            }
            self.read_exact_body(sink, n)?;
            let (s, e) = self.read_line()?;
            if s != e {
                return Err(E::Reject(400, "chunk not followed by CRLF"));
            }
        }
        // trailers
        for _ in 0..100 {
            let (s, e) = self.read_line()?;
            if s == e {
                return Ok(());
            }
        }
        Err(E::Reject(400, "too many trailer fields"))
    }

    /// A chunk-size line (extensions ignored).
    fn read_chunk_size(&mut self) -> Result<u64, E> {
        let (s, e) = self.read_line()?;
        let line = &self.rbuf[s..e];
        let size = line
            .split(|&b| b == b';')
            .next()
            .unwrap_or(&[])
            .trim_ascii();
        if size.is_empty() || size.len() > 15 {
            return Err(E::Reject(400, "bad chunk size"));
        }
        let mut n: u64 = 0;
        for &b in size {
            let d = (b as char)
                .to_digit(16)
                .ok_or(E::Reject(400, "bad chunk size"))?;
            n = n * 16 + u64::from(d);
        }
        Ok(n)
    }
}
