//! The command line: `engine [--cores N] -c FILE`, `engine --takeover ADMIN_SOCKET -c
//! FILE`, `engine check [--host] -c FILE`, `engine status -s ADMIN_SOCKET`, `engine
//! demo`, `engine import-haproxy FILE`, `engine --version`. `main` calls [`main`] and
//! exits with what it returns.
//!
//! Its parts: this file (the arguments and what each command does), [`run`] (running
//! until stopped: signals, reload, takeover), [`privileges`] (the user and group after
//! binding), [`status`] (`engine status`, keepalived's check).

mod privileges;
pub mod run;
mod status;

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
    /// Take over from the engine running with this admin socket: its listening sockets
    /// and server states, then it stops accepting and drains (a binary upgrade without
    /// a refused connection).
    #[arg(long, value_name = "ADMIN_SOCKET")]
    pub takeover: Option<PathBuf>,
    #[command(subcommand)]
    pub cmd: Option<Cmd>,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Load and validate the configuration without binding anything.
    Check {
        /// Also check this host against the file: descriptor and locked-memory limits,
        /// net.core.somaxconn, the local port range.
        #[arg(long)]
        host: bool,
    },
    /// One line: is the engine on this admin socket running, with a server UP in every
    /// backend? Exit 0 if so, 1 otherwise (keepalived's vrrp_script).
    Status {
        /// The engine's admin socket (global.admin_socket).
        #[arg(short = 's', long = "socket", value_name = "ADMIN_SOCKET")]
        socket: PathBuf,
    },
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
        reload_from: None,
        successor: None,
    };
    match args.cmd {
        Some(Cmd::Check { host }) => {
            let Some(path) = args.config else {
                eprintln!("engine check: give the configuration with -c FILE");
                return ExitCode::from(2);
            };
            let code = check(&path);
            if host && code == ExitCode::SUCCESS {
                return status::check_host(&path, opts.cores);
            }
            code
        }
        Some(Cmd::Status { socket }) => status::status(&socket),
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
            run::run(&path, opts, args.force, args.takeover.as_deref())
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
