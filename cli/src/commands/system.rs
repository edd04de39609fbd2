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
    let usage = store.images_usage()?;
    // No container uses any image yet: everything is reclaimable.
    let reclaimable = usage.size;
    let reclaimable_text = match (reclaimable * 100).checked_div(usage.size) {
        Some(percent) => format!("{} ({percent}%)", human_size4(reclaimable)),
        None => human_size4(reclaimable),
    };
    let mut m = Map::new();
    m.insert("Active".into(), "0".into());
    m.insert("Reclaimable".into(), reclaimable_text.into());
    m.insert("Size".into(), human_size4(usage.size).into());
    m.insert("TotalCount".into(), usage.total.to_string().into());
    m.insert("Type".into(), "Images".into());
    let out = Output::new(
        a.format.as_deref(),
        "{{.Type}}\t{{.TotalCount}}\t{{.Active}}\t{{.Size}}\t{{.Reclaimable}}",
    )?;
    print!("{}", out.render(HEADERS, &[Value::Object(m)])?);
    Ok(())
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Delete corrupt blobs, remove image records whose content is missing
    /// or corrupt, remove broken snapshots, and delete unreferenced blobs
    /// and temporary files older than an hour
    #[arg(long)]
    repair: bool,
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
    let report = store.check(a.repair)?;
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
