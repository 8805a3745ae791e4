//! Whether the Redis backend can deliver: the one owner of its health state and of the
//! reconnect counter.
//!
//! Pub/sub health is kept per shard: a single server is one shard without a name; in
//! cluster mode each master (by `host:port`) is one, with its own connection and canary, and
//! `/readyz` names the shard that fails.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use prometheus::{IntCounter, IntGaugeVec};

use crate::broker::BackendHealth;

/// Silence of the canary after which a pub/sub connection is considered dead.
pub const CANARY_TIMEOUT: Duration = Duration::from_millis(3500);

/// The single server's shard name.
const SINGLE: &str = "";

#[derive(Default)]
struct ShardState {
    pubsub_up: bool,
    last_canary: Option<Instant>,
}

impl ShardState {
    fn canary_fresh(&self) -> bool {
        self.last_canary
            .is_some_and(|t| t.elapsed() <= CANARY_TIMEOUT)
    }

    fn ready(&self) -> bool {
        self.pubsub_up && self.canary_fresh()
    }
}

#[derive(Default)]
struct State {
    shards: BTreeMap<String, ShardState>,
    commands_error: Option<String>,
    /// A problem of the cluster as a whole (topology unreadable, slots without a master).
    cluster_error: Option<String>,
}

/// Health of the command connection and of each shard's pub/sub connection.
pub struct RedisHealth {
    state: Mutex<State>,
    reconnects: IntCounter,
    shard_ready: Option<IntGaugeVec>,
}

/// How `/readyz` names a shard in its reasons.
fn subject(shard: &str) -> String {
    if shard == SINGLE {
        "redis".to_owned()
    } else {
        format!("redis shard {shard}:")
    }
}

impl RedisHealth {
    /// A single server: down until its pub/sub connection is up; counts re-established
    /// connections.
    pub fn single(reconnects: IntCounter) -> Self {
        let mut state = State::default();
        state
            .shards
            .insert(SINGLE.to_owned(), ShardState::default());
        Self {
            state: Mutex::new(state),
            reconnects,
            shard_ready: None,
        }
    }

    /// A cluster: down until its topology is read and every shard is up; exports each
    /// shard's readiness into `shard_ready`.
    pub fn cluster(reconnects: IntCounter, shard_ready: IntGaugeVec) -> Self {
        let state = State {
            cluster_error: Some("redis cluster: topology not read yet".to_owned()),
            ..State::default()
        };
        Self {
            state: Mutex::new(state),
            reconnects,
            shard_ready: Some(shard_ready),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records the outcome of a command: connection failures mark the backend down until a
    /// command works again (which counts as a reconnect).
    pub fn note_command<T>(&self, result: &redis::RedisResult<T>) {
        let mut state = self.lock();
        match result {
            Ok(_) => {
                if state.commands_error.take().is_some() {
                    self.reconnects.inc();
                }
            }
            Err(e)
                if e.is_io_error()
                    || e.is_timeout()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal() =>
            {
                state.commands_error = Some(e.to_string());
            }
            Err(_) => {}
        }
    }

    /// The single server's pub/sub connection is subscribed; `again` when it had been up
    /// before.
    pub fn pubsub_up(&self, again: bool) {
        self.shard_up(SINGLE, again);
    }

    /// The single server's pub/sub connection is down.
    pub fn pubsub_down(&self) {
        self.shard_down(SINGLE);
    }

    /// True while the single server's pub/sub connection is up.
    pub fn is_pubsub_up(&self) -> bool {
        self.lock().shards.get(SINGLE).is_some_and(|s| s.pubsub_up)
    }

    /// The single server's canary came back through pub/sub.
    pub fn canary_seen(&self) {
        self.canary_seen_on(SINGLE);
    }

    /// True when the single server's canary has not come back within [`CANARY_TIMEOUT`].
    pub fn canary_silent(&self) -> bool {
        !self.silent_shards().is_empty()
    }

    /// The shards are now these masters: new ones start down, gone ones are forgotten.
    pub fn set_shards(&self, masters: &BTreeSet<String>) {
        let mut state = self.lock();
        state.shards.retain(|name, _| masters.contains(name));
        for master in masters {
            state.shards.entry(master.clone()).or_default();
        }
    }

    /// The cluster as a whole cannot serve (`Some(reason)`) or can again (`None`).
    pub fn set_cluster_error(&self, error: Option<String>) {
        self.lock().cluster_error = error;
    }

    /// A shard's pub/sub connection is up; `again` when it had been up before.
    pub fn shard_up(&self, shard: &str, again: bool) {
        let mut state = self.lock();
        if let Some(s) = state.shards.get_mut(shard) {
            s.pubsub_up = true;
            s.last_canary = Some(Instant::now());
            if again {
                self.reconnects.inc();
            }
        }
    }

    /// A shard's pub/sub connection is down.
    pub fn shard_down(&self, shard: &str) {
        if let Some(s) = self.lock().shards.get_mut(shard) {
            s.pubsub_up = false;
        }
    }

    /// True while a shard's pub/sub connection is up.
    pub fn is_shard_up(&self, shard: &str) -> bool {
        self.lock().shards.get(shard).is_some_and(|s| s.pubsub_up)
    }

    /// A shard's canary came back through its pub/sub connection.
    pub fn canary_seen_on(&self, shard: &str) {
        if let Some(s) = self.lock().shards.get_mut(shard) {
            s.last_canary = Some(Instant::now());
        }
    }

    /// Shards whose connection is up but whose canary has not come back within
    /// [`CANARY_TIMEOUT`]: their connection is silently broken.
    pub fn silent_shards(&self) -> Vec<String> {
        self.lock()
            .shards
            .iter()
            .filter(|(_, s)| s.pubsub_up && !s.canary_fresh())
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Sets the `shard_ready` gauge of every shard, and removes it for masters that are
    /// no longer shards.
    pub fn export_shards(&self, gone: &[String]) {
        let Some(gauge) = &self.shard_ready else {
            return;
        };
        for name in gone {
            let _ = gauge.remove_label_values(&[name]);
        }
        for (name, shard) in &self.lock().shards {
            gauge
                .with_label_values(&[name])
                .set(i64::from(shard.ready()));
        }
    }

    /// The backend's health for `/readyz`: the first problem found, naming its shard.
    pub fn status(&self) -> BackendHealth {
        let state = self.lock();
        if let Some(error) = &state.cluster_error {
            return BackendHealth::Unavailable(error.clone());
        }
        if let Some((name, _)) = state.shards.iter().find(|(_, s)| !s.pubsub_up) {
            return BackendHealth::Unavailable(format!(
                "{} pub/sub connection is down",
                subject(name)
            ));
        }
        if let Some(error) = &state.commands_error {
            return BackendHealth::Unavailable(format!("redis commands failing: {error}"));
        }
        match state.shards.iter().find(|(_, s)| !s.canary_fresh()) {
            Some((name, _)) => BackendHealth::Unavailable(format!(
                "{} canary has not come back through pub/sub",
                subject(name)
            )),
            None => BackendHealth::Ready,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counter() -> IntCounter {
        IntCounter::new("c", "c").unwrap()
    }

    fn gauge() -> IntGaugeVec {
        IntGaugeVec::new(prometheus::Opts::new("g", "g"), &["shard"]).unwrap()
    }

    #[test]
    fn single_server_reasons_are_unchanged() {
        let health = RedisHealth::single(counter());
        let down = BackendHealth::Unavailable("redis pub/sub connection is down".into());
        assert_eq!(health.status(), down);
        health.pubsub_up(false);
        assert_eq!(health.status(), BackendHealth::Ready);
        assert!(health.is_pubsub_up() && !health.canary_silent());
        health.pubsub_down();
        assert_eq!(health.status(), down);
    }

    #[test]
    fn cluster_names_the_failing_shard() {
        let ready = gauge();
        let health = RedisHealth::cluster(counter(), ready.clone());
        assert!(matches!(health.status(), BackendHealth::Unavailable(r) if r.contains("topology")));
        let masters: BTreeSet<String> = ["h:1".to_owned(), "h:2".to_owned()].into();
        health.set_shards(&masters);
        health.set_cluster_error(None);
        health.shard_up("h:1", false);
        assert_eq!(
            health.status(),
            BackendHealth::Unavailable("redis shard h:2: pub/sub connection is down".into())
        );
        health.shard_up("h:2", false);
        assert_eq!(health.status(), BackendHealth::Ready);
        health.export_shards(&[]);
        assert_eq!(ready.with_label_values(&["h:2"]).get(), 1);
        // A failover: h:2 is gone, h:3 took its slots and is not subscribed yet.
        health.set_shards(&["h:1".to_owned(), "h:3".to_owned()].into());
        health.export_shards(&["h:2".to_owned()]);
        assert!(matches!(health.status(), BackendHealth::Unavailable(r) if r.contains("h:3")));
        assert_eq!(ready.with_label_values(&["h:3"]).get(), 0);
        health.shard_up("h:2", true);
        assert!(
            !health.is_shard_up("h:2"),
            "a forgotten shard stays forgotten"
        );
    }
}
