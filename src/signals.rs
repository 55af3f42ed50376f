//! Unix signals: SIGHUP reloads the key table, the TLS pair and the JWT keys; SIGTERM/SIGINT start the drain.

use tokio::signal::unix::{signal, SignalKind};

use crate::app::Running;

pub async fn run_until_terminated(running: &Running) -> std::io::Result<()> {
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    loop {
        tokio::select! {
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading key table, TLS certificate and JWT signing keys");
                running.reload();
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    tracing::info!("shutting down: readiness off, draining connections");
    running.shutdown();
    Ok(())
}
