//! Diagnostics: one mistake (or one piece of advice) in a configuration file, with where it
//! is, what is wrong, and what to write instead.

use std::fmt;
use std::path::PathBuf;

/// How bad a diagnostic is: an error refuses the file, a warning does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Severity {
    Error,
    Warning,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })
    }
}

/// What kind of finding a diagnostic is; independent of its severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DiagKind {
    /// The file is not TOML, or a field is unknown or of the wrong type.
    Parse,
    /// A value is out of range, missing, inconsistent, or a referenced file is unusable.
    Invalid,
    /// A configuration that would lock users out (e.g. the persistence cookie shadows the
    /// application's session cookie). An error unless `LoadOptions::force`, then a warning.
    Lockout,
    /// Advice: legal, but probably not what the operator meant. Always a warning.
    Lint,
}

/// One finding in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub kind: DiagKind,
    pub file: PathBuf,
    /// 1-based; 0 when unknown (e.g. the file could not be read at all).
    pub line: usize,
    /// Where in the configuration, as an operator names it, e.g.
    /// ``backend "moodle" server "moodle_app_1" `address` ``. Empty for the whole file.
    pub field: String,
    /// The mistake.
    pub message: String,
    /// What to write instead.
    pub fix: String,
}

impl Diagnostic {
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    /// `lb.toml:42: error: backend "moodle" server "s1" `address`: "localhost:80" is not an
    /// IP:port` then, on the next line, `    fix: ...`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}", self.line)?;
        }
        write!(f, ": {}: ", self.severity)?;
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        write!(f, "{}", self.message)?;
        if !self.fix.is_empty() {
            write!(f, "\n    fix: {}", self.fix)?;
        }
        Ok(())
    }
}

/// The 1-based line holding byte `offset` of `text`.
pub(crate) fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}
