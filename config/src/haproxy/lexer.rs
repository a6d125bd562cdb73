//! HAProxy's line and word syntax: one directive per line, words separated by spaces or
//! tabs, `#` starting a comment, `"..."` (escapes processed) and `'...'` (taken as
//! written) grouping words, and backslash escapes outside single quotes (`\ `, `\#`,
//! `\\`, `\"`, `\'`, `\r`, `\n`, `\t`, `\xHH`). Environment variables (`$NAME`,
//! `${NAME}`) are left as written: the importer does not know the HAProxy host's
//! environment.

/// One non-empty line: its words, after quotes and escapes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Line {
    /// 1-based.
    pub no: usize,
    pub words: Vec<String>,
    /// The line as written, trimmed, without its trailing comment.
    pub raw: String,
}

/// A line the lexer could not read (an unterminated quote, a bad `\x` escape).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LexError {
    pub no: usize,
    pub raw: String,
    pub message: String,
}

/// Every non-empty, non-comment line of `text`, and the lines that could not be read.
pub(crate) fn lex(text: &str) -> (Vec<Line>, Vec<LexError>) {
    let mut lines = Vec::new();
    let mut errors = Vec::new();
    for (i, l) in text.split('\n').enumerate() {
        let l = l.strip_suffix('\r').unwrap_or(l);
        match split_words(l) {
            Ok((words, end)) => {
                if !words.is_empty() {
                    lines.push(Line {
                        no: i + 1,
                        words,
                        raw: l[..end].trim().to_owned(),
                    });
                }
            }
            Err(message) => errors.push(LexError {
                no: i + 1,
                raw: l.trim().to_owned(),
                message,
            }),
        }
    }
    (lines, errors)
}

#[derive(Clone, Copy, PartialEq)]
enum Quote {
    None,
    Double,
    Single,
}

/// The words of one line and the byte offset where its comment starts (or its length).
fn split_words(line: &str) -> Result<(Vec<String>, usize), String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    // A word has begun: `""` is an empty word, not nothing.
    let mut in_word = false;
    let mut quote = Quote::None;
    let mut it = line.char_indices().peekable();
    let mut end = line.len();
    while let Some((pos, c)) = it.next() {
        match (quote, c) {
            (Quote::Single, '\'') => quote = Quote::None,
            (Quote::Single, _) => cur.push(c),
            (Quote::Double, '"') => quote = Quote::None,
            (Quote::None, '"') => {
                quote = Quote::Double;
                in_word = true;
            }
            (Quote::None, '\'') => {
                quote = Quote::Single;
                in_word = true;
            }
            (_, '\\') => {
                in_word = true;
                escape(&mut it, &mut cur)?;
            }
            (Quote::None, '#') => {
                end = pos;
                break;
            }
            (Quote::None, ' ' | '\t') => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            _ => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    match quote {
        Quote::Double => return Err("a double quote (\") is not closed on this line".into()),
        Quote::Single => return Err("a single quote (') is not closed on this line".into()),
        Quote::None => {}
    }
    if in_word {
        words.push(cur);
    }
    Ok((words, end))
}

/// The character after a backslash, as HAProxy reads it.
fn escape(
    it: &mut std::iter::Peekable<std::str::CharIndices<'_>>,
    cur: &mut String,
) -> Result<(), String> {
    match it.next().map(|(_, c)| c) {
        None => cur.push('\\'),
        Some('r') => cur.push('\r'),
        Some('n') => cur.push('\n'),
        Some('t') => cur.push('\t'),
        Some('x') => {
            let hex: String = (0..2).filter_map(|_| it.next().map(|(_, c)| c)).collect();
            match u8::from_str_radix(&hex, 16) {
                Ok(b) if hex.len() == 2 => cur.push(char::from(b)),
                _ => return Err(format!("\\x{hex} is not a hexadecimal escape (\\xHH)")),
            }
        }
        Some(c @ (' ' | '#' | '\\' | '\'' | '"' | '$')) => cur.push(c),
        Some(c) => {
            cur.push('\\');
            cur.push(c);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(l: &str) -> Vec<String> {
        split_words(l).unwrap().0
    }

    #[test]
    fn words_and_spaces() {
        assert_eq!(
            words("  bind *:80   ssl\tcrt /a.pem "),
            ["bind", "*:80", "ssl", "crt", "/a.pem"]
        );
        assert!(words("").is_empty());
        assert!(words("   \t ").is_empty());
    }

    #[test]
    fn comments() {
        assert!(words("# server x 1.2.3.4:80").is_empty());
        assert!(words("    # indented comment").is_empty());
        assert_eq!(words("maxconn 100 # the limit"), ["maxconn", "100"]);
        assert_eq!(words("maxconn 100# no space"), ["maxconn", "100"]);
        assert_eq!(
            words("a \"#not\" '#comment' \\#x"),
            ["a", "#not", "#comment", "#x"]
        );
        let (_, end) = split_words("log global   # why").unwrap();
        assert_eq!(&"log global   # why"[..end], "log global   ");
    }

    #[test]
    fn quotes() {
        assert_eq!(
            words("http-check expect string \"Moodle\""),
            ["http-check", "expect", "string", "Moodle"]
        );
        assert_eq!(
            words("x \"two words\" 'single \\n kept'"),
            ["x", "two words", "single \\n kept"]
        );
        assert_eq!(words("x foo\"bar baz\"qux"), ["x", "foobar bazqux"]);
        assert_eq!(words("x \"\" y"), ["x", "", "y"]);
        assert_eq!(words("x '' y"), ["x", "", "y"]);
        assert_eq!(words("x \"a\\\"b\""), ["x", "a\"b"]);
        assert_eq!(words("x 'it''s'"), ["x", "its"]);
    }

    #[test]
    fn escapes() {
        assert_eq!(words("a\\ b c"), ["a b", "c"]);
        assert_eq!(
            words("x HTTP/1.1\\r\\nHost:\\ moodle"),
            ["x", "HTTP/1.1\r\nHost: moodle"]
        );
        assert_eq!(words("x \\x41\\t"), ["x", "A\t"]);
        assert_eq!(words("x \\\\ \\'"), ["x", "\\", "'"]);
        assert_eq!(words("x \\d+"), ["x", "\\d+"]);
        assert_eq!(words("x \"${HOME}\""), ["x", "${HOME}"]);
        assert!(split_words("x \\xZZ").is_err());
        assert!(split_words("x \\x4").is_err());
    }

    #[test]
    fn unterminated_quotes_are_errors() {
        assert!(split_words("x \"open").is_err());
        assert!(split_words("x 'open").is_err());
    }

    #[test]
    fn lines_numbered_from_one_with_crlf() {
        let (lines, errors) = lex("global\r\n\r\n  maxconn 10 # c\r\n# only\nbad \"x\n");
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].no, 1);
        assert_eq!(lines[0].words, ["global"]);
        assert_eq!(lines[1].no, 3);
        assert_eq!(lines[1].raw, "maxconn 10");
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].no, 5);
    }

    #[test]
    fn never_panics_on_odd_input() {
        for l in [
            "\\",
            "\"\\",
            "'\\",
            "\\x",
            "\\x\u{e9}9",
            "é \"é\" 'é'",
            "\0\0",
            "#",
            "\"#\"#",
        ] {
            let _ = split_words(l);
        }
    }
}
