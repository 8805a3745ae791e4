//! Validated identifiers: org ids, topics, event names and producer-given event ids.
//!
//! All field rules live here so that HTTP, in-process and Redis producers are held to the
//! same checks, and nothing unvalidated can reach a Redis key or channel name.

use std::fmt;

use serde::Serialize;

/// Longest accepted org id.
pub const MAX_ORG_ID_LEN: usize = 64;
/// Longest accepted event name.
pub const MAX_EVENT_NAME_LEN: usize = 64;
/// Longest accepted producer-given id suffix (after `evt_`).
pub const MAX_EVENT_ID_SUFFIX_LEN: usize = 128;
/// Event-name prefix reserved for the hub's own control events.
pub const RESERVED_EVENT_PREFIX: &str = "realtime.";
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
    /// The payload is not JSON that can be written on one line.
    #[error("the payload is not valid JSON")]
    InvalidPayload,
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
            Self::InvalidPayload => "invalid_payload",
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
}
