//! Binding the listeners: one SO_REUSEPORT listener per core and address (port 0
//! resolved once, then shared), after a probe that no other process listens there; or
//! the sockets a previous engine handed over (a takeover), dealt to the cores.

use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

use super::takeover::Inherited;
use crate::snapshot::Snapshot;
use crate::EngineError;

/// One bind address of a frontend, as bound: a copy of every core's listener is kept
/// (to hand over in a takeover; dropped with the bind when a reload removes it).
pub struct Bound1 {
    pub frontend: String,
    /// As the configuration writes it (port 0 possible).
    pub configured: SocketAddr,
    pub real: SocketAddr,
    pub copies: Vec<std::net::TcpListener>,
}

impl Bound1 {
    /// Whether this bind is the configuration's address `a`.
    pub fn is(&self, a: SocketAddr) -> bool {
        self.configured == a || self.real == a
    }
}

/// Each core's listeners (by frontend name), and every bind.
pub struct Bound {
    pub per_core: Vec<Vec<(String, std::net::TcpListener)>>,
    pub binds: Vec<Bound1>,
}

impl Bound {
    pub fn new(cores: usize) -> Bound {
        Bound {
            per_core: (0..cores).map(|_| Vec::new()).collect(),
            binds: Vec::new(),
        }
    }

    /// Adds a bind's listeners: dealt to the cores in turn (a core gets several where
    /// more were handed over than there are cores), a copy of each kept.
    pub fn add(
        &mut self,
        frontend: &str,
        configured: SocketAddr,
        real: SocketAddr,
        lists: Vec<std::net::TcpListener>,
    ) -> Result<(), EngineError> {
        let err = |err| EngineError::Bind { addr: real, err };
        let mut copies = Vec::with_capacity(lists.len());
        let cores = self.per_core.len().max(1);
        for (i, l) in lists.into_iter().enumerate() {
            copies.push(l.try_clone().map_err(err)?);
            self.per_core[i % cores].push((frontend.to_string(), l));
        }
        self.binds.push(Bound1 {
            frontend: frontend.to_string(),
            configured,
            real,
            copies,
        });
        Ok(())
    }
}

/// Binds every frontend's addresses on `cores` cores, taking the sockets a previous
/// engine handed over where it listened on the same address.
pub fn bind_frontends(
    snap: &Snapshot,
    cores: usize,
    mut inherited: Option<&mut Inherited>,
) -> Result<Bound, EngineError> {
    let mut bound = Bound::new(cores);
    for f in snap.frontends.iter().filter(|f| !f.retired) {
        for &a in &f.cfg.bind {
            let handed = inherited
                .as_deref_mut()
                .map(|i| i.take(a))
                .unwrap_or_default();
            let (real, lists) = if handed.is_empty() {
                bind_address(a, cores)?
            } else {
                complete(a, handed, cores)?
            };
            bound.add(&f.name, a, real, lists)?;
        }
    }
    Ok(bound)
}

/// Handed-over listeners of one address, with one more bound (SO_REUSEPORT, in the
/// same group) for each core past their number.
fn complete(
    a: SocketAddr,
    mut lists: Vec<std::net::TcpListener>,
    cores: usize,
) -> Result<(SocketAddr, Vec<std::net::TcpListener>), EngineError> {
    let real = lists[0]
        .local_addr()
        .map_err(|err| EngineError::Bind { addr: a, err })?;
    for l in &lists {
        l.set_nonblocking(true)
            .map_err(|err| EngineError::Bind { addr: real, err })?;
    }
    while lists.len() < cores {
        lists.push(bind_one(real)?);
    }
    Ok((real, lists))
}

/// One address on `cores` cores: the address bound (port 0 resolved) and a listener for
/// each core.
pub fn bind_address(
    a: SocketAddr,
    cores: usize,
) -> Result<(SocketAddr, Vec<std::net::TcpListener>), EngineError> {
    probe_free(a)?;
    let first = bind_one(a)?;
    let real = first
        .local_addr()
        .map_err(|err| EngineError::Bind { addr: a, err })?;
    let mut lists = vec![first];
    for _ in 1..cores {
        lists.push(bind_one(real)?);
    }
    Ok((real, lists))
}

/// Refuses an address another socket listens on: a bind without SO_REUSEPORT fails
/// where any listener holds it, whereas SO_REUSEPORT would let this engine share it
/// silently with another process (a second engine taking half the connections).
pub fn probe_free(addr: SocketAddr) -> Result<(), EngineError> {
    if addr.port() == 0 {
        return Ok(());
    }
    let err = |err| EngineError::Bind { addr, err };
    let s =
        Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(err)?;
    // SO_REUSEADDR only: a port with connections in TIME_WAIT is free to listen on.
    s.set_reuse_address(true).map_err(err)?;
    if addr.is_ipv6() {
        s.set_only_v6(true).map_err(err)?;
    }
    match s.bind(&addr.into()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(EngineError::InUse(addr)),
        Err(e) => Err(err(e)),
    }
}

pub fn bind_one(addr: SocketAddr) -> Result<std::net::TcpListener, EngineError> {
    let err = |err| EngineError::Bind { addr, err };
    let s =
        Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(err)?;
    s.set_reuse_address(true).map_err(err)?;
    s.set_reuse_port(true).map_err(err)?;
    if addr.is_ipv6() {
        s.set_only_v6(true).map_err(err)?;
    }
    s.set_nonblocking(true).map_err(err)?;
    // Accepted sockets inherit TCP_NODELAY: no setsockopt per connection.
    s.set_nodelay(true).map_err(err)?;
    s.bind(&addr.into()).map_err(err)?;
    s.listen(super::preflight::BACKLOG as i32).map_err(err)?;
    Ok(s.into())
}
