//! Cluster mode's pub/sub: one RESP3 connection per shard master carrying that shard's
//! `SSUBSCRIBE`s (one channel per command), the slot map polled every second and re-read
//! whenever a subscription is lost, and each channel moved to its slot's owner after a
//! failover or a slot migration, its supervisors then filling the gap from the stream.
//!
//! Why not the `redis` crate's own cluster pub/sub: in 1.8.1 its resubscription did not
//! survive a failover, a slot migration or a killed connection (it resubscribes several
//! channels in one command, which the server refuses across slots, and it forgets the
//! channels the server unsubscribes when their slot moves).
//!
//! Bounds: at most one connection per master, so an instance holds at most as many pub/sub
//! connections as the cluster has masters, whatever the number of orgs. Messages are routed
//! to the supervisors' bounded sinks inside each connection's push callback, so no queue
//! holds them; the callback forwards to this task only subscription changes and
//! disconnections: one per `SSUBSCRIBE`/`SUNSUBSCRIBE` sent plus one per connection.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use prometheus::IntCounterVec;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Msg, PushInfo, PushKind, Value};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use super::commands::Commands;
use super::health::RedisHealth;
use super::keys::Keys;
use super::pubsub::{Control, Routed, Subscriptions};
use super::topology::{ClusterUrl, SlotMap, channel_on};

/// How often the slot map is read, and canaries checked, without any other reason to.
const TOPOLOGY_POLL: Duration = Duration::from_secs(1);
/// Pause before placing again what could not be placed.
const RETRY_PAUSE: Duration = Duration::from_millis(200);
/// `SSUBSCRIBE`s in flight at once on one connection.
const SUBSCRIBES_IN_FLIGHT: usize = 64;

/// A subscription change or a disconnection, from the connection to `node` number
/// `generation`.
struct NodePush {
    node: String,
    generation: u64,
    push: PushInfo,
}

/// The pub/sub connection to one master.
struct Link {
    connection: MultiplexedConnection,
    generation: u64,
}

/// Who the shard task works with.
pub struct ShardLinks {
    /// The routing table.
    pub subscriptions: Arc<Subscriptions>,
    /// The command side, for the slot map.
    pub commands: Arc<Commands>,
    /// Per-shard health.
    pub health: Arc<RedisHealth>,
    /// `redis_resubscribes_total{shard}`.
    pub resubscribes: IntCounterVec,
}

/// The task keeping every routed channel subscribed on its slot's master.
pub struct ShardPubSub {
    links: ShardLinks,
    url: ClusterUrl,
    keys: Keys,
    instance: String,
    timeout: Duration,
    control: mpsc::Receiver<Control>,
    pushes_tx: mpsc::UnboundedSender<NodePush>,
    pushes: mpsc::UnboundedReceiver<NodePush>,
    map: SlotMap,
    /// The slot map must be read again before placing anything.
    stale: bool,
    nodes: HashMap<String, Link>,
    next_generation: u64,
    /// Masters that had a connection before (a new one counts as a reconnect).
    connected_before: HashSet<String>,
    /// Where each subscribed channel is subscribed.
    placed: HashMap<String, String>,
    /// Channels whose subscription was lost or moved, not yet subscribed again.
    displaced: HashSet<String>,
    /// Each master's canary channel.
    canaries: BTreeMap<String, String>,
    /// Subscribe requests waiting for their channel to be placed.
    waiting: HashMap<String, Vec<oneshot::Sender<()>>>,
}

/// What one round of placing found.
enum Placement {
    /// Subscribed, as confirmed by the server.
    Done(String),
    /// The node answered something else than this channel's confirmation: replies may be
    /// paired with the wrong commands from here on, so the connection must go.
    Confused(String),
    /// Failed (moved, refused, timed out): retried after the slot map is read again.
    Failed(String, redis::RedisError),
}

impl ShardPubSub {
    /// A task for the cluster of `url`, taking requests from `control`.
    pub fn new(
        links: ShardLinks,
        url: ClusterUrl,
        keys: Keys,
        instance: String,
        timeout: Duration,
        control: mpsc::Receiver<Control>,
    ) -> Self {
        let (pushes_tx, pushes) = mpsc::unbounded_channel();
        Self {
            links,
            url,
            keys,
            instance,
            timeout,
            control,
            pushes_tx,
            pushes,
            map: SlotMap::default(),
            stale: true,
            nodes: HashMap::new(),
            next_generation: 0,
            connected_before: HashSet::new(),
            placed: HashMap::new(),
            displaced: HashSet::new(),
            canaries: BTreeMap::new(),
            waiting: HashMap::new(),
        }
    }

    /// Serves requests, pushes and the topology poll until the broker is gone.
    pub async fn run(mut self) {
        let mut tick = tokio::time::interval(TOPOLOGY_POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut unsettled = true;
        while !self.links.subscriptions.is_closed() {
            let retry = tokio::time::sleep(RETRY_PAUSE);
            tokio::select! {
                command = self.control.recv() => match command {
                    Some(command) => {
                        self.on_control(command);
                        while let Ok(command) = self.control.try_recv() {
                            self.on_control(command);
                        }
                    }
                    None => return,
                },
                Some(push) = self.pushes.recv() => {
                    self.on_push(push);
                    while let Ok(push) = self.pushes.try_recv() {
                        self.on_push(push);
                    }
                }
                _ = tick.tick() => {
                    self.stale = true;
                    self.drop_silent_shards();
                    self.links.health.export_shards(&[]);
                }
                _ = retry, if unsettled => self.stale = true,
            }
            unsettled = !self.reconcile().await;
        }
    }

    fn on_control(&mut self, command: Control) {
        match command {
            Control::Subscribe(channel, done) => {
                if self.placed.contains_key(&channel) {
                    let _ = done.send(());
                } else {
                    let waiting = self.waiting.entry(channel).or_default();
                    waiting.retain(|w| !w.is_closed());
                    waiting.push(done);
                }
            }
            Control::Unsubscribe(channel) => {
                if !self.links.subscriptions.is_routed(&channel) {
                    self.unsubscribe(&channel);
                }
            }
        }
    }

    /// Drops `channel`'s subscription, in the background (a frozen node must not hold up
    /// the task; a dead one has no subscription left anyway).
    fn unsubscribe(&mut self, channel: &str) {
        let Some(node) = self.placed.remove(channel) else {
            return;
        };
        let Some(link) = self.nodes.get(&node) else {
            return;
        };
        let mut connection = link.connection.clone();
        let mut command = redis::cmd("SUNSUBSCRIBE");
        command.arg(channel);
        let timeout = self.timeout;
        tokio::spawn(async move {
            let _ =
                tokio::time::timeout(timeout, command.query_async::<Value>(&mut connection)).await;
        });
    }

    fn on_push(
        &mut self,
        NodePush {
            node,
            generation,
            push,
        }: NodePush,
    ) {
        let current = self
            .nodes
            .get(&node)
            .is_some_and(|link| link.generation == generation);
        if !current {
            return;
        }
        match push.kind {
            PushKind::Disconnection => {
                warn!(shard = %node, "redis shard pub/sub connection lost; subscribing again");
                self.drop_node(&node);
            }
            PushKind::SUnsubscribe => {
                // We forget a channel before unsubscribing it, so one still placed here was
                // unsubscribed by the server: its slot moved.
                let channel = push
                    .data
                    .first()
                    .and_then(|v| redis::from_redis_value_ref::<String>(v).ok());
                if let Some(channel) = channel
                    && self.placed.get(&channel) == Some(&node)
                {
                    debug!(shard = %node, %channel, "the server unsubscribed a channel (slot moved)");
                    self.displace(&channel);
                    self.stale = true;
                }
            }
            _ => {}
        }
    }

    /// Forgets `node`'s connection: its channels are lost until placed again.
    fn drop_node(&mut self, node: &str) {
        self.nodes.remove(node);
        self.links.health.shard_down(node);
        let lost: Vec<String> = self
            .placed
            .iter()
            .filter(|(_, n)| n.as_str() == node)
            .map(|(c, _)| c.clone())
            .collect();
        for channel in lost {
            self.displace(&channel);
        }
        self.stale = true;
    }

    /// `channel` is no longer subscribed where it was: its supervisors fill the gap once it
    /// is subscribed again.
    fn displace(&mut self, channel: &str) {
        self.placed.remove(channel);
        self.links.subscriptions.mark_lost(channel);
        self.displaced.insert(channel.to_owned());
    }

    /// Shards whose canary stopped coming back have a connection that is open but not
    /// delivering: it is replaced.
    fn drop_silent_shards(&mut self) {
        for node in self.links.health.silent_shards() {
            warn!(shard = %node, "redis shard canary not received; subscribing again");
            self.drop_node(&node);
        }
    }

    /// With a stale slot map: reads it, then checks every wanted channel is subscribed on
    /// its slot's master. Otherwise only subscribes the channels requests wait for. True
    /// when everything looked at is placed.
    async fn reconcile(&mut self) -> bool {
        let candidates = if self.stale {
            match self.links.commands.connection().slot_map().await {
                Ok(map) => self.apply_topology(map),
                Err(error) => {
                    debug!(%error, "reading the cluster's slot map failed");
                    self.links.health.note_command(&Err::<(), _>(error));
                    return false;
                }
            }
            self.wanted()
        } else {
            self.waiting.keys().cloned().collect()
        };
        let mut by_owner: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut unowned = false;
        for channel in candidates {
            let Some(owner) = self.map.owner_of(&channel).map(str::to_owned) else {
                unowned = true;
                continue;
            };
            match self.placed.get(&channel) {
                Some(node) if *node == owner => continue,
                Some(_) => {
                    self.unsubscribe(&channel);
                    self.displace(&channel);
                }
                None => {}
            }
            by_owner.entry(owner).or_default().push(channel);
        }
        let mut all_placed = !unowned;
        for (owner, channels) in by_owner {
            all_placed &= self.place_on(&owner, channels).await;
        }
        self.forget_unused_nodes();
        all_placed
    }

    /// The routed channels and the canaries, and nothing placed beyond them.
    fn wanted(&mut self) -> Vec<String> {
        let mut wanted = self.links.subscriptions.routed_channels();
        wanted.extend(self.canaries.values().cloned());
        let keep: HashSet<&String> = wanted.iter().collect();
        let stray: Vec<String> = self
            .placed
            .keys()
            .filter(|c| !keep.contains(c))
            .cloned()
            .collect();
        for channel in stray {
            self.unsubscribe(&channel);
        }
        self.displaced.retain(|c| keep.contains(c));
        wanted
    }

    /// Takes a freshly read slot map: shards, the cluster's coverage, the canaries.
    fn apply_topology(&mut self, map: SlotMap) {
        self.stale = false;
        let uncovered = map.uncovered();
        self.links.health.set_cluster_error(
            (uncovered > 0)
                .then(|| format!("redis cluster: {uncovered} of 16384 slots have no master")),
        );
        let masters = map.masters();
        let gone: Vec<String> = self.map.masters().difference(&masters).cloned().collect();
        self.links.health.set_shards(&masters);
        self.links.health.export_shards(&gone);
        if masters != self.map.masters() {
            info!(shards = ?masters, "redis cluster masters");
        }
        self.canaries.retain(|master, channel| {
            masters.contains(master) && map.owner_of(channel) == Some(master.as_str())
        });
        for master in &masters {
            if !self.canaries.contains_key(master) {
                let keys = &self.keys;
                let instance = &self.instance;
                if let Some(channel) = channel_on(&map, master, |n| keys.shard_canary(instance, n))
                {
                    self.canaries.insert(master.clone(), channel);
                }
            }
        }
        self.links
            .subscriptions
            .set_canaries(self.canaries.values().cloned().collect());
        self.map = map;
    }

    /// Closes connections to nodes that are no longer masters and carry nothing.
    fn forget_unused_nodes(&mut self) {
        let masters = self.map.masters();
        let used: HashSet<&String> = self.placed.values().collect();
        let unused: Vec<String> = self
            .nodes
            .keys()
            .filter(|n| !masters.contains(*n) && !used.contains(n))
            .cloned()
            .collect();
        for node in unused {
            self.nodes.remove(&node);
        }
    }

    /// Subscribes `channels` on `owner`; true when all of them are.
    async fn place_on(&mut self, owner: &str, channels: Vec<String>) -> bool {
        let Some(connection) = self.connect(owner).await else {
            self.stale = true;
            return false;
        };
        let timeout = self.timeout;
        let results: Vec<Placement> = futures_util::stream::iter(channels)
            .map(|channel| subscribe_one(connection.clone(), channel, timeout))
            .buffer_unordered(SUBSCRIBES_IN_FLIGHT)
            .collect()
            .await;
        let mut all_placed = true;
        let mut confused = false;
        for result in results {
            match result {
                Placement::Done(channel) => self.placed_on(owner, channel),
                Placement::Confused(channel) => {
                    warn!(shard = %owner, %channel, "unexpected reply to SSUBSCRIBE; reconnecting");
                    confused = true;
                }
                Placement::Failed(channel, error) => {
                    debug!(shard = %owner, %channel, %error, "SSUBSCRIBE failed");
                    if error.is_io_error() || error.is_timeout() || error.is_connection_dropped() {
                        confused = true;
                    }
                    all_placed = false;
                    self.stale = true;
                }
            }
        }
        if confused {
            self.drop_node(owner);
            return false;
        }
        if self
            .canaries
            .get(owner)
            .is_some_and(|c| self.placed.contains_key(c))
        {
            let again = !self.connected_before.insert(owner.to_owned());
            if !self.links.health.is_shard_up(owner) {
                info!(shard = %owner, "redis shard pub/sub subscribed");
                self.links.health.shard_up(owner, again);
            }
        }
        all_placed
    }

    /// `channel` is subscribed on `owner`: waiting subscribers are answered, and a channel
    /// that had been lost has its gap filled.
    fn placed_on(&mut self, owner: &str, channel: String) {
        for done in self.waiting.remove(&channel).unwrap_or_default() {
            let _ = done.send(());
        }
        self.links.subscriptions.resubscribed(&channel);
        if self.displaced.remove(&channel) {
            self.links.resubscribes.with_label_values(&[owner]).inc();
        }
        self.placed.insert(channel, owner.to_owned());
    }

    /// The connection to `node`, opened if needed.
    async fn connect(&mut self, node: &str) -> Option<MultiplexedConnection> {
        if let Some(link) = self.nodes.get(node) {
            return Some(link.connection.clone());
        }
        self.next_generation += 1;
        let generation = self.next_generation;
        let config = self.push_config(node, generation);
        let opened = match redis::Client::open(self.url.node(node)) {
            Ok(client) => {
                client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
            }
            Err(error) => Err(error),
        };
        match opened {
            Ok(connection) => {
                self.nodes.insert(
                    node.to_owned(),
                    Link {
                        connection: connection.clone(),
                        generation,
                    },
                );
                Some(connection)
            }
            Err(error) => {
                debug!(shard = %node, %error, "redis shard pub/sub connect failed");
                self.links.health.shard_down(node);
                None
            }
        }
    }

    /// The connection settings of `node`'s link: messages go straight to their routes (and
    /// canaries to the shard's health); everything else comes to this task.
    fn push_config(&self, node: &str, generation: u64) -> AsyncConnectionConfig {
        let subscriptions = self.links.subscriptions.clone();
        let health = self.links.health.clone();
        let pushes = self.pushes_tx.clone();
        let node = node.to_owned();
        AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            .set_push_sender(move |push: PushInfo| {
                if push.kind == PushKind::SMessage {
                    if let Some(message) = Msg::from_push_info(push) {
                        let routed = subscriptions
                            .route_message(message.get_channel_name(), message.get_payload_bytes());
                        if routed == Routed::Canary {
                            health.canary_seen_on(&node);
                        }
                    }
                    return Ok(());
                }
                pushes.send(NodePush {
                    node: node.clone(),
                    generation,
                    push,
                })
            })
    }
}

/// One `SSUBSCRIBE` of one channel, which the server confirms with exactly one reply.
async fn subscribe_one(
    mut connection: MultiplexedConnection,
    channel: String,
    timeout: Duration,
) -> Placement {
    let mut command = redis::cmd("SSUBSCRIBE");
    command.arg(&channel);
    let reply = tokio::time::timeout(timeout, command.query_async::<Value>(&mut connection)).await;
    match reply {
        Ok(Ok(Value::Push {
            kind: PushKind::SSubscribe,
            data,
        })) => {
            let confirmed = data
                .first()
                .and_then(|v| redis::from_redis_value_ref::<String>(v).ok());
            if confirmed.as_deref() == Some(channel.as_str()) {
                Placement::Done(channel)
            } else {
                Placement::Confused(channel)
            }
        }
        Ok(Ok(_)) => Placement::Confused(channel),
        Ok(Err(error)) => Placement::Failed(channel, error),
        Err(_) => Placement::Failed(
            channel,
            redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut)),
        ),
    }
}
