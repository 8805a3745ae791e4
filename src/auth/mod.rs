//! Credentials and what they grant. This module verifies credentials; it never sees an
//! HTTP request (the HTTP layer extracts the [`Credential`]).
//!
//! - [`jwt`]: HS256 tokens (`REALTIME_JWT_SECRET`);
//! - [`api_keys`]: the hashed keys file (`REALTIME_API_KEYS_FILE`).

pub mod api_keys;
pub mod jwt;

use std::path::Path;

use crate::envelope::{OrgId, Topic};

pub use api_keys::{ApiKeys, hash_api_key};
pub use jwt::{Claims, JwtVerifier, sign_token};

/// A credential as a client presented it.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// `Authorization: Bearer <t>` or the `access_token` query parameter.
    Bearer(String),
    /// The `x-api-key` header.
    ApiKey(String),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret itself: this may end up in a log line.
        match self {
            Self::Bearer(_) => f.write_str("Bearer(..)"),
            Self::ApiKey(_) => f.write_str("ApiKey(..)"),
        }
    }
}

/// What a credential may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Read org streams.
    Subscribe,
    /// Publish to orgs.
    Publish,
    /// Read and publish the ops channel.
    Ops,
}

impl Scope {
    /// Parses one scope word.
    pub fn parse(word: &str) -> Option<Self> {
        match word {
            "subscribe" => Some(Self::Subscribe),
            "publish" => Some(Self::Publish),
            "ops" => Some(Self::Ops),
            _ => None,
        }
    }

    /// The scope word.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Subscribe => "subscribe",
            Self::Publish => "publish",
            Self::Ops => "ops",
        }
    }
}

/// Why a request was refused; 401 for missing or bad credentials, 403 for missing rights.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No credential was given.
    #[error("a credential is required: Authorization: Bearer <token>, access_token, or x-api-key")]
    Missing,
    /// The token is malformed or its signature is wrong.
    #[error("the token is invalid")]
    InvalidToken,
    /// The token's `exp` has passed.
    #[error("the token has expired")]
    TokenExpired,
    /// The API key is not known.
    #[error("the API key is not valid")]
    InvalidApiKey,
    /// The credential does not cover this org.
    #[error("the credential does not grant access to this org")]
    ForbiddenOrg,
    /// The credential lacks a scope.
    #[error("the credential lacks the {0} scope")]
    InsufficientScope(&'static str),
    /// `/api/stream` could not tell which org the credential means.
    #[error("the credential covers several orgs; choose one with x-org-id or org_id")]
    AmbiguousOrg,
}

impl AuthError {
    /// Stable error code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Missing => "unauthorized",
            Self::InvalidToken => "invalid_token",
            Self::TokenExpired => "token_expired",
            Self::InvalidApiKey => "invalid_api_key",
            Self::ForbiddenOrg => "forbidden_org",
            Self::InsufficientScope(_) => "insufficient_scope",
            Self::AmbiguousOrg => "ambiguous_org",
        }
    }

    /// True for 401 errors, false for 403.
    pub fn is_unauthenticated(&self) -> bool {
        matches!(
            self,
            Self::Missing | Self::InvalidToken | Self::TokenExpired | Self::InvalidApiKey
        )
    }
}

/// Which orgs a grant covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrgGrant {
    /// Auth is off: every org.
    Any,
    /// These orgs.
    List(Vec<OrgId>),
}

/// What an authenticated request may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Orgs covered.
    pub orgs: OrgGrant,
    /// Scopes held.
    pub scopes: Vec<Scope>,
}

impl Grant {
    /// Everything: used when auth is off.
    pub fn open() -> Self {
        Self {
            orgs: OrgGrant::Any,
            scopes: vec![Scope::Subscribe, Scope::Publish, Scope::Ops],
        }
    }

    fn has(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }

    /// Checks access to a topic: org membership plus `scope`, or `ops` for the ops channel.
    pub fn authorize(&self, topic: &Topic, scope: Scope) -> Result<(), AuthError> {
        match topic {
            Topic::Ops => {
                if self.has(Scope::Ops) {
                    Ok(())
                } else {
                    Err(AuthError::InsufficientScope(Scope::Ops.as_str()))
                }
            }
            Topic::Org(org) => {
                let member = match &self.orgs {
                    OrgGrant::Any => true,
                    OrgGrant::List(orgs) => orgs.contains(org),
                };
                if !member {
                    return Err(AuthError::ForbiddenOrg);
                }
                if self.has(scope) {
                    Ok(())
                } else {
                    Err(AuthError::InsufficientScope(scope.as_str()))
                }
            }
        }
    }

    /// The org of `/api/stream`: the credential's only org, or `requested` among its orgs.
    pub fn pick_org(&self, requested: Option<OrgId>, default: &OrgId) -> Result<OrgId, AuthError> {
        match (&self.orgs, requested) {
            (OrgGrant::Any, requested) => Ok(requested.unwrap_or_else(|| default.clone())),
            (OrgGrant::List(orgs), Some(org)) if orgs.contains(&org) => Ok(org),
            (OrgGrant::List(_), Some(_)) => Err(AuthError::ForbiddenOrg),
            (OrgGrant::List(orgs), None) if orgs.len() == 1 => Ok(orgs[0].clone()),
            (OrgGrant::List(_), None) => Err(AuthError::AmbiguousOrg),
        }
    }
}

fn parse_scopes(words: &str, separator: char) -> Vec<Scope> {
    words
        .split(separator)
        .filter_map(|w| Scope::parse(w.trim()))
        .collect()
}

/// Parses the text of a `REALTIME_API_KEYS_FILE` and returns how many keys it holds.
///
/// The same parser [`Auth::new`] applies to the file; pure, for tests and fuzzing.
pub fn parse_api_keys(text: &str) -> Result<usize, String> {
    ApiKeys::parse(text).map(|keys| keys.len())
}

/// The configured verifiers; with neither, auth is off.
pub struct Auth {
    jwt: Option<JwtVerifier>,
    api_keys: Option<ApiKeys>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("jwt", &self.jwt.is_some())
            .field("api_keys", &self.api_keys.as_ref().map(ApiKeys::len))
            .finish()
    }
}

impl Auth {
    /// No auth: every request gets [`Grant::open`].
    pub fn off() -> Self {
        Self {
            jwt: None,
            api_keys: None,
        }
    }

    /// Builds verifiers from the JWT secret and/or the API keys file.
    pub fn new(jwt_secret: Option<&str>, api_keys_file: Option<&Path>) -> Result<Self, String> {
        let jwt = jwt_secret.map(JwtVerifier::new).transpose()?;
        let api_keys = match api_keys_file {
            None => None,
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                Some(ApiKeys::parse(&text)?)
            }
        };
        Ok(Self { jwt, api_keys })
    }

    /// True when neither JWT nor API keys are configured.
    pub fn is_off(&self) -> bool {
        self.jwt.is_none() && self.api_keys.is_none()
    }

    /// What the presented credential grants (everything when auth is off).
    pub fn authenticate(&self, credential: Option<&Credential>) -> Result<Grant, AuthError> {
        if self.is_off() {
            return Ok(Grant::open());
        }
        match credential {
            Some(Credential::Bearer(token)) => self.verify_token(token),
            Some(Credential::ApiKey(key)) => self.verify_api_key(key),
            None => Err(AuthError::Missing),
        }
    }

    /// Verifies an HS256 token.
    pub fn verify_token(&self, token: &str) -> Result<Grant, AuthError> {
        self.jwt
            .as_ref()
            .ok_or(AuthError::InvalidToken)?
            .verify(token)
    }

    /// Verifies an API key against the hashed keys file.
    pub fn verify_api_key(&self, key: &str) -> Result<Grant, AuthError> {
        self.api_keys
            .as_ref()
            .ok_or(AuthError::InvalidApiKey)?
            .verify(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{Algorithm, EncodingKey, Header};

    #[test]
    fn tokens_round_trip_and_expire() {
        let auth = Auth::new(Some("s3cret"), None).unwrap();
        let org = OrgId::parse("org_a").unwrap();
        let token = sign_token(
            "s3cret",
            std::slice::from_ref(&org),
            &[Scope::Subscribe],
            60,
        )
        .unwrap();
        let grant = auth.verify_token(&token).unwrap();
        assert!(
            grant
                .authorize(&Topic::Org(org.clone()), Scope::Subscribe)
                .is_ok()
        );
        assert_eq!(
            grant.authorize(&Topic::Org(org.clone()), Scope::Publish),
            Err(AuthError::InsufficientScope("publish"))
        );
        let other = Topic::Org(OrgId::parse("org_b").unwrap());
        assert_eq!(
            grant.authorize(&other, Scope::Subscribe),
            Err(AuthError::ForbiddenOrg)
        );
        let wrong =
            sign_token("other", std::slice::from_ref(&org), &[Scope::Subscribe], 60).unwrap();
        assert_eq!(auth.verify_token(&wrong), Err(AuthError::InvalidToken));
        let claims = Claims {
            exp: 1,
            org_id: Some("org_a".into()),
            orgs: None,
            scope: "subscribe".into(),
        };
        let expired = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(b"s3cret").unwrap(),
        )
        .unwrap();
        assert_eq!(auth.verify_token(&expired), Err(AuthError::TokenExpired));
        assert_eq!(auth.verify_token("garbage"), Err(AuthError::InvalidToken));
    }

    #[test]
    fn api_keys() {
        let line = format!(
            "{} org_a subscribe,publish\n# comment\n",
            hash_api_key("k1")
        );
        let keys = ApiKeys::parse(&line).unwrap();
        let auth = Auth {
            jwt: None,
            api_keys: Some(keys),
        };
        let grant = auth.verify_api_key("k1").unwrap();
        assert_eq!(grant.scopes, vec![Scope::Subscribe, Scope::Publish]);
        assert_eq!(auth.verify_api_key("k2"), Err(AuthError::InvalidApiKey));
        assert!(ApiKeys::parse("zz org_a subscribe").is_err());
        assert!(ApiKeys::parse(&format!("{} a:b subscribe", hash_api_key("x"))).is_err());
        assert!(ApiKeys::parse(&format!("{} a admin", hash_api_key("x"))).is_err());
    }
}
