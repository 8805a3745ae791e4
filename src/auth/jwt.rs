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
    /// A verifier for `secret`: HS256 only, `exp` required, no leeway.
    pub fn new(secret: &str) -> Result<Self, String> {
        let key = DecodingKey::from_secret(secret.as_bytes())
            .map_err(|e| format!("REALTIME_JWT_SECRET: {e}"))?;
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp"]);
        validation.leeway = 0;
        Ok(Self { key, validation })
    }

    /// The grant of a valid token.
    pub fn verify(&self, token: &str) -> Result<Grant, AuthError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(
            |e| match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::TokenExpired,
                _ => AuthError::InvalidToken,
            },
        )?;
        let claims = data.claims;
        let mut orgs = Vec::new();
        for raw in claims.org_id.iter().chain(claims.orgs.iter().flatten()) {
            orgs.push(OrgId::parse(raw).map_err(|_| AuthError::InvalidToken)?);
        }
        Ok(Grant {
            orgs: OrgGrant::List(orgs),
            scopes: parse_scopes(&claims.scope, ' '),
        })
    }
}

/// Signs a token for `orgs` with `scopes`, valid for `ttl_seconds` (the `token` command).
pub fn sign_token(
    secret: &str,
    orgs: &[OrgId],
    scopes: &[Scope],
    ttl_seconds: u64,
) -> Result<String, jsonwebtoken::errors::Error> {
    let exp = crate::envelope::now_ms() / 1000 + ttl_seconds;
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
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key)
}
