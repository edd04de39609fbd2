//! `COPY`/`ADD` between two root filesystems with BuildKit's semantics
//! (its file op over fsutil's copy):
//!
//! - the source is cleaned; with `allow_wildcard`, `*`, `?` and `[...]` in
//!   any segment are matched against the source tree; no match is an
//!   error (`"/nomatch*": not found`) unless `allow_empty_wildcard`;
//! - a directory source copies its contents with `dir_copy_contents`,
//!   else itself;
//! - a destination spelled as a directory (`/dest/`) is created and
//!   receives sources by name; one spelled as a file (`/dest`) is the
//!   path each source is copied to, unless it already is a directory
//!   (several file sources onto one file: the last wins, as in BuildKit);
//! - `follow_symlinks` follows a symlink that is the source path itself;
//!   symlinks inside copied trees are copied as symlinks;
//! - ownership is preserved unless `chown` is set; modes are preserved
//!   unless `chmod` is; modification times are preserved unless `mtime`
//!   is set;
//! - exclude patterns apply to paths relative to each matched source;
//! - with `parents`, the source's parent directories (below a `/./`
//!   marker if there is one) are recreated under the destination;
//! - with `unpack_archives`, a local tar archive (plain, gzip, bzip2, xz
//!   or zstd) is extracted into the destination directory instead of
//!   copied, with the archive's own modes.
//!
//! Every path in both roots is resolved with [`crate::paths`], so symlinks
//! never lead outside the roots.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use kiln_solver::CopyAction;
use rustix::fs::{AtFlags, Timespec, Timestamps};

use crate::PathMatcher;
use crate::chmod::ModeChange;
use crate::error::{Error, Result};
use crate::glob;
use crate::paths::{self, clean_abs, names_dir};

/// Sets ownership (not following symlinks) and, when given, the
/// modification and access times.
pub(crate) fn set_owner_times(
    path: &Path,
    uid: u32,
    gid: u32,
    mtime: Option<(i64, i64)>,
) -> Result<()> {
    rustix::fs::chownat(
        rustix::fs::CWD,
        path,
        Some(rustix::fs::Uid::from_raw(uid)),
        Some(rustix::fs::Gid::from_raw(gid)),
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(|e| Error::io("change ownership of", path, e.into()))?;
    match mtime {
        Some(t) => set_times(path, t),
        None => Ok(()),
    }
}

/// Sets the modification and access times, not following symlinks.
pub(crate) fn set_times(path: &Path, (sec, nsec): (i64, i64)) -> Result<()> {
    let ts = Timespec {
        tv_sec: sec,
        tv_nsec: nsec as _,
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        path,
        &Timestamps {
            last_access: ts,
            last_modification: ts,
        },
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(|e| Error::io("set times of", path, e.into()))
}

/// Creates directory `path` (cleaned, absolute) inside `root` with its
/// missing parents, mode 0755, owned by `owner` (root by default), with
/// times `mtime` when given. Fails if a component is not a directory.
pub(crate) fn mkdir_all(
    root: &Path,
    path: &str,
    owner: Option<(u32, u32)>,
    mode: u32,
    mtime: Option<i64>,
) -> Result<PathBuf> {
    let mut cur = String::from("/");
    let mut host = root.to_owned();
    for comp in paths::rel_components(&clean_abs(path)) {
        cur = paths::join(&cur, comp);
        host = paths::resolve(root, &cur).map_err(|e| Error::io("resolve", &cur, e))?;
        match fs::metadata(&host) {
            Ok(m) if m.is_dir() => continue,
            Ok(_) => {
                return Err(Error::action(format!(
                    "cannot create directory {cur}: a file of that name exists"
                )));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("stat", &host, e)),
        }
        fs::create_dir(&host).map_err(|e| Error::io("create directory", &host, e))?;
        fs::set_permissions(&host, fs::Permissions::from_mode(mode))
            .map_err(|e| Error::io("set permissions of", &host, e))?;
        let (uid, gid) = owner.unwrap_or((0, 0));
        set_owner_times(&host, uid, gid, mtime.map(|t| (t, 0)))?;
    }
    Ok(host)
}

/// What a copy applies to each entry.
pub(crate) struct CopyMeta {
    pub owner: Option<(u32, u32)>,
    pub mode: Option<ModeChange>,
    pub mtime: Option<i64>,
    pub exclude: Option<PathMatcher>,
    pub exclude_has_negation: bool,
}

/// Runs one copy action from `src_root` into `dst_root` (blocking).
/// `scratch` is a directory on the destination's filesystem for unpacking
/// archives.
pub(crate) fn copy(
    src_root: &Path,
    dst_root: &Path,
    action: &CopyAction,
    meta: &CopyMeta,
    scratch: &Path,
) -> Result<()> {
    let src = clean_abs(&action.src);
    let dest_is_dir = names_dir(&action.dest);
    let dest = clean_abs(&action.dest);

    let matches = if action.allow_wildcard && glob::has_wildcard(&src) {
        resolve_wildcards(src_root, &src)?
    } else {
        let host =
            paths::resolve_parent(src_root, &src).map_err(|e| Error::io("resolve", &src, e))?;
        match fs::symlink_metadata(&host) {
            Ok(_) => vec![src.clone()],
            Err(e) if e.kind() == io::ErrorKind::NotFound => vec![],
            Err(e) => return Err(Error::io("stat", &host, e)),
        }
    };
    if matches.is_empty() {
        if action.allow_empty_wildcard && glob::has_wildcard(&src) {
            return Ok(());
        }
        return Err(Error::NotFound { path: src });
    }
    let mut links = HashMap::new();
    for m in &matches {
        let src_host = if action.follow_symlinks {
            paths::resolve(src_root, m)
        } else {
            paths::resolve_parent(src_root, m)
        }
        .map_err(|e| Error::io("resolve", m, e))?;
        let src_meta = match fs::symlink_metadata(&src_host) {
            Ok(md) => md,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::NotFound { path: m.clone() });
            }
            Err(e) => return Err(Error::io("stat", &src_host, e)),
        };
        let base = paths::split(m).1;

        // Where this source goes.
        let (mut dest_path, mut dest_dir_spelled) = (dest.clone(), dest_is_dir);
        if action.parents {
            let kept = parents_part(&action.src, m);
            if !kept.is_empty() {
                dest_path = paths::join(&dest_path, &kept);
                dest_dir_spelled = true;
            }
        }

        if action.unpack_archives
            && src_meta.is_file()
            && let Some(()) =
                try_unpack(&src_host, dst_root, &dest_path, meta, scratch, &mut links)?
        {
            continue;
        }

        // Make the destination's directory.
        let ensure = if dest_dir_spelled {
            dest_path.clone()
        } else {
            paths::split(&dest_path).0
        };
        if action.create_dest_path || dest_dir_spelled {
            mkdir_all(dst_root, &ensure, meta.owner, 0o755, meta.mtime)?;
        } else {
            let h =
                paths::resolve(dst_root, &ensure).map_err(|e| Error::io("resolve", &ensure, e))?;
            if !h.is_dir() {
                return Err(Error::NotFound { path: ensure });
            }
        }
        let mut dst_host = paths::resolve(dst_root, &dest_path)
            .map_err(|e| Error::io("resolve", &dest_path, e))?;
        let dest_exists_dir = fs::metadata(&dst_host).map(|m| m.is_dir()).unwrap_or(false);
        let dest_exists = fs::symlink_metadata(&dst_host).is_ok();
        let src_is_dir = src_meta.is_dir();
        if (!action.dir_copy_contents && src_is_dir && dest_exists)
            || (!src_is_dir && dest_exists_dir)
        {
            if base.is_empty() {
                return Err(Error::action(format!("cannot copy {m} to {dest_path}")));
            }
            let p = paths::join(&dest_path, &base);
            dst_host =
                paths::resolve_parent(dst_root, &p).map_err(|e| Error::io("resolve", &p, e))?;
        }
        let mut c = Copier {
            meta,
            links: &mut links,
        };
        c.copy_entry(&src_host, &src_meta, &dst_host, "", false)?;
    }
    Ok(())
}

/// The part of `matched` kept under the destination by `--parents`: the
/// parent directories below a `/./` marker of the source, or all of them.
fn parents_part(src_spec: &str, matched: &str) -> String {
    let parent = paths::split(matched).0;
    let parent = parent.trim_start_matches('/');
    if let Some(idx) = src_spec.find("/./") {
        let prefix = clean_abs(&src_spec[..idx]);
        let prefix = prefix.trim_start_matches('/');
        if prefix.is_empty() {
            return parent.to_owned();
        }
        return parent
            .strip_prefix(prefix)
            .map(|s| s.trim_start_matches('/').to_owned())
            .unwrap_or_else(|| parent.to_owned());
    }
    parent.to_owned()
}

/// Paths in `root` matching the wildcard path `pattern` (cleaned,
/// absolute), sorted. Intermediate symlinks are followed, inside the root.
pub(crate) fn resolve_wildcards(root: &Path, pattern: &str) -> Result<Vec<String>> {
    let mut current = vec!["/".to_owned()];
    for seg in paths::rel_components(pattern) {
        let mut next = Vec::new();
        for dir in &current {
            if !glob::has_wildcard(seg) {
                let p = paths::join(dir, seg);
                let h = paths::resolve_parent(root, &p).map_err(|e| Error::io("resolve", &p, e))?;
                if fs::symlink_metadata(&h).is_ok() {
                    next.push(p);
                }
                continue;
            }
            let h = paths::resolve(root, dir).map_err(|e| Error::io("resolve", dir, e))?;
            let Ok(rd) = fs::read_dir(&h) else { continue };
            let mut names: Vec<String> = rd
                .filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().to_str().map(str::to_owned))
                .filter(|n| glob::match_segment(seg, n))
                .collect();
            names.sort();
            next.extend(names.into_iter().map(|n| paths::join(dir, &n)));
        }
        current = next;
    }
    Ok(current)
}

/// Extracts `archive` into `dest_path` if it is a tar archive (plain,
/// gzip, bzip2, xz or zstd, told by content as BuildKit does). `Ok(None)`
/// when it is not one: it is then copied.
fn try_unpack(
    archive: &Path,
    dst_root: &Path,
    dest_path: &str,
    meta: &CopyMeta,
    scratch: &Path,
    links: &mut HashMap<(u64, u64), PathBuf>,
) -> Result<Option<()>> {
    let tmp = tempfile::Builder::new()
        .prefix("unpack-")
        .tempdir_in(scratch)
        .map_err(|e| Error::io("create temporary directory in", scratch, e))?;
    let Some(mut reader) = open_archive(archive, tmp.path())? else {
        return Ok(None);
    };
    let mut block = [0u8; 512];
    let mut filled = 0;
    while filled < block.len() {
        match reader.read(&mut block[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Ok(None),
        }
    }
    if !is_tar_header(&block[..filled]) {
        return Ok(None);
    }
    let reader = io::Cursor::new(block).take(filled as u64).chain(reader);
    let unpack_err = |source| Error::Unpack {
        path: archive.to_owned(),
        source,
    };
    let root = tmp.path().join("root");
    fs::create_dir(&root).map_err(|e| Error::io("create directory", &root, e))?;
    let mut options = kiln_store::ExtractOptions::new(kiln_store::ExtractMode::Flatten);
    options.allow_devices = false;
    options.clamp_paths = true;
    kiln_store::extract_layer(reader, &root, &options).map_err(unpack_err)?;
    let dst_host = mkdir_all(dst_root, dest_path, meta.owner, 0o755, meta.mtime)?;
    let root_meta = fs::symlink_metadata(&root).map_err(|e| Error::io("stat", &root, e))?;
    // The archive's own modes, as BuildKit extracts (--chmod is for
    // copied files).
    let meta = CopyMeta {
        owner: meta.owner,
        mode: None,
        mtime: meta.mtime,
        exclude: None,
        exclude_has_negation: false,
    };
    let mut c = Copier { meta: &meta, links };
    c.copy_entry(&root, &root_meta, &dst_host, "", false)?;
    Ok(Some(()))
}

/// The decompressed stream of `path`, or `None` when it is compressed in
/// a way that fails to decode (then it is no archive). xz is decoded into
/// a file in `scratch` first (its decoder writes, it does not read).
fn open_archive(path: &Path, scratch: &Path) -> Result<Option<Box<dyn Read>>> {
    let mut f = fs::File::open(path).map_err(|e| Error::io("open", path, e))?;
    let mut head = [0u8; 6];
    let mut filled = 0;
    while filled < head.len() {
        match f.read(&mut head[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io("read", path, e)),
        }
    }
    let head = &head[..filled];
    let rest = io::Cursor::new(head.to_vec()).chain(f);
    if head.starts_with(b"BZh") {
        return Ok(Some(Box::new(bzip2::read::MultiBzDecoder::new(rest))));
    }
    if head == [0xfd, b'7', b'z', b'X', b'Z', 0] {
        let out_path = scratch.join("xz-decoded");
        let mut out = fs::File::create(&out_path).map_err(|e| Error::io("create", &out_path, e))?;
        let mut input = io::BufReader::new(rest);
        if lzma_rs::xz_decompress(&mut input, &mut io::BufWriter::new(&mut out)).is_err() {
            return Ok(None);
        }
        let f = fs::File::open(&out_path).map_err(|e| Error::io("open", &out_path, e))?;
        return Ok(Some(Box::new(f)));
    }
    match kiln_store::decompress(rest) {
        Ok((_, reader)) => Ok(Some(reader)),
        Err(_) => Ok(None),
    }
}

/// Whether `block` starts a tar stream (`ustar` magic at offset 257, or
/// a plausible old-style header checksum).
fn is_tar_header(block: &[u8]) -> bool {
    if block.len() < 512 {
        return false;
    }
    if &block[257..262] == b"ustar" {
        return true;
    }
    // Old (v7) tar: verify the header checksum.
    let stored = std::str::from_utf8(&block[148..156])
        .ok()
        .map(|s| s.trim_matches(|c: char| c == '\0' || c == ' '))
        .and_then(|s| u32::from_str_radix(s, 8).ok());
    let sum: u32 = block[..512]
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u32::from(b)
            }
        })
        .sum();
    stored == Some(sum) && block[0] != 0
}

struct Copier<'a> {
    meta: &'a CopyMeta,
    /// (dev, ino) of multiply linked source files → their copy.
    links: &'a mut HashMap<(u64, u64), PathBuf>,
}

impl Copier<'_> {
    /// Copies `src` (with metadata `md`) to `dst`. `rel` is the path below
    /// the matched source (for exclude patterns). `overwrite_meta` applies
    /// the source's metadata to an existing destination directory.
    fn copy_entry(
        &mut self,
        src: &Path,
        md: &fs::Metadata,
        dst: &Path,
        rel: &str,
        overwrite_meta: bool,
    ) -> Result<()> {
        let ft = md.file_type();
        if ft.is_char_device() && md.rdev() == 0 {
            // An overlay whiteout: not content.
            return Ok(());
        }
        if ft.is_dir() {
            let created = match fs::symlink_metadata(dst) {
                Ok(d) if d.is_dir() => false,
                Ok(_) => {
                    return Err(Error::action(format!(
                        "cannot copy to non-directory: {}",
                        dst.display()
                    )));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::create_dir(dst).map_err(|e| Error::io("create directory", dst, e))?;
                    true
                }
                Err(e) => return Err(Error::io("stat", dst, e)),
            };
            let mut names: Vec<_> = fs::read_dir(src)
                .map_err(|e| Error::io("read directory", src, e))?
                .map(|e| e.map(|e| e.file_name()))
                .collect::<io::Result<_>>()
                .map_err(|e| Error::io("read directory", src, e))?;
            names.sort();
            for name in names {
                // Exclude patterns see names that are not UTF-8 with
                // replacement characters; the copy keeps their bytes.
                let n = name.to_string_lossy();
                let child_rel = if rel.is_empty() {
                    n.into_owned()
                } else {
                    format!("{rel}/{n}")
                };
                let child = src.join(&name);
                let cmd = fs::symlink_metadata(&child).map_err(|e| Error::io("stat", &child, e))?;
                if let Some(ex) = &self.meta.exclude
                    && ex(&child_rel)
                    && !(cmd.is_dir() && self.meta.exclude_has_negation)
                {
                    continue;
                }
                self.copy_entry(&child, &cmd, &dst.join(&name), &child_rel, true)?;
            }
            if created || overwrite_meta {
                self.apply_meta(dst, md, true)?;
            }
            return Ok(());
        }

        // Not a directory: replace whatever is at dst.
        match fs::symlink_metadata(dst) {
            Ok(d) if d.is_dir() => {
                return Err(Error::action(format!(
                    "cannot replace directory {} with a file",
                    dst.display()
                )));
            }
            Ok(_) => fs::remove_file(dst).map_err(|e| Error::io("remove", dst, e))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("stat", dst, e)),
        }
        if ft.is_symlink() {
            let target = fs::read_link(src).map_err(|e| Error::io("read link", src, e))?;
            std::os::unix::fs::symlink(&target, dst)
                .map_err(|e| Error::io("create symlink", dst, e))?;
        } else if ft.is_file() {
            let key = (md.dev(), md.ino());
            if md.nlink() > 1
                && let Some(first) = self.links.get(&key)
                && fs::hard_link(first, dst).is_ok()
            {
                return Ok(());
            }
            kiln_fs::copy_file_keeping_holes(src, dst).map_err(|e| Error::io("copy", src, e))?;
            if md.nlink() > 1 {
                self.links.insert(key, dst.to_owned());
            }
        } else if ft.is_fifo() || ft.is_char_device() || ft.is_block_device() {
            let kind = if ft.is_fifo() {
                rustix::fs::FileType::Fifo
            } else if ft.is_char_device() {
                rustix::fs::FileType::CharacterDevice
            } else {
                rustix::fs::FileType::BlockDevice
            };
            rustix::fs::mknodat(
                rustix::fs::CWD,
                dst,
                kind,
                rustix::fs::Mode::from_raw_mode(md.mode() & 0o7777),
                md.rdev(),
            )
            .map_err(|e| Error::io("create node", dst, e.into()))?;
        } else {
            // Sockets cannot be copied.
            return Ok(());
        }
        self.apply_meta(dst, md, false)
    }

    fn apply_meta(&self, dst: &Path, md: &fs::Metadata, is_dir: bool) -> Result<()> {
        let (uid, gid) = self.meta.owner.unwrap_or((md.uid(), md.gid()));
        let mtime = match self.meta.mtime {
            Some(t) => (t, 0),
            None => (md.mtime(), md.mtime_nsec()),
        };
        // chown clears setuid/setgid: set the mode after it, and the
        // times last (chmod does not touch them).
        set_owner_times(dst, uid, gid, None)?;
        if !md.file_type().is_symlink() {
            let mode = match &self.meta.mode {
                Some(change) => change.apply(md.mode() & 0o7777, is_dir),
                None => md.mode() & 0o7777,
            };
            fs::set_permissions(dst, fs::Permissions::from_mode(mode))
                .map_err(|e| Error::io("set permissions of", dst, e))?;
        }
        set_times(dst, mtime)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_parts() {
        assert_eq!(parents_part("/a/b/c.txt", "/a/b/c.txt"), "a/b");
        assert_eq!(parents_part("/a/./b/c.txt", "/a/b/c.txt"), "b");
        assert_eq!(parents_part("/c.txt", "/c.txt"), "");
    }
}
