//! The image commands on a real store in a temporary directory: import,
//! tag, images, inspect, history, rmi, image prune, system df.
//!
//! Images are imported with `SOURCE_DATE_EPOCH=0` so their ids are fixed;
//! the only time-dependent text, `NN years ago`, is redacted.

use std::io::Write;
use std::path::{Path, PathBuf};

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

    fn root(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    fn kiln(&self) -> Command {
        let mut c = Command::cargo_bin("kiln").unwrap();
        c.arg("--root")
            .arg(self.root())
            .env("SOURCE_DATE_EPOCH", "0");
        c
    }

    /// Runs a command that must succeed; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.kiln().args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs a command that must fail with exit code 1; returns stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.kiln().args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?} should fail");
        String::from_utf8(out.stderr).unwrap()
    }

    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    /// Imports `tar` (written to a file) and returns the image id.
    fn import(&self, tar: &[u8], extra: &[&str]) -> String {
        let file = self.write("rootfs.tar", tar);
        let mut args = vec!["import", file.to_str().unwrap()];
        args.extend_from_slice(extra);
        let out = self.ok(&args);
        let id = out.trim().to_owned();
        assert!(id.starts_with("sha256:") && id.len() == 71, "{out}");
        id
    }

    fn blobs(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.root().join("blobs/sha256"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

/// A small busybox-like root filesystem, byte-for-byte reproducible.
fn rootfs(extra: &str) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |path: &str, data: &[u8], mode: u32, kind: tar::EntryType| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        b.append_data(&mut h, path, data).unwrap();
    };
    for dir in ["bin", "etc", "tmp"] {
        add(dir, b"", 0o755, tar::EntryType::Directory);
    }
    add(
        "bin/busybox",
        &[0x7f, b'E', b'L', b'F', 2, 1, 1, 0],
        0o755,
        tar::EntryType::Regular,
    );
    add("etc/hostname", b"kiln\n", 0o644, tar::EntryType::Regular);
    add(
        "etc/os-release",
        format!("NAME=tiny\n{extra}").as_bytes(),
        0o644,
        tar::EntryType::Regular,
    );
    b.into_inner().unwrap()
}

fn redact(s: &str) -> String {
    regex::Regex::new(r"\d+ years ago")
        .unwrap()
        .replace_all(s, "NN years ago")
        .into_owned()
}

fn short(id: &str) -> &str {
    &id[7..19]
}

#[test]
fn import_tag_list_inspect_history() {
    let env = Env::new();
    let id = env.import(&rootfs(""), &["--platform", "linux/amd64", "busybox:1.36"]);
    env.ok(&["tag", "busybox:1.36", "busybox"]);
    env.ok(&["tag", short(&id), "localhost:5000/tools/bb:v1"]);

    insta::assert_snapshot!("images_table", redact(&env.ok(&["images"])));
    // `image ls` and `image list` are the same command.
    assert_eq!(env.ok(&["image", "ls"]), env.ok(&["images"]));
    assert_eq!(env.ok(&["image", "list"]), env.ok(&["images"]));
    insta::assert_snapshot!(
        "images_digests_no_trunc",
        redact(&env.ok(&["images", "--digests", "--no-trunc"]))
    );
    assert_eq!(
        env.ok(&["images", "-q"]),
        format!("{0}\n{0}\n{0}\n", short(&id))
    );
    insta::assert_snapshot!(
        "images_json",
        redact(&env.ok(&["images", "--format", "json", "busybox:latest"]))
    );
    assert_eq!(
        env.ok(&[
            "images",
            "--format",
            "{{.Repository}}:{{.Tag}} {{.Size}} {{.CreatedAt}}"
        ]),
        "busybox:1.36 5.63kB 1970-01-01 00:00:00 +0000 UTC\n\
         busybox:latest 5.63kB 1970-01-01 00:00:00 +0000 UTC\n\
         localhost:5000/tools/bb:v1 5.63kB 1970-01-01 00:00:00 +0000 UTC\n"
    );
    assert_eq!(
        env.ok(&[
            "images",
            "--format",
            "table {{.Repository}}\\t{{.ID}}",
            "busybox"
        ]),
        format!(
            "REPOSITORY   IMAGE ID\nbusybox      {0}\nbusybox      {0}\n",
            short(&id)
        )
    );

    insta::assert_snapshot!("inspect", env.ok(&["image", "inspect", "busybox"]));
    assert_eq!(
        env.ok(&[
            "inspect",
            "-f",
            "{{.Id}} {{json .RepoTags}} {{.Os}}/{{.Architecture}} {{.Comment}}",
            short(&id)
        ]),
        format!(
            "{id} [\"busybox:1.36\",\"busybox:latest\",\"localhost:5000/tools/bb:v1\"] linux/amd64 Imported from -\n"
        )
    );
    assert_eq!(
        env.ok(&[
            "inspect",
            "--format",
            "{{join .RepoTags \",\"}}|{{len .RootFS.Layers}}|{{.Metadata.LastTagTime}}",
            "busybox"
        ]),
        "busybox:1.36,busybox:latest,localhost:5000/tools/bb:v1|1|0001-01-01T00:00:00Z\n"
    );

    insta::assert_snapshot!("history", redact(&env.ok(&["history", "busybox"])));
    insta::assert_snapshot!(
        "history_raw",
        env.ok(&["history", "-H=false", "--no-trunc", "busybox"])
    );
    assert_eq!(
        env.ok(&["history", "-q", "busybox"]),
        format!("{}\n", short(&id))
    );
    assert_eq!(
        env.ok(&[
            "history",
            "--format",
            "{{.ID}}|{{.Size}}|{{.Comment}}",
            "busybox"
        ]),
        format!("{}|5.63kB|Imported from -\n", short(&id))
    );

    insta::assert_snapshot!("system_df", env.ok(&["system", "df"]));
}

#[test]
fn import_reads_compressed_tarballs_and_stdin() {
    let env = Env::new();
    let tar = rootfs("");
    let plain = env.import(&tar, &[]);

    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    let gz = gz.finish().unwrap();
    assert_eq!(env.import(&gz, &[]), plain, "gzip gives the same image");
    let zst = zstd::encode_all(&tar[..], 3).unwrap();
    assert_eq!(env.import(&zst, &[]), plain, "zstd gives the same image");

    let out = env
        .kiln()
        .args(["import", "-", "from-stdin"])
        .write_stdin(tar.clone())
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap().trim(), plain);
    // One image, tagged from-stdin; layer, config and manifest blobs.
    assert_eq!(
        env.ok(&["images", "--format", "{{.Repository}}"]),
        "from-stdin\n"
    );
    assert_eq!(env.blobs().len(), 3);

    let bad = env.write("bad.tar", b"this is not a tarball at all");
    let err = env.fails(&["import", bad.to_str().unwrap()]);
    assert!(err.contains("invalid rootfs archive"), "{err}");
}

#[test]
fn import_changes_message_and_platform() {
    let env = Env::new();
    env.import(
        &rootfs(""),
        &[
            "-c",
            "ENV PATH=/bin",
            "--change",
            "CMD [\"/bin/sh\"]",
            "-c",
            "LABEL org.example.team=core",
            "-c",
            "EXPOSE 8080",
            "-c",
            "WORKDIR /srv",
            "-m",
            "first import",
            "--platform",
            "linux/arm64/v8",
            "app:1",
        ],
    );
    // Template values are JSON values: `json` writes object keys sorted
    // (Docker keeps Go struct order).
    assert_eq!(
        env.ok(&["inspect", "-f", "{{json .Config}}", "app:1"]),
        "{\"AttachStderr\":false,\"AttachStdin\":false,\"AttachStdout\":false,\"Cmd\":[\"/bin/sh\"],\"Domainname\":\"\",\"Entrypoint\":null,\"Env\":[\"PATH=/bin\"],\"ExposedPorts\":{\"8080/tcp\":{}},\"Hostname\":\"\",\"Image\":\"\",\"Labels\":{\"org.example.team\":\"core\"},\"OnBuild\":null,\"OpenStdin\":false,\"StdinOnce\":false,\"Tty\":false,\"User\":\"\",\"Volumes\":null,\"WorkingDir\":\"/srv\"}\n"
    );
    assert_eq!(
        env.ok(&["inspect", "-f", "{{.Os}}/{{.Architecture}} {{.Variant}}|{{.Comment}}|{{index .Config.Labels \"org.example.team\"}}", "app:1"]),
        "linux/arm64 |first import|core\n"
    );
    assert_eq!(
        env.ok(&["history", "--format", "{{.Comment}}", "app:1"]),
        "first import\n"
    );
    let err = env.fails(&["import", "-c", "RUN make", "-"]);
    assert_eq!(err, "Error: run is not a valid change command\n");
}

#[test]
fn rmi_untags_then_deletes_unshared_content() {
    let env = Env::new();
    let a = env.import(&rootfs(""), &["a:1"]);
    env.ok(&["tag", "a:1", "a:2"]);
    // Same layer, different config: shares the layer blob with `a`.
    let b = env.import(&rootfs(""), &["-m", "other", "b"]);
    assert_ne!(a, b);
    assert_eq!(
        env.blobs().len(),
        5,
        "one shared layer, two configs, two manifests"
    );

    assert_eq!(env.ok(&["rmi", "a:1"]), "Untagged: a:1\n");
    assert_eq!(env.blobs().len(), 5, "untagging deletes nothing");
    assert_eq!(
        env.ok(&["image", "rm", "a:2"]),
        format!("Untagged: a:2\nDeleted: {a}\n")
    );
    assert_eq!(
        env.blobs().len(),
        3,
        "a's config and manifest are gone, the shared layer stays"
    );
    assert_eq!(
        env.ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"]),
        "b:latest\n"
    );

    // By id: the image goes with all its tags.
    env.ok(&["tag", "b", "c:x"]);
    assert_eq!(
        env.fails(&["rmi", short(&b)]),
        format!(
            "Error: conflict: unable to delete {} (must be forced) - image is referenced in multiple repositories\n",
            short(&b)
        )
    );
    assert_eq!(
        env.ok(&["rmi", "-f", short(&b)]),
        format!("Untagged: b:latest\nUntagged: c:x\nDeleted: {b}\n")
    );
    assert!(env.blobs().is_empty(), "{:?}", env.blobs());
    assert_eq!(
        env.ok(&["images"]),
        "REPOSITORY   TAG       IMAGE ID   CREATED   SIZE\n"
    );

    // Several names: the good ones are removed, the bad ones reported.
    let c = env.import(&rootfs(""), &["c"]);
    let out = env.kiln().args(["rmi", "nope", "c"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!("Untagged: c:latest\nDeleted: {c}\n")
    );
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        "Error: No such image: nope\n"
    );
}

#[test]
fn prune_removes_dangling_images() {
    let env = Env::new();
    let dangling = env.import(&rootfs("VERSION=1\n"), &[]);
    let kept = env.import(&rootfs("VERSION=2\n"), &["kept"]);
    // Declining the prompt deletes nothing.
    env.kiln()
        .args(["image", "prune"])
        .write_stdin("n\n")
        .assert()
        .success()
        .stdout("WARNING! This will remove all dangling images.\nAre you sure you want to continue? [y/N] ");
    assert_eq!(env.blobs().len(), 6);
    assert_eq!(
        env.ok(&[
            "images",
            "-f",
            "dangling=true",
            "--format",
            "{{.ID}} {{.Repository}}:{{.Tag}}"
        ]),
        format!("{} <none>:<none>\n", short(&dangling))
    );

    let out = env
        .kiln()
        .args(["image", "prune"])
        .write_stdin("y\n")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!(
            "WARNING! This will remove all dangling images.\nAre you sure you want to continue? [y/N] Deleted Images:\ndeleted: {dangling}\n\nTotal reclaimed space: 6.35kB\n"
        )
    );
    assert_eq!(env.blobs().len(), 3);
    assert_eq!(
        env.ok(&["image", "prune", "-f"]),
        "Total reclaimed space: 0B\n"
    );
    assert_eq!(
        env.ok(&["image", "prune", "-a", "-f"]),
        format!(
            "Deleted Images:\nuntagged: kept:latest\ndeleted: {kept}\n\nTotal reclaimed space: 6.35kB\n"
        )
    );
    assert!(env.blobs().is_empty());
}

#[test]
fn images_filters() {
    let env = Env::new();
    let one = env.import(&rootfs("1"), &["-c", "LABEL tier=web", "web:1"]);
    let two = env
        .kiln()
        .env("SOURCE_DATE_EPOCH", "100")
        .args(["import", "-", "db:1"])
        .write_stdin(rootfs("2"))
        .output()
        .unwrap();
    let two = String::from_utf8(two.stdout).unwrap().trim().to_owned();
    env.ok(&["tag", "web:1", "docker.io/library/web:2"]);
    let fmt = ["--format", "{{.Repository}}:{{.Tag}}"];
    let list = |filters: &[&str]| {
        let mut args = vec!["images"];
        args.extend_from_slice(&fmt);
        args.extend_from_slice(filters);
        env.ok(&args)
    };
    assert_eq!(list(&[]), "db:1\nweb:1\nweb:2\n", "newest first");
    assert_eq!(list(&["-f", "reference=web"]), "web:1\nweb:2\n");
    assert_eq!(list(&["-f", "reference=web:2"]), "web:2\n");
    assert_eq!(list(&["-f", "reference=*:1"]), "db:1\nweb:1\n");
    assert_eq!(list(&["web:1"]), "web:1\n");
    assert_eq!(list(&["-f", "label=tier"]), "web:1\nweb:2\n");
    assert_eq!(list(&["-f", "label=tier=db"]), "");
    assert_eq!(list(&["-f", "before=db:1"]), "web:1\nweb:2\n");
    assert_eq!(list(&["-f", "since=web:1"]), "db:1\n");
    assert_eq!(
        list(&["-f", "dangling=false", "-f", "reference=db"]),
        "db:1\n"
    );
    assert_eq!(list(&["-f", "dangling=true"]), "");
    assert_ne!(one, two);

    assert_eq!(
        env.fails(&["images", "-f", "color=red"]),
        "Error: invalid filter 'color'\n"
    );
    assert_eq!(
        env.fails(&["images", "-f", "dangling=maybe"]),
        "Error: invalid filter 'dangling=maybe'\n"
    );
    assert_eq!(
        env.fails(&["images", "-f", "since=nope"]),
        "Error: No such image: nope\n"
    );
}

#[test]
fn errors_read_like_docker() {
    let env = Env::new();
    assert_eq!(
        env.fails(&["inspect", "foo"]),
        "Error: No such image: foo\n"
    );
    assert_eq!(
        env.fails(&["history", "foo"]),
        "Error: No such image: foo\n"
    );
    assert_eq!(env.fails(&["rmi", "foo"]), "Error: No such image: foo\n");
    assert_eq!(
        env.fails(&["tag", "foo", "bar"]),
        "Error: No such image: foo\n"
    );
    let id = env.import(&rootfs(""), &["x"]);
    // inspect prints what it found, then the error.
    let out = env
        .kiln()
        .args(["inspect", "-f", "{{.Id}}", "x", "missing"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(String::from_utf8(out.stdout).unwrap(), format!("{id}\n"));
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        "Error: No such image: missing\n"
    );
    let err = env.fails(&["inspect", "-f", "{{.Nope}}", "x"]);
    assert!(err.contains("can't evaluate field Nope"), "{err}");
    // Usage errors exit with 2.
    env.kiln().args(["tag", "x"]).assert().code(2);
}

#[test]
fn root_comes_from_kiln_root() {
    let env = Env::new();
    let id = env.import(&rootfs(""), &["viaflag"]);
    let out = Command::cargo_bin("kiln")
        .unwrap()
        .env("KILN_ROOT", env.root())
        .args(["images", "-q"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!("{}\n", short(&id))
    );
    assert!(Path::new(&env.root()).join("VERSION").exists());
}
