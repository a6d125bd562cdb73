//! The request head for the server: the request line and the client's end-to-end
//! headers as they are, hop-by-hop ones and those the engine owns removed
//! (X-Forwarded-*, `set_headers`, names with `_`), the persistence cookie taken out of
//! Cookie (or the prefix stripped), the waiting room's turn cookie removed; then the
//! engine's framing, Connection: Upgrade, X-Forwarded-For and `set_headers`. The Host
//! line of an HTTP/1.0 request without one and the empty line come last
//! ([`finish_head`]), once the server is known.

use crate::http::head::{eq_ic, hdr_kind, BodyLen, Hdr, RequestHead};
use crate::http::push_u64;
use crate::persist;
use crate::snapshot::{BackendRt, FrontendRt};

/// What the rewrite needs to know of where the request goes.
pub struct RequestRewrite<'a> {
    pub fe: &'a FrontendRt,
    pub be: Option<&'a BackendRt>,
    /// X-Forwarded-For's value: the client's address.
    pub xff: &'a str,
    /// `[limits] drop_underscore_headers`.
    pub drop_underscore: bool,
}

/// What the rewrite found in the request's cookies.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Found {
    /// The persistence cookie's value (the server it names, encoded).
    pub sticky: Option<Vec<u8>>,
    /// The waiting room's turn cookie's value.
    pub turn: Option<Vec<u8>>,
}

fn line(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

impl RequestRewrite<'_> {
    /// Whether a client header is the engine's to set (or may pass for one).
    pub fn excluded(&self, name: &[u8], kind: Hdr) -> bool {
        if name.contains(&b'_') {
            // PHP (CGI) turns `-` into `_`: `X_Forwarded_Proto` would reach Moodle as the
            // header the engine sets. Dropped unless allowed; even then never one that
            // passes for a protected name.
            if self.drop_underscore {
                return true;
            }
            let dashed: Vec<u8> = name
                .iter()
                .map(|&c| if c == b'_' { b'-' } else { c })
                .collect();
            return self.excluded(&dashed, hdr_kind(&dashed));
        }
        let fe = self.fe;
        (fe.cfg.forwarded_for && kind == Hdr::XForwardedFor)
            || kind == Hdr::XForwardedProto
            || kind == Hdr::XForwardedSsl
            || fe.set_names_lc.iter().any(|n| eq_ic(n, name))
    }

    /// Writes the head (all but its end, see [`finish_head`]) of `req`, parsed from
    /// `buf`, into `out`.
    pub fn head(&self, buf: &[u8], req: &RequestHead, out: &mut Vec<u8>) -> Found {
        let mut found = Found::default();
        out.extend_from_slice(req.method_str(buf));
        out.push(b' ');
        out.extend_from_slice(req.target(buf));
        out.extend_from_slice(b" HTTP/1.1\r\n");
        for f in &req.fields {
            if f.drop || self.excluded(f.name(buf), f.kind) {
                continue;
            }
            if f.kind == Hdr::Cookie {
                self.cookie(f.name(buf), f.value(buf), &mut found, out);
            } else {
                line(out, f.name(buf), f.value(buf));
            }
        }
        match req.body {
            BodyLen::Length(n) => {
                out.extend_from_slice(b"Content-Length: ");
                push_u64(out, n);
                out.extend_from_slice(b"\r\n");
            }
            BodyLen::Chunked => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
            _ => {}
        }
        if let Some((a, b)) = req.upgrade {
            out.extend_from_slice(b"Connection: Upgrade\r\n");
            line(out, b"Upgrade", &buf[a as usize..b as usize]);
        }
        if self.fe.cfg.forwarded_for {
            line(out, b"X-Forwarded-For", self.xff.as_bytes());
        }
        out.extend_from_slice(&self.fe.set_lines);
        found
    }

    /// One Cookie line: the turn cookie taken out, the persistence cookie taken out (or
    /// its prefix stripped); the rest passed on, or nothing when nothing is left.
    fn cookie(&self, name: &[u8], value: &[u8], found: &mut Found, out: &mut Vec<u8>) {
        let turn = persist::TURN_COOKIE.as_bytes();
        let stripped;
        let mut value = value;
        if value.windows(turn.len()).any(|x| x == turn) {
            // The waiting room's turn cookie is ours: the server never sees it.
            let (t, rest) = persist::take_cookie(value, turn);
            if found.turn.is_none() {
                found.turn = t;
            }
            match rest {
                Some(r) => {
                    stripped = r;
                    value = &stripped;
                }
                None => return,
            }
        }
        let Some((c, be)) = self.be.and_then(|b| Some((b.cookie.as_ref()?, b))) else {
            line(out, name, value);
            return;
        };
        let (sticky, rewritten) = persist::rewrite_request_cookie(value, c, &be.app_cookie);
        if found.sticky.is_none() {
            found.sticky = sticky;
        }
        if let Some(v) = rewritten {
            line(out, name, &v);
        }
    }
}

/// Ends the head: Host for an HTTP/1.0 request that had none (the server's address),
/// then the empty line.
pub fn finish_head(out: &mut Vec<u8>, need_host: Option<&str>) {
    if let Some(h) = need_host {
        line(out, b"Host", h.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

/// `https://<host><port><target>` from the validated Host (its port replaced by the HTTPS
/// port) and the origin-form target.
pub fn redirect_location(buf: &[u8], req: &RequestHead, port: &str) -> Option<String> {
    let host = std::str::from_utf8(req.host(buf)?).ok()?;
    let target = std::str::from_utf8(req.target(buf)).ok()?;
    if !target.starts_with('/') {
        return None;
    }
    let name = if host.starts_with('[') {
        &host[..=host.find(']')?]
    } else {
        host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host)
    };
    Some(format!("https://{name}{port}{target}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::head::{parse_request, HeadLimits};
    use crate::snapshot::Snapshot;

    const LIMITS: HeadLimits = HeadLimits {
        max_head_bytes: 16384,
        max_target_bytes: 8192,
        max_headers: 100,
    };

    fn snapshot(frontend_extra: &str, backend_extra: &str) -> Snapshot {
        let text = format!(
            "[[frontend]]\nname = \"web\"\nbind = [\"127.0.0.1:8080\"]\nbackend = \"app\"\n{frontend_extra}\n[[backend]]\nname = \"app\"\n{backend_extra}\n[[backend.server]]\nname = \"s1\"\naddress = \"127.0.0.1:9101\"\n"
        );
        let cfg = config::load_str(&text, std::path::Path::new("/tmp/lb.toml"))
            .expect("config")
            .config;
        Snapshot::build(cfg, 0).expect("snapshot")
    }

    fn rewrite(snap: &Snapshot, raw: &str) -> (String, Found) {
        let req = parse_request(raw.as_bytes(), &LIMITS).unwrap().unwrap();
        let fe = &snap.frontends[0];
        let rw = RequestRewrite {
            fe,
            be: Some(&snap.backends[0]),
            xff: "192.0.2.7",
            drop_underscore: true,
        };
        let mut out = Vec::new();
        let found = rw.head(raw.as_bytes(), &req, &mut out);
        finish_head(&mut out, None);
        (String::from_utf8(out).unwrap(), found)
    }

    #[test]
    fn hop_by_hop_and_owned_headers_are_replaced() {
        let snap = snapshot(r#"set_headers = { "X-Forwarded-Proto" = "https" }"#, "");
        let (out, _) = rewrite(
            &snap,
            "POST /a?b HTTP/1.1\r\nHost: m\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\nX-Forwarded-For: 6.6.6.6\r\nX_Forwarded_Proto: https\r\nX-Forwarded-Proto: gopher\r\nTransfer-Encoding: chunked\r\nKeep-Alive: 5\r\nX-Kept: yes\r\n\r\n",
        );
        assert_eq!(
            out,
            "POST /a?b HTTP/1.1\r\nHost: m\r\nX-Kept: yes\r\nTransfer-Encoding: chunked\r\nX-Forwarded-For: 192.0.2.7\r\nX-Forwarded-Proto: https\r\n\r\n"
        );
    }

    #[test]
    fn persistence_and_turn_cookies_never_reach_the_server() {
        let snap = snapshot("", "[backend.cookie]\nname = \"SERVERID\"");
        let (out, found) = rewrite(
            &snap,
            "GET / HTTP/1.1\r\nHost: m\r\nCookie: MoodleSession=abc; SERVERID=s1; engine_turn=t0\r\n\r\n",
        );
        assert_eq!(
            out,
            "GET / HTTP/1.1\r\nHost: m\r\nCookie: MoodleSession=abc\r\nX-Forwarded-For: 192.0.2.7\r\n\r\n"
        );
        assert_eq!(found.sticky.as_deref(), Some(&b"s1"[..]));
        assert_eq!(found.turn.as_deref(), Some(&b"t0"[..]));
        let (out, found) = rewrite(
            &snap,
            "GET / HTTP/1.1\r\nHost: m\r\nCookie: SERVERID=s1\r\n\r\n",
        );
        assert!(!out.contains("Cookie"), "{out}");
        assert_eq!(found.sticky.as_deref(), Some(&b"s1"[..]));
    }

    #[test]
    fn an_http10_request_gets_the_servers_host() {
        let snap = snapshot("", "");
        let raw = "GET / HTTP/1.0\r\n\r\n";
        let req = parse_request(raw.as_bytes(), &LIMITS).unwrap().unwrap();
        let rw = RequestRewrite {
            fe: &snap.frontends[0],
            be: None,
            xff: "192.0.2.7",
            drop_underscore: true,
        };
        let mut out = Vec::new();
        rw.head(raw.as_bytes(), &req, &mut out);
        finish_head(&mut out, Some("127.0.0.1:9101"));
        assert!(String::from_utf8(out)
            .unwrap()
            .ends_with("X-Forwarded-For: 192.0.2.7\r\nHost: 127.0.0.1:9101\r\n\r\n"));
    }

    #[test]
    fn redirect_locations_keep_the_target_and_drop_the_port() {
        let raw = "GET /login/index.php?x=1 HTTP/1.1\r\nHost: moodle.example.edu:8080\r\n\r\n";
        let req = parse_request(raw.as_bytes(), &LIMITS).unwrap().unwrap();
        assert_eq!(
            redirect_location(raw.as_bytes(), &req, ":8443").as_deref(),
            Some("https://moodle.example.edu:8443/login/index.php?x=1")
        );
        let raw = "GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n";
        let req = parse_request(raw.as_bytes(), &LIMITS).unwrap().unwrap();
        assert_eq!(
            redirect_location(raw.as_bytes(), &req, "").as_deref(),
            Some("https://[::1]/")
        );
    }
}
