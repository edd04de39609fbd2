//! `kiln push NAME[:TAG]`: upload an image to a registry, with Docker's
//! output:
//!
//! ```text
//! The push refers to repository [localhost:5000/app]
//! 5f70bf18a086: Pushed
//! 1: digest: sha256:… size: 527
//! ```

use std::sync::Mutex;

use clap::Args;
use kiln_oci::Reference;
use kiln_registry::{PushEvent, PushProgress};

use super::Context;
use super::pull::{LayerLines, parse_name, registry_error, runtime, short_id};
use crate::render::DockerError;

#[derive(Args, Debug)]
#[command(about = "Upload an image to a registry")]
pub struct PushArgs {
    /// Push all tags of an image to the repository
    #[arg(short = 'a', long = "all-tags")]
    all_tags: bool,
    /// Suppress verbose output
    #[arg(short = 'q', long = "quiet")]
    quiet: bool,
    /// The image to push
    #[arg(value_name = "NAME[:TAG]")]
    name: String,
}

pub fn run(ctx: &Context, a: PushArgs) -> anyhow::Result<()> {
    let named = parse_name(&a.name)?;
    if named.digest().is_some() {
        return Err(DockerError(format!(
            "cannot push a digest reference: {}",
            named.familiar_string()
        ))
        .into());
    }
    if a.all_tags && !named.is_name_only() {
        return Err(DockerError("tag can't be used with --all-tags/-a".into()).into());
    }
    let say = |line: &str| {
        if !a.quiet {
            println!("{line}");
        }
    };
    let store = ctx.store()?;
    let references: Vec<Reference> = if a.all_tags {
        let mut tags: Vec<Reference> = store
            .images()?
            .into_iter()
            .flat_map(|r| r.tags)
            .filter(|t| t.name() == named.name())
            .collect();
        tags.sort_by(|x, y| x.tag().cmp(&y.tag()));
        if tags.is_empty() {
            return Err(DockerError(format!(
                "An image does not exist locally with the tag: {}",
                named.familiar_name()
            ))
            .into());
        }
        tags
    } else {
        if named.is_name_only() {
            say("Using default tag: latest");
        }
        vec![named.with_default_tag()]
    };
    let client = crate::config::registry_client()?;
    let concurrency = client.config().upload_concurrency.max(1);
    let runtime = runtime()?;
    say(&format!(
        "The push refers to repository [{}]",
        named.name_only()
    ));
    for reference in &references {
        let lines = Mutex::new(LayerLines::stdout(!a.quiet, concurrency));
        let result = runtime.block_on(client.push(&store, reference, &|event| {
            push_event(&mut lines.lock().unwrap_or_else(|p| p.into_inner()), &event)
        }));
        lines
            .into_inner()
            .unwrap_or_else(|p| p.into_inner())
            .finish();
        let result = result.map_err(|e| registry_error(e, &reference.familiar_string()))?;
        say(&result.to_string());
    }
    if a.quiet {
        if a.all_tags {
            println!("{}", named.name());
        } else {
            println!("{}", references[0]);
        }
    }
    Ok(())
}

fn push_event(lines: &mut LayerLines, event: &PushEvent) {
    let id = short_id(&event.layer);
    if event.progress != PushProgress::Preparing {
        lines.start();
    }
    match &event.progress {
        PushProgress::Preparing => lines.announce(&id, "Preparing"),
        PushProgress::Pushing { current, total } => {
            lines.progress(&id, "Pushing", *current, *total)
        }
        PushProgress::Pushed => lines.status(&id, "Pushed"),
        PushProgress::LayerAlreadyExists => lines.status(&id, "Layer already exists"),
        PushProgress::Mounted { from } => lines.status(&id, &format!("Mounted from {from}")),
    }
}
