//! Request generators: mostly well-formed heads with the framing headers drawn from known
//! smuggling shapes, then (sometimes) byte-level mutations.

use proptest::prelude::*;

use super::{apply, mutations};

fn b(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

fn pick(items: &[&str]) -> BoxedStrategy<Vec<u8>> {
    prop::sample::select(items.iter().map(|s| b(s)).collect::<Vec<_>>()).boxed()
}

/// Random ASCII case, so that names are matched case-insensitively.
fn mixed_case(s: Vec<u8>) -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        3 => Just(s.clone()),
        1 => any::<u64>().prop_map(move |m| {
            s.iter()
                .enumerate()
                .map(|(i, c)| {
                    if m >> (i % 64) & 1 == 1 {
                        c.to_ascii_uppercase()
                    } else {
                        c.to_ascii_lowercase()
                    }
                })
                .collect()
        }),
    ]
    .boxed()
}

pub fn method() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        30 => pick(&["GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH"]),
        2 => pick(&["CONNECT", "TRACE", "M-SEARCH", "PROPFIND", "X_Y"]),
        1 => pick(&["get", "Get", "G@T", "GE T", "", "GET\0", "\u{e9}", "GET\t"]),
    ]
    .boxed()
}

pub fn target() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        30 => "/[a-zA-Z0-9._~/?=&%-]{0,30}".prop_map(|s| s.into_bytes()),
        2 => pick(&["*", "http://a.example/x", "https://a.example", "HTTP://A/", "http://",
                    "a.example:443", "//double", "/a b", "/\u{e9}", "/a\x7f", "foo", "/#frag"]),
        1 => (200usize..300).prop_map(|n| { let mut v = b("/"); v.resize(n, b'a'); v }),
    ]
    .boxed()
}

pub fn version() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        30 => pick(&["HTTP/1.1"]),
        8 => pick(&["HTTP/1.0"]),
        1 => pick(&["HTTP/1.2", "HTTP/2.0", "http/1.1", "HTTP/1.1 ", "HTTP/1", "HTTP/1.10"]),
    ]
    .boxed()
}

fn eol() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        120 => Just(b("\r\n")),
        1 => pick(&["\n", "\r", "\r\r\n", "\n\r"]),
    ]
    .boxed()
}

fn sep() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        60 => pick(&[": ", ":"]),
        4 => pick(&[":\t", ":  ", ": \t "]),
        1 => pick(&[" :", " : ", "\t:", "\x0b:", "::"]),
    ]
    .boxed()
}

pub fn host_value() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        24 => pick(&["a.example", "moodle.example.org:8080", "127.0.0.1", "[::1]:443", "a"]),
        2 => pick(&["", " ", "a b", "a/b", "a@b", "a:b:c", "[::1", "[zz]", "a:123456",
                    ":80", "a:", "[::1]x", "a\tb", "\u{e9}.example", "a,b", "a%41"]),
        1 => (250usize..260).prop_map(|n| vec![b'h'; n]),
    ]
    .boxed()
}

fn length_value() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        6 => (0u64..100).prop_map(|n| n.to_string().into_bytes()),
        3 => pick(&["0", "5, 5", "5,5", "005", " 5 ", "5,6", "5, ", ",5", "", "-1", "+5",
                    "5 5", "0x5", "1e3", "5;", "\x0b5", "9999999999999999999",
                    "18446744073709551616", "99999999999999999999", "\u{661}"]),
    ]
    .boxed()
}

fn coding_list() -> BoxedStrategy<Vec<u8>> {
    let coding = prop_oneof![
        8 => pick(&["chunked"]),
        3 => pick(&["gzip", "deflate", "identity", "x-gzip", "compress"]),
        2 => pick(&["CHUNKED", "Chunked", "chunked;q=1", "\x0bchunked", "chunked\x0b",
                    "chunk", "chunked\0", "foo", "\"chunked\"", "\u{e9}"]),
    ];
    let joiner = pick(&[", ", ",", " , ", ",,", ", ,"]);
    (prop::collection::vec(coding, 1..4), joiner)
        .prop_map(|(cs, j)| cs.join(j.as_slice()))
        .boxed()
}

fn connection_value() -> BoxedStrategy<Vec<u8>> {
    pick(&[
        "close",
        "keep-alive",
        "Upgrade",
        "close, X-A",
        "Host",
        "Content-Length",
        "Transfer-Encoding",
        "Cookie",
        "X-Forwarded-For",
        "TE",
        "keep-alive, Upgrade",
        "Upgrade, Host",
        "x-a, x-b",
        "",
    ])
}

fn cookie_value() -> BoxedStrategy<Vec<u8>> {
    pick(&[
        "a=b",
        "SERVERID=s1; a=b",
        "MoodleSession=s1~abc; x=y",
        "engine_turn=1; a=b",
        "engine_turn=2",
        "SERVERID=",
        "; ;",
        "MoodleSession=~",
        "a=b;SERVERID=s2",
    ])
}

fn plain_value() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        16 => "[ -~]{0,24}".prop_map(|s| s.into_bytes()),
        1 => prop::collection::vec(
            prop::sample::select(b"ab \t\x80\xff\r\n\0\x0b\x7f;,=\"".to_vec()), 0..12),
        1 => (500usize..1100).prop_map(|n| vec![b'v'; n]),
    ]
    .boxed()
}

/// A header line without its line end: name, separator, value.
pub fn other_header() -> BoxedStrategy<Vec<u8>> {
    let named = |n: &'static str, v: BoxedStrategy<Vec<u8>>| (mixed_case(b(n)), v);
    let nv = prop_oneof![
        6 => (pick(&["Accept", "User-Agent", "X-A", "Accept-Language", "Referer"]), plain_value()),
        2 => named("Connection", connection_value()),
        2 => named("Cookie", cookie_value()),
        1 => named("Upgrade", pick(&["websocket", "h2c", ""])),
        1 => named("Expect", pick(&["100-continue", "100-Continue", "foo"])),
        1 => (pick(&["Keep-Alive", "TE", "Trailer", "Proxy-Connection", "X-Forwarded-For",
                     "X-Forwarded-Proto", "X-Forwarded-SSL", "Content_Length",
                     "Transfer_Encoding", "X-B", "Content-Length ", " Host", "Host\0"]),
              plain_value()),
        1 => ("[!#$%&'*+.^_`|~0-9A-Za-z-]{1,12}".prop_map(String::into_bytes), plain_value()),
    ];
    (nv, sep())
        .prop_map(|((n, v), s)| [n, s, v].concat())
        .boxed()
}

fn header(name: &'static str, value: BoxedStrategy<Vec<u8>>) -> BoxedStrategy<Vec<u8>> {
    (mixed_case(b(name)), sep(), value)
        .prop_map(|(n, s, v)| [n, s, v].concat())
        .boxed()
}

/// The Host headers: usually one good one.
fn hosts() -> BoxedStrategy<Vec<Vec<u8>>> {
    prop_oneof![
        24 => header("Host", host_value()).prop_map(|h| vec![h]),
        1 => Just(Vec::new()),
        1 => prop::collection::vec(header("Host", host_value()), 2..3),
    ]
    .boxed()
}

/// Content-Length and Transfer-Encoding: the shapes that smuggling tries.
fn framing() -> BoxedStrategy<Vec<Vec<u8>>> {
    let cl = || header("Content-Length", length_value());
    let te = || header("Transfer-Encoding", coding_list());
    prop_oneof![
        6 => Just(Vec::new()),
        4 => cl().prop_map(|h| vec![h]),
        4 => te().prop_map(|h| vec![h]),
        2 => (cl(), te()).prop_map(|(a, b)| vec![a, b]),
        2 => (te(), cl()).prop_map(|(a, b)| vec![a, b]),
        2 => (cl(), cl()).prop_map(|(a, b)| vec![a, b]),
        1 => length_value().prop_map(|v| {
            let h = [b("Content-Length: "), v].concat();
            vec![h.clone(), h]
        }),
        2 => (te(), te()).prop_map(|(a, b)| vec![a, b]),
    ]
    .boxed()
}

/// A request: head (maybe mutated), then some body or pipelined bytes.
pub fn request() -> BoxedStrategy<Vec<u8>> {
    let line = (method(), target(), version(), eol())
        .prop_map(|(m, t, v, e)| [m, b(" "), t, b(" "), v, e].concat());
    let lead = prop_oneof![12 => Just(b("")), 1 => pick(&["\r\n", "\r\n\r\n", "\n", "\r"])];
    // Now and then enough plain fields to pass the header-count limit.
    let filler = prop_oneof![
        10 => Just(Vec::new()),
        1 => (8usize..24).prop_map(|n| (0..n).map(|i| format!("X-F{i}: v").into_bytes()).collect()),
    ];
    let headers = (
        hosts(),
        framing(),
        prop::collection::vec(other_header(), 0..6),
        filler,
    )
        .prop_flat_map(|(h, f, o, x)| Just([h, f, o, x].concat()).prop_shuffle());
    let lines = (headers, prop::collection::vec(eol(), 40)).prop_map(|(hs, eols)| {
        hs.into_iter()
            .enumerate()
            .flat_map(|(i, h)| [h, eols[i % eols.len()].clone()].concat())
            .collect::<Vec<u8>>()
    });
    let tail = prop_oneof![
        3 => Just(Vec::new()),
        1 => pick(&["hello", "0\r\n\r\n", "5\r\nhello\r\n0\r\n\r\n",
                    "GET /next HTTP/1.1\r\nHost: a\r\n\r\n"]),
    ];
    (lead, line, lines, eol(), tail, mutations())
        .prop_map(|(lead, line, hs, end, tail, muts)| {
            let head = [lead, line, hs, end].concat();
            let mut all = apply(head, &muts);
            all.extend_from_slice(&tail);
            all
        })
        .boxed()
}

/// Arbitrary bytes shaped a little like a head (for the "never panics, never forwards
/// garbage" side).
pub fn noise() -> BoxedStrategy<Vec<u8>> {
    let atom = prop_oneof![
        4 => pick(&["GET ", "/ ", "HTTP/1.1", "HTTP/1.0", "\r\n", "Host: a", "\n", ": ",
                    "Content-Length: 1", "Transfer-Encoding: chunked", ",", " ", "\r"]),
        1 => any::<u8>().prop_map(|c| vec![c]),
    ];
    prop::collection::vec(atom, 0..40)
        .prop_map(|v| v.concat())
        .boxed()
}
