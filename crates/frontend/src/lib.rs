//! # kiln-frontend
//!
//! Everything kiln knows about Dockerfiles: the line-level parser
//! ([`parser`]), BuildKit-compatible shell-word expansion ([`shell`]),
//! typed instructions and their validation ([`instructions`]), stage and
//! variable resolution ([`stages`]) and the compilation of a build to a
//! graph ([`compile`]). `.dockerignore` files and patterns are
//! `kiln-patterns`'.
//!
//! Owns: turning Dockerfile bytes, build arguments and a target into a
//! resolved, validated description of stages and instructions.
//!
//! Must not depend on: the runtime, the store, the registry or the
//! exporter. The frontend never touches the filesystem beyond reading the
//! Dockerfile and ignore files it is handed.
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod chmod;
pub mod compile;
pub mod diagnostic;
pub mod directives;
pub mod instructions;
pub mod parser;
pub mod quote;
pub mod shell;
pub mod stages;
