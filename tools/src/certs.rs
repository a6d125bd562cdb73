//! Self-signed certificates for tests and `engine demo` (rcgen, ECDSA P-256).

use std::path::{Path, PathBuf};

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, PKCS_ECDSA_P256_SHA256};

/// A self-signed ECDSA P-256 certificate for `names` (DNS names, or IP addresses, which
/// become IP SANs); the first name is also the subject's common name.
/// Returns `(certificate PEM, private key PEM)`.
///
/// Panics if a name is not acceptable to rcgen (a test-setup error, not network input).
pub fn self_signed(names: &[&str]) -> (String, String) {
    let sans: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let mut params = CertificateParams::new(sans).expect("certificate names");
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, *names.first().unwrap_or(&"localhost"));
    params.distinguished_name = dn;
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("generate P-256 key");
    let cert = params.self_signed(&key).expect("self-sign certificate");
    (cert.pem(), key.serialize_pem())
}

/// Writes a self-signed certificate for `names` and its key into one PEM file
/// `dir/file` (chain first, then the key), the format `tls.certs` takes, and returns
/// the path. Panics when the file cannot be written.
pub fn write_combined(dir: &Path, file: &str, names: &[&str]) -> PathBuf {
    let (cert, key) = self_signed(names);
    let path = dir.join(file);
    let mut pem = cert;
    if !pem.ends_with('\n') {
        pem.push('\n');
    }
    pem.push_str(&key);
    std::fs::write(&path, pem).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path
}
