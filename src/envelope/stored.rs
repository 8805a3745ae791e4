//! An event as stored and delivered: its SSE frame, built once and shared by the broker's
//! log, the supervisors' rings and every session's queue; the envelope JSON is a slice of it.
//!
//! Envelopes that come from the wire (Redis pub/sub messages and stream entries, written by
//! any producer) are validated here with the same rules as published ones and rewritten in
//! the canonical layout, so nothing a producer writes can split or forge an SSE frame.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::{
    CURSOR_FIELD_MAX_LEN, Cursor, ENVELOPE_VERSION, Envelope, Fields, NewEvent, Topic,
    ValidationError, one_line, parse_timestamp, validate_event_id, validate_event_name,
    write_envelope,
};
use crate::sse::{self, StreamFormat};

/// Why an envelope read from Redis was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Not a JSON object with the envelope's fields.
    #[error("not an envelope: {0}")]
    Malformed(String),
    /// A field breaks the rules published envelopes are held to.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// The `org_id` is not the org of the channel or stream it came on.
    #[error("org_id does not match its channel")]
    OrgMismatch,
    /// The `version` is not `v1`.
    #[error("version is not v1")]
    Version,
    /// The `timestamp` is not ISO 8601 UTC.
    #[error("timestamp is not ISO 8601 UTC")]
    Timestamp,
    /// The `cursor` field is not a stream cursor.
    #[error("cursor is not a stream cursor")]
    Cursor,
}

impl WireError {
    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "malformed",
            Self::Invalid(ValidationError::TooLarge { .. }) => "too_large",
            Self::Invalid(_) => "invalid_field",
            Self::OrgMismatch => "org_mismatch",
            Self::Version => "version",
            Self::Timestamp => "timestamp",
            Self::Cursor => "cursor",
        }
    }
}

/// An envelope as it comes from the wire, borrowing from the bytes.
#[derive(Deserialize)]
struct WireEnvelope<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(borrow)]
    org_id: Cow<'a, str>,
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(borrow)]
    timestamp: Cow<'a, str>,
    #[serde(borrow)]
    version: Cow<'a, str>,
    #[serde(default, borrow)]
    payload: Option<&'a RawValue>,
    #[serde(default, borrow)]
    cursor: Option<Cow<'a, str>>,
}

/// An event as stored in a stream and fanned out.
#[derive(Debug)]
pub struct StoredEvent {
    /// `id: <cursor>` (when there is one), `event:`, and `data:` with the envelope JSON.
    frame: Bytes,
    /// Length of the `id:` line at the start of `frame` (0 without a cursor).
    id_line: usize,
    /// Where the event name and the envelope JSON sit in `frame`.
    event_at: (usize, usize),
    json_at: (usize, usize),
    cursor: Option<Cursor>,
    id: Arc<str>,
    /// Milliseconds of the cursor (or of receipt, for cursor-less messages), for the window.
    pub time_ms: u64,
    /// The envelope `timestamp` in epoch milliseconds, parsed once here so delivery-lag
    /// metrics cost no parsing per session.
    pub published_ms: u64,
    /// The `/api/stream` frame, made on first use and shared from then on.
    legacy: OnceLock<Bytes>,
    /// Set by the first supervisor to deliver the event (each worker has one per topic), so
    /// the delivery lag is observed once per event.
    delivered: AtomicBool,
}

impl StoredEvent {
    fn build(
        json: &[u8],
        id: &str,
        event: &str,
        cursor: Option<Cursor>,
        time_ms: u64,
        published_ms: u64,
    ) -> Self {
        let frame = sse::event(cursor, event, json);
        let id_line = frame.len() - sse::event(None, event, json).len();
        let event_start = id_line + sse::EVENT_PREFIX.len();
        let json_start = event_start + event.len() + sse::DATA_PREFIX.len();
        Self {
            event_at: (event_start, event_start + event.len()),
            json_at: (json_start, json_start + json.len()),
            frame,
            id_line,
            cursor,
            id: Arc::from(id),
            time_ms,
            published_ms,
            legacy: OnceLock::new(),
            delivered: AtomicBool::new(false),
        }
    }

    /// Completes a validated event with its stream position.
    pub fn from_new(event: &NewEvent, cursor: Cursor) -> Self {
        let data = event.data_json.as_bytes();
        // The cursor-less JSON ends in `}`: the cursor goes in front of it.
        let mut json = Vec::with_capacity(data.len() + CURSOR_FIELD_MAX_LEN);
        json.extend_from_slice(&data[..data.len().saturating_sub(1)]);
        json.extend_from_slice(b",\"cursor\":\"");
        json.extend_from_slice(cursor.to_string().as_bytes());
        json.extend_from_slice(b"\"}");
        Self::build(
            &json,
            &event.id,
            &event.event,
            Some(cursor),
            cursor.ms,
            event.published_ms,
        )
    }

    /// Validates an envelope read from Redis for `topic` and rewrites it in the canonical
    /// layout. `cursor` is the stream entry id for stream reads; for pub/sub messages it is
    /// `None` and the message's own `cursor` field (if any) is used.
    pub fn from_wire(
        data: &[u8],
        cursor: Option<Cursor>,
        topic: &Topic,
        max_bytes: usize,
    ) -> Result<Self, WireError> {
        let wire: WireEnvelope<'_> =
            serde_json::from_slice(data).map_err(|e| WireError::Malformed(e.to_string()))?;
        if wire.org_id != topic.envelope_org() {
            return Err(WireError::OrgMismatch);
        }
        if wire.version != ENVELOPE_VERSION {
            return Err(WireError::Version);
        }
        validate_event_id(&wire.id)?;
        validate_event_name(&wire.event)?;
        let published_ms = parse_timestamp(&wire.timestamp).ok_or(WireError::Timestamp)?;
        let cursor = match (cursor, &wire.cursor) {
            (Some(cursor), _) => Some(cursor),
            (None, Some(text)) => Some(text.parse().map_err(|_| WireError::Cursor)?),
            (None, None) => None,
        };
        let payload = match wire.payload {
            Some(raw) => one_line(raw.get()).map_err(|e| WireError::Malformed(e.to_string()))?,
            None => Cow::Borrowed("{}"),
        };
        let fields = Fields {
            id: &wire.id,
            org_id: &wire.org_id,
            event: &wire.event,
            timestamp: &wire.timestamp,
            payload: &payload,
        };
        let json = write_envelope(&fields, cursor);
        let without_cursor = json.len() - cursor.map_or(0, |c| c.to_string().len() + 12);
        let size = without_cursor + CURSOR_FIELD_MAX_LEN;
        if size > max_bytes {
            return Err(ValidationError::TooLarge {
                size,
                limit: max_bytes,
            }
            .into());
        }
        let time_ms = cursor.map_or_else(super::now_ms, |c| c.ms);
        Ok(Self::build(
            &json,
            &wire.id,
            &wire.event,
            cursor,
            time_ms,
            published_ms,
        ))
    }

    /// The event's stream position, if it has one.
    pub fn cursor(&self) -> Option<Cursor> {
        self.cursor
    }

    /// The envelope id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The envelope id, shared (for indexes keyed by id).
    pub fn shared_id(&self) -> Arc<str> {
        self.id.clone()
    }

    /// The event type.
    pub fn event_name(&self) -> &str {
        // Built from a validated (ASCII) name, so the slice is UTF-8.
        std::str::from_utf8(&self.frame[self.event_at.0..self.event_at.1]).unwrap_or_default()
    }

    /// The envelope as one line of JSON, cursor included: the `data:` of v1 streams.
    pub fn json(&self) -> &[u8] {
        &self.frame[self.json_at.0..self.json_at.1]
    }

    /// The envelope, parsed.
    pub fn envelope(&self) -> Envelope {
        serde_json::from_slice(self.json()).unwrap_or_else(|_| Envelope {
            id: self.id.to_string(),
            org_id: String::new(),
            event: self.event_name().to_owned(),
            timestamp: String::new(),
            version: ENVELOPE_VERSION.to_owned(),
            payload: serde_json::Value::Null,
            cursor: self.cursor,
        })
    }

    /// True for the first caller only: the first delivery of this event on this instance.
    pub fn first_delivery(&self) -> bool {
        !self.delivered.swap(true, Ordering::Relaxed)
    }

    /// Bytes held for this event (the frame), for byte bounds.
    pub fn size(&self) -> usize {
        self.frame.len()
    }

    /// The event as a frame of `format`, with its cursor as the `id:` line.
    pub fn frame(&self, format: StreamFormat) -> Bytes {
        match format {
            StreamFormat::V1 => self.frame.clone(),
            StreamFormat::Legacy => self
                .legacy
                .get_or_init(|| sse::legacy_event(self.cursor, self.event_name(), self.json()))
                .clone(),
        }
    }

    /// The event as a frame of `format` without an `id:` line (for events delivered out of
    /// order, so clients keep their newer `Last-Event-ID`).
    pub fn frame_without_id(&self, format: StreamFormat) -> Bytes {
        match format {
            StreamFormat::V1 => self.frame.slice(self.id_line..),
            StreamFormat::Legacy => sse::legacy_event(None, self.event_name(), self.json()),
        }
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn an_unpaired_surrogate_from_redis_is_invalid() {
        let topic = Topic::Org(OrgId::parse("org_fuzz").unwrap());
        let data = br#"{"id":"evt_1","org_id":"org_fuzz","event":"a.b","timestamp":"2025-01-01T00:00:00.000Z","version":"v1","payload":{"pa\uddddyload":1}}"#;
        assert!(StoredEvent::from_wire(data, None, &topic, 65_536).is_err());
    }
    use super::*;
    use crate::envelope::{OrgId, PublishRequest, format_timestamp};

    fn topic() -> Topic {
        Topic::Org(OrgId::parse("org_w").unwrap())
    }

    fn wire(fields: &str) -> Vec<u8> {
        format!(
            r#"{{"id":"evt_1","org_id":"org_w","event":"a.b","timestamp":"{}","version":"v1"{fields}}}"#,
            format_timestamp(1_000)
        )
        .into_bytes()
    }

    #[test]
    fn the_frame_holds_the_json_and_the_name() {
        let new = NewEvent::validate(
            &topic(),
            PublishRequest::new("a.b", serde_json::json!({"x": "y\nz"})),
            65_536,
            1_000,
        )
        .unwrap();
        let stored = StoredEvent::from_new(&new, Cursor::new(1_000, 7));
        assert_eq!(stored.event_name(), "a.b");
        let frame = stored.frame(StreamFormat::V1);
        assert!(frame.starts_with(b"id: 1000-7\nevent: a.b\ndata: {\"id\":"));
        assert_eq!(&frame[frame.len() - 2..], b"\n\n");
        assert_eq!(stored.envelope().cursor, Some(Cursor::new(1_000, 7)));
        let late = stored.frame_without_id(StreamFormat::V1);
        assert!(late.starts_with(b"event: a.b\ndata: "));
    }

    #[test]
    fn wire_envelopes_are_validated_and_made_canonical() {
        let pretty = wire(",\n  \"payload\": {\n\"a\": 1}\n");
        let stored =
            StoredEvent::from_wire(&pretty, Some(Cursor::new(5, 0)), &topic(), 65_536).unwrap();
        assert!(!stored.json().contains(&b'\n'));
        assert_eq!(stored.envelope().payload, serde_json::json!({"a": 1}));
        let no_payload = StoredEvent::from_wire(&wire(""), None, &topic(), 65_536).unwrap();
        assert_eq!(no_payload.envelope().payload, serde_json::json!({}));
        assert_eq!(no_payload.cursor(), None);
        let forged = r#"{"id":"evt_1","org_id":"org_w","event":"a\nid: 9-9\nevent: realtime.resync","timestamp":"1970-01-01T00:00:01.000Z","version":"v1"}"#;
        assert!(matches!(
            StoredEvent::from_wire(forged.as_bytes(), None, &topic(), 65_536),
            Err(WireError::Invalid(ValidationError::InvalidEventName))
        ));
        let reserved = wire("").into_iter().collect::<Vec<_>>();
        let reserved = String::from_utf8(reserved)
            .unwrap()
            .replace("a.b", "realtime.resync");
        assert!(StoredEvent::from_wire(reserved.as_bytes(), None, &topic(), 65_536).is_err());
        let other_org = String::from_utf8(wire(""))
            .unwrap()
            .replace("org_w", "org_x");
        assert_eq!(
            StoredEvent::from_wire(other_org.as_bytes(), None, &topic(), 65_536).unwrap_err(),
            WireError::OrgMismatch
        );
        assert!(StoredEvent::from_wire(b"[1]", None, &topic(), 65_536).is_err());
        let big = wire(&format!(",\"payload\":\"{}\"", "x".repeat(2000)));
        assert_eq!(
            StoredEvent::from_wire(&big, None, &topic(), 1000)
                .unwrap_err()
                .label(),
            "too_large"
        );
        let with_cursor = wire(",\"cursor\":\"7-1\"");
        let stored = StoredEvent::from_wire(&with_cursor, None, &topic(), 65_536).unwrap();
        assert_eq!(stored.cursor(), Some(Cursor::new(7, 1)));
    }
}
