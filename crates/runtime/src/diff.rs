//! Overlay upper directory → OCI layer tarball.
//!
//! The upper directory of an overlay mount holds exactly the changes made
//! through it; this module writes them as an uncompressed layer tar:
//!
//! - entries in byte order of their names, depth first (a directory, then
//!   its contents), without a root entry;
//! - numeric ownership only (no user or group names), mode bits, mtimes in
//!   whole seconds, clamped to `SOURCE_DATE_EPOCH` when given; no access
//!   or change times;
//! - ustar headers, with PAX records for what ustar cannot hold (names or
//!   link targets over 100 bytes, sizes of 8 GiB and more, large ids) and
//!   for extended attributes (`SCHILY.xattr.*`, sorted; overlayfs's own
//!   `trusted.overlay.*`/`user.overlay.*` are left out);
//! - hard links detected by (device, inode): the first name carries the
//!   content, later ones are link entries to it;
//! - overlay whiteouts (character devices 0:0) become `.wh.<name>` files
//!   and opaque directories (`trusted.overlay.opaque=y`) get a
//!   `.wh..wh..opq` entry right after the directory;
//! - sockets are skipped (they cannot be archived);
//! - files with holes are plain entries with their holes as zeros, as Go's
//!   `archive/tar` (Docker, BuildKit) writes them, but only their data is
//!   read from disk (`SEEK_DATA`/`SEEK_HOLE`).
//!
//! The same upper directory and options always give the same bytes.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use kiln_oci::Digest;
use kiln_oci::digest::Sha256Writer;

use crate::error::DiffError;

const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
const BLOCK: usize = 512;
/// The largest value of a 12-byte octal field (size, mtime).
const MAX_OCTAL_12: u64 = 0o777_7777_7777;
/// The largest value of an 8-byte octal field (uid, gid, devices).
const MAX_OCTAL_8: u64 = 0o777_7777;

/// Options for [`write_diff`].
#[derive(Clone, Debug, Default)]
pub struct DiffOptions {
    /// Clamp modification times to this (Unix seconds), for reproducible
    /// layers.
    pub source_date_epoch: Option<i64>,
    /// Paths, relative to the upper directory, left out when they are an
    /// empty regular file or an empty directory: mount points the runtime
    /// created for files it bind-mounted (`etc/hosts`…).
    pub skip_placeholders: Vec<PathBuf>,
}

/// What [`write_diff`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiffSummary {
    /// sha256 of the tar stream: the layer's `diff_id`.
    pub diff_id: Digest,
    /// Bytes written.
    pub size: u64,
    /// Tar entries written (PAX headers not counted).
    pub entries: u64,
}

/// Writes the layer tar of overlay upper directory `upper` to `out`.
pub fn write_diff<W: Write>(
    upper: &Path,
    out: W,
    options: &DiffOptions,
) -> Result<DiffSummary, DiffError> {
    let mut w = DiffWriter {
        upper,
        out: Sha256Writer::new(out),
        options,
        links: HashMap::new(),
        entries: 0,
    };
    w.dir_contents(upper, &[])?;
    w.out
        .write_all(&[0u8; 2 * BLOCK])
        .map_err(DiffError::Write)?;
    w.out.flush().map_err(DiffError::Write)?;
    let entries = w.entries;
    let (diff_id, size) = w.out.finish();
    tracing::debug!(upper = %upper.display(), %diff_id, size, entries, "wrote layer diff");
    Ok(DiffSummary {
        diff_id,
        size,
        entries,
    })
}

struct DiffWriter<'a, W: Write> {
    upper: &'a Path,
    out: Sha256Writer<W>,
    options: &'a DiffOptions,
    /// (dev, ino) → the archive name that holds the content.
    links: HashMap<(u64, u64), Vec<u8>>,
    entries: u64,
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> DiffError + 'a {
    move |source| DiffError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

/// Tar entry types used here.
#[derive(Clone, Copy)]
enum Kind {
    File,
    HardLink,
    Symlink,
    Char,
    Block,
    Dir,
    Fifo,
}

impl Kind {
    fn flag(self) -> u8 {
        match self {
            Kind::File => b'0',
            Kind::HardLink => b'1',
            Kind::Symlink => b'2',
            Kind::Char => b'3',
            Kind::Block => b'4',
            Kind::Dir => b'5',
            Kind::Fifo => b'6',
        }
    }
}

struct Entry {
    name: Vec<u8>,
    kind: Kind,
    mode: u32,
    uid: u64,
    gid: u64,
    size: u64,
    mtime: i64,
    link: Vec<u8>,
    dev: (u64, u64),
    xattrs: Vec<(OsString, Vec<u8>)>,
    /// A regular file that may have holes (fewer blocks than its size).
    sparse: bool,
}

impl<W: Write> DiffWriter<'_, W> {
    fn mtime(&self, m: &fs::Metadata) -> i64 {
        let t = m.mtime();
        match self.options.source_date_epoch {
            Some(epoch) => t.min(epoch),
            None => t,
        }
    }

    fn dir_contents(&mut self, dir: &Path, prefix: &[u8]) -> Result<(), DiffError> {
        let mut names: Vec<OsString> = fs::read_dir(dir)
            .map_err(io_err("read directory", dir))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<_>>()
            .map_err(io_err("read directory", dir))?;
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        for name in names {
            let path = dir.join(&name);
            let mut rel = prefix.to_vec();
            rel.extend_from_slice(name.as_bytes());
            self.entry(&path, rel, name.as_bytes())?;
        }
        Ok(())
    }

    fn is_placeholder(&self, path: &Path, meta: &fs::Metadata) -> Result<bool, DiffError> {
        let Ok(rel) = path.strip_prefix(self.upper) else {
            return Ok(false);
        };
        if !self.options.skip_placeholders.iter().any(|p| p == rel) {
            return Ok(false);
        }
        let ft = meta.file_type();
        if ft.is_file() {
            return Ok(meta.len() == 0);
        }
        if ft.is_dir() {
            let mut it = fs::read_dir(path).map_err(io_err("read directory", path))?;
            return Ok(it.next().is_none());
        }
        Ok(false)
    }

    fn entry(&mut self, path: &Path, rel: Vec<u8>, base: &[u8]) -> Result<(), DiffError> {
        let meta = fs::symlink_metadata(path).map_err(io_err("stat", path))?;
        if self.is_placeholder(path, &meta)? {
            tracing::trace!(path = %path.display(), "skipping mount placeholder");
            return Ok(());
        }
        let ft = meta.file_type();
        let mut entry = Entry {
            name: rel.clone(),
            kind: Kind::File,
            mode: meta.mode() & 0o7777,
            uid: u64::from(meta.uid()),
            gid: u64::from(meta.gid()),
            size: 0,
            mtime: self.mtime(&meta),
            link: Vec::new(),
            dev: (0, 0),
            xattrs: Vec::new(),
            sparse: false,
        };
        if ft.is_char_device() && meta.rdev() == 0 {
            // Overlay whiteout.
            let parent_len = rel.len() - base.len();
            let mut name = rel[..parent_len].to_vec();
            name.extend_from_slice(WHITEOUT_PREFIX);
            name.extend_from_slice(base);
            entry.name = name;
            entry.mode = 0o600;
            return self.write_entry(&entry, None);
        }
        if ft.is_socket() {
            tracing::debug!(path = %path.display(), "skipping socket");
            return Ok(());
        }
        entry.xattrs = xattrs(path)?;
        if ft.is_dir() {
            entry.kind = Kind::Dir;
            entry.name.push(b'/');
            let opaque = entry
                .xattrs
                .iter()
                .any(|(k, v)| k.as_bytes() == OPAQUE_XATTR.as_bytes() && v == b"y");
            entry.xattrs.retain(|(k, _)| !is_overlay_xattr(k));
            self.write_entry(&entry, None)?;
            if opaque {
                let mut marker = entry.name.clone();
                marker.extend_from_slice(OPAQUE_MARKER);
                let opq = Entry {
                    name: marker,
                    kind: Kind::File,
                    mode: entry.mode & 0o777,
                    uid: entry.uid,
                    gid: entry.gid,
                    size: 0,
                    mtime: entry.mtime,
                    link: Vec::new(),
                    dev: (0, 0),
                    xattrs: Vec::new(),
                    sparse: false,
                };
                self.write_entry(&opq, None)?;
            }
            let prefix = entry.name.clone();
            return self.dir_contents(path, &prefix);
        }
        entry.xattrs.retain(|(k, _)| !is_overlay_xattr(k));
        if ft.is_symlink() {
            entry.kind = Kind::Symlink;
            entry.link = fs::read_link(path)
                .map_err(io_err("read symlink", path))?
                .into_os_string()
                .into_vec();
            return self.write_entry(&entry, None);
        }
        if ft.is_char_device() || ft.is_block_device() {
            entry.kind = if ft.is_char_device() {
                Kind::Char
            } else {
                Kind::Block
            };
            let rdev = meta.rdev();
            entry.dev = (
                u64::from(rustix::fs::major(rdev)),
                u64::from(rustix::fs::minor(rdev)),
            );
            return self.write_entry(&entry, None);
        }
        if ft.is_fifo() {
            entry.kind = Kind::Fifo;
            return self.write_entry(&entry, None);
        }
        // Regular file.
        if meta.nlink() > 1 {
            let key = (meta.dev(), meta.ino());
            if let Some(target) = self.links.get(&key) {
                entry.kind = Kind::HardLink;
                entry.link = target.clone();
                return self.write_entry(&entry, None);
            }
            self.links.insert(key, rel);
        }
        entry.size = meta.len();
        entry.sparse = meta.blocks().saturating_mul(512) < meta.len();
        self.write_entry(&entry, Some(path))
    }

    fn write_entry(&mut self, e: &Entry, content: Option<&Path>) -> Result<(), DiffError> {
        let mut pax: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        if e.name.len() > 100 {
            pax.push((b"path".to_vec(), e.name.clone()));
        }
        if e.link.len() > 100 {
            pax.push((b"linkpath".to_vec(), e.link.clone()));
        }
        if e.size > MAX_OCTAL_12 {
            pax.push((b"size".to_vec(), e.size.to_string().into_bytes()));
        }
        if e.uid > MAX_OCTAL_8 {
            pax.push((b"uid".to_vec(), e.uid.to_string().into_bytes()));
        }
        if e.gid > MAX_OCTAL_8 {
            pax.push((b"gid".to_vec(), e.gid.to_string().into_bytes()));
        }
        let mtime = e.mtime.max(0) as u64;
        if mtime > MAX_OCTAL_12 {
            pax.push((b"mtime".to_vec(), mtime.to_string().into_bytes()));
        }
        for (k, v) in &e.xattrs {
            let mut key = b"SCHILY.xattr.".to_vec();
            key.extend_from_slice(k.as_bytes());
            pax.push((key, v.clone()));
        }
        if !pax.is_empty() {
            let data = pax_records(&pax);
            let base = e
                .name
                .strip_suffix(b"/")
                .unwrap_or(&e.name)
                .rsplit(|b| *b == b'/')
                .next()
                .unwrap_or_default();
            let mut name = b"PaxHeaders.0/".to_vec();
            name.extend_from_slice(base);
            let header = ustar_header(&Header {
                name: &name,
                flag: b'x',
                mode: 0o644,
                uid: 0,
                gid: 0,
                size: data.len() as u64,
                mtime: 0,
                link: b"",
                dev: (0, 0),
            });
            self.write(&header)?;
            self.write(&data)?;
            self.pad(data.len() as u64)?;
        }
        let header = ustar_header(&Header {
            name: &e.name,
            flag: e.kind.flag(),
            mode: e.mode,
            uid: e.uid,
            gid: e.gid,
            size: e.size,
            mtime,
            link: &e.link,
            dev: e.dev,
        });
        self.write(&header)?;
        self.entries += 1;
        if let Some(path) = content {
            let file = fs::File::open(path).map_err(io_err("open", path))?;
            let copied = if e.sparse {
                let mut reader = kiln_fs::HoleReader::new(&file, e.size);
                io::copy(&mut reader, &mut self.out).map(|n| if reader.shrunk() { 0 } else { n })
            } else {
                io::copy(&mut file.take(e.size), &mut self.out)
            }
            .map_err(|source| DiffError::Io {
                action: "archive",
                path: path.to_owned(),
                source,
            })?;
            if copied != e.size {
                return Err(DiffError::Changed {
                    path: path.to_owned(),
                    expected: e.size,
                    actual: copied,
                });
            }
            self.pad(e.size)?;
        }
        Ok(())
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), DiffError> {
        self.out.write_all(bytes).map_err(DiffError::Write)
    }

    fn pad(&mut self, len: u64) -> Result<(), DiffError> {
        let rem = (len % BLOCK as u64) as usize;
        if rem != 0 {
            self.write(&[0u8; BLOCK][..BLOCK - rem])?;
        }
        Ok(())
    }
}

fn is_overlay_xattr(name: &OsString) -> bool {
    let n = name.as_bytes();
    n.starts_with(b"trusted.overlay.") || n.starts_with(b"user.overlay.")
}

/// The extended attributes of `path` (not following symlinks), sorted.
fn xattrs(path: &Path) -> Result<Vec<(OsString, Vec<u8>)>, DiffError> {
    let list = match read_sized(|buf| rustix::fs::llistxattr(path, buf)) {
        Ok(list) => list,
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NOTSUP.raw_os_error()) => {
            return Ok(Vec::new());
        }
        Err(e) => return Err(io_err("list extended attributes of", path)(e)),
    };
    let mut out = Vec::new();
    for name in list.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let name = OsString::from_vec(name.to_vec());
        match read_sized(|buf| rustix::fs::lgetxattr(path, &name, buf)) {
            Ok(value) => out.push((name, value)),
            // Removed in the meantime.
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NODATA.raw_os_error()) => {}
            Err(e) => return Err(io_err("read extended attribute of", path)(e)),
        }
    }
    out.sort();
    Ok(out)
}

/// Calls `f` with a growing buffer until the value fits.
fn read_sized(mut f: impl FnMut(&mut [u8]) -> rustix::io::Result<usize>) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    loop {
        match f(&mut buf) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(rustix::io::Errno::RANGE) if buf.len() < (1 << 20) => {
                let len = buf.len() * 4;
                buf.resize(len, 0);
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// PAX records: `"<len> <key>=<value>\n"`, where `len` counts the whole
/// record including its own digits.
fn pax_records(records: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in records {
        let rest = k.len() + v.len() + 3; // ' ', '=', '\n'
        let mut len = rest + 1;
        while len != rest + len.to_string().len() {
            len = rest + len.to_string().len();
        }
        out.extend_from_slice(len.to_string().as_bytes());
        out.push(b' ');
        out.extend_from_slice(k);
        out.push(b'=');
        out.extend_from_slice(v);
        out.push(b'\n');
    }
    out
}

struct Header<'a> {
    name: &'a [u8],
    flag: u8,
    mode: u32,
    uid: u64,
    gid: u64,
    size: u64,
    mtime: u64,
    link: &'a [u8],
    dev: (u64, u64),
}

/// Writes `value` as zero-padded octal in `field`, NUL-terminated. Values
/// too large are written as 0 (a PAX record carries them).
fn octal(field: &mut [u8], value: u64) {
    let width = field.len() - 1;
    let max = if width >= 22 {
        u64::MAX
    } else {
        (1u64 << (3 * width)) - 1
    };
    let value = if value > max { 0 } else { value };
    let s = format!("{value:0width$o}");
    field[..width].copy_from_slice(s.as_bytes());
    field[width] = 0;
}

fn truncated(field: &mut [u8], value: &[u8]) {
    let n = value.len().min(field.len());
    field[..n].copy_from_slice(&value[..n]);
}

fn ustar_header(h: &Header<'_>) -> [u8; BLOCK] {
    let mut b = [0u8; BLOCK];
    truncated(&mut b[0..100], h.name);
    octal(&mut b[100..108], u64::from(h.mode));
    octal(&mut b[108..116], h.uid);
    octal(&mut b[116..124], h.gid);
    octal(&mut b[124..136], h.size);
    octal(&mut b[136..148], h.mtime);
    b[156] = h.flag;
    truncated(&mut b[157..257], h.link);
    b[257..263].copy_from_slice(b"ustar\0");
    b[263..265].copy_from_slice(b"00");
    if matches!(h.flag, b'3' | b'4') {
        octal(&mut b[329..337], h.dev.0);
        octal(&mut b[337..345], h.dev.1);
    }
    b[148..156].fill(b' ');
    let sum: u32 = b.iter().map(|&x| u32::from(x)).sum();
    let s = format!("{sum:06o}\0 ");
    b[148..156].copy_from_slice(s.as_bytes());
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_lengths_count_themselves() {
        let r = pax_records(&[(b"path".to_vec(), vec![b'a'; 3])]);
        assert_eq!(r, b"12 path=aaa\n");
        // 8 + 90 + 3 = 101 bytes plus 3 digits.
        let r = pax_records(&[(b"linkpath".to_vec(), vec![b'b'; 90])]);
        assert!(r.starts_with(b"104 linkpath="));
        assert_eq!(r.len(), 104);
        // 8 + 87 + 3 = 98 bytes: 2 digits would make 100, which has 3.
        let r = pax_records(&[(b"linkpath".to_vec(), vec![b'b'; 87])]);
        assert!(r.starts_with(b"101 linkpath="));
        assert_eq!(r.len(), 101);
    }

    #[test]
    fn headers_parse_with_the_tar_crate() {
        let dir = tempfile::tempdir().unwrap();
        let upper = dir.path();
        fs::create_dir(upper.join("d")).unwrap();
        fs::write(upper.join("d/file"), b"hello").unwrap();
        fs::hard_link(upper.join("d/file"), upper.join("d/link")).unwrap();
        let long = "x".repeat(150);
        fs::write(upper.join(&long), b"long").unwrap();
        std::os::unix::fs::symlink("d/file", upper.join("sym")).unwrap();
        let mut out = Vec::new();
        let summary = write_diff(
            upper,
            &mut out,
            &DiffOptions {
                source_date_epoch: Some(1_000),
                ..DiffOptions::default()
            },
        )
        .unwrap();
        assert_eq!(summary.size, out.len() as u64);
        assert_eq!(summary.diff_id, Digest::sha256(&out));
        assert_eq!(summary.entries, 5);

        let mut archive = tar::Archive::new(&out[..]);
        let mut seen = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().to_string_lossy().into_owned();
            let header = entry.header();
            assert_eq!(header.mtime().unwrap(), 1_000);
            let kind = header.entry_type();
            let link = entry
                .link_name()
                .unwrap()
                .map(|l| l.to_string_lossy().into_owned());
            let mut body = String::new();
            entry.read_to_string(&mut body).unwrap();
            seen.push((path, kind, link, body));
        }
        let names: Vec<&str> = seen.iter().map(|s| s.0.as_str()).collect();
        assert_eq!(names, ["d/", "d/file", "d/link", "sym", long.as_str()]);
        assert!(seen[0].1.is_dir());
        assert_eq!(seen[1].3, "hello");
        assert!(seen[2].1.is_hard_link());
        assert_eq!(seen[2].2.as_deref(), Some("d/file"));
        assert!(seen[3].1.is_symlink());
        assert_eq!(seen[4].3, "long");

        let mut again = Vec::new();
        write_diff(
            upper,
            &mut again,
            &DiffOptions {
                source_date_epoch: Some(1_000),
                ..DiffOptions::default()
            },
        )
        .unwrap();
        assert_eq!(out, again);
    }

    #[test]
    fn files_with_holes_give_the_bytes_of_reading_them_whole() {
        use std::os::unix::fs::FileExt;
        let dir = tempfile::tempdir().unwrap();
        let upper = dir.path();
        let mib = 1u64 << 20;
        // Data at the start, in the middle, a trailing hole; and a file
        // that is one hole.
        let f = fs::File::create(upper.join("sparse")).unwrap();
        f.set_len(64 * mib + 7).unwrap();
        f.write_all_at(b"head", 0).unwrap();
        f.write_all_at(&[9u8; 5000], 32 * mib - 100).unwrap();
        drop(f);
        fs::File::create(upper.join("hole"))
            .unwrap()
            .set_len(3 * mib)
            .unwrap();
        fs::write(upper.join("plain"), b"plain").unwrap();
        let sparse_meta = fs::metadata(upper.join("sparse")).unwrap();
        assert!(
            sparse_meta.blocks() * 512 < sparse_meta.len(),
            "no holes here"
        );

        let mut out = Vec::new();
        write_diff(upper, &mut out, &DiffOptions::default()).unwrap();
        // What reading every file whole gives.
        let mut archive = tar::Archive::new(&out[..]);
        let mut seen = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            assert_eq!(entry.header().entry_type(), tar::EntryType::Regular);
            let path = entry.path().unwrap().into_owned();
            let mut body = Vec::new();
            entry.read_to_end(&mut body).unwrap();
            assert_eq!(body, fs::read(upper.join(&path)).unwrap(), "{path:?}");
            seen.push(path);
        }
        assert_eq!(seen.len(), 3);
    }

    #[test]
    fn placeholders_are_skipped_only_when_empty() {
        let dir = tempfile::tempdir().unwrap();
        let upper = dir.path();
        fs::create_dir(upper.join("etc")).unwrap();
        fs::write(upper.join("etc/hosts"), b"").unwrap();
        fs::write(upper.join("etc/hostname"), b"real").unwrap();
        let options = DiffOptions {
            source_date_epoch: None,
            skip_placeholders: vec!["etc/hosts".into(), "etc/hostname".into()],
        };
        let mut out = Vec::new();
        write_diff(upper, &mut out, &options).unwrap();
        let mut archive = tar::Archive::new(&out[..]);
        let names: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["etc/", "etc/hostname"]);
    }
}
