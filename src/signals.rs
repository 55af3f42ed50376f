//! Unix signals: SIGHUP reloads the config file, the key table, the TLS pair and the JWT keys;
//! SIGTERM/SIGINT start the shutdown (readiness off, the shutdown delay, then the drain); a
//! second one skips what is left of the delay.

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

    pub async fn run_until_terminated(&mut self, running: &Running) {
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
        tracing::info!("shutting down: readiness off");
        running.shutdown();
    }

    /// Serves until a termination signal, then shuts down; yields the connections the drain
    /// deadline cut. SIGHUP keeps reloading meanwhile; a second SIGTERM/SIGINT drains at once.
    pub async fn run(mut self, running: Running) -> usize {
        self.run_until_terminated(&running).await;
        let stop = running.stop_handle();
        let stopped = running.stopped();
        let mut stopped = std::pin::pin!(stopped);
        loop {
            tokio::select! {
                cut = &mut stopped => return cut,
                _ = self.term.recv() => stop.drain_now(),
                _ = self.int.recv() => stop.drain_now(),
                _ = self.hup.recv() => tracing::info!("SIGHUP during the shutdown: not reloading"),
            }
        }
    }
}

/// `keygate serve`'s life: serve, shut down on SIGTERM/SIGINT, drain; the connections cut.
pub async fn run(running: Running) -> std::io::Result<usize> {
    Ok(Signals::install()?.run(running).await)
}
