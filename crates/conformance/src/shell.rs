//! BuildKit's shell-word corpus (`buildkit-shell/`, see its `FORMAT.md`)
//! against `kiln_frontend::shell`.

use std::collections::BTreeSet;
use std::error::Error;
use std::path::Path;

use anyhow::{Context, bail};
use kiln_frontend::shell::{Lexer, ShellError};
use serde_json::Value;

use crate::Report;

/// The environment every `envVarTest` line is expanded against.
const ENV_VAR_TEST_ENV: [(&str, &str); 4] = [
    ("PWD", "/home"),
    ("SHELL", "bash"),
    ("KOREAN", "한국어"),
    ("NULL", ""),
];

/// Runs `envVarTest` (the `A` and `U` lines), `wordsTest` and
/// `process-word-cases.json` from `<conformance_dir>/buildkit-shell/`.
pub fn run(conformance_dir: &Path) -> anyhow::Result<Vec<Report>> {
    let dir = conformance_dir.join("buildkit-shell");
    Ok(vec![
        env_var_test(&read(&dir.join("envVarTest"))?),
        words_test(&read(&dir.join("wordsTest"))?),
        process_word_cases(&read(&dir.join("process-word-cases.json"))?)?,
    ])
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("failed to read {}", path.display()))
}

/// `P|input|expected`; `expected` is `error` when the word must fail.
fn env_var_test(text: &str) -> Report {
    let mut report = Report::new("buildkit-shell/envVarTest");
    let lexer = Lexer::new('\\');
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split('|').map(str::trim).collect();
        let [platform, input, expected] = fields[..] else {
            report.check(false, || {
                format!("line {number}: not `P|input|expected`: {line:?}")
            });
            continue;
        };
        match platform {
            "A" | "U" => {}
            "W" => continue,
            _ => {
                report.check(false, || {
                    format!("line {number}: unknown platform {platform:?}")
                });
                continue;
            }
        }
        let got = lexer.process_word(input, &ENV_VAR_TEST_ENV);
        let ok = match (&got, expected) {
            (Err(_), "error") => true,
            (Ok(word), _) => expected != "error" && word == expected,
            (Err(_), _) => false,
        };
        report.check(ok, || {
            format!(
                "line {number}: {input:?}: expected {expected:?}, got {}",
                describe(&got)
            )
        });
    }
    report
}

/// `ENV name=value` lines build up the environment; other lines are
/// `input | w1,w2,...` (or `error`).
fn words_test(text: &str) -> Report {
    let mut report = Report::new("buildkit-shell/wordsTest");
    let lexer = Lexer::new('\\');
    let mut env: Vec<(String, String)> = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        if line.starts_with('#') {
            continue;
        }
        if let Some(assignment) = line.strip_prefix("ENV ") {
            let assignment = assignment.trim_start_matches(' ');
            let (name, value) = assignment.split_once('=').unwrap_or((assignment, ""));
            env.push((name.to_owned(), value.to_owned()));
            continue;
        }
        let Some((input, expected)) = line.split_once('|').filter(|(_, rest)| !rest.contains('|'))
        else {
            report.check(false, || {
                format!("line {number}: not `input | words`: {line:?}")
            });
            continue;
        };
        let input = input.trim();
        let expected: Vec<&str> = expected.trim_start_matches(' ').split(',').collect();
        let got = lexer.process_words(input, &env);
        let ok = match &got {
            Err(_) => expected == ["error"],
            Ok(words) => *words == expected,
        };
        report.check(ok, || {
            let got = match &got {
                Ok(words) => format!("{words:?}"),
                Err(e) => format!("error: {}", chain(e)),
            };
            format!("line {number}: {input:?}: expected {expected:?}, got {got}")
        });
    }
    report
}

/// The JSON cases transcribed from `lex_test.go`, checked with
/// `process_word_with_matches`.
fn process_word_cases(text: &str) -> anyhow::Result<Report> {
    let mut report = Report::new("buildkit-shell/process-word-cases");
    let corpus: Value = serde_json::from_str(text).context("process-word-cases.json")?;
    let Some(cases) = corpus["cases"].as_array() else {
        bail!("process-word-cases.json has no `cases` array");
    };
    let lexer = Lexer::new('\\');
    for (index, case) in cases.iter().enumerate() {
        let number = index + 1;
        let input = case["input"].as_str().unwrap_or_default();
        let env: Vec<(String, String)> = case["env"]
            .as_object()
            .map(|env| {
                env.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                    .collect()
            })
            .unwrap_or_default();
        let got = lexer.process_word_with_matches(input, &env);
        let mut problems = Vec::new();
        match &got {
            Err(e) => {
                if case["expect_error"] != Value::Bool(true) {
                    problems.push(format!("unexpected error: {}", chain(e)));
                } else if let Some(needle) = case["error_contains"].as_str()
                    && !chain(e).contains(needle)
                {
                    problems.push(format!("error {:?} lacks {needle:?}", chain(e)));
                }
            }
            Ok(result) => {
                if case["expect_error"] == Value::Bool(true) {
                    problems.push(format!("expected an error, got {:?}", result.result));
                }
                if let Some(expected) = case["expected"].as_str()
                    && result.result != expected
                {
                    problems.push(format!("expected {expected:?}, got {:?}", result.result));
                }
                for (key, got) in [
                    ("matched", &result.matched),
                    ("unmatched", &result.unmatched),
                ] {
                    if let Some(want) = names(&case[key])
                        && want != *got
                    {
                        problems.push(format!("{key}: expected {want:?}, got {got:?}"));
                    }
                }
            }
        }
        report.check(problems.is_empty(), || {
            format!("case {number}: {input:?}: {}", problems.join("; "))
        });
    }
    Ok(report)
}

/// A JSON array of names, or `None` when the case does not assert it.
fn names(value: &Value) -> Option<BTreeSet<String>> {
    let names = value.as_array()?;
    Some(
        names
            .iter()
            .filter_map(|n| n.as_str().map(str::to_owned))
            .collect(),
    )
}

fn describe(result: &Result<String, ShellError>) -> String {
    match result {
        Ok(word) => format!("{word:?}"),
        Err(e) => format!("error: {}", chain(e)),
    }
}

/// The error and its causes on one line, as BuildKit prints them.
fn chain(error: &dyn Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[ignore = "reads ../shared/conformance; run with --ignored"]
    fn buildkit_shell_corpus() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/conformance");
        let reports = run(&dir).unwrap();
        for report in &reports {
            println!(
                "{}: {} passed, {} failed",
                report.name, report.passed, report.failed
            );
            for failure in &report.failures {
                println!("  {failure}");
            }
        }
        assert!(reports.iter().all(|r| r.failed == 0));
    }

    #[test]
    fn env_var_test_lines() {
        let report = env_var_test(
            "# comment\nA|he$PWD   |   he/home\n\nU|he$pwd.|he.\nW|he$pwd.|he/home.\nA|${}|error\n",
        );
        assert_eq!(
            (report.passed, report.failed),
            (3, 0),
            "{:?}",
            report.failures
        );
    }

    #[test]
    fn words_test_lines() {
        let report = words_test(
            "ENV t=ab c  \nhello${t}d | helloab,c,d\nhel\"lo${t}\" | helloab c  \n\" | error\n",
        );
        assert_eq!(
            (report.passed, report.failed),
            (3, 0),
            "{:?}",
            report.failures
        );
    }

    #[test]
    fn malformed_lines_fail() {
        assert_eq!(env_var_test("A|x\n").failed, 1);
        assert_eq!(words_test("a | b | c\n").failed, 1);
    }
}
