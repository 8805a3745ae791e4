//! The ingress for real: nginx running `deploy/nginx.conf` (with the test's own ports) in
//! front of the hub and a stand-in for DashClaw's Next app. Debian's Chromium loads the
//! dashboard page through nginx with DashClaw's session cookie and gets named events from
//! `new EventSource('/api/stream')`, again after the hub restarts; and the README's DashClaw
//! section, followed step by step, ends with the rollback to the Next app.

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::dashclaw::{NEXTAUTH_COOKIE, nextauth_token};
use common::{
    Resp, SseClient, TestHub, TestNginx, TestPostgres, TestRedis, free_port, get, jwt_for,
    post_json, secs, sha256_hex, unique_org,
};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

const SECRET: &str = "ingress-nextauth-secret-shared-with-dashclaw";
const JWT_SECRET: &str = "ingress-hub-jwt-secret-of-32-bytes-min";
const WAIT: Duration = Duration::from_secs(30);

/// The dashboard page, as DashClaw's `useRealtime` opens its stream: same origin, no token.
const PAGE: &str = r#"<!doctype html><html><head><meta charset="utf-8"><title>dashboard</title></head>
<body><script>
window.rec = { events: [] };
const es = new EventSource('/api/stream');
const record = (e) => window.rec.events.push({ type: e.type, data: e.data, id: e.lastEventId });
for (const t of ['connected', 'action.created', 'message.created']) es.addEventListener(t, record);
es.onerror = () => window.rec.events.push({ type: 'error', data: String(es.readyState) });
</script></body></html>"#;

/// A stand-in for DashClaw's Next app: the dashboard page, and its own `/api/stream`
/// (answering `from-next`, which is what the rollback must reach).
async fn next_app() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("binding the Next stand-in: {e}"));
    let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&head);
                let path = text.split_whitespace().nth(1).unwrap_or("/").to_owned();
                let (kind, body) = if path.starts_with("/api/stream") {
                    ("text/plain", "from-next".to_owned())
                } else {
                    ("text/html; charset=utf-8", PAGE.to_owned())
                };
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
            });
        }
    });
    port
}

async fn publish(hub_base: &str, org: &str, id: &str) {
    let auth = format!("Bearer {}", jwt_for(JWT_SECRET, org, "publish", 600));
    let (status, body, _) = post_json(
        &format!("{hub_base}/v1/orgs/{org}/events"),
        &json!({"event": "action.created", "payload": {"action": {"id": id}}}),
        &[("authorization", auth.as_str())],
    )
    .await;
    assert_eq!(status, 202, "{body}");
}

fn require_browser() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    for path in [
        PathBuf::from("/usr/bin/chromium"),
        root.join("tests/browser/node_modules/playwright-core/package.json"),
    ] {
        assert!(
            path.exists(),
            "{} missing: run scripts/install-test-deps.sh",
            path.display()
        );
    }
}

/// Reads the driver's JSON lines until one matches.
async fn wait_line<R: tokio::io::AsyncBufRead + Unpin>(
    lines: &mut tokio::io::Lines<R>,
    seen: &mut Vec<Value>,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) {
    let deadline = Instant::now() + secs(60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, lines.next_line()).await {
            Ok(Ok(Some(line))) => {
                let value: Value = serde_json::from_str(&line).unwrap_or(json!({"raw": line}));
                let hit = pred(&value);
                seen.push(value);
                if hit {
                    return;
                }
            }
            _ => panic!("the browser never recorded {what}; recorded: {seen:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_through_nginx_with_the_session_cookie_and_a_hub_restart() {
    require_browser();
    let org = unique_org("ingress");
    let hub_port = free_port();
    let bind = format!("127.0.0.1:{hub_port}");
    let env = [
        ("NEXTAUTH_SECRET", SECRET),
        ("REALTIME_JWT_SECRET", JWT_SECRET),
        ("REALTIME_RETRY_MS", "500"),
        ("REALTIME_SHUTDOWN_GRACE_SECONDS", "3"),
        ("REALTIME_BIND", bind.as_str()),
    ];
    let hub = TestHub::spawn(&env).await;
    let next_port = next_app().await;
    let nginx = TestNginx::spawn(hub_port, next_port).await;
    let token = nextauth_token(
        &json!({"orgId": org, "role": "member", "userId": "usr_1"}),
        SECRET,
        3600,
    );

    let driver = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/dashclaw/drive-browser.mjs");
    let mut child = tokio::process::Command::new("node")
        .arg(&driver)
        .arg(format!("{}/dashboard", nginx.base_url()))
        .arg(NEXTAUTH_COOKIE)
        .arg(&token)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("spawning node: {e}"));
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut seen = Vec::new();

    wait_line(&mut lines, &mut seen, "connected", |v| {
        v["type"] == "connected"
    })
    .await;
    let first: Value =
        serde_json::from_str(seen.last().and_then(|v| v["data"].as_str()).unwrap_or("{}"))
            .unwrap_or_default();
    assert_eq!(
        first["orgId"],
        json!(org),
        "the org comes from the session cookie"
    );
    publish(&hub.base_url(), &org, "a1").await;
    wait_line(&mut lines, &mut seen, "action a1", |v| {
        v["type"] == "action.created" && v["data"] == json!(r#"{"id":"a1"}"#)
    })
    .await;

    // The hub restarts; the page is not touched: EventSource comes back by itself.
    hub.sigterm();
    assert!(hub.wait_exit(WAIT).await.is_some(), "hub did not stop");
    drop(hub);
    let hub = TestHub::spawn(&env).await;
    wait_line(&mut lines, &mut seen, "a second connected", |v| {
        v["type"] == "connected"
    })
    .await;
    publish(&hub.base_url(), &org, "a2").await;
    wait_line(&mut lines, &mut seen, "action a2", |v| {
        v["type"] == "action.created" && v["data"] == json!(r#"{"id":"a2"}"#)
    })
    .await;
    drop(child.stdin.take());
    let _ = tokio::time::timeout(WAIT, child.wait()).await;
}

/// The env block of the README's DashClaw section (between its marker and the fence).
fn readme_env() -> Vec<(String, String)> {
    let readme =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("README.md"))
            .unwrap_or_else(|e| panic!("README.md: {e}"));
    let block = readme
        .split_once("<!-- test: dashclaw-env -->")
        .and_then(|(_, rest)| rest.split_once("```sh\n"))
        .and_then(|(_, rest)| rest.split_once("```"))
        .map(|(block, _)| block)
        .unwrap_or_else(|| panic!("README.md has no dashclaw-env block"));
    block
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .map(|l| {
            let (k, v) = l
                .split_once('=')
                .unwrap_or_else(|| panic!("not KEY=value: {l}"));
            (k.trim().to_owned(), v.trim().to_owned())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_dashclaw_section_step_by_step() {
    let org = unique_org("readme");
    let sdk_key = format!("oc_live_{}", &sha256_hex(&org)[..32]);
    let env_key = "oc_live_dashclaw_env_key_for_the_readme";
    // DashClaw's side: its Postgres with an SDK key, its Redis, its Next app.
    let pg = TestPostgres::spawn().await;
    pg.create_dashclaw_schema(&[&org]).await;
    pg.insert_key(&sdk_key, &org, "admin").await;
    let redis = TestRedis::spawn().await;
    let next_port = next_app().await;
    let hub_port = free_port();

    // Step 1: the hub gets DashClaw's environment, exactly the README's variables.
    let mut env: Vec<(String, String)> = Vec::new();
    for (key, example) in readme_env() {
        let value = match key.as_str() {
            "NEXTAUTH_SECRET" => SECRET.to_owned(),
            "NEXTAUTH_URL" => "http://dashclaw.test".to_owned(),
            "DATABASE_URL" => pg.url(),
            "DASHCLAW_API_KEY" => env_key.to_owned(),
            "DASHCLAW_API_KEY_ORG" => org.clone(),
            "REDIS_URL" => redis.url(),
            "REALTIME_BACKEND" => example,
            "REALTIME_BIND" => format!("127.0.0.1:{hub_port}"),
            other => panic!("the README's env block names {other}: teach this test its value"),
        };
        env.push((key, value));
    }
    assert!(
        env.len() >= 7,
        "the README's env block lost settings: {env:?}"
    );
    let refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let hub = TestHub::spawn(&refs).await;
    // Step 2: readiness.
    assert!(hub.wait_ready(WAIT).await, "{}", hub.log_text());

    // Step 3: nginx with deploy/nginx.conf in front of both.
    let nginx = TestNginx::spawn(hub_port, next_port).await;
    let api = format!("{}/api/stream", nginx.base_url());

    // Step 4: the dashboard's request (session cookie, same origin) and an SDK's (x-api-key)
    // through nginx; DashClaw's publisher writes to Redis as it does today.
    let token = nextauth_token(&json!({"orgId": org}), SECRET, 3600);
    let cookie = format!("{NEXTAUTH_COOKIE}={token}");
    let mut browser = SseClient::connect_ok(
        &api,
        &[
            ("cookie", cookie.as_str()),
            ("sec-fetch-site", "same-origin"),
        ],
    )
    .await;
    let connected = browser.expect_event_named("connected", WAIT).await;
    assert_eq!(connected.json()["orgId"], json!(org));
    let mut sdk = SseClient::connect_ok(&api, &[("x-api-key", sdk_key.as_str())]).await;
    sdk.expect_event_named("connected", WAIT).await;
    let mut env_client = SseClient::connect_ok(&api, &[("x-api-key", env_key)]).await;
    env_client.expect_event_named("connected", WAIT).await;

    let envelope = json!({"id": "evt_readme_1", "org_id": org, "event": "message.created",
        "timestamp": "2026-01-01T00:00:00.000Z", "version": "v1", "payload": {"message": {"id": "m1"}}});
    let stream = format!("dashclaw:org:{org}:stream");
    let reply = redis
        .cmd(&[
            "XADD",
            &stream,
            "MAXLEN",
            "~",
            "1000",
            "*",
            "data",
            &envelope.to_string(),
        ])
        .await;
    let cursor = reply.text().unwrap_or_else(|| panic!("XADD: {reply:?}"));
    let mut with = envelope.clone();
    with["cursor"] = json!(cursor);
    let reply = redis
        .cmd(&[
            "PUBLISH",
            &format!("dashclaw:org:{org}:events"),
            &with.to_string(),
        ])
        .await;
    assert!(matches!(reply, Resp::Int(_)), "{reply:?}");
    for client in [&mut browser, &mut sdk, &mut env_client] {
        let event = client.expect_event_named("message.created", WAIT).await;
        assert_eq!(event.json(), json!({"id": "m1"}));
        assert_eq!(event.last_event_id, cursor);
    }

    // Step 5, the rollback: the hub's block out of the nginx config, reload: /api/stream is
    // the Next app's again.
    nginx.roll_back(hub_port, next_port).await;
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, body, _) = get(&api, &[]).await;
        if status == 200 && body == "from-next" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after the rollback /api/stream answered {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(hub);
}
