//! Keeps the kernel's cgroup-migration lock out of its fast mode while
//! containers start.
//!
//! Every container start moves its first process into the container's
//! cgroups (a write to `cgroup.procs`). Such a move takes the global
//! `cgroup_threadgroup_rwsem` for writing. That per-CPU rwsem keeps a
//! fast path for its readers (fork, exec, exit) while nobody writes; the
//! first writer after a quiet spell must wait a full RCU grace period to
//! leave it (7–20 ms on the reference machine), and the slow mode lasts
//! about one grace period after the last writer. A build whose RUN steps
//! start tens of milliseconds apart pays a grace period per step — the
//! largest single cost of a short RUN step — and so does runc.
//!
//! While containers start, a thread here writes kiln's own pid into its
//! own cgroup (a move to where it already is) every two milliseconds.
//! That keeps the lock in its slow mode, so the runtime's moves proceed
//! at once, and the first grace period overlaps the mount and spec work
//! before the runtime runs. It is best effort: with no writable cgroup
//! file (rootless, no cgroup filesystem) it does nothing; on hosts whose
//! cgroup hierarchy is mounted with `favordynmods` the moves are cheap
//! anyway and the writes cost microseconds.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How often the lock is taken while warm: well under a grace period.
const INTERVAL: Duration = Duration::from_millis(2);

/// How long one container start keeps the lock warm: covers the mount,
/// spec, runtime exec and the runtime's own setup up to the cgroup move,
/// with a wide margin; a slower start only loses the optimisation.
pub const START_WINDOW: Duration = Duration::from_millis(250);

struct Warmer {
    /// Keep writing until this instant (`None`: idle).
    deadline: Mutex<Option<Instant>>,
    wake: Condvar,
}

/// [`warm_for`] the usual [`START_WINDOW`]: call it when a container is
/// about to start, or soon will (a build step is about to run).
pub fn warm_up() {
    warm_for(START_WINDOW);
}

static WARMER: OnceLock<Option<&'static Warmer>> = OnceLock::new();

/// Keeps the cgroup-migration lock warm for at least `window` from now
/// (extending any earlier window). Cheap to call; starts the background
/// thread on first use, and does nothing when kiln cannot write its own
/// `cgroup.procs`.
pub fn warm_for(window: Duration) {
    let Some(warmer) = *WARMER.get_or_init(start) else {
        return;
    };
    let until = Instant::now() + window;
    let mut deadline = warmer.deadline.lock().unwrap_or_else(|e| e.into_inner());
    if deadline.is_none_or(|d| d < until) {
        *deadline = Some(until);
        warmer.wake.notify_one();
    }
}

fn start() -> Option<&'static Warmer> {
    let procs = own_cgroup_procs()?;
    let warmer: &'static Warmer = Box::leak(Box::new(Warmer {
        deadline: Mutex::new(None),
        wake: Condvar::new(),
    }));
    let spawned = std::thread::Builder::new()
        .name("kiln-cgroup-warm".to_owned())
        .spawn(move || run(warmer, &procs));
    match spawned {
        Ok(_) => Some(warmer),
        Err(e) => {
            tracing::debug!(error = %e, "cgroup warm-up thread not started");
            None
        }
    }
}

fn run(warmer: &Warmer, procs: &Path) {
    let pid = std::process::id().to_string();
    loop {
        {
            let mut deadline = warmer.deadline.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                match *deadline {
                    Some(d) if Instant::now() < d => break,
                    _ => {
                        *deadline = None;
                        deadline = warmer
                            .wake
                            .wait(deadline)
                            .unwrap_or_else(|e| e.into_inner());
                    }
                }
            }
        }
        // Never on the caller's thread: the first write waits a grace period.
        if !write_pid(procs, &pid) {
            tracing::debug!(file = %procs.display(), "cgroup warm-up unavailable");
            return;
        }
        std::thread::sleep(INTERVAL);
    }
}

fn write_pid(procs: &Path, pid: &str) -> bool {
    // Opened per write: the process may have been moved since.
    match OpenOptions::new()
        .write(true)
        .open(procs)
        .and_then(|mut f| f.write_all(pid.as_bytes()))
    {
        Ok(()) => true,
        // A unified cgroup with controllers enabled for its children
        // refuses processes, but only after the lock was taken.
        Err(e) => e.raw_os_error() == Some(rustix::io::Errno::BUSY.raw_os_error()),
    }
}

/// The `cgroup.procs` file of kiln's own cgroup: in a v1 hierarchy when
/// there is one (where the container runtimes move processes on such
/// hosts; the lock is global either way), else in the unified one.
fn own_cgroup_procs() -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let root = Path::new("/sys/fs/cgroup");
    candidates(&text, root).into_iter().find(|p| p.is_file())
}

fn candidates(proc_self_cgroup: &str, root: &Path) -> Vec<PathBuf> {
    let mut v1 = Vec::new();
    let mut v2 = Vec::new();
    for line in proc_self_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let rel = path.trim_start_matches('/');
        if controllers.is_empty() {
            v2.push(root.join(rel).join("cgroup.procs"));
            v2.push(root.join("unified").join(rel).join("cgroup.procs"));
        } else {
            // `name=systemd` hierarchies are mounted under the name.
            let dir = controllers.strip_prefix("name=").unwrap_or(controllers);
            // Co-mounted controllers (`cpu,cpuacct`) live under the joined name.
            v1.push(root.join(dir).join(rel).join("cgroup.procs"));
        }
    }
    v1.extend(v2);
    v1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_prefer_v1_hierarchies() {
        let text = "9:name=systemd:/user.slice\n8:pids:/\n4:cpu,cpuacct:/a/b\n0::/user.slice\n";
        let got = candidates(text, Path::new("/sys/fs/cgroup"));
        assert_eq!(
            got,
            [
                "/sys/fs/cgroup/systemd/user.slice/cgroup.procs",
                "/sys/fs/cgroup/pids/cgroup.procs",
                "/sys/fs/cgroup/cpu,cpuacct/a/b/cgroup.procs",
                "/sys/fs/cgroup/user.slice/cgroup.procs",
                "/sys/fs/cgroup/unified/user.slice/cgroup.procs",
            ]
            .map(PathBuf::from)
        );
    }

    #[test]
    fn candidates_on_a_unified_host() {
        let got = candidates("0::/init.scope\n", Path::new("/sys/fs/cgroup"));
        assert_eq!(
            got,
            [
                "/sys/fs/cgroup/init.scope/cgroup.procs",
                "/sys/fs/cgroup/unified/init.scope/cgroup.procs"
            ]
            .map(PathBuf::from)
        );
    }

    #[test]
    fn warm_for_never_fails() {
        // Works or silently does nothing, whatever the host allows.
        warm_for(Duration::from_millis(5));
        warm_for(Duration::from_millis(1));
    }
}
