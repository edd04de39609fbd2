//! Leases: another live process's holds keep images and blobs from
//! deletion; a dead process's lease is reaped with what it left mounted;
//! a failed writer's blobs can be discarded.
//!
//! "Another process" is simulated in this one: a lease directory whose
//! lock file the test holds through its own open file (an `flock` held by
//! one open file excludes every other, even in the same process).

use std::fs;
use std::path::Path;

use kiln_oci::{Platform, Reference};
use kiln_store::{Error, ImageError, ImageRecord, ImportOptions, PruneScope, Store};

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store")).unwrap();
    (dir, store)
}

fn import(store: &Store, content: &[u8], tag: &str) -> ImageRecord {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(content.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, "etc/hello", content).unwrap();
    let opts = ImportOptions {
        config: Default::default(),
        platform: Platform::new("linux", "amd64"),
        comment: "test".into(),
        created: chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
    };
    let mut record = store
        .import_rootfs(&b.into_inner().unwrap()[..], &opts)
        .unwrap();
    record.tags.push(Reference::parse(tag).unwrap());
    store.put_image(record).unwrap()
}

/// A live lease of "another process" holding `lines`; live while the
/// returned file is open.
fn other_process(store: &Store, lines: &[String]) -> (fs::File, std::path::PathBuf) {
    let dir = store.root().join("leases/777-other");
    fs::create_dir_all(dir.join("ingest")).unwrap();
    let lock = fs::File::create(dir.join("lock")).unwrap();
    lock.lock().unwrap();
    fs::write(dir.join("holds"), lines.join("\n") + "\n").unwrap();
    (lock, dir)
}

#[test]
fn a_held_image_is_not_deleted_nor_pruned_but_can_be_untagged() {
    let (_d, store) = store();
    let held = import(&store, b"base", "base:1");
    let other = import(&store, b"other", "other:1");
    let (lock, dir) = other_process(&store, &[format!("image {}", held.id.digest())]);

    let err = store.delete_image(&held.id).unwrap_err();
    assert!(
        matches!(&err, ImageError::Store(Error::ImageInUse { holders, .. }) if holders == &[777]),
        "{err:?}"
    );
    store.untag("base:1").unwrap();
    let pruned = store.prune_images(PruneScope::All).unwrap();
    let pruned: Vec<_> = pruned.iter().map(|r| r.record.id.clone()).collect();
    assert_eq!(pruned, vec![other.id]);
    let docs = store.image_docs(&store.image(&held.id).unwrap()).unwrap();
    for layer in &docs.layers {
        assert!(store.has_blob(layer).unwrap());
    }

    // The holder dies: its lease goes at the next open, and so does the
    // protection.
    drop(lock);
    let store = Store::open(store.root()).unwrap();
    assert!(!dir.exists());
    store.delete_image(&held.id).unwrap();
}

#[test]
fn held_blobs_survive_the_deletion_of_the_image_that_had_them() {
    let (_d, store) = store();
    let image = import(&store, b"shared layer", "app:1");
    let layer = store.image_docs(&image).unwrap().layers[0].clone();
    // Another process is loading an image with the same layer and has
    // not written its record yet.
    let (_lock, _dir) = other_process(&store, &[format!("blob {layer}")]);
    let removed = store.delete_image(&image.id).unwrap();
    assert!(!removed.blobs.contains(&layer));
    assert!(store.has_blob(&layer).unwrap());
}

#[test]
fn a_dead_processs_lease_is_reaped_with_its_files() {
    let (_d, store) = store();
    let dead = store.root().join("leases/4242-dead");
    fs::create_dir_all(dead.join("tmp/view-x/ro")).unwrap();
    fs::create_dir_all(dead.join("ingest")).unwrap();
    fs::write(dead.join("lock"), b"").unwrap();
    fs::write(dead.join("ingest/blob-partial"), vec![7u8; 4096]).unwrap();
    let infos = store.list_leases().unwrap();
    let info = infos.iter().find(|l| l.dir == dead).unwrap();
    assert!(!info.live);
    assert!(info.bytes >= 4096);
    let reaped = store.reap_leases().unwrap();
    assert_eq!(reaped.len(), 1);
    assert!(!dead.exists());
    assert!(Path::new(&store.ingest_dir()).exists());
}

#[test]
fn a_lease_its_maker_never_finished_setting_up_is_reaped_at_once() {
    let (_d, store) = store();
    // Killed between creating its staging directory and locking it.
    let dead = store.root().join("leases/.new-999999999-abcdef");
    fs::create_dir_all(dead.join("ingest")).unwrap();
    // One being set up right now by a live process (this one).
    let live = store
        .root()
        .join(format!("leases/.new-{}-abcdef", std::process::id()));
    fs::create_dir_all(&live).unwrap();
    store.reap_leases().unwrap();
    assert!(!dead.exists());
    assert!(live.exists());
}

#[test]
fn blobs_a_failed_writer_added_are_discarded_unless_used() {
    let (_d, store) = store();
    let image = import(&store, b"kept", "app:1");
    let mark = store.created_mark();
    let junk = store.write_blob_bytes(b"junk member").unwrap();
    let used = store.image_docs(&image).unwrap().layers[0].clone();
    // Writing a blob that is present adds nothing.
    store.write_blob(&b""[..], Some(&used), None).unwrap();
    let shared = store
        .write_blob_bytes(b"another process wants this")
        .unwrap();
    let (_lock, _dir) = other_process(&store, &[format!("blob {shared}")]);
    assert_eq!(store.discard_created_since(mark).unwrap(), 1);
    assert!(!store.has_blob(&junk).unwrap());
    assert!(store.has_blob(&used).unwrap());
    assert!(store.has_blob(&shared).unwrap());
}
