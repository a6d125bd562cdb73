//! Loading configurations that pass: the reference example, the defaults, every field
//! set, and how the timeouts and the pool follow the other sections.

mod common;

use common::*;
use config::*;
use std::path::Path;
use std::time::Duration;

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
h2_max_concurrent_streams = 50
h2_max_header_list_size = 32768
h2_max_resets_per_second = 20
h2_max_control_frames_per_second = 30
h2_max_continuation_frames = 4
h2_stream_idle_timeout = "15s"

[log]
access = "logs/access.log"
format = "json"
dontlognull = true

[[frontend]]
name = "web"
bind = ["0.0.0.0:8080", "[::1]:8080"]
backend = "moodle"
forwarded_for = false
h2c = true
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
            h2_max_concurrent_streams: 50,
            h2_max_header_list_size: 32768,
            h2_max_resets_per_second: 20,
            h2_max_control_frames_per_second: 30,
            h2_max_continuation_frames: 4,
            h2_stream_idle_timeout: Duration::from_secs(15),
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
    assert!(f.h2c);
    assert_eq!(f.alpn, [Alpn::H2, Alpn::Http11], "the default");
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
fn parse_duration_is_public() {
    assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
    assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
    assert!(parse_duration("30").unwrap_err().contains("unit"));
}
