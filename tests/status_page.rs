//! The status page (`GET /`) and the ops stats stream it reads (`GET /v1/ops/stats`).

#[macro_use]
mod common;

use std::time::Duration;

use serde_json::{Value, json};

use common::{
    Backend, End, SseClient, SseEvent, TestHub, error_code, header_str, jwt_for, post_json,
    unique_org,
};

backend_tests!(stats_counters_move_when_events_flow);

const WAIT: Duration = Duration::from_secs(15);
const SECRET: &str = "status-page-secret-of-32-bytes-or-more";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_is_self_contained_html() {
    let hub = TestHub::spawn(&[]).await;
    let (status, body, headers) = common::get(&hub.url("/"), &[]).await;
    assert_eq!(status, 200, "{body}");
    let content_type = header_str(&headers, "content-type").unwrap_or_default();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    for id in [
        "instance-id",
        "backend",
        "backend-state",
        "connections",
        "orgs-active",
        "events-in",
        "events-out",
        "replay-hits",
        "replay-expired",
        "slow-disconnects",
        "chart",
        "ops-token",
        "watch-org",
        "watch-token",
        "watch-log",
    ] {
        assert!(
            body.contains(&format!("id=\"{id}\"")),
            "element #{id} missing"
        );
    }
    assert!(
        body.contains("/v1/ops/stats"),
        "the page reads the stats stream"
    );
    // Embedded in the binary and usable offline: nothing loaded from elsewhere.
    for external in [
        "src=\"http",
        "href=\"http",
        "src=\"//",
        "href=\"//",
        "@import",
    ] {
        assert!(
            !body.contains(external),
            "external asset ({external}) in the page"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_needs_ops_scope_when_auth_is_on() {
    let hub = TestHub::spawn(&[("REALTIME_JWT_SECRET", SECRET)]).await;
    let url = hub.url("/v1/ops/stats");

    let (status, body) = SseClient::connect_expect_status(&url, &[]).await;
    assert_eq!((status, error_code(&body).as_str()), (401, "unauthorized"));

    let org = unique_org("st_scope");
    let subscriber = jwt_for(SECRET, &org, "subscribe publish", 600);
    let (status, body) =
        SseClient::connect_expect_status(&format!("{url}?access_token={subscriber}"), &[]).await;
    assert_eq!(
        (status, error_code(&body).as_str()),
        (403, "insufficient_scope")
    );

    // The page passes its token as access_token (EventSource cannot set headers).
    let ops = jwt_for(SECRET, &org, "ops", 600);
    let mut stats = SseClient::connect_ok(&format!("{url}?access_token={ops}"), &[]).await;
    let first = stats.expect_event_named("stats", WAIT).await.json();
    assert_eq!(first["backend_state"], "ready", "{first}");
    let bearer = format!("Bearer {ops}");
    let mut by_header = SseClient::connect_ok(&url, &[("authorization", &bearer)]).await;
    by_header.expect_event_named("stats", WAIT).await;
}

/// Reads `stats` events until one satisfies `pred`; panics with the last one otherwise.
async fn stats_until(stats: &mut SseClient, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut last = Value::Null;
    while tokio::time::Instant::now() < deadline {
        let Some(SseEvent { event, data, .. }) = stats.next_event(WAIT).await else {
            break;
        };
        assert_eq!(event, "stats", "only stats events on this stream");
        last = serde_json::from_str(&data).expect("stats data is JSON");
        if pred(&last) {
            return last;
        }
    }
    panic!("no stats event with {what}; last: {last}");
}

async fn stats_counters_move_when_events_flow(backend: Backend) {
    let hub = backend.hub(&[]).await;
    let mut stats = SseClient::connect_ok(&hub.url("/v1/ops/stats"), &[]).await;
    assert_eq!(
        header_str(stats.headers(), "content-type").as_deref(),
        Some("text/event-stream")
    );
    let before = stats_until(&mut stats, "a ready backend", |s| {
        s["backend_state"] == "ready"
    })
    .await;
    assert!(
        stats.raw_text().starts_with("retry: "),
        "the stream opens with a retry hint: {:?}",
        stats.raw_text()
    );
    assert_eq!(before["backend"], backend.name());
    assert_eq!(before["lifecycle"], "serving");
    for counter in ["paced_refusals", "drain_closes", "max_age_closes"] {
        assert_eq!(before[counter].as_u64(), Some(0), "{counter}: {before}");
    }
    let instance = before["instance_id"]
        .as_str()
        .expect("instance_id")
        .to_owned();
    assert_eq!(instance.len(), 26, "a ULID: {instance}");

    let org = unique_org("st_flow");
    let mut subscriber =
        SseClient::connect_ok(&hub.url(&format!("/v1/orgs/{org}/stream")), &[]).await;
    subscriber
        .expect_event_named("realtime.connected", WAIT)
        .await;
    let opened_before = before["opened_total"].as_u64().expect("opened_total");
    let published_before = before["published_total"].as_u64().expect("published_total");
    let delivered_before = before["delivered_total"].as_u64().expect("delivered_total");
    for n in 0..3 {
        let (status, body, _) = post_json(
            &hub.url(&format!("/v1/orgs/{org}/events")),
            &json!({"event": "action.created", "payload": {"n": n}}),
            &[],
        )
        .await;
        assert_eq!(status, 202, "{body}");
    }
    for _ in 0..3 {
        subscriber.expect_event_named("action.created", WAIT).await;
    }
    let after = stats_until(&mut stats, "the 3 events counted", |s| {
        s["opened_total"].as_u64() >= Some(opened_before + 1)
            && s["published_total"].as_u64() >= Some(published_before + 3)
            && s["delivered_total"].as_u64() >= Some(delivered_before + 3)
    })
    .await;
    assert_eq!(
        after["instance_id"],
        instance.as_str(),
        "one instance id per hub"
    );
    assert!(after["connections"].as_i64() >= Some(1), "{after}");
    assert!(after["orgs_active"].as_i64() >= Some(1), "{after}");
    assert!(
        after["uptime_seconds"].as_u64() >= before["uptime_seconds"].as_u64(),
        "{after}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_stream_ends_cleanly_on_shutdown() {
    let hub = TestHub::spawn(&[("REALTIME_SHUTDOWN_GRACE_SECONDS", "5")]).await;
    let mut stats = SseClient::connect_ok(&hub.url("/v1/ops/stats"), &[]).await;
    stats.expect_event_named("stats", WAIT).await;
    assert!(hub.sigterm());
    // Through the drain delay the page keeps updating and shows the instance draining.
    let draining = stats_until(&mut stats, "the drain", |s| s["lifecycle"] == "draining").await;
    assert_eq!(draining["backend_state"], "unavailable", "{draining}");
    assert_eq!(draining["backend_reason"], "shutting down", "{draining}");
    assert_eq!(stats.wait_end(WAIT).await, Some(End::Clean));
    assert!(
        hub.wait_exit(WAIT).await.is_some_and(|s| s.success()),
        "the hub exits 0 after ending the stats stream"
    );
}
