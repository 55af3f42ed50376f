//! Unix signals: SIGHUP reloads the config file, the key table, the TLS pair and the JWT keys;
//! SIGTERM/SIGINT start the drain.

use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::app::Running;

/// The signals keygate handles, installed: from here on SIGTERM/SIGINT no longer kill the
/// process outright (install before telling anyone how to stop it).
pub struct Signals {
    hup: Signal,
    term: Signal,
    int: Signal,
}

impl Signals {
    pub fn install() -> std::io::Result<Signals> {
        Ok(Signals {
            hup: signal(SignalKind::hangup())?,
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    pub async fn run_until_terminated(mut self, running: &Running) {
        loop {
            tokio::select! {
                _ = self.hup.recv() => {
                    tracing::info!("SIGHUP: reloading config, key table, TLS certificate and JWT signing keys");
                    running.reload();
                }
                _ = self.term.recv() => break,
                _ = self.int.recv() => break,
            }
        }
        tracing::info!("shutting down: readiness off, draining connections");
        running.shutdown();
    }
}

pub async fn run_until_terminated(running: &Running) -> std::io::Result<()> {
    Signals::install()?.run_until_terminated(running).await;
    Ok(())
}
