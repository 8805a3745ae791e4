//! The SSE wire format: every byte the hub writes on an event stream is built here.
//!
//! Frames are complete and self-contained (`field: value` lines ending in a blank line), so
//! a queue can hold them as shared `Bytes` and coalesce any number into one write. Every
//! field is written as `name: value` with one space, because some clients (DashClaw's SDK)
//! match the prefix `data: ` literally, and `data:` is always one line (serde_json output).

use bytes::{BufMut, Bytes, BytesMut};
use serde_json::{Value, json};

use crate::envelope::cursor::Cursor;

/// What starts an event frame's `event:` line.
pub const EVENT_PREFIX: &[u8] = b"event: ";
/// What separates the event name from the data (ends the `event:` line, starts `data:`).
pub const DATA_PREFIX: &[u8] = b"\ndata: ";

/// The comment written on a stream that was idle for the heartbeat interval.
pub const HEARTBEAT: &[u8] = b": heartbeat\n\n";

/// Which wire format a stream writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamFormat {
    /// Envelope v1 in `data:`, `realtime.connected` after the replay.
    V1,
    /// DashClaw's `/api/stream`: the legacy projection in `data:`, `connected` after the replay.
    Legacy,
}

/// The heartbeat comment as a shareable frame.
pub fn heartbeat() -> Bytes {
    Bytes::from_static(HEARTBEAT)
}

/// The `retry: <ms>` hint frame.
pub fn retry(retry_ms: u64) -> Bytes {
    Bytes::from(format!("retry: {retry_ms}\n\n"))
}

/// An event frame: `id:` (when there is a cursor), `event:`, one `data:` line.
///
/// `data` must be one line and `event` must hold no CR or LF; envelopes are validated for
/// both before they get here.
pub fn event(cursor: Option<Cursor>, event: &str, data: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(data.len() + event.len() + 64);
    if let Some(cursor) = cursor {
        out.put_slice(b"id: ");
        out.put_slice(cursor.to_string().as_bytes());
        out.put_u8(b'\n');
    }
    out.put_slice(EVENT_PREFIX);
    out.put_slice(event.as_bytes());
    out.put_slice(DATA_PREFIX);
    out.put_slice(data);
    out.put_slice(b"\n\n");
    out.freeze()
}

/// A control event frame (no `id:` line) with a JSON body.
pub fn control(event: &str, data: &Value) -> Bytes {
    let json = serde_json::to_vec(data).unwrap_or_default();
    self::event(None, event, &json)
}

/// An event frame of DashClaw's `/api/stream`: the legacy projection of the envelope's
/// payload in `data:`.
pub fn legacy_event(cursor: Option<Cursor>, name: &str, envelope_json: &[u8]) -> Bytes {
    #[derive(serde::Deserialize)]
    struct Payload {
        #[serde(default = "empty_object")]
        payload: Value,
    }
    let payload = serde_json::from_slice::<Payload>(envelope_json)
        .map(|p| p.payload)
        .unwrap_or_else(|_| empty_object());
    let data = serde_json::to_vec(legacy_projection(name, &payload)).unwrap_or_default();
    event(cursor, name, &data)
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

/// The `realtime.resync` control frame: the client's position cannot be replayed.
pub fn resync(reason: &str, last_event_id: &str) -> Bytes {
    control(
        "realtime.resync",
        &json!({"reason": reason, "last_event_id": last_event_id}),
    )
}

/// What the frame that ends a replay reports.
#[derive(Debug, Clone, Copy)]
pub struct Connected<'a> {
    /// The stream's `org_id` (`ops` for the ops channel).
    pub org_id: &'a str,
    /// `memory` or `redis`.
    pub backend: &'a str,
    /// Whether the backend is ready (the legacy frame's `realtimeStatus`).
    pub healthy: bool,
    /// Events written from replay before this frame.
    pub replayed: usize,
    /// The stream position the client is at once this frame is written.
    pub cursor: Option<Cursor>,
    /// The resume position the client sent, as it sent it (the legacy `lastEventId`).
    pub last_event_id: Option<&'a str>,
    /// Why the client's position could not be replayed (the legacy `replayError`).
    pub replay_error: Option<&'a str>,
}

/// The frame between replay and live events: `realtime.connected`, or the legacy `connected`.
pub fn connected(format: StreamFormat, info: &Connected<'_>) -> Bytes {
    let cursor = info.cursor.map(|c| c.to_string());
    match format {
        StreamFormat::V1 => control(
            "realtime.connected",
            &json!({"org_id": info.org_id, "backend": info.backend,
                    "replayed": info.replayed, "cursor": cursor}),
        ),
        StreamFormat::Legacy => control(
            "connected",
            &json!({
                "status": "ok",
                "orgId": info.org_id,
                "backend": info.backend,
                "realtimeStatus": if info.healthy { "healthy" } else { "degraded" },
                "replayed": info.replayed,
                "lastEventId": info.last_event_id,
                "replayError": info.replay_error,
            }),
        ),
    }
}

/// The legacy `data:` projection of DashClaw's `/api/stream` (its `toSseData`): the
/// event's named member of the payload, or the whole payload, and `null` when that is
/// missing or JavaScript-falsy (`null`, `false`, `0`, `""`), as `x || null` makes it.
pub fn legacy_projection<'a>(event: &str, payload: &'a Value) -> &'a Value {
    static NULL: Value = Value::Null;
    let member = match event {
        "action.created" | "action.updated" => Some("action"),
        "message.created" => Some("message"),
        "decision.created" | "guard.decision.created" => Some("decision"),
        "loop.created" | "loop.updated" => Some("loop"),
        "goal.created" | "goal.updated" => Some("goal"),
        "signal.detected" => Some("signal"),
        // policy.updated, task.assigned, task.completed, token.usage and every other
        // event: the whole payload.
        _ => None,
    };
    let data = match member {
        Some(name) => payload.get(name).unwrap_or(&NULL),
        None => payload,
    };
    if is_falsy(data) { &NULL } else { data }
}

/// JavaScript's falsy JSON values.
fn is_falsy(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(_) | Value::Object(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy() {
        let payload = serde_json::json!({"action": {"x": 1}});
        assert_eq!(
            legacy_projection("action.created", &payload),
            &serde_json::json!({"x": 1})
        );
        assert_eq!(
            legacy_projection("custom.thing", &payload),
            &serde_json::json!({"action": {"x": 1}})
        );
        let frame = legacy_event(None, "action.created", br#"{"payload":{"action":{"x":1}}}"#);
        assert_eq!(&frame[..], b"event: action.created\ndata: {\"x\":1}\n\n");
        // The named member missing or falsy: `null`, never the whole payload.
        for payload in [
            serde_json::json!({}),
            serde_json::json!({"message": 0}),
            serde_json::json!({"message": ""}),
            serde_json::json!({"message": false}),
        ] {
            assert_eq!(legacy_projection("message.created", &payload), &Value::Null);
        }
        let empty = serde_json::json!({"message": []});
        assert_eq!(
            legacy_projection("message.created", &empty),
            &serde_json::json!([])
        );
        // Whole-payload events, and only the exact names of the member table.
        let payload = serde_json::json!({"loop": 1, "goal": 2, "task": 3});
        for event in [
            "policy.updated",
            "task.assigned",
            "task.completed",
            "token.usage",
            "loop.deleted",
            "goal.archived",
        ] {
            assert_eq!(legacy_projection(event, &payload), &payload, "{event}");
        }
        assert_eq!(legacy_projection("a.b", &Value::Null), &Value::Null);
    }

    #[test]
    fn frames_are_one_event_each() {
        let frame = event(Some(Cursor::new(1, 2)), "a.b", b"{}");
        assert_eq!(&frame[..], b"id: 1-2\nevent: a.b\ndata: {}\n\n");
        assert_eq!(&retry(3000)[..], b"retry: 3000\n\n");
        let resync = resync("expired", "1-0");
        assert!(resync.starts_with(b"event: realtime.resync\ndata: {"));
    }
}
