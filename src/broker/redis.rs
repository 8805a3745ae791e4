//! Redis backend: an atomic publish script (idempotency + XADD + PUBLISH), replay from
//! per-topic streams, and one shared pub/sub connection per instance with a canary.
//!
//! Bounds: the `redis` crate's `PubSub` forwards messages through an unbounded channel; the
//! router task below drains it without ever awaiting anything else, and hands each message
//! to its supervisor's bounded [`LiveSink`] with `try_send`. A full sink turns into a gap
//! that the supervisor fills from the stream, so a slow supervisor costs a stream read,
//! never memory.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Value};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use super::{
    BackendHealth, BoxFuture, Broker, BrokerError, LiveMessage, LiveSink, PublishOutcome,
    Resolution,
};
use crate::config::{BackendKind, Config};
use crate::envelope::{Cursor, Envelope, NewEvent, ResumePosition, StoredEvent, Topic, now_ms};
use crate::metrics::Metrics;

/// The publish script: for each event, skip it if its id was stored within the window,
/// else XADD (trimming by MINID) and PUBLISH the envelope with its cursor. One call is
/// atomic, so an event is in both the stream and the channel or in neither.
///
/// KEYS: stream, channel, then one idempotency key per event.
/// ARGV: minid, window ms, then one cursor-less envelope JSON per event.
/// Returns per event `{1, cursor}` (stored) or `{0, cursor, data}` (duplicate).
pub const PUBLISH_SCRIPT: &str = r#"
local results = {}
for i = 3, #ARGV do
  local id_key = KEYS[i]
  local data = ARGV[i]
  local first = redis.call('GET', id_key)
  local duplicate = nil
  if first then
    local entry = redis.call('XRANGE', KEYS[1], first, first)
    if entry[1] then
      duplicate = {0, first, entry[1][2][2]}
    end
  end
  if duplicate then
    results[#results + 1] = duplicate
  else
    local cursor = redis.call('XADD', KEYS[1], 'MINID', '~', ARGV[1], '*', 'data', data)
    redis.call('SET', id_key, cursor, 'PX', ARGV[2])
    redis.call('PUBLISH', KEYS[2], string.sub(data, 1, -2) .. ',"cursor":"' .. cursor .. '"}')
    results[#results + 1] = {1, cursor}
  end
end
return results
"#;

/// Entries scanned at most to find an envelope id that has no idempotency key.
const MAX_ID_SCAN: usize = 20_000;
/// Page size of id scans.
const ID_SCAN_PAGE: usize = 500;
/// How often the canary is published.
const CANARY_INTERVAL: Duration = Duration::from_millis(1000);
/// Silence after which the pub/sub connection is considered dead.
const CANARY_TIMEOUT: Duration = Duration::from_millis(3500);
/// Channels per SUBSCRIBE command when resubscribing.
const SUBSCRIBE_CHUNK: usize = 500;
/// Envelope ids of this instance's own publishes remembered until they come back.
const OWN_IDS_CAPACITY: usize = 16_384;

/// Ids this instance published that its pub/sub connection has not received back yet.
///
/// `events_published_total{path="redis_external"}` counts pub/sub messages that some other
/// program (another hub instance, DashClaw's Node app) published. Our own publishes are
/// already counted as `in_process`/`http`, so their ids are noted here *before* the publish
/// script runs (its PUBLISH can reach our subscriber before the script's reply reaches us)
/// and struck off when the message arrives. The set is bounded: ids that never come back
/// (no local subscriber, duplicates, failed calls) are evicted oldest first, and an own
/// publish whose id was evicted before it arrived would be miscounted as external, which
/// takes more than `OWN_IDS_CAPACITY` publishes in flight at once.
#[derive(Default)]
struct OwnIds {
    set: HashSet<String>,
    order: VecDeque<String>,
}

impl OwnIds {
    fn note(&mut self, id: &str) {
        if self.set.insert(id.to_owned()) {
            self.order.push_back(id.to_owned());
        }
        while self.order.len() > OWN_IDS_CAPACITY {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
    }

    /// True (and forgotten) when `id` was published by this instance.
    fn take(&mut self, id: &str) -> bool {
        let own = self.set.remove(id);
        if self.order.len() > 2 * self.set.len() + 64 {
            // Taken ids leave stale entries in `order`; drop them so it stays bounded by
            // the ids still awaited rather than by the publish rate.
            let set = &self.set;
            self.order.retain(|id| set.contains(id));
        }
        own
    }
}

/// Key and channel names of contract section 2.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// Names under `prefix` (`REALTIME_KEY_PREFIX`).
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }

    /// The topic's replay stream.
    pub fn stream(&self, topic: &Topic) -> String {
        match topic {
            Topic::Org(org) => format!("{}:org:{org}:stream", self.prefix),
            Topic::Ops => format!("{}:ops:stream", self.prefix),
        }
    }

    /// The topic's pub/sub channel.
    pub fn channel(&self, topic: &Topic) -> String {
        match topic {
            Topic::Org(org) => format!("{}:org:{org}:events", self.prefix),
            Topic::Ops => format!("{}:ops:events", self.prefix),
        }
    }

    /// The idempotency key of an envelope id (hub-internal).
    pub fn id_key(&self, topic: &Topic, id: &str) -> String {
        match topic {
            Topic::Org(org) => format!("{}:org:{org}:id:{id}", self.prefix),
            Topic::Ops => format!("{}:ops:id:{id}", self.prefix),
        }
    }

    fn canary(&self, instance: &str) -> String {
        format!("{}:hub:canary:{instance}", self.prefix)
    }

    fn epoch(&self) -> String {
        format!("{}:hub:epoch", self.prefix)
    }
}

struct Route {
    topic: Topic,
    sinks: Vec<LiveSink>,
}

enum Control {
    Subscribe(String, oneshot::Sender<()>),
    Unsubscribe(String),
}

#[derive(Default)]
struct Health {
    pubsub_up: bool,
    commands_error: Option<String>,
    last_canary: Option<Instant>,
}

struct Inner {
    keys: Keys,
    window_ms: u64,
    instance: String,
    client: redis::Client,
    commands: ConnectionManager,
    script: redis::Script,
    routes: Mutex<HashMap<String, Route>>,
    control: mpsc::Sender<Control>,
    health: Mutex<Health>,
    reconnects: AtomicU64,
    gap_fills_requested: AtomicU64,
    stopping: AtomicBool,
    metrics: Metrics,
    own_ids: Mutex<OwnIds>,
}

/// The Redis backend.
pub struct RedisBroker {
    inner: Arc<Inner>,
}

fn unavailable(error: redis::RedisError) -> BrokerError {
    BrokerError::Unavailable(error.to_string())
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl RedisBroker {
    /// Connects lazily and starts the pub/sub router; must run inside a Tokio runtime.
    pub fn start(config: &Config, metrics: Metrics) -> Result<Self, BrokerError> {
        let url = config
            .redis_url
            .as_deref()
            .ok_or_else(|| BrokerError::Protocol("REDIS_URL is not set".into()))?;
        let client = redis::Client::open(url)
            .map_err(|e| BrokerError::Protocol(format!("REDIS_URL: {e}")))?;
        let manager_config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(config.redis_timeout))
            .set_connection_timeout(Some(config.redis_timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let commands = ConnectionManager::new_lazy_with_config(client.clone(), manager_config)
            .map_err(|e| BrokerError::Protocol(e.to_string()))?;
        let (control, control_rx) = mpsc::channel(4096);
        let inner = Arc::new(Inner {
            keys: Keys::new(&config.key_prefix),
            window_ms: config.window_ms(),
            instance: ulid::Ulid::generate().to_string(),
            client,
            commands,
            script: redis::Script::new(PUBLISH_SCRIPT),
            routes: Mutex::new(HashMap::new()),
            control,
            health: Mutex::new(Health::default()),
            reconnects: AtomicU64::new(0),
            gap_fills_requested: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
            metrics,
            own_ids: Mutex::new(OwnIds::default()),
        });
        tokio::spawn(run_pubsub(inner.clone(), control_rx, config.redis_timeout));
        tokio::spawn(run_canary(Arc::downgrade(&inner)));
        Ok(Self { inner })
    }

    /// Pub/sub or command connections re-established so far.
    pub fn reconnects(&self) -> u64 {
        self.inner.reconnects.load(Ordering::Relaxed)
    }
}

impl Drop for RedisBroker {
    fn drop(&mut self) {
        self.inner.stopping.store(true, Ordering::SeqCst);
    }
}

impl Inner {
    fn note_command<T>(&self, result: &redis::RedisResult<T>) {
        let mut health = lock(&self.health);
        match result {
            Ok(_) => {
                // Commands work again after connection failures: the command connection
                // was re-established.
                if health.commands_error.take().is_some() {
                    self.metrics.redis_reconnects.inc();
                }
            }
            Err(e)
                if e.is_io_error()
                    || e.is_timeout()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal() =>
            {
                health.commands_error = Some(e.to_string());
            }
            Err(_) => {}
        }
    }

    fn oldest_ms(&self) -> u64 {
        now_ms().saturating_sub(self.window_ms)
    }

    /// Offers a message to every sink of every route (reconnects, data loss).
    fn broadcast(&self, message: LiveMessage) {
        let routes = lock(&self.routes);
        for route in routes.values() {
            for sink in &route.sinks {
                sink.offer(message.clone());
            }
        }
    }

    fn route_message(&self, channel: &str, payload: &[u8]) {
        if channel == self.keys.canary(&self.instance) {
            lock(&self.health).last_canary = Some(Instant::now());
            return;
        }
        let routes = lock(&self.routes);
        let Some(route) = routes.get(channel) else {
            return;
        };
        let envelope: Envelope = match serde_json::from_slice(payload) {
            Ok(envelope) => envelope,
            Err(error) => {
                warn!(channel, %error, "dropping a pub/sub message that is not an envelope");
                return;
            }
        };
        if let Topic::Org(org) = &route.topic
            && envelope.org_id != org.as_str()
        {
            warn!(
                channel,
                org_id = envelope.org_id,
                "dropping a message whose org_id does not match its channel"
            );
            return;
        }
        if !lock(&self.own_ids).take(&envelope.id) {
            self.metrics.events_published.redis_external.inc();
        }
        let event = Arc::new(StoredEvent::from_envelope(envelope, now_ms()));
        for sink in &route.sinks {
            sink.offer(LiveMessage::Event(event.clone()));
        }
    }

    async fn head(&self, topic: &Topic) -> Result<Option<Cursor>, BrokerError> {
        let mut conn = self.commands.clone();
        let result: redis::RedisResult<redis::streams::StreamRangeReply> = conn
            .xrevrange_count(self.keys.stream(topic), "+", "-", 1)
            .await;
        self.note_command(&result);
        let reply = result.map_err(unavailable)?;
        Ok(reply.ids.first().and_then(|entry| entry.id.parse().ok()))
    }

    async fn read_after(
        &self,
        topic: &Topic,
        after: Cursor,
        limit: usize,
    ) -> Result<Vec<Arc<StoredEvent>>, BrokerError> {
        let oldest = self.oldest_ms();
        // Entries older than the window are skipped whatever the producer's trimming.
        let start = if after.ms < oldest {
            format!("{oldest}-0")
        } else {
            format!("({after}")
        };
        let mut conn = self.commands.clone();
        let result: redis::RedisResult<redis::streams::StreamRangeReply> = conn
            .xrange_count(self.keys.stream(topic), start, "+", limit)
            .await;
        self.note_command(&result);
        let reply = result.map_err(unavailable)?;
        let received = now_ms();
        Ok(reply
            .ids
            .into_iter()
            .filter_map(|entry| {
                let cursor: Cursor = entry.id.parse().ok()?;
                let data: Vec<u8> = entry.get("data")?;
                match serde_json::from_slice::<Envelope>(&data) {
                    Ok(mut envelope) => {
                        envelope.cursor = Some(cursor);
                        Some(Arc::new(StoredEvent::from_envelope(envelope, received)))
                    }
                    Err(error) => {
                        warn!(stream = self.keys.stream(topic), id = entry.id, %error, "skipping a stream entry that is not an envelope");
                        None
                    }
                }
            })
            .collect())
    }

    async fn stream_info(&self, topic: &Topic) -> Result<Option<StreamInfo>, BrokerError> {
        let mut conn = self.commands.clone();
        let result: redis::RedisResult<Value> = redis::cmd("XINFO")
            .arg("STREAM")
            .arg(self.keys.stream(topic))
            .query_async(&mut conn)
            .await;
        match result {
            Ok(value) => {
                self.note_command(&Ok::<(), redis::RedisError>(()));
                Ok(Some(StreamInfo::parse(value)))
            }
            Err(e)
                if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError)
                    || e.to_string().contains("no such key") =>
            {
                Ok(None)
            }
            Err(e) => {
                self.note_command(&Err::<(), _>(e.clone()));
                Err(unavailable(e))
            }
        }
    }

    async fn find_event_id(&self, topic: &Topic, id: &str) -> Result<Option<Cursor>, BrokerError> {
        let mut conn = self.commands.clone();
        let result: redis::RedisResult<Option<String>> =
            conn.get(self.keys.id_key(topic, id)).await;
        self.note_command(&result);
        if let Some(cursor) = result.map_err(unavailable)?.and_then(|c| c.parse().ok()) {
            return Ok(Some(cursor));
        }
        // Ids written by other producers have no idempotency key: scan the window, from
        // the id's own ULID time when it has one, bounded by MAX_ID_SCAN entries.
        let ulid_ms = id
            .strip_prefix("evt_")
            .and_then(|s| ulid::Ulid::from_string(s).ok())
            .map(|u| u.timestamp_ms().saturating_sub(1000));
        let oldest = self.oldest_ms();
        let mut after = Cursor::new(
            ulid_ms.unwrap_or(oldest).max(oldest).saturating_sub(1),
            u64::MAX,
        );
        let mut scanned = 0;
        while scanned < MAX_ID_SCAN {
            let page = self.read_after(topic, after, ID_SCAN_PAGE).await?;
            for event in &page {
                if event.envelope.id == id {
                    return Ok(event.cursor());
                }
            }
            match page.last().and_then(|e| e.cursor()) {
                Some(last) if page.len() == ID_SCAN_PAGE => after = last,
                _ => break,
            }
            scanned += page.len();
        }
        Ok(None)
    }

    async fn resolve(
        &self,
        topic: &Topic,
        position: &ResumePosition,
    ) -> Result<Resolution, BrokerError> {
        let oldest = self.oldest_ms();
        let cursor = match position {
            ResumePosition::Cursor(cursor) => *cursor,
            ResumePosition::EventId(id) => match self.find_event_id(topic, id).await? {
                Some(cursor) => cursor,
                None => return Ok(super::expired_or_unknown(position, oldest)),
            },
            ResumePosition::Unrecognized(_) => return Ok(Resolution::Unknown),
        };
        let Some(info) = self.stream_info(topic).await? else {
            return Ok(super::expired_or_unknown(
                &ResumePosition::Cursor(cursor),
                oldest,
            ));
        };
        // `max-deleted-entry-id` covers trimming by any producer (MINID or MAXLEN).
        Ok(super::classify_cursor(
            cursor,
            info.last,
            info.max_deleted,
            oldest,
        ))
    }

    async fn publish(
        &self,
        topic: &Topic,
        events: &[NewEvent],
    ) -> Result<Vec<PublishOutcome>, BrokerError> {
        let minid = format!("{}-0", self.oldest_ms());
        let mut invocation = self.script.prepare_invoke();
        invocation
            .key(self.keys.stream(topic))
            .key(self.keys.channel(topic));
        for event in events {
            invocation.key(self.keys.id_key(topic, &event.envelope.id));
        }
        invocation.arg(minid).arg(self.window_ms.max(1));
        for event in events {
            invocation.arg(&event.data_json);
        }
        {
            let mut own = lock(&self.own_ids);
            for event in events {
                own.note(&event.envelope.id);
            }
        }
        let mut conn = self.commands.clone();
        let result: redis::RedisResult<Vec<Vec<Value>>> = invocation.invoke_async(&mut conn).await;
        self.note_command(&result);
        let replies = result.map_err(unavailable)?;
        if replies.len() != events.len() {
            return Err(BrokerError::Protocol(
                "publish script returned the wrong count".into(),
            ));
        }
        let received = now_ms();
        events
            .iter()
            .zip(replies)
            .map(|(event, reply)| {
                let text =
                    |v: &Value| -> Option<String> { redis::from_redis_value_ref::<String>(v).ok() };
                let stored = reply
                    .first()
                    .and_then(|v| redis::from_redis_value_ref::<i64>(v).ok())
                    == Some(1);
                let cursor: Cursor = reply
                    .get(1)
                    .and_then(text)
                    .and_then(|c| c.parse().ok())
                    .ok_or_else(|| {
                        BrokerError::Protocol("publish script returned no cursor".into())
                    })?;
                if stored {
                    return Ok(PublishOutcome::Stored(Arc::new(StoredEvent::from_new(
                        event, cursor,
                    ))));
                }
                let data = reply.get(2).and_then(text).ok_or_else(|| {
                    BrokerError::Protocol("publish script returned no data".into())
                })?;
                let mut envelope: Envelope = serde_json::from_str(&data)
                    .map_err(|e| BrokerError::Protocol(e.to_string()))?;
                envelope.cursor = Some(cursor);
                Ok(PublishOutcome::Duplicate(Arc::new(
                    StoredEvent::from_envelope(envelope, received),
                )))
            })
            .collect()
    }

    /// Registers the sink, makes sure its channel is subscribed, then reads the head.
    async fn subscribe(&self, topic: Topic, sink: LiveSink) -> Result<Option<Cursor>, BrokerError> {
        let channel = self.keys.channel(&topic);
        let first = {
            let mut routes = lock(&self.routes);
            let route = routes.entry(channel.clone()).or_insert_with(|| Route {
                topic: topic.clone(),
                sinks: Vec::new(),
            });
            route.sinks.retain(|s| !s.is_closed());
            route.sinks.push(sink.clone());
            route.sinks.len() == 1
        };
        let (done, confirmed) = oneshot::channel();
        let command = if first {
            Some(Control::Subscribe(channel, done))
        } else {
            None
        };
        let subscribed = match command {
            Some(command) => {
                self.control.send(command).await.is_ok()
                    && tokio::time::timeout(Duration::from_secs(3), confirmed)
                        .await
                        .is_ok_and(|r| r.is_ok())
            }
            None => lock(&self.health).pubsub_up,
        };
        if !subscribed {
            // Live delivery may start late: the supervisor fills from the stream.
            sink.mark_gap();
        }
        // The head must be known before live delivery is trusted; wait for Redis.
        loop {
            match self.head(&topic).await {
                Ok(head) => return Ok(head),
                Err(error) => {
                    debug!(%topic, %error, "waiting for redis to read the stream head");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
            if self.stopping.load(Ordering::SeqCst) {
                return Err(BrokerError::Unavailable("shutting down".into()));
            }
        }
    }

    fn unsubscribe(&self, topic: &Topic, sink_id: u64) {
        let channel = self.keys.channel(topic);
        let mut routes = lock(&self.routes);
        let empty = match routes.get_mut(&channel) {
            Some(route) => {
                route.sinks.retain(|s| s.id() != sink_id && !s.is_closed());
                route.sinks.is_empty()
            }
            None => false,
        };
        if empty {
            routes.remove(&channel);
            // If the control queue is full the channel stays subscribed; its messages are
            // dropped for lack of a route, which is harmless.
            let _ = self.control.try_send(Control::Unsubscribe(channel));
        }
    }
}

struct StreamInfo {
    last: Option<Cursor>,
    max_deleted: Option<Cursor>,
}

impl StreamInfo {
    fn parse(value: Value) -> Self {
        let mut info = StreamInfo {
            last: None,
            max_deleted: None,
        };
        let pairs: Vec<(String, Value)> = match value {
            Value::Array(items) => items
                .chunks(2)
                .filter_map(|pair| match pair {
                    [k, v] => redis::from_redis_value_ref::<String>(k)
                        .ok()
                        .map(|k| (k, v.clone())),
                    _ => None,
                })
                .collect(),
            Value::Map(items) => items
                .into_iter()
                .filter_map(|(k, v)| redis::from_redis_value::<String>(k).ok().map(|k| (k, v)))
                .collect(),
            _ => Vec::new(),
        };
        for (key, value) in pairs {
            match key.as_str() {
                "last-generated-id" => {}
                "max-deleted-entry-id" => {
                    info.max_deleted = redis::from_redis_value::<String>(value)
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .filter(|c: &Cursor| *c != Cursor::default());
                }
                "last-entry" => {
                    if let Value::Array(entry) = value {
                        info.last = entry
                            .first()
                            .and_then(|id| redis::from_redis_value_ref::<String>(id).ok())
                            .and_then(|s| s.parse().ok());
                    }
                }
                _ => {}
            }
        }
        info
    }
}

/// Publishes the canary so a silent pub/sub connection is noticed even when idle.
async fn run_canary(inner: std::sync::Weak<Inner>) {
    let mut tick = tokio::time::interval(CANARY_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        if inner.stopping.load(Ordering::SeqCst) {
            return;
        }
        let mut conn = inner.commands.clone();
        let result: redis::RedisResult<i64> = conn
            .publish(inner.keys.canary(&inner.instance), now_ms().to_string())
            .await;
        inner.note_command(&result);
    }
}

/// Keeps one pub/sub connection: connects, (re)subscribes, routes messages, watches the
/// canary, and on any failure reconnects with backoff and tells supervisors to fill gaps.
async fn run_pubsub(inner: Arc<Inner>, mut control: mpsc::Receiver<Control>, timeout: Duration) {
    let mut backoff = Duration::from_millis(100);
    let mut connected_before = false;
    let mut epoch: Option<String> = None;
    let mut pending: Vec<oneshot::Sender<()>> = Vec::new();
    while !inner.stopping.load(Ordering::SeqCst) {
        let connect = tokio::time::timeout(timeout, inner.client.get_async_pubsub()).await;
        let pubsub = match connect {
            Ok(Ok(pubsub)) => pubsub,
            Ok(Err(error)) => {
                lock(&inner.health).pubsub_up = false;
                debug!(%error, "redis pub/sub connect failed");
                drain_control(&mut control, &mut pending);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
            Err(_) => {
                lock(&inner.health).pubsub_up = false;
                drain_control(&mut control, &mut pending);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        let (mut sink, mut stream) = pubsub.split();
        // Data-loss check before resubscribing: a Redis that restarted empty has no epoch.
        match check_epoch(&inner, &mut epoch).await {
            Ok(true) => {}
            Ok(false) => {
                warn!("redis lost its data (epoch changed); clients will resync");
                inner.broadcast(LiveMessage::DataLost);
            }
            Err(error) => {
                debug!(%error, "epoch check failed; reconnecting");
                tokio::time::sleep(backoff).await;
                continue;
            }
        }
        let mut channels: Vec<String> = lock(&inner.routes).keys().cloned().collect();
        channels.push(inner.keys.canary(&inner.instance));
        let mut ok = true;
        for chunk in channels.chunks(SUBSCRIBE_CHUNK) {
            let subscribe = tokio::time::timeout(timeout, sink.subscribe(chunk)).await;
            if !matches!(subscribe, Ok(Ok(()))) {
                ok = false;
                break;
            }
        }
        if !ok {
            tokio::time::sleep(backoff).await;
            continue;
        }
        {
            let mut health = lock(&inner.health);
            health.pubsub_up = true;
            health.last_canary = Some(Instant::now());
        }
        for done in pending.drain(..) {
            let _ = done.send(());
        }
        backoff = Duration::from_millis(100);
        if connected_before {
            inner.reconnects.fetch_add(1, Ordering::Relaxed);
            inner.metrics.redis_reconnects.inc();
            info!("redis pub/sub reconnected; supervisors fill gaps from the streams");
        } else {
            info!("redis pub/sub connected");
        }
        // Also on the first connection: supervisors that started while Redis was down read
        // the stream head before this subscription existed, and must read what they missed.
        inner.gap_fills_requested.fetch_add(1, Ordering::Relaxed);
        inner.broadcast(LiveMessage::Gap);
        connected_before = true;
        let mut watchdog = tokio::time::interval(CANARY_INTERVAL / 2);
        let reason = loop {
            tokio::select! {
                message = stream.next() => match message {
                    Some(message) => inner.route_message(message.get_channel_name(), message.get_payload_bytes()),
                    None => break "connection closed",
                },
                command = control.recv() => match command {
                    Some(Control::Subscribe(channel, done)) => {
                        match tokio::time::timeout(timeout, sink.subscribe(&channel)).await {
                            Ok(Ok(())) => { let _ = done.send(()); }
                            _ => { pending.push(done); break "subscribe failed"; }
                        }
                    }
                    Some(Control::Unsubscribe(channel)) => {
                        let still_routed = lock(&inner.routes).contains_key(&channel);
                        if !still_routed && !matches!(tokio::time::timeout(timeout, sink.unsubscribe(&channel)).await, Ok(Ok(()))) {
                            break "unsubscribe failed";
                        }
                    }
                    None => return,
                },
                _ = watchdog.tick() => {
                    let silent = lock(&inner.health).last_canary.is_none_or(|t| t.elapsed() > CANARY_TIMEOUT);
                    if silent {
                        break "canary not received";
                    }
                    if inner.stopping.load(Ordering::SeqCst) {
                        return;
                    }
                }
            }
        };
        warn!(reason, "redis pub/sub connection lost; reconnecting");
        lock(&inner.health).pubsub_up = false;
    }
}

/// Answers queued subscribe requests while disconnected: they are registered routes and
/// will be subscribed on reconnect (their supervisors fill the gap then).
fn drain_control(control: &mut mpsc::Receiver<Control>, pending: &mut Vec<oneshot::Sender<()>>) {
    while let Ok(command) = control.try_recv() {
        if let Control::Subscribe(_, done) = command {
            pending.push(done);
        }
    }
}

/// True when Redis still has the data set this hub saw before (or on first contact).
async fn check_epoch(inner: &Inner, epoch: &mut Option<String>) -> redis::RedisResult<bool> {
    let mut conn = inner.commands.clone();
    let key = inner.keys.epoch();
    let fresh = ulid::Ulid::generate().to_string();
    let _: bool = conn.set_nx(&key, &fresh).await?;
    let current: String = conn.get(&key).await?;
    let same = match epoch {
        None => true,
        Some(previous) => *previous == current,
    };
    *epoch = Some(current);
    Ok(same)
}

impl Broker for RedisBroker {
    fn kind(&self) -> BackendKind {
        BackendKind::Redis
    }

    fn publish(
        &self,
        topic: Topic,
        events: Vec<NewEvent>,
    ) -> BoxFuture<Result<Vec<PublishOutcome>, BrokerError>> {
        let inner = self.inner.clone();
        Box::pin(async move { inner.publish(&topic, &events).await })
    }

    fn subscribe(
        &self,
        topic: Topic,
        sink: LiveSink,
    ) -> BoxFuture<Result<Option<Cursor>, BrokerError>> {
        let inner = self.inner.clone();
        Box::pin(async move { inner.subscribe(topic, sink).await })
    }

    fn unsubscribe(&self, topic: &Topic, sink_id: u64) {
        self.inner.unsubscribe(topic, sink_id);
    }

    fn resolve(
        &self,
        topic: Topic,
        position: ResumePosition,
    ) -> BoxFuture<Result<Resolution, BrokerError>> {
        let inner = self.inner.clone();
        Box::pin(async move { inner.resolve(&topic, &position).await })
    }

    fn read_after(
        &self,
        topic: Topic,
        after: Cursor,
        limit: usize,
    ) -> BoxFuture<Result<Vec<Arc<StoredEvent>>, BrokerError>> {
        let inner = self.inner.clone();
        Box::pin(async move { inner.read_after(&topic, after, limit).await })
    }

    fn health(&self) -> BackendHealth {
        let health = lock(&self.inner.health);
        if !health.pubsub_up {
            return BackendHealth::Unavailable("redis pub/sub connection is down".into());
        }
        if let Some(error) = &health.commands_error {
            return BackendHealth::Unavailable(format!("redis commands failing: {error}"));
        }
        match health.last_canary {
            Some(t) if t.elapsed() <= CANARY_TIMEOUT => BackendHealth::Ready,
            _ => {
                BackendHealth::Unavailable("redis canary has not come back through pub/sub".into())
            }
        }
    }
}
