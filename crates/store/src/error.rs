//! Error types of the store and of layer extraction.
//!
//! Messages never repeat their source: the chain is rendered by the caller.

use std::io;
use std::path::PathBuf;

use kiln_oci::digest::VerifyError;
use kiln_oci::{Digest, ReferenceError};

use crate::images::ImageId;

/// A `Result` whose error is the store's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors of [`Store`](crate::Store) operations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O operation on a path of the store failed.
    #[error("failed to {action} {path}")]
    Io {
        /// What was being done, e.g. `"create directory"`.
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// A layer's uncompressed content does not hash to the diff id the
    /// image's config gives it.
    #[error(
        "layer {layer} does not match the image's configuration: its content hashes to {actual}, the image says {expected}"
    )]
    DiffIdMismatch {
        layer: Digest,
        expected: Digest,
        actual: Digest,
    },

    /// A running kiln process uses the image, so it is not deleted.
    #[error("image {id} is being used by a running kiln process ({})", holders.iter().map(|p| format!("pid {p}")).collect::<Vec<_>>().join(", "))]
    ImageInUse { id: String, holders: Vec<u32> },

    /// The store was written by a newer (or unknown) kiln.
    #[error(
        "store at {root} has format version {found}, but this kiln supports version {supported}"
    )]
    UnsupportedVersion {
        root: PathBuf,
        found: String,
        supported: u32,
    },

    /// The store root exists and is not empty but has no `VERSION` file.
    #[error("{root} is not empty and is not a kiln store (no VERSION file)")]
    NotAStore { root: PathBuf },

    /// Only sha256 content is stored.
    #[error("unsupported digest algorithm in {digest}: the store only holds sha256 content")]
    UnsupportedAlgorithm { digest: Digest },

    /// Content written to the store did not match its descriptor. Nothing
    /// was stored.
    #[error("content for {expected} failed verification")]
    Verify {
        expected: Digest,
        #[source]
        source: VerifyError,
    },

    /// Streamed content went past its expected size; it was cut off and
    /// nothing was stored.
    #[error("content{} is larger than the expected {expected} bytes", digest.as_ref().map(|d| format!(" for {d}")).unwrap_or_default())]
    TooLarge {
        digest: Option<Digest>,
        expected: u64,
    },

    #[error("blob {digest} not found")]
    BlobNotFound { digest: Digest },

    /// A blob is larger than the caller's read limit.
    #[error("blob {digest} is {size} bytes, more than the limit of {limit} bytes")]
    BlobTooLarge {
        digest: Digest,
        size: u64,
        limit: u64,
    },

    /// A stored blob no longer hashes to its name.
    #[error("blob {digest} is corrupt: its content hashes to {actual}")]
    BlobCorrupt {
        digest: Digest,
        actual: Digest,
        path: PathBuf,
    },

    /// The image index could not be parsed.
    #[error("image index {path} is corrupt")]
    IndexCorrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    /// The image index was written by a newer kiln.
    #[error("image index {path} has version {found}, but this kiln supports version {supported}")]
    IndexVersion {
        path: PathBuf,
        found: u32,
        supported: u32,
    },

    #[error("failed to serialize {what}")]
    Serialize {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },

    /// No image matches a name, id or id prefix.
    #[error("no such image: {query}")]
    ImageNotFound { query: String },

    /// An image id is not in the index.
    #[error("no such image: {id}")]
    ImageIdNotFound { id: ImageId },

    /// An id prefix matches more than one image.
    #[error("short image id {prefix:?} is ambiguous: it matches {} images", candidates.len())]
    AmbiguousId {
        prefix: String,
        candidates: Vec<ImageId>,
    },

    #[error("invalid image reference {input:?}")]
    InvalidReference {
        input: String,
        #[source]
        source: ReferenceError,
    },

    /// `tag` needs a tag; digest references are recorded as repo digests.
    #[error("cannot tag with {reference}: it has a digest")]
    TagHasDigest { reference: String },

    /// The reference is not a tag of any image.
    #[error("no image is tagged {reference}")]
    TagNotFound { reference: String },

    /// An image record is inconsistent.
    #[error("invalid image record {id}: {reason}")]
    InvalidRecord { id: ImageId, reason: &'static str },

    /// Unpacking a layer into a snapshot failed.
    #[error("failed to unpack layer {layer} into snapshot {chain_id}")]
    Unpack {
        chain_id: Digest,
        layer: Digest,
        #[source]
        source: ExtractError,
    },

    /// Snapshot metadata could not be parsed.
    #[error("snapshot metadata {path} is corrupt")]
    SnapshotCorrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

impl Error {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Error {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

/// Errors of [`extract_layer`](crate::extract_layer).
///
/// Every variant about a tar entry names the entry as it appears in the
/// archive.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExtractError {
    /// The tar stream itself is malformed or could not be read.
    #[error("failed to read the layer tar stream")]
    Read {
        #[source]
        source: io::Error,
    },

    /// The layer stream is compressed with a format kiln does not read.
    #[error("unsupported layer compression: {format}")]
    UnsupportedCompression { format: &'static str },

    /// The destination directory could not be opened.
    #[error("failed to open extraction root {path}")]
    Root {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// An entry path is absolute or climbs out of the root with `..`.
    #[error("tar entry {entry:?}: {reason}")]
    UnsafePath { entry: String, reason: &'static str },

    /// A parent of the entry is a symbolic link; kiln never writes through one.
    #[error("tar entry {entry:?}: parent {component:?} is a symbolic link")]
    SymlinkInPath { entry: String, component: String },

    /// A parent of the entry exists and is not a directory.
    #[error("tar entry {entry:?}: parent {component:?} is not a directory")]
    NotADirectory { entry: String, component: String },

    /// A hard link points outside the layer root or at nothing.
    #[error("tar entry {entry:?}: hard link target {target:?} {reason}")]
    UnsafeLinkTarget {
        entry: String,
        target: String,
        reason: &'static str,
    },

    /// A whiteout names nothing usable (`.wh.`, `.wh..`).
    #[error("tar entry {entry:?}: invalid whiteout")]
    InvalidWhiteout { entry: String },

    /// A header field could not be decoded.
    #[error("tar entry {entry:?}: invalid header field {field}")]
    Header {
        entry: String,
        field: &'static str,
        #[source]
        source: io::Error,
    },

    /// A filesystem operation for an entry failed.
    #[error("tar entry {entry:?}: failed to {action}")]
    Io {
        entry: String,
        action: &'static str,
        #[source]
        source: io::Error,
    },

    /// The layer needs more space, or more files, than extraction may use
    /// ([`ExtractOptions::max_bytes`](crate::ExtractOptions::max_bytes),
    /// [`ExtractOptions::max_entries`](crate::ExtractOptions::max_entries)).
    /// Nothing past the entry was written.
    #[error(
        "tar entry {entry:?}: {}",
        budget_message(dest, *limit, *files, *free_space)
    )]
    Budget {
        entry: String,
        /// The extraction root.
        dest: PathBuf,
        limit: u64,
        /// The limit is on files created, else on bytes of file data.
        files: bool,
        /// The limit is what was free on the filesystem of `dest`, less a
        /// margin (rather than the caller's).
        free_space: bool,
    },
}

fn budget_message(dest: &std::path::Path, limit: u64, files: bool, free_space: bool) -> String {
    let dest = dest.display();
    match (files, free_space) {
        (false, true) => format!(
            "the archive needs more space than is free on the filesystem of {dest} (budget {limit} bytes of file data: the free space less a margin); free some space and try again"
        ),
        (true, true) => format!(
            "the archive needs more files than the filesystem of {dest} has free inodes for (budget {limit} files: the free inodes less a margin); free some and try again"
        ),
        (false, false) => format!(
            "the archive needs more than the {limit} bytes of file data allowed for extracting into {dest}"
        ),
        (true, false) => format!(
            "the archive needs more than the {limit} files allowed for extracting into {dest}"
        ),
    }
}
