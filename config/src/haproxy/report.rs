//! The import's report: one line per directive of the HAProxy file (carried, carried
//! with a change, fixed, not needed, not carried), then what `engine check` says of the
//! result, rendered grouped for standard error.

use std::fmt::Write as _;

use super::model::Directive;

/// What became of one directive (or what `engine check` found in the result).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ReportKind {
    /// A mistake of the original, fixed in the result.
    Fixed,
    /// Left out: the engine has no counterpart. `fix` says what to do instead.
    NotCarried,
    /// Carried, but the result differs in a way the operator should know.
    Changed,
    /// Left out because the engine does not need it (it does this itself, or systemd does).
    NotNeeded,
    /// Carried as it was.
    Carried,
    /// `engine check` refuses the result for this reason.
    Error,
    /// `engine check` warns about the result.
    Warning,
}

impl ReportKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ReportKind::Fixed => "fixed",
            ReportKind::NotCarried => "not carried",
            ReportKind::Changed => "changed",
            ReportKind::NotNeeded => "not needed",
            ReportKind::Carried => "carried",
            ReportKind::Error => "error",
            ReportKind::Warning => "warning",
        }
    }

    fn heading(self) -> &'static str {
        match self {
            ReportKind::Fixed => "mistakes of the original, fixed in the result",
            ReportKind::NotCarried => "not carried (what to do instead)",
            ReportKind::Changed => "carried with a change",
            ReportKind::NotNeeded => "not needed by the engine",
            ReportKind::Carried => "carried",
            ReportKind::Error => "engine check: errors (the result would not run)",
            ReportKind::Warning => "engine check: warnings",
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportLine {
    pub kind: ReportKind,
    /// The line of the HAProxy file (1-based); 0 for the file as a whole.
    pub line: usize,
    /// The directive as written (empty for the file as a whole).
    pub directive: String,
    /// What was done, or why not.
    pub message: String,
    /// The fix (for a mistake), what to do instead (not carried), or empty.
    pub fix: String,
    /// For `Error` and `Warning`: the line of the generated lb.toml (0 when none).
    pub toml_line: usize,
}

impl ReportLine {
    /// `FILE:LINE: KIND: `directive`: message`, and `    fix: ...` on the next line.
    pub fn render(&self, file: &str) -> String {
        let mut s = String::new();
        if matches!(self.kind, ReportKind::Error | ReportKind::Warning) {
            if self.toml_line > 0 {
                let _ = write!(s, "lb.toml:{}", self.toml_line);
            } else {
                s.push_str("lb.toml");
            }
            if self.line > 0 {
                let _ = write!(s, " (from {file}:{})", self.line);
            }
        } else if self.line > 0 {
            let _ = write!(s, "{file}:{}", self.line);
        } else {
            s.push_str(file);
        }
        let _ = write!(s, ": {}: ", self.kind.as_str());
        if !self.directive.is_empty() {
            let _ = write!(s, "`{}`: ", self.directive);
        }
        s.push_str(&self.message);
        if !self.fix.is_empty() {
            let label = if self.kind == ReportKind::NotCarried {
                "instead"
            } else {
                "fix"
            };
            let _ = write!(s, "\n    {label}: {}", self.fix);
        }
        s
    }
}

/// The report being written; directives reported twice (a defaults line seen by every
/// proxy) are kept once.
#[derive(Debug, Default)]
pub(crate) struct Reports {
    pub lines: Vec<ReportLine>,
    /// Each line of the HAProxy file as written, for reports made from a line number.
    pub raw: std::collections::HashMap<usize, String>,
}

impl Reports {
    /// A report about line `line` of the HAProxy file (0: the file as a whole).
    pub fn at_line(
        &mut self,
        kind: ReportKind,
        line: usize,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) {
        let d = Directive {
            no: line,
            words: Vec::new(),
            raw: self.raw.get(&line).cloned().unwrap_or_default(),
        };
        self.push(kind, (line > 0).then_some(&d), message, fix);
    }
    pub fn push(
        &mut self,
        kind: ReportKind,
        d: Option<&Directive>,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) {
        let mut fix = fix.into();
        if kind == ReportKind::NotCarried && fix.is_empty() {
            fix = "no counterpart in the engine: leave it out".to_owned();
        }
        let r = ReportLine {
            kind,
            line: d.map_or(0, |d| d.no),
            directive: d.map_or_else(String::new, |d| d.raw.clone()),
            message: message.into(),
            fix,
            toml_line: 0,
        };
        if !self.lines.contains(&r) {
            self.lines.push(r);
        }
    }
    pub fn carried(&mut self, d: &Directive, message: impl Into<String>) {
        self.push(ReportKind::Carried, Some(d), message, "");
    }
    pub fn changed(&mut self, d: &Directive, message: impl Into<String>) {
        self.push(ReportKind::Changed, Some(d), message, "");
    }
    pub fn fixed(&mut self, d: &Directive, message: impl Into<String>, fix: impl Into<String>) {
        self.push(ReportKind::Fixed, Some(d), message, fix);
    }
    pub fn not_needed(&mut self, d: &Directive, why: impl Into<String>) {
        self.push(ReportKind::NotNeeded, Some(d), why, "");
    }
    pub fn not_carried(
        &mut self,
        d: &Directive,
        why: impl Into<String>,
        instead: impl Into<String>,
    ) {
        self.push(ReportKind::NotCarried, Some(d), why, instead);
    }
    /// Whether some report already names this line.
    pub fn has_line(&self, line: usize) -> bool {
        self.lines.iter().any(|r| r.line == line)
    }
}

/// The whole report, grouped by kind (mistakes first), each group in file order, with a
/// closing summary line.
pub fn render(lines: &[ReportLine], file: &str, runnable: bool) -> String {
    let mut out = String::new();
    let kinds = [
        ReportKind::Fixed,
        ReportKind::NotCarried,
        ReportKind::Changed,
        ReportKind::NotNeeded,
        ReportKind::Carried,
        ReportKind::Error,
        ReportKind::Warning,
    ];
    for k in kinds {
        let mut group: Vec<&ReportLine> = lines.iter().filter(|r| r.kind == k).collect();
        if group.is_empty() {
            continue;
        }
        group.sort_by_key(|r| (r.line == 0 && r.toml_line == 0, r.line, r.toml_line));
        let _ = writeln!(out, "== {} ({}) ==", k.heading(), group.len());
        for r in group {
            out.push_str(&r.render(file));
            out.push('\n');
        }
        out.push('\n');
    }
    let count = |k: ReportKind| lines.iter().filter(|r| r.kind == k).count();
    let _ = write!(
        out,
        "{file}: {} carried, {} changed, {} fixed, {} not needed, {} not carried; ",
        count(ReportKind::Carried),
        count(ReportKind::Changed),
        count(ReportKind::Fixed),
        count(ReportKind::NotNeeded),
        count(ReportKind::NotCarried),
    );
    let w = count(ReportKind::Warning);
    if runnable {
        let _ = writeln!(
            out,
            "the result passes engine check ({w} warning{})",
            if w == 1 { "" } else { "s" }
        );
    } else {
        let e = count(ReportKind::Error);
        let _ = writeln!(
            out,
            "the result would not run: engine check refuses it ({e} error{})",
            if e == 1 { "" } else { "s" }
        );
    }
    out
}
