//! How the process stops. SIGTERM (or Ctrl-C) starts a graceful stop: no new connections,
//! in-flight requests and the flusher's batch finish, workers end. SHUTDOWN_TIMEOUT bounds
//! all of it from the moment the signal arrives, whatever is in flight: the graceful path
//! aborts what is left at the deadline, the runtime is shut down with what remains of it
//! (dropping a runtime would wait for blocking work, a password hash, without limit), and
//! a watchdog thread outside the runtime ends the process at the deadline should the
//! runtime itself be wedged.

use std::time::{Duration, Instant};

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

/// Ends the process `timeout` after the first SIGTERM or SIGINT, from a thread of its own
/// that needs nothing from the async runtime.
pub fn spawn_watchdog(timeout: Duration) -> std::io::Result<()> {
    let mut signals = Signals::new([SIGTERM, SIGINT])?;
    std::thread::Builder::new()
        .name("shutdown-watchdog".into())
        .spawn(move || {
            if signals.forever().next().is_some() {
                std::thread::sleep(timeout);
                eprintln!("shutdown did not finish within SHUTDOWN_TIMEOUT ({timeout:?}); exiting");
                std::process::exit(1);
            }
        })?;
    Ok(())
}

/// What is left of `timeout` since `started`.
pub fn remaining(timeout: Duration, started: Option<Instant>) -> Duration {
    started.map_or(timeout, |at| timeout.saturating_sub(at.elapsed()))
}
