//! `kiln save` / `kiln load` with the real binary: round trips keep image
//! ids, tags and layer digests; skopeo and umoci (when installed, as the
//! test command does) accept what kiln writes.

use std::path::{Path, PathBuf};
use std::process::Command as Std;

use assert_cmd::Command;

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        Env {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn kiln(&self) -> Command {
        let mut c = Command::cargo_bin("kiln").unwrap();
        c.env("KILN_ROOT", self.path("store"))
            .env("SOURCE_DATE_EPOCH", "1700000000");
        c
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.kiln().args(args).output().unwrap();
        assert!(
            out.status.success(),
            "kiln {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Imports a small rootfs as `name`; returns the image id.
    fn import(&self, name: &str, content: &[u8]) -> String {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(content.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "etc/hello", content).unwrap();
        let tar = self.path(&format!("{}.tar", name.replace([':', '/'], "_")));
        std::fs::write(&tar, b.into_inner().unwrap()).unwrap();
        self.ok(&["import", tar.to_str().unwrap(), name])
            .trim()
            .to_string()
    }
}

fn tool(name: &str) -> bool {
    let found = Std::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        eprintln!(
            "skipping the {name} check: {name} is not installed (scripts/test.sh installs it)"
        );
    }
    found
}

fn layer_digests(env: &Env, image: &str) -> String {
    env.ok(&["inspect", "-f", "{{json .RootFS.Layers}}", image])
}

#[test]
fn save_rmi_load_round_trip() {
    let env = Env::new();
    let id = env.import("app:1", b"one");
    env.ok(&["tag", "app:1", "example.com/app:latest"]);
    let other = env.import("other:2", b"two");
    let layers = layer_digests(&env, "app:1");
    let archive = env.path("images.tar");
    env.ok(&[
        "save",
        "-o",
        archive.to_str().unwrap(),
        "app:1",
        "example.com/app",
        "other:2",
    ]);
    env.ok(&["rmi", "app:1", "example.com/app:latest", "other:2"]);
    assert_eq!(env.ok(&["images", "-q"]), "");
    let out = env.ok(&["load", "-i", archive.to_str().unwrap()]);
    for line in [
        "Loaded image: app:1",
        "Loaded image: example.com/app:latest",
        "Loaded image: other:2",
    ] {
        assert!(out.contains(line), "{out}");
    }
    assert_eq!(env.ok(&["inspect", "-f", "{{.Id}}", "app:1"]).trim(), id);
    assert_eq!(
        env.ok(&["inspect", "-f", "{{.Id}}", "other:2"]).trim(),
        other
    );
    assert_eq!(layer_digests(&env, "example.com/app:latest"), layers);
}

#[test]
fn save_to_stdout_and_load_from_stdin() {
    let env = Env::new();
    let id = env.import("app:1", b"x");
    let out = env.kiln().args(["save", "app:1"]).output().unwrap();
    assert!(out.status.success());
    env.ok(&["rmi", "app:1"]);
    env.kiln()
        .args(["load"])
        .write_stdin(out.stdout)
        .assert()
        .success()
        .stdout("Loaded image: app:1\n");
    assert_eq!(env.ok(&["inspect", "-f", "{{.Id}}", "app:1"]).trim(), id);
}

#[test]
fn save_of_a_missing_image_writes_nothing() {
    let env = Env::new();
    let archive = env.path("x.tar");
    env.kiln()
        .args(["save", "-o", archive.to_str().unwrap(), "nope:1"])
        .assert()
        .code(1)
        .stderr(predicates::str::contains("No such image: nope:1"));
    assert!(!archive.exists());
}

#[test]
fn truncated_archive_is_rejected_and_store_unchanged() {
    let env = Env::new();
    env.import("app:1", b"payload");
    let archive = env.path("a.tar");
    env.ok(&["save", "-o", archive.to_str().unwrap(), "app:1"]);
    let bytes = std::fs::read(&archive).unwrap();
    let cut = env.path("cut.tar");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    env.ok(&["rmi", "app:1"]);
    env.kiln()
        .args(["load", "-i", cut.to_str().unwrap()])
        .assert()
        .code(1);
    assert_eq!(env.ok(&["images", "-q"]), "");
}

#[test]
fn skopeo_and_umoci_read_kiln_archives() {
    let env = Env::new();
    env.import("app:1", b"hello");
    let docker = env.path("d.tar");
    let oci = env.path("o.tar");
    env.ok(&["save", "-o", docker.to_str().unwrap(), "app:1"]);
    env.ok(&[
        "save",
        "--format",
        "oci",
        "-o",
        oci.to_str().unwrap(),
        "app:1",
    ]);
    if tool("skopeo") {
        for spec in [
            format!("docker-archive:{}", docker.display()),
            format!("oci-archive:{}", oci.display()),
        ] {
            let out = Std::new("skopeo")
                .args(["inspect", &spec])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "skopeo inspect {spec}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        // And kiln loads what skopeo writes.
        let copied = env.path("copied.tar");
        let out = Std::new("skopeo")
            .args([
                "copy",
                &format!("oci-archive:{}", oci.display()),
                &format!("docker-archive:{}:copied:1", copied.display()),
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "skopeo copy: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let loaded = env.ok(&["load", "-i", copied.to_str().unwrap()]);
        assert!(loaded.contains("Loaded image: copied:1"), "{loaded}");
    }
    if tool("umoci") {
        let layout = env.path("layout");
        std::fs::create_dir(&layout).unwrap();
        assert!(
            Std::new("tar")
                .arg("-xf")
                .arg(&oci)
                .arg("-C")
                .arg(&layout)
                .status()
                .unwrap()
                .success()
        );
        let bundle = env.path("bundle");
        let out = Std::new("umoci")
            .args([
                "unpack",
                "--rootless",
                "--image",
                &format!("{}:1", layout.display()),
            ])
            .arg(&bundle)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "umoci unpack: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            std::fs::read(Path::new(&bundle).join("rootfs/etc/hello")).unwrap(),
            b"hello"
        );
    }
}

#[test]
fn podman_loads_kiln_archives() {
    if !tool("podman") {
        return;
    }
    let env = Env::new();
    let id = env.import("app:1", b"for podman");
    let archive = env.path("p.tar");
    env.ok(&["save", "-o", archive.to_str().unwrap(), "app:1"]);
    let podman = |args: &[&str]| {
        Std::new("podman")
            .arg("--root")
            .arg(env.path("podman-root"))
            .arg("--runroot")
            .arg(env.path("podman-run"))
            .args(["--storage-driver", "vfs"])
            .args(args)
            .output()
            .unwrap()
    };
    let out = podman(&["load", "-i", archive.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "podman load: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("Loaded image: docker.io/library/app:1"));
    let out = podman(&["images", "--no-trunc", "--format", "{{.ID}}"]);
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        id.ends_with(listed.trim()) || listed.trim().ends_with(id.trim_start_matches("sha256:")),
        "{listed} vs {id}"
    );
}
