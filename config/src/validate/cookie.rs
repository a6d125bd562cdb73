//! `[backend.cookie]`: the persistence cookie (name, insert or prefix mode, its
//! attributes, the signing key), and its lints: the lockout lint for a cookie in insert
//! mode named like the application's session cookie, and the warning for prefix mode on
//! another cookie than the application's.

use super::{fld, is_token, Ctx, NOWHERE};
use crate::raw::{RawCookie, S};
use crate::types::{Cookie, CookieMode, SameSite};
use std::ops::Range;

/// The cookie, or `None` when any of its fields is wrong (each reported).
pub(super) fn validate_cookie(
    c: &S<RawCookie>,
    label: &str,
    app_cookie: &str,
    cx: &mut Ctx,
) -> Option<Cookie> {
    let rc = c.get_ref();
    let p = format!("{label} cookie");
    let mut ok = true;
    let name = cookie_name(c, &p, &mut ok, cx);
    let mode = cookie_mode(rc, &p, &mut ok, cx);
    let indirect = rc.indirect.as_ref().is_none_or(|v| *v.get_ref());
    let nocache = rc.nocache.as_ref().is_none_or(|v| *v.get_ref());
    let httponly = rc.httponly.as_ref().is_some_and(|v| *v.get_ref());
    let secure = rc.secure.as_ref().is_some_and(|v| *v.get_ref());
    let samesite = cookie_samesite(rc, &p, secure, &mut ok, cx);
    let domain = cookie_domain(rc, &p, &mut ok, cx);
    let maxidle = rc.maxidle.as_ref().and_then(|v| {
        let d = cx.duration(v, &p, "maxidle", "30m");
        ok &= d.is_some();
        d
    });
    let maxlife = rc.maxlife.as_ref().and_then(|v| {
        let d = cx.duration(v, &p, "maxlife", "8h");
        ok &= d.is_some();
        d
    });
    let key = cookie_key(rc, &p, &mut ok, cx);

    let name_span = rc.name.as_ref().map_or(c.span(), |n| n.span());
    lint_name(&name_span, &p, (&name, mode), app_cookie, cx);
    ok.then_some(Cookie {
        name,
        mode,
        indirect,
        nocache,
        httponly,
        secure,
        samesite,
        domain,
        maxidle,
        maxlife,
        key,
    })
}

fn cookie_name(c: &S<RawCookie>, p: &str, ok: &mut bool, cx: &mut Ctx) -> String {
    match &c.get_ref().name {
        None => {
            cx.err(
                &c.span(),
                fld(p, "name"),
                "the persistence cookie needs a name",
                "write name = \"SERVERID\"",
            );
            *ok = false;
            String::new()
        }
        Some(n) => {
            if !is_token(n.get_ref()) {
                cx.err(
                    &n.span(),
                    fld(p, "name"),
                    format!(
                        "\"{}\" is not a cookie name (letters, digits and !#$%&'*+-.^_`|~ only)",
                        n.get_ref()
                    ),
                    "write name = \"SERVERID\"",
                );
                *ok = false;
            }
            n.get_ref().clone()
        }
    }
}

fn cookie_mode(rc: &RawCookie, p: &str, ok: &mut bool, cx: &mut Ctx) -> CookieMode {
    match &rc.mode {
        None => CookieMode::Insert,
        Some(m) => match m.get_ref().as_str() {
            "insert" => CookieMode::Insert,
            "prefix" => CookieMode::Prefix,
            s => {
                cx.err(&m.span(), fld(p, "mode"), format!("\"{s}\" is not a cookie mode"), "write mode = \"insert\" (a cookie of our own) or mode = \"prefix\" (prefix the application's)");
                *ok = false;
                CookieMode::Insert
            }
        },
    }
}

/// `samesite`: Strict, Lax or None (which needs `secure`).
fn cookie_samesite(
    rc: &RawCookie,
    p: &str,
    secure: bool,
    ok: &mut bool,
    cx: &mut Ctx,
) -> Option<SameSite> {
    let samesite = rc
        .samesite
        .as_ref()
        .and_then(|v| match v.get_ref().as_str() {
            "Strict" => Some(SameSite::Strict),
            "Lax" => Some(SameSite::Lax),
            "None" => Some(SameSite::None),
            s => {
                let fix = match s.to_ascii_lowercase().as_str() {
                    "strict" => "write samesite = \"Strict\"".to_owned(),
                    "lax" => "write samesite = \"Lax\"".to_owned(),
                    "none" => "write samesite = \"None\" (with secure = true)".to_owned(),
                    _ => "write samesite = \"Strict\", \"Lax\" or \"None\", or leave it out"
                        .to_owned(),
                };
                cx.err(
                    &v.span(),
                    fld(p, "samesite"),
                    format!("\"{s}\" is not a SameSite value"),
                    fix,
                );
                *ok = false;
                None
            }
        });
    if samesite == Some(SameSite::None) && !secure {
        let span = rc.samesite.as_ref().map_or(NOWHERE, |v| v.span());
        cx.err(
            &span,
            fld(p, "samesite"),
            "SameSite=None without Secure: browsers drop such a cookie, so no client would stick",
            "add secure = true to this table (or choose samesite = \"Lax\")",
        );
        *ok = false;
    }
    samesite
}

fn cookie_domain(rc: &RawCookie, p: &str, ok: &mut bool, cx: &mut Ctx) -> Option<String> {
    rc.domain.as_ref().and_then(|v| {
        let d = v.get_ref();
        if d.is_empty() || !d.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-') || d.trim_start_matches('.').is_empty() {
            cx.err(&v.span(), fld(p, "domain"), format!("\"{d}\" is not a domain name"), "write domain = \"moodle.example.edu\", or leave it out (the cookie then belongs to the host that set it)");
            *ok = false;
            None
        } else {
            Some(d.clone())
        }
    })
}

/// The signing key: 16 characters at least.
fn cookie_key(rc: &RawCookie, p: &str, ok: &mut bool, cx: &mut Ctx) -> Option<String> {
    rc.key.as_ref().and_then(|v| {
        let k = v.get_ref();
        if k.chars().count() < 16 {
            cx.err(&v.span(), fld(p, "key"), format!("the key is {} characters long; at least 16 are needed to sign cookies safely", k.chars().count()), "write a random key of 16 characters or more, e.g. the output of `openssl rand -hex 16`");
            *ok = false;
            None
        } else {
            Some(k.clone())
        }
    })
}

/// The lints on the cookie's name against the application's session cookie: the lockout
/// in insert mode (Moodle would never see its session), the warning in prefix mode.
fn lint_name(
    name_span: &Range<usize>,
    p: &str,
    (name, mode): (&str, CookieMode),
    app_cookie: &str,
    cx: &mut Ctx,
) {
    if mode == CookieMode::Insert && !name.is_empty() && name.eq_ignore_ascii_case(app_cookie) {
        cx.lockout(
            name_span,
            fld(p, "name"),
            format!(
                "the persistence cookie is named \"{name}\", like the application's session cookie (app_cookie = \"{app_cookie}\"): in insert mode with indirect the engine removes this cookie from what Moodle receives and replaces Moodle's own Set-Cookie, so Moodle never sees its session and every login loops back to the login page"
            ),
            "write name = \"SERVERID\" (any name the application does not use), or keep the name and set mode = \"prefix\" to prefix the application's own cookie instead",
        );
    }
    if mode == CookieMode::Prefix && !name.is_empty() && name != app_cookie {
        cx.warn(
            name_span,
            fld(p, "name"),
            format!("prefix mode prefixes the application's own cookie, but \"{name}\" is not app_cookie (\"{app_cookie}\"): unless the application sets a cookie named \"{name}\", no client will stick"),
            format!("write name = \"{app_cookie}\", or set app_cookie to the application's session cookie, or use mode = \"insert\""),
        );
    }
}
