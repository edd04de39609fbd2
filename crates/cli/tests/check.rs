//! `kiln system check [--repair]` with the real binary, and `save`/`load`
//! printing no progress when stderr is not a terminal.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

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

    /// Runs kiln; returns (exit code, stdout, stderr).
    fn run(&self, args: &[&str]) -> (i32, String, String) {
        let out = self.kiln().args(args).output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    }

    fn ok(&self, args: &[&str]) -> String {
        let (code, stdout, stderr) = self.run(args);
        assert_eq!(code, 0, "kiln {args:?}: {stderr}");
        stdout
    }

    /// Imports a rootfs with one file as `name`; returns the image id.
    fn import(&self, name: &str, content: &[u8]) -> String {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(content.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "etc/hello", content).unwrap();
        let tar = self.path(&format!("{}.tar", name.replace([':', '/'], "_")));
        fs::write(&tar, b.into_inner().unwrap()).unwrap();
        self.ok(&["import", tar.to_str().unwrap(), name])
            .trim()
            .to_string()
    }

    /// The layer blob of an image.
    fn layer_path(&self, image: &str) -> PathBuf {
        let layers = self.ok(&["inspect", "-f", "{{index .RootFS.Layers 0}}", image]);
        // Imported layers are stored uncompressed: diff id = blob digest.
        let hex = layers.trim().strip_prefix("sha256:").unwrap().to_owned();
        self.path("store").join("blobs/sha256").join(hex)
    }
}

#[test]
fn clean_store_passes() {
    let env = Env::new();
    env.import("app:1", b"one");
    let (code, stdout, stderr) = env.run(&["system", "check"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        stdout,
        "checked 3 blobs, 1 image, 0 snapshots: 0 problems (0 repaired)\n"
    );
    assert_eq!(stderr, "");
}

#[test]
fn corrupt_layer_fails_then_repair_removes_the_image() {
    let env = Env::new();
    let id = env.import("app:1", b"one");
    env.import("other:2", b"two");
    let layer = env.layer_path("app:1");
    fs::set_permissions(&layer, fs::Permissions::from_mode(0o644)).unwrap();
    let mut bytes = fs::read(&layer).unwrap();
    bytes[520] ^= 1;
    fs::write(&layer, bytes).unwrap();

    let (code, stdout, _) = env.run(&["system", "check"]);
    assert_eq!(code, 1, "{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert!(
        lines[0].contains(": corrupt (content hashes to sha256:"),
        "{stdout}"
    );
    assert!(lines[1].starts_with(&format!("image {id}: corrupt blob sha256:")));
    assert_eq!(
        lines[2],
        "checked 6 blobs, 2 images, 0 snapshots: 2 problems (0 repaired)"
    );

    let (code, stdout, stderr) = env.run(&["system", "check", "--repair"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!("removed image {id} (app:1)\n")),
        "{stdout}"
    );
    assert!(stdout.ends_with("2 problems (2 repaired)\n"), "{stdout}");
    assert!(!layer.exists());
    assert_eq!(
        env.ok(&["images", "--format", "{{.Repository}}"]),
        "other\n"
    );

    // Only informational notes remain (the removed image's young blobs).
    let (code, stdout, _) = env.run(&["system", "check"]);
    assert_eq!(code, 0, "{stdout}");
    assert!(
        stdout
            .lines()
            .all(|l| l.starts_with("note: ") || l.starts_with("checked "))
    );
}

#[test]
fn missing_layer_is_reported() {
    let env = Env::new();
    let id = env.import("app:1", b"one");
    let layer = env.layer_path("app:1");
    fs::remove_file(&layer).unwrap();
    let hex = layer.file_name().unwrap().to_str().unwrap();
    let (code, stdout, _) = env.run(&["system", "check"]);
    assert_eq!(code, 1);
    assert_eq!(
        stdout,
        format!(
            "image {id}: missing blob sha256:{hex} (layer)\n\
             checked 2 blobs, 1 image, 0 snapshots: 1 problem (0 repaired)\n"
        )
    );
    let (code, stdout, _) = env.run(&["system", "check", "--repair"]);
    assert_eq!(code, 0, "{stdout}");
    assert!(
        stdout.contains(&format!("removed image {id} (app:1)")),
        "{stdout}"
    );
    assert_eq!(env.ok(&["images", "-q"]), "");
}

#[test]
fn save_and_load_print_no_progress_without_a_terminal() {
    let env = Env::new();
    env.import("app:1", &vec![7u8; 3 << 20]);
    let archive = env.path("app.tar");
    let (code, stdout, stderr) = env.run(&["save", "-o", archive.to_str().unwrap(), "app:1"]);
    assert_eq!((code, stdout.as_str(), stderr.as_str()), (0, "", ""));
    env.ok(&["rmi", "app:1"]);
    let (code, stdout, stderr) = env.run(&["load", "-i", archive.to_str().unwrap()]);
    assert_eq!(
        (code, stdout.as_str(), stderr.as_str()),
        (0, "Loaded image: app:1\n", "")
    );
    let (code, stdout, stderr) = env.run(&["load", "-q", "-i", archive.to_str().unwrap()]);
    assert_eq!((code, stdout.as_str(), stderr.as_str()), (0, "", ""));
}
