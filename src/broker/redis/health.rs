//! Whether the Redis backend can deliver: the one owner of its health state and of the
//! reconnect counter.

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use prometheus::IntCounter;

use crate::broker::BackendHealth;

/// Silence of the canary after which the pub/sub connection is considered dead.
pub const CANARY_TIMEOUT: Duration = Duration::from_millis(3500);

#[derive(Default)]
struct State {
    pubsub_up: bool,
    commands_error: Option<String>,
    last_canary: Option<Instant>,
}

/// Health of the command connection and the pub/sub connection.
pub struct RedisHealth {
    state: Mutex<State>,
    reconnects: IntCounter,
}

impl RedisHealth {
    /// Down until the pub/sub connection is up; counts re-established connections.
    pub fn new(reconnects: IntCounter) -> Self {
        Self {
            state: Mutex::new(State::default()),
            reconnects,
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

    /// The pub/sub connection is subscribed; `again` when it had been up before.
    pub fn pubsub_up(&self, again: bool) {
        let mut state = self.lock();
        state.pubsub_up = true;
        state.last_canary = Some(Instant::now());
        if again {
            self.reconnects.inc();
        }
    }

    /// The pub/sub connection is down.
    pub fn pubsub_down(&self) {
        self.lock().pubsub_up = false;
    }

    /// True while the pub/sub connection is up.
    pub fn is_pubsub_up(&self) -> bool {
        self.lock().pubsub_up
    }

    /// The canary came back through pub/sub.
    pub fn canary_seen(&self) {
        self.lock().last_canary = Some(Instant::now());
    }

    /// True when the canary has not come back within [`CANARY_TIMEOUT`].
    pub fn canary_silent(&self) -> bool {
        self.lock()
            .last_canary
            .is_none_or(|t| t.elapsed() > CANARY_TIMEOUT)
    }

    /// The backend's health for `/readyz`.
    pub fn status(&self) -> BackendHealth {
        let state = self.lock();
        if !state.pubsub_up {
            return BackendHealth::Unavailable("redis pub/sub connection is down".into());
        }
        if let Some(error) = &state.commands_error {
            return BackendHealth::Unavailable(format!("redis commands failing: {error}"));
        }
        match state.last_canary {
            Some(t) if t.elapsed() <= CANARY_TIMEOUT => BackendHealth::Ready,
            _ => {
                BackendHealth::Unavailable("redis canary has not come back through pub/sub".into())
            }
        }
    }
}
