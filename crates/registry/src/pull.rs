//! Pulling: reference → manifest (via an index, for the wanted platform;
//! nested indexes at most [`MAX_INDEX_DEPTH`] deep) → config and layers
//! streamed into the store, verified as they arrive: each blob against its
//! digest and size, and each layer, uncompressed on a second thread while
//! it downloads, against the configuration's `diff_id` at its position.
//! A layer is stored only once both match, and the image is recorded only
//! once every layer is stored. Layers already in the store are not
//! checked again (they were when they were pulled).

use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use kiln_oci::digest::{DigestVerifier, Sha256Writer, VerifyError};
use kiln_oci::{Digest, Platform, Reference};
use kiln_store::{Compression, ImageRecord, Store};
use reqwest::header::{self, HeaderValue};
use reqwest::{Method, StatusCode};

use crate::client::{Client, Endpoint, Target, classify};
use crate::error::{Error, Result, Transferred};
use crate::manifest::{
    self, Descriptor, Document, MANIFEST_ACCEPT, is_image_manifest, is_index, select_platform,
};
use crate::rate::{Stall, Watchdog, next_chunk};

/// How many manifest indexes deep a pull follows nested indexes (the
/// index a tag names counts as one).
pub const MAX_INDEX_DEPTH: usize = 4;

/// Per-layer progress of a pull.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PullProgress {
    /// Queued behind other downloads.
    Waiting,
    Downloading {
        current: u64,
        total: u64,
    },
    /// All bytes received; the digest is being checked.
    Verifying,
    DownloadComplete,
    /// The layer is in the store.
    PullComplete,
    /// The layer was already in the store.
    AlreadyExists,
}

/// A progress event: which layer, and what happened to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PullEvent {
    pub layer: Digest,
    pub progress: PullProgress,
}

/// Options of [`Client::pull`].
#[derive(Clone, Debug, Default)]
pub struct PullOptions {
    /// The platform to pick from an index; the host's by default.
    pub platform: Option<Platform>,
}

/// What a pull did.
#[derive(Clone, Debug)]
pub struct PullResult {
    /// The normalised reference pulled.
    pub reference: Reference,
    /// The digest the reference resolved to (an index's digest for
    /// multi-platform images): the repo digest.
    pub digest: Digest,
    /// The image manifest's digest.
    pub manifest_digest: Digest,
    /// The stored record.
    pub image: ImageRecord,
    /// Whether anything changed: `Downloaded newer image for …` when true,
    /// `Image is up to date for …` when false.
    pub updated: bool,
}

impl PullResult {
    /// Docker's closing status line.
    pub fn status_line(&self) -> String {
        if self.updated {
            format!(
                "Status: Downloaded newer image for {}",
                self.reference.familiar_string()
            )
        } else {
            format!(
                "Status: Image is up to date for {}",
                self.reference.familiar_string()
            )
        }
    }
}

/// A fetched manifest or index.
struct Fetched {
    bytes: Vec<u8>,
    digest: Digest,
    media_type: String,
    doc: Document,
}

impl Client {
    /// Pulls `reference` into `store`, reporting per-layer progress to
    /// `progress`. Docker Hub references go to the configured mirrors
    /// first, in order, then to Docker Hub.
    pub async fn pull(
        &self,
        store: &Store,
        reference: &Reference,
        options: &PullOptions,
        progress: &(dyn Fn(PullEvent) + Send + Sync),
    ) -> Result<PullResult> {
        let reference = normalize(reference);
        let upstream = self.endpoint(reference.registry_host()).await?;
        let mut endpoints = Vec::new();
        if reference.is_docker_hub() {
            endpoints.extend(self.mirror_endpoints()?);
        }
        endpoints.push(upstream);
        let last = endpoints.len() - 1;
        for (i, ep) in endpoints.iter().enumerate() {
            match self
                .pull_from(ep, store, &reference, options, progress)
                .await
            {
                Ok(r) => return Ok(r),
                Err(e) if i < last => {
                    tracing::warn!(mirror = %ep.base, error = %e, "mirror failed; trying the next endpoint");
                }
                Err(e) => return Err(e),
            }
        }
        unreachable!("the endpoint list always ends with the upstream registry")
    }

    /// [`Client::pull_from_inner`]; a pull that fails deletes the blobs
    /// it added that no image uses (its config, the layers it fetched).
    async fn pull_from(
        &self,
        ep: &Endpoint,
        store: &Store,
        reference: &Reference,
        options: &PullOptions,
        progress: &(dyn Fn(PullEvent) + Send + Sync),
    ) -> Result<PullResult> {
        let mark = store.created_mark();
        let result = self
            .pull_from_inner(ep, store, reference, options, progress)
            .await;
        if result.is_err()
            && let Err(e) = store.discard_created_since(mark)
        {
            tracing::warn!(error = %e, "failed to delete the blobs of a failed pull");
        }
        result
    }

    /// Checks that the layers of `layers` the store already has (those not
    /// in `missing`) uncompress to their `diff_ids`. A pairing another
    /// image of the store already has (checked when it came in) is taken
    /// as it is; others are hashed from the stored blob.
    async fn check_present_diff_ids(
        &self,
        ep: &Endpoint,
        repo: &str,
        store: &Store,
        layers: &[Descriptor],
        diff_ids: &[Digest],
        missing: &[&Descriptor],
    ) -> Result<()> {
        let mut known: std::collections::HashSet<(Digest, Digest)> = Default::default();
        let mut looked = false;
        let mut computed: std::collections::HashMap<Digest, Digest> = Default::default();
        for (index, (layer, expected)) in layers.iter().zip(diff_ids).enumerate() {
            if missing.iter().any(|m| m.digest == layer.digest) {
                continue;
            }
            if &layer.digest == expected {
                continue;
            }
            if !looked {
                looked = true;
                for record in store.images()? {
                    if let Ok(docs) = store.image_docs(&record) {
                        known.extend(docs.layers.into_iter().zip(docs.config.rootfs.diff_ids));
                    }
                }
            }
            if known.contains(&(layer.digest.clone(), expected.clone())) {
                continue;
            }
            let actual = match computed.get(&layer.digest) {
                Some(d) => d.clone(),
                None => {
                    let (store2, digest) = (store.clone(), layer.digest.clone());
                    let hashed = tokio::task::spawn_blocking(
                        move || -> Result<Digest, kiln_store::ExtractError> {
                            let blob = store2.open_blob(&digest).map_err(|e| {
                                kiln_store::ExtractError::Read {
                                    source: io::Error::other(e),
                                }
                            })?;
                            let (_, mut stream) = kiln_store::decompress(blob)?;
                            let mut hasher = Sha256Writer::default();
                            io::copy(&mut stream, &mut hasher)
                                .map_err(|source| kiln_store::ExtractError::Read { source })?;
                            Ok(hasher.finish().0)
                        },
                    )
                    .await
                    .map_err(|e| Error::LayerUnreadable {
                        registry: ep.host.clone(),
                        repository: repo.to_owned(),
                        layer: layer.digest.clone(),
                        source: Box::new(kiln_store::ExtractError::Read {
                            source: io::Error::other(e.to_string()),
                        }),
                    })?;
                    let d = hashed.map_err(|source| Error::LayerUnreadable {
                        registry: ep.host.clone(),
                        repository: repo.to_owned(),
                        layer: layer.digest.clone(),
                        source: Box::new(source),
                    })?;
                    computed.insert(layer.digest.clone(), d.clone());
                    d
                }
            };
            if &actual != expected {
                return Err(Error::DiffIdMismatch {
                    registry: ep.host.clone(),
                    repository: repo.to_owned(),
                    layer: layer.digest.clone(),
                    index: u32::try_from(index).unwrap_or(u32::MAX),
                    expected: expected.clone(),
                    actual,
                });
            }
        }
        Ok(())
    }

    async fn pull_from_inner(
        &self,
        ep: &Endpoint,
        store: &Store,
        reference: &Reference,
        options: &PullOptions,
        progress: &(dyn Fn(PullEvent) + Send + Sync),
    ) -> Result<PullResult> {
        let repo = reference.path().to_owned();
        let tag_or_digest = match (reference.digest(), reference.tag()) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.to_owned(),
            (None, None) => "latest".to_owned(),
        };
        let top = self
            .fetch_manifest(ep, &repo, &tag_or_digest, reference.digest())
            .await?;
        let mut documents = vec![(top.bytes.clone(), top.digest.clone())];
        let wanted = options.platform.clone().unwrap_or_else(Platform::host);
        let image = self
            .resolve_image(
                ep,
                &repo,
                reference,
                &tag_or_digest,
                top,
                &wanted,
                &mut documents,
            )
            .await?;
        let invalid = |reason: &str| Error::InvalidManifest {
            registry: ep.host.clone(),
            repository: repo.clone(),
            reference: image.digest.to_string(),
            reason: reason.to_owned(),
        };
        let config = image
            .doc
            .config
            .clone()
            .ok_or_else(|| invalid("no config descriptor"))?;
        let layers = image.doc.layers.clone().unwrap_or_default();

        // Config first (small, and not shown), then the layers in parallel.
        let mut updated = false;
        if !store.has_blob(&config.digest)? {
            self.download_blob(ep, &repo, store, &config, None, None)
                .await?;
            updated = true;
        }
        // As `docker pull`: a config kiln cannot read (a value of the wrong
        // type; `null` and missing fields are fine) or one that names
        // other layers than the manifest fails the pull, rather than
        // leaving an image record nothing can use.
        let image_config = store.read_config(&config.digest)?;
        if image_config.rootfs.diff_ids.len() != layers.len() {
            return Err(invalid(&format!(
                "layers from manifest don't match image configuration ({} layers, {} diff ids)",
                layers.len(),
                image_config.rootfs.diff_ids.len()
            )));
        }
        for layer in &layers {
            let present = store.has_blob(&layer.digest)?;
            progress(PullEvent {
                layer: layer.digest.clone(),
                progress: if present {
                    PullProgress::AlreadyExists
                } else {
                    PullProgress::Waiting
                },
            });
        }
        let missing: Vec<&Descriptor> = {
            let mut v = Vec::new();
            for l in &layers {
                if !store.has_blob(&l.digest)?
                    && !v.iter().any(|m: &&Descriptor| m.digest == l.digest)
                {
                    v.push(l);
                }
            }
            v
        };
        updated |= !missing.is_empty();
        // Layers the store has are checked too: the store holds blobs, not
        // which diff id each is, and a config may lie about any of them.
        self.check_present_diff_ids(
            ep,
            &repo,
            store,
            &layers,
            &image_config.rootfs.diff_ids,
            &missing,
        )
        .await?;
        let concurrency = self.inner.config.concurrency.max(1);
        let repo_ref = repo.as_str();
        let (layers_ref, diff_ids) = (&layers, &image_config.rootfs.diff_ids);
        let mut downloads = futures::stream::iter(missing.into_iter().map(|layer| async move {
            // Every position of the layer in the manifest: a layer listed
            // twice must uncompress to the diff id of both.
            let expected: Vec<(usize, Digest)> = layers_ref
                .iter()
                .zip(diff_ids)
                .enumerate()
                .filter(|(_, (l, _))| l.digest == layer.digest)
                .map(|(i, (_, d))| (i, d.clone()))
                .collect();
            self.download_blob(ep, repo_ref, store, layer, Some(&expected), Some(progress))
                .await?;
            progress(PullEvent {
                layer: layer.digest.clone(),
                progress: PullProgress::PullComplete,
            });
            Ok::<_, Error>(())
        }))
        .buffer_unordered(concurrency);
        while let Some(result) = downloads.next().await {
            result?;
        }
        drop(downloads);
        for layer in &layers {
            self.remember_blob_source(&ep.host, &layer.digest, &repo);
        }
        self.remember_blob_source(&ep.host, &config.digest, &repo);

        // Documents last: the image becomes visible only once complete.
        for (bytes, digest) in &documents {
            if !store.has_blob(digest)? {
                store.write_blob(bytes.as_slice(), Some(digest), Some(bytes.len() as u64))?;
            }
        }
        let repo_digest = reference.name_only().with_digest(documents[0].1.clone());
        let tag = reference.digest().is_none().then(|| reference.clone());
        let before = store
            .images()?
            .into_iter()
            .find(|r| r.config_digest == config.digest);
        let already = before.as_ref().is_some_and(|r| {
            r.manifest_digest == image.digest
                && r.repo_digests.contains(&repo_digest)
                && tag.as_ref().is_none_or(|t| r.tags.contains(t))
        });
        updated |= !already;
        let mut record = ImageRecord::new(image.digest.clone(), config.digest.clone());
        record.tags = tag.into_iter().collect();
        record.repo_digests = vec![repo_digest];
        let record = store.put_image(record)?;
        tracing::info!(reference = %reference, digest = %documents[0].1, updated, "pulled");
        Ok(PullResult {
            reference: reference.clone(),
            digest: documents[0].1.clone(),
            manifest_digest: image.digest,
            image: record,
            updated,
        })
    }

    /// The image manifest for `wanted` that `top` leads to: `top` itself,
    /// or the entry an index picks, following indexes nested in indexes
    /// (an index entry is taken only when no image manifest of this level
    /// matches) at most [`MAX_INDEX_DEPTH`] levels deep. Every index on
    /// the way is added to `documents`.
    #[allow(clippy::too_many_arguments)]
    async fn resolve_image(
        &self,
        ep: &Endpoint,
        repo: &str,
        reference: &Reference,
        tag_or_digest: &str,
        top: Fetched,
        wanted: &Platform,
        documents: &mut Vec<(Vec<u8>, Digest)>,
    ) -> Result<Fetched> {
        let mut current = top;
        let mut name = tag_or_digest.to_owned();
        let mut seen = vec![current.digest.clone()];
        loop {
            if is_image_manifest(&current.media_type) {
                return Ok(current);
            }
            if !is_index(&current.media_type) {
                return Err(self.unsupported(ep, repo, &name, &current));
            }
            let entries = current.doc.manifests.clone().unwrap_or_default();
            let chosen = select_platform(&entries, wanted)
                .or_else(|| select_nested_index(&entries, wanted))
                .ok_or_else(|| Error::NoMatchingPlatform {
                    reference: reference.familiar_string(),
                    platform: wanted.to_string(),
                    available: manifest::platforms(&entries),
                })?;
            let nesting = |cycle| Error::IndexNesting {
                registry: ep.host.clone(),
                repository: repo.to_owned(),
                digest: chosen.digest.clone(),
                cycle,
                limit: MAX_INDEX_DEPTH,
            };
            if seen.contains(&chosen.digest) {
                return Err(nesting(true));
            }
            // `seen` holds the indexes so far: one more may only be an
            // image manifest.
            if seen.len() >= MAX_INDEX_DEPTH && is_index(&chosen.media_type) {
                return Err(nesting(false));
            }
            tracing::debug!(digest = %chosen.digest, platform = %wanted, "selected manifest from index");
            let child = self
                .fetch_manifest(ep, repo, chosen.digest.as_str(), Some(&chosen.digest))
                .await?;
            if is_index(&child.media_type) && seen.len() >= MAX_INDEX_DEPTH {
                return Err(nesting(false));
            }
            seen.push(child.digest.clone());
            documents.push((child.bytes.clone(), child.digest.clone()));
            name = chosen.digest.to_string();
            current = child;
        }
    }

    fn unsupported(&self, ep: &Endpoint, repo: &str, reference: &str, f: &Fetched) -> Error {
        Error::UnsupportedMediaType {
            registry: ep.host.clone(),
            repository: repo.to_owned(),
            reference: reference.to_owned(),
            media_type: f.media_type.clone(),
        }
    }

    /// Fetches a manifest or index by tag or digest, refusing documents
    /// over the size limit and checking the digest (the one asked for, or
    /// the one the registry announces).
    async fn fetch_manifest(
        &self,
        ep: &Endpoint,
        repo: &str,
        reference: &str,
        expected: Option<&Digest>,
    ) -> Result<Fetched> {
        let url = ep.url(&format!("v2/{repo}/manifests/{reference}"))?;
        let scopes = [format!("repository:{repo}:pull")];
        let target = Target {
            repository: repo,
            manifest: Some(reference),
        };
        let limit = self.inner.config.max_manifest_size;
        let too_large = || Error::ManifestTooLarge {
            registry: ep.host.clone(),
            repository: repo.to_owned(),
            reference: reference.to_owned(),
            limit,
        };
        let resp = self
            .send(ep, &scopes, Method::GET, &url, &|rb| {
                Ok(rb.header(header::ACCEPT, HeaderValue::from_static(MANIFEST_ACCEPT)))
            })
            .await?;
        let resp = self
            .check(&ep.host, Method::GET, resp, &[StatusCode::OK], target)
            .await?;
        if resp.content_length().is_some_and(|n| n > limit) {
            return Err(too_large());
        }
        let content_type = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let announced = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<Digest>().ok());
        let url_text = resp.url().to_string();
        let mut bytes = Vec::new();
        let mut stream = resp.bytes_stream();
        let mut watchdog = Watchdog::new(&self.inner.config);
        while let Some(chunk) = next_chunk(&mut stream, &mut watchdog)
            .await
            .map_err(|stall| {
                self.stalled(ep, repo, Transferred::Manifest(reference.to_owned()), stall)
            })?
        {
            let chunk = chunk.map_err(|e| classify(&ep.host, &url_text, e))?;
            if (bytes.len() + chunk.len()) as u64 > limit {
                return Err(too_large());
            }
            bytes.extend_from_slice(&chunk);
        }
        let digest = Digest::sha256(&bytes);
        for want in expected.into_iter().chain(announced.as_ref()) {
            if want.algorithm() == digest.algorithm() && *want != digest {
                return Err(Error::ManifestDigestMismatch {
                    registry: ep.host.clone(),
                    repository: repo.to_owned(),
                    expected: want.clone(),
                    actual: digest,
                });
            }
        }
        let doc = Document::parse(&bytes).map_err(|reason| Error::InvalidManifest {
            registry: ep.host.clone(),
            repository: repo.to_owned(),
            reference: reference.to_owned(),
            reason,
        })?;
        let media_type = doc.effective_media_type(content_type.as_deref());
        tracing::debug!(registry = %ep.host, %repo, %reference, %digest, %media_type, "fetched manifest");
        Ok(Fetched {
            bytes,
            digest,
            media_type,
            doc,
        })
    }

    /// Downloads a blob into the store, retrying transient failures (a
    /// stall at most once). A failed attempt leaves nothing visible. With
    /// `diff_ids` (a layer: its positions in the manifest and the diff ids
    /// the configuration gives there), the blob is uncompressed as it
    /// arrives and stored only if it hashes to each of them.
    async fn download_blob(
        &self,
        ep: &Endpoint,
        repo: &str,
        store: &Store,
        desc: &Descriptor,
        diff_ids: Option<&[(usize, Digest)]>,
        progress: Option<&(dyn Fn(PullEvent) + Send + Sync)>,
    ) -> Result<()> {
        let mut attempt = 0;
        let mut stalls = 0;
        loop {
            match self
                .try_download_blob(ep, repo, store, desc, diff_ids, progress)
                .await
            {
                Ok(()) => return Ok(()),
                Err(e) if self.may_retry(&e, attempt, &mut stalls) => {
                    let delay = self.backoff(attempt);
                    tracing::warn!(digest = %desc.digest, error = %e, ?delay, "blob download failed; retrying");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn try_download_blob(
        &self,
        ep: &Endpoint,
        repo: &str,
        store: &Store,
        desc: &Descriptor,
        diff_ids: Option<&[(usize, Digest)]>,
        progress: Option<&(dyn Fn(PullEvent) + Send + Sync)>,
    ) -> Result<()> {
        let url = ep.url(&format!("v2/{repo}/blobs/{}", desc.digest))?;
        let scopes = [format!("repository:{repo}:pull")];
        let resp = self
            .send(ep, &scopes, Method::GET, &url, &|rb| Ok(rb))
            .await?;
        let resp = self
            .check(
                &ep.host,
                Method::GET,
                resp,
                &[StatusCode::OK],
                Target {
                    repository: repo,
                    manifest: None,
                },
            )
            .await?;
        let url_text = resp.url().to_string();
        let total = desc.size;
        let report = |p: PullProgress| {
            if let Some(f) = progress {
                f(PullEvent {
                    layer: desc.digest.clone(),
                    progress: p,
                });
            }
        };
        report(PullProgress::Downloading { current: 0, total });

        // The store writes synchronously: feed it from a blocking task
        // through a bounded channel, so hashing, uncompressing and disk
        // writes stay off the async workers.
        let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(16);
        let writer_store = store.clone();
        let digest = desc.digest.clone();
        let diff_ids = diff_ids.map(<[_]>::to_vec);
        let writer = tokio::task::spawn_blocking(move || match diff_ids {
            Some(diff_ids) => write_layer(&writer_store, rx, &digest, total, &diff_ids),
            None => write_blob(&writer_store, rx, &digest, total),
        });
        let mut stream = resp.bytes_stream();
        let mut watchdog = Watchdog::new(&self.inner.config);
        let mut received = 0u64;
        let mut last_report = Instant::now();
        let mut net_error = None;
        loop {
            let chunk = match next_chunk(&mut stream, &mut watchdog).await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(stall) => {
                    net_error =
                        Some(self.stalled(ep, repo, Transferred::Blob(desc.digest.clone()), stall));
                    let _ = tx.send(Err(io::Error::other("the download stalled"))).await;
                    break;
                }
            };
            match chunk {
                Ok(chunk) => {
                    received += chunk.len() as u64;
                    if tx.send(Ok(chunk)).await.is_err() {
                        break; // the writer gave up (too much data)
                    }
                    if last_report.elapsed() >= Duration::from_millis(100) || received >= total {
                        last_report = Instant::now();
                        report(PullProgress::Downloading {
                            current: received.min(total),
                            total,
                        });
                    }
                }
                Err(e) => {
                    let _ = tx
                        .send(Err(io::Error::other("the download was interrupted")))
                        .await;
                    net_error = Some(classify(&ep.host, &url_text, e));
                    break;
                }
            }
        }
        drop(tx);
        drop(stream);
        report(PullProgress::Verifying);
        let written = writer.await.map_err(|source| Error::Task { source })?;
        if let Some(e) = net_error {
            return Err(e);
        }
        let mismatch = |source| Error::BlobDigestMismatch {
            registry: ep.host.clone(),
            repository: repo.to_owned(),
            digest: desc.digest.clone(),
            source,
        };
        match written {
            Ok(()) => {}
            Err(WriteFailure::Verify(source)) => return Err(mismatch(source)),
            Err(WriteFailure::TooLarge) => {
                return Err(mismatch(VerifyError::SizeMismatch {
                    expected: total,
                    actual: received,
                }));
            }
            Err(WriteFailure::Store(e)) => return Err(e.into()),
            Err(WriteFailure::DiffId {
                index,
                expected,
                actual,
            }) => {
                return Err(Error::DiffIdMismatch {
                    registry: ep.host.clone(),
                    repository: repo.to_owned(),
                    layer: desc.digest.clone(),
                    index,
                    expected,
                    actual,
                });
            }
            Err(WriteFailure::Unreadable(source)) => {
                return Err(Error::LayerUnreadable {
                    registry: ep.host.clone(),
                    repository: repo.to_owned(),
                    layer: desc.digest.clone(),
                    source: Box::new(source),
                });
            }
        }
        report(PullProgress::DownloadComplete);
        tracing::debug!(digest = %desc.digest, size = total, "downloaded blob");
        Ok(())
    }

    /// The error for a download that stalled.
    fn stalled(&self, ep: &Endpoint, repo: &str, what: Transferred, stall: Stall) -> Error {
        let config = &self.inner.config;
        Error::TransferStalled {
            registry: ep.host.clone(),
            repository: repo.to_owned(),
            what,
            pushing: false,
            bytes: stall.bytes,
            rate: stall.rate(),
            window: config.min_rate_window,
            minimum: config.min_rate_bytes_per_sec,
        }
    }
}

/// Why a blob was not stored.
enum WriteFailure {
    /// Reading, writing or committing failed (or the download broke off).
    Store(kiln_store::Error),
    /// The content does not match the descriptor's digest or size.
    Verify(VerifyError),
    /// More bytes arrived than the descriptor's size.
    TooLarge,
    /// The layer uncompresses to another diff id than the configuration's
    /// at `index`.
    DiffId {
        index: u32,
        expected: Digest,
        actual: Digest,
    },
    /// The layer could not be uncompressed.
    Unreadable(kiln_store::ExtractError),
}

/// Stores the chunks from `rx` as blob `digest` of `size` bytes.
fn write_blob(
    store: &Store,
    rx: tokio::sync::mpsc::Receiver<io::Result<Bytes>>,
    digest: &Digest,
    size: u64,
) -> Result<(), WriteFailure> {
    let reader = ChannelReader {
        rx,
        current: Bytes::new(),
    };
    match store.write_blob(reader, Some(digest), Some(size)) {
        Ok(_) => Ok(()),
        Err(kiln_store::Error::Verify { source, .. }) => Err(WriteFailure::Verify(source)),
        Err(kiln_store::Error::TooLarge { .. }) => Err(WriteFailure::TooLarge),
        Err(e) => Err(WriteFailure::Store(e)),
    }
}

/// Stores the chunks from `rx` as layer blob `digest` of `size` bytes,
/// uncompressing them on a second thread as they arrive: the blob is
/// committed only if it matches `digest` and `size` and uncompresses to
/// the diff id at each of its `diff_ids` positions, so pulling the same
/// image again does not find the refused layer present and skip it.
fn write_layer(
    store: &Store,
    mut rx: tokio::sync::mpsc::Receiver<io::Result<Bytes>>,
    digest: &Digest,
    size: u64,
    diff_ids: &[(usize, Digest)],
) -> Result<(), WriteFailure> {
    let blob = store.blob_writer().map_err(WriteFailure::Store)?;
    let mut verifier = DigestVerifier::with_size(blob, digest.clone(), size);
    let write_error = |source: io::Error| {
        if source.kind() == io::ErrorKind::InvalidData {
            // The verifier cuts off a stream longer than `size` so.
            WriteFailure::TooLarge
        } else {
            WriteFailure::Store(kiln_store::Error::Io {
                action: "write a blob into",
                path: store.ingest_dir(),
                source,
            })
        }
    };
    let (uncompressed, copied) = std::thread::scope(|scope| {
        let (htx, hrx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(16);
        let hasher = scope.spawn(move || uncompressed_digest(hrx));
        let mut htx = Some(htx);
        let mut copied = Ok(());
        while let Some(item) = rx.blocking_recv() {
            let chunk = match item {
                Ok(chunk) => chunk,
                Err(e) => {
                    copied = Err(write_error(e));
                    break;
                }
            };
            if let Err(e) = verifier.write_all(&chunk) {
                copied = Err(write_error(e));
                break;
            }
            // The hasher stops reading early for an uncompressed layer
            // (its diff id is its digest) or a broken stream.
            if htx
                .as_ref()
                .is_some_and(|tx| tx.blocking_send(Ok(chunk)).is_err())
            {
                htx = None;
            }
        }
        drop(htx);
        let uncompressed = hasher.join().unwrap_or_else(|_| {
            Err(kiln_store::ExtractError::Read {
                source: io::Error::other("the uncompressing thread panicked"),
            })
        });
        (uncompressed, copied)
    });
    copied?;
    let (blob, _) = verifier.verify().map_err(WriteFailure::Verify)?;
    let actual = match uncompressed {
        Ok(Some(d)) => d,
        Ok(None) => digest.clone(),
        Err(e) => return Err(WriteFailure::Unreadable(e)),
    };
    if let Some((index, expected)) = diff_ids.iter().find(|(_, d)| *d != actual) {
        return Err(WriteFailure::DiffId {
            index: u32::try_from(*index).unwrap_or(u32::MAX),
            expected: expected.clone(),
            actual,
        });
    }
    blob.commit_as(digest).map_err(WriteFailure::Store)?;
    Ok(())
}

/// The sha256 of the uncompressed stream of the chunks from `rx`; `None`
/// for an uncompressed stream (whose diff id is its own digest), without
/// reading further.
fn uncompressed_digest(
    rx: tokio::sync::mpsc::Receiver<io::Result<Bytes>>,
) -> Result<Option<Digest>, kiln_store::ExtractError> {
    let reader = ChannelReader {
        rx,
        current: Bytes::new(),
    };
    let (compression, mut stream) = kiln_store::decompress(reader)?;
    if compression == Compression::None {
        return Ok(None);
    }
    let mut hasher = Sha256Writer::default();
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => return Err(kiln_store::ExtractError::Read { source }),
        };
        // Writing to a hasher cannot fail.
        let _ = hasher.write_all(&buf[..n]);
    }
    Ok(Some(hasher.finish().0))
}

/// The nested index to look into when an index has no image manifest
/// for `wanted`: the best entry for it among those with a platform, else
/// the first without one.
fn select_nested_index<'a>(entries: &'a [Descriptor], wanted: &Platform) -> Option<&'a Descriptor> {
    let nested = || entries.iter().filter(|d| is_index(&d.media_type));
    wanted
        .pick(nested().filter_map(|d| d.platform.as_ref().map(|p| (d, p))))
        .or_else(|| nested().find(|d| d.platform.is_none()))
}

/// Docker normalisation, with `:latest` when there is neither tag nor
/// digest.
pub(crate) fn normalize(reference: &Reference) -> Reference {
    Reference::parse_docker_ref(&reference.to_string())
        .unwrap_or_else(|_| reference.with_default_tag())
}

/// A blocking reader over the chunks a download task (or the blob writer)
/// sends.
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        let _ = self.current.split_to(n);
        Ok(n)
    }
}
