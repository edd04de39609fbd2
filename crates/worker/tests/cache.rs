//! The build cache across workers: per-key locks, miss reasons, last use
//! and garbage collection, on a real store with runc and overlayfs.

mod common;

use std::time::{Duration, SystemTime};

use common::{Fixture, context, image, run, run_op, solve};
use kiln_solver::{
    CacheSharing, CacheStatus, CopyAction, ExecMount, FileAction, FileOp, Graph, MissReason,
    MountKind, Op, OpMetadata, VertexId,
};
use kiln_worker::gc::{self, EntryKind, PruneOptions};

fn records(fx: &Fixture) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(fx.store.root().join("build/cache"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    v.sort();
    v
}

fn set_mtime(path: &std::path::Path, ago: Duration) {
    std::fs::File::options()
        .append(true)
        .open(path)
        .unwrap()
        .set_modified(SystemTime::now() - ago)
        .unwrap();
}

fn record_path(fx: &Fixture, key: &kiln_solver::CacheKey) -> std::path::PathBuf {
    fx.store
        .root()
        .join(format!("build/cache/{}.json", key.hex()))
}

/// Prunes once the test's workers are gone: a solver task can hold its
/// worker (and so the build's shared GC lock) for a moment after `solve`
/// returns, so wait for the lock instead of skipping.
fn prune(fx: &Fixture, options: PruneOptions) -> gc::PruneReport {
    let options = PruneOptions {
        wait: true,
        ..options
    };
    gc::prune(&fx.store, &options)
        .unwrap()
        .expect("no worker is alive")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(all(kiln_containers, kiln_runc)),
    ignore = "needs root and /bin/busybox and runc"
)]
async fn two_workers_missing_one_key_run_it_once() {
    require_containers!();
    let fx = Fixture::new();
    let mut g = Graph::new();
    let base = image(&mut g);
    // The step appends to a file in a shared cache mount: the number of
    // lines is the number of times it ran.
    let mut op = run_op("echo ran >> /counter/count; sleep 1; echo done > /out");
    op.mounts.push(ExecMount {
        input: None,
        dest: "/counter".into(),
        selector: None,
        readonly: false,
        kind: MountKind::Cache {
            id: "counter".into(),
            sharing: CacheSharing::Shared,
            init: None,
        },
        output: false,
    });
    let r = g
        .add(Op::Exec(op), vec![base], OpMetadata::named("count"))
        .unwrap();
    // Two workers, as two processes would have: separate solvers that do
    // not share their in-flight maps.
    let (w1, w2) = (fx.worker(), fx.worker());
    let (a, b) = tokio::join!(solve(&w1, &g, r), solve(&w2, &g, r));
    let (a, b) = (a.unwrap(), b.unwrap());
    let count =
        std::fs::read_to_string(fx.store.root().join("cache-mounts/counter/count")).unwrap();
    assert_eq!(count, "ran\n", "the step ran more than once");
    assert_eq!(a.output(), b.output());
    // The image source and the step were each executed once in all.
    assert_eq!(a.executed + b.executed, 2);
}

fn copy_all(g: &mut Graph, base: VertexId, ctx: VertexId) -> VertexId {
    g.add(
        Op::File(FileOp {
            base: Some(0),
            actions: vec![FileAction::Copy(CopyAction {
                src_input: 1,
                src: "/".into(),
                dest: "/app/".into(),
                follow_symlinks: true,
                dir_copy_contents: true,
                create_dest_path: true,
                allow_wildcard: true,
                ..CopyAction::default()
            })],
        }),
        vec![base, ctx],
        OpMetadata::named("COPY . /app/"),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(all(kiln_containers, kiln_runc)),
    ignore = "needs root and /bin/busybox and runc"
)]
async fn misses_name_the_first_changed_file() {
    require_containers!();
    let fx = Fixture::new();
    fx.write("src/main.c", b"int main;");
    fx.write("src/util.c", b"int util;");
    fx.write("README", b"hi");
    let mut g = Graph::new();
    let base = image(&mut g);
    let ctx = context(&mut g, &["."]);
    let copy = copy_all(&mut g, base, ctx);
    let after = run(&mut g, copy, "ls /app > /listing");
    let status = |s: &common::Solved, v: VertexId| {
        s.solution
            .get(&g.vertex(v).unwrap().digest())
            .unwrap()
            .status
            .clone()
    };

    let first = solve(&fx.worker(), &g, after).await.unwrap();
    assert_eq!(
        status(&first, copy),
        CacheStatus::Miss(MissReason::NoRecord),
        "nothing recorded before"
    );

    fx.write("src/main.c", b"int main(void);");
    let second = solve(&fx.worker(), &g, after).await.unwrap();
    assert_eq!(
        status(&second, copy),
        CacheStatus::Miss(MissReason::InputChanged {
            input: 1,
            detail: "context: src/main.c changed".into()
        })
    );
    assert_eq!(
        status(&second, ctx),
        CacheStatus::Miss(MissReason::Other("context: src/main.c changed".into()))
    );
    // The consumer of the copy says the same root cause.
    assert_eq!(
        status(&second, after),
        CacheStatus::Miss(MissReason::InputChanged {
            input: 0,
            detail: "context: src/main.c changed".into()
        })
    );

    fx.write("src/new.c", b"new");
    std::fs::remove_file(fx.context.join("README")).unwrap();
    let third = solve(&fx.worker(), &g, after).await.unwrap();
    assert_eq!(
        status(&third, copy),
        CacheStatus::Miss(MissReason::InputChanged {
            input: 1,
            detail: "context: README removed (and 1 more)".into()
        })
    );

    // Back to an earlier content: a hit, and the next change is compared
    // with what this build saw.
    std::fs::remove_file(fx.context.join("src/new.c")).unwrap();
    fx.write("README", b"hi");
    let fourth = solve(&fx.worker(), &g, after).await.unwrap();
    assert_eq!(fourth.executed, 0);
    fx.write("src/util.c", b"int util(void);");
    let fifth = solve(&fx.worker(), &g, after).await.unwrap();
    assert_eq!(
        status(&fifth, copy),
        CacheStatus::Miss(MissReason::InputChanged {
            input: 1,
            detail: "context: src/util.c changed".into()
        })
    );
    fx.write("src/added.c", b"x");
    let sixth = solve(&fx.worker(), &g, after).await.unwrap();
    assert_eq!(
        status(&sixth, copy),
        CacheStatus::Miss(MissReason::InputChanged {
            input: 1,
            detail: "context: src/added.c added".into()
        })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(all(kiln_containers, kiln_runc)),
    ignore = "needs root and /bin/busybox and runc"
)]
async fn hits_mark_records_used() {
    require_containers!();
    let fx = Fixture::new();
    let mut g = Graph::new();
    let base = image(&mut g);
    let r = run(&mut g, base, "echo x > /x");
    let first = solve(&fx.worker(), &g, r).await.unwrap();
    let key = first.solution.targets().next().unwrap().key;
    let path = record_path(&fx, &key);
    set_mtime(&path, Duration::from_secs(3 * 86400));
    let old = std::fs::metadata(&path).unwrap().modified().unwrap();
    let second = solve(&fx.worker(), &g, r).await.unwrap();
    assert_eq!(second.executed, 0);
    let new = std::fs::metadata(&path).unwrap().modified().unwrap();
    assert!(new > old, "a hit updates the record's last use");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(all(kiln_containers, kiln_runc)),
    ignore = "needs root and /bin/busybox and runc"
)]
async fn prune_keeps_image_content_and_waits_for_builds() {
    require_containers!();
    let fx = Fixture::new();
    let mut g = Graph::new();
    let base = image(&mut g);
    let r = run(&mut g, base, "echo x > /x");
    let worker = fx.worker();
    let first = solve(&worker, &g, r).await.unwrap();
    let out = first.output().clone();
    let (image_layer, run_layer) = (&out.layers()[0], &out.layers()[1]);

    // While a worker lives, collection does not run (or waits).
    let busy = gc::prune(&fx.store, &PruneOptions::default()).unwrap();
    assert!(busy.is_none());
    drop(worker);

    let usage = gc::disk_usage(&fx.store).unwrap();
    let rows: Vec<_> = usage
        .entries
        .iter()
        .filter(|e| e.kind == EntryKind::Record)
        .collect();
    assert_eq!(rows.len(), 2);
    let in_use: Vec<_> = rows.iter().filter(|e| !e.reclaimable).collect();
    assert_eq!(in_use.len(), 1, "the base image's record is in use");
    assert!(in_use[0].shared);
    assert!(rows.iter().all(|e| e.size > 0));
    assert!(rows.iter().any(|e| e.description == "echo x > /x"));
    assert!(usage.reclaimable > 0 && usage.reclaimable < usage.total);
    assert_eq!(usage.total, usage.shared + usage.private);

    // Default: the dangling record goes, with its snapshot and blob.
    let report = prune(&fx, PruneOptions::default());
    assert_eq!(report.removed.len(), 1);
    assert!(report.reclaimed > 0);
    assert!(fx.store.snapshot(&run_layer.snapshot_id).unwrap().is_none());
    let blob = run_layer.blob.as_ref().unwrap();
    assert!(!fx.store.has_blob(&blob.digest).unwrap());
    assert_eq!(records(&fx).len(), 1);

    // --all: the record goes, the image's snapshot stays.
    let report = prune(
        &fx,
        PruneOptions {
            all: true,
            ..PruneOptions::default()
        },
    );
    assert_eq!(report.removed.len(), 1);
    assert_eq!(report.reclaimed, 0);
    assert!(records(&fx).is_empty());
    assert!(
        fx.store
            .snapshot(&image_layer.snapshot_id)
            .unwrap()
            .is_some()
    );
    let again = solve(&fx.worker(), &g, r).await.unwrap();
    assert_eq!(again.executed, 2, "pruned steps run again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(all(kiln_containers, kiln_runc)),
    ignore = "needs root and /bin/busybox and runc"
)]
async fn prune_filters_by_last_use_and_keeps_storage() {
    require_containers!();
    let fx = Fixture::new();
    let mut g = Graph::new();
    let base = image(&mut g);
    let old = run(&mut g, base, "echo old > /old");
    let mid = run(&mut g, base, "echo mid > /mid");
    let new = run(&mut g, base, "echo new > /new");
    let mut keys = Vec::new();
    for v in [old, mid, new] {
        let s = solve(&fx.worker(), &g, v).await.unwrap();
        keys.push(s.solution.targets().next().unwrap().key);
    }
    set_mtime(&record_path(&fx, &keys[0]), Duration::from_secs(3 * 86400));
    set_mtime(&record_path(&fx, &keys[1]), Duration::from_secs(2 * 3600));
    set_mtime(&record_path(&fx, &keys[2]), Duration::from_secs(3600));

    // until=24h: only the record last used three days ago.
    let report = prune(
        &fx,
        PruneOptions {
            until: Some(Duration::from_secs(86400)),
            ..PruneOptions::default()
        },
    );
    assert_eq!(report.removed, [keys[0].hex()]);

    // keep-storage just under the current size: the least recently used
    // of the rest goes, the newest stays.
    let usage = gc::disk_usage(&fx.store).unwrap();
    let report = prune(
        &fx,
        PruneOptions {
            keep_storage: Some(usage.reclaimable - 1),
            ..PruneOptions::default()
        },
    );
    assert_eq!(report.removed, [keys[1].hex()]);
    assert!(record_path(&fx, &keys[2]).exists());
    // Enough room: nothing goes.
    let report = prune(
        &fx,
        PruneOptions {
            keep_storage: Some(u64::MAX),
            ..PruneOptions::default()
        },
    );
    assert!(report.removed.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(all(kiln_containers, kiln_runc)),
    ignore = "needs root and /bin/busybox and runc"
)]
async fn prune_all_removes_cache_mounts() {
    require_containers!();
    let fx = Fixture::new();
    let mut g = Graph::new();
    let base = image(&mut g);
    let mut op = run_op("echo kept > /cache/x");
    op.mounts.push(ExecMount {
        input: None,
        dest: "/cache".into(),
        selector: None,
        readonly: false,
        kind: MountKind::Cache {
            id: "pip".into(),
            sharing: CacheSharing::Locked,
            init: None,
        },
        output: false,
    });
    let w = g
        .add(Op::Exec(op), vec![base], OpMetadata::named("write cache"))
        .unwrap();
    solve(&fx.worker(), &g, w).await.unwrap();
    let mount = fx.store.root().join("cache-mounts/pip");
    assert!(mount.join("x").is_file());
    let usage = gc::disk_usage(&fx.store).unwrap();
    assert!(
        usage
            .entries
            .iter()
            .any(|e| e.kind == EntryKind::CacheMount && e.id == "pip")
    );

    prune(&fx, PruneOptions::default());
    assert!(mount.is_dir(), "a default prune keeps cache mounts");
    let report = prune(
        &fx,
        PruneOptions {
            all: true,
            ..PruneOptions::default()
        },
    );
    assert!(report.removed.contains(&"pip".to_owned()));
    assert!(!mount.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(all(kiln_containers, kiln_runc)),
    ignore = "needs root and /bin/busybox and runc"
)]
async fn automatic_collection_honours_the_limit() {
    require_containers!();
    let fx = Fixture::new();
    let mut g = Graph::new();
    let base = image(&mut g);
    let a = run(&mut g, base, "echo a > /a");
    let b = run(&mut g, base, "echo b > /b");
    let ka = solve(&fx.worker(), &g, a).await.unwrap();
    let kb = solve(&fx.worker(), &g, b).await.unwrap();
    let ka = ka.solution.targets().next().unwrap().key;
    let kb = kb.solution.targets().next().unwrap().key;
    set_mtime(&record_path(&fx, &ka), Duration::from_secs(7200));
    // A limit just under the cache's size: the older record goes.
    let usage = gc::disk_usage(&fx.store).unwrap();
    let report = gc::prune(
        &fx.store,
        &PruneOptions {
            keep_storage: Some(usage.reclaimable - 1),
            ..PruneOptions::default()
        },
    )
    .unwrap()
    .unwrap();
    assert_eq!(report.removed, [ka.hex()]);
    assert!(record_path(&fx, &kb).exists());
    // The default limit is positive and at most 20 GB.
    let limit = gc::auto_gc_limit(&fx.store);
    assert!(limit > 0 && limit <= gc::DEFAULT_GC_MAX);
    // Nothing to do under it.
    let report = gc::auto_prune(&fx.store).unwrap().unwrap();
    assert!(report.removed.is_empty());
    assert!(report.kept.is_some_and(|k| k < limit / 2));
    // Measured just now and far under the limit: the next build's
    // collection does not read every record again.
    assert!(gc::auto_prune(&fx.store).unwrap().is_none());
}
