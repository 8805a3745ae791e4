//! Binding, the HTTP server, and the orderly shutdown: the paced drain on a signal.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};
use socket2::{Domain, Protocol, Socket, Type};
use tracing::{info, warn};

use crate::auth::Auth;
use crate::broker::memory::{DEFAULT_MAX_EVENTS_PER_TOPIC, MemoryLimits};
use crate::broker::{Broker, MemoryBroker, RedisBroker};
use crate::config::{BackendKind, Config};
use crate::http::{self, AppState};
use crate::hub::HubHandle;
use crate::metrics::Metrics;
use crate::shutdown::{Signals, exit_code};

/// After the grace time, how long the last closed streams (and replays still being written
/// to slow clients) have to finish before the server drops them.
pub const FLUSH_TIME: Duration = Duration::from_secs(5);

/// Errors that stop the hub from starting.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The listen socket could not be set up.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Requested address.
        addr: SocketAddr,
        /// Cause.
        source: io::Error,
    },
    /// The configured backend is not available in this build.
    #[error("{0}")]
    Backend(String),
}

/// A hub serving HTTP: its address, the in-process handle and the server future.
pub struct RunningServer {
    /// The bound address (useful with port 0).
    pub addr: SocketAddr,
    /// The in-process API of the hub.
    pub hub: HubHandle,
    server: actix_web::rt::task::JoinHandle<io::Result<()>>,
    handle: ServerHandle,
}

impl RunningServer {
    /// Handle to stop the HTTP server.
    pub fn server_handle(&self) -> ServerHandle {
        self.handle.clone()
    }

    /// Ends every stream, stops accepting, and waits for the server to finish.
    pub async fn shutdown(self) -> io::Result<()> {
        begin_shutdown(&self.hub, &self.handle).await;
        self.server.await.map_err(io::Error::other)?
    }

    /// Runs until the server stops (after [`begin_shutdown`] or a signal).
    pub async fn run(self) -> io::Result<()> {
        self.server.await.map_err(io::Error::other)?
    }
}

fn listener(config: &Config) -> Result<TcpListener, StartError> {
    let addr = config.bind;
    let bind_err = |source| StartError::Bind { addr, source };
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
        .map_err(bind_err)?;
    socket.set_reuse_address(true).map_err(bind_err)?;
    if config.reuse_port {
        socket.set_reuse_port(true).map_err(bind_err)?;
    }
    // Accepted sockets inherit this: a peer that accepts no data (zero window) for this long
    // is dropped by the kernel. Without it a client that never reads keeps its connection
    // after its session was closed as slow, because nothing writes to it any more.
    socket
        .set_tcp_user_timeout(Some(config.send_timeout))
        .map_err(bind_err)?;
    socket.bind(&addr.into()).map_err(bind_err)?;
    socket.listen(4096).map_err(bind_err)?;
    socket.set_nonblocking(true).map_err(bind_err)?;
    Ok(socket.into())
}

fn broker_for(config: &Config, metrics: &Metrics) -> Result<Arc<dyn Broker>, StartError> {
    match config.backend {
        BackendKind::Memory => Ok(MemoryBroker::start(MemoryLimits {
            window_ms: config.window_ms(),
            max_events_per_topic: DEFAULT_MAX_EVENTS_PER_TOPIC,
            max_bytes_per_topic: config.memory_max_bytes_per_org,
            max_bytes: config.memory_max_bytes,
        })),
        BackendKind::Redis => RedisBroker::start(config, metrics.clone())
            .map(|broker| Arc::new(broker) as Arc<dyn Broker>)
            .map_err(|e| StartError::Backend(e.to_string())),
    }
}

/// Starts the hub and its HTTP server on the current actix system; does not install signals.
pub fn start(config: Config, auth: Auth) -> Result<RunningServer, StartError> {
    let listener = listener(&config)?;
    let addr = listener.local_addr().map_err(|source| StartError::Bind {
        addr: config.bind,
        source,
    })?;
    // Per hub, not the process-global registry: several hubs may share a process.
    let metrics = Metrics::new();
    let broker = broker_for(&config, &metrics)?;
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let per_worker = config.max_connections.saturating_add(64);
    let grace = config.shutdown_grace;
    let request_timeout = config.request_timeout;
    let hub = HubHandle::start(config, broker, metrics.clone());
    let auth = Arc::new(auth);
    auth.spawn_background();
    let state = web::Data::new(AppState {
        hub: hub.clone(),
        auth,
        metrics,
    });
    let worker_hub = hub.clone();
    let cors_origins = hub.config().cors_origins.clone();
    let server = HttpServer::new(move || {
        // Runs once on each worker thread.
        worker_hub.register_worker_arbiter();
        App::new()
            .app_data(state.clone())
            .wrap(http::cors(&cors_origins))
            .wrap(from_fn(http::security::middleware))
            .wrap(from_fn(http::access_log::request_middleware))
            .configure(http::configure)
            .default_service(web::to(http::not_found))
    })
    .workers(workers)
    .backlog(4096)
    .max_connections(per_worker)
    .client_request_timeout(request_timeout)
    .disable_signals()
    .shutdown_timeout((grace + FLUSH_TIME).as_secs())
    .listen(listener)
    .map_err(|source| StartError::Bind { addr, source })?
    .run();
    let handle = server.handle();
    // Spawned so the server accepts as soon as `start` returns, whether or not anyone
    // awaits `run` (in-process embedders may only keep the handle).
    let server = actix_web::rt::spawn(server);
    info!(%addr, backend = hub.backend().as_str(), "dashclaw-realtime listening");
    Ok(RunningServer {
        addr,
        hub,
        server,
        handle,
    })
}

/// Refuses new streams, stops accepting connections, and ends every open stream at once
/// so clients reconnect elsewhere with `Last-Event-ID` (for embedders stopping the hub
/// themselves; a signal runs the paced [`drain_and_stop`]).
pub async fn begin_shutdown(hub: &HubHandle, handle: &ServerHandle) {
    let stop = handle.stop(true);
    actix_web::rt::spawn(stop);
    hub.shutdown().await;
}

/// The paced drain (`/readyz` 503 at once, streams still served for the drain delay, then
/// no longer accepting and the open streams closed evenly over the grace time), then the
/// server stops once the last streams are flushed.
pub async fn drain_and_stop(hub: &HubHandle, handle: &ServerHandle) {
    let handle = handle.clone();
    hub.drain(move || {
        actix_web::rt::spawn(handle.stop(true));
    })
    .await;
}

/// Runs the hub until SIGTERM or SIGINT, then drains (see [`drain_and_stop`]) and exits;
/// a second signal ends the process at once.
pub async fn serve(config: Config, auth: Auth) -> Result<(), StartError> {
    let running = start(config, auth)?;
    let hub = running.hub.clone();
    let handle = running.server_handle();
    let mut signals = Signals::install();
    actix_web::rt::spawn(async move {
        let signal = signals.next().await;
        info!(signal, open = hub.open_connections(), "shutting down");
        actix_web::rt::spawn(async move { drain_and_stop(&hub, &handle).await });
        let again = signals.next().await;
        warn!(signal = again, "second signal: stopping at once");
        std::process::exit(exit_code(again));
    });
    if let Err(error) = running.run().await {
        warn!(%error, "server ended with an error");
    }
    info!("stopped");
    Ok(())
}
