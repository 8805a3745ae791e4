//! The hub: a registry of org supervisors, the stream reader, and the producer API.
//!
//! ```text
//! Publish ─► Hub ─► Broker ─► LiveSink ─► OrgSupervisor ─► Outbox ─► SessionBody ─► socket
//!                                  ▲            ▲ Join
//!                     StreamReader ┘            └── ClientSession (replay, then join)
//! ```

pub mod messages;
pub mod outbox;
pub mod session;
pub mod stream_reader;
pub mod supervisor;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use prometheus::IntGauge;
use tracing::{debug, info, info_span};

use crate::broker::{BackendHealth, Broker, BrokerError, PublishOutcome};
use crate::config::{BackendKind, Config};
use crate::envelope::{NewEvent, PublishRequest, ResumePosition, Topic, ValidationError, now_ms};
use crate::metrics::{Metrics, PublishPath};

pub use messages::{GetSupervisor, Publish, PublishVia, Shutdown, StreamFormat};
pub use outbox::{CloseReason, Outbox};
pub use session::{ClientSession, SessionBody, SessionSpec};
pub use stream_reader::StreamReader;
pub use supervisor::OrgSupervisor;

/// Most events in one publish call.
pub const MAX_BATCH: usize = 1000;

/// Why the hub refused a request.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HubError {
    /// An event failed validation (`index` is its position in a batch).
    #[error("{}{error}", index.map(|i| format!("item {i}: ")).unwrap_or_default())]
    Invalid {
        /// Position in the batch, if the request was a batch.
        index: Option<usize>,
        /// What was wrong.
        error: ValidationError,
    },
    /// The batch was empty.
    #[error("the batch is empty")]
    EmptyBatch,
    /// The batch had more than [`MAX_BATCH`] events.
    #[error("a batch holds at most {MAX_BATCH} events, got {0}")]
    BatchTooLarge(usize),
    /// The backend cannot take or serve events now.
    #[error("{0}")]
    Backend(#[from] BrokerError),
    /// The hub is shutting down.
    #[error("the hub is shutting down")]
    ShuttingDown,
    /// This instance holds its maximum number of connections.
    #[error("this instance holds its maximum of {0} connections")]
    TooManyConnections(usize),
    /// The org holds its maximum number of connections on this instance.
    #[error("this org holds its maximum of {0} connections on this instance")]
    TooManyConnectionsForOrg(usize),
}

/// Counts open streams, globally and per topic, against the configured limits.
#[derive(Debug)]
pub struct ConnectionCounter {
    total: AtomicUsize,
    per_topic: Mutex<HashMap<Topic, usize>>,
    max_total: usize,
    max_per_topic: usize,
    gauge: IntGauge,
}

impl ConnectionCounter {
    fn new(max_total: usize, max_per_topic: usize, gauge: IntGauge) -> Self {
        Self {
            total: AtomicUsize::new(0),
            per_topic: Mutex::new(HashMap::new()),
            max_total,
            max_per_topic,
            gauge,
        }
    }

    fn acquire(self: &Arc<Self>, topic: &Topic) -> Result<ConnectionPermit, HubError> {
        let mut per_topic = self.per_topic.lock().unwrap_or_else(|p| p.into_inner());
        if self.total.load(Ordering::Relaxed) >= self.max_total {
            return Err(HubError::TooManyConnections(self.max_total));
        }
        let count = per_topic.entry(topic.clone()).or_insert(0);
        if *count >= self.max_per_topic {
            return Err(HubError::TooManyConnectionsForOrg(self.max_per_topic));
        }
        *count += 1;
        self.total.fetch_add(1, Ordering::Relaxed);
        self.gauge.inc();
        Ok(ConnectionPermit {
            counter: self.clone(),
            topic: topic.clone(),
        })
    }

    /// Open streams on this instance.
    pub fn open(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }
}

/// One counted open stream; released when dropped.
#[derive(Debug)]
pub struct ConnectionPermit {
    counter: Arc<ConnectionCounter>,
    topic: Topic,
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        let mut per_topic = self
            .counter
            .per_topic
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(count) = per_topic.get_mut(&self.topic) {
            *count -= 1;
            if *count == 0 {
                per_topic.remove(&self.topic);
            }
        }
        self.counter.total.fetch_sub(1, Ordering::Relaxed);
        self.counter.gauge.dec();
    }
}

/// The registry of topics: starts supervisors on demand, spread over arbiters.
pub struct Hub {
    broker: Arc<dyn Broker>,
    config: Arc<Config>,
    supervisors: HashMap<Topic, Addr<OrgSupervisor>>,
    arbiters: Vec<ArbiterHandle>,
    /// The HTTP workers' own threads, once they registered: supervisors placed there wake
    /// their sessions' connections without a cross-thread hand-off for half of them.
    worker_arbiters: Vec<ArbiterHandle>,
    next_arbiter: usize,
    shutting_down: Arc<AtomicBool>,
    metrics: Metrics,
}

impl Hub {
    fn supervisor(&mut self, topic: &Topic, ctx: &mut Context<Self>) -> Addr<OrgSupervisor> {
        if let Some(addr) = self.supervisors.get(topic)
            && addr.connected()
        {
            return addr.clone();
        }
        // A stopped worker (server shut down) refuses spawns; fall back to the hub's own.
        self.worker_arbiters.retain(|a| a.spawn(async {}));
        let pool = if self.worker_arbiters.is_empty() {
            &self.arbiters
        } else {
            &self.worker_arbiters
        };
        let arbiter = pool[self.next_arbiter % pool.len()].clone();
        let arbiter = &arbiter;
        self.next_arbiter = self.next_arbiter.wrapping_add(1);
        let (topic_c, broker, hub, config, metrics) = (
            topic.clone(),
            self.broker.clone(),
            ctx.address(),
            self.config.clone(),
            self.metrics.clone(),
        );
        let addr = OrgSupervisor::start_in_arbiter(arbiter, move |_| {
            OrgSupervisor::new(topic_c, broker, hub, config, metrics)
        });
        debug!(%topic, "supervisor started");
        self.supervisors.insert(topic.clone(), addr.clone());
        addr
    }

    fn validate(&self, msg: Publish) -> Result<(Topic, Vec<NewEvent>), HubError> {
        let count = msg.requests.len();
        if count == 0 {
            return Err(HubError::EmptyBatch);
        }
        if count > MAX_BATCH {
            return Err(HubError::BatchTooLarge(count));
        }
        let now = now_ms();
        let batch = count > 1;
        let events =
            msg.requests
                .into_iter()
                .enumerate()
                .map(|(i, request)| {
                    NewEvent::validate(&msg.topic, request, self.config.max_payload_bytes, now)
                        .map_err(|error| HubError::Invalid {
                            index: batch.then_some(i),
                            error,
                        })
                })
                .collect::<Result<Vec<_>, _>>()?;
        Ok((msg.topic, events))
    }
}

impl Actor for Hub {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(16_384);
    }
}

impl Hub {
    fn publish(
        &mut self,
        msg: Publish,
        path: PublishPath,
        ctx: &mut Context<Self>,
    ) -> ResponseFuture<Result<Vec<PublishOutcome>, HubError>> {
        if self.shutting_down.load(Ordering::SeqCst) {
            return Box::pin(async { Err(HubError::ShuttingDown) });
        }
        let accepted = std::time::Instant::now();
        let (topic, events) = match self.validate(msg) {
            Ok(ok) => ok,
            Err(error) => return Box::pin(async move { Err(error) }),
        };
        self.supervisor(&topic, ctx);
        let publish = self.broker.publish(topic, events);
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let outcomes = publish.await?;
            metrics
                .publish_duration
                .observe(accepted.elapsed().as_secs_f64());
            let stored = outcomes.iter().filter(|o| !o.is_duplicate()).count();
            metrics
                .events_published
                .for_path(path)
                .inc_by(stored as u64);
            Ok(outcomes)
        })
    }
}

impl Handler<Publish> for Hub {
    type Result = ResponseFuture<Result<Vec<PublishOutcome>, HubError>>;

    fn handle(&mut self, msg: Publish, ctx: &mut Self::Context) -> Self::Result {
        self.publish(msg, PublishPath::InProcess, ctx)
    }
}

impl Handler<PublishVia> for Hub {
    type Result = ResponseFuture<Result<Vec<PublishOutcome>, HubError>>;

    fn handle(&mut self, msg: PublishVia, ctx: &mut Self::Context) -> Self::Result {
        self.publish(msg.publish, msg.path, ctx)
    }
}

impl Handler<messages::WorkerArbiter> for Hub {
    type Result = ();

    fn handle(&mut self, msg: messages::WorkerArbiter, _ctx: &mut Self::Context) {
        self.worker_arbiters.push(msg.0);
    }
}

impl Handler<GetSupervisor> for Hub {
    type Result = Result<Addr<OrgSupervisor>, HubError>;

    fn handle(&mut self, msg: GetSupervisor, ctx: &mut Self::Context) -> Self::Result {
        if self.shutting_down.load(Ordering::SeqCst) {
            return Err(HubError::ShuttingDown);
        }
        Ok(self.supervisor(&msg.0, ctx))
    }
}

impl Handler<messages::SupervisorIdle> for Hub {
    type Result = ();

    fn handle(&mut self, msg: messages::SupervisorIdle, _ctx: &mut Self::Context) {
        if self.supervisors.get(&msg.topic) == Some(&msg.addr) {
            self.supervisors.remove(&msg.topic);
            debug!(topic = %msg.topic, "idle supervisor retired");
        }
        msg.addr.do_send(messages::StopSupervisor);
    }
}

impl Handler<Shutdown> for Hub {
    type Result = ();

    fn handle(&mut self, _: Shutdown, _ctx: &mut Self::Context) {
        self.shutting_down.store(true, Ordering::SeqCst);
        info!(
            orgs = self.supervisors.len(),
            "closing every stream for shutdown"
        );
        for addr in self.supervisors.values() {
            addr.do_send(Shutdown);
        }
    }
}

/// A cheap-clone handle to a running hub: the in-process API.
#[derive(Clone)]
pub struct HubHandle {
    hub: Addr<Hub>,
    reader: Addr<StreamReader>,
    broker: Arc<dyn Broker>,
    config: Arc<Config>,
    connections: Arc<ConnectionCounter>,
    shutting_down: Arc<AtomicBool>,
    next_session: Arc<AtomicU64>,
    metrics: Metrics,
}

impl HubHandle {
    /// Starts the hub's actors on the current actix system; they record into `metrics`.
    pub fn start(config: Config, broker: Arc<dyn Broker>, metrics: Metrics) -> Self {
        let config = Arc::new(config);
        let threads = std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .clamp(1, 8);
        let arbiters: Vec<ArbiterHandle> = (0..threads).map(|_| Arbiter::new().handle()).collect();
        let reader_broker = broker.clone();
        let reader =
            StreamReader::start_in_arbiter(&arbiters[0], move |_| StreamReader::new(reader_broker));
        let shutting_down = Arc::new(AtomicBool::new(false));
        let hub = Hub {
            broker: broker.clone(),
            config: config.clone(),
            supervisors: HashMap::new(),
            arbiters,
            worker_arbiters: Vec::new(),
            next_arbiter: 0,
            shutting_down: shutting_down.clone(),
            metrics: metrics.clone(),
        }
        .start();
        let connections = Arc::new(ConnectionCounter::new(
            config.max_connections,
            config.max_connections_per_org,
            metrics.connections.clone(),
        ));
        Self {
            hub,
            reader,
            broker,
            config,
            connections,
            shutting_down,
            next_session: Arc::new(AtomicU64::new(1)),
            metrics,
        }
    }

    /// The hub actor's address, for sending [`Publish`] directly.
    pub fn addr(&self) -> Addr<Hub> {
        self.hub.clone()
    }

    /// Publishes events to a topic and returns what was stored (or the first copy).
    pub async fn publish(
        &self,
        topic: Topic,
        requests: Vec<PublishRequest>,
    ) -> Result<Vec<PublishOutcome>, HubError> {
        self.publish_via(topic, requests, PublishPath::InProcess)
            .await
    }

    /// [`Self::publish`], counted under the given path in the metrics.
    pub async fn publish_via(
        &self,
        topic: Topic,
        requests: Vec<PublishRequest>,
        path: PublishPath,
    ) -> Result<Vec<PublishOutcome>, HubError> {
        self.hub
            .send(PublishVia {
                publish: Publish { topic, requests },
                path,
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

    /// Offers the current thread's arbiter (an HTTP worker's) for placing supervisors.
    pub fn register_worker_arbiter(&self) {
        self.hub
            .do_send(messages::WorkerArbiter(Arbiter::current()));
    }

    /// Opens a stream: counts it, queues the `retry:` hint, and starts its session.
    pub fn open_session(&self, spec: SessionSpec) -> Result<SessionBody, HubError> {
        if self.is_shutting_down() {
            return Err(HubError::ShuttingDown);
        }
        let permit = self.connections.acquire(&spec.topic)?;
        self.metrics.connections_opened.inc();
        let outbox = Outbox::new(self.config.session_queue_bytes);
        outbox.push_unbounded(crate::envelope::frame::retry(self.config.retry_ms));
        let id = self.next_session.fetch_add(1, Ordering::Relaxed);
        // A child of the request's span (when opened over HTTP), so the session's lines
        // carry the request id too.
        let resume = spec
            .resume
            .as_ref()
            .map_or_else(|| "none".to_owned(), resume_for_log);
        let span =
            info_span!("session", org = %spec.topic.envelope_org(), session = id, resume = %resume);
        let session = ClientSession::new(
            id,
            spec,
            outbox.clone(),
            self.hub.clone(),
            self.reader.clone(),
            self.config.replay_page_size,
            self.config.session_queue_bytes,
            self.config.retry_ms,
            self.metrics.clone(),
            span,
        )
        .start();
        Ok(SessionBody::new(
            outbox,
            session,
            permit,
            self.metrics.clone(),
        ))
    }

    /// Ends every stream and refuses new ones.
    pub async fn shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        let _ = self.hub.send(Shutdown).await;
    }

    /// True once shutdown began.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
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
pub(crate) fn resume_for_log(position: &ResumePosition) -> String {
    match position {
        ResumePosition::Cursor(_) | ResumePosition::EventId(_) => position.as_text(),
        ResumePosition::Unrecognized(raw) => format!("<unrecognized, {} chars>", raw.len()),
    }
}

/// Interval of the memory broker's sweep of expired events.
pub const MEMORY_SWEEP_INTERVAL: Duration = Duration::from_secs(5);
