//! The faults: their encoding in `Inner::fault`, closing the listener for
//! [`Fault::Refuse`] (and waiting for the rebind when it clears), and the connection-side
//! effects, reset and stall. Where in a request each fault applies is decided by the
//! connection loop (`Session::serve`); the mid-body cuts are made by the responses.

use super::listener::Session;
use super::{lock, wait_timeout, Fault, Inner};
use std::io::{self, Read};
use std::net::Shutdown;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use socket2::SockRef;

impl Fault {
    pub(super) fn to_u8(self) -> u8 {
        match self {
            Fault::None => 0,
            Fault::CloseMidBody => 1,
            Fault::Stall => 2,
            Fault::Refuse => 3,
            Fault::ResetAfterRequest => 4,
            Fault::StallMidBody => 5,
        }
    }
    pub(super) fn from_u8(v: u8) -> Fault {
        match v {
            1 => Fault::CloseMidBody,
            2 => Fault::Stall,
            3 => Fault::Refuse,
            4 => Fault::ResetAfterRequest,
            5 => Fault::StallMidBody,
            _ => Fault::None,
        }
    }
}

impl Inner {
    /// Switching to [`Fault::Refuse`]: closes the listener, waits (until `deadline`) for
    /// the accept loop to let it go, then closes the idle keep-alive connections.
    pub(super) fn start_refusing(&self, deadline: Instant) {
        let mut st = lock(&self.listen);
        if let Some(ctl) = st.ctl.take() {
            let _ = ctl.shutdown(Shutdown::Both);
        }
        while st.listening && !self.stopping() {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            st = wait_timeout(&self.listen_cv, st, deadline - now);
        }
        drop(st);
        // a dead server's idle keep-alive connections go away too
        for e in lock(&self.conns).values() {
            if !e.busy.load(Ordering::SeqCst) {
                let _ = e.stream.shutdown(Shutdown::Both);
            }
        }
    }

    /// Switching away from [`Fault::Refuse`]: wakes the accept loop and waits (until
    /// `deadline`) for it to have bound the port again.
    pub(super) fn stop_refusing(&self, deadline: Instant) {
        let mut st = lock(&self.listen);
        self.listen_cv.notify_all();
        while !st.listening && !self.stopping() {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            st = wait_timeout(&self.listen_cv, st, deadline - now);
        }
    }
}

impl Session<'_> {
    pub(super) fn reset(&mut self) {
        let _ = SockRef::from(&self.stream).set_linger(Some(Duration::ZERO));
        // dropping the stream closes it with a reset
    }

    pub(super) fn stall(&mut self) {
        // read and discard until the client closes or the origin stops
        while !self.inner.stopping() {
            match self.stream.read(&mut self.rbuf) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }
}
