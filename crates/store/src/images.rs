//! Image records and tags: `images.json`, guarded by `locks/images.lock`.
//!
//! All records live in one JSON file. Every mutation is a read-modify-write
//! of the whole file under an exclusive lock, and the new file replaces the
//! old one atomically (temp file, fsync, rename, directory fsync), so
//! readers never see a partial file and need no lock. One file (rather than
//! one file per image) makes multi-image updates atomic: moving a tag from
//! one image to another is a single rename. Image counts in a local store
//! are small (hundreds), so rewriting the file is cheap.

use std::collections::BTreeSet;
use std::fmt;
use std::fs;
use std::io;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kiln_oci::{Digest, Reference};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::store::{IMAGES_BACKUP, IMAGES_FILE, IMAGES_LOCK, LockGuard, Store, write_atomic};

/// Version of the `images.json` document.
pub const INDEX_VERSION: u32 = 1;

/// An image id: the digest of the image's config blob, as Docker defines it.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ImageId(Digest);

impl ImageId {
    /// The id of the image whose config blob has digest `config`.
    pub fn from_config(config: Digest) -> ImageId {
        ImageId(config)
    }

    pub fn digest(&self) -> &Digest {
        &self.0
    }

    /// The 12-hex-character short id Docker prints.
    pub fn short(&self) -> &str {
        self.0.short()
    }
}

impl fmt::Display for ImageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for ImageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ImageId({})", self.0)
    }
}

/// What the store knows about one image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The image id; always equal to `config_digest`.
    pub id: ImageId,
    /// Digest of the image manifest blob.
    pub manifest_digest: Digest,
    /// Digest of the image config blob.
    pub config_digest: Digest,
    /// When the record was created (stored as Unix seconds).
    #[serde(with = "unix_seconds")]
    pub created: SystemTime,
    /// Tags, as full normalised references (`docker.io/library/busybox:latest`).
    /// A tag belongs to at most one image.
    #[serde(default)]
    pub tags: Vec<Reference>,
    /// Digest references the image was pulled or pushed as
    /// (`docker.io/library/busybox@sha256:…`).
    #[serde(default)]
    pub repo_digests: Vec<Reference>,
}

impl ImageRecord {
    /// A record without tags, created now.
    pub fn new(manifest_digest: Digest, config_digest: Digest) -> ImageRecord {
        ImageRecord {
            id: ImageId::from_config(config_digest.clone()),
            manifest_digest,
            config_digest,
            created: SystemTime::now(),
            tags: Vec::new(),
            repo_digests: Vec::new(),
        }
    }

    /// Whether the image has no tag.
    pub fn is_dangling(&self) -> bool {
        self.tags.is_empty()
    }
}

mod unix_seconds {
    use super::{Duration, SystemTime, UNIX_EPOCH};
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        let secs = match t.duration_since(UNIX_EPOCH) {
            Ok(d) => d.as_secs() as i64,
            Err(e) => -(e.duration().as_secs() as i64),
        };
        s.serialize_i64(secs)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let secs = i64::deserialize(d)?;
        Ok(if secs >= 0 {
            UNIX_EPOCH + Duration::from_secs(secs as u64)
        } else {
            UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
        })
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct IndexFile {
    version: u32,
    images: Vec<ImageRecord>,
}

/// Normalises user input for tagging: Docker normalisation, `:latest` when
/// there is no tag; digest references are refused.
fn normalize_tag(reference: &str) -> Result<Reference> {
    let parsed =
        Reference::parse_docker_ref(reference).map_err(|source| Error::InvalidReference {
            input: reference.to_owned(),
            source,
        })?;
    if parsed.digest().is_some() {
        return Err(Error::TagHasDigest {
            reference: reference.to_owned(),
        });
    }
    Ok(parsed)
}

/// Normalises a reference already parsed by the caller.
fn normalize_reference(reference: &Reference) -> Result<Reference> {
    let text = reference.to_string();
    Reference::parse_docker_ref(&text).map_err(|source| Error::InvalidReference {
        input: text,
        source,
    })
}

impl Store {
    fn images_path(&self) -> PathBuf {
        self.root().join(IMAGES_FILE)
    }

    fn read_index(&self) -> Result<Vec<ImageRecord>> {
        let path = self.images_path();
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io("read", path, e)),
        };
        let index: IndexFile =
            serde_json::from_slice(&bytes).map_err(|source| Error::IndexCorrupt {
                path: path.clone(),
                source,
            })?;
        if index.version != INDEX_VERSION {
            return Err(Error::IndexVersion {
                path,
                found: index.version,
                supported: INDEX_VERSION,
            });
        }
        Ok(index.images)
    }

    /// Runs `f` on the index under the images lock and writes the result
    /// back atomically if `f` succeeds.
    pub(crate) fn update_index<T>(
        &self,
        f: impl FnOnce(&mut Vec<ImageRecord>) -> Result<T>,
    ) -> Result<T> {
        let _guard = LockGuard::exclusive(self.locks_dir().join(IMAGES_LOCK))?;
        let mut images = self.read_index()?;
        let out = f(&mut images)?;
        images.sort_by(|a, b| a.id.cmp(&b.id));
        let index = IndexFile {
            version: INDEX_VERSION,
            images,
        };
        let bytes = serde_json::to_vec_pretty(&index).map_err(|source| Error::Serialize {
            what: "image index",
            source,
        })?;
        write_atomic(self.root(), &self.images_path(), &bytes)?;
        // A second copy, written after the first is durable: whatever
        // damages one later, `system check --repair` restores from the
        // other.
        write_atomic(self.root(), &self.root().join(IMAGES_BACKUP), &bytes)?;
        Ok(out)
    }

    /// Replaces an unreadable `images.json` with its backup when that
    /// reads; returns whether it did.
    pub(crate) fn restore_index_backup(&self) -> Result<bool> {
        let _guard = LockGuard::exclusive(self.locks_dir().join(IMAGES_LOCK))?;
        if self.read_index().is_ok() {
            return Ok(true);
        }
        let backup = self.root().join(IMAGES_BACKUP);
        let bytes = match fs::read(&backup) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(Error::io("read", backup, e)),
        };
        match serde_json::from_slice::<IndexFile>(&bytes) {
            Ok(index) if index.version == INDEX_VERSION => {
                tracing::info!("restoring the image index from its backup");
                write_atomic(self.root(), &self.images_path(), &bytes)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// All image records, sorted by id.
    pub fn images(&self) -> Result<Vec<ImageRecord>> {
        self.read_index()
    }

    /// The record of image `id`.
    pub fn image(&self, id: &ImageId) -> Result<ImageRecord> {
        self.read_index()?
            .into_iter()
            .find(|r| &r.id == id)
            .ok_or_else(|| Error::ImageIdNotFound { id: id.clone() })
    }

    /// Adds or updates an image record and returns the stored record.
    ///
    /// If the image is already known, its manifest digest is replaced and
    /// the tags and repo digests are merged (the creation time is kept).
    /// Tags and repo digests are normalised; a tag held by another image
    /// moves to this one.
    pub fn put_image(&self, record: ImageRecord) -> Result<ImageRecord> {
        if record.id.digest() != &record.config_digest {
            return Err(Error::InvalidRecord {
                id: record.id,
                reason: "the image id must equal the config digest",
            });
        }
        let mut tags = Vec::with_capacity(record.tags.len());
        for tag in &record.tags {
            let tag = normalize_reference(tag)?;
            if tag.digest().is_some() {
                return Err(Error::TagHasDigest {
                    reference: tag.to_string(),
                });
            }
            tags.push(tag);
        }
        let repo_digests = record
            .repo_digests
            .iter()
            .map(normalize_reference)
            .collect::<Result<Vec<_>>>()?;
        self.update_index(|images| {
            for other in images.iter_mut().filter(|r| r.id != record.id) {
                other.tags.retain(|t| !tags.contains(t));
            }
            let stored = match images.iter_mut().find(|r| r.id == record.id) {
                Some(existing) => {
                    existing.manifest_digest = record.manifest_digest.clone();
                    existing.tags.extend(tags);
                    existing.repo_digests.extend(repo_digests);
                    existing
                }
                None => {
                    images.push(ImageRecord {
                        tags,
                        repo_digests,
                        ..record.clone()
                    });
                    images.last_mut().ok_or(Error::InvalidRecord {
                        id: record.id.clone(),
                        reason: "lost after insertion",
                    })?
                }
            };
            dedup_sorted(&mut stored.tags);
            dedup_sorted(&mut stored.repo_digests);
            tracing::debug!(id = %stored.id, tags = stored.tags.len(), "stored image record");
            Ok(stored.clone())
        })
    }

    /// Tags image `id` as `reference` (Docker normalisation; `:latest` is
    /// added when there is no tag). If another image held the tag, it loses
    /// it (and may become dangling). Returns the normalised tag.
    pub fn tag(&self, id: &ImageId, reference: &str) -> Result<Reference> {
        let tag = normalize_tag(reference)?;
        self.update_index(|images| {
            if !images.iter().any(|r| &r.id == id) {
                return Err(Error::ImageIdNotFound { id: id.clone() });
            }
            for record in images.iter_mut() {
                if &record.id == id {
                    if !record.tags.contains(&tag) {
                        record.tags.push(tag.clone());
                        record.tags.sort();
                    }
                } else if let Some(pos) = record.tags.iter().position(|t| t == &tag) {
                    record.tags.remove(pos);
                    tracing::debug!(%tag, from = %record.id, "tag moved away");
                }
            }
            tracing::debug!(%tag, %id, "tagged image");
            Ok(tag.clone())
        })
    }

    /// Removes a tag and returns the id of the image that held it. The
    /// image record stays, even if it is left without tags.
    pub fn untag(&self, reference: &str) -> Result<ImageId> {
        let tag = normalize_tag(reference)?;
        self.update_index(|images| {
            for record in images.iter_mut() {
                if let Some(pos) = record.tags.iter().position(|t| t == &tag) {
                    record.tags.remove(pos);
                    tracing::debug!(%tag, id = %record.id, "untagged image");
                    return Ok(record.id.clone());
                }
            }
            Err(Error::TagNotFound {
                reference: tag.to_string(),
            })
        })
    }

    /// Removes an image record (not its blobs, which garbage collection
    /// handles) and returns it.
    pub fn remove_image(&self, id: &ImageId) -> Result<ImageRecord> {
        self.update_index(|images| {
            let pos = images
                .iter()
                .position(|r| &r.id == id)
                .ok_or_else(|| Error::ImageIdNotFound { id: id.clone() })?;
            tracing::debug!(%id, "removed image record");
            Ok(images.remove(pos))
        })
    }

    /// Finds an image the way `docker` resolves an image argument:
    ///
    /// 1. a full id (`sha256:<64 hex>` or bare 64 hex) names that image;
    /// 2. otherwise, a reference (`busybox`, `busybox:1.36`,
    ///    `busybox@sha256:…`), normalised (`docker.io/library/busybox:latest`),
    ///    names the image holding that tag or repo digest;
    /// 3. otherwise, a hex prefix (optionally after `sha256:`) names the one
    ///    image whose id starts with it ([`Error::AmbiguousId`] if several
    ///    do).
    pub fn resolve(&self, query: &str) -> Result<ImageRecord> {
        let images = self.read_index()?;
        let not_found = || Error::ImageNotFound {
            query: query.to_owned(),
        };

        if let Ok(any) = kiln_oci::reference::AnyReference::parse(query) {
            match any {
                kiln_oci::reference::AnyReference::Digest(digest) => {
                    return images
                        .into_iter()
                        .find(|r| r.id.digest() == &digest)
                        .ok_or_else(not_found);
                }
                kiln_oci::reference::AnyReference::Named(_) => {
                    if let Ok(reference) = Reference::parse_docker_ref(query) {
                        let found = images.iter().find(|r| {
                            if reference.digest().is_some() {
                                r.repo_digests.contains(&reference)
                            } else {
                                r.tags.contains(&reference)
                            }
                        });
                        if let Some(found) = found {
                            return Ok(found.clone());
                        }
                    }
                }
            }
        }

        let Ok(prefix) = kiln_oci::digest::validate_hex_prefix(query) else {
            return Err(not_found());
        };
        let mut matches = images
            .into_iter()
            .filter(|r| r.id.digest().hex().starts_with(prefix));
        match (matches.next(), matches.next()) {
            (None, _) => Err(not_found()),
            (Some(one), None) => Ok(one),
            (Some(a), Some(b)) => {
                let mut candidates = vec![a.id, b.id];
                candidates.extend(matches.map(|r| r.id));
                Err(Error::AmbiguousId {
                    prefix: query.to_owned(),
                    candidates,
                })
            }
        }
    }
}

fn dedup_sorted(v: &mut Vec<Reference>) {
    let set: BTreeSet<Reference> = v.drain(..).collect();
    v.extend(set);
}
