//! The result of a vertex: an immutable stack of layer snapshots.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use kiln_oci::Digest;
use serde::{Deserialize, Serialize};

/// A layer blob in the store: what the exporter puts in a manifest.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LayerBlob {
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
}

/// One layer of a [`FsRef`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Layer {
    /// sha256 of the layer's uncompressed tar (its `diff_id`).
    pub diff_id: Digest,
    /// The chain id naming the snapshot directory in the store
    /// (`snapshots/<hex>`). It is the chain id of the stack the layer was
    /// created on; a layer reused in another stack (merge) keeps it.
    pub snapshot_id: Digest,
    /// `snapshots/<hex>/fs`: the layer's files as an overlayfs lower
    /// directory (overlay whiteouts and opaque directories included).
    pub snapshot_dir: PathBuf,
    /// The layer tar in the store, when one was written. Layers of local,
    /// HTTP and git sources have none: they are only ever copied from.
    pub blob: Option<LayerBlob>,
    /// The layer changes nothing (an exec or file op without effect). Kept
    /// so the exporter can decide whether to emit it.
    pub empty: bool,
}

/// An immutable filesystem: layers, base first. The empty stack is
/// scratch. Cheap to clone.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct FsRef {
    layers: Arc<[Layer]>,
}

impl FsRef {
    /// The empty filesystem.
    pub fn scratch() -> FsRef {
        FsRef::default()
    }

    pub fn from_layers(layers: Vec<Layer>) -> FsRef {
        FsRef {
            layers: layers.into(),
        }
    }

    /// Layers, base first.
    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }

    pub fn is_scratch(&self) -> bool {
        self.layers.is_empty()
    }

    pub fn len(&self) -> usize {
        self.layers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }

    pub fn diff_ids(&self) -> Vec<Digest> {
        self.layers.iter().map(|l| l.diff_id.clone()).collect()
    }

    /// The chain ids of the stack as it is (not the snapshot ids).
    pub fn chain_ids(&self) -> Vec<Digest> {
        kiln_oci::config::chain_ids(&self.diff_ids())
    }

    /// The overlayfs lower directories, topmost first (what
    /// `kiln_runtime::ExecRequest::lowers` takes).
    pub fn lowers(&self) -> Vec<PathBuf> {
        self.layers
            .iter()
            .rev()
            .map(|l| l.snapshot_dir.clone())
            .collect()
    }

    /// This stack with `layer` on top.
    pub fn with_layer(&self, layer: Layer) -> FsRef {
        let mut v = self.layers.to_vec();
        v.push(layer);
        FsRef::from_layers(v)
    }

    /// Whether `self`'s layers are the first layers of `other`.
    pub fn is_prefix_of(&self, other: &FsRef) -> bool {
        other.layers.len() >= self.layers.len()
            && other.layers[..self.layers.len()] == self.layers[..]
    }

    /// The chain id of the stack with a layer `diff_id` on top.
    pub(crate) fn chain_id_with(&self, diff_id: &Digest) -> Digest {
        let mut ids = self.diff_ids();
        ids.push(diff_id.clone());
        kiln_oci::config::chain_ids(&ids)
            .pop()
            .expect("a non-empty list has a chain id")
    }

    /// The single snapshot directory when the stack has exactly one layer.
    pub(crate) fn single_dir(&self) -> Option<&Path> {
        match &self.layers[..] {
            [one] => Some(&one.snapshot_dir),
            _ => None,
        }
    }
}
