//! Errors of registry operations.
//!
//! Every variant carries its context (registry, repository, digest) in
//! fields. Messages never repeat their source: the caller renders the chain.

use std::time::Duration;

use kiln_oci::Digest;
use kiln_oci::digest::VerifyError;

/// A `Result` whose error is the registry's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What to suggest to a user whose request was refused for lack of
/// credentials.
pub const LOGIN_HINT: &str = "kiln login";

/// Docker Hub's explanation of its pull rate limit.
pub const DOCKER_HUB_RATE_LIMIT_HINT: &str = "You have reached your pull rate limit. \
You may increase the limit by authenticating and upgrading: https://www.docker.com/increase-rate-limit";

/// What a transfer moves, in [`Error::TransferStalled`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transferred {
    Blob(Digest),
    /// A manifest or index, by the tag or digest asked for.
    Manifest(String),
}

impl std::fmt::Display for Transferred {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Transferred::Blob(d) => write!(f, "{d}"),
            Transferred::Manifest(r) => write!(f, "manifest {r}"),
        }
    }
}

/// Errors of talking to a registry.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The registry does not know the tag or digest (or the repository).
    #[error("manifest for {registry}/{repository}:{reference} not found: manifest unknown")]
    ManifestUnknown {
        registry: String,
        repository: String,
        /// The tag or digest asked for.
        reference: String,
    },

    /// The registry wants credentials and we had none, or they were refused.
    #[error("unauthorized: authentication required for {registry}{}", repository.as_ref().map(|r| format!("/{r}")).unwrap_or_default())]
    Unauthorized {
        registry: String,
        repository: Option<String>,
        /// The registry's own message, if it gave one.
        message: Option<String>,
        /// What the user should run: [`LOGIN_HINT`].
        hint: &'static str,
    },

    /// Authenticated, but not allowed to do this.
    #[error("denied: requested access to {registry}/{repository} is denied{}", message.as_ref().map(|m| format!(": {m}")).unwrap_or_default())]
    Denied {
        registry: String,
        repository: String,
        message: Option<String>,
    },

    /// The registry rate-limits us (HTTP 429) and retrying did not help.
    #[error("toomanyrequests: {registry} refused the request for {repository}: {hint}")]
    TooManyRequests {
        registry: String,
        repository: String,
        retry_after: Option<Duration>,
        /// For Docker Hub, [`DOCKER_HUB_RATE_LIMIT_HINT`]; the registry's
        /// message otherwise.
        hint: String,
    },

    /// The TLS handshake with the registry failed (bad certificate, HTTP
    /// server on an HTTPS port, …).
    #[error("TLS handshake with {registry} failed")]
    Tls {
        registry: String,
        #[source]
        source: reqwest::Error,
    },

    /// Nothing listens at the registry's address.
    #[error("connection to {registry} refused ({url})")]
    ConnectionRefused {
        registry: String,
        url: String,
        #[source]
        source: reqwest::Error,
    },

    /// Connecting, or waiting for the next bytes of a response, took longer
    /// than the configured timeout.
    #[error("timed out talking to {registry} ({url})")]
    Timeout {
        registry: String,
        url: String,
        #[source]
        source: reqwest::Error,
    },

    /// Another network error (DNS, reset connection, truncated body…).
    #[error("request to {registry} failed ({url})")]
    Network {
        registry: String,
        url: String,
        #[source]
        source: reqwest::Error,
    },

    /// A blob's bytes did not match its digest or size. Nothing was stored.
    #[error("blob {digest} from {registry}/{repository} failed verification")]
    BlobDigestMismatch {
        registry: String,
        repository: String,
        digest: Digest,
        #[source]
        source: VerifyError,
    },

    /// A manifest's bytes did not hash to the digest asked for or announced.
    #[error("manifest from {registry}/{repository} has digest {actual}, expected {expected}")]
    ManifestDigestMismatch {
        registry: String,
        repository: String,
        expected: Digest,
        actual: Digest,
    },

    /// A manifest larger than the limit; refused without being stored.
    #[error("manifest {reference} from {registry}/{repository} is larger than {limit} bytes")]
    ManifestTooLarge {
        registry: String,
        repository: String,
        reference: String,
        limit: u64,
    },

    /// The manifest is of a kind kiln does not handle (schema 1, artifacts).
    #[error(
        "unsupported manifest media type {media_type:?} for {registry}/{repository}:{reference}"
    )]
    UnsupportedMediaType {
        registry: String,
        repository: String,
        reference: String,
        media_type: String,
    },

    /// A transfer moved fewer than
    /// [`ClientConfig::min_rate_bytes_per_sec`](crate::ClientConfig::min_rate_bytes_per_sec)
    /// bytes a second over the last
    /// [`min_rate_window`](crate::ClientConfig::min_rate_window).
    #[error("{} {what} {} {registry}/{repository}: transfer stalled: {rate} B/s over the last {} (minimum {minimum} B/s)",
        if *pushing { "pushing" } else { "pulling" },
        if *pushing { "to" } else { "from" },
        crate::rate::seconds(*window))]
    TransferStalled {
        registry: String,
        repository: String,
        /// The blob or manifest being moved.
        what: Transferred,
        /// An upload (push) rather than a download.
        pushing: bool,
        /// Bytes moved over the measured span.
        bytes: u64,
        /// The measured rate, bytes a second.
        rate: u64,
        /// The configured window.
        window: Duration,
        /// The configured minimum, bytes a second.
        minimum: u64,
    },

    /// A pulled layer does not uncompress to the `diff_id` the image
    /// configuration gives at its position. The image was not recorded.
    #[error(
        "layers from manifest don't match image configuration: layer {index} ({layer}) from {registry}/{repository} uncompresses to {actual}, the configuration expects {expected}"
    )]
    DiffIdMismatch {
        registry: String,
        repository: String,
        /// The layer's (compressed) digest.
        layer: Digest,
        /// Its position in the manifest, from 0.
        index: u32,
        expected: Digest,
        actual: Digest,
    },

    /// A pulled layer could not be uncompressed to check its `diff_id`.
    /// The image was not recorded.
    #[error("layer {layer} from {registry}/{repository} could not be uncompressed")]
    LayerUnreadable {
        registry: String,
        repository: String,
        layer: Digest,
        #[source]
        source: Box<kiln_store::ExtractError>,
    },

    /// Manifest indexes nested more than
    /// [`MAX_INDEX_DEPTH`](crate::MAX_INDEX_DEPTH) levels deep, or an index
    /// reached again through its own entries.
    #[error("manifest index {} in {registry}/{repository}: {digest}",
        if *cycle { "refers to itself".to_owned() } else { format!("nests too deeply (more than {limit} levels)") })]
    IndexNesting {
        registry: String,
        repository: String,
        /// The index that was one too many, or seen before.
        digest: Digest,
        /// Seen before (a loop) rather than too deep.
        cycle: bool,
        limit: usize,
    },

    /// A manifest or index could not be parsed.
    #[error("invalid manifest {reference} from {registry}/{repository}: {reason}")]
    InvalidManifest {
        registry: String,
        repository: String,
        reference: String,
        reason: String,
    },

    /// An index has no manifest for the wanted platform.
    #[error("no matching manifest for {platform} in the manifest list entries of {reference} (available: {})", available.join(", "))]
    NoMatchingPlatform {
        reference: String,
        platform: String,
        available: Vec<String>,
    },

    /// The registry answered with an unexpected status.
    #[error("{registry} answered {method} {url} with {status}{}", message.as_ref().map(|m| format!(": {m}")).unwrap_or_default())]
    Status {
        registry: String,
        method: String,
        url: String,
        status: u16,
        /// The distribution error code (`BLOB_UNKNOWN`, …), if any.
        code: Option<String>,
        message: Option<String>,
    },

    /// The registry answered with something that is not valid protocol.
    #[error("invalid response from {registry} ({url}): {reason}")]
    InvalidResponse {
        registry: String,
        url: String,
        reason: String,
    },

    /// A URL could not be built from the configuration or a `Location`.
    #[error("invalid URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },

    /// A certificate file (a `certs.d` CA) could not be read or parsed.
    #[error("invalid certificate file {}: {reason}", path.display())]
    Certificates {
        path: std::path::PathBuf,
        reason: String,
    },

    /// The HTTP client could not be created.
    #[error("failed to create the HTTP client")]
    Client {
        #[source]
        source: reqwest::Error,
    },

    /// The image to push is not in the local store.
    #[error("An image does not exist locally with the tag: {reference}")]
    ImageNotFoundLocally { reference: String },

    /// A store operation failed.
    #[error(transparent)]
    Store(#[from] kiln_store::Error),

    /// Reading an image document from the store failed.
    #[error(transparent)]
    Image(#[from] kiln_store::ImageError),

    /// Reading or writing credentials failed.
    #[error(transparent)]
    Credentials(#[from] crate::credentials::CredentialError),

    /// A background task panicked or was cancelled.
    #[error("internal task failed")]
    Task {
        #[source]
        source: tokio::task::JoinError,
    },
}

impl Error {
    /// A one-line suggestion for the user, when there is one.
    pub fn hint(&self) -> Option<String> {
        match self {
            Error::Unauthorized { registry, hint, .. } => Some(format!("{hint} {registry}")),
            Error::TooManyRequests { hint, .. } => Some(hint.clone()),
            Error::Tls { registry, .. } => Some(format!(
                "if {registry} serves plain HTTP or a self-signed certificate, list it in insecure-registries; \
                 if its certificate comes from a private CA, put the CA in certs.d/{registry}/ca.crt"
            )),
            _ => None,
        }
    }

    /// Whether retrying the same request may succeed. Not for
    /// [`Error::TransferStalled`]: a stall is retried at most once (see
    /// `Client::may_retry`).
    pub(crate) fn is_transient(&self) -> bool {
        match self {
            Error::ConnectionRefused { .. } | Error::Timeout { .. } | Error::Network { .. } => true,
            Error::Status { status, .. } => *status >= 500 || *status == 429,
            Error::TooManyRequests { .. } => true,
            _ => false,
        }
    }
}
