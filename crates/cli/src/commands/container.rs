//! The container commands besides `run` and `commit`: `ps`, `stop`,
//! `kill`, `rm`, `logs`, `start`, `wait`, `container prune`, and the
//! `container` group.

use std::io::{BufRead, Read, Seek, Write};
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use kiln_runtime::container::logs::{LogEntry, parse_entries};
use kiln_runtime::container::{ContainerRecord, Containers, Status};
use serde_json::{Map, Value};

use super::Context;
use super::run::{RunArgs, containers, labels_string, start_detached};
use crate::format::{Output, go_time_string, human_duration, human_size4, since};
use crate::render::{AlreadyReported, DockerError};

#[derive(Subcommand, Debug)]
pub enum ContainerCommand {
    /// Create a new image from a container's changes
    Commit(super::commit::CommitArgs),
    /// Kill one or more running containers
    Kill(KillArgs),
    /// Fetch the logs of a container
    Logs(LogsArgs),
    /// List containers
    #[command(visible_aliases = ["ps", "list"])]
    Ls(PsArgs),
    /// Remove all stopped containers
    Prune(PruneArgs),
    /// Remove one or more containers
    #[command(visible_alias = "remove")]
    Rm(RmArgs),
    /// Create and run a new container from an image
    Run(Box<RunArgs>),
    /// Start one or more stopped containers
    Start(StartArgs),
    /// Stop one or more running containers
    Stop(StopArgs),
    /// Block until one or more containers stop, then print their exit codes
    Wait(WaitArgs),
}

pub fn run_container(ctx: &Context, cmd: ContainerCommand) -> anyhow::Result<()> {
    match cmd {
        ContainerCommand::Commit(a) => super::commit::run(ctx, a),
        ContainerCommand::Kill(a) => kill(ctx, a),
        ContainerCommand::Logs(a) => logs(ctx, a),
        ContainerCommand::Ls(a) => ps(ctx, a),
        ContainerCommand::Prune(a) => prune(ctx, a),
        ContainerCommand::Rm(a) => rm(ctx, a),
        ContainerCommand::Run(a) => super::run::run(ctx, *a),
        ContainerCommand::Start(a) => start(ctx, a),
        ContainerCommand::Stop(a) => stop(ctx, a),
        ContainerCommand::Wait(a) => wait(ctx, a),
    }
}

fn rt() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("failed to start the async runtime")
}

/// Runs `f` for each name, printing `Error response…`-style failures and
/// carrying on, as Docker does.
fn each(
    names: &[String],
    mut f: impl FnMut(&str) -> anyhow::Result<Option<String>>,
) -> anyhow::Result<()> {
    let mut failed = false;
    for name in names {
        match f(name) {
            Ok(Some(line)) => println!("{line}"),
            Ok(None) => {}
            Err(e) => {
                failed = true;
                eprintln!("Error: {e:#}");
            }
        }
    }
    if failed {
        return Err(AlreadyReported.into());
    }
    Ok(())
}

#[derive(Args, Debug)]
pub struct PsArgs {
    /// Show all containers (default shows just running)
    #[arg(short = 'a', long = "all")]
    all: bool,
    /// Format output using a custom template ('table', 'table TEMPLATE', 'json', 'TEMPLATE')
    #[arg(long = "format", value_name = "string")]
    format: Option<String>,
    /// Don't truncate output
    #[arg(long = "no-trunc")]
    no_trunc: bool,
    /// Only display container IDs
    #[arg(short = 'q', long = "quiet")]
    quiet: bool,
}

/// Docker's status column: `Up 3 seconds`, `Exited (0) 2 minutes ago`, `Created`.
pub fn status_text(r: &ContainerRecord) -> String {
    let ago = |t: Option<chrono::DateTime<chrono::Utc>>| {
        let d = t
            .map(|t| (chrono::Utc::now() - t).to_std().unwrap_or_default())
            .unwrap_or_default();
        human_duration(d)
    };
    match r.state.status {
        Status::Running => format!("Up {}", ago(r.state.started_at)),
        Status::Exited => format!(
            "Exited ({}) {} ago",
            r.state.exit_code.unwrap_or(0),
            ago(r.state.finished_at)
        ),
        Status::Created => "Created".to_owned(),
    }
}

fn ellipsis(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max - 1).collect();
    out.push('…');
    out
}

fn ports_text(r: &ContainerRecord) -> String {
    r.ports
        .iter()
        .map(|p| {
            format!(
                "{}:{}->{}/{}",
                p.host_ip, p.host_port, p.container_port, p.proto
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn ps_row(r: &ContainerRecord, trunc: bool) -> Value {
    let command = r.command().join(" ");
    let command = if trunc {
        format!("\"{}\"", ellipsis(&command, 20))
    } else {
        format!("\"{command}\"")
    };
    let mut m = Map::new();
    m.insert(
        "ID".into(),
        if trunc { r.short_id() } else { r.id.as_str() }.into(),
    );
    m.insert("Image".into(), r.image.clone().into());
    m.insert("Command".into(), command.into());
    m.insert("CreatedAt".into(), go_time_string(r.created).into());
    m.insert("RunningFor".into(), since(r.created.into()).into());
    m.insert("Ports".into(), ports_text(r).into());
    m.insert("State".into(), r.state.status.as_str().into());
    m.insert("Status".into(), status_text(r).into());
    m.insert("Names".into(), r.name.clone().into());
    m.insert("Labels".into(), labels_string(&r.labels).into());
    m.insert(
        "Mounts".into(),
        r.mounts
            .iter()
            .map(|m| {
                m.name
                    .clone()
                    .unwrap_or_else(|| m.source.display().to_string())
            })
            .collect::<Vec<_>>()
            .join(",")
            .into(),
    );
    m.insert(
        "Networks".into(),
        serde_json::to_value(r.network)
            .unwrap_or_default()
            .as_str()
            .unwrap_or_default()
            .into(),
    );
    m.insert("Size".into(), "N/A".into());
    Value::Object(m)
}

const PS_HEADERS: &[(&str, &str)] = &[
    ("ID", "CONTAINER ID"),
    ("Image", "IMAGE"),
    ("Command", "COMMAND"),
    ("CreatedAt", "CREATED AT"),
    ("RunningFor", "CREATED"),
    ("Ports", "PORTS"),
    ("State", "STATE"),
    ("Status", "STATUS"),
    ("Names", "NAMES"),
    ("Labels", "LABELS"),
    ("Mounts", "MOUNTS"),
    ("Networks", "NETWORKS"),
    ("Size", "SIZE"),
];

pub fn ps(ctx: &Context, a: PsArgs) -> anyhow::Result<()> {
    let containers = containers(ctx)?;
    let list: Vec<ContainerRecord> = containers
        .list()?
        .into_iter()
        .filter(|r| a.all || r.is_running())
        .collect();
    if a.quiet {
        for r in &list {
            println!("{}", if a.no_trunc { &r.id } else { r.short_id() });
        }
        return Ok(());
    }
    let rows: Vec<Value> = list.iter().map(|r| ps_row(r, !a.no_trunc)).collect();
    let out = Output::new(
        a.format.as_deref(),
        "{{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}",
    )?;
    print!("{}", out.render(PS_HEADERS, &rows)?);
    Ok(())
}

#[derive(Args, Debug)]
pub struct StopArgs {
    /// Seconds to wait before killing the container
    #[arg(short = 't', long = "time", value_name = "int", default_value_t = 10)]
    time: u64,
    /// Signal to send to the container (default: the image's STOPSIGNAL or SIGTERM)
    #[arg(short = 's', long = "signal", value_name = "string")]
    signal: Option<String>,
    #[arg(value_name = "CONTAINER", required = true)]
    containers: Vec<String>,
}

pub fn stop(ctx: &Context, a: StopArgs) -> anyhow::Result<()> {
    let containers = containers(ctx)?;
    let rt = rt()?;
    each(&a.containers, |name| {
        let r = containers.find(name)?;
        if let Some(sig) = &a.signal {
            containers.update(&r.id, |r| r.stop_signal = sig.clone())?;
        }
        rt.block_on(containers.stop(&r.id, Duration::from_secs(a.time)))?;
        Ok(Some(name.to_owned()))
    })
}

#[derive(Args, Debug)]
pub struct KillArgs {
    /// Signal to send to the container
    #[arg(
        short = 's',
        long = "signal",
        value_name = "string",
        default_value = "KILL"
    )]
    signal: String,
    #[arg(value_name = "CONTAINER", required = true)]
    containers: Vec<String>,
}

pub fn kill(ctx: &Context, a: KillArgs) -> anyhow::Result<()> {
    let containers = containers(ctx)?;
    let rt = rt()?;
    each(&a.containers, |name| {
        let r = containers.find(name)?;
        rt.block_on(containers.kill(&r.id, &a.signal))
            .map_err(|e| DockerError(format!("cannot kill container: {name}: {e}")))?;
        Ok(Some(name.to_owned()))
    })
}

#[derive(Args, Debug)]
pub struct RmArgs {
    /// Force the removal of a running container (uses SIGKILL)
    #[arg(short = 'f', long = "force")]
    force: bool,
    /// Remove anonymous volumes associated with the container
    #[arg(short = 'v', long = "volumes")]
    volumes: bool,
    #[arg(value_name = "CONTAINER", required = true)]
    containers: Vec<String>,
}

pub fn rm(ctx: &Context, a: RmArgs) -> anyhow::Result<()> {
    let containers = containers(ctx)?;
    let rt = rt()?;
    each(&a.containers, |name| {
        let r = containers.find(name)?;
        if r.is_running() && a.force {
            rt.block_on(containers.kill_and_wait(&r.id))?;
        }
        containers.remove(&r.id, a.volumes)?;
        Ok(Some(name.to_owned()))
    })
}

#[derive(Args, Debug)]
pub struct LogsArgs {
    /// Follow log output
    #[arg(short = 'f', long = "follow")]
    follow: bool,
    /// Number of lines to show from the end of the logs ("all" for every line)
    #[arg(
        short = 'n',
        long = "tail",
        value_name = "string",
        default_value = "all"
    )]
    tail: String,
    /// Show timestamps
    #[arg(short = 't', long = "timestamps")]
    timestamps: bool,
    #[arg(value_name = "CONTAINER")]
    container: String,
}

fn print_entries(entries: &[LogEntry], timestamps: bool) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    let mut err = std::io::stderr().lock();
    for e in entries {
        let w: &mut dyn Write = if e.is_stderr() { &mut err } else { &mut out };
        if timestamps {
            write!(
                w,
                "{} ",
                e.time.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
            )?;
        }
        w.write_all(e.log.as_bytes())?;
    }
    out.flush()?;
    err.flush()
}

pub fn logs(ctx: &Context, a: LogsArgs) -> anyhow::Result<()> {
    let containers = containers(ctx)?;
    let r = containers.find(&a.container)?;
    let path = containers.log_path(&r.id);
    let mut file = match std::fs::File::open(&path) {
        Ok(f) => Some(f),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("failed to open {}", path.display())),
    };
    let mut bytes = Vec::new();
    if let Some(f) = &mut file {
        f.read_to_end(&mut bytes)?;
    }
    let (entries, used) = parse_entries(&bytes);
    let skip = match a.tail.as_str() {
        "all" | "-1" => 0,
        n => {
            let n: usize = n
                .parse()
                .map_err(|_| DockerError(format!("invalid value for \"tail\": {n:?}")))?;
            entries.len().saturating_sub(n)
        }
    };
    print_entries(&entries[skip..], a.timestamps)?;
    if !a.follow {
        return Ok(());
    }
    let mut offset = used as u64;
    let mut pending = Vec::new();
    loop {
        let running = containers
            .load(&r.id)
            .map(|r| r.is_running() || r.state.shim_pid.is_some())
            .unwrap_or(false);
        if file.is_none() {
            file = std::fs::File::open(&path).ok();
        }
        if let Some(f) = &mut file {
            f.seek(std::io::SeekFrom::Start(offset))?;
            let mut chunk = Vec::new();
            f.read_to_end(&mut chunk)?;
            offset += chunk.len() as u64;
            pending.extend_from_slice(&chunk);
            let (entries, used) = parse_entries(&pending);
            print_entries(&entries, a.timestamps)?;
            pending.drain(..used);
        }
        if !running {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[derive(Args, Debug)]
pub struct StartArgs {
    #[arg(value_name = "CONTAINER", required = true)]
    containers: Vec<String>,
}

pub fn start(ctx: &Context, a: StartArgs) -> anyhow::Result<()> {
    let containers = containers(ctx)?;
    each(&a.containers, |name| {
        let r = containers.find(name)?;
        if !r.is_running() {
            start_detached(ctx, &containers, &r, false)?;
        }
        Ok(Some(name.to_owned()))
    })
}

#[derive(Args, Debug)]
pub struct WaitArgs {
    #[arg(value_name = "CONTAINER", required = true)]
    containers: Vec<String>,
}

pub fn wait(ctx: &Context, a: WaitArgs) -> anyhow::Result<()> {
    let containers = containers(ctx)?;
    let rt = rt()?;
    each(&a.containers, |name| {
        let r = containers.find(name)?;
        let done = rt.block_on(containers.wait_exit(&r.id, None))?;
        Ok(Some(
            done.and_then(|r| r.state.exit_code)
                .unwrap_or(0)
                .to_string(),
        ))
    })
}

#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Do not prompt for confirmation
    #[arg(short = 'f', long = "force")]
    force: bool,
}

pub fn prune(ctx: &Context, a: PruneArgs) -> anyhow::Result<()> {
    let containers = containers(ctx)?;
    if !a.force {
        print!(
            "WARNING! This will remove all stopped containers.\nAre you sure you want to continue? [y/N] "
        );
        std::io::stdout().flush()?;
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y") {
            return Ok(());
        }
    }
    let mut deleted = Vec::new();
    let mut reclaimed = 0;
    for r in containers.list()? {
        if r.is_running() || r.state.shim_pid.is_some() {
            continue;
        }
        reclaimed += containers.remove(&r.id, false)?;
        deleted.push(r.id);
    }
    if !deleted.is_empty() {
        println!("Deleted Containers:");
        for id in &deleted {
            println!("{id}");
        }
        println!();
    }
    println!("Total reclaimed space: {}", human_size4(reclaimed));
    Ok(())
}

/// The containers that use image `id` (`sha256:…`).
pub fn users_of(containers: &Containers, id: &str) -> anyhow::Result<Vec<ContainerRecord>> {
    Ok(containers
        .list()?
        .into_iter()
        .filter(|r| r.image_id == id)
        .collect())
}
