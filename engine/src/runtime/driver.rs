//! One core's runtime: io_uring with SINGLE_ISSUER and DEFER_TASKRUN, else a plain
//! ring, else (under `auto`) epoll; and the warning when there are more workers than
//! cores.

use super::DriverChoice;
use crate::shared::DriverKind;
use crate::EngineError;

/// A warning when there are more workers than cores: which ones share a core.
pub fn oversubscribed(workers: usize, cores: usize, pinned: bool) -> Option<String> {
    if workers <= cores || cores == 0 {
        return None;
    }
    let shares: Vec<String> = (0..cores)
        .map(|c| {
            let ws: Vec<String> = (c..workers).step_by(cores).map(|w| w.to_string()).collect();
            format!("core {c}: workers {}", ws.join(", "))
        })
        .collect();
    Some(format!(
        "{workers} worker cores on a host with {cores}: workers share cores{} ({}); \
         use --cores {cores} or fewer",
        if pinned {
            ""
        } else {
            " (unpinned, as the scheduler places them)"
        },
        shares.join("; ")
    ))
}

const RING_ENTRIES: u32 = 4096;

/// Builds the core's runtime with the driver asked for and runs the worker on it.
pub fn run_worker<F, Fut>(
    core: usize,
    choice: DriverChoice,
    report: std::sync::mpsc::Sender<Result<DriverKind, EngineError>>,
    make: F,
) where
    F: FnOnce(DriverKind) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    use monoio::{IoUringDriver, LegacyDriver, RuntimeBuilder};
    if choice != DriverChoice::Epoll && std::env::var_os("MONOIO_FORCE_LEGACY_DRIVER").is_none() {
        // The fastest ring setup measured here, then a plain ring.
        let mut fast = io_uring::IoUring::builder();
        fast.setup_single_issuer().setup_defer_taskrun();
        let attempts = [
            ("single_issuer+defer_taskrun", fast),
            ("default", io_uring::IoUring::builder()),
        ];
        let mut last_err = None;
        for (name, urb) in attempts {
            match RuntimeBuilder::<IoUringDriver>::new()
                .with_entries(RING_ENTRIES)
                .uring_builder(urb)
                .enable_timer()
                .build()
            {
                Ok(mut rt) => {
                    tracing::debug!(core, setup = name, "io_uring ring built");
                    let _ = report.send(Ok(DriverKind::IoUring));
                    rt.block_on(make(DriverKind::IoUring));
                    return;
                }
                Err(e) => {
                    tracing::debug!(core, setup = name, "io_uring refused: {e}");
                    last_err = Some(e);
                }
            }
        }
        if choice == DriverChoice::Uring {
            let e = last_err.unwrap_or_else(|| std::io::Error::other("io_uring unavailable"));
            let _ = report.send(Err(EngineError::UringRefused(e)));
            return;
        }
        if core == 0 {
            tracing::warn!("io_uring refused by the kernel or a sandbox: falling back to epoll");
        }
    }
    match RuntimeBuilder::<LegacyDriver>::new().enable_timer().build() {
        Ok(mut rt) => {
            let _ = report.send(Ok(DriverKind::Epoll));
            rt.block_on(make(DriverKind::Epoll));
        }
        Err(e) => {
            let _ = report.send(Err(EngineError::Driver(e)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn more_workers_than_cores_is_said_with_the_sharing() {
        assert_eq!(oversubscribed(2, 2, true), None);
        let w = oversubscribed(8, 2, true).unwrap();
        assert!(w.contains("8 worker cores on a host with 2"), "{w}");
        assert!(w.contains("core 0: workers 0, 2, 4, 6"), "{w}");
        assert!(w.contains("core 1: workers 1, 3, 5, 7"), "{w}");
    }
}
