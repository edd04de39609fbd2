//! `kiln rmi` / `kiln image rm`: untag images and delete the ones left
//! without tags, as `docker rmi` does.
//!
//! - By tag (`busybox`, `busybox:1.36`): the tag is removed
//!   (`Untagged: busybox:1.36`); if it was the image's last tag, the image
//!   is deleted too (`Deleted: sha256:…`) with its blobs and snapshots that
//!   no other image uses.
//! - By id or id prefix: the image is deleted with all its tags, unless its
//!   tags span several repositories, which needs `-f`.
//!
//! An image a container uses is kept: removing its tag needs `-f` (then
//! only the tag goes), deleting it by id is refused while the container
//! exists (Docker's `conflict: …` messages); `kiln rm` releases it.

use std::collections::BTreeSet;

use clap::Args;
use kiln_oci::Reference;
use kiln_runtime::container::Containers;
use kiln_store::{Error as StoreError, ImageError, ImageRecord, Store};

use super::{Context, docker_error};
use crate::render::{AlreadyReported, DockerError};

#[derive(Args, Debug)]
pub struct RmiArgs {
    /// Force removal of the image
    #[arg(short = 'f', long = "force")]
    force: bool,
    /// Do not delete untagged parents (accepted for compatibility; kiln images have none)
    #[arg(long = "no-prune")]
    no_prune: bool,
    /// Images to remove: names, full ids or unique id prefixes
    #[arg(value_name = "IMAGE", required = true)]
    images: Vec<String>,
}

pub fn run(ctx: &Context, a: RmiArgs) -> anyhow::Result<()> {
    let _ = a.no_prune;
    let store = ctx.store()?;
    let containers = super::run::containers(ctx)?;
    let mut failed = false;
    for name in &a.images {
        match remove(&store, &containers, name, a.force) {
            Ok(lines) => {
                for l in lines {
                    println!("{l}");
                }
            }
            Err(e) => {
                failed = true;
                match e.downcast_ref::<DockerError>() {
                    Some(d) => eprintln!("Error: {d}"),
                    None => {
                        eprintln!("Error: {e}");
                        for cause in e.chain().skip(1) {
                            eprintln!("    {cause}");
                        }
                    }
                }
            }
        }
    }
    if failed {
        return Err(AlreadyReported.into());
    }
    Ok(())
}

/// Whether `name` names one of the image's tags (rather than its id).
fn tag_named(record: &ImageRecord, name: &str) -> Option<Reference> {
    let r = Reference::parse_docker_ref(name).ok()?;
    record.tags.iter().find(|t| **t == r).cloned()
}

/// The `Untagged:` and `Deleted:` lines of deleting an image. An image a
/// running kiln process (a build) uses keeps its record: removing it by
/// `tag` only untags it (it is left dangling for a later prune), removing
/// it by id is a conflict, as for an image a running container uses.
fn delete(
    store: &Store,
    record: &ImageRecord,
    tag: Option<&Reference>,
) -> anyhow::Result<Vec<String>> {
    let removed = match store.delete_image(&record.id) {
        Ok(removed) => removed,
        Err(ImageError::Store(StoreError::ImageInUse { holders, .. })) => {
            if let Some(tag) = tag {
                store.untag(&tag.to_string())?;
                return Ok(vec![format!("Untagged: {}", tag.familiar_string())]);
            }
            let by = holders
                .first()
                .map(|p| format!(" (pid {p})"))
                .unwrap_or_default();
            return Err(DockerError(format!(
                "conflict: unable to delete {} (cannot be forced) - image is being used by a running kiln process{by}",
                record.id.short()
            ))
            .into());
        }
        Err(e) => return Err(e.into()),
    };
    let mut lines: Vec<String> = removed
        .record
        .tags
        .iter()
        .chain(&removed.record.repo_digests)
        .map(|r| format!("Untagged: {}", r.familiar_string()))
        .collect();
    lines.push(format!("Deleted: {}", removed.record.id));
    Ok(lines)
}

fn remove(
    store: &Store,
    containers: &Containers,
    name: &str,
    force: bool,
) -> anyhow::Result<Vec<String>> {
    let record = store
        .resolve(name)
        .map_err(|e| docker_error(e.into(), name))?;
    let users = super::container::users_of(containers, &record.id.to_string())?;
    if let Some(tag) = tag_named(&record, name) {
        if let Some(user) = users.first() {
            if !force {
                return Err(DockerError(format!(
                    "conflict: unable to remove repository reference \"{name}\" (must force) - container {} is using its referenced image {}",
                    user.short_id(),
                    record.id.short()
                ))
                .into());
            }
            store.untag(&tag.to_string())?;
            return Ok(vec![format!("Untagged: {}", tag.familiar_string())]);
        }
        if record.tags.len() > 1 {
            store.untag(&tag.to_string())?;
            return Ok(vec![format!("Untagged: {}", tag.familiar_string())]);
        }
        return delete(store, &record, Some(&tag));
    }
    if let Some(user) = users.first() {
        let (how, state) = if user.is_running() {
            ("cannot be forced", "running")
        } else {
            ("must be forced", "stopped")
        };
        return Err(DockerError(format!(
            "conflict: unable to delete {} ({how}) - image is being used by {state} container {}",
            record.id.short(),
            user.short_id()
        ))
        .into());
    }
    let repos: BTreeSet<String> = record.tags.iter().map(|t| t.familiar_name()).collect();
    if repos.len() > 1 && !force {
        return Err(DockerError(format!(
            "conflict: unable to delete {} (must be forced) - image is referenced in multiple repositories",
            record.id.short()
        ))
        .into());
    }
    delete(store, &record, None)
}
