//! # kiln-store
//!
//! The local store: content-addressed blobs (`blobs/sha256/<hex>`), image
//! records and tags, unpacked layer snapshots keyed by chain id, and
//! build-cache records.
//!
//! Owns: every byte kiln keeps on disk, its crash safety (temp file, digest
//! check, fsync, rename) and its concurrency safety (file locks).
//!
//! Must not depend on: the frontend, the solver, the runtime or the
//! registry.
//!
//! ## On-disk layout (format version 1)
//!
//! ```text
//! <root>/
//!   VERSION                  "1\n": the format version; Store::open refuses others
//!   blobs/sha256/<hex>       content-addressed blobs, read-only (0444), complete or absent
//!   leases/<pid>-<random>/   one per live kiln process (see the lease module)
//!     lock                     flock held while the process lives
//!     holds                    images, blobs and snapshots it uses
//!     ingest/                  its temporary files and directories being written:
//!       blob-XXXXXX              a blob being streamed in (renamed into blobs/ when verified)
//!       snapshot-XXXXXX/         a layer being unpacked (renamed into snapshots/ when done)
//!       removing-XXXXXX/         a snapshot being deleted
//!     tmp/                     its work directories and mounts
//!   images.json              image records and tags (see below)
//!   images.json.bak          the same, written after it (repairs a damaged images.json)
//!   snapshots/<chain-hex>/   one unpacked layer per chain id
//!     fs/                      the layer's files, an overlayfs lower directory
//!     snapshot.json            layer digest, diff id, compression, stats
//!   locks/
//!     images.lock              flock held while images.json is rewritten
//!     snapshot-<chain-hex>.lock  flock held while that snapshot is unpacked/removed
//!     gc.lock                  exclusive while deleting, shared while adding a hold
//! ```
//!
//! Everything in a lease is on the same filesystem as the rest, so
//! publishing is a `rename`. A killed process leaves at worst its lease;
//! the next [`Store::open`] removes it (unmounting what it left mounted).
//!
//! `images.json` is `{"version": 1, "images": [ImageRecord…]}`, sorted by
//! id. It is a single file rather than one file per image so that updates
//! touching several images (moving a tag) are one atomic rename; it is
//! rewritten under `locks/images.lock` (read-modify-write, temp file, fsync,
//! rename, directory fsync). Readers take no lock. Local stores hold at most
//! hundreds of images, so rewriting the whole file is cheap.
//!
//! Blob writes take no lock: content addressing makes them idempotent, and
//! the rename uses `RENAME_NOREPLACE`, so the first complete copy wins.
//!
//! Locks are `flock`s on freshly opened files (`std::fs::File::lock`): they
//! exclude each other across processes and across threads alike.
#![deny(clippy::print_stdout, clippy::print_stderr)]

mod blob;
mod check;
mod compression;
mod error;
mod extract;
mod gc;
mod image;
mod images;
mod import;
pub mod lease;
mod snapshot;
mod store;
mod verify;

pub use blob::BlobWriter;
pub use check::{BlobRole, CheckReport, Finding, Issue, STALE_AGE};
pub use compression::{Compression, decompress, sniff_compression};
pub use error::{Error, ExtractError, Result};
pub use extract::{ExtractMode, ExtractOptions, LayerStats, extract_layer, is_root};
pub use gc::{ImagesUsage, PruneScope, RemovedImage};
pub use image::{
    ContainerConfig, Empty, History, ImageConfig, ImageDocs, ImageError, MAX_DOCUMENT_SIZE, RootFs,
    chain_ids, media_type, parse_time,
};
pub use images::{INDEX_VERSION, ImageId, ImageRecord};
pub use import::ImportOptions;
pub use lease::{Hold, Holds, release_leases};
pub use snapshot::{Snapshot, SnapshotMeta};
pub use store::{FORMAT_VERSION, Store};
pub use verify::SnapshotVerdict;
