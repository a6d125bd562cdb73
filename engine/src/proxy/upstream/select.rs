//! Selection glue: each server of a backend as [`crate::balance`] sees it (its published
//! state, its weight and slow share, this core's in-flight count, whether this request
//! already tried it, this core's avoidance after a failure, whether it is full), and the
//! pick among them.

use std::time::Instant;

use crate::balance::{self, Candidate, ServerState};
use crate::core::Worker;
use crate::ids::{BackendId, ServerId};
use crate::snapshot::{ServerStatus, Snapshot, States};

/// What a request has been through so far: the servers it tried.
pub type Tried = [ServerId];

/// Server `s` as selection sees it.
pub fn candidate(
    w: &Worker,
    snap: &Snapshot,
    states: &States,
    s: ServerId,
    tried: &Tried,
) -> Candidate {
    let srv = snap.server(s);
    let st = states.of(s).unwrap_or(ServerStatus {
        state: ServerState::Up,
        weight: srv.weight,
        share: 1000,
    });
    let c = w.counter_get(snap.generation, s);
    let avoid = c.avoid_until.is_some_and(|u| Instant::now() < u);
    // Panic (panic_below): a server DOWN by its checks still takes new clients.
    let state = if st.state == ServerState::Down && states.in_panic(srv.backend) {
        ServerState::Up
    } else {
        st.state
    };
    let full =
        srv.maxconn > 0 && srv.inflight.load(std::sync::atomic::Ordering::Relaxed) >= srv.maxconn;
    Candidate {
        state,
        // In thousandths: a slow server keeps `share` of its weight (control::live).
        weight: st.weight * st.share,
        backup: srv.backup,
        active: c.active,
        excluded: tried.contains(&s) || avoid,
        full,
    }
}

/// Server `s` as it would be if it were not full (a sticky request waits for its own).
pub fn candidate_ignoring_full(
    w: &Worker,
    snap: &Snapshot,
    states: &States,
    s: ServerId,
    tried: &Tried,
) -> Candidate {
    Candidate {
        full: false,
        ..candidate(w, snap, states, s, tried)
    }
}

/// Picks a server for a new client: a pure function of the states and this core's
/// balancing state.
pub fn select(
    w: &Worker,
    snap: &Snapshot,
    states: &States,
    b: BackendId,
    tried: &Tried,
) -> Option<ServerId> {
    let be = snap.backend(b);
    // On the stack for the usual few servers.
    let mut stack = [Candidate {
        state: ServerState::Down,
        weight: 0,
        backup: false,
        active: 0,
        excluded: true,
        full: false,
    }; 32];
    let mut heap: Vec<Candidate>;
    let cands: &mut [Candidate] = if be.count <= stack.len() {
        for (k, s) in be.servers().enumerate() {
            stack[k] = candidate(w, snap, states, s, tried);
        }
        &mut stack[..be.count]
    } else {
        heap = be
            .servers()
            .map(|s| candidate(w, snap, states, s, tried))
            .collect();
        &mut heap[..]
    };
    let pick = |cands: &[Candidate]| {
        let mut rr = w.rr.borrow_mut();
        let rr = &mut rr[b.index()];
        match be.balance {
            config::Balance::RoundRobin => balance::pick_roundrobin(cands, rr),
            config::Balance::LeastConn => balance::pick_leastconn(cands, rr),
        }
    };
    if let Some(k) = pick(cands) {
        return Some(be.at_rank(k));
    }
    // Every server was avoided after recent failures: try them anyway, except the ones
    // this request already tried.
    for (k, c) in cands.iter_mut().enumerate() {
        c.excluded = tried.contains(&be.at_rank(k));
    }
    pick(cands).map(|k| be.at_rank(k))
}

/// Whether a server of backend `b` could take the request if it were not full.
pub fn any_full(w: &Worker, snap: &Snapshot, states: &States, b: BackendId, tried: &Tried) -> bool {
    snap.backend(b).servers().any(|s| {
        let c = candidate_ignoring_full(w, snap, states, s, tried);
        c.state == ServerState::Up && c.weight > 0 && !c.excluded && snap.server(s).maxconn > 0
    })
}
