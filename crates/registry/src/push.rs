//! Pushing: blobs (skipped when present, mounted from another repository
//! when possible, uploaded otherwise) in parallel, then the manifest bytes
//! exactly as stored. An upload whose body goes out slower than the
//! minimum rate fails (see the `rate` module).

use std::fmt;
use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures::StreamExt;
use kiln_oci::{Digest, Reference};
use kiln_store::{ImageRecord, Store};
use reqwest::header::{self, HeaderValue};
use reqwest::{Body, Method, Response, StatusCode, Url};

use crate::client::{Client, Endpoint, Target};
use crate::error::{Error, Result, Transferred};
use crate::manifest::{Descriptor, Document, is_index};
use crate::pull::normalize;
use crate::rate::UploadMeter;

/// Per-layer progress of a push.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PushProgress {
    Preparing,
    Pushing {
        current: u64,
        total: u64,
    },
    Pushed,
    /// The registry already had the blob.
    LayerAlreadyExists,
    /// Mounted from another repository of the same registry.
    Mounted {
        from: String,
    },
}

/// A push progress event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushEvent {
    pub layer: Digest,
    pub progress: PushProgress,
}

/// What a push did.
#[derive(Clone, Debug)]
pub struct PushResult {
    pub reference: Reference,
    /// The tag pushed.
    pub tag: String,
    /// The manifest digest.
    pub digest: Digest,
    /// The manifest size in bytes.
    pub size: u64,
}

impl fmt::Display for PushResult {
    /// Docker's closing line: `TAG: digest: sha256:… size: N`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: digest: {} size: {}",
            self.tag, self.digest, self.size
        )
    }
}

/// Chunks read from a blob file for a streamed upload body.
const READ_CHUNK: usize = 1 << 20;

impl Client {
    /// Pushes the local image tagged `reference` to its registry.
    pub async fn push(
        &self,
        store: &Store,
        reference: &Reference,
        progress: &(dyn Fn(PushEvent) + Send + Sync),
    ) -> Result<PushResult> {
        let reference = normalize(reference);
        let record = store
            .images()?
            .into_iter()
            .find(|r| r.tags.contains(&reference))
            .ok_or_else(|| Error::ImageNotFoundLocally {
                reference: reference.familiar_string(),
            })?;
        self.push_image(store, &record, &reference, progress).await
    }

    /// Pushes image `record` as `reference` (a tag).
    pub async fn push_image(
        &self,
        store: &Store,
        record: &ImageRecord,
        reference: &Reference,
        progress: &(dyn Fn(PushEvent) + Send + Sync),
    ) -> Result<PushResult> {
        let reference = normalize(reference);
        let tag = reference.tag().unwrap_or("latest").to_owned();
        let ep = self.endpoint(reference.registry_host()).await?;
        let repo = reference.path().to_owned();
        let bytes =
            store.read_blob_bytes(&record.manifest_digest, self.inner.config.max_manifest_size)?;
        let doc = Document::parse(&bytes).map_err(|reason| Error::InvalidManifest {
            registry: ep.host.clone(),
            repository: repo.clone(),
            reference: record.manifest_digest.to_string(),
            reason,
        })?;
        let media_type = doc.effective_media_type(None);
        if is_index(&media_type) {
            return Err(Error::UnsupportedMediaType {
                registry: ep.host.clone(),
                repository: repo,
                reference: record.manifest_digest.to_string(),
                media_type,
            });
        }
        let config = doc.config.clone().ok_or_else(|| Error::InvalidManifest {
            registry: ep.host.clone(),
            repository: repo.clone(),
            reference: record.manifest_digest.to_string(),
            reason: "no config descriptor".to_owned(),
        })?;
        let layers = doc.layers.clone().unwrap_or_default();

        // Other repositories of the same registry that hold this image.
        let mut siblings: Vec<String> = record
            .repo_digests
            .iter()
            .chain(&record.tags)
            .filter(|r| r.registry_host() == ep.host && r.path() != repo)
            .map(|r| r.path().to_owned())
            .collect();
        siblings.sort();
        siblings.dedup();

        let mut blobs: Vec<(&Descriptor, bool)> = Vec::new();
        for l in &layers {
            if !blobs.iter().any(|(d, _)| d.digest == l.digest) {
                blobs.push((l, true));
            }
        }
        for (d, _) in &blobs {
            progress(PushEvent {
                layer: d.digest.clone(),
                progress: PushProgress::Preparing,
            });
        }
        blobs.push((&config, false));
        let concurrency = self.inner.config.upload_concurrency.max(1);
        let (ep_ref, repo_ref, siblings_ref) = (&ep, repo.as_str(), siblings.as_slice());
        let mut uploads =
            futures::stream::iter(blobs.into_iter().map(|(desc, shown)| async move {
                let report = |p: PushProgress| {
                    if shown {
                        progress(PushEvent {
                            layer: desc.digest.clone(),
                            progress: p,
                        });
                    }
                };
                self.push_blob(ep_ref, repo_ref, store, desc, siblings_ref, &report)
                    .await
            }))
            .buffer_unordered(concurrency);
        while let Some(result) = uploads.next().await {
            result?;
        }
        drop(uploads);

        let url = ep.url(&format!("v2/{repo}/manifests/{tag}"))?;
        let scopes = [format!("repository:{repo}:pull,push")];
        let body = Bytes::from(bytes);
        let resp = self
            .send(&ep, &scopes, Method::PUT, &url, &|rb| {
                Ok(rb
                    .header(header::CONTENT_TYPE, media_type.as_str())
                    .body(body.clone()))
            })
            .await?;
        let resp = self
            .check(
                &ep.host,
                Method::PUT,
                resp,
                &[StatusCode::CREATED, StatusCode::OK, StatusCode::ACCEPTED],
                Target {
                    repository: &repo,
                    manifest: None,
                },
            )
            .await?;
        if let Some(announced) = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<Digest>().ok())
            && announced != record.manifest_digest
        {
            return Err(Error::ManifestDigestMismatch {
                registry: ep.host.clone(),
                repository: repo,
                expected: record.manifest_digest.clone(),
                actual: announced,
            });
        }
        let mut update =
            ImageRecord::new(record.manifest_digest.clone(), record.config_digest.clone());
        update.repo_digests = vec![
            reference
                .name_only()
                .with_digest(record.manifest_digest.clone()),
        ];
        store.put_image(update)?;
        for d in layers.iter().chain(std::iter::once(&config)) {
            self.remember_blob_source(&ep.host, &d.digest, &repo);
        }
        tracing::info!(%reference, digest = %record.manifest_digest, "pushed");
        Ok(PushResult {
            reference: reference.clone(),
            tag,
            digest: record.manifest_digest.clone(),
            size: body.len() as u64,
        })
    }

    async fn push_blob(
        &self,
        ep: &Endpoint,
        repo: &str,
        store: &Store,
        desc: &Descriptor,
        siblings: &[String],
        report: &(dyn Fn(PushProgress) + Send + Sync),
    ) -> Result<()> {
        let push_scope = format!("repository:{repo}:pull,push");
        let target = Target {
            repository: repo,
            manifest: None,
        };
        // Present already?
        let url = ep.url(&format!("v2/{repo}/blobs/{}", desc.digest))?;
        let resp = self
            .send(
                ep,
                std::slice::from_ref(&push_scope),
                Method::HEAD,
                &url,
                &|rb| Ok(rb),
            )
            .await?;
        match resp.status() {
            StatusCode::OK => {
                report(PushProgress::LayerAlreadyExists);
                return Ok(());
            }
            StatusCode::NOT_FOUND => {}
            _ => {
                return Err(self
                    .status_error(&ep.host, Method::HEAD, resp, target)
                    .await);
            }
        }
        // Mount from a repository known to hold it.
        let mut candidates = self.blob_sources(&ep.host, &desc.digest);
        candidates.extend(siblings.iter().cloned());
        candidates.retain(|r| r != repo);
        candidates.dedup();
        let mut session: Option<Url> = None;
        for from in candidates {
            let mut url = ep.url(&format!("v2/{repo}/blobs/uploads/"))?;
            url.query_pairs_mut()
                .append_pair("mount", desc.digest.as_str())
                .append_pair("from", &from);
            let scopes = [push_scope.clone(), format!("repository:{from}:pull")];
            let resp = self
                .send(ep, &scopes, Method::POST, &url, &|rb| {
                    Ok(rb.header(header::CONTENT_LENGTH, "0"))
                })
                .await?;
            match resp.status() {
                StatusCode::CREATED => {
                    tracing::debug!(digest = %desc.digest, %from, "mounted blob");
                    report(PushProgress::Mounted { from });
                    return Ok(());
                }
                StatusCode::ACCEPTED => {
                    session = Some(location(ep, &resp)?);
                    break;
                }
                status => {
                    tracing::debug!(digest = %desc.digest, %from, %status, "mount refused");
                }
            }
        }
        let mut attempt = 0;
        let mut stalls = 0;
        loop {
            let start = match session.take() {
                Some(s) => s,
                None => self.start_upload(ep, repo, &push_scope).await?,
            };
            match self
                .upload(ep, repo, store, desc, start, &push_scope, report)
                .await
            {
                Ok(()) => break,
                Err(e) if self.may_retry(&e, attempt, &mut stalls) => {
                    let delay = self.backoff(attempt);
                    tracing::warn!(digest = %desc.digest, error = %e, ?delay, "upload failed; retrying");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
        report(PushProgress::Pushed);
        Ok(())
    }

    async fn start_upload(&self, ep: &Endpoint, repo: &str, scope: &str) -> Result<Url> {
        let url = ep.url(&format!("v2/{repo}/blobs/uploads/"))?;
        let resp = self
            .send(ep, &[scope.to_owned()], Method::POST, &url, &|rb| {
                Ok(rb.header(header::CONTENT_LENGTH, "0"))
            })
            .await?;
        let resp = self
            .check(
                &ep.host,
                Method::POST,
                resp,
                &[StatusCode::ACCEPTED],
                Target {
                    repository: repo,
                    manifest: None,
                },
            )
            .await?;
        location(ep, &resp)
    }

    /// Uploads the blob into the session at `session`: one PUT, or PATCH
    /// chunks when configured or when the registry refuses the PUT as too
    /// large.
    #[allow(clippy::too_many_arguments)]
    async fn upload(
        &self,
        ep: &Endpoint,
        repo: &str,
        store: &Store,
        desc: &Descriptor,
        session: Url,
        scope: &str,
        report: &(dyn Fn(PushProgress) + Send + Sync),
    ) -> Result<()> {
        let target = Target {
            repository: repo,
            manifest: None,
        };
        let scopes = [scope.to_owned()];
        let total = desc.size;
        if let Some(chunk) = self.inner.config.upload_chunk_size {
            return self
                .upload_chunked(ep, repo, store, desc, session, scope, chunk.max(1), report)
                .await;
        }
        let mut url = session.clone();
        url.query_pairs_mut()
            .append_pair("digest", desc.digest.as_str());
        let sent = Arc::new(AtomicU64::new(0));
        let build = |rb: reqwest::RequestBuilder| {
            sent.store(0, Ordering::Relaxed);
            let body = file_body(store, &desc.digest, sent.clone())?;
            Ok(rb
                .header(header::CONTENT_TYPE, "application/octet-stream")
                .header(header::CONTENT_LENGTH, HeaderValue::from(total))
                .body(body))
        };
        let put = self.send(ep, &scopes, Method::PUT, &url, &build);
        let resp = self
            .watch_upload(ep, repo, desc, put, &sent, total, &|current| {
                report(PushProgress::Pushing { current, total });
            })
            .await?;
        if resp.status().is_success() {
            report(PushProgress::Pushing {
                current: total,
                total,
            });
        }
        if resp.status() == StatusCode::PAYLOAD_TOO_LARGE {
            tracing::debug!(digest = %desc.digest, "monolithic upload refused; uploading in chunks");
            let session = self.start_upload(ep, repo, scope).await?;
            return self
                .upload_chunked(ep, repo, store, desc, session, scope, 8 << 20, report)
                .await;
        }
        self.check(&ep.host, Method::PUT, resp, &[StatusCode::CREATED], target)
            .await?;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn upload_chunked(
        &self,
        ep: &Endpoint,
        repo: &str,
        store: &Store,
        desc: &Descriptor,
        mut session: Url,
        scope: &str,
        chunk_size: u64,
        report: &(dyn Fn(PushProgress) + Send + Sync),
    ) -> Result<()> {
        let target = Target {
            repository: repo,
            manifest: None,
        };
        let scopes = [scope.to_owned()];
        let total = desc.size;
        let mut offset = 0u64;
        while offset < total {
            let len = chunk_size.min(total - offset);
            let chunk = read_range(store, &desc.digest, offset, len).await?;
            let range = format!("{}-{}", offset, offset + len - 1);
            let sent = Arc::new(AtomicU64::new(0));
            let build = |rb: reqwest::RequestBuilder| {
                sent.store(0, Ordering::Relaxed);
                Ok(rb
                    .header(header::CONTENT_TYPE, "application/octet-stream")
                    .header(header::CONTENT_RANGE, range.as_str())
                    .header(header::CONTENT_LENGTH, HeaderValue::from(len))
                    .body(counted_body(chunk.clone(), sent.clone())))
            };
            let patch = self.send(ep, &scopes, Method::PATCH, &session, &build);
            let resp = self
                .watch_upload(ep, repo, desc, patch, &sent, len, &|current| {
                    report(PushProgress::Pushing {
                        current: offset + current,
                        total,
                    });
                })
                .await?;
            let resp = self
                .check(
                    &ep.host,
                    Method::PATCH,
                    resp,
                    &[StatusCode::ACCEPTED, StatusCode::NO_CONTENT],
                    target,
                )
                .await?;
            session = location(ep, &resp).unwrap_or(session);
            offset += len;
            report(PushProgress::Pushing {
                current: offset,
                total,
            });
        }
        let mut url = session;
        url.query_pairs_mut()
            .append_pair("digest", desc.digest.as_str());
        let resp = self
            .send(ep, &scopes, Method::PUT, &url, &|rb| {
                Ok(rb.header(header::CONTENT_LENGTH, "0"))
            })
            .await?;
        self.check(&ep.host, Method::PUT, resp, &[StatusCode::CREATED], target)
            .await?;
        Ok(())
    }

    /// Awaits `request`, an upload of `total` body bytes that counts those
    /// handed to the connection in `sent`: reports the count to `progress`
    /// as it grows and fails with [`Error::TransferStalled`] when it grows
    /// slower than the configured minimum rate.
    #[allow(clippy::too_many_arguments)]
    async fn watch_upload(
        &self,
        ep: &Endpoint,
        repo: &str,
        desc: &Descriptor,
        request: impl Future<Output = Result<Response>>,
        sent: &AtomicU64,
        total: u64,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<Response> {
        let config = &self.inner.config;
        let mut meter = UploadMeter::new(config);
        let mut ticker = tokio::time::interval(meter.interval());
        let mut last = u64::MAX;
        tokio::pin!(request);
        loop {
            tokio::select! {
                resp = &mut request => return resp,
                _ = ticker.tick() => {
                    let current = sent.load(Ordering::Relaxed).min(total);
                    if current != last {
                        last = current;
                        progress(current);
                    }
                    if let Some(stall) = meter.observe(current, total) {
                        return Err(Error::TransferStalled {
                            registry: ep.host.clone(),
                            repository: repo.to_owned(),
                            what: Transferred::Blob(desc.digest.clone()),
                            pushing: true,
                            bytes: stall.bytes,
                            rate: stall.rate(),
                            window: config.min_rate_window,
                            minimum: config.min_rate_bytes_per_sec,
                        });
                    }
                }
            }
        }
    }
}

/// A streamed request body of `bytes`, in pieces, counting those handed
/// to the connection in `sent`.
fn counted_body(bytes: Bytes, sent: Arc<AtomicU64>) -> Body {
    const PIECE: usize = 64 << 10;
    let pieces: Vec<Bytes> = (0..bytes.len())
        .step_by(PIECE)
        .map(|i| bytes.slice(i..bytes.len().min(i + PIECE)))
        .collect();
    let stream = futures::stream::iter(pieces).map(move |piece| {
        sent.fetch_add(piece.len() as u64, Ordering::Relaxed);
        Ok::<_, std::io::Error>(piece)
    });
    Body::wrap_stream(stream)
}

/// The upload session URL of a response: its `Location`, absolute or
/// relative to the request URL.
fn location(ep: &Endpoint, resp: &Response) -> Result<Url> {
    let value = resp
        .headers()
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| Error::InvalidResponse {
            registry: ep.host.clone(),
            url: resp.url().to_string(),
            reason: "no Location header in the upload response".to_owned(),
        })?;
    resp.url().join(value).map_err(|e| Error::InvalidUrl {
        url: value.to_owned(),
        reason: e.to_string(),
    })
}

/// A streamed request body reading the blob from the store in chunks on
/// the blocking pool, counting the bytes handed to the connection in
/// `sent`.
fn file_body(store: &Store, digest: &Digest, sent: Arc<AtomicU64>) -> Result<Body> {
    let file = store.open_blob(digest)?;
    let path = store.blob_path(digest);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
    tokio::task::spawn_blocking(move || {
        let mut file = file;
        loop {
            let mut buf = vec![0u8; READ_CHUNK];
            match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    buf.truncate(n);
                    if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "reading blob for upload failed");
                    let _ = tx.blocking_send(Err(e));
                    break;
                }
            }
        }
    });
    let stream = futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).map(move |item| {
        if let Ok(chunk) = &item {
            sent.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
        item
    });
    Ok(Body::wrap_stream(stream))
}

/// Reads `len` bytes at `offset` of a blob, on the blocking pool.
async fn read_range(store: &Store, digest: &Digest, offset: u64, len: u64) -> Result<Bytes> {
    use std::io::{Seek, SeekFrom};
    let store = store.clone();
    let digest = digest.clone();
    tokio::task::spawn_blocking(move || -> Result<Bytes> {
        let mut file = store.open_blob(&digest)?;
        let path = store.blob_path(&digest);
        let io = |source| kiln_store::Error::Io {
            action: "read",
            path: path.clone(),
            source,
        };
        file.seek(SeekFrom::Start(offset)).map_err(io)?;
        let mut buf = vec![0u8; len as usize];
        file.read_exact(&mut buf).map_err(io)?;
        Ok(Bytes::from(buf))
    })
    .await
    .map_err(|source| Error::Task { source })?
}
