#![allow(dead_code)]
//! `TestRedis`: a real `redis-server` spawned per test on a free port, with fault injection.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::hub::free_port;

/// A private redis-server process. Dropping it kills it (by its own pid).
pub struct TestRedis {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    persistent: bool,
}

/// A reply from the tiny RESP client.
#[derive(Debug, Clone, PartialEq)]
pub enum Resp {
    /// `+OK`
    Simple(String),
    /// `-ERR ...`
    Error(String),
    /// `:1`
    Int(i64),
    /// `$n` (None for nil)
    Bulk(Option<Vec<u8>>),
    /// `*n` (None for nil)
    Array(Option<Vec<Resp>>),
}

impl Resp {
    /// Bulk or simple string as text.
    pub fn text(&self) -> Option<String> {
        match self {
            Resp::Simple(s) => Some(s.clone()),
            Resp::Bulk(Some(b)) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        }
    }
}

/// The `redis-server` binary (Debian's, or one on `PATH`).
pub fn redis_server_path() -> String {
    for candidate in ["/usr/bin/redis-server", "/usr/local/bin/redis-server"] {
        if std::path::Path::new(candidate).exists() {
            return candidate.to_string();
        }
    }
    "redis-server".to_string()
}

impl TestRedis {
    /// Starts a redis-server without persistence (like a cache that loses data on restart).
    pub async fn spawn() -> TestRedis {
        Self::spawn_with(false).await
    }

    /// Starts a redis-server with AOF persistence (data survives `restart`).
    pub async fn spawn_persistent() -> TestRedis {
        Self::spawn_with(true).await
    }

    async fn spawn_with(persistent: bool) -> TestRedis {
        let dir = tempfile::tempdir().expect("tempdir for redis");
        let mut redis = TestRedis {
            port: free_port(),
            dir,
            child: None,
            persistent,
        };
        redis.start().await;
        redis
    }

    fn start_process(&mut self) -> Child {
        let log = self.dir.path().join("redis.log");
        let mut cmd = Command::new(redis_server_path());
        cmd.arg("--port")
            .arg(self.port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(&log)
            .arg("--save")
            .arg("")
            .arg("--daemonize")
            .arg("no")
            .arg("--protected-mode")
            .arg("no")
            // Redis 7 refuses DEBUG (e.g. `DEBUG SLEEP`, used to freeze the server from a
            // test) unless enabled; "local" allows it on loopback connections only.
            .arg("--enable-debug-command")
            .arg("local");
        if self.persistent {
            cmd.arg("--appendonly")
                .arg("yes")
                .arg("--appendfsync")
                .arg("always");
        } else {
            cmd.arg("--appendonly").arg("no");
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        cmd.spawn().unwrap_or_else(|e| {
            panic!("cannot start redis-server (install it: apt-get install redis-server): {e}")
        })
    }

    async fn start(&mut self) {
        for _attempt in 0..3 {
            let child = self.start_process();
            self.child = Some(child);
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Resp::Simple(pong)) = self.try_cmd(&["PING"]).await
                    && pong == "PONG"
                {
                    return;
                }
                if let Some(child) = self.child.as_mut()
                    && let Ok(Some(_)) = child.try_wait()
                {
                    break; // port taken or crashed: pick another port
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            self.kill();
            if !self.persistent {
                self.port = free_port();
            }
        }
        panic!("redis-server did not start; log: {}", self.log_text());
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// redis-server's own log.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    /// Kills the server with SIGKILL (no final save).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server if running and starts it again on the same port.
    pub async fn restart(&mut self) {
        self.kill();
        self.start().await;
    }

    /// Starts the server again after `kill` (same port).
    pub async fn start_again(&mut self) {
        self.start().await;
    }

    /// Sends SIGSTOP / SIGCONT to freeze or thaw the server.
    pub fn pause(&self, paused: bool) {
        if let Some(child) = self.child.as_ref() {
            let sig = if paused { libc::SIGSTOP } else { libc::SIGCONT };
            // SAFETY: signalling our own child process by its pid.
            unsafe {
                libc::kill(child.id() as libc::pid_t, sig);
            }
        }
    }

    /// How many times `command` (lowercase, e.g. `xrange`) ran, from `INFO commandstats`.
    pub async fn calls(&self, command: &str) -> u64 {
        let info = self.cmd(&["INFO", "commandstats"]).await;
        let text = info.text().unwrap_or_default();
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("cmdstat_{command}:calls=")))
            .and_then(|rest| rest.split(',').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }

    /// Runs one command on a fresh connection.
    pub async fn cmd(&self, args: &[&str]) -> Resp {
        self.try_cmd(args)
            .await
            .unwrap_or_else(|e| panic!("redis command {args:?} failed: {e}"))
    }

    /// Runs one command on a fresh connection, reporting I/O errors.
    pub async fn try_cmd(&self, args: &[&str]) -> Result<Resp, String> {
        resp_command(self.port, args).await
    }
}

/// Runs one command against the Redis on 127.0.0.1:`port` on a fresh connection.
pub async fn resp_command(port: u16, args: &[&str]) -> Result<Resp, String> {
    let mut stream = tokio::time::timeout(
        Duration::from_secs(2),
        TcpStream::connect(("127.0.0.1", port)),
    )
    .await
    .map_err(|_| "connect timeout".to_string())?
    .map_err(|e| e.to_string())?;
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    stream.write_all(&out).await.map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(stream);
    tokio::time::timeout(Duration::from_secs(10), read_resp(&mut reader))
        .await
        .map_err(|_| "reply timeout".to_string())?
}

fn read_resp<'a>(
    reader: &'a mut BufReader<TcpStream>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Resp, String>> + Send + 'a>> {
    Box::pin(async move {
        let mut line = String::new();
        reader
            .read_line(&mut line)
            .await
            .map_err(|e| e.to_string())?;
        let line = line.trim_end_matches("\r\n");
        let (kind, rest) = line.split_at(1.min(line.len()));
        match kind {
            "+" => Ok(Resp::Simple(rest.to_string())),
            "-" => Ok(Resp::Error(rest.to_string())),
            ":" => Ok(Resp::Int(rest.parse().map_err(|_| "bad int")?)),
            "$" => {
                let len: i64 = rest.parse().map_err(|_| "bad bulk len")?;
                if len < 0 {
                    return Ok(Resp::Bulk(None));
                }
                let mut buf = vec![0u8; len as usize + 2];
                reader
                    .read_exact(&mut buf)
                    .await
                    .map_err(|e| e.to_string())?;
                buf.truncate(len as usize);
                Ok(Resp::Bulk(Some(buf)))
            }
            "*" => {
                let len: i64 = rest.parse().map_err(|_| "bad array len")?;
                if len < 0 {
                    return Ok(Resp::Array(None));
                }
                let mut items = Vec::with_capacity(len as usize);
                for _ in 0..len {
                    items.push(read_resp(reader).await?);
                }
                Ok(Resp::Array(Some(items)))
            }
            other => Err(format!("unexpected RESP type {other:?}")),
        }
    })
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        self.pause(false);
        self.kill();
    }
}
