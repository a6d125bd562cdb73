//! A student's browser over HTTPS: curl with a cookie jar of its own, one process per
//! request (the in-process client, [`crate::Browser`], speaks plain HTTP only). curl is
//! required: tests/run.sh installs it, and a test using this fails without it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::{Framing, Response, Student};

/// Panics, saying how to get it, when curl cannot run.
pub fn require_curl() {
    let ok = Command::new("curl")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "curl is required (tests/run.sh installs it): `curl --version` failed"
    );
}

/// HTTPS to one address, the certificate not verified (a self-signed one in tests).
pub struct CurlBrowser {
    base: String,
    jar: PathBuf,
}

impl CurlBrowser {
    /// A browser with an empty cookie jar in `dir`.
    pub fn new(addr: SocketAddr, dir: &Path) -> CurlBrowser {
        static N: AtomicU64 = AtomicU64::new(0);
        CurlBrowser {
            base: format!("https://{addr}"),
            jar: dir.join(format!("jar-{}.txt", N.fetch_add(1, Ordering::Relaxed))),
        }
    }

    /// The cookie jar as curl keeps it (Netscape format: one cookie a line, name and value
    /// last).
    pub fn cookies(&self) -> Vec<(String, String)> {
        std::fs::read_to_string(&self.jar)
            .unwrap_or_default()
            .lines()
            .map(|l| l.strip_prefix("#HttpOnly_").unwrap_or(l))
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .filter_map(|l| {
                let f: Vec<&str> = l.split('\t').collect();
                (f.len() >= 7).then(|| (f[5].to_owned(), f[6].to_owned()))
            })
            .collect()
    }
}

impl Student for CurlBrowser {
    fn request(
        &mut self,
        method: &str,
        path: &str,
        form: Option<&str>,
    ) -> Result<Response, String> {
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "-k", "--http1.1", "-i", "--max-time", "20", "-b"])
            .arg(&self.jar)
            .arg("-c")
            .arg(&self.jar);
        match form {
            Some(f) => {
                cmd.args(["--data-raw", f]);
            }
            None if method != "GET" => {
                cmd.args(["-X", method]);
            }
            None => {}
        }
        let out = cmd
            .arg(format!("{}{path}", self.base))
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run curl ({e}); tests/run.sh installs it"))?;
        if !out.status.success() {
            return Err(format!(
                "curl {method} {path}: {} {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        parse(&out.stdout).map_err(|e| format!("{method} {path}: {e}"))
    }
}

/// `curl -i` output: the status line, headers, an empty line, the body (1xx skipped).
fn parse(raw: &[u8]) -> Result<Response, String> {
    let mut rest = raw;
    loop {
        let end = rest
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| format!("no response head in {:?}", String::from_utf8_lossy(raw)))?;
        let head = String::from_utf8_lossy(&rest[..end]).into_owned();
        let body = &rest[end + 4..];
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or("");
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or("").to_owned();
        let status: u16 = parts
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad status line {status_line:?}"))?;
        if (100..200).contains(&status) {
            rest = body;
            continue;
        }
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
            .collect();
        return Ok(Response {
            status,
            version,
            headers,
            body: body.to_vec(),
            framing: Framing::Length,
            complete: true,
            trailers: Vec::new(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_curl_output() {
        let r = parse(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 303 See Other\r\nLocation: /my/\r\nSet-Cookie: a=b\r\n\r\nbody").unwrap();
        assert_eq!(
            (r.status, r.header("location"), r.text().as_str()),
            (303, Some("/my/"), "body")
        );
        assert!(parse(b"garbage").is_err());
    }
}
