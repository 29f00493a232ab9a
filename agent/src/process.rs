//! The one place the daemon meets its process: signal handlers and the environment
//! systemd sets (`WATCHDOG_USEC`, `CREDENTIALS_DIRECTORY`, and with the `test-hooks`
//! feature `CONTERA_AGENT_TEST_HOOKS`). Everything else is handed these as values.

use std::path::PathBuf;

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::daemon::{Launch, SystemClock};

/// Installs the signal handlers and reads the environment: SIGTERM and SIGINT cancel the
/// shutdown token, each SIGHUP sends a reload. Must run inside the runtime.
pub fn launch(config_path: PathBuf) -> std::io::Result<Launch> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        stop.cancel();
    });
    let (reload_tx, reload) = mpsc::channel(1);
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            // One pending reload is enough: a second SIGHUP before it ran is the same.
            let _ = reload_tx.try_send(());
        }
    });
    Ok(Launch {
        config_path,
        clock: Box::new(SystemClock),
        shutdown,
        reload,
        watchdog: sd_notify::watchdog_enabled(),
        credentials_dir: std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from),
        #[cfg(feature = "test-hooks")]
        test_hooks: std::env::var("CONTERA_AGENT_TEST_HOOKS").as_deref() == Ok("1"),
    })
}
