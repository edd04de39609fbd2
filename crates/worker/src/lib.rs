//! # kiln-worker
//!
//! The build worker: executes the solver's ops ([`kiln_solver::Op`]) on
//! the local store. [`Worker`] implements [`kiln_solver::Executor`] with
//! [`FsRef`] outputs, so `Solver::new(Arc::new(worker)).solve(…)` builds a
//! graph.
//!
//! Owns: op semantics (image, local, HTTP and git sources; exec with its
//! mounts; file actions with BuildKit's copy rules; merge and diff), layer
//! commits into the store, and persistent build-cache records.
//!
//! Must not depend on: the frontend or the CLI. Exclude patterns are
//! matched with `kiln-patterns`, the one `.dockerignore` matcher.
//!
//! ## Results
//!
//! A vertex's result is an immutable [`FsRef`]: a stack of [`Layer`]s,
//! base first; the empty stack is scratch. Each layer has its diff id, its
//! snapshot directory in the store (`snapshots/<chain-id>/fs`, an
//! overlayfs lower directory with overlay whiteouts) and, for layers that
//! may be exported, its blob (an uncompressed layer tar). Exec and file
//! ops commit their overlay upper directory as the new layer: the diff is
//! written as a blob and the directory itself is renamed into the store,
//! never re-extracted. An op that changes nothing yields a layer marked
//! [`Layer::empty`]; the exporter decides whether to keep it.
//!
//! ## On-disk layout
//!
//! ```text
//! <root>/
//!   snapshots/<chain-hex>/     layer snapshots (kiln-store's layout)
//!   blobs/sha256/<hex>         layer tars of exec/file results
//!   build/
//!     cache/<key-hex>.json     cache records: key → layer stack (mtime = last use)
//!     statcache-<hash>.json    per local directory: path → stat → content hash (text)
//!     statcache-<hash>.sel-<sel>  the previous build's selection (per-path
//!                              descriptions), to name what changed
//!     snapshot-sizes.json      memo of snapshot sizes for `builder du`/GC
//!     locks/gc.lock            shared by every worker, exclusive for GC
//!     locks/<key-hex>.lock     held from a miss until its record is written
//!     runtime/                 container state (kiln-runtime)
//!   cache-mounts/<id>          RUN --mount=type=cache directories
//!   leases/<process>/tmp/      this process's overlay work directories and views
//! ```
//!
//! ## Cache keys and records
//!
//! Keys are [`kiln_solver::CacheKey::derive`] (op digest and input keys)
//! except for:
//!
//! | source | key |
//! |---|---|
//! | `Source::Local` | content: BLAKE3 over the selected entries in path order: relative path, type, permission bits (with setuid/setgid/sticky), symlink target, file size and BLAKE3 of the content. Never mtimes, owners or inode numbers, and not the selection parameters themselves: two selections of the same content share a key. |
//! | `Source::Image` | the op digest plus the manifest digest the reference resolves to in the store, so a re-tagged image yields a new key. |
//!
//! Content hashes of local files are reused through a persistent stat
//! cache (`build/statcache-<hash of the directory path>.json`): a file whose
//! size, mtime, ctime, inode and mode are unchanged is not read again. So
//! an unchanged context is re-keyed without reading file contents, and
//! touching a file (new mtime, same bytes) re-reads that file but keeps
//! the key.
//!
//! Records (`build/cache/<key-hex>.json`, written atomically) name the
//! resulting layer stack: diff ids, snapshot chain ids, blobs. A lookup
//! hits only while every snapshot and blob a record names is still in the
//! store, so rebuilds are cached across processes and a pruned store
//! degrades to misses. A hit sets the record's mtime (its last use).
//!
//! ## Concurrency
//!
//! In one process the solver evaluates a digest once. Across processes
//! (and across vertices of one build that share a key), a miss takes the
//! key's lock (`build/locks/<key-hex>.lock`, an `flock`), looks the record
//! up again, and holds the lock until the result is recorded or the
//! evaluation ends ([`kiln_solver::Executor::release`]): of two builds
//! missing one key at once, one computes and the other waits and hits.
//!
//! ## Why a step ran
//!
//! Lookups answer a [`kiln_solver::MissReason`]: `no record`; for a local
//! source whose key changed, what changed, found by comparing the
//! selection with the previous build's (`context: src/main.c changed`,
//! `added`, `removed`, with `(and N more)`); for a step whose input's key
//! changed that way, `InputChanged { input, detail }` with the same
//! detail; `no-cache` comes from the solver.
//!
//! ## Garbage collection
//!
//! [`gc`]: disk usage, `builder prune` and the automatic collection after
//! a build; it never deletes what an image uses or a running worker may
//! use.
//!
//! ## Not yet
//!
//! - extended attributes are not copied by COPY (file capabilities are
//!   lost);
//! - ADD unpacks plain, gzip and zstd archives; xz and bzip2 archives are
//!   copied as files;
//! - HTTP sources are keyed by URL only (no ETag / Last-Modified checks)
//!   and the file's mtime is the download time;
//! - `RUN --security=insecure` runs with the default sandbox.
#![deny(clippy::print_stdout, clippy::print_stderr)]

mod chmod;
mod copy;
mod error;
mod exec;
mod fileop;
mod fsref;
pub mod gc;
mod glob;
mod local;
mod locks;
mod owner;
mod paths;
mod records;
mod snapshot;
mod sources;
mod view;
mod worker;

use std::sync::Arc;

pub use error::{Error, Result};
pub use fsref::{FsRef, Layer, LayerBlob};
pub use locks::LockFile;
pub use snapshot::layer_blob;
pub use worker::{Worker, WorkerConfig, reap_stale};

/// Decides whether a relative, slash-separated path (`src/main.rs`) is
/// excluded.
pub type PathMatcher = Box<dyn Fn(&str) -> bool + Send + Sync>;

/// Builds a [`PathMatcher`] from exclude patterns with `.dockerignore`
/// semantics (a pattern matching a directory excludes its contents; `!`
/// re-includes; the last match wins). The error is the reason a pattern is
/// invalid.
pub type MatcherFactory = Arc<dyn Fn(&[String]) -> Result<PathMatcher, String> + Send + Sync>;
