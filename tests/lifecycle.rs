//! Process lifecycle: SIGTERM drain, start-up refusals, the `token` / `hash-key`
//! commands, connection limits and the health endpoints (contract sections 3, 6, 7, 8).

#[macro_use]
mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{
    Backend, End, SseClient, SseItem, SseParser, TestHub, error_code, free_port, get, header_str,
    post_json, run_cli, secs, sha256_hex, unique_org,
};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

backend_tests!(
    sigterm_ends_streams_cleanly_and_exits_zero,
    healthz_and_readyz
);

fn stream_url(hub: &TestHub, org: &str) -> String {
    hub.url(&format!("/v1/orgs/{org}/stream"))
}

fn events_url(hub: &TestHub, org: &str) -> String {
    hub.url(&format!("/v1/orgs/{org}/events"))
}

/// A stream that is past its replay: the `realtime.connected` frame was read.
async fn connected_client(url: &str, headers: &[(&str, &str)]) -> SseClient {
    let mut client = SseClient::connect_ok(url, headers).await;
    client
        .expect_event_named("realtime.connected", secs(10))
        .await;
    client
}

/// Publishes `count` padded events in batches; returns their envelope ids in order.
async fn publish_padded(hub: &TestHub, org: &str, count: usize, pad: usize) -> Vec<String> {
    let mut ids = Vec::with_capacity(count);
    let filler = "x".repeat(pad);
    for start in (0..count).step_by(1000) {
        let batch: Vec<Value> = (start..(start + 1000).min(count))
            .map(|i| json!({"event": "action.created", "payload": {"i": i, "pad": filler}}))
            .collect();
        let (status, body, _) = post_json(&events_url(hub, org), &Value::Array(batch), &[]).await;
        assert_eq!(status, 202, "bulk publish: {body}");
        let stored = body
            .as_array()
            .unwrap_or_else(|| panic!("batch publish did not return an array: {body}"));
        for envelope in stored {
            ids.push(envelope["id"].as_str().expect("envelope id").to_string());
        }
    }
    assert_eq!(ids.len(), count);
    ids
}

/// An SSE request on a raw socket whose owner decides when to read, so the hub's
/// replay can be left stalled on a full socket at the moment of the signal.
struct StalledStream {
    sock: tokio::net::TcpStream,
    raw: Vec<u8>,
}

impl StalledStream {
    /// Sends the request and reads only until the first replayed frame arrived.
    async fn open(addr: SocketAddr, path: &str, last_event_id: &str) -> StalledStream {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        // A small receive window keeps most of the replay on the hub's side.
        socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
        let mut sock = socket.connect(addr).await.expect("connect stalled client");
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\
             Last-Event-ID: {last_event_id}\r\nConnection: close\r\n\r\n"
        );
        sock.write_all(request.as_bytes())
            .await
            .expect("write request");
        let mut raw = Vec::new();
        let mut buf = [0u8; 1024];
        let deadline = Instant::now() + secs(10);
        while !raw.windows(4).any(|w| w == b"id: ") {
            let n = tokio::time::timeout_at(deadline, sock.read(&mut buf))
                .await
                .expect("no replayed frame within 10s")
                .expect("read stalled client");
            assert!(n > 0, "stream closed before replay: {:?}", lossy(&raw));
            raw.extend_from_slice(&buf[..n]);
        }
        StalledStream { sock, raw }
    }

    /// Reads everything up to EOF.
    async fn drain(mut self, timeout: Duration) -> Vec<u8> {
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match tokio::time::timeout_at(deadline, self.sock.read(&mut buf)).await {
                Err(_) => panic!("stalled client did not reach EOF within {timeout:?}"),
                Ok(Ok(n)) => n,
                // A reset is reported by the caller as a missing terminating chunk.
                Ok(Err(_)) => 0,
            };
            if n == 0 {
                return self.raw;
            }
            self.raw.extend_from_slice(&buf[..n]);
        }
    }
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Splits an HTTP/1.1 chunked response into (head, body, saw_terminating_chunk).
fn decode_chunked(raw: &[u8]) -> (String, Vec<u8>, bool) {
    let head_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {:?}", lossy(raw)));
    let head = lossy(&raw[..head_end]);
    let mut pos = head_end + 4;
    let mut body = Vec::new();
    loop {
        let Some(line_len) = raw[pos..].windows(2).position(|w| w == b"\r\n") else {
            return (head, body, false);
        };
        let line = lossy(&raw[pos..pos + line_len]);
        let size_hex = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_hex, 16)
            .unwrap_or_else(|_| panic!("bad chunk size line {line:?}"));
        pos += line_len + 2;
        if size == 0 {
            return (head, body, true);
        }
        if raw.len() < pos + size + 2 {
            body.extend_from_slice(&raw[pos.min(raw.len())..]);
            return (head, body, false);
        }
        body.extend_from_slice(&raw[pos..pos + size]);
        pos += size + 2;
    }
}

async fn sigterm_ends_streams_cleanly_and_exits_zero(backend: Backend) {
    const GRACE_SECS: u64 = 5;
    // ~3 MB of replay, several times what the socket buffers of a client that does not
    // read can absorb, so that client is still mid-replay when the signal arrives.
    const REPLAY_EVENTS: usize = 3000;
    let hub = backend
        .hub(&[
            ("REALTIME_SHUTDOWN_GRACE_SECONDS", "5"),
            // The paced drain's delay is covered by tests/lifecycle_scale.rs; here the
            // closes start at once.
            ("REALTIME_DRAIN_DELAY_SECONDS", "0"),
            ("REALTIME_SESSION_QUEUE_BYTES", "65536"),
        ])
        .await;
    let orgs = [
        unique_org("term_a"),
        unique_org("term_b"),
        unique_org("term_c"),
    ];
    let replay_ids = publish_padded(&hub, &orgs[0], REPLAY_EVENTS, 1000).await;

    let mut clients = Vec::new();
    for i in 0..20 {
        clients.push(connected_client(&stream_url(&hub, &orgs[i % 3]), &[]).await);
    }
    let path = format!("/v1/orgs/{}/stream", orgs[0]);
    let stalled = StalledStream::open(hub.addr(), &path, &replay_ids[0]).await;

    assert!(hub.sigterm(), "hub exited before SIGTERM");
    let signalled = Instant::now();

    // The hub closes them spread over the grace time; the forced drop would come only
    // `FLUSH_TIME` (5 s) after it, so a clean end by then shows the hub closed them.
    let ends_by = signalled + secs(GRACE_SECS + 1);
    for (i, client) in clients.iter_mut().enumerate() {
        let end = client
            .wait_end(ends_by.saturating_duration_since(Instant::now()))
            .await;
        assert_eq!(
            end,
            Some(End::Clean),
            "client {i} (org {}) after SIGTERM; raw:\n{}",
            orgs[i % 3],
            client.raw_text()
        );
    }

    // The listener closes when the drain starts; the stalled client keeps the process
    // alive here, so a refusal means "stopped accepting", not "exited".
    let refused_by = Instant::now() + secs(2);
    loop {
        match tokio::net::TcpStream::connect(hub.addr()).await {
            Err(e) => {
                assert_eq!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionRefused,
                    "connect after drain: {e}"
                );
                break;
            }
            Ok(_) if Instant::now() < refused_by => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok(_) => panic!("the hub still accepts TCP connections after its streams ended"),
        }
    }

    let raw = stalled.drain(secs(GRACE_SECS)).await;
    let (head, body, terminated) = decode_chunked(&raw);
    assert!(
        head.starts_with("HTTP/1.1 200"),
        "stalled client head: {head}"
    );
    assert!(
        terminated,
        "the mid-replay stream ended without its terminating chunk (reset or truncated); \
         {} body bytes, tail: {:?}",
        body.len(),
        lossy(&body[body.len().saturating_sub(300)..])
    );
    let events: Vec<_> = SseParser::parse_all(&body)
        .into_iter()
        .filter_map(|item| match item {
            SseItem::Event(e) => Some(e),
            _ => None,
        })
        .collect();
    let (control, data): (Vec<_>, Vec<_>) = events
        .iter()
        .partition(|e| e.event.starts_with("realtime."));
    let got: Vec<String> = data
        .iter()
        .map(|e| e.json()["id"].as_str().unwrap_or_default().to_string())
        .collect();
    // The drain lets the replay finish: all events after the position, once, in order.
    assert_eq!(
        got.len(),
        REPLAY_EVENTS - 1,
        "replayed events across shutdown"
    );
    assert!(
        got == replay_ids[1..],
        "replay across shutdown out of order or duplicated"
    );
    let control_names: Vec<&str> = control.iter().map(|e| e.event.as_str()).collect();
    assert!(
        control_names.is_empty() || control_names == ["realtime.connected"],
        "unexpected control events on the mid-replay stream: {control_names:?}"
    );
    if let Some(connected) = control.first() {
        assert_eq!(
            events.last().map(|e| e.event.as_str()),
            Some("realtime.connected"),
            "realtime.connected before the replay finished: {connected:?}"
        );
    }
    eprintln!(
        "mid-replay client: {} events, realtime.connected {}",
        got.len(),
        if control.is_empty() {
            "not sent (was mid-replay at SIGTERM)"
        } else {
            "sent (replay had finished before SIGTERM)"
        }
    );

    let exit_by = signalled + secs(GRACE_SECS + 3);
    let status = hub
        .wait_exit(exit_by.saturating_duration_since(Instant::now()))
        .await
        .unwrap_or_else(|| {
            panic!(
                "hub still running {GRACE_SECS}+3 s after SIGTERM; log:\n{}",
                hub.log_text()
            )
        });
    assert_eq!(
        status.code(),
        Some(0),
        "exit status {status}; log:\n{}",
        hub.log_text()
    );
}

/// A start-up that must fail, and the setting its message must name.
struct BadSetting {
    env: &'static [(&'static str, &'static str)],
    args: &'static [&'static str],
    names: &'static str,
}

const fn bad_env(key: &'static str, env: &'static [(&'static str, &'static str)]) -> BadSetting {
    BadSetting {
        env,
        args: &[],
        names: key,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_errors_exit_2_naming_the_setting() {
    let cases = [
        bad_env(
            "REALTIME_HEARTBEAT_SECONDS",
            &[("REALTIME_HEARTBEAT_SECONDS", "abc")],
        ),
        bad_env("REALTIME_BACKEND", &[("REALTIME_BACKEND", "nosql")]),
        bad_env("REALTIME_BIND", &[("REALTIME_BIND", "nonsense")]),
        bad_env(
            "REALTIME_MAX_PAYLOAD_BYTES",
            &[("REALTIME_MAX_PAYLOAD_BYTES", "1")],
        ),
        bad_env("REALTIME_KEY_PREFIX", &[("REALTIME_KEY_PREFIX", "a b")]),
        bad_env("REALTIME_LOG_FORMAT", &[("REALTIME_LOG_FORMAT", "xml")]),
        bad_env("REDIS_URL", &[("REALTIME_BACKEND", "redis")]),
        BadSetting {
            env: &[],
            args: &["--heartbeat-seconds", "0"],
            names: "REALTIME_HEARTBEAT_SECONDS",
        },
    ];
    // Every case runs before asserting, so one report lists all offenders.
    let mut failures = Vec::new();
    for case in &cases {
        let (status, output) = TestHub::spawn_expect_exit(case.env, case.args).await;
        if status.code() != Some(2) || !output.contains(case.names) {
            failures.push(format!(
                "env {:?} args {:?}: exit {status}, expected 2 and a message naming {}; \
                 output:\n{output}",
                case.env, case.args, case.names
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n---\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_auth_refuses_non_loopback_bind() {
    let bind = format!("0.0.0.0:{}", free_port());
    let (status, output) = TestHub::spawn_expect_exit(&[("REALTIME_BIND", &bind)], &[]).await;
    assert_eq!(status.code(), Some(2), "output:\n{output}");
    assert!(
        output.contains("auth is off") && output.contains(&bind),
        "the refusal should name the address and say auth is off:\n{output}"
    );

    let bind = format!("0.0.0.0:{}", free_port());
    let hub = TestHub::spawn(&[
        ("REALTIME_BIND", &bind),
        (
            "REALTIME_JWT_SECRET",
            "lifecycle-secret-of-at-least-32-bytes",
        ),
    ])
    .await;
    assert!(hub.base_url().starts_with("http://127.0.0.1:"));
    let (status, body, _) = get(&hub.url("/healthz"), &[]).await;
    assert_eq!(status, 200, "{body}");
    // Auth really is on for the wildcard bind.
    let org = unique_org("bind");
    let (status, body) = SseClient::connect_expect_status(&stream_url(&hub, &org), &[]).await;
    assert_eq!((status, error_code(&body).as_str()), (401, "unauthorized"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_and_hash_key_commands() {
    let secret = "lifecycle-token-secret-of-32-bytes-min";
    let org_x = unique_org("org_x");
    let org_y = unique_org("org_y");
    let ttl_org = unique_org("org_ttl");
    let org_k = unique_org("org_k");
    let key = "dck_lifecycle_7f3a9c1e5b2d4f60";

    let (status, stdout, stderr) = run_cli(
        &[
            "token",
            "--org",
            &org_x,
            "--scope",
            "subscribe,publish",
            "--ttl",
            "1h",
        ],
        &[("REALTIME_JWT_SECRET", secret)],
        None,
    )
    .await;
    assert!(status.success(), "token: {status}; stderr: {stderr}");
    let token = stdout.trim().to_string();
    assert_eq!(token.split('.').count(), 3, "not a JWT: {stdout:?}");

    let (status, stdout, stderr) = run_cli(
        &["hash-key", "--org", &org_k, "--scope", "subscribe"],
        &[],
        Some(format!("{key}\n").as_bytes()),
    )
    .await;
    assert!(status.success(), "hash-key: {status}; stderr: {stderr}");
    let line = stdout.trim_end().to_string();
    assert_eq!(line, format!("{} {org_k} subscribe", sha256_hex(key)));
    assert!(!stdout.contains(key) && !stderr.contains(key));

    let keys_dir = tempfile::tempdir().expect("tempdir");
    let keys_file = keys_dir.path().join("keys.txt");
    std::fs::write(&keys_file, format!("{line}\n")).expect("write keys file");
    let keys_path = keys_file.to_str().expect("utf-8 path");
    let hub = TestHub::spawn(&[
        ("REALTIME_JWT_SECRET", secret),
        ("REALTIME_API_KEYS_FILE", keys_path),
        ("RUST_LOG", "debug"),
    ])
    .await;

    // The printed token works against a hub with the same secret.
    let bearer = format!("Bearer {token}");
    let auth = [("Authorization", bearer.as_str())];
    let mut sub = connected_client(&stream_url(&hub, &org_x), &auth).await;
    let (status, body, _) = post_json(
        &events_url(&hub, &org_x),
        &json!({"event": "action.created", "payload": {"via": "cli-token"}}),
        &auth,
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let got = sub.expect_event(secs(10)).await;
    assert_eq!(got.json()["id"], body["id"], "subscriber got {got:?}");

    let (status, body) = SseClient::connect_expect_status(&stream_url(&hub, &org_y), &auth).await;
    assert_eq!((status, error_code(&body).as_str()), (403, "forbidden_org"));
    let (status, body, _) = post_json(
        &events_url(&hub, &org_y),
        &json!({"event": "action.created"}),
        &auth,
    )
    .await;
    assert_eq!((status, error_code(&body).as_str()), (403, "forbidden_org"));

    // A 1 s token: accepted while valid, then refused as expired.
    let (status, stdout, stderr) = run_cli(
        &[
            "token", "--org", &ttl_org, "--scope", "publish", "--ttl", "1s",
        ],
        &[("REALTIME_JWT_SECRET", secret)],
        None,
    )
    .await;
    assert!(
        status.success(),
        "token --ttl 1s: {status}; stderr: {stderr}"
    );
    let short = format!("Bearer {}", stdout.trim());
    let short_auth = [("Authorization", short.as_str())];
    let expired_by = Instant::now() + secs(6);
    loop {
        let (status, body, _) = post_json(
            &events_url(&hub, &ttl_org),
            &json!({"event": "action.created"}),
            &short_auth,
        )
        .await;
        match status {
            202 => {}
            401 => {
                assert_eq!(error_code(&body), "token_expired");
                break;
            }
            other => panic!("short-lived token: unexpected {other}: {body}"),
        }
        assert!(
            Instant::now() < expired_by,
            "a --ttl 1s token was still accepted 6 s later"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The hashed key line authorizes the key it was made from, and nothing else.
    let key_auth = [("x-api-key", key)];
    let mut keyed = connected_client(&stream_url(&hub, &org_k), &key_auth).await;
    let (status, body) =
        SseClient::connect_expect_status(&stream_url(&hub, &org_x), &key_auth).await;
    assert_eq!((status, error_code(&body).as_str()), (403, "forbidden_org"));
    let wrong_key = "dck_lifecycle_wrong_0000000000";
    let (status, body) =
        SseClient::connect_expect_status(&stream_url(&hub, &org_k), &[("x-api-key", wrong_key)])
            .await;
    assert_eq!(
        (status, error_code(&body).as_str()),
        (401, "invalid_api_key")
    );
    keyed.close();

    let log = hub.log_text();
    assert!(
        log.contains("DEBUG"),
        "RUST_LOG=debug should produce debug lines, or the check below proves nothing:\n{log}"
    );
    assert!(
        !log.contains(key),
        "the API key appears in the hub log:\n{log}"
    );
    assert!(
        !log.contains(wrong_key),
        "a rejected API key appears in the hub log:\n{log}"
    );
}

/// Polls until the stream is admitted (the hub notices a closed client on its next
/// write); every refusal meanwhile must be a limit refusal.
async fn connect_when_admitted(url: &str) -> SseClient {
    let deadline = Instant::now() + secs(8);
    loop {
        match SseClient::connect(url, &[]).await {
            Ok(mut client) => {
                client
                    .expect_event_named("realtime.connected", secs(10))
                    .await;
                return client;
            }
            Err(e) => {
                assert!(
                    e.contains("got 429") || e.contains("got 503"),
                    "refused for another reason: {e}"
                );
                assert!(
                    Instant::now() < deadline,
                    "slot not released 8 s after the client closed: {e}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn expect_limit(url: &str, status: u16, code: &str) {
    let (got, body, headers) = SseClient::connect_expect_status_with_headers(url, &[]).await;
    assert_eq!((got, error_code(&body).as_str()), (status, code), "{body}");
    let retry_after = header_str(&headers, "retry-after")
        .unwrap_or_else(|| panic!("{status} {code} without Retry-After"));
    assert!(
        retry_after.parse::<u64>().is_ok_and(|s| s >= 1),
        "Retry-After {retry_after:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_limits() {
    let hub = TestHub::spawn(&[
        ("REALTIME_MAX_CONNECTIONS", "5"),
        ("REALTIME_MAX_CONNECTIONS_PER_ORG", "2"),
        ("REALTIME_HEARTBEAT_SECONDS", "1"),
    ])
    .await;
    let [a, b, c, d] = ["lim_a", "lim_b", "lim_c", "lim_d"].map(unique_org);
    let (url_a, url_b, url_c, url_d) = (
        stream_url(&hub, &a),
        stream_url(&hub, &b),
        stream_url(&hub, &c),
        stream_url(&hub, &d),
    );

    let mut on_a = vec![
        connected_client(&url_a, &[]).await,
        connected_client(&url_a, &[]).await,
    ];
    expect_limit(&url_a, 429, "too_many_connections_for_org").await;
    // The per-org limit is per org: another org still gets in.
    let _on_b = [
        connected_client(&url_b, &[]).await,
        connected_client(&url_b, &[]).await,
    ];
    let _on_c = connected_client(&url_c, &[]).await;
    // Five open: the instance limit now refuses a fresh org too.
    expect_limit(&url_d, 503, "too_many_connections").await;

    on_a[0].close();
    on_a[0] = connect_when_admitted(&url_a).await;
    expect_limit(&url_d, 503, "too_many_connections").await;

    // A slot freed on one org can be taken by another.
    on_a.pop().expect("second org-a client").close();
    let _on_d = connect_when_admitted(&url_d).await;
    expect_limit(&url_d, 503, "too_many_connections").await;
}

async fn healthz_and_readyz(backend: Backend) {
    let hub = backend.hub(&[]).await;
    assert!(hub.wait_ready(secs(10)).await, "readyz never became 200");
    for (path, want) in [
        ("/healthz", json!({"status": "ok"})),
        (
            "/readyz",
            json!({"status": "ready", "backend": backend.name()}),
        ),
    ] {
        let (status, body, headers) = get(&hub.url(path), &[]).await;
        assert_eq!(status, 200, "{path}: {body}");
        let content_type = header_str(&headers, "content-type").unwrap_or_default();
        assert!(
            content_type.starts_with("application/json"),
            "{path} content-type {content_type:?}"
        );
        let json: Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("{path} body is not JSON ({e}): {body}"));
        assert_eq!(json, want, "{path}");
    }
}
