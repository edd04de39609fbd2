//! Container records on disk and the operations on them: create (with a
//! unique name), list, find, update, reconcile, stop, kill, wait, remove.
//!
//! ```text
//! <store root>/
//!   containers/
//!     names.lock             flock held while a name is allocated or freed
//!     <id>/                  one per container (64 hex digits)
//!       config.json          ContainerRecord: config and state
//!       lock                 flock held while config.json is rewritten
//!       container.log        output, JSON lines {log, stream, time}
//!       rootfs/ upper/ work/ the overlay (upper survives stop and start)
//!       hosts resolv.conf hostname  generated files
//!       bundle/              config.json for the OCI runtime, runc.log
//!       runc/                the OCI runtime's --root for this container
//!       init.pid             the container process's pid while it runs
//!       shim.log             the supervisor's own diagnostics (detached runs)
//!   volumes/<name>/_data     named and anonymous volumes
//! ```
//!
//! `config.json` is replaced atomically (temp file and rename) under the
//! container's lock, so readers take no lock. The supervisor that runs a
//! container records its pid and start time there; a container marked
//! running whose supervisor is gone is marked exited (exit code 255) the
//! next time it is read.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::names;
use crate::error::{Error, Result};
use crate::oci::OciRuntime;
use crate::runc::Runc;
use crate::spec::{Network, Resources};

const CONFIG: &str = "config.json";
/// Exit code recorded for a container whose supervisor disappeared.
pub const LOST_EXIT_CODE: i32 = 255;

/// Where a container is in its life.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Never ran (or failed to start).
    #[default]
    Created,
    Running,
    Exited,
}

impl Status {
    /// Docker's `State` field: `created`, `running`, `exited`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Exited => "exited",
        }
    }
}

/// A published port: `HOST_IP:HOST_PORT` on the host forwarded to
/// `CONTAINER_PORT` inside the container.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    pub host_ip: String,
    pub host_port: u16,
    pub container_port: u16,
    /// Only `tcp` is supported.
    pub proto: String,
}

/// What a mount's source is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MountKind {
    Bind,
    Volume,
}

/// A bind mount or volume of a container.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountRecord {
    pub kind: MountKind,
    /// Host path (for volumes, `volumes/<name>/_data`).
    pub source: PathBuf,
    /// Absolute path in the container.
    pub target: PathBuf,
    pub readonly: bool,
    /// The volume's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// An anonymous volume (`-v /path`), removed by `rm -v` and `--rm`.
    #[serde(default)]
    pub anonymous: bool,
}

/// The mutable part of a record.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub status: Status,
    /// The container process (host pid) while running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// The supervisor process and its start time (clock ticks since boot,
    /// from `/proc/<pid>/stat`) while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shim_pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shim_start: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Why the process could not be started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
}

/// Everything kiln keeps about a container (`config.json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    pub name: String,
    /// The image as the user named it.
    pub image: String,
    /// `sha256:…`.
    pub image_id: String,
    pub created: DateTime<Utc>,
    /// Snapshot `fs/` directories of the image, topmost first.
    pub lowers: Vec<PathBuf>,
    /// The resolved entrypoint and command (what runs: entrypoint + cmd).
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: String,
    pub user: String,
    pub hostname: String,
    pub network: Network,
    pub ports: Vec<PortMapping>,
    pub mounts: Vec<MountRecord>,
    pub read_only: bool,
    pub resources: Resources,
    pub auto_remove: bool,
    pub tty: bool,
    pub open_stdin: bool,
    /// The image's STOPSIGNAL (empty: SIGTERM).
    pub stop_signal: String,
    pub labels: BTreeMap<String, String>,
    /// The OCI runtime that runs it ([`OciRuntime::name`]: `embedded` or
    /// a runc binary), set by [`Containers::create`]; records written
    /// before runtimes could be chosen ran with `runc`.
    #[serde(default = "runc_name")]
    pub runtime: String,
    pub state: State,
}

fn runc_name() -> String {
    "runc".to_owned()
}

impl ContainerRecord {
    /// argv: entrypoint then cmd.
    pub fn command(&self) -> Vec<String> {
        self.entrypoint.iter().chain(&self.cmd).cloned().collect()
    }

    pub fn short_id(&self) -> &str {
        &self.id[..12.min(self.id.len())]
    }

    pub fn is_running(&self) -> bool {
        self.state.status == Status::Running
    }
}

/// What `create` needs: a record without id, name and state.
#[derive(Clone, Debug)]
pub struct NewContainer {
    /// `--name`; generated when `None`.
    pub name: Option<String>,
    pub record: ContainerRecord,
}

/// The containers of a store.
#[derive(Clone, Debug)]
pub struct Containers {
    dir: PathBuf,
    volumes: PathBuf,
    /// The runtime new containers get.
    runtime: OciRuntime,
    /// How `embedded` records are run.
    embedded: OciRuntime,
    host_resolv_conf: PathBuf,
}

fn read_record(path: &Path) -> Result<ContainerRecord> {
    let bytes = std::fs::read(path).map_err(|e| Error::io("read", path, e))?;
    serde_json::from_slice(&bytes).map_err(|source| Error::StateJson {
        path: path.to_owned(),
        source,
    })
}

fn write_record(dir: &Path, record: &ContainerRecord) -> Result<()> {
    let json = serde_json::to_vec_pretty(record).map_err(|source| Error::StateJson {
        path: dir.join(CONFIG),
        source,
    })?;
    let path = dir.join(CONFIG);
    kiln_fs::replace_file(&path, &json, kiln_fs::Durability::Durable)
        .map_err(|e| Error::io("replace", &path, e))
}

fn lock(path: &Path) -> Result<File> {
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| Error::io("open lock file", path, e))?;
    file.lock().map_err(|e| Error::io("lock", path, e))?;
    Ok(file)
}

/// A process's start time (field 22 of `/proc/<pid>/stat`), which tells a
/// process from a later one that reused its pid.
pub fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether process `pid` with start time `start` still exists (and is not
/// a zombie).
pub fn process_alive(pid: u32, start: Option<u64>) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rfind(')')
        .and_then(|i| stat[i + 2..].split_whitespace().next());
    if state == Some("Z") || state == Some("X") {
        return false;
    }
    match start {
        Some(s) => process_start_time(pid) == Some(s),
        None => true,
    }
}

impl Containers {
    /// The containers under `store_root` (creating `containers/` and
    /// `volumes/` if needed); new containers run with `runc` from `PATH`
    /// unless [`Containers::with_runtime`] says otherwise.
    pub fn open(store_root: &Path) -> Result<Containers> {
        let root =
            std::path::absolute(store_root).map_err(|e| Error::io("resolve", store_root, e))?;
        let dir = root.join("containers");
        let volumes = root.join("volumes");
        for d in [&dir, &volumes] {
            std::fs::create_dir_all(d).map_err(|e| Error::io("create directory", d, e))?;
        }
        Ok(Containers {
            dir,
            volumes,
            runtime: OciRuntime::default(),
            embedded: OciRuntime::embedded_self(),
            host_resolv_conf: PathBuf::from("/etc/resolv.conf"),
        })
    }

    /// New containers run with `runtime` (an embedded one also runs the
    /// existing `embedded` containers; by default those re-execute the
    /// current executable, see [`OciRuntime::embedded_self`]).
    pub fn with_runtime(mut self, runtime: OciRuntime) -> Containers {
        if runtime.is_embedded() {
            self.embedded = runtime.clone();
        }
        self.runtime = runtime;
        self
    }

    /// The runtime new containers get.
    pub fn runtime(&self) -> &OciRuntime {
        &self.runtime
    }

    pub(crate) fn host_resolv_conf(&self) -> &Path {
        &self.host_resolv_conf
    }

    /// `containers/<id>`.
    pub fn dir(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    /// `containers/<id>/container.log`.
    pub fn log_path(&self, id: &str) -> PathBuf {
        self.dir(id).join("container.log")
    }

    /// `volumes/<name>/_data`.
    pub fn volume_path(&self, name: &str) -> PathBuf {
        self.volumes.join(name).join("_data")
    }

    /// The runtime a container was created with.
    pub fn runtime_of(&self, record: &ContainerRecord) -> OciRuntime {
        OciRuntime::from_name(&record.runtime, &self.embedded)
    }

    /// The command line of a container's runtime, with its state root.
    pub fn runc(&self, record: &ContainerRecord) -> Runc {
        self.runtime_of(record)
            .client(self.dir(&record.id).join("runc"))
    }

    /// Creates a container: a fresh id, the requested name (which must be
    /// free) or a generated one, status `created`.
    pub fn create(&self, new: NewContainer) -> Result<ContainerRecord> {
        let _names = lock(&self.dir.join("names.lock"))?;
        let existing = self.records()?;
        let taken = |n: &str| existing.iter().find(|r| r.name == n);
        let name = match new.name {
            Some(n) => {
                let n = n.strip_prefix('/').unwrap_or(&n).to_owned();
                if !names::valid_name(&n) {
                    return Err(Error::InvalidName { name: n });
                }
                if let Some(other) = taken(&n) {
                    return Err(Error::NameInUse {
                        name: n,
                        id: other.id.clone(),
                    });
                }
                n
            }
            None => {
                let mut retry = 0;
                loop {
                    let n = names::generate_name(retry)
                        .map_err(|e| Error::io("read", "/dev/urandom", e))?;
                    if taken(&n).is_none() {
                        break n;
                    }
                    retry += 1;
                }
            }
        };
        let id = names::new_id().map_err(|e| Error::io("read", "/dev/urandom", e))?;
        let dir = self.dir(&id);
        std::fs::create_dir(&dir).map_err(|e| Error::io("create directory", &dir, e))?;
        let mut record = new.record;
        record.id = id;
        record.name = name;
        record.runtime = self.runtime.name();
        record.state = State::default();
        for m in &record.mounts {
            if m.kind == MountKind::Volume {
                std::fs::create_dir_all(&m.source)
                    .map_err(|e| Error::io("create volume", &m.source, e))?;
            }
        }
        write_record(&dir, &record)?;
        tracing::debug!(id = %record.id, name = %record.name, "created container");
        Ok(record)
    }

    /// Every record as stored, without reconciliation.
    fn records(&self) -> Result<Vec<ContainerRecord>> {
        let mut out = Vec::new();
        let entries =
            std::fs::read_dir(&self.dir).map_err(|e| Error::io("read directory", &self.dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("read directory", &self.dir, e))?;
            let path = entry.path().join(CONFIG);
            if !entry.path().is_dir() {
                continue;
            }
            match read_record(&path) {
                Ok(r) => out.push(r),
                // Being created or removed.
                Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Every container, newest first, with dead supervisors reconciled.
    pub fn list(&self) -> Result<Vec<ContainerRecord>> {
        let mut out = Vec::new();
        for r in self.records()? {
            out.push(self.reconcile(r)?);
        }
        out.sort_by(|a, b| b.created.cmp(&a.created).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    /// Container `id` (a full id), reconciled.
    pub fn load(&self, id: &str) -> Result<ContainerRecord> {
        let path = self.dir(id).join(CONFIG);
        match read_record(&path) {
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                Err(Error::NoSuchContainer {
                    query: id.to_owned(),
                })
            }
            other => self.reconcile(other?),
        }
    }

    /// A container by full id, name or unique id prefix (Docker's order).
    pub fn find(&self, query: &str) -> Result<ContainerRecord> {
        let not_found = || Error::NoSuchContainer {
            query: query.to_owned(),
        };
        if query.is_empty() {
            return Err(not_found());
        }
        let records = self.records()?;
        let name = query.strip_prefix('/').unwrap_or(query);
        let found = records
            .iter()
            .find(|r| r.id == query)
            .or_else(|| records.iter().find(|r| r.name == name))
            .cloned();
        let found = match found {
            Some(r) => r,
            None => {
                let mut matches = records.into_iter().filter(|r| r.id.starts_with(query));
                match (matches.next(), matches.next()) {
                    (Some(r), None) => r,
                    _ => return Err(not_found()),
                }
            }
        };
        self.reconcile(found)
    }

    /// Rewrites container `id`'s record with `f` applied, under its lock.
    pub fn update(
        &self,
        id: &str,
        f: impl FnOnce(&mut ContainerRecord),
    ) -> Result<ContainerRecord> {
        let dir = self.dir(id);
        let _lock = lock(&dir.join("lock"))?;
        let mut record = read_record(&dir.join(CONFIG))?;
        f(&mut record);
        write_record(&dir, &record)?;
        Ok(record)
    }

    /// A running (or starting) container whose supervisor is gone is
    /// marked exited, and what it left (runc state, the mount) cleaned up.
    fn reconcile(&self, record: ContainerRecord) -> Result<ContainerRecord> {
        let Some(shim) = record.state.shim_pid else {
            return Ok(record);
        };
        if process_alive(shim, record.state.shim_start) {
            return Ok(record);
        }
        tracing::info!(id = %record.id, shim, "container supervisor is gone; marking the container exited");
        self.cleanup_runtime(&record);
        self.update(&record.id, |r| {
            if r.state.shim_pid == Some(shim) {
                if r.state.status == Status::Running {
                    r.state.status = Status::Exited;
                    r.state.exit_code.get_or_insert(LOST_EXIT_CODE);
                    r.state.finished_at = Some(Utc::now());
                }
                r.state.pid = None;
                r.state.shim_pid = None;
                r.state.shim_start = None;
            }
        })
    }

    /// Deletes the runc container (killing what is left of it) and
    /// detaches the root filesystem mount. Errors are logged.
    fn cleanup_runtime(&self, record: &ContainerRecord) {
        let id = record.id.as_str();
        let runc = self.runc(record);
        let status = runc
            .std_command()
            .arg("delete")
            .arg("--force")
            .arg(id)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
        if let Err(e) = status {
            tracing::warn!(%id, error = %e, "runc delete failed");
        }
        let rootfs = self.dir(id).join("rootfs");
        match rustix::mount::unmount(&rootfs, rustix::mount::UnmountFlags::DETACH) {
            Ok(()) | Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOENT) => {}
            Err(e) => tracing::warn!(%id, error = %e, "cannot unmount container root"),
        }
    }

    /// Sends `signal` (`KILL`, `SIGTERM`, `9`…) to a running container.
    pub async fn kill(&self, id: &str, signal: &str) -> Result<()> {
        let record = self.load(id)?;
        if !record.is_running() {
            return Err(Error::NotRunning { id: id.to_owned() });
        }
        self.runc(&record).kill(id, &normalize_signal(signal)).await
    }

    /// Stops a running container: its stop signal (the image's STOPSIGNAL,
    /// else SIGTERM), then SIGKILL after `timeout`. A container that is
    /// not running is left alone.
    pub async fn stop(&self, id: &str, timeout: Duration) -> Result<ContainerRecord> {
        let record = self.load(id)?;
        if !record.is_running() {
            return Ok(record);
        }
        let signal = if record.stop_signal.is_empty() {
            "TERM".to_owned()
        } else {
            normalize_signal(&record.stop_signal)
        };
        let runc = self.runc(&record);
        if let Err(e) = runc.kill(id, &signal).await {
            tracing::debug!(%id, error = %e, "stop signal not delivered");
        }
        if let Some(r) = self.wait_exit(id, Some(timeout)).await? {
            return Ok(r);
        }
        tracing::debug!(%id, "container did not stop in time; killing it");
        self.kill_and_wait(id).await
    }

    /// SIGKILL, then waits until the supervisor recorded the exit.
    pub async fn kill_and_wait(&self, id: &str) -> Result<ContainerRecord> {
        let runc = self.runc(&self.load(id)?);
        loop {
            if let Err(e) = runc.kill(id, "KILL").await {
                tracing::debug!(%id, error = %e, "SIGKILL not delivered");
            }
            if let Some(r) = self.wait_exit(id, Some(Duration::from_secs(2))).await? {
                return Ok(r);
            }
        }
    }

    /// Waits until the container is not running; `None` on timeout.
    pub async fn wait_exit(
        &self,
        id: &str,
        timeout: Option<Duration>,
    ) -> Result<Option<ContainerRecord>> {
        let start = Instant::now();
        loop {
            let record = self.load(id)?;
            if !record.is_running() && record.state.shim_pid.is_none() {
                return Ok(Some(record));
            }
            if timeout.is_some_and(|t| start.elapsed() >= t) {
                return Ok(None);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Removes a container that is not running: its directory and, with
    /// `volumes`, its anonymous volumes. Returns the bytes freed in its
    /// upper directory and logs.
    pub fn remove(&self, id: &str, volumes: bool) -> Result<u64> {
        let record = self.load(id)?;
        if record.is_running() {
            return Err(Error::ContainerRunning { name: record.name });
        }
        let _names = lock(&self.dir.join("names.lock"))?;
        let dir = self.dir(id);
        self.cleanup_runtime(&record);
        // What a supervisor killed with its container left mounted (its
        // network namespace pin, the root filesystem).
        for m in ["netns", "rootfs"] {
            let _ = rustix::mount::unmount(dir.join(m), rustix::mount::UnmountFlags::DETACH);
        }
        let size = dir_size(&dir.join("upper")) + dir_size(&self.log_path(id));
        // Hide it from listings first, then delete.
        let doomed = self.dir.join(format!(".removing-{id}"));
        std::fs::rename(&dir, &doomed).map_err(|e| Error::io("rename", &dir, e))?;
        std::fs::remove_dir_all(&doomed).map_err(|e| Error::io("remove", &doomed, e))?;
        if volumes {
            for m in record.mounts.iter().filter(|m| m.anonymous) {
                if let Some(name) = &m.name {
                    let vdir = self.volumes.join(name);
                    if let Err(e) = std::fs::remove_dir_all(&vdir) {
                        tracing::warn!(volume = %vdir.display(), error = %e, "cannot remove volume");
                    }
                }
            }
        }
        tracing::debug!(%id, "removed container");
        Ok(size)
    }
}

/// `SIGTERM`/`term`/`15` → what runc accepts (`TERM`, `15`).
pub fn normalize_signal(signal: &str) -> String {
    let s = signal.trim().to_ascii_uppercase();
    s.strip_prefix("SIG").map(str::to_owned).unwrap_or(s)
}

/// Bytes of the files under `path` (not following symlinks).
pub fn dir_size(path: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return meta.len();
    }
    std::fs::read_dir(path)
        .map(|entries| entries.flatten().map(|e| dir_size(&e.path())).sum::<u64>())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn record() -> ContainerRecord {
        ContainerRecord {
            id: String::new(),
            name: String::new(),
            image: "busybox".into(),
            image_id: "sha256:00".into(),
            created: Utc::now(),
            lowers: vec![],
            entrypoint: vec![],
            cmd: vec!["sh".into()],
            env: vec![],
            working_dir: "/".into(),
            user: String::new(),
            hostname: "h".into(),
            network: Network::None,
            ports: vec![],
            mounts: vec![],
            read_only: false,
            resources: Resources::default(),
            auto_remove: false,
            tty: false,
            open_stdin: false,
            stop_signal: String::new(),
            labels: BTreeMap::new(),
            runtime: String::new(),
            state: State::default(),
        }
    }

    #[test]
    fn names_are_unique_and_lookup_works() {
        let dir = tempfile::tempdir().unwrap();
        let c = Containers::open(dir.path()).unwrap();
        let a = c
            .create(NewContainer {
                name: Some("web".into()),
                record: record(),
            })
            .unwrap();
        assert_eq!(a.id.len(), 64);
        let err = c
            .create(NewContainer {
                name: Some("web".into()),
                record: record(),
            })
            .unwrap_err();
        assert!(matches!(err, Error::NameInUse { .. }), "{err}");
        let b = c
            .create(NewContainer {
                name: None,
                record: record(),
            })
            .unwrap();
        assert!(b.name.contains('_'));
        assert_eq!(c.find("web").unwrap().id, a.id);
        assert_eq!(c.find(&a.id[..10]).unwrap().id, a.id);
        assert_eq!(c.find(&b.name).unwrap().id, b.id);
        assert!(matches!(c.find("nope"), Err(Error::NoSuchContainer { .. })));
        assert_eq!(c.list().unwrap().len(), 2);
        c.remove(&a.id, true).unwrap();
        assert_eq!(c.list().unwrap().len(), 1);
    }

    #[test]
    fn a_dead_supervisor_means_exited() {
        let dir = tempfile::tempdir().unwrap();
        let c = Containers::open(dir.path())
            .unwrap()
            .with_runtime(OciRuntime::Runc("/nonexistent/runc".into()));
        let a = c
            .create(NewContainer {
                name: None,
                record: record(),
            })
            .unwrap();
        c.update(&a.id, |r| {
            r.state.status = Status::Running;
            // A pid that cannot exist (above pid_max's limit).
            r.state.shim_pid = Some(u32::MAX - 1);
        })
        .unwrap();
        let r = c.load(&a.id).unwrap();
        assert_eq!(r.state.status, Status::Exited);
        assert_eq!(r.state.exit_code, Some(LOST_EXIT_CODE));
        assert_eq!(r.state.shim_pid, None);
    }

    #[test]
    fn signals_are_normalized() {
        assert_eq!(normalize_signal("SIGTERM"), "TERM");
        assert_eq!(normalize_signal("kill"), "KILL");
        assert_eq!(normalize_signal("9"), "9");
    }

    #[test]
    fn own_start_time_is_read() {
        let me = std::process::id();
        let start = process_start_time(me);
        assert!(start.is_some());
        assert!(process_alive(me, start));
        assert!(!process_alive(me, start.map(|s| s + 1)));
    }
}
