//! Conformance runners: each module loads one corpus from
//! `../shared/conformance/` and checks kiln against it. Used by
//! `scripts/conformance.sh` through the `kiln-conformance` binary.
//!
//! The corpora are upstream data (BuildKit, moby, distribution, OCI); kiln's
//! own `cargo test` never needs them.

use std::path::Path;

pub mod dockerignore;
pub mod instructions;
pub mod moby_build;
pub mod oci_spec;
pub mod parser;
pub mod reference;
pub mod shell;

/// The outcome of one corpus.
#[derive(Debug, Default)]
pub struct Report {
    pub name: String,
    pub passed: usize,
    pub failed: usize,
    /// Cases left out by design (see docs/conformance.md).
    pub skipped: usize,
    /// One line per failed case, for `--verbose`.
    pub failures: Vec<String>,
    /// Checks or cases skipped by design, with the reason, for `--verbose`.
    pub skips: Vec<String>,
}

impl Report {
    pub fn new(name: &str) -> Self {
        Report {
            name: name.to_string(),
            ..Default::default()
        }
    }

    /// Records one case: `ok` or a failure with its description.
    pub fn check(&mut self, ok: bool, describe: impl FnOnce() -> String) {
        if ok {
            self.passed += 1;
        } else {
            self.failed += 1;
            self.failures.push(describe());
        }
    }
}

/// A corpus runner: takes the `conformance/` directory, returns reports.
pub type Runner = fn(&Path) -> anyhow::Result<Vec<Report>>;
