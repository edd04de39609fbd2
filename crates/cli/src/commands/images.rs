//! `kiln images` / `kiln image ls`: list images as `docker images` does.

use std::collections::BTreeMap;

use clap::Args;
use kiln_oci::Reference;
use kiln_store::{ImageDocs, ImageRecord, Store};
use serde_json::{Map, Value};

use super::{Context, resolve};
use crate::format::{Output, go_time_string, human_size, human_size4, since};
use crate::render::DockerError;

#[derive(Args, Debug)]
pub struct ImagesArgs {
    /// Show all images (default hides intermediate images; kiln has none)
    #[arg(short = 'a', long = "all")]
    all: bool,
    /// Show digests
    #[arg(long = "digests")]
    digests: bool,
    /// Filter output based on conditions provided
    #[arg(short = 'f', long = "filter", value_name = "filter")]
    filter: Vec<String>,
    /// Format output using a custom template:
    /// 'table':            Print output in table format with column headers (default)
    /// 'table TEMPLATE':   Print output in table format using the given Go template
    /// 'json':             Print in JSON format
    /// 'TEMPLATE':         Print output using the given Go template
    #[arg(long = "format", value_name = "string", verbatim_doc_comment)]
    format: Option<String>,
    /// Don't truncate output
    #[arg(long = "no-trunc")]
    no_trunc: bool,
    /// Only show image IDs
    #[arg(short = 'q', long = "quiet")]
    quiet: bool,
    /// Only list images of this repository (and tag)
    #[arg(value_name = "REPOSITORY[:TAG]")]
    reference: Option<String>,
}

/// An image with what listing it needs.
pub struct Summary {
    pub record: ImageRecord,
    pub docs: ImageDocs,
    pub created: chrono::DateTime<chrono::Utc>,
    pub size: u64,
}

/// Every image in the store, newest first. An image whose manifest or
/// config cannot be read is left out with a warning on stderr that names
/// it: one unreadable record does not hide the rest of the store.
pub fn summaries(store: &Store) -> anyhow::Result<Vec<Summary>> {
    let mut out = Vec::new();
    for record in store.images()? {
        let docs = match store.image_docs(&record) {
            Ok(docs) => docs,
            Err(e) => {
                eprintln!(
                    "warning: skipping image {}: {:#}",
                    describe(&record),
                    anyhow::Error::from(e)
                );
                continue;
            }
        };
        let created = docs
            .config
            .created_time()
            .unwrap_or_else(|| record.created.into());
        let size = docs.size();
        out.push(Summary {
            record,
            docs,
            created,
            size,
        });
    }
    out.sort_by(|a, b| {
        b.created
            .cmp(&a.created)
            .then(a.record.id.cmp(&b.record.id))
    });
    Ok(out)
}

/// An image as a warning names it: its tags, then its id.
fn describe(record: &ImageRecord) -> String {
    let names: Vec<String> = record
        .tags
        .iter()
        .chain(&record.repo_digests)
        .map(Reference::familiar_string)
        .collect();
    if names.is_empty() {
        record.id.to_string()
    } else {
        format!("{} ({})", names.join(", "), record.id)
    }
}

/// The parsed `--filter` values.
#[derive(Default)]
struct Filters {
    dangling: Option<bool>,
    references: Vec<String>,
    labels: Vec<(String, Option<String>)>,
    before: Option<chrono::DateTime<chrono::Utc>>,
    since: Option<chrono::DateTime<chrono::Utc>>,
}

fn parse_filters(store: &Store, all: &[Summary], raw: &[String]) -> anyhow::Result<Filters> {
    let mut f = Filters::default();
    let created_of = |query: &str| -> anyhow::Result<chrono::DateTime<chrono::Utc>> {
        let record = resolve(store, query)?;
        Ok(all
            .iter()
            .find(|s| s.record.id == record.id)
            .map(|s| s.created)
            .unwrap_or_else(|| record.created.into()))
    };
    for item in raw {
        let Some((key, value)) = item.split_once('=') else {
            return Err(DockerError(format!(
                "bad format of filter (expected name=value)\n{item}"
            ))
            .into());
        };
        match key.trim().to_ascii_lowercase().as_str() {
            "dangling" => {
                f.dangling = Some(match value.to_ascii_lowercase().as_str() {
                    "true" | "1" => true,
                    "false" | "0" => false,
                    _ => {
                        return Err(
                            DockerError(format!("invalid filter 'dangling={value}'")).into()
                        );
                    }
                })
            }
            "reference" => f.references.push(value.to_owned()),
            "label" => f.labels.push(match value.split_once('=') {
                Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
                None => (value.to_owned(), None),
            }),
            "before" => f.before = Some(created_of(value)?),
            "since" => f.since = Some(created_of(value)?),
            other => return Err(DockerError(format!("invalid filter '{other}'")).into()),
        }
    }
    Ok(f)
}

fn reference_matches(r: &Reference, patterns: &[String]) -> anyhow::Result<bool> {
    for p in patterns {
        if r.familiar_match(p)
            .map_err(|e| DockerError(format!("invalid reference filter {p:?}: {e}")))?
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// One line of the listing.
struct Row<'a> {
    summary: &'a Summary,
    repo: String,
    tag: String,
    digest: String,
}

/// Docker's rows for one image: a row per tag (per tag and digest with
/// `--digests`), a row per repository known only by digest, or a single
/// `<none>` row.
fn rows_for<'a>(
    s: &'a Summary,
    tags: &[Reference],
    digests: &[Reference],
    show_digests: bool,
) -> Vec<Row<'a>> {
    let mut repo_tags: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for t in tags {
        if let Some(tag) = t.tag() {
            repo_tags
                .entry(t.familiar_name())
                .or_default()
                .push(tag.to_owned());
        }
    }
    let mut repo_digests: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for d in digests {
        if let Some(digest) = d.digest() {
            repo_digests
                .entry(d.familiar_name())
                .or_default()
                .push(digest.to_string());
        }
    }
    let mut rows = Vec::new();
    let row = |repo: &str, tag: &str, digest: &str| Row {
        summary: s,
        repo: repo.to_owned(),
        tag: tag.to_owned(),
        digest: digest.to_owned(),
    };
    let had_tags = !repo_tags.is_empty();
    for (repo, tags) in &repo_tags {
        let digests = repo_digests.remove(repo).unwrap_or_default();
        for tag in tags {
            if !show_digests || digests.is_empty() {
                rows.push(row(repo, tag, "<none>"));
            } else {
                for d in &digests {
                    rows.push(row(repo, tag, d));
                }
            }
        }
    }
    let had_digests = !repo_digests.is_empty();
    for (repo, digests) in &repo_digests {
        if show_digests {
            for d in digests {
                rows.push(row(repo, "<none>", d));
            }
        } else {
            rows.push(row(repo, "<none>", ""));
        }
    }
    if !had_tags && !had_digests {
        rows.push(row("<none>", "<none>", "<none>"));
    }
    rows
}

fn row_value(r: &Row<'_>, trunc: bool) -> Value {
    let s = r.summary;
    let id = if trunc {
        s.record.id.short().to_owned()
    } else {
        s.record.id.to_string()
    };
    let mut m = Map::new();
    m.insert("Containers".into(), "N/A".into());
    m.insert("CreatedAt".into(), go_time_string(s.created).into());
    m.insert("CreatedSince".into(), since(s.created.into()).into());
    m.insert("Digest".into(), r.digest.clone().into());
    m.insert("ID".into(), id.into());
    m.insert("Repository".into(), r.repo.clone().into());
    m.insert("SharedSize".into(), "N/A".into());
    m.insert("Size".into(), human_size(s.size).into());
    m.insert("Tag".into(), r.tag.clone().into());
    m.insert("UniqueSize".into(), "N/A".into());
    m.insert("VirtualSize".into(), human_size4(s.size).into());
    Value::Object(m)
}

const HEADERS: &[(&str, &str)] = &[
    ("Containers", "CONTAINERS"),
    ("CreatedAt", "CREATED AT"),
    ("CreatedSince", "CREATED"),
    ("Digest", "DIGEST"),
    ("ID", "IMAGE ID"),
    ("Repository", "REPOSITORY"),
    ("SharedSize", "SHARED SIZE"),
    ("Size", "SIZE"),
    ("Tag", "TAG"),
    ("UniqueSize", "UNIQUE SIZE"),
    ("VirtualSize", "VIRTUAL SIZE"),
];

pub fn run(ctx: &Context, a: ImagesArgs) -> anyhow::Result<()> {
    let _ = a.all;
    let store = ctx.store()?;
    let all = summaries(&store)?;
    let mut filters = parse_filters(&store, &all, &a.filter)?;
    if let Some(r) = &a.reference {
        filters.references.push(r.clone());
    }

    let mut rows = Vec::new();
    for s in &all {
        let r = &s.record;
        if let Some(d) = filters.dangling
            && d != r.is_dangling()
        {
            continue;
        }
        if filters.before.is_some_and(|t| s.created >= t)
            || filters.since.is_some_and(|t| s.created <= t)
        {
            continue;
        }
        let labels = &s.docs.config.config.labels;
        if !filters.labels.iter().all(|(k, v)| match v {
            None => labels.contains_key(k),
            Some(v) => labels.get(k) == Some(v),
        }) {
            continue;
        }
        let (mut tags, mut digests) = (r.tags.clone(), r.repo_digests.clone());
        if !filters.references.is_empty() {
            let mut keep_tags = Vec::new();
            for t in tags {
                if reference_matches(&t, &filters.references)? {
                    keep_tags.push(t);
                }
            }
            let mut keep_digests = Vec::new();
            for d in digests {
                if reference_matches(&d, &filters.references)? {
                    keep_digests.push(d);
                }
            }
            if keep_tags.is_empty() && keep_digests.is_empty() {
                continue;
            }
            (tags, digests) = (keep_tags, keep_digests);
        }
        rows.extend(rows_for(s, &tags, &digests, a.digests));
    }

    let trunc = !a.no_trunc;
    let values: Vec<Value> = rows.iter().map(|r| row_value(r, trunc)).collect();
    if a.quiet {
        for v in &values {
            println!("{}", v["ID"].as_str().unwrap_or_default());
        }
        return Ok(());
    }
    let default = if a.digests {
        "{{.Repository}}\t{{.Tag}}\t{{.Digest}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"
    } else {
        "{{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"
    };
    let out = Output::new(a.format.as_deref(), default)?;
    print!("{}", out.render(HEADERS, &values)?);
    Ok(())
}
