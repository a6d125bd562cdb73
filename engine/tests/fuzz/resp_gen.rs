//! Response generators: status lines across the body-less statuses, framing headers in
//! the shapes that confuse, then (sometimes) byte-level mutations.

use proptest::prelude::*;

use super::{apply, mutations};

fn b(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

fn pick(items: &[&str]) -> BoxedStrategy<Vec<u8>> {
    prop::sample::select(items.iter().map(|s| b(s)).collect::<Vec<_>>()).boxed()
}

fn status_line() -> BoxedStrategy<Vec<u8>> {
    let version = prop_oneof![
        8 => pick(&["HTTP/1.1"]),
        3 => pick(&["HTTP/1.0"]),
        1 => pick(&["HTTP/1.2", "HTTP/2", "http/1.1", "HTTP/1.1 ", "ICY"]),
    ];
    let code = prop_oneof![
        6 => pick(&["200", "204", "304", "100", "101", "103", "301", "404", "500", "502"]),
        2 => (0u16..1000).prop_map(|c| format!("{c:03}").into_bytes()),
        1 => pick(&["2000", "20", "2x0", "+20", " 200", ""]),
    ];
    let reason = prop_oneof![
        6 => pick(&[" OK", " No Content", " Not Modified", "", " ", " Some reason"]),
        1 => pick(&[" \u{e9}t\u{e9}", " a\0b", " a\rb", " a\x7fb", "\tOK", "  OK", " a\tb"]),
    ];
    (version, code, reason)
        .prop_map(|(v, c, r)| [v, b(" "), c, r].concat())
        .boxed()
}

fn name(n: &'static str) -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        3 => Just(b(n)),
        1 => Just(n.to_ascii_lowercase().into_bytes()),
        1 => Just(n.to_ascii_uppercase().into_bytes()),
    ]
    .boxed()
}

fn sep() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![8 => pick(&[": ", ":"]), 1 => pick(&[" :", ":\t", "\t:"])].boxed()
}

fn field(n: &'static str, v: BoxedStrategy<Vec<u8>>) -> BoxedStrategy<Vec<u8>> {
    (name(n), sep(), v)
        .prop_map(|(n, s, v)| [n, s, v].concat())
        .boxed()
}

fn length() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        4 => (0u64..50).prop_map(|n| n.to_string().into_bytes()),
        2 => pick(&["5, 5", "5,6", "", "-1", "+5", "0x5", " 7 ", "5 5",
                    "18446744073709551616", "9999999999999999999"]),
    ]
    .boxed()
}

fn codings() -> BoxedStrategy<Vec<u8>> {
    pick(&[
        "chunked",
        "gzip, chunked",
        "chunked, gzip",
        "identity",
        "chunked, chunked",
        "CHUNKED",
        "",
        " ",
        ",",
        "chunked,",
        "\x0bchunked",
        "gzip",
        "chunked;q=1",
    ])
}

fn fields() -> BoxedStrategy<Vec<Vec<u8>>> {
    let one = prop_oneof![
        4 => field("Content-Length", length()),
        4 => field("Transfer-Encoding", codings()),
        3 => field("Connection", pick(&["close", "keep-alive", "Upgrade", "X-A",
                                        "close, X-A", "Set-Cookie", ""])),
        1 => field("Proxy-Connection", pick(&["close", "keep-alive"])),
        1 => field("Keep-Alive", pick(&["timeout=5"])),
        1 => field("Upgrade", pick(&["websocket"])),
        1 => field("Trailer", pick(&["X-T"])),
        1 => field("TE", pick(&["trailers"])),
        4 => field("X-A", "[ -~]{0,16}".prop_map(String::into_bytes).boxed()),
        2 => field("Set-Cookie", pick(&["a=b; Path=/", "SERVERID=x"])),
        1 => field("X-Bad", pick(&["a\rb", "a\0b", "a\x0bb", "\u{e9}", "a\nb"])),
        1 => pick(&[" folded", "NoColon", "Bad Name: x", ": empty"]),
    ];
    prop::collection::vec(one, 0..7).boxed()
}

/// A response head (maybe mutated) and whatever follows it, and whether the request was
/// HEAD.
pub fn response() -> BoxedStrategy<(Vec<u8>, bool)> {
    let eol = prop_oneof![20 => pick(&["\r\n"]), 2 => pick(&["\n"]), 1 => pick(&["\r", "\r\r\n"])];
    let lead = prop_oneof![12 => Just(Vec::new()), 1 => pick(&["\r\n", "\n"])];
    let tail = prop_oneof![
        2 => Just(Vec::new()),
        1 => pick(&["hello", "0\r\n\r\n", "HTTP/1.1 200 OK\r\n\r\n"]),
    ];
    (
        lead,
        status_line(),
        fields(),
        prop::collection::vec(eol, 9),
        tail,
        any::<bool>(),
        mutations(),
    )
        .prop_map(|(lead, sl, fs, eols, tail, head_req, muts)| {
            let mut head = [lead, sl, eols[8].clone()].concat();
            for (i, f) in fs.into_iter().enumerate() {
                head.extend_from_slice(&f);
                head.extend_from_slice(&eols[i % 8]);
            }
            head.extend_from_slice(&eols[7]);
            let mut all = apply(head, &muts);
            all.extend_from_slice(&tail);
            (all, head_req)
        })
        .boxed()
}
