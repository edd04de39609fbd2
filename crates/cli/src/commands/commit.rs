//! `kiln commit`: a container's changes (its overlay upper directory)
//! become a layer on top of its image, as `docker commit` does. The new
//! config is the container's (command, env, working directory, user as it
//! ran), with `-c` instructions applied; `-p` (the default) freezes a
//! running container while its changes are read.

use std::io::{Seek, Write};

use anyhow::Context as _;
use clap::{ArgAction, Args};
use kiln_exporter::{CommitOptions, LayerInput};
use kiln_oci::{Digest, Reference};
use kiln_store::{History, ImageId};

use super::Context;
use super::import::apply_changes_onto;
use super::run::containers;

#[derive(Args, Debug)]
pub struct CommitArgs {
    /// Author (e.g., "John Hannibal Smith <hannibal@a-team.com>")
    #[arg(short = 'a', long = "author", value_name = "string")]
    author: Option<String>,
    /// Apply Dockerfile instruction to the created image
    #[arg(short = 'c', long = "change", value_name = "list")]
    changes: Vec<String>,
    /// Commit message
    #[arg(short = 'm', long = "message", value_name = "string")]
    message: Option<String>,
    /// Pause container during commit
    #[arg(short = 'p', long = "pause", value_name = "bool", default_value = "true",
          num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set)]
    pause: bool,
    #[arg(value_name = "CONTAINER")]
    container: String,
    #[arg(value_name = "REPOSITORY[:TAG]")]
    reference: Option<String>,
}

pub fn run(ctx: &Context, a: CommitArgs) -> anyhow::Result<()> {
    let tags = match &a.reference {
        Some(r) => vec![
            Reference::parse_docker_ref(r).with_context(|| format!("invalid reference {r:?}"))?,
        ],
        None => Vec::new(),
    };
    let store = ctx.store()?;
    let containers = containers(ctx)?;
    let record = containers.find(&a.container)?;
    let image_id: Digest = record
        .image_id
        .parse()
        .with_context(|| format!("invalid image id {}", record.image_id))?;
    let image = store.image(&ImageId::from_config(image_id))?;
    let docs = store.image_docs(&image)?;

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let runc = containers.runc(&record);
    let paused = a.pause && record.is_running() && rt.block_on(runc.pause(&record.id)).is_ok();
    let upper = containers.dir(&record.id).join("upper");
    let mut tmp =
        tempfile::tempfile_in(store.ingest_dir()).context("failed to create a temp file")?;
    let summary = kiln_runtime::container::write_container_diff(&upper, &mut tmp, None);
    if paused && let Err(e) = rt.block_on(runc.resume(&record.id)) {
        eprintln!("warning: cannot resume the container: {e}");
    }
    let summary = summary.context("failed to read the container's changes")?;
    tmp.flush()?;
    tmp.rewind()?;

    let mut layers: Vec<LayerInput> = Vec::new();
    for ((digest, desc), diff_id) in docs
        .layers
        .iter()
        .zip(docs.manifest.layers())
        .zip(&docs.config.rootfs.diff_ids)
    {
        layers.push(if digest == diff_id {
            LayerInput::blob(diff_id.clone())
        } else {
            LayerInput::existing(
                diff_id.clone(),
                digest.clone(),
                desc.size(),
                desc.media_type().to_string(),
            )
        });
    }
    layers.push(LayerInput::reader(summary.diff_id.clone(), tmp));

    let mut config = docs.config.clone();
    let mut cc = config.config.clone();
    cc.entrypoint = (!record.entrypoint.is_empty()).then(|| record.entrypoint.clone());
    cc.cmd = (!record.cmd.is_empty()).then(|| record.cmd.clone());
    cc.env = record.env.clone();
    cc.working_dir = if record.working_dir == "/" {
        cc.working_dir
    } else {
        record.working_dir.clone()
    };
    cc.user = record.user.clone();
    config.config = apply_changes_onto(cc, &a.changes)?;
    config.created = None;
    config.author = a.author.clone();
    config.comment = a.message.clone().filter(|m| !m.is_empty());
    if config.history.is_empty() {
        // Base images without history: one entry per layer so the counts match.
        config.history = docs
            .config
            .rootfs
            .diff_ids
            .iter()
            .map(|_| History::default())
            .collect();
    }
    config.history.push(History {
        created: Some(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)),
        author: a.author.clone(),
        created_by: Some(record.cmd.join(" ")),
        comment: a.message.clone().filter(|m| !m.is_empty()),
        empty_layer: false,
    });
    let opts = CommitOptions {
        compression: kiln_exporter::Compression::Uncompressed,
        tags,
        ..CommitOptions::default()
    };
    let committed = kiln_exporter::commit_image(&store, &layers, config, &opts)?;
    println!("{}", committed.id);
    Ok(())
}
