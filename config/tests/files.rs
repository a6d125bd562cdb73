//! Files the configuration names (issue 16): errorfile, waiting room and certificates
//! must be regular files within a size limit (64 KiB for pages, 1 MiB for PEM files).
//! `/dev/zero`, `/dev/urandom`, a FIFO or an oversized file is a clear error naming the
//! file, found at once (before: `/dev/zero` ran until the kernel killed the check, a FIFO
//! hung it).

use config::*;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn tempdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("engine-config-files-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn config_with(backend_line: &str, frontend_line: &str) -> String {
    format!(
        r#"
[[frontend]]
name = "web"
bind = ["127.0.0.1:8080"]
backend = "moodle"
{frontend_line}

[[backend]]
name = "moodle"
{backend_line}

[[backend.server]]
name = "s1"
address = "127.0.0.1:9101"
"#
    )
}

/// Loading is refused within a second, with an error on `field` naming `path` and
/// saying `what`.
#[track_caller]
fn refused(text: &str, dir: &Path, field: &str, path: &str, what: &str) {
    let t0 = Instant::now();
    let r = load_str(text, &dir.join("lb.toml"));
    assert!(
        t0.elapsed() < Duration::from_secs(1),
        "took {:?}",
        t0.elapsed()
    );
    let ds = match r {
        Ok(_) => panic!("{field} = {path}: accepted"),
        Err(ds) => ds,
    };
    assert!(
        ds.iter().any(|d| d.is_error()
            && d.field.contains(field)
            && d.message.contains(path)
            && d.message.contains(what)
            && !d.fix.is_empty()),
        "{field} = {path}: want an error saying {what:?}, got:\n{}",
        ds.iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn pages_must_be_regular_files_within_64_kib() {
    let dir = tempdir("pages");
    let fifo = dir.join("fifo.html");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let big = dir.join("big.html");
    std::fs::write(&big, vec![b'x'; 64 * 1024 + 1]).unwrap();
    let fine = dir.join("fine.html");
    std::fs::write(&fine, vec![b'x'; 64 * 1024]).unwrap();
    for key in ["errorfile_503", "waiting_room"] {
        for (path, what) in [
            ("/dev/zero", "character device"),
            ("/dev/urandom", "character device"),
            (fifo.to_str().unwrap(), "FIFO"),
            (dir.to_str().unwrap(), "folder"),
            (big.to_str().unwrap(), "larger than 65536 bytes"),
        ] {
            let text = config_with(&format!("{key} = \"{path}\""), "");
            refused(&text, &dir, key, path, what);
        }
    }
    let text = config_with(&format!("waiting_room = \"{}\"", fine.display()), "");
    assert!(
        load_str(&text, &dir.join("lb.toml")).is_ok(),
        "64 KiB exactly is fine"
    );
}

#[test]
fn certificates_must_be_regular_files_within_1_mib() {
    let dir = tempdir("certs");
    let big = dir.join("big.pem");
    std::fs::write(&big, vec![b'-'; 1024 * 1024 + 1]).unwrap();
    for (path, what) in [
        ("/dev/zero", "character device"),
        ("/dev/urandom", "character device"),
        (big.to_str().unwrap(), "larger than 1048576 bytes"),
    ] {
        let text = config_with("", &format!("tls = {{ certs = [\"{path}\"] }}"));
        refused(&text, &dir, "certs", path, what);
    }
}

#[test]
fn the_configuration_file_itself_is_read_with_a_bound() {
    let t0 = Instant::now();
    let r = load_file(Path::new("/dev/zero"));
    assert!(t0.elapsed() < Duration::from_secs(1));
    let ds = r.expect_err("refused");
    assert!(ds[0].message.contains("character device"), "{}", ds[0]);
}
