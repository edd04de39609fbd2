//! Files with holes: reading and copying only their data.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;

use rustix::fs::SeekFrom;
use rustix::io::Errno;

/// The block size holes are looked for in when writing: an aligned block
/// of zeros this long is left as a hole.
pub const HOLE_BLOCK: usize = 64 * 1024;
static ZEROS: [u8; HOLE_BLOCK] = [0; HOLE_BLOCK];

/// Whether a file's allocated blocks cover less than its size: it has
/// holes (or is being written).
pub fn has_holes(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    meta.is_file() && meta.blocks().saturating_mul(512) < meta.len()
}

/// Reads the first `size` bytes of a file as `read` would, but reads only
/// its data regions (`SEEK_DATA`/`SEEK_HOLE`) from disk and gives zeros for
/// its holes, without reading them: a file with holes is read in time
/// proportional to its data. Should the file shrink, the missing end
/// reads as zeros.
pub struct HoleReader<'a> {
    file: &'a File,
    pos: u64,
    size: u64,
    /// The current region: zeros up to `data`, data up to `hole`.
    data: u64,
    hole: u64,
    shrunk: bool,
}

impl<'a> HoleReader<'a> {
    pub fn new(file: &'a File, size: u64) -> HoleReader<'a> {
        HoleReader {
            file,
            pos: 0,
            size,
            data: 0,
            hole: 0,
            shrunk: false,
        }
    }

    /// Whether the file ended before `size` (the rest was read as zeros).
    pub fn shrunk(&self) -> bool {
        self.shrunk
    }

    /// Finds the region at `pos`: zeros to `data`, then data to `hole`.
    fn next_region(&mut self) -> io::Result<()> {
        (self.data, self.hole) = match rustix::fs::seek(self.file, SeekFrom::Data(self.pos)) {
            Ok(data) if data < self.size => {
                let hole = match rustix::fs::seek(self.file, SeekFrom::Hole(data)) {
                    Ok(hole) if hole > data => hole.min(self.size),
                    Ok(_) | Err(Errno::NXIO) => self.size,
                    Err(e) => return Err(e.into()),
                };
                (data, hole)
            }
            // No data before the end: a trailing hole, or a file that
            // shrank.
            Ok(_) | Err(Errno::NXIO) => {
                if self.file.metadata()?.len() < self.size {
                    self.shrunk = true;
                }
                (self.size, self.size)
            }
            // SEEK_DATA unsupported: all data.
            Err(Errno::INVAL | Errno::NOTSUP) => (self.pos, self.size),
            Err(e) => return Err(e.into()),
        };
        Ok(())
    }
}

impl Read for HoleReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.size || buf.is_empty() {
            return Ok(0);
        }
        if self.pos >= self.hole {
            self.next_region()?;
        }
        let n = if self.pos < self.data {
            let n = buf
                .len()
                .min(HOLE_BLOCK)
                .min((self.data - self.pos) as usize);
            buf[..n].copy_from_slice(&ZEROS[..n]);
            n
        } else {
            let want = buf.len().min((self.hole - self.pos) as usize);
            match self.file.read_at(&mut buf[..want], self.pos)? {
                0 => {
                    // Shorter than it was: zeros to `size`.
                    self.shrunk = true;
                    self.data = self.size;
                    self.hole = self.size;
                    return self.read(buf);
                }
                n => n,
            }
        };
        self.pos += n as u64;
        Ok(n)
    }
}

/// Copies regular file `src` to `dst` as [`std::fs::copy`] does (`dst`
/// created or truncated, with the permissions of `src`), but keeps the
/// holes of `src`: only its data regions are read and written, so a file
/// with holes is copied in time and space proportional to its data
/// (`std::fs::copy` writes the holes out as zeros). Returns the size.
pub fn copy_file_keeping_holes(src: &Path, dst: &Path) -> io::Result<u64> {
    use std::io::Seek;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let from = File::open(src)?;
    let meta = from.metadata()?;
    if !has_holes(&meta) {
        return std::fs::copy(src, dst);
    }
    let to = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(meta.permissions().mode())
        .open(dst)?;
    let size = meta.len();
    let mut pos = 0;
    while pos < size {
        let data = match rustix::fs::seek(&from, SeekFrom::Data(pos)) {
            Ok(data) => data,
            Err(Errno::NXIO) => break,
            Err(Errno::INVAL | Errno::NOTSUP) => pos,
            Err(e) => return Err(e.into()),
        };
        if data >= size {
            break;
        }
        let hole = match rustix::fs::seek(&from, SeekFrom::Hole(data)) {
            Ok(hole) if hole > data => hole.min(size),
            Ok(_) | Err(Errno::NXIO | Errno::INVAL | Errno::NOTSUP) => size,
            Err(e) => return Err(e.into()),
        };
        (&from).seek(io::SeekFrom::Start(data))?;
        (&to).seek(io::SeekFrom::Start(data))?;
        let n = io::copy(&mut (&from).take(hole - data), &mut &to)?;
        pos = data + n;
        if n < hole - data {
            break;
        }
    }
    to.set_len(size)?;
    to.set_permissions(meta.permissions())?;
    Ok(size)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn the_hole_reader_reads_what_read_reads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let f = File::create(&path).unwrap();
        f.set_len(3 * MIB).unwrap();
        f.write_all_at(b"x", 2 * MIB).unwrap();
        f.write_all_at(b"y", 10).unwrap();
        drop(f);
        let file = File::open(&path).unwrap();
        let whole = std::fs::read(&path).unwrap();
        for size in [0, 1, 11, 2 * MIB, 2 * MIB + 1, 3 * MIB, 4 * MIB] {
            let mut got = Vec::new();
            HoleReader::new(&file, size).read_to_end(&mut got).unwrap();
            let mut want = whole[..whole.len().min(size as usize)].to_vec();
            want.resize(size as usize, 0);
            assert!(got == want, "{size}");
        }
    }

    #[test]
    fn copies_keep_holes() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        let f = File::create(&src).unwrap();
        f.set_len(64 * MIB + 1).unwrap();
        f.write_all_at(b"middle", 32 * MIB).unwrap();
        drop(f);
        let mode = 0o751;
        std::fs::set_permissions(&src, std::fs::Permissions::from_mode(mode)).unwrap();
        for name in ["new", "existing"] {
            let dst = dir.path().join(name);
            if name == "existing" {
                std::fs::write(&dst, vec![1u8; 100 * 1024]).unwrap();
            }
            assert_eq!(copy_file_keeping_holes(&src, &dst).unwrap(), 64 * MIB + 1);
            assert!(std::fs::read(&dst).unwrap() == std::fs::read(&src).unwrap());
            let meta = std::fs::metadata(&dst).unwrap();
            assert!(meta.blocks() * 512 <= MIB, "{}", meta.blocks());
            assert_eq!(meta.mode() & 0o7777, mode);
        }
        // Files without holes are copied as std copies them.
        let plain = dir.path().join("plain");
        std::fs::write(&plain, b"plain").unwrap();
        copy_file_keeping_holes(&plain, &dir.path().join("copy")).unwrap();
        assert_eq!(std::fs::read(dir.path().join("copy")).unwrap(), b"plain");
    }

    #[test]
    fn a_file_that_shrank_reads_as_zeros_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"abc").unwrap();
        let file = File::open(&path).unwrap();
        let mut reader = HoleReader::new(&file, 5);
        let mut got = Vec::new();
        reader.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"abc\0\0");
        assert!(reader.shrunk());
    }
}
