//! The heads the engine writes, with no I/O: the request head for the server
//! ([`request`]) and the response head for the client ([`response`]). Unit-tested on
//! bytes; the fuzz harness (engine/tests/fuzz_http.rs) checks what [`request`] writes.

pub mod request;
pub mod response;
