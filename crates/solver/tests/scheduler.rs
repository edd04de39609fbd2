//! Scheduler behaviour with fake ops and call counters.

mod common;

use std::error::Error as _;
use std::sync::Arc;
use std::time::Duration;

use common::{Fake, image, step, step_with};
use kiln_solver::{
    CacheStatus, CancellationToken, EventKind, Graph, LogStream, MergeOp, MissReason, Op,
    OpMetadata, SolveError, Solver, SolverOptions,
};
use tokio::sync::mpsc;

fn solver(fake: &Arc<Fake>, max_parallelism: usize) -> Solver<Fake> {
    Solver::with_options(
        fake.clone(),
        SolverOptions {
            max_parallelism,
            events: None,
        },
    )
}

/// Fails the test instead of hanging if the scheduler deadlocks.
async fn bounded<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(30), f)
        .await
        .expect("solve did not finish within 30 s")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diamond_runs_each_vertex_once() {
    let fake = Fake::new();
    let mut g = Graph::new();
    let base = image(&mut g, "alpine");
    let left = step(&mut g, &["ok", "left"], &[base]);
    let right = step(&mut g, &["ok", "right"], &[base]);
    let join = step(&mut g, &["ok", "join"], &[left, right]);
    let solution = bounded(solver(&fake, 4).solve(&g, &[join])).await.unwrap();

    assert_eq!(solution.len(), 4);
    let out = &solution.targets().next().unwrap().output;
    assert_eq!(out, "join(left(alpine()),right(alpine()))");
    let c = fake.counters.lock().unwrap();
    assert_eq!(c.execs.len(), 4);
    assert!(c.execs.values().all(|&n| n == 1), "{:?}", c.execs);
    assert_eq!(c.stores, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_definitions_execute_once() {
    let fake = Fake::new();
    let mut g = Graph::new();
    let base = image(&mut g, "alpine");
    // Added twice (e.g. two stages with the same steps): one vertex.
    let a = step(&mut g, &["ok", "same"], &[base]);
    let b = step(&mut g, &["ok", "same"], &[base]);
    assert_eq!(a, b);
    let merged = g
        .add(Op::Merge(MergeOp {}), vec![a, b, a], OpMetadata::default())
        .unwrap();
    // The same target twice.
    let solution = bounded(solver(&fake, 4).solve(&g, &[merged, merged, a]))
        .await
        .unwrap();
    assert_eq!(solution.targets().count(), 3);
    assert_eq!(fake.execs_of_name("same"), 1);
    assert_eq!(fake.execs_of_name("alpine"), 1);
    assert_eq!(
        solution.targets().next().unwrap().output,
        "merge(same(alpine()),same(alpine()),same(alpine()))"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_reachable_vertices_run() {
    let fake = Fake::new();
    let mut g = Graph::new();
    let base = image(&mut g, "alpine");
    let wanted = step(&mut g, &["ok", "wanted"], &[base]);
    step(&mut g, &["ok", "unwanted"], &[base]);
    let solution = bounded(solver(&fake, 2).solve(&g, &[wanted]))
        .await
        .unwrap();
    assert_eq!(solution.len(), 2);
    assert_eq!(fake.execs_of_name("unwanted"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn independent_vertices_run_concurrently() {
    let fake = Fake::new();
    let mut g = Graph::new();
    let base = image(&mut g, "alpine");
    // Each waits at a two-party barrier: they can only finish if they
    // execute at the same time.
    let a = step(&mut g, &["barrier", "a"], &[base]);
    let b = step(&mut g, &["barrier", "b"], &[base]);
    let s1 = step(&mut g, &["sleep", "30", "s1"], &[a]);
    let s2 = step(&mut g, &["sleep", "30", "s2"], &[b]);
    bounded(solver(&fake, 4).solve(&g, &[s1, s2]))
        .await
        .unwrap();
    assert!(fake.max_running.load(std::sync::atomic::Ordering::SeqCst) >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_parallelism_is_respected() {
    let fake = Fake::new();
    let mut g = Graph::new();
    let base = image(&mut g, "alpine");
    let names: Vec<String> = (0..24).map(|i| format!("w{i}")).collect();
    let wide: Vec<_> = names
        .iter()
        .map(|n| step(&mut g, &["sleep", "5", n], &[base]))
        .collect();
    let solution = bounded(solver(&fake, 3).solve(&g, &wide)).await.unwrap();
    assert_eq!(solution.len(), 25);
    let max = fake.max_running.load(std::sync::atomic::Ordering::SeqCst);
    assert!(max <= 3, "{max} execs ran at once with max_parallelism 3");
    assert!(max >= 2, "wide graph never ran in parallel");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallelism_of_one_serialises_execs() {
    let fake = Fake::new();
    let mut g = Graph::new();
    let wide: Vec<_> = (0..8)
        .map(|i| step(&mut g, &["sleep", "2", &format!("w{i}")], &[]))
        .collect();
    bounded(solver(&fake, 1).solve(&g, &wide)).await.unwrap();
    assert_eq!(
        fake.max_running.load(std::sync::atomic::Ordering::SeqCst),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_cancels_running_sibling_and_skips_dependents() {
    let fake = Fake::new();
    let mut g = Graph::new();
    let base = image(&mut g, "alpine");
    let blocker = step(&mut g, &["block", "blocker"], &[base]);
    let failing = step(
        &mut g,
        &["fail-when-running", "blocker", "failing"],
        &[base],
    );
    let after_fail = step(&mut g, &["ok", "after-fail"], &[failing]);
    let after_block = step(&mut g, &["ok", "after-block"], &[blocker]);
    // `failing` fails only once `blocker` is executing, so `blocker` must
    // observe the cancellation.
    let err = bounded(solver(&fake, 4).solve(&g, &[after_fail, after_block]))
        .await
        .unwrap_err();

    let failing_digest = g.vertex(failing).unwrap().digest();
    assert_eq!(err.vertex(), Some(failing_digest));
    // `solve` waits for the vertices it started to stop.
    assert!(fake.was_cancelled("blocker"));
    assert_eq!(fake.execs_of_name("after-fail"), 0);
    assert_eq!(fake.execs_of_name("after-block"), 0);
    // Nothing failed or cancelled was stored: only the base image.
    assert_eq!(fake.counters.lock().unwrap().stores, 1);
    // Every missed key was released: stored, failed or cancelled.
    let c = fake.counters.lock().unwrap();
    assert!(c.lookups >= 3);
    assert_eq!(c.released, c.lookups);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_name_the_vertex_and_keep_the_source() {
    let fake = Fake::new();
    let mut g = Graph::new();
    let base = image(&mut g, "alpine");
    let failing = step_with(
        &mut g,
        &["fail", "x"],
        &[base],
        OpMetadata::named("[build 2/3] RUN make"),
    );
    let err = bounded(solver(&fake, 2).solve(&g, &[failing]))
        .await
        .unwrap_err();
    let digest = g.vertex(failing).unwrap().digest();
    assert_eq!(
        err.to_string(),
        format!(
            "[build 2/3] RUN make ({}): execution failed",
            digest.short()
        )
    );
    assert_eq!(err.source().unwrap().to_string(), "boom");
    assert!(matches!(
        err,
        SolveError::Vertex {
            phase: kiln_solver::Phase::Exec,
            ..
        }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panics_become_errors_naming_the_vertex() {
    let fake = Fake::new();
    let mut g = Graph::new();
    let p = step(&mut g, &["panic", "p"], &[]);
    let err = bounded(solver(&fake, 2).solve(&g, &[p])).await.unwrap_err();
    assert!(matches!(&err, SolveError::Panicked { name, message, .. }
        if name == "RUN panic p" && message == "fake exec panicked"));
    assert_eq!(fake.running.load(std::sync::atomic::Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_cancellation_stops_running_execs() {
    let fake = Fake::new();
    let mut g = Graph::new();
    let blocker = step(&mut g, &["block", "blocker"], &[]);
    let after = step(&mut g, &["ok", "after"], &[blocker]);
    let cancel = CancellationToken::new();
    let solver = solver(&fake, 2);
    let targets = [after];
    let run = solver.solve_with_cancel(&g, &targets, cancel.clone());
    let trigger = async {
        while !fake.is_running("blocker") {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        cancel.cancel();
    };
    let (result, ()) = bounded(async { tokio::join!(run, trigger) }).await;
    assert!(matches!(result, Err(SolveError::Cancelled)));
    assert!(fake.was_cancelled("blocker"));
    assert_eq!(fake.execs_of_name("after"), 0);
    let c = fake.counters.lock().unwrap();
    assert_eq!(
        (c.lookups, c.released),
        (1, 1),
        "the cancelled key is released"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_solves_share_one_execution() {
    let fake = Fake::new();
    let solver = solver(&fake, 4);
    // Two different graphs sharing a gated vertex.
    let mut g1 = Graph::new();
    let base1 = image(&mut g1, "alpine");
    let shared1 = step(&mut g1, &["gate", "shared"], &[base1]);
    let t1 = step(&mut g1, &["ok", "one"], &[shared1]);
    let mut g2 = Graph::new();
    let base2 = image(&mut g2, "alpine");
    let shared2 = step(&mut g2, &["gate", "shared"], &[base2]);
    let t2 = step(&mut g2, &["ok", "two"], &[shared2]);

    let targets1 = [t1];
    let first = solver.solve(&g1, &targets1);
    let second = async {
        while !fake.is_running("shared") {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let targets = [t2];
        let second = solver.solve(&g2, &targets);
        let release = async {
            // Let the second solve join before the gate opens.
            tokio::time::sleep(Duration::from_millis(20)).await;
            fake.gate.add_permits(10);
        };
        tokio::join!(second, release).0
    };
    let (r1, r2) = bounded(async { tokio::join!(first, second) }).await;
    let (r1, r2) = (r1.unwrap(), r2.unwrap());
    assert_eq!(fake.execs_of_name("shared"), 1);
    assert_eq!(fake.execs_of_name("alpine"), 1);
    let digest = g1.vertex(shared1).unwrap().digest();
    assert_eq!(
        r1.get(&digest).unwrap().output,
        r2.get(&digest).unwrap().output
    );
    assert_eq!(r2.targets().next().unwrap().output, "two(shared(alpine()))");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_in_one_solve_does_not_cancel_a_vertex_another_solve_needs() {
    let fake = Fake::new();
    let solver = solver(&fake, 4);
    let mut g1 = Graph::new();
    let shared1 = step(&mut g1, &["gate", "shared"], &[]);
    let failing = step(&mut g1, &["fail-when-running", "shared", "failing"], &[]);
    let t1 = step(&mut g1, &["ok", "one"], &[shared1, failing]);
    let mut g2 = Graph::new();
    let shared2 = step(&mut g2, &["gate", "shared"], &[]);
    let t2 = step(&mut g2, &["ok", "two"], &[shared2]);

    // Solve 2 starts first and holds interest in `shared`.
    let targets2 = [t2];
    let second = solver.solve(&g2, &targets2);
    let first = async {
        while !fake.is_running("shared") {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let r = solver.solve(&g1, &[t1]).await;
        fake.gate.add_permits(10);
        r
    };
    let (r2, r1) = bounded(async { tokio::join!(second, first) }).await;
    assert!(r1.is_err());
    assert_eq!(
        r2.unwrap().targets().next().unwrap().output,
        "two(shared())"
    );
    assert_eq!(fake.execs_of_name("shared"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_hits_skip_execution_and_misses_say_why() {
    let fake = Fake::cached();
    let solver = solver(&fake, 2);
    let build = |reference: &str| {
        let mut g = Graph::new();
        let base = image(&mut g, reference);
        let a = step(&mut g, &["ok", "a"], &[base]);
        let b = step(&mut g, &["ok", "b"], &[a]);
        (g, b)
    };

    let (g, b) = build("alpine:3.19");
    let first = bounded(solver.solve(&g, &[b])).await.unwrap();
    assert_eq!(first.executed(), 3);
    assert!(
        first
            .results()
            .all(|r| r.status == CacheStatus::Miss(MissReason::NoRecord))
    );

    assert_eq!(
        fake.counters.lock().unwrap().released,
        3,
        "every missed key is released once"
    );

    let second = bounded(solver.solve(&g, &[b])).await.unwrap();
    assert_eq!(second.cached(), 3);
    assert_eq!(
        fake.counters.lock().unwrap().released,
        3,
        "hits hold nothing to release"
    );
    assert_eq!(fake.total_execs(), 3, "cache hits must not execute");
    assert_eq!(
        second.targets().next().unwrap().output,
        first.targets().next().unwrap().output
    );

    // A new base: every step misses, and the steps say an input changed.
    let (g2, b2) = build("alpine:3.20");
    let third = bounded(solver.solve(&g2, &[b2])).await.unwrap();
    assert_eq!(third.executed(), 3);
    let reason = &third.targets().next().unwrap().status;
    assert!(
        matches!(
            reason,
            CacheStatus::Miss(MissReason::InputChanged { input: 0, .. })
        ),
        "{reason:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ignore_cache_reexecutes_but_consumers_can_still_hit() {
    let fake = Fake::cached();
    let solver = solver(&fake, 2);
    let build = |no_cache: bool| {
        let mut g = Graph::new();
        let mut meta = OpMetadata::named("RUN apt-get update");
        meta.ignore_cache = no_cache;
        let a = step_with(&mut g, &["ok", "a"], &[], meta);
        let b = step(&mut g, &["ok", "b"], &[a]);
        (g, a, b)
    };
    let (g, _, b) = build(false);
    bounded(solver.solve(&g, &[b])).await.unwrap();
    let (g, a, b) = build(true);
    let s = bounded(solver.solve(&g, &[b])).await.unwrap();
    let a_digest = g.vertex(a).unwrap().digest();
    assert_eq!(
        s.get(&a_digest).unwrap().status,
        CacheStatus::Miss(MissReason::IgnoreCache)
    );
    assert_eq!(s.targets().next().unwrap().status, CacheStatus::Cached);
    assert_eq!(fake.execs_of_name("a"), 2);
    assert_eq!(fake.execs_of_name("b"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_events_are_typed_and_ordered_per_vertex() {
    let fake = Fake::cached();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let solver = Solver::with_options(
        fake.clone(),
        SolverOptions {
            max_parallelism: 2,
            events: Some(tx),
        },
    );
    let mut g = Graph::new();
    let logger = step(&mut g, &["log", "logger"], &[]);
    let digest = g.vertex(logger).unwrap().digest();
    bounded(solver.solve(&g, &[logger])).await.unwrap();
    bounded(solver.solve(&g, &[logger])).await.unwrap();
    drop(solver);

    let mut kinds = Vec::new();
    while let Some(event) = rx.recv().await {
        assert_eq!(event.digest, digest);
        kinds.push(event.kind);
    }
    let summary: Vec<String> = kinds
        .iter()
        .map(|k| match k {
            EventKind::Started { name } => format!("started {name}"),
            EventKind::Cached { .. } => "cached".to_owned(),
            EventKind::Log { stream, bytes } => format!(
                "log {} {}",
                if *stream == LogStream::Stdout {
                    "out"
                } else {
                    "err"
                },
                String::from_utf8_lossy(bytes).trim()
            ),
            EventKind::Progress { current, total } => format!("progress {current}/{total:?}"),
            EventKind::Completed { reason, .. } => format!("completed ({reason})"),
            EventKind::Failed { error } => format!("failed {error}"),
            EventKind::Cancelled => "cancelled".to_owned(),
        })
        .collect();
    assert_eq!(
        summary,
        [
            "started RUN log logger",
            "log out hello",
            "log err warn",
            "progress 1/Some(2)",
            "completed (no record)",
            "started RUN log logger",
            "cached",
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_events_carry_the_error() {
    let fake = Fake::new();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let solver = Solver::with_options(
        fake.clone(),
        SolverOptions {
            max_parallelism: 2,
            events: Some(tx),
        },
    );
    let mut g = Graph::new();
    let f = step(&mut g, &["fail", "f"], &[]);
    let after = step(&mut g, &["ok", "after"], &[f]);
    bounded(solver.solve(&g, &[after])).await.unwrap_err();
    drop(solver);
    let mut events = Vec::new();
    while let Some(e) = rx.recv().await {
        events.push(e);
    }
    // `after` never started, so it has no events at all.
    assert_eq!(events.len(), 2);
    assert!(
        matches!(&events[1].kind, EventKind::Failed { error } if error.vertex() == Some(events[0].digest))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_vertex_chain_completes() {
    let fake = Fake::new();
    let mut g = Graph::new();
    let mut prev = image(&mut g, "alpine");
    for i in 0..10_000 {
        prev = step(&mut g, &["ok", &format!("c{i}")], &[prev]);
    }
    let solution = bounded(solver(&fake, 2).solve(&g, &[prev])).await.unwrap();
    assert_eq!(solution.len(), 10_001);
    assert_eq!(fake.total_execs(), 10_001);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_vertex_wide_graph_completes() {
    let fake = Fake::new();
    let mut g = Graph::new();
    let base = image(&mut g, "alpine");
    let wide: Vec<_> = (0..10_000)
        .map(|i| step(&mut g, &["ok", &format!("w{i}")], &[base]))
        .collect();
    let merged = g
        .add(Op::Merge(MergeOp {}), wide, OpMetadata::default())
        .unwrap();
    let solution = bounded(solver(&fake, 2).solve(&g, &[merged]))
        .await
        .unwrap();
    assert_eq!(solution.len(), 10_002);
    assert_eq!(fake.total_execs(), 10_002);
}
