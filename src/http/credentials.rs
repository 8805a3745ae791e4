//! The credential a request presents, for [`crate::auth`] to verify.

use actix_web::HttpRequest;
use actix_web::http::header;

use super::query_param;
use crate::auth::{AuthError, Credential};

/// `Authorization: Bearer <t>`, else the `access_token` query parameter (EventSource cannot
/// set headers), else `x-api-key`; `None` when the request presents none.
pub fn credential(req: &HttpRequest) -> Result<Option<Credential>, AuthError> {
    if let Some(token) = bearer_token(req) {
        return Ok(Some(Credential::Bearer(token)));
    }
    if let Some(key) = req.headers().get("x-api-key") {
        let key = key.to_str().map_err(|_| AuthError::InvalidApiKey)?;
        return Ok(Some(Credential::ApiKey(key.to_owned())));
    }
    Ok(None)
}

fn bearer_token(req: &HttpRequest) -> Option<String> {
    if let Some(value) = req.headers().get(header::AUTHORIZATION)
        && let Ok(text) = value.to_str()
    {
        let mut parts = text.splitn(2, ' ');
        if parts
            .next()
            .is_some_and(|s| s.eq_ignore_ascii_case("bearer"))
        {
            return parts.next().map(|t| t.trim().to_owned());
        }
    }
    query_param(req, "access_token")
}
