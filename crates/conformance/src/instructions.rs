//! `buildkit-instructions/cases.json`: typed-instruction errors, COPY
//! sources, RUN heredocs, HEALTHCHECK, flags and doc comments.

use std::fs;
use std::path::Path;

use kiln_frontend::instructions::{Command, parse_instruction};
use kiln_frontend::parser::{self, Node, Span};
use kiln_frontend::stages::{self, BuildOptions, PlatformArgs};
use serde_json::Value;

use crate::Report;

fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn first(src: &str) -> Result<kiln_frontend::instructions::Instruction, String> {
    let df = parser::parse(src).map_err(|e| e.to_string())?;
    parse_instruction(&df.nodes[0]).map_err(|e| e.to_string())
}

pub fn run(conformance: &Path) -> anyhow::Result<Vec<Report>> {
    let cases: Value = serde_json::from_str(&fs::read_to_string(
        conformance.join("buildkit-instructions/cases.json"),
    )?)?;
    let mut errors = Report::new("buildkit-instructions/error_cases");
    for case in cases["error_cases"].as_array().into_iter().flatten() {
        let expected = case["expected_error"].as_str().unwrap_or_default();
        let got = match case["dockerfile"].as_str() {
            Some(src) => first(src).map(|_| ()),
            None => {
                let args = strs(&case["ast_args"]);
                let keyword = if case["name"]
                    .as_str()
                    .unwrap_or_default()
                    .starts_with("LABEL")
                {
                    "LABEL"
                } else {
                    "ENV"
                };
                let node = Node {
                    keyword: keyword.into(),
                    original: String::new(),
                    flags: vec![],
                    args,
                    sub: None,
                    json: false,
                    heredocs: vec![],
                    span: Span::default(),
                    comments: vec![],
                };
                parse_instruction(&node)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
        };
        errors.check(matches!(&got, Err(e) if e.contains(expected)), || {
            format!(
                "{}: expected error containing {expected:?}, got {got:?}",
                case["name"]
            )
        });
    }

    let mut copy = Report::new("buildkit-instructions/copy_sources_and_dest");
    for case in cases["copy_sources_and_dest"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let got = first(case["dockerfile"].as_str().unwrap_or_default());
        let ok = match &got {
            Ok(ins) => match &ins.command {
                Command::Copy(c) => {
                    let contents: Vec<Value> = c
                        .paths
                        .source_contents
                        .iter()
                        .map(|f| serde_json::json!({"path": f.name, "data": f.content(), "expand": f.expand}))
                        .collect();
                    c.paths.dest == case["dest"].as_str().unwrap_or_default()
                        && c.paths.source_paths == strs(&case["source_paths"])
                        && Value::Array(contents) == case["source_contents"]
                }
                _ => false,
            },
            Err(_) => false,
        };
        copy.check(ok, || format!("{}: {got:?}", case["dockerfile"]));
    }

    let mut run = Report::new("buildkit-instructions/run_heredoc");
    for case in cases["run_heredoc"].as_array().into_iter().flatten() {
        let got = first(case["dockerfile"].as_str().unwrap_or_default());
        let ok = match &got {
            Ok(ins) => match &ins.command {
                Command::Run(r) => {
                    let files: Vec<Value> = r
                        .cmd
                        .files
                        .iter()
                        .map(|f| serde_json::json!({"name": f.name, "data": f.data, "chomp": f.chomp}))
                        .collect();
                    r.cmd.prepend_shell == case["prepend_shell"].as_bool().unwrap_or(false)
                        && r.cmd.args == strs(&case["cmdline"])
                        && Value::Array(files) == case["files"]
                }
                _ => false,
            },
            Err(_) => false,
        };
        run.check(ok, || format!("{}: {got:?}", case["dockerfile"]));
    }

    let mut misc = Report::new("buildkit-instructions/misc");
    for case in cases["misc"].as_array().into_iter().flatten() {
        let src = match (case["dockerfile"].as_str(), case["flag"].as_str()) {
            (Some(src), _) => src.to_string(),
            (None, Some(flag)) => format!("HEALTHCHECK {flag} CMD /bin/true"),
            _ => String::new(),
        };
        let got = first(&src);
        let expect = &case["expect"];
        let ok = match case["expected_error"].as_str() {
            Some(e) => matches!(&got, Err(msg) if msg.contains(e)),
            None => match &got {
                Err(_) => false,
                Ok(ins) => {
                    let hc_ok = expect.get("healthcheck_test").is_none_or(
                        |t| matches!(&ins.command, Command::Healthcheck(h) if h.test == strs(t)),
                    );
                    let flags_ok = expect.get("flags_used").is_none_or(
                        |f| matches!(&ins.command, Command::Run(r) if r.flags_used == strs(f)),
                    );
                    hc_ok && flags_ok
                }
            },
        };
        misc.check(ok, || format!("{}: {got:?}", case["name"]));
    }

    let mut docs = Report::new("buildkit-instructions/doc_comments");
    let doc_cases = match &cases["doc_comments"] {
        Value::Array(a) => a.clone(),
        other => vec![other.clone()],
    };
    for case in &doc_cases {
        let df = parser::parse(case["dockerfile"].as_str().unwrap_or_default())?;
        let opts = BuildOptions::for_platform(PlatformArgs {
            os: "linux".into(),
            arch: "amd64".into(),
            variant: String::new(),
        });
        let instructions =
            kiln_frontend::instructions::parse_all(&df).map_err(|e| anyhow::anyhow!("{e}"))?;
        let plan = stages::plan(&df, &opts).map_err(|e| anyhow::anyhow!("{e}"))?;
        let expect = &case["expect"];
        let stage_doc = match &plan.stages[0].from.command {
            Command::From(f) => f.doc.clone(),
            _ => String::new(),
        };
        let meta_docs: Vec<Value> = instructions
            .iter()
            .take_while(|i| !matches!(i.command, Command::From(_)))
            .flat_map(|i| match &i.command {
                Command::Arg(d) => d
                    .iter()
                    .map(|a| serde_json::json!({"key": a.key, "doc": a.doc}))
                    .collect(),
                _ => vec![],
            })
            .collect();
        let stage_cmds: Vec<Value> = plan.stages[0]
            .instructions
            .iter()
            .map(|i| match &i.command {
                Command::Arg(d) => serde_json::json!({"arg_keys": d.iter().map(|a| serde_json::json!({"key": a.key, "doc": a.doc})).collect::<Vec<_>>()}),
                _ => Value::Null,
            })
            .collect();
        let ok = stage_doc == expect["stage0_doc_comment"].as_str().unwrap_or_default()
            && Value::Array(meta_docs.clone()) == expect["meta_args"]
            && Value::Array(stage_cmds.clone()) == expect["stage0_commands"];
        docs.check(ok, || {
            format!("doc comments: stage {stage_doc:?} meta {meta_docs:?} cmds {stage_cmds:?}")
        });
    }
    Ok(vec![errors, copy, run, misc, docs])
}
