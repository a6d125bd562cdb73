//! A small blocking HTTP/1.1 client for tests that need raw control over the wire:
//! hand-written requests, pipelining, 1xx answers, every body framing, cut bodies.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

const MAX_HEAD: usize = 256 * 1024;

/// How a response body was delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// `Content-Length`.
    Length,
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Neither: the body ran until the server closed.
    Close,
    /// No body by definition (HEAD, 1xx, 204, 304).
    None,
}

/// A parsed response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// `"HTTP/1.1"` or `"HTTP/1.0"`.
    pub version: String,
    pub headers: Vec<(String, String)>,
    /// The decoded body (chunk framing removed).
    pub body: Vec<u8>,
    pub framing: Framing,
    /// False when the body was cut short (EOF, reset or timeout before its end).
    pub complete: bool,
    /// Trailer fields of a chunked body.
    pub trailers: Vec<(String, String)>,
}

impl Response {
    /// The first header of that name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every header of that name, in order.
    pub fn headers_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The body as text (lossy UTF-8).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One client connection. Bytes received past the end of a response are kept for the
/// next [`Conn::read_response`], so pipelining works.
pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    pos: usize,
    eof: bool,
}

enum Fill {
    Data,
    Eof,
}

impl Conn {
    /// Connects, with TCP_NODELAY and a 10 s read and write timeout.
    pub fn connect(addr: SocketAddr) -> io::Result<Conn> {
        Conn::connect_within(addr, Duration::from_secs(10))
    }

    /// Connects within `limit`, with TCP_NODELAY and a 10 s read and write timeout.
    pub fn connect_within(addr: SocketAddr, limit: Duration) -> io::Result<Conn> {
        let stream = TcpStream::connect_timeout(&addr, limit)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        stream.set_write_timeout(Some(Duration::from_secs(10)))?;
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(16 * 1024),
            pos: 0,
            eof: false,
        })
    }

    /// Sets the read and write timeouts.
    pub fn set_timeout(&mut self, d: Duration) {
        let d = if d.is_zero() {
            Duration::from_millis(1)
        } else {
            d
        };
        let _ = self.stream.set_read_timeout(Some(d));
        let _ = self.stream.set_write_timeout(Some(d));
    }

    /// Writes raw bytes.
    pub fn send(&mut self, raw: &[u8]) -> io::Result<()> {
        self.stream.write_all(raw)?;
        self.stream.flush()
    }

    /// Sends one request and reads its response. Adds `Host: test` unless a Host header
    /// is given, and `Content-Length` when the body is non-empty or the method is POST or
    /// PUT (unless a Content-Length or Transfer-Encoding header is given; with a given
    /// `Transfer-Encoding: chunked` the body is sent as is, already encoded).
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<Response> {
        let mut out = Vec::with_capacity(256 + body.len());
        out.extend_from_slice(method.as_bytes());
        out.push(b' ');
        out.extend_from_slice(path.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\n");
        let has = |n: &str| headers.iter().any(|(h, _)| h.eq_ignore_ascii_case(n));
        if !has("host") {
            out.extend_from_slice(b"Host: test\r\n");
        }
        for (n, v) in headers {
            out.extend_from_slice(n.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(v.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        let needs_len = !body.is_empty()
            || method.eq_ignore_ascii_case("POST")
            || method.eq_ignore_ascii_case("PUT");
        if needs_len && !has("content-length") && !has("transfer-encoding") {
            out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(body);
        self.send(&out)?;
        self.read_response(method.eq_ignore_ascii_case("HEAD"))
    }

    /// Reads one response. Skips interim 1xx answers (100 Continue, 103, ...) but returns
    /// 101. Handles Content-Length, chunked (with trailers) and close-delimited bodies.
    /// A body cut short returns `Ok` with `complete == false`; an error or EOF before the
    /// head is complete is `Err`.
    pub fn read_response(&mut self, method_was_head: bool) -> io::Result<Response> {
        loop {
            let mut resp = self.read_head()?;
            let s = resp.status;
            if (100..200).contains(&s) && s != 101 {
                continue;
            }
            if method_was_head || s == 101 || s == 204 || s == 304 {
                resp.framing = Framing::None;
                return Ok(resp);
            }
            let chunked = resp.headers_all("transfer-encoding").iter().any(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("chunked"))
            });
            if chunked {
                resp.framing = Framing::Chunked;
                self.read_chunked(&mut resp)?;
            } else if let Some(cl) = resp.header("content-length") {
                let n: u64 = cl.trim().parse().map_err(|_| {
                    io::Error::new(io::ErrorKind::InvalidData, "bad Content-Length")
                })?;
                resp.framing = Framing::Length;
                resp.complete = self.read_exact_into(n, &mut resp.body);
            } else {
                resp.framing = Framing::Close;
                resp.complete = self.read_to_eof(&mut resp.body);
            }
            return Ok(resp);
        }
    }

    /// True if the peer closes the connection (EOF or reset) within `d`. Data arriving
    /// meanwhile is kept for the next read.
    pub fn is_closed_within(&mut self, d: Duration) -> bool {
        if self.eof {
            return true;
        }
        let old = self.stream.read_timeout().ok().flatten();
        let deadline = Instant::now() + d;
        let closed = loop {
            let now = Instant::now();
            if now >= deadline {
                break false;
            }
            let left = (deadline - now).max(Duration::from_millis(1));
            if self.stream.set_read_timeout(Some(left)).is_err() {
                break true;
            }
            match self.fill() {
                Ok(Fill::Eof) => break true,
                Ok(Fill::Data) => continue,
                Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break true,
            }
        };
        let _ = self.stream.set_read_timeout(old);
        closed
    }

    /// The underlying stream (for half-closes, raw reads after a 101, socket options).
    pub fn stream(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    /// Takes the bytes received but not consumed by a response yet (for instance bytes
    /// that followed a 101 answer).
    pub fn take_buffered(&mut self) -> Vec<u8> {
        let v = self.buf[self.pos..].to_vec();
        self.buf.clear();
        self.pos = 0;
        v
    }

    fn avail(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    fn fill(&mut self) -> io::Result<Fill> {
        if self.eof {
            return Ok(Fill::Eof);
        }
        if self.pos > 0 && self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos > 64 * 1024 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        let len = self.buf.len();
        self.buf.resize(len + 64 * 1024, 0);
        let r = loop {
            match self.stream.read(&mut self.buf[len..]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => break r,
            }
        };
        match r {
            Ok(0) => {
                self.buf.truncate(len);
                self.eof = true;
                Ok(Fill::Eof)
            }
            Ok(n) => {
                self.buf.truncate(len + n);
                Ok(Fill::Data)
            }
            Err(e) => {
                self.buf.truncate(len);
                Err(e)
            }
        }
    }

    fn read_head(&mut self) -> io::Result<Response> {
        loop {
            {
                let mut hdrs = [httparse::EMPTY_HEADER; 128];
                let mut r = httparse::Response::new(&mut hdrs);
                match r.parse(self.avail()) {
                    Ok(httparse::Status::Complete(n)) => {
                        let resp = Response {
                            status: r.code.unwrap_or(0),
                            version: format!("HTTP/1.{}", r.version.unwrap_or(1)),
                            headers: r
                                .headers
                                .iter()
                                .map(|h| {
                                    (
                                        h.name.to_string(),
                                        String::from_utf8_lossy(h.value).into_owned(),
                                    )
                                })
                                .collect(),
                            body: Vec::new(),
                            framing: Framing::None,
                            complete: true,
                            trailers: Vec::new(),
                        };
                        self.pos += n;
                        return Ok(resp);
                    }
                    Ok(httparse::Status::Partial) => {
                        if self.avail().len() > MAX_HEAD {
                            return Err(io::Error::new(
                                io::ErrorKind::InvalidData,
                                "response head too large",
                            ));
                        }
                    }
                    Err(e) => {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("bad response head: {e}"),
                        ))
                    }
                }
            }
            if let Fill::Eof = self.fill()? {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed before a complete response head",
                ));
            }
        }
    }

    /// Appends `n` body bytes to `out`; false when the stream ended or failed first.
    fn read_exact_into(&mut self, mut n: u64, out: &mut Vec<u8>) -> bool {
        while n > 0 {
            if self.avail().is_empty() {
                match self.fill() {
                    Ok(Fill::Data) => {}
                    _ => return false,
                }
            }
            let take = (self.avail().len() as u64).min(n) as usize;
            out.extend_from_slice(&self.buf[self.pos..self.pos + take]);
            self.pos += take;
            n -= take as u64;
        }
        true
    }

    fn read_to_eof(&mut self, out: &mut Vec<u8>) -> bool {
        loop {
            out.extend_from_slice(self.avail());
            self.pos = self.buf.len();
            match self.fill() {
                Ok(Fill::Data) => {}
                Ok(Fill::Eof) => return true,
                Err(_) => return false,
            }
        }
    }

    /// One line without its CRLF; None when the stream ended or failed first.
    fn read_line(&mut self) -> io::Result<Option<String>> {
        loop {
            if let Some(i) = self.avail().iter().position(|&b| b == b'\n') {
                let line = &self.buf[self.pos..self.pos + i];
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                let s = String::from_utf8_lossy(line).into_owned();
                self.pos += i + 1;
                return Ok(Some(s));
            }
            if self.avail().len() > MAX_HEAD {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "line too long"));
            }
            match self.fill() {
                Ok(Fill::Data) => {}
                _ => return Ok(None),
            }
        }
    }

    fn read_chunked(&mut self, resp: &mut Response) -> io::Result<()> {
        let bad = || io::Error::new(io::ErrorKind::InvalidData, "bad chunk size line");
        loop {
            let Some(line) = self.read_line()? else {
                resp.complete = false;
                return Ok(());
            };
            let size = line.split(';').next().unwrap_or("").trim();
            if size.is_empty() || size.len() > 16 {
                return Err(bad());
            }
            let size = u64::from_str_radix(size, 16).map_err(|_| bad())?;
            if size == 0 {
                // trailers until the empty line
                loop {
                    let Some(t) = self.read_line()? else {
                        resp.complete = false;
                        return Ok(());
                    };
                    if t.is_empty() {
                        resp.complete = true;
                        return Ok(());
                    }
                    if let Some((n, v)) = t.split_once(':') {
                        resp.trailers
                            .push((n.trim().to_string(), v.trim().to_string()));
                    }
                }
            }
            if !self.read_exact_into(size, &mut resp.body) {
                resp.complete = false;
                return Ok(());
            }
            match self.read_line()? {
                None => {
                    resp.complete = false;
                    return Ok(());
                }
                Some(l) if l.is_empty() => {}
                Some(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "chunk data not followed by CRLF",
                    ))
                }
            }
        }
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// One GET request on a new connection.
pub fn get(addr: SocketAddr, path: &str) -> io::Result<Response> {
    let mut c = Conn::connect(addr)?;
    c.request("GET", path, &[], b"")
}
