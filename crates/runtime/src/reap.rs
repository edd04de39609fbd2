//! Mending what a killed kiln left of its build containers. A build
//! step's container directory is named after the kiln process that made it
//! (`k<pid>-<start time>-…`, see [`crate::network::owner_prefix`]); when
//! that process is gone, the next [`crate::Runtime`] on the same state kills
//! whatever still runs in the container's cgroup, drops the OCI runtime's
//! state, unmounts the root filesystem and removes the directory.

use std::path::Path;
use std::time::Duration;

use crate::network::start_time;

/// Whether a container directory name names an owner that is gone.
/// Names without an owner (older kilns) are left alone.
fn owner_is_gone(name: &str) -> bool {
    let Some(rest) = name.strip_prefix('k') else {
        return false;
    };
    let mut parts = rest.splitn(3, '-');
    let (Some(pid), Some(start), Some(_)) = (
        parts.next().and_then(|p| p.parse::<u32>().ok()),
        parts.next().and_then(|s| s.parse::<u64>().ok()),
        parts.next(),
    ) else {
        return false;
    };
    start_time(pid) != Some(start)
}

/// Reaps the containers under `containers` whose kiln is gone; `runc_root`
/// holds the OCI runtime's state of the same containers.
pub(crate) fn reap_stale_containers(containers: &Path, runc_root: &Path) {
    let Ok(entries) = std::fs::read_dir(containers) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(id) = name.to_str() else { continue };
        if !owner_is_gone(id) {
            continue;
        }
        tracing::info!(
            container = id,
            "removing a build container a killed kiln left"
        );
        kill_cgroup(id);
        let _ = std::fs::remove_dir_all(runc_root.join(id));
        let dir = entry.path();
        let _ = rustix::mount::unmount(dir.join("rootfs"), rustix::mount::UnmountFlags::DETACH);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// Kills every process in the container's cgroup (`/kiln/<id>` in each
/// hierarchy, as the spec places it) and removes the cgroup.
fn kill_cgroup(id: &str) {
    let root = Path::new("/sys/fs/cgroup");
    let mut dirs = Vec::new();
    let direct = root.join("kiln").join(id);
    if direct.is_dir() {
        dirs.push(direct);
    }
    if let Ok(controllers) = std::fs::read_dir(root) {
        for c in controllers.flatten() {
            let d = c.path().join("kiln").join(id);
            if d.is_dir() {
                dirs.push(d);
            }
        }
    }
    for _ in 0..100 {
        let mut any = false;
        for d in &dirs {
            let procs = std::fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default();
            for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                any = true;
                if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                }
            }
        }
        if !any {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    for d in dirs {
        let _ = std::fs::remove_dir(d);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_named_dead_owners_are_gone() {
        let live = format!("k{}-abc", crate::network::owner_prefix());
        assert!(!owner_is_gone(&live));
        assert!(owner_is_gone("k999999999-1-abc"));
        assert!(!owner_is_gone("kAbCdEfGh123456"));
        assert!(!owner_is_gone("notes"));
    }
}
