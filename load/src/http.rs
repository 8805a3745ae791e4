//! Parsing of an HTTP/1.1 response head (status line and the headers that frame the body).

/// How the body after the head is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    Chunked,
    Length(u64),
    /// Until the connection closes.
    Close,
}

/// The parts of a response head the load tool needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    pub framing: BodyFraming,
    /// `Connection: close` was given (or HTTP/1.0 without keep-alive).
    pub close: bool,
    pub content_type: Option<String>,
    /// `Retry-After` in delay-seconds, when given.
    pub retry_after: Option<u64>,
    /// `X-Realtime-Instance`: which dashclaw-realtime instance answered.
    pub instance: Option<String>,
}

/// Longest head accepted.
pub const MAX_HEAD: usize = 16 * 1024;

/// Parse a response head at the start of `buf`. `Ok(None)` means more bytes are needed;
/// `Ok(Some((head, n)))` gives the head and its length including the blank line.
pub fn parse_response_head(buf: &[u8]) -> Result<Option<(ResponseHead, usize)>, String> {
    let Some(end) = find_head_end(buf) else {
        if buf.len() > MAX_HEAD {
            return Err(format!("response head longer than {MAX_HEAD} bytes"));
        }
        return Ok(None);
    };
    let text = String::from_utf8_lossy(&buf[..end.0]);
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        return Err(format!("not an HTTP/1.x status line: {status_line:?}"));
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .filter(|s| (100..1000).contains(s))
        .ok_or_else(|| format!("bad status line: {status_line:?}"))?;
    let mut chunked = false;
    let mut length = None;
    let mut close = version == "HTTP/1.0";
    let mut content_type = None;
    let mut retry_after = None;
    let mut instance = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value
                .rsplit(',')
                .next()
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("chunked"));
        } else if name.eq_ignore_ascii_case("content-length") {
            length = Some(
                value
                    .parse::<u64>()
                    .map_err(|_| format!("bad content-length {value:?}"))?,
            );
        } else if name.eq_ignore_ascii_case("connection") {
            for token in value.split(',') {
                let token = token.trim();
                if token.eq_ignore_ascii_case("close") {
                    close = true;
                } else if token.eq_ignore_ascii_case("keep-alive") {
                    close = false;
                }
            }
        } else if name.eq_ignore_ascii_case("content-type") {
            content_type = Some(value.to_string());
        } else if name.eq_ignore_ascii_case("retry-after") {
            retry_after = value.parse().ok();
        } else if name.eq_ignore_ascii_case("x-realtime-instance") {
            instance = Some(value.to_string());
        }
    }
    let framing = if chunked {
        BodyFraming::Chunked
    } else if let Some(n) = length {
        BodyFraming::Length(n)
    } else if status == 204 || status == 304 || status < 200 {
        BodyFraming::Length(0)
    } else {
        BodyFraming::Close
    };
    Ok(Some((
        ResponseHead {
            status,
            framing,
            close: close || framing == BodyFraming::Close,
            content_type,
            retry_after,
            instance,
        },
        end.1,
    )))
}

/// (end of the last header line, end of the head) for CRLFCRLF or LFLF.
fn find_head_end(buf: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while let Some(p) = buf[i..].iter().position(|&b| b == b'\n') {
        let nl = i + p;
        let next = nl + 1;
        if buf.get(next) == Some(&b'\n') {
            return Some((nl, next + 1));
        }
        if buf.get(next) == Some(&b'\r') && buf.get(next + 1) == Some(&b'\n') {
            return Some((nl, next + 2));
        }
        i = next;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_head_chunked() {
        let buf = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello";
        let (head, n) = parse_response_head(buf).unwrap().unwrap();
        assert_eq!(head.status, 200);
        assert_eq!(head.framing, BodyFraming::Chunked);
        assert!(!head.close);
        assert_eq!(head.content_type.as_deref(), Some("text/event-stream"));
        assert_eq!(&buf[n..], b"5\r\nhello");
        for cut in 0..n {
            assert_eq!(parse_response_head(&buf[..cut]).unwrap(), None, "cut {cut}");
        }
    }

    #[test]
    fn length_close_and_errors() {
        let (head, n) = parse_response_head(
            b"HTTP/1.1 202 Accepted\nContent-Length: 12\nConnection: close\n\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (head.status, head.framing, head.close, n),
            (202, BodyFraming::Length(12), true, 60)
        );
        let (head, _) = parse_response_head(b"HTTP/1.1 200 OK\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(head.framing, BodyFraming::Close);
        assert!(head.close);
        let (head, _) = parse_response_head(
            b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 4\r\nX-Realtime-Instance: 01K\r\nContent-Length: 0\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (head.retry_after, head.instance.as_deref()),
            (Some(4), Some("01K"))
        );
        assert!(parse_response_head(b"SSH-2.0\r\n\r\n").is_err());
        assert!(parse_response_head(b"HTTP/1.1 abc\r\n\r\n").is_err());
        assert!(parse_response_head(&vec![b'a'; MAX_HEAD + 1]).is_err());
    }
}
