//! Checking a snapshot's files against its layer: the layer blob is
//! unpacked again into a temporary directory (by the same extractor, so
//! both trees follow the same rules) and the two trees are compared entry
//! by entry: type, permissions, owner, size and content of files, link
//! targets, device numbers and overlay opaque markers. Times are not
//! compared: a build step's snapshot keeps the times of its upper
//! directory, which the layer may clamp.

use std::ffi::OsString;
use std::fs::{self, File, Metadata};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use kiln_oci::Digest;

use crate::blob::remove_dir_all_writable;
use crate::error::{Error, Result};
use crate::snapshot::Snapshot;
use crate::store::Store;

/// At most this many differences are reported per snapshot.
const MAX_DIFFERENCES: usize = 10;

/// What comparing a snapshot with its layer found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SnapshotVerdict {
    /// Every entry matches.
    Intact,
    /// The first differences (paths relative to the snapshot root).
    Damaged(Vec<String>),
    /// The layer blob is gone, so the snapshot cannot be checked.
    NoLayer,
}

impl Store {
    /// Compares `snapshot`'s files with a fresh unpack of its layer blob.
    pub fn verify_snapshot(&self, snapshot: &Snapshot) -> Result<SnapshotVerdict> {
        if !self.has_blob(&snapshot.meta.layer)? {
            return Ok(SnapshotVerdict::NoLayer);
        }
        let ingest = self.ingest_dir();
        let tmp = tempfile::Builder::new()
            .prefix("verify-")
            .tempdir_in(&ingest)
            .map_err(|e| Error::io("create temporary directory in", &ingest, e))?;
        let result = (|| {
            self.unpack_into(tmp.path(), &snapshot.meta.chain_id, &snapshot.meta.layer)?;
            let mut differences = Vec::new();
            compare_trees(
                &tmp.path().join("fs"),
                &snapshot.fs,
                Path::new(""),
                &mut differences,
            )
            .map_err(|e| Error::io("compare", &snapshot.fs, e))?;
            Ok(if differences.is_empty() {
                SnapshotVerdict::Intact
            } else {
                SnapshotVerdict::Damaged(differences)
            })
        })();
        if let Err(e) = remove_dir_all_writable(tmp.path()) {
            tracing::warn!(path = %tmp.path().display(), error = %e, "failed to remove a temporary unpack");
        }
        result
    }

    /// Replaces snapshot `chain_id` with a fresh unpack of its layer.
    pub(crate) fn reunpack_snapshot(&self, snapshot: &Snapshot) -> Result<()> {
        let (chain, layer, diff_id): (Digest, Digest, Digest) = (
            snapshot.meta.chain_id.clone(),
            snapshot.meta.layer.clone(),
            snapshot.meta.diff_id.clone(),
        );
        self.remove_snapshot(&chain)?;
        self.prepare_snapshot(&chain, &layer, &diff_id)?;
        Ok(())
    }
}

fn sorted_entries(dir: &Path) -> io::Result<Vec<OsString>> {
    let mut names: Vec<OsString> = fs::read_dir(dir)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<io::Result<_>>()?;
    names.sort();
    Ok(names)
}

/// Compares directory `want` (fresh) with `have` (the snapshot), both at
/// `rel`, appending differences.
fn compare_trees(want: &Path, have: &Path, rel: &Path, out: &mut Vec<String>) -> io::Result<()> {
    let wanted = sorted_entries(want)?;
    let present = sorted_entries(have)?;
    for name in &present {
        if out.len() >= MAX_DIFFERENCES {
            return Ok(());
        }
        if wanted.binary_search(name).is_err() {
            out.push(format!("{}: not in the layer", rel.join(name).display()));
        }
    }
    for name in &wanted {
        if out.len() >= MAX_DIFFERENCES {
            return Ok(());
        }
        let (w, h, r) = (want.join(name), have.join(name), rel.join(name));
        if present.binary_search(name).is_err() {
            out.push(format!("{}: missing", r.display()));
            continue;
        }
        let compared = (|| -> io::Result<()> {
            let (wm, hm) = (fs::symlink_metadata(&w)?, fs::symlink_metadata(&h)?);
            if let Some(d) = compare_entry(&w, &h, &wm, &hm)? {
                out.push(format!("{}: {d}", r.display()));
                return Ok(());
            }
            if wm.is_dir() {
                compare_trees(&w, &h, &r, out)?;
            }
            Ok(())
        })();
        match compared {
            // Deeper than a host path can name (the layer's own paths are
            // at most PATH_MAX, the store's prefix comes on top): left
            // unchecked rather than failing the whole check.
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NAMETOOLONG.raw_os_error()) => {
                tracing::debug!(path = %r.display(), "too deep to compare");
            }
            other => other?,
        }
    }
    Ok(())
}

fn kind(m: &Metadata) -> &'static str {
    let t = m.file_type();
    if t.is_dir() {
        "directory"
    } else if t.is_symlink() {
        "symbolic link"
    } else if t.is_file() {
        "file"
    } else if t.is_char_device() {
        "character device"
    } else if t.is_block_device() {
        "block device"
    } else if t.is_fifo() {
        "fifo"
    } else {
        "socket"
    }
}

/// The first difference between two entries of the same path.
fn compare_entry(w: &Path, h: &Path, wm: &Metadata, hm: &Metadata) -> io::Result<Option<String>> {
    if kind(wm) != kind(hm) {
        return Ok(Some(format!(
            "is a {}, the layer has a {}",
            kind(hm),
            kind(wm)
        )));
    }
    if wm.mode() & 0o7777 != hm.mode() & 0o7777 && !wm.file_type().is_symlink() {
        return Ok(Some(format!(
            "mode {:o}, the layer says {:o}",
            hm.mode() & 0o7777,
            wm.mode() & 0o7777
        )));
    }
    if (wm.uid(), wm.gid()) != (hm.uid(), hm.gid()) {
        return Ok(Some(format!(
            "owner {}:{}, the layer says {}:{}",
            hm.uid(),
            hm.gid(),
            wm.uid(),
            wm.gid()
        )));
    }
    let t = wm.file_type();
    if t.is_symlink() {
        let (wt, ht) = (fs::read_link(w)?, fs::read_link(h)?);
        if wt != ht {
            return Ok(Some(format!(
                "links to {}, the layer says {}",
                ht.display(),
                wt.display()
            )));
        }
    } else if t.is_file() {
        if wm.len() != hm.len() {
            return Ok(Some(format!(
                "{} bytes, the layer has {}",
                hm.len(),
                wm.len()
            )));
        }
        if !same_content(w, h)? {
            return Ok(Some("content differs from the layer".to_owned()));
        }
    } else if (t.is_char_device() || t.is_block_device()) && wm.rdev() != hm.rdev() {
        return Ok(Some("device number differs from the layer".to_owned()));
    } else if t.is_dir() && opaque(w) != opaque(h) {
        return Ok(Some("opaque marker differs from the layer".to_owned()));
    }
    Ok(None)
}

/// Whether two files hold the same bytes. Files with the same holes (as
/// two unpacks of one layer have) are compared by their data alone, so a
/// file of terabytes of holes costs nothing; otherwise holes read as
/// zeros, without reading them from disk.
fn same_content(a: &Path, b: &Path) -> io::Result<bool> {
    let (fa, fb) = (File::open(a)?, File::open(b)?);
    let size = fa.metadata()?.len();
    let regions = kiln_fs::data_regions(&fa, size)?;
    if regions == kiln_fs::data_regions(&fb, size)? {
        for (start, end) in regions {
            if !same_range(&fa, &fb, start, end)? {
                return Ok(false);
            }
        }
        return Ok(true);
    }
    let mut ra = kiln_fs::HoleReader::new(&fa, size);
    let mut rb = kiln_fs::HoleReader::new(&fb, size);
    let (mut ba, mut bb) = (vec![0u8; 1 << 16], vec![0u8; 1 << 16]);
    loop {
        let n = read_full(&mut ra, &mut ba)?;
        let m = read_full(&mut rb, &mut bb)?;
        if n != m || ba[..n] != bb[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(!ra.shrunk() && !rb.shrunk());
        }
    }
}

/// Whether `[start, end)` of two files holds the same bytes.
fn same_range(fa: &File, fb: &File, start: u64, end: u64) -> io::Result<bool> {
    use std::os::unix::fs::FileExt;
    let (mut ba, mut bb) = (vec![0u8; 1 << 16], vec![0u8; 1 << 16]);
    let mut pos = start;
    while pos < end {
        let want = ((end - pos) as usize).min(ba.len());
        fa.read_exact_at(&mut ba[..want], pos)?;
        fb.read_exact_at(&mut bb[..want], pos)?;
        if ba[..want] != bb[..want] {
            return Ok(false);
        }
        pos += want as u64;
    }
    Ok(true)
}

fn read_full(f: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match f.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// The overlay opaque marker of a directory (`trusted.overlay.opaque`).
fn opaque(dir: &Path) -> Option<Vec<u8>> {
    let mut buf = [0u8; 8];
    rustix::fs::lgetxattr(dir, "trusted.overlay.opaque", &mut buf)
        .ok()
        .map(|n| buf[..n].to_vec())
}
