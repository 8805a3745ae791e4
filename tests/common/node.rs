#![allow(dead_code)]
//! DashClaw's Node publisher, reproduced command for command: `XADD … MAXLEN ~ N * data
//! <envelope without cursor>`, then `PUBLISH` of the envelope with its cursor.

use serde_json::{Value, json};

use super::redis::{Resp, TestRedis};

/// How many entries DashClaw's Node publisher keeps (`REALTIME_REPLAY_MAX_EVENTS`).
pub const NODE_MAXLEN: usize = 1000;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `evt_<uuid>` as the Node app makes them (not a ULID: no time hint for the lookup).
pub fn node_event_id() -> String {
    let h = format!("{:032x}", ulid::Ulid::generate().0.reverse_bits());
    format!(
        "evt_{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// An envelope as the Node app builds it (`new Date().toISOString()` timestamp).
pub fn node_envelope(org: &str, event: &str, payload: Value) -> Value {
    let ms = now_ms();
    let secs = ms / 1000;
    let days = secs / 86_400;
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let rem = secs % 86_400;
    let timestamp = format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        ms % 1000
    );
    json!({
        "id": node_event_id(),
        "org_id": org,
        "event": event,
        "timestamp": timestamp,
        "version": "v1",
        "payload": payload,
    })
}

/// The org's stream key under the default prefix.
pub fn stream_key(org: &str) -> String {
    format!("dashclaw:org:{org}:stream")
}

/// The org's channel under the default prefix.
pub fn channel_key(org: &str) -> String {
    format!("dashclaw:org:{org}:events")
}

/// `XADD … MAXLEN ~ maxlen`: the stream half of a Node write; returns the cursor.
pub async fn node_xadd(redis: &TestRedis, org: &str, env: &Value, maxlen: usize) -> String {
    let reply = redis
        .cmd(&[
            "XADD",
            &stream_key(org),
            "MAXLEN",
            "~",
            &maxlen.to_string(),
            "*",
            "data",
            &env.to_string(),
        ])
        .await;
    reply
        .text()
        .unwrap_or_else(|| panic!("XADD answered {reply:?}"))
}

/// Writes like the Node app: XADD (MAXLEN ~ `maxlen`) then a separate PUBLISH with the
/// cursor. Returns the envelope as it must be delivered (with its cursor).
pub async fn node_write_maxlen(redis: &TestRedis, org: &str, env: &Value, maxlen: usize) -> Value {
    let cursor = node_xadd(redis, org, env, maxlen).await;
    let mut with = env.clone();
    with["cursor"] = json!(cursor);
    let reply = redis
        .cmd(&["PUBLISH", &channel_key(org), &with.to_string()])
        .await;
    assert!(matches!(reply, Resp::Int(_)), "PUBLISH answered {reply:?}");
    with
}

/// [`node_write_maxlen`] with DashClaw's default MAXLEN.
pub async fn node_write(redis: &TestRedis, org: &str, env: &Value) -> Value {
    node_write_maxlen(redis, org, env, NODE_MAXLEN).await
}

/// A pub/sub message alone (no stream entry), as a producer that could not write the stream.
pub async fn node_publish_only(redis: &TestRedis, org: &str, message: &str) {
    let reply = redis.cmd(&["PUBLISH", &channel_key(org), message]).await;
    assert!(matches!(reply, Resp::Int(_)), "PUBLISH answered {reply:?}");
}

/// Envelope ids and cursors in the org's stream, oldest first, straight from Redis.
pub async fn stream_entries(redis: &TestRedis, org: &str) -> Vec<(String, String)> {
    let reply = redis.cmd(&["XRANGE", &stream_key(org), "-", "+"]).await;
    let Resp::Array(Some(entries)) = reply else {
        return Vec::new();
    };
    entries
        .iter()
        .filter_map(|entry| {
            let Resp::Array(Some(parts)) = entry else {
                return None;
            };
            let cursor = parts.first()?.text()?;
            let Resp::Array(Some(fields)) = parts.get(1)? else {
                return None;
            };
            let data: Value = serde_json::from_str(&fields.get(1)?.text()?).ok()?;
            Some((data["id"].as_str()?.to_owned(), cursor))
        })
        .collect()
}
