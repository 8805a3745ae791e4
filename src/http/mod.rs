//! The HTTP surface: routes, CORS, and shared request helpers.

pub mod health;
pub mod publish;
pub mod stream;

use std::collections::HashMap;
use std::sync::Arc;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{HttpRequest, HttpResponse, web};

use crate::auth::Auth;
use crate::error::ApiError;
use crate::hub::HubHandle;

/// What every handler reaches through `web::Data`.
#[derive(Clone)]
pub struct AppState {
    /// The running hub.
    pub hub: HubHandle,
    /// Credential verifiers.
    pub auth: Arc<Auth>,
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
    .route("/healthz", web::get().to(health::healthz))
    .route("/readyz", web::get().to(health::readyz));
}

async fn method_not_allowed() -> Result<HttpResponse, ApiError> {
    Err(ApiError::MethodNotAllowed)
}

/// Fallback for unknown paths.
pub async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound)
}

const ALLOWED_HEADERS: &str =
    "authorization, content-type, last-event-id, x-api-key, x-org-id, cache-control";

/// Answers preflights and adds `Access-Control-Allow-Origin` for listed origins only;
/// an unlisted origin gets no CORS headers, so browsers refuse it.
pub async fn cors_middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let allowed = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .filter(|origin| {
            req.app_data::<web::Data<AppState>>().is_some_and(|state| {
                state
                    .hub
                    .config()
                    .cors_origins
                    .iter()
                    .any(|allowed| allowed == "*" || allowed == origin)
            })
        })
        .and_then(|o| HeaderValue::from_str(o).ok());
    let is_preflight = req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    if let (true, Some(origin)) = (is_preflight, allowed.clone()) {
        let response = HttpResponse::NoContent()
            .insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, origin))
            .insert_header((header::ACCESS_CONTROL_ALLOW_METHODS, "GET, POST, OPTIONS"))
            .insert_header((header::ACCESS_CONTROL_ALLOW_HEADERS, ALLOWED_HEADERS))
            .insert_header((header::ACCESS_CONTROL_MAX_AGE, "600"))
            .insert_header((header::VARY, "Origin"))
            .finish();
        return Ok(req.into_response(response).map_into_right_body());
    }
    let mut response = next.call(req).await?;
    if let Some(origin) = allowed {
        let headers = response.headers_mut();
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(header::VARY, HeaderValue::from_static("Origin"));
        headers.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("retry-after"),
        );
    }
    Ok(response.map_into_left_body())
}
