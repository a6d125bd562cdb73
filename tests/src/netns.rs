//! Network namespaces the test builds itself (`ip netns`): hosts on one bridge, with
//! addresses that exist only inside them. [`Lan`] makes a switch namespace holding a
//! bridge and, per host, a namespace whose `eth0` is a veth cabled to it; dropping it
//! deletes every namespace (and with them the links and addresses). A thread can
//! [`Netns::enter`] a namespace: the sockets it makes from then on live there.

use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::process::{Command, Output, Stdio};

/// Fails (never skips) when `ip` is missing.
pub fn require_ip() {
    let ok = Command::new("ip")
        .args(["netns", "list"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "`ip netns` is needed (apt-get install iproute2; tests/run.sh installs it)"
    );
}

fn run(args: &[&str]) -> Output {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("ip {args:?}: {e}"));
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// One namespace, deleted when dropped (unless a [`Netns::handle`]).
pub struct Netns {
    pub name: String,
    owned: bool,
}

impl Netns {
    pub fn add(name: &str) -> Netns {
        let _ = Command::new("ip")
            .args(["netns", "del", name])
            .stderr(Stdio::null())
            .status();
        run(&["netns", "add", name]);
        let ns = Netns {
            name: name.to_string(),
            owned: true,
        };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// Another handle on a namespace (for another thread); it deletes nothing.
    pub fn handle(&self) -> Netns {
        Netns {
            name: self.name.clone(),
            owned: false,
        }
    }

    /// `ip -n NAME ARGS...`, which must succeed.
    pub fn ip(&self, args: &[&str]) -> Output {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        run(&all)
    }

    /// A command run inside (`ip netns exec NAME PROGRAM`).
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// `sysctl -w KEY=VALUE` inside.
    pub fn sysctl(&self, kv: &str) {
        let out = self
            .command("sysctl")
            .args(["-q", "-w", kv])
            .output()
            .expect("sysctl");
        assert!(out.status.success(), "sysctl {kv}: {out:?}");
    }

    /// Moves the calling thread into this namespace (for the rest of its life).
    pub fn enter(&self) {
        let f = std::fs::File::open(format!("/var/run/netns/{}", self.name))
            .unwrap_or_else(|e| panic!("open netns {}: {e}", self.name));
        // SAFETY: setns on a namespace descriptor; affects the calling thread only.
        let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(
            r,
            0,
            "setns {}: {}",
            self.name,
            std::io::Error::last_os_error()
        );
    }

    /// Whether `addr` is on this namespace's `eth0` now.
    pub fn has_addr(&self, addr: Ipv4Addr) -> bool {
        let out = Command::new("ip")
            .args(["-n", &self.name, "-4", "-o", "addr", "show", "dev", "eth0"])
            .output();
        out.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(&format!("inet {addr}/")))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

/// Hosts on one bridge, each at `10.213.0.N/24` on its `eth0`.
pub struct Lan {
    pub hosts: Vec<(Netns, Ipv4Addr)>,
    /// Dropped last: holds the bridge the hosts are cabled to.
    _switch: Netns,
}

impl Lan {
    /// `hosts`: (name, last octet). Names get `prefix` in front (unique per test run).
    pub fn new(prefix: &str, hosts: &[(&str, u8)]) -> Lan {
        require_ip();
        let sw = Netns::add(&format!("{prefix}sw"));
        sw.ip(&["link", "add", "br0", "type", "bridge"]);
        sw.ip(&["link", "set", "br0", "up"]);
        let mut out = Vec::new();
        for (i, (name, octet)) in hosts.iter().enumerate() {
            let ns = Netns::add(&format!("{prefix}{name}"));
            let port = format!("p{i}");
            sw.ip(&[
                "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns.name,
            ]);
            sw.ip(&["link", "set", &port, "master", "br0", "up"]);
            let addr = Ipv4Addr::new(10, 213, 0, *octet);
            ns.ip(&["addr", "add", &format!("{addr}/24"), "dev", "eth0"]);
            ns.ip(&["link", "set", "eth0", "up"]);
            out.push((ns, addr));
        }
        Lan {
            hosts: out,
            _switch: sw,
        }
    }

    /// The host named `name` (without the prefix).
    pub fn host(&self, name: &str) -> &Netns {
        &self
            .hosts
            .iter()
            .find(|(n, _)| n.name.ends_with(name))
            .unwrap_or_else(|| panic!("no host {name}"))
            .0
    }

    pub fn addr(&self, name: &str) -> Ipv4Addr {
        self.hosts
            .iter()
            .find(|(n, _)| n.name.ends_with(name))
            .map(|(_, a)| *a)
            .unwrap_or_else(|| panic!("no host {name}"))
    }
}
