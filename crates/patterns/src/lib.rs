//! # kiln-patterns
//!
//! `.dockerignore` files and Docker's path patterns, with Docker's exact
//! semantics: one matcher for build contexts, `COPY --exclude` and the
//! worker's context walks.
//!
//! Docker (the CLI's classic builder, BuildKit and `COPY --exclude`) reads
//! ignore files with `moby/patternmatcher/ignorefile.ReadAll` and matches
//! paths with `moby/patternmatcher`. This module re-implements both:
//!
//! - [`read_ignore_file`] turns the bytes of an ignore file into patterns
//!   (UTF-8 BOM stripped, `#` comments in column 0, whitespace trimmed,
//!   paths cleaned like Go's `filepath.Clean` ([`clean_path`]), a leading `/`
//!   dropped, `!` kept).
//! - [`PatternMatcher`] decides whether a context path is excluded. The
//!   semantics to use for build contexts is
//!   [`PatternMatcher::matches_or_parent_matches`]: a path is excluded when it
//!   or any parent directory matches; patterns apply in order and a later
//!   `!pattern` re-includes. [`PatternMatcher::can_skip_dir`] tells a context
//!   walker when it may prune a whole directory.
//! - [`ignore_file_candidates`] names the files to look for, in precedence
//!   order (`<Dockerfile>.dockerignore` before `.dockerignore`).
//!
//! ## Pattern syntax
//!
//! Patterns are relative to the context root; there is no implicit `**/`, so
//! `foo` only matches `./foo` (and everything below it). `*` matches any run
//! of characters except `/`, `?` any single character except `/`, `**` any
//! number of directories (including none), `[...]`/`[^...]` a character
//! class, and `\` escapes the next character.
//!
//! Docker compiles a pattern to a Go regular expression by rewriting it
//! textually, and some inputs mean something surprising as a result (for
//! example `[*]` becomes `[[^/]*]`). kiln reproduces the same text and reads
//! it with an RE2-compatible parser, so those corner cases behave
//! exactly as in Docker; the result is then handed to the `regex` crate.
//! Every pattern is compiled once, when the matcher is built.
//!
//! Owns: ignore-file parsing and path matching. Must not do: any I/O. The
//! caller reads the ignore file and walks the context.
#![deny(clippy::print_stdout, clippy::print_stderr)]

mod compile;
mod glob;
mod ignorefile;
mod matcher;
mod path;
mod re2;

pub use ignorefile::read_ignore_file;
pub use matcher::{MatchInfo, MatchKind, Pattern, PatternMatcher};
pub use path::clean_path;

/// The name of the context-wide ignore file.
pub const DOCKERIGNORE_FILE: &str = ".dockerignore";

/// Why an ignore file or a pattern was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IgnoreError {
    /// Go's `filepath.ErrBadPattern`. Docker reports a malformed pattern
    /// either when the matcher is built (what `filepath.Match` rejects) or
    /// when the pattern is first used (what the regular-expression compiler
    /// rejects); kiln reports it at the same moments.
    #[error("syntax error in pattern {pattern:?}")]
    BadPattern {
        /// The pattern, cleaned and without its `!`.
        pattern: String,
    },
    /// A pattern that is only `!`.
    #[error("illegal exclusion pattern: \"!\"")]
    IllegalExclusion,
    /// A line of 64 KiB or more (Go's `bufio.Scanner: token too long`).
    #[error("line {line} of the ignore file is longer than 65535 bytes")]
    LineTooLong {
        /// 1-based line number.
        line: usize,
    },
    /// A pattern line that is not UTF-8. Docker would use the raw bytes;
    /// kiln's paths are UTF-8 strings, so it refuses the file instead.
    #[error("line {line} of the ignore file is not valid UTF-8")]
    InvalidUtf8 {
        /// 1-based line number.
        line: usize,
    },
    /// A [`MatchInfo`] from another matcher was passed to
    /// [`PatternMatcher::matches_using_parent_results`].
    #[error("wrong number of values in parent match info: expected {expected}, got {got}")]
    MatchInfoMismatch {
        /// Number of patterns of this matcher.
        expected: usize,
        /// Number of values in the match info that was passed.
        got: usize,
    },
}

/// The ignore files to look for, most specific first.
///
/// BuildKit (through buildx and the docker CLI) first uses
/// `<Dockerfile path>.dockerignore`, next to the Dockerfile, and only when it
/// does not exist `.dockerignore` at the root of the context. The first
/// entry is therefore relative to the same directory as `dockerfile_name`;
/// the last one is relative to the context root. An empty name means the
/// default `Dockerfile`; a Dockerfile read from stdin (`-`) has no
/// Dockerfile-specific ignore file.
///
/// This function does no I/O: the caller checks the candidates in order and
/// reads the first one that exists.
pub fn ignore_file_candidates(dockerfile_name: &str) -> Vec<String> {
    let name = if dockerfile_name.is_empty() {
        "Dockerfile"
    } else {
        dockerfile_name
    };
    if name == "-" {
        return vec![DOCKERIGNORE_FILE.to_string()];
    }
    vec![
        format!("{name}{DOCKERIGNORE_FILE}"),
        DOCKERIGNORE_FILE.to_string(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_prefer_the_dockerfile_specific_file() {
        assert_eq!(
            ignore_file_candidates("Dockerfile"),
            ["Dockerfile.dockerignore", ".dockerignore"]
        );
        assert_eq!(
            ignore_file_candidates("docker/build.Dockerfile"),
            ["docker/build.Dockerfile.dockerignore", ".dockerignore"]
        );
        assert_eq!(
            ignore_file_candidates(""),
            ["Dockerfile.dockerignore", ".dockerignore"]
        );
        assert_eq!(ignore_file_candidates("-"), [".dockerignore"]);
    }

    #[test]
    fn matcher_is_shareable_between_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<PatternMatcher>();
        assert_send_sync::<IgnoreError>();
    }

    #[test]
    fn error_messages() {
        assert_eq!(
            IgnoreError::IllegalExclusion.to_string(),
            "illegal exclusion pattern: \"!\""
        );
        assert_eq!(
            IgnoreError::BadPattern {
                pattern: "[".into()
            }
            .to_string(),
            "syntax error in pattern \"[\""
        );
    }
}
