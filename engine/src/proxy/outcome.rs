//! How a request ends, in one place: the error type of the request path
//! ([`ProxyError`]: which side failed, in which phase, how, and the cause), and from it
//! the status the client gets and the two-letter termination state the log shows
//! ([`Term`], HAProxy's). The persistence cookie flags ([`CookieFlags`]) too.

use std::fmt;

/// Who caused the end (the termination state's first letter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// `C`: the client aborted or sent something refused; `c` when it timed out.
    Client,
    /// `S`: the server failed or answered wrongly; `s` when it timed out.
    Server,
    /// `P`: the engine itself stopped the request (a rule, a limit).
    Proxy,
    /// `R`: a resource of the engine ran out (descriptors, memory, source ports).
    Resource,
}

/// Where the request was (the termination state's second letter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// `R`: reading the request.
    Request,
    /// `Q`: waiting in the queue for a server slot.
    Queue,
    /// `C`: connecting to a server.
    Connect,
    /// `H`: waiting for or reading the response head.
    Headers,
    /// `D`: moving a body.
    Data,
}

/// What went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The peer went away (or a write to it failed).
    Aborted,
    /// The peer was silent past its timeout.
    TimedOut,
    /// What the peer sent breaks the protocol (a 400 from a client, a 502 from a server).
    Malformed,
    /// A request body past `max_body_bytes`.
    TooLarge,
    /// No server could take the request (down, refusing, full past the queue).
    Unavailable,
    /// The client's request was refused with this status before anything was sent.
    Refused(u16),
}

/// A failure on the request path.
#[derive(Debug, thiserror::Error)]
#[error("{side:?} {kind:?} in {phase:?}{}", cause.as_ref().map(|c| format!(": {c}")).unwrap_or_default())]
pub struct ProxyError {
    pub side: Side,
    pub phase: Phase,
    pub kind: Kind,
    pub cause: Option<std::io::Error>,
}

impl ProxyError {
    pub fn new(side: Side, phase: Phase, kind: Kind) -> ProxyError {
        ProxyError {
            side,
            phase,
            kind,
            cause: None,
        }
    }

    pub fn because(mut self, cause: std::io::Error) -> ProxyError {
        self.cause = Some(cause);
        self
    }

    pub fn client(phase: Phase, kind: Kind) -> ProxyError {
        ProxyError::new(Side::Client, phase, kind)
    }

    pub fn server(phase: Phase, kind: Kind) -> ProxyError {
        ProxyError::new(Side::Server, phase, kind)
    }

    /// The status the client gets, when it gets an answer.
    pub fn status(&self) -> u16 {
        match (self.side, self.kind) {
            (_, Kind::Refused(s)) => s,
            // Waited timeout_queue for a slot: no server could take it.
            (Side::Server, Kind::TimedOut) if self.phase == Phase::Queue => 503,
            (Side::Client, Kind::TimedOut) => 408,
            (Side::Client, Kind::TooLarge) => 413,
            (Side::Client, _) => 400,
            (Side::Server, Kind::TimedOut) => 504,
            (Side::Resource, _) => 503,
            (Side::Server | Side::Proxy, Kind::Unavailable) => 503,
            (Side::Server | Side::Proxy, _) => 502,
        }
    }

    /// The termination state the log shows.
    pub fn term(&self) -> Term {
        Term::Failed(self.side, self.kind == Kind::TimedOut, self.phase)
    }

    /// After this, the client connection is lingered on (a 4xx whose request body may
    /// still be arriving) rather than closed at once.
    pub fn lingers(&self) -> bool {
        self.side == Side::Client && matches!(self.kind, Kind::Malformed | Kind::TooLarge)
            || matches!(self.kind, Kind::Refused(s) if (400..500).contains(&s))
    }
}

/// The termination state: `--` for a normal end, else cause then phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Term {
    #[default]
    Normal,
    /// Who, whether by a timeout, where.
    Failed(Side, bool, Phase),
}

impl Term {
    pub fn as_bytes(self) -> [u8; 2] {
        match self {
            Term::Normal => *b"--",
            Term::Failed(side, timeout, phase) => {
                let c = match (side, timeout) {
                    (Side::Client, false) => b'C',
                    (Side::Client, true) => b'c',
                    (Side::Server, false) => b'S',
                    (Side::Server, true) => b's',
                    (Side::Proxy, _) => b'P',
                    (Side::Resource, _) => b'R',
                };
                let p = match phase {
                    Phase::Request => b'R',
                    Phase::Queue => b'Q',
                    Phase::Connect => b'C',
                    Phase::Headers => b'H',
                    Phase::Data => b'D',
                };
                [c, p]
            }
        }
    }
}

impl fmt::Display for Term {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.as_bytes();
        write!(f, "{}{}", b[0] as char, b[1] as char)
    }
}

/// What the request's persistence cookie was (the flags' first letter, HAProxy's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CookieSeen {
    /// `-`: no persistence on this backend.
    #[default]
    NotApplicable,
    /// `N`: none sent.
    None,
    /// `V`: valid, and its server took the request.
    Valid,
    /// `I`: invalid (unknown, forged).
    Invalid,
    /// `D`: its server is down or drained.
    Down,
    /// `E`: expired.
    Expired,
}

/// What the engine did with the persistence cookie (the flags' second letter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CookieDone {
    #[default]
    NotApplicable,
    /// `N`: nothing.
    Nothing,
    /// `I`: inserted a new one.
    Inserted,
    /// `U`: updated (its dates).
    Updated,
    /// `R`: rewrote the application's (prefix mode).
    Rewritten,
}

/// The persistence cookie flags of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CookieFlags {
    pub seen: CookieSeen,
    pub done: CookieDone,
}

impl CookieFlags {
    pub fn as_bytes(self) -> [u8; 2] {
        let a = match self.seen {
            CookieSeen::NotApplicable => b'-',
            CookieSeen::None => b'N',
            CookieSeen::Valid => b'V',
            CookieSeen::Invalid => b'I',
            CookieSeen::Down => b'D',
            CookieSeen::Expired => b'E',
        };
        let b = match self.done {
            CookieDone::NotApplicable => b'-',
            CookieDone::Nothing => b'N',
            CookieDone::Inserted => b'I',
            CookieDone::Updated => b'U',
            CookieDone::Rewritten => b'R',
        };
        [a, b]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_and_state_come_from_side_phase_and_kind() {
        let cases = [
            (
                ProxyError::server(Phase::Headers, Kind::TimedOut),
                504,
                "sH",
            ),
            (
                ProxyError::server(Phase::Headers, Kind::Malformed),
                502,
                "SH",
            ),
            (ProxyError::server(Phase::Data, Kind::Aborted), 502, "SD"),
            (
                ProxyError::server(Phase::Connect, Kind::Unavailable),
                503,
                "SC",
            ),
            (ProxyError::server(Phase::Queue, Kind::TimedOut), 503, "sQ"),
            (ProxyError::client(Phase::Data, Kind::TimedOut), 408, "cD"),
            (ProxyError::client(Phase::Request, Kind::Aborted), 400, "CR"),
            (ProxyError::client(Phase::Data, Kind::TooLarge), 413, "CD"),
            (
                ProxyError::new(Side::Proxy, Phase::Request, Kind::Refused(431)),
                431,
                "PR",
            ),
            (
                ProxyError::new(Side::Resource, Phase::Connect, Kind::Unavailable),
                503,
                "RC",
            ),
        ];
        for (e, status, term) in cases {
            assert_eq!(
                (e.status(), e.term().to_string().as_str()),
                (status, term),
                "{e}"
            );
        }
        assert_eq!(Term::Normal.to_string(), "--");
    }

    #[test]
    fn cookie_flags_as_haproxy_writes_them() {
        let f = CookieFlags {
            seen: CookieSeen::Valid,
            done: CookieDone::Updated,
        };
        assert_eq!(&f.as_bytes(), b"VU");
        assert_eq!(&CookieFlags::default().as_bytes(), b"--");
    }
}
