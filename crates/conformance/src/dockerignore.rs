//! moby/patternmatcher's tests (`dockerignore/patternmatcher-cases.json`)
//! against `kiln_frontend::dockerignore`.
//!
//! One report per section. `compile` is upstream's implementation detail
//! (match strategy and generated Go regexp); kiln generates the same
//! expression on purpose, so it is checked too, in its own report, which a
//! legitimate change of strategy may break without changing behaviour.

use std::path::Path;

use anyhow::{Context, bail};
use kiln_patterns::{IgnoreError, MatchInfo, PatternMatcher, clean_path, read_ignore_file};
use serde_json::Value;

use crate::Report;

/// Runs every section of `<conformance_dir>/dockerignore/patternmatcher-cases.json`.
pub fn run(conformance_dir: &Path) -> anyhow::Result<Vec<Report>> {
    let path = conformance_dir.join("dockerignore/patternmatcher-cases.json");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("failed to read {}", path.display()))?;
    let doc: Value = serde_json::from_str(&text)
        .with_context(|| format!("failed to parse {}", path.display()))?;
    Ok(vec![
        matches_or_parent_matches(cases(&doc, "matches_or_parent_matches")?),
        legacy_matches(cases(&doc, "legacy_matches")?),
        new_patterns(cases(&doc, "new_patterns")?),
        ignorefile_read_all(cases(&doc, "ignorefile_read_all")?),
        compile(cases(&doc, "compile")?),
    ])
}

fn cases<'a>(doc: &'a Value, section: &str) -> anyhow::Result<&'a [Value]> {
    match doc
        .get(section)
        .and_then(|s| s.get("cases"))
        .and_then(Value::as_array)
    {
        Some(cases) => Ok(cases),
        None => bail!("section {section:?} has no `cases` array"),
    }
}

/// Whether a case applies to Unix: all do (`unix_only: true` ones only do),
/// except any marked `windows_only: true` or `os: "windows"`, which the
/// current corpus has none of.
fn runs_on_unix(case: &Value) -> bool {
    let windows_only = case.get("windows_only").and_then(Value::as_bool) == Some(true)
        || case.get("os").and_then(Value::as_str) == Some("windows");
    !windows_only
}

fn strings(value: Option<&Value>) -> Option<Vec<String>> {
    value?
        .as_array()?
        .iter()
        .map(|v| v.as_str().map(str::to_string))
        .collect()
}

/// `pattern` or `patterns`.
fn patterns_of(case: &Value) -> Option<Vec<String>> {
    match case.get("pattern").and_then(Value::as_str) {
        Some(pattern) => Some(vec![pattern.to_string()]),
        None => strings(case.get("patterns")),
    }
}

fn describe<T: std::fmt::Debug>(result: &Result<T, IgnoreError>) -> String {
    match result {
        Ok(value) => format!("{value:?}"),
        Err(err) => format!("error: {err}"),
    }
}

/// The walk upstream's test does for `MatchesUsingParentResults`: every
/// parent directory first, then the path.
fn using_parent_results(pm: &PatternMatcher, path: &str) -> Result<bool, IgnoreError> {
    let parent = match path.rfind('/') {
        Some(i) => clean_path(&path[..=i]),
        None => ".".to_string(),
    };
    let mut info = MatchInfo::default();
    if parent != "." {
        let elements: Vec<&str> = parent.split('/').collect();
        for i in 0..elements.len() {
            // Upstream ignores the parents' errors.
            if let Ok((_, next)) = pm.matches_using_parent_results(&elements[..=i].join("/"), &info)
            {
                info = next;
            }
        }
    }
    pm.matches_using_parent_results(path, &info)
        .map(|(matched, _)| matched)
}

/// `New(patterns)` then `MatchesOrParentMatches(path)`; upstream asserts the
/// same table for `MatchesUsingParentResults`, walking the parents first or
/// starting from an empty `MatchInfo`, so those are checked as well.
fn matches_or_parent_matches(cases: &[Value]) -> Report {
    let mut report = Report::new("dockerignore/matches_or_parent_matches");
    for (index, case) in cases.iter().enumerate() {
        if !runs_on_unix(case) {
            continue;
        }
        let (Some(patterns), Some(path), Some(expected)) = (
            strings(case.get("patterns")),
            case.get("path").and_then(Value::as_str),
            case.get("expected").and_then(Value::as_bool),
        ) else {
            report.check(false, || format!("case {index}: malformed: {case}"));
            continue;
        };
        let pm = match PatternMatcher::new(&patterns) {
            Ok(pm) => pm,
            Err(err) => {
                report.check(false, || {
                    format!("case {index}: New({patterns:?}) failed: {err}")
                });
                continue;
            }
        };
        let direct = pm.matches_or_parent_matches(path);
        let walked = using_parent_results(&pm, path);
        let no_context = pm
            .matches_using_parent_results(path, &MatchInfo::default())
            .map(|(m, _)| m);
        let ok = direct == Ok(expected) && walked == Ok(expected) && no_context == Ok(expected);
        report.check(ok, || {
            format!(
                "case {index}: {patterns:?} on {path:?}: expected {expected}, got {} \
                 (using parent results: {}, without context: {})",
                describe(&direct),
                describe(&walked),
                describe(&no_context)
            )
        });
    }
    report
}

/// What an expected `error` means for a result.
fn error_matches(expected: &str, err: &IgnoreError) -> bool {
    match expected {
        "ErrBadPattern" => matches!(err, IgnoreError::BadPattern { .. }),
        message => err.to_string() == message,
    }
}

/// The deprecated top-level `Matches(file, patterns)`: `New`, then
/// `filepath.Clean(file)`, `.` never matches, then `PatternMatcher.Matches`.
fn legacy_matches(cases: &[Value]) -> Report {
    let mut report = Report::new("dockerignore/legacy_matches");
    for (index, case) in cases.iter().enumerate() {
        if !runs_on_unix(case) {
            continue;
        }
        let (Some(patterns), Some(path), Some(expected)) = (
            patterns_of(case),
            case.get("path").and_then(Value::as_str),
            case.get("expected").and_then(Value::as_bool),
        ) else {
            report.check(false, || format!("case {index}: malformed: {case}"));
            continue;
        };
        let expected_error = case.get("error").and_then(Value::as_str);
        let got = PatternMatcher::new(&patterns).and_then(|pm| {
            let file = clean_path(path);
            if file == "." {
                Ok(false)
            } else {
                pm.matches(&file)
            }
        });
        let ok = match (&got, expected_error) {
            (Ok(matched), None) => *matched == expected,
            (Err(err), Some(want)) => error_matches(want, err),
            _ => false,
        };
        report.check(ok, || {
            let want = expected_error.map_or(format!("{expected}"), |e| format!("error {e}"));
            format!(
                "case {index}: {patterns:?} on {path:?}: expected {want}, got {}",
                describe(&got)
            )
        });
    }
    report
}

/// `New(patterns)`: pattern count, exclusions, errors, and patterns that
/// only fail when used.
fn new_patterns(cases: &[Value]) -> Report {
    let mut report = Report::new("dockerignore/new_patterns");
    for (index, case) in cases.iter().enumerate() {
        if !runs_on_unix(case) {
            continue;
        }
        let Some(patterns) = strings(case.get("patterns")) else {
            report.check(false, || format!("case {index}: malformed: {case}"));
            continue;
        };
        let built = PatternMatcher::new(&patterns);
        if let Some(want) = case.get("error").and_then(Value::as_str) {
            let ok = matches!(&built, Err(err) if error_matches(want, err));
            report.check(ok, || {
                format!(
                    "case {index}: New({patterns:?}): expected error {want:?}, got {}",
                    describe(
                        &built
                            .as_ref()
                            .map(|pm| pm.patterns().len())
                            .map_err(Clone::clone)
                    )
                )
            });
            continue;
        }
        let pm = match built {
            Ok(pm) => pm,
            Err(err) => {
                report.check(false, || {
                    format!("case {index}: New({patterns:?}) failed: {err}")
                });
                continue;
            }
        };
        let mut problems = Vec::new();
        if let Some(count) = case.get("pattern_count").and_then(Value::as_u64)
            && pm.patterns().len() as u64 != count
        {
            problems.push(format!(
                "expected {count} patterns, got {}",
                pm.patterns().len()
            ));
        }
        if let Some(exclusions) = case.get("has_exclusions").and_then(Value::as_bool)
            && pm.exclusions() != exclusions
        {
            problems.push(format!("expected exclusions() = {exclusions}"));
        }
        if let Some(path) = case.get("match_path").and_then(Value::as_str) {
            let want = case.get("match_error").and_then(Value::as_str);
            // Twice: a pattern that failed must keep failing.
            for attempt in 1..=2 {
                for (name, got) in [
                    (
                        "matches_or_parent_matches",
                        pm.matches_or_parent_matches(path),
                    ),
                    ("matches", pm.matches(path)),
                ] {
                    let ok = match (&got, want) {
                        (Err(err), Some(want)) => error_matches(want, err),
                        (Ok(_), None) => true,
                        _ => false,
                    };
                    if !ok {
                        problems.push(format!(
                            "{name}({path:?}) attempt {attempt}: expected {want:?}, got {}",
                            describe(&got)
                        ));
                    }
                }
            }
        }
        report.check(problems.is_empty(), || {
            format!("case {index}: New({patterns:?}): {}", problems.join("; "))
        });
    }
    report
}

/// `ignorefile.ReadAll(content)`.
fn ignorefile_read_all(cases: &[Value]) -> Report {
    let mut report = Report::new("dockerignore/ignorefile_read_all");
    for (index, case) in cases.iter().enumerate() {
        if !runs_on_unix(case) {
            continue;
        }
        let (Some(content), Some(expected)) = (
            case.get("content").and_then(Value::as_str),
            strings(case.get("expected")),
        ) else {
            report.check(false, || format!("case {index}: malformed: {case}"));
            continue;
        };
        let got = read_ignore_file(content.as_bytes());
        report.check(got.as_ref() == Ok(&expected), || {
            format!(
                "case {index}: {content:?}: expected {expected:?}, got {}",
                describe(&got)
            )
        });
    }
    report
}

/// Informative upstream detail: the match strategy and the Go regexp built
/// for a pattern (`regexp_slash`; `regexp_backslash` is Windows).
fn compile(cases: &[Value]) -> Report {
    let mut report = Report::new("dockerignore/compile");
    for (index, case) in cases.iter().enumerate() {
        if !runs_on_unix(case) {
            continue;
        }
        let (Some(pattern), Some(kind)) = (
            case.get("pattern").and_then(Value::as_str),
            case.get("match_type").and_then(Value::as_str),
        ) else {
            report.check(false, || format!("case {index}: malformed: {case}"));
            continue;
        };
        let regexp = case.get("regexp_slash").and_then(Value::as_str);
        let pm = match PatternMatcher::new([pattern]) {
            Ok(pm) => pm,
            Err(err) => {
                report.check(false, || {
                    format!("case {index}: New([{pattern:?}]) failed: {err}")
                });
                continue;
            }
        };
        let Some(compiled) = pm.patterns().first() else {
            report.check(false, || {
                format!("case {index}: {pattern:?} gave no pattern")
            });
            continue;
        };
        let got_kind = compiled.match_kind().as_str();
        let got_regexp = compiled.go_regexp();
        report.check(got_kind == kind && got_regexp == regexp, || {
            format!(
                "case {index}: {pattern:?}: expected {kind} {regexp:?}, got {got_kind} {got_regexp:?}"
            )
        });
    }
    report
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    /// Runs the corpus: `cargo test -p kiln-conformance dockerignore -- --ignored --nocapture`.
    /// `KILN_CONFORMANCE_DIR` overrides the default `../../shared/conformance`.
    #[test]
    #[ignore = "reads the shared conformance corpus"]
    fn corpus() {
        let dir = std::env::var_os("KILN_CONFORMANCE_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/conformance")
            });
        let reports = super::run(&dir).unwrap();
        let mut failed = 0;
        for report in &reports {
            println!(
                "{}: {} passed, {} failed",
                report.name, report.passed, report.failed
            );
            for failure in &report.failures {
                println!("  {failure}");
            }
            failed += report.failed;
        }
        assert_eq!(failed, 0);
    }
}
