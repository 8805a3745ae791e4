//! Command line of `dashclaw-realtime-load`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "dashclaw-realtime-load",
    about = "Load tool for SSE hubs speaking the dashclaw-realtime contract (and, through templates, other SSE servers such as Nchan). Loopback targets only.",
    version
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Connect N clients, publish at R events/s for D seconds, wait for the drain, report.
    Fanout(Opts),
    /// Hold N connections for D seconds and report the server's memory per connection.
    Idle(Opts),
    /// Publish as fast as the server accepts for D seconds (or --events K), report saturation
    /// deliveries/s and drain time.
    Burst(Opts),
    /// Connect N, publish --events E, drop every client, publish --behind X more, reconnect all at
    /// once with Last-Event-ID, report the time until every client caught up.
    ResumeStorm(Opts),
    /// Connect N clients that follow their stream across its ends as EventSource does (the
    /// server's `retry:`, `Last-Event-ID`, `Retry-After` after a refusal), publish at R events/s
    /// throughout, run --restart-cmd once per instance in turn, then report missing and duplicate
    /// deliveries, reconnect times, delivery latency before, during and after the restarts, and
    /// the peak new-stream rate per instance.
    RollingRestart(RollingOpts),
    /// Internal: one shard of clients in a child process (JSON lines on stdin/stdout).
    #[command(hide = true)]
    Worker,
}

impl Command {
    pub fn name(&self) -> &'static str {
        match self {
            Command::Fanout(_) => "fanout",
            Command::Idle(_) => "idle",
            Command::Burst(_) => "burst",
            Command::ResumeStorm(_) => "resume-storm",
            Command::RollingRestart(_) => "rolling-restart",
            Command::Worker => "worker",
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct Opts {
    /// Subscriber URL base (repeatable; clients are spread round-robin). Loopback only.
    #[arg(long = "url", default_value = "http://127.0.0.1:8080")]
    pub urls: Vec<String>,
    /// Publisher URL base (repeatable; org j publishes to the (j mod count)-th). Default: --url.
    #[arg(long = "publish-url")]
    pub publish_urls: Vec<String>,
    /// Number of SSE clients.
    #[arg(long, short = 'n', default_value_t = 100)]
    pub clients: usize,
    /// Number of orgs (client i subscribes to org i mod M).
    #[arg(long, short = 'm', default_value_t = 10)]
    pub orgs: usize,
    /// Org names are `<prefix>_<run>_<j>`; `--org-prefix x --fixed-orgs` gives `x_<j>`.
    #[arg(long, default_value = "load")]
    pub org_prefix: String,
    /// Do not add a per-run tag to org names.
    #[arg(long)]
    pub fixed_orgs: bool,
    /// Bind client sockets round-robin to 127.0.0.1 .. 127.0.0.K (more ephemeral ports).
    #[arg(long, default_value_t = 1)]
    pub source_addrs: u8,
    /// New connections per second (over all processes).
    #[arg(long, default_value_t = 2000.0)]
    pub connect_rate: f64,
    /// Clients per process; above it the tool runs child processes of itself.
    #[arg(long, default_value_t = 15_000)]
    pub per_process: usize,
    /// Stream path template (`{org}`).
    #[arg(long, default_value = "/v1/orgs/{org}/stream")]
    pub stream_path: String,
    /// Publish path template (`{org}`).
    #[arg(long, default_value = "/v1/orgs/{org}/events")]
    pub publish_path: String,
    /// Publish body template (`{org}`, `{seq}`, `{sent_ms}`, `{sent_us}`); must carry seq and a
    /// send time as JSON fields `"seq"` and `"sent_us"` or `"sent_ms"`.
    #[arg(
        long,
        default_value = r#"{"event":"load.tick","payload":{"seq":{seq},"sent_us":{sent_us}}}"#
    )]
    pub publish_body: String,
    /// Content-Type of publish requests.
    #[arg(long, default_value = "application/json")]
    pub content_type: String,
    /// Extra request header for streams and publishes, `Name: value` (repeatable).
    #[arg(long = "header")]
    pub headers: Vec<String>,
    /// A stream counts as subscribed when this event arrives ("" = when the 200 head arrives;
    /// use "" for servers without one, e.g. Nchan).
    #[arg(long, default_value = "realtime.connected")]
    pub ready_event: String,
    /// Events per second (fanout, resume-storm).
    #[arg(long, short = 'r', default_value_t = 100.0)]
    pub rate: f64,
    /// Events per publish request (a JSON array body when above 1).
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Concurrent publish connections (each owns a subset of the orgs, so per-org order holds).
    #[arg(long, default_value_t = 4)]
    pub publishers: usize,
    /// Seconds of publishing (fanout, burst) or holding (idle).
    #[arg(long, short = 'd', default_value_t = 10.0)]
    pub duration: f64,
    /// Events to publish: burst stops after K (if reached before --duration); resume-storm
    /// publishes E before the drop.
    #[arg(long)]
    pub events: Option<u64>,
    /// resume-storm: events published while every client is disconnected.
    #[arg(long, default_value_t = 100)]
    pub behind: u64,
    /// Seconds to wait for every delivery after publishing ends.
    #[arg(long, default_value_t = 15.0)]
    pub drain_timeout: f64,
    /// Seconds allowed from connect to subscribed, per attempt.
    #[arg(long, default_value_t = 10.0)]
    pub connect_timeout: f64,
    /// Hard limit on the whole run, in seconds; the run stops by itself and reports.
    #[arg(long, default_value_t = 600.0)]
    pub max_duration: f64,
    /// Server process to measure (RSS, CPU); repeatable, figures are summed.
    #[arg(long = "server-pid")]
    pub server_pids: Vec<u32>,
    /// Run the hub inside this process (configured by the same REALTIME_* / REDIS_URL environment
    /// as `dashclaw-realtime`, auth off, port 0 unless REALTIME_BIND is set) and publish through
    /// `HubHandle::publish` instead of HTTP; clients still subscribe over loopback TCP. --url and
    /// --publish-url are ignored and --server-pid defaults to this process.
    #[arg(long)]
    pub embed_hub: bool,
    /// Print the report as JSON (and no progress bar).
    #[arg(long)]
    pub json: bool,
}

/// Options of `rolling-restart`.
#[derive(Debug, Clone, Args)]
pub struct RollingOpts {
    #[command(flatten)]
    pub opts: Opts,
    /// Restarts one instance and exits 0 once it serves again (or non-zero), run with `sh -c`;
    /// `{i}` is replaced by the step, 1..=--restarts. bench/rolling-restart.sh supplies it.
    #[arg(long)]
    pub restart_cmd: String,
    /// Restart steps (one per instance).
    #[arg(long, default_value_t = 3)]
    pub restarts: u32,
    /// Seconds of publishing before the first restart (the "before" latency).
    #[arg(long, default_value_t = 10.0)]
    pub before: f64,
    /// Seconds of publishing after the last restart (the "after" latency).
    #[arg(long, default_value_t = 10.0)]
    pub after: f64,
    /// Seconds allowed for one restart command.
    #[arg(long, default_value_t = 120.0)]
    pub restart_timeout: f64,
    /// Watch each instance's `/v1/ops/stats` over this many connections (spread by the kernel
    /// over `REALTIME_REUSE_PORT` instances, reopened every few seconds) for the hub-side peak
    /// new-stream rate; 0 for servers without it (Nchan).
    #[arg(long, default_value_t = 0)]
    pub stats_watchers: usize,
    /// Reconnect delay when a stream ended without a `retry:` hint (ms).
    #[arg(long, default_value_t = 1000)]
    pub reconnect_ms: u64,
}

/// A validated loopback URL base.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Target {
    pub addr: SocketAddr,
    /// `Host` header value.
    pub host: String,
    /// Path prefix of the base (no trailing slash).
    pub prefix: String,
}

impl Target {
    /// Parse `http://host[:port][/prefix]`; refuses https and non-loopback hosts.
    pub fn parse(url: &str) -> Result<Target, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("{url:?}: only http:// URLs are supported"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.is_empty() || authority.contains('@') {
            return Err(format!("{url:?}: bad host"));
        }
        let with_port = if authority.starts_with('[') {
            if authority.contains("]:") {
                authority.to_string()
            } else {
                format!("{authority}:80")
            }
        } else if authority.contains(':') {
            authority.to_string()
        } else {
            format!("{authority}:80")
        };
        let addrs: Vec<SocketAddr> = with_port
            .to_socket_addrs()
            .map_err(|e| format!("{url:?}: cannot resolve: {e}"))?
            .collect();
        let addr = addrs
            .iter()
            .copied()
            .find(|a| a.is_ipv4())
            .or_else(|| addrs.first().copied())
            .ok_or_else(|| format!("{url:?}: no address"))?;
        if addrs.iter().any(|a| !a.ip().is_loopback()) {
            return Err(format!(
                "{url:?}: refusing a non-loopback target ({}); this tool only drives servers on this machine",
                addr.ip()
            ));
        }
        Ok(Target {
            addr,
            host: authority.to_string(),
            prefix: path.trim_end_matches('/').to_string(),
        })
    }
}

/// The k-th loopback source address (127.0.0.1 + k).
pub fn source_addr(k: u8, target: &SocketAddr) -> Option<IpAddr> {
    match target.ip() {
        IpAddr::V4(_) => Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, k.saturating_add(1)))),
        IpAddr::V6(_) => None,
    }
}

/// Parse `Name: value` headers.
pub fn parse_headers(raw: &[String]) -> Result<Vec<(String, String)>, String> {
    raw.iter()
        .map(|h| {
            let (n, v) = h
                .split_once(':')
                .ok_or_else(|| format!("header {h:?} is not `Name: value`"))?;
            let n = n.trim();
            if n.is_empty() || n.bytes().any(|b| !b.is_ascii_graphic()) || v.contains(['\r', '\n'])
            {
                return Err(format!("header {h:?} is not a valid header"));
            }
            Ok((n.to_string(), v.trim().to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let t = Target::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!(t.addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!((t.host.as_str(), t.prefix.as_str()), ("127.0.0.1:8080", ""));
        let t = Target::parse("http://localhost:81/base/").unwrap();
        assert!(t.addr.ip().is_loopback());
        assert_eq!(t.prefix, "/base");
        assert_eq!(Target::parse("http://127.0.0.3").unwrap().addr.port(), 80);
        assert!(Target::parse("http://[::1]:9000").unwrap().addr.is_ipv6());
        assert!(Target::parse("https://127.0.0.1").is_err());
        assert!(
            Target::parse("http://10.1.2.3:80")
                .unwrap_err()
                .contains("non-loopback")
        );
        assert!(Target::parse("http://8.8.8.8").is_err());
        assert!(Target::parse("http://").is_err());
    }

    #[test]
    fn headers() {
        assert_eq!(
            parse_headers(&["Authorization: Bearer x".into()]).unwrap(),
            vec![("Authorization".into(), "Bearer x".into())]
        );
        assert!(parse_headers(&["nocolon".into()]).is_err());
        assert!(parse_headers(&["a b: c".into()]).is_err());
    }
}
