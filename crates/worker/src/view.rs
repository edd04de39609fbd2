//! Views of a layer stack as one directory: an overlay mount of the
//! stack (over a throwaway upper), or the snapshot directory itself when
//! the stack has a single layer and the view is read-only.

use std::path::{Path, PathBuf};

use kiln_runtime::OverlayRootfs;

use crate::error::{Error, Result};
use crate::fsref::FsRef;

/// A mounted (or borrowed) view; unmounted and removed on drop.
#[derive(Debug)]
pub(crate) struct View {
    path: PathBuf,
    // Field order matters: unmount before removing the directory.
    _mount: Option<OverlayRootfs>,
    _dir: Option<tempfile::TempDir>,
}

impl View {
    /// A view of `fs` in a new directory under `tmp`. With `writable`,
    /// writes go to a throwaway upper directory.
    pub(crate) fn new(tmp: &Path, fs: &FsRef, writable: bool) -> Result<View> {
        if !writable && let Some(dir) = fs.single_dir() {
            return Ok(View {
                path: dir.to_owned(),
                _mount: None,
                _dir: None,
            });
        }
        let dir = tempfile::Builder::new()
            .prefix("view-")
            .tempdir_in(tmp)
            .map_err(|e| Error::io("create temporary directory in", tmp, e))?;
        if fs.is_scratch() && !writable {
            let empty = dir.path().join("empty");
            std::fs::create_dir(&empty).map_err(|e| Error::io("create directory", &empty, e))?;
            return Ok(View {
                path: empty,
                _mount: None,
                _dir: Some(dir),
            });
        }
        let mount = OverlayRootfs::mount_volatile(dir.path(), &fs.lowers())?;
        Ok(View {
            path: mount.rootfs().to_owned(),
            _mount: Some(mount),
            _dir: Some(dir),
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}
