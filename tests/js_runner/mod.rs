//! Runs one Node test file (`node --test`) against the binary cargo just built, so that
//! `cargo test` covers the browser and Node-client suites. Missing tools are a failure
//! (never a silent skip): `scripts/test.sh` installs them.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One Node suite at a time per test binary: each spawns hubs (and Chromium), and the
/// machine is small.
static SERIAL: Mutex<()> = Mutex::new(());

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

const HOW_TO_FIX: &str = "run scripts/test.sh (or scripts/install-test-deps.sh) to install it";

fn require_node() {
    match Command::new("node").arg("--version").output() {
        Ok(out) if out.status.success() => {
            let v = String::from_utf8_lossy(&out.stdout);
            let major: u32 = v
                .trim()
                .trim_start_matches('v')
                .split('.')
                .next()
                .and_then(|m| m.parse().ok())
                .unwrap_or(0);
            assert!(
                major >= 20,
                "node {v} is too old (need >= 20 for playwright-core and node --test); {HOW_TO_FIX}"
            );
        }
        Ok(out) => panic!("`node --version` failed ({}); {HOW_TO_FIX}", out.status),
        Err(e) => panic!("node is not installed ({e}); {HOW_TO_FIX}"),
    }
}

/// Fails unless each path exists, naming what is missing.
pub fn require_paths(paths: &[(&str, &str)]) {
    for (path, what) in paths {
        let p = if Path::new(path).is_absolute() {
            PathBuf::from(path)
        } else {
            repo_root().join(path)
        };
        assert!(p.exists(), "{what} missing ({}); {HOW_TO_FIX}", p.display());
    }
}

/// Fails unless redis-server is installed where the JS harness looks for it.
pub fn require_redis() {
    assert!(
        ["/usr/bin/redis-server", "/usr/local/bin/redis-server"]
            .iter()
            .any(|p| Path::new(p).exists()),
        "redis-server missing; {HOW_TO_FIX}"
    );
}

/// `node --test <dir>/<file>` with the hub binary under test; panics (with the whole
/// output) unless it passes within `limit`.
pub fn run_node_test(dir: &str, file: &str, limit: Duration) {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    require_node();
    let cwd = repo_root().join(dir);
    let out_dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let out_path = out_dir.path().join("node-test.log");
    let out = std::fs::File::create(&out_path).unwrap_or_else(|e| panic!("creating log: {e}"));
    let err = out
        .try_clone()
        .unwrap_or_else(|e| panic!("cloning log handle: {e}"));
    let mut child = Command::new("node")
        .args(["--test", "--test-reporter=spec", file])
        .current_dir(&cwd)
        .env("DASHCLAW_HUB_BIN", env!("CARGO_BIN_EXE_dashclaw-realtime"))
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .spawn()
        .unwrap_or_else(|e| panic!("spawning node in {}: {e}; {HOW_TO_FIX}", cwd.display()));
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() >= deadline => {
                // Kills node only; its own exit handler is what kills the hubs it spawned,
                // so give it SIGTERM first.
                // SAFETY: kill(2) on our own unreaped child's pid.
                unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
                std::thread::sleep(Duration::from_secs(2));
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => panic!("waiting for node: {e}"),
        }
    };
    let output = std::fs::read_to_string(&out_path).unwrap_or_default();
    println!("--- node --test {dir}/{file} ---\n{output}");
    match status {
        Some(s) if s.success() => {}
        Some(s) => panic!("node --test {dir}/{file} failed ({s}); output:\n{output}"),
        None => {
            panic!("node --test {dir}/{file} did not finish within {limit:?}; output:\n{output}")
        }
    }
}
