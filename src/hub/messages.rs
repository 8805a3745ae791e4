//! Messages between the hub's actors, one small struct each. They carry only leaf types and
//! `Recipient`s, so no actor module needs to import another (a session reaches its
//! supervisor through the `Recipient<Leave>` it was handed when it joined).

use std::sync::Arc;

use actix::prelude::*;
use bytes::Bytes;

use super::error::HubError;
use super::outbox::{CloseReason, Outbox};
use crate::broker::{self, BrokerError, PublishOutcome, Resolution};
use crate::envelope::{Cursor, PublishRequest, ResumePosition, Topic};
use crate::filter::EventFilter;
use crate::sse::StreamFormat;

/// Publishes one or more events to a topic; the in-process producer API.
#[derive(Debug, Message)]
#[rtype(result = "Result<Vec<PublishOutcome>, HubError>")]
pub struct Publish {
    /// Where the events go.
    pub topic: Topic,
    /// The events, validated together: an invalid batch publishes nothing.
    pub requests: Vec<PublishRequest>,
}

/// Where a publish came in, for `events_published_total{path}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishSource {
    /// The `Publish` message or `HubHandle::publish`.
    InProcess,
    /// `POST /v1/orgs/{org}/events` or `/v1/ops/events`.
    Http,
}

/// [`Publish`] with the source it is counted under.
#[derive(Debug, Message)]
#[rtype(result = "Result<Vec<PublishOutcome>, HubError>")]
pub struct PublishFrom {
    /// The events.
    pub publish: Publish,
    /// Where they came from.
    pub source: PublishSource,
}

/// A session asks to join its topic's live fan-out after replaying up to `after`. Sent to
/// the registry, which hands it to the topic's current supervisor.
#[derive(Debug, Message)]
#[rtype(result = "JoinOutcome")]
pub struct Join {
    /// The stream's topic.
    pub topic: Topic,
    /// Session id, unique in this process.
    pub session_id: u64,
    /// The session's outbound queue.
    pub outbox: Arc<Outbox>,
    /// Event types the client wants.
    pub filter: Arc<EventFilter>,
    /// Wire format.
    pub format: StreamFormat,
    /// Last stream cursor the session has read (None: join at the live edge).
    pub after: Option<Cursor>,
    /// Events already written from the stream, for the connected frame.
    pub replayed: usize,
    /// `after` is the client's own cursor, not checked against the stream: join only if the
    /// ring proves it, else answer `Behind`.
    pub unverified: bool,
    /// The resume position the client sent, for the legacy connected frame.
    pub last_event_id: Option<String>,
    /// Why the client's position could not be replayed, for the legacy connected frame.
    pub replay_error: Option<&'static str>,
    /// The HTTP worker thread the session's connection runs on, if any.
    pub worker: Option<usize>,
}

/// The supervisor's answer to [`Join`].
#[derive(Debug, Clone)]
pub enum JoinOutcome {
    /// Joined; every later event reaches the session exactly once. `handed_over` events
    /// came from the supervisor's ring; `leave` ends the membership.
    Joined {
        /// Events handed over from the ring.
        handed_over: usize,
        /// Where to say the session is gone.
        leave: Recipient<Leave>,
    },
    /// The supervisor's ring does not reach back to `after`: read more pages.
    Behind,
    /// The ring reaches back to `after`, but more than the session's queue has room for:
    /// read more pages (as the client drains) and ask again.
    ReadMore,
    /// The supervisor was retiring: ask again (the registry has started a new one).
    Retry,
    /// The session is closed or the hub is shutting down.
    Closed,
}

/// A session's connection is gone.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Leave {
    /// The session's id.
    pub session_id: u64,
}

/// The HTTP body of a session was dropped (client went away or the stream ended).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct BodyGone;

/// Ends a stream after what is queued and `final_frame` (a `retry:` hint); a session still
/// replaying ends once its replay is written, so the client resumes after it.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct EndStream {
    /// Why, for the metrics.
    pub reason: CloseReason,
    /// The last frame the client gets.
    pub final_frame: Bytes,
}

/// A supervisor has had no sessions for its idle time and offers to stop.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct SupervisorIdle {
    /// Its topic and worker.
    pub key: SupervisorKey,
    /// The registry's number for it, so a newer supervisor of the topic is not retired.
    pub generation: u64,
}

/// Which supervisor: a topic's, on one HTTP worker thread (or shared, off the workers).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SupervisorKey {
    /// The topic.
    pub topic: Topic,
    /// The HTTP worker the supervisor runs on, if any.
    pub worker: Option<usize>,
}

/// Ends every stream and refuses new ones: the hub is shutting down.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct Shutdown;

/// Stops a supervisor (sent by the registry after it removed it).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct StopSupervisor;

/// An HTTP worker's arbiter, offered to the registry for placing supervisors.
#[derive(Message)]
#[rtype(result = "()")]
pub struct WorkerArbiter {
    /// The worker's number.
    pub worker: usize,
    /// Its arbiter.
    pub arbiter: ArbiterHandle,
}

/// Asks the stream reader where a resume position lands.
#[derive(Debug, Message)]
#[rtype(result = "Result<Resolution, BrokerError>")]
pub struct ResolvePosition {
    /// The stream.
    pub topic: Topic,
    /// The client's position.
    pub position: ResumePosition,
}

/// One page of a stream, shared by every reader that asked for it.
pub type Page = Arc<broker::Page>;

/// Asks the stream reader for one page of events after a cursor, as the stream is now
/// (a supervisor's gap fill).
#[derive(Debug, Message)]
#[rtype(result = "Result<Page, BrokerError>")]
pub struct ReadPage {
    /// The stream.
    pub topic: Topic,
    /// Exclusive start.
    pub after: Cursor,
    /// Page size.
    pub limit: usize,
}

/// Asks the stream reader for one page of a session's replay: it may come from a page read
/// moments ago for another session (whatever follows it is read fresh).
#[derive(Debug, Message)]
#[rtype(result = "Result<Page, BrokerError>")]
pub struct ReplayPage {
    /// The stream.
    pub topic: Topic,
    /// Exclusive start.
    pub after: Cursor,
    /// Page size.
    pub limit: usize,
}
