#![allow(dead_code)]
//! Spawning the real `dashclaw-realtime` binary for black-box tests.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use super::http::{get, shared_client};

/// Path of the binary under test: Cargo names it for the server crate's own tests; the load
/// crate's tests (which include this harness by path) find it beside their own binary, in the
/// same target directory, built by the same `cargo test --workspace`.
pub fn bin_path() -> &'static str {
    static PATH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PATH.get_or_init(|| {
        if let Some(path) = option_env!("CARGO_BIN_EXE_dashclaw-realtime") {
            return path.to_owned();
        }
        let sibling = option_env!("CARGO_BIN_EXE_dashclaw-realtime-load")
            .map(|load| Path::new(load).with_file_name("dashclaw-realtime"))
            .unwrap_or_else(|| panic!("no hub binary known to this test crate"));
        assert!(
            sibling.exists(),
            "{} is missing: run the tests with `cargo test --workspace`",
            sibling.display()
        );
        sibling.display().to_string()
    })
}

/// A port that was free a moment ago on 127.0.0.1 (bind :0, read, drop).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0")
        .unwrap_or_else(|e| panic!("binding 127.0.0.1:0 to find a free port: {e}"));
    l.local_addr()
        .unwrap_or_else(|e| panic!("local_addr of probe listener: {e}"))
        .port()
}

/// The Redis URL for Redis-backed tests, from the test process environment
/// (`REDIS_URL`); `None` when unset or empty.
pub fn test_redis_url() -> Option<String> {
    std::env::var("REDIS_URL").ok().filter(|s| !s.is_empty())
}

/// Env vars of the test process that must not leak into the hub (the test
/// decides every setting explicitly).
fn is_hub_setting(key: &str) -> bool {
    key.starts_with("REALTIME_")
        || key.starts_with("NEXTAUTH_")
        || key.starts_with("DASHCLAW_")
        || matches!(key, "REDIS_URL" | "RUST_LOG" | "DATABASE_URL" | "VERCEL")
}

/// `serve` command with a clean environment of hub settings, the given env
/// (plus `RUST_LOG=info` unless given) and args, output to `log`.
fn serve_command(env: &[(&str, &str)], args: &[&str], log: &Path) -> Command {
    let mut cmd = Command::new(bin_path());
    cmd.arg("serve").args(args);
    for (k, _) in std::env::vars_os() {
        if let Some(k) = k.to_str()
            && is_hub_setting(k)
        {
            cmd.env_remove(k);
        }
    }
    if !env.iter().any(|(k, _)| *k == "RUST_LOG") {
        cmd.env("RUST_LOG", "info");
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = File::create(log).unwrap_or_else(|e| panic!("creating {}: {e}", log.display()));
    let err = out
        .try_clone()
        .unwrap_or_else(|e| panic!("cloning log file handle: {e}"));
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err));
    cmd
}

fn read_lossy(path: &Path) -> String {
    match std::fs::read(path) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) => format!("<cannot read {}: {e}>", path.display()),
    }
}

/// The bind address from `--bind X` / `--bind=X` args or `REALTIME_BIND` env.
fn explicit_bind(env: &[(&str, &str)], args: &[&str]) -> Option<String> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if *a == "--bind" {
            return it.next().map(|s| s.to_string());
        }
        if let Some(v) = a.strip_prefix("--bind=") {
            return Some(v.to_string());
        }
    }
    env.iter()
        .find(|(k, _)| *k == "REALTIME_BIND")
        .map(|(_, v)| v.to_string())
}

/// Address to connect to for a bind address (unspecified IP -> loopback).
fn connect_addr(bind: &str) -> SocketAddr {
    let mut a: SocketAddr = bind
        .parse()
        .unwrap_or_else(|e| panic!("bind address {bind:?} is not ip:port ({e})"));
    if a.ip().is_unspecified() {
        a.set_ip(match a.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        });
    }
    a
}

fn looks_like_port_conflict(log: &str, addr: SocketAddr) -> bool {
    let l = log.to_ascii_lowercase();
    l.contains("address already in use")
        || l.contains("addrinuse")
        || l.contains("os error 98")
        || TcpListener::bind(addr).is_err()
}

struct ChildState {
    child: Child,
    status: Option<ExitStatus>,
}

impl ChildState {
    fn poll(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            match self.child.try_wait() {
                Ok(s) => self.status = s,
                Err(e) => panic!("try_wait on hub pid {}: {e}", self.child.id()),
            }
        }
        self.status
    }
}

enum Startup {
    Healthy,
    Exited(ExitStatus),
    Timeout,
}

/// A running `dashclaw-realtime serve` process, killed on drop.
pub struct TestHub {
    state: Mutex<ChildState>,
    pid: u32,
    addr: SocketAddr,
    log_path: PathBuf,
    dir: tempfile::TempDir,
}

impl std::fmt::Debug for TestHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestHub")
            .field("pid", &self.pid)
            .field("addr", &self.addr)
            .field("log_path", &self.log_path)
            .finish()
    }
}

impl TestHub {
    /// Start the hub with `env` on a free loopback port (unless `env` sets
    /// `REALTIME_BIND`), unpaced (unless `env` sets `REALTIME_MAX_NEW_STREAMS_PER_SECOND`),
    /// and wait until `GET /healthz` is 200.
    pub async fn spawn(env: &[(&str, &str)]) -> TestHub {
        Self::spawn_with_args(env, &[]).await
    }

    /// Same as [`spawn`](Self::spawn) with extra `serve` flags.
    pub async fn spawn_with_args(env: &[(&str, &str)], args: &[&str]) -> TestHub {
        let bind = explicit_bind(env, args);
        const ATTEMPTS: u32 = 3;
        for attempt in 1..=ATTEMPTS {
            let (bind_value, chosen) = match &bind {
                Some(b) => (b.clone(), false),
                None => (format!("127.0.0.1:{}", free_port()), true),
            };
            let addr = connect_addr(&bind_value);
            let mut full_env: Vec<(&str, &str)> = env.to_vec();
            if chosen {
                full_env.push(("REALTIME_BIND", &bind_value));
            }
            // Tests open hundreds of streams at once: unpaced unless the test sets a rate
            // (accept pacing has its own tests).
            if !env
                .iter()
                .any(|(k, _)| *k == "REALTIME_MAX_NEW_STREAMS_PER_SECOND")
            {
                full_env.push(("REALTIME_MAX_NEW_STREAMS_PER_SECOND", "0"));
            }
            let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("creating tempdir: {e}"));
            let log_path = dir.path().join("hub.log");
            let child = serve_command(&full_env, args, &log_path)
                .spawn()
                .unwrap_or_else(|e| panic!("spawning {}: {e}", bin_path()));
            let hub = TestHub {
                pid: child.id(),
                state: Mutex::new(ChildState {
                    child,
                    status: None,
                }),
                addr,
                log_path,
                dir,
            };
            match hub.wait_healthy(Duration::from_secs(30)).await {
                Startup::Healthy => return hub,
                Startup::Exited(status) => {
                    let log = hub.log_text();
                    if chosen && attempt < ATTEMPTS && looks_like_port_conflict(&log, addr) {
                        eprintln!(
                            "TestHub: port {} taken (attempt {attempt}), retrying; log:\n{log}",
                            addr.port()
                        );
                        continue;
                    }
                    panic!(
                        "hub exited during start-up with {status} (bind {bind_value}, env {env:?}, args {args:?}); log:\n{log}"
                    );
                }
                Startup::Timeout => panic!(
                    "hub did not answer GET /healthz with 200 within 30s (bind {bind_value}, env {env:?}, args {args:?}); log:\n{}",
                    hub.log_text()
                ),
            }
        }
        unreachable!("spawn loop always returns or panics")
    }

    async fn wait_healthy(&self, timeout: Duration) -> Startup {
        let deadline = Instant::now() + timeout;
        let url = format!("{}/healthz", self.base_url());
        loop {
            if let Some(status) = self.lock().poll() {
                return Startup::Exited(status);
            }
            let resp = shared_client()
                .get(&url)
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            if let Ok(r) = resp
                && r.status().as_u16() == 200
            {
                return Startup::Healthy;
            }
            if Instant::now() >= deadline {
                return Startup::Timeout;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn lock(&self) -> MutexGuard<'_, ChildState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `http://127.0.0.1:PORT`
    pub fn base_url(&self) -> String {
        match self.addr {
            SocketAddr::V4(a) => format!("http://{}:{}", a.ip(), a.port()),
            SocketAddr::V6(a) => format!("http://[{}]:{}", a.ip(), a.port()),
        }
    }

    /// `base_url() + path` (path starts with '/').
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url(), path)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Everything the hub wrote to stdout and stderr so far.
    pub fn log_text(&self) -> String {
        read_lossy(&self.log_path)
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The hub's private temp directory (holds the log; tests may put files there).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Poll the log until it contains `needle`.
    pub async fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log_text().contains(needle) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Poll `GET /readyz` until 200.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let url = self.url("/readyz");
        loop {
            let resp = shared_client()
                .get(&url)
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            if let Ok(r) = resp
                && r.status().as_u16() == 200
            {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `GET /metrics` text (panics unless 200).
    pub async fn metrics(&self) -> String {
        let (status, body, _) = get(&self.url("/metrics"), &[]).await;
        assert_eq!(status, 200, "GET /metrics: {body}");
        body
    }

    /// True while the process has not exited.
    pub fn is_running(&self) -> bool {
        self.lock().poll().is_none()
    }

    /// Exit status if the process has exited (reaping it).
    pub fn try_exit_status(&self) -> Option<ExitStatus> {
        self.lock().poll()
    }

    /// Send `sig` to the hub process (only if it has not been reaped, so the
    /// pid cannot belong to another process). Returns whether it was sent.
    pub fn signal(&self, sig: libc::c_int) -> bool {
        let mut st = self.lock();
        if st.poll().is_some() {
            return false;
        }
        let pid = libc::pid_t::try_from(self.pid)
            .unwrap_or_else(|_| panic!("pid {} does not fit pid_t", self.pid));
        // SAFETY: plain kill(2) on the pid of our own unreaped child.
        let rc = unsafe { libc::kill(pid, sig) };
        if rc != 0 {
            panic!(
                "kill({pid}, {sig}) failed: {}",
                std::io::Error::last_os_error()
            );
        }
        true
    }

    pub fn sigterm(&self) -> bool {
        self.signal(libc::SIGTERM)
    }

    pub fn sigint(&self) -> bool {
        self.signal(libc::SIGINT)
    }

    /// SIGKILL (simulates a crash).
    pub fn sigkill(&self) -> bool {
        self.signal(libc::SIGKILL)
    }

    /// Wait up to `timeout` for the process to exit; `None` if still running.
    pub async fn wait_exit(&self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.lock().poll() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Run `dashclaw-realtime serve <args>` with `env` (hub settings of the test
    /// process removed; `REALTIME_BIND` set to a free loopback port unless given),
    /// expecting it to exit within 10 s. Returns the status and stdout+stderr.
    pub async fn spawn_expect_exit(env: &[(&str, &str)], args: &[&str]) -> (ExitStatus, String) {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("creating tempdir: {e}"));
        let log_path = dir.path().join("hub.log");
        let bind_value = format!("127.0.0.1:{}", free_port());
        let mut full_env: Vec<(&str, &str)> = env.to_vec();
        if !env.iter().any(|(k, _)| *k == "REALTIME_BIND") {
            full_env.push(("REALTIME_BIND", &bind_value));
        }
        let mut child = serve_command(&full_env, args, &log_path)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {}: {e}", bin_path()));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return (status, read_lossy(&log_path)),
                Ok(None) => {}
                Err(e) => panic!("try_wait: {e}"),
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "hub did not exit within 10s (env {env:?}, args {args:?}); output:\n{}",
                    read_lossy(&log_path)
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for TestHub {
    fn drop(&mut self) {
        let st = self.state.get_mut().unwrap_or_else(|p| p.into_inner());
        if st.status.is_none() {
            // std's Child::kill sends SIGKILL to this child's pid only.
            let _ = st.child.kill();
            if let Ok(s) = st.child.wait() {
                st.status = Some(s);
            }
        }
    }
}

/// Run a non-serve subcommand (`token`, `hash-key`, ...) with `env` (hub
/// settings of the test process removed) and optional stdin; 10 s limit.
/// Returns (status, stdout, stderr).
pub async fn run_cli(
    args: &[&str],
    env: &[(&str, &str)],
    stdin: Option<&[u8]>,
) -> (ExitStatus, String, String) {
    use tokio::io::AsyncWriteExt;
    let mut cmd = tokio::process::Command::new(bin_path());
    cmd.args(args);
    for (k, _) in std::env::vars_os() {
        if let Some(k) = k.to_str()
            && is_hub_setting(k)
        {
            cmd.env_remove(k);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {} {args:?}: {e}", bin_path()));
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin was piped");
        if let Err(e) = pipe.write_all(input).await
            && e.kind() != std::io::ErrorKind::BrokenPipe
        {
            panic!("writing stdin of {args:?}: {e}");
        }
        drop(pipe);
    }
    match tokio::time::timeout(Duration::from_secs(10), child.wait_with_output()).await {
        Ok(Ok(out)) => (
            out.status,
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ),
        Ok(Err(e)) => panic!("waiting for {args:?}: {e}"),
        Err(_) => panic!("{} {args:?} did not exit within 10s", bin_path()),
    }
}
