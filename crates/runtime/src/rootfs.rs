//! Overlay root filesystems.
//!
//! A container's root is an overlayfs mount: the lower directories are
//! snapshot `fs/` directories (read-only, shared), the upper and work
//! directories are fresh ones in the container's state directory. After the
//! run the upper directory holds exactly what the process changed.
//!
//! ```text
//! <container dir>/
//!   rootfs/   the merged mount (the container's /)
//!   upper/    overlay upperdir: the changes
//!   work/     overlay workdir
//!   empty/    the only lower directory when there are no layers (scratch)
//!   l/<n>     short symlinks to the lower directories (long stacks only)
//! ```
//!
//! The legacy `mount(2)` call takes the options in one page (4096 bytes).
//! When absolute lower paths do not fit, or contain characters overlayfs
//! would split on, the mount uses short relative names instead: symlinks
//! `l/0`, `l/1`… to the lower directories, resolved against the container
//! directory as the working directory of a helper thread that unshared its
//! filesystem attributes (so the rest of the process keeps its own working
//! directory). That is how Docker's overlay2 driver fits deep images.
// unshare(CLONE_FS) of the calling thread, to mount relative to its own
// working directory.
#![allow(unsafe_code)]

use std::ffi::{CString, OsStr};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::io::Errno;
use rustix::mount::{MountFlags, UnmountFlags};

use crate::error::{Error, Result};

/// Overlayfs's maximum stack depth (`OVL_MAX_STACK`).
pub const MAX_LOWERS: usize = 500;

/// The legacy mount data limit: one page, including the terminating NUL.
/// 4096 is the smallest page size Linux runs with.
const MOUNT_DATA_MAX: usize = 4095;

/// Options that keep the upper directory a plain, complete diff: no
/// redirects for renamed directories, no metadata-only copy-up, no index.
const OVERLAY_FEATURES: &str = "index=off,redirect_dir=off,metacopy=off";

/// A mounted overlay root filesystem. Unmounted by [`unmount`](Self::unmount),
/// or on drop (lazily, if it is still busy).
#[derive(Debug)]
pub struct OverlayRootfs {
    merged: PathBuf,
    upper: PathBuf,
    mounted: bool,
}

impl OverlayRootfs {
    /// Mounts `lowers` (topmost first) with a new upper directory, all
    /// inside `dir`, which must exist. An empty `lowers` gives an empty
    /// root (`FROM scratch`).
    pub fn mount(dir: &Path, lowers: &[PathBuf]) -> Result<OverlayRootfs> {
        OverlayRootfs::mount_inner(dir, lowers, false, false)
    }

    /// Like [`mount`](Self::mount), with overlayfs's `volatile` option:
    /// no sync of the upper directory on unmount (nor for `fsync` inside),
    /// for roots whose changes the caller makes durable itself (build
    /// steps: their upper directory becomes a snapshot, synced by the
    /// store). Kernels without the option (before 5.10) get a plain mount.
    pub fn mount_volatile(dir: &Path, lowers: &[PathBuf]) -> Result<OverlayRootfs> {
        OverlayRootfs::mount_inner(dir, lowers, false, true)
    }

    /// Like [`mount`](Self::mount), but keeps the upper directory (and the
    /// other directories) of an earlier mount in `dir`: a stopped
    /// container started again sees its earlier changes.
    pub fn remount(dir: &Path, lowers: &[PathBuf]) -> Result<OverlayRootfs> {
        OverlayRootfs::mount_inner(dir, lowers, true, false)
    }

    fn mount_inner(
        dir: &Path,
        lowers: &[PathBuf],
        reuse: bool,
        volatile: bool,
    ) -> Result<OverlayRootfs> {
        let create = |d: &Path| match std::fs::create_dir(d) {
            Err(e) if reuse && e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            other => other.map_err(|e| Error::io("create directory", d, e)),
        };
        if lowers.len() > MAX_LOWERS {
            return Err(Error::TooManyLowers {
                count: lowers.len(),
                max: MAX_LOWERS,
            });
        }
        let dir = std::path::absolute(dir).map_err(|e| Error::io("resolve", dir, e))?;
        let merged = dir.join("rootfs");
        let upper = dir.join("upper");
        let work = dir.join("work");
        for d in [&merged, &upper, &work] {
            create(d)?;
        }
        let mut lowers: Vec<PathBuf> = lowers
            .iter()
            .map(|l| std::path::absolute(l).map_err(|e| Error::io("resolve", l, e)))
            .collect::<Result<_>>()?;
        if lowers.is_empty() {
            let empty = dir.join("empty");
            create(&empty)?;
            lowers.push(empty);
        }
        let count = lowers.len();
        let mount_err = |source: io::Error| Error::Mount {
            target: merged.clone(),
            lowers: count,
            source,
        };

        let volatile = volatile && volatile_supported();
        let absolute = overlay_data(
            lowers.iter().map(|p| p.as_os_str()),
            &upper,
            &work,
            volatile,
        );
        match absolute {
            Some(data) if data.len() <= MOUNT_DATA_MAX => {
                tracing::debug!(target = %merged.display(), lowers = count, volatile, "mounting overlay");
                let data = CString::new(data).map_err(|e| mount_err(io::Error::other(e)))?;
                match mount_overlay(&merged, &data) {
                    Err(e) if volatile && e.raw_os_error() == Some(Errno::INVAL.raw_os_error()) => {
                        // Maybe the kernel does not know the option: once
                        // without it, and never again if that works.
                        let plain = overlay_data(
                            lowers.iter().map(|p| p.as_os_str()),
                            &upper,
                            &work,
                            false,
                        )
                        .and_then(|d| CString::new(d).ok())
                        .ok_or_else(|| mount_err(e))?;
                        mount_overlay(&merged, &plain).map_err(mount_err)?;
                        tracing::debug!("overlayfs refused `volatile`; mounting without it");
                        VOLATILE_UNSUPPORTED.store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                    other => other.map_err(mount_err)?,
                }
            }
            _ => {
                tracing::debug!(target = %merged.display(), lowers = count, "mounting overlay with short relative lower names");
                let links = dir.join("l");
                if reuse && links.exists() {
                    std::fs::remove_dir_all(&links)
                        .map_err(|e| Error::io("remove directory", &links, e))?;
                }
                std::fs::create_dir(&links)
                    .map_err(|e| Error::io("create directory", &links, e))?;
                let mut names = Vec::with_capacity(count);
                for (i, lower) in lowers.iter().enumerate() {
                    let link = links.join(i.to_string());
                    std::os::unix::fs::symlink(lower, &link)
                        .map_err(|e| Error::io("create symlink", &link, e))?;
                    names.push(PathBuf::from(format!("l/{i}")));
                }
                // (No `volatile` here: this rare path keeps one behaviour.)
                let data = overlay_data(
                    names.iter().map(|p| p.as_os_str()),
                    Path::new("upper"),
                    Path::new("work"),
                    false,
                )
                .filter(|d| d.len() <= MOUNT_DATA_MAX)
                .ok_or_else(|| {
                    mount_err(io::Error::other(
                        "mount options exceed one page even with short names",
                    ))
                })?;
                let data = CString::new(data).map_err(|e| mount_err(io::Error::other(e)))?;
                mount_overlay_relative(&dir, &merged, data).map_err(mount_err)?;
            }
        }
        Ok(OverlayRootfs {
            merged,
            upper,
            mounted: true,
        })
    }

    /// The merged mount: the container's `/`.
    pub fn rootfs(&self) -> &Path {
        &self.merged
    }

    /// The upper directory: the changes made through the mount.
    pub fn upper(&self) -> &Path {
        &self.upper
    }

    /// Unmounts, retrying while busy; as a last resort detaches lazily
    /// (the mount disappears once nothing uses it).
    pub fn unmount(mut self) -> Result<()> {
        self.unmount_inner()
    }

    fn unmount_inner(&mut self) -> Result<()> {
        if !self.mounted {
            return Ok(());
        }
        let mut last = Errno::BUSY;
        for attempt in 0..10u32 {
            match rustix::mount::unmount(&self.merged, UnmountFlags::empty()) {
                Ok(()) | Err(Errno::INVAL | Errno::NOENT) => {
                    self.mounted = false;
                    tracing::debug!(target = %self.merged.display(), "unmounted overlay");
                    return Ok(());
                }
                Err(Errno::BUSY) => {
                    last = Errno::BUSY;
                    std::thread::sleep(Duration::from_millis(10 * u64::from(attempt + 1)));
                }
                Err(e) => {
                    last = e;
                    break;
                }
            }
        }
        tracing::warn!(target = %self.merged.display(), error = %last, "overlay busy; detaching lazily");
        rustix::mount::unmount(&self.merged, UnmountFlags::DETACH).map_err(|e| Error::Unmount {
            target: self.merged.clone(),
            source: e.into(),
        })?;
        self.mounted = false;
        Ok(())
    }
}

impl Drop for OverlayRootfs {
    fn drop(&mut self) {
        if let Err(e) = self.unmount_inner() {
            tracing::error!(target = %self.merged.display(), error = %e, "failed to unmount overlay");
        }
    }
}

/// Set once overlayfs refused `volatile` (an old kernel).
static VOLATILE_UNSUPPORTED: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

fn volatile_supported() -> bool {
    !VOLATILE_UNSUPPORTED.load(std::sync::atomic::Ordering::Relaxed)
}

/// `lowerdir=a:b,upperdir=u,workdir=w,…`, or `None` if a path holds a
/// character overlayfs treats specially (`:`, `,`, `\`) or is not UTF-8
/// (the option string must be a C string; the short-name fallback has
/// neither problem).
fn overlay_data<'a>(
    lowers: impl Iterator<Item = &'a OsStr>,
    upper: &Path,
    work: &Path,
    volatile: bool,
) -> Option<Vec<u8>> {
    fn plain(p: &[u8]) -> bool {
        !p.iter().any(|b| matches!(b, b':' | b',' | b'\\' | 0))
    }
    let mut data = b"lowerdir=".to_vec();
    for (i, lower) in lowers.enumerate() {
        let bytes = lower.as_bytes();
        if !plain(bytes) {
            return None;
        }
        if i > 0 {
            data.push(b':');
        }
        data.extend_from_slice(bytes);
    }
    for (key, path) in [(&b",upperdir="[..], upper), (b",workdir=", work)] {
        let bytes = path.as_os_str().as_bytes();
        if !plain(bytes) {
            return None;
        }
        data.extend_from_slice(key);
        data.extend_from_slice(bytes);
    }
    data.push(b',');
    data.extend_from_slice(OVERLAY_FEATURES.as_bytes());
    if volatile {
        data.extend_from_slice(b",volatile");
    }
    Some(data)
}

fn mount_overlay(target: &Path, data: &CString) -> io::Result<()> {
    rustix::mount::mount(
        "overlay",
        target,
        "overlay",
        MountFlags::empty(),
        Some(data.as_c_str()),
    )
    .map_err(io::Error::from)
}

/// Mounts with `data`'s relative paths resolved against `dir`, from a
/// thread whose working directory is private to it.
fn mount_overlay_relative(dir: &Path, target: &Path, data: CString) -> io::Result<()> {
    let dir = dir.to_owned();
    let target = target.to_owned();
    std::thread::Builder::new()
        .name("kiln-overlay-mount".into())
        .spawn(move || -> io::Result<()> {
            // SAFETY: CLONE_FS only gives this thread its own working
            // directory, root and umask. It does not touch memory or file
            // descriptors other threads rely on, and the thread exits
            // right after the mount.
            unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::FS) }?;
            rustix::process::chdir(&dir)?;
            mount_overlay(&target, &data)
        })?
        .join()
        .map_err(|_| io::Error::other("overlay mount thread panicked"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_is_plain_options() {
        let lowers = [PathBuf::from("/a/fs"), PathBuf::from("/b/fs")];
        let data = overlay_data(
            lowers.iter().map(|p| p.as_os_str()),
            Path::new("/c/upper"),
            Path::new("/c/work"),
            false,
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(data).unwrap(),
            "lowerdir=/a/fs:/b/fs,upperdir=/c/upper,workdir=/c/work,index=off,redirect_dir=off,metacopy=off"
        );
        let data = overlay_data(
            lowers.iter().map(|p| p.as_os_str()),
            Path::new("/c/upper"),
            Path::new("/c/work"),
            true,
        )
        .unwrap();
        assert!(
            String::from_utf8(data)
                .unwrap()
                .ends_with(",metacopy=off,volatile")
        );
    }

    #[test]
    fn special_characters_need_the_fallback() {
        for bad in ["/a:b", "/a,b", "/a\\b"] {
            let lowers = [PathBuf::from(bad)];
            assert!(
                overlay_data(
                    lowers.iter().map(|p| p.as_os_str()),
                    Path::new("/u"),
                    Path::new("/w"),
                    false,
                )
                .is_none()
            );
        }
    }
}
