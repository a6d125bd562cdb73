//! `engine import-haproxy` (issue 17) on the seed (its private addresses replaced by
//! loopback ones before importing) and on configurations written for each directive the
//! importer carries, changes, fixes or reports; every result that should run passes
//! `config::load_str`.

use config::haproxy::{import, Import, ReportKind, ReportLine};
use config::*;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

const SEED: &str = "/work/shared/seed/haproxy-moodle.cfg";

fn tempdir(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let d = std::env::temp_dir().join(format!(
        "engine-haproxy-test-{}-{}-{tag}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The seed with its three application nodes on 127.0.0.1:9101-9103 (and the backup's
/// comment on 9104): never the original's private addresses.
fn seed_loopback() -> String {
    let text = std::fs::read_to_string(SEED).expect("the seed HAProxy file");
    let mut out = text.clone();
    for i in 1..=4 {
        out = out.replace(&format!("192.168.1.10{i}:80"), &format!("127.0.0.1:910{i}"));
    }
    assert!(!out.contains("192.168."), "every private address replaced");
    out
}

/// A fake PEM with a certificate and a key (the loader checks the blocks, not the bytes).
const PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n";
const ERRORFILE: &str = "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nsorry\n";

/// The seed with its files (certificate, errorfile, admin socket) in `dir`.
fn seed_with_files(dir: &Path) -> String {
    std::fs::create_dir_all(dir.join("certs")).unwrap();
    std::fs::create_dir_all(dir.join("errors")).unwrap();
    std::fs::write(dir.join("certs/moodle.pem"), PEM).unwrap();
    std::fs::write(dir.join("errors/503.http"), ERRORFILE).unwrap();
    seed_loopback()
        .replace(
            "/etc/haproxy/certs/moodle.pem",
            &dir.join("certs/moodle.pem").display().to_string(),
        )
        .replace(
            "/etc/haproxy/errors/503.http",
            &dir.join("errors/503.http").display().to_string(),
        )
        .replace(
            "/run/haproxy/admin.sock",
            &dir.join("admin.sock").display().to_string(),
        )
}

fn imp_in(dir: &Path, text: &str) -> Import {
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, text).unwrap();
    import(text, &path)
}

fn imp(text: &str) -> Import {
    imp_in(&tempdir("imp"), text)
}

/// The result loads (it passes engine check); the report says so.
fn loads(i: &Import) -> Config {
    let dir = i.source.parent().unwrap();
    match config::load_str(&i.toml, &dir.join("lb.toml")) {
        Ok(l) => {
            assert!(
                i.runnable,
                "runnable agrees with load_str:\n{}",
                i.report_text()
            );
            l.config
        }
        Err(d) => panic!(
            "the imported file is refused:\n{}\n--- toml ---\n{}\n--- report ---\n{}",
            d.iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join("\n"),
            i.toml,
            i.report_text()
        ),
    }
}

/// The report lines of `kind` about HAProxy line `line`.
fn at(i: &Import, kind: ReportKind, line: usize) -> Vec<&ReportLine> {
    i.report
        .iter()
        .filter(|r| r.kind == kind && r.line == line)
        .collect()
}

/// The first report line of `kind` whose message contains `needle`, else the first whose
/// directive does.
fn find<'a>(i: &'a Import, kind: ReportKind, needle: &str) -> &'a ReportLine {
    let of_kind = || i.report.iter().filter(|r| r.kind == kind);
    of_kind()
        .find(|r| r.message.contains(needle))
        .or_else(|| of_kind().find(|r| r.directive.contains(needle)))
        .unwrap_or_else(|| panic!("no {kind:?} line about {needle:?}:\n{}", i.report_text()))
}

fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .map(|i| i + 1)
        .unwrap_or_else(|| panic!("{needle:?} not in the text"))
}

/// A frontend and a backend around `fe` and `be` lines (indented).
fn proxy(fe: &str, be: &str) -> String {
    format!("frontend web\n    bind 127.0.0.1:8080\n{fe}\n    default_backend app\n\nbackend app\n{be}\n    server s1 127.0.0.1:9101\n")
}

// ------------------------------------------------------------------------ the seed

#[test]
fn seed_reports_its_three_defects_and_fixes_the_lockout() {
    let text = seed_loopback();
    let i = imp(&text);
    let mut fixed: Vec<&ReportLine> = i
        .report
        .iter()
        .filter(|r| r.kind == ReportKind::Fixed)
        .collect();
    fixed.sort_by_key(|r| r.line);
    assert_eq!(
        fixed.len(),
        3,
        "the seed's three defects:\n{}",
        i.report_text()
    );
    let redirect = line_of(&text, "    redirect scheme https");
    let cookie = line_of(&text, "    cookie MoodleSession");
    let expect = line_of(&text, "    http-check expect");
    assert_eq!(
        fixed.iter().map(|r| r.line).collect::<Vec<_>>(),
        [redirect, cookie, expect]
    );
    assert!(
        fixed[0]
            .message
            .contains("not allowed in a `defaults` section"),
        "{}",
        fixed[0].message
    );
    assert!(
        fixed[0].message.contains("\"http_frontend\""),
        "{}",
        fixed[0].message
    );
    assert!(
        fixed[1].message.contains("every login loops"),
        "{}",
        fixed[1].message
    );
    assert!(fixed[1].fix.contains("SERVERID"), "{}", fixed[1].fix);
    assert!(
        fixed[2].message.contains("without `option httpchk`"),
        "{}",
        fixed[2].message
    );
    assert!(!fixed[2].fix.is_empty());
    // The lockout is fixed in the output, and the private addresses never appear.
    assert!(i.toml.contains("name = \"SERVERID\""), "{}", i.toml);
    assert!(!i.toml.contains("\"MoodleSession\""), "{}", i.toml);
    assert!(!i.toml.contains("192.168."));
    // As published, its certificate and errorfile are not on this machine: the errorfile
    // is a comment, and the missing certificate makes the result refuse to run.
    assert!(
        i.toml
            .contains("# errorfile_503 = \"/etc/haproxy/errors/503.http\""),
        "{}",
        i.toml
    );
    assert!(!i.runnable);
    let err = find(&i, ReportKind::Error, "/etc/haproxy/certs/moodle.pem");
    assert_eq!(
        err.line,
        line_of(&text, "bind *:443"),
        "the error points back to the bind line"
    );
    assert!(err.toml_line > 0);
    // Not needed, with why.
    for d in [
        "chroot",
        "daemon",
        "stats timeout",
        "log global",
        "mode http",
    ] {
        let r = find(&i, ReportKind::NotNeeded, d);
        assert!(!r.message.is_empty(), "{d}");
    }
}

#[test]
fn seed_with_its_files_passes_engine_check() {
    let dir = tempdir("seed");
    let text = seed_with_files(&dir);
    let i = imp_in(&dir, &text);
    let c = loads(&i);
    assert_eq!(c.global.maxconn, 20000);
    assert_eq!(
        c.global.admin_socket.as_deref(),
        Some(dir.join("admin.sock").as_path())
    );
    assert_eq!(c.global.user.as_deref(), Some("haproxy"));
    assert_eq!(c.global.group.as_deref(), Some("haproxy"));
    assert_eq!(c.log.access, LogTarget::Syslog);
    assert_eq!(c.log.format, LogFormat::Httplog);
    assert!(c.log.dontlognull);
    assert_eq!(c.frontends.len(), 2);
    let (http, https) = (&c.frontends[0], &c.frontends[1]);
    assert_eq!(http.name, "http_frontend");
    assert_eq!(http.bind, ["0.0.0.0:80".parse().unwrap()]);
    let r = http
        .redirect_https
        .as_ref()
        .expect("the defaults redirect on the plain frontend");
    assert_eq!((r.code, r.except_prefixes.len()), (302, 0));
    assert!(http.tls.is_none());
    assert_eq!(https.bind, ["0.0.0.0:443".parse().unwrap()]);
    assert!(
        https.redirect_https.is_none(),
        "!{{ ssl_fc }} never fires on TLS"
    );
    assert_eq!(
        https.tls.as_ref().unwrap().certs,
        [CertSource::Combined(dir.join("certs/moodle.pem"))]
    );
    assert_eq!(
        https.set_headers,
        [
            ("X-Forwarded-Proto".into(), "https".into()),
            ("X-Forwarded-SSL".into(), "on".into())
        ]
    );
    assert!(http.forwarded_for && https.forwarded_for);
    let t = &http.timeouts;
    assert_eq!(
        (t.connect, t.client, t.server, t.retries),
        (
            Duration::from_secs(5),
            Duration::from_secs(50),
            Duration::from_secs(50),
            3
        )
    );
    let b = &c.backends[0];
    assert_eq!(b.name, "moodle_backend");
    assert_eq!(http.backend, Some(0));
    assert_eq!(b.balance, Balance::RoundRobin);
    assert_eq!(
        b.errorfile_503.as_ref().unwrap().path,
        dir.join("errors/503.http")
    );
    let ck = b.cookie.as_ref().unwrap();
    assert_eq!(
        (ck.name.as_str(), ck.mode, ck.indirect, ck.nocache),
        ("SERVERID", CookieMode::Insert, true, true)
    );
    let chk = b.check.as_ref().expect("the http-check rules carried");
    assert_eq!(
        (chk.method.as_str(), chk.uri.as_str()),
        ("GET", "/login/index.php")
    );
    assert_eq!(chk.expect_string.as_deref(), Some("Moodle"));
    assert_eq!(chk.expect_status, StatusRange { lo: 200, hi: 200 });
    assert_eq!(
        (chk.interval, chk.rise, chk.fall),
        (Duration::from_secs(2), 2, 3)
    );
    let names: Vec<(&str, &str)> = b
        .servers
        .iter()
        .map(|s| (s.name.as_str(), s.cookie.as_str()))
        .collect();
    assert_eq!(
        names,
        [
            ("moodle_app_1", "s1"),
            ("moodle_app_2", "s2"),
            ("moodle_app_3", "s3")
        ]
    );
    assert!(b
        .servers
        .iter()
        .all(|s| s.check && s.address.ip().is_loopback()));
    // The one warning: the check has no Host (Moodle redirects other hosts).
    let w = find(&i, ReportKind::Warning, "host");
    assert_eq!(w.line, line_of(&text, "server moodle_app_1"));
}

#[test]
fn output_says_where_each_part_came_from() {
    let dir = tempdir("origins");
    let text = seed_with_files(&dir);
    let i = imp_in(&dir, &text);
    loads(&i);
    assert!(i.toml.starts_with("# lb.toml imported from haproxy.cfg"));
    for l in i.toml.lines() {
        let t = l.trim();
        if t.is_empty()
            || t.starts_with('#')
            || t == "]"
            || t.starts_with("[global]")
            || t.starts_with("[defaults]")
            || t.starts_with("[log]")
        {
            continue;
        }
        assert!(
            l.contains("# from haproxy.cfg:") || l.starts_with("forwarded_for = true"),
            "no origin: {l}"
        );
    }
    let server = line_of(&text, "server moodle_app_2");
    assert!(
        i.toml.contains(&format!(
            "\"127.0.0.1:9102\"                  # from haproxy.cfg:{server}"
        )),
        "{}",
        i.toml
    );
}

// ------------------------------------------------------------------------ frontends

#[test]
fn binds_get_explicit_addresses() {
    let i = imp("frontend web\n bind *:8080\n bind :8081,127.0.0.1:8082\n bind :::8083\n bind ipv6@:::8084 v6only\n default_backend app\nbackend app\n server s1 127.0.0.1:9101\n");
    let c = loads(&i);
    let want: Vec<std::net::SocketAddr> = [
        "0.0.0.0:8080",
        "0.0.0.0:8081",
        "127.0.0.1:8082",
        "[::]:8083",
        "0.0.0.0:8083",
        "[::]:8084",
    ]
    .iter()
    .map(|a| a.parse().unwrap())
    .collect();
    assert_eq!(c.frontends[0].bind, want);
    assert!(find(&i, ReportKind::Changed, "bind *:8080")
        .message
        .contains("0.0.0.0:8080"));
    assert!(find(&i, ReportKind::Changed, "bind :::8083")
        .message
        .contains("IPv6 and IPv4"));
    // Not carried: ranges, names, UNIX sockets.
    let i = imp("frontend web\n bind 127.0.0.1:8080\n bind 127.0.0.1:9000-9010\n bind unix@/run/x.sock\n default_backend app\nbackend app\n server s1 127.0.0.1:9101\n");
    loads(&i);
    assert_eq!(at(&i, ReportKind::NotCarried, 3).len(), 1);
    assert_eq!(at(&i, ReportKind::NotCarried, 4).len(), 1);
}

#[test]
fn ssl_crt_file_folder_key_file_and_alpn() {
    let dir = tempdir("tls");
    let certs = dir.join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    for f in ["b.pem", "a.pem"] {
        std::fs::write(certs.join(f), PEM).unwrap();
    }
    std::fs::write(certs.join("a.pem.ocsp"), "x").unwrap();
    let (cert, key) = PEM.split_at(PEM.find("-----BEGIN PRIVATE").unwrap());
    std::fs::write(dir.join("split.pem"), cert).unwrap();
    std::fs::write(dir.join("split.pem.key"), key).unwrap();
    let text = format!(
        "frontend web\n bind 127.0.0.1:8443 ssl crt {}/ alpn h2,http/1.1 ssl-min-ver TLSv1.2 no-tls-tickets\n bind 127.0.0.1:8444 ssl crt split.pem\n default_backend app\nbackend app\n server s1 127.0.0.1:9101\n",
        certs.display()
    );
    let i = imp_in(&dir, &text);
    let c = loads(&i);
    let tls = c.frontends[0].tls.as_ref().unwrap();
    assert_eq!(
        tls.certs,
        [
            CertSource::Combined(certs.join("a.pem")),
            CertSource::Combined(certs.join("b.pem")),
            CertSource::Separate {
                cert: dir.join("split.pem"),
                key: dir.join("split.pem.key")
            },
        ]
    );
    assert!(!tls.session_resumption, "no-tls-tickets");
    assert!(
        i.toml.contains("# alpn = [\"h2\", \"http/1.1\"]"),
        "{}",
        i.toml
    );
    assert!(find(&i, ReportKind::Changed, "alpn h2")
        .message
        .contains("until HTTP/2 lands"));
    assert!(find(&i, ReportKind::Changed, "certificate folder")
        .message
        .contains("a.pem"));
    find(&i, ReportKind::Changed, "relative path \"split.pem\"");
    find(&i, ReportKind::NotNeeded, "ssl-min-ver");
    // A folder that is not here: reported, written as given, and the result refused.
    let i = imp("frontend web\n bind 127.0.0.1:8443 ssl crt /etc/haproxy/certs/\n default_backend app\nbackend app\n server s1 127.0.0.1:9101\n");
    assert!(!i.runnable);
    assert!(find(&i, ReportKind::Changed, "/etc/haproxy/certs/")
        .message
        .contains("does not exist"));
    assert!(i.toml.contains("\"/etc/haproxy/certs/\""));
}

#[test]
fn plain_and_tls_binds_split_into_two_frontends() {
    let dir = tempdir("split");
    std::fs::write(dir.join("m.pem"), PEM).unwrap();
    let text = format!(
        "frontend web\n bind 127.0.0.1:8080\n bind 127.0.0.1:8443 ssl crt {}\n redirect scheme https code 301 if !{{ ssl_fc }}\n http-request set-header X-Forwarded-Proto https if {{ ssl_fc }}\n http-request set-header X-Site moodle\n default_backend app\nbackend app\n server s1 127.0.0.1:9101\n",
        dir.join("m.pem").display()
    );
    let i = imp_in(&dir, &text);
    let c = loads(&i);
    let names: Vec<&str> = c.frontends.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["web", "web_tls"]);
    let (plain, tls) = (&c.frontends[0], &c.frontends[1]);
    assert_eq!(plain.redirect_https.as_ref().map(|r| r.code), Some(301));
    assert!(plain.tls.is_none() && tls.tls.is_some() && tls.redirect_https.is_none());
    assert_eq!(plain.set_headers, [("X-Site".into(), "moodle".into())]);
    assert_eq!(
        tls.set_headers,
        [
            ("X-Forwarded-Proto".into(), "https".into()),
            ("X-Site".into(), "moodle".into())
        ]
    );
    assert_eq!((plain.backend, tls.backend), (Some(0), Some(0)));
    find(&i, ReportKind::Changed, "\"web_tls\"");
}

#[test]
fn redirect_scheme_https_forms() {
    let base = |fe: &str| proxy(fe, "");
    let c = loads(&imp(&base(
        "    redirect scheme https code 301 if !{ ssl_fc }",
    )));
    assert_eq!(
        c.frontends[0].redirect_https.as_ref().map(|r| r.code),
        Some(301)
    );
    let c = loads(&imp(&base(
        "    http-request redirect scheme https unless { ssl_fc }",
    )));
    assert_eq!(
        c.frontends[0].redirect_https.as_ref().map(|r| r.code),
        Some(302)
    );
    let i = imp(&base("    acl acme path_beg /.well-known/acme-challenge/\n    redirect scheme https code 308 if !{ ssl_fc } !acme"));
    let r = loads(&i).frontends[0].redirect_https.clone().unwrap();
    assert_eq!(
        (r.code, r.except_prefixes),
        (308, vec!["/.well-known/acme-challenge/".to_owned()])
    );
    find(&i, ReportKind::Carried, "acl acme");
    let i = imp(&base(
        "    redirect scheme https if !{ ssl_fc } !{ path_beg /.well-known/ /health }",
    ));
    assert_eq!(
        loads(&i).frontends[0]
            .redirect_https
            .as_ref()
            .unwrap()
            .except_prefixes,
        ["/.well-known/", "/health"]
    );
    // Conditions other than ssl_fc and path_beg: not carried, no redirect.
    let i = imp(&base(
        "    redirect scheme https if { hdr(host) -i moodle.example.edu }",
    ));
    assert!(loads(&i).frontends[0].redirect_https.is_none());
    assert!(!find(&i, ReportKind::NotCarried, "redirect scheme")
        .fix
        .is_empty());
    let i = imp(&base("    redirect location https://x.example/"));
    find(&i, ReportKind::NotCarried, "redirect location");
}

#[test]
fn redirect_in_defaults_goes_to_every_plain_frontend() {
    let dir = tempdir("defredir");
    std::fs::write(dir.join("m.pem"), PEM).unwrap();
    let text = format!(
        "defaults\n mode http\n redirect scheme https if !{{ ssl_fc }}\nfrontend a\n bind 127.0.0.1:8080\n default_backend app\nfrontend b\n bind 127.0.0.1:8081\n default_backend app\nfrontend s\n bind 127.0.0.1:8443 ssl crt {}\n default_backend app\nbackend app\n server s1 127.0.0.1:9101\n",
        dir.join("m.pem").display()
    );
    let i = imp_in(&dir, &text);
    let c = loads(&i);
    let redirected: Vec<bool> = c
        .frontends
        .iter()
        .map(|f| f.redirect_https.is_some())
        .collect();
    assert_eq!(redirected, [true, true, false]);
    let f = find(&i, ReportKind::Fixed, "redirect scheme https");
    assert_eq!(f.line, 3);
    assert!(
        f.message.contains("HAProxy refuses") && f.message.contains("\"a\", \"b\""),
        "{}",
        f.message
    );
}

#[test]
fn set_header_values_and_conditions() {
    let i = imp(&proxy(
        "    http-request set-header X-Forwarded-Proto http\n    http-request add-header X-Env prod\n    http-request set-header X-Port %[dst_port]\n    http-request set-header X-Pct 100%%\n    http-request set-header X-Cond 1 if { src 10.0.0.0/8 }",
        "",
    ));
    let c = loads(&i);
    assert_eq!(
        c.frontends[0].set_headers,
        [
            ("X-Forwarded-Proto".into(), "http".into()),
            ("X-Env".into(), "prod".into()),
            ("X-Pct".into(), "100%".into())
        ]
    );
    find(&i, ReportKind::Changed, "add-header X-Env");
    find(&i, ReportKind::NotCarried, "X-Port");
    find(&i, ReportKind::NotCarried, "X-Cond");
}

#[test]
fn backends_chosen_by_default_backend_and_use_backend() {
    let i = imp("frontend web\n bind 127.0.0.1:8080\n use_backend b\n default_backend a\n use_backend a if { path_beg /admin }\nbackend a\n server s1 127.0.0.1:9101\nbackend b\n server s1 127.0.0.1:9102\n");
    let c = loads(&i);
    assert_eq!(
        c.frontends[0].backend,
        Some(1),
        "the unconditional use_backend"
    );
    find(&i, ReportKind::NotNeeded, "default_backend a");
    let nc = find(&i, ReportKind::NotCarried, "use_backend a if");
    assert_eq!(nc.line, 5);
    assert!(!nc.fix.is_empty());
}

#[test]
fn forwardfor_httplog_dontlognull_and_log_targets() {
    let i = imp(&("defaults\n log global\n option httplog\n option dontlognull\n option forwardfor\nglobal\n log stdout format raw local0\n".to_owned() + &proxy("", "")));
    let c = loads(&i);
    assert_eq!(
        (c.log.access.clone(), c.log.format, c.log.dontlognull),
        (LogTarget::Stdout, LogFormat::Httplog, true)
    );
    assert!(c.frontends[0].forwarded_for);
    // Without `option forwardfor` the engine still replaces X-Forwarded-For: reported.
    let i = imp(&proxy("", ""));
    let c = loads(&i);
    assert!(c.frontends[0].forwarded_for);
    assert!(find(&i, ReportKind::Changed, "option forwardfor")
        .message
        .contains("forge"));
    // No log line in defaults or frontends: HAProxy logged no request.
    assert_eq!(c.log.access, LogTarget::Off);
    let c = loads(&imp(&proxy(
        "    no option forwardfor\n    log /dev/log local0",
        "",
    )));
    assert!(!c.frontends[0].forwarded_for);
    assert_eq!(c.log.access, LogTarget::Syslog);
}

// ------------------------------------------------------------------------ backends

#[test]
fn balance_roundrobin_leastconn_and_others() {
    assert_eq!(
        loads(&imp(&proxy("", "    balance leastconn"))).backends[0].balance,
        Balance::LeastConn
    );
    assert_eq!(
        loads(&imp(&proxy("", "    balance roundrobin"))).backends[0].balance,
        Balance::RoundRobin
    );
    let i = imp(&proxy("", "    balance source"));
    assert_eq!(loads(&i).backends[0].balance, Balance::RoundRobin);
    find(&i, ReportKind::NotCarried, "balance source");
}

#[test]
fn cookie_options() {
    let i = imp(&proxy("", "    cookie SRV insert indirect nocache httponly secure maxidle 30m maxlife 8h domain .example.edu attr \"SameSite=Lax\""));
    let c = loads(&i).backends[0].cookie.clone().unwrap();
    assert_eq!(c.name, "SRV");
    assert_eq!(
        (c.mode, c.indirect, c.nocache, c.httponly, c.secure),
        (CookieMode::Insert, true, true, true, true)
    );
    assert_eq!(
        (c.maxidle, c.maxlife),
        (
            Some(Duration::from_secs(1800)),
            Some(Duration::from_secs(8 * 3600))
        )
    );
    assert_eq!(
        (c.domain.as_deref(), c.samesite),
        (Some(".example.edu"), Some(SameSite::Lax))
    );
    // HAProxy's defaults are not the engine's: written explicitly.
    let c = loads(&imp(&proxy("", "    cookie SRV insert"))).backends[0]
        .cookie
        .clone()
        .unwrap();
    assert_eq!((c.indirect, c.nocache), (false, false));
    // Prefix mode on MoodleSession is right, and kept.
    let i = imp(&proxy("", "    cookie MoodleSession prefix nocache"));
    let c = loads(&i).backends[0].cookie.clone().unwrap();
    assert_eq!(
        (c.name.as_str(), c.mode),
        ("MoodleSession", CookieMode::Prefix)
    );
    assert!(i.report.iter().all(|r| r.kind != ReportKind::Fixed));
    // Insert mode named like Moodle's cookie (any case): SERVERID, reported as fixed.
    let i = imp(&proxy("", "    cookie moodlesession insert indirect"));
    assert_eq!(
        loads(&i).backends[0].cookie.as_ref().unwrap().name,
        "SERVERID"
    );
    find(&i, ReportKind::Fixed, "cookie moodlesession");
    // Prefix mode on another application's cookie: app_cookie follows.
    let b = loads(&imp(&proxy("", "    cookie JSESSIONID prefix nocache"))).backends[0].clone();
    assert_eq!(b.app_cookie, "JSESSIONID");
    let i = imp(&proxy("", "    cookie SRV rewrite"));
    assert!(loads(&i).backends[0].cookie.is_none());
    find(&i, ReportKind::NotCarried, "cookie SRV rewrite");
}

#[test]
fn server_options() {
    let i = imp("frontend web\n bind 127.0.0.1:8080\n default_backend app\nbackend app\n option httpchk GET / HTTP/1.1\\r\\nHost:\\ moodle.test\n default-server inter 3s rise 1 fall 2\n server s1 127.0.0.1:9101 check cookie a weight 3 maxconn 50\n server s2 127.0.0.1:9102 check backup cookie b\n server s3 127.0.0.1:9103 cookie c\n server s4 127.0.0.1:9104 check disabled weight 0 cookie d\n server s5 10.0.0.5 check cookie e\n");
    let c = loads(&i);
    let b = &c.backends[0];
    let s: Vec<(u32, u32, bool, bool)> = b
        .servers
        .iter()
        .map(|s| (s.weight, s.maxconn, s.backup, s.check))
        .collect();
    assert_eq!(
        s,
        [
            (3, 50, false, true),
            (1, 0, true, true),
            (1, 0, false, false),
            (1, 0, false, true),
            (1, 0, false, true)
        ]
    );
    assert_eq!(b.servers[4].address, "10.0.0.5:80".parse().unwrap());
    let chk = b.check.as_ref().unwrap();
    assert_eq!(
        (chk.interval, chk.rise, chk.fall),
        (Duration::from_secs(3), 1, 2),
        "default-server"
    );
    assert_eq!(chk.host.as_deref(), Some("moodle.test"));
    let dis = find(&i, ReportKind::NotCarried, "disabled");
    assert!(dis.fix.contains("disable server"), "{}", dis.fix);
    assert!(find(&i, ReportKind::NotCarried, "weight 0")
        .fix
        .contains("set weight"));
    find(&i, ReportKind::Changed, "has no port");
    find(&i, ReportKind::Carried, "default-server");
    // A host name: not carried, and the result would not run.
    let i = imp(&proxy("", "    server s2 app2.example.edu:80"));
    assert!(!i.runnable);
    let e = i
        .report
        .iter()
        .find(|r| r.kind == ReportKind::Error)
        .unwrap();
    assert_eq!(
        e.line,
        7,
        "the error points back to the server line:\n{}",
        i.report_text()
    );
}

#[test]
fn http_checks() {
    let check = |be: &str| {
        let i = imp(&format!("frontend web\n bind 127.0.0.1:8080\n default_backend app\nbackend app\n{be}\n server s1 127.0.0.1:9101 check inter 1s\n server s2 127.0.0.1:9102 check inter 5s\n"));
        let c = loads(&i).backends[0].check.clone().expect("a check");
        (i, c)
    };
    // option httpchk alone: HAProxy's OPTIONS /.
    let (i, c) = check(" option httpchk");
    assert_eq!((c.method.as_str(), c.uri.as_str()), ("OPTIONS", "/"));
    assert!(find(&i, ReportKind::Changed, "server s2")
        .message
        .contains("differ"));
    // With the rules turned on: carried, not a mistake.
    let (i, c) = check(" option httpchk\n http-check send meth GET uri /login/index.php hdr Host moodle.test\n http-check expect status 200\n timeout check 3s");
    assert_eq!(
        (c.method.as_str(), c.uri.as_str(), c.host.as_deref()),
        ("GET", "/login/index.php", Some("moodle.test"))
    );
    assert_eq!(
        (c.expect_status, c.interval, c.timeout),
        (
            StatusRange { lo: 200, hi: 200 },
            Duration::from_secs(1),
            Duration::from_secs(3)
        )
    );
    assert!(
        i.report.iter().all(|r| r.kind != ReportKind::Fixed),
        "{}",
        i.report_text()
    );
    let (_, c) = check(" option httpchk GET /\n http-check expect status 200-299\n http-check expect string Moodle");
    assert_eq!(
        (c.expect_status, c.expect_string.as_deref()),
        (StatusRange { lo: 200, hi: 299 }, Some("Moodle"))
    );
    // Without option httpchk, HAProxy ignores the rules: carried and reported as fixed.
    let (i, c) = check(" http-check send meth HEAD uri /x\n http-check expect status 204");
    assert_eq!((c.method.as_str(), c.uri.as_str()), ("HEAD", "/x"));
    assert_eq!(find(&i, ReportKind::Fixed, "http-check send").line, 5);
    // `check` alone: a TCP check in HAProxy, an HTTP one in the engine; reported.
    let (i, c) = check("");
    assert_eq!((c.method.as_str(), c.uri.as_str()), ("GET", "/"));
    assert_eq!(find(&i, ReportKind::Changed, "TCP").line, 6);
    // What cannot be carried.
    let (i, _) = check(" option httpchk\n http-check expect rstring ^Moodle\n http-check expect ! status 500\n http-check disable-on-404");
    for n in ["rstring", "! status", "disable-on-404"] {
        find(&i, ReportKind::NotCarried, n);
    }
    // No server has `check`: nothing is probed, in either.
    let i = imp(&proxy("", "    option httpchk GET /"));
    assert!(loads(&i).backends[0].check.is_none());
    find(&i, ReportKind::NotNeeded, "option httpchk");
}

#[test]
fn errorfile_503() {
    let dir = tempdir("ef");
    std::fs::write(dir.join("503.http"), ERRORFILE).unwrap();
    let i = imp_in(
        &dir,
        &proxy(
            "",
            "    errorfile 503 503.http\n    errorfile 404 /x/404.http",
        ),
    );
    let b = loads(&i).backends[0].clone();
    assert_eq!(b.errorfile_503.unwrap().path, dir.join("503.http"));
    find(&i, ReportKind::NotCarried, "errorfile 404");
    // Missing, or not a raw HTTP response: a comment, and the result still runs.
    std::fs::write(dir.join("bad.http"), "<html>sorry</html>").unwrap();
    for f in ["/nowhere/503.http", "bad.http"] {
        let i = imp_in(&dir, &proxy("", &format!("    errorfile 503 {f}")));
        assert!(loads(&i).backends[0].errorfile_503.is_none());
        assert!(i.toml.contains("# errorfile_503 = "), "{}", i.toml);
        assert!(find(&i, ReportKind::NotCarried, "errorfile 503")
            .fix
            .contains("uncomment"));
    }
    // In a frontend: carried to its backend.
    let i = imp_in(&dir, &proxy("    errorfile 503 503.http", ""));
    assert!(loads(&i).backends[0].errorfile_503.is_some());
}

// ------------------------------------------------------------------------ timeouts, global

#[test]
fn every_timeout() {
    let i = imp(&("defaults\n timeout connect 5000\n timeout client 1m\n timeout server 50s\n timeout http-request 10s\n timeout http-keep-alive 2000ms\n timeout queue 1500\n timeout check 4s\n timeout tunnel 1h\n timeout client-fin 1s\n retries 2\n".to_owned() + &proxy("    timeout client 30s", "    timeout server 90s\n    option httpchk\n    server s0 127.0.0.1:9100 check")));
    let c = loads(&i);
    let f = &c.frontends[0].timeouts;
    assert_eq!(
        (
            f.connect,
            f.client,
            f.http_request,
            f.keep_alive,
            f.queue,
            f.retries
        ),
        (
            Duration::from_secs(5),
            Duration::from_secs(30),
            Duration::from_secs(10),
            Duration::from_secs(2),
            Duration::from_millis(1500),
            2
        )
    );
    let b = &c.backends[0];
    assert_eq!(
        (b.timeouts.server, b.timeouts.client),
        (Duration::from_secs(90), Duration::from_secs(60))
    );
    assert_eq!(b.check.as_ref().unwrap().timeout, Duration::from_secs(4));
    assert!(i.toml.contains("timeout_client = \"1m\""), "{}", i.toml);
    find(&i, ReportKind::NotCarried, "timeout tunnel");
    find(&i, ReportKind::NotCarried, "timeout client-fin");
    // Several defaults sections: each proxy writes what it inherited.
    let i = imp("defaults\n timeout connect 1s\nfrontend a\n bind 127.0.0.1:8080\n default_backend x\ndefaults\n timeout connect 2s\n timeout server 7s\nbackend x\n server s1 127.0.0.1:9101\n");
    let c = loads(&i);
    assert_eq!(
        c.frontends[0].timeouts.connect,
        Duration::from_secs(5),
        "a frontend does not take timeout connect"
    );
    assert_eq!(
        (
            c.backends[0].timeouts.connect,
            c.backends[0].timeouts.server
        ),
        (Duration::from_secs(2), Duration::from_secs(7))
    );
    let i = imp(&("defaults\n timeout connect 0\n".to_owned() + &proxy("", "")));
    loads(&i);
    find(&i, ReportKind::NotCarried, "timeout connect 0");
}

#[test]
fn global_section() {
    let dir = tempdir("global");
    let i = imp_in(&dir, &format!("global\n maxconn 5000\n user www-data\n group www-data\n stats socket {}/admin.sock mode 600 level admin\n tune.http.maxhdr 200\n nbthread 4\n pidfile /run/haproxy.pid\n ssl-default-bind-ciphers ECDHE\n lua-load /etc/haproxy/x.lua\ndefaults\n maxconn 3000\n option redispatch\n{}", dir.display(), proxy("", "")));
    let c = loads(&i);
    assert_eq!(
        (
            c.global.maxconn,
            c.global.user.as_deref(),
            c.global.group.as_deref()
        ),
        (5000, Some("www-data"), Some("www-data"))
    );
    assert_eq!(
        c.global.admin_socket.as_deref(),
        Some(dir.join("admin.sock").as_path())
    );
    assert_eq!(c.limits.max_headers, 200);
    for n in [
        "nbthread",
        "pidfile",
        "ssl-default-bind-ciphers",
        "option redispatch",
    ] {
        find(&i, ReportKind::NotNeeded, n);
    }
    find(&i, ReportKind::NotCarried, "lua-load");
    assert!(find(&i, ReportKind::NotCarried, "maxconn 3000")
        .fix
        .contains("global.maxconn"));
}

#[test]
fn listen_sections_and_the_stats_page() {
    let i = imp("listen moodle\n bind 127.0.0.1:8080\n balance leastconn\n server s1 127.0.0.1:9101\nlisten stats\n bind *:8404\n stats enable\n stats uri /haproxy?stats\n stats auth admin:secret\n stats refresh 10s\n");
    let c = loads(&i);
    assert_eq!(c.frontends.len(), 1);
    assert_eq!(
        (c.frontends[0].name.as_str(), c.frontends[0].backend),
        ("moodle", Some(0))
    );
    assert_eq!(
        (c.backends[0].name.as_str(), c.backends[0].balance),
        ("moodle", Balance::LeastConn)
    );
    assert_eq!(c.global.stats, Some("0.0.0.0:8404".parse().unwrap()));
    find(&i, ReportKind::Changed, "stats uri");
    assert!(find(&i, ReportKind::NotCarried, "stats auth")
        .fix
        .contains("loopback"));
}

// ------------------------------------------------------------------------ what cannot be carried

#[test]
fn what_cannot_be_carried_is_listed_with_its_line() {
    let text = "global\n lua-load /etc/haproxy/auth.lua\nfrontend web\n bind 127.0.0.1:8080\n acl is_admin path_beg /admin\n acl from_lan src 10.0.0.0/8\n http-request deny if is_admin !from_lan\n use_backend admins if is_admin\n use_backend %[req.hdr(host),lower,map(/etc/haproxy/hosts.map,app)]\n stick-table type ip size 100k expire 30m store http_req_rate(10s)\n http-request track-sc0 src\n tcp-request connection reject if { src_conn_cur ge 100 }\n capture request header Host len 64\n compression algo gzip\n default_backend app\nbackend app\n stick on src\n server s1 127.0.0.1:9101\nbackend admins\n server a1 127.0.0.1:9102\nuserlist admins\n user a password x\n";
    let i = imp(text);
    loads(&i);
    for (line, what) in [
        (2, "lua"),
        (5, "ACL"),
        (6, "ACL"),
        (7, "rules"),
        (8, "condition"),
        (9, "map"),
        (10, "stick"),
        (11, "rules"),
        (12, "TCP"),
        (13, "capture"),
        (14, "compression"),
        (17, "stick"),
        (21, "user lists"),
    ] {
        let r = at(&i, ReportKind::NotCarried, line);
        assert_eq!(r.len(), 1, "line {line}:\n{}", i.report_text());
        assert!(
            r[0].message.to_lowercase().contains(&what.to_lowercase()),
            "line {line}: {}",
            r[0].message
        );
        assert!(!r[0].fix.is_empty(), "line {line}: what to do instead");
    }
    assert!(i.runnable, "not carried, yet the result runs: exit 0");
    // Nothing is dropped silently: every directive line has a report.
    for (n, l) in text.lines().enumerate() {
        if l.starts_with(' ') && !l.trim_start().starts_with("user a") {
            assert!(
                i.report.iter().any(|r| r.line == n + 1),
                "line {} ({l}) unreported",
                n + 1
            );
        }
    }
    let shown = i.report_text();
    assert!(
        shown.contains("haproxy.cfg:9: not carried: `use_backend %[req.hdr(host)"),
        "{shown}"
    );
    assert!(shown.contains("\n    instead: "), "{shown}");
}

#[test]
fn tcp_mode_proxies_are_left_out() {
    let i = imp(&("frontend db\n mode tcp\n bind 127.0.0.1:3306\n default_backend mysql\nbackend mysql\n mode tcp\n server m1 127.0.0.1:3307\n".to_owned() + &proxy("", "")));
    let c = loads(&i);
    assert_eq!((c.frontends.len(), c.backends.len()), (1, 1));
    find(&i, ReportKind::NotCarried, "frontend db");
    assert_eq!(
        at(&i, ReportKind::NotCarried, 3).len(),
        1,
        "its bind, left out with it"
    );
}

#[test]
fn unreadable_lines_and_odd_files_never_panic() {
    let i = imp(&(proxy("", "") + "    http-check expect string \"unclosed\n"));
    loads(&i);
    assert_eq!(
        at(&i, ReportKind::NotCarried, 9).len(),
        1,
        "{}",
        i.report_text()
    );
    for text in [
        "",
        "# only a comment\n",
        "maxconn 10\n",
        "frontend\n",
        "backend\n server\n",
        "frontend f\n bind\n",
        "listen\n",
        "\0\0\u{7f}",
        "defaults from nowhere\nfrontend x from nowhere\n bind :80\n",
    ] {
        let i = import(text, Path::new("/tmp/haproxy.cfg"));
        assert!(!i.runnable, "{text:?}");
        assert!(!i.report_text().is_empty());
    }
    // Directives without their arguments: reported, and a redirect of every request runs.
    let i = import("frontend f\n bind :80\n redirect scheme https code\n http-request set-header\n cookie\n errorfile\n timeout\n acl\n use_backend\n default_backend\n server\n", Path::new("/tmp/haproxy.cfg"));
    for line in 3..=11 {
        assert!(
            !at(&i, ReportKind::NotCarried, line).is_empty(),
            "line {line}:\n{}",
            i.report_text()
        );
    }
}

#[test]
fn report_is_grouped_with_a_summary() {
    let dir = tempdir("render");
    let text = seed_with_files(&dir);
    let shown = imp_in(&dir, &text).report_text();
    let order = [
        "== mistakes of the original",
        "== carried with a change",
        "== not needed",
        "== carried (",
        "== engine check: warnings",
    ];
    let pos: Vec<usize> = order
        .iter()
        .map(|h| shown.find(h).unwrap_or_else(|| panic!("{h}:\n{shown}")))
        .collect();
    assert!(pos.windows(2).all(|w| w[0] < w[1]), "{shown}");
    assert!(
        shown
            .trim_end()
            .ends_with("the result passes engine check (1 warning)"),
        "{shown}"
    );
    assert!(shown.contains("\n    fix: name = \"SERVERID\""), "{shown}");
}
