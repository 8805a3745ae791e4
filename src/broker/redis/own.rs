//! This instance's own publishes, remembered from just before the publish script runs until
//! their pub/sub message comes back.
//!
//! Two uses. `events_published_total{path="redis_external"}` counts pub/sub messages that
//! some other program (another hub instance, DashClaw's Node app) published; our own are
//! already counted as `in_process`/`http`, so they are struck off here. And an own message
//! whose bytes are exactly the envelope the hub sent plus the cursor the script appended is
//! rebuilt from the held event instead of being parsed and validated again: the hub wrote
//! those bytes itself.
//!
//! Ids are noted *before* the script runs because its PUBLISH can reach our subscriber before
//! its reply reaches us. Bounds: [`OWN_EVENTS_CAPACITY`] ids and [`OWN_EVENTS_BYTES`] of held
//! envelopes; past the byte bound an id is held without its envelope (its message is parsed
//! as any other). Ids that never come back (no local subscriber, duplicates, failed calls)
//! are evicted oldest first; an own publish evicted before its message arrived is counted as
//! external, which takes more than [`OWN_EVENTS_CAPACITY`] publishes in flight at once.

use std::collections::{HashMap, VecDeque};

use crate::envelope::{Cursor, NewEvent, StoredEvent};

/// Own ids remembered at most.
pub const OWN_EVENTS_CAPACITY: usize = 16_384;
/// Bytes of own envelopes held at most.
pub const OWN_EVENTS_BYTES: usize = 8 << 20;

/// What a pub/sub message was, as far as this instance's own publishes tell.
#[derive(Debug)]
pub enum OwnMessage {
    /// Published by this instance, rebuilt from the held event.
    Rebuilt(StoredEvent),
    /// Published by this instance, but its bytes must be parsed (envelope not held, or the
    /// bytes are not the ones sent).
    Parse,
    /// Not published by this instance (or forgotten).
    External,
}

/// The held own publishes.
#[derive(Default)]
pub struct OwnEvents {
    by_id: HashMap<String, Option<NewEvent>>,
    order: VecDeque<String>,
    bytes: usize,
}

impl OwnEvents {
    /// Notes an event about to be published.
    pub fn note(&mut self, event: &NewEvent) {
        let size = event.data_json.len();
        let held = (self.bytes + size <= OWN_EVENTS_BYTES).then(|| event.clone());
        if let Some(previous) = self.by_id.insert(event.id.clone(), held) {
            self.release(previous.as_ref());
        } else {
            self.order.push_back(event.id.clone());
        }
        if self.by_id.get(&event.id).is_some_and(Option::is_some) {
            self.bytes += size;
        }
        while self.order.len() > OWN_EVENTS_CAPACITY {
            if let Some(old) = self.order.pop_front()
                && let Some(evicted) = self.by_id.remove(&old)
            {
                self.release(evicted.as_ref());
            }
        }
    }

    fn release(&mut self, event: Option<&NewEvent>) {
        if let Some(event) = event {
            self.bytes -= event.data_json.len();
        }
    }

    /// Classifies a pub/sub message (and forgets its id when it is ours).
    pub fn take(&mut self, payload: &[u8]) -> OwnMessage {
        let Some(id) = leading_id(payload) else {
            return OwnMessage::External;
        };
        let Some(held) = self.by_id.remove(id) else {
            return OwnMessage::External;
        };
        self.release(held.as_ref());
        if self.order.len() > 2 * self.by_id.len() + 64 {
            // Taken ids leave stale entries in `order`; drop them so it stays bounded by
            // the ids still awaited rather than by the publish rate.
            let by_id = &self.by_id;
            self.order.retain(|id| by_id.contains_key(id));
        }
        match held.and_then(|event| rebuild(&event, payload)) {
            Some(stored) => OwnMessage::Rebuilt(stored),
            None => OwnMessage::Parse,
        }
    }

    /// Bytes of envelopes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

/// The envelope id at the head of a message in the hub's layout (`{"id":"evt_…",`); ids are
/// validated to need no JSON escape, so the text up to the next quote is the id.
fn leading_id(payload: &[u8]) -> Option<&str> {
    let rest = payload.strip_prefix(b"{\"id\":\"")?;
    let end = rest.iter().position(|&b| b == b'"')?;
    std::str::from_utf8(&rest[..end]).ok()
}

/// The stored event, when `payload` is exactly `event`'s envelope with the script's cursor.
fn rebuild(event: &NewEvent, payload: &[u8]) -> Option<StoredEvent> {
    let sent = event.data_json.as_bytes();
    let rest = payload.strip_prefix(sent.get(..sent.len().checked_sub(1)?)?)?;
    let cursor = rest.strip_prefix(b",\"cursor\":\"")?.strip_suffix(b"\"}")?;
    let cursor: Cursor = std::str::from_utf8(cursor).ok()?.parse().ok()?;
    Some(StoredEvent::from_new(event, cursor))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::{OrgId, PublishRequest, Topic, now_ms};

    fn new_event(id: Option<&str>) -> NewEvent {
        let topic = Topic::Org(OrgId::parse("org_own").unwrap());
        let mut request = PublishRequest::new("a.b", serde_json::json!({"n": 1}));
        request.id = id.map(str::to_owned);
        NewEvent::validate(&topic, request, 65_536, now_ms()).unwrap()
    }

    fn as_published(event: &NewEvent, cursor: &str) -> Vec<u8> {
        let data = &event.data_json;
        format!("{},\"cursor\":\"{cursor}\"}}", &data[..data.len() - 1]).into_bytes()
    }

    #[test]
    fn own_message_is_rebuilt_once_and_equals_the_parsed_one() {
        let mut own = OwnEvents::default();
        let event = new_event(None);
        own.note(&event);
        let payload = as_published(&event, "1700000000000-3");
        let OwnMessage::Rebuilt(stored) = own.take(&payload) else {
            panic!("not rebuilt");
        };
        let topic = Topic::Org(OrgId::parse("org_own").unwrap());
        let parsed = StoredEvent::from_wire(&payload, None, &topic, 65_536).unwrap();
        assert_eq!(stored.json(), parsed.json());
        assert_eq!(stored.cursor(), parsed.cursor());
        assert!(matches!(own.take(&payload), OwnMessage::External));
        assert_eq!(own.bytes(), 0);
    }

    #[test]
    fn altered_bytes_are_parsed_and_foreign_ids_are_external() {
        let mut own = OwnEvents::default();
        let event = new_event(Some("evt_mine"));
        own.note(&event);
        let mut payload = as_published(&event, "1-1");
        let at = payload.len() - 20;
        payload[at] = b' ';
        assert!(matches!(own.take(&payload), OwnMessage::Parse));
        let other = new_event(Some("evt_other"));
        assert!(matches!(
            own.take(&as_published(&other, "1-2")),
            OwnMessage::External
        ));
        assert!(matches!(own.take(b"not json"), OwnMessage::External));
    }

    #[test]
    fn ids_and_bytes_stay_bounded() {
        let mut own = OwnEvents::default();
        for n in 0..OWN_EVENTS_CAPACITY + 100 {
            own.note(&new_event(Some(&format!("evt_{n}"))));
        }
        assert!(own.by_id.len() <= OWN_EVENTS_CAPACITY);
        assert!(own.bytes() <= OWN_EVENTS_BYTES);
        let first = new_event(Some("evt_0"));
        assert!(matches!(
            own.take(&as_published(&first, "1-1")),
            OwnMessage::External
        ));
    }
}
