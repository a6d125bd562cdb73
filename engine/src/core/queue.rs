//! Requests waiting on this core for a server slot (per-server `maxconn`), per backend,
//! in order of arrival. A sticky request waits for its own server and is not in the way
//! of the others.

use std::collections::VecDeque;

use super::Worker;
use crate::ids::{BackendId, ServerId};

/// A backend's waiting requests on one core: (ticket, the sticky server it waits for).
pub type Waiters = VecDeque<(u64, Option<ServerId>)>;

impl Worker {
    /// The first non-sticky waiter of a backend's queue on this core.
    pub fn queue_front(&self, be: BackendId) -> Option<u64> {
        self.queue
            .borrow()
            .get(be.index())
            .and_then(|q| q.iter().find(|(_, s)| s.is_none()).map(|(t, _)| *t))
    }

    /// Joins the queue of `be`; returns the ticket.
    pub fn queue_push(&self, be: BackendId, sticky: Option<ServerId>) -> u64 {
        let t = self.next_ticket.get();
        self.next_ticket.set(t + 1);
        if let Some(q) = self.queue.borrow_mut().get_mut(be.index()) {
            q.push_back((t, sticky));
        }
        if let Some(n) = self.queued.borrow_mut().get_mut(be.index()) {
            *n += 1;
        }
        if let Some(s) = sticky {
            if let Some(c) = self.counters.borrow_mut().get_mut(s.index()) {
                c.queued += 1;
            }
        }
        t
    }

    /// Leaves the queue (served, refused or timed out).
    pub fn queue_remove(&self, be: BackendId, ticket: u64, sticky: Option<ServerId>) {
        if let Some(q) = self.queue.borrow_mut().get_mut(be.index()) {
            q.retain(|(t, _)| *t != ticket);
        }
        if let Some(n) = self.queued.borrow_mut().get_mut(be.index()) {
            *n = n.saturating_sub(1);
        }
        if let Some(s) = sticky {
            if let Some(c) = self.counters.borrow_mut().get_mut(s.index()) {
                c.queued = c.queued.saturating_sub(1);
            }
        }
    }
}
