//! DashClaw's local-admin session cookie (`dashclaw-local-session`): a JWT signed with
//! HMAC over the UTF-8 bytes of `NEXTAUTH_SECRET`, verified by `jsonwebtoken`.

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use super::{AuthError, SessionClaims, claim_seconds};

/// The cookie's name (the same over HTTP and HTTPS).
pub const COOKIE_NAME: &str = "dashclaw-local-session";

/// Verifies local-admin session tokens.
pub struct LocalSessionVerifier {
    key: DecodingKey,
    validation: Validation,
}

impl LocalSessionVerifier {
    /// A verifier for `NEXTAUTH_SECRET`.
    pub fn new(secret: &str) -> Result<Self, String> {
        let key = DecodingKey::from_secret(secret.as_bytes())
            .map_err(|e| format!("NEXTAUTH_SECRET: {e}"))?;
        // DashClaw signs HS256 and verifies with jose's defaults for a symmetric key, which
        // take the whole HMAC family; times are checked below with jose's exact rules.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];
        validation.set_required_spec_claims::<&str>(&[]);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        Ok(Self { key, validation })
    }

    /// The claims of a valid, unexpired token whose `provider` is `local`.
    pub fn verify(&self, token: &str, now: u64) -> Result<SessionClaims, AuthError> {
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &self.key, &self.validation)
            .map_err(|_| AuthError::InvalidSession)?;
        let claims = data.claims;
        // jose: expired when `exp <= now`; not yet valid when `nbf > now` (no tolerance).
        if claim_seconds(&claims, "exp")?.is_some_and(|exp| exp <= now) {
            return Err(AuthError::SessionExpired);
        }
        if claim_seconds(&claims, "nbf")?.is_some_and(|nbf| nbf > now) {
            return Err(AuthError::InvalidSession);
        }
        if claims.get("provider").and_then(Value::as_str) != Some("local") {
            return Err(AuthError::InvalidSession);
        }
        SessionClaims::from_claims(&claims, 0)
    }
}
