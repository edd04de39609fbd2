//! `.dockerignore` behaviour through the public API: our own table of
//! cases (Docker's documented rules and the corner cases of its
//! implementation) and property tests.

use kiln_patterns::{
    IgnoreError, MatchInfo, MatchKind, PatternMatcher, clean_path, ignore_file_candidates,
    read_ignore_file,
};
use proptest::prelude::*;

fn matcher(patterns: &[&str]) -> PatternMatcher {
    PatternMatcher::new(patterns)
        .unwrap_or_else(|e| panic!("PatternMatcher::new({patterns:?}) failed: {e}"))
}

/// `(patterns, path, excluded)` for `matches_or_parent_matches`.
const EXCLUDED: &[(&[&str], &str, bool)] = &[
    // Patterns are anchored at the context root; no implicit `**/`.
    (&["foo"], "foo", true),
    (&["foo"], "foo/bar", true),
    (&["foo"], "foo/bar/baz", true),
    (&["foo"], "bar/foo", false),
    (&["foo"], "foobar", false),
    (&["foo"], "fo", false),
    // Cleaning.
    (&["foo/"], "foo/x", true),
    (&["./foo"], "foo", true),
    (&["foo/../bar"], "bar", true),
    (&["foo//bar/."], "foo/bar", true),
    // `*` and `?` stay within one path element.
    (&["*.log"], "a.log", true),
    (&["*.log"], "dir/a.log", false),
    (&["*/*.log"], "dir/a.log", true),
    (&["*"], "anything/deep/file", true),
    (&["?"], "a", true),
    (&["?"], "ab", false),
    (&["?"], "é", true),
    (&["a?c"], "a/c", false),
    (&["a*c"], "a/c", false),
    (&["temp?"], "tempa", true),
    (&["temp?"], "temp", false),
    (&["*/temp*"], "somedir/temporary.txt", true),
    (&["*/temp*"], "temporary.txt", false),
    (&["*/*/temp*"], "somedir/subdir/temporary.txt", true),
    (&["é*"], "été", true),
    // `**` spans any number of directories, including none.
    (&["**/*.go"], "main.go", true),
    (&["**/*.go"], "a/b/main.go", true),
    (&["**/node_modules"], "node_modules/x", true),
    (&["**/node_modules"], "a/node_modules/y/z", true),
    (&["a/**/b"], "a/b", true),
    (&["a/**/b"], "a/x/y/b", true),
    (&["a/**/b"], "a/x/yb", false),
    (&["a/**"], "a", false),
    (&["a/**"], "a/x", true),
    (&["**"], "x", true),
    (&["**/"], "x/y", true),
    (&["abc**"], "abcdef/x", true),
    (&["**/.git"], "sub/.git/HEAD", true),
    // Dot files are not special.
    (&[".*"], ".git", true),
    (&[".*"], ".git/config", true),
    (&[".*"], "a/.git", false),
    // Character classes.
    (&["[abc].txt"], "b.txt", true),
    (&["[abc].txt"], "d.txt", false),
    (&["[^abc].txt"], "d.txt", true),
    (&["[^abc].txt"], "a.txt", false),
    (&["[a-c]*"], "cat", true),
    (&["[a-c]*"], "dog", false),
    (&["[!a]x"], "!x", true),
    (&["[!a]x"], "bx", false),
    (&["[[:digit:]]*"], "1abc", true),
    (&["[[:digit:]]*"], "abc", false),
    // A class may match `/`: Docker's regexp doesn't forbid it.
    (&["a[%-0]c"], "a/c", true),
    // Docker rewrites `*` inside brackets too: `[*]` is `[[^/]*]`, which
    // matches `]` but not `*`.
    (&["[*]"], "]", true),
    (&["[*]"], "*", false),
    // `\d` reaches Go's regexp as a digit class.
    (&["\\d*"], "7up", true),
    (&["\\d*"], "dup", false),
    // Escapes.
    (&["a\\*b"], "a*b", true),
    (&["a\\*b"], "axb", false),
    (&["\\[x\\]"], "[x]", true),
    (&["a\\\\b"], "a\\b", true),
    (&["\\#x"], "#x", true),
    // Regexp metacharacters are literals.
    (&["a+b(c)"], "a+b(c)", true),
    (&["file.txt"], "fileXtxt", false),
    (&["$HOME"], "$HOME", true),
    (&["a{1,2}"], "a{1,2}", true),
    (&["a|b"], "a", false),
    (&["a b"], "a b", true),
    // `^` is literal in a pattern without wildcards, an anchor otherwise.
    (&["a^b"], "a^b", true),
    (&["a^*"], "a^x", false),
    // Order and exceptions: the last matching pattern wins.
    (&["*.md", "!README.md"], "README.md", false),
    (&["*.md", "!README.md"], "CHANGELOG.md", true),
    (
        &["*.md", "!README*.md", "README-secret.md"],
        "README-secret.md",
        true,
    ),
    (
        &["*.md", "!README*.md", "README-secret.md"],
        "README.md",
        false,
    ),
    (
        &["*.md", "README-secret.md", "!README*.md"],
        "README-secret.md",
        false,
    ),
    (&["!README.md", "*.md"], "README.md", true),
    (&["docs", "!docs/README.md"], "docs/README.md", false),
    (&["docs", "!docs/README.md"], "docs/other.md", true),
    (&["docs", "!docs/README.md"], "docs", true),
    (&["*", "!src"], "src/main.rs", false),
    (&["*", "!src", "src/*.tmp"], "src/a.tmp", true),
    (&["*", "!src", "src/*.tmp"], "src/a.rs", false),
    (&["**", "!**/keep"], "a/b/keep", false),
    (&["**", "!**/keep"], "a/b/other", true),
    (&["**", "!**/keep"], "a/keep/x", false),
    (&["dir", "!dir/sub", "dir/sub/x"], "dir/sub/x/y", true),
    (&["dir", "!dir/sub", "dir/sub/x"], "dir/sub/z", false),
    (
        &["**", "!util/docker/web", "util/docker/web/foo"],
        "util/docker/web/foo",
        true,
    ),
    // Parent directories.
    (&["a/b"], "a/b/c/d", true),
    (&["a/*/c"], "a/b/c/d", true),
    (&["b"], "a/b", false),
    (&["dir"], "dir/", true),
    (&[], "anything", false),
];

#[test]
fn excluded_table() {
    for &(patterns, path, want) in EXCLUDED {
        let pm = matcher(patterns);
        assert_eq!(
            pm.matches_or_parent_matches(path),
            Ok(want),
            "{patterns:?} on {path:?}"
        );
        // A walker's view agrees: parents first, then the path.
        assert_eq!(
            walk(&pm, path),
            Ok(want),
            "walking {patterns:?} to {path:?}"
        );
    }
}

/// `matches_using_parent_results` for every parent of `path`, then `path`.
fn walk(pm: &PatternMatcher, path: &str) -> Result<bool, IgnoreError> {
    let elements: Vec<&str> = path.split('/').filter(|e| !e.is_empty()).collect();
    let mut info = MatchInfo::default();
    for i in 1..elements.len() {
        info = pm
            .matches_using_parent_results(&elements[..i].join("/"), &info)?
            .1;
    }
    pm.matches_using_parent_results(path, &info).map(|(m, _)| m)
}

#[test]
fn leading_slash_is_dropped_by_the_reader_not_the_matcher() {
    let patterns = read_ignore_file(b"/foo\n").unwrap();
    assert_eq!(patterns, ["foo"]);
    assert_eq!(
        PatternMatcher::new(&patterns)
            .unwrap()
            .matches_or_parent_matches("foo/bar"),
        Ok(true)
    );
    // `PatternMatcher::new` takes patterns as given, like Docker's `New`.
    assert_eq!(
        matcher(&["/foo"]).matches_or_parent_matches("foo"),
        Ok(false)
    );
}

#[test]
fn exact_matching_ignores_parents() {
    let pm = matcher(&["**/dir"]);
    assert_eq!(pm.matches_exact("dir"), Ok(true));
    assert_eq!(pm.matches_exact("x/dir"), Ok(true));
    assert_eq!(pm.matches_exact("dir/file"), Ok(false));
    assert_eq!(pm.matches_or_parent_matches("dir/file"), Ok(true));
}

#[test]
fn constructor_errors() {
    assert_eq!(
        PatternMatcher::new(["!"]).unwrap_err(),
        IgnoreError::IllegalExclusion
    );
    assert_eq!(
        PatternMatcher::new(["  !  "]).unwrap_err(),
        IgnoreError::IllegalExclusion
    );
    for bad in ["a[", "[", "\\", "[]a]", "[x-]", "[a-b-c]", "[^bc", "!x["] {
        assert!(
            matches!(
                PatternMatcher::new([bad]),
                Err(IgnoreError::BadPattern { .. })
            ),
            "{bad:?} should be a bad pattern"
        );
    }
    assert_eq!(
        PatternMatcher::new(["a[", "ok"]).unwrap_err().to_string(),
        "syntax error in pattern \"a[\""
    );
}

#[test]
fn regexp_errors_are_reported_when_used_and_every_time() {
    // Go's `filepath.Match` accepts these; Go's regexp compiler doesn't.
    for bad in ["[Local-Only]", "[z-a]*", "x\\é*", "[[:nope:]]"] {
        let pm = matcher(&[bad]);
        for _ in 0..3 {
            assert!(
                matches!(
                    pm.matches_or_parent_matches("x"),
                    Err(IgnoreError::BadPattern { .. })
                ),
                "{bad:?}"
            );
            assert!(pm.matches_exact("x").is_err(), "{bad:?}");
        }
    }
    // An exception is only evaluated for paths that are excluded.
    let pm = matcher(&["b", "![z-a]"]);
    assert_eq!(pm.matches_or_parent_matches("a"), Ok(false));
    assert!(pm.matches_or_parent_matches("b").is_err());
}

#[test]
fn new_drops_blank_patterns_and_detects_exclusions() {
    let pm = matcher(&["docs", "config", "", "   "]);
    assert_eq!(pm.patterns().len(), 2);
    assert!(!pm.exclusions());
    assert!(matcher(&["docs", "   !docs/README.md  "]).exclusions());
    assert!(
        PatternMatcher::new(Vec::<String>::new())
            .unwrap()
            .is_empty()
    );
}

#[test]
fn pattern_introspection() {
    let pm = matcher(&["!dir/**", "*.go", "**/name", "exact.txt"]);
    let p = &pm.patterns()[0];
    assert!(p.is_exclusion());
    assert_eq!(p.as_str(), "dir/**");
    assert_eq!(p.to_string(), "!dir/**");
    assert_eq!(p.match_kind(), MatchKind::Prefix);
    assert_eq!(pm.patterns()[1].match_kind(), MatchKind::Regexp);
    assert_eq!(pm.patterns()[1].go_regexp(), Some("^[^/]*\\.go$"));
    assert_eq!(pm.patterns()[2].match_kind(), MatchKind::Suffix);
    assert_eq!(pm.patterns()[3].match_kind(), MatchKind::Exact);
    assert_eq!(pm.patterns()[3].go_regexp(), None);
    assert_eq!(pm.patterns()[1].matches("a.go"), Ok(true));
}

#[test]
fn legacy_matches_only_checks_one_parent_depth() {
    let pm = matcher(&["a*"]);
    assert_eq!(pm.matches("ab/c"), Ok(true));
    let pm = matcher(&["docs", "!docs/README.md"]);
    assert_eq!(pm.matches("docs/README.md"), Ok(false));
    // `b/c` has two elements, so only `a/b` is tried, never `b/c`.
    let pm = matcher(&["b/c"]);
    assert_eq!(pm.matches("a/b/c/d"), Ok(false));
}

/// `(file content, patterns)` for `read_ignore_file`.
const READ: &[(&str, &[&str])] = &[
    ("", &[]),
    ("\n\n \t \n", &[]),
    ("# comment\nfoo", &["foo"]),
    (" # not a comment", &["# not a comment"]),
    ("\u{feff}foo\nbar", &["foo", "bar"]),
    ("\u{feff}#comment\nbar", &["bar"]),
    ("a\r\nb\r\n", &["a", "b"]),
    ("  spaced  \n\tx\t", &["spaced", "x"]),
    ("/abs/path\n//double\n/", &["abs/path", "double", "/"]),
    ("a/./b/../c/\n./d", &["a/c", "d"]),
    ("!keep\n! spaced/../x\n!/abs", &["!keep", "!x", "!abs"]),
    ("!\n! ", &["!", "!"]),
    ("..\n../x", &["..", "../x"]),
    ("last line without newline", &["last line without newline"]),
];

#[test]
fn read_table() {
    for &(content, want) in READ {
        assert_eq!(
            read_ignore_file(content.as_bytes()).unwrap(),
            want,
            "{content:?}"
        );
    }
}

#[test]
fn read_errors() {
    assert_eq!(
        read_ignore_file(b"ok\n\xff\n"),
        Err(IgnoreError::InvalidUtf8 { line: 2 })
    );
    assert_eq!(read_ignore_file(b"#\xff\nok"), Ok(vec!["ok".to_string()]));
    let long = vec![b'a'; 64 * 1024];
    assert_eq!(
        read_ignore_file(&long),
        Err(IgnoreError::LineTooLong { line: 1 })
    );
}

#[test]
fn read_then_match_end_to_end() {
    let content = b"\xEF\xBB\xBF# build context\n**/target\n*.md\n!README.md\n/secrets/\n";
    let pm = PatternMatcher::new(read_ignore_file(content).unwrap()).unwrap();
    let cases = [
        ("target/debug/app", true),
        ("crates/x/target/y", true),
        ("NOTES.md", true),
        ("README.md", false),
        ("docs/NOTES.md", false),
        ("secrets/key", true),
        ("src/secrets/key", false),
        ("src/main.rs", false),
    ];
    for (path, want) in cases {
        assert_eq!(pm.matches_or_parent_matches(path), Ok(want), "{path:?}");
    }
}

#[test]
fn clean_path_table() {
    let cases = [
        ("", "."),
        (".", "."),
        ("a/", "a"),
        ("a//b", "a/b"),
        ("./a/./b/.", "a/b"),
        ("a/b/../../..", ".."),
        ("/../a", "/a"),
        ("/", "/"),
        ("!a/./b", "!a/b"),
    ];
    for (input, want) in cases {
        assert_eq!(clean_path(input), want, "{input:?}");
    }
}

#[test]
fn ignore_file_candidates_order() {
    assert_eq!(
        ignore_file_candidates("Dockerfile"),
        ["Dockerfile.dockerignore", ".dockerignore"]
    );
    assert_eq!(
        ignore_file_candidates("build/app.Dockerfile"),
        ["build/app.Dockerfile.dockerignore", ".dockerignore"]
    );
    assert_eq!(ignore_file_candidates("-"), [".dockerignore"]);
}

/// `(patterns, dir, can skip)`.
const SKIP: &[(&[&str], &str, bool)] = &[
    (&["node_modules"], "node_modules", true),
    (&["node_modules"], "src", false),
    (&["node_modules"], "", false),
    (&["*"], ".", false),
    (
        &["node_modules", "!node_modules/keep/*.json"],
        "node_modules",
        false,
    ),
    (
        &["node_modules", "!node_modules/keep/*.json"],
        "node_modules/keep",
        false,
    ),
    (
        &["node_modules", "!node_modules/keep/*.json"],
        "node_modules/other",
        true,
    ),
    (&["*", "!*/keep"], "a", false),
    (&["*", "!*/keep"], "a/b", true),
    (&["*", "!**/keep"], "a/b/c", false),
    (&["*", "!src"], "src", false),
    (&["*", "!src"], "docs", true),
    (&["**", "!src", "src/gen"], "src/gen", true),
    (&["build", "!build/keep/**"], "build/tmp", true),
    (&["build", "!build/keep/**"], "build/keep", false),
    (&["a", "!a[%-0]c"], "a", false),
    (&["a", "![z-a]"], "a", false),
];

#[test]
fn can_skip_dir_table() {
    for &(patterns, dir, want) in SKIP {
        assert_eq!(
            matcher(patterns).can_skip_dir(dir),
            want,
            "{patterns:?} / {dir:?}"
        );
    }
}

/// Exhaustive check of `can_skip_dir` over a small space: whenever it says
/// a directory may be skipped, every path below it must be excluded. Also
/// checks that the answer is useful, not just `false`.
#[test]
fn can_skip_dir_is_sound_on_small_patterns() {
    const PIECES: &[&str] = &[
        "a", "b", "*", "a/b", "a/*", "*/b", "**/b", "a/**", "**", "?", "[ab]", "a[%-0]b", "b/a/*",
    ];
    const DIRS: &[&str] = &["a", "b", "a/a", "a/b", "b/a", "b/b", "a/b/a"];
    const BELOW: &[&str] = &["a", "b", "a/b", "b/b/a", "x", "b/a"];
    let mut skipped = 0;
    for include in PIECES {
        for except in PIECES {
            for last in [None, Some("b/b")] {
                let mut patterns = vec![include.to_string(), format!("!{except}")];
                patterns.extend(last.map(str::to_string));
                let pm = PatternMatcher::new(&patterns).unwrap();
                for dir in DIRS {
                    if !pm.can_skip_dir(dir) {
                        continue;
                    }
                    skipped += 1;
                    for rest in BELOW {
                        let path = format!("{dir}/{rest}");
                        assert_eq!(
                            pm.matches_or_parent_matches(&path),
                            Ok(true),
                            "{patterns:?} skips {dir:?} but not {path:?}"
                        );
                    }
                }
            }
        }
    }
    assert!(skipped > 300, "only {skipped} skips");
}

/// Pattern characters that exercise every branch of the translation.
fn pattern_strategy() -> impl Strategy<Value = String> {
    proptest::string::string_regex(r"[ab/*?!\[\]^\\.%0:{}()|$+-]{0,10}|[ab/*]{0,6}|\PC{0,8}")
        .expect("valid regex")
}

/// Clean relative paths, as a context walker produces them.
fn path_strategy() -> impl Strategy<Value = String> {
    let element = "[ab.*\\[\\]%0-]{1,3}".prop_filter("clean", |e| e != "." && e != "..");
    proptest::collection::vec(element, 1..5).prop_map(|elements| elements.join("/"))
}

proptest! {
    // No regression files: the crate's tree is shared.
    #![proptest_config(ProptestConfig {
        cases: 512,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn never_panics(
        patterns in proptest::collection::vec(pattern_strategy(), 0..5),
        path in "\\PC{0,12}",
    ) {
        if let Ok(pm) = PatternMatcher::new(&patterns) {
            let _ = pm.matches_or_parent_matches(&path);
            let _ = pm.matches(&path);
            let _ = pm.matches_exact(&path);
            let _ = pm.matches_using_parent_results(&path, &MatchInfo::default());
            let _ = pm.can_skip_dir(&path);
            for pattern in pm.patterns() {
                let _ = pattern.matches(&path);
            }
        }
    }

    #[test]
    fn reading_never_panics(content in proptest::collection::vec(any::<u8>(), 0..256)) {
        if let Ok(patterns) = read_ignore_file(&content) {
            for pattern in &patterns {
                prop_assert!(!pattern.is_empty());
                prop_assert!(pattern == "/" || !pattern.starts_with('/'));
            }
            let _ = PatternMatcher::new(&patterns);
        }
    }

    #[test]
    fn clean_path_is_idempotent(path in "[a./]{0,12}") {
        let once = clean_path(&path);
        prop_assert_eq!(clean_path(&once), once.clone());
        prop_assert!(!once.is_empty());
    }

    /// Walking with `MatchInfo` gives the same answers as matching each path
    /// on its own. A bad pattern errors only when it is evaluated (as in
    /// Docker), and a walk evaluates parent directories that direct
    /// matching may never need: such a walk may fail with `BadPattern`, but
    /// a walk that answers must agree.
    #[test]
    fn walking_agrees_with_direct_matching(
        patterns in proptest::collection::vec(pattern_strategy(), 1..4),
        path in path_strategy(),
    ) {
        if let Ok(pm) = PatternMatcher::new(&patterns) {
            let direct = pm.matches_or_parent_matches(&path);
            if let Ok(direct) = direct {
                match walk(&pm, &path) {
                    Err(IgnoreError::BadPattern { .. }) => {}
                    other => prop_assert_eq!(other, Ok(direct)),
                }
            }
        }
    }

    /// When a walker may skip a directory, everything below it is excluded.
    #[test]
    fn skipped_directories_hide_only_excluded_paths(
        patterns in proptest::collection::vec(pattern_strategy(), 1..4),
        dir in path_strategy(),
        below in proptest::collection::vec(path_strategy(), 1..6),
    ) {
        if let Ok(pm) = PatternMatcher::new(&patterns)
            && pm.can_skip_dir(&dir) {
                for rest in &below {
                    let path = format!("{dir}/{rest}");
                    prop_assert_eq!(
                        pm.matches_or_parent_matches(&path),
                        Ok(true),
                        "{:?} skips {:?} but not {:?}", patterns, dir, path
                    );
                }
            }
    }
}

/// Regression (found by the walking proptest): a bad pattern that direct
/// matching never evaluates can still surface while walking the parent.
#[test]
fn bad_pattern_reached_only_while_walking() {
    let pm = PatternMatcher::new(["**a*", "\\\u{104d8}"]).unwrap();
    assert_eq!(pm.matches_or_parent_matches("%/a"), Ok(true));
    match walk(&pm, "%/a") {
        Err(IgnoreError::BadPattern { .. }) | Ok(true) => {}
        other => panic!("unexpected {other:?}"),
    }
}
