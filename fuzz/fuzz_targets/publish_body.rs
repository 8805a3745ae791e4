//! `POST /v1/.../events` body: `parse_publish_body`, then `NewEvent::validate` of every
//! request, then the stored form. Checks: no panic; accepted events obey the contract;
//! the stored JSON (cursor spliced in) equals serde's serialization and stays one line.
#![no_main]

use dashclaw_realtime::envelope::{
    Cursor, NewEvent, OrgId, StoredEvent, Topic, ValidationError, is_valid_event_name,
    validate_event_id,
};
use dashclaw_realtime::http::publish::parse_publish_body;
use dashclaw_realtime::hub::MAX_BATCH;
use libfuzzer_sys::fuzz_target;

const MAX_BYTES: usize = 65_536;

fuzz_target!(|data: &[u8]| {
    let topic = match data.len() % 2 {
        0 => Topic::Org(OrgId::parse("org_fuzz").unwrap()),
        _ => Topic::Ops,
    };
    let Ok((requests, is_batch)) = parse_publish_body(data, &topic, MAX_BYTES) else {
        return;
    };
    assert!(is_batch || requests.len() == 1);
    assert!(requests.len() <= MAX_BATCH);
    for (i, request) in requests.into_iter().enumerate() {
        let event = request.event.clone();
        let id = request.id.clone();
        let payload = request.payload.clone();
        match NewEvent::validate(&topic, request, MAX_BYTES, 1_739_469_600_000) {
            Ok(new) => {
                assert!(is_valid_event_name(&event) && !event.starts_with("realtime."));
                if let Some(id) = &id {
                    assert!(validate_event_id(id).is_ok());
                    assert_eq!(&new.id, id);
                }
                let expected_payload: serde_json::Value = payload
                    .map(|raw| serde_json::from_str(raw.get()).unwrap())
                    .unwrap_or_else(|| serde_json::json!({}));
                let envelope = new.envelope();
                assert_eq!(envelope.payload, expected_payload);
                assert_eq!(envelope.org_id, topic.envelope_org());
                assert!(!new.data_json.contains('\n'));
                let cursor = Cursor::new(u64::MAX - i as u64, u64::MAX);
                let stored = StoredEvent::from_new(&new, cursor);
                let serde = serde_json::to_value(stored.envelope()).unwrap();
                let delivered: serde_json::Value = serde_json::from_slice(stored.json()).unwrap();
                assert_eq!(delivered, serde);
                assert!(
                    stored.json().len() <= MAX_BYTES,
                    "{} > limit",
                    stored.json().len()
                );
                assert!(!stored.json().iter().any(|&b| b == b'\n' || b == b'\r'));
            }
            Err(ValidationError::InvalidEventName) => assert!(!is_valid_event_name(&event)),
            Err(ValidationError::ReservedEventName) => assert!(event.starts_with("realtime.")),
            Err(ValidationError::InvalidEventId) => {
                assert!(validate_event_id(id.as_deref().unwrap()).is_err())
            }
            Err(ValidationError::TooLarge { size, limit }) => assert!(size > limit),
            // Syntax was checked by the body parser; what is refused here is JSON a tree
            // refuses too (an unpaired surrogate escape, a number beyond a double).
            Err(ValidationError::InvalidPayload) => {
                let raw = payload.expect("a refused payload is present");
                assert!(serde_json::from_str::<serde_json::Value>(raw.get()).is_err());
            }
            Err(ValidationError::InvalidOrgId) => unreachable!("org already validated"),
        }
    }
});
