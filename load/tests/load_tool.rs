//! The load tool (`dashclaw-realtime-load`) against a real hub: its accounting must come out
//! exact on a small run (in one process and spread over child processes), and a resume storm
//! must catch every client up with nothing missing. No timing is asserted.

#[path = "../../tests/common/mod.rs"]
mod common;

use std::process::Command;

use serde_json::Value;

use common::{Resp, TestHub, TestRedis};

fn load_bin() -> &'static str {
    env!("CARGO_BIN_EXE_dashclaw-realtime-load")
}

/// Run the load tool with `args` (plus `--json` and a bounded max duration) and parse its report.
async fn run_load(args: &[&str]) -> Value {
    run_load_env(args, &[]).await
}

/// [`run_load`] with extra environment variables.
async fn run_load_env(args: &[&str], env: &[(&str, &str)]) -> Value {
    let mut cmd = Command::new(load_bin());
    cmd.args(args).args(["--json", "--max-duration", "120"]);
    cmd.envs(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("join")
        .expect("running the load tool");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "load tool {args:?} exited {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("report is not JSON ({e}):\n{stdout}\nstderr:\n{stderr}"))
}

fn u(v: &Value, path: &str) -> u64 {
    path.split('.')
        .fold(v, |v, k| match k.parse::<usize>() {
            Ok(i) => &v[i],
            Err(_) => &v[k],
        })
        .as_u64()
        .unwrap_or_else(|| panic!("{path} is not a number in {v:#}"))
}

fn assert_exact(report: &Value, clients: u64, expected: u64) {
    let ctx = format!("{report:#}");
    assert_eq!(report["ok"], Value::Bool(true), "{ctx}");
    assert_eq!(report["timed_out"], Value::Bool(false), "{ctx}");
    assert_eq!(u(report, "connect.connected"), clients, "{ctx}");
    assert_eq!(u(report, "connect.failed_clients"), 0, "{ctx}");
    assert_eq!(u(report, "delivery.expected"), expected, "{ctx}");
    assert_eq!(u(report, "delivery.delivered"), expected, "{ctx}");
    assert_eq!(u(report, "delivery.unique"), expected, "{ctx}");
    assert_eq!(u(report, "delivery.missing"), 0, "{ctx}");
    assert_eq!(u(report, "delivery.duplicates"), 0, "{ctx}");
    assert_eq!(u(report, "delivery.out_of_order"), 0, "{ctx}");
    assert_eq!(u(report, "delivery.worst.missing"), 0, "{ctx}");
    assert_eq!(u(report, "delivery.resyncs"), 0, "{ctx}");
}

#[tokio::test]
async fn fanout_counts_every_delivery_exactly() {
    let hub = TestHub::spawn(&[]).await;
    let url = hub.base_url();
    let pid = hub.pid().to_string();
    // 100 events/s for 2 s over 5 orgs: 40 events per org, 10 clients per org.
    let report = run_load(&[
        "fanout",
        "--url",
        &url,
        "--clients",
        "50",
        "--orgs",
        "5",
        "--rate",
        "100",
        "--duration",
        "2",
        "--server-pid",
        &pid,
        "--source-addrs",
        "2",
    ])
    .await;
    assert_exact(&report, 50, 50 * 40);
    assert_eq!(u(&report, "config.processes"), 1);
    assert_eq!(u(&report, "publish.0.events"), 200, "{report:#}");
    assert_eq!(u(&report, "latency_ms.count"), 2000, "{report:#}");
    assert_eq!(u(&report, "connect.time_ms.count"), 50, "{report:#}");
    assert!(u(&report, "server.rss_idle_bytes") > 0, "{report:#}");
    assert!(
        report["server"]["cpu_s_per_million_deliveries"].is_number(),
        "{report:#}"
    );
}

#[tokio::test]
async fn batched_fanout_over_child_processes_merges_totals() {
    let hub = TestHub::spawn(&[]).await;
    let url = hub.base_url();
    // 50 clients at 20 per process: 3 worker processes (17 + 17 + 16 clients).
    // 100 events in batches of 5 over 5 orgs: 20 events per org.
    let report = run_load(&[
        "fanout",
        "--url",
        &url,
        "--clients",
        "50",
        "--orgs",
        "5",
        "--rate",
        "100",
        "--duration",
        "1",
        "--batch",
        "5",
        "--per-process",
        "20",
        "--source-addrs",
        "3",
    ])
    .await;
    assert_eq!(u(&report, "config.processes"), 3, "{report:#}");
    assert_exact(&report, 50, 50 * 20);
    assert_eq!(u(&report, "publish.0.requests"), 20, "{report:#}");
    assert_eq!(u(&report, "connect.attempts"), 50, "{report:#}");
    assert_eq!(u(&report, "connect.time_ms.count"), 50, "{report:#}");
}

#[tokio::test]
async fn resume_storm_catches_every_client_up() {
    let hub = TestHub::spawn(&[]).await;
    let url = hub.base_url();
    // 40 events over 4 orgs before the drop (10 per org), then 25 per org while disconnected.
    let report = run_load(&[
        "resume-storm",
        "--url",
        &url,
        "--clients",
        "20",
        "--orgs",
        "4",
        "--rate",
        "200",
        "--events",
        "40",
        "--behind",
        "25",
    ])
    .await;
    assert_exact(&report, 20, 20 * (10 + 25));
    let ctx = format!("{report:#}");
    assert_eq!(
        report["resume"]["all_caught_up"],
        Value::Bool(true),
        "{ctx}"
    );
    assert_eq!(u(&report, "resume.clients_caught_up"), 20, "{ctx}");
    assert_eq!(u(&report, "resume.catchup_ms.count"), 20, "{ctx}");
    // Every client connected twice: once at the start and once in the storm.
    assert_eq!(u(&report, "connect.attempts"), 40, "{ctx}");
    assert_eq!(u(&report, "publish.1.events"), 100, "{ctx}");
}

/// `--embed-hub` on the Redis backend: the hub runs inside the load tool and events go in
/// through `HubHandle::publish` (batches of 5), clients still over TCP; every delivery exact.
#[tokio::test]
async fn embedded_hub_publishes_in_process_into_redis() {
    let redis = TestRedis::spawn().await;
    let redis_url = redis.url();
    // 100 events over 4 orgs (25 per org, as 5 batches of 5), 5 clients per org.
    let report = run_load_env(
        &[
            "fanout",
            "--embed-hub",
            "--clients",
            "20",
            "--orgs",
            "4",
            "--rate",
            "100",
            "--duration",
            "1",
            "--batch",
            "5",
        ],
        &[
            ("REALTIME_BACKEND", "redis"),
            ("REDIS_URL", &redis_url),
            ("RUST_LOG", "warn"),
        ],
    )
    .await;
    assert_exact(&report, 20, 20 * 25);
    assert_eq!(u(&report, "publish.0.events"), 100, "{report:#}");
    assert_eq!(u(&report, "publish.0.requests"), 20, "{report:#}");
    // The measured server is the load tool's own process.
    assert!(u(&report, "server.pids.0") > 0, "{report:#}");
    let url = report["config"]["urls"][0].as_str().unwrap_or_default();
    assert!(url.starts_with("http://127.0.0.1:"), "{report:#}");
    // The events really went through Redis: 4 org streams hold 25 entries each.
    let Resp::Array(Some(keys)) = redis.cmd(&["KEYS", "*:stream"]).await else {
        panic!("KEYS did not answer an array");
    };
    let mut total = 0;
    for key in keys {
        let key = key.text().expect("key name");
        match redis.cmd(&["XLEN", &key]).await {
            Resp::Int(n) => total += n,
            other => panic!("XLEN {key} answered {other:?}"),
        }
    }
    assert_eq!(total, 100, "{report:#}");
}

#[tokio::test]
async fn refuses_non_loopback_targets() {
    let out = Command::new(load_bin())
        .args(["fanout", "--url", "http://192.0.2.1:8080", "--clients", "1"])
        .output()
        .expect("running the load tool");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("non-loopback"));
}

/// bench/rolling-restart.sh at a tiny size, with the binaries under test: two hub instances on
/// one port and a redis-server of the script's own, 60 clients following their streams, both
/// instances restarted in turn while publishing goes on. Every client loses its stream at least
/// once (each sits on one of the two instances, and both are restarted), comes back, and ends
/// with every event exactly once. No timing is asserted.
#[tokio::test]
async fn rolling_restart_follows_every_client_exactly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("report.json");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../bench/rolling-restart.sh");
    let mut cmd = Command::new("bash");
    cmd.arg(script)
        .env("HUB_BIN", common::hub::bin_path())
        .env("LOAD", load_bin())
        .env("INSTALL_DEPS", "0")
        .env("OUT", &out);
    for (k, v) in [
        ("INSTANCES", "2"),
        ("CLIENTS", "60"),
        ("ORGS", "4"),
        ("RATE", "40"),
        ("BEFORE", "2"),
        ("AFTER", "2"),
        ("DRAIN_DELAY", "1"),
        ("GRACE", "2"),
        ("CONNECT_RATE", "200"),
        ("SOURCE_ADDRS", "1"),
        ("STATS_WATCHERS", "8"),
        ("STEP_PAUSE", "1"),
    ] {
        cmd.env(k, v);
    }
    let run = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("join")
        .expect("running bench/rolling-restart.sh");
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    let ctx = format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}\nreport:\n{text}",
        run.status,
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(run.status.success(), "{ctx}");
    let report: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {ctx}"));
    assert_eq!(report["scenario"], "rolling-restart", "{ctx}");
    let steps = report["rolling"]["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), 2, "{ctx}");
    assert!(steps.iter().all(|s| s["ok"] == true), "{ctx}");
    let expected = u(&report, "delivery.expected");
    assert!(expected > 0, "{ctx}");
    assert_exact(&report, 60, expected);
    let disconnects = u(&report, "connect.disconnects");
    assert!(disconnects >= 60, "every client lost its stream: {ctx}");
    assert_eq!(
        u(&report, "rolling.reconnect_ms.count"),
        disconnects,
        "every lost stream came back: {ctx}"
    );
    // Clients came back on the surviving instance at step 1 and on the restarted first instance
    // at step 2 (each named by X-Realtime-Instance).
    let instances = report["rolling"]["client_opens_peak"]
        .as_array()
        .expect("client_opens_peak");
    assert!(instances.len() >= 2, "{ctx}");
    assert!(
        instances
            .iter()
            .all(|p| p["instance"].as_str().is_some_and(|i| i.len() == 26)),
        "{ctx}"
    );
    // The hubs' own counters saw the reconnections too.
    assert!(
        report["rolling"]["hub_opened_peak_per_s"]
            .as_f64()
            .is_some_and(|r| r > 0.0),
        "{ctx}"
    );
}
