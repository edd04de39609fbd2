//! `kiln search TERM`: Docker Hub's search API for plain terms; the
//! registry's catalog, filtered by the term, for `host/term`
//! (`localhost:5000/bu`). Docker's columns, truncation, filters and
//! `--format`.

use clap::Args;
use kiln_registry::{DOCKER_HUB_INDEX_HOST, MAX_SEARCH_LIMIT, SearchResult};
use serde_json::{Map, Value};

use super::Context;
use super::pull::{registry_error, runtime};
use crate::format::Output;
use crate::render::DockerError;

/// DESCRIPTION is cut to this many characters unless `--no-trunc`.
const DESCRIPTION_WIDTH: usize = 45;

const DEFAULT_TABLE: &str = "{{.Name}}\\t{{.Description}}\\t{{.StarCount}}\\t{{.IsOfficial}}";

const HEADERS: &[(&str, &str)] = &[
    ("Name", "NAME"),
    ("Description", "DESCRIPTION"),
    ("StarCount", "STARS"),
    ("IsOfficial", "OFFICIAL"),
    ("IsAutomated", "AUTOMATED"),
];

#[derive(Args, Debug)]
#[command(about = "Search Docker Hub (or a registry's catalog) for images")]
pub struct SearchArgs {
    /// Filter output based on conditions provided (stars=N, is-official=true|false)
    #[arg(short = 'f', long = "filter", value_name = "filter")]
    filter: Vec<String>,
    /// Pretty-print search using a Go template:
    /// 'table':            Print output in table format with column headers (default)
    /// 'table TEMPLATE':   Print output in table format using the given Go template
    /// 'json':             Print in JSON format
    /// 'TEMPLATE':         Print output using the given Go template
    #[arg(long = "format", value_name = "string", verbatim_doc_comment)]
    format: Option<String>,
    /// Max number of search results
    #[arg(long = "limit", value_name = "int", default_value_t = 25)]
    limit: i64,
    /// Don't truncate output
    #[arg(long = "no-trunc")]
    no_trunc: bool,
    /// The term to search for; `HOST/TERM` searches that registry's catalog
    #[arg(value_name = "TERM")]
    term: String,
}

/// The parsed `--filter` values.
#[derive(Debug, Default, PartialEq, Eq)]
struct Filters {
    stars: Option<u64>,
    official: Option<bool>,
    automated: Option<bool>,
}

impl Filters {
    fn parse(raw: &[String]) -> anyhow::Result<Filters> {
        let mut f = Filters::default();
        for item in raw {
            let Some((key, value)) = item.split_once('=') else {
                return Err(DockerError(format!(
                    "bad format of filter (expected name=value)\n{item}"
                ))
                .into());
            };
            let invalid = || DockerError(format!("invalid filter '{item}'"));
            let boolean = |v: &str| match v.to_ascii_lowercase().as_str() {
                "true" | "1" => Ok(true),
                "false" | "0" => Ok(false),
                _ => Err(invalid()),
            };
            match key.trim().to_ascii_lowercase().as_str() {
                "stars" => f.stars = Some(value.trim().parse().map_err(|_| invalid())?),
                "is-official" => f.official = Some(boolean(value.trim())?),
                "is-automated" => f.automated = Some(boolean(value.trim())?),
                other => return Err(DockerError(format!("invalid filter '{other}'")).into()),
            }
        }
        Ok(f)
    }

    fn matches(&self, r: &SearchResult) -> bool {
        self.stars.is_none_or(|n| r.star_count >= n)
            && self.official.is_none_or(|o| r.is_official == o)
            && self.automated.is_none_or(|a| r.is_automated == a)
    }
}

/// Where to search: Docker Hub, or the catalog of `host`.
#[derive(Debug, PartialEq, Eq)]
enum Index<'a> {
    Hub { term: &'a str },
    Catalog { host: &'a str, term: &'a str },
}

/// Splits `host/term` as Docker does: the first component is a registry
/// when it has a `.` or a `:`, or is `localhost`.
fn index_of(term: &str) -> Index<'_> {
    if let Some((first, rest)) = term.split_once('/')
        && (first.contains('.') || first.contains(':') || first == "localhost")
    {
        if matches!(
            first,
            "docker.io" | "index.docker.io" | "registry-1.docker.io"
        ) {
            return Index::Hub { term: rest };
        }
        return Index::Catalog {
            host: first,
            term: rest,
        };
    }
    Index::Hub { term }
}

pub fn run(_ctx: &Context, a: SearchArgs) -> anyhow::Result<()> {
    if a.limit < 1 || a.limit > MAX_SEARCH_LIMIT as i64 {
        return Err(DockerError(format!(
            "limit {} is outside the range of [1, {MAX_SEARCH_LIMIT}]",
            a.limit
        ))
        .into());
    }
    let limit = a.limit as usize;
    let filters = Filters::parse(&a.filter)?;
    let output = Output::new(a.format.as_deref(), DEFAULT_TABLE)?;
    let client = crate::config::registry_client()?;
    let runtime = runtime()?;
    // Rows, with `None` for what a catalog does not know.
    let found: Vec<(SearchResult, bool)> = match index_of(&a.term) {
        Index::Hub { term } => runtime
            .block_on(client.search(DOCKER_HUB_INDEX_HOST, term, limit))
            .map_err(|e| registry_error(e, term))?
            .into_iter()
            .map(|r| (r, true))
            .collect(),
        Index::Catalog { host, term } => {
            let mut repos = runtime
                .block_on(client.catalog(host, Some(term)))
                .map_err(|e| registry_error(e, &a.term))?;
            repos.sort();
            repos
                .into_iter()
                .map(|r| {
                    let result = SearchResult {
                        name: format!("{host}/{r}"),
                        ..Default::default()
                    };
                    (result, false)
                })
                .collect()
        }
    };
    let rows: Vec<Value> = found
        .iter()
        .filter(|(r, _)| filters.matches(r))
        .take(limit)
        .map(|(r, known)| row(r, *known, !a.no_trunc))
        .collect();
    print!("{}", output.render(HEADERS, &rows)?);
    Ok(())
}

fn row(r: &SearchResult, known: bool, truncate: bool) -> Value {
    let mut description = r.description.replace(['\n', '\r'], " ");
    if truncate {
        description = ellipsis(&description, DESCRIPTION_WIDTH);
    }
    let ok = |b: bool| if b { "[OK]" } else { "" };
    let mut m = Map::new();
    m.insert("Name".into(), r.name.clone().into());
    m.insert("Description".into(), description.into());
    m.insert(
        "StarCount".into(),
        if known {
            r.star_count.to_string()
        } else {
            String::new()
        }
        .into(),
    );
    m.insert("IsOfficial".into(), ok(r.is_official).into());
    m.insert("IsAutomated".into(), ok(r.is_automated).into());
    Value::Object(m)
}

/// The first `width - 1` characters and `…` when longer than `width`.
fn ellipsis(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(width.saturating_sub(1)).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terms_pick_the_index() {
        assert_eq!(index_of("busybox"), Index::Hub { term: "busybox" });
        assert_eq!(index_of("user/app"), Index::Hub { term: "user/app" });
        assert_eq!(index_of("docker.io/busy"), Index::Hub { term: "busy" });
        assert_eq!(
            index_of("localhost:5000/bu"),
            Index::Catalog {
                host: "localhost:5000",
                term: "bu"
            }
        );
        assert_eq!(
            index_of("reg.example/x/y"),
            Index::Catalog {
                host: "reg.example",
                term: "x/y"
            }
        );
    }

    #[test]
    fn filters() {
        let f = Filters::parse(&["stars=3".into(), "is-official=true".into()]).unwrap();
        let mut r = SearchResult {
            name: "a".into(),
            star_count: 3,
            is_official: true,
            ..Default::default()
        };
        assert!(f.matches(&r));
        r.star_count = 2;
        assert!(!f.matches(&r));
        assert!(Filters::parse(&["stars=x".into()]).is_err());
        assert!(Filters::parse(&["color=red".into()]).is_err());
        assert!(Filters::parse(&["stars".into()]).is_err());
    }

    #[test]
    fn rows_truncate_descriptions() {
        let r = SearchResult {
            name: "busybox".into(),
            description: "Busybox base image, with a description longer than the column".into(),
            star_count: 3000,
            is_official: true,
            is_automated: false,
        };
        let row = row(&r, true, true);
        assert_eq!(
            row["Description"],
            "Busybox base image, with a description longe…"
        );
        assert_eq!(row["Description"].as_str().unwrap().chars().count(), 45);
        assert_eq!(row["StarCount"], "3000");
        assert_eq!(row["IsOfficial"], "[OK]");
        let output = Output::new(None, DEFAULT_TABLE).unwrap();
        let text = output
            .render(
                HEADERS,
                &[super::row(
                    &SearchResult {
                        name: "127.0.0.1:5000/app".into(),
                        ..Default::default()
                    },
                    false,
                    true,
                )],
            )
            .unwrap();
        assert_eq!(
            text,
            "NAME                 DESCRIPTION   STARS     OFFICIAL\n127.0.0.1:5000/app                           \n"
        );
    }
}
