//! The response head for the client: the status line (HTTP/1.1, the server's reason or
//! the engine's), the server's end-to-end headers (hop-by-hop and framing ones were
//! dropped by the parser), the persistence cookie (inserted, refreshed, or the
//! application's prefixed; a server's Set-Cookie of ours removed with `indirect`), a
//! cacheable response that sets it marked private, then the engine's own framing and
//! Connection.

use crate::config::{Cookie, CookieMode};
use crate::http::head::{eq_ic, tokens, BodyLen, Hdr, ResponseHead};
use crate::http::push_u64;
use crate::persist;
use crate::snapshot::BackendRt;

use super::super::outcome::CookieDone;

/// How the body reaches the client: its framing, and whether the connection must close
/// after it (an HTTP/1.0 client cannot take chunked).
pub fn client_framing(server: BodyLen, client_minor: u8) -> (BodyLen, bool) {
    match server {
        BodyLen::None => (BodyLen::None, false),
        BodyLen::Length(n) => (BodyLen::Length(n), false),
        BodyLen::Chunked | BodyLen::Close if client_minor == 1 => (BodyLen::Chunked, false),
        BodyLen::Chunked | BodyLen::Close => (BodyLen::Close, true),
    }
}

/// The client connection's fate, as the head says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientConn {
    /// `Connection: Upgrade` (a tunnel follows).
    Upgrade,
    /// `Connection: close`.
    Close,
    /// Kept; an HTTP/1.0 client is told so.
    KeepAlive,
}

/// Everything the response head depends on besides the server's head.
pub struct ResponseRewrite<'a> {
    pub be: &'a BackendRt,
    /// The server's persistence cookie value (prefix mode).
    pub server_cookie: &'a str,
    /// The server's rank in its backend (encoded in an insert cookie).
    pub rank: usize,
    /// The valid persistence cookie of the request, when it named this server.
    pub sticky: Option<persist::Valid>,
    pub now_s: u64,
    pub head_request: bool,
    pub client_minor: u8,
    /// From [`client_framing`].
    pub framing: BodyLen,
    pub conn: ClientConn,
    /// What was done with the cookie before (the log's second flag).
    pub done: CookieDone,
}

fn line(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

impl ResponseRewrite<'_> {
    /// Whether this response sets a new persistence cookie (insert mode: the request
    /// named no server, another one, or a cookie to refresh).
    fn inserts(&self, c: &Cookie) -> bool {
        c.mode == CookieMode::Insert
            && match (self.sticky, self.be.codec.as_ref()) {
                (Some(v), Some(codec)) => codec.needs_refresh(&v, self.now_s),
                (Some(_), None) => false,
                (None, _) => true,
            }
    }

    /// Writes the whole head of `head` (parsed from `sb`) into `out`; returns what was
    /// done with the persistence cookie.
    pub fn head(&self, sb: &[u8], head: &ResponseHead, out: &mut Vec<u8>) -> CookieDone {
        out.extend_from_slice(b"HTTP/1.1 ");
        push_u64(out, head.status as u64);
        out.push(b' ');
        if head.reason.1 > head.reason.0 {
            out.extend_from_slice(&sb[head.reason.0 as usize..head.reason.1 as usize]);
        } else {
            out.extend_from_slice(crate::http::reason(head.status).as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        let mut done = self.done;
        let cookie = self.be.cookie.as_ref();
        let insert = cookie.is_some_and(|c| self.inserts(c));
        let mut private = false;
        for f in head.fields.iter().filter(|f| !f.drop) {
            let (name, value) = (f.name(sb), f.value(sb));
            if let Some(c) = cookie {
                if self.cookie_field(c, f.kind, value, &mut done, out) {
                    continue;
                }
                if insert && c.nocache && f.kind == Hdr::CacheControl {
                    private = true;
                    if !is_private(value) {
                        // A cacheable response that sets our cookie is marked private.
                        out.extend_from_slice(b"Cache-Control: private\r\n");
                        continue;
                    }
                }
            }
            line(out, name, value);
        }
        if insert && self.conn != ClientConn::Upgrade {
            if let (Some(c), Some(codec)) = (cookie, self.be.codec.as_ref()) {
                let issued = self
                    .sticky
                    .map(|v| v.issued)
                    .filter(|&i| i > 0)
                    .unwrap_or(self.now_s);
                let value = codec.encode(self.rank, issued, self.now_s);
                persist::set_cookie_line(c, &value, out);
                done = if self.sticky.is_some() {
                    CookieDone::Updated
                } else {
                    CookieDone::Inserted
                };
                if c.nocache && !private {
                    out.extend_from_slice(b"Cache-Control: private\r\n");
                }
            }
        }
        self.framing_lines(sb, head, out);
        match self.conn {
            ClientConn::Upgrade => out.extend_from_slice(b"Connection: Upgrade\r\n"),
            ClientConn::Close => out.extend_from_slice(b"Connection: close\r\n"),
            ClientConn::KeepAlive if self.client_minor == 0 => {
                out.extend_from_slice(b"Connection: keep-alive\r\n")
            }
            ClientConn::KeepAlive => {}
        }
        out.extend_from_slice(b"\r\n");
        done
    }

    /// A server's Set-Cookie of the persistence cookie: removed (insert, indirect) or
    /// prefixed (prefix mode). True when it was handled (not to be passed as it is).
    fn cookie_field(
        &self,
        c: &Cookie,
        kind: Hdr,
        value: &[u8],
        done: &mut CookieDone,
        out: &mut Vec<u8>,
    ) -> bool {
        if kind != Hdr::SetCookie || persist::set_cookie_name(value) != c.name.as_bytes() {
            return false;
        }
        match c.mode {
            CookieMode::Insert => c.indirect,
            CookieMode::Prefix => {
                line(
                    out,
                    b"Set-Cookie",
                    &persist::prefix_set_cookie(value, self.server_cookie),
                );
                if matches!(*done, CookieDone::NotApplicable | CookieDone::Inserted) {
                    *done = CookieDone::Rewritten;
                }
                true
            }
        }
    }

    /// Content-Length or Transfer-Encoding as the client gets the body.
    fn framing_lines(&self, sb: &[u8], head: &ResponseHead, out: &mut Vec<u8>) {
        match self.framing {
            BodyLen::Length(n) => {
                out.extend_from_slice(b"Content-Length: ");
                push_u64(out, n);
                out.extend_from_slice(b"\r\n");
            }
            BodyLen::Chunked => {
                out.extend_from_slice(b"Transfer-Encoding: ");
                if let Some((a, b)) = head.te_codings {
                    // Codings besides chunked (gzip, chunked): the client is told of them.
                    for t in tokens(&sb[a as usize..b as usize]) {
                        if !eq_ic(t, b"chunked") {
                            out.extend_from_slice(t);
                            out.extend_from_slice(b", ");
                        }
                    }
                }
                out.extend_from_slice(b"chunked\r\n");
            }
            _ if head.body == BodyLen::None
                && !self.head_request
                && !matches!(head.status, 100..=199 | 204 | 304) =>
            {
                // An empty body (Content-Length: 0) is framed as one, or the client would
                // read until the connection closes.
                out.extend_from_slice(b"Content-Length: 0\r\n");
            }
            _ if self.head_request || head.status == 304 => {
                // HEAD and 304 keep the server's Content-Length (the parser dropped it).
                let cl = head
                    .fields
                    .iter()
                    .find(|f| eq_ic(f.name(sb), b"content-length"));
                if let Some(f) = cl {
                    line(out, b"Content-Length", f.value(sb));
                }
            }
            _ => {}
        }
    }
}

fn is_private(v: &[u8]) -> bool {
    v.windows(7).any(|x| x.eq_ignore_ascii_case(b"private"))
        || v.windows(8).any(|x| x.eq_ignore_ascii_case(b"no-store"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::head::{parse_response, HeadLimits};
    use crate::snapshot::Snapshot;

    const LIMITS: HeadLimits = HeadLimits {
        max_head_bytes: 16384,
        max_target_bytes: 8192,
        max_headers: 100,
    };

    fn snapshot(backend_extra: &str) -> Snapshot {
        let text = format!(
            "[[frontend]]\nname = \"web\"\nbind = [\"127.0.0.1:8080\"]\nbackend = \"app\"\n[[backend]]\nname = \"app\"\n{backend_extra}\n[[backend.server]]\nname = \"s1\"\naddress = \"127.0.0.1:9101\"\ncookie = \"s1\"\n"
        );
        let cfg = config::load_str(&text, std::path::Path::new("/tmp/lb.toml"))
            .expect("config")
            .config;
        Snapshot::build(cfg, 0).expect("snapshot")
    }

    fn client_head(be: &BackendRt, raw: &str, minor: u8, conn: ClientConn) -> (String, CookieDone) {
        let head = parse_response(raw.as_bytes(), false, &LIMITS)
            .unwrap()
            .unwrap();
        let (framing, _) = client_framing(head.body, minor);
        let rw = ResponseRewrite {
            be,
            server_cookie: "s1",
            rank: 0,
            sticky: None,
            now_s: 1_000_000,
            head_request: false,
            client_minor: minor,
            framing,
            conn,
            done: CookieDone::Nothing,
        };
        let mut out = Vec::new();
        let done = rw.head(raw.as_bytes(), &head, &mut out);
        (String::from_utf8(out).unwrap(), done)
    }

    #[test]
    fn framing_follows_the_client() {
        let snap = snapshot("");
        let be = &snap.backends[0];
        let raw = "HTTP/1.1 200 OK\r\nX-A: 1\r\n\r\n";
        let (h, _) = client_head(be, raw, 1, ClientConn::KeepAlive);
        assert_eq!(
            h,
            "HTTP/1.1 200 OK\r\nX-A: 1\r\nTransfer-Encoding: chunked\r\n\r\n"
        );
        let (h, _) = client_head(be, raw, 0, ClientConn::Close);
        assert_eq!(h, "HTTP/1.1 200 OK\r\nX-A: 1\r\nConnection: close\r\n\r\n");
        let empty = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
        let (h, _) = client_head(be, empty, 0, ClientConn::KeepAlive);
        assert_eq!(
            h,
            "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n"
        );
        let gz = "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n";
        let (h, _) = client_head(be, gz, 1, ClientConn::KeepAlive);
        assert_eq!(
            h,
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
        );
    }

    #[test]
    fn an_insert_cookie_is_set_and_marks_the_response_private() {
        let snap = snapshot("[backend.cookie]\nname = \"SERVERID\"");
        let be = &snap.backends[0];
        let raw = "HTTP/1.1 200 OK\r\nCache-Control: public\r\nSet-Cookie: SERVERID=forged\r\nSet-Cookie: MoodleSession=m\r\nContent-Length: 2\r\n\r\nok";
        let (h, done) = client_head(be, raw, 1, ClientConn::KeepAlive);
        assert_eq!(done, CookieDone::Inserted);
        assert_eq!(
            h,
            "HTTP/1.1 200 OK\r\nCache-Control: private\r\nSet-Cookie: MoodleSession=m\r\nSet-Cookie: SERVERID=s1; Path=/\r\nContent-Length: 2\r\n\r\n"
        );
    }

    #[test]
    fn a_prefix_cookie_carries_the_server() {
        let snap = snapshot("[backend.cookie]\nname = \"MoodleSession\"\nmode = \"prefix\"");
        let be = &snap.backends[0];
        let raw = "HTTP/1.1 303 See Other\r\nLocation: /my/\r\nSet-Cookie: MoodleSession=abc; path=/\r\nContent-Length: 0\r\n\r\n";
        let (h, _) = client_head(be, raw, 1, ClientConn::KeepAlive);
        assert!(
            h.contains("\r\nSet-Cookie: s1~abc; path=/\r\n") || h.contains("MoodleSession=s1~abc"),
            "{h}"
        );
        assert!(h.ends_with("Content-Length: 0\r\n\r\n"), "{h}");
    }
}
