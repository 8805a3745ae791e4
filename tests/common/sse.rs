#![allow(dead_code)]
//! Incremental Server-Sent Events parser following the WHATWG
//! "event stream interpretation" rules:
//! <https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation>
//!
//! Differences from a browser `EventSource`, all deliberate and additive:
//! comments and `retry` values are surfaced as items (`SseItem::Comment`,
//! `SseItem::Retry`) instead of being swallowed, and every event records
//! whether an `id` field appeared in its own block (`had_id_field`).

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// Event type; `"message"` when no (or an empty) `event` field was given.
    pub event: String,
    /// The data buffer: `data` field values joined with `\n`, final `\n` removed.
    pub data: String,
    /// The last event ID string at dispatch time (persists across events,
    /// exactly like `EventSource.lastEventId`).
    pub last_event_id: String,
    /// Whether an `id` field line appeared in this event's block (even one
    /// that was ignored because it contained U+0000). Use this, not
    /// `last_event_id`, to check that a frame carried no `id:` line.
    pub had_id_field: bool,
}

impl SseEvent {
    /// Parse `data` as JSON, panicking with the frame in the message if it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.data).unwrap_or_else(|e| {
            panic!(
                "SSE event {:?} data is not valid JSON ({e}): {:?}",
                self.event, self.data
            )
        })
    }
}

/// Everything the parser reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SseItem {
    Event(SseEvent),
    /// Text after the leading ':' with one leading space removed.
    Comment(String),
    /// A valid `retry` field (ASCII digits only). Values above `u64::MAX` saturate.
    Retry(u64),
}

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Incremental parser. Feed it arbitrary chunks of the byte stream.
#[derive(Debug, Default)]
pub struct SseParser {
    /// The stream start has been examined for a BOM.
    bom_done: bool,
    /// Bytes collected at stream start while the BOM decision is pending.
    bom_buf: Vec<u8>,
    /// Bytes of the current, unterminated line.
    line: Vec<u8>,
    /// The previous chunk ended with CR: a leading LF belongs to that line end.
    after_cr: bool,
    data: String,
    event_type: String,
    last_event_id: String,
    had_id: bool,
    retry: Option<u64>,
}

impl SseParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feed the next chunk of the stream; returns the items completed by it.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<SseItem> {
        let mut out = Vec::new();
        if self.bom_done {
            self.process(chunk, &mut out);
            return out;
        }
        self.bom_buf.extend_from_slice(chunk);
        let n = self.bom_buf.len().min(BOM.len());
        if self.bom_buf.len() < BOM.len() && self.bom_buf[..n] == BOM[..n] {
            // Could still become a BOM: wait for more bytes.
            return out;
        }
        self.bom_done = true;
        let buf = std::mem::take(&mut self.bom_buf);
        let rest = buf.strip_prefix(BOM).unwrap_or(&buf);
        self.process(rest, &mut out);
        out
    }

    /// Convenience: parse a complete stream in one go.
    pub fn parse_all(bytes: &[u8]) -> Vec<SseItem> {
        Self::new().feed(bytes)
    }

    /// The last event ID buffer (what a reconnect would send as `Last-Event-ID`).
    pub fn last_event_id(&self) -> &str {
        &self.last_event_id
    }

    /// The last valid `retry` value seen, if any.
    pub fn reconnection_time(&self) -> Option<u64> {
        self.retry
    }

    /// True when bytes of an unterminated line or fields of an undispatched
    /// event are buffered (at stream end these are discarded per the spec).
    pub fn has_pending(&self) -> bool {
        !self.line.is_empty()
            || !self.bom_buf.is_empty()
            || !self.data.is_empty()
            || !self.event_type.is_empty()
            || self.had_id
    }

    fn process(&mut self, bytes: &[u8], out: &mut Vec<SseItem>) {
        let mut i = 0;
        while i < bytes.len() {
            if self.after_cr {
                self.after_cr = false;
                if bytes[i] == b'\n' {
                    // Second half of a CRLF whose CR ended the previous line.
                    i += 1;
                    continue;
                }
            }
            match bytes[i..].iter().position(|&b| b == b'\r' || b == b'\n') {
                None => {
                    self.line.extend_from_slice(&bytes[i..]);
                    break;
                }
                Some(p) => {
                    self.line.extend_from_slice(&bytes[i..i + p]);
                    self.after_cr = bytes[i + p] == b'\r';
                    i += p + 1;
                    let line = std::mem::take(&mut self.line);
                    self.process_line(&line, out);
                }
            }
        }
    }

    fn process_line(&mut self, raw: &[u8], out: &mut Vec<SseItem>) {
        // CR and LF never occur inside multi-byte UTF-8 sequences, so decoding
        // per line equals decoding the stream (invalid bytes become U+FFFD).
        let line = String::from_utf8_lossy(raw);
        if line.is_empty() {
            self.dispatch(out);
            return;
        }
        if let Some(comment) = line.strip_prefix(':') {
            let text = comment.strip_prefix(' ').unwrap_or(comment);
            out.push(SseItem::Comment(text.to_string()));
            return;
        }
        let (field, value) = match line.find(':') {
            Some(pos) => {
                let value = &line[pos + 1..];
                (&line[..pos], value.strip_prefix(' ').unwrap_or(value))
            }
            None => (&line[..], ""),
        };
        match field {
            "event" => self.event_type = value.to_string(),
            "data" => {
                self.data.push_str(value);
                self.data.push('\n');
            }
            "id" => {
                self.had_id = true;
                if !value.contains('\0') {
                    self.last_event_id = value.to_string();
                }
            }
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                let ms = value.parse::<u64>().unwrap_or(u64::MAX);
                self.retry = Some(ms);
                out.push(SseItem::Retry(ms));
            }
            _ => {}
        }
    }

    fn dispatch(&mut self, out: &mut Vec<SseItem>) {
        let had_id = std::mem::replace(&mut self.had_id, false);
        if self.data.is_empty() {
            self.event_type.clear();
            return;
        }
        let mut data = std::mem::take(&mut self.data);
        if data.ends_with('\n') {
            data.pop();
        }
        let event_type = std::mem::take(&mut self.event_type);
        out.push(SseItem::Event(SseEvent {
            event: if event_type.is_empty() {
                "message".to_string()
            } else {
                event_type
            },
            data,
            last_event_id: self.last_event_id.clone(),
            had_id_field: had_id,
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(event: &str, data: &str, id: &str, had_id: bool) -> SseItem {
        SseItem::Event(SseEvent {
            event: event.to_string(),
            data: data.to_string(),
            last_event_id: id.to_string(),
            had_id_field: had_id,
        })
    }

    fn parse(s: &[u8]) -> Vec<SseItem> {
        SseParser::parse_all(s)
    }

    /// Parse in one chunk, byte by byte, and split in two at every position;
    /// assert all agree and return the result.
    fn parse_every_split(s: &[u8]) -> Vec<SseItem> {
        let whole = parse(s);
        let mut p = SseParser::new();
        let mut bytewise = Vec::new();
        for b in s {
            bytewise.extend(p.feed(std::slice::from_ref(b)));
        }
        assert_eq!(bytewise, whole, "byte-by-byte differs for {s:?}");
        for cut in 0..=s.len() {
            let mut p = SseParser::new();
            let mut got = p.feed(&s[..cut]);
            got.extend(p.feed(&[]));
            got.extend(p.feed(&s[cut..]));
            assert_eq!(got, whole, "split at {cut} differs for {s:?}");
        }
        for a in 0..=s.len() {
            for b in a..=s.len() {
                let mut p = SseParser::new();
                let mut got = p.feed(&s[..a]);
                got.extend(p.feed(&s[a..b]));
                got.extend(p.feed(&s[b..]));
                assert_eq!(got, whole, "split at {a},{b} differs for {s:?}");
            }
        }
        whole
    }

    #[test]
    fn simple_message_defaults_to_message_type() {
        assert_eq!(
            parse_every_split(b"data: hello\n\n"),
            vec![ev("message", "hello", "", false)]
        );
    }

    #[test]
    fn contract_frames() {
        let s = b"retry: 3000\n\nid: 1739469600000-0\nevent: action.updated\ndata: {\"id\":\"evt_1\",\"cursor\":\"1739469600000-0\"}\n\n: heartbeat\n\nevent: realtime.connected\ndata: {\"replayed\":0}\n\n";
        let items = parse_every_split(s);
        assert_eq!(
            items,
            vec![
                SseItem::Retry(3000),
                ev(
                    "action.updated",
                    "{\"id\":\"evt_1\",\"cursor\":\"1739469600000-0\"}",
                    "1739469600000-0",
                    true
                ),
                SseItem::Comment("heartbeat".into()),
                ev(
                    "realtime.connected",
                    "{\"replayed\":0}",
                    "1739469600000-0",
                    false
                ),
            ]
        );
        match &items[1] {
            SseItem::Event(e) => assert_eq!(e.json()["cursor"], "1739469600000-0"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn multi_line_data_joined_with_lf() {
        assert_eq!(
            parse_every_split(b"data: a\ndata: b\ndata:c\n\n"),
            vec![ev("message", "a\nb\nc", "", false)]
        );
        // Only the final LF is removed.
        assert_eq!(
            parse_every_split(b"data: a\ndata:\n\n"),
            vec![ev("message", "a\n", "", false)]
        );
        assert_eq!(
            parse_every_split(b"data\ndata\n\n"),
            vec![ev("message", "\n", "", false)]
        );
    }

    #[test]
    fn empty_data_field_still_dispatches() {
        assert_eq!(
            parse_every_split(b"data\n\n"),
            vec![ev("message", "", "", false)]
        );
        assert_eq!(
            parse_every_split(b"data:\n\n"),
            vec![ev("message", "", "", false)]
        );
    }

    #[test]
    fn no_data_not_dispatched_and_event_type_reset() {
        assert_eq!(
            parse_every_split(b"event: foo\n\ndata: x\n\n"),
            vec![ev("message", "x", "", false)]
        );
        assert_eq!(parse_every_split(b"event: foo\n\n\n\n"), vec![]);
        // id still updates the last event ID buffer, had_id_field resets.
        assert_eq!(
            parse_every_split(b"id: 7\n\ndata: x\n\n"),
            vec![ev("message", "x", "7", false)]
        );
        // Empty event field means "message".
        assert_eq!(
            parse_every_split(b"event:\ndata: x\n\n"),
            vec![ev("message", "x", "", false)]
        );
        // Last event field wins.
        assert_eq!(
            parse_every_split(b"event: a\nevent: b\ndata: x\n\n"),
            vec![ev("b", "x", "", false)]
        );
    }

    #[test]
    fn single_leading_space_removed() {
        assert_eq!(
            parse_every_split(b"data:  two\nevent:x\n\n"),
            vec![ev("x", " two", "", false)]
        );
        assert_eq!(
            parse_every_split(b"data:no-space\n\n"),
            vec![ev("message", "no-space", "", false)]
        );
        // Only the first colon splits.
        assert_eq!(
            parse_every_split(b"data: a: b:c\n\n"),
            vec![ev("message", "a: b:c", "", false)]
        );
        // Trailing spaces are kept.
        assert_eq!(
            parse_every_split(b"data: x \n\n"),
            vec![ev("message", "x ", "", false)]
        );
    }

    #[test]
    fn field_names_are_case_sensitive_and_unknown_ignored() {
        assert_eq!(
            parse_every_split(b"Data: x\nEVENT: y\nfoo: bar\ndata : z\ndata: ok\n\n"),
            vec![ev("message", "ok", "", false)]
        );
    }

    #[test]
    fn id_persists_across_events() {
        let items = parse_every_split(b"id: 1\ndata: a\n\ndata: b\n\nid: 2\ndata: c\n\n");
        assert_eq!(
            items,
            vec![
                ev("message", "a", "1", true),
                ev("message", "b", "1", false),
                ev("message", "c", "2", true),
            ]
        );
    }

    #[test]
    fn empty_id_resets_last_event_id() {
        assert_eq!(
            parse_every_split(b"id: 1\ndata: a\n\nid\ndata: b\n\nid:\ndata: c\n\n"),
            vec![
                ev("message", "a", "1", true),
                ev("message", "b", "", true),
                ev("message", "c", "", true),
            ]
        );
    }

    #[test]
    fn id_with_nul_is_ignored() {
        let mut p = SseParser::new();
        let items = p.feed(b"id: 1\ndata: a\n\nid: 2\x003\ndata: b\n\n");
        assert_eq!(
            items,
            vec![ev("message", "a", "1", true), ev("message", "b", "1", true)]
        );
        assert_eq!(p.last_event_id(), "1");
        assert_eq!(
            parse_every_split(b"id: x\x00\ndata: b\n\n"),
            vec![ev("message", "b", "", true)]
        );
    }

    #[test]
    fn comments() {
        assert_eq!(
            parse_every_split(b": heartbeat\n:x\n:\n:  two\n: a: b\n"),
            vec![
                SseItem::Comment("heartbeat".into()),
                SseItem::Comment("x".into()),
                SseItem::Comment("".into()),
                SseItem::Comment(" two".into()),
                SseItem::Comment("a: b".into()),
            ]
        );
        // A comment inside an event block does not break the event.
        assert_eq!(
            parse_every_split(b"data: a\n: c\ndata: b\n\n"),
            vec![
                SseItem::Comment("c".into()),
                ev("message", "a\nb", "", false)
            ]
        );
    }

    #[test]
    fn retry() {
        let mut p = SseParser::new();
        let items = p.feed(
            b"retry: 1500\nretry: 15a\nretry:\nretry\nretry: -1\nretry: 1.5\nretry:  100\nretry: +5\nretry:0\n",
        );
        assert_eq!(items, vec![SseItem::Retry(1500), SseItem::Retry(0)]);
        assert_eq!(p.reconnection_time(), Some(0));
        assert_eq!(
            parse_every_split(b"retry: 99999999999999999999999\n"),
            vec![SseItem::Retry(u64::MAX)]
        );
        // Retry does not create or dispatch an event.
        assert_eq!(
            parse_every_split(b"retry: 10\n\n"),
            vec![SseItem::Retry(10)]
        );
    }

    #[test]
    fn line_endings_lf_cr_crlf_mixed() {
        let expected = vec![
            ev("e", "a\nb", "1", true),
            SseItem::Comment("c".into()),
            ev("message", "z", "1", false),
        ];
        for sep in [&b"\n"[..], b"\r", b"\r\n"] {
            let s = [
                &b"event: e"[..],
                b"id: 1",
                b"data: a",
                b"data: b",
                b"",
                b": c",
                b"data: z",
                b"",
            ]
            .iter()
            .flat_map(|l| l.iter().chain(sep.iter()).copied())
            .collect::<Vec<u8>>();
            assert_eq!(parse_every_split(&s), expected, "separator {sep:?}");
        }
        // Mixed in one stream.
        assert_eq!(
            parse_every_split(b"event: e\rid: 1\r\ndata: a\ndata: b\r\r: c\r\ndata: z\n\r\n"),
            expected
        );
    }

    #[test]
    fn cr_cr_is_two_line_ends_and_lf_cr_is_two() {
        assert_eq!(
            parse_every_split(b"data: a\r\rdata: b\n\rdata: c\r\n\r\n"),
            vec![
                ev("message", "a", "", false),
                ev("message", "b", "", false),
                ev("message", "c", "", false),
            ]
        );
    }

    #[test]
    fn cr_at_chunk_end_then_lf_is_one_line_end() {
        let mut p = SseParser::new();
        let mut items = p.feed(b"data: a\r");
        items.extend(p.feed(b"\ndata: b\r"));
        items.extend(p.feed(b"\n"));
        assert!(items.is_empty(), "dispatched too early: {items:?}");
        // The CR alone is the blank line; the LF after it belongs to it.
        items.extend(p.feed(b"\r"));
        assert_eq!(items, vec![ev("message", "a\nb", "", false)]);
        items.extend(p.feed(b"\n"));
        items.extend(p.feed(b"data: c\r"));
        items.extend(p.feed(b"\n\r"));
        items.extend(p.feed(b"\n"));
        assert_eq!(
            items,
            vec![
                ev("message", "a\nb", "", false),
                ev("message", "c", "", false)
            ]
        );
        // CR at chunk end followed by a non-LF byte.
        let mut p = SseParser::new();
        let mut items = p.feed(b"data: a\r");
        items.extend(p.feed(b"\r"));
        assert_eq!(items, vec![ev("message", "a", "", false)]);
    }

    #[test]
    fn bom_stripped_at_start_only() {
        assert_eq!(
            parse_every_split(b"\xEF\xBB\xBFdata: x\n\n"),
            vec![ev("message", "x", "", false)]
        );
        // Second BOM is part of the field name, so the field is ignored.
        assert_eq!(
            parse_every_split(b"\xEF\xBB\xBF\xEF\xBB\xBFdata: x\n\n"),
            vec![]
        );
        // BOM later in the stream is not stripped.
        assert_eq!(
            parse_every_split(b"data: a\n\n\xEF\xBB\xBFdata: b\n\n"),
            vec![ev("message", "a", "", false)]
        );
        // Inside a value it is kept.
        assert_eq!(
            parse_every_split(b"data: \xEF\xBB\xBFx\n\n"),
            vec![ev("message", "\u{FEFF}x", "", false)]
        );
        // A BOM-only stream and a comment after it.
        assert_eq!(parse_every_split(b"\xEF\xBB\xBF"), vec![]);
        assert_eq!(
            parse_every_split(b"\xEF\xBB\xBF: hi\n"),
            vec![SseItem::Comment("hi".into())]
        );
    }

    #[test]
    fn partial_bom_is_not_stripped() {
        // EF BB without BF: invalid UTF-8 -> U+FFFD, field name garbage -> ignored.
        assert_eq!(parse_every_split(b"\xEF\xBBdata: x\n\n"), vec![]);
        // Short stream that looks like a BOM prefix then a line.
        assert_eq!(
            parse_every_split(b"\xEF\n:c\n"),
            vec![SseItem::Comment("c".into())]
        );
        let mut p = SseParser::new();
        assert!(p.feed(b"\xEF\xBB").is_empty());
        assert!(p.has_pending());
    }

    #[test]
    fn utf8_split_across_chunks_and_invalid_bytes() {
        assert_eq!(
            parse_every_split("data: héllo € 𝄞\nevent: ünï\n\n".as_bytes()),
            vec![ev("ünï", "héllo € 𝄞", "", false)]
        );
        assert_eq!(
            parse_every_split(b"data: a\xFFb\xC3\n\n"),
            vec![ev("message", "a\u{FFFD}b\u{FFFD}", "", false)]
        );
    }

    #[test]
    fn incomplete_event_at_end_not_dispatched() {
        let mut p = SseParser::new();
        assert_eq!(
            p.feed(b"data: a\n\ndata: b\n"),
            vec![ev("message", "a", "", false)]
        );
        assert!(p.has_pending());
        let mut p = SseParser::new();
        assert_eq!(
            p.feed(b"data: a\n\ndata: b"),
            vec![ev("message", "a", "", false)]
        );
        assert!(p.has_pending());
        let mut p = SseParser::new();
        p.feed(b"data: a\n\n");
        assert!(!p.has_pending());
    }

    #[test]
    fn json_helper() {
        let items = parse(b"data: {\"a\":1}\n\n");
        match &items[0] {
            SseItem::Event(e) => assert_eq!(e.json(), serde_json::json!({"a": 1})),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    #[should_panic(expected = "not valid JSON")]
    fn json_helper_panics_on_bad_json() {
        let items = parse(b"data: nope\n\n");
        if let SseItem::Event(e) = &items[0] {
            e.json();
        }
    }

    #[test]
    fn big_stream_every_split_point() {
        // A long mixed stream, checked against an explicit expectation and for
        // every two-way split (three-way splits are covered on short inputs).
        let mut s = Vec::new();
        let mut expected = vec![SseItem::Retry(3000)];
        s.extend_from_slice(b"\xEF\xBB\xBFretry: 3000\r\n\r\n");
        for i in 0..20 {
            let eol: &[u8] = match i % 3 {
                0 => b"\n",
                1 => b"\r",
                _ => b"\r\n",
            };
            let id = format!("{}-{}", 1700000000000u64 + i, i % 2);
            let data = format!("{{\"n\":{i},\"s\":\"é€{i}\"}}");
            for line in [
                format!("id: {id}"),
                format!("event: action.e{i}"),
                format!("data: {data}"),
                String::new(),
                ": heartbeat".to_string(),
            ] {
                s.extend_from_slice(line.as_bytes());
                s.extend_from_slice(eol);
            }
            expected.push(ev(&format!("action.e{i}"), &data, &id, true));
            expected.push(SseItem::Comment("heartbeat".into()));
        }
        let whole = parse(&s);
        assert_eq!(whole, expected);
        for cut in 0..=s.len() {
            let mut p = SseParser::new();
            let mut got = p.feed(&s[..cut]);
            got.extend(p.feed(&s[cut..]));
            assert_eq!(got, expected, "split at {cut}");
        }
        let mut p = SseParser::new();
        let mut got = Vec::new();
        for b in &s {
            got.extend(p.feed(std::slice::from_ref(b)));
        }
        assert_eq!(got, expected);
    }
}
