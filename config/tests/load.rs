//! Loading whole files: the reference example, defaults, every error with its line and
//! field, the lints, and `force`.

use config::*;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// A fresh folder under the system temp dir.
fn tempdir(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let d = std::env::temp_dir().join(format!(
        "engine-config-test-{}-{}-{tag}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

const BASE: &str = r#"
[[frontend]]
name = "web"
bind = ["127.0.0.1:8080"]
backend = "moodle"

[[backend]]
name = "moodle"

[[backend.server]]
name = "s1"
address = "127.0.0.1:9101"
"#;

fn src() -> PathBuf {
    std::env::temp_dir().join("lb.toml")
}

fn ok(text: &str) -> Loaded {
    match load_str(text, &src()) {
        Ok(l) => l,
        Err(ds) => panic!(
            "refused:\n{}",
            ds.iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        ),
    }
}

fn errs(text: &str) -> Vec<Diagnostic> {
    match load_str(text, &src()) {
        Ok(l) => panic!("accepted, warnings: {:?}", l.warnings),
        Err(ds) => ds,
    }
}

/// The 1-based line holding the marker `# <<`.
fn marked_line(text: &str) -> usize {
    text.lines()
        .position(|l| l.contains("# <<"))
        .expect("no `# <<` marker")
        + 1
}

/// `text` is refused, and among the errors one is on the marked line, its field contains
/// `field` and its message contains `msg`.
#[track_caller]
fn expect_error(text: &str, field: &str, msg: &str) -> Diagnostic {
    let line = marked_line(text);
    let ds = errs(text);
    let found = ds.iter().find(|d| {
        d.is_error() && d.line == line && d.field.contains(field) && d.message.contains(msg)
    });
    match found {
        Some(d) => {
            assert!(!d.fix.is_empty(), "no fix: {d}");
            d.clone()
        }
        None => panic!(
            "no error on line {line} with field ~{field:?} and message ~{msg:?}; got:\n{}",
            ds.iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        ),
    }
}

/// `text` loads, with exactly one warning, on the marked line, with `field` and `msg`.
#[track_caller]
fn expect_warning(text: &str, field: &str, msg: &str) -> Diagnostic {
    let line = marked_line(text);
    let l = ok(text);
    assert_eq!(l.warnings.len(), 1, "warnings: {:#?}", l.warnings);
    let w = &l.warnings[0];
    assert_eq!(w.severity, Severity::Warning);
    assert_eq!(w.line, line, "{w}");
    assert!(w.field.contains(field), "{w}");
    assert!(w.message.contains(msg), "{w}");
    assert!(!w.fix.is_empty(), "{w}");
    w.clone()
}

#[test]
fn reference_example_loads_without_warnings() {
    let spec = Path::new("/work/shared/spec/lb.example.toml");
    let l = load_file(spec).unwrap_or_else(|ds| panic!("{ds:#?}"));
    assert!(l.warnings.is_empty(), "{:#?}", l.warnings);
    let c = &l.config;
    assert_eq!(c.source, spec);
    assert_eq!(c.global.maxconn, 20000);
    assert_eq!(
        c.global.admin_socket.as_deref(),
        Some(Path::new("/run/engine-admin.sock"))
    );
    assert_eq!(c.global.stats, Some("127.0.0.1:8404".parse().unwrap()));
    assert_eq!(c.global.user, None);
    assert_eq!(c.limits, Limits::default());
    assert_eq!(
        c.log,
        Log {
            access: LogTarget::Stdout,
            format: LogFormat::Httplog,
            dontlognull: true
        }
    );

    assert_eq!(c.frontends.len(), 2);
    let http = &c.frontends[0];
    assert_eq!(http.name, "http");
    assert_eq!(http.bind, vec!["127.0.0.1:8080".parse().unwrap()]);
    assert_eq!(http.backend, Some(0));
    assert_eq!(
        http.redirect_https,
        Some(RedirectHttps {
            code: 301,
            except_prefixes: vec!["/.well-known/acme-challenge/".into()],
            port: None,
        })
    );
    assert!(http.tls.is_none());
    assert_eq!(http.timeouts, Timeouts::default());
    let https = &c.frontends[1];
    let tls = https.tls.as_ref().unwrap();
    assert_eq!(
        tls.certs,
        vec![CertSource::Combined(
            "/work/shared/spec/certs/moodle.pem".into()
        )]
    );
    assert_eq!(tls.handshake_timeout, Duration::from_secs(10));
    assert_eq!(
        https.set_headers,
        vec![
            ("X-Forwarded-Proto".into(), "https".into()),
            ("X-Forwarded-SSL".into(), "on".into())
        ]
    );
    assert!(https.forwarded_for);

    assert_eq!(c.backends.len(), 1);
    let b = &c.backends[0];
    assert_eq!(b.name, "moodle");
    assert_eq!(b.balance, Balance::RoundRobin);
    let ef = b.errorfile_503.as_ref().unwrap();
    assert_eq!(ef.path, Path::new("/work/shared/spec/errors/503.http"));
    assert!(ef.bytes.starts_with(b"HTTP/1.1 503 "));
    assert_eq!(
        ef.bytes,
        std::fs::read("/work/shared/spec/errors/503.http").unwrap(),
        "already CRLF: unchanged"
    );
    assert_eq!(
        b.cookie,
        Some(Cookie {
            name: "SERVERID".into(),
            mode: CookieMode::Insert,
            indirect: true,
            nocache: true,
            httponly: true,
            secure: true,
            samesite: None,
            domain: None,
            maxidle: None,
            maxlife: None,
            key: None,
        })
    );
    assert_eq!(b.app_cookie, "MoodleSession");
    assert_eq!(
        b.check,
        Some(Check {
            method: "GET".into(),
            uri: "/login/index.php".into(),
            host: Some("moodle.example.edu".into()),
            expect_status: StatusRange { lo: 200, hi: 200 },
            expect_string: Some("Moodle".into()),
            interval: Duration::from_secs(2),
            rise: 2,
            fall: 3,
            timeout: Duration::from_secs(2),
            observe_errors: 10,
            slowstart: None,
            live_traffic: true,
        })
    );
    let names: Vec<_> = b
        .servers
        .iter()
        .map(|s| (s.name.as_str(), s.cookie.as_str(), s.backup))
        .collect();
    assert_eq!(
        names,
        [
            ("moodle_app_1", "s1", false),
            ("moodle_app_2", "s2", false),
            ("moodle_app_3", "s3", false),
            ("moodle_app_backup", "s_b", true)
        ]
    );
    assert_eq!(b.servers[3].address, "127.0.0.1:9104".parse().unwrap());
}

#[test]
fn defaults() {
    let text = format!(
        r#"{BASE}
[backend.cookie]
name = "SERVERID"

[backend.check]
host = "moodle.example.edu"
interval = "5s"

[[frontend]]
name = "redir"
bind = ["127.0.0.1:8081"]
redirect_https = {{}}

[[frontend]]
name = "tls"
bind = ["127.0.0.1:8443"]
backend = "moodle"
tls = {{ certs = ["/work/shared/spec/certs/moodle.pem"] }}
"#
    );
    let l = ok(&text);
    assert!(l.warnings.is_empty(), "{:#?}", l.warnings);
    let c = l.config;
    assert_eq!(
        c.global,
        Global {
            maxconn: 20000,
            admin_socket: None,
            stats: None,
            user: None,
            group: None
        }
    );
    assert_eq!(c.limits, Limits::default());
    assert_eq!(c.log, Log::default());
    assert_eq!(c.log.access, LogTarget::Stdout);
    assert_eq!(c.log.format, LogFormat::Httplog);
    assert!(!c.log.dontlognull);

    let f = &c.frontends[0];
    assert!(f.forwarded_for);
    assert!(f.set_headers.is_empty());
    assert_eq!(f.timeouts, Timeouts::default());
    assert_eq!(
        Timeouts::default(),
        Timeouts {
            connect: Duration::from_secs(5),
            client: Duration::from_secs(50),
            server: Duration::from_secs(50),
            http_request: Duration::from_secs(10),
            keep_alive: Duration::from_secs(10),
            queue: Duration::from_secs(30),
            retries: 3
        }
    );
    let redir = &c.frontends[1];
    assert_eq!(
        redir.backend, None,
        "every request redirected: no backend needed"
    );
    assert_eq!(
        redir.redirect_https,
        Some(RedirectHttps {
            code: 301,
            except_prefixes: vec![],
            port: None,
        })
    );
    assert_eq!(
        c.frontends[2].tls.as_ref().unwrap().handshake_timeout,
        Duration::from_secs(10)
    );

    let b = &c.backends[0];
    assert_eq!(b.balance, Balance::RoundRobin);
    assert_eq!(b.app_cookie, "MoodleSession");
    assert_eq!(b.max_queue, None);
    assert_eq!(b.waiting_room, None);
    assert_eq!(b.errorfile_503, None);
    assert_eq!(b.timeouts, Timeouts::default());
    let k = b.cookie.as_ref().unwrap();
    assert_eq!(
        (k.mode, k.indirect, k.nocache, k.httponly, k.secure),
        (CookieMode::Insert, true, true, false, false)
    );
    assert_eq!(
        (k.samesite, &k.domain, k.maxidle, k.maxlife, &k.key),
        (None, &None, None, None, &None)
    );
    let ch = b.check.as_ref().unwrap();
    assert_eq!(ch.method, "GET");
    assert_eq!(ch.uri, "/");
    assert_eq!(ch.expect_status, StatusRange { lo: 200, hi: 399 });
    assert_eq!(ch.expect_string, None);
    assert_eq!((ch.rise, ch.fall), (2, 3));
    assert_eq!(ch.interval, Duration::from_secs(5));
    assert_eq!(
        ch.timeout,
        Duration::from_secs(5),
        "timeout defaults to the interval"
    );
    let s = &b.servers[0];
    assert_eq!(
        *s,
        Server {
            name: "s1".into(),
            address: "127.0.0.1:9101".parse().unwrap(),
            cookie: "s1".into(),
            weight: 1,
            maxconn: 0,
            backup: false,
            check: true
        }
    );
}

#[test]
fn pool_cap_follows_maxconn_unless_set() {
    // Left out: as many idle server connections as maxconn allows in flight, so a peak
    // never closes pooled connections that the next requests need.
    let c = ok(&format!("[global]\nmaxconn = 3000\n{BASE}")).config;
    assert_eq!(c.limits.pool_max_idle_per_server, 3000);
    assert_eq!(ok(BASE).config.limits.pool_max_idle_per_server, 20000);
    // Set: the operator's number, 0 included (no pooling).
    for n in [0, 16, 100_000] {
        let text =
            format!("[global]\nmaxconn = 3000\n[limits]\npool_max_idle_per_server = {n}\n{BASE}");
        assert_eq!(ok(&text).config.limits.pool_max_idle_per_server, n);
    }
    expect_error(
        &format!("[limits]\npool_max_idle_per_server = -1   # <<\n{BASE}"),
        "pool_max_idle_per_server",
        "at least 0",
    );
}

#[test]
fn default_check_interval_and_no_backend_cookie() {
    let l = ok(&format!("{BASE}\n[backend.check]\nhost = \"h\"\n"));
    let ch = l.config.backends[0].check.clone().unwrap();
    assert_eq!(
        (ch.interval, ch.timeout),
        (Duration::from_secs(2), Duration::from_secs(2))
    );
    assert_eq!(ok(BASE).config.backends[0].cookie, None);
    assert_eq!(ok(BASE).config.backends[0].check, None);
}

#[test]
fn timeouts_merge_defaults_then_sections() {
    let text = r#"
[defaults]
timeout_connect = "1s"
timeout_queue = "1m"
retries = 5

[[frontend]]
name = "web"
bind = ["127.0.0.1:8080"]
backend = "moodle"
timeout_client = "7s"

[[backend]]
name = "moodle"
timeout_connect = "250ms"
retries = 0

[[backend.server]]
name = "s1"
address = "127.0.0.1:9101"
"#;
    let c = ok(text).config;
    let f = c.frontends[0].timeouts;
    assert_eq!(f.connect, Duration::from_secs(1));
    assert_eq!(f.client, Duration::from_secs(7));
    assert_eq!(f.server, Duration::from_secs(50));
    assert_eq!(f.queue, Duration::from_secs(60));
    assert_eq!(f.retries, 5);
    let b = c.backends[0].timeouts;
    assert_eq!(b.connect, Duration::from_millis(250));
    assert_eq!(b.client, Duration::from_secs(50));
    assert_eq!(b.queue, Duration::from_secs(60));
    assert_eq!(b.retries, 0);
}

#[test]
fn sections_set_every_field() {
    let dir = tempdir("full");
    std::fs::write(dir.join("wait.html"), "<html>wait</html>").unwrap();
    std::fs::create_dir_all(dir.join("logs")).unwrap();
    std::fs::write(
        dir.join("503.http"),
        "HTTP/1.0 503 Busy\nContent-Type: text/plain\n\nbody\nline2\n",
    )
    .unwrap();
    let text = r#"
[global]
maxconn = 100
admin_socket = "run/admin.sock"
stats = "127.0.0.1:8404"
user = "engine"
group = "engine"

[limits]
max_head_bytes = 32768
max_target_bytes = 4096
max_headers = 50
max_body_bytes = 0
pool_max_idle_per_server = 8
pool_idle_timeout = "90s"
drop_underscore_headers = false

[log]
access = "logs/access.log"
format = "json"
dontlognull = true

[[frontend]]
name = "web"
bind = ["0.0.0.0:8080", "[::1]:8080"]
backend = "moodle"
forwarded_for = false
redirect_https = { code = 308, except_prefixes = ["/a", "/b"] }
set_headers = { "Z-Last" = "1", "A-First" = "2", "M-Mid" = "3" }

[[backend]]
name = "moodle"
balance = "leastconn"
errorfile_503 = "503.http"
app_cookie = "PHPSESSID"
max_queue = 500
waiting_room = "wait.html"

[backend.cookie]
name = "PHPSESSID"
mode = "prefix"
indirect = false
nocache = false
httponly = true
secure = true
samesite = "None"
domain = ".example.edu"
maxidle = "30m"
maxlife = "8h"
key = "0123456789abcdef"

[backend.check]
method = "HEAD"
uri = "/ok"
host = "moodle.example.edu"
expect_status = "200-299"
interval = "1s"
rise = 1
fall = 1
timeout = "500ms"

[[backend.server]]
name = "s1"
address = "127.0.0.1:9101"
cookie = "a"
weight = 256
maxconn = 10
check = false

[[backend.server]]
name = "s2"
address = "[::1]:9102"
backup = true
"#;
    let l = load_str(text, &dir.join("lb.toml")).unwrap_or_else(|ds| panic!("{ds:#?}"));
    assert!(l.warnings.is_empty(), "{:#?}", l.warnings);
    let c = l.config;
    assert_eq!(c.global.maxconn, 100);
    assert_eq!(c.global.admin_socket, Some(dir.join("run/admin.sock")));
    assert_eq!(c.global.user.as_deref(), Some("engine"));
    assert_eq!(c.global.group.as_deref(), Some("engine"));
    assert_eq!(
        c.limits,
        Limits {
            max_head_bytes: 32768,
            max_target_bytes: 4096,
            max_headers: 50,
            max_body_bytes: 0,
            pool_max_idle_per_server: 8,
            pool_idle_timeout: Duration::from_secs(90),
            drop_underscore_headers: false,
        }
    );
    assert_eq!(
        c.log,
        Log {
            access: LogTarget::File(dir.join("logs/access.log")),
            format: LogFormat::Json,
            dontlognull: true
        }
    );
    let f = &c.frontends[0];
    assert_eq!(f.bind.len(), 2);
    assert!(!f.forwarded_for);
    assert_eq!(
        f.redirect_https,
        Some(RedirectHttps {
            code: 308,
            except_prefixes: vec!["/a".into(), "/b".into()],
            port: None,
        })
    );
    let order: Vec<&str> = f.set_headers.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(order, ["Z-Last", "A-First", "M-Mid"], "file order kept");
    let b = &c.backends[0];
    assert_eq!(b.balance, Balance::LeastConn);
    assert_eq!(
        b.errorfile_503.as_ref().unwrap().bytes,
        b"HTTP/1.0 503 Busy\r\nContent-Type: text/plain\r\n\r\nbody\nline2\n"
    );
    assert_eq!(b.waiting_room.as_ref().unwrap().bytes, b"<html>wait</html>");
    assert_eq!(b.waiting_room.as_ref().unwrap().path, dir.join("wait.html"));
    assert_eq!(b.max_queue, Some(500));
    let k = b.cookie.as_ref().unwrap();
    assert_eq!(k.mode, CookieMode::Prefix);
    assert_eq!(k.samesite, Some(SameSite::None));
    assert_eq!(k.maxidle, Some(Duration::from_secs(1800)));
    assert_eq!(k.maxlife, Some(Duration::from_secs(8 * 3600)));
    assert_eq!(k.domain.as_deref(), Some(".example.edu"));
    assert!(!k.indirect && !k.nocache && k.httponly && k.secure);
    let ch = b.check.as_ref().unwrap();
    assert_eq!(ch.expect_status, StatusRange { lo: 200, hi: 299 });
    assert_eq!(ch.timeout, Duration::from_millis(500));
    assert_eq!(b.servers[0].weight, 256);
    assert_eq!(b.servers[0].maxconn, 10);
    assert!(!b.servers[0].check);
    assert_eq!(b.servers[0].cookie, "a");
    assert_eq!(b.servers[1].cookie, "s2");
    assert!(b.servers[1].backup);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn separate_cert_and_key() {
    let dir = tempdir("certs");
    std::fs::write(
        dir.join("chain.pem"),
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("key.pem"),
        "-----BEGIN EC PRIVATE KEY-----\nMHc\n-----END EC PRIVATE KEY-----\n",
    )
    .unwrap();
    let text = BASE.replace(
        "backend = \"moodle\"",
        "backend = \"moodle\"\ntls = { certs = [{ cert = \"chain.pem\", key = \"key.pem\" }], handshake_timeout = \"3s\" }",
    );
    let c = load_str(&text, &dir.join("lb.toml")).unwrap().config;
    let tls = c.frontends[0].tls.as_ref().unwrap();
    assert_eq!(
        tls.certs,
        vec![CertSource::Separate {
            cert: dir.join("chain.pem"),
            key: dir.join("key.pem")
        }]
    );
    assert_eq!(tls.handshake_timeout, Duration::from_secs(3));

    // A combined file without its key, a "cert" that is no PEM, a missing key file.
    std::fs::write(
        dir.join("nokey.pem"),
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    std::fs::write(dir.join("der.pem"), [0x30u8, 0x82, 0x01]).unwrap();
    let text = BASE.replace(
        "backend = \"moodle\"",
        "backend = \"moodle\"\ntls = { certs = [\n  \"nokey.pem\",\n  { cert = \"der.pem\", key = \"key.pem\" },\n  { cert = \"chain.pem\", key = \"gone.pem\" },\n] }",
    );
    let ds = load_str(&text, &dir.join("lb.toml")).unwrap_err();
    let lines: Vec<(usize, &str)> = ds.iter().map(|d| (d.line, d.message.as_str())).collect();
    assert_eq!(ds.len(), 3, "{ds:#?}");
    assert!(
        lines[0].0 == 7 && lines[0].1.contains("no private key"),
        "{lines:?}"
    );
    assert!(
        lines[1].0 == 8 && lines[1].1.contains("not PEM"),
        "{lines:?}"
    );
    assert!(
        lines[2].0 == 9 && lines[2].1.contains("does not exist"),
        "{lines:?}"
    );
    assert!(
        ds.iter().all(|d| d.field == "frontend \"web\" tls `certs`"
            || d.field.starts_with("frontend \"web\" tls")),
        "{ds:#?}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn relative_paths_resolve_against_the_config_folder() {
    let dir = tempdir("rel");
    std::fs::create_dir_all(dir.join("errors")).unwrap();
    std::fs::write(dir.join("errors/503.http"), "HTTP/1.1 503 X\r\n\r\n").unwrap();
    let text = BASE.replace(
        "name = \"moodle\"",
        "name = \"moodle\"\nerrorfile_503 = \"errors/503.http\"",
    );
    std::fs::write(dir.join("lb.toml"), &text).unwrap();
    let c = load_file(&dir.join("lb.toml")).unwrap().config;
    assert_eq!(
        c.backends[0].errorfile_503.as_ref().unwrap().path,
        dir.join("errors/503.http")
    );
    // Read from elsewhere, the same text finds no file.
    let other = tempdir("rel-other");
    let ds = load_str(&text, &other.join("lb.toml")).unwrap_err();
    assert!(ds[0].message.contains("does not exist"), "{ds:#?}");
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::remove_dir_all(&other).unwrap();
}

#[test]
fn errorfile_checks() {
    let dir = tempdir("errorfile");
    let cases: [(&[u8], &str); 4] = [
        (b"<html>busy</html>", "does not start with"),
        (
            b"HTTP/1.1 503 Busy\r\nContent-Type: text/html\r\n",
            "no empty line",
        ),
        (b"HTTP/1.1 abc\r\n\r\n", "status code"),
        (
            b"HTTP/1.1 503 Busy\r\nContent-Length: 99\r\n\r\nshort",
            "Content-Length",
        ),
    ];
    for (i, (bytes, msg)) in cases.iter().enumerate() {
        std::fs::write(dir.join(format!("{i}.http")), bytes).unwrap();
        let text = BASE.replace(
            "name = \"moodle\"",
            &format!("name = \"moodle\"\nerrorfile_503 = \"{i}.http\" # <<"),
        );
        let line = marked_line(&text);
        let ds = load_str(&text, &dir.join("lb.toml")).unwrap_err();
        assert_eq!(ds.len(), 1, "{ds:#?}");
        assert_eq!(ds[0].line, line);
        assert_eq!(ds[0].field, "backend \"moodle\" `errorfile_503`");
        assert!(ds[0].message.contains(msg), "{}", ds[0]);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn each_error_has_its_line_and_field() {
    let fe = |extra: &str| {
        BASE.replace(
            "backend = \"moodle\"",
            &format!("backend = \"moodle\"\n{extra}"),
        )
    };
    let be =
        |extra: &str| BASE.replace("name = \"moodle\"", &format!("name = \"moodle\"\n{extra}"));
    let sv = |extra: &str| format!("{BASE}{extra}\n");
    let cases: Vec<(String, &str, &str)> = vec![
        ("[global]\nmaxconn = 0 # <<\n".to_string() + BASE, "global `maxconn`", "out of range"),
        ("[global]\nstats = \"*:8404\" # <<\n".to_string() + BASE, "global `stats`", "not an IP:port"),
        ("[global]\nuser = \"\" # <<\n".to_string() + BASE, "global `user`", "empty"),
        ("[limits]\nmax_head_bytes = 512 # <<\n".to_string() + BASE, "limits `max_head_bytes`", "out of range"),
        ("[limits]\nmax_head_bytes = 2048\nmax_target_bytes = 4096 # <<\n".to_string() + BASE, "limits `max_target_bytes`", "more than max_head_bytes"),
        ("[limits]\nmax_headers = 2000 # <<\n".to_string() + BASE, "limits `max_headers`", "out of range"),
        ("[limits]\npool_idle_timeout = \"30\" # <<\n".to_string() + BASE, "limits `pool_idle_timeout`", "no unit"),
        ("[defaults]\ntimeout_connect = 5 # <<\n".to_string() + BASE, "defaults `timeout_connect`", "no unit"),
        ("[defaults]\ntimeout_server = \"0s\" # <<\n".to_string() + BASE, "defaults `timeout_server`", "zero"),
        ("[defaults]\nretries = -1 # <<\n".to_string() + BASE, "defaults `retries`", "out of range"),
        ("[log]\nformat = \"clf\" # <<\n".to_string() + BASE, "log `format`", "not a log format"),
        ("[log]\naccess = \"stderr\" # <<\n".to_string() + BASE, "log `access`", "not a log target"),
        (BASE.replace("[\"127.0.0.1:8080\"]", "[\"*:80\"] # <<"), "frontend \"web\" `bind`", "not an IP:port"),
        (BASE.replace("[\"127.0.0.1:8080\"]", "[\"localhost:80\"] # <<"), "frontend \"web\" `bind`", "not an IP:port"),
        (BASE.replace("[\"127.0.0.1:8080\"]", "[] # <<"), "frontend \"web\" `bind`", "empty list"),
        (BASE.replace("bind = [\"127.0.0.1:8080\"]\n", "").replace("name = \"web\"", "name = \"web\" # <<"), "frontend \"web\" `bind`", "at least one address"),
        (BASE.replace("name = \"web\"", "name = \"\" # <<"), "frontend #1 `name`", "empty"),
        (BASE.replace("backend = \"moodle\"", "backend = \"modle\" # <<"), "frontend \"web\" `backend`", "no backend is named \"modle\""),
        (BASE.replace("backend = \"moodle\"\n", "").replace("name = \"web\"", "name = \"web\" # <<"), "frontend \"web\" `backend`", "needs a backend"),
        (fe("redirect_https = { code = 200 } # <<"), "frontend \"web\" redirect_https `code`", "not a redirect status"),
        (fe("redirect_https = { except_prefixes = [\"acme\"] } # <<"), "frontend \"web\" redirect_https `except_prefixes`", "does not start with \"/\""),
        (fe("tls = { certs = [] } # <<"), "frontend \"web\" tls `certs`", "empty list"),
        (fe("tls = { certs = [\"missing.pem\"] } # <<"), "frontend \"web\" tls `certs`", "does not exist"),
        (fe("set_headers = { \"X Bad\" = \"1\" } # <<"), "frontend \"web\" set_headers `X Bad`", "not a valid header name"),
        (fe("set_headers = { \"X-A\" = \"1\\r\\nEvil: 1\" } # <<"), "frontend \"web\" set_headers `X-A`", "line break"),
        (fe("set_headers = { \"X-A\" = \"a\\u0000b\" } # <<"), "frontend \"web\" set_headers `X-A`", "NUL"),
        (be("balance = \"random\" # <<"), "backend \"moodle\" `balance`", "not a balancing algorithm"),
        (be("errorfile_503 = \"missing.http\" # <<"), "backend \"moodle\" `errorfile_503`", "does not exist"),
        (be("waiting_room = \"missing.html\" # <<\nmax_queue = 10"), "backend \"moodle\" `waiting_room`", "does not exist"),
        (be("max_queue = -5 # <<"), "backend \"moodle\" `max_queue`", "out of range"),
        (be("timeout_queue = \"soon\" # <<"), "backend \"moodle\" `timeout_queue`", "not a duration"),
        (sv("[backend.cookie]\nname = \"SERVER ID\" # <<"), "backend \"moodle\" cookie `name`", "not a cookie name"),
        (sv("[backend.cookie]\nname = \"SRV\"\nmode = \"rewrite\" # <<"), "backend \"moodle\" cookie `mode`", "not a cookie mode"),
        (sv("[backend.cookie]\nname = \"SRV\"\nsamesite = \"lax\" # <<"), "backend \"moodle\" cookie `samesite`", "not a SameSite value"),
        (sv("[backend.cookie]\nname = \"SRV\"\nsamesite = \"None\" # <<"), "backend \"moodle\" cookie `samesite`", "without Secure"),
        (sv("[backend.cookie]\nname = \"SRV\"\nkey = \"short\" # <<"), "backend \"moodle\" cookie `key`", "at least 16"),
        (sv("[backend.cookie]\nname = \"SRV\"\nmaxidle = \"30\" # <<"), "backend \"moodle\" cookie `maxidle`", "no unit"),
        (sv("[backend.cookie]\nname = \"SRV\"\ndomain = \"a b\" # <<"), "backend \"moodle\" cookie `domain`", "not a domain"),
        (sv("[backend.check]\nhost = \"h\"\nuri = \"login\" # <<"), "backend \"moodle\" check `uri`", "does not start with \"/\""),
        (sv("[backend.check]\nhost = \"h\"\nexpect_status = \"2xx\" # <<"), "backend \"moodle\" check `expect_status`", "not a status"),
        (sv("[backend.check]\nhost = \"h\"\nexpect_status = \"399-200\" # <<"), "backend \"moodle\" check `expect_status`", "not a status"),
        (sv("[backend.check]\nhost = \"h\"\nrise = 0 # <<"), "backend \"moodle\" check `rise`", "out of range"),
        (sv("[backend.check]\nhost = \"h\"\nfall = 0 # <<"), "backend \"moodle\" check `fall`", "out of range"),
        (sv("[backend.check]\nhost = \"h\"\ninterval = \"2\" # <<"), "backend \"moodle\" check `interval`", "no unit"),
        (sv("[backend.check]\nhost = \"h\"\nmethod = \"get\" # <<"), "backend \"moodle\" check `method`", "case-sensitive"),
        (BASE.replace("\"127.0.0.1:9101\"", "\"localhost:9101\" # <<"), "backend \"moodle\" server \"s1\" `address`", "not an IP:port"),
        (BASE.replace("\"127.0.0.1:9101\"", "\"127.0.0.1\" # <<"), "backend \"moodle\" server \"s1\" `address`", "no port"),
        (BASE.replace("address = \"127.0.0.1:9101\"", "address = \"127.0.0.1:9101\"\nweight = 0 # <<"), "backend \"moodle\" server \"s1\" `weight`", "weight 0"),
        (BASE.replace("address = \"127.0.0.1:9101\"", "address = \"127.0.0.1:9101\"\nweight = 300 # <<"), "backend \"moodle\" server \"s1\" `weight`", "out of range"),
        (BASE.replace("address = \"127.0.0.1:9101\"", "address = \"127.0.0.1:9101\"\nmaxconn = -1 # <<"), "backend \"moodle\" server \"s1\" `maxconn`", "out of range"),
        (BASE.replace("address = \"127.0.0.1:9101\"\n", "").replace("name = \"s1\"", "name = \"s1\" # <<"), "backend \"moodle\" server \"s1\" `address`", "needs an address"),
        (BASE.replace("name = \"s1\"", "name = \"s/1\" # <<"), "`name`", "slash"),
        (sv("[[backend.server]]\nname = \"s1\" # <<\naddress = \"127.0.0.1:9102\"\ncookie = \"x\""), "backend \"moodle\" server \"s1\" `name`", "second server"),
        (sv("[[backend.server]]\nname = \"s2\"\naddress = \"127.0.0.1:9102\"\ncookie = \"s1\" # <<"), "backend \"moodle\" server \"s2\" `cookie`", "already has the cookie value"),
        (sv("[[backend]]\nname = \"moodle\" # <<\n[[backend.server]]\nname = \"x\"\naddress = \"127.0.0.1:1\""), "backend \"moodle\" `name`", "second backend"),
        (BASE.replace("name = \"moodle\"\n\n[[backend.server]]\nname = \"s1\"\naddress = \"127.0.0.1:9101\"", "name = \"moodle\" # <<"), "backend \"moodle\" `server`", "at least one server"),
        (sv("[[frontend]]\nname = \"web\" # <<\nbind = [\"127.0.0.1:8081\"]\nbackend = \"moodle\""), "frontend \"web\" `name`", "second frontend"),
        (sv("[[frontend]]\nname = \"two\"\nbind = [\"127.0.0.1:8080\"] # <<\nbackend = \"moodle\""), "frontend \"two\" `bind`", "also bound by frontend \"web\""),
        (sv("[[frontend]]\nname = \"two\"\nbind = [\"0.0.0.0:8080\"] # <<\nbackend = \"moodle\""), "frontend \"two\" `bind`", "overlaps 127.0.0.1:8080"),
        ("[global]\nstats = \"127.0.0.1:8080\" # <<\n".to_string() + BASE, "global `stats`", "also bound by frontend \"web\""),
    ];
    for (text, field, msg) in &cases {
        let d = expect_error(text, field, msg);
        assert_eq!(d.kind, DiagKind::Invalid, "{d}");
    }
}

#[test]
fn fixes_say_what_to_write() {
    let d = expect_error(
        &BASE.replace("[\"127.0.0.1:8080\"]", "[\"*:80\"] # <<"),
        "bind",
        "not an IP:port",
    );
    assert!(d.fix.contains("0.0.0.0:80"), "{d}");
    let d = expect_error(
        &BASE.replace("[\"127.0.0.1:8080\"]", "[\"localhost:80\"] # <<"),
        "bind",
        "not an IP:port",
    );
    assert!(d.fix.contains("127.0.0.1:80"), "{d}");
    let d = expect_error(
        &BASE.replace(
            "address = \"127.0.0.1:9101\"",
            "address = \"127.0.0.1:9101\"\nweight = 0 # <<",
        ),
        "weight",
        "weight 0",
    );
    assert!(
        d.fix.contains("set weight moodle/s1 0") && d.fix.contains("remove the server"),
        "{d}"
    );
    let d = expect_error(
        &format!("{BASE}[backend.cookie]\nname = \"SRV\"\nsamesite = \"None\" # <<\n"),
        "samesite",
        "Secure",
    );
    assert!(d.fix.contains("secure = true"), "{d}");
    let d = expect_error(
        &BASE.replace("backend = \"moodle\"", "backend = \"modle\" # <<"),
        "backend",
        "no backend",
    );
    assert!(d.fix.contains("did you mean backend = \"moodle\""), "{d}");
    let d = expect_error(
        "[defaults]\ntimeout_client = 50 # <<\n",
        "timeout_client",
        "no unit",
    );
    assert!(d.fix.contains("\"50s\""), "{d}");
}

#[test]
fn display_format() {
    let text = BASE.replace("\"127.0.0.1:9101\"", "\"localhost:80\"");
    let ds = load_str(&text, Path::new("lb.toml")).unwrap_err();
    assert_eq!(
        ds[0].to_string(),
        "lb.toml:12: error: backend \"moodle\" server \"s1\" `address`: \"localhost:80\" is not an IP:port (names are not resolved)\n    fix: write \"127.0.0.1:80\""
    );
}

#[test]
fn unknown_fields_are_refused_with_their_line() {
    let cases: Vec<(String, &str, &str, &str)> = vec![
        (
            BASE.replace("name = \"s1\"", "name = \"s1\"\nadress = \"x\" # <<"),
            "backend \"moodle\" server \"s1\" `adress`",
            "unknown field `adress`",
            "did you mean `address`?",
        ),
        (
            BASE.replace("name = \"web\"", "name = \"web\"\nbnd = [] # <<"),
            "frontend \"web\" `bnd`",
            "unknown field `bnd`",
            "did you mean `bind`?",
        ),
        (
            format!("[globl] # <<\nmaxconn = 1\n{BASE}"),
            "`globl`",
            "unknown table `globl`",
            "did you mean `global`?",
        ),
        (
            format!("[global]\nnbthread = 4 # <<\n{BASE}"),
            "global `nbthread`",
            "unknown field `nbthread`",
            "admin_socket",
        ),
        (
            format!("{BASE}[[backend.servers]] # <<\nname = \"x\"\n"),
            "backend \"moodle\" `servers`",
            "unknown table",
            "did you mean `server`?",
        ),
        (
            format!("{BASE}[backend.check]\nhost = \"h\"\nexpect = \"200\" # <<\n"),
            "backend \"moodle\" check `expect`",
            "unknown field",
            "did you mean `expect_status`?",
        ),
        (
            BASE.replace(
                "backend = \"moodle\"",
                "backend = \"moodle\"\ntls = { crt = [\"a.pem\"] } # <<",
            ),
            "frontend \"web\" tls `crt`",
            "unknown field `crt`",
            "did you mean `certs`?",
        ),
        (
            format!("{BASE}[backend.cookie]\nname = \"S\"\nhttp_only = true # <<\n"),
            "backend \"moodle\" cookie `http_only`",
            "unknown field",
            "did you mean `httponly`?",
        ),
    ];
    for (text, field, msg, fix) in &cases {
        let line = marked_line(text);
        let ds = errs(text);
        assert_eq!(ds.len(), 1, "{ds:#?}");
        let d = &ds[0];
        assert_eq!((d.line, d.kind), (line, DiagKind::Parse), "{d}");
        assert_eq!(d.field, *field, "{d}");
        assert!(d.message.contains(msg), "{d}");
        assert!(d.fix.contains(fix), "{d}");
    }
}

#[test]
fn wrong_types_and_syntax_errors() {
    let cases: Vec<(String, &str, &str, &str)> = vec![
        (
            format!("[global]\nmaxconn = \"many\" # <<\n{BASE}"),
            "global `maxconn`",
            "wrong type",
            "maxconn = 20000",
        ),
        (
            BASE.replace("[\"127.0.0.1:8080\"]", "\"127.0.0.1:8080\" # <<"),
            "frontend \"web\" `bind`",
            "wrong type",
            "bind = [\"0.0.0.0:80\"]",
        ),
        (
            BASE.replace(
                "name = \"moodle\"",
                "name = \"moodle\"\nbalance = roundrobin # <<",
            ),
            "backend \"moodle\" `balance`",
            "",
            "double quotes",
        ),
        (
            BASE.replace("[[frontend]]", "[frontend] # <<"),
            "`frontend`",
            "wrong type",
            "[[frontend]]",
        ),
        (
            BASE.replace("name = \"s1\"", "name = \"s1\"\nbackup = \"yes\" # <<"),
            "backend \"moodle\" server \"s1\" `backup`",
            "wrong type",
            "backup = true",
        ),
        (
            BASE.replace("name = \"web\"", "name = \"web\"\nname = \"again\" # <<"),
            "`name`",
            "duplicate key",
            "keep one",
        ),
    ];
    for (text, field, msg, fix) in &cases {
        let line = marked_line(text);
        let ds = errs(text);
        assert_eq!(ds.len(), 1, "{ds:#?}");
        let d = &ds[0];
        assert_eq!(d.line, line, "{d}");
        assert!(d.field.contains(field), "{d}");
        assert!(d.message.contains(msg), "{d}");
        assert!(d.fix.contains(fix), "{d}");
    }
}

#[test]
fn lockout_lint_and_force() {
    let text = format!("{BASE}\n[backend.cookie]\nname = \"MoodleSession\" # <<\n");
    let line = marked_line(&text);
    let ds = errs(&text);
    assert_eq!(ds.len(), 1, "{ds:#?}");
    let d = &ds[0];
    assert_eq!(
        (d.severity, d.kind, d.line),
        (Severity::Error, DiagKind::Lockout, line)
    );
    assert_eq!(d.field, "backend \"moodle\" cookie `name`");
    assert!(d.message.contains("in insert mode with indirect the engine removes this cookie from what Moodle receives and replaces Moodle's own Set-Cookie, so Moodle never sees its session and every login loops back to the login page"), "{d}");
    assert!(
        d.fix.contains("SERVERID") && d.fix.contains("mode = \"prefix\""),
        "{d}"
    );

    let l = load_str_with(&text, &src(), &LoadOptions { force: true }).unwrap();
    assert_eq!(l.warnings.len(), 1);
    assert_eq!(
        (l.warnings[0].severity, l.warnings[0].kind),
        (Severity::Warning, DiagKind::Lockout)
    );
    assert_eq!(
        l.config.backends[0].cookie.as_ref().unwrap().name,
        "MoodleSession"
    );

    // Another app_cookie, case-insensitively.
    let text = BASE.replace(
        "name = \"moodle\"",
        "name = \"moodle\"\napp_cookie = \"PHPSESSID\"",
    ) + "[backend.cookie]\nname = \"phpsessid\" # <<\n";
    let d = expect_error(
        &text,
        "cookie `name`",
        "like the application's session cookie",
    );
    assert_eq!(d.kind, DiagKind::Lockout);
    // Prefix mode with the application's cookie is what prefix mode is for.
    let l = ok(&format!(
        "{BASE}\n[backend.cookie]\nname = \"MoodleSession\"\nmode = \"prefix\"\n"
    ));
    assert!(l.warnings.is_empty(), "{:#?}", l.warnings);
    // force does not soften other errors.
    let text = BASE.replace("\"127.0.0.1:9101\"", "\"localhost:9101\"");
    assert!(load_str_with(&text, &src(), &LoadOptions { force: true }).is_err());
}

#[test]
fn warnings() {
    // A check without host.
    let w = expect_warning(
        &format!("{BASE}[backend.check] # <<\nuri = \"/login/index.php\"\n"),
        "backend \"moodle\" check",
        "no `host`",
    );
    assert!(w.fix.contains("wwwroot"), "{w}");
    // expect_string with a range holding 3xx or >= 400.
    for range in ["200-399", "200-302", "300", "200-404", "500"] {
        let text = format!("{BASE}[backend.check]\nhost = \"h\"\nexpect_status = \"{range}\" # <<\nexpect_string = \"Moodle\"\n");
        let w = expect_warning(
            &text,
            "check `expect_status`",
            "can still contain the string",
        );
        assert!(w.fix.contains("expect_status = \"200\""), "{w}");
    }
    // ... and with the default range, the warning points at expect_string.
    let w = expect_warning(
        &format!("{BASE}[backend.check]\nhost = \"h\"\nexpect_string = \"Moodle\" # <<\n"),
        "check `expect_status`",
        "200-399",
    );
    assert_eq!(w.kind, DiagKind::Lint);
    for quiet in ["200", "200-299", "204"] {
        let l = ok(&format!("{BASE}[backend.check]\nhost = \"h\"\nexpect_status = \"{quiet}\"\nexpect_string = \"Moodle\"\n"));
        assert!(l.warnings.is_empty(), "{quiet}: {:#?}", l.warnings);
    }
    // timeout longer than interval.
    expect_warning(
        &format!("{BASE}[backend.check]\nhost = \"h\"\ninterval = \"1s\"\ntimeout = \"3s\" # <<\n"),
        "check `timeout`",
        "longer than interval",
    );
    // Only backup servers.
    expect_warning(
        &BASE
            .replace("name = \"moodle\"", "name = \"moodle\" # <<")
            .replace(
                "address = \"127.0.0.1:9101\"",
                "address = \"127.0.0.1:9101\"\nbackup = true",
            ),
        "backend \"moodle\"",
        "every server of this backend is a backup",
    );
    // A backend no frontend uses.
    expect_warning(&format!("{BASE}[[backend]]\nname = \"spare\" # <<\n[[backend.server]]\nname = \"x\"\naddress = \"127.0.0.1:9200\"\n"), "backend \"spare\"", "no frontend uses");
    // An access log in a folder that does not exist.
    let text = format!("[log]\naccess = \"/nonexistent-engine-dir/access.log\" # <<\n{BASE}");
    expect_warning(&text, "log `access`", "does not exist");
    // The same server address twice.
    let text =
        format!("{BASE}[[backend.server]]\nname = \"s2\"\naddress = \"127.0.0.1:9101\" # <<\n");
    expect_warning(
        &text,
        "server \"s2\" `address`",
        "also the address of server \"s1\"",
    );
    // A waiting room without max_queue.
    let dir = tempdir("wr");
    std::fs::write(dir.join("w.html"), "<html></html>").unwrap();
    let text = BASE.replace(
        "name = \"moodle\"",
        "name = \"moodle\"\nwaiting_room = \"w.html\" # <<",
    );
    let l = load_str(&text, &dir.join("lb.toml")).unwrap();
    assert_eq!(l.warnings.len(), 1, "{:#?}", l.warnings);
    assert!(l.warnings[0].message.contains("without max_queue"));
    std::fs::remove_dir_all(&dir).unwrap();
    // Prefix mode on a cookie that is not the application's.
    expect_warning(
        &format!("{BASE}[backend.cookie]\nname = \"SERVERID\" # <<\nmode = \"prefix\"\n"),
        "cookie `name`",
        "prefix mode",
    );
    // TLS and redirect_https on one frontend.
    let text = BASE.replace(
        "backend = \"moodle\"",
        "backend = \"moodle\"\ntls = { certs = [\"/work/shared/spec/certs/moodle.pem\"] }\nredirect_https = { except_prefixes = [\"/x\"] } # <<",
    );
    expect_warning(
        &text,
        "frontend \"web\" `redirect_https`",
        "redirected to HTTPS again",
    );
}

#[test]
fn all_errors_at_once() {
    let text = r#"
[global]
maxconn = -3

[[frontend]]
name = "web"
bind = ["*:80"]
backend = "moodle"

[[backend]]
name = "moodle"

[[backend.server]]
name = "s1"
address = "127.0.0.1:9101"
weight = 0
"#;
    let ds = errs(text);
    let got: Vec<(usize, &str)> = ds.iter().map(|d| (d.line, d.field.as_str())).collect();
    assert_eq!(
        got,
        [
            (3, "global `maxconn`"),
            (7, "frontend \"web\" `bind`"),
            (16, "backend \"moodle\" server \"s1\" `weight`")
        ],
        "{ds:#?}"
    );
    assert!(ds
        .iter()
        .all(|d| d.severity == Severity::Error && d.file == src()));
}

#[test]
fn errors_come_with_the_warnings() {
    let text = format!("{BASE}[backend.check]\nrise = 0\n");
    let ds = errs(&text);
    assert_eq!(ds.len(), 2, "{ds:#?}");
    assert!(ds
        .iter()
        .any(|d| d.severity == Severity::Warning && d.message.contains("no `host`")));
    assert!(ds.iter().any(|d| d.is_error() && d.field.contains("rise")));
}

#[test]
fn missing_file_and_bad_encoding() {
    let dir = tempdir("files");
    let ds = load_file(&dir.join("absent.toml")).unwrap_err();
    assert_eq!((ds.len(), ds[0].line), (1, 0));
    assert!(ds[0].message.contains("cannot read"), "{}", ds[0]);
    std::fs::write(dir.join("latin1.toml"), b"[global]\n# caf\xe9\n").unwrap();
    let ds = load_file(&dir.join("latin1.toml")).unwrap_err();
    assert_eq!(ds[0].line, 2);
    assert!(ds[0].fix.contains("UTF-8"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn no_frontend_is_an_error() {
    let ds = errs("[global]\nmaxconn = 10\n");
    assert_eq!(ds.len(), 1, "{ds:#?}");
    assert!(ds[0].message.contains("no [[frontend]]"));
}

#[test]
fn parse_duration_is_public() {
    assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
    assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
    assert!(parse_duration("30").unwrap_err().contains("unit"));
}
