//! The command line: `engine [--cores N] -c FILE`, `engine check -c FILE`, `engine demo`,
//! `engine import-haproxy FILE`, `engine --version`. `main` calls [`main`] and exits with what it returns.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::runtime::{self, DriverChoice, Options};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum DriverArg {
    Auto,
    Uring,
    Epoll,
}

impl From<DriverArg> for DriverChoice {
    fn from(d: DriverArg) -> Self {
        match d {
            DriverArg::Auto => DriverChoice::Auto,
            DriverArg::Uring => DriverChoice::Uring,
            DriverArg::Epoll => DriverChoice::Epoll,
        }
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "engine",
    about = "A thread-per-core HTTP/1.1 load balancer for Moodle",
    disable_version_flag = true
)]
pub struct Args {
    /// Worker cores (default: all).
    #[arg(long, global = true)]
    pub cores: Option<usize>,
    /// The configuration file.
    #[arg(short = 'c', long = "config", global = true)]
    pub config: Option<PathBuf>,
    /// I/O driver: io_uring, falling back to epoll where it is refused (auto).
    #[arg(long, value_enum, default_value = "auto", global = true)]
    pub driver: DriverArg,
    /// Run even when `engine check` finds lint errors that lock students out.
    #[arg(long, global = true)]
    pub force: bool,
    /// Do not pin the worker threads to their cores (for machines shared with other busy
    /// processes).
    #[arg(long, global = true)]
    pub no_pin: bool,
    /// Print the version and the driver this kernel would get.
    #[arg(long)]
    pub version: bool,
    #[command(subcommand)]
    pub cmd: Option<Cmd>,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Load and validate the configuration without binding anything.
    Check,
    /// Moodle-like origins and the load balancer on loopback, with a self-signed cert.
    Demo,
    /// Translate an HAProxy configuration to lb.toml, with a report.
    ///
    /// lb.toml goes to standard output, the report (what was carried, changed, fixed and
    /// left out, then what `engine check` says of the result) to standard error. Exit 1
    /// when the result would not run.
    #[command(name = "import-haproxy")]
    ImportHaproxy {
        /// The HAProxy configuration (haproxy.cfg).
        file: PathBuf,
    },
}

pub fn init_tracing() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        // Colour only on a terminal: a file or journald gets plain text.
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// No transparent huge pages for this process (unless `MIMALLOC_ALLOW_THP=1`): the
/// allocator asks for them on its segments, and a 2 MiB page held for a few live bytes
/// makes an idle engine's memory many times what its connections use. The bench
/// measured its throughput figures this way too.
fn no_huge_pages() {
    if std::env::var("MIMALLOC_ALLOW_THP").is_ok_and(|v| v == "1") {
        return;
    }
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
}

pub fn main() -> ExitCode {
    no_huge_pages();
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    ExitCode::SUCCESS
                }
                _ => ExitCode::from(2),
            };
        }
    };
    if args.version {
        println!(
            "engine {} (driver: {})",
            env!("CARGO_PKG_VERSION"),
            runtime::probe_driver().as_str()
        );
        return ExitCode::SUCCESS;
    }
    if let Some(Cmd::ImportHaproxy { file }) = &args.cmd {
        return import_haproxy(file);
    }
    init_tracing();
    let opts = Options {
        cores: args.cores.unwrap_or_else(runtime::available_cores),
        driver: args.driver.into(),
        pin: !args.no_pin,
    };
    match args.cmd {
        Some(Cmd::Check) => {
            let Some(path) = args.config else {
                eprintln!("engine check: give the configuration with -c FILE");
                return ExitCode::from(2);
            };
            check(&path)
        }
        Some(Cmd::ImportHaproxy { file }) => import_haproxy(&file),
        Some(Cmd::Demo) => match crate::demo::run(opts) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("engine demo: {e:#}");
                ExitCode::from(1)
            }
        },
        None => {
            let Some(path) = args.config else {
                eprintln!("engine: give the configuration with -c FILE (or try `engine demo`)");
                return ExitCode::from(2);
            };
            run(&path, opts, args.force)
        }
    }
}

/// `engine check`: every error and warning; 0 when valid.
pub fn check(path: &Path) -> ExitCode {
    match config::load_file(path) {
        Ok(l) => {
            for w in &l.warnings {
                println!("{w}");
            }
            println!(
                "{}: configuration is valid ({} warning{})",
                path.display(),
                l.warnings.len(),
                if l.warnings.len() == 1 { "" } else { "s" }
            );
            ExitCode::SUCCESS
        }
        Err(diags) => {
            for d in &diags {
                println!("{d}");
            }
            let errors = diags
                .iter()
                .filter(|d| d.severity == config::diag::Severity::Error)
                .count();
            println!(
                "{}: configuration refused ({} error{})",
                path.display(),
                errors,
                if errors == 1 { "" } else { "s" }
            );
            ExitCode::from(1)
        }
    }
}

/// `engine import-haproxy FILE`: the TOML on stdout, the report on stderr; 1 when the
/// file cannot be read or the result would not run.
pub fn import_haproxy(file: &Path) -> ExitCode {
    match config::haproxy::import_file(file) {
        Ok(imp) => {
            print!("{}", imp.toml);
            eprint!("{}", imp.report_text());
            if imp.runnable {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("engine import-haproxy: {e}");
            ExitCode::from(1)
        }
    }
}

fn load(path: &Path, force: bool) -> Result<config::Config, String> {
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

/// Runs until SIGTERM or SIGINT; SIGHUP reloads.
pub fn run(path: &Path, opts: Options, force: bool) -> ExitCode {
    let cfg = match load(path, force) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            eprintln!("{}: configuration refused", path.display());
            return ExitCode::from(1);
        }
    };
    let user = cfg.global.user.clone();
    let group = cfg.global.group.clone();
    let running = match runtime::start(cfg, opts) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("engine: {e}");
            return ExitCode::from(1);
        }
    };
    if let Err(e) = drop_privileges(user.as_deref(), group.as_deref()) {
        eprintln!("engine: {e}");
        running.stop();
        return ExitCode::from(1);
    }
    use signal_hook::consts::{SIGHUP, SIGINT, SIGPIPE, SIGTERM, SIGUSR1, SIGUSR2};
    // Every signal an operator commonly sends is handled: none of them kills the engine
    // unless it means to stop it.
    let mut signals = match signal_hook::iterator::Signals::new([
        SIGHUP, SIGTERM, SIGINT, SIGUSR1, SIGUSR2, SIGPIPE,
    ]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("engine: cannot install signal handlers: {e}");
            running.stop();
            return ExitCode::from(1);
        }
    };
    for sig in signals.forever() {
        match sig {
            SIGHUP => match load(path, force) {
                Ok(cfg) => match running.reload(cfg) {
                    Ok(()) => tracing::info!("configuration reloaded"),
                    Err(e) => tracing::error!("{e}; the running configuration stays"),
                },
                Err(e) => tracing::error!("reload refused, the running configuration stays:\n{e}"),
            },
            SIGUSR1 => match running.reopen_log() {
                Ok(()) => tracing::info!("SIGUSR1: access log reopened"),
                Err(e) => tracing::error!("SIGUSR1: {e}; the cores keep logging where they did"),
            },
            SIGUSR2 | SIGPIPE => tracing::info!("signal {sig} ignored"),
            _ => {
                tracing::info!("stopping: finishing in-flight requests");
                break;
            }
        }
    }
    running.stop();
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

/// Switches to `group` and `user` once the ports are bound: supplementary groups first
/// (the user's own, or none), then the group, then the user, each checked. Any step that
/// fails stops the engine: it never runs on as root when told to run as someone else.
fn drop_privileges(user: Option<&str>, group: Option<&str>) -> Result<(), String> {
    use std::ffi::CString;
    let gid = match group {
        Some(g) => Some(group_id(g)?),
        None => None,
    };
    let Some(u) = user else {
        if let Some(gid) = gid {
            // SAFETY: setgroups with an empty list; setgid with a gid from getgrnam.
            if unsafe { libc::setgroups(0, std::ptr::null()) } != 0 {
                return Err(format!(
                    "cannot clear the supplementary groups: {}",
                    last_err()
                ));
            }
            if unsafe { libc::setgid(gid) } != 0 {
                return Err(format!("cannot switch to group {group:?}: {}", last_err()));
            }
        }
        return Ok(());
    };
    let c = CString::new(u).map_err(|_| format!("bad user name {u:?}"))?;
    // SAFETY: c is a valid C string; getpwnam returns NULL or a valid pointer, read at once.
    let (uid, user_gid) = unsafe {
        let pw = libc::getpwnam(c.as_ptr());
        if pw.is_null() {
            return Err(format!("user {u:?} does not exist"));
        }
        ((*pw).pw_uid, (*pw).pw_gid)
    };
    let gid = gid.unwrap_or(user_gid);
    // SAFETY: plain credential calls with values read above; glibc applies them to every
    // thread of the process.
    unsafe {
        if libc::initgroups(c.as_ptr(), gid) != 0 {
            return Err(format!("cannot set the groups of {u:?}: {}", last_err()));
        }
        if libc::setgid(gid) != 0 {
            return Err(format!("cannot switch to group {gid}: {}", last_err()));
        }
        if libc::setuid(uid) != 0 {
            return Err(format!("cannot switch to user {u:?}: {}", last_err()));
        }
        if uid != 0 && (libc::getuid() == 0 || libc::geteuid() == 0 || libc::setuid(0) == 0) {
            return Err(format!(
                "still root after switching to {u:?}: refusing to run"
            ));
        }
    }
    Ok(())
}

fn group_id(g: &str) -> Result<libc::gid_t, String> {
    let c = std::ffi::CString::new(g).map_err(|_| format!("bad group name {g:?}"))?;
    // SAFETY: c is a valid C string; getgrnam returns NULL or a valid pointer, read at once.
    unsafe {
        let gr = libc::getgrnam(c.as_ptr());
        if gr.is_null() {
            return Err(format!("group {g:?} does not exist"));
        }
        Ok((*gr).gr_gid)
    }
}

fn last_err() -> std::io::Error {
    std::io::Error::last_os_error()
}
