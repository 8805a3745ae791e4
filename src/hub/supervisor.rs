//! One actor per active topic: owns the broker subscription, the sessions and the ring.
//!
//! Everything that touches the order of events for a topic happens here, one message at a
//! time: live fan-out, session joins, gap fills. That serialization is what makes the
//! replay-to-live handoff exact (see `Join`).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::Bytes;
use futures_util::stream;
use tracing::{debug, info, warn};

use super::Hub;
use super::messages::{
    Join, JoinOutcome, Leave, Shutdown, StopSupervisor, StreamFormat, SupervisorIdle,
};
use super::outbox::{CloseReason, Outbox, PushResult};
use super::session::{connected_frame, encode_event, encode_event_with_id, resync_frame};
use crate::broker::{Broker, LiveMessage, LiveSink, SinkFlags};
use crate::config::Config;
use crate::envelope::{Cursor, StoredEvent, Topic, frame, now_ms};
use crate::filter::EventFilter;
use crate::metrics::Metrics;

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

struct RingEntry {
    event: Arc<StoredEvent>,
    frame: Bytes,
}

/// The supervisor of one topic.
pub struct OrgSupervisor {
    topic: Topic,
    broker: Arc<dyn Broker>,
    hub: Addr<Hub>,
    config: Arc<Config>,
    sessions: HashMap<u64, SessionEntry>,
    /// Cursor of the newest event fanned out (or the stream's head when subscribing).
    last: Cursor,
    /// The ring holds every event in `(ring_floor, last]`.
    ring_floor: Cursor,
    ring: VecDeque<RingEntry>,
    ring_bytes: usize,
    flags: Arc<SinkFlags>,
    sink_id: Option<u64>,
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

/// Offers a frame to a session's bounded queue, counting a slow disconnect on overflow.
fn push_counted(outbox: &Outbox, bytes: Bytes, retry: &Bytes, metrics: &Metrics) -> PushResult {
    let result = outbox.push(bytes, || retry.clone());
    if result == PushResult::Overflow {
        metrics.slow_disconnects.inc();
    }
    result
}

impl OrgSupervisor {
    /// A supervisor for `topic`; it subscribes when started and records into `metrics`.
    pub fn new(
        topic: Topic,
        broker: Arc<dyn Broker>,
        hub: Addr<Hub>,
        config: Arc<Config>,
        metrics: Metrics,
    ) -> Self {
        let retry_frame = frame::retry(config.retry_ms);
        Self {
            topic,
            broker,
            hub,
            config,
            sessions: HashMap::new(),
            last: Cursor::default(),
            ring_floor: Cursor::default(),
            ring: VecDeque::new(),
            ring_bytes: 0,
            flags: Arc::new(SinkFlags::default()),
            sink_id: None,
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
        let (sink, mut rx, flags) = LiveSink::channel(LIVE_INBOX_CAPACITY);
        self.flags = flags;
        self.sink_id = Some(sink.id());
        ctx.add_stream(stream::poll_fn(move |cx| rx.poll_recv(cx)));
        let subscribe = self.broker.subscribe(self.topic.clone(), sink);
        ctx.wait(subscribe.into_actor(self).map(|result, act, _ctx| match result {
            Ok(head) => {
                act.last = head.unwrap_or_default();
                act.ring_floor = act.last;
                debug!(topic = %act.topic, head = %act.last, "supervisor subscribed");
            }
            Err(error) => {
                // Live events may have been missed: fill from the stream once it works.
                warn!(topic = %act.topic, %error, "subscribe failed; will fill from the stream");
                act.flags.gap.store(true, Ordering::SeqCst);
            }
        }));
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
        let v1_frame = self.fan_out(
            &event,
            cursor,
            |session| !matches!((session.skip_through, cursor), (Some(skip), Some(c)) if c <= skip),
        );
        if let Some(cursor) = cursor {
            self.last = cursor;
            self.ring_bytes += v1_frame.len();
            self.ring.push_back(RingEntry {
                event,
                frame: v1_frame,
            });
            while self.ring.len() > RING_MAX_EVENTS || self.ring_bytes > RING_MAX_BYTES {
                let Some(old) = self.ring.pop_front() else {
                    break;
                };
                self.ring_bytes -= old.frame.len();
                if let Some(c) = old.event.cursor() {
                    self.ring_floor = c;
                }
            }
        }
        true
    }

    /// A live event older than one already fanned out: producers that XADD and PUBLISH in
    /// two steps (DashClaw's Node app) can publish out of stream order. If it was never
    /// delivered it goes out now, without an `id:` line, so clients keep the newer cursor as
    /// their `Last-Event-ID` and a resume neither repeats nor skips anything.
    fn deliver_late(&mut self, event: Arc<StoredEvent>, cursor: Cursor) {
        let in_ring = self
            .ring
            .binary_search_by(|e| e.event.cursor().cmp(&Some(cursor)))
            .is_ok();
        if cursor <= self.ring_floor || in_ring || self.late.contains(&cursor) {
            return;
        }
        self.late.push_back(cursor);
        if self.late.len() > RING_MAX_EVENTS {
            self.late.pop_front();
        }
        debug!(topic = %self.topic, %cursor, last = %self.last, "late event delivered out of order");
        // A session whose replay read past this cursor already has the event.
        self.fan_out(&event, None, |session| {
            session.read_through.is_none_or(|read| cursor > read)
        });
    }

    /// Writes one event to every session that `wants` it and whose filter matches, encoding
    /// each wire format at most once; prunes closed and overflowing sessions. Returns the v1
    /// frame (for the ring).
    fn fan_out(
        &mut self,
        event: &StoredEvent,
        id_line: Option<Cursor>,
        wants: impl Fn(&SessionEntry) -> bool,
    ) -> Bytes {
        let v1_frame = encode_event_with_id(event, StreamFormat::V1, id_line);
        let mut legacy_frame: Option<Bytes> = None;
        let mut queued = 0u64;
        let mut dead = Vec::new();
        for (id, session) in &self.sessions {
            if !wants(session) || !session.filter.matches(&event.envelope.event) {
                continue;
            }
            let bytes = match session.format {
                StreamFormat::V1 => v1_frame.clone(),
                StreamFormat::Legacy => legacy_frame
                    .get_or_insert_with(|| {
                        encode_event_with_id(event, StreamFormat::Legacy, id_line)
                    })
                    .clone(),
            };
            match push_counted(&session.outbox, bytes, &self.retry_frame, &self.metrics) {
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
        if queued > 0 {
            // Once per event, not per session: the hot path stays one atomic add.
            self.metrics.events_delivered.inc_by(queued);
            let lag_ms = now_ms().saturating_sub(event.published_ms);
            self.metrics.delivery_lag.observe(lag_ms as f64 / 1000.0);
        }
        v1_frame
    }

    fn on_live(&mut self, message: LiveMessage, ctx: &mut Context<Self>) {
        match message {
            LiveMessage::Event(event) => match event.cursor() {
                Some(cursor) if cursor <= self.last => self.deliver_late(event, cursor),
                _ => {
                    self.deliver(event);
                }
            },
            LiveMessage::Gap => {
                self.flags.gap.store(true, Ordering::SeqCst);
                self.fill_gap(None, ctx);
            }
            LiveMessage::DataLost => self.resync_all(),
        }
    }

    /// A data-loss signal that found the inbox full is handled before anything else.
    fn take_lost_flag(&mut self) {
        if self.flags.lost.swap(false, Ordering::SeqCst) {
            self.resync_all();
        }
    }

    /// The stream lost its data: every session is told to resync and continues live.
    fn resync_all(&mut self) {
        warn!(topic = %self.topic, last = %self.last, "stream data lost; sending realtime.resync");
        let resync = resync_frame("unknown", &self.last.to_string());
        let mut sent = 0u64;
        for session in self.sessions.values_mut() {
            let pushed = push_counted(
                &session.outbox,
                resync.clone(),
                &self.retry_frame,
                &self.metrics,
            );
            if pushed == PushResult::Queued {
                sent += 1;
            }
            session.skip_through = None;
        }
        self.metrics.resyncs.inc_by(sent);
        self.last = Cursor::default();
        self.ring.clear();
        self.ring_bytes = 0;
        self.ring_floor = Cursor::default();
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
        self.flags.gap.store(false, Ordering::SeqCst);
        self.fill_page(ctx);
    }

    fn fill_page(&mut self, ctx: &mut Context<Self>) {
        let page_size = self.config.replay_page_size;
        let read = self
            .broker
            .read_after(self.topic.clone(), self.last, page_size);
        ctx.wait(read.into_actor(self).map(move |result, act, ctx| match result {
            Ok(events) => {
                let full = events.len() == page_size;
                if !events.is_empty() {
                    debug!(topic = %act.topic, count = events.len(), "gap filled from stream");
                }
                for event in events {
                    if act.deliver(event) {
                        act.fill_delivered += 1;
                    }
                }
                if full {
                    act.fill_page(ctx);
                } else {
                    // A fill that failed part-way is completed by a later one: counted then.
                    if act.fill_delivered > 0 {
                        act.metrics.gap_fills.inc();
                        act.fill_delivered = 0;
                    }
                    act.filling = false;
                    if let Some(message) = act.stashed.take() {
                        act.on_live(message, ctx);
                    }
                }
            }
            Err(error) => {
                warn!(topic = %act.topic, %error, "gap fill failed; retrying on the next sweep");
                act.filling = false;
                act.flags.gap.store(true, Ordering::SeqCst);
            }
        }));
    }

    /// Periodic work: prune closed sessions, heartbeats, pending gap fills, idle retirement.
    fn sweep(&mut self, ctx: &mut Context<Self>) {
        let now = Instant::now();
        let heartbeat = self.config.heartbeat;
        let mut dead = Vec::new();
        let beat = Bytes::from_static(frame::HEARTBEAT);
        for (id, session) in &self.sessions {
            if session.outbox.closed().is_some() {
                dead.push(*id);
                continue;
            }
            self.metrics
                .session_queue_bytes
                .observe(session.outbox.queued_bytes() as f64);
            if session.outbox.idle_for(now) >= heartbeat {
                let pushed = push_counted(
                    &session.outbox,
                    beat.clone(),
                    &self.retry_frame,
                    &self.metrics,
                );
                if pushed != PushResult::Queued {
                    dead.push(*id);
                }
            }
        }
        for id in dead {
            self.sessions.remove(&id);
        }
        self.take_lost_flag();
        if !self.filling && self.flags.gap.load(Ordering::SeqCst) {
            self.fill_gap(None, ctx);
        }
        self.check_idle(now, ctx);
    }

    fn check_idle(&mut self, now: Instant, ctx: &mut Context<Self>) {
        if !self.sessions.is_empty() {
            self.empty_since = None;
            return;
        }
        let since = *self.empty_since.get_or_insert(now);
        if !self.retiring && now.duration_since(since) >= self.config.supervisor_idle {
            self.retiring = true;
            self.hub.do_send(SupervisorIdle {
                topic: self.topic.clone(),
                addr: ctx.address(),
            });
        }
    }

    fn add_session(&mut self, join: &Join, skip_through: Option<Cursor>) {
        self.empty_since = None;
        self.sessions.insert(
            join.session_id,
            SessionEntry {
                outbox: join.outbox.clone(),
                filter: join.filter.clone(),
                format: join.format,
                skip_through,
                read_through: join.after,
            },
        );
    }

    fn sweep_period(&self) -> Duration {
        (self.config.heartbeat / 3).clamp(Duration::from_millis(50), Duration::from_secs(1))
    }
}

impl Actor for OrgSupervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(1024);
        self.metrics.orgs_active.inc();
        self.subscribe(ctx);
        let period = self.sweep_period();
        ctx.run_interval(period, |act, ctx| act.sweep(ctx));
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        self.metrics.orgs_active.dec();
        if let Some(id) = self.sink_id.take() {
            self.broker.unsubscribe(&self.topic, id);
        }
        for session in self.sessions.values() {
            session.outbox.close(CloseReason::Shutdown, None);
        }
        debug!(topic = %self.topic, "supervisor stopped");
    }
}

impl StreamHandler<LiveMessage> for OrgSupervisor {
    fn handle(&mut self, message: LiveMessage, ctx: &mut Self::Context) {
        self.take_lost_flag();
        if self.filling || self.flags.gap.load(Ordering::SeqCst) {
            self.fill_gap(Some(message), ctx);
        } else {
            self.on_live(message, ctx);
        }
    }

    fn finished(&mut self, _ctx: &mut Self::Context) {
        // The broker dropped our sink; the sweep keeps serving heartbeats until stopped.
    }
}

impl OrgSupervisor {
    /// Whether a client's cursor can be served from the ring alone: it lies in
    /// `[ring_floor, last]`, so it is neither newer than the stream nor trimmed, and it is
    /// inside the replay window (the stream path would call an older one expired).
    fn ring_proves(&self, after: Option<Cursor>) -> bool {
        let Some(after) = after else {
            return false;
        };
        let oldest_ms = now_ms().saturating_sub(self.config.window_ms());
        self.last != Cursor::default()
            && after >= self.ring_floor
            && after <= self.last
            && after.ms >= oldest_ms
    }
}

impl Handler<Join> for OrgSupervisor {
    type Result = MessageResult<Join>;

    fn handle(&mut self, join: Join, _ctx: &mut Self::Context) -> Self::Result {
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
        if join.unverified && !self.ring_proves(join.after) {
            return MessageResult(JoinOutcome::Behind);
        }
        let mut handed_over = 0usize;
        let skip_through = match join.after {
            None => None,
            Some(after) if after >= self.last => Some(after),
            Some(after) if after >= self.ring_floor => {
                for entry in self.ring.iter().filter(|e| e.event.cursor() > Some(after)) {
                    if !join.filter.matches(&entry.event.envelope.event) {
                        continue;
                    }
                    let bytes = match join.format {
                        StreamFormat::V1 => entry.frame.clone(),
                        StreamFormat::Legacy => encode_event(&entry.event, StreamFormat::Legacy),
                    };
                    join.outbox.push_unbounded(bytes);
                    handed_over += 1;
                }
                // The ring hands over what the stream pages did not reach: still replay.
                self.metrics.replayed_events.inc_by(handed_over as u64);
                self.metrics.events_delivered.inc_by(handed_over as u64);
                None
            }
            Some(_) => return MessageResult(JoinOutcome::Behind),
        };
        let position = skip_through.unwrap_or(self.last).max(self.last);
        let connected = connected_frame(
            join.format,
            &self.topic,
            self.broker.as_ref(),
            join.replayed + handed_over,
            (position != Cursor::default()).then_some(position),
        );
        join.outbox.push_unbounded(connected);
        self.add_session(&join, skip_through);
        MessageResult(JoinOutcome::Joined)
    }
}

impl Handler<Leave> for OrgSupervisor {
    type Result = ();

    fn handle(&mut self, leave: Leave, _ctx: &mut Self::Context) {
        self.sessions.remove(&leave.session_id);
    }
}

impl Handler<Shutdown> for OrgSupervisor {
    type Result = ();

    fn handle(&mut self, _: Shutdown, _ctx: &mut Self::Context) {
        self.draining = true;
        for session in self.sessions.values() {
            session.outbox.close(CloseReason::Shutdown, None);
        }
        self.sessions.clear();
    }
}

impl Handler<StopSupervisor> for OrgSupervisor {
    type Result = ();

    fn handle(&mut self, _: StopSupervisor, ctx: &mut Self::Context) {
        ctx.stop();
    }
}
