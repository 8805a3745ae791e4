//! In-process broker: one bounded log per topic, no Redis.
//!
//! Cursors have the Redis stream form `<ms>-<seq>` so clients cannot tell the backends apart,
//! and a flip between them only costs a `realtime.resync`.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::{
    BackendHealth, BoxFuture, Broker, BrokerError, LiveMessage, LiveSink, PublishOutcome,
    Resolution,
};
use crate::config::BackendKind;
use crate::envelope::{Cursor, NewEvent, ResumePosition, StoredEvent, Topic, now_ms};
use crate::recovery::{classify_cursor, expired_or_unknown};

/// Shards of the topic map, so publishes to different orgs rarely share a lock.
const SHARDS: usize = 32;

/// Default cap on events kept per topic, whatever the window.
pub const DEFAULT_MAX_EVENTS_PER_TOPIC: usize = 100_000;

/// How often expired events are dropped, so idle orgs free their memory too.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(5);

#[derive(Default)]
struct TopicLog {
    events: VecDeque<Arc<StoredEvent>>,
    by_id: HashMap<String, Arc<StoredEvent>>,
    last: Option<Cursor>,
    /// Newest cursor ever removed: positions before it cannot be replayed.
    trimmed_through: Option<Cursor>,
    sinks: Vec<LiveSink>,
}

impl TopicLog {
    fn trim(&mut self, oldest_ms: u64, max_events: usize) {
        while let Some(front) = self.events.front() {
            if front.time_ms >= oldest_ms && self.events.len() <= max_events {
                break;
            }
            let Some(removed) = self.events.pop_front() else {
                break;
            };
            self.trimmed_through = removed.cursor();
            if let Some(entry) = self.by_id.get(&removed.envelope.id)
                && Arc::ptr_eq(entry, &removed)
            {
                self.by_id.remove(&removed.envelope.id);
            }
        }
    }

    fn fan_out(&mut self, event: &Arc<StoredEvent>) {
        self.sinks.retain(|sink| !sink.is_closed());
        for sink in &self.sinks {
            sink.offer(LiveMessage::Event(event.clone()));
        }
    }
}

/// The memory backend: replay buffers bounded by the window and a count cap.
pub struct MemoryBroker {
    shards: Vec<Mutex<HashMap<Topic, TopicLog>>>,
    window_ms: u64,
    max_events: usize,
}

impl MemoryBroker {
    /// A broker keeping `window_ms` of events, at most `max_events` per topic.
    pub fn new(window_ms: u64, max_events: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            window_ms,
            max_events: max_events.max(1),
        }
    }

    fn shard(&self, topic: &Topic) -> MutexGuard<'_, HashMap<Topic, TopicLog>> {
        let mut hasher = DefaultHasher::new();
        topic.hash(&mut hasher);
        let index = (hasher.finish() as usize) % SHARDS;
        // A poisoned lock only means another thread panicked mid-update of plain data.
        self.shards[index]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn oldest_ms(&self, now: u64) -> u64 {
        now.saturating_sub(self.window_ms)
    }

    /// A broker that sweeps expired events every [`SWEEP_INTERVAL`] on a task it owns (the
    /// task ends once the broker is dropped); must run inside a Tokio runtime.
    pub fn start(window_ms: u64, max_events: usize) -> Arc<Self> {
        let broker = Arc::new(Self::new(window_ms, max_events));
        let sweeper = Arc::downgrade(&broker);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SWEEP_INTERVAL);
            loop {
                tick.tick().await;
                match sweeper.upgrade() {
                    Some(broker) => broker.sweep(),
                    None => break,
                }
            }
        });
        broker
    }

    /// Drops expired events of every topic.
    pub fn sweep(&self) {
        let oldest = self.oldest_ms(now_ms());
        for shard in &self.shards {
            let mut map = shard.lock().unwrap_or_else(|p| p.into_inner());
            for log in map.values_mut() {
                log.trim(oldest, self.max_events);
                log.sinks.retain(|sink| !sink.is_closed());
            }
        }
    }

    fn publish_now(&self, topic: &Topic, events: Vec<NewEvent>) -> Vec<PublishOutcome> {
        let now = now_ms();
        let mut map = self.shard(topic);
        let log = map.entry(topic.clone()).or_default();
        log.trim(self.oldest_ms(now), self.max_events);
        let mut outcomes = Vec::with_capacity(events.len());
        for event in events {
            if let Some(first) = log.by_id.get(&event.envelope.id) {
                outcomes.push(PublishOutcome::Duplicate(first.clone()));
                continue;
            }
            let cursor = Cursor::next_after(log.last, now);
            let stored = Arc::new(StoredEvent::from_new(&event, cursor));
            log.last = Some(cursor);
            log.events.push_back(stored.clone());
            log.by_id.insert(stored.envelope.id.clone(), stored.clone());
            log.fan_out(&stored);
            outcomes.push(PublishOutcome::Stored(stored));
        }
        log.trim(self.oldest_ms(now), self.max_events);
        outcomes
    }

    fn resolve_now(&self, topic: &Topic, position: &ResumePosition) -> Resolution {
        let now = now_ms();
        let oldest = self.oldest_ms(now);
        let mut map = self.shard(topic);
        let Some(log) = map.get_mut(topic) else {
            return expired_or_unknown(position, oldest);
        };
        log.trim(oldest, self.max_events);
        let cursor = match position {
            ResumePosition::Cursor(cursor) => *cursor,
            ResumePosition::EventId(id) => match log.by_id.get(id).and_then(|e| e.cursor()) {
                Some(cursor) => cursor,
                None => return expired_or_unknown(position, oldest),
            },
            ResumePosition::Unrecognized(_) => return Resolution::Unknown,
        };
        classify_cursor(cursor, log.last, log.trimmed_through, oldest)
    }

    fn read_now(&self, topic: &Topic, after: Cursor, limit: usize) -> Vec<Arc<StoredEvent>> {
        let oldest = self.oldest_ms(now_ms());
        let map = self.shard(topic);
        let Some(log) = map.get(topic) else {
            return Vec::new();
        };
        let start = log
            .events
            .partition_point(|e| e.cursor().is_some_and(|c| c <= after));
        log.events
            .iter()
            .skip(start)
            .filter(|e| e.time_ms >= oldest)
            .take(limit)
            .cloned()
            .collect()
    }
}

impl Broker for MemoryBroker {
    fn kind(&self) -> BackendKind {
        BackendKind::Memory
    }

    fn publish(
        &self,
        topic: Topic,
        events: Vec<NewEvent>,
    ) -> BoxFuture<Result<Vec<PublishOutcome>, BrokerError>> {
        let outcomes = self.publish_now(&topic, events);
        Box::pin(async move { Ok(outcomes) })
    }

    fn subscribe(
        &self,
        topic: Topic,
        sink: LiveSink,
    ) -> BoxFuture<Result<Option<Cursor>, BrokerError>> {
        let mut map = self.shard(&topic);
        let log = map.entry(topic).or_default();
        log.sinks.push(sink);
        let last = log.last;
        Box::pin(async move { Ok(last) })
    }

    fn unsubscribe(&self, topic: &Topic, sink_id: u64) {
        if let Some(log) = self.shard(topic).get_mut(topic) {
            log.sinks.retain(|sink| sink.id() != sink_id);
        }
    }

    fn resolve(
        &self,
        topic: Topic,
        position: ResumePosition,
    ) -> BoxFuture<Result<Resolution, BrokerError>> {
        let resolution = self.resolve_now(&topic, &position);
        Box::pin(async move { Ok(resolution) })
    }

    fn read_after(
        &self,
        topic: Topic,
        after: Cursor,
        limit: usize,
    ) -> BoxFuture<Result<Vec<Arc<StoredEvent>>, BrokerError>> {
        let events = self.read_now(&topic, after, limit);
        Box::pin(async move { Ok(events) })
    }

    fn health(&self) -> BackendHealth {
        BackendHealth::Ready
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::{OrgId, PublishRequest};

    fn topic() -> Topic {
        Topic::Org(OrgId::parse("org_t").unwrap())
    }

    fn new_event(name: &str, id: Option<&str>) -> NewEvent {
        let mut req = PublishRequest::new(name, serde_json::json!({}));
        req.id = id.map(str::to_owned);
        NewEvent::validate(&topic(), req, 65_536, now_ms()).unwrap()
    }

    #[test]
    fn cursors_increase_and_ids_dedupe() {
        let broker = MemoryBroker::new(60_000, 1000);
        let out = broker.publish_now(
            &topic(),
            vec![
                new_event("a", Some("evt_1")),
                new_event("b", None),
                new_event("c", Some("evt_1")),
            ],
        );
        let c0 = out[0].event().cursor().unwrap();
        let c1 = out[1].event().cursor().unwrap();
        assert!(c0 < c1);
        assert!(out[2].is_duplicate());
        assert_eq!(out[2].event().cursor(), Some(c0));
        let page = broker.read_now(&topic(), c0, 10);
        assert_eq!(page.len(), 1);
        assert_eq!(page[0].cursor(), Some(c1));
    }

    #[test]
    fn resolve_positions() {
        let broker = MemoryBroker::new(60_000, 2);
        assert_eq!(
            broker.resolve_now(&topic(), &ResumePosition::Cursor(Cursor::new(now_ms(), 0))),
            Resolution::Unknown
        );
        let out = broker.publish_now(
            &topic(),
            vec![
                new_event("a", Some("evt_a")),
                new_event("b", Some("evt_b")),
                new_event("c", None),
            ],
        );
        let first = out[0].event().cursor().unwrap();
        let second = out[1].event().cursor().unwrap();
        // Count cap 2 trimmed the first event: resuming before it is expired.
        assert_eq!(
            broker.resolve_now(&topic(), &ResumePosition::Cursor(first)),
            Resolution::After(first)
        );
        assert_eq!(
            broker.resolve_now(
                &topic(),
                &ResumePosition::Cursor(Cursor::new(first.ms - 1, 0))
            ),
            Resolution::Expired
        );
        assert_eq!(
            broker.resolve_now(&topic(), &ResumePosition::EventId("evt_b".into())),
            Resolution::After(second)
        );
        assert_eq!(
            broker.resolve_now(&topic(), &ResumePosition::EventId("evt_a".into())),
            Resolution::Unknown
        );
        assert_eq!(
            broker.resolve_now(&topic(), &ResumePosition::Cursor(Cursor::new(1, 0))),
            Resolution::Expired
        );
        assert_eq!(
            broker.resolve_now(&topic(), &ResumePosition::Cursor(Cursor::new(u64::MAX, 0))),
            Resolution::Unknown
        );
    }
}
