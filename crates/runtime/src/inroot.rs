//! Path operations confined to a container's root filesystem: symlinks
//! and `..` resolve as if the root were `/` (`openat2` with
//! `RESOLVE_IN_ROOT`), so an image cannot make the host read or create
//! files outside it.

use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags, Timestamps};
use rustix::io::Errno;

/// `path` made relative to `/`, with `.` and `..` resolved lexically (as
/// Docker cleans paths). `/` becomes the empty path.
pub(crate) fn clean(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

pub(crate) fn open_root(root: &Path) -> io::Result<OwnedFd> {
    rustix::fs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(io::Error::from)
}

/// `rel` opened below `root` with symlinks and `..` resolved inside it.
pub(crate) fn open_in(root: &OwnedFd, rel: &Path, flags: OFlags) -> Result<OwnedFd, Errno> {
    let rel = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    rustix::fs::openat2(
        root,
        rel,
        flags | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    )
}

/// The contents of `path` inside `root`, or `None` if it does not exist.
pub(crate) fn read_file(root: &Path, path: &Path) -> io::Result<Option<Vec<u8>>> {
    let root_fd = open_root(root)?;
    match open_in(&root_fd, &clean(path), OFlags::RDONLY) {
        Ok(fd) => {
            let mut buf = Vec::new();
            std::fs::File::from(fd).read_to_end(&mut buf)?;
            Ok(Some(buf))
        }
        Err(Errno::NOENT | Errno::NOTDIR) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Creates directory `path` inside `root` and its missing parents, mode
/// 0755, owned by `uid:gid` (as Docker creates a missing working
/// directory). Returns whether anything was created.
pub(crate) fn mkdir_all(root: &Path, path: &Path, uid: u32, gid: u32) -> io::Result<bool> {
    let root_fd = open_root(root)?;
    let rel = clean(path);
    let mut prefix = PathBuf::new();
    let mut created = false;
    for comp in rel.components() {
        let parent = open_in(&root_fd, &prefix, OFlags::PATH | OFlags::DIRECTORY)?;
        prefix.push(comp);
        match open_in(&root_fd, &prefix, OFlags::PATH | OFlags::DIRECTORY) {
            Ok(_) => continue,
            Err(Errno::NOENT) => {}
            Err(e) => return Err(e.into()),
        }
        let name = comp.as_os_str();
        rustix::fs::mkdirat(&parent, name, Mode::from_raw_mode(0o755))?;
        rustix::fs::chownat(
            &parent,
            name,
            Some(rustix::fs::Uid::from_raw(uid)),
            Some(rustix::fs::Gid::from_raw(gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )?;
        created = true;
    }
    Ok(created)
}

/// Mount points the OCI runtime will have to create in the root
/// filesystem because they are missing (`/proc`, `/etc/hosts`… in a
/// minimal image). They would otherwise end up in the layer diff;
/// [`MountStubs::clean`] removes those still empty after the run and
/// restores their parents' timestamps, as BuildKit does.
#[derive(Debug, Default)]
pub(crate) struct MountStubs {
    /// Relative paths, deepest first.
    paths: Vec<PathBuf>,
}

impl MountStubs {
    pub(crate) fn record<'a>(
        root: &Path,
        destinations: impl IntoIterator<Item = &'a Path>,
    ) -> io::Result<MountStubs> {
        let root_fd = open_root(root)?;
        let mut paths: Vec<PathBuf> = Vec::new();
        for dest in destinations {
            let mut rel = clean(dest);
            while !rel.as_os_str().is_empty() {
                match open_in(&root_fd, &rel, OFlags::PATH | OFlags::NOFOLLOW) {
                    Err(Errno::NOENT | Errno::NOTDIR) => {
                        if !paths.contains(&rel) {
                            paths.push(rel.clone());
                        }
                        rel.pop();
                    }
                    // Exists (possibly as a symlink; then the runtime
                    // mounts wherever it points, which already exists or
                    // is created outside this path).
                    Ok(_) | Err(Errno::LOOP) => break,
                    Err(e) => return Err(e.into()),
                }
            }
        }
        paths.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        Ok(MountStubs { paths })
    }

    /// The recorded paths, relative to the root, deepest first.
    pub(crate) fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// Removes the recorded paths that exist and are empty (files of size
    /// 0, directories without entries). Errors are logged, not returned:
    /// a leftover stub only makes the diff larger.
    pub(crate) fn clean(&self, root: &Path) {
        let root_fd = match open_root(root) {
            Ok(fd) => fd,
            Err(e) => {
                tracing::warn!(root = %root.display(), error = %e, "cannot open root to remove mount stubs");
                return;
            }
        };
        for rel in &self.paths {
            if let Err(e) = remove_stub(&root_fd, rel) {
                tracing::warn!(path = %rel.display(), error = %e, "cannot remove mount stub");
            }
        }
    }
}

fn remove_stub(root_fd: &OwnedFd, rel: &Path) -> io::Result<()> {
    let (Some(parent_rel), Some(name)) = (rel.parent(), rel.file_name()) else {
        return Ok(());
    };
    let parent = match open_in(root_fd, parent_rel, OFlags::RDONLY | OFlags::DIRECTORY) {
        Ok(fd) => fd,
        Err(Errno::NOENT | Errno::NOTDIR) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let st = match rustix::fs::statat(&parent, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(Errno::NOENT) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let is_dir = match FileType::from_raw_mode(st.st_mode) {
        FileType::Directory => {
            let dir = rustix::fs::openat(
                &parent,
                name,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            let entries = rustix::fs::Dir::read_from(&dir)?;
            let mut empty = true;
            for entry in entries {
                let n = entry?.file_name().to_bytes().to_vec();
                if n != b"." && n != b".." {
                    empty = false;
                    break;
                }
            }
            if !empty {
                return Ok(());
            }
            true
        }
        FileType::RegularFile if st.st_size == 0 => false,
        _ => return Ok(()),
    };
    let parent_st = rustix::fs::fstat(&parent)?;
    let flags = if is_dir {
        AtFlags::REMOVEDIR
    } else {
        AtFlags::empty()
    };
    rustix::fs::unlinkat(&parent, name, flags)?;
    let times = Timestamps {
        last_access: rustix::fs::Timespec {
            tv_sec: parent_st.st_atime,
            tv_nsec: parent_st.st_atime_nsec as _,
        },
        last_modification: rustix::fs::Timespec {
            tv_sec: parent_st.st_mtime,
            tv_nsec: parent_st.st_mtime_nsec as _,
        },
    };
    rustix::fs::futimens(&parent, &times)?;
    tracing::trace!(path = %rel.display(), "removed mount stub");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_resolves_lexically() {
        assert_eq!(clean(Path::new("/a/./b/../c")), PathBuf::from("a/c"));
        assert_eq!(clean(Path::new("/../..")), PathBuf::new());
        assert_eq!(clean(Path::new("x/y")), PathBuf::from("x/y"));
    }

    #[test]
    fn read_file_stays_in_root() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "x").unwrap();
        std::fs::create_dir(root.path().join("etc")).unwrap();
        std::os::unix::fs::symlink(
            outside.path().join("secret"),
            root.path().join("etc/passwd"),
        )
        .unwrap();
        assert_eq!(
            read_file(root.path(), Path::new("/etc/passwd")).unwrap(),
            None
        );
        std::fs::write(root.path().join("etc/group"), "g").unwrap();
        assert_eq!(
            read_file(root.path(), Path::new("/etc/../etc/group")).unwrap(),
            Some(b"g".to_vec())
        );
    }

    #[test]
    fn mkdir_all_and_stubs() {
        let root = tempfile::tempdir().unwrap();
        let uid = rustix::process::geteuid().as_raw();
        let gid = rustix::process::getegid().as_raw();
        assert!(mkdir_all(root.path(), Path::new("/a/b/c"), uid, gid).unwrap());
        assert!(!mkdir_all(root.path(), Path::new("/a/b"), uid, gid).unwrap());
        assert!(root.path().join("a/b/c").is_dir());

        let stubs = MountStubs::record(
            root.path(),
            [
                Path::new("/etc/hosts"),
                Path::new("/etc/hostname"),
                Path::new("/a/b"),
            ],
        )
        .unwrap();
        assert_eq!(
            stubs.paths(),
            [
                PathBuf::from("etc/hosts"),
                PathBuf::from("etc/hostname"),
                PathBuf::from("etc")
            ]
        );
        std::fs::create_dir(root.path().join("etc")).unwrap();
        std::fs::write(root.path().join("etc/hosts"), "").unwrap();
        std::fs::write(root.path().join("etc/hostname"), "keep").unwrap();
        stubs.clean(root.path());
        assert!(!root.path().join("etc/hosts").exists());
        assert!(root.path().join("etc/hostname").exists());
        std::fs::remove_file(root.path().join("etc/hostname")).unwrap();
        stubs.clean(root.path());
        assert!(!root.path().join("etc").exists());
    }
}
