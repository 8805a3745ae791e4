//! Hot-path micro benchmarks: validate + encode, fan-out of one frame, memory replay.
//!
//! Run: `cargo bench --bench envelope`.

use std::hint::black_box;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use dashclaw_realtime::broker::{Broker, MemoryBroker};
use dashclaw_realtime::envelope::{
    Cursor, NewEvent, OrgId, PublishRequest, StoredEvent, Topic, now_ms,
};
use dashclaw_realtime::hub::outbox::{Outbox, drain_now};
use dashclaw_realtime::sse::StreamFormat;
use serde_json::json;

fn topic() -> Topic {
    Topic::Org(OrgId::parse("org_bench").expect("valid org"))
}

fn sample_request() -> PublishRequest {
    PublishRequest::new(
        "action.updated",
        json!({"action": {"id": "act_123", "status": "running", "agent": "agent-7", "risk": 0.42, "tags": ["a", "b"]}}),
    )
}

fn validate_and_encode(c: &mut Criterion) {
    let topic = topic();
    c.bench_function("envelope validate + encode to SSE frame", |b| {
        b.iter(|| {
            let new = NewEvent::validate(&topic, sample_request(), 65_536, 1_739_469_600_000)
                .expect("valid");
            // The frame is built once, with the stored event.
            let stored = StoredEvent::from_new(&new, Cursor::new(1_739_469_600_000, 7));
            black_box(stored.frame(StreamFormat::V1))
        })
    });
}

fn fan_out(c: &mut Criterion) {
    let outboxes: Vec<Arc<Outbox>> = (0..10_000).map(|_| Outbox::new(1 << 20)).collect();
    let new = NewEvent::validate(&topic(), sample_request(), 65_536, now_ms()).expect("valid");
    let stored = StoredEvent::from_new(&new, Cursor::new(1, 0));
    let shared = stored.frame(StreamFormat::V1);
    c.bench_function(
        "fan-out of one shared frame to 10,000 session queues (+drain)",
        |b| {
            b.iter(|| {
                for outbox in &outboxes {
                    outbox.push(shared.clone(), Bytes::new);
                }
                for outbox in &outboxes {
                    black_box(drain_now(outbox));
                }
            })
        },
    );
}

fn memory_replay(c: &mut Criterion) {
    let broker = MemoryBroker::new(600_000, 100_000);
    let topic = topic();
    let events: Vec<NewEvent> = (0..1000)
        .map(|_| NewEvent::validate(&topic, sample_request(), 65_536, now_ms()).expect("valid"))
        .collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    runtime
        .block_on(broker.publish(topic.clone(), events))
        .expect("published");
    c.bench_function("memory replay of 1,000 events (4 pages of 256)", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let mut after = Cursor::default();
                let mut total = 0;
                loop {
                    let page = broker
                        .read_after(topic.clone(), after, 256)
                        .await
                        .expect("read");
                    total += page.events.len();
                    match page.events.last().and_then(|e| e.cursor()) {
                        Some(c) if page.full => after = c,
                        _ => break,
                    }
                }
                black_box(total)
            })
        })
    });
}

criterion_group!(benches, validate_and_encode, fan_out, memory_replay);
criterion_main!(benches);
