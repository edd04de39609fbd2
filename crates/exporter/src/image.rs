//! Committing an image to the store: layers → compressed blobs, config,
//! manifest, image record and tags.
//!
//! ## Decisions
//!
//! - **Media types.** [`MediaTypes::Docker`] is the default, as BuildKit's
//!   image exporter into the local image store uses Docker media types
//!   unless `oci-mediatypes=true`: Docker v2 schema 2 manifest, Docker
//!   config, `…rootfs.diff.tar.gzip` / `…rootfs.diff.tar` layers. Docker's
//!   media types have no zstd layer, so zstd layers switch the whole
//!   manifest to OCI media types (BuildKit does the same).
//! - **Compression.** gzip by default, at level 6 (Go's and BuildKit's
//!   default); zstd defaults to level 3. Both use every core (see
//!   `compress.rs`) and are deterministic.
//! - **Empty layers.** A layer whose tar has no entries (only
//!   end-of-archive blocks) is dropped from the image and its history entry
//!   becomes `empty_layer: true`, as BuildKit does.
//! - **Reproducibility.** With `source_date_epoch`, the config's `created`
//!   is set to that time and later (or missing) history times are clamped
//!   to it, so the same layers and config give the same image id and
//!   manifest digest. Layer contents are the caller's: their mtimes must
//!   already be clamped.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use kiln_oci::config::{History, ImageConfig, RootFs};
use kiln_oci::{Digest, Reference};
use kiln_store::{ImageId, ImageRecord, Store};

use crate::compress::{Codec, CompressError, CompressedIndex, Peeked, compress_into_store};
use crate::error::{Error, Result};
use crate::spec::{
    Descriptor, MEDIA_TYPE_DOCKER_CONFIG, MEDIA_TYPE_DOCKER_LAYER, MEDIA_TYPE_DOCKER_MANIFEST,
    MEDIA_TYPE_OCI_CONFIG, MEDIA_TYPE_OCI_LAYER, MEDIA_TYPE_OCI_LAYER_GZIP,
    MEDIA_TYPE_OCI_LAYER_ZSTD, MEDIA_TYPE_OCI_MANIFEST, Manifest,
};

/// `application/vnd.docker.image.rootfs.diff.tar.gzip`
pub const MEDIA_TYPE_DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// The default gzip level (as Go's `gzip.DefaultCompression`).
pub const DEFAULT_GZIP_LEVEL: i32 = 6;
/// The default zstd level (as the zstd CLI and BuildKit).
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;

/// Opens a layer's uncompressed tar stream.
pub type OpenLayer = dyn Fn() -> io::Result<Box<dyn Read + Send>> + Send + Sync;

/// Where the uncompressed tar of a layer comes from.
#[derive(Clone)]
pub enum LayerSource {
    /// The store's blob whose digest is the layer's diff id.
    Blob,
    /// A file holding the tar.
    Path(PathBuf),
    /// A function opening the tar stream. See [`LayerInput::reader`] for a
    /// stream that can be read only once.
    Open(Arc<OpenLayer>),
    /// A compressed (or plain) blob already in the store, used as it is: a
    /// base image's layer is never recompressed.
    Existing {
        digest: Digest,
        size: u64,
        media_type: String,
    },
}

impl std::fmt::Debug for LayerSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LayerSource::Blob => f.write_str("Blob"),
            LayerSource::Path(path) => f.debug_tuple("Path").field(path).finish(),
            LayerSource::Open(_) => f.write_str("Open(..)"),
            LayerSource::Existing { digest, .. } => {
                f.debug_tuple("Existing").field(digest).finish()
            }
        }
    }
}

/// An uncompressed layer tar and its diff id (the sha256 of the tar).
#[derive(Clone, Debug)]
pub struct LayerInput {
    pub diff_id: Digest,
    pub source: LayerSource,
}

impl LayerInput {
    /// The layer stored in the store as the blob `diff_id`.
    pub fn blob(diff_id: Digest) -> LayerInput {
        LayerInput {
            diff_id,
            source: LayerSource::Blob,
        }
    }

    /// The layer in the file at `path`.
    pub fn path(diff_id: Digest, path: impl Into<PathBuf>) -> LayerInput {
        LayerInput {
            diff_id,
            source: LayerSource::Path(path.into()),
        }
    }

    /// The layer read from `reader`, which can be read once: a second use
    /// of this input fails with an I/O error.
    pub fn reader<R: Read + Send + 'static>(diff_id: Digest, reader: R) -> LayerInput {
        let slot: Mutex<Option<Box<dyn Read + Send>>> = Mutex::new(Some(Box::new(reader)));
        let open = move || {
            slot.lock()
                .map_err(|_| io::Error::other("layer reader lock poisoned"))?
                .take()
                .ok_or_else(|| io::Error::other("the layer stream was already consumed"))
        };
        LayerInput {
            diff_id,
            source: LayerSource::Open(Arc::new(open)),
        }
    }

    /// A layer blob already in the store (e.g. a base image's compressed
    /// layer) that goes into the manifest as it is.
    pub fn existing(
        diff_id: Digest,
        digest: Digest,
        size: u64,
        media_type: impl Into<String>,
    ) -> LayerInput {
        LayerInput {
            diff_id,
            source: LayerSource::Existing {
                digest,
                size,
                media_type: media_type.into(),
            },
        }
    }

    /// The layer opened by `open` (called once per use).
    pub fn open_with(
        diff_id: Digest,
        open: impl Fn() -> io::Result<Box<dyn Read + Send>> + Send + Sync + 'static,
    ) -> LayerInput {
        LayerInput {
            diff_id,
            source: LayerSource::Open(Arc::new(open)),
        }
    }

    /// Opens the uncompressed tar stream. `index` names the layer in errors.
    pub(crate) fn open(&self, store: &Store, index: usize) -> Result<Box<dyn Read + Send>> {
        let reader: Box<dyn Read + Send> = match &self.source {
            LayerSource::Blob => {
                let file = store.open_blob(&self.diff_id).map_err(|e| match e {
                    kiln_store::Error::BlobNotFound { .. } => Error::MissingBlob {
                        digest: self.diff_id.clone(),
                        referenced_by: format!("layer #{index}"),
                    },
                    e => Error::Store(e),
                })?;
                Box::new(BufReader::with_capacity(1 << 17, file))
            }
            LayerSource::Path(path) => {
                let file = File::open(path).map_err(|source| Error::OpenLayer {
                    layer: index,
                    path: Some(path.clone()),
                    source,
                })?;
                Box::new(BufReader::with_capacity(1 << 17, file))
            }
            LayerSource::Open(open) => open().map_err(|source| Error::OpenLayer {
                layer: index,
                path: None,
                source,
            })?,
            LayerSource::Existing { digest, .. } => {
                let file = store.open_blob(digest).map_err(|e| match e {
                    kiln_store::Error::BlobNotFound { .. } => Error::MissingBlob {
                        digest: digest.clone(),
                        referenced_by: format!("layer #{index}"),
                    },
                    e => Error::Store(e),
                })?;
                decompressing(BufReader::with_capacity(1 << 17, file)).map_err(|source| {
                    Error::OpenLayer {
                        layer: index,
                        path: None,
                        source,
                    }
                })?
            }
        };
        Ok(reader)
    }
}

/// Wraps a layer blob in the decoder its magic bytes call for (gzip, zstd
/// or none).
fn decompressing(mut r: BufReader<File>) -> io::Result<Box<dyn Read + Send>> {
    use std::io::BufRead;
    let head = r.fill_buf()?;
    Ok(if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(r))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(zstd::stream::read::Decoder::with_buffer(r)?)
    } else {
        Box::new(r)
    })
}

/// How layers are compressed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Compression {
    #[default]
    Gzip,
    Zstd,
    /// Layers are stored as they are: the layer blob is the diff.
    Uncompressed,
}

impl Compression {
    fn codec(self) -> Option<Codec> {
        match self {
            Compression::Gzip => Some(Codec::Gzip),
            Compression::Zstd => Some(Codec::Zstd),
            Compression::Uncompressed => None,
        }
    }

    /// The level used when none is given, and the accepted range.
    fn levels(self) -> Option<(i32, std::ops::RangeInclusive<i32>)> {
        match self {
            Compression::Gzip => Some((DEFAULT_GZIP_LEVEL, 0..=9)),
            Compression::Zstd => Some((DEFAULT_ZSTD_LEVEL, zstd::compression_level_range())),
            Compression::Uncompressed => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
            Compression::Uncompressed => "uncompressed",
        }
    }
}

/// The media types of the manifest, config and layers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MediaTypes {
    /// Docker v2 schema 2 (BuildKit's default for the image store). zstd
    /// layers have no Docker media type and switch to [`MediaTypes::Oci`].
    #[default]
    Docker,
    Oci,
}

/// Options of [`commit_image`].
#[derive(Clone, Debug, Default)]
pub struct CommitOptions {
    pub compression: Compression,
    /// The compression level; `None` for the default (gzip 6, zstd 3).
    /// Must be unset for [`Compression::Uncompressed`].
    pub level: Option<i32>,
    pub media_types: MediaTypes,
    /// Tags for the image; a tag held by another image moves to this one
    /// (the other image is left untagged if it had no other tag).
    pub tags: Vec<Reference>,
    /// `SOURCE_DATE_EPOCH`: the image's creation time, in Unix seconds.
    pub source_date_epoch: Option<i64>,
}

/// What [`commit_image`] did besides writing the image.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommitStats {
    /// Layers compressed (or, uncompressed, written) in this commit.
    pub compressed: usize,
    /// Layers already in the store in the requested form (a compressed
    /// copy from an earlier commit, or the uncompressed blob itself).
    pub reused: usize,
    /// Layers dropped because their tar is empty.
    pub empty: usize,
}

/// An image written by [`commit_image`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommittedImage {
    /// The image id: the config digest.
    pub id: ImageId,
    pub manifest_digest: Digest,
    pub config_digest: Digest,
    /// The manifest's media type.
    pub manifest_media_type: String,
    /// The manifest's layer descriptors, base first (empty layers dropped).
    pub layers: Vec<Descriptor>,
    /// The config as written (diff ids, history and times filled in).
    pub config: ImageConfig,
    /// The image's tags in the store after the commit, normalised.
    pub tags: Vec<Reference>,
    pub stats: CommitStats,
}

/// Writes an image made of `layers` and `config` into the store.
///
/// For each layer, in order: a layer whose tar is empty is dropped (see
/// the module docs); otherwise its compressed copy is taken from the store
/// if an earlier commit made one with the same diff id, compression and
/// level (recorded in `<root>/exporter/compressed.json`), or the layer is
/// compressed now, streaming into the store, and its diff id checked. A
/// layer whose compressed copy is reused is not read at all.
///
/// `config.rootfs` is replaced by the layers' diff ids. `config.history`
/// (if not empty) has one entry without `empty_layer` per element of
/// `layers`, in the same order; a history that accounts for more or fewer
/// layers is aligned as BuildKit aligns it (see `align_history`). A config
/// without history is accepted as is.
/// `config.created` is set from `source_date_epoch` when given, and to the
/// current time when it is unset.
///
/// Then the config and the manifest are stored as blobs and the image
/// record is written with `opts.tags` ([`Store::put_image`]: an existing
/// record of the same image keeps its tags and gains these).
pub fn commit_image(
    store: &Store,
    layers: &[LayerInput],
    mut config: ImageConfig,
    opts: &CommitOptions,
) -> Result<CommittedImage> {
    let level = effective_level(opts)?;
    for tag in &opts.tags {
        if tag.digest().is_some() {
            return Err(Error::Store(kiln_store::Error::TagHasDigest {
                reference: tag.to_string(),
            }));
        }
    }
    let appended = align_history(&mut config.history, layers.len());
    // History entries that own a layer, by layer index.
    let layer_history: Vec<usize> = config
        .history
        .iter()
        .enumerate()
        .filter(|(_, h)| !h.empty_layer)
        .map(|(i, _)| i)
        .collect();
    let existing_zstd = layers.iter().any(|l| {
        matches!(&l.source, LayerSource::Existing { media_type, .. } if media_type.contains("zstd"))
    });
    let oci = opts.media_types == MediaTypes::Oci
        || opts.compression == Compression::Zstd
        || existing_zstd;
    if opts.media_types == MediaTypes::Docker && opts.compression == Compression::Zstd {
        tracing::debug!("zstd layers have no Docker media type: using OCI media types");
    }

    let index = CompressedIndex::new(store);
    let threads = crate::compress::threads();
    let mut stats = CommitStats::default();
    let mut descriptors = Vec::with_capacity(layers.len());
    let mut diff_ids = Vec::with_capacity(layers.len());
    let mut new_entries = Vec::new();
    // The layers to write, side by side: small layers are mostly fsync
    // waits, which overlap; a big layer compresses on `threads` cores.
    let mut outcomes: Vec<Option<Result<LayerOutcome>>> = layers.iter().map(|_| None).collect();
    let todo: Vec<usize> = (0..layers.len())
        .filter(|&i| !matches!(layers[i].source, LayerSource::Existing { .. }))
        .collect();
    let width = threads.max(1) * 2;
    for batch in todo.chunks(width) {
        std::thread::scope(|scope| {
            let running: Vec<_> = batch
                .iter()
                .map(|&i| {
                    let (index, layer) = (&index, &layers[i]);
                    let compression = opts.compression;
                    let run =
                        move || commit_layer(store, index, layer, i, compression, level, threads);
                    (i, scope.spawn(run))
                })
                .collect();
            for (i, handle) in running {
                let result = handle
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                outcomes[i] = Some(result);
            }
        });
    }
    for (i, layer) in layers.iter().enumerate() {
        if let LayerSource::Existing {
            digest,
            size,
            media_type,
        } = &layer.source
        {
            let actual = store.blob_size(digest)?;
            if actual != *size {
                return Err(Error::Store(kiln_store::Error::BlobNotFound {
                    digest: digest.clone(),
                }));
            }
            stats.reused += 1;
            descriptors.push(Descriptor::new(
                &existing_media_type(media_type, oci),
                digest.clone(),
                *size,
            ));
            diff_ids.push(layer.diff_id.clone());
            continue;
        }
        let outcome = outcomes[i]
            .take()
            .expect("every layer to write was written")?;
        match outcome {
            LayerOutcome::Empty => {
                tracing::debug!(layer = i, diff_id = %layer.diff_id, "dropping empty layer");
                stats.empty += 1;
                if let Some(&h) = layer_history.get(i) {
                    config.history[h].empty_layer = true;
                }
            }
            LayerOutcome::Stored {
                digest,
                size,
                reused,
            } => {
                if reused {
                    stats.reused += 1;
                } else {
                    stats.compressed += 1;
                    if let Some(codec) = opts.compression.codec() {
                        new_entries.push((
                            layer.diff_id.clone(),
                            codec,
                            level,
                            digest.clone(),
                            size,
                        ));
                    }
                }
                descriptors.push(Descriptor::new(
                    layer_media_type(opts.compression, oci),
                    digest,
                    size,
                ));
                diff_ids.push(layer.diff_id.clone());
            }
        }
    }
    index.record(store, &new_entries);

    config.rootfs = RootFs {
        kind: "layers".to_owned(),
        diff_ids,
    };
    apply_times(&mut config, opts.source_date_epoch)?;
    for entry in appended {
        if let Some(h) = config.history.get_mut(entry)
            && h.created.is_none()
        {
            h.created.clone_from(&config.created);
        }
    }

    let config_bytes = config.to_bytes().map_err(|source| Error::Serialize {
        what: "image config",
        source,
    })?;
    let config_digest = store.write_blob_bytes(&config_bytes)?;
    let (manifest_type, config_type) = if oci {
        (MEDIA_TYPE_OCI_MANIFEST, MEDIA_TYPE_OCI_CONFIG)
    } else {
        (MEDIA_TYPE_DOCKER_MANIFEST, MEDIA_TYPE_DOCKER_CONFIG)
    };
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(manifest_type.to_owned()),
        config: Descriptor::new(
            config_type,
            config_digest.clone(),
            config_bytes.len() as u64,
        ),
        layers: descriptors,
        annotations: Default::default(),
    };
    let manifest_bytes = serde_json::to_vec(&manifest).map_err(|source| Error::Serialize {
        what: "image manifest",
        source,
    })?;
    let manifest_digest = store.write_blob_bytes(&manifest_bytes)?;

    let mut record = ImageRecord::new(manifest_digest.clone(), config_digest.clone());
    record.tags = opts.tags.clone();
    let stored = store.put_image(record)?;
    tracing::debug!(id = %stored.id, manifest = %manifest_digest, ?stats, "committed image");
    Ok(CommittedImage {
        id: stored.id,
        manifest_digest,
        config_digest,
        manifest_media_type: manifest_type.to_owned(),
        layers: manifest.layers,
        config,
        tags: stored.tags,
        stats,
    })
}

/// Makes a non-empty history own exactly `layers` layers, as BuildKit's
/// image exporter does (`normalizeLayersAndHistory`): a base image's
/// config may account for fewer layers than it has (`umoci insert
/// --no-history` adds layers without entries) or for more. Entries owning
/// a layer past the last one become `empty_layer`; an entry is appended
/// for each layer without one (commented `buildkit.exporter.image.v0`,
/// created with the image). Returns the indexes of the appended entries.
fn align_history(history: &mut Vec<History>, layers: usize) -> std::ops::Range<usize> {
    if history.is_empty() {
        return 0..0;
    }
    let owning = history.iter().filter(|h| !h.empty_layer).count();
    if owning > layers {
        tracing::warn!(
            entries = owning,
            layers,
            "image config history accounts for more layers than there are"
        );
        let mut seen = 0;
        for h in history.iter_mut() {
            if seen >= layers {
                h.empty_layer = true;
            }
            if !h.empty_layer {
                seen += 1;
            }
        }
    }
    let start = history.len();
    for _ in owning..layers {
        history.push(History {
            comment: Some("buildkit.exporter.image.v0".to_owned()),
            ..History::default()
        });
    }
    start..history.len()
}

fn effective_level(opts: &CommitOptions) -> Result<i32> {
    match (opts.compression.levels(), opts.level) {
        (None, None) => Ok(0),
        (None, Some(level)) => Err(Error::InvalidCompressionLevel {
            compression: opts.compression.name(),
            level,
            min: 0,
            max: 0,
        }),
        (Some((default, _)), None) => Ok(default),
        (Some((_, range)), Some(level)) if range.contains(&level) => Ok(level),
        (Some((_, range)), Some(level)) => Err(Error::InvalidCompressionLevel {
            compression: opts.compression.name(),
            level,
            min: *range.start(),
            max: *range.end(),
        }),
    }
}

/// The media type of an existing layer blob in a Docker or OCI manifest.
fn existing_media_type(media_type: &str, oci: bool) -> String {
    let compression = if media_type.contains("zstd") {
        Compression::Zstd
    } else if media_type.contains("gzip") {
        Compression::Gzip
    } else {
        Compression::Uncompressed
    };
    layer_media_type(compression, oci).to_string()
}

fn layer_media_type(compression: Compression, oci: bool) -> &'static str {
    match (compression, oci) {
        (Compression::Gzip, false) => MEDIA_TYPE_DOCKER_LAYER_GZIP,
        (Compression::Gzip, true) => MEDIA_TYPE_OCI_LAYER_GZIP,
        (Compression::Zstd, _) => MEDIA_TYPE_OCI_LAYER_ZSTD,
        (Compression::Uncompressed, false) => MEDIA_TYPE_DOCKER_LAYER,
        (Compression::Uncompressed, true) => MEDIA_TYPE_OCI_LAYER,
    }
}

/// RFC 3339 in UTC with seconds, as Go's `time.RFC3339Nano` prints whole
/// seconds (`2024-01-02T03:04:05Z`).
fn rfc3339(epoch: i64) -> Result<String> {
    let time = chrono::DateTime::from_timestamp(epoch, 0)
        .ok_or(Error::InvalidSourceDateEpoch { epoch })?;
    Ok(time.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
}

fn apply_times(config: &mut ImageConfig, epoch: Option<i64>) -> Result<()> {
    match epoch {
        Some(epoch) => {
            let stamp = rfc3339(epoch)?;
            let limit = chrono::DateTime::from_timestamp(epoch, 0)
                .ok_or(Error::InvalidSourceDateEpoch { epoch })?;
            config.created = Some(stamp.clone());
            for entry in &mut config.history {
                clamp_history(entry, &stamp, limit);
            }
        }
        None => {
            if config.created.is_none() {
                config.created =
                    Some(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true));
            }
        }
    }
    Ok(())
}

fn clamp_history(entry: &mut History, stamp: &str, limit: chrono::DateTime<chrono::Utc>) {
    let keep = entry
        .created
        .as_deref()
        .and_then(kiln_oci::config::parse_time)
        .is_some_and(|t| t <= limit);
    if !keep {
        entry.created = Some(stamp.to_owned());
    }
}

enum LayerOutcome {
    Empty,
    Stored {
        digest: Digest,
        size: u64,
        reused: bool,
    },
}

fn commit_layer(
    store: &Store,
    index: &CompressedIndex,
    layer: &LayerInput,
    i: usize,
    compression: Compression,
    level: i32,
    threads: usize,
) -> Result<LayerOutcome> {
    let read_err = |source| Error::ReadLayer { layer: i, source };
    let mismatch = |actual| Error::LayerDiffIdMismatch {
        layer: i,
        expected: layer.diff_id.clone(),
        actual,
    };
    if let Some(codec) = compression.codec()
        && let Some((digest, size)) = index.lookup(store, &layer.diff_id, codec, level)
    {
        tracing::debug!(layer = i, diff_id = %layer.diff_id, %digest, "reusing compressed layer");
        return Ok(LayerOutcome::Stored {
            digest,
            size,
            reused: true,
        });
    }

    // An uncompressed layer the store already holds is read from there
    // (only its first block, to tell whether it is empty).
    let stored_copy;
    let layer = if compression == Compression::Uncompressed
        && !matches!(layer.source, LayerSource::Blob)
        && store.has_blob(&layer.diff_id)?
    {
        stored_copy = LayerInput::blob(layer.diff_id.clone());
        &stored_copy
    } else {
        layer
    };
    let peeked = Peeked::new(layer.open(store, i)?).map_err(read_err)?;
    if peeked.is_empty_archive() {
        let actual = peeked.drain().map_err(read_err)?;
        if actual != layer.diff_id {
            return Err(mismatch(actual));
        }
        return Ok(LayerOutcome::Empty);
    }

    let Some(codec) = compression.codec() else {
        if matches!(layer.source, LayerSource::Blob) {
            // Already stored under its diff id: nothing to write.
            let size = store.blob_size(&layer.diff_id)?;
            return Ok(LayerOutcome::Stored {
                digest: layer.diff_id.clone(),
                size,
                reused: true,
            });
        }
        let Peeked { head, rest } = peeked;
        let (digest, size) = store
            .write_blob(
                io::Cursor::new(head).chain(rest),
                Some(&layer.diff_id),
                None,
            )
            .map_err(|e| match e {
                kiln_store::Error::Verify {
                    source: kiln_oci::digest::VerifyError::DigestMismatch { actual, .. },
                    ..
                } => mismatch(actual),
                e => Error::Store(e),
            })?;
        return Ok(LayerOutcome::Stored {
            digest,
            size,
            reused: false,
        });
    };

    match compress_into_store(store, peeked, &layer.diff_id, codec, level, threads) {
        Ok((digest, size)) => {
            tracing::debug!(layer = i, diff_id = %layer.diff_id, %digest, size, codec = codec.name(), "compressed layer");
            Ok(LayerOutcome::Stored {
                digest,
                size,
                reused: false,
            })
        }
        Err(CompressError::Read(source)) => Err(read_err(source)),
        Err(CompressError::Compress(source)) => Err(Error::Compress { layer: i, source }),
        Err(CompressError::DiffId { actual }) => Err(mismatch(actual)),
        Err(CompressError::Store(e)) => Err(Error::Store(e)),
    }
}
