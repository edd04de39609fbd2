//! `kiln system df`: disk usage. Only images exist so far; containers,
//! volumes and the build cache get their rows when they exist.
//!
//! `kiln system check [--repair]`: check the store's content (fsck).

use clap::Args;
use serde_json::{Map, Value};

use super::Context;
use crate::format::{Output, human_size4};
use crate::render::AlreadyReported;

#[derive(Args, Debug)]
pub struct DfArgs {
    /// Format output using a custom template:
    /// 'table':            Print output in table format with column headers (default)
    /// 'table TEMPLATE':   Print output in table format using the given Go template
    /// 'json':             Print in JSON format
    /// 'TEMPLATE':         Print output using the given Go template
    #[arg(long = "format", value_name = "string", verbatim_doc_comment)]
    format: Option<String>,
}

const HEADERS: &[(&str, &str)] = &[
    ("Active", "ACTIVE"),
    ("Reclaimable", "RECLAIMABLE"),
    ("Size", "SIZE"),
    ("TotalCount", "TOTAL"),
    ("Type", "TYPE"),
];

pub fn df(ctx: &Context, a: DfArgs) -> anyhow::Result<()> {
    let store = ctx.store()?;
    let in_use = super::images_in_use(ctx)?;
    let images = store.images_usage_with(&in_use)?;
    let root = ctx.root_dir()?;
    let row =
        |kind: &str, total: usize, active: usize, size: u64, reclaimable: u64, percent: bool| {
            let reclaimable_text = match (reclaimable * 100).checked_div(size) {
                Some(p) if percent => format!("{} ({p}%)", human_size4(reclaimable)),
                _ => human_size4(reclaimable),
            };
            let mut m = Map::new();
            m.insert("Active".into(), active.to_string().into());
            m.insert("Reclaimable".into(), reclaimable_text.into());
            m.insert("Size".into(), human_size4(size).into());
            m.insert("TotalCount".into(), total.to_string().into());
            m.insert("Type".into(), kind.into());
            Value::Object(m)
        };
    let mut rows = vec![row(
        "Images",
        images.total,
        images.active,
        images.size,
        images.reclaimable,
        true,
    )];

    // Containers and volumes, when any exist.
    let (mut c_total, mut c_active, mut c_size, mut c_free) = (0, 0, 0u64, 0u64);
    let (mut v_total, mut v_active, mut v_size, mut v_free) = (0, 0, 0u64, 0u64);
    if root.join("containers").exists() {
        let containers = kiln_runtime::container::Containers::open(&root)?;
        let list = containers.list()?;
        let mut used_volumes = std::collections::BTreeSet::new();
        for c in &list {
            let size = kiln_runtime::container::state::dir_size(&containers.dir(&c.id));
            c_total += 1;
            c_size += size;
            if c.is_running() {
                c_active += 1;
            } else {
                c_free += size;
            }
            used_volumes.extend(c.mounts.iter().filter_map(|m| m.name.clone()));
        }
        if let Ok(entries) = std::fs::read_dir(root.join("volumes")) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let size = kiln_runtime::container::state::dir_size(&e.path());
                v_total += 1;
                v_size += size;
                if used_volumes.contains(&name) {
                    v_active += 1;
                } else {
                    v_free += size;
                }
            }
        }
    }
    rows.push(row("Containers", c_total, c_active, c_size, c_free, true));
    rows.push(row(
        "Local Volumes",
        v_total,
        v_active,
        v_size,
        v_free,
        true,
    ));
    let cache = kiln_engine::build_cache::disk_usage(&store)?;
    rows.push(row(
        "Build Cache",
        cache.entries.len(),
        0,
        cache.total,
        cache.reclaimable,
        false,
    ));
    // Temporary files of other kiln processes (running, or dead ones the
    // store could not clean): a row Docker's table does not have, shown
    // only when there are some.
    let leases: Vec<_> = store
        .list_leases()?
        .into_iter()
        .filter(|l| !l.own)
        .collect();
    let temp_size = store.temporary_usage()?;
    if !leases.is_empty() || temp_size > 0 {
        let dead: u64 = leases.iter().filter(|l| !l.live).map(|l| l.bytes).sum();
        rows.push(row(
            "Temporary Files",
            leases.len(),
            leases.iter().filter(|l| l.live).count(),
            temp_size,
            dead,
            false,
        ));
    }
    let out = Output::new(
        a.format.as_deref(),
        "{{.Type}}\t{{.TotalCount}}\t{{.Active}}\t{{.Size}}\t{{.Reclaimable}}",
    )?;
    print!("{}", out.render(HEADERS, &rows)?);
    Ok(())
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Delete corrupt blobs, remove image records whose content is missing
    /// or corrupt, remove broken snapshots, and delete unreferenced blobs
    /// older than an hour, and remove what dead kiln processes left
    #[arg(long)]
    repair: bool,
    /// Do not compare unpacked layers with their layer blobs (each layer
    /// is unpacked again for that)
    #[arg(long)]
    fast: bool,
}

fn plural(n: usize, one: &str) -> String {
    if n == 1 {
        format!("{n} {one}")
    } else {
        format!("{n} {one}s")
    }
}

/// Re-hashes every blob and checks image records, snapshots and temporary
/// files; one line per finding, then a summary. Exits 1 if a problem
/// remains.
pub fn check(ctx: &Context, a: CheckArgs) -> anyhow::Result<()> {
    let store = ctx.store()?;
    let report = store.check_with(a.repair, !a.fast)?;
    for issue in &report.issues {
        let line = issue.finding.to_string();
        match (issue.finding.is_problem(), issue.repaired) {
            (true, false) => println!("{line}"),
            (true, true) => println!("{line} (repaired)"),
            (false, false) => println!("note: {line}"),
            (false, true) => println!("note: {line} (removed)"),
        }
    }
    for record in &report.removed_images {
        let tags = if record.tags.is_empty() {
            "untagged".to_owned()
        } else {
            record
                .tags
                .iter()
                .map(|t| t.familiar_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        println!("removed image {} ({tags})", record.id);
    }
    if !report.references_complete && report.images > 0 {
        println!("note: some images could not be read; unreferenced content was not looked for");
    }
    println!(
        "checked {}, {}, {}: {} ({} repaired)",
        plural(report.blobs, "blob"),
        plural(report.images, "image"),
        plural(report.snapshots, "snapshot"),
        plural(report.problems(), "problem"),
        report.repaired()
    );
    if report.is_clean() {
        Ok(())
    } else {
        Err(AlreadyReported.into())
    }
}
