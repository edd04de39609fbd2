//! `kiln save`: write images to a docker-archive (which also carries an OCI
//! layout) or a plain OCI layout archive.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use kiln_exporter::{ImageSelector, SaveFormat};

use super::Context;
use crate::progress::{Action, Bars};
use crate::render::DockerError;

#[derive(Args, Debug)]
#[command(about = "Save one or more images to a tar archive (streamed to STDOUT by default)")]
pub struct SaveArgs {
    /// Write to a file, instead of STDOUT
    #[arg(short = 'o', long = "output", value_name = "string")]
    output: Option<PathBuf>,
    /// Archive format: "docker" (docker-archive with an OCI layout inside) or "oci"
    #[arg(long, value_name = "string", default_value = "docker")]
    format: Format,
    /// Images to save (name[:tag], id or id prefix)
    #[arg(value_name = "IMAGE", required = true)]
    images: Vec<String>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Format {
    Docker,
    Oci,
}

pub fn run(ctx: &Context, a: SaveArgs) -> anyhow::Result<()> {
    let store = ctx.store()?;
    // Fail on unknown names before creating any file, with Docker's message.
    for name in &a.images {
        super::resolve(&store, name)?;
    }
    let selectors: Vec<ImageSelector> = a
        .images
        .iter()
        .map(|n| ImageSelector::Query(n.clone()))
        .collect();
    let format = match a.format {
        Format::Docker => SaveFormat::Docker,
        Format::Oci => SaveFormat::Oci,
    };
    let mut bars = Bars::stderr(Action::Save, true);
    match &a.output {
        None => {
            let stdout = std::io::stdout();
            if stdout.is_terminal() {
                return Err(DockerError(
                    "cowardly refusing to save to a terminal. Use the -o flag or redirect".into(),
                )
                .into());
            }
            let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
            kiln_exporter::save(&store, &selectors, &mut out, format, |p| bars.event(p))?;
            out.flush()
                .context("failed to write the archive to standard output")?;
        }
        Some(path) => {
            // Write next to the destination and rename, so a failed save
            // never leaves a truncated archive under the requested name.
            let dir = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(std::path::Path::new("."));
            let tmp = tempfile::Builder::new()
                .prefix(".kiln-save-")
                .tempfile_in(dir)
                .with_context(|| format!("failed to create a file in {}", dir.display()))?;
            crate::signals::remove_on_stop(tmp.path());
            let mut out = std::io::BufWriter::with_capacity(1 << 20, tmp.as_file());
            kiln_exporter::save(&store, &selectors, &mut out, format, |p| bars.event(p))?;
            out.flush()
                .with_context(|| format!("failed to write {}", path.display()))?;
            drop(out);
            tmp.as_file()
                .sync_all()
                .with_context(|| format!("failed to write {}", path.display()))?;
            let tmp_path = tmp.path().to_owned();
            tmp.persist(path)
                .with_context(|| format!("failed to write {}", path.display()))?;
            crate::signals::forget_on_stop(&tmp_path);
        }
    }
    bars.finish();
    Ok(())
}
