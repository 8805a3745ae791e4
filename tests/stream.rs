//! SSE streams (contract section 3): framing, heartbeat, filter, the DashClaw drop-in
//! `/api/stream`, CORS, and slow-client disconnection with resume.
#[macro_use]
mod common;

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use common::{
    Backend, Received, SseClient, SseEvent, SseItem, SseParser, TestHub, error_code, header_str,
    post_json, request, unique_org,
};

backend_tests!(
    retry_first_then_heartbeat_on_idle,
    event_filter,
    legacy_api_stream,
    cors_allows_listed_origins_only,
    slow_client_is_disconnected_and_resumes,
);

const WAIT: Duration = Duration::from_secs(10);

fn stream_url(hub: &TestHub, org: &str) -> String {
    hub.url(&format!("/v1/orgs/{org}/stream"))
}

fn events_url(hub: &TestHub, org: &str) -> String {
    hub.url(&format!("/v1/orgs/{org}/events"))
}

/// POSTs one event or a batch and returns what the hub stored (202 required).
async fn publish(hub: &TestHub, org: &str, body: &Value, headers: &[(&str, &str)]) -> Value {
    let (status, resp, _) = post_json(&events_url(hub, org), body, headers).await;
    assert_eq!(status, 202, "POST {body} -> {resp}");
    resp
}

/// A subscriber past `realtime.connected`.
async fn subscribe(url: &str, headers: &[(&str, &str)]) -> SseClient {
    let mut sub = SseClient::connect_ok(url, headers).await;
    sub.expect_event_named("realtime.connected", WAIT).await;
    sub
}

fn cursor_of(envelope: &Value) -> String {
    envelope["cursor"]
        .as_str()
        .unwrap_or_else(|| panic!("envelope without cursor: {envelope}"))
        .to_string()
}

/// Checks every line of a raw v1 stream: `name: value` with exactly one space, known
/// field names only, and exactly one JSON `data:` line per event block.
fn check_raw_framing(raw: &[u8]) {
    let text = std::str::from_utf8(raw).unwrap_or_else(|e| panic!("stream is not UTF-8: {e}"));
    assert!(!text.contains('\r'), "the hub writes LF line ends only");
    let mut events = 0;
    for block in text.split("\n\n").filter(|b| !b.is_empty()) {
        let mut data_lines = 0;
        for line in block.lines() {
            if let Some(comment) = line.strip_prefix(':') {
                assert_eq!(comment, " heartbeat", "unexpected comment line {line:?}");
                continue;
            }
            let (name, value) = line
                .split_once(": ")
                .unwrap_or_else(|| panic!("line {line:?} is not `name: value`"));
            assert!(
                ["retry", "id", "event", "data"].contains(&name),
                "unknown field in {line:?}"
            );
            assert!(
                !value.is_empty() && !value.starts_with(' '),
                "field {line:?} must have exactly one space before a non-empty value"
            );
            if name == "data" {
                data_lines += 1;
                serde_json::from_str::<Value>(value)
                    .unwrap_or_else(|e| panic!("data line is not one JSON value ({e}): {line:?}"));
            }
        }
        if block.lines().any(|l| l.starts_with("event: ")) {
            events += 1;
            assert_eq!(
                data_lines, 1,
                "event block without exactly one data line: {block:?}"
            );
        }
    }
    assert!(events > 0, "no event frames in {text:?}");
}

async fn retry_first_then_heartbeat_on_idle(backend: Backend) {
    let hub = backend
        .hub(&[
            ("REALTIME_HEARTBEAT_SECONDS", "1"),
            ("REALTIME_RETRY_MS", "1234"),
        ])
        .await;
    let org = unique_org("heartbeat");
    let mut sub = SseClient::connect_ok(&stream_url(&hub, &org), &[]).await;
    assert_eq!(
        sub.header("content-type").as_deref(),
        Some("text/event-stream")
    );
    assert_eq!(
        sub.header("cache-control").as_deref(),
        Some("no-cache, no-transform")
    );
    assert_eq!(sub.header("x-accel-buffering").as_deref(), Some("no"));

    let connected = sub.expect_event_named("realtime.connected", WAIT).await;
    assert!(!connected.had_id_field, "control events carry no id: line");
    assert!(
        sub.raw().starts_with(b"retry: 1234\n\n"),
        "stream must start with the retry hint; got {:?}",
        sub.raw_text()
    );
    // Idle for the heartbeat interval: a comment must arrive (3 s is an upper bound).
    match sub.next_item(Duration::from_secs(3)).await {
        Some(Received::Item(SseItem::Comment(c))) => assert_eq!(c, "heartbeat"),
        Some(Received::Item(other)) => panic!("idle stream sent {other:?}"),
        Some(Received::Ended(end)) => panic!("idle stream ended: {end:?}"),
        None => panic!(
            "no heartbeat within 3 s with REALTIME_HEARTBEAT_SECONDS=1; raw:\n{}",
            sub.raw_text()
        ),
    }
    assert!(
        sub.raw_text().contains("\n\n: heartbeat\n\n"),
        "heartbeat is a whole comment frame: {:?}",
        sub.raw_text()
    );

    // Payload text with line breaks and non-ASCII must still travel on one data: line.
    let stored = publish(
        &hub,
        &org,
        &json!({"event": "action.created", "payload": {"text": "a\nb\r\nc\u{2028}d é", "x": [1, {"y": null}]}}),
        &[],
    )
    .await;
    let ev = sub.expect_event(WAIT).await;
    assert_eq!(ev.json(), stored);
    check_raw_framing(&sub.raw());
}

async fn event_filter(backend: Backend) {
    let hub = backend.hub(&[]).await;
    let org = unique_org("filter");
    let filtered_url = format!("{}?events=action.created,signal.*", stream_url(&hub, &org));
    let mut all = subscribe(&stream_url(&hub, &org), &[]).await;
    let mut filtered = SseClient::connect_ok(&filtered_url, &[]).await;
    let connected = filtered.expect_event(WAIT).await;
    assert_eq!(
        connected.event, "realtime.connected",
        "control events pass any filter"
    );

    let names = [
        "action.created",
        "action.updated",
        "signal.detected",
        "signal.a.b",
        "signals.x",
        "signal",
        "message.created",
        "action.created.extra",
        "action.created",
        "signal.end",
    ];
    let batch: Vec<Value> = names
        .iter()
        .enumerate()
        .map(|(i, name)| json!({"event": name, "payload": {"i": i}}))
        .collect();
    let stored = publish(&hub, &org, &Value::Array(batch), &[]).await;
    let stored = stored.as_array().cloned().unwrap_or_default();
    assert_eq!(stored.len(), names.len());
    let wanted: Vec<&Value> = [0, 2, 3, 8, 9].iter().map(|&i| &stored[i]).collect();

    let got = filtered
        .collect_events_until(|e| e.event == "signal.end", WAIT)
        .await;
    let got: Vec<Value> = got.iter().map(SseEvent::json).collect();
    assert_eq!(got.iter().collect::<Vec<_>>(), wanted, "filtered delivery");
    // The unfiltered client saw everything, so nothing is still in flight to `filtered`.
    let every = all
        .collect_events_until(|e| e.event == "signal.end", WAIT)
        .await;
    assert_eq!(every.len(), names.len());
    let sentinel = publish(&hub, &org, &json!({"event": "signal.sentinel"}), &[]).await;
    assert_eq!(filtered.expect_event(WAIT).await.json(), sentinel);

    // Replay is filtered too, and control events (resync, connected) always pass.
    let mut resumed =
        SseClient::connect_ok(&filtered_url, &[("last-event-id", &cursor_of(&stored[0]))]).await;
    let replay = resumed
        .collect_events_until(|e| e.event == "realtime.connected", WAIT)
        .await;
    let (connected, replay) = replay
        .split_last()
        .unwrap_or_else(|| panic!("nothing received on resume"));
    assert_eq!(connected.event, "realtime.connected");
    let replay: Vec<Value> = replay.iter().map(SseEvent::json).collect();
    let mut expected: Vec<Value> = wanted[1..].iter().map(|v| (*v).clone()).collect();
    expected.push(sentinel.clone());
    assert_eq!(replay, expected, "filtered replay");
    assert_eq!(connected.json()["replayed"], json!(expected.len()));
    let mut unknown =
        SseClient::connect_ok(&filtered_url, &[("last-event-id", "evt_never_published")]).await;
    assert_eq!(unknown.expect_event(WAIT).await.event, "realtime.resync");
    assert_eq!(unknown.expect_event(WAIT).await.event, "realtime.connected");

    for bad in [
        "a:b",
        "Action.created",
        ".*",
        "signal.**",
        "a..b",
        "action.created,%7B%7D",
    ] {
        let url = format!("{}?events={bad}", stream_url(&hub, &org));
        let (status, body) = SseClient::connect_expect_status(&url, &[]).await;
        assert_eq!(status, 400, "filter {bad:?}: {body}");
        assert_eq!(error_code(&body), "invalid_filter", "filter {bad:?}");
    }
}

/// The legacy `data:` DashClaw clients expect for an envelope payload: DashClaw's
/// `toSseData` table, `null` when the named member is missing or falsy.
fn legacy_expected(event: &str, payload: &Value) -> Value {
    let key = match event {
        "action.created" | "action.updated" => Some("action"),
        "message.created" => Some("message"),
        "decision.created" | "guard.decision.created" => Some("decision"),
        "signal.detected" => Some("signal"),
        "loop.created" | "loop.updated" => Some("loop"),
        "goal.created" | "goal.updated" => Some("goal"),
        _ => None,
    };
    let data = key.map_or_else(|| payload.clone(), |k| payload[k].clone());
    match &data {
        Value::Bool(false) => Value::Null,
        Value::Number(n) if n.as_f64() == Some(0.0) => Value::Null,
        Value::String(s) if s.is_empty() => Value::Null,
        _ => data,
    }
}

async fn legacy_api_stream(backend: Backend) {
    let org = unique_org("legacy");
    let other_org = unique_org("legacy_other");
    let keys_dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let keys_file = common::write_api_keys_file(
        keys_dir.path(),
        &[
            ("key-legacy-rw", &org, "subscribe,publish"),
            ("key-legacy-other", &other_org, "subscribe,publish"),
        ],
    );
    let keys_path = keys_file.to_string_lossy().into_owned();
    let hub = backend
        .hub(&[("REALTIME_API_KEYS_FILE", keys_path.as_str())])
        .await;
    let key = [("x-api-key", "key-legacy-rw")];
    let legacy_url = hub.url("/api/stream");

    // Stored before the client connects: not replayed to a client that gives no position.
    publish(
        &hub,
        &org,
        &json!({"event": "action.created", "payload": {"action": {"id": "a0"}}}),
        &key,
    )
    .await;
    let mut sub = SseClient::connect_ok(&legacy_url, &key).await;
    assert_eq!(
        sub.header("content-type").as_deref(),
        Some("text/event-stream")
    );
    let connected = sub.expect_event(WAIT).await;
    assert_eq!(
        connected.event, "connected",
        "legacy streams announce `connected`"
    );
    assert!(!connected.had_id_field);
    assert_eq!(
        connected.json(),
        json!({
            "status": "ok",
            "orgId": org,
            "backend": backend.name(),
            "realtimeStatus": "healthy",
            "replayed": 0,
            // The client's own resume position, as DashClaw echoes it: it sent none.
            "lastEventId": null,
            "replayError": null,
        })
    );

    let cases: Vec<(&str, Value)> = vec![
        (
            "action.created",
            json!({"action": {"id": "a1", "status": "running"}, "orgId": "x"}),
        ),
        (
            "action.updated",
            json!({"action": {"id": "a1", "status": "done"}}),
        ),
        (
            "message.created",
            json!({"message": {"id": "m1", "body": "hi"}}),
        ),
        ("decision.created", json!({"decision": {"id": "d1"}})),
        (
            "guard.decision.created",
            json!({"decision": {"id": "g1", "allowed": false}}),
        ),
        ("loop.created", json!({"loop": {"id": "l1"}})),
        (
            "loop.updated",
            json!({"loop": {"id": "l1", "closed": true}}),
        ),
        ("goal.created", json!({"goal": {"id": "o1"}})),
        ("goal.updated", json!({"goal": {"id": "o1", "pct": 50}})),
        ("signal.detected", json!({"signal": {"id": "s1"}})),
        // The named member missing: `data: null`, as DashClaw writes it.
        ("message.created", json!({"text": "no message member"})),
        ("action.updated", json!({"action": 0})),
        // Whole-payload events.
        (
            "policy.updated",
            json!({"policy": {"id": "p1"}, "change_type": "updated"}),
        ),
        ("token.usage", json!({"agent_id": "a", "total_tokens": 3})),
        // Only the listed types are projected; near misses keep the whole payload.
        ("loop.opened", json!({"loop": {"id": "l1"}})),
        (
            "goal.progress.updated",
            json!({"goal": {"id": "o1", "pct": 50}}),
        ),
        ("signal.cleared", json!({"signal": {"id": "s1"}})),
        ("decision.updated", json!({"decision": {"id": "d1"}})),
        (
            "agent.heartbeat",
            json!({"agent": "bot", "action": {"id": "not me"}}),
        ),
        ("custom.thing", json!([1, 2, 3])),
    ];
    let batch: Vec<Value> = cases
        .iter()
        .map(|(event, payload)| json!({"event": event, "payload": payload}))
        .collect();
    let stored = publish(&hub, &org, &Value::Array(batch), &key).await;
    let stored = stored.as_array().cloned().unwrap_or_default();
    assert_eq!(stored.len(), cases.len());
    for ((event, payload), envelope) in cases.iter().zip(&stored) {
        let ev = sub.expect_event(WAIT).await;
        assert_eq!(ev.event, *event);
        assert!(ev.had_id_field, "{event}: legacy frames keep id:");
        assert_eq!(
            ev.last_event_id,
            cursor_of(envelope),
            "{event}: id is the cursor"
        );
        assert_eq!(
            ev.json(),
            legacy_expected(event, payload),
            "{event}: legacy projection"
        );
    }

    // Resume on the legacy route: replay after the given cursor, then `connected`.
    let from = cursor_of(&stored[4]);
    let mut resumed = SseClient::connect_ok(&legacy_url, &[key[0], ("last-event-id", &from)]).await;
    let replay = resumed
        .collect_events_until(|e| e.event == "connected", WAIT)
        .await;
    let (connected, replay) = replay
        .split_last()
        .unwrap_or_else(|| panic!("nothing received on legacy resume"));
    assert_eq!(connected.event, "connected");
    let replay_ids: Vec<&str> = replay.iter().map(|e| e.last_event_id.as_str()).collect();
    let expected_ids: Vec<String> = stored[5..].iter().map(cursor_of).collect();
    assert_eq!(replay_ids, expected_ids, "legacy replay");
    for (ev, (event, payload)) in replay.iter().zip(&cases[5..]) {
        assert_eq!(ev.json(), legacy_expected(event, payload));
    }
    let info = connected.json();
    assert_eq!(info["replayed"], json!(expected_ids.len()));
    assert_eq!(
        info["lastEventId"],
        json!(from),
        "the client's own position"
    );
    assert_eq!(info["replayError"], Value::Null);

    // The credential decides the org: the other org's events never show up here.
    publish(
        &hub,
        &other_org,
        &json!({"event": "action.created"}),
        &[("x-api-key", "key-legacy-other")],
    )
    .await;
    let mine = publish(
        &hub,
        &org,
        &json!({"event": "goal.created", "payload": {"goal": 1}}),
        &key,
    )
    .await;
    let ev = sub.expect_event(WAIT).await;
    assert_eq!(ev.last_event_id, cursor_of(&mine));
    assert_eq!(ev.json(), json!(1));

    for (what, headers, code) in [
        ("bad key", vec![("x-api-key", "wrong")], "invalid_api_key"),
        ("no key", vec![], "unauthorized"),
    ] {
        let (status, body) = SseClient::connect_expect_status(&legacy_url, &headers).await;
        assert_eq!(status, 401, "{what}: {body}");
        assert_eq!(error_code(&body), code, "{what}");
    }
    // A key may not pick an org it does not hold.
    let (status, body) =
        SseClient::connect_expect_status(&legacy_url, &[key[0], ("x-org-id", &other_org)]).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(error_code(&body), "forbidden_org");

    // Auth off: the org comes from x-org-id, else org_id, else org_default.
    let open_hub = backend.hub(&[]).await;
    let open_url = open_hub.url("/api/stream");
    let by_header = unique_org("legacy_hdr");
    let by_query = unique_org("legacy_qry");
    for (url, headers, expected_org) in [
        (
            open_url.clone(),
            vec![("x-org-id", by_header.as_str())],
            by_header.as_str(),
        ),
        (
            format!("{open_url}?org_id={by_query}"),
            vec![],
            by_query.as_str(),
        ),
        (open_url.clone(), vec![], "org_default"),
    ] {
        let mut client = SseClient::connect_ok(&url, &headers).await;
        let connected = client.expect_event(WAIT).await;
        assert_eq!(connected.event, "connected");
        assert_eq!(connected.json()["orgId"], expected_org, "{url} {headers:?}");
        assert_eq!(connected.json()["backend"], backend.name());
        // Another org's event first: the next event seen must be this org's.
        publish(
            &open_hub,
            &unique_org("legacy_noise"),
            &json!({"event": "message.created"}),
            &[],
        )
        .await;
        let stored = publish(
            &open_hub,
            expected_org,
            &json!({"event": "message.created", "payload": {"message": {"to": expected_org}}}),
            &[],
        )
        .await;
        let ev = client.expect_event(WAIT).await;
        assert_eq!(ev.last_event_id, cursor_of(&stored));
        assert_eq!(ev.json(), json!({"to": expected_org}));
    }
    let (status, body) = SseClient::connect_expect_status(&open_url, &[("x-org-id", "a:b")]).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(error_code(&body), "invalid_org_id");
}

async fn cors_allows_listed_origins_only(backend: Backend) {
    let allowed = "http://allowed.test";
    let evil = "http://evil.test";
    let hub = backend.hub(&[("REALTIME_CORS_ORIGINS", allowed)]).await;
    let org = unique_org("cors");
    let url = stream_url(&hub, &org);

    let preflight = |origin: &'static str| {
        let url = url.clone();
        async move {
            request(
                reqwest::Method::OPTIONS,
                &url,
                None,
                &[
                    ("origin", origin),
                    ("access-control-request-method", "GET"),
                    ("access-control-request-headers", "last-event-id"),
                ],
            )
            .await
        }
    };
    let (status, _, headers) = preflight(allowed).await;
    // actix-cors answers a preflight 200 (the hand-written middleware it replaced said 204);
    // both are the "ok status" the Fetch standard asks of a preflight.
    assert!(
        (200..300).contains(&status),
        "preflight from a listed origin: {status}"
    );
    assert_eq!(
        header_str(&headers, "access-control-allow-origin").as_deref(),
        Some(allowed)
    );
    let methods = header_str(&headers, "access-control-allow-methods").unwrap_or_default();
    assert!(methods.contains("GET"), "allow-methods {methods:?}");
    let (_, _, headers) = preflight(evil).await;
    assert_eq!(
        header_str(&headers, "access-control-allow-origin"),
        None,
        "preflight from an unlisted origin"
    );

    let mut ok = SseClient::connect_ok(&url, &[("origin", allowed)]).await;
    assert_eq!(
        ok.header("access-control-allow-origin").as_deref(),
        Some(allowed)
    );
    ok.expect_event_named("realtime.connected", WAIT).await;
    let mut refused = SseClient::connect_ok(&url, &[("origin", evil)]).await;
    assert_eq!(refused.header("access-control-allow-origin"), None);
    refused.expect_event_named("realtime.connected", WAIT).await;

    let (status, _, headers) = post_json(
        &events_url(&hub, &org),
        &json!({"event": "a.b"}),
        &[("origin", allowed)],
    )
    .await;
    assert_eq!(status, 202);
    assert_eq!(
        header_str(&headers, "access-control-allow-origin").as_deref(),
        Some(allowed)
    );
    let (status, _, headers) = post_json(
        &events_url(&hub, &org),
        &json!({"event": "a.b"}),
        &[("origin", evil)],
    )
    .await;
    assert_eq!(status, 202);
    assert_eq!(header_str(&headers, "access-control-allow-origin"), None);
}

/// An SSE response read straight off a socket, so the test controls when (and whether)
/// bytes are read; the chunked body is decoded by hand.
struct RawStream {
    sock: tokio::net::TcpStream,
    /// Received bytes not yet decoded.
    pending: Vec<u8>,
    /// The decoded body so far.
    body: Vec<u8>,
    /// The terminating chunk arrived: the server ended the response cleanly.
    finished: bool,
    head: String,
}

impl RawStream {
    async fn open(hub: &TestHub, path: &str) -> RawStream {
        let socket = tokio::net::TcpSocket::new_v4().unwrap_or_else(|e| panic!("socket: {e}"));
        // A small receive window so the server-side buffers fill sooner.
        socket
            .set_recv_buffer_size(16 * 1024)
            .unwrap_or_else(|e| panic!("SO_RCVBUF: {e}"));
        let mut sock = socket
            .connect(hub.addr())
            .await
            .unwrap_or_else(|e| panic!("connect {}: {e}", hub.addr()));
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\nConnection: close\r\n\r\n",
            hub.addr()
        );
        sock.write_all(request.as_bytes())
            .await
            .unwrap_or_else(|e| panic!("write request: {e}"));
        let mut raw = RawStream {
            sock,
            pending: Vec::new(),
            body: Vec::new(),
            finished: false,
            head: String::new(),
        };
        let end = loop {
            if let Some(i) = raw.pending.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            assert!(
                raw.read_some(WAIT).await > 0,
                "EOF before the response head"
            );
        };
        raw.head = String::from_utf8_lossy(&raw.pending[..end]).to_ascii_lowercase();
        raw.pending.drain(..end + 4);
        assert!(raw.head.starts_with("http/1.1 200"), "head: {}", raw.head);
        assert!(
            raw.head.contains("transfer-encoding: chunked"),
            "head: {}",
            raw.head
        );
        raw.decode();
        raw
    }

    /// Reads once; returns the byte count (0 at EOF).
    async fn read_some(&mut self, timeout: Duration) -> usize {
        let mut buf = vec![0u8; 64 * 1024];
        let n = match tokio::time::timeout(timeout, self.sock.read(&mut buf)).await {
            Err(_) => panic!(
                "no bytes within {timeout:?}; decoded body so far ends with {:?}",
                tail(&self.body)
            ),
            Ok(Err(e)) => panic!("read failed (the stream must end cleanly): {e}"),
            Ok(Ok(n)) => n,
        };
        self.pending.extend_from_slice(&buf[..n]);
        n
    }

    /// Moves every complete chunk from `pending` to `body`.
    fn decode(&mut self) {
        while !self.finished {
            let Some(line_end) = self.pending.windows(2).position(|w| w == b"\r\n") else {
                return;
            };
            let size_text = String::from_utf8_lossy(&self.pending[..line_end]).into_owned();
            let size_hex = size_text.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_hex, 16)
                .unwrap_or_else(|e| panic!("bad chunk size line {size_text:?}: {e}"));
            if size == 0 {
                // Last chunk; no trailers are expected, just the final CRLF.
                if self.pending.len() >= line_end + 4 {
                    assert_eq!(&self.pending[line_end + 2..line_end + 4], b"\r\n");
                    self.pending.drain(..line_end + 4);
                    self.finished = true;
                }
                return;
            }
            let start = line_end + 2;
            if self.pending.len() < start + size + 2 {
                return;
            }
            self.body
                .extend_from_slice(&self.pending[start..start + size]);
            assert_eq!(&self.pending[start + size..start + size + 2], b"\r\n");
            self.pending.drain(..start + size + 2);
        }
    }

    async fn read_until_body_contains(&mut self, needle: &[u8]) {
        while !self.body.windows(needle.len()).any(|w| w == needle) {
            assert!(!self.finished, "stream ended before {needle:?}");
            assert!(self.read_some(WAIT).await > 0, "EOF before {needle:?}");
            self.decode();
        }
    }

    /// Reads until the server ends the response; panics if it does not within `timeout`.
    async fn read_to_end(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.finished {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "the server did not end the slow stream within {timeout:?}"
            );
            let n = self.read_some(left).await;
            self.decode();
            assert!(
                n > 0 || self.finished,
                "connection closed without the terminating chunk"
            );
        }
    }
}

fn tail(bytes: &[u8]) -> String {
    let from = bytes.len().saturating_sub(200);
    String::from_utf8_lossy(&bytes[from..]).into_owned()
}

async fn slow_client_is_disconnected_and_resumes(backend: Backend) {
    const TOTAL: usize = 2000;
    const BATCH: usize = 4;
    let hub = backend
        .hub(&[("REALTIME_SESSION_QUEUE_BYTES", "65536")])
        .await;
    let org = unique_org("slow");
    let url = stream_url(&hub, &org);
    let mut fast = subscribe(&url, &[]).await;
    let mut slow = RawStream::open(&hub, &format!("/v1/orgs/{org}/stream")).await;
    slow.read_until_body_contains(b"event: realtime.connected\n")
        .await;

    // From here the slow socket is not read. Batches stay well under the queue bound and
    // the next one waits for the fast client, so only the slow client can fall behind.
    let pad = "x".repeat(8 * 1024);
    let mut cursors: Vec<String> = Vec::with_capacity(TOTAL);
    let mut envelopes: Vec<Value> = Vec::with_capacity(TOTAL);
    for start in (0..TOTAL).step_by(BATCH) {
        let batch: Vec<Value> = (start..start + BATCH)
            .map(|n| json!({"event": "action.updated", "payload": {"n": n, "pad": pad}}))
            .collect();
        let stored = publish(&hub, &org, &Value::Array(batch), &[]).await;
        let stored = stored.as_array().cloned().unwrap_or_default();
        assert_eq!(stored.len(), BATCH);
        for envelope in stored {
            let ev = fast.expect_event(WAIT).await;
            assert_eq!(
                ev.last_event_id,
                cursor_of(&envelope),
                "the fast client must get every event in order"
            );
            cursors.push(cursor_of(&envelope));
            envelopes.push(envelope);
        }
    }

    slow.read_to_end(Duration::from_secs(30)).await;
    let items = SseParser::parse_all(&slow.body);
    let mut got: Vec<SseEvent> = Vec::new();
    let mut after_last_event = Vec::new();
    for item in &items {
        match item {
            SseItem::Event(e) if e.event == "realtime.connected" => {}
            SseItem::Event(e) => {
                assert!(
                    after_last_event.is_empty(),
                    "event after the final frame: {after_last_event:?}"
                );
                got.push(e.clone());
            }
            SseItem::Comment(_) => {}
            SseItem::Retry(ms) if got.is_empty() => assert_eq!(*ms, 3000),
            SseItem::Retry(_) => after_last_event.push(item.clone()),
        }
    }
    assert!(
        !got.is_empty() && got.len() < TOTAL,
        "the slow client got {} of {TOTAL} events: it should have been cut off after some",
        got.len()
    );
    for (i, ev) in got.iter().enumerate() {
        assert_eq!(
            ev.last_event_id, cursors[i],
            "slow client event {i} out of order"
        );
        assert_eq!(ev.json(), envelopes[i], "slow client event {i}");
    }

    // Resuming from the last complete event yields exactly the rest, then live.
    let last = got
        .last()
        .map(|e| e.last_event_id.clone())
        .unwrap_or_default();
    let mut resumed = SseClient::connect_ok(&url, &[("last-event-id", &last)]).await;
    let replay = resumed
        .collect_events_until(|e| e.event == "realtime.connected", Duration::from_secs(30))
        .await;
    let (connected, replay) = replay
        .split_last()
        .unwrap_or_else(|| panic!("nothing received on resume"));
    assert_eq!(
        connected.event,
        "realtime.connected",
        "{}",
        tail(&resumed.raw())
    );
    let replay_ids: Vec<&str> = replay.iter().map(|e| e.last_event_id.as_str()).collect();
    assert_eq!(
        replay_ids,
        cursors[got.len()..].to_vec(),
        "the rest, exactly"
    );
    assert_eq!(connected.json()["replayed"], json!(TOTAL - got.len()));
    let sentinel = publish(&hub, &org, &json!({"event": "test.sentinel"}), &[]).await;
    assert_eq!(resumed.expect_event(WAIT).await.json(), sentinel);
    assert_eq!(fast.expect_event(WAIT).await.json(), sentinel);
}
