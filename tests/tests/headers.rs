//! Request headers a client may not pass on (issue 16): PHP turns `-` into `_` when it
//! builds `$_SERVER`, so `X_Forwarded_Proto: https` from a plain-HTTP client would reach
//! Moodle as `HTTP_X_FORWARDED_PROTO` and pass for HTTPS (Moodle's `sslproxy`). Names
//! with an underscore are dropped by default (nginx's and Apache's rule); with
//! `drop_underscore_headers = false` they pass, except those that differ from a header
//! the engine sets only by `_` for `-`.

use engine_tests::*;

both_drivers!(
    underscore_names_dropped_by_default,
    underscore_variants_of_protected_names_dropped_when_allowed,
);

/// The head the origin received for a GET with these headers, lower-cased.
fn received(r: &Running, headers: &[(&str, &str)]) -> String {
    let mut c = conn(r);
    let resp = c.request("POST", "/echo", headers, b"x").expect("request");
    assert_eq!(resp.status, 200);
    let text = resp.text();
    let end = text.find("\r\n\r\n").expect("echoed head") + 4;
    text[..end].to_ascii_lowercase()
}

const SPOOF: [(&str, &str); 5] = [
    ("X_Forwarded_Proto", "https"),
    ("X_Forwarded_SSL", "on"),
    ("x-forwarded_for", "6.6.6.6"),
    ("X_Custom", "from-client"),
    ("X_Other_Thing", "kept?"),
];

fn underscore_names_dropped_by_default(driver: DriverChoice) {
    let o = origins(1);
    let r = start(
        Web::new(&[&o[0]])
            .frontend(r#"set_headers = { "X-Custom" = "from-lb" }"#)
            .config(),
        driver,
    );
    let head = received(&r, &SPOOF);
    assert!(!head.contains('_'), "no name with an underscore:\n{head}");
    assert!(
        !head.contains("6.6.6.6") && !head.contains("https"),
        "{head}"
    );
    assert!(
        head.contains("\r\nx-forwarded-for: 127.0.0.1\r\n"),
        "{head}"
    );
    assert!(head.contains("\r\nx-custom: from-lb\r\n"), "{head}");
}

fn underscore_variants_of_protected_names_dropped_when_allowed(driver: DriverChoice) {
    let o = origins(1);
    let r = start(
        Web::new(&[&o[0]])
            .frontend(r#"set_headers = { "X-Custom" = "from-lb" }"#)
            .tail("[limits]\ndrop_underscore_headers = false\n")
            .config(),
        driver,
    );
    let head = received(&r, &SPOOF);
    for gone in [
        "x_forwarded_proto",
        "x_forwarded_ssl",
        "x-forwarded_for",
        "x_custom",
    ] {
        assert!(
            !head.contains(gone),
            "{gone} must not reach the server:\n{head}"
        );
    }
    assert!(
        head.contains("\r\nx_other_thing: kept?\r\n"),
        "an unprotected name passes when allowed:\n{head}"
    );
}
