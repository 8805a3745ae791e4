//! `GET` SSE streams: per org, ops, and DashClaw's drop-in `/api/stream`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use tracing::debug;

use super::credentials::credentials;
use super::{ApiError, AppState, query_param};
use crate::auth::{Credential, Scope, Verified};
use crate::envelope::{OrgId, ResumePosition, Topic, now_ms};
use crate::filter::EventFilter;
use crate::hub::{Lifetime, Recheck, RecheckFuture, Refusal, SessionSpec, resume_for_log};
use crate::sse::StreamFormat;

/// Org used by `/api/stream` when auth is off and none is named (DashClaw's default org).
pub const DEFAULT_ORG: &str = crate::auth::DEFAULT_ORG;

/// `GET /v1/orgs/{org_id}/stream`.
pub async fn org_stream(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let result = match OrgId::parse(&path) {
        Ok(org) => topic_stream(&req, &state, Topic::Org(org)).await,
        Err(error) => Err(ApiError::InvalidOrgId(error)),
    };
    refusals_counted(&state, result)
}

/// `GET /v1/ops/stream`.
pub async fn ops_stream(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    refusals_counted(&state, topic_stream(&req, &state, Topic::Ops).await)
}

/// `GET /api/stream`: the org comes from the credential (or `x-org-id` / `org_id`).
pub async fn legacy_stream(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    refusals_counted(&state, legacy_stream_inner(&req, &state).await)
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

/// The verified credential of a stream request. The ops channel is not for DashClaw's
/// session cookies: they are refused as on the ops routes that publish.
async fn verified(
    req: &HttpRequest,
    state: &AppState,
    topic: Option<&Topic>,
) -> Result<Verified, ApiError> {
    let credentials = credentials(req)?;
    if matches!(topic, Some(Topic::Ops)) && credentials.first().is_some_and(Credential::is_session)
    {
        state.auth.authenticate(credentials.first())?;
    }
    Ok(state.auth.authenticate_stream(&credentials).await?)
}

/// An org's or the ops channel's stream, in the v1 format.
async fn topic_stream(
    req: &HttpRequest,
    state: &AppState,
    topic: Topic,
) -> Result<HttpResponse, ApiError> {
    let verified = verified(req, state, Some(&topic)).await?;
    verified.grant.authorize(&topic, Scope::Subscribe)?;
    open(req, state, topic, StreamFormat::V1, lifetime(&verified))
}

async fn legacy_stream_inner(
    req: &HttpRequest,
    state: &AppState,
) -> Result<HttpResponse, ApiError> {
    let verified = verified(req, state, None).await?;
    let requested = req
        .headers()
        .get("x-org-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| query_param(req, "org_id"))
        .map(|raw| OrgId::parse(&raw).map_err(ApiError::InvalidOrgId))
        .transpose()?;
    let default = OrgId::parse(DEFAULT_ORG).map_err(ApiError::InvalidOrgId)?;
    let org = verified.grant.pick_org(requested, &default)?;
    let topic = Topic::Org(org);
    verified.grant.authorize(&topic, Scope::Subscribe)?;
    open(req, state, topic, StreamFormat::Legacy, lifetime(&verified))
}

/// Deadlines further away than this are not armed (the timer's range is about two years,
/// and no stream lives that long anyway).
const LONGEST_DEADLINE: Duration = Duration::from_secs(365 * 24 * 3600);

/// The stream's lifetime from its credential: its expiry, and for a database key the
/// re-check that notices a revocation.
fn lifetime(verified: &Verified) -> Lifetime {
    let deadline = verified.expires_at.and_then(|exp| {
        let wait = Duration::from_millis(exp.saturating_mul(1000).saturating_sub(now_ms()));
        (wait <= LONGEST_DEADLINE).then(|| Instant::now() + wait)
    });
    let recheck = verified.recheck.clone().map(|key| {
        let every = key.every();
        let check: Arc<dyn Fn() -> RecheckFuture + Send + Sync> = Arc::new(move || {
            let key = key.clone();
            Box::pin(async move { key.still_valid().await })
        });
        Recheck { every, check }
    });
    Lifetime {
        deadline,
        recheck,
        max_age: None,
    }
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
    lifetime: Lifetime,
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
        lifetime,
    })?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/event-stream"))
        .insert_header((header::CACHE_CONTROL, "no-cache, no-transform"))
        .insert_header(("X-Accel-Buffering", "no"))
        // Which instance serves the stream: lets operators (and the load tool) see how
        // streams spread over instances sharing one address.
        .insert_header(("X-Realtime-Instance", state.metrics.instance_id.as_str()))
        .body(body))
}
