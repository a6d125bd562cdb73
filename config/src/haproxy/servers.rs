//! `server` and `default-server` lines, and the addresses of `server` and `bind`: the
//! engine takes explicit IP:port addresses only (no `*`, no names, no port ranges).

use std::net::{IpAddr, SocketAddr};

use super::emit::{at, toml_str, At, Table};
use super::model::{duration, Directive};
use super::report::Reports;

/// One `server` line, with the `default-server` options before it applied first.
#[derive(Debug, Clone)]
pub(crate) struct ServerSpec {
    pub d: Directive,
    pub name: String,
    /// The engine's form; `None` when it cannot be carried.
    pub address: Option<String>,
    pub check: Option<At<bool>>,
    pub inter: Option<At<String>>,
    pub rise: Option<At<i64>>,
    pub fall: Option<At<i64>>,
    pub slowstart: Option<At<String>>,
    pub observe: Option<usize>,
    pub error_limit: Option<At<i64>>,
    pub cookie: Option<At<String>>,
    pub backup: Option<At<bool>>,
    pub weight: Option<At<i64>>,
    pub maxconn: Option<At<i64>>,
}

/// Server options that take an argument (the rest are flags).
const WITH_ARG: &[&str] = &[
    "inter",
    "fastinter",
    "downinter",
    "rise",
    "fall",
    "cookie",
    "weight",
    "maxconn",
    "maxqueue",
    "minconn",
    "slowstart",
    "port",
    "addr",
    "verify",
    "sni",
    "ca-file",
    "crt",
    "ciphers",
    "ciphersuites",
    "observe",
    "error-limit",
    "on-error",
    "on-marked-down",
    "on-marked-up",
    "resolvers",
    "init-addr",
    "resolve-prefer",
    "resolve-net",
    "agent-port",
    "agent-inter",
    "agent-send",
    "agent-addr",
    "track",
    "redir",
    "id",
    "pool-max-conn",
    "pool-purge-delay",
    "pool-low-conn",
    "proto",
    "check-sni",
    "check-proto",
    "alpn",
    "check-alpn",
    "max-reuse",
    "tcp-ut",
    "namespace",
    "source",
    "usesrc",
    "socks4",
    "proxy-v2-options",
    "ws",
    "log-proto",
    "crl-file",
    "ssl-min-ver",
    "ssl-max-ver",
    "curves",
    "sigalgs",
    "client-sigalgs",
    "hash-key",
    "guid",
    "shard",
];

impl ServerSpec {
    /// `server NAME ADDRESS [options]`; `defaults`: the `default-server` lines before it.
    pub fn parse(d: &Directive, defaults: &[Directive], rep: &mut Reports) -> Option<ServerSpec> {
        let (Some(name), Some(addr)) = (d.words.get(1), d.words.get(2)) else {
            rep.not_carried(
                d,
                "a server line needs a name and an address",
                "write the server as a [[backend.server]] with name and address",
            );
            return None;
        };
        let address = match server_address(addr) {
            Ok((a, note)) => {
                if let Some(n) = note {
                    rep.changed(d, n);
                }
                Some(a)
            }
            Err((why, instead)) => {
                rep.not_carried(d, why, instead);
                None
            }
        };
        let mut s = ServerSpec {
            d: d.clone(),
            name: name.clone(),
            address,
            check: None,
            inter: None,
            rise: None,
            fall: None,
            slowstart: None,
            observe: None,
            error_limit: None,
            cookie: None,
            backup: None,
            weight: None,
            maxconn: None,
        };
        for ds in defaults {
            s.options(ds, &ds.words[1..], rep);
        }
        s.options(d, &d.words[3..], rep);
        Some(s)
    }

    fn options(&mut self, d: &Directive, words: &[String], rep: &mut Reports) {
        let mut i = 0;
        while i < words.len() {
            let w = words[i].to_ascii_lowercase();
            let arg = if WITH_ARG.contains(&w.as_str()) {
                i += 1;
                match words.get(i) {
                    Some(a) => Some(a.clone()),
                    None => {
                        rep.not_carried(
                            d,
                            format!("`{w}` without its value"),
                            "give the option its value in lb.toml",
                        );
                        break;
                    }
                }
            } else {
                None
            };
            self.option(d, &w, arg, rep);
            i += 1;
        }
    }

    fn option(&mut self, d: &Directive, w: &str, arg: Option<String>, rep: &mut Reports) {
        let n = d.no;
        let a = arg.clone().unwrap_or_default();
        let int = |rep: &mut Reports| match a.parse::<i64>() {
            Ok(v) if v >= 0 => Some(at(v, n)),
            _ => {
                rep.not_carried(
                    d,
                    format!("`{w} {a}`: not a number"),
                    "write the number in lb.toml",
                );
                None
            }
        };
        let time = |rep: &mut Reports| match duration(&a) {
            Ok(v) => Some(at(v, n)),
            Err(e) => {
                rep.not_carried(
                    d,
                    format!("`{w}`: {e}"),
                    "write the duration with a unit in lb.toml, e.g. \"2s\"",
                );
                None
            }
        };
        match w {
            "check" => self.check = Some(at(true, n)),
            "no-check" => self.check = Some(at(false, n)),
            "inter" => self.inter = time(rep).or(self.inter.take()),
            "rise" => self.rise = int(rep).or(self.rise.take()),
            "fall" => self.fall = int(rep).or(self.fall.take()),
            "slowstart" => self.slowstart = time(rep).or(self.slowstart.take()),
            "observe" => self.observe = Some(n),
            "error-limit" => self.error_limit = int(rep).or(self.error_limit.take()),
            "on-error" if a == "mark-down" || a == "fail-check" => {}
            "cookie" => self.cookie = Some(at(a, n)),
            "backup" => self.backup = Some(at(true, n)),
            "no-backup" => self.backup = None,
            "weight" => self.weight(d, int(rep), rep),
            "maxconn" => self.maxconn = int(rep).or(self.maxconn.take()),
            "enabled" => {}
            "disabled" => rep.not_carried(
                d,
                format!("server {} starts in maintenance in HAProxy; the engine has no field for a server that starts in MAINT, so it takes traffic at once", self.name),
                format!("after the engine starts, send `disable server BACKEND/{}` on the admin socket (or leave the server out of lb.toml)", self.name),
            ),
            "fastinter" | "downinter" => rep.not_needed(
                d,
                format!("`{w}`: the engine probes at a quarter of the interval while a server changes state"),
            ),
            "maxqueue" => rep.not_carried(
                d,
                "a queue limit per server",
                "backend.max_queue (requests waiting in the backend) with the waiting room past it",
            ),
            "ssl" | "check-ssl" | "verify" | "sni" | "ca-file" | "crt" | "alpn" => rep.not_carried(
                d,
                format!("`{w}`: TLS to the servers; the engine speaks plain HTTP to them"),
                "serve plain HTTP on the servers' private network",
            ),
            "send-proxy" | "send-proxy-v2" | "send-proxy-v2-ssl" | "send-proxy-v2-ssl-cn" => rep.not_carried(
                d,
                format!("`{w}`: the PROXY protocol"),
                "the engine sends the client's address in X-Forwarded-For (forwarded_for = true); configure Moodle's reverse-proxy settings for it",
            ),
            "resolvers" | "init-addr" | "resolve-prefer" | "resolve-net" => rep.not_carried(
                d,
                format!("`{w}`: DNS resolution of servers"),
                "write each server's IP address",
            ),
            _ => {
                let shown = match &arg {
                    Some(a) => format!("{w} {a}"),
                    None => w.to_owned(),
                };
                rep.not_carried(d, format!("the server option `{shown}`"), "no counterpart in the engine: leave it out (server fields: cookie, weight, maxconn, backup, check)");
            }
        }
    }

    fn weight(&mut self, d: &Directive, w: Option<At<i64>>, rep: &mut Reports) {
        match w {
            Some(v) if v.v == 0 => rep.not_carried(
                d,
                format!("weight 0 (server {} takes no new clients): the file takes weights from 1 to 256", self.name),
                format!("after the engine starts, send `set weight BACKEND/{} 0` on the admin socket", self.name),
            ),
            Some(v) if v.v > 256 => rep.not_carried(d, format!("weight {} is over 256", v.v), "weight = 256"),
            Some(v) => self.weight = Some(v),
            None => {}
        }
    }

    /// The `[[backend.server]]` table; `checked`: the backend has a `[backend.check]`.
    pub fn table(&self, checked: bool) -> Table {
        let mut t = Table::new(
            "[[backend.server]]",
            self.d.no,
            format!("server {}", self.name),
        );
        t.str("name", &at(self.name.clone(), self.d.no));
        match &self.address {
            Some(a) => t.raw("address", toml_str(a), self.d.no),
            // Written as given so that engine check names it.
            None => t.raw("address", toml_str(&self.d.words[2]), self.d.no),
        }
        t.opt_str("cookie", &self.cookie);
        t.opt_int("weight", &self.weight);
        t.opt_int("maxconn", &self.maxconn);
        t.opt_bool("backup", &self.backup);
        if checked && !self.check.as_ref().is_some_and(|c| c.v) {
            let line = self.check.as_ref().map_or(self.d.no, |c| c.line);
            t.raw("check", "false".into(), line);
        }
        t
    }
}

/// A server address in the engine's form, with a note when it changed; or why it
/// cannot be carried and what to write instead.
pub(crate) fn server_address(s: &str) -> Result<(String, Option<String>), (String, String)> {
    let t = strip_family(s)?;
    if let Ok(a) = t.parse::<SocketAddr>() {
        return Ok((a.to_string(), None));
    }
    if let (false, Ok(ip)) = (t.contains(':'), t.parse::<IpAddr>()) {
        let a = SocketAddr::new(ip, 80);
        return Ok((a.to_string(), Some(format!("\"{s}\" has no port: HAProxy connects to the port the client came in on; written \"{a}\""))));
    }
    let (host, port) = split_port(t, s)?;
    match host.parse::<IpAddr>() {
        Ok(ip) => Ok((SocketAddr::new(ip, port).to_string(), None)),
        Err(_) => Err((
            format!("\"{host}\" is a host name: the engine does not resolve names"),
            format!("write the server's IP address, e.g. \"10.0.0.1:{port}\""),
        )),
    }
}

/// `ipv4@`/`ipv6@` dropped; UNIX sockets and the like refused.
fn strip_family(s: &str) -> Result<&str, (String, String)> {
    let t = s.trim();
    let t = t
        .strip_prefix("ipv4@")
        .or_else(|| t.strip_prefix("ipv6@"))
        .or_else(|| t.strip_prefix("tcp@"))
        .or_else(|| t.strip_prefix("tcp4@"))
        .or_else(|| t.strip_prefix("tcp6@"))
        .unwrap_or(t);
    if t.starts_with('/') || t.contains('@') {
        return Err((
            format!("\"{s}\": UNIX sockets and special addresses"),
            "the engine takes IP:port addresses only".into(),
        ));
    }
    if t.contains('$') {
        return Err((
            format!("\"{s}\" uses an environment variable"),
            "write the address itself".into(),
        ));
    }
    Ok(t)
}

/// `HOST:PORT` split at the last colon; port ranges and offsets refused.
fn split_port<'a>(t: &'a str, s: &str) -> Result<(&'a str, u16), (String, String)> {
    let Some((host, port)) = t.rsplit_once(':') else {
        return Err((
            format!("\"{s}\" has no port"),
            "write IP:port, e.g. \"10.0.0.1:80\"".into(),
        ));
    };
    match port.parse::<u16>() {
        Ok(p) if p > 0 && port.bytes().all(|b| b.is_ascii_digit()) => Ok((host, p)),
        _ => Err((
            format!("\"{s}\": the port \"{port}\" is not one port (ranges and +/- offsets are not carried)"),
            "write one address per port, e.g. \"10.0.0.1:80\"".into(),
        )),
    }
}

/// The listening addresses of one `bind` address, with a note when they changed.
/// `v6only`: the bind line says so (else `:::80` takes IPv4 too, as in HAProxy).
pub(crate) fn bind_addresses(
    s: &str,
    v6only: bool,
) -> Result<(Vec<String>, Option<String>), (String, String)> {
    let t = strip_family(s)?;
    if let Ok(a) = t.parse::<SocketAddr>() {
        return Ok((vec![a.to_string()], None));
    }
    let (host, port) = split_port(t, s)?;
    let v4 = format!("0.0.0.0:{port}");
    let v6 = format!("[::]:{port}");
    match host {
        "" | "*" | "0.0.0.0" => Ok((
            vec![v4.clone()],
            Some(format!("\"{s}\": the engine wants explicit addresses: written \"{v4}\" (every IPv4 address)")),
        )),
        "::" | "[::]" if v6only => Ok((vec![v6.clone()], Some(format!("\"{s}\": written \"{v6}\"")))),
        "::" | "[::]" => Ok((
            vec![v6.clone(), v4.clone()],
            Some(format!("\"{s}\" takes IPv6 and IPv4 in HAProxy; the engine binds [::] for IPv6 only, so both \"{v6}\" and \"{v4}\" are written")),
        )),
        h => match h.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
            Ok(ip) => Ok((vec![SocketAddr::new(ip, port).to_string()], None)),
            Err(_) => Err((
                format!("\"{h}\" is a host name: the engine binds IP addresses"),
                format!("write the address to listen on, e.g. \"0.0.0.0:{port}\""),
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_addresses() {
        assert_eq!(
            server_address("192.168.1.101:80").unwrap().0,
            "192.168.1.101:80"
        );
        assert_eq!(server_address("ipv6@::1:8080").unwrap().0, "[::1]:8080");
        assert_eq!(server_address("[::1]:8080").unwrap().0, "[::1]:8080");
        let (a, note) = server_address("10.0.0.1").unwrap();
        assert_eq!(a, "10.0.0.1:80");
        assert!(note.is_some());
        assert!(server_address("app1.example.edu:80").is_err());
        assert!(server_address("/run/php.sock").is_err());
        assert!(server_address("unix@/x").is_err());
        assert!(server_address("10.0.0.1:80-81").is_err());
        assert!(server_address("10.0.0.1:+1").is_err());
        assert!(server_address("${APP}:80").is_err());
    }

    #[test]
    fn bind_address_forms() {
        assert_eq!(bind_addresses("*:80", false).unwrap().0, ["0.0.0.0:80"]);
        assert_eq!(bind_addresses(":443", false).unwrap().0, ["0.0.0.0:443"]);
        assert_eq!(
            bind_addresses(":::80", false).unwrap().0,
            ["[::]:80", "0.0.0.0:80"]
        );
        assert_eq!(bind_addresses(":::80", true).unwrap().0, ["[::]:80"]);
        let (a, note) = bind_addresses("127.0.0.1:8080", false).unwrap();
        assert_eq!((a, note), (vec!["127.0.0.1:8080".to_owned()], None));
        assert_eq!(bind_addresses("::1:80", false).unwrap().0, ["[::1]:80"]);
        assert!(bind_addresses("*:80-90", false).is_err());
        assert!(bind_addresses("lb.example.edu:80", false).is_err());
        assert!(bind_addresses("*", false).is_err());
    }
}
