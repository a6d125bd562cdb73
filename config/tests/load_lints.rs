//! The lints: the warnings, the lockout lint and `force`, and warnings that come with the
//! errors.

mod common;

use common::*;
use config::*;

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
fn errors_come_with_the_warnings() {
    let text = format!("{BASE}[backend.check]\nrise = 0\n");
    let ds = errs(&text);
    assert_eq!(ds.len(), 2, "{ds:#?}");
    assert!(ds
        .iter()
        .any(|d| d.severity == Severity::Warning && d.message.contains("no `host`")));
    assert!(ds.iter().any(|d| d.is_error() && d.field.contains("rise")));
}
