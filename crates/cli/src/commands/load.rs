//! `kiln load`: read images from a docker-archive or OCI layout archive
//! (optionally gzip or zstd compressed).

use std::io::{BufReader, IsTerminal, Read};
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;

use super::Context;
use crate::progress::{Action, Bars};
use crate::render::DockerError;

#[derive(Args, Debug)]
#[command(about = "Load an image from a tar archive or STDIN")]
pub struct LoadArgs {
    /// Read from tar archive file (or an OCI layout or skopeo `dir:`
    /// directory), instead of STDIN
    #[arg(short = 'i', long = "input", value_name = "string")]
    input: Option<PathBuf>,
    /// Suppress the load output
    #[arg(short = 'q', long = "quiet")]
    quiet: bool,
}

pub fn run(ctx: &Context, a: LoadArgs) -> anyhow::Result<()> {
    let store = ctx.store()?;
    let mut bars = Bars::stderr(Action::Load, !a.quiet);
    let loaded = match &a.input {
        // An OCI layout or `dir:` layout as skopeo, umoci and podman write
        // them, without packing it into an archive first.
        Some(path) if path.is_dir() => {
            kiln_exporter::load_directory(&store, path, |p| bars.event(p))?
        }
        _ => kiln_exporter::load(&store, BufReader::with_capacity(1 << 20, input(&a)?), |p| {
            bars.event(p)
        })?,
    };
    bars.finish();
    if !a.quiet {
        for image in &loaded {
            if image.tags.is_empty() {
                println!("Loaded image ID: {}", image.id);
            }
            for tag in &image.tags {
                println!("Loaded image: {}", tag.familiar_string());
            }
        }
    }
    Ok(())
}

/// The archive to read: the `--input` file, else stdin.
fn input(a: &LoadArgs) -> anyhow::Result<Box<dyn Read>> {
    Ok(match &a.input {
        Some(path) => Box::new(
            std::fs::File::open(path)
                .with_context(|| format!("failed to open {}", path.display()))?,
        ),
        None => {
            if std::io::stdin().is_terminal() {
                return Err(
                    DockerError("requested load from stdin, but stdin is empty".into()).into(),
                );
            }
            Box::new(std::io::stdin().lock())
        }
    })
}
