//! Prometheus metrics of one hub (contract section 7), served as text by `GET /metrics`.
//!
//! Each hub owns its [`Registry`] instead of using the process-global one, so several hubs
//! can run in one process (tests, embedders) without clashing. Every labelled child is
//! resolved once here, so the hot path only touches atomics and never hashes label values.
//! No label ever carries an org id: cardinality stays fixed whatever the number of tenants.

use std::ops::Deref;
use std::sync::Arc;
use std::time::Instant;

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder, exponential_buckets,
};

/// Content type of the text exposition format 0.0.4.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// `connections_closed_total` by reason.
#[derive(Debug, Clone)]
pub struct ClosedCounters {
    /// The client went away.
    pub client: IntCounter,
    /// Disconnected for not reading fast enough.
    pub slow: IntCounter,
    /// Ended (or refused) because the hub is shutting down.
    pub shutdown: IntCounter,
    /// Refused by the connection limits.
    pub limit: IntCounter,
    /// Refused by authentication or authorization on a stream route.
    pub auth: IntCounter,
    /// Ended because the backend failed during the replay (the client retries).
    pub backend: IntCounter,
    /// Ended at the expiry of the credential that opened it (the client comes back with
    /// its current one).
    pub expired: IntCounter,
    /// Ended because the key that opened it was revoked.
    pub revoked: IntCounter,
    /// Ended by the paced drain of a stopping instance.
    pub drain: IntCounter,
    /// Ended at its maximum age (`REALTIME_MAX_STREAM_SECONDS`).
    pub max_age: IntCounter,
}

/// `stream_reads_total` (reads for resumes: lookups and replay pages) by how the read was
/// served.
#[derive(Debug, Clone)]
pub struct StreamReadCounters {
    /// A call to the backend.
    pub backend: IntCounter,
    /// Shared with an identical read in flight.
    pub shared: IntCounter,
    /// Served from a page read moments ago for another resume.
    pub cache: IntCounter,
}

/// `events_published_total` by path.
#[derive(Debug, Clone)]
pub struct PublishedCounters {
    /// Through the in-process API.
    pub in_process: IntCounter,
    /// Through HTTP.
    pub http: IntCounter,
    /// Received on a Redis channel without having been published by this instance.
    pub redis_external: IntCounter,
}

/// `replay_requests_total` by result.
#[derive(Debug, Clone)]
pub struct ReplayRequestCounters {
    /// The position was found: replay follows.
    pub hit: IntCounter,
    /// The position is older than the window.
    pub expired: IntCounter,
    /// The position is not in the stream.
    pub unknown: IntCounter,
}

/// Every metric of one hub.
#[derive(Debug)]
pub struct MetricSet {
    registry: Registry,
    /// This hub's identity on the status page and `/v1/ops/stats`: a ULID made at start.
    pub instance_id: String,
    /// When this hub started, for its uptime.
    pub started: Instant,
    /// Open SSE connections.
    pub connections: IntGauge,
    /// Orgs (topics) with a running supervisor.
    pub orgs_active: IntGauge,
    /// SSE connections accepted.
    pub connections_opened: IntCounter,
    /// SSE connections ended or refused, by reason.
    pub connections_closed: ClosedCounters,
    /// Events newly stored, by the path they came in on.
    pub events_published: PublishedCounters,
    /// Event frames queued for clients, one per client.
    pub events_delivered: IntCounter,
    /// Resume requests, by how they resolved.
    pub replay_requests: ReplayRequestCounters,
    /// Event frames sent from replay (stream pages and the supervisor's ring).
    pub replayed_events: IntCounter,
    /// `realtime.resync` frames queued.
    pub resyncs: IntCounter,
    /// Clients disconnected because their queue overflowed.
    pub slow_disconnects: IntCounter,
    /// Redis pub/sub or command connections re-established.
    pub redis_reconnects: IntCounter,
    /// Supervisor gap fills that delivered at least one event.
    pub gap_fills: IntCounter,
    /// New streams refused because they arrived faster than
    /// `REALTIME_MAX_NEW_STREAMS_PER_SECOND`.
    pub paced_refusals: IntCounter,
    /// Reads of the streams for resumes, by how they were served.
    pub stream_reads: StreamReadCounters,
    /// Envelopes read from Redis (pub/sub or streams) that failed validation and were dropped.
    pub invalid_events: IntCounter,
    /// Redis Cluster mode: 1 while a shard (by its master's `host:port`) delivers, else 0.
    /// Bounded by the cluster's nodes, never by orgs.
    pub redis_shard_ready: IntGaugeVec,
    /// Redis Cluster mode: channels subscribed again on a shard (by its master's `host:port`)
    /// after a lost connection, a failover or a slot move.
    pub redis_resubscribes: IntCounterVec,
    /// Accept (hub validation) to stored (broker acknowledged), in seconds.
    pub publish_duration: Histogram,
    /// Envelope timestamp to frame queued for the sockets, in seconds.
    pub delivery_lag: Histogram,
    /// Unsent bytes per session, sampled by the supervisors' heartbeat sweep.
    pub session_queue_bytes: Histogram,
}

/// A point-in-time view of one hub's counters.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Snapshot {
    /// The hub's identity: a ULID made at start.
    pub instance_id: String,
    /// Seconds since the hub started.
    pub uptime_seconds: u64,
    /// Open SSE connections.
    pub connections: i64,
    /// SSE connections accepted since start (`connections_opened_total`).
    pub opened_total: u64,
    /// Topics with a running supervisor.
    pub orgs_active: i64,
    /// Events newly stored, by every path.
    pub published_total: u64,
    /// Event frames written for clients.
    pub delivered_total: u64,
    /// Resumes that found their position.
    pub replay_hits: u64,
    /// Resumes older than the window.
    pub replay_expired: u64,
    /// Clients disconnected for not reading.
    pub slow_disconnects: u64,
    /// New streams refused by the accept pace.
    pub paced_refusals: u64,
    /// Streams ended by the drain of a stopping instance.
    pub drain_closes: u64,
    /// Streams ended at their maximum age.
    pub max_age_closes: u64,
}

/// A cheap-clone handle to one hub's metrics.
#[derive(Debug, Clone)]
pub struct Metrics(Arc<MetricSet>);

impl Deref for Metrics {
    type Target = MetricSet;

    fn deref(&self) -> &MetricSet {
        &self.0
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

const PREFIX: &str = "dashclaw_realtime_";

fn name(short: &str) -> String {
    format!("{PREFIX}{short}")
}

fn registered<C: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    collector: C,
) -> C {
    // Names are fixed and distinct, so registration can only fail on a programming error.
    registry
        .register(Box::new(collector.clone()))
        .unwrap_or_else(|e| panic!("registering a metric: {e}"));
    collector
}

fn counter(registry: &Registry, short: &str, help: &str) -> IntCounter {
    registered(
        registry,
        IntCounter::new(name(short), help).unwrap_or_else(|e| panic!("{short}: {e}")),
    )
}

fn gauge(registry: &Registry, short: &str, help: &str) -> IntGauge {
    registered(
        registry,
        IntGauge::new(name(short), help).unwrap_or_else(|e| panic!("{short}: {e}")),
    )
}

fn counter_vec(registry: &Registry, short: &str, help: &str, label: &str) -> IntCounterVec {
    registered(
        registry,
        IntCounterVec::new(Opts::new(name(short), help), &[label])
            .unwrap_or_else(|e| panic!("{short}: {e}")),
    )
}

fn histogram(registry: &Registry, short: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    registered(
        registry,
        Histogram::with_opts(HistogramOpts::new(name(short), help).buckets(buckets))
            .unwrap_or_else(|e| panic!("{short}: {e}")),
    )
}

impl ClosedCounters {
    fn register(r: &Registry) -> Self {
        let closed = counter_vec(
            r,
            "connections_closed_total",
            "SSE connections ended or refused, by reason",
            "reason",
        );
        Self {
            client: closed.with_label_values(&["client"]),
            slow: closed.with_label_values(&["slow"]),
            shutdown: closed.with_label_values(&["shutdown"]),
            limit: closed.with_label_values(&["limit"]),
            auth: closed.with_label_values(&["auth"]),
            backend: closed.with_label_values(&["backend"]),
            expired: closed.with_label_values(&["expired"]),
            revoked: closed.with_label_values(&["revoked"]),
            drain: closed.with_label_values(&["drain"]),
            max_age: closed.with_label_values(&["max_age"]),
        }
    }
}

impl StreamReadCounters {
    fn register(r: &Registry) -> Self {
        let reads = counter_vec(
            r,
            "stream_reads_total",
            "Reads of the streams for resumes (position lookups and replay pages), by how they were served",
            "served",
        );
        Self {
            backend: reads.with_label_values(&["backend"]),
            shared: reads.with_label_values(&["shared"]),
            cache: reads.with_label_values(&["cache"]),
        }
    }
}

impl PublishedCounters {
    fn register(r: &Registry) -> Self {
        let published = counter_vec(
            r,
            "events_published_total",
            "Events newly stored, by the path they came in on",
            "path",
        );
        Self {
            in_process: published.with_label_values(&["in_process"]),
            http: published.with_label_values(&["http"]),
            redis_external: published.with_label_values(&["redis_external"]),
        }
    }
}

impl ReplayRequestCounters {
    fn register(r: &Registry) -> Self {
        let replay = counter_vec(
            r,
            "replay_requests_total",
            "Resume requests (Last-Event-ID), by result",
            "result",
        );
        Self {
            hit: replay.with_label_values(&["hit"]),
            expired: replay.with_label_values(&["expired"]),
            unknown: replay.with_label_values(&["unknown"]),
        }
    }
}

fn buckets(start: f64, factor: f64, count: usize) -> Vec<f64> {
    exponential_buckets(start, factor, count).unwrap_or_else(|e| panic!("buckets: {e}"))
}

impl Metrics {
    /// A fresh registry with every metric at zero.
    pub fn new() -> Self {
        let r = Registry::new();
        let set = MetricSet {
            connections: gauge(&r, "connections", "Open SSE connections on this instance"),
            orgs_active: gauge(&r, "orgs_active", "Orgs with a running supervisor"),
            connections_opened: counter(&r, "connections_opened_total", "SSE connections accepted"),
            connections_closed: ClosedCounters::register(&r),
            events_published: PublishedCounters::register(&r),
            events_delivered: counter(
                &r,
                "events_delivered_total",
                "Event frames written for clients (one per client)",
            ),
            replay_requests: ReplayRequestCounters::register(&r),
            replayed_events: counter(&r, "replayed_events_total", "Events sent from replay"),
            resyncs: counter(&r, "resyncs_total", "realtime.resync frames sent"),
            slow_disconnects: counter(
                &r,
                "slow_disconnects_total",
                "Clients disconnected because their unsent data exceeded the queue bound",
            ),
            redis_reconnects: counter(
                &r,
                "redis_reconnects_total",
                "Redis pub/sub or command connections re-established",
            ),
            gap_fills: counter(
                &r,
                "gap_fills_total",
                "Gaps filled from the stream (fills that delivered at least one event)",
            ),
            paced_refusals: counter(
                &r,
                "paced_refusals_total",
                "New streams refused with 503 because they arrived faster than the accept pace",
            ),
            stream_reads: StreamReadCounters::register(&r),
            invalid_events: counter(
                &r,
                "invalid_events_total",
                "Envelopes from Redis that failed validation and were dropped",
            ),
            redis_shard_ready: registered(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        name("redis_shard_ready"),
                        "Redis Cluster shards (by master) that deliver: 1, else 0",
                    ),
                    &["shard"],
                )
                .unwrap_or_else(|e| panic!("redis_shard_ready: {e}")),
            ),
            redis_resubscribes: counter_vec(
                &r,
                "redis_resubscribes_total",
                "Redis Cluster channels subscribed again on a shard after a loss or a slot move",
                "shard",
            ),
            publish_duration: histogram(
                &r,
                "publish_duration_seconds",
                "Time from accepting a publish to the backend storing it",
                buckets(0.0001, 2.0, 16),
            ),
            delivery_lag: histogram(
                &r,
                "delivery_lag_seconds",
                "Time from the envelope timestamp to the frame queued for client sockets",
                buckets(0.0005, 2.0, 16),
            ),
            session_queue_bytes: histogram(
                &r,
                "session_queue_bytes",
                "Unsent bytes per session, sampled by the heartbeat sweep",
                buckets(256.0, 4.0, 9),
            ),
            registry: r,
            instance_id: ulid::Ulid::generate().to_string(),
            started: Instant::now(),
        };
        Self(Arc::new(set))
    }

    /// Counts `queued` live deliveries of one event published at `published_ms`: one
    /// atomic add per event whatever the number of sessions; its delivery lag when `first`
    /// (the first of the instance's supervisors to deliver it).
    pub fn record_live(&self, queued: u64, published_ms: u64, first: bool) {
        if queued > 0 {
            self.events_delivered.inc_by(queued);
            if first {
                let lag_ms = crate::envelope::now_ms().saturating_sub(published_ms);
                self.delivery_lag.observe(lag_ms as f64 / 1000.0);
            }
        }
    }

    /// Counts events written to a client from replay (stream pages or a supervisor's ring).
    pub fn record_replay(&self, written: usize) {
        let written = written as u64;
        self.replayed_events.inc_by(written);
        self.events_delivered.inc_by(written);
    }

    /// This hub's counters for the status page and `/v1/ops/stats`.
    pub fn snapshot(&self) -> Snapshot {
        let published = &self.events_published;
        Snapshot {
            instance_id: self.instance_id.clone(),
            uptime_seconds: self.started.elapsed().as_secs(),
            connections: self.connections.get(),
            opened_total: self.connections_opened.get(),
            orgs_active: self.orgs_active.get(),
            published_total: published.in_process.get()
                + published.http.get()
                + published.redis_external.get(),
            delivered_total: self.events_delivered.get(),
            replay_hits: self.replay_requests.hit.get(),
            replay_expired: self.replay_requests.expired.get(),
            slow_disconnects: self.slow_disconnects.get(),
            paced_refusals: self.paced_refusals.get(),
            drain_closes: self.connections_closed.drain.get(),
            max_age_closes: self.connections_closed.max_age.get(),
        }
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for our metric kinds; an error leaves partial text.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_labelled_series_is_present_at_zero() {
        let metrics = Metrics::new();
        metrics.connections_opened.inc();
        let text = metrics.render();
        for line in [
            "dashclaw_realtime_connections 0",
            "dashclaw_realtime_connections_opened_total 1",
            "dashclaw_realtime_connections_closed_total{reason=\"limit\"} 0",
            "dashclaw_realtime_connections_closed_total{reason=\"expired\"} 0",
            "dashclaw_realtime_connections_closed_total{reason=\"revoked\"} 0",
            "dashclaw_realtime_connections_closed_total{reason=\"drain\"} 0",
            "dashclaw_realtime_connections_closed_total{reason=\"max_age\"} 0",
            "dashclaw_realtime_paced_refusals_total 0",
            "dashclaw_realtime_stream_reads_total{served=\"cache\"} 0",
            "dashclaw_realtime_events_published_total{path=\"redis_external\"} 0",
            "dashclaw_realtime_replay_requests_total{result=\"expired\"} 0",
            "dashclaw_realtime_delivery_lag_seconds_count 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line:?} missing in\n{text}"
            );
        }
    }

    #[test]
    fn registries_are_per_hub() {
        let a = Metrics::new();
        let b = Metrics::new();
        a.resyncs.inc();
        assert!(a.render().contains("dashclaw_realtime_resyncs_total 1"));
        assert!(b.render().contains("dashclaw_realtime_resyncs_total 0"));
    }
}
