//! Docker's volume copy-up: a new (empty) volume mounted where the image
//! has a directory starts with a copy of that directory: its files,
//! owners, modes, times, symlinks, hard links and special files.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use rustix::fs::{AtFlags, CWD, FileType, Mode, OFlags, Timespec, Timestamps};

use crate::inroot;

/// Copies what `rootfs` has at `target` (resolved inside the root, so an
/// image's symlink cannot point the copy at the host) into `volume` when
/// the volume is empty and the image has a directory there. Returns
/// whether it copied.
pub(crate) fn populate(rootfs: &Path, target: &Path, volume: &Path) -> io::Result<bool> {
    if fs::read_dir(volume)?.next().is_some() {
        return Ok(false);
    }
    let root = inroot::open_root(rootfs)?;
    let flags = OFlags::PATH | OFlags::DIRECTORY;
    let dir = match inroot::open_in(&root, &inroot::clean(target), flags) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT | rustix::io::Errno::NOTDIR) => return Ok(false),
        Err(e) => return Err(e.into()),
    };
    // Below the resolved directory nothing is followed: entries are
    // examined with lstat and symlinks copied as links.
    let src = Path::new("/proc/self/fd").join(std::os::fd::AsRawFd::as_raw_fd(&dir).to_string());
    let mut links = HashMap::new();
    copy_dir(&src, volume, &mut links)?;
    copy_attributes(&fs::metadata(&src)?, volume)?;
    Ok(true)
}

fn copy_dir(
    src: &Path,
    dst: &Path,
    links: &mut HashMap<(u64, u64), std::path::PathBuf>,
) -> io::Result<()> {
    let mut entries: Vec<_> = fs::read_dir(src)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(fs::DirEntry::file_name);
    for entry in entries {
        let from = entry.path();
        let to = dst.join(entry.file_name());
        let meta = fs::symlink_metadata(&from)?;
        let kind = meta.file_type();
        if kind.is_dir() {
            fs::DirBuilder::new().mode(0o700).create(&to)?;
            copy_dir(&from, &to, links)?;
            copy_attributes(&meta, &to)?;
            continue;
        }
        if meta.nlink() > 1 {
            if let Some(first) = links.get(&(meta.dev(), meta.ino())) {
                fs::hard_link(first, &to)?;
                continue;
            }
            links.insert((meta.dev(), meta.ino()), to.clone());
        }
        if kind.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&from)?, &to)?;
        } else if kind.is_file() {
            let mut input = fs::OpenOptions::new()
                .read(true)
                .custom_flags(nix::libc::O_NOFOLLOW)
                .open(&from)?;
            let mut output = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&to)?;
            io::copy(&mut input, &mut output)?;
        } else {
            // Devices and fifos; sockets are not copied (as Docker).
            let file_type = FileType::from_raw_mode(meta.mode());
            if file_type == FileType::Socket {
                continue;
            }
            rustix::fs::mknodat(
                CWD,
                &to,
                file_type,
                Mode::from_raw_mode(meta.mode() & 0o7777),
                meta.rdev(),
            )?;
        }
        copy_attributes(&meta, &to)?;
    }
    Ok(())
}

/// Owner, mode and modification time of `meta` onto `path` (not
/// following a symlink at `path`).
fn copy_attributes(meta: &fs::Metadata, path: &Path) -> io::Result<()> {
    rustix::fs::chownat(
        CWD,
        path,
        Some(rustix::process::Uid::from_raw(meta.uid())),
        Some(rustix::process::Gid::from_raw(meta.gid())),
        AtFlags::SYMLINK_NOFOLLOW,
    )?;
    if !meta.file_type().is_symlink() {
        // After chown, which clears set-id bits.
        fs::set_permissions(path, fs::Permissions::from_mode(meta.mode() & 0o7777))?;
    }
    let time = |sec: i64, nsec: i64| Timespec {
        tv_sec: sec,
        tv_nsec: nsec as _,
    };
    rustix::fs::utimensat(
        CWD,
        path,
        &Timestamps {
            last_access: time(meta.atime(), meta.atime_nsec()),
            last_modification: time(meta.mtime(), meta.mtime_nsec()),
        },
        AtFlags::SYMLINK_NOFOLLOW,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_a_tree_into_an_empty_volume_only() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let data = root.join("data");
        fs::create_dir_all(data.join("sub")).unwrap();
        fs::write(data.join("sub/f"), "hello").unwrap();
        fs::set_permissions(data.join("sub/f"), fs::Permissions::from_mode(0o640)).unwrap();
        fs::hard_link(data.join("sub/f"), data.join("g")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", data.join("link")).unwrap();
        fs::set_permissions(&data, fs::Permissions::from_mode(0o711)).unwrap();
        // A symlink to the host's /etc resolves inside the root.
        std::os::unix::fs::symlink("/etc", root.join("escape")).unwrap();

        let volume = dir.path().join("vol");
        fs::create_dir(&volume).unwrap();
        assert!(populate(&root, Path::new("/data"), &volume).unwrap());
        assert_eq!(fs::read_to_string(volume.join("sub/f")).unwrap(), "hello");
        let f = fs::metadata(volume.join("sub/f")).unwrap();
        assert_eq!(f.mode() & 0o7777, 0o640);
        assert_eq!(fs::metadata(volume.join("g")).unwrap().ino(), f.ino());
        assert_eq!(
            fs::read_link(volume.join("link")).unwrap(),
            Path::new("/etc/passwd")
        );
        assert_eq!(fs::metadata(&volume).unwrap().mode() & 0o7777, 0o711);

        // Not empty any more: left alone.
        fs::remove_file(volume.join("g")).unwrap();
        assert!(!populate(&root, Path::new("/data"), &volume).unwrap());
        assert!(!volume.join("g").exists());

        let other = dir.path().join("other");
        fs::create_dir(&other).unwrap();
        assert!(!populate(&root, Path::new("/missing"), &other).unwrap());
        assert!(!populate(&root, Path::new("/escape"), &other).unwrap());
        assert!(fs::read_dir(&other).unwrap().next().is_none());
    }
}
