//! `buildkit-parser/`: AST dump goldens, negative files and unit cases.

use std::fs;
use std::path::Path;

use anyhow::Context;
use kiln_frontend::parser::{
    self, ParseErrorKind, chomp_heredoc_content, parse_heredoc, parse_words,
};
use serde_json::Value;

use crate::Report;

pub fn run(conformance: &Path) -> anyhow::Result<Vec<Report>> {
    let dir = conformance.join("buildkit-parser");
    let mut reports = vec![goldens(&dir)?, negatives(&dir)?];
    let unit: Value = serde_json::from_str(&fs::read_to_string(dir.join("unit-cases.json"))?)?;
    reports.push(unit_cases(&dir, &unit)?);
    Ok(reports)
}

fn sorted_dirs(dir: &Path) -> anyhow::Result<Vec<std::path::PathBuf>> {
    let mut dirs: Vec<_> = fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    Ok(dirs)
}

fn goldens(dir: &Path) -> anyhow::Result<Report> {
    let mut report = Report::new("buildkit-parser/testfiles");
    for case in sorted_dirs(&dir.join("testfiles"))? {
        let src = fs::read(case.join("Dockerfile"))?;
        let expected = fs::read_to_string(case.join("result"))?;
        let got = parser::parse_bytes(&src).map(|d| d.dump());
        let name = case
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        report.check(got.as_deref().ok() == Some(expected.as_str()), || {
            format!("{name}: expected\n{expected}got\n{got:?}")
        });
    }
    Ok(report)
}

fn negatives(dir: &Path) -> anyhow::Result<Report> {
    let mut report = Report::new("buildkit-parser/testfiles-negative");
    for case in sorted_dirs(&dir.join("testfiles-negative"))? {
        let src = fs::read(case.join("Dockerfile"))?;
        // A negative case fails either in the parser or in the typed
        // instruction stage (e.g. `ENV PATH`).
        let failed = match parser::parse_bytes(&src) {
            Err(_) => true,
            Ok(df) => kiln_frontend::instructions::parse_all(&df).is_err(),
        };
        report.check(failed, || {
            format!("{}: parsed but must fail", case.display())
        });
    }
    Ok(report)
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn unit_cases(dir: &Path, unit: &Value) -> anyhow::Result<Report> {
    let mut r = Report::new("buildkit-parser/unit-cases");

    // heredoc_extraction
    let he = &unit["heredoc_extraction"];
    let df = parser::parse(he["dockerfile"].as_str().unwrap_or_default());
    for (i, expected) in he["expected_heredocs_by_child_index_from_1"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let got: Option<Vec<Value>> =
            df.as_ref()
                .ok()
                .and_then(|df| df.nodes.get(i + 1))
                .map(|n| {
                    n.heredocs
                .iter()
                .map(|h| {
                    serde_json::json!({"name": h.name, "content": h.content, "expand": h.expand,
                        "chomp": h.chomp, "fd": h.file_descriptor})
                })
                .collect()
                });
        let ok = match (expected, &got) {
            (Value::Null, Some(g)) => g.is_empty(),
            (Value::Array(e), Some(g)) => e == g,
            _ => false,
        };
        r.check(ok, || {
            format!(
                "heredoc_extraction child {}: expected {expected} got {got:?}",
                i + 1
            )
        });
    }

    // heredoc_json_form
    let hj = &unit["heredoc_json_form"];
    let df = parser::parse(hj["dockerfile"].as_str().unwrap_or_default());
    for idx in hj["children_without_heredocs"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let i = idx.as_u64().unwrap_or(0) as usize;
        let ok = df
            .as_ref()
            .is_ok_and(|df| df.nodes.get(i).is_some_and(|n| n.heredocs.is_empty()));
        r.check(ok, || format!("heredoc_json_form child {i} has heredocs"));
    }

    // heredoc_chomp
    for case in unit["heredoc_chomp"].as_array().into_iter().flatten() {
        let got = chomp_heredoc_content(case["input"].as_str().unwrap_or_default());
        r.check(got == case["expected"].as_str().unwrap_or_default(), || {
            format!("heredoc_chomp: {got:?}")
        });
    }

    // heredoc_word
    let hw = &unit["heredoc_word"];
    for w in strs(&hw["valid_name_EOF"]) {
        let got = parse_heredoc(&w);
        r.check(matches!(&got, Ok(Some(h)) if h.name == "EOF"), || {
            format!("heredoc_word valid {w:?}: {got:?}")
        });
    }
    for w in strs(&hw["invalid_error"]) {
        let got = parse_heredoc(&w);
        r.check(got.is_err(), || {
            format!("heredoc_word invalid {w:?}: {got:?}")
        });
    }
    for w in strs(&hw["not_heredoc"]) {
        let got = parse_heredoc(&w);
        r.check(matches!(got, Ok(None)), || {
            format!("heredoc_word not-heredoc {w:?}: {got:?}")
        });
    }

    // heredocs_from_line
    for case in unit["heredocs_from_line"].as_array().into_iter().flatten() {
        let line = case["line"].as_str().unwrap_or_default();
        let got: Vec<String> = parser::heredocs_from_line(line)
            .map(|v| v.into_iter().map(|h| h.name).collect())
            .unwrap_or_default();
        let expected = strs(&case["heredoc_names"]);
        r.check(got == expected, || {
            format!("heredocs_from_line {line:?}: expected {expected:?} got {got:?}")
        });
    }

    // directives
    for case in unit["directives"]["cases"].as_array().into_iter().flatten() {
        let ok = check_directive_case(case);
        r.check(ok, || format!("directives: {case}"));
    }

    // json_arrays
    let ja = &unit["json_arrays"];
    for case in ja["valid"].as_array().into_iter().flatten() {
        let input = case["input"].as_str().unwrap_or_default();
        let got = parser::parse(&format!("CMD {input}"))
            .map(|d| (d.nodes[0].args.clone(), d.nodes[0].json));
        let expected = strs(&case["expected"]);
        let ok = matches!(&got, Ok((args, true)) if *args == expected);
        r.check(ok, || format!("json_arrays valid {input:?}: {got:?}"));
    }
    for input in strs(&ja["not_string_array"]) {
        let got = parser::parse(&format!("CMD {input}"));
        let ok = matches!(&got, Err(e) if e.kind == ParseErrorKind::NotStringArray);
        r.check(ok, || {
            format!("json_arrays not_string_array {input:?}: {got:?}")
        });
    }

    // parse_words
    for case in unit["parse_words"]["cases"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let input = case["input"].as_str().unwrap_or_default();
        let got = parse_words(input, '\\');
        let expected = strs(&case["expected"]);
        r.check(got == expected, || {
            format!("parse_words {input:?}: {got:?}")
        });
    }

    // line_numbers
    let ln = &unit["line_numbers"];
    let src = fs::read(dir.join(ln["file"].as_str().unwrap_or_default()))?;
    let got = parser::parse_bytes(&src);
    let pair = |v: &Value| {
        (
            v[0].as_u64().unwrap_or(0) as usize,
            v[1].as_u64().unwrap_or(0) as usize,
        )
    };
    let ok = got.as_ref().is_ok_and(|df| {
        let children: Vec<_> = ln["children"]
            .as_array()
            .into_iter()
            .flatten()
            .map(pair)
            .collect();
        (df.span.start_line, df.span.end_line) == pair(&ln["root"])
            && df
                .nodes
                .iter()
                .map(|n| (n.span.start_line, n.span.end_line))
                .collect::<Vec<_>>()
                == children
    });
    r.check(ok, || {
        format!(
            "line_numbers: {:?}",
            got.map(|d| d.nodes.iter().map(|n| n.span).collect::<Vec<_>>())
        )
    });

    // empty_continuation_warnings
    let ec = &unit["empty_continuation_warnings"];
    let got = parser::parse(ec["dockerfile"].as_str().unwrap_or_default());
    let ok = got.as_ref().is_ok_and(|df| {
        df.warnings.len() == ec["warning_count"].as_u64().unwrap_or(0) as usize
            && ec["warnings_contain"]
                .as_array()
                .into_iter()
                .flatten()
                .zip(&df.warnings)
                .all(|(subs, w)| {
                    strs(subs).iter().all(|s| w.short.contains(s.as_str()))
                        && w.detail
                            .contains(ec["detail_contains"].as_str().unwrap_or_default())
                })
    });
    r.check(ok, || {
        format!("empty_continuation_warnings: {:?}", got.map(|d| d.warnings))
    });

    // long_line_error
    let ll = &unit["long_line_error"];
    let fill = ll["fill"]["char"]
        .as_str()
        .unwrap_or("a")
        .repeat(ll["fill"]["count"].as_u64().unwrap_or(0) as usize);
    let src = ll["dockerfile_template"]
        .as_str()
        .unwrap_or_default()
        .replace("%s", &fill);
    let got = parser::parse(&src);
    let expected = ll["expected_error"].as_str().unwrap_or_default();
    r.check(
        matches!(&got, Err(e) if e.to_string().contains(expected)),
        || format!("long_line_error: {got:?}"),
    );

    // name_val
    for case in unit["name_val"].as_array().into_iter().flatten() {
        let src = format!(
            "{} {}",
            case["instruction"].as_str().unwrap_or_default(),
            case["input"].as_str().unwrap_or_default()
        );
        let got = parser::parse(&src);
        let ok = match case.get("expect_error").and_then(Value::as_str) {
            Some(err) => {
                matches!(&got, Err(e) if e.to_string().contains(err))
                    || got.as_ref().is_ok_and(|d| {
                        kiln_frontend::instructions::parse_all(d)
                            .is_err_and(|e| e.to_string().contains(err))
                    })
            }
            None => got
                .as_ref()
                .is_ok_and(|d| d.nodes[0].args == strs(&case["expected_dump_args"])),
        };
        r.check(ok, || format!("name_val {src:?}: {got:?}"));
    }

    Ok(r)
}

fn check_directive_case(case: &Value) -> bool {
    use kiln_frontend::directives;
    let input = case["input"].as_str().unwrap_or_default();
    match case["api"].as_str().unwrap_or_default() {
        "parse_all_directives" => {
            let got: Vec<(String, String)> = parser::parse(&format!("{input}FROM x"))
                .map(|d| {
                    d.directives
                        .into_iter()
                        .map(|d| (d.name, d.value))
                        .collect()
                })
                .unwrap_or_default();
            let expected: Vec<(String, String)> = case["expected"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|d| {
                    (
                        d["name"].as_str().unwrap_or_default().to_string(),
                        d["value"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect();
            got == expected
        }
        api @ ("detect_syntax" | "parse_directive") => {
            let got = if api == "detect_syntax" {
                directives::detect_syntax(input)
            } else {
                directives::parse_directive(case["key"].as_str().unwrap_or_default(), input)
            };
            let found = case["found"].as_bool().unwrap_or(false);
            match got {
                None => !found,
                Some(d) => {
                    found
                        && case["ref"].as_str().is_none_or(|r| r == d.reference)
                        && case["cmdline"].as_str().is_none_or(|c| c == d.cmdline)
                        && case["line"].as_u64().is_none_or(|l| l as usize == d.line)
                }
            }
        }
        _ => false,
    }
}
