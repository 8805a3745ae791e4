#![allow(dead_code)]
//! `TestCluster`: a private Redis Cluster of 3 masters and 3 replicas (`redis-server
//! --cluster-enabled yes`, formed with `redis-cli --cluster create … --cluster-replicas 1`)
//! on free loopback ports below 55,000 (a node's bus port is its port + 10,000), with fault
//! injection: SIGKILL/SIGSTOP a node, restart it, move a slot, force a takeover.
//!
//! Every node is started from one long-lived spawner thread with `PR_SET_PDEATHSIG`, so a
//! cluster shared by the tests of one binary dies with the test process; a cluster a test
//! owns is killed by its own pids when dropped.

use std::collections::{BTreeMap, HashSet};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use tokio::time::Instant;

use super::hub::free_port;
use super::redis::{Resp, redis_server_path, resp_command};

/// `cluster-node-timeout`: how long a master may be unreachable before its replica takes
/// over (failover then takes about two to three times this).
pub const NODE_TIMEOUT_MS: u64 = 1000;
/// Upper bound for the cluster to form or heal; never a speed expectation.
const FORM_TIMEOUT: Duration = Duration::from_secs(60);

type SpawnRequest = (Command, mpsc::Sender<std::io::Result<Child>>);

/// Spawns `command` from a thread that lives as long as the test process, with the child
/// asked to die with it (`PR_SET_PDEATHSIG` fires when the spawning thread ends).
fn spawn_tied_to_process(mut command: Command) -> std::io::Result<Child> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("redis-spawner".into())
            .spawn(move || {
                for (mut command, reply) in rx {
                    let _ = reply.send(command.spawn());
                }
            })
            .expect("spawner thread");
        Mutex::new(tx)
    });
    // SAFETY: prctl is async-signal-safe, and nothing else runs in the child before exec.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let (tx, rx) = mpsc::channel();
    spawner
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .send((command, tx))
        .expect("spawner alive");
    rx.recv().expect("spawner answers")
}

/// A port below 55,000 whose bus port (+10,000) is free too, not in `taken`.
fn cluster_port(taken: &HashSet<u16>) -> u16 {
    for _ in 0..1000 {
        let port = free_port();
        if (1024..55_000).contains(&port)
            && !taken.contains(&port)
            && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok()
        {
            return port;
        }
    }
    panic!("no free port below 55000 with a free bus port");
}

struct Node {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
    paused: bool,
}

impl Node {
    fn start(&mut self) {
        std::fs::create_dir_all(&self.dir).expect("node dir");
        let mut command = Command::new(redis_server_path());
        command
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--cluster-enabled", "yes"])
            .args(["--cluster-node-timeout", &NODE_TIMEOUT_MS.to_string()])
            // A shard without a master stops only its own slots, as the hub's per-shard
            // readiness expects (the default stops the whole cluster).
            .args(["--cluster-require-full-coverage", "no"])
            // A replica frozen by a test for longer than the node timeout still fails over
            // once it runs again (its data's age is what the test decides, not the clock).
            .args(["--cluster-replica-validity-factor", "0"])
            .args(["--cluster-config-file", "nodes.conf"])
            .arg("--dir")
            .arg(&self.dir)
            .args(["--save", "", "--appendonly", "no"])
            .args(["--daemonize", "no", "--protected-mode", "no"])
            .args(["--enable-debug-command", "local"])
            .args(["--maxclients", "10000"])
            .arg("--logfile")
            .arg(self.dir.join("redis.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = spawn_tied_to_process(command).unwrap_or_else(|e| {
            panic!("cannot start redis-server (install it: apt-get install redis-server): {e}")
        });
        self.child = Some(child);
        self.paused = false;
    }

    fn signal(&self, signal: libc::c_int) {
        if let Some(child) = &self.child {
            // SAFETY: signalling our own child process by its pid.
            unsafe {
                libc::kill(child.id() as libc::pid_t, signal);
            }
        }
    }

    /// SIGKILL, which also ends a stopped process (it never runs again).
    fn kill(&mut self) {
        self.paused = false;
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One line of `CLUSTER NODES`.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    /// The node id.
    pub id: String,
    /// Its client port.
    pub port: u16,
    /// A master (else a replica).
    pub master: bool,
    /// Marked failing (`fail`/`fail?`).
    pub failing: bool,
    /// The slots it serves, as inclusive ranges.
    pub slots: Vec<(u16, u16)>,
}

/// A private 6-node Redis Cluster. Dropping it kills its nodes.
pub struct TestCluster {
    dir: tempfile::TempDir,
    nodes: Mutex<Vec<Node>>,
}

impl TestCluster {
    /// Starts six nodes, forms the cluster and waits until every slot is served and every
    /// master has an online replica.
    pub async fn start() -> TestCluster {
        let dir = tempfile::tempdir().expect("tempdir for the cluster");
        let mut taken = HashSet::new();
        let mut nodes = Vec::new();
        for _ in 0..6 {
            let port = cluster_port(&taken);
            taken.insert(port);
            let mut node = Node {
                port,
                dir: dir.path().join(port.to_string()),
                child: None,
                paused: false,
            };
            node.start();
            nodes.push(node);
        }
        let cluster = TestCluster {
            dir,
            nodes: Mutex::new(nodes),
        };
        for port in cluster.ports() {
            cluster.wait_answering(port).await;
        }
        let addresses: Vec<String> = cluster
            .ports()
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let output = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .expect("redis-cli --cluster create (install redis-tools)");
        assert!(
            output.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        cluster.wait_healthy(3).await;
        cluster
    }

    /// The cluster shared by the tests of this binary (they use their own key prefixes);
    /// for tests that do not disturb it.
    pub async fn shared() -> &'static TestCluster {
        static SHARED: tokio::sync::OnceCell<TestCluster> = tokio::sync::OnceCell::const_new();
        SHARED.get_or_init(TestCluster::start).await
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Node>> {
        self.nodes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every node's port.
    pub fn ports(&self) -> Vec<u16> {
        self.lock().iter().map(|n| n.port).collect()
    }

    /// `redis+cluster://127.0.0.1:p1,127.0.0.1:p2` (two seeds).
    pub fn url(&self) -> String {
        let ports = self.ports();
        format!(
            "redis+cluster://127.0.0.1:{},127.0.0.1:{}",
            ports[0], ports[1]
        )
    }

    /// A node's data directory.
    pub fn node_dir(&self, port: u16) -> PathBuf {
        self.dir.path().join(port.to_string())
    }

    /// A node's log.
    pub fn log_text(&self, port: u16) -> String {
        std::fs::read_to_string(self.node_dir(port).join("redis.log")).unwrap_or_default()
    }

    async fn wait_answering(&self, port: u16) {
        let deadline = Instant::now() + FORM_TIMEOUT;
        while Instant::now() < deadline {
            if matches!(resp_command(port, &["PING"]).await, Ok(Resp::Simple(p)) if p == "PONG") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!(
            "node {port} did not answer PING; log:\n{}",
            self.log_text(port)
        );
    }

    /// Runs one command on node `port`.
    pub async fn cmd(&self, port: u16, args: &[&str]) -> Resp {
        resp_command(port, args)
            .await
            .unwrap_or_else(|e| panic!("node {port}: {args:?} failed: {e}"))
    }

    /// A text reply of node `port`.
    pub async fn text(&self, port: u16, args: &[&str]) -> String {
        let reply = self.cmd(port, args).await;
        reply
            .text()
            .unwrap_or_else(|| panic!("node {port}: {args:?} answered {reply:?}"))
    }

    /// Ports of the nodes that are running and not paused.
    pub fn live_ports(&self) -> Vec<u16> {
        self.lock()
            .iter()
            .filter(|n| n.child.is_some() && !n.paused)
            .map(|n| n.port)
            .collect()
    }

    /// `CLUSTER NODES` as one live node sees it.
    pub async fn nodes(&self) -> Vec<NodeInfo> {
        let port = self.live_ports()[0];
        parse_nodes(&self.text(port, &["CLUSTER", "NODES"]).await)
    }

    /// The slot of `key` (`CLUSTER KEYSLOT`).
    pub async fn slot_of(&self, key: &str) -> u16 {
        let port = self.live_ports()[0];
        match self.cmd(port, &["CLUSTER", "KEYSLOT", key]).await {
            Resp::Int(slot) => slot as u16,
            other => panic!("CLUSTER KEYSLOT {key}: {other:?}"),
        }
    }

    /// The port of the master serving `slot`, as the live nodes agree.
    pub async fn master_of_slot(&self, slot: u16) -> u16 {
        self.nodes()
            .await
            .iter()
            .find(|n| n.master && n.slots.iter().any(|(s, e)| *s <= slot && slot <= *e))
            .map(|n| n.port)
            .unwrap_or_else(|| panic!("no master serves slot {slot}"))
    }

    /// The port of the master serving `key`'s slot.
    pub async fn master_of(&self, key: &str) -> u16 {
        let slot = self.slot_of(key).await;
        self.master_of_slot(slot).await
    }

    /// Ports of the masters serving slots, in port order.
    pub async fn masters(&self) -> Vec<u16> {
        let mut masters: Vec<u16> = self
            .nodes()
            .await
            .iter()
            .filter(|n| n.master && !n.slots.is_empty())
            .map(|n| n.port)
            .collect();
        masters.sort_unstable();
        masters
    }

    /// The port of `master`'s replica.
    pub async fn replica_of(&self, master: u16) -> u16 {
        let port = self.live_ports()[0];
        let nodes = self.text(port, &["CLUSTER", "NODES"]).await;
        let id = parse_nodes(&nodes)
            .into_iter()
            .find(|n| n.port == master)
            .map(|n| n.id)
            .unwrap_or_else(|| panic!("no node on {master}"));
        nodes
            .lines()
            .find(|l| l.split(' ').nth(3) == Some(id.as_str()))
            .and_then(|l| parse_nodes(l).pop())
            .map(|n| n.port)
            .unwrap_or_else(|| panic!("{master} has no replica:\n{nodes}"))
    }

    /// SIGKILL (no persistence: the node comes back empty and rejoins as a replica).
    pub fn kill(&self, port: u16) {
        if let Some(node) = self.lock().iter_mut().find(|n| n.port == port) {
            node.kill();
        }
    }

    /// SIGSTOP (`true`) or SIGCONT (`false`).
    pub fn pause(&self, port: u16, paused: bool) {
        if let Some(node) = self.lock().iter_mut().find(|n| n.port == port) {
            node.signal(if paused { libc::SIGSTOP } else { libc::SIGCONT });
            node.paused = paused;
        }
    }

    /// Starts a killed node again with its `nodes.conf` (and its `dump.rdb` if it saved one).
    pub async fn restart(&self, port: u16) {
        if let Some(node) = self.lock().iter_mut().find(|n| n.port == port) {
            node.kill();
            node.start();
        }
        self.wait_answering(port).await;
    }

    /// Waits until every live node says `cluster_state:ok` with all 16384 slots served,
    /// agrees on the masters, and `replicas` replicas are online.
    pub async fn wait_healthy(&self, replicas: usize) {
        let deadline = Instant::now() + FORM_TIMEOUT;
        loop {
            let (healthy, why) = self.health(replicas).await;
            if healthy {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "cluster not healthy within {FORM_TIMEOUT:?}: {why}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn health(&self, replicas: usize) -> (bool, String) {
        let mut views = HashSet::new();
        let mut online = 0;
        for port in self.live_ports() {
            let Ok(info) = resp_command(port, &["CLUSTER", "INFO"]).await else {
                return (false, format!("{port} does not answer"));
            };
            let info = info.text().unwrap_or_default();
            if !info.contains("cluster_state:ok") || !info.contains("cluster_slots_ok:16384") {
                return (false, format!("{port}: {info}"));
            }
            let Ok(nodes) = resp_command(port, &["CLUSTER", "NODES"]).await else {
                return (false, format!("{port} does not answer"));
            };
            let mut masters: Vec<(u16, Vec<(u16, u16)>)> =
                parse_nodes(&nodes.text().unwrap_or_default())
                    .into_iter()
                    .filter(|n| n.master && !n.slots.is_empty())
                    .map(|n| (n.port, n.slots))
                    .collect();
            masters.sort();
            views.insert(format!("{masters:?}"));
            let replication = resp_command(port, &["INFO", "replication"]).await;
            let replication = replication.ok().and_then(|r| r.text()).unwrap_or_default();
            online += replication.matches("state=online").count();
        }
        if views.len() != 1 {
            return (false, format!("nodes disagree on the masters: {views:?}"));
        }
        if online < replicas {
            return (false, format!("{online} of {replicas} replicas online"));
        }
        (true, String::new())
    }

    /// Waits until `old` no longer serves slots and the cluster is healthy again (with
    /// `replicas` replicas online).
    pub async fn wait_failed_over(&self, old: u16, replicas: usize) {
        let deadline = Instant::now() + FORM_TIMEOUT;
        while self.masters_seen_by_live().await.contains(&old) {
            assert!(Instant::now() < deadline, "{old} was never replaced");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.wait_healthy(replicas).await;
    }

    async fn masters_seen_by_live(&self) -> Vec<u16> {
        for port in self.live_ports() {
            if let Ok(Resp::Bulk(Some(text))) = resp_command(port, &["CLUSTER", "NODES"]).await {
                return parse_nodes(&String::from_utf8_lossy(&text))
                    .into_iter()
                    .filter(|n| n.master && !n.slots.is_empty() && !n.failing)
                    .map(|n| n.port)
                    .collect();
            }
        }
        Vec::new()
    }

    /// Moves `slot` (and its keys) to the master on `to`: `CLUSTER SETSLOT … IMPORTING` /
    /// `MIGRATING`, `MIGRATE` of every key in it, then `SETSLOT … NODE` on every master.
    pub async fn move_slot(&self, slot: u16, to: u16) {
        let from = self.master_of_slot(slot).await;
        assert_ne!(from, to, "slot {slot} is already on {to}");
        let nodes = self.nodes().await;
        let id_of = |port: u16| {
            nodes
                .iter()
                .find(|n| n.port == port)
                .map(|n| n.id.clone())
                .unwrap_or_else(|| panic!("no node on {port}"))
        };
        let (from_id, to_id) = (id_of(from), id_of(to));
        let slot_text = slot.to_string();
        self.ok(
            to,
            &["CLUSTER", "SETSLOT", &slot_text, "IMPORTING", &from_id],
        )
        .await;
        self.ok(
            from,
            &["CLUSTER", "SETSLOT", &slot_text, "MIGRATING", &to_id],
        )
        .await;
        loop {
            let keys = match self
                .cmd(from, &["CLUSTER", "GETKEYSINSLOT", &slot_text, "100"])
                .await
            {
                Resp::Array(Some(keys)) => keys.iter().filter_map(Resp::text).collect::<Vec<_>>(),
                other => panic!("GETKEYSINSLOT: {other:?}"),
            };
            if keys.is_empty() {
                break;
            }
            let to_port = to.to_string();
            let mut migrate = vec!["MIGRATE", "127.0.0.1", &to_port, "", "0", "5000", "KEYS"];
            migrate.extend(keys.iter().map(String::as_str));
            let reply = self.cmd(from, &migrate).await;
            assert!(matches!(reply, Resp::Simple(_)), "MIGRATE: {reply:?}");
        }
        self.ok(to, &["CLUSTER", "SETSLOT", &slot_text, "NODE", &to_id])
            .await;
        self.ok(from, &["CLUSTER", "SETSLOT", &slot_text, "NODE", &to_id])
            .await;
        for master in self.masters().await {
            if master != from && master != to {
                self.ok(master, &["CLUSTER", "SETSLOT", &slot_text, "NODE", &to_id])
                    .await;
            }
        }
    }

    async fn ok(&self, port: u16, args: &[&str]) {
        let reply = self.cmd(port, args).await;
        assert_eq!(reply, Resp::Simple("OK".into()), "node {port}: {args:?}");
    }

    /// `(envelope id, cursor)` of every entry of the stream `key`, oldest first, from its
    /// master.
    pub async fn stream_entries(&self, key: &str) -> Vec<(String, String)> {
        let master = self.master_of(key).await;
        let Resp::Array(Some(entries)) = self.cmd(master, &["XRANGE", key, "-", "+"]).await else {
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
                let data: serde_json::Value = serde_json::from_str(&fields.get(1)?.text()?).ok()?;
                Some((data["id"].as_str()?.to_owned(), cursor))
            })
            .collect()
    }

    /// Waits until `replica` has applied everything `master` replicated so far.
    pub async fn wait_replica_caught_up(&self, master: u16, replica: u16) {
        let offset = |text: String, field: &str| -> Option<i64> {
            text.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().parse().ok())
        };
        let target = offset(
            self.text(master, &["INFO", "replication"]).await,
            "master_repl_offset:",
        )
        .expect("master_repl_offset");
        let deadline = Instant::now() + FORM_TIMEOUT;
        loop {
            let info = self.text(replica, &["INFO", "replication"]).await;
            if offset(info, "slave_repl_offset:").is_some_and(|o| o >= target) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{replica} never caught up with {master}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `CLIENT LIST` of one node, one line per client.
    pub async fn client_list(&self, port: u16) -> Vec<String> {
        self.text(port, &["CLIENT", "LIST"])
            .await
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// Masters by port with how many of `keys` each serves.
    pub async fn spread(&self, keys: &[String]) -> BTreeMap<u16, usize> {
        let mut spread: BTreeMap<u16, usize> =
            self.masters().await.into_iter().map(|m| (m, 0)).collect();
        for key in keys {
            *spread.entry(self.master_of(key).await).or_default() += 1;
        }
        spread
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for node in self.lock().iter_mut() {
            node.kill();
        }
    }
}

/// Parses `CLUSTER NODES` lines: `<id> <ip:port@bus> <flags> <master> … <slot ranges>`.
pub fn parse_nodes(text: &str) -> Vec<NodeInfo> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let address = fields.get(1)?;
            let port = address
                .split('@')
                .next()?
                .rsplit(':')
                .next()?
                .parse()
                .ok()?;
            let flags = fields.get(2)?;
            let slots = fields
                .iter()
                .skip(8)
                .filter(|f| !f.starts_with('['))
                .filter_map(|range| {
                    let (start, end) = range.split_once('-').unwrap_or((range, range));
                    Some((start.parse().ok()?, end.parse().ok()?))
                })
                .collect();
            Some(NodeInfo {
                id: fields.first()?.to_string(),
                port,
                master: flags.contains("master"),
                failing: flags.contains("fail"),
                slots,
            })
        })
        .collect()
}
