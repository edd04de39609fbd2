//! Loading the shapes other tools write: Docker's configs with `null`
//! fields, zero-layer images, multi-platform indexes, skopeo's `dir:`
//! layout, non-distributable layers. (The CLI's tests load archives the
//! real tools made; these build the same shapes by hand.)

mod common;

use common::{layer_tar, store};
use kiln_exporter::{Error, load, load_directory};
use kiln_oci::{Digest, Platform};
use serde_json::{Value, json};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";

fn add(builder: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]) {
    let mut header = tar::Header::new_gnu();
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    builder.append_data(&mut header, path, data).unwrap();
}

fn bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap()
}

fn descriptor(media_type: &str, data: &[u8]) -> Value {
    json!({
        "mediaType": media_type,
        "digest": Digest::sha256(data).to_string(),
        "size": data.len(),
    })
}

/// An OCI layout archive: `blobs`, and `index.json` listing `entries`.
fn oci_archive(blobs: &[&[u8]], entries: Vec<Value>) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    add(&mut b, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    for blob in blobs {
        add(
            &mut b,
            &format!("blobs/sha256/{}", Digest::sha256(blob).hex()),
            blob,
        );
    }
    add(
        &mut b,
        "index.json",
        &bytes(&json!({"schemaVersion": 2, "manifests": entries})),
    );
    b.into_inner().unwrap()
}

/// The config `docker import` writes (dockerd 20.10), for `diff_ids`.
fn docker_import_config(diff_ids: Value) -> Vec<u8> {
    let container = json!({
        "Hostname": "", "Domainname": "", "User": "", "AttachStdin": false,
        "AttachStdout": false, "AttachStderr": false, "Tty": false, "OpenStdin": false,
        "StdinOnce": false, "Env": null, "Cmd": null, "Image": "", "Volumes": null,
        "WorkingDir": "", "Entrypoint": null, "OnBuild": null, "Labels": null,
    });
    bytes(&json!({
        "architecture": "amd64",
        "comment": "Imported from -",
        "config": container,
        "container_config": container,
        "created": "2026-12-07T16:01:11.608380285Z",
        "docker_version": "20.10.24+dfsg1",
        "history": [{"created": "2026-12-07T16:01:11.608380285Z", "comment": "Imported from -"}],
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
}

/// A Docker 20.10 `docker save` archive of one image.
fn docker_archive(config: &[u8], layers: &[&[u8]], tag: &str) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let config_name = format!("{}.json", Digest::sha256(config).hex());
    add(&mut b, &config_name, config);
    let mut paths = Vec::new();
    for (i, layer) in layers.iter().enumerate() {
        let path = format!("{}/layer.tar", format!("{i}").repeat(64));
        add(&mut b, &path, layer);
        paths.push(path);
    }
    let manifest = json!([{"Config": config_name, "RepoTags": [tag], "Layers": paths}]);
    add(&mut b, "manifest.json", &bytes(&manifest));
    b.into_inner().unwrap()
}

#[test]
fn docker_config_with_null_fields_loads_and_reads() {
    let layer = layer_tar(&[("hello", b"hi")]);
    let config = docker_import_config(json!([Digest::sha256(&layer).to_string()]));
    let archive = docker_archive(&config, &[&layer], "imported:1");
    let (_d, dst) = store();
    let loaded = load(&dst, &archive[..], |_| {}).unwrap();
    assert_eq!(loaded.len(), 1);
    let record = dst.resolve("imported:1").unwrap();
    let docs = dst.image_docs(&record).unwrap();
    assert!(docs.config.config.env.is_empty());
    assert_eq!(docs.config.config.cmd, None);
    assert_eq!(docs.layers.len(), 1);
}

#[test]
fn zero_layer_images_load() {
    // BuildKit's `FROM scratch` + `LABEL`, as dockerd 20.10 pushes it and
    // skopeo copies it: `diff_ids` and `created` are null, `Layers` empty.
    let config = bytes(&json!({
        "architecture": "amd64",
        "config": {"Env": ["PATH=/bin"], "Labels": {"a": "b"}, "OnBuild": null},
        "created": null,
        "history": [{"created_by": "LABEL a=b", "empty_layer": true}],
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": null},
    }));
    let archive = docker_archive(&config, &[], "zero:docker");
    let (_d, dst) = store();
    load(&dst, &archive[..], |_| {}).unwrap();
    let docs = dst
        .image_docs(&dst.resolve("zero:docker").unwrap())
        .unwrap();
    assert!(docs.layers.is_empty());

    // The OCI form: `"layers": []`, which the schema's minItems refuses
    // but every tool writes.
    let manifest = bytes(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(OCI_CONFIG, &config),
        "layers": [],
    }));
    let mut entry = descriptor(OCI_MANIFEST, &manifest);
    entry["annotations"] = json!({"org.opencontainers.image.ref.name": "zero:oci"});
    let archive = oci_archive(&[&config, &manifest], vec![entry]);
    load(&dst, &archive[..], |_| {}).unwrap();
    let record = dst.resolve("zero:oci").unwrap();
    assert_eq!(record.manifest_digest, Digest::sha256(&manifest));
    assert!(dst.image_docs(&record).unwrap().layers.is_empty());
}

#[test]
fn config_with_a_wrong_type_is_rejected() {
    let layer = layer_tar(&[("hello", b"hi")]);
    let mut config: Value =
        serde_json::from_slice(&docker_import_config(json!([
            Digest::sha256(&layer).to_string()
        ])))
        .unwrap();
    config["config"]["Env"] = json!("PATH=/bin");
    let archive = docker_archive(&bytes(&config), &[&layer], "bad:1");
    let (_d, dst) = store();
    let err = load(&dst, &archive[..], |_| {}).unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidDocument {
                what: "image config",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(dst.images().unwrap().is_empty());
}

/// One platform's image: config, layer and manifest blobs.
struct PlatformImage {
    config: Vec<u8>,
    layer: Vec<u8>,
    manifest: Vec<u8>,
}

fn platform_image(architecture: &str, variant: Option<&str>) -> PlatformImage {
    let layer = layer_tar(&[("arch", architecture.as_bytes())]);
    let mut config = json!({
        "architecture": architecture,
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [Digest::sha256(&layer).to_string()]},
    });
    if let Some(v) = variant {
        config["variant"] = json!(v);
    }
    let config = bytes(&config);
    let manifest = bytes(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(OCI_CONFIG, &config),
        "layers": [descriptor(OCI_LAYER, &layer)],
    }));
    PlatformImage {
        config,
        layer,
        manifest,
    }
}

fn index_entry(image: &PlatformImage, architecture: &str, variant: Option<&str>) -> Value {
    let mut d = descriptor(OCI_MANIFEST, &image.manifest);
    d["platform"] = json!({"architecture": architecture, "os": "linux"});
    if let Some(v) = variant {
        d["platform"]["variant"] = json!(v);
    }
    d
}

/// The host's platform and one it cannot run.
fn host_and_foreign() -> ((String, Option<String>), (String, Option<String>)) {
    let host = Platform::host();
    let foreign = if host.architecture == "s390x" {
        ("riscv64".to_owned(), None)
    } else {
        ("s390x".to_owned(), None)
    };
    ((host.architecture, host.variant), foreign)
}

#[test]
fn multi_platform_index_loads_the_host_image() {
    // As `skopeo copy --all`, `buildah manifest push --all` and Docker 25's
    // `docker save` write it: index.json names an index; only the host's
    // image needs its blobs in the archive.
    let ((host_arch, host_variant), (other_arch, _)) = host_and_foreign();
    let host = platform_image(&host_arch, host_variant.as_deref());
    let other = platform_image(&other_arch, None);
    let attestation = bytes(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(OCI_CONFIG, b"{}"),
        "layers": [],
    }));
    let mut unknown = descriptor(OCI_MANIFEST, &attestation);
    unknown["platform"] = json!({"architecture": "unknown", "os": "unknown"});
    let index = bytes(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            index_entry(&other, &other_arch, None),
            unknown,
            index_entry(&host, &host_arch, host_variant.as_deref()),
        ],
    }));
    let mut entry = descriptor(OCI_INDEX, &index);
    entry["annotations"] = json!({"io.containerd.image.name": "docker.io/library/multi:1"});
    let archive = oci_archive(
        &[&index, &host.manifest, &host.config, &host.layer],
        vec![entry.clone()],
    );
    let (_d, dst) = store();
    let loaded = load(&dst, &archive[..], |_| {}).unwrap();
    assert_eq!(loaded.len(), 1);
    assert_eq!(loaded[0].id.digest(), &Digest::sha256(&host.config));
    assert_eq!(loaded[0].manifest_digest, Digest::sha256(&host.manifest));
    let record = dst.resolve("multi:1").unwrap();
    assert_eq!(record.id, loaded[0].id);

    // Without an image for the host, the load fails and says what the
    // index has.
    let index = bytes(&json!({
        "schemaVersion": 2,
        "manifests": [index_entry(&other, &other_arch, None)],
    }));
    let archive = oci_archive(
        &[&index, &other.manifest, &other.config, &other.layer],
        vec![descriptor(OCI_INDEX, &index)],
    );
    let (_d, dst) = store();
    let err = load(&dst, &archive[..], |_| {}).unwrap_err();
    match &err {
        Error::NoMatchingPlatform { available, .. } => {
            assert_eq!(available, &[format!("linux/{other_arch}")]);
        }
        other => panic!("{other:?}"),
    }
    assert!(dst.images().unwrap().is_empty());
}

#[test]
fn docker_manifest_list_in_an_oci_archive() {
    let ((host_arch, host_variant), _) = host_and_foreign();
    let host = platform_image(&host_arch, host_variant.as_deref());
    let list_type = "application/vnd.docker.distribution.manifest.list.v2+json";
    let list = bytes(&json!({
        "schemaVersion": 2,
        "mediaType": list_type,
        "manifests": [index_entry(&host, &host_arch, host_variant.as_deref())],
    }));
    let mut entry = descriptor(list_type, &list);
    entry["annotations"] = json!({"org.opencontainers.image.ref.name": "example.com/list:2"});
    let archive = oci_archive(
        &[&list, &host.manifest, &host.config, &host.layer],
        vec![entry],
    );
    let (_d, dst) = store();
    load(&dst, &archive[..], |_| {}).unwrap();
    assert_eq!(
        dst.resolve("example.com/list:2").unwrap().id.digest(),
        &Digest::sha256(&host.config)
    );
}

#[test]
fn non_distributable_layers_load() {
    let layer = layer_tar(&[("licensed", b"x")]);
    let config = bytes(&json!({
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [Digest::sha256(&layer).to_string()]},
    }));
    let mut layer_desc = descriptor(
        "application/vnd.oci.image.layer.nondistributable.v1.tar",
        &layer,
    );
    layer_desc["urls"] = json!(["https://example.invalid/layer"]);
    let manifest = bytes(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(OCI_CONFIG, &config),
        "layers": [layer_desc],
        "annotations": {"org.example.note": "annotated"},
    }));
    let mut entry = descriptor(OCI_MANIFEST, &manifest);
    entry["annotations"] = json!({
        "org.opencontainers.image.ref.name": "example.com/licensed:1",
        "org.example.other": "x",
    });
    let archive = oci_archive(&[&config, &manifest, &layer], vec![entry]);
    let (_d, dst) = store();
    load(&dst, &archive[..], |_| {}).unwrap();
    let record = dst.resolve("example.com/licensed:1").unwrap();
    assert_eq!(
        dst.image_docs(&record).unwrap().layers,
        [Digest::sha256(&layer)]
    );
}

/// skopeo's `dir:` layout of one image: `manifest.json` is the image's
/// manifest, blobs are named by their hex digest.
fn dir_layout(dir: &std::path::Path) -> (Vec<u8>, Vec<u8>) {
    let layer = layer_tar(&[("hello", b"hi")]);
    let config = docker_import_config(json!([Digest::sha256(&layer).to_string()]));
    let manifest = bytes(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": descriptor("application/vnd.docker.container.image.v1+json", &config),
        "layers": [descriptor("application/vnd.docker.image.rootfs.diff.tar.gzip", &layer)],
    }));
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("manifest.json"), &manifest).unwrap();
    std::fs::write(dir.join("version"), "Directory Transport Version: 1.1\n").unwrap();
    for blob in [&config, &layer] {
        std::fs::write(dir.join(Digest::sha256(blob).hex()), blob).unwrap();
    }
    (config, manifest)
}

#[test]
fn skopeo_dir_layout_loads_untagged() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("image");
    let (config, manifest) = dir_layout(&dir);

    let (_d, dst) = store();
    let loaded = load_directory(&dst, &dir, |_| {}).unwrap();
    assert_eq!(loaded.len(), 1);
    assert_eq!(loaded[0].id.digest(), &Digest::sha256(&config));
    assert_eq!(loaded[0].manifest_digest, Digest::sha256(&manifest));
    assert!(loaded[0].tags.is_empty());
    dst.image_docs(&dst.image(&loaded[0].id).unwrap()).unwrap();

    // The same directory packed into a tar.
    let mut b = tar::Builder::new(Vec::new());
    b.append_dir_all(".", &dir).unwrap();
    let archive = b.into_inner().unwrap();
    let (_d, dst) = store();
    let again = load(&dst, &archive[..], |_| {}).unwrap();
    assert_eq!(again, loaded);
}

#[test]
fn directory_errors() {
    let (_d, dst) = store();
    let tmp = tempfile::tempdir().unwrap();
    let err = load_directory(&dst, tmp.path(), |_| {}).unwrap_err();
    assert!(matches!(err, Error::NotAnImageArchive), "{err:?}");
    let missing = tmp.path().join("missing");
    let err = load_directory(&dst, &missing, |_| {}).unwrap_err();
    assert!(matches!(err, Error::ReadDirectory { .. }), "{err:?}");
}
