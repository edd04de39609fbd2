//! Fault injection: kiln killed with SIGKILL or stopped with SIGINT at
//! random moments of `import`, `load`, `save`, `pull`, `push`, `build`,
//! `commit` and `rmi`. After each kill:
//!
//! - no process of the killed command survives it (kiln, its runtime
//!   helper, the build step) once the next kiln command has run (the
//!   embedded runtime's steps die with kiln; under runc the next kiln
//!   reaps them);
//! - a command stopped by SIGINT exits 130 and removes its own temporary
//!   files;
//! - after the next kiln command nothing is mounted under the store and no
//!   process lease is left; `system check` finds no problem;
//! - no tag is lost, and the retried command gives the same result as an
//!   uninterrupted run (same image id, same archive, same digest).
//!
//! `KILN_FAULT_KILLS` sets the kills per operation (default 10; the bench
//! script `benches/faults.sh` runs more). The random seed is printed, and
//! `KILN_FAULT_SEED` replays a run. Needs root (mounts) and
//! `docker-registry` for pull and push; skipped with the reason otherwise.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{busybox_tar_with, test_runtime};
use kiln_testkit::registry::LocalRegistry;

const APPLETS: &[&str] = &["sh", "dd", "sleep", "echo", "cat", "head", "yes", "true"];
/// Bytes of the incompressible file in the big image: enough for
/// transfers to take a moment.
const BIG: usize = 24 << 20;

/// A small deterministic generator (xorshift), for kill delays.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

fn incompressible(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

struct Env {
    dir: tempfile::TempDir,
    /// Marks the processes of this test's build steps.
    mark: String,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        static ENVS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = ENVS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mark = format!("kilnfault{}x{n}", std::process::id());
        let env = Env { dir, mark };
        std::fs::create_dir_all(env.path("config/kiln")).unwrap();
        std::fs::create_dir_all(env.path("out")).unwrap();
        env
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn store(&self) -> PathBuf {
        self.path("store")
    }

    fn command_in(&self, store: &Path, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_kiln"));
        c.args(args)
            .env("KILN_ROOT", store)
            .env("KILN_RUNTIME", test_runtime())
            .env("DOCKER_CONFIG", self.path("docker"))
            .env("XDG_CONFIG_HOME", self.path("config"))
            .env("SOURCE_DATE_EPOCH", "0")
            .env_remove("KILN_LOG")
            .stdin(Stdio::null());
        c
    }

    fn run_in(&self, store: &Path, args: &[&str]) -> (bool, String, String) {
        let out = self.command_in(store, args).output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn ok_in(&self, store: &Path, args: &[&str]) -> String {
        let (ok, stdout, stderr) = self.run_in(store, args);
        assert!(ok, "kiln {args:?} failed:\n{stdout}{stderr}");
        stdout
    }

    fn ok(&self, args: &[&str]) -> String {
        self.ok_in(&self.store(), args)
    }

    fn id(&self, store: &Path, name: &str) -> String {
        self.ok_in(store, &["inspect", "-f", "{{.Id}}", name])
            .trim()
            .to_owned()
    }

    fn tags(&self) -> BTreeSet<String> {
        self.ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"])
            .lines()
            .filter(|l| !l.contains("<none>"))
            .map(str::to_owned)
            .collect()
    }

    /// Processes of this test's kiln commands and build steps: kiln and its
    /// helpers carry the store in their environment, build steps the mark
    /// in their command line.
    fn survivors(&self) -> Vec<String> {
        let store = format!("KILN_ROOT={}", self.store().display());
        let mut found = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|p| p.parse::<u32>().ok())
            else {
                continue;
            };
            let environ = std::fs::read(entry.path().join("environ")).unwrap_or_default();
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let cmd = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            let ours = environ.split(|b| *b == 0).any(|v| v == store.as_bytes())
                || cmd.contains(&self.mark);
            // Zombies (already dead, not yet reaped by their parent) have
            // an empty command line.
            if ours && !cmd.is_empty() {
                found.push(format!("{pid}: {cmd}"));
            }
        }
        found
    }

    fn mounts(&self) -> Vec<String> {
        let store = self.store();
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| Path::new(m).starts_with(&store))
            .map(str::to_owned)
            .collect()
    }

    fn leases(&self) -> Vec<String> {
        std::fs::read_dir(self.store().join("leases"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        // Even when the test failed: no process, no mount left behind.
        for s in self.survivors() {
            if let Some(pid) = s.split(':').next().and_then(|p| p.parse::<i32>().ok())
                && let Some(pid) = rustix::process::Pid::from_raw(pid)
            {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
        let _ = self.command_in(&self.store(), &["images"]).output();
        for m in self.mounts().iter().rev() {
            let _ = Command::new("umount").arg("-l").arg(m).status();
        }
    }
}

type Prepare<'a> = Box<dyn Fn(&Env, usize) + 'a>;
type Args<'a> = Box<dyn Fn(usize) -> Vec<String> + 'a>;
type Verify<'a> = Box<dyn Fn(&Env, usize, &str) + 'a>;

/// One operation under test.
struct Op<'a> {
    name: &'a str,
    /// Before each attempt (not timed, not killed).
    prepare: Prepare<'a>,
    /// The command, for attempt `i`.
    args: Args<'a>,
    /// After the retry succeeded: checks its result (its stdout).
    verify: Verify<'a>,
}

const SIGINT: i32 = 2;
const SIGKILL: i32 = 9;

fn send(pid: u32, sig: i32) {
    if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
        let sig = if sig == SIGINT {
            rustix::process::Signal::INT
        } else {
            rustix::process::Signal::KILL
        };
        let _ = rustix::process::kill_process(pid, sig);
    }
}

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < timeout, "{what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `op` once uninterrupted (to time it), then `kills` times killed at
/// a random moment within that time and retried.
fn exercise(env: &Env, op: &Op<'_>, kills: usize, rng: &mut Rng) {
    (op.prepare)(env, 0);
    let args = (op.args)(0);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let start = Instant::now();
    let out = env.ok(&args);
    let took = start.elapsed();
    (op.verify)(env, 0, &out);
    eprintln!("{}: an uninterrupted run takes {took:?}", op.name);

    for i in 1..=kills {
        (op.prepare)(env, i);
        let tags_before = env.tags();
        let args = (op.args)(i);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let sig = if i % 2 == 0 { SIGINT } else { SIGKILL };
        let delay = Duration::from_millis(rng.below(took.as_millis() as u64 + 1));
        let mut child = env
            .command_in(&env.store(), &args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        let finished_first = child.try_wait().unwrap().is_some();
        send(child.id(), sig);
        let start = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "{} attempt {i}: kiln did not stop within 10 s of signal {sig}",
                op.name
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        let context = format!("{} attempt {i}, signal {sig} after {delay:?}", op.name);
        if sig == SIGINT && !finished_first {
            let mut stderr = String::new();
            use std::io::Read;
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut stderr)
                .unwrap();
            // Finishing just before the signal arrived is fine too, and so
            // is dying of it before kiln's handler is installed (the first
            // milliseconds of the process; the next kiln mends that).
            use std::os::unix::process::ExitStatusExt;
            assert!(
                matches!(status.code(), Some(130) | Some(0)) || status.signal() == Some(SIGINT),
                "{context}: exit {status}:\n{stderr}"
            );
            if status.code() == Some(130) {
                assert!(
                    env.leases().is_empty(),
                    "{context}: its temporary files are left: {:?}",
                    env.leases()
                );
            }
        }
        // The embedded runtime's processes die with kiln, at once.
        if test_runtime() == "embedded" {
            wait_for(
                &format!("{context}: processes survive: {:?}", env.survivors()),
                Duration::from_secs(5),
                || env.survivors().is_empty(),
            );
        }

        // The next kiln command mends what is left.
        env.ok(&["images"]);
        wait_for(
            &format!(
                "{context}: processes survive the next command: {:?}",
                env.survivors()
            ),
            Duration::from_secs(5),
            || env.survivors().is_empty(),
        );
        assert_eq!(env.mounts(), Vec::<String>::new(), "{context}: mounts left");
        assert_eq!(env.leases(), Vec::<String>::new(), "{context}: leases left");
        let (ok, stdout, stderr) = env.run_in(&env.store(), &["system", "check", "--fast"]);
        assert!(ok, "{context}: system check:\n{stdout}{stderr}");
        let tags_after = env.tags();
        let lost: Vec<_> = tags_before.difference(&tags_after).collect();
        if op.name != "rmi" {
            assert!(lost.is_empty(), "{context}: tags lost: {lost:?}");
        }

        // The retry gives what an uninterrupted run gives.
        let (ok, stdout, stderr) = env.run_in(&env.store(), &args);
        if op.name == "rmi" && !ok && stderr.contains("No such image") {
            (op.verify)(env, i, "");
        } else {
            assert!(ok, "{context}: the retry failed:\n{stdout}{stderr}");
            (op.verify)(env, i, &stdout);
        }
    }
    let (ok, stdout, stderr) = env.run_in(&env.store(), &["system", "check"]);
    assert!(ok, "{}: full system check:\n{stdout}{stderr}", op.name);
}

#[test]
#[cfg_attr(not(kiln_containers), ignore = "needs root and /bin/busybox")]
fn killed_and_interrupted_commands_leave_nothing_behind() {
    let kills: usize = std::env::var("KILN_FAULT_KILLS")
        .ok()
        .and_then(|k| k.parse().ok())
        .unwrap_or(10);
    let seed: u64 = std::env::var("KILN_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("KILN_FAULT_SEED={seed}");
    let mut rng = Rng(seed | 1);
    let env = Env::new();
    let registry = LocalRegistry::start();

    // A base image, and a big one (busybox and an incompressible file).
    let base = env.path("base.tar");
    std::fs::write(&base, busybox_tar_with(APPLETS, true, &[])).unwrap();
    env.ok(&[
        "import",
        "-c",
        "ENV PATH=/bin",
        base.to_str().unwrap(),
        "busybox:test",
    ]);
    let rootfs = env.path("big-rootfs.tar");
    {
        let mut b = tar::Builder::new(Vec::new());
        let data = incompressible(BIG, 7);
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(1);
        b.append_data(&mut h, "big.bin", &data[..]).unwrap();
        std::fs::write(&rootfs, b.into_inner().unwrap()).unwrap();
    }
    let rootfs = rootfs.to_str().unwrap().to_owned();
    env.ok(&["import", &rootfs, "big:1"]);
    let big_id = env.id(&env.store(), "big:1");
    let archive = env.path("big.tar");
    env.ok(&["save", "-o", archive.to_str().unwrap(), "big:1"]);
    let archive = archive.to_str().unwrap().to_owned();
    let saved = std::fs::read(&archive).unwrap();

    let import = Op {
        name: "import",
        prepare: Box::new(|env, _| {
            let _ = env.run_in(&env.store(), &["rmi", "imported:1"]);
        }),
        args: Box::new(|_| vec!["import".into(), rootfs.clone(), "imported:1".into()]),
        verify: Box::new(|env, _, _| assert_eq!(env.id(&env.store(), "imported:1"), big_id)),
    };
    let load = Op {
        name: "load",
        prepare: Box::new(|env, _| {
            // Delete, so that the load writes everything again.
            let _ = env.run_in(&env.store(), &["rmi", "-f", &big_id]);
        }),
        args: Box::new(|_| vec!["load".into(), "-i".into(), archive.clone()]),
        verify: Box::new(|env, _, _| assert_eq!(env.id(&env.store(), "big:1"), big_id)),
    };
    let out = env.path("out/saved.tar");
    let out_str = out.to_str().unwrap().to_owned();
    let save = Op {
        name: "save",
        prepare: Box::new(|_, _| {
            let _ = std::fs::remove_file(&out);
        }),
        args: Box::new(|_| vec!["save".into(), "-o".into(), out_str.clone(), "big:1".into()]),
        verify: Box::new(|env, _, _| {
            assert_eq!(std::fs::read(&out).unwrap(), saved, "the archive differs");
            let left: Vec<_> = std::fs::read_dir(env.path("out"))
                .unwrap()
                .flatten()
                .map(|e| e.file_name())
                .filter(|n| n != "saved.tar")
                .collect();
            assert!(left.is_empty(), "partial archives left: {left:?}");
        }),
    };
    // Each build misses the cache (its argument differs) and runs a step
    // that writes and waits; uninterrupted, it gives the same image as in a
    // fresh store.
    let ctx = env.path("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("ctx.bin"), incompressible(4 << 20, 3)).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM busybox:test\nARG N\nRUN echo $N > /n && yes {mark} | head -c 8000000 > /yes && sleep 0.3 # {mark}\nCOPY ctx.bin /\n",
            mark = env.mark
        ),
    )
    .unwrap();
    let ctx_str = ctx.to_str().unwrap().to_owned();
    let build_args = |i: usize| -> Vec<String> {
        vec![
            "build".into(),
            "--network".into(),
            "none".into(),
            "--build-arg".into(),
            format!("N={i}"),
            "-t".into(),
            format!("built:{i}"),
            ctx_str.clone(),
        ]
    };
    let fresh = env.path("fresh-store");
    let build = Op {
        name: "build",
        prepare: Box::new(|_, _| {}),
        args: Box::new(build_args),
        verify: Box::new(|env, i, _| {
            let _ = std::fs::remove_dir_all(&fresh);
            env.ok_in(
                &fresh,
                &[
                    "import",
                    "-c",
                    "ENV PATH=/bin",
                    base.to_str().unwrap(),
                    "busybox:test",
                ],
            );
            let args = build_args(i);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            env.ok_in(&fresh, &args);
            let tag = format!("built:{i}");
            assert_eq!(env.id(&env.store(), &tag), env.id(&fresh, &tag), "{tag}");
            env.ok_in(&fresh, &["rmi", &tag]);
        }),
    };
    let commit = Op {
        name: "commit",
        prepare: Box::new(|env, i| {
            let name = format!("c{i}");
            env.ok(&[
                "run",
                "--network",
                "none",
                "--name",
                &name,
                "busybox:test",
                "sh",
                "-c",
                "yes kiln | head -c 16000000 > /data",
            ]);
        }),
        args: Box::new(|i| vec!["commit".into(), format!("c{i}"), format!("committed:{i}")]),
        verify: Box::new(|env, i, _| {
            env.ok(&["inspect", &format!("committed:{i}")]);
            env.ok(&["rm", &format!("c{i}")]);
        }),
    };
    let rmi = Op {
        name: "rmi",
        prepare: Box::new(|env, i| {
            env.ok(&["tag", "big:1", &format!("doomed:{i}")]);
            env.ok(&["import", &rootfs, &format!("alone:{i}")]);
        }),
        args: Box::new(|i| vec!["rmi".into(), format!("doomed:{i}")]),
        verify: Box::new(|env, i, _| {
            // The other tag of the image is untouched.
            assert_eq!(env.id(&env.store(), "big:1"), big_id);
            let (gone, _, _) = env.run_in(&env.store(), &["inspect", &format!("doomed:{i}")]);
            assert!(!gone, "doomed:{i} is still there");
        }),
    };

    let mut ops = vec![import, load, save, build, commit, rmi];
    if let Some(registry) = &registry {
        let host = registry.host.clone();
        env.ok(&["tag", "big:1", &format!("{host}/big:1")]);
        env.ok(&["push", &format!("{host}/big:1")]);
        let remote = format!("{host}/big:1");
        let (remote2, id2) = (remote.clone(), big_id.clone());
        ops.push(Op {
            name: "pull",
            prepare: Box::new({
                let id = big_id.clone();
                move |env, _| {
                    // Delete, so that the pull downloads everything again.
                    let _ = env.run_in(&env.store(), &["rmi", "-f", &id]);
                }
            }),
            args: Box::new(move |_| vec!["pull".into(), remote.clone()]),
            verify: Box::new(move |env, _, _| {
                assert_eq!(env.id(&env.store(), &remote2), id2);
                env.ok(&["tag", &remote2, "big:1"]);
            }),
        });
        let (h1, h2, h3) = (host.clone(), host.clone(), host);
        ops.push(Op {
            name: "push",
            prepare: Box::new(move |env, i| {
                env.ok(&["tag", "big:1", &format!("{h1}/pushed{i}:1")]);
            }),
            args: Box::new(move |i| vec!["push".into(), format!("{h2}/pushed{i}:1")]),
            verify: Box::new(move |env, i, out| {
                let digest = env.ok(&[
                    "inspect",
                    "-f",
                    "{{index .RepoDigests 0}}",
                    &format!("{h3}/pushed{i}:1"),
                ]);
                let digest = digest.trim().rsplit('@').next().unwrap().to_owned();
                assert!(out.contains(&digest), "push printed no {digest}:\n{out}");
            }),
        });
    }
    for op in &ops {
        exercise(&env, op, kills, &mut rng);
    }
}

/// Builds racing `rmi` and `image prune -a` of their base image: the base
/// is untagged, not deleted, while a build uses it, and no build fails.
#[test]
#[cfg_attr(not(kiln_containers), ignore = "needs root and /bin/busybox")]
fn builds_keep_their_base_image_while_rmi_and_prune_race_them() {
    let env = Env::new();
    let base = env.path("base.tar");
    std::fs::write(&base, busybox_tar_with(APPLETS, true, &[])).unwrap();
    let ctx = env.path("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM base:race\nARG N\nRUN echo $N > /n && sh -c 'sleep 1; true' {}\nRUN cat /n\n",
            env.mark
        ),
    )
    .unwrap();
    let ctx = ctx.to_str().unwrap();
    for round in 0..3 {
        env.ok(&[
            "import",
            "-c",
            "ENV PATH=/bin",
            base.to_str().unwrap(),
            "base:race",
        ]);
        let builds: Vec<Child> = (0..2)
            .map(|b| {
                env.command_in(
                    &env.store(),
                    &[
                        "build",
                        "--network",
                        "none",
                        "--build-arg",
                        &format!("N={round}-{b}"),
                        "-t",
                        &format!("raced:{round}-{b}"),
                        ctx,
                    ],
                )
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
            })
            .collect();
        // Both builds are in their first step: they resolved the base.
        wait_for(
            "the builds' steps did not start",
            Duration::from_secs(60),
            || {
                std::fs::read_dir("/proc")
                    .unwrap()
                    .flatten()
                    .filter(|e| {
                        std::fs::read(e.path().join("cmdline"))
                            .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&env.mark))
                    })
                    .count()
                    >= 2
            },
        );
        let rmi = env.ok(&["rmi", "base:race"]);
        assert!(rmi.contains("Untagged: base:race"), "{rmi}");
        assert!(
            !rmi.contains("Deleted"),
            "a base in use was deleted:\n{rmi}"
        );
        env.ok(&["image", "prune", "-a", "-f"]);
        for (b, child) in builds.into_iter().enumerate() {
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "round {round}, build {b} failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        // Unused now: the next prune takes it.
        env.ok(&["image", "prune", "-a", "-f"]);
        let images = env.ok(&["images", "-q"]);
        assert!(images.trim().is_empty(), "left after prune: {images}");
    }
    let (ok, stdout, stderr) = env.run_in(&env.store(), &["system", "check", "--fast"]);
    assert!(ok, "{stdout}{stderr}");
}
