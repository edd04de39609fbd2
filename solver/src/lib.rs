//! # kiln-solver
//!
//! The build graph and its scheduler: an LLB-like DAG of ops (source, exec,
//! file, merge, diff), each vertex identified by the digest of its
//! definition, solved in parallel with content-addressed cache keys.
//!
//! Owns: the op graph, its canonical encoding, cache-key computation and
//! the scheduler, plus the typed progress-event stream.
//!
//! Must not depend on: the Dockerfile frontend, the runtime or any
//! registry. Ops are executed through a trait the caller provides, so
//! tests inject fake ops.
#![deny(clippy::print_stdout, clippy::print_stderr)]
