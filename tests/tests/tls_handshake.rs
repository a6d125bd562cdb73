//! HTTPS termination (issue 4, points 1, 3 and 4) driven by real clients, curl and
//! `openssl s_client`, as subprocesses: the handshake. TLS 1.2 and 1.3, ALPN http/1.1,
//! close_notify, large bodies, old protocols refused, certificates chosen by SNI (exact,
//! wildcard, default for no SNI or an unknown name; the PEM forms: chain and key in one
//! file, or two; PKCS#8, PKCS#1 and SEC1 keys; ECDSA and RSA), X-Forwarded-Proto/SSL
//! replaced on every frontend, the handshake timeout, and garbage handshakes that disturb
//! nobody. Resumption is in tls_resumption.rs, reload in tls_reload.rs, the helpers in
//! tests/src/tls.rs.
//!
//! curl and openssl are required: a test fails (never skips) when one is missing.

use std::io::Write;
use std::net::TcpStream;
use std::process::Command;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use engine_tests::tls::*;
use engine_tests::*;

both_drivers!(
    tls12_and_tls13_with_alpn,
    old_protocols_refused,
    close_notify_before_closing,
    http10_client_over_tls,
    sni_selects_certificate,
    forwarded_headers_replaced,
    handshake_timeout_closes_silent_clients,
    garbage_handshakes_disturb_nobody,
    large_bodies_over_tls,
);

// ---------------------------------------------------------------------------------------
// Protocols and ALPN

fn tls12_and_tls13_with_alpn(driver: DriverChoice) {
    let o = origins(1);
    let r = tls_engine(&o[0], driver, "", "");
    let a = r.addr("https");
    let c = certs();

    // curl, TLS 1.2 only and TLS 1.3 only; curl offers h2 and http/1.1 by ALPN, and the
    // frontend's default alpn prefers h2.
    for (flags, version) in [
        (&["--tlsv1.2", "--tls-max", "1.2"][..], "TLSv1.2"),
        (&["--tlsv1.3"][..], "TLSv1.3"),
    ] {
        let res = curl(
            a,
            "moodle.example.edu",
            &c.exact_cert,
            "/login/index.php",
            flags,
        );
        assert_eq!(res.code, Some(0), "curl {flags:?}:\n{}", res.verbose);
        assert_eq!(
            res.status, 200,
            "curl {flags:?}: {}\n{}",
            res.body, res.verbose
        );
        assert_eq!(
            res.http_version, "2",
            "HTTP/2 over TLS, h2 first ({flags:?})"
        );
        assert!(res.body.contains("Moodle"), "{}", res.body);
        assert!(
            res.verbose
                .contains(&format!("SSL connection using {version}")),
            "curl {flags:?} negotiated {version}:\n{}",
            res.verbose
        );
        assert!(
            res.verbose.contains("ALPN: server accepted h2")
                || res.verbose.contains("ALPN, server accepted to use h2"),
            "ALPN h2 chosen, curl offering h2 and http/1.1 ({flags:?}):\n{}",
            res.verbose
        );
    }
    // No SNI (an IP address): the default certificate, which holds 127.0.0.1.
    let res = curl(a, "127.0.0.1", &c.default, "/", &[]);
    assert_eq!(res.status, 200, "{}", res.verbose);

    // openssl s_client, each version, ALPN http/1.1.
    for (flag, version) in [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")] {
        let (_, out) = s_client(a, Some("moodle.example.edu"), &[flag, "-alpn", "http/1.1"]);
        assert!(
            out.contains(&format!("New, {version}, Cipher is")),
            "s_client {flag}: a new {version} session:\n{out}"
        );
        assert!(
            out.contains("ALPN protocol: http/1.1"),
            "s_client {flag}: ALPN http/1.1:\n{out}"
        );
        assert!(
            out.contains("HTTP/1.1 200"),
            "s_client {flag}: the response:\n{out}"
        );
        // Offered both: h2 is chosen (the frontend's alpn default, h2 first).
        let (_, out) = s_client(
            a,
            Some("moodle.example.edu"),
            &[flag, "-alpn", "h2,http/1.1"],
        );
        assert!(
            out.contains("ALPN protocol: h2"),
            "s_client {flag} -alpn h2,http/1.1:\n{out}"
        );
        // Without ALPN: still HTTP/1.1.
        let (_, out) = s_client(a, Some("moodle.example.edu"), &[flag]);
        assert!(out.contains("No ALPN negotiated"), "{out}");
        assert!(out.contains("HTTP/1.1 200"), "without ALPN:\n{out}");
    }
    // h2 alone is agreed to (an HTTP/2-only client).
    let (_, out) = s_client(a, Some("moodle.example.edu"), &["-alpn", "h2"]);
    assert!(out.contains("ALPN protocol: h2"), "{out}");
    // The engine still serves after all that.
    let res = curl(a, "moodle.example.edu", &c.exact_cert, "/", &[]);
    assert_eq!(res.status, 200, "{}", res.verbose);
}

/// The engine ends a TLS connection it closes with close_notify (RFC 8446 6.1), so that a
/// client can tell a complete close-delimited body from a cut one; OpenSSL 3 clients
/// report "unexpected eof" otherwise.
fn close_notify_before_closing(driver: DriverChoice) {
    let o = origins(1);
    let r = tls_engine(&o[0], driver, "", "");
    let a = r.addr("https");
    for flag in ["-tls1_2", "-tls1_3"] {
        for (what, req) in [
            (
                "HTTP/1.1 Connection: close",
                "GET /login/index.php HTTP/1.1\r\nHost: moodle.example.edu\r\nConnection: close\r\n\r\n",
            ),
            (
                "HTTP/1.0 close-delimited body",
                "GET /download?size=5000&mode=close HTTP/1.0\r\nHost: moodle.example.edu\r\n\r\n",
            ),
        ] {
            let mut cmd = Command::new("openssl");
            cmd.arg("s_client")
                .arg("-connect")
                .arg(a.to_string())
                .args(["-servername", "moodle.example.edu", "-ign_eof", flag]);
            let (code, out) = run_with_input(cmd, req.as_bytes(), Duration::from_secs(6));
            assert!(out.contains(" 200 OK"), "{what} {flag}:\n{out}");
            assert!(
                !out.contains("unexpected eof"),
                "{what} {flag}: the engine closed the TLS connection without close_notify:\n{}",
                out.lines()
                    .filter(|l| l.contains("eof") || l.starts_with("New,") || l.contains("closed"))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            assert_eq!(code, Some(0), "{what} {flag}:\n{out}");
        }
    }
}

/// Large bodies over TLS take the copying path (splice needs plain TCP on both sides): a
/// 3 MB download and a 3 MB upload arrive byte-exact.
fn large_bodies_over_tls(driver: DriverChoice) {
    use sha2::{Digest, Sha256};
    const LEN: usize = 3_000_000;
    let o = origins(1);
    let r = tls_engine(&o[0], driver, "", "");
    let a = r.addr("https");
    let c = certs();
    let tag = format!("{}-{driver:?}", std::process::id());
    let down = c.dir.join(format!("download-{tag}.bin"));
    let res = curl(
        a,
        "moodle.example.edu",
        &c.exact_cert,
        &format!("/download?size={LEN}"),
        &["-o", down.to_str().expect("utf-8 path")],
    );
    assert_eq!((res.code, res.status), (Some(0), 200), "{}", res.verbose);
    let got = std::fs::read(&down).expect("the downloaded file");
    let _ = std::fs::remove_file(&down);
    assert_eq!(got.len(), LEN, "download length");
    assert!(got == tools::pattern(LEN), "download bytes exact");

    let up = c.dir.join(format!("upload-{tag}.bin"));
    let body = tools::pattern(LEN);
    std::fs::write(&up, &body).expect("write the upload");
    let data = format!("@{}", up.to_str().expect("utf-8 path"));
    let res = curl(
        a,
        "moodle.example.edu",
        &c.exact_cert,
        "/upload",
        &["-H", "Expect:", "--data-binary", &data],
    );
    let _ = std::fs::remove_file(&up);
    assert_eq!((res.code, res.status), (Some(0), 200), "{}", res.verbose);
    assert_eq!(
        res.body.trim(),
        format!("len={LEN} sha256={}", hex::encode(Sha256::digest(&body))),
        "upload arrives exact"
    );
}

/// An HTTP/1.0 client over TLS (curl --http1.0 offers ALPN http/1.0 only) is served, as
/// HAProxy and nginx serve it: no ALPN agreed rather than a refused handshake.
fn http10_client_over_tls(driver: DriverChoice) {
    let o = origins(1);
    let r = tls_engine(&o[0], driver, "", "");
    let a = r.addr("https");
    let c = certs();
    let res = curl(
        a,
        "moodle.example.edu",
        &c.exact_cert,
        "/login/index.php",
        &["--http1.0"],
    );
    // The answer's version is the engine's own, HTTP/1.1 (RFC 9110 §6.2: a server sends
    // the highest minor version it conforms to); what matters is a served request.
    assert_eq!(
        (res.code, res.status),
        (Some(0), 200),
        "curl --http1.0 over TLS:\n{}",
        res.verbose
    );
    assert!(
        matches!(res.http_version.as_str(), "1.0" | "1.1"),
        "{}",
        res.http_version
    );
    assert!(res.body.contains("Moodle"), "{}", res.body);
}

fn old_protocols_refused(driver: DriverChoice) {
    let o = origins(1);
    let r = tls_engine(&o[0], driver, "", "");
    let a = r.addr("https");
    for flag in ["-tls1", "-tls1_1"] {
        let (code, out) = s_client(
            a,
            Some("moodle.example.edu"),
            &[flag, "-cipher", "DEFAULT:@SECLEVEL=0"],
        );
        assert!(
            !out.contains("New, TLSv1,") && !out.contains("New, TLSv1.1,"),
            "rustls' safe defaults refuse {flag}:\n{out}"
        );
        assert_ne!(code, Some(0), "s_client {flag} must fail:\n{out}");
    }
    let (_, out) = s_client(a, Some("moodle.example.edu"), &["-tls1_2"]);
    assert!(out.contains("New, TLSv1.2,"), "{out}");
}

// ---------------------------------------------------------------------------------------
// SNI

fn sni_selects_certificate(driver: DriverChoice) {
    let o = origins(1);
    let r = tls_engine(&o[0], driver, "", "");
    let a = r.addr("https");
    let c = certs();
    for (sni, want) in [
        (None, "default.test"),
        (Some("default.test"), "default.test"),
        (Some("moodle.example.edu"), "moodle.example.edu"),
        (Some("MOODLE.Example.EDU"), "moodle.example.edu"),
        (Some("a.example.org"), "*.example.org"),
        (Some("quiz.example.org"), "*.example.org"),
        // A wildcard covers one label exactly.
        (Some("example.org"), "default.test"),
        (Some("x.y.example.org"), "default.test"),
        (Some("unknown.test"), "default.test"),
        (Some("rsa.test"), "rsa.test"),
        (Some("ec.test"), "ec.test"),
        (Some("other.example.edu"), "default.test"),
    ] {
        for flag in ["-tls1_2", "-tls1_3"] {
            let (_, out) = s_client(a, sni, &[flag]);
            assert_eq!(
                served_cn(&out).as_deref(),
                Some(want),
                "SNI {sni:?} ({flag}) gets the certificate of {want}:\n{out}"
            );
            assert!(out.contains("HTTP/1.1 200"), "SNI {sni:?} {flag}:\n{out}");
        }
    }
    // The RSA certificate really is RSA, the others ECDSA.
    let (_, out) = s_client(a, Some("rsa.test"), &["-tls1_2"]);
    assert!(out.contains("Server public key is 2048 bit"), "{out}");
    let (_, out) = s_client(a, Some("moodle.example.edu"), &["-tls1_2"]);
    assert!(out.contains("Server public key is 256 bit"), "{out}");

    // curl verifies each chain against its own certificate, by name.
    for (name, ca) in [
        ("moodle.example.edu", &c.exact_cert),
        ("quiz.example.org", &c.wildcard),
        ("rsa.test", &c.rsa),
        ("ec.test", &c.sec1),
        ("localhost", &c.default),
        ("127.0.0.1", &c.default),
    ] {
        for flags in [&["--tlsv1.2", "--tls-max", "1.2"][..], &["--tlsv1.3"][..]] {
            let res = curl(a, name, ca, "/", flags);
            assert_eq!(
                (res.code, res.status),
                (Some(0), 200),
                "curl https://{name} {flags:?} verified:\n{}",
                res.verbose
            );
        }
    }
    // A client that trusts only moodle.example.edu's certificate and asks for an
    // unknown name gets the default one, which it refuses.
    let res = curl(a, "nobody.example.edu", &c.exact_cert, "/", &[]);
    assert_ne!(
        res.code,
        Some(0),
        "the default certificate is served:\n{}",
        res.verbose
    );
}

// ---------------------------------------------------------------------------------------
// Forwarded headers

fn echo_head(body: &str) -> Vec<(String, String)> {
    let head = body.split("\r\n\r\n").next().unwrap_or("");
    head.split("\r\n")
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect()
}

fn values<'a>(h: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    h.iter()
        .filter(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
        .collect()
}

fn forwarded_headers_replaced(driver: DriverChoice) {
    let o = origins(1);
    let r = tls_engine(
        &o[0],
        driver,
        "",
        r#"set_headers = { "X-Forwarded-Proto" = "https", "X-Forwarded-SSL" = "on" }"#,
    );
    let c = certs();
    // HTTPS: whatever the client sent is replaced by one header each.
    let res = curl(
        r.addr("https"),
        "moodle.example.edu",
        &c.exact_cert,
        "/echo",
        &[
            "-H",
            "X-Forwarded-Proto: http",
            "-H",
            "x-forwarded-ssl: off",
            "-H",
            "X-FORWARDED-PROTO: gopher",
        ],
    );
    assert_eq!(res.status, 200, "{}", res.verbose);
    let h = echo_head(&res.body);
    assert_eq!(values(&h, "x-forwarded-proto"), ["https"], "{}", res.body);
    assert_eq!(values(&h, "x-forwarded-ssl"), ["on"], "{}", res.body);

    // Plain HTTP (no set_headers there): a client cannot pass as HTTPS.
    let mut cn = Conn::connect(r.addr("plain")).unwrap();
    let resp = cn
        .request(
            "GET",
            "/echo",
            &[
                ("X-Forwarded-Proto", "https"),
                ("X-Forwarded-Ssl", "on"),
                ("x-forwarded-proto", "https"),
            ],
            b"",
        )
        .unwrap();
    assert_eq!(resp.status, 200);
    let h = echo_head(&resp.text());
    assert!(
        values(&h, "x-forwarded-proto").is_empty() && values(&h, "x-forwarded-ssl").is_empty(),
        "client-sent X-Forwarded-Proto/SSL removed on a plain frontend:\n{}",
        resp.text()
    );
    // Other headers pass.
    assert!(resp.text().contains("Host: test"), "{}", resp.text());
}

// ---------------------------------------------------------------------------------------
// Handshake timeout and bad clients

/// Time until the engine closes `s` (None: still open after `limit`).
fn closed_after(s: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let t0 = Instant::now();
    let (_, closed) = read_until_close(s, limit);
    closed.then(|| t0.elapsed())
}

fn handshake_timeout_closes_silent_clients(driver: DriverChoice) {
    let o = origins(1);
    let r = tls_engine(&o[0], driver, r#", handshake_timeout = "300ms""#, "");
    let a = r.addr("https");
    let c = certs();
    // Several silent clients (so that both cores get some) and one that stops half-way
    // through a ClientHello.
    let t0 = Instant::now();
    let mut silent: Vec<TcpStream> = (0..6).map(|_| TcpStream::connect(a).unwrap()).collect();
    let mut partial = TcpStream::connect(a).unwrap();
    partial
        .write_all(&[
            0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
        ])
        .unwrap();
    // Others are served meanwhile.
    let res = curl(a, "moodle.example.edu", &c.exact_cert, "/", &[]);
    assert_eq!(
        res.status, 200,
        "served while silent clients wait:\n{}",
        res.verbose
    );
    for (i, s) in silent
        .iter_mut()
        .chain(std::iter::once(&mut partial))
        .enumerate()
    {
        // 6 s: twenty times the timeout, a margin a loaded machine cannot miss (the curl
        // above runs inside it), and still well under the 10 s default a handshake timeout
        // left unapplied would fall back to. At least a moment to read an EOF already there.
        let left = Duration::from_secs(6)
            .saturating_sub(t0.elapsed())
            .max(Duration::from_millis(50));
        let closed = closed_after(s, left);
        let at = t0.elapsed();
        assert!(
            closed.is_some(),
            "client {i}: not closed within 6 s (handshake_timeout 300ms)"
        );
        assert!(
            at >= Duration::from_millis(250),
            "client {i} closed after {at:?}, before the 300ms handshake timeout"
        );
    }
    // The workers carry on.
    for _ in 0..4 {
        let res = curl(a, "moodle.example.edu", &c.exact_cert, "/", &[]);
        assert_eq!(res.status, 200, "{}", res.verbose);
    }
    // A completed handshake is not cut by the handshake timeout: an idle TLS connection
    // outlives it and still answers.
    let mut p = Persistent::open(a, "moodle.example.edu", &[]);
    p.send(b"GET /echo HTTP/1.1\r\nHost: moodle.example.edu\r\n\r\n");
    p.wait_responses(1, Duration::from_secs(5));
    // The subject: the connection idles past the 300 ms handshake timeout on purpose.
    std::thread::sleep(Duration::from_millis(700));
    p.send(b"GET /echo HTTP/1.1\r\nHost: moodle.example.edu\r\n\r\n");
    p.wait_responses(2, Duration::from_secs(5));
}

fn garbage_handshakes_disturb_nobody(driver: DriverChoice) {
    let o = origins(1);
    let r = tls_engine(&o[0], driver, r#", handshake_timeout = "5s""#, "");
    let a = r.addr("https");
    let c = certs();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // A steady curl client while garbage arrives.
    let (tx, rx) = mpsc::channel();
    let stop2 = stop.clone();
    let ca = c.exact_cert.clone();
    let good = std::thread::spawn(move || {
        let mut n = 0;
        while !stop2.load(std::sync::atomic::Ordering::SeqCst) || n < 3 {
            let res = curl(a, "moodle.example.edu", &ca, "/", &[]);
            tx.send((res.status, res.verbose)).unwrap();
            n += 1;
        }
    });
    let kinds: Vec<Vec<u8>> = vec![
        b"GET / HTTP/1.1\r\nHost: moodle.example.edu\r\n\r\n".to_vec(),
        (0..4096u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect(),
        // A TLS record header announcing a handshake of the wrong type.
        vec![0x16, 0x03, 0x03, 0x00, 0x04, 0x02, 0x00, 0x00, 0x00],
        // An alert record, then nothing.
        vec![0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28],
        // A record longer than TLS allows.
        vec![0x16, 0x03, 0x01, 0xff, 0xff, 0x01, 0x00, 0xff, 0xfb],
    ];
    for round in 0..4 {
        for (k, g) in kinds.iter().enumerate() {
            let mut s = TcpStream::connect(a).unwrap();
            let _ = s.write_all(g);
            let (_, closed) = read_until_close(&mut s, Duration::from_secs(3));
            assert!(
                closed,
                "round {round}, garbage {k}: the engine closes a failed handshake at once"
            );
        }
    }
    // Connect and reset at once, mid-handshake.
    for _ in 0..10 {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.connect(&a.into()).unwrap();
        let _ = s.send(&[0x16, 0x03, 0x01, 0x00, 0x10]);
        s.set_linger(Some(Duration::ZERO)).unwrap();
        drop(s);
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    good.join().unwrap();
    let mut served = 0;
    for (status, verbose) in rx.try_iter() {
        assert_eq!(
            status, 200,
            "a good client disturbed by garbage:\n{verbose}"
        );
        served += 1;
    }
    assert!(served >= 3);
    // Both cores still serve (a dozen new connections spread by SO_REUSEPORT).
    for _ in 0..12 {
        let res = curl(a, "moodle.example.edu", &c.exact_cert, "/", &["--tlsv1.3"]);
        assert_eq!(res.status, 200, "{}", res.verbose);
    }
}
