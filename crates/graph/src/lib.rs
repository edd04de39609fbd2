//! # kiln-graph
//!
//! The build graph: an LLB-like DAG of ops (source, exec, file, merge,
//! diff), each vertex identified by the digest of its canonical
//! definition, and the serialized [`Definition`] a frontend hands to the
//! solver.
//!
//! Owns: the op vocabulary and its validation, `--chmod` semantics, vertex
//! digests, the graph's canonical order, dump and encoding.
//!
//! Must not depend on: an async runtime, the solver, the frontend, the
//! store or the runtime. The Dockerfile frontend builds graphs with it;
//! the solver schedules them.
//!
//! ```
//! use kiln_graph::{ExecMount, ExecOp, Graph, Op, OpMetadata, SourceOp};
//!
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
//! assert_eq!(graph.topo_order()?, vec![base, run]);
//! # Ok::<(), kiln_graph::GraphError>(())
//! ```
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod chmod;
pub mod graph;
pub mod op;

pub use graph::{
    DEFINITION_VERSION, Definition, DefinitionVertex, Graph, GraphError, ParseDigestError, Vertex,
    VertexDigest, VertexId,
};
pub use op::{
    CUSTOM_NAME, CacheInit, CacheSharing, Chmod, ChownOpt, CopyAction, DiffOp, ExecMount, ExecOp,
    ExtraHost, FileAction, FileOp, MergeOp, MountKind, NetworkMode, Op, OpError, OpMetadata,
    ProgressGroup, SecretEnv, SecretMount, SecurityMode, SourceOp, UserOpt,
};
