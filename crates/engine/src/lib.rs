//! # kiln-engine
//!
//! Runs a Dockerfile build end to end: parse and plan (frontend), resolve
//! base images (store, else registry), compile to the op graph, solve it
//! with the worker (content-addressed cache), and export the result (image
//! in the store, OCI or docker archive, directory, tar).
//!
//! Owns: the order of those steps and the build request/outcome types the
//! CLI fills and renders.
//!
//! Must not depend on: the CLI. It prints nothing; progress goes out as
//! the solver's typed events.
#![deny(clippy::print_stdout, clippy::print_stderr)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kiln_exporter::{CommitOptions, CommittedImage, Compression, LayerInput, MediaTypes};
use kiln_frontend::compile::{self, BaseImage, CompileOptions, NoCache};
use kiln_frontend::parser::{self, Span};
use kiln_frontend::stages::{self, BuildOptions, PlatformArgs};
use kiln_oci::{Platform, Reference};
use kiln_registry::Client;
use kiln_solver::{
    CacheStatus, Event, NetworkMode, SolveError, Solver, SolverOptions, VertexDigest,
};
use kiln_store::Store;
/// The build cache's disk usage and garbage collection (`kiln builder`).
pub use kiln_worker::gc as build_cache;
pub use kiln_worker::reap_stale;
use kiln_worker::{FsRef, Worker, WorkerConfig};
use tokio::sync::mpsc::UnboundedSender;

/// Where the result goes (`-o type=…`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Into the local image store (tagged with the request's tags).
    Image,
    /// An OCI layout archive.
    OciTar(PathBuf),
    /// A docker-archive (`docker load` reads it).
    DockerTar(PathBuf),
    /// The root filesystem as a directory; device nodes and setuid/setgid
    /// bits only with `devices` (see [`kiln_exporter::export_host_dir`]).
    Local { dest: PathBuf, devices: bool },
    /// The root filesystem as a tar file.
    Tar(PathBuf),
}

/// What a named build context is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildContext {
    /// A local directory.
    Dir(PathBuf),
    /// An image (`docker-image://REF`), from the store or a registry.
    Image(String),
}

/// Everything `kiln build` asks for.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    pub context_dir: PathBuf,
    /// The Dockerfile's name for messages (`Dockerfile`, `app.Dockerfile`).
    pub dockerfile_name: String,
    pub dockerfile: String,
    /// `.dockerignore` patterns (already read and chosen by the caller).
    pub ignore_patterns: Vec<String>,
    pub build_args: BTreeMap<String, String>,
    pub target: Option<String>,
    pub platform: Option<Platform>,
    pub tags: Vec<Reference>,
    pub labels: BTreeMap<String, String>,
    pub no_cache: NoCache,
    /// Re-resolve base images from the registry even when stored.
    pub pull: bool,
    pub secrets: BTreeMap<String, Vec<u8>>,
    pub ssh: BTreeMap<String, PathBuf>,
    pub network: NetworkMode,
    pub add_hosts: Vec<(String, String)>,
    /// `--build-context NAME=DIR|docker-image://REF`.
    pub build_contexts: BTreeMap<String, BuildContext>,
    pub outputs: Vec<Output>,
    pub compression: Compression,
    pub compression_level: Option<i32>,
    pub source_date_epoch: Option<i64>,
    pub max_parallelism: Option<usize>,
    /// The OCI runtime for RUN steps (default: `runc` from `PATH`).
    pub runtime: Option<kiln_runtime::OciRuntime>,
    /// Cancels the build: running steps are killed and cleaned up, and
    /// the build ends with [`BuildError::Cancelled`].
    pub cancel: kiln_solver::CancellationToken,
}

impl BuildRequest {
    /// A request for `dockerfile` in `context_dir` with Docker's defaults.
    pub fn new(context_dir: impl Into<PathBuf>, dockerfile: impl Into<String>) -> BuildRequest {
        BuildRequest {
            context_dir: context_dir.into(),
            dockerfile_name: "Dockerfile".into(),
            dockerfile: dockerfile.into(),
            ignore_patterns: Vec::new(),
            build_args: BTreeMap::new(),
            target: None,
            platform: None,
            tags: Vec::new(),
            labels: BTreeMap::new(),
            no_cache: NoCache::None,
            pull: false,
            secrets: BTreeMap::new(),
            ssh: BTreeMap::new(),
            network: NetworkMode::Default,
            add_hosts: Vec::new(),
            build_contexts: BTreeMap::new(),
            outputs: vec![Output::Image],
            compression: Compression::Gzip,
            compression_level: None,
            source_date_epoch: None,
            max_parallelism: None,
            runtime: None,
            cancel: kiln_solver::CancellationToken::new(),
        }
    }
}

/// A warning for the user (unused build args, build checks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub rule: String,
    pub message: String,
    pub span: Option<Span>,
}

/// Why a step ran instead of coming from the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    pub step: String,
    pub reason: String,
}

/// What a build produced.
#[derive(Debug)]
pub struct BuildOutcome {
    /// The image, when an output stored one.
    pub image: Option<CommittedImage>,
    pub warnings: Vec<Warning>,
    /// The first cache miss of each stage, with its reason (`--explain`).
    pub explanations: Vec<Explanation>,
    /// Steps executed and steps taken from the cache.
    pub executed: usize,
    pub cached: usize,
}

/// Why a build failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The Dockerfile is wrong: shown with a code frame.
    #[error("{message}")]
    Dockerfile { span: Span, message: String },
    /// `# check=error=true` and a build check found something.
    #[error("{message}")]
    Lint { span: Span, message: String },
    /// A step failed while running.
    #[error("{step}: {message}")]
    Step {
        step: String,
        digest: VertexDigest,
        span: Option<Span>,
        message: String,
    },
    #[error("failed to resolve base image {name}: {reason}")]
    BaseImage {
        name: String,
        span: Span,
        reason: String,
    },
    #[error("failed to set up the build: {0}")]
    Worker(#[source] Box<kiln_worker::Error>),
    #[error("failed to export the image: {0}")]
    Export(#[source] kiln_exporter::Error),
    #[error("failed to write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    /// [`BuildRequest::cancel`] fired.
    #[error("the build was cancelled")]
    Cancelled,
}

fn platform_args(p: &Platform) -> PlatformArgs {
    PlatformArgs {
        os: p.os.clone(),
        arch: p.architecture.clone(),
        variant: p.variant.clone().unwrap_or_default(),
    }
}

/// Resolves a base image: from the store (unless `pull`), else through the
/// registry.
async fn resolve_image(
    store: &Store,
    registry: Option<&Client>,
    name: &str,
    platform: &str,
    pull: bool,
) -> Result<BaseImage, String> {
    let reference = Reference::parse_docker_ref(name).map_err(|e| e.to_string())?;
    let full = reference.to_string();
    let wanted: Platform = platform
        .parse()
        .map_err(|e: kiln_oci::platform::PlatformError| e.to_string())?;
    if !pull && let Ok(record) = store.resolve_held(&full) {
        let docs = store.image_docs(&record).map_err(|e| e.to_string())?;
        check_platform(&reference, &docs.config, &wanted)?;
        return Ok(BaseImage {
            reference: full,
            digest: Some(record.manifest_digest.clone()),
            config: docs.config,
        });
    }
    let Some(client) = registry else {
        return Err(format!(
            "{} not found in the local store and no registry access",
            reference.familiar_string()
        ));
    };
    let options = kiln_registry::PullOptions {
        platform: Some(wanted.clone()),
    };
    let pulled = client
        .pull(store, &reference, &options, &|_| {})
        .await
        .map_err(|e| e.to_string())?;
    let record = store.resolve_held(&full).map_err(|e| e.to_string())?;
    let docs = store.image_docs(&record).map_err(|e| e.to_string())?;
    check_platform(&reference, &docs.config, &wanted)?;
    Ok(BaseImage {
        reference: full,
        digest: Some(pulled.manifest_digest),
        config: docs.config,
    })
}

/// Refuses a base image whose platform cannot serve a stage built for
/// `wanted`: kiln has no emulation yet, and labelling an image of one
/// architecture as another would be a silent lie. An image that names no
/// architecture is taken as it is.
fn check_platform(
    reference: &Reference,
    config: &kiln_oci::config::ImageConfig,
    wanted: &Platform,
) -> Result<(), String> {
    if config.architecture.is_empty() {
        return Ok(());
    }
    let mut have = Platform::new(
        if config.os.is_empty() {
            "linux"
        } else {
            &config.os
        },
        config.architecture.as_str(),
    );
    if let Some(v) = config.variant.as_deref().filter(|v| !v.is_empty()) {
        have = have.with_variant(v);
    }
    if wanted.can_run(&have) {
        return Ok(());
    }
    Err(format!(
        "{} is an image for {}, and this stage builds for {}: kiln cannot build for another platform yet (build with --platform {} or use a base image for {})",
        reference.familiar_string(),
        have.normalize(),
        wanted.normalize(),
        have.normalize(),
        wanted.normalize(),
    ))
}

/// Builds `req` on `store`.
pub async fn build(
    store: &Store,
    req: &BuildRequest,
    registry: Option<Client>,
    events: Option<UnboundedSender<Event>>,
) -> Result<BuildOutcome, BuildError> {
    let outcome = build_unsynced(store, req, registry, events).await;
    // The steps' snapshots were published without a sync each: one sync
    // now makes them durable, whether the build succeeded or not.
    let handle = store.clone();
    let synced = tokio::task::spawn_blocking(move || handle.sync_deferred()).await;
    if let Ok(Err(error)) = synced {
        tracing::warn!(%error, "could not sync the build's snapshots; they will be rebuilt after a restart");
    }
    outcome
}

async fn build_unsynced(
    store: &Store,
    req: &BuildRequest,
    registry: Option<Client>,
    events: Option<UnboundedSender<Event>>,
) -> Result<BuildOutcome, BuildError> {
    let df = parser::parse(&req.dockerfile).map_err(|e| BuildError::Dockerfile {
        span: e.span,
        message: e.to_string(),
    })?;
    let host = Platform::host();
    let platform = req.platform.clone().unwrap_or(host.clone());
    let mut opts = BuildOptions::for_platform(platform_args(&platform));
    opts.build_platform = platform_args(&host);
    opts.build_args = req.build_args.clone();
    opts.named_contexts = req
        .build_contexts
        .iter()
        .map(|(name, c)| {
            let named = match c {
                BuildContext::Dir(_) => stages::NamedContext::Local,
                BuildContext::Image(r) => stages::NamedContext::Image(r.clone()),
            };
            (name.clone(), named)
        })
        .collect();
    opts.target = req.target.clone();
    let mut warnings: Vec<Warning> = df
        .warnings
        .iter()
        .map(|w| Warning {
            rule: "NoEmptyContinuation".into(),
            message: w.short.clone(),
            span: Some(w.span),
        })
        .collect();
    let base_plan = stages::plan(&df, &opts).map_err(|e| BuildError::Dockerfile {
        span: e.span,
        message: e.to_string(),
    })?;
    warnings.extend(base_plan.lints.iter().map(|l| Warning {
        rule: l.rule.into(),
        message: l.message.clone(),
        span: Some(l.span),
    }));
    if !base_plan.unused_build_args.is_empty() {
        warnings.push(Warning {
            rule: "UnusedBuildArg".into(),
            message: format!(
                "One or more build-args [{}] were not consumed",
                base_plan.unused_build_args.join(" ")
            ),
            span: None,
        });
    }

    // Resolve base images until the plan (with ONBUILD triggers) needs no
    // more; each failed attempt starts again from the unmodified plan.
    let mut resolved: BTreeMap<(String, String), BaseImage> = BTreeMap::new();
    let plan = loop {
        let mut plan = base_plan.clone();
        let missing = std::sync::Mutex::new(None);
        let lookup = |name: &str, platform: &str| -> Result<BaseImage, String> {
            match resolved.get(&(name.to_string(), platform.to_string())) {
                Some(b) => Ok(b.clone()),
                None => {
                    *missing.lock().expect("not poisoned") =
                        Some((name.to_string(), platform.to_string()));
                    Err("not resolved yet".into())
                }
            }
        };
        let result = compile::required_images(&mut plan, &opts, &lookup);
        let wanted = match result {
            Ok(list) => list.into_iter().find(|k| !resolved.contains_key(k)),
            Err(e) => match missing.lock().expect("not poisoned").take() {
                Some(k) => Some(k),
                None => {
                    return Err(BuildError::Dockerfile {
                        span: e.span,
                        message: e.to_string(),
                    });
                }
            },
        };
        match wanted {
            None => break plan,
            Some((name, platform)) => {
                let base = resolve_image(store, registry.as_ref(), &name, &platform, req.pull)
                    .await
                    .map_err(|reason| {
                        let span = plan
                            .stages
                            .iter()
                            .find(|s| s.base_name == name)
                            .map(|s| s.from.span)
                            .unwrap_or_default();
                        BuildError::BaseImage {
                            name: name.clone(),
                            span,
                            reason,
                        }
                    })?;
                resolved.insert((name, platform), base);
            }
        }
    };

    let created = match req.source_date_epoch {
        Some(t) => chrono::DateTime::from_timestamp(t, 0)
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        None => chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
    };
    let copts = CompileOptions {
        context_excludes: req.ignore_patterns.clone(),
        labels: req.labels.clone(),
        created,
        source_date_epoch: req.source_date_epoch,
        default_network: req.network,
        extra_hosts: req.add_hosts.clone(),
        no_cache: req.no_cache.clone(),
    };
    let lookup = |name: &str, platform: &str| -> Result<BaseImage, String> {
        resolved
            .get(&(name.to_string(), platform.to_string()))
            .cloned()
            .ok_or_else(|| format!("{name} was not resolved"))
    };
    let compiled =
        compile::compile(&plan, &opts, &copts, &lookup).map_err(|e| BuildError::Dockerfile {
            span: e.span,
            message: e.to_string(),
        })?;
    let checks = stages::CheckConfig::parse(df.directive("check").unwrap_or_default());
    if !checks.skips("UndefinedVar") {
        for (stage, var) in &compiled.undefined_vars {
            warnings.push(Warning {
                rule: "UndefinedVar".into(),
                message: format!("Usage of undefined variable '${var}'"),
                span: Some(plan.stages[*stage].from.span),
            });
        }
    }
    if checks.skips("NoEmptyContinuation") {
        warnings.retain(|w| w.rule != "NoEmptyContinuation");
    }
    // `# check=error=true`: a build-check finding fails the build.
    if checks.error {
        let mut rules: Vec<&str> = warnings
            .iter()
            .filter(|w| w.rule != "UnusedBuildArg")
            .map(|w| w.rule.as_str())
            .collect();
        rules.sort_unstable();
        rules.dedup();
        if !rules.is_empty() {
            let span = warnings
                .iter()
                .find_map(|w| w.span.filter(|s| s.start_line > 0))
                .unwrap_or_default();
            return Err(BuildError::Lint {
                span,
                message: format!("lint violation found for rules: {}", rules.join(", ")),
            });
        }
    }

    // Solve.
    let mut contexts: BTreeMap<String, PathBuf> = req
        .build_contexts
        .iter()
        .filter_map(|(name, c)| match c {
            BuildContext::Dir(dir) => Some((name.clone(), dir.clone())),
            BuildContext::Image(_) => None,
        })
        .collect();
    contexts.insert(compile::CONTEXT_NAME.into(), req.context_dir.clone());
    let worker_config = WorkerConfig {
        contexts,
        secrets: req.secrets.clone(),
        ssh: req.ssh.clone(),
        registry: registry.clone(),
        runtime: req.runtime.clone(),
        source_date_epoch: req.source_date_epoch,
    };
    let worker =
        Worker::new(store.clone(), worker_config).map_err(|e| BuildError::Worker(Box::new(e)))?;
    let mut solver_options = SolverOptions {
        events,
        ..SolverOptions::default()
    };
    if let Some(n) = req.max_parallelism {
        solver_options.max_parallelism = n;
    }
    let solver = Solver::with_options(Arc::new(worker), solver_options);
    // `ran`: Dockerfile steps that executed (internal loads aside).
    let (fs, explanations, executed, cached, ran) = match compiled.root {
        None => (FsRef::default(), Vec::new(), 0, 0, 0),
        Some(root) => {
            let targets = [root];
            let solution = solver
                .solve_with_cancel(&compiled.graph, &targets, req.cancel.clone())
                .await
                .map_err(|e| step_error(&compiled.graph, e))?;
            if req.cancel.is_cancelled() {
                return Err(BuildError::Cancelled);
            }
            let mut explanations = Vec::new();
            let mut seen_stages = BTreeSet::new();
            let (mut executed, mut cached, mut ran) = (0, 0, 0);
            let mut results: Vec<_> = solution.results().collect();
            results.sort_by(|a, b| a.name.cmp(&b.name));
            for r in results {
                match &r.status {
                    CacheStatus::Cached => cached += 1,
                    CacheStatus::Miss(reason) => {
                        executed += 1;
                        if !r.name.starts_with("[internal]") {
                            ran += 1;
                        }
                        let stage = r.name.split(' ').next().unwrap_or_default().to_string();
                        if r.name.starts_with('[')
                            && !r.name.starts_with("[internal]")
                            && seen_stages.insert(stage)
                        {
                            explanations.push(Explanation {
                                step: r.name.clone(),
                                reason: reason.to_string(),
                            });
                        }
                    }
                }
            }
            let output = solution
                .targets()
                .next()
                .map(|r| r.output.clone())
                .unwrap_or_default();
            (output, explanations, executed, cached, ran)
        }
    };

    // Export.
    let layers = layer_inputs(store, &fs)?;
    let mut image = None;
    for output in &req.outputs {
        match output {
            Output::Image | Output::OciTar(_) | Output::DockerTar(_) => {
                if image.is_none() {
                    // Only a rebuild that ran no step can equal an earlier
                    // image (a step that ran has a new time, as with BuildKit).
                    let config = if ran == 0 {
                        reuse_timestamps(store, &req.tags, &layers, compiled.config.clone())
                    } else {
                        compiled.config.clone()
                    };
                    let tags = if req.outputs.contains(&Output::Image) {
                        req.tags.clone()
                    } else {
                        Vec::new()
                    };
                    let commit = CommitOptions {
                        compression: req.compression,
                        level: req.compression_level,
                        media_types: MediaTypes::Docker,
                        tags,
                        source_date_epoch: req.source_date_epoch,
                    };
                    let committed = kiln_exporter::commit_image(store, &layers, config, &commit)
                        .map_err(BuildError::Export)?;
                    image = Some(committed);
                }
                let committed = image.as_ref().expect("committed above");
                match output {
                    Output::OciTar(path) => write_file(path, |w| {
                        kiln_exporter::export_oci_tar(store, committed, w).map(|_| ())
                    })?,
                    Output::DockerTar(path) => write_file(path, |w| {
                        kiln_exporter::export_docker_tar(store, committed, w).map(|_| ())
                    })?,
                    _ => {}
                }
            }
            Output::Local { dest, devices } => {
                let stats = kiln_exporter::export_host_dir(store, &layers, dest, *devices)
                    .map_err(BuildError::Export)?;
                let skipped: u64 = stats.iter().map(|s| s.skipped_devices).sum();
                if skipped > 0 {
                    tracing::warn!(
                        "{skipped} device node(s) of the image were not written to {} (as root, add devices=true to the output to write them and keep setuid bits)",
                        dest.display()
                    );
                }
            }
            Output::Tar(path) => {
                write_file(path, |w| kiln_exporter::export_tar(store, &layers, w))?
            }
        }
    }
    // The worker (and with it the shared GC lock) goes only now: the
    // result's layers stay protected until exported.
    drop(solver);
    auto_prune(store);
    Ok(BuildOutcome {
        image,
        warnings,
        explanations,
        executed,
        cached,
    })
}

/// The automatic build-cache collection after a successful build (see
/// [`build_cache::auto_prune`]): skipped while other builds run; a failure
/// is logged, never fails the build.
fn auto_prune(store: &Store) {
    match build_cache::auto_prune(store) {
        Ok(Some(r)) if !r.removed.is_empty() => tracing::info!(
            removed = r.removed.len(),
            reclaimed = r.reclaimed,
            "automatic build-cache collection"
        ),
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, "automatic build-cache collection failed"),
    }
}

/// A rebuild whose layers and config equal an existing image's, but for
/// the times, takes that image's times: a fully cached rebuild then gives
/// the same image id, as with BuildKit.
fn reuse_timestamps(
    store: &Store,
    tags: &[Reference],
    layers: &[LayerInput],
    mut config: kiln_oci::config::ImageConfig,
) -> kiln_oci::config::ImageConfig {
    let diff_ids: Vec<_> = layers.iter().map(|l| l.diff_id.clone()).collect();
    let blank = |c: &kiln_oci::config::ImageConfig| {
        let mut c = c.clone();
        c.created = None;
        for h in &mut c.history {
            h.created = None;
        }
        c.rootfs = Default::default();
        c
    };
    let wanted = blank(&config);
    let Ok(mut images) = store.images() else {
        return config;
    };
    // The images of the requested names first: a rebuild usually matches.
    images.sort_by_key(|r| !r.tags.iter().any(|t| tags.contains(t)));
    for record in images {
        let Ok(docs) = store.image_docs(&record) else {
            continue;
        };
        let existing = docs.config;
        // Empty layers are dropped at commit: compare the non-empty ones.
        if existing.rootfs.diff_ids.len() > diff_ids.len()
            || !existing
                .rootfs
                .diff_ids
                .iter()
                .all(|d| diff_ids.contains(d))
            || existing.history.len() != config.history.len()
        {
            continue;
        }
        let mut candidate = blank(&existing);
        // Commit marks dropped empty layers' history entries as empty.
        for (c, w) in candidate.history.iter_mut().zip(&wanted.history) {
            c.empty_layer = w.empty_layer;
        }
        if candidate == wanted {
            config.created = existing.created.clone();
            for (h, e) in config.history.iter_mut().zip(&existing.history) {
                h.created = e.created.clone();
            }
            tracing::debug!(image = %record.id, "rebuild matches an existing image: keeping its times");
            break;
        }
    }
    config
}

/// The result's layers as exporter inputs: base-image layers are reused as
/// stored; layers the build made are uncompressed tars keyed by diff id.
fn layer_inputs(store: &Store, fs: &FsRef) -> Result<Vec<LayerInput>, BuildError> {
    fs.layers()
        .iter()
        .map(|l| match &l.blob {
            // A source's snapshot as a whole root filesystem: its tar now.
            None => {
                kiln_worker::layer_blob(store, l).map_err(|e| BuildError::Worker(Box::new(e)))?;
                Ok(LayerInput::blob(l.diff_id.clone()))
            }
            Some(b) if b.digest == l.diff_id => Ok(LayerInput::blob(l.diff_id.clone())),
            Some(b) => Ok(LayerInput::existing(
                l.diff_id.clone(),
                b.digest.clone(),
                b.size,
                b.media_type.clone(),
            )),
        })
        .collect()
}

/// Writes an export to `path` through a temp file and a rename, so a
/// failure leaves no partial file; `-` is standard output.
fn write_file(
    path: &Path,
    f: impl FnOnce(&mut dyn std::io::Write) -> kiln_exporter::Result<()>,
) -> Result<(), BuildError> {
    let io = |source| BuildError::Write {
        path: path.to_path_buf(),
        source,
    };
    if path.as_os_str() == "-" {
        let mut out = std::io::stdout().lock();
        return f(&mut out).map_err(BuildError::Export);
    }
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io)?;
    let file = kiln_fs::AtomicFile::new(path).map_err(io)?;
    {
        let mut w = std::io::BufWriter::new(file.file());
        f(&mut w).map_err(BuildError::Export)?;
        std::io::Write::flush(&mut w).map_err(io)?;
    }
    // An output the user can write again: no sync, as BuildKit's.
    file.commit(kiln_fs::Durability::Atomic).map_err(io)?;
    Ok(())
}

/// Turns a solver error into the failing step, with its Dockerfile lines.
fn step_error(graph: &kiln_solver::Graph, e: SolveError) -> BuildError {
    match &e {
        SolveError::Cancelled => BuildError::Cancelled,
        SolveError::Vertex { digest, name, .. } => {
            let span = graph
                .id_of(digest)
                .and_then(|id| graph.vertex(id).ok())
                .and_then(|v| compile::span_of(v.meta()));
            let mut message = String::new();
            let mut cause = std::error::Error::source(&e);
            while let Some(c) = cause {
                if !message.is_empty() {
                    message.push_str(": ");
                }
                message.push_str(&c.to_string());
                cause = c.source();
            }
            BuildError::Step {
                step: name.clone(),
                digest: *digest,
                span,
                message,
            }
        }
        other => BuildError::Step {
            step: "build".into(),
            digest: VertexDigest::from_bytes([0; 32]),
            span: None,
            message: other.to_string(),
        },
    }
}
