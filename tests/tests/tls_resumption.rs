//! TLS session resumption (issue 4): tickets shared by the cores, resumption turned off,
//! and TLS 1.2's session cache, driven by `openssl s_client` as a subprocess (helpers in
//! tests/src/tls.rs).
//!
//! curl and openssl are required: a test fails (never skips) when one is missing.

use engine_tests::tls::*;
use engine_tests::*;

both_drivers!(
    resumption_with_tickets_across_cores,
    no_resumption_when_turned_off,
);

fn resumption_with_tickets_across_cores(driver: DriverChoice) {
    let o = origins(1);
    let r = tls_engine(&o[0], driver, "", "");
    let a = r.addr("https");
    let dir = tmpdir("tls-sess");
    for (flag, version) in [("-tls1_3", "TLSv1.3"), ("-tls1_2", "TLSv1.2")] {
        let sess = dir.join(format!("sess{flag}"));
        let sess_s = sess.display().to_string();
        let (_, out) = s_client(a, Some("moodle.example.edu"), &[flag, "-sess_out", &sess_s]);
        assert!(out.contains(&format!("New, {version},")), "{out}");
        assert!(out.contains("HTTP/1.1 200"), "{out}");
        assert!(sess.exists(), "s_client saved a session:\n{out}");
        // Two cores behind SO_REUSEPORT: with tickets shared by all cores, every attempt
        // resumes whichever core takes it.
        for i in 0..6 {
            let (_, out) = s_client(a, Some("moodle.example.edu"), &[flag, "-sess_in", &sess_s]);
            assert!(
                out.contains(&format!("Reused, {version},")),
                "attempt {i}: the {version} session (ticket) is resumed:\n{out}"
            );
            assert!(out.contains("HTTP/1.1 200"), "{out}");
        }
    }
}

fn no_resumption_when_turned_off(driver: DriverChoice) {
    // session_resumption = false: every handshake is a full one. The server hands out
    // nothing to resume (no TLS 1.3 ticket, no TLS 1.2 ticket, an empty session id), so
    // s_client has no session to save; a session from an engine with resumption on is
    // not accepted either.
    let o = origins(1);
    let off = tls_engine(&o[0], driver, ", session_resumption = false", "");
    let on = tls_engine(&o[0], driver, "", "");
    let dir = tmpdir("tls-nosess");
    for (flags, version) in [
        (&["-tls1_3"][..], "TLSv1.3"),
        (&["-tls1_2"][..], "TLSv1.2"),
        (&["-tls1_2", "-no_ticket"][..], "TLSv1.2"),
    ] {
        let name = flags.join("");
        let mine = dir.join(format!("off{name}")).display().to_string();
        let mut args: Vec<&str> = flags.to_vec();
        args.extend(["-sess_out", &mine]);
        let (_, out) = s_client(off.addr("https"), Some("moodle.example.edu"), &args);
        assert!(out.contains(&format!("New, {version},")), "{out}");
        assert!(out.contains("HTTP/1.1 200"), "{out}");
        assert!(
            !std::path::Path::new(&mine).exists(),
            "{flags:?}: nothing resumable handed out:\n{out}"
        );
        // A session that another engine issued is not resumed here.
        let theirs = dir.join(format!("on{name}")).display().to_string();
        let mut args: Vec<&str> = flags.to_vec();
        args.extend(["-sess_out", &theirs]);
        let _ = s_client(on.addr("https"), Some("moodle.example.edu"), &args);
        assert!(std::path::Path::new(&theirs).exists(), "{flags:?}: saved");
        let mut args: Vec<&str> = flags.to_vec();
        args.extend(["-sess_in", &theirs]);
        let (_, out) = s_client(off.addr("https"), Some("moodle.example.edu"), &args);
        assert!(
            out.contains(&format!("New, {version},")),
            "{flags:?}: a full handshake:\n{out}"
        );
        assert!(out.contains("HTTP/1.1 200"), "{out}");
    }
}

#[test]
fn resumption_with_session_cache() {
    // TLS 1.2 without tickets resumes from the session cache (per core: one core here,
    // so every connection finds it).
    let o = origins(1);
    let c = certs();
    let r = start_cores(
        cfg_in(&c.dir, &tls_text(&o[0], "", ""), &[]),
        DriverChoice::Epoll,
        1,
    );
    let a = r.addr("https");
    let dir = tmpdir("tls-cache");
    let sess = dir.join("sess").display().to_string();
    let (_, out) = s_client(
        a,
        Some("moodle.example.edu"),
        &["-tls1_2", "-no_ticket", "-sess_out", &sess],
    );
    assert!(out.contains("New, TLSv1.2,"), "{out}");
    for i in 0..3 {
        let (_, out) = s_client(
            a,
            Some("moodle.example.edu"),
            &["-tls1_2", "-no_ticket", "-sess_in", &sess],
        );
        assert!(
            out.contains("Reused, TLSv1.2,"),
            "attempt {i}: resumed by session id from the cache:\n{out}"
        );
        assert!(out.contains("HTTP/1.1 200"), "{out}");
    }
}
