//! RELAY: the bytes after the heads. The request body to the server ([`body::send_body`],
//! its chunked framing checked and its limit kept), the response head read and the
//! client's written ([`response`]), the response body to the client re-framed where
//! needed ([`body::relay_body`]), large bodies between plain TCP sockets spliced
//! ([`splice`]), and the tunnel after `101 Switching Protocols` ([`tunnel`]).

pub mod body;
pub mod response;
pub mod splice;
pub mod tunnel;

/// The read size for large bodies.
pub const LARGE_BUF: usize = 64 * 1024;
/// A Content-Length body with more than this still to come is large: spliced on plain
/// TCP, else moved in `LARGE_BUF` reads and writes.
pub const LARGE_BODY: u64 = 2 * crate::core::BUF_SIZE as u64;
