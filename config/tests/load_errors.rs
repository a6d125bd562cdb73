//! Refused configurations: every error with its line, field and fix, unknown fields, wrong
//! types and syntax errors, all errors at once.

mod common;

use common::*;
use config::*;
use std::path::Path;

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
fn no_frontend_is_an_error() {
    let ds = errs("[global]\nmaxconn = 10\n");
    assert_eq!(ds.len(), 1, "{ds:#?}");
    assert!(ds[0].message.contains("no [[frontend]]"));
}
