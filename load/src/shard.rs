//! A shard: the clients `first..first + count`, run either in this process or in a child process
//! (`dashclaw-realtime-load worker`) driven over JSON lines (config, then one reply per command).

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicI64, AtomicU8, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dashclaw_realtime_load::hist::{AtomicHistogram, Histogram};
use dashclaw_realtime_load::seq::SeqCounts;
use dashclaw_realtime_load::template::{Template, Vars};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, sleep_until, timeout};

use crate::cli::Target;
use crate::client::{Client, ClientResult};

/// Everything a shard needs; sent to a worker as its first stdin line.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShardConfig {
    pub first: usize,
    pub count: usize,
    pub orgs: Vec<String>,
    pub targets: Vec<Target>,
    pub stream_path: String,
    pub headers: Vec<(String, String)>,
    pub ready_event: String,
    pub source_addrs: u8,
    /// Connections per second for this shard.
    pub connect_rate: f64,
    pub connect_timeout_ms: u64,
    /// A worker exits by itself after this long, whatever happens.
    pub max_duration_ms: u64,
    /// After a stream ends, wait its last `retry:` hint (else `reconnect_ms`), as EventSource.
    pub honor_retry: bool,
    /// Delay before reconnecting when the server gave no `retry:` hint.
    pub reconnect_ms: u64,
    /// Never give up connecting (waiting `Retry-After` after a refusal): rolling restarts.
    pub persistent: bool,
    /// Record the latency of replayed events too (what a client following across restarts
    /// waits), not only of live ones.
    pub latency_includes_replay: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Open,
    Closed,
    Stop,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Phase {
    pub generation: u64,
    pub mode: Mode,
}

/// Why a connection attempt failed.
#[derive(Debug, Clone, Copy)]
pub enum FailKind {
    Connect,
    Timeout,
    Protocol,
    Closed,
    Status(u16),
}

/// Shared state of a shard's clients (atomics only on the hot path).
pub struct Ctx {
    pub cfg: ShardConfig,
    /// Rendered stream path per org.
    pub stream_paths: Vec<String>,
    epoch: Instant,
    phase_start_us: AtomicU64,
    /// Last sequence number published per org (the expected `1..=n`); 0 = not known yet.
    pub expected: Vec<AtomicU64>,
    pub open: AtomicI64,
    pub joined: AtomicU64,
    pub joined_per_org: Vec<AtomicU64>,
    pub failed_clients: AtomicU64,
    pub attempts: AtomicU64,
    fail_connect: AtomicU64,
    fail_timeout: AtomicU64,
    fail_protocol: AtomicU64,
    fail_closed: AtomicU64,
    fail_status: Mutex<BTreeMap<u16, u64>>,
    pub disconnects: AtomicU64,
    pub delivered: AtomicU64,
    pub unique: AtomicU64,
    pub resyncs: AtomicU64,
    pub other_events: AtomicU64,
    pub caught_up: AtomicU64,
    pub latency: AtomicHistogram,
    pub connect_time: AtomicHistogram,
    pub catchup: AtomicHistogram,
    /// From a stream's end to the next one subscribed.
    pub reconnect: AtomicHistogram,
    /// Delivery latency while the servers restart (phase 1) and after (phase 2).
    pub latency_during: AtomicHistogram,
    pub latency_after: AtomicHistogram,
    latency_phase: AtomicU8,
    /// Streams subscribed per (instance, Unix second); instance "" when not named.
    opens: Mutex<BTreeMap<(String, u64), u64>>,
}

impl Ctx {
    fn new(cfg: ShardConfig) -> Ctx {
        let path = Template::parse(&cfg.stream_path);
        let stream_paths = cfg
            .orgs
            .iter()
            .map(|o| {
                path.render(&Vars {
                    org: o,
                    seq: 0,
                    sent_us: 0,
                })
            })
            .collect();
        let per_org = || cfg.orgs.iter().map(|_| AtomicU64::new(0)).collect();
        Ctx {
            stream_paths,
            epoch: Instant::now(),
            phase_start_us: AtomicU64::new(0),
            expected: per_org(),
            open: AtomicI64::new(0),
            joined: AtomicU64::new(0),
            joined_per_org: per_org(),
            failed_clients: AtomicU64::new(0),
            attempts: AtomicU64::new(0),
            fail_connect: AtomicU64::new(0),
            fail_timeout: AtomicU64::new(0),
            fail_protocol: AtomicU64::new(0),
            fail_closed: AtomicU64::new(0),
            fail_status: Mutex::new(BTreeMap::new()),
            disconnects: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            unique: AtomicU64::new(0),
            resyncs: AtomicU64::new(0),
            other_events: AtomicU64::new(0),
            caught_up: AtomicU64::new(0),
            latency: AtomicHistogram::new(),
            connect_time: AtomicHistogram::new(),
            catchup: AtomicHistogram::new(),
            reconnect: AtomicHistogram::new(),
            latency_during: AtomicHistogram::new(),
            latency_after: AtomicHistogram::new(),
            latency_phase: AtomicU8::new(0),
            opens: Mutex::new(BTreeMap::new()),
            cfg,
        }
    }

    /// The delivery-latency histogram of the current phase.
    pub fn latency_now(&self) -> &AtomicHistogram {
        match self.latency_phase.load(Relaxed) {
            0 => &self.latency,
            1 => &self.latency_during,
            _ => &self.latency_after,
        }
    }

    /// Counts a stream subscribed now on `instance`.
    pub fn opened(&self, instance: Option<&str>) {
        let second = crate::client::wall_us() / 1_000_000;
        *self
            .opens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((instance.unwrap_or_default().to_string(), second))
            .or_default() += 1;
    }

    pub fn fail(&self, kind: FailKind) {
        match kind {
            FailKind::Connect => &self.fail_connect,
            FailKind::Timeout => &self.fail_timeout,
            FailKind::Protocol => &self.fail_protocol,
            FailKind::Closed => &self.fail_closed,
            FailKind::Status(s) => {
                *self
                    .fail_status
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .entry(s)
                    .or_default() += 1;
                return;
            }
        }
        .fetch_add(1, Relaxed);
    }

    /// A catch-up phase (reconnect) has started: catch-up times are recorded from then on.
    pub fn in_catchup_phase(&self) -> bool {
        self.phase_start_us.load(Relaxed) > 0
    }

    pub fn since_phase_start_us(&self) -> u64 {
        (self.epoch.elapsed().as_micros() as u64).saturating_sub(self.phase_start_us.load(Relaxed))
    }

    fn failures(&self) -> BTreeMap<String, u64> {
        let mut m = BTreeMap::new();
        for (k, v) in [
            ("connect_error", &self.fail_connect),
            ("timeout", &self.fail_timeout),
            ("protocol_error", &self.fail_protocol),
            ("closed_before_ready", &self.fail_closed),
        ] {
            let v = v.load(Relaxed);
            if v > 0 {
                m.insert(k.to_string(), v);
            }
        }
        for (s, v) in self
            .fail_status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            m.insert(format!("http_{s}"), *v);
        }
        m
    }
}

/// Commands from the coordinator.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Cmd {
    /// Start connecting the shard's clients at its connect rate.
    Connect,
    Snapshot,
    /// Last published sequence number per org.
    SetExpected {
        expected: Vec<u64>,
    },
    /// Close every connection (state and Last-Event-ID kept); replies when all are closed.
    Drop,
    /// Reconnect every client at once (with Last-Event-ID).
    Reconnect,
    /// Record delivery latencies under phase 0 (before), 1 (during) or 2 (after).
    LatencyPhase {
        phase: u8,
    },
    /// Stop every client and reply with the results.
    Finish,
}

/// Live counters of a shard.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Snapshot {
    pub open: i64,
    pub joined: u64,
    pub failed_clients: u64,
    pub delivered: u64,
    pub unique: u64,
    /// Σ over joined clients of their org's expected count.
    pub expected_total: u64,
    pub caught_up: u64,
}

impl Snapshot {
    pub fn add(&mut self, o: &Snapshot) {
        self.open += o.open;
        self.joined += o.joined;
        self.failed_clients += o.failed_clients;
        self.delivered += o.delivered;
        self.unique += o.unique;
        self.expected_total += o.expected_total;
        self.caught_up += o.caught_up;
    }
}

/// Final results of a shard (merged by addition).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ShardResult {
    pub clients: u64,
    pub joined: u64,
    pub attempts: u64,
    pub failures: BTreeMap<String, u64>,
    pub disconnects: u64,
    pub resyncs: u64,
    pub other_events: u64,
    pub caught_up: u64,
    pub counts: SeqCounts,
    /// Worst single client per counter.
    pub worst: SeqCounts,
    pub worst_missing_client: Option<u64>,
    pub latency_us: Histogram,
    pub connect_us: Histogram,
    pub catchup_us: Histogram,
    pub reconnect_us: Histogram,
    pub latency_during_us: Histogram,
    pub latency_after_us: Histogram,
    /// Streams subscribed per instance and Unix second.
    pub opens: Vec<(String, u64, u64)>,
}

impl ShardResult {
    pub fn merge(&mut self, o: &ShardResult) {
        self.clients += o.clients;
        self.joined += o.joined;
        self.attempts += o.attempts;
        for (k, v) in &o.failures {
            *self.failures.entry(k.clone()).or_default() += v;
        }
        self.disconnects += o.disconnects;
        self.resyncs += o.resyncs;
        self.other_events += o.other_events;
        self.caught_up += o.caught_up;
        self.counts.add(&o.counts);
        if o.worst.missing > self.worst.missing || self.worst_missing_client.is_none() {
            self.worst_missing_client = o.worst_missing_client.or(self.worst_missing_client);
        }
        self.worst = worst_of(&self.worst, &o.worst);
        self.latency_us.merge(&o.latency_us);
        self.connect_us.merge(&o.connect_us);
        self.catchup_us.merge(&o.catchup_us);
        self.reconnect_us.merge(&o.reconnect_us);
        self.latency_during_us.merge(&o.latency_during_us);
        self.latency_after_us.merge(&o.latency_after_us);
        let mut opens: BTreeMap<(String, u64), u64> =
            self.opens.drain(..).map(|(i, s, n)| ((i, s), n)).collect();
        for (instance, second, n) in &o.opens {
            *opens.entry((instance.clone(), *second)).or_default() += n;
        }
        self.opens = opens.into_iter().map(|((i, s), n)| (i, s, n)).collect();
    }
}

/// Per-field maximum, except `unique`/`delivered`/`expected`, which keep the worst client's
/// own figures when it is worse on missing.
fn worst_of(a: &SeqCounts, b: &SeqCounts) -> SeqCounts {
    let a_unset = a.expected == 0 && a.delivered == 0;
    let base = if b.missing > a.missing || a_unset {
        b
    } else {
        a
    };
    SeqCounts {
        missing: a.missing.max(b.missing),
        duplicates: a.duplicates.max(b.duplicates),
        out_of_order: a.out_of_order.max(b.out_of_order),
        unexpected: a.unexpected.max(b.unexpected),
        ..*base
    }
}

/// Replies to commands.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    Ok,
    Snapshot(Snapshot),
    Result(Box<ShardResult>),
    Error { message: String },
}

/// The spawned client tasks with their global index.
type Tasks = Arc<Mutex<Vec<(usize, JoinHandle<ClientResult>)>>>;

/// The clients of one shard, in this process.
pub struct Shard {
    ctx: Arc<Ctx>,
    phase_tx: watch::Sender<Phase>,
    tasks: Tasks,
    spawner: Option<JoinHandle<()>>,
}

impl Shard {
    pub fn new(cfg: ShardConfig) -> Shard {
        let (phase_tx, _) = watch::channel(Phase {
            generation: 0,
            mode: Mode::Open,
        });
        Shard {
            ctx: Arc::new(Ctx::new(cfg)),
            phase_tx,
            tasks: Arc::new(Mutex::new(Vec::new())),
            spawner: None,
        }
    }

    pub async fn handle(&mut self, cmd: Cmd) -> Reply {
        match cmd {
            Cmd::Connect => {
                if self.spawner.is_none() {
                    self.spawner = Some(tokio::spawn(spawn_clients(
                        self.ctx.clone(),
                        self.phase_tx.clone(),
                        self.tasks.clone(),
                    )));
                }
                Reply::Ok
            }
            Cmd::Snapshot => Reply::Snapshot(self.snapshot()),
            Cmd::SetExpected { expected } => {
                for (slot, v) in self.ctx.expected.iter().zip(expected) {
                    slot.store(v, Relaxed);
                }
                Reply::Ok
            }
            Cmd::Drop => {
                let generation = self.phase_tx.borrow().generation;
                self.phase_tx.send_replace(Phase {
                    generation,
                    mode: Mode::Closed,
                });
                let until = Instant::now() + Duration::from_secs(30);
                while self.ctx.open.load(Relaxed) > 0 && Instant::now() < until {
                    sleep(Duration::from_millis(5)).await;
                }
                Reply::Ok
            }
            Cmd::Reconnect => {
                let now = self.ctx.epoch.elapsed().as_micros() as u64;
                self.ctx.phase_start_us.store(now.max(1), Relaxed);
                self.ctx.caught_up.store(0, Relaxed);
                let generation = self.phase_tx.borrow().generation + 1;
                self.phase_tx.send_replace(Phase {
                    generation,
                    mode: Mode::Open,
                });
                Reply::Ok
            }
            Cmd::LatencyPhase { phase } => {
                self.ctx.latency_phase.store(phase, Relaxed);
                Reply::Ok
            }
            Cmd::Finish => Reply::Result(Box::new(self.finish().await)),
        }
    }

    fn snapshot(&self) -> Snapshot {
        let c = &self.ctx;
        let expected_total = c
            .joined_per_org
            .iter()
            .zip(&c.expected)
            .map(|(j, e)| j.load(Relaxed) * e.load(Relaxed))
            .sum();
        Snapshot {
            open: c.open.load(Relaxed),
            joined: c.joined.load(Relaxed),
            failed_clients: c.failed_clients.load(Relaxed),
            delivered: c.delivered.load(Relaxed),
            unique: c.unique.load(Relaxed),
            expected_total,
            caught_up: c.caught_up.load(Relaxed),
        }
    }

    async fn finish(&mut self) -> ShardResult {
        if let Some(s) = self.spawner.take() {
            s.abort();
            let _ = s.await;
        }
        self.phase_tx.send_replace(Phase {
            generation: u64::MAX,
            mode: Mode::Stop,
        });
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        let c = &self.ctx;
        let mut r = ShardResult {
            clients: c.cfg.count as u64,
            ..ShardResult::default()
        };
        for (index, task) in tasks {
            let Ok(cr) = task.await else { continue };
            if cr.joined {
                r.joined += 1;
            }
            r.counts.add(&cr.counts);
            if cr.counts.missing > r.worst.missing || r.worst_missing_client.is_none() {
                r.worst_missing_client = Some(index as u64);
            }
            r.worst = worst_of(&r.worst, &cr.counts);
        }
        r.attempts = c.attempts.load(Relaxed);
        r.failures = c.failures();
        r.disconnects = c.disconnects.load(Relaxed);
        r.resyncs = c.resyncs.load(Relaxed);
        r.other_events = c.other_events.load(Relaxed);
        r.caught_up = c.caught_up.load(Relaxed);
        r.latency_us = c.latency.snapshot();
        r.connect_us = c.connect_time.snapshot();
        r.catchup_us = c.catchup.snapshot();
        r.reconnect_us = c.reconnect.snapshot();
        r.latency_during_us = c.latency_during.snapshot();
        r.latency_after_us = c.latency_after.snapshot();
        r.opens = c
            .opens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|((i, s), n)| (i.clone(), *s, *n))
            .collect();
        r
    }
}

/// Spawn the shard's client tasks at its connect rate.
async fn spawn_clients(ctx: Arc<Ctx>, phase_tx: watch::Sender<Phase>, tasks: Tasks) {
    let start = Instant::now();
    let rate = ctx.cfg.connect_rate.max(0.001);
    for k in 0..ctx.cfg.count {
        sleep_until(start + Duration::from_secs_f64(k as f64 / rate)).await;
        let index = ctx.cfg.first + k;
        let client = Client::new(index, &ctx);
        let handle = tokio::spawn(client.run(ctx.clone(), phase_tx.subscribe()));
        tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((index, handle));
    }
}

/// `dashclaw-realtime-load worker`: read the config line, then serve commands until `finish`
/// or end of input (the parent went away).
pub async fn worker_main() -> Result<(), String> {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let first = lines
        .next_line()
        .await
        .map_err(|e| e.to_string())?
        .ok_or("worker: no config on stdin")?;
    let cfg: ShardConfig =
        serde_json::from_str(&first).map_err(|e| format!("worker config: {e}"))?;
    let max = Duration::from_millis(cfg.max_duration_ms) + Duration::from_secs(60);
    tokio::spawn(async move {
        sleep(max).await;
        eprintln!("dashclaw-realtime-load worker: max duration exceeded, exiting");
        std::process::exit(3);
    });
    let mut shard = Shard::new(cfg);
    let mut out = tokio::io::stdout();
    while let Some(line) = lines.next_line().await.map_err(|e| e.to_string())? {
        let (reply, done) = match serde_json::from_str::<Cmd>(&line) {
            Ok(cmd) => {
                let done = matches!(cmd, Cmd::Finish);
                (shard.handle(cmd).await, done)
            }
            Err(e) => (
                Reply::Error {
                    message: format!("bad command {line:?}: {e}"),
                },
                false,
            ),
        };
        let mut text = serde_json::to_string(&reply).map_err(|e| e.to_string())?;
        text.push('\n');
        out.write_all(text.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        out.flush().await.map_err(|e| e.to_string())?;
        if done {
            return Ok(());
        }
    }
    shard.handle(Cmd::Finish).await;
    Ok(())
}

/// A shard in a child process.
pub struct RemoteShard {
    child: Child,
    stdin: ChildStdin,
    stdout: tokio::io::Lines<BufReader<ChildStdout>>,
}

impl RemoteShard {
    pub async fn spawn(cfg: &ShardConfig) -> Result<RemoteShard, String> {
        let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
        let mut child = Command::new(exe)
            .arg("worker")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("spawning worker: {e}"))?;
        let mut stdin = child.stdin.take().ok_or("worker stdin")?;
        let stdout = BufReader::new(child.stdout.take().ok_or("worker stdout")?).lines();
        let mut line = serde_json::to_string(cfg).map_err(|e| e.to_string())?;
        line.push('\n');
        stdin
            .write_all(line.as_bytes())
            .await
            .map_err(|e| format!("writing worker config: {e}"))?;
        Ok(RemoteShard {
            child,
            stdin,
            stdout,
        })
    }

    async fn call(&mut self, cmd: &Cmd) -> Result<Reply, String> {
        let mut line = serde_json::to_string(cmd).map_err(|e| e.to_string())?;
        line.push('\n');
        let pid = self.child.id().unwrap_or(0);
        self.stdin
            .write_all(line.as_bytes())
            .await
            .map_err(|e| format!("worker {pid}: {e}"))?;
        self.stdin
            .flush()
            .await
            .map_err(|e| format!("worker {pid}: {e}"))?;
        let reply = timeout(Duration::from_secs(120), self.stdout.next_line())
            .await
            .map_err(|_| format!("worker {pid}: no reply within 120 s"))?
            .map_err(|e| format!("worker {pid}: {e}"))?
            .ok_or_else(|| format!("worker {pid} exited"))?;
        serde_json::from_str(&reply).map_err(|e| format!("worker {pid}: bad reply {reply:?}: {e}"))
    }
}

/// A shard, local or remote, behind one interface.
pub enum ShardHandle {
    Local(Box<Shard>),
    Remote(Box<RemoteShard>),
}

impl ShardHandle {
    pub async fn call(&mut self, cmd: &Cmd) -> Result<Reply, String> {
        let reply = match self {
            ShardHandle::Local(s) => s.handle(cmd.clone()).await,
            ShardHandle::Remote(r) => r.call(cmd).await?,
        };
        match reply {
            Reply::Error { message } => Err(message),
            r => Ok(r),
        }
    }

    /// Wait for a child to exit after `finish` (bounded).
    pub async fn reap(&mut self) {
        if let ShardHandle::Remote(r) = self {
            drop(r.stdin.shutdown().await);
            if timeout(Duration::from_secs(5), r.child.wait())
                .await
                .is_err()
            {
                let _ = r.child.start_kill();
                let _ = r.child.wait().await;
            }
        }
    }
}
