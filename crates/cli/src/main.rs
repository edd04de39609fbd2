//! The `kiln` binary: parses arguments, calls one library function per
//! command, prints the result. Exit codes are documented in README.md.
// Doc comments on the argument structs are clap's help text, written for
// the terminal (`IMAGE[:tag]`, `<id>`), not rustdoc markup.
#![allow(rustdoc::broken_intra_doc_links, rustdoc::invalid_html_tags)]

mod buildprogress;
mod commands;
mod config;
mod format;
mod help;
mod progress;
mod render;
mod signals;
mod template;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// A Dockerfile build engine and image tool, without a daemon.
#[derive(Parser, Debug)]
#[command(
    name = "kiln",
    version,
    about = "A Dockerfile build engine and image tool, without a daemon"
)]
#[command(disable_help_subcommand = true, disable_version_flag = true)]
struct Cli {
    /// Set the logging level ("trace", "debug", "info", "warn", "error")
    #[arg(
        short = 'l',
        long = "log-level",
        value_name = "string",
        default_value = "warn"
    )]
    log_level: String,

    /// Enable debug mode
    #[arg(short = 'D', long = "debug")]
    debug: bool,

    /// Location of the image store, also KILN_ROOT (default "/var/lib/kiln"
    /// for root, "$XDG_DATA_HOME/kiln" or "~/.local/share/kiln" otherwise)
    #[arg(
        long = "root",
        value_name = "string",
        env = "KILN_ROOT",
        hide_env = true
    )]
    root: Option<PathBuf>,

    /// OCI runtime for containers and RUN steps, also KILN_RUNTIME:
    /// "embedded" (default; built in), "runc" or the path of a
    /// runc-compatible binary
    #[arg(
        long = "runtime",
        value_name = "string",
        env = "KILN_RUNTIME",
        hide_env = true,
        global = true
    )]
    runtime: Option<String>,

    /// Print version information and quit
    #[arg(short = 'v', long = "version", action = clap::ArgAction::Version)]
    version: Option<bool>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Build an image from a Dockerfile
    Build(Box<commands::build::BuildArgs>),
    /// Manage the build cache
    #[command(subcommand)]
    Builder(commands::builder::BuilderCommand),
    /// Create a new image from a container's changes
    Commit(commands::commit::CommitArgs),
    /// Manage containers
    #[command(subcommand)]
    Container(commands::container::ContainerCommand),
    /// Kill one or more running containers
    Kill(commands::container::KillArgs),
    /// Fetch the logs of a container
    Logs(commands::container::LogsArgs),
    /// List containers
    Ps(commands::container::PsArgs),
    /// Remove one or more containers
    Rm(commands::container::RmArgs),
    /// Create and run a new container from an image
    Run(Box<commands::run::RunArgs>),
    /// Start one or more stopped containers
    Start(commands::container::StartArgs),
    /// Stop one or more running containers
    Stop(commands::container::StopArgs),
    /// Block until one or more containers stop, then print their exit codes
    Wait(commands::container::WaitArgs),
    /// The detached supervisor of a container (internal)
    #[command(name = "__shim", hide = true)]
    Shim(commands::run::ShimArgs),
    /// Inspect how kiln reads a Dockerfile
    #[command(subcommand)]
    Debug(commands::debug::DebugCommand),
    /// Show the history of an image
    History(commands::history::HistoryArgs),
    /// Manage images
    #[command(subcommand)]
    Image(commands::ImageCommand),
    /// List images
    Images(commands::images::ImagesArgs),
    /// Import the contents from a tarball to create a filesystem image
    Import(commands::import::ImportArgs),
    /// Return low-level information on images
    Inspect(commands::inspect::InspectArgs),
    /// Load an image from a tar archive or STDIN
    Load(commands::load::LoadArgs),
    /// Authenticate to a registry
    Login(commands::login::LoginArgs),
    /// Log out from a registry
    Logout(commands::login::LogoutArgs),
    /// Download an image from a registry
    Pull(commands::pull::PullArgs),
    /// Upload an image to a registry
    Push(commands::push::PushArgs),
    /// Remove one or more images
    Rmi(commands::rmi::RmiArgs),
    /// Save one or more images to a tar archive (streamed to STDOUT by default)
    Save(commands::save::SaveArgs),
    /// Search Docker Hub for images
    Search(commands::search::SearchArgs),
    /// Manage kiln
    #[command(subcommand)]
    System(commands::SystemCommand),
    /// Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE
    Tag(commands::tag::TagArgs),
    /// Show the kiln version information
    Version,
}

fn main() -> ExitCode {
    // The embedded runtime's helper (`kiln __oci …`): it forks, so it runs
    // before anything starts a thread.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args
        .get(1)
        .is_some_and(|a| a == kiln_runtime::embedded::HELPER_SUBCOMMAND)
    {
        init_helper_logging();
        let code = kiln_runtime::embedded::main(&args[2..]);
        return ExitCode::from(u8::try_from(code).unwrap_or(255));
    }
    let cmd = help::dockerize(<Cli as clap::CommandFactory>::command());
    let matches = help::get_matches(cmd);
    let cli = match <Cli as clap::FromArgMatches>::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    init_logging(if cli.debug { "debug" } else { &cli.log_level });
    let ctx = commands::Context {
        root: cli.root,
        runtime: cli.runtime,
    };
    if exits_on_stop(&cli.command) {
        signals::exit_on_stop();
    }
    let result = match cli.command {
        Command::Build(a) => commands::build::run(&ctx, *a),
        Command::Builder(cmd) => commands::builder::run(&ctx, cmd),
        Command::Commit(a) => commands::commit::run(&ctx, a),
        Command::Container(cmd) => commands::container::run_container(&ctx, cmd),
        Command::Kill(a) => commands::container::kill(&ctx, a),
        Command::Logs(a) => commands::container::logs(&ctx, a),
        Command::Ps(a) => commands::container::ps(&ctx, a),
        Command::Rm(a) => commands::container::rm(&ctx, a),
        Command::Run(a) => commands::run::run(&ctx, *a),
        Command::Start(a) => commands::container::start(&ctx, a),
        Command::Stop(a) => commands::container::stop(&ctx, a),
        Command::Wait(a) => commands::container::wait(&ctx, a),
        Command::Shim(a) => commands::run::shim(&ctx, a),
        Command::Debug(cmd) => commands::debug::run(&ctx, cmd),
        Command::History(a) => commands::history::run(&ctx, a),
        Command::Image(cmd) => commands::run_image(&ctx, cmd),
        Command::Images(a) => commands::images::run(&ctx, a),
        Command::Import(a) => commands::import::run(&ctx, a),
        Command::Inspect(a) => commands::inspect::run(&ctx, a),
        Command::Load(a) => commands::load::run(&ctx, a),
        Command::Login(a) => commands::login::login(&ctx, a),
        Command::Logout(a) => commands::login::logout(&ctx, a),
        Command::Pull(a) => commands::pull::run(&ctx, a),
        Command::Push(a) => commands::push::run(&ctx, a),
        Command::Rmi(a) => commands::rmi::run(&ctx, a),
        Command::Save(a) => commands::save::run(&ctx, a),
        Command::Search(a) => commands::search::run(&ctx, a),
        Command::System(cmd) => commands::run_system(&ctx, cmd),
        Command::Tag(a) => commands::tag::run(&ctx, a),
        Command::Version => {
            println!("kiln version {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
    };
    // Stopped by a signal: the failure is the stop handler removing the
    // command's files; it exits with the signal's status.
    if result.is_err() && signals::stopping() {
        loop {
            std::thread::park();
        }
    }
    // Temporary files and mounts of this process go with it.
    kiln_store::release_leases();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => render::report(&e),
    }
}

/// Commands whose work is all in the store and in files: a stop signal
/// removes their temporary files and exits (see [`signals::exit_on_stop`]).
/// `build` cancels its steps itself; `run` keeps Docker's attach semantics.
fn exits_on_stop(command: &Command) -> bool {
    use commands::ImageCommand as I;
    matches!(
        command,
        Command::Pull(_)
            | Command::Push(_)
            | Command::Load(_)
            | Command::Save(_)
            | Command::Import(_)
            | Command::Commit(_)
            | Command::Image(I::Load(_) | I::Save(_) | I::Import(_))
    )
}

/// `KILN_OCI_LOG=FILE`: the embedded runtime's helper (and libcontainer
/// under it) appends its trace-level log to FILE, with wall-clock times
/// (to line up with the container's steps). For debugging only.
fn init_helper_logging() {
    let Some(path) = std::env::var_os("KILN_OCI_LOG") else {
        return;
    };
    let Ok(file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    else {
        return;
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("trace"))
        .with_writer(std::sync::Mutex::new(file))
        .with_ansi(false)
        .init();
}

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("KILN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("kiln={level},{level}")));
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // Times since start only when debugging with KILN_LOG (where they
    // show where a build spends its time).
    if std::env::var_os("KILN_LOG").is_some() {
        fmt.with_timer(tracing_subscriber::fmt::time::uptime())
            .init();
    } else {
        fmt.without_time().init();
    }
}
