//! Shared fixtures for the tests that run real containers. They need root
//! and a static busybox at `/bin/busybox` (Debian's `busybox-static`), and
//! for the runc runs `runc` on `PATH`; without them the tests return early
//! with a reason.
//!
//! Every container test runs once per OCI runtime ([`Kind`]):
//! [`both_runtimes!`] makes `NAME::embedded` and `NAME::runc` from
//! `async fn NAME(kind: Kind)`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use kiln_runtime::{
    CancellationToken, Error, ExecRequest, ExecResult, OciRuntime, OutputChunk, Runtime,
    RuntimeConfig, Stream,
};
use tokio::sync::mpsc;

pub const BUSYBOX: &str = "/bin/busybox";

const APPLETS: &[&str] = &[
    "sh", "echo", "cat", "ls", "id", "touch", "rm", "mkdir", "true", "false", "sleep", "pwd",
    "env", "wc", "ip",
];

/// The OCI runtimes every container test runs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// libcontainer through this crate's `kiln-oci-helper` program.
    Embedded,
    /// `runc` from `PATH`.
    Runc,
}

impl Kind {
    pub fn runtime(self) -> OciRuntime {
        match self {
            Kind::Embedded => OciRuntime::Embedded {
                program: env!("CARGO_BIN_EXE_kiln-oci-helper").into(),
                args: Vec::new(),
            },
            Kind::Runc => OciRuntime::Runc("runc".into()),
        }
    }
}

/// `NAME::embedded` and `NAME::runc` tests running `async fn NAME(kind: Kind)`.
#[macro_export]
macro_rules! both_runtimes {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            #[cfg_attr(not(kiln_containers), ignore = "needs root and /bin/busybox")]
            async fn embedded() {
                super::$name(super::common::Kind::Embedded).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            #[cfg_attr(
                not(all(kiln_containers, kiln_runc)),
                ignore = "needs root and /bin/busybox and runc"
            )]
            async fn runc() {
                super::$name(super::common::Kind::Runc).await
            }
        }
    )*};
}

/// Why the container tests cannot run here with `kind`, if they cannot.
pub fn skip_reason_for(kind: Kind) -> Option<String> {
    skip_reason().or_else(|| (kind == Kind::Runc).then(runc_missing).flatten())
}

fn runc_missing() -> Option<String> {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join("runc").is_file()))
        .unwrap_or(false);
    (!on_path).then(|| "runc is not on PATH (apt-get install runc)".into())
}

/// Why the container tests cannot run here at all, if they cannot.
pub fn skip_reason() -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some("not running as root".into());
    }
    if !Path::new(BUSYBOX).is_file() {
        return Some(format!(
            "{BUSYBOX} is missing (apt-get install busybox-static)"
        ));
    }
    None
}

/// Fails the test when containers cannot run: such tests are marked
/// ignored at build time (`cfg(kiln_containers)`, see kiln-testkit), so this
/// only fires when that probe and the machine disagree.
#[macro_export]
macro_rules! require_containers {
    () => {
        if let Some(reason) = common::skip_reason() {
            panic!("cannot run: {reason}");
        }
    };
    ($kind:expr) => {
        if let Some(reason) = common::skip_reason_for($kind) {
            panic!("cannot run: {reason}");
        }
    };
}

/// A temporary state directory and a runtime using it.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub kind: Kind,
    pub runtime: Runtime,
}

impl Fixture {
    pub fn new(kind: Kind) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let mut config = RuntimeConfig::new(dir.path().join("state"));
        config.runtime = kind.runtime();
        let runtime = Runtime::new(config).unwrap();
        Fixture { dir, kind, runtime }
    }

    /// Runs `req` to completion, never cancelled.
    pub async fn exec(&self, req: ExecRequest) -> Result<ExecResult, Error> {
        self.runtime.run(req, &CancellationToken::new()).await
    }

    /// A new, empty layer directory named like a snapshot (`<hex>/fs`).
    pub fn layer(&self, n: usize) -> PathBuf {
        let fs = self
            .dir
            .path()
            .join("snapshots")
            .join(format!("{n:064x}"))
            .join("fs");
        std::fs::create_dir_all(&fs).unwrap();
        fs
    }

    /// A busybox base layer: `/bin/busybox` with applet symlinks, a root
    /// passwd entry and `/data/old`, `/dir/a`.
    pub fn busybox_layer(&self) -> PathBuf {
        let fs = self.layer(0);
        std::fs::create_dir_all(fs.join("bin")).unwrap();
        std::fs::copy(BUSYBOX, fs.join("bin/busybox")).unwrap();
        for applet in APPLETS {
            std::os::unix::fs::symlink("busybox", fs.join("bin").join(applet)).unwrap();
        }
        std::fs::create_dir_all(fs.join("etc")).unwrap();
        std::fs::write(
            fs.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            fs.join("etc/group"),
            "root:x:0:\napp:x:1000:\nwheel:x:10:app\n",
        )
        .unwrap();
        std::fs::create_dir_all(fs.join("data")).unwrap();
        std::fs::write(fs.join("data/old"), "old\n").unwrap();
        std::fs::write(fs.join("data/kept"), "kept\n").unwrap();
        std::fs::create_dir_all(fs.join("dir")).unwrap();
        std::fs::write(fs.join("dir/a"), "a\n").unwrap();
        fs
    }
}

/// A sender for a request and a task collecting (stdout, stderr).
pub fn capture() -> (
    mpsc::Sender<OutputChunk>,
    tokio::task::JoinHandle<(String, String)>,
) {
    let (tx, mut rx) = mpsc::channel::<OutputChunk>(16);
    let task = tokio::spawn(async move {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        while let Some(chunk) = rx.recv().await {
            match chunk.stream {
                Stream::Stdout => out.extend_from_slice(&chunk.data),
                Stream::Stderr => err.extend_from_slice(&chunk.data),
            }
        }
        (
            String::from_utf8_lossy(&out).into_owned(),
            String::from_utf8_lossy(&err).into_owned(),
        )
    });
    (tx, task)
}

pub fn sh(script: &str) -> Vec<String> {
    vec!["/bin/sh".into(), "-c".into(), script.into()]
}

/// (name, entry type, uid) of every entry of a layer tar.
pub fn tar_entries(tar_bytes: &[u8]) -> Vec<(String, tar::EntryType, u64)> {
    let mut archive = tar::Archive::new(tar_bytes);
    archive
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.path().unwrap().to_string_lossy().into_owned(),
                e.header().entry_type(),
                e.header().uid().unwrap(),
            )
        })
        .collect()
}
