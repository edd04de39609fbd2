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

/// Writes a stream into a file leaving aligned [`HOLE_BLOCK`]s of zeros
/// as holes: a stream of mostly zeros (a tar of a file with holes) takes
/// the disk space of its data. The bytes read back are the same.
#[derive(Debug, Default)]
pub struct SparseWriter {
    /// Bytes of the current block not yet written.
    pending: Vec<u8>,
    /// Bytes handed to the file (written or left as a hole).
    done: u64,
}

impl SparseWriter {
    pub fn new() -> SparseWriter {
        SparseWriter::default()
    }

    /// Appends `buf` to what `file` receives (at the offsets this writer
    /// tracks; the file's own position is not used).
    pub fn write(&mut self, file: &File, mut buf: &[u8]) -> io::Result<()> {
        if !self.pending.is_empty() {
            let take = (HOLE_BLOCK - self.pending.len()).min(buf.len());
            self.pending.extend_from_slice(&buf[..take]);
            buf = &buf[take..];
            if self.pending.len() < HOLE_BLOCK {
                return Ok(());
            }
            let block = std::mem::take(&mut self.pending);
            self.put(file, &block)?;
        }
        while buf.len() >= HOLE_BLOCK {
            self.put(file, &buf[..HOLE_BLOCK])?;
            buf = &buf[HOLE_BLOCK..];
        }
        self.pending.extend_from_slice(buf);
        Ok(())
    }

    /// Writes what is pending and gives the file its full length (a
    /// trailing hole included). Returns the length.
    pub fn finish(&mut self, file: &File) -> io::Result<u64> {
        let block = std::mem::take(&mut self.pending);
        self.put(file, &block)?;
        file.set_len(self.done)?;
        Ok(self.done)
    }

    fn put(&mut self, file: &File, block: &[u8]) -> io::Result<()> {
        if block.len() < HOLE_BLOCK || block.iter().any(|b| *b != 0) {
            file.write_all_at(block, self.done)?;
        }
        self.done += block.len() as u64;
        Ok(())
    }
}

/// The data regions (`[start, end)`, in order) of the first `size` bytes
/// of `file`; everything else is a hole. Where the file system cannot
/// tell, the whole range is one region.
pub fn data_regions(file: &File, size: u64) -> io::Result<Vec<(u64, u64)>> {
    let mut regions = Vec::new();
    let mut pos = 0;
    while pos < size {
        let data = match rustix::fs::seek(file, SeekFrom::Data(pos)) {
            Ok(data) => data,
            Err(Errno::NXIO) => break,
            Err(Errno::INVAL | Errno::NOTSUP) => {
                regions.push((pos, size));
                break;
            }
            Err(e) => return Err(e.into()),
        };
        if data >= size {
            break;
        }
        let hole = match rustix::fs::seek(file, SeekFrom::Hole(data)) {
            Ok(hole) if hole > data => hole.min(size),
            Ok(_) | Err(Errno::NXIO | Errno::INVAL | Errno::NOTSUP) => size,
            Err(e) => return Err(e.into()),
        };
        regions.push((data, hole));
        pos = hole;
    }
    Ok(regions)
}

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
    fn the_sparse_writer_keeps_bytes_and_leaves_zero_blocks_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = File::create(&path).unwrap();
        let mut want = b"head".to_vec();
        want.resize(4 * MIB as usize, 0);
        want.extend_from_slice(b"tail");
        want.resize(want.len() + 3 * HOLE_BLOCK, 0);
        let mut w = SparseWriter::new();
        for piece in want.chunks(7777) {
            w.write(&file, piece).unwrap();
        }
        assert_eq!(w.finish(&file).unwrap(), want.len() as u64);
        assert!(std::fs::read(&path).unwrap() == want);
        let meta = std::fs::metadata(&path).unwrap();
        assert!(
            meta.blocks() * 512 <= 4 * HOLE_BLOCK as u64,
            "{}",
            meta.blocks()
        );
    }

    #[test]
    fn data_regions_skip_holes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let f = File::create(&path).unwrap();
        f.set_len(8 * MIB).unwrap();
        f.write_all_at(b"x", 4 * MIB).unwrap();
        let regions = data_regions(&f, 8 * MIB).unwrap();
        assert_eq!(regions.len(), 1, "{regions:?}");
        let (start, end) = regions[0];
        assert!(
            start <= 4 * MIB && end > 4 * MIB && end - start <= MIB,
            "{regions:?}"
        );
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
