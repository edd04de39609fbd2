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

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
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
    /// Bytes of regular file content written.
    pub bytes: u64,
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
    let mut extractor = Extractor {
        root,
        options: options.clone(),
        privileged: is_root(),
        stats: LayerStats::default(),
        created: HashSet::new(),
        deferred: Vec::new(),
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
}

/// Cleans a tar path lexically into components. Refuses absolute paths and
/// paths that leave the root, unless `clamp` (then the root is `/`, whose
/// parent is itself).
fn clean_path(raw: &[u8], clamp: bool) -> Result<Vec<&[u8]>, &'static str> {
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
        for (i, comp) in components.iter().enumerate() {
            let next = match open_dir_nofollow(&cur, comp) {
                Ok(fd) => fd,
                Err(Errno::NOENT) if create => {
                    match rustix::fs::mkdirat(&cur, os(comp), Mode::from_raw_mode(0o755)) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => return Err(WalkError::Io("create a parent directory", e)),
                    }
                    self.mark_created(&components[..=i]);
                    open_dir_nofollow(&cur, comp)
                        .map_err(|e| self.classify(&cur, components, i, e))?
                }
                Err(e) => return Err(self.classify(&cur, components, i, e)),
            };
            cur = next;
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
        let raw_path = entry.path_bytes().into_owned();
        let name = lossy(&raw_path);
        self.stats.entries += 1;
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
                let mut file = File::from(fd);
                let n = io::copy(entry, &mut file).map_err(|source| ExtractError::Io {
                    entry: name.clone(),
                    action: "write file content",
                    source,
                })?;
                self.stats.bytes += n;
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
}
