//! The timeouts and retries of `[defaults]`, which each frontend and backend takes over and
//! may override field by field.

use super::Ctx;
use crate::raw::{RawTimeouts, Scalar, S};
use crate::types::Timeouts;
use std::time::Duration;

impl Ctx<'_> {
    /// `base` with the fields `r` sets; `prefix` names the section in diagnostics.
    pub(super) fn timeouts(&mut self, r: &RawTimeouts, base: &Timeouts, prefix: &str) -> Timeouts {
        let mut t = *base;
        let fields: [(&Option<S<Scalar>>, &str, &mut Duration, &str); 6] = [
            (&r.timeout_connect, "timeout_connect", &mut t.connect, "5s"),
            (&r.timeout_client, "timeout_client", &mut t.client, "50s"),
            (&r.timeout_server, "timeout_server", &mut t.server, "50s"),
            (
                &r.timeout_http_request,
                "timeout_http_request",
                &mut t.http_request,
                "10s",
            ),
            (
                &r.timeout_keep_alive,
                "timeout_keep_alive",
                &mut t.keep_alive,
                "10s",
            ),
            (&r.timeout_queue, "timeout_queue", &mut t.queue, "30s"),
        ];
        for (v, key, slot, ex) in fields {
            if let Some(d) = v.as_ref().and_then(|v| self.duration(v, prefix, key, ex)) {
                *slot = d;
            }
        }
        if let Some(v) = &r.retries {
            if let Some(n) = self.int(
                v,
                prefix,
                "retries",
                0,
                100,
                "write retries = 3 (connect attempts after the first)",
            ) {
                t.retries = n as u32;
            }
        }
        t
    }
}
