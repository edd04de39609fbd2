//! Persistent build-cache records: `<root>/build/cache/<key-hex>.json`,
//! one per cache key, naming the resulting layer stack. A record is only
//! a hit while every snapshot and blob it names is still in the store.

use std::fs;
use std::io;
use std::path::PathBuf;

use kiln_cache::Store;
use kiln_oci::Digest;
use kiln_solver::CacheKey;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::fsref::{FsRef, Layer, LayerBlob};

/// Bumped when the record format changes; other versions are misses.
const RECORD_VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct Record {
    version: u32,
    layers: Vec<RecordLayer>,
}

#[derive(Serialize, Deserialize)]
struct RecordLayer {
    diff_id: Digest,
    /// The snapshot's chain id (`snapshots/<hex>`).
    snapshot: Digest,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    blob: Option<LayerBlob>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    empty: bool,
}

#[derive(Clone, Debug)]
pub(crate) struct Records {
    store: Store,
    dir: PathBuf,
}

impl Records {
    pub(crate) fn new(store: Store, dir: PathBuf) -> Records {
        Records { store, dir }
    }

    fn path(&self, key: &CacheKey) -> PathBuf {
        self.dir.join(format!("{}.json", key.hex()))
    }

    /// The stack recorded under `key`, if complete in the store.
    pub(crate) fn load(&self, key: &CacheKey) -> Result<Option<FsRef>> {
        let path = self.path(key);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("read", &path, e)),
        };
        let record: Record = match serde_json::from_slice(&bytes) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "ignoring unreadable cache record");
                return Ok(None);
            }
        };
        if record.version != RECORD_VERSION {
            return Ok(None);
        }
        let mut layers = Vec::with_capacity(record.layers.len());
        for l in record.layers {
            let snapshot_dir = self.store.snapshot_dir(&l.snapshot).join("fs");
            if !snapshot_dir.is_dir() {
                tracing::debug!(key = %key.short(), snapshot = %l.snapshot, "cache record refers to a missing snapshot");
                return Ok(None);
            }
            if let Some(blob) = &l.blob
                && !self.store.has_blob(&blob.digest)?
            {
                tracing::debug!(key = %key.short(), blob = %blob.digest, "cache record refers to a missing blob");
                return Ok(None);
            }
            layers.push(Layer {
                diff_id: l.diff_id,
                snapshot_id: l.snapshot,
                snapshot_dir,
                blob: l.blob,
                empty: l.empty,
            });
        }
        Ok(Some(FsRef::from_layers(layers)))
    }

    /// Records `fs` under `key` (atomically replacing any older record).
    pub(crate) fn save(&self, key: &CacheKey, fs_ref: &FsRef) -> Result<()> {
        let record = Record {
            version: RECORD_VERSION,
            layers: fs_ref
                .layers()
                .iter()
                .map(|l| RecordLayer {
                    diff_id: l.diff_id.clone(),
                    snapshot: l.snapshot_id.clone(),
                    blob: l.blob.clone(),
                    empty: l.empty,
                })
                .collect(),
        };
        let path = self.path(key);
        let bytes = serde_json::to_vec_pretty(&record).map_err(|source| Error::Record {
            path: path.clone(),
            source,
        })?;
        write_atomic(&path, &bytes)
    }
}

/// Temp file beside `path`, fsync, rename.
pub(crate) fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(std::path::Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .map_err(|e| Error::io("create temporary file in", dir, e))?;
    tmp.write_all(bytes)
        .map_err(|e| Error::io("write", tmp.path(), e))?;
    tmp.as_file()
        .sync_all()
        .map_err(|e| Error::io("sync", tmp.path(), e))?;
    tmp.persist(path)
        .map_err(|e| Error::io("rename into place", path, e.error))?;
    Ok(())
}
