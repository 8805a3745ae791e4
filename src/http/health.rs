//! `/healthz` (the process serves), `/readyz` (the backend can deliver) and `/metrics`.

use actix_web::{HttpResponse, web};
use serde_json::json;

use super::AppState;
use crate::broker::BackendHealth;

/// 200 while the process serves HTTP.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// 200 when the backend is usable; 503 with a reason when it is not or during shutdown.
/// While DashClaw's key database is unreachable the answer stays 200 but says
/// `degraded` and why: events flow, and sessions, tokens and cached keys still open
/// streams (every instance shares the database, so failing readiness everywhere would
/// only end those too).
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let backend = state.hub.backend().as_str();
    if state.hub.is_shutting_down() {
        return HttpResponse::ServiceUnavailable()
            .insert_header(("Retry-After", "1"))
            .json(json!({"status": "unavailable", "backend": backend, "reason": "shutting down"}));
    }
    match state.hub.health() {
        BackendHealth::Ready => match state.auth.database_unavailable() {
            None => HttpResponse::Ok().json(json!({"status": "ready", "backend": backend})),
            Some(error) => HttpResponse::Ok().json(json!({
                "status": "degraded",
                "backend": backend,
                "reason": format!("DashClaw's key database is unreachable ({error}): keys not in the cache get 503 auth_unavailable"),
            })),
        },
        BackendHealth::Unavailable(reason) => HttpResponse::ServiceUnavailable()
            .insert_header(("Retry-After", "1"))
            .json(json!({"status": "unavailable", "backend": backend, "reason": reason})),
    }
}

/// Prometheus text exposition of this hub's metrics.
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header(("Content-Type", crate::metrics::CONTENT_TYPE))
        .insert_header(("Cache-Control", "no-store"))
        .body(state.metrics.render())
}
