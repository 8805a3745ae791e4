//! The live status page (`GET /`) and the ops-scoped stats stream it reads
//! (`GET /v1/ops/stats`).

use std::time::Duration;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use bytes::Bytes;
use futures_util::{StreamExt, stream};
use serde_json::{Value, json};

use super::AppState;
use crate::auth::Scope;
use crate::broker::BackendHealth;
use crate::envelope::Topic;
use crate::error::ApiError;

/// The page: HTML with inline CSS and JS, no external assets.
const STATUS_HTML: &str = include_str!("status.html");

/// How often `/v1/ops/stats` sends a snapshot.
pub const STATS_INTERVAL: Duration = Duration::from_secs(1);

/// `GET /`.
pub async fn status_page() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/html; charset=utf-8"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(STATUS_HTML)
}

/// One snapshot of this hub's counters, as sent in a `stats` event.
pub fn snapshot(state: &AppState) -> Value {
    let m = &state.metrics;
    let (status, reason) = if state.hub.is_shutting_down() {
        ("unavailable", Some("shutting down".to_owned()))
    } else {
        match state.hub.health() {
            BackendHealth::Ready => ("ready", None),
            BackendHealth::Unavailable(reason) => ("unavailable", Some(reason)),
        }
    };
    let published = &m.events_published;
    json!({
        "instance_id": m.instance_id,
        "uptime_seconds": m.started.elapsed().as_secs(),
        "backend": state.hub.backend().as_str(),
        "backend_state": status,
        "backend_reason": reason,
        "connections": m.connections.get(),
        "orgs_active": m.orgs_active.get(),
        "published_total": published.in_process.get() + published.http.get()
            + published.redis_external.get(),
        "delivered_total": m.events_delivered.get(),
        "replay_hits": m.replay_requests.hit.get(),
        "replay_expired": m.replay_requests.expired.get(),
        "slow_disconnects": m.slow_disconnects.get(),
        "ts_ms": crate::envelope::now_ms(),
    })
}

fn stats_frame(state: &AppState) -> Bytes {
    Bytes::from(format!("event: stats\ndata: {}\n\n", snapshot(state)))
}

/// `GET /v1/ops/stats`: `retry:`, then a `stats` event every second until shutdown.
pub async fn ops_stats(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    state
        .auth
        .authenticate(&req)?
        .authorize(&Topic::Ops, Scope::Ops)?;
    if state.hub.is_shutting_down() {
        return Err(ApiError::Hub(crate::hub::HubError::ShuttingDown));
    }
    let retry = crate::envelope::frame::retry(state.hub.config().retry_ms);
    let mut interval = tokio::time::interval(STATS_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let body = stream::once(async move { Ok::<_, actix_web::Error>(retry) }).chain(stream::unfold(
        (state.into_inner(), interval),
        |(state, mut interval)| async move {
            interval.tick().await;
            if state.hub.is_shutting_down() {
                return None;
            }
            let frame = stats_frame(&state);
            Some((Ok(frame), (state, interval)))
        },
    ));
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/event-stream"))
        .insert_header((header::CACHE_CONTROL, "no-cache, no-transform"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(body))
}
