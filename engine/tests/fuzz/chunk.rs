//! The chunked coding: a whole-buffer reference decoder written from RFC 9112 §7.1 and
//! the README, the streaming decoder driven the way the proxy drives it, and generators
//! of encoded bodies and of hostile ones.

use engine::http::chunked::{ChunkError, ChunkedDecoder};
use proptest::prelude::*;

use super::{apply, mutations, tchar};

/// What decoding an input comes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The body ended after `used` bytes of input.
    Done { data: Vec<u8>, used: usize },
    /// Not refused, not ended: more input is needed.
    More { data: Vec<u8> },
    /// Refused; `data` is what was decoded before the bad byte.
    Bad { data: Vec<u8> },
}

/// Policy: a size or trailer line may hold this many bytes before its LF.
pub const MAX_LINE: usize = 4096;
/// Policy: chunk sizes of at most 15 hex digits (the value fits in 60 bits).
pub const MAX_DIGITS: usize = 15;

/// The next line from `at`: its bytes without the LF, or None when the LF has not come.
/// Err when the line is already longer than allowed.
fn line(input: &[u8], at: usize) -> Result<Option<&[u8]>, ()> {
    let rest = &input[at..];
    match rest.iter().position(|&c| c == b'\n') {
        Some(n) if n > MAX_LINE => Err(()),
        Some(n) => Ok(Some(&rest[..n])),
        None if rest.len() > MAX_LINE => Err(()),
        None => Ok(None),
    }
}

/// chunk-size [ chunk-ext ] CRLF: the size, or None when the line is refused.
/// chunk-size = 1*HEXDIG (an empty size is a smuggling vector: refused); chunk-ext =
/// *( BWS ";" ... ); policy: after the first ";" any byte but CR and NUL (LF ends the line).
fn size_line(l: &[u8]) -> Option<u64> {
    let l = l.strip_suffix(b"\r")?;
    let digits = l.iter().take_while(|c| c.is_ascii_hexdigit()).count();
    if digits == 0 || digits > MAX_DIGITS {
        return None;
    }
    let ext = &l[digits..];
    let after_bws = ext
        .iter()
        .position(|&c| c != b' ' && c != b'\t')
        .map(|p| &ext[p..]);
    match after_bws {
        None if ext.is_empty() => {}
        Some([b';', rest @ ..]) if !rest.iter().any(|&c| c == b'\r' || c == 0) => {}
        _ => return None, // "5 x", "5 " alone, "5\r;x", ...
    }
    u64::from_str_radix(std::str::from_utf8(&l[..digits]).ok()?, 16).ok()
}

/// trailer-section = *( field-line CRLF ); policy: a name of tchars, a colon, no CR or
/// NUL in the line (no obs-fold: a line starting with whitespace has no token name).
fn trailer_line(l: &[u8]) -> bool {
    let Some(l) = l.strip_suffix(b"\r") else {
        return false;
    };
    let Some(colon) = l.iter().position(|&c| c == b':') else {
        return false;
    };
    colon > 0 && l[..colon].iter().all(|&c| tchar(c)) && !l.iter().any(|&c| c == b'\r' || c == 0)
}

/// The reference: decodes the whole input at once.
pub fn reference(input: &[u8]) -> Outcome {
    let mut data = Vec::new();
    let mut at = 0;
    loop {
        let l = match line(input, at) {
            Err(()) => return Outcome::Bad { data },
            Ok(None) => return Outcome::More { data },
            Ok(Some(l)) => l,
        };
        let Some(size) = size_line(l) else {
            return Outcome::Bad { data };
        };
        at += l.len() + 1;
        if size == 0 {
            return trailers(input, at, data);
        }
        let avail = (input.len() - at) as u64;
        let take = size.min(avail) as usize;
        data.extend_from_slice(&input[at..at + take]);
        at += take;
        if (take as u64) < size {
            return Outcome::More { data };
        }
        // chunk-data CRLF
        for want in [b'\r', b'\n'] {
            match input.get(at) {
                None => return Outcome::More { data },
                Some(&c) if c != want => return Outcome::Bad { data },
                Some(_) => at += 1,
            }
        }
    }
}

fn trailers(input: &[u8], mut at: usize, data: Vec<u8>) -> Outcome {
    loop {
        match line(input, at) {
            Err(()) => return Outcome::Bad { data },
            Ok(None) => return Outcome::More { data },
            Ok(Some(b"\r")) => return Outcome::Done { data, used: at + 2 },
            Ok(Some(l)) if trailer_line(l) => at += l.len() + 1,
            Ok(Some(_)) => return Outcome::Bad { data },
        }
    }
}

/// The engine's decoder fed `pieces` in turn, each stepped through as the proxy does
/// (`decode_into`: step the rest until it is used up or the body ends). Also returns the
/// error kind, for comparing runs with each other.
pub fn streamed(pieces: &[&[u8]]) -> (Outcome, Option<ChunkError>) {
    let mut dec = ChunkedDecoder::new();
    let mut data = Vec::new();
    let mut base = 0;
    for piece in pieces {
        let mut pos = 0;
        while pos < piece.len() {
            match dec.step(&piece[pos..]) {
                Ok(s) => {
                    assert!(s.consumed <= piece.len() - pos, "consumed past the input");
                    assert!(s.data.end <= s.consumed, "data outside the consumed bytes");
                    data.extend_from_slice(&piece[pos..][s.data.clone()]);
                    pos += s.consumed;
                    if s.done {
                        let used = base + pos;
                        return (Outcome::Done { data, used }, None);
                    }
                    if s.consumed == 0 {
                        panic!("step consumed nothing of {} bytes", piece.len() - pos);
                    }
                }
                Err(e) => return (Outcome::Bad { data }, Some(e)),
            }
        }
        base += piece.len();
    }
    let total = dec.total;
    assert_eq!(total, data.len() as u64, "decoder's total");
    (Outcome::More { data }, None)
}

/// One chunk of an encoded body: how its size is written and its extension.
#[derive(Debug, Clone)]
pub struct ChunkForm {
    pub len: usize,
    pub upper: bool,
    pub zeros: usize,
    pub ext: &'static str,
}

const EXTS: [&str; 7] = ["", "", ";a=b", ";x", " ;q=\"v w\"", ";a=b;c", "\t;n"];

pub fn chunk_form(max: usize) -> impl Strategy<Value = ChunkForm> {
    (
        1..=max,
        any::<bool>(),
        0usize..3,
        prop::sample::select(EXTS.to_vec()),
    )
        .prop_map(|(len, upper, zeros, ext)| ChunkForm {
            len,
            upper,
            zeros,
            ext,
        })
}

/// Encodes `data` with the given chunk forms (cycled), a last chunk and trailers.
pub fn encode(data: &[u8], forms: &[ChunkForm], last_ext: &str, trailers: &[String]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut at = 0;
    let mut i = 0;
    while at < data.len() {
        let f = &forms[i % forms.len()];
        let n = f.len.min(data.len() - at);
        let hex = if f.upper {
            format!("{n:X}")
        } else {
            format!("{n:x}")
        };
        let zeros = f.zeros.min(MAX_DIGITS - hex.len());
        out.extend_from_slice(format!("{}{hex}{}\r\n", "0".repeat(zeros), f.ext).as_bytes());
        out.extend_from_slice(&data[at..at + n]);
        out.extend_from_slice(b"\r\n");
        at += n;
        i += 1;
    }
    out.extend_from_slice(format!("0{last_ext}\r\n").as_bytes());
    for t in trailers {
        out.extend_from_slice(t.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

pub fn trailer() -> impl Strategy<Value = String> {
    ("[A-Za-z][A-Za-z0-9-]{0,10}", ":[ ]?", "[ -~]{0,20}").prop_map(|(n, s, v)| n + &s + &v)
}

/// A valid encoding: (data, encoded, bytes after the body).
pub fn encoded() -> BoxedStrategy<(Vec<u8>, Vec<u8>, Vec<u8>)> {
    (
        prop::collection::vec(any::<u8>(), 0..600),
        prop::collection::vec(chunk_form(300), 1..5),
        prop::sample::select(vec!["", ";a=b", " ;x"]),
        prop::collection::vec(trailer(), 0..3),
        prop::collection::vec(any::<u8>(), 0..8),
    )
        .prop_map(|(data, forms, last, trailers, after)| {
            let enc = encode(&data, &forms, last, &trailers);
            (data, enc, after)
        })
        .boxed()
}

/// Hostile inputs: mutated encodings, and size lines built from the bytes that matter.
pub fn hostile() -> BoxedStrategy<Vec<u8>> {
    let size_atom = prop_oneof![
        prop::sample::select(vec![
            "0",
            "1",
            "5",
            "a",
            "F",
            "0x",
            "x",
            ";",
            " ",
            "\t",
            "\r",
            "\n",
            "\r\n",
            "\0",
            "-",
            "+",
            "=",
            "\"",
            "hello",
            "00000000000000005",
            "fffffffffffffff",
            "ffffffffffffffff",
        ])
        .prop_map(|s| s.as_bytes().to_vec()),
        any::<u8>().prop_map(|c| vec![c]),
    ];
    prop_oneof![
        3 => (encoded(), mutations()).prop_map(|((_, enc, after), m)| {
            let mut v = apply(enc, &m);
            v.extend_from_slice(&after);
            v
        }),
        2 => prop::collection::vec(size_atom, 0..30).prop_map(|v| v.concat()),
        1 => (4090usize..4100, any::<bool>()).prop_map(|(n, trailer)| {
            // Lines around the length limit, in the size line or in a trailer.
            let long = format!("1;{}\r\n", "e".repeat(n));
            if trailer {
                format!("0\r\nX: {}\r\n\r\n", "t".repeat(n)).into_bytes()
            } else {
                [long.as_bytes(), b"a\r\n0\r\n\r\n"].concat()
            }
        }),
    ]
    .boxed()
}
