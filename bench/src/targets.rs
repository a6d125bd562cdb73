//! Starting and stopping each target: the origins (once per bench), and per scenario the
//! engine, the baseline engine, HAProxy and nginx on a generated configuration, or the
//! first origin itself (`direct`).

use crate::cli::Settings;
use crate::configs::{self, Certs, Origins, Ports, Scenario, Tls};
use crate::procs::{cmd_output, free_ports, run_bounded, wait_http, wait_tcp, Proc};
use crate::records::TargetResult;
use crate::{truncate, wrk};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Where the binaries are: the engine, and the origin (bench-origin, or the tools
/// crate's origin).
pub struct Bins {
    pub dir: PathBuf,
    pub origin: Option<PathBuf>,
}

pub fn find_bins(bin_dir: Option<PathBuf>) -> Bins {
    let dir = bin_dir.unwrap_or_else(|| {
        std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .unwrap_or_else(|| PathBuf::from("target/release"))
    });
    // our own epoll origin first (built to be fast); the tools crate's `origin` otherwise
    let origin = ["bench-origin", "origin"]
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.exists());
    Bins { dir, origin }
}

/// The origins, started once for the whole bench.
pub struct OriginSet {
    pub procs: Vec<Proc>,
    pub origins: Origins,
    pub command: Vec<String>,
}

impl OriginSet {
    /// CPU seconds used so far by all the origins.
    pub fn cpu_seconds(&self) -> f64 {
        self.procs.iter().map(|p| p.cpu_seconds()).sum()
    }
}

pub fn start_origins(bin: &Path, tmp: &Path, n: usize) -> Result<OriginSet, String> {
    let ports = free_ports(n);
    let mut procs = Vec::new();
    let mut servers = Vec::new();
    let mut command = Vec::new();
    let own = bin
        .file_name()
        .map(|f| f == "bench-origin")
        .unwrap_or(false);
    for (i, port) in ports.iter().enumerate() {
        let name = format!("s{}", i + 1);
        let mut cmd = Command::new(bin);
        cmd.args(["--name", &name, "--listen", &format!("127.0.0.1:{port}")]);
        if own {
            cmd.args(["--threads", "2"]);
        }
        let p = Proc::spawn(cmd, &tmp.join(format!("origin-{name}.log")))
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        command.push(p.command.clone());
        procs.push(p);
        servers.push((name.clone(), name, *port));
    }
    for (p, (_, _, port)) in procs.iter_mut().zip(&servers) {
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        wait_http(addr, Duration::from_secs(5), p).map_err(|e| format!("origin {e}"))?;
    }
    Ok(OriginSet {
        procs,
        origins: Origins { servers },
        command,
    })
}

/// One proxy (or the direct origin) during one scenario.
pub struct Live {
    pub name: String,
    pub proc: Option<Proc>,
    pub port: u16,
    pub res: TargetResult,
}

impl Live {
    /// A target that does not run this scenario, and why.
    pub fn na(name: &str, why: String) -> Live {
        Live {
            name: name.into(),
            proc: None,
            port: 0,
            res: TargetResult {
                target: name.into(),
                available: false,
                reason: Some(why),
                ..Default::default()
            },
        }
    }

    pub fn proc<'a>(&'a self, origins: &'a OriginSet) -> Option<&'a Proc> {
        if self.name == "direct" {
            origins.procs.first()
        } else {
            self.proc.as_ref()
        }
    }
}

/// What every target of a bench run is started from.
pub struct Ctx<'a> {
    pub set: &'a Settings,
    pub os: &'a OriginSet,
    pub certs: &'a Certs,
    pub bins: &'a Bins,
}

/// Where one scenario's targets keep their files: `dir`, temporary (configurations,
/// logs); `out_cfg`, the configurations kept beside the report.
pub struct Dirs {
    pub dir: PathBuf,
    pub out_cfg: PathBuf,
}

/// Starts `name` for `sc`; a target that cannot run comes back with `available` false
/// and the reason.
pub fn start_target(name: &str, sc: &Scenario, cx: &Ctx, dirs: &Dirs) -> Live {
    let mut res = TargetResult {
        target: name.to_string(),
        ..Default::default()
    };
    match launch(name, sc, cx, dirs, &mut res) {
        Ok((proc, port)) => {
            res.available = true;
            res.url = Some(wrk::url(sc, port));
            Live {
                name: name.into(),
                proc,
                port,
                res,
            }
        }
        Err(why) => {
            let mut l = Live::na(name, why);
            l.res.start_command = res.start_command;
            l.res.config_file = res.config_file;
            l
        }
    }
}

/// The process (none for `direct`) and the port the load goes to.
fn launch(
    name: &str,
    sc: &Scenario,
    cx: &Ctx,
    dirs: &Dirs,
    res: &mut TargetResult,
) -> Result<(Option<Proc>, u16), String> {
    let cert = cx.certs.for_tls(sc.tls);
    if sc.tls != Tls::None && cert.is_none() {
        return Err(format!("no certificate: {}", cx.certs.error.trim()));
    }
    if name == "direct" {
        return direct(sc, cx.os, res).map(|port| (None, port));
    }
    let ports = free_ports(2);
    let p = Ports {
        http: ports[0],
        https: ports[1],
        maxconn: cx.set.maxconn,
    };
    let tdir = dirs.dir.join(name);
    let _ = std::fs::create_dir_all(&tdir);
    let conf = Conf {
        sc,
        origins: &cx.os.origins,
        ports: &p,
        cert,
        tdir: &tdir,
    };
    let (file, text, cmd) = match name {
        "engine" | "baseline" => engine_command(name, cx, &conf)?,
        "haproxy" => haproxy_command(&conf)?,
        "nginx" => nginx_command(&conf)?,
        other => return Err(format!("unknown target {other}")),
    };
    let kept = dirs.out_cfg.join(format!(
        "{}-{}",
        name,
        file.file_name().and_then(|f| f.to_str()).unwrap_or("conf")
    ));
    let _ = std::fs::write(&kept, &text);
    res.config_file = Some(kept.display().to_string());
    let mut proc =
        Proc::spawn(cmd, &tdir.join("out.log")).map_err(|e| format!("cannot start: {e}"))?;
    res.start_command = Some(proc.command.clone());
    let port = wait_up(sc, &p, &mut proc)?;
    Ok((Some(proc), port))
}

/// The first origin, measured without a proxy (plain HTTP only).
fn direct(sc: &Scenario, os: &OriginSet, res: &mut TargetResult) -> Result<u16, String> {
    if sc.tls != Tls::None {
        return Err(
            "the origins speak plain HTTP only; see the plain-HTTP scenarios for the ceiling"
                .into(),
        );
    }
    res.start_command = os.command.first().cloned();
    Ok(os.origins.servers[0].2)
}

/// What a proxy's configuration is made from.
struct Conf<'a> {
    sc: &'a Scenario,
    origins: &'a Origins,
    ports: &'a Ports,
    cert: Option<&'a Path>,
    /// the target's own temporary folder
    tdir: &'a Path,
}

/// A proxy's configuration file, its text and the command that runs it.
type Launch = (PathBuf, String, Command);

fn write_config(f: &Path, text: &str) -> Result<(), String> {
    std::fs::write(f, text).map_err(|e| format!("cannot write config: {e}"))
}

/// The engine (or the baseline binary) on a configuration that `engine check` accepts.
fn engine_command(name: &str, cx: &Ctx, c: &Conf) -> Result<Launch, String> {
    let bin = match (name, &cx.set.baseline) {
        ("baseline", Some(b)) => b.clone(),
        _ => cx.bins.dir.join("engine"),
    };
    if !bin.exists() {
        return Err(format!("not built: {} is missing", bin.display()));
    }
    let f = c.tdir.join("lb.toml");
    let text = configs::engine_toml(c.sc, c.origins, c.ports, c.cert);
    write_config(&f, &text)?;
    let mut check = Command::new(&bin);
    check.arg("check").arg("-c").arg(&f);
    match run_bounded(check, Duration::from_secs(10)) {
        Ok((true, _, _)) => {}
        Ok((false, o, e)) => {
            let msg = format!("{o} {e}");
            let msg: String = msg.split_whitespace().collect::<Vec<_>>().join(" ");
            return Err(format!(
                "`engine check` refused the config: {}",
                truncate(&msg, 300)
            ));
        }
        Err(e) => return Err(format!("engine check did not run: {e}")),
    }
    let mut cmd = Command::new(&bin);
    cmd.env("MIMALLOC_ALLOW_THP", "0").args(["--cores", "2"]);
    if !cx.set.pin_engine {
        cmd.arg("--no-pin");
    }
    cmd.arg("-c").arg(&f);
    Ok((f, text, cmd))
}

fn haproxy_command(c: &Conf) -> Result<Launch, String> {
    let f = c.tdir.join("haproxy.cfg");
    let text = configs::haproxy_cfg(c.sc, c.origins, c.ports, c.cert);
    write_config(&f, &text)?;
    let mut cmd = Command::new("haproxy");
    cmd.arg("-db").arg("-f").arg(&f);
    Ok((f, text, cmd))
}

fn nginx_command(c: &Conf) -> Result<Launch, String> {
    let f = c.tdir.join("nginx.conf");
    let text = configs::nginx_conf(c.sc, c.origins, c.ports, c.cert, c.tdir);
    write_config(&f, &text)?;
    let mut cmd = Command::new("nginx");
    cmd.arg("-p").arg(c.tdir).arg("-c").arg(&f);
    Ok((f, text, cmd))
}

/// Waits for the proxy's plain listener, then (TLS scenarios) its TLS one; the port the
/// load goes to.
fn wait_up(sc: &Scenario, p: &Ports, proc: &mut Proc) -> Result<u16, String> {
    let addr: SocketAddr = format!("127.0.0.1:{}", p.http).parse().expect("addr");
    if let Err(e) = wait_http(addr, Duration::from_secs(8), proc) {
        return Err(format!("did not come up: {}", truncate(&e, 400)));
    }
    if sc.tls == Tls::None {
        return Ok(p.http);
    }
    let a: SocketAddr = format!("127.0.0.1:{}", p.https).parse().expect("addr");
    if !wait_tcp(a, Duration::from_secs(3)) {
        return Err("no TLS listener came up".into());
    }
    Ok(p.https)
}

/// The machine and the versions of every tool, for the report.
pub fn machine_info(bins: &Bins) -> serde_json::Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':').map(|(_, v)| v.trim().to_string()))
        })
        .unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()
                .map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>().join(" "))
        })
        .unwrap_or_default();
    let first = |s: String| s.lines().next().unwrap_or("").to_string();
    let engine = bins.dir.join("engine");
    serde_json::json!({
        "nproc": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu": cpu,
        "memory": mem,
        "kernel": first(cmd_output("uname", &["-srm"])),
        "os": first(std::fs::read_to_string("/etc/os-release").unwrap_or_default().lines().find(|l| l.starts_with("PRETTY_NAME")).unwrap_or("").to_string()),
        "haproxy": first(cmd_output("haproxy", &["-v"])),
        "nginx": first(cmd_output("nginx", &["-v"])),
        "wrk": first(cmd_output("wrk", &["-v"])),
        "h2load": first(cmd_output("h2load", &["--version"])),
        "openssl": first(cmd_output("openssl", &["version"])),
        "engine": if engine.exists() { first(cmd_output(&engine.display().to_string(), &["--version"])) } else { "not built".to_string() },
        "origin": bins.origin.as_ref().map(|p| p.display().to_string()),
        "io_uring_disabled": std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled").map(|s| s.trim().to_string()).unwrap_or_default(),
    })
}
