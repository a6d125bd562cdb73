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
pub fn rewrite_request_cookie(v: &[u8], c: &Cookie, app_cookie: &str) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
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
            CookieMode::Prefix if n == c.name.as_bytes() || (c.name.is_empty() && n == app_cookie.as_bytes()) => {
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

/// The cookie whose name prefix mode rewrites: `cookie.name`, the application's cookie.
pub fn prefix_target<'a>(c: &'a Cookie, _app_cookie: &'a str) -> &'a str {
    &c.name
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
    let end = v.iter().position(|&c| c == b'=' || c == b';').unwrap_or(v.len());
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

#[cfg(test)]
mod tests {
    use super::*;

    fn cookie(mode: CookieMode) -> Cookie {
        Cookie {
            name: if mode == CookieMode::Insert { "SERVERID".into() } else { "MoodleSession".into() },
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
        let (f, h) = rewrite_request_cookie(b"a=1; SERVERID=s2; MoodleSession=xyz", &c, "MoodleSession");
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
        assert_eq!(prefix_set_cookie(b"MoodleSession=abc; path=/; HttpOnly", "s3"), b"MoodleSession=s3~abc; path=/; HttpOnly");
    }

    #[test]
    fn set_cookie_attributes() {
        let c = cookie(CookieMode::Insert);
        let mut out = Vec::new();
        set_cookie_line(&c, "s1", &mut out);
        assert_eq!(out, b"Set-Cookie: SERVERID=s1; Path=/; HttpOnly; Secure; SameSite=Lax\r\n");
        assert_eq!(set_cookie_name(b"SERVERID=x; Path=/"), b"SERVERID");
    }
}
