//! DashClaw's SDK keys against a real PostgreSQL that the test starts itself (initdb on a
//! free port), with DashClaw's `api_keys` columns: valid, unknown and revoked keys, a
//! revoked key's open stream ending within the cache TTL, Postgres stopped and restarted
//! under a live hub; and the keys file reloaded on change and on SIGHUP.

mod common;

use std::time::{Duration, Instant};

use common::{
    Received, SseClient, SseItem, TestHub, TestPostgres, error_code, get_json, header_str, jwt_for,
    metric_value, post_json, secs, sha256_hex, unique_org,
};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);
const TTL_SECONDS: u64 = 2;
const JWT_SECRET: &str = "hub-jwt-secret-of-at-least-32-bytes!!";

fn new_key() -> String {
    format!("oc_live_{}", &sha256_hex(&ulid_like())[..32])
}

fn ulid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}-{:?}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        Instant::now()
    )
}

async fn hub_on(pg: &TestPostgres, extra: &[(&str, &str)]) -> TestHub {
    let url = pg.url();
    let ttl = TTL_SECONDS.to_string();
    let mut env = vec![
        ("DATABASE_URL", url.as_str()),
        ("REALTIME_API_KEY_CACHE_SECONDS", ttl.as_str()),
        ("REALTIME_JWT_SECRET", JWT_SECRET),
        ("REALTIME_RETRY_MS", "777"),
    ];
    env.extend_from_slice(extra);
    TestHub::spawn(&env).await
}

async fn stream_status(hub: &TestHub, path: &str, key: &str) -> (u16, String) {
    let (status, body) =
        SseClient::connect_expect_status(&hub.url(path), &[("x-api-key", key)]).await;
    let code = if status == 200 {
        String::new()
    } else {
        error_code(&body)
    };
    (status, code)
}

async fn connected_org(hub: &TestHub, key: &str) -> String {
    let mut client = SseClient::connect_ok(&hub.url("/api/stream"), &[("x-api-key", key)]).await;
    let connected = client.expect_event_named("connected", WAIT).await;
    connected.json()["orgId"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Reads until the stream ends; returns the items and how long that took.
async fn until_end(client: &mut SseClient, limit: Duration) -> (Vec<SseItem>, Duration) {
    let started = Instant::now();
    let mut items = Vec::new();
    loop {
        match client
            .next_item(limit.saturating_sub(started.elapsed()))
            .await
        {
            Some(Received::Item(item)) => items.push(item),
            Some(Received::Ended(_)) => return (items, started.elapsed()),
            None => panic!("the stream did not end within {limit:?}; got {items:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_keys_valid_unknown_and_revoked() {
    let org = unique_org("pgkeys");
    let pg = TestPostgres::spawn().await;
    pg.create_dashclaw_schema(&[&org]).await;
    let key = new_key();
    let doomed = new_key();
    pg.insert_key(&key, &org, "admin").await;
    pg.insert_key(&doomed, &org, "member").await;
    let env_org = unique_org("envkey");
    let hub = hub_on(
        &pg,
        &[
            ("DASHCLAW_API_KEY", "oc_live_env_fast_path"),
            ("DASHCLAW_API_KEY_ORG", &env_org),
        ],
    )
    .await;

    assert_eq!(connected_org(&hub, &key).await, org);
    assert_eq!(
        stream_status(&hub, &format!("/v1/orgs/{org}/stream"), &key)
            .await
            .0,
        200
    );
    let other = format!("/v1/orgs/{}/stream", unique_org("pg_other"));
    assert_eq!(
        stream_status(&hub, &other, &key).await,
        (403, "forbidden_org".into())
    );
    assert_eq!(
        stream_status(&hub, "/api/stream", &new_key()).await,
        (401, "invalid_api_key".into())
    );
    // DASHCLAW_API_KEY: the fast path, its org from DASHCLAW_API_KEY_ORG.
    assert_eq!(connected_org(&hub, "oc_live_env_fast_path").await, env_org);
    // Keys from DashClaw only subscribe: publishing with one is refused for its scope; a key
    // the database does not know is not a credential at all.
    let publish_with = |key: String| {
        let url = hub.url(&format!("/v1/orgs/{org}/events"));
        async move {
            let (status, body, _) = post_json(
                &url,
                &json!({"event": "action.created"}),
                &[("x-api-key", key.as_str())],
            )
            .await;
            (status, error_code(&body))
        }
    };
    assert_eq!(
        publish_with(key.clone()).await,
        (403, "insufficient_scope".into())
    );
    assert_eq!(
        publish_with(new_key()).await,
        (401, "invalid_api_key".into())
    );

    // An open stream of a key that gets revoked ends within the TTL, with retry:.
    let mut open =
        SseClient::connect_ok(&hub.url("/api/stream"), &[("x-api-key", doomed.as_str())]).await;
    open.expect_event_named("connected", WAIT).await;
    pg.revoke_key(&doomed).await;
    let (items, took) = until_end(&mut open, secs(TTL_SECONDS + 20)).await;
    assert!(
        matches!(items.last(), Some(SseItem::Retry(777))),
        "{items:?}"
    );
    // Within the TTL, plus the time a busy machine takes to run one query.
    assert!(
        took <= secs(TTL_SECONDS + 3),
        "the revoked key's stream lasted {took:?}"
    );
    assert_eq!(
        stream_status(&hub, "/api/stream", &doomed).await,
        (401, "invalid_api_key".into())
    );
    let metrics = hub.metrics().await;
    let revoked = metric_value(
        &metrics,
        "dashclaw_realtime_connections_closed_total",
        &[("reason", "revoked")],
    );
    assert_eq!(revoked, Some(1.0));
    // The other key's streams are untouched.
    assert_eq!(connected_org(&hub, &key).await, org);
    // The key itself and its hash never reach the log.
    let log = hub.log_text();
    for secret in [&key, &doomed, &sha256_hex(&key), &sha256_hex(&doomed)] {
        assert!(
            !log.contains(secret.as_str()),
            "a key reached the log:\n{log}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_and_restarted_under_a_live_hub() {
    let org = unique_org("pgdown");
    let mut pg = TestPostgres::spawn().await;
    pg.create_dashclaw_schema(&[&org]).await;
    let known = new_key();
    let never_used = new_key();
    pg.insert_key(&known, &org, "admin").await;
    pg.insert_key(&never_used, &org, "admin").await;
    let hub = hub_on(&pg, &[]).await;
    assert_eq!(connected_org(&hub, &known).await, org);
    let mut live =
        SseClient::connect_ok(&hub.url("/api/stream"), &[("x-api-key", known.as_str())]).await;
    live.expect_event_named("connected", WAIT).await;

    pg.stop().await;
    // Past the TTL, so nothing is answered from the fresh cache any more.
    tokio::time::sleep(secs(TTL_SECONDS + 1)).await;
    // A key not in the cache: 503 auth_unavailable with Retry-After, not 401.
    let (status, body, headers) = SseClient::connect_expect_status_with_headers(
        &hub.url("/api/stream"),
        &[("x-api-key", never_used.as_str())],
    )
    .await;
    assert_eq!(
        (status, error_code(&body).as_str()),
        (503, "auth_unavailable"),
        "{body}"
    );
    assert!(header_str(&headers, "retry-after").is_some());
    // A key that was working keeps working, and its open stream stays open.
    assert_eq!(connected_org(&hub, &known).await, org);
    // /readyz says why.
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, body, _) = get_json(&hub.url("/readyz"), &[]).await;
        if body["status"] == json!("degraded") {
            assert_eq!(status, 200);
            let reason = body["reason"].as_str().unwrap_or_default();
            assert!(reason.contains("key database"), "{body}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "readyz never said degraded: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let during = live.collect_items_for(Duration::from_millis(300)).await;
    assert!(
        live.ended().is_none(),
        "the open stream ended while Postgres was down: {during:?}"
    );

    pg.start().await;
    // The hub finds the database again by itself.
    let deadline = Instant::now() + secs(30);
    loop {
        let (status, body, _) = get_json(&hub.url("/readyz"), &[]).await;
        if status == 200 && body["status"] == json!("ready") {
            break;
        }
        assert!(Instant::now() < deadline, "readyz did not recover: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(connected_org(&hub, &never_used).await, org);
    assert!(live.ended().is_none());
}

fn write_keys(path: &std::path::Path, lines: &[(&str, &str)]) {
    let text: String = lines
        .iter()
        .map(|(key, org)| format!("{} {org} subscribe\n", sha256_hex(key)))
        .collect();
    std::fs::write(path, text).unwrap_or_else(|e| panic!("writing keys: {e}"));
}

async fn wait_status(hub: &TestHub, key: &str, want: u16) {
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, _) = stream_status(hub, "/api/stream", key).await;
        if status == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "key never answered {want} (last {status})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_file_reloads_on_change_and_sighup_and_keeps_keys_on_failure() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let path = dir.path().join("keys.txt");
    let org = unique_org("reload");
    write_keys(&path, &[("key-one", &org)]);
    let path_text = path.display().to_string();
    let hub = TestHub::spawn(&[("REALTIME_API_KEYS_FILE", path_text.as_str())]).await;
    wait_status(&hub, "key-one", 200).await;
    assert_eq!(stream_status(&hub, "/api/stream", "key-two").await.0, 401);

    // Changed on disk: picked up without a restart.
    write_keys(&path, &[("key-one", &org), ("key-two", &org)]);
    wait_status(&hub, "key-two", 200).await;

    // A broken file is not loaded: the keys in force stay, and the log says why.
    std::fs::write(&path, "not a keys line\n").unwrap_or_else(|e| panic!("{e}"));
    assert!(
        hub.wait_for_log("not reloaded", WAIT).await,
        "{}",
        hub.log_text()
    );
    assert_eq!(stream_status(&hub, "/api/stream", "key-two").await.0, 200);

    // SIGHUP re-reads it (here after a fix that drops key-one).
    write_keys(&path, &[("key-two", &org)]);
    hub.signal(libc::SIGHUP);
    wait_status(&hub, "key-one", 401).await;
    assert_eq!(stream_status(&hub, "/api/stream", "key-two").await.0, 200);
    assert!(hub.wait_for_log("SIGHUP", WAIT).await);
    assert!(hub.is_running(), "SIGHUP must not stop the hub");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_hash_in_the_keys_file_names_both_lines() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let path = dir.path().join("keys.txt");
    let hash = sha256_hex("same-key");
    std::fs::write(
        &path,
        format!("# keys\n{hash} org_a subscribe\n\n{hash} org_b subscribe,publish\n"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let path_text = path.display().to_string();
    let (status, output) =
        TestHub::spawn_expect_exit(&[("REALTIME_API_KEYS_FILE", path_text.as_str())], &[]).await;
    assert_eq!(status.code(), Some(2), "{output}");
    assert!(output.contains("REALTIME_API_KEYS_FILE"), "{output}");
    assert!(
        output.contains("line 4") && output.contains("line 2"),
        "{output}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_opened_with_a_hub_token_ends_at_its_exp() {
    let hub = TestHub::spawn(&[
        ("REALTIME_JWT_SECRET", JWT_SECRET),
        ("REALTIME_RETRY_MS", "555"),
    ])
    .await;
    let org = unique_org("jwt_exp");
    let token = jwt_for(JWT_SECRET, &org, "subscribe", 2);
    let auth = format!("Bearer {token}");
    let mut client = SseClient::connect_ok(
        &hub.url(&format!("/v1/orgs/{org}/stream")),
        &[("authorization", auth.as_str())],
    )
    .await;
    client.expect_event_named("realtime.connected", WAIT).await;
    let (items, _) = until_end(&mut client, secs(30)).await;
    assert!(
        matches!(items.last(), Some(SseItem::Retry(555))),
        "{items:?}"
    );
}
