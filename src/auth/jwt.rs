//! HS256 JWTs: the claims the hub reads and the `token` command writes.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};

use super::{AuthError, Grant, OrgGrant, Scope, parse_scopes};
use crate::envelope::OrgId;

/// JWT claims the hub reads and `token` writes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// Expiry, seconds since the epoch (required).
    pub exp: u64,
    /// The single org.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org_id: Option<String>,
    /// Several orgs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orgs: Option<Vec<String>>,
    /// Space-separated scopes.
    #[serde(default)]
    pub scope: String,
}

/// Verifies HS256 tokens signed with one secret.
pub struct JwtVerifier {
    key: DecodingKey,
    validation: Validation,
}

impl JwtVerifier {
    /// A verifier for `secret`: HS256 only, `exp` required, `nbf` honoured, no leeway.
    pub fn new(secret: &str) -> Result<Self, String> {
        Self::bound(secret, None, None)
    }

    /// [`Self::new`], also requiring `iss` and/or `aud` when given
    /// (`REALTIME_JWT_ISSUER`, `REALTIME_JWT_AUDIENCE`).
    pub fn bound(
        secret: &str,
        issuer: Option<&str>,
        audience: Option<&str>,
    ) -> Result<Self, String> {
        let key = DecodingKey::from_secret(secret.as_bytes())
            .map_err(|e| format!("REALTIME_JWT_SECRET: {e}"))?;
        let mut validation = Validation::new(Algorithm::HS256);
        let mut required = vec!["exp"];
        if let Some(issuer) = issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        match audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                required.push("aud");
            }
            // A token naming an audience is meant for someone else.
            None => validation.validate_aud = true,
        }
        validation.set_required_spec_claims(&required);
        validation.validate_nbf = true;
        validation.leeway = 0;
        Ok(Self { key, validation })
    }

    /// The grant of a valid token.
    pub fn verify(&self, token: &str) -> Result<Grant, AuthError> {
        self.verify_with_expiry(token).map(|(grant, _)| grant)
    }

    /// The grant of a valid token and its `exp` (seconds since the epoch).
    pub fn verify_with_expiry(&self, token: &str) -> Result<(Grant, u64), AuthError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(
            |e| match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::TokenExpired,
                _ => AuthError::InvalidToken,
            },
        )?;
        let claims = data.claims;
        let exp = claims.exp;
        let mut orgs = Vec::new();
        for raw in claims.org_id.iter().chain(claims.orgs.iter().flatten()) {
            orgs.push(OrgId::parse(raw).map_err(|_| AuthError::InvalidToken)?);
        }
        let grant = Grant {
            orgs: OrgGrant::List(orgs),
            scopes: parse_scopes(&claims.scope, ' '),
        };
        Ok((grant, exp))
    }
}

/// Why `token` could not sign.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// `now + ttl` does not fit a timestamp.
    #[error("the ttl of {0} seconds puts the expiry past the largest timestamp")]
    TtlTooLong(u64),
    /// The JWT library refused.
    #[error(transparent)]
    Jwt(#[from] jsonwebtoken::errors::Error),
}

/// Signs a token for `orgs` with `scopes`, valid for `ttl_seconds` (the `token` command).
pub fn sign_token(
    secret: &str,
    orgs: &[OrgId],
    scopes: &[Scope],
    ttl_seconds: u64,
) -> Result<String, SignError> {
    let exp = (crate::envelope::now_ms() / 1000)
        .checked_add(ttl_seconds)
        // JavaScript clients read `exp` as a double: keep it an exact integer there.
        .filter(|exp| *exp <= MAX_SAFE_INTEGER)
        .ok_or(SignError::TtlTooLong(ttl_seconds))?;
    let (org_id, orgs) = match orgs {
        [one] => (Some(one.to_string()), None),
        many => (None, Some(many.iter().map(ToString::to_string).collect())),
    };
    let claims = Claims {
        exp,
        org_id,
        orgs,
        scope: scopes
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(" "),
    };
    let key = EncodingKey::from_secret(secret.as_bytes())?;
    Ok(jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &key,
    )?)
}

/// 2^53 - 1, the largest integer a JSON number keeps exactly in JavaScript.
const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;
