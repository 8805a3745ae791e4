//! Brokers carry events between producers and org supervisors and keep the replay window.
//!
//! The actors only see the [`Broker`] trait, so the memory and Redis backends are
//! interchangeable by one setting.

pub mod memory;
pub mod redis;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::sync::mpsc;

use crate::config::BackendKind;
use crate::envelope::{Cursor, NewEvent, ResumePosition, StoredEvent, Topic};
pub use crate::recovery::{Loss, Resolution};

pub use self::memory::MemoryBroker;
pub use self::redis::RedisBroker;

/// A boxed, sendable future, so the trait stays object-safe.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Why a broker call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BrokerError {
    /// The backend cannot be reached or is not ready; the caller may retry.
    #[error("backend unavailable: {0}")]
    Unavailable(String),
    /// The backend answered something the hub cannot use.
    #[error("backend error: {0}")]
    Protocol(String),
    /// Stored, but fewer replicas than asked (`REALTIME_REDIS_WAIT_REPLICAS`) confirmed the
    /// write in time, so it may not survive a failover; the caller retries with the same
    /// ids, which answers the stored events once they are replicated.
    #[error(
        "backend unavailable: stored at {cursors} on the shard's master, but {acked} of \
         {wanted} replicas confirmed it within {timeout_ms} ms; retry with the same id"
    )]
    NotReplicated {
        /// The cursors the master assigned (or found for duplicates), comma-separated.
        cursors: String,
        /// Replicas that confirmed.
        acked: i64,
        /// Replicas asked for.
        wanted: usize,
        /// How long the master waited.
        timeout_ms: u64,
    },
}

/// The result of publishing one event.
#[derive(Debug, Clone)]
pub enum PublishOutcome {
    /// Newly stored and fanned out.
    Stored(Arc<StoredEvent>),
    /// An event with the same id is already inside the window: this is that first event.
    Duplicate(Arc<StoredEvent>),
}

impl PublishOutcome {
    /// The stored event, new or first.
    pub fn event(&self) -> &Arc<StoredEvent> {
        match self {
            Self::Stored(e) | Self::Duplicate(e) => e,
        }
    }

    /// True when the event was already stored before this call.
    pub fn is_duplicate(&self) -> bool {
        matches!(self, Self::Duplicate(_))
    }
}

/// One read of a stream: events strictly after a cursor, oldest first, and whether events
/// after that cursor were removed before the read (so the reader must tell its clients).
#[derive(Debug, Clone, Default)]
pub struct Page {
    /// The events read.
    pub events: Vec<Arc<StoredEvent>>,
    /// Events after the read's cursor are gone: trimmed by time or length, or evicted by a
    /// memory cap ([`Loss::Trimmed`]), or lost from the stream's newest end
    /// ([`Loss::Tail`]). Redis keeps no record of which entries a length trim removed, so
    /// there a trim is also reported when the cursor itself was the newest entry trimmed;
    /// it is never `None` when events after the cursor are gone.
    pub lost: Option<Loss>,
    /// The read returned as many events as it asked for: more may follow.
    pub full: bool,
}

/// What a broker hands a subscribed supervisor.
#[derive(Debug, Clone)]
pub enum LiveMessage {
    /// A live event of the topic.
    Event(Arc<StoredEvent>),
    /// Delivery was interrupted (e.g. resubscribed): read the stream after the last cursor.
    Gap,
    /// The stream's data is gone (e.g. Redis restarted empty): clients must resync.
    DataLost,
}

static NEXT_SINK_ID: AtomicU64 = AtomicU64::new(1);

/// Signals that must not be lost when a sink's inbox is full: set by the broker's side
/// ([`LiveSink`]), taken by the supervisor's side ([`InboxSignals`]).
#[derive(Debug, Default)]
struct Signals {
    gap: AtomicBool,
    lost: AtomicBool,
}

/// The broker's end of a supervisor's bounded inbox for live events; overflow is recorded,
/// never buffered.
#[derive(Debug, Clone)]
pub struct LiveSink {
    id: u64,
    tx: mpsc::Sender<LiveMessage>,
    signals: Arc<Signals>,
}

/// The supervisor's end of its inbox: the messages, and the signals that overflowed.
#[derive(Debug)]
pub struct LiveInbox {
    /// Live messages in arrival order.
    pub messages: mpsc::Receiver<LiveMessage>,
    /// Gap and data-loss signals raised while the inbox was full.
    pub signals: InboxSignals,
}

/// Gap and data-loss signals a supervisor takes from its inbox.
#[derive(Debug)]
pub struct InboxSignals(Arc<Signals>);

impl InboxSignals {
    /// True (once) when live events were dropped or delivery was interrupted: read the
    /// stream after the last cursor before trusting live delivery again.
    pub fn take_gap(&self) -> bool {
        self.0.gap.swap(false, Ordering::SeqCst)
    }

    /// True while a gap is signalled and not yet taken.
    pub fn has_gap(&self) -> bool {
        self.0.gap.load(Ordering::SeqCst)
    }

    /// True (once) when the stream's data is gone: clients must resync.
    pub fn take_lost(&self) -> bool {
        self.0.lost.swap(false, Ordering::SeqCst)
    }
}

/// A supervisor's inbox with room for `capacity` messages: the broker's end and its own.
pub fn live_channel(capacity: usize) -> (LiveSink, LiveInbox) {
    let (tx, messages) = mpsc::channel(capacity);
    let signals = Arc::new(Signals::default());
    let sink = LiveSink {
        id: NEXT_SINK_ID.fetch_add(1, Ordering::Relaxed),
        tx,
        signals: signals.clone(),
    };
    let inbox = LiveInbox {
        messages,
        signals: InboxSignals(signals),
    };
    (sink, inbox)
}

impl LiveSink {
    /// Identity used to unsubscribe.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Offers a message without waiting; a full inbox marks a gap the supervisor fills
    /// from the stream, so a burst costs a stream read instead of unbounded memory.
    pub fn offer(&self, message: LiveMessage) {
        let lost = matches!(message, LiveMessage::DataLost);
        if let Err(mpsc::error::TrySendError::Full(_)) = self.tx.try_send(message) {
            if lost {
                self.signals.lost.store(true, Ordering::SeqCst);
            }
            self.signals.gap.store(true, Ordering::SeqCst);
        }
    }

    /// Asks the supervisor to fill from the stream before trusting live delivery.
    pub fn mark_gap(&self) {
        self.signals.gap.store(true, Ordering::SeqCst);
    }

    /// True when the receiving supervisor is gone.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// Whether the backend can currently publish and deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendHealth {
    /// Usable.
    Ready,
    /// Not usable, with a reason for `/readyz`.
    Unavailable(String),
}

/// Pub/sub plus a bounded replay stream per topic.
pub trait Broker: Send + Sync + 'static {
    /// Which backend this is.
    fn kind(&self) -> BackendKind;

    /// Stores and fans out a batch atomically: all stored, or none (error).
    fn publish(
        &self,
        topic: Topic,
        events: Vec<NewEvent>,
    ) -> BoxFuture<Result<Vec<PublishOutcome>, BrokerError>>;

    /// Starts delivering the topic's live events to `sink`; returns the newest cursor
    /// of the stream at that moment, so the caller knows where live delivery begins.
    fn subscribe(
        &self,
        topic: Topic,
        sink: LiveSink,
    ) -> BoxFuture<Result<Option<Cursor>, BrokerError>>;

    /// Stops delivering to the sink with this id.
    fn unsubscribe(&self, topic: &Topic, sink_id: u64);

    /// Finds where a client's resume position is in the topic's stream.
    fn resolve(
        &self,
        topic: Topic,
        position: ResumePosition,
    ) -> BoxFuture<Result<Resolution, BrokerError>>;

    /// Up to `limit` events strictly after `after`, oldest first, within the window, and
    /// whether events after `after` were lost (`after` = the default cursor: from the start).
    fn read_after(
        &self,
        topic: Topic,
        after: Cursor,
        limit: usize,
    ) -> BoxFuture<Result<Page, BrokerError>>;

    /// Current health, cheap to call.
    fn health(&self) -> BackendHealth;
}
