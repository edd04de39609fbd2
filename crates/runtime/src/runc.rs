//! Running containers with the `runc` binary, or with any program that
//! speaks its command line (the embedded runtime's helper does).
//!
//! `runc run --bundle DIR ID` runs the container in the foreground: without
//! a terminal, the container process inherits runc's standard output and
//! error, which are pipes read here chunk by chunk as the process writes
//! (build logs stream). runc's own diagnostics go to a JSON log file in the
//! bundle (`--log`), which is how a failure to start (`exec: "foo":
//! executable file not found in $PATH`) is told apart from the process
//! exiting non-zero.
//!
//! The container is always deleted afterwards (`runc delete --force`),
//! also when the run is cancelled (`runc kill` first) or its future is
//! dropped.
// pre_exec hooks (dispositions, parent-death signal) of the OCI runtime's
// process.
#![allow(unsafe_code)]

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::process::Command;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};

/// Which output stream a chunk came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// A piece of the container's output, as read from its pipe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputChunk {
    pub stream: Stream,
    pub data: Vec<u8>,
}

/// Where output chunks go. Bounded: a slow reader slows the container down
/// rather than buffering without limit.
pub type OutputSender = mpsc::Sender<OutputChunk>;

/// How long output may keep arriving after runc exited (a leftover reader
/// of the pipes) before it is abandoned.
const OUTPUT_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Prefixes runc puts before the reason a container process failed to
/// start; the reason alone is what Docker shows.
const START_ERROR_PREFIXES: [&str; 3] = [
    "runc run failed: ",
    "unable to start container process: ",
    "error during container init: ",
];

/// A runc-compatible command line: the `runc` binary (or any OCI runtime
/// with runc's CLI), or the embedded runtime's helper (see
/// [`crate::embedded`]), which speaks the same commands.
#[derive(Clone, Debug)]
pub struct Runc {
    binary: PathBuf,
    /// Arguments before runc's own (`__oci` for the embedded helper).
    args: Vec<OsString>,
    root: PathBuf,
}

impl Runc {
    /// `binary` is a path or a name looked up in `PATH`; `root` is runc's
    /// state directory (`--root`).
    pub fn new(binary: impl Into<PathBuf>, root: impl Into<PathBuf>) -> Runc {
        Runc {
            binary: binary.into(),
            args: Vec::new(),
            root: root.into(),
        }
    }

    /// A runc-compatible helper run as `program ARGS… --root ROOT …`.
    pub fn with_args(
        program: impl Into<PathBuf>,
        args: Vec<OsString>,
        root: impl Into<PathBuf>,
    ) -> Runc {
        Runc {
            binary: program.into(),
            args,
            root: root.into(),
        }
    }

    pub fn binary(&self) -> &Path {
        &self.binary
    }

    pub(crate) fn command(&self) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.args(&self.args).arg("--root").arg(&self.root);
        // SAFETY: reset_to_default is async-signal-safe.
        unsafe {
            cmd.pre_exec(reset_signals);
        }
        cmd
    }

    pub(crate) fn std_command(&self) -> std::process::Command {
        use std::os::unix::process::CommandExt;
        let mut cmd = std::process::Command::new(&self.binary);
        cmd.args(&self.args).arg("--root").arg(&self.root);
        // SAFETY: reset_to_default is async-signal-safe.
        unsafe {
            cmd.pre_exec(reset_signals);
        }
        cmd
    }

    /// Runs container `id` from `bundle` (holding `config.json`) to
    /// completion and returns its exit code (128 + signal if killed by a
    /// signal). Output chunks go to `output` (dropped when `None`).
    pub async fn run(
        &self,
        id: &str,
        bundle: &Path,
        output: Option<OutputSender>,
        cancel: &CancellationToken,
    ) -> Result<i32> {
        let log = bundle.join("runc.log");
        let mut cmd = self.command();
        cmd.arg("--log")
            .arg(&log)
            .arg("--log-format")
            .arg("json")
            .arg("run")
            .arg("--bundle")
            .arg(bundle)
            .arg(id)
            // A pipe closed at once, as BuildKit gives RUN steps: reads see
            // the end of input.
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        tracing::debug!(%id, bundle = %bundle.display(), runc = %self.binary.display(), "starting container");
        let mut child = cmd.spawn().map_err(|source| Error::Spawn {
            binary: self.binary.clone(),
            source,
        })?;
        drop(child.stdin.take());
        // From here on the container may exist: delete it however this
        // function ends (dropped futures included).
        let mut guard = DeleteGuard {
            runc: self,
            id,
            armed: true,
        };

        let mut pumps = Vec::new();
        if let Some(stdout) = child.stdout.take() {
            pumps.push(tokio::spawn(pump(stdout, Stream::Stdout, output.clone())));
        }
        if let Some(stderr) = child.stderr.take() {
            pumps.push(tokio::spawn(pump(stderr, Stream::Stderr, output)));
        }

        let outcome = tokio::select! {
            status = child.wait() => Ok(status),
            () = cancel.cancelled() => Err(()),
        };
        let status = match outcome {
            Ok(status) => status.map_err(|source| Error::Spawn {
                binary: self.binary.clone(),
                source,
            }),
            Err(()) => {
                tracing::info!(%id, "cancelling container");
                self.kill_until_exit(id, &mut child).await;
                drain(pumps).await;
                guard.armed = false;
                self.delete_force(id).await?;
                return Err(Error::Cancelled { id: id.to_owned() });
            }
        };
        drain(pumps).await;
        guard.armed = false;
        // A foreground `run` removes its container when it exits; only ask
        // for a delete when its state is still there (one process less per
        // RUN step).
        let deleted = if self.root.join(id).exists() {
            self.delete_force(id).await
        } else {
            Ok(())
        };
        let status = status?;
        let code = exit_code(status);

        if code != 0
            && let Some(message) = start_error(&log)
        {
            tracing::debug!(%id, %message, "container failed to start");
            deleted?;
            return Err(Error::Start {
                id: id.to_owned(),
                message,
            });
        }
        deleted?;
        tracing::debug!(%id, code, "container exited");
        Ok(code)
    }

    /// Sends SIGKILL through runc until the runc process exits (the
    /// container may not exist yet when cancellation arrives); kills runc
    /// itself as a last resort.
    async fn kill_until_exit(&self, id: &str, child: &mut tokio::process::Child) {
        for _ in 0..25 {
            if let Err(e) = self.kill(id, "KILL").await {
                tracing::trace!(%id, error = %e, "runc kill");
            }
            if let Ok(status) = tokio::time::timeout(Duration::from_millis(200), child.wait()).await
            {
                tracing::debug!(%id, ?status, "runc exited after kill");
                return;
            }
        }
        tracing::warn!(%id, "container did not stop; killing runc");
        let _ = child.start_kill();
        let _ = child.wait().await;
    }

    /// `runc kill ID SIGNAL`.
    pub async fn kill(&self, id: &str, signal: &str) -> Result<()> {
        let mut cmd = self.command();
        cmd.arg("kill").arg(id).arg(signal);
        self.management("kill", id, cmd).await
    }

    /// `runc pause ID`: freezes every process of the container.
    pub async fn pause(&self, id: &str) -> Result<()> {
        let mut cmd = self.command();
        cmd.arg("pause").arg(id);
        self.management("pause", id, cmd).await
    }

    /// `runc resume ID`.
    pub async fn resume(&self, id: &str) -> Result<()> {
        let mut cmd = self.command();
        cmd.arg("resume").arg(id);
        self.management("resume", id, cmd).await
    }

    /// `runc delete --force ID`; a container that does not exist is not an
    /// error.
    pub async fn delete_force(&self, id: &str) -> Result<()> {
        // No state directory: nothing to delete (one process less).
        if !self.root.join(id).exists() {
            return Ok(());
        }
        let mut cmd = self.command();
        cmd.arg("delete").arg("--force").arg(id);
        match self.management("delete", id, cmd).await {
            Err(Error::Runc { message, .. }) if message.contains("does not exist") => Ok(()),
            other => other,
        }
    }

    async fn management(&self, command: &'static str, id: &str, mut cmd: Command) -> Result<()> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let out = cmd.output().await.map_err(|source| Error::Spawn {
            binary: self.binary.clone(),
            source,
        })?;
        if out.status.success() {
            return Ok(());
        }
        Err(Error::Runc {
            command,
            id: id.to_owned(),
            message: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

/// Deletes the container synchronously if the run did not finish.
struct DeleteGuard<'a> {
    runc: &'a Runc,
    id: &'a str,
    armed: bool,
}

impl Drop for DeleteGuard<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        tracing::debug!(id = %self.id, "run abandoned; deleting container");
        let result = self
            .runc
            .std_command()
            .arg("delete")
            .arg("--force")
            .arg(self.id)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if let Err(e) = result {
            tracing::warn!(id = %self.id, error = %e, "failed to delete abandoned container");
        }
    }
}

async fn pump<R: tokio::io::AsyncRead + Unpin>(
    mut reader: R,
    stream: Stream,
    output: Option<OutputSender>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) => return,
            Ok(n) => {
                if let Some(tx) = &output {
                    let chunk = OutputChunk {
                        stream,
                        data: buf[..n].to_vec(),
                    };
                    // A closed receiver only means nobody listens any more;
                    // keep reading so the container never blocks on a full
                    // pipe.
                    let _ = tx.send(chunk).await;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                tracing::warn!(?stream, error = %e, "failed to read container output");
                return;
            }
        }
    }
}

async fn drain(pumps: Vec<tokio::task::JoinHandle<()>>) {
    for mut pump in pumps {
        if tokio::time::timeout(OUTPUT_DRAIN_TIMEOUT, &mut pump)
            .await
            .is_err()
        {
            tracing::warn!("container output still open after exit; abandoning it");
            pump.abort();
        }
    }
}

pub(crate) fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(sig)) => 128 + sig,
        (None, None) => 255,
    }
}

/// The last error runc logged, without its generic prefixes.
pub(crate) fn start_error(log: &Path) -> Option<String> {
    // A small file, read once after the run.
    let text = std::fs::read_to_string(log).ok()?;
    let message = text
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|v| v["level"] == "error" || v["level"] == "fatal")
        .filter_map(|v| v["msg"].as_str().map(str::to_owned))
        .next_back()?;
    // Only a failure of `runc run` itself; other errors runc may log
    // (cleanup trouble) do not mean the process never ran.
    is_run_failure(&message).then(|| strip_start_prefixes(&message).to_owned())
}

fn is_run_failure(message: &str) -> bool {
    message.starts_with("runc run failed")
        || message.contains("unable to start container process")
        || message.contains("starting container process")
}

fn strip_start_prefixes(mut message: &str) -> &str {
    loop {
        let before = message;
        for prefix in START_ERROR_PREFIXES {
            message = message.strip_prefix(prefix).unwrap_or(message);
        }
        if message == before {
            return message;
        }
    }
}

/// The runtime starts with default signal dispositions, so the container
/// process does too (runc passes ignored ones on).
fn reset_signals() -> std::io::Result<()> {
    crate::signals::reset_to_default();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_error_prefixes_are_stripped() {
        assert_eq!(
            strip_start_prefixes(
                "runc run failed: unable to start container process: exec: \"foo\": executable file not found in $PATH"
            ),
            "exec: \"foo\": executable file not found in $PATH"
        );
        assert_eq!(strip_start_prefixes("other"), "other");
    }

    #[test]
    fn only_run_failures_are_start_errors() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("runc.log");
        std::fs::write(
            &log,
            concat!(
                r#"{"level":"warning","msg":"something","time":"t"}"#,
                "\n",
                r#"{"level":"error","msg":"runc run failed: unable to start container process: exec: \"foo\": executable file not found in $PATH","time":"t"}"#,
                "\n"
            ),
        )
        .unwrap();
        assert_eq!(
            start_error(&log).as_deref(),
            Some("exec: \"foo\": executable file not found in $PATH")
        );
        std::fs::write(
            &log,
            r#"{"level":"error","msg":"failed to remove cgroup","time":"t"}"#,
        )
        .unwrap();
        assert_eq!(start_error(&log), None);
        assert_eq!(start_error(&dir.path().join("missing")), None);
    }

    #[tokio::test]
    async fn missing_runc_binary_is_a_spawn_error() {
        let dir = tempfile::tempdir().unwrap();
        let runc = Runc::new("/nonexistent/runc", dir.path());
        let err = runc
            .run("x", dir.path(), None, &CancellationToken::new())
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Spawn { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            "failed to execute the OCI runtime /nonexistent/runc"
        );
    }
}
