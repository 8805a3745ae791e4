//! Fault injection against the Redis backend (contract sections 2, 3, 7): pub/sub connections
//! killed, the server frozen, restarted with and without persistence, down at start-up, and a
//! publish burst. Every test publishes continuously with producer ids, retrying failures with
//! the SAME id, and checks that every subscriber ends with exactly the accepted events, once,
//! in cursor order — or, where Redis really lost the data, a `realtime.resync` at the point of
//! loss with the events after it exact.

mod common;

use common::faults::{
    Accepted, Delivered, Parsed, PublishLog, Publisher, ReadyzWatch, Subscriber, assert_all_exact,
    assert_exact, assert_unavailable, assert_unready_body, delivered, subscribers, summarize,
    try_post,
};
use common::{cursor_key, str_field};

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use common::{
    Backend, Resp, SseClient, TestHub, TestRedis, ms, node_envelope, node_write_maxlen, node_xadd,
    secs, stream_entries, unique_org,
};

/// Settings that make fault detection quick enough for a test.
const FAST: &[(&str, &str)] = &[
    ("REALTIME_HEARTBEAT_SECONDS", "1"),
    ("REALTIME_REDIS_TIMEOUT_MS", "500"),
];

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

async fn redis_backend(persistent: bool) -> Backend {
    let redis = if persistent {
        TestRedis::spawn_persistent().await
    } else {
        TestRedis::spawn().await
    };
    Backend::with_redis(Some(redis))
}

fn redis_of(backend: &mut Backend) -> &mut TestRedis {
    backend.redis.as_mut().expect("a Redis backend")
}

/// Sends a command on its own connection and reads the reply in the background, so a
/// command that blocks the server (`DEBUG SLEEP`) does not block the test.
fn send_raw(port: u16, args: &[&str]) -> JoinHandle<String> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n{arg}\r\n", arg.len()).as_bytes());
    }
    tokio::spawn(async move {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect to redis");
        stream.write_all(&out).await.expect("write to redis");
        let mut reply = vec![0u8; 256];
        let n = tokio::time::timeout(secs(20), stream.read(&mut reply))
            .await
            .expect("redis reply within 20 s")
            .expect("read from redis");
        String::from_utf8_lossy(&reply[..n]).into_owned()
    })
}

/// Envelope ids in a Redis stream, oldest first, read straight from Redis.
async fn stream_ids(redis: &TestRedis, org: &str) -> Vec<Delivered> {
    stream_entries(redis, org)
        .await
        .into_iter()
        .map(|(id, cursor)| Delivered { id, cursor })
        .collect()
}

/// Number of pub/sub clients connected to Redis.
async fn pubsub_clients(redis: &TestRedis) -> usize {
    match redis.try_cmd(&["CLIENT", "LIST", "TYPE", "pubsub"]).await {
        Ok(r) => r
            .text()
            .map(|t| t.lines().filter(|l| !l.trim().is_empty()).count())
            .unwrap_or(0),
        Err(_) => 0,
    }
}

async fn wait_pubsub_clients(redis: &TestRedis, n: usize, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let got = pubsub_clients(redis).await;
        if got >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {got} of {n} hub pub/sub connections within {timeout:?}"
        );
        tokio::time::sleep(ms(50)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Pub/sub connections killed
// ---------------------------------------------------------------------------------------------

/// Killing the hubs' pub/sub connections loses the live messages published until they
/// resubscribe; each supervisor must fill that gap from the stream, without duplicates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubsub_connection_killed() {
    let backend = redis_backend(false).await;
    let (a, b) = (backend.hub(FAST).await, backend.hub(FAST).await);
    let org = unique_org("pubsub_kill");
    let redis = backend.redis.as_ref().unwrap();
    wait_pubsub_clients(redis, 2, secs(10)).await;
    let subs = subscribers(&[&a, &b], &org, 2).await;
    let publisher = Publisher::start(&a, &org);
    publisher.wait_accepted_more(20, secs(10)).await;

    for round in 0..2 {
        let killed = redis.cmd(&["CLIENT", "KILL", "TYPE", "pubsub"]).await;
        assert!(
            matches!(killed, Resp::Int(n) if n >= 2),
            "round {round}: CLIENT KILL TYPE pubsub killed {killed:?}, expected both hubs"
        );
        // Both hubs resubscribe (the observable sign of the reconnect), then publishing
        // goes on so gap fill and live delivery overlap.
        wait_pubsub_clients(redis, 2, secs(10)).await;
        publisher.wait_accepted_more(30, secs(10)).await;
    }
    assert!(
        a.wait_ready(secs(10)).await,
        "hub a not ready after the kills"
    );
    assert!(
        b.wait_ready(secs(10)).await,
        "hub b not ready after the kills"
    );

    let log = publisher.finish().await;
    assert_all_exact(subs, &org, &log).await;
}

// ---------------------------------------------------------------------------------------------
// 2. Server silent (connections stay open)
// ---------------------------------------------------------------------------------------------

/// How the server is made silent for ~5 s without closing any connection.
enum Freeze {
    /// SIGSTOP / SIGCONT.
    Signal,
    /// `DEBUG SLEEP 5` (the server blocks in one command).
    DebugSleep,
}

/// A silent server must be noticed (readyz 503 with a reason; publishes refused with 503),
/// SSE clients stay connected and get heartbeats, and afterwards every accepted event
/// arrives exactly once, in order.
async fn silent_server(freeze: Freeze) {
    let backend = redis_backend(false).await;
    let (a, b) = (backend.hub(FAST).await, backend.hub(FAST).await);
    let org = unique_org("silent");
    let redis = backend.redis.as_ref().unwrap();
    assert!(a.wait_ready(secs(10)).await, "hub a never ready");
    let subs = subscribers(&[&a, &b], &org, 2).await;
    let publisher = Publisher::start(&a, &org);
    publisher.wait_accepted_more(20, secs(10)).await;
    let watch = ReadyzWatch::start(&a);

    let frozen_at = Instant::now();
    let sleeper = match freeze {
        Freeze::Signal => {
            redis.pause(true);
            tokio::time::sleep(secs(5)).await;
            redis.pause(false);
            None
        }
        Freeze::DebugSleep => {
            let reply = send_raw(redis.port(), &["DEBUG", "SLEEP", "5"]);
            // The reply arrives when the server wakes up again.
            Some(reply)
        }
    };
    if let Some(reply) = sleeper {
        let reply = reply.await.expect("DEBUG SLEEP task");
        assert!(reply.starts_with("+OK"), "DEBUG SLEEP 5 answered {reply:?}");
    }
    let thawed_at = Instant::now();
    assert!(
        publisher.unavailable_count() > 0,
        "no publish was refused with 503 while Redis was frozen"
    );

    assert!(
        a.wait_ready(secs(15)).await,
        "hub a not ready again after the freeze; log:\n{}",
        a.log_text()
    );
    publisher.wait_accepted_more(40, secs(15)).await;
    let readyz = watch.finish().await;
    let unready: Vec<&(Instant, u16, Value)> = readyz
        .iter()
        .filter(|(t, s, _)| *s == 503 && *t >= frozen_at)
        .collect();
    assert!(
        !unready.is_empty(),
        "/readyz never said 503 while Redis was frozen: {:?}",
        readyz.iter().map(|(_, s, _)| s).collect::<Vec<_>>()
    );
    for (_, _, body) in &unready {
        assert_unready_body(body);
    }
    let reasons: HashSet<&str> = unready
        .iter()
        .filter_map(|(_, _, b)| b["reason"].as_str())
        .collect();
    eprintln!("readyz reasons while frozen: {reasons:?}");
    // The frozen server never closes the pub/sub socket: only the canary can reveal that it
    // went silent, and readyz must then blame the pub/sub side, not just slow commands.
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("pub/sub") || r.contains("canary")),
        "readyz never reported the silent pub/sub connection: {reasons:?}"
    );
    assert_eq!(
        readyz.last().map(|(_, s, _)| *s),
        Some(200),
        "readyz after recovery"
    );

    let log = publisher.finish().await;
    eprintln!(
        "publisher: {} accepted, {} refused with 503, {} transport errors, {} accepted as 200 duplicates",
        log.accepted.len(),
        log.unavailable,
        log.transport_errors,
        log.accepted.iter().filter(|a| a.status == 200).count()
    );
    let finished = assert_all_exact(subs, &org, &log).await;
    for f in &finished {
        assert!(
            f.heartbeats_between(frozen_at, thawed_at) > 0,
            "{}: no heartbeat comment while Redis was frozen",
            f.label
        );
    }
    let canary_noticed = a.log_text().contains("canary") || b.log_text().contains("canary");
    eprintln!("hub logs mention the canary: {canary_noticed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubsub_silent_detected_by_canary() {
    silent_server(Freeze::Signal).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubsub_silent_debug_sleep() {
    silent_server(Freeze::DebugSleep).await;
}

// ---------------------------------------------------------------------------------------------
// 3. Restart with persistence
// ---------------------------------------------------------------------------------------------

/// A Redis restart that keeps its data (AOF, fsync always) costs no event and no resync:
/// the hubs reconnect and fill the gap from the persisted stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_with_persistence() {
    let mut backend = redis_backend(true).await;
    let (a, b) = (backend.hub(FAST).await, backend.hub(FAST).await);
    let org = unique_org("restart_aof");
    assert!(a.wait_ready(secs(10)).await && b.wait_ready(secs(10)).await);
    let subs = subscribers(&[&a, &b], &org, 2).await;
    let publisher = Publisher::start(&a, &org);
    publisher.wait_accepted_more(20, secs(10)).await;

    redis_of(&mut backend).restart().await;
    publisher.wait_accepted_more(40, secs(20)).await;
    assert!(
        a.wait_ready(secs(15)).await && b.wait_ready(secs(15)).await,
        "hubs not ready after the restart"
    );
    publisher.wait_accepted_more(20, secs(10)).await;

    let log = publisher.finish().await;
    eprintln!(
        "publisher: {} accepted, {} refused, {} transport errors",
        log.accepted.len(),
        log.unavailable,
        log.transport_errors
    );
    assert_all_exact(subs, &org, &log).await;
}

// ---------------------------------------------------------------------------------------------
// 4. Restart without persistence (data lost)
// ---------------------------------------------------------------------------------------------

/// A Redis that comes back empty: clients get everything accepted before the loss, then one
/// `realtime.resync` (reason "unknown"), then exactly the events of the new data set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_without_persistence() {
    let mut backend = redis_backend(false).await;
    let (a, b) = (backend.hub(FAST).await, backend.hub(FAST).await);
    let org = unique_org("restart_empty");
    assert!(a.wait_ready(secs(10)).await && b.wait_ready(secs(10)).await);
    let subs = subscribers(&[&a, &b], &org, 2).await;
    let publisher = Publisher::start(&a, &org);
    publisher.wait_accepted_more(30, secs(10)).await;

    redis_of(&mut backend).kill();
    publisher.wait_refused(secs(10)).await;
    let (status, body, _) = common::get_json(&a.url("/readyz"), &[]).await;
    assert_eq!(status, 503, "readyz while Redis is down: {body}");
    assert_unready_body(&body);
    redis_of(&mut backend).start_again().await;
    assert!(
        a.wait_ready(secs(15)).await && b.wait_ready(secs(15)).await,
        "hubs not ready after Redis came back"
    );
    publisher.wait_accepted_more(40, secs(15)).await;
    let log = publisher.finish().await;

    let fresh = stream_ids(backend.redis.as_ref().unwrap(), &org).await;
    let fresh_ids: HashSet<&str> = fresh.iter().map(|d| d.id.as_str()).collect();
    let accepted_ids: HashSet<&str> = log.accepted.iter().map(|a| a.id.as_str()).collect();
    for d in &fresh {
        assert!(
            accepted_ids.contains(d.id.as_str()),
            "the new stream holds {d:?}, which the publisher never had accepted"
        );
    }
    // Acceptance order must be: events of the lost data set, then those of the new one.
    let first_fresh = log
        .accepted
        .iter()
        .position(|a| fresh_ids.contains(a.id.as_str()))
        .expect("events accepted after the restart");
    assert!(
        log.accepted[first_fresh..]
            .iter()
            .all(|a| fresh_ids.contains(a.id.as_str())),
        "an event accepted after the restart is not in the new stream"
    );
    let lost = &log.accepted[..first_fresh];
    assert!(!lost.is_empty(), "nothing was accepted before the restart");
    let want_after: Vec<Delivered> = fresh.clone();
    assert_eq!(
        delivered(&log.accepted[first_fresh..]),
        want_after,
        "the new stream vs events accepted after the restart"
    );

    let last = &log.accepted.last().unwrap().cursor;
    for sub in subs {
        let f = sub.finish_at(last).await;
        let parsed = f.parse(&org);
        let label = &f.label;
        assert_eq!(
            parsed.resyncs.len(),
            1,
            "{label}: expected exactly one realtime.resync; events {:?}",
            summarize(&f.events())
        );
        let (resync, after) = &parsed.resyncs[0];
        assert_eq!(resync["reason"], "unknown", "{label}: {resync}");
        if let Some(last_before) = parsed.before.last() {
            assert_eq!(
                resync["last_event_id"], last_before.cursor,
                "{label}: resync should name the last cursor delivered before the loss"
            );
        }
        assert_exact(&format!("{label} after resync"), after, &want_after);

        // Before the loss: the lost data set's events in order, none of the new ones; an
        // event stored but acknowledged only by the new server may appear on both sides.
        let before = &parsed.before;
        for pair in before.windows(2) {
            assert!(
                cursor_key(&pair[0].cursor) < cursor_key(&pair[1].cursor),
                "{label}: cursors not increasing before the resync: {pair:?}"
            );
        }
        let lost_by_id: HashMap<&str, &Accepted> =
            lost.iter().map(|a| (a.id.as_str(), a)).collect();
        let retried_into_new: HashMap<&str, &Accepted> = log.accepted[first_fresh..]
            .iter()
            .filter(|a| a.failures > 0)
            .map(|a| (a.id.as_str(), a))
            .collect();
        let mut expected_before: Vec<&str> = Vec::new();
        for d in before {
            if let Some(a) = lost_by_id.get(d.id.as_str()) {
                assert_eq!(
                    a.cursor, d.cursor,
                    "{label}: cursor of {} before resync",
                    d.id
                );
                expected_before.push(d.id.as_str());
            } else if retried_into_new.contains_key(d.id.as_str()) {
                eprintln!(
                    "NOTE {label}: {} was stored by the old server, its answer lost, and stored \
                     again after the restart: delivered once before and once after the resync",
                    d.id
                );
            } else {
                panic!("{label}: unexpected event before the resync: {d:?}");
            }
        }
        let lost_ids: Vec<&str> = lost.iter().map(|a| a.id.as_str()).collect();
        // What reached the client must be the lost data set in order, possibly short of a
        // tail acknowledged in the instant before the kill (its pub/sub message may die with
        // the server's buffers).
        assert!(
            lost_ids.starts_with(&expected_before),
            "{label}: events before the resync {expected_before:?} are not a prefix of those \
             accepted before the restart {lost_ids:?}"
        );
        if expected_before.len() < lost_ids.len() {
            eprintln!(
                "NOTE {label}: accepted before the restart but never delivered: {:?}",
                &lost_ids[expected_before.len()..]
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 5. Redis down at start-up
// ---------------------------------------------------------------------------------------------

/// The hub starts without Redis: it serves (healthz 200) but is not ready, refuses publishes
/// with 503 + Retry-After, and holds an SSE client open; once Redis starts, it becomes ready
/// and the waiting client gets `realtime.connected` and then every event accepted after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_at_start() {
    down_at_start().await;
}

async fn down_at_start() {
    let mut backend = redis_backend(false).await;
    redis_of(&mut backend).kill();
    let hub = backend.hub(FAST).await;
    let org = unique_org("down_at_start");

    let (status, body, _) = common::get_json(&hub.url("/readyz"), &[]).await;
    assert_eq!(status, 503, "readyz without Redis: {body}");
    assert_unready_body(&body);
    let probe = json!({"id": "evt_probe", "event": "fault.probe"});
    let (status, body, headers) = try_post(&hub.url(&format!("/v1/orgs/{org}/events")), &probe)
        .await
        .expect("publish answered");
    assert_eq!(status, 503, "publish without Redis: {body}");
    assert_unavailable(&body, &headers);

    let client = SseClient::connect_ok(&hub.url(&format!("/v1/orgs/{org}/stream")), &[]).await;
    let waiting = Subscriber::spawn(client, "waiting");
    let publisher = Publisher::start(&hub, &org);
    publisher.wait_refused(secs(10)).await;
    // Give the client time to receive anything it wrongly might while Redis is down.
    tokio::time::sleep(ms(1500)).await;
    let early = waiting.events();
    assert!(
        early.iter().all(|e| e.event.starts_with("realtime.")),
        "data events before Redis is up: {:?}",
        summarize(&early)
    );
    assert_eq!(waiting.ended(), None, "the waiting stream ended");

    redis_of(&mut backend).start_again().await;
    assert!(
        hub.wait_ready(secs(10)).await,
        "hub not ready within 10 s of Redis starting; log:\n{}",
        hub.log_text()
    );
    waiting
        .wait_for(|e| e.event == "realtime.connected", secs(15))
        .await;
    let late = Subscriber::connect(&hub, &org, "late").await;
    publisher.wait_accepted_more(40, secs(15)).await;
    let log = publisher.finish().await;
    assert_eq!(
        log.accepted.first().map(|a| a.failures > 0),
        Some(true),
        "the first event must have been refused while Redis was down"
    );

    let last = log.accepted.last().unwrap().cursor.clone();
    let f = waiting.finish_at(&last).await;
    let events = f.events();
    let connected = events
        .iter()
        .find(|e| e.event == "realtime.connected")
        .unwrap()
        .json();
    let parsed = f.parse(&org);
    assert!(parsed.resyncs.is_empty(), "waiting: unexpected resync");
    // Events accepted before the client's position (the connected cursor) were published
    // before it joined; everything after that position must arrive, exactly.
    let from = connected["cursor"].as_str().map(cursor_key);
    let want: Vec<Delivered> = delivered(&log.accepted)
        .into_iter()
        .filter(|d| from.is_none_or(|c| cursor_key(&d.cursor) > c))
        .collect();
    assert!(
        !want.is_empty(),
        "nothing published after the client joined"
    );
    assert_exact("waiting", &parsed.before, &want);

    let f = late.finish_at(&last).await;
    let parsed = f.parse(&org);
    assert!(parsed.resyncs.is_empty(), "late: unexpected resync");
    let first = parsed.before.first().expect("late client got events");
    let at = log
        .accepted
        .iter()
        .position(|a| a.id == first.id)
        .expect("late client's first event was accepted");
    assert_exact("late", &parsed.before, &delivered(&log.accepted[at..]));
}

// ---------------------------------------------------------------------------------------------
// 6. Burst
// ---------------------------------------------------------------------------------------------

/// A fast burst of batches: whatever live messages a supervisor's bounded inbox has to drop
/// are filled from the stream, so every client still gets every event once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_supervisor_inbox_overflow_fills_gap() {
    let backend = redis_backend(false).await;
    let env: Vec<(&str, &str)> = FAST
        .iter()
        .copied()
        .chain([("REALTIME_SESSION_QUEUE_BYTES", "33554432")])
        .collect();
    let (a, b) = (backend.hub(&env).await, backend.hub(&env).await);
    let org = unique_org("burst");
    assert!(a.wait_ready(secs(10)).await && b.wait_ready(secs(10)).await);
    let subs = subscribers(&[&a, &b], &org, 2).await;

    let url = a.url(&format!("/v1/orgs/{org}/events"));
    let mut accepted = Vec::new();
    for batch in 0..10u64 {
        let items: Vec<Value> = (0..500u64)
            .map(|i| {
                let n = batch * 500 + i;
                json!({"id": format!("evt_{n}"), "event": "fault.burst", "payload": {"n": n}})
            })
            .collect();
        let (status, resp, _) = try_post(&url, &Value::Array(items.clone()))
            .await
            .expect("burst publish");
        assert_eq!(status, 202, "batch {batch}: {resp}");
        let out = resp.as_array().expect("batch answer array");
        assert_eq!(out.len(), items.len());
        for (item, env) in items.iter().zip(out) {
            assert_eq!(env["id"], item["id"]);
            accepted.push(Accepted {
                id: str_field(env, "id").to_string(),
                cursor: str_field(env, "cursor").to_string(),
                status,
                failures: 0,
            });
        }
    }
    let log = PublishLog {
        accepted,
        ..PublishLog::default()
    };
    for pair in log.accepted.windows(2) {
        assert!(cursor_key(&pair[0].cursor) < cursor_key(&pair[1].cursor));
    }
    assert_all_exact(subs, &org, &log).await;
}

// ---------------------------------------------------------------------------------------------
// 7. Streams trimmed by length (DashClaw's Node publisher: XADD … MAXLEN ~ N)
// ---------------------------------------------------------------------------------------------

/// Publishes one event through the hub and returns its envelope.
async fn publish_one(hub: &TestHub, org: &str) -> Value {
    let url = hub.url(&format!("/v1/orgs/{org}/events"));
    let (status, body, _) = common::post_json(&url, &json!({"event": "first.event"}), &[]).await;
    assert_eq!(status, 202, "{body}");
    body
}

/// What a client must see when events after its position were trimmed: the events it got
/// before (exact), one `realtime.resync` (`expired`), then exactly what the stream still holds
/// after the last event before the resync, and nothing else.
fn assert_resync_then_rest(label: &str, parsed: &Parsed, before: &[Delivered], rest: &[Delivered]) {
    assert_exact(&format!("{label}: before the loss"), &parsed.before, before);
    assert_eq!(
        parsed.resyncs.len(),
        1,
        "{label}: exactly one resync where the data is gone; got {:?}",
        parsed.resyncs.iter().map(|(r, _)| r).collect::<Vec<_>>()
    );
    let (resync, after) = &parsed.resyncs[0];
    assert_eq!(resync["reason"], "expired", "{label}: {resync}");
    assert_exact(&format!("{label}: after the resync"), after, rest);
}

/// The review's reproduction: a live client and a resumer at C0; ten Node-style writes
/// `XADD … MAXLEN ~ 3` that never reach pub/sub, then the pub/sub connection is killed. The
/// gap fill finds the events after C0 trimmed: the live client gets `realtime.resync` and what
/// is left; so does a client resuming from C0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_trimmed_by_length_while_pubsub_was_down() {
    let backend = redis_backend(false).await;
    let hub = backend.hub(FAST).await;
    let redis = backend.redis.as_ref().unwrap();
    // Small radix-tree nodes, so `MAXLEN ~ 3` trims (it only drops whole nodes).
    redis
        .cmd(&["CONFIG", "SET", "stream-node-max-entries", "2"])
        .await;
    wait_pubsub_clients(redis, 1, secs(10)).await;
    let org = unique_org("trim_gap");
    let live = Subscriber::connect(&hub, &org, "live client").await;
    let first = publish_one(&hub, &org).await;
    let c0 = str_field(&first, "cursor").to_string();
    live.wait_for(|ev| ev.last_event_id == c0, secs(15)).await;
    for n in 0..10 {
        let env = node_envelope(&org, "node.write", json!({ "n": n }));
        node_xadd(redis, &org, &env, 3).await;
    }
    let rest = stream_ids(redis, &org).await;
    assert!(
        rest.len() < 10 && rest.iter().all(|e| cursor_key(&e.cursor) > cursor_key(&c0)),
        "the setup must trim past C0: stream holds {rest:?}"
    );
    let killed = redis.cmd(&["CLIENT", "KILL", "TYPE", "pubsub"]).await;
    assert!(
        matches!(killed, Resp::Int(1)),
        "CLIENT KILL answered {killed:?}"
    );
    let last = rest.last().expect("entries left").cursor.clone();
    let live = live.finish_at(&last).await;
    let first = Delivered {
        id: str_field(&first, "id").to_string(),
        cursor: c0.clone(),
    };
    assert_resync_then_rest(
        "live client",
        &live.parse(&org),
        std::slice::from_ref(&first),
        &rest,
    );

    // A resume from C0 cannot be served: `realtime.resync` first, then live events (the
    // contract's answer to a position whose successors are gone).
    let url = hub.url(&format!("/v1/orgs/{org}/stream"));
    let mut resumer = SseClient::connect_ok(&url, &[("Last-Event-ID", c0.as_str())]).await;
    let resync = resumer.expect_event(secs(15)).await;
    assert_eq!(resync.event, "realtime.resync", "{resync:?}");
    assert_eq!(resync.json()["reason"], "expired", "{resync:?}");
    assert_eq!(resync.json()["last_event_id"], c0.as_str(), "{resync:?}");
    let connected = resumer.expect_event(secs(15)).await;
    assert_eq!(connected.event, "realtime.connected", "{connected:?}");
    assert_eq!(connected.json()["replayed"], 0, "{connected:?}");
    let sentinel = publish_one(&hub, &org).await;
    let next = resumer.expect_event(secs(15)).await;
    assert_eq!(next.json()["id"], sentinel["id"], "then live: {next:?}");
}

/// DashClaw's Node publisher pattern, both halves (`XADD … MAXLEN ~ 50`, then `PUBLISH`), while
/// the hub is frozen: Redis drops the slow pub/sub subscriber (its output buffer limit), so the
/// messages it had queued are lost, and the stream keeps only the newest entries. Every client
/// ends with the exact sequence up to the loss, one `realtime.resync`, and exactly what the
/// stream still holds; never a silent gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_publisher_trims_while_the_hub_is_frozen() {
    let backend = redis_backend(false).await;
    let hub = backend.hub(FAST).await;
    let redis = backend.redis.as_ref().unwrap();
    redis
        .cmd(&["CONFIG", "SET", "stream-node-max-entries", "10"])
        .await;
    redis
        .cmd(&[
            "CONFIG",
            "SET",
            "client-output-buffer-limit",
            "pubsub 64kb 0 0",
        ])
        .await;
    wait_pubsub_clients(redis, 1, secs(10)).await;
    let org = unique_org("node_trim");
    let live = Subscriber::connect(&hub, &org, "live client").await;
    let first = publish_one(&hub, &org).await;
    let c0 = str_field(&first, "cursor").to_string();
    live.wait_for(|ev| ev.last_event_id == c0, secs(15)).await;

    assert!(hub.signal(libc::SIGSTOP), "hub stopped");
    let pad = "x".repeat(8000);
    let mut written = vec![Delivered {
        id: str_field(&first, "id").to_string(),
        cursor: c0.clone(),
    }];
    // Far more than the kernel's socket buffers hold, so Redis's own limit is reached.
    for n in 0..4000 {
        let env = node_envelope(&org, "node.write", json!({ "n": n, "pad": pad }));
        let stored = node_write_maxlen(redis, &org, &env, 50).await;
        written.push(Delivered {
            id: str_field(&stored, "id").to_string(),
            cursor: str_field(&stored, "cursor").to_string(),
        });
    }
    let pubsub = redis.cmd(&["CLIENT", "LIST", "TYPE", "pubsub"]).await;
    assert!(
        pubsub.text().unwrap_or_default().trim().is_empty(),
        "Redis must have dropped the frozen subscriber: {pubsub:?}"
    );
    assert!(hub.signal(libc::SIGCONT), "hub continued");
    let rest = stream_ids(redis, &org).await;
    let last = written.last().expect("written").cursor.clone();
    assert_eq!(rest.last().map(|e| e.cursor.clone()), Some(last.clone()));

    let live = live.finish_at(&last).await;
    let parsed = live.parse(&org);
    // Whatever reached the hub before Redis dropped it is a prefix of what was written.
    let prefix = &written[..parsed.before.len().min(written.len())];
    let resumed_from = parsed.before.last().map(|d| cursor_key(&d.cursor));
    let rest_after: Vec<Delivered> = rest
        .iter()
        .filter(|d| Some(cursor_key(&d.cursor)) > resumed_from)
        .cloned()
        .collect();
    assert!(
        parsed.before.len() < written.len() - rest.len(),
        "the fault must lose events: the hub got {} of {} before the drop",
        parsed.before.len(),
        written.len()
    );
    assert_resync_then_rest("live client", &parsed, prefix, &rest_after);
}
