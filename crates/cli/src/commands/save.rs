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
            // Write an unnamed file next to the destination and give it
            // the name at the end, so a failed or killed save never leaves
            // a truncated archive (or a temporary file) behind.
            let dir = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(std::path::Path::new("."));
            let file = PendingFile::create(dir)
                .with_context(|| format!("failed to create a file in {}", dir.display()))?;
            let mut out = std::io::BufWriter::with_capacity(1 << 20, &file.file);
            kiln_exporter::save(&store, &selectors, &mut out, format, |p| bars.event(p))?;
            out.flush()
                .with_context(|| format!("failed to write {}", path.display()))?;
            drop(out);
            file.persist(path)
                .with_context(|| format!("failed to write {}", path.display()))?;
        }
    }
    bars.finish();
    Ok(())
}

/// A file being written that gets its name only when complete: an
/// `O_TMPFILE` file (nothing to clean up when the process is killed), or,
/// where the filesystem has no `O_TMPFILE`, a named temporary file that is
/// removed on failure and on a stop signal.
struct PendingFile {
    file: std::fs::File,
    named: Option<tempfile::TempPath>,
    dir: std::path::PathBuf,
}

impl PendingFile {
    fn create(dir: &std::path::Path) -> std::io::Result<PendingFile> {
        use rustix::fs::{Mode, OFlags};
        match rustix::fs::open(
            dir,
            OFlags::TMPFILE | OFlags::WRONLY | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o644),
        ) {
            Ok(fd) => Ok(PendingFile {
                file: std::fs::File::from(fd),
                named: None,
                dir: dir.to_owned(),
            }),
            Err(_) => {
                let tmp = tempfile::Builder::new()
                    .prefix(".kiln-save-")
                    .tempfile_in(dir)?;
                crate::signals::remove_on_stop(tmp.path());
                let (file, path) = tmp.into_parts();
                Ok(PendingFile {
                    file,
                    named: Some(path),
                    dir: dir.to_owned(),
                })
            }
        }
    }

    /// Syncs the file and gives it the name `path` (replacing a file there).
    fn persist(self, path: &std::path::Path) -> std::io::Result<()> {
        self.file.sync_all()?;
        match self.named {
            Some(tmp) => {
                let tmp_path = tmp.to_path_buf();
                tmp.persist(path).map_err(|e| e.error)?;
                crate::signals::forget_on_stop(&tmp_path);
            }
            None => {
                use std::os::fd::AsRawFd;
                let proc_path = format!("/proc/self/fd/{}", self.file.as_raw_fd());
                let link = |to: &std::path::Path| {
                    rustix::fs::linkat(
                        rustix::fs::CWD,
                        proc_path.as_str(),
                        rustix::fs::CWD,
                        to,
                        rustix::fs::AtFlags::SYMLINK_FOLLOW,
                    )
                };
                match link(path) {
                    Ok(()) => {}
                    // Replacing a file: link under a temporary name (removed
                    // on a stop signal), then rename over it.
                    Err(rustix::io::Errno::EXIST) => {
                        let name = self.dir.join(format!(
                            ".kiln-save-{}-{}",
                            std::process::id(),
                            self.file.as_raw_fd()
                        ));
                        crate::signals::remove_on_stop(&name);
                        let renamed = link(&name)
                            .map_err(std::io::Error::from)
                            .and_then(|()| std::fs::rename(&name, path));
                        if renamed.is_err() {
                            let _ = std::fs::remove_file(&name);
                        }
                        crate::signals::forget_on_stop(&name);
                        renamed?;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        if let Ok(dir) = std::fs::File::open(&self.dir) {
            let _ = dir.sync_all();
        }
        Ok(())
    }
}
