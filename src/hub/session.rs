//! One actor per SSE connection: replays what the client missed, then joins the live
//! fan-out of its topic's supervisor; its HTTP body drains the session's [`Outbox`].

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use actix::prelude::*;
use actix_web::body::{BodySize, MessageBody};
use bytes::Bytes;
use serde_json::json;
use tracing::{Instrument, Span, debug, warn};

use super::messages::{
    BodyGone, GetSupervisor, Join, JoinOutcome, Leave, ReadPage, ResolvePosition, StreamFormat,
};
use super::outbox::{CloseReason, Outbox};
use super::stream_reader::StreamReader;
use super::supervisor::OrgSupervisor;
use super::{ConnectionPermit, Hub, HubError};
use crate::broker::{BackendHealth, Broker, Resolution};
use crate::envelope::{Cursor, ResumePosition, StoredEvent, Topic, frame, legacy_projection};
use crate::filter::EventFilter;
use crate::metrics::Metrics;

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
}

/// Encodes a stored event as an SSE frame in the given format.
pub fn encode_event(event: &StoredEvent, format: StreamFormat) -> Bytes {
    encode_event_with_id(event, format, event.cursor())
}

/// Encodes a stored event with an explicit `id:` line (`None`: no `id:` line).
pub fn encode_event_with_id(
    event: &StoredEvent,
    format: StreamFormat,
    id: Option<Cursor>,
) -> Bytes {
    match format {
        StreamFormat::V1 => frame::event(id, &event.envelope.event, &event.json),
        StreamFormat::Legacy => {
            let data = serde_json::to_vec(legacy_projection(&event.envelope)).unwrap_or_default();
            frame::event(id, &event.envelope.event, &data)
        }
    }
}

/// The `realtime.resync` control frame.
pub fn resync_frame(reason: &str, last_event_id: &str) -> Bytes {
    frame::control(
        "realtime.resync",
        &json!({"reason": reason, "last_event_id": last_event_id}),
    )
}

/// The frame that marks the end of the replay: `realtime.connected` or legacy `connected`.
pub fn connected_frame(
    format: StreamFormat,
    topic: &Topic,
    broker: &dyn Broker,
    replayed: usize,
    cursor: Option<Cursor>,
) -> Bytes {
    let backend = broker.kind().as_str();
    let cursor = cursor.map(|c| c.to_string());
    match format {
        StreamFormat::V1 => frame::control(
            "realtime.connected",
            &json!({"org_id": topic.envelope_org(), "backend": backend, "replayed": replayed, "cursor": cursor}),
        ),
        StreamFormat::Legacy => {
            let status = match broker.health() {
                BackendHealth::Ready => "healthy",
                BackendHealth::Unavailable(_) => "degraded",
            };
            frame::control(
                "connected",
                &json!({
                    "status": "ok",
                    "orgId": topic.envelope_org(),
                    "backend": backend,
                    "realtimeStatus": status,
                    "replayed": replayed,
                    "lastEventId": cursor,
                    "replayError": null,
                }),
            )
        }
    }
}

/// Everything the replay-then-join task needs, detached from the actor.
struct JoinPlan {
    session_id: u64,
    spec: SessionSpec,
    filter: Arc<EventFilter>,
    outbox: Arc<Outbox>,
    hub: Addr<Hub>,
    reader: Addr<StreamReader>,
    page_size: usize,
    queue_limit: usize,
    metrics: Metrics,
}

impl JoinPlan {
    async fn read_pages(
        &self,
        mut cursor: Cursor,
        replayed: &mut usize,
    ) -> Result<(Cursor, bool), CloseReason> {
        loop {
            // Pages are requested as the client drains, so replay never outgrows the queue.
            self.outbox.wait_below(self.queue_limit / 2).await;
            if self.outbox.closed().is_some() {
                return Err(CloseReason::Client);
            }
            let page = self
                .reader
                .send(ReadPage {
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
            let count = page.len();
            let mut written = 0u64;
            for event in page {
                if let Some(c) = event.cursor() {
                    cursor = c;
                }
                if self.filter.matches(&event.envelope.event) {
                    self.outbox
                        .push_unbounded(encode_event(&event, self.spec.format));
                    written += 1;
                }
            }
            *replayed += written as usize;
            self.metrics.replayed_events.inc_by(written);
            self.metrics.events_delivered.inc_by(written);
            if count < self.page_size {
                return Ok((cursor, count == 0));
            }
        }
    }

    /// Asks the hub for the topic's current supervisor.
    async fn supervisor(&self) -> Result<Addr<OrgSupervisor>, CloseReason> {
        match self.hub.send(GetSupervisor(self.spec.topic.clone())).await {
            Ok(Ok(addr)) => Ok(addr),
            Ok(Err(HubError::ShuttingDown)) | Err(_) => Err(CloseReason::Shutdown),
            Ok(Err(_)) => Err(CloseReason::Backend),
        }
    }

    /// A cursor the supervisor's ring still covers is served from the ring in one message,
    /// without a stream lookup or read: this is what a reconnect storm after a short drop
    /// mostly is. `None`: the ring cannot prove it; take the stream path.
    async fn join_from_ring(
        &self,
        cursor: Cursor,
    ) -> Result<Option<Addr<OrgSupervisor>>, CloseReason> {
        let supervisor = self.supervisor().await?;
        let join = Join {
            session_id: self.session_id,
            outbox: self.outbox.clone(),
            filter: self.filter.clone(),
            format: self.spec.format,
            after: Some(cursor),
            replayed: 0,
            unverified: true,
        };
        match supervisor.send(join).await {
            Ok(JoinOutcome::Joined) => {
                self.metrics.replay_requests.hit.inc();
                Ok(Some(supervisor))
            }
            Ok(JoinOutcome::Closed) => Err(CloseReason::Client),
            Ok(JoinOutcome::Behind) | Ok(JoinOutcome::Retry) | Err(_) => Ok(None),
        }
    }

    async fn run(self) -> Result<Addr<OrgSupervisor>, CloseReason> {
        let mut after = None;
        let mut replayed = 0usize;
        if let Some(ResumePosition::Cursor(cursor)) = self.spec.resume
            && let Some(supervisor) = self.join_from_ring(cursor).await?
        {
            return Ok(supervisor);
        }
        if let Some(position) = self.spec.resume.clone() {
            let resolution = self
                .reader
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
                    after = Some(cursor);
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
                    self.outbox
                        .push_unbounded(resync_frame(reason, &position.as_text()));
                    self.metrics.resyncs.inc();
                }
            }
        }
        loop {
            let mut exhausted = false;
            if let Some(cursor) = after {
                let (newest, empty) = self.read_pages(cursor, &mut replayed).await?;
                after = Some(newest);
                exhausted = empty;
            }
            let supervisor = self.supervisor().await?;
            let join = Join {
                session_id: self.session_id,
                outbox: self.outbox.clone(),
                filter: self.filter.clone(),
                format: self.spec.format,
                after,
                replayed,
                unverified: false,
            };
            match supervisor.send(join).await {
                Ok(JoinOutcome::Joined) => return Ok(supervisor),
                Ok(JoinOutcome::Closed) => return Err(CloseReason::Client),
                Ok(JoinOutcome::Behind) if exhausted => {
                    // The supervisor is past events the stream no longer has: they expired
                    // while we replayed.
                    let position = after.map(|c| c.to_string()).unwrap_or_default();
                    self.outbox
                        .push_unbounded(resync_frame("expired", &position));
                    self.metrics.resyncs.inc();
                    after = None;
                }
                Ok(JoinOutcome::Behind) => {}
                Ok(JoinOutcome::Retry) | Err(_) => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }
    }
}

/// The actor of one SSE connection.
pub struct ClientSession {
    id: u64,
    plan: Option<JoinPlan>,
    outbox: Arc<Outbox>,
    supervisor: Option<Addr<OrgSupervisor>>,
    retry_frame: Bytes,
    /// `session{org, session, resume}`: every line about this session is logged in it.
    span: Span,
}

impl ClientSession {
    /// A session that will replay and join once started.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        id: u64,
        spec: SessionSpec,
        outbox: Arc<Outbox>,
        hub: Addr<Hub>,
        reader: Addr<StreamReader>,
        page_size: usize,
        queue_limit: usize,
        retry_ms: u64,
        metrics: Metrics,
        span: Span,
    ) -> Self {
        let filter = Arc::new(spec.filter.clone());
        Self {
            id,
            plan: Some(JoinPlan {
                session_id: id,
                spec,
                filter,
                outbox: outbox.clone(),
                hub,
                reader,
                page_size,
                queue_limit,
                metrics,
            }),
            outbox,
            supervisor: None,
            retry_frame: frame::retry(retry_ms),
            span,
        }
    }
}

impl Actor for ClientSession {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let Some(plan) = self.plan.take() else {
            return;
        };
        // Spawned, not waited: a client that leaves mid-replay must still reach `BodyGone`.
        ctx.spawn(
            plan.run()
                .instrument(self.span.clone())
                .into_actor(self)
                .map(|result, act, ctx| match result {
                    Ok(supervisor) => {
                        debug!(parent: &act.span, "session joined the live fan-out");
                        act.supervisor = Some(supervisor);
                    }
                    Err(reason) => {
                        let _entered = act.span.enter();
                        debug!(
                            session = act.id,
                            reason = reason.as_str(),
                            "session ended before joining"
                        );
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
        if let Some(supervisor) = self.supervisor.take() {
            supervisor.do_send(Leave {
                session_id: self.id,
            });
        }
    }
}

impl Handler<BodyGone> for ClientSession {
    type Result = ();

    fn handle(&mut self, _: BodyGone, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

/// The streaming HTTP body of a session: yields whatever its outbox has queued.
pub struct SessionBody {
    outbox: Arc<Outbox>,
    session: Addr<ClientSession>,
    _permit: ConnectionPermit,
    metrics: Metrics,
}

impl SessionBody {
    pub(crate) fn new(
        outbox: Arc<Outbox>,
        session: Addr<ClientSession>,
        permit: ConnectionPermit,
        metrics: Metrics,
    ) -> Self {
        Self {
            outbox,
            session,
            _permit: permit,
            metrics,
        }
    }
}

impl MessageBody for SessionBody {
    type Error = Infallible;

    fn size(&self) -> BodySize {
        BodySize::Stream
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        self.outbox.poll_take(cx).map(|chunk| chunk.map(Ok))
    }
}

impl Drop for SessionBody {
    fn drop(&mut self) {
        // Counted here, once per connection, when the socket side is really gone.
        let reason = self.outbox.body_dropped();
        self.metrics.connections_closed.for_reason(reason).inc();
        self.session.do_send(BodyGone);
    }
}
