//! Binding the listeners: one SO_REUSEPORT listener per core and address (port 0
//! resolved once, then shared), after a probe that no other process listens there.

use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

use crate::ids::FrontendId;
use crate::snapshot::Snapshot;
use crate::EngineError;

/// Each core's listeners, and each frontend's bound addresses.
pub struct Bound {
    pub per_core: Vec<Vec<(FrontendId, std::net::TcpListener)>>,
    pub addrs: Vec<(String, Vec<SocketAddr>)>,
}

/// Binds every frontend's addresses on `cores` cores.
pub fn bind_frontends(snap: &Snapshot, cores: usize) -> Result<Bound, EngineError> {
    let mut per_core: Vec<Vec<(FrontendId, std::net::TcpListener)>> =
        (0..cores).map(|_| Vec::new()).collect();
    let mut addrs = Vec::new();
    for (fi, f) in snap.cfg.frontends.iter().enumerate() {
        let Some(fe) = snap.frontend_id(fi) else {
            continue;
        };
        let mut bound = Vec::new();
        for &a in &f.bind {
            let (real, lists) = bind_address(a, cores)?;
            for (list, l) in per_core.iter_mut().zip(lists) {
                list.push((fe, l));
            }
            bound.push(real);
        }
        addrs.push((f.name.clone(), bound));
    }
    Ok(Bound { per_core, addrs })
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
    s.listen(1024).map_err(err)?;
    Ok(s.into())
}
