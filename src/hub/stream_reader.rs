//! The one reader of the streams: where a resume position lands and pages of events after a
//! cursor, for session replays and supervisor gap fills alike.
//!
//! Identical requests in flight at the same time are served by one broker call: after a
//! restart many sessions resume from the same cursor, and every supervisor of an org fills
//! from the same `last`, so a reconnect storm costs one stream read per distinct position
//! instead of one per session. Replays also read from the pages read moments ago
//! ([`PageCache`]): sessions resuming from nearby positions (inside a page another one read)
//! cost no read at all. Distinct reads run concurrently, so one long replay does not hold
//! up another client's.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};

use super::messages::{Page, ReadPage, ReplayPage, ResolvePosition};
use super::page_cache::PageCache;
use crate::broker::{Broker, BrokerError, Resolution};
use crate::envelope::{Cursor, ResumePosition, Topic, now_ms};
use crate::metrics::Metrics;

type SharedRead<T> = Shared<BoxFuture<'static, Result<T, BrokerError>>>;

/// Reads in flight, by what they read; each entry is removed when its read completes.
struct InFlight<K, T: Clone> {
    reads: HashMap<K, (u64, SharedRead<T>)>,
    next_id: u64,
}

impl<K: Hash + Eq + Clone + Unpin + 'static, T: Clone + Send + Sync + 'static> InFlight<K, T> {
    fn new() -> Self {
        Self {
            reads: HashMap::new(),
            next_id: 0,
        }
    }

    /// The read in flight for `key`, or a new one from `start`; `Some(id)` when new, so the
    /// caller can forget it once done.
    fn join_or_start(
        &mut self,
        key: &K,
        start: impl FnOnce() -> BoxFuture<'static, Result<T, BrokerError>>,
    ) -> (SharedRead<T>, Option<u64>) {
        if let Some((_, read)) = self.reads.get(key) {
            tracing::debug!("a read shares one in flight");
            return (read.clone(), None);
        }
        let id = self.next_id;
        self.next_id += 1;
        let read = start().shared();
        self.reads.insert(key.clone(), (id, read.clone()));
        (read, Some(id))
    }

    fn finish(&mut self, key: &K, id: u64) {
        if self
            .reads
            .get(key)
            .is_some_and(|(current, _)| *current == id)
        {
            self.reads.remove(key);
        }
    }
}

/// The stream reader actor.
pub struct StreamReader {
    broker: Arc<dyn Broker>,
    pages: InFlight<(Topic, Cursor, usize), Page>,
    resolutions: InFlight<(Topic, ResumePosition), Resolution>,
    cache: PageCache,
    window_ms: u64,
    metrics: Metrics,
}

impl StreamReader {
    /// A reader over `broker`, whose replay window is `window_ms`; it counts its reads in
    /// `metrics`.
    pub fn new(broker: Arc<dyn Broker>, window_ms: u64, metrics: Metrics) -> Self {
        Self {
            broker,
            pages: InFlight::new(),
            resolutions: InFlight::new(),
            cache: PageCache::default(),
            window_ms,
            metrics,
        }
    }

    /// Counts a resume read served by the backend (`new`) or shared with one in flight.
    fn count(&self, new: bool) {
        let reads = &self.metrics.stream_reads;
        if new {
            reads.backend.inc();
        } else {
            reads.shared.inc();
        }
    }

    /// A page from the broker, shared with an identical read in flight (the flag says
    /// whether this call started it); kept for nearby replays once read.
    fn read(
        &mut self,
        key: (Topic, Cursor, usize),
        ctx: &mut Context<Self>,
    ) -> (ResponseFuture<Result<Page, BrokerError>>, bool) {
        let broker = self.broker.clone();
        let (read, new) = self.pages.join_or_start(&key, || {
            let read = broker.read_after(key.0.clone(), key.1, key.2);
            async move { read.await.map(Arc::new) }.boxed()
        });
        let started = new.is_some();
        if let Some(id) = new {
            ctx.spawn(read.clone().into_actor(self).map(move |result, act, _| {
                act.pages.finish(&key, id);
                if let Ok(page) = result {
                    act.cache.insert(&key.0, key.1, page, Instant::now());
                }
            }));
        }
        (Box::pin(read), started)
    }
}

impl Actor for StreamReader {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(4096);
        ctx.run_interval(Duration::from_secs(1), |act, _| {
            act.cache.expire(Instant::now());
        });
    }
}

impl Handler<ReadPage> for StreamReader {
    type Result = ResponseFuture<Result<Page, BrokerError>>;

    fn handle(&mut self, msg: ReadPage, ctx: &mut Self::Context) -> Self::Result {
        // Gap fills need the stream as it is now: never from recent pages. They are counted
        // by `gap_fills_total`, not as resume reads.
        self.read((msg.topic, msg.after, msg.limit), ctx).0
    }
}

impl Handler<ReplayPage> for StreamReader {
    type Result = ResponseFuture<Result<Page, BrokerError>>;

    fn handle(&mut self, msg: ReplayPage, ctx: &mut Self::Context) -> Self::Result {
        if let Some(page) = self
            .cache
            .read(&msg.topic, msg.after, msg.limit, Instant::now())
        {
            tracing::debug!("a replay page is served from a recent read");
            self.metrics.stream_reads.cache.inc();
            return Box::pin(async move { Ok(Arc::new(page)) });
        }
        let (read, started) = self.read((msg.topic, msg.after, msg.limit), ctx);
        self.count(started);
        read
    }
}

impl Handler<ResolvePosition> for StreamReader {
    type Result = ResponseFuture<Result<Resolution, BrokerError>>;

    fn handle(&mut self, msg: ResolvePosition, ctx: &mut Self::Context) -> Self::Result {
        if let ResumePosition::Cursor(cursor) = msg.position
            && cursor.ms >= now_ms().saturating_sub(self.window_ms)
            && self.cache.holds(&msg.topic, cursor, Instant::now())
        {
            tracing::debug!("a resume position is found in a recent read");
            self.metrics.stream_reads.cache.inc();
            return Box::pin(async move { Ok(Resolution::After(cursor)) });
        }
        let key = (msg.topic, msg.position);
        let broker = self.broker.clone();
        let (read, new) = self
            .resolutions
            .join_or_start(&key, || broker.resolve(key.0.clone(), key.1.clone()));
        self.count(new.is_some());
        if let Some(id) = new {
            ctx.spawn(
                read.clone()
                    .into_actor(self)
                    .map(move |_, act, _| act.resolutions.finish(&key, id)),
            );
        }
        Box::pin(read)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::sync::watch;

    use futures_util::future::join_all;

    use super::*;
    use crate::broker::{
        BackendHealth, BoxFuture as BrokerFuture, LiveSink, MemoryBroker, PublishOutcome,
    };
    use crate::config::BackendKind;
    use crate::envelope::{NewEvent, OrgId, PublishRequest, now_ms};

    /// A memory broker whose reads wait for a gate and are counted, so a test can hold
    /// many identical requests in flight at once.
    struct GatedBroker {
        inner: MemoryBroker,
        reads: AtomicUsize,
        resolves: AtomicUsize,
        gate: watch::Receiver<bool>,
    }

    impl Broker for GatedBroker {
        fn kind(&self) -> BackendKind {
            BackendKind::Memory
        }
        fn publish(
            &self,
            topic: Topic,
            events: Vec<NewEvent>,
        ) -> BrokerFuture<Result<Vec<PublishOutcome>, BrokerError>> {
            self.inner.publish(topic, events)
        }
        fn subscribe(
            &self,
            topic: Topic,
            sink: LiveSink,
        ) -> BrokerFuture<Result<Option<Cursor>, BrokerError>> {
            self.inner.subscribe(topic, sink)
        }
        fn unsubscribe(&self, topic: &Topic, sink_id: u64) {
            self.inner.unsubscribe(topic, sink_id)
        }
        fn resolve(
            &self,
            topic: Topic,
            position: ResumePosition,
        ) -> BrokerFuture<Result<Resolution, BrokerError>> {
            self.resolves.fetch_add(1, Ordering::SeqCst);
            let mut gate = self.gate.clone();
            let gated = topic == self::topic();
            let read = self.inner.resolve(topic, position);
            Box::pin(async move {
                if gated {
                    let _ = gate.wait_for(|open| *open).await;
                }
                read.await
            })
        }
        fn read_after(
            &self,
            topic: Topic,
            after: Cursor,
            limit: usize,
        ) -> BrokerFuture<Result<crate::broker::Page, BrokerError>> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            let mut gate = self.gate.clone();
            let gated = topic == self::topic();
            let read = self.inner.read_after(topic, after, limit);
            Box::pin(async move {
                if gated {
                    let _ = gate.wait_for(|open| *open).await;
                }
                read.await
            })
        }
        fn health(&self) -> BackendHealth {
            BackendHealth::Ready
        }
    }

    fn topic() -> Topic {
        Topic::Org(OrgId::parse("org_reader").unwrap())
    }

    fn barrier() -> ReadPage {
        ReadPage {
            topic: Topic::Org(OrgId::parse("org_barrier").unwrap()),
            after: Cursor::default(),
            limit: 1,
        }
    }

    #[actix::test]
    async fn identical_reads_in_flight_cost_one_broker_call() {
        let (gate, gate_rx) = watch::channel(false);
        let broker = Arc::new(GatedBroker {
            inner: MemoryBroker::new(600_000, 1000),
            reads: AtomicUsize::new(0),
            resolves: AtomicUsize::new(0),
            gate: gate_rx,
        });
        let events: Vec<NewEvent> = (0..5)
            .map(|n| {
                let request = PublishRequest::new("a.b", serde_json::json!({ "n": n }));
                NewEvent::validate(&topic(), request, 65_536, now_ms()).unwrap()
            })
            .collect();
        let stored = broker.publish(topic(), events).await.unwrap();
        let first = stored[0].event().cursor().unwrap();
        let reader = StreamReader::new(broker.clone(), 600_000, Metrics::new()).start();
        // The barrier is never gated: once it is answered, the reader has started (its
        // mailbox is large), and once the second one is, it has taken every request before.
        reader.send(barrier()).await.unwrap().unwrap();
        let pages = actix::spawn(join_all((0..50).map(|_| {
            reader.send(ReadPage {
                topic: topic(),
                after: first,
                limit: 256,
            })
        })));
        let lookups = actix::spawn(join_all((0..50).map(|_| {
            reader.send(ResolvePosition {
                topic: topic(),
                position: ResumePosition::Cursor(first),
            })
        })));
        let other = actix::spawn(reader.send(ReadPage {
            topic: topic(),
            after: Cursor::default(),
            limit: 256,
        }));
        reader.send(barrier()).await.unwrap().unwrap();
        gate.send_replace(true);
        for page in pages.await.unwrap() {
            assert_eq!(page.unwrap().unwrap().events.len(), 4);
        }
        for lookup in lookups.await.unwrap() {
            assert_eq!(lookup.unwrap().unwrap(), Resolution::After(first));
        }
        assert_eq!(other.await.unwrap().unwrap().unwrap().events.len(), 5);
        let reads = broker.reads.load(Ordering::SeqCst) - 2; // the two barriers
        assert_eq!(reads, 2, "50 identical pages (and one other), two reads");
        assert_eq!(broker.resolves.load(Ordering::SeqCst), 1, "50 lookups, one");
        // Done reads are forgotten: the next identical request reads again.
        let again = reader.send(ReadPage {
            topic: topic(),
            after: first,
            limit: 256,
        });
        assert_eq!(again.await.unwrap().unwrap().events.len(), 4);
        assert_eq!(broker.reads.load(Ordering::SeqCst) - 2, 3);
    }

    #[actix::test]
    async fn nearby_replays_are_served_from_the_page_read_for_another() {
        let (gate, gate_rx) = watch::channel(true);
        drop(gate);
        let broker = Arc::new(GatedBroker {
            inner: MemoryBroker::new(600_000, 1000),
            reads: AtomicUsize::new(0),
            resolves: AtomicUsize::new(0),
            gate: gate_rx,
        });
        let events: Vec<NewEvent> = (0..20)
            .map(|n| {
                let request = PublishRequest::new("a.b", serde_json::json!({ "n": n }));
                NewEvent::validate(&topic(), request, 65_536, now_ms()).unwrap()
            })
            .collect();
        let stored = broker.publish(topic(), events).await.unwrap();
        let cursors: Vec<Cursor> = stored.iter().map(|o| o.event().cursor().unwrap()).collect();
        let metrics = Metrics::new();
        let reader = StreamReader::new(broker.clone(), 600_000, metrics.clone()).start();
        let replay = |after: Cursor| ReplayPage {
            topic: topic(),
            after,
            limit: 256,
        };
        let first = reader.send(replay(cursors[0])).await.unwrap().unwrap();
        assert_eq!((first.events.len(), first.full), (19, false));
        assert_eq!(broker.reads.load(Ordering::SeqCst), 1);
        for (n, cursor) in cursors.iter().enumerate().take(19).skip(1) {
            let resolved = reader
                .send(ResolvePosition {
                    topic: topic(),
                    position: ResumePosition::Cursor(*cursor),
                })
                .await
                .unwrap()
                .unwrap();
            assert_eq!(resolved, Resolution::After(*cursor));
            let page = reader.send(replay(*cursor)).await.unwrap().unwrap();
            let got: Vec<Cursor> = page.events.iter().filter_map(|e| e.cursor()).collect();
            assert_eq!(got, cursors[n + 1..], "after #{n}");
            assert!(!page.full && page.lost.is_none());
        }
        assert_eq!(
            broker.reads.load(Ordering::SeqCst),
            1,
            "18 nearby replays, no read"
        );
        assert_eq!(broker.resolves.load(Ordering::SeqCst), 0, "nor lookup");
        assert_eq!(metrics.stream_reads.cache.get(), 36);
        // What follows the page's last event, and a gap fill, are read from the stream.
        let tail = reader.send(replay(cursors[19])).await.unwrap().unwrap();
        assert!(tail.events.is_empty() && !tail.full);
        let fill = reader
            .send(ReadPage {
                topic: topic(),
                after: cursors[5],
                limit: 256,
            })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(fill.events.len(), 14);
        assert_eq!(broker.reads.load(Ordering::SeqCst), 3);
        assert_eq!(
            metrics.stream_reads.backend.get(),
            2,
            "gap fills are not resume reads"
        );
    }
}
