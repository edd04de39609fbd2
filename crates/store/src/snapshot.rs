//! Unpacked layers: `snapshots/<chain-id hex>/{fs/,snapshot.json}`.
//!
//! A snapshot holds one layer's content unpacked in
//! [`ExtractMode::Overlay`] form, ready to be an overlayfs lower
//! directory; the chain id (not the layer digest) names it, as the lower
//! stack it tops is what identifies it. Snapshots are unpacked into a
//! temporary directory in `ingest/` and renamed into place, under a
//! per-snapshot lock, so concurrent callers unpack a layer once and nobody
//! sees a half-unpacked snapshot.
//!
//! ## Durability
//!
//! A snapshot's content is made durable (`syncfs`) before it is renamed
//! into place, except for snapshots published with
//! [`Store::publish_snapshot_deferred`] (each build step's result; its
//! layer tar is already a durable blob). Those record the boot they were
//! published in and when; [`Store::sync_deferred`] syncs the filesystem
//! once (at the end of a build) and records that the boot's snapshots up to
//! then are durable. A deferred snapshot from an earlier boot that no such
//! record covers may have lost content in a crash: it reads as absent
//! (a cache miss; publishing it again replaces it).

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
    /// Set when published without syncing its content (see the module
    /// documentation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unsynced: Option<Unsynced>,
}

/// When a deferred snapshot was published: the kernel's boot id and the
/// time (Unix nanoseconds).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unsynced {
    pub boot_id: String,
    pub published_ns: u64,
}

/// `<root>/synced-boots`: per boot, the time up to which deferred
/// snapshots are durable (`<boot id> <unix ns>` lines).
const SYNCED_BOOTS: &str = "synced-boots";
/// Boots remembered in `synced-boots` (older ones are dropped).
const SYNCED_BOOTS_KEPT: usize = 16;

/// The running kernel's boot id, if the kernel tells.
fn boot_id() -> Option<&'static str> {
    static BOOT_ID: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    BOOT_ID
        .get_or_init(|| {
            fs::read_to_string("/proc/sys/kernel/random/boot_id")
                .ok()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
        })
        .as_deref()
}

/// Store roots with deferred snapshots this process has published and not
/// synced yet: [`Store::sync_deferred`] does nothing for others.
fn pending() -> &'static std::sync::Mutex<std::collections::HashSet<PathBuf>> {
    static PENDING: std::sync::OnceLock<std::sync::Mutex<std::collections::HashSet<PathBuf>>> =
        std::sync::OnceLock::new();
    PENDING.get_or_init(Default::default)
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or_default()
}

fn parse_synced_boots(text: &str) -> Vec<(String, u64)> {
    text.lines()
        .filter_map(|l| {
            let (boot, ns) = l.split_once(' ')?;
            Some((boot.to_owned(), ns.trim().parse().ok()?))
        })
        .collect()
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

    /// The snapshot for `chain_id`, if it has been unpacked (and, when it
    /// was published deferred, is known durable or of this boot).
    pub fn snapshot(&self, chain_id: &Digest) -> Result<Option<Snapshot>> {
        let found = self.snapshot_any(chain_id)?;
        if let Some(s) = &found
            && let Some(u) = &s.meta.unsynced
            && !self.is_durable(u)
        {
            tracing::warn!(%chain_id, boot_id = %u.boot_id, "ignoring a snapshot published without sync before a restart");
            return Ok(None);
        }
        Ok(found)
    }

    /// Whether a deferred snapshot's content can be trusted: published in
    /// this boot (the page cache has it), or covered by a later sync.
    fn is_durable(&self, u: &Unsynced) -> bool {
        if boot_id() == Some(u.boot_id.as_str()) {
            return true;
        }
        let text = fs::read_to_string(self.root().join(SYNCED_BOOTS)).unwrap_or_default();
        parse_synced_boots(&text)
            .iter()
            .any(|(boot, ns)| *boot == u.boot_id && *ns >= u.published_ns)
    }

    /// Syncs the store's filesystem and records that every snapshot
    /// published deferred in this boot until now is durable. Call it when
    /// a batch of deferred publications is done (a build's end); it does
    /// nothing when this process has published none since the last call.
    pub fn sync_deferred(&self) -> Result<()> {
        let Some(boot) = boot_id() else {
            return Ok(());
        };
        let was_pending = pending()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(self.root());
        if !was_pending {
            return Ok(());
        }
        let upto = now_ns();
        let root = fs::File::open(self.root()).map_err(|e| Error::io("open", self.root(), e))?;
        rustix::fs::syncfs(&root)
            .map_err(|e| Error::io("sync filesystem of", self.root(), e.into()))?;
        let _guard = LockGuard::exclusive(self.locks_dir().join("synced-boots.lock"))?;
        let path = self.root().join(SYNCED_BOOTS);
        let mut boots = parse_synced_boots(&fs::read_to_string(&path).unwrap_or_default());
        if boots.iter().any(|(b, ns)| b == boot && *ns >= upto) {
            return Ok(());
        }
        boots.retain(|(b, _)| b != boot);
        boots.push((boot.to_owned(), upto));
        let skip = boots.len().saturating_sub(SYNCED_BOOTS_KEPT);
        let text: String = boots
            .iter()
            .skip(skip)
            .map(|(b, ns)| format!("{b} {ns}\n"))
            .collect();
        write_atomic(self.root(), &path, text.as_bytes())
    }

    /// The snapshot for `chain_id` as recorded, trusted or not.
    fn snapshot_any(&self, chain_id: &Digest) -> Result<Option<Snapshot>> {
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
    /// (threads or processes) unpack it once. The uncompressed stream must
    /// hash to `diff_id` (the image config's), else
    /// [`Error::DiffIdMismatch`] and no snapshot.
    pub fn prepare_snapshot(
        &self,
        chain_id: &Digest,
        layer: &Digest,
        diff_id: &Digest,
    ) -> Result<Snapshot> {
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
        let unpacked = self
            .unpack_into(tmp.path(), chain_id, layer)
            .and_then(|meta| {
                if &meta.diff_id == diff_id {
                    Ok(meta)
                } else {
                    Err(Error::DiffIdMismatch {
                        layer: layer.clone(),
                        expected: diff_id.clone(),
                        actual: meta.diff_id,
                    })
                }
            });
        match unpacked {
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

    pub(crate) fn unpack_into(
        &self,
        tmp: &Path,
        chain_id: &Digest,
        layer: &Digest,
    ) -> Result<SnapshotMeta> {
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
            unsynced: None,
        };
        Ok(meta)
    }

    /// Publishes a snapshot made elsewhere on the store's filesystem (the
    /// build worker's committed upper directories): `content` is moved to
    /// `snapshots/<chain id>/fs` with `meta`, under the snapshot's lock,
    /// unless the snapshot already exists (then `content` is left where it
    /// is for the caller to discard).
    pub fn publish_snapshot(&self, content: &Path, meta: SnapshotMeta) -> Result<Snapshot> {
        self.publish(content, meta, false)
    }

    /// Like [`publish_snapshot`](Self::publish_snapshot), but without
    /// syncing the content now: for content whose layer is already a
    /// durable blob. [`sync_deferred`](Self::sync_deferred) makes it
    /// durable later; until then it is trusted in this boot only. Without
    /// a kernel boot id, it is published synced.
    pub fn publish_snapshot_deferred(
        &self,
        content: &Path,
        meta: SnapshotMeta,
    ) -> Result<Snapshot> {
        self.publish(content, meta, boot_id().is_some())
    }

    fn publish(&self, content: &Path, mut meta: SnapshotMeta, deferred: bool) -> Result<Snapshot> {
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
        meta.unsynced = match (deferred, boot_id()) {
            (true, Some(boot)) => {
                pending()
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(self.root().to_owned());
                Some(Unsynced {
                    boot_id: boot.to_owned(),
                    published_ns: now_ns(),
                })
            }
            _ => None,
        };
        self.install_snapshot(tmp, meta)
    }

    /// Makes `tmp` (holding `fs/`) durable with its metadata and renames it
    /// into `snapshots/`. The caller holds the snapshot's lock.
    fn install_snapshot(&self, tmp: tempfile::TempDir, meta: SnapshotMeta) -> Result<Snapshot> {
        let fs_dir = tmp.path().join(SNAPSHOT_FS);
        if meta.unsynced.is_none() {
            // Make the content durable before the rename publishes it.
            let dir = fs::File::open(&fs_dir).map_err(|e| Error::io("open", &fs_dir, e))?;
            rustix::fs::syncfs(&dir)
                .map_err(|e| Error::io("sync filesystem of", &fs_dir, e.into()))?;
        }
        let bytes = serde_json::to_vec_pretty(&meta).map_err(|source| Error::Serialize {
            what: "snapshot metadata",
            source,
        })?;
        write_atomic(tmp.path(), &tmp.path().join(SNAPSHOT_META), &bytes)?;
        let dest = self.snapshot_dir(&meta.chain_id);
        // One not to be trusted (see `snapshot`) makes way.
        if dest.exists() {
            self.remove_snapshot_locked(&meta.chain_id)?;
        }
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
        self.remove_snapshot_locked(chain_id)
    }

    /// [`remove_snapshot`](Self::remove_snapshot) with its lock held.
    fn remove_snapshot_locked(&self, chain_id: &Digest) -> Result<bool> {
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
