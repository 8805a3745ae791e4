//! Incremental Server-Sent Events parser following the WHATWG "event stream interpretation"
//! rules (<https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation>),
//! built for many concurrent streams: it works on bytes, keeps only the buffers the spec needs
//! (partial line, data, event type, last event ID; their capacity is reused), and hands items to
//! a callback as borrowed slices instead of allocating them.
//!
//! Byte-level processing is equivalent to the spec's UTF-8 decoding: field names are ASCII,
//! `:`, space, CR and LF never occur inside multi-byte sequences, so a value's bytes decode to the
//! value the spec would produce ([`Event::data_lossy`] and friends decode them).

use std::borrow::Cow;

/// One dispatched event, borrowed from the parser.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event<'a> {
    /// Event type bytes; empty means the default type `message`.
    pub event: &'a [u8],
    /// The data buffer (values joined with LF, final LF removed).
    pub data: &'a [u8],
    /// The last event ID buffer at dispatch time (persists across events and reconnects).
    pub last_event_id: &'a [u8],
    /// Whether an `id` field line appeared in this event's block.
    pub had_id_field: bool,
}

impl Event<'_> {
    /// The event type as the spec reports it (`message` when none was given).
    pub fn event_type(&self) -> Cow<'_, str> {
        if self.event.is_empty() {
            Cow::Borrowed("message")
        } else {
            String::from_utf8_lossy(self.event)
        }
    }

    /// The data decoded as UTF-8 (invalid sequences become U+FFFD).
    pub fn data_lossy(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(self.data)
    }

    /// The last event ID decoded as UTF-8.
    pub fn last_event_id_lossy(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(self.last_event_id)
    }
}

/// Everything the parser reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Item<'a> {
    Event(Event<'a>),
    /// Text after the leading `:`, with one leading space removed.
    Comment(&'a [u8]),
    /// A valid `retry` field (ASCII digits only); values above `u64::MAX` saturate.
    Retry(u64),
}

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Incremental parser; feed it arbitrary chunks of the stream.
#[derive(Debug, Default)]
pub struct SseParser {
    /// Bytes of a possible BOM matched so far at stream start.
    bom_matched: u8,
    /// The stream start has been examined for a BOM.
    bom_done: bool,
    /// Bytes of the current, unterminated line (only when a line spans chunks).
    line: Vec<u8>,
    /// The previous chunk ended with CR: a leading LF belongs to that line end.
    after_cr: bool,
    /// Data buffer, every value followed by LF.
    data: Vec<u8>,
    event: Vec<u8>,
    last_event_id: Vec<u8>,
    had_id: bool,
    retry: Option<u64>,
}

impl SseParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Start a new stream (a reconnect): everything is reset except the last event ID buffer
    /// and the reconnection time, as the spec prescribes.
    pub fn reset_stream(&mut self) {
        self.bom_matched = 0;
        self.bom_done = false;
        self.line.clear();
        self.after_cr = false;
        self.data.clear();
        self.event.clear();
        self.had_id = false;
    }

    /// The last event ID buffer (what a reconnect sends as `Last-Event-ID`).
    pub fn last_event_id(&self) -> &[u8] {
        &self.last_event_id
    }

    /// The last valid `retry` value seen.
    pub fn reconnection_time(&self) -> Option<u64> {
        self.retry
    }

    /// True when an unterminated line or undispatched fields are buffered.
    pub fn has_pending(&self) -> bool {
        !self.line.is_empty()
            || (self.bom_matched > 0 && !self.bom_done)
            || !self.data.is_empty()
            || !self.event.is_empty()
            || self.had_id
    }

    /// Heap bytes held by this parser (capacity of its buffers).
    pub fn heap_bytes(&self) -> usize {
        self.line.capacity()
            + self.data.capacity()
            + self.event.capacity()
            + self.last_event_id.capacity()
    }

    /// Feed the next chunk; `f` is called for every completed item, in order.
    pub fn feed(&mut self, chunk: &[u8], f: &mut impl FnMut(Item<'_>)) {
        if self.bom_done {
            self.process(chunk, f);
            return;
        }
        for (i, &b) in chunk.iter().enumerate() {
            if b == BOM[self.bom_matched as usize] {
                self.bom_matched += 1;
                if self.bom_matched as usize == BOM.len() {
                    self.bom_done = true;
                    self.process(&chunk[i + 1..], f);
                    return;
                }
            } else {
                self.bom_done = true;
                let matched = self.bom_matched as usize;
                self.process(&BOM[..matched], f);
                self.process(&chunk[i..], f);
                return;
            }
        }
    }

    fn process(&mut self, bytes: &[u8], f: &mut impl FnMut(Item<'_>)) {
        let mut i = 0;
        while i < bytes.len() {
            if self.after_cr {
                self.after_cr = false;
                if bytes[i] == b'\n' {
                    i += 1;
                    continue;
                }
            }
            let rest = &bytes[i..];
            match rest.iter().position(|&b| b == b'\r' || b == b'\n') {
                None => {
                    self.line.extend_from_slice(rest);
                    break;
                }
                Some(p) => {
                    self.after_cr = rest[p] == b'\r';
                    i += p + 1;
                    if self.line.is_empty() {
                        self.process_line(&rest[..p], f);
                    } else {
                        let mut line = std::mem::take(&mut self.line);
                        line.extend_from_slice(&rest[..p]);
                        self.process_line(&line, f);
                        line.clear();
                        self.line = line;
                    }
                }
            }
        }
    }

    fn process_line(&mut self, line: &[u8], f: &mut impl FnMut(Item<'_>)) {
        if line.is_empty() {
            self.dispatch(f);
            return;
        }
        if let Some(comment) = line.strip_prefix(b":") {
            f(Item::Comment(comment.strip_prefix(b" ").unwrap_or(comment)));
            return;
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(pos) => {
                let value = &line[pos + 1..];
                (&line[..pos], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"event" => {
                self.event.clear();
                self.event.extend_from_slice(value);
            }
            b"data" => {
                self.data.extend_from_slice(value);
                self.data.push(b'\n');
            }
            b"id" => {
                self.had_id = true;
                if !value.contains(&0) {
                    self.last_event_id.clear();
                    self.last_event_id.extend_from_slice(value);
                }
            }
            b"retry" if !value.is_empty() && value.iter().all(u8::is_ascii_digit) => {
                let ms = value.iter().fold(0u64, |acc, d| {
                    acc.saturating_mul(10).saturating_add(u64::from(d - b'0'))
                });
                self.retry = Some(ms);
                f(Item::Retry(ms));
            }
            _ => {}
        }
    }

    fn dispatch(&mut self, f: &mut impl FnMut(Item<'_>)) {
        let had_id_field = std::mem::replace(&mut self.had_id, false);
        if self.data.is_empty() {
            self.event.clear();
            return;
        }
        let len = self.data.len() - 1; // drop the final LF
        f(Item::Event(Event {
            event: &self.event,
            data: &self.data[..len],
            last_event_id: &self.last_event_id,
            had_id_field,
        }));
        self.data.clear();
        self.event.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Owned form of an item, for comparisons.
    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Owned {
        Event(String, String, String, bool),
        Comment(String),
        Retry(u64),
    }

    fn own(item: Item<'_>) -> Owned {
        match item {
            Item::Event(e) => Owned::Event(
                e.event_type().into_owned(),
                e.data_lossy().into_owned(),
                e.last_event_id_lossy().into_owned(),
                e.had_id_field,
            ),
            Item::Comment(c) => Owned::Comment(String::from_utf8_lossy(c).into_owned()),
            Item::Retry(r) => Owned::Retry(r),
        }
    }

    fn feed_all(p: &mut SseParser, chunks: &[&[u8]]) -> Vec<Owned> {
        let mut out = Vec::new();
        for c in chunks {
            p.feed(c, &mut |i| out.push(own(i)));
        }
        out
    }

    fn parse(s: &[u8]) -> Vec<Owned> {
        let whole = feed_all(&mut SseParser::new(), &[s]);
        // Every split point and byte-by-byte must agree.
        for cut in 0..=s.len() {
            let got = feed_all(&mut SseParser::new(), &[&s[..cut], &[], &s[cut..]]);
            assert_eq!(got, whole, "split at {cut} of {s:?}");
        }
        let bytes: Vec<&[u8]> = s.chunks(1).collect();
        assert_eq!(feed_all(&mut SseParser::new(), &bytes), whole);
        whole
    }

    fn ev(t: &str, d: &str, id: &str, had: bool) -> Owned {
        Owned::Event(t.into(), d.into(), id.into(), had)
    }

    #[test]
    fn contract_frames() {
        let s = b"retry: 3000\n\nid: 1-0\nevent: load.tick\ndata: {\"seq\":1}\n\n: heartbeat\n\nevent: realtime.connected\ndata: {}\n\n";
        assert_eq!(
            parse(s),
            vec![
                Owned::Retry(3000),
                ev("load.tick", "{\"seq\":1}", "1-0", true),
                Owned::Comment("heartbeat".into()),
                ev("realtime.connected", "{}", "1-0", false),
            ]
        );
    }

    #[test]
    fn data_joining_empty_data_and_no_data() {
        assert_eq!(
            parse(b"data: a\ndata\ndata:  b\n\ndata\n\nevent: x\n\ndata: c\n\n"),
            vec![
                ev("message", "a\n\n b", "", false),
                ev("message", "", "", false),
                ev("message", "c", "", false),
            ]
        );
    }

    #[test]
    fn line_endings_bom_id_rules() {
        assert_eq!(
            parse(b"\xEF\xBB\xBFid: 7\rdata: a\r\n\r\xEF\xBB\xBFdata: b\n\nid\ndata: c\n\nid: x\0y\ndata: d\n\n"),
            vec![
                ev("message", "a", "7", true),
                // A BOM after the start is part of the field name: unknown field, no event.
                ev("message", "c", "", true),
                ev("message", "d", "", true),
            ]
        );
        // A partial BOM is data, not stripped.
        assert_eq!(parse(b"\xEF\xBBdata: a\n\n"), vec![]);
        assert_eq!(
            parse(b"\xEFdata: a\n\ndata: b\n\n"),
            vec![ev("message", "b", "", false)]
        );
    }

    #[test]
    fn retry_and_fields() {
        assert_eq!(
            parse(b"retry: 12\nretry: x1\nretry:\nretry: 99999999999999999999999\nData: no\nevent\ndata:ok\n\n"),
            vec![Owned::Retry(12), Owned::Retry(u64::MAX), ev("message", "ok", "", false)]
        );
    }

    #[test]
    fn reset_stream_keeps_last_event_id_only() {
        let mut p = SseParser::new();
        let got = feed_all(&mut p, &[b"id: 5\ndata: a\n\nevent: e\ndata: partial"]);
        assert_eq!(got, vec![ev("message", "a", "5", true)]);
        assert!(p.has_pending());
        p.reset_stream();
        assert!(!p.has_pending());
        assert_eq!(p.last_event_id(), b"5");
        let got = feed_all(&mut p, &[b"data: b\n\n"]);
        assert_eq!(got, vec![ev("message", "b", "5", false)]);
    }
}
