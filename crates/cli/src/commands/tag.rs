//! `kiln tag SOURCE TARGET`.

use anyhow::Context as _;
use clap::Args;

use super::{Context, resolve};

#[derive(Args, Debug)]
pub struct TagArgs {
    /// The image to tag: a name, a full image id or a unique id prefix
    #[arg(value_name = "SOURCE_IMAGE[:TAG]")]
    source: String,
    /// The new tag
    #[arg(value_name = "TARGET_IMAGE[:TAG]")]
    target: String,
}

pub fn run(ctx: &Context, a: TagArgs) -> anyhow::Result<()> {
    let store = ctx.store()?;
    let record = resolve(&store, &a.source)?;
    store
        .tag(&record.id, &a.target)
        .with_context(|| format!("failed to tag {} as {}", a.source, a.target))?;
    Ok(())
}
