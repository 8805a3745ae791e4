//! Messages between the hub's actors, one small struct each.

use std::sync::Arc;

use actix::prelude::*;

use super::outbox::Outbox;
use super::supervisor::OrgSupervisor;
use crate::broker::{BrokerError, PublishOutcome, Resolution};
use crate::envelope::{Cursor, PublishRequest, ResumePosition, StoredEvent, Topic};
use crate::filter::EventFilter;
use crate::hub::HubError;

/// Publishes one or more events to a topic; the in-process producer API.
#[derive(Debug, Message)]
#[rtype(result = "Result<Vec<PublishOutcome>, HubError>")]
pub struct Publish {
    /// Where the events go.
    pub topic: Topic,
    /// The events, validated together: an invalid batch publishes nothing.
    pub requests: Vec<PublishRequest>,
}

/// [`Publish`] counted under a path other than in-process (HTTP) in the metrics.
#[derive(Debug, Message)]
#[rtype(result = "Result<Vec<PublishOutcome>, HubError>")]
pub struct PublishVia {
    /// The events.
    pub publish: Publish,
    /// Where they came from.
    pub path: crate::metrics::PublishPath,
}

/// Asks the hub for a topic's supervisor, starting it if needed.
#[derive(Debug, Message)]
#[rtype(result = "Result<Addr<OrgSupervisor>, HubError>")]
pub struct GetSupervisor(pub Topic);

/// A supervisor has had no sessions for its idle time and offers to stop.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct SupervisorIdle {
    /// Its topic.
    pub topic: Topic,
    /// Its address, so a newer supervisor of the same topic is not removed by mistake.
    pub addr: Addr<OrgSupervisor>,
}

/// Ends every stream and refuses new ones: the hub is shutting down.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct Shutdown;

/// Stops a supervisor (sent by the hub after it removed it from the registry).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct StopSupervisor;

/// The wire format a session writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamFormat {
    /// Envelope v1 in `data:`, `realtime.connected` after the replay.
    V1,
    /// DashClaw's `/api/stream`: legacy projection, `connected` after the replay.
    Legacy,
}

/// A session asks to join its topic's live fan-out after replaying up to `after`.
#[derive(Debug, Message)]
#[rtype(result = "JoinOutcome")]
pub struct Join {
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
    /// ring proves it (inside `(floor, last]` and the window), else answer `Behind`.
    pub unverified: bool,
}

/// The supervisor's answer to [`Join`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinOutcome {
    /// Joined; every later event will reach the session exactly once.
    Joined,
    /// The supervisor's recent-events ring no longer reaches back to `after`: read more pages.
    Behind,
    /// The supervisor is retiring: ask the hub for the current one.
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

/// Asks the stream reader where a resume position lands.
#[derive(Debug, Message)]
#[rtype(result = "Result<Resolution, BrokerError>")]
pub struct ResolvePosition {
    /// The stream.
    pub topic: Topic,
    /// The client's position.
    pub position: ResumePosition,
}

/// Asks the stream reader for one page of events after a cursor.
#[derive(Debug, Message)]
#[rtype(result = "Result<Vec<Arc<StoredEvent>>, BrokerError>")]
pub struct ReadPage {
    /// The stream.
    pub topic: Topic,
    /// Exclusive start.
    pub after: Cursor,
    /// Page size.
    pub limit: usize,
}

/// An HTTP worker's arbiter, offered to the hub for placing supervisors.
#[derive(Message)]
#[rtype(result = "()")]
pub struct WorkerArbiter(pub actix::ArbiterHandle);
