//! Start-to-exit time of `true` through the whole path: overlay mount,
//! spec, the OCI runtime, unmount; once with the embedded runtime
//! (libcontainer through the `kiln-oci-helper` program, as `kiln __oci`)
//! and once with `runc run`. Plain timing (no harness): one warm-up run,
//! then the median, minimum and maximum of 20.
//!
//! Needs root and `/bin/busybox` (and `runc` on `PATH` for the runc line);
//! otherwise it says why and skips.

use std::path::Path;
use std::time::{Duration, Instant};

use kiln_runtime::{CancellationToken, ExecRequest, OciRuntime, Runtime, RuntimeConfig};

const RUNS: usize = 20;
const BUSYBOX: &str = "/bin/busybox";

fn skip_reason() -> Option<&'static str> {
    if !rustix::process::geteuid().is_root() {
        return Some("not running as root");
    }
    if !Path::new(BUSYBOX).is_file() {
        return Some("/bin/busybox is missing (apt-get install busybox-static)");
    }
    None
}

fn runc_on_path() -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join("runc").is_file()))
        .unwrap_or(false)
}

fn main() {
    if let Some(reason) = skip_reason() {
        println!("run/true: skipped: {reason}");
        return;
    }
    let dir = tempfile::tempdir().expect("temporary directory");
    let layer = dir.path().join("snapshots/base/fs");
    std::fs::create_dir_all(layer.join("bin")).expect("create layer");
    std::fs::copy(BUSYBOX, layer.join("bin/busybox")).expect("copy busybox");
    std::os::unix::fs::symlink("busybox", layer.join("bin/true")).expect("symlink");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");

    let runtimes = [
        (
            "embedded",
            Some(OciRuntime::Embedded {
                program: env!("CARGO_BIN_EXE_kiln-oci-helper").into(),
                args: Vec::new(),
            }),
        ),
        ("runc", runc_on_path().then(OciRuntime::default)),
    ];
    for (name, oci) in runtimes {
        let Some(oci) = oci else {
            println!("run/true/{name}: skipped: runc is not on PATH (apt-get install runc)");
            continue;
        };
        let mut config = RuntimeConfig::new(dir.path().join("state").join(name));
        config.runtime = oci;
        let runtime = Runtime::new(config).expect("runtime state");
        let once = || {
            let req = ExecRequest::new(vec![layer.clone()], vec!["/bin/true".into()]);
            let start = Instant::now();
            let result = rt
                .block_on(runtime.run(req, &CancellationToken::new()))
                .expect("run true");
            let elapsed = start.elapsed();
            assert_eq!(result.exit_code, 0);
            elapsed
        };
        once();
        let mut times: Vec<Duration> = (0..RUNS).map(|_| once()).collect();
        times.sort();
        println!(
            "run/true/{name}: median {:.1} ms (min {:.1} ms, max {:.1} ms, {RUNS} runs)",
            times[RUNS / 2].as_secs_f64() * 1e3,
            times[0].as_secs_f64() * 1e3,
            times[RUNS - 1].as_secs_f64() * 1e3,
        );
    }
}
