//! The documents of image archives: OCI descriptors, manifests, indexes and
//! layouts, Docker's `manifest.json`, and the few image-config fields the
//! exporter needs.
//!
//! Only the fields kiln reads or writes are modelled; unknown fields are
//! ignored when reading, and a `null` list or map reads as empty, as Go
//! tools read them ([`kiln_oci::nullable`]). Digests are parsed into [`Digest`] while
//! deserialising, so a malformed digest is a document error.

use std::collections::BTreeMap;

use kiln_oci::{Digest, nullable};
use serde::{Deserialize, Serialize};

/// `application/vnd.oci.image.manifest.v1+json`
pub const MEDIA_TYPE_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// `application/vnd.oci.image.index.v1+json`
pub const MEDIA_TYPE_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// `application/vnd.oci.image.config.v1+json`
pub const MEDIA_TYPE_OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// `application/vnd.oci.image.layer.v1.tar`
pub const MEDIA_TYPE_OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
/// `application/vnd.oci.image.layer.v1.tar+gzip`
pub const MEDIA_TYPE_OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// `application/vnd.oci.image.layer.v1.tar+zstd`
pub const MEDIA_TYPE_OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
/// `application/vnd.docker.distribution.manifest.v2+json`
pub const MEDIA_TYPE_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// `application/vnd.docker.distribution.manifest.list.v2+json`
pub const MEDIA_TYPE_DOCKER_MANIFEST_LIST: &str =
    "application/vnd.docker.distribution.manifest.list.v2+json";
/// `application/vnd.docker.container.image.v1+json`
pub const MEDIA_TYPE_DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// `application/vnd.docker.image.rootfs.diff.tar`
pub const MEDIA_TYPE_DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";

/// The annotation holding the tag (containerd's convention, which Docker
/// and BuildKit follow: only the tag, e.g. `latest`) or, from other tools,
/// a full reference.
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// containerd's annotation holding the full image name,
/// `docker.io/library/busybox:latest`.
pub const ANNOTATION_IMAGE_NAME: &str = "io.containerd.image.name";

/// The content of `oci-layout`.
pub const OCI_LAYOUT_VERSION: &str = "1.0.0";

/// Whether `media_type` is a single-image manifest kiln can read.
pub fn is_image_manifest(media_type: &str) -> bool {
    media_type == MEDIA_TYPE_OCI_MANIFEST || media_type == MEDIA_TYPE_DOCKER_MANIFEST
}

/// Whether `media_type` is an index / manifest list.
pub fn is_index(media_type: &str) -> bool {
    media_type == MEDIA_TYPE_OCI_INDEX || media_type == MEDIA_TYPE_DOCKER_MANIFEST_LIST
}

/// Whether `media_type` is an image config.
pub fn is_image_config(media_type: &str) -> bool {
    media_type == MEDIA_TYPE_OCI_CONFIG || media_type == MEDIA_TYPE_DOCKER_CONFIG
}

/// The platform of a descriptor in an index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DescriptorPlatform {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// An OCI content descriptor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<Vec<String>>,
    #[serde(
        default,
        deserialize_with = "nullable::string_map",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<DescriptorPlatform>,
}

impl Descriptor {
    pub fn new(media_type: &str, digest: Digest, size: u64) -> Descriptor {
        Descriptor {
            media_type: media_type.to_owned(),
            digest,
            size,
            urls: None,
            annotations: BTreeMap::new(),
            platform: None,
        }
    }
}

/// An image manifest (OCI, or Docker schema 2, which has the same shape).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub config: Descriptor,
    #[serde(default, deserialize_with = "nullable::default")]
    pub layers: Vec<Descriptor>,
    #[serde(
        default,
        deserialize_with = "nullable::string_map",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub annotations: BTreeMap<String, String>,
}

/// An image index: `index.json` of an OCI layout.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default, deserialize_with = "nullable::default")]
    pub manifests: Vec<Descriptor>,
    #[serde(
        default,
        deserialize_with = "nullable::string_map",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub annotations: BTreeMap<String, String>,
}

/// The `oci-layout` file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OciLayout {
    pub image_layout_version: String,
}

/// One entry of a docker-archive's `manifest.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DockerManifestEntry {
    /// Archive path of the config (`blobs/sha256/<hex>` or `<hex>.json`).
    pub config: String,
    /// Familiar references (`busybox:latest`); `null` when untagged, as
    /// Docker writes it.
    #[serde(default)]
    pub repo_tags: Option<Vec<String>>,
    /// Archive paths of the uncompressed layer tars, base first.
    #[serde(default, deserialize_with = "nullable::default")]
    pub layers: Vec<String>,
    /// Descriptors of foreign layers by diff id (written by Docker only for
    /// non-distributable layers; kiln never writes it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer_sources: Option<BTreeMap<Digest, Descriptor>>,
}

/// The `rootfs` of an image config.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct RootFs {
    #[serde(default, rename = "type", deserialize_with = "nullable::default")]
    pub kind: String,
    #[serde(default, deserialize_with = "nullable::default")]
    pub diff_ids: Vec<Digest>,
}

/// The fields of an image config the exporter reads, with Docker's
/// tolerance: `null` is the same as missing (`"diff_ids": null` in a
/// zero-layer image BuildKit made, for one).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct ImageConfig {
    #[serde(default, deserialize_with = "nullable::default")]
    pub architecture: String,
    #[serde(default, deserialize_with = "nullable::default")]
    pub os: String,
    #[serde(default)]
    pub variant: Option<String>,
    #[serde(default, deserialize_with = "nullable::default")]
    pub rootfs: RootFs,
}

impl ImageConfig {
    /// The platform for an index descriptor, when the config names one.
    pub fn platform(&self) -> Option<DescriptorPlatform> {
        if self.architecture.is_empty() || self.os.is_empty() {
            return None;
        }
        Some(DescriptorPlatform {
            architecture: self.architecture.clone(),
            os: self.os.clone(),
            variant: self.variant.clone().filter(|v| !v.is_empty()),
        })
    }
}
