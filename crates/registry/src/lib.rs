//! # kiln-registry
//!
//! Talks to OCI distribution registries: pull, push, login, logout,
//! search, with Docker-compatible credentials and mirrors.
//!
//! Owns: HTTP transport (HTTPS, verified against the system's roots and
//! the host's `certs.d` CAs; for loopback and configured insecure hosts,
//! as Docker does, HTTPS without verification first and plain HTTP when
//! the server does not speak TLS; timeouts; a minimum transfer rate
//! measured over a sliding window; retries with backoff),
//! authentication (anonymous, Basic, Bearer tokens cached per registry and
//! scope), credentials (`~/.docker/config.json` and credential helpers,
//! read and written), and the distribution API (manifests, blobs, uploads,
//! mounts, tags, catalog) and Docker Hub's v1 search API.
//!
//! Blobs are streamed into the [`kiln_store::Store`], verified against
//! their digest as they arrive; a pulled layer is also decompressed as it
//! arrives and must hash to its `diff_id` in the image configuration
//! before it is stored. Manifests are stored and pushed as the exact
//! bytes received; nested indexes are followed at most
//! [`MAX_INDEX_DEPTH`] levels deep.
//!
//! Must not depend on: the frontend, the solver or the runtime.
//!
//! ```no_run
//! # async fn demo() -> Result<(), kiln_registry::Error> {
//! use kiln_registry::{Client, ClientConfig, CredentialStore, PullOptions};
//! let store = kiln_store::Store::open("/var/lib/kiln")?;
//! let client = Client::new(ClientConfig::default(), CredentialStore::from_env().ok())?;
//! let reference = kiln_oci::Reference::parse_docker_ref("busybox").unwrap();
//! let result = client
//!     .pull(&store, &reference, &PullOptions::default(), &|event| {
//!         tracing::info!(?event);
//!     })
//!     .await?;
//! tracing::info!("{}", result.status_line());
//! # Ok(()) }
//! ```
#![deny(clippy::print_stdout, clippy::print_stderr)]

mod auth;
mod catalog;
mod client;
pub mod credentials;
mod error;
pub mod manifest;
mod pull;
mod push;
mod rate;
mod search;

pub use auth::{Challenge, parse_challenge};
pub use client::{
    Client, ClientConfig, DEFAULT_MAX_MANIFEST_SIZE, api_host, install_crypto_provider,
    is_loopback_host,
};
pub use credentials::{Credential, CredentialError, CredentialStore};
pub use error::{DOCKER_HUB_RATE_LIMIT_HINT, Error, LOGIN_HINT, Result, Transferred};
pub use pull::{MAX_INDEX_DEPTH, PullEvent, PullOptions, PullProgress, PullResult};
pub use push::{PushEvent, PushProgress, PushResult};
pub use search::{DOCKER_HUB_INDEX_HOST, MAX_SEARCH_LIMIT, SearchResult};
