//! The request path, one file per phase, each owning one thing:
//!
//! - [`conn`]: a client connection's life: accepted (TLS first where it applies),
//!   active, long idle (parked), lingered on, answered 408, tunnelled. It may not touch
//!   a request's contents.
//! - [`client_io`]: the client side's I/O (plain or TLS), the client's read buffer, and
//!   writes bounded by the core's sweep.
//! - [`read_head`]: READ HEAD: one head read and parsed within `timeout_http_request`;
//!   a refused one answered and logged.
//! - [`route`]: ROUTE: redirect, no backend, body limits, the head rewritten, the
//!   persistence decision; it reads the head, nothing after it.
//! - [`exchange`]: the [`exchange::Exchange`] that carries the plan, timers and log
//!   record through the phases, and the retry loop only.
//! - [`upstream`]: UPSTREAM: selection glue, per-server slots, the queue and the waiting
//!   room, CONNECT and the pool. No HTTP here.
//! - [`relay`]: SEND and RELAY: bodies both ways, the response head read and the
//!   client's written, splice, the tunnel.
//! - [`rewrite`]: the request and response heads the engine writes, with no I/O.
//! - [`outcome`]: how a request ends: [`outcome::ProxyError`] (side, phase, kind, cause),
//!   from which the status and the termination state are derived in one place.
//!
//! The phases that do not depend on HTTP/1.1 framing (route, upstream, the relay of a
//! body, the log) take an [`exchange::Exchange`] and a parsed [`crate::http::RequestHead`],
//! which an HTTP/2 stream can produce as well.

pub mod client_io;
pub mod conn;
pub mod exchange;
pub mod h2;
pub mod outcome;
pub mod read_head;
pub mod relay;
pub mod rewrite;
pub mod route;
pub mod upstream;

pub use conn::{expire_parked, resume, spawn_accepted};
pub use rewrite::request::{finish_head, RequestRewrite};
