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

use kiln_oci::{Digest, DigestError};
use oci_spec::image::ImageManifest;

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

pub use kiln_oci::config::{
    ContainerConfig, Empty, History, ImageConfig, RootFs, chain_ids, parse_time,
};

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
        ImageConfig::from_json(&bytes).map_err(|source| ImageError::Parse {
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
