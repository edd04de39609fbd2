//! `kiln builder du` / `kiln builder prune`, the automatic build-cache
//! collection and `kiln build --explain` naming changed files, with the
//! real binary. Building needs root, the runtime under test and /bin/busybox; each test
//! prints why and returns when they are missing.

use std::path::PathBuf;

use assert_cmd::Command;

mod common;
use common::{busybox_tar, test_runtime};

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        Env {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// With a busybox base image tagged `busybox:test`.
    fn with_base() -> Env {
        let env = Env::new();
        let tar = env.path("busybox.tar");
        std::fs::write(&tar, busybox_tar(&["sh", "echo", "cat", "true"], false)).unwrap();
        env.ok(&[
            "import",
            "-c",
            "ENV PATH=/bin",
            tar.to_str().unwrap(),
            "busybox:test",
        ]);
        env
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn kiln(&self) -> Command {
        let mut c = Command::cargo_bin("kiln").unwrap();
        c.env("KILN_RUNTIME", test_runtime());
        c.env("KILN_ROOT", self.path("store"))
            .env_remove("KILN_GC_KEEP_STORAGE")
            .env_remove("SOURCE_DATE_EPOCH");
        c
    }

    fn ok(&self, args: &[&str]) -> (String, String) {
        let out = self.kiln().args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "kiln {args:?} failed:\n{stderr}");
        (String::from_utf8(out.stdout).unwrap(), stderr)
    }

    fn context(&self, files: &[(&str, &str)]) -> PathBuf {
        let dir = self.path("ctx");
        for (p, content) in files {
            let f = dir.join(p);
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(f, content).unwrap();
        }
        dir
    }
}

const DOCKERFILE: &str = "FROM busybox:test\nCOPY a.txt /a.txt\nRUN cat /a.txt > /b.txt\n";

/// Data rows of `builder du` (without header and totals).
fn du_rows(out: &str) -> Vec<String> {
    out.lines()
        .skip(1)
        .take_while(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

#[test]
fn empty_cache_du_and_prune() {
    let env = Env::new();
    let (out, _) = env.ok(&["builder", "du"]);
    assert_eq!(
        out,
        "Shared:        0B\nPrivate:       0B\nReclaimable:   0B\nTotal:         0B\n"
    );
    let (out, _) = env.ok(&["builder", "prune", "-f"]);
    assert_eq!(out, "Total reclaimed space: 0B\n");
}

#[test]
fn prune_asks_first_and_rejects_bad_filters() {
    let env = Env::new();
    let out = env
        .kiln()
        .args(["builder", "prune", "-a"])
        .write_stdin("n\n")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "WARNING! This will remove all build cache. Are you sure you want to continue? [y/N] "
    );
    let out = env
        .kiln()
        .args(["builder", "prune"])
        .write_stdin("\n")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .starts_with("WARNING! This will remove all dangling build cache.")
    );
    for bad in [
        &["builder", "prune", "-f", "--filter", "until=soon"][..],
        &["builder", "prune", "-f", "--filter", "label=x"],
        &["builder", "prune", "-f", "--keep-storage", "lots"],
    ] {
        let out = env.kiln().args(bad).output().unwrap();
        assert!(!out.status.success(), "{bad:?} should fail");
    }
}

#[test]
#[cfg_attr(not(kiln_containers), ignore = "needs root and /bin/busybox")]
fn du_prune_and_explain_after_builds() {
    let env = Env::with_base();
    let ctx = env.context(&[("Dockerfile", DOCKERFILE), ("a.txt", "one")]);
    let ctx_s = ctx.to_str().unwrap();
    env.ok(&["build", "-q", "-t", "app:1", ctx_s]);

    let (out, _) = env.ok(&["builder", "du"]);
    let mut lines = out.lines();
    let header = lines.next().unwrap();
    assert!(
        header.starts_with("ID")
            && header.contains("RECLAIMABLE")
            && header.ends_with("LAST ACCESSED"),
        "{out}"
    );
    let rows = du_rows(&out);
    // Base image, context, COPY, RUN.
    assert_eq!(rows.len(), 4, "{out}");
    assert!(rows.iter().any(|r| r.contains(" true ")), "{out}");
    assert!(rows.iter().any(|r| r.contains(" false ")), "{out}");
    for total in ["Shared:", "Private:", "Reclaimable:", "Total:"] {
        assert!(out.contains(&format!("\n{total}")), "{out}");
    }
    let (verbose, _) = env.ok(&["builder", "du", "--verbose"]);
    assert!(
        verbose.contains("Description:   [stage-0 2/3] COPY a.txt /a.txt"),
        "{verbose}"
    );
    assert!(verbose.contains("Type:          regular"), "{verbose}");

    // A changed file is named by --explain.
    std::fs::write(ctx.join("a.txt"), "two").unwrap();
    let (_, stderr) = env.ok(&[
        "build",
        "--progress",
        "plain",
        "--explain",
        "-t",
        "app:1",
        ctx_s,
    ]);
    assert!(
        stderr.contains("ran: input 1 changed: context: a.txt changed"),
        "{stderr}"
    );

    // No record was used for longer than a day.
    let (out, _) = env.ok(&["builder", "prune", "-f", "--filter", "until=24h"]);
    assert_eq!(out, "Total reclaimed space: 0B\n");

    // Default: the dangling records (the context copies) go; what the
    // images use stays, so a rebuild only reloads the context.
    let (out, _) = env.ok(&["builder", "prune", "-f"]);
    assert!(out.starts_with("Deleted build cache objects:\n"), "{out}");
    assert!(out.contains("\nTotal reclaimed space: "), "{out}");
    let (_, stderr) = env.ok(&["build", "--progress", "plain", "-t", "app:1", ctx_s]);
    assert!(stderr.contains("CACHED"), "{stderr}");

    // --all: every record goes; the images keep their content.
    let (out, _) = env.ok(&["builder", "prune", "-a", "-f"]);
    assert!(out.starts_with("Deleted build cache objects:\n"), "{out}");
    let (out, _) = env.ok(&["builder", "du"]);
    assert!(out.starts_with("Shared:"), "{out}");
    let (images, _) = env.ok(&["images", "-q"]);
    assert!(!images.trim().is_empty());
    env.ok(&["system", "check"]);
}

#[test]
#[cfg_attr(not(kiln_containers), ignore = "needs root and /bin/busybox")]
fn automatic_collection_keeps_only_what_images_use() {
    let env = Env::with_base();
    let ctx = env.context(&[("Dockerfile", DOCKERFILE), ("a.txt", "one")]);
    let out = env
        .kiln()
        .env("KILN_GC_KEEP_STORAGE", "0")
        .args(["build", "-q", "-t", "app:1", ctx.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (out, _) = env.ok(&["builder", "du"]);
    let rows = du_rows(&out);
    assert!(!rows.is_empty(), "{out}");
    assert!(
        rows.iter().all(|r| r.contains(" false ")),
        "only records the image uses are left:\n{out}"
    );
}
