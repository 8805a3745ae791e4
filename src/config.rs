//! Settings: each is an environment variable and a flag of `dashclaw-realtime serve`,
//! declared once, on [`Config`] itself: clap parses straight into the runtime config.
//!
//! Parsing errors name the variable and make clap exit with code 2.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, FromArgMatches, ValueEnum};

/// Which broker carries events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendKind {
    /// In-process only; the default and the rollback.
    Memory,
    /// Redis pub/sub and streams, shared by several instances.
    Redis,
}

impl BackendKind {
    /// Name used in `realtime.connected` frames and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Redis => "redis",
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

fn enum_setting<T: ValueEnum + Clone + Send + Sync + 'static>(
    env: &'static str,
) -> impl Fn(&str) -> Result<T, String> + Clone {
    move |raw| {
        T::from_str(raw.trim(), true).map_err(|_| {
            let allowed: Vec<String> = T::value_variants()
                .iter()
                .filter_map(|v| v.to_possible_value().map(|p| p.get_name().to_owned()))
                .collect();
            format!("{env} must be one of {}, got {raw:?}", allowed.join(", "))
        })
    }
}

fn positive_u64(env: &'static str) -> impl Fn(&str) -> Result<u64, String> + Clone {
    move |raw| match raw.trim().parse::<u64>() {
        Ok(v) if v > 0 => Ok(v),
        _ => Err(format!("{env} must be a positive integer, got {raw:?}")),
    }
}

fn seconds(env: &'static str) -> impl Fn(&str) -> Result<Duration, String> + Clone {
    let positive = positive_u64(env);
    move |raw| positive(raw).map(Duration::from_secs)
}

/// Whole seconds, 0 allowed (0 turns the feature off or skips the wait, as documented).
fn seconds_or_zero(env: &'static str) -> impl Fn(&str) -> Result<Duration, String> + Clone {
    move |raw| match raw.trim().parse::<u64>() {
        Ok(v) => Ok(Duration::from_secs(v)),
        _ => Err(format!("{env} must be a non-negative integer, got {raw:?}")),
    }
}

fn non_negative_u32(env: &'static str) -> impl Fn(&str) -> Result<u32, String> + Clone {
    move |raw| {
        raw.trim()
            .parse::<u32>()
            .map_err(|_| format!("{env} must be a non-negative integer, got {raw:?}"))
    }
}

fn millis(env: &'static str) -> impl Fn(&str) -> Result<Duration, String> + Clone {
    let positive = positive_u64(env);
    move |raw| positive(raw).map(Duration::from_millis)
}

fn at_least(env: &'static str, min: usize) -> impl Fn(&str) -> Result<usize, String> + Clone {
    move |raw| match raw.trim().parse::<usize>() {
        Ok(v) if v >= min => Ok(v),
        _ => Err(format!("{env} must be an integer >= {min}, got {raw:?}")),
    }
}

fn key_prefix(raw: &str) -> Result<String, String> {
    let ok = !raw.is_empty()
        && raw.len() <= 64
        && raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'));
    if ok {
        Ok(raw.to_owned())
    } else {
        Err(format!(
            "REALTIME_KEY_PREFIX must be 1-64 characters of [A-Za-z0-9_.:-], got {raw:?}"
        ))
    }
}

fn bind_addr(raw: &str) -> Result<SocketAddr, String> {
    raw.trim()
        .parse()
        .map_err(|_| format!("REALTIME_BIND must be an IP:port address, got {raw:?}"))
}

fn cors_origins(raw: &str) -> Result<Vec<String>, String> {
    let origins: Vec<String> = raw
        .split(',')
        .map(str::trim)
        .filter(|o| !o.is_empty())
        .map(|o| o.trim_end_matches('/').to_owned())
        .collect();
    for origin in &origins {
        let valid =
            origin == "*" || origin.starts_with("http://") || origin.starts_with("https://");
        if !valid {
            return Err(format!(
                "REALTIME_CORS_ORIGINS entries must be http(s)://host[:port] or *, got {origin:?}"
            ));
        }
    }
    Ok(origins)
}

fn redis_url(env: &'static str) -> impl Fn(&str) -> Result<String, String> + Clone {
    move |raw| {
        if crate::broker::redis::topology::is_cluster_url(raw) {
            // Never echo the value: it may hold a password.
            return crate::broker::redis::topology::ClusterUrl::parse(raw)
                .map(|_| raw.to_owned())
                .map_err(|e| format!("{env}: {e}"));
        }
        if raw.starts_with("redis://") || raw.starts_with("rediss://") || raw.starts_with("unix://")
        {
            Ok(raw.to_owned())
        } else {
            Err(format!(
                "{env} must start with redis://, rediss://, unix://, redis+cluster:// or \
                 rediss+cluster://, got {raw:?}"
            ))
        }
    }
}

fn count(env: &'static str) -> impl Fn(&str) -> Result<usize, String> + Clone {
    move |raw| {
        raw.trim()
            .parse::<usize>()
            .map_err(|_| format!("{env} must be a non-negative integer, got {raw:?}"))
    }
}

fn database_url(raw: &str) -> Result<String, String> {
    let raw = raw.trim();
    if raw.starts_with("postgres://") || raw.starts_with("postgresql://") {
        Ok(raw.to_owned())
    } else {
        // Never echo the value: it usually holds a password.
        Err("DATABASE_URL must be a postgres:// or postgresql:// URL".to_owned())
    }
}

fn org_setting(env: &'static str) -> impl Fn(&str) -> Result<String, String> + Clone {
    move |raw| {
        crate::envelope::OrgId::parse(raw.trim())
            .map(|org| org.to_string())
            .map_err(|e| format!("{env}: {e}"))
    }
}

fn non_empty(env: &'static str) -> impl Fn(&str) -> Result<String, String> + Clone {
    move |raw| {
        if raw.is_empty() {
            Err(format!("{env} must not be empty"))
        } else {
            Ok(raw.to_owned())
        }
    }
}

/// The runtime configuration: every setting of `serve`, parsed from flags and environment
/// (and the few internal knobs tests and embedders may change).
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// `memory` or `redis`; flipping back to `memory` is the rollback.
    #[arg(long, env = "REALTIME_BACKEND", default_value = "memory", value_parser = enum_setting::<BackendKind>("REALTIME_BACKEND"))]
    pub backend: BackendKind,
    /// Redis URL, required when the backend is `redis`.
    #[arg(long, env = "REDIS_URL", value_parser = redis_url("REDIS_URL"))]
    pub redis_url: Option<String>,
    /// DashClaw's other name for the Redis URL; `REDIS_URL` wins when both are set.
    #[arg(long = "realtime-redis-url", env = "REALTIME_REDIS_URL", hide = true,
          value_parser = redis_url("REALTIME_REDIS_URL"))]
    pub realtime_redis_url: Option<String>,
    /// Refuse to start unless the backend is Redis (DashClaw's cut-over guard).
    #[arg(long, env = "REALTIME_ENFORCE_REDIS", default_value = "false",
          action = clap::ArgAction::Set, value_parser = clap::builder::BoolishValueParser::new())]
    pub enforce_redis: bool,
    /// Replay window in seconds.
    #[arg(long = "replay-window-seconds", env = "REALTIME_REPLAY_WINDOW_SECONDS",
          default_value = "600", value_parser = seconds("REALTIME_REPLAY_WINDOW_SECONDS"))]
    pub replay_window: Duration,
    /// Prefix of every Redis key and channel.
    #[arg(long, env = "REALTIME_KEY_PREFIX", default_value = "dashclaw", value_parser = key_prefix)]
    pub key_prefix: String,
    /// Listen address.
    #[arg(long, env = "REALTIME_BIND", default_value = "127.0.0.1:8080", value_parser = bind_addr)]
    pub bind: SocketAddr,
    /// Seconds of stream silence before a `: heartbeat` comment.
    #[arg(long = "heartbeat-seconds", env = "REALTIME_HEARTBEAT_SECONDS", default_value = "15",
          value_parser = seconds("REALTIME_HEARTBEAT_SECONDS"))]
    pub heartbeat: Duration,
    /// The `retry:` hint sent to clients, in milliseconds.
    #[arg(long, env = "REALTIME_RETRY_MS", default_value = "3000",
          value_parser = positive_u64("REALTIME_RETRY_MS"))]
    pub retry_ms: u64,
    /// HS256 secret for JWT auth (at least 32 bytes).
    #[arg(long, env = "REALTIME_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// When set, hub JWTs must carry this `iss`.
    #[arg(long, env = "REALTIME_JWT_ISSUER", value_parser = non_empty("REALTIME_JWT_ISSUER"))]
    pub jwt_issuer: Option<String>,
    /// When set, hub JWTs must carry this `aud`.
    #[arg(long, env = "REALTIME_JWT_AUDIENCE", value_parser = non_empty("REALTIME_JWT_AUDIENCE"))]
    pub jwt_audience: Option<String>,
    /// DashClaw's NextAuth secret: turns on its session cookies.
    #[arg(long, env = "NEXTAUTH_SECRET", hide_env_values = true,
          value_parser = non_empty("NEXTAUTH_SECRET"))]
    pub nextauth_secret: Option<String>,
    /// The same secret under a hub-only name.
    #[arg(long = "realtime-nextauth-secret", env = "REALTIME_NEXTAUTH_SECRET",
          hide_env_values = true, hide = true, value_parser = non_empty("REALTIME_NEXTAUTH_SECRET"))]
    pub realtime_nextauth_secret: Option<String>,
    /// DashClaw's public URL: `https://` means the `__Secure-` session cookie name.
    #[arg(long, env = "NEXTAUTH_URL")]
    pub nextauth_url: Option<String>,
    /// Set on Vercel; like NextAuth, read only when `NEXTAUTH_URL` is unset.
    #[arg(long, env = "VERCEL", hide = true)]
    pub vercel: Option<String>,
    /// DashClaw's Postgres: SDK keys from its `api_keys` table.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, value_parser = database_url)]
    pub database_url: Option<String>,
    /// DashClaw's own API key (the fast path before the database).
    #[arg(long, env = "DASHCLAW_API_KEY", hide_env_values = true,
          value_parser = non_empty("DASHCLAW_API_KEY"))]
    pub dashclaw_api_key: Option<String>,
    /// The org `DASHCLAW_API_KEY` stands for.
    #[arg(long, env = "DASHCLAW_API_KEY_ORG", default_value = "org_default",
          value_parser = org_setting("DASHCLAW_API_KEY_ORG"))]
    pub dashclaw_api_key_org: String,
    /// DashClaw's mode: sessions without an org (`org_default`) are refused unless `self_host`.
    #[arg(long, env = "DASHCLAW_MODE", default_value = "self_host")]
    pub dashclaw_mode: String,
    /// Seconds a database key lookup (found, unknown or revoked) is trusted.
    #[arg(long = "api-key-cache-seconds", env = "REALTIME_API_KEY_CACHE_SECONDS",
          default_value = "30", value_parser = seconds("REALTIME_API_KEY_CACHE_SECONDS"))]
    pub api_key_cache: Duration,
    /// File of `<sha256 hex> <org_id> <scopes>` lines for API-key auth.
    #[arg(long, env = "REALTIME_API_KEYS_FILE")]
    pub api_keys_file: Option<PathBuf>,
    /// Comma-separated origins allowed by CORS.
    #[arg(long, env = "REALTIME_CORS_ORIGINS", value_parser = cors_origins, default_value = "")]
    pub cors_origins: std::vec::Vec<String>,
    /// Largest serialized envelope in bytes.
    #[arg(long, env = "REALTIME_MAX_PAYLOAD_BYTES", default_value = "65536",
          value_parser = at_least("REALTIME_MAX_PAYLOAD_BYTES", 512))]
    pub max_payload_bytes: usize,
    /// Open SSE connections allowed on this instance (default: open-file limit - 256).
    #[arg(long, env = "REALTIME_MAX_CONNECTIONS", default_value_t = default_max_connections(),
          value_parser = at_least("REALTIME_MAX_CONNECTIONS", 1))]
    pub max_connections: usize,
    /// Open SSE connections allowed per org on this instance (default, and at most: the
    /// instance limit).
    #[arg(long, env = "REALTIME_MAX_CONNECTIONS_PER_ORG",
          value_parser = at_least("REALTIME_MAX_CONNECTIONS_PER_ORG", 1))]
    pub max_connections_per_org: Option<usize>,
    /// Bind with SO_REUSEPORT so several instances share one port.
    #[arg(long, env = "REALTIME_REUSE_PORT", default_value = "false",
          action = clap::ArgAction::Set, value_parser = clap::builder::BoolishValueParser::new())]
    pub reuse_port: bool,
    /// Per-client bound on unsent bytes.
    #[arg(long, env = "REALTIME_SESSION_QUEUE_BYTES", default_value = "1048576",
          value_parser = at_least("REALTIME_SESSION_QUEUE_BYTES", 4096))]
    pub session_queue_bytes: usize,
    /// Seconds allowed for draining at shutdown.
    #[arg(long = "shutdown-grace-seconds", env = "REALTIME_SHUTDOWN_GRACE_SECONDS",
          default_value = "10", value_parser = seconds("REALTIME_SHUTDOWN_GRACE_SECONDS"))]
    pub shutdown_grace: Duration,
    /// Seconds between SIGTERM and the first stream closed: `/readyz` already answers 503,
    /// new streams are still accepted, so a load balancer can take the instance out first.
    #[arg(long = "drain-delay-seconds", env = "REALTIME_DRAIN_DELAY_SECONDS", default_value = "5",
          value_parser = seconds_or_zero("REALTIME_DRAIN_DELAY_SECONDS"))]
    pub drain_delay: Duration,
    /// Longest life of a stream in seconds (each stream's own age is jittered by ±10 %);
    /// 0 = no limit.
    #[arg(long = "max-stream-seconds", env = "REALTIME_MAX_STREAM_SECONDS", default_value = "1800",
          value_parser = seconds_or_zero("REALTIME_MAX_STREAM_SECONDS"))]
    pub max_stream_age: Duration,
    /// New streams accepted per second on this instance (token bucket, one second of burst);
    /// 0 = no limit.
    #[arg(long, env = "REALTIME_MAX_NEW_STREAMS_PER_SECOND", default_value_t = DEFAULT_MAX_NEW_STREAMS_PER_SECOND,
          value_parser = non_negative_u32("REALTIME_MAX_NEW_STREAMS_PER_SECOND"))]
    pub max_new_streams_per_second: u32,
    /// Seconds a peer may accept no data before its connection is dropped (TCP_USER_TIMEOUT).
    #[arg(long = "send-timeout-seconds", env = "REALTIME_SEND_TIMEOUT_SECONDS",
          default_value = "30", value_parser = seconds("REALTIME_SEND_TIMEOUT_SECONDS"))]
    pub send_timeout: Duration,
    /// Replicas that must confirm each publish (Redis `WAIT`) before it is acknowledged;
    /// 0 does not wait.
    #[arg(long = "redis-wait-replicas", env = "REALTIME_REDIS_WAIT_REPLICAS",
          default_value = "0", value_parser = count("REALTIME_REDIS_WAIT_REPLICAS"))]
    pub redis_wait_replicas: usize,
    /// Redis connect and response timeout in milliseconds (replay pages are sized to fit).
    #[arg(long = "redis-timeout-ms", env = "REALTIME_REDIS_TIMEOUT_MS", default_value = "2000",
          value_parser = millis("REALTIME_REDIS_TIMEOUT_MS"))]
    pub redis_timeout: Duration,
    /// Milliseconds a new connection has to send its request head (HTTP 408 after).
    #[arg(long = "request-timeout-ms", env = "REALTIME_REQUEST_TIMEOUT_MS",
          default_value = "5000", value_parser = millis("REALTIME_REQUEST_TIMEOUT_MS"))]
    pub request_timeout: Duration,
    /// `text` or `json` log lines.
    #[arg(long, env = "REALTIME_LOG_FORMAT", default_value = "text", value_parser = enum_setting::<LogFormat>("REALTIME_LOG_FORMAT"))]
    pub log_format: LogFormat,
    /// Memory backend: bytes of replay kept over all orgs (default: 1/8 of physical memory,
    /// between 64 MiB and 4 GiB).
    #[arg(long, env = "REALTIME_MEMORY_MAX_BYTES", default_value_t = default_memory_max_bytes(),
          value_parser = at_least("REALTIME_MEMORY_MAX_BYTES", 1 << 20))]
    pub memory_max_bytes: usize,
    /// Memory backend: bytes of replay kept per org.
    #[arg(long, env = "REALTIME_MEMORY_MAX_BYTES_PER_ORG", default_value = "67108864",
          value_parser = at_least("REALTIME_MEMORY_MAX_BYTES_PER_ORG", 65536))]
    pub memory_max_bytes_per_org: usize,
    /// How long an org supervisor without sessions lingers before it stops.
    #[arg(skip = Duration::from_secs(30))]
    pub supervisor_idle: Duration,
    /// Events per replay page.
    #[arg(skip = 256usize)]
    pub replay_page_size: usize,
}

/// A setting combination that cannot run.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The Redis backend needs a URL.
    #[error("REDIS_URL (or REALTIME_REDIS_URL) is required when REALTIME_BACKEND=redis")]
    MissingRedisUrl,
    /// Auth is off, so only loopback binds are allowed.
    #[error(
        "refusing to bind {0}: auth is off (none of REALTIME_JWT_SECRET, REALTIME_API_KEYS_FILE, \
         NEXTAUTH_SECRET, DATABASE_URL, DASHCLAW_API_KEY is set), so anyone could read every \
         org's events; bind a loopback address (REALTIME_BIND=127.0.0.1:8080) or configure auth"
    )]
    OpenNonLoopback(SocketAddr),
    /// The API keys file could not be read or parsed.
    #[error("REALTIME_API_KEYS_FILE: {0}")]
    ApiKeys(String),
    /// An empty JWT secret would accept forged tokens.
    #[error("REALTIME_JWT_SECRET must not be empty")]
    EmptyJwtSecret,
    /// A short HMAC secret can be brute-forced from one token.
    #[error("REALTIME_JWT_SECRET must be at least {MIN_JWT_SECRET_BYTES} bytes, got {0}")]
    ShortJwtSecret(usize),
    /// Both names of the NextAuth secret are set, to different values.
    #[error(
        "NEXTAUTH_SECRET and REALTIME_NEXTAUTH_SECRET are both set and differ; set one of them"
    )]
    ConflictingNextauthSecret,
    /// DashClaw's cut-over guard: Redis is required.
    #[error("REALTIME_ENFORCE_REDIS is set, so REALTIME_BACKEND must be redis (it is memory)")]
    EnforceRedis,
    /// The DashClaw credentials could not be set up.
    #[error("{0}")]
    Auth(String),
}

/// Default of `REALTIME_MAX_NEW_STREAMS_PER_SECOND`: a storm of resumes is spread over
/// seconds rather than met at once (README, "Accept pacing", says how it was chosen).
pub const DEFAULT_MAX_NEW_STREAMS_PER_SECOND: u32 = 500;

/// Shortest `REALTIME_JWT_SECRET` accepted: 256 bits, the size of an HS256 key.
pub const MIN_JWT_SECRET_BYTES: usize = 32;

/// DashClaw's realtime settings the hub has no use for: named once at start-up, never an
/// error, so DashClaw's environment can be given to the hub unchanged.
pub const IGNORED_DASHCLAW_SETTINGS: [&str; 3] = [
    "REALTIME_REPLAY_MAX_EVENTS",
    "REALTIME_MEMORY_MAX_LISTENERS",
    "REALTIME_MAX_LISTENERS",
];

/// DashClaw's floor for `REALTIME_REPLAY_WINDOW_SECONDS`.
pub const DASHCLAW_MIN_REPLAY_WINDOW: Duration = Duration::from_secs(60);

/// Which of [`IGNORED_DASHCLAW_SETTINGS`] the environment sets.
pub fn ignored_dashclaw_settings() -> Vec<&'static str> {
    IGNORED_DASHCLAW_SETTINGS
        .into_iter()
        .filter(|name| std::env::var_os(name).is_some())
        .collect()
}

impl Default for Config {
    /// Every setting at its documented default, whatever the environment holds.
    fn default() -> Self {
        let command = Config::augment_args(clap::Command::new("defaults"))
            .mut_args(|arg| arg.env(None::<&str>));
        let matches = command
            .try_get_matches_from(["defaults"])
            .unwrap_or_else(|e| panic!("the settings' defaults do not parse: {e}"));
        Config::from_arg_matches(&matches)
            .unwrap_or_else(|e| panic!("the settings' defaults do not parse: {e}"))
    }
}

impl Config {
    /// Checks the rules that span several settings, and merges DashClaw's aliases.
    pub fn validate(mut self) -> Result<Self, ConfigError> {
        if self.redis_url.is_none() {
            self.redis_url = self.realtime_redis_url.clone();
        }
        if self.backend == BackendKind::Redis && self.redis_url.is_none() {
            return Err(ConfigError::MissingRedisUrl);
        }
        if self.enforce_redis && self.backend != BackendKind::Redis {
            return Err(ConfigError::EnforceRedis);
        }
        match self.jwt_secret.as_deref().map(str::len) {
            Some(0) => return Err(ConfigError::EmptyJwtSecret),
            Some(n) if n < MIN_JWT_SECRET_BYTES => return Err(ConfigError::ShortJwtSecret(n)),
            _ => {}
        }
        if let (Some(a), Some(b)) = (&self.nextauth_secret, &self.realtime_nextauth_secret)
            && a != b
        {
            return Err(ConfigError::ConflictingNextauthSecret);
        }
        if self.auth_off() && !self.bind.ip().is_loopback() {
            return Err(ConfigError::OpenNonLoopback(self.bind));
        }
        Ok(self)
    }

    /// True when no credential verifier is configured.
    pub fn auth_off(&self) -> bool {
        self.jwt_secret.is_none()
            && self.api_keys_file.is_none()
            && self.nextauth_secret().is_none()
            && self.database_url.is_none()
            && self.dashclaw_api_key.is_none()
    }

    /// The NextAuth secret under either of its names.
    pub fn nextauth_secret(&self) -> Option<&str> {
        self.nextauth_secret
            .as_deref()
            .or(self.realtime_nextauth_secret.as_deref())
    }

    /// Whether DashClaw's session cookie has the `__Secure-` name: `NEXTAUTH_URL` is
    /// `https://`, or, when it is unset, `VERCEL` is (NextAuth's own rule).
    pub fn secure_session_cookie(&self) -> bool {
        match &self.nextauth_url {
            Some(url) => url.starts_with("https://"),
            None => self.vercel.as_deref().is_some_and(|v| !v.is_empty()),
        }
    }

    /// Whether a session without an org (DashClaw's `org_default`) is served.
    pub fn allows_default_org(&self) -> bool {
        self.dashclaw_mode == "self_host"
    }

    /// Streams allowed per org: `REALTIME_MAX_CONNECTIONS_PER_ORG`, never above the
    /// instance limit, which is also its default.
    pub fn per_org_limit(&self) -> usize {
        self.max_connections_per_org
            .unwrap_or(self.max_connections)
            .min(self.max_connections)
    }

    /// Settings that are accepted but do not do what their name suggests, one line each.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.replay_window < DASHCLAW_MIN_REPLAY_WINDOW {
            out.push(format!(
                "REALTIME_REPLAY_WINDOW_SECONDS={} is below DashClaw's floor of {}; the hub \
                 uses it as given",
                self.replay_window.as_secs(),
                DASHCLAW_MIN_REPLAY_WINDOW.as_secs()
            ));
        }
        if let Some(per_org) = self.max_connections_per_org
            && per_org > self.max_connections
        {
            out.push(format!(
                "REALTIME_MAX_CONNECTIONS_PER_ORG={per_org} is above REALTIME_MAX_CONNECTIONS={}; \
                 the instance limit applies",
                self.max_connections
            ));
        }
        if self.nextauth_secret().is_none() && self.nextauth_url.is_some() {
            out.push(
                "NEXTAUTH_URL is set without NEXTAUTH_SECRET: session cookies stay off".into(),
            );
        }
        out
    }

    /// The longest a stream lives, when limited.
    pub fn max_stream_age(&self) -> Option<Duration> {
        (!self.max_stream_age.is_zero()).then_some(self.max_stream_age)
    }

    /// Replay window in milliseconds.
    pub fn window_ms(&self) -> u64 {
        self.replay_window.as_millis() as u64
    }
}

/// An eighth of physical memory, between 64 MiB and 4 GiB.
pub fn default_memory_max_bytes() -> usize {
    // SAFETY: sysconf only reads system configuration.
    let (pages, page_size) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    let physical = usize::try_from(pages.max(0))
        .unwrap_or(0)
        .saturating_mul(usize::try_from(page_size.max(0)).unwrap_or(0));
    (physical / 8).clamp(64 << 20, 4 << 30)
}

/// The soft open-file limit minus 256 descriptors kept for listeners, Redis and logs.
pub fn default_max_connections() -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass and has no other effects.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    if rc != 0 || limit.rlim_cur == libc::RLIM_INFINITY {
        return 65_536;
    }
    (limit.rlim_cur as usize).saturating_sub(256).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_ignore_the_environment() {
        let config = Config::default();
        assert_eq!(config.replay_window, Duration::from_secs(600));
        assert_eq!(config.backend, BackendKind::Memory);
        assert_eq!(config.replay_page_size, 256);
        assert_eq!(config.supervisor_idle, Duration::from_secs(30));
        assert_eq!(config.request_timeout, Duration::from_millis(5000));
        assert!(config.auth_off());
        assert_eq!(config.api_key_cache, Duration::from_secs(30));
        assert_eq!(config.dashclaw_mode, "self_host");
        assert_eq!(config.per_org_limit(), config.max_connections);
        assert_eq!(config.drain_delay, Duration::from_secs(5));
        assert_eq!(config.max_stream_age(), Some(Duration::from_secs(1800)));
        assert_eq!(
            config.max_new_streams_per_second,
            DEFAULT_MAX_NEW_STREAMS_PER_SECOND
        );
    }

    #[test]
    fn lifecycle_settings_take_zero() {
        let config = parse(&[
            "--drain-delay-seconds",
            "0",
            "--max-stream-seconds",
            "0",
            "--max-new-streams-per-second",
            "0",
        ])
        .unwrap();
        assert_eq!(config.drain_delay, Duration::ZERO);
        assert_eq!(config.max_stream_age(), None);
        assert_eq!(config.max_new_streams_per_second, 0);
    }

    fn parse(env: &[&str]) -> Result<Config, ConfigError> {
        let command =
            Config::augment_args(clap::Command::new("t")).mut_args(|arg| arg.env(None::<&str>));
        let mut argv = vec!["t".to_owned()];
        argv.extend(env.iter().map(|s| s.to_string()));
        let matches = command.try_get_matches_from(argv).expect("flags parse");
        Config::from_arg_matches(&matches)
            .expect("flags parse")
            .validate()
    }

    #[test]
    fn per_org_limit_never_exceeds_the_instance_limit() {
        let config = parse(&["--max-connections", "10"]).unwrap();
        assert_eq!(config.per_org_limit(), 10);
        let config = parse(&[
            "--max-connections",
            "10",
            "--max-connections-per-org",
            "50000",
        ]);
        assert_eq!(config.unwrap().per_org_limit(), 10);
        let config = parse(&["--max-connections", "10", "--max-connections-per-org", "3"]);
        assert_eq!(config.unwrap().per_org_limit(), 3);
    }

    #[test]
    fn cross_setting_rules() {
        let short = parse(&["--jwt-secret", "s3cret"]).unwrap_err();
        assert!(matches!(short, ConfigError::ShortJwtSecret(6)), "{short}");
        assert!(short.to_string().contains("REALTIME_JWT_SECRET"));
        assert!(parse(&["--jwt-secret", &"x".repeat(32)]).is_ok());
        let enforce = parse(&["--enforce-redis", "true"]).unwrap_err();
        assert!(matches!(enforce, ConfigError::EnforceRedis));
        let alias = parse(&["--backend", "redis", "--realtime-redis-url", "redis://a:1"]).unwrap();
        assert_eq!(alias.redis_url.as_deref(), Some("redis://a:1"));
        let both = parse(&[
            "--backend",
            "redis",
            "--redis-url",
            "redis://first:1",
            "--realtime-redis-url",
            "redis://second:1",
        ])
        .unwrap();
        assert_eq!(both.redis_url.as_deref(), Some("redis://first:1"));
        let conflict = parse(&["--nextauth-secret", "a", "--realtime-nextauth-secret", "b"]);
        assert!(matches!(
            conflict,
            Err(ConfigError::ConflictingNextauthSecret)
        ));
        let auth = parse(&["--nextauth-secret", "a"]).unwrap();
        assert!(!auth.auth_off());
        assert!(!auth.secure_session_cookie());
        let https = parse(&[
            "--nextauth-secret",
            "a",
            "--nextauth-url",
            "https://d.example",
        ]);
        assert!(https.unwrap().secure_session_cookie());
        let vercel = parse(&["--nextauth-secret", "a", "--vercel", "1"]).unwrap();
        assert!(vercel.secure_session_cookie());
        let db = parse(&["--database-url", "postgres://u@h/db"]).unwrap();
        assert!(!db.auth_off());
        assert!(!parse(&["--dashclaw-api-key", "k"]).unwrap().auth_off());
        assert!(parse(&["--dashclaw-mode", "saas"]).unwrap().dashclaw_mode == "saas");
    }
}
