//! `load`: a docker-archive or OCI layout archive → images in the store.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{self, BufReader, Read};

use kiln_oci::config::ImageConfig;
use kiln_oci::digest::{DigestVerifier, Sha256Writer};
use kiln_oci::{Digest, Platform, Reference};
use kiln_store::{Compression, ImageId, ImageRecord, Store};

use crate::error::{Error, Result};
use crate::progress::{Progress, ProgressReader};
use crate::save::MAX_DOCUMENT;
use crate::spec::{
    ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME, Descriptor, DescriptorPlatform,
    DockerManifestEntry, Index, MEDIA_TYPE_DOCKER_LAYER, MEDIA_TYPE_OCI_CONFIG,
    MEDIA_TYPE_OCI_INDEX, MEDIA_TYPE_OCI_LAYER, MEDIA_TYPE_OCI_LAYER_GZIP,
    MEDIA_TYPE_OCI_LAYER_ZSTD, MEDIA_TYPE_OCI_MANIFEST, Manifest, OciLayout, is_image_config,
    is_image_manifest, is_index,
};
use crate::tarball::{ErrorTap, ExactReader, copy_sides};

/// How many symbolic links are followed to find a member.
const MAX_LINK_HOPS: usize = 16;

/// An image written to the store by [`load`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadedImage {
    /// The image id: its config digest.
    pub id: ImageId,
    /// The manifest the image record points at.
    pub manifest_digest: Digest,
    /// The tags the archive gave it, normalised and sorted.
    pub tags: Vec<Reference>,
}

/// A regular file of the archive, stored as a blob.
#[derive(Clone, Debug)]
struct Member {
    digest: Digest,
    size: u64,
}

/// What one pass over the archive found.
#[derive(Default)]
struct Scan {
    /// Normalised path → the blob holding its content.
    members: HashMap<String, Member>,
    /// Normalised path of a symbolic or hard link → normalised target.
    links: HashMap<String, String>,
    index: Option<Vec<u8>>,
    manifest: Option<Vec<u8>>,
    layout: Option<Vec<u8>>,
}

impl Scan {
    fn member(&self, path: &str) -> Option<&Member> {
        let mut path = normalize(path)?;
        for _ in 0..MAX_LINK_HOPS {
            if let Some(member) = self.members.get(&path) {
                return Some(member);
            }
            path = self.links.get(&path)?.clone();
        }
        None
    }
}

/// An image ready to be recorded.
struct Pending {
    id: ImageId,
    manifest_digest: Digest,
    /// The manifest was made up from `manifest.json` rather than taken
    /// from the archive: an existing record's manifest is kept.
    synthesized: bool,
    tags: BTreeSet<Reference>,
    repo_digests: BTreeSet<Reference>,
}

/// Reads an image archive from `input` and records its images in `store`.
///
/// Accepts docker-archives (the pre-25 form with `<id>/layer.tar` and
/// `<config hex>.json`, possibly with symlinked layer directories, and the
/// Docker 25+ form with `blobs/`), OCI image layout archives, and either
/// compressed with gzip or zstd. The archive is read once, as a stream:
///
/// - `blobs/sha256/<hex>` members are written to the store through
///   [`Store::write_blob`], which checks them against their name. A blob
///   the store already has is not rewritten, but still hashed and checked,
///   so that a corrupt archive is reported whatever the store holds.
/// - `index.json`, `manifest.json` and `oci-layout` are kept in memory
///   (at most 32 MiB each); `repositories` and the legacy `*/json` and
///   `*/VERSION` files are skipped.
/// - Any other regular file (`*/layer.tar`, `<hex>.json`, …) is spooled
///   into the store as a blob named by its hash; it is interpreted once
///   the documents are known. (Its bytes pass through the ingest area even
///   when the store already has them; the blob itself is not rewritten.)
///
/// Then the images are found: those of `index.json` (tags from the
/// `io.containerd.image.name` annotation, or from
/// `org.opencontainers.image.ref.name` when that holds a full reference;
/// a bare tag without a name cannot be applied and is skipped with a
/// warning; an entry that is an index, a multi-platform image, gives its
/// image for the host's platform), then those of `manifest.json` not already found (tags from
/// `RepoTags`), for which an OCI manifest with the uncompressed layers is
/// written. When both documents are present (a Docker 25+ archive), an
/// `index.json` entry that fails its checks is skipped with a warning and
/// the image is taken from `manifest.json`, which `docker load` trusts.
/// Tags are normalised with [`Reference::parse_docker_ref`].
///
/// Every image is checked before any record is written: manifest, config
/// and layer blobs present with their descriptors' sizes, as many diff ids
/// as layers, and uncompressed layers hashing to their diff ids (the diff
/// ids of compressed OCI layers are not recomputed here). Only then are the
/// image records written, one [`Store::put_image`] each; a tag held by
/// another image moves, as with `docker load`. (The store has no
/// multi-image transaction, so an I/O failure between two of these writes
/// can leave the first images recorded; nothing in the archive can.) An
/// image the store already has keeps its manifest when the archive only
/// has a `manifest.json` for it.
///
/// A truncated or corrupt archive fails with a typed error
/// ([`Error::Read`], [`Error::CorruptMember`], [`Error::MissingMember`], …)
/// and leaves the store as it was: the blobs it added are deleted again.
/// A successful load deletes the blobs it added that no image refers to
/// (members of the archive that are not part of any image).
pub fn load<R: Read>(
    store: &Store,
    input: R,
    progress: impl FnMut(&Progress),
) -> Result<Vec<LoadedImage>> {
    let mark = store.created_mark();
    let result = load_inner(store, input, progress);
    if let Err(e) = store.discard_created_since(mark) {
        tracing::warn!(error = %e, "failed to delete the blobs of the load no image refers to");
    }
    result
}

fn load_inner<R: Read>(
    store: &Store,
    input: R,
    mut progress: impl FnMut(&Progress),
) -> Result<Vec<LoadedImage>> {
    let progress: &mut dyn FnMut(&Progress) = &mut progress;
    let scan = scan(store, input, progress)?;

    if scan.index.is_none() && scan.manifest.is_none() {
        return Err(Error::NotAnImageArchive);
    }
    if let Some(bytes) = &scan.layout {
        let layout: OciLayout = parse(bytes, "oci-layout", "oci-layout")?;
        if !layout.image_layout_version.starts_with("1.") {
            return Err(Error::UnsupportedLayoutVersion {
                version: layout.image_layout_version,
            });
        }
    }

    let mut pending: Vec<Pending> = Vec::new();
    if let Some(bytes) = &scan.index {
        let index: Index = parse(bytes, "index.json", "index.json")?;
        for descriptor in &index.manifests {
            let (id, manifest_digest) = match image_of(store, descriptor, "index.json", 0) {
                Ok(found) => found,
                // In a docker-archive, manifest.json is authoritative: an
                // image index.json describes inconsistently (as some
                // Docker 25 pre-releases wrote it) is taken from there.
                Err(e) if scan.manifest.is_some() => {
                    tracing::warn!(digest = %descriptor.digest, error = %e, "ignoring index.json entry; using manifest.json");
                    continue;
                }
                Err(e) => return Err(e),
            };
            let (tags, repo_digests) = references_from_annotations(&descriptor.annotations)?;
            merge(
                &mut pending,
                Pending {
                    id,
                    manifest_digest,
                    synthesized: false,
                    tags,
                    repo_digests,
                },
            );
        }
    }
    if let Some(bytes) = &scan.manifest {
        if is_dir_layout(bytes) {
            merge(&mut pending, dir_image(store, bytes)?);
        } else {
            let entries: Vec<DockerManifestEntry> = parse(bytes, "manifest.json", "manifest.json")?;
            for entry in &entries {
                let image = docker_image(store, &scan, entry, &pending)?;
                merge(&mut pending, image);
            }
        }
    }
    if pending.is_empty() {
        return Err(Error::NoImages);
    }

    commit(store, pending, progress)
}

/// [`load`] of a directory holding what an image archive holds: an OCI
/// layout (`skopeo copy … oci:DIR`, umoci, `podman save --format oci-dir`),
/// a `dir:` layout (`skopeo copy … dir:DIR`, `podman save --format
/// docker-dir`) or an unpacked docker-archive. The directory is read as a
/// tar stream of its content; symbolic links are kept as links.
pub fn load_directory(
    store: &Store,
    dir: &std::path::Path,
    progress: impl FnMut(&Progress),
) -> Result<Vec<LoadedImage>> {
    let read_error = |source| Error::ReadDirectory {
        path: dir.to_owned(),
        source,
    };
    let (reader, writer) = io::pipe().map_err(read_error)?;
    let root = dir.to_owned();
    let tar = std::thread::spawn(move || -> io::Result<()> {
        let mut builder = tar::Builder::new(writer);
        builder.follow_symlinks(false);
        builder.append_dir_all(".", &root)?;
        builder.finish()
    });
    // `load` drops the reader when it returns, which ends the writer.
    let loaded = load(store, reader, progress);
    let written = tar
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("the directory reader panicked")));
    match (loaded, written) {
        (Ok(images), _) => Ok(images),
        // A directory that could not be read explains the load's failure.
        (Err(_), Err(e)) if e.kind() != io::ErrorKind::BrokenPipe => Err(read_error(e)),
        (Err(e), _) => Err(e),
    }
}

/// Whether `manifest.json` is that of a `dir:` layout: one image
/// manifest or index (a JSON object), where a docker-archive has a list.
fn is_dir_layout(manifest_json: &[u8]) -> bool {
    manifest_json
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'{')
}

/// The image of a `dir:` layout: `manifest.json` is its manifest (or, with
/// `skopeo copy --all`, its index, with each image's manifest in
/// `<hex>.manifest.json`), the other files are blobs named by their hex
/// digest, and are in the store already. Such a layout names no image, so
/// the image is loaded untagged.
fn dir_image(store: &Store, bytes: &[u8]) -> Result<Pending> {
    #[derive(serde::Deserialize)]
    struct Head {
        #[serde(rename = "mediaType", default)]
        media_type: Option<String>,
        #[serde(default)]
        manifests: Option<serde::de::IgnoredAny>,
    }
    let head: Head = parse(bytes, "manifest.json", "manifest.json")?;
    let media_type = match head.media_type.filter(|m| !m.is_empty()) {
        Some(media_type) => media_type,
        None if head.manifests.is_some() => MEDIA_TYPE_OCI_INDEX.to_owned(),
        None => MEDIA_TYPE_OCI_MANIFEST.to_owned(),
    };
    let digest = store.write_blob_bytes(bytes)?;
    let descriptor = Descriptor::new(&media_type, digest, bytes.len() as u64);
    let (id, manifest_digest) = image_of(store, &descriptor, "manifest.json", 0)?;
    Ok(Pending {
        id,
        manifest_digest,
        synthesized: false,
        tags: BTreeSet::new(),
        repo_digests: BTreeSet::new(),
    })
}

/// Reads the archive once, storing blobs and keeping documents.
fn scan<R: Read>(store: &Store, input: R, progress: &mut dyn FnMut(&Progress)) -> Result<Scan> {
    let (compression, reader) =
        kiln_store::decompress(input).map_err(|source| Error::Decompress { source })?;
    tracing::debug!(?compression, "reading image archive");
    let mut archive = tar::Archive::new(reader);
    let entries = archive.entries().map_err(|source| Error::Read {
        member: None,
        source,
    })?;
    let mut scan = Scan::default();
    let mut previous: Option<String> = None;
    for entry in entries {
        let mut entry = entry.map_err(|source| Error::Header {
            after: previous.clone(),
            source,
        })?;
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let Some(path) = normalize(&raw) else {
            tracing::debug!(member = %raw, "skipping archive member outside the root");
            continue;
        };
        previous = Some(path.clone());
        match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                read_file(store, &mut scan, &path, &mut entry, progress)?;
            }
            tar::EntryType::Symlink | tar::EntryType::Link => {
                let Some(target) = entry.link_name_bytes() else {
                    continue;
                };
                let target = String::from_utf8_lossy(&target).into_owned();
                let resolved = if entry.header().entry_type() == tar::EntryType::Link
                    || target.starts_with('/')
                {
                    normalize(&target)
                } else {
                    let parent = path.rsplit_once('/').map_or("", |(parent, _)| parent);
                    normalize(&format!("{parent}/{target}"))
                };
                if let Some(resolved) = resolved {
                    scan.links.insert(path, resolved);
                }
            }
            kind => tracing::trace!(member = %path, ?kind, "skipping archive member"),
        }
    }
    Ok(scan)
}

/// What a regular file of the archive is.
enum Kind {
    /// `blobs/sha256/<hex>`.
    Blob(Digest),
    /// A document kept in memory.
    Document,
    /// Not needed.
    Skip,
    /// Anything else: stored as a blob named by its hash.
    Spool,
}

fn classify(path: &str) -> Kind {
    if let Some(hex) = path.strip_prefix("blobs/sha256/")
        && let Ok(digest) = Digest::from_sha256_hex(hex)
    {
        return Kind::Blob(digest);
    }
    match path {
        "index.json" | "manifest.json" | "oci-layout" => return Kind::Document,
        "repositories" => return Kind::Skip,
        _ => {}
    }
    match path.rsplit_once('/') {
        Some((_, "json" | "VERSION")) => Kind::Skip,
        _ => Kind::Spool,
    }
}

fn read_file<R: Read>(
    store: &Store,
    scan: &mut Scan,
    path: &str,
    entry: &mut tar::Entry<'_, R>,
    progress: &mut dyn FnMut(&Progress),
) -> Result<()> {
    let size = entry.size();
    let kind = classify(path);
    if matches!(kind, Kind::Skip) {
        tracing::trace!(member = %path, "skipping legacy archive member");
        return Ok(());
    }
    progress(&Progress::EntryStarted {
        path: path.to_owned(),
        size,
    });
    let read_err = |source| Error::Read {
        member: Some(path.to_owned()),
        source,
    };
    let mut tap = ErrorTap::new(ExactReader::new(
        ProgressReader::new(entry, path, size, progress),
        size,
    ));
    let (digest, already_present) = match kind {
        Kind::Document => {
            if size > MAX_DOCUMENT {
                return Err(Error::MemberTooLarge {
                    member: path.to_owned(),
                    limit: MAX_DOCUMENT,
                });
            }
            let mut bytes = Vec::with_capacity(size as usize);
            if let Err(e) = tap.read_to_end(&mut bytes) {
                return Err(read_err(tap.error.take().unwrap_or(e)));
            }
            match path {
                "index.json" => scan.index = Some(bytes),
                "manifest.json" => scan.manifest = Some(bytes),
                _ => scan.layout = Some(bytes),
            }
            (None, false)
        }
        Kind::Blob(digest) => {
            let present = store.has_blob(&digest)?;
            if present {
                let mut verifier = DigestVerifier::with_size(io::sink(), digest.clone(), size);
                if let Err(e) = copy_sides(&mut tap, &mut verifier) {
                    return Err(read_err(tap.error.take().unwrap_or(e.into_inner())));
                }
                verifier.verify().map_err(|source| Error::CorruptMember {
                    member: path.to_owned(),
                    source,
                })?;
            } else {
                let result = store.write_blob(&mut tap, Some(&digest), Some(size));
                stored(result, &mut tap, path)?;
            }
            scan.members.insert(
                path.to_owned(),
                Member {
                    digest: digest.clone(),
                    size,
                },
            );
            (Some(digest), present)
        }
        Kind::Spool => {
            let result = store.write_blob(&mut tap, None, Some(size));
            let (digest, _) = stored(result, &mut tap, path)?;
            scan.members.insert(
                path.to_owned(),
                Member {
                    digest: digest.clone(),
                    size,
                },
            );
            (Some(digest), false)
        }
        Kind::Skip => (None, false),
    };
    progress(&Progress::EntryDone {
        path: path.to_owned(),
        digest,
        size,
        already_present,
    });
    Ok(())
}

/// Maps the result of a `write_blob` fed from the archive: a read error
/// (truncation) is reported as such, a verification failure as a corrupt
/// member.
fn stored<R>(
    result: kiln_store::Result<(Digest, u64)>,
    tap: &mut ErrorTap<R>,
    path: &str,
) -> Result<(Digest, u64)> {
    match result {
        Ok(stored) => Ok(stored),
        Err(e) => {
            if let Some(source) = tap.error.take() {
                return Err(Error::Read {
                    member: Some(path.to_owned()),
                    source,
                });
            }
            Err(match e {
                kiln_store::Error::Verify { source, .. } => Error::CorruptMember {
                    member: path.to_owned(),
                    source,
                },
                other => Error::Store(other),
            })
        }
    }
}

/// Normalises an archive path: no leading `/` or `./`, no `.` components,
/// `..` applied. `None` for the root itself or a path climbing out of it.
fn normalize(path: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            part => parts.push(part),
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

fn parse<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    what: &'static str,
    location: impl Into<String>,
) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|source| Error::InvalidDocument {
        what,
        location: location.into(),
        source,
    })
}

/// An image config, read as `docker load` reads it: `null` and missing
/// fields are fine, a value of the wrong type is an error.
fn parse_config(bytes: &[u8], location: String) -> Result<ImageConfig> {
    ImageConfig::from_json(bytes).map_err(|source| Error::InvalidDocument {
        what: "image config",
        location,
        source,
    })
}

/// OCI-typed documents from an archive must follow the image-spec as the
/// Go tools read it ([`Rules::Decoder`]: `null` is the same as missing, a
/// manifest may have no layers), as they are what writes them. Docker
/// media types have the same shape but other rules for `mediaType`.
///
/// [`Rules::Decoder`]: kiln_oci::validate::Rules::Decoder
fn spec_check(media_type: &str, bytes: &[u8], what: &'static str, digest: &Digest) -> Result<()> {
    use kiln_oci::validate::{
        MEDIA_TYPE_CONFIG, MEDIA_TYPE_INDEX, MEDIA_TYPE_MANIFEST, Rules, validate_with,
    };
    if media_type == MEDIA_TYPE_MANIFEST
        || media_type == MEDIA_TYPE_CONFIG
        || media_type == MEDIA_TYPE_INDEX
    {
        validate_with(media_type, bytes, Rules::Decoder).map_err(|source| {
            Error::NotSpecCompliant {
                what,
                location: digest.to_string(),
                source,
            }
        })?;
    }
    Ok(())
}

/// Checks that a blob is in the store with the descriptor's size.
fn check_blob(store: &Store, digest: &Digest, size: u64, referenced_by: &str) -> Result<()> {
    if !store.has_blob(digest)? {
        return Err(Error::MissingBlob {
            digest: digest.clone(),
            referenced_by: referenced_by.to_owned(),
        });
    }
    let actual = store.blob_size(digest)?;
    if actual != size {
        return Err(Error::SizeMismatch {
            digest: digest.clone(),
            expected: size,
            actual,
        });
    }
    Ok(())
}

fn is_uncompressed_layer(media_type: &str) -> bool {
    media_type == MEDIA_TYPE_OCI_LAYER || media_type == MEDIA_TYPE_DOCKER_LAYER
}

/// How deep indexes may nest below `index.json`.
const MAX_INDEX_DEPTH: usize = 4;

/// The image a descriptor of `index.json` (or of an index below it) names:
/// an image manifest is that image; an index (a multi-platform image, as
/// `docker save`, `skopeo copy --all`, `buildah manifest push --all` and
/// BuildKit's OCI exporter write them) stands for its image for the host's
/// platform, as `docker load` unpacks it. Only the chosen image's blobs
/// need to be in the archive. Returns the image id and manifest digest.
fn image_of(
    store: &Store,
    descriptor: &Descriptor,
    referenced_by: &str,
    depth: usize,
) -> Result<(ImageId, Digest)> {
    if !is_index(&descriptor.media_type) {
        return check_oci_image(store, descriptor, referenced_by);
    }
    let digest = &descriptor.digest;
    if depth >= MAX_INDEX_DEPTH {
        return Err(Error::IndexTooDeep {
            digest: digest.clone(),
            limit: MAX_INDEX_DEPTH,
        });
    }
    check_blob(store, digest, descriptor.size, referenced_by)?;
    let bytes = store.read_blob_bytes(digest, MAX_DOCUMENT)?;
    spec_check(&descriptor.media_type, &bytes, "image index", digest)?;
    let index: Index = parse(&bytes, "image index", digest.to_string())?;
    let host = Platform::host();
    let chosen =
        select_platform(&index.manifests, &host).ok_or_else(|| Error::NoMatchingPlatform {
            digest: digest.clone(),
            platform: host.to_string(),
            available: index
                .manifests
                .iter()
                .filter_map(|d| d.platform.as_ref())
                .map(|p| platform_of(p).to_string())
                .collect(),
        })?;
    tracing::debug!(index = %digest, chosen = %chosen.digest, platform = %host, "selected the host's image from an index");
    image_of(store, chosen, &format!("index {digest}"), depth + 1)
}

fn platform_of(p: &DescriptorPlatform) -> Platform {
    Platform {
        architecture: p.architecture.clone(),
        os: p.os.clone(),
        variant: p.variant.clone().filter(|v| !v.is_empty()),
    }
}

/// The entry of an index for `wanted`, as containerd picks it: the exact
/// platform, else the one `wanted` runs that it prefers most, else the
/// first entry without a platform. Attestations (`unknown/unknown`) and
/// entries of other media types are never picked.
fn select_platform<'a>(entries: &'a [Descriptor], wanted: &Platform) -> Option<&'a Descriptor> {
    let usable = entries
        .iter()
        .filter(|d| is_image_manifest(&d.media_type) || is_index(&d.media_type));
    wanted
        .pick(
            usable
                .clone()
                .filter_map(|d| d.platform.as_ref().map(|p| (d, platform_of(p)))),
        )
        .or_else(|| usable.clone().find(|d| d.platform.is_none()))
}

/// Checks an image named by a descriptor of `index.json` or of an index;
/// returns its id and manifest digest.
fn check_oci_image(
    store: &Store,
    descriptor: &Descriptor,
    referenced_by: &str,
) -> Result<(ImageId, Digest)> {
    let digest = &descriptor.digest;
    if !is_image_manifest(&descriptor.media_type) {
        return Err(Error::UnsupportedMediaType {
            digest: digest.clone(),
            media_type: descriptor.media_type.clone(),
            role: "an image (an image manifest or an index)",
        });
    }
    check_blob(store, digest, descriptor.size, referenced_by)?;
    let bytes = store.read_blob_bytes(digest, MAX_DOCUMENT)?;
    spec_check(&descriptor.media_type, &bytes, "image manifest", digest)?;
    let manifest: Manifest = parse(&bytes, "image manifest", digest.to_string())?;
    if let Some(declared) = &manifest.media_type
        && declared != &descriptor.media_type
    {
        tracing::warn!(%digest, %declared, descriptor = %descriptor.media_type, "manifest media type differs from its descriptor's");
    }
    let manifest_ref = format!("manifest {digest}");
    let config_desc = &manifest.config;
    if !is_image_config(&config_desc.media_type) {
        return Err(Error::UnsupportedMediaType {
            digest: config_desc.digest.clone(),
            media_type: config_desc.media_type.clone(),
            role: "an image config",
        });
    }
    check_blob(store, &config_desc.digest, config_desc.size, &manifest_ref)?;
    let config_bytes = store.read_blob_bytes(&config_desc.digest, MAX_DOCUMENT)?;
    spec_check(
        &config_desc.media_type,
        &config_bytes,
        "image config",
        &config_desc.digest,
    )?;
    let config = parse_config(&config_bytes, config_desc.digest.to_string())?;
    let diff_ids = &config.rootfs.diff_ids;
    if diff_ids.len() != manifest.layers.len() {
        return Err(Error::LayerCountMismatch {
            config: config_desc.digest.clone(),
            diff_ids: diff_ids.len(),
            layers: manifest.layers.len(),
        });
    }
    for (layer, diff_id) in manifest.layers.iter().zip(diff_ids) {
        check_blob(store, &layer.digest, layer.size, &manifest_ref)?;
        if is_uncompressed_layer(&layer.media_type) && &layer.digest != diff_id {
            return Err(Error::DiffIdMismatch {
                config: config_desc.digest.clone(),
                layer: layer.digest.to_string(),
                expected: diff_id.clone(),
                actual: layer.digest.clone(),
            });
        }
    }
    Ok((
        ImageId::from_config(config_desc.digest.clone()),
        digest.clone(),
    ))
}

type References = (BTreeSet<Reference>, BTreeSet<Reference>);

fn parse_reference(input: &str) -> Result<Reference> {
    Reference::parse_docker_ref(input).map_err(|source| Error::InvalidReference {
        input: input.to_owned(),
        source,
    })
}

fn add_reference(refs: &mut References, reference: Reference) {
    if reference.digest().is_some() {
        refs.1.insert(reference);
    } else {
        refs.0.insert(reference);
    }
}

/// Tags and repo digests from an `index.json` descriptor's annotations.
fn references_from_annotations(annotations: &BTreeMap<String, String>) -> Result<References> {
    let mut refs = References::default();
    if let Some(name) = annotations.get(ANNOTATION_IMAGE_NAME) {
        add_reference(&mut refs, parse_reference(name)?);
    } else if let Some(name) = annotations.get(ANNOTATION_REF_NAME) {
        // Per containerd's convention ref.name is only the tag, which says
        // nothing about the repository; other tools put a full reference.
        if name.contains('/') || name.contains(':') {
            match Reference::parse_docker_ref(name) {
                Ok(reference) => add_reference(&mut refs, reference),
                Err(e) => {
                    tracing::warn!(ref_name = %name, error = %e, "ignoring unparsable ref name")
                }
            }
        } else {
            tracing::warn!(ref_name = %name, "ref name without a repository; loading the image untagged");
        }
    }
    Ok(refs)
}

/// An image of `manifest.json`. If `index.json` already gave it, only its
/// tags are taken; otherwise its layers are checked against the config's
/// diff ids and an OCI manifest is written for it.
fn docker_image(
    store: &Store,
    scan: &Scan,
    entry: &DockerManifestEntry,
    known: &[Pending],
) -> Result<Pending> {
    let missing = |path: &str| Error::MissingMember {
        path: path.to_owned(),
        referenced_by: "manifest.json".to_owned(),
    };
    let config_member = scan
        .member(&entry.config)
        .ok_or_else(|| missing(&entry.config))?;
    let config_digest = config_member.digest.clone();
    let id = ImageId::from_config(config_digest.clone());

    let mut refs = References::default();
    for tag in entry.repo_tags.iter().flatten() {
        add_reference(&mut refs, parse_reference(tag)?);
    }
    if let Some(found) = known.iter().find(|p| p.id == id) {
        return Ok(Pending {
            id,
            manifest_digest: found.manifest_digest.clone(),
            synthesized: found.synthesized,
            tags: refs.0,
            repo_digests: refs.1,
        });
    }

    let config_bytes = store.read_blob_bytes(&config_digest, MAX_DOCUMENT)?;
    let config = parse_config(&config_bytes, entry.config.clone())?;
    let diff_ids = &config.rootfs.diff_ids;
    if diff_ids.len() != entry.layers.len() {
        return Err(Error::LayerCountMismatch {
            config: config_digest,
            diff_ids: diff_ids.len(),
            layers: entry.layers.len(),
        });
    }
    let mut layers = Vec::with_capacity(entry.layers.len());
    for (path, diff_id) in entry.layers.iter().zip(diff_ids) {
        let member = scan.member(path).ok_or_else(|| missing(path))?;
        let (compression, actual) = if &member.digest == diff_id {
            (Compression::None, member.digest.clone())
        } else {
            uncompressed_digest(store, &member.digest)?
        };
        if &actual != diff_id {
            return Err(Error::DiffIdMismatch {
                config: config_digest,
                layer: path.clone(),
                expected: diff_id.clone(),
                actual,
            });
        }
        let media_type = match compression {
            Compression::None => MEDIA_TYPE_OCI_LAYER,
            Compression::Gzip => MEDIA_TYPE_OCI_LAYER_GZIP,
            Compression::Zstd => MEDIA_TYPE_OCI_LAYER_ZSTD,
        };
        layers.push(Descriptor::new(
            media_type,
            member.digest.clone(),
            member.size,
        ));
    }
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(MEDIA_TYPE_OCI_MANIFEST.to_owned()),
        config: Descriptor::new(MEDIA_TYPE_OCI_CONFIG, config_digest, config_member.size),
        layers,
        annotations: BTreeMap::new(),
    };
    let bytes = serde_json::to_vec(&manifest).map_err(|source| Error::Serialize {
        what: "image manifest",
        source,
    })?;
    let manifest_digest = store.write_blob_bytes(&bytes)?;
    Ok(Pending {
        id,
        manifest_digest,
        synthesized: true,
        tags: refs.0,
        repo_digests: refs.1,
    })
}

/// The compression of a stored layer blob and the digest of its
/// uncompressed content.
fn uncompressed_digest(store: &Store, digest: &Digest) -> Result<(Compression, Digest)> {
    let file = store.open_blob(digest)?;
    let (compression, mut reader) = kiln_store::decompress(BufReader::with_capacity(1 << 17, file))
        .map_err(|source| Error::DecompressLayer {
            digest: digest.clone(),
            source,
        })?;
    let mut hasher = Sha256Writer::default();
    copy_sides(&mut reader, &mut hasher).map_err(|e| Error::DecompressLayer {
        digest: digest.clone(),
        source: kiln_store::ExtractError::Read {
            source: e.into_inner(),
        },
    })?;
    Ok((compression, hasher.finish().0))
}

/// Adds an image, or merges its tags into the same image found earlier.
fn merge(pending: &mut Vec<Pending>, image: Pending) {
    match pending.iter_mut().find(|p| p.id == image.id) {
        Some(existing) => {
            existing.tags.extend(image.tags);
            existing.repo_digests.extend(image.repo_digests);
        }
        None => pending.push(image),
    }
}

/// Writes the image records.
fn commit(
    store: &Store,
    pending: Vec<Pending>,
    progress: &mut dyn FnMut(&Progress),
) -> Result<Vec<LoadedImage>> {
    let existing = store.images()?;
    let mut loaded = Vec::with_capacity(pending.len());
    for image in pending {
        let manifest_digest = match existing.iter().find(|r| r.id == image.id) {
            Some(record) if image.synthesized => record.manifest_digest.clone(),
            _ => image.manifest_digest,
        };
        let mut record = ImageRecord::new(manifest_digest.clone(), image.id.digest().clone());
        record.tags = image.tags.iter().cloned().collect();
        record.repo_digests = image.repo_digests.into_iter().collect();
        let stored = store.put_image(record)?;
        let tags: Vec<Reference> = image.tags.into_iter().collect();
        tracing::info!(id = %stored.id, tags = tags.len(), "loaded image");
        progress(&Progress::ImageLoaded {
            id: stored.id.clone(),
            tags: tags.clone(),
        });
        loaded.push(LoadedImage {
            id: stored.id,
            manifest_digest: stored.manifest_digest,
            tags,
        });
    }
    Ok(loaded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_member_paths() {
        assert_eq!(normalize("./a/b").as_deref(), Some("a/b"));
        assert_eq!(normalize("/a//b/").as_deref(), Some("a/b"));
        assert_eq!(normalize("a/../b").as_deref(), Some("b"));
        assert_eq!(normalize("./"), None);
        assert_eq!(normalize("../a"), None);
    }

    #[test]
    fn classifies_members() {
        let hex = "a".repeat(64);
        assert!(matches!(
            classify(&format!("blobs/sha256/{hex}")),
            Kind::Blob(_)
        ));
        assert!(matches!(classify("blobs/sha256/short"), Kind::Spool));
        assert!(matches!(classify("index.json"), Kind::Document));
        assert!(matches!(classify("repositories"), Kind::Skip));
        assert!(matches!(classify(&format!("{hex}/json")), Kind::Skip));
        assert!(matches!(classify(&format!("{hex}/VERSION")), Kind::Skip));
        assert!(matches!(classify(&format!("{hex}/layer.tar")), Kind::Spool));
        assert!(matches!(classify(&format!("{hex}.json")), Kind::Spool));
    }

    #[test]
    fn ref_name_annotations() {
        let annotations = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>()
        };
        let tags = |a| references_from_annotations(&a).unwrap().0;
        let one = |s| BTreeSet::from([Reference::parse_docker_ref(s).unwrap()]);
        assert_eq!(
            tags(annotations(&[
                (ANNOTATION_IMAGE_NAME, "docker.io/library/app:1"),
                (ANNOTATION_REF_NAME, "1"),
            ])),
            one("app:1")
        );
        assert_eq!(
            tags(annotations(&[(ANNOTATION_REF_NAME, "app:2")])),
            one("app:2")
        );
        assert!(tags(annotations(&[(ANNOTATION_REF_NAME, "latest")])).is_empty());
        assert!(
            references_from_annotations(&annotations(&[(ANNOTATION_IMAGE_NAME, "Bad Name")]))
                .is_err()
        );
    }
}
