//! Private networks with outbound access: a network namespace of its own
//! per container (or per running build step), connected to the outside
//! through slirp4netns, a user-mode TCP/IP stack. Nothing on the host
//! changes: no bridge, no veth, no firewall rule. The container sees
//! `tap0` with 10.0.2.100/24, the gateway 10.0.2.2 and a DNS forwarder at
//! 10.0.2.3 that asks the host's resolvers (so a loopback stub resolver on
//! the host works too); the host's own loopback is not reachable.
//!
//! A namespace is pinned by a bind mount of its `ns/net` file under the
//! runtime's state directory, so both OCI runtimes join it by path. Each
//! one's slirp4netns exits when the pipe kiln holds closes, so it dies
//! with kiln however kiln ends; the mounts a dead kiln leaves are removed
//! by the next one ([`reap_stale`]).
// pre_exec hooks for slirp4netns and poll(2) on its ready pipe.
#![allow(unsafe_code)]

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use nix::libc;

/// The DNS forwarder slirp4netns answers on inside the namespace.
pub const DNS_SERVER: &str = "10.0.2.3";

/// The user-mode network program.
const SLIRP: &str = "slirp4netns";

/// How long slirp4netns may take to configure the namespace.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a private network could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("slirp4netns is not installed (Debian: apt-get install slirp4netns)")]
    NotInstalled,
    #[error("cannot create a network namespace at {path}: {source}")]
    Namespace {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("slirp4netns failed for {path}: {reason}")]
    Slirp { path: PathBuf, reason: String },
}

/// A network namespace with outbound access. Dropping it stops its
/// slirp4netns and removes the namespace.
#[derive(Debug)]
pub struct PrivateNetwork {
    path: PathBuf,
    slirp: Option<Child>,
    // Closing it tells slirp4netns to exit.
    exit: Option<OwnedFd>,
}

impl PrivateNetwork {
    /// Creates a namespace pinned at `path` (a new file) and connects it.
    pub fn create(path: &Path) -> Result<PrivateNetwork, NetworkError> {
        let program = which(SLIRP).ok_or(NetworkError::NotInstalled)?;
        new_namespace(path).map_err(|source| NetworkError::Namespace {
            path: path.to_owned(),
            source,
        })?;
        let mut net = PrivateNetwork {
            path: path.to_owned(),
            slirp: None,
            exit: None,
        };
        net.connect(&program)?;
        Ok(net)
    }

    /// The pinned namespace (`/proc/<pid>/ns/net`-like), for the runtime
    /// spec's network namespace path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn connect(&mut self, program: &Path) -> Result<(), NetworkError> {
        let fail = |reason: String| NetworkError::Slirp {
            path: self.path.clone(),
            reason,
        };
        let (exit_r, exit_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| fail(format!("pipe: {e}")))?;
        let (ready_r, ready_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| fail(format!("pipe: {e}")))?;
        let log_path = self.path.with_extension("log");
        let log =
            File::create(&log_path).map_err(|e| fail(format!("{}: {e}", log_path.display())))?;
        let mut cmd = Command::new(program);
        cmd.args([
            "--configure",
            "--mtu=65520",
            "--disable-host-loopback",
            "--netns-type=path",
            "--exit-fd=3",
            "--ready-fd=4",
        ])
        .arg(&self.path)
        .arg("tap0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
        let (er, rw) = (exit_r.as_raw_fd(), ready_w.as_raw_fd());
        // SAFETY: only async-signal-safe calls (fcntl, dup2, close,
        // signal, sigprocmask) between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                // Out of the way first, so dup2 onto 3 and 4 cannot
                // clobber the other one.
                let er = libc::fcntl(er, libc::F_DUPFD_CLOEXEC, 10);
                let rw = libc::fcntl(rw, libc::F_DUPFD_CLOEXEC, 10);
                if er < 0 || rw < 0 || libc::dup2(er, 3) < 0 || libc::dup2(rw, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                crate::signals::reset_to_default();
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .map_err(|e| fail(format!("cannot start {}: {e}", program.display())))?;
        drop(exit_r);
        drop(ready_w);
        self.slirp = Some(child);
        self.exit = Some(exit_w);
        wait_ready(ready_r, READY_TIMEOUT).map_err(|reason| {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            fail(format!("{reason} {}", log.trim()).trim().to_owned())
        })
    }
}

impl Drop for PrivateNetwork {
    fn drop(&mut self) {
        drop(self.exit.take());
        if let Some(mut child) = self.slirp.take() {
            // It exits as soon as it sees the pipe close.
            let deadline = std::time::Instant::now() + Duration::from_secs(2);
            loop {
                match child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if std::time::Instant::now() >= deadline => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        }
        remove_namespace(&self.path);
    }
}

/// Waits until slirp4netns writes to its ready pipe.
fn wait_ready(ready: OwnedFd, timeout: Duration) -> Result<(), String> {
    let mut fds = [libc::pollfd {
        fd: ready.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    }];
    let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: one valid pollfd for the duration of the call.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), 1, ms) };
    if n == 0 {
        return Err("it did not configure the namespace in time".into());
    }
    let mut byte = [0u8; 1];
    match File::from(ready).read(&mut byte) {
        Ok(1) => Ok(()),
        Ok(_) => Err("it exited before the network was up".into()),
        Err(e) => Err(format!("reading its ready pipe: {e}")),
    }
}

/// A new network namespace, `lo` up, pinned at `path`. Done on a thread
/// of its own: `unshare(CLONE_NEWNET)` moves only the calling thread,
/// which then exits, leaving the namespace held by the bind mount.
fn new_namespace(path: &Path) -> std::io::Result<()> {
    File::create(path)?;
    let target = path.to_owned();
    let made = std::thread::spawn(move || -> std::io::Result<()> {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)?;
        crate::embedded::set_interface_up(c"lo")?;
        rustix::mount::mount_bind("/proc/thread-self/ns/net", &target)?;
        Ok(())
    })
    .join()
    .unwrap_or_else(|_| Err(std::io::Error::other("namespace thread panicked")));
    if made.is_err() {
        let _ = std::fs::remove_file(path);
    }
    made
}

fn remove_namespace(path: &Path) {
    let _ = rustix::mount::unmount(path, rustix::mount::UnmountFlags::DETACH);
    let _ = std::fs::remove_file(path);
    let _ = std::fs::remove_file(path.with_extension("log"));
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Whether private networks can be made here.
pub fn available() -> bool {
    which(SLIRP).is_some()
}

/// Reused namespaces for build steps: a step takes a free one or makes
/// one, and gives it back when it ends. All of them go when the last
/// clone of the pool does.
#[derive(Clone, Debug)]
pub struct NetworkPool {
    inner: Arc<PoolInner>,
}

#[derive(Debug)]
struct PoolInner {
    dir: PathBuf,
    prefix: String,
    next: AtomicU64,
    free: Mutex<Vec<PrivateNetwork>>,
}

impl NetworkPool {
    /// A pool whose namespaces live in `dir` (created if missing), named
    /// after this process so that [`reap_stale`] can tell when their
    /// owner is gone.
    pub fn new(dir: &Path) -> NetworkPool {
        NetworkPool {
            inner: Arc::new(PoolInner {
                dir: dir.to_owned(),
                prefix: owner_prefix(),
                next: AtomicU64::new(0),
                free: Mutex::new(Vec::new()),
            }),
        }
    }

    /// A namespace for one container; back to the pool when dropped.
    pub fn acquire(&self) -> Result<NetworkLease, NetworkError> {
        let reused = self
            .inner
            .free
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop();
        let net = match reused {
            Some(n) => n,
            None => {
                std::fs::create_dir_all(&self.inner.dir).map_err(|source| {
                    NetworkError::Namespace {
                        path: self.inner.dir.clone(),
                        source,
                    }
                })?;
                let n = self.inner.next.fetch_add(1, Ordering::Relaxed);
                let path = self.inner.dir.join(format!("{}-{n}", self.inner.prefix));
                PrivateNetwork::create(&path)?
            }
        };
        Ok(NetworkLease {
            net: Some(net),
            pool: self.clone(),
        })
    }
}

/// A namespace taken from a [`NetworkPool`].
#[derive(Debug)]
pub struct NetworkLease {
    net: Option<PrivateNetwork>,
    pool: NetworkPool,
}

impl NetworkLease {
    pub fn path(&self) -> &Path {
        self.net
            .as_ref()
            .map_or(Path::new(""), PrivateNetwork::path)
    }
}

impl Drop for NetworkLease {
    fn drop(&mut self) {
        if let Some(net) = self.net.take() {
            self.pool
                .inner
                .free
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(net);
        }
    }
}

/// `<pid>-<start time>`: names what this process owns in a shared
/// directory, so a later process can tell a dead owner from a live one
/// (and from a new process that got the same pid).
pub(crate) fn owner_prefix() -> String {
    let pid = std::process::id();
    format!("{pid}-{}", start_time(pid).unwrap_or(0))
}

/// A process's start time in clock ticks since boot (`/proc/PID/stat`
/// field 22).
pub(crate) fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: count from the
    // last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Removes the namespaces in `dir` whose owning process is gone (a kiln
/// killed before it could clean up); their slirp4netns has exited with it.
pub fn reap_stale(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(".log") {
            continue;
        }
        let mut parts = name.split('-');
        let (Some(pid), Some(start)) = (
            parts.next().and_then(|p| p.parse::<u32>().ok()),
            parts.next().and_then(|s| s.parse::<u64>().ok()),
        ) else {
            continue;
        };
        if start_time(pid) != Some(start) {
            tracing::debug!(
                namespace = name,
                "removing a dead process's network namespace"
            );
            remove_namespace(&entry.path());
        }
    }
}

static FALLBACK_WARNING: Once = Once::new();

/// Says once per process that containers get the host's network because
/// no private one can be made.
pub fn warn_fallback(reason: &NetworkError) {
    FALLBACK_WARNING.call_once(|| {
        tracing::warn!("{reason}; using the host's network instead");
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_prefix_names_a_live_process() {
        let prefix = owner_prefix();
        let (pid, start) = prefix.split_once('-').unwrap();
        assert_eq!(pid.parse::<u32>().unwrap(), std::process::id());
        assert_eq!(start_time(std::process::id()), start.parse().ok());
    }

    #[test]
    fn reaping_keeps_live_owners_and_unknown_names() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join(format!("{}-0", owner_prefix()));
        let dead = dir.path().join("999999999-1-0");
        let other = dir.path().join("notes");
        for p in [&live, &dead, &other] {
            std::fs::write(p, "").unwrap();
        }
        reap_stale(dir.path());
        assert!(live.exists());
        assert!(!dead.exists());
        assert!(other.exists());
    }
}
