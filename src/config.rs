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

fn redis_url(raw: &str) -> Result<String, String> {
    if raw.starts_with("redis://") || raw.starts_with("rediss://") || raw.starts_with("unix://") {
        Ok(raw.to_owned())
    } else {
        Err(format!(
            "REDIS_URL must start with redis://, rediss:// or unix://, got {raw:?}"
        ))
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
    #[arg(long, env = "REDIS_URL", value_parser = redis_url)]
    pub redis_url: Option<String>,
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
    /// HS256 secret for JWT auth.
    #[arg(long, env = "REALTIME_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
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
    /// Open SSE connections allowed per org on this instance.
    #[arg(long, env = "REALTIME_MAX_CONNECTIONS_PER_ORG", default_value = "50000",
          value_parser = at_least("REALTIME_MAX_CONNECTIONS_PER_ORG", 1))]
    pub max_connections_per_org: usize,
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
    /// Seconds a peer may accept no data before its connection is dropped (TCP_USER_TIMEOUT).
    #[arg(long = "send-timeout-seconds", env = "REALTIME_SEND_TIMEOUT_SECONDS",
          default_value = "30", value_parser = seconds("REALTIME_SEND_TIMEOUT_SECONDS"))]
    pub send_timeout: Duration,
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
    #[error("REDIS_URL is required when REALTIME_BACKEND=redis")]
    MissingRedisUrl,
    /// Auth is off, so only loopback binds are allowed.
    #[error(
        "refusing to bind {0}: auth is off (neither REALTIME_JWT_SECRET nor REALTIME_API_KEYS_FILE is set), \
         so anyone could read every org's events; bind a loopback address (REALTIME_BIND=127.0.0.1:8080) or configure auth"
    )]
    OpenNonLoopback(SocketAddr),
    /// The API keys file could not be read or parsed.
    #[error("REALTIME_API_KEYS_FILE: {0}")]
    ApiKeys(String),
    /// An empty JWT secret would accept forged tokens.
    #[error("REALTIME_JWT_SECRET must not be empty")]
    EmptyJwtSecret,
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
    /// Checks the rules that span several settings.
    pub fn validate(self) -> Result<Self, ConfigError> {
        if self.backend == BackendKind::Redis && self.redis_url.is_none() {
            return Err(ConfigError::MissingRedisUrl);
        }
        if self.jwt_secret.as_deref() == Some("") {
            return Err(ConfigError::EmptyJwtSecret);
        }
        if self.auth_off() && !self.bind.ip().is_loopback() {
            return Err(ConfigError::OpenNonLoopback(self.bind));
        }
        Ok(self)
    }

    /// True when no credential verifier is configured.
    pub fn auth_off(&self) -> bool {
        self.jwt_secret.is_none() && self.api_keys_file.is_none()
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
    }
}
