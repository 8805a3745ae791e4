//! Logs: one access line per request with a request id (echoed in `x-request-id`),
//! redacted query values, session spans, JSON lines on request, and never a credential
//! (contract section 6: keys are never logged in clear), even with our crate at trace.

mod common;

use std::time::Duration;

use serde_json::{Value, json};

use common::{
    SseClient, TestHub, get, header_str, jwt_for, post_json, unique_org, write_api_keys_file,
};

const WAIT: Duration = Duration::from_secs(15);
const TRACE: &str = "dashclaw_realtime=trace,info";

async fn connected(url: &str, headers: &[(&str, &str)]) -> SseClient {
    let mut client = SseClient::connect_ok(url, headers).await;
    client.expect_event_named("realtime.connected", WAIT).await;
    client
}

/// Makes sure everything logged for earlier requests is in the file: the access line of
/// this last request comes after theirs.
async fn flush_marker(hub: &TestHub, marker: &str) {
    let (status, _, _) = get(&hub.url("/healthz"), &[("x-request-id", marker)]).await;
    assert_eq!(status, 200);
    assert!(
        hub.wait_for_log(marker, WAIT).await,
        "the access line of {marker} never appeared:\n{}",
        hub.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_never_reach_the_log_even_at_trace() {
    let secret = "log-secret-Zq8Wm3Xv9Lk2-Pq7Rt5Ys1Uv3";
    let api_key = "dck_live_K3yV4lu3ThatMustNeverBeLogged";
    let wrong_key = "dck_live_Wr0ngK3yThatMustNeverBeLoggedEither";
    let org = unique_org("logging");
    let keys_dir = tempfile::tempdir().expect("tempdir");
    let keys_file = write_api_keys_file(keys_dir.path(), &[(api_key, &org, "subscribe,publish")]);
    let hub = TestHub::spawn(&[
        ("RUST_LOG", TRACE),
        ("REALTIME_JWT_SECRET", secret),
        (
            "REALTIME_API_KEYS_FILE",
            keys_file.to_str().expect("utf-8 path"),
        ),
    ])
    .await;
    let header_token = jwt_for(secret, &org, "subscribe publish", 600);
    let query_token = jwt_for(secret, &org, "subscribe", 601);
    let expired_token = jwt_for(secret, &org, "subscribe", -600);
    let forged_token = jwt_for("some-other-secret", &org, "subscribe", 600);
    let stream = hub.url(&format!("/v1/orgs/{org}/stream"));
    let events = hub.url(&format!("/v1/orgs/{org}/events"));
    let bearer = format!("Bearer {header_token}");

    // Credentials in every place a client may put them, accepted and refused.
    let mut by_header = connected(
        &stream,
        &[("authorization", &bearer), ("x-request-id", "log-bearer-1")],
    )
    .await;
    assert_eq!(
        by_header.header("x-request-id").as_deref(),
        Some("log-bearer-1")
    );
    let mut by_query = connected(
        &format!("{stream}?access_token={query_token}&events=action.*"),
        &[],
    )
    .await;
    let mut legacy = SseClient::connect_ok(
        &hub.url(&format!("/api/stream?access_token={query_token}")),
        &[],
    )
    .await;
    legacy.expect_event_named("connected", WAIT).await;
    let mut by_key = connected(&stream, &[("x-api-key", api_key)]).await;
    // A token pasted where a resume position goes is client text, not a position.
    let mut pasted = SseClient::connect_ok(
        &format!("{stream}?access_token={query_token}&last_event_id={header_token}"),
        &[],
    )
    .await;
    pasted.expect_event_named("realtime.resync", WAIT).await;

    let (status, body, headers) = post_json(
        &events,
        &json!({"event": "action.created"}),
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let generated = header_str(&headers, "x-request-id").expect("x-request-id echoed");
    assert_eq!(
        generated.len(),
        26,
        "a ULID when the client sent none: {generated}"
    );
    let (status, body, _) = post_json(
        &events,
        &json!({"event": "action.updated"}),
        &[("x-api-key", api_key)],
    )
    .await;
    assert_eq!(status, 202, "{body}");
    for client in [&mut by_header, &mut by_query, &mut by_key] {
        client.expect_event_named("action.updated", WAIT).await;
    }

    for (url, headers, code) in [
        (
            format!("{stream}?access_token={expired_token}"),
            vec![],
            401,
        ),
        (format!("{stream}?access_token={forged_token}"), vec![], 401),
        (
            stream.clone(),
            vec![("authorization".to_owned(), format!("Bearer {forged_token}"))],
            401,
        ),
        (
            stream.clone(),
            vec![("x-api-key".to_owned(), wrong_key.to_owned())],
            401,
        ),
    ] {
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let (status, body, _) = get(&url, &headers).await;
        assert_eq!(status, code, "{url}: {body}");
    }
    let (status, _, _) = post_json(
        &events,
        &json!({"event": "a.b"}),
        &[("x-api-key", wrong_key)],
    )
    .await;
    assert_eq!(status, 401);
    // A request id that looks like a token is replaced, not echoed or logged.
    let (_, _, headers) = get(&hub.url("/healthz"), &[("x-request-id", &header_token)]).await;
    let replaced = header_str(&headers, "x-request-id").expect("x-request-id");
    assert_ne!(replaced, header_token);

    drop((by_header, by_query, legacy, by_key, pasted));
    flush_marker(&hub, "log-final-marker").await;
    let log = hub.log_text();

    let mut secrets: Vec<(&str, String)> = vec![
        ("JWT secret", secret.to_owned()),
        ("API key", api_key.to_owned()),
        ("wrong API key", wrong_key.to_owned()),
    ];
    for (what, token) in [
        ("header token", &header_token),
        ("query token", &query_token),
        ("expired token", &expired_token),
        ("forged token", &forged_token),
    ] {
        // The header segment is the same for every HS256 token; claims and signature
        // are what identify (and, for the signature, authenticate) a credential.
        let mut parts = token.split('.').skip(1);
        secrets.push((what, token.clone()));
        secrets.push((what, parts.next().expect("claims").to_owned()));
        secrets.push((what, parts.next().expect("signature").to_owned()));
    }
    for (what, value) in &secrets {
        assert!(
            !log.contains(value.as_str()),
            "the {what} appears in the log:\n{log}"
        );
    }

    // The access lines are there, with the query's credential redacted.
    let access: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("dashclaw_realtime::access"))
        .collect();
    let line_with = |needle: &str| {
        access
            .iter()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no access line with {needle:?} in:\n{log}"))
            .to_string()
    };
    let line = line_with(&format!(
        "path=/v1/orgs/{org}/stream?access_token=REDACTED&events=action.*"
    ));
    assert!(
        line.contains("method=GET") && line.contains("status=200"),
        "{line}"
    );
    assert!(line.contains("duration_ms="), "{line}");
    line_with("path=/api/stream?access_token=REDACTED");
    line_with(&format!(
        "path=/v1/orgs/{org}/stream?access_token=REDACTED&last_event_id=REDACTED"
    ));
    let bearer_line = line_with("request_id=log-bearer-1");
    assert!(bearer_line.contains("status=200"), "{bearer_line}");
    assert!(line_with(&format!("request_id={generated}")).contains("status=202"));
    assert!(
        access.iter().any(|l| l.contains("status=401")),
        "no 401 access line:\n{log}"
    );
    // Session lines run in a span naming the org, the session and the resume position.
    assert!(
        log.lines().any(|l| l.contains("session{")
            && l.contains(&format!("org={org}"))
            && l.contains("resume=")),
        "no line inside a session span:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_log_lines_are_objects_with_the_request_id() {
    let hub = TestHub::spawn(&[("RUST_LOG", TRACE), ("REALTIME_LOG_FORMAT", "json")]).await;
    let org = unique_org("logging_json");
    let stream = hub.url(&format!("/v1/orgs/{org}/stream"));
    let mut client = connected(&stream, &[("x-request-id", "json-stream-1")]).await;
    let (status, body, headers) = post_json(
        &hub.url(&format!("/v1/orgs/{org}/events")),
        &json!({"event": "action.created"}),
        &[("x-request-id", "json-publish-1")],
    )
    .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        header_str(&headers, "x-request-id").as_deref(),
        Some("json-publish-1")
    );
    client.expect_event_named("action.created", WAIT).await;
    drop(client);
    flush_marker(&hub, "json-final-marker").await;

    let log = hub.log_text();
    let lines: Vec<Value> = log
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let value: Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {l:?}\nlog:\n{log}"));
            assert!(value.is_object(), "not an object: {l}");
            value
        })
        .collect();
    let access = |id: &str| {
        lines
            .iter()
            .find(|l| l["target"] == "dashclaw_realtime::access" && l["fields"]["request_id"] == id)
            .unwrap_or_else(|| panic!("no JSON access line for {id}:\n{log}"))
            .clone()
    };
    let stream_line = access("json-stream-1");
    assert_eq!(stream_line["fields"]["status"], 200, "{stream_line}");
    assert_eq!(stream_line["fields"]["method"], "GET");
    assert_eq!(
        stream_line["fields"]["path"],
        format!("/v1/orgs/{org}/stream"),
        "{stream_line}"
    );
    assert_eq!(access("json-publish-1")["fields"]["status"], 202);
    // Lines logged while handling the request carry its id through the span.
    let in_span = lines.iter().any(|l| {
        l["spans"]
            .as_array()
            .is_some_and(|spans| spans.iter().any(|s| s["request_id"] == "json-stream-1"))
    });
    assert!(
        in_span,
        "no line inside the request span of json-stream-1:\n{log}"
    );
}
