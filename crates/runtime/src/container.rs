//! [`Runtime::run`]: one container from layer snapshots to exit code and
//! upper directory; and long-lived containers (`kiln run`, `ps`, `stop`…):
//! their records ([`Containers`]), logs, supervisor and port proxy.

pub mod logs;
pub mod names;
pub mod proxy;
pub mod state;
pub mod supervise;
mod volumes;

pub use state::{
    ContainerRecord, Containers, MountKind, MountRecord, NewContainer, PortMapping, State, Status,
};
pub use supervise::{Attach, Outcome, supervise};

use std::io::Write;
use std::path::{Path, PathBuf};

use tokio_util::sync::CancellationToken;

use crate::diff::{DiffOptions, DiffSummary, write_diff};
use crate::error::{DiffError, Error, Result};
use crate::inroot::{self, MountStubs};
use crate::network::{self, NetworkLease, NetworkPool};
use crate::oci::OciRuntime;
use crate::rootfs::OverlayRootfs;
use crate::runc::{OutputSender, Runc};
use crate::spec::{self, BindMount, Network, Resources, SpecOptions, TmpfsMount};
use crate::user::resolve_user;

/// The host name containers get when the request names none.
pub const DEFAULT_HOSTNAME: &str = "kiln";

/// Files the runtime bind-mounts into every container; when the image
/// lacks them, their mount points are placeholders, not content.
const GENERATED_FILES: [&str; 3] = ["etc/hosts", "etc/resolv.conf", "etc/hostname"];

/// Where a [`Runtime`] keeps its state and which OCI runtime it runs.
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// `containers/<id>/` (mounts, bundles, upper directories) and
    /// `runc/` (the OCI runtime's `--root`) go here.
    pub state_dir: PathBuf,
    /// The OCI runtime (default: `runc` from `PATH`).
    pub runtime: OciRuntime,
    /// The host's resolver configuration, copied into containers.
    pub host_resolv_conf: PathBuf,
}

impl RuntimeConfig {
    pub fn new(state_dir: impl Into<PathBuf>) -> RuntimeConfig {
        RuntimeConfig {
            state_dir: state_dir.into(),
            runtime: OciRuntime::default(),
            host_resolv_conf: PathBuf::from("/etc/resolv.conf"),
        }
    }
}

/// One process to run in a container.
#[derive(Clone, Debug)]
pub struct ExecRequest {
    /// Lower directories (snapshot `fs/` directories), topmost first. Empty
    /// for `FROM scratch`.
    pub lowers: Vec<PathBuf>,
    /// `argv`; must not be empty.
    pub args: Vec<String>,
    /// `KEY=value`; `PATH` and `HOME` are added when missing.
    pub env: Vec<String>,
    /// Absolute working directory, created (owned by the user) if missing.
    pub cwd: PathBuf,
    /// `USER`: `name`, `uid`, `name:group`, `uid:gid`…; `None` is root.
    pub user: Option<String>,
    pub network: Network,
    /// Defaults to [`DEFAULT_HOSTNAME`].
    pub hostname: Option<String>,
    /// `(name, address)` lines added to `/etc/hosts`.
    pub extra_hosts: Vec<(String, String)>,
    pub mounts: Vec<BindMount>,
    pub tmpfs: Vec<TmpfsMount>,
    pub resources: Resources,
    /// Receives stdout/stderr chunks as they come; output is discarded
    /// when `None`.
    pub output: Option<OutputSender>,
}

impl ExecRequest {
    /// A request with Docker's defaults: root, `/`, no network.
    pub fn new(lowers: Vec<PathBuf>, args: Vec<String>) -> ExecRequest {
        ExecRequest {
            lowers,
            args,
            env: Vec::new(),
            cwd: PathBuf::from("/"),
            user: None,
            network: Network::None,
            hostname: None,
            extra_hosts: Vec::new(),
            mounts: Vec::new(),
            tmpfs: Vec::new(),
            resources: Resources::default(),
            output: None,
        }
    }
}

/// How a container run ended.
#[derive(Debug)]
pub struct ExecResult {
    /// The container id (also its state directory's name).
    pub id: String,
    /// The process's exit code (128 + signal when killed).
    pub exit_code: i32,
    /// The changes the process made.
    pub upper: UpperDir,
}

/// A finished container's overlay upper directory. Removed (with the rest
/// of the container's state) on drop.
#[derive(Debug)]
pub struct UpperDir {
    upper: PathBuf,
    placeholders: Vec<PathBuf>,
    // Dropped last: removes the container directory.
    _dir: tempfile::TempDir,
}

impl UpperDir {
    /// The upper directory: overlay whiteouts and opaque directories
    /// included.
    pub fn path(&self) -> &Path {
        &self.upper
    }

    /// Mount points created for generated files and still present (see
    /// [`DiffOptions::skip_placeholders`]).
    pub fn placeholders(&self) -> &[PathBuf] {
        &self.placeholders
    }

    /// Writes the layer tar of the changes to `out` (see
    /// [`write_diff`]); the placeholders are skipped. Blocking: call it
    /// from a blocking thread.
    pub fn write_diff<W: Write>(
        &self,
        out: W,
        source_date_epoch: Option<i64>,
    ) -> Result<DiffSummary, DiffError> {
        let options = DiffOptions {
            source_date_epoch,
            skip_placeholders: self.placeholders.clone(),
        };
        write_diff(&self.upper, out, &options)
    }
}

/// Writes the layer tar of a container's upper directory (see
/// [`write_diff`]), leaving out the mount points of the generated files.
/// Blocking.
pub fn write_container_diff<W: Write>(
    upper: &Path,
    out: W,
    source_date_epoch: Option<i64>,
) -> Result<DiffSummary, DiffError> {
    let options = DiffOptions {
        source_date_epoch,
        skip_placeholders: GENERATED_FILES.iter().map(PathBuf::from).collect(),
    };
    write_diff(upper, out, &options)
}

/// Mends what killed kilns left in the runtime state at `state` (the
/// `state_dir` of a [`RuntimeConfig`]): kills their containers' processes,
/// unmounts their root filesystems and network namespaces, removes their
/// directories. Cheap when nothing is left; [`Runtime::new`] calls it.
pub fn reap_stale(state: &std::path::Path) {
    if !state.exists() {
        return;
    }
    network::reap_stale(&state.join("netns"));
    crate::reap::reap_stale_containers(&state.join("containers"), &state.join("runc"));
}

/// Runs containers over overlay snapshots with an OCI runtime.
#[derive(Clone, Debug)]
pub struct Runtime {
    containers: PathBuf,
    runc: Runc,
    host_resolv_conf: PathBuf,
    networks: NetworkPool,
}

impl Runtime {
    /// Creates the state directories if needed.
    pub fn new(config: RuntimeConfig) -> Result<Runtime> {
        let state = std::path::absolute(&config.state_dir)
            .map_err(|e| Error::io("resolve", &config.state_dir, e))?;
        let containers = state.join("containers");
        let runc_root = state.join("runc");
        for dir in [&containers, &runc_root] {
            std::fs::create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e))?;
        }
        let netns = state.join("netns");
        reap_stale(&state);
        Ok(Runtime {
            containers,
            runc: config.runtime.client(runc_root),
            host_resolv_conf: config.host_resolv_conf,
            networks: NetworkPool::new(&netns),
        })
    }

    /// The command line of the OCI runtime this runtime uses.
    pub fn runc(&self) -> &Runc {
        &self.runc
    }

    /// Mounts the root filesystem, runs the request's process to
    /// completion and unmounts. A non-zero exit is not an error; failing
    /// to start the process is ([`Error::Start`]). Cancelling `cancel`
    /// kills the container ([`Error::Cancelled`]).
    pub async fn run(
        &self,
        mut req: ExecRequest,
        cancel: &CancellationToken,
    ) -> Result<ExecResult> {
        if req.args.is_empty() {
            return Err(Error::Invalid {
                what: "command",
                reason: "no arguments".to_owned(),
            });
        }
        if !req.cwd.is_absolute() {
            return Err(Error::Invalid {
                what: "working directory",
                reason: format!("{} is not an absolute path", req.cwd.display()),
            });
        }
        // Before the mount and spec work, so the first grace period
        // overlaps it (see cgroup_warm).
        crate::cgroup_warm::warm_up();
        // Named after this process, so that a later kiln can tell when the
        // container's owner is gone (see reap).
        let prefix = format!("k{}-", network::owner_prefix());
        let dir = tempfile::Builder::new()
            .prefix(&prefix)
            .rand_bytes(15)
            .tempdir_in(&self.containers)
            .map_err(|e| Error::io("create container directory in", &self.containers, e))?;
        let id = dir
            .path()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let _span = tracing::debug_span!("container", %id).entered();

        let network = match req.network {
            Network::Default => match self.networks.acquire() {
                Ok(lease) => Some(lease),
                Err(e) => {
                    network::warn_fallback(&e);
                    req.network = Network::Host;
                    None
                }
            },
            Network::None | Network::Host => None,
        };
        // The upper directory becomes a snapshot the store syncs.
        let rootfs = OverlayRootfs::mount_volatile(dir.path(), &req.lowers)?;
        let netns = network.as_ref().map(NetworkLease::path);
        let prepared = self.prepare(&id, dir.path(), &rootfs, netns, &req);
        drop(_span);
        let (stubs, bundle) = prepared?;

        let outcome = self
            .runc
            .run(&id, &bundle, req.output.clone(), cancel)
            .await;

        drop(network);
        stubs.clean(rootfs.rootfs());
        rootfs.unmount()?;
        let exit_code = outcome?;

        let upper = dir.path().join("upper");
        let placeholders = GENERATED_FILES
            .iter()
            .map(PathBuf::from)
            .filter(|p| stubs.paths().contains(p) && upper.join(p).exists())
            .collect();
        Ok(ExecResult {
            id,
            exit_code,
            upper: UpperDir {
                upper,
                placeholders,
                _dir: dir,
            },
        })
    }

    /// Resolves the user, creates the working directory, writes the
    /// generated files and `config.json`; returns the mount stubs to clean
    /// and the bundle directory.
    fn prepare(
        &self,
        id: &str,
        dir: &Path,
        rootfs: &OverlayRootfs,
        netns: Option<&Path>,
        req: &ExecRequest,
    ) -> Result<(MountStubs, PathBuf)> {
        write_bundle(
            &BundleParams {
                id,
                dir,
                rootfs: rootfs.rootfs(),
                netns,
                host_resolv_conf: &self.host_resolv_conf,
                terminal: false,
                console_size: None,
                readonly_rootfs: false,
                keep_kernel_mount_points: true,
            },
            req,
        )
    }
}

/// Where and how [`write_bundle`] prepares a container.
pub(crate) struct BundleParams<'a> {
    pub id: &'a str,
    /// The container directory (generated files and `bundle/` go here).
    pub dir: &'a Path,
    /// The mounted root filesystem.
    pub rootfs: &'a Path,
    /// The private network namespace to join, for [`Network::Default`].
    pub netns: Option<&'a Path>,
    pub host_resolv_conf: &'a Path,
    pub terminal: bool,
    /// The size (rows, columns) the terminal starts with.
    pub console_size: Option<(u16, u16)>,
    pub readonly_rootfs: bool,
    /// Leave the `/proc`, `/sys` and `/dev` directories the OCI runtime
    /// creates in a root filesystem that lacks them: a build step's layer
    /// then has them, as BuildKit's (only stubs of the build's own mounts,
    /// `/etc/hosts` and the like, are removed).
    pub keep_kernel_mount_points: bool,
}

/// For a container in `dir`: resolves the user, creates the working directory, writes the
/// generated files and `config.json`; returns the mount stubs to clean
/// and the bundle directory.
pub(crate) fn write_bundle(
    p: &BundleParams<'_>,
    req: &ExecRequest,
) -> Result<(MountStubs, PathBuf)> {
    let (id, dir, root) = (p.id, p.dir, p.rootfs);
    let user = resolve_user(req.user.as_deref().unwrap_or(""), root)?;
    if inroot::mkdir_all(root, &req.cwd, user.uid, user.gid)
        .map_err(|e| Error::io("create working directory", &req.cwd, e))?
    {
        tracing::debug!(cwd = %req.cwd.display(), "created working directory");
    }

    let hostname = req
        .hostname
        .clone()
        .unwrap_or_else(|| DEFAULT_HOSTNAME.to_owned());
    let host_resolv = match std::fs::read_to_string(p.host_resolv_conf) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(Error::io("read", p.host_resolv_conf, e)),
    };
    let files = [
        ("hosts", spec::hosts_file(&hostname, &req.extra_hosts)),
        ("resolv.conf", spec::resolv_conf(&host_resolv, req.network)),
        ("hostname", format!("{hostname}\n")),
    ];
    for (name, content) in &files {
        let path = dir.join(name);
        std::fs::write(&path, content).map_err(|e| Error::io("write", &path, e))?;
    }

    let options = SpecOptions {
        rootfs: root.to_owned(),
        args: req.args.clone(),
        env: req.env.clone(),
        cwd: req.cwd.clone(),
        user,
        terminal: p.terminal,
        console_size: p.console_size,
        network: req.network,
        netns: p.netns.map(Path::to_owned),
        hostname,
        hosts_file: dir.join("hosts"),
        resolv_conf: dir.join("resolv.conf"),
        hostname_file: dir.join("hostname"),
        mounts: req.mounts.clone(),
        tmpfs: req.tmpfs.clone(),
        resources: req.resources.clone(),
        cgroups_path: Some(PathBuf::from(format!("/kiln/{id}"))),
        readonly_rootfs: p.readonly_rootfs,
    };
    let spec = spec::build_spec(&options)?;
    let kernel = |d: &Path| ["/proc", "/sys", "/dev"].iter().any(|k| d.starts_with(k));
    let destinations: Vec<PathBuf> = spec
        .mounts()
        .iter()
        .flatten()
        .map(|m| m.destination().clone())
        .filter(|d| !(p.keep_kernel_mount_points && kernel(d)))
        .collect();
    let stubs = MountStubs::record(root, destinations.iter().map(PathBuf::as_path))
        .map_err(|e| Error::io("inspect mount points in", root, e))?;

    let bundle = dir.join("bundle");
    std::fs::create_dir_all(&bundle).map_err(|e| Error::io("create directory", &bundle, e))?;
    let config = bundle.join("config.json");
    let json = serde_json::to_vec_pretty(&spec).map_err(Error::SpecJson)?;
    std::fs::write(&config, json).map_err(|e| Error::io("write", &config, e))?;
    Ok((stubs, bundle))
}
