//! Runs the hub inside this process, subscribes to an org over HTTP, and publishes
//! three events from Rust through `HubHandle::publish_one`.
//!
//! ```text
//! cargo run --example in_process
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use dashclaw_realtime::auth::Auth;
use dashclaw_realtime::config::Config;
use dashclaw_realtime::envelope::{OrgId, PublishRequest, Topic};
use dashclaw_realtime::server;
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

const ORG: &str = "org_example";

/// A minimal SSE subscriber: frames are the blocks between blank lines. Reports
/// `realtime.connected` on `ready`, sends every event frame to `frames`, and stops
/// after `count` of them.
async fn subscribe(
    addr: SocketAddr,
    count: usize,
    ready: oneshot::Sender<()>,
    frames: mpsc::UnboundedSender<String>,
) -> reqwest::Result<()> {
    let url = format!("http://{addr}/v1/orgs/{ORG}/stream");
    let mut response = reqwest::Client::new()
        .get(url)
        .header("Accept", "text/event-stream")
        .send()
        .await?
        .error_for_status()?;
    let mut ready = Some(ready);
    let mut buffer = String::new();
    let mut received = 0;
    while let Some(chunk) = response.chunk().await? {
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let frame: String = buffer.drain(..end + 2).collect();
            let frame = frame.trim_end().to_string();
            if frame.starts_with("event: realtime.connected") {
                println!("subscriber: {frame}\n");
                if let Some(ready) = ready.take() {
                    let _ = ready.send(());
                }
            } else if frame.starts_with("id: ") {
                let _ = frames.send(frame);
                received += 1;
                if received == count {
                    return Ok(());
                }
            }
        }
    }
    Ok(())
}

fn main() {
    actix_web::rt::System::new().block_on(async {
        let config = Config {
            bind: "127.0.0.1:0".parse().expect("loopback address"),
            shutdown_grace: Duration::from_secs(2),
            ..Default::default()
        };
        let running = server::start(config, Auth::off()).expect("start the hub");
        let (addr, hub, handle) = (running.addr, running.hub.clone(), running.server_handle());
        println!("hub listening on http://{addr}");
        // `run` drives the HTTP server until it is stopped.
        let serving = actix_web::rt::spawn(running.run());

        let (ready_tx, ready_rx) = oneshot::channel();
        let (frames_tx, mut frames_rx) = mpsc::unbounded_channel();
        let subscriber = actix_web::rt::spawn(subscribe(addr, 3, ready_tx, frames_tx));
        tokio::time::timeout(Duration::from_secs(5), ready_rx)
            .await
            .expect("subscriber connected within 5 s")
            .expect("subscriber task alive");

        let topic = Topic::Org(OrgId::parse(ORG).expect("valid org id"));
        for (n, event) in ["action.created", "action.updated", "goal.completed"]
            .into_iter()
            .enumerate()
        {
            let outcome = hub
                .publish_one(
                    topic.clone(),
                    PublishRequest::new(event, json!({"n": n + 1})),
                )
                .await
                .expect("publish");
            let stored = outcome.event();
            let cursor = stored.cursor().map(|c| c.to_string()).unwrap_or_default();
            println!(
                "published {event} {} at cursor {cursor}",
                stored.envelope().id
            );
        }

        println!();
        for _ in 0..3 {
            let frame = tokio::time::timeout(Duration::from_secs(5), frames_rx.recv())
                .await
                .expect("frame within 5 s")
                .expect("subscriber still running");
            println!("subscriber received:\n{frame}\n");
        }
        subscriber
            .await
            .expect("subscriber task")
            .expect("subscriber I/O");

        server::begin_shutdown(&hub, &handle).await;
        tokio::time::timeout(Duration::from_secs(5), serving)
            .await
            .expect("server stopped within 5 s")
            .expect("server task")
            .expect("server I/O");
        println!("hub stopped");
    });
}
