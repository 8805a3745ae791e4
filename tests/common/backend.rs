#![allow(dead_code)]
//! Runs the same scenario against every backend (the rollback guarantee): memory, one Redis
//! server, and a Redis Cluster.
//!
//! ```ignore
//! backend_tests!(fan_out_reaches_every_client);
//! async fn fan_out_reaches_every_client(backend: Backend) { let hub = backend.hub(&[]).await; ... }
//! ```

use std::sync::atomic::{AtomicU64, Ordering};

use super::cluster::TestCluster;
use super::hub::TestHub;
use super::redis::TestRedis;

/// Which backend a scenario runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// `REALTIME_BACKEND=memory`.
    Memory,
    /// `REALTIME_BACKEND=redis` on a private redis-server.
    Redis,
    /// `REALTIME_BACKEND=redis` on a private Redis Cluster (`redis+cluster://`), shared by
    /// the tests of one binary, each under its own key prefix.
    Cluster,
}

/// A backend fixture: for Redis it owns the spawned redis-server.
pub struct Backend {
    /// Which backend.
    pub kind: BackendKind,
    /// The private redis-server, for the Redis backend.
    pub redis: Option<TestRedis>,
    /// The cluster, for the Cluster backend.
    pub cluster: Option<&'static TestCluster>,
    /// `REALTIME_KEY_PREFIX` of this fixture's hubs (the cluster is shared).
    pub key_prefix: Option<String>,
}

impl Backend {
    /// Prepares the backend (spawns redis-server for Redis, the binary's cluster for
    /// Cluster).
    pub async fn new(kind: BackendKind) -> Backend {
        match kind {
            BackendKind::Memory => Backend::with_redis(None),
            BackendKind::Redis => Backend::with_redis(Some(TestRedis::spawn().await)),
            BackendKind::Cluster => {
                static NEXT: AtomicU64 = AtomicU64::new(0);
                let n = NEXT.fetch_add(1, Ordering::Relaxed);
                Backend {
                    kind,
                    redis: None,
                    cluster: Some(TestCluster::shared().await),
                    key_prefix: Some(format!("t{}.{n}", std::process::id())),
                }
            }
        }
    }

    /// The Redis backend on `redis`, or memory without one.
    pub fn with_redis(redis: Option<TestRedis>) -> Backend {
        Backend {
            kind: if redis.is_some() {
                BackendKind::Redis
            } else {
                BackendKind::Memory
            },
            redis,
            cluster: None,
            key_prefix: None,
        }
    }

    /// Env vars selecting this backend, plus `extra`.
    pub fn env(&self, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = Vec::new();
        let url = match (&self.redis, self.cluster) {
            (Some(redis), _) => Some(redis.url()),
            (None, Some(cluster)) => Some(cluster.url()),
            (None, None) => None,
        };
        match url {
            None => env.push(("REALTIME_BACKEND".into(), "memory".into())),
            Some(url) => {
                env.push(("REALTIME_BACKEND".into(), "redis".into()));
                env.push(("REDIS_URL".into(), url));
            }
        }
        if let Some(prefix) = &self.key_prefix {
            env.push(("REALTIME_KEY_PREFIX".into(), prefix.clone()));
        }
        for (k, v) in extra {
            env.push((k.to_string(), v.to_string()));
        }
        env
    }

    /// Spawns a hub on this backend with `extra` settings.
    pub async fn hub(&self, extra: &[(&str, &str)]) -> TestHub {
        let env = self.env(extra);
        let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        TestHub::spawn(&pairs).await
    }

    /// `"memory"` or `"redis"`, as in `realtime.connected` (a cluster is `redis` too).
    pub fn name(&self) -> &'static str {
        match self.kind {
            BackendKind::Memory => "memory",
            BackendKind::Redis | BackendKind::Cluster => "redis",
        }
    }
}

/// Generates one `#[tokio::test]` per backend (memory, redis and cluster) for
/// `async fn name(backend: Backend)`.
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn memory() {
                    let backend = $crate::common::Backend::new($crate::common::BackendKind::Memory).await;
                    super::$name(backend).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn redis() {
                    let backend = $crate::common::Backend::new($crate::common::BackendKind::Redis).await;
                    super::$name(backend).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn cluster() {
                    let backend = $crate::common::Backend::new($crate::common::BackendKind::Cluster).await;
                    super::$name(backend).await;
                }
            }
        )+
    };
}
