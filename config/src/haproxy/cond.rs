//! The few HAProxy conditions the engine has a counterpart for: whether the connection
//! is TLS (`ssl_fc`, which the engine knows from the frontend) and path prefixes kept
//! out of a redirect (`path_beg`, which become `except_prefixes`). Anything else is
//! reported as not carried.

use super::model::Directive;

/// Where a rule applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ssl {
    /// Both plain and TLS connections (no `ssl_fc` in the condition).
    Any,
    /// Plain connections only (`!{ ssl_fc }`, `unless { ssl_fc }`).
    Plain,
    /// TLS connections only (`{ ssl_fc }`).
    Tls,
}

/// What a named ACL tests, when the engine can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Test {
    SslFc,
    PathBeg(Vec<String>),
    Other,
}

#[derive(Debug, Clone)]
pub(crate) struct Acl {
    pub name: String,
    pub test: Test,
    pub d: Directive,
}

/// A condition the engine can carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cond {
    pub ssl: Ssl,
    /// Path prefixes for which the rule does not apply.
    pub except: Vec<String>,
    /// Named ACLs the condition used (reported as carried with it).
    pub acls: Vec<String>,
}

impl Cond {
    pub fn always() -> Cond {
        Cond {
            ssl: Ssl::Any,
            except: Vec::new(),
            acls: Vec::new(),
        }
    }
}

/// `acl NAME FETCH [flags] VALUES...`
pub(crate) fn parse_acl(d: &Directive) -> Option<Acl> {
    let name = d.words.get(1)?.clone();
    let test = test_of(&d.words[2..]);
    Some(Acl {
        name,
        test,
        d: d.clone(),
    })
}

/// What `FETCH [flags] VALUES...` (inside `{ }` or after `acl NAME`) tests.
fn test_of(words: &[String]) -> Test {
    let Some(fetch) = words.first() else {
        return Test::Other;
    };
    let mut values = Vec::new();
    let mut beg = fetch == "path_beg";
    let mut i = 1;
    while i < words.len() {
        match words[i].as_str() {
            "-i" | "--" => {}
            "-m" => {
                beg |= words.get(i + 1).map(String::as_str) == Some("beg");
                i += 1;
            }
            f if f.starts_with('-') => return Test::Other,
            v => values.push(v.to_owned()),
        }
        i += 1;
    }
    match fetch.as_str() {
        "ssl_fc" if values.is_empty() => Test::SslFc,
        "path_beg" | "path" if beg && !values.is_empty() => Test::PathBeg(values),
        _ => Test::Other,
    }
}

/// One term: optionally negated, a `{ anonymous ACL }` or a named ACL.
struct Term {
    neg: bool,
    test: Test,
    acl: Option<String>,
}

/// The terms of `words` and whether they are joined by `||` (else by AND).
fn terms(words: &[String], acls: &[Acl]) -> Result<(Vec<Term>, bool), String> {
    let mut out = Vec::new();
    let mut or = false;
    let mut and = false;
    let mut i = 0;
    let mut expect_term = true;
    while i < words.len() {
        let w = words[i].as_str();
        if w == "||" || w.eq_ignore_ascii_case("or") {
            or = true;
            expect_term = true;
            i += 1;
            continue;
        }
        if !expect_term {
            and = true;
        }
        let (neg, rest) = match w.strip_prefix('!') {
            Some(r) => (true, r),
            None => (false, w),
        };
        if rest == "{" || (rest.is_empty() && words.get(i + 1).map(String::as_str) == Some("{")) {
            let open = if rest.is_empty() { i + 1 } else { i };
            let close = words[open..]
                .iter()
                .position(|x| x == "}")
                .map(|p| open + p)
                .ok_or("an anonymous ACL `{` is not closed")?;
            out.push(Term {
                neg,
                test: test_of(&words[open + 1..close]),
                acl: None,
            });
            i = close + 1;
        } else {
            let defs: Vec<&Acl> = acls.iter().filter(|a| a.name == rest).collect();
            if defs.is_empty() {
                return Err(format!("no ACL is named `{rest}`"));
            }
            out.push(Term {
                neg,
                test: merge(&defs),
                acl: Some(rest.to_owned()),
            });
            i += 1;
        }
        expect_term = false;
    }
    if or && and {
        return Err("the condition mixes AND and OR".into());
    }
    Ok((out, or))
}

/// Several `acl` lines of one name are OR-ed: path prefixes add up.
fn merge(defs: &[&Acl]) -> Test {
    let mut values = Vec::new();
    for d in defs {
        match &d.test {
            Test::PathBeg(v) => values.extend(v.iter().cloned()),
            t if defs.len() == 1 => return t.clone(),
            _ => return Test::Other,
        }
    }
    Test::PathBeg(values)
}

/// The condition after `if` or `unless` (words from that keyword on), or `None` for
/// none; `Err` says why it cannot be carried. `allow_paths`: path exceptions allowed.
pub(crate) fn parse(words: &[String], acls: &[Acl], allow_paths: bool) -> Result<Cond, String> {
    let Some(kw) = words.first() else {
        return Ok(Cond::always());
    };
    let unless = match kw.as_str() {
        "if" => false,
        "unless" => true,
        w => return Err(format!("`{w}` where `if` or `unless` was expected")),
    };
    let (ts, or) = terms(&words[1..], acls)?;
    if ts.is_empty() {
        return Err(format!("`{kw}` without a condition"));
    }
    // `unless A || B` is `if !A !B`; `if` takes AND-ed terms only.
    if (unless && !or && ts.len() > 1) || (!unless && or) {
        return Err("only conditions of the form `if !{ ssl_fc } !{ path_beg ... }` (or `unless { ssl_fc } || { path_beg ... }`) can be carried".into());
    }
    let mut cond = Cond::always();
    for t in ts {
        let neg = t.neg != unless;
        if let Some(a) = &t.acl {
            cond.acls.push(a.clone());
        }
        match (t.test, neg) {
            (Test::SslFc, true) => cond.ssl = narrow(cond.ssl, Ssl::Plain)?,
            (Test::SslFc, false) => cond.ssl = narrow(cond.ssl, Ssl::Tls)?,
            (Test::PathBeg(v), true) if allow_paths => cond.except.extend(v),
            (Test::PathBeg(_), _) => {
                return Err("a path condition (the engine applies this rule to every path)".into())
            }
            (Test::Other, _) => {
                return Err("a condition on something other than ssl_fc or path_beg".into())
            }
        }
    }
    Ok(cond)
}

fn narrow(a: Ssl, b: Ssl) -> Result<Ssl, String> {
    match (a, b) {
        (Ssl::Any, x) => Ok(x),
        (x, y) if x == y => Ok(x),
        _ => Err("a condition that is never true (ssl_fc and !ssl_fc)".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::haproxy::lexer::lex;

    fn w(s: &str) -> Vec<String> {
        lex(s).0.remove(0).words
    }

    fn acls(text: &str) -> Vec<Acl> {
        lex(text).0.iter().filter_map(parse_acl).collect()
    }

    #[test]
    fn ssl_conditions() {
        let c = parse(&w("if !{ ssl_fc }"), &[], true).unwrap();
        assert_eq!(c.ssl, Ssl::Plain);
        assert_eq!(
            parse(&w("unless { ssl_fc }"), &[], true).unwrap().ssl,
            Ssl::Plain
        );
        assert_eq!(
            parse(&w("if { ssl_fc }"), &[], false).unwrap().ssl,
            Ssl::Tls
        );
        assert_eq!(parse(&[], &[], true).unwrap(), Cond::always());
        assert!(parse(&w("if { ssl_fc } !{ ssl_fc }"), &[], true).is_err());
    }

    #[test]
    fn path_exceptions() {
        let a = acls("acl acme path_beg /.well-known/acme-challenge/\nacl acme path_beg /x/");
        let c = parse(&w("if !{ ssl_fc } !acme"), &a, true).unwrap();
        assert_eq!(c.except, ["/.well-known/acme-challenge/", "/x/"]);
        assert_eq!(c.acls, ["acme"]);
        let c = parse(&w("unless { ssl_fc } || { path -m beg /a }"), &[], true).unwrap();
        assert_eq!((c.ssl, c.except), (Ssl::Plain, vec!["/a".to_owned()]));
        assert!(parse(&w("if !{ ssl_fc } !{ path_beg /a }"), &[], false).is_err());
        assert!(parse(&w("if { path_beg /a }"), &[], true).is_err());
    }

    #[test]
    fn other_conditions_are_refused() {
        let a = acls("acl host_a hdr(host) -i a.example\nacl b src 10.0.0.0/8");
        for c in [
            "if host_a",
            "if !{ ssl_fc } || b",
            "if { hdr(host) -i x }",
            "if nosuch",
            "if { ssl_fc",
            "when x",
            "if",
            "unless { ssl_fc } { path_beg /a }",
        ] {
            assert!(parse(&w(c), &a, true).is_err(), "{c}");
        }
    }
}
