//! `pull`, `push`, `login`, `logout`, `search` and `build`'s base-image
//! pulls, running the real binary against a real `docker-registry`
//! (Debian's distribution build) started on a free 127.0.0.1 port with its
//! storage in a temporary directory. Skipped, with the reason printed, when
//! `docker-registry` is not installed (`scripts/test.sh` installs it).
//!
//! Every command runs with a temporary store (`KILN_ROOT`), Docker config
//! (`DOCKER_CONFIG`) and kiln config (`XDG_CONFIG_HOME`).
//!
//! The token server, the throttling proxy (to kill the registry while a
//! layer is moving) and the test certificates are the library tests'
//! (`registry/tests/common/servers.rs`), included by path.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::Command;

fn have(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()))
}

#[path = "../../registry/tests/common/servers.rs"]
mod servers;

/// A `docker-registry` process, killed when dropped.
struct Registry {
    child: Option<Child>,
    host: String,
    addr: std::net::SocketAddr,
    dir: tempfile::TempDir,
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.kill();
    }
}

/// How to start a registry.
#[derive(Default)]
struct Options<'a> {
    /// htpasswd Basic auth (bcrypt) for (user, password).
    user: Option<(&'a str, &'a str)>,
    /// More configuration (an `auth:` section).
    extra: Option<String>,
    /// Serve HTTPS with (certificate, key).
    tls: Option<(PathBuf, PathBuf)>,
    /// The directory to use (holding files the configuration names).
    dir: Option<tempfile::TempDir>,
}

impl Registry {
    /// Starts a registry; with `user`, protected by htpasswd (bcrypt).
    fn start(user: Option<(&str, &str)>) -> Option<Registry> {
        Registry::start_with(Options {
            user,
            ..Default::default()
        })
    }

    fn start_with(options: Options<'_>) -> Option<Registry> {
        if !have("docker-registry") {
            eprintln!(
                "skipping: docker-registry is not installed (apt-get install docker-registry)"
            );
            return None;
        }
        let dir = options.dir.unwrap_or_else(|| tempfile::tempdir().unwrap());
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let mut config = format!(
            "version: 0.1\n\
             log:\n  level: error\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: 127.0.0.1:{port}\n",
            data.display()
        );
        if let Some((cert, key)) = &options.tls {
            config.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                cert.display(),
                key.display()
            ));
        }
        if let Some((name, password)) = options.user {
            let htpasswd = dir.path().join("htpasswd");
            let hash = bcrypt::hash(password, 4).unwrap();
            std::fs::write(&htpasswd, format!("{name}:{hash}\n")).unwrap();
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: kiln-test\n    path: {}\n",
                htpasswd.display()
            ));
        }
        if let Some(extra) = &options.extra {
            config.push_str(extra);
        }
        std::fs::write(dir.path().join("config.yml"), config).unwrap();
        let mut registry = Registry {
            child: None,
            host: format!("127.0.0.1:{port}"),
            addr: ([127, 0, 0, 1], port).into(),
            dir,
        };
        registry.spawn();
        Some(registry)
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("registry.log"))
            .unwrap();
        let child = Process::new("docker-registry")
            .arg("serve")
            .arg(self.dir.path().join("config.yml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(self.addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "docker-registry did not start: {}",
                std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILLs the process.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same storage.
    fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Whether an upload under way has bytes in the registry's storage.
    fn has_partial_upload(&self) -> bool {
        fn walk(dir: &Path) -> bool {
            std::fs::read_dir(dir)
                .into_iter()
                .flatten()
                .flatten()
                .any(|e| {
                    let p = e.path();
                    match e.metadata() {
                        Ok(m) if m.is_dir() => walk(&p),
                        Ok(m) => {
                            m.len() > 0
                                && p.ends_with("data")
                                && p.components().any(|c| c.as_os_str() == "_uploads")
                        }
                        Err(_) => false,
                    }
                })
        }
        walk(&self.dir.path().join("data"))
    }
}

/// Temporary store, Docker config and kiln config for the commands.
struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        let env = Env {
            dir: tempfile::tempdir().unwrap(),
        };
        std::fs::create_dir_all(env.path("config/kiln")).unwrap();
        env
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// The kiln config file (`$XDG_CONFIG_HOME/kiln/config.toml`).
    fn set_config(&self, text: &str) {
        std::fs::write(self.path("config/kiln/config.toml"), text).unwrap();
    }

    fn kiln_in(&self, store: &str) -> Command {
        let mut c = Command::cargo_bin("kiln").unwrap();
        c.env("KILN_ROOT", self.path(store))
            .env("DOCKER_CONFIG", self.path("docker"))
            .env("XDG_CONFIG_HOME", self.path("config"))
            .env("HOME", self.dir.path())
            .env("SOURCE_DATE_EPOCH", "0")
            .env_remove("KILN_LOG");
        c
    }

    /// The command as a plain process, to run in the background.
    fn process_in(&self, store: &str, args: &[&str]) -> Process {
        let mut c = Process::new(env!("CARGO_BIN_EXE_kiln"));
        c.env("KILN_ROOT", self.path(store))
            .env("DOCKER_CONFIG", self.path("docker"))
            .env("XDG_CONFIG_HOME", self.path("config"))
            .env("HOME", self.dir.path())
            .env_remove("KILN_LOG")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    fn run_in(&self, store: &str, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
        let mut c = self.kiln_in(store);
        c.args(args);
        if let Some(input) = stdin {
            c.write_stdin(input.to_owned());
        }
        let out = c.output().unwrap();
        (
            out.status.success(),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    }

    /// Runs a command in store `store` that must succeed; returns stdout.
    fn ok_in(&self, store: &str, args: &[&str]) -> String {
        let (ok, stdout, stderr) = self.run_in(store, args, None);
        assert!(ok, "kiln {args:?} failed:\n{stdout}{stderr}");
        stdout
    }

    fn ok(&self, args: &[&str]) -> String {
        self.ok_in("store", args)
    }

    /// Runs a command that must fail; returns stderr.
    fn fails(&self, args: &[&str]) -> String {
        let (ok, stdout, stderr) = self.run_in("store", args, None);
        assert!(!ok, "kiln {args:?} should fail:\n{stdout}");
        stderr
    }

    /// Imports a small root filesystem as `tag`; returns the image id.
    fn import(&self, tag: &str) -> String {
        let tar = self.path("rootfs.tar");
        std::fs::write(&tar, rootfs()).unwrap();
        self.ok(&["import", tar.to_str().unwrap(), tag])
            .trim()
            .to_owned()
    }

    fn image_id(&self, store: &str, name: &str) -> String {
        self.ok_in(store, &["inspect", "-f", "{{.Id}}", name])
            .trim()
            .to_owned()
    }
}

/// A tarball holding one file of `len` bytes that do not compress.
fn big_rootfs(len: usize) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let data: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_cksum();
    b.append_data(&mut h, "big.bin", data.as_slice()).unwrap();
    b.into_inner().unwrap()
}

/// The command's error (after the retries' warnings) names the registry.
fn assert_clear_error(stderr: &str, host: &str) {
    let error = stderr
        .lines()
        .find(|l| l.starts_with("Error: "))
        .unwrap_or_else(|| panic!("no error line in:\n{stderr}"));
    assert!(
        error.starts_with(&format!("Error: request to {host} failed"))
            || error.starts_with(&format!("Error: connection to {host} refused")),
        "{stderr}"
    );
}

/// Waits (up to a minute) until `done`.
fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A reproducible tarball: a few files, one big enough to stream.
fn rootfs() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let files: [(&str, Vec<u8>); 3] = [
        ("etc/hostname", b"kiln\n".to_vec()),
        (
            "bin/tool",
            (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect(),
        ),
        ("README", b"a test image\n".to_vec()),
    ];
    for (path, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_cksum();
        b.append_data(&mut h, path, data.as_slice()).unwrap();
    }
    b.into_inner().unwrap()
}

/// Checks that `lines` contains lines matching each of `patterns` in order
/// (other lines may come between).
fn assert_lines_in_order(text: &str, patterns: &[&str]) {
    let mut lines = text.lines();
    for p in patterns {
        let re = regex::Regex::new(&format!("^{p}$")).unwrap();
        assert!(
            lines.any(|l| re.is_match(l)),
            "no line matching {p:?} (in order) in:\n{text}"
        );
    }
}

const LAYER: &str = "[0-9a-f]{12}";

#[test]
#[cfg_attr(not(kiln_registry), ignore = "needs docker-registry")]
fn push_pull_search_round_trip() {
    let Some(registry) = Registry::start(None) else {
        return;
    };
    let host = &registry.host;
    let env = Env::new();
    let app = format!("{host}/app");
    let tag1 = format!("{app}:1");
    let id = env.import(&tag1);

    // Push: every layer prepared then pushed; Docker's closing line.
    let out = env.ok(&["push", &tag1]);
    let digest_re = regex::Regex::new(r"(?m)^1: digest: (sha256:[0-9a-f]{64}) size: \d+$").unwrap();
    let digest = digest_re
        .captures(&out)
        .unwrap_or_else(|| panic!("no digest line in:\n{out}"))[1]
        .to_owned();
    assert_lines_in_order(
        &out,
        &[
            &regex::escape(&format!("The push refers to repository [{app}]")),
            &format!("{LAYER}: Preparing"),
            &format!("{LAYER}: Pushed"),
            "1: digest: sha256:[0-9a-f]{64} size: [0-9]+",
        ],
    );
    assert!(
        !out.contains("Pushing"),
        "no progress off a terminal:\n{out}"
    );

    // Pull after removing the image: the same image comes back.
    env.ok(&["rmi", &tag1]);
    let out = env.ok(&["pull", &tag1]);
    assert_lines_in_order(
        &out,
        &[
            "1: Pulling from app",
            &format!("{LAYER}: Pulling fs layer"),
            &format!("{LAYER}: Verifying Checksum"),
            &format!("{LAYER}: Download complete"),
            &format!("{LAYER}: Pull complete"),
            &regex::escape(&format!("Digest: {digest}")),
            &regex::escape(&format!("Status: Downloaded newer image for {tag1}")),
            &regex::escape(&tag1),
        ],
    );
    assert!(!out.contains("Using default tag"), "{out}");
    assert_eq!(env.image_id("store", &tag1), id);

    // Again: nothing to do.
    let out = env.ok(&["pull", &tag1]);
    assert_lines_in_order(
        &out,
        &[
            &format!("{LAYER}: Already exists"),
            &regex::escape(&format!("Status: Image is up to date for {tag1}")),
        ],
    );
    assert!(!out.contains("Pull complete"), "{out}");

    // Push again: the registry has every layer.
    let out = env.ok(&["push", &tag1]);
    assert_lines_in_order(
        &out,
        &[
            &format!("{LAYER}: Layer already exists"),
            &format!(
                "{}\\d+",
                regex::escape(&format!("1: digest: {digest} size: "))
            ),
        ],
    );

    // Another repository of the same registry: the layer is mounted.
    let other = format!("{host}/other:x");
    env.ok(&["tag", &tag1, &other]);
    let out = env.ok(&["push", &other]);
    assert_lines_in_order(
        &out,
        &[&format!("{LAYER}: (Mounted from app|Layer already exists)")],
    );

    // Quiet: just the reference.
    let out = env.ok_in("quiet", &["pull", "-q", &tag1]);
    assert_eq!(out, format!("{tag1}\n"));
    // Default tag.
    env.ok(&["tag", &tag1, &app]);
    env.ok(&["push", "-q", &app]);
    let out = env.ok_in("default", &["pull", &app]);
    assert!(
        out.starts_with("Using default tag: latest\nlatest: Pulling from app\n"),
        "{out}"
    );
    assert!(out.ends_with(&format!("{app}:latest\n")), "{out}");

    // All tags.
    env.ok(&["tag", &tag1, &format!("{app}:2")]);
    let out = env.ok(&["push", "-a", &app]);
    for t in ["1", "2", "latest"] {
        assert!(
            out.contains(&format!("\n{t}: digest: {digest} size: ")),
            "{out}"
        );
    }
    let out = env.ok_in("all", &["pull", "--all-tags", &app]);
    assert_lines_in_order(
        &out,
        &[
            "1: Pulling from app",
            "2: Pulling from app",
            "latest: Pulling from app",
            &regex::escape(&format!("Status: Downloaded newer image for {app}")),
            &regex::escape(&app),
        ],
    );
    let listed = env.ok_in("all", &["images", "--format", "{{.Tag}}"]);
    let mut tags: Vec<&str> = listed.lines().collect();
    tags.sort();
    assert_eq!(tags, ["1", "2", "latest"]);
    let stderr = env.fails(&["pull", "-a", &tag1]);
    assert_eq!(stderr, "Error: tag can't be used with --all-tags/-a\n");

    // A digest reference.
    let by_digest = format!("{app}@{digest}");
    let out = env.ok_in("digest", &["pull", &by_digest]);
    assert_lines_in_order(
        &out,
        &[
            &regex::escape(&format!("{digest}: Pulling from app")),
            &regex::escape(&format!("Status: Downloaded newer image for {by_digest}")),
            &regex::escape(&by_digest),
        ],
    );

    // Errors in Docker's words.
    let stderr = env.fails(&["pull", &format!("{app}:nope")]);
    assert_eq!(
        stderr,
        format!("Error: manifest for {app}:nope not found: manifest unknown\n")
    );
    let stderr = env.fails(&["push", &format!("{app}:missing")]);
    assert_eq!(
        stderr,
        format!("Error: An image does not exist locally with the tag: {app}:missing\n")
    );
    let stderr = env.fails(&["pull", "127.0.0.1:1/app:1"]);
    assert!(
        stderr.starts_with("Error: connection to 127.0.0.1:1 refused"),
        "{stderr}"
    );

    // Search: the catalog, filtered by the term.
    let out = env.ok(&["search", &format!("{host}/ap")]);
    assert_eq!(
        out.lines()
            .next()
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["NAME", "DESCRIPTION", "STARS", "OFFICIAL"]
    );
    let names: Vec<&str> = out.lines().skip(1).map(|l| l.trim_end()).collect();
    assert_eq!(names, [app.as_str()]);
    let out = env.ok(&["search", "--format", "{{.Name}}", &format!("{host}/")]);
    assert_eq!(out, format!("{app}\n{host}/other\n"));
    let out = env.ok(&[
        "search",
        "--limit",
        "1",
        "--format",
        "{{.Name}}",
        &format!("{host}/"),
    ]);
    assert_eq!(out, format!("{app}\n"));
    let stderr = env.fails(&["search", "--limit", "0", "x"]);
    assert_eq!(stderr, "Error: limit 0 is outside the range of [1, 100]\n");

    // skopeo reads what kiln pushed.
    if have("skopeo") {
        let out = Process::new("skopeo")
            .args(["inspect", "--tls-verify=false", &format!("docker://{tag1}")])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["Digest"], digest.as_str());
        assert_eq!(v["Layers"].as_array().unwrap().len(), 1);
    } else {
        eprintln!("skopeo is not installed: not checking the pushed image with it");
    }

    // podman pulls what kiln pushed (same manifest digest).
    if have("podman") {
        let podman = |args: &[&str]| {
            Process::new("podman")
                .arg("--root")
                .arg(env.dir.path().join("podman-root"))
                .arg("--runroot")
                .arg(env.dir.path().join("podman-run"))
                .args(["--storage-driver", "vfs"])
                .args(args)
                .output()
                .unwrap()
        };
        let out = podman(&["pull", "--tls-verify=false", &tag1]);
        assert!(
            out.status.success(),
            "podman pull: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = podman(&["images", "--digests", "--format", "{{.Digest}}"]);
        assert!(
            String::from_utf8_lossy(&out.stdout).contains(digest.as_str()),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    } else {
        eprintln!("podman is not installed: not pulling the pushed image with it");
    }
}

#[test]
#[cfg_attr(not(kiln_registry), ignore = "needs docker-registry")]
fn mirrors_and_config_file() {
    let Some(registry) = Registry::start(None) else {
        return;
    };
    let host = &registry.host;
    let env = Env::new();
    // The mirror holds `library/hubimg`, which Docker Hub references
    // resolve to; with the mirror configured no request leaves the host.
    let mirrored = format!("{host}/library/hubimg:1");
    let id = env.import(&mirrored);
    env.ok(&["push", "-q", &mirrored]);
    env.set_config(&format!(
        "registry-mirrors = [\"http://{host}\"]\nmax-concurrent-downloads = 1\nmax-concurrent-uploads = 1\n"
    ));
    let out = env.ok_in("hub", &["pull", "hubimg:1"]);
    assert_lines_in_order(
        &out,
        &[
            "1: Pulling from library/hubimg",
            &format!("{LAYER}: Pull complete"),
            "Status: Downloaded newer image for hubimg:1",
            "docker.io/library/hubimg:1",
        ],
    );
    assert_eq!(env.image_id("hub", "hubimg:1"), id);

    // A broken file is reported with its path.
    env.set_config("max-concurrent-downloads = 0\n");
    let (ok, _, stderr) = env.run_in("hub", &["pull", "hubimg:1"], None);
    assert!(!ok);
    assert!(stderr.contains("invalid configuration file"), "{stderr}");
    assert!(stderr.contains("config/kiln/config.toml"), "{stderr}");
    assert!(
        stderr.contains("max-concurrent-downloads must be at least 1"),
        "{stderr}"
    );
}

#[test]
#[cfg_attr(not(kiln_registry), ignore = "needs docker-registry")]
fn login_and_logout_with_htpasswd() {
    let Some(registry) = Registry::start(Some(("kiln", "s3cret"))) else {
        return;
    };
    let host = &registry.host;
    let env = Env::new();
    let tag = format!("{host}/private:1");
    env.import(&tag);
    let config_json = env.path("docker/config.json");

    // No credentials: refused, with a hint.
    let stderr = env.fails(&["push", &tag]);
    assert!(
        stderr.starts_with("Error: unauthorized: authentication required"),
        "{stderr}"
    );
    assert!(
        stderr.ends_with(&format!("\nhint: kiln login {host}\n")),
        "{stderr}"
    );

    // Wrong password.
    let (ok, _, stderr) = env.run_in(
        "store",
        &["login", "-u", "kiln", "--password-stdin", host],
        Some("nope\n"),
    );
    assert!(!ok);
    assert_eq!(
        stderr,
        format!("Error: login to {host} failed: unauthorized: incorrect username or password\n")
    );
    assert!(!config_json.exists());

    // Not a terminal, nothing given.
    let (ok, _, stderr) = env.run_in("store", &["login", host], Some(""));
    assert!(!ok);
    assert_eq!(
        stderr,
        "Error: Cannot perform an interactive login from a non TTY device\n"
    );
    let stderr = env.fails(&["login", "-p", "x", "--password-stdin", host]);
    assert!(
        stderr.contains("--password and --password-stdin are mutually exclusive"),
        "{stderr}"
    );
    let stderr = env.fails(&["login", "--password-stdin", host]);
    assert!(
        stderr.contains("Must provide --username with --password-stdin"),
        "{stderr}"
    );

    // The right one, from stdin.
    let (ok, stdout, stderr) = env.run_in(
        "store",
        &["login", "-u", "kiln", "--password-stdin", host],
        Some("s3cret\n"),
    );
    assert!(ok, "{stderr}");
    assert_eq!(stdout, "Login Succeeded\n");
    assert!(
        stderr.contains("WARNING! Your credentials are stored unencrypted"),
        "{stderr}"
    );
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config_json).unwrap()).unwrap();
    assert!(saved["auths"][host.as_str()]["auth"].is_string(), "{saved}");
    assert!(!Path::new(&config_json).to_string_lossy().is_empty());

    // Stored credentials are used.
    let out = env.ok(&["push", &tag]);
    assert!(out.contains("1: digest: sha256:"), "{out}");
    let (ok, stdout, _) = env.run_in("store", &["login", host], Some(""));
    assert!(ok);
    assert_eq!(
        stdout,
        "Authenticating with existing credentials... [Username: kiln]\nLogin Succeeded\n"
    );

    // -p works, with Docker's warning.
    let (ok, stdout, stderr) = env.run_in(
        "store",
        &["login", "-u", "kiln", "-p", "s3cret", host],
        None,
    );
    assert!(ok, "{stderr}");
    assert_eq!(stdout, "Login Succeeded\n");
    assert!(
        stderr.starts_with(
            "WARNING! Using --password via the CLI is insecure. Use --password-stdin.\n"
        ),
        "{stderr}"
    );

    // Logout.
    let out = env.ok(&["logout", host]);
    assert_eq!(out, format!("Removing login credentials for {host}\n"));
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config_json).unwrap()).unwrap();
    assert!(saved["auths"].get(host.as_str()).is_none(), "{saved}");
    let out = env.ok(&["logout", host]);
    assert_eq!(out, format!("Not logged in to {host}\n"));
    let out = env.ok(&["logout"]);
    assert_eq!(out, "Not logged in to https://index.docker.io/v1/\n");
    env.fails(&["pull", &tag]);
}

#[test]
#[cfg_attr(not(kiln_registry), ignore = "needs docker-registry")]
fn build_pulls_a_base_image_from_the_registry() {
    let Some(registry) = Registry::start(None) else {
        return;
    };
    let host = &registry.host;
    let env = Env::new();
    let base = format!("{host}/base:1");
    let id = env.import(&base);
    env.ok(&["push", "-q", &base]);

    // A fresh store knows nothing of the base.
    let ctx = env.path("ctx");
    std::fs::create_dir(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {base}\nCOPY a.txt /a.txt\n"),
    )
    .unwrap();
    std::fs::File::create(ctx.join("a.txt"))
        .unwrap()
        .write_all(b"hello\n")
        .unwrap();
    let (ok, stdout, stderr) = env.run_in(
        "fresh",
        &[
            "build",
            "--progress",
            "plain",
            "-t",
            "built:1",
            ctx.to_str().unwrap(),
        ],
        None,
    );
    assert!(ok, "build failed:\n{stdout}{stderr}");
    assert_eq!(env.image_id("fresh", &base), id);
    let history = env.ok_in(
        "fresh",
        &["inspect", "-f", "{{len .RootFS.Layers}}", "built:1"],
    );
    assert_eq!(history.trim(), "2");

    // --push: built, stored and uploaded; another store pulls the same image.
    let app = format!("{host}/app:1");
    let (ok, stdout, stderr) = env.run_in(
        "fresh",
        &[
            "build",
            "--progress",
            "plain",
            "--push",
            "-t",
            &app,
            ctx.to_str().unwrap(),
        ],
        None,
    );
    assert!(ok, "build --push failed:\n{stdout}{stderr}");
    assert!(
        stderr.contains(&format!("pushing manifest for {app}@sha256:")),
        "{stderr}"
    );
    let built = env.image_id("fresh", &app);
    env.ok_in("other", &["pull", "-q", &app]);
    assert_eq!(env.image_id("other", &app), built);

    // -o type=registry,name=…: the name comes from the output.
    let named = format!("{host}/app:named");
    let out = env.ok_in(
        "fresh",
        &[
            "build",
            "-q",
            "-o",
            &format!("type=registry,name={named}"),
            ctx.to_str().unwrap(),
        ],
    );
    assert_eq!(out.trim(), built);
    env.ok_in("other", &["pull", "-q", &named]);
    assert_eq!(env.image_id("other", &named), built);

    // Nothing to push to.
    let (ok, _, stderr) = env.run_in("fresh", &["build", "--push", ctx.to_str().unwrap()], None);
    assert!(!ok);
    assert!(
        stderr.contains("tag is needed when pushing to registry"),
        "{stderr}"
    );
}

#[test]
#[cfg_attr(not(kiln_registry), ignore = "needs docker-registry")]
fn token_auth_login_push_pull() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = servers::TokenServer::start(dir.path(), "kiln", "s3cret");
    let Some(registry) = Registry::start_with(Options {
        extra: Some(tokens.registry_auth_config()),
        dir: Some(dir),
        ..Default::default()
    }) else {
        return;
    };
    let host = &registry.host;
    let env = Env::new();
    let tag = format!("{host}/private/app:1");
    let id = env.import(&tag);
    let config_json = env.path("docker/config.json");

    // Anonymous: the token server's token grants nothing.
    let stderr = env.fails(&["push", &tag]);
    assert!(
        stderr.starts_with("Error: unauthorized: authentication required"),
        "{stderr}"
    );
    assert!(
        stderr.ends_with(&format!("\nhint: kiln login {host}\n")),
        "{stderr}"
    );
    assert!(tokens.requests().iter().all(|r| r.user.is_none()));

    // Wrong password: refused by the token server.
    let (ok, _, stderr) = env.run_in(
        "store",
        &["login", "-u", "kiln", "--password-stdin", host],
        Some("nope\n"),
    );
    assert!(!ok);
    assert_eq!(
        stderr,
        format!("Error: login to {host} failed: unauthorized: incorrect username or password\n")
    );
    assert!(!config_json.exists());
    assert!(!tokens.requests().last().unwrap().granted);

    // The right one.
    let (ok, stdout, stderr) = env.run_in(
        "store",
        &["login", "-u", "kiln", "--password-stdin", host],
        Some("s3cret\n"),
    );
    assert!(ok, "{stderr}");
    assert_eq!(stdout, "Login Succeeded\n");

    // Push and pull with the stored credentials.
    let out = env.ok(&["push", &tag]);
    assert!(out.contains("1: digest: sha256:"), "{out}");
    env.ok(&["rmi", &tag]);
    let before = tokens.requests().len();
    let out = env.ok(&["pull", &tag]);
    assert!(out.contains("Status: Downloaded newer image for"), "{out}");
    assert_eq!(env.image_id("store", &tag), id);
    // One token for the whole pull (manifest, config, layers).
    let pull_requests = &tokens.requests()[before..];
    assert_eq!(pull_requests.len(), 1, "{pull_requests:?}");
    assert_eq!(pull_requests[0].user.as_deref(), Some("kiln"));
    assert_eq!(pull_requests[0].scopes, ["repository:private/app:pull"]);

    // Logged out: refused again.
    env.ok(&["logout", host]);
    let stderr = env.fails(&["pull", &tag]);
    assert!(stderr.starts_with("Error: unauthorized"), "{stderr}");
}

#[test]
#[cfg_attr(not(kiln_registry), ignore = "needs docker-registry")]
fn registry_killed_mid_push_and_mid_pull() {
    let Some(mut registry) = Registry::start(None) else {
        return;
    };
    const BIG: usize = 32 << 20;
    const RATE: u64 = 4 << 20;
    let proxy = servers::ThrottleProxy::start(registry.addr, 0);
    let host = format!("127.0.0.1:{}", proxy.port);
    let env = Env::new();
    let tag = format!("{host}/big:1");
    let tar = env.path("big.tar");
    std::fs::write(&tar, big_rootfs(BIG)).unwrap();
    let id = env
        .ok(&["import", tar.to_str().unwrap(), &tag])
        .trim()
        .to_owned();
    std::fs::remove_file(&tar).unwrap();

    // Push, killed while the layer is being uploaded.
    proxy.set_rate(RATE);
    let child = env.process_in("store", &["push", &tag]).spawn().unwrap();
    wait_for("a partial upload in the registry", || {
        registry.has_partial_upload()
    });
    registry.kill();
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_clear_error(&stderr, &host);
    env.ok(&["system", "check"]);
    assert_eq!(env.image_id("store", &tag), id);

    // Restarted on the same storage: the push completes.
    registry.restart();
    proxy.set_rate(0);
    let out = env.ok(&["push", &tag]);
    assert!(out.contains("1: digest: sha256:"), "{out}");

    // Pull into a fresh store, killed while the layer is downloading.
    proxy.set_rate(RATE);
    let child = env.process_in("fresh", &["pull", &tag]).spawn().unwrap();
    // Each kiln process writes into its own lease of the store.
    let leases = env.path("fresh/leases");
    let ingest_files = || -> Vec<std::fs::DirEntry> {
        std::fs::read_dir(&leases)
            .into_iter()
            .flatten()
            .flatten()
            .flat_map(|lease| {
                std::fs::read_dir(lease.path().join("ingest"))
                    .into_iter()
                    .flatten()
            })
            .flatten()
            .collect()
    };
    let partial = || {
        ingest_files()
            .iter()
            .any(|e| e.metadata().is_ok_and(|m| m.len() > 1 << 20))
    };
    wait_for("a partial blob in the store's ingest directory", partial);
    registry.kill();
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_clear_error(&stderr, &host);
    // Nothing partial is visible.
    env.ok_in("fresh", &["system", "check"]);
    assert_eq!(env.ok_in("fresh", &["images", "-q"]), "");
    assert_eq!(ingest_files().len(), 0);

    // Restarted: the same pull completes.
    registry.restart();
    proxy.set_rate(0);
    let out = env.ok_in("fresh", &["pull", &tag]);
    assert!(out.contains("Status: Downloaded newer image for"), "{out}");
    assert_eq!(env.image_id("fresh", &tag), id);
    env.ok_in("fresh", &["system", "check"]);
}

#[test]
#[cfg_attr(not(kiln_registry), ignore = "needs docker-registry")]
fn https_registry_on_loopback() {
    // Loopback registries are insecure, as Docker treats them: HTTPS
    // without certificate verification first (here it answers), plain
    // HTTP otherwise (every other test).
    let dir = tempfile::tempdir().unwrap();
    let (_ca, cert, key) = servers::tls_files(dir.path(), &["127.0.0.1"]);
    let Some(registry) = Registry::start_with(Options {
        tls: Some((cert, key)),
        dir: Some(dir),
        ..Default::default()
    }) else {
        return;
    };
    let host = &registry.host;
    let env = Env::new();
    let tag = format!("{host}/tls:1");
    let id = env.import(&tag);
    let out = env.ok(&["push", &tag]);
    assert!(out.contains("1: digest: sha256:"), "{out}");
    env.ok_in("fresh", &["pull", &tag]);
    assert_eq!(env.image_id("fresh", &tag), id);
}
