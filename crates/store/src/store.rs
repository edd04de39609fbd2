//! Opening a store: its layout, format version and shared helpers
//! (directory fsync, atomic file replacement, lock files).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::lease::LEASES_DIR;

/// The on-disk format version this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;

pub(crate) const VERSION_FILE: &str = "VERSION";
pub(crate) const BLOBS_DIR: &str = "blobs";
pub(crate) const INGEST_DIR: &str = "ingest";
pub(crate) const SNAPSHOTS_DIR: &str = "snapshots";
pub(crate) const LOCKS_DIR: &str = "locks";
pub(crate) const IMAGES_FILE: &str = "images.json";
pub(crate) const IMAGES_BACKUP: &str = "images.json.bak";
pub(crate) const IMAGES_LOCK: &str = "images.lock";

/// A handle on a local store rooted at a directory.
///
/// Cheap to clone. Handles are independent: every mutation takes its own
/// file lock (an `flock` on a freshly opened file), so several handles, in
/// one process or in several, may use the same root at once.
#[derive(Clone, Debug)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// Opens the store at `root`, creating it (and the layout below it) if
    /// `root` does not exist or is an empty directory.
    ///
    /// Fails with [`Error::UnsupportedVersion`] if the store was written
    /// with a different format version, and with [`Error::NotAStore`] if
    /// `root` is a non-empty directory without a `VERSION` file.
    pub fn open(root: impl AsRef<Path>) -> Result<Store> {
        let root = root.as_ref().to_path_buf();
        fs::create_dir_all(&root).map_err(|e| Error::io("create directory", &root, e))?;
        let store = Store { root };
        store.check_or_init_version()?;
        for dir in [
            store.root.join(BLOBS_DIR).join("sha256"),
            store.root.join(SNAPSHOTS_DIR),
            store.root.join(LOCKS_DIR),
            store.root.join(LEASES_DIR),
        ] {
            fs::create_dir_all(&dir).map_err(|e| Error::io("create directory", &dir, e))?;
        }
        // Mend what dead processes left before taking our own lease.
        match store.reap_leases() {
            Ok(reaped) if !reaped.is_empty() => {
                tracing::info!(
                    count = reaped.len(),
                    "removed leftovers of dead kiln processes"
                );
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "failed to remove leftovers of dead kiln processes")
            }
        }
        store.lease()?;
        tracing::debug!(root = %store.root.display(), "opened store");
        Ok(store)
    }

    /// The directory the store is rooted at.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// This process's directory for temporary files and directories being
    /// written into the store (on the store's filesystem, so publishing is
    /// a rename); see [`crate::lease`].
    pub fn ingest_dir(&self) -> PathBuf {
        match self.lease() {
            Ok(lease) => lease.ingest_dir(),
            Err(e) => {
                tracing::warn!(error = %e, "no lease on the store; using its shared ingest directory");
                let dir = self.root.join(INGEST_DIR);
                let _ = fs::create_dir_all(&dir);
                dir
            }
        }
    }

    pub(crate) fn locks_dir(&self) -> PathBuf {
        self.root.join(LOCKS_DIR)
    }

    fn check_or_init_version(&self) -> Result<()> {
        let path = self.root.join(VERSION_FILE);
        match fs::read_to_string(&path) {
            Ok(content) => {
                let found = content.trim();
                if found.parse::<u32>() == Ok(FORMAT_VERSION) {
                    Ok(())
                } else {
                    Err(Error::UnsupportedVersion {
                        root: self.root.clone(),
                        found: found.to_owned(),
                        supported: FORMAT_VERSION,
                    })
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // A store being created concurrently by another process may
                // already have some of its layout (or a temp VERSION file):
                // that is still "empty" for our purpose.
                let entries =
                    fs::read_dir(&self.root).map_err(|e| Error::io("read", &self.root, e))?;
                for entry in entries {
                    let entry = entry.map_err(|e| Error::io("read", &self.root, e))?;
                    let name = entry.file_name();
                    let name = name.to_string_lossy();
                    let known = [
                        VERSION_FILE,
                        BLOBS_DIR,
                        INGEST_DIR,
                        SNAPSHOTS_DIR,
                        LOCKS_DIR,
                        LEASES_DIR,
                        IMAGES_FILE,
                        IMAGES_BACKUP,
                    ]
                    .contains(&name.as_ref())
                        || name.starts_with(".tmp-");
                    if !known {
                        return Err(Error::NotAStore {
                            root: self.root.clone(),
                        });
                    }
                }
                tracing::info!(root = %self.root.display(), version = FORMAT_VERSION, "initialising store");
                write_atomic(&self.root, &path, format!("{FORMAT_VERSION}\n").as_bytes())
            }
            Err(e) => Err(Error::io("read", &path, e)),
        }
    }
}

/// Flushes a directory's entries (a rename or a new file in it) to disk.
pub(crate) fn fsync_dir(dir: &Path) -> Result<()> {
    kiln_fs::fsync_dir(dir).map_err(|e| Error::io("sync directory", dir, e))
}

/// Replaces `path` with `bytes` atomically: temp file in `tmp_dir` (same
/// filesystem), fsync, rename, fsync of the parent directory.
pub(crate) fn write_atomic(tmp_dir: &Path, path: &Path, bytes: &[u8]) -> Result<()> {
    let mut file = kiln_fs::AtomicFile::in_dir(tmp_dir, path)
        .map_err(|e| Error::io("create temporary file in", tmp_dir, e))?;
    file.write_all(bytes)
        .map_err(|e| Error::io("write", file.tmp_path().to_path_buf(), e))?;
    file.commit(kiln_fs::Durability::Durable)
        .map_err(|e| Error::io("replace", path, e))
}

/// An exclusive advisory lock (`flock`) on a file under `locks/`, released
/// when dropped.
///
/// The lock belongs to the open file description, so two guards on the same
/// path exclude each other even inside one process. Never take a second
/// lock on the same path while holding one: that deadlocks.
#[derive(Debug)]
pub(crate) struct LockGuard {
    file: File,
    path: PathBuf,
}

impl LockGuard {
    pub(crate) fn exclusive(path: PathBuf) -> Result<LockGuard> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io("open lock file", &path, e))?;
        file.lock().map_err(|e| Error::io("lock", &path, e))?;
        tracing::trace!(path = %path.display(), "lock acquired");
        Ok(LockGuard { file, path })
    }

    /// A shared lock: excludes exclusive holders, not other shared ones.
    pub(crate) fn shared(path: PathBuf) -> Result<LockGuard> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io("open lock file", &path, e))?;
        file.lock_shared()
            .map_err(|e| Error::io("lock", &path, e))?;
        Ok(LockGuard { file, path })
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if let Err(e) = self.file.unlock() {
            tracing::warn!(path = %self.path.display(), error = %e, "failed to unlock");
        }
    }
}
