//! Cross-checks with skopeo: the archives kiln writes are read by another
//! implementation. Skipped, with the reason printed, when skopeo is not
//! installed.

mod common;

use std::path::Path;
use std::process::Command;

use common::{TestLayer, layer_tar, put_image, store};
use kiln_exporter::{ImageSelector, SaveFormat, save};
use serde_json::Value;

fn skopeo_available() -> bool {
    match Command::new("skopeo").arg("--version").output() {
        Ok(out) if out.status.success() => true,
        Ok(out) => {
            println!(
                "skipping: `skopeo --version` failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            false
        }
        Err(e) => {
            println!("skipping: skopeo is not installed ({e})");
            false
        }
    }
}

fn skopeo(args: &[&str]) {
    let out = Command::new("skopeo").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "skopeo {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn inspect(transport: &str, path: &Path) -> Value {
    let target = format!("{transport}:{}", path.display());
    let out = Command::new("skopeo")
        .args(["inspect", "--no-tags", &target])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo inspect {target} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn skopeo_reads_docker_and_oci_archives() {
    if !skopeo_available() {
        return;
    }
    let (dir, src) = store();
    let record = put_image(
        &src,
        "skopeo",
        &[
            TestLayer::plain(layer_tar(&[("etc/hostname", b"kiln\n")])),
            TestLayer::gzipped(layer_tar(&[("app/run", b"#!/bin/sh\n")])),
        ],
        &["kiln-test/skopeo:1"],
    );
    for (format, transport, file) in [
        (SaveFormat::Docker, "docker-archive", "image-docker.tar"),
        (SaveFormat::Oci, "oci-archive", "image-oci.tar"),
    ] {
        let path = dir.path().join(file);
        let out = std::fs::File::create(&path).unwrap();
        save(
            &src,
            &[ImageSelector::Query("kiln-test/skopeo:1".to_owned())],
            out,
            format,
            |_| {},
        )
        .unwrap();
        let info = inspect(transport, &path);
        assert_eq!(info["Os"], "linux", "{transport}: {info}");
        assert_eq!(info["Architecture"], "amd64", "{transport}: {info}");
        assert_eq!(
            info["Layers"].as_array().map(Vec::len),
            Some(2),
            "{transport}: {info}"
        );
        if format == SaveFormat::Oci {
            assert_eq!(info["Digest"], record.manifest_digest.to_string());
        }
        // A copy reads (and verifies) every blob.
        let copy = dir.path().join(format!("{file}.copy"));
        skopeo(&[
            "copy",
            "--quiet",
            &format!("{transport}:{}", path.display()),
            &format!("oci:{}", copy.display()),
        ]);
    }
}

#[test]
fn kiln_loads_archives_written_by_skopeo() {
    if !skopeo_available() {
        return;
    }
    let (dir, src) = store();
    let record = put_image(
        &src,
        "from-skopeo",
        &[
            TestLayer::plain(layer_tar(&[("etc/hostname", b"kiln\n")])),
            TestLayer::gzipped(layer_tar(&[("app/run", b"#!/bin/sh\n")])),
        ],
        &["kiln-test/skopeo:1"],
    );
    let ours = dir.path().join("ours.tar");
    save(
        &src,
        &[ImageSelector::Id(record.id.clone())],
        std::fs::File::create(&ours).unwrap(),
        SaveFormat::Oci,
        |_| {},
    )
    .unwrap();
    let source = format!("oci-archive:{}", ours.display());
    for (dest, file) in [
        ("docker-archive", "theirs-docker.tar"),
        ("oci-archive", "theirs-oci.tar"),
    ] {
        let path = dir.path().join(file);
        skopeo(&[
            "copy",
            "--quiet",
            &source,
            &format!("{dest}:{}:example.com/from/skopeo:2", path.display()),
        ]);
        let (_d, dst) = store();
        let loaded = kiln_exporter::load(&dst, std::fs::File::open(&path).unwrap(), |_| {})
            .unwrap_or_else(|e| panic!("{dest}: {e:?}"));
        assert_eq!(loaded.len(), 1, "{dest}");
        assert_eq!(loaded[0].id, record.id, "{dest}");
        assert_eq!(
            loaded[0].tags,
            vec![kiln_oci::Reference::parse_docker_ref("example.com/from/skopeo:2").unwrap()],
            "{dest}"
        );
    }
}
