//! `origin --name s1 --listen 127.0.0.1:9101 [--listen ADDR | --listen NAME=ADDR ...]`
//!
//! Runs Moodle-like origins (see the `tools` crate documentation for the endpoints) until
//! killed. Each `--listen` takes the most recent `--name` before it (or the first name
//! given, or "origin"); `NAME=ADDR` names one listener directly. Prints one line per
//! origin: `origin NAME listening on ADDR`.

use std::net::SocketAddr;
use std::process::ExitCode;

const USAGE: &str =
    "usage: origin --name NAME --listen ADDR [--listen ADDR | --listen NAME=ADDR | --name NAME ...]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // (name given before it, addr)
    let mut plan: Vec<(Option<String>, SocketAddr)> = Vec::new();
    let mut current: Option<String> = None;
    let mut first_name: Option<String> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (a.as_str(), None),
        };
        let mut value = || inline.clone().or_else(|| it.next().cloned());
        match flag {
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            "--name" | "-n" => {
                let Some(v) = value() else {
                    eprintln!("--name needs a value\n{USAGE}");
                    return ExitCode::from(2);
                };
                first_name.get_or_insert_with(|| v.clone());
                current = Some(v);
            }
            "--listen" | "-l" => {
                let Some(v) = value() else {
                    eprintln!("--listen needs a value\n{USAGE}");
                    return ExitCode::from(2);
                };
                let (name, addr) = match v.rsplit_once('=') {
                    Some((n, a)) => (Some(n.to_string()), a.to_string()),
                    None => (current.clone(), v),
                };
                match addr.parse::<SocketAddr>() {
                    Ok(addr) => plan.push((name, addr)),
                    Err(e) => {
                        eprintln!("--listen {addr}: {e}\n{USAGE}");
                        return ExitCode::from(2);
                    }
                }
            }
            other => {
                eprintln!("unknown argument {other}\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    if plan.is_empty() {
        eprintln!("no --listen given\n{USAGE}");
        return ExitCode::from(2);
    }
    let mut origins = Vec::new();
    for (name, addr) in plan {
        let name = name
            .or_else(|| first_name.clone())
            .unwrap_or_else(|| "origin".to_string());
        match tools::origin::Origin::start_on(&name, addr) {
            Ok(o) => {
                println!("origin {} listening on {}", o.name(), o.addr());
                origins.push(o);
            }
            Err(e) => {
                eprintln!("origin {name}: cannot listen on {addr}: {e}");
                return ExitCode::from(1);
            }
        }
    }
    loop {
        std::thread::park();
    }
}
