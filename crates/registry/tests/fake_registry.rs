//! The client against a fake registry served by axum in the test: the
//! Bearer token flow, and faults a real registry does not produce (bad
//! bytes, huge manifests, slow, dribbling or dropped connections, uploads
//! it stops reading, 5xx/429, configs whose diff ids lie, nested
//! indexes).

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
use futures::StreamExt;
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
    /// Send blob bodies `n` bytes at a time, one piece per interval.
    dribble_blobs: Option<(usize, Duration)>,
    /// The same for manifests.
    dribble_manifests: Option<(usize, Duration)>,
    /// Stop reading an upload's body after this many bytes (and never
    /// answer).
    stall_uploads_after: Option<usize>,
    /// Status codes to answer the first manifest requests with.
    manifest_failures: std::sync::Mutex<Vec<(u16, Option<&'static str>)>>,
    token_requests: AtomicUsize,
    blob_requests: AtomicUsize,
    manifest_requests: AtomicUsize,
    upload_requests: AtomicUsize,
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
            Some(bytes) => {
                let media_type = serde_json::from_slice::<serde_json::Value>(bytes)
                    .ok()
                    .and_then(|v| v["mediaType"].as_str().map(str::to_owned))
                    .unwrap_or_else(|| MEDIA_TYPE.to_owned());
                let body = match fake.dribble_manifests {
                    Some((n, every)) => dribble(bytes.clone(), n, every),
                    None => Body::from(bytes.clone()),
                };
                Response::builder()
                    .header(header::CONTENT_TYPE, media_type)
                    .header(header::CONTENT_LENGTH, bytes.len())
                    .body(body)
                    .unwrap()
            }
            None => (
                StatusCode::NOT_FOUND,
                r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#,
            )
                .into_response(),
        };
    }
    if path.ends_with("/blobs/uploads/") && req.method() == axum::http::Method::POST {
        return Response::builder()
            .status(StatusCode::ACCEPTED)
            .header(header::LOCATION, "/upload/session")
            .body(Body::empty())
            .unwrap();
    }
    if path == "/upload/session" {
        fake.upload_requests.fetch_add(1, Ordering::SeqCst);
        let mut body = req.into_body().into_data_stream();
        let mut read = 0;
        while let Some(Ok(chunk)) = body.next().await {
            read += chunk.len();
            if fake.stall_uploads_after.is_some_and(|n| read > n) {
                tokio::time::sleep(Duration::from_secs(120)).await;
            }
        }
        return StatusCode::CREATED.into_response();
    }
    if let Some((_, digest)) = path.split_once("/blobs/") {
        let n = fake.blob_requests.fetch_add(1, Ordering::SeqCst);
        let Some(bytes) = fake.blobs.get(digest).cloned() else {
            return StatusCode::NOT_FOUND.into_response();
        };
        let len = bytes.len();
        let body = if let Some((n, every)) = fake.dribble_blobs {
            dribble(bytes, n, every)
        } else if let Some(delay) = fake.slow_blob {
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

/// A body sending `bytes` `n` at a time, one piece every `every`.
fn dribble(bytes: Vec<u8>, n: usize, every: Duration) -> Body {
    let pieces: Vec<Bytes> = bytes.chunks(n).map(Bytes::copy_from_slice).collect();
    let stream = futures::stream::iter(pieces).then(move |piece| async move {
        tokio::time::sleep(every).await;
        Ok::<_, std::io::Error>(piece)
    });
    Body::from_stream(stream)
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

/// A client with a minimum rate of 1 KiB/s over 2 s and quick retries.
fn impatient(retries: u32) -> Client {
    Client::new(
        ClientConfig {
            min_rate_bytes_per_sec: 1024,
            min_rate_window: Duration::from_secs(2),
            ..config(retries)
        },
        None,
    )
    .unwrap()
}

fn ingest_files(store: &kiln_store::Store) -> usize {
    std::fs::read_dir(store.ingest_dir())
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Waits for the ingest directory to be empty: the writer of a download
/// cancelled because another failed cleans up on its own thread.
async fn no_ingest_files_soon(store: &kiln_store::Store) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while ingest_files(store) > 0 {
        assert!(
            Instant::now() < deadline,
            "temporary files left in the ingest directory"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dribbling_blob_stalls_and_is_retried_once() {
    let image = make_image("dribble", &[("only", &noise(16 << 10))]);
    let layer = image.layers[0].0.clone();
    let mut fake = Fake::with_image(&image);
    // 20 B/s.
    fake.dribble_blobs = Some((1, Duration::from_millis(50)));
    let fake = Arc::new(fake);
    let host = serve(fake.clone()).await;
    let (_d, store) = temp_store();
    // Only the layer is downloaded: the config is there already.
    store.write_blob_bytes(&image.config).unwrap();
    // Three retries allowed, but a stall is retried once only.
    let client = impatient(3);
    let start = Instant::now();
    let err = pull(&client, &store, &format!("{host}/test/app:v1"))
        .await
        .unwrap_err();
    let elapsed = start.elapsed();
    match &err {
        Error::TransferStalled {
            registry,
            repository,
            what,
            pushing,
            rate,
            window,
            minimum,
            ..
        } => {
            assert_eq!(registry, &host);
            assert_eq!(repository, "test/app");
            assert_eq!(what, &kiln_registry::Transferred::Blob(layer.clone()));
            assert!(!pushing);
            assert!(*rate < 100, "{rate}");
            assert_eq!(*window, Duration::from_secs(2));
            assert_eq!(*minimum, 1024);
        }
        other => panic!("expected TransferStalled, got {other:?}"),
    }
    let message = err.to_string();
    assert!(
        message.starts_with(&format!(
            "pulling {layer} from {host}/test/app: transfer stalled: "
        )) && message.ends_with(" B/s over the last 2s (minimum 1024 B/s)"),
        "{message}"
    );
    assert_eq!(fake.blob_requests.load(Ordering::SeqCst), 2);
    assert!(elapsed < Duration::from_secs(8), "{elapsed:?}");
    assert!(!store.has_blob(&layer).unwrap());
    assert!(store.images().unwrap().is_empty());
    no_ingest_files_soon(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_transfer_above_the_minimum_completes() {
    let image = make_image("slow", &[("only", &noise(12 << 10))]);
    let mut fake = Fake::with_image(&image);
    // About 5 KiB/s, for longer than the 2 s window.
    fake.dribble_blobs = Some((512, Duration::from_millis(100)));
    let host = serve(Arc::new(fake)).await;
    let (_d, store) = temp_store();
    let client = impatient(0);
    let start = Instant::now();
    let r = pull(&client, &store, &format!("{host}/test/app:v1"))
        .await
        .unwrap();
    assert!(start.elapsed() > Duration::from_secs(2));
    assert_eq!(r.manifest_digest, image.manifest_digest);
    assert!(store.has_blob(&image.layers[0].0).unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dribbling_manifest_stalls() {
    let image = image();
    let mut fake = Fake::with_image(&image);
    fake.dribble_manifests = Some((1, Duration::from_millis(50)));
    let host = serve(Arc::new(fake)).await;
    let (_d, store) = temp_store();
    let start = Instant::now();
    let err = pull(&impatient(3), &store, &format!("{host}/test/app:v1"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::TransferStalled { what: kiln_registry::Transferred::Manifest(r), .. } if r == "v1"),
        "{err:?}"
    );
    assert!(
        err.to_string().starts_with(&format!(
            "pulling manifest v1 from {host}/test/app: transfer stalled: "
        )),
        "{err}"
    );
    assert!(start.elapsed() < Duration::from_secs(5));
    assert!(store.list_blobs().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_the_registry_stops_reading_stalls() {
    // Larger than what the socket buffers on both sides swallow.
    let image = make_image("upload", &[("big", &noise(24 << 20))]);
    let big = image.layers[0].0.clone();
    let fake = Arc::new(Fake {
        stall_uploads_after: Some(1 << 20),
        ..Fake::default()
    });
    let host = serve(fake.clone()).await;
    let (_d, source) = temp_store();
    let tag = format!("{host}/test/app:v1");
    image.store(&source, &tag);
    let start = Instant::now();
    let err = impatient(3)
        .push(&source, &reference(&tag), &|_| {})
        .await
        .unwrap_err();
    match &err {
        Error::TransferStalled {
            what,
            pushing,
            rate,
            ..
        } => {
            assert_eq!(what, &kiln_registry::Transferred::Blob(big.clone()));
            assert!(pushing);
            assert!(*rate < 1024, "{rate}");
        }
        other => panic!("expected TransferStalled, got {other:?}"),
    }
    assert!(
        err.to_string().starts_with(&format!(
            "pushing {big} to {host}/test/app: transfer stalled: "
        )),
        "{err}"
    );
    // The config, and the big blob twice (one retry).
    assert_eq!(fake.upload_requests.load(Ordering::SeqCst), 3);
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "{:?}",
        start.elapsed()
    );
}

#[derive(Clone, Copy, Debug)]
enum Packing {
    Plain,
    Gzip,
    Zstd,
}

fn pack(tar: &[u8], packing: Packing) -> (Vec<u8>, &'static str) {
    use std::io::Write;
    match packing {
        Packing::Plain => (tar.to_vec(), "application/vnd.oci.image.layer.v1.tar"),
        Packing::Gzip => {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(tar).unwrap();
            (
                gz.finish().unwrap(),
                "application/vnd.oci.image.layer.v1.tar+gzip",
            )
        }
        Packing::Zstd => (
            zstd::encode_all(tar, 3).unwrap(),
            "application/vnd.oci.image.layer.v1.tar+zstd",
        ),
    }
}

/// An image of `blobs` (bytes, media type) whose config gives `diff_ids`.
fn image_of(seed: &str, blobs: Vec<(Vec<u8>, &str)>, diff_ids: &[kiln_oci::Digest]) -> TestImage {
    let layers: Vec<(kiln_oci::Digest, Vec<u8>)> = blobs
        .iter()
        .map(|(b, _)| (kiln_oci::Digest::sha256(b), b.clone()))
        .collect();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Labels": {"seed": seed}},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap();
    let config_digest = kiln_oci::Digest::sha256(&config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config.len(),
        },
        "layers": blobs.iter().zip(&layers).map(|((b, mt), (d, _))| serde_json::json!({
            "mediaType": mt,
            "digest": d,
            "size": b.len(),
        })).collect::<Vec<_>>(),
    }))
    .unwrap();
    TestImage {
        manifest_digest: kiln_oci::Digest::sha256(&manifest),
        manifest,
        config,
        config_digest,
        layers,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layers_must_uncompress_to_their_diff_ids() {
    let tars = [layer_tar("a", b"alpha"), layer_tar("b", &noise(300_000))];
    let true_ids: Vec<kiln_oci::Digest> =
        tars.iter().map(|t| kiln_oci::Digest::sha256(t)).collect();
    let client = Client::new(config(2), None).unwrap();
    for packing in [Packing::Plain, Packing::Gzip, Packing::Zstd] {
        let blobs = || tars.iter().map(|t| pack(t, packing)).collect::<Vec<_>>();
        let (_d, store) = temp_store();
        let other = make_image("present", &[("x", b"x")]);
        other.store(&store, "present:1");
        let before = store.images().unwrap();

        // The config's second diff id is not what the layer uncompresses to.
        let wrong = kiln_oci::Digest::sha256(b"not the layer");
        let lying = image_of("lying", blobs(), &[true_ids[0].clone(), wrong.clone()]);
        let host = serve(Arc::new(Fake::with_image(&lying))).await;
        for _ in 0..2 {
            // Pulling again fails the same way: the layer was not stored.
            let err = pull(&client, &store, &format!("{host}/test/lying:v1"))
                .await
                .unwrap_err();
            match &err {
                Error::DiffIdMismatch {
                    layer,
                    index,
                    expected,
                    actual,
                    ..
                } => {
                    assert_eq!(layer, &lying.layers[1].0, "{packing:?}");
                    assert_eq!(*index, 1);
                    assert_eq!(expected, &wrong);
                    assert_eq!(actual, &true_ids[1]);
                }
                other => panic!("{packing:?}: expected DiffIdMismatch, got {other:?}"),
            }
            assert!(
                err.to_string().starts_with(
                    "layers from manifest don't match image configuration: layer 1 (sha256:"
                ),
                "{err}"
            );
            assert_eq!(store.images().unwrap(), before);
            assert!(!store.has_blob(&lying.layers[1].0).unwrap());
            assert!(!store.has_blob(&lying.manifest_digest).unwrap());
            no_ingest_files_soon(&store).await;
        }

        // One layer more in the config than in the manifest.
        let extra = image_of(
            "extra",
            blobs(),
            &[true_ids[0].clone(), true_ids[1].clone(), wrong.clone()],
        );
        let host = serve(Arc::new(Fake::with_image(&extra))).await;
        let err = pull(&client, &store, &format!("{host}/test/extra:v1"))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::InvalidManifest { reason, .. }
                if reason.starts_with("layers from manifest don't match image configuration")),
            "{err:?}"
        );
        assert_eq!(store.images().unwrap(), before);

        // The honest image pulls.
        let honest = image_of("honest", blobs(), &true_ids);
        let host = serve(Arc::new(Fake::with_image(&honest))).await;
        let r = pull(&client, &store, &format!("{host}/test/honest:v1"))
            .await
            .unwrap();
        assert_eq!(r.manifest_digest, honest.manifest_digest);
        for (d, _) in &honest.layers {
            assert!(store.has_blob(d).unwrap());
        }
        assert_eq!(store.images().unwrap().len(), 2);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layer_that_does_not_uncompress_is_refused() {
    let mut broken = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3];
    broken.extend(noise(10_000));
    let image = image_of(
        "broken",
        vec![(broken, "application/vnd.oci.image.layer.v1.tar+gzip")],
        &[kiln_oci::Digest::sha256(b"whatever")],
    );
    let host = serve(Arc::new(Fake::with_image(&image))).await;
    let (_d, store) = temp_store();
    let err = pull(
        &Client::new(config(0), None).unwrap(),
        &store,
        &format!("{host}/test/broken:v1"),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, Error::LayerUnreadable { layer, .. } if *layer == image.layers[0].0),
        "{err:?}"
    );
    assert!(store.images().unwrap().is_empty());
    assert!(!store.has_blob(&image.layers[0].0).unwrap());
}

const INDEX_TYPE: &str = "application/vnd.oci.image.index.v1+json";

/// An index with one entry.
fn index_to(digest: &kiln_oci::Digest, size: usize, media_type: &str, platform: bool) -> Vec<u8> {
    let mut entry = serde_json::json!({
        "mediaType": media_type,
        "digest": digest,
        "size": size,
    });
    if platform {
        entry["platform"] = serde_json::json!({"os": "linux", "architecture": "amd64"});
    }
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": INDEX_TYPE,
        "manifests": [entry],
    }))
    .unwrap()
}

/// `image` behind `depth` indexes nested in each other, tagged `v1`; the
/// indexes' digests, outermost first.
fn nested(image: &TestImage, depth: usize) -> (Fake, Vec<kiln_oci::Digest>) {
    let mut fake = Fake::with_image(image);
    let mut inner = (
        image.manifest_digest.clone(),
        image.manifest.len(),
        MEDIA_TYPE,
    );
    let mut digests = Vec::new();
    for level in 0..depth {
        // The innermost index names the platform; the others do not.
        let bytes = index_to(&inner.0, inner.1, inner.2, level == 0);
        let digest = kiln_oci::Digest::sha256(&bytes);
        fake.manifests.insert(digest.to_string(), bytes.clone());
        fake.manifests.insert("v1".into(), bytes.clone());
        digests.insert(0, digest.clone());
        inner = (digest, bytes.len(), INDEX_TYPE);
    }
    (fake, digests)
}

fn amd64() -> PullOptions {
    PullOptions {
        platform: Some("linux/amd64".parse().unwrap()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_indexes_are_followed_to_a_limit() {
    let image = image();
    let client = Client::new(config(0), None).unwrap();
    let depth = kiln_registry::MAX_INDEX_DEPTH;

    let (fake, digests) = nested(&image, depth);
    let host = serve(Arc::new(fake)).await;
    let (_d, store) = temp_store();
    let r = client
        .pull(
            &store,
            &reference(&format!("{host}/test/app:v1")),
            &amd64(),
            &|_| {},
        )
        .await
        .unwrap();
    assert_eq!(r.manifest_digest, image.manifest_digest);
    assert_eq!(r.digest, digests[0]);
    for d in &digests {
        assert!(store.has_blob(d).unwrap());
    }

    let (fake, digests) = nested(&image, depth + 1);
    let host = serve(Arc::new(fake)).await;
    let (_d, store) = temp_store();
    let err = client
        .pull(
            &store,
            &reference(&format!("{host}/test/app:v1")),
            &amd64(),
            &|_| {},
        )
        .await
        .unwrap_err();
    match &err {
        Error::IndexNesting {
            digest,
            cycle,
            limit,
            ..
        } => {
            assert_eq!(digest, &digests[depth]);
            assert!(!cycle);
            assert_eq!(*limit, depth);
        }
        other => panic!("expected IndexNesting, got {other:?}"),
    }
    assert_eq!(
        err.to_string(),
        format!(
            "manifest index nests too deeply (more than {depth} levels) in {host}/test/app: {}",
            digests[depth]
        )
    );
    assert!(store.images().unwrap().is_empty());
    assert!(store.list_blobs().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_whose_entry_leads_back_to_itself_is_refused() {
    // An index whose nested entry the registry answers with the index
    // itself: content addressing makes a real loop impossible, so the
    // registry must lie about the bytes, and that is what is reported.
    let image = image();
    let (mut fake, digests) = nested(&image, 2);
    let top = fake.manifests["v1"].clone();
    fake.manifests.insert(digests[1].to_string(), top);
    let host = serve(Arc::new(fake)).await;
    let (_d, store) = temp_store();
    let err = Client::new(config(0), None)
        .unwrap()
        .pull(
            &store,
            &reference(&format!("{host}/test/app:v1")),
            &amd64(),
            &|_| {},
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::ManifestDigestMismatch { expected, actual, .. }
            if *expected == digests[1] && *actual == digests[0]),
        "{err:?}"
    );
    assert!(store.images().unwrap().is_empty());
}
