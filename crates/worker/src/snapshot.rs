//! Turning a directory of changes into a layer of the store: the layer
//! tar (a blob, when wanted) and its diff id, and the directory itself
//! renamed into `snapshots/<chain-id>/fs` (it already is an overlay lower
//! directory, so nothing is re-extracted).
//!
//! Publishing follows `kiln-store`'s snapshot protocol: the snapshot is
//! assembled in `ingest/snapshot-XXXXXX/` (`fs/` and `snapshot.json`) and
//! renamed into `snapshots/` under `locks/snapshot-<hex>.lock`. A snapshot
//! already there for the chain id has the same content by construction
//! (same diff ids) and wins.

use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use kiln_oci::Digest;
use kiln_runtime::{DiffOptions, write_diff};
use kiln_store::{LayerStats, SnapshotMeta, Store, media_type};

use crate::error::{Error, Result};
use crate::fsref::{FsRef, Layer, LayerBlob};

/// What to do with a directory of changes.
pub(crate) struct Commit<'a> {
    pub store: &'a Store,
    /// The stack the changes apply to.
    pub parent: &'a FsRef,
    /// The directory (an overlay upper or plain content); moved away.
    pub dir: &'a Path,
    /// Paths relative to `dir` to leave out when they are empty (mount
    /// points the runtime created).
    pub placeholders: &'a [PathBuf],
    /// Store the layer tar as a blob.
    pub write_blob: bool,
    pub source_date_epoch: Option<i64>,
}

impl Commit<'_> {
    /// Blocking.
    pub(crate) fn run(self) -> Result<Layer> {
        let store = self.store;
        // Mount points the runtime created are not changes: remove them,
        // and the directories copied up only to hold them.
        prune_placeholders(self.dir, self.placeholders, &self.parent.lowers());
        let options = DiffOptions {
            source_date_epoch: self.source_date_epoch,
            skip_placeholders: Vec::new(),
        };
        let (summary, blob) = if self.write_blob {
            let (summary, blob) = store_layer_tar(store, self.dir, &options, None)?;
            (summary, Some(blob))
        } else {
            let summary =
                write_diff(self.dir, std::io::sink(), &options).map_err(|source| Error::Diff {
                    path: self.dir.to_owned(),
                    source,
                })?;
            (summary, None)
        };
        let chain_id = self.parent.chain_id_with(&summary.diff_id);
        let stats = LayerStats {
            entries: summary.entries,
            ..LayerStats::default()
        };
        let snapshot_dir = publish(
            store,
            &chain_id,
            self.dir,
            &summary.diff_id,
            blob.as_ref(),
            stats,
        )?;
        Ok(Layer {
            diff_id: summary.diff_id,
            snapshot_id: chain_id,
            snapshot_dir,
            blob,
            empty: summary.entries == 0,
        })
    }
}

/// The stored tar of `layer`, written now from its snapshot when the
/// layer has none (a local source used as a whole root filesystem, as
/// with `FROM <named context>`). The tar must hash to the layer's diff id.
pub fn layer_blob(store: &Store, layer: &Layer) -> Result<LayerBlob> {
    if let Some(b) = &layer.blob {
        return Ok(b.clone());
    }
    if let Ok(size) = store.blob_size(&layer.diff_id) {
        return Ok(LayerBlob {
            digest: layer.diff_id.clone(),
            size,
            media_type: media_type::DOCKER_LAYER_TAR.to_owned(),
        });
    }
    let (_, blob) = store_layer_tar(
        store,
        &layer.snapshot_dir,
        &DiffOptions::default(),
        Some(&layer.diff_id),
    )?;
    Ok(blob)
}

/// Writes the layer tar of `dir` into the store as an uncompressed blob,
/// in one pass (the tar is hashed as it is written), checked against
/// `expected` when given.
fn store_layer_tar(
    store: &Store,
    dir: &Path,
    options: &DiffOptions,
    expected: Option<&Digest>,
) -> Result<(kiln_runtime::DiffSummary, LayerBlob)> {
    let mut blob = store.blob_writer()?;
    let summary = {
        let mut w = BufWriter::with_capacity(1 << 20, &mut blob);
        let s = write_diff(dir, &mut w, options).map_err(|source| Error::Diff {
            path: dir.to_owned(),
            source,
        })?;
        w.flush()
            .map_err(|e| Error::io("write a layer of", dir, e))?;
        s
    };
    if let Some(expected) = expected
        && *expected != summary.diff_id
    {
        return Err(Error::LayerMismatch {
            dir: dir.to_owned(),
            expected: expected.clone(),
            actual: summary.diff_id.clone(),
        });
    }
    // write_diff hashed exactly the bytes it wrote.
    let size = blob.commit_as(&summary.diff_id)?;
    let blob = LayerBlob {
        digest: summary.diff_id.clone(),
        size,
        media_type: media_type::DOCKER_LAYER_TAR.to_owned(),
    };
    Ok((summary, blob))
}

/// Removes `placeholders` (relative to `upper`) that are still empty,
/// then every directory of `upper` that is empty, not opaque and has the
/// mode and owner of the lower directory it covers: such a directory was
/// only copied up (to hold a mount point, or a file created and removed
/// again) and changes nothing but its mtime.
fn prune_placeholders(upper: &Path, placeholders: &[PathBuf], lowers: &[PathBuf]) {
    for p in placeholders {
        remove_if_empty(&upper.join(p));
    }
    prune_dir(upper, Path::new(""), lowers);
}

/// Returns whether `upper/rel` is now empty.
fn prune_dir(upper: &Path, rel: &Path, lowers: &[PathBuf]) -> bool {
    use std::os::unix::fs::MetadataExt;
    let dir = upper.join(rel);
    let Ok(entries) = fs::read_dir(&dir) else {
        return false;
    };
    let mut empty = true;
    for e in entries {
        let Ok(e) = e else {
            empty = false;
            continue;
        };
        let child = rel.join(e.file_name());
        let is_dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false);
        if !is_dir || !prune_dir(upper, &child, lowers) {
            empty = false;
            continue;
        }
        let path = upper.join(&child);
        let opaque = rustix::fs::lgetxattr(&path, "trusted.overlay.opaque", &mut [0u8; 4]).is_ok();
        let Ok(md) = fs::symlink_metadata(&path) else {
            empty = false;
            continue;
        };
        let same = lowers
            .iter()
            .find_map(|l| fs::symlink_metadata(l.join(&child)).ok())
            .is_some_and(|l| {
                l.is_dir() && l.mode() == md.mode() && l.uid() == md.uid() && l.gid() == md.gid()
            });
        if opaque || !same || fs::remove_dir(&path).is_err() {
            empty = false;
        }
    }
    empty
}

fn remove_if_empty(path: &Path) {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_file() && m.len() == 0 => {
            let _ = fs::remove_file(path);
        }
        Ok(m) if m.is_dir() => {
            let _ = fs::remove_dir(path);
        }
        _ => {}
    }
}

/// Moves `content` into `snapshots/<chain_id>/fs` (unless the snapshot
/// exists) and returns the `fs` path.
fn publish(
    store: &Store,
    chain_id: &Digest,
    content: &Path,
    diff_id: &Digest,
    blob: Option<&LayerBlob>,
    stats: LayerStats,
) -> Result<PathBuf> {
    if let Some(s) = store.snapshot(chain_id)? {
        tracing::debug!(%chain_id, "snapshot exists; discarding the new copy");
        return Ok(s.fs);
    }
    let created = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let meta = SnapshotMeta {
        chain_id: chain_id.clone(),
        layer: blob.map_or_else(|| diff_id.clone(), |b| b.digest.clone()),
        diff_id: diff_id.clone(),
        compression: "none".to_owned(),
        created,
        stats,
        unsynced: None,
    };
    // Not synced now: the layer tar is a durable blob already, and the
    // build syncs the filesystem once at its end (Store::sync_deferred).
    let snapshot = store.publish_snapshot_deferred(content, meta)?;
    tracing::debug!(%chain_id, %diff_id, "published snapshot");
    Ok(snapshot.fs)
}

/// A fresh directory in the store's ingest area to assemble source
/// content in (same filesystem as `snapshots/`).
pub(crate) fn staging_dir(store: &Store, prefix: &str) -> Result<tempfile::TempDir> {
    let ingest = store.ingest_dir();
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(&ingest)
        .map_err(|e| Error::io("create temporary directory in", &ingest, e))
}
