//! [`Worker`]: the [`Executor`] that runs ops on the local store.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use kiln_runtime::{Runtime, RuntimeConfig};
use kiln_solver::{
    BoxError, CacheKey, ExecContext, Executor, Input, Lookup, MissReason, Op, SourceOp, Vertex,
};
use kiln_store::Store;

use crate::error::{Error, Result, blocking};
use crate::fileop::{self, FileOpEnv};
use crate::fsref::FsRef;
use crate::locks::{self, LockFile};
use crate::records::Records;
use crate::sources::{self, LocalSpec};
use crate::{MatcherFactory, exec, local};

/// What a [`Worker`] is given besides the store.
#[derive(Clone, Default)]
pub struct WorkerConfig {
    /// Local sources by name; `"context"` is the build context.
    pub contexts: BTreeMap<String, PathBuf>,
    /// Secrets by id (`RUN --mount=type=secret,id=…`).
    pub secrets: BTreeMap<String, Vec<u8>>,
    /// SSH agent sockets by id (`RUN --mount=type=ssh,id=…`).
    pub ssh: BTreeMap<String, PathBuf>,
    /// Pulls base images missing from the store; without it they are an
    /// error.
    pub registry: Option<kiln_registry::Client>,
    /// The OCI runtime for RUN steps (default: `runc` from `PATH`; the
    /// kiln binary passes its embedded runtime).
    pub runtime: Option<kiln_runtime::OciRuntime>,
    /// Clamp the times in written layer tars (`SOURCE_DATE_EPOCH`).
    pub source_date_epoch: Option<i64>,
}

impl std::fmt::Debug for WorkerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerConfig")
            .field("contexts", &self.contexts)
            .field("secrets", &self.secrets.keys().collect::<Vec<_>>())
            .field("ssh", &self.ssh)
            .field("registry", &self.registry.is_some())
            .field("runtime", &self.runtime)
            .field("source_date_epoch", &self.source_date_epoch)
            .finish()
    }
}

/// State shared by the op implementations.
pub(crate) struct Shared {
    pub store: Store,
    pub config: WorkerConfig,
    pub runtime: Runtime,
    pub matcher: MatcherFactory,
    /// `<root>/build`.
    pub build_dir: PathBuf,
    /// This process's temporary directory in the store: mounts and work
    /// directories.
    pub tmp: PathBuf,
    /// `<root>/cache-mounts`.
    pub cache_mounts: PathBuf,
    records: Records,
    http: OnceLock<reqwest::Client>,
    /// Per-key locks held from a miss until the result is recorded.
    held: Mutex<HashMap<CacheKey, Vec<LockFile>>>,
    /// Why keys of this build changed: for local sources what changed in
    /// the files, for other vertices the first changed input's reason.
    changes: Mutex<HashMap<CacheKey, String>>,
    /// The input keys each key was derived from.
    inputs_of: Mutex<HashMap<CacheKey, Vec<CacheKey>>>,
    /// The shared GC lock, held for the worker's lifetime.
    _gc: LockFile,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every update is a single insert or remove: a panicking holder
    // leaves the map consistent.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    pub(crate) fn http_client(&self) -> reqwest::Result<reqwest::Client> {
        if let Some(c) = self.http.get() {
            return Ok(c.clone());
        }
        kiln_registry::install_crypto_provider();
        let c = reqwest::Client::builder()
            .user_agent(format!("kiln/{}", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(self.http.get_or_init(|| c).clone())
    }
}

/// Executes solver ops on the local store. Cheap to clone.
#[derive(Clone)]
pub struct Worker {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("root", &self.shared.store.root())
            .field("config", &self.shared.config)
            .finish()
    }
}

/// Mends what killed builds left in `store` (running steps, their mounts
/// and network namespaces), without starting a worker. Every command that
/// opens the store calls it; it is cheap when nothing is left.
pub fn reap_stale(store: &Store) {
    kiln_runtime::reap_stale(&store.root().join("build").join("runtime"));
}

impl Worker {
    /// A worker on `store`. Creates `<root>/build/` (cache records, stat
    /// caches, locks and container state) and `<root>/cache-mounts/`;
    /// work directories and mounts go to the process's lease
    /// ([`Store::temp_dir`]), which the next kiln mends if this one dies. Holds the build cache's GC lock shared until
    /// dropped (waiting for a running `builder prune`), so garbage
    /// collection never removes what this worker may use.
    pub fn new(store: Store, config: WorkerConfig) -> Result<Worker> {
        let root = store.root().to_owned();
        let build_dir = root.join("build");
        // This process's own: the next kiln unmounts and removes what a
        // killed build left there.
        let tmp = store.temp_dir()?;
        let cache_dir = build_dir.join("cache");
        let cache_mounts = root.join("cache-mounts");
        let locks_dir = locks::locks_dir(&build_dir);
        for d in [&build_dir, &tmp, &cache_dir, &cache_mounts, &locks_dir] {
            std::fs::create_dir_all(d).map_err(|e| Error::io("create directory", d, e))?;
        }
        let gc = locks::gc_shared(&build_dir)?;
        let mut rc = RuntimeConfig::new(build_dir.join("runtime"));
        if let Some(runtime) = &config.runtime {
            rc.runtime = runtime.clone();
        }
        let runtime = Runtime::new(rc)?;
        let matcher: MatcherFactory = Arc::new(local::exclude_matcher);
        Ok(Worker {
            shared: Arc::new(Shared {
                records: Records::new(store.clone(), cache_dir),
                store,
                config,
                runtime,
                matcher,
                build_dir,
                tmp,
                cache_mounts,
                http: OnceLock::new(),
                held: Mutex::new(HashMap::new()),
                changes: Mutex::new(HashMap::new()),
                inputs_of: Mutex::new(HashMap::new()),
                _gc: gc,
            }),
        })
    }

    pub fn store(&self) -> &Store {
        &self.shared.store
    }

    pub fn config(&self) -> &WorkerConfig {
        &self.shared.config
    }

    fn local_spec(&self, op: &SourceOp) -> Result<Option<LocalSpec>> {
        let SourceOp::Local {
            name,
            include_patterns,
            exclude_patterns,
            follow_paths,
            ignore_modes,
        } = op
        else {
            return Ok(None);
        };
        Ok(Some(LocalSpec {
            name: name.clone(),
            dir: sources::local_dir(&self.shared, name)?,
            follow: follow_paths.clone(),
            include: include_patterns.clone(),
            exclude: exclude_patterns.clone(),
            ignore_modes: *ignore_modes,
        }))
    }

    /// Executes one op on its inputs' results.
    pub async fn execute(
        &self,
        vertex: &Vertex,
        inputs: Vec<FsRef>,
        ctx: &ExecContext,
    ) -> Result<FsRef> {
        let shared = &self.shared;
        match vertex.op() {
            Op::Source(src) => match src {
                SourceOp::Image {
                    reference,
                    platform,
                    resolved_digest,
                } => {
                    sources::image(shared, reference, platform, resolved_digest.as_ref(), ctx).await
                }
                SourceOp::Local { .. } => {
                    let spec = self.local_spec(src)?.expect("a local source");
                    let shared = self.shared.clone();
                    blocking(move || sources::local(&shared, &spec)).await
                }
                SourceOp::Http {
                    url,
                    checksum,
                    filename,
                } => sources::http(shared, url, checksum.as_ref(), filename.as_deref(), ctx).await,
                SourceOp::Git {
                    remote,
                    ref_,
                    keep_git_dir,
                    subdir,
                } => {
                    sources::git(
                        shared,
                        remote,
                        ref_.as_deref(),
                        *keep_git_dir,
                        subdir.as_deref(),
                    )
                    .await
                }
            },
            Op::Exec(op) => exec::run(shared, op, &inputs, ctx).await,
            Op::File(op) => {
                let shared = self.shared.clone();
                let op = op.clone();
                blocking(move || {
                    let env = FileOpEnv {
                        store: &shared.store,
                        tmp: &shared.tmp,
                        matcher: &shared.matcher,
                        source_date_epoch: shared.config.source_date_epoch,
                    };
                    fileop::run(&env, &op, &inputs)
                })
                .await
            }
            Op::Merge(_) => Ok(merge(&inputs)),
            Op::Diff(d) => diff(&inputs[d.lower], &inputs[d.upper]),
        }
    }
}

/// The inputs' stacks one on another; an input whose stack starts with
/// everything merged so far only adds its remaining layers.
pub(crate) fn merge(inputs: &[FsRef]) -> FsRef {
    let mut acc = FsRef::scratch();
    for input in inputs {
        if acc.is_prefix_of(input) {
            acc = input.clone();
        } else {
            let mut layers = acc.layers().to_vec();
            layers.extend(input.layers().iter().cloned());
            acc = FsRef::from_layers(layers);
        }
    }
    acc
}

/// `upper`'s layers above `lower`, which must be a prefix of it.
pub(crate) fn diff(lower: &FsRef, upper: &FsRef) -> Result<FsRef> {
    if !lower.is_prefix_of(upper) {
        return Err(Error::DiffUnsupported {
            lower: lower.len(),
            upper: upper.len(),
        });
    }
    Ok(FsRef::from_layers(upper.layers()[lower.len()..].to_vec()))
}

impl Worker {
    /// Why `key` missed: what changed in a local source's files, else the
    /// first input whose key changed for a known reason, else no record.
    fn miss_reason(&self, vertex: &Vertex, key: &CacheKey) -> MissReason {
        let mut changes = lock(&self.shared.changes);
        if let Some(detail) = changes.get(key)
            && matches!(vertex.op(), Op::Source(_))
        {
            return MissReason::Other(detail.clone());
        }
        let inputs = lock(&self.shared.inputs_of).get(key).cloned();
        for (i, input) in inputs.iter().flatten().enumerate() {
            if let Some(detail) = changes.get(input).cloned() {
                changes.insert(*key, detail.clone());
                return MissReason::InputChanged { input: i, detail };
            }
        }
        MissReason::NoRecord
    }
}

const IMAGE_CACHE_KEY_DOMAIN: &[u8] = b"kiln.cachekey.image.v1\0";
const LOCAL_CACHE_KEY_DOMAIN: &[u8] = b"kiln.cachekey.local.v1\0";

#[async_trait::async_trait]
impl Executor for Worker {
    type Output = FsRef;

    async fn cache_key(
        &self,
        vertex: &Vertex,
        inputs: &[Input<FsRef>],
    ) -> Result<CacheKey, BoxError> {
        if let Op::Source(src) = vertex.op()
            && let Some(spec) = self.local_spec(src)?
        {
            let shared = self.shared.clone();
            let (content, change) = blocking(move || sources::local_key(&shared, &spec)).await?;
            let mut h = blake3::Hasher::new();
            h.update(LOCAL_CACHE_KEY_DOMAIN);
            h.update(&content);
            let key = CacheKey::from_bytes(*h.finalize().as_bytes());
            if let Some(change) = change {
                lock(&self.shared.changes).insert(key, change);
            }
            return Ok(key);
        }
        let keys: Vec<CacheKey> = inputs.iter().map(|i| i.key).collect();
        let derived = CacheKey::derive(vertex, &keys);
        if !keys.is_empty() {
            lock(&self.shared.inputs_of).insert(derived, keys);
        }
        if let Op::Source(SourceOp::Image {
            reference,
            resolved_digest,
            ..
        }) = vertex.op()
        {
            // Key the image by what the reference names in the store now.
            let store = self.shared.store.clone();
            let (r, d) = (reference.clone(), resolved_digest.clone());
            let found = blocking(move || sources::find_image(&store, &r, d.as_ref())).await?;
            if let Some(record) = found {
                let mut h = blake3::Hasher::new();
                h.update(IMAGE_CACHE_KEY_DOMAIN);
                h.update(derived.as_bytes());
                h.update(record.manifest_digest.as_str().as_bytes());
                return Ok(CacheKey::from_bytes(*h.finalize().as_bytes()));
            }
        }
        Ok(derived)
    }

    /// A hit touches the record (its last use, for GC). On a miss, takes
    /// the key's lock (waiting while another process or vertex computes
    /// the same key), looks again, and keeps the lock until
    /// [`Executor::release`] if it still misses.
    async fn lookup(&self, vertex: &Vertex, key: &CacheKey) -> Result<Lookup<FsRef>, BoxError> {
        let records = self.shared.records.clone();
        let key = *key;
        if let Some(fs) = blocking(move || records.load(&key)).await? {
            return Ok(Lookup::Hit(fs));
        }
        let shared = self.shared.clone();
        // If this future is dropped while waiting, the lock is released
        // when the blocking task finishes and its result is dropped.
        let (held, found) = blocking(move || {
            let held = locks::key_lock(&shared.build_dir, &key)?;
            let found = shared.records.load(&key)?;
            Ok((held, found))
        })
        .await?;
        if let Some(fs) = found {
            tracing::debug!(key = %key.short(), "computed meanwhile by another build");
            return Ok(Lookup::Hit(fs));
        }
        lock(&self.shared.held).entry(key).or_default().push(held);
        // A step will run, and RUN steps usually follow: warming the
        // cgroup lock now hides its first grace period from the first
        // container start (about 6 ms here).
        kiln_runtime::cgroup_warm::warm_up();
        Ok(Lookup::Miss(self.miss_reason(vertex, &key)))
    }

    fn release(&self, _vertex: &Vertex, key: &CacheKey) {
        let mut held = lock(&self.shared.held);
        if let Some(list) = held.get_mut(key) {
            list.pop();
            if list.is_empty() {
                held.remove(key);
            }
        }
    }

    async fn exec(
        &self,
        vertex: &Vertex,
        inputs: Vec<FsRef>,
        ctx: ExecContext,
    ) -> Result<FsRef, BoxError> {
        Ok(self.execute(vertex, inputs, &ctx).await?)
    }

    async fn store(&self, vertex: &Vertex, key: &CacheKey, output: &FsRef) -> Result<(), BoxError> {
        let records = self.shared.records.clone();
        let (key, output, name) = (*key, output.clone(), vertex.name());
        Ok(blocking(move || records.save(&key, &output, &name)).await?)
    }
}
