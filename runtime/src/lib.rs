//! # kiln-runtime
//!
//! Runs processes inside images: every `RUN` step of a build and every
//! `kiln run`. Root filesystems are overlayfs mounts over the store's layer
//! snapshots; processes are described by an OCI runtime spec and run by an
//! OCI runtime.
//!
//! Owns: mounts, namespaces, the OCI runtime spec, container state.
//!
//! Must not depend on: the frontend, the solver or the registry.
#![deny(clippy::print_stdout, clippy::print_stderr)]
