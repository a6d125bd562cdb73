//! `[limits]`: the bounds on a request's head and body, the idle pool to the servers,
//! and the HTTP/2 abuse limits.

use super::{fld, Ctx};
use crate::raw::RawLimits;
use crate::types::Limits;

pub(super) fn validate_limits(l: Option<&RawLimits>, cx: &mut Ctx) -> Limits {
    let mut out = Limits::default();
    let Some(l) = l else { return out };
    head_limits(l, &mut out, cx);
    body_and_pool_limits(l, &mut out, cx);
    h2_limits(l, &mut out, cx);
    out
}

/// The HTTP/2 abuse limits.
fn h2_limits(l: &RawLimits, out: &mut Limits, cx: &mut Ctx) {
    let p = "limits";
    let ints = [
        (
            &l.h2_max_concurrent_streams,
            "h2_max_concurrent_streams",
            1,
            10_000,
            "write h2_max_concurrent_streams = 100 (1 to 10000)",
        ),
        (
            &l.h2_max_header_list_size,
            "h2_max_header_list_size",
            1024,
            16 << 20,
            "write h2_max_header_list_size = 65536 (1024 to 16777216)",
        ),
        (
            &l.h2_max_resets_per_second,
            "h2_max_resets_per_second",
            1,
            1_000_000,
            "write h2_max_resets_per_second = 100",
        ),
        (
            &l.h2_max_control_frames_per_second,
            "h2_max_control_frames_per_second",
            1,
            1_000_000,
            "write h2_max_control_frames_per_second = 100",
        ),
        (
            &l.h2_max_continuation_frames,
            "h2_max_continuation_frames",
            1,
            10_000,
            "write h2_max_continuation_frames = 16",
        ),
    ];
    let mut got = [None; 5];
    for (i, (v, name, lo, hi, fix)) in ints.into_iter().enumerate() {
        if let Some(v) = v {
            got[i] = cx.int(v, p, name, lo, hi, fix).map(|n| n as u32);
        }
    }
    let [streams, list, resets, control, continuation] = got;
    out.h2_max_concurrent_streams = streams.unwrap_or(out.h2_max_concurrent_streams);
    out.h2_max_header_list_size = list.unwrap_or(out.h2_max_header_list_size);
    out.h2_max_resets_per_second = resets.unwrap_or(out.h2_max_resets_per_second);
    out.h2_max_control_frames_per_second = control.unwrap_or(out.h2_max_control_frames_per_second);
    out.h2_max_continuation_frames = continuation.unwrap_or(out.h2_max_continuation_frames);
    if let Some(v) = &l.h2_stream_idle_timeout {
        if let Some(d) = cx.duration(v, p, "h2_stream_idle_timeout", "30s") {
            out.h2_stream_idle_timeout = d;
        }
    }
}

/// `max_head_bytes`, `max_target_bytes` (within the head) and `max_headers`.
fn head_limits(l: &RawLimits, out: &mut Limits, cx: &mut Ctx) {
    let p = "limits";
    if let Some(v) = &l.max_head_bytes {
        if let Some(n) = cx.int(
            v,
            p,
            "max_head_bytes",
            1024,
            1 << 20,
            "write max_head_bytes = 16384 (1024 to 1048576)",
        ) {
            out.max_head_bytes = n as usize;
        }
    }
    if let Some(v) = &l.max_target_bytes {
        if let Some(n) = cx.int(
            v,
            p,
            "max_target_bytes",
            1,
            1 << 20,
            "write max_target_bytes = 8192",
        ) {
            if n as usize > out.max_head_bytes {
                cx.err(
                    &v.span(),
                    fld(p, "max_target_bytes"),
                    format!(
                        "{n} is more than max_head_bytes ({}): the target is part of the head",
                        out.max_head_bytes
                    ),
                    format!(
                        "write max_target_bytes = {} or less, or raise max_head_bytes",
                        out.max_head_bytes
                    ),
                );
            } else {
                out.max_target_bytes = n as usize;
            }
        }
    } else if out.max_target_bytes > out.max_head_bytes {
        out.max_target_bytes = out.max_head_bytes;
    }
    if let Some(v) = &l.max_headers {
        if let Some(n) = cx.int(
            v,
            p,
            "max_headers",
            8,
            1000,
            "write max_headers = 100 (8 to 1000)",
        ) {
            out.max_headers = n as usize;
        }
    }
}

/// `max_body_bytes`, the idle pool (`pool_max_idle_per_server`, `pool_idle_timeout`) and
/// `drop_underscore_headers`.
fn body_and_pool_limits(l: &RawLimits, out: &mut Limits, cx: &mut Ctx) {
    let p = "limits";
    if let Some(v) = &l.max_body_bytes {
        if let Some(n) = cx.int(
            v,
            p,
            "max_body_bytes",
            0,
            i64::MAX,
            "write max_body_bytes = 1073741824, or 0 for no limit",
        ) {
            out.max_body_bytes = n as u64;
        }
    }
    if let Some(v) = &l.pool_max_idle_per_server {
        if let Some(n) = cx.int(
            v,
            p,
            "pool_max_idle_per_server",
            0,
            i64::from(u32::MAX),
            "write pool_max_idle_per_server = 1000, or leave it out to keep as many as maxconn (0 disables pooling)",
        ) {
            out.pool_max_idle_per_server = n as usize;
        }
    }
    if let Some(v) = &l.pool_idle_timeout {
        if let Some(d) = cx.duration(v, p, "pool_idle_timeout", "30s") {
            out.pool_idle_timeout = d;
        }
    }
    if let Some(v) = &l.drop_underscore_headers {
        out.drop_underscore_headers = *v.get_ref();
    }
}
