//! Blob store: verification, idempotence, concurrency, crash leftovers.

use std::fs;
use std::io::Read;

use kiln_oci::Digest;
use kiln_store::{Error, FORMAT_VERSION, Store};

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store")).unwrap();
    (dir, store)
}

fn ingest_is_empty(store: &Store) -> bool {
    fs::read_dir(store.ingest_dir()).unwrap().next().is_none()
}

#[test]
fn open_creates_layout_and_version() {
    let (_d, store) = store();
    for sub in ["blobs/sha256", "leases", "snapshots", "locks"] {
        assert!(store.root().join(sub).is_dir(), "{sub}");
    }
    let version = fs::read_to_string(store.root().join("VERSION")).unwrap();
    assert_eq!(version.trim(), FORMAT_VERSION.to_string());
    // Reopening works.
    Store::open(store.root()).unwrap();
}

#[test]
fn open_refuses_future_version() {
    let (_d, store) = store();
    fs::write(store.root().join("VERSION"), "2\n").unwrap();
    let err = Store::open(store.root()).unwrap_err();
    assert!(
        matches!(&err, Error::UnsupportedVersion { found, supported: 1, .. } if found == "2"),
        "{err:?}"
    );
}

#[test]
fn open_refuses_foreign_directory() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("something"), "x").unwrap();
    let err = Store::open(dir.path()).unwrap_err();
    assert!(matches!(err, Error::NotAStore { .. }), "{err:?}");
}

#[test]
fn write_and_read_back() {
    let (_d, store) = store();
    let data = b"hello blob";
    let (digest, size) = store.write_blob(&data[..], None, None).unwrap();
    assert_eq!(digest, Digest::sha256(data));
    assert_eq!(size, data.len() as u64);
    assert!(store.has_blob(&digest).unwrap());
    assert_eq!(store.blob_size(&digest).unwrap(), size);
    assert_eq!(store.read_blob_bytes(&digest, 1024).unwrap(), data);
    let mut s = String::new();
    store
        .open_blob(&digest)
        .unwrap()
        .read_to_string(&mut s)
        .unwrap();
    assert_eq!(s.as_bytes(), data);
    assert_eq!(
        store.blob_path(&digest),
        store.root().join("blobs/sha256").join(digest.hex())
    );
    assert_eq!(store.list_blobs().unwrap(), vec![digest.clone()]);
    assert_eq!(store.verify_blob(&digest).unwrap(), size);
    assert!(ingest_is_empty(&store));

    let err = store.read_blob_bytes(&digest, 3).unwrap_err();
    assert!(
        matches!(
            err,
            Error::BlobTooLarge {
                size: 10,
                limit: 3,
                ..
            }
        ),
        "{err:?}"
    );

    assert!(store.delete_blob(&digest).unwrap());
    assert!(!store.delete_blob(&digest).unwrap());
    assert!(!store.has_blob(&digest).unwrap());
    assert!(matches!(
        store.open_blob(&digest).unwrap_err(),
        Error::BlobNotFound { .. }
    ));
}

#[test]
fn digest_mismatch_leaves_nothing_visible() {
    let (_d, store) = store();
    let wrong = Digest::sha256(b"something else");
    let err = store
        .write_blob(&b"actual content"[..], Some(&wrong), None)
        .unwrap_err();
    assert!(
        matches!(&err, Error::Verify { expected, .. } if expected == &wrong),
        "{err:?}"
    );
    assert!(!store.has_blob(&wrong).unwrap());
    assert!(!store.has_blob(&Digest::sha256(b"actual content")).unwrap());
    assert!(store.list_blobs().unwrap().is_empty());
    assert!(ingest_is_empty(&store));
}

#[test]
fn size_mismatch_is_rejected() {
    let (_d, store) = store();
    let data = b"twelve bytes";
    let digest = Digest::sha256(data);
    // Too short a promise: cut off while streaming.
    let err = store
        .write_blob(&data[..], Some(&digest), Some(4))
        .unwrap_err();
    assert!(
        matches!(err, Error::TooLarge { expected: 4, .. }),
        "{err:?}"
    );
    // Too long a promise.
    let err = store
        .write_blob(&data[..], Some(&digest), Some(40))
        .unwrap_err();
    assert!(matches!(err, Error::Verify { .. }), "{err:?}");
    // Without a digest.
    let err = store.write_blob(&data[..], None, Some(4)).unwrap_err();
    assert!(
        matches!(err, Error::TooLarge { digest: None, .. }),
        "{err:?}"
    );
    assert!(store.list_blobs().unwrap().is_empty());
    assert!(ingest_is_empty(&store));
}

#[test]
fn existing_blob_is_not_reread() {
    let (_d, store) = store();
    let digest = store.write_blob_bytes(b"content").unwrap();
    struct Panics;
    impl Read for Panics {
        fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
            panic!("reader must not be used for an existing blob")
        }
    }
    let (d, size) = store.write_blob(Panics, Some(&digest), Some(7)).unwrap();
    assert_eq!((d, size), (digest.clone(), 7));
    // A wrong expected size for an existing blob is still an error.
    assert!(store.write_blob(Panics, Some(&digest), Some(8)).is_err());
}

#[test]
fn concurrent_writes_of_same_content() {
    let (_d, store) = store();
    let data: Vec<u8> = (0..200_000u32).flat_map(|i| i.to_le_bytes()).collect();
    let expected = Digest::sha256(&data);
    std::thread::scope(|s| {
        for i in 0..8 {
            let store = Store::open(store.root()).unwrap();
            let data = &data;
            let expected = &expected;
            s.spawn(move || {
                let want = (i % 2 == 0).then_some(expected);
                let (digest, size) = store.write_blob(&data[..], want, None).unwrap();
                assert_eq!(&digest, expected);
                assert_eq!(size, data.len() as u64);
            });
        }
    });
    assert_eq!(store.list_blobs().unwrap(), vec![expected.clone()]);
    store.verify_blob(&expected).unwrap();
    assert!(ingest_is_empty(&store));
}

#[test]
fn verify_detects_corruption() {
    let (_d, store) = store();
    let digest = store.write_blob_bytes(b"original").unwrap();
    let path = store.blob_path(&digest);
    let mut perms = fs::metadata(&path).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    fs::set_permissions(&path, perms).unwrap();
    fs::write(&path, b"tampered").unwrap();
    let err = store.verify_blob(&digest).unwrap_err();
    assert!(
        matches!(&err, Error::BlobCorrupt { actual, .. } if actual == &Digest::sha256(b"tampered")),
        "{err:?}"
    );
    assert!(matches!(
        store.read_blob_bytes(&digest, 100).unwrap_err(),
        Error::BlobCorrupt { .. }
    ));
}

#[test]
fn interrupted_write_is_cleaned_up() {
    let (_d, store) = store();
    // A reader that fails half way, like a dropped connection.
    struct Failing(usize);
    impl Read for Failing {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.0 == 0 {
                return Err(std::io::Error::other("connection reset"));
            }
            self.0 -= 1;
            buf[0] = b'x';
            Ok(1)
        }
    }
    let err = store.write_blob(Failing(10), None, None).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    assert!(
        ingest_is_empty(&store),
        "failed write removes its temp file"
    );

    // A killed process leaves its lease with a partial write behind (its
    // lock file no longer locked); the next open removes it, whatever its
    // age.
    let dead = store.root().join("leases/4242-dead");
    fs::create_dir_all(dead.join("ingest")).unwrap();
    fs::write(dead.join("lock"), b"").unwrap();
    fs::write(dead.join("ingest/blob-crashed"), b"partial").unwrap();
    let reopened = Store::open(store.root()).unwrap();
    assert!(!dead.exists());
    assert!(store.ingest_dir().exists(), "our own lease is kept");
    assert!(reopened.list_blobs().unwrap().is_empty());
}

#[test]
fn a_live_lease_is_never_reaped() {
    let (_dir, store) = store();
    let partial = store.ingest_dir().join("blob-being-written");
    fs::write(&partial, b"half").unwrap();
    // Another handle in this process, and a reaping pass: ours is live.
    let other = Store::open(store.root()).unwrap();
    assert!(other.reap_leases().unwrap().is_empty());
    assert!(partial.exists());
    assert_eq!(other.ingest_dir(), store.ingest_dir());
}

#[test]
fn blob_writer_commits_what_its_producer_hashed() {
    use std::io::Write;
    let (_dir, store) = store();
    let data = b"a layer tar, say".repeat(1000);
    let digest = Digest::sha256(&data);

    let mut w = store.blob_writer().unwrap();
    w.write_all(&data).unwrap();
    assert_eq!(w.size(), data.len() as u64);
    assert_eq!(w.commit_as(&digest).unwrap(), data.len() as u64);
    assert_eq!(store.read_blob_bytes(&digest, 1 << 20).unwrap(), data);
    assert!(ingest_is_empty(&store));

    // Present already: kept, the new copy dropped.
    let mut w = store.blob_writer().unwrap();
    w.write_all(&data).unwrap();
    assert_eq!(w.commit_as(&digest).unwrap(), data.len() as u64);
    assert!(ingest_is_empty(&store));
    // Present with another size: refused.
    let mut w = store.blob_writer().unwrap();
    w.write_all(b"short").unwrap();
    assert!(w.commit_as(&digest).is_err());
    assert!(ingest_is_empty(&store));

    // Dropped without a commit: nothing stays.
    let mut w = store.blob_writer().unwrap();
    w.write_all(b"abandoned").unwrap();
    drop(w);
    assert!(ingest_is_empty(&store));
}
