//! `--embed-hub`: the hub runs inside the load tool, so events are published through
//! `HubHandle::publish` (the in-process producer path) while clients still subscribe over
//! loopback TCP.

use std::net::SocketAddr;
use std::thread;

use clap::Parser;
use dashclaw_realtime::auth::Auth;
use dashclaw_realtime::config::Config;
use dashclaw_realtime::envelope::{OrgId, PublishRequest, Topic};
use dashclaw_realtime::hub::HubHandle;
use dashclaw_realtime::server;

/// The hub's settings, read from the same environment variables as `dashclaw-realtime`.
#[derive(Debug, Parser)]
struct EmbeddedSettings {
    #[command(flatten)]
    config: Config,
}

/// A hub running on its own actix system thread in this process.
pub struct EmbeddedHub {
    /// Where it listens (port 0 unless `REALTIME_BIND` is set).
    pub addr: SocketAddr,
    /// Its in-process API.
    pub hub: HubHandle,
}

impl EmbeddedHub {
    /// Starts the hub configured by `REALTIME_*` / `REDIS_URL` (auth off: only this tool talks
    /// to it, over loopback).
    pub fn start() -> Result<EmbeddedHub, String> {
        let parsed = EmbeddedSettings::try_parse_from(["embedded-hub"])
            .map_err(|e| format!("embedded hub settings: {e}"))?;
        let mut config = parsed
            .config
            .validate()
            .map_err(|e| format!("embedded hub settings: {e}"))?;
        if std::env::var_os("REALTIME_BIND").is_none() {
            config.bind = SocketAddr::from(([127, 0, 0, 1], 0));
        }
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        thread::Builder::new()
            .name("embedded-hub".into())
            .spawn(move || {
                actix_rt::System::new().block_on(async move {
                    match server::start(config, Auth::off()) {
                        Ok(running) => {
                            let _ = ready_tx.send(Ok((running.addr, running.hub.clone())));
                            // Serves until the process exits.
                            let _ = running.run().await;
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(format!("embedded hub: {e}")));
                        }
                    }
                })
            })
            .map_err(|e| format!("embedded hub thread: {e}"))?;
        let (addr, hub) = ready_rx
            .recv()
            .map_err(|_| "embedded hub thread ended before starting".to_string())??;
        Ok(EmbeddedHub { addr, hub })
    }
}

/// Publishes a rendered body (one event, or a JSON array of them) to `org` in process;
/// returns how many events the hub accepted.
pub async fn publish(hub: &HubHandle, org: &str, body: &str, batch: bool) -> Result<u64, String> {
    let org = OrgId::parse(org).map_err(|e| format!("org: {e}"))?;
    let requests: Vec<PublishRequest> = if batch {
        serde_json::from_str(body).map_err(|e| format!("body: {e}"))?
    } else {
        vec![serde_json::from_str(body).map_err(|e| format!("body: {e}"))?]
    };
    let outcomes = hub
        .publish(Topic::Org(org), requests)
        .await
        .map_err(|e| format!("publish: {e}"))?;
    Ok(outcomes.len() as u64)
}
