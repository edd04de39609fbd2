//! `kiln build` with the real binary, real overlayfs and the OCI runtime of
//! `KILN_TEST_RUNTIME` (embedded by default, or runc), on a
//! busybox image made inside the test from Debian's busybox-static.
//! Needs root, /bin/busybox (and runc for the runc runs; scripts/test.sh
//! installs both); each test prints why and returns when they are missing.

use std::path::PathBuf;

use assert_cmd::Command;

struct Env {
    dir: tempfile::TempDir,
}

mod common;
use common::{busybox_tar, test_runtime};

impl Env {
    fn new() -> Env {
        Env::with_base(None)
    }

    /// An environment whose base image is imported with `epoch` as
    /// `SOURCE_DATE_EPOCH` (the same base on every "machine").
    fn with_base(epoch: Option<&str>) -> Env {
        let env = Env {
            dir: tempfile::tempdir().unwrap(),
        };
        // A busybox base image, imported like any rootfs tarball.
        let applets = [
            "sh", "echo", "cat", "ls", "mkdir", "cp", "test", "id", "touch", "rm", "stat", "env",
            "true", "sleep",
        ];
        let tar = env.path("busybox.tar");
        std::fs::write(&tar, busybox_tar(&applets, true)).unwrap();
        let mut import = env.kiln();
        if let Some(epoch) = epoch {
            import.env("SOURCE_DATE_EPOCH", epoch);
        }
        import
            .args(["import", "-c", "ENV PATH=/bin"])
            .arg(&tar)
            .arg("busybox:test")
            .assert()
            .success();
        env
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn kiln(&self) -> Command {
        let mut c = Command::cargo_bin("kiln").unwrap();
        c.env("KILN_RUNTIME", test_runtime());
        c.env("KILN_ROOT", self.path("store"))
            .env_remove("SOURCE_DATE_EPOCH");
        c
    }

    fn ok(&self, args: &[&str]) -> (String, String) {
        let out = self.kiln().args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "kiln {args:?} failed:\n{stderr}");
        (String::from_utf8(out.stdout).unwrap(), stderr)
    }

    /// Writes a context directory with `files`.
    fn context(&self, name: &str, files: &[(&str, &str)]) -> PathBuf {
        let dir = self.path(name);
        for (p, content) in files {
            let f = dir.join(p);
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(f, content).unwrap();
        }
        dir
    }
}

#[test]
#[cfg_attr(not(kiln_containers), ignore = "needs root and /bin/busybox")]
fn multi_stage_build_produces_the_image() {
    let env = Env::new();
    let ctx = env.context(
        "app",
        &[
            (
                "Dockerfile",
                "FROM busybox:test AS build\nARG GREETING=hello\nWORKDIR /src\nCOPY . .\nRUN echo \"$GREETING from $(id -u)\" > /out.txt && test -f /src/app.sh\n\nFROM busybox:test\nENV MODE=prod\nCOPY --from=build --chown=app:app /out.txt /srv/\nCOPY --chmod=0755 app.sh /usr/local/bin/app\nUSER app\nWORKDIR /srv\nENTRYPOINT [\"/usr/local/bin/app\"]\nCMD [\"--now\"]\n",
            ),
            ("app.sh", "#!/bin/sh\necho app\n"),
            ("secret.key", "do not copy"),
            (".dockerignore", "*.key\n"),
        ],
    );
    let ctx_s = ctx.to_str().unwrap();
    let (_, stderr) = env.ok(&[
        "build",
        "--progress",
        "plain",
        "--build-arg",
        "GREETING=hi",
        "-t",
        "app:1",
        ctx_s,
    ]);
    assert!(
        stderr.contains("naming to docker.io/library/app:1 done"),
        "{stderr}"
    );
    let (cfg, _) = env.ok(&["inspect", "-f", "{{json .Config.Env}} {{json .Config.Entrypoint}} {{json .Config.Cmd}} {{.Config.User}} {{.Config.WorkingDir}}", "app:1"]);
    assert_eq!(
        cfg.trim(),
        r#"["PATH=/bin","MODE=prod"] ["/usr/local/bin/app"] ["--now"] app /srv"#
    );

    let out = env.path("fs");
    env.ok(&[
        "build",
        "-q",
        "--build-arg",
        "GREETING=hi",
        "-o",
        &format!("type=local,dest={}", out.display()),
        ctx_s,
    ]);
    assert_eq!(
        std::fs::read_to_string(out.join("srv/out.txt")).unwrap(),
        "hi from 0\n"
    );
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = std::fs::metadata(out.join("srv/out.txt")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (1000, 1000));
    assert_eq!(
        std::fs::metadata(out.join("usr/local/bin/app"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o755
    );

    // The build stage saw the context minus .dockerignore'd files.
    let ctx_out = env.path("buildfs");
    env.ok(&[
        "build",
        "-q",
        "--target",
        "build",
        "-o",
        &format!("type=local,dest={}", ctx_out.display()),
        ctx_s,
    ]);
    assert!(ctx_out.join("src/app.sh").exists());
    assert!(!ctx_out.join("src/secret.key").exists());
}

#[test]
#[cfg_attr(not(kiln_containers), ignore = "needs root and /bin/busybox")]
fn rebuild_is_cached_and_a_change_reruns_only_what_depends_on_it() {
    let env = Env::new();
    let ctx = env.context(
        "c",
        &[
            ("Dockerfile", "FROM busybox:test\nRUN echo base > /base\nCOPY a.txt /a.txt\nRUN cat /a.txt > /copy\n"),
            ("a.txt", "one"),
        ],
    );
    let ctx_s = ctx.to_str().unwrap();
    env.ok(&["build", "-t", "c:1", ctx_s]);
    let (_, stderr) = env.ok(&[
        "build",
        "--progress",
        "plain",
        "--explain",
        "-t",
        "c:1",
        ctx_s,
    ]);
    // Context, FROM, two RUNs and the COPY.
    assert_eq!(stderr.matches("CACHED").count(), 5, "{stderr}");
    assert!(
        stderr.contains("every step came from the cache"),
        "{stderr}"
    );
    // Touching keeps the cache; changing content reruns the COPY and what follows.
    let f = ctx.join("a.txt");
    std::fs::write(&f, "one").unwrap();
    let (_, stderr) = env.ok(&["build", "--progress", "plain", ctx_s]);
    assert_eq!(stderr.matches("CACHED").count(), 5, "{stderr}");
    std::fs::write(&f, "two").unwrap();
    let (_, stderr) = env.ok(&["build", "--progress", "plain", "--explain", ctx_s]);
    assert_eq!(stderr.matches("CACHED").count(), 2, "{stderr}");
    assert!(stderr.contains("explain:"), "{stderr}");
}

#[test]
#[cfg_attr(not(kiln_containers), ignore = "needs root and /bin/busybox")]
fn failing_step_shows_its_output_and_line() {
    let env = Env::new();
    let ctx = env.context(
        "f",
        &[(
            "Dockerfile",
            "FROM busybox:test\nRUN echo before && exit 3\n",
        )],
    );
    let out = env
        .kiln()
        .args(["build", "--progress", "plain"])
        .arg(&ctx)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("#2 0."), "{stderr}");
    assert!(stderr.contains("before"), "{stderr}");
    assert!(stderr.contains(">>> RUN echo before && exit 3"), "{stderr}");
    assert!(
        stderr.contains("did not complete successfully: exit code: 3"),
        "{stderr}"
    );
}

#[test]
#[cfg_attr(not(kiln_containers), ignore = "needs root and /bin/busybox")]
fn quiet_prints_only_the_id_and_iidfile_matches() {
    let env = Env::new();
    let ctx = env.context("q", &[("Dockerfile", "FROM busybox:test\nLABEL a=b\n")]);
    let iid = env.path("iid");
    let (stdout, _) = env.ok(&[
        "build",
        "-q",
        "--iidfile",
        iid.to_str().unwrap(),
        ctx.to_str().unwrap(),
    ]);
    assert!(
        stdout.trim().starts_with("sha256:") && stdout.lines().count() == 1,
        "{stdout}"
    );
    assert_eq!(std::fs::read_to_string(iid).unwrap(), stdout.trim());
}

#[test]
#[cfg_attr(not(kiln_containers), ignore = "needs root and /bin/busybox")]
fn cached_rebuild_keeps_the_image_id() {
    let env = Env::new();
    let ctx = env.context(
        "s",
        &[(
            "Dockerfile",
            "FROM busybox:test\nRUN echo x > /x\nENV A=1\n",
        )],
    );
    let ctx_s = ctx.to_str().unwrap();
    let (first, _) = env.ok(&["build", "-q", "-t", "s:1", ctx_s]);
    let (second, _) = env.ok(&["build", "-q", "-t", "s:1", ctx_s]);
    assert_eq!(first, second);
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox:test\nRUN echo x > /x\nENV A=2\n",
    )
    .unwrap();
    let (third, _) = env.ok(&["build", "-q", "-t", "s:1", ctx_s]);
    assert_ne!(first, third);
}

#[test]
#[cfg_attr(not(kiln_containers), ignore = "needs root and /bin/busybox")]
fn build_checks_warn_and_can_fail_the_build() {
    let env = Env::new();
    let ctx = env.context(
        "l",
        &[(
            "Dockerfile",
            "FROM busybox:test\nMAINTAINER me\nENV API_TOKEN=x\nCMD echo hi\n",
        )],
    );
    let (_, stderr) = env.ok(&["build", "--progress", "plain", ctx.to_str().unwrap()]);
    for rule in [
        "MaintainerDeprecated",
        "SecretsUsedInArgOrEnv",
        "JSONArgsRecommended",
    ] {
        assert!(stderr.contains(rule), "{rule}: {stderr}");
    }
    std::fs::write(
        ctx.join("Dockerfile"),
        "# check=skip=MaintainerDeprecated,SecretsUsedInArgOrEnv;error=true\nFROM busybox:test\nMAINTAINER me\nENV API_TOKEN=x\nCMD echo hi\n",
    )
    .unwrap();
    let out = env.kiln().args(["build"]).arg(&ctx).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("failed to solve: lint violation found for rules: JSONArgsRecommended"),
        "{stderr}"
    );
    assert!(stderr.contains(">>> CMD echo hi"), "{stderr}");
}

#[test]
#[cfg_attr(not(kiln_containers), ignore = "needs root and /bin/busybox")]
fn source_date_epoch_builds_are_identical_across_stores_and_times() {
    let epoch = "1700000000";
    let dockerfile = "FROM busybox:test AS gen\n\
        RUN mkdir -p /out/sub && echo generated > /out/sub/g && touch /out/empty\n\
        FROM busybox:test\n\
        WORKDIR /app\n\
        COPY . .\n\
        COPY --from=gen /out/ /gen/\n\
        RUN echo built > /app/stamp && mkdir /var && touch /var/log-file && rm /app/drop.txt\n\
        ENV MODE=release\n\
        CMD [\"cat\", \"/app/stamp\"]\n";
    let files = [
        ("Dockerfile", dockerfile),
        ("src/main.sh", "echo main\n"),
        ("drop.txt", "removed in a later layer\n"),
    ];
    // Two "machines": separate stores, contexts written at different
    // times, builds a second apart.
    let mut archives = Vec::new();
    let mut ids = Vec::new();
    for round in 0..2 {
        if round == 1 {
            std::thread::sleep(std::time::Duration::from_millis(1100));
        }
        let env = Env::with_base(Some(epoch));
        let ctx = env.context("ctx", &files);
        let dest = env.path("image.tar");
        let out = env
            .kiln()
            .env("SOURCE_DATE_EPOCH", epoch)
            .args(["build", "-q", "-t", "repro:1", "-o"])
            .arg(format!("type=oci,dest={}", dest.display()))
            .arg(&ctx)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        ids.push(String::from_utf8(out.stdout).unwrap());
        archives.push(std::fs::read(&dest).unwrap());
        // Into the store, the epoch as BuildKit's build argument: the
        // same image, its times the epoch.
        let out = env
            .kiln()
            .args(["build", "-q", "-t", "repro:1", "--build-arg"])
            .arg(format!("SOURCE_DATE_EPOCH={epoch}"))
            .arg(&ctx)
            .output()
            .unwrap();
        assert_eq!(String::from_utf8(out.stdout).unwrap(), ids[round]);
        let (created, _) = env.ok(&["inspect", "-f", "{{.Created}}", "repro:1"]);
        assert_eq!(created.trim(), "2023-11-14T22:13:20Z");
    }
    assert_eq!(ids[0], ids[1]);
    assert!(archives[0] == archives[1], "the OCI archives differ");
}

#[test]
#[cfg_attr(not(kiln_containers), ignore = "needs root and /bin/busybox")]
fn named_build_contexts_from_directories_and_images() {
    let env = Env::new();
    let extra = env.context("extra", &[("x.txt", "from extra\n"), ("sub/y.txt", "y\n")]);
    let ctx = env.context(
        "app",
        &[(
            "Dockerfile",
            "FROM base AS b\n\
             RUN echo on-base > /on-base\n\
             FROM b\n\
             COPY --from=extra x.txt /x.txt\n\
             COPY --from=tools /bin/busybox /tools/busybox\n\
             RUN --mount=from=extra,target=/mnt cat /mnt/sub/y.txt > /y.txt\n",
        )],
    );
    let extra_arg = format!("extra={}", extra.display());
    let out = env.path("out");
    env.ok(&[
        "build",
        "-q",
        "--build-context",
        "base=docker-image://busybox:test",
        "--build-context",
        "tools=docker-image://docker.io/library/busybox:test",
        "--build-context",
        &extra_arg,
        "-o",
        &format!("type=local,dest={}", out.display()),
        ctx.to_str().unwrap(),
    ]);
    let read = |p: &str| std::fs::read_to_string(out.join(p)).unwrap();
    assert_eq!(read("on-base"), "on-base\n");
    assert_eq!(read("x.txt"), "from extra\n");
    assert_eq!(read("y.txt"), "y\n");
    assert!(out.join("tools/busybox").is_file());

    // A directory as the base of a stage: its files are the first layer.
    std::fs::write(ctx.join("Dockerfile"), "FROM extra\nCOPY Dockerfile /\n").unwrap();
    env.ok(&[
        "build",
        "-q",
        "-t",
        "fromdir:1",
        "--build-context",
        &extra_arg,
        ctx.to_str().unwrap(),
    ]);
    let (layers, _) = env.ok(&["inspect", "-f", "{{len .RootFS.Layers}}", "fromdir:1"]);
    assert_eq!(layers.trim(), "2");
    let out = env.path("out2");
    env.ok(&[
        "build",
        "-q",
        "--build-context",
        &extra_arg,
        "-o",
        &format!("type=local,dest={}", out.display()),
        ctx.to_str().unwrap(),
    ]);
    assert!(out.join("x.txt").is_file() && out.join("sub/y.txt").is_file());
    assert!(out.join("Dockerfile").is_file());

    // Other kinds of context are refused clearly.
    let bad = env
        .kiln()
        .args(["build", "--build-context", "x=https://example.com/x.git"])
        .arg(&ctx)
        .output()
        .unwrap();
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("https:// contexts are not supported"), "{err}");
}
