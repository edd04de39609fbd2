//! # kiln-testkit
//!
//! What kiln's tests share: a local registry process ([`registry`]), and
//! the probe of the machine (root,
//! busybox, runc, docker-registry, …) that the build scripts of the
//! packages with such tests turn into `cfg`s, so that a test whose
//! requirement is missing is reported as ignored with the reason:
//!
//! ```text
//! #[test]
//! #[cfg_attr(not(kiln_containers), ignore = "needs root and /bin/busybox")]
//! fn runs_a_container() { … }
//! ```
//!
//! A package opts in with a `build.rs` of one line,
//! `include!("../testkit/src/probe.rs"); fn main() { emit_cfgs() }`.
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod registry;

/// The probe (also `include!`d by build scripts, so std only).
pub mod probe {
    #![allow(clippy::print_stdout)]
    include!("probe.rs");
}
