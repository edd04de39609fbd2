//! `--chown` user and group names resolved against the destination root
//! filesystem's `/etc/passwd` and `/etc/group`, as BuildKit does: a user
//! name gives the user's uid and primary gid, a numeric user gives
//! `uid:uid`; an explicit group overrides the gid.

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
                lookup(root, "/etc/passwd", name)?
                    .map(|f| (f.0, f.1))
                    .ok_or_else(|| Error::NoSuchOwner {
                        kind: "user",
                        name: name.clone(),
                        file: "passwd",
                    })?
            }
        }
    };
    if let Some(group) = &chown.group {
        gid = match group {
            UserOpt::Id(id) => *id,
            UserOpt::Name(name) => match name.parse::<u32>() {
                Ok(id) => id,
                Err(_) => lookup(root, "/etc/group", name)?
                    .map(|f| f.0)
                    .ok_or_else(|| Error::NoSuchOwner {
                        kind: "group",
                        name: name.clone(),
                        file: "group",
                    })?,
            },
        };
    }
    Ok((uid, gid))
}

/// The third and fourth fields of the line of `file` whose first field is
/// `name` (`(uid, gid)` in passwd, `(gid, 0)` in group).
fn lookup(root: &Path, file: &str, name: &str) -> Result<Option<(u32, u32)>> {
    let path = paths::resolve(root, file).map_err(|e| Error::io("resolve", file, e))?;
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("read", &path, e)),
    };
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let f: Vec<&str> = line.split(':').collect();
        if f.first() == Some(&name) {
            let a = f.get(2).and_then(|s| s.parse().ok());
            let b = f.get(3).and_then(|s| s.parse().ok()).unwrap_or(0);
            if let Some(a) = a {
                return Ok(Some((a, b)));
            }
        }
    }
    Ok(None)
}
