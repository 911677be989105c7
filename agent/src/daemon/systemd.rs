//! The daemon's service-manager plumbing, in one place: the stop signals
//! (SIGTERM from systemd, SIGINT from a terminal), and the `Type=notify`
//! messages (READY, WATCHDOG, STOPPING, STATUS). Outside systemd (no
//! `NOTIFY_SOCKET`, no `WATCHDOG_USEC`) every notification is a no-op.

use tokio::sync::watch;

/// Resolves at the first SIGTERM or SIGINT. Without signal handlers the
/// default actions apply (the process dies), so it then never resolves.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
                _ = int.recv() => tracing::info!("SIGINT: shutting down"),
            }
        }
        _ => {
            tracing::warn!("cannot install signal handlers; relying on the default actions");
            std::future::pending::<()>().await;
        }
    }
}

/// READY=1, then WATCHDOG=1 twice per watchdog period (as
/// sd_watchdog_enabled(3) recommends) until `stop` turns true. Must be
/// called inside the runtime.
pub fn ready(mut stop: watch::Receiver<bool>) {
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    if let Some(period) = sd_notify::watchdog_enabled() {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period / 2);
            loop {
                tokio::select! {
                    _ = tick.tick() => { let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]); }
                    _ = stop.changed() => return,
                }
            }
        });
    }
}

/// STOPPING=1: the stop is under way (systemd then waits for the exit).
pub fn stopping() {
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
}

/// STATUS=…: the one-line status `systemctl status` shows.
pub fn status(text: &str) {
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Status(text)]);
}
