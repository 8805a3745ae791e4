//! The registry of topics: starts a supervisor per topic on demand, spread over arbiters,
//! hands joins to it, retires it when idle, validates and routes publishes, and owns the
//! shutdown flag.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use actix::prelude::*;
use tracing::{debug, info};

use super::error::{HubError, MAX_BATCH};
use super::messages::{
    Join, JoinOutcome, Publish, PublishFrom, PublishSource, ReadPage, Shutdown, StopSupervisor,
    SupervisorIdle, SupervisorKey, WorkerArbiter,
};
use super::supervisor::{SupervisorLinks, TopicSupervisor};
use crate::broker::{Broker, PublishOutcome};
use crate::config::Config;
use crate::envelope::{NewEvent, Topic, now_ms};
use crate::metrics::Metrics;

/// Whether the hub is shutting down: read by anyone, set only by the registry.
#[derive(Debug, Clone, Default)]
pub struct ShutdownFlag(Arc<AtomicBool>);

impl ShutdownFlag {
    /// True once shutdown began.
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    fn set(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

struct Running {
    addr: Addr<TopicSupervisor>,
    generation: u64,
}

/// The registry actor. It keeps one supervisor per topic and HTTP worker thread: a worker's
/// sessions join the supervisor on their own thread, so each event crosses threads once per
/// worker (the broker's hand-off to that worker's supervisor) and every session's wake-up
/// stays on its thread. Sessions opened off the workers (in-process embedders, benches) share
/// one supervisor per topic.
pub struct Registry {
    broker: Arc<dyn Broker>,
    config: Arc<Config>,
    reader: Recipient<ReadPage>,
    supervisors: HashMap<SupervisorKey, Running>,
    /// Supervisors per topic (one per worker that has its sessions), for `orgs_active`.
    per_topic: HashMap<Topic, usize>,
    next_generation: u64,
    arbiters: Vec<ArbiterHandle>,
    /// The HTTP workers' own threads, by worker number, once they registered.
    worker_arbiters: Vec<Option<ArbiterHandle>>,
    next_arbiter: usize,
    shutdown: ShutdownFlag,
    metrics: Metrics,
}

impl Registry {
    /// A registry placing supervisors on `arbiters` until HTTP workers offer theirs.
    pub fn new(
        broker: Arc<dyn Broker>,
        config: Arc<Config>,
        reader: Recipient<ReadPage>,
        arbiters: Vec<ArbiterHandle>,
        shutdown: ShutdownFlag,
        metrics: Metrics,
    ) -> Self {
        Self {
            broker,
            config,
            reader,
            supervisors: HashMap::new(),
            per_topic: HashMap::new(),
            next_generation: 0,
            arbiters,
            worker_arbiters: Vec::new(),
            next_arbiter: 0,
            shutdown,
            metrics,
        }
    }

    /// Where a supervisor for `worker` runs: that worker's own thread while it runs, else
    /// one of the hub's arbiters (a stopped worker refuses spawns).
    fn arbiter_for(&mut self, worker: Option<usize>) -> ArbiterHandle {
        if let Some(arbiter) = worker.and_then(|w| self.worker_arbiters.get(w)?.clone())
            && arbiter.spawn(async {})
        {
            return arbiter;
        }
        let arbiter = self.arbiters[self.next_arbiter % self.arbiters.len()].clone();
        self.next_arbiter = self.next_arbiter.wrapping_add(1);
        arbiter
    }

    /// The running supervisor for `key`, started if there is none.
    fn supervisor(&mut self, key: SupervisorKey, ctx: &mut Context<Self>) -> Addr<TopicSupervisor> {
        if let Some(running) = self.supervisors.get(&key)
            && running.addr.connected()
        {
            return running.addr.clone();
        }
        let arbiter = self.arbiter_for(key.worker);
        self.next_generation += 1;
        let generation = self.next_generation;
        let links = SupervisorLinks {
            registry: ctx.address().recipient(),
            key: key.clone(),
            generation,
            reader: self.reader.clone(),
        };
        let (topic, broker, config, metrics) = (
            key.topic.clone(),
            self.broker.clone(),
            self.config.clone(),
            self.metrics.clone(),
        );
        let addr = TopicSupervisor::start_in_arbiter(&arbiter, move |_| {
            TopicSupervisor::new(topic, broker, links, config, metrics)
        });
        debug!(topic = %key.topic, worker = ?key.worker, "supervisor started");
        if self.supervisors.contains_key(&key) {
            // Replacing a supervisor that stopped with its worker: the topic's count stays.
        } else {
            let count = self.per_topic.entry(key.topic.clone()).or_insert(0);
            if *count == 0 {
                self.metrics.orgs_active.inc();
            }
            *count += 1;
        }
        self.supervisors.insert(
            key,
            Running {
                addr: addr.clone(),
                generation,
            },
        );
        addr
    }

    /// Checks a batch whole: an invalid event anywhere publishes nothing.
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
        let limit = self.config.max_payload_bytes;
        let events = msg
            .requests
            .into_iter()
            .enumerate()
            .map(|(i, request)| {
                NewEvent::validate(&msg.topic, request, limit, now).map_err(|error| {
                    HubError::Invalid {
                        index: batch.then_some(i),
                        error,
                    }
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok((msg.topic, events))
    }

    fn publish(
        &mut self,
        msg: Publish,
        source: PublishSource,
    ) -> ResponseFuture<Result<Vec<PublishOutcome>, HubError>> {
        if self.shutdown.is_set() {
            return Box::pin(async { Err(HubError::ShuttingDown) });
        }
        let accepted = std::time::Instant::now();
        let (topic, events) = match self.validate(msg) {
            Ok(ok) => ok,
            Err(error) => return Box::pin(async move { Err(error) }),
        };
        let publish = self.broker.publish(topic, events);
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let outcomes = publish.await?;
            metrics
                .publish_duration
                .observe(accepted.elapsed().as_secs_f64());
            let stored = outcomes.iter().filter(|o| !o.is_duplicate()).count() as u64;
            let published = &metrics.events_published;
            match source {
                PublishSource::InProcess => published.in_process.inc_by(stored),
                PublishSource::Http => published.http.inc_by(stored),
            }
            Ok(outcomes)
        })
    }
}

impl Actor for Registry {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(16_384);
    }
}

impl Handler<Publish> for Registry {
    type Result = ResponseFuture<Result<Vec<PublishOutcome>, HubError>>;

    fn handle(&mut self, msg: Publish, _ctx: &mut Self::Context) -> Self::Result {
        self.publish(msg, PublishSource::InProcess)
    }
}

impl Handler<PublishFrom> for Registry {
    type Result = ResponseFuture<Result<Vec<PublishOutcome>, HubError>>;

    fn handle(&mut self, msg: PublishFrom, _ctx: &mut Self::Context) -> Self::Result {
        self.publish(msg.publish, msg.source)
    }
}

impl Handler<Join> for Registry {
    type Result = ResponseFuture<JoinOutcome>;

    fn handle(&mut self, join: Join, ctx: &mut Self::Context) -> Self::Result {
        if self.shutdown.is_set() {
            return Box::pin(async { JoinOutcome::Closed });
        }
        let key = SupervisorKey {
            topic: join.topic.clone(),
            worker: join.worker,
        };
        let supervisor = self.supervisor(key, ctx);
        // A supervisor that stopped meanwhile is replaced on the session's next request.
        Box::pin(async move { supervisor.send(join).await.unwrap_or(JoinOutcome::Retry) })
    }
}

impl Handler<WorkerArbiter> for Registry {
    type Result = ();

    fn handle(&mut self, msg: WorkerArbiter, _ctx: &mut Self::Context) {
        if self.worker_arbiters.len() <= msg.worker {
            self.worker_arbiters.resize(msg.worker + 1, None);
        }
        self.worker_arbiters[msg.worker] = Some(msg.arbiter);
    }
}

impl Handler<SupervisorIdle> for Registry {
    type Result = ();

    fn handle(&mut self, msg: SupervisorIdle, _ctx: &mut Self::Context) {
        let current = self
            .supervisors
            .get(&msg.key)
            .is_some_and(|running| running.generation == msg.generation);
        if current && let Some(running) = self.supervisors.remove(&msg.key) {
            debug!(topic = %msg.key.topic, worker = ?msg.key.worker, "idle supervisor retired");
            running.addr.do_send(StopSupervisor);
            if let Some(count) = self.per_topic.get_mut(&msg.key.topic) {
                *count -= 1;
                if *count == 0 {
                    self.per_topic.remove(&msg.key.topic);
                    self.metrics.orgs_active.dec();
                }
            }
        }
    }
}

impl Handler<Shutdown> for Registry {
    type Result = ();

    fn handle(&mut self, _: Shutdown, _ctx: &mut Self::Context) {
        self.shutdown.set();
        info!(
            orgs = self.supervisors.len(),
            "closing every stream for shutdown"
        );
        for running in self.supervisors.values() {
            running.addr.do_send(Shutdown);
        }
    }
}
