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

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::PathMatcher;
use crate::error::{Error, Result};
use crate::glob;

/// What kind of entry a selected path is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Dir,
    File,
    Symlink,
}

impl Kind {
    fn code(self) -> u8 {
        match self {
            Kind::Dir => b'd',
            Kind::File => b'f',
            Kind::Symlink => b'l',
        }
    }
}

/// One selected path.
#[derive(Debug)]
pub(crate) struct Entry {
    /// Relative, slash-separated, never empty. Names that are not UTF-8
    /// appear with replacement characters (for patterns and keys).
    pub rel: String,
    /// The path's bytes when `rel` is not exactly them.
    pub raw: Option<PathBuf>,
    pub kind: Kind,
    pub meta: Meta,
    pub target: Option<PathBuf>,
}

impl Entry {
    /// The relative path on disk.
    pub(crate) fn fs_rel(&self) -> &Path {
        self.raw.as_deref().unwrap_or(Path::new(&self.rel))
    }
}

/// The stat data a selection keeps of an entry (small: a large context
/// holds tens of thousands).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Meta {
    /// What the stat cache trusts (and the full `st_mode`).
    key: StatKey,
    /// The file's device, when it has other hard links (else 0): with
    /// the inode it names the link group.
    link_dev: u64,
}

impl Meta {
    fn of(meta: &fs::Metadata) -> Meta {
        Meta {
            key: StatKey::of(meta),
            link_dev: if meta.is_file() && meta.nlink() > 1 {
                meta.dev().max(1)
            } else {
                0
            },
        }
    }

    /// `(device, inode)` of a regular file with several hard links.
    fn link_group(&self) -> Option<(u64, u64)> {
        (self.link_dev != 0).then_some((self.link_dev, self.key.ino))
    }

    /// Permission bits, with setuid, setgid and sticky.
    pub(crate) fn perm(&self) -> u32 {
        self.key.mode & 0o7777
    }

    /// Modification time: seconds and nanoseconds.
    fn mtime(&self) -> (i64, i64) {
        let ns = self.key.mtime_ns;
        (
            i64::try_from(ns.div_euclid(1_000_000_000)).unwrap_or(i64::MAX),
            i64::try_from(ns.rem_euclid(1_000_000_000)).unwrap_or(0),
        )
    }
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
    let linked = links_in_parents(root, &sel.follow);
    let widened;
    let sel = if linked.is_empty() {
        sel
    } else {
        follow.extend(linked.iter().cloned());
        let mut include = sel.include.clone();
        if !include.is_empty() {
            include.extend(linked);
        }
        widened = Selection {
            follow: sel.follow.clone(),
            include,
            exclude: sel.exclude,
            exclude_has_negation: sel.exclude_has_negation,
        };
        &widened
    };
    // Symlinks named by follow paths select their targets too; a few
    // rounds cover chains of links.
    for _ in 0..8 {
        out.clear();
        let scope = Scope {
            root,
            sel,
            follow: &follow,
        };
        walk(
            &scope,
            "",
            None,
            follow.is_empty(),
            sel.include.is_empty(),
            &mut out,
        )?;
        let mut extra = Vec::new();
        for e in &out {
            if e.kind == Kind::Symlink
                && sel
                    .follow
                    .iter()
                    .chain(follow.iter())
                    .any(|p| p == &e.rel || glob::match_path(p, &e.rel))
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

/// For follow paths that go through symlinked directories
/// (`via/file.txt` with `via -> real`): the links and the paths they lead
/// to (`via`, `real/file.txt`), so that the copy can resolve them in the
/// selection, as fsutil's follow paths do.
fn links_in_parents(root: &Path, follow: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for p in follow {
        let mut path = p.clone();
        // A few rounds for links to links.
        for _ in 0..16 {
            let parts: Vec<&str> = path.split('/').collect();
            let mut hit = None;
            for i in 1..parts.len() {
                let prefix = parts[..i].join("/");
                if glob::has_wildcard(&prefix) {
                    break;
                }
                if let Ok(t) = fs::read_link(root.join(&prefix)) {
                    hit = Some((prefix, t, parts[i..].join("/")));
                    break;
                }
            }
            let Some((link, target, rest)) = hit else {
                break;
            };
            let parent = crate::paths::split(&format!("/{link}")).0;
            let resolved = crate::paths::join(&parent, &target.to_string_lossy());
            let resolved = resolved.trim_start_matches('/');
            out.push(link);
            path = if resolved.is_empty() {
                rest
            } else {
                format!("{resolved}/{rest}")
            };
            out.push(path.clone());
        }
    }
    out.sort();
    out.dedup();
    out
}

/// What a walk of a local source covers: its root, the selection and the
/// paths whose symbolic links are followed.
#[derive(Clone, Copy)]
struct Scope<'a> {
    root: &'a Path,
    sel: &'a Selection<'a>,
    follow: &'a [String],
}

/// Returns whether anything at or below `dir` was selected.
///
/// Entries are stat'ed relative to their directory's handle (no path
/// lookup from the root per file), and subdirectories are walked in
/// parallel; the output keeps the sorted depth-first order.
fn walk(
    scope: &Scope<'_>,
    dir: &str,
    dir_raw: Option<&Path>,
    follow_all: bool,
    include_all: bool,
    out: &mut Vec<Entry>,
) -> Result<bool> {
    use rayon::prelude::*;
    let Scope { root, sel, follow } = *scope;

    let host = match dir_raw {
        Some(raw) => root.join(raw),
        None if dir.is_empty() => root.to_owned(),
        None => root.join(dir),
    };
    let mut dirents: Vec<(std::ffi::OsString, fs::DirEntry)> = fs::read_dir(&host)
        .map_err(|e| Error::io("read directory", &host, e))?
        .map(|e| e.map(|e| (e.file_name(), e)))
        .collect::<io::Result<_>>()
        .map_err(|e| Error::io("read directory", &host, e))?;
    dirents.sort_unstable_by(|a, b| a.0.cmp(&b.0));

    /// A selected entry, or a directory whose contents are still to walk.
    enum Item {
        Done(Entry),
        Dir {
            entry: Entry,
            f_all: bool,
            i_all: bool,
            selected_fully: bool,
        },
    }
    let mut items = Vec::with_capacity(dirents.len());
    for (os_name, dirent) in dirents {
        // Kept byte for byte on disk; patterns and keys see it lossily.
        let raw = match (os_name.to_str(), dir_raw) {
            (Some(_), None) => None,
            (_, Some(d)) => Some(d.join(&os_name)),
            (None, None) => Some(Path::new(dir).join(&os_name)),
        };
        let name = os_name.to_string_lossy();
        let name = name.as_ref();
        let rel = if dir.is_empty() {
            name.to_owned()
        } else {
            format!("{dir}/{name}")
        };
        let stat = dirent
            .metadata()
            .map_err(|e| Error::io("stat", dirent.path(), e))?;
        let ft = stat.file_type();
        let meta = Meta::of(&stat);
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
            items.push(Item::Dir {
                entry: Entry {
                    rel,
                    raw,
                    kind: Kind::Dir,
                    meta,
                    target: None,
                },
                f_all,
                i_all,
                selected_fully,
            });
            continue;
        }
        if !selected_fully {
            continue;
        }
        let (kind, target) = if ft.is_symlink() {
            let path = dirent.path();
            let t = fs::read_link(&path).map_err(|e| Error::io("read link", &path, e))?;
            (Kind::Symlink, Some(t))
        } else if ft.is_file() {
            (Kind::File, None)
        } else {
            // FIFOs, sockets and devices are not sent from a context, as
            // Docker's client (fsutil) does not send them.
            continue;
        };
        items.push(Item::Done(Entry {
            rel,
            raw,
            kind,
            meta,
            target,
        }));
    }

    // The subdirectories, each into its own list, side by side.
    let subdirs: Vec<(&str, Option<&Path>, bool, bool)> = items
        .iter()
        .filter_map(|item| match item {
            Item::Dir {
                entry,
                f_all,
                i_all,
                ..
            } => Some((entry.rel.as_str(), entry.raw.as_deref(), *f_all, *i_all)),
            Item::Done(_) => None,
        })
        .collect();
    let inner: Vec<(Vec<Entry>, bool)> = subdirs
        .into_par_iter()
        .map(|(rel, raw, f_all, i_all)| {
            let mut sub = Vec::new();
            walk(scope, rel, raw, f_all, i_all, &mut sub).map(|any| (sub, any))
        })
        .collect::<Result<_>>()?;

    let mut any = false;
    let mut inner = inner.into_iter();
    for item in items {
        match item {
            Item::Done(entry) => {
                out.push(entry);
                any = true;
            }
            Item::Dir {
                entry,
                selected_fully,
                ..
            } => {
                let (sub, sub_any) = inner.next().unwrap_or_default();
                if selected_fully || sub_any {
                    out.push(entry);
                    out.extend(sub);
                    any = true;
                }
            }
        }
    }
    Ok(any)
}

/// Stat data that, unchanged, lets a file's content hash be reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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

#[derive(Clone, Debug)]
struct StatEntry {
    stat: StatKey,
    /// BLAKE3 of the contents.
    hash: [u8; 32],
}

/// The persistent stat cache of one directory: relative path → stat data
/// and content hash. A text file, one entry a line after a version line:
/// `<hash> <size> <mtime-ns> <ctime-ns> <ino> <mode> <path>`, the path as a
/// JSON string when it holds a newline, backslash or quote. Any unreadable
/// file is an empty cache (it only costs re-reading files). Paths borrow
/// from the file's text: reading it allocates little.
#[derive(Debug, Default)]
struct StatCache<'t> {
    files: HashMap<Cow<'t, str>, StatEntry>,
}

const STAT_CACHE_HEADER: &str = "kiln-statcache v2";

impl<'t> StatCache<'t> {
    fn parse(path: &Path, text: &'t str) -> StatCache<'t> {
        let mut lines = text.lines();
        if lines.next() != Some(STAT_CACHE_HEADER) {
            return StatCache::default();
        }
        let mut files = HashMap::with_capacity(text.len() / 120);
        for line in lines {
            match Self::parse_line(line) {
                Some((rel, entry)) => {
                    files.insert(rel, entry);
                }
                None => {
                    tracing::debug!(path = %path.display(), "ignoring a damaged stat cache");
                    return StatCache::default();
                }
            }
        }
        StatCache { files }
    }

    fn parse_line(line: &'t str) -> Option<(Cow<'t, str>, StatEntry)> {
        let mut it = line.splitn(7, ' ');
        let mut hash = [0u8; 32];
        hex::decode_to_slice(it.next()?, &mut hash).ok()?;
        let stat = StatKey {
            size: it.next()?.parse().ok()?,
            mtime_ns: it.next()?.parse().ok()?,
            ctime_ns: it.next()?.parse().ok()?,
            ino: it.next()?.parse().ok()?,
            mode: it.next()?.parse().ok()?,
        };
        let rel = it.next()?;
        let rel = if rel.starts_with('"') {
            Cow::Owned(serde_json::from_str(rel).ok()?)
        } else {
            Cow::Borrowed(rel)
        };
        Some((rel, StatEntry { stat, hash }))
    }

    fn encode(&self) -> String {
        use std::fmt::Write;
        let mut out = String::with_capacity(64 + self.files.len() * 128);
        out.push_str(STAT_CACHE_HEADER);
        out.push('\n');
        let mut hex = [0u8; 64];
        for (rel, e) in &self.files {
            let s = &e.stat;
            let _ = hex::encode_to_slice(e.hash, &mut hex);
            let _ = write!(
                out,
                "{} {} {} {} {} {} ",
                std::str::from_utf8(&hex).unwrap_or_default(),
                s.size,
                s.mtime_ns,
                s.ctime_ns,
                s.ino,
                s.mode
            );
            if rel.contains(['\n', '\r', '\\', '"']) || rel.starts_with('"') {
                out.push_str(&serde_json::to_string(rel).unwrap_or_default());
            } else {
                out.push_str(rel);
            }
            out.push('\n');
        }
        out
    }

    fn write(&self, path: &Path) {
        write_cache_file(path, self.encode().as_bytes());
    }
}

/// Replaces `path` with `bytes` (temp file and rename; no fsync: a cache,
/// which a crash may leave damaged, read then as empty).
fn write_cache_file(path: &Path, bytes: &[u8]) {
    let r = kiln_fs::replace_file(path, bytes, kiln_fs::Durability::Atomic);
    if let Err(e) = r {
        tracing::warn!(path = %path.display(), error = %e, "could not write a cache file");
    }
}

const QUICK_DOMAIN: &[u8] = b"kiln.local.quick.v1\0";
const QUICK_HEADER: &str = "kiln-quick v1 ";

/// A digest of a selection's stat data: paths, types, modes, symlink
/// targets, device numbers, and for files the stat data the stat cache
/// trusts (size, times, inode, mode). Equal digests mean equal content
/// keys under the stat cache's own trust, without reading the stat cache
/// or any file: an unchanged large context is re-keyed by one pass over
/// its stat data.
pub(crate) fn quick_digest(entries: &[Entry], ignore_modes: bool) -> [u8; 32] {
    // Hashed in 64 KiB runs: many tiny updates are slower.
    let mut h = blake3::Hasher::new();
    let mut buf = Vec::with_capacity(1 << 16);
    buf.extend_from_slice(QUICK_DOMAIN);
    buf.push(u8::from(ignore_modes));
    for e in entries {
        if buf.len() > (1 << 16) - 4096 {
            h.update(&buf);
            buf.clear();
        }
        buf.extend_from_slice(&(e.rel.len() as u64).to_le_bytes());
        buf.extend_from_slice(e.rel.as_bytes());
        buf.push(e.kind.code());
        buf.extend_from_slice(&e.meta.key.mode.to_le_bytes());
        match e.kind {
            Kind::File => {
                let k = e.meta.key;
                buf.extend_from_slice(&k.size.to_le_bytes());
                buf.extend_from_slice(&k.mtime_ns.to_le_bytes());
                buf.extend_from_slice(&k.ctime_ns.to_le_bytes());
                buf.extend_from_slice(&k.ino.to_le_bytes());
            }
            Kind::Symlink => {
                let t = e.target.as_deref().unwrap_or(Path::new(""));
                let t = t.as_os_str().as_encoded_bytes();
                buf.extend_from_slice(&(t.len() as u64).to_le_bytes());
                buf.extend_from_slice(t);
            }
            Kind::Dir => {}
        }
    }
    h.update(&buf);
    *h.finalize().as_bytes()
}

/// The content key recorded at `path` for the quick digest `quick`, if
/// it is the one recorded.
pub(crate) fn recorded_quick_key(path: &Path, quick: &[u8; 32]) -> Option<[u8; 32]> {
    let text = fs::read_to_string(path).ok()?;
    let (q, k) = text
        .trim_end()
        .strip_prefix(QUICK_HEADER)?
        .split_once(' ')?;
    let mut recorded = [0u8; 32];
    hex::decode_to_slice(q, &mut recorded).ok()?;
    if &recorded != quick {
        return None;
    }
    let mut key = [0u8; 32];
    hex::decode_to_slice(k, &mut key).ok()?;
    Some(key)
}

/// Records that the quick digest `quick` gives the content key `key`.
pub(crate) fn record_quick_key(path: &Path, quick: &[u8; 32], key: &[u8; 32]) {
    let text = format!(
        "{QUICK_HEADER}{} {}\n",
        hex::encode(quick),
        hex::encode(key)
    );
    write_cache_file(path, text.as_bytes());
}
const LOCAL_KEY_DOMAIN: &[u8] = b"kiln.local.v1\0";

/// A selected entry's content hash (`None` for all but files).
pub(crate) type FileHash = Option<[u8; 32]>;

/// BLAKE3 of a file's contents.
fn hash_file(path: &Path) -> Result<[u8; 32]> {
    let f = fs::File::open(path).map_err(|err| Error::io("open", path, err))?;
    let mut fh = blake3::Hasher::new();
    fh.update_reader(f)
        .map_err(|err| Error::io("read", path, err))?;
    Ok(*fh.finalize().as_bytes())
}

/// The content key of a selection (blocking) and the content hashes of
/// its files (`None` for other entries), in `entries` order.
/// `stat_cache` is the persistent stat cache file for this directory.
pub(crate) fn content_key(
    root: &Path,
    entries: &[Entry],
    stat_cache: &Path,
    ignore_modes: bool,
) -> Result<([u8; 32], Vec<FileHash>)> {
    use rayon::prelude::*;

    let text = fs::read_to_string(stat_cache).unwrap_or_default();
    let mut cache = StatCache::parse(stat_cache, &text);
    // File hashes: from the stat cache when the stat data is unchanged,
    // else read (in parallel).
    let mut hashes: Vec<FileHash> = entries
        .iter()
        .map(|e| match e.kind {
            Kind::File => cache
                .files
                .get(e.rel.as_str())
                .filter(|c| c.stat == e.meta.key)
                .map(|c| c.hash),
            _ => None,
        })
        .collect();
    let stale: Vec<usize> = entries
        .iter()
        .zip(&hashes)
        .enumerate()
        .filter(|(_, (e, h))| e.kind == Kind::File && h.is_none())
        .map(|(i, _)| i)
        .collect();
    let fresh: Vec<[u8; 32]> = stale
        .par_iter()
        .map(|&i| hash_file(&root.join(entries[i].fs_rel())))
        .collect::<Result<_>>()?;
    for (&i, hash) in stale.iter().zip(fresh) {
        let e = &entries[i];
        hashes[i] = Some(hash);
        cache.files.insert(
            Cow::Owned(e.rel.clone()),
            StatEntry {
                stat: e.meta.key,
                hash,
            },
        );
    }

    let mut h = blake3::Hasher::new();
    h.update(LOCAL_KEY_DOMAIN);
    let mut hex = [0u8; 64];
    for (e, file_hash) in entries.iter().zip(&hashes) {
        h.update(&(e.rel.len() as u64).to_le_bytes());
        h.update(e.rel.as_bytes());
        h.update(&[e.kind.code()]);
        // Every mode is set by the consumer when `ignore_modes` (an octal
        // `--chmod`), so a source mode change cannot change the result.
        let mode = if ignore_modes { 0 } else { e.meta.perm() };
        h.update(&mode.to_le_bytes());
        h.update(&[u8::from(ignore_modes)]);
        match e.kind {
            Kind::Symlink => {
                let t = e.target.as_deref().unwrap_or(Path::new(""));
                let t = t.as_os_str().as_encoded_bytes();
                h.update(&(t.len() as u64).to_le_bytes());
                h.update(t);
            }
            Kind::File => {
                h.update(&e.meta.key.size.to_le_bytes());
                // As lowercase hex, as keys always had it (another form
                // would miss every context already cached).
                let _ = hex::encode_to_slice(file_hash.unwrap_or_default(), &mut hex);
                h.update(&hex);
            }
            Kind::Dir => {}
        }
    }
    tracing::debug!(root = %root.display(), entries = entries.len(), rehashed = stale.len(), "hashed local source");
    if !stale.is_empty() {
        // Entries this selection did not cover stay: several selections
        // of one directory share the cache. (So entries of deleted files
        // stay until the path is hashed again.)
        cache.write(stat_cache);
    }
    Ok((*h.finalize().as_bytes(), hashes))
}

/// How one selected entry is described in a selection record: what the
/// content key covers, as text (`f644:<hash>`, `d755`, `l777:<target>`).
fn describe(e: &Entry, hash: Option<&[u8; 32]>) -> String {
    let mode = e.meta.perm();
    match e.kind {
        Kind::Dir => format!("d{mode:o}"),
        Kind::File => format!(
            "f{mode:o}:{}",
            hex::encode(hash.copied().unwrap_or_default())
        ),
        Kind::Symlink => format!(
            "l{mode:o}:{}",
            e.target.as_deref().unwrap_or(Path::new("")).display()
        ),
    }
}

const SELECTION_HEADER: &str = "kiln-selection v1 ";

/// The content key recorded in a selection record, if readable.
fn recorded_key(path: &Path) -> Option<String> {
    use std::io::BufRead;
    let f = fs::File::open(path).ok()?;
    let mut line = String::new();
    io::BufReader::new(f).read_line(&mut line).ok()?;
    line.trim_end()
        .strip_prefix(SELECTION_HEADER)
        .map(str::to_owned)
}

/// Compares a selection with the one recorded at `record` (the previous
/// build's selection of the same source) and records the new one when its
/// key differs. Returns what changed, naming the first changed path:
/// `context: src/main.c changed` (or `added`, `removed`), with
/// `(and N more)` when more changed; `None` when the key is unchanged or
/// nothing was recorded before. Blocking; failures only cost the
/// explanation.
pub(crate) fn diff_selection(
    name: &str,
    record: &Path,
    key: &[u8; 32],
    entries: &[Entry],
    hashes: &[FileHash],
) -> Option<String> {
    let key_hex = hex::encode(key);
    let previous = recorded_key(record);
    if previous.as_deref() == Some(key_hex.as_str()) {
        return None;
    }
    let current: BTreeMap<&str, String> = entries
        .iter()
        .zip(hashes)
        .map(|(e, hash)| (e.rel.as_str(), describe(e, hash.as_ref())))
        .collect();
    let old: Option<BTreeMap<String, String>> = previous.and_then(|_| {
        let text = fs::read_to_string(record).ok()?;
        let body = text.split_once('\n')?.1;
        serde_json::from_str(body).ok()
    });
    let body = serde_json::to_string(&current).unwrap_or_default();
    let text = format!("{SELECTION_HEADER}{key_hex}\n{body}\n");
    if let Err(e) = crate::records::write_atomic(record, text.as_bytes()) {
        tracing::warn!(path = %record.display(), error = %e, "could not record the selection");
    }
    let old = old?;
    let mut changes = Vec::new();
    for (path, desc) in &current {
        match old.get(*path) {
            None => changes.push((*path, "added")),
            Some(o) if o != desc => changes.push((*path, "changed")),
            Some(_) => {}
        }
    }
    for path in old.keys() {
        if !current.contains_key(path.as_str()) {
            changes.push((path.as_str(), "removed"));
        }
    }
    changes.sort();
    let (first, verb) = changes.first()?;
    let mut detail = format!("{name}: {first} {verb}");
    if changes.len() > 1 {
        detail.push_str(&format!(" (and {} more)", changes.len() - 1));
    }
    Some(detail)
}

/// Copies the selected entries from `root` into `dest` (blocking).
pub(crate) fn copy_selection(root: &Path, entries: &[Entry], dest: &Path) -> Result<()> {
    let mut dirs = Vec::new();
    // Hard links in the context stay linked in the copy, as BuildKit's.
    let mut links: HashMap<(u64, u64), PathBuf> = HashMap::new();
    for e in entries {
        let src = root.join(e.fs_rel());
        let dst = dest.join(e.fs_rel());
        match e.kind {
            Kind::Dir => {
                fs::create_dir(&dst).map_err(|err| Error::io("create directory", &dst, err))?;
                dirs.push(e);
                continue;
            }
            Kind::File => {
                if let Some(group) = e.meta.link_group() {
                    if let Some(first) = links.get(&group)
                        && fs::hard_link(first, &dst).is_ok()
                    {
                        continue;
                    }
                    links.insert(group, dst.clone());
                }
                fs::copy(&src, &dst).map_err(|err| Error::io("copy", &src, err))?;
                // chown clears setuid and setgid: owner, then mode, then
                // times.
                crate::copy::set_owner_times(&dst, 0, 0, None)?;
                fs::set_permissions(&dst, fs::Permissions::from_mode(e.meta.perm()))
                    .map_err(|err| Error::io("set permissions of", &dst, err))?;
                crate::copy::set_times(&dst, e.meta.mtime())?;
                continue;
            }
            Kind::Symlink => {
                let t = e.target.as_deref().unwrap_or(Path::new(""));
                std::os::unix::fs::symlink(t, &dst)
                    .map_err(|err| Error::io("create symlink", &dst, err))?;
            }
        }
        crate::copy::set_owner_times(&dst, 0, 0, Some(e.meta.mtime()))?;
    }
    for e in dirs.iter().rev() {
        let dst = dest.join(e.fs_rel());
        fs::set_permissions(&dst, fs::Permissions::from_mode(e.meta.perm()))
            .map_err(|err| Error::io("set permissions of", &dst, err))?;
        crate::copy::set_owner_times(&dst, 0, 0, Some(e.meta.mtime()))?;
    }
    Ok(())
}

/// The exclude matcher for `patterns`, with Docker's `.dockerignore`
/// semantics: a path is excluded when it or a parent matches, a later
/// `!pattern` re-includes.
pub(crate) fn exclude_matcher(patterns: &[String]) -> std::result::Result<PathMatcher, String> {
    let m = kiln_patterns::PatternMatcher::new(patterns).map_err(|e| e.to_string())?;
    Ok(Box::new(move |path: &str| {
        m.matches_or_parent_matches(path).unwrap_or(false)
    }))
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
            let m = exclude_matcher(&exclude).unwrap();
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

    #[test]
    fn stat_cache_round_trips_and_is_reused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("ctx");
        for name in ["a", "sub/b c", "odd\nname", "q\"uote", "back\\slash"] {
            let p = root.join(name);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, name).unwrap();
        }
        let sel = Selection::new(&[".".to_owned()], &[], None, &[]);
        let entries = select(&root, &sel).unwrap();
        let sc = dir.path().join("statcache");
        let (k1, hashes) = content_key(&root, &entries, &sc, false).unwrap();
        let text = fs::read_to_string(&sc).unwrap();
        let cache = StatCache::parse(&sc, &text);
        let files: Vec<&Entry> = entries.iter().filter(|e| e.kind == Kind::File).collect();
        assert_eq!(cache.files.len(), files.len());
        for (e, hash) in entries.iter().zip(&hashes) {
            if e.kind == Kind::File {
                let c = &cache.files[e.rel.as_str()];
                assert_eq!(c.stat, e.meta.key, "{}", e.rel);
                assert_eq!(Some(c.hash), *hash);
                assert_eq!(c.hash, *blake3::hash(e.rel.as_bytes()).as_bytes());
            }
        }
        // Unchanged: nothing is rewritten, the key stays.
        let before = fs::metadata(&sc).unwrap().modified().unwrap();
        let (k2, _) = content_key(&root, &entries, &sc, false).unwrap();
        assert_eq!(k1, k2);
        assert_eq!(fs::metadata(&sc).unwrap().modified().unwrap(), before);
        // A damaged cache is an empty one.
        let damaged = "kiln-statcache v2\nnot a line\n";
        assert!(StatCache::parse(&sc, damaged).files.is_empty());
        fs::write(&sc, damaged).unwrap();
        assert_eq!(content_key(&root, &entries, &sc, false).unwrap().0, k1);
    }

    #[test]
    fn selection_diffs_name_the_first_change() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("ctx");
        let write = |p: &str, d: &str| {
            let p = root.join(p);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, d).unwrap();
        };
        write("a", "1");
        write("src/main.c", "1");
        let sc = dir.path().join("statcache");
        let record = dir.path().join("sel");
        let sel = Selection::new(&[".".to_owned()], &[], None, &[]);
        let diff = || {
            let entries = select(&root, &sel).unwrap();
            let (key, hashes) = content_key(&root, &entries, &sc, false).unwrap();
            diff_selection("context", &record, &key, &entries, &hashes)
        };
        assert_eq!(diff(), None, "nothing recorded yet");
        assert_eq!(diff(), None, "unchanged");
        write("src/main.c", "2");
        assert_eq!(diff().as_deref(), Some("context: src/main.c changed"));
        write("b", "new");
        fs::remove_file(root.join("a")).unwrap();
        assert_eq!(diff().as_deref(), Some("context: a removed (and 1 more)"));
        std::fs::set_permissions(root.join("b"), fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(diff().as_deref(), Some("context: b changed"));
    }
}
