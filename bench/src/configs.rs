//! Scenarios, and the equivalent engine / HAProxy / nginx configurations generated for each.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Tls {
    None,
    /// ECDSA P-256 certificate (keep-alive TLS)
    Ec,
    /// RSA-2048 certificate (new handshakes)
    Rsa,
}

#[derive(Clone, Debug)]
pub struct Scenario {
    pub name: &'static str,
    pub what: &'static str,
    pub method: &'static str,
    pub path: &'static str,
    pub body_len: usize,
    /// the backend inserts a SERVERID cookie and the client sends `SERVERID=s1`
    pub sticky: bool,
    /// `Connection: close`: a new TCP (and TLS) connection per request
    pub close: bool,
    pub tls: Tls,
    /// TLS session resumption on in all three servers (off: every handshake a full one;
    /// wrk offers the session of its previous connection whenever it can)
    pub resume: bool,
    /// 10,000 mostly idle keep-alive clients with a trickle of requests
    pub idle: bool,
    /// Idle clients arrive this many at a time (1: one after another).
    pub burst: usize,
    pub connections: usize,
    /// HTTP/2 to the clients (over TLS, ALPN h2 offered by all three): the load is h2load
    pub h2: bool,
    /// concurrent streams per HTTP/2 connection (h2load `-m`)
    pub streams: usize,
    /// the Moodle quiz page and its 40 assets, loaded over HTTP/1.1 and over HTTP/2
    pub page: bool,
}

/// What the scenarios share unless they say otherwise.
const BASE: Scenario = Scenario {
    name: "",
    what: "",
    method: "GET",
    path: "/",
    body_len: 0,
    sticky: false,
    close: false,
    tls: Tls::None,
    resume: true,
    idle: false,
    burst: 1,
    connections: 64,
    h2: false,
    streams: 1,
    page: false,
};

/// Every scenario, in the order they run and are reported.
pub fn all_scenarios() -> Vec<Scenario> {
    let mut v = plain_scenarios();
    v.extend(tls_scenarios());
    v.extend(idle_scenarios());
    v.extend(h2_scenarios());
    v
}

/// Plain HTTP under wrk.
fn plain_scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "get-ka",
            what: "small GET / over keep-alive, round robin, no persistence",
            ..BASE
        },
        Scenario {
            name: "get-ka-sticky",
            what: "small GET / over keep-alive; the backend has cookie persistence and every request carries Cookie: SERVERID=s1 (the main scenario)",
            sticky: true,
            ..BASE
        },
        Scenario {
            name: "get-ka-sticky-512",
            what: "the main scenario at an exam-start peak: 512 keep-alive connections, every request with Cookie: SERVERID=s1",
            sticky: true,
            connections: 512,
            ..BASE
        },
        Scenario {
            name: "get-close",
            what: "small GET / with Connection: close: a new client connection per request (upstream stays pooled)",
            close: true,
            ..BASE
        },
        Scenario {
            name: "get-64k",
            what: "GET /download?size=65536 over keep-alive",
            path: "/download?size=65536&mode=cl",
            ..BASE
        },
        Scenario {
            name: "get-1m",
            what: "GET /download?size=1048576 over keep-alive, 16 connections",
            path: "/download?size=1048576&mode=cl",
            connections: 16,
            ..BASE
        },
        Scenario {
            name: "post-10k",
            what: "POST /upload with a 10 KiB body over keep-alive",
            method: "POST",
            path: "/upload",
            body_len: 10 * 1024,
            ..BASE
        },
        Scenario {
            name: "post-1m",
            what: "POST /upload with a 1 MiB body over keep-alive, 16 connections (a Moodle assignment upload)",
            method: "POST",
            path: "/upload",
            body_len: 1024 * 1024,
            connections: 16,
            ..BASE
        },
    ]
}

/// HTTPS under wrk: keep-alive, full handshakes, resumed ones.
fn tls_scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "tls-ka",
            what: "small GET / over TLS keep-alive (ECDSA P-256 certificate)",
            tls: Tls::Ec,
            ..BASE
        },
        Scenario {
            name: "tls-handshake",
            what: "small GET / with Connection: close over TLS: a full handshake per request (RSA-2048 certificate; resumption off in all three servers, as wrk would resume)",
            tls: Tls::Rsa,
            close: true,
            resume: false,
            ..BASE
        },
        Scenario {
            name: "tls-handshake-ec",
            what: "small GET / with Connection: close over TLS: a full handshake per request (ECDSA P-256 certificate; resumption off in all three servers)",
            tls: Tls::Ec,
            close: true,
            resume: false,
            ..BASE
        },
        Scenario {
            name: "tls-resume",
            what: "small GET / with Connection: close over TLS with resumption on: wrk resumes its previous session on each new connection (TLS 1.3 PSK; ECDSA P-256 certificate)",
            tls: Tls::Ec,
            close: true,
            ..BASE
        },
    ]
}

/// Idle clients and a trickle of requests: memory per connection.
fn idle_scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "idle-10k",
            what: "10,000 keep-alive clients, each after one request, held idle while a trickle of requests runs over them: memory per idle connection",
            idle: true,
            ..BASE
        },
        Scenario {
            name: "idle-burst",
            what: "5,000 keep-alive clients arriving 500 at a time (an exam start), one request each, then idle: memory per idle connection one second after the last answer, and once settled",
            idle: true,
            burst: 500,
            ..BASE
        },
    ]
}

/// HTTP/2 to the clients over TLS (ECDSA P-256, as tls-ka), under h2load; and idle
/// HTTP/1.1 over TLS, h2-idle's baseline.
fn h2_scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "h2",
            what: "small GET / over HTTP/2 (TLS, ALPN h2; ECDSA P-256 certificate): h2load, 64 connections x 10 concurrent streams",
            tls: Tls::Ec,
            h2: true,
            streams: 10,
            ..BASE
        },
        Scenario {
            name: "h2-idle",
            what: "up to 5,000 HTTP/2 connections over TLS (h2load), each after one request, held idle: memory per idle HTTP/2 connection",
            tls: Tls::Ec,
            h2: true,
            idle: true,
            ..BASE
        },
        Scenario {
            name: "tls-idle",
            what: "up to 5,000 HTTP/1.1 connections over TLS (h2load --h1), each after one request, held idle: memory per idle TLS connection, the baseline of h2-idle",
            tls: Tls::Ec,
            idle: true,
            ..BASE
        },
        Scenario {
            name: "h2-page",
            what: "the Moodle quiz page (GET /mod/quiz/view.php) and its 40 assets through the engine over TLS: HTTP/1.1 on 6 connections against HTTP/2 on one (h2load), page-load time",
            path: "/mod/quiz/view.php",
            tls: Tls::Ec,
            h2: true,
            page: true,
            ..BASE
        },
    ]
}

/// The assets the quiz page references (as the tools crate's origin): stylesheets for
/// even i, scripts for odd i.
pub const PAGE_ASSETS: usize = 40;

/// The path of asset `i` of the quiz page.
pub fn page_asset(i: usize) -> String {
    if i.is_multiple_of(2) {
        format!("/theme/styles{i}.css")
    } else {
        format!("/theme/script{i}.js")
    }
}

/// True when the installed nginx takes `http2 on;` (1.25.1 and later); older ones take
/// `listen ... ssl http2`.
pub fn nginx_http2_on() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| {
        let out = crate::procs::cmd_output("nginx", &["-v"]);
        out.split("nginx/")
            .nth(1)
            .map(|v| {
                let n: Vec<u32> = v
                    .split(|c: char| !c.is_ascii_digit())
                    .take(3)
                    .map(|x| x.parse().unwrap_or(0))
                    .collect();
                (
                    n.first().copied().unwrap_or(0),
                    n.get(1).copied().unwrap_or(0),
                    n.get(2).copied().unwrap_or(0),
                ) >= (1, 25, 1)
            })
            .unwrap_or(false)
    })
}

pub struct Origins {
    /// (name, cookie, port)
    pub servers: Vec<(String, String, u16)>,
}

pub struct Ports {
    pub http: u16,
    pub https: u16,
    /// client connections each proxy accepts (the same for all three)
    pub maxconn: usize,
}

pub struct Certs {
    pub ec: Option<PathBuf>,
    pub rsa: Option<PathBuf>,
    pub error: String,
}

impl Certs {
    pub fn for_tls(&self, t: Tls) -> Option<&Path> {
        match t {
            Tls::None => None,
            Tls::Ec => self.ec.as_deref(),
            Tls::Rsa => self.rsa.as_deref(),
        }
    }
}

/// Self-signed certificates for 127.0.0.1/localhost, each a PEM with certificate and key.
pub fn make_certs(dir: &Path) -> Certs {
    let mut error = String::new();
    let mut one = |name: &str, newkey: &[&str]| -> Option<PathBuf> {
        let key = dir.join(format!("{name}.key"));
        let crt = dir.join(format!("{name}.crt"));
        let pem = dir.join(format!("{name}.pem"));
        let mut cmd = Command::new("openssl");
        cmd.args(["req", "-x509"])
            .args(newkey)
            .args(["-nodes", "-days", "30", "-subj", "/CN=localhost"])
            .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&crt);
        match cmd.output() {
            Ok(o) if o.status.success() => {
                let c = std::fs::read_to_string(&crt).ok()?;
                let k = std::fs::read_to_string(&key).ok()?;
                std::fs::write(&pem, format!("{c}{k}")).ok()?;
                Some(pem)
            }
            Ok(o) => {
                let _ = write!(
                    error,
                    "openssl {name}: {}",
                    String::from_utf8_lossy(&o.stderr)
                );
                None
            }
            Err(e) => {
                let _ = write!(error, "openssl: {e}");
                None
            }
        }
    };
    let ec = one(
        "ec",
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"],
    );
    let rsa = one("rsa", &["-newkey", "rsa:2048"]);
    Certs { ec, rsa, error }
}

/// engine: lb.toml in the shape of the spec's lb.example.toml.
pub fn engine_toml(s: &Scenario, o: &Origins, p: &Ports, cert: Option<&Path>) -> String {
    let mut t = String::new();
    let _ = write!(
        t,
        "# generated by engine-bench\n[global]\nmaxconn = {}\n\n",
        p.maxconn
    );
    t.push_str("[defaults]\ntimeout_connect = \"5s\"\ntimeout_client = \"120s\"\ntimeout_server = \"50s\"\ntimeout_http_request = \"10s\"\ntimeout_keep_alive = \"120s\"\nretries = 3\n\n");
    t.push_str("[log]\naccess = \"off\"\n\n");
    let _ = write!(
        t,
        "[[frontend]]\nname = \"http\"\nbind = [\"127.0.0.1:{}\"]\nbackend = \"pool\"\n\n",
        p.http
    );
    if let Some(c) = cert {
        let _ = write!(
            t,
            "[[frontend]]\nname = \"https\"\nbind = [\"127.0.0.1:{}\"]\nbackend = \"pool\"\n{}tls = {{ certs = [\"{}\"]{} }}\n\n",
            p.https,
            if s.h2 {
                "alpn = [\"h2\", \"http/1.1\"]\n"
            } else {
                ""
            },
            c.display(),
            if s.resume {
                ""
            } else {
                ", session_resumption = false"
            }
        );
    }
    t.push_str("[[backend]]\nname = \"pool\"\nbalance = \"roundrobin\"\n\n");
    if s.sticky {
        t.push_str("[backend.cookie]\nname = \"SERVERID\"\nmode = \"insert\"\nindirect = true\nnocache = true\n\n");
    }
    for (name, cookie, port) in &o.servers {
        let _ = write!(
            t,
            "[[backend.server]]\nname = \"{name}\"\naddress = \"127.0.0.1:{port}\"\ncookie = \"{cookie}\"\n\n"
        );
    }
    t
}

/// HAProxy: one process, 2 threads, server connections reused across clients.
pub fn haproxy_cfg(s: &Scenario, o: &Origins, p: &Ports, cert: Option<&Path>) -> String {
    let mut t = String::new();
    let _ = write!(t, "# generated by engine-bench\nglobal\n    nbthread 2\n    maxconn {m}\n    ssl-default-bind-options ssl-min-ver TLSv1.2\n", m = p.maxconn);
    if cert.is_some() && !s.resume {
        // no session cache (tickets are off on the bind line)
        t.push_str("    tune.ssl.cachesize 0\n");
    }
    t.push('\n');
    let _ = write!(t, "defaults\n    mode http\n    maxconn {}\n", p.maxconn);
    t.push_str("    timeout connect 5s\n    timeout client 120s\n    timeout server 50s\n    timeout http-request 10s\n    timeout http-keep-alive 120s\n    retries 3\n    option forwardfor\n    http-reuse always\n\n");
    let _ = writeln!(t, "frontend http\n    bind 127.0.0.1:{}", p.http);
    if let Some(c) = cert {
        let _ = writeln!(
            t,
            "    bind 127.0.0.1:{} ssl crt {}{}{}",
            p.https,
            c.display(),
            if s.h2 { " alpn h2,http/1.1" } else { "" },
            if s.resume { "" } else { " no-tls-tickets" }
        );
    }
    t.push_str("    default_backend pool\n\nbackend pool\n    balance roundrobin\n");
    if s.sticky {
        t.push_str("    cookie SERVERID insert indirect nocache\n");
    }
    for (name, cookie, port) in &o.servers {
        if s.sticky {
            let _ = writeln!(t, "    server {name} 127.0.0.1:{port} cookie {cookie}");
        } else {
            let _ = writeln!(t, "    server {name} 127.0.0.1:{port}");
        }
    }
    t
}

/// nginx: 2 worker processes, pooled HTTP/1.1 upstream connections. nginx OSS has no
/// sticky cookie insertion; the closest equivalent here routes on the SERVERID cookie to a
/// per-server upstream (exact stickiness), sets the cookie when the client had none, and
/// strips it from what the server receives (like `indirect`).
pub fn nginx_conf(s: &Scenario, o: &Origins, p: &Ports, cert: Option<&Path>, dir: &Path) -> String {
    let d = dir.display();
    let nofile = p.maxconn * 2 + 50;
    let wc = p.maxconn * 2;
    let mut t = String::new();
    let _ = write!(
        t,
        "# generated by engine-bench\nworker_processes 2;\nworker_rlimit_nofile {nofile};\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/nginx-error.log error;\n\nevents {{\n    worker_connections {wc};\n}}\n\nhttp {{\n    access_log off;\n    client_body_temp_path {d}/client_body;\n    proxy_temp_path {d}/proxy_temp;\n    keepalive_timeout 120s;\n    keepalive_requests 100000000;\n    client_max_body_size 64m;\n    client_body_buffer_size 16k;\n    proxy_request_buffering off;\n    proxy_buffer_size 16k;\n    proxy_buffers 8 16k;\n    proxy_max_temp_file_size 0;\n\n"
    );
    // Idle upstream connections kept per worker: as many as maxconn, like the engine's
    // default pool and HAProxy's (no cap), so that no proxy reconnects after a peak.
    let keep = p.maxconn;
    let upstream = |t: &mut String, name: &str, servers: &[&(String, String, u16)]| {
        let _ = writeln!(t, "    upstream {name} {{");
        for (_, _, port) in servers {
            let _ = writeln!(t, "        server 127.0.0.1:{port};");
        }
        let _ = write!(
            t,
            "        keepalive {keep};\n        keepalive_requests 100000000;\n        keepalive_timeout 60s;\n    }}\n"
        );
    };
    let all: Vec<&(String, String, u16)> = o.servers.iter().collect();
    upstream(&mut t, "pool", &all);
    if s.sticky {
        for srv in &o.servers {
            upstream(&mut t, &format!("pool_{}", srv.1), &[srv]);
        }
        t.push_str("    map $cookie_SERVERID $sticky_pool {\n        default pool;\n");
        for (_, cookie, _) in &o.servers {
            let _ = writeln!(t, "        {cookie} pool_{cookie};");
        }
        t.push_str("    }\n    map $upstream_addr $sticky_id {\n        default \"\";\n");
        for (_, cookie, port) in &o.servers {
            let _ = writeln!(t, "        127.0.0.1:{port} {cookie};");
        }
        t.push_str("    }\n    map $cookie_SERVERID $sticky_set {\n        \"\" \"SERVERID=$sticky_id; Path=/\";\n        default \"\";\n    }\n");
        t.push_str("    map $http_cookie $upstream_cookie {\n        default $http_cookie;\n        \"~^SERVERID=[^;]*$\" \"\";\n        \"~^SERVERID=[^;]*;\\s*(?<rest>.*)$\" $rest;\n    }\n");
    }
    t.push_str("\n    server {\n");
    let _ = writeln!(t, "        listen 127.0.0.1:{} reuseport;", p.http);
    if let Some(c) = cert {
        nginx_tls(&mut t, s, p, c);
    }
    t.push_str("        location / {\n");
    if s.sticky {
        t.push_str("            proxy_pass http://$sticky_pool;\n");
    } else {
        t.push_str("            proxy_pass http://pool;\n");
    }
    t.push_str("            proxy_http_version 1.1;\n            proxy_set_header Connection \"\";\n            proxy_set_header Host $http_host;\n            proxy_set_header X-Forwarded-For $remote_addr;\n");
    if s.sticky {
        t.push_str("            proxy_set_header Cookie $upstream_cookie;\n            add_header Set-Cookie $sticky_set;\n");
    }
    t.push_str("        }\n    }\n}\n");
    t
}

/// nginx's TLS listener: the certificate, TLS 1.2 and 1.3, resumption as the scenario
/// says, HTTP/2 where it asks for it.
fn nginx_tls(t: &mut String, s: &Scenario, p: &Ports, c: &Path) {
    // HTTP/2: `http2 on;` from nginx 1.25.1, `listen ... ssl http2` before
    let old_h2 = s.h2 && !nginx_http2_on();
    let _ = writeln!(
        t,
        "        listen 127.0.0.1:{} ssl{} reuseport;",
        p.https,
        if old_h2 { " http2" } else { "" }
    );
    if s.h2 && !old_h2 {
        t.push_str("        http2 on;\n");
    }
    let _ = writeln!(
        t,
        "        ssl_certificate {};\n        ssl_certificate_key {};",
        c.display(),
        c.display()
    );
    // TLS 1.3 as in the other two (nginx 1.22's default stops at TLS 1.2)
    t.push_str("        ssl_protocols TLSv1.2 TLSv1.3;\n");
    if s.resume {
        t.push_str("        ssl_session_cache shared:tls:10m;\n");
    } else {
        t.push_str("        ssl_session_tickets off;\n        ssl_session_cache off;\n");
    }
}
