//! HTTP errors: every failure the API reports, mapped to a status and a JSON body in one
//! place. The library's own errors (`AuthError`, `HubError`, `ValidationError`) know nothing
//! of HTTP.

use actix_web::http::StatusCode;
use actix_web::http::header::{CONTENT_TYPE, RETRY_AFTER};
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;

use crate::auth::AuthError;
use crate::envelope::ValidationError;
use crate::hub::HubError;

/// Everything an HTTP request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not JSON.
    #[error("the body is not valid JSON: {0}")]
    MalformedJson(String),
    /// The JSON does not have the expected shape.
    #[error("{0}")]
    InvalidBody(String),
    /// The org id in the path or credential is invalid.
    #[error("{0}")]
    InvalidOrgId(ValidationError),
    /// A published envelope names another org than its route.
    #[error("org_id does not match the org of the route")]
    OrgMismatch,
    /// A published envelope's `version` is not `v1`.
    #[error("version must be \"v1\"")]
    InvalidVersion,
    /// The `events` filter is invalid.
    #[error("{0}")]
    InvalidFilter(String),
    /// Authentication or authorization failed.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// No such route.
    #[error("no such route")]
    NotFound,
    /// The route exists but not for this method.
    #[error("this route does not accept that method")]
    MethodNotAllowed,
    /// The body is larger than allowed.
    #[error("the body is larger than {0} bytes")]
    BodyTooLarge(usize),
    /// The body is not `application/json`.
    #[error("the body must be application/json")]
    UnsupportedMediaType,
    /// The hub refused the request.
    #[error(transparent)]
    Hub(#[from] HubError),
    /// Auth is off and the request names a host other than this machine's loopback.
    #[error(
        "with auth off this hub answers only requests for localhost, 127.0.0.1 or [::1] (Host header)"
    )]
    HostNotAllowed,
}

impl ApiError {
    /// Stable snake_case code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::MalformedJson(_) => "malformed_json",
            Self::InvalidBody(_) => "invalid_body",
            Self::InvalidOrgId(_) => "invalid_org_id",
            Self::InvalidFilter(_) => "invalid_filter",
            Self::OrgMismatch => "org_mismatch",
            Self::InvalidVersion => "invalid_version",
            Self::Auth(e) => e.code(),
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::BodyTooLarge(_) => "payload_too_large",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::HostNotAllowed => "host_not_allowed",
            Self::Hub(e) => match e {
                HubError::Invalid { error, .. } => error.code(),
                HubError::EmptyBatch => "empty_batch",
                HubError::BatchTooLarge(_) => "batch_too_large",
                HubError::Backend(_) => "backend_unavailable",
                HubError::ShuttingDown => "shutting_down",
                HubError::TooManyConnections(_) => "too_many_connections",
                HubError::TooManyConnectionsForOrg(_) => "too_many_connections_for_org",
                HubError::Paced { .. } => "too_many_new_streams",
            },
        }
    }

    fn retry_after(&self) -> Option<u32> {
        match self {
            // Past the key database's connect timeout, so a retry can find it back.
            Self::Auth(AuthError::Unavailable) => Some(5),
            // Jittered by the pacer, so refused clients do not come back together.
            Self::Hub(HubError::Paced {
                retry_after_secs, ..
            }) => Some(*retry_after_secs),
            Self::Hub(
                HubError::Backend(_)
                | HubError::ShuttingDown
                | HubError::TooManyConnections(_)
                | HubError::TooManyConnectionsForOrg(_),
            ) => Some(1),
            _ => None,
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::MalformedJson(_)
            | Self::InvalidBody(_)
            | Self::InvalidOrgId(_)
            | Self::InvalidFilter(_) => StatusCode::BAD_REQUEST,
            Self::Auth(e) if e.is_unauthenticated() => StatusCode::UNAUTHORIZED,
            Self::Auth(AuthError::AmbiguousOrg) => StatusCode::BAD_REQUEST,
            Self::Auth(AuthError::Unavailable) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Auth(_) => StatusCode::FORBIDDEN,
            Self::OrgMismatch | Self::InvalidVersion => StatusCode::UNPROCESSABLE_ENTITY,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::HostNotAllowed => StatusCode::MISDIRECTED_REQUEST,
            Self::Hub(e) => match e {
                HubError::Invalid {
                    error: ValidationError::TooLarge { .. },
                    ..
                }
                | HubError::BatchTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
                HubError::Invalid { .. } | HubError::EmptyBatch => StatusCode::UNPROCESSABLE_ENTITY,
                HubError::Backend(_)
                | HubError::ShuttingDown
                | HubError::TooManyConnections(_)
                | HubError::Paced { .. } => StatusCode::SERVICE_UNAVAILABLE,
                HubError::TooManyConnectionsForOrg(_) => StatusCode::TOO_MANY_REQUESTS,
            },
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        response.insert_header((CONTENT_TYPE, "application/json"));
        if let Some(seconds) = self.retry_after() {
            response.insert_header((RETRY_AFTER, seconds.to_string()));
        }
        if matches!(self, Self::Auth(e) if e.is_unauthenticated()) {
            response.insert_header(("WWW-Authenticate", "Bearer"));
        }
        response
            .body(json!({"error": {"code": self.code(), "message": self.to_string()}}).to_string())
    }
}
