//! A response head: httparse for the syntax (no obs-fold), a three-digit status from
//! 100, then the framing headers' rules and the body's framing (RFC 9112 §6.3).

use super::request::with_slots;
use super::rules::{drop_named, parse_content_length, span};
use super::{
    eq_ic, hdr_kind, tokens, BodyLen, ConnOpts, Field, Hdr, HeadLimits, ResponseError, ResponseHead,
};

/// Parses a response head. `request_was_head`: the body is empty whatever it says.
pub fn parse_response(
    buf: &[u8],
    request_was_head: bool,
    limits: &HeadLimits,
) -> Result<Option<ResponseHead>, ResponseError> {
    let window = &buf[..buf.len().min(limits.max_head_bytes)];
    with_slots(limits.max_headers, |slots| {
        let mut resp = httparse::Response::new(&mut []);
        let status = httparse::ParserConfig::default()
            .allow_obsolete_multiline_headers_in_responses(false)
            .parse_response_with_uninit_headers(&mut resp, window, slots);
        let head_len = match status {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) if buf.len() >= limits.max_head_bytes => {
                return Err(ResponseError::TooLarge)
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => return Err(ResponseError::TooLarge),
            Err(_) => return Err(ResponseError::Malformed),
        };
        build(buf, &resp, request_was_head, head_len).map(Some)
    })
}

fn build(
    buf: &[u8],
    resp: &httparse::Response<'_, '_>,
    request_was_head: bool,
    head_len: usize,
) -> Result<ResponseHead, ResponseError> {
    let code = resp.code.ok_or(ResponseError::Malformed)?;
    if code < 100 {
        // Three digits, 1xx to 5xx (RFC 9110 §15): 000-099 are no status at all.
        return Err(ResponseError::Malformed);
    }
    let minor = resp.version.ok_or(ResponseError::Malformed)?;
    let reason = resp.reason.unwrap_or("");
    let reason_span = if reason.is_empty() {
        (0, 0)
    } else {
        span(buf, reason.as_bytes())
    };
    let mut h = Headers::default();
    for hd in resp.headers.iter() {
        h.add(buf, hd, code)?;
    }
    drop_named(buf, resp.headers, &mut h.fields, code == 101);
    let body = if request_was_head || (100..200).contains(&code) || code == 204 || code == 304 {
        BodyLen::None
    } else if h.te_seen && h.chunked {
        BodyLen::Chunked
    } else if h.te_seen {
        // A response whose last coding is not chunked is close-delimited (§6.3).
        BodyLen::Close
    } else {
        match h.content_length {
            Some(0) => BodyLen::None,
            Some(n) => BodyLen::Length(n),
            None => BodyLen::Close,
        }
    };
    if h.te_seen && h.content_length.is_some() {
        // §6.3: TE overrides CL; the connection is closed afterwards.
        h.conn.close = true;
    }
    Ok(ResponseHead {
        status: code,
        minor,
        fields: h.fields,
        head_len,
        body,
        conn: h.conn,
        reason: reason_span,
        te_codings: if h.te_seen { h.te_codings } else { None },
        te: h.te_seen,
    })
}

/// What a response's headers say, as they are read.
#[derive(Default)]
struct Headers {
    fields: Vec<Field>,
    content_length: Option<u64>,
    chunked: bool,
    te_seen: bool,
    te_codings: Option<(u32, u32)>,
    conn: ConnOpts,
}

impl Headers {
    fn add(
        &mut self,
        buf: &[u8],
        h: &httparse::Header<'_>,
        code: u16,
    ) -> Result<(), ResponseError> {
        let (name, value) = (h.name.as_bytes(), h.value);
        let kind = hdr_kind(name);
        let mut f = Field {
            name: span(buf, name),
            value: span(buf, value),
            drop: false,
            kind,
        };
        match kind {
            Hdr::ContentLength => {
                parse_content_length(value, &mut self.content_length)
                    .map_err(|_| ResponseError::BadContentLength)?;
                f.drop = true;
            }
            Hdr::TransferEncoding => {
                f.drop = true;
                self.te_seen = true;
                self.chunked = false;
                for t in tokens(value) {
                    self.chunked = eq_ic(t, b"chunked");
                    if !self.chunked && self.te_codings.is_none() {
                        self.te_codings = Some(span(buf, value));
                    }
                }
            }
            Hdr::Connection | Hdr::ProxyConnection => {
                f.drop = true;
                self.conn.read(value);
            }
            Hdr::KeepAlive | Hdr::Te | Hdr::Trailer => f.drop = true,
            Hdr::Upgrade => f.drop = code != 101,
            _ => {}
        }
        self.fields.push(f);
        Ok(())
    }
}
