//! Errors of the runtime. Messages never repeat their source: the chain is
//! rendered separately.

use std::io;
use std::path::{Path, PathBuf};

/// Anything that can go wrong preparing, running or cleaning up a
/// container.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A filesystem operation on the host failed.
    #[error("failed to {action} {}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The overlay root filesystem could not be mounted.
    #[error("failed to mount overlay root filesystem at {} ({lowers} lower directories)", target.display())]
    Mount {
        target: PathBuf,
        lowers: usize,
        #[source]
        source: io::Error,
    },
    /// More lower directories than overlayfs can stack.
    #[error("too many lower directories: {count} (overlayfs stacks at most {max})")]
    TooManyLowers { count: usize, max: usize },
    /// The root filesystem could not be unmounted.
    #[error("failed to unmount {}", target.display())]
    Unmount {
        target: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The request is malformed (empty argv, relative working directory…).
    #[error("invalid {what}: {reason}")]
    Invalid { what: &'static str, reason: String },
    /// The `USER` could not be resolved in the image.
    #[error(transparent)]
    User(#[from] UserError),
    /// The runtime spec could not be built.
    #[error("failed to build the OCI runtime spec")]
    Spec(#[source] oci_spec::OciSpecError),
    /// The runtime spec could not be serialized.
    #[error("failed to serialize the OCI runtime spec")]
    SpecJson(#[source] serde_json::Error),
    /// The OCI runtime binary could not be executed.
    #[error("failed to execute the OCI runtime {}", binary.display())]
    Spawn {
        binary: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The container was created but its process could not be started
    /// (missing executable, bad working directory…). `message` is the OCI
    /// runtime's, e.g. `exec: "foo": executable file not found in $PATH`.
    #[error("{message}")]
    Start { id: String, message: String },
    /// A management command of the OCI runtime (`kill`, `delete`,
    /// `pause`…) failed.
    #[error("OCI runtime {command} {id} failed: {message}")]
    Runc {
        command: &'static str,
        id: String,
        message: String,
    },
    /// The run was cancelled; the container was killed and deleted.
    #[error("container {id} was cancelled")]
    Cancelled { id: String },
    /// No container has this name, id or unique id prefix.
    #[error("No such container: {query}")]
    NoSuchContainer { query: String },
    /// `--name` names an existing container.
    #[error(
        "Conflict. The container name \"/{name}\" is already in use by container \"{id}\". You have to remove (or rename) that container to be able to reuse that name."
    )]
    NameInUse { name: String, id: String },
    /// A name Docker would not accept.
    #[error("Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")]
    InvalidName { name: String },
    /// `rm` without `-f` of a running container.
    #[error(
        "cannot remove container \"/{name}\": container is running: stop the container before removing or force remove"
    )]
    ContainerRunning { name: String },
    /// A signal for a container that is not running.
    #[error("container {id} is not running")]
    NotRunning { id: String },
    /// A container's `config.json` could not be read.
    #[error("failed to parse {}", path.display())]
    StateJson {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// A published port could not be bound on the host.
    #[error("Bind for {addr} failed: port is already allocated")]
    PortInUse {
        addr: String,
        #[source]
        source: io::Error,
    },
}

impl Error {
    pub(crate) fn io(action: &'static str, path: impl AsRef<Path>, source: io::Error) -> Error {
        Error::Io {
            action,
            path: path.as_ref().to_owned(),
            source,
        }
    }
}

/// `USER` resolution errors, with Docker's messages.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("unable to find user {user}: no matching entries in passwd file")]
    NoSuchUser { user: String },
    #[error("unable to find group {group}: no matching entries in group file")]
    NoSuchGroup { group: String },
    #[error("uids and gids must be in range 0-2147483647")]
    OutOfRange { id: String },
    #[error("failed to read {} in the root filesystem", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Errors writing a layer diff.
#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    #[error("failed to {action} {}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// `path` changed size while it was archived.
    #[error("{} changed size while being archived (expected {expected} bytes, read {actual})", path.display())]
    Changed {
        path: PathBuf,
        expected: u64,
        actual: u64,
    },
    #[error("failed to write the layer archive")]
    Write(#[source] io::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
