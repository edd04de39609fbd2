//! Content-addressed blobs: `blobs/sha256/<hex>`.
//!
//! Writes stream into a temporary file in `ingest/` while hashing, are
//! verified, fsynced and renamed into place; the blob directory is fsynced
//! after the rename. A blob is therefore either absent or complete. Writes
//! need no lock: two writers of the same content race harmlessly (the
//! second rename finds the blob present and drops its copy).

use std::fs::{self, File};
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use kiln_oci::Digest;
use kiln_oci::digest::{Algorithm, DigestVerifier, Sha256Writer, VerifyError};

use crate::error::{Error, Result};
use crate::lease::Hold;
use crate::store::{BLOBS_DIR, Store, fsync_dir};

/// Stored blobs are read-only: content-addressed data is never modified in
/// place.
const BLOB_MODE: u32 = 0o444;

/// A writer that fails once more than `limit` bytes went through it.
struct Limited<W> {
    inner: W,
    written: u64,
    limit: Option<u64>,
}

impl<W: Write> Write for Limited<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(limit) = self.limit
            && self.written + buf.len() as u64 > limit
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "content is larger than expected",
            ));
        }
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl Store {
    /// The path a blob has (or would have) in the store. Does no I/O.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root()
            .join(BLOBS_DIR)
            .join(digest.algorithm().as_str())
            .join(digest.hex())
    }

    fn blobs_dir(&self) -> PathBuf {
        self.root().join(BLOBS_DIR).join(Algorithm::Sha256.as_str())
    }

    /// Whether the blob is present.
    pub fn has_blob(&self, digest: &Digest) -> Result<bool> {
        let path = self.blob_path(digest);
        match fs::symlink_metadata(&path) {
            Ok(meta) => Ok(meta.is_file()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io("stat", path, e)),
        }
    }

    /// Streams `reader` into the store and returns the content's digest and
    /// size.
    ///
    /// With `expected`, the content must hash to it and, with
    /// `expected_size`, have exactly that size; otherwise
    /// [`Error::Verify`] (or [`Error::TooLarge`] without a digest) is
    /// returned and nothing becomes visible. If a blob with the expected
    /// digest is already present, `reader` is not read at all.
    pub fn write_blob<R: Read>(
        &self,
        mut reader: R,
        expected: Option<&Digest>,
        expected_size: Option<u64>,
    ) -> Result<(Digest, u64)> {
        if let Some(expected) = expected {
            check_sha256(expected)?;
            // Held before looking, so no deleter takes it between the look
            // and the record that will refer to it.
            self.hold([Hold::Blob(expected.clone())])?;
            if let Some(size) = self.existing_blob_size(expected)? {
                if let Some(want) = expected_size
                    && want != size
                {
                    return Err(Error::Verify {
                        expected: expected.clone(),
                        source: VerifyError::SizeMismatch {
                            expected: want,
                            actual: size,
                        },
                    });
                }
                tracing::debug!(digest = %expected, size, "blob already present");
                return Ok((expected.clone(), size));
            }
        }

        let ingest = self.ingest_dir();
        let tmp = tempfile::Builder::new()
            .prefix("blob-")
            .tempfile_in(&ingest)
            .map_err(|e| Error::io("create temporary file in", &ingest, e))?;
        let tmp_path = tmp.path().to_path_buf();
        let (tmp, digest, size) = match expected {
            Some(expected) => {
                let mut verifier = match expected_size {
                    Some(size) => DigestVerifier::with_size(tmp, expected.clone(), size),
                    None => DigestVerifier::new(tmp, expected.clone()),
                };
                if let Err(e) = copy_large(&mut reader, &mut verifier) {
                    // The verifier cuts off a stream longer than the
                    // expected size with InvalidData.
                    if e.kind() == io::ErrorKind::InvalidData
                        && let Some(size) = expected_size
                    {
                        return Err(Error::TooLarge {
                            digest: Some(expected.clone()),
                            expected: size,
                        });
                    }
                    return Err(Error::io("write", tmp_path, e));
                }
                let (file, size) = verifier.verify().map_err(|source| Error::Verify {
                    expected: expected.clone(),
                    source,
                })?;
                (file, expected.clone(), size)
            }
            None => {
                let mut writer = Sha256Writer::new(Limited {
                    inner: tmp,
                    written: 0,
                    limit: expected_size,
                });
                if let Err(e) = copy_large(&mut reader, &mut writer) {
                    if e.kind() == io::ErrorKind::InvalidData
                        && let Some(expected) = expected_size
                    {
                        return Err(Error::TooLarge {
                            digest: None,
                            expected,
                        });
                    }
                    return Err(Error::io("write", tmp_path, e));
                }
                let (file, digest, size) = writer.into_parts();
                if let Some(want) = expected_size
                    && want != size
                {
                    return Err(Error::Verify {
                        expected: digest,
                        source: VerifyError::SizeMismatch {
                            expected: want,
                            actual: size,
                        },
                    });
                }
                (file.inner, digest, size)
            }
        };
        self.commit_blob(tmp, &digest, size)?;
        Ok((digest, size))
    }

    /// A writer for a blob whose digest its producer computes while
    /// producing it (a layer tar written by kiln itself): the bytes go to a
    /// temporary file in the store, and [`BlobWriter::commit_as`] makes
    /// them the blob with that digest — one pass over the content instead
    /// of writing it, reading it back and hashing it again. Never for
    /// content from outside (use [`write_blob`](Self::write_blob), which
    /// verifies).
    pub fn blob_writer(&self) -> Result<BlobWriter> {
        let ingest = self.ingest_dir();
        let tmp = tempfile::Builder::new()
            .prefix("blob-")
            .tempfile_in(&ingest)
            .map_err(|e| Error::io("create temporary file in", &ingest, e))?;
        Ok(BlobWriter {
            store: self.clone(),
            tmp,
            size: 0,
            sparse: kiln_fs::SparseWriter::new(),
        })
    }

    /// Stores `bytes` and returns their digest.
    pub fn write_blob_bytes(&self, bytes: &[u8]) -> Result<Digest> {
        let digest = Digest::sha256(bytes);
        self.write_blob(bytes, Some(&digest), Some(bytes.len() as u64))?;
        Ok(digest)
    }

    fn commit_blob(&self, tmp: tempfile::NamedTempFile, digest: &Digest, size: u64) -> Result<()> {
        self.hold([Hold::Blob(digest.clone())])?;
        let tmp_path = tmp.path().to_path_buf();
        tmp.as_file()
            .sync_all()
            .map_err(|e| Error::io("sync", &tmp_path, e))?;
        tmp.as_file()
            .set_permissions(fs::Permissions::from_mode(BLOB_MODE))
            .map_err(|e| Error::io("set permissions of", &tmp_path, e))?;
        let dest = self.blob_path(digest);
        match tmp.persist_noclobber(&dest) {
            Ok(_) => {}
            Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => {
                tracing::debug!(%digest, "blob written concurrently; keeping the existing copy");
                return Ok(());
            }
            Err(e) => return Err(Error::io("rename into place", dest, e.error)),
        }
        self.note_created(digest);
        fsync_dir(&self.blobs_dir())?;
        tracing::debug!(%digest, size, "stored blob");
        Ok(())
    }

    pub(crate) fn existing_blob_size(&self, digest: &Digest) -> Result<Option<u64>> {
        let path = self.blob_path(digest);
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_file() => Ok(Some(meta.len())),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("stat", path, e)),
        }
    }

    /// Opens a blob for reading.
    pub fn open_blob(&self, digest: &Digest) -> Result<File> {
        let path = self.blob_path(digest);
        File::open(&path).map_err(|e| not_found_or(e, digest, "open", &path))
    }

    /// The size of a blob in bytes.
    pub fn blob_size(&self, digest: &Digest) -> Result<u64> {
        self.existing_blob_size(digest)?
            .ok_or_else(|| Error::BlobNotFound {
                digest: digest.clone(),
            })
    }

    /// Reads a whole blob (a manifest, a config) into memory, refusing
    /// blobs larger than `limit` bytes, and checks its digest.
    pub fn read_blob_bytes(&self, digest: &Digest, limit: u64) -> Result<Vec<u8>> {
        let path = self.blob_path(digest);
        let file = self.open_blob(digest)?;
        let size = file
            .metadata()
            .map_err(|e| Error::io("stat", &path, e))?
            .len();
        if size > limit {
            return Err(Error::BlobTooLarge {
                digest: digest.clone(),
                size,
                limit,
            });
        }
        let mut bytes = Vec::with_capacity(size as usize);
        file.take(limit + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| Error::io("read", &path, e))?;
        if bytes.len() as u64 > limit {
            return Err(Error::BlobTooLarge {
                digest: digest.clone(),
                size: bytes.len() as u64,
                limit,
            });
        }
        let actual = Digest::sha256(&bytes);
        if &actual != digest {
            return Err(Error::BlobCorrupt {
                digest: digest.clone(),
                actual,
                path,
            });
        }
        Ok(bytes)
    }

    /// Removes a blob. Returns whether it was present.
    pub fn delete_blob(&self, digest: &Digest) -> Result<bool> {
        let path = self.blob_path(digest);
        match fs::remove_file(&path) {
            Ok(()) => {
                fsync_dir(&self.blobs_dir())?;
                tracing::debug!(%digest, "deleted blob");
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io("remove", path, e)),
        }
    }

    /// All stored blobs, sorted. Files under `blobs/sha256` whose names are
    /// not digests are skipped with a warning.
    pub fn list_blobs(&self) -> Result<Vec<Digest>> {
        let dir = self.blobs_dir();
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).map_err(|e| Error::io("read", &dir, e))? {
            let entry = entry.map_err(|e| Error::io("read", &dir, e))?;
            let name = entry.file_name();
            match name.to_str().map(Digest::from_sha256_hex) {
                Some(Ok(digest)) => out.push(digest),
                _ => tracing::warn!(path = %entry.path().display(), "stray file in blob directory"),
            }
        }
        out.sort();
        Ok(out)
    }

    /// Re-hashes a blob and checks it against its name; returns its size.
    /// Fails with [`Error::BlobCorrupt`] on a mismatch.
    pub fn verify_blob(&self, digest: &Digest) -> Result<u64> {
        check_sha256(digest)?;
        let path = self.blob_path(digest);
        let file = self.open_blob(digest)?;
        let mut hasher = Sha256Writer::default();
        io::copy(&mut BufReader::with_capacity(1 << 16, file), &mut hasher)
            .map_err(|e| Error::io("read", &path, e))?;
        let (actual, size) = hasher.finish();
        if &actual != digest {
            tracing::warn!(%digest, %actual, "corrupt blob");
            return Err(Error::BlobCorrupt {
                digest: digest.clone(),
                actual,
                path,
            });
        }
        Ok(size)
    }
}

/// `remove_dir_all`, first making directories writable so that trees with
/// read-only directories (as layers may contain) can be removed without
/// root. Never follows symlinks.
pub(crate) fn remove_dir_all_writable(path: &Path) -> io::Result<()> {
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            make_dirs_writable(path)?;
            fs::remove_dir_all(path)
        }
        Err(e) => Err(e),
    }
}

fn make_dirs_writable(path: &Path) -> io::Result<()> {
    let meta = fs::symlink_metadata(path)?;
    if !meta.is_dir() {
        return Ok(());
    }
    fs::set_permissions(path, fs::Permissions::from_mode(0o700))?;
    for entry in fs::read_dir(path)? {
        make_dirs_writable(&entry?.path())?;
    }
    Ok(())
}

fn check_sha256(digest: &Digest) -> Result<()> {
    if digest.algorithm() == Algorithm::Sha256 {
        Ok(())
    } else {
        Err(Error::UnsupportedAlgorithm {
            digest: digest.clone(),
        })
    }
}

fn not_found_or(e: io::Error, digest: &Digest, action: &'static str, path: &Path) -> Error {
    if e.kind() == io::ErrorKind::NotFound {
        Error::BlobNotFound {
            digest: digest.clone(),
        }
    } else {
        Error::io(action, path, e)
    }
}

/// `io::copy` with a 1 MiB buffer: large blobs go through in far fewer
/// reads, hash updates and writes than with the default 8 KiB.
fn copy_large<R: io::Read + ?Sized, W: io::Write + ?Sized>(
    reader: &mut R,
    writer: &mut W,
) -> io::Result<u64> {
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        writer.write_all(&buf[..n])?;
        total += n as u64;
    }
}

/// See [`Store::blob_writer`]. Dropped without a commit, it leaves nothing.
///
/// Aligned blocks of zeros are left as holes in the blob file: a layer that
/// adds a file with holes stores its data, not its apparent size.
pub struct BlobWriter {
    store: Store,
    tmp: tempfile::NamedTempFile,
    size: u64,
    sparse: kiln_fs::SparseWriter,
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.sparse.write(self.tmp.as_file(), buf)?;
        self.size += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl BlobWriter {
    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Makes what was written the blob `digest` (durably, as
    /// [`Store::write_blob`] does) and returns its size. The caller
    /// vouches that `digest` is the SHA-256 of exactly those bytes. A blob
    /// already present with that digest is kept.
    pub fn commit_as(mut self, digest: &Digest) -> Result<u64> {
        check_sha256(digest)?;
        self.sparse
            .finish(self.tmp.as_file())
            .map_err(|e| Error::io("write", self.tmp.path().to_path_buf(), e))?;
        self.store.hold([Hold::Blob(digest.clone())])?;
        if let Some(size) = self.store.existing_blob_size(digest)? {
            if size != self.size {
                return Err(Error::Verify {
                    expected: digest.clone(),
                    source: VerifyError::SizeMismatch {
                        expected: size,
                        actual: self.size,
                    },
                });
            }
            tracing::debug!(%digest, size, "blob already present");
            return Ok(size);
        }
        self.store.commit_blob(self.tmp, digest, self.size)?;
        Ok(self.size)
    }
}
