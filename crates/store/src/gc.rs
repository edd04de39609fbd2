//! Deleting images and the content only they use: `rmi`, `image prune`,
//! and the disk usage `system df` reports.
//!
//! An image's content is its manifest, config and layer blobs, and the
//! snapshots of its layer stack (by chain id). Deleting an image removes
//! its record first, then every blob and snapshot of it that no remaining
//! image refers to. If another image's documents cannot be read, its
//! layers are unknown, so no layer blob or snapshot is deleted at all
//! (manifests and configs still are): a corrupt image never causes data
//! loss elsewhere.
//!
//! Deletions honour the holds of other live kiln processes (see
//! [`crate::lease`]; a process's holds protect it from others, not from
//! itself):
//! a held image is not deleted ([`Error::ImageInUse`]; untagging it is
//! fine), and held blobs and snapshots, and everything held images refer
//! to, are kept. Deleting runs under the exclusive `gc.lock`, so no hold
//! is added halfway through.

use std::collections::BTreeSet;

use kiln_oci::Digest;

use crate::error::Error;
use crate::image::{ImageError, chain_ids};
use crate::images::{ImageId, ImageRecord};
use crate::lease::Holds;
use crate::store::Store;

/// What deleting one image removed.
#[derive(Clone, Debug)]
pub struct RemovedImage {
    pub record: ImageRecord,
    /// Blobs deleted, sorted.
    pub blobs: Vec<Digest>,
    /// Snapshots (chain ids) deleted, sorted.
    pub snapshots: Vec<Digest>,
    /// Bytes of the deleted blobs.
    pub reclaimed: u64,
}

/// Which images `prune_images` removes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PruneScope {
    /// Images without tags.
    Dangling,
    /// Every image (none can be in use by a container yet).
    All,
}

/// What `system df` reports about images.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImagesUsage {
    /// Number of images.
    pub total: usize,
    /// Bytes of the distinct layer blobs of all images (shared layers count once).
    pub size: u64,
    /// Images containers use.
    pub active: usize,
    /// Bytes of layers no image in use shares.
    pub reclaimable: u64,
}

/// Content the images of the store refer to.
pub(crate) struct References {
    pub(crate) blobs: BTreeSet<Digest>,
    pub(crate) chains: BTreeSet<Digest>,
    /// Every image's documents could be read, so `blobs` includes all layers.
    pub(crate) complete: bool,
}

impl Store {
    pub(crate) fn references(&self, images: &[ImageRecord]) -> References {
        let mut refs = References {
            blobs: BTreeSet::new(),
            chains: BTreeSet::new(),
            complete: true,
        };
        for record in images {
            refs.blobs.insert(record.manifest_digest.clone());
            refs.blobs.insert(record.config_digest.clone());
            match self.image_docs(record) {
                Ok(docs) => {
                    refs.blobs.extend(docs.layers);
                    refs.chains.extend(chain_ids(&docs.config.rootfs.diff_ids));
                }
                Err(error) => {
                    tracing::warn!(id = %record.id, %error, "cannot read image; keeping all layers");
                    refs.complete = false;
                }
            }
        }
        refs
    }

    /// Content held by live processes, as references: held images'
    /// content, held blobs and held snapshots.
    fn held_references(&self, holds: &Holds) -> References {
        let held: Vec<ImageRecord> = holds
            .images
            .iter()
            .filter_map(|id| self.image(id).ok())
            .collect();
        let mut refs = self.references(&held);
        refs.blobs.extend(holds.blobs.iter().cloned());
        refs.chains.extend(holds.chains.iter().cloned());
        refs
    }

    /// Deletes image `id`: its record (with its tags and repo digests),
    /// then its blobs and snapshots that no other image refers to and no
    /// live process holds. Fails with [`Error::ImageInUse`] when a live
    /// process holds the image itself.
    pub fn delete_image(&self, id: &ImageId) -> Result<RemovedImage, ImageError> {
        let _gc = self.gc_exclusive()?;
        let holds = self.holds_of(false)?;
        self.delete_image_locked(id, &holds)
    }

    fn delete_image_locked(&self, id: &ImageId, holds: &Holds) -> Result<RemovedImage, ImageError> {
        if holds.images.contains(id) {
            return Err(Error::ImageInUse {
                id: id.to_string(),
                holders: holds.image_holders.get(id).cloned().unwrap_or_default(),
            }
            .into());
        }
        let held = self.held_references(holds);
        let record = self.image(id)?;
        // What the image refers to, read before the record goes.
        let (layers, chains) = match self.image_docs(&record) {
            Ok(docs) => (docs.layers, chain_ids(&docs.config.rootfs.diff_ids)),
            Err(error) => {
                tracing::warn!(%id, %error, "cannot read image; deleting only its manifest and config");
                (Vec::new(), Vec::new())
            }
        };
        let record = self.remove_image(id)?;
        let mut refs = self.references(&self.images()?);
        refs.blobs.extend(held.blobs);
        refs.chains.extend(held.chains);
        refs.complete &= held.complete;

        let mut candidates =
            BTreeSet::from([record.manifest_digest.clone(), record.config_digest.clone()]);
        if refs.complete {
            candidates.extend(layers);
        }
        let mut blobs = Vec::new();
        let mut reclaimed = 0;
        for digest in candidates.into_iter().filter(|d| !refs.blobs.contains(d)) {
            let size = self.blob_size(&digest).unwrap_or(0);
            if self.delete_blob(&digest)? {
                reclaimed += size;
                blobs.push(digest);
            }
        }
        let mut snapshots = Vec::new();
        if refs.complete {
            let unique: BTreeSet<Digest> = chains
                .into_iter()
                .filter(|c| !refs.chains.contains(c))
                .collect();
            for chain in unique {
                if self.remove_snapshot(&chain)? {
                    snapshots.push(chain);
                }
            }
        }
        tracing::info!(%id, blobs = blobs.len(), snapshots = snapshots.len(), reclaimed, "deleted image");
        Ok(RemovedImage {
            record,
            blobs,
            snapshots,
            reclaimed,
        })
    }

    /// Deletes the images `scope` selects, oldest record first.
    pub fn prune_images(&self, scope: PruneScope) -> Result<Vec<RemovedImage>, ImageError> {
        self.prune_images_keeping(scope, &BTreeSet::new())
    }

    /// [`Store::prune_images`], never removing the images in `keep` (ids,
    /// `sha256:…`): those containers use. Images live kiln processes hold
    /// are kept too.
    pub fn prune_images_keeping(
        &self,
        scope: PruneScope,
        keep: &BTreeSet<String>,
    ) -> Result<Vec<RemovedImage>, ImageError> {
        let _gc = self.gc_exclusive()?;
        let holds = self.holds_of(false)?;
        let mut doomed: Vec<ImageRecord> = self
            .images()?
            .into_iter()
            .filter(|r| scope == PruneScope::All || r.is_dangling())
            .filter(|r| !keep.contains(&r.id.to_string()))
            .filter(|r| !holds.images.contains(&r.id))
            .collect();
        doomed.sort_by(|a, b| a.created.cmp(&b.created).then(a.id.cmp(&b.id)));
        doomed
            .iter()
            .map(|r| self.delete_image_locked(&r.id, &holds))
            .collect()
    }

    /// How much the images of the store take.
    pub fn images_usage(&self) -> Result<ImagesUsage, ImageError> {
        self.images_usage_with(&BTreeSet::new())
    }

    /// [`Store::images_usage`], with `active` the ids (`sha256:…`) of the
    /// images containers use: their layers are not reclaimable.
    pub fn images_usage_with(&self, active: &BTreeSet<String>) -> Result<ImagesUsage, ImageError> {
        let images = self.images()?;
        let mut layers = BTreeSet::new();
        let mut used = BTreeSet::new();
        let mut active_count = 0;
        for record in &images {
            let in_use = active.contains(&record.id.to_string());
            active_count += usize::from(in_use);
            // An unreadable image is counted but adds no layers: it does
            // not make the usage of every other image unknown.
            let docs = match self.image_docs(record) {
                Ok(docs) => docs,
                Err(error) => {
                    tracing::warn!(id = %record.id, %error, "cannot read image; its layers are not counted");
                    continue;
                }
            };
            for (digest, desc) in docs.layers.into_iter().zip(docs.manifest.layers()) {
                if in_use {
                    used.insert(digest.clone());
                }
                layers.insert((digest, desc.size()));
            }
        }
        let size = layers.iter().map(|(_, size)| size).sum();
        let reclaimable = layers
            .iter()
            .filter(|(d, _)| !used.contains(d))
            .map(|(_, size)| size)
            .sum();
        Ok(ImagesUsage {
            total: images.len(),
            active: active_count,
            size,
            reclaimable,
        })
    }
}
