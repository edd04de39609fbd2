//! File ops: actions applied, in order, to an overlay of the base stack
//! with a fresh upper directory, which becomes the new layer.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use kiln_runtime::OverlayRootfs;
use kiln_solver::{FileAction, FileOp};
use kiln_store::Store;

use crate::MatcherFactory;

use crate::copy::{self, CopyMeta, mkdir_all, set_owner_times};
use crate::error::{Error, Result};
use crate::fsref::FsRef;
use crate::glob;
use crate::owner::resolve_chown;
use crate::paths::{self, clean_abs};
use crate::snapshot::Commit;
use crate::view::View;

pub(crate) struct FileOpEnv<'a> {
    pub store: &'a Store,
    pub tmp: &'a Path,
    pub matcher: &'a MatcherFactory,
    pub source_date_epoch: Option<i64>,
}

/// Applies `op` to `inputs` (blocking).
pub(crate) fn run(env: &FileOpEnv<'_>, op: &FileOp, inputs: &[FsRef]) -> Result<FsRef> {
    let base = op.base.map(|i| inputs[i].clone()).unwrap_or_default();
    if op.actions.is_empty() {
        return Ok(base);
    }
    let work = tempfile::Builder::new()
        .prefix("file-")
        .tempdir_in(env.tmp)
        .map_err(|e| Error::io("create temporary directory in", env.tmp, e))?;
    let rootfs = OverlayRootfs::mount_volatile(work.path(), &base.lowers())?;
    let root = rootfs.rootfs().to_owned();
    let mut views: HashMap<usize, View> = HashMap::new();
    let result = (|| -> Result<()> {
        for action in &op.actions {
            apply(env, &root, action, inputs, &mut views, work.path())?;
        }
        Ok(())
    })();
    drop(views);
    rootfs.unmount()?;
    result?;
    let upper = work.path().join("upper");
    let layer = Commit {
        store: env.store,
        parent: &base,
        dir: &upper,
        placeholders: &[],
        write_blob: true,
        source_date_epoch: env.source_date_epoch,
    }
    .run()?;
    Ok(base.with_layer(layer))
}

fn owner(root: &Path, chown: Option<&kiln_solver::ChownOpt>) -> Result<Option<(u32, u32)>> {
    chown.map(|c| resolve_chown(root, c)).transpose()
}

fn apply(
    env: &FileOpEnv<'_>,
    root: &Path,
    action: &FileAction,
    inputs: &[FsRef],
    views: &mut HashMap<usize, View>,
    scratch: &Path,
) -> Result<()> {
    match action {
        FileAction::Copy(c) => {
            let src_fs = inputs.get(c.src_input).ok_or_else(|| {
                Error::action(format!("copy source input {} does not exist", c.src_input))
            })?;
            let src_root = match views.entry(c.src_input) {
                std::collections::hash_map::Entry::Occupied(v) => v.get().path().to_owned(),
                std::collections::hash_map::Entry::Vacant(v) => v
                    .insert(View::new(env.tmp, src_fs, false)?)
                    .path()
                    .to_owned(),
            };
            let exclude = if c.exclude_patterns.is_empty() {
                None
            } else {
                Some(
                    (env.matcher)(&c.exclude_patterns).map_err(|reason| Error::Pattern {
                        pattern: c.exclude_patterns.join(", "),
                        reason,
                    })?,
                )
            };
            let meta = CopyMeta {
                owner: owner(root, c.chown.as_ref())?,
                mode: c
                    .chmod
                    .as_ref()
                    .map(crate::chmod::mode_change)
                    .transpose()?,
                mtime: c.mtime,
                exclude,
                exclude_has_negation: c.exclude_patterns.iter().any(|p| p.trim().starts_with('!')),
            };
            copy::copy(&src_root, root, c, &meta, scratch)
        }
        FileAction::Mkdir {
            path,
            mode,
            make_parents,
            owner: chown,
        } => {
            let who = owner(root, chown.as_ref())?;
            let clean = clean_abs(path);
            if *make_parents {
                mkdir_all(root, &clean, who, *mode & 0o7777, None)?;
                return Ok(());
            }
            let (parent, _) = paths::split(&clean);
            let host =
                paths::resolve_parent(root, &clean).map_err(|e| Error::io("resolve", &clean, e))?;
            if !paths::resolve(root, &parent)
                .map(|p| p.is_dir())
                .unwrap_or(false)
            {
                return Err(Error::NotFound { path: parent });
            }
            fs::create_dir(&host).map_err(|e| Error::io("create directory", &clean, e))?;
            fs::set_permissions(&host, fs::Permissions::from_mode(*mode & 0o7777))
                .map_err(|e| Error::io("set permissions of", &host, e))?;
            let (uid, gid) = who.unwrap_or((0, 0));
            set_owner_times(&host, uid, gid, None)
        }
        FileAction::Mkfile {
            path,
            mode,
            data,
            owner: chown,
        } => {
            let who = owner(root, chown.as_ref())?;
            let clean = clean_abs(path);
            let (parent, _) = paths::split(&clean);
            if !paths::resolve(root, &parent)
                .map(|p| p.is_dir())
                .unwrap_or(false)
            {
                return Err(Error::NotFound { path: parent });
            }
            let host =
                paths::resolve_parent(root, &clean).map_err(|e| Error::io("resolve", &clean, e))?;
            match fs::symlink_metadata(&host) {
                Ok(m) if m.is_dir() => {
                    return Err(Error::action(format!(
                        "cannot create file {clean}: is a directory"
                    )));
                }
                Ok(_) => fs::remove_file(&host).map_err(|e| Error::io("remove", &host, e))?,
                Err(_) => {}
            }
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&host)
                .map_err(|e| Error::io("create", &host, e))?;
            f.write_all(data)
                .map_err(|e| Error::io("write", &host, e))?;
            drop(f);
            let (uid, gid) = who.unwrap_or((0, 0));
            set_owner_times(&host, uid, gid, None)?;
            fs::set_permissions(&host, fs::Permissions::from_mode(*mode & 0o7777))
                .map_err(|e| Error::io("set permissions of", &host, e))
        }
        FileAction::Rm {
            path,
            allow_not_found,
            allow_wildcard,
        } => {
            let clean = clean_abs(path);
            let targets = if *allow_wildcard && glob::has_wildcard(&clean) {
                crate::copy::resolve_wildcards(root, &clean)?
            } else {
                vec![clean.clone()]
            };
            if targets.is_empty() && !allow_not_found {
                return Err(Error::NotFound { path: clean });
            }
            for t in targets {
                if t == "/" {
                    return Err(Error::action("refusing to remove /"));
                }
                let host =
                    paths::resolve_parent(root, &t).map_err(|e| Error::io("resolve", &t, e))?;
                let r = match fs::symlink_metadata(&host) {
                    Ok(m) if m.is_dir() => fs::remove_dir_all(&host),
                    Ok(_) => fs::remove_file(&host),
                    Err(e) => Err(e),
                };
                match r {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound && *allow_not_found => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        return Err(Error::NotFound { path: t });
                    }
                    Err(e) => return Err(Error::io("remove", &host, e)),
                }
            }
            Ok(())
        }
        FileAction::Symlink { old, new } => {
            let clean = clean_abs(new);
            let host =
                paths::resolve_parent(root, &clean).map_err(|e| Error::io("resolve", &clean, e))?;
            std::os::unix::fs::symlink(old, &host)
                .map_err(|e| Error::io("create symlink", &clean, e))
        }
    }
}
