//! The `events=` stream filter: exact event names and `prefix.*` patterns.

use crate::envelope::is_valid_event_name;

/// The filter text is not a comma-separated list of event names or `prefix.*` patterns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("events filter entry {0:?} is not an event name or a `prefix.*` pattern")]
pub struct FilterError(pub String);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    Exact(String),
    /// Stored with its trailing dot: `signal.*` matches names starting with `signal.`.
    Prefix(String),
}

/// Which event types a client wants; control events always pass.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    patterns: Vec<Pattern>,
}

impl EventFilter {
    /// A filter that lets every event through.
    pub fn all() -> Self {
        Self::default()
    }

    /// Parses `action.created,signal.*`; `*` or an empty list means all events.
    pub fn parse(raw: &str) -> Result<Self, FilterError> {
        let mut patterns = Vec::new();
        for entry in raw.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            if entry == "*" {
                return Ok(Self::all());
            }
            let pattern = match entry.strip_suffix(".*") {
                Some(prefix) if is_valid_event_name(prefix) => {
                    Pattern::Prefix(format!("{prefix}."))
                }
                None if is_valid_event_name(entry) => Pattern::Exact(entry.to_owned()),
                _ => return Err(FilterError(entry.chars().take(80).collect())),
            };
            patterns.push(pattern);
        }
        Ok(Self { patterns })
    }

    /// True when the filter passes every event.
    pub fn is_all(&self) -> bool {
        self.patterns.is_empty()
    }

    /// True when an event of this type should be delivered.
    pub fn matches(&self, event: &str) -> bool {
        self.patterns.is_empty()
            || self.patterns.iter().any(|p| match p {
                Pattern::Exact(name) => name == event,
                Pattern::Prefix(prefix) => event.starts_with(prefix.as_str()),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching() {
        let f = EventFilter::parse("action.created, signal.*").unwrap();
        assert!(f.matches("action.created"));
        assert!(!f.matches("action.updated"));
        assert!(f.matches("signal.detected"));
        assert!(f.matches("signal.a.b"));
        assert!(!f.matches("signal"));
        assert!(!f.matches("signals.x"));
        assert!(EventFilter::parse("").unwrap().matches("x"));
        assert!(EventFilter::parse("*").unwrap().is_all());
        assert!(EventFilter::parse("a:b").is_err());
        assert!(EventFilter::parse(".*").is_err());
    }
}
