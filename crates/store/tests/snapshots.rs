//! Snapshots: unpack once, concurrently, from compressed blobs.

use std::io::Write;

use kiln_oci::Digest;
use kiln_store::{Error, Store};

fn layer_tar() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_path("etc/hostname").unwrap();
    h.set_size(5);
    h.set_mode(0o644);
    h.set_mtime(1_600_000_000);
    h.set_cksum();
    b.append(&h, &b"kiln\n"[..]).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_path(".wh.removed").unwrap();
    h.set_size(0);
    h.set_mode(0o644);
    h.set_cksum();
    b.append(&h, &[][..]).unwrap();
    b.into_inner().unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(data).unwrap();
    gz.finish().unwrap()
}

#[test]
fn prepare_snapshot_unpacks_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let tar = layer_tar();
    let diff_id = Digest::sha256(&tar);
    let layer = store.write_blob_bytes(&gzip(&tar)).unwrap();
    // A single-layer chain id is the diff id.
    let chain_id = diff_id.clone();

    assert!(store.snapshot(&chain_id).unwrap().is_none());
    let snapshots: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let store = Store::open(dir.path()).unwrap();
                let (chain_id, layer, diff_id) = (&chain_id, &layer, &diff_id);
                s.spawn(move || store.prepare_snapshot(chain_id, layer, diff_id).unwrap())
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    // Everyone got the same snapshot: unpacked once (same creation record).
    for s in &snapshots {
        assert_eq!(s, &snapshots[0]);
    }
    let snap = &snapshots[0];
    assert_eq!(snap.dir, store.snapshot_dir(&chain_id));
    assert_eq!(snap.meta.diff_id, diff_id);
    assert_eq!(snap.meta.layer, layer);
    assert_eq!(snap.meta.compression, "gzip");
    assert_eq!(snap.meta.stats.files, 1);
    assert_eq!(snap.meta.stats.whiteouts, 1);
    assert_eq!(
        std::fs::read(snap.fs.join("etc/hostname")).unwrap(),
        b"kiln\n"
    );
    assert_eq!(store.list_snapshots().unwrap(), vec![chain_id.clone()]);
    assert!(
        std::fs::read_dir(store.ingest_dir())
            .unwrap()
            .next()
            .is_none(),
        "no temporary directories left"
    );

    assert!(store.remove_snapshot(&chain_id).unwrap());
    assert!(!store.remove_snapshot(&chain_id).unwrap());
    assert!(store.snapshot(&chain_id).unwrap().is_none());
    assert!(store.list_snapshots().unwrap().is_empty());
}

#[test]
fn failed_unpack_leaves_no_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.as_gnu_mut().unwrap().name[..8].copy_from_slice(b"../evil\0");
    h.set_size(0);
    h.set_mode(0o644);
    h.set_cksum();
    b.append(&h, &[][..]).unwrap();
    let layer = store.write_blob_bytes(&b.into_inner().unwrap()).unwrap();
    let chain_id = Digest::sha256(b"chain");
    let err = store
        .prepare_snapshot(&chain_id, &layer, &chain_id)
        .unwrap_err();
    assert!(matches!(err, Error::Unpack { .. }), "{err:?}");
    assert!(store.snapshot(&chain_id).unwrap().is_none());
    assert!(!store.snapshot_dir(&chain_id).exists());
    assert!(
        std::fs::read_dir(store.ingest_dir())
            .unwrap()
            .next()
            .is_none()
    );

    let missing = Digest::sha256(b"missing layer");
    assert!(matches!(
        store
            .prepare_snapshot(&chain_id, &missing, &chain_id)
            .unwrap_err(),
        Error::BlobNotFound { .. }
    ));
}

#[test]
fn a_layer_that_does_not_match_its_diff_id_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let tar = layer_tar();
    let layer = store.write_blob_bytes(&gzip(&tar)).unwrap();
    let claimed = Digest::sha256(b"what a hostile config says");
    let err = store
        .prepare_snapshot(&claimed, &layer, &claimed)
        .unwrap_err();
    assert!(
        matches!(&err, Error::DiffIdMismatch { expected, actual, .. }
            if expected == &claimed && actual == &Digest::sha256(&tar)),
        "{err:?}"
    );
    assert!(store.snapshot(&claimed).unwrap().is_none());
    assert!(
        std::fs::read_dir(store.ingest_dir())
            .unwrap()
            .next()
            .is_none()
    );
}

fn meta_for(chain_id: &Digest) -> kiln_store::SnapshotMeta {
    kiln_store::SnapshotMeta {
        chain_id: chain_id.clone(),
        layer: chain_id.clone(),
        diff_id: chain_id.clone(),
        compression: "none".to_owned(),
        created: 0,
        stats: kiln_store::LayerStats::default(),
        unsynced: None,
    }
}

fn content(dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    let c = dir.join(name);
    std::fs::create_dir(&c).unwrap();
    std::fs::write(c.join("file"), name).unwrap();
    c
}

/// Rewrites a snapshot's recorded boot, as if it was published in an
/// earlier boot of the machine.
fn from_earlier_boot(store: &Store, chain_id: &Digest) -> u64 {
    let path = store.snapshot_dir(chain_id).join("snapshot.json");
    let mut meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    meta["unsynced"]["boot_id"] = "earlier-boot".into();
    std::fs::write(&path, serde_json::to_vec(&meta).unwrap()).unwrap();
    meta["unsynced"]["published_ns"].as_u64().unwrap()
}

#[test]
fn deferred_snapshots_are_trusted_in_their_boot_or_once_synced() {
    if !std::path::Path::new("/proc/sys/kernel/random/boot_id").exists() {
        return; // Published synced without a boot id: nothing to test.
    }
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store")).unwrap();
    let chain_id = Digest::sha256(b"deferred");

    let s = store
        .publish_snapshot_deferred(&content(dir.path(), "one"), meta_for(&chain_id))
        .unwrap();
    assert!(s.meta.unsynced.is_some());
    assert!(store.snapshot(&chain_id).unwrap().is_some());

    // From an earlier boot, never synced: may have lost content.
    let published = from_earlier_boot(&store, &chain_id);
    assert!(store.snapshot(&chain_id).unwrap().is_none());
    // A sync of that boot before the publication does not cover it …
    let synced = store.root().join("synced-boots");
    std::fs::write(&synced, format!("earlier-boot {}\n", published - 1)).unwrap();
    assert!(store.snapshot(&chain_id).unwrap().is_none());
    // … one after it does.
    std::fs::write(&synced, format!("earlier-boot {published}\n")).unwrap();
    assert!(store.snapshot(&chain_id).unwrap().is_some());

    // Publishing again replaces an untrusted snapshot.
    std::fs::remove_file(&synced).unwrap();
    let s = store
        .publish_snapshot_deferred(&content(dir.path(), "two"), meta_for(&chain_id))
        .unwrap();
    assert_eq!(std::fs::read_to_string(s.fs.join("file")).unwrap(), "two");
    assert!(store.snapshot(&chain_id).unwrap().is_some());

    // The sync records this boot, up to now.
    store.sync_deferred().unwrap();
    let text = std::fs::read_to_string(&synced).unwrap();
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    assert!(text.starts_with(boot.trim()), "{text}");
    let ns: u64 = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(ns >= s.meta.unsynced.unwrap().published_ns);
    // Nothing published since: the next sync does nothing.
    std::fs::remove_file(&synced).unwrap();
    store.sync_deferred().unwrap();
    assert!(!synced.exists());
}
