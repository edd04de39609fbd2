//! Pulling: reference → manifest (via an index, for the wanted platform) →
//! config and layers streamed into the store, verified as they arrive.

use std::io::{self, Read};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use kiln_cache::{ImageRecord, Store};
use kiln_oci::digest::VerifyError;
use kiln_oci::{Digest, Platform, Reference};
use reqwest::header::{self, HeaderValue};
use reqwest::{Method, StatusCode};

use crate::client::{Client, Endpoint, Target, classify};
use crate::error::{Error, Result};
use crate::manifest::{
    self, Descriptor, Document, MANIFEST_ACCEPT, is_image_manifest, is_index, select_platform,
};

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

    async fn pull_from(
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
        let image = if is_index(&top.media_type) {
            let entries = top.doc.manifests.clone().unwrap_or_default();
            let wanted = options.platform.clone().unwrap_or_else(Platform::host);
            let chosen =
                select_platform(&entries, &wanted).ok_or_else(|| Error::NoMatchingPlatform {
                    reference: reference.familiar_string(),
                    platform: wanted.to_string(),
                    available: manifest::platforms(&entries),
                })?;
            tracing::debug!(digest = %chosen.digest, platform = %wanted, "selected manifest from index");
            let child = self
                .fetch_manifest(ep, &repo, chosen.digest.as_str(), Some(&chosen.digest))
                .await?;
            if !is_image_manifest(&child.media_type) {
                return Err(self.unsupported(ep, &repo, chosen.digest.as_str(), &child));
            }
            documents.push((child.bytes.clone(), child.digest.clone()));
            child
        } else if is_image_manifest(&top.media_type) {
            top
        } else {
            return Err(self.unsupported(ep, &repo, &tag_or_digest, &top));
        };
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
            self.download_blob(ep, &repo, store, &config, None).await?;
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
        let concurrency = self.inner.config.concurrency.max(1);
        let repo_ref = repo.as_str();
        let mut downloads = futures::stream::iter(missing.into_iter().map(|layer| async move {
            self.download_blob(ep, repo_ref, store, layer, Some(progress))
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
        while let Some(chunk) = stream.next().await {
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

    /// Downloads a blob into the store, retrying transient failures. A
    /// failed attempt leaves nothing visible.
    async fn download_blob(
        &self,
        ep: &Endpoint,
        repo: &str,
        store: &Store,
        desc: &Descriptor,
        progress: Option<&(dyn Fn(PullEvent) + Send + Sync)>,
    ) -> Result<()> {
        let mut attempt = 0;
        loop {
            match self
                .try_download_blob(ep, repo, store, desc, progress)
                .await
            {
                Ok(()) => return Ok(()),
                Err(e) if e.is_transient() && attempt < self.inner.config.max_retries => {
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
        // through a bounded channel, so hashing and disk writes stay off the
        // async workers.
        let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(16);
        let writer_store = store.clone();
        let digest = desc.digest.clone();
        let writer = tokio::task::spawn_blocking(move || {
            let reader = ChannelReader {
                rx,
                current: Bytes::new(),
            };
            writer_store.write_blob(reader, Some(&digest), Some(total))
        });
        let mut stream = resp.bytes_stream();
        let mut received = 0u64;
        let mut last_report = Instant::now();
        let mut net_error = None;
        while let Some(chunk) = stream.next().await {
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
            Ok(_) => {}
            Err(kiln_cache::Error::Verify { source, .. }) => return Err(mismatch(source)),
            Err(kiln_cache::Error::TooLarge { expected, .. }) => {
                return Err(mismatch(VerifyError::SizeMismatch {
                    expected,
                    actual: received,
                }));
            }
            Err(e) => return Err(e.into()),
        }
        report(PullProgress::DownloadComplete);
        tracing::debug!(digest = %desc.digest, size = total, "downloaded blob");
        Ok(())
    }
}

/// Docker normalisation, with `:latest` when there is neither tag nor
/// digest.
pub(crate) fn normalize(reference: &Reference) -> Reference {
    Reference::parse_docker_ref(&reference.to_string())
        .unwrap_or_else(|_| reference.with_default_tag())
}

/// A blocking reader over the chunks a download task sends.
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
