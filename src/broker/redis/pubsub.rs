//! The Redis pub/sub side: the table routing each channel to its supervisors' sinks, and,
//! for a single server, the task that keeps the instance's one connection subscribed
//! (cluster mode's connections, one per shard, are `shards`' job).
//!
//! Bounds: the `redis` crate's `PubSub` forwards messages through an unbounded channel; the
//! task below drains it without awaiting anything else in between, and hands each message to
//! its supervisors' bounded [`LiveSink`]s with `try_send`. A full sink turns into a gap that
//! the supervisor fills from the stream, so a slow supervisor costs a stream read, never
//! memory.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::StreamExt;
use prometheus::IntCounter;
use redis::aio::{PubSubSink, PubSubStream};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use super::commands::Commands;
use super::health::RedisHealth;
use super::invalid::InvalidEvents;
use super::keys::Keys;
use super::own::{OwnEvents, OwnMessage};
use crate::broker::{LiveMessage, LiveSink};
use crate::envelope::{NewEvent, StoredEvent, Topic};

/// How often the canary is published.
pub const CANARY_INTERVAL: Duration = Duration::from_millis(1000);
/// Channels per SUBSCRIBE command when resubscribing.
const SUBSCRIBE_CHUNK: usize = 500;
/// Longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

struct Route {
    topic: Topic,
    sinks: Vec<LiveSink>,
    /// Its subscription was lost (cluster mode): before the first message of the new
    /// subscription, or once it is confirmed, the sinks are told to fill the gap.
    lost: bool,
}

impl Route {
    /// Tells the sinks to fill from the stream, once per loss.
    fn gap_if_lost(&mut self) {
        if std::mem::take(&mut self.lost) {
            for sink in &self.sinks {
                sink.offer(LiveMessage::Gap);
            }
        }
    }
}

/// What one pub/sub message was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routed {
    /// An event, handed to its route's sinks (or dropped as invalid).
    Event,
    /// One of this instance's canaries.
    Canary,
    /// A channel without a route (unsubscribed meanwhile).
    Unrouted,
}

/// A request to the connection task.
pub enum Control {
    /// Subscribe a channel; answered once subscribed.
    Subscribe(String, oneshot::Sender<()>),
    /// Unsubscribe a channel unless it was routed again meanwhile.
    Unsubscribe(String),
}

/// The routing table of one instance's pub/sub connections.
pub struct Subscriptions {
    routes: Mutex<HashMap<String, Route>>,
    control: mpsc::Sender<Control>,
    own: Mutex<OwnEvents>,
    keys: Keys,
    instance: String,
    /// The canary channels this instance publishes and expects back: one for a single
    /// server, one per shard in cluster mode (set by the shard task as the topology changes).
    canaries: Mutex<Vec<String>>,
    closed: AtomicBool,
    external_events: IntCounter,
    invalid: Arc<InvalidEvents>,
    max_bytes: usize,
}

impl Subscriptions {
    /// An empty table for `instance`'s channels named by `keys`; its connection task takes
    /// requests from the returned receiver.
    pub fn new(
        keys: Keys,
        instance: String,
        external_events: IntCounter,
        invalid: Arc<InvalidEvents>,
        max_bytes: usize,
    ) -> (Self, mpsc::Receiver<Control>) {
        let (control, control_rx) = mpsc::channel(4096);
        let subscriptions = Self {
            routes: Mutex::new(HashMap::new()),
            control,
            own: Mutex::new(OwnEvents::default()),
            canaries: Mutex::new(vec![keys.canary(&instance)]),
            keys,
            instance,
            closed: AtomicBool::new(false),
            external_events,
            invalid,
            max_bytes,
        };
        (subscriptions, control_rx)
    }

    /// The broker is gone: the connection task and waiting subscribers stop.
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }

    /// True once the broker is gone.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Notes events about to be published by this instance (see [`OwnEvents`]).
    pub fn note_own(&self, events: &[NewEvent]) {
        let mut own = lock(&self.own);
        for event in events {
            own.note(event);
        }
    }

    /// Routes `channel` to `sink`; true when the channel had no route yet (subscribe it).
    pub fn add_route(&self, channel: &str, topic: &Topic, sink: LiveSink) -> bool {
        let mut routes = lock(&self.routes);
        let route = routes.entry(channel.to_owned()).or_insert_with(|| Route {
            topic: topic.clone(),
            sinks: Vec::new(),
            lost: false,
        });
        route.sinks.retain(|s| !s.is_closed());
        route.sinks.push(sink);
        route.sinks.len() == 1
    }

    /// Asks the connection task to subscribe `channel`; true once it is subscribed.
    pub async fn subscribe(&self, channel: String) -> bool {
        let (done, confirmed) = oneshot::channel();
        self.control
            .send(Control::Subscribe(channel, done))
            .await
            .is_ok()
            && tokio::time::timeout(Duration::from_secs(3), confirmed)
                .await
                .is_ok_and(|r| r.is_ok())
    }

    /// Removes a sink; the channel is unsubscribed when its last sink is gone.
    pub fn remove_route(&self, channel: &str, sink_id: u64) {
        let mut routes = lock(&self.routes);
        let empty = match routes.get_mut(channel) {
            Some(route) => {
                route.sinks.retain(|s| s.id() != sink_id && !s.is_closed());
                route.sinks.is_empty()
            }
            None => false,
        };
        if empty {
            routes.remove(channel);
            // If the control queue is full the channel stays subscribed; its messages are
            // dropped for lack of a route, which is harmless.
            let _ = self
                .control
                .try_send(Control::Unsubscribe(channel.to_owned()));
        }
    }

    /// True while `channel` has a route.
    pub fn is_routed(&self, channel: &str) -> bool {
        lock(&self.routes).contains_key(channel)
    }

    /// Every routed channel.
    pub fn routed_channels(&self) -> Vec<String> {
        lock(&self.routes).keys().cloned().collect()
    }

    fn channels(&self) -> Vec<String> {
        let mut channels = self.routed_channels();
        channels.extend(self.canaries());
        channels
    }

    /// The canary channels to publish.
    pub fn canaries(&self) -> Vec<String> {
        lock(&self.canaries).clone()
    }

    /// Replaces the canary channels (cluster mode: one per shard).
    pub fn set_canaries(&self, channels: Vec<String>) {
        *lock(&self.canaries) = channels;
    }

    /// `channel`'s subscription is gone (cluster mode): its sinks fill the gap once it is
    /// subscribed again.
    pub fn mark_lost(&self, channel: &str) {
        if let Some(route) = lock(&self.routes).get_mut(channel) {
            route.lost = true;
        }
    }

    /// `channel` is subscribed again: its sinks fill the gap unless a message of the new
    /// subscription already made them.
    pub fn resubscribed(&self, channel: &str) {
        if let Some(route) = lock(&self.routes).get_mut(channel) {
            route.gap_if_lost();
        }
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

    /// Hands one pub/sub message to its route's sinks (after a gap signal when the route
    /// was lost, so a fill from the stream comes before the new subscription's events).
    pub fn route_message(&self, channel: &str, payload: &[u8]) -> Routed {
        if self.keys.is_canary_of(channel, &self.instance) {
            return Routed::Canary;
        }
        let mut routes = lock(&self.routes);
        let Some(route) = routes.get_mut(channel) else {
            return Routed::Unrouted;
        };
        route.gap_if_lost();
        let own = lock(&self.own).take(payload);
        let parsed = match own {
            OwnMessage::Rebuilt(event) => Ok(event),
            OwnMessage::External => {
                self.external_events.inc();
                StoredEvent::from_wire(payload, None, &route.topic, self.max_bytes)
            }
            // Validated like a published envelope: a producer cannot forge frames or events.
            OwnMessage::Parse => {
                StoredEvent::from_wire(payload, None, &route.topic, self.max_bytes)
            }
        };
        let event = match parsed {
            Ok(event) => Arc::new(event),
            Err(error) => {
                self.invalid.dropped(&route.topic, "pubsub", &error);
                return Routed::Event;
            }
        };
        for sink in &route.sinks {
            sink.offer(LiveMessage::Event(event.clone()));
        }
        Routed::Event
    }
}

/// The task that keeps one pub/sub connection subscribed to every routed channel.
pub struct PubSubTask {
    subscriptions: Arc<Subscriptions>,
    commands: Arc<Commands>,
    health: Arc<RedisHealth>,
    client: redis::Client,
    control: mpsc::Receiver<Control>,
    timeout: Duration,
    /// The data-set epoch seen on the previous connection.
    epoch: Option<String>,
    /// Subscribe requests made while disconnected: answered on the next connection.
    pending: Vec<oneshot::Sender<()>>,
    connected_before: bool,
    backoff: Duration,
}

impl PubSubTask {
    /// A task for `subscriptions` over `client`'s connections.
    pub fn new(
        subscriptions: Arc<Subscriptions>,
        commands: Arc<Commands>,
        health: Arc<RedisHealth>,
        client: redis::Client,
        control: mpsc::Receiver<Control>,
        timeout: Duration,
    ) -> Self {
        Self {
            subscriptions,
            commands,
            health,
            client,
            control,
            timeout,
            epoch: None,
            pending: Vec::new(),
            connected_before: false,
            backoff: Duration::from_millis(100),
        }
    }

    /// Connects, (re)subscribes, routes messages and watches the canary; on any failure it
    /// reconnects with backoff and tells supervisors to fill gaps. Ends with the broker.
    pub async fn run(mut self) {
        while !self.subscriptions.is_closed() {
            let Some((sink, stream)) = self.connect().await else {
                self.health.pubsub_down();
                self.answer_later();
                tokio::time::sleep(self.backoff).await;
                self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                continue;
            };
            self.connected();
            let reason = self.serve(sink, stream).await;
            let Some(reason) = reason else {
                return;
            };
            warn!(reason, "redis pub/sub connection lost; reconnecting");
            self.health.pubsub_down();
        }
    }

    /// Opens the connection, checks the data set and subscribes every routed channel.
    async fn connect(&mut self) -> Option<(PubSubSink, PubSubStream)> {
        let pubsub = match tokio::time::timeout(self.timeout, self.client.get_async_pubsub()).await
        {
            Ok(Ok(pubsub)) => pubsub,
            Ok(Err(error)) => {
                debug!(%error, "redis pub/sub connect failed");
                return None;
            }
            Err(_) => return None,
        };
        let (mut sink, stream) = pubsub.split();
        if !self.check_epoch().await {
            return None;
        }
        for chunk in self.subscriptions.channels().chunks(SUBSCRIBE_CHUNK) {
            let subscribe = tokio::time::timeout(self.timeout, sink.subscribe(chunk)).await;
            if !matches!(subscribe, Ok(Ok(()))) {
                return None;
            }
        }
        Some((sink, stream))
    }

    /// Data-loss check before resubscribing: a Redis that restarted empty has a new epoch.
    /// False when the check itself failed.
    async fn check_epoch(&mut self) -> bool {
        match self.commands.epoch().await {
            Ok(current) => {
                if self
                    .epoch
                    .as_ref()
                    .is_some_and(|previous| *previous != current)
                {
                    warn!("redis lost its data (epoch changed); clients will resync");
                    self.subscriptions.broadcast(LiveMessage::DataLost);
                }
                self.epoch = Some(current);
                true
            }
            Err(error) => {
                debug!(%error, "epoch check failed; reconnecting");
                false
            }
        }
    }

    fn connected(&mut self) {
        self.health.pubsub_up(self.connected_before);
        for done in self.pending.drain(..) {
            let _ = done.send(());
        }
        self.backoff = Duration::from_millis(100);
        if self.connected_before {
            info!("redis pub/sub reconnected; supervisors fill gaps from the streams");
        } else {
            info!("redis pub/sub connected");
        }
        // Also on the first connection: supervisors that started while Redis was down read
        // the stream head before this subscription existed, and must read what they missed.
        self.subscriptions.broadcast(LiveMessage::Gap);
        self.connected_before = true;
    }

    /// Subscribe requests queued while disconnected are routes already; they are subscribed
    /// on reconnect (their supervisors fill the gap then) and answered then.
    fn answer_later(&mut self) {
        while let Ok(command) = self.control.try_recv() {
            if let Control::Subscribe(_, done) = command {
                self.pending.push(done);
            }
        }
    }

    /// Routes messages and serves control requests until the connection fails (its reason)
    /// or the broker is gone (`None`).
    async fn serve(
        &mut self,
        mut sink: PubSubSink,
        mut stream: PubSubStream,
    ) -> Option<&'static str> {
        let mut watchdog = tokio::time::interval(CANARY_INTERVAL / 2);
        loop {
            tokio::select! {
                message = stream.next() => match message {
                    Some(message) => {
                        let payload = message.get_payload_bytes();
                        let routed = self.subscriptions.route_message(message.get_channel_name(), payload);
                        if routed == Routed::Canary {
                            self.health.canary_seen();
                        }
                    }
                    None => return Some("connection closed"),
                },
                command = self.control.recv() => match command {
                    Some(command) => {
                        if let Err(reason) = self.control_request(&mut sink, command).await {
                            return Some(reason);
                        }
                    }
                    None => return None,
                },
                _ = watchdog.tick() => {
                    if self.subscriptions.is_closed() {
                        return None;
                    }
                    if self.health.canary_silent() {
                        return Some("canary not received");
                    }
                }
            }
        }
    }

    /// Serves one control request; the reason when the connection failed doing it.
    async fn control_request(
        &mut self,
        sink: &mut PubSubSink,
        command: Control,
    ) -> Result<(), &'static str> {
        match command {
            Control::Subscribe(channel, done) => {
                match tokio::time::timeout(self.timeout, sink.subscribe(&channel)).await {
                    Ok(Ok(())) => {
                        let _ = done.send(());
                        Ok(())
                    }
                    _ => {
                        self.pending.push(done);
                        Err("subscribe failed")
                    }
                }
            }
            Control::Unsubscribe(channel) => {
                let unsubscribed = self.subscriptions.is_routed(&channel)
                    || matches!(
                        tokio::time::timeout(self.timeout, sink.unsubscribe(&channel)).await,
                        Ok(Ok(()))
                    );
                if unsubscribed {
                    Ok(())
                } else {
                    Err("unsubscribe failed")
                }
            }
        }
    }
}
