//! # kiln-fs
//!
//! File-system primitives every kiln crate that writes files shares:
//!
//! - [`AtomicFile`]: a file that replaces its destination only when
//!   complete (temporary file in the same directory, then a rename), with a
//!   stated [`Durability`]: synced before and after the rename (records,
//!   indexes, configurations), or renamed only (caches and hints a crash
//!   may lose, outputs the user can write again);
//! - [`HoleReader`] and [`copy_file_keeping_holes`]: reading and copying
//!   files with holes in time and space proportional to their data.
//!
//! Owns: nothing on disk. Must not depend on: any other kiln crate.
#![deny(clippy::print_stdout, clippy::print_stderr)]

mod atomic;
mod holes;

pub use atomic::{AtomicFile, Durability, fsync_dir, replace_file};
pub use holes::{
    HOLE_BLOCK, HoleReader, SparseWriter, copy_file_keeping_holes, data_regions, has_holes,
};
