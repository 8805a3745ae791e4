//! DashClaw's SDK keys: `DASHCLAW_API_KEY` (the fast path) and the `api_keys` table of
//! DashClaw's Postgres (`DATABASE_URL`), looked up by the SHA-256 of the key through a
//! pooled client and a bounded cache.
//!
//! Cache: at most [`CACHE_ENTRIES`] keys, by hash (never the key itself). An answer found,
//! unknown or revoked is trusted for the TTL (`REALTIME_API_KEY_CACHE_SECONDS`); past it the
//! key is looked up again. While the database cannot answer, the last answer for a key (kept
//! up to [`STALE_LIMIT`]) still serves, so keys that were working keep working; a key never
//! seen gets `AuthError::Unavailable` (not a refusal). Database errors are never cached.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use moka::future::Cache;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tracing::{info, warn};

use super::{AuthError, Grant, OrgGrant, Scope};
use crate::envelope::OrgId;

/// Keys whose answer is cached (DashClaw's own bound).
pub const CACHE_ENTRIES: u64 = 10_000;
/// How long the last answer for a key may serve while the database is unreachable.
pub const STALE_LIMIT: Duration = Duration::from_secs(24 * 3600);
/// Connect, wait-for-a-connection and query timeout.
const DB_TIMEOUT: Duration = Duration::from_secs(3);
/// Connections to DashClaw's database.
const POOL_SIZE: usize = 4;
/// How often the database is probed while it is reachable, and while it is not.
const PROBE_EVERY: Duration = Duration::from_secs(5);
const PROBE_EVERY_DOWN: Duration = Duration::from_secs(1);

/// DashClaw's lookup, made deterministic: a hash with a revoked row is refused even if
/// another row has it too (`key_hash` is not unique in DashClaw's schema).
const LOOKUP: &str = "SELECT org_id, revoked_at IS NOT NULL AS revoked FROM api_keys \
                      WHERE key_hash = $1 ORDER BY (revoked_at IS NULL) LIMIT 1";

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// What a key from DashClaw grants: reading its org's stream, as DashClaw's
/// `/api/stream` allows it.
pub fn key_grant(org: OrgId) -> Grant {
    Grant {
        orgs: OrgGrant::List(vec![org]),
        scopes: vec![Scope::Subscribe],
    }
}

/// `DASHCLAW_API_KEY` and the org it stands for.
pub struct EnvKey {
    digest: [u8; 32],
    org: OrgId,
}

impl EnvKey {
    /// The env key for `org`.
    pub fn new(key: &str, org: OrgId) -> Self {
        Self {
            digest: digest(key),
            org,
        }
    }

    /// The grant when `key` is the env key; compared in constant time (over the hashes).
    pub fn verify(&self, key: &str) -> Option<Grant> {
        bool::from(digest(key).ct_eq(&self.digest)).then(|| key_grant(self.org.clone()))
    }
}

/// One answer of the database: the key's org, or `None` (unknown or revoked).
#[derive(Clone)]
struct Answer {
    org: Option<OrgId>,
    fetched: Instant,
}

/// Why the database could not answer (never holds the key or its hash).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct DbError(String);

/// DashClaw's `api_keys` table behind a pool and the bounded caches.
pub struct KeyDatabase {
    pool: Pool,
    ttl: Duration,
    /// Answers younger than the TTL: lookups are served from here, one query per key at a
    /// time (concurrent lookups of one key wait for the same query).
    fresh: Cache<[u8; 32], Answer>,
    /// The last answer per key, for when the database cannot answer.
    known: Cache<[u8; 32], Answer>,
    /// Why the database is unreachable, while it is.
    down: Mutex<Option<String>>,
}

impl KeyDatabase {
    /// A pool for `url` (no connection is made until the first lookup or probe).
    pub fn new(url: &str, ttl: Duration) -> Result<Self, String> {
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| format!("DATABASE_URL is not a valid Postgres URL: {e}"))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(DB_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("dashclaw-realtime");
        }
        let tls = native_tls::TlsConnector::new()
            .map_err(|e| format!("DATABASE_URL: cannot set up TLS: {e}"))?;
        let manager = Manager::from_config(
            config,
            postgres_native_tls::MakeTlsConnector::new(tls),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(DB_TIMEOUT))
            .create_timeout(Some(DB_TIMEOUT))
            .recycle_timeout(Some(DB_TIMEOUT))
            .build()
            .map_err(|e| format!("DATABASE_URL: {e}"))?;
        let cache = |ttl| {
            Cache::builder()
                .max_capacity(CACHE_ENTRIES)
                .time_to_live(ttl)
                .build()
        };
        Ok(Self {
            pool,
            ttl,
            fresh: cache(ttl),
            known: cache(STALE_LIMIT),
            down: Mutex::new(None),
        })
    }

    /// The cache TTL.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Why the database is unreachable, or `None` when its last answer was fine.
    pub fn unavailable(&self) -> Option<String> {
        self.down.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set_down(&self, why: Option<String>) {
        let mut down = self.down.lock().unwrap_or_else(|p| p.into_inner());
        match (&*down, &why) {
            (None, Some(error)) => warn!(%error, "DashClaw's key database is unreachable"),
            (Some(_), None) => info!("DashClaw's key database is reachable again"),
            _ => {}
        }
        *down = why;
    }

    async fn query(&self, digest: [u8; 32]) -> Result<Option<OrgId>, DbError> {
        let hash = hex::encode(digest);
        let work = async {
            let client = self.pool.get().await.map_err(|e| DbError(e.to_string()))?;
            let statement = client
                .prepare_cached(LOOKUP)
                .await
                .map_err(|e| DbError(e.to_string()))?;
            client
                .query_opt(&statement, &[&hash])
                .await
                .map_err(|e| DbError(e.to_string()))
        };
        let row = tokio::time::timeout(DB_TIMEOUT, work)
            .await
            .map_err(|_| DbError("the lookup timed out".into()))
            .and_then(|r| r);
        let row = match row {
            Ok(row) => row,
            Err(error) => {
                self.set_down(Some(error.to_string()));
                return Err(error);
            }
        };
        self.set_down(None);
        let Some(row) = row else { return Ok(None) };
        let org: String = row.try_get(0).map_err(|e| DbError(e.to_string()))?;
        let revoked: bool = row.try_get(1).map_err(|e| DbError(e.to_string()))?;
        if revoked {
            return Ok(None);
        }
        match OrgId::parse(&org) {
            Ok(org) => Ok(Some(org)),
            Err(error) => {
                warn!(%error, "a key in DashClaw's api_keys has an org id the hub cannot serve");
                Ok(None)
            }
        }
    }

    /// The org of a key (`None`: unknown or revoked), from an answer at most `max_age` old.
    pub async fn lookup(
        &self,
        digest: [u8; 32],
        max_age: Duration,
    ) -> Result<Option<OrgId>, AuthError> {
        if let Some(answer) = self.fresh.get(&digest).await {
            if answer.fetched.elapsed() <= max_age {
                return Ok(answer.org);
            }
            self.fresh.invalidate(&digest).await;
        }
        let fetched = self
            .fresh
            .try_get_with(digest, async {
                let org = self.query(digest).await?;
                let answer = Answer {
                    org,
                    fetched: Instant::now(),
                };
                self.known.insert(digest, answer.clone()).await;
                Ok::<_, DbError>(answer)
            })
            .await;
        match fetched {
            Ok(answer) => Ok(answer.org),
            Err(_) => match self.known.get(&digest).await {
                Some(answer) => Ok(answer.org),
                None => Err(AuthError::Unavailable),
            },
        }
    }

    /// One `SELECT 1`, to notice the database coming back (or going away) without traffic.
    async fn probe(&self) {
        let result = tokio::time::timeout(DB_TIMEOUT, async {
            let client = self.pool.get().await.map_err(|e| e.to_string())?;
            client
                .simple_query("SELECT 1")
                .await
                .map_err(|e| e.to_string())
        })
        .await
        .map_err(|_| "the probe timed out".to_owned())
        .and_then(|r| r);
        self.set_down(result.err());
    }

    /// Probes the database for as long as the hub runs.
    pub async fn run_probe(self: Arc<Self>) {
        loop {
            self.probe().await;
            let pause = if self.unavailable().is_some() {
                PROBE_EVERY_DOWN
            } else {
                PROBE_EVERY
            };
            tokio::time::sleep(pause).await;
        }
    }
}

/// Asks again whether a database key still holds, for streams it opened.
#[derive(Clone)]
pub struct KeyRecheck {
    db: Arc<KeyDatabase>,
    digest: [u8; 32],
}

impl KeyRecheck {
    /// How often to ask: half the TTL, with answers at most that old, so a revoked key's
    /// streams end within one TTL of the revocation.
    pub fn every(&self) -> Duration {
        (self.db.ttl() / 2).max(Duration::from_millis(250))
    }

    /// False once the key is unknown or revoked; true while the database cannot answer
    /// (the key was valid when the stream opened).
    pub async fn still_valid(&self) -> bool {
        !matches!(self.db.lookup(self.digest, self.every()).await, Ok(None))
    }
}

/// The grant of a database key and how to re-check it.
pub async fn verify_db_key(
    db: &Arc<KeyDatabase>,
    key: &str,
) -> Result<(Grant, KeyRecheck), AuthError> {
    let digest = digest(key);
    match db.lookup(digest, db.ttl()).await? {
        Some(org) => Ok((
            key_grant(org),
            KeyRecheck {
                db: db.clone(),
                digest,
            },
        )),
        None => Err(AuthError::InvalidApiKey),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_key_grants_subscribe_on_its_org() {
        let org = OrgId::parse("org_default").unwrap();
        let env = EnvKey::new("oc_live_test", org.clone());
        assert_eq!(env.verify("oc_live_test"), Some(key_grant(org)));
        assert_eq!(env.verify("oc_live_tesu"), None);
        assert_eq!(env.verify(""), None);
    }

    #[test]
    fn hash_is_dashclaws() {
        assert_eq!(
            hex::encode(digest("oc_live_test")),
            "d0f449519946ec4f793875f1b17e5b201d1f077e320885bcfd6c6e36f343e979"
        );
    }
}
