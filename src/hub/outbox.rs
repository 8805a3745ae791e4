//! A session's bounded outbound queue, shared by its writers and its HTTP body.
//!
//! Frames are pre-encoded `Bytes` shared with every other session of the org; the queue
//! only holds references. The body drains what is queued, up to [`MAX_CHUNK`] bytes, in one
//! poll and hands it to the socket as one chunk, so a burst costs one write, not one per
//! frame.
//!
//! Bound: live frames past the queue's limit close the session as slow; replay frames wait
//! for room ([`Outbox::push_when_room`]); control frames (one `retry:`, one connected frame,
//! resyncs) are a few hundred bytes each. Whatever a chunk hands to actix-http waits in its
//! write buffer, which it stops refilling at 32 KiB: a client that never reads holds at most
//! the queue's limit, one chunk and that buffer.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::sync::Notify;

/// Most bytes handed to the HTTP layer in one chunk (a single larger frame goes alone).
pub const MAX_CHUNK: usize = 64 << 10;

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
    /// The instance is draining before it stops: the client resumes on another one.
    Drain,
    /// The stream reached its maximum age: the client resumes, maybe on another instance.
    MaxAge,
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
            Self::Drain => "drain",
            Self::MaxAge => "max_age",
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

    /// Queues a replay frame once it fits under the bound (or the queue is empty, for a
    /// frame larger than the whole bound); false when the stream was closed meanwhile.
    pub async fn push_when_room(&self, frame: Bytes) -> bool {
        loop {
            let drained = self.drained.notified();
            {
                let mut state = self.lock();
                if state.closed.is_some() {
                    return false;
                }
                let fits = state.queued_bytes + frame.len() <= self.limit;
                if fits || state.frames.is_empty() {
                    enqueue(&mut state, frame);
                    return true;
                }
            }
            drained.await;
        }
    }

    /// Bytes that can still be queued before the bound.
    pub fn room(&self) -> usize {
        self.limit.saturating_sub(self.lock().queued_bytes)
    }

    /// Queues a control frame (a few hundred bytes: `retry:`, connected, resync) without
    /// the bound.
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

    /// Takes what is queued, up to [`MAX_CHUNK`] bytes, as one chunk; `Ready(None)` once
    /// the stream has ended.
    pub fn poll_take(&self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        let mut state = self.lock();
        if let Some(chunk) = take_chunk(&mut state) {
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

/// The frames at the front of the queue, up to [`MAX_CHUNK`] bytes (at least one frame).
fn take_chunk(state: &mut State) -> Option<Bytes> {
    let first = state.frames.pop_front()?;
    let mut taken = first.len();
    let chunk = match state.frames.front() {
        Some(next) if taken + next.len() <= MAX_CHUNK => {
            let mut chunk = BytesMut::with_capacity(MAX_CHUNK.min(state.queued_bytes));
            chunk.extend_from_slice(&first);
            while let Some(next) = state.frames.front()
                && taken + next.len() <= MAX_CHUNK
            {
                taken += next.len();
                if let Some(frame) = state.frames.pop_front() {
                    chunk.extend_from_slice(&frame);
                }
            }
            chunk.freeze()
        }
        _ => first,
    };
    state.queued_bytes -= taken;
    Some(chunk)
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
    fn chunks_are_bounded() {
        let outbox = Outbox::new(1 << 20);
        for _ in 0..10 {
            outbox.push(Bytes::from(vec![b'x'; 10_000]), Bytes::new);
        }
        let first = drain_now(&outbox).unwrap();
        assert_eq!(first.len(), 60_000);
        assert_eq!(outbox.queued_bytes(), 40_000);
        let big = Outbox::new(1 << 20);
        big.push(Bytes::from(vec![b'x'; 100_000]), Bytes::new);
        big.push(Bytes::from_static(b"y"), Bytes::new);
        assert_eq!(drain_now(&big).unwrap().len(), 100_000);
        assert_eq!(drain_now(&big).unwrap().len(), 1);
    }

    #[tokio::test]
    async fn replay_frames_wait_for_room() {
        let outbox = Outbox::new(100);
        assert!(outbox.push_when_room(Bytes::from(vec![b'a'; 80])).await);
        let waiting = {
            let outbox = outbox.clone();
            tokio::spawn(async move { outbox.push_when_room(Bytes::from(vec![b'b'; 80])).await })
        };
        tokio::task::yield_now().await;
        assert_eq!(outbox.queued_bytes(), 80, "the second frame waits");
        assert_eq!(drain_now(&outbox).unwrap().len(), 80);
        assert!(waiting.await.unwrap());
        assert_eq!(outbox.queued_bytes(), 80);
        // A frame larger than the bound goes alone into an empty queue.
        drain_now(&outbox);
        assert!(outbox.push_when_room(Bytes::from(vec![b'c'; 500])).await);
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
