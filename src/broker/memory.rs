//! In-process broker: one bounded log per topic, no Redis.
//!
//! Cursors have the Redis stream form `<ms>-<seq>` so clients cannot tell the backends apart,
//! and a flip between them only costs a `realtime.resync`.
//!
//! Bounds: each log holds the replay window, at most [`MemoryLimits::max_events_per_topic`]
//! events and [`MemoryLimits::max_bytes_per_topic`] bytes; all logs together hold at most
//! [`MemoryLimits::max_bytes`]. An event is counted as its frame's bytes plus
//! [`EVENT_OVERHEAD`] for the bookkeeping around it. When a publish would go over a cap the
//! publishing org's own oldest events are evicted (an org never evicts another's history);
//! every eviction is recorded, so a resume or gap fill across it gets `realtime.resync`.
//! Logs left with no events and no subscriber are dropped by the sweep.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::{
    BackendHealth, BoxFuture, Broker, BrokerError, LiveMessage, LiveSink, Page, PublishOutcome,
    Resolution,
};
use crate::config::BackendKind;
use crate::envelope::{Cursor, NewEvent, ResumePosition, StoredEvent, Topic, now_ms};
use crate::recovery::{Loss, classify_cursor, expired_or_unknown};

/// Shards of the topic map, so publishes to different orgs rarely share a lock.
const SHARDS: usize = 32;

/// Bytes counted per stored event on top of its frame: the `StoredEvent`, its `Arc`, the
/// log slot and the id index entry.
pub const EVENT_OVERHEAD: usize = 256;

/// Default cap on events kept per topic, whatever the window.
pub const DEFAULT_MAX_EVENTS_PER_TOPIC: usize = 100_000;

/// How often expired events are dropped, so idle orgs free their memory too.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(5);

/// The memory backend's caps.
#[derive(Debug, Clone, Copy)]
pub struct MemoryLimits {
    /// Replay window in milliseconds.
    pub window_ms: u64,
    /// Events per topic, whatever their size.
    pub max_events_per_topic: usize,
    /// Bytes per topic.
    pub max_bytes_per_topic: usize,
    /// Bytes over all topics.
    pub max_bytes: usize,
}

impl MemoryLimits {
    /// The window and event cap, with byte caps that never bind (for tests and benches).
    pub fn by_count(window_ms: u64, max_events_per_topic: usize) -> Self {
        Self {
            window_ms,
            max_events_per_topic: max_events_per_topic.max(1),
            max_bytes_per_topic: usize::MAX,
            max_bytes: usize::MAX,
        }
    }
}

fn cost(event: &StoredEvent) -> usize {
    event.size() + EVENT_OVERHEAD
}

#[derive(Default)]
struct TopicLog {
    events: VecDeque<Arc<StoredEvent>>,
    by_id: HashMap<Arc<str>, Arc<StoredEvent>>,
    bytes: usize,
    last: Option<Cursor>,
    /// Newest cursor ever removed: positions before it cannot be replayed.
    trimmed_through: Option<Cursor>,
    sinks: Vec<LiveSink>,
}

impl TopicLog {
    /// Removes the oldest event; returns its cost.
    fn pop_oldest(&mut self) -> Option<usize> {
        let removed = self.events.pop_front()?;
        self.trimmed_through = removed.cursor();
        if let Some(entry) = self.by_id.get(removed.id())
            && Arc::ptr_eq(entry, &removed)
        {
            self.by_id.remove(removed.id());
        }
        let bytes = cost(&removed);
        self.bytes -= bytes;
        Some(bytes)
    }

    /// Drops what is out of the window or over the per-topic caps; returns the bytes freed.
    fn trim(&mut self, oldest_ms: u64, limits: &MemoryLimits) -> usize {
        let mut freed = 0;
        while let Some(front) = self.events.front() {
            let over = self.events.len() > limits.max_events_per_topic
                || self.bytes > limits.max_bytes_per_topic;
            if front.time_ms >= oldest_ms && !over {
                break;
            }
            freed += self.pop_oldest().unwrap_or(0);
        }
        freed
    }

    fn push(&mut self, event: Arc<StoredEvent>) -> usize {
        let bytes = cost(&event);
        self.bytes += bytes;
        self.last = event.cursor();
        self.by_id.insert(event.shared_id(), event.clone());
        self.events.push_back(event);
        bytes
    }

    fn fan_out(&mut self, event: &Arc<StoredEvent>) {
        self.sinks.retain(|sink| !sink.is_closed());
        for sink in &self.sinks {
            sink.offer(LiveMessage::Event(event.clone()));
        }
    }

    /// Nothing to replay, nobody listening, and the last cursor out of the window (so a new
    /// log of the topic cannot hand out a cursor this one already did): the log can go.
    fn is_idle(&self, oldest_ms: u64) -> bool {
        self.events.is_empty()
            && self.sinks.iter().all(LiveSink::is_closed)
            && self.last.is_none_or(|last| last.ms < oldest_ms)
    }
}

/// The memory backend.
pub struct MemoryBroker {
    shards: Vec<Mutex<HashMap<Topic, TopicLog>>>,
    limits: MemoryLimits,
    /// Bytes held by every log together.
    total_bytes: AtomicUsize,
}

impl MemoryBroker {
    /// A broker keeping `window_ms` of events, at most `max_events` per topic, no byte caps.
    pub fn new(window_ms: u64, max_events: usize) -> Self {
        Self::with_limits(MemoryLimits::by_count(window_ms, max_events))
    }

    /// A broker with these caps.
    pub fn with_limits(limits: MemoryLimits) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            limits,
            total_bytes: AtomicUsize::new(0),
        }
    }

    /// A broker that sweeps expired events every [`SWEEP_INTERVAL`] on a task it owns (the
    /// task ends once the broker is dropped); must run inside a Tokio runtime.
    pub fn start(limits: MemoryLimits) -> Arc<Self> {
        let broker = Arc::new(Self::with_limits(limits));
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
        now.saturating_sub(self.limits.window_ms)
    }

    /// Bytes held by every log together (never above [`MemoryLimits::max_bytes`]).
    pub fn held_bytes(&self) -> usize {
        self.total_bytes.load(Ordering::Relaxed)
    }

    fn freed(&self, bytes: usize) {
        self.total_bytes.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// Drops expired events of every topic and the logs left idle.
    pub fn sweep(&self) {
        let oldest = self.oldest_ms(now_ms());
        for shard in &self.shards {
            let mut map = shard.lock().unwrap_or_else(|p| p.into_inner());
            for log in map.values_mut() {
                let freed = log.trim(oldest, &self.limits);
                self.freed(freed);
                log.sinks.retain(|sink| !sink.is_closed());
            }
            map.retain(|_, log| !log.is_idle(oldest));
        }
    }

    fn publish_now(&self, topic: &Topic, events: Vec<NewEvent>) -> Vec<PublishOutcome> {
        let now = now_ms();
        let mut map = self.shard(topic);
        let log = map.entry(topic.clone()).or_default();
        self.freed(log.trim(self.oldest_ms(now), &self.limits));
        let mut outcomes = Vec::with_capacity(events.len());
        for event in events {
            if let Some(first) = log.by_id.get(event.id.as_str()) {
                outcomes.push(PublishOutcome::Duplicate(first.clone()));
                continue;
            }
            let cursor = Cursor::next_after(log.last, now);
            let stored = Arc::new(StoredEvent::from_new(&event, cursor));
            self.total_bytes
                .fetch_add(log.push(stored.clone()), Ordering::Relaxed);
            log.fan_out(&stored);
            outcomes.push(PublishOutcome::Stored(stored));
        }
        self.freed(log.trim(self.oldest_ms(now), &self.limits));
        // Over the instance's cap: this org pays with its own oldest events, down to none
        // (the new events were delivered live; their replay is what goes).
        while self.held_bytes() > self.limits.max_bytes {
            match log.pop_oldest() {
                Some(bytes) => self.freed(bytes),
                None => break,
            }
        }
        outcomes
    }

    fn resolve_now(&self, topic: &Topic, position: &ResumePosition) -> Resolution {
        let now = now_ms();
        let oldest = self.oldest_ms(now);
        let mut map = self.shard(topic);
        let Some(log) = map.get_mut(topic) else {
            return expired_or_unknown(position, oldest);
        };
        self.freed(log.trim(oldest, &self.limits));
        let cursor = match position {
            ResumePosition::Cursor(cursor) => *cursor,
            ResumePosition::EventId(id) => {
                match log.by_id.get(id.as_str()).and_then(|e| e.cursor()) {
                    Some(cursor) => cursor,
                    None => return expired_or_unknown(position, oldest),
                }
            }
            ResumePosition::Unrecognized(_) => return Resolution::Unknown,
        };
        let lost_after = log.trimmed_through.is_some_and(|t| cursor < t);
        classify_cursor(cursor, log.last, lost_after, oldest)
    }

    fn read_now(&self, topic: &Topic, after: Cursor, limit: usize) -> Page {
        let oldest = self.oldest_ms(now_ms());
        let map = self.shard(topic);
        let Some(log) = map.get(topic) else {
            return Page::default();
        };
        // Exact here: the log knows the newest event it ever removed.
        let lost = (after != Cursor::default() && log.trimmed_through.is_some_and(|t| after < t))
            .then_some(Loss::Trimmed);
        let start = log
            .events
            .partition_point(|e| e.cursor().is_some_and(|c| c <= after));
        let events: Vec<_> = log
            .events
            .iter()
            .skip(start)
            .filter(|e| e.time_ms >= oldest)
            .take(limit)
            .cloned()
            .collect();
        Page {
            full: events.len() == limit,
            events,
            lost,
        }
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
    ) -> BoxFuture<Result<Page, BrokerError>> {
        let page = self.read_now(&topic, after, limit);
        Box::pin(async move { Ok(page) })
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
        assert_eq!(page.events.len(), 1);
        assert_eq!(page.events[0].cursor(), Some(c1));
        assert!(page.lost.is_none());
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

    #[test]
    fn a_read_across_an_eviction_reports_the_loss() {
        let broker = MemoryBroker::new(60_000, 2);
        let out = broker.publish_now(&topic(), vec![new_event("a", None)]);
        let first = out[0].event().cursor().unwrap();
        assert!(broker.read_now(&topic(), first, 10).lost.is_none());
        broker.publish_now(&topic(), vec![new_event("b", None), new_event("c", None)]);
        // `first` itself was evicted, but nothing after it: no loss.
        assert!(broker.read_now(&topic(), first, 10).lost.is_none());
        broker.publish_now(&topic(), vec![new_event("d", None)]);
        let page = broker.read_now(&topic(), first, 10);
        assert_eq!(
            page.lost,
            Some(Loss::Trimmed),
            "the event after `first` was evicted"
        );
        assert_eq!(page.events.len(), 2);
        assert!(
            broker
                .read_now(&topic(), Cursor::default(), 10)
                .lost
                .is_none()
        );
    }

    #[test]
    fn byte_caps_bound_each_org_and_the_instance() {
        let event_cost = {
            let probe = MemoryBroker::new(60_000, 10);
            let out = probe.publish_now(&topic(), vec![new_event("a", None)]);
            cost(out[0].event())
        };
        let broker = MemoryBroker::with_limits(MemoryLimits {
            window_ms: 60_000,
            max_events_per_topic: 1000,
            max_bytes_per_topic: event_cost * 3,
            max_bytes: event_cost * 5,
        });
        for _ in 0..10 {
            broker.publish_now(&topic(), vec![new_event("a", None)]);
        }
        assert_eq!(broker.held_bytes(), event_cost * 3, "per-topic cap");
        let other = Topic::Org(OrgId::parse("org_u").unwrap());
        for _ in 0..10 {
            let event = NewEvent::validate(
                &other,
                PublishRequest::new("a", serde_json::json!({})),
                65_536,
                now_ms(),
            )
            .unwrap();
            broker.publish_now(&other, vec![event]);
            assert!(broker.held_bytes() <= event_cost * 5, "instance cap");
        }
        // The other org paid with its own history; the first kept its three.
        assert_eq!(
            broker
                .read_now(&topic(), Cursor::default(), 10)
                .events
                .len(),
            3
        );
        assert_eq!(
            broker.read_now(&other, Cursor::default(), 10).events.len(),
            2
        );
    }

    #[test]
    fn idle_logs_are_dropped_by_the_sweep() {
        let broker = MemoryBroker::new(1, 10);
        broker.publish_now(&topic(), vec![new_event("a", None)]);
        std::thread::sleep(Duration::from_millis(5));
        broker.sweep();
        assert_eq!(broker.held_bytes(), 0);
        let shards: usize = broker.shards.iter().map(|s| s.lock().unwrap().len()).sum();
        assert_eq!(shards, 0, "the empty log is gone");
    }
}
