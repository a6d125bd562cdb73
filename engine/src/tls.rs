//! TLS termination with rustls on the aws-lc-rs provider: certificates loaded from PEM
//! (chain and key in one file, or two files), chosen by SNI among the names each holds
//! (exact and wildcard, as webpki matches them), the first as the default; ALPN
//! http/1.1; TLS 1.2 and 1.3; tickets shared by all cores and a session cache per core.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use config::CertSource;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, ServerSessionMemoryCache};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: cannot read: {err}")]
    Read { path: String, err: std::io::Error },
    #[error("{path}: no certificate in the file (expected a PEM block BEGIN CERTIFICATE)")]
    NoCert { path: String },
    #[error("{path}: no private key in the file (expected a PEM block BEGIN PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY)")]
    NoKey { path: String },
    #[error("{path}: the private key is not usable: {err}")]
    BadKey { path: String, err: String },
    #[error("{path}: the private key does not match the certificate")]
    Mismatch { path: String },
    #[error("{path}: the certificate cannot be parsed: {err}")]
    BadCert { path: String, err: String },
    #[error("TLS configuration: {0}")]
    Config(String),
}

pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn read_pem(
    path: &Path,
) -> Result<(Vec<CertificateDer<'static>>, Option<PrivateKeyDer<'static>>), TlsError> {
    let p = path.display().to_string();
    // Regular files within 1 MiB only (the configuration's check, again at load).
    let bytes = config::files::read_bounded(path, config::files::PEM_LIMIT).map_err(|e| {
        TlsError::Read {
            path: p.clone(),
            err: std::io::Error::other(e.to_string()),
        }
    })?;
    let mut r = bytes.as_slice();
    let mut certs = Vec::new();
    let mut key = None;
    for item in rustls_pemfile::read_all(&mut r) {
        match item.map_err(|err| TlsError::Read {
            path: p.clone(),
            err,
        })? {
            rustls_pemfile::Item::X509Certificate(c) => certs.push(c),
            rustls_pemfile::Item::Pkcs8Key(k) => key = key.or(Some(PrivateKeyDer::Pkcs8(k))),
            rustls_pemfile::Item::Pkcs1Key(k) => key = key.or(Some(PrivateKeyDer::Pkcs1(k))),
            rustls_pemfile::Item::Sec1Key(k) => key = key.or(Some(PrivateKeyDer::Sec1(k))),
            _ => {}
        }
    }
    Ok((certs, key))
}

/// One loaded certificate with its key.
pub struct LoadedCert {
    pub key: Arc<CertifiedKey>,
    pub source: String,
}

impl fmt::Debug for LoadedCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadedCert")
            .field("source", &self.source)
            .finish()
    }
}

pub fn load_cert(src: &CertSource, provider: &CryptoProvider) -> Result<LoadedCert, TlsError> {
    let (certs, key, path) = match src {
        CertSource::Combined(p) => {
            let (c, k) = read_pem(p)?;
            (c, k, p.display().to_string())
        }
        CertSource::Separate { cert, key } => {
            let (c, _) = read_pem(cert)?;
            let (_, k) = read_pem(key)?;
            if k.is_none() {
                return Err(TlsError::NoKey {
                    path: key.display().to_string(),
                });
            }
            (c, k, cert.display().to_string())
        }
    };
    if certs.is_empty() {
        return Err(TlsError::NoCert { path });
    }
    let key = key.ok_or_else(|| TlsError::NoKey { path: path.clone() })?;
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| TlsError::BadKey {
            path: path.clone(),
            err: e.to_string(),
        })?;
    webpki::EndEntityCert::try_from(&certs[0]).map_err(|e| TlsError::BadCert {
        path: path.clone(),
        err: format!("{e:?}"),
    })?;
    let ck = CertifiedKey::new(certs, signing);
    match ck.keys_match() {
        Ok(()) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(_) => return Err(TlsError::Mismatch { path }),
    }
    Ok(LoadedCert {
        key: Arc::new(ck),
        source: path,
    })
}

/// Picks the certificate by SNI; the first is the default.
#[derive(Debug)]
pub struct SniResolver {
    certs: Vec<LoadedCert>,
}

impl SniResolver {
    fn choose(&self, sni: Option<&str>) -> &LoadedCert {
        if let Some(name) = sni {
            if let Ok(sn) = ServerName::try_from(name) {
                for c in &self.certs {
                    if let Ok(ee) = webpki::EndEntityCert::try_from(&c.key.cert[0]) {
                        if ee.verify_is_valid_for_subject_name(&sn).is_ok() {
                            return c;
                        }
                    }
                }
            }
        }
        &self.certs[0]
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.choose(hello.server_name()).key.clone())
    }
}

/// A frontend's TLS material; each core builds its own `ServerConfig` from it so that the
/// session cache is per core.
#[derive(Clone)]
pub struct TlsServer {
    resolver: Arc<SniResolver>,
    ticketer: Arc<dyn rustls::server::ProducesTickets>,
    pub handshake_timeout: std::time::Duration,
    resumption: bool,
    /// The ALPN protocols offered, in order.
    alpn: Vec<Vec<u8>>,
}

impl fmt::Debug for TlsServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsServer")
            .field("certs", &self.resolver.certs)
            .finish()
    }
}

/// The protocols to offer: the frontend's `alpn`, with http/1.0 after http/1.1 (a client
/// that offers only it, curl --http1.0, is served rather than refused at the handshake).
fn alpn_list(alpn: &[config::Alpn]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for a in alpn {
        out.push(a.as_str().as_bytes().to_vec());
        if *a == config::Alpn::Http11 {
            out.push(b"http/1.0".to_vec());
        }
    }
    out
}

impl TlsServer {
    pub fn load(t: &config::Tls, alpn: &[config::Alpn]) -> Result<TlsServer, TlsError> {
        let provider = provider();
        let mut certs = Vec::new();
        for c in &t.certs {
            certs.push(load_cert(c, &provider)?);
        }
        if certs.is_empty() {
            return Err(TlsError::Config("no certificate".into()));
        }
        let ticketer = rustls::crypto::aws_lc_rs::Ticketer::new()
            .map_err(|e| TlsError::Config(e.to_string()))?;
        Ok(TlsServer {
            resolver: Arc::new(SniResolver { certs }),
            ticketer,
            handshake_timeout: t.handshake_timeout,
            resumption: t.session_resumption,
            alpn: alpn_list(alpn),
        })
    }

    /// The source file of the certificate a client with this SNI gets (for tests/admin).
    pub fn chosen_for(&self, sni: Option<&str>) -> &str {
        &self.resolver.choose(sni).source
    }

    pub fn server_config(&self) -> Result<Arc<ServerConfig>, TlsError> {
        let mut cfg = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(self.resolver.clone());
        cfg.alpn_protocols = self.alpn.clone();
        if self.resumption {
            cfg.session_storage = ServerSessionMemoryCache::new(4096);
            cfg.ticketer = self.ticketer.clone();
            cfg.send_tls13_tickets = 2;
        } else {
            // Every handshake a full one: no cache, no tickets (TLS 1.2 or 1.3).
            cfg.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
            cfg.send_tls13_tickets = 0;
        }
        Ok(Arc::new(cfg))
    }
}
