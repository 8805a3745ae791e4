//! DashClaw's browser sessions on the hub, with cookies minted by next-auth 4.24's
//! `encode()` and jose 4's `SignJWT` exactly as DashClaw mints them: which requests they
//! open, which they cannot, `Sec-Fetch-Site`, chunked cookies, the org rules, and streams
//! that end at the session's expiry.

mod common;

use std::time::Duration;

use common::dashclaw::{
    LOCAL_COOKIE, NEXTAUTH_COOKIE, local_token, local_token_expiring, nextauth_token,
};
use common::{
    End, Received, SseClient, SseItem, TestHub, error_code, jwt_for, metric_value, now_unix,
    post_json, secs, unique_org,
};
use serde_json::json;

const SECRET: &str = "dashclaw-nextauth-secret-for-the-hub-tests";
const WAIT: Duration = Duration::from_secs(20);
const JWT_SECRET: &str = "hub-jwt-secret-of-at-least-32-bytes!!";

async fn hub(extra: &[(&str, &str)]) -> TestHub {
    let mut env = vec![
        ("NEXTAUTH_SECRET", SECRET),
        ("REALTIME_JWT_SECRET", JWT_SECRET),
    ];
    env.extend_from_slice(extra);
    TestHub::spawn(&env).await
}

fn same_origin(cookie: &str) -> Vec<(&'static str, String)> {
    vec![
        ("cookie", cookie.to_owned()),
        ("sec-fetch-site", "same-origin".to_owned()),
    ]
}

fn as_refs<'a>(headers: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    headers.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

async fn connected_org(url: &str, headers: &[(&'static str, String)]) -> String {
    let mut client = SseClient::connect_ok(url, &as_refs(headers)).await;
    let connected = client.expect_event_named("connected", WAIT).await;
    connected.json()["orgId"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

async fn refused(url: &str, headers: &[(&'static str, String)]) -> (u16, String) {
    let (status, body) = SseClient::connect_expect_status(url, &as_refs(headers)).await;
    (status, error_code(&body))
}

async fn publish(hub: &TestHub, org: &str, event: &str) {
    let token = jwt_for(JWT_SECRET, org, "publish", 600);
    let auth = format!("Bearer {token}");
    let (status, body, _) = post_json(
        &hub.url(&format!("/v1/orgs/{org}/events")),
        &json!({"event": event, "payload": {"action": {"id": "a1"}}}),
        &[("authorization", auth.as_str())],
    )
    .await;
    assert_eq!(status, 202, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nextauth_cookie_opens_the_sessions_org_same_origin_only() {
    let hub = hub(&[]).await;
    let org = unique_org("na");
    let token = nextauth_token(
        &json!({"orgId": org, "role": "admin", "userId": "usr_1", "sub": "u1"}),
        SECRET,
        3600,
    );
    let cookie = format!("{NEXTAUTH_COOKIE}={token}");
    let api = hub.url("/api/stream");

    // The dashboard's request: same-origin, cookie, no token: its org's named events.
    let mut client = SseClient::connect_ok(&api, &as_refs(&same_origin(&cookie))).await;
    let connected = client.expect_event_named("connected", WAIT).await;
    assert_eq!(connected.json()["orgId"], json!(org));
    publish(&hub, &org, "action.created").await;
    let event = client.expect_event_named("action.created", WAIT).await;
    assert_eq!(event.json(), json!({"id": "a1"}));

    // The same cookie on the org's own v1 route; another org's route is forbidden.
    let own = hub.url(&format!("/v1/orgs/{org}/stream"));
    let mut v1 = SseClient::connect_ok(&own, &as_refs(&same_origin(&cookie))).await;
    v1.expect_event_named("realtime.connected", WAIT).await;
    let other = hub.url(&format!("/v1/orgs/{}/stream", unique_org("na_other")));
    assert_eq!(
        refused(&other, &same_origin(&cookie)).await,
        (403, "forbidden_org".into())
    );

    // Not same-origin (absent, same-site, cross-site, other case): NextAuth's cookie is not read.
    for site in [
        None,
        Some("same-site"),
        Some("cross-site"),
        Some("none"),
        Some("Same-Origin"),
    ] {
        let mut headers = vec![("cookie", cookie.clone())];
        if let Some(site) = site {
            headers.push(("sec-fetch-site", site.to_owned()));
        }
        assert_eq!(
            refused(&api, &headers).await,
            (401, "unauthorized".into()),
            "{site:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nextauth_refusals() {
    let hub = hub(&[]).await;
    let org = unique_org("na_bad");
    let claims = json!({"orgId": org});
    let api = hub.url("/api/stream");
    let expired = nextauth_token(&claims, SECRET, -3600);
    let wrong = nextauth_token(&claims, "another-secret-entirely-not-the-hubs", 3600);
    let cases = [
        (
            format!("{NEXTAUTH_COOKIE}={expired}"),
            401,
            "session_expired",
        ),
        (format!("{NEXTAUTH_COOKIE}={wrong}"), 401, "invalid_session"),
        (format!("{NEXTAUTH_COOKIE}=garbage"), 401, "invalid_session"),
    ];
    for (cookie, status, code) in cases {
        assert_eq!(
            refused(&api, &same_origin(&cookie)).await,
            (status, code.into()),
            "{cookie}"
        );
    }
    // The __Secure- name is not this deployment's (NEXTAUTH_URL is not https).
    let good = nextauth_token(&claims, SECRET, 3600);
    let secure = format!("__Secure-{NEXTAUTH_COOKIE}={good}");
    assert_eq!(
        refused(&api, &same_origin(&secure)).await,
        (401, "unauthorized".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_deployments_read_the_secure_cookie_and_chunks() {
    let hub = hub(&[("NEXTAUTH_URL", "https://dashclaw.example")]).await;
    let org = unique_org("na_sec");
    // A big session (NextAuth splits such cookies into .0, .1, ...).
    let padding = "p".repeat(6000);
    let token = nextauth_token(&json!({"orgId": org, "padding": padding}), SECRET, 3600);
    assert!(token.len() > 3933, "the token should need chunks");
    let (a, b) = token.split_at(3933);
    let name = format!("__Secure-{NEXTAUTH_COOKIE}");
    let chunked = format!("{name}.1={b}; {name}.0={a}");
    assert_eq!(
        connected_org(&hub.url("/api/stream"), &same_origin(&chunked)).await,
        org
    );
    // The plain name is not read over https.
    let plain = format!(
        "{NEXTAUTH_COOKIE}={}",
        nextauth_token(&json!({"orgId": org}), SECRET, 3600)
    );
    assert_eq!(
        refused(&hub.url("/api/stream"), &same_origin(&plain)).await,
        (401, "unauthorized".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_session_cookie_rules() {
    let hub = hub(&[]).await;
    let org = unique_org("local");
    let api = hub.url("/api/stream");
    let token = local_token(&json!({"orgId": org}), SECRET);
    let cookie = format!("{LOCAL_COOKIE}={token}");
    // Accepted without Sec-Fetch-Site (mobile browsers), and with it.
    assert_eq!(
        connected_org(&api, &[("cookie", cookie.clone())]).await,
        org
    );
    assert_eq!(connected_org(&api, &same_origin(&cookie)).await, org);
    // A bad NextAuth cookie beside it: DashClaw falls back to the local one.
    let both = format!("{NEXTAUTH_COOKIE}=garbage; {cookie}");
    assert_eq!(connected_org(&api, &same_origin(&both)).await, org);

    let wrong_provider = local_token(&json!({"orgId": org, "provider": "github"}), SECRET);
    let no_provider = local_token(&json!({"orgId": org, "provider": null}), SECRET);
    let wrong_secret = local_token(&json!({"orgId": org}), "not-the-nextauth-secret-at-all-x");
    let expired = local_token_expiring(&json!({"orgId": org}), SECRET, now_unix() - 5);
    for (token, status, code) in [
        (wrong_provider, 401, "invalid_session"),
        (no_provider, 401, "invalid_session"),
        (wrong_secret, 401, "invalid_session"),
        (expired, 401, "session_expired"),
    ] {
        let headers = [("cookie", format!("{LOCAL_COOKIE}={token}"))];
        assert_eq!(refused(&api, &headers).await, (status, code.into()));
    }
    // Cross-org on the v1 route.
    let other = hub.url(&format!("/v1/orgs/{}/stream", unique_org("local_other")));
    assert_eq!(
        refused(&other, &[("cookie", cookie.clone())]).await,
        (403, "forbidden_org".into())
    );

    // Sessions only open org streams: publishing and ops are refused with a code.
    let (status, body, _) = post_json(
        &hub.url(&format!("/v1/orgs/{org}/events")),
        &json!({"event": "action.created"}),
        &[("cookie", cookie.as_str())],
    )
    .await;
    assert_eq!(
        (status, error_code(&body).as_str()),
        (403, "credential_not_allowed"),
        "{body}"
    );
    assert_eq!(
        refused(&hub.url("/v1/ops/stream"), &[("cookie", cookie.clone())]).await,
        (403, "credential_not_allowed".into())
    );
    assert_eq!(
        refused(&hub.url("/v1/ops/stats"), &[("cookie", cookie.clone())]).await,
        (403, "credential_not_allowed".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_without_an_org_follow_dashclaw_mode() {
    let self_host = hub(&[]).await;
    let no_org = local_token(&json!({"orgId": null}), SECRET);
    let cookie = [("cookie", format!("{LOCAL_COOKIE}={no_org}"))];
    assert_eq!(
        connected_org(&self_host.url("/api/stream"), &cookie).await,
        "org_default"
    );
    let hosted = hub(&[("DASHCLAW_MODE", "saas")]).await;
    assert_eq!(
        refused(&hosted.url("/api/stream"), &cookie).await,
        (403, "needs_onboarding".into())
    );
    let named = local_token(&json!({"orgId": "org_acme"}), SECRET);
    let named = [("cookie", format!("{LOCAL_COOKIE}={named}"))];
    assert_eq!(
        connected_org(&hosted.url("/api/stream"), &named).await,
        "org_acme"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_ends_at_its_sessions_expiry_with_a_retry_frame() {
    let hub = hub(&[("REALTIME_RETRY_MS", "1234")]).await;
    let org = unique_org("expiry");
    let exp = now_unix() + 3;
    let token = local_token_expiring(&json!({"orgId": org}), SECRET, exp);
    let cookie = [("cookie", format!("{LOCAL_COOKIE}={token}"))];
    let mut client = SseClient::connect_ok(&hub.url("/api/stream"), &as_refs(&cookie)).await;
    client.expect_event_named("connected", WAIT).await;
    // Nothing ends it before the expiry but the expiry itself; then retry: and the end.
    let mut items = Vec::new();
    let end = loop {
        match client.next_item(secs(30)).await {
            Some(Received::Item(item)) => items.push(item),
            Some(Received::Ended(end)) => break end,
            None => panic!("the stream did not end within 30 s of its session's expiry"),
        }
    };
    assert_eq!(end, End::Clean, "{}", client.raw_text());
    assert!(now_unix() >= exp, "ended before the session expired");
    assert!(
        matches!(items.last(), Some(SseItem::Retry(1234))),
        "the last frame is retry:, got {items:?}"
    );
    let metrics = hub.metrics().await;
    let expired = metric_value(
        &metrics,
        "dashclaw_realtime_connections_closed_total",
        &[("reason", "expired")],
    );
    assert_eq!(expired, Some(1.0), "{metrics}");
    // Coming back with the same (now expired) cookie is refused.
    assert_eq!(
        refused(&hub.url("/api/stream"), &cookie).await,
        (401, "session_expired".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_cookies_never_reach_the_log() {
    let hub = hub(&[("RUST_LOG", "trace")]).await;
    let org = unique_org("log");
    let local = local_token(&json!({"orgId": org}), SECRET);
    let nextauth = nextauth_token(&json!({"orgId": org}), SECRET, 3600);
    let cookie = format!("{LOCAL_COOKIE}={local}; {NEXTAUTH_COOKIE}={nextauth}");
    connected_org(&hub.url("/api/stream"), &same_origin(&cookie)).await;
    let bad = [("cookie", format!("{LOCAL_COOKIE}={local}x"))];
    refused(&hub.url("/api/stream"), &bad).await;
    assert!(hub.wait_for_log("/api/stream", WAIT).await);
    let log = hub.log_text();
    for secret in [&local, &nextauth, &SECRET.to_owned()] {
        assert!(
            !log.contains(secret.as_str()),
            "a credential reached the log:\n{log}"
        );
        // Not even a recognizable part of it (the signature or ciphertext segment).
        let tail = secret.rsplit('.').next().unwrap_or_default();
        assert!(
            tail.len() < 8 || !log.contains(tail),
            "part of a credential reached the log"
        );
    }
}
