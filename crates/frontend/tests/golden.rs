//! Golden tests with kiln's own fixtures: the parse dump of every
//! Dockerfile under `tests/fixtures/parse/`, and the code frame and
//! message of every failing one under `tests/fixtures/errors/`.

use std::fs;
use std::path::Path;

use kiln_frontend::diagnostic::code_frame;
use kiln_frontend::parser;
use kiln_frontend::stages::{self, BuildOptions, PlatformArgs};

fn cases(dir: &str) -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(dir);
    let mut out: Vec<(String, String)> = fs::read_dir(&root)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, fs::read_to_string(p.join("Dockerfile")).unwrap())
        })
        .collect();
    out.sort();
    out
}

#[test]
fn parse_dumps() {
    for (name, src) in cases("parse") {
        let df = parser::parse(&src).unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut out = df.dump();
        for n in &df.nodes {
            for h in &n.heredocs {
                out.push_str(&format!(
                    "# line {}: heredoc {:?} expand={} chomp={} fd={} content={:?}\n",
                    n.span.start_line, h.name, h.expand, h.chomp, h.file_descriptor, h.content
                ));
            }
        }
        for w in &df.warnings {
            out.push_str(&format!(
                "# warning line {}: {}\n",
                w.span.start_line, w.short
            ));
        }
        insta::assert_snapshot!(format!("parse_{name}"), out);
    }
}

#[test]
fn error_frames() {
    let opts = BuildOptions::for_platform(PlatformArgs {
        os: "linux".into(),
        arch: "amd64".into(),
        variant: String::new(),
    });
    for (name, src) in cases("errors") {
        let (span, message) = match parser::parse(&src) {
            Err(e) => (e.span, e.to_string()),
            Ok(df) => match stages::plan(&df, &opts) {
                Err(e) => (e.span, e.to_string()),
                Ok(_) => panic!("{name}: expected an error"),
            },
        };
        let out = format!("{}error: {message}\n", code_frame("Dockerfile", &src, span));
        insta::assert_snapshot!(format!("error_{name}"), out);
    }
}
