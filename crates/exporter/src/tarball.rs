//! Deterministic tar writing and exact-length reading.
//!
//! Archives are written by hand (header, data, padding, trailer) rather
//! than with `tar::Builder`, whose `Drop` writes the end-of-archive marker
//! even after a failure: a failed save must not look like a complete
//! archive.

use std::io::{self, Read, Write};

/// Headers: uid/gid 0, no user or group names, mtime 0, mode 0644 for
/// files and 0755 for directories.
const FILE_MODE: u32 = 0o644;
const DIR_MODE: u32 = 0o755;
const BLOCK: usize = 512;

/// Writes tar entries to `inner`, tracking the position for padding.
pub(crate) struct TarWriter<W: Write> {
    inner: W,
}

impl<W: Write> TarWriter<W> {
    pub(crate) fn new(inner: W) -> Self {
        TarWriter { inner }
    }

    fn header(path: &str, size: u64, kind: tar::EntryType, mode: u32) -> io::Result<tar::Header> {
        let mut header = tar::Header::new_ustar();
        header.set_path(path)?;
        header.set_size(size);
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_cksum();
        Ok(header)
    }

    /// A directory entry (`path` without a trailing slash; ustar adds it).
    pub(crate) fn dir(&mut self, path: &str) -> io::Result<()> {
        let mut header = Self::header(path, 0, tar::EntryType::Directory, DIR_MODE)?;
        // Directory names end in a slash, as other tar writers do.
        let mut name = path.to_owned();
        name.push('/');
        header.set_path(&name)?;
        header.set_cksum();
        self.inner.write_all(header.as_bytes())
    }

    /// A regular file of exactly `size` bytes read from `data`. Fails with
    /// [`CopyError::Read`] of kind `UnexpectedEof` if `data` ends early;
    /// reads no more than `size`.
    pub(crate) fn file(&mut self, path: &str, size: u64, data: impl Read) -> Result<(), CopyError> {
        let header = Self::header(path, size, tar::EntryType::Regular, FILE_MODE)
            .map_err(CopyError::Write)?;
        self.inner
            .write_all(header.as_bytes())
            .map_err(CopyError::Write)?;
        let mut exact = ExactReader::new(data, size);
        copy_sides(&mut exact, &mut self.inner)?;
        let pad = (BLOCK - (size % BLOCK as u64) as usize) % BLOCK;
        self.inner
            .write_all(&[0u8; BLOCK][..pad])
            .map_err(CopyError::Write)
    }

    /// A small regular file from memory.
    pub(crate) fn bytes(&mut self, path: &str, data: &[u8]) -> io::Result<()> {
        self.file(path, data.len() as u64, data)
            .map_err(CopyError::into_inner)
    }

    /// Writes the end-of-archive marker and returns the writer.
    pub(crate) fn finish(mut self) -> io::Result<W> {
        self.inner.write_all(&[0u8; 2 * BLOCK])?;
        self.inner.flush()?;
        Ok(self.inner)
    }
}

/// Which side of a copy failed.
#[derive(Debug)]
pub(crate) enum CopyError {
    Read(io::Error),
    Write(io::Error),
}

impl CopyError {
    pub(crate) fn into_inner(self) -> io::Error {
        match self {
            CopyError::Read(e) | CopyError::Write(e) => e,
        }
    }
}

/// `io::copy` with a larger buffer (for multi-hundred-MB layers) that
/// tells read errors from write errors.
pub(crate) fn copy_sides(
    reader: &mut impl Read,
    writer: &mut impl Write,
) -> Result<u64, CopyError> {
    let mut buf = vec![0u8; 1 << 17];
    let mut total = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CopyError::Read(e)),
        };
        writer.write_all(&buf[..n]).map_err(CopyError::Write)?;
        total += n as u64;
    }
}

/// Yields exactly `remaining` bytes of `inner`: stops there, and fails with
/// `UnexpectedEof` if `inner` ends before.
pub(crate) struct ExactReader<R> {
    inner: R,
    remaining: u64,
}

impl<R: Read> ExactReader<R> {
    pub(crate) fn new(inner: R, size: u64) -> Self {
        ExactReader {
            inner,
            remaining: size,
        }
    }
}

impl<R: Read> Read for ExactReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let max = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..max])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("content ended {} bytes early", self.remaining),
            ));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// Keeps the first read error of `inner` so that the caller can tell a
/// failing source (a truncated archive) from a failing destination when
/// both go through one `io::copy`.
pub(crate) struct ErrorTap<R> {
    inner: R,
    pub(crate) error: Option<io::Error>,
}

impl<R: Read> ErrorTap<R> {
    pub(crate) fn new(inner: R) -> Self {
        ErrorTap { inner, error: None }
    }
}

impl<R: Read> Read for ErrorTap<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Err(e),
            Err(e) => {
                let replacement = io::Error::new(e.kind(), "reading the archive failed");
                self.error = Some(e);
                Err(replacement)
            }
        }
    }
}
