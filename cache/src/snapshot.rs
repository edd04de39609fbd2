//! Unpacked layers: `snapshots/<chain-id hex>/{fs/,snapshot.json}`.
//!
//! A snapshot holds one layer's content unpacked in
//! [`ExtractMode::Overlay`] form, ready to be an overlayfs lower
//! directory; the chain id (not the layer digest) names it, as the lower
//! stack it tops is what identifies it. Snapshots are unpacked into a
//! temporary directory in `ingest/` and renamed into place, under a
//! per-snapshot lock, so concurrent callers unpack a layer once and nobody
//! sees a half-unpacked snapshot.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use kiln_oci::Digest;
use kiln_oci::digest::Sha256Reader;
use serde::{Deserialize, Serialize};

use crate::blob::remove_dir_all_writable;
use crate::compression::{Compression, decompress};
use crate::error::{Error, ExtractError, Result};
use crate::extract::{ExtractMode, ExtractOptions, LayerStats, extract_layer};
use crate::store::{LockGuard, SNAPSHOTS_DIR, Store, fsync_dir, write_atomic};

const SNAPSHOT_META: &str = "snapshot.json";
const SNAPSHOT_FS: &str = "fs";

/// What `snapshot.json` records about a snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    pub chain_id: Digest,
    /// The layer blob it was unpacked from.
    pub layer: Digest,
    /// sha256 of the uncompressed layer tar (the config's `diff_id`).
    pub diff_id: Digest,
    /// `"none"`, `"gzip"` or `"zstd"`.
    pub compression: String,
    /// When it was unpacked (Unix seconds).
    pub created: u64,
    pub stats: LayerStats,
}

/// An unpacked layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// `snapshots/<hex>`.
    pub dir: PathBuf,
    /// `snapshots/<hex>/fs`: the overlayfs lower directory.
    pub fs: PathBuf,
    pub meta: SnapshotMeta,
}

fn compression_name(c: Compression) -> &'static str {
    match c {
        Compression::None => "none",
        Compression::Gzip => "gzip",
        Compression::Zstd => "zstd",
    }
}

impl Store {
    /// `snapshots/<hex of chain_id>`. Does no I/O.
    pub fn snapshot_dir(&self, chain_id: &Digest) -> PathBuf {
        self.root().join(SNAPSHOTS_DIR).join(chain_id.hex())
    }

    fn snapshot_lock(&self, chain_id: &Digest) -> Result<LockGuard> {
        LockGuard::exclusive(
            self.locks_dir()
                .join(format!("snapshot-{}.lock", chain_id.hex())),
        )
    }

    /// The snapshot for `chain_id`, if it has been unpacked.
    pub fn snapshot(&self, chain_id: &Digest) -> Result<Option<Snapshot>> {
        let dir = self.snapshot_dir(chain_id);
        let meta_path = dir.join(SNAPSHOT_META);
        let bytes = match fs::read(&meta_path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("read", meta_path, e)),
        };
        let meta: SnapshotMeta =
            serde_json::from_slice(&bytes).map_err(|source| Error::SnapshotCorrupt {
                path: meta_path,
                source,
            })?;
        Ok(Some(Snapshot {
            fs: dir.join(SNAPSHOT_FS),
            dir,
            meta,
        }))
    }

    /// Unpacks layer blob `layer` (plain, gzip or zstd) as snapshot
    /// `chain_id`, unless already done, and returns it. Concurrent callers
    /// (threads or processes) unpack it once.
    pub fn prepare_snapshot(&self, chain_id: &Digest, layer: &Digest) -> Result<Snapshot> {
        if let Some(snapshot) = self.snapshot(chain_id)? {
            return Ok(snapshot);
        }
        let _guard = self.snapshot_lock(chain_id)?;
        if let Some(snapshot) = self.snapshot(chain_id)? {
            tracing::debug!(%chain_id, "snapshot unpacked concurrently");
            return Ok(snapshot);
        }
        let ingest = self.ingest_dir();
        let tmp = tempfile::Builder::new()
            .prefix("snapshot-")
            .tempdir_in(&ingest)
            .map_err(|e| Error::io("create temporary directory in", &ingest, e))?;
        match self.unpack_into(tmp.path(), chain_id, layer) {
            Ok(meta) => {
                tracing::info!(%chain_id, %layer, files = meta.stats.files, bytes = meta.stats.bytes, "unpacked layer");
                self.install_snapshot(tmp, meta)
            }
            Err(e) => {
                if let Err(err) = remove_dir_all_writable(tmp.path()) {
                    tracing::warn!(path = %tmp.path().display(), error = %err, "failed to remove partial snapshot");
                }
                Err(e)
            }
        }
    }

    fn unpack_into(&self, tmp: &Path, chain_id: &Digest, layer: &Digest) -> Result<SnapshotMeta> {
        let fs_dir = tmp.join(SNAPSHOT_FS);
        fs::create_dir(&fs_dir).map_err(|e| Error::io("create directory", &fs_dir, e))?;
        let blob = self.open_blob(layer)?;
        let unpack_err = |source: ExtractError| Error::Unpack {
            chain_id: chain_id.clone(),
            layer: layer.clone(),
            source,
        };
        let (compression, reader) = decompress(blob).map_err(unpack_err)?;
        let mut reader = Sha256Reader::new(reader);
        let stats = extract_layer(
            &mut reader,
            &fs_dir,
            &ExtractOptions::new(ExtractMode::Overlay),
        )
        .map_err(unpack_err)?;
        // The tar reader stops at the end-of-archive marker: hash the rest
        // too, so the digest is the diff id of the whole stream.
        io::copy(&mut reader, &mut io::sink())
            .map_err(|source| unpack_err(ExtractError::Read { source }))?;
        let (diff_id, _) = reader.finish();
        let created = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let meta = SnapshotMeta {
            chain_id: chain_id.clone(),
            layer: layer.clone(),
            diff_id,
            compression: compression_name(compression).to_owned(),
            created,
            stats,
        };
        Ok(meta)
    }

    /// Publishes a snapshot made elsewhere on the store's filesystem (the
    /// build worker's committed upper directories): `content` is moved to
    /// `snapshots/<chain id>/fs` with `meta`, under the snapshot's lock,
    /// unless the snapshot already exists (then `content` is left where it
    /// is for the caller to discard).
    pub fn publish_snapshot(&self, content: &Path, meta: SnapshotMeta) -> Result<Snapshot> {
        let chain_id = meta.chain_id.clone();
        if let Some(snapshot) = self.snapshot(&chain_id)? {
            return Ok(snapshot);
        }
        let _guard = self.snapshot_lock(&chain_id)?;
        if let Some(snapshot) = self.snapshot(&chain_id)? {
            return Ok(snapshot);
        }
        let ingest = self.ingest_dir();
        let tmp = tempfile::Builder::new()
            .prefix("snapshot-")
            .tempdir_in(&ingest)
            .map_err(|e| Error::io("create temporary directory in", &ingest, e))?;
        let fs_dir = tmp.path().join(SNAPSHOT_FS);
        fs::rename(content, &fs_dir).map_err(|e| Error::io("move into the store", content, e))?;
        self.install_snapshot(tmp, meta)
    }

    /// Makes `tmp` (holding `fs/`) durable with its metadata and renames it
    /// into `snapshots/`. The caller holds the snapshot's lock.
    fn install_snapshot(&self, tmp: tempfile::TempDir, meta: SnapshotMeta) -> Result<Snapshot> {
        let fs_dir = tmp.path().join(SNAPSHOT_FS);
        // Make the content durable before the rename publishes it.
        let dir = fs::File::open(&fs_dir).map_err(|e| Error::io("open", &fs_dir, e))?;
        rustix::fs::syncfs(&dir).map_err(|e| Error::io("sync filesystem of", &fs_dir, e.into()))?;
        let bytes = serde_json::to_vec_pretty(&meta).map_err(|source| Error::Serialize {
            what: "snapshot metadata",
            source,
        })?;
        write_atomic(tmp.path(), &tmp.path().join(SNAPSHOT_META), &bytes)?;
        let dest = self.snapshot_dir(&meta.chain_id);
        let tmp_path = tmp.keep();
        if let Err(e) = fs::rename(&tmp_path, &dest) {
            let _ = remove_dir_all_writable(&tmp_path);
            return Err(Error::io("rename into place", dest, e));
        }
        fsync_dir(&self.root().join(SNAPSHOTS_DIR))?;
        Ok(Snapshot {
            fs: dest.join(SNAPSHOT_FS),
            dir: dest,
            meta,
        })
    }

    /// Removes snapshot `chain_id`. Returns whether it existed. The caller
    /// must make sure no mount uses it.
    pub fn remove_snapshot(&self, chain_id: &Digest) -> Result<bool> {
        let _guard = self.snapshot_lock(chain_id)?;
        let dir = self.snapshot_dir(chain_id);
        // Move it out of `snapshots/` first so a partial removal never
        // looks like a snapshot.
        if !dir.exists() {
            return Ok(false);
        }
        // Renaming a directory over an empty one replaces it; the empty
        // temporary directory gives a unique name.
        let ingest = self.ingest_dir();
        let doomed = tempfile::Builder::new()
            .prefix("removing-")
            .tempdir_in(&ingest)
            .map_err(|e| Error::io("create temporary directory in", &ingest, e))?
            .keep();
        match fs::rename(&dir, &doomed) {
            Ok(()) => {}
            Err(e) => {
                let _ = fs::remove_dir(&doomed);
                if e.kind() == io::ErrorKind::NotFound {
                    return Ok(false);
                }
                return Err(Error::io("move out", dir, e));
            }
        }
        fsync_dir(&self.root().join(SNAPSHOTS_DIR))?;
        remove_dir_all_writable(&doomed).map_err(|e| Error::io("remove", &doomed, e))?;
        tracing::debug!(%chain_id, "removed snapshot");
        Ok(true)
    }

    /// Chain ids of all unpacked snapshots, sorted.
    pub fn list_snapshots(&self) -> Result<Vec<Digest>> {
        let dir = self.root().join(SNAPSHOTS_DIR);
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).map_err(|e| Error::io("read", &dir, e))? {
            let entry = entry.map_err(|e| Error::io("read", &dir, e))?;
            match entry.file_name().to_str().map(Digest::from_sha256_hex) {
                Some(Ok(digest)) => out.push(digest),
                _ => {
                    tracing::warn!(path = %entry.path().display(), "stray entry in snapshot directory")
                }
            }
        }
        out.sort();
        Ok(out)
    }
}
