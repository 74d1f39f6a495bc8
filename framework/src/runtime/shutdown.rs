//! Shutdown: one token that every task watches, and the OS signals that trip it.

use tokio::signal::unix::{signal, Signal, SignalKind};

/// Cancelled once, when Ferry is asked to stop; every long-running task
/// selects on it and drains.
pub type Shutdown = tokio_util::sync::CancellationToken;

/// SIGINT and SIGTERM listeners. Install them first thing, so a signal that
/// arrives during startup is seen rather than killing the process mid-write.
pub struct Signals {
    interrupt: Signal,
    terminate: Signal,
}

impl Signals {
    pub fn install() -> std::io::Result<Self> {
        Ok(Self {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    /// Resolves with the signal's name on the next SIGINT or SIGTERM.
    pub async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "SIGINT",
            _ = self.terminate.recv() => "SIGTERM",
        }
    }
}
