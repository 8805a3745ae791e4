//! Credentials and what they grant. This module verifies credentials; it never sees an
//! HTTP request (the HTTP layer extracts the [`Credential`]s a request presents).
//!
//! - [`jwt`]: the hub's HS256 tokens (`REALTIME_JWT_SECRET`);
//! - [`api_keys`]: the hashed keys file (`REALTIME_API_KEYS_FILE`), reloadable;
//! - [`nextauth`], [`local_session`]: DashClaw's session cookies (`NEXTAUTH_SECRET`);
//! - [`dashclaw_keys`]: DashClaw's SDK keys (`DASHCLAW_API_KEY`, `DATABASE_URL`).

pub mod api_keys;
pub mod dashclaw_keys;
pub mod jwt;
pub mod local_session;
pub mod nextauth;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};
use tracing::{info, warn};

use crate::config::Config;
use crate::envelope::{OrgId, Topic};

pub use api_keys::{ApiKeys, KeysFile, hash_api_key};
pub use dashclaw_keys::{EnvKey, KeyDatabase, KeyRecheck};
pub use jwt::{Claims, JwtVerifier, SignError, sign_token};
pub use local_session::LocalSessionVerifier;
pub use nextauth::NextAuthVerifier;

/// The org DashClaw gives a session without one.
pub const DEFAULT_ORG: &str = "org_default";

/// The NextAuth session cookie's name, over HTTP and over HTTPS.
pub const NEXTAUTH_COOKIE: &str = "next-auth.session-token";
/// The `__Secure-` name NextAuth uses when `NEXTAUTH_URL` is `https://`.
pub const NEXTAUTH_SECURE_COOKIE: &str = "__Secure-next-auth.session-token";

/// A credential as a client presented it.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// `Authorization: Bearer <t>` or the `access_token` query parameter.
    Bearer(String),
    /// The `x-api-key` header.
    ApiKey(String),
    /// DashClaw's NextAuth session cookie (its chunks joined).
    NextAuthSession(String),
    /// DashClaw's `dashclaw-local-session` cookie.
    LocalSession(String),
}

impl Credential {
    /// True for DashClaw's session cookies.
    pub fn is_session(&self) -> bool {
        matches!(self, Self::NextAuthSession(_) | Self::LocalSession(_))
    }
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret itself: this may end up in a log line.
        match self {
            Self::Bearer(_) => f.write_str("Bearer(..)"),
            Self::ApiKey(_) => f.write_str("ApiKey(..)"),
            Self::NextAuthSession(_) => f.write_str("NextAuthSession(..)"),
            Self::LocalSession(_) => f.write_str("LocalSession(..)"),
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
    /// A session cookie that does not decrypt or verify, or is not DashClaw's.
    #[error("the session is invalid")]
    InvalidSession,
    /// The session's `exp` has passed.
    #[error("the session has expired")]
    SessionExpired,
    /// A session without an org, outside DashClaw's `self_host` mode.
    #[error("the session has no org yet: complete onboarding in DashClaw")]
    NeedsOnboarding,
    /// DashClaw's credentials only open streams; this route publishes or is for ops.
    #[error("{0} may only open org streams")]
    NotForThisRoute(&'static str),
    /// The key database cannot answer and the key is not cached.
    #[error("API keys cannot be checked right now; retry shortly")]
    Unavailable,
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
            Self::InvalidSession => "invalid_session",
            Self::SessionExpired => "session_expired",
            Self::NeedsOnboarding => "needs_onboarding",
            Self::NotForThisRoute(_) => "credential_not_allowed",
            Self::Unavailable => "auth_unavailable",
        }
    }

    /// True for 401 errors (no valid credential), false for refusals of a valid one.
    pub fn is_unauthenticated(&self) -> bool {
        matches!(
            self,
            Self::Missing
                | Self::InvalidToken
                | Self::TokenExpired
                | Self::InvalidApiKey
                | Self::InvalidSession
                | Self::SessionExpired
        )
    }
}

/// What the hub reads from a DashClaw session: its org and its expiry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionClaims {
    /// `orgId`, or `None` when missing or empty (DashClaw's `org_default`).
    pub org: Option<OrgId>,
    /// When the session stops being accepted, seconds since the epoch.
    pub expires_at: Option<u64>,
}

impl SessionClaims {
    /// Reads `orgId` and `exp` (`tolerance`: seconds the session is still accepted after it).
    pub fn from_claims(claims: &Map<String, Value>, tolerance: u64) -> Result<Self, AuthError> {
        let org = match claims.get("orgId") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.is_empty() => None,
            Some(Value::String(s)) => Some(OrgId::parse(s).map_err(|_| AuthError::InvalidSession)?),
            Some(_) => return Err(AuthError::InvalidSession),
        };
        let expires_at = claim_seconds(claims, "exp")?.map(|exp| exp.saturating_add(tolerance));
        Ok(Self { org, expires_at })
    }
}

/// A numeric date claim in whole seconds; `None` when absent, an error when not a number.
pub(crate) fn claim_seconds(
    claims: &Map<String, Value>,
    name: &str,
) -> Result<Option<u64>, AuthError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .or_else(|| n.as_f64().map(|f| f.max(0.0).floor() as u64))
            .map(Some)
            .ok_or(AuthError::InvalidSession),
        Some(_) => Err(AuthError::InvalidSession),
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

/// What verified credential opened a stream: its grant, when it stops being valid, and,
/// for a key from DashClaw's database, how to ask whether it was revoked since.
#[derive(Clone)]
pub struct Verified {
    /// What the credential grants.
    pub grant: Grant,
    /// When the credential expires, seconds since the epoch.
    pub expires_at: Option<u64>,
    /// For a database key: the re-check that ends its streams once it is revoked.
    pub recheck: Option<KeyRecheck>,
}

impl Verified {
    fn lasting(grant: Grant) -> Self {
        Self {
            grant,
            expires_at: None,
            recheck: None,
        }
    }
}

/// DashClaw's session cookies: both verifiers, the NextAuth cookie's name, and whether a
/// session without an org is served.
struct Sessions {
    nextauth: NextAuthVerifier,
    local: LocalSessionVerifier,
    cookie_name: &'static str,
    allow_default_org: bool,
}

/// The configured verifiers; with none, auth is off.
pub struct Auth {
    jwt: Option<JwtVerifier>,
    api_keys: Option<KeysFile>,
    sessions: Option<Sessions>,
    env_key: Option<EnvKey>,
    db: Option<Arc<KeyDatabase>>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("jwt", &self.jwt.is_some())
            .field("api_keys", &self.api_keys.as_ref().map(|k| k.keys().len()))
            .field("sessions", &self.sessions.is_some())
            .field("env_key", &self.env_key.is_some())
            .field("database", &self.db.is_some())
            .finish()
    }
}

/// Seconds since the epoch.
fn now_seconds() -> u64 {
    crate::envelope::now_ms() / 1000
}

impl Auth {
    /// No auth: every request gets [`Grant::open`].
    pub fn off() -> Self {
        Self {
            jwt: None,
            api_keys: None,
            sessions: None,
            env_key: None,
            db: None,
        }
    }

    /// Builds verifiers from the JWT secret and/or the API keys file.
    pub fn new(jwt_secret: Option<&str>, api_keys_file: Option<&Path>) -> Result<Self, String> {
        let jwt = jwt_secret.map(JwtVerifier::new).transpose()?;
        let api_keys = api_keys_file.map(KeysFile::load).transpose()?;
        Ok(Self {
            jwt,
            api_keys,
            ..Self::off()
        })
    }

    /// Builds every verifier the settings turn on; an error names the setting.
    pub fn from_config(config: &Config) -> Result<Self, String> {
        let jwt = config
            .jwt_secret
            .as_deref()
            .map(|secret| {
                JwtVerifier::bound(
                    secret,
                    config.jwt_issuer.as_deref(),
                    config.jwt_audience.as_deref(),
                )
            })
            .transpose()?;
        let api_keys = config
            .api_keys_file
            .as_deref()
            .map(|path| KeysFile::load(path).map_err(|e| format!("REALTIME_API_KEYS_FILE: {e}")))
            .transpose()?;
        let sessions = match config.nextauth_secret() {
            None => None,
            Some(secret) => Some(Sessions {
                nextauth: NextAuthVerifier::new(secret)?,
                local: LocalSessionVerifier::new(secret)?,
                cookie_name: if config.secure_session_cookie() {
                    NEXTAUTH_SECURE_COOKIE
                } else {
                    NEXTAUTH_COOKIE
                },
                allow_default_org: config.allows_default_org(),
            }),
        };
        let env_key = match config.dashclaw_api_key.as_deref() {
            None => None,
            Some(key) => {
                let org = OrgId::parse(&config.dashclaw_api_key_org)
                    .map_err(|e| format!("DASHCLAW_API_KEY_ORG: {e}"))?;
                Some(EnvKey::new(key, org))
            }
        };
        let db = config
            .database_url
            .as_deref()
            .map(|url| KeyDatabase::new(url, config.api_key_cache).map(Arc::new))
            .transpose()?;
        Ok(Self {
            jwt,
            api_keys,
            sessions,
            env_key,
            db,
        })
    }

    /// True when no verifier is configured.
    pub fn is_off(&self) -> bool {
        self.jwt.is_none()
            && self.api_keys.is_none()
            && self.sessions.is_none()
            && self.env_key.is_none()
            && self.db.is_none()
    }

    /// The NextAuth cookie this deployment reads, when session cookies are on.
    pub fn session_cookie_name(&self) -> Option<&'static str> {
        self.sessions.as_ref().map(|s| s.cookie_name)
    }

    /// Why DashClaw's key database is unreachable, while it is.
    pub fn database_unavailable(&self) -> Option<String> {
        self.db.as_ref().and_then(|db| db.unavailable())
    }

    /// [`Self::authenticate`], looking a key up in DashClaw's database when the file and
    /// `DASHCLAW_API_KEY` do not know it: a known database key is authenticated (and then
    /// lacks the scope), an unknown one is a 401, an unreachable database a 503.
    pub async fn authenticate_route(
        &self,
        credential: Option<&Credential>,
    ) -> Result<Grant, AuthError> {
        match (credential, &self.db) {
            (Some(Credential::ApiKey(key)), Some(db)) if self.verify_api_key(key).is_err() => {
                dashclaw_keys::verify_db_key(db, key)
                    .await
                    .map(|(grant, _)| grant)
            }
            _ => self.authenticate(credential),
        }
    }

    /// What the presented credential grants, for routes that publish or serve ops
    /// (everything when auth is off). Needs no I/O: DashClaw's session cookies only open
    /// org streams, so they are refused here once verified, and so is a key the file and
    /// `DASHCLAW_API_KEY` do not know (see [`Self::authenticate_route`]).
    pub fn authenticate(&self, credential: Option<&Credential>) -> Result<Grant, AuthError> {
        if self.is_off() {
            return Ok(Grant::open());
        }
        match credential {
            Some(Credential::Bearer(token)) => self.verify_token(token),
            Some(Credential::ApiKey(key)) => match self.verify_api_key(key) {
                Err(AuthError::InvalidApiKey) if self.db.is_some() => {
                    Err(AuthError::NotForThisRoute("a key from DashClaw's database"))
                }
                other => other,
            },
            Some(session @ (Credential::NextAuthSession(_) | Credential::LocalSession(_))) => {
                self.verify_session(session)?;
                Err(AuthError::NotForThisRoute("a DashClaw session cookie"))
            }
            None => Err(AuthError::Missing),
        }
    }

    /// What the presented credentials grant for opening a stream, tried in order: the
    /// first that verifies wins; a session cookie that fails to verify lets the next one
    /// be tried (DashClaw falls back from NextAuth's cookie to the local one).
    pub async fn authenticate_stream(
        &self,
        credentials: &[Credential],
    ) -> Result<Verified, AuthError> {
        if self.is_off() {
            return Ok(Verified::lasting(Grant::open()));
        }
        let mut first_error = None;
        for credential in credentials {
            let result = match credential {
                Credential::Bearer(token) => self
                    .jwt
                    .as_ref()
                    .ok_or(AuthError::InvalidToken)
                    .and_then(|jwt| jwt.verify_with_expiry(token))
                    .map(|(grant, exp)| Verified {
                        grant,
                        expires_at: Some(exp),
                        recheck: None,
                    }),
                Credential::ApiKey(key) => self.verify_stream_key(key).await,
                session => self
                    .verify_session(session)
                    .map(|(grant, expires_at)| Verified {
                        grant,
                        expires_at,
                        recheck: None,
                    }),
            };
            match result {
                Ok(verified) => return Ok(verified),
                Err(error) if credential.is_session() && error.is_unauthenticated() => {
                    first_error.get_or_insert(error);
                }
                Err(error) => return Err(error),
            }
        }
        Err(first_error.unwrap_or(AuthError::Missing))
    }

    /// Verifies an HS256 token.
    pub fn verify_token(&self, token: &str) -> Result<Grant, AuthError> {
        self.jwt
            .as_ref()
            .ok_or(AuthError::InvalidToken)?
            .verify(token)
    }

    /// Verifies an API key against the keys file, then `DASHCLAW_API_KEY` (no database).
    pub fn verify_api_key(&self, key: &str) -> Result<Grant, AuthError> {
        if let Some(file) = &self.api_keys
            && let Ok(grant) = file.keys().verify(key)
        {
            return Ok(grant);
        }
        self.env_key
            .as_ref()
            .and_then(|env| env.verify(key))
            .ok_or(AuthError::InvalidApiKey)
    }

    async fn verify_stream_key(&self, key: &str) -> Result<Verified, AuthError> {
        match (self.verify_api_key(key), &self.db) {
            (Ok(grant), _) => Ok(Verified::lasting(grant)),
            (Err(_), Some(db)) => {
                let (grant, recheck) = dashclaw_keys::verify_db_key(db, key).await?;
                Ok(Verified {
                    grant,
                    expires_at: None,
                    recheck: Some(recheck),
                })
            }
            (Err(error), None) => Err(error),
        }
    }

    /// A session cookie's grant (subscribe on its org) and expiry.
    fn verify_session(&self, credential: &Credential) -> Result<(Grant, Option<u64>), AuthError> {
        let sessions = self.sessions.as_ref().ok_or(AuthError::InvalidSession)?;
        let now = now_seconds();
        let claims = match credential {
            Credential::NextAuthSession(token) => sessions.nextauth.verify(token, now)?,
            Credential::LocalSession(token) => sessions.local.verify(token, now)?,
            _ => return Err(AuthError::InvalidSession),
        };
        let org = match claims.org {
            Some(org) => org,
            None => OrgId::parse(DEFAULT_ORG).map_err(|_| AuthError::InvalidSession)?,
        };
        if org.as_str() == DEFAULT_ORG && !sessions.allow_default_org {
            return Err(AuthError::NeedsOnboarding);
        }
        let grant = Grant {
            orgs: OrgGrant::List(vec![org]),
            scopes: vec![Scope::Subscribe],
        };
        Ok((grant, claims.expires_at))
    }

    /// Starts what keeps credentials current, on the current Tokio runtime: the keys
    /// file's watcher (its modification time, and `SIGHUP`) and the key database's probe.
    pub fn spawn_background(self: &Arc<Self>) {
        if self.api_keys.is_some() {
            tokio::spawn(self.clone().watch_keys_file());
        }
        if let Some(db) = &self.db {
            tokio::spawn(db.clone().run_probe());
        }
    }

    async fn watch_keys_file(self: Arc<Self>) {
        let Some(file) = &self.api_keys else { return };
        let mut hangup =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut tick = tokio::time::interval(KEYS_FILE_POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_error: Option<String> = None;
        loop {
            let asked = tokio::select! {
                _ = tick.tick() => false,
                Some(()) = async {
                    match hangup.as_mut() {
                        Some(signal) => signal.recv().await,
                        None => std::future::pending().await,
                    }
                } => true,
            };
            if !asked && !file.changed() {
                continue;
            }
            let why = if asked { "SIGHUP" } else { "modified" };
            match file.reload() {
                Ok(keys) => {
                    info!(keys, reason = why, path = %file.path().display(), "API keys file reloaded");
                    last_error = None;
                }
                Err(error) => {
                    // Once per distinct failure: a broken file is polled every second.
                    if asked || last_error.as_ref() != Some(&error) {
                        warn!(%error, reason = why, "API keys file not reloaded; the previous keys stay in force");
                    }
                    last_error = Some(error);
                }
            }
        }
    }
}

/// How often the keys file's modification time is checked.
pub const KEYS_FILE_POLL: Duration = Duration::from_secs(1);

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{Algorithm, EncodingKey, Header};

    const SECRET: &str = "s3cret-of-at-least-thirty-two-bytes";

    #[test]
    fn tokens_round_trip_and_expire() {
        let auth = Auth::new(Some(SECRET), None).unwrap();
        let org = OrgId::parse("org_a").unwrap();
        let token =
            sign_token(SECRET, std::slice::from_ref(&org), &[Scope::Subscribe], 60).unwrap();
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
            &EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
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
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        std::fs::write(&path, &line).unwrap();
        let auth = Auth::new(None, Some(&path)).unwrap();
        let grant = auth.verify_api_key("k1").unwrap();
        assert_eq!(grant.scopes, vec![Scope::Subscribe, Scope::Publish]);
        assert_eq!(auth.verify_api_key("k2"), Err(AuthError::InvalidApiKey));
        assert!(ApiKeys::parse("zz org_a subscribe").is_err());
        assert!(ApiKeys::parse(&format!("{} a:b subscribe", hash_api_key("x"))).is_err());
        assert!(ApiKeys::parse(&format!("{} a admin", hash_api_key("x"))).is_err());
    }
}
