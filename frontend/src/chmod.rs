//! `--chmod` values: the solver's [`kiln_solver::chmod::ModeChange`], which
//! the worker also applies, so parsing and applying never disagree.

pub use kiln_solver::chmod::ModeChange as Chmod;
