//! The hub: a registry of topic supervisors, the stream reader, sessions, and the producer
//! API ([`HubHandle`]).
//!
//! ```text
//! Publish ─► Registry ─► Broker ─► LiveSink ─► TopicSupervisor ─► Outbox ─► SessionBody ─► socket
//!                ▲ Join (handed to the topic's supervisor)    ▲ ReadPage (gap fill)
//!     ClientSession ──── ResolvePosition / ReadPage ────► StreamReader
//! ```
//!
//! - [`registry`]: the `Registry` actor (supervisors by topic, publishes, shutdown flag);
//! - [`supervisor`]: `TopicSupervisor`, one per active topic (an org or the ops channel);
//! - [`session`]: `ClientSession`, one per connection (replay, then join);
//! - [`stream_reader`]: `StreamReader`, every read of the streams, identical reads shared;
//! - [`page_cache`]: recent pages, so replays from nearby positions cost no read;
//! - [`messages`]: the messages between them;
//! - [`outbox`], [`body`]: a connection's bounded queue and the HTTP body draining it;
//! - [`connections`]: open streams against the limits;
//! - [`lifetime`]: a stream's deadline and re-check (its credential's expiry, revocation)
//!   and its maximum age;
//! - [`drain`]: the paced drain of a stopping instance;
//! - [`pacing`]: the pace at which new streams are admitted;
//! - [`jitter`]: random spreads of ages and delays.

pub mod body;
pub mod connections;
pub mod drain;
pub mod error;
pub mod jitter;
pub mod lifetime;
pub mod messages;
pub mod outbox;
pub mod pacing;
pub mod page_cache;
pub mod registry;
pub mod session;
pub mod stream_reader;
pub mod supervisor;

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use actix::prelude::*;
use tracing::info_span;

use crate::broker::{BackendHealth, Broker, BrokerError, PublishOutcome};
use crate::config::{BackendKind, Config};
use crate::envelope::{PublishRequest, ResumePosition, Topic};
use crate::metrics::Metrics;
use crate::sse;

pub use body::SessionBody;
pub use connections::{ConnectionCounter, Refusal};
pub use drain::{DrainPlan, Lifecycle, LifecycleState, OpenStreams};
pub use error::{HubError, MAX_BATCH};
pub use lifetime::{Lifetime, Recheck, RecheckFuture};
pub use messages::{EndStream, Publish, PublishFrom, PublishSource, Shutdown};
pub use outbox::{CloseReason, Outbox};
pub use pacing::AcceptPacer;
pub use registry::{Registry, ShutdownFlag};
pub use session::{ClientSession, SessionSpec};
pub use stream_reader::StreamReader;
pub use supervisor::TopicSupervisor;

use session::{SessionContext, SessionLinks};

/// A cheap-clone handle to a running hub: the in-process API.
#[derive(Clone)]
pub struct HubHandle {
    registry: Addr<Registry>,
    session_links: SessionLinks,
    broker: Arc<dyn Broker>,
    config: Arc<Config>,
    connections: Arc<ConnectionCounter>,
    shutdown: ShutdownFlag,
    lifecycle: LifecycleState,
    streams: Arc<OpenStreams>,
    pacer: Arc<AcceptPacer>,
    next_session: Arc<AtomicU64>,
    /// This hub's number in the process, and the next worker number it hands out.
    id: u64,
    next_worker: Arc<AtomicUsize>,
    metrics: Metrics,
}

/// Hubs started in this process, so a worker thread's number is read only by its own hub.
static NEXT_HUB: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// On an HTTP worker thread: its hub and its worker number.
    static WORKER: Cell<Option<(u64, usize)>> = const { Cell::new(None) };
}

impl HubHandle {
    /// Starts the hub's actors on the current actix system; they record into `metrics`.
    pub fn start(config: Config, broker: Arc<dyn Broker>, metrics: Metrics) -> Self {
        let config = Arc::new(config);
        let threads = std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .clamp(1, 8);
        let arbiters: Vec<ArbiterHandle> = (0..threads).map(|_| Arbiter::new().handle()).collect();
        let (reader_broker, window_ms, reader_metrics) =
            (broker.clone(), config.window_ms(), metrics.clone());
        let reader = StreamReader::start_in_arbiter(&arbiters[0], move |_| {
            StreamReader::new(reader_broker, window_ms, reader_metrics)
        });
        let shutdown = ShutdownFlag::default();
        let registry = Registry::new(
            broker.clone(),
            config.clone(),
            reader.clone().recipient(),
            arbiters,
            shutdown.clone(),
            metrics.clone(),
        )
        .start();
        let connections = Arc::new(ConnectionCounter::new(
            config.max_connections,
            config.per_org_limit(),
            metrics.clone(),
        ));
        let session_links = SessionLinks {
            join: registry.clone().recipient(),
            resolve: reader.clone().recipient(),
            read: reader.recipient(),
        };
        let pacer = Arc::new(AcceptPacer::new(
            config.max_new_streams_per_second,
            metrics.clone(),
        ));
        Self {
            registry,
            session_links,
            broker,
            config,
            connections,
            shutdown,
            lifecycle: LifecycleState::default(),
            streams: Arc::new(OpenStreams::default()),
            pacer,
            next_session: Arc::new(AtomicU64::new(1)),
            id: NEXT_HUB.fetch_add(1, Ordering::Relaxed),
            next_worker: Arc::new(AtomicUsize::new(0)),
            metrics,
        }
    }

    /// The registry actor's address, for sending [`Publish`] directly.
    pub fn addr(&self) -> Addr<Registry> {
        self.registry.clone()
    }

    /// Publishes events to a topic and returns what was stored (or the first copy).
    pub async fn publish(
        &self,
        topic: Topic,
        requests: Vec<PublishRequest>,
    ) -> Result<Vec<PublishOutcome>, HubError> {
        self.publish_from(topic, requests, PublishSource::InProcess)
            .await
    }

    /// [`Self::publish`], counted under the given source in the metrics.
    pub async fn publish_from(
        &self,
        topic: Topic,
        requests: Vec<PublishRequest>,
        source: PublishSource,
    ) -> Result<Vec<PublishOutcome>, HubError> {
        self.registry
            .send(PublishFrom {
                publish: Publish { topic, requests },
                source,
            })
            .await
            .map_err(|_| HubError::ShuttingDown)?
    }

    /// Publishes one event.
    pub async fn publish_one(
        &self,
        topic: Topic,
        request: PublishRequest,
    ) -> Result<PublishOutcome, HubError> {
        let mut outcomes = self.publish(topic, vec![request]).await?;
        outcomes
            .pop()
            .ok_or_else(|| HubError::Backend(BrokerError::Protocol("empty publish result".into())))
    }

    /// Offers the current thread's arbiter (an HTTP worker's) for placing supervisors, and
    /// numbers the worker, so the streams it opens join supervisors on this thread.
    pub fn register_worker_arbiter(&self) {
        let worker = self.next_worker.fetch_add(1, Ordering::Relaxed);
        WORKER.with(|w| w.set(Some((self.id, worker))));
        self.registry.do_send(messages::WorkerArbiter {
            worker,
            arbiter: Arbiter::current(),
        });
    }

    /// Opens a stream: paces and counts it, queues the `retry:` hint, gives it its maximum
    /// age, and starts its session.
    pub fn open_session(&self, mut spec: SessionSpec) -> Result<SessionBody, HubError> {
        if !self.accepts_streams() {
            self.connections.refused(Refusal::Shutdown);
            return Err(HubError::ShuttingDown);
        }
        self.pacer
            .admit()
            .map_err(|retry_after_secs| HubError::Paced {
                per_second: self.config.max_new_streams_per_second,
                retry_after_secs,
            })?;
        let permit = self.connections.acquire(&spec.topic)?;
        if let Some(age) = self.config.max_stream_age() {
            // Jittered, so streams opened together (after a restart) do not end together.
            spec.lifetime.max_age = Some(Instant::now() + jitter::around(age, 0.1));
        }
        let outbox = Outbox::new(self.config.session_queue_bytes);
        outbox.push_unbounded(sse::retry(self.config.retry_ms));
        let id = self.next_session.fetch_add(1, Ordering::Relaxed);
        // A child of the request's span (when opened over HTTP), so the session's lines
        // carry the request id too.
        let resume = spec
            .resume
            .as_ref()
            .map_or_else(|| "none".to_owned(), resume_for_log);
        let span =
            info_span!("session", org = %spec.topic.envelope_org(), session = id, resume = %resume);
        let hub = self.id;
        let worker = WORKER
            .with(Cell::get)
            .and_then(|(on, w)| (on == hub).then_some(w));
        let limits = SessionContext {
            page_size: self.config.replay_page_size,
            retry_ms: self.config.retry_ms,
            worker,
        };
        let session = ClientSession::new(
            id,
            spec,
            outbox.clone(),
            self.session_links.clone(),
            limits,
            self.metrics.clone(),
            span,
        )
        .start();
        let tracked = self.streams.track(id, session.clone().recipient());
        Ok(SessionBody::new(
            outbox,
            session.recipient(),
            permit,
            tracked,
        ))
    }

    /// Counts a stream refused before it reached the hub (by auth).
    pub fn refuse_stream(&self, refusal: Refusal) {
        self.connections.refused(refusal);
    }

    /// Ends every stream at once and refuses new streams and publishes.
    pub async fn shutdown(&self) {
        let _ = self.registry.send(Shutdown).await;
    }

    /// The paced drain (`REALTIME_DRAIN_DELAY_SECONDS`, then the open streams closed evenly
    /// over `REALTIME_SHUTDOWN_GRACE_SECONDS`, `stop_accepting` called in between), then
    /// [`Self::shutdown`] for whatever is left.
    pub async fn drain(&self, stop_accepting: impl FnOnce()) {
        let plan = DrainPlan {
            delay: self.config.drain_delay,
            grace: self.config.shutdown_grace,
            retry_ms: self.config.retry_ms,
        };
        drain::run(&self.lifecycle, &self.streams, plan, stop_accepting).await;
        self.shutdown().await;
    }

    /// True once shutdown began (from the signal on: `/readyz` answers 503).
    pub fn is_shutting_down(&self) -> bool {
        self.lifecycle.get() != Lifecycle::Serving || self.shutdown.is_set()
    }

    /// Whether new streams are accepted (until the drain starts closing).
    pub fn accepts_streams(&self) -> bool {
        self.lifecycle.get() < Lifecycle::Closing && !self.shutdown.is_set()
    }

    /// Where the instance is in its life.
    pub fn lifecycle(&self) -> Lifecycle {
        if self.shutdown.is_set() {
            Lifecycle::Closing
        } else {
            self.lifecycle.get()
        }
    }

    /// The backend's current health.
    pub fn health(&self) -> BackendHealth {
        self.broker.health()
    }

    /// Which backend carries events.
    pub fn backend(&self) -> BackendKind {
        self.broker.kind()
    }

    /// The hub's configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Open streams on this instance.
    pub fn open_connections(&self) -> usize {
        self.connections.open()
    }

    /// This hub's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }
}

/// A resume position for log lines: cursors and event ids as given; anything else is
/// client-chosen text that could hold a credential pasted in the wrong place, so only its
/// length is logged.
pub fn resume_for_log(position: &ResumePosition) -> String {
    match position {
        ResumePosition::Cursor(_) | ResumePosition::EventId(_) => position.as_text(),
        ResumePosition::Unrecognized(raw) => format!("<unrecognized, {} chars>", raw.len()),
    }
}
