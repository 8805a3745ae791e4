//! The in-process producer API (contract section 4): a hub started inside the test
//! process, published to through `HubHandle` and the `Publish` actor message, read by
//! real SSE clients over TCP.

mod common;

use std::time::Duration;

use common::{End, SseClient, SseEvent, secs, unique_org};
use dashclaw_realtime::auth::Auth;
use dashclaw_realtime::broker::PublishOutcome;
use dashclaw_realtime::config::Config;
use dashclaw_realtime::envelope::{OrgId, PublishRequest, StoredEvent, Topic, ValidationError};
use dashclaw_realtime::hub::{HubError, Publish};
use dashclaw_realtime::server::{self, RunningServer};
use serde_json::json;

/// Starts a hub on an ephemeral loopback port and checks it answers HTTP, so a hub
/// that is bound but not serving fails here in seconds instead of as a stream timeout.
async fn start_hub() -> RunningServer {
    let config = Config {
        bind: "127.0.0.1:0".parse().expect("loopback address"),
        shutdown_grace: Duration::from_secs(5),
        ..Default::default()
    };
    let running =
        server::start(config, Auth::off()).unwrap_or_else(|e| panic!("starting the hub: {e}"));
    let healthz = format!("http://{}/healthz", running.addr);
    let answered = common::client()
        .get(&healthz)
        .timeout(secs(5))
        .send()
        .await
        .map(|r| r.status().as_u16());
    assert!(
        matches!(answered, Ok(200)),
        "server::start returned but GET {healthz} got {answered:?}: the hub must serve \
         HTTP once start() returns, before run() or shutdown() is awaited"
    );
    running
}

fn org_topic(org: &str) -> Topic {
    Topic::Org(OrgId::parse(org).unwrap_or_else(|e| panic!("org id {org:?}: {e}")))
}

async fn subscribe(url: &str, headers: &[(&str, &str)]) -> SseClient {
    let mut client = SseClient::connect_ok(url, headers).await;
    client
        .expect_event_named("realtime.connected", secs(10))
        .await;
    client
}

fn stored(outcome: PublishOutcome) -> std::sync::Arc<StoredEvent> {
    match outcome {
        PublishOutcome::Stored(event) => event,
        PublishOutcome::Duplicate(event) => {
            panic!("expected a new event, got a duplicate of {event:?}")
        }
    }
}

/// The frame is byte-for-byte the stored envelope, with its cursor as `id:`.
fn assert_frame(frame: &SseEvent, event: &StoredEvent) {
    let cursor = event.cursor().expect("in-process events carry a cursor");
    assert_eq!(frame.event, event.envelope().event);
    assert!(frame.had_id_field, "event frame without id: {frame:?}");
    assert_eq!(frame.last_event_id, cursor.to_string());
    assert_eq!(
        frame.data.as_bytes(),
        event.json(),
        "data is not the stored envelope"
    );
    assert_eq!(frame.json()["cursor"], cursor.to_string());
}

#[actix_web::test]
async fn in_process_publishes_reach_http_subscribers_exactly_once_in_order() {
    let running = start_hub().await;
    let hub = running.hub.clone();
    let base = format!("http://{}", running.addr);
    let org = unique_org("inproc");
    let other = unique_org("inproc_other");
    let topic = org_topic(&org);
    let stream = format!("{base}/v1/orgs/{org}/stream");

    let mut subs = [subscribe(&stream, &[]).await, subscribe(&stream, &[]).await];
    let mut bystander = subscribe(&format!("{base}/v1/orgs/{other}/stream"), &[]).await;

    let first = stored(
        hub.publish_one(
            topic.clone(),
            PublishRequest::new("action.created", json!({"n": 1})),
        )
        .await
        .expect("publish_one"),
    );
    assert_eq!(first.envelope().org_id, org);
    assert_eq!(first.envelope().version, "v1");
    assert_eq!(first.envelope().payload, json!({"n": 1}));
    assert!(
        first.envelope().id.starts_with("evt_"),
        "{}",
        first.envelope().id
    );

    // The actor message is the API other in-process producers hold on to.
    let dup_id = format!("evt_{org}_dup");
    let batch = hub
        .addr()
        .send(Publish {
            topic: topic.clone(),
            requests: vec![
                PublishRequest::new("action.updated", json!({"n": 2})).with_id(dup_id.clone()),
                PublishRequest::new("guard.decision.created", json!({"n": 3})),
            ],
        })
        .await
        .expect("hub mailbox")
        .expect("batch publish");
    let batch: Vec<_> = batch.into_iter().map(stored).collect();
    assert_eq!(batch.len(), 2);
    assert_eq!(batch[0].envelope().id, dup_id);
    assert!(first.cursor() < batch[0].cursor() && batch[0].cursor() < batch[1].cursor());

    // Refusals are typed, and an invalid batch stores nothing (checked by the sentinel).
    let invalid = hub
        .addr()
        .send(Publish {
            topic: topic.clone(),
            requests: vec![
                PublishRequest::new("action.created", json!({"n": "never"})),
                PublishRequest::new("Not A Name", json!({})),
            ],
        })
        .await
        .expect("hub mailbox");
    assert!(
        matches!(
            invalid,
            Err(HubError::Invalid {
                index: Some(1),
                error: ValidationError::InvalidEventName
            })
        ),
        "{invalid:?}"
    );
    let reserved = hub
        .publish_one(
            topic.clone(),
            PublishRequest::new("realtime.connected", json!({})),
        )
        .await;
    assert!(
        matches!(
            reserved,
            Err(HubError::Invalid {
                index: None,
                error: ValidationError::ReservedEventName
            })
        ),
        "{reserved:?}"
    );
    let bad_id = hub
        .publish_one(
            topic.clone(),
            PublishRequest::new("action.created", json!({})).with_id("not-an-evt-id"),
        )
        .await;
    assert!(
        matches!(
            bad_id,
            Err(HubError::Invalid {
                error: ValidationError::InvalidEventId,
                ..
            })
        ),
        "{bad_id:?}"
    );
    let too_large = hub
        .publish_one(
            topic.clone(),
            PublishRequest::new("action.created", json!({"pad": "x".repeat(70_000)})),
        )
        .await;
    assert!(
        matches!(
            too_large,
            Err(HubError::Invalid {
                error: ValidationError::TooLarge { .. },
                ..
            })
        ),
        "{too_large:?}"
    );
    let empty = hub
        .addr()
        .send(Publish {
            topic: topic.clone(),
            requests: Vec::new(),
        })
        .await
        .expect("hub mailbox");
    assert!(matches!(empty, Err(HubError::EmptyBatch)), "{empty:?}");

    // The same id again is answered with the first copy and not delivered again.
    let again = hub
        .publish_one(
            topic.clone(),
            PublishRequest::new("action.updated", json!({"n": "changed"})).with_id(dup_id.clone()),
        )
        .await
        .expect("duplicate publish");
    match &again {
        PublishOutcome::Duplicate(event) => {
            assert_eq!(event.envelope(), batch[0].envelope());
            assert_eq!(event.json(), batch[0].json());
        }
        PublishOutcome::Stored(event) => panic!("a repeated id was stored again: {event:?}"),
    }

    let sentinel = stored(
        hub.publish_one(
            topic.clone(),
            PublishRequest::new("action.created", json!({"sentinel": true})),
        )
        .await
        .expect("sentinel"),
    );
    let expected = [&first, &batch[0], &batch[1], &sentinel];
    for (s, sub) in subs.iter_mut().enumerate() {
        for (i, want) in expected.iter().enumerate() {
            let frame = sub.expect_event(secs(10)).await;
            assert!(
                frame.json()["id"] == want.envelope().id,
                "subscriber {s}, event {i}: got {frame:?}, want {}",
                want.envelope().id
            );
            assert_frame(&frame, want);
        }
    }

    // Another org saw none of it.
    let other_sentinel = stored(
        hub.publish_one(
            org_topic(&other),
            PublishRequest::new("signal.detected", json!({"other": true})),
        )
        .await
        .expect("other-org publish"),
    );
    let frame = bystander.expect_event(secs(10)).await;
    assert_frame(&frame, &other_sentinel);

    // In-process cursors are resume positions like any other.
    let first_cursor = first.cursor().expect("cursor").to_string();
    let mut resumed = SseClient::connect_ok(&stream, &[("Last-Event-ID", &first_cursor)]).await;
    for want in &expected[1..] {
        assert_frame(&resumed.expect_event(secs(10)).await, want);
    }
    let connected = resumed.expect_event(secs(10)).await;
    assert_eq!(connected.event, "realtime.connected");
    assert_eq!(connected.json()["replayed"], 3);
    assert_eq!(
        connected.json()["cursor"],
        sentinel.cursor().expect("cursor").to_string()
    );

    running.shutdown().await.expect("server shutdown");
    for (i, client) in subs
        .iter_mut()
        .chain([&mut bystander, &mut resumed])
        .enumerate()
    {
        assert_eq!(
            client.wait_end(secs(5)).await,
            Some(End::Clean),
            "stream {i} after shutdown; raw:\n{}",
            client.raw_text()
        );
    }
    let late = hub
        .publish_one(topic, PublishRequest::new("action.created", json!({})))
        .await;
    assert!(matches!(late, Err(HubError::ShuttingDown)), "{late:?}");
}

#[actix_web::test]
async fn in_process_ops_publish_reaches_ops_stream() {
    let running = start_hub().await;
    let base = format!("http://{}", running.addr);
    let mut ops = subscribe(&format!("{base}/v1/ops/stream"), &[]).await;
    let published = stored(
        running
            .hub
            .publish_one(
                Topic::Ops,
                PublishRequest::new("agent.heartbeat", json!({"agent": "a1"})),
            )
            .await
            .expect("ops publish"),
    );
    assert_eq!(published.envelope().org_id, "ops");
    assert_frame(&ops.expect_event(secs(10)).await, &published);
    running.shutdown().await.expect("server shutdown");
    assert_eq!(ops.wait_end(secs(5)).await, Some(End::Clean));
}
