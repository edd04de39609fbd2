//! The real `kiln` binary: help output, `debug` commands, error rendering
//! and exit codes.

use assert_cmd::Command;
use predicates::prelude::*;

fn kiln() -> Command {
    Command::cargo_bin("kiln").unwrap()
}

fn stdout_of(args: &[&str]) -> String {
    let out = kiln().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn help_reads_like_docker() {
    insta::assert_snapshot!("help_top", stdout_of(&["--help"]));
    insta::assert_snapshot!("help_debug", stdout_of(&["debug", "--help"]));
    insta::assert_snapshot!(
        "help_debug_stages",
        stdout_of(&["debug", "stages", "--help"])
    );
}

#[test]
fn debug_parse_prints_buildkit_dump() {
    let dir = tempfile::tempdir().unwrap();
    let df = dir.path().join("Dockerfile");
    std::fs::write(
        &df,
        "FROM busybox AS b\nRUN --mount=type=cache,target=/c echo hi\nCOPY [\"a\", \"b\"]\n",
    )
    .unwrap();
    kiln()
        .args(["debug", "parse", "-f"])
        .arg(&df)
        .assert()
        .success()
        .stdout("(from \"busybox\" \"AS\" \"b\")\n(run [\"--mount=type=cache,target=/c\"] \"echo hi\")\n(copy \"a\" \"b\")\n");
    // `-f -` reads standard input.
    kiln()
        .args(["debug", "parse", "-f", "-"])
        .write_stdin("cmd [\"x\"]")
        .assert()
        .success()
        .stdout("(cmd \"x\")\n");
}

#[test]
fn dockerfile_errors_show_a_code_frame() {
    let dir = tempfile::tempdir().unwrap();
    let df = dir.path().join("Dockerfile");
    std::fs::write(&df, "FROM busybox\nRUNN echo hi\n").unwrap();
    let out = kiln()
        .args(["debug", "stages", "-f"])
        .arg(&df)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    insta::assert_snapshot!("error_unknown_instruction", stderr);
}

#[test]
fn parse_errors_exit_1_with_location() {
    kiln()
        .args(["debug", "parse", "-f", "-"])
        .write_stdin("FROM a\nRUN [\"x\", 1]\n")
        .assert()
        .code(1)
        .stderr(
            predicate::str::contains("Dockerfile:2")
                .and(predicate::str::contains(">>> RUN [\"x\", 1]")),
        );
}

#[test]
fn usage_errors_exit_2() {
    kiln().args(["debug", "parse", "--nope"]).assert().code(2);
    kiln().arg("frobnicate").assert().code(2);
}

#[test]
fn missing_file_is_a_clear_error() {
    kiln()
        .args(["debug", "parse", "-f", "/nonexistent/Dockerfile"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "failed to read Dockerfile /nonexistent/Dockerfile",
        ));
}

#[test]
fn stages_shows_target_and_unused_args() {
    let dir = tempfile::tempdir().unwrap();
    let df = dir.path().join("Dockerfile");
    std::fs::write(&df, "ARG BASE=busybox\nFROM $BASE AS build\nFROM scratch AS unused\nFROM build\nCOPY --from=build / /\n").unwrap();
    let out = kiln()
        .args(["debug", "stages", "--build-arg", "NOPE=1", "-f"])
        .arg(&df)
        .output()
        .unwrap();
    assert!(out.status.success());
    insta::assert_snapshot!("stages_plan", String::from_utf8(out.stdout).unwrap());
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .contains("One or more build-args [NOPE] were not consumed")
    );
}

#[test]
fn debug_llb_prints_the_build_graph() {
    let dir = tempfile::tempdir().unwrap();
    let df = dir.path().join("Dockerfile");
    std::fs::write(
        &df,
        "FROM scratch AS base\nCOPY --chmod=0644 a.txt /a.txt\nWORKDIR /app\nFROM base AS test\nRUN --mount=type=secret,id=tok [\"/check\"]\nFROM base\nCOPY --link --from=base /a.txt /b.txt\nUSER 1000\n",
    )
    .unwrap();
    let out = kiln()
        .args(["--root"])
        .arg(dir.path().join("store"))
        .args(["debug", "llb", "-f"])
        .arg(&df)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    insta::assert_snapshot!("debug_llb", String::from_utf8(out.stdout).unwrap());
}
