//! Redis backend across several hub instances (contract sections 2, 3, 4): exactly-once
//! ordered fan-out whoever publishes, resume on another instance, interoperability with
//! DashClaw's Node writer, few Redis connections for many orgs, and the same HTTP API on
//! both backends.

mod common;

use common::{assert_same_ids, cursor_key, cursor_of, delivered_envelope, id_of};
use common::{channel_key, node_envelope, node_publish_only, node_write, stream_key};

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

use futures_util::future::join_all;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use common::{
    Backend, BackendKind, Resp, SseClient, SseEvent, SseItem, SseParser, TestHub, post_json,
    unique_org,
};
use dashclaw_realtime::envelope::{OrgId, PublishRequest, Topic, now_ms};

/// Upper bound for anything the hub should deliver; never a speed expectation.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);

/// A producer-chosen id, so a retried publish can never store the event twice.
fn fresh_id() -> String {
    format!("evt_{}", ulid::Ulid::generate())
}

/// POSTs `body` to the org and returns the stored envelopes. A 503 (Redis briefly
/// unusable) is retried with the same body, hence the same ids; 202 and 200 (duplicate
/// of the retried request) both mean accepted.
async fn publish(base: &str, org: &str, body: &Value) -> Vec<Value> {
    let url = format!("{base}/v1/orgs/{org}/events");
    let deadline = Instant::now() + DELIVERY_TIMEOUT;
    loop {
        let (status, resp, _) = post_json(&url, body, &[]).await;
        if status == 503 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        assert!(
            status == 202 || status == 200,
            "POST {url} {body}: {status} {resp}"
        );
        return match resp {
            Value::Array(out) => out,
            out @ Value::Object(_) => vec![out],
            other => panic!("POST {url} {body}: unexpected answer {other}"),
        };
    }
}

fn assert_connected(ev: &SseEvent, org: &str, backend: &str, replayed: u64) {
    assert_eq!(
        ev.event, "realtime.connected",
        "expected realtime.connected: {ev:?}"
    );
    assert!(!ev.had_id_field, "control event with an id: line: {ev:?}");
    let data = ev.json();
    assert_eq!(data["org_id"], json!(org), "{data}");
    assert_eq!(data["backend"], json!(backend), "{data}");
    assert_eq!(data["replayed"], json!(replayed), "{data}");
}

fn stream_url(base: &str, org: &str) -> String {
    format!("{base}/v1/orgs/{org}/stream")
}

/// A live subscriber past its `realtime.connected` (no resume position, so nothing before it).
async fn open_live(base: &str, org: &str) -> SseClient {
    let mut c = SseClient::connect_ok(&stream_url(base, org), &[]).await;
    let ev = c.expect_event(DELIVERY_TIMEOUT).await;
    assert_connected(&ev, org, "redis", 0);
    c
}

fn assert_strictly_increasing(label: &str, cursors: &[String]) {
    for pair in cursors.windows(2) {
        assert!(
            cursor_key(&pair[0]) < cursor_key(&pair[1]),
            "{label}: cursors not strictly increasing: {} then {} in {cursors:?}",
            pair[0],
            pair[1]
        );
    }
}

// ---------------------------------------------------------------------------------------
// An in-process hub: the `Publish` API only exists inside a process embedding the hub.

enum InProcCommand {
    Publish {
        org: String,
        event: String,
        id: String,
        payload: Value,
        reply: oneshot::Sender<Result<(bool, Value), String>>,
    },
    Stop,
}

/// A hub started with `server::start` on its own actix `System` thread, driven by commands.
struct InProcessHub {
    tx: mpsc::UnboundedSender<InProcCommand>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl InProcessHub {
    async fn start(redis_url: String, key_prefix: Option<String>) -> InProcessHub {
        use dashclaw_realtime::config::{BackendKind as HubBackend, Config};
        let (tx, mut rx) = mpsc::unbounded_channel::<InProcCommand>();
        let (ready_tx, ready_rx) = oneshot::channel::<Result<SocketAddr, String>>();
        let thread = std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let defaults = Config::default();
                let config = Config {
                    backend: HubBackend::Redis,
                    redis_url: Some(redis_url),
                    key_prefix: key_prefix.unwrap_or(defaults.key_prefix.clone()),
                    bind: "127.0.0.1:0".parse().unwrap(),
                    shutdown_grace: Duration::from_secs(2),
                    ..defaults
                };
                let running = match dashclaw_realtime::server::start(
                    config,
                    dashclaw_realtime::auth::Auth::off(),
                ) {
                    Ok(running) => running,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(running.addr));
                let hub = running.hub.clone();
                let handle = running.server_handle();
                let server = actix_web::rt::spawn(running.run());
                while let Some(command) = rx.recv().await {
                    match command {
                        InProcCommand::Publish {
                            org,
                            event,
                            id,
                            payload,
                            reply,
                        } => {
                            let hub = hub.clone();
                            actix_web::rt::spawn(async move {
                                let topic = Topic::Org(OrgId::parse(&org).expect("valid org"));
                                let request = PublishRequest::new(event, payload).with_id(id);
                                let result = hub
                                    .publish_one(topic, request)
                                    .await
                                    .map(|outcome| {
                                        (
                                            outcome.is_duplicate(),
                                            serde_json::to_value(outcome.event().envelope())
                                                .expect("envelope serializes"),
                                        )
                                    })
                                    .map_err(|e| e.to_string());
                                let _ = reply.send(result);
                            });
                        }
                        InProcCommand::Stop => break,
                    }
                }
                dashclaw_realtime::server::begin_shutdown(&hub, &handle).await;
                let _ = server.await;
                actix_web::rt::System::current().stop();
            });
        });
        match tokio::time::timeout(Duration::from_secs(15), ready_rx).await {
            Ok(Ok(Ok(_addr))) => {}
            other => panic!("in-process hub did not start: {other:?}"),
        }
        InProcessHub {
            tx,
            thread: Some(thread),
        }
    }

    /// Publishes one event in process; a backend error is retried with the same id.
    async fn publish(&self, org: &str, event: &str, id: &str, payload: Value) -> Value {
        let deadline = Instant::now() + DELIVERY_TIMEOUT;
        loop {
            let (reply, answer) = oneshot::channel();
            self.tx
                .send(InProcCommand::Publish {
                    org: org.to_string(),
                    event: event.to_string(),
                    id: id.to_string(),
                    payload: payload.clone(),
                    reply,
                })
                .expect("in-process hub thread is gone");
            match answer.await.expect("in-process hub dropped the reply") {
                Ok((_duplicate, env)) => return env,
                Err(e) if e.contains("unavailable") && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("in-process publish to {org} failed: {e}"),
            }
        }
    }

    async fn stop(mut self) {
        let _ = self.tx.send(InProcCommand::Stop);
        if let Some(thread) = self.thread.take() {
            let joined = tokio::time::timeout(
                Duration::from_secs(15),
                tokio::task::spawn_blocking(move || thread.join()),
            )
            .await;
            assert!(
                matches!(joined, Ok(Ok(Ok(())))),
                "in-process hub thread did not end cleanly: {joined:?}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// 1. Three instances plus an in-process publisher.

#[derive(Clone, Copy)]
enum Via {
    Http(usize),
    InProcess,
}

struct Job {
    via: Via,
    org: usize,
    batch: bool,
    items: Vec<(String, String)>,
}

const EVENT_NAMES: [&str; 4] = [
    "action.created",
    "action.updated",
    "signal.detected",
    "guard.decision.created",
];

/// (org index, instance index, events received, raw stream) of one client.
type Collected = (usize, usize, Vec<SseEvent>, String);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_fan_out_exactly_once() {
    let backend = Backend::new(BackendKind::Redis).await;
    let orgs: Vec<String> = (0..30).map(|_| unique_org("cluster")).collect();
    fan_out_exactly_once(&backend, orgs).await;
}

/// Three instances on a Redis Cluster, with orgs on every shard (counted): each client gets
/// exactly its org's events once, in order, whoever published them; then clients resume on
/// another instance, by cursor and by envelope id, with orgs on every shard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_on_a_redis_cluster() {
    let backend = Backend::new(BackendKind::Cluster).await;
    let cluster = backend.cluster.expect("a cluster");
    let prefix = backend.key_prefix.clone().expect("a key prefix");
    let stream_of = |org: &str| format!("{prefix}:org:{{{org}}}:stream");
    let orgs: Vec<String> = (0..30).map(|_| unique_org("sharded")).collect();
    let keys: Vec<String> = orgs.iter().map(|o| stream_of(o)).collect();
    let spread = cluster.spread(&keys).await;
    eprintln!("orgs per shard (master port: orgs): {spread:?}");
    assert_eq!(spread.len(), 3, "three shards: {spread:?}");
    assert!(
        spread.values().all(|&n| n >= 3),
        "30 orgs leave no shard with fewer than 3 (hash slots are uniform): {spread:?}"
    );
    fan_out_exactly_once(&backend, orgs).await;

    let (h1, h2, h3) = tokio::join!(backend.hub(&[]), backend.hub(&[]), backend.hub(&[]));
    let hubs = [h1, h2, h3];
    for hub in &hubs {
        assert!(hub.wait_ready(DELIVERY_TIMEOUT).await, "{}", hub.log_text());
    }
    // Two fresh orgs per shard: one resumed by cursor, one by envelope id.
    let mut per_shard: HashMap<u16, Vec<String>> = HashMap::new();
    while per_shard.len() < 3 || per_shard.values().any(|o| o.len() < 2) {
        let org = unique_org("resume_shard");
        let shard = per_shard
            .entry(cluster.master_of(&stream_of(&org)).await)
            .or_default();
        if shard.len() < 2 {
            shard.push(org);
        }
    }
    for (shard, orgs) in per_shard {
        eprintln!("resume across instances on the shard of {shard}: {orgs:?}");
        resume_round(&hubs, ResumeForm::Cursor, orgs[0].clone()).await;
        resume_round(&hubs, ResumeForm::EnvelopeId, orgs[1].clone()).await;
    }
}

/// 10 clients per org over three instances; 20 events per org published through all three
/// instances (single events and a batch) and an in-process hub, concurrently; each client
/// gets exactly its org's 20 events once, in cursor order, then a sentinel.
async fn fan_out_exactly_once(backend: &Backend, orgs: Vec<String>) {
    const PER_ORG: usize = 10;
    let orgs_count = orgs.len();
    let redis_url = backend
        .env(&[])
        .into_iter()
        .find(|(k, _)| k == "REDIS_URL")
        .map(|(_, v)| v)
        .expect("a Redis backend");
    let (h1, h2, h3) = tokio::join!(backend.hub(&[]), backend.hub(&[]), backend.hub(&[]));
    let hubs = [h1, h2, h3];
    for hub in &hubs {
        assert!(hub.wait_ready(DELIVERY_TIMEOUT).await, "{}", hub.log_text());
    }
    let bases: Vec<String> = hubs.iter().map(|h| h.base_url()).collect();
    let inproc = InProcessHub::start(redis_url, backend.key_prefix.clone()).await;

    // Every org gets clients on every instance (4/3/3).
    let specs: Vec<(usize, usize)> = (0..orgs_count)
        .flat_map(|k| (0..PER_ORG).map(move |j| (k, (j + k) % 3)))
        .collect();
    let mut clients = Vec::with_capacity(specs.len());
    for chunk in specs.chunks(50) {
        let opened = join_all(chunk.iter().map(|&(k, i)| open_live(&bases[i], &orgs[k]))).await;
        clients.extend(chunk.iter().copied().zip(opened));
    }

    // 20 events per org, then one sentinel that proves nothing trails the 20.
    const EVENTS_PER_ORG: usize = 20;
    let collectors: Vec<JoinHandle<Collected>> = clients
        .into_iter()
        .map(|((k, i), mut c)| {
            tokio::spawn(async move {
                let got = c
                    .collect_events(EVENTS_PER_ORG + 1, DELIVERY_TIMEOUT * 2)
                    .await;
                (k, i, got, c.raw_text())
            })
        })
        .collect();

    let mut jobs = Vec::new();
    for k in 0..orgs_count {
        let mut n = 0;
        let mut items = |count: usize| -> Vec<(String, String)> {
            (0..count)
                .map(|_| {
                    n += 1;
                    (fresh_id(), EVENT_NAMES[n % EVENT_NAMES.len()].to_string())
                })
                .collect()
        };
        for item in items(6) {
            jobs.push(Job {
                via: Via::Http(k % 3),
                org: k,
                batch: false,
                items: vec![item],
            });
        }
        jobs.push(Job {
            via: Via::Http((k + 1) % 3),
            org: k,
            batch: true,
            items: items(6),
        });
        for item in items(4) {
            jobs.push(Job {
                via: Via::Http((k + 2) % 3),
                org: k,
                batch: false,
                items: vec![item],
            });
        }
        for item in items(4) {
            jobs.push(Job {
                via: Via::InProcess,
                org: k,
                batch: false,
                items: vec![item],
            });
        }
    }
    // Interleave orgs and routes so the workers publish to the same org concurrently.
    let mut seed = now_ms() | 1;
    for i in (1..jobs.len()).rev() {
        let j = (xorshift(&mut seed) % (i as u64 + 1)) as usize;
        jobs.swap(i, j);
    }
    const WORKERS: usize = 10;
    let mut queues: Vec<Vec<Job>> = (0..WORKERS).map(|_| Vec::new()).collect();
    for (n, job) in jobs.into_iter().enumerate() {
        queues[n % WORKERS].push(job);
    }
    let inproc = std::sync::Arc::new(inproc);
    let workers: Vec<JoinHandle<Vec<(usize, Value)>>> = queues
        .into_iter()
        .map(|queue| {
            let bases = bases.clone();
            let orgs = orgs.clone();
            let inproc = inproc.clone();
            tokio::spawn(async move {
                let mut stored = Vec::new();
                for job in queue {
                    let org = &orgs[job.org];
                    let envs = match job.via {
                        Via::InProcess => {
                            let (id, event) = &job.items[0];
                            vec![
                                inproc
                                    .publish(org, event, id, json!({"via": "in_process"}))
                                    .await,
                            ]
                        }
                        Via::Http(i) => {
                            let bodies: Vec<Value> = job
                                .items
                                .iter()
                                .map(|(id, event)| {
                                    json!({"id": id, "event": event, "payload": {"via": i}})
                                })
                                .collect();
                            let body = if job.batch {
                                Value::Array(bodies)
                            } else {
                                bodies.into_iter().next().expect("one item")
                            };
                            publish(&bases[i], org, &body).await
                        }
                    };
                    let want: Vec<&String> = job.items.iter().map(|(id, _)| id).collect();
                    let got: Vec<String> = envs.iter().map(id_of).collect();
                    assert_eq!(
                        got.iter().collect::<Vec<_>>(),
                        want,
                        "stored ids of a publish to {org}"
                    );
                    stored.extend(envs.into_iter().map(|e| (job.org, e)));
                }
                stored
            })
        })
        .collect();
    let mut published: Vec<Vec<Value>> = vec![Vec::new(); orgs_count];
    for worker in workers {
        for (k, env) in worker.await.expect("publisher task panicked") {
            published[k].push(env);
        }
    }
    for (k, envs) in published.iter_mut().enumerate() {
        assert_eq!(envs.len(), EVENTS_PER_ORG, "published to {}", orgs[k]);
        envs.sort_by_key(|e| cursor_key(&cursor_of(e)));
        let cursors: Vec<String> = envs.iter().map(cursor_of).collect();
        assert_strictly_increasing(&format!("stored cursors of {}", orgs[k]), &cursors);
    }

    let mut sentinels = Vec::with_capacity(orgs_count);
    for (k, org) in orgs.iter().enumerate() {
        let env = publish(
            &bases[(k + 1) % 3],
            org,
            &json!({"id": fresh_id(), "event": "sentinel.done"}),
        )
        .await;
        sentinels.push(id_of(&env[0]));
    }

    for collector in collectors {
        let (k, i, got, raw) = collector.await.expect("collector task panicked");
        let org = &orgs[k];
        let label = format!("client of {org} on instance {}", i + 1);
        assert_eq!(
            got.len(),
            EVENTS_PER_ORG + 1,
            "{label}: received {} of {} events; raw:\n{raw}",
            got.len(),
            EVENTS_PER_ORG + 1
        );
        let envs: Vec<Value> = got.iter().map(|ev| delivered_envelope(ev, org)).collect();
        let cursors: Vec<String> = envs.iter().map(cursor_of).collect();
        assert_strictly_increasing(&label, &cursors);
        let ids: Vec<String> = envs[..EVENTS_PER_ORG].iter().map(id_of).collect();
        let want: Vec<String> = published[k].iter().map(id_of).collect();
        assert_same_ids(&label, &ids, &want);
        // Same envelope whichever instance (or the in-process hub) accepted it.
        for (env, want) in envs.iter().zip(&published[k]) {
            assert_eq!(
                env, want,
                "{label}: delivered envelope differs from the stored one"
            );
        }
        assert_eq!(
            id_of(&envs[EVENTS_PER_ORG]),
            sentinels[k],
            "{label}: sentinel"
        );
    }

    std::sync::Arc::into_inner(inproc)
        .expect("workers released the in-process hub")
        .stop()
        .await;
}

// ---------------------------------------------------------------------------------------
// 2. Resume on another instance.

#[derive(Clone, Copy, Debug)]
enum ResumeForm {
    Cursor,
    EnvelopeId,
}

/// Reads a resumed stream until `count` events: replay, `realtime.connected`, then live.
/// Returns the envelopes and the `replayed` count the connected frame must carry.
/// Reads a resumed stream up to and including the event named `sentinel.done`, which the
/// test publishes after everything else: the replay may already reach it (a resumer that
/// starts late replays the whole sequence and the sentinel), or it may arrive live. Returns
/// the envelopes before the sentinel, and the sentinel. `realtime.connected` must appear
/// exactly once, counting the events before it.
async fn read_resumed(c: &mut SseClient, org: &str, label: &str) -> (Vec<Value>, Value) {
    let mut events = Vec::new();
    let mut replayed = None;
    let deadline = Instant::now() + DELIVERY_TIMEOUT;
    loop {
        let ev = c
            .next_event(deadline.saturating_duration_since(Instant::now()))
            .await
            .unwrap_or_else(|| {
                panic!(
                    "{label}: got {} events and no sentinel (connected: {replayed:?}); raw:\n{}",
                    events.len(),
                    c.raw_text()
                )
            });
        match ev.event.as_str() {
            "realtime.connected" => {
                assert!(replayed.is_none(), "{label}: second realtime.connected");
                assert_connected(&ev, org, "redis", events.len() as u64);
                replayed = Some(events.len());
            }
            "realtime.resync" => panic!("{label}: unexpected resync {ev:?}"),
            "sentinel.done" => {
                let sentinel = delivered_envelope(&ev, org);
                if replayed.is_none() {
                    // The sentinel came from the replay: connected follows it.
                    let next = c.expect_event(DELIVERY_TIMEOUT).await;
                    assert_connected(&next, org, "redis", events.len() as u64 + 1);
                }
                return (events, sentinel);
            }
            _ => events.push(delivered_envelope(&ev, org)),
        }
    }
}

async fn resume_round(hubs: &[TestHub; 3], form: ResumeForm, org: String) {
    let [h1, h2, h3] = hubs;
    // Keeps instance 2's supervisor warm, so resumers join through its ring while live
    // events are in flight (the replay-to-live handoff).
    let mut monitor = open_live(&h2.base_url(), &org).await;
    let mut first = open_live(&h1.base_url(), &org).await;
    let mut before = Vec::new();
    for n in 0..5 {
        before.extend(
            publish(
                &h3.base_url(),
                &org,
                &json!({"id": fresh_id(), "event": "action.created", "payload": {"n": n}}),
            )
            .await,
        );
    }
    let got: Vec<Value> = first
        .collect_events(5, DELIVERY_TIMEOUT)
        .await
        .iter()
        .map(|ev| delivered_envelope(ev, &org))
        .collect();
    assert_same_ids(
        &format!("{form:?}: first client on instance 1"),
        &got.iter().map(id_of).collect::<Vec<_>>(),
        &before.iter().map(id_of).collect::<Vec<_>>(),
    );
    let last = got.last().expect("five events").clone();
    first.close();
    drop(first);
    let position = match form {
        ResumeForm::Cursor => cursor_of(&last),
        ResumeForm::EnvelopeId => id_of(&last),
    };

    // Keep publishing through instance 3 (three producers, batches of 5) while the client
    // is away and while it resumes on instance 2, at several moments.
    const PRODUCERS: usize = 3;
    const BATCHES: usize = 10;
    const BATCH: usize = 5;
    const MORE: usize = PRODUCERS * BATCHES * BATCH;
    let (progress_tx, mut progress_rx) = mpsc::unbounded_channel::<usize>();
    let producers: Vec<JoinHandle<Vec<Value>>> = (0..PRODUCERS)
        .map(|p| {
            let base3 = h3.base_url();
            let org = org.clone();
            let progress_tx = progress_tx.clone();
            tokio::spawn(async move {
                let mut stored = Vec::with_capacity(BATCHES * BATCH);
                for b in 0..BATCHES {
                    let body: Vec<Value> = (0..BATCH)
                        .map(|n| {
                            json!({"id": fresh_id(), "event": "action.updated",
                                   "payload": {"p": p, "b": b, "n": n}})
                        })
                        .collect();
                    stored.extend(publish(&base3, &org, &Value::Array(body)).await);
                    let _ = progress_tx.send(BATCH);
                }
                stored
            })
        })
        .collect();
    drop(progress_tx);
    const RESUMERS: usize = 5;
    let base2 = h2.base_url();
    let mut resumers = Vec::with_capacity(RESUMERS);
    let mut published = 0;
    for r in 0..RESUMERS {
        // Resumer r connects once about r/RESUMERS of the events are published.
        while published < r * MORE / RESUMERS {
            match tokio::time::timeout(DELIVERY_TIMEOUT, progress_rx.recv())
                .await
                .expect("producers make progress")
            {
                Some(n) => published += n,
                None => break,
            }
        }
        let url = stream_url(&base2, &org);
        let position = position.clone();
        let org = org.clone();
        resumers.push(tokio::spawn(async move {
            let mut c = SseClient::connect_ok(&url, &[("Last-Event-ID", position.as_str())]).await;
            let label = format!("{form:?}: resumer {r} on instance 2");
            read_resumed(&mut c, &org, &label).await
        }));
    }
    let mut after = Vec::with_capacity(MORE);
    for producer in producers {
        after.extend(producer.await.expect("producer task panicked"));
    }
    after.sort_by_key(|e| cursor_key(&cursor_of(e)));
    let want: Vec<String> = after.iter().map(id_of).collect();

    let monitored: Vec<Value> = monitor
        .collect_events(5 + MORE, DELIVERY_TIMEOUT)
        .await
        .iter()
        .map(|ev| delivered_envelope(ev, &org))
        .collect();
    let mut all_want: Vec<String> = before.iter().map(id_of).collect();
    all_want.extend(want.iter().cloned());
    assert_same_ids(
        &format!("{form:?}: live monitor on instance 2"),
        &monitored.iter().map(id_of).collect::<Vec<_>>(),
        &all_want,
    );

    let sentinel = publish(
        &h1.base_url(),
        &org,
        &json!({"id": fresh_id(), "event": "sentinel.done"}),
    )
    .await;
    for (r, resumer) in resumers.into_iter().enumerate() {
        let (events, last) = resumer.await.expect("resumer task panicked");
        let label = format!("{form:?}: resumer {r} on instance 2");
        let ids: Vec<String> = events.iter().map(id_of).collect();
        assert_same_ids(&label, &ids, &want);
        assert_strictly_increasing(&label, &events.iter().map(cursor_of).collect::<Vec<_>>());
        assert_eq!(
            id_of(&last),
            id_of(&sentinel[0]),
            "{label}: nothing after the sequence but the sentinel"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_across_instances() {
    let backend = Backend::new(BackendKind::Redis).await;
    let (h1, h2, h3) = tokio::join!(backend.hub(&[]), backend.hub(&[]), backend.hub(&[]));
    let hubs = [h1, h2, h3];
    for hub in &hubs {
        assert!(hub.wait_ready(DELIVERY_TIMEOUT).await, "{}", hub.log_text());
    }
    resume_round(&hubs, ResumeForm::Cursor, unique_org("resume_x")).await;
    resume_round(&hubs, ResumeForm::EnvelopeId, unique_org("resume_x")).await;
}

// ---------------------------------------------------------------------------------------
// 3. DashClaw's Node writer.

/// A resumed client: the replayed events (before `realtime.connected`) and the connected data.
async fn resume_until_connected(
    base: &str,
    org: &str,
    position: &str,
) -> (SseClient, Vec<SseEvent>) {
    let mut c = SseClient::connect_ok(&stream_url(base, org), &[("Last-Event-ID", position)]).await;
    let events = c
        .collect_events_until(|e| e.event == "realtime.connected", DELIVERY_TIMEOUT)
        .await;
    assert_eq!(
        events.last().map(|e| e.event.as_str()),
        Some("realtime.connected"),
        "resume from {position:?}: no realtime.connected; raw:\n{}",
        c.raw_text()
    );
    (c, events)
}

/// A minimal RESP reader for a raw connection (pushed pub/sub messages).
fn read_resp<'a>(
    reader: &'a mut BufReader<TcpStream>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Resp> + Send + 'a>> {
    Box::pin(async move {
        let mut line = String::new();
        let n = reader.read_line(&mut line).await.expect("reading RESP");
        assert!(n > 0, "redis closed the raw connection");
        let line = line.trim_end_matches("\r\n");
        let (kind, rest) = line.split_at(1);
        match kind {
            "+" => Resp::Simple(rest.to_string()),
            "-" => Resp::Error(rest.to_string()),
            ":" => Resp::Int(rest.parse().expect("RESP int")),
            "$" => {
                let len: i64 = rest.parse().expect("RESP bulk length");
                if len < 0 {
                    return Resp::Bulk(None);
                }
                let mut buf = vec![0u8; len as usize + 2];
                reader.read_exact(&mut buf).await.expect("RESP bulk");
                buf.truncate(len as usize);
                Resp::Bulk(Some(buf))
            }
            "*" => {
                let len: i64 = rest.parse().expect("RESP array length");
                if len < 0 {
                    return Resp::Array(None);
                }
                let mut items = Vec::new();
                for _ in 0..len {
                    items.push(read_resp(reader).await);
                }
                Resp::Array(Some(items))
            }
            other => panic!("unexpected RESP type {other:?} in {line:?}"),
        }
    })
}

fn resp_array(r: Resp) -> Vec<Resp> {
    match r {
        Resp::Array(Some(items)) => items,
        other => panic!("expected a RESP array, got {other:?}"),
    }
}

fn resp_text(r: &Resp) -> String {
    r.text()
        .unwrap_or_else(|| panic!("expected a RESP string, got {r:?}"))
}

/// `SUBSCRIBE channel` on a plain TCP connection, confirmed.
async fn raw_subscribe(port: u16, channel: &str) -> BufReader<TcpStream> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to redis");
    let command = format!(
        "*2\r\n$9\r\nSUBSCRIBE\r\n${}\r\n{channel}\r\n",
        channel.len()
    );
    stream
        .write_all(command.as_bytes())
        .await
        .expect("write SUBSCRIBE");
    let mut reader = BufReader::new(stream);
    let confirm = resp_array(
        tokio::time::timeout(DELIVERY_TIMEOUT, read_resp(&mut reader))
            .await
            .expect("SUBSCRIBE confirmation"),
    );
    assert_eq!(resp_text(&confirm[0]), "subscribe", "{confirm:?}");
    reader
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_format_interop() {
    const WINDOW_SECONDS: u64 = 600;
    let backend = Backend::new(BackendKind::Redis).await;
    let redis = backend.redis.as_ref().expect("redis backend");
    let hub = backend
        .hub(&[(
            "REALTIME_REPLAY_WINDOW_SECONDS",
            &WINDOW_SECONDS.to_string(),
        )])
        .await;
    assert!(hub.wait_ready(DELIVERY_TIMEOUT).await, "{}", hub.log_text());
    let base = hub.base_url();
    let org = unique_org("node");
    let mut live = open_live(&base, &org).await;

    // Node writes: two stream events, one cursor-less message, one more stream event.
    let n0 = node_write(
        redis,
        &org,
        &node_envelope(&org, "action.created", json!({"n": 0})),
    )
    .await;
    let n1 = node_write(
        redis,
        &org,
        &node_envelope(&org, "action.updated", json!({"n": 1})),
    )
    .await;
    let n2 = node_envelope(&org, "agent.heartbeat", json!({"n": 2}));
    node_publish_only(redis, &org, &n2.to_string()).await;
    let n3 = node_write(
        redis,
        &org,
        &node_envelope(&org, "message.created", json!({"n": 3})),
    )
    .await;

    let got = live.collect_events(4, DELIVERY_TIMEOUT).await;
    assert_eq!(got.len(), 4, "live client; raw:\n{}", live.raw_text());
    assert_eq!(delivered_envelope(&got[0], &org), n0);
    assert_eq!(delivered_envelope(&got[1], &org), n1);
    assert_eq!(got[2].event, "agent.heartbeat");
    assert!(
        !got[2].had_id_field,
        "a cursor-less message has no id: line: {:?}",
        got[2]
    );
    assert_eq!(
        got[2].json(),
        n2,
        "cursor-less message delivered as published"
    );
    assert_eq!(delivered_envelope(&got[3], &org), n3);

    // Resume from N0 by cursor and by the Node id (no idempotency key: the hub scans).
    for position in [cursor_of(&n0), id_of(&n0)] {
        let (_c, events) = resume_until_connected(&base, &org, &position).await;
        let (connected, replayed) = events.split_last().expect("connected");
        assert_connected(connected, &org, "redis", 2);
        assert_eq!(connected.json()["cursor"], n3["cursor"], "latest cursor");
        let replayed: Vec<Value> = replayed
            .iter()
            .map(|e| delivered_envelope(e, &org))
            .collect();
        assert_eq!(
            replayed,
            vec![n1.clone(), n3.clone()],
            "replay from {position}"
        );
    }

    // A message whose org_id does not match its channel, and one that is not an
    // envelope, are dropped: the live client's next event is the sentinel.
    let other = unique_org("node_other");
    let foreign = node_envelope(&other, "action.created", json!({"leak": true}));
    node_publish_only(redis, &org, &foreign.to_string()).await;
    let mut foreign_with_cursor = node_envelope(&other, "action.created", json!({"leak": 2}));
    foreign_with_cursor["cursor"] = json!(format!("{}-0", now_ms() + 1));
    node_publish_only(redis, &org, &foreign_with_cursor.to_string()).await;
    node_publish_only(redis, &org, "not json at all").await;
    let sentinel = node_write(
        redis,
        &org,
        &node_envelope(&org, "sentinel.done", json!({})),
    )
    .await;
    let next = live.expect_event(DELIVERY_TIMEOUT).await;
    assert_eq!(
        delivered_envelope(&next, &org),
        sentinel,
        "foreign message leaked"
    );

    // Hub-published events land in Redis in the wire format.
    let mut sub = raw_subscribe(redis.port(), &channel_key(&org)).await;
    let mut stored = publish(
        &base,
        &org,
        &json!({"id": fresh_id(), "event": "action.created", "payload": {"a": 1}}),
    )
    .await;
    stored.extend(
        publish(
            &base,
            &org,
            &json!([
                {"event": "action.updated", "payload": {"a": 2}},
                {"event": "loop.started", "payload": {"a": [3]}},
            ]),
        )
        .await,
    );
    for want in &stored {
        let push = resp_array(
            tokio::time::timeout(DELIVERY_TIMEOUT, read_resp(&mut sub))
                .await
                .expect("pushed pub/sub message"),
        );
        assert_eq!(push.len(), 3, "{push:?}");
        assert_eq!(resp_text(&push[0]), "message");
        assert_eq!(resp_text(&push[1]), channel_key(&org));
        let message: Value =
            serde_json::from_str(&resp_text(&push[2])).expect("pub/sub message is JSON");
        assert_eq!(&message, want, "pub/sub message = envelope with its cursor");
    }
    let range = resp_array(
        redis
            .cmd(&["XRANGE", &stream_key(&org), &cursor_of(&stored[0]), "+"])
            .await,
    );
    assert_eq!(
        range.len(),
        stored.len(),
        "stream entries from the first: {range:?}"
    );
    for (entry, want) in range.into_iter().zip(&stored) {
        let entry = resp_array(entry);
        assert_eq!(
            resp_text(&entry[0]),
            cursor_of(want),
            "entry id is the cursor"
        );
        let fields = resp_array(entry[1].clone());
        assert_eq!(fields.len(), 2, "one field: {fields:?}");
        assert_eq!(resp_text(&fields[0]), "data");
        let data: Value = serde_json::from_str(&resp_text(&fields[1])).expect("data is JSON");
        let mut want = want.clone();
        want.as_object_mut().expect("object").remove("cursor");
        assert_eq!(data, want, "stream data = envelope without cursor");
    }
    for want in &stored {
        let ev = live.expect_event(DELIVERY_TIMEOUT).await;
        assert_eq!(&delivered_envelope(&ev, &org), want);
    }

    // An entry older than the window that is still in the stream is never replayed.
    let old_org = unique_org("node_old");
    let old_ms = now_ms() - 2 * WINDOW_SECONDS * 1000;
    let old_env = node_envelope(&old_org, "action.created", json!({"old": true}));
    let reply = redis
        .cmd(&[
            "XADD",
            &stream_key(&old_org),
            &format!("{old_ms}-0"),
            "data",
            &old_env.to_string(),
        ])
        .await;
    assert_eq!(reply.text(), Some(format!("{old_ms}-0")), "{reply:?}");
    let fresh = node_write(
        redis,
        &old_org,
        &node_envelope(&old_org, "action.updated", json!({})),
    )
    .await;
    let mut latest = cursor_of(&fresh);
    let positions = [
        format!("{}-0", old_ms - 1000),
        format!("{old_ms}-0"),
        id_of(&old_env),
    ];
    for position in positions {
        let (mut c, events) = resume_until_connected(&base, &old_org, &position).await;
        assert_eq!(
            events.len(),
            2,
            "resync then connected from {position}: {events:?}"
        );
        assert_eq!(events[0].event, "realtime.resync", "{events:?}");
        assert!(!events[0].had_id_field);
        let resync = events[0].json();
        assert!(
            resync["reason"] == json!("expired") || resync["reason"] == json!("unknown"),
            "{resync}"
        );
        if position.contains('-') && !position.starts_with("evt_") {
            assert_eq!(
                resync["reason"],
                json!("expired"),
                "cursor older than the window"
            );
        }
        assert_eq!(resync["last_event_id"], json!(position), "{resync}");
        assert_connected(&events[1], &old_org, "redis", 0);
        assert_eq!(events[1].json()["cursor"], json!(latest), "latest cursor");
        let sentinel = publish(&base, &old_org, &json!({"event": "sentinel.done"})).await;
        let next = c.expect_event(DELIVERY_TIMEOUT).await;
        assert_eq!(
            id_of(&delivered_envelope(&next, &old_org)),
            id_of(&sentinel[0]),
            "only live events after the resync (from {position})"
        );
        latest = cursor_of(&sentinel[0]);
    }

    // The same holds for a gap fill after a pub/sub reconnect: this org's supervisor
    // subscribed while its stream was empty, so it fills from the very start of the
    // stream, where an old entry now sits.
    let gap_org = unique_org("node_gap");
    let mut gap_live = open_live(&base, &gap_org).await;
    let old_env = node_envelope(&gap_org, "action.created", json!({"old": true}));
    let old_id = format!("{}-0", now_ms() - 2 * WINDOW_SECONDS * 1000);
    let reply = redis
        .cmd(&[
            "XADD",
            &stream_key(&gap_org),
            &old_id,
            "data",
            &old_env.to_string(),
        ])
        .await;
    assert_eq!(reply.text(), Some(old_id), "{reply:?}");
    drop(sub);
    let killed = redis.cmd(&["CLIENT", "KILL", "TYPE", "pubsub"]).await;
    assert!(
        matches!(killed, Resp::Int(n) if n >= 1),
        "CLIENT KILL: {killed:?}"
    );
    assert!(
        hub.wait_for_log("redis pub/sub reconnected", DELIVERY_TIMEOUT)
            .await,
        "hub did not resubscribe; log:\n{}",
        hub.log_text()
    );
    let sentinel = node_write(
        redis,
        &gap_org,
        &node_envelope(&gap_org, "sentinel.done", json!({})),
    )
    .await;
    let next = gap_live.expect_event(DELIVERY_TIMEOUT).await;
    assert_eq!(
        delivered_envelope(&next, &gap_org),
        sentinel,
        "an entry older than the window was delivered by the gap fill"
    );
}

// ---------------------------------------------------------------------------------------
// 4. Many orgs over few Redis connections.

/// A bare SSE reader on its own TCP connection (lighter than reqwest for thousands).
struct RawSse {
    rx: mpsc::UnboundedReceiver<SseEvent>,
    task: JoinHandle<()>,
}

impl Drop for RawSse {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Incremental `Transfer-Encoding: chunked` decoder.
#[derive(Default)]
struct Chunked {
    buf: Vec<u8>,
    /// Bytes left in the current chunk, plus its trailing CRLF once reached.
    left: Option<usize>,
    done: bool,
}

impl Chunked {
    fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) {
        self.buf.extend_from_slice(input);
        loop {
            if self.done {
                return;
            }
            match self.left {
                None => {
                    let Some(end) = find(&self.buf, b"\r\n") else {
                        return;
                    };
                    let line = String::from_utf8_lossy(&self.buf[..end]).to_string();
                    let size = line.split(';').next().unwrap_or("").trim();
                    let size = usize::from_str_radix(size, 16)
                        .unwrap_or_else(|_| panic!("bad chunk size line {line:?}"));
                    self.buf.drain(..end + 2);
                    if size == 0 {
                        self.done = true;
                        return;
                    }
                    self.left = Some(size);
                }
                Some(0) => {
                    if self.buf.len() < 2 {
                        return;
                    }
                    assert_eq!(&self.buf[..2], b"\r\n", "chunk not followed by CRLF");
                    self.buf.drain(..2);
                    self.left = None;
                }
                Some(n) => {
                    if self.buf.is_empty() {
                        return;
                    }
                    let take = n.min(self.buf.len());
                    out.extend(self.buf.drain(..take));
                    self.left = Some(n - take);
                }
            }
        }
    }
}

impl RawSse {
    async fn connect(addr: SocketAddr, path: &str) -> RawSse {
        let mut stream = TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .expect("write request");
        let mut head = Vec::new();
        let mut tmp = vec![0u8; 4096];
        let body_start = loop {
            let n = tokio::time::timeout(DELIVERY_TIMEOUT, stream.read(&mut tmp))
                .await
                .unwrap_or_else(|_| panic!("GET {path}: no response head"))
                .expect("read response head");
            assert!(n > 0, "GET {path}: connection closed before the head");
            head.extend_from_slice(&tmp[..n]);
            if let Some(p) = find(&head, b"\r\n\r\n") {
                break p + 4;
            }
        };
        let head_text = String::from_utf8_lossy(&head[..body_start]).to_ascii_lowercase();
        assert!(
            head_text.starts_with("http/1.1 200"),
            "GET {path}: {head_text}"
        );
        let chunked = head_text.contains("transfer-encoding: chunked");
        let rest = head[body_start..].to_vec();
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            let mut parser = SseParser::new();
            let mut decoder = Chunked::default();
            let mut body = Vec::new();
            let mut input = rest;
            loop {
                body.clear();
                if chunked {
                    decoder.feed(&input, &mut body);
                } else {
                    body.extend_from_slice(&input);
                }
                for item in parser.feed(&body) {
                    if let SseItem::Event(ev) = item
                        && tx.send(ev).is_err()
                    {
                        return;
                    }
                }
                match stream.read(&mut tmp).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => input = tmp[..n].to_vec(),
                }
            }
        });
        RawSse { rx, task }
    }

    async fn next_event(&mut self, what: &str) -> SseEvent {
        tokio::time::timeout(DELIVERY_TIMEOUT, self.rx.recv())
            .await
            .unwrap_or_else(|_| panic!("{what}: no event in time"))
            .unwrap_or_else(|| panic!("{what}: stream ended"))
    }
}

/// A small deterministic generator for picking orgs.
fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_orgs_few_redis_connections() {
    const ORGS: usize = 2000;
    let backend = Backend::new(BackendKind::Redis).await;
    let redis = backend.redis.as_ref().expect("redis backend");
    let hub = backend.hub(&[("REALTIME_HEARTBEAT_SECONDS", "30")]).await;
    assert!(hub.wait_ready(DELIVERY_TIMEOUT).await, "{}", hub.log_text());
    let addr = hub.addr();
    let orgs: Vec<String> = (0..ORGS).map(|_| unique_org("many")).collect();

    let mut clients: Vec<RawSse> = Vec::with_capacity(ORGS);
    for chunk in orgs.chunks(100) {
        let opened = join_all(chunk.iter().map(|org| async move {
            let mut c = RawSse::connect(addr, &format!("/v1/orgs/{org}/stream")).await;
            let ev = c.next_event(org).await;
            assert_connected(&ev, org, "redis", 0);
            c
        }))
        .await;
        clients.extend(opened);
    }

    // Every client beyond the one running CLIENT LIST belongs to the hub.
    let list = redis.cmd(&["CLIENT", "LIST"]).await;
    let list = list
        .text()
        .unwrap_or_else(|| panic!("CLIENT LIST: {list:?}"));
    let hub_connections = list.lines().filter(|l| !l.trim().is_empty()).count() - 1;
    assert!(
        (1..=4).contains(&hub_connections),
        "the hub holds {hub_connections} Redis connections for {ORGS} orgs:\n{list}"
    );
    let probe: Vec<String> = [0, 1, ORGS / 2, ORGS - 1]
        .iter()
        .map(|&k| channel_key(&orgs[k]))
        .collect();
    let mut args = vec!["PUBSUB", "NUMSUB"];
    args.extend(probe.iter().map(String::as_str));
    let numsub = resp_array(redis.cmd(&args).await);
    assert_eq!(numsub.len(), probe.len() * 2, "{numsub:?}");
    for pair in numsub.chunks(2) {
        assert_eq!(
            pair[1],
            Resp::Int(1),
            "subscribers of {:?}",
            resp_text(&pair[0])
        );
    }

    let mut seed = now_ms() | 1;
    let mut picked = HashSet::new();
    while picked.len() < 50 {
        picked.insert((xorshift(&mut seed) % ORGS as u64) as usize);
    }
    let picked: Vec<usize> = picked.into_iter().collect();
    let base = hub.base_url();
    let mut published: HashMap<usize, Value> = HashMap::new();
    for chunk in picked.chunks(10) {
        let envs = join_all(chunk.iter().map(|&k| {
            let base = &base;
            let org = &orgs[k];
            async move {
                publish(
                    base,
                    org,
                    &json!({"id": fresh_id(), "event": "action.created"}),
                )
                .await
            }
        }))
        .await;
        for (&k, env) in chunk.iter().zip(envs) {
            published.insert(k, env[0].clone());
        }
    }
    for &k in &picked {
        let org = &orgs[k];
        let ev = clients[k].next_event(org).await;
        assert_eq!(
            &delivered_envelope(&ev, org),
            &published[&k],
            "client of {org}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// 5. The rollback flip keeps the HTTP API.

/// Publish, subscribe and resume with the same org name, routes and client code.
async fn same_api_roundtrip(backend: Backend, org: &str) -> Vec<String> {
    let hub = backend.hub(&[]).await;
    let base = hub.base_url();
    let mut live = SseClient::connect_ok(&stream_url(&base, org), &[]).await;
    let ev = live.expect_event(DELIVERY_TIMEOUT).await;
    assert_connected(&ev, org, backend.name(), 0);

    let mut stored = publish(
        &base,
        org,
        &json!({"id": "evt_rollback_1", "event": "action.created", "payload": {"n": 1}}),
    )
    .await;
    stored.extend(
        publish(
            &base,
            org,
            &json!([
                {"id": "evt_rollback_2", "event": "action.updated", "payload": {"n": 2}},
                {"id": "evt_rollback_3", "event": "signal.detected", "payload": {"n": 3}},
            ]),
        )
        .await,
    );
    // The duplicate answer has the same shape on both backends.
    let url = format!("{base}/v1/orgs/{org}/events");
    let (status, dup, _) = post_json(
        &url,
        &json!({"id": "evt_rollback_1", "event": "action.created"}),
        &[],
    )
    .await;
    assert_eq!(status, 200, "{}: duplicate: {dup}", backend.name());
    assert_eq!(
        dup,
        stored[0],
        "{}: duplicate answers the first",
        backend.name()
    );

    let got: Vec<Value> = live
        .collect_events(3, DELIVERY_TIMEOUT)
        .await
        .iter()
        .map(|e| delivered_envelope(e, org))
        .collect();
    assert_eq!(got, stored, "{}: live", backend.name());

    let (mut resumed, events) = resume_until_connected(&base, org, &cursor_of(&stored[0])).await;
    let (connected, replayed) = events.split_last().expect("connected");
    assert_connected(connected, org, backend.name(), 2);
    let replayed: Vec<Value> = replayed
        .iter()
        .map(|e| delivered_envelope(e, org))
        .collect();
    assert_eq!(replayed, stored[1..].to_vec(), "{}: replay", backend.name());

    let last = publish(
        &base,
        org,
        &json!({"id": "evt_rollback_4", "event": "goal.updated"}),
    )
    .await;
    for client in [&mut live, &mut resumed] {
        let ev = client.expect_event(DELIVERY_TIMEOUT).await;
        assert_eq!(
            delivered_envelope(&ev, org),
            last[0],
            "{}: live after",
            backend.name()
        );
    }
    let mut shape: Vec<String> = stored[0]
        .as_object()
        .expect("object")
        .keys()
        .cloned()
        .collect();
    shape.sort();
    shape
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_flip_keeps_producers_and_routes() {
    let org = unique_org("rollback");
    let redis_shape = same_api_roundtrip(Backend::new(BackendKind::Redis).await, &org).await;
    let memory_shape = same_api_roundtrip(Backend::new(BackendKind::Memory).await, &org).await;
    assert_eq!(
        redis_shape, memory_shape,
        "envelope fields differ between backends"
    );
}

/// Two Node-style producers can PUBLISH out of stream order (XADD A, XADD B, PUBLISH B,
/// PUBLISH A). The late A still reaches live clients, once and without an `id:` line, so
/// their Last-Event-ID stays at B and a resume from B repeats nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_order_node_publishes_are_not_lost() {
    let backend = Backend::new(BackendKind::Redis).await;
    let redis = backend.redis.as_ref().expect("redis backend");
    let hub = backend.hub(&[]).await;
    assert!(hub.wait_ready(DELIVERY_TIMEOUT).await, "{}", hub.log_text());
    let base = hub.base_url();
    let org = unique_org("late");
    let mut live = open_live(&base, &org).await;

    let mut stored = Vec::new();
    for n in 0..2 {
        let env = node_envelope(&org, "action.created", json!({"n": n}));
        let reply = redis
            .cmd(&["XADD", &stream_key(&org), "*", "data", &env.to_string()])
            .await;
        let mut with = env.clone();
        with["cursor"] = json!(reply.text().expect("XADD cursor"));
        stored.push(with);
    }
    let (a, b) = (&stored[0], &stored[1]);
    node_publish_only(redis, &org, &b.to_string()).await;
    node_publish_only(redis, &org, &a.to_string()).await;
    // The same late message again (a producer retry) must not be delivered twice.
    node_publish_only(redis, &org, &a.to_string()).await;
    let sentinel = publish(&base, &org, &json!({"event": "test.sentinel"})).await;

    let got = live.collect_events(3, DELIVERY_TIMEOUT).await;
    assert_eq!(got.len(), 3, "raw:\n{}", live.raw_text());
    assert_eq!(delivered_envelope(&got[0], &org), *b);
    assert_eq!(got[0].last_event_id, cursor_of(b));
    assert_eq!(got[1].json(), *a, "the late event is delivered");
    assert!(!got[1].had_id_field, "a late event carries no id: line");
    assert_eq!(
        got[1].last_event_id,
        cursor_of(b),
        "Last-Event-ID stays at B"
    );
    assert_eq!(
        id_of(&got[2].json()),
        id_of(&sentinel[0]),
        "then the sentinel, nothing else"
    );

    // Resuming from B replays only what came after it.
    let (_c, events) = resume_until_connected(&base, &org, &cursor_of(b)).await;
    let ids: Vec<String> = events.iter().map(|e| e.event.clone()).collect();
    assert_eq!(ids, vec!["test.sentinel", "realtime.connected"]);
}
