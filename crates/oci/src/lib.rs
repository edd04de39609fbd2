//! # kiln-oci
//!
//! The OCI vocabulary every other kiln crate speaks: content digests
//! ([`Digest`]), image references with Docker's normalisation
//! ([`reference`](mod@reference)), and platforms.
//!
//! Owns: parsing and validation of these values, so that nothing else in
//! kiln handles a digest or a reference as a raw string.
//!
//! Must not depend on: any other kiln crate, any I/O, any async runtime.
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod config;
pub mod digest;
pub mod nullable;
pub mod platform;
pub mod reference;
pub mod validate;

pub use digest::{Digest, DigestError};
pub use platform::Platform;
pub use reference::{Reference, ReferenceError};
