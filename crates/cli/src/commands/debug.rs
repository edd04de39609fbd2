//! `kiln debug …`: views of kiln's internals for users and tests.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use kiln_frontend::parser::{self, Dockerfile};
use kiln_frontend::stages::{self, Base, BuildOptions, PlatformArgs};

use crate::render::DockerfileError;

#[derive(Subcommand, Debug)]
pub enum DebugCommand {
    /// Print a Dockerfile's syntax tree in BuildKit's dump format
    Parse(FileArg),
    /// Print the stages of a Dockerfile, what each builds on, and which are built for a target
    Stages(StagesArgs),
    /// Print the build graph a Dockerfile compiles to, one vertex per line
    Llb(StagesArgs),
}

#[derive(Args, Debug)]
pub struct FileArg {
    /// Name of the Dockerfile ("-" reads standard input)
    #[arg(
        short = 'f',
        long = "file",
        value_name = "string",
        default_value = "Dockerfile"
    )]
    file: PathBuf,
}

#[derive(Args, Debug)]
pub struct StagesArgs {
    #[command(flatten)]
    file: FileArg,
    /// Set build-time variables
    #[arg(long = "build-arg", value_name = "list")]
    build_args: Vec<String>,
    /// Set the target build stage to build
    #[arg(long, value_name = "string")]
    target: Option<String>,
}

pub fn run(ctx: &super::Context, cmd: DebugCommand) -> anyhow::Result<()> {
    match cmd {
        DebugCommand::Parse(a) => {
            let (_, df) = load(&a.file)?;
            print!("{}", df.dump());
            Ok(())
        }
        DebugCommand::Stages(a) => stages_cmd(a),
        DebugCommand::Llb(a) => llb_cmd(ctx, a),
    }
}

/// Compiles the Dockerfile and prints the graph. Base images come from
/// the local store when it has them (with their digests and configs);
/// others are shown unresolved, as no registry is contacted.
fn llb_cmd(ctx: &super::Context, a: StagesArgs) -> anyhow::Result<()> {
    use kiln_frontend::compile::{self, BaseImage, CompileOptions};
    let (source, df) = load(&a.file.file)?;
    let mut opts = BuildOptions::for_platform(host_platform());
    opts.target = a.target;
    opts.build_args = parse_build_args(&a.build_args);
    let name = display_name(&a.file.file);
    let frame = |span, message: String| DockerfileError::parse(&name, &source, span, message);
    let mut plan = stages::plan(&df, &opts).map_err(|e| frame(e.span, e.to_string()))?;
    let store = ctx
        .root_dir()
        .ok()
        .filter(|r| r.join("VERSION").exists())
        .and_then(|r| kiln_store::Store::open(r).ok());
    let images = |name: &str, platform: &str| -> Result<BaseImage, String> {
        let reference = kiln_oci::Reference::parse_docker_ref(name)
            .map_err(|e| e.to_string())?
            .to_string();
        if let Some(store) = &store
            && let Ok(record) = store.resolve(&reference)
            && let Ok(docs) = store.image_docs(&record)
        {
            return Ok(BaseImage {
                reference,
                digest: Some(record.manifest_digest.clone()),
                config: docs.config,
            });
        }
        let mut parts = platform.splitn(3, '/');
        let config = kiln_oci::config::ImageConfig {
            os: parts.next().unwrap_or("linux").into(),
            architecture: parts.next().unwrap_or("amd64").into(),
            variant: parts.next().map(str::to_string),
            ..Default::default()
        };
        Ok(BaseImage {
            reference,
            digest: None,
            config,
        })
    };
    compile::required_images(&mut plan, &opts, &images)
        .map_err(|e| frame(e.span, e.to_string()))?;
    let compiled = compile::compile(&plan, &opts, &CompileOptions::default(), &images)
        .map_err(|e| frame(e.span, e.to_string()))?;
    let reachable = compiled.root.map(|r| compiled.graph.subgraph_for(&[r]));
    match reachable {
        Some(Ok(g)) => print!("{}", g.dump()),
        Some(Err(e)) => return Err(e.into()),
        None => println!("(empty: the target is an empty scratch image)"),
    }
    Ok(())
}

/// Reads and parses a Dockerfile, turning parse errors into code frames.
pub fn load(path: &PathBuf) -> anyhow::Result<(String, Dockerfile)> {
    let bytes = if path.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .context("reading the Dockerfile from standard input")?;
        buf
    } else {
        std::fs::read(path)
            .with_context(|| format!("failed to read Dockerfile {}", path.display()))?
    };
    let source = String::from_utf8_lossy(&bytes).into_owned();
    let name = display_name(path);
    let df =
        parser::parse(&source).map_err(|e| DockerfileError::parse(&name, &source, e.span, &e))?;
    Ok((source, df))
}

/// The name a Dockerfile is shown by in errors (`Dockerfile` for stdin).
fn display_name(path: &std::path::Path) -> String {
    match path.file_name() {
        Some(n) if path.as_os_str() != "-" => n.to_string_lossy().into_owned(),
        _ => "Dockerfile".into(),
    }
}

fn host_platform() -> PlatformArgs {
    let (arch, variant) = match std::env::consts::ARCH {
        "x86_64" => ("amd64", ""),
        "aarch64" => ("arm64", "v8"),
        "arm" => ("arm", "v7"),
        "x86" => ("386", ""),
        "powerpc64" => ("ppc64le", ""),
        other => (other, ""),
    };
    PlatformArgs {
        os: "linux".into(),
        arch: arch.into(),
        variant: variant.into(),
    }
}

fn stages_cmd(a: StagesArgs) -> anyhow::Result<()> {
    let (source, df) = load(&a.file.file)?;
    let mut opts = BuildOptions::for_platform(host_platform());
    opts.target = a.target;
    opts.build_args = parse_build_args(&a.build_args);
    let name = display_name(&a.file.file);
    let plan =
        stages::plan(&df, &opts).map_err(|e| DockerfileError::parse(&name, &source, e.span, &e))?;
    for s in &plan.stages {
        let base = match &s.base {
            Base::Scratch => "scratch".to_string(),
            Base::Stage(i) => format!("stage {}", plan.stages[*i].display_name()),
            Base::Image(r) => format!("image {r}"),
            Base::Local(name) => format!("context {name}"),
        };
        let built = if plan.reachable.contains(&s.index) {
            "build"
        } else {
            "skip"
        };
        let target = if s.index == plan.target {
            " (target)"
        } else {
            ""
        };
        let deps: Vec<String> = s
            .deps
            .iter()
            .map(|d| plan.stages[*d].display_name())
            .collect();
        println!(
            "{} {}: from {base}; {} instructions; uses [{}]; {built}{target}",
            s.index,
            s.name.as_deref().unwrap_or("-"),
            s.instructions.len(),
            deps.join(", ")
        );
    }
    for lint in &plan.lints {
        eprintln!(
            "warning: {} (line {}): {}",
            lint.rule, lint.span.start_line, lint.message
        );
    }
    if !plan.unused_build_args.is_empty() {
        eprintln!(
            "[Warning] One or more build-args [{}] were not consumed",
            plan.unused_build_args.join(" ")
        );
    }
    Ok(())
}

/// `--build-arg K=V`, or `K` alone to take the value from the environment
/// (skipped when unset, as Docker does).
pub fn parse_build_args(args: &[String]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for a in args {
        match a.split_once('=') {
            Some((k, v)) => {
                out.insert(k.to_string(), v.to_string());
            }
            None => {
                if let Ok(v) = std::env::var(a) {
                    out.insert(a.clone(), v);
                }
            }
        }
    }
    out
}
