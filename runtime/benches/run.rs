//! Start-to-exit time of `true` through the whole path: overlay mount,
//! spec, `runc run`, unmount. Plain timing (no harness): one warm-up run,
//! then the median, minimum and maximum of 20.
//!
//! Needs root, `runc` on `PATH` and `/bin/busybox`; otherwise it says why
//! and does nothing.

use std::path::Path;
use std::time::{Duration, Instant};

use kiln_runtime::{CancellationToken, ExecRequest, Runtime, RuntimeConfig};

const RUNS: usize = 20;
const BUSYBOX: &str = "/bin/busybox";

fn skip_reason() -> Option<&'static str> {
    if !rustix::process::geteuid().is_root() {
        return Some("not running as root");
    }
    if !Path::new(BUSYBOX).is_file() {
        return Some("/bin/busybox is missing (apt-get install busybox-static)");
    }
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join("runc").is_file()))
        .unwrap_or(false);
    if !on_path {
        return Some("runc is not on PATH (apt-get install runc)");
    }
    None
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
    let runtime =
        Runtime::new(RuntimeConfig::new(dir.path().join("state"))).expect("runtime state");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");

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
        "run/true: median {:.1} ms (min {:.1} ms, max {:.1} ms, {RUNS} runs)",
        times[RUNS / 2].as_secs_f64() * 1e3,
        times[0].as_secs_f64() * 1e3,
        times[RUNS - 1].as_secs_f64() * 1e3,
    );
}
