//! The HTTP surface: routes, CORS, and shared request helpers.
//!
//! - [`stream`], [`publish`], [`health`], [`status`]: the handlers;
//! - [`credentials`]: the credential a request presents (verified by [`crate::auth`]);
//! - [`error`]: every API error mapped to a status and a JSON body;
//! - [`access_log`]: request ids and redacted access lines;
//! - [`security`]: security headers and the `Host` check when auth is off.

pub mod access_log;
pub mod credentials;
pub mod error;
pub mod health;
pub mod publish;
pub mod security;
pub mod status;
pub mod stream;

use std::collections::HashMap;
use std::sync::Arc;

use actix_cors::Cors;
use actix_web::http::{Method, header};
use actix_web::{HttpRequest, HttpResponse, web};

use crate::auth::Auth;
use crate::hub::HubHandle;
use crate::metrics::Metrics;

pub use error::ApiError;

/// What every handler reaches through `web::Data`.
#[derive(Clone)]
pub struct AppState {
    /// The running hub.
    pub hub: HubHandle,
    /// Credential verifiers.
    pub auth: Arc<Auth>,
    /// The hub's metrics, served by `/metrics`.
    pub metrics: Metrics,
}

/// The first value of a query parameter, decoded.
pub fn query_param(req: &HttpRequest, name: &str) -> Option<String> {
    let query = req.query_string();
    if query.is_empty() {
        return None;
    }
    web::Query::<HashMap<String, String>>::from_query(query)
        .ok()
        .and_then(|q| q.0.get(name).cloned())
}

/// Registers every route on an app.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/v1/orgs/{org_id}/stream")
            .route(web::get().to(stream::org_stream))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/v1/orgs/{org_id}/events")
            .route(web::post().to(publish::org_publish))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/v1/ops/stream")
            .route(web::get().to(stream::ops_stream))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/v1/ops/events")
            .route(web::post().to(publish::ops_publish))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/api/stream")
            .route(web::get().to(stream::legacy_stream))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/v1/ops/stats")
            .route(web::get().to(status::ops_stats))
            .default_service(web::to(method_not_allowed)),
    )
    .route("/", web::get().to(status::status_page))
    .route("/healthz", web::get().to(health::healthz))
    .route("/readyz", web::get().to(health::readyz))
    .route("/metrics", web::get().to(health::metrics));
}

async fn method_not_allowed() -> Result<HttpResponse, ApiError> {
    Err(ApiError::MethodNotAllowed)
}

/// Fallback for unknown paths.
pub async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound)
}

/// Headers a browser on an allowed origin may send.
const ALLOWED_HEADERS: [&str; 6] = [
    "authorization",
    "content-type",
    "last-event-id",
    "x-api-key",
    "x-org-id",
    "cache-control",
];

/// CORS for `origins` (`*` allows any): listed origins get `Access-Control-Allow-Origin`
/// (their own origin echoed) and preflight answers; any other origin gets no CORS headers,
/// so browsers refuse it, while non-browser clients are served as usual.
pub fn cors(origins: &[String]) -> Cors {
    let origins = origins.to_vec();
    Cors::default()
        .allowed_origin_fn(move |origin, _| {
            origin
                .to_str()
                .is_ok_and(|o| origins.iter().any(|allowed| allowed == "*" || allowed == o))
        })
        .allowed_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allowed_headers(ALLOWED_HEADERS)
        .expose_headers([
            header::RETRY_AFTER,
            header::HeaderName::from_static("x-request-id"),
        ])
        .max_age(600)
        .block_on_origin_mismatch(false)
}
