//! Cross-process locks of the build cache, under `<root>/build/locks/`:
//!
//! - `gc.lock`: every [`crate::Worker`] holds a shared lock on it for its
//!   lifetime; garbage collection takes it exclusively, so it never
//!   deletes what a running build may still use.
//! - `<key-hex>.lock`: held from a cache miss until the result is
//!   recorded, so that of two processes missing the same key at the same
//!   time one computes it and the other waits and then finds the record.
//!
//! All are `flock`s on freshly opened files (`std::fs::File::lock`): they
//! exclude each other across processes and, since the lock belongs to the
//! open file description, across threads of one process too.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use kiln_solver::CacheKey;

use crate::error::{Error, Result};

/// `<root>/build/locks`.
pub(crate) fn locks_dir(build_dir: &Path) -> PathBuf {
    build_dir.join("locks")
}

const GC_LOCK: &str = "gc.lock";

/// Opens (creating) a lock file without truncating it.
pub(crate) fn open(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| Error::io("open lock file", path, e))
}

/// A held lock; released when dropped (the file is closed).
#[derive(Debug)]
pub struct LockFile {
    _file: File,
}

/// Takes the GC lock shared (a build), waiting for a running collection.
pub(crate) fn gc_shared(build_dir: &Path) -> Result<LockFile> {
    let dir = locks_dir(build_dir);
    std::fs::create_dir_all(&dir).map_err(|e| Error::io("create directory", &dir, e))?;
    let path = dir.join(GC_LOCK);
    let file = open(&path)?;
    file.lock_shared()
        .map_err(|e| Error::io("lock", &path, e))?;
    Ok(LockFile { _file: file })
}

/// Takes the GC lock exclusively: waits for running builds when `wait`,
/// else returns `None` if any is running.
pub(crate) fn gc_exclusive(build_dir: &Path, wait: bool) -> Result<Option<LockFile>> {
    let dir = locks_dir(build_dir);
    std::fs::create_dir_all(&dir).map_err(|e| Error::io("create directory", &dir, e))?;
    let path = dir.join(GC_LOCK);
    let file = open(&path)?;
    if wait {
        file.lock().map_err(|e| Error::io("lock", &path, e))?;
    } else {
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Ok(None),
            Err(std::fs::TryLockError::Error(e)) => return Err(Error::io("lock", &path, e)),
        }
    }
    Ok(Some(LockFile { _file: file }))
}

/// Takes the lock of cache key `key` (blocking until whoever computes it
/// is done).
pub(crate) fn key_lock(build_dir: &Path, key: &CacheKey) -> Result<LockFile> {
    let path = locks_dir(build_dir).join(format!("{}.lock", key.hex()));
    let file = open(&path)?;
    file.lock().map_err(|e| Error::io("lock", &path, e))?;
    Ok(LockFile { _file: file })
}

/// Removes the key lock files (only under the exclusive GC lock: no build
/// runs, so nobody holds or waits for one).
pub(crate) fn remove_key_locks(build_dir: &Path) -> usize {
    let dir = locks_dir(build_dir);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return 0;
    };
    let mut n = 0;
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name != GC_LOCK && name.ends_with(".lock") && std::fs::remove_file(e.path()).is_ok() {
            n += 1;
        }
    }
    n
}
