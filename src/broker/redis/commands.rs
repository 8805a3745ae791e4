//! Everything the Redis backend does on its command connection: the atomic publish script
//! (with an optional `WAIT` for replicas), stream reads and lookups, the data-set epoch and
//! the canary. The same code serves one server and a cluster.

use std::sync::Arc;

use redis::{AsyncCommands, Value};

use super::connection::Connection;
use super::health::RedisHealth;
use super::invalid::InvalidEvents;
use super::keys::{KeyScheme, Keys};
use crate::broker::{BrokerError, Loss, Page, PublishOutcome, Resolution};
use crate::envelope::{Cursor, NewEvent, ResumePosition, StoredEvent, Topic, now_ms};
use crate::recovery::{classify_cursor, expired_or_unknown, loss_at_missing};

/// The publish script's text with its publish command and what a duplicate also does.
macro_rules! publish_script {
    ($publish:literal, $on_duplicate:literal) => {
        concat!(
            r#"
local results = {}
local origins = ''
local data_at = 3
if string.sub(ARGV[3] or '{', 1, 1) ~= '{' then
  origins = ARGV[3]
  data_at = 4
end
for i = data_at, #ARGV do
  local id_key = KEYS[i - data_at + 3]
  local data = ARGV[i]
  local first = nil
  if string.byte(origins, i - data_at + 1) ~= 104 then
    first = redis.call('GET', id_key)
  end
  local duplicate = nil
  if first then
    local entry = redis.call('XRANGE', KEYS[1], first, first)
    if entry[1] then
      duplicate = {0, first, entry[1][2][2]}
"#,
            $on_duplicate,
            r#"    end
  end
  if duplicate then
    results[#results + 1] = duplicate
  else
    local cursor = redis.call('XADD', KEYS[1], 'MINID', '~', ARGV[1], '*', 'data', data)
    redis.call('SET', id_key, cursor, 'PX', ARGV[2])
    redis.call('"#,
            $publish,
            r#"', KEYS[2], string.sub(data, 1, -2) .. ',"cursor":"' .. cursor .. '"}')
    results[#results + 1] = {1, cursor}
  end
end
return results
"#
        )
    };
}

/// The publish script: for each event, skip it if its id was stored within the window,
/// else XADD (trimming by MINID) and PUBLISH the envelope with its cursor. One call is
/// atomic, so an event is in both the stream and the channel or in neither.
///
/// KEYS: stream, channel, then one idempotency key per event.
/// ARGV: minid, window ms, optionally one letter per event (`h`: an id the hub generated just
/// now, which cannot be stored yet, so no `GET`; `p`: the producer's id, looked up; left out,
/// every id is looked up), then one cursor-less envelope JSON per event.
/// Returns per event `{1, cursor}` (stored) or `{0, cursor, data}` (duplicate).
pub const PUBLISH_SCRIPT: &str = publish_script!("PUBLISH", "");

/// The publish script of cluster mode: the same, with `SPUBLISH` to the topic's shard
/// channel (declared in KEYS, so a channel outside the keys' slot is refused before any
/// write), and a duplicate rewrites its idempotency key unchanged: that write makes a
/// following `WAIT` also cover the first copy, which another connection may have written.
pub const CLUSTER_PUBLISH_SCRIPT: &str = publish_script!(
    "SPUBLISH",
    "      redis.call('SET', id_key, first, 'KEEPTTL')\n"
);

/// Entries scanned at most to find an envelope id that has no idempotency key.
const MAX_ID_SCAN: usize = 20_000;
/// Bytes of entries read at most by one such scan.
const MAX_ID_SCAN_BYTES: usize = 8 << 20;
/// Page size of id scans (bounds the bytes held at once).
const ID_SCAN_PAGE: usize = 100;
/// Id scans running at once per instance; a resume that finds none free is answered as an
/// unknown position (`realtime.resync`, `unknown`) rather than queued.
pub const MAX_CONCURRENT_ID_SCANS: usize = 2;

fn unavailable(error: redis::RedisError) -> BrokerError {
    BrokerError::Unavailable(error.to_string())
}

/// The command connection and what runs on it.
pub struct Commands {
    keys: Keys,
    window_ms: u64,
    max_bytes: usize,
    wait: WaitForReplicas,
    connection: Connection,
    script: redis::Script,
    health: Arc<RedisHealth>,
    invalid: Arc<InvalidEvents>,
    id_scans: tokio::sync::Semaphore,
}

/// What the command side needs to know besides its connection.
pub struct CommandSettings {
    /// Key and channel names.
    pub keys: Keys,
    /// Replay window in milliseconds.
    pub window_ms: u64,
    /// Largest envelope accepted (`REALTIME_MAX_PAYLOAD_BYTES`), also for what Redis holds.
    pub max_bytes: usize,
    /// Replicas that must confirm a publish before it is acknowledged.
    pub wait: WaitForReplicas,
}

/// `REALTIME_REDIS_WAIT_REPLICAS`: a publish is acknowledged only once this many replicas
/// of its master confirmed it (`WAIT`, right after the script on the same connection).
#[derive(Debug, Clone, Copy, Default)]
pub struct WaitForReplicas {
    /// Replicas to wait for; 0 does not wait.
    pub replicas: usize,
    /// How long the master waits for them (half the Redis timeout, so the answer arrives
    /// within the connection's own timeout).
    pub timeout_ms: u64,
}

impl Commands {
    /// Commands over `connection` (self-reconnecting, to one server or a cluster).
    pub fn new(
        settings: CommandSettings,
        connection: Connection,
        health: Arc<RedisHealth>,
        invalid: Arc<InvalidEvents>,
    ) -> Self {
        let script = match settings.keys.scheme() {
            KeyScheme::Single => PUBLISH_SCRIPT,
            KeyScheme::Cluster => CLUSTER_PUBLISH_SCRIPT,
        };
        Self {
            keys: settings.keys,
            window_ms: settings.window_ms,
            max_bytes: settings.max_bytes,
            wait: settings.wait,
            connection,
            script: redis::Script::new(script),
            health,
            invalid,
            id_scans: tokio::sync::Semaphore::new(MAX_CONCURRENT_ID_SCANS),
        }
    }

    fn oldest_ms(&self) -> u64 {
        now_ms().saturating_sub(self.window_ms)
    }

    /// The connection, for the cluster's topology.
    pub fn connection(&self) -> &Connection {
        &self.connection
    }

    /// The newest cursor of the topic's stream.
    pub async fn head(&self, topic: &Topic) -> Result<Option<Cursor>, BrokerError> {
        let mut conn = self.connection.clone();
        let result: redis::RedisResult<redis::streams::StreamRangeReply> = conn
            .xrevrange_count(self.keys.stream(topic), "+", "-", 1)
            .await;
        self.health.note_command(&result);
        let reply = result.map_err(unavailable)?;
        Ok(reply.ids.first().and_then(|entry| entry.id.parse().ok()))
    }

    async fn xrange(
        &self,
        topic: &Topic,
        start: String,
        limit: usize,
    ) -> Result<Vec<(Cursor, Arc<StoredEvent>)>, BrokerError> {
        let mut conn = self.connection.clone();
        let result: redis::RedisResult<redis::streams::StreamRangeReply> = conn
            .xrange_count(self.keys.stream(topic), start, "+", limit)
            .await;
        self.health.note_command(&result);
        let reply = result.map_err(unavailable)?;
        Ok(reply
            .ids
            .into_iter()
            .filter_map(|entry| {
                let cursor: Cursor = entry.id.parse().ok()?;
                let data: Vec<u8> = entry.get("data")?;
                match StoredEvent::from_wire(&data, Some(cursor), topic, self.max_bytes) {
                    Ok(event) => Some((cursor, Arc::new(event))),
                    Err(error) => {
                        self.invalid.dropped(topic, "stream", &error);
                        None
                    }
                }
            })
            .collect())
    }

    /// Up to `limit` events strictly after `after` inside the window, and whether events
    /// after `after` are gone. The read starts at `after` itself: a stream is only ever
    /// trimmed from its oldest end, so while `after` is still there nothing after it is
    /// missing; once it is not, whatever followed it may be gone too.
    pub async fn read_after(
        &self,
        topic: &Topic,
        after: Cursor,
        limit: usize,
    ) -> Result<Page, BrokerError> {
        let oldest = self.oldest_ms();
        if after == Cursor::default() || after.ms < oldest {
            // From the start of the window: entries older than it are skipped whatever the
            // producer's trimming. A position before the window has lost what followed it
            // if the stream ever held anything after it.
            let events = self.xrange(topic, format!("{oldest}-0"), limit).await?;
            let lost = (after != Cursor::default() && self.has_entries_after(topic, after).await?)
                .then_some(Loss::Trimmed);
            return Ok(page(events, lost, limit, |_| true));
        }
        let events = self.xrange(topic, after.to_string(), limit + 1).await?;
        let present = events.first().is_some_and(|(c, _)| *c == after);
        let lost = if present {
            None
        } else {
            self.loss_at(topic, after, events.last().map(|(c, _)| *c))
                .await?
        };
        let events = events
            .into_iter()
            .filter(|(c, _)| *c > after)
            .take(limit)
            .collect();
        Ok(page(events, lost, limit, |e| e.time_ms >= oldest))
    }

    /// What `after` missing from the stream means (`recovery::loss_at_missing`);
    /// `read_newest` is the newest entry a read after it found, if any.
    async fn loss_at(
        &self,
        topic: &Topic,
        after: Cursor,
        read_newest: Option<Cursor>,
    ) -> Result<Option<Loss>, BrokerError> {
        let newest = match read_newest {
            Some(newest) => Some(newest),
            None => self.newest(topic).await?,
        };
        let before = if newest.is_some_and(|newest| newest > after) {
            self.entry_before(topic, after).await?
        } else {
            None
        };
        Ok(loss_at_missing(after, newest, before))
    }

    /// The newest entry still in the stream before `after`.
    async fn entry_before(
        &self,
        topic: &Topic,
        after: Cursor,
    ) -> Result<Option<Cursor>, BrokerError> {
        let mut conn = self.connection.clone();
        let result: redis::RedisResult<redis::streams::StreamRangeReply> = conn
            .xrevrange_count(self.keys.stream(topic), format!("({after}"), "-", 1)
            .await;
        self.health.note_command(&result);
        let reply = result.map_err(unavailable)?;
        Ok(reply.ids.first().and_then(|entry| entry.id.parse().ok()))
    }

    /// Whether the stream holds (or held) an entry newer than `after`.
    async fn has_entries_after(&self, topic: &Topic, after: Cursor) -> Result<bool, BrokerError> {
        Ok(self
            .newest(topic)
            .await?
            .is_some_and(|newest| newest > after))
    }

    /// The newest id the stream ever had (`last-generated-id`), whether or not it was trimmed.
    async fn newest(&self, topic: &Topic) -> Result<Option<Cursor>, BrokerError> {
        Ok(self.stream_info(topic).await?.and_then(|info| info.newest))
    }

    async fn stream_info(&self, topic: &Topic) -> Result<Option<StreamInfo>, BrokerError> {
        let mut conn = self.connection.clone();
        let result: redis::RedisResult<Value> = redis::cmd("XINFO")
            .arg("STREAM")
            .arg(self.keys.stream(topic))
            .query_async(&mut conn)
            .await;
        match result {
            Ok(value) => {
                self.health.note_command(&Ok::<(), redis::RedisError>(()));
                Ok(Some(StreamInfo::parse(value)))
            }
            Err(e)
                if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError)
                    || e.to_string().contains("no such key") =>
            {
                Ok(None)
            }
            Err(e) => {
                self.health.note_command(&Err::<(), _>(e.clone()));
                Err(unavailable(e))
            }
        }
    }

    async fn find_event_id(&self, topic: &Topic, id: &str) -> Result<Option<Cursor>, BrokerError> {
        let mut conn = self.connection.clone();
        let result: redis::RedisResult<Option<String>> =
            conn.get(self.keys.id_key(topic, id)).await;
        self.health.note_command(&result);
        if let Some(cursor) = result.map_err(unavailable)?.and_then(|c| c.parse().ok()) {
            return Ok(Some(cursor));
        }
        // Ids written by other producers have no idempotency key: scan the window, from the
        // id's own ULID time when it has one, bounded by entries, bytes and concurrent scans.
        let Ok(_permit) = self.id_scans.try_acquire() else {
            tracing::debug!(%topic, "id scans busy; the resume is answered as unknown");
            return Ok(None);
        };
        let ulid_ms = id
            .strip_prefix("evt_")
            .and_then(|s| ulid::Ulid::from_string(s).ok())
            .map(|u| u.timestamp_ms().saturating_sub(1000));
        let oldest = self.oldest_ms();
        let mut after = Cursor::new(
            ulid_ms.unwrap_or(oldest).max(oldest).saturating_sub(1),
            u64::MAX,
        );
        let (mut scanned, mut bytes) = (0, 0);
        while scanned < MAX_ID_SCAN && bytes < MAX_ID_SCAN_BYTES {
            let page = self.read_after(topic, after, ID_SCAN_PAGE).await?;
            if let Some(found) = page.events.iter().find(|e| e.id() == id) {
                return Ok(found.cursor());
            }
            match page.events.last().and_then(|e| e.cursor()) {
                Some(last) if page.full => after = last,
                _ => break,
            }
            scanned += page.events.len();
            bytes += page.events.iter().map(|e| e.size()).sum::<usize>();
        }
        Ok(None)
    }

    /// Where a client's resume position lands in the topic's stream.
    pub async fn resolve(
        &self,
        topic: &Topic,
        position: &ResumePosition,
    ) -> Result<Resolution, BrokerError> {
        let oldest = self.oldest_ms();
        let cursor = match position {
            ResumePosition::Cursor(cursor) => *cursor,
            ResumePosition::EventId(id) => match self.find_event_id(topic, id).await? {
                Some(cursor) => cursor,
                None => return Ok(expired_or_unknown(position, oldest)),
            },
            ResumePosition::Unrecognized(_) => return Ok(Resolution::Unknown),
        };
        let Some(info) = self.stream_info(topic).await? else {
            return Ok(expired_or_unknown(&ResumePosition::Cursor(cursor), oldest));
        };
        // Trimming only removes the oldest entries: events after the cursor are gone when the
        // stream's first entry is past it (or, empty, it held something newer), or when an
        // entry after it was deleted. Redis 7.0 leaves `max-deleted-entry-id` at 0-0 after a
        // length trim, so the first entry is what tells.
        let lost_after = info.max_deleted.is_some_and(|d| d > cursor)
            || match info.first {
                Some(first) => first > cursor,
                None => info.newest.is_some_and(|newest| newest > cursor),
            };
        Ok(classify_cursor(cursor, info.newest, lost_after, oldest))
    }

    /// Runs the publish script for a batch: all stored (or found as duplicates), or an error.
    pub async fn publish(
        &self,
        topic: &Topic,
        events: &[NewEvent],
    ) -> Result<Vec<PublishOutcome>, BrokerError> {
        let minid = format!("{}-0", self.oldest_ms());
        let mut invocation = self.script.prepare_invoke();
        invocation
            .key(self.keys.stream(topic))
            .key(self.keys.channel(topic));
        for event in events {
            invocation.key(self.keys.id_key(topic, &event.id));
        }
        let origins: String = events
            .iter()
            .map(|e| if e.fresh_id { 'h' } else { 'p' })
            .collect();
        invocation
            .arg(minid)
            .arg(self.window_ms.max(1))
            .arg(origins);
        for event in events {
            invocation.arg(&event.data_json);
        }
        let (replies, acked) = if self.wait.replicas == 0 {
            let mut conn = self.connection.clone();
            let result: redis::RedisResult<Vec<Vec<Value>>> =
                invocation.invoke_async(&mut conn).await;
            self.health.note_command(&result);
            (result.map_err(unavailable)?, 0)
        } else {
            self.invoke_and_wait(&invocation).await?
        };
        if replies.len() != events.len() {
            return Err(BrokerError::Protocol(
                "publish script returned the wrong count".into(),
            ));
        }
        let outcomes = events
            .iter()
            .zip(replies)
            .map(|(event, reply)| publish_outcome(topic, event, &reply, self.max_bytes))
            .collect::<Result<Vec<_>, _>>()?;
        if acked < self.wait.replicas as i64 {
            let cursors: Vec<String> = outcomes
                .iter()
                .filter_map(|o| o.event().cursor().map(|c| c.to_string()))
                .collect();
            return Err(BrokerError::NotReplicated {
                cursors: cursors.join(","),
                acked,
                wanted: self.wait.replicas,
                timeout_ms: self.wait.timeout_ms,
            });
        }
        Ok(outcomes)
    }

    /// The script and `WAIT` in one pipeline: both go to the topic's master over the same
    /// connection, back to back, so `WAIT` covers this write. A master that does not know
    /// the script yet (a replica just promoted: scripts are not replicated) gets it loaded
    /// and the pipeline once more. Returns the script's replies and how many replicas
    /// confirmed.
    async fn invoke_and_wait(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<(Vec<Vec<Value>>, i64), BrokerError> {
        let mut pipeline = redis::pipe();
        pipeline
            .invoke_script(invocation)
            .cmd("WAIT")
            .arg(self.wait.replicas)
            .arg(self.wait.timeout_ms);
        let mut conn = self.connection.clone();
        let mut result: redis::RedisResult<(Vec<Vec<Value>>, i64)> =
            pipeline.query_async(&mut conn).await;
        if matches!(&result, Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript))
        {
            result = match invocation.load_async(&mut conn).await {
                Ok(_) => pipeline.query_async(&mut conn).await,
                Err(error) => Err(error),
            };
        }
        self.health.note_command(&result);
        result.map_err(unavailable)
    }

    /// Sets the data-set epoch if missing and returns it: a Redis that restarted empty
    /// answers a new one.
    pub async fn epoch(&self) -> redis::RedisResult<String> {
        let mut conn = self.connection.clone();
        let key = self.keys.epoch();
        let fresh = ulid::Ulid::generate().to_string();
        let _: bool = conn.set_nx(&key, &fresh).await?;
        conn.get(&key).await
    }

    /// Publishes one of this instance's canaries (to its shard, in cluster mode).
    pub async fn publish_canary(&self, channel: &str) {
        let command = match self.keys.scheme() {
            KeyScheme::Single => "PUBLISH",
            KeyScheme::Cluster => "SPUBLISH",
        };
        let mut conn = self.connection.clone();
        let result: redis::RedisResult<i64> = redis::cmd(command)
            .arg(channel)
            .arg(now_ms().to_string())
            .query_async(&mut conn)
            .await;
        self.health.note_command(&result);
    }
}

/// A page of `events` (read with `limit`), keeping those `inside` the window.
fn page(
    events: Vec<(Cursor, Arc<StoredEvent>)>,
    lost: Option<Loss>,
    limit: usize,
    inside: impl Fn(&StoredEvent) -> bool,
) -> Page {
    let full = events.len() >= limit;
    Page {
        events: events
            .into_iter()
            .map(|(_, e)| e)
            .filter(|e| inside(e))
            .collect(),
        lost,
        full,
    }
}

/// One event's reply from the publish script: `{1, cursor}` or `{0, cursor, first data}`.
fn publish_outcome(
    topic: &Topic,
    event: &NewEvent,
    reply: &[Value],
    max_bytes: usize,
) -> Result<PublishOutcome, BrokerError> {
    let text = |v: &Value| -> Option<String> { redis::from_redis_value_ref::<String>(v).ok() };
    let stored = reply
        .first()
        .and_then(|v| redis::from_redis_value_ref::<i64>(v).ok())
        == Some(1);
    let cursor: Cursor = reply
        .get(1)
        .and_then(text)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| BrokerError::Protocol("publish script returned no cursor".into()))?;
    if stored {
        return Ok(PublishOutcome::Stored(Arc::new(StoredEvent::from_new(
            event, cursor,
        ))));
    }
    let data = reply
        .get(2)
        .and_then(text)
        .ok_or_else(|| BrokerError::Protocol("publish script returned no data".into()))?;
    let first = StoredEvent::from_wire(data.as_bytes(), Some(cursor), topic, max_bytes)
        .map_err(|e| BrokerError::Protocol(format!("stored duplicate: {e}")))?;
    Ok(PublishOutcome::Duplicate(Arc::new(first)))
}

/// The fields of `XINFO STREAM` the hub reads.
struct StreamInfo {
    /// The oldest entry still in the stream.
    first: Option<Cursor>,
    /// `last-generated-id`: the newest entry ever added, trimmed or not.
    newest: Option<Cursor>,
    max_deleted: Option<Cursor>,
}

impl StreamInfo {
    fn parse(value: Value) -> Self {
        let mut info = StreamInfo {
            first: None,
            newest: None,
            max_deleted: None,
        };
        let cursor = |value: Value| -> Option<Cursor> {
            redis::from_redis_value::<String>(value)
                .ok()
                .and_then(|s| s.parse().ok())
                .filter(|c: &Cursor| *c != Cursor::default())
        };
        let entry_id = |value: Value| -> Option<Cursor> {
            match value {
                Value::Array(entry) => entry
                    .first()
                    .and_then(|id| redis::from_redis_value_ref::<String>(id).ok())
                    .and_then(|s| s.parse().ok()),
                _ => None,
            }
        };
        let pairs: Vec<(String, Value)> = match value {
            Value::Array(items) => items
                .chunks(2)
                .filter_map(|pair| match pair {
                    [k, v] => redis::from_redis_value_ref::<String>(k)
                        .ok()
                        .map(|k| (k, v.clone())),
                    _ => None,
                })
                .collect(),
            Value::Map(items) => items
                .into_iter()
                .filter_map(|(k, v)| redis::from_redis_value::<String>(k).ok().map(|k| (k, v)))
                .collect(),
            _ => Vec::new(),
        };
        for (key, value) in pairs {
            match key.as_str() {
                "max-deleted-entry-id" => info.max_deleted = cursor(value),
                "last-generated-id" => info.newest = cursor(value),
                "first-entry" => info.first = entry_id(value),
                _ => {}
            }
        }
        info
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The single-server script is the contract's (PROTOCOL 7.2), byte for byte: read from
    /// the document itself, so the two cannot drift apart.
    #[test]
    fn the_single_server_script_is_unchanged() {
        let protocol = include_str!("../../../docs/PROTOCOL.md");
        let section = &protocol[protocol.find("### 7.2").expect("section 7.2")..];
        let block = &section[section.find("```lua\n").expect("lua block") + "```lua".len()..];
        let contract = &block[..block.find("```").expect("end of the lua block")];
        assert_eq!(PUBLISH_SCRIPT, contract);
        let cluster = contract.replace("'PUBLISH'", "'SPUBLISH'").replace(
            "entry[1][2][2]}\n",
            "entry[1][2][2]}\n      redis.call('SET', id_key, first, 'KEEPTTL')\n",
        );
        assert_eq!(CLUSTER_PUBLISH_SCRIPT, cluster);
    }
}
