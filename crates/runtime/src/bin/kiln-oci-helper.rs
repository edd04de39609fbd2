//! The embedded OCI runtime's helper as a program of its own, for this
//! crate's tests and benchmarks: `kiln-oci-helper --root DIR run …` is
//! what `kiln __oci --root DIR run …` does.

fn main() -> std::process::ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let code = kiln_runtime::embedded::main(&args);
    std::process::ExitCode::from(u8::try_from(code).unwrap_or(255))
}
