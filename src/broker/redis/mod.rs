//! Redis backend: an atomic publish script (idempotency + XADD + PUBLISH), replay from
//! per-topic streams, and pub/sub watched by a canary: one shared connection per instance
//! on a single server, one per shard master on a Redis Cluster (`redis+cluster://`).
//!
//! - [`keys`]: key and channel names, for both layouts;
//! - [`topology`]: cluster URLs, hash slots, the slot map;
//! - [`connection`]: the command connection, to one server or a cluster;
//! - [`commands`]: what runs on it: publish script, stream reads, lookups, epoch;
//! - [`pubsub`]: the routing table and the task keeping a single server's pub/sub subscribed;
//! - [`shards`]: the task keeping a cluster's sharded pub/sub subscribed, shard by shard;
//! - [`health`]: the backend's health, per shard, and reconnect count;
//! - [`invalid`]: envelopes from Redis that fail validation (dropped, counted, logged);
//! - [`own`]: this instance's publishes until they come back (counted apart, not re-parsed).

pub mod commands;
pub mod connection;
pub mod health;
pub mod invalid;
pub mod keys;
pub mod own;
pub mod pubsub;
pub mod shards;
pub mod topology;

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::task::JoinHandle;
use tracing::debug;

use self::commands::{CommandSettings, Commands, WaitForReplicas};
use self::connection::Connection;
use self::health::RedisHealth;
use self::invalid::InvalidEvents;
use self::keys::{KeyScheme, Keys};
use self::pubsub::{CANARY_INTERVAL, Control, PubSubTask, Subscriptions};
use self::shards::{ShardLinks, ShardPubSub};
use self::topology::{ClusterUrl, is_cluster_url};
use super::{
    BackendHealth, BoxFuture, Broker, BrokerError, LiveSink, Page, PublishOutcome, Resolution,
};
use crate::config::{BackendKind, Config};
use crate::envelope::{Cursor, NewEvent, ResumePosition, Topic};
use crate::metrics::Metrics;

pub use self::commands::{CLUSTER_PUBLISH_SCRIPT, PUBLISH_SCRIPT};

/// Which Redis the backend runs on.
enum Target {
    /// One server.
    Single(redis::Client),
    /// A cluster, reached through its seed nodes.
    Cluster(ClusterUrl),
}

impl Target {
    fn parse(url: &str) -> Result<Self, BrokerError> {
        let invalid = |e: String| BrokerError::Protocol(format!("REDIS_URL: {e}"));
        if is_cluster_url(url) {
            return ClusterUrl::parse(url).map(Self::Cluster).map_err(invalid);
        }
        redis::Client::open(url)
            .map(Self::Single)
            .map_err(|e| invalid(e.to_string()))
    }

    fn scheme(&self) -> KeyScheme {
        match self {
            Self::Single(_) => KeyScheme::Single,
            Self::Cluster(_) => KeyScheme::Cluster,
        }
    }
}

/// The Redis backend. Dropping it ends its background tasks.
pub struct RedisBroker {
    keys: Keys,
    commands: Arc<Commands>,
    subscriptions: Arc<Subscriptions>,
    health: Arc<RedisHealth>,
    tasks: Vec<JoinHandle<()>>,
}

/// What both pub/sub tasks are built from.
struct PubSubParts {
    subscriptions: Arc<Subscriptions>,
    commands: Arc<Commands>,
    health: Arc<RedisHealth>,
    control: tokio::sync::mpsc::Receiver<Control>,
}

impl RedisBroker {
    /// Connects lazily and starts the pub/sub and canary tasks; must run inside a Tokio
    /// runtime.
    pub fn start(config: &Config, metrics: Metrics) -> Result<Self, BrokerError> {
        let url = config
            .redis_url
            .as_deref()
            .ok_or_else(|| BrokerError::Protocol("REDIS_URL is not set".into()))?;
        let target = Target::parse(url)?;
        let connection = match &target {
            Target::Single(client) => Connection::single(client.clone(), config.redis_timeout),
            Target::Cluster(url) => Connection::cluster(url, config.redis_timeout),
        }
        .map_err(|e| BrokerError::Protocol(e.to_string()))?;
        let keys = Keys::new(&config.key_prefix, target.scheme());
        let health = Arc::new(match target {
            Target::Single(_) => RedisHealth::single(metrics.redis_reconnects.clone()),
            Target::Cluster(_) => RedisHealth::cluster(
                metrics.redis_reconnects.clone(),
                metrics.redis_shard_ready.clone(),
            ),
        });
        let invalid = Arc::new(InvalidEvents::new(metrics.invalid_events.clone()));
        let settings = CommandSettings {
            keys: keys.clone(),
            window_ms: config.window_ms(),
            max_bytes: config.max_payload_bytes,
            wait: WaitForReplicas {
                replicas: config.redis_wait_replicas,
                timeout_ms: (config.redis_timeout.as_millis() as u64 / 2).max(1),
            },
        };
        let commands = Arc::new(Commands::new(
            settings,
            connection,
            health.clone(),
            invalid.clone(),
        ));
        let instance = ulid::Ulid::generate().to_string();
        let (subscriptions, control) = Subscriptions::new(
            keys.clone(),
            instance.clone(),
            metrics.events_published.redis_external.clone(),
            invalid,
            config.max_payload_bytes,
        );
        let subscriptions = Arc::new(subscriptions);
        let parts = PubSubParts {
            subscriptions: subscriptions.clone(),
            commands: commands.clone(),
            health: health.clone(),
            control,
        };
        let pubsub = match target {
            Target::Single(client) => tokio::spawn(
                PubSubTask::new(
                    parts.subscriptions,
                    parts.commands,
                    parts.health,
                    client,
                    parts.control,
                    config.redis_timeout,
                )
                .run(),
            ),
            Target::Cluster(url) => {
                let links = ShardLinks {
                    subscriptions: parts.subscriptions,
                    commands: parts.commands,
                    health: parts.health,
                    resubscribes: metrics.redis_resubscribes.clone(),
                };
                let task = ShardPubSub::new(
                    links,
                    url,
                    keys.clone(),
                    instance,
                    config.redis_timeout,
                    parts.control,
                );
                tokio::spawn(task.run())
            }
        };
        let canary = run_canary(Arc::downgrade(&commands), Arc::downgrade(&subscriptions));
        Ok(Self {
            keys,
            commands,
            subscriptions,
            health,
            tasks: vec![pubsub, tokio::spawn(canary)],
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

/// Publishes the canaries every [`CANARY_INTERVAL`] (one per shard, all at once), so a
/// silent pub/sub connection is noticed even when no events flow.
async fn run_canary(commands: Weak<Commands>, subscriptions: Weak<Subscriptions>) {
    let mut tick = tokio::time::interval(CANARY_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (Some(commands), Some(subscriptions)) = (commands.upgrade(), subscriptions.upgrade())
        else {
            return;
        };
        let channels = subscriptions.canaries();
        futures_util::future::join_all(channels.iter().map(|c| commands.publish_canary(c))).await;
    }
}

/// Registers the sink, makes sure its channel is subscribed, then reads the stream head:
/// live delivery is trusted from the head on.
async fn subscribe(
    cluster: bool,
    channel: String,
    topic: Topic,
    sink: LiveSink,
    commands: Arc<Commands>,
    subscriptions: Arc<Subscriptions>,
    health: Arc<RedisHealth>,
) -> Result<Option<Cursor>, BrokerError> {
    let first = subscriptions.add_route(&channel, &topic, sink.clone());
    let subscribed = if first {
        subscriptions.subscribe(channel.clone()).await
    } else {
        health.is_pubsub_up()
    };
    if !subscribed {
        // Live delivery may start late: the supervisor fills from the stream, now and (in
        // cluster mode) once the channel is subscribed.
        sink.mark_gap();
        if cluster {
            subscriptions.mark_lost(&channel);
        }
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
        self.subscriptions.note_own(&events);
        let commands = self.commands.clone();
        Box::pin(async move { commands.publish(&topic, &events).await })
    }

    fn subscribe(
        &self,
        topic: Topic,
        sink: LiveSink,
    ) -> BoxFuture<Result<Option<Cursor>, BrokerError>> {
        Box::pin(subscribe(
            self.keys.scheme() == KeyScheme::Cluster,
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
