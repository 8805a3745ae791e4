//! `GET /metrics` (contract section 7): every metric keeps its name and type, and moves
//! when its cause happens. Each check scrapes, acts, scrapes again and compares, so the
//! hub's own background activity cannot make a test pass by accident.

#[macro_use]
mod common;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use common::{
    Backend, SseClient, TestHub, error_code, header_str, jwt_for, metric_sum, metric_value,
    post_json, secs, unique_org,
};

backend_tests!(
    publish_and_delivery_counters_move,
    replay_counters_follow_the_resume_result,
    closing_a_stream_is_counted_as_client,
    slow_client_is_counted,
    queue_bytes_are_sampled_by_the_sweep,
);

const WAIT: Duration = Duration::from_secs(15);

/// Every metric of contract section 7 (plus the ones this hub adds) with its type.
const CONTRACT_METRICS: &[(&str, &str)] = &[
    ("dashclaw_realtime_connections", "gauge"),
    ("dashclaw_realtime_orgs_active", "gauge"),
    ("dashclaw_realtime_connections_opened_total", "counter"),
    ("dashclaw_realtime_connections_closed_total", "counter"),
    ("dashclaw_realtime_events_published_total", "counter"),
    ("dashclaw_realtime_events_delivered_total", "counter"),
    ("dashclaw_realtime_replay_requests_total", "counter"),
    ("dashclaw_realtime_replayed_events_total", "counter"),
    ("dashclaw_realtime_resyncs_total", "counter"),
    ("dashclaw_realtime_slow_disconnects_total", "counter"),
    ("dashclaw_realtime_redis_reconnects_total", "counter"),
    ("dashclaw_realtime_gap_fills_total", "counter"),
    ("dashclaw_realtime_paced_refusals_total", "counter"),
    ("dashclaw_realtime_stream_reads_total", "counter"),
    ("dashclaw_realtime_publish_duration_seconds", "histogram"),
    ("dashclaw_realtime_delivery_lag_seconds", "histogram"),
    ("dashclaw_realtime_session_queue_bytes", "histogram"),
];

/// A sample that must exist (labelled series are exported at zero from the start).
fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    metric_value(text, name, labels)
        .unwrap_or_else(|| panic!("no sample {name}{labels:?} in /metrics:\n{text}"))
}

fn closed(text: &str, reason: &str) -> f64 {
    value(
        text,
        "dashclaw_realtime_connections_closed_total",
        &[("reason", reason)],
    )
}

fn published(text: &str, path: &str) -> f64 {
    value(
        text,
        "dashclaw_realtime_events_published_total",
        &[("path", path)],
    )
}

fn replay_requests(text: &str, result: &str) -> f64 {
    value(
        text,
        "dashclaw_realtime_replay_requests_total",
        &[("result", result)],
    )
}

fn plain(text: &str, name: &str) -> f64 {
    value(text, name, &[])
}

/// Scrapes until `done` holds for the metrics text; panics with the last scrape after
/// `timeout` (an upper bound for something the hub does asynchronously, never a speed
/// expectation).
async fn wait_metrics(
    hub: &TestHub,
    what: &str,
    timeout: Duration,
    done: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let text = hub.metrics().await;
        if done(&text) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{what} not seen in /metrics within {timeout:?}; last scrape:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn publish(hub: &TestHub, org: &str, body: &Value) -> Value {
    let url = hub.url(&format!("/v1/orgs/{org}/events"));
    let (status, resp, _) = post_json(&url, body, &[]).await;
    assert_eq!(status, 202, "POST {url} {body}: {resp}");
    resp
}

async fn subscribe(hub: &TestHub, org: &str, headers: &[(&str, &str)]) -> SseClient {
    let url = hub.url(&format!("/v1/orgs/{org}/stream"));
    let mut client = SseClient::connect_ok(&url, headers).await;
    client.expect_event_named("realtime.connected", WAIT).await;
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_endpoint_serves_every_contract_metric() {
    let hub = TestHub::spawn(&[]).await;
    let org = unique_org("metrics_names");
    let mut client = subscribe(&hub, &org, &[]).await;
    publish(&hub, &org, &json!({"event": "action.created"})).await;
    client.expect_event_named("action.created", WAIT).await;

    let (status, text, headers) = common::get(&hub.url("/metrics"), &[]).await;
    assert_eq!(status, 200, "{text}");
    let content_type = header_str(&headers, "content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("text/plain") && content_type.contains("version=0.0.4"),
        "content-type {content_type:?}"
    );
    for (name, kind) in CONTRACT_METRICS {
        let type_line = format!("# TYPE {name} {kind}");
        assert!(
            text.lines().any(|l| l == type_line),
            "{type_line:?} missing in:\n{text}"
        );
    }
    for reason in [
        "client", "slow", "shutdown", "limit", "auth", "drain", "max_age",
    ] {
        closed(&text, reason);
    }
    for served in ["backend", "shared", "cache"] {
        value(
            &text,
            "dashclaw_realtime_stream_reads_total",
            &[("served", served)],
        );
    }
    for path in ["in_process", "http", "redis_external"] {
        published(&text, path);
    }
    for result in ["hit", "expired", "unknown"] {
        replay_requests(&text, result);
    }
    assert!(
        plain(&text, "dashclaw_realtime_orgs_active") >= 1.0,
        "{text}"
    );
    // Tenants must not become label values (cardinality, and org ids are not public).
    assert!(
        !text.contains(&org),
        "an org id leaked into /metrics:\n{text}"
    );
}

async fn publish_and_delivery_counters_move(backend: Backend) {
    let hub = backend.hub(&[]).await;
    let org = unique_org("metrics_pub");
    let mut clients = vec![
        subscribe(&hub, &org, &[]).await,
        subscribe(&hub, &org, &[]).await,
    ];
    let before = hub.metrics().await;

    let first = publish(
        &hub,
        &org,
        &json!({"event": "action.created", "id": format!("evt_{org}_1")}),
    )
    .await;
    publish(
        &hub,
        &org,
        &json!([{"event": "action.updated"}, {"event": "action.updated"}]),
    )
    .await;
    // A duplicate is accepted but neither stored again nor delivered again.
    let (status, _, _) = post_json(
        &hub.url(&format!("/v1/orgs/{org}/events")),
        &json!({"event": "action.created", "id": first["id"]}),
        &[],
    )
    .await;
    assert_eq!(status, 200);
    let sentinel = publish(&hub, &org, &json!({"event": "test.sentinel"})).await;
    for client in &mut clients {
        let events = client
            .collect_events_until(|e| e.event == "test.sentinel", WAIT)
            .await;
        assert_eq!(events.len(), 4, "{events:?}");
        assert_eq!(events[3].json(), sentinel);
    }
    let after = hub.metrics().await;

    let delta = |name: &str| plain(&after, name) - plain(&before, name);
    assert_eq!(published(&after, "http") - published(&before, "http"), 4.0);
    assert_eq!(
        published(&after, "in_process"),
        published(&before, "in_process")
    );
    assert_eq!(
        published(&after, "redis_external"),
        published(&before, "redis_external"),
        "the hub's own publishes are not external"
    );
    // 4 new events x 2 clients; the frames are queued before the clients can read them.
    assert_eq!(delta("dashclaw_realtime_events_delivered_total"), 8.0);
    // One observation per publish request (the duplicate included), one lag per event.
    assert_eq!(
        delta("dashclaw_realtime_publish_duration_seconds_count"),
        4.0
    );
    assert_eq!(delta("dashclaw_realtime_delivery_lag_seconds_count"), 4.0);
    assert!(delta("dashclaw_realtime_publish_duration_seconds_sum") >= 0.0);
    assert_eq!(plain(&after, "dashclaw_realtime_connections"), 2.0);
    assert_eq!(
        plain(&after, "dashclaw_realtime_connections_opened_total"),
        2.0
    );
    assert!(plain(&after, "dashclaw_realtime_orgs_active") >= 1.0);
    assert_eq!(delta("dashclaw_realtime_replayed_events_total"), 0.0);

    // A refused publish changes nothing.
    let (status, _, _) = post_json(
        &hub.url(&format!("/v1/orgs/{org}/events")),
        &json!({"event": "realtime.nope"}),
        &[],
    )
    .await;
    assert_eq!(status, 422);
    let refused = hub.metrics().await;
    assert_eq!(published(&refused, "http"), published(&after, "http"));
}

async fn replay_counters_follow_the_resume_result(backend: Backend) {
    let hub = backend.hub(&[]).await;
    let org = unique_org("metrics_replay");
    let stored = publish(
        &hub,
        &org,
        &json!([{"event": "a.one"}, {"event": "a.two"}, {"event": "a.three"}]),
    )
    .await;
    let first_cursor = stored[0]["cursor"].as_str().expect("cursor").to_owned();

    let before = hub.metrics().await;
    let mut resumed = SseClient::connect_ok(
        &hub.url(&format!("/v1/orgs/{org}/stream")),
        &[("last-event-id", &first_cursor)],
    )
    .await;
    let replay = resumed
        .collect_events_until(|e| e.event == "realtime.connected", WAIT)
        .await;
    assert_eq!(
        replay.len(),
        3,
        "two replayed events, then connected: {replay:?}"
    );
    let hit = hub.metrics().await;
    assert_eq!(
        replay_requests(&hit, "hit") - replay_requests(&before, "hit"),
        1.0
    );
    assert_eq!(
        plain(&hit, "dashclaw_realtime_replayed_events_total")
            - plain(&before, "dashclaw_realtime_replayed_events_total"),
        2.0
    );
    assert_eq!(
        plain(&hit, "dashclaw_realtime_events_delivered_total")
            - plain(&before, "dashclaw_realtime_events_delivered_total"),
        2.0
    );
    assert_eq!(
        plain(&hit, "dashclaw_realtime_resyncs_total"),
        plain(&before, "dashclaw_realtime_resyncs_total")
    );

    // Newer than anything stored: unknown. Older than the window: expired.
    for (position, result) in [("99999999999999-0", "unknown"), ("1-0", "expired")] {
        let before = hub.metrics().await;
        let mut client = SseClient::connect_ok(
            &hub.url(&format!("/v1/orgs/{org}/stream")),
            &[("last-event-id", position)],
        )
        .await;
        let resync = client.expect_event_named("realtime.resync", WAIT).await;
        assert_eq!(resync.json()["reason"], result);
        client.expect_event_named("realtime.connected", WAIT).await;
        let after = hub.metrics().await;
        for other in ["hit", "expired", "unknown"] {
            let expected = if other == result { 1.0 } else { 0.0 };
            assert_eq!(
                replay_requests(&after, other) - replay_requests(&before, other),
                expected,
                "resume at {position}: replay_requests{{result={other}}}"
            );
        }
        assert_eq!(
            plain(&after, "dashclaw_realtime_resyncs_total")
                - plain(&before, "dashclaw_realtime_resyncs_total"),
            1.0
        );
    }
}

async fn closing_a_stream_is_counted_as_client(backend: Backend) {
    // Short heartbeats make the hub notice the closed socket on its next write.
    let hub = backend.hub(&[("REALTIME_HEARTBEAT_SECONDS", "1")]).await;
    let org = unique_org("metrics_close");
    let mut client = subscribe(&hub, &org, &[]).await;
    let _stays = subscribe(&hub, &org, &[]).await;
    let before = hub.metrics().await;
    assert_eq!(plain(&before, "dashclaw_realtime_connections"), 2.0);
    client.close();
    drop(client);
    let after = wait_metrics(&hub, "closed{reason=client} +1", WAIT, |text| {
        closed(text, "client") > closed(&before, "client")
    })
    .await;
    assert_eq!(closed(&after, "client") - closed(&before, "client"), 1.0);
    assert_eq!(plain(&after, "dashclaw_realtime_connections"), 1.0);
    for reason in ["slow", "shutdown", "limit", "auth", "drain", "max_age"] {
        assert_eq!(closed(&after, reason), closed(&before, reason), "{reason}");
    }
}

/// A raw HTTP/1.1 stream whose socket is never read after the response head, with a
/// small receive buffer so the hub's queue fills after little data.
async fn unread_stream(hub: &TestHub, path: &str) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let mut stream = socket.connect(hub.addr()).await.expect("connect");
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n\r\n",
        hub.addr()
    );
    stream
        .write_all(request.as_bytes())
        .await
        .expect("write request");
    let mut head = Vec::new();
    let mut buf = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(WAIT, stream.read(&mut buf))
            .await
            .expect("response head in time")
            .expect("read head");
        assert_eq!(n, 1, "EOF before the response head");
        head.push(buf[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    stream
}

async fn slow_client_is_counted(backend: Backend) {
    let hub = backend
        .hub(&[("REALTIME_SESSION_QUEUE_BYTES", "65536")])
        .await;
    let org = unique_org("metrics_slow");
    let mut fast = subscribe(&hub, &org, &[]).await;
    let before = hub.metrics().await;
    let slow = unread_stream(&hub, &format!("/v1/orgs/{org}/stream")).await;
    let joined = wait_metrics(&hub, "the unread stream connected", WAIT, |text| {
        plain(text, "dashclaw_realtime_connections") == 2.0
    })
    .await;
    assert_eq!(plain(&joined, "dashclaw_realtime_connections"), 2.0);

    // Publish until the hub gives up on the unread socket; bounded so a hub that never
    // does fails instead of looping.
    // Each batch stays well under the queue bound, so the fast client never overflows.
    let pad = "x".repeat(8 * 1024);
    let mut overflowed = None;
    for round in 0..2000 {
        let batch: Vec<Value> = (0..4)
            .map(|n| json!({"event": "action.updated", "payload": {"n": n, "pad": pad}}))
            .collect();
        publish(&hub, &org, &Value::Array(batch)).await;
        // Paced by the fast client so only the unread one can fall behind.
        fast.collect_events(4, WAIT).await;
        let text = hub.metrics().await;
        if plain(&text, "dashclaw_realtime_slow_disconnects_total")
            > plain(&before, "dashclaw_realtime_slow_disconnects_total")
        {
            overflowed = Some((round, text));
            break;
        }
    }
    let (_, text) = overflowed.expect("the unread client was never disconnected as slow");
    assert_eq!(
        plain(&text, "dashclaw_realtime_slow_disconnects_total")
            - plain(&before, "dashclaw_realtime_slow_disconnects_total"),
        1.0
    );
    // The connection is counted as closed once its socket is really gone.
    drop(slow);
    let after = wait_metrics(&hub, "closed{reason=slow} +1", WAIT, |text| {
        closed(text, "slow") > closed(&before, "slow")
    })
    .await;
    assert_eq!(closed(&after, "slow") - closed(&before, "slow"), 1.0);
    assert_eq!(closed(&after, "client"), closed(&before, "client"));
    assert_eq!(plain(&after, "dashclaw_realtime_connections"), 1.0);
}

async fn queue_bytes_are_sampled_by_the_sweep(backend: Backend) {
    let hub = backend.hub(&[("REALTIME_HEARTBEAT_SECONDS", "1")]).await;
    let org = unique_org("metrics_queue");
    let before = hub.metrics().await;
    let count = |text: &str| plain(text, "dashclaw_realtime_session_queue_bytes_count");
    assert_eq!(count(&before), 0.0, "no session, no sample");
    let _client = subscribe(&hub, &org, &[]).await;
    let after = wait_metrics(&hub, "a session_queue_bytes sample", WAIT, |text| {
        count(text) > 0.0
    })
    .await;
    // Every sample of a session that keeps up fits the smallest bucket's neighbourhood;
    // what matters is that the buckets are cumulative and end at +Inf = count.
    assert_eq!(
        value(
            &after,
            "dashclaw_realtime_session_queue_bytes_bucket",
            &[("le", "+Inf")]
        ),
        count(&after)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_streams_are_counted_as_auth_and_limit() {
    let secret = "metrics-secret-0123456789-abcdefghijkl";
    let hub = TestHub::spawn(&[
        ("REALTIME_JWT_SECRET", secret),
        ("REALTIME_MAX_CONNECTIONS_PER_ORG", "1"),
    ])
    .await;
    let org = unique_org("metrics_refuse");
    let other = unique_org("metrics_refuse_other");
    let token = jwt_for(secret, &org, "subscribe", 600);
    let bearer = format!("Bearer {token}");
    let url = hub.url(&format!("/v1/orgs/{org}/stream"));
    let _held = subscribe(&hub, &org, &[("authorization", &bearer)]).await;

    let before = hub.metrics().await;
    let (status, body, _) = common::get_json(&url, &[]).await;
    assert_eq!((status, error_code(&body).as_str()), (401, "unauthorized"));
    let (status, body, _) = common::get_json(
        &hub.url(&format!("/v1/orgs/{other}/stream")),
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!((status, error_code(&body).as_str()), (403, "forbidden_org"));
    let (status, body, _) = common::get_json(&url, &[("authorization", &bearer)]).await;
    assert_eq!(
        (status, error_code(&body).as_str()),
        (429, "too_many_connections_for_org")
    );
    let after = hub.metrics().await;
    assert_eq!(closed(&after, "auth") - closed(&before, "auth"), 2.0);
    assert_eq!(closed(&after, "limit") - closed(&before, "limit"), 1.0);
    // Refusals were never open connections.
    assert_eq!(
        plain(&after, "dashclaw_realtime_connections_opened_total"),
        plain(&before, "dashclaw_realtime_connections_opened_total")
    );
    assert_eq!(plain(&after, "dashclaw_realtime_connections"), 1.0);
    // A publish with the wrong credential is not a stream: not counted as closed.
    let (status, _, _) = post_json(
        &hub.url(&format!("/v1/orgs/{org}/events")),
        &json!({"event": "a.b"}),
        &[],
    )
    .await;
    assert_eq!(status, 401);
    let last = hub.metrics().await;
    assert_eq!(closed(&last, "auth"), closed(&after, "auth"));
}

/// Events written by another program (DashClaw's Node app: XADD then PUBLISH) and by
/// another hub instance count as `redis_external`; the hub's own publishes do not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_external_counts_only_foreign_publishes() {
    let backend = Backend::new(common::BackendKind::Redis).await;
    let redis = backend.redis.as_ref().expect("redis fixture");
    let hub_a = backend.hub(&[]).await;
    let hub_b = backend.hub(&[]).await;
    let org = unique_org("metrics_ext");
    let mut on_a = subscribe(&hub_a, &org, &[]).await;
    let mut on_b = subscribe(&hub_b, &org, &[]).await;
    let a0 = hub_a.metrics().await;
    let b0 = hub_b.metrics().await;

    let own = publish(&hub_a, &org, &json!({"event": "from.hub_a"})).await;
    assert_eq!(
        on_a.expect_event_named("from.hub_a", WAIT).await.json(),
        own
    );
    assert_eq!(
        on_b.expect_event_named("from.hub_a", WAIT).await.json(),
        own
    );

    // The Node app's way: XADD (cursor-less data) then PUBLISH with the cursor.
    let node_id = format!("evt_{org}_node");
    let data = json!({"id": node_id, "org_id": org, "event": "from.node",
        "timestamp": "2026-02-13T18:00:00.000Z", "version": "v1", "payload": {}});
    let stream_key = format!("dashclaw:org:{org}:stream");
    let cursor = redis
        .cmd(&["XADD", &stream_key, "*", "data", &data.to_string()])
        .await
        .text()
        .expect("XADD id");
    let mut with_cursor = data.clone();
    with_cursor["cursor"] = json!(cursor);
    redis
        .cmd(&[
            "PUBLISH",
            &format!("dashclaw:org:{org}:events"),
            &with_cursor.to_string(),
        ])
        .await;
    assert_eq!(
        on_a.expect_event_named("from.node", WAIT).await.json()["id"],
        node_id.as_str()
    );
    assert_eq!(
        on_b.expect_event_named("from.node", WAIT).await.json()["id"],
        node_id.as_str()
    );

    let a1 = hub_a.metrics().await;
    let b1 = hub_b.metrics().await;
    assert_eq!(published(&a1, "http") - published(&a0, "http"), 1.0);
    assert_eq!(
        published(&a1, "redis_external") - published(&a0, "redis_external"),
        1.0,
        "hub A: only the Node app's event is external"
    );
    assert_eq!(published(&b1, "http"), published(&b0, "http"));
    assert_eq!(
        published(&b1, "redis_external") - published(&b0, "redis_external"),
        2.0,
        "hub B: hub A's and the Node app's events are both external"
    );
    // Both hubs delivered both events to their one client.
    for (now, then) in [(&a1, &a0), (&b1, &b0)] {
        assert_eq!(
            plain(now, "dashclaw_realtime_events_delivered_total")
                - plain(then, "dashclaw_realtime_events_delivered_total"),
            2.0
        );
    }
}

/// A dropped pub/sub connection is re-established (counted), and the supervisor's gap
/// fill delivers what only the stream has (counted once, as it delivered an event).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_reconnect_and_gap_fill_are_counted() {
    let backend = Backend::new(common::BackendKind::Redis).await;
    let redis = backend.redis.as_ref().expect("redis fixture");
    let hub = backend.hub(&[]).await;
    assert!(hub.wait_ready(WAIT).await, "hub never became ready");
    let org = unique_org("metrics_gap");
    let mut client = subscribe(&hub, &org, &[]).await;
    let before = hub.metrics().await;

    // In the stream but never published: only a gap fill can deliver it.
    let data = json!({"id": format!("evt_{org}_stream_only"), "org_id": org,
        "event": "stream.only", "timestamp": "2026-02-13T18:00:00.000Z", "version": "v1",
        "payload": {}});
    let stream_key = format!("dashclaw:org:{org}:stream");
    redis
        .cmd(&["XADD", &stream_key, "*", "data", &data.to_string()])
        .await;
    redis.cmd(&["CLIENT", "KILL", "TYPE", "pubsub"]).await;

    let filled = client.expect_event_named("stream.only", secs(20)).await;
    assert_eq!(filled.json()["id"], data["id"]);
    let after = wait_metrics(&hub, "redis_reconnects and gap_fills", WAIT, |text| {
        plain(text, "dashclaw_realtime_redis_reconnects_total")
            > plain(&before, "dashclaw_realtime_redis_reconnects_total")
            && plain(text, "dashclaw_realtime_gap_fills_total")
                > plain(&before, "dashclaw_realtime_gap_fills_total")
    })
    .await;
    assert_eq!(
        plain(&after, "dashclaw_realtime_gap_fills_total")
            - plain(&before, "dashclaw_realtime_gap_fills_total"),
        1.0,
        "one fill delivered the stream-only event"
    );
    assert!(metric_sum(&after, "dashclaw_realtime_redis_reconnects_total") >= 1.0);
}

/// The in-process producer API counts as `in_process`, not `http`; and a hub shutting down
/// counts the streams it ends as `shutdown` (read in-process: HTTP is gone by then).
#[actix_web::test]
async fn in_process_publishes_and_shutdown_are_counted() {
    use dashclaw_realtime::auth::Auth;
    use dashclaw_realtime::config::Config;
    use dashclaw_realtime::envelope::{OrgId, PublishRequest, Topic};
    use dashclaw_realtime::hub::Publish;

    let config = Config {
        bind: "127.0.0.1:0".parse().expect("loopback address"),
        shutdown_grace: secs(5),
        ..Default::default()
    };
    let running = dashclaw_realtime::server::start(config, Auth::off())
        .unwrap_or_else(|e| panic!("starting the hub: {e}"));
    let hub = running.hub.clone();
    let base = format!("http://{}", running.addr);
    let org = unique_org("metrics_inproc");
    let topic = Topic::Org(OrgId::parse(&org).expect("org id"));
    let mut client = SseClient::connect_ok(&format!("{base}/v1/orgs/{org}/stream"), &[]).await;
    client.expect_event_named("realtime.connected", WAIT).await;
    let scrape = || async {
        let (status, text, _) = common::get(&format!("{base}/metrics"), &[]).await;
        assert_eq!(status, 200, "{text}");
        text
    };
    let before = scrape().await;

    hub.publish_one(topic.clone(), PublishRequest::new("a.one", json!({})))
        .await
        .expect("publish_one");
    hub.addr()
        .send(Publish {
            topic,
            requests: vec![
                PublishRequest::new("a.two", json!({})),
                PublishRequest::new("a.three", json!({})),
            ],
        })
        .await
        .expect("hub mailbox")
        .expect("publish");
    client.expect_event_named("a.three", WAIT).await;
    let after = scrape().await;
    assert_eq!(
        published(&after, "in_process") - published(&before, "in_process"),
        3.0
    );
    assert_eq!(published(&after, "http"), published(&before, "http"));
    assert_eq!(
        plain(&after, "dashclaw_realtime_publish_duration_seconds_count")
            - plain(&before, "dashclaw_realtime_publish_duration_seconds_count"),
        2.0,
        "one observation per publish call"
    );
    // The handle reads the same registry the endpoint serves.
    assert_eq!(
        published(&hub.metrics().render(), "in_process"),
        published(&after, "in_process")
    );

    let metrics = hub.metrics().clone();
    running.shutdown().await.expect("shutdown");
    assert!(
        client.wait_end(WAIT).await.is_some(),
        "the stream did not end"
    );
    let deadline = Instant::now() + WAIT;
    loop {
        let text = metrics.render();
        if closed(&text, "shutdown") - closed(&before, "shutdown") == 1.0 {
            assert_eq!(closed(&text, "client"), closed(&before, "client"));
            assert_eq!(plain(&text, "dashclaw_realtime_connections"), 0.0);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "closed{{reason=shutdown}} did not count the ended stream:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
