//! UPSTREAM: which server takes the request and on which connection. Selection glue
//! around [`crate::balance`] ([`select`]), the per-server `maxconn` slots that free
//! themselves ([`slots`]), the wait in order for one and the waiting room ([`queue`]),
//! the connection from the pool or a new one ([`connect`]). Nothing here reads or writes
//! HTTP: an HTTP/2 stream reaches a server through the same calls.

pub mod connect;
pub mod queue;
pub mod select;
pub mod slots;
