//! `commit_image` and the export targets.

mod common;

use std::io::Read;
use std::path::Path;
use std::process::Command;

use common::{layer_tar, store, tar_members};
use kiln_exporter::spec::Manifest;
use kiln_exporter::{
    CommitOptions, Compression, Error, ImageSelector, LayerInput, MediaTypes, SaveFormat,
    commit_image, export_docker_tar, export_host_dir, export_local_dir, export_oci_tar, export_tar,
    load, save,
};
use kiln_oci::config::{History, ImageConfig};
use kiln_oci::{Digest, Reference};
use kiln_store::Store;

fn config(history: &[(&str, bool)]) -> ImageConfig {
    let mut config = ImageConfig {
        architecture: "amd64".into(),
        os: "linux".into(),
        ..Default::default()
    };
    config.config.env = vec!["PATH=/usr/bin:/bin".into()];
    config.history = history
        .iter()
        .map(|(by, empty)| History {
            created: Some("2024-05-01T10:00:00Z".into()),
            created_by: Some((*by).into()),
            empty_layer: *empty,
            ..Default::default()
        })
        .collect();
    config
}

fn tag(s: &str) -> Reference {
    Reference::parse_docker_ref(s).unwrap()
}

fn opts(compression: Compression) -> CommitOptions {
    CommitOptions {
        compression,
        tags: vec![tag("kiln-test/commit:1")],
        source_date_epoch: Some(1_700_000_000),
        ..Default::default()
    }
}

fn two_layers() -> (Vec<u8>, Vec<u8>) {
    (
        layer_tar(&[("etc/hostname", b"kiln\n"), ("etc/motd", b"hello\n")]),
        layer_tar(&[("app/run", b"#!/bin/sh\necho hi\n")]),
    )
}

fn manifest_of(store: &Store, digest: &Digest) -> (Manifest, serde_json::Value) {
    let bytes = store.read_blob_bytes(digest, 1 << 20).unwrap();
    (
        serde_json::from_slice(&bytes).unwrap(),
        serde_json::from_slice(&bytes).unwrap(),
    )
}

fn decompressed(store: &Store, digest: &Digest) -> Vec<u8> {
    let file = store.open_blob(digest).unwrap();
    let (_, mut reader) = kiln_store::decompress(file).unwrap();
    let mut out = Vec::new();
    reader.read_to_end(&mut out).unwrap();
    out
}

#[test]
fn gzip_commit_writes_consistent_documents() {
    let (_dir, store) = store();
    let (a, b) = two_layers();
    let a_id = store.write_blob_bytes(&a).unwrap();
    let layers = [
        LayerInput::blob(a_id.clone()),
        LayerInput::reader(Digest::sha256(&b), std::io::Cursor::new(b.clone())),
    ];
    let cfg = config(&[("ADD a", false), ("ENV x=1", true), ("RUN b", false)]);
    let image = commit_image(&store, &layers, cfg, &opts(Compression::Gzip)).unwrap();

    let (manifest, raw) = manifest_of(&store, &image.manifest_digest);
    assert_eq!(
        raw["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    assert_eq!(manifest.schema_version, 2);
    assert_eq!(
        manifest.config.media_type,
        "application/vnd.docker.container.image.v1+json"
    );
    assert_eq!(manifest.config.digest, image.config_digest);
    assert_eq!(
        manifest.config.size,
        store.blob_size(&image.config_digest).unwrap()
    );
    assert_eq!(manifest.layers, image.layers);
    assert_eq!(manifest.layers.len(), 2);
    for (layer, tar) in manifest.layers.iter().zip([&a, &b]) {
        assert_eq!(
            layer.media_type,
            "application/vnd.docker.image.rootfs.diff.tar.gzip"
        );
        let blob = std::fs::read(store.blob_path(&layer.digest)).unwrap();
        assert_eq!(Digest::sha256(&blob), layer.digest);
        assert_eq!(blob.len() as u64, layer.size);
        assert_eq!(&blob[..2], &[0x1f, 0x8b]);
        assert_eq!(&decompressed(&store, &layer.digest), tar);
    }

    let stored = store.read_config(&image.config_digest).unwrap();
    assert_eq!(
        stored.rootfs.diff_ids,
        vec![Digest::sha256(&a), Digest::sha256(&b)]
    );
    assert_eq!(stored.created.as_deref(), Some("2023-11-14T22:13:20Z"));
    assert_eq!(stored, image.config);
    assert_eq!(image.id.digest(), &image.config_digest);

    // The store API sees the image under its tag.
    let record = store.resolve("kiln-test/commit:1").unwrap();
    assert_eq!(record.id, image.id);
    assert_eq!(record.manifest_digest, image.manifest_digest);
    let docs = store.image_docs(&record).unwrap();
    assert_eq!(
        docs.layers,
        image
            .layers
            .iter()
            .map(|l| l.digest.clone())
            .collect::<Vec<_>>()
    );
    assert_eq!(image.stats.compressed, 2);
}

#[test]
fn zstd_and_uncompressed_variants() {
    let (a, b) = two_layers();
    let cfg = config(&[]);

    let (_dir, store_z) = store();
    let layers = [
        LayerInput::reader(Digest::sha256(&a), std::io::Cursor::new(a.clone())),
        LayerInput::reader(Digest::sha256(&b), std::io::Cursor::new(b.clone())),
    ];
    let image = commit_image(&store_z, &layers, cfg.clone(), &opts(Compression::Zstd)).unwrap();
    let (manifest, _) = manifest_of(&store_z, &image.manifest_digest);
    // zstd has no Docker media type: the manifest switches to OCI.
    assert_eq!(
        manifest.media_type.as_deref(),
        Some("application/vnd.oci.image.manifest.v1+json")
    );
    assert_eq!(
        manifest.config.media_type,
        "application/vnd.oci.image.config.v1+json"
    );
    for (layer, tar) in manifest.layers.iter().zip([&a, &b]) {
        assert_eq!(
            layer.media_type,
            "application/vnd.oci.image.layer.v1.tar+zstd"
        );
        let blob = std::fs::read(store_z.blob_path(&layer.digest)).unwrap();
        assert_eq!(&blob[..4], &[0x28, 0xb5, 0x2f, 0xfd]);
        assert_eq!(blob.len() as u64, layer.size);
        assert_eq!(&decompressed(&store_z, &layer.digest), tar);
    }

    for media_types in [MediaTypes::Docker, MediaTypes::Oci] {
        let (_dir, store_u) = store();
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("a.tar");
        std::fs::write(&path, &a).unwrap();
        let layers = [
            LayerInput::path(Digest::sha256(&a), &path),
            LayerInput::reader(Digest::sha256(&b), std::io::Cursor::new(b.clone())),
        ];
        let mut o = opts(Compression::Uncompressed);
        o.media_types = media_types;
        let image = commit_image(&store_u, &layers, cfg.clone(), &o).unwrap();
        let (manifest, _) = manifest_of(&store_u, &image.manifest_digest);
        let want = match media_types {
            MediaTypes::Docker => "application/vnd.docker.image.rootfs.diff.tar",
            MediaTypes::Oci => "application/vnd.oci.image.layer.v1.tar",
        };
        for (layer, tar) in manifest.layers.iter().zip([&a, &b]) {
            assert_eq!(layer.media_type, want);
            assert_eq!(layer.digest, Digest::sha256(tar));
            assert_eq!(layer.size, tar.len() as u64);
            assert!(store_u.has_blob(&layer.digest).unwrap());
        }
    }
}

#[test]
fn source_date_epoch_makes_commits_reproducible() {
    let (a, b) = two_layers();
    let cfg = config(&[("ADD a", false), ("RUN b", false)]);
    let mut ids = Vec::new();
    for compression in [Compression::Gzip, Compression::Zstd] {
        let mut seen = Vec::new();
        // Two separate stores: nothing is reused, everything recomputed.
        for _ in 0..2 {
            let (_dir, store) = store();
            let layers = [
                LayerInput::reader(Digest::sha256(&a), std::io::Cursor::new(a.clone())),
                LayerInput::reader(Digest::sha256(&b), std::io::Cursor::new(b.clone())),
            ];
            let image = commit_image(&store, &layers, cfg.clone(), &opts(compression)).unwrap();
            assert_eq!(image.stats.reused, 0);
            seen.push((image.id.clone(), image.manifest_digest.clone()));
        }
        assert_eq!(seen[0], seen[1], "{compression:?}");
        ids.push(seen[0].clone());
    }
    // History times after the epoch are clamped to it.
    let (_dir, store) = store();
    let image = commit_image(
        &store,
        &[LayerInput::reader(
            Digest::sha256(&a),
            std::io::Cursor::new(a.clone()),
        )],
        config(&[("ADD a", false)]),
        &opts(Compression::Gzip),
    )
    .unwrap();
    assert_eq!(
        image.config.history[0].created.as_deref(),
        Some("2023-11-14T22:13:20Z")
    );
}

#[test]
fn empty_layers_are_dropped_and_history_stays_aligned() {
    let (_dir, store) = store();
    let (a, b) = two_layers();
    let empty = vec![0u8; 1024];
    let layers = [
        LayerInput::reader(Digest::sha256(&a), std::io::Cursor::new(a.clone())),
        LayerInput::reader(Digest::sha256(&empty), std::io::Cursor::new(empty.clone())),
        LayerInput::reader(Digest::sha256(&b), std::io::Cursor::new(b.clone())),
    ];
    let cfg = config(&[
        ("ADD a", false),
        ("WORKDIR /x", true),
        ("RUN true", false),
        ("RUN b", false),
    ]);
    let image = commit_image(&store, &layers, cfg, &opts(Compression::Gzip)).unwrap();
    assert_eq!(image.layers.len(), 2);
    assert_eq!(image.stats.empty, 1);
    assert_eq!(
        image.config.rootfs.diff_ids,
        vec![Digest::sha256(&a), Digest::sha256(&b)]
    );
    let flags: Vec<bool> = image.config.history.iter().map(|h| h.empty_layer).collect();
    assert_eq!(flags, vec![false, true, true, false]);
    assert_eq!(
        image
            .config
            .history
            .iter()
            .filter(|h| !h.empty_layer)
            .count(),
        image.layers.len()
    );
}

#[test]
fn misaligned_history_is_aligned_as_buildkit_does() {
    let (_dir, store) = store();
    let (a, b) = two_layers();
    let layer =
        |t: &Vec<u8>| LayerInput::reader(Digest::sha256(t), std::io::Cursor::new(t.clone()));
    // More entries owning a layer than layers: the last become empty.
    let image = commit_image(
        &store,
        &[layer(&a)],
        config(&[("ADD a", false), ("RUN b", false)]),
        &opts(Compression::Gzip),
    )
    .unwrap();
    let flags: Vec<bool> = image.config.history.iter().map(|h| h.empty_layer).collect();
    assert_eq!(flags, [false, true]);
    // Fewer (a base image's layer without history, as `umoci insert
    // --no-history` makes it): an entry is appended for the layer.
    let image = commit_image(
        &store,
        &[layer(&a), layer(&b)],
        config(&[("RUN b", false)]),
        &opts(Compression::Gzip),
    )
    .unwrap();
    let history = &image.config.history;
    assert_eq!(history.len(), 2);
    assert!(history.iter().all(|h| !h.empty_layer));
    assert_eq!(
        history[1].comment.as_deref(),
        Some("buildkit.exporter.image.v0")
    );
    assert_eq!(history[1].created, image.config.created);
    assert_eq!(image.layers.len(), 2);
}

#[test]
fn wrong_diff_id_is_rejected_and_nothing_is_recorded() {
    let (_dir, store) = store();
    let (a, b) = two_layers();
    for compression in [
        Compression::Gzip,
        Compression::Zstd,
        Compression::Uncompressed,
    ] {
        let layers = [LayerInput::reader(
            Digest::sha256(&b),
            std::io::Cursor::new(a.clone()),
        )];
        let err = commit_image(&store, &layers, config(&[]), &opts(compression)).unwrap_err();
        match err {
            Error::LayerDiffIdMismatch {
                layer: 0, actual, ..
            } => {
                assert_eq!(actual, Digest::sha256(&a))
            }
            other => panic!("{compression:?}: {other:?}"),
        }
    }
    assert!(store.images().unwrap().is_empty());
    // The aborted compressions left no blob behind.
    assert!(store.list_blobs().unwrap().is_empty());
}

#[test]
fn invalid_level_is_rejected() {
    let (_dir, store) = store();
    let mut o = opts(Compression::Gzip);
    o.level = Some(12);
    let err = commit_image(&store, &[], config(&[]), &o).unwrap_err();
    assert!(matches!(
        err,
        Error::InvalidCompressionLevel { level: 12, .. }
    ));
    let mut o = opts(Compression::Uncompressed);
    o.level = Some(1);
    assert!(commit_image(&store, &[], config(&[]), &o).is_err());
}

#[test]
fn second_commit_reuses_compressed_layers() {
    let (_dir, store) = store();
    let (a, b) = two_layers();
    let a_id = store.write_blob_bytes(&a).unwrap();
    let layers = || {
        vec![
            LayerInput::blob(a_id.clone()),
            LayerInput::reader(Digest::sha256(&b), std::io::Cursor::new(b.clone())),
        ]
    };
    let first = commit_image(&store, &layers(), config(&[]), &opts(Compression::Gzip)).unwrap();
    assert_eq!((first.stats.compressed, first.stats.reused), (2, 0));
    let index_path = store.root().join("exporter/compressed.json");
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&index_path).unwrap()).unwrap();
    assert_eq!(index["entries"].as_array().unwrap().len(), 2);

    // A different config on the same layers: the layers are not read again.
    let mut cfg = config(&[]);
    cfg.config.labels.insert("v".into(), "2".into());
    let unreadable = || {
        vec![
            LayerInput::blob(a_id.clone()),
            LayerInput::open_with(Digest::sha256(&b), || {
                Err(std::io::Error::other("must not be opened"))
            }),
        ]
    };
    let second = commit_image(&store, &unreadable(), cfg, &opts(Compression::Gzip)).unwrap();
    assert_eq!((second.stats.compressed, second.stats.reused), (0, 2));
    assert_eq!(second.layers, first.layers);
    assert_ne!(second.id, first.id);

    // Another level is another compression.
    let mut o = opts(Compression::Gzip);
    o.level = Some(1);
    let third = commit_image(&store, &layers(), config(&[]), &o).unwrap();
    assert_eq!(third.stats.compressed, 2);

    // A garbage-collected copy is recompressed.
    for layer in &first.layers {
        store.delete_blob(&layer.digest).unwrap();
    }
    let fourth = commit_image(&store, &layers(), config(&[]), &opts(Compression::Gzip)).unwrap();
    assert_eq!((fourth.stats.compressed, fourth.stats.reused), (2, 0));
    assert_eq!(fourth.layers, first.layers);
}

#[test]
fn tags_move_and_old_image_stays_dangling() {
    let (_dir, store) = store();
    let (a, b) = two_layers();
    let first = commit_image(
        &store,
        &[LayerInput::reader(
            Digest::sha256(&a),
            std::io::Cursor::new(a.clone()),
        )],
        config(&[]),
        &opts(Compression::Gzip),
    )
    .unwrap();
    let second = commit_image(
        &store,
        &[LayerInput::reader(
            Digest::sha256(&b),
            std::io::Cursor::new(b.clone()),
        )],
        config(&[]),
        &opts(Compression::Gzip),
    )
    .unwrap();
    assert_ne!(first.id, second.id);
    assert_eq!(second.tags, vec![tag("kiln-test/commit:1")]);
    let old = store.image(&first.id).unwrap();
    assert!(old.is_dangling());
    assert_eq!(store.resolve("kiln-test/commit:1").unwrap().id, second.id);
}

/// Layers: base with files and a directory; upper deleting one file, making
/// a directory opaque and adding a file.
fn whiteout_layers(store: &Store) -> Vec<LayerInput> {
    let base = layer_tar(&[
        ("keep.txt", b"keep"),
        ("gone.txt", b"gone"),
        ("dir/old.txt", b"old"),
        ("dir/sub/deep.txt", b"deep"),
    ]);
    let upper = layer_tar(&[
        (".wh.gone.txt", b""),
        ("dir/.wh..wh..opq", b""),
        ("dir/new.txt", b"new"),
    ]);
    let base_id = store.write_blob_bytes(&base).unwrap();
    vec![
        LayerInput::blob(base_id),
        LayerInput::reader(Digest::sha256(&upper), std::io::Cursor::new(upper)),
    ]
}

fn tree(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let rel = entry
                .path()
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if entry.file_type().unwrap().is_dir() {
                stack.push(entry.path());
            } else {
                out.push(rel);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn local_dir_export_applies_whiteouts() {
    let (dir, store) = store();
    let layers = whiteout_layers(&store);
    let dest = dir.path().join("out");
    let stats = export_local_dir(&store, &layers, &dest).unwrap();
    assert_eq!(stats.len(), 2);
    assert_eq!(tree(&dest), vec!["dir/new.txt", "keep.txt"]);
    assert_eq!(std::fs::read(dest.join("dir/new.txt")).unwrap(), b"new");
}

/// A layer with a setuid-root file and a block device.
fn hostile_layer() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(2);
    h.set_mode(0o4755);
    h.set_uid(0);
    h.set_gid(0);
    b.append_data(&mut h, "bin/shell", &b"#!"[..]).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Block);
    h.set_mode(0o666);
    h.set_device_major(8).unwrap();
    h.set_device_minor(0).unwrap();
    h.set_size(0);
    b.append_data(&mut h, "dev/sda", &[][..]).unwrap();
    b.into_inner().unwrap()
}

#[test]
fn host_dir_export_drops_devices_and_setid_unless_asked() {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let (dir, store) = store();
    let layer = hostile_layer();
    let layers = || {
        vec![LayerInput::reader(
            Digest::sha256(&layer),
            std::io::Cursor::new(layer.clone()),
        )]
    };
    let safe = dir.path().join("safe");
    let stats = export_host_dir(&store, &layers(), &safe, false).unwrap();
    let mode = std::fs::metadata(safe.join("bin/shell"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o755);
    assert!(!safe.join("dev/sda").exists());
    if kiln_store::is_root() {
        assert_eq!(stats[0].skipped_devices, 1);
        let full = dir.path().join("full");
        export_host_dir(&store, &layers(), &full, true).unwrap();
        let mode = std::fs::metadata(full.join("bin/shell"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o4755);
        let dev = std::fs::symlink_metadata(full.join("dev/sda")).unwrap();
        assert!(dev.file_type().is_block_device());
    }
}

#[test]
fn tar_export_is_the_flattened_filesystem() {
    let (_dir, store) = store();
    let layers = whiteout_layers(&store);
    let mut out = Vec::new();
    export_tar(&store, &layers, &mut out).unwrap();
    let members = tar_members(&out);
    let files: Vec<(&str, &[u8])> = members
        .iter()
        .filter(|(_, h, _)| h.entry_type().is_file())
        .map(|(p, _, d)| (p.as_str(), d.as_slice()))
        .collect();
    assert_eq!(
        files,
        vec![("keep.txt", &b"keep"[..]), ("dir/new.txt", b"new")]
    );
    assert!(members.iter().all(|(p, _, _)| !p.contains(".wh.")));
    // The temporary tree is gone.
    assert_eq!(std::fs::read_dir(store.ingest_dir()).unwrap().count(), 0);
}

#[test]
fn archive_exports_round_trip() {
    let (_dir, store) = store();
    let (a, b) = two_layers();
    let image = commit_image(
        &store,
        &[
            LayerInput::reader(Digest::sha256(&a), std::io::Cursor::new(a.clone())),
            LayerInput::reader(Digest::sha256(&b), std::io::Cursor::new(b.clone())),
        ],
        config(&[]),
        &opts(Compression::Gzip),
    )
    .unwrap();
    let mut docker = Vec::new();
    let saved = export_docker_tar(&store, &image, &mut docker).unwrap();
    assert_eq!(saved.id, image.id);
    assert_eq!(saved.tags, vec![tag("kiln-test/commit:1")]);
    let mut oci = Vec::new();
    export_oci_tar(&store, &image, &mut oci).unwrap();

    for archive in [docker, oci] {
        let (_dir2, other) = common::store();
        let loaded = load(&other, &archive[..], |_| {}).unwrap();
        assert_eq!(loaded.len(), 1);
        assert_eq!(loaded[0].id, image.id);
        assert_eq!(loaded[0].tags, vec![tag("kiln-test/commit:1")]);
    }
}

#[test]
fn skopeo_accepts_a_committed_image() {
    match Command::new("skopeo").arg("--version").output() {
        Ok(out) if out.status.success() => {}
        Ok(_) | Err(_) => {
            println!("skipping: skopeo is not installed");
            return;
        }
    }
    let (dir, store) = store();
    let (a, b) = two_layers();
    commit_image(
        &store,
        &[
            LayerInput::reader(Digest::sha256(&a), std::io::Cursor::new(a.clone())),
            LayerInput::reader(Digest::sha256(&b), std::io::Cursor::new(b.clone())),
        ],
        config(&[("ADD a", false), ("RUN b", false)]),
        &opts(Compression::Gzip),
    )
    .unwrap();
    for (format, transport) in [
        (SaveFormat::Docker, "docker-archive"),
        (SaveFormat::Oci, "oci-archive"),
    ] {
        let path = dir.path().join(format!("{transport}.tar"));
        save(
            &store,
            &[ImageSelector::Query("kiln-test/commit:1".into())],
            std::fs::File::create(&path).unwrap(),
            format,
            |_| {},
        )
        .unwrap();
        let target = format!("{transport}:{}", path.display());
        let out = Command::new("skopeo")
            .args(["inspect", "--no-tags", &target])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "skopeo inspect {target}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let copy = dir.path().join(format!("{transport}-copy"));
        let out = Command::new("skopeo")
            .args(["copy", &target, &format!("dir:{}", copy.display())])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "skopeo copy {target}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
