//! The `engine check` lints that catch login loops (issue 3): an inserted cookie named
//! like the application's session cookie is refused; a health check without a host, and
//! a body check that would pass redirects and error pages, are warned about.

use std::path::{Path, PathBuf};
use std::process::Command;

use engine_tests::*;

fn check_file(text: &str) -> (i32, String, PathBuf) {
    let dir = tmpdir("sticky-check");
    let p = dir.join("lb.toml");
    std::fs::write(&p, text).unwrap();
    let out = Command::new(engine_bin(false))
        .arg("check")
        .arg("-c")
        .arg(&p)
        .output()
        .expect("run engine check");
    let s =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), s, p)
}

fn base(backend_extra: &str) -> String {
    format!(
        "[log]\naccess = \"off\"\n\n[[frontend]]\nname = \"web\"\nbind = [\"127.0.0.1:18080\"]\n\
         backend = \"moodle\"\n\n[[backend]]\nname = \"moodle\"\n{backend_extra}\n\
         [[backend.server]]\nname = \"a1\"\naddress = \"127.0.0.1:19101\"\n\n\
         [[backend.server]]\nname = \"a2\"\naddress = \"127.0.0.1:19102\"\n"
    )
}

/// The 1-based line of the first line of `text` containing `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.contains(needle)).unwrap() + 1
}

#[test]
fn check_refuses_insert_cookie_named_like_the_session_cookie() {
    let text = base("\n[backend.cookie]\nname = \"MoodleSession\"\nmode = \"insert\"\n");
    let (code, out, p) = check_file(&text);
    assert_eq!(code, 1, "a lockout is an error:\n{out}");
    let line = line_of(&text, "name = \"MoodleSession\"");
    assert!(
        out.contains(&format!("{}:{line}: error", p.display())),
        "file:line of the cookie name, as an error:\n{out}"
    );
    let low = out.to_ascii_lowercase();
    assert!(out.contains("MoodleSession"), "{out}");
    assert!(
        low.contains("login") && low.contains("loop"),
        "it explains the login loop:\n{out}"
    );
    assert!(out.contains("SERVERID"), "fix 1: another name:\n{out}");
    assert!(
        out.contains("prefix"),
        "fix 2: mode = \"prefix\" on the application's cookie:\n{out}"
    );
    assert!(out.contains("fix"), "{out}");

    // Without mode (insert is the default), and with another application cookie.
    let (code, out, _) = check_file(&base("\n[backend.cookie]\nname = \"MoodleSession\"\n"));
    assert_eq!(code, 1, "insert is the default mode:\n{out}");
    let (code, out, _) = check_file(&base(
        "app_cookie = \"PHPSESSID\"\n[backend.cookie]\nname = \"PHPSESSID\"\n",
    ));
    assert_eq!(code, 1, "named like app_cookie:\n{out}");
    assert!(out.contains("PHPSESSID"), "{out}");

    // The two fixes pass.
    let (code, out, _) = check_file(&base("\n[backend.cookie]\nname = \"SERVERID\"\n"));
    assert_eq!(code, 0, "SERVERID:\n{out}");
    let (code, out, _) = check_file(&base(
        "\n[backend.cookie]\nname = \"MoodleSession\"\nmode = \"prefix\"\n",
    ));
    assert_eq!(code, 0, "prefix mode on MoodleSession:\n{out}");
    assert!(!out.to_ascii_lowercase().contains("loop"), "{out}");

    // Forced, the library takes it (as a warning), for tests that show the loop.
    let forced = config::load_str_with(
        &base("\n[backend.cookie]\nname = \"MoodleSession\"\n"),
        Path::new("/tmp/x/lb.toml"),
        &config::LoadOptions { force: true },
    )
    .expect("forced past the lockout lint");
    assert!(
        forced
            .warnings
            .iter()
            .any(|w| w.to_string().contains("MoodleSession")),
        "the lint stays, as a warning: {:?}",
        forced.warnings
    );
}

#[test]
fn check_warns_about_a_check_without_host() {
    let text = base("\n[backend.check]\nuri = \"/login/index.php\"\nexpect_status = \"200\"\n");
    let (code, out, p) = check_file(&text);
    assert_eq!(code, 0, "a warning, not an error:\n{out}");
    let low = out.to_ascii_lowercase();
    assert!(low.contains(": warning"), "{out}");
    assert!(
        out.contains(&p.display().to_string()),
        "the file is named:\n{out}"
    );
    assert!(
        low.contains("host") && low.contains("redirect"),
        "it explains that Moodle redirects a probe with the wrong Host:\n{out}"
    );
    assert!(out.contains("host = \""), "the fix: host = \"...\":\n{out}");

    let (code, out, _) = check_file(&base(
        "\n[backend.check]\nuri = \"/login/index.php\"\nhost = \"moodle.example.edu\"\nexpect_status = \"200\"\n",
    ));
    assert_eq!(code, 0, "{out}");
    assert!(
        !out.to_ascii_lowercase().contains(": warning"),
        "with host and 200: no warning:\n{out}"
    );
}

#[test]
fn check_warns_about_a_body_check_passing_redirects_and_errors() {
    for range in ["200-399", "200-599", "300-399", "200-404"] {
        let text = base(&format!(
            "\n[backend.check]\nuri = \"/login/index.php\"\nhost = \"moodle.example.edu\"\n\
             expect_status = \"{range}\"\nexpect_string = \"Moodle\"\n"
        ));
        let (code, out, p) = check_file(&text);
        assert_eq!(code, 0, "{range}: a warning, not an error:\n{out}");
        let line = line_of(&text, "expect_status");
        assert!(
            out.contains(&format!("{}:{line}: warning", p.display())),
            "{range}: file:line of expect_status, as a warning:\n{out}"
        );
        assert!(out.contains("expect_status"), "{out}");
        assert!(
            out.to_ascii_lowercase().contains("redirect"),
            "{range}: explains that a redirect (or error page) passes:\n{out}"
        );
        assert!(
            out.contains("expect_status = \"200\""),
            "{range}: the fix:\n{out}"
        );
    }
    // The default range (200-399) with a body check warns too.
    let (code, out, _) = check_file(&base(
        "\n[backend.check]\nuri = \"/login/index.php\"\nhost = \"moodle.example.edu\"\nexpect_string = \"Moodle\"\n",
    ));
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("expect_status"),
        "default expect_status 200-399 with expect_string:\n{out}"
    );
    // 200 only: fine.
    let (code, out, _) = check_file(&base(
        "\n[backend.check]\nuri = \"/login/index.php\"\nhost = \"moodle.example.edu\"\n\
         expect_status = \"200\"\nexpect_string = \"Moodle\"\n",
    ));
    assert_eq!(code, 0, "{out}");
    assert!(!out.to_ascii_lowercase().contains(": warning"), "{out}");
}
