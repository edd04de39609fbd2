//! Stopping long commands with SIGINT, SIGTERM or SIGHUP: the command
//! cancels its work and cleans up instead of dying with mounts and
//! processes left behind.

use tokio::signal::unix::{Signal, SignalKind, signal};

/// The stop signals of one command, installed for its whole run.
pub struct Stop {
    int: Option<Signal>,
    term: Option<Signal>,
    hup: Option<Signal>,
}

impl Stop {
    /// Installs handlers for SIGINT, SIGTERM and SIGHUP. A handler
    /// replaces an inherited "ignored" disposition (a background job of a
    /// script starts with SIGINT ignored), so kiln can always be stopped.
    pub fn install() -> Stop {
        Stop {
            int: signal(SignalKind::interrupt()).ok(),
            term: signal(SignalKind::terminate()).ok(),
            hup: signal(SignalKind::hangup()).ok(),
        }
    }

    /// Waits for the next stop signal and returns its number.
    pub async fn next(&mut self) -> i32 {
        async fn recv(s: &mut Option<Signal>) {
            match s {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            () = recv(&mut self.int) => 2,
            () = recv(&mut self.term) => 15,
            () = recv(&mut self.hup) => 1,
        }
    }
}

/// The signal [`exit_on_stop`] is stopping the command for (0: none).
static STOPPING: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

/// Whether [`exit_on_stop`]'s handler is stopping the command: a failure
/// of the command now is the handler removing its files under it, and the
/// handler exits with the signal's status in a moment.
pub fn stopping() -> bool {
    STOPPING.load(std::sync::atomic::Ordering::SeqCst) != 0
}

/// Files the stop handler removes before exiting (a partial `save -o`).
fn cleanup_paths() -> &'static std::sync::Mutex<Vec<std::path::PathBuf>> {
    static PATHS: std::sync::OnceLock<std::sync::Mutex<Vec<std::path::PathBuf>>> =
        std::sync::OnceLock::new();
    PATHS.get_or_init(Default::default)
}

/// Removes `path` if the command is stopped by a signal before
/// [`forget_on_stop`] is called for it.
pub fn remove_on_stop(path: &std::path::Path) {
    if let Ok(mut paths) = cleanup_paths().lock() {
        paths.push(path.to_owned());
    }
}

/// The command finished with `path`: it is no longer removed on a stop.
pub fn forget_on_stop(path: &std::path::Path) {
    if let Ok(mut paths) = cleanup_paths().lock() {
        paths.retain(|p| p != path);
    }
}

/// For commands whose work is all in the store and in files (pull, push,
/// load, save, import, commit): on SIGINT, SIGTERM or SIGHUP, removes the
/// command's temporary files (its store lease, a partial output file) and
/// exits with 128 + the signal's number. Store writes are atomic, so
/// stopping between them loses nothing. A second signal during the
/// cleanup exits at once.
pub fn exit_on_stop() {
    let started = std::thread::Builder::new()
        .name("stop-signals".to_owned())
        .spawn(|| {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                let mut stop = Stop::install();
                let signo = stop.next().await;
                STOPPING.store(signo, std::sync::atomic::Ordering::SeqCst);
                tracing::debug!(signal = signo, "stopping");
                // A second signal while cleaning up forces the exit.
                tokio::spawn(async move {
                    stop.next().await;
                    std::process::exit(128 + signo);
                });
                tokio::task::spawn_blocking(move || {
                    if let Ok(paths) = cleanup_paths().lock() {
                        for p in paths.iter() {
                            let _ = std::fs::remove_file(p);
                        }
                    }
                    kiln_store::release_leases();
                })
                .await
                .ok();
                std::process::exit(128 + signo);
            });
        });
    if let Err(e) = started {
        tracing::warn!(error = %e, "cannot watch for stop signals");
    }
}
