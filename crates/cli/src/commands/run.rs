//! `kiln run` and the hidden `kiln __shim`, the detached supervisor of a
//! container.
//!
//! A foreground run supervises the container in-process: output streams
//! to the terminal (and to the log), Ctrl-C and SIGTERM are forwarded to
//! the container, and kiln exits with the container's exit code. `-d`
//! starts `kiln __shim ID` in a new session (it outlives kiln), waits until
//! the process started (or failed to), and prints the id.
//!
//! Exit codes follow Docker: the container's, or 125 when kiln itself
//! failed, 126 when the command cannot be invoked, 127 when it is not
//! found.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Args;
use kiln_oci::Reference;
use kiln_runtime::container::{
    Attach, ContainerRecord, Containers, MountKind, MountRecord, NewContainer, PortMapping, State,
    Status, names, supervise,
};
use kiln_runtime::{Network, Resources, Stream};
use kiln_store::{ImageRecord, Store, chain_ids};

use super::Context;
use crate::render::{DockerError, ExitStatus};

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Run container in background and print container ID
    #[arg(short = 'd', long = "detach")]
    detach: bool,
    /// Overwrite the default ENTRYPOINT of the image
    #[arg(long = "entrypoint", value_name = "string")]
    entrypoint: Option<String>,
    /// Set environment variables
    #[arg(short = 'e', long = "env", value_name = "list")]
    env: Vec<String>,
    /// Read in a file of environment variables
    #[arg(long = "env-file", value_name = "list")]
    env_file: Vec<PathBuf>,
    /// Container host name
    #[arg(long = "hostname", value_name = "string")]
    hostname: Option<String>,
    /// Keep STDIN open even if not attached
    #[arg(short = 'i', long = "interactive")]
    interactive: bool,
    /// Memory limit (e.g. 512m, 1g)
    #[arg(short = 'm', long = "memory", value_name = "bytes")]
    memory: Option<String>,
    /// Number of CPUs
    #[arg(long = "cpus", value_name = "decimal")]
    cpus: Option<f64>,
    /// Tune container pids limit (set -1 for unlimited)
    #[arg(long = "pids-limit", value_name = "int", allow_hyphen_values = true)]
    pids_limit: Option<i64>,
    /// Attach a filesystem mount to the container (type=bind|volume,source=…,target=…[,readonly])
    #[arg(long = "mount", value_name = "mount")]
    mount: Vec<String>,
    /// Assign a name to the container
    #[arg(long = "name", value_name = "string")]
    name: Option<String>,
    /// Connect a container to a network: default (its own network namespace
    /// with outbound access; also "bridge"), none (only loopback) or host
    #[arg(
        long = "network",
        alias = "net",
        value_name = "network",
        default_value = "default"
    )]
    network: String,
    /// Publish a container's port to the host ([IP:]HOSTPORT:CONTAINERPORT[/tcp]; IP defaults to 127.0.0.1)
    #[arg(short = 'p', long = "publish", value_name = "list")]
    publish: Vec<String>,
    /// Mount the container's root filesystem as read only
    #[arg(long = "read-only")]
    read_only: bool,
    /// Automatically remove the container and its anonymous volumes when it exits
    #[arg(long = "rm")]
    rm: bool,
    /// Allocate a pseudo-TTY
    #[arg(short = 't', long = "tty")]
    tty: bool,
    /// Username or UID (format: <name|uid>[:<group|gid>])
    #[arg(short = 'u', long = "user", value_name = "string")]
    user: Option<String>,
    /// Bind mount a volume (/host:/ctr[:ro], name:/ctr[:ro] or /ctr for an anonymous volume)
    #[arg(short = 'v', long = "volume", value_name = "list")]
    volume: Vec<String>,
    /// Working directory inside the container
    #[arg(short = 'w', long = "workdir", value_name = "string")]
    workdir: Option<String>,
    /// The image to run
    #[arg(value_name = "IMAGE")]
    image: String,
    /// The command and its arguments
    #[arg(
        value_name = "COMMAND",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    command: Vec<String>,
}

#[derive(Args, Debug)]
pub struct ShimArgs {
    /// The container to supervise
    id: String,
}

/// The containers of the store.
pub fn containers(ctx: &Context) -> anyhow::Result<Containers> {
    let root = ctx.root_dir()?;
    Ok(Containers::open(&root)?.with_runtime(ctx.oci_runtime()?))
}

/// Prints an error as `kiln: …` and turns it into exit code 125.
fn fail(e: anyhow::Error) -> anyhow::Error {
    if e.downcast_ref::<ExitStatus>().is_some() {
        return e;
    }
    let msg = match e.downcast_ref::<DockerError>() {
        Some(d) => d.to_string(),
        None => format!("{e:#}"),
    };
    eprintln!("kiln: {msg}");
    ExitStatus(125).into()
}

pub fn run(ctx: &Context, a: RunArgs) -> anyhow::Result<()> {
    if a.tty && !a.detach && !std::io::stdin().is_terminal() {
        // Docker's wording and status.
        eprintln!("kiln: the input device is not a TTY");
        return Err(ExitStatus(1).into());
    }
    let runtime = tokio::runtime::Runtime::new().context("failed to start the async runtime")?;
    let (containers, record, detach, attach) = match prepare(ctx, &a, &runtime) {
        Ok(v) => v,
        Err(e) => return Err(fail(e)),
    };
    if detach {
        return start_detached(ctx, &containers, &record, true).map_err(fail);
    }
    runtime.block_on(foreground(&containers, &record, attach))
}

type Prepared = (Containers, ContainerRecord, bool, Attach);

fn prepare(ctx: &Context, a: &RunArgs, rt: &tokio::runtime::Runtime) -> anyhow::Result<Prepared> {
    let Some(network) = Network::parse(&a.network) else {
        bail!(
            "network {:?} is not supported: use default, none or host",
            a.network
        );
    };
    let store = ctx.store()?;
    let containers = containers(ctx)?;
    let image = find_or_pull(&store, &a.image, rt)?;
    let docs = store.image_docs(&image)?;
    let cfg = &docs.config.config;
    let chains = chain_ids(&docs.config.rootfs.diff_ids);
    let mut lowers = Vec::new();
    for ((chain, layer), diff_id) in chains
        .iter()
        .zip(&docs.layers)
        .zip(&docs.config.rootfs.diff_ids)
    {
        lowers.push(store.prepare_snapshot(chain, layer, diff_id)?.fs);
    }
    lowers.reverse();

    let (entrypoint, cmd) = match &a.entrypoint {
        Some(e) if e.is_empty() => (Vec::new(), a.command.clone()),
        Some(e) => (vec![e.clone()], a.command.clone()),
        None => (
            cfg.entrypoint.clone().unwrap_or_default(),
            if a.command.is_empty() {
                cfg.cmd.clone().unwrap_or_default()
            } else {
                a.command.clone()
            },
        ),
    };
    if entrypoint.is_empty() && cmd.is_empty() {
        return Err(DockerError("No command specified".into()).into());
    }
    let mut env = cfg.env.clone();
    let mut extra = Vec::new();
    for file in &a.env_file {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("failed to read {}", file.display()))?;
        extra.extend(
            text.lines()
                .map(str::trim_start)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_owned),
        );
    }
    extra.extend(a.env.iter().cloned());
    for e in extra {
        let (key, value) = match e.split_once('=') {
            Some((k, v)) => (k.to_owned(), v.to_owned()),
            None => match std::env::var(&e) {
                Ok(v) => (e.clone(), v),
                Err(_) => continue,
            },
        };
        if key.is_empty() {
            return Err(DockerError(format!("invalid environment variable: {e}")).into());
        }
        env.retain(|x| x.split_once('=').map_or(x.as_str(), |(k, _)| k) != key);
        env.push(format!("{key}={value}"));
    }
    let working_dir = match &a.workdir {
        Some(w) if !w.starts_with('/') => {
            return Err(DockerError(format!(
                "the working directory '{w}' is invalid, it needs to be an absolute path"
            ))
            .into());
        }
        Some(w) => w.clone(),
        None if cfg.working_dir.is_empty() => "/".to_owned(),
        None => cfg.working_dir.clone(),
    };
    let mut mounts = Vec::new();
    for v in &a.volume {
        mounts.push(parse_volume(&containers, v)?);
    }
    for m in &a.mount {
        mounts.push(parse_mount(&containers, m)?);
    }
    // The image's VOLUMEs that no mount covers become anonymous volumes
    // (filled from the image on start, removed with `rm -v` and `--rm`).
    for path in cfg.volumes.keys() {
        let target = clean_path(path);
        if !mounts
            .iter()
            .any(|m| clean_path(&m.target.to_string_lossy()) == target)
        {
            mounts.push(parse_volume(&containers, &target)?);
        }
    }
    let mut ports = Vec::new();
    for p in &a.publish {
        ports.push(parse_port(p)?);
    }
    if network == Network::Host && !ports.is_empty() {
        eprintln!("WARNING: Published ports are discarded when using host network mode");
        ports.clear();
    }
    let mut resources = Resources::default();
    if let Some(m) = &a.memory {
        resources.memory = Some(parse_bytes(m)?);
    }
    if let Some(c) = a.cpus {
        if c <= 0.0 {
            bail!("invalid --cpus {c}: must be positive");
        }
        resources.cpu_quota = Some((c * 100_000.0).round() as i64);
        resources.cpu_period = Some(100_000);
    }
    if let Some(p) = a.pids_limit.filter(|p| *p > 0) {
        resources.pids = Some(p);
    }

    let id_placeholder = String::new();
    let record = ContainerRecord {
        id: id_placeholder,
        name: String::new(),
        image: a.image.clone(),
        image_id: image.id.to_string(),
        created: chrono::Utc::now(),
        lowers,
        entrypoint,
        cmd,
        env,
        working_dir,
        user: a.user.clone().unwrap_or_else(|| cfg.user.clone()),
        hostname: String::new(),
        network,
        ports,
        mounts,
        read_only: a.read_only,
        resources,
        auto_remove: a.rm,
        tty: a.tty,
        open_stdin: a.interactive,
        stop_signal: cfg.stop_signal.clone(),
        labels: cfg.labels.clone(),
        // Set by `create` from the chosen runtime.
        runtime: String::new(),
        state: State::default(),
    };
    let record = containers.create(NewContainer {
        name: a.name.clone(),
        record,
    })?;
    let hostname = a
        .hostname
        .clone()
        .unwrap_or_else(|| record.short_id().to_owned());
    let record = containers.update(&record.id, |r| r.hostname = hostname)?;
    let attach = Attach {
        stdin: a.interactive,
        tty: a.tty,
        detached: a.detach,
        output: None,
        own_process_group: !a.tty,
    };
    Ok((containers, record, a.detach, attach))
}

/// The image from the store, pulled when missing (Docker's wording).
fn find_or_pull(
    store: &Store,
    name: &str,
    rt: &tokio::runtime::Runtime,
) -> anyhow::Result<ImageRecord> {
    match store.resolve_held(name) {
        Ok(r) => return Ok(r),
        Err(
            kiln_store::Error::ImageNotFound { .. } | kiln_store::Error::ImageIdNotFound { .. },
        ) => {}
        Err(e) => return Err(e.into()),
    }
    let reference = Reference::parse_docker_ref(name)
        .with_context(|| format!("invalid reference format: {name:?}"))?;
    eprintln!(
        "Unable to find image '{}' locally",
        reference.familiar_string()
    );
    // The same configuration (mirrors, insecure registries, certs.d) as
    // every other command.
    let client = crate::config::registry_client()?;
    let pulled = rt.block_on(client.pull(
        store,
        &reference,
        &kiln_registry::PullOptions::default(),
        &|_| {},
    ))?;
    eprintln!("Digest: {}", pulled.digest);
    eprintln!(
        "Status: Downloaded newer image for {}",
        pulled.reference.familiar_string()
    );
    Ok(pulled.image)
}

/// An absolute container path with `.`, `..` and repeated or trailing
/// slashes resolved, for comparing mount points.
fn clean_path(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for p in path.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

/// `/host:/ctr[:ro|rw]`, `name:/ctr[:ro]` or `/ctr` (anonymous volume).
fn parse_volume(containers: &Containers, spec: &str) -> anyhow::Result<MountRecord> {
    let parts: Vec<&str> = spec.split(':').collect();
    let invalid = || DockerError(format!("invalid volume specification: '{spec}'"));
    let (src, dst, mode) = match parts.as_slice() {
        [dst] => (None, *dst, ""),
        [src, dst] if dst.starts_with('/') => (Some(*src), *dst, ""),
        [dst, mode] if matches!(*mode, "ro" | "rw") => (None, *dst, *mode),
        [src, dst, mode] => (Some(*src), *dst, *mode),
        _ => return Err(invalid().into()),
    };
    if !dst.starts_with('/') || !matches!(mode, "" | "ro" | "rw") {
        return Err(invalid().into());
    }
    let readonly = mode == "ro";
    Ok(match src {
        Some(s) if s.starts_with('/') => MountRecord {
            kind: MountKind::Bind,
            source: std::fs::canonicalize(s).map_err(|_| {
                DockerError(format!(
                    "invalid mount config: bind source path does not exist: {s}"
                ))
            })?,
            target: dst.into(),
            readonly,
            name: None,
            anonymous: false,
        },
        Some(name) => {
            if !names::valid_name(name) {
                return Err(invalid().into());
            }
            MountRecord {
                kind: MountKind::Volume,
                source: containers.volume_path(name),
                target: dst.into(),
                readonly,
                name: Some(name.to_owned()),
                anonymous: false,
            }
        }
        None => {
            let name = names::new_id()?;
            MountRecord {
                kind: MountKind::Volume,
                source: containers.volume_path(&name),
                target: dst.into(),
                readonly,
                name: Some(name),
                anonymous: true,
            }
        }
    })
}

/// `--mount type=bind|volume,source=…,target=…[,readonly]`.
fn parse_mount(containers: &Containers, spec: &str) -> anyhow::Result<MountRecord> {
    let mut kind = "volume";
    let (mut src, mut dst, mut ro) = (None, None, false);
    for field in spec.split(',') {
        let (k, v) = field.split_once('=').unwrap_or((field, ""));
        match k {
            "type" => kind = v,
            "source" | "src" => src = Some(v),
            "target" | "destination" | "dst" => dst = Some(v),
            "readonly" | "ro" => ro = v.is_empty() || v == "true" || v == "1",
            _ => return Err(DockerError(format!("unexpected key '{k}' in '{field}'")).into()),
        }
    }
    let dst = dst.ok_or_else(|| DockerError("target is required".into()))?;
    let mode = if ro { ":ro" } else { "" };
    let v = match (kind, src) {
        ("bind", Some(s)) if s.starts_with('/') => format!("{s}:{dst}{mode}"),
        ("volume", Some(s)) => format!("{s}:{dst}{mode}"),
        ("volume", None) => format!("{dst}{mode}"),
        _ => return Err(DockerError(format!("invalid mount: {spec}")).into()),
    };
    parse_volume(containers, &v)
}

/// `[IP:]HOST:CONTAINER[/tcp]`.
pub fn parse_port(spec: &str) -> anyhow::Result<PortMapping> {
    let invalid = || DockerError(format!("invalid publish spec: {spec}"));
    let (spec_ports, proto) = spec.split_once('/').unwrap_or((spec, "tcp"));
    if proto != "tcp" {
        return Err(DockerError(format!("only tcp ports can be published: {spec}")).into());
    }
    let parts: Vec<&str> = spec_ports.rsplitn(3, ':').collect();
    let (ip, host, ctr) = match parts.as_slice() {
        [ctr, host] => ("127.0.0.1", *host, *ctr),
        [ctr, host, ip] => (*ip, *host, *ctr),
        _ => return Err(invalid().into()),
    };
    let ip = ip.trim_start_matches('[').trim_end_matches(']');
    Ok(PortMapping {
        host_ip: if ip.is_empty() { "127.0.0.1" } else { ip }.to_owned(),
        host_port: host.parse().map_err(|_| invalid())?,
        container_port: ctr.parse().map_err(|_| invalid())?,
        proto: "tcp".to_owned(),
    })
}

/// `512m`, `1g`, `1024`… in bytes (binary units, as Docker).
fn parse_bytes(s: &str) -> anyhow::Result<i64> {
    let lower = s.trim().to_ascii_lowercase();
    let lower = lower.strip_suffix('b').unwrap_or(&lower);
    let (num, mult) = match lower.chars().last() {
        Some('k') => (&lower[..lower.len() - 1], 1i64 << 10),
        Some('m') => (&lower[..lower.len() - 1], 1 << 20),
        Some('g') => (&lower[..lower.len() - 1], 1 << 30),
        _ => (lower, 1),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| DockerError(format!("invalid size: '{s}'")))?;
    Ok((n * mult as f64) as i64)
}

/// Starts the supervisor in a new session and waits until the process
/// started or failed to. Prints the id (`print_id`) on success.
pub fn start_detached(
    ctx: &Context,
    containers: &Containers,
    record: &ContainerRecord,
    print_id: bool,
) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("cannot find the kiln executable")?;
    let root = std::path::absolute(ctx.root_dir()?)?;
    let dir = containers.dir(&record.id);
    let log = std::fs::File::create(dir.join("shim.log"))
        .with_context(|| format!("failed to create {}", dir.join("shim.log").display()))?;
    // Forget the previous run, so its end is not taken for this one's.
    let record = containers.update(&record.id, |r| {
        r.state.status = Status::Created;
        r.state.exit_code = None;
        r.state.error = None;
    })?;
    let before = record.state.started_at;
    let mut child = std::process::Command::new(exe)
        .arg("--root")
        .arg(&root)
        .arg("__shim")
        .arg(&record.id)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .context("failed to start the container supervisor")?;
    let start = Instant::now();
    loop {
        let r = match containers.load(&record.id) {
            Ok(r) => r,
            // Removed already (--rm after a quick exit).
            Err(kiln_runtime::Error::NoSuchContainer { .. }) => break,
            Err(e) => return Err(e.into()),
        };
        if let Some(err) = &r.state.error
            && r.state.shim_pid.is_none()
        {
            let code = r.state.exit_code.unwrap_or(125);
            eprintln!("kiln: failed to start container: {err}");
            return Err(ExitStatus(u8::try_from(code).unwrap_or(125)).into());
        }
        let started = r.state.started_at != before && r.state.started_at.is_some();
        if started || (r.state.status == Status::Exited && r.state.shim_pid.is_none()) {
            break;
        }
        if start.elapsed() > Duration::from_secs(60) {
            bail!("the container did not start within a minute");
        }
        if let Ok(Some(_)) = child.try_wait()
            && r.state.shim_pid.is_none()
            && r.state.status == Status::Created
            && start.elapsed() > Duration::from_secs(2)
        {
            let text = std::fs::read_to_string(dir.join("shim.log")).unwrap_or_default();
            bail!("the container supervisor failed: {}", text.trim());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if print_id {
        println!("{}", record.id);
    }
    Ok(())
}

async fn foreground(
    containers: &Containers,
    record: &ContainerRecord,
    mut attach: Attach,
) -> anyhow::Result<()> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<kiln_runtime::OutputChunk>(64);
    if !attach.tty {
        attach.output = Some(tx);
    } else {
        drop(tx);
    }
    let printer = tokio::spawn(async move {
        while let Some(chunk) = rx.recv().await {
            let _ = match chunk.stream {
                Stream::Stdout => {
                    let mut out = std::io::stdout().lock();
                    out.write_all(&chunk.data).and_then(|()| out.flush())
                }
                Stream::Stderr => {
                    let mut err = std::io::stderr().lock();
                    err.write_all(&chunk.data).and_then(|()| err.flush())
                }
            };
        }
    });
    let forwarder = {
        let containers = containers.clone();
        let id = record.id.clone();
        tokio::spawn(async move { forward_signals(&containers, &id).await })
    };
    let outcome = supervise(containers, &record.id, attach).await;
    forwarder.abort();
    let _ = printer.await;
    let outcome = outcome.map_err(|e| fail(e.into()))?;
    if let Some(err) = outcome.start_error {
        eprintln!("kiln: failed to start container: {err}");
    }
    if outcome.exit_code == 0 {
        return Ok(());
    }
    Err(ExitStatus(u8::try_from(outcome.exit_code).unwrap_or(255)).into())
}

/// Forwards SIGINT and SIGTERM to the container while it runs.
async fn forward_signals(containers: &Containers, id: &str) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return;
    };
    loop {
        let sig = tokio::select! {
            _ = int.recv() => "INT",
            _ = term.recv() => "TERM",
        };
        if let Err(e) = containers.kill(id, sig).await {
            tracing::debug!(error = %e, "cannot forward signal");
        }
    }
}

/// `kiln __shim ID`: supervises a detached container.
pub fn shim(ctx: &Context, a: ShimArgs) -> anyhow::Result<()> {
    // Leave kiln's session and terminal: the container outlives it.
    let _ = rustix::process::setsid();
    let containers = containers(ctx)?;
    let record = containers.load(&a.id)?;
    let attach = Attach {
        stdin: record.open_stdin,
        tty: record.tty,
        detached: true,
        ..Attach::default()
    };
    let runtime = tokio::runtime::Runtime::new().context("failed to start the async runtime")?;
    runtime.block_on(supervise(&containers, &a.id, attach))?;
    Ok(())
}

/// The table of labels for templates.
pub fn labels_string(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}
