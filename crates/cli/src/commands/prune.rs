//! `kiln image prune`: delete dangling (or, with `-a`, all unused) images;
//! images a container uses are never removed.

use std::io::{BufRead, Write};

use clap::Args;
use kiln_store::PruneScope;

use super::Context;
use crate::format::human_size4;

#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Remove all unused images, not just dangling ones
    #[arg(short = 'a', long = "all")]
    all: bool,
    /// Do not prompt for confirmation
    #[arg(short = 'f', long = "force")]
    force: bool,
}

pub fn run(ctx: &Context, a: PruneArgs) -> anyhow::Result<()> {
    let store = ctx.store()?;
    if !a.force {
        let warning = if a.all {
            "WARNING! This will remove all images without at least one container associated to them."
        } else {
            "WARNING! This will remove all dangling images."
        };
        print!("{warning}\nAre you sure you want to continue? [y/N] ");
        std::io::stdout().flush()?;
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y") {
            return Ok(());
        }
    }
    let scope = if a.all {
        PruneScope::All
    } else {
        PruneScope::Dangling
    };
    let in_use = super::images_in_use(ctx)?;
    let removed = store.prune_images_keeping(scope, &in_use)?;
    let mut out = String::new();
    if !removed.is_empty() {
        out.push_str("Deleted Images:\n");
        for r in &removed {
            for t in r.record.tags.iter().chain(&r.record.repo_digests) {
                out.push_str(&format!("untagged: {}\n", t.familiar_string()));
            }
            out.push_str(&format!("deleted: {}\n", r.record.id));
        }
        println!("{out}");
    }
    let reclaimed: u64 = removed.iter().map(|r| r.reclaimed).sum();
    println!("Total reclaimed space: {}", human_size4(reclaimed));
    Ok(())
}
