//! The projects in `examples/`, built with the real binary, real overlayfs
//! and the OCI runtime under test on a busybox image made inside the test from Debian's
//! busybox-static (every applet, as `scripts/example.sh` makes it).
//!
//! Needs root, the runtime under test and /bin/busybox; each test prints why and returns when
//! they are missing. `hello_c` also needs a `debian:bookworm-slim` image in
//! the store named by `KILN_EXAMPLES_BASE_ROOT` (default `/var/lib/kiln`;
//! `examples/hello-c/make-base.sh` makes one) and a reachable Debian mirror.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use assert_cmd::Command;

mod common;
use common::test_runtime;

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join("examples")
}

struct Env {
    dir: tempfile::TempDir,
}

fn header(kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h
}

impl Env {
    /// A store with `busybox:latest` (also tagged `busybox:1.36`):
    /// /bin/busybox with every applet, /etc/passwd and /etc/group,
    /// /tmp 1777, /root 0700, Docker Hub's PATH and `CMD ["sh"]`.
    fn new() -> Env {
        let env = Env {
            dir: tempfile::tempdir().unwrap(),
        };
        let mut b = tar::Builder::new(Vec::new());
        for (dir, mode) in [
            ("bin/", 0o755),
            ("etc/", 0o755),
            ("tmp/", 0o1777),
            ("root/", 0o700),
        ] {
            let mut h = header(tar::EntryType::Directory, 0, mode);
            b.append_data(&mut h, dir, std::io::empty()).unwrap();
        }
        let busybox = std::fs::read("/bin/busybox").unwrap();
        let mut h = header(tar::EntryType::Regular, busybox.len() as u64, 0o755);
        b.append_data(&mut h, "bin/busybox", &busybox[..]).unwrap();
        let list = std::process::Command::new("/bin/busybox")
            .arg("--list")
            .output()
            .unwrap();
        for applet in String::from_utf8_lossy(&list.stdout).split_whitespace() {
            if applet != "busybox" {
                let mut h = header(tar::EntryType::Symlink, 0, 0o777);
                b.append_link(&mut h, format!("bin/{applet}"), "busybox")
                    .unwrap();
            }
        }
        let passwd =
            b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
        let group = b"root:x:0:\nnogroup:x:65534:\n";
        for (path, data) in [("etc/passwd", &passwd[..]), ("etc/group", &group[..])] {
            let mut h = header(tar::EntryType::Regular, data.len() as u64, 0o644);
            b.append_data(&mut h, path, data).unwrap();
        }
        let tar = env.path("busybox.tar");
        std::fs::write(&tar, b.into_inner().unwrap()).unwrap();
        env.ok(&[
            "import",
            "-c",
            "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "-c",
            "CMD [\"sh\"]",
            tar.to_str().unwrap(),
            "busybox:latest",
        ]);
        env.ok(&["tag", "busybox:latest", "busybox:1.36"]);
        env
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn kiln(&self) -> Command {
        let mut c = Command::cargo_bin("kiln").unwrap();
        c.env("KILN_RUNTIME", test_runtime())
            .env("KILN_ROOT", self.path("store"))
            .env_remove("SOURCE_DATE_EPOCH")
            .timeout(Duration::from_secs(900));
        c
    }

    /// Runs kiln, which must succeed; returns stdout and stderr.
    fn ok(&self, args: &[&str]) -> (String, String) {
        let out = self.kiln().args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "kiln {args:?} failed:\n{stderr}");
        (String::from_utf8(out.stdout).unwrap(), stderr)
    }

    /// `kiln build --progress plain ARGS…`; returns the progress output.
    fn build(&self, args: &[&str]) -> String {
        let mut a = vec!["build", "--progress", "plain"];
        a.extend_from_slice(args);
        let (out, err) = self.ok(&a);
        out + &err
    }

    fn id(&self, image: &str) -> String {
        self.ok(&["inspect", "-f", "{{.Id}}", image])
            .0
            .trim()
            .to_string()
    }

    fn config(&self, image: &str) -> serde_json::Value {
        let (out, _) = self.ok(&["inspect", image]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v[0]["Config"].clone()
    }

    /// The image's files, exported with `-o type=local` from a (cached)
    /// build of the same context.
    fn export(&self, name: &str, args: &[&str]) -> PathBuf {
        let dest = self.path(name);
        let out = format!("type=local,dest={}", dest.display());
        let mut a = vec!["build", "-q", "-o", &out];
        a.extend_from_slice(args);
        self.ok(&a);
        dest
    }
}

/// The steps of a plain progress log: step number → (title, status lines).
fn steps(log: &str) -> BTreeMap<String, (String, Vec<String>)> {
    let mut steps: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
    for line in log.lines() {
        let Some(rest) = line.strip_prefix('#') else {
            continue;
        };
        let Some((num, text)) = rest.split_once(' ') else {
            continue;
        };
        let entry = steps.entry(num.to_string()).or_default();
        if text.starts_with('[') {
            entry.0 = text.to_string();
        } else {
            entry.1.push(text.to_string());
        }
    }
    steps
}

/// Titles of the build steps (not `[internal]` ones) that did not come from
/// the cache.
fn uncached(log: &str) -> Vec<String> {
    steps(log)
        .into_values()
        .filter(|(title, _)| !title.starts_with("[internal]"))
        .filter(|(_, status)| !status.iter().any(|s| s == "CACHED"))
        .map(|(title, _)| title)
        .collect()
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let t = to.join(e.file_name());
        let ft = e.file_type().unwrap();
        if ft.is_dir() {
            copy_tree(&e.path(), &t);
        } else if ft.is_file() {
            std::fs::copy(e.path(), &t).unwrap();
        }
    }
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
#[cfg_attr(not(kiln_containers), ignore = "needs root and /bin/busybox")]
fn multistage() {
    let env = Env::new();
    let ctx = examples().join("multistage");
    let ctx = ctx.to_str().unwrap();
    let first = env.build(&["-t", "hello:latest", ctx]);
    assert!(
        first.contains("naming to docker.io/library/hello:latest done"),
        "{first}"
    );

    let cfg = env.config("hello:latest");
    assert_eq!(
        cfg["Entrypoint"],
        serde_json::json!(["/usr/local/bin/hello"])
    );
    assert_eq!(cfg["User"], "65534:65534");
    assert_eq!(cfg["Labels"]["org.opencontainers.image.version"], "1.0");
    let (out, _) = env.ok(&["run", "--rm", "hello:latest"]);
    assert_eq!(out, "hello from kiln\n");

    let fs = env.export("fs", &[ctx]);
    let bin = fs.join("usr/local/bin/hello");
    assert_eq!(mode(&bin), 0o755);
    assert_eq!(
        std::fs::read_to_string(&bin).unwrap(),
        std::fs::read_to_string(examples().join("multistage/hello.sh")).unwrap()
    );
    assert!(
        !fs.join("src").exists(),
        "the builder's sources leaked into the runtime image"
    );
    assert!(!fs.join("out").exists());

    // The tests stage runs only when asked for.
    let tests = env.build(&["--target", "tests", ctx]);
    assert!(tests.contains("[tests"), "{tests}");

    // Nothing changed: every step comes from the cache, same image.
    let before = env.id("hello:latest");
    let second = env.build(&["-t", "hello:latest", ctx]);
    assert_eq!(uncached(&second), Vec::<String>::new(), "{second}");
    assert_eq!(env.id("hello:latest"), before);

    // Another VERSION changes the label and rebuilds the builder's RUN.
    let v2 = env.build(&["-t", "hello:2", "--build-arg", "VERSION=2.0", ctx]);
    assert!(uncached(&v2).iter().any(|t| t.contains("RUN")), "{v2}");
    assert_eq!(
        env.config("hello:2")["Labels"]["org.opencontainers.image.version"],
        "2.0"
    );
}

#[test]
#[cfg_attr(not(kiln_containers), ignore = "needs root and /bin/busybox")]
fn monorepo() {
    let env = Env::new();
    // Work on a copy: generate.sh writes the 2,000 generated files there.
    let ctx = env.path("monorepo");
    copy_tree(&examples().join("monorepo"), &ctx);
    let status = std::process::Command::new("sh")
        .arg(ctx.join("generate.sh"))
        .arg(&ctx)
        .status()
        .unwrap();
    assert!(status.success());
    let generated = walk(&ctx).iter().filter(|p| p.contains("/gen/")).count();
    assert_eq!(generated, 2000);
    let ctx_s = ctx.to_str().unwrap();

    let first = env.build(&["-t", "monorepo:1", ctx_s]);
    assert!(
        first.contains("naming to docker.io/library/monorepo:1 done"),
        "{first}"
    );
    let cfg = env.config("monorepo:1");
    assert_eq!(cfg["Entrypoint"], serde_json::json!(["/usr/local/bin/run"]));
    assert_eq!(cfg["Cmd"], serde_json::json!(["api"]));
    assert_eq!(cfg["User"], "65534:65534");
    assert_eq!(cfg["WorkingDir"], "/srv");
    assert_eq!(
        cfg["Labels"]["org.opencontainers.image.title"],
        "monorepo example"
    );

    for (args, want) in [
        (vec![], "[api] listening on :8080 with 600 handlers\n"),
        (
            vec!["worker"],
            "[worker] processing queue default with 600 jobs\n",
        ),
        (vec!["web"], "[web] serving 2 static files with 600 pages\n"),
    ] {
        let mut a = vec!["run", "--rm", "monorepo:1"];
        a.extend(args);
        assert_eq!(env.ok(&a).0, want);
    }

    // The runtime image holds the built services and no sources.
    let fs = env.export("final", &[ctx_s]);
    for svc in ["api", "worker", "web"] {
        let manifest = std::fs::read_to_string(fs.join(format!("srv/{svc}/MANIFEST"))).unwrap();
        assert!(manifest.contains(&format!("service={svc}\n")), "{manifest}");
        assert!(manifest.contains("modules=600\n"), "{manifest}");
        assert!(manifest.contains("libs=200\n"), "{manifest}");
        assert_eq!(mode(&fs.join(format!("srv/{svc}/bin/{svc}"))), 0o755);
        assert!(fs.join(format!("srv/{svc}/README.md")).exists());
    }
    assert!(fs.join("srv/web/static/index.html").exists());
    assert!(!fs.join("app").exists());

    // .dockerignore: the api stage's copy of its service has the sources
    // and the README, not the logs, node_modules or caches.
    let api = env.export("api", &["--target", "api", ctx_s]);
    let svc = api.join("app/services/api");
    assert_eq!(walk(&svc.join("src/gen")).len(), 600);
    assert!(svc.join("README.md").exists());
    assert!(svc.join("src/main.sh").exists());
    for gone in ["debug.log", "node_modules", ".cache"] {
        assert!(!svc.join(gone).exists(), "{gone} was sent in the context");
    }
    assert!(!api.join("app/docs").exists());
    assert!(!api.join("app/services/web").exists());
    assert_eq!(walk(&api.join("app/shared/lib/gen")).len(), 200);

    // Nothing changed: fully cached, same image.
    let before = env.id("monorepo:1");
    let second = env.build(&["-t", "monorepo:1", ctx_s]);
    assert_eq!(uncached(&second), Vec::<String>::new(), "{second}");
    assert_eq!(env.id("monorepo:1"), before);

    // One web file changed: only the web stage and the final copy rerun.
    std::fs::write(ctx.join("services/web/static/about.html"), "<p>about</p>\n").unwrap();
    let third = env.build(&["-t", "monorepo:2", ctx_s]);
    let redone = uncached(&third);
    assert!(
        redone
            .iter()
            .any(|t| t.starts_with("[web") && t.contains("RUN")),
        "{third}"
    );
    assert!(
        !redone
            .iter()
            .any(|t| t.starts_with("[api") || t.starts_with("[worker") || t.starts_with("[base")),
        "{third}"
    );
    assert_ne!(env.id("monorepo:2"), before);
    assert_eq!(
        env.ok(&["run", "--rm", "monorepo:2", "web"]).0,
        "[web] serving 3 static files with 600 pages\n"
    );
}

/// Every regular file under `dir`, as paths relative to it.
fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd {
            let e = e.unwrap();
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                out.push(
                    e.path()
                        .strip_prefix(dir)
                        .unwrap()
                        .to_string_lossy()
                        .replace('\\', "/")
                        .to_string(),
                );
            }
        }
    }
    out.iter_mut().for_each(|p| p.insert(0, '/'));
    out
}

/// Whether a Debian mirror answers (apt in the hello-c build needs one).
fn mirror_reachable() -> bool {
    use std::net::ToSocketAddrs;
    let host = [
        "/etc/apt/sources.list.d/debian.sources",
        "/etc/apt/sources.list",
    ]
    .iter()
    .filter_map(|f| std::fs::read_to_string(f).ok())
    .flat_map(|s| {
        s.lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .filter_map(|l| {
                l.split_whitespace()
                    .find(|w| w.starts_with("http://") || w.starts_with("https://"))
                    .map(str::to_string)
            })
            .collect::<Vec<_>>()
    })
    .next()
    .unwrap_or_else(|| "http://deb.debian.org/debian".into());
    let https = host.starts_with("https://");
    let authority = host
        .split("://")
        .nth(1)
        .unwrap_or_default()
        .split('/')
        .next()
        .unwrap_or_default()
        .to_string();
    let addr = if authority.contains(':') {
        authority
    } else {
        format!("{authority}:{}", if https { 443 } else { 80 })
    };
    addr.to_socket_addrs()
        .ok()
        .into_iter()
        .flatten()
        .any(|a| std::net::TcpStream::connect_timeout(&a, Duration::from_secs(5)).is_ok())
}

#[test]
#[cfg_attr(not(kiln_containers), ignore = "needs root and /bin/busybox")]
fn hello_c() {
    let source = std::env::var_os("KILN_EXAMPLES_BASE_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/kiln"));
    let has_debian = Command::cargo_bin("kiln")
        .unwrap()
        .env("KILN_ROOT", &source)
        .args(["inspect", "-f", "{{.Id}}", "debian:bookworm-slim"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_debian {
        eprintln!(
            "skipping: no debian:bookworm-slim image in {} (examples/hello-c/make-base.sh makes one; \
             KILN_EXAMPLES_BASE_ROOT names another store)",
            source.display()
        );
        return;
    }
    if !mirror_reachable() {
        eprintln!("skipping: no Debian mirror reachable for apt-get in the build");
        return;
    }
    let env = Env::new();
    let archive = env.path("debian.tar");
    let saved = Command::cargo_bin("kiln")
        .unwrap()
        .env("KILN_ROOT", &source)
        .args([
            "save",
            "-o",
            archive.to_str().unwrap(),
            "debian:bookworm-slim",
        ])
        .output()
        .unwrap();
    assert!(
        saved.status.success(),
        "{}",
        String::from_utf8_lossy(&saved.stderr)
    );
    env.ok(&["load", "-q", "-i", archive.to_str().unwrap()]);

    let ctx = examples().join("hello-c");
    let ctx = ctx.to_str().unwrap();
    env.build(&["--network", "host", "-t", "hello-c", ctx]);
    let cfg = env.config("hello-c");
    assert_eq!(cfg["Entrypoint"], serde_json::json!(["/hello"]));
    assert_eq!(env.ok(&["run", "--rm", "hello-c"]).0, "hello, world!\n");
    assert_eq!(
        env.ok(&["run", "--rm", "hello-c", "kiln"]).0,
        "hello, kiln!\n"
    );

    // FROM scratch: the image is the one static binary.
    let fs = env.export("fs", &["--network", "host", ctx]);
    assert_eq!(walk(&fs), vec!["/hello".to_string()]);
    assert_eq!(mode(&fs.join("hello")) & 0o111, 0o111);

    let second = env.build(&["--network", "host", "-t", "hello-c", ctx]);
    assert_eq!(uncached(&second), Vec::<String>::new(), "{second}");
}
