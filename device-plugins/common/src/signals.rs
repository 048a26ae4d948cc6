//! The end of a plugin's life: SIGTERM (systemd stop) or SIGINT (Ctrl-C).

use tokio::signal::unix::{signal, SignalKind};

/// Completes at the first SIGTERM or SIGINT. If the handlers cannot be installed it never
/// completes (the process then ends by the default action of those signals).
pub async fn terminated() {
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!(error = %e, "cannot handle SIGTERM/SIGINT");
            std::future::pending::<()>().await
        }
    }
}
