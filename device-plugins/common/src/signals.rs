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

/// The end of a plugin's `main`: run `serve` (which should end at [`terminated`]) on a
/// current-thread runtime. Exit 0 when it stops cleanly; 1 when it fails (logged) or the
/// runtime cannot start (`name` prefixes that message).
pub fn serve_main<E: std::fmt::Display>(
    name: &str,
    serve: impl std::future::Future<Output = Result<(), E>>,
) -> std::process::ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{name}: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(serve) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "stopping");
            std::process::ExitCode::FAILURE
        }
    }
}
