#![allow(dead_code)]
//! Runs the same scenario against every backend (the rollback guarantee).
//!
//! ```ignore
//! backend_tests!(fan_out_reaches_every_client);
//! async fn fan_out_reaches_every_client(backend: Backend) { let hub = backend.hub(&[]).await; ... }
//! ```

use super::hub::TestHub;
use super::redis::TestRedis;

/// Which backend a scenario runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// `REALTIME_BACKEND=memory`.
    Memory,
    /// `REALTIME_BACKEND=redis` on a private redis-server.
    Redis,
}

/// A backend fixture: for Redis it owns the spawned redis-server.
pub struct Backend {
    /// Which backend.
    pub kind: BackendKind,
    /// The private redis-server, for the Redis backend.
    pub redis: Option<TestRedis>,
}

impl Backend {
    /// Prepares the backend (spawns redis-server for Redis).
    pub async fn new(kind: BackendKind) -> Backend {
        let redis = match kind {
            BackendKind::Memory => None,
            BackendKind::Redis => Some(TestRedis::spawn().await),
        };
        Backend { kind, redis }
    }

    /// Env vars selecting this backend, plus `extra`.
    pub fn env(&self, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = Vec::new();
        match &self.redis {
            None => env.push(("REALTIME_BACKEND".into(), "memory".into())),
            Some(redis) => {
                env.push(("REALTIME_BACKEND".into(), "redis".into()));
                env.push(("REDIS_URL".into(), redis.url()));
            }
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

    /// `"memory"` or `"redis"`, as in `realtime.connected`.
    pub fn name(&self) -> &'static str {
        match self.kind {
            BackendKind::Memory => "memory",
            BackendKind::Redis => "redis",
        }
    }
}

/// Generates one `#[tokio::test]` per backend (memory and redis) for `async fn name(backend: Backend)`.
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
            }
        )+
    };
}
