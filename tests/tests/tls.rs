//! HTTPS termination (issue 4, points 1, 3 and 4) driven by real clients, curl and
//! `openssl s_client`, as subprocesses: TLS 1.2 and 1.3, ALPN http/1.1, certificates
//! chosen by SNI (exact, wildcard, default for no SNI or an unknown name), the PEM forms
//! (chain and key in one file, or two; PKCS#8, PKCS#1 and SEC1 keys; ECDSA and RSA),
//! session resumption (tickets across cores, the session cache), the handshake timeout,
//! garbage handshakes that disturb nobody, X-Forwarded-Proto/SSL replaced on every
//! frontend, certificate errors at start, and reload (in-process and by SIGHUP on the
//! binary) that swaps the certificate under a running client.
//!
//! curl and openssl are required: a test fails (never skips) when one is missing.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use engine_tests::*;

both_drivers!(
    tls12_and_tls13_with_alpn,
    old_protocols_refused,
    close_notify_before_closing,
    http10_client_over_tls,
    sni_selects_certificate,
    resumption_with_tickets_across_cores,
    no_resumption_when_turned_off,
    forwarded_headers_replaced,
    handshake_timeout_closes_silent_clients,
    garbage_handshakes_disturb_nobody,
    reload_in_process_swaps_certificate,
    reload_in_process_refuses_bad_certificate,
    large_bodies_over_tls,
);

// ---------------------------------------------------------------------------------------
// Tools

fn require(tool: &str, arg: &str) {
    let ok = Command::new(tool)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        ok,
        "`{tool}` is required by the TLS tests (tests/run.sh installs it): `{tool} {arg}` failed"
    );
}

fn require_tools() {
    require("curl", "--version");
    require("openssl", "version");
}

/// Runs a command with a deadline; kills it past `limit`. Returns (status code, stdout +
/// stderr).
fn run_with_input(mut cmd: Command, input: &[u8], limit: Duration) -> (Option<i32>, String) {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn a client process");
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
        // dropping stdin closes it
    });
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let ro = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let re = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + limit;
    let mut timed_out = false;
    let status = loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            break st.code();
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            timed_out = true;
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let _ = writer.join();
    let mut text = String::from_utf8_lossy(&ro.join().unwrap()).into_owned();
    text.push_str("\n--- stderr ---\n");
    text.push_str(&String::from_utf8_lossy(&re.join().unwrap()));
    if timed_out {
        text.push_str(&format!(
            "\n--- killed: no end within {limit:?} (the engine never answered or closed) ---\n"
        ));
    }
    (status, text)
}

/// `GET path` with Connection: close, the way s_client sends it from stdin.
fn request_bytes(path: &str, host: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").into_bytes()
}

/// One `openssl s_client` exchange: connects to `addr`, sends `GET /` (Connection:
/// close) and reads until the engine closes. `sni`: None sends no SNI.
fn s_client(addr: SocketAddr, sni: Option<&str>, extra: &[&str]) -> (Option<i32>, String) {
    let mut cmd = Command::new("openssl");
    cmd.arg("s_client")
        .arg("-connect")
        .arg(addr.to_string())
        .arg("-ign_eof");
    match sni {
        Some(n) => cmd.args(["-servername", n]),
        None => cmd.arg("-noservername"),
    };
    cmd.args(extra);
    run_with_input(
        cmd,
        &request_bytes("/", sni.unwrap_or("test")),
        Duration::from_secs(6),
    )
}

/// The subject CN of the certificate s_client was served.
fn served_cn(out: &str) -> Option<String> {
    for line in out.lines() {
        if let Some(rest) = line.strip_prefix("subject=") {
            let rest = rest.trim();
            let at = rest
                .find("CN = ")
                .map(|i| i + 5)
                .or_else(|| rest.find("CN=").map(|i| i + 3))?;
            let cn = &rest[at..];
            let end = cn.find(',').unwrap_or(cn.len());
            return Some(cn[..end].trim().to_string());
        }
    }
    None
}

fn cn_for(addr: SocketAddr, sni: Option<&str>) -> String {
    let (_, out) = s_client(addr, sni, &[]);
    served_cn(&out)
        .unwrap_or_else(|| panic!("no certificate subject from s_client (SNI {sni:?}):\n{out}"))
}

/// curl over HTTPS to `name:port` resolved to 127.0.0.1, trusting `ca`. Returns (exit
/// code, body, `-w` trailer "CODE VERSION", verbose stderr).
struct Curl {
    code: Option<i32>,
    body: String,
    status: u16,
    http_version: String,
    verbose: String,
}

fn curl(addr: SocketAddr, name: &str, ca: &Path, path: &str, extra: &[&str]) -> Curl {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-v", "--max-time", "15"]);
    if name.parse::<std::net::IpAddr>().is_err() {
        cmd.arg("--resolve")
            .arg(format!("{name}:{}:127.0.0.1", addr.port()));
    }
    cmd.arg("--cacert")
        .arg(ca)
        .args(extra)
        .args(["-w", "\n@@%{http_code} %{http_version}"])
        .arg(format!("https://{name}:{}{path}", addr.port()));
    let out: Output = cmd.stdin(Stdio::null()).output().expect("run curl");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, trailer) = stdout
        .rsplit_once("\n@@")
        .map(|(b, t)| (b.to_string(), t.to_string()))
        .unwrap_or((stdout.clone(), String::new()));
    let mut it = trailer.split_whitespace();
    let status = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let http_version = it.next().unwrap_or("").to_string();
    Curl {
        code: out.status.code(),
        body,
        status,
        http_version,
        verbose: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

// ---------------------------------------------------------------------------------------
// Certificates

/// The certificates every test shares (made once per test binary).
struct Certs {
    dir: PathBuf,
    /// Combined, ECDSA, PKCS#8 key: default.test, localhost, 127.0.0.1.
    default: PathBuf,
    /// Separate cert and key: moodle.example.edu.
    exact_cert: PathBuf,
    exact_key: PathBuf,
    /// Combined: *.example.org.
    wildcard: PathBuf,
    /// Combined, RSA 2048, traditional PKCS#1 key: rsa.test.
    rsa: PathBuf,
    /// Combined, ECDSA with a SEC1 ("EC PRIVATE KEY") key: ec.test.
    sec1: PathBuf,
}

fn openssl(args: &[&str], dir: &Path) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn cat(dir: &Path, out: &str, parts: &[&str]) -> PathBuf {
    let mut s = String::new();
    for p in parts {
        let t = std::fs::read_to_string(dir.join(p)).unwrap();
        s.push_str(&t);
        if !s.ends_with('\n') {
            s.push('\n');
        }
    }
    let path = dir.join(out);
    std::fs::write(&path, s).unwrap();
    path
}

fn certs() -> &'static Certs {
    static C: OnceLock<Certs> = OnceLock::new();
    C.get_or_init(|| {
        require_tools();
        let dir = tmpdir("tls-certs");
        let default = tools::certs::write_combined(
            &dir,
            "default.pem",
            &["default.test", "localhost", "127.0.0.1"],
        );
        let (c, k) = tools::certs::self_signed(&["moodle.example.edu"]);
        let exact_cert = dir.join("exact.crt");
        let exact_key = dir.join("exact.key");
        std::fs::write(&exact_cert, c).unwrap();
        std::fs::write(&exact_key, k).unwrap();
        let wildcard = tools::certs::write_combined(&dir, "wildcard.pem", &["*.example.org"]);
        // RSA with a PKCS#1 key ("BEGIN RSA PRIVATE KEY").
        openssl(
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "rsa8.key",
                "-out",
                "rsa.crt",
                "-days",
                "30",
                "-subj",
                "/CN=rsa.test",
                "-addext",
                "subjectAltName=DNS:rsa.test",
            ],
            &dir,
        );
        openssl(
            &["rsa", "-in", "rsa8.key", "-traditional", "-out", "rsa1.key"],
            &dir,
        );
        let rsa = cat(&dir, "rsa.pem", &["rsa.crt", "rsa1.key"]);
        assert!(std::fs::read_to_string(&rsa)
            .unwrap()
            .contains("BEGIN RSA PRIVATE KEY"));
        // ECDSA with a SEC1 key ("BEGIN EC PRIVATE KEY").
        openssl(
            &[
                "ecparam",
                "-genkey",
                "-name",
                "prime256v1",
                "-noout",
                "-out",
                "ec.key",
            ],
            &dir,
        );
        openssl(
            &[
                "req",
                "-x509",
                "-new",
                "-key",
                "ec.key",
                "-out",
                "ec.crt",
                "-days",
                "30",
                "-subj",
                "/CN=ec.test",
                "-addext",
                "subjectAltName=DNS:ec.test",
            ],
            &dir,
        );
        let sec1 = cat(&dir, "ec.pem", &["ec.crt", "ec.key"]);
        assert!(std::fs::read_to_string(&sec1)
            .unwrap()
            .contains("BEGIN EC PRIVATE KEY"));
        Certs {
            dir,
            default,
            exact_cert,
            exact_key,
            wildcard,
            rsa,
            sec1,
        }
    })
}

/// An HTTPS frontend `https` (all the shared certificates, default first) and a plain
/// frontend `plain`, both to backend `app` on `origin`. `tls_extra` goes inside the tls
/// table, `https_extra` after the https frontend's fields.
fn tls_text(origin: &Origin, tls_extra: &str, https_extra: &str) -> String {
    let c = certs();
    format!(
        r#"
[log]
access = "off"

[[frontend]]
name = "https"
bind = ["127.0.0.1:{https}"]
backend = "app"
tls = {{ certs = ["{default}", {{ cert = "{ec}", key = "{ek}" }}, "{wild}", "{rsa}", "{sec1}"]{tls_extra} }}
{https_extra}

[[frontend]]
name = "plain"
bind = ["127.0.0.1:{plain}"]
backend = "app"

[[backend]]
name = "app"

[[backend.server]]
name = "{name}"
address = "{addr}"
"#,
        https = free_port(),
        plain = free_port(),
        default = c.default.display(),
        ec = c.exact_cert.display(),
        ek = c.exact_key.display(),
        wild = c.wildcard.display(),
        rsa = c.rsa.display(),
        sec1 = c.sec1.display(),
        name = origin.name(),
        addr = origin.addr(),
    )
}

fn tls_engine(
    origin: &Origin,
    driver: DriverChoice,
    tls_extra: &str,
    https_extra: &str,
) -> Running {
    require_tools();
    let c = certs();
    start(
        cfg_in(&c.dir, &tls_text(origin, tls_extra, https_extra), &[]),
        driver,
    )
}

// ---------------------------------------------------------------------------------------
// Protocols and ALPN

fn tls12_and_tls13_with_alpn(driver: DriverChoice) {
    let o = origins(1);
    let r = tls_engine(&o[0], driver, "", "");
    let a = r.addr("https");
    let c = certs();

    // curl, TLS 1.2 only and TLS 1.3 only; curl offers h2 and http/1.1 by ALPN.
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
        assert_eq!(res.http_version, "1.1", "HTTP/1.1 over TLS ({flags:?})");
        assert!(res.body.contains("Moodle"), "{}", res.body);
        assert!(
            res.verbose
                .contains(&format!("SSL connection using {version}")),
            "curl {flags:?} negotiated {version}:\n{}",
            res.verbose
        );
        assert!(
            res.verbose.contains("ALPN: server accepted http/1.1")
                || res
                    .verbose
                    .contains("ALPN, server accepted to use http/1.1"),
            "ALPN http/1.1 chosen although curl also offered h2 ({flags:?}):\n{}",
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
        // Offered both: http/1.1 is chosen, never h2.
        let (_, out) = s_client(
            a,
            Some("moodle.example.edu"),
            &[flag, "-alpn", "h2,http/1.1"],
        );
        assert!(
            out.contains("ALPN protocol: http/1.1"),
            "s_client {flag} -alpn h2,http/1.1:\n{out}"
        );
        // Without ALPN: still HTTP/1.1.
        let (_, out) = s_client(a, Some("moodle.example.edu"), &[flag]);
        assert!(out.contains("No ALPN negotiated"), "{out}");
        assert!(out.contains("HTTP/1.1 200"), "without ALPN:\n{out}");
    }
    // h2 alone is never agreed to.
    let (_, out) = s_client(a, Some("moodle.example.edu"), &["-alpn", "h2"]);
    assert!(
        !out.contains("ALPN protocol: h2"),
        "h2 must not be negotiated:\n{out}"
    );
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
// Resumption

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
        let left = Duration::from_millis(2500).saturating_sub(t0.elapsed());
        let closed = closed_after(s, left);
        let at = t0.elapsed();
        assert!(
            closed.is_some(),
            "client {i}: not closed within 2.5 s (handshake_timeout 300ms)"
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

// ---------------------------------------------------------------------------------------
// A long-lived s_client: one keep-alive TLS connection across a reload.

struct Persistent {
    child: Child,
    stdin: Option<ChildStdin>,
    out: Arc<Mutex<String>>,
}

impl Persistent {
    fn open(addr: SocketAddr, sni: &str, extra: &[&str]) -> Persistent {
        let mut child = Command::new("openssl")
            .arg("s_client")
            .arg("-connect")
            .arg(addr.to_string())
            .args(["-servername", sni, "-ign_eof"])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn openssl s_client");
        let out = Arc::new(Mutex::new(String::new()));
        for r in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let out = out.clone();
            let mut r = r;
            std::thread::spawn(move || {
                let mut b = [0u8; 4096];
                while let Ok(n) = r.read(&mut b) {
                    if n == 0 {
                        break;
                    }
                    out.lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&b[..n]));
                }
            });
        }
        let stdin = child.stdin.take();
        let p = Persistent { child, stdin, out };
        let ok = poll_for(Duration::from_secs(10), || p.text().contains("Cipher is"));
        assert!(ok, "s_client did not complete a handshake:\n{}", p.text());
        p
    }
    fn text(&self) -> String {
        self.out.lock().unwrap().clone()
    }
    fn send(&mut self, b: &[u8]) {
        let s = self.stdin.as_mut().unwrap();
        s.write_all(b).expect("write to s_client");
        s.flush().unwrap();
    }
    /// Waits until `n` responses (status lines) arrived on the connection.
    fn wait_responses(&self, n: usize, limit: Duration) {
        let ok = poll_for(limit, || self.text().matches("HTTP/1.1 200").count() >= n);
        assert!(
            ok,
            "{n} responses expected on the kept-alive TLS connection:\n{}",
            self.text()
        );
    }
    fn alive(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_none()
    }
}

impl Drop for Persistent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------
// Certificates at start, and reload

fn reload_text(https: u16, origin: &Origin, cert: &str) -> String {
    format!(
        r#"
[log]
access = "off"

[[frontend]]
name = "https"
bind = ["127.0.0.1:{https}"]
backend = "app"
tls = {{ certs = ["{cert}"], handshake_timeout = "2s" }}

[[backend]]
name = "app"

[[backend.server]]
name = "{}"
address = "{}"
"#,
        origin.name(),
        origin.addr()
    )
}

/// Writes `cert`'s certificate with `key`'s private key into `path` (a mismatched pair
/// when they differ).
fn write_pair(path: &Path, cert_names: &[&str], key_from_other: bool) {
    let (c, k) = tools::certs::self_signed(cert_names);
    let k = if key_from_other {
        tools::certs::self_signed(&["someone.else"]).1
    } else {
        k
    };
    std::fs::write(path, format!("{c}\n{k}")).unwrap();
}

fn load_errors(dir: &Path, text: &str) -> Option<String> {
    match config::load_str(text, &dir.join("lb.toml")) {
        Ok(_) => None,
        Err(d) => Some(
            d.iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join("\n"),
        ),
    }
}

#[test]
fn certificate_errors_at_start_name_the_file() {
    require_tools();
    let o = origins(1);
    let dir = tmpdir("tls-start");
    let port = free_port();

    // Missing file: a configuration error naming it.
    let missing = dir.join("missing.pem");
    let e = load_errors(
        &dir,
        &reload_text(port, &o[0], &missing.display().to_string()),
    )
    .expect("a missing certificate file is refused");
    assert!(e.contains("missing.pem"), "{e}");

    // Not PEM at all.
    let junk = dir.join("junk.pem");
    std::fs::write(&junk, "hello, I am not a certificate\n").unwrap();
    let e = load_errors(&dir, &reload_text(port, &o[0], &junk.display().to_string()))
        .expect("a non-PEM file is refused");
    assert!(e.contains("junk.pem"), "{e}");

    // A certificate without its key.
    let nokey = dir.join("nokey.pem");
    std::fs::write(&nokey, tools::certs::self_signed(&["nokey.test"]).0).unwrap();
    let e = load_errors(
        &dir,
        &reload_text(port, &o[0], &nokey.display().to_string()),
    )
    .expect("a combined file without a key is refused");
    assert!(e.contains("nokey.pem"), "{e}");

    // The certificate with another certificate's key: refused at start, naming the file.
    let mism = dir.join("mismatch.pem");
    write_pair(&mism, &["mismatch.test"], true);
    let cfg = cfg_in(
        &dir,
        &reload_text(port, &o[0], &mism.display().to_string()),
        &[],
    );
    let err = engine::start(
        cfg,
        engine::Options {
            cores: 1,
            driver: DriverChoice::Epoll,
            pin: false,
        },
    )
    .err()
    .expect("a mismatched key is refused at start");
    let msg = err.to_string();
    assert!(msg.contains("mismatch.pem"), "names the file: {msg}");
    assert!(msg.contains("match"), "says why: {msg}");

    // Separate cert and key that do not belong together.
    let (c1, _) = tools::certs::self_signed(&["one.test"]);
    let (_, k2) = tools::certs::self_signed(&["two.test"]);
    std::fs::write(dir.join("one.crt"), c1).unwrap();
    std::fs::write(dir.join("two.key"), k2).unwrap();
    let text = reload_text(port, &o[0], "X").replace(
        "certs = [\"X\"]",
        "certs = [{ cert = \"one.crt\", key = \"two.key\" }]",
    );
    let cfg = cfg_in(&dir, &text, &[]);
    let err = engine::start(
        cfg,
        engine::Options {
            cores: 1,
            driver: DriverChoice::Epoll,
            pin: false,
        },
    )
    .err()
    .expect("separate cert and key that do not match are refused at start");
    let msg = err.to_string();
    assert!(
        msg.contains("one.crt") || msg.contains("two.key"),
        "names the file: {msg}"
    );

    // A key block that is not a key.
    let badkey = dir.join("badkey.pem");
    let (c, _) = tools::certs::self_signed(&["badkey.test"]);
    std::fs::write(
        &badkey,
        format!("{c}\n-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"),
    )
    .unwrap();
    let res = config::load_str(
        &reload_text(port, &o[0], &badkey.display().to_string()),
        &dir.join("lb.toml"),
    );
    match res {
        Err(d) => {
            let e = d
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join("\n");
            assert!(e.contains("badkey.pem"), "{e}");
        }
        Ok(l) => {
            let err = engine::start(
                l.config,
                engine::Options {
                    cores: 1,
                    driver: DriverChoice::Epoll,
                    pin: false,
                },
            )
            .err()
            .expect("an unusable key is refused at start");
            assert!(err.to_string().contains("badkey.pem"), "{err}");
        }
    }

    // The binary: exit 1, the file named on stderr.
    let out = Command::new(engine_bin(false))
        .arg("-c")
        .arg({
            let p = dir.join("lb.toml");
            std::fs::write(&p, reload_text(port, &o[0], "mismatch.pem")).unwrap();
            p
        })
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("mismatch.pem"),
        "stderr names the file:\n{err}"
    );
}

/// In-process reload: new handshakes get the new certificate; a kept-alive connection
/// and a request in flight across the reload carry on.
fn reload_in_process_swaps_certificate(driver: DriverChoice) {
    require_tools();
    let o = origins(1);
    let dir = tmpdir("tls-reload");
    let cert = dir.join("site.pem");
    write_pair(&cert, &["old.reload.test"], false);
    std::fs::copy(&cert, dir.join("old-ca.pem")).unwrap();
    let text = reload_text(free_port(), &o[0], "site.pem");
    let r = start(cfg_in(&dir, &text, &[]), driver);
    let a = r.addr("https");
    assert_eq!(cn_for(a, Some("old.reload.test")), "old.reload.test");

    // A kept-alive connection made before the reload...
    let mut p = Persistent::open(a, "old.reload.test", &[]);
    p.send(b"GET /echo?n=1 HTTP/1.1\r\nHost: old.reload.test\r\n\r\n");
    p.wait_responses(1, Duration::from_secs(5));
    assert_eq!(served_cn(&p.text()).as_deref(), Some("old.reload.test"));
    // ...and a request in flight across the reload.
    let slow = {
        let ca = dir.join("old-ca.pem");
        std::thread::spawn(move || curl(a, "old.reload.test", &ca, "/slow?ms=1200", &[]))
    };
    wait_until(
        Duration::from_secs(5),
        "the slow request reaches the origin",
        || o[0].active() >= 1,
    );

    write_pair(&cert, &["new.reload.test"], false);
    r.reload(cfg_in(&dir, &text, &[]))
        .expect("reload with a new certificate");
    wait_until(
        Duration::from_secs(5),
        "new handshakes get the new certificate",
        || cn_for(a, Some("new.reload.test")) == "new.reload.test",
    );
    let res = slow.join().unwrap();
    assert_eq!(
        (res.code, res.status, res.body.as_str()),
        (Some(0), 200, "slow 1200"),
        "the request in flight across the reload completes:\n{}",
        res.verbose
    );
    p.send(b"GET /echo?n=2 HTTP/1.1\r\nHost: old.reload.test\r\n\r\n");
    p.wait_responses(2, Duration::from_secs(5));
    assert!(p.alive(), "{}", p.text());
    // Every new handshake, on either core, after the request that spanned the reload.
    for _ in 0..6 {
        assert_eq!(cn_for(a, Some("new.reload.test")), "new.reload.test");
    }
}

/// In-process reload of a mismatched certificate: refused (naming the file), the current
/// certificate stays, a kept-alive connection carries on; a good file then reloads.
fn reload_in_process_refuses_bad_certificate(driver: DriverChoice) {
    require_tools();
    let o = origins(1);
    let dir = tmpdir("tls-reload-bad");
    let cert = dir.join("site.pem");
    write_pair(&cert, &["old.reload.test"], false);
    let text = reload_text(free_port(), &o[0], "site.pem");
    let r = start(cfg_in(&dir, &text, &[]), driver);
    let a = r.addr("https");
    let mut p = Persistent::open(a, "old.reload.test", &[]);
    p.send(b"GET /echo?n=1 HTTP/1.1\r\nHost: old.reload.test\r\n\r\n");
    p.wait_responses(1, Duration::from_secs(5));

    write_pair(&cert, &["bad.reload.test"], true);
    let err = r
        .reload(cfg_in(&dir, &text, &[]))
        .expect_err("a mismatched certificate is refused at reload");
    assert!(err.to_string().contains("site.pem"), "{err}");
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..4 {
        assert_eq!(cn_for(a, Some("old.reload.test")), "old.reload.test");
    }
    p.send(b"GET /echo?n=2 HTTP/1.1\r\nHost: old.reload.test\r\n\r\n");
    p.wait_responses(2, Duration::from_secs(5));

    write_pair(&cert, &["new.reload.test"], false);
    r.reload(cfg_in(&dir, &text, &[]))
        .expect("a good certificate reloads");
    wait_until(Duration::from_secs(5), "the new certificate", || {
        cn_for(a, None) == "new.reload.test"
    });
    p.send(b"GET /echo?n=3 HTTP/1.1\r\nHost: old.reload.test\r\n\r\n");
    p.wait_responses(3, Duration::from_secs(5));
}

/// The debug binary on `dir/lb.toml` (an HTTPS frontend on `site.pem`), its stderr in
/// `dir/stderr.log`. Killed when dropped.
struct Bin {
    child: Option<Child>,
    log: PathBuf,
    addr: SocketAddr,
}

impl Bin {
    fn start(dir: &Path, o: &Origin) -> Bin {
        let port = free_port();
        let cfg_path = dir.join("lb.toml");
        std::fs::write(&cfg_path, reload_text(port, o, "site.pem")).unwrap();
        let log = dir.join("stderr.log");
        let child = Command::new(engine_bin(false))
            .args(["--cores", "2", "-c"])
            .arg(&cfg_path)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn the engine");
        let b = Bin {
            child: Some(child),
            log,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        };
        let up = poll_for(Duration::from_secs(15), || listeners_on(port) == 2);
        assert!(up, "engine not listening on {port}:\n{}", b.stderr());
        b
    }
    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
    fn hup(&self) {
        signal(self.child.as_ref().unwrap(), libc::SIGHUP);
    }
    /// Runs `steps`; on a panic prints the engine's stderr first.
    fn run(&self, steps: impl FnOnce()) {
        if let Err(e) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(steps)) {
            eprintln!("--- the engine's stderr ---\n{}", self.stderr());
            std::panic::resume_unwind(e);
        }
    }
    fn stop(mut self) {
        let mut child = self.child.take().unwrap();
        signal(&child, SIGTERM);
        let st = wait_exit(&mut child, Duration::from_secs(10));
        assert_eq!(st.code(), Some(0), "clean stop:\n{}", self.stderr());
    }
}

impl Drop for Bin {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// SIGHUP swaps the certificate while a slow download and a kept-alive connection run:
/// both complete, new handshakes get the new certificate.
#[test]
fn sighup_swaps_certificate_under_running_clients() {
    require_tools();
    let o = origins(1);
    let dir = tmpdir("tls-sighup");
    let cert = dir.join("site.pem");
    write_pair(&cert, &["old.reload.test"], false);
    std::fs::copy(&cert, dir.join("old-ca.pem")).unwrap();
    let b = Bin::start(&dir, &o[0]);
    let a = b.addr;
    b.run(|| {
        assert_eq!(cn_for(a, Some("old.reload.test")), "old.reload.test");
        let mut p = Persistent::open(a, "old.reload.test", &[]);
        p.send(b"GET /echo?n=1 HTTP/1.1\r\nHost: old.reload.test\r\n\r\n");
        p.wait_responses(1, Duration::from_secs(5));
        let slow = {
            let ca = dir.join("old-ca.pem");
            std::thread::spawn(move || curl(a, "old.reload.test", &ca, "/slow?ms=1500", &[]))
        };
        wait_until(
            Duration::from_secs(5),
            "the slow request reaches the origin",
            || o[0].active() >= 1,
        );

        write_pair(&cert, &["new.reload.test"], false);
        b.hup();
        wait_until(
            Duration::from_secs(5),
            "new handshakes get the new certificate",
            || cn_for(a, Some("new.reload.test")) == "new.reload.test",
        );
        let res = slow.join().unwrap();
        assert_eq!(
            (res.code, res.status, res.body.as_str()),
            (Some(0), 200, "slow 1500"),
            "the download started before the reload completes:\n{}",
            res.verbose
        );
        p.send(b"GET /echo?n=2 HTTP/1.1\r\nHost: old.reload.test\r\n\r\n");
        p.wait_responses(2, Duration::from_secs(5));
        assert!(
            p.alive(),
            "the kept-alive connection survives:\n{}",
            p.text()
        );
        for _ in 0..6 {
            assert_eq!(cn_for(a, None), "new.reload.test");
        }
        assert!(
            b.stderr().contains("reloaded"),
            "the reload is logged:\n{}",
            b.stderr()
        );
    });
    b.stop();
}

/// A named way to spoil the certificate file.
type Case<'a> = (&'static str, Box<dyn Fn() + 'a>);

/// SIGHUP with a mismatched pair, a non-PEM file, a missing file: each keeps the current
/// certificate and logs why, naming the file; then a good file reloads. A failed
/// handshake is logged with the client's address.
#[test]
fn sighup_refused_reload_keeps_certificate() {
    require_tools();
    let o = origins(1);
    let dir = tmpdir("tls-sighup-bad");
    let cert = dir.join("site.pem");
    write_pair(&cert, &["old.reload.test"], false);
    let b = Bin::start(&dir, &o[0]);
    let a = b.addr;
    b.run(|| {
        assert_eq!(cn_for(a, Some("old.reload.test")), "old.reload.test");

        // A failed handshake is logged with the client's address.
        let mut g = TcpStream::connect(a).unwrap();
        let garbage_from = g.local_addr().unwrap().to_string();
        g.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let _ = read_until_close(&mut g, Duration::from_secs(3));
        wait_until(
            Duration::from_secs(3),
            "the failed handshake in the log with the client's address",
            || {
                b.stderr().lines().any(|l| {
                    l.contains(&garbage_from) && l.to_ascii_lowercase().contains("handshake")
                })
            },
        );

        let mut p = Persistent::open(a, "old.reload.test", &[]);
        p.send(b"GET /echo HTTP/1.1\r\nHost: old.reload.test\r\n\r\n");
        p.wait_responses(1, Duration::from_secs(5));
        let refusals = || b.stderr().matches("configuration stays").count();
        let cases: [Case; 3] = [
            (
                "mismatched",
                Box::new(|| write_pair(&cert, &["bad.reload.test"], true)),
            ),
            (
                "not PEM",
                Box::new(|| std::fs::write(&cert, "garbage\n").unwrap()),
            ),
            ("missing", Box::new(|| std::fs::remove_file(&cert).unwrap())),
        ];
        for (i, (what, make)) in cases.iter().enumerate() {
            let before = refusals();
            let log_before = b.stderr().len();
            make();
            b.hup();
            wait_until(
                Duration::from_secs(5),
                &format!("the {what} reload refused in the log"),
                || refusals() > before,
            );
            let said = b.stderr()[log_before..].to_string();
            assert!(
                said.contains("site.pem"),
                "{what}: the log names the file:\n{said}"
            );
            std::thread::sleep(Duration::from_millis(300));
            for _ in 0..3 {
                assert_eq!(
                    cn_for(a, Some("old.reload.test")),
                    "old.reload.test",
                    "{what}: the current certificate stays"
                );
            }
            p.send(b"GET /echo HTTP/1.1\r\nHost: old.reload.test\r\n\r\n");
            p.wait_responses(i + 2, Duration::from_secs(5));
        }

        // A good file again: reloads.
        write_pair(&cert, &["new.reload.test"], false);
        b.hup();
        wait_until(
            Duration::from_secs(5),
            "the new certificate after a good reload",
            || cn_for(a, None) == "new.reload.test",
        );
        assert!(p.alive(), "{}", p.text());
    });
    b.stop();
}
