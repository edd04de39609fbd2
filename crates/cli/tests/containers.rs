//! Containers end to end: `kiln run`, `ps`, `logs`, `stop`, `kill`, `rm`,
//! `commit`, `rmi` refusal, with real overlayfs and the OCI runtime of
//! `KILN_TEST_RUNTIME` (embedded by default, or runc) on a busybox image
//! imported in the test. Needs root, /bin/busybox (and runc for the runc runs); each test
//! prints why and returns when they are missing.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use assert_cmd::Command;

mod common;
use common::{busybox_tar, busybox_tar_with, test_runtime};

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        let env = Env {
            dir: tempfile::tempdir().unwrap(),
        };
        let applets = [
            "sh", "echo", "cat", "ls", "id", "touch", "true", "false", "sleep", "pwd", "env", "ip",
            "nc", "wc", "tty", "stty",
        ];
        let tar = env.dir.path().join("busybox.tar");
        std::fs::write(&tar, busybox_tar(&applets, true)).unwrap();
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

    fn root(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    fn kiln(&self) -> Command {
        let mut c = Command::cargo_bin("kiln").unwrap();
        c.env("KILN_RUNTIME", test_runtime());
        c.env("KILN_ROOT", self.root());
        c.timeout(Duration::from_secs(60));
        c
    }

    /// (exit code, stdout, stderr).
    fn run(&self, args: &[&str]) -> (i32, String, String) {
        let out = self.kiln().args(args).output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn ok(&self, args: &[&str]) -> String {
        let (code, out, err) = self.run(args);
        assert_eq!(code, 0, "kiln {args:?}: {err}");
        out
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        // Leave no container running.
        if let Ok(out) = self.kiln().args(["ps", "-q", "--no-trunc"]).output() {
            for id in String::from_utf8_lossy(&out.stdout).lines() {
                let _ = self.kiln().args(["rm", "-f", id]).output();
            }
        }
    }
}

#[test]
#[cfg_attr(not(kiln_containers), ignore = "needs root and /bin/busybox")]
fn exit_codes_env_cwd_user_and_rm() {
    let env = Env::new();
    let (code, out, _) = env.run(&["run", "--rm", "busybox:test", "sh", "-c", "echo hi; exit 3"]);
    assert_eq!((code, out.as_str()), (3, "hi\n"));
    let out = env.ok(&[
        "run",
        "--rm",
        "-e",
        "FOO=bar",
        "-w",
        "/work",
        "-u",
        "app",
        "busybox:test",
        "sh",
        "-c",
        "echo $FOO; pwd; id -u",
    ]);
    assert_eq!(out, "bar\n/work\n1000\n");
    // --rm removed them all.
    assert_eq!(env.ok(&["ps", "-a", "-q"]), "");

    let (code, _, err) = env.run(&["run", "--rm", "busybox:test", "foo"]);
    assert_eq!(code, 127, "{err}");
    assert!(
        err.contains("exec: \"foo\": executable file not found in $PATH"),
        "{err}"
    );
    // Network none: only lo.
    let out = env.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "busybox:test",
        "ls",
        "/sys/class/net",
    ]);
    assert_eq!(out.split_whitespace().collect::<Vec<_>>(), ["lo"]);

    // Without --rm the container stays, exited.
    env.ok(&["run", "--name", "kept", "busybox:test", "true"]);
    let ps = env.ok(&["ps", "-a", "--format", "{{.Names}} {{.Status}}"]);
    assert!(ps.starts_with("kept Exited (0) "), "{ps}");
    assert_eq!(env.ok(&["ps", "-q"]), "");
    let (code, _, err) = env.run(&["run", "--name", "kept", "busybox:test", "true"]);
    assert_eq!(code, 125);
    assert!(err.contains("is already in use"), "{err}");
    assert_eq!(env.ok(&["rm", "kept"]), "kept\n");
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out: {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
#[cfg_attr(not(kiln_containers), ignore = "needs root and /bin/busybox")]
fn detached_ps_logs_stop_kill() {
    let env = Env::new();
    let id = env.ok(&[
        "run",
        "-d",
        "--name",
        "stubborn",
        "busybox:test",
        "sh",
        "-c",
        "trap '' TERM; echo started; echo err >&2; sleep 100",
    ]);
    let id = id.trim();
    assert_eq!(id.len(), 64);
    // kiln has exited; the shim keeps the container running.
    let ps = env.ok(&["ps"]);
    assert!(ps.starts_with("CONTAINER ID   IMAGE"), "{ps}");
    assert!(ps.contains(&id[..12]) && ps.contains("Up "), "{ps}");
    assert!(ps.contains("stubborn"), "{ps}");
    wait_for("logs", || env.ok(&["logs", "stubborn"]) == "started\n");
    let (_, _, err) = env.run(&["logs", "stubborn"]);
    assert_eq!(err, "err\n");
    assert_eq!(env.ok(&["logs", "--tail", "0", "stubborn"]), "");
    let ts = env.ok(&["logs", "-t", "stubborn"]);
    assert!(ts.contains("Z started"), "{ts}");

    let start = Instant::now();
    assert_eq!(env.ok(&["stop", "-t", "1", "stubborn"]), "stubborn\n");
    assert!(start.elapsed() >= Duration::from_secs(1));
    let status = env.ok(&["ps", "-a", "--format", "{{.Status}}"]);
    assert!(status.starts_with("Exited (137)"), "{status}");
    assert_eq!(env.ok(&["wait", "stubborn"]), "137\n");

    // kill -s, and start again.
    assert_eq!(env.ok(&["start", "stubborn"]), "stubborn\n");
    assert!(
        env.ok(&["ps", "--format", "{{.Names}}"])
            .contains("stubborn")
    );
    env.ok(&["kill", "-s", "KILL", "stubborn"]);
    wait_for("exit", || env.ok(&["ps", "-q"]).is_empty());
    let (code, _, err) = env.run(&["kill", "stubborn"]);
    assert_eq!(code, 1);
    assert!(err.contains("is not running"), "{err}");

    // rm refuses a running container without -f.
    env.ok(&[
        "run",
        "-d",
        "--name",
        "runner",
        "busybox:test",
        "sleep",
        "100",
    ]);
    let (code, _, err) = env.run(&["rm", "runner"]);
    assert_eq!(code, 1);
    assert!(err.contains("container is running"), "{err}");
    env.ok(&["rm", "-f", "runner"]);
    let out = env.ok(&["container", "prune", "-f"]);
    assert!(out.starts_with("Deleted Containers:\n"), "{out}");
    assert!(out.contains("Total reclaimed space:"), "{out}");
    assert_eq!(env.ok(&["container", "ls", "-a", "-q"]), "");
}

/// Runs `kiln ARGS` on a terminal of its own (util-linux `script`),
/// typing `input` after a second; returns (exit code, what the terminal
/// showed). The terminal is 33 rows by 91 columns.
fn on_terminal(env: &Env, args: &[&str], input: &str) -> (i32, String) {
    let kiln = assert_cmd::cargo::cargo_bin("kiln");
    let quoted: Vec<String> = args
        .iter()
        .map(|a| format!("'{}'", a.replace('\'', r"'\''")))
        .collect();
    let command = format!(
        "stty rows 33 cols 91; exec {} {}",
        kiln.display(),
        quoted.join(" ")
    );
    let mut child = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env("KILN_RUNTIME", test_runtime())
        .env("KILN_ROOT", env.root())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("script (util-linux) runs");
    let mut stdin = child.stdin.take().unwrap();
    std::thread::sleep(Duration::from_secs(1));
    stdin.write_all(input.as_bytes()).unwrap();
    // Kept open until the end: at end of input script would hang up.
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let status = child.wait().unwrap();
    drop(stdin);
    (status.code().unwrap_or(-1), out)
}

#[test]
#[cfg_attr(not(kiln_containers), ignore = "needs root and /bin/busybox")]
fn terminal_in_the_foreground() {
    let env = Env::new();
    // Through a terminal: the container's own pty, the caller's size.
    let (code, out) = on_terminal(
        &env,
        &[
            "run",
            "--rm",
            "-t",
            "busybox:test",
            "sh",
            "-c",
            "tty; stty size; exit 3",
        ],
        "",
    );
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("/dev/pts/0\r\n33 91\r\n"), "{out:?}");

    // An interactive shell: what is typed reaches it, its exit status is ours.
    let (code, out) = on_terminal(
        &env,
        &["run", "--rm", "-it", "busybox:test", "sh"],
        "echo he\"\"llo; exit 4\r",
    );
    assert_eq!(code, 4, "{out}");
    assert!(out.contains("\r\nhello\r\n"), "{out:?}");

    // Without a terminal, Docker's refusal.
    let (code, _, err) = env.run(&["run", "--rm", "-t", "busybox:test", "true"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("the input device is not a TTY"), "{err}");
}

#[test]
#[cfg_attr(not(kiln_containers), ignore = "needs root and /bin/busybox")]
fn detached_terminal_and_open_stdin_keep_a_shell_running() {
    let env = Env::new();
    // -dit: the shell waits on its terminal; what it prints is logged.
    let id = env.ok(&["run", "-dit", "--name", "shell", "busybox:test", "sh"]);
    let id = id.trim();
    let out = env.ok(&["run", "-d", "-t", "busybox:test", "sh", "-c", "tty"]);
    let tty = out.trim().to_owned();
    wait_for("tty output", || env.ok(&["logs", &tty]) == "/dev/pts/0\r\n");
    // -di: standard input stays open, so `cat` keeps running.
    env.ok(&["run", "-di", "--name", "reader", "busybox:test", "cat"]);
    std::thread::sleep(Duration::from_millis(500));
    let names = env.ok(&["ps", "--format", "{{.Names}}"]);
    assert!(
        names.contains("shell") && names.contains("reader"),
        "{names}"
    );
    // A container without either stops at the end of its input.
    let (code, _, _) = env.run(&["run", "--rm", "busybox:test", "cat"]);
    assert_eq!(code, 0);

    env.ok(&["kill", "shell"]);
    wait_for("exit", || !env.ok(&["ps", "-q"]).contains(&id[..12]));
    // start brings it back with a terminal again.
    env.ok(&["start", "shell"]);
    std::thread::sleep(Duration::from_millis(500));
    assert!(env.ok(&["ps", "--format", "{{.Names}}"]).contains("shell"));
}

#[test]
#[cfg_attr(not(kiln_containers), ignore = "needs root and /bin/busybox")]
fn image_volumes_are_anonymous_volumes_filled_from_the_image() {
    let env = Env::new();
    let tar = env.dir.path().join("vol.tar");
    let files = [("data/hello", "from the image\n")];
    std::fs::write(
        &tar,
        busybox_tar_with(&["sh", "cat", "ls", "stat"], false, &files),
    )
    .unwrap();
    let tar = tar.to_str().unwrap();
    env.ok(&[
        "import",
        "-c",
        "ENV PATH=/bin",
        "-c",
        "VOLUME /data",
        tar,
        "vol:test",
    ]);
    let volumes = || -> Vec<String> {
        match std::fs::read_dir(env.root().join("volumes")) {
            Ok(d) => d
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect(),
            Err(_) => Vec::new(),
        }
    };

    // The image's files and owner are copied in; writes go to the volume.
    let out = env.ok(&[
        "run",
        "--name",
        "v1",
        "vol:test",
        "sh",
        "-c",
        "cat /data/hello; stat -c %u /data/hello; echo new > /data/new",
    ]);
    assert_eq!(out, "from the image\n1000\n");
    let anonymous = volumes();
    assert_eq!(anonymous.len(), 1, "{anonymous:?}");
    assert_eq!(anonymous[0].len(), 64);
    let data = env.root().join("volumes").join(&anonymous[0]).join("_data");
    assert_eq!(std::fs::read_to_string(data.join("new")).unwrap(), "new\n");
    // Started again: the same volume, not filled again.
    env.ok(&["start", "v1"]);
    env.ok(&["wait", "v1"]);
    assert_eq!(volumes(), anonymous);
    // A volume's contents are not part of the container's changes.
    env.ok(&["commit", "v1", "vol:committed"]);
    let out = env.ok(&["run", "--rm", "vol:committed", "ls", "/data"]);
    assert_eq!(out, "hello\n");
    assert_eq!(volumes(), anonymous, "--rm removed its own volume only");
    // rm -v removes the anonymous volume.
    env.ok(&["rm", "-v", "v1"]);
    assert!(volumes().is_empty(), "{:?}", volumes());

    // A mount on the same path replaces the image's volume; a new named
    // volume is filled from the image too, and kept by rm -v.
    let out = env.ok(&[
        "run",
        "--rm",
        "-v",
        "named:/data/",
        "vol:test",
        "cat",
        "/data/hello",
    ]);
    assert_eq!(out, "from the image\n");
    assert_eq!(volumes(), ["named"]);
    let host = env.dir.path().join("host");
    std::fs::create_dir(&host).unwrap();
    let bind = format!("{}:/data", host.display());
    let out = env.ok(&["run", "--rm", "-v", &bind, "vol:test", "ls", "/data"]);
    assert_eq!(out, "");
    assert_eq!(volumes(), ["named"]);
}

#[test]
#[cfg_attr(not(kiln_containers), ignore = "needs root and /bin/busybox")]
fn published_port_answers_on_localhost() {
    let env = Env::new();
    // A free port for the host side.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let publish = format!("{port}:8080");
    env.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "-p",
        &publish,
        "busybox:test",
        "sh",
        "-c",
        "while true; do echo hello | nc -l -p 8080; done",
    ]);
    let ps = env.ok(&["ps", "--format", "{{.Ports}}"]);
    assert_eq!(ps.trim(), format!("127.0.0.1:{port}->8080/tcp"));
    let mut answer = String::new();
    wait_for("the published port", || {
        answer.clear();
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
            return false;
        };
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let _ = s.write_all(b"ping\n");
        let _ = s.read_to_string(&mut answer);
        answer == "hello\n"
    });
    env.ok(&["rm", "-f", "web"]);
}

#[test]
#[cfg_attr(not(kiln_containers), ignore = "needs root and /bin/busybox")]
fn commit_and_rmi_refusal() {
    let env = Env::new();
    env.ok(&[
        "run",
        "--name",
        "changer",
        "busybox:test",
        "sh",
        "-c",
        "echo changed > /marker",
    ]);
    let id = env.ok(&[
        "commit",
        "-m",
        "add marker",
        "-c",
        "CMD [\"cat\", \"/marker\"]",
        "changer",
        "marked:v1",
    ]);
    assert!(id.starts_with("sha256:") && id.trim().len() == 71, "{id}");
    assert_eq!(env.ok(&["run", "--rm", "marked:v1"]), "changed\n");

    let (code, _, err) = env.run(&["rmi", "busybox:test"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("conflict: unable to remove repository reference \"busybox:test\" (must force) - container "),
        "{err}"
    );
    // image prune -a spares what a container uses; system df counts it.
    env.ok(&["image", "prune", "-a", "-f"]);
    let images = env.ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert!(images.contains("busybox:test"), "{images}");
    let df = env.ok(&[
        "system",
        "df",
        "--format",
        "{{.Type}} {{.TotalCount}} {{.Active}}",
    ]);
    assert!(
        df.contains("Images 1 1") && df.contains("Containers 1 0"),
        "{df}"
    );
    env.ok(&["rm", "changer"]);
    env.ok(&["image", "prune", "-a", "-f"]);
    assert_eq!(env.ok(&["images", "-q"]), "");
}

#[test]
#[cfg_attr(not(kiln_containers), ignore = "needs root and /bin/busybox")]
fn commit_pauses_a_running_container() {
    let env = Env::new();
    let id = env.ok(&[
        "run",
        "-d",
        "--name",
        "busy",
        "busybox:test",
        "sh",
        "-c",
        "echo live > /live; sleep 60",
    ]);
    let upper = env
        .root()
        .join("containers")
        .join(id.trim())
        .join("upper/live");
    wait_for("the container's file", || upper.exists());
    env.ok(&["commit", "-p=true", "busy", "live:v1"]);
    assert_eq!(
        env.ok(&["run", "--rm", "live:v1", "cat", "/live"]),
        "live\n"
    );
    // Resumed: it still runs and stops on SIGKILL.
    let running = env.ok(&["ps", "--format", "{{.Names}}"]);
    assert_eq!(running, "busy\n");
    env.ok(&["kill", "busy"]);
    assert_eq!(env.ok(&["wait", "busy"]), "137\n");
    env.ok(&["rm", "busy"]);
}
