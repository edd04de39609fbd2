//! `oci-image-spec/`: schema validation cases and the spec's examples,
//! checked with `kiln_oci::validate`.

use std::fs;
use std::path::Path;

use kiln_oci::validate::validate;
use serde_json::Value;

use crate::Report;

pub fn run(conformance: &Path) -> anyhow::Result<Vec<Report>> {
    let dir = conformance.join("oci-image-spec");
    let cases: Value = serde_json::from_str(&fs::read_to_string(
        dir.join("schema-validation-cases.json"),
    )?)?;
    let mut report = Report::new("oci-image-spec/schema-validation");
    for case in cases["cases"].as_array().into_iter().flatten() {
        let media_type = case["media_type"].as_str().unwrap_or_default();
        let body = case["body"].as_str().unwrap_or_default();
        let expect = case["expect_valid"].as_bool().unwrap_or(false);
        let got = validate(media_type, body.as_bytes());
        report.check(got.is_ok() == expect, || {
            format!(
                "{} ({}): expected valid={expect}, got {got:?}",
                case["id"], case["comment"]
            )
        });
    }
    let examples: Value =
        serde_json::from_str(&fs::read_to_string(dir.join("spec-examples/index.json"))?)?;
    let mut ex = Report::new("oci-image-spec/spec-examples");
    for e in examples["examples"].as_array().into_iter().flatten() {
        let file = e["file"].as_str().unwrap_or_default();
        let bytes = fs::read(dir.join("spec-examples").join(file))?;
        let expect = e["expect_valid"].as_bool().unwrap_or(true);
        let got = validate(e["media_type"].as_str().unwrap_or_default(), &bytes);
        ex.check(got.is_ok() == expect, || {
            format!("{file}: expected valid={expect}, got {got:?}")
        });
    }
    Ok(vec![report, ex])
}
