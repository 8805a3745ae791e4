//! The `dashclaw-realtime` command: `serve` (the default), `token`, `hash-key`.

use std::io::{BufRead, Write};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use dashclaw_realtime::auth::{Auth, Scope, SignError, hash_api_key, sign_token};
use dashclaw_realtime::config::{Config, LogFormat, ignored_dashclaw_settings};
use dashclaw_realtime::envelope::OrgId;
use dashclaw_realtime::server;
use tracing::{info, warn};
use tracing_subscriber::EnvFilter;

/// jemalloc, so memory freed after a spike goes back to the system: with glibc's allocator
/// the hub kept its peak (hundreds of MB after a churn of reconnecting clients) long after
/// every stream and org had gone, because freed memory stayed in its per-thread arenas.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options: a background thread returns dirty pages after 1 s unused (muzzy
/// ones after 1 s more), whether or not the process allocates again.
#[allow(non_upper_case_globals)]
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static malloc_conf: &[u8] = b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:1000\0";

/// Realtime SSE hub for DashClaw.
#[derive(Debug, Parser)]
#[command(
    name = "dashclaw-realtime",
    version,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: Config,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the hub (the default when no command is given).
    Serve(Box<Config>),
    /// Print an HS256 token for REALTIME_JWT_SECRET.
    Token(TokenArgs),
    /// Read an API key on stdin and print its REALTIME_API_KEYS_FILE line.
    HashKey(HashKeyArgs),
}

fn parse_org(raw: &str) -> Result<OrgId, String> {
    OrgId::parse(raw).map_err(|e| e.to_string())
}

fn parse_scopes(raw: &str) -> Result<Vec<Scope>, String> {
    raw.split([',', ' '])
        .filter(|w| !w.is_empty())
        .map(|w| {
            Scope::parse(w)
                .ok_or_else(|| format!("unknown scope {w:?}; use subscribe, publish or ops"))
        })
        .collect()
}

/// `30s`, `15m`, `1h`, `7d`, or plain seconds.
fn parse_ttl(raw: &str) -> Result<u64, String> {
    let raw = raw.trim();
    let (digits, unit) = match raw.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => raw.split_at(i),
        None => (raw, "s"),
    };
    let value: u64 = digits.parse().map_err(|_| format!("bad ttl {raw:?}"))?;
    let factor = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("bad ttl unit in {raw:?}; use s, m, h or d")),
    };
    let seconds = value
        .checked_mul(factor)
        .filter(|s| *s <= MAX_TTL_SECONDS)
        .ok_or_else(|| format!("ttl {raw:?} is too long; at most {MAX_TTL_SECONDS} seconds"))?;
    if seconds == 0 {
        return Err(format!("ttl {raw:?} must be at least one second"));
    }
    Ok(seconds)
}

/// The longest `--ttl`: 100 years, far beyond any sane token and far from any overflow.
const MAX_TTL_SECONDS: u64 = 100 * 365 * 86_400;

#[derive(Debug, Args)]
struct TokenArgs {
    /// Org the token covers (repeat for several).
    #[arg(long = "org", required = true, value_parser = parse_org)]
    orgs: Vec<OrgId>,
    /// Scopes, comma- or space-separated: subscribe, publish, ops.
    #[arg(long, default_value = "subscribe", value_parser = parse_scopes)]
    scope: std::vec::Vec<Scope>,
    /// Lifetime: 30s, 15m, 1h, 7d.
    #[arg(long, default_value = "1h", value_parser = parse_ttl)]
    ttl: u64,
    /// The HS256 secret.
    #[arg(long, env = "REALTIME_JWT_SECRET", hide_env_values = true)]
    secret: String,
}

#[derive(Debug, Args)]
struct HashKeyArgs {
    /// Org the key covers.
    #[arg(long, value_parser = parse_org)]
    org: OrgId,
    /// Scopes, comma-separated: subscribe, publish, ops.
    #[arg(long, default_value = "subscribe", value_parser = parse_scopes)]
    scope: std::vec::Vec<Scope>,
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // tokio-postgres logs statement parameters at debug level, and the key lookup's
    // parameter is the hash of a client's key: never below info, whatever RUST_LOG says.
    let filter = match "tokio_postgres=info".parse() {
        Ok(directive) => filter.add_directive(directive),
        Err(_) => filter,
    };
    // Colour codes only on a terminal: in files and collectors they break every grep.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn fail(code: u8, message: impl std::fmt::Display) -> ExitCode {
    let _ = writeln!(std::io::stderr(), "error: {message}");
    ExitCode::from(code)
}

fn serve(config: Config) -> ExitCode {
    let config = match config.validate() {
        Ok(config) => config,
        Err(error) => return fail(2, error),
    };
    let auth = match Auth::from_config(&config) {
        Ok(auth) => auth,
        Err(error) => return fail(2, error),
    };
    init_logging(config.log_format);
    let ignored = ignored_dashclaw_settings();
    if !ignored.is_empty() {
        info!(
            settings = %ignored.join(", "),
            "DashClaw settings the hub has no use for are ignored"
        );
    }
    for warning in config.warnings() {
        warn!("{warning}");
    }
    let result = actix_web::rt::System::new().block_on(server::serve(config, auth));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => fail(1, error),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        None => serve(cli.serve),
        Some(Command::Serve(config)) => serve(*config),
        Some(Command::Token(args)) => {
            match sign_token(&args.secret, &args.orgs, &args.scope, args.ttl) {
                Ok(token) => {
                    let _ = writeln!(std::io::stdout(), "{token}");
                    ExitCode::SUCCESS
                }
                Err(error @ SignError::TtlTooLong(_)) => fail(2, error),
                Err(error) => fail(1, error),
            }
        }
        Some(Command::HashKey(args)) => {
            let mut key = String::new();
            if let Err(error) = std::io::stdin().lock().read_line(&mut key) {
                return fail(1, error);
            }
            let key = key.trim_end_matches(['\r', '\n']);
            if key.is_empty() {
                return fail(2, "no key on stdin");
            }
            let scopes: Vec<&str> = args.scope.iter().map(|s| s.as_str()).collect();
            let _ = writeln!(
                std::io::stdout(),
                "{} {} {}",
                hash_api_key(key),
                args.org,
                scopes.join(",")
            );
            ExitCode::SUCCESS
        }
    }
}
