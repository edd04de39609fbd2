//! # kiln-exporter
//!
//! Writes images out: into the local store, as an OCI layout, as a
//! docker-archive tarball, as a plain directory or tar, or to a registry
//! (through kiln-registry).
//!
//! Owns: layer tarball creation (deterministic tar, compression) and the
//! manifest/config/index documents of exported images.
//!
//! Must not depend on: the frontend or the runtime.
#![deny(clippy::print_stdout, clippy::print_stderr)]
