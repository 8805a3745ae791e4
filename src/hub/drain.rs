//! The paced drain of a stopping instance.
//!
//! On SIGTERM the instance first only says it is going (`/readyz` answers 503) and keeps
//! serving, new streams included, for the drain delay, so a load balancer notices before
//! anything is closed. Then it stops accepting and ends its open streams one by one, evenly
//! over the grace time, each with a final `retry:` frame carrying a jittered delay: the
//! clients come back (by `Last-Event-ID`, on another instance) spread over the grace time
//! instead of in one burst.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use tokio::time::{Instant, sleep, sleep_until};
use tracing::info;

use super::jitter;
use super::messages::EndStream;
use super::outbox::CloseReason;
use crate::sse;

/// Where an instance is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Lifecycle {
    /// Serving normally.
    Serving,
    /// Signalled: `/readyz` answers 503, everything else is served as before.
    Draining,
    /// Not accepting any more: open streams are being closed over the grace time.
    Closing,
}

impl Lifecycle {
    /// Name on the status page.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Serving => "serving",
            Self::Draining => "draining",
            Self::Closing => "closing",
        }
    }

    fn from_u8(raw: u8) -> Self {
        match raw {
            0 => Self::Serving,
            1 => Self::Draining,
            _ => Self::Closing,
        }
    }
}

/// The instance's lifecycle phase: read by anyone, moved forward only by [`run`].
#[derive(Debug, Clone, Default)]
pub struct LifecycleState(Arc<AtomicU8>);

impl LifecycleState {
    /// The current phase.
    pub fn get(&self) -> Lifecycle {
        Lifecycle::from_u8(self.0.load(Ordering::SeqCst))
    }

    fn advance(&self, to: Lifecycle) {
        self.0.fetch_max(to as u8, Ordering::SeqCst);
    }
}

/// The session of every open stream, so a drain can end each one at its own moment.
#[derive(Debug, Default)]
pub struct OpenStreams {
    streams: Mutex<HashMap<u64, Recipient<EndStream>>>,
}

impl OpenStreams {
    /// Registers a stream's session until the returned guard is dropped (with its body).
    pub fn track(self: &Arc<Self>, id: u64, session: Recipient<EndStream>) -> TrackedStream {
        self.lock().insert(id, session);
        TrackedStream {
            streams: self.clone(),
            id,
        }
    }

    /// Streams open now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when no stream is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Recipient<EndStream>>> {
        self.streams.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The sessions open now, oldest first.
    fn snapshot(&self) -> Vec<Recipient<EndStream>> {
        let mut open: Vec<(u64, Recipient<EndStream>)> = self
            .lock()
            .iter()
            .map(|(id, session)| (*id, session.clone()))
            .collect();
        open.sort_unstable_by_key(|(id, _)| *id);
        open.into_iter().map(|(_, session)| session).collect()
    }
}

/// One open stream's place in [`OpenStreams`]; dropping it forgets the stream.
#[derive(Debug)]
pub struct TrackedStream {
    streams: Arc<OpenStreams>,
    id: u64,
}

impl Drop for TrackedStream {
    fn drop(&mut self) {
        self.streams.lock().remove(&self.id);
    }
}

/// The timings of a drain, from the settings.
#[derive(Debug, Clone, Copy)]
pub struct DrainPlan {
    /// From the signal to the first close (`REALTIME_DRAIN_DELAY_SECONDS`).
    pub delay: Duration,
    /// Over which the closes are spread (`REALTIME_SHUTDOWN_GRACE_SECONDS`).
    pub grace: Duration,
    /// The configured `retry:` hint, around which each final one is jittered.
    pub retry_ms: u64,
}

/// When the `index`-th of `count` streams is closed, from the start of the closing phase:
/// evenly over `grace`, the first at once.
pub fn slot(index: usize, count: usize, grace: Duration) -> Duration {
    if count == 0 {
        return Duration::ZERO;
    }
    grace.mul_f64(index as f64 / count as f64)
}

/// Runs a drain: the delay (draining), then `stop_accepting` and the paced closes (closing).
/// Returns once every stream open at the start of the closing phase was told to end; a
/// session still replaying ends when its replay is written.
pub async fn run(
    state: &LifecycleState,
    streams: &OpenStreams,
    plan: DrainPlan,
    stop_accepting: impl FnOnce(),
) {
    state.advance(Lifecycle::Draining);
    info!(
        open = streams.len(),
        delay_s = plan.delay.as_secs(),
        "draining: /readyz answers 503; streams are still served"
    );
    sleep(plan.delay).await;
    state.advance(Lifecycle::Closing);
    stop_accepting();
    let sessions = streams.snapshot();
    let count = sessions.len();
    info!(
        streams = count,
        grace_s = plan.grace.as_secs(),
        "closing: no longer accepting; ending the open streams evenly over the grace time"
    );
    let start = Instant::now();
    for (index, session) in sessions.into_iter().enumerate() {
        sleep_until(start + slot(index, count, plan.grace)).await;
        // Past any mailbox bound: a session ended meanwhile simply never gets it.
        session.do_send(EndStream {
            reason: CloseReason::Drain,
            final_frame: sse::retry(jitter::retry_ms(plan.retry_ms)),
        });
    }
    info!(
        streams = count,
        took_ms = start.elapsed().as_millis() as u64,
        "every stream was told to end"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_even_over_the_grace_time() {
        let grace = Duration::from_secs(10);
        assert_eq!(slot(0, 4, grace), Duration::ZERO);
        assert_eq!(slot(1, 4, grace), Duration::from_millis(2500));
        assert_eq!(slot(3, 4, grace), Duration::from_millis(7500));
        assert_eq!(slot(0, 0, grace), Duration::ZERO);
        let last = slot(9_999, 10_000, grace);
        assert!(
            last < grace && last > Duration::from_millis(9_998),
            "{last:?}"
        );
    }

    #[test]
    fn the_lifecycle_only_moves_forward() {
        let state = LifecycleState::default();
        assert_eq!(state.get(), Lifecycle::Serving);
        state.advance(Lifecycle::Closing);
        state.advance(Lifecycle::Draining);
        assert_eq!(state.get(), Lifecycle::Closing);
    }
}
