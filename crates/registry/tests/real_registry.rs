//! Push and pull against a real `docker-registry` (distribution) on
//! 127.0.0.1. Skipped, with a message, when it is not installed.

mod common;

use std::sync::Mutex;

use common::*;
use kiln_registry::{
    Client, ClientConfig, Credential, CredentialStore, Error, PullEvent, PullOptions, PullProgress,
    PushEvent, PushProgress,
};

fn client() -> Client {
    Client::new(ClientConfig::default(), None).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(kiln_registry), ignore = "needs docker-registry")]
async fn push_pull_round_trip() {
    let Some(registry) = start_registry(None) else {
        return;
    };
    let host = &registry.host;
    let image = make_image(
        "round-trip",
        &[("a.txt", b"hello"), ("b.txt", &vec![7u8; 3 << 20])],
    );
    let (_d1, source) = temp_store();
    let tag = format!("{host}/test/app:v1");
    image.store(&source, &tag);
    let client = client();

    // Push.
    let events = Mutex::new(Vec::new());
    let pushed = client
        .push(&source, &reference(&tag), &|e| {
            events.lock().unwrap().push(e)
        })
        .await
        .unwrap();
    assert_eq!(pushed.digest, image.manifest_digest);
    assert_eq!(
        pushed.to_string(),
        format!(
            "v1: digest: {} size: {}",
            image.manifest_digest,
            image.manifest.len()
        )
    );
    let events = events.into_inner().unwrap();
    for (d, _) in &image.layers {
        assert!(events.contains(&PushEvent {
            layer: d.clone(),
            progress: PushProgress::Pushed
        }));
        assert!(events.iter().any(|e| &e.layer == d
            && matches!(e.progress, PushProgress::Pushing { current, total } if current == total)));
    }
    // The push recorded the repo digest.
    let record = source.images().unwrap().pop().unwrap();
    assert!(
        record
            .repo_digests
            .iter()
            .any(|r| r.digest() == Some(&image.manifest_digest))
    );

    // Pull into a fresh store.
    let (_d2, dest) = temp_store();
    let events = Mutex::new(Vec::new());
    let pulled = client
        .pull(&dest, &reference(&tag), &PullOptions::default(), &|e| {
            events.lock().unwrap().push(e)
        })
        .await
        .unwrap();
    assert!(pulled.updated);
    assert_eq!(pulled.digest, image.manifest_digest);
    assert_eq!(pulled.manifest_digest, image.manifest_digest);
    assert!(
        pulled
            .status_line()
            .starts_with("Status: Downloaded newer image for")
    );
    assert_eq!(
        dest.read_blob_bytes(&image.manifest_digest, 1 << 20)
            .unwrap(),
        image.manifest
    );
    assert_eq!(
        dest.read_blob_bytes(&image.config_digest, 1 << 20).unwrap(),
        image.config
    );
    for (d, b) in &image.layers {
        assert_eq!(&dest.read_blob_bytes(d, 8 << 20).unwrap(), b);
    }
    let events = events.into_inner().unwrap();
    for (d, _) in &image.layers {
        for p in [
            PullProgress::Waiting,
            PullProgress::Verifying,
            PullProgress::DownloadComplete,
            PullProgress::PullComplete,
        ] {
            assert!(
                events.contains(&PullEvent {
                    layer: d.clone(),
                    progress: p.clone()
                }),
                "{p:?} missing for {d}"
            );
        }
    }
    let records = dest.images().unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].tags, vec![reference(&tag)]);
    assert_eq!(
        records[0].repo_digests[0].to_string(),
        format!("{host}/test/app@{}", image.manifest_digest)
    );

    // Re-pull: up to date, nothing downloaded.
    let events = Mutex::new(Vec::new());
    let again = client
        .pull(&dest, &reference(&tag), &PullOptions::default(), &|e| {
            events.lock().unwrap().push(e)
        })
        .await
        .unwrap();
    assert!(!again.updated);
    assert!(
        again
            .status_line()
            .starts_with("Status: Image is up to date for")
    );
    assert!(
        events
            .into_inner()
            .unwrap()
            .iter()
            .all(|e| e.progress == PullProgress::AlreadyExists)
    );

    // Pull by digest.
    let by_digest = format!("{host}/test/app@{}", image.manifest_digest);
    let (_d3, dest3) = temp_store();
    let r = pull(&client, &dest3, &by_digest).await.unwrap();
    assert_eq!(r.digest, image.manifest_digest);
    assert!(dest3.images().unwrap()[0].tags.is_empty());

    // Push again: every layer exists.
    let events = Mutex::new(Vec::new());
    client
        .push(&source, &reference(&tag), &|e| {
            events.lock().unwrap().push(e)
        })
        .await
        .unwrap();
    let events = events.into_inner().unwrap();
    for (d, _) in &image.layers {
        assert!(events.contains(&PushEvent {
            layer: d.clone(),
            progress: PushProgress::LayerAlreadyExists
        }));
    }

    // Push under another repository of the same registry: mounted.
    let other = format!("{host}/other/app:v2");
    source.tag(&record.id, &other).unwrap();
    let fresh = Client::new(ClientConfig::default(), None).unwrap(); // no in-memory history: the mount source comes from the record
    let events = Mutex::new(Vec::new());
    fresh
        .push(&source, &reference(&other), &|e| {
            events.lock().unwrap().push(e)
        })
        .await
        .unwrap();
    let events = events.into_inner().unwrap();
    for (d, _) in &image.layers {
        assert!(
            events.contains(&PushEvent {
                layer: d.clone(),
                progress: PushProgress::Mounted {
                    from: "test/app".into()
                }
            }),
            "{events:?}"
        );
    }

    // Tags and catalog.
    assert_eq!(
        client
            .list_tags(&reference(&format!("{host}/test/app")))
            .await
            .unwrap(),
        vec!["v1".to_owned()]
    );
    let mut all = client.catalog(host, None).await.unwrap();
    all.sort();
    assert_eq!(all, vec!["other/app".to_owned(), "test/app".to_owned()]);
    assert_eq!(
        client.catalog(host, Some("OTHER")).await.unwrap(),
        vec!["other/app".to_owned()]
    );

    // Unknown tag.
    let err = pull(&client, &dest, &format!("{host}/test/app:nope"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::ManifestUnknown { ref reference, .. } if reference == "nope"),
        "{err:?}"
    );

    // An independent client accepts what kiln pushed.
    if have("skopeo") {
        let out = std::process::Command::new("skopeo")
            .args(["inspect", "--tls-verify=false", "--raw"])
            .arg(format!("docker://{tag}"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.stdout, image.manifest);
        let out = std::process::Command::new("skopeo")
            .args(["inspect", "--tls-verify=false"])
            .arg(format!("docker://{tag}"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["Digest"], image.manifest_digest.to_string());
        assert_eq!(v["Layers"].as_array().unwrap().len(), 2);
    } else {
        eprintln!("skopeo not installed: skipping the independent check");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(kiln_registry), ignore = "needs docker-registry")]
async fn chunked_upload() {
    let Some(registry) = start_registry(None) else {
        return;
    };
    let host = &registry.host;
    let image = make_image("chunked", &[("big", &vec![3u8; 300_000])]);
    let (_d1, source) = temp_store();
    let tag = format!("{host}/chunked/app:latest");
    image.store(&source, &tag);
    let client = Client::new(
        ClientConfig {
            upload_chunk_size: Some(100_000),
            ..Default::default()
        },
        None,
    )
    .unwrap();
    client
        .push(&source, &reference(&tag), &|_| {})
        .await
        .unwrap();
    let (_d2, dest) = temp_store();
    let r = pull(&client, &dest, &tag).await.unwrap();
    assert_eq!(r.manifest_digest, image.manifest_digest);
    assert_eq!(
        dest.read_blob_bytes(&image.layers[0].0, 1 << 20).unwrap(),
        image.layers[0].1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(kiln_registry), ignore = "needs docker-registry")]
async fn basic_auth_with_htpasswd() {
    let Some(registry) = start_registry(Some(("alice", "s3cret"))) else {
        return;
    };
    let host = &registry.host;
    let image = make_image("auth", &[("f", b"x")]);
    let (_d1, source) = temp_store();
    let tag = format!("{host}/private/app:1");
    image.store(&source, &tag);

    // Anonymous: refused with a login hint.
    let anonymous = client();
    let err = anonymous
        .push(&source, &reference(&tag), &|_| {})
        .await
        .unwrap_err();
    match &err {
        Error::Unauthorized { registry, hint, .. } => {
            assert_eq!(registry, host);
            assert_eq!(*hint, "kiln login");
        }
        other => panic!("expected Unauthorized, got {other:?}"),
    }
    assert_eq!(err.hint().unwrap(), format!("kiln login {host}"));

    // Wrong password: login fails, nothing stored.
    let config_dir = tempfile::tempdir().unwrap();
    let creds = CredentialStore::at(config_dir.path());
    let client = Client::new(ClientConfig::default(), Some(creds.clone())).unwrap();
    let err = client
        .login(host, &Credential::new("alice", "wrong"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unauthorized { .. }), "{err:?}");
    assert_eq!(creds.get(host).unwrap(), None);

    // Right password: stored, then used by a new client.
    client
        .login(host, &Credential::new("alice", "s3cret"))
        .await
        .unwrap();
    assert_eq!(
        creds.get(host).unwrap(),
        Some(Credential::new("alice", "s3cret"))
    );
    let client = Client::new(ClientConfig::default(), Some(creds.clone())).unwrap();
    client
        .push(&source, &reference(&tag), &|_| {})
        .await
        .unwrap();
    let (_d2, dest) = temp_store();
    pull(&client, &dest, &tag).await.unwrap();
    assert!(dest.has_blob(&image.layers[0].0).unwrap());

    // Logout erases.
    assert!(client.logout(host).await.unwrap());
    assert_eq!(creds.get(host).unwrap(), None);
    let after = Client::new(ClientConfig::default(), Some(creds)).unwrap();
    let (_d3, dest) = temp_store();
    let err = pull(&after, &dest, &tag).await.unwrap_err();
    assert!(matches!(err, Error::Unauthorized { .. }), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_refused_is_typed() {
    let port = free_port();
    let client = Client::new(
        ClientConfig {
            max_retries: 1,
            retry_base_delay: std::time::Duration::from_millis(10),
            ..Default::default()
        },
        None,
    )
    .unwrap();
    let (_d, store) = temp_store();
    let err = pull(&client, &store, &format!("127.0.0.1:{port}/x:1"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::ConnectionRefused { .. }), "{err:?}");
}
