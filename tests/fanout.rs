//! Live fan-out under concurrent load: every client of an org gets exactly its org's
//! events, once, in cursor order, and nothing of other orgs (contract sections 3, 4, 6).

#[macro_use]
mod common;

use common::{assert_same_ids, cursor_key, delivered_envelope, str_field};

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures_util::future::join_all;
use serde_json::{Value, json};

use common::{Backend, SseClient, TestHub, error_code, jwt_for, post_json, secs, unique_org};

backend_tests!(
    fan_out_exactly_once_in_order,
    org_isolation_under_load_with_auth
);

/// Owned header pairs.
type Headers = Vec<(String, String)>;

/// Upper bound for a client to receive what was published; never a speed expectation.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);

/// POSTs `body` to `path` and returns the stored envelopes, insisting on 202.
async fn publish(hub: &TestHub, path: &str, body: &Value, headers: &[(&str, &str)]) -> Vec<Value> {
    let (status, resp, _) = post_json(&hub.url(path), body, headers).await;
    assert_eq!(status, 202, "POST {path} {body}: {resp}");
    match (body, resp) {
        (Value::Array(items), Value::Array(out)) => {
            assert_eq!(out.len(), items.len(), "batch answer size for {body}");
            out
        }
        (Value::Object(_), out @ Value::Object(_)) => vec![out],
        (_, other) => panic!("POST {path} {body}: answer shape does not match: {other}"),
    }
}

/// Opens a stream and waits for its `realtime.connected`, which must come first
/// (nothing to replay) and name the org and backend.
async fn connect_live(url: &str, headers: &[(&str, &str)], org: &str, backend: &str) -> SseClient {
    let mut client = SseClient::connect_ok(url, headers).await;
    let first = client.expect_event(secs(20)).await;
    assert_eq!(
        first.event, "realtime.connected",
        "first event on {url}: {first:?}"
    );
    assert!(
        !first.had_id_field,
        "control event with an id: line: {first:?}"
    );
    let data = first.json();
    assert_eq!(data["org_id"], json!(org), "{data}");
    assert_eq!(data["backend"], json!(backend), "{data}");
    assert_eq!(data["replayed"], json!(0), "{data}");
    client
}

/// Reads `want.len()` events and checks they are exactly `want`, with well-formed frames.
async fn expect_exactly(
    client: &mut SseClient,
    org: &str,
    want: &[String],
    label: &str,
) -> Vec<String> {
    let events = client.collect_events(want.len(), DELIVERY_TIMEOUT).await;
    let mut ids = Vec::with_capacity(events.len());
    let mut previous: Option<(u64, u64)> = None;
    for ev in &events {
        let env = delivered_envelope(ev, org);
        let key = cursor_key(str_field(&env, "cursor"));
        if let Some(prev) = previous {
            assert!(
                key > prev,
                "{label}: cursor {key:?} after {prev:?} is not increasing"
            );
        }
        previous = Some(key);
        ids.push(str_field(&env, "id").to_string());
    }
    assert_same_ids(label, &ids, want);
    ids
}

/// Publishes one sentinel per org and asserts it is the very next event each client sees,
/// which proves nothing else (duplicate, foreign, late) was queued before it.
async fn expect_sentinel_next(
    hub: &TestHub,
    clients: &mut [(String, SseClient)],
    headers_for: impl Fn(&str) -> Headers,
) {
    let mut sentinels: HashMap<String, String> = HashMap::new();
    let orgs: HashSet<String> = clients.iter().map(|(org, _)| org.clone()).collect();
    for org in orgs {
        let headers = headers_for(&org);
        let pairs: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let stored = publish(
            hub,
            &format!("/v1/orgs/{org}/events"),
            &json!({"event": "test.sentinel"}),
            &pairs,
        )
        .await;
        sentinels.insert(org, str_field(&stored[0], "id").to_string());
    }
    for (i, (org, client)) in clients.iter_mut().enumerate() {
        let ev = client.expect_event(DELIVERY_TIMEOUT).await;
        let env = delivered_envelope(&ev, org);
        assert_eq!(
            str_field(&env, "id"),
            sentinels[org.as_str()],
            "client {i} of {org}: expected the sentinel next, got {env}"
        );
    }
}

/// Event names cycled through by the publishers.
const NAMES: [&str; 4] = [
    "action.created",
    "action.updated",
    "signal.detected",
    "guard.decision.created",
];

/// One publish call: which org and how many events (1 = a single object body).
#[derive(Clone, Copy)]
struct Call {
    org: usize,
    size: usize,
}

/// A deterministic plan of calls totalling `total` events over `orgs` orgs, mixing single
/// events and small batches so both publish paths interleave.
fn plan(total: usize, orgs: usize) -> Vec<Call> {
    const SIZES: [usize; 8] = [1, 1, 3, 1, 2, 5, 1, 4];
    let mut calls = Vec::new();
    let mut left = total;
    let mut n = 0;
    while left > 0 {
        let size = SIZES[n % SIZES.len()].min(left);
        // 7 is coprime with the org count used here, so every org gets calls.
        calls.push(Call {
            org: (n * 7) % orgs,
            size,
        });
        left -= size;
        n += 1;
    }
    calls
}

fn call_body(call: Call, task: usize, n: usize) -> Value {
    let item = |k: usize| {
        json!({
            "event": NAMES[(n + k) % NAMES.len()],
            "payload": {"task": task, "call": n, "k": k},
        })
    };
    if call.size == 1 {
        item(0)
    } else {
        Value::Array((0..call.size).map(item).collect())
    }
}

/// Runs `calls` split round-robin over `tasks` concurrent tokio tasks; returns every
/// stored envelope with the index of its org.
async fn publish_concurrently(
    hub: &TestHub,
    orgs: &[String],
    calls: Vec<Call>,
    tasks: usize,
    headers_for: impl Fn(&str) -> Headers,
) -> Vec<(usize, Value)> {
    let mut handles = Vec::new();
    for task in 0..tasks {
        let mine: Vec<(usize, Call)> = calls
            .iter()
            .copied()
            .enumerate()
            .filter(|(n, _)| n % tasks == task)
            .collect();
        let jobs: Vec<(String, Value, Headers, usize)> = mine
            .into_iter()
            .map(|(n, call)| {
                let org = &orgs[call.org];
                (
                    hub.url(&format!("/v1/orgs/{org}/events")),
                    call_body(call, task, n),
                    headers_for(org),
                    call.org,
                )
            })
            .collect();
        handles.push(tokio::spawn(async move {
            let mut stored = Vec::new();
            for (url, body, headers, org) in jobs {
                let pairs: Vec<(&str, &str)> = headers
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                let (status, resp, _) = post_json(&url, &body, &pairs).await;
                assert_eq!(status, 202, "POST {url} {body}: {resp}");
                match resp {
                    Value::Array(out) => stored.extend(out.into_iter().map(|e| (org, e))),
                    out @ Value::Object(_) => stored.push((org, out)),
                    other => panic!("POST {url}: unexpected answer {other}"),
                }
            }
            stored
        }));
    }
    let mut all = Vec::new();
    for handle in handles {
        all.extend(
            handle
                .await
                .unwrap_or_else(|e| panic!("publisher task: {e}")),
        );
    }
    all
}

/// Groups stored envelopes per org, sorted by cursor, and checks ids and cursors are unique.
fn expected_per_org(orgs: &[String], stored: &[(usize, Value)]) -> Vec<Vec<String>> {
    let mut ids = HashSet::new();
    let mut per_org: Vec<Vec<(u64, u64, String)>> = vec![Vec::new(); orgs.len()];
    for (org, env) in stored {
        assert_eq!(
            str_field(env, "org_id"),
            orgs[*org],
            "stored envelope {env}"
        );
        let id = str_field(env, "id").to_string();
        assert!(ids.insert(id.clone()), "id {id} stored twice");
        let (ms, seq) = cursor_key(str_field(env, "cursor"));
        per_org[*org].push((ms, seq, id));
    }
    per_org
        .into_iter()
        .enumerate()
        .map(|(i, mut events)| {
            events.sort();
            for pair in events.windows(2) {
                assert!(
                    (pair[0].0, pair[0].1) < (pair[1].0, pair[1].1),
                    "org {} got the same cursor twice: {pair:?}",
                    orgs[i]
                );
            }
            events.into_iter().map(|(_, _, id)| id).collect()
        })
        .collect()
}

async fn fan_out_exactly_once_in_order(backend: Backend) {
    const ORGS: usize = 20;
    const PER_ORG: usize = 10;
    const EVENTS: usize = 500;
    let hub = backend.hub(&[]).await;
    let orgs: Vec<String> = (0..ORGS).map(|_| unique_org("fanout")).collect();

    // Every client must be live before the first publish, or "exactly its org's events"
    // would depend on when it joined.
    let connects = (0..ORGS * PER_ORG).map(|i| {
        let org = orgs[i % ORGS].clone();
        let url = hub.url(&format!("/v1/orgs/{org}/stream"));
        let name = backend.name();
        async move {
            let client = connect_live(&url, &[], &org, name).await;
            (org, client)
        }
    });
    let mut clients: Vec<(String, SseClient)> = join_all(connects).await;

    let stored = publish_concurrently(&hub, &orgs, plan(EVENTS, ORGS), 5, |_| Vec::new()).await;
    assert_eq!(stored.len(), EVENTS);
    let expected = expected_per_org(&orgs, &stored);
    assert!(
        expected.iter().all(|ids| !ids.is_empty()),
        "plan missed an org"
    );

    let reads = clients.iter_mut().enumerate().map(|(i, (org, client))| {
        let want = &expected[orgs.iter().position(|o| o == org).unwrap_or(usize::MAX)];
        let label = format!("client {i} of {org}");
        async move { (org.clone(), expect_exactly(client, org, want, &label).await) }
    });
    let sequences = join_all(reads).await;
    let mut first_seen: HashMap<String, Vec<String>> = HashMap::new();
    for (org, ids) in sequences {
        let reference = first_seen.entry(org.clone()).or_insert_with(|| ids.clone());
        assert_eq!(*reference, ids, "clients of {org} saw different sequences");
    }

    expect_sentinel_next(&hub, &mut clients, |_| Vec::new()).await;
}

fn bearer(token: &str) -> Headers {
    vec![("Authorization".into(), format!("Bearer {token}"))]
}

async fn org_isolation_under_load_with_auth(backend: Backend) {
    const SECRET: &str = "fanout-isolation-test-secret-32-bytes";
    let hub = backend.hub(&[("REALTIME_JWT_SECRET", SECRET)]).await;
    let a = unique_org("iso_a");
    let b = unique_org("iso_b");
    let sub_a = jwt_for(SECRET, &a, "subscribe", 3600);
    let sub_b = jwt_for(SECRET, &b, "subscribe", 3600);
    let pub_a = jwt_for(SECRET, &a, "publish", 3600);
    let pub_b = jwt_for(SECRET, &b, "publish", 3600);
    let ops = jwt_for(SECRET, &a, "ops", 3600);
    let stream_a = hub.url(&format!("/v1/orgs/{a}/stream"));
    let stream_b = hub.url(&format!("/v1/orgs/{b}/stream"));
    let ops_stream = hub.url("/v1/ops/stream");

    let refused: [(&str, Headers, u16, &str); 4] = [
        ("no token", Vec::new(), 401, "unauthorized"),
        ("subscribe token of B", bearer(&sub_b), 403, "forbidden_org"),
        (
            "publish-only token of A",
            bearer(&pub_a),
            403,
            "insufficient_scope",
        ),
        (
            "org token without ops scope",
            bearer(&jwt_for(SECRET, &a, "subscribe publish", 3600)),
            403,
            "insufficient_scope",
        ),
    ];
    for (i, (what, headers, status, code)) in refused.iter().enumerate() {
        let url = if i == 3 { &ops_stream } else { &stream_a };
        let pairs: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let (got, body) = SseClient::connect_expect_status(url, &pairs).await;
        assert_eq!(got, *status, "{what} on {url}: {body}");
        assert_eq!(error_code(&body), *code, "{what} on {url}: {body}");
    }

    // Half of A's clients pass the token as `access_token`, as EventSource must.
    let mut clients: Vec<(String, SseClient)> = Vec::new();
    for i in 0..10 {
        let client = if i % 2 == 0 {
            let header = format!("Bearer {sub_a}");
            connect_live(&stream_a, &[("Authorization", &header)], &a, backend.name()).await
        } else {
            let url = format!("{stream_a}?access_token={sub_a}");
            connect_live(&url, &[], &a, backend.name()).await
        };
        clients.push((a.clone(), client));
    }
    for _ in 0..3 {
        let header = format!("Bearer {sub_b}");
        let client =
            connect_live(&stream_b, &[("Authorization", &header)], &b, backend.name()).await;
        clients.push((b.clone(), client));
    }
    let ops_header = format!("Bearer {ops}");
    let mut ops_client =
        SseClient::connect_ok(&ops_stream, &[("Authorization", &ops_header)]).await;
    let connected = ops_client.expect_event(secs(20)).await;
    assert_eq!(connected.event, "realtime.connected", "{connected:?}");

    let orgs = vec![a.clone(), b.clone()];
    let publish_token = |org: &str| {
        if org == a {
            bearer(&pub_a)
        } else {
            bearer(&pub_b)
        }
    };
    // Calls alternate between the orgs, so both are published to at the same time.
    let calls: Vec<Call> = plan(240, 1)
        .into_iter()
        .enumerate()
        .map(|(n, call)| Call {
            org: n % 2,
            size: call.size,
        })
        .collect();
    let stored = publish_concurrently(&hub, &orgs, calls, 4, publish_token).await;
    let expected = expected_per_org(&orgs, &stored);
    assert!(
        expected.iter().all(|ids| ids.len() > 50),
        "plan skewed: {expected:?}"
    );

    for (i, (org, client)) in clients.iter_mut().enumerate() {
        let want = if *org == a {
            &expected[0]
        } else {
            &expected[1]
        };
        expect_exactly(client, org, want, &format!("client {i} of {org}")).await;
    }

    // A credential for B cannot publish to A, and an org token cannot publish to ops;
    // the sentinels below prove those requests stored nothing.
    let (status, body, _) = post_json(
        &hub.url(&format!("/v1/orgs/{a}/events")),
        &json!({"event": "test.cross_org"}),
        &[("Authorization", &format!("Bearer {pub_b}"))],
    )
    .await;
    assert_eq!(
        (status, error_code(&body).as_str()),
        (403, "forbidden_org"),
        "{body}"
    );
    let org_all = jwt_for(SECRET, &a, "subscribe publish", 3600);
    let (status, body, _) = post_json(
        &hub.url("/v1/ops/events"),
        &json!({"event": "test.not_ops"}),
        &[("Authorization", &format!("Bearer {org_all}"))],
    )
    .await;
    assert_eq!(
        (status, error_code(&body).as_str()),
        (403, "insufficient_scope"),
        "{body}"
    );

    expect_sentinel_next(&hub, &mut clients, publish_token).await;

    let stored = publish(
        &hub,
        "/v1/ops/events",
        &json!({"event": "test.ops_sentinel"}),
        &[("Authorization", &ops_header)],
    )
    .await;
    let ev = ops_client.expect_event(DELIVERY_TIMEOUT).await;
    assert!(ev.had_id_field, "{ev:?}");
    assert_eq!(
        ev.json()["id"],
        stored[0]["id"],
        "ops stream: expected the sentinel next, got {ev:?}"
    );
}
