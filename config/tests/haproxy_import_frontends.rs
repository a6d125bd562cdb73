//! `engine import-haproxy` (issue 17), part one, the frontend directives: binds given
//! explicit addresses, certificates and ALPN, plain and TLS binds split into two
//! frontends, HTTPS redirects, set-header, the backend chosen, forwardfor and the log.
//! Every result that should run passes `config::load_str`.

mod haproxy_common;

use config::haproxy::ReportKind;
use config::*;
use haproxy_common::*;

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
        i.toml.contains("\nalpn = [\"h2\", \"http/1.1\"]"),
        "{}",
        i.toml
    );
    assert_eq!(c.frontends[0].alpn, [Alpn::H2, Alpn::Http11]);
    find(&i, ReportKind::Carried, "alpn h2,http/1.1");
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
