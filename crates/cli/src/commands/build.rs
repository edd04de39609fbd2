//! `kiln build`: parses Docker's build flags, calls `kiln_engine::build`,
//! renders progress and the result.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::Args;
use kiln_engine::{BuildContext, BuildError, BuildRequest, Output};
use kiln_exporter::Compression;
use kiln_frontend::compile::NoCache;
use kiln_solver::NetworkMode;

use super::Context;
use crate::buildprogress::{ProgressMode, Renderer};
use crate::render::DockerfileError;
use crate::render::ExitStatus;

#[derive(Args, Debug)]
#[command(about = "Build an image from a Dockerfile")]
pub struct BuildArgs {
    /// Name and optionally a tag (format: "name:tag")
    #[arg(short = 't', long = "tag", value_name = "stringArray")]
    tags: Vec<String>,
    /// Name of the Dockerfile (default: "PATH/Dockerfile"; "-" reads standard input)
    #[arg(short = 'f', long = "file", value_name = "string")]
    file: Option<PathBuf>,
    /// Set build-time variables
    #[arg(long = "build-arg", value_name = "stringArray")]
    build_args: Vec<String>,
    /// Set the target build stage to build
    #[arg(long, value_name = "string")]
    target: Option<String>,
    /// Do not use cache when building the image
    #[arg(long = "no-cache")]
    no_cache: bool,
    /// Do not cache specified stages
    #[arg(long = "no-cache-filter", value_name = "stringArray")]
    no_cache_filter: Vec<String>,
    /// Always attempt to pull all referenced images
    #[arg(long)]
    pull: bool,
    /// Set target platform for build
    #[arg(long, value_name = "string")]
    platform: Option<String>,
    /// Set metadata for an image
    #[arg(long = "label", value_name = "stringArray")]
    labels: Vec<String>,
    /// Suppress the build output and print image ID on success
    #[arg(short = 'q', long)]
    quiet: bool,
    /// Write the image ID to a file
    #[arg(long, value_name = "string")]
    iidfile: Option<PathBuf>,
    /// Set type of progress output ("auto", "tty", "plain", "rawjson", "quiet")
    #[arg(long, value_name = "string", default_value = "auto")]
    progress: ProgressMode,
    /// Secret to expose to the build (format: "id=mysecret[,src=/local/secret|,env=VAR]")
    #[arg(long = "secret", value_name = "stringArray")]
    secrets: Vec<String>,
    /// SSH agent socket or keys to expose to the build (format: "default|<id>[=<socket>]")
    #[arg(long = "ssh", value_name = "stringArray")]
    ssh: Vec<String>,
    /// Set the networking mode for the RUN instructions during build ("none", "host", "default")
    #[arg(long, value_name = "string")]
    network: Option<String>,
    /// Add a custom host-to-IP mapping (format: "host:ip")
    #[arg(long = "add-host", value_name = "list")]
    add_hosts: Vec<String>,
    /// Additional build contexts (e.g., name=path)
    #[arg(long = "build-context", value_name = "stringArray")]
    build_contexts: Vec<String>,
    /// Output destination (format: "type=local,dest=path")
    #[arg(short = 'o', long = "output", value_name = "stringArray")]
    outputs: Vec<String>,
    /// Shorthand for "--output=type=registry": push the image after the build
    #[arg(long)]
    push: bool,
    /// Print why each stage's first step missed the cache
    #[arg(long)]
    explain: bool,
    /// Most build steps executing at once (default: the number of CPUs)
    #[arg(long = "max-parallelism", value_name = "int")]
    max_parallelism: Option<usize>,
    /// Build context directory
    #[arg(value_name = "PATH")]
    path: PathBuf,
}

pub fn run(ctx: &Context, a: BuildArgs) -> anyhow::Result<()> {
    if a.path.as_os_str() == "-" {
        bail!(
            "reading the build context from standard input is not supported yet: pass a directory (use -f - for a Dockerfile on standard input)"
        );
    }
    let context_dir = a
        .path
        .canonicalize()
        .with_context(|| format!("unable to prepare context: path {:?} not found", a.path))?;
    if !context_dir.is_dir() {
        bail!(
            "unable to prepare context: path {:?} is not a directory",
            a.path
        );
    }
    let (dockerfile_path, dockerfile_name, dockerfile) =
        read_dockerfile(&context_dir, a.file.as_deref())?;
    let ignore_patterns = read_ignore(&context_dir, dockerfile_path.as_deref(), &dockerfile_name)?;

    let mut req = BuildRequest::new(&context_dir, dockerfile.clone());
    req.dockerfile_name = dockerfile_name.clone();
    req.ignore_patterns = ignore_patterns;
    req.build_args = super::debug::parse_build_args(&a.build_args);
    req.target = a.target.clone();
    req.platform = a
        .platform
        .as_deref()
        .map(str::parse)
        .transpose()
        .map_err(|e| anyhow::anyhow!("invalid --platform: {e}"))?;
    req.tags = a
        .tags
        .iter()
        .map(|t| {
            kiln_oci::Reference::parse_docker_ref(t)
                .map_err(|e| anyhow::anyhow!("invalid tag {t:?}: {e}"))
        })
        .collect::<anyhow::Result<_>>()?;
    req.labels = a
        .labels
        .iter()
        .map(|l| match l.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (l.clone(), String::new()),
        })
        .collect();
    req.no_cache = if a.no_cache {
        NoCache::All
    } else if !a.no_cache_filter.is_empty() {
        NoCache::Stages(
            a.no_cache_filter
                .iter()
                .map(|s| s.to_lowercase())
                .collect::<BTreeSet<_>>(),
        )
    } else {
        NoCache::None
    };
    req.pull = a.pull;
    req.secrets = parse_secrets(&a.secrets)?;
    req.ssh = parse_ssh(&a.ssh)?;
    req.network = match a.network.as_deref() {
        Some("none") => NetworkMode::None,
        Some("host") => NetworkMode::Host,
        None | Some("default") => NetworkMode::Default,
        Some(other) => {
            bail!("network mode {other:?} not supported by kiln: use none, host or default")
        }
    };
    req.add_hosts = a
        .add_hosts
        .iter()
        .map(|h| {
            h.split_once([':', '='])
                .map(|(h, ip)| (h.to_string(), ip.to_string()))
                .ok_or_else(|| anyhow::anyhow!("invalid --add-host {h:?}: expected host:ip"))
        })
        .collect::<anyhow::Result<_>>()?;
    req.build_contexts = a
        .build_contexts
        .iter()
        .map(|c| {
            let (name, path) = c.split_once('=').ok_or_else(|| {
                anyhow::anyhow!("invalid --build-context {c:?}: expected name=path")
            })?;
            if let Some(image) = path.strip_prefix("docker-image://") {
                kiln_oci::Reference::parse_docker_ref(image).map_err(|e| {
                    anyhow::anyhow!("invalid --build-context {name}: {image:?}: {e}")
                })?;
                return Ok((name.to_string(), BuildContext::Image(image.to_string())));
            }
            if let Some((scheme, _)) = path.split_once("://") {
                bail!(
                    "--build-context {name}={path}: {scheme}:// contexts are not supported: use a directory or docker-image://REF"
                );
            }
            Ok((
                name.to_string(),
                BuildContext::Dir(
                    PathBuf::from(path)
                        .canonicalize()
                        .with_context(|| format!("build context {name}: {path} not found"))?,
                ),
            ))
        })
        .collect::<anyhow::Result<_>>()?;
    let mut outputs = parse_outputs(&a.outputs)?;
    if a.push {
        outputs.push = true;
        if !outputs.outputs.contains(&Output::Image) {
            outputs.outputs.push(Output::Image);
        }
    }
    for name in &outputs.names {
        let r = kiln_oci::Reference::parse_docker_ref(name)
            .map_err(|e| anyhow::anyhow!("invalid image name {name:?}: {e}"))?;
        if !req.tags.contains(&r) {
            req.tags.push(r);
        }
    }
    if outputs.push && req.tags.is_empty() {
        bail!("tag is needed when pushing to registry");
    }
    let push = outputs.push;
    req.outputs = outputs.outputs;
    req.compression = outputs.compression;
    req.compression_level = outputs.level;
    // BuildKit's build argument, else the environment (as buildx passes it).
    let epoch = match req.build_args.get("SOURCE_DATE_EPOCH") {
        Some(v) => Some(v.clone()),
        None => std::env::var("SOURCE_DATE_EPOCH").ok(),
    };
    req.source_date_epoch = match epoch.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(v) => Some(
            v.parse()
                .with_context(|| format!("invalid SOURCE_DATE_EPOCH {v:?}: seconds since 1970"))?,
        ),
    };
    if a.max_parallelism == Some(0) {
        bail!("--max-parallelism must be at least 1");
    }
    req.max_parallelism = a.max_parallelism;
    req.runtime = Some(ctx.oci_runtime()?);

    let store = ctx.store()?;
    let mode = if a.quiet {
        ProgressMode::Quiet
    } else {
        a.progress
    };
    let runtime = tokio::runtime::Runtime::new().context("failed to start the async runtime")?;
    let registry = crate::config::registry_client()?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut renderer = Renderer::new(mode);
    let cancel = req.cancel.clone();
    let mut stopped_by: Option<i32> = None;
    let result = runtime.block_on(async {
        // SIGINT, SIGTERM and SIGHUP cancel the build (running steps are
        // killed, their mounts and files removed); a second one exits at
        // once. Handlers replace dispositions kiln inherited as ignored.
        let mut signals = crate::signals::Stop::install();
        let build = kiln_engine::build(&store, &req, Some(registry.clone()), Some(tx));
        tokio::pin!(build);
        loop {
            tokio::select! {
                biased;
                sig = signals.next() => {
                    if stopped_by.is_some() {
                        kiln_store::release_leases();
                        std::process::exit(128 + sig);
                    }
                    stopped_by = Some(sig);
                    cancel.cancel();
                }
                Some(event) = rx.recv() => renderer.handle(&event),
                result = &mut build => {
                    while let Ok(event) = rx.try_recv() {
                        renderer.handle(&event);
                    }
                    break result;
                }
            }
        }
    });
    renderer.finish_all(result.is_ok());
    if let Some(sig) = stopped_by {
        eprintln!("ERROR: the build was cancelled");
        return Err(ExitStatus(u8::try_from(128 + sig).unwrap_or(130)).into());
    }
    let outcome = match result {
        Ok(outcome) => outcome,
        Err(e) => return Err(render_error(e, &renderer, &dockerfile_name, &dockerfile)),
    };

    for w in &outcome.warnings {
        let at = w
            .span
            .map(|s| format!(" ({dockerfile_name}:{})", s.start_line))
            .unwrap_or_default();
        renderer.println(&format!(" - {}: {}{at}", w.rule, w.message));
    }
    if a.explain {
        if outcome.explanations.is_empty() {
            renderer.println("explain: every step came from the cache");
        }
        for e in &outcome.explanations {
            renderer.println(&format!("explain: {} ran: {}", e.step, e.reason));
        }
    }
    if let Some(image) = &outcome.image {
        if !a.quiet {
            renderer.println(&format!("writing image {} done", image.id));
            for t in &image.tags {
                renderer.println(&format!("naming to {t} done"));
            }
        }
        if push {
            push_tags(&registry, &store, &runtime, &renderer, &req.tags, a.quiet)?;
        }
        if let Some(path) = &a.iidfile {
            std::fs::write(path, image.id.to_string())
                .with_context(|| format!("failed to write {}", path.display()))?;
        }
        if a.quiet {
            println!("{}", image.id);
        }
    }
    Ok(())
}

/// `--push`: uploads every name of the built image, BuildKit's lines.
fn push_tags(
    client: &kiln_registry::Client,
    store: &kiln_store::Store,
    runtime: &tokio::runtime::Runtime,
    renderer: &Renderer,
    tags: &[kiln_oci::Reference],
    quiet: bool,
) -> anyhow::Result<()> {
    for tag in tags {
        let started = std::time::Instant::now();
        if !quiet {
            renderer.println(&format!("pushing {tag}"));
        }
        let pushed = runtime
            .block_on(client.push(store, tag, &|_| {}))
            .map_err(|e| super::pull::registry_error(e, &tag.familiar_string()))?;
        if !quiet {
            renderer.println(&format!(
                "pushing manifest for {tag}@{} {:.1}s done",
                pushed.digest,
                started.elapsed().as_secs_f64()
            ));
        }
    }
    Ok(())
}

fn render_error(e: BuildError, renderer: &Renderer, name: &str, source: &str) -> anyhow::Error {
    match e {
        BuildError::Dockerfile { span, message } => {
            DockerfileError::parse(name, source, span, message).into()
        }
        BuildError::Lint { span, message } => DockerfileError {
            name: name.to_string(),
            source: source.to_string(),
            span,
            message: format!("failed to solve: {message}"),
        }
        .into(),
        BuildError::BaseImage { span, .. } if span.start_line > 0 => {
            let message = format!("failed to solve: {e}");
            DockerfileError {
                name: name.to_string(),
                source: source.to_string(),
                span,
                message,
            }
            .into()
        }
        BuildError::Step {
            step,
            digest,
            span,
            message,
        } => {
            let tail = renderer.tail_of(&digest);
            if !tail.is_empty() {
                eprintln!("------\n > {step}:");
                for line in &tail {
                    eprintln!("{line}");
                }
                eprintln!("------");
            }
            let message = format!("failed to solve: {message}");
            match span {
                Some(span) => DockerfileError {
                    name: name.to_string(),
                    source: source.to_string(),
                    span,
                    message,
                }
                .into(),
                None => anyhow::anyhow!(message),
            }
        }
        other => other.into(),
    }
}

fn read_dockerfile(
    context: &Path,
    file: Option<&Path>,
) -> anyhow::Result<(Option<PathBuf>, String, String)> {
    match file {
        Some(f) if f.as_os_str() == "-" => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("reading the Dockerfile from standard input")?;
            Ok((None, "Dockerfile".into(), s))
        }
        _ => {
            let path = match file {
                Some(f) if f.is_absolute() => f.to_path_buf(),
                Some(f) => std::env::current_dir()?.join(f),
                // `Dockerfile`, else a lowercase `dockerfile`, as BuildKit does.
                None => {
                    let upper = context.join("Dockerfile");
                    let lower = context.join("dockerfile");
                    if !upper.exists() && lower.exists() {
                        lower
                    } else {
                        upper
                    }
                }
            };
            let bytes = std::fs::read(&path)
                .with_context(|| format!("failed to read dockerfile: open {}", path.display()))?;
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "Dockerfile".into());
            Ok((
                Some(path),
                name,
                String::from_utf8_lossy(&bytes).into_owned(),
            ))
        }
    }
}

/// `<Dockerfile>.dockerignore` next to the Dockerfile wins over the
/// context's `.dockerignore`.
fn read_ignore(
    context: &Path,
    dockerfile: Option<&Path>,
    name: &str,
) -> anyhow::Result<Vec<String>> {
    let mut candidates = Vec::new();
    if let Some(df) = dockerfile {
        let dir = df.parent().unwrap_or(context);
        candidates.push(dir.join(format!("{name}.dockerignore")));
    }
    candidates.push(context.join(".dockerignore"));
    for c in candidates {
        if let Ok(bytes) = std::fs::read(&c) {
            return kiln_patterns::read_ignore_file(&bytes)
                .with_context(|| format!("reading {}", c.display()));
        }
    }
    Ok(Vec::new())
}

fn parse_secrets(specs: &[String]) -> anyhow::Result<BTreeMap<String, Vec<u8>>> {
    let mut out = BTreeMap::new();
    for spec in specs {
        let mut id = None;
        let mut src = None;
        let mut env = None;
        for field in spec.split(',') {
            match field.split_once('=') {
                Some(("id", v)) => id = Some(v.to_string()),
                Some(("src" | "source", v)) => src = Some(v.to_string()),
                Some(("env", v)) => env = Some(v.to_string()),
                Some(("type", "file" | "env")) => {}
                _ => bail!("invalid --secret {spec:?}: expected id=ID[,src=PATH|,env=VAR]"),
            }
        }
        let id = id.ok_or_else(|| anyhow::anyhow!("invalid --secret {spec:?}: id is required"))?;
        let value = match (src, env) {
            (Some(src), _) => {
                std::fs::read(&src).with_context(|| format!("secret {id}: failed to read {src}"))?
            }
            (None, Some(env)) => std::env::var(&env)
                .with_context(|| format!("secret {id}: environment variable {env} is not set"))?
                .into_bytes(),
            (None, None) => match std::env::var(&id) {
                Ok(v) => v.into_bytes(),
                Err(_) => std::fs::read(&id).with_context(|| {
                    format!(
                        "secret {id}: no src, no env, and neither a variable nor a file named {id}"
                    )
                })?,
            },
        };
        out.insert(id, value);
    }
    Ok(out)
}

fn parse_ssh(specs: &[String]) -> anyhow::Result<BTreeMap<String, PathBuf>> {
    let mut out = BTreeMap::new();
    for spec in specs {
        let (id, path) = match spec.split_once('=') {
            Some((id, p)) => (id.to_string(), PathBuf::from(p)),
            None => {
                let sock = std::env::var("SSH_AUTH_SOCK")
                    .with_context(|| format!("--ssh {spec}: SSH_AUTH_SOCK is not set"))?;
                (spec.clone(), PathBuf::from(sock))
            }
        };
        out.insert(id, path);
    }
    Ok(out)
}

/// What `-o`/`--output` asks for.
struct Outputs {
    outputs: Vec<Output>,
    compression: Compression,
    level: Option<i32>,
    /// `type=registry` or `type=image,push=true`: push the image's names.
    push: bool,
    /// `name=` of an image output: more names for the image.
    names: Vec<String>,
}

fn parse_outputs(specs: &[String]) -> anyhow::Result<Outputs> {
    let mut outputs = Vec::new();
    let mut compression = Compression::Gzip;
    let mut level = None;
    let mut push = false;
    let mut names = Vec::new();
    for spec in specs {
        if !spec.contains('=') {
            outputs.push(Output::Local {
                dest: PathBuf::from(spec),
                devices: false,
            });
            continue;
        }
        let mut kind = None;
        let mut dest = None;
        let mut push_field = false;
        let mut devices_field = false;
        for field in spec.split(',') {
            let (k, v) = field
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("invalid --output {spec:?}"))?;
            match k {
                "type" => kind = Some(v.to_string()),
                "dest" => dest = Some(PathBuf::from(v)),
                "compression" => {
                    compression = match v {
                        "gzip" => Compression::Gzip,
                        "zstd" => Compression::Zstd,
                        "uncompressed" => Compression::Uncompressed,
                        _ => bail!("unsupported compression {v:?}: use gzip, zstd or uncompressed"),
                    }
                }
                "compression-level" => {
                    level = Some(
                        v.parse()
                            .with_context(|| format!("invalid compression-level {v:?}"))?,
                    )
                }
                "name" => names.push(v.to_string()),
                "push" => push_field = parse_bool(v)?,
                "devices" => devices_field = parse_bool(v)?,
                "force-compression" | "oci-mediatypes" => {}
                _ => bail!("unsupported --output option {k:?}"),
            }
        }
        let need = |dest: Option<PathBuf>, t: &str| {
            dest.ok_or_else(|| anyhow::anyhow!("--output type={t} needs dest=PATH"))
        };
        let kind = kind.as_deref().unwrap_or("image");
        if push_field && !matches!(kind, "image" | "moby" | "registry") {
            bail!("push=true needs --output type=image");
        }
        if devices_field && kind != "local" {
            bail!("devices=true is an option of --output type=local");
        }
        outputs.push(match kind {
            "image" | "moby" => {
                push |= push_field;
                Output::Image
            }
            // Into the store too: the push reads the image from there.
            "registry" => {
                push = true;
                Output::Image
            }
            "oci" => Output::OciTar(need(dest, "oci")?),
            "docker" => Output::DockerTar(need(dest, "docker")?),
            "local" => Output::Local {
                dest: need(dest, "local")?,
                devices: devices_field,
            },
            "tar" => Output::Tar(need(dest, "tar")?),
            other => bail!("unsupported --output type {other:?}"),
        });
    }
    if outputs.is_empty() {
        outputs.push(Output::Image);
    }
    outputs.dedup_by(|a, b| matches!((a, b), (Output::Image, Output::Image)));
    Ok(Outputs {
        outputs,
        compression,
        level,
        push,
        names,
    })
}

fn parse_bool(v: &str) -> anyhow::Result<bool> {
    match v {
        "" | "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => bail!("invalid boolean {v:?}"),
    }
}
