//! The request properties: the parser agrees with the reference model, and what the engine
//! forwards for an accepted head is clean (CRLF only, one Host, never CL with TE, no CR,
//! LF or NUL in a name or value, hop-by-hop headers gone) and re-parses to the same
//! request.

use std::panic::{catch_unwind, AssertUnwindSafe};

use engine::http::head::parse_request;
use engine::http::{BodyLen, HeadLimits, RequestError as E, RequestHead};

use super::forward::{forwarded, forwarded_for, server_host, set_lines, PEER};
use super::req_model::{judge, Accepted, Verdict};
use super::{crlf_only, ows_trim, show, tchar, BIG};

macro_rules! ensure {
    ($c:expr, $($m:tt)*) => {
        if !$c {
            return Err(format!($($m)*));
        }
    };
}

/// Errors about syntax and size, which the engine may report before the head is complete.
fn early(e: E) -> bool {
    matches!(
        e,
        E::Malformed | E::BareLf | E::BadTarget | E::TargetTooLong | E::HeadTooLarge
    ) || e == E::TooManyHeaders
}

/// Known engine bugs that the main properties step around (each has an ignored test that
/// replays its `bug-*` corpus files with the step-around off).
#[derive(Debug, Clone, Copy)]
pub struct Known {
    /// `Connection: Host` makes the engine drop the client's Host, so the server gets an
    /// HTTP/1.1 request without one. Tolerated: the missing Host line is put back before
    /// the other checks run on the forwarded head.
    pub host_named_by_connection: bool,
}

/// What the engine did before the fix (kept to show the check catches it).
#[allow(dead_code)]
pub const TOLERATE: Known = Known {
    host_named_by_connection: true,
};

pub const STRICT: Known = Known {
    host_named_by_connection: false,
};

/// The whole request property for one input. `shape`: which frontend forwards it.
pub fn check_request(
    buf: &[u8],
    limits: &HeadLimits,
    shape: usize,
    known: Known,
) -> Result<(), String> {
    let got = catch_unwind(AssertUnwindSafe(|| parse_request(buf, limits)))
        .map_err(|_| "parse_request panicked".to_string())?;
    let want = judge(buf, limits);
    match (got, want) {
        (Ok(None), Verdict::Incomplete { too_large: false }) => Ok(()),
        (Err(e), Verdict::Incomplete { .. }) if early(e) => Ok(()),
        (Err(e), Verdict::Refuse(why)) if why.contains(&e) => Ok(()),
        (Ok(Some(h)), Verdict::Accept(acc)) => {
            same_as_model(buf, &h, &acc)?;
            check_forward(buf, &h, &acc, shape, known)
        }
        (got, want) => Err(format!(
            "parser and model disagree: parser {:?}, model {want:?}",
            got.map(|o| o.map(|h| (h.head_len, h.body)))
        )),
    }
}

fn same_as_model(buf: &[u8], h: &RequestHead, acc: &Accepted) -> Result<(), String> {
    ensure!(
        h.head_len == acc.head_len,
        "head_len {} but the head ends at {}",
        h.head_len,
        acc.head_len
    );
    ensure!(
        h.body == acc.body,
        "body {:?}, model {:?}",
        h.body,
        acc.body
    );
    ensure!(h.minor == acc.minor, "minor {}", h.minor);
    ensure!(
        h.client_keep_alive() == acc.keep_alive,
        "keep-alive {}",
        h.client_keep_alive()
    );
    ensure!(h.method_str(buf) == acc.method, "method");
    ensure!(h.target(buf) == acc.target, "target");
    ensure!(h.host(buf).map(<[u8]>::to_vec) == acc.host, "host");
    Ok(())
}

/// The input's fields as (name, value without OWS), from an accepted head.
fn input_fields(head: &[u8]) -> Vec<(&[u8], &[u8])> {
    let mut lines = head
        .split(|&c| c == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let mut out = Vec::new();
    for l in lines.by_ref() {
        if !l.is_empty() {
            break; // the request line
        }
    }
    for l in lines.take_while(|l| !l.is_empty()) {
        let colon = l
            .iter()
            .position(|&c| c == b':')
            .expect("accepted field has a colon");
        out.push((&l[..colon], ows_trim(&l[colon + 1..])));
    }
    out
}

fn lc(s: &[u8]) -> Vec<u8> {
    s.to_ascii_lowercase()
}

/// Header names a proxy must not forward as received (RFC 9110 §7.6.1, README).
const HOP: [&[u8]; 9] = [
    b"connection",
    b"keep-alive",
    b"te",
    b"trailer",
    b"proxy-connection",
    b"upgrade",
    b"transfer-encoding",
    b"content-length",
    b"host",
];

/// Which input fields the engine must pass on unchanged, in order.
fn end_to_end<'a>(
    fields: &[(&'a [u8], &'a [u8])],
    shape: usize,
    set_names: &[Vec<u8>],
) -> Vec<(&'a [u8], &'a [u8])> {
    let named: Vec<Vec<u8>> = fields
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(b"connection"))
        .flat_map(|(_, v)| v.split(|&c| c == b','))
        .map(|t| lc(ows_trim(t)))
        .collect();
    fields
        .iter()
        .filter(|(n, v)| {
            let n = lc(n);
            let not_passed = HOP.contains(&n.as_slice())
                || named.contains(&n)
                || n == b"cookie" // may be rewritten (persistence)
                || (n == b"expect" && v.eq_ignore_ascii_case(b"100-continue"))
                || n == b"x-forwarded-proto"
                || n == b"x-forwarded-ssl"
                || (n == b"x-forwarded-for" && forwarded_for(shape))
                || set_names.contains(&n)
                // drop_underscore_headers (on in every shape): PHP would read
                // X_Forwarded_Proto as the engine's own X-Forwarded-Proto
                || n.contains(&b'_');
            !not_passed
        })
        .copied()
        .collect()
}

/// Checks the head the engine forwards for an accepted request.
fn check_forward(
    buf: &[u8],
    h: &RequestHead,
    acc: &Accepted,
    shape: usize,
    known: Known,
) -> Result<(), String> {
    let mut out = forwarded(buf, h, shape);
    if known.host_named_by_connection {
        put_back_host(buf, acc, shape, &mut out);
    }
    let ctx = || format!("forwarded: {}", show(&out));
    ensure!(crlf_only(&out), "bare CR or LF; {}", ctx());
    ensure!(!out.contains(&0), "NUL; {}", ctx());
    let end = out.windows(4).position(|w| w == b"\r\n\r\n");
    ensure!(
        end == Some(out.len() - 4),
        "the head ends early or never; {}",
        ctx()
    );
    let text = &out[..out.len() - 4];
    // CRLF-only, so every LF ends a line and the CR before it is the line end's.
    let mut lines = text
        .split(|&c| c == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let rl = lines.next().unwrap_or_default();
    let want_rl = [&acc.method[..], b" ", &acc.target, b" HTTP/1.1"].concat();
    ensure!(
        rl == want_rl.as_slice(),
        "request line {}; {}",
        show(rl),
        ctx()
    );
    let mut got = Vec::new();
    for l in lines {
        let colon = l.iter().position(|&c| c == b':');
        let Some(colon) = colon else {
            return Err(format!("line without a colon: {}; {}", show(l), ctx()));
        };
        let (n, v) = (&l[..colon], &l[colon + 1..]);
        ensure!(
            !n.is_empty() && n.iter().all(|&c| tchar(c)),
            "bad name {}",
            show(n)
        );
        ensure!(v.starts_with(b" "), "value not after \": \" in {}", show(l));
        ensure!(
            !v.iter().any(|&c| c == b'\r' || c == b'\n' || c == 0),
            "CR, LF or NUL in a value: {}",
            show(l)
        );
        got.push((n, &v[1..]));
    }
    let r = framing_lines(&got, h, acc, shape).map_err(|e| format!("{e}; {}", ctx()));
    r?;
    let r = passed_on(buf, &got, shape).map_err(|e| format!("{e}; {}", ctx()));
    r?;
    reparse(&out, h, acc, shape).map_err(|e| format!("{e}; {}", ctx()))
}

fn count(got: &[(&[u8], &[u8])], name: &str) -> Vec<Vec<u8>> {
    got.iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
        .map(|(_, v)| v.to_vec())
        .collect()
}

/// One Host; the framing headers that the body needs and no others; no hop-by-hop header
/// except the engine's own Connection: Upgrade.
fn framing_lines(
    got: &[(&[u8], &[u8])],
    h: &RequestHead,
    acc: &Accepted,
    shape: usize,
) -> Result<(), String> {
    let hosts = count(got, "host");
    let want_host = acc
        .host
        .clone()
        .unwrap_or_else(|| server_host(shape).into_bytes());
    ensure!(
        hosts == vec![want_host.clone()],
        "Host lines {hosts:?}, want one {}",
        show(&want_host)
    );
    let cl = count(got, "content-length");
    let te = count(got, "transfer-encoding");
    ensure!(
        cl.is_empty() || te.is_empty(),
        "both Content-Length and Transfer-Encoding"
    );
    match acc.body {
        BodyLen::Length(n) => ensure!(
            cl == vec![n.to_string().into_bytes()] && te.is_empty(),
            "Content-Length lines {cl:?} for a body of {n}"
        ),
        BodyLen::Chunked => ensure!(
            te == vec![b"chunked".to_vec()] && cl.is_empty(),
            "Transfer-Encoding lines {te:?} for a chunked body"
        ),
        _ => ensure!(
            cl.is_empty() && te.is_empty(),
            "framing header without a body"
        ),
    }
    let upgrade = h.upgrade.is_some();
    for (n, v) in got {
        let n = lc(n);
        let ours = upgrade && ((n == b"connection" && *v == b"Upgrade") || n == b"upgrade");
        let framing = matches!(
            n.as_slice(),
            b"host" | b"content-length" | b"transfer-encoding"
        );
        ensure!(
            ours || framing || !HOP.contains(&n.as_slice()),
            "hop-by-hop {} forwarded",
            show(&n)
        );
    }
    let xff = count(got, "x-forwarded-for");
    if forwarded_for(shape) {
        ensure!(
            xff == vec![PEER.as_bytes().to_vec()],
            "X-Forwarded-For lines {xff:?}"
        );
    }
    Ok(())
}

/// Every end-to-end field the client sent is passed on unchanged and in order, and
/// nothing else appears but the engine's own lines.
fn passed_on(buf: &[u8], got: &[(&[u8], &[u8])], shape: usize) -> Result<(), String> {
    let set = set_lines(shape);
    let set_fields: Vec<(Vec<u8>, Vec<u8>)> = set
        .split(|&c| c == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| {
            let l = l.strip_suffix(b"\r").unwrap_or(l);
            let c = l.iter().position(|&c| c == b':').unwrap();
            (lc(&l[..c]), ows_trim(&l[c + 1..]).to_vec())
        })
        .collect();
    let set_names: Vec<Vec<u8>> = set_fields.iter().map(|(n, _)| n.clone()).collect();
    let fields = input_fields(buf);
    let want = end_to_end(&fields, shape, &set_names);
    let engine_own = |n: &[u8], v: &[u8]| {
        let n = lc(n);
        HOP.contains(&n.as_slice())
            || n == b"cookie"
            || (n == b"x-forwarded-for" && forwarded_for(shape) && v == PEER.as_bytes())
            || set_fields.iter().any(|(sn, sv)| *sn == n && sv == v)
    };
    let passed: Vec<(&[u8], &[u8])> = got
        .iter()
        .filter(|(n, v)| !engine_own(n, v) || want.iter().any(|w| w == &(*n, ows_trim(v))))
        .map(|(n, v)| (*n, ows_trim(v)))
        .collect();
    ensure!(
        passed == want,
        "end-to-end fields differ:\n got  {:?}\n want {:?}",
        passed
            .iter()
            .map(|(n, v)| show(&[n, &b": "[..], v].concat()))
            .collect::<Vec<_>>(),
        want.iter()
            .map(|(n, v)| show(&[n, &b": "[..], v].concat()))
            .collect::<Vec<_>>()
    );
    Ok(())
}

/// The forwarded head parses again to the same request, by the engine and by the model.
fn reparse(out: &[u8], h: &RequestHead, acc: &Accepted, shape: usize) -> Result<(), String> {
    let again = match parse_request(out, &BIG) {
        Ok(Some(r)) => r,
        other => {
            return Err(format!(
                "forwarded head does not re-parse: {:?}",
                other.err()
            ))
        }
    };
    ensure!(
        again.head_len == out.len(),
        "re-parsed head_len {}",
        again.head_len
    );
    ensure!(
        again.method_str(out) == acc.method.as_slice(),
        "method changed"
    );
    ensure!(again.target(out) == acc.target.as_slice(), "target changed");
    ensure!(
        again.body == h.body,
        "framing changed: {:?} -> {:?}",
        h.body,
        again.body
    );
    ensure!(again.minor == 1, "not HTTP/1.1");
    let host = acc
        .host
        .clone()
        .unwrap_or_else(|| server_host(shape).into_bytes());
    ensure!(again.host(out) == Some(host.as_slice()), "Host changed");
    match judge(out, &BIG) {
        Verdict::Accept(a) => ensure!(a.body == h.body, "model reads framing {:?}", a.body),
        v => return Err(format!("model refuses the forwarded head: {v:?}")),
    }
    Ok(())
}

/// The step-around for [`Known::host_named_by_connection`].
fn put_back_host(buf: &[u8], acc: &Accepted, shape: usize, out: &mut Vec<u8>) {
    let fields = input_fields(buf);
    let names_host = fields
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(b"connection"))
        .flat_map(|(_, v)| v.split(|&c| c == b','))
        .any(|t| ows_trim(t).eq_ignore_ascii_case(b"host"));
    let has_host = out
        .split(|&c| c == b'\n')
        .any(|l| l.len() > 5 && l[..5].eq_ignore_ascii_case(b"host:"));
    if names_host && !has_host {
        let host = acc
            .host
            .clone()
            .unwrap_or_else(|| server_host(shape).into_bytes());
        let at = out.iter().position(|&c| c == b'\n').map_or(0, |p| p + 1);
        let line = [&b"Host: "[..], &host, b"\r\n"].concat();
        out.splice(at..at, line);
    }
}
