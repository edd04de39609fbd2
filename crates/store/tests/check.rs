//! `Store::check`: corrupt and missing blobs, broken image records,
//! unreferenced content, snapshots and stale temporaries.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use kiln_oci::{Digest, Platform, Reference};
use kiln_store::{BlobRole, CheckReport, Finding, ImageRecord, ImportOptions, Store, chain_ids};

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store")).unwrap();
    (dir, store)
}

fn rootfs(content: &[u8]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(content.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, "etc/hello", content).unwrap();
    b.into_inner().unwrap()
}

/// Imports a one-layer image tagged `tag`; returns its record and layer.
fn import(store: &Store, content: &[u8], tag: &str) -> (ImageRecord, Digest) {
    let opts = ImportOptions {
        config: Default::default(),
        platform: Platform::new("linux", "amd64"),
        comment: "test".into(),
        created: chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
    };
    let mut record = store.import_rootfs(&rootfs(content)[..], &opts).unwrap();
    record.tags.push(Reference::parse(tag).unwrap());
    let record = store.put_image(record).unwrap();
    let layer = store.image_docs(&record).unwrap().layers[0].clone();
    (record, layer)
}

fn set_age(path: &Path, age: Duration) {
    let f = fs::File::open(path).unwrap();
    f.set_modified(SystemTime::now() - age).unwrap();
}

fn problems(report: &CheckReport) -> Vec<String> {
    report
        .issues
        .iter()
        .filter(|i| i.finding.is_problem())
        .map(|i| i.finding.to_string())
        .collect()
}

#[test]
fn clean_store_has_no_findings() {
    let (_d, store) = store();
    let (record, layer) = import(&store, b"one", "app:1");
    let docs = store.image_docs(&record).unwrap();
    let chain = chain_ids(&docs.config.rootfs.diff_ids).pop().unwrap();
    let diff_id = docs.config.rootfs.diff_ids[0].clone();
    store.prepare_snapshot(&chain, &layer, &diff_id).unwrap();

    let report = store.check(false).unwrap();
    assert_eq!(report.issues, vec![], "{report:?}");
    assert_eq!((report.blobs, report.images, report.snapshots), (3, 1, 1));
    assert!(report.references_complete);
    assert!(report.is_clean());

    let repaired = store.check(true).unwrap();
    assert!(repaired.issues.is_empty() && repaired.removed_images.is_empty());
    assert_eq!(store.images().unwrap().len(), 1);
}

#[test]
fn corrupt_blob_is_detected_and_repaired() {
    let (_d, store) = store();
    let (record, layer) = import(&store, b"one", "app:1");
    let (other, _) = import(&store, b"two", "other:2");
    let path = store.blob_path(&layer);
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    let mut bytes = fs::read(&path).unwrap();
    bytes[600] ^= 0xff;
    fs::write(&path, &bytes).unwrap();

    let report = store.check(false).unwrap();
    let found = problems(&report);
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(
        found[0].starts_with(&format!("blob {layer}: corrupt")),
        "{found:?}"
    );
    assert!(matches!(
        &report.issues[1].finding,
        Finding::CorruptImageBlob { image, role: BlobRole::Layer, digest }
            if image == &record.id && digest == &layer
    ));
    assert!(!report.is_clean());
    assert_eq!(report.repaired(), 0);
    assert!(path.exists(), "a check without repair changes nothing");

    let report = store.check(true).unwrap();
    assert_eq!(report.problems(), 2, "{report:?}");
    assert_eq!(report.repaired(), 2);
    assert!(report.is_clean());
    assert!(!path.exists());
    assert_eq!(report.removed_images.len(), 1);
    assert_eq!(
        report.removed_images[0].tags[0].to_string(),
        "docker.io/library/app:1"
    );
    let left: Vec<_> = store.images().unwrap().into_iter().map(|r| r.id).collect();
    assert_eq!(left, vec![other.id]);

    // What the removed image left behind is only unreferenced (and young,
    // so kept).
    let after = store.check(true).unwrap();
    assert_eq!(after.problems(), 0, "{after:?}");
    assert!(after.is_clean());
    assert!(store.has_blob(&record.manifest_digest).unwrap());
}

#[test]
fn missing_layer_is_reported_and_repair_removes_the_record() {
    let (_d, store) = store();
    let (record, layer) = import(&store, b"one", "app:1");
    store.delete_blob(&layer).unwrap();

    let report = store.check(false).unwrap();
    assert_eq!(
        problems(&report),
        vec![format!("image {}: missing blob {layer} (layer)", record.id)]
    );
    assert_eq!(store.images().unwrap().len(), 1);

    let report = store.check(true).unwrap();
    assert_eq!((report.problems(), report.repaired()), (1, 1));
    assert_eq!(report.removed_images[0].id, record.id);
    assert!(store.images().unwrap().is_empty());
    // The index is still readable by the normal code paths.
    store.tag(&record.id, "x").unwrap_err();
}

#[test]
fn unparsable_manifest_is_an_invalid_document() {
    let (_d, store) = store();
    let (good, _) = import(&store, b"one", "app:1");
    let manifest = store.write_blob_bytes(b"not json").unwrap();
    let config = store
        .write_blob_bytes(
            br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#,
        )
        .unwrap();
    let bad = store
        .put_image(ImageRecord::new(manifest.clone(), config))
        .unwrap();
    let report = store.check(false).unwrap();
    let found = problems(&report);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with(&format!("image {}: invalid manifest {manifest}", bad.id)),
        "{found:?}"
    );
    let report = store.check(true).unwrap();
    assert!(report.is_clean());
    let left: Vec<_> = store.images().unwrap().into_iter().map(|r| r.id).collect();
    assert_eq!(left, vec![good.id]);
}

#[test]
fn unreferenced_blobs_are_deleted_only_when_old() {
    let (_d, store) = store();
    import(&store, b"one", "app:1");
    let young = store.write_blob_bytes(b"build cache, maybe").unwrap();
    let old = store.write_blob_bytes(b"left by a crash").unwrap();
    set_age(&store.blob_path(&old), Duration::from_secs(2 * 3600));

    let report = store.check(false).unwrap();
    assert_eq!(report.problems(), 0);
    assert!(report.is_clean(), "unreferenced blobs are informational");
    let unreferenced: Vec<_> = report
        .issues
        .iter()
        .filter_map(|i| match &i.finding {
            Finding::UnreferencedBlob { digest, .. } => Some(digest.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(unreferenced.len(), 2);
    assert!(unreferenced.contains(&young) && unreferenced.contains(&old));

    let report = store.check(true).unwrap();
    assert!(report.is_clean());
    assert!(store.has_blob(&young).unwrap());
    assert!(!store.has_blob(&old).unwrap());
    assert!(report.issues.iter().any(|i| i.repaired
        && matches!(&i.finding, Finding::UnreferencedBlob { digest, .. } if digest == &old)));
}

#[test]
fn snapshots_without_metadata_and_orphans() {
    let (_d, store) = store();
    let (record, layer) = import(&store, b"one", "app:1");
    let diff_id = store.image_docs(&record).unwrap().config.rootfs.diff_ids[0].clone();
    // A snapshot of the layer under a chain id no image has: an orphan.
    let orphan = Digest::sha256(b"some other chain");
    store.prepare_snapshot(&orphan, &layer, &diff_id).unwrap();
    // A directory without snapshot.json: broken.
    let broken = Digest::sha256(b"broken");
    fs::create_dir_all(store.snapshot_dir(&broken).join("fs")).unwrap();

    let report = store.check(false).unwrap();
    assert_eq!(report.snapshots, 2);
    assert_eq!(
        problems(&report),
        vec![format!("snapshot {broken}: missing snapshot.json")]
    );
    assert!(report.issues.iter().any(|i| matches!(
        &i.finding,
        Finding::UnreferencedSnapshot { chain_id } if chain_id == &orphan
    )));

    let report = store.check(true).unwrap();
    assert!(report.is_clean());
    assert!(!store.snapshot_dir(&broken).exists());
    assert!(
        store.snapshot(&orphan).unwrap().is_some(),
        "orphans are kept"
    );
}

#[test]
fn stale_temporaries_are_removed_with_repair() {
    let (_d, store) = store();
    // What an older kiln left in the shared ingest directory, and a dead
    // process's lease that appeared after the store was opened.
    let legacy = store.root().join("ingest");
    fs::create_dir_all(&legacy).unwrap();
    let stale_file = legacy.join("blob-stale");
    fs::write(&stale_file, b"partial").unwrap();
    let stale_dir = store.root().join("leases/4242-dead");
    fs::create_dir_all(stale_dir.join("ingest/snapshot-x/fs/ro")).unwrap();
    fs::write(stale_dir.join("lock"), b"").unwrap();
    fs::set_permissions(
        stale_dir.join("ingest/snapshot-x/fs/ro"),
        fs::Permissions::from_mode(0o555),
    )
    .unwrap();
    // Ours: live, so never reported.
    let fresh = store.ingest_dir().join("blob-fresh");
    fs::write(&fresh, b"being written").unwrap();

    let report = store.check(false).unwrap();
    assert!(report.is_clean());
    let stale: Vec<_> = report
        .issues
        .iter()
        .filter(|i| matches!(i.finding, Finding::StaleTemp { .. }))
        .collect();
    assert_eq!(stale.len(), 2, "{report:?}");
    assert!(stale_file.exists());

    store.check(true).unwrap();
    assert!(!stale_file.exists());
    assert!(!stale_dir.exists());
    assert!(fresh.exists());
}

#[test]
fn damaged_snapshot_files_are_found_and_unpacked_again() {
    let (_d, store) = store();
    let (record, layer) = import(&store, b"original", "app:1");
    let docs = store.image_docs(&record).unwrap();
    let diff_id = docs.config.rootfs.diff_ids[0].clone();
    let chain = chain_ids(&docs.config.rootfs.diff_ids).pop().unwrap();
    let snapshot = store.prepare_snapshot(&chain, &layer, &diff_id).unwrap();
    assert!(store.check(false).unwrap().is_clean());

    // Same size, other content; and a file that is not in the layer.
    fs::write(snapshot.fs.join("etc/hello"), b"tampered").unwrap();
    fs::write(snapshot.fs.join("etc/extra"), b"x").unwrap();
    assert!(
        store.check_with(false, false).unwrap().is_clean(),
        "fast skips it"
    );
    let report = store.check(false).unwrap();
    let found = problems(&report);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].contains("etc/extra: not in the layer"),
        "{found:?}"
    );
    assert!(found[0].contains("etc/hello: content differs"), "{found:?}");

    let report = store.check(true).unwrap();
    assert_eq!(report.repaired(), 1, "{report:?}");
    assert_eq!(
        fs::read(snapshot.fs.join("etc/hello")).unwrap(),
        b"original"
    );
    assert!(!snapshot.fs.join("etc/extra").exists());
    assert!(store.check(false).unwrap().is_clean());
}

#[test]
fn a_damaged_image_index_is_restored_from_its_backup() {
    let (_d, store) = store();
    let (record, _) = import(&store, b"one", "app:1");
    let index = store.root().join("images.json");
    let len = fs::metadata(&index).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&index)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    assert!(store.images().is_err());
    let report = store.check(false).unwrap();
    assert!(!report.is_clean());
    let report = store.check(true).unwrap();
    assert_eq!(report.repaired(), 1, "{report:?}");
    let images = store.images().unwrap();
    assert_eq!(images.len(), 1);
    assert_eq!(images[0].id, record.id);
    assert_eq!(images[0].tags, record.tags);
}
