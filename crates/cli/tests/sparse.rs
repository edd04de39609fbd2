//! Files with holes with the real binary: layers holding GNU sparse
//! entries (old GNU and PAX formats, written by GNU tar) unpack, `ADD`
//! and export with their holes, and a layer larger than the free space
//! stops with a clear error. Needs root, the runtime under test,
//! /bin/busybox and GNU tar; each test prints why and returns when they
//! are missing.

use std::fs::File;
use std::io::Read as _;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command as Std;

use assert_cmd::Command;

mod common;
use common::{available, busybox_tar, test_runtime};

const GIB: u64 = 1 << 30;
/// Files with holes may allocate this much at most (data regions, rounded
/// up to the extractor's hole blocks).
const SMALL: u64 = 1 << 20;

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        Env {
            dir: tempfile::tempdir_in("/var/tmp").unwrap(),
        }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn kiln(&self) -> Command {
        let mut c = Command::cargo_bin("kiln").unwrap();
        c.env("KILN_RUNTIME", test_runtime())
            .env("KILN_ROOT", self.path("store"))
            .env_remove("SOURCE_DATE_EPOCH");
        c
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.kiln().args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "kiln {args:?} failed:\n{stderr}");
        String::from_utf8(out.stdout).unwrap()
    }

    /// A busybox base image, `busybox:test`.
    fn base(&self) {
        let tar = self.path("busybox.tar");
        std::fs::write(&tar, busybox_tar(&["sh", "stat", "cat", "ls"], true)).unwrap();
        self.ok(&[
            "import",
            "-c",
            "ENV PATH=/bin",
            tar.to_str().unwrap(),
            "busybox:test",
        ]);
    }
}

/// Whether GNU tar, which writes sparse entries, is here. Prints why not.
fn gnu_tar() -> bool {
    let ok = Std::new("tar")
        .arg("--version")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("GNU tar"));
    if !ok {
        eprintln!("skipping: needs GNU tar to write sparse archives");
    }
    ok
}

/// The data regions of the sparse test file of `size` bytes.
fn regions(size: u64) -> Vec<(u64, Vec<u8>)> {
    vec![
        (0, b"start".to_vec()),
        (size / 3 + 12345, vec![0xab; 5000]),
        (size - 4, b"end!".to_vec()),
    ]
}

/// Writes the sparse test file at `path`.
fn sparse_file(path: &Path, size: u64) {
    let f = File::create(path).unwrap();
    f.set_len(size).unwrap();
    for (off, data) in regions(size) {
        f.write_all_at(&data, off).unwrap();
    }
    let blocks = f.metadata().unwrap().blocks() * 512;
    assert!(blocks < SMALL, "the test filesystem keeps no holes");
}

/// Checks that `path` is the sparse test file, with its holes.
fn assert_sparse(path: &Path, size: u64) {
    let meta = std::fs::metadata(path).unwrap();
    assert_eq!(meta.len(), size, "{}", path.display());
    assert!(
        meta.blocks() * 512 <= SMALL,
        "{} allocates {} bytes",
        path.display(),
        meta.blocks() * 512
    );
    let f = File::open(path).unwrap();
    for (off, data) in regions(size) {
        let mut got = vec![0u8; data.len()];
        f.read_exact_at(&mut got, off).unwrap();
        assert_eq!(got, data, "{} at {off}", path.display());
        if off > 0 {
            let mut before = [1u8; 1];
            f.read_exact_at(&mut before, off - 1).unwrap();
            assert_eq!(before, [0], "{} at {}", path.display(), off - 1);
        }
    }
}

/// Runs GNU tar with `args` (all sparse-aware) in `dir`.
fn tar(dir: &Path, args: &[&str]) {
    let status = Std::new("tar")
        .arg("--sparse")
        .args(args)
        .current_dir(dir)
        .status()
        .unwrap();
    assert!(status.success(), "tar {args:?}");
}

/// Every file named `name` below `dir`.
fn find(dir: &Path, name: &str, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let ft = entry.file_type().unwrap();
        if ft.is_dir() {
            find(&entry.path(), name, out);
        } else if ft.is_file() && entry.file_name() == name {
            out.push(entry.path());
        }
    }
}

#[test]
fn sparse_layers_unpack_with_their_holes() {
    if !available() || !gnu_tar() {
        return;
    }
    let env = Env::new();
    let size = 8 * GIB;
    // A root filesystem with busybox and an 8 GiB file of 5 KB of data.
    let root = env.path("rootfs");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    for applet in ["sh", "stat"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    sparse_file(&root.join("big"), size);
    let formats: [(&str, &[&str]); 4] = [
        ("gnu", &["--format=gnu"]),
        ("pax10", &["--format=posix", "--sparse-version=1.0"]),
        ("pax01", &["--format=posix", "--sparse-version=0.1"]),
        ("pax00", &["--format=posix", "--sparse-version=0.0"]),
    ];
    for (name, args) in formats {
        let layer = env.path(&format!("{name}.tar"));
        let mut args = args.to_vec();
        let layer_s = layer.to_str().unwrap().to_owned();
        let root_s = root.to_str().unwrap().to_owned();
        args.extend(["-cf", &layer_s, "-C", &root_s, "."]);
        tar(&env.path(""), &args);
        assert!(std::fs::metadata(&layer).unwrap().len() < 8 << 20);
        let image = format!("sparse:{name}");
        env.ok(&["import", "-c", "ENV PATH=/bin", &layer_s, &image]);

        let started = std::time::Instant::now();
        let out = env.ok(&[
            "run",
            "--rm",
            "--network",
            "none",
            &image,
            "stat",
            "-c",
            "%s %b %B",
            "/big",
        ]);
        let took = started.elapsed();
        let fields: Vec<u64> = out.split_whitespace().map(|f| f.parse().unwrap()).collect();
        assert_eq!(fields[0], size, "{name}: {out}");
        assert!(fields[1] * fields[2] <= SMALL, "{name} allocates: {out}");
        eprintln!("{name}: run with an 8 GiB sparse file took {took:?}");
    }
    // The unpacked snapshots on the host: content and holes.
    let mut unpacked = Vec::new();
    find(&env.path("store/snapshots"), "big", &mut unpacked);
    assert_eq!(unpacked.len(), 4, "{unpacked:?}");
    for path in &unpacked {
        assert_sparse(path, size);
    }

    // `save` copies the small layer as stored, without reading the holes.
    let saved = env.path("saved.tar");
    env.ok(&["save", "-o", saved.to_str().unwrap(), "sparse:gnu"]);
    assert!(std::fs::metadata(&saved).unwrap().len() < 8 << 20);
}

#[test]
fn add_of_a_sparse_archive_keeps_the_holes_in_the_export() {
    if !available() || !gnu_tar() {
        return;
    }
    let env = Env::new();
    env.base();
    // The layer written for ADD holds the holes as zeros, as BuildKit
    // writes it: 1 GiB keeps that part of the test short.
    let size = GIB;
    let ctx = env.path("ctx");
    let src = env.path("src");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::create_dir_all(&src).unwrap();
    sparse_file(&src.join("big"), size);
    let layer = ctx.join("l.tar");
    tar(
        &src,
        &["--format=gnu", "-cf", layer.to_str().unwrap(), "big"],
    );
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox:test\nADD l.tar /added/\n",
    )
    .unwrap();
    let out = env.path("out");
    let started = std::time::Instant::now();
    env.ok(&[
        "build",
        "-q",
        "-o",
        &format!("type=local,dest={}", out.display()),
        ctx.to_str().unwrap(),
    ]);
    eprintln!(
        "ADD of a 1 GiB sparse file and export took {:?}",
        started.elapsed()
    );
    assert_sparse(&out.join("added/big"), size);
    // The build's own snapshot of the ADD step has the holes too.
    let mut unpacked = Vec::new();
    find(&env.path("store/snapshots"), "big", &mut unpacked);
    assert!(!unpacked.is_empty());
    for path in &unpacked {
        assert_sparse(path, size);
    }
}

/// Unmounts a tmpfs when dropped.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Std::new("umount").arg(&self.0).status();
    }
}

#[test]
#[cfg_attr(not(kiln_containers), ignore = "needs root and /bin/busybox")]
fn a_layer_larger_than_the_free_space_is_refused_clearly() {
    let env = Env::new();
    // A store on a 64 MiB filesystem.
    std::fs::create_dir(env.path("store")).unwrap();
    let mounted = Std::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64m", "tmpfs"])
        .arg(env.path("store"))
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("skipping: cannot mount a tmpfs");
        return;
    }
    let _mount = Mount(env.path("store"));
    env.base();
    // 256 MiB of data (not zeros, which would be holes), compressed to
    // little: ADD unpacks it into the store's filesystem.
    let ctx = env.path("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
        File::create(ctx.join("bomb.tar.gz")).unwrap(),
        flate2::Compression::fast(),
    ));
    let mut h = tar::Header::new_gnu();
    h.set_size(256 << 20);
    h.set_mode(0o644);
    b.append_data(&mut h, "bomb", std::io::repeat(1).take(256 << 20))
        .unwrap();
    b.into_inner().unwrap().finish().unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox:test\nADD bomb.tar.gz /\n",
    )
    .unwrap();
    let out = env
        .kiln()
        .args(["build", "-q", ctx.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stderr}");
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(
            "tar entry \"bomb\": the archive needs more space than is free on the filesystem of"
        ) && stderr.contains(
            "bytes of file data: the free space less a margin); free some space and try again"
        ),
        "{stderr}"
    );
}
