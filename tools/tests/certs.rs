use tools::certs::{self_signed, write_combined};

#[test]
fn self_signed_pem() {
    let (cert, key) = self_signed(&["localhost", "moodle.test", "127.0.0.1"]);
    assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"));
    assert!(key.contains("PRIVATE KEY-----"));
}

#[test]
fn combined_file_holds_chain_and_key() {
    let dir = std::env::temp_dir().join(format!("tools-certs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = write_combined(&dir, "lb.pem", &["localhost"]);
    let s = std::fs::read_to_string(&p).unwrap();
    let c = s.find("BEGIN CERTIFICATE").unwrap();
    let k = s.find("PRIVATE KEY").unwrap();
    assert!(c < k);
    std::fs::remove_dir_all(&dir).unwrap();
}
