//! `--chmod` for copies: the solver's [`ModeChange`] (shared with the
//! frontend, which validates the same values), with the worker's error.

pub(crate) use kiln_solver::chmod::ModeChange;

use crate::error::{Error, Result};

/// The change an op asks for, or an error for a symbolic value that does
/// not parse.
pub(crate) fn mode_change(chmod: &kiln_solver::Chmod) -> Result<ModeChange> {
    ModeChange::from_op(chmod).ok_or_else(|| Error::Invalid {
        what: "chmod",
        value: chmod.to_string(),
        reason: "neither an octal mode nor a symbolic one".to_owned(),
    })
}
