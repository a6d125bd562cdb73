//! Validation: raw structs to `types`, collecting every error and warning.

use crate::diag::{line_of, DiagKind, Diagnostic, Severity};
use crate::duration::{fmt_duration, parse_duration};
use crate::perr::levenshtein;
use crate::raw::*;
use crate::types::*;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
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

    fn timeouts(&mut self, r: &RawTimeouts, base: &Timeouts, prefix: &str) -> Timeouts {
        let mut t = *base;
        let fields: [(&Option<S<Scalar>>, &str, &mut Duration, &str); 6] = [
            (&r.timeout_connect, "timeout_connect", &mut t.connect, "5s"),
            (&r.timeout_client, "timeout_client", &mut t.client, "50s"),
            (&r.timeout_server, "timeout_server", &mut t.server, "50s"),
            (
                &r.timeout_http_request,
                "timeout_http_request",
                &mut t.http_request,
                "10s",
            ),
            (
                &r.timeout_keep_alive,
                "timeout_keep_alive",
                &mut t.keep_alive,
                "10s",
            ),
            (&r.timeout_queue, "timeout_queue", &mut t.queue, "30s"),
        ];
        for (v, key, slot, ex) in fields {
            if let Some(d) = v.as_ref().and_then(|v| self.duration(v, prefix, key, ex)) {
                *slot = d;
            }
        }
        if let Some(v) = &r.retries {
            if let Some(n) = self.int(
                v,
                prefix,
                "retries",
                0,
                100,
                "write retries = 3 (connect attempts after the first)",
            ) {
                t.retries = n as u32;
            }
        }
        t
    }
}

/// Parses an "ip:port" the operator wrote; on failure (message, fix).
pub(crate) fn parse_addr(s: &str, default_port: u16) -> Result<SocketAddr, (String, String)> {
    parse_addr_opts(s, default_port, false)
}

/// Like [`parse_addr`]; `listen`: port 0 is allowed (the system picks a free port, which
/// every core then shares; for tests and tools).
pub(crate) fn parse_addr_opts(
    s: &str,
    default_port: u16,
    listen: bool,
) -> Result<SocketAddr, (String, String)> {
    let t = s.trim();
    if let Ok(a) = t.parse::<SocketAddr>() {
        if a.port() == 0 && !listen {
            return Err((
                format!("\"{s}\" has port 0"),
                format!(
                    "write the real port, e.g. \"{}\"",
                    SocketAddr::new(a.ip(), default_port)
                ),
            ));
        }
        return Ok(a);
    }
    if let Ok(ip) = t.parse::<IpAddr>() {
        let a = SocketAddr::new(ip, default_port);
        return Err((
            format!("\"{s}\" has no port"),
            format!("write an IP:port such as \"{a}\""),
        ));
    }
    if let Ok(port) = t.parse::<u16>() {
        return Err((
            format!("\"{s}\" is a port without an address"),
            format!("write \"0.0.0.0:{port}\" for every IPv4 address or \"127.0.0.1:{port}\" for loopback only"),
        ));
    }
    let (host, port) = match t.rsplit_once(':') {
        Some((h, p)) => (h, p),
        None => {
            return Err((
                format!("\"{s}\" is not an IP:port"),
                format!(
                "write an address such as \"127.0.0.1:{default_port}\" (names are not resolved)"
            ),
            ))
        }
    };
    let port_txt = if port.parse::<u16>().is_ok() {
        port.to_owned()
    } else {
        default_port.to_string()
    };
    let (msg, fix) = match host {
        "*" | "" => (
            format!("\"{s}\" is not an IP:port (\"{host}\" is HAProxy's wildcard)"),
            format!("write \"0.0.0.0:{port_txt}\" for every IPv4 address, or \"[::]:{port_txt}\" for IPv6"),
        ),
        h if h.eq_ignore_ascii_case("localhost") => (
            format!("\"{s}\" is not an IP:port (names are not resolved)"),
            format!("write \"127.0.0.1:{port_txt}\""),
        ),
        h if h.contains(':') && !h.starts_with('[') => (
            format!("\"{s}\" is not an IP:port (an IPv6 address needs brackets)"),
            format!("write \"[{h}]:{port_txt}\""),
        ),
        _ => (
            format!("\"{s}\" is not an IP:port (names are not resolved)"),
            format!("write the server's IP address, e.g. \"127.0.0.1:{port_txt}\""),
        ),
    };
    Err((msg, fix))
}

/// Two listening addresses that cannot both be bound (same port, one is the wildcard).
fn overlaps(a: &SocketAddr, b: &SocketAddr) -> bool {
    if a.port() == 0 || b.port() == 0 {
        // Port 0: each bind gets a port of its own.
        return false;
    }
    a == b
        || (a.port() == b.port()
            && a.is_ipv4() == b.is_ipv4()
            && (a.ip().is_unspecified() || b.ip().is_unspecified()))
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

pub(crate) fn validate(raw: RawConfig, cx: &mut Ctx, source: &Path) -> Config {
    let global = validate_global(raw.global.as_ref().map(|g| g.get_ref()), cx);
    let mut limits = validate_limits(raw.limits.as_ref().map(|l| l.get_ref()), cx);
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
    let log = validate_log(raw.log.as_ref().map(|l| l.get_ref()), cx);

    // Backends first: frontends refer to them.
    let mut backends = Vec::new();
    let mut backend_index: HashMap<String, usize> = HashMap::new();
    let mut backend_spans = Vec::new();
    for (i, b) in raw.backend.iter().enumerate() {
        let label = match b.get_ref().name.as_ref() {
            Some(n) if !n.get_ref().is_empty() => format!("backend \"{}\"", n.get_ref()),
            _ => format!("backend #{}", i + 1),
        };
        let span = b
            .get_ref()
            .name
            .as_ref()
            .map_or_else(|| b.span(), |n| n.span());
        let be = validate_backend(b, &label, &defaults, cx);
        if let Some(name) = b
            .get_ref()
            .name
            .as_ref()
            .map(|n| n.get_ref().clone())
            .filter(|n| !n.is_empty())
        {
            if let std::collections::hash_map::Entry::Vacant(e) = backend_index.entry(name.clone())
            {
                e.insert(i);
            } else {
                cx.err(
                    &span,
                    fld(&label, "name"),
                    format!("a second backend is named \"{name}\""),
                    "give each backend its own name",
                );
            }
        }
        backends.push(be);
        backend_spans.push((span, label));
    }

    let mut frontends = Vec::new();
    let mut frontend_names: HashMap<String, ()> = HashMap::new();
    let mut binds: Vec<(SocketAddr, usize, String, Range<usize>)> = Vec::new();
    let mut used = vec![false; backends.len()];
    for (i, f) in raw.frontend.iter().enumerate() {
        let rf = f.get_ref();
        let label = match rf.name.as_ref() {
            Some(n) if !n.get_ref().is_empty() => format!("frontend \"{}\"", n.get_ref()),
            _ => format!("frontend #{}", i + 1),
        };
        match &rf.name {
            None => cx.err(
                &f.span(),
                fld(&label, "name"),
                "a frontend needs a name",
                "write name = \"http\" (any name, unique among frontends)",
            ),
            Some(n) if n.get_ref().trim().is_empty() => cx.err(
                &n.span(),
                fld(&label, "name"),
                "is empty",
                "write name = \"http\" (any name, unique among frontends)",
            ),
            Some(n) => {
                if frontend_names.insert(n.get_ref().clone(), ()).is_some() {
                    cx.err(
                        &n.span(),
                        fld(&label, "name"),
                        format!("a second frontend is named \"{}\"", n.get_ref()),
                        "give each frontend its own name",
                    );
                }
            }
        }
        let fe = validate_frontend(
            f,
            &label,
            &defaults,
            &backend_index,
            &raw.backend,
            &mut binds,
            i,
            cx,
        );
        if let Some(b) = fe.backend {
            used[b] = true;
        }
        frontends.push(fe);
    }
    if raw.frontend.is_empty() {
        cx.err(
            &NOWHERE,
            "frontend".into(),
            "there is no [[frontend]]: the engine would listen on nothing",
            "add a [[frontend]] with name = \"http\", bind = [\"0.0.0.0:80\"] and backend = \"<a backend's name>\"",
        );
    }

    // Listening addresses: two binds on the same address cannot both be taken.
    for i in 0..binds.len() {
        for j in 0..i {
            let (a, ia, fa, sa) = &binds[i];
            let (b, ib, fb, _) = &binds[j];
            if overlaps(a, b) {
                let how = if a == b {
                    "is also bound".to_owned()
                } else {
                    format!("overlaps {b}, bound")
                };
                let by = if ia == ib {
                    "by this same frontend".to_owned()
                } else {
                    format!("by {fb}")
                };
                cx.err(
                    &sa.clone(),
                    fld(fa, "bind"),
                    format!("{a} {how} {by}"),
                    "each address may be bound once: remove one, or use another port",
                );
                break;
            }
        }
    }
    if let (Some(stats), Some(g)) = (global.stats, raw.global.as_ref()) {
        if let Some((b, _, f, _)) = binds.iter().find(|(b, _, _, _)| overlaps(b, &stats)) {
            let span = g.get_ref().stats.as_ref().map_or(NOWHERE, |s| s.span());
            cx.err(
                &span,
                fld("global", "stats"),
                format!("{stats} is also bound by {f} ({b})"),
                "give the stats endpoint a port of its own, e.g. \"127.0.0.1:8404\"",
            );
        }
    }

    for (i, (span, label)) in backend_spans.iter().enumerate() {
        if !used[i] {
            let name = backends[i].name.clone();
            cx.warn(
                span,
                label.clone(),
                "no frontend uses this backend",
                format!("point a frontend at it (backend = \"{name}\") or remove it"),
            );
        }
    }

    Config {
        source: source.to_path_buf(),
        global,
        limits,
        log,
        frontends,
        backends,
    }
}

fn validate_global(g: Option<&RawGlobal>, cx: &mut Ctx) -> Global {
    let mut out = Global {
        maxconn: 20000,
        admin_socket: None,
        stats: None,
        user: None,
        group: None,
    };
    let Some(g) = g else { return out };
    if let Some(v) = &g.maxconn {
        if let Some(n) = cx.int(
            v,
            "global",
            "maxconn",
            1,
            i64::from(u32::MAX),
            "write maxconn = 20000 (client connections held at once)",
        ) {
            out.maxconn = n as u32;
        }
    }
    if let Some(v) = &g.admin_socket {
        out.admin_socket = cx
            .nonempty(
                v,
                "global",
                "admin_socket",
                "write admin_socket = \"/run/engine-admin.sock\", or leave it out",
            )
            .map(|s| cx.resolve(&s));
    }
    if let Some(v) = &g.stats {
        match parse_addr_opts(v.get_ref(), 8404, true) {
            Ok(a) => out.stats = Some(a),
            Err((m, f)) => cx.err(&v.span(), fld("global", "stats"), m, f),
        }
    }
    if let Some(v) = &g.user {
        out.user = cx.nonempty(
            v,
            "global",
            "user",
            "write user = \"engine\", or leave it out",
        );
    }
    if let Some(v) = &g.group {
        out.group = cx.nonempty(
            v,
            "global",
            "group",
            "write group = \"engine\", or leave it out",
        );
    }
    out
}

fn validate_limits(l: Option<&RawLimits>, cx: &mut Ctx) -> Limits {
    let mut out = Limits::default();
    let Some(l) = l else { return out };
    let p = "limits";
    if let Some(v) = &l.max_head_bytes {
        if let Some(n) = cx.int(
            v,
            p,
            "max_head_bytes",
            1024,
            1 << 20,
            "write max_head_bytes = 16384 (1024 to 1048576)",
        ) {
            out.max_head_bytes = n as usize;
        }
    }
    if let Some(v) = &l.max_target_bytes {
        if let Some(n) = cx.int(
            v,
            p,
            "max_target_bytes",
            1,
            1 << 20,
            "write max_target_bytes = 8192",
        ) {
            if n as usize > out.max_head_bytes {
                cx.err(
                    &v.span(),
                    fld(p, "max_target_bytes"),
                    format!(
                        "{n} is more than max_head_bytes ({}): the target is part of the head",
                        out.max_head_bytes
                    ),
                    format!(
                        "write max_target_bytes = {} or less, or raise max_head_bytes",
                        out.max_head_bytes
                    ),
                );
            } else {
                out.max_target_bytes = n as usize;
            }
        }
    } else if out.max_target_bytes > out.max_head_bytes {
        out.max_target_bytes = out.max_head_bytes;
    }
    if let Some(v) = &l.max_headers {
        if let Some(n) = cx.int(
            v,
            p,
            "max_headers",
            8,
            1000,
            "write max_headers = 100 (8 to 1000)",
        ) {
            out.max_headers = n as usize;
        }
    }
    if let Some(v) = &l.max_body_bytes {
        if let Some(n) = cx.int(
            v,
            p,
            "max_body_bytes",
            0,
            i64::MAX,
            "write max_body_bytes = 1073741824, or 0 for no limit",
        ) {
            out.max_body_bytes = n as u64;
        }
    }
    if let Some(v) = &l.pool_max_idle_per_server {
        if let Some(n) = cx.int(
            v,
            p,
            "pool_max_idle_per_server",
            0,
            i64::from(u32::MAX),
            "write pool_max_idle_per_server = 1000, or leave it out to keep as many as maxconn (0 disables pooling)",
        ) {
            out.pool_max_idle_per_server = n as usize;
        }
    }
    if let Some(v) = &l.pool_idle_timeout {
        if let Some(d) = cx.duration(v, p, "pool_idle_timeout", "30s") {
            out.pool_idle_timeout = d;
        }
    }
    if let Some(v) = &l.drop_underscore_headers {
        out.drop_underscore_headers = *v.get_ref();
    }
    out
}

fn validate_log(l: Option<&RawLog>, cx: &mut Ctx) -> Log {
    let mut out = Log::default();
    let Some(l) = l else { return out };
    if let Some(v) = &l.access {
        let s = v.get_ref().as_str();
        out.access = match s {
            "stdout" => LogTarget::Stdout,
            "syslog" => LogTarget::Syslog,
            "off" => LogTarget::Off,
            "" => {
                cx.err(
                    &v.span(),
                    fld("log", "access"),
                    "is empty",
                    "write access = \"stdout\", \"syslog\", \"off\" or a file path",
                );
                LogTarget::Stdout
            }
            "stderr" | "STDOUT" | "Stdout" | "none" | "false" | "no" => {
                cx.err(
                    &v.span(),
                    fld("log", "access"),
                    format!("\"{s}\" is not a log target (and would be taken as a file name)"),
                    "write access = \"stdout\", \"syslog\", \"off\" or a file path such as \"/var/log/engine/access.log\" (for a file of that name, write \"./stderr\")",
                );
                LogTarget::Stdout
            }
            _ => {
                let p = cx.resolve(s);
                if let Some(dir) = p.parent() {
                    if !dir.as_os_str().is_empty() && !dir.is_dir() {
                        cx.warn(
                            &v.span(),
                            fld("log", "access"),
                            format!("the folder {} does not exist (yet): the access log cannot be opened there", dir.display()),
                            format!("create {} or write another path", dir.display()),
                        );
                    }
                }
                LogTarget::File(p)
            }
        };
    }
    if let Some(v) = &l.format {
        match v.get_ref().as_str() {
            "httplog" => out.format = LogFormat::Httplog,
            "json" => out.format = LogFormat::Json,
            s => cx.err(
                &v.span(),
                fld("log", "format"),
                format!("\"{s}\" is not a log format"),
                "write format = \"httplog\" or format = \"json\"",
            ),
        }
    }
    if let Some(v) = &l.dontlognull {
        out.dontlognull = *v.get_ref();
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn validate_frontend(
    f: &S<RawFrontend>,
    label: &str,
    defaults: &Timeouts,
    backend_index: &HashMap<String, usize>,
    raw_backends: &[S<RawBackend>],
    binds: &mut Vec<(SocketAddr, usize, String, Range<usize>)>,
    index: usize,
    cx: &mut Ctx,
) -> Frontend {
    let rf = f.get_ref();
    let name = rf
        .name
        .as_ref()
        .map(|n| n.get_ref().clone())
        .unwrap_or_default();
    let head = rf.name.as_ref().map_or_else(|| f.span(), |n| n.span());

    let mut bind = Vec::new();
    match &rf.bind {
        None => cx.err(
            &head,
            fld(label, "bind"),
            "a frontend needs at least one address to listen on",
            "write bind = [\"0.0.0.0:80\"]",
        ),
        Some(b) if b.get_ref().is_empty() => cx.err(
            &b.span(),
            fld(label, "bind"),
            "is an empty list",
            "write bind = [\"0.0.0.0:80\"]",
        ),
        Some(b) => {
            let default_port = if rf.tls.is_some() { 443 } else { 80 };
            for a in b.get_ref() {
                match parse_addr_opts(a.get_ref(), default_port, true) {
                    Ok(addr) => {
                        bind.push(addr);
                        binds.push((addr, index, label.to_owned(), a.span()));
                    }
                    Err((m, fx)) => cx.err(&a.span(), fld(label, "bind"), m, fx),
                }
            }
        }
    }

    let mut redirect = None;
    if let Some(r) = &rf.redirect_https {
        let rr = r.get_ref();
        let mut code = 301u16;
        if let Some(c) = &rr.code {
            let n = *c.get_ref();
            if [301, 302, 303, 307, 308].contains(&n) {
                code = n as u16;
            } else {
                cx.err(
                    &c.span(),
                    format!("{label} redirect_https `code`"),
                    format!("{n} is not a redirect status"),
                    "write code = 301 (or 302, 303, 307, 308)",
                );
            }
        }
        let mut except = Vec::new();
        for p in rr.except_prefixes.iter().flatten() {
            let s = p.get_ref();
            if !s.starts_with('/') {
                cx.err(
                    &p.span(),
                    format!("{label} redirect_https `except_prefixes`"),
                    format!("\"{s}\" does not start with \"/\": it would match no request path"),
                    format!("write \"/{}\"", s.trim_start_matches('/')),
                );
            } else {
                except.push(s.clone());
            }
        }
        let port = rr
            .port
            .as_ref()
            .and_then(|v| {
                cx.int(
                    v,
                    label,
                    "redirect_https.port",
                    1,
                    65535,
                    "write port = 443 (the port of the HTTPS frontend that clients reach)",
                )
            })
            .map(|p| p as u16);
        redirect = Some(RedirectHttps {
            code,
            except_prefixes: except,
            port,
        });
    }
    let every_request_redirected = rf.redirect_https.as_ref().is_some_and(|r| {
        r.get_ref()
            .except_prefixes
            .as_ref()
            .is_none_or(|e| e.is_empty())
    });

    let mut backend = None;
    match &rf.backend {
        Some(b) => {
            let bn = b.get_ref();
            match backend_index.get(bn) {
                Some(&i) => backend = Some(i),
                None => {
                    let names: Vec<&str> = raw_backends
                        .iter()
                        .filter_map(|rb| rb.get_ref().name.as_ref().map(|n| n.get_ref().as_str()))
                        .collect();
                    let fix = if names.is_empty() {
                        format!("define it: [[backend]] with name = \"{bn}\" and its [[backend.server]] tables")
                    } else if let Some(c) = closest_name(bn, names.iter().copied()) {
                        format!(
                            "did you mean backend = \"{c}\"? the backends are: {}",
                            quote_list(&names)
                        )
                    } else {
                        format!(
                            "write one of {}, or define a [[backend]] named \"{bn}\"",
                            quote_list(&names)
                        )
                    };
                    cx.err(
                        &b.span(),
                        fld(label, "backend"),
                        format!("no backend is named \"{bn}\""),
                        fix,
                    );
                }
            }
        }
        None if every_request_redirected => {}
        None => {
            let first = raw_backends
                .first()
                .and_then(|b| b.get_ref().name.as_ref())
                .map_or("moodle".to_owned(), |n| n.get_ref().clone());
            let msg = if rf.redirect_https.is_some() {
                "requests under except_prefixes go to the backend, but this frontend has none"
            } else {
                "a frontend needs a backend (unless redirect_https redirects every request)"
            };
            cx.err(
                &head,
                fld(label, "backend"),
                msg,
                format!("write backend = \"{first}\""),
            );
        }
    }

    let tls = rf.tls.as_ref().map(|t| validate_tls(t, label, cx));
    if let (Some(_), Some(r)) = (&rf.tls, &rf.redirect_https) {
        cx.warn(
            &r.span(),
            fld(label, "redirect_https"),
            "this frontend terminates TLS and also redirects to HTTPS: clients already on HTTPS are redirected to HTTPS again",
            "put redirect_https on the plain-HTTP frontend only, and remove it here",
        );
    }

    let mut set_headers: Vec<(String, String)> = Vec::new();
    if let Some(h) = &rf.set_headers {
        let p = format!("{label} set_headers");
        for (k, v) in &h.get_ref().0 {
            let name = k.get_ref();
            let mut ok = true;
            if !is_token(name) {
                let clean: String = name.chars().filter(|c| is_tchar(*c)).collect();
                cx.err(&k.span(), fld(&p, name), format!("\"{name}\" is not a valid header name (letters, digits and !#$%&'*+-.^_`|~ only)"), format!("write \"{}\"", if clean.is_empty() { "X-Example" } else { &clean }));
                ok = false;
            } else if name.eq_ignore_ascii_case("content-length")
                || name.eq_ignore_ascii_case("transfer-encoding")
            {
                cx.err(
                    &k.span(),
                    fld(&p, name),
                    format!("{name} frames the request body and cannot be set"),
                    "remove it",
                );
                ok = false;
            } else if set_headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case(name))
            {
                cx.err(
                    &k.span(),
                    fld(&p, name),
                    format!("\"{name}\" is set twice (header names ignore case)"),
                    "keep one of them",
                );
                ok = false;
            }
            let value = match v.get_ref() {
                Scalar::Str(s) => {
                    if s.contains(['\r', '\n', '\0']) {
                        cx.err(&v.span(), fld(&p, name), "the value contains a line break or a NUL byte, which would split the request", "write the value on one line");
                        ok = false;
                    }
                    s.clone()
                }
                Scalar::Int(n) => {
                    cx.err(
                        &v.span(),
                        fld(&p, name),
                        format!("{n} is not in quotes"),
                        format!("write \"{name}\" = \"{n}\""),
                    );
                    ok = false;
                    String::new()
                }
                other => {
                    let shown = match other {
                        Scalar::Float(f) => f.to_string(),
                        Scalar::Bool(b) => b.to_string(),
                        Scalar::Other(w) => (*w).to_owned(),
                        _ => String::new(),
                    };
                    cx.err(
                        &v.span(),
                        fld(&p, name),
                        format!("{shown} is not a quoted string"),
                        format!("write \"{name}\" = \"value\""),
                    );
                    ok = false;
                    String::new()
                }
            };
            if ok {
                set_headers.push((name.clone(), value));
            }
        }
    }

    let timeouts = cx.timeouts(&rf.timeouts(), defaults, label);
    Frontend {
        name,
        bind,
        backend,
        redirect_https: redirect,
        tls,
        set_headers,
        forwarded_for: rf.forwarded_for.as_ref().is_none_or(|v| *v.get_ref()),
        timeouts,
    }
}

fn validate_tls(t: &S<RawTls>, label: &str, cx: &mut Ctx) -> Tls {
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
                let span = item.span();
                match item.get_ref() {
                    toml::Value::String(s) => {
                        if let Some(path) = check_pem(cx, s, &span, &p, PemWant::Combined) {
                            certs.push(CertSource::Combined(path));
                        }
                    }
                    toml::Value::Table(tb) => {
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
                                cx.err(&span, fld(&p, "certs"), format!("unknown field `{k}` in a certificate entry"), format!("{hint}an entry is \"file.pem\" or {{ cert = \"chain.pem\", key = \"key.pem\" }}"));
                                ok = false;
                            }
                        }
                        let cert = tb.get("cert").and_then(|v| v.as_str());
                        let key = tb.get("key").and_then(|v| v.as_str());
                        match (cert, key) {
                            (Some(c), Some(k)) if ok => {
                                let cp = check_pem(cx, c, &span, &p, PemWant::Cert);
                                let kp = check_pem(cx, k, &span, &p, PemWant::Key);
                                if let (Some(cert), Some(key)) = (cp, kp) {
                                    certs.push(CertSource::Separate { cert, key });
                                }
                            }
                            _ if !ok => {}
                            _ => cx.err(&span, fld(&p, "certs"), "a certificate entry in a table needs both `cert` and `key` as strings", "write { cert = \"chain.pem\", key = \"key.pem\" }, or \"combined.pem\" for one file holding both"),
                        }
                    }
                    other => cx.err(
                        &span,
                        fld(&p, "certs"),
                        format!("{} is not a certificate file", other.type_str()),
                        "write \"certs/moodle.pem\" or { cert = \"chain.pem\", key = \"key.pem\" }",
                    ),
                }
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

fn validate_backend(b: &S<RawBackend>, label: &str, defaults: &Timeouts, cx: &mut Ctx) -> Backend {
    let rb = b.get_ref();
    let head = rb.name.as_ref().map_or_else(|| b.span(), |n| n.span());
    let name = match &rb.name {
        None => {
            cx.err(
                &head,
                fld(label, "name"),
                "a backend needs a name",
                "write name = \"moodle\" (frontends refer to it by this name)",
            );
            String::new()
        }
        Some(n) => check_name(cx, n, label, "backend", "moodle").unwrap_or_default(),
    };

    let balance = match rb.balance.as_ref() {
        None => Balance::RoundRobin,
        Some(v) => match v.get_ref().as_str() {
            "roundrobin" => Balance::RoundRobin,
            "leastconn" => Balance::LeastConn,
            s => {
                let fix = match s.to_ascii_lowercase().replace(['_', '-', ' '], "").as_str() {
                    "roundrobin" | "rr" => "write balance = \"roundrobin\"",
                    "leastconn" | "leastconnections" | "leastconnection" => {
                        "write balance = \"leastconn\""
                    }
                    _ => "write balance = \"roundrobin\" or balance = \"leastconn\"",
                };
                cx.err(
                    &v.span(),
                    fld(label, "balance"),
                    format!("\"{s}\" is not a balancing algorithm"),
                    fix,
                );
                Balance::RoundRobin
            }
        },
    };

    let errorfile_503 = rb.errorfile_503.as_ref().and_then(|v| {
        let (path, bytes) = cx.read_file(
            v,
            (label, "errorfile_503"),
            "a raw HTTP response file",
            crate::files::PAGE_LIMIT,
        )?;
        match normalise_errorfile(&bytes) {
            Ok(bytes) => Some(LoadedFile { path, bytes }),
            Err((m, f)) => {
                cx.err(
                    &v.span(),
                    fld(label, "errorfile_503"),
                    format!("{}: {m}", path.display()),
                    f,
                );
                None
            }
        }
    });

    let app_cookie = match &rb.app_cookie {
        None => "MoodleSession".to_owned(),
        Some(v) => {
            if is_token(v.get_ref()) {
                v.get_ref().clone()
            } else {
                cx.err(
                    &v.span(),
                    fld(label, "app_cookie"),
                    format!("\"{}\" is not a cookie name", v.get_ref()),
                    "write app_cookie = \"MoodleSession\" (the application's session cookie)",
                );
                "MoodleSession".to_owned()
            }
        }
    };

    let cookie = rb
        .cookie
        .as_ref()
        .and_then(|c| validate_cookie(c, label, &app_cookie, cx));

    let max_queue = rb
        .max_queue
        .as_ref()
        .and_then(|v| {
            cx.int(
                v,
                label,
                "max_queue",
                0,
                i64::from(u32::MAX),
                "write max_queue = 1000 (requests waiting in this backend)",
            )
        })
        .map(|n| n as u32);

    let waiting_room = rb.waiting_room.as_ref().and_then(|v| {
        let (path, bytes) = cx.read_file(
            v,
            (label, "waiting_room"),
            "an HTML page",
            crate::files::PAGE_LIMIT,
        )?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            cx.err(
                &v.span(),
                fld(label, "waiting_room"),
                format!("{} is empty", path.display()),
                "write an HTML page into it, or remove waiting_room to use the built-in page",
            );
            return None;
        }
        Some(LoadedFile { path, bytes })
    });
    if let (Some(w), None) = (&rb.waiting_room, &rb.max_queue) {
        cx.warn(
            &w.span(),
            fld(label, "waiting_room"),
            "without max_queue the waiting room is never shown",
            "add max_queue = 1000 (the number of waiting requests past which it is shown)",
        );
    }

    let check = rb.check.as_ref().and_then(|c| validate_check(c, label, cx));

    let mut servers: Vec<Server> = Vec::new();
    let mut server_spans: Vec<Range<usize>> = Vec::new();
    let prefix_mode = cookie
        .as_ref()
        .is_some_and(|c| c.mode == CookieMode::Prefix);
    for (i, s) in rb.server.iter().enumerate() {
        let rs = s.get_ref();
        let slabel = match rs.name.as_ref() {
            Some(n) if !n.get_ref().is_empty() => format!("{label} server \"{}\"", n.get_ref()),
            _ => format!("{label} server #{}", i + 1),
        };
        let shead = rs.name.as_ref().map_or_else(|| s.span(), |n| n.span());
        let sname = match &rs.name {
            None => {
                cx.err(
                    &shead,
                    fld(&slabel, "name"),
                    "a server needs a name",
                    format!(
                        "write name = \"{}_{}\"",
                        if name.is_empty() { "app" } else { &name },
                        i + 1
                    ),
                );
                None
            }
            Some(n) => check_name(cx, n, &slabel, "server", "moodle_app_1"),
        };
        if let (Some(n), Some(rn)) = (&sname, &rs.name) {
            if servers.iter().any(|o| &o.name == n) {
                cx.err(
                    &rn.span(),
                    fld(&slabel, "name"),
                    format!("a second server in this backend is named \"{n}\""),
                    "give each server of a backend its own name",
                );
            }
        }
        let address = match &rs.address {
            None => {
                cx.err(
                    &shead,
                    fld(&slabel, "address"),
                    "a server needs an address",
                    "write address = \"127.0.0.1:9101\"",
                );
                None
            }
            Some(a) => match parse_addr(a.get_ref(), 80) {
                Ok(addr) => {
                    if addr.ip().is_unspecified() {
                        cx.err(
                            &a.span(),
                            fld(&slabel, "address"),
                            format!("{addr} is a wildcard: the engine cannot connect to it"),
                            format!(
                                "write the server's own address, e.g. \"127.0.0.1:{}\"",
                                addr.port()
                            ),
                        );
                        None
                    } else {
                        if let Some(o) = servers.iter().find(|o| o.address == addr) {
                            cx.warn(&a.span(), fld(&slabel, "address"), format!("{addr} is also the address of server \"{}\": one origin counted twice", o.name), "give each server its own address, or raise its weight instead");
                        }
                        Some(addr)
                    }
                }
                Err((m, f)) => {
                    cx.err(&a.span(), fld(&slabel, "address"), m, f);
                    None
                }
            },
        };
        let scookie = match &rs.cookie {
            None => sname.clone().unwrap_or_default(),
            Some(c) => {
                let v = c.get_ref();
                if v.is_empty() {
                    cx.err(
                        &c.span(),
                        fld(&slabel, "cookie"),
                        "is empty",
                        "write cookie = \"s1\", or leave it out to use the server's name",
                    );
                } else if !v.chars().all(is_cookie_octet) {
                    cx.err(&c.span(), fld(&slabel, "cookie"), format!("\"{v}\" holds a character a cookie value cannot (space, quote, comma, semicolon, backslash)"), "write letters, digits, '_' or '-', e.g. cookie = \"s1\"");
                }
                v.clone()
            }
        };
        if prefix_mode && scookie.contains('~') {
            let span = rs.cookie.as_ref().map_or(shead.clone(), |c| c.span());
            cx.err(
                &span,
                fld(&slabel, "cookie"),
                format!("\"{scookie}\" contains '~', the separator of prefix mode"),
                format!("write cookie = \"{}\"", scookie.replace('~', "_")),
            );
        }
        if !scookie.is_empty() {
            if let Some(o) = servers.iter().find(|o| o.cookie == scookie) {
                let span = rs.cookie.as_ref().map_or(shead.clone(), |c| c.span());
                cx.err(&span, fld(&slabel, "cookie"), format!("server \"{}\" already has the cookie value \"{scookie}\": clients could not stick to one of them", o.name), "give each server of a backend its own cookie value, e.g. cookie = \"s2\"");
            }
        }
        let weight = match &rs.weight {
            None => 1,
            Some(w) if *w.get_ref() == 0 => {
                cx.err(
                    &w.span(),
                    fld(&slabel, "weight"),
                    "weight 0 is not accepted in the file",
                    format!(
                        "to stop sending new clients to it, leave weight out here and use `set weight {}/{} 0` on the admin socket at runtime; to take it out for good, remove the server",
                        name,
                        sname.as_deref().unwrap_or("SERVER")
                    ),
                );
                1
            }
            Some(w) => cx
                .int(
                    w,
                    &slabel,
                    "weight",
                    1,
                    256,
                    "write weight = 1 (1 to 256; relative to the other servers)",
                )
                .unwrap_or(1) as u32,
        };
        let maxconn = rs
            .maxconn
            .as_ref()
            .and_then(|v| {
                cx.int(
                    v,
                    &slabel,
                    "maxconn",
                    0,
                    i64::from(u32::MAX),
                    "write maxconn = 100, or 0 for no limit",
                )
            })
            .unwrap_or(0) as u32;
        servers.push(Server {
            name: sname.unwrap_or_default(),
            address: address.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0))),
            cookie: scookie,
            weight,
            maxconn,
            backup: rs.backup.as_ref().is_some_and(|v| *v.get_ref()),
            check: rs.check.as_ref().is_none_or(|v| *v.get_ref()),
        });
        server_spans.push(shead);
    }
    if rb.server.is_empty() {
        cx.err(
            &head,
            fld(label, "server"),
            "a backend needs at least one server",
            "add a [[backend.server]] table below it with name = \"moodle_app_1\" and address = \"127.0.0.1:9101\"",
        );
    } else if servers.iter().all(|s| s.backup) {
        cx.warn(
            &head,
            label.to_owned(),
            "every server of this backend is a backup: with no main server ever up, the backups carry all the traffic all the time",
            "set backup = false on the main servers (backup = true is for the spare that takes over)",
        );
    }

    let timeouts = cx.timeouts(&rb.timeouts(), defaults, label);
    let slow_response = rb
        .slow_response
        .as_ref()
        .and_then(|v| cx.duration(v, label, "slow_response", "2s"));
    let panic_below = rb.panic_below.as_ref().and_then(|v| {
        cx.int(
            v,
            label,
            "panic_below",
            1,
            100,
            "write panic_below = 50 (percent of the non-backup servers UP), or leave it out",
        )
        .map(|n| n as u32)
    });
    Backend {
        name,
        balance,
        errorfile_503,
        cookie,
        app_cookie,
        max_queue,
        waiting_room,
        check,
        slow_response,
        panic_below,
        servers,
        timeouts,
    }
}

/// Checks a raw HTTP response and turns the bare LF line ends of its head into CRLF.
pub(crate) fn normalise_errorfile(bytes: &[u8]) -> Result<Vec<u8>, (String, String)> {
    let fix_shape = "write a complete response: a status line such as \"HTTP/1.1 503 Service Unavailable\", headers, an empty line, then the body";
    if !(bytes.starts_with(b"HTTP/1.0 ") || bytes.starts_with(b"HTTP/1.1 ")) {
        return Err((
            "does not start with \"HTTP/1.0 \" or \"HTTP/1.1 \"".into(),
            fix_shape.into(),
        ));
    }
    let mut head = Vec::with_capacity(bytes.len() + 32);
    let mut pos = 0;
    let mut end = None;
    while let Some(nl) = bytes[pos..].iter().position(|&b| b == b'\n') {
        let line = &bytes[pos..pos + nl];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        head.extend_from_slice(line);
        head.extend_from_slice(b"\r\n");
        pos += nl + 1;
        if line.is_empty() {
            end = Some(pos);
            break;
        }
    }
    let Some(end) = end else {
        return Err((
            "has no empty line ending its head".into(),
            "add an empty line after the last header (before the body, even if there is no body)"
                .into(),
        ));
    };
    let status = &head[9..head.len().min(12)];
    if status.len() < 3 || !status.iter().all(u8::is_ascii_digit) {
        return Err((
            "the status line has no 3-digit status code".into(),
            fix_shape.into(),
        ));
    }
    let body = &bytes[end..];
    let head_text = String::from_utf8_lossy(&head);
    for l in head_text.split("\r\n").skip(1) {
        if let Some((n, v)) = l.split_once(':') {
            if n.trim().eq_ignore_ascii_case("content-length") {
                match v.trim().parse::<usize>() {
                    Ok(cl) if cl == body.len() => {}
                    _ => {
                        return Err((
                            format!("Content-Length: {} does not match the body, which is {} bytes", v.trim(), body.len()),
                            format!("write Content-Length: {}, or remove the header and keep Connection: close", body.len()),
                        ))
                    }
                }
            }
        }
    }
    head.extend_from_slice(body);
    Ok(head)
}

fn validate_cookie(
    c: &S<RawCookie>,
    label: &str,
    app_cookie: &str,
    cx: &mut Ctx,
) -> Option<Cookie> {
    let rc = c.get_ref();
    let p = format!("{label} cookie");
    let mut ok = true;
    let name = match &rc.name {
        None => {
            cx.err(
                &c.span(),
                fld(&p, "name"),
                "the persistence cookie needs a name",
                "write name = \"SERVERID\"",
            );
            ok = false;
            String::new()
        }
        Some(n) => {
            if !is_token(n.get_ref()) {
                cx.err(
                    &n.span(),
                    fld(&p, "name"),
                    format!(
                        "\"{}\" is not a cookie name (letters, digits and !#$%&'*+-.^_`|~ only)",
                        n.get_ref()
                    ),
                    "write name = \"SERVERID\"",
                );
                ok = false;
            }
            n.get_ref().clone()
        }
    };
    let mode = match &rc.mode {
        None => CookieMode::Insert,
        Some(m) => match m.get_ref().as_str() {
            "insert" => CookieMode::Insert,
            "prefix" => CookieMode::Prefix,
            s => {
                cx.err(&m.span(), fld(&p, "mode"), format!("\"{s}\" is not a cookie mode"), "write mode = \"insert\" (a cookie of our own) or mode = \"prefix\" (prefix the application's)");
                ok = false;
                CookieMode::Insert
            }
        },
    };
    let indirect = rc.indirect.as_ref().is_none_or(|v| *v.get_ref());
    let nocache = rc.nocache.as_ref().is_none_or(|v| *v.get_ref());
    let httponly = rc.httponly.as_ref().is_some_and(|v| *v.get_ref());
    let secure = rc.secure.as_ref().is_some_and(|v| *v.get_ref());
    let samesite = rc
        .samesite
        .as_ref()
        .and_then(|v| match v.get_ref().as_str() {
            "Strict" => Some(SameSite::Strict),
            "Lax" => Some(SameSite::Lax),
            "None" => Some(SameSite::None),
            s => {
                let fix = match s.to_ascii_lowercase().as_str() {
                    "strict" => "write samesite = \"Strict\"".to_owned(),
                    "lax" => "write samesite = \"Lax\"".to_owned(),
                    "none" => "write samesite = \"None\" (with secure = true)".to_owned(),
                    _ => "write samesite = \"Strict\", \"Lax\" or \"None\", or leave it out"
                        .to_owned(),
                };
                cx.err(
                    &v.span(),
                    fld(&p, "samesite"),
                    format!("\"{s}\" is not a SameSite value"),
                    fix,
                );
                ok = false;
                None
            }
        });
    if samesite == Some(SameSite::None) && !secure {
        let span = rc.samesite.as_ref().map_or(NOWHERE, |v| v.span());
        cx.err(
            &span,
            fld(&p, "samesite"),
            "SameSite=None without Secure: browsers drop such a cookie, so no client would stick",
            "add secure = true to this table (or choose samesite = \"Lax\")",
        );
        ok = false;
    }
    let domain = rc.domain.as_ref().and_then(|v| {
        let d = v.get_ref();
        if d.is_empty() || !d.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-') || d.trim_start_matches('.').is_empty() {
            cx.err(&v.span(), fld(&p, "domain"), format!("\"{d}\" is not a domain name"), "write domain = \"moodle.example.edu\", or leave it out (the cookie then belongs to the host that set it)");
            ok = false;
            None
        } else {
            Some(d.clone())
        }
    });
    let maxidle = rc.maxidle.as_ref().and_then(|v| {
        let d = cx.duration(v, &p, "maxidle", "30m");
        ok &= d.is_some();
        d
    });
    let maxlife = rc.maxlife.as_ref().and_then(|v| {
        let d = cx.duration(v, &p, "maxlife", "8h");
        ok &= d.is_some();
        d
    });
    let key = rc.key.as_ref().and_then(|v| {
        let k = v.get_ref();
        if k.chars().count() < 16 {
            cx.err(&v.span(), fld(&p, "key"), format!("the key is {} characters long; at least 16 are needed to sign cookies safely", k.chars().count()), "write a random key of 16 characters or more, e.g. the output of `openssl rand -hex 16`");
            ok = false;
            None
        } else {
            Some(k.clone())
        }
    });

    let name_span = rc.name.as_ref().map_or(c.span(), |n| n.span());
    if mode == CookieMode::Insert && !name.is_empty() && name.eq_ignore_ascii_case(app_cookie) {
        cx.lockout(
            &name_span,
            fld(&p, "name"),
            format!(
                "the persistence cookie is named \"{name}\", like the application's session cookie (app_cookie = \"{app_cookie}\"): in insert mode with indirect the engine removes this cookie from what Moodle receives and replaces Moodle's own Set-Cookie, so Moodle never sees its session and every login loops back to the login page"
            ),
            "write name = \"SERVERID\" (any name the application does not use), or keep the name and set mode = \"prefix\" to prefix the application's own cookie instead",
        );
    }
    if mode == CookieMode::Prefix && !name.is_empty() && name != app_cookie {
        cx.warn(
            &name_span,
            fld(&p, "name"),
            format!("prefix mode prefixes the application's own cookie, but \"{name}\" is not app_cookie (\"{app_cookie}\"): unless the application sets a cookie named \"{name}\", no client will stick"),
            format!("write name = \"{app_cookie}\", or set app_cookie to the application's session cookie, or use mode = \"insert\""),
        );
    }
    ok.then_some(Cookie {
        name,
        mode,
        indirect,
        nocache,
        httponly,
        secure,
        samesite,
        domain,
        maxidle,
        maxlife,
        key,
    })
}

fn parse_status_range(s: &str) -> Option<StatusRange> {
    let (lo, hi) = match s.split_once('-') {
        Some((a, b)) => (a.trim().parse::<u16>().ok()?, b.trim().parse::<u16>().ok()?),
        None => {
            let v = s.trim().parse::<u16>().ok()?;
            (v, v)
        }
    };
    ((100..=599).contains(&lo) && (100..=599).contains(&hi) && lo <= hi)
        .then_some(StatusRange { lo, hi })
}

fn validate_check(c: &S<RawCheck>, label: &str, cx: &mut Ctx) -> Option<Check> {
    let rc = c.get_ref();
    let p = format!("{label} check");
    let mut ok = true;
    let method = match &rc.method {
        None => "GET".to_owned(),
        Some(m) => {
            let s = m.get_ref();
            if !is_token(s) {
                cx.err(
                    &m.span(),
                    fld(&p, "method"),
                    format!("\"{s}\" is not an HTTP method"),
                    "write method = \"GET\" (or \"HEAD\")",
                );
                ok = false;
            } else if s.chars().any(|c| c.is_ascii_lowercase()) {
                cx.err(
                    &m.span(),
                    fld(&p, "method"),
                    format!(
                        "\"{s}\": HTTP methods are case-sensitive, the server would not know it"
                    ),
                    format!("write method = \"{}\"", s.to_ascii_uppercase()),
                );
                ok = false;
            }
            s.clone()
        }
    };
    let uri = match &rc.uri {
        None => "/".to_owned(),
        Some(u) => {
            let s = u.get_ref();
            if !s.starts_with('/') {
                let fix = if let Some(rest) = s
                    .strip_prefix("http://")
                    .or_else(|| s.strip_prefix("https://"))
                {
                    let path = rest.find('/').map_or("/", |i| &rest[i..]);
                    format!("write uri = \"{path}\" and the host name in host = \"...\"")
                } else {
                    format!("write uri = \"/{s}\"")
                };
                cx.err(
                    &u.span(),
                    fld(&p, "uri"),
                    format!("\"{s}\" does not start with \"/\""),
                    fix,
                );
                ok = false;
            } else if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
                cx.err(
                    &u.span(),
                    fld(&p, "uri"),
                    format!("\"{s}\" contains a space or a control character"),
                    "write spaces as %20",
                );
                ok = false;
            }
            s.clone()
        }
    };
    let host = rc.host.as_ref().and_then(|h| {
        let s = h.get_ref();
        if s.is_empty()
            || s.chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == '/')
        {
            let clean = s
                .trim_start_matches("https://")
                .trim_start_matches("http://")
                .split('/')
                .next()
                .unwrap_or("")
                .trim()
                .to_owned();
            let fix = if clean.is_empty() {
                "write host = \"moodle.example.edu\"".to_owned()
            } else {
                format!("write host = \"{clean}\" (a host name, no scheme or path)")
            };
            cx.err(
                &h.span(),
                fld(&p, "host"),
                format!("\"{s}\" is not a host name"),
                fix,
            );
            ok = false;
            None
        } else {
            Some(s.clone())
        }
    });
    let expect_status = match &rc.expect_status {
        None => StatusRange { lo: 200, hi: 399 },
        Some(v) => {
            let parsed = match v.get_ref() {
                Scalar::Str(s) => parse_status_range(s),
                Scalar::Int(n) => u16::try_from(*n)
                    .ok()
                    .and_then(|n| parse_status_range(&n.to_string())),
                _ => None,
            };
            match parsed {
                Some(r) => r,
                None => {
                    let shown = match v.get_ref() {
                        Scalar::Str(s) => format!("\"{s}\""),
                        Scalar::Int(n) => n.to_string(),
                        Scalar::Float(f) => f.to_string(),
                        Scalar::Bool(b) => b.to_string(),
                        Scalar::Other(w) => (*w).to_owned(),
                    };
                    cx.err(
                        &v.span(),
                        fld(&p, "expect_status"),
                        format!("{shown} is not a status or a range of statuses (100 to 599)"),
                        "write expect_status = \"200\" or a range such as \"200-399\"",
                    );
                    ok = false;
                    StatusRange { lo: 200, hi: 399 }
                }
            }
        }
    };
    let expect_string = rc.expect_string.as_ref().and_then(|v| {
        if v.get_ref().is_empty() {
            cx.err(&v.span(), fld(&p, "expect_string"), "is empty (every body contains the empty string)", "write a word the healthy page contains, e.g. expect_string = \"Moodle\", or leave it out");
            ok = false;
            None
        } else {
            Some(v.get_ref().clone())
        }
    });
    let interval = match &rc.interval {
        None => Duration::from_secs(2),
        Some(v) => cx.duration(v, &p, "interval", "2s").unwrap_or_else(|| {
            ok = false;
            Duration::from_secs(2)
        }),
    };
    let rise = rc.rise.as_ref().map_or(Some(2), |v| {
        cx.int(
            v,
            &p,
            "rise",
            1,
            i64::from(u32::MAX),
            "write rise = 2 (passed checks in a row to go UP)",
        )
    });
    let fall = rc.fall.as_ref().map_or(Some(3), |v| {
        cx.int(
            v,
            &p,
            "fall",
            1,
            i64::from(u32::MAX),
            "write fall = 3 (failed checks in a row to go DOWN)",
        )
    });
    ok &= rise.is_some() && fall.is_some();
    let timeout = match &rc.timeout {
        None => interval,
        Some(v) => match cx.duration(v, &p, "timeout", "2s") {
            Some(t) => {
                if t > interval {
                    cx.warn(
                        &v.span(),
                        fld(&p, "timeout"),
                        format!("timeout ({}) is longer than interval ({}): a slow check overlaps the next one", fmt_duration(t), fmt_duration(interval)),
                        format!("write timeout = \"{}\" or less, or raise interval", fmt_duration(interval)),
                    );
                }
                t
            }
            None => {
                ok = false;
                interval
            }
        },
    };

    let head = c.span();
    if host.is_none() && rc.host.is_none() {
        cx.warn(
            &head,
            p.clone(),
            "the check has no `host`: it sends the server's address as Host, and Moodle redirects requests whose host is not its wwwroot, so the probe may see a redirect instead of the page",
            "write host = \"moodle.example.edu\" (the host name of Moodle's $CFG->wwwroot)",
        );
    }
    if expect_string.is_some()
        && (expect_status.hi >= 400 || (expect_status.lo <= 399 && expect_status.hi >= 300))
    {
        let span = rc.expect_status.as_ref().map_or_else(
            || rc.expect_string.as_ref().map_or(head.clone(), |s| s.span()),
            |s| s.span(),
        );
        cx.warn(
            &span,
            fld(&p, "expect_status"),
            format!(
                "expect_string with expect_status \"{}\": a redirect to the login page or an error page can still contain the string, so a broken server may pass",
                if expect_status.lo == expect_status.hi { expect_status.lo.to_string() } else { format!("{}-{}", expect_status.lo, expect_status.hi) }
            ),
            "write expect_status = \"200\"",
        );
    }
    let observe_errors = rc.observe_errors.as_ref().map_or(Some(10), |v| {
        cx.int(v, &p, "observe_errors", 0, 100_000, "write observe_errors = 10 (failures seen by the cores within 10s that take a server DOWN; 0 turns it off)")
    });
    ok &= observe_errors.is_some();
    let slowstart = match &rc.slowstart {
        None => None,
        Some(v) => match cx.duration(v, &p, "slowstart", "30s") {
            Some(d) => Some(d),
            None => {
                ok = false;
                None
            }
        },
    };
    ok.then_some(Check {
        method,
        uri,
        host,
        expect_status,
        expect_string,
        interval,
        rise: rise.unwrap_or(2) as u32,
        fall: fall.unwrap_or(3) as u32,
        timeout,
        observe_errors: observe_errors.unwrap_or(10) as u32,
        slowstart,
        live_traffic: rc.live_traffic.as_ref().is_none_or(|v| *v.get_ref()),
    })
}
