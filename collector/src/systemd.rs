//! The collector's service-manager plumbing, in one place: the stop signals
//! (SIGTERM from systemd, SIGINT from a terminal) and the `Type=notify`
//! messages (READY, WATCHDOG, STOPPING).

/// `Type=notify`: tell systemd the listener is bound (so READY is true when
/// it arrives), and feed its watchdog from the async runtime for as long as
/// that runs. Outside systemd (no `NOTIFY_SOCKET`, no `WATCHDOG_USEC`) both
/// are no-ops. Must be called inside the runtime.
pub fn ready() {
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    if let Some(period) = sd_notify::watchdog_enabled() {
        tokio::spawn(async move {
            // Twice per period, as sd_watchdog_enabled(3) recommends.
            let mut tick = tokio::time::interval(period / 2);
            loop {
                tick.tick().await;
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
            }
        });
    }
}

/// Resolves at the first SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        // Without signal handlers we can only be stopped by SIGKILL; keep serving.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
}

/// STOPPING=1: the stop is under way (systemd then waits for the exit).
pub fn stopping() {
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
}
