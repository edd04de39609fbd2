//! The build cache's disk usage and garbage collection (`kiln builder du`,
//! `kiln builder prune`, and the automatic collection after a build).
//!
//! The build cache is the records in `build/cache/`, the snapshots and
//! blobs they name, and the cache mounts in `cache-mounts/`. A record
//! *owns* the top layer of its stack (the layer its step made): its
//! snapshot and, when written, its blob; that is the record's size.
//!
//! - Content any image of the store refers to (its layer blobs, the
//!   snapshots of its chain ids) is **in use**: it is never deleted. A
//!   record whose own snapshot an image uses is in use too: a default
//!   prune keeps it, `--all` drops the record (and its blob, which images
//!   do not share: they store compressed layers) but not the snapshot.
//! - Deleting records deletes the snapshots and blobs of their stacks
//!   that no remaining record and no image refers to. If an image cannot
//!   be read, no content at all is deleted (only records).
//! - Last use is a record file's modification time: set when written and
//!   on every cache hit. Pruning goes least recently used first.
//! - A collection holds `build/locks/gc.lock` exclusively; every worker
//!   holds it shared, so nothing a running build may use is deleted. With
//!   no build running, the per-key lock files are removed too.
//!
//! Remaining race: a `pull` that finds a snapshot or blob of a record
//! being pruned present (so does not write it) and records its image after
//! the collection read the image index may lose it; `system check`
//! reports such an image.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use kiln_oci::Digest;
use kiln_store::{Store, chain_ids};

use crate::error::{Error, Result};
use crate::locks;
use crate::records::Record;

/// What one build-cache entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// A cache record (one step's result).
    Record,
    /// A `RUN --mount=type=cache` directory.
    CacheMount,
}

/// One build-cache entry, as `builder du` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheEntry {
    /// The record's key (hex), or the cache mount's directory name.
    pub id: String,
    pub kind: EntryKind,
    /// The step that made it, when recorded; the mount's id.
    pub description: String,
    /// Bytes of what it owns (disk blocks).
    pub size: u64,
    /// Whether pruning it frees its content (false when an image uses it).
    pub reclaimable: bool,
    /// Whether its content is also another record's or an image's.
    pub shared: bool,
    pub last_used: SystemTime,
}

/// `builder du`: the entries, most recently used first, and totals.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CacheUsage {
    pub entries: Vec<CacheEntry>,
    /// Bytes of content shared between records or with images.
    pub shared: u64,
    /// Bytes of content only one record owns, and cache mounts.
    pub private: u64,
    /// Bytes no image uses.
    pub reclaimable: u64,
    /// Everything, each snapshot and blob counted once.
    pub total: u64,
}

/// What to prune.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PruneOptions {
    /// Also records in use by images (their content stays) and cache
    /// mounts; otherwise only records no image uses.
    pub all: bool,
    /// Only entries last used longer ago than this.
    pub until: Option<Duration>,
    /// Stop once the build cache takes at most this many bytes.
    pub keep_storage: Option<u64>,
    /// Wait for running builds; otherwise skip when any runs.
    pub wait: bool,
}

/// What a prune removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Ids of the removed entries, least recently used first.
    pub removed: Vec<String>,
    /// Bytes freed.
    pub reclaimed: u64,
    /// Bytes the build cache still takes, when the prune measured them
    /// (with `keep_storage`).
    pub kept: Option<u64>,
}

/// A snapshot or a blob.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Item {
    Snapshot(Digest),
    Blob(Digest),
}

struct Rec {
    key: String,
    path: PathBuf,
    /// The stack's items; the own ones (top layer) first.
    items: Vec<Item>,
    own: usize,
    description: String,
    last_used: SystemTime,
}

/// What the images of the store use.
struct ImageRefs {
    items: BTreeSet<Item>,
    /// Every image could be read.
    complete: bool,
}

fn build_dir(store: &Store) -> PathBuf {
    store.root().join("build")
}

fn read_records(store: &Store) -> Result<Vec<Rec>> {
    let dir = build_dir(store).join("cache");
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("read directory", &dir, e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("read directory", &dir, e))?;
        let name = entry.file_name();
        let Some(key) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
            continue;
        };
        if key.starts_with('.') {
            continue;
        }
        let path = entry.path();
        let last_used = entry
            .metadata()
            .and_then(|m| m.modified())
            .unwrap_or(SystemTime::UNIX_EPOCH);
        // An unreadable record is garbage: listed with nothing, pruned.
        let record = Record::read(&path).unwrap_or(None);
        let (mut items, mut own, mut description) = (Vec::new(), 0, String::new());
        if let Some(r) = record {
            description = r.description;
            if let Some(top) = r.layers.last() {
                items.push(Item::Snapshot(top.snapshot.clone()));
                if let Some(b) = &top.blob {
                    items.push(Item::Blob(b.digest.clone()));
                }
                own = items.len();
            }
            for l in r.layers.iter().rev().skip(1) {
                items.push(Item::Snapshot(l.snapshot.clone()));
                if let Some(b) = &l.blob {
                    items.push(Item::Blob(b.digest.clone()));
                }
            }
        }
        out.push(Rec {
            key: key.to_owned(),
            path,
            items,
            own,
            description,
            last_used,
        });
    }
    out.sort_by(|a, b| a.last_used.cmp(&b.last_used).then(a.key.cmp(&b.key)));
    Ok(out)
}

fn image_refs(store: &Store) -> Result<ImageRefs> {
    let mut refs = ImageRefs {
        items: BTreeSet::new(),
        complete: true,
    };
    for record in store.images()? {
        match store.image_docs(&record) {
            Ok(docs) => {
                refs.items.extend(docs.layers.into_iter().map(Item::Blob));
                refs.items.extend(
                    chain_ids(&docs.config.rootfs.diff_ids)
                        .into_iter()
                        .map(Item::Snapshot),
                );
            }
            Err(error) => {
                tracing::warn!(id = %record.id, %error, "cannot read image; the build cache's content is kept");
                refs.complete = false;
            }
        }
    }
    Ok(refs)
}

/// Disk usage of a tree (allocated blocks), not following symlinks.
pub(crate) fn dir_size(path: &Path) -> u64 {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return 0;
    };
    let mut total = meta.blocks() * 512;
    if meta.is_dir()
        && let Ok(entries) = fs::read_dir(path)
    {
        for e in entries.flatten() {
            total += dir_size(&e.path());
        }
    }
    total
}

/// Sizes of items, with a persistent memo for snapshots (immutable by
/// chain id): `build/snapshot-sizes.json`.
struct Sizes<'a> {
    store: &'a Store,
    memo: BTreeMap<String, u64>,
    dirty: bool,
    cache: HashMap<Item, u64>,
}

impl<'a> Sizes<'a> {
    fn memo_path(store: &Store) -> PathBuf {
        build_dir(store).join("snapshot-sizes.json")
    }

    fn new(store: &'a Store) -> Sizes<'a> {
        let memo = fs::read(Self::memo_path(store))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Sizes {
            store,
            memo,
            dirty: false,
            cache: HashMap::new(),
        }
    }

    fn of(&mut self, item: &Item) -> u64 {
        if let Some(s) = self.cache.get(item) {
            return *s;
        }
        let size = match item {
            Item::Blob(d) => self.store.blob_size(d).unwrap_or(0),
            Item::Snapshot(chain) => {
                let dir = self.store.snapshot_dir(chain);
                if !dir.is_dir() {
                    0
                } else if let Some(s) = self.memo.get(chain.hex()) {
                    *s
                } else {
                    let s = dir_size(&dir);
                    self.memo.insert(chain.hex().to_owned(), s);
                    self.dirty = true;
                    s
                }
            }
        };
        self.cache.insert(item.clone(), size);
        size
    }

    fn forget(&mut self, item: &Item) {
        if let Item::Snapshot(chain) = item
            && self.memo.remove(chain.hex()).is_some()
        {
            self.dirty = true;
        }
    }

    fn save(self) {
        if !self.dirty {
            return;
        }
        let path = Self::memo_path(self.store);
        if let Ok(bytes) = serde_json::to_vec(&self.memo)
            && let Err(e) = crate::records::write_atomic(&path, &bytes)
        {
            tracing::debug!(path = %path.display(), error = %e, "could not save snapshot sizes");
        }
    }
}

struct Mount {
    name: String,
    path: PathBuf,
    size: u64,
    last_used: SystemTime,
}

fn cache_mounts(store: &Store) -> Vec<Mount> {
    let dir = store.root().join("cache-mounts");
    let Ok(entries) = fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut out: Vec<Mount> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| Mount {
            name: e.file_name().to_string_lossy().into_owned(),
            path: e.path(),
            size: dir_size(&e.path()),
            last_used: e
                .metadata()
                .and_then(|m| m.modified())
                .unwrap_or(SystemTime::UNIX_EPOCH),
        })
        .collect();
    out.sort_by(|a, b| a.last_used.cmp(&b.last_used).then(a.name.cmp(&b.name)));
    out
}

/// The build cache's entries and totals (`builder du`). Reads only.
pub fn disk_usage(store: &Store) -> Result<CacheUsage> {
    let recs = read_records(store)?;
    let refs = image_refs(store)?;
    let mut sizes = Sizes::new(store);
    let mut owners: HashMap<&Item, usize> = HashMap::new();
    for r in &recs {
        for item in &r.items[..r.own] {
            *owners.entry(item).or_default() += 1;
        }
    }
    let mut usage = CacheUsage::default();
    for r in &recs {
        let own = &r.items[..r.own];
        let in_use = own.iter().any(|i| refs.items.contains(i));
        let shared = own.iter().any(|i| owners[i] > 1 || refs.items.contains(i));
        let size = own.iter().map(|i| sizes.of(i)).sum();
        usage.entries.push(CacheEntry {
            id: r.key.clone(),
            kind: EntryKind::Record,
            description: r.description.clone(),
            size,
            reclaimable: !in_use,
            shared,
            last_used: r.last_used,
        });
    }
    let mut items: Vec<&Item> = owners.keys().copied().collect();
    items.sort();
    for item in items {
        let size = sizes.of(item);
        usage.total += size;
        if owners[item] > 1 || refs.items.contains(item) {
            usage.shared += size;
        } else {
            usage.private += size;
        }
        if !refs.items.contains(item) {
            usage.reclaimable += size;
        }
    }
    for m in cache_mounts(store) {
        usage.total += m.size;
        usage.private += m.size;
        usage.reclaimable += m.size;
        usage.entries.push(CacheEntry {
            id: m.name.clone(),
            kind: EntryKind::CacheMount,
            description: format!("cache mount {}", m.name),
            size: m.size,
            reclaimable: true,
            shared: false,
            last_used: m.last_used,
        });
    }
    sizes.save();
    usage
        .entries
        .sort_by(|a, b| b.last_used.cmp(&a.last_used).then(a.id.cmp(&b.id)));
    Ok(usage)
}

/// Prunes the build cache. `None` when builds are running and
/// `options.wait` is false.
pub fn prune(store: &Store, options: &PruneOptions) -> Result<Option<PruneReport>> {
    let build = build_dir(store);
    let Some(_gc) = locks::gc_exclusive(&build, options.wait)? else {
        tracing::debug!("builds are running: build cache not pruned");
        return Ok(None);
    };
    let removed_locks = locks::remove_key_locks(&build);
    tracing::debug!(removed_locks, "removed key lock files");
    let now = SystemTime::now();
    let old_enough = |t: SystemTime| match options.until {
        Some(until) => now.duration_since(t).unwrap_or_default() >= until,
        None => true,
    };
    let recs = read_records(store)?;
    let refs = image_refs(store)?;
    let mut sizes = Sizes::new(store);

    // References of every item by the records' whole stacks.
    let mut count: HashMap<Item, usize> = HashMap::new();
    for r in &recs {
        for item in r.items.iter().collect::<BTreeSet<_>>() {
            *count.entry(item.clone()).or_default() += 1;
        }
    }
    let mounts = if options.all {
        cache_mounts(store)
    } else {
        Vec::new()
    };
    let mut total: u64 = 0;
    if options.keep_storage.is_some() {
        let mut items: Vec<&Item> = count.keys().collect();
        items.sort();
        for item in items {
            if !refs.items.contains(item) {
                total += sizes.of(item);
            }
        }
        total += mounts.iter().map(|m| m.size).sum::<u64>();
    }
    let over = |total: u64| options.keep_storage.is_none_or(|keep| total > keep);

    let mut report = PruneReport::default();
    for r in &recs {
        if !over(total) {
            break;
        }
        let in_use = r.items[..r.own].iter().any(|i| refs.items.contains(i));
        if (in_use && !options.all) || !old_enough(r.last_used) {
            continue;
        }
        match fs::remove_file(&r.path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("remove", &r.path, e)),
        }
        report.removed.push(r.key.clone());
        for item in r.items.iter().collect::<BTreeSet<_>>() {
            let n = count.get_mut(item).expect("counted above");
            *n -= 1;
            if *n > 0 || refs.items.contains(item) {
                continue;
            }
            let size = sizes.of(item);
            total = total.saturating_sub(size);
            if !refs.complete {
                continue;
            }
            let deleted = match item {
                Item::Snapshot(chain) => store.remove_snapshot(chain)?,
                Item::Blob(digest) => store.delete_blob(digest)?,
            };
            if deleted {
                report.reclaimed += size;
            }
            sizes.forget(item);
        }
    }
    for m in &mounts {
        if !over(total) {
            break;
        }
        if !old_enough(m.last_used) {
            continue;
        }
        fs::remove_dir_all(&m.path).map_err(|e| Error::io("remove", &m.path, e))?;
        report.removed.push(m.name.clone());
        report.reclaimed += m.size;
        total = total.saturating_sub(m.size);
    }
    if options.all && options.until.is_none() && options.keep_storage.is_none() {
        // The mounts' lock files go with them (no build holds one).
        let dir = store.root().join("cache-mounts");
        if let Ok(entries) = fs::read_dir(&dir) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().ends_with(".lock") {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
    }
    sizes.save();
    if options.keep_storage.is_some() {
        report.kept = Some(total);
    }
    tracing::info!(
        removed = report.removed.len(),
        reclaimed = report.reclaimed,
        "pruned the build cache"
    );
    Ok(Some(report))
}

/// The most the automatic collection lets the build cache take by default.
pub const DEFAULT_GC_MAX: u64 = 20_000_000_000;

/// The automatic collection's limit: `KILN_GC_KEEP_STORAGE` (bytes) when
/// set, else 10% of the store's filesystem or 20 GB, whichever is smaller.
pub fn auto_gc_limit(store: &Store) -> u64 {
    if let Some(v) = std::env::var_os("KILN_GC_KEEP_STORAGE")
        && let Some(n) = v.to_str().and_then(|s| s.trim().parse::<u64>().ok())
    {
        return n;
    }
    match rustix::fs::statvfs(store.root()) {
        Ok(st) => (st.f_blocks.saturating_mul(st.f_frsize) / 10).min(DEFAULT_GC_MAX),
        Err(_) => DEFAULT_GC_MAX,
    }
}

/// How often the automatic collection measures a build cache that was
/// well under its limit at the last measure.
pub const AUTO_GC_INTERVAL: Duration = Duration::from_secs(60);

/// The automatic collection after a build: prunes least recently used
/// records that no image uses until the build cache is under
/// [`auto_gc_limit`]. Skipped (`None`) while other builds run, and, as
/// BuildKit's periodic collection, when the last measure was less than
/// [`AUTO_GC_INTERVAL`] ago and found the cache under half the limit
/// (measuring reads every record: milliseconds per build for a large
/// cache).
pub fn auto_prune(store: &Store) -> Result<Option<PruneReport>> {
    let limit = auto_gc_limit(store);
    let state = build_dir(store).join("gc-state");
    let now = SystemTime::now();
    if let Some((at, kept)) = read_gc_state(&state)
        && now.duration_since(at).is_ok_and(|d| d < AUTO_GC_INTERVAL)
        && kept < limit / 2
    {
        tracing::debug!(kept, limit, "build cache measured recently: not pruned");
        return Ok(None);
    }
    let report = prune(
        store,
        &PruneOptions {
            all: false,
            until: None,
            keep_storage: Some(limit),
            wait: false,
        },
    )?;
    if let Some(kept) = report.as_ref().and_then(|r| r.kept) {
        let secs = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        // Only a hint: a lost write means one more measure.
        let hint = format!("{secs} {kept}\n");
        let _ = kiln_fs::replace_file(&state, hint.as_bytes(), kiln_fs::Durability::Atomic);
    }
    Ok(report)
}

/// `(when, bytes kept)` of the last automatic measure.
fn read_gc_state(path: &Path) -> Option<(SystemTime, u64)> {
    let text = fs::read_to_string(path).ok()?;
    let (secs, kept) = text.trim().split_once(' ')?;
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(secs.parse().ok()?);
    Some((at, kept.parse().ok()?))
}
