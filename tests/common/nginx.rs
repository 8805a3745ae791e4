#![allow(dead_code)]
//! `TestNginx`: a private nginx (never the system's) running `deploy/nginx.conf` with the
//! test's own ports, in its own prefix directory; killed by its own pid on drop.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::hub::free_port;

/// The config operators install, as committed.
pub fn deploy_config() -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy/nginx.conf");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// `deploy/nginx.conf` with the upstreams and `listen` pointed at the test's ports; with
/// `rolled_back`, the hub's block removed as the README's rollback says.
pub fn render(config: &str, hub_port: u16, next_port: u16, port: u16, rolled_back: bool) -> String {
    let mut out = String::new();
    let mut skipping = false;
    for line in config.lines() {
        let trimmed = line.trim_start();
        if rolled_back && trimmed.starts_with("# BEGIN dashclaw-realtime") {
            skipping = true;
        }
        if !skipping {
            out.push_str(line);
            out.push('\n');
        }
        if trimmed.starts_with("# END dashclaw-realtime") {
            skipping = false;
        }
    }
    let replaced = out
        .replace(
            "server 127.0.0.1:8080;",
            &format!("server 127.0.0.1:{hub_port};"),
        )
        .replace(
            "server 127.0.0.1:3000;",
            &format!("server 127.0.0.1:{next_port};"),
        )
        .replace("listen 80;", &format!("listen 127.0.0.1:{port};"));
    assert_ne!(
        replaced, out,
        "deploy/nginx.conf no longer has the expected addresses"
    );
    replaced
}

fn nginx_path() -> &'static str {
    if std::path::Path::new("/usr/sbin/nginx").exists() {
        "/usr/sbin/nginx"
    } else {
        "nginx"
    }
}

/// A private nginx process in front of a hub and a "Next app".
pub struct TestNginx {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl TestNginx {
    /// Starts nginx with `deploy/nginx.conf` on a free port.
    pub async fn spawn(hub_port: u16, next_port: u16) -> TestNginx {
        let dir = tempfile::tempdir().expect("tempdir for nginx");
        for sub in ["tmp", "logs"] {
            std::fs::create_dir_all(dir.path().join(sub)).expect("nginx dirs");
        }
        let mut nginx = TestNginx {
            port: free_port(),
            dir,
            child: None,
        };
        nginx.write_config(hub_port, next_port, false);
        for _ in 0..3 {
            if nginx.try_start().await {
                return nginx;
            }
            nginx.port = free_port();
            nginx.write_config(hub_port, next_port, false);
        }
        panic!("nginx did not start; error log:\n{}", nginx.error_log());
    }

    fn write_config(&self, hub_port: u16, next_port: u16, rolled_back: bool) {
        let prefix = self.dir.path().display();
        let site = render(
            &deploy_config(),
            hub_port,
            next_port,
            self.port,
            rolled_back,
        );
        std::fs::write(self.dir.path().join("dashclaw.conf"), site).expect("site config");
        // Workers run as root only when the test does, so they can use the temp dirs.
        let user = if unsafe { libc::geteuid() } == 0 {
            "user root root;"
        } else {
            ""
        };
        let main = format!(
            "{user}\nworker_processes 1;\ndaemon off;\npid {prefix}/nginx.pid;\n\
             error_log {prefix}/logs/error.log info;\nevents {{ worker_connections 1024; }}\n\
             http {{\n  access_log {prefix}/logs/access.log;\n\
               client_body_temp_path {prefix}/tmp/body;\n  proxy_temp_path {prefix}/tmp/proxy;\n\
               fastcgi_temp_path {prefix}/tmp/fastcgi;\n  uwsgi_temp_path {prefix}/tmp/uwsgi;\n\
               scgi_temp_path {prefix}/tmp/scgi;\n  include {prefix}/dashclaw.conf;\n}}\n"
        );
        std::fs::write(self.dir.path().join("nginx.conf"), main).expect("nginx.conf");
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(nginx_path());
        cmd.arg("-p")
            .arg(self.dir.path())
            .arg("-e")
            .arg(self.dir.path().join("logs/error.log"))
            .arg("-c")
            .arg(self.dir.path().join("nginx.conf"));
        cmd
    }

    async fn try_start(&mut self) -> bool {
        let child = self
            .command()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning nginx (apt-get install nginx): {e}"));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return true;
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(_)) = child.try_wait()
            {
                self.child = None;
                return false;
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        self.kill();
        false
    }

    /// Applies the rollback: the config without the hub's block, reloaded in place.
    pub async fn roll_back(&self, hub_port: u16, next_port: u16) {
        self.write_config(hub_port, next_port, true);
        let out = self
            .command()
            .args(["-s", "reload"])
            .output()
            .unwrap_or_else(|e| panic!("nginx -s reload: {e}"));
        assert!(
            out.status.success(),
            "nginx -s reload failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.error_log()
        );
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The port nginx listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// nginx's error log.
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("logs/error.log")).unwrap_or_default()
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGTERM is nginx's fast shutdown; the master ends its workers.
            // SAFETY: kill(2) on our own unreaped child's pid.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
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
}

impl Drop for TestNginx {
    fn drop(&mut self) {
        self.kill();
    }
}
