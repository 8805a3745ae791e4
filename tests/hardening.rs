//! Issue 14's auth/HTTP/CLI items: JWT `nbf`, issuer and audience; short JWT secrets
//! refused; security headers and the status page's CSP; the `Host` check when auth is off;
//! DashClaw's settings (`REALTIME_ENFORCE_REDIS`, `REALTIME_REDIS_URL`, ignored names);
//! `token --ttl` overflow.

mod common;

use std::time::Duration;

use common::{SseClient, TestHub, error_code, get, make_jwt, now_unix, run_cli, unique_org};
use serde_json::json;

const SECRET: &str = "hardening-secret-of-at-least-32-bytes";
const WAIT: Duration = Duration::from_secs(20);

async fn stream_code(hub: &TestHub, org: &str, token: &str) -> (u16, String) {
    let auth = format!("Bearer {token}");
    let (status, body) = SseClient::connect_expect_status(
        &hub.url(&format!("/v1/orgs/{org}/stream")),
        &[("authorization", auth.as_str())],
    )
    .await;
    let code = if status == 200 {
        String::new()
    } else {
        error_code(&body)
    };
    (status, code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_nbf_issuer_and_audience() {
    let org = unique_org("jwtbind");
    let now = now_unix();
    let claims = |extra: serde_json::Value| {
        let mut c = json!({"exp": now + 600, "org_id": org, "scope": "subscribe"});
        for (k, v) in extra.as_object().into_iter().flatten() {
            c[k] = v.clone();
        }
        make_jwt(SECRET, &c)
    };
    let plain = TestHub::spawn(&[("REALTIME_JWT_SECRET", SECRET)]).await;
    assert_eq!(stream_code(&plain, &org, &claims(json!({}))).await.0, 200);
    let early = claims(json!({"nbf": now + 600}));
    assert_eq!(
        stream_code(&plain, &org, &early).await,
        (401, "invalid_token".into())
    );
    assert_eq!(
        stream_code(&plain, &org, &claims(json!({"nbf": now - 5})))
            .await
            .0,
        200
    );

    let bound = TestHub::spawn(&[
        ("REALTIME_JWT_SECRET", SECRET),
        ("REALTIME_JWT_ISSUER", "dashclaw"),
        ("REALTIME_JWT_AUDIENCE", "dashclaw-realtime"),
    ])
    .await;
    let good = claims(json!({"iss": "dashclaw", "aud": "dashclaw-realtime"}));
    assert_eq!(stream_code(&bound, &org, &good).await.0, 200);
    for bad in [
        json!({}),
        json!({"iss": "dashclaw"}),
        json!({"aud": "dashclaw-realtime"}),
        json!({"iss": "someone-else", "aud": "dashclaw-realtime"}),
        json!({"iss": "dashclaw", "aud": "another-service"}),
    ] {
        assert_eq!(
            stream_code(&bound, &org, &claims(bad.clone())).await,
            (401, "invalid_token".into()),
            "{bad}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_jwt_secrets_and_dashclaw_settings_at_start() {
    let (status, output) =
        TestHub::spawn_expect_exit(&[("REALTIME_JWT_SECRET", "s3cret")], &[]).await;
    assert_eq!(status.code(), Some(2), "{output}");
    assert!(
        output.contains("REALTIME_JWT_SECRET") && output.contains("32"),
        "{output}"
    );

    let (status, output) =
        TestHub::spawn_expect_exit(&[("REALTIME_ENFORCE_REDIS", "true")], &[]).await;
    assert_eq!(status.code(), Some(2), "{output}");
    assert!(output.contains("REALTIME_ENFORCE_REDIS"), "{output}");

    let (status, output) = TestHub::spawn_expect_exit(
        &[
            ("REALTIME_BACKEND", "redis"),
            ("REALTIME_REDIS_URL", "http://wrong"),
        ],
        &[],
    )
    .await;
    assert_eq!(status.code(), Some(2), "{output}");
    assert!(output.contains("REALTIME_REDIS_URL"), "{output}");

    let (status, output) = TestHub::spawn_expect_exit(&[("DATABASE_URL", "mysql://x")], &[]).await;
    assert_eq!(status.code(), Some(2), "{output}");
    assert!(output.contains("DATABASE_URL"), "{output}");

    // DashClaw's settings the hub has no use for: one line naming them, never an error.
    let hub = TestHub::spawn(&[
        ("REALTIME_REPLAY_MAX_EVENTS", "1000"),
        ("REALTIME_MEMORY_MAX_LISTENERS", "0"),
    ])
    .await;
    assert!(
        hub.wait_for_log("ignored", WAIT).await,
        "{}",
        hub.log_text()
    );
    let line = hub
        .log_text()
        .lines()
        .find(|l| l.contains("ignored"))
        .unwrap_or_default()
        .to_owned();
    assert!(
        line.contains("REALTIME_REPLAY_MAX_EVENTS")
            && line.contains("REALTIME_MEMORY_MAX_LISTENERS"),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_headers_and_the_status_pages_csp() {
    let hub = TestHub::spawn(&[]).await;
    for path in ["/", "/healthz", "/readyz", "/metrics", "/nowhere"] {
        let (_, _, headers) = get(&hub.url(path), &[]).await;
        assert_eq!(
            headers.get("x-content-type-options").map(|v| v.as_bytes()),
            Some(&b"nosniff"[..]),
            "{path}"
        );
        assert_eq!(
            headers.get("x-frame-options").map(|v| v.as_bytes()),
            Some(&b"DENY"[..]),
            "{path}"
        );
    }
    let (_, html, headers) = get(&hub.url("/"), &[]).await;
    let csp = headers
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("no CSP on the status page"))
        .to_owned();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    // The policy allows exactly the page's own inline script, by hash, and no inline styles
    // in attributes (which a hash cannot allow).
    assert!(
        csp.contains("script-src 'sha256-") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert!(
        !html.contains(" style=\""),
        "inline style attributes are blocked by the CSP"
    );
}

/// Raw request with a chosen Host header; returns the status line and body.
async fn with_host(hub: &TestHub, host: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::TcpStream::connect(hub.addr())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let request = format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    socket
        .write_all(request.as_bytes())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut out = Vec::new();
    let _ = tokio::time::timeout(WAIT, socket.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_auth_off_only_loopback_hosts_are_served() {
    let hub = TestHub::spawn(&[]).await;
    let port = hub.port();
    for ok in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        "localhost".into(),
        format!("[::1]:{port}"),
    ] {
        let response = with_host(&hub, &ok).await;
        assert!(response.starts_with("HTTP/1.1 200"), "{ok}: {response}");
    }
    for bad in [
        "evil.example",
        "evil.example:8080",
        "localhost.evil.example",
    ] {
        let response = with_host(&hub, bad).await;
        assert!(response.starts_with("HTTP/1.1 421"), "{bad}: {response}");
        assert!(response.contains("host_not_allowed"), "{response}");
    }
    // With auth on, names are the proxy's business (and a credential is required anyway).
    let auth = TestHub::spawn(&[("REALTIME_JWT_SECRET", SECRET)]).await;
    assert!(
        with_host(&auth, "dashclaw.example")
            .await
            .starts_with("HTTP/1.1 200")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_ttl_overflow_exits_2() {
    let env = [("REALTIME_JWT_SECRET", SECRET)];
    for ttl in [
        "99999999999999999999d",
        "213503982335d",
        "18446744073709551615",
        "0",
    ] {
        let (status, _, stderr) =
            run_cli(&["token", "--org", "org_a", "--ttl", ttl], &env, None).await;
        assert_eq!(status.code(), Some(2), "--ttl {ttl}: {stderr}");
        assert!(stderr.contains("ttl"), "{stderr}");
    }
    let (status, stdout, _) =
        run_cli(&["token", "--org", "org_a", "--ttl", "7d"], &env, None).await;
    assert!(status.success() && stdout.trim().split('.').count() == 3);
}
