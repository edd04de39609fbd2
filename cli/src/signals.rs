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
