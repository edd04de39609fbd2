//! `--chown` user and group names resolved against the destination root
//! filesystem's `/etc/passwd` and `/etc/group`, as BuildKit does: a user
//! name gives the user's uid and primary gid, a numeric user gives
//! `uid:uid`; an explicit group overrides the gid. A name the files do
//! not list is not an error: an unknown user is root (0:0) and an unknown
//! group leaves the gid as it was, as in BuildKit.

use std::path::Path;

use kiln_solver::{ChownOpt, UserOpt};

use crate::error::{Error, Result};
use crate::paths;

/// Resolves `chown` inside `root` to `(uid, gid)`.
pub(crate) fn resolve_chown(root: &Path, chown: &ChownOpt) -> Result<(u32, u32)> {
    let (uid, mut gid) = match &chown.user {
        UserOpt::Id(id) => (*id, *id),
        UserOpt::Name(name) => {
            if let Ok(id) = name.parse::<u32>() {
                (id, id)
            } else {
                read(root, "/etc/passwd")?
                    .and_then(|t| {
                        kiln_runtime::parse_passwd(&t)
                            .into_iter()
                            .find(|e| e.name == *name)
                    })
                    .map_or((0, 0), |e| (e.uid, e.gid))
            }
        }
    };
    if let Some(group) = &chown.group {
        gid = match group {
            UserOpt::Id(id) => *id,
            UserOpt::Name(name) => match name.parse::<u32>() {
                Ok(id) => id,
                Err(_) => read(root, "/etc/group")?
                    .and_then(|t| {
                        kiln_runtime::parse_group(&t)
                            .into_iter()
                            .find(|e| e.name == *name)
                    })
                    .map_or(gid, |e| e.gid),
            },
        };
    }
    Ok((uid, gid))
}

/// The text of `file` inside `root`, if it exists.
fn read(root: &Path, file: &str) -> Result<Option<String>> {
    let path = paths::resolve(root, file).map_err(|e| Error::io("resolve", file, e))?;
    match std::fs::read_to_string(&path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("read", &path, e)),
    }
}
