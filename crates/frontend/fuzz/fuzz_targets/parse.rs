//! Any bytes as a Dockerfile: parse, type, plan and expand must never panic.
#![no_main]

use kiln_frontend::parser;
use kiln_frontend::stages::{self, BuildOptions, PlatformArgs, StageScope};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(df) = parser::parse_bytes(data) else { return };
    let _ = df.dump();
    let opts = BuildOptions::for_platform(PlatformArgs { os: "linux".into(), arch: "amd64".into(), variant: String::new() });
    if let Ok(plan) = stages::plan(&df, &opts) {
        for stage in &plan.stages {
            let mut scope = StageScope::new(&plan, &opts, Vec::new());
            for ins in &stage.instructions {
                let _ = scope.dispatch(ins);
            }
        }
    }
});
