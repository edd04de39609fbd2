//! save → load round trips, archive layout, and failure modes.

mod common;

use std::io::Write;

use common::{TestLayer, gzip, layer_digests, layer_tar, put_image, store, tar_members};
use kiln_exporter::{Error, ImageSelector, LoadedImage, Progress, SaveFormat, load, save};
use kiln_oci::{Digest, Reference};
use kiln_store::{ImageRecord, Store};
use serde_json::Value;

fn save_bytes(store: &Store, selectors: &[ImageSelector], format: SaveFormat) -> Vec<u8> {
    let mut out = Vec::new();
    save(store, selectors, &mut out, format, |_| {}).unwrap();
    out
}

fn query(q: &str) -> ImageSelector {
    ImageSelector::Query(q.to_owned())
}

fn reference(s: &str) -> Reference {
    Reference::parse_docker_ref(s).unwrap()
}

/// Two images sharing a base layer, the second one with a gzip layer.
fn two_images(store: &Store) -> (ImageRecord, ImageRecord) {
    let base = layer_tar(&[("etc/os-release", b"ID=test\n")]);
    let a = put_image(
        store,
        "a",
        &[
            TestLayer::plain(base.clone()),
            TestLayer::plain(layer_tar(&[("app/a", b"aaa")])),
        ],
        &["app-a:1", "app-a:latest"],
    );
    let b = put_image(
        store,
        "b",
        &[
            TestLayer::plain(base),
            TestLayer::gzipped(layer_tar(&[("app/b", b"bbbb")])),
        ],
        &["registry.example:5000/team/app-b:v2"],
    );
    (a, b)
}

fn assert_same_image(loaded: &Store, original: &Store, record: &ImageRecord) {
    let got = loaded.image(&record.id).unwrap();
    assert_eq!(got.config_digest, record.config_digest);
    assert_eq!(got.tags, record.tags);
    assert_eq!(layer_digests(loaded, &got), layer_digests(original, record));
    for layer in layer_digests(loaded, &got) {
        loaded.verify_blob(&layer).unwrap();
    }
}

#[test]
fn docker_archive_round_trip() {
    let (_d1, src) = store();
    let (a, b) = two_images(&src);
    let bytes = save_bytes(
        &src,
        &[query("app-a"), query("registry.example:5000/team/app-b:v2")],
        SaveFormat::Docker,
    );

    let (_d2, dst) = store();
    let mut events = Vec::new();
    let loaded = load(&dst, &bytes[..], |p| events.push(p.clone())).unwrap();
    let mut ids: Vec<_> = loaded.iter().map(|l| l.id.clone()).collect();
    ids.sort();
    let mut want = vec![a.id.clone(), b.id.clone()];
    want.sort();
    assert_eq!(ids, want);
    assert_same_image(&dst, &src, &a);
    assert_same_image(&dst, &src, &b);
    // index.json points at the original manifests.
    assert_eq!(dst.image(&a.id).unwrap().manifest_digest, a.manifest_digest);
    assert_eq!(dst.image(&b.id).unwrap().manifest_digest, b.manifest_digest);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Progress::ImageLoaded { .. }))
    );

    // Loading again changes nothing and rewrites no blob an image uses
    // (blobs of the archive no image uses are not kept, so they come in
    // again and go again).
    let mut written = Vec::new();
    let again = load(&dst, &bytes[..], |p| {
        if let Progress::EntryDone {
            path,
            already_present,
            ..
        } = p
            && path.starts_with("blobs/")
            && !already_present
        {
            written.push(path.clone());
        }
    })
    .unwrap();
    assert_eq!(again.len(), 2);
    assert_eq!(dst.images().unwrap().len(), 2);
    for path in written {
        let digest: kiln_oci::Digest = format!("sha256:{}", path.rsplit('/').next().unwrap())
            .parse()
            .unwrap();
        assert!(!dst.has_blob(&digest).unwrap(), "{path} rewritten");
    }
}

#[test]
fn docker_archive_layout() {
    let (_d, src) = store();
    let (a, b) = two_images(&src);
    let bytes = save_bytes(
        &src,
        &[
            query("app-a:1"),
            query("app-a:latest"),
            ImageSelector::Tag(reference("registry.example:5000/team/app-b:v2")),
        ],
        SaveFormat::Docker,
    );
    let members = tar_members(&bytes);
    let paths: Vec<&str> = members.iter().map(|(p, _, _)| p.as_str()).collect();

    // Sorted, deterministic headers.
    let mut sorted = paths.clone();
    sorted.sort();
    assert_eq!(paths, sorted);
    assert_eq!(&paths[..2], &["blobs/", "blobs/sha256/"]);
    assert_eq!(
        &paths[paths.len() - 4..],
        &["index.json", "manifest.json", "oci-layout", "repositories"]
    );
    for (path, header, _) in &members {
        assert_eq!(header.mtime().unwrap(), 0, "{path}");
        assert_eq!(header.uid().unwrap(), 0);
        assert_eq!(header.gid().unwrap(), 0);
        let mode = header.mode().unwrap();
        assert!(mode == 0o644 || mode == 0o755, "{path}: {mode:o}");
    }
    // Each blob once, named by its digest.
    let mut blob_paths: Vec<&str> = paths
        .iter()
        .copied()
        .filter(|p| p.starts_with("blobs/sha256/") && p.len() > 13)
        .collect();
    let count = blob_paths.len();
    blob_paths.dedup();
    assert_eq!(blob_paths.len(), count);
    for (path, _, data) in &members {
        if let Some(hex) = path.strip_prefix("blobs/sha256/").filter(|h| !h.is_empty()) {
            assert_eq!(Digest::sha256(data).hex(), hex);
        }
    }
    let base = &layer_digests(&src, &a)[0];
    assert_eq!(layer_digests(&src, &b)[0], *base);

    let doc = |name: &str| -> Value {
        serde_json::from_slice(&members.iter().find(|(p, _, _)| p == name).unwrap().2).unwrap()
    };
    assert_eq!(
        doc("oci-layout"),
        serde_json::json!({"imageLayoutVersion": "1.0.0"})
    );

    let manifest = doc("manifest.json");
    let entries = manifest.as_array().unwrap();
    assert_eq!(entries.len(), 2);
    let entry_a = &entries[0];
    assert_eq!(
        entry_a["Config"],
        format!("blobs/sha256/{}", a.id.digest().hex())
    );
    assert_eq!(
        entry_a["RepoTags"],
        serde_json::json!(["app-a:1", "app-a:latest"])
    );
    let entry_b = &entries[1];
    assert_eq!(
        entry_b["RepoTags"],
        serde_json::json!(["registry.example:5000/team/app-b:v2"])
    );
    // manifest.json's layers are uncompressed tars named by diff id, even
    // for b's gzip layer.
    let config_b: Value =
        serde_json::from_slice(&src.read_blob_bytes(b.id.digest(), 1 << 20).unwrap()).unwrap();
    let diff_ids: Vec<String> = config_b["rootfs"]["diff_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap().replace("sha256:", "blobs/sha256/"))
        .collect();
    assert_eq!(entry_b["Layers"], serde_json::json!(diff_ids));
    for layer in &diff_ids {
        let data = &members.iter().find(|(p, _, _)| p == layer).unwrap().2;
        assert!(
            tar::Archive::new(&data[..])
                .entries()
                .unwrap()
                .next()
                .is_some()
        );
    }
    // The compressed original is there too, for the OCI view.
    let gz = &layer_digests(&src, &b)[1];
    assert!(paths.contains(&format!("blobs/sha256/{}", gz.hex()).as_str()));

    let index = doc("index.json");
    assert_eq!(index["schemaVersion"], 2);
    assert_eq!(
        index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 3);
    assert_eq!(manifests[0]["digest"], a.manifest_digest.to_string());
    assert_eq!(
        manifests[0]["annotations"]["io.containerd.image.name"],
        "docker.io/library/app-a:1"
    );
    assert_eq!(
        manifests[0]["annotations"]["org.opencontainers.image.ref.name"],
        "1"
    );
    assert_eq!(
        manifests[0]["platform"],
        serde_json::json!({"architecture": "amd64", "os": "linux"})
    );
    assert_eq!(
        manifests[2]["annotations"]["io.containerd.image.name"],
        "registry.example:5000/team/app-b:v2"
    );

    let repositories = doc("repositories");
    let top_a = diff_id_hex(&src, &a, 1);
    assert_eq!(
        repositories,
        serde_json::json!({
            "app-a": {"1": top_a, "latest": top_a},
            "registry.example:5000/team/app-b": {"v2": diff_id_hex(&src, &b, 1)},
        })
    );

    // Deterministic: the same selection gives the same bytes.
    let again = save_bytes(
        &src,
        &[
            query("app-a:1"),
            query("app-a:latest"),
            ImageSelector::Tag(reference("registry.example:5000/team/app-b:v2")),
        ],
        SaveFormat::Docker,
    );
    assert_eq!(bytes, again);
}

fn diff_id_hex(store: &Store, record: &ImageRecord, i: usize) -> String {
    let config: Value =
        serde_json::from_slice(&store.read_blob_bytes(record.id.digest(), 1 << 20).unwrap())
            .unwrap();
    config["rootfs"]["diff_ids"][i]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_owned()
}

#[test]
fn oci_archive_round_trip() {
    let (_d1, src) = store();
    let (a, b) = two_images(&src);
    let bytes = save_bytes(
        &src,
        &[query("app-a"), query("registry.example:5000/team/app-b")],
        SaveFormat::Oci,
    );
    let members = tar_members(&bytes);
    let paths: Vec<&str> = members.iter().map(|(p, _, _)| p.as_str()).collect();
    assert!(!paths.contains(&"manifest.json"));
    assert!(!paths.contains(&"repositories"));
    assert!(paths.contains(&"oci-layout"));
    // No uncompressed copy of b's gzip layer in a plain OCI layout.
    let blobs = paths
        .iter()
        .filter(|p| p.len() > 13 && p.starts_with("blobs/sha256/"))
        .count();
    // 2 manifests + 2 configs + 3 distinct layers.
    assert_eq!(blobs, 7);

    let (_d2, dst) = store();
    let loaded = load(&dst, &bytes[..], |_| {}).unwrap();
    assert_eq!(loaded.len(), 2);
    assert_same_image(&dst, &src, &a);
    assert_same_image(&dst, &src, &b);
    assert_eq!(dst.image(&b.id).unwrap().manifest_digest, b.manifest_digest);
}

#[test]
fn shared_layer_is_stored_once() {
    let (_d1, src) = store();
    let (a, b) = two_images(&src);
    let base = layer_digests(&src, &a)[0].clone();
    assert_eq!(layer_digests(&src, &b)[0], base);
    for format in [SaveFormat::Docker, SaveFormat::Oci] {
        let bytes = save_bytes(
            &src,
            &[
                ImageSelector::Id(a.id.clone()),
                ImageSelector::Id(b.id.clone()),
            ],
            format,
        );
        let path = format!("blobs/sha256/{}", base.hex());
        let n = tar_members(&bytes)
            .iter()
            .filter(|(p, _, _)| *p == path)
            .count();
        assert_eq!(n, 1, "{format:?}");
    }
}

#[test]
fn selectors_choose_tags_like_docker_save() {
    let (_d1, src) = store();
    let (a, b) = two_images(&src);
    let mut out = Vec::new();

    // By id: no tags.
    let saved = save(
        &src,
        &[query(a.id.digest().hex())],
        &mut out,
        SaveFormat::Docker,
        |_| {},
    )
    .unwrap();
    assert_eq!(saved.len(), 1);
    assert!(saved[0].tags.is_empty());
    let (_d2, dst) = store();
    let loaded = load(&dst, &out[..], |_| {}).unwrap();
    assert_eq!(
        loaded,
        vec![LoadedImage {
            id: a.id.clone(),
            manifest_digest: a.manifest_digest.clone(),
            tags: vec![]
        }]
    );
    assert!(dst.image(&a.id).unwrap().tags.is_empty());

    // By short id prefix.
    let saved = save(
        &src,
        &[query(&b.id.digest().hex()[..12])],
        std::io::sink(),
        SaveFormat::Oci,
        |_| {},
    )
    .unwrap();
    assert_eq!(saved[0].id, b.id);

    // By repository: every tag of it.
    let saved = save(
        &src,
        &[query("app-a")],
        std::io::sink(),
        SaveFormat::Docker,
        |_| {},
    )
    .unwrap();
    assert_eq!(
        saved[0].tags,
        vec![reference("app-a:1"), reference("app-a:latest")]
    );

    // By one tag: only that tag.
    let saved = save(
        &src,
        &[query("app-a:1")],
        std::io::sink(),
        SaveFormat::Docker,
        |_| {},
    )
    .unwrap();
    assert_eq!(saved[0].tags, vec![reference("app-a:1")]);

    // Unknown.
    let err = save(
        &src,
        &[query("nope:1")],
        std::io::sink(),
        SaveFormat::Docker,
        |_| {},
    )
    .unwrap_err();
    assert!(matches!(err, Error::ImageNotFound { .. }), "{err:?}");
}

fn snapshot(store: &Store) -> Vec<ImageRecord> {
    store.images().unwrap()
}

/// A destination store already holding an image tagged `app-a:1`, which a
/// failed load must not take away.
fn busy_store() -> (tempfile::TempDir, Store) {
    let (dir, store) = store();
    put_image(
        &store,
        "other",
        &[TestLayer::plain(layer_tar(&[("x", b"x")]))],
        &["app-a:1"],
    );
    (dir, store)
}

#[test]
fn truncated_archive_fails_and_changes_nothing() {
    let (_d1, src) = store();
    two_images(&src);
    let bytes = save_bytes(
        &src,
        &[query("app-a"), query("registry.example:5000/team/app-b")],
        SaveFormat::Docker,
    );
    // Cut inside a blob, inside a header, in the documents, and just
    // before the end-of-archive marker's last block.
    let cuts = [
        bytes.len() / 3,
        512 * 3 + 100,
        bytes.len() - 1024 - 300,
        700,
    ];
    for cut in cuts {
        let (_d2, dst) = busy_store();
        let before = snapshot(&dst);
        let err = load(&dst, &bytes[..cut], |_| {}).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Read { .. }
                    | Error::Header { .. }
                    | Error::MissingMember { .. }
                    | Error::MissingBlob { .. }
                    | Error::NotAnImageArchive
                    | Error::InvalidDocument { .. }
            ),
            "cut at {cut}: {err:?}"
        );
        assert_eq!(snapshot(&dst), before, "cut at {cut}");
    }
}

#[test]
fn truncated_member_is_a_read_error() {
    let (_d1, src) = store();
    let (a, _) = two_images(&src);
    let bytes = save_bytes(&src, &[ImageSelector::Id(a.id.clone())], SaveFormat::Oci);
    // Cut in the middle of the first blob's data.
    let err = load(&store().1, &bytes[..512 * 3 + 10], |_| {}).unwrap_err();
    match err {
        Error::Read {
            member: Some(member),
            source,
        } => {
            assert!(member.starts_with("blobs/sha256/"), "{member}");
            assert_eq!(source.kind(), std::io::ErrorKind::UnexpectedEof);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn corrupt_archive_fails_and_changes_nothing() {
    let (_d1, src) = store();
    let (a, _) = two_images(&src);
    let bytes = save_bytes(&src, &[query("app-a")], SaveFormat::Docker);
    let members = tar_members(&bytes);
    let layer = layer_digests(&src, &a)[1].clone();
    let data = &members
        .iter()
        .find(|(p, _, _)| p.ends_with(layer.hex()))
        .unwrap()
        .2;
    let offset = find(&bytes, data).unwrap();

    // A flipped byte in a layer, whether the store has that layer or not.
    for preloaded in [false, true] {
        let (_d2, dst) = busy_store();
        if preloaded {
            dst.write_blob_bytes(data).unwrap();
        }
        let before = snapshot(&dst);
        let mut corrupt = bytes.clone();
        corrupt[offset + 20] ^= 0x40;
        let err = load(&dst, &corrupt[..], |_| {}).unwrap_err();
        match &err {
            Error::CorruptMember { member, .. } => assert!(member.ends_with(layer.hex())),
            other => panic!("{other:?}"),
        }
        assert!(err.to_string().contains("is corrupt"));
        assert_eq!(snapshot(&dst), before);
    }

    // A flipped byte in a tar header.
    let (_d2, dst) = busy_store();
    let before = snapshot(&dst);
    let mut corrupt = bytes.clone();
    corrupt[offset - 512 + 10] ^= 0x01;
    let err = load(&dst, &corrupt[..], |_| {}).unwrap_err();
    assert!(
        matches!(err, Error::Header { after: Some(_), .. }),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .starts_with("failed to read the archive's next entry after member")
    );
    assert_eq!(snapshot(&dst), before);
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[test]
fn compressed_archives_load() {
    let (_d1, src) = store();
    let (a, b) = two_images(&src);
    let bytes = save_bytes(
        &src,
        &[query("app-a"), query("registry.example:5000/team/app-b")],
        SaveFormat::Docker,
    );

    let (_d2, dst) = store();
    load(&dst, &gzip(&bytes)[..], |_| {}).unwrap();
    assert_same_image(&dst, &src, &a);
    assert_same_image(&dst, &src, &b);

    let (_d3, dst) = store();
    let zst = zstd::encode_all(&bytes[..], 3).unwrap();
    load(&dst, &zst[..], |_| {}).unwrap();
    assert_same_image(&dst, &src, &a);
    assert_same_image(&dst, &src, &b);

    // A truncated gzip stream is a read error.
    let gz = gzip(&bytes);
    let (_d4, dst) = busy_store();
    let before = snapshot(&dst);
    let err = load(&dst, &gz[..gz.len() / 2], |_| {}).unwrap_err();
    assert!(matches!(err, Error::Read { .. }), "{err:?}");
    assert_eq!(snapshot(&dst), before);
}

/// Appends a file to a hand-built tar.
fn add(builder: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]) {
    let mut header = tar::Header::new_gnu();
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    builder.append_data(&mut header, path, data).unwrap();
}

#[test]
fn old_form_docker_archive_loads() {
    // As Docker 1.10–24 wrote it: <v1 id>/{VERSION,json,layer.tar},
    // <config hex>.json, manifest.json, repositories, with a duplicate
    // layer as a symlink to the first copy, members in no useful order.
    let base = layer_tar(&[("bin/sh", b"#!")]);
    let top = layer_tar(&[("app", b"app")]);
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [
            Digest::sha256(&base).to_string(),
            Digest::sha256(&top).to_string(),
            Digest::sha256(&base).to_string(),
        ]},
    });
    let config_bytes = serde_json::to_vec(&config).unwrap();
    let config_digest = Digest::sha256(&config_bytes);
    let (l1, l2, l3) = ("1".repeat(64), "2".repeat(64), "3".repeat(64));
    let manifest = serde_json::json!([{
        "Config": format!("{}.json", config_digest.hex()),
        "RepoTags": ["old/app:1.0", "old/app:latest"],
        "Layers": [format!("{l1}/layer.tar"), format!("{l2}/layer.tar"), format!("{l3}/layer.tar")],
    }]);

    let mut builder = tar::Builder::new(Vec::new());
    add(
        &mut builder,
        "manifest.json",
        &serde_json::to_vec(&manifest).unwrap(),
    );
    add(&mut builder, &format!("{l2}/VERSION"), b"1.0");
    add(&mut builder, &format!("{l2}/json"), b"{}");
    add(&mut builder, &format!("./{l2}/layer.tar"), &top);
    add(
        &mut builder,
        &format!("{}.json", config_digest.hex()),
        &config_bytes,
    );
    add(&mut builder, &format!("{l1}/layer.tar"), &base);
    let mut link = tar::Header::new_gnu();
    link.set_entry_type(tar::EntryType::Symlink);
    link.set_size(0);
    builder
        .append_link(
            &mut link,
            format!("{l3}/layer.tar"),
            format!("../{l1}/layer.tar"),
        )
        .unwrap();
    add(
        &mut builder,
        "repositories",
        br#"{"old/app":{"1.0":"3333"}}"#,
    );
    let bytes = builder.into_inner().unwrap();

    let (_d, dst) = store();
    let loaded = load(&dst, &bytes[..], |_| {}).unwrap();
    assert_eq!(loaded.len(), 1);
    let image = &loaded[0];
    assert_eq!(image.id.digest(), &config_digest);
    assert_eq!(
        image.tags,
        vec![reference("old/app:1.0"), reference("old/app:latest")]
    );
    let record = dst.resolve("old/app:1.0").unwrap();
    assert_eq!(record.id, image.id);
    assert_eq!(record.manifest_digest, image.manifest_digest);
    // The made-up manifest lists the uncompressed layers as stored.
    assert_eq!(
        layer_digests(&dst, &record),
        vec![
            Digest::sha256(&base),
            Digest::sha256(&top),
            Digest::sha256(&base)
        ]
    );
    let manifest: Value = serde_json::from_slice(
        &dst.read_blob_bytes(&record.manifest_digest, 1 << 20)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(
        manifest["layers"][0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar"
    );

    // And it saves back out as a Docker 25 archive that loads the same.
    let again = save_bytes(&dst, &[query("old/app")], SaveFormat::Docker);
    let (_d2, dst2) = store();
    let reloaded = load(&dst2, &again[..], |_| {}).unwrap();
    assert_eq!(reloaded, loaded);
}

#[test]
fn old_form_layer_not_matching_config_is_rejected() {
    let base = layer_tar(&[("bin/sh", b"#!")]);
    let config = serde_json::json!({"os": "linux", "architecture": "amd64", "rootfs": {"type": "layers", "diff_ids": [Digest::sha256(b"something else").to_string()]}});
    let config_bytes = serde_json::to_vec(&config).unwrap();
    let manifest =
        serde_json::json!([{"Config": "c.json", "RepoTags": ["x:1"], "Layers": ["l/layer.tar"]}]);
    let mut builder = tar::Builder::new(Vec::new());
    add(&mut builder, "c.json", &config_bytes);
    add(&mut builder, "l/layer.tar", &base);
    add(
        &mut builder,
        "manifest.json",
        &serde_json::to_vec(&manifest).unwrap(),
    );
    let bytes = builder.into_inner().unwrap();
    let (_d, dst) = store();
    let err = load(&dst, &bytes[..], |_| {}).unwrap_err();
    assert!(matches!(err, Error::DiffIdMismatch { .. }), "{err:?}");
    assert!(dst.images().unwrap().is_empty());
}

#[test]
fn not_an_image_archive() {
    let mut builder = tar::Builder::new(Vec::new());
    add(&mut builder, "hello.txt", b"hi");
    let bytes = builder.into_inner().unwrap();
    let (_d, dst) = store();
    let err = load(&dst, &bytes[..], |_| {}).unwrap_err();
    assert!(matches!(err, Error::NotAnImageArchive), "{err:?}");
}

/// The archive `bytes` with its index.json changed by `edit`.
fn edit_index(bytes: &[u8], edit: impl FnOnce(&mut Value)) -> Vec<u8> {
    let members = tar_members(bytes);
    let (_, _, data) = members.iter().find(|(p, _, _)| p == "index.json").unwrap();
    let mut index: Value = serde_json::from_slice(data).unwrap();
    edit(&mut index);
    let mut builder = tar::Builder::new(Vec::new());
    for (path, header, data) in &members {
        let data = if path == "index.json" {
            serde_json::to_vec(&index).unwrap()
        } else {
            data.clone()
        };
        let mut header = header.clone();
        header.set_size(data.len() as u64);
        header.set_cksum();
        builder.append_data(&mut header, path, &data[..]).unwrap();
    }
    builder.into_inner().unwrap()
}

#[test]
fn oci_ref_name_annotations() {
    // An OCI layout as other tools write it: ref.name a full reference, or
    // only a tag (which cannot be applied).
    let (_d1, src) = store();
    let (a, b) = two_images(&src);
    let bytes = save_bytes(
        &src,
        &[
            ImageSelector::Id(a.id.clone()),
            ImageSelector::Id(b.id.clone()),
        ],
        SaveFormat::Oci,
    );
    let bytes = edit_index(&bytes, |index| {
        index["manifests"][0]["annotations"] =
            serde_json::json!({"org.opencontainers.image.ref.name": "example.com/x/y:3"});
        index["manifests"][1]["annotations"] =
            serde_json::json!({"org.opencontainers.image.ref.name": "3"});
    });
    let (_d2, dst) = store();
    let loaded = load(&dst, &bytes[..], |_| {}).unwrap();
    assert_eq!(loaded[0].tags, vec![reference("example.com/x/y:3")]);
    assert!(loaded[1].tags.is_empty());
}

#[test]
fn failed_save_stops_before_the_documents() {
    let (_d1, src) = store();
    let (a, _) = two_images(&src);
    // Corrupt a stored layer in place (blobs are read-only; make it writable).
    let layer = layer_digests(&src, &a)[1].clone();
    let path = src.blob_path(&layer);
    let mut perms = std::fs::metadata(&path).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(&path, perms).unwrap();
    let mut data = std::fs::read(&path).unwrap();
    data[0] ^= 1;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .write_all(&data)
        .unwrap();

    let mut out = Vec::new();
    let err = save(
        &src,
        &[ImageSelector::Id(a.id.clone())],
        &mut out,
        SaveFormat::Oci,
        |_| {},
    )
    .unwrap_err();
    assert!(matches!(err, Error::CorruptBlob { .. }), "{err:?}");
    assert!(find(&out, b"imageLayoutVersion").is_none());
}

#[test]
fn inconsistent_index_falls_back_to_manifest_json() {
    let (_d1, src) = store();
    let (a, _) = two_images(&src);
    let bytes = save_bytes(&src, &[query("app-a:1")], SaveFormat::Docker);
    let bytes = edit_index(&bytes, |index| {
        index["manifests"][0]["size"] = serde_json::json!(1);
    });
    let (_d2, dst) = store();
    let loaded = load(&dst, &bytes[..], |_| {}).unwrap();
    assert_eq!(loaded.len(), 1);
    assert_eq!(loaded[0].id, a.id);
    assert_eq!(loaded[0].tags, vec![reference("app-a:1")]);
    // The manifest is made up from manifest.json: same layers, new digest.
    assert_ne!(loaded[0].manifest_digest, a.manifest_digest);
    assert_eq!(
        layer_digests(&dst, &dst.image(&a.id).unwrap()),
        layer_digests(&src, &a)
    );
}

#[test]
fn docker_media_types_round_trip() {
    // Images as `kiln import` and registries store them: a Docker v2
    // schema 2 manifest, Docker config and layer media types.
    let (_d1, src) = store();
    let layer = layer_tar(&[("rootfs/file", b"imported")]);
    let layer_digest = src.write_blob_bytes(&layer).unwrap();
    let config = serde_json::json!({
        "architecture": "arm64", "variant": "v8", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [layer_digest.to_string()]},
    });
    let config_bytes = serde_json::to_vec(&config).unwrap();
    let config_digest = src.write_blob_bytes(&config_bytes).unwrap();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": config_digest.to_string(), "size": config_bytes.len()},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar", "digest": layer_digest.to_string(), "size": layer.len()}],
    });
    let manifest_digest = src
        .write_blob_bytes(&serde_json::to_vec(&manifest).unwrap())
        .unwrap();
    let mut record = ImageRecord::new(manifest_digest.clone(), config_digest);
    record.tags = vec![reference("imported:1")];
    let record = src.put_image(record).unwrap();

    for format in [SaveFormat::Docker, SaveFormat::Oci] {
        let bytes = save_bytes(&src, &[query("imported")], format);
        let index: Value = serde_json::from_slice(
            &tar_members(&bytes)
                .into_iter()
                .find(|(p, _, _)| p == "index.json")
                .unwrap()
                .2,
        )
        .unwrap();
        // A docker-archive keeps the Docker manifest; an OCI layout gets it
        // converted to OCI media types (same config and layers).
        let expected_type = match format {
            SaveFormat::Docker => "application/vnd.docker.distribution.manifest.v2+json",
            SaveFormat::Oci => "application/vnd.oci.image.manifest.v1+json",
        };
        assert_eq!(index["manifests"][0]["mediaType"], expected_type);
        assert_eq!(
            index["manifests"][0]["platform"],
            serde_json::json!({"architecture": "arm64", "os": "linux", "variant": "v8"})
        );
        let (_d2, dst) = store();
        let loaded = load(&dst, &bytes[..], |_| {}).unwrap();
        assert_eq!(loaded[0].id, record.id, "{format:?}");
        if format == SaveFormat::Docker {
            assert_eq!(loaded[0].manifest_digest, manifest_digest);
            assert_same_image(&dst, &src, &record);
        } else {
            let converted: Value = serde_json::from_slice(
                &dst.read_blob_bytes(&loaded[0].manifest_digest, 1 << 20)
                    .unwrap(),
            )
            .unwrap();
            assert_eq!(
                converted["config"]["mediaType"],
                "application/vnd.oci.image.config.v1+json"
            );
            assert_eq!(
                converted["layers"][0]["mediaType"],
                "application/vnd.oci.image.layer.v1.tar"
            );
            assert_eq!(
                converted["layers"][0]["digest"],
                manifest["layers"][0]["digest"]
            );
        }
    }
}
