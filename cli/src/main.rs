//! The `kiln` binary: parses arguments, calls one library function per
//! command, prints the result. Exit codes are documented in README.md.

mod commands;
mod help;
mod render;

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

    /// Print version information and quit
    #[arg(short = 'v', long = "version", action = clap::ArgAction::Version)]
    version: Option<bool>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Inspect how kiln reads a Dockerfile
    #[command(subcommand)]
    Debug(commands::debug::DebugCommand),
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
    let result = match cli.command {
        Command::Debug(cmd) => commands::debug::run(cmd),
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
