//! Leases: what each running kiln process is in the middle of, so that the
//! next kiln can mend what a killed one left, and so that deletions never
//! take content a running process uses.
//!
//! Every process that opens a store gets one lease directory:
//!
//! ```text
//! <root>/leases/<pid>-<random>/
//!   lock     flock held by the owner for as long as it lives
//!   owner    "<pid> <command line>" (for people reading the directory)
//!   ingest/  the owner's temporary files: blobs being written, layers
//!            being unpacked, snapshots being removed
//!   tmp/     the owner's work directories and mounts (build steps)
//!   holds    what the owner uses: "image|blob|chain <digest>" lines
//! ```
//!
//! Liveness is the `flock`: the kernel releases it when the owner dies,
//! whatever kills it, and a reused pid cannot hold it. A lease is created
//! as `.new-…` with its lock already held and renamed into place, so no
//! other process ever sees an unlocked live lease.
//!
//! [`Store::open`] reaps the leases of dead owners: it unmounts whatever is
//! still mounted below the lease (deepest first) and removes the directory,
//! which drops every partial download, unpack and work directory at once.
//! A process that ends normally releases its own lease
//! ([`release_leases`]).
//!
//! Holds are read by deleters (`rmi`, `image prune`, `system check
//! --repair`) under an exclusive `locks/gc.lock`; [`Store::hold`] appends
//! under the same lock shared. A holder adds its hold first and looks for
//! the content after, so either the deleter sees the hold, or the holder
//! sees that the content is gone.

use std::collections::{BTreeSet, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use kiln_oci::Digest;

use crate::blob::remove_dir_all_writable;
use crate::error::{Error, Result};
use crate::images::ImageId;
use crate::store::{LockGuard, Store};

pub(crate) const LEASES_DIR: &str = "leases";
const LOCK_FILE: &str = "lock";
const OWNER_FILE: &str = "owner";
const HOLDS_FILE: &str = "holds";
const INGEST: &str = "ingest";
const TMP: &str = "tmp";
const NEW_PREFIX: &str = ".new-";
const GC_LOCK: &str = "gc.lock";

/// Something a process keeps from deletion while it lives.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Hold {
    /// An image record and everything it refers to.
    Image(ImageId),
    /// One blob (a layer, config or manifest being written or read).
    Blob(Digest),
    /// One snapshot, by chain id.
    Chain(Digest),
}

impl Hold {
    fn line(&self) -> String {
        match self {
            Hold::Image(id) => format!("image {}", id.digest()),
            Hold::Blob(d) => format!("blob {d}"),
            Hold::Chain(d) => format!("chain {d}"),
        }
    }

    fn parse(line: &str) -> Option<Hold> {
        let (kind, digest) = line.split_once(' ')?;
        let digest: Digest = digest.trim().parse().ok()?;
        match kind {
            "image" => Some(Hold::Image(ImageId::from_config(digest))),
            "blob" => Some(Hold::Blob(digest)),
            "chain" => Some(Hold::Chain(digest)),
            _ => None,
        }
    }
}

/// Everything the live processes of a store hold.
#[derive(Clone, Debug, Default)]
pub struct Holds {
    pub images: BTreeSet<ImageId>,
    pub blobs: BTreeSet<Digest>,
    pub chains: BTreeSet<Digest>,
    /// Pids of the holders of each image (for messages).
    pub image_holders: HashMap<ImageId, Vec<u32>>,
}

impl Holds {
    fn add(&mut self, hold: Hold, pid: Option<u32>) {
        match hold {
            Hold::Image(id) => {
                if let Some(pid) = pid {
                    self.image_holders.entry(id.clone()).or_default().push(pid);
                }
                self.images.insert(id);
            }
            Hold::Blob(d) => {
                self.blobs.insert(d);
            }
            Hold::Chain(d) => {
                self.chains.insert(d);
            }
        }
    }
}

/// This process's lease on one store.
#[derive(Debug)]
pub(crate) struct Lease {
    dir: PathBuf,
    // Held for the life of the process: the lease is live while it is.
    _lock: File,
    holds: Mutex<(Option<File>, BTreeSet<Hold>)>,
    /// Blobs this process added to the store, in order.
    created: Mutex<Vec<Digest>>,
}

impl Lease {
    fn create(leases: &Path) -> Result<Lease> {
        let pid = std::process::id();
        let staging = tempfile::Builder::new()
            .prefix(&format!("{NEW_PREFIX}{pid}-"))
            .tempdir_in(leases)
            .map_err(|e| Error::io("create directory in", leases, e))?;
        let lock_path = staging.path().join(LOCK_FILE);
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&lock_path)
            .map_err(|e| Error::io("create", &lock_path, e))?;
        lock.lock().map_err(|e| Error::io("lock", &lock_path, e))?;
        let command: Vec<String> = std::env::args().take(4).collect();
        let owner = staging.path().join(OWNER_FILE);
        fs::write(&owner, format!("{pid} {}\n", command.join(" ")))
            .map_err(|e| Error::io("write", &owner, e))?;
        for sub in [INGEST, TMP] {
            let d = staging.path().join(sub);
            fs::create_dir(&d).map_err(|e| Error::io("create directory", &d, e))?;
        }
        let name = staging
            .path()
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix(NEW_PREFIX))
            .map(str::to_owned)
            .unwrap_or_else(|| pid.to_string());
        let dir = leases.join(name);
        let staged = staging.keep();
        fs::rename(&staged, &dir).map_err(|e| Error::io("rename into place", &dir, e))?;
        tracing::debug!(lease = %dir.display(), "lease taken");
        Ok(Lease {
            dir,
            _lock: lock,
            holds: Mutex::new((None, BTreeSet::new())),
            created: Mutex::new(Vec::new()),
        })
    }
}

impl Lease {
    pub(crate) fn ingest_dir(&self) -> PathBuf {
        self.dir.join(INGEST)
    }
}

/// The leases this process holds, by store root.
fn leases() -> &'static Mutex<HashMap<PathBuf, Arc<Lease>>> {
    static LEASES: OnceLock<Mutex<HashMap<PathBuf, Arc<Lease>>>> = OnceLock::new();
    LEASES.get_or_init(Default::default)
}

/// Releases every lease of this process: unmounts what is mounted below
/// them and removes their directories (temporary files included). Call it
/// when the process is about to exit, normally or on a signal. The leases
/// stay released: writers still running in other threads fail instead of
/// taking a new lease.
pub fn release_leases() {
    let taken: Vec<Arc<Lease>> = match leases().lock() {
        Ok(map) => map.values().cloned().collect(),
        Err(_) => return,
    };
    for lease in taken {
        // A writer in another thread may add a file while the directory is
        // being removed: try again.
        let mut result = Ok(());
        for _ in 0..3 {
            result = remove_lease_dir(&lease.dir);
            if result.is_ok() {
                break;
            }
        }
        if let Err(e) = result {
            tracing::warn!(lease = %lease.dir.display(), error = %e, "failed to remove lease");
        }
    }
}

/// Unmounts everything mounted at or below `dir` (deepest first, lazily)
/// and removes it.
fn remove_lease_dir(dir: &Path) -> io::Result<()> {
    for mount in mounts_below(dir) {
        if let Err(e) = rustix::mount::unmount(&mount, rustix::mount::UnmountFlags::DETACH) {
            tracing::warn!(mount = %mount.display(), error = %e, "failed to unmount");
        }
    }
    match remove_dir_all_writable(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Mount points at or below `dir` in this mount namespace, deepest first.
pub(crate) fn mounts_below(dir: &Path) -> Vec<PathBuf> {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mountinfo)
        .map(PathBuf::from)
        .filter(|p| p.starts_with(dir))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found.dedup();
    found
}

/// Whether a mount of this namespace uses `dir` (as its mount point, or
/// as an overlay layer in its options).
pub(crate) fn mount_uses(dir: &Path) -> bool {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let Some(needle) = dir.to_str() else {
        return false;
    };
    info.lines().any(|l| {
        l.split(' ')
            .map(unescape_mountinfo)
            .any(|field| field.split([',', ':', '=']).any(|part| part == needle))
    })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let v = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What [`Store::reap_leases`] found of one dead process.
#[derive(Clone, Debug)]
pub struct ReapedLease {
    pub dir: PathBuf,
    /// Bytes its directory held.
    pub bytes: u64,
}

/// A lease directory of another process, with whether its owner lives.
#[derive(Clone, Debug)]
pub struct LeaseInfo {
    pub dir: PathBuf,
    pub pid: Option<u32>,
    pub live: bool,
    /// This process's own lease.
    pub own: bool,
    pub bytes: u64,
}

impl Store {
    pub(crate) fn leases_dir(&self) -> PathBuf {
        self.root().join(LEASES_DIR)
    }

    /// This process's lease on the store, taken on first use.
    pub(crate) fn lease(&self) -> Result<Arc<Lease>> {
        let mut map = leases().lock().map_err(|_| {
            Error::io(
                "lock",
                self.root(),
                io::Error::other("lease table poisoned"),
            )
        })?;
        if let Some(l) = map.get(self.root()) {
            return Ok(l.clone());
        }
        let lease = Arc::new(Lease::create(&self.leases_dir())?);
        map.insert(self.root().to_owned(), lease.clone());
        Ok(lease)
    }

    /// This process's directory for work directories and mounts: removed,
    /// with everything mounted below it, when the process releases its
    /// lease or by the next kiln after the process died.
    pub fn temp_dir(&self) -> Result<PathBuf> {
        Ok(self.lease()?.dir.join(TMP))
    }

    /// Records that this process uses `holds`: until it ends, deleting an
    /// image it holds fails and deletions keep held blobs and snapshots.
    /// Look the content up after holding it: it may have gone just before.
    pub fn hold(&self, holds: impl IntoIterator<Item = Hold>) -> Result<()> {
        let lease = self.lease()?;
        let mut state = lease
            .holds
            .lock()
            .map_err(|_| Error::io("lock", &lease.dir, io::Error::other("holds poisoned")))?;
        let new: Vec<Hold> = holds.into_iter().filter(|h| !state.1.contains(h)).collect();
        if new.is_empty() {
            return Ok(());
        }
        let _gc = LockGuard::shared(self.locks_dir().join(GC_LOCK))?;
        let path = lease.dir.join(HOLDS_FILE);
        if state.0.is_none() {
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| Error::io("open", &path, e))?;
            state.0 = Some(f);
        }
        let mut text = String::new();
        for h in &new {
            text.push_str(&h.line());
            text.push('\n');
        }
        if let Some(f) = state.0.as_mut() {
            f.write_all(text.as_bytes())
                .map_err(|e| Error::io("write", &path, e))?;
        }
        state.1.extend(new);
        Ok(())
    }

    /// Holds image `id` and returns its record, or `None` when it was
    /// deleted before the hold took effect.
    pub fn hold_image(&self, id: &ImageId) -> Result<Option<crate::ImageRecord>> {
        self.hold([Hold::Image(id.clone())])?;
        match self.image(id) {
            Ok(record) => Ok(Some(record)),
            Err(Error::ImageIdNotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// [`Store::resolve`], holding the image found (see [`Store::hold`]),
    /// so that no `rmi` or prune deletes it while this process lives.
    pub fn resolve_held(&self, query: &str) -> Result<crate::ImageRecord> {
        for _ in 0..3 {
            let record = self.resolve(query)?;
            if let Some(record) = self.hold_image(&record.id)? {
                return Ok(record);
            }
        }
        self.resolve(query)
    }

    /// Records that this process added blob `digest` to the store.
    pub(crate) fn note_created(&self, digest: &Digest) {
        if let Ok(lease) = self.lease()
            && let Ok(mut created) = lease.created.lock()
        {
            created.push(digest.clone());
        }
    }

    /// A mark for [`Store::discard_created_since`]: how many blobs this
    /// process has added so far.
    pub fn created_mark(&self) -> usize {
        self.lease()
            .ok()
            .and_then(|l| l.created.lock().ok().map(|c| c.len()))
            .unwrap_or(0)
    }

    /// Deletes the blobs this process added since `mark` that no image
    /// refers to and no other live process holds: what a failed (or
    /// junk-carrying) load or pull stored. Returns how many were deleted.
    /// Do not call it while this process is writing images elsewhere
    /// whose records are not written yet.
    pub fn discard_created_since(&self, mark: usize) -> Result<usize> {
        let lease = self.lease()?;
        let candidates: Vec<Digest> = match lease.created.lock() {
            Ok(mut created) if created.len() > mark => created.drain(mark..).collect(),
            _ => return Ok(0),
        };
        let _gc = self.gc_exclusive()?;
        let others = self.holds_of(false)?;
        let refs = self.references(&self.images()?);
        if !refs.complete {
            return Ok(0);
        }
        let mut deleted = 0;
        for digest in candidates {
            if refs.blobs.contains(&digest) || others.blobs.contains(&digest) {
                continue;
            }
            if self.delete_blob(&digest)? {
                deleted += 1;
            }
        }
        tracing::debug!(deleted, "discarded blobs no image refers to");
        Ok(deleted)
    }

    /// Takes the deleters' lock: while it is held, no process adds a hold.
    pub(crate) fn gc_exclusive(&self) -> Result<LockGuard> {
        LockGuard::exclusive(self.locks_dir().join(GC_LOCK))
    }

    /// What the live processes hold, this one included or not.
    pub fn holds_of(&self, include_own: bool) -> Result<Holds> {
        let own = self.lease()?.dir.clone();
        let mut holds = Holds::default();
        for info in self.list_leases()? {
            if !info.live || (!include_own && info.dir == own) {
                continue;
            }
            let path = info.dir.join(HOLDS_FILE);
            let text = match fs::read_to_string(&path) {
                Ok(t) => t,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io("read", path, e)),
            };
            for hold in text.lines().filter_map(Hold::parse) {
                holds.add(hold, info.pid);
            }
        }
        Ok(holds)
    }

    /// Every lease directory with whether its owner is alive; this
    /// process's own lease counts as live.
    pub fn list_leases(&self) -> Result<Vec<LeaseInfo>> {
        let dir = self.leases_dir();
        let own = leases()
            .lock()
            .ok()
            .and_then(|m| m.get(self.root()).map(|l| l.dir.clone()));
        let mut out = Vec::new();
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(Error::io("read", &dir, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("read", &dir, e))?;
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            let pid = name
                .strip_prefix(NEW_PREFIX)
                .unwrap_or(&name)
                .split('-')
                .next()
                .and_then(|p| p.parse().ok());
            let is_own = own.as_deref() == Some(path.as_path());
            let live = is_own || owner_lives(&path);
            out.push(LeaseInfo {
                own: is_own,
                bytes: if live { 0 } else { tree_bytes(&path) },
                dir: path,
                pid,
                live,
            });
        }
        out.sort_by(|a, b| a.dir.cmp(&b.dir));
        Ok(out)
    }

    /// Removes the leases of dead processes: unmounts what they left
    /// mounted and deletes their temporary files. [`Store::open`] calls it.
    pub fn reap_leases(&self) -> Result<Vec<ReapedLease>> {
        let mut reaped = Vec::new();
        for info in self.list_leases()? {
            if info.live {
                continue;
            }
            // Keep the dead owner's lock while removing, so that two reapers
            // do not race each other (the loser finds nothing left).
            let lock = OpenOptions::new()
                .read(true)
                .write(true)
                .open(info.dir.join(LOCK_FILE));
            let guard = match lock {
                Ok(f) => match f.try_lock() {
                    Ok(()) => Some(f),
                    Err(_) => continue,
                },
                Err(_) => None,
            };
            tracing::info!(lease = %info.dir.display(), bytes = info.bytes, "removing what a dead kiln process left");
            remove_lease_dir(&info.dir).map_err(|e| Error::io("remove", &info.dir, e))?;
            drop(guard);
            reaped.push(ReapedLease {
                dir: info.dir,
                bytes: info.bytes,
            });
        }
        Ok(reaped)
    }

    /// Bytes held in the temporary files of other processes (their lease
    /// directories) and of the pre-lease `ingest/` directory.
    pub fn temporary_usage(&self) -> Result<u64> {
        let mut total = tree_bytes(&self.root().join(crate::store::INGEST_DIR));
        for info in self.list_leases()?.into_iter().filter(|l| !l.own) {
            total += if info.live {
                tree_bytes(&info.dir)
            } else {
                info.bytes
            };
        }
        Ok(total)
    }
}

/// Whether the process that made the lease at `dir` still holds its lock.
/// A lease still being set up (`.new-<pid>-…`, renamed into place once its
/// lock is held) counts as live for a minute while that pid runs, whatever
/// its lock file says.
fn owner_lives(dir: &Path) -> bool {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if let Some(rest) = name.strip_prefix(NEW_PREFIX) {
        // Being set up: its lock may not be taken yet. The pid in the name
        // tells whether its maker still runs.
        let pid_runs = rest
            .split('-')
            .next()
            .and_then(|p| p.parse::<u32>().ok())
            .is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
        if !pid_runs {
            return false;
        }
        if fresh(dir) {
            return true;
        }
    }
    let file = match OpenOptions::new()
        .read(true)
        .write(true)
        .open(dir.join(LOCK_FILE))
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return false,
        Err(_) => return true,
    };
    match file.try_lock() {
        Ok(()) => {
            let _ = file.unlock();
            false
        }
        Err(_) => true,
    }
}

/// Made within the last minute (a lease being set up right now).
fn fresh(dir: &Path) -> bool {
    fs::symlink_metadata(dir)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_none_or(|age| age.as_secs() < 60)
}

/// Bytes allocated to the files below `dir` (not following symlinks, not
/// crossing into mounts).
pub(crate) fn tree_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(top) = fs::symlink_metadata(dir) else {
        return 0;
    };
    let dev = top.dev();
    let mut total = 0;
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.dev() != dev {
                continue;
            }
            total += meta.blocks() * 512;
            if meta.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hold_lines_round_trip() {
        let d: Digest = format!("sha256:{}", "a".repeat(64)).parse().unwrap();
        for h in [
            Hold::Image(ImageId::from_config(d.clone())),
            Hold::Blob(d.clone()),
            Hold::Chain(d.clone()),
        ] {
            assert_eq!(Hold::parse(&h.line()), Some(h));
        }
        assert_eq!(Hold::parse("bogus"), None);
    }

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mountinfo(r"/a\040b"), "/a b");
        assert_eq!(unescape_mountinfo(r"/a\\"), r"/a\\");
    }
}
