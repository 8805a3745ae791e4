//! Envelope v1: the one JSON shape every event has, its validation, and its SSE framing.
//!
//! All field rules live here so that HTTP, in-process and Redis producers are held to the
//! same checks, and so that nothing unvalidated can reach a Redis key or channel name.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Longest accepted org id.
pub const MAX_ORG_ID_LEN: usize = 64;
/// Longest accepted event name.
pub const MAX_EVENT_NAME_LEN: usize = 64;
/// Longest accepted producer-given id suffix (after `evt_`).
pub const MAX_EVENT_ID_SUFFIX_LEN: usize = 128;
/// Event-name prefix reserved for the hub's own control events.
pub const RESERVED_EVENT_PREFIX: &str = "realtime.";
/// Value of the `version` field.
pub const ENVELOPE_VERSION: &str = "v1";
/// `org_id` written into envelopes published on the ops channel.
pub const OPS_ORG_ID: &str = "ops";

/// Why an envelope field was refused; `code()` is the stable API error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    /// The org id breaks `^[A-Za-z0-9_-]{1,64}$`.
    #[error("org id must match ^[A-Za-z0-9_-]{{1,64}}$")]
    InvalidOrgId,
    /// The event name breaks the event-name grammar or length.
    #[error("event name must match ^[a-z][a-z0-9_]*(\\.[a-z0-9_]+)*$ and be at most 64 characters")]
    InvalidEventName,
    /// The event name uses the reserved `realtime.` prefix.
    #[error("event names starting with \"realtime.\" are reserved for the hub")]
    ReservedEventName,
    /// The producer-given id breaks `^evt_[A-Za-z0-9_-]{1,128}$`.
    #[error("id must match ^evt_[A-Za-z0-9_-]{{1,128}}$")]
    InvalidEventId,
    /// The serialized envelope is larger than the configured limit.
    #[error("serialized envelope is {size} bytes, the limit is {limit}")]
    TooLarge {
        /// Size of the serialized envelope.
        size: usize,
        /// Configured `REALTIME_MAX_PAYLOAD_BYTES`.
        limit: usize,
    },
}

impl ValidationError {
    /// Stable snake_case code for API errors.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidOrgId => "invalid_org_id",
            Self::InvalidEventName => "invalid_event_name",
            Self::ReservedEventName => "reserved_event_name",
            Self::InvalidEventId => "invalid_event_id",
            Self::TooLarge { .. } => "payload_too_large",
        }
    }
}

fn is_id_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

/// A validated tenant id, safe to embed in Redis key and channel names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct OrgId(String);

impl OrgId {
    /// Validates and wraps an org id.
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        if raw.is_empty() || raw.len() > MAX_ORG_ID_LEN || !raw.bytes().all(is_id_char) {
            return Err(ValidationError::InvalidOrgId);
        }
        Ok(Self(raw.to_owned()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for OrgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a stream or publish addresses: one org, or the global ops channel.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Topic {
    /// An org's events.
    Org(OrgId),
    /// The global operations channel.
    Ops,
}

impl Topic {
    /// The `org_id` written into envelopes of this topic.
    pub fn envelope_org(&self) -> &str {
        match self {
            Topic::Org(org) => org.as_str(),
            Topic::Ops => OPS_ORG_ID,
        }
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Topic::Org(org) => write!(f, "org:{org}"),
            Topic::Ops => f.write_str("ops"),
        }
    }
}

/// Checks an event name against the contract grammar and the reserved prefix.
pub fn validate_event_name(name: &str) -> Result<(), ValidationError> {
    if !is_valid_event_name(name) {
        return Err(ValidationError::InvalidEventName);
    }
    if name.starts_with(RESERVED_EVENT_PREFIX) {
        return Err(ValidationError::ReservedEventName);
    }
    Ok(())
}

/// True when `name` matches `^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*$` and is at most 64 chars.
pub fn is_valid_event_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() > MAX_EVENT_NAME_LEN || !bytes[0].is_ascii_lowercase() {
        return false;
    }
    let is_word = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_';
    let mut previous_dot = false;
    for &b in &bytes[1..] {
        if b == b'.' {
            if previous_dot {
                return false;
            }
            previous_dot = true;
        } else if is_word(b) {
            previous_dot = false;
        } else {
            return false;
        }
    }
    !previous_dot
}

/// Checks a producer-given envelope id.
pub fn validate_event_id(id: &str) -> Result<(), ValidationError> {
    match id.strip_prefix("evt_") {
        Some(rest)
            if !rest.is_empty()
                && rest.len() <= MAX_EVENT_ID_SUFFIX_LEN
                && rest.bytes().all(is_id_char) =>
        {
            Ok(())
        }
        _ => Err(ValidationError::InvalidEventId),
    }
}

/// A new hub-generated envelope id: `evt_` + ULID.
pub fn generate_event_id() -> String {
    format!("evt_{}", ulid::Ulid::generate())
}

/// Milliseconds since the Unix epoch, from the system clock.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Formats epoch milliseconds as ISO 8601 UTC with milliseconds and `Z`.
pub fn format_timestamp(ms: u64) -> String {
    let secs = ms / 1000;
    let millis = ms % 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Parses an ISO 8601 UTC timestamp as [`format_timestamp`] writes it
/// (`YYYY-MM-DDTHH:MM:SS[.fff]Z`, any number of fraction digits) into epoch milliseconds.
pub fn parse_timestamp(text: &str) -> Option<u64> {
    let b = text.as_bytes();
    let num = |range: std::ops::Range<usize>| -> Option<u64> {
        let digits = b.get(range)?;
        digits.iter().try_fold(0u64, |acc, d| {
            d.is_ascii_digit().then(|| acc * 10 + u64::from(d - b'0'))
        })
    };
    let separators = [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')];
    if b.len() < 20 || separators.iter().any(|&(i, c)| b[i] != c) || b[b.len() - 1] != b'Z' {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let millis = match &b[19..b.len() - 1] {
        [] => 0,
        [b'.', fraction @ ..] if !fraction.is_empty() => {
            let mut ms = 0;
            for (i, d) in fraction.iter().enumerate() {
                if !d.is_ascii_digit() {
                    return None;
                }
                if i < 3 {
                    ms = ms * 10 + u64::from(d - b'0');
                }
            }
            ms * 10u64.pow(3u32.saturating_sub(fraction.len() as u32))
        }
        _ => return None,
    };
    let days = days_from_civil(year as i64, month as u32, day as u32);
    let secs = u64::try_from(days).ok()? * 86_400 + hour * 3600 + minute * 60 + second;
    Some(secs * 1000 + millis)
}

/// Howard Hinnant's civil-to-days conversion, the inverse of [`civil_from_days`].
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Howard Hinnant's days-to-civil conversion (proleptic Gregorian calendar).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Position of an event in its topic's stream: a Redis stream entry id `<ms>-<seq>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Cursor {
    /// Milliseconds part.
    pub ms: u64,
    /// Sequence within the millisecond.
    pub seq: u64,
}

impl Cursor {
    /// Builds a cursor from its two parts.
    pub const fn new(ms: u64, seq: u64) -> Self {
        Self { ms, seq }
    }

    /// The next cursor a stream would assign at wall-clock time `now_ms` after `self`.
    pub fn next_after(previous: Option<Cursor>, now_ms: u64) -> Cursor {
        match previous {
            Some(prev) if prev.ms >= now_ms => Cursor::new(prev.ms, prev.seq + 1),
            _ => Cursor::new(now_ms, 0),
        }
    }
}

impl PartialOrd for Cursor {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Cursor {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.ms, self.seq).cmp(&(other.ms, other.seq))
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// The text is not a `<ms>-<seq>` cursor.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a stream cursor")]
pub struct CursorParseError;

impl FromStr for Cursor {
    type Err = CursorParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (ms, seq) = s.split_once('-').ok_or(CursorParseError)?;
        let digits = |part: &str| {
            if part.is_empty() || part.len() > 20 || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(CursorParseError);
            }
            part.parse::<u64>().map_err(|_| CursorParseError)
        };
        Ok(Cursor::new(digits(ms)?, digits(seq)?))
    }
}

impl Serialize for Cursor {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cursor {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A resume position as a client gives it (`Last-Event-ID`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResumePosition {
    /// A stream cursor.
    Cursor(Cursor),
    /// An envelope id, looked up in the stream.
    EventId(String),
    /// Anything else: reported as unknown.
    Unrecognized(String),
}

impl ResumePosition {
    /// Classifies a client-given position.
    pub fn parse(raw: &str) -> Self {
        let raw = raw.trim();
        if let Ok(cursor) = raw.parse::<Cursor>() {
            return Self::Cursor(cursor);
        }
        if validate_event_id(raw).is_ok() {
            return Self::EventId(raw.to_owned());
        }
        Self::Unrecognized(raw.chars().take(200).collect())
    }

    /// The position as the client gave it (for the resync frame).
    pub fn as_text(&self) -> String {
        match self {
            Self::Cursor(c) => c.to_string(),
            Self::EventId(id) | Self::Unrecognized(id) => id.clone(),
        }
    }
}

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

/// SSE framing of the hub's streams; every frame is complete and self-contained.
pub mod frame {
    use super::*;

    /// Comment written on an idle stream.
    pub const HEARTBEAT: &[u8] = b": heartbeat\n\n";

    /// `retry: <ms>` hint frame.
    pub fn retry(retry_ms: u64) -> Bytes {
        Bytes::from(format!("retry: {retry_ms}\n\n"))
    }

    /// An event frame: `id:` (when there is a cursor), `event:`, one `data:` line.
    ///
    /// `data` must be one line; serde_json output always is.
    pub fn event(cursor: Option<Cursor>, event: &str, data: &[u8]) -> Bytes {
        let mut out = BytesMut::with_capacity(data.len() + event.len() + 64);
        if let Some(cursor) = cursor {
            out.put_slice(b"id: ");
            out.put_slice(cursor.to_string().as_bytes());
            out.put_u8(b'\n');
        }
        out.put_slice(b"event: ");
        out.put_slice(event.as_bytes());
        out.put_slice(b"\ndata: ");
        out.put_slice(data);
        out.put_slice(b"\n\n");
        out.freeze()
    }

    /// A control event frame (no `id:` line) with a JSON body.
    pub fn control(event: &str, data: &Value) -> Bytes {
        let json = serde_json::to_vec(data).unwrap_or_default();
        self::event(None, event, &json)
    }
}

/// The legacy `data:` projection of DashClaw's `/api/stream`.
pub fn legacy_projection(envelope: &Envelope) -> &Value {
    let key = match envelope.event.as_str() {
        "action.created" | "action.updated" => Some("action"),
        "message.created" => Some("message"),
        "decision.created" | "guard.decision.created" => Some("decision"),
        "signal.detected" => Some("signal"),
        name if name.starts_with("loop.") => Some("loop"),
        name if name.starts_with("goal.") => Some("goal"),
        _ => None,
    };
    key.and_then(|k| envelope.payload.get(k))
        .unwrap_or(&envelope.payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn org_ids() {
        assert!(OrgId::parse("org_acme-1").is_ok());
        for bad in ["", "a:b", "*", "{x}", "a b", &"x".repeat(65), "é"] {
            assert_eq!(
                OrgId::parse(bad),
                Err(ValidationError::InvalidOrgId),
                "{bad}"
            );
        }
        assert!(OrgId::parse(&"x".repeat(64)).is_ok());
    }

    #[test]
    fn event_names() {
        for good in ["action.created", "guard.decision.created", "a", "a1_b.c_2"] {
            assert!(validate_event_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "A",
            "1a",
            "a..b",
            "a.",
            ".a",
            "a-b",
            "a b",
            &"a".repeat(65),
        ] {
            assert_eq!(
                validate_event_name(bad),
                Err(ValidationError::InvalidEventName),
                "{bad}"
            );
        }
        assert_eq!(
            validate_event_name("realtime.resync"),
            Err(ValidationError::ReservedEventName)
        );
        assert!(validate_event_name("realtimex.a").is_ok());
    }

    #[test]
    fn event_ids() {
        assert!(validate_event_id("evt_0f8fad5b-d9cb-469f-a165-70867728950e").is_ok());
        assert!(validate_event_id(&generate_event_id()).is_ok());
        assert_eq!(generate_event_id().len(), 30);
        for bad in [
            "evt_",
            "evt",
            "x_1",
            "evt_a:b",
            &format!("evt_{}", "a".repeat(129)),
        ] {
            assert!(validate_event_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn timestamps() {
        assert_eq!(format_timestamp(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            format_timestamp(1_739_469_600_000),
            "2025-02-13T18:00:00.000Z"
        );
        assert_eq!(
            format_timestamp(951_782_400_123),
            "2000-02-29T00:00:00.123Z"
        );
    }

    #[test]
    fn cursors() {
        let c: Cursor = "1739469600000-7".parse().unwrap();
        assert_eq!(c, Cursor::new(1_739_469_600_000, 7));
        assert_eq!(c.to_string(), "1739469600000-7");
        for bad in [
            "",
            "1",
            "-1",
            "1-",
            "a-1",
            "1-2-3",
            "+1-2",
            "99999999999999999999999-0",
        ] {
            assert!(bad.parse::<Cursor>().is_err(), "{bad}");
        }
        assert!(Cursor::new(1, 9) < Cursor::new(2, 0));
        assert_eq!(
            Cursor::next_after(Some(Cursor::new(5, 1)), 5),
            Cursor::new(5, 2)
        );
        assert_eq!(
            Cursor::next_after(Some(Cursor::new(6, 1)), 5),
            Cursor::new(6, 2)
        );
        assert_eq!(
            Cursor::next_after(Some(Cursor::new(4, 1)), 5),
            Cursor::new(5, 0)
        );
    }

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

    #[test]
    fn legacy() {
        let mut env = Envelope {
            id: "evt_1".into(),
            org_id: "o".into(),
            event: "action.created".into(),
            timestamp: String::new(),
            version: "v1".into(),
            payload: serde_json::json!({"action": {"x": 1}}),
            cursor: None,
        };
        assert_eq!(legacy_projection(&env), &serde_json::json!({"x": 1}));
        env.event = "custom.thing".into();
        assert_eq!(
            legacy_projection(&env),
            &serde_json::json!({"action": {"x": 1}})
        );
    }
}
