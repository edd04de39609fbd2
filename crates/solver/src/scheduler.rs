//! The parallel scheduler.
//!
//! [`Solver::solve`] evaluates the vertices the requested targets depend
//! on. Every vertex is a tokio task that waits for its inputs, computes its
//! cache key, asks the cache, and on a miss executes (bounded by a
//! semaphore of `max_parallelism` permits) and stores the result. So every
//! vertex whose inputs are ready runs concurrently, and parallelism falls
//! out of the graph's shape, as in BuildKit.
//!
//! Guarantees:
//! - **Dedup.** Within a solve a digest is evaluated once. Concurrent solves
//!   on one [`Solver`] that need the same digest share one evaluation
//!   (single-flight over a map of in-flight vertices). A finished vertex
//!   leaves the map: later solves find it through the cache.
//! - **Fail fast.** A failing vertex fails its consumers without running
//!   them, and the solve returns the failing vertex's error. Everything the
//!   failed solve alone still needed is cancelled: waiting vertices never
//!   start, running ones see [`ExecContext::cancel`] fire, and nothing
//!   cancelled or failed is stored. A vertex that another live solve also
//!   needs keeps running for that solve. `solve` returns once the vertices
//!   it alone started have stopped.
//! - **Why.** Each result carries its [`CacheStatus`]: cached, or the
//!   [`MissReason`] the executor's lookup gave.
//! - **Progress.** Typed [`Event`]s go to the channel given in
//!   [`SolverOptions::events`]; the solver prints nothing.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use kiln_graph::{Graph, GraphError, Vertex, VertexDigest, VertexId};

/// Error type executors return.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An executor error shared between every solve that waited on the vertex.
pub type SharedError = Arc<dyn std::error::Error + Send + Sync + 'static>;

// ---------------------------------------------------------------------------
// Cache keys and statuses

/// A cache key: BLAKE3, in a key space separate from vertex digests.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheKey([u8; 32]);

const CACHE_KEY_DOMAIN: &[u8] = b"kiln.cachekey.v1\0";

impl CacheKey {
    pub fn from_bytes(bytes: [u8; 32]) -> CacheKey {
        CacheKey(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The default key: the vertex's op digest (its definition without its
    /// inputs) and the inputs' keys in order. An input whose key did not
    /// change keeps its consumers' keys unchanged, even if the input's
    /// definition did.
    pub fn derive(vertex: &Vertex, input_keys: &[CacheKey]) -> CacheKey {
        let mut h = blake3::Hasher::new();
        h.update(CACHE_KEY_DOMAIN);
        h.update(vertex.op_digest().as_bytes());
        h.update(&(input_keys.len() as u64).to_le_bytes());
        for key in input_keys {
            h.update(&key.0);
        }
        CacheKey(*h.finalize().as_bytes())
    }

    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The first 12 hex characters.
    pub fn short(&self) -> String {
        let mut s = self.hex();
        s.truncate(12);
        s
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hex())
    }
}

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CacheKey({})", self.short())
    }
}

/// Why a vertex was executed rather than taken from the cache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MissReason {
    /// The cache has no record for the key.
    NoRecord,
    /// The vertex asked to bypass the cache (`--no-cache`).
    IgnoreCache,
    /// A record exists for this step but its definition differs.
    DefinitionChanged { detail: String },
    /// A record exists for this step but input `input` changed.
    InputChanged { input: usize, detail: String },
    /// Anything else the executor wants to report.
    Other(String),
}

impl fmt::Display for MissReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MissReason::NoRecord => f.write_str("no record"),
            MissReason::IgnoreCache => f.write_str("no-cache"),
            MissReason::DefinitionChanged { detail } => write!(f, "definition changed: {detail}"),
            MissReason::InputChanged { input, detail } => {
                write!(f, "input {input} changed: {detail}")
            }
            MissReason::Other(detail) => f.write_str(detail),
        }
    }
}

/// Whether a result came from the cache, and if not, why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CacheStatus {
    Cached,
    Miss(MissReason),
}

impl CacheStatus {
    pub fn is_cached(&self) -> bool {
        matches!(self, CacheStatus::Cached)
    }
}

/// The answer of [`Executor::lookup`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup<O> {
    Hit(O),
    Miss(MissReason),
}

// ---------------------------------------------------------------------------
// Executor

/// A resolved input handed to [`Executor::cache_key`].
#[derive(Clone, Debug)]
pub struct Input<O> {
    pub digest: VertexDigest,
    pub key: CacheKey,
    pub output: O,
}

/// What [`Executor::exec`] gets besides the vertex and its inputs.
#[derive(Clone, Debug)]
pub struct ExecContext {
    /// The vertex's cache key.
    pub key: CacheKey,
    /// Fires when the result is no longer wanted. `exec` must then stop
    /// promptly (and clean up); the solver waits for it to return.
    pub cancel: CancellationToken,
    /// Emits log and progress events for this vertex.
    pub progress: ProgressHandle,
}

/// Runs ops. The caller implements it (the build glue over the runtime and
/// store; tests with fake ops).
#[async_trait::async_trait]
pub trait Executor: Send + Sync + 'static {
    /// A vertex's result, e.g. a snapshot handle. Cloned for each consumer.
    type Output: Clone + Send + Sync + 'static;

    /// The vertex's cache key. The default is [`CacheKey::derive`] over the
    /// inputs' keys; override it for content-based keys (e.g. hash the
    /// files a COPY selects from `inputs[i].output`).
    async fn cache_key(
        &self,
        vertex: &Vertex,
        inputs: &[Input<Self::Output>],
    ) -> Result<CacheKey, BoxError> {
        let keys: Vec<CacheKey> = inputs.iter().map(|i| i.key).collect();
        Ok(CacheKey::derive(vertex, &keys))
    }

    /// Looks `key` up in the cache. On a miss, say why. Not called for
    /// vertices with `ignore_cache`. The default never hits.
    async fn lookup(
        &self,
        vertex: &Vertex,
        key: &CacheKey,
    ) -> Result<Lookup<Self::Output>, BoxError> {
        let _ = (vertex, key);
        Ok(Lookup::Miss(MissReason::NoRecord))
    }

    /// Executes the vertex on its inputs' outputs (in input order).
    async fn exec(
        &self,
        vertex: &Vertex,
        inputs: Vec<Self::Output>,
        ctx: ExecContext,
    ) -> Result<Self::Output, BoxError>;

    /// Called once the solver is done with a key whose [`Executor::lookup`]
    /// missed, however that ended: after [`Executor::store`], after a
    /// failed exec, or when the evaluation was cancelled (also while
    /// waiting for an execution slot). Executors that hold a per-key lock
    /// from the miss until the record is written release it here. It must
    /// not block. The default does nothing.
    fn release(&self, vertex: &Vertex, key: &CacheKey) {
        let _ = (vertex, key);
    }

    /// Records a successful execution under `key`. Failures are logged and
    /// do not fail the build. The default stores nothing.
    async fn store(
        &self,
        vertex: &Vertex,
        key: &CacheKey,
        output: &Self::Output,
    ) -> Result<(), BoxError> {
        let _ = (vertex, key, output);
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Progress events

/// Which output stream a log chunk came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LogStream {
    Stdout,
    Stderr,
}

/// A progress event about one vertex.
#[derive(Clone, Debug)]
pub struct Event {
    pub digest: VertexDigest,
    pub at: SystemTime,
    pub kind: EventKind,
}

/// What happened. A vertex that starts gets exactly one terminal event:
/// `Cached`, `Completed`, `Failed` or `Cancelled`. A vertex whose inputs
/// failed, or that was cancelled before starting, gets none.
#[derive(Clone, Debug)]
pub enum EventKind {
    /// The vertex's inputs are ready; it is computing its key.
    Started {
        name: String,
    },
    /// The result came from the cache; nothing was executed.
    Cached {
        key: CacheKey,
    },
    /// Output of the executing op.
    Log {
        stream: LogStream,
        bytes: Vec<u8>,
    },
    /// Progress of the executing op (`total` when known).
    Progress {
        current: u64,
        total: Option<u64>,
    },
    /// Executed successfully; `duration` counts from `Started`.
    Completed {
        duration: Duration,
        reason: MissReason,
    },
    Failed {
        error: SolveError,
    },
    /// Stopped because nothing needs the result any more.
    Cancelled,
}

/// Lets an executing op report logs and progress.
#[derive(Clone, Debug)]
pub struct ProgressHandle {
    digest: VertexDigest,
    sink: Option<mpsc::UnboundedSender<Event>>,
}

impl ProgressHandle {
    /// A handle that drops everything (for calling executors directly).
    pub fn discard(digest: VertexDigest) -> ProgressHandle {
        ProgressHandle { digest, sink: None }
    }

    pub fn digest(&self) -> VertexDigest {
        self.digest
    }

    pub fn log(&self, stream: LogStream, bytes: impl Into<Vec<u8>>) {
        self.emit(EventKind::Log {
            stream,
            bytes: bytes.into(),
        });
    }

    pub fn progress(&self, current: u64, total: Option<u64>) {
        self.emit(EventKind::Progress { current, total });
    }

    fn emit(&self, kind: EventKind) {
        if let Some(sink) = &self.sink {
            // A closed receiver means nobody renders progress; that is fine.
            let _ = sink.send(Event {
                digest: self.digest,
                at: SystemTime::now(),
                kind,
            });
        }
    }
}

// ---------------------------------------------------------------------------
// Errors and results

/// What the solver was doing with a vertex when it failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    CacheKey,
    Lookup,
    Exec,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::CacheKey => "computing the cache key",
            Phase::Lookup => "cache lookup",
            Phase::Exec => "execution",
        })
    }
}

/// A solve failed.
#[derive(Clone, Debug, thiserror::Error)]
pub enum SolveError {
    /// The executor failed on a vertex.
    #[error("{name} ({}): {phase} failed", digest.short())]
    Vertex {
        digest: VertexDigest,
        name: String,
        phase: Phase,
        #[source]
        source: SharedError,
    },
    /// The executor panicked on a vertex.
    #[error("{name} ({}): executor panicked: {message}", digest.short())]
    Panicked {
        digest: VertexDigest,
        name: String,
        message: String,
    },
    /// The graph cannot be solved.
    #[error("cannot solve the graph")]
    Graph(#[source] Arc<GraphError>),
    /// The solve (or, for a shared vertex, every solve needing it) was
    /// cancelled.
    #[error("the solve was cancelled")]
    Cancelled,
}

impl SolveError {
    /// The digest of the vertex that failed, if a vertex failed.
    pub fn vertex(&self) -> Option<VertexDigest> {
        match self {
            SolveError::Vertex { digest, .. } | SolveError::Panicked { digest, .. } => {
                Some(*digest)
            }
            SolveError::Graph(_) | SolveError::Cancelled => None,
        }
    }
}

/// The outcome of one vertex.
#[derive(Clone, Debug)]
pub struct VertexResult<O> {
    pub digest: VertexDigest,
    pub name: String,
    pub key: CacheKey,
    pub status: CacheStatus,
    pub output: O,
    /// From the vertex's start (inputs ready) to its result.
    pub duration: Duration,
}

/// The results of a successful solve: the targets and every vertex this
/// solve evaluated for them. When a solve joins a vertex another solve was
/// already evaluating, that vertex's own inputs are left to the other solve
/// and may be missing here.
#[derive(Clone, Debug)]
pub struct Solution<O> {
    results: HashMap<VertexDigest, Arc<VertexResult<O>>>,
    targets: Vec<VertexDigest>,
}

impl<O> Solution<O> {
    /// The result of any vertex the targets depended on.
    pub fn get(&self, digest: &VertexDigest) -> Option<&VertexResult<O>> {
        self.results.get(digest).map(Arc::as_ref)
    }

    /// The targets' results, in the order they were requested.
    pub fn targets(&self) -> impl Iterator<Item = &VertexResult<O>> {
        self.targets.iter().map(|d| self.results[d].as_ref())
    }

    /// Every result, in no particular order.
    pub fn results(&self) -> impl Iterator<Item = &VertexResult<O>> {
        self.results.values().map(Arc::as_ref)
    }

    pub fn len(&self) -> usize {
        self.results.len()
    }

    pub fn is_empty(&self) -> bool {
        self.results.is_empty()
    }

    /// How many results came from the cache.
    pub fn cached(&self) -> usize {
        self.results().filter(|r| r.status.is_cached()).count()
    }

    /// How many vertices were executed (for this solve or a concurrent one
    /// sharing them).
    pub fn executed(&self) -> usize {
        self.len() - self.cached()
    }
}

// ---------------------------------------------------------------------------
// Solver

/// Options for a [`Solver`].
#[derive(Clone, Debug)]
pub struct SolverOptions {
    /// How many vertices may execute at once (cache keys and lookups are
    /// not limited). At least 1; defaults to the number of CPUs.
    pub max_parallelism: usize,
    /// Where progress events go.
    pub events: Option<mpsc::UnboundedSender<Event>>,
}

impl Default for SolverOptions {
    fn default() -> Self {
        SolverOptions {
            max_parallelism: std::thread::available_parallelism().map_or(1, |n| n.get()),
            events: None,
        }
    }
}

type VertexOutcome<O> = Result<Arc<VertexResult<O>>, SolveError>;
type VertexFuture<O> = Shared<BoxFuture<'static, VertexOutcome<O>>>;

/// Solves graphs through an [`Executor`]. Cheap to clone; clones share the
/// in-flight map, the parallelism limit and the event sink.
pub struct Solver<E: Executor + ?Sized> {
    inner: Arc<Inner<E>>,
}

impl<E: Executor + ?Sized> Clone for Solver<E> {
    fn clone(&self) -> Self {
        Solver {
            inner: self.inner.clone(),
        }
    }
}

struct Inner<E: Executor + ?Sized> {
    executor: Arc<E>,
    semaphore: Semaphore,
    events: Option<mpsc::UnboundedSender<Event>>,
    inflight: Arc<InFlight<E::Output>>,
    max_parallelism: usize,
}

/// The vertices being evaluated, by digest.
struct InFlight<O> {
    map: Mutex<HashMap<VertexDigest, Arc<Entry<O>>>>,
    next_id: AtomicU64,
}

impl<O> InFlight<O> {
    fn lock(&self) -> MutexGuard<'_, HashMap<VertexDigest, Arc<Entry<O>>>> {
        // The map stays consistent even if a holder panicked: every update
        // is a single insert or remove.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Removes `digest`'s entry if it is still the one with `id`.
    fn remove(&self, digest: &VertexDigest, id: u64) {
        let mut map = self.lock();
        if map.get(digest).is_some_and(|e| e.id == id) {
            map.remove(digest);
        }
    }
}

/// One in-flight evaluation.
struct Entry<O> {
    id: u64,
    fut: VertexFuture<O>,
    /// Cancels the evaluation; fired when the last [`Handle`] goes.
    cancel: CancellationToken,
    /// Fired when the evaluation's task has ended.
    finished: CancellationToken,
    /// Live handles. Only decremented under the in-flight lock.
    interest: AtomicUsize,
    /// Whether a second solve joined this evaluation.
    joined: AtomicBool,
}

/// Interest in an in-flight evaluation. When the last handle of an
/// unfinished evaluation drops, it is cancelled and leaves the map.
struct Handle<O> {
    entry: Arc<Entry<O>>,
    inflight: Arc<InFlight<O>>,
    digest: VertexDigest,
}

impl<O> Handle<O> {
    /// Takes an interest; call with the in-flight lock held (or with
    /// another handle to the same entry alive).
    fn new(entry: &Arc<Entry<O>>, inflight: &Arc<InFlight<O>>, digest: VertexDigest) -> Self {
        entry.interest.fetch_add(1, Ordering::SeqCst);
        Handle {
            entry: entry.clone(),
            inflight: inflight.clone(),
            digest,
        }
    }
}

impl<O> Clone for Handle<O> {
    fn clone(&self) -> Self {
        Handle::new(&self.entry, &self.inflight, self.digest)
    }
}

impl<O> Drop for Handle<O> {
    fn drop(&mut self) {
        // Never dropped while the in-flight lock is held (see `solve`).
        let mut map = self.inflight.lock();
        if self.entry.interest.fetch_sub(1, Ordering::SeqCst) == 1
            && !self.entry.finished.is_cancelled()
        {
            self.entry.cancel.cancel();
            if map.get(&self.digest).is_some_and(|e| e.id == self.entry.id) {
                map.remove(&self.digest);
            }
        }
    }
}

/// Removes the entry from the map and marks it finished when the vertex
/// task ends, however it ends.
struct TaskGuard<O> {
    inflight: Arc<InFlight<O>>,
    digest: VertexDigest,
    id: u64,
    finished: CancellationToken,
}

impl<O> Drop for TaskGuard<O> {
    fn drop(&mut self) {
        self.inflight.remove(&self.digest, self.id);
        self.finished.cancel();
    }
}

/// A vertex evaluation created by a solve, spawned once the lock is gone.
struct Pending<O> {
    vertex: Arc<Vertex>,
    inputs: Vec<Handle<O>>,
    entry: Arc<Entry<O>>,
    tx: oneshot::Sender<VertexOutcome<O>>,
}

impl<E: Executor + ?Sized> Solver<E> {
    /// A solver with default options.
    pub fn new(executor: Arc<E>) -> Solver<E> {
        Solver::with_options(executor, SolverOptions::default())
    }

    pub fn with_options(executor: Arc<E>, options: SolverOptions) -> Solver<E> {
        let max_parallelism = options.max_parallelism.max(1);
        Solver {
            inner: Arc::new(Inner {
                executor,
                semaphore: Semaphore::new(max_parallelism),
                events: options.events,
                inflight: Arc::new(InFlight {
                    map: Mutex::new(HashMap::new()),
                    next_id: AtomicU64::new(0),
                }),
                max_parallelism,
            }),
        }
    }

    pub fn executor(&self) -> &Arc<E> {
        &self.inner.executor
    }

    pub fn max_parallelism(&self) -> usize {
        self.inner.max_parallelism
    }

    /// Evaluates `targets` and everything they depend on (only that).
    pub async fn solve(
        &self,
        graph: &Graph,
        targets: &[VertexId],
    ) -> Result<Solution<E::Output>, SolveError> {
        self.solve_with_cancel(graph, targets, CancellationToken::new())
            .await
    }

    /// Like [`Solver::solve`], stopping with [`SolveError::Cancelled`] when
    /// `cancel` fires.
    pub async fn solve_with_cancel(
        &self,
        graph: &Graph,
        targets: &[VertexId],
        cancel: CancellationToken,
    ) -> Result<Solution<E::Output>, SolveError> {
        let order = graph
            .reachable(targets)
            .map_err(|e| SolveError::Graph(Arc::new(e)))?;
        let inflight = &self.inner.inflight;

        // Join the evaluations already in flight and create the others.
        // A joined evaluation brings its own inputs, so only targets and
        // inputs of created vertices are needed. Inputs' handles are made
        // before their consumers' (topological order). No handle may drop
        // while the lock is held: its Drop takes the lock.
        let graph_err = |e| SolveError::Graph(Arc::new(e));
        let mut handles: HashMap<VertexId, Handle<E::Output>> = HashMap::new();
        let mut pending = Vec::new();
        {
            let mut map = inflight.lock();
            let mut needed: HashSet<VertexId> = targets.iter().copied().collect();
            let mut create: HashSet<VertexId> = HashSet::new();
            for &id in order.iter().rev() {
                if needed.contains(&id)
                    && !map.contains_key(&graph.vertex(id).map_err(graph_err)?.digest())
                {
                    create.insert(id);
                    needed.extend(graph.inputs(id).map_err(graph_err)?.iter().copied());
                }
            }
            for &id in order.iter().filter(|id| needed.contains(id)) {
                let vertex = graph.vertex(id).map_err(graph_err)?;
                let digest = vertex.digest();
                let handle = if !create.contains(&id) {
                    let entry = &map[&digest];
                    entry.joined.store(true, Ordering::SeqCst);
                    Handle::new(entry, inflight, digest)
                } else {
                    let inputs = graph
                        .inputs(id)
                        .map_err(graph_err)?
                        .iter()
                        .map(|input| handles[input].clone())
                        .collect();
                    let (tx, rx) = oneshot::channel();
                    let fut: BoxFuture<'static, VertexOutcome<E::Output>> =
                        Box::pin(rx.map(|r| r.unwrap_or(Err(SolveError::Cancelled))));
                    let entry = Arc::new(Entry {
                        id: inflight.next_id.fetch_add(1, Ordering::Relaxed),
                        fut: fut.shared(),
                        cancel: CancellationToken::new(),
                        finished: CancellationToken::new(),
                        interest: AtomicUsize::new(0),
                        joined: AtomicBool::new(false),
                    });
                    map.insert(digest, entry.clone());
                    let handle = Handle::new(&entry, inflight, digest);
                    pending.push(Pending {
                        vertex: vertex.clone(),
                        inputs,
                        entry,
                        tx,
                    });
                    handle
                };
                handles.insert(id, handle);
            }
        }

        let created: Vec<Arc<Entry<E::Output>>> = pending.iter().map(|p| p.entry.clone()).collect();
        for p in pending {
            self.spawn(p);
        }

        let futs: Vec<(VertexDigest, VertexFuture<E::Output>)> = handles
            .values()
            .map(|h| (h.digest, h.entry.fut.clone()))
            .collect();
        let target_handles: Vec<Handle<E::Output>> =
            targets.iter().map(|t| handles[t].clone()).collect();
        drop(handles);

        let target_futs = target_handles.iter().map(|h| h.entry.fut.clone());
        let outcome = tokio::select! {
            biased;
            r = futures::future::try_join_all(target_futs) => r.map(|_| ()),
            () = cancel.cancelled() => Err(SolveError::Cancelled),
        };
        if let Err(err) = outcome {
            drop(target_handles);
            // Wait for what this solve alone started to wind down.
            for entry in created {
                if !entry.joined.load(Ordering::SeqCst) {
                    entry.finished.cancelled().await;
                }
            }
            return Err(err);
        }

        let mut results = HashMap::with_capacity(futs.len());
        for (digest, fut) in futs {
            results.insert(digest, fut.await?);
        }
        let targets = target_handles.iter().map(|h| h.digest).collect();
        Ok(Solution { results, targets })
    }

    fn spawn(&self, p: Pending<E::Output>) {
        let inner = self.inner.clone();
        let Pending {
            vertex,
            inputs,
            entry,
            tx,
        } = p;
        let guard = TaskGuard {
            inflight: inner.inflight.clone(),
            digest: vertex.digest(),
            id: entry.id,
            finished: entry.finished.clone(),
        };
        let cancel = entry.cancel.clone();
        drop(entry);
        tokio::spawn(async move {
            let digest = vertex.digest();
            let name_for_panic = vertex.clone();
            let outcome = AssertUnwindSafe(run_vertex(inner, vertex, inputs, cancel))
                .catch_unwind()
                .await
                .unwrap_or_else(|payload| {
                    let message = payload
                        .downcast_ref::<&str>()
                        .map(|s| (*s).to_owned())
                        .or_else(|| payload.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "unknown panic payload".to_owned());
                    Err(SolveError::Panicked {
                        digest,
                        name: name_for_panic.name(),
                        message,
                    })
                });
            // Leave the map before publishing, so a solve arriving now
            // starts afresh rather than joining a finished evaluation.
            drop(guard);
            let _ = tx.send(outcome);
        });
    }
}

fn vertex_error(vertex: &Vertex, phase: Phase, source: BoxError) -> SolveError {
    SolveError::Vertex {
        digest: vertex.digest(),
        name: vertex.name(),
        phase,
        source: Arc::from(source),
    }
}

/// One vertex's task: wait for inputs, then evaluate.
async fn run_vertex<E: Executor + ?Sized>(
    inner: Arc<Inner<E>>,
    vertex: Arc<Vertex>,
    inputs: Vec<Handle<E::Output>>,
    cancel: CancellationToken,
) -> VertexOutcome<E::Output> {
    let resolved = {
        let futs = inputs.iter().map(|h| h.entry.fut.clone());
        tokio::select! {
            biased;
            () = cancel.cancelled() => return Err(SolveError::Cancelled),
            r = futures::future::try_join_all(futs) => r?,
        }
    };
    drop(inputs);

    let progress = ProgressHandle {
        digest: vertex.digest(),
        sink: inner.events.clone(),
    };
    let name = vertex.name();
    progress.emit(EventKind::Started { name: name.clone() });
    let start = Instant::now();

    let outcome = evaluate(&inner, &vertex, resolved, &cancel, &progress).await;
    match &outcome {
        Ok((key, status, _)) => match status {
            CacheStatus::Cached => progress.emit(EventKind::Cached { key: *key }),
            CacheStatus::Miss(reason) => progress.emit(EventKind::Completed {
                duration: start.elapsed(),
                reason: reason.clone(),
            }),
        },
        Err(SolveError::Cancelled) => progress.emit(EventKind::Cancelled),
        Err(error) => {
            tracing::debug!(vertex = %vertex.digest().short(), %error, "vertex failed");
            progress.emit(EventKind::Failed {
                error: error.clone(),
            });
        }
    }
    outcome.map(|(key, status, output)| {
        Arc::new(VertexResult {
            digest: vertex.digest(),
            name,
            key,
            status,
            output,
            duration: start.elapsed(),
        })
    })
}

async fn evaluate<E: Executor + ?Sized>(
    inner: &Inner<E>,
    vertex: &Vertex,
    resolved: Vec<Arc<VertexResult<E::Output>>>,
    cancel: &CancellationToken,
    progress: &ProgressHandle,
) -> Result<(CacheKey, CacheStatus, E::Output), SolveError> {
    let executor = &inner.executor;
    let inputs: Vec<Input<E::Output>> = resolved
        .iter()
        .map(|r| Input {
            digest: r.digest,
            key: r.key,
            output: r.output.clone(),
        })
        .collect();

    // Everything up to the exec is dropped as soon as `cancel` fires.
    let mut release: Option<Release<'_, E>> = None;
    let prepared = async {
        let key = executor
            .cache_key(vertex, &inputs)
            .await
            .map_err(|e| vertex_error(vertex, Phase::CacheKey, e))?;
        let reason = if vertex.meta().ignore_cache {
            MissReason::IgnoreCache
        } else {
            match executor
                .lookup(vertex, &key)
                .await
                .map_err(|e| vertex_error(vertex, Phase::Lookup, e))?
            {
                Lookup::Hit(output) => return Ok((key, Err(output))),
                Lookup::Miss(reason) => {
                    release = Some(Release {
                        executor: &**executor,
                        vertex,
                        key,
                    });
                    reason
                }
            }
        };
        let permit = inner
            .semaphore
            .acquire()
            .await
            .expect("the solver never closes its semaphore");
        Ok((key, Ok((reason, permit))))
    };
    let (key, prepared) = tokio::select! {
        biased;
        () = cancel.cancelled() => return Err(SolveError::Cancelled),
        r = prepared => r?,
    };
    let (reason, permit) = match prepared {
        Err(cached) => return Ok((key, CacheStatus::Cached, cached)),
        Ok(miss) => miss,
    };

    // The exec sees `cancel` itself and is awaited to the end, so it can
    // clean up.
    let outputs = inputs.into_iter().map(|i| i.output).collect();
    let ctx = ExecContext {
        key,
        cancel: cancel.clone(),
        progress: progress.clone(),
    };
    let result = executor.exec(vertex, outputs, ctx).await;
    drop(permit);
    if cancel.is_cancelled() {
        return Err(SolveError::Cancelled);
    }
    let output = result.map_err(|e| vertex_error(vertex, Phase::Exec, e))?;
    if let Err(error) = executor.store(vertex, &key, &output).await {
        tracing::warn!(
            vertex = %vertex.digest().short(),
            key = %key.short(),
            error = %error,
            "could not store the result in the cache"
        );
    }
    drop(release);
    Ok((key, CacheStatus::Miss(reason), output))
}

/// Calls [`Executor::release`] for a missed key when dropped.
struct Release<'a, E: Executor + ?Sized> {
    executor: &'a E,
    vertex: &'a Vertex,
    key: CacheKey,
}

impl<E: Executor + ?Sized> Drop for Release<'_, E> {
    fn drop(&mut self) {
        self.executor.release(self.vertex, &self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn miss_reasons_read_as_the_cache_contract_says() {
        assert_eq!(MissReason::NoRecord.to_string(), "no record");
        assert_eq!(MissReason::IgnoreCache.to_string(), "no-cache");
        assert_eq!(
            MissReason::InputChanged {
                input: 1,
                detail: "context: src/main.c changed".into()
            }
            .to_string(),
            "input 1 changed: context: src/main.c changed"
        );
    }
}
