//! Errors of the build worker. Messages never repeat their source: the
//! chain is rendered separately.

use std::io;
use std::path::{Path, PathBuf};

/// Anything that can go wrong executing an op.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A snapshot's layer tar, written again, has another digest than its
    /// recorded diff id.
    #[error("the layer written from {} has digest {actual}, not its diff id {expected}", dir.display())]
    LayerMismatch {
        dir: PathBuf,
        expected: kiln_oci::Digest,
        actual: kiln_oci::Digest,
    },
    /// A filesystem operation failed.
    #[error("failed to {action} {}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Store(#[from] kiln_store::Error),
    #[error(transparent)]
    Image(#[from] kiln_store::ImageError),
    #[error(transparent)]
    Runtime(#[from] kiln_runtime::Error),
    #[error(transparent)]
    Registry(Box<kiln_registry::Error>),
    /// Writing a layer diff failed.
    #[error("failed to write the layer diff of {}", path.display())]
    Diff {
        path: PathBuf,
        #[source]
        source: kiln_runtime::DiffError,
    },
    /// A base image is neither in the store nor pullable.
    #[error("{reference}: image not found locally and no registry access")]
    ImageNotFound { reference: String },
    /// An image reference or platform in an op is malformed.
    #[error("invalid {what} {value:?}: {reason}")]
    Invalid {
        what: &'static str,
        value: String,
        reason: String,
    },
    /// A COPY/ADD source (or another path an action needs) does not exist.
    /// BuildKit's wording: `"/nomatch*": not found`.
    #[error("{path:?}: not found")]
    NotFound { path: String },
    /// A file action cannot be applied (e.g. several sources to a file).
    #[error("{message}")]
    Action { message: String },
    /// A process exited with a non-zero code (BuildKit's wording).
    #[error("process \"{command}\" did not complete successfully: exit code: {code}")]
    ProcessFailed { command: String, code: i32 },
    /// A required secret is not in the worker's configuration.
    #[error("secret {id}: not found")]
    SecretNotFound { id: String },
    /// A required SSH agent socket is not in the worker's configuration.
    #[error("no SSH agent socket configured for id {id:?}")]
    SshNotFound { id: String },
    /// A local source names a directory the worker was not given.
    #[error("local source {name:?} is not configured (known: {known})")]
    UnknownLocal { name: String, known: String },
    /// An exclude or include pattern is invalid.
    #[error("invalid pattern {pattern:?}: {reason}")]
    Pattern { pattern: String, reason: String },
    /// A diff op whose lower is not a prefix of its upper.
    #[error(
        "cannot compute the diff: the lower input ({lower} layers) is not a prefix of the upper input ({upper} layers); only diffs of a filesystem against one of its ancestors are supported"
    )]
    DiffUnsupported { lower: usize, upper: usize },
    /// An HTTP download failed.
    #[error("failed to download {url}")]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("failed to download {url}: {status}")]
    HttpStatus { url: String, status: String },
    #[error("checksum mismatch for {url}: expected {expected}, got {actual}")]
    Checksum {
        url: String,
        expected: String,
        actual: String,
    },
    /// The `git` binary is not installed.
    #[error("git source {remote}: the git binary was not found in PATH")]
    GitMissing { remote: String },
    /// A git command failed.
    #[error("git {command} failed for {remote}: {stderr}")]
    Git {
        remote: String,
        command: String,
        stderr: String,
    },
    /// Extracting an archive (`ADD`) failed.
    #[error("failed to unpack {}", path.display())]
    Unpack {
        path: PathBuf,
        #[source]
        source: kiln_store::ExtractError,
    },
    /// A cache record could not be written or read.
    #[error("cache record {} is invalid", path.display())]
    Record {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// The op was cancelled.
    #[error("cancelled")]
    Cancelled,
    /// A blocking task panicked or was aborted.
    #[error("a worker thread failed: {0}")]
    Join(String),
}

impl Error {
    pub(crate) fn io(action: &'static str, path: impl AsRef<Path>, source: io::Error) -> Error {
        Error::Io {
            action,
            path: path.as_ref().to_owned(),
            source,
        }
    }

    pub(crate) fn action(message: impl Into<String>) -> Error {
        Error::Action {
            message: message.into(),
        }
    }
}

impl From<kiln_registry::Error> for Error {
    fn from(e: kiln_registry::Error) -> Error {
        Error::Registry(Box::new(e))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Runs blocking work on tokio's blocking pool.
pub(crate) async fn blocking<T, F>(f: F) -> Result<T>
where
    F: FnOnce() -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Join(e.to_string()))?
}
