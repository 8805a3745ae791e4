//! Stream positions (`<ms>-<seq>` cursors) and resume positions as clients give them.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::ids::validate_event_id;

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
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
