//! One module per command; this one holds what they share: the store
//! location and the `image`/`system` command groups.

pub mod build;
pub mod builder;
pub mod commit;
pub mod container;
pub mod debug;
pub mod history;
pub mod images;
pub mod import;
pub mod inspect;
pub mod load;
pub mod login;
pub mod prune;
pub mod pull;
pub mod push;
pub mod rmi;
pub mod run;
pub mod save;
pub mod search;
pub mod system;
pub mod tag;

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Subcommand;
use kiln_store::{Error as StoreError, ImageError, ImageRecord, Store};

use crate::render::DockerError;

/// What every command may need besides its own arguments.
#[derive(Debug)]
pub struct Context {
    /// `--root` / `KILN_ROOT`.
    pub root: Option<PathBuf>,
    /// `--runtime` / `KILN_RUNTIME`.
    pub runtime: Option<String>,
}

impl Context {
    /// The OCI runtime for new containers and builds: `--runtime` (or
    /// `KILN_RUNTIME`), else the configuration file's `runtime`, else the
    /// embedded one (this executable re-executed as `kiln __oci`).
    pub fn oci_runtime(&self) -> anyhow::Result<kiln_runtime::OciRuntime> {
        let name = match &self.runtime {
            Some(name) => Some(name.clone()),
            None => crate::config::Config::load()?.runtime,
        };
        let embedded = kiln_runtime::OciRuntime::embedded_self();
        Ok(match name {
            Some(name) if name.is_empty() => anyhow::bail!("--runtime must not be empty"),
            Some(name) => kiln_runtime::OciRuntime::from_name(&name, &embedded),
            None => embedded,
        })
    }

    /// The store directory: `--root`, else `/var/lib/kiln` for root, else
    /// `$XDG_DATA_HOME/kiln`, else `~/.local/share/kiln`.
    pub fn root_dir(&self) -> anyhow::Result<PathBuf> {
        if let Some(root) = &self.root {
            return Ok(root.clone());
        }
        if kiln_store::is_root() {
            return Ok(PathBuf::from("/var/lib/kiln"));
        }
        if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").map(PathBuf::from)
            && xdg.is_absolute()
        {
            return Ok(xdg.join("kiln"));
        }
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .filter(|h| h.is_absolute())
            .context("cannot find the store: HOME is not set; use --root or KILN_ROOT")?;
        Ok(home.join(".local/share/kiln"))
    }

    /// Opens (creating if needed) the store, mending what killed kiln
    /// processes left in it (their temporary files, mounts and build
    /// steps).
    pub fn store(&self) -> anyhow::Result<Store> {
        let root = self.root_dir()?;
        let store = Store::open(&root)
            .with_context(|| format!("failed to open the store at {}", root.display()))?;
        kiln_engine::reap_stale(&store);
        Ok(store)
    }
}

/// Finds an image by name, full id or unique id prefix; a miss is Docker's
/// `No such image: NAME`.
pub fn resolve(store: &Store, query: &str) -> anyhow::Result<ImageRecord> {
    store
        .resolve(query)
        .map_err(|e| docker_error(e.into(), query))
}

/// Turns "not found" store errors into Docker's message about `query`.
pub fn docker_error(e: ImageError, query: &str) -> anyhow::Error {
    match e {
        ImageError::Store(
            StoreError::ImageNotFound { .. } | StoreError::ImageIdNotFound { .. },
        ) => DockerError(format!("No such image: {query}")).into(),
        other => other.into(),
    }
}

#[derive(Subcommand, Debug)]
pub enum ImageCommand {
    /// Show the history of an image
    History(history::HistoryArgs),
    /// Import the contents from a tarball to create a filesystem image
    Import(import::ImportArgs),
    /// Display detailed information on one or more images
    Inspect(inspect::InspectArgs),
    /// Load an image from a tar archive or STDIN
    Load(load::LoadArgs),
    /// List images
    #[command(visible_alias = "list")]
    Ls(images::ImagesArgs),
    /// Remove unused images
    Prune(prune::PruneArgs),
    /// Remove one or more images
    #[command(visible_alias = "remove")]
    Rm(rmi::RmiArgs),
    /// Save one or more images to a tar archive (streamed to STDOUT by default)
    Save(save::SaveArgs),
    /// Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE
    Tag(tag::TagArgs),
}

pub fn run_image(ctx: &Context, cmd: ImageCommand) -> anyhow::Result<()> {
    match cmd {
        ImageCommand::History(a) => history::run(ctx, a),
        ImageCommand::Import(a) => import::run(ctx, a),
        ImageCommand::Inspect(a) => inspect::run(ctx, a),
        ImageCommand::Load(a) => load::run(ctx, a),
        ImageCommand::Ls(a) => images::run(ctx, a),
        ImageCommand::Prune(a) => prune::run(ctx, a),
        ImageCommand::Rm(a) => rmi::run(ctx, a),
        ImageCommand::Save(a) => save::run(ctx, a),
        ImageCommand::Tag(a) => tag::run(ctx, a),
    }
}

#[derive(Subcommand, Debug)]
pub enum SystemCommand {
    /// Check the store for corrupt or missing content, and repair it
    Check(system::CheckArgs),
    /// Show kiln disk usage
    Df(system::DfArgs),
}

pub fn run_system(ctx: &Context, cmd: SystemCommand) -> anyhow::Result<()> {
    match cmd {
        SystemCommand::Check(a) => system::check(ctx, a),
        SystemCommand::Df(a) => system::df(ctx, a),
    }
}

/// Ids (`sha256:…`) of the images containers use, running or not.
pub fn images_in_use(ctx: &Context) -> anyhow::Result<std::collections::BTreeSet<String>> {
    let root = ctx.root_dir()?;
    if !root.join("containers").exists() {
        return Ok(Default::default());
    }
    let containers = kiln_runtime::container::Containers::open(&root)?;
    Ok(containers.list()?.into_iter().map(|c| c.image_id).collect())
}
