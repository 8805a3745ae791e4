//! A session's bounded outbound queue, shared by its writers and its HTTP body.
//!
//! Frames are pre-encoded `Bytes` shared with every other session of the org; the queue
//! only holds references. The body drains everything queued in one poll and hands it to
//! the socket as one chunk, so a burst costs one write, not one per frame.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::sync::Notify;

/// Why a stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client went away.
    Client,
    /// The client did not read fast enough.
    Slow,
    /// The hub is shutting down.
    Shutdown,
    /// The backend failed during replay; the client retries.
    Backend,
    /// The credential that opened the stream expired; the client retries with its current one.
    Expired,
    /// The key that opened the stream was revoked.
    Revoked,
}

impl CloseReason {
    /// Label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Client => "client",
            Self::Slow => "slow",
            Self::Shutdown => "shutdown",
            Self::Backend => "backend",
            Self::Expired => "expired",
            Self::Revoked => "revoked",
        }
    }
}

/// Result of offering a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushResult {
    /// Queued.
    Queued,
    /// The queue bound was exceeded: the session is now closed as slow.
    Overflow,
    /// The session was already closed.
    Closed,
}

struct State {
    frames: VecDeque<Bytes>,
    queued_bytes: usize,
    last_push: Instant,
    waker: Option<Waker>,
    closed: Option<CloseReason>,
    final_frame: Option<Bytes>,
}

/// The outbound queue of one SSE connection.
pub struct Outbox {
    state: Mutex<State>,
    limit: usize,
    drained: Notify,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("limit", &self.limit)
            .finish()
    }
}

impl Outbox {
    /// An empty queue bounded to `limit` unsent bytes.
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                frames: VecDeque::new(),
                queued_bytes: 0,
                last_push: Instant::now(),
                waker: None,
                closed: None,
                final_frame: None,
            }),
            limit,
            drained: Notify::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a frame unless that would exceed the bound; on overflow the queue is
    /// dropped and the stream ends with `final_frame`, so the client resumes by id.
    pub fn push(&self, frame: Bytes, final_frame: impl FnOnce() -> Bytes) -> PushResult {
        let mut state = self.lock();
        if state.closed.is_some() {
            return PushResult::Closed;
        }
        if state.queued_bytes + frame.len() > self.limit {
            state.frames.clear();
            state.queued_bytes = 0;
            state.closed = Some(CloseReason::Slow);
            state.final_frame = Some(final_frame());
            wake(&mut state);
            return PushResult::Overflow;
        }
        enqueue(&mut state, frame);
        PushResult::Queued
    }

    /// Queues a frame without the bound; replay writers wait for [`Self::wait_below`] first.
    pub fn push_unbounded(&self, frame: Bytes) -> PushResult {
        let mut state = self.lock();
        if state.closed.is_some() {
            return PushResult::Closed;
        }
        enqueue(&mut state, frame);
        PushResult::Queued
    }

    /// Ends the stream after the frames already queued (and `final_frame`, if any).
    pub fn close(&self, reason: CloseReason, final_frame: Option<Bytes>) {
        let mut state = self.lock();
        if state.closed.is_none() {
            state.closed = Some(reason);
            state.final_frame = final_frame;
            wake(&mut state);
        }
    }

    /// Why the stream ended, if it did.
    pub fn closed(&self) -> Option<CloseReason> {
        self.lock().closed
    }

    /// Time since the last frame was queued.
    pub fn idle_for(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.lock().last_push)
    }

    /// Unsent bytes.
    pub fn queued_bytes(&self) -> usize {
        self.lock().queued_bytes
    }

    /// Waits until fewer than `threshold` bytes are queued or the stream is closed.
    pub async fn wait_below(&self, threshold: usize) {
        loop {
            let notified = self.drained.notified();
            {
                let state = self.lock();
                if state.queued_bytes < threshold || state.closed.is_some() {
                    return;
                }
            }
            notified.await;
        }
    }

    /// Takes everything queued as one chunk; `Ready(None)` once the stream has ended.
    pub fn poll_take(&self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        let mut state = self.lock();
        let chunk = match state.frames.len() {
            0 => None,
            1 => state.frames.pop_front(),
            _ => {
                let mut chunk = BytesMut::with_capacity(state.queued_bytes);
                for frame in state.frames.drain(..) {
                    chunk.extend_from_slice(&frame);
                }
                Some(chunk.freeze())
            }
        };
        if let Some(chunk) = chunk {
            state.queued_bytes = 0;
            drop(state);
            self.drained.notify_waiters();
            return Poll::Ready(Some(chunk));
        }
        if state.closed.is_some() {
            let last = state.final_frame.take();
            drop(state);
            self.drained.notify_waiters();
            return Poll::Ready(last);
        }
        if !state
            .waker
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            state.waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }

    /// Marks the stream closed because its body is gone; returns why it ended (`Client`
    /// unless it had been closed for another reason before).
    pub fn body_dropped(&self) -> CloseReason {
        let reason = {
            let mut state = self.lock();
            *state.closed.get_or_insert(CloseReason::Client)
        };
        self.drained.notify_waiters();
        reason
    }
}

fn enqueue(state: &mut State, frame: Bytes) {
    state.queued_bytes += frame.len();
    state.frames.push_back(frame);
    state.last_push = Instant::now();
    wake(state);
}

fn wake(state: &mut State) {
    if let Some(waker) = state.waker.take() {
        waker.wake();
    }
}

/// A future-free view used by tests and benches to drain an outbox synchronously.
pub fn drain_now(outbox: &Outbox) -> Option<Bytes> {
    let waker = Waker::noop();
    let mut cx = Context::from_waker(waker);
    match outbox.poll_take(&mut cx) {
        Poll::Ready(chunk) => chunk,
        Poll::Pending => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflow_closes_with_final_frame() {
        let outbox = Outbox::new(10);
        assert_eq!(
            outbox.push(Bytes::from_static(b"12345"), Bytes::new),
            PushResult::Queued
        );
        assert_eq!(
            outbox.push(Bytes::from_static(b"1234"), Bytes::new),
            PushResult::Queued
        );
        assert_eq!(
            outbox.push(Bytes::from_static(b"12"), || Bytes::from_static(
                b"retry: 1\n\n"
            )),
            PushResult::Overflow
        );
        assert_eq!(outbox.closed(), Some(CloseReason::Slow));
        assert_eq!(drain_now(&outbox).as_deref(), Some(&b"retry: 1\n\n"[..]));
        assert_eq!(drain_now(&outbox), None);
        assert_eq!(
            outbox.push(Bytes::from_static(b"1"), Bytes::new),
            PushResult::Closed
        );
    }

    #[test]
    fn coalesces_queued_frames() {
        let outbox = Outbox::new(100);
        outbox.push(Bytes::from_static(b"a"), Bytes::new);
        outbox.push(Bytes::from_static(b"b"), Bytes::new);
        assert_eq!(drain_now(&outbox).as_deref(), Some(&b"ab"[..]));
        assert_eq!(outbox.queued_bytes(), 0);
    }
}
