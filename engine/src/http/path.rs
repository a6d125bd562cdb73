//! Request paths, sans-io: the normalised form (percent-encoded dots decoded, dot
//! segments resolved, RFC 3986 §5.2.4) that path rules such as `except_prefixes` match.

/// The path of an origin-form target (before `?`), normalised: `%2e` decoded, `.` and
/// `..` segments resolved. `None` when the path holds an encoded slash or backslash
/// (`%2f`, `%5c`) or a backslash: servers disagree on what those mean, so no path rule
/// may rely on them.
pub fn normalize(target: &[u8]) -> Option<Vec<u8>> {
    let path = target.split(|&c| c == b'?').next().unwrap_or(b"");
    let mut decoded = Vec::with_capacity(path.len());
    let mut i = 0;
    while i < path.len() {
        let c = path[i];
        if c == b'\\' {
            return None;
        }
        if c == b'%' {
            let code = path.get(i + 1..i + 3).map(|h| h.to_ascii_lowercase());
            match code.as_deref() {
                Some(b"2e") => {
                    decoded.push(b'.');
                    i += 3;
                    continue;
                }
                Some(b"2f") | Some(b"5c") => return None,
                _ => {}
            }
        }
        decoded.push(c);
        i += 1;
    }
    Some(remove_dot_segments(&decoded))
}

/// RFC 3986 §5.2.4 on an absolute path.
fn remove_dot_segments(path: &[u8]) -> Vec<u8> {
    let mut out: Vec<&[u8]> = Vec::new();
    let segs: Vec<&[u8]> = path.split(|&c| c == b'/').collect();
    let last = segs.len().saturating_sub(1);
    let mut trailing_slash = false;
    for (k, seg) in segs.iter().enumerate().skip(1) {
        match *seg {
            b"." => trailing_slash = k == last,
            b".." => {
                out.pop();
                trailing_slash = k == last;
            }
            s => {
                out.push(s);
                trailing_slash = false;
            }
        }
    }
    let mut r = Vec::with_capacity(path.len());
    for s in &out {
        r.push(b'/');
        r.extend_from_slice(s);
    }
    if trailing_slash || r.is_empty() {
        r.push(b'/');
    }
    r
}

/// Whether `target` is under one of `prefixes`, judged on its normalised path; a target
/// that normalisation changes (it has dot segments or encoded dots) is under none, so
/// that `/.well-known/acme-challenge/../../index.php` is never excepted.
pub fn under_prefix<'a>(target: &[u8], mut prefixes: impl Iterator<Item = &'a str>) -> bool {
    let path = target.split(|&c| c == b'?').next().unwrap_or(b"");
    match normalize(target) {
        Some(n) if n == path => prefixes.any(|p| n.starts_with(p.as_bytes())),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> Option<String> {
        normalize(s.as_bytes()).map(|v| String::from_utf8(v).unwrap())
    }

    #[test]
    fn dot_segments_and_encoded_dots_resolve() {
        assert_eq!(norm("/a/b/../c").as_deref(), Some("/a/c"));
        assert_eq!(norm("/a/./b/").as_deref(), Some("/a/b/"));
        assert_eq!(norm("/a/b/..").as_deref(), Some("/a/"));
        assert_eq!(norm("/../../x").as_deref(), Some("/x"));
        assert_eq!(norm("/a/%2e%2E/b").as_deref(), Some("/b"));
        assert_eq!(norm("/a/.%2e/b?x=/../").as_deref(), Some("/b"));
        assert_eq!(norm("/").as_deref(), Some("/"));
        assert_eq!(norm("/a%20b/c.php").as_deref(), Some("/a%20b/c.php"));
        assert_eq!(norm("/a/..%2f..%2fx"), None);
        assert_eq!(norm("/a\\..\\x"), None);
        assert_eq!(norm("/a/%5c"), None);
        assert_eq!(norm("/trailing%"), Some("/trailing%".into()));
    }

    #[test]
    fn prefixes_match_only_clean_paths() {
        let acme = ["/.well-known/acme-challenge/"];
        let under = |t: &str| under_prefix(t.as_bytes(), acme.iter().copied());
        assert!(under("/.well-known/acme-challenge/token-123"));
        assert!(under("/.well-known/acme-challenge/token?x=1"));
        assert!(!under("/.well-known/acme-challenge/../../index.php"));
        assert!(!under(
            "/.well-known/acme-challenge/%2e%2e/%2e%2e/index.php"
        ));
        assert!(!under("/.well-known/acme-challenge/./token"));
        assert!(!under("/.well-known/acme-challenge/..%2f..%2findex.php"));
        assert!(!under("/x/../.well-known/acme-challenge/token"));
        assert!(!under("/index.php"));
    }
}
