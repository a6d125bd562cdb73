//! Helpers of the sticky-session tests (tests/tests/sticky*.rs): the Set-Cookie headers
//! of a response and the values they set, and a GET with a given Cookie header.

use crate::{conn, Response, Running};

/// The `X-Node` header of `resp` (the server that answered), `?` without one.
pub fn node(resp: &Response) -> String {
    resp.header("x-node").unwrap_or("?").to_string()
}

/// The Set-Cookie headers of `resp` that set cookie `name`.
pub fn set_cookies(resp: &Response, name: &str) -> Vec<String> {
    resp.headers_all("set-cookie")
        .into_iter()
        .filter(|v| v.split(['=', ';']).next().is_some_and(|n| n.trim() == name))
        .map(str::to_string)
        .collect()
}

/// The value a Set-Cookie header value sets.
pub fn sc_value(sc: &str) -> String {
    let first = sc.split(';').next().unwrap_or("");
    first
        .split_once('=')
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_default()
}

/// The one Set-Cookie of `name` in `resp` (panics unless exactly one), as its value.
pub fn the_cookie(resp: &Response, name: &str, what: &str) -> String {
    let v = set_cookies(resp, name);
    assert_eq!(
        v.len(),
        1,
        "{what}: exactly one Set-Cookie {name}, got {v:?} in {:?}",
        resp.headers
    );
    sc_value(&v[0])
}

/// GET `path` on a new connection with the given Cookie header (if any).
pub fn get_with(r: &Running, path: &str, cookie: Option<&str>) -> Response {
    let mut c = conn(r);
    let h: Vec<(&str, &str)> = cookie.map(|v| ("Cookie", v)).into_iter().collect();
    c.request("GET", path, &h, b"")
        .unwrap_or_else(|e| panic!("GET {path} with cookie {cookie:?}: {e}"))
}
