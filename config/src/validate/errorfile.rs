//! A backend's `errorfile_503`: a raw HTTP response read whole, checked, and with the bare
//! LF line ends of its head turned into CRLF ([`normalise_errorfile`], which the HAProxy
//! import uses too).

use super::{fld, Ctx};
use crate::raw::S;
use crate::types::LoadedFile;

/// `errorfile_503 = "..."`: the file read and normalised, or an error.
pub(super) fn load_errorfile(v: &S<String>, label: &str, cx: &mut Ctx) -> Option<LoadedFile> {
    let (path, bytes) = cx.read_file(
        v,
        (label, "errorfile_503"),
        "a raw HTTP response file",
        crate::files::PAGE_LIMIT,
    )?;
    match normalise_errorfile(&bytes) {
        Ok(bytes) => Some(LoadedFile { path, bytes }),
        Err((m, f)) => {
            cx.err(
                &v.span(),
                fld(label, "errorfile_503"),
                format!("{}: {m}", path.display()),
                f,
            );
            None
        }
    }
}

/// Checks a raw HTTP response and turns the bare LF line ends of its head into CRLF.
pub(crate) fn normalise_errorfile(bytes: &[u8]) -> Result<Vec<u8>, (String, String)> {
    let fix_shape = "write a complete response: a status line such as \"HTTP/1.1 503 Service Unavailable\", headers, an empty line, then the body";
    if !(bytes.starts_with(b"HTTP/1.0 ") || bytes.starts_with(b"HTTP/1.1 ")) {
        return Err((
            "does not start with \"HTTP/1.0 \" or \"HTTP/1.1 \"".into(),
            fix_shape.into(),
        ));
    }
    let mut head = Vec::with_capacity(bytes.len() + 32);
    let mut pos = 0;
    let mut end = None;
    while let Some(nl) = bytes[pos..].iter().position(|&b| b == b'\n') {
        let line = &bytes[pos..pos + nl];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        head.extend_from_slice(line);
        head.extend_from_slice(b"\r\n");
        pos += nl + 1;
        if line.is_empty() {
            end = Some(pos);
            break;
        }
    }
    let Some(end) = end else {
        return Err((
            "has no empty line ending its head".into(),
            "add an empty line after the last header (before the body, even if there is no body)"
                .into(),
        ));
    };
    let status = &head[9..head.len().min(12)];
    if status.len() < 3 || !status.iter().all(u8::is_ascii_digit) {
        return Err((
            "the status line has no 3-digit status code".into(),
            fix_shape.into(),
        ));
    }
    let body = &bytes[end..];
    let head_text = String::from_utf8_lossy(&head);
    for l in head_text.split("\r\n").skip(1) {
        if let Some((n, v)) = l.split_once(':') {
            if n.trim().eq_ignore_ascii_case("content-length") {
                match v.trim().parse::<usize>() {
                    Ok(cl) if cl == body.len() => {}
                    _ => {
                        return Err((
                            format!("Content-Length: {} does not match the body, which is {} bytes", v.trim(), body.len()),
                            format!("write Content-Length: {}, or remove the header and keep Connection: close", body.len()),
                        ))
                    }
                }
            }
        }
    }
    head.extend_from_slice(body);
    Ok(head)
}
