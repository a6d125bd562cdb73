//! `lb.toml` to validated types: pure parsing and checking, no sockets, no runtime.
//!
//! The crate's parts:
//! - [`types`]: the validated configuration the engine receives ([`Config`] and below);
//!   nothing there can fail.
//! - [`diag`]: [`Diagnostic`] (file, line, field, the mistake, the fix), [`Severity`] and
//!   [`DiagKind`] (which marks the forceable lockout lints).
//! - `raw` (private): serde structs mirroring the TOML, `deny_unknown_fields`, every field
//!   optional and `Spanned` so validation can name the line.
//! - `perr` (private): a TOML syntax error or serde error (unknown field, wrong type) turned
//!   into one diagnostic with the field's place and a fix ("did you mean ...").
//! - `validate` (private): raw to [`types`], collecting every error and warning at once,
//!   reading the files the configuration refers to (errorfile, waiting room, certificates).
//!   A folder: `mod.rs` has the entry point and the shared context (`Ctx`: diagnostics,
//!   integers, durations, paths, files, names); one file per section it checks: `global`,
//!   `limits`, `log`, `timeouts` (`[defaults]` and the overrides), `frontend` (binds,
//!   redirect, backend, set_headers), `tls`, `addr` (IP:port, addresses bound twice),
//!   `backend`, `errorfile`, `cookie` (with the lockout lint), `check`, `server`.
//! - [`files`]: the files a configuration names, read with a bound (regular files only,
//!   within a size limit).
//! - `duration` (private): [`parse_duration`].
//! - [`haproxy`]: `engine import-haproxy`, an HAProxy configuration to lb.toml with a
//!   report ([`haproxy::import`]).
//! - this file: [`load_file`], [`load_str`] and their `_with` forms taking [`LoadOptions`].

pub mod diag;
mod duration;
pub mod files;
pub mod haproxy;
mod perr;
mod raw;
pub mod types;
mod validate;

pub use diag::{DiagKind, Diagnostic, Severity};
pub use duration::parse_duration;
pub use types::*;

use std::path::{Path, PathBuf};

/// How to load.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// Lockout lints (kind [`DiagKind::Lockout`]) become warnings instead of errors.
    pub force: bool,
}

/// A configuration that passed, with the warnings found on the way.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<Diagnostic>,
}

/// Reads and validates `path`. `Err` holds every error and every warning, by line.
pub fn load_file(path: &Path) -> Result<Loaded, Vec<Diagnostic>> {
    load_file_with(path, &LoadOptions::default())
}

/// [`load_file`] with options.
pub fn load_file_with(path: &Path, opts: &LoadOptions) -> Result<Loaded, Vec<Diagnostic>> {
    let whole_file = |message: String, fix: &str| Diagnostic {
        severity: Severity::Error,
        kind: DiagKind::Invalid,
        file: path.to_path_buf(),
        line: 0,
        field: String::new(),
        message,
        fix: fix.to_owned(),
    };
    let bytes = files::read_bounded(path, files::CONFIG_LIMIT).map_err(|e| {
        vec![whole_file(
            format!("cannot read the configuration file: {e}"),
            "give the path of an existing, readable lb.toml (engine check -c /etc/engine/lb.toml)",
        )]
    })?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let valid = std::str::from_utf8(&e.as_bytes()[..at]).unwrap_or("");
        let mut d = whole_file(
            "the file is not UTF-8 text".to_owned(),
            "save the file as UTF-8",
        );
        d.kind = DiagKind::Parse;
        d.line = diag::line_of(valid, valid.len());
        vec![d]
    })?;
    load_str_with(&text, path, opts)
}

/// Validates `text` as if read from `source`; relative paths resolve against
/// `source.parent()` (the current folder if it has none).
pub fn load_str(text: &str, source: &Path) -> Result<Loaded, Vec<Diagnostic>> {
    load_str_with(text, source, &LoadOptions::default())
}

/// [`load_str`] with options.
pub fn load_str_with(
    text: &str,
    source: &Path,
    opts: &LoadOptions,
) -> Result<Loaded, Vec<Diagnostic>> {
    let raw: raw::RawConfig = match toml::from_str(text) {
        Ok(r) => r,
        Err(e) => return Err(vec![perr::diagnose(&e, text, source)]),
    };
    let mut cx = validate::Ctx {
        text,
        file: source.to_path_buf(),
        base: base_dir(source),
        force: opts.force,
        diags: Vec::new(),
    };
    let config = validate::validate(raw, &mut cx, source);
    let mut diags = cx.diags;
    diags.sort_by_key(|d| if d.line == 0 { usize::MAX } else { d.line });
    if diags.iter().any(Diagnostic::is_error) {
        Err(diags)
    } else {
        Ok(Loaded {
            config,
            warnings: diags,
        })
    }
}

fn base_dir(source: &Path) -> PathBuf {
    match source.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
    }
}
