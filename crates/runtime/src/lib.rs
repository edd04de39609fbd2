//! # kiln-runtime
//!
//! Runs processes inside images: every `RUN` step of a build and every
//! `kiln run`. Root filesystems are overlayfs mounts over the store's layer
//! snapshots; processes are described by an OCI runtime spec and run by an
//! OCI runtime.
//!
//! Owns: mounts, namespaces, the OCI runtime spec, container state.
//!
//! Must not depend on: the frontend, the solver or the registry.
//!
//! ## Pieces
//!
//! - [`rootfs`]: the overlay root ([`OverlayRootfs`]) over snapshot `fs/`
//!   directories, deep stacks included.
//! - [`spec`]: the OCI runtime spec with Docker's defaults.
//! - [`resolve_user`]: `USER` against the image's passwd and group files.
//! - [`oci`]: which OCI runtime runs containers ([`OciRuntime`]): the
//!   embedded one (youki's libcontainer in a helper process, [`embedded`])
//!   or a runc-compatible binary.
//! - [`runc`]: `runc run` in the foreground with streamed output (also
//!   how the embedded runtime's helper is driven).
//! - [`cgroup_warm`]: keeps container starts from waiting on the
//!   kernel's cgroup-migration lock.
//! - [`diff`]: an upper directory as a deterministic OCI layer tar.
//! - [`Runtime::run`]: all of it for one [`ExecRequest`].
//! - [`container`]: long-lived containers (`kiln run`, `ps`, `stop`, `logs`,
//!   `commit`): records under `<store>/containers/`, the supervisor, logs,
//!   the userland port proxy (see [`container::state`] for the layout).
//!
//! ## Container state
//!
//! ```text
//! <state>/
//!   runc/                  the OCI runtime's --root
//!   containers/<id>/       one per run, removed when its UpperDir drops
//!     rootfs/ upper/ work/ the overlay (see rootfs)
//!     hosts resolv.conf hostname
//!     bundle/config.json   bundle/runc.log
//! ```
//!
//! Everything here needs root (mounts, the OCI runtime).
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod cgroup_warm;
pub mod console;
pub mod container;
pub mod diff;
pub mod embedded;
mod error;
mod inroot;
pub mod network;
pub mod oci;
mod reap;
pub mod rootfs;
pub mod runc;
pub mod signals;
pub mod spec;
mod user;

pub use container::{
    DEFAULT_HOSTNAME, ExecRequest, ExecResult, Runtime, RuntimeConfig, UpperDir, reap_stale,
};
pub use diff::{DiffOptions, DiffSummary, write_diff};
pub use error::{DiffError, Error, Result, UserError};
pub use oci::OciRuntime;
pub use rootfs::OverlayRootfs;
pub use runc::{OutputChunk, OutputSender, Runc, Stream};
pub use spec::{BindMount, Network, Resources, TmpfsMount};
pub use tokio_util::sync::CancellationToken;
pub use user::{GroupEntry, PasswdEntry, ResolvedUser, parse_group, parse_passwd, resolve_user};
