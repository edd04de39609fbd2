//! Building a one-layer image from a root filesystem tarball (`kiln import`).
//!
//! The tarball (plain, gzip or zstd) is decompressed, checked to be a tar
//! stream, and stored **uncompressed** as the layer blob, with the Docker
//! media type `application/vnd.docker.image.rootfs.diff.tar`: its digest is
//! then also its diff id, `images` shows its unpacked size as Docker does,
//! and exporters compress it when they write it out. The config and a
//! Docker v2 schema 2 manifest are written next, then the image record.

use std::io::{self, Read, Seek, Write};

use kiln_oci::{Digest, Platform};
use oci_spec::image::{Descriptor, ImageManifestBuilder, MediaType};

use crate::compression::decompress;
use crate::error::{Error, ExtractError};
use crate::image::{ContainerConfig, History, ImageConfig, ImageError, RootFs, media_type};
use crate::images::ImageRecord;
use crate::store::Store;

/// What `import` puts into the image besides the layer.
#[derive(Clone, Debug)]
pub struct ImportOptions {
    /// The container config (from `--change` instructions).
    pub config: ContainerConfig,
    pub platform: Platform,
    /// The config's comment and the history entry's comment.
    pub comment: String,
    /// The creation time of the image and of its history entry.
    pub created: chrono::DateTime<chrono::Utc>,
}

/// A reader that copies everything read through it into a writer. A
/// failed write (a full disk) is kept apart, so that it is not taken for
/// a bad archive.
struct Tee<R, W> {
    inner: R,
    copy: W,
    write_error: Option<io::Error>,
}

impl<R: Read, W: Write> Read for Tee<R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Err(e) = self.copy.write_all(&buf[..n]) {
            let kind = e.kind();
            self.write_error = Some(e);
            return Err(io::Error::new(kind, "failed to write the spool file"));
        }
        Ok(n)
    }
}

impl Store {
    /// Imports a root filesystem tarball as a new single-layer image and
    /// returns its record (without tags).
    pub fn import_rootfs<R: Read>(
        &self,
        reader: R,
        opts: &ImportOptions,
    ) -> Result<ImageRecord, ImageError> {
        let archive_err = |source: ExtractError| ImageError::Archive { source };
        let (_, stream) = decompress(reader).map_err(archive_err)?;

        // Spool the uncompressed stream while checking it is a tar.
        let ingest = self.ingest_dir();
        let mut spool = tempfile::Builder::new()
            .prefix("import-")
            .tempfile_in(&ingest)
            .map_err(|e| Error::io("create temporary file in", &ingest, e))?;
        let spool_path = spool.path().to_path_buf();
        {
            let mut tee = Tee {
                inner: stream,
                copy: io::BufWriter::new(spool.as_file_mut()),
                write_error: None,
            };
            // Keep what follows the end-of-archive marker too: the diff id
            // is the digest of the whole stream.
            let read = check_tar(&mut tee).and_then(|()| io::copy(&mut tee, &mut io::sink()));
            if let Some(e) = tee.write_error.take() {
                return Err(Error::io("write", &spool_path, e).into());
            }
            read.map_err(|source| archive_err(ExtractError::Read { source }))?;
            tee.copy
                .flush()
                .map_err(|e| Error::io("write", &spool_path, e))?;
        }
        spool
            .as_file_mut()
            .rewind()
            .map_err(|e| Error::io("rewind", &spool_path, e))?;
        let (diff_id, layer_size) = self.write_blob(spool.as_file(), None, None)?;
        drop(spool);
        tracing::debug!(%diff_id, layer_size, "stored imported layer");

        let created = opts
            .created
            .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
        let config = ImageConfig {
            architecture: opts.platform.architecture.clone(),
            comment: Some(opts.comment.clone()),
            author: None,
            config: opts.config.clone(),
            created: Some(created.clone()),
            history: vec![History {
                created: Some(created),
                comment: Some(opts.comment.clone()),
                ..History::default()
            }],
            os: opts.platform.os.clone(),
            os_version: None,
            rootfs: RootFs {
                diff_ids: vec![diff_id.clone()],
                ..RootFs::default()
            },
            variant: opts.platform.variant.clone(),
        };
        let config_bytes = config.to_bytes().map_err(|source| ImageError::Serialize {
            what: "image config",
            source,
        })?;
        let config_digest = self.write_blob_bytes(&config_bytes)?;

        let manifest = ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::Other(media_type::DOCKER_MANIFEST.to_owned()))
            .config(Descriptor::new(
                MediaType::Other(media_type::DOCKER_CONFIG.to_owned()),
                config_bytes.len() as u64,
                oci_digest(&config_digest)?,
            ))
            .layers(vec![Descriptor::new(
                MediaType::Other(media_type::DOCKER_LAYER_TAR.to_owned()),
                layer_size,
                oci_digest(&diff_id)?,
            )])
            .build()
            .map_err(|source| ImageError::Manifest { source })?;
        let manifest_bytes =
            serde_json::to_vec(&manifest).map_err(|source| ImageError::Serialize {
                what: "image manifest",
                source,
            })?;
        let manifest_digest = self.write_blob_bytes(&manifest_bytes)?;

        let record = self.put_image(ImageRecord::new(manifest_digest, config_digest))?;
        tracing::info!(id = %record.id, "imported image");
        Ok(record)
    }
}

fn oci_digest(d: &Digest) -> Result<oci_spec::image::Digest, ImageError> {
    d.as_str()
        .parse()
        .map_err(|source| ImageError::Manifest { source })
}

/// Reads a tar stream up to its end-of-archive marker, failing on a
/// malformed header.
fn check_tar<R: Read>(reader: R) -> io::Result<()> {
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries()? {
        let entry = entry?;
        entry.path()?;
    }
    Ok(())
}
