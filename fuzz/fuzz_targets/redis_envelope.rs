//! Envelopes as they come from Redis (pub/sub messages and stream entries, written by any
//! producer): arbitrary bytes → `StoredEvent::from_wire`. Checks: no panic; whatever is
//! accepted obeys the contract (valid, non-reserved event name; the channel's org; one line
//! of JSON under the size limit), its frame parses back (WHATWG parser, any chunking) as
//! exactly one event carrying exactly that JSON, and validating it again changes nothing.
#![no_main]

#[allow(dead_code, clippy::all)]
#[path = "../../tests/common/sse.rs"]
mod sse;

use dashclaw_realtime::envelope::{
    Cursor, OrgId, StoredEvent, Topic, is_valid_event_name, validate_event_id,
};
use dashclaw_realtime::sse::StreamFormat;
use libfuzzer_sys::fuzz_target;
use sse::{SseItem, SseParser};

const MAX_BYTES: usize = 65_536;

fuzz_target!(|input: (Option<(u64, u64)>, u16, &[u8])| {
    let (cursor, split, data) = input;
    let cursor = cursor.map(|(ms, seq)| Cursor::new(ms, seq));
    let topic = Topic::Org(OrgId::parse("org_fuzz").unwrap());
    let Ok(stored) = StoredEvent::from_wire(data, cursor, &topic, MAX_BYTES) else {
        return;
    };
    let envelope = stored.envelope();
    assert!(is_valid_event_name(&envelope.event) && !envelope.event.starts_with("realtime."));
    assert!(validate_event_id(&envelope.id).is_ok());
    assert_eq!(envelope.org_id, "org_fuzz");
    assert_eq!(envelope.version, "v1");
    assert_eq!(stored.event_name(), envelope.event);
    assert!(!stored.json().iter().any(|&b| b == b'\n' || b == b'\r'));
    assert!(stored.json().len() <= MAX_BYTES, "{} > limit", stored.json().len());
    if let Some(cursor) = cursor {
        assert_eq!(stored.cursor(), Some(cursor));
    }

    let frame = stored.frame(StreamFormat::V1);
    let split = usize::from(split) % (frame.len() + 1);
    let mut parser = SseParser::new();
    let mut items = parser.feed(&frame[..split]);
    items.extend(parser.feed(&frame[split..]));
    let [SseItem::Event(event)] = items.as_slice() else {
        panic!("one frame must be one event, got {items:?}");
    };
    assert_eq!(event.data.as_bytes(), stored.json());
    assert_eq!(event.event, envelope.event);
    assert_eq!(event.had_id_field, stored.cursor().is_some());

    // Canonical already: a second pass is the identity.
    let again = StoredEvent::from_wire(stored.json(), stored.cursor(), &topic, MAX_BYTES)
        .expect("an accepted envelope is accepted again");
    assert_eq!(again.json(), stored.json());
});
