//! Credentials: HS256 JWTs and hashed API keys, and what they grant.

use std::collections::HashMap;
use std::path::Path;

use actix_web::HttpRequest;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::envelope::{OrgId, Topic};

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

struct ApiKeyEntry {
    org: OrgId,
    scopes: Vec<Scope>,
}

/// The configured verifiers; with neither, auth is off.
pub struct Auth {
    jwt: Option<(DecodingKey, Validation)>,
    api_keys: Option<HashMap<[u8; 32], ApiKeyEntry>>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("jwt", &self.jwt.is_some())
            .field("api_keys", &self.api_keys.as_ref().map(HashMap::len))
            .finish()
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
    Auth::parse_keys(text).map(|keys| keys.len())
}

/// SHA-256 of an API key as lowercase hex, the form stored in the keys file.
pub fn hash_api_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
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
        let jwt = match jwt_secret {
            None => None,
            Some(secret) => {
                let key = DecodingKey::from_secret(secret.as_bytes())
                    .map_err(|e| format!("REALTIME_JWT_SECRET: {e}"))?;
                let mut validation = Validation::new(Algorithm::HS256);
                validation.set_required_spec_claims(&["exp"]);
                validation.leeway = 0;
                Some((key, validation))
            }
        };
        let api_keys = match api_keys_file {
            None => None,
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                Some(Self::parse_keys(&text)?)
            }
        };
        Ok(Self { jwt, api_keys })
    }

    fn parse_keys(text: &str) -> Result<HashMap<[u8; 32], ApiKeyEntry>, String> {
        let mut keys = HashMap::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            let bad = |why: &str| format!("line {}: {why}", number + 1);
            let [hash, org, scopes] = fields[..] else {
                return Err(bad("expected `<sha256 hex> <org_id> <scopes>`"));
            };
            let mut digest = [0u8; 32];
            hex::decode_to_slice(hash, &mut digest).map_err(|_| bad("bad sha256 hex"))?;
            let org = OrgId::parse(org).map_err(|e| bad(&e.to_string()))?;
            let parsed = parse_scopes(scopes, ',');
            if parsed.len() != scopes.split(',').count() {
                return Err(bad(
                    "scopes are a comma-separated subset of subscribe,publish,ops",
                ));
            }
            keys.insert(
                digest,
                ApiKeyEntry {
                    org,
                    scopes: parsed,
                },
            );
        }
        Ok(keys)
    }

    /// True when neither JWT nor API keys are configured.
    pub fn is_off(&self) -> bool {
        self.jwt.is_none() && self.api_keys.is_none()
    }

    /// Authenticates a request from its bearer token, `access_token` query or `x-api-key`.
    pub fn authenticate(&self, req: &HttpRequest) -> Result<Grant, AuthError> {
        if self.is_off() {
            return Ok(Grant::open());
        }
        if let Some(token) = bearer_token(req) {
            return self.verify_token(&token);
        }
        if let Some(key) = req.headers().get("x-api-key") {
            let key = key.to_str().map_err(|_| AuthError::InvalidApiKey)?;
            return self.verify_api_key(key);
        }
        Err(AuthError::Missing)
    }

    /// Verifies an HS256 token.
    pub fn verify_token(&self, token: &str) -> Result<Grant, AuthError> {
        let Some((key, validation)) = &self.jwt else {
            return Err(AuthError::InvalidToken);
        };
        let data =
            jsonwebtoken::decode::<Claims>(token, key, validation).map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::TokenExpired,
                _ => AuthError::InvalidToken,
            })?;
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

    /// Verifies an API key against the hashed keys file.
    pub fn verify_api_key(&self, key: &str) -> Result<Grant, AuthError> {
        let keys = self.api_keys.as_ref().ok_or(AuthError::InvalidApiKey)?;
        let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        let entry = keys.get(&digest).ok_or(AuthError::InvalidApiKey)?;
        Ok(Grant {
            orgs: OrgGrant::List(vec![entry.org.clone()]),
            scopes: entry.scopes.clone(),
        })
    }
}

fn bearer_token(req: &HttpRequest) -> Option<String> {
    if let Some(value) = req.headers().get(actix_web::http::header::AUTHORIZATION)
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
    crate::http::query_param(req, "access_token")
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

#[cfg(test)]
mod tests {
    use super::*;

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
        let keys = Auth::parse_keys(&line).unwrap();
        let auth = Auth {
            jwt: None,
            api_keys: Some(keys),
        };
        let grant = auth.verify_api_key("k1").unwrap();
        assert_eq!(grant.scopes, vec![Scope::Subscribe, Scope::Publish]);
        assert_eq!(auth.verify_api_key("k2"), Err(AuthError::InvalidApiKey));
        assert!(Auth::parse_keys("zz org_a subscribe").is_err());
        assert!(Auth::parse_keys(&format!("{} a:b subscribe", hash_api_key("x"))).is_err());
        assert!(Auth::parse_keys(&format!("{} a admin", hash_api_key("x"))).is_err());
    }
}
