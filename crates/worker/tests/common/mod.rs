//! Shared fixtures: a store with a busybox image made from `/bin/busybox`,
//! a worker over it, and graph helpers. The tests need root (overlay
//! mounts), `runc` on `PATH` and a static busybox at `/bin/busybox`;
//! without them they return early with a reason.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kiln_solver::{
    Event, EventKind, ExecMount, ExecOp, Graph, Op, OpMetadata, Solution, SolveError, Solver,
    SolverOptions, SourceOp, VertexId,
};
use kiln_store::{ImportOptions, Store};
use kiln_worker::{FsRef, Worker, WorkerConfig};
use tokio::sync::mpsc;

pub const BUSYBOX: &str = "/bin/busybox";
pub const IMAGE: &str = "docker.io/library/busybox:kiln-test";

const APPLETS: &[&str] = &[
    "sh", "echo", "cat", "ls", "id", "touch", "rm", "mkdir", "true", "false", "test", "stat", "wc",
    "head", "env", "sleep", "printf",
];

pub fn skip_reason() -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some("not running as root".into());
    }
    if !Path::new(BUSYBOX).is_file() {
        return Some(format!(
            "{BUSYBOX} is missing (apt-get install busybox-static)"
        ));
    }
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join("runc").is_file()))
        .unwrap_or(false);
    if !on_path {
        return Some("runc is not on PATH (apt-get install runc)".into());
    }
    None
}

/// Fails the test when what it needs is missing: such tests are marked
/// ignored at build time (`cfg(kiln_containers)`, see kiln-testkit), so
/// this only fires when that probe and the machine disagree.
#[macro_export]
macro_rules! require_containers {
    () => {
        if let Some(reason) = common::skip_reason() {
            panic!("cannot run: {reason}");
        }
    };
}

/// A busybox root filesystem tar: `/bin/busybox`, applet symlinks,
/// `/etc/passwd` and `/etc/group` with an `app` user (1000) and a `staff`
/// group (50), `/tmp`.
fn busybox_tar() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let dir = |b: &mut tar::Builder<Vec<u8>>, name: &str, mode: u32| {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(mode);
        h.set_size(0);
        h.set_mtime(1_700_000_000);
        b.append_data(&mut h, name, std::io::empty()).unwrap();
    };
    let file = |b: &mut tar::Builder<Vec<u8>>, name: &str, mode: u32, data: &[u8]| {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(mode);
        h.set_size(data.len() as u64);
        h.set_mtime(1_700_000_000);
        b.append_data(&mut h, name, data).unwrap();
    };
    dir(&mut b, "bin/", 0o755);
    dir(&mut b, "etc/", 0o755);
    dir(&mut b, "tmp/", 0o1777);
    file(
        &mut b,
        "bin/busybox",
        0o755,
        &std::fs::read(BUSYBOX).unwrap(),
    );
    for applet in APPLETS {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_mode(0o777);
        h.set_size(0);
        h.set_mtime(1_700_000_000);
        b.append_link(&mut h, format!("bin/{applet}"), "busybox")
            .unwrap();
    }
    file(
        &mut b,
        "etc/passwd",
        0o644,
        b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001:app:/home/app:/bin/sh\n",
    );
    file(
        &mut b,
        "etc/group",
        0o644,
        b"root:x:0:\nappgrp:x:1001:\nstaff:x:50:\n",
    );
    b.into_inner().unwrap()
}

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub store: Store,
    pub context: PathBuf,
}

impl Fixture {
    pub fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("root")).unwrap();
        let record = store
            .import_rootfs(
                std::io::Cursor::new(busybox_tar()),
                &ImportOptions {
                    config: Default::default(),
                    platform: kiln_oci::Platform::new("linux", "amd64"),
                    comment: "busybox for kiln-worker tests".into(),
                    created: chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
                },
            )
            .unwrap();
        store.tag(&record.id, IMAGE).unwrap();
        let context = dir.path().join("context");
        std::fs::create_dir(&context).unwrap();
        Fixture {
            dir,
            store,
            context,
        }
    }

    pub fn config(&self) -> WorkerConfig {
        let mut contexts = BTreeMap::new();
        contexts.insert("context".to_owned(), self.context.clone());
        WorkerConfig {
            contexts,
            ..WorkerConfig::default()
        }
    }

    pub fn worker(&self) -> Worker {
        Worker::new(self.store.clone(), self.config()).unwrap()
    }

    pub fn write(&self, rel: &str, data: &[u8]) {
        let p = self.context.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    }
}

pub fn image(g: &mut Graph) -> VertexId {
    g.add(
        Op::Source(SourceOp::Image {
            reference: IMAGE.into(),
            platform: "linux/amd64".into(),
            resolved_digest: None,
        }),
        vec![],
        OpMetadata::named("FROM busybox"),
    )
    .unwrap()
}

pub fn context(g: &mut Graph, follow: &[&str]) -> VertexId {
    g.add(
        Op::Source(SourceOp::Local {
            name: "context".into(),
            include_patterns: vec![],
            exclude_patterns: vec![],
            follow_paths: follow.iter().map(|s| s.to_string()).collect(),
            ignore_modes: false,
        }),
        vec![],
        OpMetadata::named("context"),
    )
    .unwrap()
}

pub fn run_op(script: &str) -> ExecOp {
    ExecOp {
        args: vec!["/bin/sh".into(), "-c".into(), script.into()],
        env: vec!["PATH=/bin".into()],
        cwd: "/".into(),
        network: kiln_solver::NetworkMode::None,
        mounts: vec![ExecMount::root(0)],
        ..ExecOp::default()
    }
}

pub fn run(g: &mut Graph, base: VertexId, script: &str) -> VertexId {
    g.add(
        Op::Exec(run_op(script)),
        vec![base],
        OpMetadata::named(script),
    )
    .unwrap()
}

pub struct Solved {
    pub solution: Solution<FsRef>,
    pub executed: usize,
    pub logs: Vec<u8>,
}

impl Solved {
    pub fn output(&self) -> &FsRef {
        &self.solution.targets().next().unwrap().output
    }
}

/// Solves `target` with `worker`, counting executions through events.
pub async fn solve(worker: &Worker, g: &Graph, target: VertexId) -> Result<Solved, SolveError> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Event>();
    let solver = Solver::with_options(
        Arc::new(worker.clone()),
        SolverOptions {
            max_parallelism: 2,
            events: Some(tx),
        },
    );
    let result = solver.solve(g, &[target]).await;
    drop(solver);
    let mut executed = 0;
    let mut logs = Vec::new();
    while let Ok(ev) = rx.try_recv() {
        match ev.kind {
            EventKind::Completed { .. } => executed += 1,
            EventKind::Log { bytes, .. } => logs.extend(bytes),
            _ => {}
        }
    }
    Ok(Solved {
        solution: result?,
        executed,
        logs,
    })
}

/// Solves `target`, which must fail; returns the error chain on one line.
pub async fn solve_error(worker: &Worker, g: &Graph, target: VertexId) -> String {
    chain(&solve(worker, g, target).await.err().unwrap())
}

/// The whole error chain on one line.
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut s = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        s.push_str(": ");
        s.push_str(&e.to_string());
        cur = e.source();
    }
    s
}

/// Runs `f` on a mounted view of `fs`.
pub fn inspect<T>(fs: &FsRef, f: impl FnOnce(&Path) -> T) -> T {
    let dir = tempfile::tempdir().unwrap();
    let mount = kiln_runtime::OverlayRootfs::mount(dir.path(), &fs.lowers()).unwrap();
    let out = f(mount.rootfs());
    mount.unmount().unwrap();
    out
}
