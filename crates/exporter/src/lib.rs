//! # kiln-exporter
//!
//! Writes images out: into the local store, as an OCI layout, as a
//! docker-archive tarball, as a plain directory or tar, or to a registry
//! (through kiln-registry); and reads image archives back into the store.
//!
//! Owns: layer tarball creation (deterministic tar, compression) and the
//! manifest/config/index documents of exported images.
//!
//! Must not depend on: the frontend or the runtime.
//!
//! ## Image archives
//!
//! [`save`] writes images of the store as one tar stream, either a
//! docker-archive in the form Docker 25+ writes ([`SaveFormat::Docker`]:
//! `manifest.json`, `repositories` and a complete OCI layout) or a plain OCI
//! image layout ([`SaveFormat::Oci`]). [`load`] reads either form (and the
//! pre-25 docker-archive form), plain or gzip/zstd-compressed, back into
//! the store. Both stream: no layer is held in memory. See each function
//! for the layout decisions.
//!
//! ## Committing images
//!
//! [`commit_image`] turns uncompressed layer tars and an image config into
//! an image of the store: layers compressed (gzip by default, in parallel;
//! zstd; or none) and reused across commits, config and manifest (Docker
//! media types by default, as BuildKit's image exporter), image record and
//! tags. [`export_oci_tar`], [`export_docker_tar`], [`export_local_dir`]
//! and [`export_tar`] are the other export targets of a build. See the
//! [`image`] module for the decisions.
#![deny(clippy::print_stdout, clippy::print_stderr)]

mod compress;
mod error;
mod export;
pub mod image;
mod load;
mod progress;
mod save;
pub mod spec;
mod tarball;

pub use error::{Error, Result};
pub use export::{
    export_docker_tar, export_host_dir, export_local_dir, export_oci_tar, export_tar,
};
pub use image::{
    CommitOptions, CommitStats, CommittedImage, Compression, LayerInput, LayerSource, MediaTypes,
    commit_image,
};
pub use load::{LoadedImage, load, load_directory};
pub use progress::Progress;
pub use save::{ImageSelector, SaveFormat, SavedImage, save};
