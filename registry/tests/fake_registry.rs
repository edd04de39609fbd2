//! The client against a fake registry served by axum in the test: the
//! Bearer token flow, and faults a real registry does not produce (bad
//! bytes, huge manifests, slow or dropped connections, 5xx/429).

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use common::*;
use kiln_registry::{Client, ClientConfig, Credential, Error, PullOptions};

#[derive(Default)]
struct Fake {
    manifests: HashMap<String, Vec<u8>>,
    blobs: HashMap<String, Vec<u8>>,
    /// Require `Bearer` tokens issued by `/token` to this user/password.
    token_auth: Option<(String, String)>,
    /// Delay before a blob's body.
    slow_blob: Option<Duration>,
    /// Cut the connection in the middle of the first GET of each blob.
    drop_first_blob: bool,
    /// Status codes to answer the first manifest requests with.
    manifest_failures: std::sync::Mutex<Vec<(u16, Option<&'static str>)>>,
    token_requests: AtomicUsize,
    blob_requests: AtomicUsize,
    manifest_requests: AtomicUsize,
}

const MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

impl Fake {
    fn with_image(image: &TestImage) -> Fake {
        let mut f = Fake::default();
        f.manifests.insert("v1".into(), image.manifest.clone());
        f.manifests
            .insert(image.manifest_digest.to_string(), image.manifest.clone());
        f.blobs
            .insert(image.config_digest.to_string(), image.config.clone());
        for (d, b) in &image.layers {
            f.blobs.insert(d.to_string(), b.clone());
        }
        f
    }
}

async fn handle(State(fake): State<Arc<Fake>>, req: Request) -> Response {
    let path = req.uri().path().to_owned();
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    if path == "/token" {
        fake.token_requests.fetch_add(1, Ordering::SeqCst);
        let (user, pass) = fake.token_auth.clone().unwrap_or_default();
        let want = format!(
            "Basic {}",
            base64_encode(format!("{user}:{pass}").as_bytes())
        );
        let ok = req
            .headers()
            .get(header::AUTHORIZATION)
            .is_some_and(|v| v.to_str().ok() == Some(want.as_str()));
        if !ok {
            return (
                StatusCode::UNAUTHORIZED,
                r#"{"details":"incorrect username or password"}"#,
            )
                .into_response();
        }
        return axum::Json(serde_json::json!({"token": "tok", "expires_in": 300})).into_response();
    }
    if fake.token_auth.is_some() {
        let authorised = req
            .headers()
            .get(header::AUTHORIZATION)
            .is_some_and(|v| v.as_bytes() == b"Bearer tok");
        if !authorised {
            let mut resp = (
                StatusCode::UNAUTHORIZED,
                r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
            )
                .into_response();
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_str(&format!(
                    r#"Bearer realm="http://{host}/token",service="fake",scope="repository:test/app:pull""#
                ))
                .unwrap(),
            );
            return resp;
        }
    }
    if path == "/v2/" {
        return StatusCode::OK.into_response();
    }
    if let Some((_, reference)) = path.split_once("/manifests/") {
        fake.manifest_requests.fetch_add(1, Ordering::SeqCst);
        let failure = {
            let mut failures = fake.manifest_failures.lock().unwrap();
            (!failures.is_empty()).then(|| failures.remove(0))
        };
        if let Some((status, retry_after)) = failure {
            let mut resp = StatusCode::from_u16(status).unwrap().into_response();
            if let Some(r) = retry_after {
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static(r));
            }
            return resp;
        }
        return match fake.manifests.get(reference) {
            Some(bytes) => ([(header::CONTENT_TYPE, MEDIA_TYPE)], bytes.clone()).into_response(),
            None => (
                StatusCode::NOT_FOUND,
                r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#,
            )
                .into_response(),
        };
    }
    if let Some((_, digest)) = path.split_once("/blobs/") {
        let n = fake.blob_requests.fetch_add(1, Ordering::SeqCst);
        let Some(bytes) = fake.blobs.get(digest).cloned() else {
            return StatusCode::NOT_FOUND.into_response();
        };
        let len = bytes.len();
        let body = if let Some(delay) = fake.slow_blob {
            let stream = futures::stream::once(async move {
                tokio::time::sleep(delay).await;
                Ok::<_, std::io::Error>(Bytes::from(bytes))
            });
            Body::from_stream(stream)
        } else if fake.drop_first_blob && n == 0 {
            let half = Bytes::from(bytes[..len / 2].to_vec());
            let stream = futures::stream::iter(vec![
                Ok(half),
                Err(std::io::Error::other("connection dropped by the test")),
            ]);
            Body::from_stream(stream)
        } else {
            Body::from(bytes)
        };
        return Response::builder()
            .header(header::CONTENT_LENGTH, len)
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .body(body)
            .unwrap();
    }
    StatusCode::NOT_FOUND.into_response()
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Serves `fake` on a free loopback port; returns the host.
async fn serve(fake: Arc<Fake>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(handle).with_state(fake);
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    format!("127.0.0.1:{}", addr.port())
}

fn config(retries: u32) -> ClientConfig {
    ClientConfig {
        max_retries: retries,
        retry_base_delay: Duration::from_millis(10),
        ..Default::default()
    }
}

fn image() -> TestImage {
    make_image("fake", &[("a", b"alpha"), ("b", &vec![9u8; 200_000])])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_token_flow_with_cached_tokens() {
    let image = image();
    let mut fake = Fake::with_image(&image);
    fake.token_auth = Some(("bob".into(), "pw".into()));
    let fake = Arc::new(fake);
    let host = serve(fake.clone()).await;
    let tag = format!("{host}/test/app:v1");

    // Without credentials the token server refuses.
    let (_d, store) = temp_store();
    let anonymous = Client::new(config(0), None).unwrap();
    let err = pull(&anonymous, &store, &tag).await.unwrap_err();
    assert!(matches!(err, Error::Unauthorized { .. }), "{err:?}");
    assert!(store.images().unwrap().is_empty());

    let client = Client::new(config(0), None).unwrap();
    client.set_credential(&host, Some(Credential::new("bob", "pw")));
    let before = fake.token_requests.load(Ordering::SeqCst);
    let r = pull(&client, &store, &tag).await.unwrap();
    assert_eq!(r.manifest_digest, image.manifest_digest);
    // One token for the whole pull (manifest, config, two layers).
    assert_eq!(fake.token_requests.load(Ordering::SeqCst) - before, 1);
    for (d, _) in &image.layers {
        assert!(store.has_blob(d).unwrap());
    }
    // The cached token serves the next pull too.
    pull(&client, &store, &tag).await.unwrap();
    assert_eq!(fake.token_requests.load(Ordering::SeqCst) - before, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_not_matching_its_digest_is_rejected() {
    let image = image();
    let mut fake = Fake::with_image(&image);
    let (bad, bytes) = &image.layers[1];
    let mut wrong = bytes.clone();
    wrong[1000] ^= 1;
    fake.blobs.insert(bad.to_string(), wrong);
    let host = serve(Arc::new(fake)).await;
    let (_d, store) = temp_store();
    let client = Client::new(config(0), None).unwrap();
    let err = pull(&client, &store, &format!("{host}/test/app:v1"))
        .await
        .unwrap_err();
    match &err {
        Error::BlobDigestMismatch { digest, .. } => assert_eq!(digest, bad),
        other => panic!("expected BlobDigestMismatch, got {other:?}"),
    }
    assert!(!store.has_blob(bad).unwrap());
    assert!(!store.has_blob(&image.manifest_digest).unwrap());
    assert!(store.images().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_manifest_is_rejected() {
    let mut fake = Fake::default();
    let mut huge = b"{\"schemaVersion\":2,\"x\":\"".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 5 << 20));
    huge.extend(b"\"}");
    fake.manifests.insert("v1".into(), huge);
    let host = serve(Arc::new(fake)).await;
    let (_d, store) = temp_store();
    let client = Client::new(config(0), None).unwrap();
    let err = pull(&client, &store, &format!("{host}/test/app:v1"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::ManifestTooLarge { limit, .. } if limit == 4 << 20),
        "{err:?}"
    );
    assert!(store.list_blobs().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_registry_times_out() {
    let image = image();
    let mut fake = Fake::with_image(&image);
    fake.slow_blob = Some(Duration::from_secs(10));
    let host = serve(Arc::new(fake)).await;
    let (_d, store) = temp_store();
    let client = Client::new(
        ClientConfig {
            read_timeout: Duration::from_millis(300),
            ..config(0)
        },
        None,
    )
    .unwrap();
    let start = Instant::now();
    let err = pull(&client, &store, &format!("{host}/test/app:v1"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    assert!(start.elapsed() < Duration::from_secs(5));
    assert!(store.list_blobs().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connection_leaves_nothing_and_a_retry_completes() {
    let image = make_image("drop", &[("only", &vec![5u8; 100_000])]);
    // Without retries: an error, and no visible blob.
    let mut fake = Fake::with_image(&image);
    fake.drop_first_blob = true;
    // Make the layer the first blob fetched: the config is already there.
    let host = serve(Arc::new(fake)).await;
    let tag = reference(&format!("{host}/test/app:v1"));
    let (_d, store) = temp_store();
    store.write_blob_bytes(&image.config).unwrap();
    let client = Client::new(config(0), None).unwrap();
    let err = client
        .pull(&store, &tag, &PullOptions::default(), &|_| {})
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Network { .. }), "{err:?}");
    assert!(!store.has_blob(&image.layers[0].0).unwrap());
    assert!(store.images().unwrap().is_empty());
    // Pulling again completes.
    let r = client
        .pull(&store, &tag, &PullOptions::default(), &|_| {})
        .await
        .unwrap();
    assert!(r.updated);
    assert!(store.has_blob(&image.layers[0].0).unwrap());

    // With retries, one call recovers by itself.
    let mut fake = Fake::with_image(&image);
    fake.drop_first_blob = true;
    let host = serve(Arc::new(fake)).await;
    let (_d2, store) = temp_store();
    store.write_blob_bytes(&image.config).unwrap();
    let client = Client::new(config(2), None).unwrap();
    pull(&client, &store, &format!("{host}/test/app:v1"))
        .await
        .unwrap();
    assert_eq!(
        store.read_blob_bytes(&image.layers[0].0, 1 << 20).unwrap(),
        image.layers[0].1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_statuses_are_retried() {
    let image = image();
    let fake = Fake::with_image(&image);
    *fake.manifest_failures.lock().unwrap() = vec![(503, None), (429, Some("0"))];
    let fake = Arc::new(fake);
    let host = serve(fake.clone()).await;
    let (_d, store) = temp_store();
    let client = Client::new(config(3), None).unwrap();
    pull(&client, &store, &format!("{host}/test/app:v1"))
        .await
        .unwrap();
    assert_eq!(fake.manifest_requests.load(Ordering::SeqCst), 3);

    // Persisting 429: a typed error.
    let fake = Fake::with_image(&image);
    *fake.manifest_failures.lock().unwrap() = vec![(429, Some("0")); 5];
    let host = serve(Arc::new(fake)).await;
    let client = Client::new(config(1), None).unwrap();
    let err = pull(&client, &store, &format!("{host}/test/app:v1"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::TooManyRequests { .. }), "{err:?}");

    // Unknown tags are ManifestUnknown, not retried.
    let err = pull(&client, &store, &format!("{host}/test/app:missing")).await;
    assert!(err.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirrors_are_tried_before_upstream() {
    // A mirror holding library/busybox:v1; the upstream (Docker Hub) is
    // never contacted because the mirror answers.
    let image = image();
    let fake = Arc::new(Fake::with_image(&image));
    let host = serve(fake.clone()).await;
    let client = Client::new(
        ClientConfig {
            mirrors: vec![
                format!("http://127.0.0.1:{}", free_port()),
                format!("http://{host}"),
            ],
            ..config(0)
        },
        None,
    )
    .unwrap();
    let (_d, store) = temp_store();
    let r = pull(&client, &store, "busybox:v1").await.unwrap();
    assert_eq!(r.manifest_digest, image.manifest_digest);
    assert_eq!(r.image.tags[0].to_string(), "docker.io/library/busybox:v1");
}

/// `image` with its config replaced by `config` (and its manifest
/// rewritten to point at it).
fn with_config(image: &TestImage, config: serde_json::Value) -> TestImage {
    let config = serde_json::to_vec(&config).unwrap();
    let config_digest = kiln_oci::Digest::sha256(&config);
    let mut manifest: serde_json::Value = serde_json::from_slice(&image.manifest).unwrap();
    manifest["config"]["digest"] = config_digest.to_string().into();
    manifest["config"]["size"] = config.len().into();
    let manifest = serde_json::to_vec(&manifest).unwrap();
    TestImage {
        manifest_digest: kiln_oci::Digest::sha256(&manifest),
        manifest,
        config,
        config_digest,
        layers: image.layers.clone(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configs_are_read_with_dockers_tolerance() {
    let base = make_image("nulls", &[("a", b"alpha")]);
    let diff_ids: Vec<String> = base.layers.iter().map(|(d, _)| d.to_string()).collect();
    // What `docker import` writes: null lists and maps, unknown members.
    let nulls = with_config(
        &base,
        serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {"Hostname": "", "Env": null, "Cmd": null, "Volumes": null,
                       "Entrypoint": null, "OnBuild": null, "Labels": null},
            "container_config": {"Env": null},
            "created": null,
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }),
    );
    let host = serve(Arc::new(Fake::with_image(&nulls))).await;
    let (_d, store) = temp_store();
    let client = Client::new(config(0), None).unwrap();
    let r = pull(&client, &store, &format!("{host}/test/nulls:v1"))
        .await
        .unwrap();
    let docs = store.image_docs(&r.image).unwrap();
    assert!(docs.config.config.env.is_empty());

    // A value of the wrong type fails the pull, as with `docker pull`.
    let mut bad: serde_json::Value = serde_json::from_slice(&nulls.config).unwrap();
    bad["config"]["Env"] = "PATH=/bin".into();
    let bad = with_config(&base, bad);
    let host = serve(Arc::new(Fake::with_image(&bad))).await;
    let err = pull(&client, &store, &format!("{host}/test/bad:v1"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Image(_)), "{err:?}");
    assert!(store.resolve(&format!("{host}/test/bad:v1")).is_err());

    // So does a config naming other layers than the manifest.
    let mut other: serde_json::Value = serde_json::from_slice(&nulls.config).unwrap();
    other["rootfs"]["diff_ids"] = serde_json::json!([]);
    let other = with_config(&base, other);
    let host = serve(Arc::new(Fake::with_image(&other))).await;
    let err = pull(&client, &store, &format!("{host}/test/other:v1"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidManifest { .. }), "{err:?}");
    assert_eq!(store.images().unwrap().len(), 1);
}
