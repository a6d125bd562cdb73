//! HAProxy's file as sections of directives: `global`, `defaults [NAME]`, `frontend`,
//! `backend` and `listen` (each `NAME [from DEFAULTS]`), and the sections the engine has
//! no counterpart for (userlist, peers, resolvers, ...), kept so they can be reported.

use super::lexer::Line;

/// A directive: one line's words inside a section.
pub(crate) type Directive = Line;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Global,
    Defaults,
    Frontend,
    Backend,
    Listen,
    /// userlist, peers, resolvers, mailers, cache, program, http-errors, ring, ...
    Other,
}

impl Kind {
    /// Has frontend capabilities (binds, redirects, routing).
    pub fn front(self) -> bool {
        matches!(self, Kind::Frontend | Kind::Listen | Kind::Defaults)
    }
    /// Has backend capabilities (servers, balance, cookie, checks).
    pub fn back(self) -> bool {
        matches!(self, Kind::Backend | Kind::Listen | Kind::Defaults)
    }
    pub fn word(self) -> &'static str {
        match self {
            Kind::Global => "global",
            Kind::Defaults => "defaults",
            Kind::Frontend => "frontend",
            Kind::Backend => "backend",
            Kind::Listen => "listen",
            Kind::Other => "section",
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Section {
    pub kind: Kind,
    /// The header line (`frontend http_frontend`).
    pub head: Line,
    pub name: Option<String>,
    /// `from NAME`: the defaults section this one takes its defaults from.
    pub from: Option<String>,
    pub dirs: Vec<Directive>,
}

impl Section {
    pub fn name_or(&self, fallback: &str) -> String {
        self.name.clone().unwrap_or_else(|| fallback.to_owned())
    }
    /// Whether `line` is inside this section (header included).
    pub fn holds(&self, line: usize) -> bool {
        line == self.head.no || self.dirs.iter().any(|d| d.no == line)
    }
}

const OTHER_SECTIONS: &[&str] = &[
    "userlist",
    "peers",
    "resolvers",
    "mailers",
    "cache",
    "program",
    "http-errors",
    "ring",
    "crt-store",
    "traces",
    "log-forward",
    "fcgi-app",
    "dynamic-update",
    "acme",
];

/// Groups the lines into sections. Lines before the first section come back apart.
pub(crate) fn sections(lines: Vec<Line>) -> (Vec<Section>, Vec<Line>) {
    let mut out: Vec<Section> = Vec::new();
    let mut orphans = Vec::new();
    for l in lines {
        let w0 = l.words[0].to_ascii_lowercase();
        let kind = match w0.as_str() {
            "global" => Some(Kind::Global),
            "defaults" => Some(Kind::Defaults),
            "frontend" => Some(Kind::Frontend),
            "backend" => Some(Kind::Backend),
            "listen" => Some(Kind::Listen),
            w if OTHER_SECTIONS.contains(&w) => Some(Kind::Other),
            _ => None,
        };
        match kind {
            Some(kind) => {
                let (name, from) = head_names(&l.words[1..]);
                out.push(Section {
                    kind,
                    head: l,
                    name,
                    from,
                    dirs: Vec::new(),
                });
            }
            None => match out.last_mut() {
                Some(s) => s.dirs.push(l),
                None => orphans.push(l),
            },
        }
    }
    (out, orphans)
}

/// `NAME [from DEFAULTS]` or `from DEFAULTS` (a defaults section may be anonymous).
fn head_names(rest: &[String]) -> (Option<String>, Option<String>) {
    match rest {
        [] => (None, None),
        [f, d, ..] if f == "from" && rest.len() == 2 => (None, Some(d.clone())),
        [n] => (Some(n.clone()), None),
        [n, f, d, ..] if f == "from" => (Some(n.clone()), Some(d.clone())),
        [n, ..] => (Some(n.clone()), None),
    }
}

/// The words of a directive, lowercased where HAProxy ignores case (the keywords).
pub(crate) fn kw(d: &Directive, i: usize) -> String {
    d.words
        .get(i)
        .map(|w| w.to_ascii_lowercase())
        .unwrap_or_default()
}

/// HAProxy's time format: a number with an optional unit (us, ms, s, m, h, d; ms when
/// none) as milliseconds, rounded up from microseconds. `None` when it is not one.
pub(crate) fn haproxy_ms(s: &str) -> Option<u64> {
    let t = s.trim();
    let digits = t.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let n: u64 = t[..digits].parse().ok()?;
    let per: u64 = match &t[digits..] {
        "" | "ms" => return Some(n),
        "us" => return Some(n.div_ceil(1000)),
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    n.checked_mul(per)
}

/// Milliseconds as the engine writes durations: the largest unit that divides them.
pub(crate) fn engine_duration(ms: u64) -> String {
    for (per, unit) in [(3_600_000, "h"), (60_000, "m"), (1000, "s")] {
        if ms >= per && ms.is_multiple_of(per) {
            return format!("{}{unit}", ms / per);
        }
    }
    format!("{ms}ms")
}

/// An HAProxy time converted for the engine, or why it cannot be.
pub(crate) fn duration(s: &str) -> Result<String, String> {
    match haproxy_ms(s) {
        None => Err(format!(
            "\"{s}\" is not an HAProxy time (a number with an optional unit: us, ms, s, m, h, d)"
        )),
        Some(0) => Err(format!(
            "\"{s}\" is zero, which the engine does not accept (HAProxy takes it as no timeout)"
        )),
        Some(ms) => Ok(engine_duration(ms)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::haproxy::lexer::lex;

    #[test]
    fn times() {
        assert_eq!(duration("5000ms").unwrap(), "5s");
        assert_eq!(duration("50000").unwrap(), "50s");
        assert_eq!(duration("2s").unwrap(), "2s");
        assert_eq!(duration("1500").unwrap(), "1500ms");
        assert_eq!(duration("90s").unwrap(), "90s");
        assert_eq!(duration("120s").unwrap(), "2m");
        assert_eq!(duration("1d").unwrap(), "24h");
        assert_eq!(duration("1500us").unwrap(), "2ms");
        assert!(duration("0").is_err());
        assert!(duration("5 s").is_err());
        assert!(duration("x").is_err());
        assert!(duration("99999999999999999999d").is_err());
    }

    #[test]
    fn section_heads() {
        let (lines, _) = lex(
            "maxconn 1\nglobal\n  daemon\ndefaults web\n mode http\nfrontend f from web\n bind :80\nuserlist u\n user a\nbackend b\n",
        );
        let (s, orphans) = sections(lines);
        assert_eq!(orphans.len(), 1);
        assert_eq!(s.len(), 5);
        assert_eq!(s[1].kind, Kind::Defaults);
        assert_eq!(s[1].name.as_deref(), Some("web"));
        assert_eq!(s[2].name.as_deref(), Some("f"));
        assert_eq!(s[2].from.as_deref(), Some("web"));
        assert_eq!(s[2].dirs.len(), 1);
        assert_eq!(s[3].kind, Kind::Other);
        assert!(s[4].dirs.is_empty());
        assert_eq!(
            head_names(&["from".into(), "x".into()]),
            (None, Some("x".into()))
        );
    }
}
