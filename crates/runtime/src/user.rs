//! `USER` resolution against the image's `/etc/passwd` and `/etc/group`,
//! with the semantics and messages of Docker (moby/sys/user
//! `GetExecUser`).

use std::path::Path;

use crate::error::UserError;
use crate::inroot;

const MAX_ID: u64 = 2_147_483_647;

/// The identity a container process runs as.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups: the groups listing the user by name in
    /// `/etc/group`, when no group was given explicitly.
    pub additional_gids: Vec<u32>,
    /// The passwd entry's home directory (`/` when there is none).
    pub home: String,
}

/// One line of `/etc/passwd`.
#[derive(Debug)]
pub struct PasswdEntry {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
}

/// One line of `/etc/group`.
#[derive(Debug)]
pub struct GroupEntry {
    pub name: String,
    pub gid: u32,
    pub members: Vec<String>,
}

/// The entries of a passwd file (comments, blank and malformed lines
/// skipped).
pub fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                return None;
            }
            let f: Vec<&str> = line.split(':').collect();
            Some(PasswdEntry {
                name: f.first()?.to_string(),
                uid: f.get(2)?.parse().ok()?,
                gid: f.get(3)?.parse().ok()?,
                home: f.get(5).map(|s| s.to_string()).unwrap_or_default(),
            })
        })
        .collect()
}

/// The entries of a group file (comments, blank and malformed lines
/// skipped).
pub fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                return None;
            }
            let f: Vec<&str> = line.split(':').collect();
            Some(GroupEntry {
                name: f.first()?.to_string(),
                gid: f.get(2)?.parse().ok()?,
                members: f
                    .get(3)
                    .map(|m| {
                        m.split(',')
                            .filter(|s| !s.is_empty())
                            .map(str::to_owned)
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

fn numeric_id(s: &str) -> Option<Result<u32, UserError>> {
    let n: i128 = s.parse().ok()?;
    Some(if (0..=i128::from(MAX_ID)).contains(&n) {
        Ok(n as u32)
    } else {
        Err(UserError::OutOfRange { id: s.to_owned() })
    })
}

fn read(rootfs: &Path, path: &str) -> Result<Option<String>, UserError> {
    inroot::read_file(rootfs, Path::new(path))
        .map(|bytes| bytes.map(|b| String::from_utf8_lossy(&b).into_owned()))
        .map_err(|source| UserError::Read {
            path: path.into(),
            source,
        })
}

/// Resolves a `USER` value (`name`, `uid`, `name:group`, `uid:gid`…; empty
/// means root) against the image rooted at `rootfs`.
///
/// A user name must exist in `/etc/passwd`; a numeric uid need not. A
/// group name must exist in `/etc/group`; a numeric gid need not. Without
/// an explicit group, the gid is the passwd entry's and the supplementary
/// groups are those listing the user.
pub fn resolve_user(spec: &str, rootfs: &Path) -> Result<ResolvedUser, UserError> {
    let (user_arg, group_arg) = match spec.split_once(':') {
        Some((u, g)) => (u, g),
        None => (spec, ""),
    };
    let passwd = read(rootfs, "/etc/passwd")?
        .map(|t| parse_passwd(&t))
        .unwrap_or_default();
    let uid_arg = numeric_id(user_arg).transpose()?;

    let mut out = ResolvedUser {
        home: "/".to_owned(),
        ..ResolvedUser::default()
    };
    let found = passwd.iter().find(|u| match (user_arg, uid_arg) {
        ("", _) => u.uid == 0,
        (_, Some(uid)) => u.uid == uid,
        (name, None) => u.name == name,
    });
    match found {
        Some(entry) => {
            out.uid = entry.uid;
            out.gid = entry.gid;
            if !entry.home.is_empty() {
                out.home = entry.home.clone();
            }
        }
        None if !user_arg.is_empty() => match uid_arg {
            Some(uid) => out.uid = uid,
            None => {
                return Err(UserError::NoSuchUser {
                    user: user_arg.to_owned(),
                });
            }
        },
        None => {}
    }

    if group_arg.is_empty() && found.is_none() {
        return Ok(out);
    }
    let groups = read(rootfs, "/etc/group")?
        .map(|t| parse_group(&t))
        .unwrap_or_default();
    if group_arg.is_empty() {
        let name = found.map(|u| u.name.as_str()).unwrap_or_default();
        let mut gids: Vec<u32> = groups
            .iter()
            .filter(|g| g.members.iter().any(|m| m == name))
            .map(|g| g.gid)
            .collect();
        gids.dedup();
        out.additional_gids = gids;
    } else {
        let gid_arg = numeric_id(group_arg).transpose()?;
        let group = groups.iter().find(|g| match gid_arg {
            Some(gid) => g.gid == gid,
            None => g.name == group_arg,
        });
        out.gid = match (group, gid_arg) {
            (Some(g), _) => g.gid,
            (None, Some(gid)) => gid,
            (None, None) => {
                return Err(UserError::NoSuchGroup {
                    group: group_arg.to_owned(),
                });
            }
        };
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rootfs(passwd: Option<&str>, group: Option<&str>) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        if let Some(p) = passwd {
            std::fs::write(dir.path().join("etc/passwd"), p).unwrap();
        }
        if let Some(g) = group {
            std::fs::write(dir.path().join("etc/group"), g).unwrap();
        }
        dir
    }

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n";
    const GROUP: &str = "root:x:0:\napp:x:1000:\nwheel:x:10:app,other\naudio:x:29:app\n";

    #[test]
    fn default_is_root() {
        let r = rootfs(Some(PASSWD), Some(GROUP));
        let u = resolve_user("", r.path()).unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (0, 0, "/root"));
        assert!(u.additional_gids.is_empty());
    }

    #[test]
    fn name_with_supplementary_groups() {
        let r = rootfs(Some(PASSWD), Some(GROUP));
        let u = resolve_user("app", r.path()).unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (1000, 1000, "/home/app"));
        assert_eq!(u.additional_gids, vec![10, 29]);
    }

    #[test]
    fn explicit_group_replaces_supplementary_groups() {
        let r = rootfs(Some(PASSWD), Some(GROUP));
        let u = resolve_user("app:wheel", r.path()).unwrap();
        assert_eq!((u.uid, u.gid), (1000, 10));
        assert!(u.additional_gids.is_empty());
        let u = resolve_user("app:4242", r.path()).unwrap();
        assert_eq!((u.uid, u.gid), (1000, 4242));
    }

    #[test]
    fn numeric_ids_need_no_entries() {
        let r = rootfs(None, None);
        let u = resolve_user("1234:5678", r.path()).unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (1234, 5678, "/"));
        let u = resolve_user("1234", r.path()).unwrap();
        assert_eq!((u.uid, u.gid), (1234, 0));
    }

    #[test]
    fn docker_messages() {
        let r = rootfs(Some(PASSWD), Some(GROUP));
        assert_eq!(
            resolve_user("nobody", r.path()).unwrap_err().to_string(),
            "unable to find user nobody: no matching entries in passwd file"
        );
        assert_eq!(
            resolve_user("app:staff", r.path()).unwrap_err().to_string(),
            "unable to find group staff: no matching entries in group file"
        );
        assert_eq!(
            resolve_user("4294967296", r.path())
                .unwrap_err()
                .to_string(),
            "uids and gids must be in range 0-2147483647"
        );
        let empty = rootfs(None, None);
        assert_eq!(
            resolve_user("app", empty.path()).unwrap_err().to_string(),
            "unable to find user app: no matching entries in passwd file"
        );
    }
}
