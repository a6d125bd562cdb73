//! The HTTP/1.1 response the request path writes, as an HTTP/2 response (sans-io,
//! unit-tested): the status line and fields to a `Response` without what only meant
//! something on one HTTP/1.1 connection (Connection and what it names, Keep-Alive,
//! Proxy-Connection, Transfer-Encoding, Upgrade, TE), and how its body is framed (a
//! chunked one is decoded into DATA).

use http::{HeaderName, HeaderValue, Response, StatusCode};

use crate::http::head::{eq_ic, parse_response, tokens, BodyLen, HeadLimits, ResponseError};

/// A response head, converted.
pub struct Head2 {
    pub resp: Response<()>,
    pub body: BodyLen,
    /// Bytes of the HTTP/1.1 head.
    pub head_len: usize,
    /// An interim answer (1xx): dropped, the final one follows.
    pub interim: bool,
}

const HOP: [&[u8]; 6] = [
    b"connection",
    b"keep-alive",
    b"proxy-connection",
    b"transfer-encoding",
    b"upgrade",
    b"te",
];

/// Parses and converts a response head at the start of `buf` (`Ok(None)`: incomplete).
pub fn to_h2(
    buf: &[u8],
    head_request: bool,
    limits: &HeadLimits,
) -> Result<Option<Head2>, ResponseError> {
    let Some(h) = parse_response(buf, head_request, limits)? else {
        return Ok(None);
    };
    if (100..200).contains(&h.status) {
        return Ok(Some(Head2 {
            resp: Response::new(()),
            body: BodyLen::None,
            head_len: h.head_len,
            interim: true,
        }));
    }
    let named: Vec<&[u8]> = h
        .fields
        .iter()
        .filter(|f| eq_ic(f.name(buf), b"connection"))
        .flat_map(|f| tokens(f.value(buf)))
        .collect();
    let mut resp = Response::new(());
    *resp.status_mut() = StatusCode::from_u16(h.status).map_err(|_| ResponseError::Malformed)?;
    let headers = resp.headers_mut();
    for f in &h.fields {
        let (n, v) = (f.name(buf), f.value(buf));
        if HOP.iter().any(|x| eq_ic(n, x)) || named.iter().any(|x| eq_ic(n, x)) {
            continue;
        }
        // A field HTTP/2 cannot carry (a name that is not a token) is dropped.
        let (Ok(name), Ok(value)) = (HeaderName::from_bytes(n), HeaderValue::from_bytes(v)) else {
            continue;
        };
        headers.append(name, value);
    }
    Ok(Some(Head2 {
        resp,
        body: h.body,
        head_len: h.head_len,
        interim: false,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: HeadLimits = HeadLimits {
        max_head_bytes: 16384,
        max_target_bytes: 8192,
        max_headers: 100,
    };

    #[test]
    fn hop_by_hop_fields_are_dropped_and_the_rest_kept_in_order() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nConnection: keep-alive, X-Hop\r\nKeep-Alive: timeout=5\r\nX-Hop: 1\r\nTransfer-Encoding: chunked\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
        let h = to_h2(raw, false, &LIMITS).unwrap().unwrap();
        assert_eq!(h.resp.status(), 200);
        let names: Vec<&str> = h.resp.headers().keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["content-type", "set-cookie"]);
        assert_eq!(h.resp.headers().get_all("set-cookie").iter().count(), 2);
        assert_eq!(h.body, BodyLen::Chunked);
        assert_eq!(&raw[h.head_len..h.head_len + 3], b"5\r\n");
    }

    #[test]
    fn interim_answers_are_marked_and_incomplete_heads_wait() {
        let h = to_h2(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n",
            false,
            &LIMITS,
        )
        .unwrap()
        .unwrap();
        assert!(h.interim);
        assert_eq!(h.head_len, 25);
        assert!(to_h2(b"HTTP/1.1 200 OK\r\nContent-Len", false, &LIMITS)
            .unwrap()
            .is_none());
        let h = to_h2(b"HTTP/1.1 204 No Content\r\n\r\n", false, &LIMITS)
            .unwrap()
            .unwrap();
        assert_eq!(h.body, BodyLen::None);
        let h = to_h2(
            b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n",
            true,
            &LIMITS,
        )
        .unwrap()
        .unwrap();
        assert_eq!(h.body, BodyLen::None, "the answer to HEAD has no body");
        assert_eq!(h.resp.headers()["content-length"], "7");
    }
}
