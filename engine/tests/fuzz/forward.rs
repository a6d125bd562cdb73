//! The frontends the forwarded head is built for: real snapshots from minimal configs.

use std::path::Path;
use std::sync::OnceLock;

use engine::http::RequestHead;
use engine::snapshot::Snapshot;

/// The client address the engine would put in X-Forwarded-For.
pub const PEER: &str = "192.0.2.7";

const BASE: &str = "[log]\naccess = \"off\"\n\
[[frontend]]\nname = \"web\"\nbind = [\"127.0.0.1:18080\"]\nbackend = \"app\"\n";

const SERVERS: &str = "[[backend.server]]\nname = \"s1\"\naddress = \"127.0.0.1:18081\"\n\
cookie = \"s1\"\n[[backend.server]]\nname = \"s2\"\naddress = \"127.0.0.1:18082\"\n\
cookie = \"s2\"\n";

/// (frontend lines, backend lines): plain; set_headers without X-Forwarded-For and an
/// insert cookie; a prefix cookie on MoodleSession.
const SHAPES: [(&str, &str); 3] = [
    ("", ""),
    (
        "forwarded_for = false\nset_headers = { \"X-Forwarded-Proto\" = \"https\", \"X-Custom\" = \"lb\" }\n",
        "[backend.cookie]\nname = \"SERVERID\"\n",
    ),
    (
        "",
        "[backend.cookie]\nname = \"MoodleSession\"\nmode = \"prefix\"\n",
    ),
];

pub const SHAPE_COUNT: usize = SHAPES.len();

fn build(i: usize) -> Snapshot {
    let (fe, be) = SHAPES[i];
    let text = format!("{BASE}{fe}\n[[backend]]\nname = \"app\"\n{be}\n{SERVERS}");
    let cfg = match engine::config::load_str(&text, Path::new("/tmp/fuzz/lb.toml")) {
        Ok(l) => l.config,
        Err(d) => panic!(
            "config refused: {:?}\n{text}",
            d.iter().map(|d| d.to_string()).collect::<Vec<_>>()
        ),
    };
    Snapshot::build(cfg, 0).expect("snapshot")
}

pub fn snapshot(i: usize) -> &'static Snapshot {
    static SNAPS: OnceLock<Vec<Snapshot>> = OnceLock::new();
    &SNAPS.get_or_init(|| (0..SHAPES.len()).map(build).collect())[i]
}

/// The head the engine sends a server for `req` (parsed from `buf`), through frontend
/// shape `i`, the way the request path builds it.
pub fn forwarded(buf: &[u8], req: &RequestHead, i: usize) -> Vec<u8> {
    let snap = snapshot(i);
    let fe = &snap.frontends[0];
    let be = snap.backend(fe.backend.expect("frontend has a backend"));
    let srv = &snap.servers[be.first];
    let mut out = Vec::new();
    let rw = engine::proxy::RequestRewrite {
        fe,
        be: Some(be),
        xff: PEER,
        drop_underscore: snap.cfg.limits.drop_underscore_headers,
    };
    rw.head(buf, req, &mut out);
    let need_host = req.host.is_none().then_some(srv.host_header.as_str());
    engine::proxy::finish_head(&mut out, need_host);
    out
}

/// The server address written as Host for an HTTP/1.0 request without one.
pub fn server_host(i: usize) -> String {
    let snap = snapshot(i);
    let be = snap.backend(snap.frontends[0].backend.unwrap());
    snap.servers[be.first].host_header.clone()
}

/// The `Name: value\r\n` lines that set_headers adds.
pub fn set_lines(i: usize) -> Vec<u8> {
    snapshot(i).frontends[0].set_lines.clone()
}

pub fn forwarded_for(i: usize) -> bool {
    snapshot(i).frontends[0].cfg.forwarded_for
}
