//! Faults on a Redis Cluster (contract sections 4.4, 7, 10): a master SIGKILLed under
//! traffic to orgs on every shard, with and without `REALTIME_REDIS_WAIT_REPLICAS`; writes a
//! failover really loses; slots of live orgs moved under traffic; and the Redis connections
//! an instance holds for 2,000 orgs, counted on every node.
//!
//! Every test starts its own cluster (faults change it) and they run one at a time: a
//! failover is timed by the cluster's own clock (`cluster-node-timeout`), and two clusters
//! failing over at once on two shared cores would only make that clock slip.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};

use common::faults::{
    Delivered, Publisher, Subscriber, assert_exact_or_resync, delivered, wait_readyz,
};
use common::{TestCluster, TestHub, metric_sum, non_reading_stream, post_json, unique_org};

/// One cluster at a time in this binary.
static ONE_CLUSTER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Upper bound for a cluster to fail over, a hub to notice, clients to catch up; never a
/// speed expectation.
const RECOVERY: Duration = Duration::from_secs(60);

fn stream_key(org: &str) -> String {
    format!("dashclaw:org:{{{org}}}:stream")
}

fn channel_key(org: &str) -> String {
    format!("dashclaw:org:{{{org}}}:events")
}

/// `n` hubs on `cluster` with fault detection quick enough for a test, and `extra`.
async fn hubs(cluster: &TestCluster, n: usize, extra: &[(&str, &str)]) -> Vec<TestHub> {
    let url = cluster.url();
    let mut env = vec![
        ("REALTIME_BACKEND", "redis"),
        ("REDIS_URL", url.as_str()),
        ("REALTIME_HEARTBEAT_SECONDS", "1"),
        ("REALTIME_REDIS_TIMEOUT_MS", "1000"),
    ];
    env.extend_from_slice(extra);
    let mut hubs = Vec::new();
    for _ in 0..n {
        let hub = TestHub::spawn(&env).await;
        assert!(hub.wait_ready(RECOVERY).await, "{}", hub.log_text());
        hubs.push(hub);
    }
    hubs
}

/// `per_shard` fresh orgs on every master, grouped by master port (counted from the
/// cluster's own `CLUSTER KEYSLOT` and slot map).
async fn orgs_on_every_shard(cluster: &TestCluster, per_shard: usize) -> HashMap<u16, Vec<String>> {
    let masters = cluster.masters().await;
    let mut orgs: HashMap<u16, Vec<String>> = masters.iter().map(|&m| (m, Vec::new())).collect();
    while orgs.values().any(|o| o.len() < per_shard) {
        let org = unique_org("shard");
        let shard = orgs
            .get_mut(&cluster.master_of(&stream_key(&org)).await)
            .expect("a master of the cluster");
        if shard.len() < per_shard {
            shard.push(org);
        }
    }
    eprintln!("orgs per shard (master port: orgs): {orgs:?}");
    orgs
}

/// What the org's stream holds now.
async fn kept(cluster: &TestCluster, org: &str) -> Vec<Delivered> {
    cluster
        .stream_entries(&stream_key(org))
        .await
        .into_iter()
        .map(|(id, cursor)| Delivered { id, cursor })
        .collect()
}

/// Publishers (one per org, through the hubs in turn) and subscribers (one per org on every
/// hub), all past their first events.
struct Traffic {
    orgs: Vec<String>,
    publishers: Vec<Publisher>,
    subscribers: Vec<Vec<Subscriber>>,
}

impl Traffic {
    async fn start(hubs: &[TestHub], orgs: Vec<String>) -> Traffic {
        let mut subscribers = Vec::new();
        for org in &orgs {
            let mut subs = Vec::new();
            for (h, hub) in hubs.iter().enumerate() {
                subs.push(Subscriber::connect(hub, org, &format!("{org} on hub{h}")).await);
            }
            subscribers.push(subs);
        }
        let publishers: Vec<Publisher> = orgs
            .iter()
            .enumerate()
            .map(|(k, org)| Publisher::start(&hubs[k % hubs.len()], org))
            .collect();
        let traffic = Traffic {
            orgs,
            publishers,
            subscribers,
        };
        traffic.progress(|_| true, 10).await;
        traffic
    }

    /// Waits until the publishers of the orgs `which` selects got `n` more events accepted.
    async fn progress(&self, which: impl Fn(&str) -> bool, n: usize) {
        for (org, publisher) in self.orgs.iter().zip(&self.publishers) {
            if which(org) {
                publisher.wait_accepted_more(n, RECOVERY).await;
            }
        }
    }

    /// Stops publishing and checks every client against what was accepted and what each
    /// stream still holds; returns the checks by org.
    async fn finish(
        self,
        cluster: &TestCluster,
    ) -> Vec<(String, Vec<Delivered>, Vec<common::faults::ResyncCheck>)> {
        let mut results = Vec::new();
        for ((org, publisher), subs) in self
            .orgs
            .into_iter()
            .zip(self.publishers)
            .zip(self.subscribers)
        {
            let log = publisher.finish().await;
            let accepted = delivered(&log.accepted);
            let last = accepted.last().expect("accepted events").cursor.clone();
            let kept = kept(cluster, &org).await;
            let mut checks = Vec::new();
            for sub in subs {
                let finished = sub.finish_at(&last).await;
                let parsed = finished.parse(&org);
                checks.push(assert_exact_or_resync(
                    &finished.label,
                    &parsed,
                    &accepted,
                    &kept,
                ));
            }
            results.push((org, kept_missing(&accepted, &kept), checks));
        }
        results
    }
}

/// Accepted events the stream no longer holds.
fn kept_missing(accepted: &[Delivered], kept: &[Delivered]) -> Vec<Delivered> {
    accepted
        .iter()
        .filter(|a| !kept.contains(a))
        .cloned()
        .collect()
}

/// SIGKILL of the master of one shard while publishing to two orgs on every shard through
/// three hubs. Its replica is frozen first, so the shard stays without a master until the
/// test lets it fail over: `/readyz` of every hub must name that shard meanwhile, the other
/// shards keep accepting, and readiness comes back by itself after the failover. The killed
/// node then restarts and rejoins as a replica.
async fn failover_under_traffic(
    wait_replicas: &str,
) -> Vec<(String, Vec<Delivered>, Vec<common::faults::ResyncCheck>)> {
    let _one = ONE_CLUSTER.lock().await;
    let cluster = TestCluster::start().await;
    let hubs = hubs(
        &cluster,
        3,
        &[("REALTIME_REDIS_WAIT_REPLICAS", wait_replicas)],
    )
    .await;
    let by_shard = orgs_on_every_shard(&cluster, 2).await;
    let victim = *by_shard.keys().min().expect("three shards");
    let victim_orgs = by_shard[&victim].clone();
    let orgs: Vec<String> = by_shard.into_values().flatten().collect();
    let traffic = Traffic::start(&hubs, orgs).await;

    let replica = cluster.replica_of(victim).await;
    eprintln!(
        "killing master {victim}; its replica {replica} is frozen until the shard is seen down"
    );
    cluster.pause(replica, true);
    cluster.kill(victim);
    let shard = format!("127.0.0.1:{victim}");
    for hub in &hubs {
        let body = wait_readyz(
            hub,
            "503 naming the dead shard",
            RECOVERY,
            |status, body| {
                status == 503 && body["reason"].as_str().is_some_and(|r| r.contains(&shard))
            },
        )
        .await;
        eprintln!("{}: {body}", hub.base_url());
    }
    traffic
        .progress(|org| !victim_orgs.iter().any(|v| v == org), 5)
        .await;
    cluster.pause(replica, false);
    cluster.wait_failed_over(victim, 2).await;
    cluster.restart(victim).await;
    cluster.wait_healthy(3).await;
    for hub in &hubs {
        wait_readyz(hub, "ready again", RECOVERY, |status, _| status == 200).await;
        wait_resubscribed(hub, victim_orgs.len()).await;
    }
    traffic.progress(|_| true, 10).await;
    traffic.finish(&cluster).await
}

/// Waits until `hub` counted at least `orgs` channels subscribed again after a loss
/// (`redis_resubscribes_total`): the dead shard's orgs, on its new master.
async fn wait_resubscribed(hub: &TestHub, orgs: usize) {
    let deadline = tokio::time::Instant::now() + RECOVERY;
    loop {
        let metrics = hub.metrics().await;
        if metric_sum(&metrics, "dashclaw_realtime_redis_resubscribes_total") >= orgs as f64 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{}: the dead shard's {orgs} orgs were not subscribed again:\n{metrics}",
            hub.base_url()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// With `REALTIME_REDIS_WAIT_REPLICAS=1` an acknowledged event survives its master's death:
/// every event answered 2xx is still stored and reached every client exactly once, in
/// order. (A resync could only follow an event that was never acknowledged and then lost,
/// which `assert_exact_or_resync` checks.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_with_wait_replicas_loses_nothing_acknowledged() {
    for (org, missing, checks) in failover_under_traffic("1").await {
        assert!(
            missing.is_empty(),
            "{org}: acknowledged events lost: {missing:?}"
        );
        for check in checks {
            assert!(check.skipped.is_empty(), "{org}: {check:?}");
            eprintln!("{org}: resyncs {:?}", check.reasons);
        }
    }
}

/// Without waiting for replicas, every client gets the exact sequence, or a
/// `realtime.resync` exactly where the failover lost data — never a silent gap (the check
/// itself is `assert_exact_or_resync`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_without_wait_is_exact_or_resyncs() {
    for (org, missing, checks) in failover_under_traffic("0").await {
        eprintln!(
            "{org}: {} accepted events lost by the failover; resyncs per client: {:?}",
            missing.len(),
            checks.iter().map(|c| c.reasons.len()).collect::<Vec<_>>()
        );
        for check in checks {
            assert!(
                check.reasons.iter().all(|r| r == "unknown"),
                "{org}: {check:?}"
            );
        }
    }
}

/// A failover that loses acknowledged writes, for sure: the replica saves a snapshot and
/// dies, the master takes more events for one org, freezes, and the replica comes back
/// from its snapshot and takes the shard over (`CLUSTER FAILOVER TAKEOVER`). Only that
/// org's clients get a `realtime.resync` (`unknown`), after the events they saw that are
/// gone; the other org on that shard and the org on another shard get their exact
/// sequences; a client resuming from a lost event is told to resync too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_writes_resync_only_their_org() {
    let _one = ONE_CLUSTER.lock().await;
    let cluster = TestCluster::start().await;
    let hubs = hubs(&cluster, 2, &[]).await;
    let by_shard = orgs_on_every_shard(&cluster, 2).await;
    let mut shards = by_shard.keys().copied();
    let (master, other_shard) = (shards.next().unwrap(), shards.next().unwrap());
    let (losing, keeping) = (by_shard[&master][0].clone(), by_shard[&master][1].clone());
    let elsewhere = by_shard[&other_shard][0].clone();
    let orgs = [losing.clone(), keeping.clone(), elsewhere.clone()];
    let mut subs: Vec<Vec<Subscriber>> = Vec::new();
    for org in &orgs {
        let mut per_org = Vec::new();
        for (h, hub) in hubs.iter().enumerate() {
            per_org.push(Subscriber::connect(hub, org, &format!("{org} on hub{h}")).await);
        }
        subs.push(per_org);
    }
    let mut accepted: Vec<Vec<Delivered>> = vec![Vec::new(); 3];
    let publish = |k: usize, n: usize| {
        let (hub, org) = (&hubs[n % 2], orgs[k].clone());
        async move {
            let body =
                json!({"id": format!("evt_{n}"), "event": "fault.tick", "payload": {"n": n}});
            let (status, env, _) =
                post_json(&hub.url(&format!("/v1/orgs/{org}/events")), &body, &[]).await;
            assert_eq!(status, 202, "{org}: {env}");
            Delivered {
                id: env["id"].as_str().unwrap().to_owned(),
                cursor: env["cursor"].as_str().unwrap().to_owned(),
            }
        }
    };
    for n in 0..5 {
        for (k, list) in accepted.iter_mut().enumerate() {
            list.push(publish(k, n).await);
        }
    }
    let replica = cluster.replica_of(master).await;
    cluster.wait_replica_caught_up(master, replica).await;
    cluster.cmd(replica, &["SAVE"]).await;
    cluster.kill(replica);
    // Acknowledged by the master alone, delivered live, never replicated.
    let mut doomed = Vec::new();
    for n in 5..10 {
        doomed.push(publish(0, n).await);
    }
    accepted[0].extend(doomed.iter().cloned());
    for sub in &subs[0] {
        let last = &doomed.last().unwrap().cursor;
        sub.wait_for(|ev| ev.last_event_id == *last, RECOVERY).await;
    }
    eprintln!("freezing master {master}; replica {replica} takes over from its snapshot");
    cluster.pause(master, true);
    cluster.restart(replica).await;
    let takeover = cluster
        .cmd(replica, &["CLUSTER", "FAILOVER", "TAKEOVER"])
        .await;
    assert_eq!(takeover, common::Resp::Simple("OK".into()));
    cluster.wait_failed_over(master, 0).await;
    // The frozen master is killed and stays down: restarted, it would claim its old slots
    // (empty) for a moment before learning it was replaced, which is a different fault.
    cluster.kill(master);
    cluster.wait_healthy(2).await;
    let stored = kept(&cluster, &losing).await;
    assert!(
        doomed.iter().all(|d| !stored.contains(d)),
        "the takeover lost the unreplicated events: {stored:?}"
    );
    for hub in &hubs {
        wait_readyz(hub, "ready after the takeover", RECOVERY, |status, _| {
            status == 200
        })
        .await;
    }
    for n in 10..15 {
        for (k, list) in accepted.iter_mut().enumerate() {
            list.push(publish(k, n).await);
        }
    }
    for ((org, per_org), accepted) in orgs.iter().zip(subs).zip(&accepted) {
        let kept = kept(&cluster, org).await;
        for sub in per_org {
            let finished = sub.finish_at(&accepted.last().unwrap().cursor).await;
            let check =
                assert_exact_or_resync(&finished.label, &finished.parse(org), accepted, &kept);
            if *org == losing {
                assert_eq!(check.reasons, ["unknown"], "{}: {check:?}", finished.label);
                assert_eq!(check.lost_delivered, doomed, "{}", finished.label);
            } else {
                assert!(
                    check.reasons.is_empty(),
                    "{}: resync where nothing was lost: {check:?}",
                    finished.label
                );
            }
        }
    }
    // A client whose last event is one of the lost ones is told so, then gets what followed.
    let position = &doomed[2].cursor;
    let mut resumer = common::SseClient::connect_ok(
        &hubs[1].url(&format!("/v1/orgs/{losing}/stream")),
        &[("Last-Event-ID", position.as_str())],
    )
    .await;
    let first = resumer.expect_event(RECOVERY).await;
    assert_eq!(first.event, "realtime.resync", "{first:?}");
    assert_eq!(first.json()["reason"], "unknown", "{first:?}");
    let replayed = resumer
        .collect_events_until(|e| e.event == "realtime.connected", RECOVERY)
        .await;
    let ids: Vec<Value> = replayed[..replayed.len() - 1]
        .iter()
        .map(|e| e.json()["id"].clone())
        .collect();
    let after: Vec<Value> = accepted[0][10..].iter().map(|d| json!(d.id)).collect();
    assert_eq!(ids, after, "what followed the loss");
}

/// Slots holding live orgs move to other masters (`CLUSTER SETSLOT … MIGRATING/IMPORTING`,
/// `MIGRATE`, `SETSLOT … NODE`) while three hubs publish and subscribe: every client gets
/// the exact sequence, without a resync, and every hub is subscribed on the new owner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resharding_under_traffic_is_exact() {
    let _one = ONE_CLUSTER.lock().await;
    let cluster = TestCluster::start().await;
    let hubs = hubs(&cluster, 3, &[]).await;
    let by_shard = orgs_on_every_shard(&cluster, 2).await;
    let masters: Vec<u16> = {
        let mut m: Vec<u16> = by_shard.keys().copied().collect();
        m.sort_unstable();
        m
    };
    let orgs: Vec<String> = masters.iter().flat_map(|m| by_shard[m].clone()).collect();
    let traffic = Traffic::start(&hubs, orgs).await;
    // The first org of every shard moves to the next master.
    let mut moved = Vec::new();
    for (i, &from) in masters.iter().enumerate() {
        let org = by_shard[&from][0].clone();
        let to = masters[(i + 1) % masters.len()];
        let slot = cluster.slot_of(&stream_key(&org)).await;
        eprintln!("moving slot {slot} ({org}) from {from} to {to}");
        cluster.move_slot(slot, to).await;
        moved.push((org, to));
        traffic.progress(|_| true, 3).await;
    }
    for (org, to) in &moved {
        assert_eq!(cluster.master_of(&stream_key(org)).await, *to);
        let numsub = wait_shard_subscribers(&cluster, *to, &channel_key(org), 3).await;
        assert_eq!(
            numsub, 3,
            "{org}: one subscription per hub on its new master"
        );
    }
    traffic.progress(|_| true, 10).await;
    for (org, missing, checks) in traffic.finish(&cluster).await {
        assert!(missing.is_empty(), "{org}: a slot move lost {missing:?}");
        for check in checks {
            assert!(check.reasons.is_empty(), "{org}: {check:?}");
        }
    }
}

/// `PUBSUB SHARDNUMSUB` of `channel` on `node`, once it reaches `want` (or the deadline).
async fn wait_shard_subscribers(cluster: &TestCluster, node: u16, channel: &str, want: i64) -> i64 {
    let deadline = tokio::time::Instant::now() + RECOVERY;
    loop {
        let reply = cluster.cmd(node, &["PUBSUB", "SHARDNUMSUB", channel]).await;
        let count = match reply {
            common::Resp::Array(Some(items)) => match items.get(1) {
                Some(common::Resp::Int(n)) => *n,
                _ => 0,
            },
            _ => 0,
        };
        if count >= want || tokio::time::Instant::now() >= deadline {
            return count;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One hub with 2,000 orgs subscribed holds, on every node, at most the cluster client's one
/// command connection, plus exactly one pub/sub connection per master (`CLIENT LIST`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_per_instance_for_2000_orgs() {
    const ORGS: usize = 2000;
    let _one = ONE_CLUSTER.lock().await;
    let cluster = TestCluster::start().await;
    let hub = hubs(&cluster, 1, &[("REALTIME_HEARTBEAT_SECONDS", "30")])
        .await
        .pop()
        .unwrap();
    let orgs: Vec<String> = (0..ORGS).map(|_| unique_org("many")).collect();
    let mut streams = Vec::with_capacity(ORGS);
    for org in &orgs {
        streams.push(non_reading_stream(hub.addr(), &format!("/v1/orgs/{org}/stream"), &[]).await);
    }
    // Every org's channel plus one canary per master, subscribed on the masters.
    let masters = cluster.masters().await;
    let deadline = tokio::time::Instant::now() + RECOVERY;
    loop {
        let mut channels = 0;
        for &m in &masters {
            if let common::Resp::Array(Some(c)) = cluster.cmd(m, &["PUBSUB", "SHARDCHANNELS"]).await
            {
                channels += c.len();
            }
        }
        if channels == ORGS + masters.len() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{channels} shard channels subscribed, want {}",
            ORGS + masters.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut total = 0;
    for port in cluster.ports() {
        // Everything but this CLIENT LIST and the replication links belongs to the hub.
        let hub_lines: Vec<String> = cluster
            .client_list(port)
            .await
            .into_iter()
            .filter(|l| !l.contains("cmd=client|list"))
            .filter(|l| {
                !l.split(' ')
                    .any(|f| f.starts_with("flags=") && (f.contains('S') || f.contains('M')))
            })
            .collect();
        let pubsub = hub_lines
            .iter()
            .filter(|l| {
                l.split(' ')
                    .any(|f| f.starts_with("ssub=") && f != "ssub=0")
            })
            .count();
        let master = masters.contains(&port);
        eprintln!(
            "node {port} ({}): {} hub connections, {pubsub} with shard subscriptions",
            if master { "master" } else { "replica" },
            hub_lines.len()
        );
        assert_eq!(pubsub, usize::from(master), "node {port}:\n{hub_lines:#?}");
        assert!(
            hub_lines.len() <= 1 + usize::from(master),
            "node {port}: {} connections:\n{hub_lines:#?}",
            hub_lines.len()
        );
        total += hub_lines.len();
    }
    assert!(total <= 2 * masters.len() + (cluster.ports().len() - masters.len()));
    drop(streams);
}
