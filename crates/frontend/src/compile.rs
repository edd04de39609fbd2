//! Dockerfile to build graph: the counterpart of BuildKit's
//! `dockerfile2llb`. Each reachable stage becomes a chain of solver ops on
//! its root filesystem (`FROM` a source op, `RUN` an exec op, `COPY`/`ADD`/
//! `WORKDIR` file ops, `COPY --link` a merge), and an image config that
//! follows Docker's rules for every config instruction, with BuildKit's
//! history entries.
//!
//! The caller resolves base images first (see [`required_images`]) and
//! hands their configs in: compilation itself does no I/O.

use std::collections::{BTreeMap, BTreeSet};

use kiln_graph::{
    CacheInit, CacheSharing as OpSharing, Chmod as OpChmod, ChownOpt, CopyAction, ExecMount,
    ExecOp, FileAction, FileOp, Graph, MergeOp, MountKind, NetworkMode, Op, OpMetadata, SecretEnv,
    SecretMount, SecurityMode, SourceOp, UserOpt, VertexId,
};
use kiln_oci::Digest;
use kiln_oci::config::{ContainerConfig, Empty, History, ImageConfig};

use crate::instructions::{CacheSharing, Command, Healthcheck, Instruction, MountType};
use crate::parser::Span;
use crate::stages::{
    Base, BuildOptions, Expanded, NamedContext, Plan, StageError, StageScope, find_named_context,
};

/// `PATH` of an image that sets none (BuildKit's default for Linux).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// The comment BuildKit puts on every history entry it writes.
pub const HISTORY_COMMENT: &str = "buildkit.dockerfile.v0";
/// Vertex metadata key holding the Dockerfile lines (`start-end`) a vertex
/// comes from; not part of the vertex digest.
pub const SPAN_KEY: &str = "kiln.dockerfile.lines";

/// The Dockerfile lines recorded in a vertex's metadata.
pub fn span_of(meta: &OpMetadata) -> Option<Span> {
    let (a, b) = meta.description.get(SPAN_KEY)?.split_once('-')?;
    Some(Span::lines(a.parse().ok()?, b.parse().ok()?))
}

/// The name of the build context's local source.
pub const CONTEXT_NAME: &str = "context";

/// A base image as the caller resolved it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseImage {
    /// The normalised reference (`docker.io/library/busybox:latest`).
    pub reference: String,
    /// The manifest digest it resolved to, when known.
    pub digest: Option<Digest>,
    pub config: ImageConfig,
}

/// Resolves an image name (as written after expansion) for a platform
/// (`os/arch[/variant]`).
pub trait ImageSource {
    fn resolve(&self, name: &str, platform: &str) -> Result<BaseImage, String>;
}

impl<F: Fn(&str, &str) -> Result<BaseImage, String>> ImageSource for F {
    fn resolve(&self, name: &str, platform: &str) -> Result<BaseImage, String> {
        self(name, platform)
    }
}

/// Build-wide settings that are not Dockerfile content.
#[derive(Debug, Clone)]
pub struct CompileOptions {
    /// `.dockerignore` patterns: never read from the context.
    pub context_excludes: Vec<String>,
    /// `--label` values: override the Dockerfile's.
    pub labels: BTreeMap<String, String>,
    /// RFC 3339 creation time for the config and the new history entries.
    pub created: String,
    /// `SOURCE_DATE_EPOCH`: copied files get this mtime.
    pub source_date_epoch: Option<i64>,
    /// The network of RUN steps that do not say (`--network` of the build).
    pub default_network: NetworkMode,
    /// `--add-host host:ip`.
    pub extra_hosts: Vec<(String, String)>,
    /// `--no-cache` (every stage) or `--no-cache-filter` (these stages, by
    /// name or index): their steps skip cache lookups.
    pub no_cache: NoCache,
}

/// Which stages run without looking up the cache.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum NoCache {
    #[default]
    None,
    All,
    Stages(BTreeSet<String>),
}

impl Default for CompileOptions {
    fn default() -> Self {
        CompileOptions {
            context_excludes: Vec::new(),
            labels: BTreeMap::new(),
            created: "1970-01-01T00:00:00Z".into(),
            source_date_epoch: None,
            default_network: NetworkMode::Default,
            extra_hosts: Vec::new(),
            no_cache: NoCache::None,
        }
    }
}

/// The compiled target.
#[derive(Debug)]
pub struct Compiled {
    pub graph: Graph,
    /// The target stage's root filesystem; `None` for an empty scratch
    /// image.
    pub root: Option<VertexId>,
    pub config: ImageConfig,
    /// Variables referenced but never set, per stage (UndefinedVar).
    pub undefined_vars: Vec<(usize, String)>,
}

/// Why a Dockerfile could not be compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}")]
pub struct CompileError {
    pub kind: CompileErrorKind,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompileErrorKind {
    #[error(transparent)]
    Stage(crate::stages::StageErrorKind),
    #[error("failed to resolve base image {name}: {reason}")]
    BaseImage { name: String, reason: String },
    #[error("{0} requires at least one source")]
    NoSources(&'static str),
    #[error("source can't be a URL for COPY")]
    CopyUrl,
    #[error("invalid signal {0:?}")]
    BadSignal(String),
    #[error("invalid containerPort: {0}")]
    BadPort(String),
    #[error("unsupported network mode {0:?}: expected default, none or host")]
    BadNetwork(String),
    #[error("invalid --chown value {0:?}")]
    BadChown(String),
    #[error("invalid --checksum {value:?}: {reason}")]
    BadChecksum { value: String, reason: String },
    #[error("{0}")]
    Graph(String),
}

impl From<StageError> for CompileError {
    fn from(e: StageError) -> Self {
        CompileError {
            kind: CompileErrorKind::Stage(e.kind),
            span: e.span,
        }
    }
}

fn err(kind: CompileErrorKind, span: Span) -> CompileError {
    CompileError { kind, span }
}

/// The images a build needs (name as written after expansion, platform),
/// after applying their ONBUILD triggers: the stages' bases and the images
/// named by `COPY --from` / `RUN --mount from=`. Resolves base images
/// through `images` to apply their triggers.
pub fn required_images(
    plan: &mut Plan,
    opts: &BuildOptions,
    images: &dyn ImageSource,
) -> Result<Vec<(String, String)>, CompileError> {
    let mut done: BTreeSet<usize> = BTreeSet::new();
    loop {
        let pending: Vec<usize> = plan
            .reachable
            .iter()
            .copied()
            .filter(|i| !done.contains(i))
            .collect();
        if pending.is_empty() {
            break;
        }
        for i in pending {
            done.insert(i);
            // A stage built on another stage runs the ONBUILD triggers
            // that stage declared, as BuildKit does.
            if let Base::Stage(j) = plan.stages[i].base {
                let triggers: Vec<String> = plan.stages[j]
                    .instructions
                    .iter()
                    .filter_map(|ins| match &ins.command {
                        Command::Onbuild(expr) => Some(expr.clone()),
                        _ => None,
                    })
                    .collect();
                if !triggers.is_empty() {
                    plan.apply_onbuild(i, &triggers)?;
                }
            }
            if let Base::Image(name) = &plan.stages[i].base {
                let platform = stage_platform(plan, opts, i);
                let base = images.resolve(name, &platform).map_err(|reason| {
                    err(
                        CompileErrorKind::BaseImage {
                            name: name.clone(),
                            reason,
                        },
                        plan.stages[i].from.span,
                    )
                })?;
                if !base.config.config.on_build.is_empty() {
                    plan.apply_onbuild(i, &base.config.config.on_build)?;
                }
            }
        }
    }
    let mut out = BTreeSet::new();
    for &i in &plan.reachable {
        let platform = stage_platform(plan, opts, i);
        if let Base::Image(name) = &plan.stages[i].base {
            out.insert((name.clone(), platform.clone()));
        }
        for name in &plan.stages[i].image_deps {
            out.insert((name.clone(), platform.clone()));
        }
    }
    Ok(out.into_iter().collect())
}

fn stage_platform(plan: &Plan, opts: &BuildOptions, i: usize) -> String {
    plan.stages[i]
        .platform
        .clone()
        .unwrap_or_else(|| opts.target_platform.platform())
}

/// One compiled stage.
#[derive(Clone)]
struct StageState<'a> {
    root: Option<VertexId>,
    config: ImageConfig,
    scope: StageScope<'a>,
}

/// Compiles the plan's target. Call [`required_images`] first so ONBUILD
/// triggers are in the plan.
pub fn compile(
    plan: &Plan,
    opts: &BuildOptions,
    copts: &CompileOptions,
    images: &dyn ImageSource,
) -> Result<Compiled, CompileError> {
    let mut graph = Graph::new();
    let mut states: BTreeMap<usize, StageState<'_>> = BTreeMap::new();
    let mut undefined_vars = Vec::new();
    for &i in &plan.reachable {
        let state = compile_stage(plan, opts, copts, images, &mut graph, &states, i)?;
        undefined_vars.extend(state.scope.undefined.iter().map(|v| (i, v.clone())));
        states.insert(i, state);
    }
    let target = states
        .remove(&plan.target)
        .expect("the target is reachable");
    let mut config = target.config;
    for (k, v) in &copts.labels {
        config.config.labels.insert(k.clone(), v.clone());
    }
    config.created = Some(copts.created.clone());
    Ok(Compiled {
        graph,
        root: target.root,
        config,
        undefined_vars,
    })
}

/// Per-stage compilation context.
struct Ctx<'g, 'p> {
    graph: &'g mut Graph,
    plan: &'p Plan,
    copts: &'p CompileOptions,
    images: &'p dyn ImageSource,
    /// Roots of stages compiled so far.
    roots: BTreeMap<usize, Option<VertexId>>,
    stage_name: String,
    platform: String,
    steps: usize,
    ignore_cache: bool,
}

impl Ctx<'_, '_> {
    fn add(
        &mut self,
        op: Op,
        inputs: Vec<VertexId>,
        name: String,
        span: Span,
    ) -> Result<VertexId, CompileError> {
        let mut meta = OpMetadata::named(name);
        meta.ignore_cache = self.ignore_cache;
        if span.start_line > 0 {
            meta.description.insert(
                SPAN_KEY.into(),
                format!("{}-{}", span.start_line, span.end_line),
            );
        }
        self.graph
            .add(op, inputs, meta)
            .map_err(|e| err(CompileErrorKind::Graph(e.to_string()), span))
    }

    fn step_name(&self, step: usize, text: &str) -> String {
        format!("[{} {}/{}] {}", self.stage_name, step, self.steps, text)
    }

    fn image_vertex(&mut self, name: &str, span: Span) -> Result<VertexId, CompileError> {
        let base = self
            .images
            .resolve(name, &self.platform)
            .map_err(|reason| {
                err(
                    CompileErrorKind::BaseImage {
                        name: name.to_string(),
                        reason,
                    },
                    span,
                )
            })?;
        let op = Op::Source(SourceOp::Image {
            reference: base.reference.clone(),
            platform: self.platform.clone(),
            resolved_digest: base.digest.clone(),
        });
        self.add(
            op,
            vec![],
            format!("[internal] load image {}", base.reference),
            span,
        )
    }

    /// The build context, reading only `follow`; `ignore_modes` when the
    /// consumer sets every mode itself (an octal `--chmod`), so source
    /// modes cannot change its key.
    fn context_vertex(
        &mut self,
        follow: Vec<String>,
        ignore_modes: bool,
        span: Span,
    ) -> Result<VertexId, CompileError> {
        let op = Op::Source(SourceOp::Local {
            name: CONTEXT_NAME.into(),
            include_patterns: Vec::new(),
            exclude_patterns: self.copts.context_excludes.clone(),
            follow_paths: follow,
            ignore_modes,
        });
        self.add(op, vec![], "[internal] load build context".into(), span)
    }

    /// A named build context's directory, whole.
    fn named_context_vertex(&mut self, name: &str, span: Span) -> Result<VertexId, CompileError> {
        let op = Op::Source(SourceOp::Local {
            name: name.into(),
            include_patterns: Vec::new(),
            exclude_patterns: Vec::new(),
            follow_paths: Vec::new(),
            ignore_modes: false,
        });
        self.add(
            op,
            vec![],
            format!("[context {name}] load from client"),
            span,
        )
    }

    /// The root filesystem a `--from`/`from=` value names: an earlier
    /// stage, a stage index, a named build context or an image.
    fn stage_or_image_vertex(
        &mut self,
        from: &str,
        span: Span,
    ) -> Result<Option<VertexId>, CompileError> {
        let stage = self.plan.stage_by_name(from).map(|s| s.index).or_else(|| {
            from.parse::<usize>()
                .ok()
                .filter(|i| *i < self.plan.stages.len())
        });
        if let Some(i) = stage {
            return Ok(self.roots.get(&i).copied().flatten());
        }
        match find_named_context(&self.plan.named_contexts, from) {
            Some(NamedContext::Local) => self.named_context_vertex(from, span).map(Some),
            Some(NamedContext::Image(r)) => {
                let r = r.clone();
                self.image_vertex(&r, span).map(Some)
            }
            None => self.image_vertex(from, span).map(Some),
        }
    }
}

fn compile_stage<'p>(
    plan: &'p Plan,
    opts: &'p BuildOptions,
    copts: &'p CompileOptions,
    images: &'p dyn ImageSource,
    graph: &mut Graph,
    states: &BTreeMap<usize, StageState<'p>>,
    i: usize,
) -> Result<StageState<'p>, CompileError> {
    let stage = &plan.stages[i];
    let platform = stage_platform(plan, opts, i);
    let mut ctx = Ctx {
        graph,
        plan,
        copts,
        images,
        roots: states.iter().map(|(k, s)| (*k, s.root)).collect(),
        stage_name: stage.name.clone().unwrap_or_else(|| format!("stage-{i}")),
        platform: platform.clone(),
        steps: stage.instructions.len() + 1,
        ignore_cache: match &copts.no_cache {
            NoCache::None => false,
            NoCache::All => true,
            NoCache::Stages(names) => {
                names.contains(&i.to_string())
                    || stage
                        .name
                        .as_ref()
                        .is_some_and(|n| names.contains(&n.to_lowercase()))
            }
        },
    };
    let from_span = stage.from.span;
    let mut state = match &stage.base {
        Base::Stage(j) => {
            let parent = states
                .get(j)
                .expect("stages compile after their dependencies");
            let mut config = parent.config.clone();
            // Its triggers ran in this stage (see required_images).
            config.config.on_build.clear();
            StageState {
                root: parent.root,
                config,
                scope: StageScope::from_parent(&parent.scope),
            }
        }
        Base::Scratch => {
            let mut config = empty_config(&platform);
            ensure_path(&mut config);
            let scope = StageScope::new(plan, opts, env_pairs(&config));
            StageState {
                root: None,
                config,
                scope,
            }
        }
        // A directory as the root filesystem, with an empty config (as
        // BuildKit does for a local named context).
        Base::Local(name) => {
            let root = ctx.named_context_vertex(name, from_span)?;
            let mut config = empty_config(&platform);
            ensure_path(&mut config);
            // The directory's layer has no instruction of its own; history
            // as BuildKit's exporter writes it for such a layer.
            config.history.push(History {
                created: Some(copts.created.clone()),
                author: None,
                created_by: None,
                comment: Some("buildkit.exporter.image.v0".into()),
                empty_layer: false,
            });
            let scope = StageScope::new(plan, opts, env_pairs(&config));
            StageState {
                root: Some(root),
                config,
                scope,
            }
        }
        Base::Image(name) => {
            let base = images.resolve(name, &platform).map_err(|reason| {
                err(
                    CompileErrorKind::BaseImage {
                        name: name.clone(),
                        reason,
                    },
                    from_span,
                )
            })?;
            let op = Op::Source(SourceOp::Image {
                reference: base.reference.clone(),
                platform: platform.clone(),
                resolved_digest: base.digest.clone(),
            });
            let label = match &base.digest {
                Some(d) => format!("FROM {}@{d}", base.reference),
                None => format!("FROM {}", base.reference),
            };
            let name = ctx.step_name(1, &label);
            let root = ctx.add(op, vec![], name, from_span)?;
            let mut config = base.config.clone();
            // Triggers ran in this build; they are not inherited further.
            config.config.on_build.clear();
            if config.architecture.is_empty() {
                let e = empty_config(&platform);
                config.architecture = e.architecture;
                config.os = e.os;
                config.variant = e.variant;
            }
            ensure_path(&mut config);
            let scope = StageScope::new(plan, opts, env_pairs(&config));
            StageState {
                root: Some(root),
                config,
                scope,
            }
        }
    };

    let mut cmd_set = false;
    for (n, ins) in stage.instructions.iter().enumerate() {
        let step = n + 2;
        let expanded = state.scope.dispatch(ins)?;
        dispatch(&mut ctx, &mut state, ins, expanded, step, &mut cmd_set)?;
    }
    Ok(state)
}

/// The config of an image with nothing in it, as BuildKit's: the
/// platform and the working directory `/`.
fn empty_config(platform: &str) -> ImageConfig {
    let mut parts = platform.splitn(3, '/');
    let os = parts.next().unwrap_or("linux").to_string();
    let arch = parts.next().unwrap_or("amd64").to_string();
    let variant = parts.next().map(str::to_string);
    ImageConfig {
        architecture: arch,
        os,
        variant,
        config: ContainerConfig {
            working_dir: "/".to_owned(),
            ..ContainerConfig::default()
        },
        rootfs: Default::default(),
        ..Default::default()
    }
}

fn ensure_path(config: &mut ImageConfig) {
    if !config.config.env.iter().any(|e| e.starts_with("PATH=")) {
        config.config.env.push(format!("PATH={DEFAULT_PATH}"));
    }
}

fn env_pairs(config: &ImageConfig) -> Vec<(String, String)> {
    config
        .config
        .env
        .iter()
        .map(|e| match e.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (e.clone(), String::new()),
        })
        .collect()
}

fn set_env(config: &mut ImageConfig, key: &str, value: &str) {
    let entry = format!("{key}={value}");
    match config
        .config
        .env
        .iter_mut()
        .find(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) == key)
    {
        Some(e) => *e = entry,
        None => config.config.env.push(entry),
    }
}

fn history(state: &mut StageState<'_>, ctx: &Ctx<'_, '_>, created_by: String, empty_layer: bool) {
    state.config.history.push(History {
        created: Some(ctx.copts.created.clone()),
        author: None,
        created_by: Some(created_by),
        comment: Some(HISTORY_COMMENT.into()),
        empty_layer,
    });
}

/// Go's `%q` of a string slice: `["a" "b"]`.
fn go_quoted_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| crate::quote::go_quote(s)).collect();
    format!("[{}]", quoted.join(" "))
}

/// Joins `p` to the working directory unless it is absolute, and cleans it.
fn resolve_path(workdir: &str, p: &str) -> String {
    let joined = if p.starts_with('/') {
        p.to_string()
    } else {
        format!("{}/{p}", if workdir.is_empty() { "/" } else { workdir })
    };
    clean_abs(&joined)
}

/// Cleans an absolute path like Go's `path.Clean`.
fn clean_abs(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

fn parse_user_opt(s: &str) -> UserOpt {
    match s.parse::<u32>() {
        Ok(id) => UserOpt::Id(id),
        Err(_) => UserOpt::Name(s.to_string()),
    }
}

fn parse_chown(s: &str, span: Span) -> Result<ChownOpt, CompileError> {
    let (user, group) = match s.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (s, None),
    };
    if user.is_empty() || group.is_some_and(str::is_empty) {
        return Err(err(CompileErrorKind::BadChown(s.to_string()), span));
    }
    Ok(ChownOpt {
        user: parse_user_opt(user),
        group: group.map(parse_user_opt),
    })
}

fn parse_chmod(s: &str) -> OpChmod {
    if !s.is_empty()
        && s.chars().all(|c| c.is_ascii_digit())
        && let Ok(m) = u32::from_str_radix(s, 8)
    {
        return OpChmod::Octal(m);
    }
    OpChmod::Symbolic(s.to_string())
}

fn is_url(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://")
}

fn is_git(s: &str) -> bool {
    s.starts_with("git@")
        || s.starts_with("git://")
        || (is_url(s) && (s.contains(".git#") || s.ends_with(".git")))
}

fn known_signal(s: &str) -> bool {
    const NAMES: &[&str] = &[
        "ABRT", "ALRM", "BUS", "CHLD", "CLD", "CONT", "FPE", "HUP", "ILL", "INT", "IO", "IOT",
        "KILL", "PIPE", "POLL", "PROF", "PWR", "QUIT", "SEGV", "STKFLT", "STOP", "SYS", "TERM",
        "TRAP", "TSTP", "TTIN", "TTOU", "URG", "USR1", "USR2", "VTALRM", "WINCH", "XCPU", "XFSZ",
    ];
    if let Ok(n) = s.parse::<u32>() {
        return (1..=64).contains(&n);
    }
    let name = s.strip_prefix("SIG").unwrap_or(s);
    if let Some(rt) = name
        .strip_prefix("RTMIN")
        .or_else(|| name.strip_prefix("RTMAX"))
    {
        return rt.is_empty()
            || rt
                .strip_prefix(['+', '-'])
                .is_some_and(|n| n.parse::<u32>().is_ok());
    }
    NAMES.contains(&name)
}

fn healthcheck_json(h: &Healthcheck) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    m.insert("Test".into(), serde_json::json!(h.test));
    for (key, d) in [
        ("Interval", h.interval),
        ("Timeout", h.timeout),
        ("StartPeriod", h.start_period),
        ("StartInterval", h.start_interval),
    ] {
        if let Some(d) = d.filter(|d| !d.is_zero()) {
            m.insert(key.into(), serde_json::json!(d.as_nanos() as u64));
        }
    }
    if let Some(r) = h.retries.filter(|r| *r > 0) {
        m.insert("Retries".into(), serde_json::json!(r));
    }
    serde_json::Value::Object(m)
}

fn dispatch(
    ctx: &mut Ctx<'_, '_>,
    state: &mut StageState<'_>,
    ins: &Instruction,
    expanded: Expanded,
    step: usize,
    cmd_set: &mut bool,
) -> Result<(), CompileError> {
    let span = ins.span;
    match (&ins.command, expanded) {
        (Command::Env(_), Expanded::Env(pairs)) => {
            for (k, v) in &pairs {
                set_env(&mut state.config, k, v);
            }
            let text: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
            history(state, ctx, format!("ENV {}", text.join(" ")), true);
        }
        (Command::Label(_), Expanded::Label(pairs)) => {
            for (k, v) in &pairs {
                state.config.config.labels.insert(k.clone(), v.clone());
            }
            let text: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
            history(state, ctx, format!("LABEL {}", text.join(" ")), true);
        }
        (Command::Arg(_), Expanded::Arg(args)) => {
            let text: Vec<String> = args
                .iter()
                .map(|(k, v)| match v {
                    Some(v) => format!("{k}={v}"),
                    None => k.clone(),
                })
                .collect();
            history(state, ctx, format!("ARG {}", text.join(" ")), true);
        }
        (Command::Maintainer(m), _) => {
            state.config.author = Some(m.clone());
            history(state, ctx, format!("MAINTAINER {m}"), true);
        }
        (Command::User(_), Expanded::User(u)) => {
            state.config.config.user = u.clone();
            history(state, ctx, format!("USER {u}"), true);
        }
        (Command::StopSignal(_), Expanded::StopSignal(s)) => {
            if !known_signal(&s) {
                return Err(err(CompileErrorKind::BadSignal(s), span));
            }
            state.config.config.stop_signal = s.clone();
            history(state, ctx, format!("STOPSIGNAL {s}"), true);
        }
        (Command::Expose(_), Expanded::Expose(ports)) => {
            let mut specs = BTreeSet::new();
            for p in &ports {
                specs.extend(
                    port_specs(p).ok_or_else(|| err(CompileErrorKind::BadPort(p.clone()), span))?,
                );
            }
            for s in &specs {
                state
                    .config
                    .config
                    .exposed_ports
                    .insert(s.clone(), Empty {});
            }
            let text: Vec<String> = specs.iter().map(|s| format!("{s}:{{}}")).collect();
            history(state, ctx, format!("EXPOSE map[{}]", text.join(" ")), true);
        }
        (Command::Volume(_), Expanded::Volume(vols)) => {
            for v in &vols {
                state.config.config.volumes.insert(v.clone(), Empty {});
            }
            history(state, ctx, format!("VOLUME [{}]", vols.join(" ")), true);
        }
        (Command::Shell(args), _) => {
            state.config.config.shell = args.clone();
            history(state, ctx, format!("SHELL [{}]", args.join(" ")), true);
        }
        (Command::Cmd(c), _) => {
            let args = if c.prepend_shell {
                with_shell(&state.config, &c.args.join(" "))
            } else {
                c.args.clone()
            };
            history(state, ctx, format!("CMD {}", go_quoted_list(&args)), true);
            state.config.config.cmd = Some(args);
            *cmd_set = true;
        }
        (Command::Entrypoint(c), _) => {
            let args = if c.prepend_shell && !c.args.is_empty() {
                with_shell(&state.config, &c.args.join(" "))
            } else {
                c.args.clone()
            };
            history(
                state,
                ctx,
                format!("ENTRYPOINT {}", go_quoted_list(&args)),
                true,
            );
            state.config.config.entrypoint = if args.is_empty() { None } else { Some(args) };
            // An ENTRYPOINT resets a CMD inherited from the base.
            if !*cmd_set {
                state.config.config.cmd = None;
            }
        }
        (Command::Healthcheck(h), _) => {
            let json = healthcheck_json(h);
            history(
                state,
                ctx,
                format!("HEALTHCHECK {}", go_quoted_list(&h.test)),
                true,
            );
            state.config.config.healthcheck = Some(json);
        }
        (Command::Onbuild(expr), _) => {
            state.config.config.on_build.push(expr.clone());
            history(state, ctx, format!("ONBUILD {expr}"), true);
        }
        (Command::Workdir(_), Expanded::Workdir(w)) => {
            // An absolute path is kept as written (trailing slash and all),
            // a relative one joined and cleaned, as BuildKit does.
            let dir = if w.starts_with('/') {
                w.clone()
            } else {
                resolve_path(&state.config.config.working_dir, &w)
            };
            state.config.config.working_dir = dir.clone();
            let owner = (!state.config.config.user.is_empty())
                .then(|| parse_chown(&state.config.config.user, span))
                .transpose()?;
            if dir != "/" {
                let action = FileAction::Mkdir {
                    path: dir.clone(),
                    mode: 0o755,
                    make_parents: true,
                    owner,
                };
                let name = ctx.step_name(step, &format!("WORKDIR {dir}"));
                state.root = Some(file_op(ctx, state.root, vec![action], vec![], name, span)?);
            }
            history(state, ctx, format!("WORKDIR {dir}"), dir == "/");
        }
        (Command::Run(run), Expanded::Run { mounts }) => {
            compile_run(ctx, state, ins, run, mounts, step)?;
        }
        (
            Command::Copy(c),
            Expanded::Copy {
                sources,
                inline,
                dest,
                from,
                chown,
                chmod,
                excludes,
                ..
            },
        ) => {
            let req = CopyRequest {
                instruction: "COPY",
                sources,
                inline,
                dest,
                from,
                chown,
                chmod,
                excludes,
                link: c.link,
                parents: c.parents,
                checksum: None,
                unpack: false,
                keep_git_dir: false,
            };
            compile_copy(ctx, state, ins, req, step)?;
        }
        (
            Command::Add(a),
            Expanded::Copy {
                sources,
                inline,
                dest,
                chown,
                chmod,
                excludes,
                checksum,
                ..
            },
        ) => {
            let req = CopyRequest {
                instruction: "ADD",
                sources,
                inline,
                dest,
                from: None,
                chown,
                chmod,
                excludes,
                link: a.link,
                parents: false,
                checksum,
                unpack: a.unpack.unwrap_or(true),
                keep_git_dir: a.keep_git_dir,
            };
            compile_copy(ctx, state, ins, req, step)?;
        }
        (Command::From(_), _) => {}
        (_, other) => unreachable!("instruction {} expanded to {other:?}", ins.name()),
    }
    Ok(())
}

/// The shell form's argv: the stage's SHELL (default `/bin/sh -c`) and the
/// command text.
fn with_shell(config: &ImageConfig, text: &str) -> Vec<String> {
    let mut args = if config.config.shell.is_empty() {
        vec!["/bin/sh".to_string(), "-c".to_string()]
    } else {
        config.config.shell.clone()
    };
    args.push(text.to_string());
    args
}

/// `80`, `80/udp`, `8000-8002/tcp` → `80/tcp`, …
fn port_specs(p: &str) -> Option<Vec<String>> {
    let (ports, proto) = match p.split_once('/') {
        Some((ports, proto)) => (ports, proto.to_lowercase()),
        None => (p, "tcp".to_string()),
    };
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return None;
    }
    // `ip:host:container` forms: only the container part matters here.
    let ports = ports.rsplit(':').next()?;
    let (start, end) = match ports.split_once('-') {
        Some((a, b)) => (a.parse::<u16>().ok()?, b.parse::<u16>().ok()?),
        None => {
            let n = ports.parse::<u16>().ok()?;
            (n, n)
        }
    };
    if start > end {
        return None;
    }
    Some((start..=end).map(|n| format!("{n}/{proto}")).collect())
}

fn file_op(
    ctx: &mut Ctx<'_, '_>,
    root: Option<VertexId>,
    actions: Vec<FileAction>,
    extra_inputs: Vec<VertexId>,
    name: String,
    span: Span,
) -> Result<VertexId, CompileError> {
    let mut inputs = Vec::new();
    let base = root.map(|r| {
        inputs.push(r);
        0
    });
    inputs.extend(extra_inputs);
    ctx.add(Op::File(FileOp { base, actions }), inputs, name, span)
}

fn compile_run(
    ctx: &mut Ctx<'_, '_>,
    state: &mut StageState<'_>,
    ins: &Instruction,
    run: &crate::instructions::Run,
    mounts: Vec<crate::instructions::Mount>,
    step: usize,
) -> Result<(), CompileError> {
    let span = ins.span;
    let cmd = &run.cmd;
    // A lone heredoc with a shebang runs as a script file mounted at
    // /dev/pipes/NAME, as BuildKit does.
    let mut script_file: Option<(String, Vec<u8>)> = None;
    let args = if !cmd.prepend_shell {
        cmd.args.clone()
    } else if cmd.files.is_empty() {
        with_shell(&state.config, &cmd.args.join(" "))
    } else {
        // Heredocs: give the shell the whole script, heredoc bodies
        // included, as BuildKit does.
        let text = cmd.args.join(" ");
        match (
            cmd.files.as_slice(),
            crate::parser::parse_heredoc(&text).ok().flatten(),
        ) {
            ([file], Some(_)) => {
                let body = file.content();
                if body.starts_with("#!") {
                    let path = format!("/dev/pipes/{}", file.name);
                    script_file = Some((file.name.clone(), body.into_bytes()));
                    vec![path]
                } else {
                    with_shell(&state.config, &body)
                }
            }
            _ => {
                let mut script = text;
                for f in &cmd.files {
                    script.push('\n');
                    script.push_str(&f.data);
                    script.push_str(&f.name);
                }
                with_shell(&state.config, &script)
            }
        }
    };

    // On scratch the root mount has no input: the process starts on an
    // empty filesystem, and the step still adds exactly one layer.
    let mut inputs = Vec::new();
    let root_mount = match state.root {
        Some(root) => {
            inputs.push(root);
            ExecMount::root(0)
        }
        None => ExecMount {
            input: None,
            ..ExecMount::root(0)
        },
    };
    let mut exec_mounts = vec![root_mount];
    let mut secret_env = Vec::new();
    let mut env: Vec<String> = state
        .scope
        .run_env()
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let mut ssh_index = 0;
    if let Some((name, data)) = script_file {
        let mk = FileAction::Mkfile {
            path: format!("/{name}"),
            mode: 0o755,
            data,
            owner: None,
        };
        let v = ctx.add(
            Op::File(FileOp {
                base: None,
                actions: vec![mk],
            }),
            vec![],
            format!("[internal] heredoc {name}"),
            span,
        )?;
        inputs.push(v);
        exec_mounts.push(ExecMount {
            input: Some(inputs.len() - 1),
            dest: "/dev/pipes".into(),
            selector: None,
            readonly: true,
            kind: MountKind::Bind,
            output: false,
        });
    }
    for m in mounts {
        let target = if m.target.starts_with('/') || m.target.is_empty() {
            m.target.clone()
        } else {
            resolve_path(&state.config.config.working_dir, &m.target)
        };
        let mount = match m.kind {
            MountType::Bind => {
                let input = match &m.from {
                    Some(from) => ctx.stage_or_image_vertex(from, span)?,
                    None => {
                        let follow = m
                            .source
                            .iter()
                            .map(|s| s.trim_start_matches('/').to_string())
                            .collect();
                        Some(ctx.context_vertex(follow, false, span)?)
                    }
                };
                let input = input.map(|v| {
                    inputs.push(v);
                    inputs.len() - 1
                });
                ExecMount {
                    input,
                    dest: target,
                    selector: m.source.clone().filter(|s| !s.is_empty() && s != "/"),
                    readonly: m.read_only,
                    kind: MountKind::Bind,
                    output: false,
                }
            }
            MountType::Cache => ExecMount {
                input: None,
                dest: target,
                selector: None,
                readonly: m.read_only,
                kind: MountKind::Cache {
                    id: m.id.clone().unwrap_or_default(),
                    sharing: match m.sharing {
                        CacheSharing::Shared => OpSharing::Shared,
                        CacheSharing::Private => OpSharing::Private,
                        CacheSharing::Locked => OpSharing::Locked,
                    },
                    init: (m.uid.is_some() || m.gid.is_some() || m.mode.is_some()).then(|| {
                        CacheInit {
                            uid: m.uid.unwrap_or(0),
                            gid: m.gid.unwrap_or(0),
                            mode: m.mode.unwrap_or(0o755),
                        }
                    }),
                },
                output: false,
            },
            MountType::Tmpfs => ExecMount {
                input: None,
                dest: target,
                selector: None,
                readonly: false,
                kind: MountKind::Tmpfs { size: m.size },
                output: false,
            },
            MountType::Secret => {
                let secret = SecretMount {
                    id: m.id.clone().unwrap_or_default(),
                    mode: m.mode.unwrap_or(0o400),
                    uid: m.uid.unwrap_or(0),
                    gid: m.gid.unwrap_or(0),
                    optional: !m.required,
                    env: m.env.clone(),
                };
                if target.is_empty() {
                    // Only an environment variable.
                    secret_env.push(SecretEnv {
                        id: secret.id.clone(),
                        name: m.env.clone().unwrap_or_default(),
                        optional: secret.optional,
                    });
                    continue;
                }
                ExecMount {
                    input: None,
                    dest: target,
                    selector: None,
                    readonly: true,
                    kind: MountKind::Secret(secret),
                    output: false,
                }
            }
            MountType::Ssh => {
                let dest = if target.is_empty() {
                    format!("/run/buildkit/ssh_agent.{ssh_index}")
                } else {
                    target
                };
                if ssh_index == 0 && !env.iter().any(|e| e.starts_with("SSH_AUTH_SOCK=")) {
                    env.push(format!("SSH_AUTH_SOCK={dest}"));
                }
                ssh_index += 1;
                ExecMount {
                    input: None,
                    dest,
                    selector: None,
                    readonly: true,
                    kind: MountKind::Ssh(SecretMount {
                        id: m.id.clone().unwrap_or_else(|| "default".into()),
                        mode: m.mode.unwrap_or(0o600),
                        uid: m.uid.unwrap_or(0),
                        gid: m.gid.unwrap_or(0),
                        optional: !m.required,
                        env: None,
                    }),
                    output: false,
                }
            }
        };
        exec_mounts.push(mount);
    }

    let network = match run.network.as_deref() {
        None => ctx.copts.default_network,
        Some("none") => NetworkMode::None,
        Some("host") => NetworkMode::Host,
        // The build's network (`--network`), as BuildKit reads it.
        Some("default") => ctx.copts.default_network,
        Some(other) => return Err(err(CompileErrorKind::BadNetwork(other.to_string()), span)),
    };
    let security = match run.security.as_deref() {
        Some("insecure") => SecurityMode::Insecure,
        _ => SecurityMode::Sandbox,
    };
    let cwd = if state.config.config.working_dir.is_empty() {
        "/".to_string()
    } else {
        state.config.config.working_dir.clone()
    };
    let user = (!state.config.config.user.is_empty()).then(|| state.config.config.user.clone());
    let op = ExecOp {
        args: args.clone(),
        env,
        cwd,
        user,
        network,
        security,
        hostname: None,
        extra_hosts: ctx
            .copts
            .extra_hosts
            .iter()
            .map(|(host, ip)| kiln_graph::ExtraHost {
                host: host.clone(),
                ip: ip.clone(),
            })
            .collect(),
        mounts: exec_mounts,
        secret_env,
    };
    let name = ctx.step_name(step, &format!("RUN {}", display_command(ins)));
    state.root = Some(ctx.add(Op::Exec(op), inputs, name, span)?);

    // History: `RUN |N k=v … argv` (BuildKit's runCommandString).
    let build_args = state.scope.build_arg_env();
    let mut created_by = String::from("RUN ");
    if !build_args.is_empty() {
        created_by.push_str(&format!("|{} ", build_args.len()));
        for (k, v) in &build_args {
            created_by.push_str(&format!("{k}={v} "));
        }
    }
    created_by.push_str(&args.join(" "));
    created_by.push_str(" # buildkit");
    history(state, ctx, created_by, false);
    Ok(())
}

/// The instruction text after the keyword, for progress names.
fn display_command(ins: &Instruction) -> String {
    let original = ins.original.trim();
    match original.split_once(char::is_whitespace) {
        Some((_, rest)) => rest.trim().to_string(),
        None => String::new(),
    }
}

struct CopyRequest {
    instruction: &'static str,
    sources: Vec<String>,
    inline: Vec<(String, String)>,
    dest: String,
    from: Option<String>,
    chown: Option<String>,
    chmod: Option<String>,
    excludes: Vec<String>,
    link: bool,
    parents: bool,
    checksum: Option<String>,
    unpack: bool,
    keep_git_dir: bool,
}

fn compile_copy(
    ctx: &mut Ctx<'_, '_>,
    state: &mut StageState<'_>,
    ins: &Instruction,
    req: CopyRequest,
    step: usize,
) -> Result<(), CompileError> {
    let span = ins.span;
    let count = req.sources.len() + req.inline.len();
    if count == 0 {
        return Err(err(CompileErrorKind::NoSources(req.instruction), span));
    }
    // Several sources onto a path not spelled as a directory are copied
    // one after the other to it (BuildKit has no check here).
    let dest_is_dir =
        req.dest.ends_with('/') || req.dest.ends_with("/.") || req.dest == "." || req.dest == "..";
    let mut dest = resolve_path(&state.config.config.working_dir, &req.dest);
    if dest_is_dir && !dest.ends_with('/') {
        dest.push('/');
    }
    let chown = req
        .chown
        .as_deref()
        .map(|c| parse_chown(c, span))
        .transpose()?;
    let chmod = req.chmod.as_deref().map(parse_chmod);

    let mut extra_inputs: Vec<VertexId> = Vec::new();
    let input_index = |v: VertexId, extra: &mut Vec<VertexId>| -> usize {
        let base_offset = if req.link || state.root.is_none() {
            0
        } else {
            1
        };
        match extra.iter().position(|e| *e == v) {
            Some(i) => i + base_offset,
            None => {
                extra.push(v);
                extra.len() - 1 + base_offset
            }
        }
    };
    let copy_action = |src_input: usize, src: String, unpack: bool| {
        FileAction::Copy(CopyAction {
            src_input,
            src,
            dest: dest.clone(),
            chown: chown.clone(),
            chmod: chmod.clone(),
            follow_symlinks: true,
            dir_copy_contents: true,
            create_dest_path: true,
            allow_wildcard: true,
            // A wildcard that matches nothing copies nothing (BuildKit's
            // frontend sets AllowEmptyWildcard for COPY and ADD).
            allow_empty_wildcard: true,
            include_patterns: Vec::new(),
            exclude_patterns: req.excludes.clone(),
            always_replace_existing_dest_paths: false,
            parents: req.parents,
            unpack_archives: unpack,
            mtime: ctx.copts.source_date_epoch,
        })
    };
    let mut actions = Vec::new();

    // Sources from the context, another stage or an image, or remote.
    let mut local: Vec<String> = Vec::new();
    for src in &req.sources {
        if is_git(src) {
            if req.instruction == "COPY" {
                return Err(err(CompileErrorKind::CopyUrl, span));
            }
            let (remote, fragment) = match src.split_once('#') {
                Some((r, f)) => (r.to_string(), Some(f.to_string())),
                None => (src.clone(), None),
            };
            let (ref_, subdir) = match fragment {
                Some(f) => match f.split_once(':') {
                    Some((r, d)) => (
                        Some(r.to_string()).filter(|r| !r.is_empty()),
                        Some(d.to_string()),
                    ),
                    None => (Some(f).filter(|r| !r.is_empty()), None),
                },
                None => (None, None),
            };
            let v = ctx.add(
                Op::Source(SourceOp::Git {
                    remote,
                    ref_,
                    keep_git_dir: req.keep_git_dir,
                    subdir,
                }),
                vec![],
                format!("[internal] load git source {src}"),
                span,
            )?;
            let i = input_index(v, &mut extra_inputs);
            actions.push(copy_action(i, "/".into(), false));
        } else if is_url(src) {
            if req.instruction == "COPY" {
                return Err(err(CompileErrorKind::CopyUrl, span));
            }
            let checksum = req
                .checksum
                .as_deref()
                .map(|c| {
                    c.parse::<Digest>().map_err(|e| {
                        err(
                            CompileErrorKind::BadChecksum {
                                value: c.to_string(),
                                reason: e.to_string(),
                            },
                            span,
                        )
                    })
                })
                .transpose()?;
            let filename = src
                .rsplit('/')
                .next()
                .filter(|f| !f.is_empty())
                .map(|f| f.split('?').next().unwrap_or(f).to_string());
            let v = ctx.add(
                Op::Source(SourceOp::Http {
                    url: src.clone(),
                    checksum,
                    filename: filename.clone(),
                }),
                vec![],
                format!("[internal] load remote file {src}"),
                span,
            )?;
            let i = input_index(v, &mut extra_inputs);
            // Remote files are never unpacked, as in Docker.
            actions.push(copy_action(
                i,
                format!("/{}", filename.unwrap_or_else(|| "download".into())),
                false,
            ));
        } else {
            local.push(src.clone());
        }
    }
    if !local.is_empty() {
        let source = match &req.from {
            Some(from) => ctx.stage_or_image_vertex(from, span)?,
            None => {
                let follow = local
                    .iter()
                    .map(|s| {
                        s.trim_start_matches("./")
                            .trim_start_matches('/')
                            .to_string()
                    })
                    .collect();
                let absolute_chmod = matches!(chmod, Some(OpChmod::Octal(_)));
                Some(ctx.context_vertex(follow, absolute_chmod, span)?)
            }
        };
        let unpack = req.unpack && req.from.is_none();
        match source {
            Some(v) => {
                let i = input_index(v, &mut extra_inputs);
                for src in &local {
                    actions.push(copy_action(i, clean_abs(&format!("/{src}")), unpack));
                }
            }
            None => {
                // `--from` a stage that is still empty scratch: nothing to copy
                // from; the copy fails at build time as the sources are missing.
                let v = ctx.add(
                    Op::File(FileOp {
                        base: None,
                        actions: vec![],
                    }),
                    vec![],
                    "[internal] scratch".into(),
                    span,
                )?;
                let i = input_index(v, &mut extra_inputs);
                for src in &local {
                    actions.push(copy_action(i, clean_abs(&format!("/{src}")), false));
                }
            }
        }
    }
    // Heredoc sources: written into an empty filesystem, then copied.
    for (name, content) in &req.inline {
        let mk = FileAction::Mkfile {
            path: format!("/{name}"),
            mode: 0o644,
            data: content.clone().into_bytes(),
            owner: None,
        };
        let v = ctx.add(
            Op::File(FileOp {
                base: None,
                actions: vec![mk],
            }),
            vec![],
            format!("[internal] heredoc {name}"),
            span,
        )?;
        let i = input_index(v, &mut extra_inputs);
        actions.push(copy_action(i, format!("/{name}"), false));
    }

    let name = ctx.step_name(
        step,
        &format!("{} {}", req.instruction, display_command(ins)),
    );
    if req.link {
        // `COPY --link`: the layer is built on an empty base and stacked on
        // the current root without depending on its content.
        let layer = file_op(ctx, None, actions, extra_inputs, name.clone(), span)?;
        state.root = Some(match state.root {
            Some(root) => ctx.add(Op::Merge(MergeOp {}), vec![root, layer], name, span)?,
            None => layer,
        });
    } else {
        state.root = Some(file_op(ctx, state.root, actions, extra_inputs, name, span)?);
    }
    let created_by = format!("{} {} # buildkit", req.instruction, display_command(ins));
    history(state, ctx, created_by, false);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parser::parse;
    use crate::stages::{PlatformArgs, plan};

    fn opts() -> BuildOptions {
        BuildOptions::for_platform(PlatformArgs {
            os: "linux".into(),
            arch: "amd64".into(),
            variant: String::new(),
        })
    }

    fn busybox() -> impl Fn(&str, &str) -> Result<BaseImage, String> {
        |name: &str, _platform: &str| {
            let reference = kiln_oci::Reference::parse_docker_ref(name)
                .map_err(|e| e.to_string())?
                .to_string();
            let mut config = empty_config("linux/amd64");
            config.config.env = vec!["PATH=/bin".into(), "HOME=/root".into()];
            config.config.cmd = Some(vec!["sh".into()]);
            if name.starts_with("triggers") {
                config.config.on_build = vec!["RUN echo from-trigger".into()];
            }
            Ok(BaseImage {
                reference,
                digest: Some(Digest::sha256(name.as_bytes())),
                config,
            })
        }
    }

    fn build(src: &str) -> Result<Compiled, CompileError> {
        let o = opts();
        let mut p = plan(&parse(src).unwrap(), &o)?;
        let images = busybox();
        required_images(&mut p, &o, &images)?;
        compile(&p, &o, &CompileOptions::default(), &images)
    }

    fn history_lines(c: &Compiled) -> Vec<String> {
        c.config
            .history
            .iter()
            .map(|h| {
                format!(
                    "{}{}",
                    h.created_by.clone().unwrap_or_default(),
                    if h.empty_layer { " (empty)" } else { "" }
                )
            })
            .collect()
    }

    #[test]
    fn config_instructions() {
        let c = build(
            "FROM busybox\nENV A=1 B=$HOME\nLABEL l=v\nUSER app\nWORKDIR /srv\nWORKDIR app\nEXPOSE 80 53/udp\nVOLUME /data\nSTOPSIGNAL SIGINT\nENTRYPOINT [\"/bin/app\"]\nMAINTAINER me\nONBUILD RUN x\n",
        )
        .unwrap();
        let cfg = &c.config.config;
        assert_eq!(cfg.env, ["PATH=/bin", "HOME=/root", "A=1", "B=/root"]);
        assert_eq!(cfg.labels.get("l").map(String::as_str), Some("v"));
        assert_eq!(cfg.user, "app");
        assert_eq!(cfg.working_dir, "/srv/app");
        assert_eq!(
            cfg.exposed_ports.keys().cloned().collect::<Vec<_>>(),
            ["53/udp", "80/tcp"]
        );
        assert!(cfg.volumes.contains_key("/data"));
        assert_eq!(cfg.stop_signal, "SIGINT");
        assert_eq!(
            cfg.entrypoint.as_deref(),
            Some(&["/bin/app".to_string()][..])
        );
        assert_eq!(cfg.cmd, None, "ENTRYPOINT resets the inherited CMD");
        assert_eq!(c.config.author.as_deref(), Some("me"));
        assert_eq!(cfg.on_build, ["RUN x"]);
        assert_eq!(
            history_lines(&c),
            [
                "ENV A=1 B=/root (empty)",
                "LABEL l=v (empty)",
                "USER app (empty)",
                "WORKDIR /srv",
                "WORKDIR /srv/app",
                "EXPOSE map[53/udp:{} 80/tcp:{}] (empty)",
                "VOLUME [/data] (empty)",
                "STOPSIGNAL SIGINT (empty)",
                "ENTRYPOINT [\"/bin/app\"] (empty)",
                "MAINTAINER me (empty)",
                "ONBUILD RUN x (empty)",
            ]
        );
        assert!(
            c.config
                .history
                .iter()
                .all(|h| h.comment.as_deref() == Some(HISTORY_COMMENT))
        );
    }

    #[test]
    fn cmd_after_entrypoint_is_kept_and_shell_form_uses_shell() {
        let c =
            build("FROM busybox\nSHELL [\"/bin/bash\", \"-c\"]\nCMD echo hi\nENTRYPOINT [\"e\"]\n")
                .unwrap();
        assert_eq!(
            c.config.config.cmd.as_deref(),
            Some(&["/bin/bash".to_string(), "-c".into(), "echo hi".into()][..])
        );
        assert_eq!(c.config.config.shell, ["/bin/bash", "-c"]);
    }

    #[test]
    fn run_and_copy_build_a_chain() {
        let c = build("FROM busybox AS b\nARG V=1\nRUN echo $V > /v\nCOPY --chown=1:2 --chmod=0755 a b /dst/\nFROM scratch\nCOPY --from=b /v /v\n").unwrap();
        let dump = c.graph.dump();
        assert!(dump.contains("exec"), "{dump}");
        assert!(dump.contains("source local context"), "{dump}");
        let lines = history_lines(&c);
        assert_eq!(lines, ["COPY --from=b /v /v # buildkit"]);
        assert_eq!(c.config.config.env, [format!("PATH={DEFAULT_PATH}")]);
        let c = build("FROM busybox\nARG V=1\nRUN echo $V\n").unwrap();
        assert_eq!(
            history_lines(&c)[1],
            "RUN |1 V=1 /bin/sh -c echo $V # buildkit"
        );
    }

    #[test]
    fn errors_point_at_the_instruction() {
        let e = build("FROM busybox\nRUN true\nCOPY --from=x:y@bad a b\n").unwrap_err();
        assert_eq!(e.span.start_line, 3, "{e:?}");
        assert!(matches!(
            build("FROM busybox\nSTOPSIGNAL SIGNOPE\n")
                .unwrap_err()
                .kind,
            CompileErrorKind::BadSignal(_)
        ));
        assert!(matches!(
            build("FROM busybox\nEXPOSE 99999\n").unwrap_err().kind,
            CompileErrorKind::BadPort(_)
        ));
        assert!(matches!(
            build("FROM busybox\nCOPY https://x/y /\n")
                .unwrap_err()
                .kind,
            CompileErrorKind::CopyUrl
        ));
        assert!(matches!(
            build("FROM busybox\nRUN --network=bridge true\n")
                .unwrap_err()
                .kind,
            CompileErrorKind::BadNetwork(_)
        ));
    }

    #[test]
    fn onbuild_triggers_from_base_images_run() {
        let c = build("FROM triggers\nRUN echo mine\n").unwrap();
        let lines = history_lines(&c);
        assert!(lines[0].contains("echo from-trigger"), "{lines:?}");
        assert!(c.config.config.on_build.is_empty());
    }

    #[test]
    fn onbuild_triggers_of_a_parent_stage_run() {
        let c = build(
            "FROM busybox AS base\nONBUILD RUN echo from-stage\nRUN echo base\nFROM base\nRUN echo child\n",
        )
        .unwrap();
        let lines = history_lines(&c);
        let trigger = lines
            .iter()
            .position(|l| l.contains("echo from-stage") && l.starts_with("RUN"));
        let child = lines.iter().position(|l| l.contains("echo child"));
        assert!(trigger.is_some() && trigger < child, "{lines:?}");
        assert!(c.config.config.on_build.is_empty());
    }

    #[test]
    fn copy_link_uses_merge() {
        let c = build("FROM busybox\nCOPY --link a /a\n").unwrap();
        assert!(c.graph.dump().contains("merge"));
    }

    #[test]
    fn identical_stages_share_vertices() {
        let c = build("FROM busybox AS a\nRUN make\nFROM busybox AS b\nRUN make\nFROM scratch\nCOPY --from=a /x /x\nCOPY --from=b /x /y\n").unwrap();
        let dump = c.graph.dump();
        assert_eq!(dump.matches(" exec ").count(), 1, "{dump}");
    }

    #[test]
    fn ports() {
        assert_eq!(
            port_specs("8000-8002/udp").unwrap(),
            ["8000/udp", "8001/udp", "8002/udp"]
        );
        assert!(port_specs("80/foo").is_none());
        assert!(
            known_signal("SIGRTMIN+3")
                && known_signal("9")
                && known_signal("TERM")
                && !known_signal("NOPE")
        );
    }

    #[test]
    fn run_heredocs() {
        let c = build("FROM busybox\nRUN <<EOF\necho one\necho two\nEOF\nRUN <<EOF python3\nprint(1)\nEOF\nRUN <<EOF\n#!/usr/bin/env python3\nprint(2)\nEOF\n").unwrap();
        let lines = history_lines(&c);
        assert_eq!(lines[0], "RUN /bin/sh -c echo one\necho two\n # buildkit");
        assert_eq!(
            lines[1],
            "RUN /bin/sh -c <<EOF python3\nprint(1)\nEOF # buildkit"
        );
        assert_eq!(lines[2], "RUN /dev/pipes/EOF # buildkit");
        assert!(
            c.graph.dump().contains("/dev/pipes <- #1 ro"),
            "{}",
            c.graph.dump()
        );
    }

    #[test]
    fn no_cache_filter_marks_only_that_stage() {
        let o = opts();
        let mut p = plan(
            &parse("FROM busybox AS a\nRUN one\nFROM busybox\nRUN two\n").unwrap(),
            &o,
        )
        .unwrap();
        let images = busybox();
        p.reachable = vec![0, 1];
        let copts = CompileOptions {
            no_cache: NoCache::Stages(BTreeSet::from(["a".to_string()])),
            ..Default::default()
        };
        let c = compile(&p, &o, &copts, &images).unwrap();
        let dump = c.graph.dump();
        let line = |needle: &str| {
            dump.lines()
                .find(|l| l.contains(needle))
                .unwrap()
                .to_string()
        };
        assert!(line("RUN one").ends_with("no-cache"), "{dump}");
        assert!(!line("RUN two").ends_with("no-cache"), "{dump}");
    }

    #[test]
    fn octal_chmod_makes_source_modes_irrelevant() {
        let c = build("FROM busybox\nCOPY --chmod=0644 a /a\nCOPY --chmod=u+x b /b\nCOPY c /c\n")
            .unwrap();
        let dump = c.graph.dump();
        let local = |f: &str| {
            dump.lines()
                .find(|l| l.contains(&format!("follow=[\"{f}\"]")))
                .unwrap()
                .to_string()
        };
        assert!(local("a").contains("ignore-modes"), "{dump}");
        assert!(!local("b").contains("ignore-modes"), "{dump}");
        assert!(!local("c").contains("ignore-modes"), "{dump}");
    }
}
