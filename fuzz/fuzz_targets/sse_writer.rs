//! The SSE writer: arbitrary event name / data / cursor → `frame::event` → a WHATWG parser
//! (the test suite's, included by path). For valid inputs (one-line UTF-8 data, an event
//! name without CR/LF) the parser must yield exactly one event with exactly that data,
//! type and id, whatever the chunking. Also a full envelope with an arbitrary string
//! payload through `NewEvent` → `StoredEvent` → `encode_event` must parse back identical.
#![no_main]

#[allow(dead_code, clippy::all)]
#[path = "../../tests/common/sse.rs"]
mod sse;

use dashclaw_realtime::envelope::{
    Cursor, NewEvent, OrgId, PublishRequest, StoredEvent, Topic, is_valid_event_name,
};
use dashclaw_realtime::sse::{self as frame, StreamFormat, legacy_projection};
use libfuzzer_sys::fuzz_target;
use sse::{SseEvent, SseItem, SseParser};

fn parse(bytes: &[u8], split: usize) -> Vec<SseItem> {
    let split = split % (bytes.len() + 1);
    let mut parser = SseParser::new();
    let mut items = parser.feed(&bytes[..split]);
    items.extend(parser.feed(&bytes[split..]));
    assert!(!parser.has_pending(), "frame left bytes pending");
    items
}

fn one_event(items: Vec<SseItem>) -> SseEvent {
    match <[SseItem; 1]>::try_from(items) {
        Ok([SseItem::Event(event)]) => event,
        other => panic!("expected one event, got {other:?}"),
    }
}

fuzz_target!(|input: (Option<(u64, u64)>, String, String, u16)| {
    let (cursor, event, data, split) = input;
    let cursor = cursor.map(|(ms, seq)| Cursor::new(ms, seq));
    let split = usize::from(split);

    let bytes = frame::event(cursor, &event, data.as_bytes());
    let single_line = |s: &str| !s.contains(['\r', '\n']);
    if single_line(&event) && single_line(&data) {
        let parsed = one_event(parse(&bytes, split));
        assert_eq!(parsed.data, data);
        let expected_type = if event.is_empty() { "message" } else { &event };
        assert_eq!(parsed.event, expected_type);
        assert_eq!(parsed.had_id_field, cursor.is_some());
        assert_eq!(
            parsed.last_event_id,
            cursor.map(|c| c.to_string()).unwrap_or_default()
        );
    } else {
        let _ = parse(&bytes, split);
    }

    // A whole envelope whose payload is the arbitrary string.
    if is_valid_event_name(&event) && !event.starts_with("realtime.") {
        let topic = Topic::Org(OrgId::parse("org_fuzz").unwrap());
        let payload = serde_json::Value::String(data);
        let request = PublishRequest::new(event.clone(), payload.clone());
        let new = NewEvent::validate(&topic, request, usize::MAX, 1_739_469_600_000).unwrap();
        let stored = StoredEvent::from_new(&new, cursor.unwrap_or_default());
        let expected = serde_json::to_value(stored.envelope()).unwrap();
        for format in [StreamFormat::V1, StreamFormat::Legacy] {
            let parsed = one_event(parse(&stored.frame(format), split));
            assert_eq!(parsed.event, event);
            let value: serde_json::Value = serde_json::from_str(&parsed.data).unwrap();
            match format {
                StreamFormat::V1 => assert_eq!(value, expected),
                StreamFormat::Legacy => assert_eq!(&value, legacy_projection(&event, &payload)),
            }
        }
    }
});
