//! `engine demo`: three Moodle-like nodes and a backup (from `tools`), a generated
//! self-signed certificate, and the load balancer in front of them on loopback, in the
//! shape of the spec's lb.example.toml. Runs until Ctrl-C.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;

use anyhow::Context;
use tools::origin::Origin;

use crate::runtime::Options;

/// For each wanted port, that one or the next free one near it, never one already
/// picked for another (`free` says whether a port can be bound now); 0 where nothing
/// near is free (the caller then asks the kernel for any).
pub fn pick_ports(wanted: &[u16], free: impl Fn(u16) -> bool) -> Vec<u16> {
    let mut picked: Vec<u16> = Vec::new();
    for &want in wanted {
        let p = (want..want.saturating_add(50))
            .find(|p| !picked.contains(p) && !wanted[picked.len() + 1..].contains(p) && free(*p))
            .unwrap_or(0);
        picked.push(p);
    }
    picked
}

fn free_on_loopback(p: u16) -> bool {
    TcpListener::bind(("127.0.0.1", p)).is_ok()
}

/// A port the kernel picks, for when nothing near the wanted one is free.
fn any_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// The demo configuration for origins at `nodes` (the last one the backup).
pub fn config_text(nodes: &[SocketAddr], http: u16, https: u16, plain: u16, cert: &Path) -> String {
    let mut s = format!(
        r#"# engine demo: generated configuration
[global]
maxconn = 20000

[defaults]
timeout_connect = "2s"
retries = 3

[log]
access = "stdout"
format = "httplog"
dontlognull = true

[[frontend]]
name = "http"
bind = ["127.0.0.1:{http}"]
backend = "moodle"
redirect_https = {{ code = 301, except_prefixes = ["/.well-known/acme-challenge/"], port = {https} }}

[[frontend]]
name = "https"
bind = ["127.0.0.1:{https}"]
backend = "moodle"
tls = {{ certs = ["{cert}"] }}
set_headers = {{ "X-Forwarded-Proto" = "https", "X-Forwarded-SSL" = "on" }}

[[frontend]]
name = "plain"
bind = ["127.0.0.1:{plain}"]
backend = "moodle"

[[backend]]
name = "moodle"
balance = "roundrobin"

[backend.cookie]
name = "SERVERID"
mode = "insert"
indirect = true
nocache = true
httponly = true

[backend.check]
uri = "/login/index.php"
host = "localhost"
expect_status = "200"
expect_string = "Moodle"
interval = "2s"
"#,
        cert = cert.display()
    );
    for (i, a) in nodes.iter().enumerate() {
        let backup = i + 1 == nodes.len() && nodes.len() > 1;
        let name = if backup {
            "moodle_app_backup".to_string()
        } else {
            format!("moodle_app_{}", i + 1)
        };
        let cookie = if backup {
            "s_b".to_string()
        } else {
            format!("s{}", i + 1)
        };
        s.push_str(&format!(
            "\n[[backend.server]]\nname = \"{name}\"\naddress = \"{a}\"\ncookie = \"{cookie}\"\n"
        ));
        if backup {
            s.push_str("backup = true\n");
        }
    }
    s
}

pub fn run(opts: Options) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("engine-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).context("creating the demo folder")?;
    let cert = tools::certs::write_combined(
        &dir,
        "demo.pem",
        &["localhost", "127.0.0.1", "moodle.example.edu"],
    );
    let names = [
        "moodle_app_1",
        "moodle_app_2",
        "moodle_app_3",
        "moodle_app_backup",
    ];
    let origins: Vec<Origin> = names
        .iter()
        .map(|n| Origin::start(n))
        .collect::<Result<_, _>>()
        .context("starting the demo origins")?;
    let addrs: Vec<SocketAddr> = origins.iter().map(|o| o.addr()).collect();
    let ports: Vec<u16> = pick_ports(&[8080, 8443, 8081], free_on_loopback)
        .into_iter()
        .map(|p| if p == 0 { any_port() } else { p })
        .collect();
    let (http, https, plain) = (ports[0], ports[1], ports[2]);
    let text = config_text(&addrs, http, https, plain, &cert);
    let path = dir.join("lb.toml");
    std::fs::write(&path, &text).context("writing the demo configuration")?;
    let cfg = config::load_str(&text, &path)
        .map_err(|d| {
            anyhow::anyhow!(d
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join("\n"))
        })?
        .config;
    let running = crate::runtime::start(cfg, opts)?;
    println!(
        "engine demo: {} cores, driver {}",
        running.cores(),
        running.driver().as_str()
    );
    println!(
        "  origins:   {}",
        origins
            .iter()
            .map(|o| format!("{}={}", o.name(), o.addr()))
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!("  config:    {}", path.display());
    println!();
    println!("Try:");
    println!("  http://127.0.0.1:{http}/login/index.php      (redirects to HTTPS)");
    println!("  https://localhost:{https}/login/index.php    (self-signed: curl -k)");
    println!("  http://127.0.0.1:{plain}/login/index.php     (plain HTTP, no redirect)");
    println!(
        "  curl -k -c jar -b jar -d username=alice https://localhost:{https}/login/index.php -L"
    );
    println!("  curl -s http://127.0.0.1:{plain}/download?size=1048576 | wc -c");
    println!();
    println!("Ctrl-C stops.");
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ])?;
    let _ = signals.forever().next();
    running.stop();
    drop(origins);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_frontend_gets_its_own_port() {
        // 8080 taken by another program: the redirecting frontend moves, but never onto
        // the port the plain frontend wants (nor the other way round).
        assert_eq!(
            pick_ports(&[8080, 8443, 8081], |p| p != 8080),
            [8082, 8443, 8081]
        );
        let all_taken = |p| ![8080, 8081, 8443].contains(&p);
        assert_eq!(
            pick_ports(&[8080, 8443, 8081], all_taken),
            [8082, 8444, 8083]
        );
        assert_eq!(
            pick_ports(&[8080, 8443, 8081], |_| true),
            [8080, 8443, 8081]
        );
    }
}
