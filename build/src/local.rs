//! Local sources: the build context and named contexts.
//!
//! A local source selects files of a host directory: the `follow_paths`
//! (patterns; `.` selects everything), their contents and the directories
//! leading to them, minus what the exclude patterns match, filtered by
//! `include_patterns` when given. Symlinks named by a follow path are
//! followed (their target, inside the directory, is selected too).
//!
//! The selection is copied into a fresh layer with modes, symlinks and
//! modification times kept and ownership set to `0:0`, as BuildKit's
//! context transfer does.
//!
//! The cache key is content-based; see the crate documentation.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::PathMatcher;
use crate::error::{Error, Result};
use crate::glob::{self, IgnoreMatcher};

/// What kind of entry a selected path is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Dir,
    File,
    Symlink,
    /// FIFOs, sockets and devices: recorded in the key, not copied.
    Other,
}

impl Kind {
    fn code(self) -> u8 {
        match self {
            Kind::Dir => b'd',
            Kind::File => b'f',
            Kind::Symlink => b'l',
            Kind::Other => b'o',
        }
    }
}

/// One selected path.
#[derive(Debug)]
pub(crate) struct Entry {
    /// Relative, slash-separated, never empty.
    pub rel: String,
    pub kind: Kind,
    pub meta: fs::Metadata,
    pub target: Option<PathBuf>,
}

/// The selection parameters of a local source.
pub(crate) struct Selection<'a> {
    pub follow: Vec<String>,
    pub include: Vec<String>,
    pub exclude: Option<&'a PathMatcher>,
    /// Whether the exclude patterns re-include anything (`!`): excluded
    /// directories must then still be walked.
    pub exclude_has_negation: bool,
}

fn normalize_pattern(p: &str) -> String {
    crate::paths::clean_abs(p)
        .trim_start_matches('/')
        .to_owned()
}

impl Selection<'_> {
    pub(crate) fn new<'a>(
        follow: &[String],
        include: &[String],
        exclude: Option<&'a PathMatcher>,
        exclude_patterns: &[String],
    ) -> Selection<'a> {
        let norm = |v: &[String]| -> Vec<String> {
            let v: Vec<String> = v.iter().map(|p| normalize_pattern(p)).collect();
            // "." (cleaned to "") selects everything: no filter.
            if v.iter().any(String::is_empty) {
                Vec::new()
            } else {
                v
            }
        };
        Selection {
            follow: norm(follow),
            include: norm(include),
            exclude,
            exclude_has_negation: exclude_patterns.iter().any(|p| p.trim().starts_with('!')),
        }
    }
}

/// `Some(true)`: selected with everything below; `Some(false)`: only
/// possibly containing selected paths; `None`: not selected.
fn filter_state(patterns: &[String], rel: &str, is_dir: bool) -> Option<bool> {
    if patterns.is_empty() {
        return Some(true);
    }
    if patterns.iter().any(|p| glob::match_path(p, rel)) {
        return Some(true);
    }
    if is_dir && patterns.iter().any(|p| glob::may_contain(p, rel)) {
        return Some(false);
    }
    None
}

/// Walks `root` and returns the selected entries sorted by path.
pub(crate) fn select(root: &Path, sel: &Selection<'_>) -> Result<Vec<Entry>> {
    let mut out = Vec::new();
    let mut follow = sel.follow.clone();
    // Symlinks named by follow paths select their targets too; a few
    // rounds cover chains of links.
    for _ in 0..8 {
        out.clear();
        walk(
            root,
            "",
            follow.is_empty(),
            sel.include.is_empty(),
            sel,
            &follow,
            &mut out,
        )?;
        let mut extra = Vec::new();
        for e in &out {
            if e.kind == Kind::Symlink
                && sel.follow.iter().chain(follow.iter()).any(|p| p == &e.rel)
                && let Some(t) = &e.target
            {
                let parent = crate::paths::split(&format!("/{}", e.rel)).0;
                let target = crate::paths::join(&parent, &t.to_string_lossy());
                let target = target.trim_start_matches('/').to_owned();
                if !target.is_empty() && !follow.contains(&target) {
                    extra.push(target);
                }
            }
        }
        if extra.is_empty() || follow.is_empty() {
            break;
        }
        follow.extend(extra);
    }
    Ok(out)
}

/// Returns whether anything at or below `dir` was selected.
fn walk(
    root: &Path,
    dir: &str,
    follow_all: bool,
    include_all: bool,
    sel: &Selection<'_>,
    follow: &[String],
    out: &mut Vec<Entry>,
) -> Result<bool> {
    let host = if dir.is_empty() {
        root.to_owned()
    } else {
        root.join(dir)
    };
    let mut names: Vec<_> = fs::read_dir(&host)
        .map_err(|e| Error::io("read directory", &host, e))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<io::Result<_>>()
        .map_err(|e| Error::io("read directory", &host, e))?;
    names.sort();
    let mut any = false;
    for name in names {
        let Some(name) = name.to_str() else {
            tracing::warn!(dir = %host.display(), name = ?name, "skipping a file name that is not UTF-8");
            continue;
        };
        let rel = if dir.is_empty() {
            name.to_owned()
        } else {
            format!("{dir}/{name}")
        };
        let path = host.join(name);
        let meta = fs::symlink_metadata(&path).map_err(|e| Error::io("stat", &path, e))?;
        let ft = meta.file_type();
        let is_dir = ft.is_dir();
        let f = if follow_all {
            Some(true)
        } else {
            filter_state(follow, &rel, is_dir)
        };
        let Some(f_all) = f else { continue };
        let i = if include_all {
            Some(true)
        } else {
            filter_state(&sel.include, &rel, is_dir)
        };
        let Some(i_all) = i else { continue };
        let excluded = sel.exclude.is_some_and(|m| m(&rel));
        if excluded && !(is_dir && sel.exclude_has_negation) {
            continue;
        }
        let selected_fully = f_all && i_all && !excluded;
        if is_dir {
            let pos = out.len();
            out.push(Entry {
                rel: rel.clone(),
                kind: Kind::Dir,
                meta,
                target: None,
            });
            let inner = walk(root, &rel, f_all, i_all, sel, follow, out)?;
            if !selected_fully && !inner {
                out.truncate(pos);
                continue;
            }
            any = true;
            continue;
        }
        if !selected_fully {
            continue;
        }
        let (kind, target) = if ft.is_symlink() {
            let t = fs::read_link(&path).map_err(|e| Error::io("read link", &path, e))?;
            (Kind::Symlink, Some(t))
        } else if ft.is_file() {
            (Kind::File, None)
        } else {
            (Kind::Other, None)
        };
        out.push(Entry {
            rel,
            kind,
            meta,
            target,
        });
        any = true;
    }
    Ok(any)
}

/// Stat data that, unchanged, lets a file's content hash be reused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct StatKey {
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
    ino: u64,
    mode: u32,
}

impl StatKey {
    fn of(meta: &fs::Metadata) -> StatKey {
        StatKey {
            size: meta.len(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            ctime_ns: i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec()),
            ino: meta.ino(),
            mode: meta.mode(),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct StatEntry {
    #[serde(flatten)]
    stat: StatKey,
    hash: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct StatCache {
    version: u32,
    files: BTreeMap<String, StatEntry>,
}

const STAT_CACHE_VERSION: u32 = 1;
const LOCAL_KEY_DOMAIN: &[u8] = b"kiln.local.v1\0";

/// The content key of a selection (blocking). `stat_cache` is the
/// persistent stat cache file for this directory.
pub(crate) fn content_key(root: &Path, entries: &[Entry], stat_cache: &Path) -> Result<[u8; 32]> {
    let mut cache: StatCache = fs::read(stat_cache)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .filter(|c: &StatCache| c.version == STAT_CACHE_VERSION)
        .unwrap_or_default();
    let mut next = StatCache {
        version: STAT_CACHE_VERSION,
        files: BTreeMap::new(),
    };
    let mut h = blake3::Hasher::new();
    h.update(LOCAL_KEY_DOMAIN);
    let mut rehashed = 0usize;
    for e in entries {
        h.update(&(e.rel.len() as u64).to_le_bytes());
        h.update(e.rel.as_bytes());
        h.update(&[e.kind.code()]);
        h.update(&(e.meta.permissions().mode() & 0o7777).to_le_bytes());
        match e.kind {
            Kind::Symlink => {
                let t = e.target.as_deref().unwrap_or(Path::new(""));
                let t = t.as_os_str().as_encoded_bytes();
                h.update(&(t.len() as u64).to_le_bytes());
                h.update(t);
            }
            Kind::File => {
                let stat = StatKey::of(&e.meta);
                let hash = match cache.files.remove(&e.rel) {
                    Some(c) if c.stat == stat => c.hash,
                    _ => {
                        rehashed += 1;
                        let path = root.join(&e.rel);
                        let f =
                            fs::File::open(&path).map_err(|err| Error::io("open", &path, err))?;
                        let mut fh = blake3::Hasher::new();
                        fh.update_reader(f)
                            .map_err(|err| Error::io("read", &path, err))?;
                        fh.finalize().to_hex().to_string()
                    }
                };
                h.update(&e.meta.len().to_le_bytes());
                h.update(hash.as_bytes());
                next.files.insert(e.rel.clone(), StatEntry { stat, hash });
            }
            Kind::Other => {
                h.update(&e.meta.rdev().to_le_bytes());
            }
            Kind::Dir => {}
        }
    }
    tracing::debug!(root = %root.display(), entries = entries.len(), rehashed, "hashed local source");
    if rehashed > 0 || !cache.files.is_empty() {
        // Entries no longer selected are dropped only if nothing else
        // selects them: keep the union so several selections of one
        // directory share the cache.
        for (k, v) in cache.files {
            next.files.entry(k).or_insert(v);
        }
        match serde_json::to_vec(&next) {
            Ok(bytes) => {
                if let Err(e) = crate::records::write_atomic(stat_cache, &bytes) {
                    tracing::warn!(path = %stat_cache.display(), error = %e, "could not write the stat cache");
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not encode the stat cache"),
        }
    }
    Ok(*h.finalize().as_bytes())
}

/// Copies the selected entries from `root` into `dest` (blocking).
pub(crate) fn copy_selection(root: &Path, entries: &[Entry], dest: &Path) -> Result<()> {
    let mut dirs = Vec::new();
    for e in entries {
        let src = root.join(&e.rel);
        let dst = dest.join(&e.rel);
        match e.kind {
            Kind::Dir => {
                fs::create_dir(&dst).map_err(|err| Error::io("create directory", &dst, err))?;
                dirs.push(e);
                continue;
            }
            Kind::File => {
                fs::copy(&src, &dst).map_err(|err| Error::io("copy", &src, err))?;
                fs::set_permissions(&dst, fs::Permissions::from_mode(e.meta.mode() & 0o7777))
                    .map_err(|err| Error::io("set permissions of", &dst, err))?;
            }
            Kind::Symlink => {
                let t = e.target.as_deref().unwrap_or(Path::new(""));
                std::os::unix::fs::symlink(t, &dst)
                    .map_err(|err| Error::io("create symlink", &dst, err))?;
            }
            Kind::Other => {
                if e.meta.file_type().is_fifo() {
                    rustix::fs::mknodat(
                        rustix::fs::CWD,
                        &dst,
                        rustix::fs::FileType::Fifo,
                        rustix::fs::Mode::from_raw_mode(e.meta.mode() & 0o7777),
                        0,
                    )
                    .map_err(|err| Error::io("create fifo", &dst, err.into()))?;
                } else {
                    continue;
                }
            }
        }
        crate::copy::set_owner_times(&dst, 0, 0, Some((e.meta.mtime(), e.meta.mtime_nsec())))?;
    }
    for e in dirs.iter().rev() {
        let dst = dest.join(&e.rel);
        fs::set_permissions(&dst, fs::Permissions::from_mode(e.meta.mode() & 0o7777))
            .map_err(|err| Error::io("set permissions of", &dst, err))?;
        crate::copy::set_owner_times(&dst, 0, 0, Some((e.meta.mtime(), e.meta.mtime_nsec())))?;
    }
    Ok(())
}

/// A default exclude matcher for `patterns` (used when the worker was not
/// given a factory).
pub(crate) fn default_matcher(patterns: &[String]) -> PathMatcher {
    let m = IgnoreMatcher::new(patterns);
    Box::new(move |p: &str| m.is_excluded(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selection_follows_paths_and_excludes() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for p in [
            "src/a",
            "src/b",
            "other",
            "docs/x.md",
            "docs/y.txt",
            "node_modules/m/i",
        ] {
            let p = root.join(p);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, b"x").unwrap();
        }
        let rels = |follow: &[&str], exclude: &[&str]| -> Vec<String> {
            let follow: Vec<String> = follow.iter().map(|s| s.to_string()).collect();
            let exclude: Vec<String> = exclude.iter().map(|s| s.to_string()).collect();
            let m = default_matcher(&exclude);
            let sel = Selection::new(&follow, &[], Some(&m), &exclude);
            select(root, &sel)
                .unwrap()
                .into_iter()
                .map(|e| e.rel)
                .collect()
        };
        assert_eq!(rels(&["src"], &[]), ["src", "src/a", "src/b"]);
        assert_eq!(rels(&["docs/*.md"], &[]), ["docs", "docs/x.md"]);
        assert_eq!(
            rels(&["."], &["node_modules", "src/b"]),
            ["docs", "docs/x.md", "docs/y.txt", "other", "src", "src/a"]
        );
    }
}
