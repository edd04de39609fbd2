//! Builders for test images in a temporary store.
#![allow(dead_code)]

use std::io::{Read, Write};

use kiln_oci::Digest;
use kiln_store::{ImageRecord, Store};
use serde_json::json;

pub fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store")).unwrap();
    (dir, store)
}

/// A small deterministic layer tar holding `files`.
pub fn layer_tar(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, data) in files {
        let mut header = tar::Header::new_ustar();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_entry_type(tar::EntryType::Regular);
        builder.append_data(&mut header, path, *data).unwrap();
    }
    builder.into_inner().unwrap()
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

pub fn gunzip(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(data)
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// A layer of a test image: its tar, and whether to store it gzipped.
pub struct TestLayer {
    pub tar: Vec<u8>,
    pub gzip: bool,
}

impl TestLayer {
    pub fn plain(tar: Vec<u8>) -> TestLayer {
        TestLayer { tar, gzip: false }
    }
    pub fn gzipped(tar: Vec<u8>) -> TestLayer {
        TestLayer { tar, gzip: true }
    }
}

/// Writes layer, config and manifest blobs and records the image with
/// `tags`. `label` makes configs differ.
pub fn put_image(store: &Store, label: &str, layers: &[TestLayer], tags: &[&str]) -> ImageRecord {
    let mut descriptors = Vec::new();
    let mut diff_ids = Vec::new();
    for layer in layers {
        diff_ids.push(Digest::sha256(&layer.tar).to_string());
        let (bytes, media_type) = if layer.gzip {
            (
                gzip(&layer.tar),
                "application/vnd.oci.image.layer.v1.tar+gzip",
            )
        } else {
            (layer.tar.clone(), "application/vnd.oci.image.layer.v1.tar")
        };
        let digest = store.write_blob_bytes(&bytes).unwrap();
        descriptors.push(json!({
            "mediaType": media_type,
            "digest": digest.to_string(),
            "size": bytes.len(),
        }));
    }
    let config = json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Labels": {"test": label}},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [],
    });
    let config_bytes = serde_json::to_vec(&config).unwrap();
    let config_digest = store.write_blob_bytes(&config_bytes).unwrap();
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest.to_string(),
            "size": config_bytes.len(),
        },
        "layers": descriptors,
    });
    let manifest_digest = store
        .write_blob_bytes(&serde_json::to_vec(&manifest).unwrap())
        .unwrap();
    let mut record = ImageRecord::new(manifest_digest, config_digest);
    record.tags = tags
        .iter()
        .map(|t| kiln_oci::Reference::parse_docker_ref(t).unwrap())
        .collect();
    store.put_image(record).unwrap()
}

/// The layer digests of a stored image, from its manifest.
pub fn layer_digests(store: &Store, record: &ImageRecord) -> Vec<Digest> {
    let bytes = store
        .read_blob_bytes(&record.manifest_digest, 1 << 20)
        .unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().parse().unwrap())
        .collect()
}

/// The paths and contents of an uncompressed tar's regular files, in order.
pub fn tar_members(bytes: &[u8]) -> Vec<(String, tar::Header, Vec<u8>)> {
    let mut archive = tar::Archive::new(bytes);
    archive
        .entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let path = String::from_utf8_lossy(&e.path_bytes()).into_owned();
            let header = e.header().clone();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            (path, header, data)
        })
        .collect()
}
