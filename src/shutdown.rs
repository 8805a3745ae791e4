//! SIGTERM / SIGINT: the first starts the paced drain, a second one ends the process at once.

use tokio::signal::unix::{Signal, SignalKind, signal};

/// The process's SIGTERM and SIGINT handlers, installed once and read signal by signal.
pub struct Signals {
    terminate: Option<Signal>,
    interrupt: Option<Signal>,
}

impl Signals {
    /// Installs the handlers (from now on neither signal kills the process by itself).
    pub fn install() -> Self {
        Self {
            terminate: signal(SignalKind::terminate()).ok(),
            interrupt: signal(SignalKind::interrupt()).ok(),
        }
    }

    /// The next SIGTERM or SIGINT, by name.
    pub async fn next(&mut self) -> &'static str {
        match (&mut self.terminate, &mut self.interrupt) {
            (Some(terminate), Some(interrupt)) => tokio::select! {
                _ = terminate.recv() => "SIGTERM",
                _ = interrupt.recv() => "SIGINT",
            },
            _ => {
                // Without signal handlers the hub can only be killed; wait forever.
                std::future::pending::<()>().await;
                "none"
            }
        }
    }
}

/// The exit status of a process ended by `signal` (128 + its number), as a shell reports it.
pub fn exit_code(signal: &str) -> i32 {
    match signal {
        "SIGINT" => 128 + libc::SIGINT,
        _ => 128 + libc::SIGTERM,
    }
}

/// Resolves on the first SIGTERM or SIGINT.
pub async fn wait_for_signal() -> &'static str {
    Signals::install().next().await
}
