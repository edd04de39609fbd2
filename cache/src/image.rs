//! Image documents: manifests and configs as stored in blobs.
//!
//! Manifests are read and written with `oci-spec`'s [`ImageManifest`],
//! which has the same shape for OCI (`application/vnd.oci.image.manifest.v1+json`)
//! and Docker v2 schema 2 (`application/vnd.docker.distribution.manifest.v2+json`)
//! manifests; only the media types differ.
//!
//! Configs use kiln's own [`ImageConfig`] rather than `oci-spec`'s
//! `ImageConfiguration`, for two reasons: Docker's config carries fields the
//! OCI type drops (`OnBuild`, `Healthcheck`, `Shell`, `ArgsEscaped`, the
//! top-level `comment`), and a config's digest is the image id, so its JSON
//! must be deterministic: every map here is a `BTreeMap` (sorted keys, as Go
//! writes them), never a `HashMap`.

use std::collections::BTreeMap;

use kiln_oci::{Digest, DigestError};
use oci_spec::image::ImageManifest;
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::images::ImageRecord;
use crate::store::Store;

/// Media types kiln writes and recognises.
pub mod media_type {
    /// Docker v2 schema 2 image manifest.
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    /// Docker image config.
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    /// Docker uncompressed layer tar.
    pub const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";
    /// Docker gzip-compressed layer tar.
    pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
    /// OCI image manifest.
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    /// OCI image config.
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
}

/// Largest manifest or config kiln reads into memory.
pub const MAX_DOCUMENT_SIZE: u64 = 8 << 20;

/// Errors of reading, writing and interpreting image documents.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    #[error(transparent)]
    Store(#[from] Error),

    /// A manifest or config blob is not a valid document.
    #[error("{what} {digest} is not valid")]
    Parse {
        what: &'static str,
        digest: Digest,
        #[source]
        source: serde_json::Error,
    },

    /// A descriptor in a manifest has a digest kiln cannot use.
    #[error("manifest {manifest} has an invalid digest")]
    BadDescriptor {
        manifest: Digest,
        #[source]
        source: DigestError,
    },

    #[error("failed to serialize {what}")]
    Serialize {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },

    /// The rootfs archive could not be decompressed or is not a tar stream.
    #[error("invalid rootfs archive")]
    Archive {
        #[source]
        source: crate::error::ExtractError,
    },

    /// Building a manifest failed.
    #[error("failed to build the image manifest")]
    Manifest {
        #[source]
        source: oci_spec::OciSpecError,
    },
}

/// An empty JSON object, the value type of `ExposedPorts` and `Volumes`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Empty {}

/// The `config` member of an image config: how containers of the image run.
/// Field names are Docker's; empty fields are omitted.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerConfig {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub exposed_ports: BTreeMap<String, Empty>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub volumes: BTreeMap<String, Empty>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub working_dir: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub stop_signal: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub args_escaped: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on_build: Vec<String>,
    /// Docker's health check (`Test`, `Interval`, …), kept as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shell: Vec<String>,
}

/// `rootfs` of an image config: the layers' diff ids, base first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub diff_ids: Vec<Digest>,
}

impl Default for RootFs {
    fn default() -> RootFs {
        RootFs {
            kind: "layers".to_owned(),
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
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub empty_layer: bool,
}

/// An image config (`application/vnd.oci.image.config.v1+json` or
/// `application/vnd.docker.container.image.v1+json`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    pub architecture: String,
    /// Docker's top-level comment (`docker import -m`, `docker commit -m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(default)]
    pub config: ContainerConfig,
    /// RFC 3339 time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<History>,
    pub os: String,
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<String>,
    #[serde(default)]
    pub rootfs: RootFs,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl ImageConfig {
    /// The creation time, if present and valid RFC 3339.
    pub fn created_time(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        parse_time(self.created.as_deref()?)
    }

    /// The config's canonical JSON bytes (the image id is their digest).
    pub fn to_bytes(&self) -> Result<Vec<u8>, ImageError> {
        serde_json::to_vec(self).map_err(|source| ImageError::Serialize {
            what: "image config",
            source,
        })
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

/// A kiln digest from an `oci-spec` descriptor digest.
pub fn descriptor_digest(
    manifest: &Digest,
    digest: &oci_spec::image::Digest,
) -> Result<Digest, ImageError> {
    digest
        .to_string()
        .parse()
        .map_err(|source| ImageError::BadDescriptor {
            manifest: manifest.clone(),
            source,
        })
}

/// An image's manifest and config, read from the store.
#[derive(Clone, Debug)]
pub struct ImageDocs {
    pub manifest: ImageManifest,
    pub config: ImageConfig,
    /// Layer blob digests, base first.
    pub layers: Vec<Digest>,
}

impl ImageDocs {
    /// The sum of the layer sizes the manifest declares: the image size
    /// `images` and `inspect` show. Layers kiln creates are stored
    /// uncompressed, so for them this is the unpacked size, as Docker
    /// shows it; for pulled gzip layers it is the compressed size.
    pub fn size(&self) -> u64 {
        self.manifest.layers().iter().map(|l| l.size()).sum()
    }

    /// Every blob the image refers to: manifest, config and layers.
    pub fn blobs(&self, record: &ImageRecord) -> Vec<Digest> {
        let mut v = vec![record.manifest_digest.clone(), record.config_digest.clone()];
        v.extend(self.layers.iter().cloned());
        v
    }
}

impl Store {
    /// Reads and parses an image manifest blob.
    pub fn read_manifest(&self, digest: &Digest) -> Result<ImageManifest, ImageError> {
        let bytes = self.read_blob_bytes(digest, MAX_DOCUMENT_SIZE)?;
        serde_json::from_slice(&bytes).map_err(|source| ImageError::Parse {
            what: "manifest",
            digest: digest.clone(),
            source,
        })
    }

    /// Reads and parses an image config blob.
    pub fn read_config(&self, digest: &Digest) -> Result<ImageConfig, ImageError> {
        let bytes = self.read_blob_bytes(digest, MAX_DOCUMENT_SIZE)?;
        serde_json::from_slice(&bytes).map_err(|source| ImageError::Parse {
            what: "image config",
            digest: digest.clone(),
            source,
        })
    }

    /// Reads an image's manifest and config.
    pub fn image_docs(&self, record: &ImageRecord) -> Result<ImageDocs, ImageError> {
        let manifest = self.read_manifest(&record.manifest_digest)?;
        let config = self.read_config(&record.config_digest)?;
        let layers = manifest
            .layers()
            .iter()
            .map(|l| descriptor_digest(&record.manifest_digest, l.digest()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ImageDocs {
            manifest,
            config,
            layers,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_the_spec() {
        let a = Digest::sha256(b"a");
        let b = Digest::sha256(b"b");
        let ids = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(ids[0], a);
        assert_eq!(ids[1], Digest::sha256(format!("{a} {b}").as_bytes()));
    }

    #[test]
    fn config_json_is_sorted_and_sparse() {
        let mut cfg = ImageConfig {
            architecture: "amd64".into(),
            os: "linux".into(),
            ..Default::default()
        };
        cfg.config.labels.insert("z".into(), "1".into());
        cfg.config.labels.insert("a".into(), "2".into());
        let json = String::from_utf8(cfg.to_bytes().unwrap()).unwrap();
        assert_eq!(
            json,
            r#"{"architecture":"amd64","config":{"Labels":{"a":"2","z":"1"}},"os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#
        );
    }
}
