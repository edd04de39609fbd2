//! # kiln-solver
//!
//! Solving a build graph ([`kiln_graph`]): vertices run in parallel as
//! their inputs are ready, with content-addressed cache keys, through an
//! [`Executor`] the caller provides.
//!
//! Owns: the scheduler, the `Executor` trait, cache-key computation and
//! the typed progress-event stream. The graph types are re-exported, as
//! every executor works with them.
//!
//! Must not depend on: the Dockerfile frontend, the runtime or any
//! registry. Tests inject fake executors.
//!
//! ```
//! use std::sync::Arc;
//! use kiln_solver::{
//!     BoxError, ExecContext, ExecMount, ExecOp, Executor, Graph, Op, OpMetadata, Solver,
//!     SourceOp, Vertex,
//! };
//!
//! struct Echo;
//!
//! #[async_trait::async_trait]
//! impl Executor for Echo {
//!     type Output = String;
//!     async fn exec(&self, v: &Vertex, inputs: Vec<String>, _: ExecContext) -> Result<String, BoxError> {
//!         Ok(format!("{}({})", v.op().kind(), inputs.join(",")))
//!     }
//! }
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let mut graph = Graph::new();
//! let base = graph.add(
//!     Op::Source(SourceOp::Image {
//!         reference: "docker.io/library/alpine:3.20".into(),
//!         platform: "linux/amd64".into(),
//!         resolved_digest: None,
//!     }),
//!     vec![],
//!     OpMetadata::named("FROM alpine"),
//! )?;
//! let run = graph.add(
//!     Op::Exec(ExecOp {
//!         args: vec!["sh".into(), "-c".into(), "make".into()],
//!         cwd: "/".into(),
//!         mounts: vec![ExecMount::root(0)],
//!         ..ExecOp::default()
//!     }),
//!     vec![base],
//!     OpMetadata::named("RUN make"),
//! )?;
//! let solution = Solver::new(Arc::new(Echo)).solve(&graph, &[run]).await?;
//! assert_eq!(solution.targets().next().unwrap().output, "exec(source())");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod scheduler;

pub use kiln_graph::{
    CUSTOM_NAME, CacheInit, CacheSharing, Chmod, ChownOpt, CopyAction, DiffOp, ExecMount, ExecOp,
    ExtraHost, FileAction, FileOp, MergeOp, MountKind, NetworkMode, Op, OpError, OpMetadata,
    ProgressGroup, SecretEnv, SecretMount, SecurityMode, SourceOp, UserOpt,
};
pub use kiln_graph::{
    DEFINITION_VERSION, Definition, DefinitionVertex, Graph, GraphError, ParseDigestError, Vertex,
    VertexDigest, VertexId, chmod, graph, op,
};
pub use scheduler::{
    BoxError, CacheKey, CacheStatus, Event, EventKind, ExecContext, Executor, Input, LogStream,
    Lookup, MissReason, Phase, ProgressHandle, SharedError, Solution, SolveError, Solver,
    SolverOptions, VertexResult,
};
pub use tokio_util::sync::CancellationToken;
