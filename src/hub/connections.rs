//! Open streams, counted against the instance and per-topic limits: the one writer of the
//! connection gauge and of `connections_opened_total` / `connections_closed_total`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::error::HubError;
use super::outbox::CloseReason;
use crate::envelope::Topic;
use crate::metrics::Metrics;

/// Why a stream was refused before it opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No or bad credential, or one without the right org or scope.
    Auth,
    /// A connection limit was reached.
    Limit,
    /// The hub is shutting down.
    Shutdown,
}

/// Counts open streams, globally and per topic, against the configured limits.
#[derive(Debug)]
pub struct ConnectionCounter {
    total: AtomicUsize,
    per_topic: Mutex<HashMap<Topic, usize>>,
    max_total: usize,
    max_per_topic: usize,
    metrics: Metrics,
}

impl ConnectionCounter {
    /// A counter with the instance limit and the per-topic limit.
    pub fn new(max_total: usize, max_per_topic: usize, metrics: Metrics) -> Self {
        Self {
            total: AtomicUsize::new(0),
            per_topic: Mutex::new(HashMap::new()),
            max_total,
            max_per_topic,
            metrics,
        }
    }

    /// Counts a new stream of `topic`, or refuses it at a limit.
    pub fn acquire(self: &Arc<Self>, topic: &Topic) -> Result<ConnectionPermit, HubError> {
        let mut per_topic = self.per_topic.lock().unwrap_or_else(|p| p.into_inner());
        if self.total.load(Ordering::Relaxed) >= self.max_total {
            drop(per_topic);
            self.refused(Refusal::Limit);
            return Err(HubError::TooManyConnections(self.max_total));
        }
        let count = per_topic.entry(topic.clone()).or_insert(0);
        if *count >= self.max_per_topic {
            drop(per_topic);
            self.refused(Refusal::Limit);
            return Err(HubError::TooManyConnectionsForOrg(self.max_per_topic));
        }
        *count += 1;
        self.total.fetch_add(1, Ordering::Relaxed);
        self.metrics.connections.inc();
        self.metrics.connections_opened.inc();
        Ok(ConnectionPermit {
            counter: self.clone(),
            topic: topic.clone(),
            reason: CloseReason::Client,
        })
    }

    /// Counts a stream refused before it opened.
    pub fn refused(&self, refusal: Refusal) {
        let closed = &self.metrics.connections_closed;
        match refusal {
            Refusal::Auth => closed.auth.inc(),
            Refusal::Limit => closed.limit.inc(),
            Refusal::Shutdown => closed.shutdown.inc(),
        }
    }

    /// Open streams on this instance.
    pub fn open(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }
}

/// One counted open stream; released (and counted as closed for its reason) when dropped.
#[derive(Debug)]
pub struct ConnectionPermit {
    counter: Arc<ConnectionCounter>,
    topic: Topic,
    reason: CloseReason,
}

impl ConnectionPermit {
    /// Sets why the stream ends, counted when the permit is released.
    pub fn set_reason(&mut self, reason: CloseReason) {
        self.reason = reason;
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        let counter = &self.counter;
        {
            let mut per_topic = counter.per_topic.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(count) = per_topic.get_mut(&self.topic) {
                *count -= 1;
                if *count == 0 {
                    per_topic.remove(&self.topic);
                }
            }
        }
        counter.total.fetch_sub(1, Ordering::Relaxed);
        let metrics = &counter.metrics;
        metrics.connections.dec();
        let closed = &metrics.connections_closed;
        match self.reason {
            CloseReason::Client => closed.client.inc(),
            CloseReason::Slow => closed.slow.inc(),
            CloseReason::Shutdown => closed.shutdown.inc(),
            CloseReason::Backend => closed.backend.inc(),
            CloseReason::Expired => closed.expired.inc(),
            CloseReason::Revoked => closed.revoked.inc(),
            CloseReason::Drain => closed.drain.inc(),
            CloseReason::MaxAge => closed.max_age.inc(),
        }
    }
}
