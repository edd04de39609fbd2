//! Safe extraction of OCI layer tarballs.
//!
//! Layers come from registries and are hostile until proven otherwise.
//! Every filesystem operation is relative to a directory file descriptor
//! reached from the destination root by opening one component at a time
//! with `O_NOFOLLOW | O_DIRECTORY`, so:
//!
//! - entry paths are cleaned lexically first; absolute paths and paths that
//!   climb out of the root with `..` are refused;
//! - a symbolic link is never followed on the way to an entry: if a parent
//!   component is a symlink (from this layer or from the destination), the
//!   entry is refused; an existing symlink (or anything else) at the final
//!   component is unlinked and replaced, never written through
//!   (`O_CREAT | O_EXCL | O_NOFOLLOW`);
//! - hard links must name a path inside the root, reached the same way;
//! - device nodes are created only with [`ExtractOptions::allow_devices`];
//! - `trusted.overlay.*` xattrs in the tar are dropped: only kiln decides
//!   what overlayfs sees.
//!
//! Whiteouts follow the OCI layer spec: `.wh.<name>` hides `<name>` of the
//! lower layers and `.wh..wh..opq` hides every lower entry of its directory.
//! See [`ExtractMode`] for how they are represented.
//!
//! Metadata: ownership (when [`ExtractOptions::preserve_ownership`]), mode
//! bits including setuid/setgid/sticky, PAX `SCHILY.xattr.*` extended
//! attributes and modification times. Directory modes and times are applied
//! last, deepest first, so that writing children neither fails (read-only
//! directories) nor changes them.
//!
//! Sparse files: GNU sparse entries (the old GNU `S` type and the PAX
//! `GNU.sparse.*` formats 0.0, 0.1 and 1.0, read as Go's `archive/tar`
//! reads them) are written with holes. In every regular file, aligned
//! all-zero blocks of [`HOLE_BLOCK`] bytes are left as holes too: the
//! content and size are those of the archive, only the allocation differs.
//!
//! Space: extraction stops with [`ExtractError::Budget`] before writing
//! more file data, or creating more files, than
//! [`ExtractOptions::max_bytes`] and [`ExtractOptions::max_entries`]
//! allow; by default what is free on the destination's filesystem, less a
//! margin. Holes take no space and are not counted.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timespec, Timestamps, XattrFlags};
use rustix::io::Errno;
use serde::{Deserialize, Serialize};

use crate::error::ExtractError;

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const WHITEOUT_META_PREFIX: &[u8] = b".wh..wh.";
const WHITEOUT_OPAQUE: &[u8] = b".wh..wh..opq";
const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";
const PAX_XATTR_PREFIX: &str = "SCHILY.xattr.";

use kiln_fs::HOLE_BLOCK;
/// File content is copied in pieces of this size (whole hole blocks).
const COPY_BUF: usize = 16 * HOLE_BLOCK;
static ZEROS: [u8; HOLE_BLOCK] = [0; HOLE_BLOCK];
/// The default budget keeps this fraction of the free space (and inodes)
/// free, at most [`MARGIN_BYTES`] (and [`MARGIN_INODES`]).
const MARGIN_PERCENT: u64 = 5;
const MARGIN_BYTES: u64 = 1 << 30;
const MARGIN_INODES: u64 = 1 << 16;

/// How a layer is applied to the destination directory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExtractMode {
    /// The destination holds this layer only and is used as an overlayfs
    /// lower directory: whiteouts become overlay whiteouts (a `0:0`
    /// character device) and opaque markers set `trusted.overlay.opaque=y`
    /// on their directory. Both need root; without it they are listed in
    /// [`LayerStats::unrepresented_whiteouts`] and
    /// [`LayerStats::unrepresented_opaques`] instead.
    #[default]
    Overlay,
    /// The destination holds the lower layers' merged tree: whiteouts delete
    /// what they name, opaque markers delete the lower contents of their
    /// directory. Used to build a flat root filesystem.
    Flatten,
}

/// Options for [`extract_layer`].
#[derive(Clone, Debug)]
pub struct ExtractOptions {
    pub mode: ExtractMode,
    /// Create character and block devices. Otherwise they are skipped and
    /// counted in [`LayerStats::skipped_devices`]. FIFOs are always created.
    pub allow_devices: bool,
    /// Give entries the uid and gid of their headers (needs root).
    /// Defaults to whether the process runs as root.
    pub preserve_ownership: bool,
    /// Apply PAX `SCHILY.xattr.*` attributes. `trusted.*` and `security.*`
    /// ones are only applied as root. Defaults to true.
    pub xattrs: bool,
    /// Drop the setuid and setgid bits of every entry (for trees written
    /// where the host could run them).
    pub clear_setid: bool,
    /// Read absolute paths and `..` as if the destination were the
    /// filesystem root (`/a` and `../a` are `a`), as BuildKit extracts an
    /// `ADD` archive; otherwise they are refused, as for image layers.
    pub clamp_paths: bool,
    /// The most bytes of file data the layer may write (holes of sparse
    /// files are not counted). `None`: the space available to unprivileged
    /// users on the destination's filesystem when extraction starts, less
    /// 5% of it (at most 1 GiB). `Some(u64::MAX)` for no limit.
    pub max_bytes: Option<u64>,
    /// The most files, directories, links and nodes the layer may create.
    /// `None`: the free inodes of the destination's filesystem, less 5% of
    /// them (at most 65536), or no limit where the filesystem has no fixed
    /// number of inodes.
    pub max_entries: Option<u64>,
}

impl ExtractOptions {
    pub fn new(mode: ExtractMode) -> ExtractOptions {
        ExtractOptions {
            mode,
            allow_devices: false,
            preserve_ownership: is_root(),
            xattrs: true,
            clear_setid: false,
            clamp_paths: false,
            max_bytes: None,
            max_entries: None,
        }
    }
}

impl Default for ExtractOptions {
    fn default() -> Self {
        ExtractOptions::new(ExtractMode::default())
    }
}

/// What [`extract_layer`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerStats {
    /// Tar entries read (excluding PAX/GNU metadata entries).
    pub entries: u64,
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub hardlinks: u64,
    /// Device nodes and FIFOs created.
    pub nodes: u64,
    /// Device nodes skipped because devices were not allowed.
    pub skipped_devices: u64,
    pub whiteouts: u64,
    pub opaque_dirs: u64,
    /// Bytes of regular file content, holes included (the files' sizes).
    pub bytes: u64,
    /// Bytes of regular file content written as data: `bytes` less holes.
    #[serde(default)]
    pub data_bytes: u64,
    /// Overlay mode: whiteouts that could not be created as `0:0` character
    /// devices (not root), relative to the destination.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unrepresented_whiteouts: Vec<PathBuf>,
    /// Overlay mode: opaque directories whose xattr could not be set.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unrepresented_opaques: Vec<PathBuf>,
}

/// Whether the process runs with effective uid 0.
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Applies the uncompressed layer tar read from `reader` to `dest`, which
/// must be an existing directory. Use [`decompress`](crate::decompress)
/// for compressed layers.
///
/// On error, extraction stops; entries already applied stay (inside
/// `dest`). Callers that need all-or-nothing extract into a temporary
/// directory and rename it, as [`Store::prepare_snapshot`](crate::Store::prepare_snapshot) does.
pub fn extract_layer<R: Read>(
    reader: R,
    dest: &Path,
    options: &ExtractOptions,
) -> Result<LayerStats, ExtractError> {
    let root = rustix::fs::open(
        dest,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| ExtractError::Root {
        path: dest.to_path_buf(),
        source: e.into(),
    })?;
    let budget = Budget::new(&root, dest, options);
    let mut extractor = Extractor {
        root,
        options: options.clone(),
        privileged: is_root(),
        stats: LayerStats::default(),
        created: HashSet::new(),
        deferred: Vec::new(),
        budget,
        buf: Vec::new(),
    };
    let mut reader = Tracked::new(reader);
    let (read, data_end) = {
        let mut archive = tar::Archive::new(&mut reader);
        let entries = archive
            .entries()
            .map_err(|source| ExtractError::Read { source })?;
        let mut data_end = 0;
        let mut read = Ok(());
        for entry in entries {
            let mut entry = match entry {
                Ok(entry) => entry,
                Err(e) => {
                    read = Err(e);
                    break;
                }
            };
            data_end = entry.raw_file_position() + entry.header().entry_size().unwrap_or(0);
            extractor.entry(&mut entry)?;
        }
        (read, data_end)
    };
    if let Err(source) = read {
        // Go's archive/tar (Docker, containerd) ends a layer that stops
        // right after its last file's data, without the padding to the
        // block and the end-of-archive blocks, as `umoci insert` writes
        // them. A stream ending anywhere else is truncated.
        if !(reader.ended && reader.position == data_end) {
            return Err(ExtractError::Read { source });
        }
        tracing::debug!(
            dest = %dest.display(),
            "layer ends after its last file's data, without padding"
        );
    }
    extractor.finish()?;
    tracing::debug!(dest = %dest.display(), stats = ?extractor.stats, "extracted layer");
    Ok(extractor.stats)
}

/// A reader that counts the bytes it gave and notes a clean end.
struct Tracked<R> {
    inner: R,
    position: u64,
    ended: bool,
}

impl<R> Tracked<R> {
    fn new(inner: R) -> Tracked<R> {
        Tracked {
            inner,
            position: 0,
            ended: false,
        }
    }
}

impl<R: Read> Read for Tracked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.ended = true;
        }
        self.position += n as u64;
        Ok(n)
    }
}

/// What a layer may still write: file data bytes and new inodes.
#[derive(Debug)]
struct Budget {
    dest: PathBuf,
    bytes: u64,
    entries: u64,
    used_bytes: u64,
    used_entries: u64,
    /// The byte limit is the filesystem's free space (for the message).
    bytes_from_fs: bool,
    entries_from_fs: bool,
}

impl Budget {
    /// The limits of `options`, the unset ones from the free space and
    /// inodes of the filesystem of `root` now.
    fn new(root: &OwnedFd, dest: &Path, options: &ExtractOptions) -> Budget {
        let fs = if options.max_bytes.is_none() || options.max_entries.is_none() {
            match rustix::fs::fstatvfs(root) {
                Ok(st) => Some(st),
                Err(e) => {
                    tracing::debug!(dest = %dest.display(), error = %e, "cannot read free space; extracting without a space budget");
                    None
                }
            }
        } else {
            None
        };
        let fs_bytes = fs.as_ref().map(|st| {
            let free = st.f_bavail.saturating_mul(st.f_frsize);
            free - (free / 100 * MARGIN_PERCENT).min(MARGIN_BYTES)
        });
        // Filesystems without a fixed inode table (btrfs) report none.
        let fs_entries = fs.as_ref().filter(|st| st.f_files > 0).map(|st| {
            let free = st.f_favail;
            free - (free / 100 * MARGIN_PERCENT).min(MARGIN_INODES)
        });
        let (bytes, bytes_from_fs) = match (options.max_bytes, fs_bytes) {
            (Some(n), _) => (n, false),
            (None, Some(n)) => (n, true),
            (None, None) => (u64::MAX, false),
        };
        let (entries, entries_from_fs) = match (options.max_entries, fs_entries) {
            (Some(n), _) => (n, false),
            (None, Some(n)) => (n, true),
            (None, None) => (u64::MAX, false),
        };
        Budget {
            dest: dest.to_path_buf(),
            bytes,
            entries,
            used_bytes: 0,
            used_entries: 0,
            bytes_from_fs,
            entries_from_fs,
        }
    }

    /// Counts `n` bytes of file data about to be written for `entry`.
    fn take_bytes(&mut self, entry: &str, n: u64) -> Result<(), ExtractError> {
        match self.used_bytes.checked_add(n) {
            Some(used) if used <= self.bytes => {
                self.used_bytes = used;
                Ok(())
            }
            _ => Err(ExtractError::Budget {
                entry: entry.to_owned(),
                dest: self.dest.clone(),
                limit: self.bytes,
                files: false,
                free_space: self.bytes_from_fs,
            }),
        }
    }

    /// Counts one inode about to be created for `entry`.
    fn take_entry(&mut self, entry: &str) -> Result<(), ExtractError> {
        if self.used_entries >= self.entries {
            return Err(ExtractError::Budget {
                entry: entry.to_owned(),
                dest: self.dest.clone(),
                limit: self.entries,
                files: true,
                free_space: self.entries_from_fs,
            });
        }
        self.used_entries += 1;
        Ok(())
    }
}

/// Metadata applied to a directory after all entries are written.
struct DeferredDir {
    entry: String,
    components: Vec<Vec<u8>>,
    mode: u32,
    times: Timestamps,
}

struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    times: Timestamps,
    xattrs: Vec<(String, Vec<u8>)>,
}

struct Extractor {
    root: OwnedFd,
    options: ExtractOptions,
    privileged: bool,
    stats: LayerStats,
    /// Paths (joined with `/`) written by this layer, and their ancestors.
    /// Whiteouts only apply to lower layers, never to these.
    created: HashSet<Vec<u8>>,
    deferred: Vec<DeferredDir>,
    budget: Budget,
    /// The copy buffer, allocated on first use.
    buf: Vec<u8>,
}

/// Cleans a tar path lexically into components. Refuses absolute paths and
/// paths that leave the root, unless `clamp` (then the root is `/`, whose
/// parent is itself).
fn clean_path(raw: &[u8], clamp: bool) -> Result<Vec<&[u8]>, &'static str> {
    // Linux's PATH_MAX: no program could open a longer path, and walking
    // one costs time in its length.
    if raw.len() >= 4096 {
        return Err("the path is longer than 4095 bytes");
    }
    if raw.first() == Some(&b'/') && !clamp {
        return Err("absolute paths are not allowed");
    }
    let mut out: Vec<&[u8]> = Vec::new();
    for comp in raw.split(|&b| b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => {
                if out.pop().is_none() && !clamp {
                    return Err("path escapes the root with '..'");
                }
            }
            // Linux's NAME_MAX: said plainly rather than as the failure of
            // whichever system call meets it first.
            _ if comp.len() > 255 => return Err("a file name is longer than 255 bytes"),
            _ => out.push(comp),
        }
    }
    Ok(out)
}

fn join(components: &[&[u8]]) -> Vec<u8> {
    components.join(&b'/')
}

fn os(bytes: &[u8]) -> &OsStr {
    OsStr::from_bytes(bytes)
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn io_err<'a>(entry: &'a str, action: &'static str) -> impl FnOnce(Errno) -> ExtractError + 'a {
    move |e| ExtractError::Io {
        entry: entry.to_owned(),
        action,
        source: e.into(),
    }
}

fn header_err<'a>(
    entry: &'a str,
    field: &'static str,
) -> impl FnOnce(io::Error) -> ExtractError + 'a {
    move |source| ExtractError::Header {
        entry: entry.to_owned(),
        field,
        source,
    }
}

/// Why a directory walk stopped.
enum WalkError {
    Symlink(String),
    NotDir(String),
    Missing(String),
    Io(&'static str, Errno),
    Budget(ExtractError),
}

impl WalkError {
    fn into_extract(self, entry: &str) -> ExtractError {
        match self {
            WalkError::Symlink(component) => ExtractError::SymlinkInPath {
                entry: entry.to_owned(),
                component,
            },
            WalkError::NotDir(component) | WalkError::Missing(component) => {
                ExtractError::NotADirectory {
                    entry: entry.to_owned(),
                    component,
                }
            }
            WalkError::Io(action, e) => ExtractError::Io {
                entry: entry.to_owned(),
                action,
                source: e.into(),
            },
            WalkError::Budget(e) => e,
        }
    }
}

fn open_dir_nofollow(dir: impl AsFd, name: &[u8]) -> Result<OwnedFd, Errno> {
    rustix::fs::openat(
        dir,
        os(name),
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

fn lstat_type(dir: impl AsFd, name: &[u8]) -> Result<Option<FileType>, Errno> {
    match rustix::fs::statat(dir, os(name), AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(FileType::from_raw_mode(st.st_mode))),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

impl Extractor {
    fn root_dup(&self) -> Result<OwnedFd, Errno> {
        rustix::fs::openat(
            &self.root,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
    }

    fn mark_created(&mut self, components: &[&[u8]]) {
        for n in 1..=components.len() {
            self.created.insert(join(&components[..n]));
        }
    }

    /// Opens the directory at `components` below the root without following
    /// any symlink. With `create`, missing directories are made (mode 0755).
    fn walk(&mut self, components: &[&[u8]], create: bool) -> Result<OwnedFd, WalkError> {
        let mut cur = self
            .root_dup()
            .map_err(|e| WalkError::Io("open the extraction root", e))?;
        // Names are joined once, not per component: entry paths may have
        // thousands of components.
        let mut name: Option<String> = None;
        let mut created = false;
        for (i, comp) in components.iter().enumerate() {
            let next = match open_dir_nofollow(&cur, comp) {
                Ok(fd) => fd,
                Err(Errno::NOENT) if create => {
                    let name = name.get_or_insert_with(|| lossy(&join(components)));
                    self.budget.take_entry(name).map_err(WalkError::Budget)?;
                    match rustix::fs::mkdirat(&cur, os(comp), Mode::from_raw_mode(0o755)) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => return Err(WalkError::Io("create a parent directory", e)),
                    }
                    created = true;
                    open_dir_nofollow(&cur, comp)
                        .map_err(|e| self.classify(&cur, components, i, e))?
                }
                Err(e) => return Err(self.classify(&cur, components, i, e)),
            };
            cur = next;
        }
        // Once one directory is created, every deeper one is too.
        if created {
            self.mark_created(components);
        }
        Ok(cur)
    }

    fn classify(&self, dir: &OwnedFd, components: &[&[u8]], i: usize, e: Errno) -> WalkError {
        let shown = lossy(&join(&components[..=i]));
        match e {
            Errno::NOENT => WalkError::Missing(shown),
            Errno::LOOP | Errno::NOTDIR => match lstat_type(dir, components[i]) {
                Ok(Some(FileType::Symlink)) => WalkError::Symlink(shown),
                _ => WalkError::NotDir(shown),
            },
            e => WalkError::Io("open a parent directory", e),
        }
    }

    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), ExtractError> {
        let kind = entry.header().entry_type();
        if matches!(
            kind,
            tar::EntryType::XGlobalHeader
                | tar::EntryType::XHeader
                | tar::EntryType::GNULongName
                | tar::EntryType::GNULongLink
        ) {
            return Ok(());
        }
        // PAX GNU sparse files are regular entries with their real name
        // and size in PAX records.
        let sparse = if matches!(kind, tar::EntryType::Regular | tar::EntryType::Continuous) {
            pax_sparse(entry)?
        } else {
            None
        };
        let raw_path = match sparse.as_ref().and_then(|s| s.name.clone()) {
            Some(name) => name,
            None => entry.path_bytes().into_owned(),
        };
        let name = lossy(&raw_path);
        self.stats.entries += 1;
        if kind != tar::EntryType::Link {
            self.budget.take_entry(&name)?;
        }
        let components = clean_path(&raw_path, self.options.clamp_paths).map_err(|reason| {
            ExtractError::UnsafePath {
                entry: name.clone(),
                reason,
            }
        })?;
        tracing::trace!(entry = %name, ?kind, "extracting");

        // Whiteouts, recognised by the base name whatever the entry type.
        if let Some((&base, parents)) = components.split_last()
            && base.starts_with(WHITEOUT_PREFIX)
        {
            if base == WHITEOUT_OPAQUE {
                return self.opaque(&name, parents);
            }
            if base.starts_with(WHITEOUT_META_PREFIX) {
                tracing::debug!(entry = %name, "ignoring AUFS metadata entry");
                return Ok(());
            }
            let target = &base[WHITEOUT_PREFIX.len()..];
            if target.is_empty() || target == b"." || target == b".." {
                return Err(ExtractError::InvalidWhiteout { entry: name });
            }
            return self.whiteout(&name, parents, target);
        }

        let meta = self.read_meta(entry, &name)?;

        let Some((&base, parents)) = components.split_last() else {
            // The root itself (`./`): only a directory makes sense.
            if kind == tar::EntryType::Directory {
                let fd = self
                    .root_dup()
                    .map_err(io_err(&name, "open the extraction root"))?;
                self.dir_meta_now(&fd, &name, &meta)?;
                self.deferred.push(DeferredDir {
                    entry: name,
                    components: Vec::new(),
                    mode: meta.mode,
                    times: meta.times,
                });
                self.stats.dirs += 1;
            } else {
                tracing::warn!(entry = %name, ?kind, "ignoring non-directory entry for the root");
            }
            return Ok(());
        };

        let dir = self
            .walk(parents, true)
            .map_err(|e| e.into_extract(&name))?;

        match kind {
            tar::EntryType::Directory => {
                let existing = lstat_type(&dir, base).map_err(io_err(&name, "stat"))?;
                if existing != Some(FileType::Directory) {
                    if existing.is_some() {
                        self.remove_at(&dir, base, &name)?;
                    }
                    rustix::fs::mkdirat(&dir, os(base), Mode::from_raw_mode(0o700))
                        .map_err(io_err(&name, "create directory"))?;
                }
                let fd = open_dir_nofollow(&dir, base).map_err(io_err(&name, "open directory"))?;
                self.dir_meta_now(&fd, &name, &meta)?;
                self.deferred.push(DeferredDir {
                    entry: name.clone(),
                    components: components.iter().map(|c| c.to_vec()).collect(),
                    mode: meta.mode,
                    times: meta.times,
                });
                self.stats.dirs += 1;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                self.remove_at(&dir, base, &name)?;
                let fd = rustix::fs::openat(
                    &dir,
                    os(base),
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(io_err(&name, "create file"))?;
                let file = File::from(fd);
                self.write_content(entry, &file, &name, sparse.as_ref())?;
                self.stats.files += 1;
                self.chown_fd(&file, &name, &meta)?;
                self.set_xattrs(&file, &name, &meta)?;
                rustix::fs::fchmod(&file, Mode::from_raw_mode(meta.mode))
                    .map_err(io_err(&name, "set mode"))?;
                rustix::fs::futimens(&file, &meta.times).map_err(io_err(&name, "set times"))?;
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| ExtractError::Header {
                        entry: name.clone(),
                        field: "linkname",
                        source: io::Error::new(io::ErrorKind::InvalidData, "missing"),
                    })?
                    .into_owned();
                self.remove_at(&dir, base, &name)?;
                rustix::fs::symlinkat(os(&target), &dir, os(base))
                    .map_err(io_err(&name, "create symlink"))?;
                if self.options.preserve_ownership {
                    rustix::fs::chownat(
                        &dir,
                        os(base),
                        Some(rustix::fs::Uid::from_raw(meta.uid)),
                        Some(rustix::fs::Gid::from_raw(meta.gid)),
                        AtFlags::SYMLINK_NOFOLLOW,
                    )
                    .map_err(io_err(&name, "change owner"))?;
                }
                rustix::fs::utimensat(&dir, os(base), &meta.times, AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(io_err(&name, "set times"))?;
                self.stats.symlinks += 1;
            }
            tar::EntryType::Link => {
                self.hardlink(entry, &name, &dir, base)?;
                self.stats.hardlinks += 1;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let (file_type, dev) = match kind {
                    tar::EntryType::Fifo => (FileType::Fifo, 0),
                    _ => {
                        if !self.options.allow_devices {
                            tracing::debug!(entry = %name, "skipping device node");
                            self.stats.skipped_devices += 1;
                            return Ok(());
                        }
                        let major = entry
                            .header()
                            .device_major()
                            .map_err(header_err(&name, "devmajor"))?
                            .unwrap_or(0);
                        let minor = entry
                            .header()
                            .device_minor()
                            .map_err(header_err(&name, "devminor"))?
                            .unwrap_or(0);
                        let file_type = if kind == tar::EntryType::Char {
                            FileType::CharacterDevice
                        } else {
                            FileType::BlockDevice
                        };
                        (file_type, rustix::fs::makedev(major, minor))
                    }
                };
                self.remove_at(&dir, base, &name)?;
                rustix::fs::mknodat(&dir, os(base), file_type, Mode::from_raw_mode(0o600), dev)
                    .map_err(io_err(&name, "create device node"))?;
                if self.options.preserve_ownership {
                    rustix::fs::chownat(
                        &dir,
                        os(base),
                        Some(rustix::fs::Uid::from_raw(meta.uid)),
                        Some(rustix::fs::Gid::from_raw(meta.gid)),
                        AtFlags::SYMLINK_NOFOLLOW,
                    )
                    .map_err(io_err(&name, "change owner"))?;
                }
                // Just created by us, so the final component is not a symlink.
                rustix::fs::chmodat(
                    &dir,
                    os(base),
                    Mode::from_raw_mode(meta.mode),
                    AtFlags::empty(),
                )
                .map_err(io_err(&name, "set mode"))?;
                rustix::fs::utimensat(&dir, os(base), &meta.times, AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(io_err(&name, "set times"))?;
                self.stats.nodes += 1;
            }
            other => {
                tracing::warn!(entry = %name, kind = ?other, "skipping unsupported tar entry type");
                return Ok(());
            }
        }
        self.mark_created(&components);
        Ok(())
    }

    /// Writes the content of regular file entry `entry` to `file`, with
    /// holes: those of a PAX sparse map, and aligned zero blocks.
    fn write_content<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        file: &File,
        name: &str,
        sparse: Option<&PaxSparse>,
    ) -> Result<(), ExtractError> {
        if self.buf.is_empty() {
            self.buf = vec![0; COPY_BUF];
        }
        let mut buf = std::mem::take(&mut self.buf);
        let result = self.write_content_with(entry, file, name, sparse, &mut buf);
        self.buf = buf;
        result
    }

    fn write_content_with<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        file: &File,
        name: &str,
        sparse: Option<&PaxSparse>,
        buf: &mut [u8],
    ) -> Result<(), ExtractError> {
        let (size, written, data_end) = match sparse {
            None => {
                let c = copy_with_holes(entry, file, 0, u64::MAX, buf, &mut self.budget, name)?;
                (c.len, c.written, c.data_end)
            }
            Some(sparse) => {
                let data_len = entry.size();
                let (map, data_len) = match &sparse.map {
                    Some(map) => (map.clone(), data_len),
                    None => {
                        let (map, used) = read_sparse_map_1x0(entry)
                            .map_err(header_err(name, "GNU sparse map"))?;
                        (map, data_len.saturating_sub(used))
                    }
                };
                let size = sparse
                    .size
                    .unwrap_or_else(|| map.last().map_or(0, |&(off, len)| off + len));
                check_sparse_map(&map, size, data_len)
                    .map_err(header_err(name, "GNU sparse map"))?;
                let (mut written, mut data_end) = (0, 0);
                for &(offset, len) in &map {
                    let c = copy_with_holes(
                        &mut entry.by_ref().take(len),
                        file,
                        offset,
                        len,
                        buf,
                        &mut self.budget,
                        name,
                    )?;
                    written += c.written;
                    data_end = data_end.max(c.data_end);
                    if c.len < len {
                        // Truncated stream: reading the next entry fails.
                        break;
                    }
                }
                (size, written, data_end)
            }
        };
        // A trailing hole.
        if size > data_end {
            file.set_len(size).map_err(|source| ExtractError::Io {
                entry: name.to_owned(),
                action: "set file size",
                source,
            })?;
        }
        self.stats.bytes += size;
        self.stats.data_bytes += written;
        Ok(())
    }

    fn read_meta<R: Read>(
        &self,
        entry: &mut tar::Entry<'_, R>,
        name: &str,
    ) -> Result<Meta, ExtractError> {
        let header = entry.header();
        let old = header.as_old();
        // As Go's archive/tar (which wrote most layers) does, an empty
        // numeric field reads as 0.
        let mode = or_zero_if_empty(header.mode().map(u64::from), &old.mode)
            .map_err(header_err(name, "mode"))? as u32
            & if self.options.clear_setid {
                0o1777
            } else {
                0o7777
            };
        let uid = or_zero_if_empty(header.uid(), &old.uid).map_err(header_err(name, "uid"))?;
        let gid = or_zero_if_empty(header.gid(), &old.gid).map_err(header_err(name, "gid"))?;
        let too_big = |field| ExtractError::Header {
            entry: name.to_owned(),
            field,
            source: io::Error::new(io::ErrorKind::InvalidData, "value out of range"),
        };
        let uid = u32::try_from(uid).map_err(|_| too_big("uid"))?;
        let gid = u32::try_from(gid).map_err(|_| too_big("gid"))?;
        let mut mtime = Timespec {
            tv_sec: or_zero_if_empty(header.mtime(), &old.mtime)
                .map_err(header_err(name, "mtime"))? as i64,
            tv_nsec: 0,
        };
        let mut xattrs = Vec::new();
        if let Some(exts) = entry
            .pax_extensions()
            .map_err(header_err(name, "PAX extensions"))?
        {
            for ext in exts {
                let ext = ext.map_err(header_err(name, "PAX extensions"))?;
                let Ok(key) = ext.key() else { continue };
                if key == "mtime" {
                    if let Some(t) = ext.value().ok().and_then(parse_pax_time) {
                        mtime = t;
                    }
                } else if let Some(attr) = key.strip_prefix(PAX_XATTR_PREFIX) {
                    xattrs.push((attr.to_owned(), ext.value_bytes().to_vec()));
                }
            }
        }
        Ok(Meta {
            mode,
            uid,
            gid,
            times: Timestamps {
                last_access: mtime,
                last_modification: mtime,
            },
            xattrs,
        })
    }

    /// Ownership and xattrs of a directory, applied right away (mode and
    /// times are deferred).
    fn dir_meta_now(&self, fd: &OwnedFd, name: &str, meta: &Meta) -> Result<(), ExtractError> {
        self.chown_fd(fd, name, meta)?;
        self.set_xattrs(fd, name, meta)
    }

    fn chown_fd(&self, fd: impl AsFd, name: &str, meta: &Meta) -> Result<(), ExtractError> {
        if self.options.preserve_ownership {
            rustix::fs::fchown(
                fd,
                Some(rustix::fs::Uid::from_raw(meta.uid)),
                Some(rustix::fs::Gid::from_raw(meta.gid)),
            )
            .map_err(io_err(name, "change owner"))?;
        }
        Ok(())
    }

    fn set_xattrs(&self, fd: impl AsFd, name: &str, meta: &Meta) -> Result<(), ExtractError> {
        if !self.options.xattrs {
            return Ok(());
        }
        let fd = fd.as_fd();
        for (attr, value) in &meta.xattrs {
            if attr.starts_with("trusted.overlay.") {
                tracing::warn!(entry = %name, xattr = %attr, "dropping overlay xattr from layer");
                continue;
            }
            if !self.privileged && (attr.starts_with("trusted.") || attr.starts_with("security.")) {
                tracing::debug!(entry = %name, xattr = %attr, "skipping privileged xattr (not root)");
                continue;
            }
            match rustix::fs::fsetxattr(fd, attr.as_str(), value, XattrFlags::empty()) {
                Ok(()) => {}
                Err(e @ (Errno::NOTSUP | Errno::PERM)) => {
                    tracing::warn!(entry = %name, xattr = %attr, error = %e, "could not set xattr");
                }
                Err(e) => {
                    return Err(ExtractError::Io {
                        entry: name.to_owned(),
                        action: "set xattr",
                        source: e.into(),
                    });
                }
            }
        }
        Ok(())
    }

    fn hardlink<R: Read>(
        &mut self,
        entry: &tar::Entry<'_, R>,
        name: &str,
        dir: &OwnedFd,
        base: &[u8],
    ) -> Result<(), ExtractError> {
        let raw_target = entry
            .link_name_bytes()
            .ok_or_else(|| ExtractError::Header {
                entry: name.to_owned(),
                field: "linkname",
                source: io::Error::new(io::ErrorKind::InvalidData, "missing"),
            })?
            .into_owned();
        let target = lossy(&raw_target);
        let unsafe_target = |reason| ExtractError::UnsafeLinkTarget {
            entry: name.to_owned(),
            target: target.clone(),
            reason,
        };
        let components = clean_path(&raw_target, self.options.clamp_paths).map_err(|_| {
            if raw_target.first() == Some(&b'/') {
                unsafe_target("is absolute")
            } else {
                unsafe_target("is outside the layer root")
            }
        })?;
        let Some((&tbase, tparents)) = components.split_last() else {
            return Err(unsafe_target("is the layer root"));
        };
        let tdir = self.walk(tparents, false).map_err(|e| match e {
            WalkError::Symlink(_) => unsafe_target("goes through a symbolic link"),
            WalkError::NotDir(_) | WalkError::Missing(_) => unsafe_target("does not exist"),
            other => other.into_extract(name),
        })?;
        match lstat_type(&tdir, tbase).map_err(io_err(name, "stat hard link target"))? {
            None => return Err(unsafe_target("does not exist")),
            Some(FileType::Directory) => return Err(unsafe_target("is a directory")),
            Some(_) => {}
        }
        // Linking a path to itself: nothing to do.
        if let Ok(a) = rustix::fs::statat(&tdir, os(tbase), AtFlags::SYMLINK_NOFOLLOW)
            && let Ok(b) = rustix::fs::statat(dir, os(base), AtFlags::SYMLINK_NOFOLLOW)
            && a.st_dev == b.st_dev
            && a.st_ino == b.st_ino
        {
            return Ok(());
        }
        self.remove_at(dir, base, name)?;
        // No AT_SYMLINK_FOLLOW: a symlink target is linked itself, never
        // followed.
        rustix::fs::linkat(&tdir, os(tbase), dir, os(base), AtFlags::empty())
            .map_err(io_err(name, "create hard link"))
    }

    /// `.wh.<target>` in directory `parents`.
    fn whiteout(
        &mut self,
        name: &str,
        parents: &[&[u8]],
        target: &[u8],
    ) -> Result<(), ExtractError> {
        self.stats.whiteouts += 1;
        let mut path = parents.to_vec();
        path.push(target);
        let key = join(&path);
        if self.created.contains(&key) {
            tracing::warn!(entry = %name, "whiteout of an entry of the same layer; ignoring");
            return Ok(());
        }
        match self.options.mode {
            ExtractMode::Flatten => {
                let dir = match self.walk(parents, false) {
                    Ok(dir) => dir,
                    // Nothing below to delete.
                    Err(WalkError::Missing(_)) => return Ok(()),
                    Err(e) => return Err(e.into_extract(name)),
                };
                self.remove_at(&dir, target, name)?;
            }
            ExtractMode::Overlay => {
                let dir = self.walk(parents, true).map_err(|e| e.into_extract(name))?;
                if self.privileged {
                    self.remove_at(&dir, target, name)?;
                    match rustix::fs::mknodat(
                        &dir,
                        os(target),
                        FileType::CharacterDevice,
                        Mode::empty(),
                        rustix::fs::makedev(0, 0),
                    ) {
                        Ok(()) => return Ok(()),
                        Err(e @ Errno::PERM) => {
                            tracing::warn!(entry = %name, error = %e, "cannot create overlay whiteout; recording it");
                        }
                        Err(e) => return Err(io_err(name, "create overlay whiteout")(e)),
                    }
                }
                self.stats
                    .unrepresented_whiteouts
                    .push(PathBuf::from(os(&key)));
            }
        }
        Ok(())
    }

    /// `.wh..wh..opq` in directory `parents`.
    fn opaque(&mut self, name: &str, parents: &[&[u8]]) -> Result<(), ExtractError> {
        self.stats.opaque_dirs += 1;
        let dir = self.walk(parents, true).map_err(|e| e.into_extract(name))?;
        match self.options.mode {
            ExtractMode::Flatten => {
                let prefix = join(parents);
                self.clear_lower(&dir, &prefix, name)?;
            }
            ExtractMode::Overlay => {
                if self.privileged {
                    match rustix::fs::fsetxattr(
                        &dir,
                        OVERLAY_OPAQUE_XATTR,
                        b"y",
                        XattrFlags::empty(),
                    ) {
                        Ok(()) => return Ok(()),
                        Err(e @ (Errno::PERM | Errno::NOTSUP)) => {
                            tracing::warn!(entry = %name, error = %e, "cannot mark directory opaque; recording it");
                        }
                        Err(e) => return Err(io_err(name, "set opaque xattr")(e)),
                    }
                }
                self.stats
                    .unrepresented_opaques
                    .push(PathBuf::from(os(&join(parents))));
            }
        }
        Ok(())
    }

    /// Deletes every entry below `dir` that this layer did not write.
    fn clear_lower(&self, dir: &OwnedFd, prefix: &[u8], name: &str) -> Result<(), ExtractError> {
        for child in list_dir(dir).map_err(io_err(name, "read directory"))? {
            let mut path = prefix.to_vec();
            if !path.is_empty() {
                path.push(b'/');
            }
            path.extend_from_slice(&child);
            if !self.created.contains(&path) {
                self.remove_at(dir, &child, name)?;
            } else if lstat_type(dir, &child).map_err(io_err(name, "stat"))?
                == Some(FileType::Directory)
            {
                let sub = open_dir_nofollow(dir, &child).map_err(io_err(name, "open directory"))?;
                self.clear_lower(&sub, &path, name)?;
            }
        }
        Ok(())
    }

    /// Removes whatever is at `dir/base` (recursively for directories),
    /// without following symlinks. Absent is fine.
    fn remove_at(&self, dir: &OwnedFd, base: &[u8], name: &str) -> Result<(), ExtractError> {
        remove_all_at(dir, base, self.privileged).map_err(io_err(name, "remove existing entry"))
    }

    fn finish(&mut self) -> Result<(), ExtractError> {
        let mut deferred = std::mem::take(&mut self.deferred);
        // Deepest first; for equal depth the later entry wins, so keep order.
        deferred.sort_by_key(|d| std::cmp::Reverse(d.components.len()));
        for d in deferred {
            let comps: Vec<&[u8]> = d.components.iter().map(Vec::as_slice).collect();
            let fd = match self.walk(&comps, false) {
                Ok(fd) => fd,
                Err(WalkError::Io(action, e)) => return Err(io_err(&d.entry, action)(e)),
                Err(_) => {
                    tracing::debug!(entry = %d.entry, "directory replaced later in the layer");
                    continue;
                }
            };
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(d.mode))
                .map_err(io_err(&d.entry, "set mode"))?;
            rustix::fs::futimens(&fd, &d.times).map_err(io_err(&d.entry, "set times"))?;
        }
        Ok(())
    }
}

/// What [`copy_with_holes`] did.
struct Copied {
    /// Bytes read (and now the file's content from the offset on).
    len: u64,
    /// Bytes written as data, not left as holes.
    written: u64,
    /// The end offset of the last data written, 0 for none.
    data_end: u64,
}

/// Copies up to `limit` bytes of `reader` into `file` from `offset` on,
/// leaving aligned all-zero [`HOLE_BLOCK`]s as holes (the file must hold
/// none of its own there) and counting the rest against `budget`.
fn copy_with_holes(
    reader: &mut dyn Read,
    file: &File,
    offset: u64,
    limit: u64,
    buf: &mut [u8],
    budget: &mut Budget,
    name: &str,
) -> Result<Copied, ExtractError> {
    let mut copied = Copied {
        len: 0,
        written: 0,
        data_end: 0,
    };
    let block = HOLE_BLOCK as u64;
    while copied.len < limit {
        let want = buf
            .len()
            .min((limit - copied.len).try_into().unwrap_or(usize::MAX));
        let mut n = 0;
        while n < want {
            match reader.read(&mut buf[n..want]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => return Err(ExtractError::Read { source }),
            }
        }
        if n == 0 {
            break;
        }
        let pos = offset + copied.len;
        let data = &buf[..n];
        // Runs of data between holes, each written in one call.
        let mut run_start = 0;
        let mut i = 0;
        while i < n {
            let abs = pos + i as u64;
            let next = (i + (block - abs % block) as usize).min(n);
            if next - i == HOLE_BLOCK && data[i..next] == ZEROS[..] {
                write_run(
                    file,
                    &data[run_start..i],
                    pos + run_start as u64,
                    budget,
                    name,
                    &mut copied,
                )?;
                run_start = next;
            }
            i = next;
        }
        write_run(
            file,
            &data[run_start..],
            pos + run_start as u64,
            budget,
            name,
            &mut copied,
        )?;
        copied.len += n as u64;
        if n < want {
            break;
        }
    }
    Ok(copied)
}

fn write_run(
    file: &File,
    data: &[u8],
    offset: u64,
    budget: &mut Budget,
    name: &str,
    copied: &mut Copied,
) -> Result<(), ExtractError> {
    if data.is_empty() {
        return Ok(());
    }
    let len = data.len() as u64;
    budget.take_bytes(name, len)?;
    file.write_all_at(data, offset)
        .map_err(|source| ExtractError::Io {
            entry: name.to_owned(),
            action: "write file content",
            source,
        })?;
    copied.written += len;
    copied.data_end = offset + len;
    Ok(())
}

/// The PAX records of a GNU sparse file (formats 0.0, 0.1 and 1.0).
#[derive(Debug, Default, PartialEq, Eq)]
struct PaxSparse {
    /// `GNU.sparse.name`: the real path (the header's is made up).
    name: Option<Vec<u8>>,
    /// `GNU.sparse.size` or `GNU.sparse.realsize`: the file's size.
    size: Option<u64>,
    /// Data regions (offset, length) of formats 0.x; `None` for 1.0, whose
    /// map starts the entry's data.
    map: Option<Vec<(u64, u64)>>,
}

/// The GNU sparse records of `entry`'s PAX header, as Go's `archive/tar`
/// reads them; `None` when it is no PAX sparse file (or of an unknown
/// version).
fn pax_sparse<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<Option<PaxSparse>, ExtractError> {
    let name = lossy(&entry.path_bytes());
    let bad = |what: &str| ExtractError::Header {
        entry: name.clone(),
        field: "GNU sparse records",
        source: io::Error::new(io::ErrorKind::InvalidData, what.to_owned()),
    };
    let Some(exts) = entry
        .pax_extensions()
        .map_err(header_err(&name, "PAX extensions"))?
    else {
        return Ok(None);
    };
    let (mut major, mut minor, mut map_record, mut numblocks) = (None, None, None, None);
    let mut pairs: Vec<u64> = Vec::new();
    let mut out = PaxSparse::default();
    let number = |v: &str| v.parse::<u64>().map_err(|_| bad("not a number"));
    for ext in exts {
        let ext = ext.map_err(header_err(&name, "PAX extensions"))?;
        let Ok(key) = ext.key() else { continue };
        let Some(field) = key.strip_prefix("GNU.sparse.") else {
            continue;
        };
        let value = || ext.value().map_err(|_| bad("not UTF-8"));
        match field {
            "major" => major = Some(value()?.to_owned()),
            "minor" => minor = Some(value()?.to_owned()),
            "name" if !ext.value_bytes().is_empty() => out.name = Some(ext.value_bytes().to_vec()),
            "size" => out.size = Some(number(value()?)?),
            "realsize" if out.size.is_none() => out.size = Some(number(value()?)?),
            "numblocks" => numblocks = Some(number(value()?)?),
            "map" => map_record = Some(value()?.to_owned()),
            // Format 0.0: one record per number, in order.
            "offset" | "numbytes" => pairs.push(number(value()?)?),
            _ => {}
        }
    }
    let v1 = match (major.as_deref(), minor.as_deref()) {
        (Some("0"), Some("0" | "1")) => false,
        (Some("1"), Some("0")) => true,
        (None, None) if map_record.is_some() || !pairs.is_empty() => false,
        _ => return Ok(None),
    };
    if !v1 {
        let numbers = match map_record {
            Some(map) if !map.is_empty() => map
                .split(',')
                .map(number)
                .collect::<Result<Vec<u64>, _>>()?,
            Some(_) => Vec::new(),
            None => pairs,
        };
        let blocks = numblocks.ok_or_else(|| bad("GNU.sparse.numblocks is missing"))?;
        if blocks.checked_mul(2) != Some(numbers.len() as u64) {
            return Err(bad("GNU.sparse.numblocks does not match the map"));
        }
        out.map = Some(numbers.chunks(2).map(|p| (p[0], p[1])).collect());
    }
    Ok(Some(out))
}

/// The largest sparse map of format 1.0 read, as Go's `archive/tar` caps it.
const MAX_SPARSE_MAP: usize = 1 << 20;

/// Reads the sparse map that starts the data of a format 1.0 entry: the
/// number of regions, then each one's offset and length, in decimal, one
/// a line, padded to a 512-byte block. Returns it and the bytes it took.
fn read_sparse_map_1x0(reader: &mut impl Read) -> io::Result<(Vec<(u64, u64)>, u64)> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
    let mut text = Vec::new();
    let mut lines = 0u64;
    let mut feed = |text: &mut Vec<u8>, want: u64| -> io::Result<()> {
        while lines < want {
            if text.len() >= MAX_SPARSE_MAP {
                return Err(bad("the sparse map is too large"));
            }
            let mut block = [0u8; 512];
            reader.read_exact(&mut block)?;
            lines += block.iter().filter(|&&b| b == b'\n').count() as u64;
            text.extend_from_slice(&block);
        }
        Ok(())
    };
    feed(&mut text, 1)?;
    let mut tokens = text.split(|&b| b == b'\n');
    let count: u64 = std::str::from_utf8(tokens.next().unwrap_or_default())
        .ok()
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| bad("invalid region count"))?;
    let want = count
        .checked_mul(2)
        .and_then(|n| n.checked_add(1))
        .ok_or_else(|| bad("invalid region count"))?;
    feed(&mut text, want)?;
    let mut numbers = text
        .split(|&b| b == b'\n')
        .skip(1)
        .take((want - 1) as usize)
        .map(|t| {
            std::str::from_utf8(t)
                .ok()
                .and_then(|t| t.parse::<u64>().ok())
                .ok_or_else(|| bad("invalid region"))
        });
    let mut map = Vec::new();
    while let (Some(offset), Some(len)) = (numbers.next(), numbers.next()) {
        map.push((offset?, len?));
    }
    Ok((map, text.len() as u64))
}

/// Checks that sparse `map` lists regions in order, without overlap,
/// within `size`, that hold `data_len` bytes in all.
fn check_sparse_map(map: &[(u64, u64)], size: u64, data_len: u64) -> io::Result<()> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
    let mut end = 0u64;
    let mut total = 0u64;
    for &(offset, len) in map {
        if offset < end {
            return Err(bad("regions overlap or are out of order"));
        }
        end = offset
            .checked_add(len)
            .filter(|&e| e <= size)
            .ok_or_else(|| bad("a region ends past the file's size"))?;
        total += len;
    }
    if total != data_len {
        return Err(bad("the regions do not hold the entry's data"));
    }
    Ok(())
}

fn or_zero_if_empty(value: io::Result<u64>, raw: &[u8]) -> io::Result<u64> {
    match value {
        Err(_) if raw.iter().all(|&b| b == 0 || b == b' ') => Ok(0),
        other => other,
    }
}

fn list_dir(dir: &OwnedFd) -> Result<Vec<Vec<u8>>, Errno> {
    let mut names = Vec::new();
    let mut reader = rustix::fs::Dir::read_from(dir)?;
    while let Some(entry) = reader.read() {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(name.to_vec());
        }
    }
    Ok(names)
}

/// Removes `dir/name` and everything below it, never following symlinks.
/// Without root, directories are made writable first so read-only trees can
/// be removed.
fn remove_all_at(dir: &OwnedFd, name: &[u8], privileged: bool) -> Result<(), Errno> {
    match lstat_type(dir, name)? {
        None => Ok(()),
        Some(FileType::Directory) => {
            let sub = open_dir_nofollow(dir, name)?;
            if !privileged {
                rustix::fs::fchmod(&sub, Mode::from_raw_mode(0o700))?;
            }
            for child in list_dir(&sub)? {
                remove_all_at(&sub, &child, privileged)?;
            }
            rustix::fs::unlinkat(dir, os(name), AtFlags::REMOVEDIR)
        }
        Some(_) => rustix::fs::unlinkat(dir, os(name), AtFlags::empty()),
    }
}

/// Parses a PAX time such as `1700000000.123456789` (or negative).
fn parse_pax_time(value: &str) -> Option<Timespec> {
    let (negative, value) = match value.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, value),
    };
    let (secs, frac) = value.split_once('.').unwrap_or((value, ""));
    if secs.is_empty() || !secs.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs: i64 = secs.parse().ok()?;
    let mut nanos: i64 = 0;
    for (i, b) in frac.bytes().take(9).enumerate() {
        nanos += i64::from(b - b'0') * 10_i64.pow(8 - i as u32);
    }
    Some(if !negative {
        Timespec {
            tv_sec: secs,
            tv_nsec: nanos,
        }
    } else if nanos == 0 {
        Timespec {
            tv_sec: -secs,
            tv_nsec: 0,
        }
    } else {
        Timespec {
            tv_sec: -secs - 1,
            tv_nsec: 1_000_000_000 - nanos,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_path_rules() {
        let ok = |s: &str| -> Vec<String> {
            clean_path(s.as_bytes(), false)
                .unwrap()
                .iter()
                .map(|c| lossy(c))
                .collect()
        };
        assert_eq!(ok("a/b"), ["a", "b"]);
        assert_eq!(ok("./a//b/"), ["a", "b"]);
        assert_eq!(ok("a/../b"), ["b"]);
        assert!(ok("./").is_empty());
        assert!(clean_path(b"/etc/passwd", false).is_err());
        assert!(clean_path(b"../evil", false).is_err());
        assert!(clean_path(b"a/../../x", false).is_err());
        assert!(clean_path(b"..", false).is_err());
        assert_eq!(
            clean_path(b"/etc/passwd", true).unwrap(),
            [&b"etc"[..], b"passwd"]
        );
        assert_eq!(clean_path(b"a/../../x", true).unwrap(), [&b"x"[..]]);
        assert!(clean_path(b"..", true).unwrap().is_empty());
        let long = format!("dir/{}", "n".repeat(300));
        assert!(clean_path(long.as_bytes(), false).is_err());
        let deep = "a/".repeat(2048);
        assert!(clean_path(deep.as_bytes(), false).is_err());
        assert!(clean_path("a/".repeat(2000).as_bytes(), false).is_ok());
    }

    #[test]
    fn pax_time() {
        let t = parse_pax_time("1700000000.5").unwrap();
        assert_eq!((t.tv_sec, t.tv_nsec), (1_700_000_000, 500_000_000));
        let t = parse_pax_time("12").unwrap();
        assert_eq!((t.tv_sec, t.tv_nsec), (12, 0));
        let t = parse_pax_time("-1.25").unwrap();
        assert_eq!((t.tv_sec, t.tv_nsec), (-2, 750_000_000));
        assert!(parse_pax_time("x").is_none());
        assert!(parse_pax_time("1.2x").is_none());
    }

    use std::os::unix::fs::MetadataExt;

    const MIB: u64 = 1 << 20;

    fn options(max_bytes: Option<u64>, max_entries: Option<u64>) -> ExtractOptions {
        ExtractOptions {
            max_bytes,
            max_entries,
            ..ExtractOptions::new(ExtractMode::Flatten)
        }
    }

    fn extract(
        tar: &[u8],
        options: &ExtractOptions,
    ) -> (tempfile::TempDir, Result<LayerStats, ExtractError>) {
        let dir = tempfile::tempdir().unwrap();
        let result = extract_layer(tar, dir.path(), options);
        (dir, result)
    }

    fn file(b: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8]) {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, name, data).unwrap();
    }

    /// A PAX extended header with `records`, for the entry that follows.
    fn pax(b: &mut tar::Builder<Vec<u8>>, records: &[(&str, &str)]) {
        let mut data = Vec::new();
        for (k, v) in records {
            let rest = k.len() + v.len() + 3;
            let mut len = rest + 1;
            while len != rest + len.to_string().len() {
                len = rest + len.to_string().len();
            }
            data.extend_from_slice(format!("{len} {k}={v}\n").as_bytes());
        }
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::XHeader);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, "PaxHeaders/f", &data[..]).unwrap();
    }

    /// Allocated bytes of `path`.
    fn allocated(path: &Path) -> u64 {
        std::fs::metadata(path).unwrap().blocks() * 512
    }

    /// The content of a sparse test file: `data` regions at `offsets` of
    /// a file of `size` bytes, zeros elsewhere.
    fn expected(size: u64, regions: &[(u64, &[u8])]) -> Vec<u8> {
        let mut out = vec![0u8; size as usize];
        for (off, data) in regions {
            out[*off as usize..*off as usize + data.len()].copy_from_slice(data);
        }
        out
    }

    #[test]
    fn zero_blocks_become_holes_and_content_is_kept() {
        // Data, then 1 MiB of zeros, data straddling a block boundary,
        // then zeros to the end (a trailing hole).
        let size = 4 * MIB + 100;
        let regions: [(u64, &[u8]); 3] = [
            (0, b"head"),
            (MIB + HOLE_BLOCK as u64 - 2, b"boundary"),
            (2 * MIB, &[7u8; 5000]),
        ];
        let content = expected(size, &regions);
        let mut b = tar::Builder::new(Vec::new());
        file(&mut b, "f", &content);
        file(&mut b, "small", b"\0\0\0");
        let tar = b.into_inner().unwrap();
        let (dir, stats) = extract(&tar, &options(None, None));
        let stats = stats.unwrap();
        let path = dir.path().join("f");
        assert_eq!(std::fs::read(&path).unwrap(), content);
        assert_eq!(std::fs::read(dir.path().join("small")).unwrap(), b"\0\0\0");
        // One block for each region (two for the one on a boundary), and
        // the zeros of the last, partial block.
        assert_eq!(stats.data_bytes, 4 * HOLE_BLOCK as u64 + 100 + 3);
        assert_eq!(stats.bytes, size + 3);
        assert!(
            allocated(&path) <= 5 * HOLE_BLOCK as u64,
            "{}",
            allocated(&path)
        );
    }

    #[test]
    fn old_gnu_sparse_entries_are_written_with_holes() {
        // The tar crate writes a sparse file as an old GNU `S` entry, with
        // extension headers past four regions.
        let src = tempfile::tempdir().unwrap();
        let size = 64 * MIB;
        let regions: Vec<(u64, Vec<u8>)> = (0..7u64)
            .map(|i| (i * 8 * MIB + 4096, vec![b'a' + i as u8; 10]))
            .collect();
        let path = src.path().join("sparse");
        let f = File::create(&path).unwrap();
        f.set_len(size).unwrap();
        for (off, data) in &regions {
            f.write_all_at(data, *off).unwrap();
        }
        drop(f);
        let mut b = tar::Builder::new(Vec::new());
        b.append_path_with_name(&path, "sparse").unwrap();
        let tar = b.into_inner().unwrap();
        assert!(
            tar.len() < MIB as usize,
            "the source filesystem has no holes"
        );
        let (dir, stats) = extract(&tar, &options(Some(MIB), None));
        stats.unwrap();
        let out = dir.path().join("sparse");
        let regions: Vec<(u64, &[u8])> = regions.iter().map(|(o, d)| (*o, &d[..])).collect();
        assert_eq!(std::fs::read(&out).unwrap(), expected(size, &regions));
        assert!(
            allocated(&out) <= 7 * HOLE_BLOCK as u64,
            "{}",
            allocated(&out)
        );
    }

    /// Format 1.0: the map starts the data, the name is a record.
    fn pax_1x0(size: u64, regions: &[(u64, &[u8])]) -> Vec<u8> {
        let mut data = format!("{}\n", regions.len());
        for (off, d) in regions {
            data.push_str(&format!("{off}\n{}\n", d.len()));
        }
        let mut data = data.into_bytes();
        data.resize(data.len().div_ceil(512) * 512, 0);
        for (_, d) in regions {
            data.extend_from_slice(d);
        }
        let mut b = tar::Builder::new(Vec::new());
        let size = size.to_string();
        pax(
            &mut b,
            &[
                ("GNU.sparse.major", "1"),
                ("GNU.sparse.minor", "0"),
                ("GNU.sparse.name", "dir/real"),
                ("GNU.sparse.realsize", &size),
            ],
        );
        file(&mut b, "GNUSparseFile.0/real", &data);
        file(&mut b, "after", b"next");
        b.into_inner().unwrap()
    }

    /// Formats 0.0 (offset and numbytes records) and 0.1 (a map record).
    fn pax_0x(minor: u8, size: u64, regions: &[(u64, &[u8])]) -> Vec<u8> {
        let size = size.to_string();
        let count = regions.len().to_string();
        let mut records = vec![
            ("GNU.sparse.size", size.clone()),
            ("GNU.sparse.numblocks", count),
        ];
        let mut data = Vec::new();
        let mut map = Vec::new();
        for (off, d) in regions {
            if minor == 0 {
                records.push(("GNU.sparse.offset", off.to_string()));
                records.push(("GNU.sparse.numbytes", d.len().to_string()));
            }
            map.push(format!("{off},{}", d.len()));
            data.extend_from_slice(d);
        }
        let name = if minor == 0 {
            "dir/real"
        } else {
            "GNUSparseFile.0/real"
        };
        if minor == 1 {
            records.push(("GNU.sparse.name", "dir/real".into()));
            records.push(("GNU.sparse.map", map.join(",")));
        }
        let records: Vec<(&str, &str)> = records.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let mut b = tar::Builder::new(Vec::new());
        pax(&mut b, &records);
        file(&mut b, name, &data);
        file(&mut b, "after", b"next");
        b.into_inner().unwrap()
    }

    #[test]
    fn pax_sparse_formats_are_read_as_go_reads_them() {
        let size = 1 << 40;
        let regions: [(u64, &[u8]); 2] = [(4096, b"hello"), ((1 << 39) + 3, &[1u8; 3000])];
        for (format, tar) in [
            ("1.0", pax_1x0(size, &regions)),
            ("0.1", pax_0x(1, size, &regions)),
            ("0.0", pax_0x(0, size, &regions)),
        ] {
            let (dir, stats) = extract(&tar, &options(Some(MIB), None));
            let stats = stats.unwrap_or_else(|e| panic!("{format}: {e:?}"));
            let out = dir.path().join("dir/real");
            let meta = std::fs::metadata(&out).unwrap();
            assert_eq!(meta.len(), size, "{format}");
            assert!(meta.blocks() * 512 <= 3 * HOLE_BLOCK as u64, "{format}");
            let f = File::open(&out).unwrap();
            for (off, data) in regions {
                let mut got = vec![0u8; data.len() + 2];
                f.read_exact_at(&mut got, off - 1).unwrap();
                assert_eq!(&got[1..=data.len()], data, "{format}");
                assert_eq!((got[0], got[data.len() + 1]), (0, 0), "{format}");
            }
            assert!(!dir.path().join("GNUSparseFile.0").exists(), "{format}");
            assert_eq!(std::fs::read(dir.path().join("after")).unwrap(), b"next");
            assert_eq!(
                (stats.bytes, stats.data_bytes),
                (size + 4, 3005 + 4),
                "{format}"
            );
        }
    }

    #[test]
    fn pax_sparse_maps_that_do_not_fit_are_refused() {
        // A region past the size, and regions holding more than the data.
        for tar in [
            pax_1x0(100, &[(99, b"xy")]),
            pax_0x(1, 100, &[(50, b"x"), (10, b"y")]),
        ] {
            let (_dir, result) = extract(&tar, &options(None, None));
            let err = result.unwrap_err();
            assert!(matches!(err, ExtractError::Header { .. }), "{err:?}");
        }
        let mut tar = pax_0x(1, 100, &[(10, b"x")]);
        // numblocks that does not match the map.
        let key = b"GNU.sparse.numblocks=";
        let at = tar.windows(key.len()).position(|w| w == key).unwrap();
        tar[at + key.len()] = b'2';
        let (_dir, result) = extract(&tar, &options(None, None));
        assert!(result.is_err());
    }

    #[test]
    fn the_byte_budget_counts_data_not_holes() {
        let mut b = tar::Builder::new(Vec::new());
        file(&mut b, "a", &[1u8; 3000]);
        file(&mut b, "zeros", &vec![0u8; 4 * HOLE_BLOCK]);
        file(&mut b, "b", &[2u8; 3000]);
        let tar = b.into_inner().unwrap();
        // Enough for the data, not for the zeros written out.
        let stats = extract(&tar, &options(Some(6000), None)).1.unwrap();
        assert_eq!(stats.data_bytes, 6000);
        let (dir, result) = extract(&tar, &options(Some(5999), None));
        let err = result.unwrap_err();
        assert!(
            matches!(&err, ExtractError::Budget { entry, limit: 5999, free_space: false, .. } if entry == "b"),
            "{err:?}"
        );
        let message = err.to_string();
        assert!(
            message.contains("needs more than the 5999 bytes of file data allowed"),
            "{message}"
        );
        assert!(
            message.contains(&dir.path().display().to_string()),
            "{message}"
        );
        assert!(!dir.path().join("b").exists() || allocated(&dir.path().join("b")) == 0);
    }

    #[test]
    fn the_entry_budget_counts_created_files_and_directories() {
        let mut b = tar::Builder::new(Vec::new());
        file(&mut b, "d/e/one", b"1");
        file(&mut b, "d/e/two", b"2");
        let tar = b.into_inner().unwrap();
        // Two parents and two files.
        extract(&tar, &options(None, Some(4))).1.unwrap();
        let err = extract(&tar, &options(None, Some(3))).1.unwrap_err();
        assert!(
            matches!(&err, ExtractError::Budget { entry, files: true, .. } if entry == "d/e/two"),
            "{err:?}"
        );
    }

    #[test]
    fn the_default_budget_is_the_free_space_less_a_margin() {
        let dir = tempfile::tempdir().unwrap();
        let root = rustix::fs::open(
            dir.path(),
            OFlags::RDONLY | OFlags::DIRECTORY,
            Mode::empty(),
        )
        .unwrap();
        let st = rustix::fs::fstatvfs(&root).unwrap();
        let free = st.f_bavail * st.f_frsize;
        let budget = Budget::new(&root, dir.path(), &ExtractOptions::default());
        assert!(budget.bytes_from_fs);
        assert!(
            budget.bytes < free && budget.bytes >= free - free / 20,
            "{budget:?} of {free}"
        );
        assert!(free - budget.bytes <= MARGIN_BYTES);
        let budget = Budget::new(&root, dir.path(), &options(Some(7), Some(8)));
        assert_eq!((budget.bytes, budget.entries), (7, 8));
        assert!(!budget.bytes_from_fs && !budget.entries_from_fs);
        // The message of a budget that is the free space says so.
        let err = ExtractError::Budget {
            entry: "big".into(),
            dest: "/x".into(),
            limit: 10,
            files: false,
            free_space: true,
        };
        assert_eq!(
            err.to_string(),
            "tar entry \"big\": the archive needs more space than is free on the filesystem of /x (budget 10 bytes of file data: the free space less a margin); free some space and try again"
        );
    }
}
