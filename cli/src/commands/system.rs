//! `kiln system df`: disk usage. Only images exist so far; containers,
//! volumes and the build cache get their rows when they exist.

use clap::Args;
use serde_json::{Map, Value};

use super::Context;
use crate::format::{Output, human_size4};

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
