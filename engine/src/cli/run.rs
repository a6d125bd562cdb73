//! `engine -c FILE` (and `--takeover`): start, drop privileges, then serve until a
//! signal or a takeover says to stop.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use super::privileges::Credentials;
use crate::runtime::{self, takeover, Options};

/// Loads and validates the file, logging its warnings; `Err` holds every diagnostic.
pub fn load(path: &Path, force: bool) -> Result<config::Config, String> {
    match config::load_file_with(path, &config::LoadOptions { force }) {
        Ok(l) => {
            for w in &l.warnings {
                tracing::warn!("{w}");
            }
            Ok(l.config)
        }
        Err(diags) => Err(diags
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("\n")),
    }
}

/// Runs until SIGTERM or SIGINT (or a new process takes over); SIGHUP reloads, SIGUSR1
/// reopens the access log. With `takeover`, starts on the sockets of the engine whose
/// admin socket that is.
pub fn run(path: &Path, opts: Options, force: bool, takeover: Option<&Path>) -> ExitCode {
    let cfg = match load(path, force) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            eprintln!("{}: configuration refused", path.display());
            return ExitCode::from(1);
        }
    };
    // A user or group that does not exist stops here, before a socket is touched.
    let creds = match Credentials::resolve(cfg.global.user.as_deref(), cfg.global.group.as_deref())
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("engine: {e}");
            return ExitCode::from(1);
        }
    };
    let mut inherited = match takeover.map(takeover::receive).transpose() {
        Ok(i) => i,
        Err(e) => {
            eprintln!("engine --takeover: {e}; the running engine is untouched");
            return ExitCode::from(1);
        }
    };
    let successor = successor(path, &opts, force);
    let opts = Options {
        reload_from: Some((path.to_path_buf(), force)),
        successor,
        ..opts
    };
    let running = match runtime::start_with(cfg, opts, inherited.as_mut()) {
        Ok(r) => r,
        Err(e) => {
            let untouched = if takeover.is_some() {
                "; the running engine is untouched"
            } else {
                ""
            };
            eprintln!("engine: {e}{untouched}");
            return ExitCode::from(1);
        }
    };
    // Before the old engine is told to stop: a takeover that cannot drop privileges
    // leaves it serving.
    if let Err(e) = creds.apply() {
        eprintln!("engine: {e}");
        running.stop();
        return ExitCode::from(1);
    }
    if let Some(i) = inherited {
        let pid = i.pid;
        // The unit's main process from here (systemd, `NotifyAccess=all`): said before
        // the old one is told to stop, so its exit is not the service's.
        runtime::notify::notify(runtime::notify::State::TookOver);
        match i.finish() {
            Ok(()) => {
                tracing::info!("took over from the engine with pid {pid}: it drains and exits")
            }
            Err(e) => tracing::error!("{e}; this engine serves on the same sockets regardless"),
        }
    }
    match serve(&running) {
        Stop::Asked => running.stop(),
        Stop::TakenOver => running.stop_handed_over(),
    }
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

/// How the admin `upgrade` starts this engine again: the binary at the path this one was
/// started from, with the same cores, driver, pinning, file and `--force`.
fn successor(path: &Path, opts: &Options, force: bool) -> Option<runtime::Successor> {
    let exe = std::env::current_exe().ok()?;
    let config = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let driver = match opts.driver {
        runtime::DriverChoice::Auto => "auto",
        runtime::DriverChoice::Uring => "uring",
        runtime::DriverChoice::Epoll => "epoll",
    };
    let mut args: Vec<std::ffi::OsString> = vec![
        "--cores".into(),
        opts.cores.to_string().into(),
        "--driver".into(),
        driver.into(),
        "-c".into(),
        config.into(),
    ];
    if force {
        args.push("--force".into());
    }
    if !opts.pin {
        args.push("--no-pin".into());
    }
    Some(runtime::Successor { exe, args })
}

/// Why [`serve`] returned.
enum Stop {
    /// A signal (or an error installing the handlers): systemd hears `STOPPING=1`.
    Asked,
    /// A new engine took over and serves on.
    TakenOver,
}

/// Waits for signals (and for a takeover's stop), acting on each.
fn serve(running: &runtime::Running) -> Stop {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGPIPE, SIGTERM, SIGUSR1, SIGUSR2};
    // Every signal an operator commonly sends is handled: none of them kills the engine
    // unless it means to stop it.
    let mut signals = match signal_hook::iterator::Signals::new([
        SIGHUP, SIGTERM, SIGINT, SIGUSR1, SIGUSR2, SIGPIPE,
    ]) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot install signal handlers: {e}; stopping");
            return Stop::Asked;
        }
    };
    let stop = running.stop_handle();
    loop {
        for sig in signals.pending() {
            match sig {
                SIGHUP => {
                    // Logged (accepted, or refused with why) by the reload itself.
                    let _ = running.reload_file();
                }
                SIGUSR1 => match running.reopen_log() {
                    Ok(()) => tracing::info!("SIGUSR1: access log reopened"),
                    Err(e) => {
                        tracing::error!("SIGUSR1: {e}; the cores keep logging where they did")
                    }
                },
                SIGUSR2 | SIGPIPE => tracing::info!("signal {sig} ignored"),
                _ => {
                    tracing::info!("stopping: finishing in-flight requests");
                    return Stop::Asked;
                }
            }
        }
        if stop.stopping() {
            tracing::info!("stopping: a new engine took over; finishing in-flight requests");
            return Stop::TakenOver;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
