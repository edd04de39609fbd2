//! Image config documents (`application/vnd.oci.image.config.v1+json`,
//! `application/vnd.docker.container.image.v1+json`) with Docker's field
//! names and extensions (OnBuild, Healthcheck, Shell, ArgsEscaped), and
//! layer chain ids. Shared by the frontend (which computes configs), the
//! store and the exporters.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Digest;
use crate::nullable;

/// An empty JSON object, the value type of `ExposedPorts` and `Volumes`.
/// Reads as Go reads a `struct{}`: any object (its members ignored) or
/// `null`; any other value is an error.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Empty {}

impl<'de> Deserialize<'de> for Empty {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Empty, D::Error> {
        Option::<serde_json::Map<String, serde_json::Value>>::deserialize(d).map(|_| Empty {})
    }
}

/// The `config` member of an image config: how containers of the image run.
/// Field names are Docker's; empty fields are omitted. Read with Docker's
/// tolerance ([`crate::nullable`]): `null` and missing fields are empty,
/// other members (`Hostname`, `Image`, … of configs Docker commits) are
/// ignored, a value of the wrong type is an error.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerConfig {
    #[serde(
        default,
        deserialize_with = "nullable::default",
        skip_serializing_if = "String::is_empty"
    )]
    pub user: String,
    #[serde(
        default,
        deserialize_with = "nullable::default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub exposed_ports: BTreeMap<String, Empty>,
    #[serde(
        default,
        deserialize_with = "nullable::strings",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub env: Vec<String>,
    #[serde(
        default,
        deserialize_with = "nullable::optional_strings",
        skip_serializing_if = "Option::is_none"
    )]
    pub entrypoint: Option<Vec<String>>,
    #[serde(
        default,
        deserialize_with = "nullable::optional_strings",
        skip_serializing_if = "Option::is_none"
    )]
    pub cmd: Option<Vec<String>>,
    #[serde(
        default,
        deserialize_with = "nullable::default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub volumes: BTreeMap<String, Empty>,
    #[serde(
        default,
        deserialize_with = "nullable::default",
        skip_serializing_if = "String::is_empty"
    )]
    pub working_dir: String,
    #[serde(
        default,
        deserialize_with = "nullable::string_map",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub labels: BTreeMap<String, String>,
    #[serde(
        default,
        deserialize_with = "nullable::default",
        skip_serializing_if = "String::is_empty"
    )]
    pub stop_signal: String,
    #[serde(
        default,
        deserialize_with = "nullable::default",
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub args_escaped: bool,
    #[serde(
        default,
        deserialize_with = "nullable::strings",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub on_build: Vec<String>,
    /// Docker's health check (`Test`, `Interval`, …), kept as written: an
    /// object, or `None` for `null` or missing.
    #[serde(
        default,
        deserialize_with = "health_check",
        skip_serializing_if = "Option::is_none"
    )]
    pub healthcheck: Option<serde_json::Value>,
    #[serde(
        default,
        deserialize_with = "nullable::strings",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub shell: Vec<String>,
}

/// `Healthcheck`: an object or `null`, as Go reads a `*HealthConfig`.
fn health_check<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<serde_json::Value>, D::Error> {
    Ok(
        Option::<serde_json::Map<String, serde_json::Value>>::deserialize(d)?
            .map(serde_json::Value::Object),
    )
}

/// `rootfs` of an image config: the layers' diff ids, base first. A
/// missing or `null` type reads as `layers`, missing or `null` diff ids as
/// none (a zero-layer image).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type", default = "layers", deserialize_with = "rootfs_type")]
    pub kind: String,
    #[serde(default, deserialize_with = "nullable::default")]
    pub diff_ids: Vec<Digest>,
}

fn layers() -> String {
    "layers".to_owned()
}

fn rootfs_type<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_else(layers))
}

impl Default for RootFs {
    fn default() -> RootFs {
        RootFs {
            kind: layers(),
            diff_ids: Vec::new(),
        }
    }
}

/// One entry of an image config's history, newest last.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// RFC 3339 time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// The step changed only the config: no layer belongs to it.
    #[serde(
        default,
        deserialize_with = "nullable::default",
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub empty_layer: bool,
}

/// An image config (`application/vnd.oci.image.config.v1+json` or
/// `application/vnd.docker.container.image.v1+json`), read with Docker's
/// tolerance: `null` and missing fields are empty, unknown members
/// (`container_config`, `docker_version`, …) are ignored, a value of the
/// wrong type is an error. Read documents with [`ImageConfig::from_json`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    #[serde(default, deserialize_with = "nullable::default")]
    pub architecture: String,
    /// Docker's top-level comment (`docker import -m`, `docker commit -m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(default, deserialize_with = "nullable::object")]
    pub config: ContainerConfig,
    /// RFC 3339 time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(
        default,
        deserialize_with = "nullable::objects",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub history: Vec<History>,
    #[serde(default, deserialize_with = "nullable::default")]
    pub os: String,
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<String>,
    #[serde(default, deserialize_with = "nullable::object")]
    pub rootfs: RootFs,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl ImageConfig {
    /// Reads a config document: a JSON object, with Docker's tolerance.
    pub fn from_json(bytes: &[u8]) -> Result<ImageConfig, serde_json::Error> {
        serde_json::from_slice::<nullable::Object<ImageConfig>>(bytes).map(|o| o.0)
    }

    /// The creation time, if present and valid RFC 3339.
    pub fn created_time(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        parse_time(self.created.as_deref()?)
    }

    /// The config's canonical JSON bytes (the image id is their digest).
    pub fn to_bytes(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(self)
    }
}

/// Parses an RFC 3339 time as found in configs and history.
pub fn parse_time(s: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&chrono::Utc))
}

/// The chain ids of a stack of layers (OCI image spec): the first is the
/// first diff id; each next one is `sha256("<previous> <diff id>")`.
pub fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for diff_id in diff_ids {
        let next = match out.last() {
            None => diff_id.clone(),
            Some(prev) => Digest::sha256(format!("{prev} {diff_id}").as_bytes()),
        };
        out.push(next);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:281c83f188b1740d8c5ef1e390fa12a106d5a141b08086db01cd309b1c7eb210";

    fn parse(json: &str) -> Result<ImageConfig, serde_json::Error> {
        ImageConfig::from_json(json.as_bytes())
    }

    /// The config `docker import` writes (Docker 20.10): every list and map
    /// of the container config `null`, plus the members kiln ignores.
    const DOCKER_IMPORT: &str = r#"{"architecture":"amd64","comment":"Imported from -","config":{"Hostname":"","Domainname":"","User":"","AttachStdin":false,"AttachStdout":false,"AttachStderr":false,"Tty":false,"OpenStdin":false,"StdinOnce":false,"Env":null,"Cmd":null,"Image":"","Volumes":null,"WorkingDir":"","Entrypoint":null,"OnBuild":null,"Labels":null},"container_config":{"Hostname":"","Env":null,"Cmd":null,"Volumes":null,"Labels":null},"created":"2026-12-07T16:01:11.608380285Z","docker_version":"20.10.24+dfsg1","history":[{"created":"2026-12-07T16:01:11.608380285Z","comment":"Imported from -"}],"os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:8961fee8f856cf99e61546be8f6789c7c5be9c5665dc3abd3bd1e8730f33e6fe"]}}"#;

    #[test]
    fn docker_import_config_reads() {
        let c = parse(DOCKER_IMPORT).unwrap();
        assert_eq!(c.architecture, "amd64");
        assert_eq!(c.comment.as_deref(), Some("Imported from -"));
        assert_eq!(c.config, ContainerConfig::default());
        assert_eq!(c.rootfs.diff_ids.len(), 1);
        assert_eq!(c.history.len(), 1);
    }

    #[test]
    fn null_container_config_fields_are_empty() {
        let fields = [
            "User",
            "ExposedPorts",
            "Env",
            "Entrypoint",
            "Cmd",
            "Volumes",
            "WorkingDir",
            "Labels",
            "StopSignal",
            "ArgsEscaped",
            "OnBuild",
            "Healthcheck",
            "Shell",
        ];
        let members: Vec<String> = fields.iter().map(|f| format!("\"{f}\":null")).collect();
        let json = format!(
            r#"{{"architecture":"amd64","os":"linux","config":{{{}}},"rootfs":{{"type":"layers","diff_ids":[]}}}}"#,
            members.join(",")
        );
        let c = parse(&json).unwrap();
        assert_eq!(c.config, ContainerConfig::default());
        // The same with every field missing.
        assert_eq!(
            parse(r#"{"architecture":"amd64","os":"linux","config":{}}"#)
                .unwrap()
                .config,
            ContainerConfig::default()
        );
    }

    #[test]
    fn null_and_missing_top_level_fields() {
        // BuildKit's zero-layer image as pushed by dockerd 20.10.
        let c = parse(
            r#"{"architecture":"amd64","config":{"Env":["PATH=/bin"],"OnBuild":null},"created":null,"history":[{"created_by":"LABEL a=b","empty_layer":true}],"os":"linux","rootfs":{"type":"layers","diff_ids":null}}"#,
        )
        .unwrap();
        assert!(c.rootfs.diff_ids.is_empty());
        assert_eq!(c.rootfs.kind, "layers");
        assert_eq!(c.created, None);
        assert!(c.history[0].empty_layer);

        let c = parse(
            r#"{"architecture":null,"os":null,"config":null,"history":null,"rootfs":null,"author":null,"comment":null,"variant":null,"os.version":null}"#,
        )
        .unwrap();
        assert_eq!(c, ImageConfig::default());
        let c = parse("{}").unwrap();
        assert_eq!(c, ImageConfig::default());
        assert_eq!(c.rootfs.kind, "layers");

        let c = parse(r#"{"rootfs":{},"history":[{"created":null,"created_by":null,"author":null,"comment":null,"empty_layer":null}]}"#).unwrap();
        assert_eq!(c.rootfs, RootFs::default());
        assert_eq!(c.history, vec![History::default()]);
    }

    #[test]
    fn null_items_and_values() {
        let c = parse(
            r#"{"config":{"Env":["A=1",null],"Cmd":[null],"Labels":{"k":null},"ExposedPorts":{"80/tcp":null,"81/udp":{"x":1}},"Volumes":{"/data":{}}}}"#,
        )
        .unwrap();
        assert_eq!(c.config.env, ["A=1", ""]);
        assert_eq!(c.config.cmd, Some(vec![String::new()]));
        assert_eq!(c.config.labels["k"], "");
        assert_eq!(c.config.exposed_ports.len(), 2);
        assert_eq!(c.config.volumes.len(), 1);
        // `null` and `[]` stay distinct for Cmd and Entrypoint.
        let c = parse(r#"{"config":{"Cmd":[],"Entrypoint":null}}"#).unwrap();
        assert_eq!(c.config.cmd, Some(vec![]));
        assert_eq!(c.config.entrypoint, None);
    }

    #[test]
    fn wrong_types_are_errors() {
        for bad in [
            r#"{"architecture":1}"#,
            r#"{"os":[]}"#,
            r#"{"config":[]}"#,
            r#"{"config":"x"}"#,
            r#"{"config":{"Env":"A=1"}}"#,
            r#"{"config":{"Env":[1]}}"#,
            r#"{"config":{"Cmd":"sh"}}"#,
            r#"{"config":{"Entrypoint":{}}}"#,
            r#"{"config":{"Labels":["a"]}}"#,
            r#"{"config":{"Labels":{"a":1}}}"#,
            r#"{"config":{"ExposedPorts":["80/tcp"]}}"#,
            r#"{"config":{"ExposedPorts":{"80/tcp":"yes"}}}"#,
            r#"{"config":{"Volumes":{"/data":[]}}}"#,
            r#"{"config":{"User":0}}"#,
            r#"{"config":{"ArgsEscaped":"true"}}"#,
            r#"{"config":{"OnBuild":"RUN x"}}"#,
            r#"{"config":{"Healthcheck":"CMD x"}}"#,
            r#"{"config":{"Shell":"sh"}}"#,
            "[]",
            "null",
            r#"{"history":{}}"#,
            r#"{"history":[[]]}"#,
            r#"{"history":[{"empty_layer":"yes"}]}"#,
            r#"{"history":[{"created":1}]}"#,
            r#"{"rootfs":[]}"#,
            r#"{"rootfs":{"type":1}}"#,
            r#"{"rootfs":{"diff_ids":"sha256:00"}}"#,
            r#"{"rootfs":{"diff_ids":["not a digest"]}}"#,
            r#"{"created":1700000000}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn reserialized_config_is_sparse() {
        let c = parse(DOCKER_IMPORT).unwrap();
        let json = String::from_utf8(c.to_bytes().unwrap()).unwrap();
        assert!(json.contains(r#""config":{}"#), "{json}");
        assert!(!json.contains("null"), "{json}");
        assert!(!json.contains("Hostname"), "{json}");
        let c = parse(&format!(r#"{{"rootfs":{{"diff_ids":["{D1}"]}}}}"#)).unwrap();
        assert_eq!(c.rootfs.kind, "layers");
    }
}
