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
use super::session::{connected_frame, encode_event, resync_frame};
use crate::broker::{Broker, LiveMessage, LiveSink, SinkFlags};
use crate::config::Config;
use crate::envelope::{Cursor, StoredEvent, Topic, frame};
use crate::filter::EventFilter;

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
    draining: bool,
    retry_frame: Bytes,
}

impl OrgSupervisor {
    /// A supervisor for `topic`; it subscribes when started.
    pub fn new(topic: Topic, broker: Arc<dyn Broker>, hub: Addr<Hub>, config: Arc<Config>) -> Self {
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
            draining: false,
            retry_frame,
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

    /// Writes one live event to every interested session, once, in cursor order.
    fn deliver(&mut self, event: Arc<StoredEvent>) {
        let cursor = event.cursor();
        if let Some(cursor) = cursor
            && cursor <= self.last
        {
            return;
        }
        let v1_frame = encode_event(&event, StreamFormat::V1);
        let mut legacy_frame: Option<Bytes> = None;
        let mut dead = Vec::new();
        for (id, session) in &self.sessions {
            if let (Some(skip), Some(cursor)) = (session.skip_through, cursor)
                && cursor <= skip
            {
                continue;
            }
            if !session.filter.matches(&event.envelope.event) {
                continue;
            }
            let bytes = match session.format {
                StreamFormat::V1 => v1_frame.clone(),
                StreamFormat::Legacy => legacy_frame
                    .get_or_insert_with(|| encode_event(&event, StreamFormat::Legacy))
                    .clone(),
            };
            let retry = &self.retry_frame;
            match session.outbox.push(bytes, || retry.clone()) {
                PushResult::Queued => {}
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
    }

    fn on_live(&mut self, message: LiveMessage, ctx: &mut Context<Self>) {
        match message {
            LiveMessage::Event(event) => self.deliver(event),
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
        for session in self.sessions.values_mut() {
            let retry = &self.retry_frame;
            let _ = session.outbox.push(resync.clone(), || retry.clone());
            session.skip_through = None;
        }
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
                    act.deliver(event);
                }
                if full {
                    act.fill_page(ctx);
                } else {
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
            } else if session.outbox.idle_for(now) >= heartbeat {
                let retry = &self.retry_frame;
                if session.outbox.push(beat.clone(), || retry.clone()) != PushResult::Queued {
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
