#![allow(dead_code)]
#![allow(unused_imports)]
//! Shared integration-test harness for `dashclaw-realtime`.
//!
//! - [`sse`]: WHATWG-exact incremental SSE parser (`SseParser`, `SseItem`, `SseEvent`).
//! - [`sse_client`]: `SseClient` reading a live stream.
//! - [`hub`]: `TestHub` spawning the real binary.
//! - [`http`]: plain HTTP helpers, error-body and Prometheus helpers.
//! - [`auth`]: JWT / API-key helpers.
//! - [`dashclaw`]: DashClaw's session cookies, minted by its own npm packages.
//! - [`postgres`]: `TestPostgres`, a private PostgreSQL with DashClaw's `api_keys`.
//! - [`nginx`]: `TestNginx`, a private nginx running `deploy/nginx.conf`.
//! - [`publisher`]: `Publisher`, publishing with its own ids and retrying refusals.
//! - [`follower`]: `Follower`, a client following a stream across its ends, as EventSource.
//! - [`faults`]: publishers, subscribers and exact-sequence checks for fault tests.
//! - [`cluster`]: `TestCluster`, a private Redis Cluster (3 masters, 3 replicas).

pub mod auth;
pub mod backend;
pub mod cluster;
pub mod dashclaw;
pub mod envelope;
pub mod faults;
pub mod follower;
pub mod http;
pub mod hub;
pub mod nginx;
pub mod node;
pub mod postgres;
pub mod process;
pub mod publisher;
pub mod redis;
pub mod sse;
pub mod sse_client;

pub use auth::{jwt_for, make_jwt, now_unix, sha256_hex, write_api_keys_file};
pub use backend::{Backend, BackendKind};
pub use cluster::TestCluster;
pub use envelope::{assert_same_ids, cursor_key, cursor_of, delivered_envelope, id_of, str_field};
pub use follower::{Follower, StreamRecord};
pub use http::{
    client, error_code, get, get_json, header_str, metric_sum, metric_value, post_json, post_raw,
    request,
};
pub use hub::{TestHub, bin_path, free_port, run_cli, test_redis_url};
pub use nginx::TestNginx;
pub use node::{
    channel_key, node_envelope, node_event_id, node_publish_only, node_write, node_write_maxlen,
    node_xadd, stream_entries, stream_key,
};
pub use postgres::TestPostgres;
pub use process::{non_reading_stream, peak_rss_kib, rss_kib};
pub use publisher::{Accepted, PublishLog, Publisher, assert_unavailable, try_post};
pub use redis::{Resp, TestRedis};
pub use sse::{SseEvent, SseItem, SseParser};
pub use sse_client::{End, Received, SseClient};

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Shorthand for `Duration::from_millis`.
pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Shorthand for `Duration::from_secs`.
pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// True if `s` matches `^[A-Za-z0-9_-]{1,64}$` (contract org id).
pub fn is_valid_org_id(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// An org id unique per call in this test run: `<prefix>_<pid>_<n>`.
/// Characters outside `[A-Za-z0-9_-]` in `prefix` become `_`, and the prefix is
/// shortened so the result always matches `^[A-Za-z0-9_-]{1,64}$`.
pub fn unique_org(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let suffix = format!("_{}_{}", std::process::id(), n);
    let clean: String = prefix
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(64 - suffix.len())
        .collect();
    let clean = if clean.is_empty() {
        "org".to_string()
    } else {
        clean
    };
    let org = format!("{clean}{suffix}");
    assert!(is_valid_org_id(&org), "unique_org produced invalid {org:?}");
    org
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_org_is_valid_and_unique() {
        let mut seen = std::collections::HashSet::new();
        for p in ["org", "", "a b:c*{d}", &"x".repeat(200), "é"] {
            for _ in 0..50 {
                let o = unique_org(p);
                assert!(is_valid_org_id(&o), "{o:?}");
                assert!(seen.insert(o.clone()), "duplicate {o:?}");
            }
        }
        assert!(unique_org("acme").starts_with("acme_"));
        assert!(!is_valid_org_id(""));
        assert!(!is_valid_org_id("a:b"));
        assert!(!is_valid_org_id(&"a".repeat(65)));
    }
}
