//! Image records, tags, resolution and tag races.

use kiln_oci::{Digest, Reference};
use kiln_store::{Error, ImageId, ImageRecord, Store};

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    (dir, store)
}

fn record(n: u8) -> ImageRecord {
    ImageRecord::new(Digest::sha256(&[b'm', n]), Digest::sha256(&[b'c', n]))
}

fn tags(r: &ImageRecord) -> Vec<String> {
    r.tags.iter().map(ToString::to_string).collect()
}

#[test]
fn put_tag_resolve_untag_remove() {
    let (_d, store) = store();
    let mut r = record(1);
    r.tags.push(Reference::parse("busybox").unwrap());
    let stored = store.put_image(r.clone()).unwrap();
    assert_eq!(tags(&stored), ["docker.io/library/busybox:latest"]);
    assert_eq!(stored.id, ImageId::from_config(r.config_digest.clone()));

    let tag = store.tag(&r.id, "example.com/app:v1").unwrap();
    assert_eq!(tag.to_string(), "example.com/app:v1");

    for query in [
        "busybox",
        "busybox:latest",
        "docker.io/library/busybox",
        "example.com/app:v1",
        r.id.digest().as_str(),
        r.id.digest().hex(),
        &r.id.digest().hex()[..12],
        &format!("sha256:{}", &r.id.digest().hex()[..6]),
    ] {
        assert_eq!(store.resolve(query).unwrap().id, r.id, "{query}");
    }
    assert!(matches!(
        store.resolve("nosuchimage").unwrap_err(),
        Error::ImageNotFound { .. }
    ));

    assert_eq!(store.untag("busybox").unwrap(), r.id);
    assert!(matches!(
        store.untag("busybox").unwrap_err(),
        Error::TagNotFound { .. }
    ));
    assert_eq!(tags(&store.image(&r.id).unwrap()), ["example.com/app:v1"]);

    let removed = store.remove_image(&r.id).unwrap();
    assert_eq!(removed.id, r.id);
    assert!(store.images().unwrap().is_empty());
    assert!(matches!(
        store.remove_image(&r.id).unwrap_err(),
        Error::ImageIdNotFound { .. }
    ));
}

#[test]
fn moving_a_tag_leaves_the_old_image_dangling() {
    let (_d, store) = store();
    let a = store.put_image(record(1)).unwrap();
    let b = store.put_image(record(2)).unwrap();
    store.tag(&a.id, "app:1").unwrap();
    store.tag(&b.id, "app:1").unwrap();
    assert!(store.image(&a.id).unwrap().is_dangling());
    assert_eq!(
        tags(&store.image(&b.id).unwrap()),
        ["docker.io/library/app:1"]
    );
    assert_eq!(store.resolve("app:1").unwrap().id, b.id);

    // put_image with a tag also moves it.
    let mut again = record(1);
    again.tags.push(Reference::parse("app:1").unwrap());
    store.put_image(again).unwrap();
    assert!(store.image(&b.id).unwrap().is_dangling());
    assert_eq!(store.resolve("app:1").unwrap().id, a.id);
}

#[test]
fn repo_digests_resolve() {
    let (_d, store) = store();
    let mut r = record(3);
    let manifest = r.manifest_digest.clone();
    r.repo_digests
        .push(Reference::parse(&format!("busybox@{manifest}")).unwrap());
    store.put_image(r.clone()).unwrap();
    assert_eq!(
        store.resolve(&format!("busybox@{manifest}")).unwrap().id,
        r.id
    );
}

#[test]
fn tag_errors() {
    let (_d, store) = store();
    let r = store.put_image(record(1)).unwrap();
    let digest_ref = format!("busybox@{}", r.manifest_digest);
    assert!(matches!(
        store.tag(&r.id, &digest_ref).unwrap_err(),
        Error::TagHasDigest { .. }
    ));
    assert!(matches!(
        store.tag(&r.id, "UPPER").unwrap_err(),
        Error::InvalidReference { .. }
    ));
    let missing = ImageId::from_config(Digest::sha256(b"nope"));
    assert!(matches!(
        store.tag(&missing, "x").unwrap_err(),
        Error::ImageIdNotFound { .. }
    ));
    let mut bad = record(5);
    bad.id = ImageId::from_config(Digest::sha256(b"other"));
    assert!(matches!(
        store.put_image(bad).unwrap_err(),
        Error::InvalidRecord { .. }
    ));
}

#[test]
fn ambiguous_prefix() {
    let (_d, store) = store();
    // Find two records whose ids share a first hex character.
    let mut by_first: std::collections::HashMap<char, Vec<ImageRecord>> = Default::default();
    for n in 0..40 {
        let r = record(n);
        by_first
            .entry(r.id.digest().hex().chars().next().unwrap())
            .or_default()
            .push(r);
    }
    let (c, pair) = by_first.into_iter().find(|(_, v)| v.len() >= 2).unwrap();
    store.put_image(pair[0].clone()).unwrap();
    store.put_image(pair[1].clone()).unwrap();
    let err = store.resolve(&c.to_string()).unwrap_err();
    assert!(
        matches!(&err, Error::AmbiguousId { candidates, .. } if candidates.len() == 2),
        "{err:?}"
    );
    // A full id is never ambiguous.
    assert_eq!(
        store.resolve(pair[0].id.digest().as_str()).unwrap().id,
        pair[0].id
    );
}

#[test]
fn index_survives_reopen_and_refuses_future_versions() {
    let (d, store) = store();
    let r = store.put_image(record(1)).unwrap();
    store.tag(&r.id, "a").unwrap();
    let reopened = Store::open(d.path()).unwrap();
    assert_eq!(reopened.images().unwrap(), store.images().unwrap());

    let path = d.path().join("images.json");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replacen("\"version\": 1", "\"version\": 9", 1)).unwrap();
    assert!(matches!(
        store.images().unwrap_err(),
        Error::IndexVersion { found: 9, .. }
    ));
}

#[test]
fn concurrent_tagging_from_threads_loses_nothing() {
    let (d, store) = store();
    let images: Vec<ImageRecord> = (0..4)
        .map(|n| store.put_image(record(n)).unwrap())
        .collect();
    std::thread::scope(|s| {
        for t in 0..8 {
            let root = d.path().to_path_buf();
            let images = &images;
            s.spawn(move || {
                // A separate handle per thread, as separate processes would have.
                let store = Store::open(root).unwrap();
                for i in 0..15 {
                    let image = &images[(t + i) % images.len()];
                    store.tag(&image.id, &format!("race/t{t}:{i}")).unwrap();
                }
            });
        }
    });
    let all: usize = store.images().unwrap().iter().map(|r| r.tags.len()).sum();
    assert_eq!(all, 8 * 15);
}

const CHILD_ENV: &str = "KILN_CACHE_TAG_RACE_ROOT";

/// Run by `concurrent_tagging_from_processes` in child processes; does
/// nothing when run normally.
#[test]
fn tag_race_child() {
    let Ok(root) = std::env::var(CHILD_ENV) else {
        return;
    };
    let worker = std::env::var("KILN_CACHE_TAG_RACE_WORKER").unwrap();
    let store = Store::open(root).unwrap();
    let id = store.images().unwrap()[0].id.clone();
    for i in 0..25 {
        store.tag(&id, &format!("proc/w{worker}:{i}")).unwrap();
    }
}

#[test]
fn concurrent_tagging_from_processes_loses_nothing() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let (d, store) = store();
    let image = store.put_image(record(7)).unwrap();
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..4)
        .map(|w| {
            std::process::Command::new(&exe)
                .args(["--exact", "tag_race_child", "--test-threads=1"])
                .env(CHILD_ENV, d.path())
                .env("KILN_CACHE_TAG_RACE_WORKER", w.to_string())
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut child in children {
        assert!(child.wait().unwrap().success());
    }
    assert_eq!(store.image(&image.id).unwrap().tags.len(), 4 * 25);
}
