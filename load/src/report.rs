//! The report: JSON (`--json`) and a human summary table.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use dashclaw_realtime_load::hist::Histogram;
use dashclaw_realtime_load::seq::SeqCounts;
use serde::Serialize;

use crate::publish::Outcome;

/// Quantiles of a histogram recorded in microseconds, reported in milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Quantiles {
    pub count: u64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Quantiles {
    pub fn from_us(h: &Histogram) -> Quantiles {
        let ms = |v: u64| v as f64 / 1000.0;
        Quantiles {
            count: h.count(),
            mean: h.mean() / 1000.0,
            p50: ms(h.value_at_quantile(0.5)),
            p90: ms(h.value_at_quantile(0.9)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ConfigReport {
    pub clients: usize,
    pub orgs: usize,
    pub processes: usize,
    pub urls: Vec<String>,
    pub publish_urls: Vec<String>,
    pub source_addrs: u8,
    pub connect_rate: f64,
    pub rate: Option<f64>,
    pub batch: usize,
    pub duration_s: f64,
    pub events: Option<u64>,
    pub behind_per_org: Option<u64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ConnectReport {
    pub clients: u64,
    /// Clients that subscribed at least once.
    pub connected: u64,
    /// Clients that never subscribed.
    pub failed_clients: u64,
    pub attempts: u64,
    /// Failed attempts by kind.
    pub failures: BTreeMap<String, u64>,
    /// Established streams that ended unexpectedly (the client reconnected).
    pub disconnects: u64,
    pub time_ms: Quantiles,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct DeliveryReport {
    /// Summed over connected clients.
    #[serde(flatten)]
    pub totals: SeqCounts,
    /// The worst client per counter.
    pub worst: SeqCounts,
    pub worst_missing_client: Option<u64>,
    pub resyncs: u64,
    pub other_events: u64,
    /// Seconds from the first publish to the end of the drain.
    pub window_s: f64,
    pub per_second: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct BurstReport {
    pub published_events_per_s: f64,
    pub saturation_deliveries_per_s: f64,
    /// From the last accepted publish until every delivery arrived.
    pub drain_s: f64,
    pub drained: bool,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ResumeReport {
    pub events_before: u64,
    pub behind_per_org: u64,
    pub clients_caught_up: u64,
    pub all_caught_up: bool,
    /// From the reconnect until the last client had every event.
    pub caught_up_s: f64,
    /// Per-client time from the reconnect to caught up.
    pub catchup_ms: Quantiles,
}

/// One restart step of `rolling-restart`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RestartStep {
    pub step: u32,
    /// Seconds the restart command took (signal, drain, exit, start).
    pub seconds: f64,
    /// It exited 0.
    pub ok: bool,
    /// Its exit status and the end of its output, when it failed.
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct RollingReport {
    pub steps: Vec<RestartStep>,
    /// Every step succeeded.
    pub all_restarted: bool,
    /// From an established stream's end to the client's next stream subscribed (including
    /// the server's `retry:` delay and any refused attempts in between).
    pub reconnect_ms: Quantiles,
    /// Delivery latency (publish to first receipt, replayed events included) before the first
    /// restart, from its start to the end of the last, and after.
    pub latency_before_ms: Quantiles,
    pub latency_during_ms: Quantiles,
    pub latency_after_ms: Quantiles,
    /// Per instance, the most streams subscribed in one second from the first restart on, as
    /// the clients saw them (`X-Realtime-Instance`; "" for servers that do not name themselves).
    pub client_opens_peak: Vec<dashclaw_realtime_load::rates::InstancePeak>,
    /// The highest of `client_opens_peak`.
    pub client_opens_peak_per_s: f64,
    /// The same from the hubs' own counters (`--stats-watchers`), when watched.
    pub hub_peaks: Option<crate::stats::HubPeaks>,
    /// The highest hub-side `connections_opened_total` rate of any instance.
    pub hub_opened_peak_per_s: Option<f64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ServerReport {
    pub pids: Vec<u32>,
    pub rss_before_bytes: u64,
    /// After every client connected and sat idle.
    pub rss_idle_bytes: u64,
    pub rss_per_idle_connection_bytes: f64,
    pub pss_before_bytes: u64,
    pub pss_idle_bytes: u64,
    /// Like the RSS figure, from proportional set sizes (fair for multi-process servers).
    pub pss_per_idle_connection_bytes: f64,
    pub cpu_s: f64,
    pub cpu_window_s: f64,
    pub cpu_s_per_million_deliveries: Option<f64>,
    pub rss_end_bytes: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub scenario: String,
    /// Completed in time with no failed client, publish, missing or duplicate delivery.
    pub ok: bool,
    pub timed_out: bool,
    pub notes: Vec<String>,
    pub config: ConfigReport,
    pub elapsed_s: f64,
    pub connect: ConnectReport,
    pub delivery: DeliveryReport,
    pub latency_ms: Quantiles,
    pub publish: Vec<Outcome>,
    pub burst: Option<BurstReport>,
    pub resume: Option<ResumeReport>,
    pub rolling: Option<RollingReport>,
    pub server: Option<ServerReport>,
}

impl Report {
    pub fn compute_ok(&mut self) {
        let d = &self.delivery.totals;
        self.ok = !self.timed_out
            && self.connect.failed_clients == 0
            && d.missing == 0
            && d.duplicates == 0
            && self.publish.iter().all(|p| p.failed_requests == 0)
            && self.resume.as_ref().is_none_or(|r| r.all_caught_up)
            && self.rolling.as_ref().is_none_or(|r| r.all_restarted);
    }

    pub fn human(&self) -> String {
        let mut s = String::new();
        let mut row = |k: &str, v: String| {
            let _ = writeln!(s, "  {k:<28} {v}");
        };
        let c = &self.config;
        row(
            "scenario",
            format!(
                "{}  ({})",
                self.scenario,
                if self.ok { "OK" } else { "PROBLEMS" }
            ),
        );
        row(
            "setup",
            format!(
                "{} clients, {} orgs, {} process(es), {} url(s), {} source addr(s)",
                c.clients,
                c.orgs,
                c.processes,
                c.urls.len(),
                c.source_addrs
            ),
        );
        row("elapsed", format!("{:.2} s", self.elapsed_s));
        let k = &self.connect;
        row(
            "connected",
            format!(
                "{}/{}  failed clients {}  attempts {}  disconnects {}",
                k.connected, k.clients, k.failed_clients, k.attempts, k.disconnects
            ),
        );
        if !k.failures.is_empty() {
            row("connect failures", format!("{:?}", k.failures));
        }
        row(
            "connect time ms",
            format!(
                "p50 {:.2}  p99 {:.2}  max {:.2}",
                k.time_ms.p50, k.time_ms.p99, k.time_ms.max
            ),
        );
        for (i, p) in self.publish.iter().enumerate() {
            row(
                &format!("publish #{}", i + 1),
                format!(
                    "{} events in {} requests, {} failed ({:.2} s){}",
                    p.events,
                    p.requests,
                    p.failed_requests,
                    p.elapsed_s,
                    if p.errors.is_empty() {
                        String::new()
                    } else {
                        format!(" {:?}", p.errors)
                    }
                ),
            );
        }
        let d = &self.delivery;
        let t = &d.totals;
        if !(self.publish.is_empty() && t.delivered == 0) {
            row(
                "deliveries",
                format!(
                    "expected {}  delivered {}  missing {}  duplicates {}  out-of-order {}",
                    t.expected, t.delivered, t.missing, t.duplicates, t.out_of_order
                ),
            );
            row(
                "worst client",
                format!(
                    "missing {}  duplicates {}  out-of-order {}{}",
                    d.worst.missing,
                    d.worst.duplicates,
                    d.worst.out_of_order,
                    d.worst_missing_client
                        .filter(|_| d.worst.missing > 0)
                        .map(|c| format!("  (client #{c})"))
                        .unwrap_or_default()
                ),
            );
            if d.resyncs > 0 || d.other_events > 0 || t.unexpected > 0 {
                row(
                    "other",
                    format!(
                        "resyncs {}  other events {}  unexpected seqs {}",
                        d.resyncs, d.other_events, t.unexpected
                    ),
                );
            }
            row(
                "deliveries/s",
                format!("{:.0}  (over {:.2} s)", d.per_second, d.window_s),
            );
            let l = &self.latency_ms;
            row(
                "latency ms",
                format!(
                    "p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}  (n={})",
                    l.p50, l.p90, l.p99, l.p999, l.max, l.count
                ),
            );
        }
        if let Some(b) = &self.burst {
            row(
                "publish rate",
                format!("{:.0} events/s", b.published_events_per_s),
            );
            row(
                "saturation",
                format!("{:.0} deliveries/s", b.saturation_deliveries_per_s),
            );
            row(
                "drain",
                format!(
                    "{:.3} s{}",
                    b.drain_s,
                    if b.drained { "" } else { " (not drained)" }
                ),
            );
        }
        if let Some(r) = &self.resume {
            row(
                "resume",
                format!(
                    "{} before, {} behind per org: {} caught up in {:.3} s{}",
                    r.events_before,
                    r.behind_per_org,
                    r.clients_caught_up,
                    r.caught_up_s,
                    if r.all_caught_up { "" } else { " (NOT all)" }
                ),
            );
            row(
                "catch-up ms",
                format!(
                    "p50 {:.1}  p99 {:.1}  max {:.1}",
                    r.catchup_ms.p50, r.catchup_ms.p99, r.catchup_ms.max
                ),
            );
        }
        if let Some(r) = &self.rolling {
            for st in &r.steps {
                row(
                    &format!("restart #{}", st.step),
                    format!(
                        "{:.1} s {}",
                        st.seconds,
                        if st.ok {
                            "ok".to_string()
                        } else {
                            format!("FAILED: {}", st.error.as_deref().unwrap_or(""))
                        }
                    ),
                );
            }
            let q = |q: &Quantiles| format!("p50 {:.1}  p99 {:.1}  max {:.1}", q.p50, q.p99, q.max);
            row("reconnect ms", q(&r.reconnect_ms));
            row("latency before ms", q(&r.latency_before_ms));
            row("latency during ms", q(&r.latency_during_ms));
            row("latency after ms", q(&r.latency_after_ms));
            row(
                "peak opens/s (clients)",
                format!(
                    "{:.0}  over {} instance(s)",
                    r.client_opens_peak_per_s,
                    r.client_opens_peak.len()
                ),
            );
            if let Some(h) = r.hub_opened_peak_per_s {
                row("peak opens/s (hub)", format!("{h:.0}"));
            }
        }
        if let Some(v) = &self.server {
            row(
                "server rss",
                format!(
                    "before {:.1} MiB  idle {:.1} MiB  end {:.1} MiB  => {:.0} B per idle connection",
                    mib(v.rss_before_bytes),
                    mib(v.rss_idle_bytes),
                    mib(v.rss_end_bytes),
                    v.rss_per_idle_connection_bytes
                ),
            );
            row(
                "server pss",
                format!(
                    "before {:.1} MiB  idle {:.1} MiB  => {:.0} B per idle connection",
                    mib(v.pss_before_bytes),
                    mib(v.pss_idle_bytes),
                    v.pss_per_idle_connection_bytes
                ),
            );
            row(
                "server cpu",
                format!(
                    "{:.2} s over {:.2} s{}",
                    v.cpu_s,
                    v.cpu_window_s,
                    v.cpu_s_per_million_deliveries
                        .map(|x| format!("  => {x:.2} CPU-s per million deliveries"))
                        .unwrap_or_default()
                ),
            );
        }
        if self.timed_out {
            row("timed out", "the run hit --max-duration".into());
        }
        for n in &self.notes {
            row("note", n.clone());
        }
        s
    }
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}
