//! Images other tools made: Docker (BuildKit, the classic builder,
//! `commit`, `import`), buildah and podman archives committed under
//! `tests/fixtures/foreign` (see its README), and the shapes skopeo and
//! umoci make from them at test time (OCI layouts, `dir:` layouts, zstd
//! and uncompressed layers, no history, zero layers, multi-platform
//! indexes, annotations). Each must load, list, inspect, and, as root on
//! x86-64 (the fixtures' program is x86-64), run and serve as a base.
//! Pulls go through a `docker-registry` started on a free loopback port.
//! Tests that need a missing tool, root or another architecture print why
//! and return.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command as Process;

use assert_cmd::Command;
use kiln_testkit::registry::LocalRegistry;
use serde_json::Value;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/foreign");

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        let env = Env {
            dir: tempfile::tempdir().unwrap(),
        };
        std::fs::create_dir_all(env.path("config")).unwrap();
        env
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn kiln(&self) -> Command {
        let mut c = Command::cargo_bin("kiln").unwrap();
        c.env("KILN_RUNTIME", common::test_runtime())
            .env("KILN_ROOT", self.path("store"))
            .env("DOCKER_CONFIG", self.path("docker"))
            .env("XDG_CONFIG_HOME", self.path("config"))
            .env_remove("SOURCE_DATE_EPOCH")
            .env_remove("KILN_LOG");
        c
    }

    /// Runs kiln; fails the test unless it succeeds. Returns stdout and
    /// stderr.
    fn ok<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> (String, String) {
        let out = self.kiln().args(args).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let shown: Vec<_> = args.iter().map(|a| a.as_ref().to_string_lossy()).collect();
        assert!(
            out.status.success(),
            "kiln {shown:?} failed:\n{stdout}\n{stderr}"
        );
        (stdout, stderr)
    }

    /// `kiln load -i PATH`; returns the images it names (tags, or ids of
    /// untagged images).
    fn load(&self, path: &Path) -> Vec<String> {
        let (stdout, _) = self.ok(&[Path::new("load").as_os_str(), "-i".as_ref(), path.as_ref()]);
        loaded(&stdout)
    }

    /// `kiln image inspect`'s object for `image`.
    fn inspect(&self, image: &str) -> Value {
        let (stdout, _) = self.ok(&["image", "inspect", image]);
        let v: Value = serde_json::from_str(&stdout).unwrap();
        v[0].clone()
    }
}

/// The images `kiln load` reported.
fn loaded(stdout: &str) -> Vec<String> {
    let images: Vec<String> = stdout
        .lines()
        .filter_map(|l| {
            l.strip_prefix("Loaded image: ")
                .or_else(|| l.strip_prefix("Loaded image ID: "))
        })
        .map(str::to_owned)
        .collect();
    assert!(!images.is_empty(), "nothing loaded: {stdout}");
    images
}

/// The committed archives, sorted.
fn fixtures() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(FIXTURES)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".tar.gz"))
        .collect();
    v.sort();
    assert!(v.len() >= 20, "fixtures missing from {FIXTURES}");
    v
}

fn fixture(name: &str) -> PathBuf {
    Path::new(FIXTURES).join(format!("{name}.tar.gz"))
}

fn gunzip(path: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap())
        .read_to_end(&mut out)
        .unwrap();
    out
}

fn tool(name: &str) -> bool {
    let found = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(name).is_file()));
    if !found {
        eprintln!("skipping: {name} is not installed (scripts/test.sh installs it)");
    }
    found
}

/// Whether containers can run the fixtures' x86-64 program here.
fn can_run() -> bool {
    if std::env::consts::ARCH != "x86_64" {
        eprintln!(
            "skipping the run and build checks: the fixtures' program is x86-64, this is {}",
            std::env::consts::ARCH
        );
        return false;
    }
    common::available()
}

/// Checks what every image must allow: listing, inspecting, history.
fn check_listed(env: &Env, images: &[String]) {
    let (stdout, stderr) = env.ok(&["images", "--no-trunc"]);
    assert!(!stderr.contains("warning"), "{stderr}");
    let (ids, _) = env.ok(&["images", "-q", "--no-trunc"]);
    for image in images {
        let v = env.inspect(image);
        let id = v["Id"].as_str().unwrap();
        assert!(ids.contains(id), "{image} ({id}) not listed:\n{stdout}");
        assert!(v["RootFS"]["Layers"].is_array() || v["RootFS"]["Layers"].is_null());
        env.ok(&["history", image]);
    }
    env.ok(&["system", "df"]);
}

/// The program's output for a container of `image` run without
/// arguments, from its config: the second word of entrypoint + cmd, or
/// `hello`; `None` when the image has nothing to run.
fn expected_output(v: &Value) -> Option<String> {
    let words = |k: &str| -> Vec<String> {
        v["Config"][k]
            .as_array()
            .map(|a| a.iter().map(|s| s.as_str().unwrap().to_owned()).collect())
            .unwrap_or_default()
    };
    let argv: Vec<String> = words("Entrypoint")
        .into_iter()
        .chain(words("Cmd"))
        .collect();
    if argv.is_empty()
        || v["RootFS"]["Layers"]
            .as_array()
            .is_none_or(|l| l.is_empty())
    {
        return None;
    }
    Some(argv.get(1).cloned().unwrap_or_else(|| "hello".into()))
}

/// Runs `image` as its config says (when it has something to run), then
/// builds `FROM` it with a `COPY` and a `RUN` and runs the result.
fn check_runs(env: &Env, image: &str, n: usize) {
    let v = env.inspect(image);
    if let Some(want) = expected_output(&v) {
        let (stdout, _) = env.ok(&["run", "--rm", "--network", "none", image]);
        assert_eq!(stdout.trim(), want, "kiln run {image}");
    }
    // A name that cannot reach a real registry, so FROM finds the loaded
    // image or fails.
    let base = format!("127.0.0.1:9/foreign/base{n}:1");
    env.ok(&["tag", image, &base]);
    let ctx = env.path(&format!("ctx{n}"));
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::copy(hello_from(env), ctx.join("kiln-hello")).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {base}\nCOPY kiln-hello /kiln-hello\nRUN [\"/kiln-hello\", \"built\"]\n"),
    )
    .unwrap();
    let child = format!("127.0.0.1:9/foreign/child{n}:1");
    env.ok(&[
        "build".as_ref(),
        "--network".as_ref(),
        "none".as_ref(),
        "-q".as_ref(),
        "-t".as_ref(),
        child.as_ref(),
        ctx.as_os_str(),
    ]);
    let (stdout, _) = env.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--entrypoint",
        "/kiln-hello",
        &child,
        "child-ran",
    ]);
    assert_eq!(
        stdout.trim(),
        "child-ran",
        "kiln run of the image built FROM {image}"
    );
    let parent = env.inspect(image);
    let built = env.inspect(&child);
    let layers = |v: &Value| v["RootFS"]["Layers"].as_array().map_or(0, Vec::len);
    assert!(layers(&built) > layers(&parent), "{image}: {built}");
    for key in ["WorkingDir", "User", "Entrypoint", "Cmd", "Labels"] {
        assert_eq!(
            built["Config"][key], parent["Config"][key],
            "{image}: Config.{key}"
        );
    }
    // The environment is kept; BuildKit adds a PATH when there is none.
    let env_of = |v: &Value| -> Vec<String> {
        v["Config"]["Env"]
            .as_array()
            .map(|a| a.iter().map(|s| s.as_str().unwrap().to_owned()).collect())
            .unwrap_or_default()
    };
    let (mut have, want) = (env_of(&built), env_of(&parent));
    if !want.iter().any(|e| e.starts_with("PATH=")) {
        have.retain(|e| !e.starts_with("PATH="));
    }
    assert_eq!(have, want, "{image}: Config.Env");
}

/// The fixtures' program, taken from the BuildKit fixture's layer.
fn hello_from(env: &Env) -> PathBuf {
    let out = env.path("hello");
    if out.exists() {
        return out;
    }
    let bytes = gunzip(&fixture("docker-buildkit-scratch"));
    let mut archive = tar::Archive::new(&bytes[..]);
    for entry in archive.entries().unwrap() {
        let entry = entry.unwrap();
        if entry.path().unwrap().ends_with("layer.tar") {
            let mut layer = tar::Archive::new(entry);
            for file in layer.entries().unwrap() {
                let mut file = file.unwrap();
                if file.path().unwrap().as_os_str() == "hello" {
                    file.unpack(&out).unwrap();
                    return out;
                }
            }
        }
    }
    panic!("no hello in the fixture");
}

#[test]
fn every_fixture_loads_lists_and_inspects() {
    let env = Env::new();
    let mut all = Vec::new();
    for path in fixtures() {
        let images = env.load(&path);
        // Uncompressed from stdin, as the tool wrote it: the same images.
        let out = env
            .kiln()
            .arg("load")
            .write_stdin(gunzip(&path))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            loaded(&String::from_utf8_lossy(&out.stdout)),
            images,
            "{}",
            path.display()
        );
        all.extend(images);
    }
    check_listed(&env, &all);
    // Saved in both formats and loaded into another store: the same ids.
    for format in ["docker", "oci"] {
        let archive = env.path(&format!("all.{format}.tar"));
        let mut args = vec!["save", "--format", format, "-o", archive.to_str().unwrap()];
        args.extend(all.iter().map(String::as_str));
        env.ok(&args);
        let other = Env::new();
        other.load(&archive);
        for image in &all {
            assert_eq!(
                other.inspect(image)["Id"],
                env.inspect(image)["Id"],
                "{image}"
            );
        }
        check_listed(&other, &all);
    }
    // What the configs say, null fields included.
    let multi = env.inspect("kiln-fixture/multi:1");
    assert_eq!(multi["Architecture"], kiln_oci_host_arch());
    let plain = env.inspect("kiln-fixture/import-plain");
    assert_eq!(plain["Config"]["Cmd"], Value::Null, "{plain}");
    assert_eq!(plain["Comment"], "Imported from -");
    let zero = env.inspect("kiln-fixture/buildkit-zero-layers:docker");
    assert_eq!(
        zero["Config"]["Labels"]["org.example.fixture"],
        "zero-layers"
    );
}

/// The host's architecture in Go's names, as the multi-platform fixture
/// has it.
fn kiln_oci_host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        other => other,
    }
}

#[test]
fn every_fixture_runs_and_serves_as_a_base() {
    if !can_run() {
        return;
    }
    let env = Env::new();
    let mut n = 0;
    for path in fixtures() {
        for image in env.load(&path) {
            check_runs(&env, &image, n);
            n += 1;
        }
    }
}

#[test]
fn an_unreadable_image_is_skipped_with_a_warning() {
    let env = Env::new();
    env.load(&fixture("docker-import-plain"));
    env.load(&fixture("docker-classic-scratch"));
    let id = env.inspect("kiln-fixture/import-plain")["Id"]
        .as_str()
        .unwrap()
        .to_owned();
    let hex = id.strip_prefix("sha256:").unwrap();
    std::fs::remove_file(env.path(&format!("store/blobs/sha256/{hex}"))).unwrap();

    let (stdout, stderr) = env.ok(&["images"]);
    assert!(stdout.contains("kiln-fixture/classic-scratch"), "{stdout}");
    assert!(!stdout.contains("import-plain"), "{stdout}");
    assert!(
        stderr.contains("warning: skipping image kiln-fixture/import-plain:latest"),
        "{stderr}"
    );
    assert!(stderr.contains(&id), "{stderr}");
    let (quiet, _) = env.ok(&["images", "-q"]);
    assert_eq!(quiet.lines().count(), 1, "{quiet}");
    env.ok(&["system", "df"]);
    // The image itself still fails, with the reason.
    env.kiln()
        .args(["inspect", "kiln-fixture/import-plain"])
        .assert()
        .failure();
}

/// Runs a tool; fails the test unless it succeeds.
fn run_tool(program: &str, args: &[&str]) {
    let out = Process::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn skopeo_copies_load() {
    if !tool("skopeo") {
        return;
    }
    let env = Env::new();
    let work = env.path("skopeo");
    std::fs::create_dir_all(&work).unwrap();
    let at = |name: &str| work.join(name).to_string_lossy().into_owned();
    let mut sources = Vec::new();
    for name in ["docker-classic-metadata", "docker-import-plain"] {
        let tar = at(&format!("{name}.tar"));
        std::fs::write(&tar, gunzip(&fixture(name))).unwrap();
        sources.push((name, format!("docker-archive:{tar}")));
    }
    let mut archives = Vec::new();
    let mut directories = Vec::new();
    for (name, src) in &sources {
        let copies: [(&str, Vec<&str>, bool); 6] = [
            (
                "zstd.oci",
                vec!["--dest-compress", "--dest-compress-format", "zstd"],
                true,
            ),
            (
                "layout-zstd",
                vec!["--dest-compress", "--dest-compress-format", "zstd"],
                false,
            ),
            ("uncompressed.oci", vec!["--dest-decompress"], true),
            ("gzip.oci", vec!["--dest-compress"], true),
            ("dir-v2s2", vec!["--format", "v2s2"], false),
            ("dir-oci", vec!["--format", "oci"], false),
        ];
        for (kind, flags, archive) in copies {
            let path = at(&format!("{name}-{kind}"));
            let dest = if kind.starts_with("dir") {
                format!("dir:{path}")
            } else if archive {
                format!("oci-archive:{path}:skopeo/{name}:{kind}")
            } else {
                format!("oci:{path}:skopeo/{name}")
            };
            let mut args = vec!["copy", "-q"];
            args.extend(flags);
            args.extend([src.as_str(), dest.as_str()]);
            run_tool("skopeo", &args);
            if archive {
                archives.push(path);
            } else {
                directories.push(path);
            }
        }
        let path = at(&format!("{name}-again.docker"));
        run_tool(
            "skopeo",
            &[
                "copy",
                "-q",
                src,
                &format!("docker-archive:{path}:skopeo/{name}:again"),
            ],
        );
        archives.push(path);
    }
    // A multi-platform image: its index in an OCI layout directory and in
    // skopeo's dir: layout.
    let multi = at("multi.oci.tar");
    std::fs::write(&multi, gunzip(&fixture("buildah-manifest-list.oci"))).unwrap();
    for (kind, dest) in [
        (
            "multi-layout",
            format!("oci:{}:skopeo/multi", at("multi-layout")),
        ),
        ("multi-dir", format!("dir:{}", at("multi-dir"))),
    ] {
        run_tool(
            "skopeo",
            &[
                "copy",
                "-q",
                "--all",
                &format!("oci-archive:{multi}"),
                &dest,
            ],
        );
        directories.push(at(kind));
    }

    let mut all = Vec::new();
    for path in archives.iter().chain(&directories) {
        all.extend(env.load(Path::new(path)));
    }
    check_listed(&env, &all);
    if can_run() {
        for (n, image) in all.iter().enumerate() {
            check_runs(&env, image, n);
        }
    }
}

#[test]
fn umoci_layouts_load() {
    if !tool("umoci") {
        return;
    }
    let env = Env::new();
    let layout = env.path("umoci").to_string_lossy().into_owned();
    let hello = hello_from(&env).to_string_lossy().into_owned();
    let image = |tag: &str| format!("{layout}:{tag}");
    run_tool("umoci", &["init", "--layout", &layout]);
    // Zero layers, no history.
    run_tool("umoci", &["new", "--image", &image("zero")]);
    run_tool(
        "umoci",
        &[
            "config",
            "--no-history",
            "--image",
            &image("zero"),
            "--config.cmd",
            "/hello",
            "--config.label",
            "org.example=umoci",
            "--manifest.annotation",
            "org.example.note=annotated",
        ],
    );
    // One layer written by `umoci insert` (which ends its tar right after
    // the file's data), without and with history.
    let zero = image("zero");
    for (tag, history) in [("one", false), ("history", true)] {
        let mut args = vec!["insert"];
        if !history {
            args.push("--no-history");
        }
        args.extend(["--image", &zero, "--tag", tag, &hello, "/hello"]);
        run_tool("umoci", &args);
    }
    // umoci's index.json names images by tag only: they load untagged.
    let ids = env.load(Path::new(&layout));
    assert_eq!(ids.len(), 3, "{ids:?}");
    check_listed(&env, &ids);
    let zero_id = ids
        .iter()
        .find(|id| {
            env.inspect(id)["RootFS"]["Layers"]
                .as_array()
                .is_none_or(Vec::is_empty)
        })
        .expect("the zero-layer image");
    assert_eq!(
        env.inspect(zero_id)["Config"]["Labels"]["org.example"],
        "umoci"
    );
    if can_run() {
        for (n, id) in ids.iter().enumerate() {
            check_runs(&env, id, n);
        }
    }
}

#[test]
fn pushed_foreign_images_pull() {
    if !tool("docker-registry") || !tool("skopeo") {
        return;
    }
    let registry = LocalRegistry::start().expect("docker-registry");
    let env = Env::new();
    // skopeo's own credentials file, so that it reads none of the user's.
    let auth = env.path("auth.json");
    std::fs::write(&auth, r#"{"auths":{}}"#).unwrap();
    let auth = format!("--dest-authfile={}", auth.display());
    let mut pulled = Vec::new();
    let mut push = |src: String, name: &str, extra: &[&str]| {
        let dest = format!("{}/foreign/{name}:1", registry.host);
        let mut args = vec!["copy", "-q", "--dest-tls-verify=false", auth.as_str()];
        args.extend(extra);
        let target = format!("docker://{dest}");
        args.extend([src.as_str(), target.as_str()]);
        run_tool("skopeo", &args);
        pulled.push(dest);
    };
    for path in fixtures() {
        let name = path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .replace(".tar.gz", "");
        // Multi-image archives push their first image only.
        let tar = env.path(&format!("{name}.tar"));
        std::fs::write(&tar, gunzip(&path)).unwrap();
        let transport = if name.ends_with(".oci") {
            "oci-archive"
        } else {
            "docker-archive"
        };
        if name == "buildah-manifest-list.oci" {
            // Pushed as is (an OCI index) and as a Docker manifest list.
            let src = format!("{transport}:{}", tar.display());
            push(src.clone(), "multi-oci", &["--all"]);
            push(src, "multi-v2s2", &["--all", "--format", "v2s2"]);
            continue;
        }
        if name.starts_with("docker-save-several") || name.starts_with("podman-save-several") {
            continue;
        }
        push(
            format!("{transport}:{}", tar.display()),
            &name.replace('.', "-"),
            &[],
        );
    }
    for image in &pulled {
        env.ok(&["pull", "-q", image]);
    }
    check_listed(&env, &pulled);
    // And they push again, as they are.
    for (n, image) in pulled.iter().enumerate() {
        let again = format!("{}/again/image{n}:1", registry.host);
        env.ok(&["tag", image, &again]);
        env.ok(&["push", "-q", &again]);
        let other = Env::new();
        other.ok(&["pull", "-q", &again]);
        assert_eq!(
            other.inspect(&again)["Id"],
            env.inspect(image)["Id"],
            "{image}"
        );
    }
    assert_eq!(
        env.inspect(&format!("{}/foreign/multi-v2s2:1", registry.host))["Architecture"],
        kiln_oci_host_arch()
    );
    if can_run() {
        for (n, image) in pulled.iter().enumerate() {
            check_runs(&env, image, n);
        }
    }
}
