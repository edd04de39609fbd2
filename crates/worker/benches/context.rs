//! Content keys of a large build context: 20,000 files of about 1 KiB in
//! 200 directories, keyed through the worker as a build keys its
//! context (select, stat cache, hash, selection record).
//!
//! `cargo bench -p kiln-worker --bench context`. Plain `std::time`; prints
//! one line per case. "cold" starts without a stat cache (every file is
//! read and hashed; the files themselves are in the page cache), "warm"
//! re-keys the unchanged context with the stat cache of the previous run,
//! "stat cache only" without the selection's stat digest (each file looked
//! up in the stat cache), "one changed" after rewriting one file.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kiln_solver::{Executor, Graph, Op, OpMetadata, SourceOp};
use kiln_store::Store;
use kiln_worker::{Worker, WorkerConfig};

const FILES: usize = 20_000;
const DIRS: usize = 200;
const ROUNDS: usize = 5;

fn report(label: &str, times: &[Duration]) {
    let mut sorted = times.to_vec();
    sorted.sort();
    let median = sorted[sorted.len() / 2];
    let min = sorted[0];
    #[allow(clippy::print_stdout)]
    {
        println!(
            "{label:<28} median {:>9.3} ms  best {:>9.3} ms  ({:.2} µs/file)",
            median.as_secs_f64() * 1e3,
            min.as_secs_f64() * 1e3,
            median.as_secs_f64() * 1e6 / FILES as f64
        );
    }
}

fn remove_stat_caches(build_dir: &std::path::Path) {
    remove_matching(build_dir, |name| name.starts_with("statcache-"));
}

fn remove_matching(build_dir: &std::path::Path, matches: impl Fn(&str) -> bool) {
    for e in std::fs::read_dir(build_dir).expect("build dir").flatten() {
        if matches(&e.file_name().to_string_lossy()) {
            std::fs::remove_file(e.path()).expect("remove stat cache");
        }
    }
}

fn main() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let context = tmp.path().join("context");
    let mut content = vec![b'x'; 1024];
    for i in 0..FILES {
        let dir = context.join(format!("d{:03}", i % DIRS));
        if i < DIRS {
            std::fs::create_dir_all(&dir).expect("mkdir");
        }
        content[..8].copy_from_slice(&(i as u64).to_le_bytes());
        std::fs::write(dir.join(format!("f{i:05}.txt")), &content).expect("write");
    }
    let store = Store::open(tmp.path().join("root")).expect("store");
    let build_dir = store.root().join("build");
    let mut contexts = BTreeMap::new();
    contexts.insert("context".to_owned(), context.clone());
    let worker = Worker::new(
        store,
        WorkerConfig {
            contexts,
            ..WorkerConfig::default()
        },
    )
    .expect("worker");
    let mut g = Graph::new();
    let id = g
        .add(
            Op::Source(SourceOp::Local {
                name: "context".into(),
                include_patterns: vec![],
                exclude_patterns: vec![],
                follow_paths: vec![".".into()],
                ignore_modes: false,
            }),
            vec![],
            OpMetadata::named("context"),
        )
        .expect("valid op");
    let vertex = g.vertex(id).expect("vertex").clone();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let key = || {
        let t = Instant::now();
        let k = rt
            .block_on(worker.cache_key(&vertex, &[]))
            .expect("cache key");
        (t.elapsed(), k)
    };

    let mut cold = Vec::new();
    let mut first = None;
    for _ in 0..ROUNDS {
        remove_stat_caches(&build_dir);
        let (t, k) = key();
        assert!(first.is_none_or(|f| f == k));
        first = Some(k);
        cold.push(t);
    }
    report(&format!("cold {FILES} files"), &cold);

    let mut warm = Vec::new();
    for _ in 0..ROUNDS {
        let (t, k) = key();
        assert_eq!(Some(k), first);
        warm.push(t);
    }
    report(&format!("warm {FILES} files"), &warm);

    // Without the selection's stat digest: every file looked up in the
    // stat cache (as after a `touch` of the tree).
    let mut stat_cache_only = Vec::new();
    for _ in 0..ROUNDS {
        remove_matching(&build_dir, |name| name.contains(".quick"));
        let (t, k) = key();
        assert_eq!(Some(k), first);
        stat_cache_only.push(t);
    }
    report(&format!("stat cache only {FILES}"), &stat_cache_only);

    let mut changed = Vec::new();
    for round in 0..ROUNDS {
        content[..8].copy_from_slice(&(round as u64 + 1_000_000).to_le_bytes());
        std::fs::write(context.join("d007/f00007.txt"), &content).expect("write");
        let (t, k) = key();
        assert_ne!(Some(k), first);
        changed.push(t);
    }
    report(&format!("one changed of {FILES}"), &changed);
}
