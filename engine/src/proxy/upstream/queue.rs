//! A server slot for the request: at once when one is free; else in order in this
//! core's queue, up to `timeout_queue` (a sticky request waits for its own server);
//! past the backend's `max_queue`, the waiting room (503 with a page that refreshes
//! itself, and a signed turn cookie that keeps the student's place).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::select::{any_full, candidate_ignoring_full, select, Tried};
use super::slots::Slot;
use crate::balance;
use crate::core::Worker;
use crate::ids::{BackendId, ServerId};
use crate::persist;
use crate::snapshot::Snapshot;

/// The outcome of waiting for a server slot.
pub enum Acquired<'s> {
    /// The server, its slot, and whether the request waited in the queue for it.
    Server(ServerId, Slot<'s>, bool),
    /// Past the backend's max_queue: the waiting room.
    WaitingRoom,
    /// Waited timeout_queue for a slot.
    QueueTimeout,
    /// No server can take the request at all.
    Nothing,
}

/// What the request asks of the queue.
pub struct Want<'a> {
    pub backend: BackendId,
    /// The server its persistence cookie names, when that one may take it.
    pub sticky: Option<ServerId>,
    pub tried: &'a Tried,
    pub timeout: Duration,
    /// A valid turn cookie (back from the waiting room): may queue past max_queue.
    pub has_turn: bool,
}

/// One try: a server with a free slot (`Ok`), or why not: `Err(true)` every server that
/// could take it is full (wait), `Err(false)` none can.
fn try_once<'s>(w: &Worker, snap: &'s Snapshot, want: &Want) -> Result<(ServerId, Slot<'s>), bool> {
    w.refresh();
    let states = w.states.borrow().clone();
    if let Some(s) = want.sticky {
        let c = candidate_ignoring_full(w, snap, &states, s, want.tried);
        if balance::sticky_ok(&c) {
            return Slot::take(snap, s).map(|slot| (s, slot)).ok_or(true);
        }
    }
    match select(w, snap, &states, want.backend, want.tried) {
        Some(s) => Slot::take(snap, s).map(|slot| (s, slot)).ok_or(true),
        None => Err(any_full(w, snap, &states, want.backend, want.tried)),
    }
}

/// Picks a server and takes a slot on it; when every server that could take the request
/// is at its maxconn, waits in this core's queue (in order) up to timeout_queue.
pub async fn acquire<'s>(w: &Worker, snap: &'s Snapshot, want: Want<'_>) -> Acquired<'s> {
    let b = want.backend;
    if w.queue_front(b).is_none() {
        match try_once(w, snap, &want) {
            Ok((s, slot)) => return Acquired::Server(s, slot, false),
            Err(false) => return Acquired::Nothing,
            Err(true) => {}
        }
    }
    // Wait in order.
    let be = snap.backend(b);
    if let Some(max) = be.cfg.max_queue {
        // Students back from the waiting room may queue past max_queue (up to twice it):
        // they keep their turn over newcomers.
        let limit = if want.has_turn {
            max.saturating_mul(2).max(1)
        } else {
            max
        };
        if be.queued.load(Ordering::Relaxed) >= limit {
            return Acquired::WaitingRoom;
        }
    }
    let ticket = w.queue_push(b, want.sticky);
    be.queued.fetch_add(1, Ordering::Relaxed);
    let start = Instant::now();
    let deadline = start + want.timeout;
    let out = loop {
        if w.queue_front(b) == Some(ticket) || want.sticky.is_some() {
            match try_once(w, snap, &want) {
                Ok((s, slot)) => break Acquired::Server(s, slot, true),
                Err(false) => break Acquired::Nothing,
                Err(true) => {}
            }
        }
        if Instant::now() >= deadline {
            break Acquired::QueueTimeout;
        }
        monoio::time::sleep(Duration::from_millis(2)).await;
    };
    w.queue_remove(b, ticket, want.sticky);
    be.queued.fetch_sub(1, Ordering::Relaxed);
    w.record_queue_wait(b, start.elapsed().as_micros() as u64);
    out
}

/// The waiting room (pre-rendered) with the turn cookie added after its status line.
pub fn waiting_room_response(room: &[u8], turn: &str) -> Vec<u8> {
    let mut resp = Vec::with_capacity(room.len() + 96);
    let line_end = room
        .iter()
        .position(|&c| c == b'\n')
        .map(|p| p + 1)
        .unwrap_or(0);
    resp.extend_from_slice(&room[..line_end]);
    resp.extend_from_slice(b"Set-Cookie: ");
    resp.extend_from_slice(persist::TURN_COOKIE.as_bytes());
    resp.push(b'=');
    resp.extend_from_slice(turn.as_bytes());
    resp.extend_from_slice(b"; Path=/; Max-Age=600; HttpOnly\r\n");
    resp.extend_from_slice(&room[line_end..]);
    resp
}
