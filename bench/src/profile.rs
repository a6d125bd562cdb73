//! `engine-bench profile`: the engine in the main scenario under perf record and valgrind
//! callgrind; the top functions go to <out>/profile.txt.

use crate::configs::{self, Ports, Tls};
use crate::procs::{free_ports, run_bounded, wait_http, Proc};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

pub struct Args {
    pub tool: String,
    pub duration: u64,
    pub scenario: String,
    pub target: String,
    pub out: PathBuf,
    pub bin_dir: PathBuf,
    pub origin: Option<PathBuf>,
}

fn target_cmd(
    a: &Args,
    sc: &configs::Scenario,
    os: &crate::targets::OriginSet,
    dir: &Path,
) -> Result<(Command, u16), String> {
    let p = Ports {
        http: free_ports(1)[0],
        https: 0,
        maxconn: 4000,
    };
    match a.target.as_str() {
        "engine" => {
            let bin = a.bin_dir.join("engine");
            if !bin.exists() {
                return Err(format!(
                    "{} is missing: cargo build --release -p engine",
                    bin.display()
                ));
            }
            let f = dir.join("lb.toml");
            std::fs::write(&f, configs::engine_toml(sc, &os.origins, &p, None))
                .map_err(|e| e.to_string())?;
            let mut c = Command::new(bin);
            c.env("MIMALLOC_ALLOW_THP", "0")
                .args(["--cores", "2", "-c"])
                .arg(f);
            Ok((c, p.http))
        }
        "haproxy" => {
            let f = dir.join("haproxy.cfg");
            std::fs::write(&f, configs::haproxy_cfg(sc, &os.origins, &p, None))
                .map_err(|e| e.to_string())?;
            let mut c = Command::new("haproxy");
            c.arg("-db").arg("-f").arg(f);
            Ok((c, p.http))
        }
        "nginx" => {
            let f = dir.join("nginx.conf");
            std::fs::write(&f, configs::nginx_conf(sc, &os.origins, &p, None, dir))
                .map_err(|e| e.to_string())?;
            let mut c = Command::new("nginx");
            c.arg("-p").arg(dir).arg("-c").arg(f);
            Ok((c, p.http))
        }
        t => Err(format!("unknown target {t}")),
    }
}

fn wrk_load(script: &Path, port: u16, sc: &configs::Scenario, secs: u64) -> String {
    match crate::wrk::run(script, &crate::wrk::url(sc, port), sc.connections, secs) {
        Ok((w, _)) => format!("{:.0} req/s, p99 {:.0} us ({})", w.rps, w.p99_us, w.command),
        Err(e) => format!("wrk: {e}"),
    }
}

pub fn run(a: &Args) -> i32 {
    let mut report = String::new();
    let Some(sc) = configs::all_scenarios()
        .into_iter()
        .find(|s| s.name == a.scenario && !s.idle && s.tls == Tls::None)
    else {
        eprintln!("profile: {} is not a plain-HTTP wrk scenario", a.scenario);
        return 2;
    };
    let _ = std::fs::create_dir_all(&a.out);
    crate::procs::raise_nofile(65536);
    let tmp = std::env::temp_dir().join(format!("engine-bench-profile-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&tmp);
    let Some(origin) = a.origin.clone() else {
        eprintln!("profile: no origin binary (cargo build --release -p engine-bench)");
        return 1;
    };
    let os = match crate::targets::start_origins(&origin, &tmp, 2) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("profile: {e}");
            return 1;
        }
    };
    let script = tmp.join("scenario.lua");
    let _ = std::fs::write(&script, crate::wrk::lua_script(&sc));
    let _ = writeln!(
        report,
        "# profile of {} in {} ({}), {}\n# produced by: {}\n",
        a.target,
        sc.name,
        sc.what,
        crate::today(),
        std::env::args().collect::<Vec<_>>().join(" ")
    );
    let want_perf = a.tool == "perf" || a.tool == "both";
    let want_cg = a.tool == "callgrind" || a.tool == "both";
    let mut code = 0;
    if want_perf {
        let _ = writeln!(
            report,
            "## perf record -g (on-CPU samples of the target while wrk runs)\n"
        );
        match profile_perf(a, &sc, &os, &tmp, &script) {
            Ok(s) => report.push_str(&s),
            Err(e) => {
                code = 1;
                let _ = writeln!(report, "perf: n/a: {e}");
            }
        }
    }
    if want_cg {
        let _ = writeln!(
            report,
            "\n## valgrind --tool=callgrind (instructions per function, lighter load)\n"
        );
        match profile_callgrind(a, &sc, &os, &tmp, &script) {
            Ok(s) => report.push_str(&s),
            Err(e) => {
                code = 1;
                let _ = writeln!(report, "callgrind: n/a: {e}");
            }
        }
    }
    drop(os);
    let path = a.out.join("profile.txt");
    if let Err(e) = std::fs::write(&path, &report) {
        eprintln!("profile: cannot write {}: {e}", path.display());
        return 1;
    }
    eprintln!("[engine-bench] wrote {}", path.display());
    let _ = std::fs::remove_dir_all(&tmp);
    code
}

fn profile_perf(
    a: &Args,
    sc: &configs::Scenario,
    os: &crate::targets::OriginSet,
    tmp: &Path,
    script: &Path,
) -> Result<String, String> {
    let dir = tmp.join("perf");
    let _ = std::fs::create_dir_all(&dir);
    let (cmd, port) = target_cmd(a, sc, os, &dir)?;
    let mut p = Proc::spawn(cmd, &dir.join("out.log")).map_err(|e| e.to_string())?;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    wait_http(addr, Duration::from_secs(8), &mut p)?;
    let _ = crate::wrk::run(script, &crate::wrk::url(sc, port), sc.connections, 2);
    let data = dir.join("perf.data");
    let pids: Vec<String> = p.pids().iter().map(|x| x.to_string()).collect();
    let mut rec = Command::new("perf");
    rec.args(["record", "-F", "999", "-g", "-o"])
        .arg(&data)
        .args([
            "-p",
            &pids.join(","),
            "--",
            "sleep",
            &a.duration.to_string(),
        ]);
    let rec_line = crate::procs::command_line(&rec);
    let h = std::thread::spawn(move || run_bounded(rec, Duration::from_secs(a_dur_limit())));
    std::thread::sleep(Duration::from_millis(300));
    let load = wrk_load(script, port, sc, a.duration.saturating_sub(1).max(1));
    let (ok, _o, e) = h
        .join()
        .map_err(|_| "perf thread panicked".to_string())?
        .map_err(|e| format!("perf did not run: {e}"))?;
    p.stop();
    if !ok && !data.exists() {
        return Err(format!("perf record failed: {}", e.trim()));
    }
    let mut rep = Command::new("perf");
    rep.args([
        "report",
        "--stdio",
        "--no-children",
        "--percent-limit",
        "0.5",
        "--sort",
        "dso,symbol",
        "-g",
        "none",
        "-i",
    ])
    .arg(&data);
    let rep_line = crate::procs::command_line(&rep);
    let (_ok, out, err) = run_bounded(rep, Duration::from_secs(120)).map_err(|e| e.to_string())?;
    let top: Vec<&str> = out
        .lines()
        .filter(|l| !l.trim().is_empty())
        .take(70)
        .collect();
    Ok(format!(
        "load: {load}\nrecord: {rec_line}\nreport: {rep_line}\n\n{}\n{}\n",
        top.join("\n"),
        if top.is_empty() { err } else { String::new() }
    ))
}

fn a_dur_limit() -> u64 {
    120
}

fn profile_callgrind(
    a: &Args,
    sc: &configs::Scenario,
    os: &crate::targets::OriginSet,
    tmp: &Path,
    script: &Path,
) -> Result<String, String> {
    let dir = tmp.join("callgrind");
    let _ = std::fs::create_dir_all(&dir);
    let (inner, port) = target_cmd(a, sc, os, &dir)?;
    let outf = dir.join("callgrind.out");
    let mut cmd = Command::new("valgrind");
    cmd.args(["--tool=callgrind", "--trace-children=no"])
        .arg(format!("--callgrind-out-file={}", outf.display()));
    for (k, v) in inner.get_envs() {
        if let Some(v) = v {
            cmd.env(k, v);
        }
    }
    cmd.arg(inner.get_program()).args(inner.get_args());
    if a.target == "nginx" {
        // nginx's master forks workers; callgrind would only see the master
        cmd.arg("-g").arg("master_process off;");
    }
    let mut p = Proc::spawn(cmd, &dir.join("out.log")).map_err(|e| e.to_string())?;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    wait_http(addr, Duration::from_secs(60), &mut p)?;
    let secs = (a.duration / 3).clamp(2, 10);
    let mut light = sc.clone();
    light.connections = 8;
    let load = wrk_load(script, port, &light, secs);
    // SIGTERM and a long grace: callgrind writes its file at exit
    // SAFETY: signalling our own child's group.
    unsafe { libc::kill(-p.pgid, libc::SIGTERM) };
    for _ in 0..300 {
        if !p.alive() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    p.stop();
    // callgrind may write one file per thread: outf or outf-<tid> etc.
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| e.to_string())?
        .flatten()
        .map(|e| e.path())
        .filter(|f| {
            f.file_name()
                .and_then(|n| n.to_str())
                .map(|n| n.starts_with("callgrind.out"))
                .unwrap_or(false)
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(format!(
            "no callgrind output (the target did not exit cleanly?): {}",
            p.log_tail(5)
        ));
    }
    let mut ann = Command::new("callgrind_annotate");
    ann.arg("--threshold=99").args(&files);
    let ann_line = crate::procs::command_line(&ann);
    let (_ok, out, err) = run_bounded(ann, Duration::from_secs(120)).map_err(|e| e.to_string())?;
    let top: Vec<&str> = out.lines().take(80).collect();
    Ok(format!(
        "load: {load}\nannotate: {ann_line}\n\n{}\n{}\n",
        top.join("\n"),
        if top.is_empty() { err } else { String::new() }
    ))
}
