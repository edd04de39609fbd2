//! Scheduling and cache-key cost for 10,000 vertices with a no-op executor.
//!
//! `cargo bench -p kiln-solver --bench schedule`. Plain `std::time`; prints
//! one line per case.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kiln_solver::{
    BoxError, ExecContext, ExecMount, ExecOp, Executor, Graph, MergeOp, Op, OpMetadata, Solver,
    SolverOptions, SourceOp, Vertex, VertexId,
};

const N: usize = 10_000;
const ROUNDS: usize = 5;

struct Noop;

#[async_trait::async_trait]
impl Executor for Noop {
    type Output = ();

    async fn exec(&self, _: &Vertex, _: Vec<()>, _: ExecContext) -> Result<(), BoxError> {
        Ok(())
    }
}

fn run(i: usize) -> Op {
    Op::Exec(ExecOp {
        args: vec!["/bin/sh".into(), "-c".into(), format!("step {i}")],
        env: vec!["PATH=/usr/bin:/bin".into()],
        cwd: "/".into(),
        mounts: vec![ExecMount::root(0)],
        ..ExecOp::default()
    })
}

fn base(g: &mut Graph) -> VertexId {
    g.add(
        Op::Source(SourceOp::Image {
            reference: "docker.io/library/alpine:3.20".into(),
            platform: "linux/amd64".into(),
            resolved_digest: None,
        }),
        vec![],
        OpMetadata::default(),
    )
    .expect("valid op")
}

fn chain() -> (Graph, VertexId) {
    let mut g = Graph::new();
    let mut prev = base(&mut g);
    for i in 0..N {
        prev = g
            .add(run(i), vec![prev], OpMetadata::default())
            .expect("valid op");
    }
    (g, prev)
}

fn wide() -> (Graph, VertexId) {
    let mut g = Graph::new();
    let b = base(&mut g);
    let leaves: Vec<VertexId> = (0..N)
        .map(|i| {
            g.add(run(i), vec![b], OpMetadata::default())
                .expect("valid op")
        })
        .collect();
    let top = g
        .add(Op::Merge(MergeOp {}), leaves, OpMetadata::default())
        .expect("valid op");
    (g, top)
}

fn best(label: &str, mut f: impl FnMut() -> Duration) {
    let times: Vec<Duration> = (0..ROUNDS).map(|_| f()).collect();
    let min = times.iter().min().copied().unwrap_or_default();
    let mean = times.iter().sum::<Duration>() / ROUNDS as u32;
    #[allow(clippy::print_stdout)]
    {
        println!(
            "{label:<32} best {:>9.3} ms  mean {:>9.3} ms  ({:.2} µs/vertex)",
            min.as_secs_f64() * 1e3,
            mean.as_secs_f64() * 1e3,
            min.as_secs_f64() * 1e6 / N as f64
        );
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");

    for (shape, build) in [("chain", chain as fn() -> _), ("wide", wide)] {
        best(&format!("build+digest {shape} {N}"), || {
            let t = Instant::now();
            let g = build();
            std::hint::black_box(&g);
            t.elapsed()
        });
        let (g, target) = build();
        best(&format!("dump {shape} {N}"), || {
            let t = Instant::now();
            std::hint::black_box(g.dump());
            t.elapsed()
        });
        best(&format!("solve {shape} {N}"), || {
            let solver = Solver::with_options(Arc::new(Noop), SolverOptions::default());
            let t = Instant::now();
            let solution = rt.block_on(solver.solve(&g, &[target])).expect("solve");
            assert_eq!(solution.len(), N + 2 - usize::from(shape == "chain"));
            t.elapsed()
        });
    }
}
