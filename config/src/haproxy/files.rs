//! The files an HAProxy configuration names (certificates, the 503 errorfile), looked
//! at when importing: a certificate folder becomes its `.pem` files, a certificate whose
//! key is in `FILE.key` becomes a cert/key pair, and an errorfile that is missing or not
//! a raw HTTP response is written as a comment (the engine would refuse the file).

use std::path::{Path, PathBuf};

use super::emit::{toml_str, At};
use super::model::Directive;
use super::report::Reports;

/// A path as the output writes it: absolute as written, or a relative one made absolute
/// against `base` (`crt-base`, or the HAProxy file's folder).
pub(crate) fn resolve(p: &str, base: &Path) -> (String, bool) {
    if Path::new(p).is_absolute() {
        (p.to_owned(), false)
    } else {
        (base.join(p).to_string_lossy().into_owned(), true)
    }
}

/// One entry of `tls.certs`, as a TOML literal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Cert {
    Combined(String),
    Separate { cert: String, key: String },
}

impl Cert {
    pub fn literal(&self) -> String {
        match self {
            Cert::Combined(p) => toml_str(p),
            Cert::Separate { cert, key } => {
                format!("{{ cert = {}, key = {} }}", toml_str(cert), toml_str(key))
            }
        }
    }
}

fn has_key(path: &Path) -> bool {
    crate::files::read_bounded(path, crate::files::PEM_LIMIT)
        .map(|b| String::from_utf8_lossy(&b).contains("PRIVATE KEY-----"))
        .unwrap_or(true)
}

/// A PEM file, with its key beside it in `FILE.key` when the file holds none (HAProxy
/// loads that file too).
fn cert_file(p: &Path) -> Cert {
    let key = PathBuf::from(format!("{}.key", p.display()));
    let shown = p.to_string_lossy().into_owned();
    if !has_key(p) && key.is_file() {
        Cert::Separate {
            cert: shown,
            key: key.to_string_lossy().into_owned(),
        }
    } else {
        Cert::Combined(shown)
    }
}

/// The certificates of `crt PATH`: the file, or every `.pem` file of the folder (in name
/// order, as HAProxy loads them; the first is the default for clients without SNI).
pub(crate) fn certs(d: &Directive, raw: &str, base: &Path, rep: &mut Reports) -> Vec<Cert> {
    let (path, made_absolute) = resolve(raw, base);
    if made_absolute {
        rep.changed(d, format!("the relative path \"{raw}\" is written as \"{path}\" (HAProxy reads it from its working folder, or crt-base)"));
    }
    let p = Path::new(&path);
    if p.is_dir() {
        let mut pems: Vec<PathBuf> = std::fs::read_dir(p)
            .map(|rd| {
                rd.filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|f| f.is_file() && f.extension().is_some_and(|x| x == "pem"))
                    .collect()
            })
            .unwrap_or_default();
        pems.sort();
        if pems.is_empty() {
            rep.not_carried(
                d,
                format!("the certificate folder {path} holds no .pem file"),
                "put the certificates (chain and key, PEM) in .pem files there and import again, or list them in tls.certs",
            );
            return Vec::new();
        }
        let names: Vec<String> = pems.iter().map(|f| f.display().to_string()).collect();
        rep.changed(d, format!("the certificate folder {path} is written as its .pem files at import time ({}): a certificate added to the folder later needs a line in tls.certs", names.join(", ")));
        return pems.iter().map(|f| cert_file(f)).collect();
    }
    if !p.exists() {
        rep.changed(d, format!("{path} does not exist on this machine (a file or a folder?): written as a file; engine check refuses the result until it is there (copy the certificates, then run engine check)"));
        return vec![Cert::Combined(path)];
    }
    let c = cert_file(p);
    if let Cert::Separate { key, .. } = &c {
        rep.changed(
            d,
            format!("{path} holds no private key; its key is {key}, written as {{ cert, key }}"),
        );
    }
    vec![c]
}

/// `errorfile 503 PATH`: the path when the engine can take the file, else why not.
pub(crate) fn errorfile(e: &At<String>, base: &Path) -> Result<(String, bool), String> {
    let (path, made_absolute) = resolve(&e.v, base);
    let bytes =
        crate::files::read_bounded(Path::new(&path), crate::files::PAGE_LIMIT).map_err(|err| {
            match err {
                crate::files::FileError::NotFound(_) => {
                    format!("{path} does not exist on this machine")
                }
                other => other.to_string(),
            }
        })?;
    crate::validate::normalise_errorfile(&bytes)
        .map_err(|(m, _)| format!("{path} is not a raw HTTP response the engine can send: {m}"))?;
    Ok((path, made_absolute))
}
