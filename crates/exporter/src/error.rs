//! Errors of saving and loading image archives.
//!
//! Messages never repeat their source: the chain is rendered by the caller.

use std::io;

use kiln_oci::digest::VerifyError;
use kiln_oci::{Digest, Reference, ReferenceError};
use kiln_store::{ExtractError, ImageId};

/// A `Result` whose error is the exporter's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors of [`save`](crate::save) and [`load`](crate::load).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A store operation failed (resolving an image, reading or writing a
    /// blob, writing an image record).
    #[error(transparent)]
    Store(#[from] kiln_store::Error),

    /// Writing the archive failed. The output is incomplete and must be
    /// discarded.
    #[error("failed to write the archive")]
    Write {
        #[source]
        source: io::Error,
    },

    /// Reading the archive failed: an I/O error, or the stream ended inside
    /// a member (a truncated archive; the source is then `UnexpectedEof`).
    #[error("failed to read the archive{}", member.as_ref().map(|m| format!(" at member {m:?}")).unwrap_or_default())]
    Read {
        member: Option<String>,
        #[source]
        source: io::Error,
    },

    /// Reading an image directory (an OCI layout, a `dir:` layout, an
    /// unpacked archive) failed.
    #[error("failed to read the image directory {}", path.display())]
    ReadDirectory {
        path: std::path::PathBuf,
        #[source]
        source: io::Error,
    },

    /// A tar header could not be read: a corrupt header, or a stream that
    /// ends inside one.
    #[error("failed to read the archive's next entry{}", after.as_ref().map(|m| format!(" after member {m:?}")).unwrap_or_default())]
    Header {
        after: Option<String>,
        #[source]
        source: io::Error,
    },

    /// The archive's compression could not be read.
    #[error("failed to decompress the archive")]
    Decompress {
        #[source]
        source: ExtractError,
    },

    /// An archive member did not match the digest its name or a
    /// descriptor promised.
    #[error("archive member {member:?} is corrupt")]
    CorruptMember {
        member: String,
        #[source]
        source: VerifyError,
    },

    /// A member holding a JSON document is larger than kiln accepts.
    #[error("archive member {member:?} is larger than the limit of {limit} bytes")]
    MemberTooLarge { member: String, limit: u64 },

    /// An OCI document breaks the image-spec's rules.
    #[error("{what} {location} is not a valid OCI document")]
    NotSpecCompliant {
        what: &'static str,
        location: String,
        #[source]
        source: kiln_oci::validate::ValidationError,
    },

    /// A JSON document (from the archive or the store) could not be parsed.
    #[error("{what} {location} is invalid")]
    InvalidDocument {
        /// `"image manifest"`, `"index.json"`, ….
        what: &'static str,
        /// The archive member or blob digest.
        location: String,
        #[source]
        source: serde_json::Error,
    },

    /// The archive has neither `index.json` nor `manifest.json`.
    #[error("not an image archive: it has neither index.json nor manifest.json")]
    NotAnImageArchive,

    /// The archive's image index and manifest list name no image.
    #[error("the archive contains no images")]
    NoImages,

    /// `oci-layout` names a layout version kiln does not read.
    #[error("unsupported OCI layout version {version:?}")]
    UnsupportedLayoutVersion { version: String },

    /// A document names a member the archive does not contain.
    #[error("archive member {path:?} (referenced by {referenced_by}) is missing")]
    MissingMember { path: String, referenced_by: String },

    /// A descriptor names a blob that is neither in the archive nor in the
    /// store.
    #[error("blob {digest} (referenced by {referenced_by}) is missing")]
    MissingBlob {
        digest: Digest,
        referenced_by: String,
    },

    /// A blob's size differs from its descriptor's.
    #[error("blob {digest} is {actual} bytes, but its descriptor says {expected}")]
    SizeMismatch {
        digest: Digest,
        expected: u64,
        actual: u64,
    },

    /// A descriptor has a media type kiln cannot handle here.
    #[error("{digest} has unsupported media type {media_type:?} for {role}")]
    UnsupportedMediaType {
        digest: Digest,
        media_type: String,
        /// `"an image"`, `"a config"`, ….
        role: &'static str,
    },

    /// An index in the archive has no image the host can run.
    #[error("index {digest} has no image for {platform} (it has: {})", available.join(", "))]
    NoMatchingPlatform {
        digest: Digest,
        platform: String,
        /// The platforms the index offers, `os/arch[/variant]`.
        available: Vec<String>,
    },

    /// Indexes nest deeper than kiln follows.
    #[error("index {digest} nests indexes more than {limit} deep")]
    IndexTooDeep { digest: Digest, limit: usize },

    /// The config's `rootfs.diff_ids` and the manifest's layers disagree
    /// in number.
    #[error(
        "image {config}: the config lists {diff_ids} diff ids but the manifest has {layers} layers"
    )]
    LayerCountMismatch {
        config: Digest,
        diff_ids: usize,
        layers: usize,
    },

    /// An uncompressed layer does not hash to the diff id its config lists.
    #[error(
        "layer {layer} of image {config}: its uncompressed content is {actual}, but the config says {expected}"
    )]
    DiffIdMismatch {
        config: Digest,
        layer: String,
        expected: Digest,
        actual: Digest,
    },

    /// A stored blob changed or is shorter than recorded while it was
    /// being exported.
    #[error("blob {digest} in the store is corrupt")]
    CorruptBlob {
        digest: Digest,
        #[source]
        source: VerifyError,
    },

    /// Reading a stored blob failed.
    #[error("failed to read blob {digest} from the store")]
    ReadBlob {
        digest: Digest,
        #[source]
        source: io::Error,
    },

    /// A stored layer blob could not be decompressed for a docker-archive.
    #[error("failed to decompress layer {digest}")]
    DecompressLayer {
        digest: Digest,
        #[source]
        source: ExtractError,
    },

    /// A temporary file for an uncompressed layer could not be written.
    #[error("failed to spool the uncompressed copy of layer {digest}")]
    Spool {
        digest: Digest,
        #[source]
        source: io::Error,
    },

    /// A tag in the archive is not a valid reference.
    #[error("invalid image reference {input:?} in the archive")]
    InvalidReference {
        input: String,
        #[source]
        source: ReferenceError,
    },

    /// A document could not be serialised.
    #[error("failed to serialize {what}")]
    Serialize {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },

    /// A selected image could not be found in the store.
    #[error("no such image: {query}")]
    ImageNotFound { query: String },

    /// The image's manifest in the store is not a single-image manifest.
    #[error("image {id}: manifest {manifest} has unsupported media type {media_type:?}")]
    UnsupportedManifest {
        id: ImageId,
        manifest: Digest,
        media_type: String,
    },
    /// A layer's source could not be opened.
    #[error("failed to open layer #{layer}{}", path.as_ref().map(|p| format!(" at {}", p.display())).unwrap_or_default())]
    OpenLayer {
        /// Index into the layers given.
        layer: usize,
        path: Option<std::path::PathBuf>,
        #[source]
        source: io::Error,
    },

    /// Reading a layer's uncompressed tar failed.
    #[error("failed to read layer #{layer}")]
    ReadLayer {
        layer: usize,
        #[source]
        source: io::Error,
    },

    /// Compressing a layer failed.
    #[error("failed to compress layer #{layer}")]
    Compress {
        layer: usize,
        #[source]
        source: io::Error,
    },

    /// A layer does not hash to the diff id it was given with.
    #[error("layer #{layer} is {actual}, but its diff id was given as {expected}")]
    LayerDiffIdMismatch {
        layer: usize,
        expected: Digest,
        actual: Digest,
    },

    /// The compression level is out of range for the compression.
    #[error("compression level {level} is not valid for {compression} (allowed: {min}..={max})")]
    InvalidCompressionLevel {
        compression: &'static str,
        level: i32,
        min: i32,
        max: i32,
    },

    /// `SOURCE_DATE_EPOCH` is out of the representable time range.
    #[error("SOURCE_DATE_EPOCH {epoch} is out of range")]
    InvalidSourceDateEpoch { epoch: i64 },

    /// Applying a layer to an export directory failed.
    #[error("failed to apply layer #{layer} to {}", dest.display())]
    ApplyLayer {
        layer: usize,
        dest: std::path::PathBuf,
        #[source]
        source: ExtractError,
    },

    /// A filesystem operation of an export failed.
    #[error("failed to {action} {}", path.display())]
    ExportIo {
        action: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: io::Error,
    },

    /// The image to export no longer holds one of its tags.
    #[error("tag {tag} no longer names image {id}")]
    TagMoved { tag: Reference, id: ImageId },
}

impl Error {
    pub(crate) fn write(source: io::Error) -> Error {
        Error::Write { source }
    }
}
