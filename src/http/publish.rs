//! `POST` publishing: one event or a batch, validated whole before anything is stored.

use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, web};
use bytes::BytesMut;
use futures_util::StreamExt;
use serde::Deserialize;
use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::credentials::credential;
use super::{ApiError, AppState};
use crate::auth::Scope;
use crate::envelope::{ENVELOPE_VERSION, OrgId, PublishRequest, Topic, check_payload_size};
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

/// Largest accepted body: a full batch of maximum-size events. The body is held once and
/// parsed without building JSON trees, so a request costs about twice this at most.
fn body_limit(max_payload_bytes: usize) -> usize {
    max_payload_bytes.saturating_mul(MAX_BATCH)
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

/// What the body is at its top level, found by a pass that checks the JSON syntax and counts
/// a batch without building anything.
enum Shape {
    Object,
    Array(usize),
    Other,
}

impl<'de> Deserialize<'de> for Shape {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ShapeVisitor;
        impl<'de> Visitor<'de> for ShapeVisitor {
            type Value = Shape;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Shape, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Shape::Object)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Shape, A::Error> {
                let mut count = 0;
                while seq.next_element::<IgnoredAny>()?.is_some() {
                    count += 1;
                }
                Ok(Shape::Array(count))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Shape, E> {
                Ok(Shape::Other)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Shape, E> {
                Ok(Shape::Other)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Shape, E> {
                Ok(Shape::Other)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Shape, E> {
                Ok(Shape::Other)
            }
            fn visit_str<E>(self, _: &str) -> Result<Shape, E> {
                Ok(Shape::Other)
            }
            fn visit_unit<E>(self) -> Result<Shape, E> {
                Ok(Shape::Other)
            }
        }
        deserializer.deserialize_any(ShapeVisitor)
    }
}

/// One event as HTTP producers send it: `{event, payload?, id?}`, or DashClaw's whole
/// envelope `{id, org_id, event, timestamp, version, payload}` (what its Node publisher
/// writes to Redis), so a producer can switch transport without changing its events.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireRequest<'a> {
    event: String,
    #[serde(default, borrow)]
    payload: Option<&'a RawValue>,
    #[serde(default)]
    id: Option<String>,
    /// Must be the topic's org when given.
    #[serde(default)]
    org_id: Option<String>,
    /// Must be `v1` when given.
    #[serde(default)]
    version: Option<String>,
    /// Accepted and replaced: the hub stamps its own time at publish.
    #[serde(default, rename = "timestamp")]
    _timestamp: Option<IgnoredAny>,
}

impl WireRequest<'_> {
    fn into_request(
        self,
        topic: &Topic,
        max_bytes: usize,
        index: Option<usize>,
    ) -> Result<PublishRequest, ApiError> {
        // Before the payload is copied: a 15 MiB payload costs nothing but its refusal.
        check_payload_size(self.payload, max_bytes)
            .map_err(|error| HubError::Invalid { index, error })?;
        if self
            .org_id
            .as_deref()
            .is_some_and(|org| org != topic.envelope_org())
        {
            return Err(ApiError::OrgMismatch);
        }
        if self
            .version
            .as_deref()
            .is_some_and(|v| v != ENVELOPE_VERSION)
        {
            return Err(ApiError::InvalidVersion);
        }
        Ok(PublishRequest {
            event: self.event,
            payload: self.payload.map(|raw| raw.to_owned()),
            id: self.id,
        })
    }
}

/// Parses a body for `topic` into requests; `Ok((requests, is_batch))`. Payloads are copied
/// as raw JSON text, never built into trees, so a body costs about twice its size at most.
pub fn parse_publish_body(
    body: &[u8],
    topic: &Topic,
    max_bytes: usize,
) -> Result<(Vec<PublishRequest>, bool), ApiError> {
    let shape: Shape =
        serde_json::from_slice(body).map_err(|e| ApiError::MalformedJson(e.to_string()))?;
    let item = |raw: &RawValue, index: Option<usize>| {
        let at = || index.map(|i| format!("item {i}: ")).unwrap_or_default();
        serde_json::from_str::<WireRequest<'_>>(raw.get())
            .map_err(|e| ApiError::InvalidBody(format!("{}{e}", at())))?
            .into_request(topic, max_bytes, index)
    };
    match shape {
        Shape::Object => {
            let raw: &RawValue =
                serde_json::from_slice(body).map_err(|e| ApiError::MalformedJson(e.to_string()))?;
            Ok((vec![item(raw, None)?], false))
        }
        Shape::Array(count) if count > MAX_BATCH => Err(HubError::BatchTooLarge(count).into()),
        Shape::Array(_) => {
            let items: Vec<&RawValue> =
                serde_json::from_slice(body).map_err(|e| ApiError::MalformedJson(e.to_string()))?;
            let requests = items
                .into_iter()
                .enumerate()
                .map(|(i, raw)| item(raw, Some(i)))
                .collect::<Result<Vec<_>, _>>()?;
            Ok((requests, true))
        }
        Shape::Other => Err(ApiError::InvalidBody(
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
        .authenticate_route(credential(&req)?.as_ref())
        .await?
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
    let max_bytes = state.hub.config().max_payload_bytes;
    let (requests, is_batch) = parse_publish_body(&body, &topic, max_bytes)?;
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
        json.extend_from_slice(outcome.event().json());
    }
    if is_batch {
        json.push(b']');
    }
    Ok(HttpResponse::build(status)
        .insert_header((header::CONTENT_TYPE, "application/json"))
        .body(json))
}
