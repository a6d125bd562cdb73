//! The lb.toml text: tables of fields, each field followed by `# from FILE:LINE`, fields
//! the engine cannot take yet written as comments with the reason, and for every output
//! line the HAProxy line it came from (so `engine check`'s findings point back to it).

use std::fmt::Write as _;

/// A value with the HAProxy line it came from (0: from no line, e.g. a default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct At<T> {
    pub v: T,
    pub line: usize,
}

pub(crate) fn at<T>(v: T, line: usize) -> At<T> {
    At { v, line }
}

#[derive(Debug, Clone)]
enum Item {
    Field {
        key: String,
        value: String,
        line: usize,
        note: String,
    },
    /// `key = [` then one literal per line with its origin, then `]`.
    Array {
        key: String,
        items: Vec<(String, usize)>,
    },
    /// `# key = value  # from ...: reason`
    Commented {
        key: String,
        value: String,
        line: usize,
        reason: String,
    },
}

/// One TOML table (`[global]`, `[[frontend]]`, `[backend.check]`, ...).
#[derive(Debug, Clone)]
pub(crate) struct Table {
    header: String,
    line: usize,
    title: String,
    items: Vec<Item>,
}

impl Table {
    /// `header` as written (`[[backend.server]]`); `title` follows the line number in the
    /// header's comment (e.g. the HAProxy section it came from).
    pub fn new(header: &str, line: usize, title: impl Into<String>) -> Table {
        Table {
            header: header.to_owned(),
            line,
            title: title.into(),
            items: Vec::new(),
        }
    }
    /// `key = value`, the value already a TOML literal.
    pub fn raw(&mut self, key: &str, value: String, line: usize) {
        self.noted(key, value, line, "");
    }
    /// A field with a note after its origin (or alone, for a field from no line).
    pub fn noted(&mut self, key: &str, value: String, line: usize, note: &str) {
        self.items.push(Item::Field {
            key: key.to_owned(),
            value,
            line,
            note: note.to_owned(),
        });
    }
    pub fn str(&mut self, key: &str, v: &At<String>) {
        self.raw(key, toml_str(&v.v), v.line);
    }
    pub fn opt_str(&mut self, key: &str, v: &Option<At<String>>) {
        if let Some(v) = v {
            self.str(key, v);
        }
    }
    pub fn int(&mut self, key: &str, v: &At<i64>) {
        self.raw(key, v.v.to_string(), v.line);
    }
    pub fn opt_int(&mut self, key: &str, v: &Option<At<i64>>) {
        if let Some(v) = v {
            self.int(key, v);
        }
    }
    pub fn bool(&mut self, key: &str, v: &At<bool>) {
        self.raw(key, v.v.to_string(), v.line);
    }
    pub fn opt_bool(&mut self, key: &str, v: &Option<At<bool>>) {
        if let Some(v) = v {
            self.bool(key, v);
        }
    }
    /// An array written one element per line, each with its origin.
    pub fn array(&mut self, key: &str, items: Vec<(String, usize)>) {
        self.items.push(Item::Array {
            key: key.to_owned(),
            items,
        });
    }
    /// A field the engine cannot take (yet), written as a comment.
    pub fn commented(&mut self, key: &str, value: String, line: usize, reason: &str) {
        self.items.push(Item::Commented {
            key: key.to_owned(),
            value,
            line,
            reason: reason.to_owned(),
        });
    }
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// A TOML basic string.
pub(crate) fn toml_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A TOML array of strings on one line.
pub(crate) fn toml_str_array<S: AsRef<str>>(items: &[S]) -> String {
    let parts: Vec<String> = items.iter().map(|s| toml_str(s.as_ref())).collect();
    format!("[{}]", parts.join(", "))
}

const COMMENT_COLUMN: usize = 44;

/// Comment text TOML accepts: control characters (other than tab) shown as `?`.
pub(crate) fn comment_text(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() && c != '\t' { '?' } else { c })
        .collect()
}

fn with_origin(out: &mut String, body: &str, file: &str, line: usize, extra: &str) {
    out.push_str(body);
    if line == 0 && extra.is_empty() {
        return;
    }
    let (file, extra) = (comment_text(file), comment_text(extra));
    let pad = COMMENT_COLUMN.saturating_sub(body.chars().count()).max(2);
    out.extend(std::iter::repeat_n(' ', pad));
    if line > 0 {
        let _ = write!(out, "# from {file}:{line}");
        if !extra.is_empty() {
            let _ = write!(out, ": {extra}");
        }
    } else {
        let _ = write!(out, "# {extra}");
    }
}

/// The whole file, and for each of its lines (index 0 is line 1) the HAProxy line it
/// came from (0 for none).
pub(crate) fn render(tables: &[Table], file: &str, preamble: &[String]) -> (String, Vec<usize>) {
    let mut out = String::new();
    let mut origins = Vec::new();
    let mut line = |out: &mut String, text: String, from: usize| {
        out.push_str(&text);
        out.push('\n');
        origins.push(from);
    };
    for p in preamble {
        line(
            &mut out,
            format!("# {}", comment_text(p)).trim_end().to_owned(),
            0,
        );
    }
    for t in tables {
        if t.is_empty() && !t.header.starts_with("[[") {
            continue;
        }
        line(&mut out, String::new(), 0);
        let mut s = String::new();
        with_origin(&mut s, &t.header, file, t.line, &t.title);
        line(&mut out, s, t.line);
        for it in &t.items {
            let mut s = String::new();
            let from = match it {
                Item::Field {
                    key,
                    value,
                    line,
                    note,
                } => {
                    with_origin(&mut s, &format!("{key} = {value}"), file, *line, note);
                    *line
                }
                Item::Array { key, items } => {
                    let head = items.first().map_or(0, |i| i.1);
                    let mut h = String::new();
                    with_origin(&mut h, &format!("{key} = ["), file, head, "");
                    line(&mut out, h, head);
                    for (v, from) in items {
                        let mut s = String::new();
                        with_origin(&mut s, &format!("    {v},"), file, *from, "");
                        line(&mut out, s, *from);
                    }
                    s.push(']');
                    0
                }
                Item::Commented {
                    key,
                    value,
                    line,
                    reason,
                } => {
                    with_origin(&mut s, &format!("# {key} = {value}"), file, *line, reason);
                    *line
                }
            };
            line(&mut out, s, from);
        }
    }
    (out, origins)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped() {
        assert_eq!(toml_str("a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(toml_str("x\r\ny\u{1}"), "\"x\\r\\ny\\u0001\"");
        assert_eq!(
            toml_str_array(&["h2", "http/1.1"]),
            "[\"h2\", \"http/1.1\"]"
        );
    }

    #[test]
    fn fields_carry_their_origin() {
        let mut t = Table::new("[global]", 0, "");
        t.int("maxconn", &at(100, 7));
        t.commented("x", "1".into(), 9, "not yet");
        t.array("a", vec![(toml_str("p"), 11), (toml_str("q"), 12)]);
        let (text, origins) = render(&[t], "h.cfg", &["head".into()]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "# head");
        assert_eq!(lines[2], "[global]");
        assert!(lines[3].starts_with("maxconn = 100 "), "{}", lines[3]);
        assert!(lines[3].ends_with("# from h.cfg:7"), "{}", lines[3]);
        assert!(lines[4].starts_with("# x = 1 "), "{}", lines[4]);
        assert!(
            lines[4].ends_with("# from h.cfg:9: not yet"),
            "{}",
            lines[4]
        );
        assert!(lines[5].starts_with("a = [ "), "{}", lines[5]);
        assert!(lines[6].ends_with("# from h.cfg:11"), "{}", lines[6]);
        assert_eq!(lines[8], "]");
        assert_eq!(origins, vec![0, 0, 0, 7, 9, 11, 11, 12, 0]);
        let v: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(v["global"]["maxconn"].as_integer(), Some(100));
        assert_eq!(v["global"]["a"][1].as_str(), Some("q"));
    }
}
