//! Persistent build-cache records: `<root>/build/cache/<key-hex>.json`,
//! one per cache key, naming the resulting layer stack. A record is only
//! a hit while every snapshot and blob it names is still in the store.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use kiln_oci::Digest;
use kiln_solver::CacheKey;
use kiln_store::Store;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::fsref::{FsRef, Layer, LayerBlob};

/// Bumped when the record format changes; other versions are misses.
const RECORD_VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
pub(crate) struct Record {
    pub version: u32,
    pub layers: Vec<RecordLayer>,
    /// The step that produced it (`[build 2/3] RUN make`), for `builder du`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

impl Record {
    /// Reads a record file; `None` if absent, unreadable or of another
    /// version.
    pub(crate) fn read(path: &std::path::Path) -> Result<Option<Record>> {
        let bytes = match fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("read", path, e)),
        };
        match serde_json::from_slice::<Record>(&bytes) {
            Ok(r) if r.version == RECORD_VERSION => Ok(Some(r)),
            Ok(_) => Ok(None),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "ignoring unreadable cache record");
                Ok(None)
            }
        }
    }
}

#[derive(Serialize, Deserialize)]
pub(crate) struct RecordLayer {
    pub diff_id: Digest,
    /// The snapshot's chain id (`snapshots/<hex>`).
    pub snapshot: Digest,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blob: Option<LayerBlob>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub empty: bool,
}

#[derive(Clone, Debug)]
pub(crate) struct Records {
    store: Store,
    dir: PathBuf,
    /// Snapshots a lookup already found usable. Every record names its
    /// whole stack, so without this a build would read the same
    /// `snapshot.json` files once per step. (Nothing a running build uses
    /// is collected: a worker holds the GC lock shared.)
    usable: Arc<Mutex<HashSet<Digest>>>,
}

impl Records {
    pub(crate) fn new(store: Store, dir: PathBuf) -> Records {
        Records {
            store,
            dir,
            usable: Arc::default(),
        }
    }

    /// Whether snapshot `chain_id` is present and trusted (see
    /// `Store::snapshot`).
    fn snapshot_usable(&self, chain_id: &Digest) -> Result<bool> {
        let lock = || self.usable.lock().unwrap_or_else(|e| e.into_inner());
        if lock().contains(chain_id) {
            return Ok(true);
        }
        if self.store.snapshot(chain_id)?.is_none() {
            return Ok(false);
        }
        lock().insert(chain_id.clone());
        Ok(true)
    }

    fn path(&self, key: &CacheKey) -> PathBuf {
        self.dir.join(format!("{}.json", key.hex()))
    }

    /// The stack recorded under `key`, if complete in the store. A hit
    /// sets the record file's modification time to now: its last use,
    /// which garbage collection goes by.
    pub(crate) fn load(&self, key: &CacheKey) -> Result<Option<FsRef>> {
        let path = self.path(key);
        let Some(record) = Record::read(&path)? else {
            return Ok(None);
        };
        let mut layers = Vec::with_capacity(record.layers.len());
        for l in record.layers {
            // Through the store: a snapshot published without sync before a
            // restart is as good as missing.
            if !self.snapshot_usable(&l.snapshot)? {
                tracing::debug!(key = %key.short(), snapshot = %l.snapshot, "cache record refers to a missing snapshot");
                return Ok(None);
            }
            let snapshot_dir = self.store.snapshot_dir(&l.snapshot).join("fs");
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
        touch(&path);
        Ok(Some(FsRef::from_layers(layers)))
    }

    /// Records `fs` under `key` (atomically replacing any older record).
    pub(crate) fn save(&self, key: &CacheKey, fs_ref: &FsRef, description: &str) -> Result<()> {
        let record = Record {
            version: RECORD_VERSION,
            description: description.to_owned(),
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

/// Marks a record as used now (its mtime). Failures only cost GC order.
fn touch(path: &std::path::Path) {
    let r = fs::File::options()
        .append(true)
        .open(path)
        .and_then(|f| f.set_modified(std::time::SystemTime::now()));
    if let Err(e) = r {
        tracing::debug!(path = %path.display(), error = %e, "could not mark the cache record used");
    }
}

/// Replaces `path` with `bytes`, durably.
pub(crate) fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    kiln_fs::replace_file(path, bytes, kiln_fs::Durability::Durable)
        .map_err(|e| Error::io("replace", path, e))
}
