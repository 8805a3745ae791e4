//! HTTP publishing (contract sections 1, 4 and 5): idempotency, input validation that
//! publishes nothing, and the envelope fields the hub stamps.
#[macro_use]
mod common;

use std::time::Duration;

use serde_json::{Value, json};

use common::{
    Backend, SseClient, SseEvent, TestHub, error_code, jwt_for, node_envelope, post_json, post_raw,
    request, unique_org,
};

backend_tests!(
    idempotent_publish,
    bad_input_is_rejected_and_publishes_nothing,
    in_process_envelope_fields,
    dashclaw_envelope_over_http,
);

const WAIT: Duration = Duration::from_secs(10);

fn stream_url(hub: &TestHub, org: &str) -> String {
    hub.url(&format!("/v1/orgs/{org}/stream"))
}

fn events_url(hub: &TestHub, org: &str) -> String {
    hub.url(&format!("/v1/orgs/{org}/events"))
}

/// A live subscriber that has passed `realtime.connected`, so anything it sees next is live.
async fn subscribe(hub: &TestHub, org: &str, headers: &[(&str, &str)]) -> SseClient {
    let mut sub = SseClient::connect_ok(&stream_url(hub, org), headers).await;
    sub.expect_event_named("realtime.connected", WAIT).await;
    sub
}

/// POSTs `body`, asserting `status`, and returns the response JSON.
async fn publish_expect(
    hub: &TestHub,
    org: &str,
    body: &Value,
    headers: &[(&str, &str)],
    status: u16,
) -> Value {
    let (got, resp, _) = post_json(&events_url(hub, org), body, headers).await;
    assert_eq!(got, status, "POST {body} -> {resp}");
    resp
}

/// Asserts the next event the subscriber sees is exactly `envelope` (frame and data).
async fn expect_delivered(sub: &mut SseClient, envelope: &Value) -> SseEvent {
    let ev = sub.expect_event(WAIT).await;
    assert_eq!(
        ev.json(),
        *envelope,
        "unexpected next event {:?}; raw so far:\n{}",
        ev.event,
        sub.raw_text()
    );
    assert_eq!(ev.event, envelope["event"].as_str().unwrap_or_default());
    assert!(ev.had_id_field, "event frame without id: line");
    assert_eq!(
        ev.last_event_id,
        envelope["cursor"].as_str().unwrap_or_default()
    );
    ev
}

/// Publishes a sentinel and asserts it is the very next event the subscriber sees:
/// nothing else was delivered since the last check.
async fn expect_sentinel_next(
    hub: &TestHub,
    org: &str,
    sub: &mut SseClient,
    headers: &[(&str, &str)],
    tag: &str,
) {
    let sentinel = publish_expect(
        hub,
        org,
        &json!({"event": "test.sentinel", "payload": {"tag": tag}}),
        headers,
        202,
    )
    .await;
    expect_delivered(sub, &sentinel).await;
}

async fn idempotent_publish(backend: Backend) {
    let hub = backend.hub(&[]).await;
    let org = unique_org("idem");
    let mut sub = subscribe(&hub, &org, &[]).await;

    let body = json!({"event": "action.created", "payload": {"n": 1}, "id": "evt_idem-1"});
    let first = publish_expect(&hub, &org, &body, &[], 202).await;
    assert_eq!(first["id"], "evt_idem-1");
    let again = publish_expect(&hub, &org, &body, &[], 200).await;
    assert_eq!(
        again, first,
        "a repeat must return the first envelope unchanged"
    );
    // Idempotency is by id alone: a different payload under the same id is still a repeat.
    let changed = json!({"event": "action.updated", "payload": {"n": 2}, "id": "evt_idem-1"});
    let again = publish_expect(&hub, &org, &changed, &[], 200).await;
    assert_eq!(again, first);
    expect_delivered(&mut sub, &first).await;
    expect_sentinel_next(&hub, &org, &mut sub, &[], "single").await;

    // Within one batch: the second copy is the first one's envelope, delivered once.
    let batch = json!([
        {"event": "action.created", "payload": {"n": 10}, "id": "evt_batch-a"},
        {"event": "action.created", "payload": {"n": 11}, "id": "evt_batch-a"},
        {"event": "action.created", "payload": {"n": 12}, "id": "evt_batch-b"},
        {"event": "action.created", "payload": {"n": 13}, "id": "evt_idem-1"},
    ]);
    let stored = publish_expect(&hub, &org, &batch, &[], 202).await;
    let stored = stored
        .as_array()
        .unwrap_or_else(|| panic!("batch response is not an array: {stored}"));
    assert_eq!(stored.len(), 4, "{stored:?}");
    assert_eq!(stored[0]["id"], "evt_batch-a");
    assert_eq!(stored[0]["payload"], json!({"n": 10}));
    assert_eq!(stored[1], stored[0]);
    assert_eq!(stored[2]["id"], "evt_batch-b");
    assert_ne!(stored[2]["cursor"], stored[0]["cursor"]);
    assert_eq!(
        stored[3], first,
        "a repeat of an earlier publish inside a batch"
    );
    expect_delivered(&mut sub, &stored[0]).await;
    expect_delivered(&mut sub, &stored[2]).await;
    expect_sentinel_next(&hub, &org, &mut sub, &[], "batch").await;

    // A batch of nothing but repeats changes nothing: 200 and the first envelopes.
    let repeats = json!([
        {"event": "action.created", "id": "evt_batch-b"},
        {"event": "action.created", "id": "evt_idem-1"},
        {"event": "action.created", "id": "evt_batch-a"},
    ]);
    let got = publish_expect(&hub, &org, &repeats, &[], 200).await;
    assert_eq!(
        got,
        json!([stored[2].clone(), first.clone(), stored[0].clone()])
    );
    expect_sentinel_next(&hub, &org, &mut sub, &[], "all repeats").await;
}

/// Asserts status and contract error code of a finished request.
fn check_error(what: &str, got: (u16, Value), status: u16, code: &str) {
    let (got_status, body) = got;
    assert_eq!(got_status, status, "{what}: body {body}");
    assert_eq!(error_code(&body), code, "{what}: body {body}");
}

async fn bad_input_is_rejected_and_publishes_nothing(backend: Backend) {
    let hub = backend.hub(&[("REALTIME_MAX_PAYLOAD_BYTES", "2048")]).await;
    let org = unique_org("badinput");
    let url = events_url(&hub, &org);
    let mut sub = subscribe(&hub, &org, &[]).await;
    const JSON: Option<&str> = Some("application/json");

    let raw = |body: &str| body.as_bytes().to_vec();
    for (what, ct, body, status, code) in [
        (
            "malformed JSON",
            JSON,
            raw(r#"{"event":"#),
            400,
            "malformed_json",
        ),
        (
            "trailing garbage",
            JSON,
            raw(r#"{"event":"a.b"} x"#),
            400,
            "malformed_json",
        ),
        ("empty body", JSON, Vec::new(), 400, "malformed_json"),
        (
            "no content type",
            None,
            raw(r#"{"event":"a.b"}"#),
            415,
            "unsupported_media_type",
        ),
        (
            "text/plain",
            Some("text/plain"),
            raw(r#"{"event":"a.b"}"#),
            415,
            "unsupported_media_type",
        ),
        (
            "form content type",
            Some("application/x-www-form-urlencoded"),
            raw(r#"{"event":"a.b"}"#),
            415,
            "unsupported_media_type",
        ),
        (
            "event not a string",
            JSON,
            raw(r#"{"event":5}"#),
            400,
            "invalid_body",
        ),
        (
            "no event",
            JSON,
            raw(r#"{"payload":{}}"#),
            400,
            "invalid_body",
        ),
        (
            "unknown field",
            JSON,
            raw(r#"{"event":"a.b","extra":1}"#),
            400,
            "invalid_body",
        ),
        (
            "id not a string",
            JSON,
            raw(r#"{"event":"a.b","id":7}"#),
            400,
            "invalid_body",
        ),
        (
            "JSON string body",
            JSON,
            raw(r#""action.created""#),
            400,
            "invalid_body",
        ),
        ("JSON number body", JSON, raw("42"), 400, "invalid_body"),
        ("JSON null body", JSON, raw("null"), 400, "invalid_body"),
        (
            "batch with a wrong-shape item",
            JSON,
            raw(r#"[{"event":"a.b"},{"event":5}]"#),
            400,
            "invalid_body",
        ),
        (
            "uppercase event",
            JSON,
            raw(r#"{"event":"Action.created"}"#),
            422,
            "invalid_event_name",
        ),
        (
            "empty event",
            JSON,
            raw(r#"{"event":""}"#),
            422,
            "invalid_event_name",
        ),
        (
            "double dot",
            JSON,
            raw(r#"{"event":"a..b"}"#),
            422,
            "invalid_event_name",
        ),
        (
            "colon in event",
            JSON,
            raw(r#"{"event":"a:b"}"#),
            422,
            "invalid_event_name",
        ),
        (
            "65-char event",
            JSON,
            format!(r#"{{"event":"{}"}}"#, "a".repeat(65)).into_bytes(),
            422,
            "invalid_event_name",
        ),
        (
            "reserved",
            JSON,
            raw(r#"{"event":"realtime.x"}"#),
            422,
            "reserved_event_name",
        ),
        (
            "reserved resync",
            JSON,
            raw(r#"{"event":"realtime.resync"}"#),
            422,
            "reserved_event_name",
        ),
        (
            "id without evt_",
            JSON,
            raw(r#"{"event":"a.b","id":"x_1"}"#),
            422,
            "invalid_event_id",
        ),
        (
            "bare evt_",
            JSON,
            raw(r#"{"event":"a.b","id":"evt_"}"#),
            422,
            "invalid_event_id",
        ),
        (
            "colon in id",
            JSON,
            raw(r#"{"event":"a.b","id":"evt_a:b"}"#),
            422,
            "invalid_event_id",
        ),
        (
            "129-char id suffix",
            JSON,
            format!(r#"{{"event":"a.b","id":"evt_{}"}}"#, "a".repeat(129)).into_bytes(),
            422,
            "invalid_event_id",
        ),
        ("empty batch", JSON, raw("[]"), 422, "empty_batch"),
        (
            "envelope over REALTIME_MAX_PAYLOAD_BYTES",
            JSON,
            serde_json::to_vec(&json!({"event": "a.b", "payload": {"s": "x".repeat(3000)}}))
                .unwrap_or_default(),
            413,
            "payload_too_large",
        ),
        (
            "batch with one oversized envelope",
            JSON,
            serde_json::to_vec(&json!([
                {"event": "a.b"},
                {"event": "a.b", "payload": "x".repeat(3000)},
            ]))
            .unwrap_or_default(),
            413,
            "payload_too_large",
        ),
    ] {
        let (got, resp, _) = post_raw(&url, ct, body, &[]).await;
        check_error(what, (got, resp), status, code);
    }

    // A batch is validated whole: one bad item means none of the three is stored.
    let batch = json!([
        {"event": "action.created", "payload": {"n": 1}, "id": "evt_bad-batch-1"},
        {"event": "Bad Name", "payload": {"n": 2}},
        {"event": "action.created", "payload": {"n": 3}},
    ]);
    let (status, body, _) = post_json(&url, &batch, &[]).await;
    check_error(
        "batch with one bad item",
        (status, body),
        422,
        "invalid_event_name",
    );
    let too_many: Vec<Value> = (0..1001).map(|_| json!({"event": "a.b"})).collect();
    let (status, body, _) = post_json(&url, &Value::Array(too_many), &[]).await;
    check_error("1001-item batch", (status, body), 413, "batch_too_large");
    // Larger than the body limit itself (max payload x 1000 events), not just one envelope.
    let huge = vec![b' '; 2048 * 1000 + 1];
    let (status, body, _) = post_raw(&url, JSON, huge, &[]).await;
    check_error(
        "body over the limit",
        (status, body),
        413,
        "payload_too_large",
    );

    // Org ids that must never reach a key or channel name; the good body isolates the check.
    let good = json!({"event": "action.created"});
    for bad_org in [
        "a:b",
        "*",
        "%2A",
        "%20",
        "a%20b",
        "a.b",
        "%7Bx%7D",
        &"x".repeat(65),
    ] {
        let (status, body, _) = post_json(&events_url(&hub, bad_org), &good, &[]).await;
        check_error(
            &format!("org {bad_org:?}"),
            (status, body),
            400,
            "invalid_org_id",
        );
    }

    for (what, method, path, status, code) in [
        (
            "unknown path",
            reqwest::Method::GET,
            "/nope".to_string(),
            404,
            "not_found",
        ),
        (
            "unknown path under an org",
            reqwest::Method::POST,
            format!("/v1/orgs/{org}/nope"),
            404,
            "not_found",
        ),
        (
            "GET on the publish route",
            reqwest::Method::GET,
            format!("/v1/orgs/{org}/events"),
            405,
            "method_not_allowed",
        ),
        (
            "PUT on the publish route",
            reqwest::Method::PUT,
            format!("/v1/orgs/{org}/events"),
            405,
            "method_not_allowed",
        ),
        (
            "POST on the stream route",
            reqwest::Method::POST,
            format!("/v1/orgs/{org}/stream"),
            405,
            "method_not_allowed",
        ),
    ] {
        let body = serde_json::to_vec(&good).unwrap_or_default();
        let (got, resp, headers) = request(
            method,
            &hub.url(&path),
            Some(body),
            &[("content-type", "application/json")],
        )
        .await;
        let resp: Value = serde_json::from_slice(&resp).unwrap_or(Value::Null);
        check_error(what, (got, resp), status, code);
        assert_eq!(
            common::header_str(&headers, "content-type").as_deref(),
            Some("application/json"),
            "{what}"
        );
    }

    expect_sentinel_next(&hub, &org, &mut sub, &[], "open hub").await;

    // Credential failures, on a hub with JWT auth.
    let secret = "publish-test-secret-of-32-bytes-or-more";
    let auth_hub = backend
        .hub(&[
            ("REALTIME_JWT_SECRET", secret),
            ("REALTIME_MAX_PAYLOAD_BYTES", "2048"),
        ])
        .await;
    let org = unique_org("badauth");
    let other_org = unique_org("badauth_other");
    let url = events_url(&auth_hub, &org);
    let sub_token = format!("Bearer {}", jwt_for(secret, &org, "subscribe", 3600));
    let mut sub = subscribe(&auth_hub, &org, &[("authorization", &sub_token)]).await;
    let publisher = format!("Bearer {}", jwt_for(secret, &org, "publish", 3600));
    let bad_cases: Vec<(&str, Option<String>, u16, &str)> = vec![
        ("no credential", None, 401, "unauthorized"),
        (
            "garbage token",
            Some("Bearer not.a.jwt".into()),
            401,
            "invalid_token",
        ),
        (
            "token signed with another secret",
            Some(format!(
                "Bearer {}",
                jwt_for("another-secret", &org, "publish", 3600)
            )),
            401,
            "invalid_token",
        ),
        (
            "token without exp",
            Some(format!(
                "Bearer {}",
                common::make_jwt(secret, &json!({"org_id": org, "scope": "publish"}))
            )),
            401,
            "invalid_token",
        ),
        (
            "expired token",
            Some(format!("Bearer {}", jwt_for(secret, &org, "publish", -60))),
            401,
            "token_expired",
        ),
        (
            "subscribe-only token",
            Some(sub_token.clone()),
            403,
            "insufficient_scope",
        ),
        (
            "token for another org",
            Some(format!(
                "Bearer {}",
                jwt_for(secret, &other_org, "publish", 3600)
            )),
            403,
            "forbidden_org",
        ),
    ];
    for (what, auth, status, code) in bad_cases {
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|v| ("authorization", v.as_str())).collect();
        let (got, resp, resp_headers) = post_json(&url, &good, &headers).await;
        check_error(what, (got, resp), status, code);
        if status == 401 {
            assert!(
                resp_headers.contains_key("www-authenticate"),
                "{what}: 401 without WWW-Authenticate"
            );
        }
    }
    let expired = jwt_for(secret, &org, "publish", -60);
    let (status, body, _) = post_json(&format!("{url}?access_token={expired}"), &good, &[]).await;
    check_error(
        "expired access_token query",
        (status, body),
        401,
        "token_expired",
    );
    // Auth is checked before the body: a bad credential with a malformed body is still 401.
    let (status, body, _) = post_raw(
        &url,
        JSON,
        b"{not json".to_vec(),
        &[("authorization", "Bearer not.a.jwt")],
    )
    .await;
    check_error(
        "bad token and bad body",
        (status, body),
        401,
        "invalid_token",
    );
    // A valid credential does not rescue bad input.
    let (status, body, _) = post_raw(
        &url,
        JSON,
        br#"{"event":"realtime.x"}"#.to_vec(),
        &[("authorization", &publisher)],
    )
    .await;
    check_error(
        "reserved name with a good token",
        (status, body),
        422,
        "reserved_event_name",
    );

    expect_sentinel_next(
        &auth_hub,
        &org,
        &mut sub,
        &[("authorization", &publisher)],
        "auth hub",
    )
    .await;
}

/// `^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$`
fn is_iso_millis_utc(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 24
        && b.iter().enumerate().all(|(i, &c)| match i {
            4 | 7 => c == b'-',
            10 => c == b'T',
            13 | 16 => c == b':',
            19 => c == b'.',
            23 => c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

/// Epoch milliseconds of a timestamp accepted by [`is_iso_millis_utc`].
fn timestamp_ms(s: &str) -> i64 {
    let n = |r: std::ops::Range<usize>| -> i64 {
        s[r].parse()
            .unwrap_or_else(|e| panic!("bad number in {s}: {e}"))
    };
    let (y, m, d) = (n(0..4), n(5..7), n(8..10));
    // Days from civil (Howard Hinnant), independent of the hub's own implementation.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    ((days * 24 + n(11..13)) * 60 + n(14..16)) * 60_000 + n(17..19) * 1000 + n(20..23)
}

/// `<ms>-<seq>` as a comparable pair.
fn parse_cursor(c: &Value) -> (u64, u64) {
    let s = c
        .as_str()
        .unwrap_or_else(|| panic!("cursor is not a string: {c}"));
    let (ms, seq) = s
        .split_once('-')
        .unwrap_or_else(|| panic!("cursor {s:?} is not <ms>-<seq>"));
    let digits = |p: &str| {
        assert!(
            !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()),
            "cursor {s:?} is not <ms>-<seq>"
        );
        p.parse::<u64>()
            .unwrap_or_else(|e| panic!("cursor {s:?}: {e}"))
    };
    (digits(ms), digits(seq))
}

fn is_ulid(s: &str) -> bool {
    const CROCKFORD: &[u8] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    s.len() == 26
        && s.bytes().all(|b| CROCKFORD.contains(&b))
        // 128 bits in 26 base-32 digits: the first digit carries only 3 bits.
        && s.as_bytes()[0] <= b'7'
}

async fn in_process_envelope_fields(backend: Backend) {
    let hub = backend.hub(&[]).await;
    let org = unique_org("fields");
    let mut sub = subscribe(&hub, &org, &[]).await;
    let now = common::now_unix() * 1000;

    let uuid_id = "evt_0f8fad5b-d9cb-469f-a165-70867728950e";
    let bodies = [
        json!({"event": "action.created"}),
        json!({"event": "guard.decision.created", "payload": {"decision": {"ok": true}, "s": "a\nb\u{e9}"}}),
        json!({"event": "agent.heartbeat", "payload": [1, "two", {"three": 3}]}),
        json!({"event": "a", "payload": "just a string"}),
        json!({"event": "loop.closed", "payload": 42, "id": uuid_id}),
    ];
    let mut published = Vec::new();
    for body in &bodies {
        let envelope = publish_expect(&hub, &org, body, &[], 202).await;
        let keys: Vec<&str> = envelope
            .as_object()
            .unwrap_or_else(|| panic!("envelope is not an object: {envelope}"))
            .keys()
            .map(String::as_str)
            .collect();
        let mut keys = keys;
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "cursor",
                "event",
                "id",
                "org_id",
                "payload",
                "timestamp",
                "version"
            ],
            "{envelope}"
        );
        let id = envelope["id"].as_str().unwrap_or_default();
        match body.get("id") {
            Some(given) => assert_eq!(envelope["id"], *given, "producer id kept"),
            None => {
                let ulid = id
                    .strip_prefix("evt_")
                    .unwrap_or_else(|| panic!("generated id {id:?} lacks evt_"));
                assert!(is_ulid(ulid), "generated id {id:?} is not evt_ + ULID");
            }
        }
        assert_eq!(envelope["org_id"], org.as_str());
        assert_eq!(envelope["event"], body["event"]);
        assert_eq!(envelope["version"], "v1");
        assert_eq!(
            envelope["payload"],
            body.get("payload").cloned().unwrap_or_else(|| json!({})),
            "payload kept verbatim, {{}} when absent"
        );
        let ts = envelope["timestamp"].as_str().unwrap_or_default();
        assert!(is_iso_millis_utc(ts), "timestamp {ts:?}");
        // Sanity only (not speed): the stamp is server wall-clock time, not a constant.
        let skew = (timestamp_ms(ts) - now).abs();
        assert!(
            skew < 600_000,
            "timestamp {ts} is {skew} ms from the test clock"
        );
        let (cursor_ms, _) = parse_cursor(&envelope["cursor"]);
        let skew = (i64::try_from(cursor_ms).unwrap_or(i64::MAX) - now).abs();
        assert!(
            skew < 600_000,
            "cursor {} is {skew} ms from the test clock",
            envelope["cursor"]
        );
        published.push(envelope);
    }
    let cursors: Vec<(u64, u64)> = published
        .iter()
        .map(|e| parse_cursor(&e["cursor"]))
        .collect();
    assert!(
        cursors.windows(2).all(|w| w[0] < w[1]),
        "cursors not strictly increasing: {cursors:?}"
    );
    let ids: std::collections::HashSet<&str> =
        published.iter().filter_map(|e| e["id"].as_str()).collect();
    assert_eq!(ids.len(), published.len(), "ids are unique");
    // The stream carries exactly the stored envelopes, in order, one line of data each.
    for envelope in &published {
        expect_delivered(&mut sub, envelope).await;
    }
    let data_lines: Vec<Value> = sub
        .raw_text()
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str(d).ok())
        .collect();
    for envelope in &published {
        assert!(
            data_lines.contains(envelope),
            "no single data: line carries {envelope}"
        );
    }
}

/// DashClaw's Node publisher's whole envelope (`{id, org_id, event, timestamp, version,
/// payload}`, built as `publishOrgEvent` builds it) is accepted over HTTP: stored with its id
/// and payload, the hub's own timestamp and a cursor. A wrong org, a wrong version or a field
/// the envelope does not have are refused with their codes and publish nothing.
async fn dashclaw_envelope_over_http(backend: Backend) {
    let hub = backend.hub(&[]).await;
    let org = unique_org("node_http");
    let mut sub = subscribe(&hub, &org, &[]).await;

    let envelope = node_envelope(&org, "guard.decision", json!({"decision": {"id": "gd_1"}}));
    let stored = publish_expect(&hub, &org, &envelope, &[], 202).await;
    assert_eq!(stored["id"], envelope["id"]);
    assert_eq!(stored["org_id"], json!(org));
    assert_eq!(stored["event"], "guard.decision");
    assert_eq!(stored["version"], "v1");
    assert_eq!(stored["payload"], envelope["payload"]);
    assert!(stored["cursor"].is_string(), "{stored}");
    expect_delivered(&mut sub, &stored).await;
    // The same envelope again is a duplicate of the first.
    let again = publish_expect(&hub, &org, &envelope, &[], 200).await;
    assert_eq!(again, stored);

    let refusals = [
        ("org_id", json!("org_someone_else"), 422, "org_mismatch"),
        ("version", json!("v2"), 422, "invalid_version"),
    ];
    for (field, value, status, code) in refusals {
        let mut bad = node_envelope(&org, "guard.decision", json!({}));
        bad[field] = value;
        let reply = publish_expect(&hub, &org, &bad, &[], status).await;
        assert_eq!(error_code(&reply), code, "{field}: {reply}");
    }
    let mut extra = node_envelope(&org, "guard.decision", json!({}));
    extra["cursor"] = json!("1-1");
    let reply = publish_expect(&hub, &org, &extra, &[], 400).await;
    assert!(!error_code(&reply).is_empty(), "{reply}");
    // In a batch, one bad envelope refuses the whole request.
    let mut wrong_org = node_envelope(&org, "guard.decision", json!({}));
    wrong_org["org_id"] = json!("org_someone_else");
    let batch = json!([node_envelope(&org, "guard.decision", json!({})), wrong_org]);
    publish_expect(&hub, &org, &batch, &[], 422).await;
    expect_sentinel_next(&hub, &org, &mut sub, &[], "after refusals").await;
}
