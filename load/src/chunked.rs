//! Incremental decoder for HTTP/1.1 `Transfer-Encoding: chunked` bodies (RFC 9112 §7.1).
//!
//! It keeps a few bytes of state and returns the payload as sub-slices of the input, so a
//! stream can be decoded straight out of a shared read buffer. Chunk extensions and trailer
//! fields are skipped; a bare LF is accepted where CRLF is expected.

use std::fmt;

/// A malformed chunked body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkedError {
    /// A chunk-size line without hex digits or with an unexpected byte.
    BadSize(u8),
    /// A chunk size that does not fit in 64 bits.
    SizeOverflow,
    /// Chunk data not followed by CRLF.
    MissingDataEnd(u8),
}

impl fmt::Display for ChunkedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadSize(b) => write!(f, "bad chunk-size byte 0x{b:02x}"),
            Self::SizeOverflow => write!(f, "chunk size overflows 64 bits"),
            Self::MissingDataEnd(b) => write!(f, "chunk data followed by 0x{b:02x}, not CRLF"),
        }
    }
}

impl std::error::Error for ChunkedError {}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum State {
    /// Reading hex digits of the chunk size.
    #[default]
    Size,
    /// Skipping a chunk extension (or whitespace) up to the line end.
    Ext,
    /// Saw CR of the size line; expecting LF.
    SizeLf,
    /// Inside chunk data.
    Data,
    /// After chunk data; expecting CR (or LF).
    DataCr,
    /// Expecting LF after chunk data.
    DataLf,
    /// At the start of a trailer line (after the last chunk).
    TrailerStart,
    /// Inside a trailer field line.
    TrailerLine,
    /// Saw CR of the empty line that ends the body.
    EndLf,
    /// The body is complete.
    Done,
}

/// Incremental chunked decoder.
#[derive(Debug, Clone, Default)]
pub struct ChunkedDecoder {
    state: State,
    /// Size being parsed, then bytes left in the current chunk.
    remaining: u64,
    digits: u8,
}

impl ChunkedDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// True once the terminating chunk and trailer have been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decode `input`, calling `out` with each run of payload bytes. Returns the number of input
    /// bytes consumed: all of them, unless the body ended inside `input`.
    pub fn feed<'a>(
        &mut self,
        input: &'a [u8],
        out: &mut impl FnMut(&'a [u8]),
    ) -> Result<usize, ChunkedError> {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                State::Size => {
                    if let Some(d) = (b as char).to_digit(16) {
                        self.remaining = self
                            .remaining
                            .checked_mul(16)
                            .and_then(|v| v.checked_add(u64::from(d)))
                            .ok_or(ChunkedError::SizeOverflow)?;
                        self.digits = self.digits.saturating_add(1);
                    } else if self.digits == 0 {
                        return Err(ChunkedError::BadSize(b));
                    } else {
                        match b {
                            b';' | b' ' | b'\t' => self.state = State::Ext,
                            b'\r' => self.state = State::SizeLf,
                            b'\n' => self.end_size_line(),
                            _ => return Err(ChunkedError::BadSize(b)),
                        }
                    }
                    i += 1;
                }
                State::Ext => {
                    match b {
                        b'\r' => self.state = State::SizeLf,
                        b'\n' => self.end_size_line(),
                        _ => {}
                    }
                    i += 1;
                }
                State::SizeLf => {
                    if b != b'\n' {
                        return Err(ChunkedError::BadSize(b));
                    }
                    self.end_size_line();
                    i += 1;
                }
                State::Data => {
                    let avail = (input.len() - i) as u64;
                    let n = avail.min(self.remaining) as usize;
                    out(&input[i..i + n]);
                    i += n;
                    self.remaining -= n as u64;
                    if self.remaining == 0 {
                        self.state = State::DataCr;
                    }
                }
                State::DataCr => {
                    match b {
                        b'\r' => self.state = State::DataLf,
                        b'\n' => self.next_chunk(),
                        _ => return Err(ChunkedError::MissingDataEnd(b)),
                    }
                    i += 1;
                }
                State::DataLf => {
                    if b != b'\n' {
                        return Err(ChunkedError::MissingDataEnd(b));
                    }
                    self.next_chunk();
                    i += 1;
                }
                State::TrailerStart => {
                    self.state = match b {
                        b'\r' => State::EndLf,
                        b'\n' => State::Done,
                        _ => State::TrailerLine,
                    };
                    i += 1;
                }
                State::TrailerLine => {
                    if b == b'\n' {
                        self.state = State::TrailerStart;
                    }
                    i += 1;
                }
                State::EndLf => {
                    // Anything after the CR ends the body; a proper LF is consumed.
                    self.state = State::Done;
                    if b == b'\n' {
                        i += 1;
                    }
                }
                State::Done => return Ok(i),
            }
        }
        Ok(i)
    }

    fn end_size_line(&mut self) {
        self.state = if self.remaining == 0 {
            State::TrailerStart
        } else {
            State::Data
        };
    }

    fn next_chunk(&mut self) {
        self.state = State::Size;
        self.remaining = 0;
        self.digits = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_split(input: &[u8], cuts: &[usize]) -> Result<(Vec<u8>, bool, usize), ChunkedError> {
        let mut d = ChunkedDecoder::new();
        let mut out = Vec::new();
        let mut consumed = 0;
        let mut start = 0;
        for &c in cuts.iter().chain(std::iter::once(&input.len())) {
            let n = d.feed(&input[start..c], &mut |s| out.extend_from_slice(s))?;
            consumed += n;
            start = c;
            if d.is_done() {
                break;
            }
        }
        Ok((out, d.is_done(), consumed))
    }

    #[test]
    fn decodes_at_every_split_point() {
        let body = b"5\r\nhello\r\n1;ext=1\r\n \r\nA\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        let want = b"hello 0123456789".to_vec();
        for a in 0..=body.len() {
            for b in a..=body.len() {
                let (out, done, consumed) = decode_split(body, &[a, b]).unwrap();
                assert_eq!(out, want, "cuts {a},{b}");
                assert!(done);
                assert_eq!(consumed, body.len() - 4, "cuts {a},{b}");
            }
        }
    }

    #[test]
    fn bare_lf_and_uppercase_hex() {
        let (out, done, _) = decode_split(b"1A\n", &[]).unwrap();
        assert!(out.is_empty() && !done);
        let body = b"B\nhello world\n0\n\n";
        assert_eq!(
            decode_split(body, &[]).unwrap(),
            (b"hello world".to_vec(), true, body.len())
        );
    }

    #[test]
    fn partial_body_is_not_done() {
        let (out, done, _) = decode_split(b"5\r\nhel", &[]).unwrap();
        assert_eq!(out, b"hel");
        assert!(!done);
    }

    #[test]
    fn errors() {
        assert_eq!(
            decode_split(b"\r\n", &[]),
            Err(ChunkedError::BadSize(b'\r'))
        );
        assert_eq!(
            decode_split(b"zz\r\n", &[]),
            Err(ChunkedError::BadSize(b'z'))
        );
        assert_eq!(
            decode_split(b"1x\r\n", &[]),
            Err(ChunkedError::BadSize(b'x'))
        );
        assert_eq!(
            decode_split(b"2\r\nabc", &[]),
            Err(ChunkedError::MissingDataEnd(b'c'))
        );
        assert_eq!(
            decode_split(b"11111111111111111\r\n", &[]),
            Err(ChunkedError::SizeOverflow)
        );
    }
}
