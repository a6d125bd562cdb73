//! Helpers of the TLS tests (tests/tests/tls_*.rs): real clients, curl and
//! `openssl s_client`, as subprocesses; the certificates every test shares; an HTTPS
//! engine in-process ([`tls_engine`]) or as the binary ([`Bin`]); a long-lived s_client
//! ([`Persistent`]) for one keep-alive TLS connection across a reload.
//!
//! curl and openssl are required: a test fails (never skips) when one is missing.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::{
    cfg_in, engine_bin, listeners_on, poll_for, signal, start, tmpdir, wait_exit, DriverChoice,
    Origin, Running, SIGTERM,
};

// ---------------------------------------------------------------------------------------
// Tools

pub fn require(tool: &str, arg: &str) {
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

pub fn require_tools() {
    require("curl", "--version");
    require("openssl", "version");
}

/// Runs a command with a deadline; kills it past `limit`. Returns (status code, stdout +
/// stderr).
pub fn run_with_input(mut cmd: Command, input: &[u8], limit: Duration) -> (Option<i32>, String) {
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
pub fn request_bytes(path: &str, host: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").into_bytes()
}

/// One `openssl s_client` exchange: connects to `addr`, sends `GET /` (Connection:
/// close) and reads until the engine closes. `sni`: None sends no SNI.
pub fn s_client(addr: SocketAddr, sni: Option<&str>, extra: &[&str]) -> (Option<i32>, String) {
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
pub fn served_cn(out: &str) -> Option<String> {
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

pub fn cn_for(addr: SocketAddr, sni: Option<&str>) -> String {
    let (_, out) = s_client(addr, sni, &[]);
    served_cn(&out)
        .unwrap_or_else(|| panic!("no certificate subject from s_client (SNI {sni:?}):\n{out}"))
}

/// curl over HTTPS to `name:port` resolved to 127.0.0.1, trusting `ca`. Returns (exit
/// code, body, `-w` trailer "CODE VERSION", verbose stderr).
pub struct Curl {
    pub code: Option<i32>,
    pub body: String,
    pub status: u16,
    pub http_version: String,
    pub verbose: String,
}

pub fn curl(addr: SocketAddr, name: &str, ca: &Path, path: &str, extra: &[&str]) -> Curl {
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
pub struct Certs {
    pub dir: PathBuf,
    /// Combined, ECDSA, PKCS#8 key: default.test, localhost, 127.0.0.1.
    pub default: PathBuf,
    /// Separate cert and key: moodle.example.edu.
    pub exact_cert: PathBuf,
    pub exact_key: PathBuf,
    /// Combined: *.example.org.
    pub wildcard: PathBuf,
    /// Combined, RSA 2048, traditional PKCS#1 key: rsa.test.
    pub rsa: PathBuf,
    /// Combined, ECDSA with a SEC1 ("EC PRIVATE KEY") key: ec.test.
    pub sec1: PathBuf,
}

pub fn openssl(args: &[&str], dir: &Path) {
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

pub fn cat(dir: &Path, out: &str, parts: &[&str]) -> PathBuf {
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

pub fn certs() -> &'static Certs {
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
        let rsa = rsa_pkcs1(&dir);
        let sec1 = ec_sec1(&dir);
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

/// An RSA 2048 certificate for rsa.test with a PKCS#1 key ("BEGIN RSA PRIVATE KEY"),
/// combined in one file.
fn rsa_pkcs1(dir: &Path) -> PathBuf {
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
        dir,
    );
    openssl(
        &["rsa", "-in", "rsa8.key", "-traditional", "-out", "rsa1.key"],
        dir,
    );
    let rsa = cat(dir, "rsa.pem", &["rsa.crt", "rsa1.key"]);
    assert!(std::fs::read_to_string(&rsa)
        .unwrap()
        .contains("BEGIN RSA PRIVATE KEY"));
    rsa
}

/// An ECDSA certificate for ec.test with a SEC1 key ("BEGIN EC PRIVATE KEY"), combined
/// in one file.
fn ec_sec1(dir: &Path) -> PathBuf {
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
        dir,
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
        dir,
    );
    let sec1 = cat(dir, "ec.pem", &["ec.crt", "ec.key"]);
    assert!(std::fs::read_to_string(&sec1)
        .unwrap()
        .contains("BEGIN EC PRIVATE KEY"));
    sec1
}

/// An HTTPS frontend `https` (all the shared certificates, default first) and a plain
/// frontend `plain`, both to backend `app` on `origin`. `tls_extra` goes inside the tls
/// table, `https_extra` after the https frontend's fields.
pub fn tls_text(origin: &Origin, tls_extra: &str, https_extra: &str) -> String {
    let c = certs();
    format!(
        r#"
[log]
access = "off"

[[frontend]]
name = "https"
bind = ["127.0.0.1:0"]
backend = "app"
tls = {{ certs = ["{default}", {{ cert = "{ec}", key = "{ek}" }}, "{wild}", "{rsa}", "{sec1}"]{tls_extra} }}
{https_extra}

[[frontend]]
name = "plain"
bind = ["127.0.0.1:0"]
backend = "app"

[[backend]]
name = "app"

[[backend.server]]
name = "{name}"
address = "{addr}"
"#,
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

pub fn tls_engine(
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
// A long-lived s_client: one keep-alive TLS connection across a reload.

pub struct Persistent {
    child: Child,
    stdin: Option<ChildStdin>,
    out: Arc<Mutex<String>>,
}

impl Persistent {
    pub fn open(addr: SocketAddr, sni: &str, extra: &[&str]) -> Persistent {
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
    pub fn text(&self) -> String {
        self.out.lock().unwrap().clone()
    }
    pub fn send(&mut self, b: &[u8]) {
        let s = self.stdin.as_mut().unwrap();
        s.write_all(b).expect("write to s_client");
        s.flush().unwrap();
    }
    /// Waits until `n` responses (status lines) arrived on the connection.
    pub fn wait_responses(&self, n: usize, limit: Duration) {
        let ok = poll_for(limit, || self.text().matches("HTTP/1.1 200").count() >= n);
        assert!(
            ok,
            "{n} responses expected on the kept-alive TLS connection:\n{}",
            self.text()
        );
    }
    pub fn alive(&mut self) -> bool {
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
// Reload: the configuration shape, certificate files good and bad

/// One HTTPS frontend `https` on port 0 with `cert`, to backend `app` on `origin`.
pub fn reload_text(origin: &Origin, cert: &str) -> String {
    format!(
        r#"
[log]
access = "off"

[[frontend]]
name = "https"
bind = ["127.0.0.1:0"]
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
pub fn write_pair(path: &Path, cert_names: &[&str], key_from_other: bool) {
    let (c, k) = tools::certs::self_signed(cert_names);
    let k = if key_from_other {
        tools::certs::self_signed(&["someone.else"]).1
    } else {
        k
    };
    std::fs::write(path, format!("{c}\n{k}")).unwrap();
}

pub fn load_errors(dir: &Path, text: &str) -> Option<String> {
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

/// The debug binary on `dir/lb.toml` (an HTTPS frontend on `site.pem`), its stderr in
/// `dir/stderr.log`. Killed when dropped.
pub struct Bin {
    child: Option<Child>,
    log: PathBuf,
    pub addr: SocketAddr,
}

impl Bin {
    pub fn start(dir: &Path, o: &Origin) -> Bin {
        let cfg_path = dir.join("lb.toml");
        std::fs::write(&cfg_path, reload_text(o, "site.pem")).unwrap();
        let log = dir.join("stderr.log");
        let mut child = Command::new(engine_bin(false))
            .args(["--cores", "2", "-c"])
            .arg(&cfg_path)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn the engine");
        let addr = crate::process::wait_bound(&mut child, &log, Duration::from_secs(15))
            .map(|b| b.addr("https"));
        let b = Bin {
            child: Some(child),
            log,
            addr: addr.unwrap_or_else(|said| panic!("the engine did not start:\n{said}")),
        };
        let port = b.addr.port();
        let up = poll_for(Duration::from_secs(15), || listeners_on(port) == 2);
        assert!(up, "engine not listening on {port}:\n{}", b.stderr());
        b
    }
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
    pub fn hup(&self) {
        signal(self.child.as_ref().unwrap(), libc::SIGHUP);
    }
    /// Runs `steps`; on a panic prints the engine's stderr first.
    pub fn run(&self, steps: impl FnOnce()) {
        if let Err(e) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(steps)) {
            eprintln!("--- the engine's stderr ---\n{}", self.stderr());
            std::panic::resume_unwind(e);
        }
    }
    pub fn stop(mut self) {
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
