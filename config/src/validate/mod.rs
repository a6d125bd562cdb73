//! Validation: raw structs to `types`, collecting every error and warning. This file owns
//! the entry point ([`validate`]: the order of the sections, and the checks across them:
//! addresses bound twice, backends no frontend uses) and the shared context [`Ctx`] with
//! its helpers for diagnostics and for the kinds of field every section has (integers,
//! durations, paths, files, names).
//!
//! The sections, one file each:
//! - `global`: `[global]`.
//! - `limits`: `[limits]`.
//! - `log`: `[log]`.
//! - `timeouts`: the timeouts of `[defaults]`, taken over and overridden by each frontend
//!   and backend.
//! - `frontend`: `[[frontend]]`: its name, binds, `redirect_https`, the backend it names,
//!   `set_headers`.
//! - `tls`: a frontend's `tls` table and the PEM files it names.
//! - `addr`: IP:port as the operator writes it, and listening addresses bound twice
//!   (across frontends and the stats endpoint).
//! - `backend`: `[[backend]]`: its name, balance, app cookie, queue, waiting room.
//! - `errorfile`: a backend's `errorfile_503` (also used by the HAProxy import).
//! - `cookie`: `[backend.cookie]`, with its lockout lint (a persistence cookie named like
//!   the application's session cookie).
//! - `check`: `[backend.check]`.
//! - `server`: `[[backend.server]]`.

mod addr;
mod backend;
mod check;
mod cookie;
mod errorfile;
mod frontend;
mod global;
mod limits;
mod log;
mod server;
mod timeouts;
mod tls;

pub(crate) use addr::{parse_addr, parse_addr_opts};
pub(crate) use errorfile::normalise_errorfile;

use crate::diag::{line_of, DiagKind, Diagnostic, Severity};
use crate::duration::parse_duration;
use crate::perr::levenshtein;
use crate::raw::*;
use crate::types::*;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub(crate) const NOWHERE: Range<usize> = usize::MAX..usize::MAX;

pub(crate) struct Ctx<'a> {
    pub text: &'a str,
    pub file: PathBuf,
    pub base: PathBuf,
    pub force: bool,
    pub diags: Vec<Diagnostic>,
}

/// ``prefix `key` `` (or just `` `key` ``).
fn fld(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        format!("`{key}`")
    } else {
        format!("{prefix} `{key}`")
    }
}

fn is_tchar(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty() && s.chars().all(is_tchar)
}

/// RFC 6265 cookie-octet.
fn is_cookie_octet(c: char) -> bool {
    matches!(c as u32, 0x21 | 0x23..=0x2B | 0x2D..=0x3A | 0x3C..=0x5B | 0x5D..=0x7E)
}

fn quote_list(items: &[&str]) -> String {
    items
        .iter()
        .map(|i| format!("\"{i}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Ctx<'_> {
    fn line(&self, span: &Range<usize>) -> usize {
        if span.start == usize::MAX {
            0
        } else {
            line_of(self.text, span.start)
        }
    }

    fn push(
        &mut self,
        severity: Severity,
        kind: DiagKind,
        span: &Range<usize>,
        field: String,
        message: String,
        fix: String,
    ) {
        let line = self.line(span);
        self.diags.push(Diagnostic {
            severity,
            kind,
            file: self.file.clone(),
            line,
            field,
            message,
            fix,
        });
    }

    fn err(
        &mut self,
        span: &Range<usize>,
        field: String,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) {
        self.push(
            Severity::Error,
            DiagKind::Invalid,
            span,
            field,
            message.into(),
            fix.into(),
        );
    }

    fn warn(
        &mut self,
        span: &Range<usize>,
        field: String,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) {
        self.push(
            Severity::Warning,
            DiagKind::Lint,
            span,
            field,
            message.into(),
            fix.into(),
        );
    }

    fn lockout(
        &mut self,
        span: &Range<usize>,
        field: String,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) {
        let sev = if self.force {
            Severity::Warning
        } else {
            Severity::Error
        };
        let mut fix: String = fix.into();
        if !self.force {
            fix.push_str(" (or accept the risk with the force option, which makes this a warning)");
        }
        self.push(sev, DiagKind::Lockout, span, field, message.into(), fix);
    }

    fn resolve(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base.join(p)
        }
    }

    fn int(
        &mut self,
        v: &S<i64>,
        prefix: &str,
        key: &str,
        lo: i64,
        hi: i64,
        fix: &str,
    ) -> Option<i64> {
        let n = *v.get_ref();
        if n < lo || n > hi {
            let range = if hi == i64::from(u32::MAX) || hi == i64::MAX {
                format!("at least {lo}")
            } else {
                format!("between {lo} and {hi}")
            };
            self.err(
                &v.span(),
                fld(prefix, key),
                format!("{n} is out of range: it must be {range}"),
                fix.to_owned(),
            );
            None
        } else {
            Some(n)
        }
    }

    /// A duration field; `min` is the smallest accepted value.
    fn duration(
        &mut self,
        v: &S<Scalar>,
        prefix: &str,
        key: &str,
        example: &str,
    ) -> Option<Duration> {
        let span = v.span();
        match v.get_ref() {
            Scalar::Str(s) => match parse_duration(s) {
                Ok(d) if d.is_zero() => {
                    self.err(
                        &span,
                        fld(prefix, key),
                        format!("\"{s}\" is zero"),
                        format!("write a positive duration, e.g. {key} = \"{example}\""),
                    );
                    None
                }
                Ok(d) => Some(d),
                Err(e) => {
                    self.err(
                        &span,
                        fld(prefix, key),
                        format!("not a duration: {e}"),
                        format!("write {key} = \"{example}\" (units: ms, s, m, h)"),
                    );
                    None
                }
            },
            Scalar::Int(n) => {
                self.err(
                    &span,
                    fld(prefix, key),
                    format!("{n} has no unit"),
                    format!("write {key} = \"{n}s\" for seconds or \"{n}ms\" for milliseconds"),
                );
                None
            }
            Scalar::Float(f) => {
                self.err(
                    &span,
                    fld(prefix, key),
                    format!("{f} has no unit and is not in quotes"),
                    format!("write {key} = \"{f}s\""),
                );
                None
            }
            Scalar::Bool(b) => {
                self.err(
                    &span,
                    fld(prefix, key),
                    format!("{b} is not a duration"),
                    format!("write {key} = \"{example}\""),
                );
                None
            }
            Scalar::Other(what) => {
                self.err(
                    &span,
                    fld(prefix, key),
                    format!("{what} is not a duration"),
                    format!("write {key} = \"{example}\""),
                );
                None
            }
        }
    }

    fn nonempty(&mut self, v: &S<String>, prefix: &str, key: &str, fix: &str) -> Option<String> {
        let s = v.get_ref();
        if s.trim().is_empty() {
            self.err(&v.span(), fld(prefix, key), "is empty", fix.to_owned());
            None
        } else {
            Some(s.clone())
        }
    }

    /// A regular file of at most `limit` bytes read whole, or an error explaining why it
    /// cannot be.
    fn read_file(
        &mut self,
        v: &S<String>,
        (prefix, key): (&str, &str),
        what: &str,
        limit: u64,
    ) -> Option<(PathBuf, Vec<u8>)> {
        let raw = v.get_ref();
        if raw.trim().is_empty() {
            self.err(
                &v.span(),
                fld(prefix, key),
                "is empty",
                format!(
                    "write the path of {what}, relative to {}",
                    self.base.display()
                ),
            );
            return None;
        }
        let path = self.resolve(raw);
        match crate::files::read_bounded(&path, limit) {
            Ok(b) => Some((path, b)),
            Err(e) => {
                use crate::files::FileError;
                let fix = match &e {
                    FileError::NotFound(_) => format!("write the path of {what}; a relative path is relative to the folder of this file ({})", self.base.display()),
                    FileError::PermissionDenied(_) => "make the file readable by the user that runs the engine (chmod / chown)".to_owned(),
                    FileError::NotRegular { .. } => format!("write the path of {what} itself: a regular file, not a device, FIFO or folder"),
                    FileError::TooLarge { .. } => format!("{what} may be at most {limit} bytes: make it smaller"),
                    FileError::Io { .. } => format!("write the path of {what}"),
                };
                self.err(&v.span(), fld(prefix, key), e.to_string(), fix);
                None
            }
        }
    }
}

fn closest_name<'a>(name: &str, names: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    names
        .map(|n| {
            (
                levenshtein(&name.to_ascii_lowercase(), &n.to_ascii_lowercase()),
                n,
            )
        })
        .filter(|(d, n)| *d <= (n.len() / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, n)| n)
}

/// A name used in `backend/server` paths of the admin socket and in logs.
fn check_name(
    cx: &mut Ctx,
    v: &S<String>,
    prefix: &str,
    what: &str,
    example: &str,
) -> Option<String> {
    let s = v.get_ref();
    if s.is_empty() {
        cx.err(
            &v.span(),
            fld(prefix, "name"),
            "is empty",
            format!("write name = \"{example}\""),
        );
        return None;
    }
    if s.chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '/' || c == '"')
    {
        let clean: String = s
            .chars()
            .map(|c| {
                if c.is_whitespace() || c == '/' {
                    '_'
                } else {
                    c
                }
            })
            .filter(|c| !c.is_control() && *c != '"')
            .collect();
        cx.err(
            &v.span(),
            fld(prefix, "name"),
            format!("\"{s}\" contains a space, a slash, a quote or a control character; {what} names appear in logs and in the admin socket's B/S paths"),
            format!("write name = \"{clean}\""),
        );
        return None;
    }
    Some(s.clone())
}

/// `"kind \"name\""`, or `"kind #n"` for a section with no (or an empty) name.
fn section_label(kind: &str, name: Option<&S<String>>, index: usize) -> String {
    match name {
        Some(n) if !n.get_ref().is_empty() => format!("{kind} \"{}\"", n.get_ref()),
        _ => format!("{kind} #{}", index + 1),
    }
}

pub(crate) fn validate(raw: RawConfig, cx: &mut Ctx, source: &Path) -> Config {
    let global = global::validate_global(raw.global.as_ref().map(|g| g.get_ref()), cx);
    let mut limits = limits::validate_limits(raw.limits.as_ref().map(|l| l.get_ref()), cx);
    if raw
        .limits
        .as_ref()
        .is_none_or(|l| l.get_ref().pool_max_idle_per_server.is_none())
    {
        limits.pool_max_idle_per_server = global.maxconn as usize;
    }
    let defaults = match &raw.defaults {
        Some(d) => cx.timeouts(d.get_ref(), &Timeouts::default(), "defaults"),
        None => Timeouts::default(),
    };
    let log = log::validate_log(raw.log.as_ref().map(|l| l.get_ref()), cx);

    // Backends first: frontends refer to them.
    let backends = backend::validate_backends(&raw.backend, &defaults, cx);
    let mut binds = Vec::new();
    let (frontends, used) =
        frontend::validate_frontends(&raw, &defaults, &backends, &mut binds, cx);

    // Listening addresses: two binds on the same address cannot both be taken.
    addr::check_bind_overlaps(&binds, cx);
    addr::check_stats_overlap(&global, raw.global.as_ref(), &binds, cx);
    warn_unused_backends(&backends, &used, cx);

    Config {
        source: source.to_path_buf(),
        global,
        limits,
        log,
        frontends,
        backends: backends.backends,
    }
}

/// A warning for each backend no frontend points at (`used` is indexed like the backends).
fn warn_unused_backends(set: &backend::BackendSet, used: &[bool], cx: &mut Ctx) {
    for (i, (span, label)) in set.spans.iter().enumerate() {
        if !used[i] {
            let name = set.backends[i].name.clone();
            cx.warn(
                span,
                label.clone(),
                "no frontend uses this backend",
                format!("point a frontend at it (backend = \"{name}\") or remove it"),
            );
        }
    }
}
