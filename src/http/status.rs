//! The live status page (`GET /`) and the ops-scoped stats stream it reads
//! (`GET /v1/ops/stats`, through actix-web-lab's SSE responder: one small event a second
//! per viewer, where encoding per connection costs nothing worth sharing).

use std::convert::Infallible;
use std::sync::LazyLock;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use sha2::{Digest, Sha256};

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use actix_web_lab::sse::{self, Sse};
use futures_util::stream;
use serde_json::{Value, json};

use super::credentials::credential;
use super::{ApiError, AppState};
use crate::auth::Scope;
use crate::broker::BackendHealth;
use crate::envelope::Topic;
use crate::hub::HubError;

/// The page: HTML with inline CSS and JS, no external assets.
const STATUS_HTML: &str = include_str!("status.html");

/// How often `/v1/ops/stats` sends a snapshot.
pub const STATS_INTERVAL: Duration = Duration::from_secs(1);

/// The page's Content-Security-Policy: nothing but its own inline `<style>` and `<script>`
/// (by hash, so no other inline code runs) and requests to this origin.
fn content_security_policy() -> &'static str {
    static CSP: LazyLock<String> = LazyLock::new(|| {
        let hash = |open: &str, close: &str| {
            let body = STATUS_HTML
                .split_once(open)
                .and_then(|(_, rest)| rest.split_once(close))
                .map_or("", |(body, _)| body);
            format!(
                "'sha256-{}'",
                BASE64.encode(Sha256::digest(body.as_bytes()))
            )
        };
        format!(
            "default-src 'none'; style-src {}; script-src {}; connect-src 'self'; \
             img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
            hash("<style>", "</style>"),
            hash("<script>", "</script>")
        )
    });
    &CSP
}

/// `GET /`.
pub async fn status_page() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/html; charset=utf-8"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::CONTENT_SECURITY_POLICY, content_security_policy()))
        .body(STATUS_HTML)
}

/// One snapshot of this hub, as sent in a `stats` event: the metrics' counters plus the
/// backend's state.
pub fn snapshot(state: &AppState) -> Value {
    let (status, reason) = if state.hub.is_shutting_down() {
        ("unavailable", Some("shutting down".to_owned()))
    } else {
        match state.hub.health() {
            BackendHealth::Ready => ("ready", None),
            BackendHealth::Unavailable(reason) => ("unavailable", Some(reason)),
        }
    };
    let mut value = serde_json::to_value(state.metrics.snapshot()).unwrap_or_else(|_| json!({}));
    if let Value::Object(fields) = &mut value {
        fields.insert("backend".into(), json!(state.hub.backend().as_str()));
        fields.insert("backend_state".into(), json!(status));
        fields.insert("backend_reason".into(), json!(reason));
        fields.insert("lifecycle".into(), json!(state.hub.lifecycle().as_str()));
        fields.insert("ts_ms".into(), json!(crate::envelope::now_ms()));
    }
    value
}

/// `GET /v1/ops/stats`: `retry:`, then a `stats` event every second until shutdown.
pub async fn ops_stats(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    state
        .auth
        .authenticate_route(credential(&req)?.as_ref())
        .await?
        .authorize(&Topic::Ops, Scope::Ops)?;
    if !state.hub.accepts_streams() {
        return Err(HubError::ShuttingDown.into());
    }
    let retry = Duration::from_millis(state.hub.config().retry_ms);
    let mut interval = tokio::time::interval(STATS_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let events = stream::unfold(
        (state.into_inner(), interval),
        |(state, mut interval)| async move {
            interval.tick().await;
            // Through the drain delay the page shows the instance draining.
            if !state.hub.accepts_streams() {
                return None;
            }
            let event = sse::Data::new(snapshot(&state).to_string()).event("stats");
            Some((
                Ok::<_, Infallible>(sse::Event::Data(event)),
                (state, interval),
            ))
        },
    );
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/event-stream"))
        .insert_header((header::CACHE_CONTROL, "no-cache, no-transform"))
        .insert_header(("X-Accel-Buffering", "no"))
        .body(Sse::from_stream(events).with_retry_duration(retry)))
}
