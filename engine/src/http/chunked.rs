//! Sans-io chunked transfer coding (RFC 9112 §7.1): a streaming validator and decoder.
//!
//! The decoder is fed whatever bytes have arrived and says how many of them belong to the
//! message, which of them are chunk data, and whether the message ended. The proxy either
//! forwards the consumed bytes as they are (chunked to chunked) or only the data (to a
//! client that cannot take chunked).

use std::ops::Range;

/// Framing errors: each is a 400 on a request and a 502 on a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    #[error("invalid chunk size line")]
    BadSize,
    #[error("chunk size too large")]
    TooLarge,
    #[error("chunk data not followed by CRLF")]
    BadDelimiter,
    #[error("chunk size line or trailer too long")]
    LineTooLong,
    #[error("malformed trailer section")]
    BadTrailer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading the chunk-size line (digits, optional extensions, CRLF).
    Size,
    /// Inside chunk data.
    Data,
    /// Expecting the CRLF that ends chunk data.
    DataCr,
    DataLf,
    /// After the last chunk: trailer lines until an empty line.
    Trailer,
    Done,
}

/// One step of decoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// Bytes of the input that this step used.
    pub consumed: usize,
    /// Chunk data within the consumed bytes (may be empty).
    pub data: Range<usize>,
    /// The message body ended within the consumed bytes.
    pub done: bool,
}

/// Streaming chunked decoder.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    remaining: u64,
    /// Bytes of the current size or trailer line seen so far (for limits and parsing
    /// across reads).
    line: Vec<u8>,
    /// Total data bytes so far.
    pub total: u64,
}

const MAX_LINE: usize = 4096;

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkedDecoder {
    pub fn new() -> Self {
        ChunkedDecoder {
            state: State::Size,
            remaining: 0,
            line: Vec::new(),
            total: 0,
        }
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decode from `buf`; returns how much was consumed and which part of it was data.
    /// Call again with the rest until `consumed == 0` and more input is needed, or `done`.
    /// Data is returned one contiguous range per call.
    pub fn step(&mut self, buf: &[u8]) -> Result<Step, ChunkError> {
        let mut i = 0;
        while i < buf.len() {
            match self.state {
                State::Size => {
                    let b = buf[i];
                    i += 1;
                    if b == b'\n' {
                        self.finish_size_line()?;
                    } else {
                        if self.line.len() >= MAX_LINE {
                            return Err(ChunkError::LineTooLong);
                        }
                        self.line.push(b);
                    }
                }
                State::Data => {
                    let avail = (buf.len() - i) as u64;
                    let take = avail.min(self.remaining) as usize;
                    let start = i;
                    i += take;
                    self.remaining -= take as u64;
                    self.total += take as u64;
                    if self.remaining == 0 {
                        self.state = State::DataCr;
                    }
                    return Ok(Step {
                        consumed: i,
                        data: start..i,
                        done: false,
                    });
                }
                State::DataCr => {
                    if buf[i] != b'\r' {
                        return Err(ChunkError::BadDelimiter);
                    }
                    i += 1;
                    self.state = State::DataLf;
                }
                State::DataLf => {
                    if buf[i] != b'\n' {
                        return Err(ChunkError::BadDelimiter);
                    }
                    i += 1;
                    self.state = State::Size;
                }
                State::Trailer => {
                    let b = buf[i];
                    i += 1;
                    if self.trailer_byte(b)? {
                        return Ok(Step {
                            consumed: i,
                            data: i..i,
                            done: true,
                        });
                    }
                }
                State::Done => {
                    return Ok(Step {
                        consumed: i,
                        data: i..i,
                        done: true,
                    });
                }
            }
        }
        Ok(Step {
            consumed: i,
            data: i..i,
            done: self.state == State::Done,
        })
    }

    /// A byte of the trailer section; true when it ended the message.
    fn trailer_byte(&mut self, b: u8) -> Result<bool, ChunkError> {
        if b != b'\n' {
            if self.line.len() >= MAX_LINE {
                return Err(ChunkError::LineTooLong);
            }
            self.line.push(b);
            return Ok(false);
        }
        let line = std::mem::take(&mut self.line);
        let line = line.strip_suffix(b"\r").ok_or(ChunkError::BadTrailer)?;
        if line.is_empty() {
            self.state = State::Done;
            return Ok(true);
        }
        // A trailer field: name ":" value, no obs-fold.
        let colon = line.iter().position(|&c| c == b':');
        match colon {
            Some(p) if p > 0 && line[..p].iter().all(|&c| is_tchar(c)) => {}
            _ => return Err(ChunkError::BadTrailer),
        }
        if line.iter().any(|&c| c == b'\r' || c == 0) {
            return Err(ChunkError::BadTrailer);
        }
        Ok(false)
    }

    fn finish_size_line(&mut self) -> Result<(), ChunkError> {
        let line = std::mem::take(&mut self.line);
        let line = line.strip_suffix(b"\r").ok_or(ChunkError::BadSize)?;
        // chunk-size = 1*HEXDIG; then optional BWS ; ext. An empty size (httparse reads it
        // as 0: a smuggling vector) is refused.
        let digits = line.iter().take_while(|c| c.is_ascii_hexdigit()).count();
        if digits == 0 {
            return Err(ChunkError::BadSize);
        }
        if digits > 15 {
            return Err(ChunkError::TooLarge);
        }
        let rest = &line[digits..];
        if !rest.is_empty() {
            // Extensions: optional whitespace then ';'. Nothing else may follow the digits.
            let r = rest
                .iter()
                .skip_while(|&&c| c == b' ' || c == b'\t')
                .collect::<Vec<_>>();
            if r.first() != Some(&&b';') {
                return Err(ChunkError::BadSize);
            }
            if rest.iter().any(|&c| c == b'\r' || c == 0 || c == b'\n') {
                return Err(ChunkError::BadSize);
            }
        }
        let mut size: u64 = 0;
        for &c in &line[..digits] {
            size = size * 16 + (c as char).to_digit(16).unwrap_or(0) as u64;
        }
        if size == 0 {
            self.state = State::Trailer;
        } else {
            self.remaining = size;
            self.state = State::Data;
        }
        Ok(())
    }
}

pub fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

/// Writes the size line of a chunk of `len` bytes into `out` (hex, CRLF).
pub fn chunk_header(len: usize, out: &mut Vec<u8>) {
    let mut tmp = [0u8; 18];
    let mut n = len;
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b"0123456789abcdef"[n & 15];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&tmp[i..]);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8]) -> Result<(Vec<u8>, usize, bool), ChunkError> {
        let mut d = ChunkedDecoder::new();
        let mut out = Vec::new();
        let mut pos = 0;
        loop {
            let s = d.step(&input[pos..])?;
            out.extend_from_slice(&input[pos..][s.data.clone()]);
            pos += s.consumed;
            if s.done {
                return Ok((out, pos, true));
            }
            if s.consumed == 0 || pos == input.len() {
                return Ok((out, pos, false));
            }
        }
    }

    #[test]
    fn decodes_simple_body() {
        let (data, used, done) = decode_all(b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\nNEXT").unwrap();
        assert_eq!(data, b"hello world");
        assert!(done);
        assert_eq!(used, b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n".len());
    }

    #[test]
    fn byte_at_a_time() {
        let input = b"a;ext=1\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\n";
        let mut d = ChunkedDecoder::new();
        let mut out = Vec::new();
        let mut done = false;
        for i in 0..input.len() {
            let s = d.step(&input[i..i + 1]).unwrap();
            assert_eq!(s.consumed, 1);
            out.extend_from_slice(&input[i..i + 1][s.data]);
            done = s.done;
        }
        assert!(done);
        assert_eq!(out, b"0123456789");
    }

    #[test]
    fn refuses_empty_and_odd_sizes() {
        for bad in [
            &b"\r\nhello\r\n0\r\n\r\n"[..],
            b"   \r\n0\r\n\r\n",
            b";x\r\n0\r\n\r\n",
            b"0x5\r\nhello\r\n0\r\n\r\n",
            b"+5\r\nhello\r\n0\r\n\r\n",
            b"-5\r\nhello\r\n0\r\n\r\n",
            b" 5\r\nhello\r\n0\r\n\r\n",
            b"5 x\r\nhello\r\n0\r\n\r\n",
            b"1234567890abcdef0\r\n",
            b"5\nhello\r\n0\r\n\r\n",
        ] {
            assert!(
                decode_all(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn refuses_missing_crlf_after_data() {
        assert_eq!(
            decode_all(b"5\r\nhelloX\r\n0\r\n\r\n"),
            Err(ChunkError::BadDelimiter)
        );
    }

    #[test]
    fn incomplete_is_not_done() {
        let (data, _, done) = decode_all(b"5\r\nhel").unwrap();
        assert_eq!(data, b"hel");
        assert!(!done);
    }

    #[test]
    fn chunk_header_hex() {
        let mut v = Vec::new();
        chunk_header(0x1f40, &mut v);
        assert_eq!(v, b"1f40\r\n");
        v.clear();
        chunk_header(0, &mut v);
        assert_eq!(v, b"0\r\n");
    }
}
