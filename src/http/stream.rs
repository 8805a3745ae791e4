//! `GET` SSE streams: per org, ops, and DashClaw's drop-in `/api/stream`.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use tracing::debug;

use super::{AppState, query_param};
use crate::auth::Scope;
use crate::envelope::{OrgId, ResumePosition, Topic};
use crate::error::ApiError;
use crate::filter::EventFilter;
use crate::hub::{SessionSpec, StreamFormat};

/// Org used by `/api/stream` when auth is off and none is named.
pub const DEFAULT_ORG: &str = "org_default";

/// `GET /v1/orgs/{org_id}/stream`.
pub async fn org_stream(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let org = OrgId::parse(&path).map_err(ApiError::InvalidOrgId)?;
    let topic = Topic::Org(org);
    state
        .auth
        .authenticate(&req)?
        .authorize(&topic, Scope::Subscribe)?;
    open(&req, &state, topic, StreamFormat::V1)
}

/// `GET /v1/ops/stream`.
pub async fn ops_stream(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let topic = Topic::Ops;
    state
        .auth
        .authenticate(&req)?
        .authorize(&topic, Scope::Subscribe)?;
    open(&req, &state, topic, StreamFormat::V1)
}

/// `GET /api/stream`: the org comes from the credential (or `x-org-id` / `org_id`).
pub async fn legacy_stream(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let grant = state.auth.authenticate(&req)?;
    let requested = req
        .headers()
        .get("x-org-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| query_param(&req, "org_id"))
        .map(|raw| OrgId::parse(&raw).map_err(ApiError::InvalidOrgId))
        .transpose()?;
    let default = OrgId::parse(DEFAULT_ORG).map_err(ApiError::InvalidOrgId)?;
    let org = grant.pick_org(requested, &default)?;
    let topic = Topic::Org(org);
    grant.authorize(&topic, Scope::Subscribe)?;
    open(&req, &state, topic, StreamFormat::Legacy)
}

/// The resume position: `Last-Event-ID`, else `last_event_id`, else `lastEventId`.
fn resume_position(req: &HttpRequest) -> Option<ResumePosition> {
    req.headers()
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| query_param(req, "last_event_id"))
        .or_else(|| query_param(req, "lastEventId"))
        .filter(|raw| !raw.trim().is_empty())
        .map(|raw| ResumePosition::parse(&raw))
}

fn open(
    req: &HttpRequest,
    state: &AppState,
    topic: Topic,
    format: StreamFormat,
) -> Result<HttpResponse, ApiError> {
    let filter = match query_param(req, "events") {
        Some(raw) => {
            EventFilter::parse(&raw).map_err(|e| ApiError::InvalidFilter(e.to_string()))?
        }
        None => EventFilter::all(),
    };
    let resume = resume_position(req);
    debug!(%topic, resume = ?resume, "stream opened");
    let body = state.hub.open_session(SessionSpec {
        topic,
        resume,
        filter,
        format,
    })?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/event-stream"))
        .insert_header((header::CACHE_CONTROL, "no-cache, no-transform"))
        .insert_header(("X-Accel-Buffering", "no"))
        .body(body))
}
