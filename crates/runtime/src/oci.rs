//! [`OciRuntime`]: which OCI runtime runs containers.
//!
//! Both kinds are driven through the same runc-style command line by
//! [`Runc`]: a runc-compatible binary directly, or the embedded runtime
//! (youki's libcontainer) through a helper process, the current
//! executable re-executed as `EXE __oci …` (see [`crate::embedded`]).
//! Whoever picks [`OciRuntime::Embedded`] must make that helper exist:
//! the kiln binary dispatches `__oci` to [`crate::embedded::main`] before
//! anything else.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::embedded::HELPER_SUBCOMMAND;
use crate::runc::Runc;

/// The name [`OciRuntime::name`] gives the embedded runtime (and
/// `--runtime` takes).
pub const EMBEDDED: &str = "embedded";

/// The OCI runtime that creates, runs, signals and deletes containers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OciRuntime {
    /// youki's libcontainer, run by the helper `program args… --root …`
    /// (forking never happens in the caller's process).
    Embedded {
        program: PathBuf,
        args: Vec<OsString>,
    },
    /// A runc-compatible binary, as BuildKit runs runc: a path, or a name
    /// looked up in `PATH`.
    Runc(PathBuf),
}

impl Default for OciRuntime {
    /// `runc` from `PATH`: a library cannot know a helper program. The
    /// kiln binary defaults to [`OciRuntime::embedded_self`].
    fn default() -> OciRuntime {
        OciRuntime::Runc(PathBuf::from("runc"))
    }
}

impl OciRuntime {
    /// The embedded runtime, its helper being the current executable
    /// re-executed as `EXE __oci` (what the kiln binary understands).
    pub fn embedded_self() -> OciRuntime {
        let program = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("kiln"));
        OciRuntime::Embedded {
            program,
            args: vec![HELPER_SUBCOMMAND.into()],
        }
    }

    /// What a user names: `embedded`, or a runc-compatible binary (`runc`,
    /// `/usr/sbin/runc`). `embedded` resolves to `helper`.
    pub fn from_name(name: &str, helper: &OciRuntime) -> OciRuntime {
        match name {
            EMBEDDED => match helper {
                OciRuntime::Embedded { .. } => helper.clone(),
                OciRuntime::Runc(_) => OciRuntime::embedded_self(),
            },
            other => OciRuntime::Runc(PathBuf::from(other)),
        }
    }

    /// `embedded`, or the runc binary as given: what container records
    /// keep, so `stop`, `kill` and `start` use the same runtime.
    pub fn name(&self) -> String {
        match self {
            OciRuntime::Embedded { .. } => EMBEDDED.to_owned(),
            OciRuntime::Runc(binary) => binary.to_string_lossy().into_owned(),
        }
    }

    pub fn is_embedded(&self) -> bool {
        matches!(self, OciRuntime::Embedded { .. })
    }

    /// The command line driving this runtime with state under `root`.
    pub fn client(&self, root: impl Into<PathBuf>) -> Runc {
        match self {
            OciRuntime::Embedded { program, args } => {
                Runc::with_args(program.clone(), args.clone(), root)
            }
            OciRuntime::Runc(binary) => Runc::new(binary.clone(), root),
        }
    }

    /// The program run for this runtime (the helper or runc).
    pub fn program(&self) -> &Path {
        match self {
            OciRuntime::Embedded { program, .. } => program,
            OciRuntime::Runc(binary) => binary,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let helper = OciRuntime::Embedded {
            program: "/k".into(),
            args: vec!["__oci".into()],
        };
        assert_eq!(OciRuntime::from_name("embedded", &helper), helper);
        assert_eq!(helper.name(), "embedded");
        let runc = OciRuntime::from_name("/usr/sbin/runc", &helper);
        assert_eq!(runc, OciRuntime::Runc("/usr/sbin/runc".into()));
        assert_eq!(runc.name(), "/usr/sbin/runc");
        assert_eq!(OciRuntime::default().name(), "runc");
    }
}
