//! Faults with a real `docker-registry`: the process is SIGKILLed in the
//! middle of a blob upload and of a blob download. Transfers go through a
//! throttling proxy so that the kill lands while bytes are moving. The
//! operation fails with a typed error, the store holds nothing partial,
//! and after a restart on the same storage the same call succeeds.
//! Skipped, with a message, when `docker-registry` is not installed.

mod common;

use std::time::{Duration, Instant};

use common::servers::ThrottleProxy;
use common::*;
use kiln_registry::{Client, ClientConfig, Error, PullOptions};

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn files_in(dir: &std::path::Path) -> Vec<(std::path::PathBuf, u64)> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if let Ok(m) = e.metadata() {
                out.push((e.path(), m.len()));
            }
        }
    }
    out
}

fn assert_transfer_error(err: &Error, host: &str) {
    assert!(
        matches!(
            err,
            Error::Network { .. } | Error::ConnectionRefused { .. } | Error::Status { .. }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains(host), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(kiln_registry), ignore = "needs docker-registry")]
async fn registry_killed_mid_push_and_mid_pull() {
    let Some(mut registry) = start_registry(None) else {
        return;
    };
    const BIG: usize = 32 << 20;
    const RATE: u64 = 4 << 20;
    let proxy = ThrottleProxy::start(registry.addr, 0);
    let host = format!("127.0.0.1:{}", proxy.port);
    let image = make_image("faults", &[("small", b"small"), ("big", &noise(BIG))]);
    let big = image.layers[1].0.clone();
    let (_d1, source) = temp_store();
    let tag = format!("{host}/faults/app:1");
    image.store(&source, &tag);
    let client = Client::new(
        ClientConfig {
            max_retries: 1,
            retry_base_delay: Duration::from_millis(20),
            ..Default::default()
        },
        None,
    )
    .unwrap();

    // Push, killed while the big blob is being uploaded.
    proxy.set_rate(RATE);
    let target = reference(&tag);
    let options = PullOptions::default();
    let (result, ()) = futures::join!(client.push(&source, &target, &|_| {}), async {
        wait_for("a partial upload in the registry", || {
            registry.upload_files().iter().any(|(_, len)| *len > 0)
        })
        .await;
        registry.kill();
    });
    let err = result.unwrap_err();
    assert_transfer_error(&err, &host);
    // The local image is untouched.
    let report = source.check(false).unwrap();
    assert!(report.is_clean(), "{:?}", report.issues);
    assert_eq!(
        source.read_blob_bytes(&big, BIG as u64 + 4096).unwrap(),
        image.layers[1].1
    );

    // Restarted on the same storage: the push completes.
    registry.restart();
    proxy.set_rate(0);
    let pushed = client
        .push(&source, &reference(&tag), &|_| {})
        .await
        .unwrap();
    assert_eq!(pushed.digest, image.manifest_digest);

    // Pull into a fresh store, killed while the big blob is downloading.
    let (_d2, dest) = temp_store();
    proxy.set_rate(RATE);
    let ingest = dest.ingest_dir();
    let (result, ()) = futures::join!(client.pull(&dest, &target, &options, &|_| {}), async {
        wait_for("a partial blob in the store's ingest directory", || {
            files_in(&ingest).iter().any(|(_, len)| *len > 1 << 20)
        })
        .await;
        registry.kill();
    });
    let err = result.unwrap_err();
    assert_transfer_error(&err, &host);
    // Nothing partial is visible: no blob, no image, no temporary file.
    assert!(!dest.has_blob(&big).unwrap());
    assert!(dest.images().unwrap().is_empty());
    assert_eq!(files_in(&ingest), vec![]);
    let report = dest.check(false).unwrap();
    assert!(report.is_clean(), "{:?}", report.issues);

    // Restarted: the same pull completes.
    registry.restart();
    proxy.set_rate(0);
    let pulled = pull(&client, &dest, &tag).await.unwrap();
    assert_eq!(pulled.manifest_digest, image.manifest_digest);
    assert_eq!(
        dest.read_blob_bytes(&big, BIG as u64 + 4096).unwrap(),
        image.layers[1].1
    );
    assert!(dest.check(false).unwrap().is_clean());
}
