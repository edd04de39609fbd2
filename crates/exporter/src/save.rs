//! `save`: images of the store → a docker-archive or an OCI layout archive.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufReader, BufWriter, Seek, SeekFrom, Write};

use kiln_oci::digest::{Sha256Reader, Sha256Writer, VerifyError};
use kiln_oci::reference::AnyReference;
use kiln_oci::{Digest, Reference};
use kiln_store::{ImageId, ImageRecord, Store};
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::progress::{Progress, ProgressReader};
use crate::spec::{
    ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME, Descriptor, DockerManifestEntry, ImageConfig,
    Index, MEDIA_TYPE_DOCKER_LAYER, MEDIA_TYPE_DOCKER_MANIFEST, MEDIA_TYPE_OCI_CONFIG,
    MEDIA_TYPE_OCI_INDEX, MEDIA_TYPE_OCI_LAYER, MEDIA_TYPE_OCI_LAYER_GZIP,
    MEDIA_TYPE_OCI_LAYER_ZSTD, MEDIA_TYPE_OCI_MANIFEST, Manifest, OCI_LAYOUT_VERSION, OciLayout,
    is_image_manifest,
};
use crate::tarball::{CopyError, TarWriter};

/// Largest manifest or config kiln reads into memory.
pub(crate) const MAX_DOCUMENT: u64 = 32 << 20;

/// The kind of archive [`save`] writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SaveFormat {
    /// A docker-archive as Docker 25+ writes it: `manifest.json` and
    /// `repositories` for `docker load`, plus a complete OCI layout
    /// (`oci-layout`, `index.json`, `blobs/`).
    Docker,
    /// A plain OCI image layout: `oci-layout`, `index.json`, `blobs/`.
    Oci,
}

/// Which image(s) to save, and under which tags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageSelector {
    /// A command-line argument, read as `docker save` reads it:
    ///
    /// - a tag (`busybox:1.36`) saves the image holding it, with that tag;
    /// - a repository name (`busybox`) saves every image with a tag in that
    ///   repository, with those tags;
    /// - an id, id prefix, digest or `name@digest` saves the image without
    ///   tags.
    Query(String),
    /// This image, without tags.
    Id(ImageId),
    /// The image holding this tag (normalised as `docker` does), with it.
    Tag(Reference),
}

/// An image written by [`save`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SavedImage {
    pub id: ImageId,
    /// The manifest `index.json` points at (the store's manifest).
    pub manifest_digest: Digest,
    /// The tags written for it, normalised and sorted.
    pub tags: Vec<Reference>,
}

/// Where the bytes of a blob in the archive come from.
enum BlobSource {
    /// The store's blob of the same digest.
    Stored { size: u64 },
    /// The decompressed content of a stored compressed layer: the
    /// uncompressed copy a docker-archive's `manifest.json` needs. Keyed
    /// by diff id.
    Uncompressed { layer: Digest, config: Digest },
    /// A document made for the archive: an image's Docker manifest
    /// converted to OCI media types for an OCI layout.
    Inline(Vec<u8>),
}

struct ImagePlan {
    record: ImageRecord,
    tags: Vec<Reference>,
    manifest: Descriptor,
    /// The manifest's config (normally the image id).
    config_digest: Digest,
    /// Diff ids, base first: the uncompressed layers `manifest.json` lists.
    diff_ids: Vec<Digest>,
}

/// Writes `images` from `store` to `out` as one archive in `format`.
///
/// The output is a deterministic tar: entries sorted by path (directories
/// `blobs/` and `blobs/sha256/`, the blobs by digest, then `index.json`,
/// `manifest.json`, `oci-layout`, `repositories`), mtime 0, uid and gid 0,
/// modes 0644 and 0755. Saving the same images with the same tags gives the
/// same bytes. Each blob is written once, however many images share it.
/// Blobs are streamed from the store and re-hashed on the way; nothing
/// larger than a manifest or config is held in memory.
///
/// ## docker-archive layout
///
/// `index.json` points at each image's *own* manifest (so the OCI side of
/// the archive keeps the image's manifest digest and its compressed layers
/// if they are compressed), with one descriptor per tag carrying
/// `io.containerd.image.name` (`docker.io/library/app:1`) and
/// `org.opencontainers.image.ref.name` (`1`), and one descriptor without
/// annotations for an untagged image. `manifest.json` must list
/// uncompressed layer tars for older `docker load`s, so it lists
/// `blobs/sha256/<diff id>`: for an uncompressed layer that is the layer
/// blob itself; for a compressed one it is an extra blob, the layer's
/// uncompressed copy (taken from the store if it holds a blob with that
/// digest, otherwise decompressed into a temporary file in the store's
/// ingest area and checked against the diff id). Such an archive therefore
/// carries compressed layers twice, once per view. `LayerSources` is never
/// written (kiln has no foreign layers). `repositories` maps the familiar
/// repository name and tag to the hex of the top layer's diff id, as
/// Docker 25 does; it is omitted when no image has a tag.
///
/// On error the output is incomplete (the end-of-archive marker is not
/// written) and must be discarded.
pub fn save<W: Write>(
    store: &Store,
    images: &[ImageSelector],
    out: W,
    format: SaveFormat,
    mut progress: impl FnMut(&Progress),
) -> Result<Vec<SavedImage>> {
    let progress: &mut dyn FnMut(&Progress) = &mut progress;
    let selected = select(store, images)?;

    let mut blobs: BTreeMap<Digest, BlobSource> = BTreeMap::new();
    let mut plans = Vec::with_capacity(selected.len());
    for (record, tags) in selected {
        plans.push(plan_image(store, record, tags, format, &mut blobs)?);
    }
    let known_bytes = blobs
        .values()
        .map(|b| match b {
            BlobSource::Stored { size } => *size,
            BlobSource::Uncompressed { .. } => 0,
            BlobSource::Inline(bytes) => bytes.len() as u64,
        })
        .sum();
    progress(&Progress::Planned {
        images: plans.len(),
        blobs: blobs.len(),
        bytes: known_bytes,
    });
    tracing::debug!(
        images = plans.len(),
        blobs = blobs.len(),
        ?format,
        "saving images"
    );

    let mut tar = TarWriter::new(BufWriter::with_capacity(1 << 20, out));
    tar.dir("blobs").map_err(Error::write)?;
    tar.dir("blobs/sha256").map_err(Error::write)?;
    for (digest, source) in &blobs {
        match source {
            BlobSource::Stored { size } => {
                write_stored_blob(store, &mut tar, digest, *size, progress)?
            }
            BlobSource::Inline(bytes) => {
                tar.bytes(&blob_path(digest), bytes).map_err(Error::write)?;
            }
            BlobSource::Uncompressed { layer, config } => {
                write_uncompressed_layer(store, &mut tar, digest, layer, config, progress)?;
            }
        }
    }

    let index = Index {
        schema_version: 2,
        media_type: Some(MEDIA_TYPE_OCI_INDEX.to_owned()),
        manifests: plans.iter().flat_map(index_descriptors).collect(),
        annotations: BTreeMap::new(),
    };
    write_json(&mut tar, "index.json", &index)?;

    if format == SaveFormat::Docker {
        let entries: Vec<DockerManifestEntry> = plans.iter().map(docker_entry).collect();
        write_json(&mut tar, "manifest.json", &entries)?;
    }
    let layout = OciLayout {
        image_layout_version: OCI_LAYOUT_VERSION.to_owned(),
    };
    write_json(&mut tar, "oci-layout", &layout)?;
    if format == SaveFormat::Docker {
        let repositories = legacy_repositories(&plans);
        if !repositories.is_empty() {
            write_json(&mut tar, "repositories", &repositories)?;
        }
    }

    let out = tar.finish().map_err(Error::write)?;
    out.into_inner()
        .map_err(|e| Error::write(e.into_error()))?
        .flush()
        .map_err(Error::write)?;

    Ok(plans
        .into_iter()
        .map(|plan| {
            progress(&Progress::ImageSaved {
                id: plan.record.id.clone(),
                tags: plan.tags.clone(),
            });
            SavedImage {
                id: plan.record.id,
                manifest_digest: plan.manifest.digest,
                tags: plan.tags,
            }
        })
        .collect())
}

/// Resolves the selectors to image records and the tags to write for each,
/// in the order first selected, each image once.
fn select(
    store: &Store,
    selectors: &[ImageSelector],
) -> Result<Vec<(ImageRecord, BTreeSet<Reference>)>> {
    let all = store.images()?;
    let mut out: Vec<(ImageRecord, BTreeSet<Reference>)> = Vec::new();
    let mut add = |record: &ImageRecord, tag: Option<&Reference>| {
        let pos = match out.iter().position(|(r, _)| r.id == record.id) {
            Some(pos) => pos,
            None => {
                out.push((record.clone(), BTreeSet::new()));
                out.len() - 1
            }
        };
        if let Some(tag) = tag {
            out[pos].1.insert(tag.clone());
        }
    };
    let holder = |tag: &Reference| all.iter().find(|r| r.tags.contains(tag));

    for selector in selectors {
        match selector {
            ImageSelector::Id(id) => {
                let record =
                    all.iter()
                        .find(|r| &r.id == id)
                        .ok_or_else(|| Error::ImageNotFound {
                            query: id.to_string(),
                        })?;
                add(record, None);
            }
            ImageSelector::Tag(tag) => {
                let tag = Reference::parse_docker_ref(&tag.to_string()).map_err(|source| {
                    Error::InvalidReference {
                        input: tag.to_string(),
                        source,
                    }
                })?;
                let record = holder(&tag).ok_or_else(|| Error::ImageNotFound {
                    query: tag.to_string(),
                })?;
                add(record, Some(&tag));
            }
            ImageSelector::Query(query) => {
                if let Ok(AnyReference::Named(named)) = AnyReference::parse(query)
                    && named.digest().is_none()
                {
                    if named.is_name_only() {
                        let mut found = false;
                        for record in &all {
                            for tag in record.tags.iter().filter(|t| t.name() == named.name()) {
                                add(record, Some(tag));
                                found = true;
                            }
                        }
                        if found {
                            continue;
                        }
                    } else if let Ok(tag) = Reference::parse_docker_ref(query)
                        && let Some(record) = holder(&tag)
                    {
                        add(record, Some(&tag));
                        continue;
                    }
                }
                // An id, id prefix, digest or repo digest: no tags.
                let record = match store.resolve(query) {
                    Ok(record) => record,
                    Err(kiln_store::Error::ImageNotFound { query }) => {
                        return Err(Error::ImageNotFound { query });
                    }
                    Err(e) => return Err(e.into()),
                };
                add(&record, None);
            }
        }
    }
    Ok(out)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MediaTypeOnly {
    #[serde(default)]
    media_type: Option<String>,
}

/// Reads an image's manifest and config from the store and adds the blobs
/// the archive needs for it to `blobs`.
fn plan_image(
    store: &Store,
    record: ImageRecord,
    tags: BTreeSet<Reference>,
    format: SaveFormat,
    blobs: &mut BTreeMap<Digest, BlobSource>,
) -> Result<ImagePlan> {
    let manifest_digest = record.manifest_digest.clone();
    let bytes = store.read_blob_bytes(&manifest_digest, MAX_DOCUMENT)?;
    let invalid = |source| Error::InvalidDocument {
        what: "image manifest",
        location: manifest_digest.to_string(),
        source,
    };
    let media_type = serde_json::from_slice::<MediaTypeOnly>(&bytes)
        .map_err(invalid)?
        .media_type
        .unwrap_or_else(|| MEDIA_TYPE_OCI_MANIFEST.to_owned());
    if !is_image_manifest(&media_type) {
        return Err(Error::UnsupportedManifest {
            id: record.id.clone(),
            manifest: manifest_digest,
            media_type,
        });
    }
    let manifest: Manifest = serde_json::from_slice(&bytes).map_err(invalid)?;

    let config_digest = &manifest.config.digest;
    let config_bytes = store.read_blob_bytes(config_digest, MAX_DOCUMENT)?;
    let config: ImageConfig =
        serde_json::from_slice(&config_bytes).map_err(|source| Error::InvalidDocument {
            what: "image config",
            location: config_digest.to_string(),
            source,
        })?;
    if config_digest != &record.config_digest {
        tracing::warn!(id = %record.id, manifest_config = %config_digest, "the manifest's config is not the image's config");
    }

    // An OCI layout holds OCI documents: a Docker manifest is converted (as
    // `skopeo copy --format oci` does), which gives it a new digest; the
    // config and layers are the same bytes.
    let (media_type, manifest_digest, bytes) =
        if format == SaveFormat::Oci && media_type == MEDIA_TYPE_DOCKER_MANIFEST {
            let converted = docker_manifest_to_oci(&bytes).map_err(invalid)?;
            let digest = Digest::sha256(&converted);
            blobs.insert(digest.clone(), BlobSource::Inline(converted.clone()));
            (MEDIA_TYPE_OCI_MANIFEST.to_owned(), digest, converted)
        } else {
            add_stored(store, blobs, &manifest_digest, Some(bytes.len() as u64))?;
            (media_type, manifest_digest, bytes)
        };
    add_stored(store, blobs, config_digest, Some(manifest.config.size))?;
    for layer in &manifest.layers {
        add_stored(store, blobs, &layer.digest, Some(layer.size))?;
    }

    let diff_ids = config.rootfs.diff_ids.clone();
    if format == SaveFormat::Docker {
        if diff_ids.len() != manifest.layers.len() {
            return Err(Error::LayerCountMismatch {
                config: config_digest.clone(),
                diff_ids: diff_ids.len(),
                layers: manifest.layers.len(),
            });
        }
        for (layer, diff_id) in manifest.layers.iter().zip(&diff_ids) {
            if &layer.digest == diff_id || blobs.contains_key(diff_id) {
                continue;
            }
            if store.has_blob(diff_id)? {
                add_stored(store, blobs, diff_id, None)?;
            } else {
                blobs.insert(
                    diff_id.clone(),
                    BlobSource::Uncompressed {
                        layer: layer.digest.clone(),
                        config: config_digest.clone(),
                    },
                );
            }
        }
    }

    let mut descriptor = Descriptor::new(&media_type, manifest_digest, bytes.len() as u64);
    descriptor.platform = config.platform();
    Ok(ImagePlan {
        record,
        tags: tags.into_iter().collect(),
        manifest: descriptor,
        config_digest: config_digest.clone(),
        diff_ids,
    })
}

/// Rewrites a Docker v2 schema 2 manifest with the OCI media types of the
/// same things (the document's other fields are kept as they are).
fn docker_manifest_to_oci(bytes: &[u8]) -> std::result::Result<Vec<u8>, serde_json::Error> {
    use serde_json::Value;
    let mut doc: Value = serde_json::from_slice(bytes)?;
    let set = |v: &mut Value, media_type: &str| {
        if let Some(obj) = v.as_object_mut() {
            obj.insert("mediaType".into(), Value::String(media_type.into()));
        }
    };
    set(&mut doc, MEDIA_TYPE_OCI_MANIFEST);
    if let Some(config) = doc.get_mut("config") {
        set(config, MEDIA_TYPE_OCI_CONFIG);
    }
    if let Some(layers) = doc.get_mut("layers").and_then(Value::as_array_mut) {
        for layer in layers {
            let oci = match layer.get("mediaType").and_then(Value::as_str) {
                Some("application/vnd.docker.image.rootfs.diff.tar.gzip") => {
                    MEDIA_TYPE_OCI_LAYER_GZIP
                }
                Some("application/vnd.docker.image.rootfs.diff.tar.zstd") => {
                    MEDIA_TYPE_OCI_LAYER_ZSTD
                }
                Some("application/vnd.docker.image.rootfs.foreign.diff.tar.gzip") => {
                    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
                }
                Some(MEDIA_TYPE_DOCKER_LAYER) => MEDIA_TYPE_OCI_LAYER,
                _ => continue,
            };
            set(layer, oci);
        }
    }
    serde_json::to_vec(&doc)
}

/// Adds a stored blob to the archive's blobs, checking its size against
/// its descriptor's.
fn add_stored(
    store: &Store,
    blobs: &mut BTreeMap<Digest, BlobSource>,
    digest: &Digest,
    expected: Option<u64>,
) -> Result<()> {
    let size = store.blob_size(digest)?;
    if let Some(expected) = expected
        && expected != size
    {
        return Err(Error::SizeMismatch {
            digest: digest.clone(),
            expected,
            actual: size,
        });
    }
    blobs.insert(digest.clone(), BlobSource::Stored { size });
    Ok(())
}

fn blob_path(digest: &Digest) -> String {
    format!("blobs/{}/{}", digest.algorithm().as_str(), digest.hex())
}

/// Streams a stored blob into the archive, checking its digest.
fn write_stored_blob<W: Write>(
    store: &Store,
    tar: &mut TarWriter<W>,
    digest: &Digest,
    size: u64,
    progress: &mut dyn FnMut(&Progress),
) -> Result<()> {
    let path = blob_path(digest);
    progress(&Progress::EntryStarted {
        path: path.clone(),
        size,
    });
    let file = store.open_blob(digest)?;
    let mut hashing = Sha256Reader::new(BufReader::with_capacity(1 << 17, file));
    let result = tar.file(
        &path,
        size,
        ProgressReader::new(&mut hashing, &path, size, progress),
    );
    match result {
        Ok(()) => {}
        Err(CopyError::Write(e)) => return Err(Error::write(e)),
        Err(CopyError::Read(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            return Err(Error::CorruptBlob {
                digest: digest.clone(),
                source: VerifyError::SizeMismatch {
                    expected: size,
                    actual: hashing.len(),
                },
            });
        }
        Err(CopyError::Read(source)) => {
            return Err(Error::ReadBlob {
                digest: digest.clone(),
                source,
            });
        }
    }
    let (actual, _) = hashing.finish();
    if &actual != digest {
        return Err(Error::CorruptBlob {
            digest: digest.clone(),
            source: VerifyError::DigestMismatch {
                expected: digest.clone(),
                actual,
            },
        });
    }
    progress(&Progress::EntryDone {
        path,
        digest: Some(digest.clone()),
        size,
        already_present: false,
    });
    Ok(())
}

/// Decompresses a stored layer into a temporary file in the store's ingest
/// area (checking it against `diff_id`), then streams that into the
/// archive as `blobs/sha256/<diff id>`.
fn write_uncompressed_layer<W: Write>(
    store: &Store,
    tar: &mut TarWriter<W>,
    diff_id: &Digest,
    layer: &Digest,
    config: &Digest,
    progress: &mut dyn FnMut(&Progress),
) -> Result<()> {
    let spool_err = |source| Error::Spool {
        digest: layer.clone(),
        source,
    };
    let ingest = store.ingest_dir();
    let tmp = tempfile::Builder::new()
        .prefix("export-")
        .tempfile_in(&ingest)
        .map_err(spool_err)?;
    let file = store.open_blob(layer)?;
    let (_, mut decompressed) = kiln_store::decompress(BufReader::with_capacity(1 << 17, file))
        .map_err(|source| Error::DecompressLayer {
            digest: layer.clone(),
            source,
        })?;
    let mut writer = Sha256Writer::new(BufWriter::with_capacity(1 << 17, tmp));
    match crate::tarball::copy_sides(&mut decompressed, &mut writer) {
        Ok(_) => {}
        Err(CopyError::Read(source)) => {
            return Err(Error::DecompressLayer {
                digest: layer.clone(),
                source: kiln_store::ExtractError::Read { source },
            });
        }
        Err(CopyError::Write(e)) => return Err(spool_err(e)),
    }
    writer.flush().map_err(spool_err)?;
    let (buffered, actual, size) = writer.into_parts();
    if &actual != diff_id {
        return Err(Error::DiffIdMismatch {
            config: config.clone(),
            layer: layer.to_string(),
            expected: diff_id.clone(),
            actual,
        });
    }
    let mut tmp = buffered
        .into_inner()
        .map_err(|e| spool_err(e.into_error()))?;
    tmp.seek(SeekFrom::Start(0)).map_err(spool_err)?;

    let path = blob_path(diff_id);
    progress(&Progress::EntryStarted {
        path: path.clone(),
        size,
    });
    let reader = BufReader::with_capacity(1 << 17, tmp.as_file_mut());
    match tar.file(
        &path,
        size,
        ProgressReader::new(reader, &path, size, progress),
    ) {
        Ok(()) => {}
        Err(CopyError::Write(e)) => return Err(Error::write(e)),
        Err(CopyError::Read(e)) => return Err(spool_err(e)),
    }
    progress(&Progress::EntryDone {
        path,
        digest: Some(diff_id.clone()),
        size,
        already_present: false,
    });
    Ok(())
}

fn write_json<W: Write, T: serde::Serialize>(
    tar: &mut TarWriter<W>,
    path: &'static str,
    value: &T,
) -> Result<()> {
    let bytes =
        serde_json::to_vec(value).map_err(|source| Error::Serialize { what: path, source })?;
    tar.bytes(path, &bytes).map_err(Error::write)
}

/// The `index.json` descriptors of an image: one per tag, or one without
/// annotations when it has none.
fn index_descriptors(plan: &ImagePlan) -> Vec<Descriptor> {
    if plan.tags.is_empty() {
        return vec![plan.manifest.clone()];
    }
    plan.tags
        .iter()
        .map(|tag| {
            let mut d = plan.manifest.clone();
            d.annotations
                .insert(ANNOTATION_IMAGE_NAME.to_owned(), tag.to_string());
            if let Some(t) = tag.tag() {
                d.annotations
                    .insert(ANNOTATION_REF_NAME.to_owned(), t.to_owned());
            }
            d
        })
        .collect()
}

fn docker_entry(plan: &ImagePlan) -> DockerManifestEntry {
    let tags: Vec<String> = plan.tags.iter().map(Reference::familiar_string).collect();
    DockerManifestEntry {
        config: blob_path(&plan.config_digest),
        repo_tags: (!tags.is_empty()).then_some(tags),
        layers: plan.diff_ids.iter().map(blob_path).collect(),
        layer_sources: None,
    }
}

fn legacy_repositories(plans: &[ImagePlan]) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut repos: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for plan in plans {
        let Some(top) = plan.diff_ids.last() else {
            continue;
        };
        for tag in &plan.tags {
            if let Some(t) = tag.tag() {
                repos
                    .entry(tag.familiar_name())
                    .or_default()
                    .insert(t.to_owned(), top.hex().to_owned());
            }
        }
    }
    repos
}
