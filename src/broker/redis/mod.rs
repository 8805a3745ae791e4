//! Redis backend: an atomic publish script (idempotency + XADD + PUBLISH), replay from
//! per-topic streams, and one shared pub/sub connection per instance watched by a canary.
//!
//! - [`keys`]: key and channel names;
//! - [`commands`]: the command connection: publish script, stream reads, lookups, epoch;
//! - [`pubsub`]: the routing table and the task keeping the pub/sub connection subscribed;
//! - [`health`]: the backend's health and reconnect count;
//! - [`invalid`]: envelopes from Redis that fail validation (dropped, counted, logged).

pub mod commands;
pub mod health;
pub mod invalid;
pub mod keys;
pub mod pubsub;

use std::sync::{Arc, Weak};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::task::JoinHandle;
use tracing::debug;

use self::commands::{CommandSettings, Commands};
use self::health::RedisHealth;
use self::invalid::InvalidEvents;
use self::keys::Keys;
use self::pubsub::{CANARY_INTERVAL, PubSubTask, Subscriptions};
use super::{
    BackendHealth, BoxFuture, Broker, BrokerError, LiveSink, Page, PublishOutcome, Resolution,
};
use crate::config::{BackendKind, Config};
use crate::envelope::{Cursor, NewEvent, ResumePosition, Topic};
use crate::metrics::Metrics;

pub use self::commands::PUBLISH_SCRIPT;

/// The Redis backend. Dropping it ends its background tasks.
pub struct RedisBroker {
    keys: Keys,
    commands: Arc<Commands>,
    subscriptions: Arc<Subscriptions>,
    health: Arc<RedisHealth>,
    tasks: Vec<JoinHandle<()>>,
}

impl RedisBroker {
    /// Connects lazily and starts the pub/sub and canary tasks; must run inside a Tokio
    /// runtime.
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
        let connection = ConnectionManager::new_lazy_with_config(client.clone(), manager_config)
            .map_err(|e| BrokerError::Protocol(e.to_string()))?;
        let keys = Keys::new(&config.key_prefix);
        let health = Arc::new(RedisHealth::new(metrics.redis_reconnects.clone()));
        let invalid = Arc::new(InvalidEvents::new(metrics.invalid_events.clone()));
        let settings = CommandSettings {
            keys: keys.clone(),
            window_ms: config.window_ms(),
            max_bytes: config.max_payload_bytes,
        };
        let commands = Arc::new(Commands::new(
            settings,
            connection,
            health.clone(),
            invalid.clone(),
        ));
        let canary = keys.canary(&ulid::Ulid::generate().to_string());
        let (subscriptions, control) = Subscriptions::new(
            canary.clone(),
            metrics.events_published.redis_external.clone(),
            invalid,
            config.max_payload_bytes,
        );
        let subscriptions = Arc::new(subscriptions);
        let pubsub = PubSubTask::new(
            subscriptions.clone(),
            commands.clone(),
            health.clone(),
            client,
            control,
            config.redis_timeout,
        );
        let tasks = vec![
            tokio::spawn(pubsub.run()),
            tokio::spawn(run_canary(Arc::downgrade(&commands), canary)),
        ];
        Ok(Self {
            keys,
            commands,
            subscriptions,
            health,
            tasks,
        })
    }
}

impl Drop for RedisBroker {
    fn drop(&mut self) {
        self.subscriptions.close();
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Publishes the canary every [`CANARY_INTERVAL`], so a silent pub/sub connection is
/// noticed even when no events flow.
async fn run_canary(commands: Weak<Commands>, channel: String) {
    let mut tick = tokio::time::interval(CANARY_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(commands) = commands.upgrade() else {
            return;
        };
        commands.publish_canary(&channel).await;
    }
}

/// Registers the sink, makes sure its channel is subscribed, then reads the stream head:
/// live delivery is trusted from the head on.
async fn subscribe(
    channel: String,
    topic: Topic,
    sink: LiveSink,
    commands: Arc<Commands>,
    subscriptions: Arc<Subscriptions>,
    health: Arc<RedisHealth>,
) -> Result<Option<Cursor>, BrokerError> {
    let first = subscriptions.add_route(&channel, &topic, sink.clone());
    let subscribed = if first {
        subscriptions.subscribe(channel).await
    } else {
        health.is_pubsub_up()
    };
    if !subscribed {
        // Live delivery may start late: the supervisor fills from the stream.
        sink.mark_gap();
    }
    loop {
        match commands.head(&topic).await {
            Ok(head) => return Ok(head),
            Err(error) => {
                debug!(%topic, %error, "waiting for redis to read the stream head");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
        if subscriptions.is_closed() {
            return Err(BrokerError::Unavailable("shutting down".into()));
        }
    }
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
        self.subscriptions
            .note_own(events.iter().map(|e| e.id.as_str()));
        let commands = self.commands.clone();
        Box::pin(async move { commands.publish(&topic, &events).await })
    }

    fn subscribe(
        &self,
        topic: Topic,
        sink: LiveSink,
    ) -> BoxFuture<Result<Option<Cursor>, BrokerError>> {
        Box::pin(subscribe(
            self.keys.channel(&topic),
            topic,
            sink,
            self.commands.clone(),
            self.subscriptions.clone(),
            self.health.clone(),
        ))
    }

    fn unsubscribe(&self, topic: &Topic, sink_id: u64) {
        self.subscriptions
            .remove_route(&self.keys.channel(topic), sink_id);
    }

    fn resolve(
        &self,
        topic: Topic,
        position: ResumePosition,
    ) -> BoxFuture<Result<Resolution, BrokerError>> {
        let commands = self.commands.clone();
        Box::pin(async move { commands.resolve(&topic, &position).await })
    }

    fn read_after(
        &self,
        topic: Topic,
        after: Cursor,
        limit: usize,
    ) -> BoxFuture<Result<Page, BrokerError>> {
        let commands = self.commands.clone();
        Box::pin(async move { commands.read_after(&topic, after, limit).await })
    }

    fn health(&self) -> BackendHealth {
        self.health.status()
    }
}
