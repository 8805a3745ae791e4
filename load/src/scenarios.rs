//! The scenarios: shard set-up, phases with progress bars, and the report.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::Duration;

use dashclaw_realtime_load::rates::busiest_second;
use dashclaw_realtime_load::template::Template;
use futures_util::future::join_all;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::time::{Instant, sleep};

use crate::cli::{Command, Opts, RollingOpts, Target, parse_headers};
use crate::client::wall_us;
use crate::embedded::EmbeddedHub;
use crate::procfs::{ProcSample, sample_all};
use crate::publish::{Outcome, Publisher, Run};
use crate::report::{
    BurstReport, ConfigReport, ConnectReport, Quantiles, Report, RestartStep, ResumeReport,
    RollingReport, ServerReport,
};
use crate::shard::{
    Cmd, RemoteShard, Reply, Shard, ShardConfig, ShardHandle, ShardResult, Snapshot,
};
use crate::stats::{HubPeaks, StatsWatch};

/// Largest batch the contract accepts.
const MAX_BATCH: usize = 1000;
/// Largest client count accepted (bounded runs).
const MAX_CLIENTS: usize = 250_000;

struct Runner {
    opts: Opts,
    scenario: &'static str,
    shards: Vec<ShardHandle>,
    publisher: Publisher,
    deadline: Instant,
    started: Instant,
    progress: bool,
    timed_out: bool,
    notes: Vec<String>,
    /// `rolling-restart` only.
    rolling: Option<RollingOpts>,
    /// Wall-clock second of the first restart (peaks are taken from then on).
    restart_from_unix_s: u64,
    hub_peaks: Option<HubPeaks>,
    /// The steps run and whether all succeeded.
    rolling_steps: Option<(Vec<RestartStep>, bool)>,
}

fn validate(o: &Opts) -> Result<(), String> {
    let check = |ok: bool, msg: &str| if ok { Ok(()) } else { Err(msg.to_string()) };
    check(
        (1..=MAX_CLIENTS).contains(&o.clients),
        "--clients must be 1..=250000",
    )?;
    check(
        o.orgs >= 1 && o.orgs <= 100_000,
        "--orgs must be 1..=100000",
    )?;
    check(
        (1..=MAX_BATCH).contains(&o.batch),
        "--batch must be 1..=1000",
    )?;
    check(
        o.rate > 0.0 && o.rate.is_finite(),
        "--rate must be positive",
    )?;
    check(
        o.connect_rate > 0.0 && o.connect_rate.is_finite(),
        "--connect-rate must be positive",
    )?;
    check(
        (1..=250).contains(&o.source_addrs),
        "--source-addrs must be 1..=250",
    )?;
    check(o.per_process >= 1, "--per-process must be at least 1")?;
    check(o.publishers >= 1, "--publishers must be at least 1")?;
    check(
        o.duration >= 0.0 && o.duration.is_finite(),
        "--duration must be >= 0",
    )?;
    check(
        o.max_duration > 0.0 && o.max_duration.is_finite(),
        "--max-duration must be positive",
    )?;
    check(
        o.drain_timeout >= 0.0 && o.drain_timeout.is_finite(),
        "--drain-timeout must be >= 0",
    )?;
    check(
        o.connect_timeout > 0.0 && o.connect_timeout.is_finite(),
        "--connect-timeout must be positive",
    )?;
    for p in [&o.stream_path, &o.publish_path] {
        check(p.starts_with('/'), "paths must start with '/'")?;
        check(
            !p.contains([' ', '\r', '\n']),
            "paths must not contain spaces or line breaks",
        )?;
    }
    let body = Template::parse(&o.publish_body);
    check(body.uses("seq"), "--publish-body must contain {seq}")?;
    check(
        body.uses("sent_ms") || body.uses("sent_us"),
        "--publish-body must contain {sent_ms} or {sent_us}",
    )?;
    Ok(())
}

fn validate_rolling(r: &RollingOpts) -> Result<(), String> {
    let secs = |v: f64| v >= 0.0 && v.is_finite();
    if r.restart_cmd.trim().is_empty() {
        return Err("--restart-cmd must not be empty".into());
    }
    if !(1..=100).contains(&r.restarts) {
        return Err("--restarts must be 1..=100".into());
    }
    if !(secs(r.before) && secs(r.after) && r.restart_timeout > 0.0 && secs(r.restart_timeout)) {
        return Err("--before, --after and --restart-timeout must be >= 0 (timeout > 0)".into());
    }
    if r.stats_watchers > 64 {
        return Err("--stats-watchers must be at most 64".into());
    }
    Ok(())
}

pub async fn run(command: &Command) -> Result<Report, String> {
    let (opts, rolling) = match command {
        Command::Fanout(o) | Command::Idle(o) | Command::Burst(o) | Command::ResumeStorm(o) => {
            (o, None)
        }
        Command::RollingRestart(r) => (&r.opts, Some(r.clone())),
        Command::Worker => return Err("not a scenario".into()),
    };
    validate(opts)?;
    if let Some(r) = &rolling {
        validate_rolling(r)?;
    }
    let embedded = if opts.embed_hub {
        Some(EmbeddedHub::start()?)
    } else {
        None
    };
    let mut opts = opts.clone();
    if let Some(e) = &embedded {
        opts.urls = vec![format!("http://{}", e.addr)];
        opts.publish_urls.clear();
        if opts.server_pids.is_empty() {
            opts.server_pids.push(std::process::id());
        }
    }
    let opts = &opts;
    let targets: Vec<Target> = opts
        .urls
        .iter()
        .map(|u| Target::parse(u))
        .collect::<Result<_, _>>()?;
    let pub_targets: Vec<Target> = if opts.publish_urls.is_empty() {
        targets.clone()
    } else {
        opts.publish_urls
            .iter()
            .map(|u| Target::parse(u))
            .collect::<Result<_, _>>()?
    };
    let headers = parse_headers(&opts.headers)?;
    let orgs: Vec<String> = (0..opts.orgs)
        .map(|j| {
            if opts.fixed_orgs {
                format!("{}_{j}", opts.org_prefix)
            } else {
                format!(
                    "{}_{:06x}_{j}",
                    opts.org_prefix,
                    (wall_us() / 1000) & 0xFF_FFFF
                )
            }
        })
        .collect();
    let org_ok = |o: &str| {
        o.len() <= 64
            && o.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    };
    if !orgs.iter().all(|o| org_ok(o)) {
        return Err("--org-prefix gives org ids outside ^[A-Za-z0-9_-]{1,64}$".into());
    }
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(opts.max_duration);

    // Shards: in this process, or child processes above --per-process.
    let n = opts.clients;
    let processes = n.div_ceil(opts.per_process);
    let mut shards = Vec::with_capacity(processes);
    for w in 0..processes {
        let first = n * w / processes;
        let count = n * (w + 1) / processes - first;
        let cfg = ShardConfig {
            first,
            count,
            orgs: orgs.clone(),
            targets: targets.clone(),
            stream_path: opts.stream_path.clone(),
            headers: headers.clone(),
            ready_event: opts.ready_event.clone(),
            source_addrs: opts.source_addrs,
            connect_rate: opts.connect_rate / processes as f64,
            connect_timeout_ms: (opts.connect_timeout * 1000.0) as u64,
            max_duration_ms: (opts.max_duration * 1000.0) as u64,
            honor_retry: rolling.is_some(),
            reconnect_ms: rolling.as_ref().map_or(100, |r| r.reconnect_ms),
            persistent: rolling.is_some(),
            latency_includes_replay: rolling.is_some(),
        };
        shards.push(if processes == 1 {
            ShardHandle::Local(Box::new(Shard::new(cfg)))
        } else {
            ShardHandle::Remote(Box::new(RemoteShard::spawn(&cfg).await?))
        });
    }
    let publisher = Publisher {
        orgs: Arc::new(orgs),
        targets: Arc::new(pub_targets),
        path: Arc::new(Template::parse(&opts.publish_path)),
        body: Arc::new(Template::parse(&opts.publish_body)),
        content_type: opts.content_type.as_str().into(),
        headers: Arc::new(headers),
        batch: opts.batch,
        connections: opts.publishers,
        next_seq: Arc::new((0..opts.orgs).map(|_| AtomicU64::new(0)).collect()),
        accepted: Arc::new(AtomicU64::new(0)),
        in_process: embedded.map(|e| e.hub),
        stop: Arc::new(AtomicBool::new(false)),
        persist: rolling.is_some(),
    };
    let mut r = Runner {
        opts: opts.clone(),
        scenario: command.name(),
        shards,
        publisher,
        deadline,
        started,
        progress: !opts.json && std::io::stderr().is_terminal(),
        timed_out: false,
        notes: Vec::new(),
        rolling,
        restart_from_unix_s: 0,
        hub_peaks: None,
        rolling_steps: None,
    };
    let result = r.scenario().await;
    // Always collect and stop the shards, even after an error.
    let finished = r.finish().await;
    let mut report = result?;
    let merged = finished?;
    r.fill(&mut report, &merged, processes);
    Ok(report)
}

impl Runner {
    fn bar(&self, len: u64, msg: &str) -> ProgressBar {
        let target = if self.progress {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let bar = ProgressBar::with_draw_target(Some(len), target);
        if let Ok(style) = ProgressStyle::with_template(
            "{msg:>12} [{elapsed_precise}] {wide_bar} {pos}/{len} ({per_sec})",
        ) {
            bar.set_style(style);
        }
        bar.set_message(msg.to_string());
        bar
    }

    fn limit(&self, within: Duration) -> Instant {
        (Instant::now() + within).min(self.deadline)
    }

    async fn call_all(&mut self, cmd: Cmd) -> Result<Vec<Reply>, String> {
        join_all(self.shards.iter_mut().map(|s| s.call(&cmd)))
            .await
            .into_iter()
            .collect()
    }

    async fn snapshot(&mut self) -> Result<Snapshot, String> {
        let mut total = Snapshot::default();
        for reply in self.call_all(Cmd::Snapshot).await? {
            if let Reply::Snapshot(s) = reply {
                total.add(&s);
            }
        }
        Ok(total)
    }

    /// Poll until `done` or `limit`; returns the last snapshot and whether `done` held.
    async fn wait_for(
        &mut self,
        limit: Instant,
        bar: &ProgressBar,
        pos: impl Fn(&Snapshot) -> (u64, u64),
        done: impl Fn(&Snapshot) -> bool,
    ) -> Result<(Snapshot, bool), String> {
        loop {
            let s = self.snapshot().await?;
            let (p, len) = pos(&s);
            bar.set_length(len);
            bar.set_position(p);
            if done(&s) {
                return Ok((s, true));
            }
            if Instant::now() >= limit {
                if Instant::now() >= self.deadline {
                    self.timed_out = true;
                }
                return Ok((s, false));
            }
            sleep(Duration::from_millis(20)).await;
        }
    }

    async fn connect(&mut self) -> Result<Snapshot, String> {
        let n = self.opts.clients as u64;
        self.call_all(Cmd::Connect).await?;
        let bar = self.bar(n, "connecting");
        let within = Duration::from_secs_f64(
            n as f64 / self.opts.connect_rate + 4.0 * self.opts.connect_timeout + 5.0,
        );
        let limit = self.limit(within);
        let (s, ok) = self
            .wait_for(
                limit,
                &bar,
                |s| (s.joined + s.failed_clients, n),
                |s| s.joined + s.failed_clients >= n,
            )
            .await?;
        bar.finish_and_clear();
        if !ok {
            self.notes.push(format!(
                "connect phase ended with {} of {n} clients subscribed",
                s.joined
            ));
        }
        Ok(s)
    }

    /// Publish with a progress bar.
    async fn publish(&mut self, run: Run, msg: &str) -> Outcome {
        let before = self.publisher.accepted.load(Relaxed);
        let bar = self.bar(run.events.unwrap_or(0), msg);
        let publisher = self.publisher.clone();
        let task = tokio::spawn(async move { publisher.run(run).await });
        tokio::pin!(task);
        let outcome = loop {
            tokio::select! {
                r = &mut task => break r.unwrap_or_default(),
                _ = sleep(Duration::from_millis(100)) => {
                    let done = self.publisher.accepted.load(Relaxed) - before;
                    if run.events.is_none() {
                        bar.set_length(done);
                    }
                    bar.set_position(done);
                }
            }
        };
        bar.finish_and_clear();
        if Instant::now() >= self.deadline {
            self.timed_out = true;
        }
        outcome
    }

    /// Tell the shards what was published, then wait until every expected event arrived.
    async fn drain(&mut self, msg: &str) -> Result<(Snapshot, bool), String> {
        let expected = self.publisher.expected();
        self.call_all(Cmd::SetExpected { expected }).await?;
        let bar = self.bar(0, msg);
        let limit = self.limit(Duration::from_secs_f64(self.opts.drain_timeout));
        let (s, ok) = self
            .wait_for(
                limit,
                &bar,
                |s| (s.unique, s.expected_total),
                |s| s.unique >= s.expected_total,
            )
            .await?;
        bar.finish_and_clear();
        if !ok {
            self.notes.push(format!(
                "{msg}: {} of {} expected deliveries arrived within --drain-timeout",
                s.unique, s.expected_total
            ));
        }
        Ok((s, ok))
    }

    fn server(&self) -> Option<ProcSample> {
        sample_all(&self.opts.server_pids)
    }

    async fn settle(&self) {
        let d = if self.opts.server_pids.is_empty() {
            200
        } else {
            1000
        };
        sleep(Duration::from_millis(d)).await;
    }

    fn remaining(&self) -> bool {
        Instant::now() < self.deadline
    }

    async fn scenario(&mut self) -> Result<Report, String> {
        let o = self.opts.clone();
        let mut report = Report {
            scenario: self.scenario.to_string(),
            ..Report::default()
        };
        let rss_before = self.server();
        let connected = self.connect().await?;
        self.settle().await;
        let idle = self.server();
        let mut server = match (rss_before, idle) {
            (Some(b), Some(i)) => Some(ServerReport {
                pids: o.server_pids.clone(),
                rss_before_bytes: b.rss_bytes,
                rss_idle_bytes: i.rss_bytes,
                rss_per_idle_connection_bytes: per_conn(b.rss_bytes, i.rss_bytes, connected.joined),
                pss_before_bytes: b.pss_bytes,
                pss_idle_bytes: i.pss_bytes,
                pss_per_idle_connection_bytes: per_conn(b.pss_bytes, i.pss_bytes, connected.joined),
                ..ServerReport::default()
            }),
            _ => None,
        };
        let cpu0 = self.server();
        let t0 = Instant::now();
        let mut delivered_window = None;
        if connected.joined == 0 && self.scenario != "idle" {
            self.notes
                .push("no client subscribed: nothing published".to_string());
            report.server = server;
            return Ok(report);
        }
        match self.scenario {
            "fanout" if self.remaining() => {
                let events = (o.rate * o.duration).round() as u64;
                let until = self.limit(Duration::from_secs_f64(o.duration * 2.0 + 10.0));
                let out = self
                    .publish(
                        Run {
                            events: Some(events),
                            rate: Some(o.rate),
                            until,
                        },
                        "publishing",
                    )
                    .await;
                report.publish.push(out);
                let (s, _) = self.drain("draining").await?;
                delivered_window = Some((s.delivered, t0.elapsed().as_secs_f64()));
            }
            "idle" if self.remaining() => {
                let secs = o.duration.max(0.0);
                let bar = self.bar(secs.ceil() as u64, "holding");
                let end = self.limit(Duration::from_secs_f64(secs));
                while Instant::now() < end {
                    sleep(Duration::from_millis(100).min(end - Instant::now())).await;
                    bar.set_position(t0.elapsed().as_secs());
                }
                bar.finish_and_clear();
                if Instant::now() >= self.deadline {
                    self.timed_out = true;
                }
                // Idle figure: after holding.
                if let (Some(srv), Some(end)) = (server.as_mut(), self.server()) {
                    srv.rss_idle_bytes = end.rss_bytes;
                    srv.rss_per_idle_connection_bytes =
                        per_conn(srv.rss_before_bytes, end.rss_bytes, connected.joined);
                    srv.pss_idle_bytes = end.pss_bytes;
                    srv.pss_per_idle_connection_bytes =
                        per_conn(srv.pss_before_bytes, end.pss_bytes, connected.joined);
                }
            }
            "burst" if self.remaining() => {
                let until = self.limit(Duration::from_secs_f64(o.duration));
                let out = self
                    .publish(
                        Run {
                            events: o.events,
                            rate: None,
                            until,
                        },
                        "bursting",
                    )
                    .await;
                let pub_end = Instant::now();
                let published_per_s = if out.elapsed_s > 0.0 {
                    out.events as f64 / out.elapsed_s
                } else {
                    0.0
                };
                report.publish.push(out);
                let (s, drained) = self.drain("draining").await?;
                let window = t0.elapsed().as_secs_f64();
                delivered_window = Some((s.delivered, window));
                report.burst = Some(BurstReport {
                    published_events_per_s: published_per_s,
                    saturation_deliveries_per_s: s.delivered as f64 / window.max(1e-9),
                    drain_s: pub_end.elapsed().as_secs_f64(),
                    drained,
                });
            }
            "resume-storm" if self.remaining() => {
                let before = o.events.unwrap_or(10 * o.orgs as u64);
                let until =
                    self.limit(Duration::from_secs_f64(before as f64 / o.rate * 2.0 + 10.0));
                let out = self
                    .publish(
                        Run {
                            events: Some(before),
                            rate: Some(o.rate),
                            until,
                        },
                        "publishing",
                    )
                    .await;
                report.publish.push(out);
                self.drain("draining").await?;
                self.call_all(Cmd::Drop).await?;
                let behind_total = o.behind * o.orgs as u64;
                let until = self.limit(Duration::from_secs(120));
                let out = self
                    .publish(
                        Run {
                            events: Some(behind_total),
                            rate: None,
                            until,
                        },
                        "behind",
                    )
                    .await;
                report.publish.push(out);
                let expected = self.publisher.expected();
                self.call_all(Cmd::SetExpected { expected }).await?;
                let t_storm = Instant::now();
                self.call_all(Cmd::Reconnect).await?;
                let bar = self.bar(connected.joined, "catching up");
                let limit =
                    self.limit(Duration::from_secs_f64(o.drain_timeout + o.connect_timeout));
                let (s, all) = self
                    .wait_for(
                        limit,
                        &bar,
                        |s| (s.caught_up, s.joined),
                        |s| s.caught_up >= s.joined || s.unique >= s.expected_total,
                    )
                    .await?;
                bar.finish_and_clear();
                let caught_up_s = t_storm.elapsed().as_secs_f64();
                delivered_window = Some((s.delivered, t0.elapsed().as_secs_f64()));
                report.resume = Some(ResumeReport {
                    events_before: before,
                    behind_per_org: o.behind,
                    clients_caught_up: s.caught_up,
                    all_caught_up: all,
                    caught_up_s,
                    ..ResumeReport::default()
                });
            }
            "rolling-restart" if self.remaining() => {
                let (outcome, s) = self.rolling_restart().await?;
                report.publish.push(outcome);
                delivered_window = Some((s.delivered, t0.elapsed().as_secs_f64()));
            }
            _ => self.timed_out = true,
        }
        let cpu1 = self.server();
        if let (Some(srv), Some(a), Some(b)) = (server.as_mut(), cpu0, cpu1) {
            srv.cpu_s = b.cpu_s - a.cpu_s;
            srv.cpu_window_s = t0.elapsed().as_secs_f64();
            srv.rss_end_bytes = b.rss_bytes;
            if let Some((delivered, _)) = delivered_window
                && delivered > 0
            {
                srv.cpu_s_per_million_deliveries = Some(srv.cpu_s / delivered as f64 * 1e6);
            }
        }
        if let Some((delivered, window)) = delivered_window {
            report.delivery.window_s = window;
            report.delivery.per_second = delivered as f64 / window.max(1e-9);
        }
        report.server = server;
        Ok(report)
    }

    /// Publish throughout; `--before` seconds, then each restart step in turn, then `--after`
    /// seconds; stop publishing and wait for every delivery.
    async fn rolling_restart(&mut self) -> Result<(Outcome, Snapshot), String> {
        let Some(r) = self.rolling.clone() else {
            return Err("not a rolling-restart run".into());
        };
        let o = self.opts.clone();
        let watch = (r.stats_watchers > 0)
            .then(|| self.publisher.targets.first().cloned())
            .flatten()
            .map(|t| StatsWatch::start(&t, &self.publisher.headers, r.stats_watchers));
        let publisher = self.publisher.clone();
        let run = Run {
            events: None,
            rate: Some(o.rate),
            until: self.deadline,
        };
        let publishing = tokio::spawn(async move { publisher.run(run).await });
        self.hold(r.before, "before").await;
        self.restart_from_unix_s = wall_us() / 1_000_000;
        self.call_all(Cmd::LatencyPhase { phase: 1 }).await?;
        let mut steps = Vec::new();
        for step in 1..=r.restarts {
            if !self.remaining() {
                self.timed_out = true;
                break;
            }
            let st = self.restart_step(&r, step).await;
            let ok = st.ok;
            steps.push(st);
            if !ok {
                self.notes
                    .push(format!("restart step {step} failed: no further steps"));
                break;
            }
        }
        self.call_all(Cmd::LatencyPhase { phase: 2 }).await?;
        self.hold(r.after, "after").await;
        self.publisher.stop.store(true, Relaxed);
        let outcome = publishing.await.unwrap_or_default();
        let (s, _) = self.drain("draining").await?;
        if let Some(w) = watch {
            self.hub_peaks = Some(w.finish(self.restart_from_unix_s).await);
        }
        let all_restarted = steps.len() == r.restarts as usize && steps.iter().all(|s| s.ok);
        self.rolling_steps = Some((steps, all_restarted));
        Ok((outcome, s))
    }

    /// Publishing goes on for `secs` (with a progress bar).
    async fn hold(&mut self, secs: f64, msg: &str) {
        let bar = self.bar(secs.ceil() as u64, msg);
        let t = Instant::now();
        let end = self.limit(Duration::from_secs_f64(secs));
        while Instant::now() < end {
            sleep(Duration::from_millis(200).min(end - Instant::now())).await;
            bar.set_position(t.elapsed().as_secs());
        }
        bar.finish_and_clear();
    }

    /// Run the restart command for `step` (bounded by --restart-timeout and the run's deadline).
    async fn restart_step(&mut self, r: &RollingOpts, step: u32) -> RestartStep {
        let cmd = r.restart_cmd.replace("{i}", &step.to_string());
        let bar = self.bar(r.restarts as u64, &format!("restart {step}"));
        bar.set_position(step as u64 - 1);
        let started = Instant::now();
        let child = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(&cmd)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn();
        let limit = self.limit(Duration::from_secs_f64(r.restart_timeout));
        let result = match child {
            Err(e) => Err(format!("spawning {cmd:?}: {e}")),
            Ok(child) => match tokio::time::timeout_at(limit, child.wait_with_output()).await {
                Err(_) => Err(format!("{cmd:?} did not finish within --restart-timeout")),
                Ok(Err(e)) => Err(format!("{cmd:?}: {e}")),
                Ok(Ok(out)) if out.status.success() => Ok(()),
                Ok(Ok(out)) => {
                    let text = String::from_utf8_lossy(&out.stderr);
                    let tail: String = text
                        .chars()
                        .rev()
                        .take(400)
                        .collect::<Vec<_>>()
                        .into_iter()
                        .rev()
                        .collect();
                    Err(format!("{cmd:?} exited {}: {}", out.status, tail.trim()))
                }
            },
        };
        bar.finish_and_clear();
        RestartStep {
            step,
            seconds: started.elapsed().as_secs_f64(),
            ok: result.is_ok(),
            error: result.err(),
        }
    }

    async fn finish(&mut self) -> Result<ShardResult, String> {
        let replies = self.call_all(Cmd::Finish).await;
        for s in &mut self.shards {
            s.reap().await;
        }
        let mut merged = ShardResult::default();
        for reply in replies? {
            if let Reply::Result(r) = reply {
                merged.merge(&r);
            }
        }
        Ok(merged)
    }

    fn fill(&mut self, report: &mut Report, m: &ShardResult, processes: usize) {
        let o = &self.opts;
        report.config = ConfigReport {
            clients: o.clients,
            orgs: o.orgs,
            processes,
            urls: o.urls.clone(),
            publish_urls: if o.publish_urls.is_empty() {
                o.urls.clone()
            } else {
                o.publish_urls.clone()
            },
            source_addrs: o.source_addrs,
            connect_rate: o.connect_rate,
            rate: (self.scenario != "burst" && self.scenario != "idle").then_some(o.rate),
            batch: o.batch,
            duration_s: o.duration,
            events: o.events,
            behind_per_org: (self.scenario == "resume-storm").then_some(o.behind),
        };
        report.elapsed_s = self.started.elapsed().as_secs_f64();
        report.timed_out = self.timed_out;
        report.notes = std::mem::take(&mut self.notes);
        report.connect = ConnectReport {
            clients: m.clients,
            connected: m.joined,
            failed_clients: m.clients - m.joined,
            attempts: m.attempts,
            failures: m.failures.clone(),
            disconnects: m.disconnects,
            time_ms: Quantiles::from_us(&m.connect_us),
        };
        report.delivery.totals = m.counts;
        report.delivery.worst = m.worst;
        report.delivery.worst_missing_client = m.worst_missing_client;
        report.delivery.resyncs = m.resyncs;
        report.delivery.other_events = m.other_events;
        report.latency_ms = Quantiles::from_us(&m.latency_us);
        if let Some(res) = report.resume.as_mut() {
            res.catchup_ms = Quantiles::from_us(&m.catchup_us);
            res.clients_caught_up = m.caught_up;
            res.all_caught_up = m.caught_up >= m.joined && m.counts.missing == 0;
            if m.catchup_us.count() > 0 {
                res.caught_up_s = m.catchup_us.max() as f64 / 1e6;
            }
        }
        if let Some((steps, all_restarted)) = self.rolling_steps.take() {
            let client_opens_peak = busiest_second(&m.opens, self.restart_from_unix_s);
            let hub_peaks = self.hub_peaks.take();
            report.rolling = Some(RollingReport {
                steps,
                all_restarted,
                reconnect_ms: Quantiles::from_us(&m.reconnect_us),
                latency_before_ms: Quantiles::from_us(&m.latency_us),
                latency_during_ms: Quantiles::from_us(&m.latency_during_us),
                latency_after_ms: Quantiles::from_us(&m.latency_after_us),
                client_opens_peak_per_s: client_opens_peak
                    .iter()
                    .map(|p| p.per_second)
                    .fold(0.0, f64::max),
                client_opens_peak,
                hub_opened_peak_per_s: hub_peaks
                    .as_ref()
                    .map(|h| h.opened.iter().map(|p| p.per_second).fold(0.0, f64::max)),
                hub_peaks,
            });
            let mut all = m.latency_us.clone();
            all.merge(&m.latency_during_us);
            all.merge(&m.latency_after_us);
            report.latency_ms = Quantiles::from_us(&all);
        }
        report.compute_ok();
    }
}

fn per_conn(before: u64, after: u64, conns: u64) -> f64 {
    if conns == 0 {
        0.0
    } else {
        (after as f64 - before as f64) / conns as f64
    }
}
