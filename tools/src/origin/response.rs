//! Writing responses: the head (status, `X-Node`, Content-Type, Content-Length, extra
//! fields, the connection token) and a whole response from one of the session's buffers,
//! cut at half its body for the mid-body faults.

use super::listener::Session;
use super::E;
use std::io::Write;

pub(super) const HTML: &str = "text/html; charset=utf-8";
pub(super) const TEXT: &str = "text/plain; charset=utf-8";

/// Which buffer holds a response body.
#[derive(Clone, Copy)]
pub(super) enum Src {
    /// `Session::tbuf`
    Text,
    /// `Session::body`
    Body,
}

pub(super) fn push_num(w: &mut Vec<u8>, mut n: u64) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    w.extend_from_slice(&tmp[i..]);
}

pub(super) fn push_hex(w: &mut Vec<u8>, mut n: u64) {
    let mut tmp = [0u8; 16];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b"0123456789abcdef"[(n & 15) as usize];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    w.extend_from_slice(&tmp[i..]);
}

fn reason(code: u16) -> &'static str {
    match code {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        413 => "Content Too Large",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

pub(super) fn html_escape(out: &mut Vec<u8>, s: &str) {
    for c in s.bytes() {
        match c {
            b'<' => out.extend_from_slice(b"&lt;"),
            b'>' => out.extend_from_slice(b"&gt;"),
            b'&' => out.extend_from_slice(b"&amp;"),
            b'"' => out.extend_from_slice(b"&quot;"),
            c => out.push(c),
        }
    }
}

impl Session<'_> {
    /// Writes a response head into `wbuf` (cleared first).
    pub(super) fn head_into(
        &mut self,
        status: u16,
        ctype: &str,
        len: Option<u64>,
        extra: &[(&str, &str)],
    ) {
        let w = &mut self.wbuf;
        w.clear();
        w.extend_from_slice(b"HTTP/1.1 ");
        push_num(w, u64::from(status));
        w.push(b' ');
        w.extend_from_slice(reason(status).as_bytes());
        w.extend_from_slice(b"\r\nX-Node: ");
        w.extend_from_slice(self.inner.name.as_bytes());
        w.extend_from_slice(b"\r\n");
        if !ctype.is_empty() {
            w.extend_from_slice(b"Content-Type: ");
            w.extend_from_slice(ctype.as_bytes());
            w.extend_from_slice(b"\r\n");
        }
        if let Some(n) = len {
            w.extend_from_slice(b"Content-Length: ");
            push_num(w, n);
            w.extend_from_slice(b"\r\n");
        }
        for (n, v) in extra {
            w.extend_from_slice(n.as_bytes());
            w.extend_from_slice(b": ");
            w.extend_from_slice(v.as_bytes());
            w.extend_from_slice(b"\r\n");
        }
        if self.req.close {
            w.extend_from_slice(b"Connection: close\r\n");
        } else if self.req.minor == 0 {
            w.extend_from_slice(b"Connection: keep-alive\r\n");
        }
        w.extend_from_slice(b"\r\n");
    }

    /// Sends a whole response; `mid`: only half the body, then close.
    /// Returns whether the connection stays open.
    pub(super) fn respond(
        &mut self,
        status: u16,
        ctype: &str,
        extra: &[(&str, &str)],
        src: Src,
        mid: bool,
    ) -> Result<bool, E> {
        let bodyless = status == 204 || status == 304 || status < 200;
        let len = match src {
            Src::Text => self.tbuf.len(),
            Src::Body => self.body.len(),
        };
        let declared = if status == 204 || status < 200 {
            None
        } else if status == 304 {
            (len > 0).then_some(len as u64)
        } else {
            Some(len as u64)
        };
        self.head_into(status, ctype, declared, extra);
        let send = !self.req.head && !bodyless;
        let body: &[u8] = match src {
            Src::Text => &self.tbuf,
            Src::Body => &self.body,
        };
        let part = if mid { &body[..body.len() / 2] } else { body };
        if !send {
            (&self.stream).write_all(&self.wbuf)?;
        } else if part.len() <= 64 * 1024 {
            self.wbuf.extend_from_slice(part);
            (&self.stream).write_all(&self.wbuf)?;
        } else {
            (&self.stream).write_all(&self.wbuf)?;
            (&self.stream).write_all(part)?;
        }
        Ok(!(self.req.close || (mid && send)))
    }

    pub(super) fn text(&mut self, parts: &[&[u8]]) {
        self.tbuf.clear();
        for p in parts {
            self.tbuf.extend_from_slice(p);
        }
    }
}
