//! A fake executor for scheduler tests. Vertices are exec ops whose first
//! argument scripts the behaviour:
//!
//! | args | behaviour |
//! |---|---|
//! | `ok NAME` | returns `NAME(inputs…)` |
//! | `sleep MS NAME` | sleeps, then as `ok` |
//! | `barrier NAME` | waits until the barrier's other party arrives |
//! | `gate NAME` | waits for a permit from `Fake::gate` |
//! | `fail NAME` | fails with `boom` |
//! | `fail-when-running OTHER NAME` | waits until `OTHER` is executing, then fails |
//! | `block NAME` | waits for cancellation, records it, fails |
//! | `panic NAME` | panics |
//! | `log NAME` | logs to stdout and stderr, reports progress |
//!
//! Source ops (`image`) return their reference.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use kiln_solver::{
    BoxError, CacheKey, ExecContext, ExecMount, ExecOp, Executor, Graph, LogStream, Lookup,
    MissReason, Op, OpMetadata, SourceOp, Vertex, VertexDigest, VertexId,
};
use tokio::sync::{Barrier, Semaphore};

#[derive(Default)]
pub struct Counters {
    pub execs: HashMap<VertexDigest, usize>,
    pub names: HashMap<String, usize>,
    pub running: Vec<String>,
    pub cancelled: Vec<String>,
    pub stores: usize,
    pub lookups: usize,
    /// Keys released after a miss (`Executor::release`).
    pub released: usize,
}

pub struct Fake {
    pub counters: Mutex<Counters>,
    pub running: AtomicUsize,
    pub max_running: AtomicUsize,
    pub barrier: Barrier,
    pub gate: Semaphore,
    /// Cache records: key → output.
    pub cache: Mutex<HashMap<CacheKey, String>>,
    /// Last key stored per op digest and the input keys it had, to explain
    /// misses.
    pub history: Mutex<HashMap<VertexDigest, CacheKey>>,
    pub use_cache: bool,
}

impl Fake {
    pub fn new() -> Arc<Fake> {
        Arc::new(Fake::with_cache(false))
    }

    pub fn cached() -> Arc<Fake> {
        Arc::new(Fake::with_cache(true))
    }

    fn with_cache(use_cache: bool) -> Fake {
        Fake {
            counters: Mutex::new(Counters::default()),
            running: AtomicUsize::new(0),
            max_running: AtomicUsize::new(0),
            barrier: Barrier::new(2),
            gate: Semaphore::new(0),
            cache: Mutex::new(HashMap::new()),
            history: Mutex::new(HashMap::new()),
            use_cache,
        }
    }

    pub fn execs_of_name(&self, name: &str) -> usize {
        self.counters
            .lock()
            .unwrap()
            .names
            .get(name)
            .copied()
            .unwrap_or(0)
    }

    pub fn total_execs(&self) -> usize {
        self.counters.lock().unwrap().names.values().sum()
    }

    pub fn is_running(&self, name: &str) -> bool {
        self.counters
            .lock()
            .unwrap()
            .running
            .iter()
            .any(|n| n == name)
    }

    pub fn was_cancelled(&self, name: &str) -> bool {
        self.counters
            .lock()
            .unwrap()
            .cancelled
            .iter()
            .any(|n| n == name)
    }
}

/// Decrements the running counter when an exec ends, even by panic.
struct Running<'a> {
    fake: &'a Fake,
    name: String,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.fake.running.fetch_sub(1, Ordering::SeqCst);
        let mut c = self.fake.counters.lock().unwrap();
        if let Some(pos) = c.running.iter().position(|n| *n == self.name) {
            c.running.remove(pos);
        }
    }
}

#[async_trait::async_trait]
impl Executor for Fake {
    type Output = String;

    async fn lookup(&self, vertex: &Vertex, key: &CacheKey) -> Result<Lookup<String>, BoxError> {
        self.counters.lock().unwrap().lookups += 1;
        if !self.use_cache {
            return Ok(Lookup::Miss(MissReason::NoRecord));
        }
        if let Some(out) = self.cache.lock().unwrap().get(key) {
            return Ok(Lookup::Hit(out.clone()));
        }
        if self
            .history
            .lock()
            .unwrap()
            .contains_key(&vertex.op_digest())
        {
            return Ok(Lookup::Miss(MissReason::InputChanged {
                input: 0,
                detail: "an input's key changed".to_owned(),
            }));
        }
        Ok(Lookup::Miss(MissReason::NoRecord))
    }

    async fn exec(
        &self,
        vertex: &Vertex,
        inputs: Vec<String>,
        ctx: ExecContext,
    ) -> Result<String, BoxError> {
        let args: Vec<String> = match vertex.op() {
            Op::Exec(e) => e.args.clone(),
            Op::Source(SourceOp::Image { reference, .. }) => vec!["ok".into(), reference.clone()],
            other => vec!["ok".into(), other.kind().to_owned()],
        };
        let name = args.last().cloned().unwrap_or_default();
        {
            let mut c = self.counters.lock().unwrap();
            *c.execs.entry(vertex.digest()).or_default() += 1;
            *c.names.entry(name.clone()).or_default() += 1;
            c.running.push(name.clone());
        }
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_running.fetch_max(now, Ordering::SeqCst);
        let _running = Running {
            fake: self,
            name: name.clone(),
        };

        match args[0].as_str() {
            "ok" => {}
            "sleep" => {
                let ms: u64 = args[1].parse()?;
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            "barrier" => {
                self.barrier.wait().await;
            }
            "gate" => {
                self.gate.acquire().await?.forget();
            }
            "fail" => return Err("boom".into()),
            "fail-when-running" => {
                while !self.is_running(&args[1]) {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                return Err("boom".into());
            }
            "block" => {
                ctx.cancel.cancelled().await;
                self.counters.lock().unwrap().cancelled.push(name.clone());
                return Err("interrupted".into());
            }
            "panic" => panic!("fake exec panicked"),
            "log" => {
                ctx.progress.log(LogStream::Stdout, b"hello\n".to_vec());
                ctx.progress.log(LogStream::Stderr, b"warn\n".to_vec());
                ctx.progress.progress(1, Some(2));
            }
            other => return Err(format!("unknown fake behaviour {other:?}").into()),
        }
        Ok(format!("{name}({})", inputs.join(",")))
    }

    fn release(&self, _vertex: &Vertex, _key: &CacheKey) {
        self.counters.lock().unwrap().released += 1;
    }

    async fn store(
        &self,
        vertex: &Vertex,
        key: &CacheKey,
        output: &String,
    ) -> Result<(), BoxError> {
        self.counters.lock().unwrap().stores += 1;
        if self.use_cache {
            self.cache.lock().unwrap().insert(*key, output.clone());
            self.history
                .lock()
                .unwrap()
                .insert(vertex.op_digest(), *key);
        }
        Ok(())
    }
}

pub fn image(g: &mut Graph, reference: &str) -> VertexId {
    g.add(
        Op::Source(SourceOp::Image {
            reference: reference.to_owned(),
            platform: "linux/amd64".to_owned(),
            resolved_digest: None,
        }),
        vec![],
        OpMetadata::named(format!("FROM {reference}")),
    )
    .unwrap()
}

/// An exec vertex scripted by `args` over `inputs` (each mounted).
pub fn step(g: &mut Graph, args: &[&str], inputs: &[VertexId]) -> VertexId {
    step_with(
        g,
        args,
        inputs,
        OpMetadata::named(format!("RUN {}", args.join(" "))),
    )
}

pub fn step_with(g: &mut Graph, args: &[&str], inputs: &[VertexId], meta: OpMetadata) -> VertexId {
    let mounts = (0..inputs.len())
        .map(|i| {
            let mut m = ExecMount::root(i);
            if i > 0 {
                m.dest = format!("/in{i}");
                m.output = false;
            }
            m
        })
        .collect();
    g.add(
        Op::Exec(ExecOp {
            args: args.iter().map(|s| (*s).to_owned()).collect(),
            cwd: "/".to_owned(),
            mounts,
            ..ExecOp::default()
        }),
        inputs.to_vec(),
        meta,
    )
    .unwrap()
}
