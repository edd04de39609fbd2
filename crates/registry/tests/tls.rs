//! Schemes and certificates with a real `docker-registry`: Docker's
//! HTTPS-then-HTTP fallback for insecure registries, certificate
//! verification for the others, and CAs from a `certs.d` directory.
//! Host names are pinned to 127.0.0.1 with [`ClientConfig::resolve`], so
//! that a registry can be a non-loopback name. Skipped, with a message,
//! when `docker-registry` is not installed.

mod common;

use std::path::Path;

use common::servers::tls_files;
use common::*;
use kiln_registry::{Client, ClientConfig, Error};

fn client(
    registry: &RealRegistry,
    names: &[&str],
    insecure: &[&str],
    certs: Option<&Path>,
) -> Client {
    Client::new(
        ClientConfig {
            resolve: names
                .iter()
                .map(|n| ((*n).to_owned(), registry.addr))
                .collect(),
            insecure_registries: insecure.iter().map(|h| (*h).to_owned()).collect(),
            certs_dirs: certs.map(Path::to_path_buf).into_iter().collect(),
            max_retries: 0,
            ..Default::default()
        },
        None,
    )
    .unwrap()
}

async fn round_trip(client: &Client, host: &str, image: &TestImage, source: &kiln_store::Store) {
    let tag = format!("{host}/tls/app:1");
    let record = source.images().unwrap().pop().unwrap();
    source.tag(&record.id, &tag).unwrap();
    let pushed = client
        .push(source, &reference(&tag), &|_| {})
        .await
        .unwrap();
    assert_eq!(pushed.digest, image.manifest_digest);
    let (_d, dest) = temp_store();
    let pulled = pull(client, &dest, &tag).await.unwrap();
    assert_eq!(pulled.manifest_digest, image.manifest_digest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(kiln_registry), ignore = "needs docker-registry")]
async fn plain_http_registry() {
    // 127.0.0.2: loopback, but not the address every other test uses.
    let Some(registry) = start_registry_with(RegistryOptions {
        ip: Some("127.0.0.2"),
        ..Default::default()
    }) else {
        return;
    };
    let port = registry.addr.port();
    let image = make_image("plain", &[("f", b"plain http")]);
    let (_d, source) = temp_store();
    image.store(&source, "seed/app:1");

    // Loopback: insecure by default; HTTPS fails, HTTP works.
    let c = client(&registry, &[], &[], None);
    round_trip(&c, &registry.host, &image, &source).await;

    // A non-loopback name configured insecure: the same fallback.
    let insecure = format!("insecure.kiln.test:{port}");
    let c = client(&registry, &["insecure.kiln.test"], &[&insecure], None);
    round_trip(&c, &insecure, &image, &source).await;

    // Not configured insecure: HTTPS only, and a hint.
    let secure = format!("secure.kiln.test:{port}");
    let c = client(&registry, &["secure.kiln.test"], &[], None);
    let err = c.ping(&secure).await.unwrap_err();
    assert!(matches!(err, Error::Tls { .. }), "{err:?}");
    assert!(
        err.hint().unwrap().contains("insecure-registries"),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(kiln_registry), ignore = "needs docker-registry")]
async fn https_registry_with_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = tls_files(dir.path(), &["registry.kiln.test", "127.0.0.1"]);
    let Some(registry) = start_registry_with(RegistryOptions {
        tls: Some((cert, key)),
        dir: Some(dir),
        ..Default::default()
    }) else {
        return;
    };
    let port = registry.addr.port();
    let image = make_image("https", &[("f", b"over TLS")]);
    let (_d, source) = temp_store();
    image.store(&source, "seed/app:1");
    let name = format!("registry.kiln.test:{port}");

    // Loopback: insecure, so HTTPS without verification is used.
    let c = client(&registry, &[], &[], None);
    round_trip(&c, &registry.host, &image, &source).await;

    // A secure name: the private CA is unknown.
    let c = client(&registry, &["registry.kiln.test"], &[], None);
    let err = c.ping(&name).await.unwrap_err();
    assert!(matches!(err, Error::Tls { .. }), "{err:?}");
    assert!(
        err.hint()
            .unwrap()
            .contains(&format!("certs.d/{name}/ca.crt"))
    );

    // Its CA in certs.d/HOST:PORT/ca.crt: verified and trusted.
    let certs = tempfile::tempdir().unwrap();
    std::fs::create_dir(certs.path().join(&name)).unwrap();
    std::fs::copy(&ca, certs.path().join(&name).join("ca.crt")).unwrap();
    let c = client(&registry, &["registry.kiln.test"], &[], Some(certs.path()));
    round_trip(&c, &name, &image, &source).await;
    // The CA of another host's directory is not trusted for this one.
    let other = tempfile::tempdir().unwrap();
    std::fs::create_dir(other.path().join("elsewhere:443")).unwrap();
    std::fs::copy(&ca, other.path().join("elsewhere:443/ca.crt")).unwrap();
    let c = client(&registry, &["registry.kiln.test"], &[], Some(other.path()));
    assert!(matches!(c.ping(&name).await, Err(Error::Tls { .. })));

    // Configured insecure: HTTPS without verification, no CA needed.
    let c = client(&registry, &["registry.kiln.test"], &[&name], None);
    round_trip(&c, &name, &image, &source).await;
}
