//! Envelope v1: the one JSON shape every event has, validated once at publish and again for
//! anything read back from Redis.
//!
//! - [`ids`]: org ids, topics, event names and ids, and their validation;
//! - [`cursor`]: stream cursors and client resume positions;
//! - [`time`]: epoch milliseconds and the ISO 8601 timestamps envelopes carry;
//! - [`stored`]: an event as stored and delivered (its bytes, shared by every holder), and the
//!   validation of envelopes that come from the wire.
//!
//! Every envelope the hub writes has one canonical layout (`id, org_id, event, timestamp,
//! version, payload[, cursor]`, on one line), whoever produced it.

pub mod cursor;
pub mod ids;
pub mod stored;
pub mod time;

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

pub use cursor::{Cursor, CursorParseError, ResumePosition};
pub use ids::{
    MAX_EVENT_ID_SUFFIX_LEN, MAX_EVENT_NAME_LEN, MAX_ORG_ID_LEN, OPS_ORG_ID, OrgId,
    RESERVED_EVENT_PREFIX, Topic, ValidationError, generate_event_id, is_valid_event_name,
    validate_event_id, validate_event_name,
};
pub use stored::{StoredEvent, WireError};
pub use time::{format_timestamp, now_ms, parse_timestamp};

/// Value of the `version` field.
pub const ENVELOPE_VERSION: &str = "v1";

/// Upper bound of `,"cursor":"…"` in bytes: room kept so the delivered form also fits.
pub const CURSOR_FIELD_MAX_LEN: usize = 55;

/// Envelope v1, parsed: what producers and tests compare against.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Globally unique id (`evt_...`).
    pub id: String,
    /// Tenant routing key.
    pub org_id: String,
    /// Event type.
    pub event: String,
    /// Server time at publish, ISO 8601 UTC.
    pub timestamp: String,
    /// Always `v1`.
    pub version: String,
    /// Producer data.
    #[serde(default = "empty_object")]
    pub payload: Value,
    /// Stream position; absent only for producers that could not write the stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<Cursor>,
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

/// What a producer sends: an event type, a payload and optionally its own id. The payload
/// stays raw JSON text: it is checked and copied, never parsed into a tree.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishRequest {
    /// Event type.
    pub event: String,
    /// Producer data (`{}` when absent; an explicit `null` stays `null`).
    #[serde(default, deserialize_with = "present_raw")]
    pub payload: Option<Box<RawValue>>,
    /// Producer-given idempotency id.
    #[serde(default)]
    pub id: Option<String>,
}

/// Marks a present field as `Some`, even when its value is `null`.
pub fn present_raw<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Box<RawValue>>, D::Error> {
    Box::<RawValue>::deserialize(deserializer).map(Some)
}

/// A JSON value as raw text (for building requests in process).
pub fn raw_json(value: &Value) -> Box<RawValue> {
    // Serializing a `Value` cannot fail; an empty object is a safe fallback all the same.
    serde_json::value::to_raw_value(value)
        .unwrap_or_else(|_| RawValue::from_string("{}".to_owned()).unwrap_or_default())
}

impl PublishRequest {
    /// A request with a payload and a hub-generated id.
    pub fn new(event: impl Into<String>, payload: Value) -> Self {
        Self {
            event: event.into(),
            payload: Some(raw_json(&payload)),
            id: None,
        }
    }

    /// Sets the producer-given id.
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }
}

/// Refuses a payload that alone is already too large for an envelope, before anything is
/// built from it.
pub fn check_payload_size(
    payload: Option<&RawValue>,
    max_bytes: usize,
) -> Result<(), ValidationError> {
    let size = payload.map_or(0, |raw| raw.get().len()) + CURSOR_FIELD_MAX_LEN;
    if size > max_bytes {
        return Err(ValidationError::TooLarge {
            size,
            limit: max_bytes,
        });
    }
    Ok(())
}

/// Raw JSON text on one line: JSON only allows line breaks as whitespace between tokens, so
/// text that has any is re-serialized compactly (rare: pretty-printed producers). Otherwise the
/// text is checked by [`StrictJson`], as a tree would be, without building one.
fn one_line(raw: &str) -> Result<Cow<'_, str>, serde_json::Error> {
    if raw.bytes().any(|b| b == b'\n' || b == b'\r') {
        let value: Value = serde_json::from_str(raw)?;
        return Ok(Cow::Owned(value.to_string()));
    }
    serde_json::from_str::<StrictJson>(raw)?;
    Ok(Cow::Borrowed(raw))
}

/// Accepts exactly the JSON a `serde_json::Value` accepts, keeping nothing. Raw values only
/// check the syntax, so they let through strings escaping an unpaired UTF-16 surrogate
/// (`"\udddd"`, no Unicode text) and numbers beyond a double (`1e999`): no client reads those
/// the same way, and `/api/stream`'s projection could not read the payload at all.
struct StrictJson;

impl<'de> Deserialize<'de> for StrictJson {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictJsonVisitor)
    }
}

struct StrictJsonVisitor;

impl<'de> serde::de::Visitor<'de> for StrictJsonVisitor {
    type Value = StrictJson;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<StrictJson, E> {
        Ok(StrictJson)
    }
    fn visit_i64<E>(self, _: i64) -> Result<StrictJson, E> {
        Ok(StrictJson)
    }
    fn visit_u64<E>(self, _: u64) -> Result<StrictJson, E> {
        Ok(StrictJson)
    }
    fn visit_f64<E>(self, _: f64) -> Result<StrictJson, E> {
        Ok(StrictJson)
    }
    fn visit_str<E>(self, _: &str) -> Result<StrictJson, E> {
        Ok(StrictJson)
    }
    fn visit_unit<E>(self) -> Result<StrictJson, E> {
        Ok(StrictJson)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<StrictJson, A::Error> {
        while seq.next_element::<StrictJson>()?.is_some() {}
        Ok(StrictJson)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<StrictJson, A::Error> {
        while map.next_entry::<StrictJson, StrictJson>()?.is_some() {}
        Ok(StrictJson)
    }
}

/// The fields of an envelope, validated, ready to be written.
struct Fields<'a> {
    id: &'a str,
    org_id: &'a str,
    event: &'a str,
    timestamp: &'a str,
    /// Raw JSON on one line.
    payload: &'a str,
}

/// Writes an envelope in the canonical layout; with `cursor`, the delivered form.
fn write_envelope(fields: &Fields<'_>, cursor: Option<Cursor>) -> Vec<u8> {
    let mut out = Vec::with_capacity(fields.payload.len() + 160);
    let field = |out: &mut Vec<u8>, name: &str, value: &str| {
        out.extend_from_slice(name.as_bytes());
        // Writing a string into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, value);
    };
    field(&mut out, "{\"id\":", fields.id);
    field(&mut out, ",\"org_id\":", fields.org_id);
    field(&mut out, ",\"event\":", fields.event);
    field(&mut out, ",\"timestamp\":", fields.timestamp);
    out.extend_from_slice(b",\"version\":\"v1\",\"payload\":");
    out.extend_from_slice(fields.payload.as_bytes());
    if let Some(cursor) = cursor {
        out.extend_from_slice(b",\"cursor\":\"");
        out.extend_from_slice(cursor.to_string().as_bytes());
        out.push(b'"');
    }
    out.push(b'}');
    out
}

/// A validated event ready for a broker: the envelope without its cursor, serialized once.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// The envelope id (`evt_...`).
    pub id: String,
    /// The event type.
    pub event: String,
    /// The `timestamp` field.
    pub timestamp: String,
    /// The envelope as JSON without `cursor`: the stream entry's `data` field.
    pub data_json: String,
    /// Publish time in epoch milliseconds (the `timestamp` field).
    pub published_ms: u64,
    /// The hub generated the id just now (a new ULID), so it cannot have been stored before
    /// and the publish skips the idempotency lookup.
    pub fresh_id: bool,
}

impl NewEvent {
    /// Validates a producer request for `topic`, stamping id, timestamp and version.
    pub fn validate(
        topic: &Topic,
        request: PublishRequest,
        max_bytes: usize,
        now_ms: u64,
    ) -> Result<Self, ValidationError> {
        validate_event_name(&request.event)?;
        check_payload_size(request.payload.as_deref(), max_bytes)?;
        let fresh_id = request.id.is_none();
        let id = match request.id {
            Some(id) => {
                validate_event_id(&id)?;
                id
            }
            None => generate_event_id(),
        };
        let timestamp = format_timestamp(now_ms);
        let payload = match &request.payload {
            Some(raw) => one_line(raw.get()).map_err(|_| ValidationError::InvalidPayload)?,
            None => Cow::Borrowed("{}"),
        };
        let fields = Fields {
            id: &id,
            org_id: topic.envelope_org(),
            event: &request.event,
            timestamp: &timestamp,
            payload: &payload,
        };
        let data_json = write_envelope(&fields, None);
        let size = data_json.len() + CURSOR_FIELD_MAX_LEN;
        if size > max_bytes {
            return Err(ValidationError::TooLarge {
                size,
                limit: max_bytes,
            });
        }
        // Only validated strings and raw JSON text went in: the output is UTF-8.
        let data_json =
            String::from_utf8(data_json).map_err(|_| ValidationError::InvalidPayload)?;
        Ok(Self {
            id,
            event: request.event,
            timestamp,
            data_json,
            published_ms: now_ms,
            fresh_id,
        })
    }

    /// The envelope, parsed (for tests and producers that want the tree).
    pub fn envelope(&self) -> Envelope {
        serde_json::from_str(&self.data_json).unwrap_or_else(|_| Envelope {
            id: self.id.clone(),
            org_id: String::new(),
            event: self.event.clone(),
            timestamp: self.timestamp.clone(),
            version: ENVELOPE_VERSION.to_owned(),
            payload: Value::Null,
            cursor: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpaired_surrogates_and_numbers_beyond_a_double_are_refused() {
        let topic = Topic::Org(OrgId::parse("org_a").unwrap());
        let with = |payload: &str| {
            let mut request = PublishRequest::new("a.b", serde_json::json!({}));
            request.payload = Some(RawValue::from_string(payload.to_owned()).unwrap());
            NewEvent::validate(&topic, request, 65_536, 1_000)
        };
        for lone in [
            r#"{"k":"\udddd"}"#,
            r#"{"\uD800x":1}"#,
            r#"["\ud83d"]"#,
            r#"{"x":[1e999]}"#,
            r#"[-4444444444444444444444444444444444444444444444444444444444e300]"#,
        ] {
            assert!(
                matches!(with(lone), Err(ValidationError::InvalidPayload)),
                "{lone}"
            );
        }
        let pair =
            r#"{"smile":"\ud83d\ude00","path":"C:\\ud800","n":[1e300,-0,12345678901234567890123]}"#;
        let event = with(pair).unwrap();
        assert!(event.data_json.contains(pair));
    }

    #[test]
    fn stored_json_matches_serde_with_cursor() {
        let topic = Topic::Org(OrgId::parse("org_a").unwrap());
        let req = PublishRequest::new("action.created", serde_json::json!({"a": "x\ny"}));
        let new = NewEvent::validate(&topic, req, 65_536, 1_000).unwrap();
        let stored = StoredEvent::from_new(&new, Cursor::new(1_000, 3));
        let expected = serde_json::to_vec(&stored.envelope()).unwrap();
        assert_eq!(stored.json(), expected.as_slice());
        assert!(!stored.json().contains(&b'\n'));
    }

    #[test]
    fn timestamps_parse_back() {
        for ms in [0, 1_739_469_600_000, 951_782_400_123, 4_102_444_799_999] {
            assert_eq!(parse_timestamp(&format_timestamp(ms)), Some(ms), "{ms}");
        }
        assert_eq!(
            parse_timestamp("2026-02-13T18:00:00Z"),
            Some(1_771_005_600_000)
        );
        assert_eq!(
            parse_timestamp("2026-02-13T18:00:00.5Z"),
            Some(1_771_005_600_500)
        );
        assert_eq!(
            parse_timestamp("2026-02-13T18:00:00.123456Z"),
            Some(1_771_005_600_123)
        );
        for bad in [
            "",
            "2026-02-13",
            "2026-02-13T18:00:00",
            "2026-13-13T18:00:00Z",
            "2026-02-13T18:00:00.Z",
            "2026-02-13 18:00:00Z",
            "x026-02-13T18:00:00Z",
        ] {
            assert_eq!(parse_timestamp(bad), None, "{bad}");
        }
        let topic = Topic::Ops;
        let new = NewEvent::validate(&topic, PublishRequest::new("a", Value::Null), 65_536, 1_234)
            .unwrap();
        let read_back = StoredEvent::from_wire(
            new.data_json.as_bytes(),
            Some(Cursor::new(9_999, 0)),
            &topic,
            65_536,
        )
        .unwrap();
        assert_eq!(read_back.published_ms, 1_234);
    }

    #[test]
    fn explicit_null_payload_is_kept() {
        let with_null: PublishRequest =
            serde_json::from_str(r#"{"event":"a","payload":null}"#).unwrap();
        assert_eq!(
            with_null.payload.as_deref().map(RawValue::get),
            Some("null")
        );
        let absent: PublishRequest = serde_json::from_str(r#"{"event":"a"}"#).unwrap();
        assert!(absent.payload.is_none());
    }

    #[test]
    fn size_limit() {
        let topic = Topic::Ops;
        let req = PublishRequest::new("a", Value::String("x".repeat(2000)));
        let err = NewEvent::validate(&topic, req, 1000, 0).unwrap_err();
        assert_eq!(err.code(), "payload_too_large");
    }
}
