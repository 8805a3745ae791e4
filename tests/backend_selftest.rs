//! Checks the backend fixtures themselves: a private redis-server starts, answers and dies.
mod common;

use common::{Backend, BackendKind, Resp, TestRedis};

#[tokio::test]
async fn private_redis_starts_answers_and_restarts() {
    let mut redis = TestRedis::spawn().await;
    assert_eq!(
        redis.cmd(&["SET", "k", "v"]).await,
        Resp::Simple("OK".into())
    );
    assert_eq!(redis.cmd(&["GET", "k"]).await.text().as_deref(), Some("v"));
    redis.restart().await;
    // Without persistence, a restart loses the data.
    assert_eq!(redis.cmd(&["GET", "k"]).await, Resp::Bulk(None));
    let mut persistent = TestRedis::spawn_persistent().await;
    persistent.cmd(&["SET", "k", "v"]).await;
    persistent.restart().await;
    assert_eq!(
        persistent.cmd(&["GET", "k"]).await.text().as_deref(),
        Some("v")
    );
}

#[tokio::test]
async fn memory_backend_env_selects_memory() {
    let backend = Backend::new(BackendKind::Memory).await;
    assert!(
        backend
            .env(&[])
            .contains(&("REALTIME_BACKEND".into(), "memory".into()))
    );
}
