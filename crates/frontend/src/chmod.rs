//! `--chmod` values: the solver's [`kiln_graph::chmod::ModeChange`], which
//! the worker also applies, so parsing and applying never disagree.

pub use kiln_graph::chmod::ModeChange as Chmod;
