//! [`PatternMatcher`]: moby/patternmatcher's matching rules.

use std::fmt;

use regex::{Regex, RegexBuilder};

use super::IgnoreError;
use super::compile::compile;
use super::glob::glob_match;
use super::path::{clean_path, dir, parent_prefixes};
use super::re2::{self, Nfa};

/// Compiled-program budget for one pattern's regex (the `regex` crate's
/// default is 10 MiB; a 64 KiB line of wildcards needs more).
const REGEX_SIZE_LIMIT: usize = 64 << 20;

/// How a pattern is matched, as Docker classifies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MatchKind {
    /// No wildcards: the path must equal the pattern.
    Exact,
    /// Literal text followed by a trailing `**` (`dir/**`): the path must
    /// start with the text.
    Prefix,
    /// A leading `**` followed by literal text (`**/name`): the path must
    /// end with the text (or, for `**/name`, be `name`).
    Suffix,
    /// Everything else: a regular expression.
    Regexp,
}

impl MatchKind {
    /// The name moby/patternmatcher uses (`exact`, `prefix`, `suffix`,
    /// `regexp`).
    pub fn as_str(self) -> &'static str {
        match self {
            MatchKind::Exact => "exact",
            MatchKind::Prefix => "prefix",
            MatchKind::Suffix => "suffix",
            MatchKind::Regexp => "regexp",
        }
    }
}

/// One pattern of a [`PatternMatcher`].
#[derive(Clone)]
pub struct Pattern {
    /// Cleaned, without the `!`.
    text: String,
    exclusion: bool,
    /// Number of `/`-separated elements of `text` (for the legacy match).
    dirs: usize,
    strategy: Strategy,
}

#[derive(Clone)]
enum Strategy {
    Exact,
    Prefix,
    Suffix,
    Regexp {
        /// The expression Docker builds, in Go syntax.
        go_source: String,
        /// `Err` carries why Go's regexp compiler would reject it; the
        /// pattern then fails whenever it is used, as in Docker.
        compiled: Result<Box<Compiled>, String>,
    },
}

#[derive(Clone)]
struct Compiled {
    regex: Regex,
    nfa: Nfa,
}

impl Pattern {
    fn new(text: String, exclusion: bool) -> Self {
        let dirs = text.split('/').count();
        let (kind, go_source) = compile(&text);
        let strategy = match kind {
            MatchKind::Exact => Strategy::Exact,
            MatchKind::Prefix => Strategy::Prefix,
            MatchKind::Suffix => Strategy::Suffix,
            MatchKind::Regexp => {
                let compiled = compile_regexp(&go_source);
                if let Err(reason) = &compiled {
                    tracing::debug!(pattern = %text, go_regexp = %go_source, %reason, "pattern is not a valid regular expression");
                }
                Strategy::Regexp {
                    go_source,
                    compiled,
                }
            }
        };
        Pattern {
            text,
            exclusion,
            dirs,
            strategy,
        }
    }

    /// The pattern after cleaning, without its leading `!`.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether this is an exception (`!pattern`) that re-includes paths.
    pub fn is_exclusion(&self) -> bool {
        self.exclusion
    }

    /// How the pattern is matched.
    pub fn match_kind(&self) -> MatchKind {
        match self.strategy {
            Strategy::Exact => MatchKind::Exact,
            Strategy::Prefix => MatchKind::Prefix,
            Strategy::Suffix => MatchKind::Suffix,
            Strategy::Regexp { .. } => MatchKind::Regexp,
        }
    }

    /// For a [`MatchKind::Regexp`] pattern, the regular expression Docker
    /// compiles, in Go syntax (for diagnostics).
    pub fn go_regexp(&self) -> Option<&str> {
        match &self.strategy {
            Strategy::Regexp { go_source, .. } => Some(go_source),
            _ => None,
        }
    }

    /// Whether `path` itself matches this pattern (no parent directories,
    /// and regardless of `!`). Fails with [`IgnoreError::BadPattern`] when
    /// Docker's regexp compiler would reject the pattern.
    pub fn matches(&self, path: &str) -> Result<bool, IgnoreError> {
        // Docker slices the pattern by bytes; so do we.
        let text = self.text.as_bytes();
        let bytes = path.as_bytes();
        Ok(match &self.strategy {
            Strategy::Exact => bytes == text,
            Strategy::Prefix => bytes.starts_with(&text[..text.len().saturating_sub(2)]),
            Strategy::Suffix => {
                let suffix = text.get(2..).unwrap_or_default();
                // `**/foo` also matches `foo`.
                bytes.ends_with(suffix) || (suffix.first() == Some(&b'/') && bytes == &suffix[1..])
            }
            Strategy::Regexp {
                compiled: Ok(compiled),
                ..
            } => compiled.regex.is_match(path),
            Strategy::Regexp {
                compiled: Err(_), ..
            } => {
                return Err(IgnoreError::BadPattern {
                    pattern: self.text.clone(),
                });
            }
        })
    }

    /// Whether `path` or one of its parent directories matches.
    fn matches_or_parent(&self, path: &str) -> Result<bool, IgnoreError> {
        if self.matches(path)? {
            return Ok(true);
        }
        let parent = dir(path);
        // Errors can't happen any more: the pattern compiled.
        Ok(parent != "." && parent_prefixes(&parent).any(|p| self.matches(p).unwrap_or(false)))
    }

    /// Whether some path starting with `prefix` (a directory followed by
    /// `/`) might match. False only when no such path can.
    fn could_match_below(&self, prefix: &str) -> bool {
        let text = self.text.as_bytes();
        let prefix = prefix.as_bytes();
        match &self.strategy {
            Strategy::Exact => text.len() > prefix.len() && text.starts_with(prefix),
            Strategy::Prefix => {
                let literal = &text[..text.len().saturating_sub(2)];
                literal.starts_with(prefix) || prefix.starts_with(literal)
            }
            Strategy::Suffix => true,
            Strategy::Regexp {
                compiled: Ok(compiled),
                ..
            } => std::str::from_utf8(prefix).map_or(true, |p| compiled.nfa.could_match_longer(p)),
            Strategy::Regexp {
                compiled: Err(_), ..
            } => true,
        }
    }
}

/// Reads the Go expression and builds its `regex` equivalent.
fn compile_regexp(go_source: &str) -> Result<Box<Compiled>, String> {
    let node = re2::parse(go_source).map_err(|e| e.0.to_string())?;
    let source = re2::to_regex(&node);
    let regex = RegexBuilder::new(&source)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| e.to_string())?;
    Ok(Box::new(Compiled {
        regex,
        nfa: Nfa::new(&node),
    }))
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.exclusion {
            f.write_str("!")?;
        }
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("Pattern");
        s.field("text", &self.text)
            .field("exclusion", &self.exclusion)
            .field("kind", &self.match_kind());
        if let Strategy::Regexp {
            go_source,
            compiled,
        } = &self.strategy
        {
            s.field("go_regexp", go_source);
            if let Err(reason) = compiled {
                s.field("error", reason);
            }
        }
        s.finish()
    }
}

/// What [`PatternMatcher::matches_using_parent_results`] learnt about a
/// directory, to pass when matching its children. Start a walk with
/// `MatchInfo::default()`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MatchInfo {
    parent_matched: Vec<bool>,
}

/// An ordered list of `.dockerignore` patterns (moby/patternmatcher's
/// `PatternMatcher`).
///
/// Paths are relative, `/`-separated and not cleaned by the matcher: pass
/// them the way a context walker produces them (`dir/file`, no `./`).
///
/// ```
/// use kiln_patterns::PatternMatcher;
/// let pm = PatternMatcher::new(["*.md", "!README*.md", "README-secret.md"]).unwrap();
/// assert!(pm.matches_or_parent_matches("CHANGELOG.md").unwrap());
/// assert!(!pm.matches_or_parent_matches("README.md").unwrap());
/// assert!(pm.matches_or_parent_matches("README-secret.md").unwrap());
/// ```
#[derive(Debug, Clone, Default)]
pub struct PatternMatcher {
    patterns: Vec<Pattern>,
    exclusions: bool,
}

impl PatternMatcher {
    /// Builds a matcher, as Docker's `patternmatcher.New`: each pattern is
    /// trimmed (empty ones are dropped) and cleaned with
    /// [`clean_path`](super::clean_path); a leading `!` makes it an
    /// exception. A lone `!` is [`IgnoreError::IllegalExclusion`], and a
    /// pattern Go's `filepath.Match` rejects is [`IgnoreError::BadPattern`].
    /// Patterns that only Go's regexp compiler rejects (like
    /// `[Local-Only]`, a reversed range) are accepted here and fail when
    /// used, as in Docker.
    ///
    /// Patterns usually come from
    /// [`read_ignore_file`](super::read_ignore_file), which has already
    /// dropped leading `/`s; this function doesn't.
    pub fn new<I, S>(patterns: I) -> Result<Self, IgnoreError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut matcher = PatternMatcher::default();
        for pattern in patterns {
            let pattern = pattern.as_ref().trim();
            if pattern.is_empty() {
                continue;
            }
            let cleaned = clean_path(pattern);
            let (exclusion, text) = match cleaned.strip_prefix('!') {
                Some("") => return Err(IgnoreError::IllegalExclusion),
                Some(rest) => (true, rest),
                None => (false, cleaned.as_str()),
            };
            if glob_match(text, ".").is_err() {
                return Err(IgnoreError::BadPattern {
                    pattern: text.to_string(),
                });
            }
            matcher.exclusions |= exclusion;
            matcher
                .patterns
                .push(Pattern::new(text.to_string(), exclusion));
        }
        Ok(matcher)
    }

    /// The patterns, in order.
    pub fn patterns(&self) -> &[Pattern] {
        &self.patterns
    }

    /// Whether there are no patterns (nothing is ever excluded).
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether any pattern is an exception (`!pattern`).
    pub fn exclusions(&self) -> bool {
        self.exclusions
    }

    /// Whether `path` is excluded: Docker's `MatchesOrParentMatches`, the
    /// semantics of `.dockerignore` and `COPY --exclude`.
    ///
    /// Patterns are applied in order. An ordinary pattern excludes the path
    /// when it matches the path or any of its parent directories; a later
    /// exception (`!pattern`) that matches the path or a parent includes it
    /// again, and so on: the last pattern that matches decides.
    pub fn matches_or_parent_matches(&self, path: &str) -> Result<bool, IgnoreError> {
        let parent = dir(path);
        let mut matched = false;
        for pattern in &self.patterns {
            // An ordinary pattern can't change an excluded path, nor an
            // exception an included one.
            if pattern.exclusion != matched {
                continue;
            }
            let mut hit = pattern.matches(path)?;
            if !hit && parent != "." {
                hit = parent_prefixes(&parent).any(|p| pattern.matches(p).unwrap_or(false));
            }
            if hit {
                matched = !pattern.exclusion;
            }
        }
        Ok(matched)
    }

    /// Like [`matches_or_parent_matches`](Self::matches_or_parent_matches)
    /// but without looking at parent directories (Docker's
    /// `MatchesExact`).
    pub fn matches_exact(&self, path: &str) -> Result<bool, IgnoreError> {
        let mut matched = false;
        for pattern in &self.patterns {
            if pattern.exclusion != matched {
                continue;
            }
            if pattern.matches(path)? {
                matched = !pattern.exclusion;
            }
        }
        Ok(matched)
    }

    /// Docker's deprecated `PatternMatcher.Matches`: like
    /// [`matches_or_parent_matches`](Self::matches_or_parent_matches), but
    /// a pattern of N elements is only tried against the path's first N
    /// elements instead of every parent. Kept for compatibility checks; use
    /// `matches_or_parent_matches` for contexts.
    pub fn matches(&self, path: &str) -> Result<bool, IgnoreError> {
        let parent = dir(path);
        let parent_elements = parent.split('/').count();
        let mut matched = false;
        for pattern in &self.patterns {
            if pattern.exclusion != matched {
                continue;
            }
            let mut hit = pattern.matches(path)?;
            if !hit && parent != "." && pattern.dirs <= parent_elements {
                hit = parent_prefixes(&parent)
                    .nth(pattern.dirs.saturating_sub(1))
                    .is_some_and(|p| pattern.matches(p).unwrap_or(false));
            }
            if hit {
                matched = !pattern.exclusion;
            }
        }
        Ok(matched)
    }

    /// The walker-friendly form of
    /// [`matches_or_parent_matches`](Self::matches_or_parent_matches)
    /// (Docker's `MatchesUsingParentResults`): `parent` is what this
    /// function returned for the parent directory, so parents are not
    /// matched again. With `MatchInfo::default()` it looks at the parents
    /// itself and gives the same answer as `matches_or_parent_matches`.
    ///
    /// ```
    /// use kiln_patterns::{MatchInfo, PatternMatcher};
    /// let pm = PatternMatcher::new(["docs", "!docs/keep"]).unwrap();
    /// let (docs, info) = pm.matches_using_parent_results("docs", &MatchInfo::default()).unwrap();
    /// assert!(docs);
    /// let (keep, _) = pm.matches_using_parent_results("docs/keep", &info).unwrap();
    /// assert!(!keep);
    /// ```
    pub fn matches_using_parent_results(
        &self,
        path: &str,
        parent: &MatchInfo,
    ) -> Result<(bool, MatchInfo), IgnoreError> {
        let parent_matched = &parent.parent_matched;
        if !parent_matched.is_empty() && parent_matched.len() != self.patterns.len() {
            return Err(IgnoreError::MatchInfoMismatch {
                expected: self.patterns.len(),
                got: parent_matched.len(),
            });
        }
        let mut matched = false;
        let mut info = vec![false; self.patterns.len()];
        for (i, pattern) in self.patterns.iter().enumerate() {
            // A pattern that matched the parent matches its children.
            let mut hit = parent_matched.get(i).copied().unwrap_or(false);
            if !hit {
                if pattern.exclusion != matched {
                    continue;
                }
                hit = pattern.matches(path)?;
                if !hit && parent_matched.is_empty() {
                    let parent = dir(path);
                    if parent != "." {
                        hit = parent_prefixes(&parent).any(|p| pattern.matches(p).unwrap_or(false));
                    }
                }
            }
            info[i] = hit;
            if hit {
                matched = !pattern.exclusion;
            }
        }
        Ok((
            matched,
            MatchInfo {
                parent_matched: info,
            },
        ))
    }

    /// Whether a context walker may skip directory `dir` without looking
    /// inside: true only when `dir` is excluded and no exception pattern
    /// could re-include anything below it, so that every path below `dir`
    /// is excluded too.
    ///
    /// `dir` is a relative, `/`-separated path as given to
    /// [`matches_or_parent_matches`](Self::matches_or_parent_matches); the
    /// context root (`""` or `.`) is never skipped. The answer is
    /// conservative: `false` may still mean everything below is excluded
    /// (for example with an exception like `!**/keep`), never the reverse.
    /// Any pattern error also gives `false`, so the walker meets the error
    /// on the paths themselves.
    ///
    /// ```
    /// use kiln_patterns::PatternMatcher;
    /// let pm = PatternMatcher::new(["node_modules", "!node_modules/keep/*.json"]).unwrap();
    /// assert!(pm.can_skip_dir("node_modules/other"));
    /// assert!(!pm.can_skip_dir("node_modules"));
    /// assert!(!pm.can_skip_dir("node_modules/keep"));
    /// assert!(!pm.can_skip_dir("src"));
    /// ```
    pub fn can_skip_dir(&self, dir: &str) -> bool {
        let dir = dir.trim_end_matches('/');
        if dir.is_empty() || dir == "." {
            return false;
        }
        if !matches!(self.matches_or_parent_matches(dir), Ok(true)) {
            return false;
        }
        if !self.exclusions {
            return true;
        }
        // Every path below `dir` is matched by at least the patterns that
        // match `dir` (its parents are `dir` and `dir`'s parents), so only an
        // exception that matches nothing at or above `dir` but something
        // below it can change the outcome.
        let prefix = format!("{dir}/");
        self.patterns.iter().filter(|p| p.exclusion).all(|pattern| {
            match pattern.matches_or_parent(dir) {
                Ok(true) => true,
                Ok(false) => !pattern.could_match_below(&prefix),
                Err(_) => false,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

        /// Without `**` and classes, Docker's regexp and Go's
        /// `filepath.Match` agree.
        #[test]
        fn regexp_agrees_with_glob_on_simple_patterns(
            pattern in "[ab/*?]{1,8}",
            path in "[ab/]{0,8}",
        ) {
            prop_assume!(!pattern.contains("**"));
            let pattern = clean_path(&pattern);
            prop_assume!(!pattern.starts_with('!'));
            let pm = PatternMatcher::new([pattern.as_str()]).unwrap();
            let expected = glob_match(&pattern, &path).unwrap();
            prop_assert_eq!(pm.patterns()[0].matches(&path), Ok(expected));
        }
    }

    fn pm(patterns: &[&str]) -> PatternMatcher {
        PatternMatcher::new(patterns).unwrap()
    }

    #[test]
    fn new_trims_cleans_and_flags_exclusions() {
        let m = pm(&["  docs/ ", "", "   ", "!docs//README.md\t", "a//b/"]);
        let texts: Vec<String> = m.patterns().iter().map(ToString::to_string).collect();
        assert_eq!(texts, ["docs", "!docs/README.md", "a/b"]);
        assert!(m.exclusions());
        assert!(!pm(&["docs"]).exclusions());
        // Cleaning happens before the `!` is looked at, as in Docker.
        let m = pm(&["!foo/../bar"]);
        assert!(!m.patterns()[0].is_exclusion());
        assert_eq!(m.patterns()[0].as_str(), "bar");
    }

    #[test]
    fn new_errors() {
        assert_eq!(
            PatternMatcher::new(["!"]).unwrap_err(),
            IgnoreError::IllegalExclusion
        );
        assert_eq!(
            PatternMatcher::new([" !/ "]).unwrap_err(),
            IgnoreError::IllegalExclusion
        );
        assert_eq!(
            PatternMatcher::new(["ok", "!a["]).unwrap_err(),
            IgnoreError::BadPattern {
                pattern: "a[".into()
            }
        );
    }

    #[test]
    fn regexp_errors_surface_only_when_the_pattern_is_used() {
        let m = pm(&["[Local-Only]/"]);
        for _ in 0..2 {
            assert!(matches!(
                m.matches_or_parent_matches("x"),
                Err(IgnoreError::BadPattern { .. })
            ));
        }
        // An exception is only evaluated once something is excluded.
        let m = pm(&["b", "!*[z-a]"]);
        assert_eq!(m.matches_or_parent_matches("a"), Ok(false));
        assert!(m.matches_or_parent_matches("b").is_err());
    }

    #[test]
    fn kinds_and_go_regexps() {
        let m = pm(&["a", "a/**", "**/a", "a*", "[z-a]"]);
        let kinds: Vec<MatchKind> = m.patterns().iter().map(Pattern::match_kind).collect();
        use MatchKind::*;
        assert_eq!(kinds, [Exact, Prefix, Suffix, Regexp, Regexp]);
        assert_eq!(m.patterns()[3].go_regexp(), Some("^a[^/]*$"));
        assert_eq!(m.patterns()[0].go_regexp(), None);
        assert!(format!("{:?}", m.patterns()[4]).contains("error"));
    }

    #[test]
    fn legacy_matches_checks_one_parent_depth() {
        let m = pm(&["a*"]);
        assert_eq!(m.matches("ab/c"), Ok(true));
        assert_eq!(m.matches_or_parent_matches("ab/c"), Ok(true));
        let m = pm(&["b"]);
        // Neither form matches a non-leading element.
        assert_eq!(m.matches("a/b/c"), Ok(false));
        assert_eq!(m.matches_or_parent_matches("a/b/c"), Ok(false));
        // A pattern of N elements: the legacy form only tries the first N
        // elements of the parent, the modern one every parent.
        let m = pm(&["a"]);
        assert_eq!(m.matches("a/b/c"), Ok(true));
        let m = pm(&["*/b"]);
        assert_eq!(m.matches("a/b/c/d"), Ok(true));
        let m = pm(&["a/b"]);
        assert_eq!(m.matches("a/b/c/d"), Ok(true));
        let m = pm(&["b/c"]);
        assert_eq!(m.matches("a/b/c/d"), Ok(false));
        assert_eq!(m.matches_or_parent_matches("a/b/c/d"), Ok(false));
    }

    #[test]
    fn match_info_round_trip() {
        let m = pm(&["**", "!util/docker/web", "util/docker/web/foo"]);
        let mut info = MatchInfo::default();
        for dir in ["util", "util/docker", "util/docker/web"] {
            info = m.matches_using_parent_results(dir, &info).unwrap().1;
        }
        assert!(
            m.matches_using_parent_results("util/docker/web/foo", &info)
                .unwrap()
                .0
        );
        assert!(
            !m.matches_using_parent_results("util/docker/web/bar", &info)
                .unwrap()
                .0
        );
        let other = pm(&["a"]);
        assert_eq!(
            other.matches_using_parent_results("x", &info),
            Err(IgnoreError::MatchInfoMismatch {
                expected: 1,
                got: 3
            })
        );
    }

    #[test]
    fn can_skip_dir_cases() {
        let m = pm(&["node_modules", "!node_modules/keep/*.json"]);
        assert!(m.can_skip_dir("node_modules/other"));
        assert!(m.can_skip_dir("node_modules/other/"));
        assert!(!m.can_skip_dir("node_modules"));
        assert!(!m.can_skip_dir("node_modules/keep"));
        assert!(!m.can_skip_dir("src"));
        assert!(!m.can_skip_dir(""));
        assert!(!m.can_skip_dir("."));
        // No exceptions: every excluded directory can go.
        assert!(pm(&["*"]).can_skip_dir("anything"));
        // Wildcard exceptions are taken into account.
        let m = pm(&["*", "!*/keep"]);
        assert!(!m.can_skip_dir("a"));
        assert!(m.can_skip_dir("a/b"));
        let m = pm(&["*", "!**/keep"]);
        assert!(!m.can_skip_dir("a/b/c"));
        // A class can match `/`.
        let m = pm(&["a", "!a[%-0]c"]);
        assert!(!m.can_skip_dir("a"));
        assert_eq!(m.matches_or_parent_matches("a/c"), Ok(false));
        // An exception that matches an ancestor doesn't block skipping when a
        // later pattern excludes again.
        let m = pm(&["**", "!src", "src/gen"]);
        assert!(m.can_skip_dir("src/gen"));
        assert!(!m.can_skip_dir("src"));
        // Prefix exceptions.
        let m = pm(&["build", "!build/keep/**"]);
        assert!(!m.can_skip_dir("build"));
        assert!(!m.can_skip_dir("build/keep"));
        assert!(m.can_skip_dir("build/tmp"));
        // A bad exception pattern: don't skip.
        let m = pm(&["a", "![z-a]"]);
        assert!(!m.can_skip_dir("a"));
    }
}
