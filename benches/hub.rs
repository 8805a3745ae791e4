//! Benchmarks through the real actors and a real redis-server: supervisor fan-out of one event
//! to 10,000 in-process sessions, and the Redis publish script (pipelined, single and batched).
//!
//! Run: `cargo bench --bench hub` (spawns its own `redis-server` on a free port through the
//! integration tests' harness, `tests/common/redis.rs`).

#[path = "../tests/common/mod.rs"]
mod common;

use std::hint::black_box;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use actix_web::body::MessageBody;
use common::TestRedis;
use criterion::{Criterion, criterion_group, criterion_main};
use dashclaw_realtime::broker::{Broker, MemoryBroker, RedisBroker};
use dashclaw_realtime::config::{BackendKind, Config};
use dashclaw_realtime::envelope::{NewEvent, OrgId, PublishRequest, Topic, now_ms};
use dashclaw_realtime::filter::EventFilter;
use dashclaw_realtime::hub::{HubHandle, SessionBody, SessionSpec};
use dashclaw_realtime::metrics::Metrics;
use dashclaw_realtime::sse::StreamFormat;
use futures_util::future::join_all;
use serde_json::json;

const SESSIONS: usize = 10_000;

fn topic() -> Topic {
    Topic::Org(OrgId::parse("org_bench").expect("valid org"))
}

fn request(n: u64) -> PublishRequest {
    PublishRequest::new(
        "action.updated",
        json!({"action": {"id": "act_123", "status": "running", "agent": "agent-7", "n": n}}),
    )
}

/// Polls a body once without a task; `Some(len)` when a chunk was ready.
fn take(body: &mut SessionBody) -> Option<usize> {
    let mut cx = Context::from_waker(Waker::noop());
    match Pin::new(body).poll_next(&mut cx) {
        Poll::Ready(Some(Ok(chunk))) => Some(chunk.len()),
        _ => None,
    }
}

/// Publish one event through `HubHandle` and wait until every one of 10,000 sessions (real
/// `ClientSession` actors joined to the org's `OrgSupervisor`) has it queued on its body.
fn supervisor_fan_out(c: &mut Criterion) {
    let system = actix_web::rt::System::new();
    let hub = system.block_on(async {
        // Unpaced: the bench opens its 10,000 sessions at once.
        let config = Config {
            max_new_streams_per_second: 0,
            ..Config::default()
        };
        let broker: Arc<dyn Broker> = Arc::new(MemoryBroker::new(config.window_ms(), 100_000));
        HubHandle::start(config, broker, Metrics::new())
    });
    let mut bodies: Vec<SessionBody> = system.block_on(async {
        let mut bodies = Vec::with_capacity(SESSIONS);
        for _ in 0..SESSIONS {
            let spec = SessionSpec {
                topic: topic(),
                resume: None,
                filter: EventFilter::all(),
                format: StreamFormat::V1,
                lifetime: Default::default(),
            };
            bodies.push(hub.open_session(spec).expect("session opens"));
        }
        // Wait until every session joined (its `realtime.connected` frame is queued).
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut joined = vec![false; SESSIONS];
        while joined.iter().any(|j| !j) && Instant::now() < deadline {
            for (body, joined) in bodies.iter_mut().zip(joined.iter_mut()) {
                while let Some(len) = take(body) {
                    // The retry hint is short; the connected event is not.
                    if len > 40 {
                        *joined = true;
                    }
                }
            }
            actix_web::rt::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(joined.iter().all(|j| *j), "every session joined");
        bodies
    });
    let mut n = 0;
    c.bench_function(
        "supervisor fan-out of one event to 10,000 sessions (publish -> all queued)",
        |b| {
            b.iter(|| {
                n += 1;
                system.block_on(async {
                    hub.publish_one(topic(), request(n))
                        .await
                        .expect("published");
                    let mut pending: Vec<usize> = (0..SESSIONS).collect();
                    while !pending.is_empty() {
                        pending.retain(|&i| take(&mut bodies[i]).is_none());
                        if !pending.is_empty() {
                            actix_web::rt::task::yield_now().await;
                        }
                    }
                });
            })
        },
    );
    black_box(&bodies);
}

/// The publish script (idempotency key, XADD MINID ~, PUBLISH) through `RedisBroker`, with
/// many calls in flight on its one multiplexed connection, and as batches of 100.
fn redis_publish(c: &mut Criterion) {
    let system = actix_web::rt::System::new();
    // The integration tests' own redis-server harness: a free port, no persistence, killed on
    // drop.
    let redis = system.block_on(TestRedis::spawn());
    let config = Config {
        backend: BackendKind::Redis,
        redis_url: Some(redis.url()),
        ..Config::default()
    };
    let broker = system.block_on(async {
        RedisBroker::start(&config, Metrics::new()).expect("redis broker starts")
    });
    let topic = topic();
    let events = |count: usize| -> Vec<NewEvent> {
        (0..count)
            .map(|i| {
                NewEvent::validate(&topic, request(i as u64), 65_536, now_ms()).expect("valid")
            })
            .collect()
    };
    let mut group = c.benchmark_group("redis publish script");
    group.throughput(criterion::Throughput::Elements(1000));
    group.bench_function("1,000 single-event publishes, all in flight", |b| {
        b.iter_batched(
            || events(1000),
            |batch| {
                system.block_on(async {
                    let calls = batch
                        .into_iter()
                        .map(|e| broker.publish(topic.clone(), vec![e]));
                    for r in join_all(calls).await {
                        r.expect("published");
                    }
                })
            },
            criterion::BatchSize::SmallInput,
        )
    });
    group.bench_function("1,000 events as 10 batches of 100, all in flight", |b| {
        b.iter_batched(
            || (0..10).map(|_| events(100)).collect::<Vec<_>>(),
            |batches| {
                system.block_on(async {
                    let calls = batches
                        .into_iter()
                        .map(|batch| broker.publish(topic.clone(), batch));
                    for r in join_all(calls).await {
                        r.expect("published");
                    }
                })
            },
            criterion::BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(5));
    targets = supervisor_fan_out, redis_publish
}
criterion_main!(benches);
