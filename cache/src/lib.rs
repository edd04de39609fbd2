//! # kiln-cache
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
#![deny(clippy::print_stdout, clippy::print_stderr)]
