//! Checking and repairing a store: `kiln system check [--repair]`.
//!
//! [`Store::check`] walks the whole store and reports what it finds as
//! [`Finding`]s. Some findings are problems (a blob that no longer hashes
//! to its name, an image whose documents are missing or corrupt, a
//! snapshot without metadata); others are only informational (content no
//! image refers to, stale temporary files), since other owners of content
//! (the build cache) and concurrent writers are expected to leave such
//! things around.
//!
//! With `repair`:
//!
//! - corrupt blobs are deleted (re-hashed first, right before deletion);
//! - image records whose manifest, config or layers are missing or corrupt
//!   are removed, under the image-index lock, after being checked again
//!   under that lock (so a concurrent `load` or `rmi` is never undone);
//! - snapshots without (valid) metadata are removed;
//! - blobs no image refers to are deleted only if they are older than
//!   [`STALE_AGE`], and only when every image could be read, so content a
//!   concurrent writer has just stored but not yet recorded is kept;
//! - what dead processes left (lease directories, see [`crate::lease`],
//!   and the shared `ingest/` of older kilns) is removed, as are `.tmp-`
//!   files in the root older than [`STALE_AGE`].
//!
//! Snapshots no image refers to are reported, never removed.
//!
//! Blobs live processes hold (see [`crate::lease`]) are never deleted.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use kiln_oci::Digest;

use crate::blob::remove_dir_all_writable;
use crate::error::{Error, Result};
use crate::gc::References;
use crate::image::{ImageError, descriptor_digest};
use crate::images::{ImageId, ImageRecord};
use crate::store::{IMAGES_LOCK, LockGuard, Store};
use crate::verify::SnapshotVerdict;

/// How old unreferenced blobs and temporary files must be before a repair
/// removes them: well above the longest expected write, so content that
/// concurrent writers are storing right now is left alone.
pub const STALE_AGE: Duration = Duration::from_secs(60 * 60);

/// What a blob is to an image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlobRole {
    Manifest,
    Config,
    Layer,
}

impl fmt::Display for BlobRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BlobRole::Manifest => "manifest",
            BlobRole::Config => "config",
            BlobRole::Layer => "layer",
        })
    }
}

/// One thing [`Store::check`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Finding {
    /// A blob's content no longer hashes to its name.
    CorruptBlob { digest: Digest, actual: Digest },
    /// A blob could not be read.
    UnreadableBlob { digest: Digest, error: String },
    /// `images.json` could not be read: no image was checked.
    UnreadableIndex { error: String },
    /// An image record is inconsistent in itself.
    InvalidRecord { image: ImageId, reason: String },
    /// A blob an image needs is absent.
    MissingBlob {
        image: ImageId,
        role: BlobRole,
        digest: Digest,
    },
    /// A blob an image needs is corrupt.
    CorruptImageBlob {
        image: ImageId,
        role: BlobRole,
        digest: Digest,
    },
    /// An image's manifest or config does not parse or is inconsistent.
    InvalidDocument {
        image: ImageId,
        role: BlobRole,
        digest: Digest,
        error: String,
    },
    /// A layer blob's size differs from its manifest descriptor's.
    LayerSizeMismatch {
        image: ImageId,
        digest: Digest,
        expected: u64,
        actual: u64,
    },
    /// A snapshot directory without usable metadata.
    BrokenSnapshot { chain_id: Digest, reason: String },
    /// Informational: a blob no image refers to.
    UnreferencedBlob {
        digest: Digest,
        size: u64,
        age: Duration,
    },
    /// A snapshot whose files differ from its layer.
    DamagedSnapshot {
        chain_id: Digest,
        differences: Vec<String>,
    },
    /// A damaged snapshot a mounted container or build step uses: not
    /// repaired now.
    SnapshotInUse { chain_id: Digest },
    /// Informational: a snapshot no image's layer stack uses.
    UnreferencedSnapshot { chain_id: Digest },
    /// Informational: a leftover temporary file or directory.
    StaleTemp { path: PathBuf, age: Duration },
}

impl Finding {
    /// Whether this is a problem (as opposed to an informational finding).
    pub fn is_problem(&self) -> bool {
        !matches!(
            self,
            Finding::UnreferencedBlob { .. }
                | Finding::UnreferencedSnapshot { .. }
                | Finding::StaleTemp { .. }
        )
    }

    /// The image the finding is about, if any.
    pub fn image(&self) -> Option<&ImageId> {
        match self {
            Finding::InvalidRecord { image, .. }
            | Finding::MissingBlob { image, .. }
            | Finding::CorruptImageBlob { image, .. }
            | Finding::InvalidDocument { image, .. }
            | Finding::LayerSizeMismatch { image, .. } => Some(image),
            _ => None,
        }
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Finding::CorruptBlob { digest, actual } => {
                write!(f, "blob {digest}: corrupt (content hashes to {actual})")
            }
            Finding::UnreadableBlob { digest, error } => {
                write!(f, "blob {digest}: unreadable: {error}")
            }
            Finding::UnreadableIndex { error } => {
                write!(f, "image index: unreadable: {error}")
            }
            Finding::InvalidRecord { image, reason } => write!(f, "image {image}: {reason}"),
            Finding::MissingBlob {
                image,
                role,
                digest,
            } => write!(f, "image {image}: missing blob {digest} ({role})"),
            Finding::CorruptImageBlob {
                image,
                role,
                digest,
            } => write!(f, "image {image}: corrupt blob {digest} ({role})"),
            Finding::InvalidDocument {
                image,
                role,
                digest,
                error,
            } => write!(f, "image {image}: invalid {role} {digest}: {error}"),
            Finding::LayerSizeMismatch {
                image,
                digest,
                expected,
                actual,
            } => write!(
                f,
                "image {image}: layer blob {digest} is {actual} bytes, the manifest says {expected}"
            ),
            Finding::BrokenSnapshot { chain_id, reason } => {
                write!(f, "snapshot {chain_id}: {reason}")
            }
            Finding::UnreferencedBlob { digest, size, age } => write!(
                f,
                "blob {digest}: unreferenced ({size} bytes, {} old)",
                Age(*age)
            ),
            Finding::UnreferencedSnapshot { chain_id } => {
                write!(f, "snapshot {chain_id}: unreferenced")
            }
            Finding::DamagedSnapshot {
                chain_id,
                differences,
            } => write!(
                f,
                "snapshot {chain_id}: files differ from its layer: {}",
                differences.join("; ")
            ),
            Finding::SnapshotInUse { chain_id } => write!(
                f,
                "snapshot {chain_id}: in use by a mount; repair it when nothing runs on it"
            ),
            Finding::StaleTemp { path, age } => {
                write!(f, "temporary {}: stale ({} old)", path.display(), Age(*age))
            }
        }
    }
}

/// A rough, human age: `42s`, `5m`, `3h`, `2d`.
struct Age(Duration);

impl fmt::Display for Age {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0.as_secs();
        match s {
            0..60 => write!(f, "{s}s"),
            60..3600 => write!(f, "{}m", s / 60),
            3600..86400 => write!(f, "{}h", s / 3600),
            _ => write!(f, "{}d", s / 86400),
        }
    }
}

/// A finding and whether the repair fixed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issue {
    pub finding: Finding,
    /// The repair fixed it (deleted the blob, removed the record, …).
    pub repaired: bool,
}

/// What [`Store::check`] found and did.
#[derive(Clone, Debug, Default)]
pub struct CheckReport {
    /// Blobs re-hashed.
    pub blobs: usize,
    /// Image records checked.
    pub images: usize,
    /// Snapshot directories checked.
    pub snapshots: usize,
    /// Everything found, in the order checked: blobs, images, unreferenced
    /// blobs, snapshots, temporary files.
    pub issues: Vec<Issue>,
    /// Image records the repair removed, with the tags they had.
    pub removed_images: Vec<ImageRecord>,
    /// Every image could be read, so unreferenced content was looked for.
    pub references_complete: bool,
}

impl CheckReport {
    /// Number of problems found (informational findings excluded).
    pub fn problems(&self) -> usize {
        self.issues
            .iter()
            .filter(|i| i.finding.is_problem())
            .count()
    }

    /// Number of problems the repair fixed.
    pub fn repaired(&self) -> usize {
        self.issues
            .iter()
            .filter(|i| i.finding.is_problem() && i.repaired)
            .count()
    }

    /// Whether no problem remains.
    pub fn is_clean(&self) -> bool {
        self.problems() == self.repaired()
    }

    fn push(&mut self, finding: Finding, repaired: bool) {
        if finding.is_problem() {
            tracing::warn!(%finding, repaired, "store check");
        } else {
            tracing::info!(%finding, repaired, "store check");
        }
        self.issues.push(Issue { finding, repaired });
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

fn age_of(path: &Path, now: SystemTime) -> io::Result<(fs::Metadata, Duration)> {
    let meta = fs::symlink_metadata(path)?;
    let age = now.duration_since(meta.modified()?).unwrap_or_default();
    Ok((meta, age))
}

impl Store {
    /// Checks the whole store (see the `check` module's documentation) and, with
    /// `repair`, fixes what can be fixed safely.
    ///
    /// Fails only when the store itself cannot be walked (an unreadable
    /// directory, a failed deletion); everything about its content is
    /// reported in the [`CheckReport`].
    pub fn check(&self, repair: bool) -> Result<CheckReport> {
        self.check_with(repair, true)
    }

    /// [`Store::check`]; with `contents`, every snapshot's files are also
    /// compared with its layer (see [`Store::verify_snapshot`]): slower,
    /// as each layer is unpacked again.
    pub fn check_with(&self, repair: bool, contents: bool) -> Result<CheckReport> {
        let mut report = CheckReport::default();
        let corrupt = self.check_blobs(repair, &mut report)?;
        self.check_images(repair, &corrupt, &mut report)?;
        let refs = self.check_unreferenced_blobs(repair, &corrupt, &mut report)?;
        self.check_snapshots(repair, contents, refs.as_ref(), &mut report)?;
        self.check_temporaries(repair, &mut report)?;
        tracing::info!(
            blobs = report.blobs,
            images = report.images,
            snapshots = report.snapshots,
            problems = report.problems(),
            repaired = report.repaired(),
            "store checked"
        );
        Ok(report)
    }

    /// Re-hashes every blob; returns the corrupt ones still present.
    fn check_blobs(&self, repair: bool, report: &mut CheckReport) -> Result<BTreeSet<Digest>> {
        let mut corrupt = BTreeSet::new();
        for digest in self.list_blobs()? {
            match self.verify_blob(&digest) {
                Ok(_) => report.blobs += 1,
                // Deleted concurrently (`rmi`): nothing to check.
                Err(Error::BlobNotFound { .. }) => {}
                Err(Error::BlobCorrupt { actual, .. }) => {
                    report.blobs += 1;
                    let repaired = repair && self.delete_if_still_corrupt(&digest)?;
                    if !repaired {
                        corrupt.insert(digest.clone());
                    }
                    report.push(Finding::CorruptBlob { digest, actual }, repaired);
                }
                Err(e) => {
                    report.blobs += 1;
                    let error = error_chain(&e);
                    report.push(Finding::UnreadableBlob { digest, error }, false);
                }
            }
        }
        Ok(corrupt)
    }

    /// Deletes a blob found corrupt after hashing it once more (it may
    /// have been replaced meanwhile). Returns whether it is gone.
    fn delete_if_still_corrupt(&self, digest: &Digest) -> Result<bool> {
        match self.verify_blob(digest) {
            Ok(_) => Ok(false),
            Err(Error::BlobNotFound { .. }) => Ok(true),
            Err(Error::BlobCorrupt { .. }) => {
                self.delete_blob(digest)?;
                tracing::info!(%digest, "deleted corrupt blob");
                Ok(true)
            }
            Err(e) => Err(e),
        }
    }

    /// Checks one image record: its documents and layer blobs.
    fn image_findings(&self, record: &ImageRecord, corrupt: &BTreeSet<Digest>) -> Vec<Finding> {
        let image = record.id.clone();
        let mut out = Vec::new();
        if record.id.digest() != &record.config_digest {
            out.push(Finding::InvalidRecord {
                image: image.clone(),
                reason: format!(
                    "the record's config digest {} is not its id",
                    record.config_digest
                ),
            });
        }
        let doc_finding = |role: BlobRole, digest: &Digest, e: ImageError| -> Finding {
            match e {
                ImageError::Store(Error::BlobNotFound { .. }) => Finding::MissingBlob {
                    image: image.clone(),
                    role,
                    digest: digest.clone(),
                },
                ImageError::Store(Error::BlobCorrupt { .. }) => Finding::CorruptImageBlob {
                    image: image.clone(),
                    role,
                    digest: digest.clone(),
                },
                other => Finding::InvalidDocument {
                    image: image.clone(),
                    role,
                    digest: digest.clone(),
                    error: error_chain(&other),
                },
            }
        };
        let manifest = self
            .read_manifest(&record.manifest_digest)
            .map_err(|e| out.push(doc_finding(BlobRole::Manifest, &record.manifest_digest, e)))
            .ok();
        let config = self
            .read_config(&record.config_digest)
            .map_err(|e| out.push(doc_finding(BlobRole::Config, &record.config_digest, e)))
            .ok();
        let Some(manifest) = manifest else {
            return out;
        };
        let mut layers = 0;
        for desc in manifest.layers() {
            layers += 1;
            let digest = match descriptor_digest(&record.manifest_digest, desc.digest()) {
                Ok(d) => d,
                Err(e) => {
                    out.push(Finding::InvalidDocument {
                        image: image.clone(),
                        role: BlobRole::Manifest,
                        digest: record.manifest_digest.clone(),
                        error: error_chain(&e),
                    });
                    continue;
                }
            };
            if corrupt.contains(&digest) {
                out.push(Finding::CorruptImageBlob {
                    image: image.clone(),
                    role: BlobRole::Layer,
                    digest,
                });
                continue;
            }
            match self.blob_size(&digest) {
                Ok(actual) if actual != desc.size() => out.push(Finding::LayerSizeMismatch {
                    image: image.clone(),
                    digest,
                    expected: desc.size(),
                    actual,
                }),
                Ok(_) => {}
                Err(e) => out.push(doc_finding(BlobRole::Layer, &digest, e.into())),
            }
        }
        if let Some(config) = config
            && config.rootfs.diff_ids.len() != layers
        {
            out.push(Finding::InvalidDocument {
                image: image.clone(),
                role: BlobRole::Config,
                digest: record.config_digest.clone(),
                error: format!(
                    "{} diff ids for the manifest's {layers} layers",
                    config.rootfs.diff_ids.len()
                ),
            });
        }
        out
    }

    fn check_images(
        &self,
        repair: bool,
        corrupt: &BTreeSet<Digest>,
        report: &mut CheckReport,
    ) -> Result<()> {
        let images = match self.images() {
            Ok(images) => images,
            Err(e) => {
                let error = error_chain(&e);
                let restored = repair && self.restore_index_backup()?;
                report.push(Finding::UnreadableIndex { error }, restored);
                if !restored {
                    return Ok(());
                }
                self.images()?
            }
        };
        report.images = images.len();
        let mut broken: BTreeMap<ImageId, Vec<Finding>> = BTreeMap::new();
        for record in &images {
            let findings = self.image_findings(record, corrupt);
            if !findings.is_empty() {
                broken.insert(record.id.clone(), findings);
            }
        }
        if broken.is_empty() {
            return Ok(());
        }
        if !repair {
            // Drop findings about records a concurrent `rmi` removed (or a
            // concurrent `load` replaced) while they were being checked.
            let current = self.images().unwrap_or_default();
            for (id, findings) in broken {
                if let Some(record) = current.iter().find(|r| r.id == id)
                    && !self.image_findings(record, corrupt).is_empty()
                {
                    for finding in findings {
                        report.push(finding, false);
                    }
                }
            }
            return Ok(());
        }
        // Under the index lock, check the flagged records again (a writer
        // may have stored their blobs meanwhile) and remove those still
        // broken. Writers store blobs before records, so nothing a writer
        // finishes while the lock is held can be lost.
        let removed = self.update_index(|current| {
            let mut removed = Vec::new();
            current.retain(|record| {
                if !broken.contains_key(&record.id) {
                    return true;
                }
                let findings = self.image_findings(record, corrupt);
                if findings.is_empty() {
                    return true;
                }
                removed.push((record.clone(), findings));
                false
            });
            Ok(removed)
        })?;
        for (record, findings) in removed {
            tracing::info!(id = %record.id, tags = record.tags.len(), "removed broken image record");
            for finding in findings {
                report.push(finding, true);
            }
            report.removed_images.push(record);
        }
        Ok(())
    }

    /// Reports blobs no image refers to; with `repair`, deletes those
    /// older than [`STALE_AGE`]. Returns the references when the index
    /// could be read.
    fn check_unreferenced_blobs(
        &self,
        repair: bool,
        corrupt: &BTreeSet<Digest>,
        report: &mut CheckReport,
    ) -> Result<Option<References>> {
        let Ok(images) = self.images() else {
            return Ok(None);
        };
        let refs = self.references(&images);
        report.references_complete = refs.complete;
        if !refs.complete {
            return Ok(Some(refs));
        }
        let now = SystemTime::now();
        let mut unreferenced = Vec::new();
        for digest in self.list_blobs()? {
            if refs.blobs.contains(&digest) || corrupt.contains(&digest) {
                continue;
            }
            match age_of(&self.blob_path(&digest), now) {
                Ok((meta, age)) => unreferenced.push((digest, meta.len(), age)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("stat", self.blob_path(&digest), e)),
            }
        }
        let old: Vec<&Digest> = unreferenced
            .iter()
            .filter(|(_, _, age)| *age >= STALE_AGE)
            .map(|(d, _, _)| d)
            .collect();
        let mut deleted = BTreeSet::new();
        if repair && !old.is_empty() {
            // Hold the deleters' and the index lock and look at the records
            // and holds once more, so no image recorded since the first look
            // and no blob a live process is writing or using is lost.
            let _gc = self.gc_exclusive()?;
            // Other processes' holds: this one is checking, not writing.
            let holds = self.holds_of(false)?;
            let _guard = LockGuard::exclusive(self.locks_dir().join(IMAGES_LOCK))?;
            let now_refs = self.references(&self.images()?);
            if now_refs.complete {
                for digest in old {
                    if !now_refs.blobs.contains(digest)
                        && !holds.blobs.contains(digest)
                        && self.delete_blob(digest)?
                    {
                        deleted.insert(digest.clone());
                    }
                }
            }
        }
        for (digest, size, age) in unreferenced {
            let repaired = deleted.contains(&digest);
            report.push(Finding::UnreferencedBlob { digest, size, age }, repaired);
        }
        Ok(Some(refs))
    }

    fn check_snapshots(
        &self,
        repair: bool,
        contents: bool,
        refs: Option<&References>,
        report: &mut CheckReport,
    ) -> Result<()> {
        for chain_id in self.list_snapshots()? {
            let dir = self.snapshot_dir(&chain_id);
            let reason = match self.snapshot(&chain_id) {
                Ok(Some(snapshot)) if snapshot.meta.chain_id != chain_id => Some(format!(
                    "metadata names chain id {}",
                    snapshot.meta.chain_id
                )),
                Ok(Some(snapshot)) if !snapshot.fs.is_dir() => Some("no fs directory".to_owned()),
                Ok(Some(snapshot)) => {
                    if contents {
                        self.check_snapshot_contents(&snapshot, repair, report)?;
                    }
                    None
                }
                Ok(None) if !dir.exists() => continue, // removed concurrently
                Ok(None) => Some("missing snapshot.json".to_owned()),
                Err(e) => Some(error_chain(&e)),
            };
            report.snapshots += 1;
            match reason {
                Some(reason) => {
                    let repaired = repair && {
                        self.remove_snapshot(&chain_id)?;
                        true
                    };
                    report.push(Finding::BrokenSnapshot { chain_id, reason }, repaired);
                }
                None => {
                    if let Some(refs) = refs
                        && refs.complete
                        && !refs.chains.contains(&chain_id)
                    {
                        report.push(Finding::UnreferencedSnapshot { chain_id }, false);
                    }
                }
            }
        }
        Ok(())
    }

    /// Compares a snapshot's files with its layer; with `repair`, unpacks
    /// the layer again in its place unless a mount uses it.
    fn check_snapshot_contents(
        &self,
        snapshot: &crate::Snapshot,
        repair: bool,
        report: &mut CheckReport,
    ) -> Result<()> {
        let chain_id = snapshot.meta.chain_id.clone();
        let differences = match self.verify_snapshot(snapshot)? {
            SnapshotVerdict::Damaged(d) => d,
            SnapshotVerdict::Intact | SnapshotVerdict::NoLayer => return Ok(()),
        };
        let in_use = crate::lease::mount_uses(&snapshot.fs);
        let repaired = repair && !in_use && {
            self.reunpack_snapshot(snapshot)?;
            true
        };
        report.push(
            Finding::DamagedSnapshot {
                chain_id: chain_id.clone(),
                differences,
            },
            repaired,
        );
        if repair && in_use {
            report.push(Finding::SnapshotInUse { chain_id }, false);
        }
        Ok(())
    }

    /// Reports (and with `repair` removes) what dead processes left:
    /// lease directories the reaping at open could not remove, entries of
    /// the shared `ingest/` directory older kilns wrote, and `.tmp-` files
    /// of the root older than [`STALE_AGE`] (live writers make those).
    fn check_temporaries(&self, repair: bool, report: &mut CheckReport) -> Result<()> {
        let now = SystemTime::now();
        let mut candidates = Vec::new();
        for lease in self.list_leases()? {
            if !lease.live {
                candidates.push((lease.dir, Duration::ZERO));
            }
        }
        let ingest = self.root().join(crate::store::INGEST_DIR);
        match fs::read_dir(&ingest) {
            Ok(entries) => {
                for entry in entries {
                    let entry = entry.map_err(|e| Error::io("read", &ingest, e))?;
                    candidates.push((entry.path(), Duration::ZERO));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("read", &ingest, e)),
        }
        let root = self.root();
        for entry in fs::read_dir(root).map_err(|e| Error::io("read", root, e))? {
            let entry = entry.map_err(|e| Error::io("read", root, e))?;
            if entry.file_name().to_string_lossy().starts_with(".tmp-") {
                candidates.push((entry.path(), STALE_AGE));
            }
        }
        candidates.sort();
        for (path, min_age) in candidates {
            let (meta, age) = match age_of(&path, now) {
                Ok(found) => found,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io("stat", path, e)),
            };
            if age < min_age {
                continue;
            }
            let mut repaired = false;
            if repair {
                for mount in crate::lease::mounts_below(&path) {
                    let _ = rustix::mount::unmount(&mount, rustix::mount::UnmountFlags::DETACH);
                }
                let result = if meta.is_dir() {
                    remove_dir_all_writable(&path)
                } else {
                    fs::remove_file(&path)
                };
                match result {
                    Ok(()) => repaired = true,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => repaired = true,
                    Err(e) => return Err(Error::io("remove", path, e)),
                }
            }
            report.push(Finding::StaleTemp { path, age }, repaired);
        }
        Ok(())
    }
}
