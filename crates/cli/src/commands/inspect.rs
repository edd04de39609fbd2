//! `kiln inspect` / `kiln image inspect`: Docker's image inspect document.

use std::collections::BTreeMap;

use clap::Args;
use kiln_store::{Empty, ImageDocs, ImageRecord, Store};
use serde::Serialize;

use super::{Context, resolve};
use crate::render::{AlreadyReported, DockerError};
use crate::template::{Template, go_escape};

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Format output using a custom template:
    /// 'json':             Print in JSON format
    /// 'TEMPLATE':         Print output using the given Go template
    #[arg(
        short = 'f',
        long = "format",
        value_name = "string",
        verbatim_doc_comment
    )]
    format: Option<String>,
    /// Images to inspect: names, full ids or unique id prefixes
    #[arg(value_name = "IMAGE", required = true)]
    images: Vec<String>,
}

/// The container config as Docker's image inspect shows it.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct InspectConfig {
    hostname: String,
    domainname: String,
    user: String,
    attach_stdin: bool,
    attach_stdout: bool,
    attach_stderr: bool,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    exposed_ports: BTreeMap<String, Empty>,
    tty: bool,
    open_stdin: bool,
    stdin_once: bool,
    env: Option<Vec<String>>,
    cmd: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    healthcheck: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    args_escaped: bool,
    image: String,
    volumes: Option<BTreeMap<String, Empty>>,
    working_dir: String,
    entrypoint: Option<Vec<String>>,
    on_build: Option<Vec<String>>,
    labels: Option<BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "String::is_empty")]
    stop_signal: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    shell: Vec<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct RootFs {
    #[serde(rename = "Type")]
    kind: String,
    layers: Vec<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Metadata {
    last_tag_time: String,
}

/// Docker's `ImageInspect`, in Docker's field order.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct InspectImage {
    #[serde(rename = "Id")]
    id: String,
    repo_tags: Vec<String>,
    repo_digests: Vec<String>,
    parent: String,
    comment: String,
    created: String,
    author: String,
    config: InspectConfig,
    architecture: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    variant: String,
    os: String,
    #[serde(rename = "OsVersion", skip_serializing_if = "String::is_empty")]
    os_version: String,
    size: u64,
    #[serde(rename = "RootFS")]
    root_fs: RootFs,
    metadata: Metadata,
}

fn none_if_empty<T: IsEmpty>(v: T) -> Option<T> {
    if v.empty() { None } else { Some(v) }
}

trait IsEmpty {
    fn empty(&self) -> bool;
}

impl<T> IsEmpty for Vec<T> {
    fn empty(&self) -> bool {
        self.is_empty()
    }
}

impl<K, V> IsEmpty for BTreeMap<K, V> {
    fn empty(&self) -> bool {
        self.is_empty()
    }
}

fn inspect_doc(record: &ImageRecord, docs: &ImageDocs) -> InspectImage {
    let cfg = &docs.config;
    let c = cfg.config.clone();
    InspectImage {
        id: record.id.to_string(),
        repo_tags: record.tags.iter().map(|t| t.familiar_string()).collect(),
        repo_digests: record
            .repo_digests
            .iter()
            .map(|t| t.familiar_string())
            .collect(),
        parent: String::new(),
        comment: cfg.comment.clone().unwrap_or_default(),
        created: cfg.created.clone().unwrap_or_default(),
        author: cfg.author.clone().unwrap_or_default(),
        config: InspectConfig {
            hostname: String::new(),
            domainname: String::new(),
            user: c.user,
            attach_stdin: false,
            attach_stdout: false,
            attach_stderr: false,
            exposed_ports: c.exposed_ports,
            tty: false,
            open_stdin: false,
            stdin_once: false,
            env: none_if_empty(c.env),
            cmd: c.cmd,
            healthcheck: c.healthcheck,
            args_escaped: c.args_escaped,
            image: String::new(),
            volumes: none_if_empty(c.volumes),
            working_dir: c.working_dir,
            entrypoint: c.entrypoint,
            on_build: none_if_empty(c.on_build),
            labels: none_if_empty(c.labels),
            stop_signal: c.stop_signal,
            shell: c.shell,
        },
        architecture: cfg.architecture.clone(),
        variant: cfg.variant.clone().unwrap_or_default(),
        os: cfg.os.clone(),
        os_version: cfg.os_version.clone().unwrap_or_default(),
        size: docs.size(),
        root_fs: RootFs {
            kind: cfg.rootfs.kind.clone(),
            layers: cfg.rootfs.diff_ids.iter().map(|d| d.to_string()).collect(),
        },
        // kiln does not record when a tag was set: Go's zero time, as
        // Docker shows for images never tagged locally.
        metadata: Metadata {
            last_tag_time: "0001-01-01T00:00:00Z".to_owned(),
        },
    }
}

fn load(store: &Store, name: &str) -> anyhow::Result<InspectImage> {
    let record = resolve(store, name)?;
    let docs = store.image_docs(&record)?;
    Ok(inspect_doc(&record, &docs))
}

/// JSON indented with four spaces, as the docker CLI prints it.
fn indent4<T: Serialize>(v: &T) -> anyhow::Result<String> {
    let mut buf = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(
        &mut buf,
        serde_json::ser::PrettyFormatter::with_indent(b"    "),
    );
    v.serialize(&mut ser)?;
    Ok(go_escape(&String::from_utf8(buf)?))
}

pub fn run(ctx: &Context, a: InspectArgs) -> anyhow::Result<()> {
    let store = ctx.store()?;
    let template = match a.format.as_deref() {
        None | Some("") => None,
        Some("json") => None,
        Some(f) => Some(Template::parse(f)?),
    };
    let mut found = Vec::new();
    let mut errors = Vec::new();
    for name in &a.images {
        match load(&store, name) {
            Ok(v) => found.push(v),
            Err(e) => errors.push(e),
        }
    }
    match &template {
        None => {
            let docs: Vec<String> = found.iter().map(indent4).collect::<Result<_, _>>()?;
            if docs.is_empty() {
                println!("[]");
            } else {
                let body: Vec<String> = docs
                    .iter()
                    .map(|d| {
                        d.lines()
                            .map(|l| format!("    {l}"))
                            .collect::<Vec<_>>()
                            .join("\n")
                    })
                    .collect();
                println!("[\n{}\n]", body.join(",\n"));
            }
        }
        Some(t) => {
            for doc in &found {
                let mut v = serde_json::to_value(doc)?;
                // Fields the JSON omits when empty still exist for templates.
                if let Some(m) = v.as_object_mut() {
                    for key in ["Variant", "OsVersion"] {
                        m.entry(key).or_insert_with(|| "".into());
                    }
                }
                println!("{}", t.render(&v)?);
            }
        }
    }
    match errors.len() {
        0 => Ok(()),
        1 => Err(errors.remove(0)),
        _ => {
            for e in &errors {
                match e.downcast_ref::<DockerError>() {
                    Some(d) => eprintln!("Error: {d}"),
                    None => eprintln!("Error: {e:#}"),
                }
            }
            Err(AlreadyReported.into())
        }
    }
}
