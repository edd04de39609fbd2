//! `kiln history`: an image's config history, newest first, as `docker
//! history` shows it.

use clap::{ArgAction, Args};
use serde_json::{Map, Value};

use super::{Context, resolve};
use crate::format::{Output, human_size, rfc3339, since};

#[derive(Args, Debug)]
pub struct HistoryArgs {
    /// Format output using a custom template:
    /// 'table':            Print output in table format with column headers (default)
    /// 'table TEMPLATE':   Print output in table format using the given Go template
    /// 'json':             Print in JSON format
    /// 'TEMPLATE':         Print output using the given Go template
    #[arg(long = "format", value_name = "string", verbatim_doc_comment)]
    format: Option<String>,
    /// Print sizes and dates in human readable format
    #[arg(
        short = 'H',
        long = "human",
        action = ArgAction::Set,
        num_args = 0..=1,
        require_equals = true,
        default_value = "true",
        default_missing_value = "true",
        value_name = "bool"
    )]
    human: bool,
    /// Don't truncate output
    #[arg(long = "no-trunc")]
    no_trunc: bool,
    /// Only show image IDs
    #[arg(short = 'q', long = "quiet")]
    quiet: bool,
    /// The image: a name, a full image id or a unique id prefix
    #[arg(value_name = "IMAGE")]
    image: String,
}

/// Docker's `Ellipsis`: at most `max` characters, the last one `…`.
fn ellipsis(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

const HEADERS: &[(&str, &str)] = &[
    ("Comment", "COMMENT"),
    ("CreatedAt", "CREATED AT"),
    ("CreatedBy", "CREATED BY"),
    ("CreatedSince", "CREATED"),
    ("ID", "IMAGE"),
    ("Size", "SIZE"),
];

pub fn run(ctx: &Context, a: HistoryArgs) -> anyhow::Result<()> {
    let store = ctx.store()?;
    let record = resolve(&store, &a.image)?;
    let docs = store.image_docs(&record)?;
    let trunc = !a.no_trunc;

    // Layer sizes in history order: each non-empty entry takes the next layer.
    let layer_sizes: Vec<u64> = docs.manifest.layers().iter().map(|l| l.size()).collect();
    let mut next_layer = 0;
    let mut rows = Vec::new();
    for h in &docs.config.history {
        let size = if h.empty_layer {
            0
        } else {
            let s = layer_sizes.get(next_layer).copied().unwrap_or(0);
            next_layer += 1;
            s
        };
        let created = h
            .created
            .as_deref()
            .and_then(kiln_store::parse_time)
            .unwrap_or_default();
        let created_by = h.created_by.clone().unwrap_or_default().replace('\t', " ");
        let mut m = Map::new();
        m.insert(
            "Comment".into(),
            h.comment.clone().unwrap_or_default().into(),
        );
        m.insert("CreatedAt".into(), rfc3339(created).into());
        m.insert(
            "CreatedBy".into(),
            if trunc {
                ellipsis(&created_by, 45)
            } else {
                created_by
            }
            .into(),
        );
        m.insert(
            "CreatedSince".into(),
            if a.human {
                since(created.into())
            } else {
                rfc3339(created)
            }
            .into(),
        );
        m.insert("ID".into(), "<missing>".into());
        m.insert(
            "Size".into(),
            if a.human {
                human_size(size)
            } else {
                size.to_string()
            }
            .into(),
        );
        rows.push(Value::Object(m));
    }
    rows.reverse();
    if let Some(Value::Object(top)) = rows.first_mut() {
        let id = if trunc {
            record.id.short().to_owned()
        } else {
            record.id.to_string()
        };
        top.insert("ID".into(), id.into());
    }

    if a.quiet {
        for r in &rows {
            println!("{}", r["ID"].as_str().unwrap_or_default());
        }
        return Ok(());
    }
    let default = if a.human {
        "{{.ID}}\t{{.CreatedSince}}\t{{.CreatedBy}}\t{{.Size}}\t{{.Comment}}"
    } else {
        "{{.ID}}\t{{.CreatedAt}}\t{{.CreatedBy}}\t{{.Size}}\t{{.Comment}}"
    };
    let out = Output::new(a.format.as_deref(), default)?;
    print!("{}", out.render(HEADERS, &rows)?);
    Ok(())
}
