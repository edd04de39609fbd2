//! Replacing a file atomically.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// What a replacement survives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// The content is synced before the rename and the directory after:
    /// once [`AtomicFile::commit`] returns, a crash leaves the new file.
    Durable,
    /// Renamed only: readers never see a partial file, but a crash may
    /// leave the old one or, on some file systems, an empty one. For
    /// caches and hints, and for outputs written again on failure.
    Atomic,
}

/// A file being written that replaces `path` when committed. Dropped
/// without a commit, it is removed and `path` is untouched.
#[derive(Debug)]
pub struct AtomicFile {
    tmp: tempfile::NamedTempFile,
    path: PathBuf,
}

impl AtomicFile {
    /// A temporary file beside `path` (same directory, so the rename
    /// stays on one file system).
    pub fn new(path: &Path) -> io::Result<AtomicFile> {
        let dir = parent(path);
        AtomicFile::in_dir(dir, path)
    }

    /// A temporary file in `dir`, which must be on `path`'s file system.
    pub fn in_dir(dir: &Path, path: &Path) -> io::Result<AtomicFile> {
        let tmp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir)?;
        Ok(AtomicFile {
            tmp,
            path: path.to_owned(),
        })
    }

    /// Sets the file's permission bits (the temporary file starts 0600).
    pub fn set_mode(&self, mode: u32) -> io::Result<()> {
        self.tmp
            .as_file()
            .set_permissions(std::fs::Permissions::from_mode(mode))
    }

    /// The file being written.
    pub fn file(&self) -> &File {
        self.tmp.as_file()
    }

    /// The temporary file's path (for messages).
    pub fn tmp_path(&self) -> &Path {
        self.tmp.path()
    }

    /// Renames the file over the destination, syncing as `durability`
    /// says.
    pub fn commit(self, durability: Durability) -> io::Result<()> {
        if durability == Durability::Durable {
            self.tmp.as_file().sync_all()?;
        }
        self.tmp.persist(&self.path).map_err(|e| e.error)?;
        if durability == Durability::Durable {
            fsync_dir(parent(&self.path))?;
        }
        Ok(())
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tmp.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.tmp.flush()
    }
}

/// Replaces `path` with `bytes` (temporary file beside it, then rename).
pub fn replace_file(path: &Path, bytes: &[u8], durability: Durability) -> io::Result<()> {
    let mut file = AtomicFile::new(path)?;
    file.write_all(bytes)?;
    file.commit(durability)
}

/// Flushes a directory's entries (a rename or a new file in it) to disk.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn parent(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_only_when_committed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"old").unwrap();
        {
            let mut f = AtomicFile::new(&path).unwrap();
            f.write_all(b"half").unwrap();
            // dropped: nothing changes, nothing is left
        }
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        for durability in [Durability::Durable, Durability::Atomic] {
            replace_file(&path, b"new", durability).unwrap();
            assert_eq!(std::fs::read(&path).unwrap(), b"new");
        }
        let f = AtomicFile::new(&path).unwrap();
        f.set_mode(0o640).unwrap();
        f.commit(Durability::Durable).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o640);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
