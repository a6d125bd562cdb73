//! `[[backend]]`: its name (unique among backends), `balance`, `app_cookie`, `max_queue`,
//! the waiting room, `slow_response`, `panic_below` and its timeouts; its cookie, check,
//! errorfile and servers are checked in `cookie`, `check`, `errorfile` and `server`.

use super::{check, check_name, cookie, errorfile, fld, is_token, section_label, server, Ctx};
use crate::raw::{RawBackend, S};
use crate::types::{Backend, Balance, CookieMode, LoadedFile, Timeouts};
use std::collections::HashMap;
use std::ops::Range;

/// The backends, validated first because frontends refer to them.
pub(super) struct BackendSet {
    pub backends: Vec<Backend>,
    /// Name to index, for the names that were not taken twice.
    pub index: HashMap<String, usize>,
    /// Where each backend is named (or starts), and its label.
    pub spans: Vec<(Range<usize>, String)>,
}

pub(super) fn validate_backends(
    raw: &[S<RawBackend>],
    defaults: &Timeouts,
    cx: &mut Ctx,
) -> BackendSet {
    let mut set = BackendSet {
        backends: Vec::new(),
        index: HashMap::new(),
        spans: Vec::new(),
    };
    for (i, b) in raw.iter().enumerate() {
        let label = section_label("backend", b.get_ref().name.as_ref(), i);
        let span = b
            .get_ref()
            .name
            .as_ref()
            .map_or_else(|| b.span(), |n| n.span());
        let be = validate_backend(b, &label, defaults, cx);
        if let Some(name) = b
            .get_ref()
            .name
            .as_ref()
            .map(|n| n.get_ref().clone())
            .filter(|n| !n.is_empty())
        {
            if let std::collections::hash_map::Entry::Vacant(e) = set.index.entry(name.clone()) {
                e.insert(i);
            } else {
                cx.err(
                    &span,
                    fld(&label, "name"),
                    format!("a second backend is named \"{name}\""),
                    "give each backend its own name",
                );
            }
        }
        set.backends.push(be);
        set.spans.push((span, label));
    }
    set
}

fn validate_backend(b: &S<RawBackend>, label: &str, defaults: &Timeouts, cx: &mut Ctx) -> Backend {
    let rb = b.get_ref();
    let head = rb.name.as_ref().map_or_else(|| b.span(), |n| n.span());
    let name = match &rb.name {
        None => {
            cx.err(
                &head,
                fld(label, "name"),
                "a backend needs a name",
                "write name = \"moodle\" (frontends refer to it by this name)",
            );
            String::new()
        }
        Some(n) => check_name(cx, n, label, "backend", "moodle").unwrap_or_default(),
    };
    let balance = validate_balance(rb, label, cx);
    let errorfile_503 = rb
        .errorfile_503
        .as_ref()
        .and_then(|v| errorfile::load_errorfile(v, label, cx));
    let app_cookie = validate_app_cookie(rb, label, cx);
    let cookie = rb
        .cookie
        .as_ref()
        .and_then(|c| cookie::validate_cookie(c, label, &app_cookie, cx));
    let max_queue = rb
        .max_queue
        .as_ref()
        .and_then(|v| {
            cx.int(
                v,
                label,
                "max_queue",
                0,
                i64::from(u32::MAX),
                "write max_queue = 1000 (requests waiting in this backend)",
            )
        })
        .map(|n| n as u32);
    let waiting_room = validate_waiting_room(rb, label, cx);
    let check = rb
        .check
        .as_ref()
        .and_then(|c| check::validate_check(c, label, cx));
    let prefix_mode = cookie
        .as_ref()
        .is_some_and(|c| c.mode == CookieMode::Prefix);
    let at = server::BackendAt {
        head: &head,
        label,
        name: &name,
        prefix_mode,
    };
    let servers = server::validate_servers(rb, &at, cx);
    let timeouts = cx.timeouts(&rb.timeouts(), defaults, label);
    let (slow_response, panic_below) = health_shares(rb, label, cx);
    Backend {
        name,
        balance,
        errorfile_503,
        cookie,
        app_cookie,
        max_queue,
        waiting_room,
        check,
        slow_response,
        panic_below,
        servers,
        timeouts,
    }
}

fn validate_balance(rb: &RawBackend, label: &str, cx: &mut Ctx) -> Balance {
    let Some(v) = rb.balance.as_ref() else {
        return Balance::RoundRobin;
    };
    match v.get_ref().as_str() {
        "roundrobin" => Balance::RoundRobin,
        "leastconn" => Balance::LeastConn,
        s => {
            let fix = match s.to_ascii_lowercase().replace(['_', '-', ' '], "").as_str() {
                "roundrobin" | "rr" => "write balance = \"roundrobin\"",
                "leastconn" | "leastconnections" | "leastconnection" => {
                    "write balance = \"leastconn\""
                }
                _ => "write balance = \"roundrobin\" or balance = \"leastconn\"",
            };
            cx.err(
                &v.span(),
                fld(label, "balance"),
                format!("\"{s}\" is not a balancing algorithm"),
                fix,
            );
            Balance::RoundRobin
        }
    }
}

/// The application's session cookie (MoodleSession unless set).
fn validate_app_cookie(rb: &RawBackend, label: &str, cx: &mut Ctx) -> String {
    match &rb.app_cookie {
        None => "MoodleSession".to_owned(),
        Some(v) => {
            if is_token(v.get_ref()) {
                v.get_ref().clone()
            } else {
                cx.err(
                    &v.span(),
                    fld(label, "app_cookie"),
                    format!("\"{}\" is not a cookie name", v.get_ref()),
                    "write app_cookie = \"MoodleSession\" (the application's session cookie)",
                );
                "MoodleSession".to_owned()
            }
        }
    }
}

/// The waiting room page, read whole; a warning when no `max_queue` would ever show it.
fn validate_waiting_room(rb: &RawBackend, label: &str, cx: &mut Ctx) -> Option<LoadedFile> {
    let waiting_room = rb.waiting_room.as_ref().and_then(|v| {
        let (path, bytes) = cx.read_file(
            v,
            (label, "waiting_room"),
            "an HTML page",
            crate::files::PAGE_LIMIT,
        )?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            cx.err(
                &v.span(),
                fld(label, "waiting_room"),
                format!("{} is empty", path.display()),
                "write an HTML page into it, or remove waiting_room to use the built-in page",
            );
            return None;
        }
        Some(LoadedFile { path, bytes })
    });
    if let (Some(w), None) = (&rb.waiting_room, &rb.max_queue) {
        cx.warn(
            &w.span(),
            fld(label, "waiting_room"),
            "without max_queue the waiting room is never shown",
            "add max_queue = 1000 (the number of waiting requests past which it is shown)",
        );
    }
    waiting_room
}

/// `slow_response` and `panic_below`: how the share of new clients follows the servers'
/// health.
fn health_shares(
    rb: &RawBackend,
    label: &str,
    cx: &mut Ctx,
) -> (Option<std::time::Duration>, Option<u32>) {
    let slow_response = rb
        .slow_response
        .as_ref()
        .and_then(|v| cx.duration(v, label, "slow_response", "2s"));
    let panic_below = rb.panic_below.as_ref().and_then(|v| {
        cx.int(
            v,
            label,
            "panic_below",
            1,
            100,
            "write panic_below = 50 (percent of the non-backup servers UP), or leave it out",
        )
        .map(|n| n as u32)
    });
    (slow_response, panic_below)
}
