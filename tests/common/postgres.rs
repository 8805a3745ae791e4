#![allow(dead_code)]
//! `TestPostgres`: a private PostgreSQL server per test (initdb into a temp dir, `postgres`
//! on a free port as the `postgres` user when the tests run as root), with DashClaw's
//! `api_keys` table and helpers to add and revoke keys. Never the machine's own server.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio_postgres::NoTls;

use super::auth::sha256_hex;
use super::hub::free_port;

/// A private PostgreSQL server; dropping it stops it (by its own pid).
pub struct TestPostgres {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    bin: PathBuf,
}

/// The newest installed PostgreSQL's `bin` directory (Debian: /usr/lib/postgresql/N/bin).
fn bin_dir() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin).unwrap_or_else(|| {
        panic!("PostgreSQL is not installed (/usr/lib/postgresql/*/bin/initdb); run scripts/install-test-deps.sh")
    })
}

/// uid and gid of the `postgres` user when running as root (Postgres refuses root).
fn run_as() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let name = std::ffi::CString::new("postgres").expect("no NUL");
    // SAFETY: getpwnam reads the passwd database; the pointer is checked before use and
    // the fields are copied out at once.
    let entry = unsafe { libc::getpwnam(name.as_ptr()) };
    assert!(
        !entry.is_null(),
        "running as root but there is no `postgres` user; run scripts/install-test-deps.sh"
    );
    // SAFETY: non-null, just returned by getpwnam.
    let (uid, gid) = unsafe { ((*entry).pw_uid, (*entry).pw_gid) };
    Some((uid, gid))
}

fn command(program: &Path) -> Command {
    let mut cmd = Command::new(program);
    if let Some((uid, gid)) = run_as() {
        cmd.uid(uid).gid(gid);
    }
    cmd
}

fn chown_to_postgres(path: &Path) {
    if let Some((uid, gid)) = run_as() {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
            .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
    }
}

impl TestPostgres {
    /// initdb into a fresh temp dir and start the server on a free port.
    pub async fn spawn() -> TestPostgres {
        let bin = bin_dir();
        let dir = tempfile::tempdir().expect("tempdir for postgres");
        chown_to_postgres(dir.path());
        let data = dir.path().join("data");
        let out = command(&bin.join("initdb"))
            .args(["-D"])
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
            ])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running initdb: {e}"));
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let mut pg = TestPostgres {
            port: free_port(),
            dir,
            child: None,
            bin,
        };
        for _ in 0..3 {
            if pg.try_start().await {
                return pg;
            }
            pg.port = free_port();
        }
        panic!("postgres did not start; log:\n{}", pg.log_text());
    }

    async fn try_start(&mut self) -> bool {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("postgres.log"))
            .expect("postgres log");
        let err = log.try_clone().expect("log handle");
        let child = command(&self.bin.join("postgres"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-p", &self.port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", "unix_socket_directories="])
            .args(["-c", "fsync=off", "-c", "full_page_writes=off"])
            .args(["-c", "shared_buffers=16MB", "-c", "max_connections=40"])
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err))
            .spawn()
            .unwrap_or_else(|e| panic!("spawning postgres: {e}"));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.connect().await.is_ok() {
                return true;
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(_)) = child.try_wait()
            {
                self.child = None;
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.kill();
        false
    }

    /// Starts the server again, same port and data (after [`Self::stop`]).
    pub async fn start(&mut self) {
        assert!(self.child.is_none(), "postgres is already running");
        assert!(
            self.try_start().await,
            "postgres did not restart on port {}; log:\n{}",
            self.port,
            self.log_text()
        );
    }

    /// Stops the server (fast shutdown) and waits for it to exit.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on our own unreaped child's pid.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Immediate shutdown: the postmaster ends its backends before it exits.
            // SAFETY: kill(2) on our own unreaped child's pid.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGQUIT) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// What the server logged.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }

    /// A fresh client connection.
    pub async fn connect(&self) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let (client, connection) = tokio_postgres::connect(
            &format!(
                "host=127.0.0.1 port={} user=postgres dbname=postgres",
                self.port
            ),
            NoTls,
        )
        .await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(client)
    }

    /// Runs SQL statements (no parameters).
    pub async fn execute(&self, sql: &str) {
        let client = self
            .connect()
            .await
            .unwrap_or_else(|e| panic!("connecting to postgres: {e}"));
        client
            .batch_execute(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// DashClaw's `organizations` and `api_keys` tables (the columns of its
    /// multi-tenant migration), with `orgs` in `organizations`.
    pub async fn create_dashclaw_schema(&self, orgs: &[&str]) {
        self.execute(
            "CREATE TABLE organizations (id TEXT PRIMARY KEY, name TEXT NOT NULL, \
               slug TEXT UNIQUE, plan TEXT DEFAULT 'free', created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP);
             CREATE TABLE api_keys (id TEXT PRIMARY KEY, org_id TEXT NOT NULL REFERENCES organizations(id),
               key_hash TEXT NOT NULL, key_prefix TEXT NOT NULL, label TEXT DEFAULT 'default',
               role TEXT DEFAULT 'member', last_used_at TIMESTAMP,
               created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP, revoked_at TIMESTAMP);
             CREATE INDEX idx_api_keys_key_hash ON api_keys(key_hash);
             CREATE INDEX idx_api_keys_org_id ON api_keys(org_id);",
        )
        .await;
        for org in orgs {
            self.execute(&format!(
                "INSERT INTO organizations (id, name, slug) VALUES ('{org}', '{org}', '{org}')"
            ))
            .await;
        }
    }

    /// Adds a key the way DashClaw issues one (lowercase hex SHA-256 in `key_hash`).
    pub async fn insert_key(&self, raw_key: &str, org: &str, role: &str) {
        let id = format!("key_{}", &sha256_hex(raw_key)[..16]);
        let prefix: String = raw_key.chars().take(8).collect();
        self.execute(&format!(
            "INSERT INTO api_keys (id, org_id, key_hash, key_prefix, role) \
             VALUES ('{id}', '{org}', '{}', '{prefix}', '{role}')",
            sha256_hex(raw_key)
        ))
        .await;
    }

    /// Revokes a key as DashClaw does (`revoked_at` set).
    pub async fn revoke_key(&self, raw_key: &str) {
        self.execute(&format!(
            "UPDATE api_keys SET revoked_at = CURRENT_TIMESTAMP WHERE key_hash = '{}'",
            sha256_hex(raw_key)
        ))
        .await;
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        self.kill();
    }
}
