//! Helpers of the HAProxy import tests: the seed with loopback addresses (and with its
//! files in a temp folder), importing from a temp folder, and finding report lines.
#![allow(dead_code)]

use config::haproxy::{import, Import, ReportKind, ReportLine};
use config::*;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

pub const SEED: &str = "/work/shared/seed/haproxy-moodle.cfg";

pub fn tempdir(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let d = std::env::temp_dir().join(format!(
        "engine-haproxy-test-{}-{}-{tag}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The seed with its three application nodes on 127.0.0.1:9101-9103 (and the backup's
/// comment on 9104): never the original's private addresses.
pub fn seed_loopback() -> String {
    let text = std::fs::read_to_string(SEED).expect("the seed HAProxy file");
    let mut out = text.clone();
    for i in 1..=4 {
        out = out.replace(&format!("192.168.1.10{i}:80"), &format!("127.0.0.1:910{i}"));
    }
    assert!(!out.contains("192.168."), "every private address replaced");
    out
}

/// A fake PEM with a certificate and a key (the loader checks the blocks, not the bytes).
pub const PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n";
pub const ERRORFILE: &str = "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nsorry\n";

/// The seed with its files (certificate, errorfile, admin socket) in `dir`.
pub fn seed_with_files(dir: &Path) -> String {
    std::fs::create_dir_all(dir.join("certs")).unwrap();
    std::fs::create_dir_all(dir.join("errors")).unwrap();
    std::fs::write(dir.join("certs/moodle.pem"), PEM).unwrap();
    std::fs::write(dir.join("errors/503.http"), ERRORFILE).unwrap();
    seed_loopback()
        .replace(
            "/etc/haproxy/certs/moodle.pem",
            &dir.join("certs/moodle.pem").display().to_string(),
        )
        .replace(
            "/etc/haproxy/errors/503.http",
            &dir.join("errors/503.http").display().to_string(),
        )
        .replace(
            "/run/haproxy/admin.sock",
            &dir.join("admin.sock").display().to_string(),
        )
}

pub fn imp_in(dir: &Path, text: &str) -> Import {
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, text).unwrap();
    import(text, &path)
}

pub fn imp(text: &str) -> Import {
    imp_in(&tempdir("imp"), text)
}

/// The result loads (it passes engine check); the report says so.
pub fn loads(i: &Import) -> Config {
    let dir = i.source.parent().unwrap();
    match config::load_str(&i.toml, &dir.join("lb.toml")) {
        Ok(l) => {
            assert!(
                i.runnable,
                "runnable agrees with load_str:\n{}",
                i.report_text()
            );
            l.config
        }
        Err(d) => panic!(
            "the imported file is refused:\n{}\n--- toml ---\n{}\n--- report ---\n{}",
            d.iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join("\n"),
            i.toml,
            i.report_text()
        ),
    }
}

/// The report lines of `kind` about HAProxy line `line`.
pub fn at(i: &Import, kind: ReportKind, line: usize) -> Vec<&ReportLine> {
    i.report
        .iter()
        .filter(|r| r.kind == kind && r.line == line)
        .collect()
}

/// The first report line of `kind` whose message contains `needle`, else the first whose
/// directive does.
pub fn find<'a>(i: &'a Import, kind: ReportKind, needle: &str) -> &'a ReportLine {
    let of_kind = || i.report.iter().filter(|r| r.kind == kind);
    of_kind()
        .find(|r| r.message.contains(needle))
        .or_else(|| of_kind().find(|r| r.directive.contains(needle)))
        .unwrap_or_else(|| panic!("no {kind:?} line about {needle:?}:\n{}", i.report_text()))
}

pub fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .map(|i| i + 1)
        .unwrap_or_else(|| panic!("{needle:?} not in the text"))
}

/// A frontend and a backend around `fe` and `be` lines (indented).
pub fn proxy(fe: &str, be: &str) -> String {
    format!("frontend web\n    bind 127.0.0.1:8080\n{fe}\n    default_backend app\n\nbackend app\n{be}\n    server s1 127.0.0.1:9101\n")
}
