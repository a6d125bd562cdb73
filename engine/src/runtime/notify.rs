//! systemd's readiness protocol (`Type=notify`): datagrams to `$NOTIFY_SOCKET`:
//! `READY=1` once every core listens, `RELOADING=1` (with `MONOTONIC_USEC`, which
//! systemd 253 and later want) then `READY=1` around a reload, `STOPPING=1` when the
//! engine stops. Without `NOTIFY_SOCKET`, nothing is sent.

use std::os::unix::net::UnixDatagram;

/// What the engine tells systemd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Ready,
    Reloading,
    Stopping,
    /// A takeover's new process: it is the service's main process now.
    TookOver,
}

/// The message for `state`, `now_usec` being CLOCK_MONOTONIC in microseconds.
pub fn message(state: State, now_usec: u64) -> String {
    match state {
        State::Ready => "READY=1\nSTATUS=serving\n".to_string(),
        State::Reloading => format!("RELOADING=1\nMONOTONIC_USEC={now_usec}\nSTATUS=reloading\n"),
        State::Stopping => {
            "STOPPING=1\nSTATUS=stopping: finishing in-flight requests\n".to_string()
        }
        State::TookOver => format!(
            "MAINPID={}\nREADY=1\nSTATUS=serving (took over)\n",
            std::process::id()
        ),
    }
}

fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into a local timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000
}

/// Sends `state` to `$NOTIFY_SOCKET`, if it is set. Errors are logged, never fatal.
pub fn notify(state: State) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let msg = message(state, monotonic_usec());
    let sent = UnixDatagram::unbound().and_then(|s| {
        let bytes = path.as_encoded_bytes();
        if let Some(name) = bytes.strip_prefix(b"@") {
            // An abstract socket (systemd's usual).
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            s.send_to_addr(msg.as_bytes(), &addr)
        } else {
            s.send_to(msg.as_bytes(), &path)
        }
    });
    if let Err(e) = sent {
        tracing::warn!("cannot notify systemd ({}): {e}", path.to_string_lossy());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_as_systemd_reads_them() {
        assert!(message(State::Ready, 0).starts_with("READY=1\n"));
        assert_eq!(
            message(State::Reloading, 42)
                .lines()
                .take(2)
                .collect::<Vec<_>>(),
            ["RELOADING=1", "MONOTONIC_USEC=42"]
        );
        assert!(message(State::Stopping, 0).starts_with("STOPPING=1\n"));
    }
}
