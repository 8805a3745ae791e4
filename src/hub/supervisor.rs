//! One actor per active topic: owns the broker subscription, the sessions and the ring.
//!
//! Everything that touches the order of events for a topic happens here, one message at a
//! time: live fan-out, session joins, gap fills. That serialization is what makes the
//! replay-to-live handoff exact (see `recovery::plan_join`).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::Bytes;
use futures_util::stream;
use tracing::{debug, info, warn};

use super::messages::{
    Join, JoinOutcome, Leave, ReadPage, Shutdown, StopSupervisor, SupervisorIdle, SupervisorKey,
};
use super::outbox::{CloseReason, Outbox, PushResult};
use crate::broker::{BackendHealth, Broker, InboxSignals, LiveMessage, Loss, live_channel};
use crate::config::Config;
use crate::envelope::{Cursor, StoredEvent, Topic, now_ms};
use crate::filter::EventFilter;
use crate::metrics::Metrics;
use crate::recovery::{JoinPlan, JoinRequest, RingSpan, plan_join};
use crate::sse::{self, Connected, StreamFormat};

/// Live messages a supervisor may have queued before overflow turns into a gap fill.
const LIVE_INBOX_CAPACITY: usize = 4096;
/// Recent events kept for joining sessions, by count.
const RING_MAX_EVENTS: usize = 2048;
/// Recent events kept for joining sessions, by bytes of frames.
const RING_MAX_BYTES: usize = 8 << 20;

struct SessionEntry {
    outbox: Arc<Outbox>,
    filter: Arc<EventFilter>,
    format: StreamFormat,
    /// Events up to this cursor were already written by the session's own replay.
    skip_through: Option<Cursor>,
    /// The stream position the session's replay read through (its `Join { after }`).
    read_through: Option<Cursor>,
}

/// Recent events, for joining sessions: holds every event in `(floor, last]`. The events
/// are the broker's own (shared `Arc`s, frames included), so the ring costs no copy.
#[derive(Default)]
struct Ring {
    entries: VecDeque<Arc<StoredEvent>>,
    bytes: usize,
    floor: Cursor,
}

impl Ring {
    fn push(&mut self, event: Arc<StoredEvent>) {
        self.bytes += event.size();
        self.entries.push_back(event);
        while self.entries.len() > RING_MAX_EVENTS || self.bytes > RING_MAX_BYTES {
            let Some(old) = self.entries.pop_front() else {
                break;
            };
            self.bytes -= old.size();
            if let Some(c) = old.cursor() {
                self.floor = c;
            }
        }
    }

    fn contains(&self, cursor: Cursor) -> bool {
        self.entries
            .binary_search_by(|e| e.cursor().cmp(&Some(cursor)))
            .is_ok()
    }

    /// The events after `after`, oldest first.
    fn after(&self, after: Cursor) -> impl Iterator<Item = &Arc<StoredEvent>> {
        let start = self.entries.partition_point(|e| e.cursor() <= Some(after));
        self.entries.range(start..)
    }

    fn reset(&mut self, floor: Cursor) {
        self.entries.clear();
        self.bytes = 0;
        self.floor = floor;
    }
}

/// Where a supervisor reports to and reads from.
pub struct SupervisorLinks {
    /// The registry, told when the supervisor is idle.
    pub registry: Recipient<SupervisorIdle>,
    /// Which supervisor this is, in the registry.
    pub key: SupervisorKey,
    /// The registry's number for this supervisor.
    pub generation: u64,
    /// The stream reader, for gap fills.
    pub reader: Recipient<ReadPage>,
}

/// The supervisor of one topic (an org, or the ops channel).
pub struct TopicSupervisor {
    topic: Topic,
    broker: Arc<dyn Broker>,
    links: SupervisorLinks,
    config: Arc<Config>,
    sessions: HashMap<u64, SessionEntry>,
    /// Cursor of the newest event fanned out (or the stream's head when subscribing).
    last: Cursor,
    ring: Ring,
    signals: Option<InboxSignals>,
    sink_id: Option<u64>,
    /// A gap fill must run before live delivery is trusted (set when a fill failed).
    gap_pending: bool,
    filling: bool,
    stashed: Option<LiveMessage>,
    empty_since: Option<Instant>,
    retiring: bool,
    /// Cursors recently delivered out of order, so a repeat is not delivered twice.
    late: VecDeque<Cursor>,
    draining: bool,
    retry_frame: Bytes,
    metrics: Metrics,
    /// Events the gap fill in progress has delivered so far.
    fill_delivered: usize,
}

impl TopicSupervisor {
    /// A supervisor for `topic`; it subscribes when started and records into `metrics`.
    pub fn new(
        topic: Topic,
        broker: Arc<dyn Broker>,
        links: SupervisorLinks,
        config: Arc<Config>,
        metrics: Metrics,
    ) -> Self {
        let retry_frame = sse::retry(config.retry_ms);
        Self {
            topic,
            broker,
            links,
            config,
            sessions: HashMap::new(),
            last: Cursor::default(),
            ring: Ring::default(),
            signals: None,
            sink_id: None,
            gap_pending: false,
            filling: false,
            stashed: None,
            empty_since: Some(Instant::now()),
            retiring: false,
            late: VecDeque::new(),
            draining: false,
            retry_frame,
            metrics,
            fill_delivered: 0,
        }
    }

    fn subscribe(&mut self, ctx: &mut Context<Self>) {
        let (sink, inbox) = live_channel(LIVE_INBOX_CAPACITY);
        self.sink_id = Some(sink.id());
        self.signals = Some(inbox.signals);
        let mut messages = inbox.messages;
        ctx.add_stream(stream::poll_fn(move |cx| messages.poll_recv(cx)));
        let subscribe = self.broker.subscribe(self.topic.clone(), sink);
        ctx.wait(subscribe.into_actor(self).map(|result, act, _ctx| match result {
            Ok(head) => {
                act.last = head.unwrap_or_default();
                act.ring.reset(act.last);
                debug!(topic = %act.topic, head = %act.last, "supervisor subscribed");
            }
            Err(error) => {
                // Live events may have been missed: fill from the stream once it works.
                warn!(topic = %act.topic, %error, "subscribe failed; will fill from the stream");
                act.gap_pending = true;
            }
        }));
    }

    /// Whether the inbox or an earlier failure asks for a gap fill (taking the inbox's
    /// signal).
    fn take_gap(&mut self) -> bool {
        let signalled = self.signals.as_ref().is_some_and(InboxSignals::take_gap);
        std::mem::take(&mut self.gap_pending) || signalled
    }

    fn gap_signalled(&self) -> bool {
        self.gap_pending || self.signals.as_ref().is_some_and(InboxSignals::has_gap)
    }

    /// Writes one live event to every interested session, once, in cursor order; false
    /// when the event was already delivered.
    fn deliver(&mut self, event: Arc<StoredEvent>) -> bool {
        let cursor = event.cursor();
        if let Some(cursor) = cursor
            && cursor <= self.last
        {
            return false;
        }
        // Sessions that joined ahead of the supervisor already replayed up to `skip_through`.
        self.fan_out(
            &event,
            true,
            |session| !matches!((session.skip_through, cursor), (Some(skip), Some(c)) if c <= skip),
        );
        if let Some(cursor) = cursor {
            self.last = cursor;
            self.ring.push(event);
        }
        true
    }

    /// A live event older than one already fanned out: producers that XADD and PUBLISH in
    /// two steps (DashClaw's Node app) can publish out of stream order. If it was never
    /// delivered it goes out now, without an `id:` line, so clients keep the newer cursor as
    /// their `Last-Event-ID` and a resume neither repeats nor skips anything.
    fn deliver_late(&mut self, event: Arc<StoredEvent>, cursor: Cursor) {
        if cursor <= self.ring.floor || self.ring.contains(cursor) || self.late.contains(&cursor) {
            return;
        }
        self.late.push_back(cursor);
        if self.late.len() > RING_MAX_EVENTS {
            self.late.pop_front();
        }
        debug!(topic = %self.topic, %cursor, last = %self.last, "late event delivered out of order");
        // A session whose replay read past this cursor already has the event.
        self.fan_out(&event, false, |session| {
            session.read_through.is_none_or(|read| cursor > read)
        });
    }

    /// Writes one event to every session that `wants` it and whose filter matches (with its
    /// cursor as the `id:` line when `with_id`); each format's frame is made once per event
    /// and shared. Prunes closed and overflowing sessions.
    fn fan_out(
        &mut self,
        event: &StoredEvent,
        with_id: bool,
        wants: impl Fn(&SessionEntry) -> bool,
    ) {
        let frame = |format| {
            if with_id {
                event.frame(format)
            } else {
                event.frame_without_id(format)
            }
        };
        let v1_frame = frame(StreamFormat::V1);
        let mut legacy_frame: Option<Bytes> = None;
        let mut queued = 0u64;
        let mut dead = Vec::new();
        for (id, session) in &self.sessions {
            if !wants(session) || !session.filter.matches(event.event_name()) {
                continue;
            }
            let bytes = match session.format {
                StreamFormat::V1 => v1_frame.clone(),
                StreamFormat::Legacy => legacy_frame
                    .get_or_insert_with(|| frame(StreamFormat::Legacy))
                    .clone(),
            };
            match self.push(&session.outbox, bytes) {
                PushResult::Queued => queued += 1,
                PushResult::Overflow => {
                    info!(topic = %self.topic, session = id, "slow client disconnected");
                    dead.push(*id);
                }
                PushResult::Closed => dead.push(*id),
            }
        }
        for id in dead {
            self.sessions.remove(&id);
        }
        // Once per event, not per session: the hot path stays one atomic add.
        let first = queued > 0 && event.first_delivery();
        self.metrics.record_live(queued, event.published_ms, first);
    }

    /// Offers a frame to a session's bounded queue, counting a slow disconnect on overflow.
    fn push(&self, outbox: &Outbox, bytes: Bytes) -> PushResult {
        let result = outbox.push(bytes, || self.retry_frame.clone());
        if result == PushResult::Overflow {
            self.metrics.slow_disconnects.inc();
        }
        result
    }

    fn on_live(&mut self, message: LiveMessage, ctx: &mut Context<Self>) {
        match message {
            LiveMessage::Event(event) => match event.cursor() {
                Some(cursor) if cursor <= self.last => self.deliver_late(event, cursor),
                _ => {
                    self.deliver(event);
                }
            },
            LiveMessage::Gap => self.fill_gap(None, ctx),
            LiveMessage::DataLost => self.data_lost(),
        }
    }

    /// A data-loss signal that found the inbox full is handled before anything else.
    fn take_lost_signal(&mut self) {
        if self.signals.as_ref().is_some_and(InboxSignals::take_lost) {
            self.data_lost();
        }
    }

    /// The stream lost its whole data set (Redis restarted empty): every session is told to
    /// resync and continues live from the new stream.
    fn data_lost(&mut self) {
        warn!(topic = %self.topic, last = %self.last, "stream data lost; sending realtime.resync");
        self.lost_after(Cursor::default());
    }

    /// Events up to `last` are gone from the stream, back to `resume_after`: every session
    /// is told to resync, and delivery goes on from `resume_after`, so events the stream
    /// gets next are not taken for ones already delivered.
    fn lost_after(&mut self, resume_after: Cursor) {
        self.resync_all("unknown");
        for session in self.sessions.values_mut() {
            session.skip_through = None;
        }
        self.last = resume_after;
        self.ring.reset(resume_after);
    }

    /// Tells every session that events are gone (`reason` of the resync frame).
    fn resync_all(&mut self, reason: &str) {
        let resync = sse::resync(reason, &self.last.to_string());
        let mut sent = 0u64;
        for session in self.sessions.values() {
            if self.push(&session.outbox, resync.clone()) == PushResult::Queued {
                sent += 1;
            }
        }
        self.metrics.resyncs.inc_by(sent);
    }

    /// Reads the stream after `last` page by page and delivers it, then `then` (the live
    /// message that revealed the gap). The actor handles nothing else meanwhile.
    fn fill_gap(&mut self, then: Option<LiveMessage>, ctx: &mut Context<Self>) {
        if then.is_some() {
            self.stashed = then;
        }
        if self.filling {
            return;
        }
        self.filling = true;
        self.take_gap();
        self.fill_page(ctx);
    }

    fn fill_page(&mut self, ctx: &mut Context<Self>) {
        let read = self.links.reader.send(ReadPage {
            topic: self.topic.clone(),
            after: self.last,
            limit: self.config.replay_page_size,
        });
        ctx.wait(read.into_actor(self).map(move |result, act, ctx| {
            match result.unwrap_or_else(|_| Err(crate::broker::BrokerError::Unavailable(
                "the stream reader stopped".into(),
            ))) {
                Ok(page) => {
                    match page.lost {
                        Some(Loss::Trimmed) => {
                            // Trimmed before we read it: the clients hear so before the rest,
                            // and the ring no longer proves positions before the loss.
                            warn!(topic = %act.topic, last = %act.last,
                                  "events after the last delivered one are gone; sending realtime.resync");
                            act.resync_all("expired");
                            let resumes_at = page.events.first().and_then(|e| e.cursor());
                            act.ring.reset(resumes_at.unwrap_or(act.last).max(act.last));
                        }
                        Some(Loss::Tail { resume_after }) => {
                            // The stream lost its newest entries (a failover): the clients
                            // resync, and the fill starts again from what the stream has.
                            warn!(topic = %act.topic, last = %act.last, %resume_after,
                                  "the stream lost events up to the last delivered one; sending realtime.resync");
                            act.lost_after(resume_after);
                            act.fill_page(ctx);
                            return;
                        }
                        None => {}
                    }
                    if !page.events.is_empty() {
                        debug!(topic = %act.topic, count = page.events.len(), "gap filled from stream");
                    }
                    for event in &page.events {
                        if act.deliver(event.clone()) {
                            act.fill_delivered += 1;
                        }
                    }
                    if page.full {
                        act.fill_page(ctx);
                    } else {
                        act.fill_done(ctx);
                    }
                }
                Err(error) => {
                    warn!(topic = %act.topic, %error, "gap fill failed; retrying on the next sweep");
                    act.filling = false;
                    act.gap_pending = true;
                }
            }
        }));
    }

    fn fill_done(&mut self, ctx: &mut Context<Self>) {
        // A fill that failed part-way is completed by a later one: counted then.
        if self.fill_delivered > 0 {
            self.metrics.gap_fills.inc();
            self.fill_delivered = 0;
        }
        self.filling = false;
        if let Some(message) = self.stashed.take() {
            self.on_live(message, ctx);
        }
    }

    /// Periodic work: prune closed sessions, heartbeats, pending gap fills, idle retirement.
    fn sweep(&mut self, ctx: &mut Context<Self>) {
        let now = Instant::now();
        let heartbeat = self.config.heartbeat;
        let beat = sse::heartbeat();
        let mut dead = Vec::new();
        for (id, session) in &self.sessions {
            if session.outbox.closed().is_some() {
                dead.push(*id);
                continue;
            }
            self.metrics
                .session_queue_bytes
                .observe(session.outbox.queued_bytes() as f64);
            if session.outbox.idle_for(now) >= heartbeat
                && self.push(&session.outbox, beat.clone()) != PushResult::Queued
            {
                dead.push(*id);
            }
        }
        for id in dead {
            self.sessions.remove(&id);
        }
        self.take_lost_signal();
        if !self.filling && self.gap_signalled() {
            self.fill_gap(None, ctx);
        }
        self.check_idle(now);
    }

    fn check_idle(&mut self, now: Instant) {
        if !self.sessions.is_empty() {
            self.empty_since = None;
            return;
        }
        let since = *self.empty_since.get_or_insert(now);
        if !self.retiring && now.duration_since(since) >= self.config.supervisor_idle {
            self.retiring = true;
            self.links.registry.do_send(SupervisorIdle {
                key: self.links.key.clone(),
                generation: self.links.generation,
            });
        }
    }

    fn sweep_period(&self) -> Duration {
        (self.config.heartbeat / 3).clamp(Duration::from_millis(50), Duration::from_secs(1))
    }

    /// Hands the ring's events after `after` to a joining session, if they fit in its
    /// queue; returns how many, or `None` when they do not fit (the session reads them from
    /// the stream as its client drains, then asks again).
    fn hand_over(&self, join: &Join, after: Cursor) -> Option<usize> {
        let wanted = || {
            self.ring
                .after(after)
                .filter(|e| join.filter.matches(e.event_name()))
        };
        let bytes: usize = wanted().map(|e| e.size()).sum();
        if bytes > join.outbox.room() {
            return None;
        }
        let mut handed_over = 0;
        for event in wanted() {
            join.outbox.push_unbounded(event.frame(join.format));
            handed_over += 1;
        }
        Some(handed_over)
    }

    fn connected_frame(&self, join: &Join, replayed: usize, position: Cursor) -> Bytes {
        let backend = self.broker.kind().as_str();
        let healthy = self.broker.health() == BackendHealth::Ready;
        sse::connected(
            join.format,
            &Connected {
                org_id: self.topic.envelope_org(),
                backend,
                healthy,
                replayed,
                cursor: (position != Cursor::default()).then_some(position),
                last_event_id: join.last_event_id.as_deref(),
                replay_error: join.replay_error,
            },
        )
    }
}

impl Actor for TopicSupervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(1024);
        self.subscribe(ctx);
        let period = self.sweep_period();
        ctx.run_interval(period, |act, ctx| act.sweep(ctx));
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        if let Some(id) = self.sink_id.take() {
            self.broker.unsubscribe(&self.topic, id);
        }
        for session in self.sessions.values() {
            session.outbox.close(CloseReason::Shutdown, None);
        }
        debug!(topic = %self.topic, "supervisor stopped");
    }
}

impl StreamHandler<LiveMessage> for TopicSupervisor {
    fn handle(&mut self, message: LiveMessage, ctx: &mut Self::Context) {
        self.take_lost_signal();
        if self.filling || self.gap_signalled() {
            self.fill_gap(Some(message), ctx);
        } else {
            self.on_live(message, ctx);
        }
    }

    fn finished(&mut self, _ctx: &mut Self::Context) {
        // The broker dropped our sink; the sweep keeps serving heartbeats until stopped.
    }
}

impl Handler<Join> for TopicSupervisor {
    type Result = MessageResult<Join>;

    fn handle(&mut self, join: Join, ctx: &mut Self::Context) -> Self::Result {
        if join.outbox.closed().is_some() {
            return MessageResult(JoinOutcome::Closed);
        }
        if self.draining {
            join.outbox.close(CloseReason::Shutdown, None);
            return MessageResult(JoinOutcome::Closed);
        }
        if self.retiring {
            return MessageResult(JoinOutcome::Retry);
        }
        let ring = RingSpan {
            floor: self.ring.floor,
            last: self.last,
        };
        let request = JoinRequest {
            after: join.after,
            unverified: join.unverified,
            in_ring: join.after.is_some_and(|after| self.ring.contains(after)),
        };
        let oldest_ms = now_ms().saturating_sub(self.config.window_ms());
        let (skip_through, handed_over) = match plan_join(ring, request, oldest_ms) {
            JoinPlan::Behind => return MessageResult(JoinOutcome::Behind),
            JoinPlan::Live { skip_through } => (skip_through, 0),
            JoinPlan::HandOver { after } => match self.hand_over(&join, after) {
                Some(handed_over) => (None, handed_over),
                None => return MessageResult(JoinOutcome::ReadMore),
            },
        };
        let position = skip_through.unwrap_or(self.last).max(self.last);
        let connected = self.connected_frame(&join, join.replayed + handed_over, position);
        join.outbox.push_unbounded(connected);
        self.empty_since = None;
        self.sessions.insert(
            join.session_id,
            SessionEntry {
                outbox: join.outbox,
                filter: join.filter,
                format: join.format,
                skip_through,
                read_through: join.after,
            },
        );
        MessageResult(JoinOutcome::Joined {
            handed_over,
            leave: ctx.address().recipient(),
        })
    }
}

impl Handler<Leave> for TopicSupervisor {
    type Result = ();

    fn handle(&mut self, leave: Leave, _ctx: &mut Self::Context) {
        self.sessions.remove(&leave.session_id);
    }
}

impl Handler<Shutdown> for TopicSupervisor {
    type Result = ();

    fn handle(&mut self, _: Shutdown, _ctx: &mut Self::Context) {
        self.draining = true;
        for session in self.sessions.values() {
            session.outbox.close(CloseReason::Shutdown, None);
        }
        self.sessions.clear();
    }
}

impl Handler<StopSupervisor> for TopicSupervisor {
    type Result = ();

    fn handle(&mut self, _: StopSupervisor, ctx: &mut Self::Context) {
        ctx.stop();
    }
}
