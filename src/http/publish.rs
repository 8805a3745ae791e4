//! `POST` publishing: one event or a batch, validated whole before anything is stored.

use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, web};
use bytes::BytesMut;
use futures_util::StreamExt;
use serde_json::Value;

use super::credentials::credential;
use super::{ApiError, AppState};
use crate::auth::Scope;
use crate::envelope::{OrgId, PublishRequest, Topic};
use crate::hub::{HubError, MAX_BATCH, PublishSource};

/// `POST /v1/orgs/{org_id}/events`.
pub async fn org_publish(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let org = OrgId::parse(&path).map_err(ApiError::InvalidOrgId)?;
    publish(req, Topic::Org(org), payload, state).await
}

/// `POST /v1/ops/events`.
pub async fn ops_publish(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    publish(req, Topic::Ops, payload, state).await
}

/// Largest accepted body: a full batch of maximum-size events, capped at 64 MiB.
fn body_limit(max_payload_bytes: usize) -> usize {
    max_payload_bytes.saturating_mul(MAX_BATCH).min(64 << 20)
}

async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<BytesMut, ApiError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(ApiError::BodyTooLarge(limit));
    }
    let mut body = BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk =
            chunk.map_err(|e| ApiError::InvalidBody(format!("could not read the body: {e}")))?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::BodyTooLarge(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn is_json(req: &HttpRequest) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"))
}

/// Parses a body into requests; `Ok((requests, is_batch))`.
pub fn parse_publish_body(body: &[u8]) -> Result<(Vec<PublishRequest>, bool), ApiError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| ApiError::MalformedJson(e.to_string()))?;
    let to_request = |value: Value, index: Option<usize>| {
        serde_json::from_value::<PublishRequest>(value).map_err(|e| {
            let at = index.map(|i| format!("item {i}: ")).unwrap_or_default();
            ApiError::InvalidBody(format!("{at}{e}"))
        })
    };
    match value {
        Value::Object(_) => Ok((vec![to_request(value, None)?], false)),
        Value::Array(items) => {
            if items.len() > MAX_BATCH {
                return Err(HubError::BatchTooLarge(items.len()).into());
            }
            let requests = items
                .into_iter()
                .enumerate()
                .map(|(i, item)| to_request(item, Some(i)))
                .collect::<Result<Vec<_>, _>>()?;
            Ok((requests, true))
        }
        _ => Err(ApiError::InvalidBody(
            "the body must be an event object or an array of them".into(),
        )),
    }
}

async fn publish(
    req: HttpRequest,
    topic: Topic,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    state
        .auth
        .authenticate(credential(&req)?.as_ref())?
        .authorize(&topic, Scope::Publish)?;
    if !is_json(&req) {
        return Err(ApiError::UnsupportedMediaType);
    }
    let body = read_body(
        &req,
        payload,
        body_limit(state.hub.config().max_payload_bytes),
    )
    .await?;
    let (requests, is_batch) = parse_publish_body(&body)?;
    let outcomes = state
        .hub
        .publish_from(topic, requests, PublishSource::Http)
        .await?;
    let all_duplicates = outcomes.iter().all(|o| o.is_duplicate());
    let status = if all_duplicates {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    let mut json = Vec::new();
    if is_batch {
        json.push(b'[');
    }
    for (i, outcome) in outcomes.iter().enumerate() {
        if i > 0 {
            json.push(b',');
        }
        json.extend_from_slice(&outcome.event().json);
    }
    if is_batch {
        json.push(b']');
    }
    Ok(HttpResponse::build(status)
        .insert_header((header::CONTENT_TYPE, "application/json"))
        .body(json))
}
