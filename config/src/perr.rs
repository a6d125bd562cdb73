//! Turning a TOML syntax error or a serde error (unknown field, wrong type) into one
//! `Diagnostic` that names the line, the field as the operator knows it, and a fix.

use crate::diag::{line_of, DiagKind, Diagnostic, Severity};
use std::path::Path;

/// Where an offset sits: the section (from the last table header before it), and the keys.
#[derive(Debug, Default)]
struct Place {
    /// As shown to the operator: `backend "moodle" server "moodle_app_1"`.
    label: String,
    /// The header path: `backend.server`, `global`, "" for the root.
    header: String,
    /// The first key on the line (`tls` in `tls = { certs = 5 }`).
    lead_key: Option<String>,
    /// The key the error is about (`certs` there).
    key: Option<String>,
    /// The error is on a table header line (`[globl]`).
    on_header: bool,
}

fn is_bare_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

fn header_of(line: &str) -> Option<(String, bool)> {
    let t = line.trim_start();
    if let Some(rest) = t.strip_prefix("[[") {
        let end = rest.find("]]")?;
        return Some((normalise_header(&rest[..end]), true));
    }
    if let Some(rest) = t.strip_prefix('[') {
        let end = rest.find(']')?;
        return Some((normalise_header(&rest[..end]), false));
    }
    None
}

fn normalise_header(h: &str) -> String {
    h.split('.')
        .map(|p| p.trim().trim_matches('"'))
        .collect::<Vec<_>>()
        .join(".")
}

/// The `name = "..."` of the section whose header line starts at `pos`.
fn name_at(text: &str, pos: Option<usize>) -> Option<String> {
    let pos = pos?;
    for l in text[pos..].split('\n').skip(1) {
        if header_of(l).is_some() {
            break;
        }
        let t = l.trim();
        if let Some(rest) = t.strip_prefix("name") {
            let rest = rest.trim_start();
            if let Some(v) = rest.strip_prefix('=') {
                let v = v.trim();
                if let Some(v) = v.strip_prefix('"') {
                    return v.split('"').next().map(str::to_owned);
                }
            }
        }
    }
    None
}

fn named(kind: &str, name: Option<String>, idx: usize) -> String {
    match name {
        Some(n) => format!("{kind} \"{n}\""),
        None => format!("{kind} #{}", idx + 1),
    }
}

/// The key written just before `=` in `before` (the text of a line up to some column).
fn key_before_eq(before: &str) -> Option<String> {
    let eq = before.rfind('=')?;
    let k = before[..eq].trim_end();
    let k = k.trim_end_matches('"');
    let start = k.rfind(|c: char| !is_bare_key_char(c)).map_or(0, |i| i + 1);
    let key = &k[start..];
    (!key.is_empty()).then(|| key.to_owned())
}

/// The last `[[frontend]]`, `[[backend]]` and `[[backend.server]]` before a line: each as
/// (its index among the tables of its kind, the offset of its header line).
#[derive(Default)]
struct Open {
    fe: Option<(usize, usize)>,
    be: Option<(usize, usize)>,
    sv: Option<(usize, usize)>,
}

/// The header of the table the text before `line_start` ends in, and the array tables open
/// there.
fn tables_before(text: &str, line_start: usize) -> (String, Open) {
    let mut header = String::new();
    let mut open = Open::default();
    let mut pos = 0;
    for l in text[..line_start].split_inclusive('\n') {
        if let Some((h, array)) = header_of(l) {
            let next = |c: Option<(usize, usize)>| Some((c.map_or(0, |(i, _)| i + 1), pos));
            if array {
                match h.as_str() {
                    "frontend" => open.fe = next(open.fe),
                    "backend" => {
                        open.be = next(open.be);
                        open.sv = None;
                    }
                    "backend.server" => open.sv = next(open.sv),
                    _ => {}
                }
            }
            header = h;
        }
        pos += l.len();
    }
    (header, open)
}

/// The section as the operator knows it: `backend "moodle" server "moodle_app_1"`.
fn section_label(text: &str, header: &str, open: &Open) -> String {
    let label_of = |kind: &str, c: Option<(usize, usize)>| {
        let (i, p) = c.unwrap_or((0, usize::MAX));
        named(
            kind,
            if p == usize::MAX {
                None
            } else {
                name_at(text, Some(p))
            },
            i,
        )
    };
    match header {
        "frontend" => label_of("frontend", open.fe),
        "backend" => label_of("backend", open.be),
        "backend.server" => format!(
            "{} {}",
            label_of("backend", open.be),
            label_of("server", open.sv)
        ),
        "backend.cookie" => format!("{} cookie", label_of("backend", open.be)),
        "backend.check" => format!("{} check", label_of("backend", open.be)),
        h => h.to_owned(),
    }
}

fn place(text: &str, offset: usize, span_text: &str) -> Place {
    let offset = offset.min(text.len());
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[offset..].find('\n').map_or(text.len(), |i| offset + i);
    let line = &text[line_start..line_end];
    let on_header = header_of(line);

    // Table headers before this line (a header line is about its parent's context).
    let (mut header, mut open) = tables_before(text, line_start);
    if let Some((h, _)) = &on_header {
        header = h
            .rsplit_once('.')
            .map_or(String::new(), |(parent, _)| parent.to_owned());
        if header == "backend" && open.be.is_none() {
            open.be = Some((0, usize::MAX));
        }
    }
    let label = section_label(text, &header, &open);

    if let Some((h, _)) = on_header {
        let key = h.rsplit('.').next().unwrap_or(&h).to_owned();
        return Place {
            label,
            header,
            lead_key: None,
            key: Some(key),
            on_header: true,
        };
    }

    let lead_key = line
        .split('=')
        .next()
        .map(|k| k.trim().trim_matches('"').to_owned())
        .filter(|k| !k.is_empty() && !k.starts_with('#'));
    let key = key_at(
        text,
        offset,
        span_text,
        line_start..line_end,
        lead_key.as_deref(),
    );
    Place {
        label,
        header,
        lead_key,
        key,
        on_header: false,
    }
}

/// The key an error at `offset` (on the line `line`, a range of `text`) is about: the
/// span itself when it is a key followed by `=`, else the key before the nearest `=`, else
/// the line's first key.
fn key_at(
    text: &str,
    offset: usize,
    span_text: &str,
    line: std::ops::Range<usize>,
    lead_key: Option<&str>,
) -> Option<String> {
    let span_key = span_text.trim().trim_matches('"');
    if !span_key.is_empty()
        && !span_text.contains('=')
        && span_key.chars().all(|c| is_bare_key_char(c) || c == '.')
        && text[offset + span_text.len()..line.end]
            .trim_start()
            .starts_with('=')
    {
        Some(span_key.to_owned())
    } else {
        key_before_eq(&text[line.start..offset]).or_else(|| lead_key.map(str::to_owned))
    }
}

/// The fields of each section, for "did you mean".
fn closest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    const ALIASES: &[(&str, &str)] = &[
        ("servers", "server"),
        ("frontends", "frontend"),
        ("backends", "backend"),
        ("addr", "address"),
        ("ip", "address"),
        ("sticky", "cookie"),
        ("persistence", "cookie"),
        ("stick", "cookie"),
        ("healthcheck", "check"),
        ("health_check", "check"),
        ("httpchk", "check"),
        ("http_check", "check"),
        ("crt", "certs"),
        ("cert", "certs"),
        ("ssl", "tls"),
        ("errorfile", "errorfile_503"),
        ("error_file", "errorfile_503"),
        ("maxqueue", "max_queue"),
        ("listen", "bind"),
        ("forwardfor", "forwarded_for"),
        ("x_forwarded_for", "forwarded_for"),
        ("redirect", "redirect_https"),
        ("https_redirect", "redirect_https"),
        ("headers", "set_headers"),
        ("set_header", "set_headers"),
        ("default_backend", "backend"),
        ("use_backend", "backend"),
        ("balancing", "balance"),
        ("timeout_keepalive", "timeout_keep_alive"),
        ("timeout_http_keep_alive", "timeout_keep_alive"),
        ("expect", "expect_status"),
        ("status", "expect_status"),
        ("path", "uri"),
        ("url", "uri"),
    ];
    let lw = word.to_ascii_lowercase();
    if let Some((_, to)) = ALIASES.iter().find(|(from, _)| *from == lw) {
        if let Some(c) = candidates.iter().find(|c| *c == to) {
            return Some(c);
        }
    }
    if let Some(c) = candidates.iter().find(|c| c.eq_ignore_ascii_case(word)) {
        return Some(c);
    }
    let limit = (word.len() / 3).clamp(1, 3);
    candidates
        .iter()
        .map(|c| (levenshtein(&lw, c), *c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

pub(crate) fn levenshtein(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Examples of a field written correctly, by key (the keys whose example does not depend
/// on the section; those are in [`example`]).
const EXAMPLES: &[(&str, &str)] = &[
    ("maxconn", "maxconn = 20000"),
    ("admin_socket", "admin_socket = \"/run/engine-admin.sock\""),
    ("stats", "stats = \"127.0.0.1:8404\""),
    ("user", "user = \"engine\""),
    ("group", "group = \"engine\""),
    ("max_head_bytes", "max_head_bytes = 16384"),
    ("max_target_bytes", "max_target_bytes = 8192"),
    ("max_headers", "max_headers = 100"),
    ("max_body_bytes", "max_body_bytes = 1073741824   # 0: no limit"),
    ("pool_max_idle_per_server", "pool_max_idle_per_server = 1000   # 0: no pooling"),
    ("pool_idle_timeout", "pool_idle_timeout = \"30s\""),
    ("live_traffic", "live_traffic = true"),
    ("slow_response", "slow_response = \"2s\""),
    ("panic_below", "panic_below = 50"),
    ("drop_underscore_headers", "drop_underscore_headers = true"),
    ("h2_max_concurrent_streams", "h2_max_concurrent_streams = 100"),
    ("h2_max_header_list_size", "h2_max_header_list_size = 65536"),
    ("h2_max_resets_per_second", "h2_max_resets_per_second = 100"),
    ("h2_max_control_frames_per_second", "h2_max_control_frames_per_second = 100"),
    ("h2_max_continuation_frames", "h2_max_continuation_frames = 16"),
    ("h2_stream_idle_timeout", "h2_stream_idle_timeout = \"30s\""),
    ("alpn", "alpn = [\"h2\", \"http/1.1\"]   # [\"http/1.1\"]: no HTTP/2"),
    ("h2c", "h2c = true   # plain-text HTTP/2 (prior knowledge), frontends without TLS"),
    ("timeout_connect", "timeout_connect = \"5s\""),
    ("timeout_client", "timeout_client = \"50s\""),
    ("timeout_server", "timeout_server = \"50s\""),
    ("timeout_http_request", "timeout_http_request = \"10s\""),
    ("timeout_keep_alive", "timeout_keep_alive = \"10s\""),
    ("timeout_queue", "timeout_queue = \"30s\""),
    ("retries", "retries = 3"),
    ("access", "access = \"stdout\"   # or \"syslog\", \"off\", a file path"),
    ("format", "format = \"httplog\"   # or \"json\""),
    ("dontlognull", "dontlognull = true"),
    ("frontend", "[[frontend]] (two brackets: there may be several), then name = \"http\", bind = [\"0.0.0.0:80\"], backend = \"moodle\""),
    ("backend", "backend = \"moodle\""),
    ("name", "name = \"moodle\""),
    ("bind", "bind = [\"0.0.0.0:80\"]   # a list, even of one address"),
    ("redirect_https", "redirect_https = { code = 301, except_prefixes = [\"/.well-known/acme-challenge/\"] }"),
    ("code", "code = 301"),
    ("except_prefixes", "except_prefixes = [\"/.well-known/acme-challenge/\"]"),
    ("tls", "tls = { certs = [\"certs/moodle.pem\"] }"),
    ("certs", "certs = [\"certs/moodle.pem\"]   # or [{ cert = \"chain.pem\", key = \"key.pem\" }]"),
    ("handshake_timeout", "handshake_timeout = \"10s\""),
    ("session_resumption", "session_resumption = true"),
    ("set_headers", "set_headers = { \"X-Forwarded-Proto\" = \"https\" }"),
    ("forwarded_for", "forwarded_for = true"),
    ("balance", "balance = \"roundrobin\"   # or \"leastconn\""),
    ("errorfile_503", "errorfile_503 = \"errors/503.http\""),
    ("cookie", "[backend.cookie] on a line of its own, then name = \"SERVERID\" below it"),
    ("mode", "mode = \"insert\"   # or \"prefix\""),
    ("indirect", "indirect = true"),
    ("nocache", "nocache = true"),
    ("httponly", "httponly = true"),
    ("secure", "secure = true"),
    ("samesite", "samesite = \"Lax\"   # \"Strict\", \"Lax\" or \"None\""),
    ("domain", "domain = \"moodle.example.edu\""),
    ("maxidle", "maxidle = \"30m\""),
    ("maxlife", "maxlife = \"8h\""),
    ("key", "key = \"a secret of at least 16 characters\""),
    ("app_cookie", "app_cookie = \"MoodleSession\""),
    ("max_queue", "max_queue = 1000"),
    ("waiting_room", "waiting_room = \"pages/waiting.html\""),
    ("check", "[backend.check] on a line of its own, then uri = \"/login/index.php\" below it"),
    ("method", "method = \"GET\""),
    ("uri", "uri = \"/login/index.php\""),
    ("host", "host = \"moodle.example.edu\""),
    ("expect_status", "expect_status = \"200\"   # or a range, \"200-399\""),
    ("expect_string", "expect_string = \"Moodle\""),
    ("interval", "interval = \"2s\""),
    ("rise", "rise = 2"),
    ("fall", "fall = 3"),
    ("timeout", "timeout = \"2s\""),
    ("server", "[[backend.server]] (two brackets: one per server), then name = \"moodle_app_1\", address = \"127.0.0.1:9101\""),
    ("address", "address = \"127.0.0.1:9101\""),
    ("weight", "weight = 1"),
    ("backup", "backup = true"),
];

/// An example of the field written correctly, by section and key.
fn example(header: &str, lead: Option<&str>, key: &str) -> Option<&'static str> {
    let in_server = header == "backend.server";
    Some(match key {
        "maxconn" if in_server => "maxconn = 100   # 0: no limit",
        "backend" if header.is_empty() => "[[backend]] (two brackets: there may be several), then name = \"moodle\" and [[backend.server]] tables",
        "global" | "limits" | "defaults" | "log" => "a table: [global], [limits], [defaults] or [log] on a line of its own, its fields below it",
        "name" if header == "backend.cookie" => "name = \"SERVERID\"",
        "cookie" if in_server => "cookie = \"s1\"",
        "check" if in_server => "check = true",
        _ => match EXAMPLES.iter().find(|(k, _)| *k == key) {
            Some((_, e)) => e,
            None => return lead.and_then(|l| if l != key { example(header, None, l) } else { None }),
        },
    })
}

fn friendly_type(t: &str) -> String {
    let t = t.trim();
    match t {
        "i64" | "u64" | "u32" | "usize" => "an integer".into(),
        "a boolean" => "true or false".into(),
        "a string" => "a quoted string".into(),
        "a sequence" => "a list [ ... ]".into(),
        "a map" => "a table".into(),
        _ if t.starts_with("struct ") => "a table".into(),
        _ if t.starts_with("map") => "a table".into(),
        _ if t.starts_with("sequence") => "a list".into(),
        _ => t.to_owned(),
    }
}

fn field_name(p: &Place) -> String {
    let mut parts: Vec<String> = Vec::new();
    if !p.label.is_empty() {
        parts.push(p.label.clone());
    }
    match (&p.lead_key, &p.key) {
        (Some(l), Some(k)) if l != k => {
            parts.push(l.clone());
            parts.push(format!("`{k}`"));
        }
        (_, Some(k)) => parts.push(format!("`{k}`")),
        (Some(l), None) => parts.push(format!("`{l}`")),
        (None, None) => {}
    }
    parts.join(" ")
}

fn one_line(msg: &str) -> String {
    msg.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// One diagnostic for a failed `toml::from_str` (or `parse::<Table>`).
pub(crate) fn diagnose(err: &toml::de::Error, text: &str, file: &Path) -> Diagnostic {
    let span = err.span();
    let (line, p) = match &span {
        Some(r) => {
            let start = r.start.min(text.len());
            let end = r.end.clamp(start, text.len());
            let span_text = text.get(start..end).unwrap_or("");
            (line_of(text, start), place(text, start, span_text))
        }
        None => (0, Place::default()),
    };
    let raw = err.message().trim();
    let field = field_name(&p);
    let key = p.key.clone().unwrap_or_default();
    let hint = example(&p.header, p.lead_key.as_deref(), &key);

    let (message, fix) = message_and_fix(raw, &p, hint);
    Diagnostic {
        severity: Severity::Error,
        kind: DiagKind::Parse,
        file: file.to_path_buf(),
        line,
        field,
        message,
        fix,
    }
}

/// The message and the fix for the error `raw` from serde or the TOML parser, at `p`;
/// `hint`: the field written correctly, where known.
fn message_and_fix(raw: &str, p: &Place, hint: Option<&str>) -> (String, String) {
    if let Some(rest) = raw.strip_prefix("unknown field `") {
        unknown_field(rest, p)
    } else if let Some(rest) = raw.strip_prefix("invalid type: ") {
        let (found, expected) = rest.split_once(", expected ").unwrap_or((rest, "?"));
        let message = format!(
            "wrong type: found {found}, expected {}",
            friendly_type(expected)
        );
        let fix = match hint {
            Some(h) => format!("write {h}"),
            None => format!("write {}", friendly_type(expected)),
        };
        (message, fix)
    } else if raw.starts_with("invalid value: ") || raw.starts_with("invalid length ") {
        let fix = hint.map_or_else(|| "correct the value".to_owned(), |h| format!("write {h}"));
        (one_line(raw), fix)
    } else if raw.starts_with("duplicate key") {
        (
            one_line(raw),
            "keep one of the two; a key may appear once per table".to_owned(),
        )
    } else if raw.contains("invalid table header") || raw.contains("duplicate") {
        (
            one_line(raw),
            "each [table] may appear once; for several frontends, backends or servers use [[frontend]], [[backend]], [[backend.server]]".to_owned(),
        )
    } else if raw.contains("string") || raw.contains("expected `\"`") {
        (
            one_line(raw),
            "put text values in double quotes, e.g. balance = \"roundrobin\"".to_owned(),
        )
    } else {
        (
            one_line(raw),
            "check the TOML syntax on this line: key = value, text in double quotes, lists in [ ], tables as [name] or [[name]]".to_owned(),
        )
    }
}

/// "unknown field `name`, expected ...": where it is, and the closest accepted field.
fn unknown_field(rest: &str, p: &Place) -> (String, String) {
    let (name, tail) = rest.split_once('`').unwrap_or((rest, ""));
    // "expected `a`", "expected `a` or `b`", "expected one of `a`, `b`, `c`"
    let accepted: Vec<&str> = tail.split('`').skip(1).step_by(2).collect();
    let list = if accepted.is_empty() {
        "this table takes no fields".to_owned()
    } else {
        format!("the fields accepted here are: {}", accepted.join(", "))
    };
    let mut where_ = if p.label.is_empty() {
        "at the top level".to_owned()
    } else {
        format!("in {}", p.label)
    };
    if let Some(l) = p.lead_key.as_ref().filter(|l| *l != name) {
        where_.push(' ');
        where_.push_str(l);
    }
    let message = if p.on_header {
        format!("unknown table `{name}` {where_}")
    } else {
        format!("unknown field `{name}` {where_}")
    };
    let fix = match closest(name, &accepted) {
        Some(c) => format!("did you mean `{c}`? {list}"),
        None => format!("remove it or correct its name; {list}"),
    };
    (message, fix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        assert_eq!(
            closest("adress", &["name", "address", "cookie"]),
            Some("address")
        );
        assert_eq!(closest("servers", &["name", "server"]), Some("server"));
        assert_eq!(
            closest("crt", &["certs", "handshake_timeout"]),
            Some("certs")
        );
        assert_eq!(closest("zzzzzz", &["name", "address"]), None);
        assert_eq!(levenshtein("kitten", "sitting"), 3);
    }
}
