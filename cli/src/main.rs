//! The `kiln` binary: parses arguments, calls one library function per
//! command, prints the result. Exit codes are documented in README.md.

mod buildprogress;
mod commands;
mod format;
mod help;
mod progress;
mod render;
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
    /// Remove one or more images
    Rmi(commands::rmi::RmiArgs),
    /// Save one or more images to a tar archive (streamed to STDOUT by default)
    Save(commands::save::SaveArgs),
    /// Manage kiln
    #[command(subcommand)]
    System(commands::SystemCommand),
    /// Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE
    Tag(commands::tag::TagArgs),
    /// Show the kiln version information
    Version,
}

fn main() -> ExitCode {
    let cmd = help::dockerize(<Cli as clap::CommandFactory>::command());
    let matches = help::get_matches(cmd);
    let cli = match <Cli as clap::FromArgMatches>::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    init_logging(if cli.debug { "debug" } else { &cli.log_level });
    let ctx = commands::Context { root: cli.root };
    let result = match cli.command {
        Command::Build(a) => commands::build::run(&ctx, *a),
        Command::Debug(cmd) => commands::debug::run(&ctx, cmd),
        Command::History(a) => commands::history::run(&ctx, a),
        Command::Image(cmd) => commands::run_image(&ctx, cmd),
        Command::Images(a) => commands::images::run(&ctx, a),
        Command::Import(a) => commands::import::run(&ctx, a),
        Command::Inspect(a) => commands::inspect::run(&ctx, a),
        Command::Load(a) => commands::load::run(&ctx, a),
        Command::Rmi(a) => commands::rmi::run(&ctx, a),
        Command::Save(a) => commands::save::run(&ctx, a),
        Command::System(cmd) => commands::run_system(&ctx, cmd),
        Command::Tag(a) => commands::tag::run(&ctx, a),
        Command::Version => {
            println!("kiln version {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => render::report(&e),
    }
}

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("KILN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("kiln={level},{level}")));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .without_time()
        .init();
}
