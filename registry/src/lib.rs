//! # kiln-registry
//!
//! Talks to OCI distribution registries: pull, push, login, logout,
//! search, with Docker-compatible credentials and mirrors.
//!
//! Owns: HTTP transport, authentication, and the distribution API.
//!
//! Must not depend on: the frontend, the solver or the runtime.
#![deny(clippy::print_stdout, clippy::print_stderr)]
