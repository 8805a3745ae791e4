//! Envelope v1: the one JSON shape every event has, validated once at publish.
//!
//! - [`ids`]: org ids, topics, event names and ids, and their validation;
//! - [`cursor`]: stream cursors and client resume positions;
//! - [`time`]: epoch milliseconds and the ISO 8601 timestamps envelopes carry.
//!
//! The SSE framing of events lives in the `sse` module.

pub mod cursor;
pub mod ids;
pub mod time;

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use cursor::{Cursor, CursorParseError, ResumePosition};
pub use ids::{
    MAX_EVENT_ID_SUFFIX_LEN, MAX_EVENT_NAME_LEN, MAX_ORG_ID_LEN, OPS_ORG_ID, OrgId,
    RESERVED_EVENT_PREFIX, Topic, ValidationError, generate_event_id, is_valid_event_name,
    validate_event_id, validate_event_name,
};
pub use time::{format_timestamp, now_ms, parse_timestamp};

/// Value of the `version` field.
pub const ENVELOPE_VERSION: &str = "v1";

/// Envelope v1 as stored and delivered.
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

/// What a producer sends: an event type, a payload and optionally its own id.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishRequest {
    /// Event type.
    pub event: String,
    /// Producer data (`{}` when absent; an explicit `null` stays `null`).
    #[serde(default, deserialize_with = "present_value")]
    pub payload: Option<Value>,
    /// Producer-given idempotency id.
    #[serde(default)]
    pub id: Option<String>,
}

/// Marks a present field as `Some`, even when its value is `null`.
fn present_value<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Value>, D::Error> {
    Value::deserialize(deserializer).map(Some)
}

impl PublishRequest {
    /// A request with a payload and a hub-generated id.
    pub fn new(event: impl Into<String>, payload: Value) -> Self {
        Self {
            event: event.into(),
            payload: Some(payload),
            id: None,
        }
    }

    /// Sets the producer-given id.
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }
}

/// A validated event ready for a broker: the envelope without its cursor, serialized once.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// The envelope (cursor unset).
    pub envelope: Envelope,
    /// `envelope` as JSON without `cursor`: the stream entry's `data` field.
    pub data_json: String,
    /// Publish time in epoch milliseconds (the `timestamp` field).
    pub published_ms: u64,
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
        let id = match request.id {
            Some(id) => {
                validate_event_id(&id)?;
                id
            }
            None => generate_event_id(),
        };
        let envelope = Envelope {
            id,
            org_id: topic.envelope_org().to_owned(),
            event: request.event,
            timestamp: format_timestamp(now_ms),
            version: ENVELOPE_VERSION.to_owned(),
            payload: request.payload.unwrap_or_else(empty_object),
            cursor: None,
        };
        let data_json = serde_json::to_string(&envelope).unwrap_or_default();
        // Room for `,"cursor":"<20 digits>-<20 digits>"` so the delivered form also fits.
        let size = data_json.len() + CURSOR_FIELD_MAX_LEN;
        if size > max_bytes {
            return Err(ValidationError::TooLarge {
                size,
                limit: max_bytes,
            });
        }
        Ok(Self {
            envelope,
            data_json,
            published_ms: now_ms,
        })
    }
}

/// Upper bound of `,"cursor":"…"` in bytes.
const CURSOR_FIELD_MAX_LEN: usize = 55;

/// An event as stored in a stream and fanned out: envelope plus its JSON with cursor.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    /// The envelope, `cursor` set when the producer wrote the stream.
    pub envelope: Envelope,
    /// `envelope` as one line of JSON, cursor included: the SSE `data:` of v1 streams.
    pub json: Bytes,
    /// Milliseconds of the cursor (or of receipt, for cursor-less messages), for the window.
    pub time_ms: u64,
    /// The envelope `timestamp` in epoch milliseconds (`time_ms` if it does not parse),
    /// parsed once here so delivery-lag metrics cost no parsing per session.
    pub published_ms: u64,
}

impl StoredEvent {
    /// Completes a validated event with its stream position.
    pub fn from_new(event: &NewEvent, cursor: Cursor) -> Self {
        let mut envelope = event.envelope.clone();
        envelope.cursor = Some(cursor);
        let json = splice_cursor(&event.data_json, cursor);
        Self {
            envelope,
            json,
            time_ms: cursor.ms,
            published_ms: event.published_ms,
        }
    }

    /// Builds a stored event from an envelope read back from a stream or channel.
    pub fn from_envelope(envelope: Envelope, received_ms: u64) -> Self {
        let json = Bytes::from(serde_json::to_vec(&envelope).unwrap_or_default());
        let time_ms = envelope.cursor.map_or(received_ms, |c| c.ms);
        let published_ms = parse_timestamp(&envelope.timestamp).unwrap_or(time_ms);
        Self {
            envelope,
            json,
            time_ms,
            published_ms,
        }
    }

    /// The event's stream position, if it has one.
    pub fn cursor(&self) -> Option<Cursor> {
        self.envelope.cursor
    }
}

/// Appends `"cursor"` to a serialized cursor-less envelope without re-serializing it.
fn splice_cursor(data_json: &str, cursor: Cursor) -> Bytes {
    let body = data_json.strip_suffix('}').unwrap_or(data_json);
    let mut out = BytesMut::with_capacity(data_json.len() + CURSOR_FIELD_MAX_LEN);
    out.put_slice(body.as_bytes());
    out.put_slice(b",\"cursor\":\"");
    out.put_slice(cursor.to_string().as_bytes());
    out.put_slice(b"\"}");
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_json_matches_serde_with_cursor() {
        let topic = Topic::Org(OrgId::parse("org_a").unwrap());
        let req = PublishRequest::new("action.created", serde_json::json!({"a": "x\ny"}));
        let new = NewEvent::validate(&topic, req, 65_536, 1_000).unwrap();
        let stored = StoredEvent::from_new(&new, Cursor::new(1_000, 3));
        let expected = serde_json::to_vec(&stored.envelope).unwrap();
        assert_eq!(stored.json.as_ref(), expected.as_slice());
        assert!(!stored.json.contains(&b'\n'));
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
        let read_back: Envelope = serde_json::from_str(&new.data_json).unwrap();
        assert_eq!(
            StoredEvent::from_envelope(read_back, 9_999).published_ms,
            1_234
        );
    }

    #[test]
    fn explicit_null_payload_is_kept() {
        let with_null: PublishRequest =
            serde_json::from_str(r#"{"event":"a","payload":null}"#).unwrap();
        assert_eq!(with_null.payload, Some(Value::Null));
        let absent: PublishRequest = serde_json::from_str(r#"{"event":"a"}"#).unwrap();
        assert_eq!(absent.payload, None);
    }

    #[test]
    fn size_limit() {
        let topic = Topic::Ops;
        let req = PublishRequest::new("a", Value::String("x".repeat(2000)));
        let err = NewEvent::validate(&topic, req, 1000, 0).unwrap_err();
        assert_eq!(err.code(), "payload_too_large");
    }
}
