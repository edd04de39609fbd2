//! Any byte sequence as a Dockerfile gives a parse or an error, never a
//! panic; every later stage copes with whatever the parser accepts.

use kiln_frontend::parser;
use kiln_frontend::stages::{self, BuildOptions, PlatformArgs, StageScope};
use proptest::prelude::*;

fn opts() -> BuildOptions {
    BuildOptions::for_platform(PlatformArgs {
        os: "linux".into(),
        arch: "amd64".into(),
        variant: String::new(),
    })
}

/// Runs the whole frontend on `src`; returns whether it parsed.
fn exercise(src: &[u8]) -> bool {
    let Ok(df) = parser::parse_bytes(src) else {
        return false;
    };
    let _ = df.dump();
    let o = opts();
    if let Ok(plan) = stages::plan(&df, &o) {
        for stage in &plan.stages {
            let mut scope = StageScope::new(&plan, &o, vec![("PATH".into(), "/bin".into())]);
            for ins in &stage.instructions {
                let _ = scope.dispatch(ins);
            }
        }
    }
    true
}

/// Fragments that reach the interesting paths more often than random bytes.
fn fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("FROM ".to_string()),
        Just("RUN ".to_string()),
        Just("COPY ".to_string()),
        Just("ENV ".to_string()),
        Just("ARG ".to_string()),
        Just("ONBUILD ".to_string()),
        Just("HEALTHCHECK ".to_string()),
        Just(" AS ".to_string()),
        Just("--from=".to_string()),
        Just("--mount=type=cache,target=".to_string()),
        Just("<<EOF".to_string()),
        Just("<<-'X'".to_string()),
        Just("EOF".to_string()),
        Just("\n".to_string()),
        Just("\r\n".to_string()),
        Just("\\\n".to_string()),
        Just("`".to_string()),
        Just("# escape=`\n".to_string()),
        Just("# syntax=x\n".to_string()),
        Just("[\"a\", \"b\"]".to_string()),
        Just("[".to_string()),
        Just("${A:-${B}}".to_string()),
        Just("$A".to_string()),
        Just("'".to_string()),
        Just("\"".to_string()),
        Just("=".to_string()),
        Just("\u{feff}".to_string()),
        "[a-z0-9/ .:=-]{0,8}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        exercise(&bytes);
    }

    #[test]
    fn dockerfile_shaped_input_never_panics(parts in proptest::collection::vec(fragment(), 0..40)) {
        exercise(parts.concat().as_bytes());
    }

    #[test]
    fn dump_is_stable_under_reparse(parts in proptest::collection::vec(fragment(), 1..20)) {
        let src = parts.concat();
        if let Ok(a) = parser::parse(&src) {
            let b = parser::parse(&src).unwrap();
            prop_assert_eq!(a.dump(), b.dump());
        }
    }
}
