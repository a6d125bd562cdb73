//! Moodle-like test and demo origins, a raw HTTP/1.1 test client, deterministic test data
//! and self-signed certificates, shared by the end-to-end tests, the bench harness and
//! `engine demo`.
//!
//! Plain std throughout: blocking `std::net`, one thread per connection, `httparse` for
//! parsing. No async runtime.
//!
//! # Parts
//!
//! | item | what it is |
//! |---|---|
//! | [`origin::Origin`] | a Moodle-like HTTP/1.1 origin on a loopback (or given) address, with switchable [`origin::Fault`]s, health, counters and per-node sessions |
//! | [`client::Conn`], [`client::get`] | a small blocking HTTP/1.1 client with raw control: pipelining, 1xx, every framing, cut bodies |
//! | [`pattern`], [`pattern_at`], [`pattern_into`] | deterministic, non-repeating bytes for byte-exact transfer checks |
//! | [`certs::self_signed`], [`certs::write_combined`] | ECDSA P-256 self-signed certificates (rcgen), PEM |
//! | binary `origin` | `origin --name s1 --listen 127.0.0.1:9101 [--listen ...]`: runs origins until killed (the bench harness uses it) |
//!
//! The origin is a folder, `origin/`: `mod.rs` has the public API ([`origin::Origin`],
//! [`origin::Fault`]) and the state its threads share; `listener` (binding, accepting, the
//! connection loop), `request` (head and body parsing), `response` (writing answers),
//! `routes` (path and method to endpoint), `moodle` (login, dashboard, quiz, sessions),
//! `bodies` (echo, upload, download, slow, status, websocket) and `faults` (the faults'
//! effects) hold the rest.
//!
//! # Origin endpoints
//!
//! Every response carries `X-Node: <name>`. Connections are kept alive for HTTP/1.1 unless
//! the client sent `Connection: close`; HTTP/1.0 closes unless it asked for `keep-alive`.
//! Request bodies are read per `Content-Length` or chunked (trailers accepted); `HEAD` gets
//! the headers a `GET` would get, without the body. A request with a body and
//! `Expect: 100-continue` first gets `HTTP/1.1 100 Continue`. Bad input (unparsable head,
//! bad framing, bad chunk sizes, a head over 64 KiB, bad query values) is answered 400 and
//! the connection is closed; nothing from the network panics the origin.
//!
//! | request | answer |
//! |---|---|
//! | `GET /login/index.php` | 200 HTML login page containing "Moodle" and the node name, with a form; 503 (body without "Moodle") while unhealthy |
//! | `POST /login/index.php` body `username=NAME` | creates a session local to this node: 303 `Location: /my/`, `Set-Cookie: MoodleSession=<random id>; path=/; HttpOnly`; 400 without a username |
//! | `GET /my/` (also `/my`, `/my/index.php`) | with a `MoodleSession` this node issued: 200 `Dashboard of NAME on NODE`; otherwise 303 `Location: /login/index.php` |
//! | `POST /mod/quiz/processattempt.php` body `attempt=ID&answer=...` | valid session: records one submission for (user, attempt), 200 `submitted NAME attempt ID on NODE` (a repeat is answered 200 too, and counted); no session: 303 to `/login/index.php`; 400 without `attempt` |
//! | any method `/echo...` | 200 `text/plain`, body = the request head exactly as received (request line, headers, CRLFCRLF) followed by the decoded request body |
//! | `POST`/`PUT /upload` | reads the whole body, 200 `len=<n> sha256=<hex>` |
//! | `GET /download?size=N&mode=cl\|chunked\|close` | N bytes of [`pattern`], framed with Content-Length (default), chunked (chunks of varying sizes around 16 KiB, some tiny), or close-delimited (HTTP/1.1, neither header, `Connection: close`, then close) |
//! | `GET /slow?ms=N` | waits N ms (at most 10 min; cut short by stop), then 200 `slow N` |
//! | `GET /status?code=N` | status N (200..=599) with a short body, none for 204 and 304 |
//! | `GET /health` | 200 `OK Moodle NODE`, or 503 `unhealthy NODE` after `set_healthy(false)` |
//! | `GET /` | 200 small HTML page naming the node |
//! | `/ws` with `Upgrade: websocket` and `Connection: Upgrade` | 101 Switching Protocols, then echoes raw bytes back until EOF (no websocket framing); without the upgrade headers 426 |
//! | anything else | 404 |
//!
//! Faults ([`origin::Fault`], set with [`origin::Origin::set_fault`]) apply to requests
//! whose head arrives after the switch; `/health` honours only `set_healthy` and `Refuse`:
//!
//! | fault | behaviour |
//! |---|---|
//! | `None` | normal service |
//! | `CloseMidBody` | headers declare the full `Content-Length` (or chunked, for `mode=chunked` downloads), half the body is sent, then the connection is closed |
//! | `Stall` | the request is read and never answered; the socket stays open until the client closes or the origin stops |
//! | `Refuse` | the listening socket is closed (connects get ECONNREFUSED) and idle keep-alive connections are closed; a request arriving on a surviving connection is reset unanswered. Clearing the fault rebinds the same port (SO_REUSEADDR) before `set_fault` returns |
//! | `ResetAfterRequest` | the request head is read, then the connection is reset (SO_LINGER 0) |

pub mod certs;
pub mod client;
pub mod origin;

#[inline]
fn mix(x: u64) -> u64 {
    // splitmix64 finaliser
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The byte at offset `i` of the test pattern: derived from `i` by a small hash, so it
/// never repeats in a short cycle and an offset error shows up in a byte-exact check.
#[inline]
pub fn pattern_at(i: u64) -> u8 {
    mix(i >> 3).to_le_bytes()[(i & 7) as usize]
}

/// Fills `buf` with the pattern bytes starting at offset `offset`
/// (`buf[k] == pattern_at(offset + k)`).
pub fn pattern_into(offset: u64, buf: &mut [u8]) {
    let mut i = offset;
    let mut rest: &mut [u8] = buf;
    // unaligned head
    while i & 7 != 0 && !rest.is_empty() {
        rest[0] = pattern_at(i);
        rest = &mut rest[1..];
        i += 1;
    }
    let mut chunks = rest.chunks_exact_mut(8);
    for c in &mut chunks {
        c.copy_from_slice(&mix(i >> 3).to_le_bytes());
        i += 8;
    }
    for b in chunks.into_remainder() {
        *b = pattern_at(i);
        i += 1;
    }
}

/// The first `len` bytes of the test pattern (`pattern(n)[i] == pattern_at(i)`).
pub fn pattern(len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    pattern_into(0, &mut v);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_consistent() {
        let p = pattern(1000);
        for (i, b) in p.iter().enumerate() {
            assert_eq!(*b, pattern_at(i as u64));
        }
        for off in 0..17u64 {
            let mut b = vec![0u8; 29];
            pattern_into(off, &mut b);
            assert_eq!(&b[..], &p[off as usize..off as usize + 29]);
        }
        // not a short cycle
        assert_ne!(&p[0..64], &p[64..128]);
        assert_ne!(&p[0..256], &p[256..512]);
    }
}
