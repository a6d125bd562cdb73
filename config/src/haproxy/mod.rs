//! `engine import-haproxy`: an HAProxy configuration to an equivalent lb.toml, with a
//! report of what was carried, changed, fixed, not needed and not carried, and what
//! `engine check` says of the result. Pure: no sockets, no runtime; it reads only the
//! files the HAProxy configuration names (certificates, the 503 errorfile).
//!
//! The module's parts, in the order the text goes through them:
//! - `lexer`: HAProxy's line and word syntax (quotes, escapes, comments).
//! - `model`: lines grouped into sections; HAProxy times to engine durations.
//! - `settings`: what a defaults section gives and a proxy sets (`Settings::apply`),
//!   with `cond` for the conditions the engine can carry (`ssl_fc`, `path_beg`) and
//!   `table` for the directives it does not translate (not needed, or not carried).
//! - `global`: `[global]`, `[limits]` and `[log]`.
//! - `frontend`, `backend`, `servers`, `check`, `files`: the engine's tables of each proxy.
//! - `translate`: the whole file, in order, and the reports that need all of it.
//! - `emit`: the lb.toml text, each field with `# from FILE:LINE`.
//! - `report`: [`ReportLine`], [`ReportKind`] and [`render`].
//! - this file: [`import`] and [`import_file`], which also validate the result with
//!   [`crate::load_str`] and put its diagnostics in the report.

mod backend;
mod check;
mod cond;
mod emit;
mod files;
mod frontend;
mod global;
mod lexer;
mod model;
mod report;
mod servers;
mod settings;
mod table;
mod translate;

pub use report::{render, ReportKind, ReportLine};

use std::path::{Path, PathBuf};

use crate::diag::{Diagnostic, Severity};

/// Why an HAProxy file could not be imported at all.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{0}")]
    Read(#[from] crate::files::FileError),
    #[error("{path} is not UTF-8 text (from line {line})")]
    NotUtf8 { path: PathBuf, line: usize },
}

/// The result of an import.
#[derive(Debug, Clone)]
pub struct Import {
    /// The lb.toml text.
    pub toml: String,
    /// Every directive's fate, then `engine check`'s errors and warnings on the result.
    pub report: Vec<ReportLine>,
    /// Whether the result passes `engine check` (warnings allowed).
    pub runnable: bool,
    /// The HAProxy file, as given.
    pub source: PathBuf,
}

impl Import {
    /// The report as printed on standard error.
    pub fn report_text(&self) -> String {
        render(&self.report, &file_label(&self.source), self.runnable)
    }
}

fn file_label(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}

/// Translates `text`, read from `path` (whose folder relative paths are resolved
/// against), and validates the result as if it were `lb.toml` in that folder.
pub fn import(text: &str, path: &Path) -> Import {
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let base = match abs.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/")),
    };
    let file = file_label(path);
    let tr = translate::translate(text, &base);
    let preamble = [
        format!(
            "lb.toml imported from {file} by `engine import-haproxy` (engine {}).",
            env!("CARGO_PKG_VERSION")
        ),
        format!("Each setting names the line of {file} it came from; the import's report lists"),
        "what was carried, changed, fixed and left out. Check it with: engine check -c lb.toml"
            .to_owned(),
    ];
    let (toml, origins) = emit::render(&tr.tables, &file, &preamble);
    let mut report = tr.rep.lines;
    let runnable = match crate::load_str(&toml, &base.join("lb.toml")) {
        Ok(l) => {
            report.extend(l.warnings.iter().map(|d| diag_line(d, &origins)));
            true
        }
        Err(diags) => {
            report.extend(diags.iter().map(|d| diag_line(d, &origins)));
            false
        }
    };
    Import {
        toml,
        report,
        runnable,
        source: path.to_path_buf(),
    }
}

/// Reads `path` and imports it.
pub fn import_file(path: &Path) -> Result<Import, ImportError> {
    let bytes = crate::files::read_bounded(path, crate::files::CONFIG_LIMIT)?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        ImportError::NotUtf8 {
            path: path.to_path_buf(),
            line: valid.iter().filter(|&&b| b == b'\n').count() + 1,
        }
    })?;
    Ok(import(&text, path))
}

/// An `engine check` finding on the result, pointing back to the HAProxy line.
fn diag_line(d: &Diagnostic, origins: &[usize]) -> ReportLine {
    let from = d
        .line
        .checked_sub(1)
        .and_then(|i| origins.get(i))
        .copied()
        .unwrap_or(0);
    let message = if d.field.is_empty() {
        d.message.clone()
    } else {
        format!("{}: {}", d.field, d.message)
    };
    ReportLine {
        kind: match d.severity {
            Severity::Error => ReportKind::Error,
            Severity::Warning => ReportKind::Warning,
        },
        line: from,
        directive: String::new(),
        message,
        fix: d.fix.clone(),
        toml_line: d.line,
    }
}
