//! Cookie persistence, sans-io: finding the persistence cookie in a request, removing it
//! from what the server receives (indirect), the `prefix` mode on the application's own
//! cookie, and the Set-Cookie that the response carries.

use config::{Cookie, CookieMode, SameSite};

use crate::http::head::trim;

/// Iterates `name=value` pairs of a Cookie header value.
pub fn pairs(v: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    v.split(|&c| c == b';').filter_map(|p| {
        let p = trim(p);
        if p.is_empty() {
            return None;
        }
        let eq = p.iter().position(|&c| c == b'=')?;
        Some((trim(&p[..eq]), trim(&p[eq + 1..])))
    })
}

/// The value of cookie `name` in a Cookie header value.
pub fn find<'a>(v: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    pairs(v).find(|(n, _)| *n == name).map(|(_, v)| v)
}

/// What the request's cookie says about persistence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sticky {
    /// No cookie of ours.
    None,
    /// It names this server cookie value.
    Names(Vec<u8>),
}

/// Rewrites one Cookie header value for the server: in insert+indirect mode our cookie is
/// removed; in prefix mode the `<server>~` prefix of the application's cookie is removed.
/// Returns the server cookie value found and the rewritten header (None: drop the
/// header, it held only our cookie).
pub fn rewrite_request_cookie(
    v: &[u8],
    c: &Cookie,
    app_cookie: &str,
) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
    let mut found = None;
    let mut out: Vec<u8> = Vec::with_capacity(v.len());
    let mut changed = false;
    for (n, val) in pairs(v) {
        match c.mode {
            CookieMode::Insert if n == c.name.as_bytes() => {
                if found.is_none() {
                    found = Some(val.to_vec());
                }
                if c.indirect {
                    changed = true;
                    continue;
                }
            }
            CookieMode::Prefix
                if n == c.name.as_bytes() || (c.name.is_empty() && n == app_cookie.as_bytes()) =>
            {
                if let Some(p) = val.iter().position(|&x| x == b'~') {
                    if found.is_none() {
                        found = Some(val[..p].to_vec());
                    }
                    if !out.is_empty() {
                        out.extend_from_slice(b"; ");
                    }
                    out.extend_from_slice(n);
                    out.push(b'=');
                    out.extend_from_slice(&val[p + 1..]);
                    changed = true;
                    continue;
                }
            }
            _ => {}
        }
        if !out.is_empty() {
            out.extend_from_slice(b"; ");
        }
        out.extend_from_slice(n);
        out.push(b'=');
        out.extend_from_slice(val);
    }
    if !changed {
        return (found, Some(v.to_vec()));
    }
    (found, if out.is_empty() { None } else { Some(out) })
}

/// Renders `Set-Cookie: NAME=VALUE; Path=/` with the configured attributes.
pub fn set_cookie_line(c: &Cookie, value: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(b"Set-Cookie: ");
    out.extend_from_slice(c.name.as_bytes());
    out.push(b'=');
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"; Path=/");
    if let Some(d) = &c.domain {
        out.extend_from_slice(b"; Domain=");
        out.extend_from_slice(d.as_bytes());
    }
    if let Some(m) = c.maxlife {
        out.extend_from_slice(b"; Max-Age=");
        crate::http::push_u64(out, m.as_secs());
    }
    if c.httponly {
        out.extend_from_slice(b"; HttpOnly");
    }
    if c.secure {
        out.extend_from_slice(b"; Secure");
    }
    match c.samesite {
        Some(SameSite::Strict) => out.extend_from_slice(b"; SameSite=Strict"),
        Some(SameSite::Lax) => out.extend_from_slice(b"; SameSite=Lax"),
        Some(SameSite::None) => out.extend_from_slice(b"; SameSite=None"),
        None => {}
    }
    out.extend_from_slice(b"\r\n");
}

/// The cookie name a Set-Cookie header value sets.
pub fn set_cookie_name(v: &[u8]) -> &[u8] {
    let end = v
        .iter()
        .position(|&c| c == b'=' || c == b';')
        .unwrap_or(v.len());
    trim(&v[..end])
}

/// Prefix mode: `NAME=value; attrs` becomes `NAME=<server>~value; attrs`.
pub fn prefix_set_cookie(v: &[u8], server_cookie: &str) -> Vec<u8> {
    let eq = match v.iter().position(|&c| c == b'=') {
        Some(p) => p,
        None => return v.to_vec(),
    };
    let mut out = Vec::with_capacity(v.len() + server_cookie.len() + 1);
    out.extend_from_slice(&v[..=eq]);
    let rest = &v[eq + 1..];
    let rest_trim = trim(rest);
    out.extend_from_slice(server_cookie.as_bytes());
    out.push(b'~');
    out.extend_from_slice(rest_trim);
    out
}

/// Why a persistence cookie was not honoured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Not a value we issued (unknown server, or a forged or damaged signature).
    Invalid,
    /// Past maxidle or maxlife.
    Expired,
}

/// A decoded persistence cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Valid {
    /// Index of the server within its backend.
    pub server: usize,
    /// When the cookie was first issued, and last refreshed (seconds since the epoch; 0
    /// when the cookie carries no dates).
    pub issued: u64,
    pub seen: u64,
}

/// Encodes and checks the persistence cookie's value for one backend.
///
/// - Plain (no key, no maxidle/maxlife): the server's `cookie`, as HAProxy does.
/// - Dated (maxidle or maxlife, no key): `<cookie>.<issued>.<seen>` (base 36).
/// - Signed (`key`): `<tag>.<issued>.<seen>.<mac>`, where `tag` is an HMAC of the server's
///   cookie (so the client cannot learn which server it has) and `mac` an HMAC over the
///   rest (so it cannot pick one, or change the dates).
pub struct Codec {
    key: Option<aws_lc_rs::hmac::Key>,
    maxidle: Option<u64>,
    maxlife: Option<u64>,
    /// Per server: the value's server part.
    tags: Vec<String>,
}

impl std::fmt::Debug for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Codec")
            .field("signed", &self.key.is_some())
            .field("tags", &self.tags.len())
            .finish()
    }
}

fn b36(mut n: u64) -> String {
    if n == 0 {
        return "0".into();
    }
    let mut v = Vec::new();
    while n > 0 {
        v.push(b"0123456789abcdefghijklmnopqrstuvwxyz"[(n % 36) as usize]);
        n /= 36;
    }
    v.reverse();
    String::from_utf8(v).unwrap_or_default()
}

fn hexs(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Codec {
    pub fn new(c: &Cookie, server_cookies: &[String]) -> Codec {
        let key = c
            .key
            .as_ref()
            .map(|k| aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, k.as_bytes()));
        let tags = server_cookies
            .iter()
            .map(|sc| match &key {
                Some(k) => {
                    hexs(&aws_lc_rs::hmac::sign(k, format!("server:{sc}").as_bytes()).as_ref()[..8])
                }
                None => sc.clone(),
            })
            .collect();
        Codec {
            key,
            maxidle: c.maxidle.map(|d| d.as_secs().max(1)),
            maxlife: c.maxlife.map(|d| d.as_secs().max(1)),
            tags,
        }
    }

    fn dated(&self) -> bool {
        self.key.is_some() || self.maxidle.is_some() || self.maxlife.is_some()
    }

    fn mac(&self, body: &str) -> String {
        match &self.key {
            Some(k) => hexs(&aws_lc_rs::hmac::sign(k, body.as_bytes()).as_ref()[..8]),
            None => String::new(),
        }
    }

    /// The value for server `server` (index within the backend).
    pub fn encode(&self, server: usize, issued: u64, now: u64) -> String {
        let tag = &self.tags[server];
        if !self.dated() {
            return tag.clone();
        }
        let body = format!("{tag}.{}.{}", b36(issued), b36(now));
        if self.key.is_some() {
            let mac = self.mac(&body);
            format!("{body}.{mac}")
        } else {
            body
        }
    }

    /// Checks a value from a client.
    pub fn decode(&self, v: &[u8], now: u64) -> Result<Valid, Refused> {
        let v = std::str::from_utf8(v).map_err(|_| Refused::Invalid)?;
        if !self.dated() {
            return self
                .tags
                .iter()
                .position(|t| t == v)
                .map(|server| Valid {
                    server,
                    issued: 0,
                    seen: 0,
                })
                .ok_or(Refused::Invalid);
        }
        let parts: Vec<&str> = v.split('.').collect();
        let (tag, issued, seen) = match (self.key.is_some(), parts.as_slice()) {
            (true, [tag, i, s, mac]) => {
                let body = format!("{tag}.{i}.{s}");
                let want = self.mac(&body);
                // Constant-time comparison of the MACs.
                if want.len() != mac.len()
                    || want
                        .bytes()
                        .zip(mac.bytes())
                        .fold(0u8, |a, (x, y)| a | (x ^ y))
                        != 0
                {
                    return Err(Refused::Invalid);
                }
                (*tag, *i, *s)
            }
            (false, [tag, i, s]) => (*tag, *i, *s),
            _ => return Err(Refused::Invalid),
        };
        let issued = u64::from_str_radix(issued, 36).map_err(|_| Refused::Invalid)?;
        let seen = u64::from_str_radix(seen, 36).map_err(|_| Refused::Invalid)?;
        let server = self
            .tags
            .iter()
            .position(|t| t == tag)
            .ok_or(Refused::Invalid)?;
        if let Some(life) = self.maxlife {
            if now.saturating_sub(issued) > life {
                return Err(Refused::Expired);
            }
        }
        if let Some(idle) = self.maxidle {
            if now.saturating_sub(seen) > idle {
                return Err(Refused::Expired);
            }
        }
        Ok(Valid {
            server,
            issued,
            seen,
        })
    }

    /// Whether a valid dated cookie should be sent again with a fresh last-seen date.
    pub fn needs_refresh(&self, v: &Valid, now: u64) -> bool {
        match self.maxidle {
            Some(idle) => now.saturating_sub(v.seen) >= (idle / 4).max(1),
            None => false,
        }
    }
}

/// The waiting room's turn cookie: whoever was sent to the waiting room keeps its turn
/// over students who arrive after it.
pub const TURN_COOKIE: &str = "engine_turn";
/// How long a turn is kept (seconds).
pub const TURN_TTL: u64 = 600;

/// A turn value: `<first seen, base 36>.<mac>`, signed with the process's key.
pub fn turn_value(key: &aws_lc_rs::hmac::Key, since: u64) -> String {
    let body = b36(since);
    let mac = hexs(&aws_lc_rs::hmac::sign(key, format!("turn:{body}").as_bytes()).as_ref()[..8]);
    format!("{body}.{mac}")
}

/// When the turn began, if the value is ours and not older than [`TURN_TTL`].
pub fn turn_since(key: &aws_lc_rs::hmac::Key, v: &[u8], now: u64) -> Option<u64> {
    let v = std::str::from_utf8(v).ok()?;
    let (body, mac) = v.split_once('.')?;
    let want = hexs(&aws_lc_rs::hmac::sign(key, format!("turn:{body}").as_bytes()).as_ref()[..8]);
    if want.len() != mac.len()
        || want
            .bytes()
            .zip(mac.bytes())
            .fold(0u8, |a, (x, y)| a | (x ^ y))
            != 0
    {
        return None;
    }
    let since = u64::from_str_radix(body, 36).ok()?;
    (now.saturating_sub(since) <= TURN_TTL).then_some(since)
}

/// Removes cookie `name` from a Cookie header value; returns its value and the rest
/// (None when nothing is left).
pub fn take_cookie(v: &[u8], name: &[u8]) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
    let mut found = None;
    let mut out = Vec::with_capacity(v.len());
    for (n, val) in pairs(v) {
        if n == name {
            found.get_or_insert_with(|| val.to_vec());
            continue;
        }
        if !out.is_empty() {
            out.extend_from_slice(b"; ");
        }
        out.extend_from_slice(n);
        out.push(b'=');
        out.extend_from_slice(val);
    }
    (found, if out.is_empty() { None } else { Some(out) })
}

pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cookie(mode: CookieMode) -> Cookie {
        Cookie {
            name: if mode == CookieMode::Insert {
                "SERVERID".into()
            } else {
                "MoodleSession".into()
            },
            mode,
            indirect: true,
            nocache: true,
            httponly: true,
            secure: true,
            samesite: Some(SameSite::Lax),
            domain: None,
            maxidle: None,
            maxlife: None,
            key: None,
        }
    }

    #[test]
    fn finds_and_strips_insert_cookie() {
        let c = cookie(CookieMode::Insert);
        let (f, h) =
            rewrite_request_cookie(b"a=1; SERVERID=s2; MoodleSession=xyz", &c, "MoodleSession");
        assert_eq!(f.as_deref(), Some(&b"s2"[..]));
        assert_eq!(h.as_deref(), Some(&b"a=1; MoodleSession=xyz"[..]));
        let (f, h) = rewrite_request_cookie(b"SERVERID=s1", &c, "MoodleSession");
        assert_eq!(f.as_deref(), Some(&b"s1"[..]));
        assert_eq!(h, None);
        let (f, h) = rewrite_request_cookie(b"MoodleSession=abc", &c, "MoodleSession");
        assert_eq!(f, None);
        assert_eq!(h.as_deref(), Some(&b"MoodleSession=abc"[..]));
    }

    #[test]
    fn prefix_mode_round_trip() {
        let c = cookie(CookieMode::Prefix);
        let (f, h) = rewrite_request_cookie(b"MoodleSession=s3~abc; x=1", &c, "MoodleSession");
        assert_eq!(f.as_deref(), Some(&b"s3"[..]));
        assert_eq!(h.as_deref(), Some(&b"MoodleSession=abc; x=1"[..]));
        assert_eq!(
            prefix_set_cookie(b"MoodleSession=abc; path=/; HttpOnly", "s3"),
            b"MoodleSession=s3~abc; path=/; HttpOnly"
        );
    }

    #[test]
    fn plain_codec_is_the_server_cookie() {
        let c = cookie(CookieMode::Insert);
        let k = Codec::new(&c, &["s1".into(), "s2".into()]);
        assert_eq!(k.encode(1, 0, 100), "s2");
        assert_eq!(k.decode(b"s2", 100).map(|v| v.server), Ok(1));
        assert_eq!(k.decode(b"s9", 100), Err(Refused::Invalid));
    }

    #[test]
    fn signed_codec_hides_and_protects() {
        let mut c = cookie(CookieMode::Insert);
        c.key = Some("a secret of sixteen+ chars".into());
        c.maxidle = Some(std::time::Duration::from_secs(600));
        c.maxlife = Some(std::time::Duration::from_secs(3600));
        let k = Codec::new(&c, &["s1".into(), "s2".into()]);
        let v = k.encode(0, 1000, 1000);
        assert!(!v.contains("s1"), "{v}");
        assert_eq!(k.decode(v.as_bytes(), 1100).map(|v| v.server), Ok(0));
        // Another server's tag with this MAC: refused.
        let other = k.encode(1, 1000, 1000);
        let forged = format!(
            "{}.{}",
            other.split('.').next().unwrap(),
            v.split_once('.').unwrap().1
        );
        assert_eq!(k.decode(forged.as_bytes(), 1100), Err(Refused::Invalid));
        // Tampered dates: refused.
        let mut parts: Vec<String> = v.split('.').map(String::from).collect();
        parts[2] = "zz".into();
        assert_eq!(
            k.decode(parts.join(".").as_bytes(), 1100),
            Err(Refused::Invalid)
        );
        // Idle and life.
        assert_eq!(k.decode(v.as_bytes(), 1000 + 601), Err(Refused::Expired));
        let old = k.encode(0, 1000, 4500);
        assert_eq!(k.decode(old.as_bytes(), 4700), Err(Refused::Expired));
        // A key the engine does not have.
        let mut c2 = c.clone();
        c2.key = Some("another secret of 16+ chars".into());
        let k2 = Codec::new(&c2, &["s1".into(), "s2".into()]);
        assert_eq!(k2.decode(v.as_bytes(), 1100), Err(Refused::Invalid));
    }

    #[test]
    fn turn_cookie() {
        let k = aws_lc_rs::hmac::Key::new(
            aws_lc_rs::hmac::HMAC_SHA256,
            b"0123456789abcdef0123456789abcdef",
        );
        let v = turn_value(&k, 1000);
        assert_eq!(turn_since(&k, v.as_bytes(), 1100), Some(1000));
        assert_eq!(turn_since(&k, v.as_bytes(), 1000 + TURN_TTL + 1), None);
        assert_eq!(turn_since(&k, b"rs.0000000000000000", 1100), None);
        let (t, rest) = take_cookie(b"a=1; engine_turn=xyz; b=2", b"engine_turn");
        assert_eq!(t.as_deref(), Some(&b"xyz"[..]));
        assert_eq!(rest.as_deref(), Some(&b"a=1; b=2"[..]));
    }

    #[test]
    fn set_cookie_attributes() {
        let c = cookie(CookieMode::Insert);
        let mut out = Vec::new();
        set_cookie_line(&c, "s1", &mut out);
        assert_eq!(
            out,
            b"Set-Cookie: SERVERID=s1; Path=/; HttpOnly; Secure; SameSite=Lax\r\n"
        );
        assert_eq!(set_cookie_name(b"SERVERID=x; Path=/"), b"SERVERID");
    }
}
