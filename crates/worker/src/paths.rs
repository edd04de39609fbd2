//! Paths inside a root filesystem: lexical cleaning as Docker does it and
//! symlink resolution confined to the root (like Go's `securejoin` and
//! continuity's `fs.RootPath`), so nothing a layer contains makes the
//! worker read or write outside the root.

use std::ffi::OsString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// How many symlinks one resolution follows before giving up (ELOOP).
const MAX_SYMLINKS: usize = 255;

/// `path` made absolute and cleaned lexically (`.`, `..`, repeated
/// slashes); `/` for the root.
pub(crate) fn clean_abs(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    format!("/{}", parts.join("/"))
}

/// Whether a destination path names a directory by its spelling
/// (`/dest/`, `/dest/.`, `.`).
pub(crate) fn names_dir(path: &str) -> bool {
    path.ends_with('/') || path.ends_with("/.") || path == "." || path == ".."
}

/// The relative components of a cleaned absolute path.
pub(crate) fn rel_components(clean: &str) -> Vec<&str> {
    clean.split('/').filter(|s| !s.is_empty()).collect()
}

/// Splits a cleaned absolute path into parent and base name (`/` has an
/// empty base).
pub(crate) fn split(clean: &str) -> (String, String) {
    match clean.rfind('/') {
        Some(0) => ("/".to_owned(), clean[1..].to_owned()),
        Some(i) => (clean[..i].to_owned(), clean[i + 1..].to_owned()),
        None => ("/".to_owned(), clean.to_owned()),
    }
}

/// Joins a cleaned absolute path and a relative one.
pub(crate) fn join(base: &str, rel: &str) -> String {
    clean_abs(&format!("{base}/{rel}"))
}

/// The host path of `path` inside `root`, following every symlink on the
/// way (the last component included) as if `root` were `/`. Components
/// that do not exist are appended as they are.
pub(crate) fn resolve(root: &Path, path: &str) -> io::Result<PathBuf> {
    resolve_inner(root, path, true)
}

/// Like [`resolve`] but the last component is not followed if it is a
/// symlink.
pub(crate) fn resolve_parent(root: &Path, path: &str) -> io::Result<PathBuf> {
    resolve_inner(root, path, false)
}

fn resolve_inner(root: &Path, path: &str, follow_last: bool) -> io::Result<PathBuf> {
    // Pending components, last first (a stack).
    let mut pending: Vec<OsString> = Path::new(&clean_abs(path))
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_owned()),
            _ => None,
        })
        .rev()
        .collect();
    let mut resolved: Vec<OsString> = Vec::new();
    let mut links = 0usize;
    while let Some(name) = pending.pop() {
        if name == ".." {
            resolved.pop();
            continue;
        }
        if name == "." || name.is_empty() {
            continue;
        }
        let is_last = pending.is_empty();
        let mut candidate = root.to_path_buf();
        candidate.extend(&resolved);
        candidate.push(&name);
        if is_last && !follow_last {
            resolved.push(name);
            break;
        }
        match std::fs::symlink_metadata(&candidate) {
            Ok(meta) if meta.file_type().is_symlink() => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(io::Error::from_raw_os_error(
                        rustix::io::Errno::LOOP.raw_os_error(),
                    ));
                }
                let target = std::fs::read_link(&candidate)?;
                if target.as_os_str().as_bytes().starts_with(b"/") {
                    resolved.clear();
                }
                for c in target.components().rev() {
                    match c {
                        Component::Normal(n) => pending.push(n.to_owned()),
                        Component::ParentDir => pending.push("..".into()),
                        _ => {}
                    }
                }
            }
            Ok(_) => resolved.push(name),
            Err(e) if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(20) => {
                // Missing (or under a non-directory): the rest is lexical.
                resolved.push(name);
                while let Some(rest) = pending.pop() {
                    if rest == ".." {
                        resolved.pop();
                    } else if rest != "." {
                        resolved.push(rest);
                    }
                }
            }
            Err(e) => return Err(e),
        }
    }
    let mut out = root.to_path_buf();
    out.extend(resolved);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_paths() {
        assert_eq!(clean_abs("a/../../b/./c/"), "/b/c");
        assert_eq!(clean_abs(""), "/");
        assert_eq!(split("/a/b"), ("/a".into(), "b".into()));
        assert_eq!(split("/a"), ("/".into(), "a".into()));
        assert!(names_dir("/x/") && names_dir("/x/.") && !names_dir("/x"));
    }

    #[test]
    fn symlinks_stay_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("real/sub")).unwrap();
        std::os::unix::fs::symlink("/real", root.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../../../etc", root.join("up")).unwrap();
        std::os::unix::fs::symlink("loop", root.join("loop")).unwrap();
        assert_eq!(resolve(root, "/abs/sub").unwrap(), root.join("real/sub"));
        assert_eq!(
            resolve(root, "/up/passwd").unwrap(),
            root.join("etc/passwd")
        );
        assert_eq!(resolve_parent(root, "/abs").unwrap(), root.join("abs"));
        assert_eq!(
            resolve(root, "/abs/missing/../x").unwrap(),
            root.join("real/x")
        );
        assert!(resolve(root, "/loop").is_err());
    }
}
