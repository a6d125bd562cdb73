//! Per-server `maxconn`: a slot held for the life of a request on the server, all cores
//! together (one atomic per server), freed when the [`Slot`] is dropped.

use std::sync::atomic::{AtomicU32, Ordering};

use crate::ids::ServerId;
use crate::snapshot::Snapshot;

/// One of a server's `maxconn` slots (or none to hold, for a server without a limit).
pub struct Slot<'s> {
    inflight: Option<&'s AtomicU32>,
}

impl<'s> Slot<'s> {
    /// Takes a slot on `s` if one is free.
    pub fn take(snap: &'s Snapshot, s: ServerId) -> Option<Slot<'s>> {
        let srv = snap.server(s);
        if srv.maxconn == 0 {
            return Some(Slot { inflight: None });
        }
        let a = &srv.inflight;
        let mut cur = a.load(Ordering::Relaxed);
        loop {
            if cur >= srv.maxconn {
                return None;
            }
            match a.compare_exchange_weak(cur, cur + 1, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return Some(Slot { inflight: Some(a) }),
                Err(c) => cur = c,
            }
        }
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if let Some(a) = self.inflight {
            a.fetch_sub(1, Ordering::AcqRel);
        }
    }
}
