//! `engine import-haproxy` (issue 17), part two: balance, cookie, servers, health
//! checks, errorfile, every timeout, the global section, listen sections and the stats
//! page. Every result that should run passes `config::load_str`.

mod haproxy_common;

use config::haproxy::ReportKind;
use config::*;
use haproxy_common::*;
use std::time::Duration;

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
fn frontend_rules_in_a_backend_are_listed() {
    let i = imp(&proxy(
        "",
        "    redirect scheme https if !{ ssl_fc }\n    http-request set-header X-A b",
    ));
    let c = loads(&i);
    assert!(c.frontends[0].redirect_https.is_none() && c.frontends[0].set_headers.is_empty());
    assert!(find(&i, ReportKind::NotCarried, "redirect scheme")
        .fix
        .contains("redirect_https"));
    assert!(find(&i, ReportKind::NotCarried, "X-A")
        .fix
        .contains("set_headers"));
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

// ------------------------------------------------------------------------ robustness

/// Every line of the seed cut after each of its words, and with each word doubled: the
/// import never panics, and its TOML is always TOML.
#[test]
fn seed_with_any_line_cut_or_doubled() {
    let seed = seed_loopback();
    let lines: Vec<&str> = seed.lines().collect();
    for (n, l) in lines.iter().enumerate() {
        let words: Vec<&str> = l.split_whitespace().collect();
        for k in 0..=words.len() {
            let mut variants = vec![words[..k].join(" ")];
            if k < words.len() {
                let mut doubled = words.clone();
                doubled.insert(k, words[k]);
                variants.push(doubled.join(" "));
            }
            for v in variants {
                let mut text: Vec<String> = lines.iter().map(|x| x.to_string()).collect();
                text[n] = format!("    {v}");
                let i =
                    config::haproxy::import(&text.join("\n"), std::path::Path::new("/tmp/h.cfg"));
                toml::from_str::<toml::Table>(&i.toml)
                    .unwrap_or_else(|e| panic!("line {} as {v:?}: {e}\n{}", n + 1, i.toml));
            }
        }
    }
}
