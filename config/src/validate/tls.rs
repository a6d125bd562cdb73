//! A frontend's `tls` table: the certificates (one combined PEM file, or a chain and a key
//! apart) and what each PEM file must hold, the handshake timeout, session resumption.

use super::{fld, Ctx};
use crate::raw::{RawTls, S};
use crate::types::{CertSource, Tls};
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

pub(super) fn validate_tls(t: &S<RawTls>, label: &str, cx: &mut Ctx) -> Tls {
    let rt = t.get_ref();
    let p = format!("{label} tls");
    let mut certs = Vec::new();
    match &rt.certs {
        None => cx.err(
            &t.span(),
            fld(&p, "certs"),
            "tls needs at least one certificate",
            "write tls = { certs = [\"certs/moodle.pem\"] }",
        ),
        Some(c) if c.get_ref().is_empty() => cx.err(
            &c.span(),
            fld(&p, "certs"),
            "is an empty list",
            "write certs = [\"certs/moodle.pem\"]",
        ),
        Some(c) => {
            for item in c.get_ref() {
                certs.extend(cert_entry(item, &p, cx));
            }
        }
    }
    let handshake_timeout = rt
        .handshake_timeout
        .as_ref()
        .and_then(|v| cx.duration(v, &p, "handshake_timeout", "10s"))
        .unwrap_or(Duration::from_secs(10));
    Tls {
        certs,
        handshake_timeout,
        session_resumption: rt.session_resumption.as_ref().is_none_or(|v| *v.get_ref()),
    }
}

/// One entry of `certs`: `"combined.pem"` or `{ cert = "chain.pem", key = "key.pem" }`.
fn cert_entry(item: &S<toml::Value>, p: &str, cx: &mut Ctx) -> Option<CertSource> {
    let span = item.span();
    match item.get_ref() {
        toml::Value::String(s) => {
            check_pem(cx, s, &span, p, PemWant::Combined).map(CertSource::Combined)
        }
        toml::Value::Table(tb) => cert_table(tb, &span, p, cx),
        other => {
            cx.err(
                &span,
                fld(p, "certs"),
                format!("{} is not a certificate file", other.type_str()),
                "write \"certs/moodle.pem\" or { cert = \"chain.pem\", key = \"key.pem\" }",
            );
            None
        }
    }
}

/// `{ cert = "chain.pem", key = "key.pem" }`: no other key, both present, both PEM.
fn cert_table(tb: &toml::Table, span: &Range<usize>, p: &str, cx: &mut Ctx) -> Option<CertSource> {
    let mut ok = true;
    for k in tb.keys() {
        if k != "cert" && k != "key" {
            let hint = if k == "crt" || k == "certificate" || k == "chain" {
                "did you mean `cert`? "
            } else if k.starts_with("priv") {
                "did you mean `key`? "
            } else {
                ""
            };
            cx.err(span, fld(p, "certs"), format!("unknown field `{k}` in a certificate entry"), format!("{hint}an entry is \"file.pem\" or {{ cert = \"chain.pem\", key = \"key.pem\" }}"));
            ok = false;
        }
    }
    let cert = tb.get("cert").and_then(|v| v.as_str());
    let key = tb.get("key").and_then(|v| v.as_str());
    match (cert, key) {
        (Some(c), Some(k)) if ok => {
            let cp = check_pem(cx, c, span, p, PemWant::Cert);
            let kp = check_pem(cx, k, span, p, PemWant::Key);
            if let (Some(cert), Some(key)) = (cp, kp) {
                return Some(CertSource::Separate { cert, key });
            }
        }
        _ if !ok => {}
        _ => cx.err(span, fld(p, "certs"), "a certificate entry in a table needs both `cert` and `key` as strings", "write { cert = \"chain.pem\", key = \"key.pem\" }, or \"combined.pem\" for one file holding both"),
    }
    None
}

#[derive(Clone, Copy, PartialEq)]
enum PemWant {
    Combined,
    Cert,
    Key,
}

fn check_pem(
    cx: &mut Ctx,
    s: &str,
    span: &Range<usize>,
    prefix: &str,
    want: PemWant,
) -> Option<PathBuf> {
    let key = match want {
        PemWant::Key => "key",
        PemWant::Cert => "cert",
        PemWant::Combined => "certs",
    };
    let fake = S::new(span.clone(), s.to_owned());
    let what = match want {
        PemWant::Combined => "a PEM file holding the certificate chain and its private key",
        PemWant::Cert => "a PEM certificate chain",
        PemWant::Key => "a PEM private key",
    };
    let (path, bytes) = cx.read_file(&fake, (prefix, key), what, crate::files::PEM_LIMIT)?;
    let text = String::from_utf8_lossy(&bytes);
    let f = fld(prefix, key);
    if !text.contains("-----BEGIN") {
        cx.err(span, f, format!("{} is not PEM (no \"-----BEGIN\" line)", path.display()), "convert it to PEM, e.g. openssl x509 -inform der -in cert.der -out cert.pem (and openssl pkey for the key)");
        return None;
    }
    let has_cert = text.contains("-----BEGIN CERTIFICATE-----");
    let has_key = text.contains("PRIVATE KEY-----");
    if has_key && text.contains("BEGIN ENCRYPTED PRIVATE KEY")
        || text.contains("Proc-Type: 4,ENCRYPTED")
    {
        cx.err(span, f, format!("the private key in {} is encrypted; the engine cannot ask for a passphrase", path.display()), "decrypt it: openssl pkey -in key.pem -out key-plain.pem, and keep that file readable by the engine only");
        return None;
    }
    let mut ok = true;
    if want != PemWant::Key && !has_cert {
        cx.err(
            span,
            f.clone(),
            format!(
                "{} holds no certificate (no -----BEGIN CERTIFICATE----- block)",
                path.display()
            ),
            "write the path of the certificate chain file",
        );
        ok = false;
    }
    if want != PemWant::Cert && !has_key {
        let fix = if want == PemWant::Combined {
            "append the private key to the file (cat chain.pem key.pem > combined.pem), or write { cert = \"chain.pem\", key = \"key.pem\" }"
        } else {
            "write the path of the private key file (-----BEGIN PRIVATE KEY-----)"
        };
        cx.err(
            span,
            f,
            format!(
                "{} holds no private key (no -----BEGIN ... PRIVATE KEY----- block)",
                path.display()
            ),
            fix,
        );
        ok = false;
    }
    ok.then_some(path)
}
