//! Private networks and signal state with the real binary: RUN steps and
//! `kiln run` containers get a network namespace of their own connected
//! by slirp4netns (DNS at 10.0.2.3), `--network none|host` and
//! `RUN --network=` choose otherwise, container processes start with no
//! ignored signals (so `yes | head` ends), nothing (slirp4netns process,
//! mount, pinned namespace) outlives a build or a removed container, and
//! the namespace a killed kiln leaves is reaped by the next one. The last
//! test builds a real `debian:bookworm-slim` image (made offline with
//! debootstrap) that installs curl with apt over the default network.
//!
//! Needs root, /bin/busybox, slirp4netns (and runc with
//! `KILN_TEST_RUNTIME=runc`) and, for the Debian test, debootstrap and a
//! reachable Debian mirror (the first of the host's apt sources);
//! scripts/test.sh installs the packages. A test whose needs are missing
//! prints `skipping: <reason>` to stderr and returns (so it shows as
//! passed: run with `--nocapture` to see the reasons), like the other
//! container tests. The Debian rootfs is made once (about a minute) and
//! kept as target/test-cache/debian-bookworm-minbase.tar.
//!
//! One test is `#[ignore]`d until kiln is fixed: a build killed with
//! SIGKILL during a RUN step leaves that step's process running and its
//! rootfs mounted, and the next build does not clean them up.
// Children that start with signals ignored, as a script's background
// job does: signal(2) in pre_exec.
#![allow(unsafe_code)]

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::cargo::CommandCargoExt;

mod common;
use common::{busybox_tar_with, test_runtime};

/// How long any one kiln command may take before the test fails (instead
/// of hanging on a regression such as `yes | head` spinning).
const TIMEOUT: Duration = Duration::from_secs(60);

/// The build steps' host name, as BuildKit's.
const BUILD_HOSTNAME: &str = "buildkitsandbox";

const APPLETS: &[&str] = &[
    "sh", "echo", "cat", "ls", "grep", "head", "yes", "wc", "ip", "hostname", "readlink", "sleep",
    "true", "httpd", "stat", "tr",
];

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .chain([
            Path::new("/usr/sbin").join(name),
            Path::new("/sbin").join(name),
        ])
        .find(|p| p.is_file())
}

/// What a kiln command did.
struct Out {
    /// `None` when killed by a signal.
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    /// A temporary store with `busybox:test` (the applets above and
    /// /www/index.html) imported.
    fn new() -> Env {
        let env = Env {
            dir: tempfile::tempdir().unwrap(),
        };
        let tar = env.path("busybox.tar");
        std::fs::write(
            &tar,
            busybox_tar_with(APPLETS, true, &[("www/index.html", "hello from kiln\n")]),
        )
        .unwrap();
        env.ok(&[
            "import",
            "-c",
            "ENV PATH=/bin",
            "-c",
            "CMD [\"sh\"]",
            tar.to_str().unwrap(),
            "busybox:test",
        ]);
        env
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn store(&self) -> PathBuf {
        self.path("store")
    }

    fn command(&self, args: &[&str], ignore_signals: bool) -> Command {
        let mut c = Command::cargo_bin("kiln").unwrap();
        c.args(args)
            .env("KILN_RUNTIME", test_runtime())
            .env("KILN_ROOT", self.store())
            .env_remove("SOURCE_DATE_EPOCH")
            .stdin(Stdio::null());
        if ignore_signals {
            // SAFETY: signal(2) is async-signal-safe.
            unsafe {
                c.pre_exec(|| {
                    ignore(SIGINT);
                    ignore(SIGPIPE);
                    Ok(())
                });
            }
        }
        c
    }

    /// Starts kiln with its output going to files (read by [`Env::finish`]).
    fn spawn(&self, args: &[&str], ignore_signals: bool) -> (Child, PathBuf) {
        let out = tempfile::Builder::new()
            .prefix("out")
            .tempdir_in(self.dir.path())
            .unwrap()
            .keep();
        let mut c = self.command(args, ignore_signals);
        c.stdout(std::fs::File::create(out.join("stdout")).unwrap())
            .stderr(std::fs::File::create(out.join("stderr")).unwrap());
        (c.spawn().unwrap(), out)
    }

    /// Waits for `child` at most `timeout`; kills it and fails the test
    /// past that.
    fn finish(&self, mut child: Child, out: &Path, args: &[&str], timeout: Duration) -> Out {
        let start = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if start.elapsed() > timeout {
                let _ = child.kill();
                let _ = child.wait();
                let stderr = std::fs::read_to_string(out.join("stderr")).unwrap_or_default();
                panic!("kiln {args:?} did not finish within {timeout:?}; its stderr:\n{stderr}");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        Out {
            code: status.code(),
            stdout: std::fs::read_to_string(out.join("stdout")).unwrap(),
            stderr: std::fs::read_to_string(out.join("stderr")).unwrap(),
        }
    }

    fn run_with(&self, args: &[&str], ignore_signals: bool, timeout: Duration) -> Out {
        let (child, out) = self.spawn(args, ignore_signals);
        self.finish(child, &out, args, timeout)
    }

    fn run(&self, args: &[&str]) -> Out {
        self.run_with(args, false, TIMEOUT)
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert_eq!(out.code, Some(0), "kiln {args:?} failed:\n{}", out.stderr);
        out.stdout
    }

    /// Writes a context directory with this Dockerfile.
    fn context(&self, name: &str, dockerfile: &str) -> PathBuf {
        let dir = self.path(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("Dockerfile"), dockerfile).unwrap();
        dir
    }

    /// Builds `dockerfile` (with `flags`) and exports the result's files to
    /// a new directory, which it returns.
    fn build_local(
        &self,
        name: &str,
        dockerfile: &str,
        flags: &[&str],
        ignore_signals: bool,
    ) -> PathBuf {
        let ctx = self.context(name, dockerfile);
        let dest = self.path(&format!("{name}-out"));
        let output = format!("type=local,dest={}", dest.display());
        let mut args = vec!["build", "--progress", "plain", "-o", &output];
        args.extend_from_slice(flags);
        let ctx_s = ctx.to_str().unwrap();
        args.push(ctx_s);
        let out = self.run_with(&args, ignore_signals, TIMEOUT);
        assert_eq!(out.code, Some(0), "kiln {args:?} failed:\n{}", out.stderr);
        dest
    }

    /// `MARK=1` tags a step's process; this is the value that tells this
    /// test's processes from others'.
    fn marked(&self) -> Vec<u32> {
        let needle = format!("{MARK}=1");
        let store = self.store();
        let mut found = Vec::new();
        for pid in pids() {
            let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
                continue;
            };
            let marked = environ.split(|b| *b == 0).any(|v| v == needle.as_bytes());
            // One of its ancestors (its OCI runtime) names this store.
            let mut in_store = false;
            let mut p = pid;
            for _ in 0..4 {
                let Some(ppid) = parent(p) else { break };
                let cmdline = std::fs::read(format!("/proc/{ppid}/cmdline")).unwrap_or_default();
                if String::from_utf8_lossy(&cmdline).contains(store.to_str().unwrap()) {
                    in_store = true;
                    break;
                }
                p = ppid;
            }
            if marked && in_store && alive(pid) {
                found.push(pid);
            }
        }
        found
    }

    /// Kills the processes of [`Env::marked`].
    fn kill_marked(&self) {
        for pid in self.marked() {
            send(pid, SIGKILL);
        }
    }

    /// The namespaces pinned for build steps.
    fn build_netns_dir(&self) -> PathBuf {
        self.store().join("build/runtime/netns")
    }

    /// Fails unless no slirp4netns, mount or pinned build namespace of
    /// this store is left.
    fn assert_nothing_left(&self, after: &str) {
        let store = self.store();
        // slirp4netns exits when kiln closes its pipe; give it a moment.
        let start = Instant::now();
        while !slirps_of(&store).is_empty() && start.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let slirps = slirps_of(&store);
        assert!(
            slirps.is_empty(),
            "after {after}: slirp4netns still running: {slirps:?}"
        );
        let mounts = mounts_under(&store);
        assert!(mounts.is_empty(), "after {after}: mounts left: {mounts:?}");
        let netns = entries(&self.build_netns_dir());
        assert!(
            netns.is_empty(),
            "after {after}: {} holds {netns:?}",
            self.build_netns_dir().display()
        );
        for dir in ["build/runtime/containers", "build/runtime/runc"] {
            let left = entries(&store.join(dir));
            assert!(left.is_empty(), "after {after}: {dir} holds {left:?}");
        }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        // Leave no container running, no process of a killed build and
        // no mount (even when the test failed).
        let out = self
            .command(&["ps", "-a", "-q", "--no-trunc"], false)
            .output();
        if let Ok(out) = out {
            for id in String::from_utf8_lossy(&out.stdout).lines() {
                let _ = self.command(&["rm", "-f", id], false).output();
            }
        }
        self.kill_marked();
        let mut mounts = mounts_under(&self.store());
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let _ = Command::new("umount").arg("-l").arg(&m).status();
        }
    }
}

/// The variable a test's long-running step sets, to be found and ended.
const MARK: &str = "KILN_NETWORK_TEST_STEP";

const SIGINT: i32 = 2;
const SIGPIPE: i32 = 13;
const SIGKILL: i32 = 9;

unsafe extern "C" {
    fn signal(signum: i32, handler: usize) -> usize;
    fn kill(pid: i32, sig: i32) -> i32;
}

/// Sets `sig` to SIG_IGN in this process (meant for `pre_exec`).
fn ignore(sig: i32) {
    const SIG_IGN: usize = 1;
    // SAFETY: plain signal(2) call; async-signal-safe.
    unsafe {
        signal(sig, SIG_IGN);
    }
}

fn send(pid: u32, sig: i32) {
    // SAFETY: plain kill(2) call.
    unsafe {
        kill(pid as i32, sig);
    }
}

/// Running slirp4netns processes whose command line names `store`.
fn slirps_of(store: &Path) -> Vec<(u32, String)> {
    let needle = store.to_str().unwrap();
    let mut found = Vec::new();
    for pid in pids() {
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let is_slirp = args
            .first()
            .is_some_and(|a| Path::new(a).file_name().is_some_and(|n| n == "slirp4netns"));
        if is_slirp && args.iter().any(|a| a.contains(needle)) {
            found.push((pid, args.join(" ")));
        }
    }
    found
}

/// The pids of the processes running now.
fn pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
        .collect()
}

fn parent(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

fn alive(pid: u32) -> bool {
    // A zombie (not yet reaped by its parent) counts as gone.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').map(|(_, rest)| rest.trim().to_owned()))
        .is_some_and(|rest| !rest.starts_with('Z') && !rest.starts_with('X'))
}

/// Mount points under `dir` in this mount namespace (the host's).
fn mounts_under(dir: &Path) -> Vec<String> {
    let prefix = format!("{}/", dir.to_str().unwrap());
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mountinfo)
        .filter(|m| m.starts_with(&prefix) || m == dir.to_str().unwrap())
        .collect()
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 4 <= b.len()
            && let Ok(n) = u8::from_str_radix(&s[i + 1..i + 4], 8)
        {
            out.push(n);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The names in `dir` (none when it is missing).
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// The interface names in a `/proc/net/dev` dump.
fn interfaces(proc_net_dev: &str) -> Vec<String> {
    let mut names: Vec<String> = proc_net_dev
        .lines()
        .skip(2)
        .filter_map(|l| l.split_once(':').map(|(n, _)| n.trim().to_owned()))
        .collect();
    names.sort();
    names
}

/// The interfaces `ip -o link` (busybox) reports up, without `lo`.
fn up_interfaces(ip_link: &str) -> Vec<String> {
    ip_link
        .lines()
        .filter_map(|l| {
            // "2: tap0: <BROADCAST,UP,LOWER_UP> mtu 65520 ..."
            let mut fields = l.split_whitespace();
            let name = fields.nth(1)?.trim_end_matches(':');
            let name = name.split('@').next()?;
            let flags = fields.next()?;
            let up = flags
                .trim_matches(|c| c == '<' || c == '>')
                .split(',')
                .any(|f| f == "UP");
            (up && name != "lo").then(|| name.to_owned())
        })
        .collect()
}

fn read(dir: &Path, file: &str) -> String {
    std::fs::read_to_string(dir.join(file))
        .unwrap_or_else(|e| panic!("{}: {e}", dir.join(file).display()))
}

fn host_netns() -> String {
    std::fs::read_link("/proc/self/ns/net")
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

/// What a RUN step records about its network, into /net/<name>/.
fn probe(name: &str) -> String {
    format!(
        "mkdir -p /net/{name} && cd /net/{name} && cat /etc/resolv.conf > resolv && hostname > hostname && ip -o link > links && ip addr > addr && cat /proc/net/dev > dev && readlink /proc/self/ns/net > ns"
    )
}

#[test]
#[cfg_attr(
    not(all(kiln_containers, kiln_slirp)),
    ignore = "needs root and /bin/busybox and slirp4netns"
)]
fn build_steps_get_a_private_network_unless_told_otherwise() {
    let env = Env::new();
    let host_ns = host_netns();
    let host_ifaces = interfaces(&std::fs::read_to_string("/proc/net/dev").unwrap());
    let dockerfile = format!(
        "FROM busybox:test\nRUN {}\nRUN --network=none {}\nRUN --network=host {}\nRUN --network=default {}\n",
        probe("default"),
        probe("none"),
        probe("host"),
        probe("explicit"),
    );
    let out = env.build_local("steps", &dockerfile, &[], false);
    let net = out.join("net");

    for name in ["default", "explicit"] {
        let d = net.join(name);
        let resolv = read(&d, "resolv");
        assert!(
            resolv.lines().any(|l| l.trim() == "nameserver 10.0.2.3"),
            "{name}: /etc/resolv.conf:\n{resolv}"
        );
        assert!(
            !resolv
                .lines()
                .any(|l| l.starts_with("nameserver") && !l.contains("10.0.2.3")),
            "{name}: only the forwarder is named:\n{resolv}"
        );
        assert_eq!(read(&d, "hostname").trim(), BUILD_HOSTNAME, "{name}");
        let links = read(&d, "links");
        let up = up_interfaces(&links);
        assert!(
            !up.is_empty(),
            "{name}: no interface but lo is up:\n{links}"
        );
        let addr = read(&d, "addr");
        assert!(addr.contains("inet 10.0.2."), "{name}: ip addr:\n{addr}");
        let ns = read(&d, "ns");
        assert_ne!(ns.trim(), host_ns, "{name}: runs in the host's namespace");
        let ifaces = interfaces(&read(&d, "dev"));
        assert!(ifaces.contains(&"lo".to_owned()), "{name}: {ifaces:?}");
        assert_ne!(ifaces, host_ifaces, "{name}: sees the host's interfaces");
    }

    let none = net.join("none");
    assert_eq!(interfaces(&read(&none, "dev")), ["lo"]);
    assert_eq!(up_interfaces(&read(&none, "links")), Vec::<String>::new());
    assert_ne!(read(&none, "ns").trim(), host_ns);
    assert_eq!(read(&none, "hostname").trim(), BUILD_HOSTNAME);

    let host = net.join("host");
    assert_eq!(
        read(&host, "ns").trim(),
        host_ns,
        "--network=host runs in another namespace"
    );
    let seen = interfaces(&read(&host, "dev"));
    let host_now = interfaces(&std::fs::read_to_string("/proc/net/dev").unwrap());
    for iface in host_ifaces.iter().filter(|i| host_now.contains(i)) {
        assert!(
            seen.contains(iface),
            "--network=host: {iface} missing from {seen:?}"
        );
    }
    assert_eq!(read(&host, "hostname").trim(), BUILD_HOSTNAME);

    env.assert_nothing_left("a build with default, none and host RUN steps");
}

#[test]
#[cfg_attr(
    not(all(kiln_containers, kiln_slirp)),
    ignore = "needs root and /bin/busybox and slirp4netns"
)]
fn build_network_flag_sets_the_default_for_run_steps() {
    let env = Env::new();
    let host_ns = host_netns();
    let dockerfile = format!("FROM busybox:test\nRUN {}\n", probe("step"));

    let none = env.build_local("none", &dockerfile, &["--network", "none"], false);
    let d = none.join("net/step");
    assert_eq!(
        interfaces(&read(&d, "dev")),
        ["lo"],
        "kiln build --network none"
    );

    // Not the cached result of the build above: the network is part of
    // a RUN step's definition, as in BuildKit.
    let host = env.build_local("host", &dockerfile, &["--network", "host"], false);
    let d = host.join("net/step");
    assert_eq!(read(&d, "ns").trim(), host_ns, "kiln build --network host");

    let default = env.build_local("default", &dockerfile, &["--network", "default"], false);
    let d = default.join("net/step");
    assert!(read(&d, "resolv").contains("nameserver 10.0.2.3"));
    assert!(!up_interfaces(&read(&d, "links")).is_empty());

    env.assert_nothing_left("builds with --network none, host and default");
}

#[test]
#[cfg_attr(
    not(all(kiln_containers, kiln_slirp)),
    ignore = "needs root and /bin/busybox and slirp4netns"
)]
fn pipes_end_and_no_signal_is_ignored_even_when_kiln_ignores_some() {
    let env = Env::new();
    // kiln started as a script's background job would be: SIGINT (and,
    // as in any Rust program, SIGPIPE) ignored. busybox's sh ignores
    // SIGQUIT itself and keeps it ignored in a command it runs by exec
    // (its last one), so the commands checked are never a script's last.
    let dockerfile = "FROM busybox:test\n\
        RUN yes | head -c 10485760 > /f\n\
        RUN grep -E '^Sig(Ign|Blk):' /proc/self/status > /sig; trap > /trap; grep ^SigIgn: /proc/$$/status > /shell-sig\n\
        RUN --network=none grep ^SigIgn: /proc/self/status > /sig-none; true\n";
    let out = env.build_local("signals", dockerfile, &[], true);
    let size = std::fs::metadata(out.join("f")).unwrap().len();
    assert_eq!(size, 10_485_760);
    let sig = read(&out, "sig");
    assert_eq!(
        sig, "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n",
        "a RUN step's process starts with ignored or blocked signals"
    );
    assert_eq!(read(&out, "trap"), "", "the step's shell lists traps");
    // The shell itself: SIGINT and SIGPIPE at their defaults.
    let shell = read(&out, "shell-sig");
    let mask = u64::from_str_radix(shell.trim().trim_start_matches("SigIgn:").trim(), 16).unwrap();
    assert_eq!(
        mask & (1 << (SIGINT - 1) | 1 << (SIGPIPE - 1)),
        0,
        "the step's shell: {shell}"
    );
    assert_eq!(read(&out, "sig-none"), "SigIgn:\t0000000000000000\n");

    // The same for `kiln run`, attached and with its default network.
    let run = env.run_with(
        &[
            "run",
            "--rm",
            "busybox:test",
            "sh",
            "-c",
            "yes | head -c 1048576 | wc -c; grep ^SigIgn: /proc/self/status; true",
        ],
        true,
        TIMEOUT,
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(run.stdout, "1048576\nSigIgn:\t0000000000000000\n");

    env.assert_nothing_left("builds and runs started with SIGINT and SIGPIPE ignored");
}

/// A port on 127.0.0.1 that nothing listens on (right now).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET /` on 127.0.0.1:`port`; the response, or why none came.
fn http_get(port: u16) -> Result<String, String> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /index.html HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .map_err(|e| format!("write: {e}"))?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)
        .map_err(|e| format!("read: {e}"))?;
    Ok(resp)
}

#[test]
#[cfg_attr(
    not(all(kiln_containers, kiln_slirp)),
    ignore = "needs root and /bin/busybox and slirp4netns"
)]
fn run_publishes_ports_from_its_private_network_and_cleans_up() {
    let env = Env::new();
    let store = env.store();
    let port = free_port();
    let publish = format!("127.0.0.1:{port}:8000");
    let id = env.ok(&[
        "run",
        "-d",
        "-p",
        &publish,
        "busybox:test",
        "httpd",
        "-f",
        "-p",
        "8000",
        "-h",
        "/www",
    ]);
    let id = id.trim().to_owned();
    assert_eq!(id.len(), 64, "{id}");

    let start = Instant::now();
    let resp = loop {
        match http_get(port) {
            Ok(r) if !r.is_empty() => break r,
            other => {
                assert!(
                    start.elapsed() < Duration::from_secs(20),
                    "no answer on 127.0.0.1:{port}: {other:?}; logs: {}",
                    env.run(&["logs", &id]).stderr
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    };
    assert!(
        resp.starts_with("HTTP/1.") && resp.contains(" 200 "),
        "{resp}"
    );
    assert!(resp.ends_with("hello from kiln\n"), "{resp}");

    // While it runs: its namespace is pinned under its directory and a
    // slirp4netns naming it serves it (so the checks below mean something).
    let netns = store.join("containers").join(&id).join("netns");
    let mounts = mounts_under(&store);
    assert!(
        mounts.iter().any(|m| Path::new(m) == netns),
        "{} is not a mount point; mounts under the store: {mounts:?}",
        netns.display()
    );
    assert_eq!(slirps_of(&store).len(), 1, "{:?}", slirps_of(&store));

    let exec_like = env.ok(&[
        "run",
        "--rm",
        "busybox:test",
        "sh",
        "-c",
        "cat /etc/resolv.conf; cat /proc/net/dev",
    ]);
    assert!(exec_like.contains("nameserver 10.0.2.3"), "{exec_like}");
    let none = env.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "busybox:test",
        "cat",
        "/proc/net/dev",
    ]);
    assert_eq!(interfaces(&none), ["lo"], "kiln run --network none");
    let host = env.ok(&[
        "run",
        "--rm",
        "--network",
        "host",
        "busybox:test",
        "readlink",
        "/proc/self/ns/net",
    ]);
    assert_eq!(host.trim(), host_netns(), "kiln run --network host");

    assert_eq!(env.ok(&["rm", "-f", &id]).trim(), id);
    assert!(!store.join("containers").join(&id).exists());
    env.assert_nothing_left("kiln rm -f of a detached container");
    let left = entries(&store.join("containers"));
    assert!(
        left.iter().all(|n| n.len() != 64),
        "containers left: {left:?}"
    );
}

/// Starts a build whose RUN step sleeps, waits until the step runs and
/// SIGKILLs kiln; returns the pinned namespace it leaves.
fn kill_a_build_in_its_run_step(env: &Env) -> PathBuf {
    let store = env.store();
    let ctx = env.context(
        "sleepy",
        &format!(
            "FROM busybox:test\nRUN echo started && {}=1 sleep 1237\n",
            MARK
        ),
    );
    let args = ["build", "--progress", "plain", ctx_str(&ctx)];
    let (mut child, out) = env.spawn(&args, false);

    // Wait for the step to run: its slirp4netns up, its namespace pinned.
    let start = Instant::now();
    let slirp = loop {
        let slirps = slirps_of(&store);
        let pinned = !entries(&env.build_netns_dir()).is_empty();
        let stderr = std::fs::read_to_string(out.join("stderr")).unwrap_or_default();
        let step = !env.marked().is_empty();
        if let (Some((pid, _)), true, true) = (slirps.first(), pinned, step) {
            break *pid;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("kiln build ended early ({status}):\n{stderr}");
        }
        assert!(
            start.elapsed() < TIMEOUT,
            "the RUN step did not start; slirp4netns: {slirps:?}, namespace pinned: {pinned}, step's process: {step}; stderr:\n{stderr}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let stale = entries(&env.build_netns_dir())
        .into_iter()
        .filter(|n| !n.ends_with(".log"))
        .collect::<Vec<_>>();
    assert_eq!(stale.len(), 1, "{stale:?}");
    let stale = env.build_netns_dir().join(&stale[0]);
    assert!(mounts_under(&store).iter().any(|m| Path::new(m) == stale));

    send(child.id(), SIGKILL);
    child.wait().unwrap();

    // Its slirp4netns sees the exit pipe close and goes by itself.
    let start = Instant::now();
    while alive(slirp) {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "slirp4netns {slirp} still runs 5 s after its kiln was killed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        mounts_under(&store).iter().any(|m| Path::new(m) == stale),
        "the killed build's namespace is expected to stay mounted until the next kiln"
    );
    stale
}

#[test]
#[cfg_attr(
    not(all(kiln_containers, kiln_slirp)),
    ignore = "needs root and /bin/busybox and slirp4netns"
)]
fn a_killed_build_leaves_a_namespace_the_next_build_removes() {
    let env = Env::new();
    let store = env.store();
    let stale = kill_a_build_in_its_run_step(&env);

    // The killed step's process outlives kiln (see the ignored test
    // below); end it so that only the namespace is left to the next build.
    env.kill_marked();

    let next = env.context("next", "FROM busybox:test\nRUN echo next > /next\n");
    env.ok(&["build", "--progress", "plain", ctx_str(&next)]);
    assert!(
        !mounts_under(&store).iter().any(|m| Path::new(m) == stale),
        "{} is still mounted after the next build",
        stale.display()
    );
    assert!(!stale.exists(), "{} is still there", stale.display());
    let netns = entries(&env.build_netns_dir());
    assert!(netns.is_empty(), "{netns:?}");
    assert!(slirps_of(&store).is_empty(), "{:?}", slirps_of(&store));
}

#[test]
#[cfg_attr(
    not(all(kiln_containers, kiln_slirp)),
    ignore = "needs root and /bin/busybox and slirp4netns"
)]
fn a_killed_builds_step_ends_and_the_next_build_removes_its_mounts() {
    let env = Env::new();
    kill_a_build_in_its_run_step(&env);
    // The embedded runtime's helper kills the step when kiln dies; under
    // runc the step runs on until the next kiln on the store reaps it.
    if std::env::var("KILN_TEST_RUNTIME").as_deref() != Ok("runc") {
        let start = Instant::now();
        while !env.marked().is_empty() {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "the killed build's RUN step still runs 5 s later: {:?}",
                env.marked()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let next = env.context("next", "FROM busybox:test\nRUN echo next > /next\n");
    env.ok(&["build", "--progress", "plain", ctx_str(&next)]);
    assert!(
        env.marked().is_empty(),
        "the killed build's RUN step still runs after the next build: {:?}",
        env.marked()
    );
    env.assert_nothing_left("the build after a killed one");
}

fn ctx_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

// The real-world acceptance test: a Debian base made offline, apt over
// the default network.

/// The first Debian mirror apt is configured with (not the security one),
/// as /work/shared/peers/mkbase.sh finds it.
fn mirror() -> String {
    let mut uris = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut files: Vec<_> = dir
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "sources"))
            .collect();
        files.sort();
        for f in files {
            for line in std::fs::read_to_string(f).unwrap_or_default().lines() {
                if let Some(rest) = line.trim_start().strip_prefix("URIs:") {
                    uris.extend(rest.split_whitespace().map(str::to_owned));
                }
            }
        }
    }
    if let Some(m) = uris.into_iter().find(|u| !u.contains("security")) {
        return m;
    }
    for line in std::fs::read_to_string("/etc/apt/sources.list")
        .unwrap_or_default()
        .lines()
    {
        let mut f = line.split_whitespace();
        if f.next() == Some("deb") {
            let mut uri = f.next();
            // deb [options] uri suite...
            if uri.is_some_and(|u| u.starts_with('[')) {
                uri = f.find(|w| w.ends_with(']')).and_then(|_| f.next());
            }
            if let Some(u) = uri {
                return u.to_owned();
            }
        }
    }
    "http://deb.debian.org/debian".to_owned()
}

/// Whether `<mirror>/dists/bookworm/Release` answers 200 over plain HTTP.
fn mirror_reachable(mirror: &str) -> Result<(), String> {
    use std::net::ToSocketAddrs;
    let rest = mirror
        .strip_prefix("http://")
        .ok_or_else(|| format!("{mirror} is not an http:// mirror"))?;
    let (hostport, path) = rest.split_once('/').unwrap_or((rest, ""));
    let host = hostport.split(':').next().unwrap_or(hostport);
    let with_port = if hostport.contains(':') {
        hostport.to_owned()
    } else {
        format!("{hostport}:80")
    };
    let addr = with_port
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host} has no address"))?;
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(10))
        .map_err(|e| format!("cannot connect to {with_port}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let path = format!("/{}/dists/bookworm/Release", path.trim_end_matches('/')).replace("//", "/");
    write!(
        s,
        "HEAD {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut resp = [0u8; 64];
    let n = s
        .read(&mut resp)
        .map_err(|e| format!("reading from {with_port}: {e}"))?;
    let status = String::from_utf8_lossy(&resp[..n]);
    let line = status.lines().next().unwrap_or("");
    if line.split_whitespace().nth(1) == Some("200") {
        Ok(())
    } else {
        Err(format!("http://{hostport}{path}: {line}"))
    }
}

/// Cargo's target directory (the one holding this test binary).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.ancestors()
        .find(|d| d.join("CACHEDIR.TAG").is_file())
        .map(Path::to_owned)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"))
}

/// A `debootstrap --variant=minbase bookworm` rootfs tar, slimmed like the
/// official image's; made once and kept under target/test-cache/.
fn debian_rootfs_tar(mirror: &str) -> PathBuf {
    let cache = target_dir().join("test-cache");
    let tar = cache.join("debian-bookworm-minbase.tar");
    if tar.is_file() {
        return tar;
    }
    std::fs::create_dir_all(&cache).unwrap();
    let work = tempfile::Builder::new()
        .prefix("debootstrap")
        .tempdir_in(&cache)
        .unwrap();
    let root = work.path().join("rootfs");
    eprintln!(
        "debootstrap --variant=minbase bookworm {} {mirror} (cached afterwards at {})",
        root.display(),
        tar.display()
    );
    let start = Instant::now();
    let out = Command::new(which("debootstrap").unwrap())
        .args(["--variant=minbase", "bookworm"])
        .arg(&root)
        .arg(mirror)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "debootstrap failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("debootstrap took {:?}", start.elapsed());
    // As the official image: no device nodes, no package lists or caches.
    let slim = "rm -rf ./dev/* ./proc/* ./sys/* ./var/lib/apt/lists/* ./var/cache/apt/*.bin \
        ./var/cache/apt/archives/*.deb ./var/log/bootstrap.log && : > ./etc/resolv.conf";
    let status = Command::new("sh")
        .args(["-c", slim])
        .current_dir(&root)
        .status()
        .unwrap();
    assert!(status.success());
    let partial = work.path().join("rootfs.tar");
    let status = Command::new("tar")
        .args(["--numeric-owner", "--xattrs", "-C"])
        .arg(&root)
        .arg("-cf")
        .arg(&partial)
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success(), "tar of the rootfs failed");
    std::fs::rename(&partial, &tar).unwrap();
    tar
}

#[test]
#[cfg_attr(
    not(all(kiln_containers, kiln_slirp)),
    ignore = "needs root and /bin/busybox and slirp4netns"
)]
fn debian_apt_installs_curl_over_the_default_network() {
    if which("debootstrap").is_none() {
        eprintln!("skipping: debootstrap is not installed (apt-get install debootstrap)");
        return;
    }
    let mirror = mirror();
    if let Err(reason) = mirror_reachable(&mirror) {
        eprintln!("skipping: the Debian mirror is unreachable: {reason}");
        return;
    }
    let tar = debian_rootfs_tar(&mirror);
    let env = Env {
        dir: tempfile::tempdir().unwrap(),
    };
    env.ok(&[
        "import",
        "-c",
        "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "-c",
        "CMD [\"bash\"]",
        tar.to_str().unwrap(),
        "debian:bookworm-slim",
    ]);
    let ctx = env.context(
        "curl",
        "FROM debian:bookworm-slim\n\
         RUN apt-get update && apt-get install -y --no-install-recommends curl\n",
    );
    let args = [
        "build",
        "--progress",
        "plain",
        "-t",
        "curl:test",
        ctx_str(&ctx),
    ];
    let start = Instant::now();
    let out = env.run_with(&args, false, Duration::from_secs(900));
    assert_eq!(out.code, Some(0), "kiln {args:?} failed:\n{}", out.stderr);
    eprintln!("the apt build took {:?}", start.elapsed());
    let version = env.ok(&["run", "--rm", "curl:test", "curl", "--version"]);
    assert!(version.starts_with("curl 7"), "{version}");
    env.assert_nothing_left("the apt build and run");
}

/// SIGINT (even inherited as ignored, as a script's background job gets
/// it) and SIGTERM cancel a build in its RUN step: kiln exits 130 or 143
/// at once, the step's process is gone, and nothing stays mounted.
#[test]
#[cfg_attr(
    not(all(kiln_containers, kiln_slirp)),
    ignore = "needs root and /bin/busybox and slirp4netns"
)]
fn interrupted_builds_cancel_their_steps_and_clean_up() {
    let env = Env::new();
    for (sig, code) in [(SIGINT, 130), (15, 143)] {
        let ctx = env.context(
            &format!("cancel-{sig}"),
            &format!("FROM busybox:test\nRUN echo started-{sig} && {MARK}=1 sleep 1237\n"),
        );
        let args = ["build", "--progress", "plain", ctx_str(&ctx)];
        let (mut child, out) = env.spawn(&args, true);
        let start = Instant::now();
        while env.marked().is_empty() {
            if let Some(status) = child.try_wait().unwrap() {
                let stderr = std::fs::read_to_string(out.join("stderr")).unwrap_or_default();
                panic!("kiln build ended early ({status}):\n{stderr}");
            }
            assert!(start.elapsed() < TIMEOUT, "the RUN step did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        send(child.id(), sig);
        let start = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "kiln did not stop after signal {sig}"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let stderr = std::fs::read_to_string(out.join("stderr")).unwrap_or_default();
        assert_eq!(status.code(), Some(code), "{stderr}");
        assert!(stderr.contains("cancelled"), "{stderr}");
        assert!(
            env.marked().is_empty(),
            "the step still runs: {:?}",
            env.marked()
        );
        env.assert_nothing_left(&format!("a build stopped by signal {sig}"));
    }
}

/// A foreground `kiln run` killed with SIGKILL takes its container with
/// it, and `kiln rm` then removes it and everything it had mounted.
#[test]
#[cfg_attr(
    not(all(kiln_containers, kiln_slirp)),
    ignore = "needs root and /bin/busybox and slirp4netns"
)]
fn a_killed_foreground_run_takes_its_container_and_rm_cleans_up() {
    let env = Env::new();
    let args = [
        "run",
        "--name",
        "fg",
        "-e",
        &format!("{MARK}=1"),
        "busybox:test",
        "sleep",
        "1237",
    ];
    let (mut child, out) = env.spawn(&args, false);
    let start = Instant::now();
    while env.marked().is_empty() {
        if let Some(status) = child.try_wait().unwrap() {
            let stderr = std::fs::read_to_string(out.join("stderr")).unwrap_or_default();
            panic!("kiln run ended early ({status}):\n{stderr}");
        }
        assert!(start.elapsed() < TIMEOUT, "the container did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    send(child.id(), SIGKILL);
    child.wait().unwrap();
    // The embedded runtime's helper kills the container when kiln dies;
    // runc's container runs on until `rm -f`.
    if std::env::var("KILN_TEST_RUNTIME").as_deref() != Ok("runc") {
        let start = Instant::now();
        while !env.marked().is_empty() {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "the container of a killed kiln run still runs: {:?}",
                env.marked()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    env.ok(&["rm", "-f", "fg"]);
    let start = Instant::now();
    while !env.marked().is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the container still runs after rm -f: {:?}",
            env.marked()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let store = env.store();
    assert!(
        mounts_under(&store).is_empty(),
        "{:?}",
        mounts_under(&store)
    );
    assert!(slirps_of(&store).is_empty(), "{:?}", slirps_of(&store));
}
