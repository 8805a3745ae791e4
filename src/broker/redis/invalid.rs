//! Envelopes from Redis that fail validation: dropped, counted, and logged at most once per
//! org per minute (a producer writing garbage must not flood the log).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus::IntCounter;
use tracing::warn;

use crate::envelope::{Topic, WireError};

/// How often one org's invalid envelopes are logged.
const LOG_EVERY: Duration = Duration::from_secs(60);
/// Orgs remembered for rate-limiting the log (oldest forgotten first).
const MAX_REMEMBERED: usize = 4096;

/// The drop counter and the log limiter.
pub struct InvalidEvents {
    counter: IntCounter,
    last_logged: Mutex<HashMap<Topic, Instant>>,
}

impl InvalidEvents {
    /// Counts into `counter` (`invalid_events_total`).
    pub fn new(counter: IntCounter) -> Self {
        Self {
            counter,
            last_logged: Mutex::new(HashMap::new()),
        }
    }

    /// Records one dropped envelope of `topic` read from `source` (`pubsub` or `stream`).
    pub fn dropped(&self, topic: &Topic, source: &str, error: &WireError) {
        self.counter.inc();
        let now = Instant::now();
        let mut last = self.last_logged.lock().unwrap_or_else(|p| p.into_inner());
        if last
            .get(topic)
            .is_some_and(|t| now.duration_since(*t) < LOG_EVERY)
        {
            return;
        }
        if last.len() >= MAX_REMEMBERED {
            last.retain(|_, t| now.duration_since(*t) < LOG_EVERY);
            if last.len() >= MAX_REMEMBERED {
                last.clear();
            }
        }
        last.insert(topic.clone(), now);
        warn!(%topic, source, reason = error.label(), %error,
              "dropping an invalid envelope from redis (logged once per org per minute)");
    }
}
