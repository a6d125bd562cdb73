//! Loading with the files a configuration names: certificates, relative paths, the
//! errorfile, and a configuration file that is missing or not UTF-8.

mod common;

use common::*;
use config::*;
use std::time::Duration;

#[test]
fn separate_cert_and_key() {
    let dir = tempdir("certs");
    std::fs::write(
        dir.join("chain.pem"),
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("key.pem"),
        "-----BEGIN EC PRIVATE KEY-----\nMHc\n-----END EC PRIVATE KEY-----\n",
    )
    .unwrap();
    let text = BASE.replace(
        "backend = \"moodle\"",
        "backend = \"moodle\"\ntls = { certs = [{ cert = \"chain.pem\", key = \"key.pem\" }], handshake_timeout = \"3s\" }",
    );
    let c = load_str(&text, &dir.join("lb.toml")).unwrap().config;
    let tls = c.frontends[0].tls.as_ref().unwrap();
    assert_eq!(
        tls.certs,
        vec![CertSource::Separate {
            cert: dir.join("chain.pem"),
            key: dir.join("key.pem")
        }]
    );
    assert_eq!(tls.handshake_timeout, Duration::from_secs(3));

    // A combined file without its key, a "cert" that is no PEM, a missing key file.
    std::fs::write(
        dir.join("nokey.pem"),
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    std::fs::write(dir.join("der.pem"), [0x30u8, 0x82, 0x01]).unwrap();
    let text = BASE.replace(
        "backend = \"moodle\"",
        "backend = \"moodle\"\ntls = { certs = [\n  \"nokey.pem\",\n  { cert = \"der.pem\", key = \"key.pem\" },\n  { cert = \"chain.pem\", key = \"gone.pem\" },\n] }",
    );
    let ds = load_str(&text, &dir.join("lb.toml")).unwrap_err();
    let lines: Vec<(usize, &str)> = ds.iter().map(|d| (d.line, d.message.as_str())).collect();
    assert_eq!(ds.len(), 3, "{ds:#?}");
    assert!(
        lines[0].0 == 7 && lines[0].1.contains("no private key"),
        "{lines:?}"
    );
    assert!(
        lines[1].0 == 8 && lines[1].1.contains("not PEM"),
        "{lines:?}"
    );
    assert!(
        lines[2].0 == 9 && lines[2].1.contains("does not exist"),
        "{lines:?}"
    );
    assert!(
        ds.iter().all(|d| d.field == "frontend \"web\" tls `certs`"
            || d.field.starts_with("frontend \"web\" tls")),
        "{ds:#?}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn relative_paths_resolve_against_the_config_folder() {
    let dir = tempdir("rel");
    std::fs::create_dir_all(dir.join("errors")).unwrap();
    std::fs::write(dir.join("errors/503.http"), "HTTP/1.1 503 X\r\n\r\n").unwrap();
    let text = BASE.replace(
        "name = \"moodle\"",
        "name = \"moodle\"\nerrorfile_503 = \"errors/503.http\"",
    );
    std::fs::write(dir.join("lb.toml"), &text).unwrap();
    let c = load_file(&dir.join("lb.toml")).unwrap().config;
    assert_eq!(
        c.backends[0].errorfile_503.as_ref().unwrap().path,
        dir.join("errors/503.http")
    );
    // Read from elsewhere, the same text finds no file.
    let other = tempdir("rel-other");
    let ds = load_str(&text, &other.join("lb.toml")).unwrap_err();
    assert!(ds[0].message.contains("does not exist"), "{ds:#?}");
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::remove_dir_all(&other).unwrap();
}

#[test]
fn errorfile_checks() {
    let dir = tempdir("errorfile");
    let cases: [(&[u8], &str); 4] = [
        (b"<html>busy</html>", "does not start with"),
        (
            b"HTTP/1.1 503 Busy\r\nContent-Type: text/html\r\n",
            "no empty line",
        ),
        (b"HTTP/1.1 abc\r\n\r\n", "status code"),
        (
            b"HTTP/1.1 503 Busy\r\nContent-Length: 99\r\n\r\nshort",
            "Content-Length",
        ),
    ];
    for (i, (bytes, msg)) in cases.iter().enumerate() {
        std::fs::write(dir.join(format!("{i}.http")), bytes).unwrap();
        let text = BASE.replace(
            "name = \"moodle\"",
            &format!("name = \"moodle\"\nerrorfile_503 = \"{i}.http\" # <<"),
        );
        let line = marked_line(&text);
        let ds = load_str(&text, &dir.join("lb.toml")).unwrap_err();
        assert_eq!(ds.len(), 1, "{ds:#?}");
        assert_eq!(ds[0].line, line);
        assert_eq!(ds[0].field, "backend \"moodle\" `errorfile_503`");
        assert!(ds[0].message.contains(msg), "{}", ds[0]);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn missing_file_and_bad_encoding() {
    let dir = tempdir("files");
    let ds = load_file(&dir.join("absent.toml")).unwrap_err();
    assert_eq!((ds.len(), ds[0].line), (1, 0));
    assert!(ds[0].message.contains("cannot read"), "{}", ds[0]);
    std::fs::write(dir.join("latin1.toml"), b"[global]\n# caf\xe9\n").unwrap();
    let ds = load_file(&dir.join("latin1.toml")).unwrap_err();
    assert_eq!(ds[0].line, 2);
    assert!(ds[0].fix.contains("UTF-8"));
    std::fs::remove_dir_all(&dir).unwrap();
}
