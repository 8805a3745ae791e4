//! `GET` SSE streams: per org, ops, and DashClaw's drop-in `/api/stream`.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use tracing::debug;

use super::credentials::credential;
use super::{ApiError, AppState, query_param};
use crate::auth::{Grant, Scope};
use crate::envelope::{OrgId, ResumePosition, Topic};
use crate::filter::EventFilter;
use crate::hub::{Refusal, SessionSpec, resume_for_log};
use crate::sse::StreamFormat;

/// Org used by `/api/stream` when auth is off and none is named.
pub const DEFAULT_ORG: &str = "org_default";

/// `GET /v1/orgs/{org_id}/stream`.
pub async fn org_stream(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let topic = OrgId::parse(&path)
        .map(Topic::Org)
        .map_err(ApiError::InvalidOrgId);
    refusals_counted(
        &state,
        topic.and_then(|topic| topic_stream(&req, &state, topic)),
    )
}

/// `GET /v1/ops/stream`.
pub async fn ops_stream(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    refusals_counted(&state, topic_stream(&req, &state, Topic::Ops))
}

/// `GET /api/stream`: the org comes from the credential (or `x-org-id` / `org_id`).
pub async fn legacy_stream(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    refusals_counted(&state, legacy_stream_inner(&req, &state))
}

/// Counts a stream refused by auth, the connection limits or shutdown as a closed
/// connection (`connections_closed_total{reason}`); the hub counts its own refusals.
fn refusals_counted(
    state: &AppState,
    result: Result<HttpResponse, ApiError>,
) -> Result<HttpResponse, ApiError> {
    if let Err(ApiError::Auth(_)) = &result {
        state.hub.refuse_stream(Refusal::Auth);
    }
    result
}

fn grant(req: &HttpRequest, state: &AppState) -> Result<Grant, ApiError> {
    let credential = credential(req)?;
    Ok(state.auth.authenticate(credential.as_ref())?)
}

/// An org's or the ops channel's stream, in the v1 format.
fn topic_stream(
    req: &HttpRequest,
    state: &AppState,
    topic: Topic,
) -> Result<HttpResponse, ApiError> {
    grant(req, state)?.authorize(&topic, Scope::Subscribe)?;
    open(req, state, topic, StreamFormat::V1)
}

fn legacy_stream_inner(req: &HttpRequest, state: &AppState) -> Result<HttpResponse, ApiError> {
    let grant = grant(req, state)?;
    let requested = req
        .headers()
        .get("x-org-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| query_param(req, "org_id"))
        .map(|raw| OrgId::parse(&raw).map_err(ApiError::InvalidOrgId))
        .transpose()?;
    let default = OrgId::parse(DEFAULT_ORG).map_err(ApiError::InvalidOrgId)?;
    let org = grant.pick_org(requested, &default)?;
    let topic = Topic::Org(org);
    grant.authorize(&topic, Scope::Subscribe)?;
    open(req, state, topic, StreamFormat::Legacy)
}

/// The resume position: `Last-Event-ID`, else `last_event_id`, else `lastEventId`.
fn resume_position(req: &HttpRequest) -> Option<ResumePosition> {
    // A blank source does not hide the next one (EventSource sends no header at all, but
    // proxies and hand-written clients sometimes send an empty one).
    let given = |raw: Option<String>| raw.filter(|r| !r.trim().is_empty());
    given(
        req.headers()
            .get("last-event-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    )
    .or_else(|| given(query_param(req, "last_event_id")))
    .or_else(|| given(query_param(req, "lastEventId")))
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
    debug!(
        %topic,
        resume = resume.as_ref().map(resume_for_log).as_deref().unwrap_or("none"),
        "stream opened"
    );
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
