//! Manifest and index documents, as far as pulling and pushing need them.
//!
//! Only the fields kiln reads are parsed; the bytes themselves are what is
//! stored and pushed, never a re-serialisation.

use kiln_oci::{Digest, Platform};
use serde::Deserialize;

/// Media types of manifests and indexes.
pub mod media_type {
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    pub const DOCKER_MANIFEST_LIST: &str =
        "application/vnd.docker.distribution.manifest.list.v2+json";
    pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
    pub const DOCKER_SCHEMA1_SIGNED: &str =
        "application/vnd.docker.distribution.manifest.v1+prettyjws";
}

/// The `Accept` header for manifest requests.
pub(crate) const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// A content descriptor.
#[derive(Clone, Debug, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default)]
    pub platform: Option<Platform>,
}

/// An image manifest or an index, whichever the bytes hold.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct Document {
    #[serde(rename = "schemaVersion", default)]
    pub schema_version: Option<u32>,
    #[serde(rename = "mediaType", default)]
    pub media_type: Option<String>,
    #[serde(default)]
    pub config: Option<Descriptor>,
    #[serde(default)]
    pub layers: Option<Vec<Descriptor>>,
    #[serde(default)]
    pub manifests: Option<Vec<Descriptor>>,
}

impl Document {
    pub(crate) fn parse(bytes: &[u8]) -> Result<Document, String> {
        serde_json::from_slice(bytes).map_err(|e| e.to_string())
    }

    /// The media type: the `Content-Type` the registry sent, if it is a
    /// known one, else the document's own, else guessed from its shape.
    pub(crate) fn effective_media_type(&self, content_type: Option<&str>) -> String {
        let known = [
            media_type::OCI_MANIFEST,
            media_type::OCI_INDEX,
            media_type::DOCKER_MANIFEST,
            media_type::DOCKER_MANIFEST_LIST,
            media_type::DOCKER_SCHEMA1,
            media_type::DOCKER_SCHEMA1_SIGNED,
        ];
        let ct = content_type.map(|c| c.split(';').next().unwrap_or(c).trim());
        if let Some(ct) = ct
            && known.contains(&ct)
        {
            return ct.to_owned();
        }
        if let Some(mt) = &self.media_type
            && !mt.is_empty()
        {
            return mt.clone();
        }
        if self.schema_version == Some(1) {
            media_type::DOCKER_SCHEMA1.to_owned()
        } else if self.manifests.is_some() {
            media_type::OCI_INDEX.to_owned()
        } else {
            media_type::OCI_MANIFEST.to_owned()
        }
    }
}

pub(crate) fn is_index(media_type: &str) -> bool {
    media_type == media_type::OCI_INDEX || media_type == media_type::DOCKER_MANIFEST_LIST
}

pub(crate) fn is_image_manifest(media_type: &str) -> bool {
    media_type == media_type::OCI_MANIFEST || media_type == media_type::DOCKER_MANIFEST
}

/// Picks the manifest for `wanted` from an index's entries: an exact
/// match first, then the most preferred platform `wanted` can run.
/// Entries without a platform and attestation entries (`unknown/unknown`)
/// are never picked.
pub(crate) fn select_platform<'a>(
    entries: &'a [Descriptor],
    wanted: &Platform,
) -> Option<&'a Descriptor> {
    wanted.pick(
        entries
            .iter()
            .filter(|d| is_image_manifest(&d.media_type) || d.media_type.is_empty())
            .filter_map(|d| d.platform.as_ref().map(|p| (d, p))),
    )
}

/// The platforms an index offers, as `os/arch[/variant]`.
pub(crate) fn platforms(entries: &[Descriptor]) -> Vec<String> {
    entries
        .iter()
        .filter_map(|d| d.platform.as_ref())
        .filter(|p| p.os != "unknown")
        .map(ToString::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(platform: &str) -> Descriptor {
        let p: Platform = platform.parse().unwrap();
        Descriptor {
            media_type: media_type::OCI_MANIFEST.into(),
            digest: Digest::sha256(platform.as_bytes()),
            size: 1,
            platform: Some(p),
        }
    }

    #[test]
    fn selects_exact_then_compatible() {
        let entries = vec![
            entry("linux/386"),
            entry("linux/arm64"),
            entry("linux/amd64"),
        ];
        let amd64 = Platform::new("linux", "amd64");
        assert_eq!(
            select_platform(&entries, &amd64).unwrap().digest,
            Digest::sha256(b"linux/amd64")
        );
        let only386 = vec![entry("linux/386")];
        assert_eq!(
            select_platform(&only386, &amd64).unwrap().digest,
            Digest::sha256(b"linux/386")
        );
        let arm = vec![entry("linux/arm64")];
        assert!(select_platform(&arm, &amd64).is_none());
        assert_eq!(platforms(&arm), vec!["linux/arm64".to_owned()]);
    }

    #[test]
    fn media_type_detection() {
        let d = Document::parse(br#"{"schemaVersion":2,"manifests":[]}"#).unwrap();
        assert_eq!(d.effective_media_type(None), media_type::OCI_INDEX);
        assert_eq!(
            d.effective_media_type(Some(
                "application/vnd.docker.distribution.manifest.list.v2+json; charset=utf-8"
            )),
            media_type::DOCKER_MANIFEST_LIST
        );
        let d = Document::parse(br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{"mediaType":"x","digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","size":1},"layers":[]}"#).unwrap();
        assert_eq!(
            d.effective_media_type(Some("application/json")),
            media_type::DOCKER_MANIFEST
        );
    }
}
