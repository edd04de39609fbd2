//! The supervisor of one container run: mounts the root filesystem
//! (keeping the upper directory of earlier runs), writes the bundle, runs
//! `runc run` (or the embedded runtime's helper, which takes the same
//! arguments) in the foreground with `--pid-file`, writes the output to
//! the log (and to an attached client), serves published ports, and
//! records the start, the exit code and any start error in the record.
//!
//! `kiln run -d` and `kiln start` run it in a detached process (`kiln
//! __shim`) that outlives the command; a foreground `kiln run` runs it
//! in-process.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use chrono::Utc;
use tokio::io::AsyncReadExt;

use super::logs::{LineSplitter, LogWriter};
use super::proxy;
use super::state::{Containers, MountKind, Status, process_start_time};
use crate::container::{BundleParams, ExecRequest, write_bundle};
use crate::error::{Error, Result};
use crate::network::PrivateNetwork;
use crate::rootfs::OverlayRootfs;
use crate::runc::{OutputChunk, OutputSender, Stream, exit_code, start_error};
use crate::spec::{BindMount, Network};

/// How the supervisor connects the container to its caller.
#[derive(Debug, Default)]
pub struct Attach {
    /// Keep the container's standard input open (`-i`): the caller's, or
    /// when `detached` a pipe nobody writes to (Docker's `run -di`).
    pub stdin: bool,
    /// The container has a terminal (`-t`): the runtime makes a pty and
    /// copies between it and its own standard streams, which are the
    /// caller's terminal (nothing goes to the log) or, when `detached`, a
    /// pseudo-terminal whose output the supervisor logs.
    pub tty: bool,
    /// No caller is attached (`run -d`, `start`): nothing is inherited.
    pub detached: bool,
    /// Also send the output here (foreground runs).
    pub output: Option<OutputSender>,
    /// Put runc in its own process group, so that a terminal's Ctrl-C
    /// reaches only the caller (who forwards it).
    pub own_process_group: bool,
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The process's exit code; for a start failure Docker's 127 (command
    /// not found), 126 (cannot invoke) or 125.
    pub exit_code: i32,
    /// Why the process could not be started.
    pub start_error: Option<String>,
}

/// Docker's exit code for a start failure's message.
pub fn start_error_code(message: &str) -> i32 {
    if message.contains("executable file not found")
        || message.contains("no such file or directory")
    {
        127
    } else if message.contains("permission denied") {
        126
    } else {
        125
    }
}

/// Runs container `id` to completion (see the module docs).
pub async fn supervise(containers: &Containers, id: &str, attach: Attach) -> Result<Outcome> {
    let me = std::process::id();
    let record = containers.update(id, |r| {
        r.state.shim_pid = Some(me);
        r.state.shim_start = process_start_time(me);
        r.state.error = None;
        r.state.exit_code = None;
        r.state.pid = None;
    })?;
    let result = run(containers, &record, attach).await;
    let finished = Utc::now();
    let outcome = match &result {
        Ok(o) => o.clone(),
        Err(e) => Outcome {
            exit_code: 125,
            start_error: Some(error_chain(e)),
        },
    };
    let record = containers.update(id, |r| {
        r.state.status = if outcome.start_error.is_some() && r.state.started_at.is_none() {
            Status::Created
        } else {
            Status::Exited
        };
        r.state.exit_code = Some(outcome.exit_code);
        r.state.error = outcome.start_error.clone();
        r.state.finished_at = Some(finished);
        r.state.pid = None;
        r.state.shim_pid = None;
        r.state.shim_start = None;
    })?;
    if record.auto_remove {
        containers.remove(id, true)?;
    }
    result.map(|_| outcome)
}

fn error_chain(e: &Error) -> String {
    let mut s = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

async fn run(
    containers: &Containers,
    record: &super::ContainerRecord,
    attach: Attach,
) -> Result<Outcome> {
    // Before the mount and spec work (see cgroup_warm).
    crate::cgroup_warm::warm_up();
    let id = record.id.as_str();
    let dir = containers.dir(id);
    for lower in &record.lowers {
        if !lower.is_dir() {
            return Err(Error::Invalid {
                what: "image",
                reason: format!("layer directory {} is missing", lower.display()),
            });
        }
    }
    let runc = containers.runc(record);
    // What an earlier, crashed supervisor may have left.
    runc.delete_force(id).await?;
    let _ = rustix::mount::unmount(dir.join("rootfs"), rustix::mount::UnmountFlags::DETACH);

    let netns_path = dir.join("netns");
    let _ = rustix::mount::unmount(&netns_path, rustix::mount::UnmountFlags::DETACH);
    let ports = if record.network == Network::Host {
        proxy::bind(&[])?
    } else {
        proxy::bind(&record.ports)?
    };
    // Lives as long as the container: this process supervises it.
    let mut network = record.network;
    let private = match network {
        Network::Default => match PrivateNetwork::create(&netns_path) {
            Ok(net) => Some(net),
            Err(e) => {
                crate::network::warn_fallback(&e);
                network = Network::Host;
                None
            }
        },
        Network::None | Network::Host => None,
    };
    let rootfs = OverlayRootfs::remount(&dir, &record.lowers)?;
    let mut req = ExecRequest::new(record.lowers.clone(), record.command());
    req.env = record.env.clone();
    req.cwd = PathBuf::from(if record.working_dir.is_empty() {
        "/"
    } else {
        &record.working_dir
    });
    req.user = (!record.user.is_empty()).then(|| record.user.clone());
    req.network = network;
    req.hostname = Some(record.hostname.clone());
    req.resources = record.resources.clone();
    for m in &record.mounts {
        if m.kind == MountKind::Volume {
            std::fs::create_dir_all(&m.source)
                .map_err(|e| Error::io("create volume", &m.source, e))?;
            super::volumes::populate(rootfs.rootfs(), &m.target, &m.source)
                .map_err(|e| Error::io("copy the image's files into volume", &m.source, e))?;
        }
        req.mounts.push(BindMount {
            source: m.source.clone(),
            target: m.target.clone(),
            readonly: m.readonly,
        });
    }
    let (stubs, bundle) = write_bundle(
        &BundleParams {
            id,
            dir: &dir,
            rootfs: rootfs.rootfs(),
            netns: private.as_ref().map(PrivateNetwork::path),
            host_resolv_conf: containers.host_resolv_conf(),
            terminal: attach.tty,
            // The caller's terminal size, applied before the process runs.
            console_size: (attach.tty && !attach.detached)
                .then(|| crate::console::window_size(std::io::stdin().as_fd()))
                .flatten(),
            readonly_rootfs: record.read_only,
            keep_kernel_mount_points: false,
        },
        &req,
    )?;

    let outcome = run_runc(containers, record, &dir, &bundle, ports, attach).await;
    drop(private);
    stubs.clean(rootfs.rootfs());
    rootfs.unmount()?;
    outcome
}

async fn run_runc(
    containers: &Containers,
    record: &super::ContainerRecord,
    dir: &Path,
    bundle: &Path,
    ports: proxy::BoundPorts,
    attach: Attach,
) -> Result<Outcome> {
    let id = record.id.as_str();
    let runc = containers.runc(record);
    let log = bundle.join("runc.log");
    let _ = std::fs::remove_file(&log);
    let pid_file = dir.join("init.pid");
    let _ = std::fs::remove_file(&pid_file);
    let mut cmd = runc.command();
    cmd.arg("--log")
        .arg(&log)
        .arg("--log-format")
        .arg("json")
        .arg("run")
        .arg("--pid-file")
        .arg(&pid_file)
        .arg("--bundle")
        .arg(bundle)
        .arg(id);
    // Held until the container exits: the terminal the runtime relays
    // (detached -t) and the open end of a detached -i's input.
    let mut terminal = None;
    let mut _open_stdin = None;
    if attach.tty && attach.detached {
        let (master, slave) =
            crate::console::open_pty().map_err(|e| Error::io("open a pseudo-terminal", dir, e))?;
        let clone = |fd: &std::os::fd::OwnedFd| {
            fd.try_clone()
                .map_err(|e| Error::io("open a pseudo-terminal", dir, e))
        };
        cmd.stdin(clone(&slave)?)
            .stdout(clone(&slave)?)
            .stderr(slave);
        terminal = Some(master);
    } else if attach.tty {
        cmd.stdin(Stdio::inherit())
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit());
    } else {
        let stdin = match (attach.stdin, attach.detached) {
            (false, _) => Stdio::null(),
            (true, false) => Stdio::inherit(),
            (true, true) => {
                let (read, write) =
                    std::io::pipe().map_err(|e| Error::io("create a pipe", dir, e))?;
                _open_stdin = Some(write);
                read.into()
            }
        };
        cmd.stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
    }
    if attach.own_process_group {
        cmd.process_group(0);
    }
    tracing::debug!(%id, "starting container");
    let mut child = cmd.spawn().map_err(|source| Error::Spawn {
        binary: runc.binary().to_owned(),
        source,
    })?;

    let writer =
        LogWriter::open(&containers.log_path(id)).map_err(|e| Error::io("open", dir, e))?;
    // The command holds the runtime's ends; the pipes' and the terminal's
    // must close when the runtime exits.
    drop(cmd);
    let mut pumps = Vec::new();
    if let Some(master) = terminal {
        pumps.push(tokio::spawn(pump(
            tokio::fs::File::from_std(std::fs::File::from(master)),
            LineSplitter::new(writer.clone(), Stream::Stdout),
            None,
        )));
    }
    if let Some(out) = child.stdout.take() {
        pumps.push(tokio::spawn(pump(
            out,
            LineSplitter::new(writer.clone(), Stream::Stdout),
            attach.output.clone(),
        )));
    }
    if let Some(err) = child.stderr.take() {
        pumps.push(tokio::spawn(pump(
            err,
            LineSplitter::new(writer, Stream::Stderr),
            attach.output,
        )));
    }

    let mut ports = Some(ports);
    let mut proxy = None;
    let mut started = false;
    let status = loop {
        tokio::select! {
            status = child.wait() => break status,
            () = tokio::time::sleep(Duration::from_millis(10)), if !started => {
                if let Some(pid) = read_pid(&pid_file) {
                    started = true;
                    proxy = on_start(containers, id, pid, ports.take())?;
                }
            }
        }
    };
    let status = status.map_err(|source| Error::Spawn {
        binary: runc.binary().to_owned(),
        source,
    })?;
    if !started && let Some(pid) = read_pid(&pid_file) {
        on_start(containers, id, pid, None)?;
    }
    for p in pumps {
        if tokio::time::timeout(Duration::from_secs(5), p)
            .await
            .is_err()
        {
            tracing::warn!(%id, "container output still open after exit");
        }
    }
    if let Some(p) = proxy {
        p.stop();
    }
    runc.delete_force(id).await?;
    let _ = std::fs::remove_file(&pid_file);
    let code = exit_code(status);
    if code != 0
        && let Some(message) = start_error(&log)
    {
        tracing::debug!(%id, %message, "container failed to start");
        return Ok(Outcome {
            exit_code: start_error_code(&message),
            start_error: Some(message),
        });
    }
    tracing::debug!(%id, code, "container exited");
    Ok(Outcome {
        exit_code: code,
        start_error: None,
    })
}

fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Records the start and begins forwarding ports.
fn on_start(
    containers: &Containers,
    id: &str,
    pid: u32,
    ports: Option<proxy::BoundPorts>,
) -> Result<Option<proxy::PortProxy>> {
    containers.update(id, |r| {
        r.state.status = Status::Running;
        r.state.pid = Some(pid);
        r.state.started_at = Some(Utc::now());
        r.state.finished_at = None;
    })?;
    tracing::debug!(%id, pid, "container started");
    let Some(ports) = ports.filter(|p| !p.is_empty()) else {
        return Ok(None);
    };
    let ns = PathBuf::from(format!("/proc/{pid}/ns/net"));
    match std::fs::File::open(&ns) {
        Ok(f) => Ok(Some(ports.start(f))),
        Err(e) => {
            tracing::warn!(%id, error = %e, "cannot open the container's network namespace");
            Ok(None)
        }
    }
}

async fn pump<R: tokio::io::AsyncRead + Unpin>(
    mut reader: R,
    mut log: LineSplitter,
    output: Option<OutputSender>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => {
                log.push(&buf[..n]);
                if let Some(tx) = &output {
                    let _ = tx
                        .send(OutputChunk {
                            stream: log.stream(),
                            data: buf[..n].to_vec(),
                        })
                        .await;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            // A pseudo-terminal's master once the last slave is closed.
            Err(e) if e.raw_os_error() == Some(nix::libc::EIO) => break,
            Err(e) => {
                tracing::warn!(error = %e, "failed to read container output");
                break;
            }
        }
    }
    log.flush();
}
