//! `[backend.check]`: the health check's request (method, uri, host), what passes
//! (expect_status, expect_string), its timing (interval, rise, fall, timeout), the errors
//! the cores observe, slowstart and live traffic; and its lints (no host, a string
//! expected of a redirect or an error page, a timeout longer than the interval).

use super::{fld, is_token, Ctx};
use crate::duration::fmt_duration;
use crate::raw::{RawCheck, Scalar, S};
use crate::types::{Check, StatusRange};
use std::time::Duration;

pub(super) fn validate_check(c: &S<RawCheck>, label: &str, cx: &mut Ctx) -> Option<Check> {
    let rc = c.get_ref();
    let p = format!("{label} check");
    let mut ok = true;
    let method = check_method(rc, &p, &mut ok, cx);
    let uri = check_uri(rc, &p, &mut ok, cx);
    let host = check_host(rc, &p, &mut ok, cx);
    let expect_status = expect_status(rc, &p, &mut ok, cx);
    let expect_string = rc.expect_string.as_ref().and_then(|v| {
        if v.get_ref().is_empty() {
            cx.err(&v.span(), fld(&p, "expect_string"), "is empty (every body contains the empty string)", "write a word the healthy page contains, e.g. expect_string = \"Moodle\", or leave it out");
            ok = false;
            None
        } else {
            Some(v.get_ref().clone())
        }
    });
    let timing = check_timing(rc, &p, &mut ok, cx);
    lint_check(c, &p, expect_string.is_some(), expect_status, cx);
    let observe_errors = rc.observe_errors.as_ref().map_or(Some(10), |v| {
        cx.int(v, &p, "observe_errors", 0, 100_000, "write observe_errors = 10 (failures seen by the cores within 10s that take a server DOWN; 0 turns it off)")
    });
    ok &= observe_errors.is_some();
    let slowstart = match &rc.slowstart {
        None => None,
        Some(v) => match cx.duration(v, &p, "slowstart", "30s") {
            Some(d) => Some(d),
            None => {
                ok = false;
                None
            }
        },
    };
    ok.then_some(Check {
        method,
        uri,
        host,
        expect_status,
        expect_string,
        interval: timing.interval,
        rise: timing.rise,
        fall: timing.fall,
        timeout: timing.timeout,
        observe_errors: observe_errors.unwrap_or(10) as u32,
        slowstart,
        live_traffic: rc.live_traffic.as_ref().is_none_or(|v| *v.get_ref()),
    })
}

fn check_method(rc: &RawCheck, p: &str, ok: &mut bool, cx: &mut Ctx) -> String {
    let Some(m) = &rc.method else {
        return "GET".to_owned();
    };
    let s = m.get_ref();
    if !is_token(s) {
        cx.err(
            &m.span(),
            fld(p, "method"),
            format!("\"{s}\" is not an HTTP method"),
            "write method = \"GET\" (or \"HEAD\")",
        );
        *ok = false;
    } else if s.chars().any(|c| c.is_ascii_lowercase()) {
        cx.err(
            &m.span(),
            fld(p, "method"),
            format!("\"{s}\": HTTP methods are case-sensitive, the server would not know it"),
            format!("write method = \"{}\"", s.to_ascii_uppercase()),
        );
        *ok = false;
    }
    s.clone()
}

fn check_uri(rc: &RawCheck, p: &str, ok: &mut bool, cx: &mut Ctx) -> String {
    let Some(u) = &rc.uri else {
        return "/".to_owned();
    };
    let s = u.get_ref();
    if !s.starts_with('/') {
        let fix = if let Some(rest) = s
            .strip_prefix("http://")
            .or_else(|| s.strip_prefix("https://"))
        {
            let path = rest.find('/').map_or("/", |i| &rest[i..]);
            format!("write uri = \"{path}\" and the host name in host = \"...\"")
        } else {
            format!("write uri = \"/{s}\"")
        };
        cx.err(
            &u.span(),
            fld(p, "uri"),
            format!("\"{s}\" does not start with \"/\""),
            fix,
        );
        *ok = false;
    } else if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        cx.err(
            &u.span(),
            fld(p, "uri"),
            format!("\"{s}\" contains a space or a control character"),
            "write spaces as %20",
        );
        *ok = false;
    }
    s.clone()
}

fn check_host(rc: &RawCheck, p: &str, ok: &mut bool, cx: &mut Ctx) -> Option<String> {
    let h = rc.host.as_ref()?;
    let s = h.get_ref();
    if s.is_empty()
        || s.chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '/')
    {
        let clean = s
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap_or("")
            .trim()
            .to_owned();
        let fix = if clean.is_empty() {
            "write host = \"moodle.example.edu\"".to_owned()
        } else {
            format!("write host = \"{clean}\" (a host name, no scheme or path)")
        };
        cx.err(
            &h.span(),
            fld(p, "host"),
            format!("\"{s}\" is not a host name"),
            fix,
        );
        *ok = false;
        None
    } else {
        Some(s.clone())
    }
}

fn parse_status_range(s: &str) -> Option<StatusRange> {
    let (lo, hi) = match s.split_once('-') {
        Some((a, b)) => (a.trim().parse::<u16>().ok()?, b.trim().parse::<u16>().ok()?),
        None => {
            let v = s.trim().parse::<u16>().ok()?;
            (v, v)
        }
    };
    ((100..=599).contains(&lo) && (100..=599).contains(&hi) && lo <= hi)
        .then_some(StatusRange { lo, hi })
}

/// `expect_status`: a status or a range of them, as a string or an integer (200-399 unless
/// set).
fn expect_status(rc: &RawCheck, p: &str, ok: &mut bool, cx: &mut Ctx) -> StatusRange {
    let Some(v) = &rc.expect_status else {
        return StatusRange { lo: 200, hi: 399 };
    };
    let parsed = match v.get_ref() {
        Scalar::Str(s) => parse_status_range(s),
        Scalar::Int(n) => u16::try_from(*n)
            .ok()
            .and_then(|n| parse_status_range(&n.to_string())),
        _ => None,
    };
    if let Some(r) = parsed {
        return r;
    }
    let shown = match v.get_ref() {
        Scalar::Str(s) => format!("\"{s}\""),
        Scalar::Int(n) => n.to_string(),
        Scalar::Float(f) => f.to_string(),
        Scalar::Bool(b) => b.to_string(),
        Scalar::Other(w) => (*w).to_owned(),
    };
    cx.err(
        &v.span(),
        fld(p, "expect_status"),
        format!("{shown} is not a status or a range of statuses (100 to 599)"),
        "write expect_status = \"200\" or a range such as \"200-399\"",
    );
    *ok = false;
    StatusRange { lo: 200, hi: 399 }
}

/// When the checks run and how many in a row change a server's state.
struct Timing {
    interval: Duration,
    rise: u32,
    fall: u32,
    timeout: Duration,
}

/// `interval`, `rise`, `fall` and `timeout` (the interval unless set; a warning when
/// longer).
fn check_timing(rc: &RawCheck, p: &str, ok: &mut bool, cx: &mut Ctx) -> Timing {
    let interval = match &rc.interval {
        None => Duration::from_secs(2),
        Some(v) => cx.duration(v, p, "interval", "2s").unwrap_or_else(|| {
            *ok = false;
            Duration::from_secs(2)
        }),
    };
    let rise = rc.rise.as_ref().map_or(Some(2), |v| {
        cx.int(
            v,
            p,
            "rise",
            1,
            i64::from(u32::MAX),
            "write rise = 2 (passed checks in a row to go UP)",
        )
    });
    let fall = rc.fall.as_ref().map_or(Some(3), |v| {
        cx.int(
            v,
            p,
            "fall",
            1,
            i64::from(u32::MAX),
            "write fall = 3 (failed checks in a row to go DOWN)",
        )
    });
    *ok &= rise.is_some() && fall.is_some();
    let timeout = match &rc.timeout {
        None => interval,
        Some(v) => match cx.duration(v, p, "timeout", "2s") {
            Some(t) => {
                if t > interval {
                    cx.warn(
                        &v.span(),
                        fld(p, "timeout"),
                        format!("timeout ({}) is longer than interval ({}): a slow check overlaps the next one", fmt_duration(t), fmt_duration(interval)),
                        format!("write timeout = \"{}\" or less, or raise interval", fmt_duration(interval)),
                    );
                }
                t
            }
            None => {
                *ok = false;
                interval
            }
        },
    };
    Timing {
        interval,
        rise: rise.unwrap_or(2) as u32,
        fall: fall.unwrap_or(3) as u32,
        timeout,
    }
}

/// The warnings: no `host` (Moodle may redirect the probe), and an `expect_string` with
/// an `expect_status` that lets a redirect or an error page pass.
fn lint_check(
    c: &S<RawCheck>,
    p: &str,
    expects_string: bool,
    expect_status: StatusRange,
    cx: &mut Ctx,
) {
    let rc = c.get_ref();
    let head = c.span();
    if rc.host.is_none() {
        cx.warn(
            &head,
            p.to_owned(),
            "the check has no `host`: it sends the server's address as Host, and Moodle redirects requests whose host is not its wwwroot, so the probe may see a redirect instead of the page",
            "write host = \"moodle.example.edu\" (the host name of Moodle's $CFG->wwwroot)",
        );
    }
    if expects_string
        && (expect_status.hi >= 400 || (expect_status.lo <= 399 && expect_status.hi >= 300))
    {
        let span = rc.expect_status.as_ref().map_or_else(
            || rc.expect_string.as_ref().map_or(head.clone(), |s| s.span()),
            |s| s.span(),
        );
        cx.warn(
            &span,
            fld(p, "expect_status"),
            format!(
                "expect_string with expect_status \"{}\": a redirect to the login page or an error page can still contain the string, so a broken server may pass",
                if expect_status.lo == expect_status.hi { expect_status.lo.to_string() } else { format!("{}-{}", expect_status.lo, expect_status.hi) }
            ),
            "write expect_status = \"200\"",
        );
    }
}
