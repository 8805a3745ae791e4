//! One actor per SSE connection: replays what the client missed, then joins the live
//! fan-out of its topic; its HTTP body drains the session's [`Outbox`].
//!
//! The resume path: a cursor the supervisor's ring proves joins in one message; anything
//! else is resolved and paged through the stream reader, then joins with the cursor the
//! replay reached. Joins go through the registry, which hands them to the topic's current
//! supervisor, so the session never holds a supervisor it has not joined.

use std::cell::Cell;
use std::sync::Arc;

use actix::prelude::*;
use bytes::Bytes;
use tracing::{Instrument, Span, debug, warn};

use super::lifetime::{self, Lifetime};
use super::messages::{BodyGone, EndStream, Join, JoinOutcome, Leave, ReplayPage, ResolvePosition};
use super::outbox::{CloseReason, Outbox};
use crate::envelope::{Cursor, ResumePosition, Topic};
use crate::filter::EventFilter;
use crate::metrics::Metrics;
use crate::recovery::{BehindStep, Loss, Resolution, after_behind};
use crate::sse::{self, StreamFormat};

/// A supervisor that keeps answering `Retry` this many times in a row is treated as gone.
const MAX_JOIN_RETRIES: usize = 64;

/// What a client asked for when it opened a stream.
#[derive(Debug, Clone)]
pub struct SessionSpec {
    /// The stream's topic.
    pub topic: Topic,
    /// Where to resume, from `Last-Event-ID` or the query.
    pub resume: Option<ResumePosition>,
    /// Event types wanted.
    pub filter: EventFilter,
    /// Wire format.
    pub format: StreamFormat,
    /// When the stream must end (its credential's expiry or revocation).
    pub lifetime: Lifetime,
}

/// Where a session sends its joins and reads.
#[derive(Clone)]
pub struct SessionLinks {
    /// The registry, which hands joins to the topic's supervisor.
    pub join: Recipient<Join>,
    /// The stream reader's lookups.
    pub resolve: Recipient<ResolvePosition>,
    /// The stream reader's pages.
    pub read: Recipient<ReplayPage>,
}

/// The replay-then-join task, detached from the actor so it can run as one future.
struct Replay {
    session_id: u64,
    spec: SessionSpec,
    filter: Arc<EventFilter>,
    outbox: Arc<Outbox>,
    links: SessionLinks,
    page_size: usize,
    worker: Option<usize>,
    metrics: Metrics,
    /// Set when the client's position could not be replayed.
    replay_error: Cell<Option<&'static str>>,
}

impl Replay {
    fn join_message(&self, after: Option<Cursor>, replayed: usize, unverified: bool) -> Join {
        Join {
            topic: self.spec.topic.clone(),
            session_id: self.session_id,
            outbox: self.outbox.clone(),
            filter: self.filter.clone(),
            format: self.spec.format,
            after,
            replayed,
            unverified,
            last_event_id: self.spec.resume.as_ref().map(ResumePosition::as_text),
            replay_error: self.replay_error.get(),
            worker: self.worker,
        }
    }

    /// Sends a join, asking again while a retiring supervisor answers `Retry` (the registry
    /// handled its retirement before our next request, so the next answer is a new one).
    async fn join(&self, after: Option<Cursor>, replayed: usize, unverified: bool) -> JoinOutcome {
        for _ in 0..MAX_JOIN_RETRIES {
            let outcome = self
                .links
                .join
                .send(self.join_message(after, replayed, unverified))
                .await
                .unwrap_or(JoinOutcome::Closed);
            if !matches!(outcome, JoinOutcome::Retry) {
                return outcome;
            }
        }
        JoinOutcome::Closed
    }

    /// Reads pages after `cursor` into the outbox until the stream is exhausted; returns the
    /// cursor reached and whether the last page was empty. Each frame waits for room in the
    /// queue, so a client that does not read holds at most the queue's bound.
    async fn read_pages(
        &self,
        mut cursor: Cursor,
        replayed: &mut usize,
    ) -> Result<(Cursor, bool), CloseReason> {
        loop {
            if self.outbox.closed().is_some() {
                return Err(CloseReason::Client);
            }
            let page = self
                .links
                .read
                .send(ReplayPage {
                    topic: self.spec.topic.clone(),
                    after: cursor,
                    limit: self.page_size,
                })
                .await
                .map_err(|_| CloseReason::Shutdown)?
                .map_err(|error| {
                    warn!(session = self.session_id, %error, "replay read failed");
                    CloseReason::Backend
                })?;
            match page.lost {
                // Trimmed while we replayed: the client hears so before what is left.
                Some(Loss::Trimmed) => self.resync("expired", &cursor.to_string()),
                // The stream lost its newest entries (a failover): the client hears so, and
                // the replay goes on from what the stream still has.
                Some(Loss::Tail { resume_after }) => {
                    self.resync("unknown", &cursor.to_string());
                    cursor = resume_after;
                    continue;
                }
                None => {}
            }
            for event in &page.events {
                if let Some(c) = event.cursor() {
                    cursor = c;
                }
                if !self.filter.matches(event.event_name()) {
                    continue;
                }
                let frame = event.frame(self.spec.format);
                if !self.outbox.push_when_room(frame).await {
                    return Err(CloseReason::Client);
                }
                *replayed += 1;
                // Counted as written: a replay waiting on a slow client shows where it is.
                self.metrics.record_replay(1);
            }
            if !page.full {
                return Ok((cursor, page.events.is_empty()));
            }
        }
    }

    /// Where the client's position lands; a position that cannot be replayed gets its
    /// `realtime.resync` here and the session continues from the live edge.
    async fn resolve(&self, position: &ResumePosition) -> Result<Option<Cursor>, CloseReason> {
        let resolution = self
            .links
            .resolve
            .send(ResolvePosition {
                topic: self.spec.topic.clone(),
                position: position.clone(),
            })
            .await
            .map_err(|_| CloseReason::Shutdown)?
            .map_err(|error| {
                warn!(session = self.session_id, %error, "resume lookup failed");
                CloseReason::Backend
            })?;
        let requests = &self.metrics.replay_requests;
        match resolution {
            Resolution::After(cursor) => {
                requests.hit.inc();
                Ok(Some(cursor))
            }
            other => {
                let reason = other.resync_reason().unwrap_or("unknown");
                match other {
                    Resolution::Expired => requests.expired.inc(),
                    _ => requests.unknown.inc(),
                }
                debug!(
                    reason,
                    "resume position not replayable; sending realtime.resync"
                );
                self.resync(reason, &position.as_text());
                Ok(None)
            }
        }
    }

    fn resync(&self, reason: &'static str, position: &str) {
        self.replay_error.set(Some(match reason {
            "expired" => "the resume position is older than the replay window",
            _ => "the resume position is not in the stream",
        }));
        self.outbox.push_unbounded(sse::resync(reason, position));
        self.metrics.resyncs.inc();
    }

    /// Replays what the client missed and joins; the supervisor's `Leave` on success.
    async fn run(self) -> Result<Recipient<Leave>, CloseReason> {
        if let Some(ResumePosition::Cursor(cursor)) = self.spec.resume {
            // A cursor the supervisor's ring still covers is served from the ring in one
            // message, without a stream lookup or read: this is what a reconnect storm after
            // a short drop mostly is.
            match self.join(Some(cursor), 0, true).await {
                JoinOutcome::Joined { handed_over, leave } => {
                    self.metrics.replay_requests.hit.inc();
                    self.metrics.record_replay(handed_over);
                    return Ok(leave);
                }
                JoinOutcome::Closed => return Err(CloseReason::Client),
                JoinOutcome::Behind | JoinOutcome::ReadMore | JoinOutcome::Retry => {}
            }
        }
        let mut after = match &self.spec.resume {
            Some(position) => self.resolve(position).await?,
            None => None,
        };
        let mut replayed = 0usize;
        loop {
            let mut exhausted = false;
            if let Some(cursor) = after {
                let (newest, empty) = self.read_pages(cursor, &mut replayed).await?;
                after = Some(newest);
                exhausted = empty;
            }
            match self.join(after, replayed, false).await {
                JoinOutcome::Joined { handed_over, leave } => {
                    self.metrics.record_replay(handed_over);
                    return Ok(leave);
                }
                JoinOutcome::Closed | JoinOutcome::Retry => return Err(CloseReason::Client),
                // The ring has what follows, more than the queue has room for: read it from
                // the stream as the client drains.
                JoinOutcome::ReadMore if after.is_some() => {}
                JoinOutcome::ReadMore => return Err(CloseReason::Client),
                JoinOutcome::Behind => match after_behind(exhausted) {
                    BehindStep::ReadMore => {}
                    BehindStep::ResyncExpired => {
                        let position = after.map(|c| c.to_string()).unwrap_or_default();
                        self.resync("expired", &position);
                        after = None;
                    }
                },
            }
        }
    }
}

/// The actor of one SSE connection.
pub struct ClientSession {
    id: u64,
    replay: Option<Replay>,
    outbox: Arc<Outbox>,
    leave: Option<Recipient<Leave>>,
    retry_frame: Bytes,
    lifetime: Lifetime,
    /// An end asked for while the replay was still running: applied once it is written.
    pending_end: Option<EndStream>,
    /// `session{org, session, resume}`: every line about this session is logged in it.
    span: Span,
}

/// What a session needs from its hub: settings, and where its connection runs.
#[derive(Debug, Clone, Copy)]
pub struct SessionContext {
    /// Events per replay page.
    pub page_size: usize,
    /// The `retry:` hint.
    pub retry_ms: u64,
    /// The HTTP worker thread the connection runs on, if any (its supervisor runs there).
    pub worker: Option<usize>,
}

impl ClientSession {
    /// A session that will replay and join once started.
    pub(crate) fn new(
        id: u64,
        spec: SessionSpec,
        outbox: Arc<Outbox>,
        links: SessionLinks,
        limits: SessionContext,
        metrics: Metrics,
        span: Span,
    ) -> Self {
        let filter = Arc::new(spec.filter.clone());
        let lifetime = spec.lifetime.clone();
        Self {
            id,
            replay: Some(Replay {
                session_id: id,
                spec,
                filter,
                outbox: outbox.clone(),
                links,
                page_size: limits.page_size,
                worker: limits.worker,
                metrics,
                replay_error: Cell::new(None),
            }),
            outbox,
            leave: None,
            retry_frame: sse::retry(limits.retry_ms),
            lifetime,
            pending_end: None,
            span,
        }
    }

    /// Ends the stream for `reason` after a final `retry:` frame, so the client comes
    /// back (with whatever credential it holds now, wherever it lands).
    fn end(&mut self, reason: CloseReason, ctx: &mut Context<Self>) {
        debug!(parent: &self.span, reason = reason.as_str(), "the stream's lifetime ended it");
        self.outbox.close(reason, Some(self.retry_frame.clone()));
        ctx.stop();
    }

    /// Applies an [`EndStream`].
    fn end_with(&mut self, end: EndStream, ctx: &mut Context<Self>) {
        debug!(parent: &self.span, reason = end.reason.as_str(), "stream ended");
        self.outbox.close(end.reason, Some(end.final_frame));
        ctx.stop();
    }
}

impl Actor for ClientSession {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        lifetime::watch(&self.lifetime, ctx, Self::end);
        let Some(replay) = self.replay.take() else {
            return;
        };
        // Spawned, not waited: a client that leaves mid-replay must still reach `BodyGone`.
        ctx.spawn(
            replay
                .run()
                .instrument(self.span.clone())
                .into_actor(self)
                .map(|result, act, ctx| match result {
                    Ok(leave) => {
                        debug!(parent: &act.span, "session joined the live fan-out");
                        act.leave = Some(leave);
                        if let Some(end) = act.pending_end.take() {
                            act.end_with(end, ctx);
                        }
                    }
                    Err(_) if act.pending_end.is_some() => {
                        if let Some(end) = act.pending_end.take() {
                            act.end_with(end, ctx);
                        }
                    }
                    Err(reason) => {
                        debug!(parent: &act.span, session = act.id, reason = reason.as_str(),
                               "session ended before joining");
                        let final_frame =
                            (reason == CloseReason::Backend).then(|| act.retry_frame.clone());
                        act.outbox.close(reason, final_frame);
                        ctx.stop();
                    }
                }),
        );
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        let reason = self.outbox.closed().unwrap_or(CloseReason::Client);
        debug!(parent: &self.span, reason = reason.as_str(), "session ended");
        if let Some(leave) = self.leave.take() {
            leave.do_send(Leave {
                session_id: self.id,
            });
        }
    }
}

impl Handler<EndStream> for ClientSession {
    type Result = ();

    fn handle(&mut self, end: EndStream, ctx: &mut Self::Context) {
        if self.leave.is_none() {
            // Still replaying: the client gets what it missed first, then the end.
            self.pending_end = Some(end);
        } else {
            self.end_with(end, ctx);
        }
    }
}

impl Handler<BodyGone> for ClientSession {
    type Result = ();

    fn handle(&mut self, _: BodyGone, ctx: &mut Self::Context) {
        ctx.stop();
    }
}
