//! Shared pieces of the HTTP fuzz harness: case counts, limits, byte helpers, line and
//! field splitting for the models, mutations, input splits and the corpus.
//!
//! Modules: `req_model` (reference model of how a request head is judged), `req_gen`
//! (request generators), `req_check` (the request properties, with the head the engine
//! forwards, built by `forward`), `resp` (response model and properties), `resp_gen`
//! (response generators), `chunk` (reference chunked decoder, the streaming driver,
//! encoders and hostile inputs).

pub mod chunk;
pub mod forward;
pub mod req_check;
pub mod req_gen;
pub mod req_model;
pub mod resp;
pub mod resp_gen;

use std::path::{Path, PathBuf};

use engine::http::HeadLimits;
use proptest::prelude::*;
use proptest::test_runner::{FileFailurePersistence, RngSeed};

/// Cases per property: `FUZZ_CASES` or the default kept small enough for CI.
pub fn cases(default: u32) -> u32 {
    std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The random seed: `FUZZ_SEED`, else fixed in CI (`CI` set: every run checks the same
/// cases, so a red CI is never a new find by chance), else random.
pub fn seed() -> RngSeed {
    match std::env::var("FUZZ_SEED").ok().and_then(|v| v.parse().ok()) {
        Some(s) => RngSeed::Fixed(s),
        None if std::env::var_os("CI").is_some() => RngSeed::Fixed(0x5eed_f022),
        None => RngSeed::Random,
    }
}

/// The proptest configuration for one property.
pub fn config(default_cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases: cases(default_cases),
        rng_seed: seed(),
        // Shrinking long inputs can take long; keep it bounded.
        max_shrink_iters: 4096,
        // Failures go to tests/fuzz_http.proptest-regressions, replayed first next time.
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..ProptestConfig::default()
    }
}

/// Small limits, so that generated inputs reach them cheaply.
pub const SMALL: HeadLimits = HeadLimits {
    max_head_bytes: 1024,
    max_target_bytes: 256,
    max_headers: 12,
};

/// The engine's defaults (`[limits]` unset).
pub const DEFAULT: HeadLimits = HeadLimits {
    max_head_bytes: 16384,
    max_target_bytes: 8192,
    max_headers: 100,
};

/// Generous limits for re-parsing what the engine itself wrote.
pub const BIG: HeadLimits = HeadLimits {
    max_head_bytes: 1 << 20,
    max_target_bytes: 1 << 19,
    max_headers: 1000,
};

/// RFC 9110 §5.6.2 tchar.
pub fn tchar(c: u8) -> bool {
    matches!(c,
        b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9'
        | b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+' | b'-' | b'.'
        | b'^' | b'_' | b'`' | b'|' | b'~')
}

/// Strips optional whitespace (SP, HTAB) from both ends.
pub fn ows_trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// Every CR is followed by LF and every LF follows a CR.
pub fn crlf_only(b: &[u8]) -> bool {
    b.iter().enumerate().all(|(i, &c)| match c {
        b'\r' => b.get(i + 1) == Some(&b'\n'),
        b'\n' => i > 0 && b[i - 1] == b'\r',
        _ => true,
    })
}

/// Readable rendering of bytes for failure messages.
pub fn show(b: &[u8]) -> String {
    let mut s = String::new();
    for &c in b.iter().take(600) {
        match c {
            b'\r' => s.push_str("\\r"),
            b'\n' => s.push_str("\\n"),
            b'\\' => s.push_str("\\\\"),
            0x20..=0x7e => s.push(c as char),
            _ => s.push_str(&format!("\\x{c:02x}")),
        }
    }
    if b.len() > 600 {
        s.push_str(&format!("...({} bytes)", b.len()));
    }
    s
}

/// Bytes that parsers get wrong most often.
pub const NASTY: &[u8] = b"\r\n\0\x0b\x0c\t :;,=\"\x7f\x80\xff0aAzZ-_";

/// One byte-level mutation.
#[derive(Debug, Clone)]
pub enum Mutation {
    Insert(prop::sample::Index, u8),
    Replace(prop::sample::Index, u8),
    Delete(prop::sample::Index),
    /// Duplicate a slice of up to 40 bytes in place (repeats a header, a CRLF...).
    Dup(prop::sample::Index, u8),
}

pub fn mutation() -> impl Strategy<Value = Mutation> {
    let byte = prop_oneof![
        4 => prop::sample::select(NASTY.to_vec()),
        1 => any::<u8>(),
    ];
    prop_oneof![
        (any::<prop::sample::Index>(), byte.clone()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        (any::<prop::sample::Index>(), byte).prop_map(|(i, b)| Mutation::Replace(i, b)),
        any::<prop::sample::Index>().prop_map(Mutation::Delete),
        (any::<prop::sample::Index>(), 1u8..40).prop_map(|(i, n)| Mutation::Dup(i, n)),
    ]
}

/// Zero mutations most of the time, else a few.
pub fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    prop_oneof![
        3 => Just(Vec::new()),
        1 => prop::collection::vec(mutation(), 1..4),
    ]
}

pub fn apply(mut b: Vec<u8>, muts: &[Mutation]) -> Vec<u8> {
    for m in muts {
        match m {
            Mutation::Insert(i, c) => {
                let at = i.index(b.len() + 1);
                b.insert(at, *c);
            }
            Mutation::Replace(i, c) if !b.is_empty() => {
                let at = i.index(b.len());
                b[at] = *c;
            }
            Mutation::Delete(i) if !b.is_empty() => {
                let at = i.index(b.len());
                b.remove(at);
            }
            Mutation::Dup(i, n) if !b.is_empty() => {
                let at = i.index(b.len());
                let end = (at + *n as usize).min(b.len());
                let piece = b[at..end].to_vec();
                b.splice(end..end, piece);
            }
            _ => {}
        }
    }
    b
}

/// Split points: the pieces an input arrives in (sorted, deduplicated, inside the input).
pub fn cuts() -> impl Strategy<Value = Vec<prop::sample::Index>> {
    prop_oneof![
        1 => Just(Vec::new()),
        4 => prop::collection::vec(any::<prop::sample::Index>(), 1..8),
    ]
}

/// Where `cuts` fall in an input of `len` bytes.
pub fn positions(cuts: &[prop::sample::Index], len: usize) -> Vec<usize> {
    cuts.iter().map(|i| i.index(len + 1)).collect()
}

/// The input cut at `at` (positions inside it, in any order).
pub fn pieces<'a>(input: &'a [u8], at: &[usize]) -> Vec<&'a [u8]> {
    let mut at: Vec<usize> = at.iter().map(|&p| p.min(input.len())).collect();
    at.push(0);
    at.push(input.len());
    at.sort_unstable();
    at.dedup();
    at.windows(2).map(|w| &input[w[0]..w[1]]).collect()
}

/// A line of the head: its content (without the line end) and whether it ended in CRLF.
pub struct Line<'a> {
    pub text: &'a [u8],
    pub crlf: bool,
}

/// Splits at LF; the head ends at the first empty line after the request line. Returns the
/// lines (request line first) and the head's end, or None when incomplete. Leading empty
/// lines are returned separately (their count and whether any ended in a bare LF).
pub fn head_lines(buf: &[u8]) -> (usize, bool, Vec<Line<'_>>, Option<usize>) {
    let mut pos = 0;
    let mut leading = 0;
    let mut leading_bare_lf = false;
    let mut out = Vec::new();
    while let Some(nl) = buf[pos..].iter().position(|&c| c == b'\n') {
        let raw = &buf[pos..pos + nl];
        let (text, crlf) = match raw.strip_suffix(b"\r") {
            Some(t) => (t, true),
            None => (raw, false),
        };
        pos += nl + 1;
        if text.is_empty() && out.is_empty() {
            leading += 1;
            leading_bare_lf |= !crlf;
            continue;
        }
        if text.is_empty() {
            out.push(Line { text, crlf });
            return (leading, leading_bare_lf, out, Some(pos));
        }
        out.push(Line { text, crlf });
    }
    (leading, leading_bare_lf, out, None)
}

/// field-line = field-name ":" OWS field-value OWS (RFC 9112 §5): (name, value without
/// OWS), or None when the line is not one.
pub fn field_line(t: &[u8]) -> Option<(&[u8], &[u8])> {
    if t.first().is_none_or(|&c| c == b' ' || c == b'\t') {
        // obs-fold, or whitespace before the first field (§2.2, §5.2): reject.
        return None;
    }
    let colon = t.iter().position(|&c| c == b':')?;
    let (name, value) = (&t[..colon], ows_trim(&t[colon + 1..]));
    // A name is a token: this refuses "Name :" and "Name\t:".
    if name.is_empty() || !name.iter().all(|&c| tchar(c)) {
        return None;
    }
    // field-vchar = VCHAR / obs-text, with SP and HTAB inside.
    let vchar = |c: u8| c == b'\t' || c == b' ' || (0x21..=0x7e).contains(&c) || c >= 0x80;
    value.iter().all(|&c| vchar(c)).then_some((name, value))
}

/// The values of the fields called `n` (any case).
pub fn named<'a, 'f>(
    fields: &'f [(&'a [u8], &'a [u8])],
    n: &'f str,
) -> impl Iterator<Item = &'a [u8]> + 'f {
    fields
        .iter()
        .filter(move |(k, _)| k.eq_ignore_ascii_case(n.as_bytes()))
        .map(|(_, v)| *v)
}

/// The elements of a list value (RFC 9110 §5.6.1), without OWS, empty ones kept.
pub fn elements(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    v.split(|&c| c == b',').map(ows_trim)
}

/// `engine/tests/corpus/<kind>`.
pub fn corpus_dir(kind: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(kind)
}

/// Every file of a corpus directory, sorted by name: (file name, bytes).
pub fn corpus(kind: &str) -> Vec<(String, Vec<u8>)> {
    let dir = corpus_dir(kind);
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("corpus entry").path())
        .filter(|p| p.is_file())
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).expect("corpus file"))
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "empty corpus {}", dir.display());
    out
}

/// What a corpus file's name says about it: `refuse-*` must be refused, `accept-*`
/// accepted, `bug-*` is a known parser bug (replayed by an ignored test), anything else
/// only has to keep the properties.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    Refuse,
    Accept,
    Bug,
    Any,
}

pub fn expect_of(name: &str) -> Expect {
    if name.starts_with("refuse-") {
        Expect::Refuse
    } else if name.starts_with("accept-") {
        Expect::Accept
    } else if name.starts_with("bug-") {
        Expect::Bug
    } else {
        Expect::Any
    }
}
