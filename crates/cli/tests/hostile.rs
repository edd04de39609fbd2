//! Hostile inputs: layer tars, image archives, registry documents and
//! `ADD` archives built to escape the destination, plant device nodes,
//! confuse whiteouts, mistype the image config or exhaust the disk with
//! holes. Each is either refused with a message naming what is wrong, or
//! handled safely; in every case:
//!
//! - nothing is created outside the store or the export directory: every
//!   escape aims at a sentinel directory next to the store (`outside/`,
//!   holding `secret`), which must stay exactly as it was (same entries,
//!   `secret` unchanged and with one link), and nothing appears next to
//!   the store;
//! - a refused `load` or `pull` adds no image, a refused `load` leaves no
//!   blob behind, and no command leaves a lease or a mount;
//! - `kiln images` still works and `kiln system check` finds no problem.
//!
//! Image layers may be refused when they are loaded or when they are first
//! unpacked (`run`, `build`): kiln refuses `..`, absolute paths and
//! symbolic links on the way to an entry, where Docker and containerd
//! resolve them inside the root; either is accepted here as long as nothing
//! leaves the root. `ADD` archives are read as BuildKit reads them, with
//! `..` and absolute paths clamped to the root.
//!
//! Needs root, the runtime under test and /bin/busybox (skipped with the
//! reason otherwise); the registry cases need `docker-registry`.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{available, busybox_tar_with, test_runtime};
use kiln_testkit::registry::LocalRegistry;

const APPLETS: &[&str] = &[
    "sh", "true", "test", "ls", "cat", "echo", "mkdir", "stat", "head", "tail",
];
/// `../` repeated: from any directory kiln extracts into, enough to reach
/// `/`, so `UP + <sentinel path>` names the sentinel if it is followed.
const UP_LEVELS: usize = 24;
/// The apparent size of the sparse file.
const BOMB: u64 = 8 << 30;

fn sha256_hex(data: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, data)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn digest(data: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(data))
}

/// Failed expectations, reported together at the end of a test.
#[derive(Default)]
struct Problems(Vec<String>);

impl Problems {
    fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            let what = what();
            eprintln!("PROBLEM: {what}");
            self.0.push(what);
        }
    }

    fn assert_none(self) {
        assert!(
            self.0.is_empty(),
            "{} problem(s):\n\n{}",
            self.0.len(),
            self.0.join("\n\n")
        );
    }
}

struct Outcome {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Outcome {
    fn text(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// A temporary directory holding the store (`store/`), the sentinel
/// (`outside/secret`) and the fixtures (`work/`).
struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        let env = Env {
            dir: tempfile::tempdir().unwrap(),
        };
        for d in ["outside", "work", "config/kiln"] {
            std::fs::create_dir_all(env.path(d)).unwrap();
        }
        std::fs::write(env.path("outside/secret"), "secret\n").unwrap();
        // The store exists before the sentinel is first looked at.
        env.ok(&["images"]);
        env
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn store(&self) -> PathBuf {
        self.path("store")
    }

    /// The test directory without its leading `/`.
    fn relative_root(&self) -> String {
        self.dir
            .path()
            .to_str()
            .unwrap()
            .trim_start_matches('/')
            .to_owned()
    }

    /// `path` (below the test directory) as an absolute path.
    fn abs(&self, path: &str) -> String {
        format!("/{}/{path}", self.relative_root())
    }

    /// `path` (below the test directory) reached with `..` from anywhere.
    fn up(&self, path: &str) -> String {
        format!("{}{}/{path}", "../".repeat(UP_LEVELS), self.relative_root())
    }

    fn kiln_in(&self, store: &Path, args: &[&str]) -> Outcome {
        let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(args)
            .env("KILN_ROOT", store)
            .env("KILN_RUNTIME", test_runtime())
            .env("DOCKER_CONFIG", self.path("docker"))
            .env("XDG_CONFIG_HOME", self.path("config"))
            .env("SOURCE_DATE_EPOCH", "0")
            .env_remove("KILN_LOG")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        Outcome {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    fn kiln(&self, args: &[&str]) -> Outcome {
        self.kiln_in(&self.store(), args)
    }

    fn ok_in(&self, store: &Path, args: &[&str]) -> String {
        let out = self.kiln_in(store, args);
        assert!(out.ok, "kiln {args:?} failed:\n{}", out.text());
        out.stdout
    }

    fn ok(&self, args: &[&str]) -> String {
        self.ok_in(&self.store(), args)
    }

    /// Image ids and tags, as `kiln images` lists them.
    fn images_in(&self, store: &Path) -> BTreeSet<String> {
        self.ok_in(
            store,
            &[
                "images",
                "-a",
                "--no-trunc",
                "--format",
                "{{.ID}} {{.Repository}}:{{.Tag}}",
            ],
        )
        .lines()
        .map(str::to_owned)
        .collect()
    }

    fn blobs_in(&self, store: &Path) -> BTreeSet<String> {
        names(&store.join("blobs/sha256"))
    }

    fn leases_in(&self, store: &Path) -> BTreeSet<String> {
        names(&store.join("leases"))
    }

    fn mounts_in(&self, store: &Path) -> Vec<String> {
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| Path::new(m).starts_with(store))
            .map(str::to_owned)
            .collect()
    }

    /// What must not change: the sentinel directory (entries, and the
    /// content, mode and link count of `secret`) and the test directory's
    /// entries.
    fn sentinel(&self) -> (BTreeSet<String>, BTreeSet<String>, String) {
        let secret = self.path("outside/secret");
        let meta = std::fs::symlink_metadata(&secret).unwrap();
        let state = format!(
            "secret: {:?}, mode {:o}, {} link(s), {} bytes",
            std::fs::read_to_string(&secret).unwrap_or_default(),
            meta.mode(),
            meta.nlink(),
            meta.len()
        );
        (names(&self.path("outside")), names(self.dir.path()), state)
    }

    /// Checks, after a command in `store`: the sentinel is as `before`, no
    /// lease or mount is left, and `kiln images` works.
    fn contained(
        &self,
        problems: &mut Problems,
        store: &Path,
        before: &(BTreeSet<String>, BTreeSet<String>, String),
        context: &str,
    ) {
        let after = self.sentinel();
        problems.check(after.0 == before.0, || {
            format!(
                "{context}: the sentinel directory changed: {:?} -> {:?}",
                before.0, after.0
            )
        });
        problems.check(after.1 == before.1, || {
            format!(
                "{context}: entries appeared next to the store: {:?} -> {:?}",
                before.1, after.1
            )
        });
        problems.check(after.2 == before.2, || {
            format!(
                "{context}: the sentinel file changed: {} -> {}",
                before.2, after.2
            )
        });
        let leases = self.leases_in(store);
        problems.check(leases.is_empty(), || {
            format!("{context}: leases left: {leases:?}")
        });
        let images = self.kiln_in(store, &["images"]);
        problems.check(images.ok, || {
            format!("{context}: `kiln images` failed:\n{}", images.text())
        });
        let mounts = self.mounts_in(store);
        problems.check(mounts.is_empty(), || {
            format!("{context}: mounts left: {mounts:?}")
        });
    }

    fn system_check(&self, problems: &mut Problems, store: &Path, context: &str) {
        let check = self.kiln_in(store, &["system", "check"]);
        problems.check(check.ok, || {
            format!("{context}: `kiln system check` failed:\n{}", check.text())
        });
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        for store in [self.store(), self.path("fresh")] {
            for m in self.mounts_in(&store).iter().rev() {
                let _ = Command::new("umount").arg("-l").arg(m).status();
            }
        }
        // Blobs and snapshots may be read-only.
        let _ = Command::new("chmod")
            .arg("-R")
            .arg("u+w")
            .arg(self.dir.path())
            .status();
    }
}

fn names(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Device nodes (other than overlay whiteouts, `0:0` character devices)
/// below `dir`, not following symbolic links.
fn devices_below(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(meta) = e.path().symlink_metadata() else {
                continue;
            };
            let t = meta.file_type();
            if t.is_dir() {
                stack.push(e.path());
            } else if t.is_block_device() || (t.is_char_device() && meta.rdev() != 0) {
                found.push(format!("{} ({:x})", e.path().display(), meta.rdev()));
            }
        }
    }
    found
}

/// Regular files named `name` below `dir`, not following symbolic links.
fn files_named(dir: &Path, name: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(t) = e.file_type() else { continue };
            if t.is_dir() {
                stack.push(e.path());
            } else if t.is_file() && e.file_name() == name {
                found.push(e.path());
            }
        }
    }
    found
}

// ---------------------------------------------------------------------------
// Tar streams written header by header, so that any name can be written.

#[derive(Clone, Copy, Debug)]
enum Kind {
    File,
    Dir,
    Symlink,
    Hardlink,
    Char(u32, u32),
    Block(u32, u32),
    Fifo,
}

#[derive(Clone, Debug)]
struct Entry {
    kind: Kind,
    name: Vec<u8>,
    link: Vec<u8>,
    data: Vec<u8>,
    mode: u32,
    /// More PAX records.
    pax: Vec<(&'static str, Vec<u8>)>,
}

fn file(name: impl Into<Vec<u8>>, data: &str) -> Entry {
    Entry {
        kind: Kind::File,
        name: name.into(),
        link: Vec::new(),
        data: data.as_bytes().to_vec(),
        mode: 0o644,
        pax: Vec::new(),
    }
}

fn dir(name: &str) -> Entry {
    Entry {
        kind: Kind::Dir,
        mode: 0o755,
        ..file(name, "")
    }
}

fn symlink(name: &str, target: &str) -> Entry {
    Entry {
        kind: Kind::Symlink,
        link: target.as_bytes().to_vec(),
        mode: 0o777,
        ..file(name, "")
    }
}

fn hardlink(name: &str, target: &str) -> Entry {
    Entry {
        kind: Kind::Hardlink,
        link: target.as_bytes().to_vec(),
        ..file(name, "")
    }
}

fn node(name: &str, kind: Kind) -> Entry {
    Entry {
        kind,
        mode: 0o666,
        ..file(name, "")
    }
}

fn pad(out: &mut Vec<u8>) {
    out.resize(out.len().div_ceil(512) * 512, 0);
}

/// A PAX extended header carrying `records` for the next entry.
fn pax(out: &mut Vec<u8>, records: &[(&str, &[u8])]) {
    let mut data = Vec::new();
    for (key, value) in records {
        let rest = key.len() + value.len() + 3;
        let mut len = rest + 1;
        while len != rest + len.to_string().len() {
            len = rest + len.to_string().len();
        }
        data.extend_from_slice(format!("{len} {key}=").as_bytes());
        data.extend_from_slice(value);
        data.push(b'\n');
    }
    let mut h = tar::Header::new_ustar();
    h.as_old_mut().name[..12].copy_from_slice(b"PaxHeaders/x");
    h.set_entry_type(tar::EntryType::XHeader);
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(&data);
    pad(out);
}

/// Appends `e` without any check of its names: a name or link target
/// that does not fit the header, or holds a NUL, goes in a PAX record.
fn append(out: &mut Vec<u8>, e: &Entry) {
    let mut records: Vec<(&str, &[u8])> = Vec::new();
    if e.name.len() > 100 || e.name.contains(&0) {
        records.push(("path", &e.name));
    }
    if e.link.len() > 100 || e.link.contains(&0) {
        records.push(("linkpath", &e.link));
    }
    records.extend(e.pax.iter().map(|(k, v)| (*k, &v[..])));
    if !records.is_empty() {
        pax(out, &records);
    }
    let mut h = tar::Header::new_ustar();
    {
        let old = h.as_old_mut();
        let name: Vec<u8> = e.name.iter().copied().take_while(|&b| b != 0).collect();
        let n = name.len().min(100);
        old.name[..n].copy_from_slice(&name[..n]);
        let link: Vec<u8> = e.link.iter().copied().take_while(|&b| b != 0).collect();
        let n = link.len().min(100);
        old.linkname[..n].copy_from_slice(&link[..n]);
    }
    let (kind, dev) = match e.kind {
        Kind::File => (tar::EntryType::Regular, None),
        Kind::Dir => (tar::EntryType::Directory, None),
        Kind::Symlink => (tar::EntryType::Symlink, None),
        Kind::Hardlink => (tar::EntryType::Link, None),
        Kind::Char(a, b) => (tar::EntryType::Char, Some((a, b))),
        Kind::Block(a, b) => (tar::EntryType::Block, Some((a, b))),
        Kind::Fifo => (tar::EntryType::Fifo, None),
    };
    h.set_entry_type(kind);
    let (major, minor) = dev.unwrap_or((0, 0));
    h.set_device_major(major).unwrap();
    h.set_device_minor(minor).unwrap();
    h.set_size(if matches!(e.kind, Kind::File) {
        e.data.len() as u64
    } else {
        0
    });
    h.set_mode(e.mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
    if matches!(e.kind, Kind::File) {
        out.extend_from_slice(&e.data);
        pad(out);
    }
}

/// A complete tar of `entries`, after the entries of `head` (a complete
/// tar, whose end-of-archive marker is dropped).
fn tar_of(head: Option<&[u8]>, entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::new();
    if let Some(head) = head {
        let body = head.len() - 1024;
        assert!(head[body..].iter().all(|&b| b == 0), "no end marker");
        out.extend_from_slice(&head[..body]);
    }
    for e in entries {
        append(&mut out, e);
    }
    out.extend_from_slice(&[0; 1024]);
    out
}

/// An image config with `diff_ids`, one history entry per diff id.
fn config_for(diff_ids: &[String]) -> serde_json::Value {
    serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": diff_ids.iter().map(|_| serde_json::json!({"created": "1970-01-01T00:00:00Z"})).collect::<Vec<_>>(),
    })
}

/// A docker-archive (`manifest.json`, `<hex>.json`, `<i>/layer.tar`) of
/// one image tagged `tag`, with the config bytes given.
fn docker_archive(tag: &str, layers: &[&[u8]], config: &[u8]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        b.append_data(&mut h, name, data).unwrap();
    };
    let mut paths = Vec::new();
    for (i, layer) in layers.iter().enumerate() {
        let path = format!("l{i}/layer.tar");
        add(&path, layer);
        paths.push(path);
    }
    let config_name = format!("{}.json", sha256_hex(config));
    add(&config_name, config);
    let manifest = serde_json::json!([{
        "Config": config_name,
        "RepoTags": [tag],
        "Layers": paths,
    }]);
    add("manifest.json", manifest.to_string().as_bytes());
    b.into_inner().unwrap()
}

// ---------------------------------------------------------------------------
// Image layers.

/// One hostile layer.
struct Case {
    name: &'static str,
    entries: Vec<Entry>,
    /// Part of the name of the offending entry, for a refusal.
    entry: String,
    /// What a refusal must say.
    reason: &'static str,
    /// `None`: a refusal or a safe success are both fine. `Some(probe)`:
    /// the image must be usable, and `sh -c probe` succeed in it.
    probe: Option<String>,
}

fn layer_cases(env: &Env) -> Vec<Case> {
    let refused_or_safe = |name, entries, entry: &str, reason| Case {
        name,
        entries,
        entry: entry.to_owned(),
        reason,
        probe: None,
    };
    let outside = env.abs("outside");
    vec![
        refused_or_safe(
            "dotdot",
            vec![file(env.up("outside/pwned-dotdot"), "pwned")],
            "pwned-dotdot",
            "escapes the root",
        ),
        refused_or_safe(
            "absolute",
            vec![file(env.abs("outside/pwned-abs"), "pwned")],
            "pwned-abs",
            "absolute",
        ),
        refused_or_safe(
            "symlink-parent",
            vec![
                symlink("link", &outside),
                file("link/pwned-symlink", "pwned"),
            ],
            "link/pwned-symlink",
            "symbolic link",
        ),
        refused_or_safe(
            "relative-symlink-parent",
            vec![
                symlink("rlink", &env.up("outside")),
                file("rlink/pwned-rlink", "pwned"),
            ],
            "rlink/pwned-rlink",
            "symbolic link",
        ),
        refused_or_safe(
            "symlink-then-dir",
            vec![
                symlink("dlink", &outside),
                dir("dlink"),
                file("dlink/pwned-dlink", "pwned"),
            ],
            "dlink",
            "",
        ),
        refused_or_safe(
            "hardlink-dotdot",
            vec![hardlink("hl-up", &env.up("outside/secret"))],
            "hl-up",
            "outside the layer root",
        ),
        refused_or_safe(
            "hardlink-absolute",
            vec![hardlink("hl-abs", &env.abs("outside/secret"))],
            "hl-abs",
            "absolute",
        ),
        refused_or_safe(
            "hardlink-through-symlink",
            vec![symlink("sdir", &outside), hardlink("hl-via", "sdir/secret")],
            "hl-via",
            "symbolic link",
        ),
        refused_or_safe(
            "hardlink-etc-passwd",
            vec![hardlink("hl-passwd", "../../etc/passwd")],
            "hl-passwd",
            "",
        ),
        Case {
            // The hard link is a second name of the symbolic link, whose
            // target is resolved in the container; writing through it
            // writes the container's file.
            probe: Some(format!(
                "test -L /hl-sym && mkdir -p {outside} && echo pwned > /hl-sym && \
                 test \"$(cat {outside}/secret)\" = pwned"
            )),
            ..refused_or_safe(
                "hardlink-to-outward-symlink",
                vec![
                    symlink("s", &env.abs("outside/secret")),
                    hardlink("hl-sym", "s"),
                ],
                "hl-sym",
                "",
            )
        },
        Case {
            // Device nodes are not created from image layers.
            probe: Some(
                "test ! -e /hostmem && test ! -e /hostsda && test -p /fifo && test -f /ok".into(),
            ),
            ..refused_or_safe(
                "devices",
                vec![
                    node("hostmem", Kind::Char(1, 1)),
                    node("hostsda", Kind::Block(8, 0)),
                    node("fifo", Kind::Fifo),
                    file("ok", "ok"),
                ],
                "hostmem",
                "",
            )
        },
        refused_or_safe(
            "whiteout-of-dotdot",
            vec![file(".wh..", "")],
            ".wh..",
            "invalid whiteout",
        ),
        refused_or_safe(
            "whiteout-empty",
            vec![file(".wh.", "")],
            ".wh.",
            "invalid whiteout",
        ),
        refused_or_safe(
            "whiteout-dotdot-in-dir",
            vec![dir("d"), file("d/.wh..", "")],
            "d/.wh..",
            "invalid whiteout",
        ),
        refused_or_safe(
            "whiteout-outside",
            vec![file(env.up("outside/.wh.secret"), "")],
            ".wh.secret",
            "escapes the root",
        ),
        refused_or_safe(
            "whiteout-absolute",
            vec![file(env.abs("outside/.wh.secret"), "")],
            ".wh.secret",
            "absolute",
        ),
        refused_or_safe(
            "opaque-escaping",
            vec![file("a/../../.wh..wh..opq", "")],
            ".wh..wh..opq",
            "escapes the root",
        ),
        Case {
            // `..` that stays inside: the opaque marker of `a`.
            probe: Some("test -f /a/kept".into()),
            ..refused_or_safe(
                "opaque-with-dotdot-inside",
                vec![
                    dir("a"),
                    dir("a/b"),
                    file("a/b/../.wh..wh..opq", ""),
                    file("a/kept", ""),
                ],
                "",
                "",
            )
        },
        refused_or_safe(
            "long-component",
            vec![file(format!("d/{}", "x".repeat(300)), "")],
            "xxxxxxxxxx",
            // "File name too long", or kiln's own check.
            "long",
        ),
        refused_or_safe(
            // Longer than PATH_MAX (4096 bytes), in 21 components.
            "path-longer-than-path-max",
            vec![file(
                format!("{}pwned-deep", format!("{}/", "a".repeat(200)).repeat(21)),
                "deep",
            )],
            "pwned-deep",
            "long",
        ),
        refused_or_safe(
            // A PAX 1.0 sparse file of 4 EiB, more than any file may be.
            "sparse-beyond-the-filesystem",
            vec![Entry {
                data: {
                    let mut d = b"1\n0\n1\n".to_vec();
                    d.resize(512, 0);
                    d.push(b'x');
                    d
                },
                pax: vec![
                    ("GNU.sparse.major", b"1".to_vec()),
                    ("GNU.sparse.minor", b"0".to_vec()),
                    ("GNU.sparse.name", b"huge".to_vec()),
                    ("GNU.sparse.realsize", (1u64 << 62).to_string().into_bytes()),
                ],
                ..file("GNUSparseFile.0/huge", "")
            }],
            "huge",
            "large",
        ),
        Case {
            // overlayfs attributes from a layer would make the kernel
            // look elsewhere: they are dropped.
            probe: Some("test \"$(cat /m)\" = m && test -d /d".into()),
            ..refused_or_safe(
                "overlay-xattrs",
                vec![
                    Entry {
                        pax: vec![
                            (
                                "SCHILY.xattr.trusted.overlay.redirect",
                                outside.clone().into_bytes(),
                            ),
                            ("SCHILY.xattr.trusted.overlay.opaque", b"y".to_vec()),
                        ],
                        ..dir("d")
                    },
                    Entry {
                        pax: vec![
                            ("SCHILY.xattr.trusted.overlay.metacopy", Vec::new()),
                            (
                                "SCHILY.xattr.trusted.overlay.redirect",
                                b"/bin/busybox".to_vec(),
                            ),
                        ],
                        ..file("m", "m")
                    },
                ],
                "",
                "",
            )
        },
        refused_or_safe(
            "nul-in-name",
            vec![file(b"nul\0dir/pwned-nul".to_vec(), "")],
            "nul",
            "",
        ),
        Case {
            probe: Some("test -f /emp/ty/file".into()),
            ..refused_or_safe(
                "empty-components",
                vec![file("./emp//ty///./file", "")],
                "",
                "",
            )
        },
    ]
}

/// Checks a refusal's message: it names the entry and says why.
fn named_refusal(problems: &mut Problems, context: &str, case: &Case, out: &Outcome) {
    let text = out.text();
    let said = text
        .lines()
        .rev()
        .find(|l| l.contains("entry"))
        .or_else(|| text.lines().find(|l| !l.trim().is_empty()))
        .unwrap_or_default();
    eprintln!("{context}: refused: {said}");
    problems.check(text.contains(&case.entry) && text.contains(case.reason), || {
        format!(
            "{context}: the refusal does not name the entry ({:?}) and the reason ({:?}):\n{text}",
            case.entry, case.reason
        )
    });
}

/// Loads or imports one hostile layer, then runs and builds on it.
fn exercise_layer(env: &Env, problems: &mut Problems, case: &Case, via: &str, base: &[u8]) {
    let tag = format!("hostile-{via}:{}", case.name);
    let context = format!("{via} {}", case.name);
    let before = env.sentinel();
    let (blobs, images) = (env.blobs_in(&env.store()), env.images_in(&env.store()));
    let added = match via {
        "load" => {
            let layer = tar_of(None, &case.entries);
            let config = config_for(&[digest(base), digest(&layer)]).to_string();
            let archive = env.path(&format!("work/{via}-{}.tar", case.name));
            std::fs::write(
                &archive,
                docker_archive(&tag, &[base, &layer], config.as_bytes()),
            )
            .unwrap();
            env.kiln(&["load", "-q", "-i", archive.to_str().unwrap()])
        }
        _ => {
            let rootfs = env.path(&format!("work/{via}-{}.tar", case.name));
            std::fs::write(&rootfs, tar_of(Some(base), &case.entries)).unwrap();
            env.kiln(&[
                "import",
                "-c",
                "ENV PATH=/bin",
                rootfs.to_str().unwrap(),
                &tag,
            ])
        }
    };
    env.contained(
        problems,
        &env.store(),
        &before,
        &format!("{context}: {via}"),
    );
    if !added.ok {
        // Refused when read: named, and nothing kept.
        problems.check(case.probe.is_none(), || {
            format!("{context}: {via} refused a usable image:\n{}", added.text())
        });
        named_refusal(problems, &format!("{context}: {via}"), case, &added);
        problems.check(env.blobs_in(&env.store()) == blobs, || {
            format!("{context}: the refused {via} left blobs")
        });
        problems.check(env.images_in(&env.store()) == images, || {
            format!("{context}: the refused {via} changed the images")
        });
        return;
    }

    let probe = case.probe.as_deref().unwrap_or("true");
    let run = env.kiln(&["run", "--rm", "--network", "none", &tag, "sh", "-c", probe]);
    env.contained(problems, &env.store(), &before, &format!("{context}: run"));
    if case.probe.is_some() {
        problems.check(run.ok, || {
            format!("{context}: run of a usable image failed:\n{}", run.text())
        });
    } else if !run.ok {
        named_refusal(problems, &format!("{context}: run"), case, &run);
    } else {
        eprintln!("{context}: accepted (contained)");
    }
    if run.ok {
        // The image's snapshots exist now: checking them works, and no
        // device node was created from the layer.
        env.system_check(problems, &env.store(), &format!("{context}: after run"));
        let devices = devices_below(&env.store());
        problems.check(devices.is_empty(), || {
            format!("{context}: device nodes in the store: {devices:?}")
        });
    }

    if via == "load" {
        let ctx = env.path(&format!("work/ctx-{}", case.name));
        std::fs::create_dir_all(&ctx).unwrap();
        std::fs::write(ctx.join("Dockerfile"), format!("FROM {tag}\nRUN {probe}\n")).unwrap();
        let build = env.kiln(&[
            "build",
            "-q",
            "--network",
            "none",
            "-t",
            &format!("built-{}", case.name),
            ctx.to_str().unwrap(),
        ]);
        env.contained(
            problems,
            &env.store(),
            &before,
            &format!("{context}: build"),
        );
        problems.check(build.ok == run.ok, || {
            format!(
                "{context}: run {} but a build on the image {}:\n{}",
                if run.ok { "succeeded" } else { "failed" },
                if build.ok { "succeeded" } else { "failed" },
                build.text()
            )
        });
        if !build.ok {
            named_refusal(problems, &format!("{context}: build"), case, &build);
        }
    }
    // An image that cannot be unpacked can still be deleted.
    let rmi = env.kiln(&["rmi", &tag]);
    problems.check(rmi.ok, || format!("{context}: rmi failed:\n{}", rmi.text()));
}

#[test]
fn hostile_layer_entries_are_refused_or_kept_inside_the_root() {
    if !available() {
        return;
    }
    let env = Env::new();
    let mut problems = Problems::default();
    let base = busybox_tar_with(APPLETS, true, &[]);
    for case in layer_cases(&env) {
        for via in ["load", "import"] {
            exercise_layer(&env, &mut problems, &case, via, &base);
        }
    }
    env.system_check(&mut problems, &env.store(), "after the layer cases");
    problems.assert_none();
}

// ---------------------------------------------------------------------------
// Diff ids, layer counts and config types: docker-archives and a registry.

/// A local registry, and the raw HTTP this test speaks to it.
struct Registry {
    inner: LocalRegistry,
}

impl Registry {
    fn start() -> Option<Registry> {
        let inner = LocalRegistry::start();
        if inner.is_none() {
            eprintln!("skipping the pull cases: docker-registry is not installed");
        }
        inner.map(|inner| Registry { inner })
    }

    fn host(&self) -> String {
        self.inner.host.clone()
    }

    /// One HTTP/1.1 request; the status, headers (lower-case names) and body.
    fn http(
        &self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> (u16, Vec<(String, String)>, Vec<u8>) {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.inner.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut req = format!(
            "{method} {target} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n",
            self.host(),
            body.len()
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).unwrap();
        s.write_all(body).unwrap();
        let mut resp = Vec::new();
        s.read_to_end(&mut resp).unwrap();
        let end = resp
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("an HTTP response");
        let head = String::from_utf8_lossy(&resp[..end]).into_owned();
        let mut lines = head.lines();
        let status: u16 = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let mut body = resp[end + 4..].to_vec();
        if headers
            .iter()
            .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"))
        {
            let mut out = Vec::new();
            let mut rest = &body[..];
            loop {
                let line_end = rest.windows(2).position(|w| w == b"\r\n").unwrap();
                let size = usize::from_str_radix(
                    String::from_utf8_lossy(&rest[..line_end])
                        .split(';')
                        .next()
                        .unwrap()
                        .trim(),
                    16,
                )
                .unwrap();
                rest = &rest[line_end + 2..];
                if size == 0 {
                    break;
                }
                out.extend_from_slice(&rest[..size]);
                rest = &rest[size + 2..];
            }
            body = out;
        }
        (status, headers, body)
    }

    fn upload_blob(&self, repo: &str, data: &[u8]) -> String {
        let d = digest(data);
        let (status, headers, _) =
            self.http("POST", &format!("/v2/{repo}/blobs/uploads/"), &[], b"");
        assert_eq!(status, 202, "starting an upload");
        let location = headers
            .iter()
            .find(|(k, _)| k == "location")
            .map(|(_, v)| v.clone())
            .unwrap();
        let location = location
            .strip_prefix(&format!("http://{}", self.host()))
            .unwrap_or(&location)
            .to_owned();
        let sep = if location.contains('?') { '&' } else { '?' };
        let (status, _, body) = self.http(
            "PUT",
            &format!("{location}{sep}digest={d}"),
            &[("Content-Type", "application/octet-stream")],
            data,
        );
        assert_eq!(
            status,
            201,
            "uploading a blob: {}",
            String::from_utf8_lossy(&body)
        );
        d
    }

    fn put_manifest(&self, repo: &str, tag: &str, manifest: &serde_json::Value) {
        let media_type = manifest["mediaType"].as_str().unwrap().to_owned();
        let (status, _, body) = self.http(
            "PUT",
            &format!("/v2/{repo}/manifests/{tag}"),
            &[("Content-Type", &media_type)],
            manifest.to_string().as_bytes(),
        );
        assert_eq!(
            status,
            201,
            "putting a manifest: {}",
            String::from_utf8_lossy(&body)
        );
    }

    fn get_json(&self, target: &str, accept: &str) -> serde_json::Value {
        let (status, _, body) = self.http("GET", target, &[("Accept", accept)], b"");
        assert_eq!(status, 200, "GET {target}");
        serde_json::from_slice(&body).unwrap()
    }
}

const V2S2: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// Changes to a valid config, and whether the result must be accepted.
type Tamper = (
    &'static str,
    fn(&mut serde_json::Value),
    Option<&'static str>,
);

fn config_tampers() -> Vec<Tamper> {
    fn big_env(c: &mut serde_json::Value) {
        // 2^64: a number no integer type holds.
        c["config"]["Env"] = serde_json::from_str("18446744073709551616").unwrap();
    }
    fn map_cmd(c: &mut serde_json::Value) {
        c["config"]["Cmd"] = serde_json::json!({"a": 1});
    }
    fn number_created(c: &mut serde_json::Value) {
        c["created"] = serde_json::json!(5);
    }
    fn nulls(c: &mut serde_json::Value) {
        for k in [
            "Env",
            "Labels",
            "Cmd",
            "Entrypoint",
            "Volumes",
            "ExposedPorts",
        ] {
            c["config"][k] = serde_json::Value::Null;
        }
    }
    vec![
        ("env-number", big_env, Some("invalid type")),
        ("cmd-map", map_cmd, Some("invalid type")),
        ("created-number", number_created, Some("invalid type")),
        ("nulls", nulls, None),
    ]
}

#[test]
fn wrong_diff_ids_layer_counts_and_config_types_are_refused() {
    if !available() {
        return;
    }
    let env = Env::new();
    let mut problems = Problems::default();
    let base = busybox_tar_with(APPLETS, true, &[]);
    let extra = tar_of(None, &[file("hello", "hi")]);
    let (base_id, extra_id) = (digest(&base), digest(&extra));
    let zeros = format!("sha256:{}", "0".repeat(64));

    // docker-archives: (name, diff ids, what the refusal says).
    let wrong: Vec<(&str, Vec<String>, Vec<&str>)> = vec![
        (
            "wrong-diff-id",
            vec![base_id.clone(), zeros.clone()],
            vec!["l1/layer.tar", &zeros],
        ),
        (
            "swapped-diff-ids",
            vec![extra_id.clone(), base_id.clone()],
            vec!["l0/layer.tar", &extra_id],
        ),
        (
            "more-diff-ids",
            vec![base_id.clone(), extra_id.clone(), extra_id.clone()],
            vec!["3 diff ids", "2 layers"],
        ),
        (
            "fewer-diff-ids",
            vec![base_id.clone()],
            vec!["1 diff ids", "2 layers"],
        ),
        ("no-diff-ids", vec![], vec!["0 diff ids", "2 layers"]),
    ];
    let mut archives: Vec<(String, Vec<u8>, Vec<&str>)> = wrong
        .iter()
        .map(|(name, diff_ids, says)| {
            let tag = format!("wrong:{name}");
            let config = config_for(diff_ids).to_string();
            (
                name.to_string(),
                docker_archive(&tag, &[&base, &extra], config.as_bytes()),
                says.clone(),
            )
        })
        .collect();
    for (name, tamper, says) in config_tampers() {
        let mut config = config_for(&[base_id.clone(), extra_id.clone()]);
        tamper(&mut config);
        let tag = format!("wrong:{name}");
        let archive = docker_archive(&tag, &[&base, &extra], config.to_string().as_bytes());
        archives.push((
            name.to_owned(),
            archive,
            says.map(|s| vec![s, "image config"]).unwrap_or_default(),
        ));
    }
    for (name, archive, says) in &archives {
        let context = format!("load {name}");
        let path = env.path(&format!("work/{name}.tar"));
        std::fs::write(&path, archive).unwrap();
        let before = env.sentinel();
        let (blobs, images) = (env.blobs_in(&env.store()), env.images_in(&env.store()));
        let load = env.kiln(&["load", "-q", "-i", path.to_str().unwrap()]);
        env.contained(&mut problems, &env.store(), &before, &context);
        if says.is_empty() {
            problems.check(load.ok, || {
                format!("{context}: refused (Docker accepts it):\n{}", load.text())
            });
            let tag = format!("wrong:{name}");
            let inspect = env.kiln(&["inspect", &tag]);
            problems.check(inspect.ok, || {
                format!("{context}: inspect failed:\n{}", inspect.text())
            });
            let run = env.kiln(&["run", "--rm", "--network", "none", &tag, "/bin/true"]);
            problems.check(run.ok, || format!("{context}: run failed:\n{}", run.text()));
            continue;
        }
        problems.check(!load.ok, || format!("{context}: accepted"));
        problems.check(says.iter().all(|s| load.text().contains(s)), || {
            format!(
                "{context}: the message does not say {says:?}:\n{}",
                load.text()
            )
        });
        problems.check(env.blobs_in(&env.store()) == blobs, || {
            format!("{context}: the refused load left blobs")
        });
        problems.check(env.images_in(&env.store()) == images, || {
            format!("{context}: the refused load changed the images")
        });
    }

    if let Some(registry) = Registry::start() {
        pull_cases(&env, &mut problems, &registry);
    }
    env.system_check(&mut problems, &env.store(), "after the diff id cases");
    problems.assert_none();
}

/// Pushes busybox with kiln, then uploads tampered configs and manifests
/// for its layer over plain HTTP, and pulls them into a store that has the
/// layer and into an empty one.
fn pull_cases(env: &Env, problems: &mut Problems, registry: &Registry) {
    let host = registry.host();
    let rootfs = env.path("work/busybox.tar");
    std::fs::write(&rootfs, busybox_tar_with(APPLETS, true, &[])).unwrap();
    let base = format!("{host}/hx:base");
    env.ok(&[
        "import",
        "-c",
        "ENV PATH=/bin",
        rootfs.to_str().unwrap(),
        &base,
    ]);
    env.ok(&["push", &base]);
    let manifest = registry.get_json("/v2/hx/manifests/base", V2S2);
    let layer = manifest["layers"][0].clone();
    let config_digest = manifest["config"]["digest"].as_str().unwrap().to_owned();
    let config = registry.get_json(&format!("/v2/hx/blobs/{config_digest}"), "*/*");
    let diff_id = config["rootfs"]["diff_ids"][0].as_str().unwrap().to_owned();
    let zeros = format!("sha256:{}", "0".repeat(64));

    // (tag, config, layers in the manifest, what the refusal says).
    let mut cases: Vec<(String, serde_json::Value, usize, Vec<String>)> = Vec::new();
    let with_diff_ids = |ids: Vec<&str>| {
        let mut c = config.clone();
        c["rootfs"]["diff_ids"] = serde_json::json!(ids);
        c
    };
    let layer_digest = layer["digest"].as_str().unwrap().to_owned();
    cases.push((
        "wrong-diff-id".into(),
        with_diff_ids(vec![&zeros]),
        1,
        vec![layer_digest.clone(), zeros.clone()],
    ));
    cases.push((
        "more-diff-ids".into(),
        with_diff_ids(vec![&diff_id, &diff_id]),
        1,
        vec!["1 layers".into(), "2 diff ids".into()],
    ));
    cases.push((
        "fewer-diff-ids".into(),
        with_diff_ids(vec![&diff_id]),
        2,
        vec!["2 layers".into(), "1 diff ids".into()],
    ));
    cases.push((
        "second-diff-id-wrong".into(),
        with_diff_ids(vec![&diff_id, &zeros]),
        2,
        vec![zeros.clone()],
    ));
    for (name, tamper, says) in config_tampers() {
        let mut c = config.clone();
        tamper(&mut c);
        cases.push((
            name.into(),
            c,
            1,
            says.map(|s| vec![s.to_owned()]).unwrap_or_default(),
        ));
    }
    for (tag, config, layers, _) in &cases {
        let bytes = serde_json::to_vec(config).unwrap();
        let digest = registry.upload_blob("hx", &bytes);
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": V2S2,
            "config": {"mediaType": DOCKER_CONFIG, "size": bytes.len(), "digest": digest},
            "layers": vec![layer.clone(); *layers],
        });
        registry.put_manifest("hx", tag, &manifest);
    }

    // An empty store downloads every layer; the test's store has it
    // already (it pushed it): the checks must not depend on that.
    let fresh = env.path("fresh");
    env.ok_in(&fresh, &["images"]);
    for (store, which) in [
        (fresh.as_path(), "empty store"),
        (&env.store(), "store with the layer"),
    ] {
        for (tag, _, _, says) in &cases {
            let context = format!("pull {tag} into the {which}");
            let reference = format!("{host}/hx:{tag}");
            let before = env.sentinel();
            let images = env.images_in(store);
            let blobs = env.blobs_in(store);
            let pull = env.kiln_in(store, &["pull", "-q", &reference]);
            env.contained(problems, store, &before, &context);
            if says.is_empty() {
                problems.check(pull.ok, || {
                    format!("{context}: refused (Docker accepts it):\n{}", pull.text())
                });
                let run = env.kiln_in(
                    store,
                    &["run", "--rm", "--network", "none", &reference, "/bin/true"],
                );
                problems.check(run.ok, || format!("{context}: run failed:\n{}", run.text()));
                continue;
            }
            problems.check(!pull.ok, || {
                let run = env.kiln_in(
                    store,
                    &["run", "--rm", "--network", "none", &reference, "/bin/true"],
                );
                format!(
                    "{context}: accepted; `kiln images` lists it, and `kiln run` says:\n{}",
                    run.text()
                )
            });
            if pull.ok {
                let _ = env.kiln_in(store, &["rmi", &reference]);
                continue;
            }
            problems.check(
                says.iter().all(|s| pull.text().contains(s.as_str())),
                || {
                    format!(
                        "{context}: the message does not say {says:?}:\n{}",
                        pull.text()
                    )
                },
            );
            problems.check(env.images_in(store) == images, || {
                format!("{context}: the refused pull changed the images")
            });
            let left: Vec<String> = env.blobs_in(store).difference(&blobs).cloned().collect();
            if !left.is_empty() {
                // Not a failure: an unreferenced blob, which `system check`
                // notes and garbage collection takes.
                eprintln!("{context}: the refused pull left blobs {left:?}");
            }
            let layer_hex = layer_digest.trim_start_matches("sha256:");
            problems.check(
                blobs.contains(layer_hex) || !env.blobs_in(store).contains(layer_hex),
                || format!("{context}: the layer that failed its diff id was kept"),
            );
        }
        env.system_check(problems, store, &format!("pulls into the {which}"));
    }
}

// ---------------------------------------------------------------------------
// A sparse bomb: 8 GiB apparent, a few bytes of data.

#[test]
fn a_sparse_bomb_is_unpacked_with_holes() {
    if !available() {
        return;
    }
    let env = Env::new();
    let mut problems = Problems::default();
    let base = busybox_tar_with(APPLETS, true, &[]);
    // The tar crate writes a file with holes as an old GNU sparse (`S`)
    // entry.
    let sparse = env.path("work/bomb");
    {
        let f = std::fs::File::create(&sparse).unwrap();
        f.set_len(BOMB).unwrap();
        use std::os::unix::fs::FileExt;
        f.write_all_at(b"start", 4096).unwrap();
        f.write_all_at(b"end", BOMB - 3).unwrap();
    }
    let layer = {
        let mut b = tar::Builder::new(Vec::new());
        b.append_path_with_name(&sparse, "bomb").unwrap();
        b.into_inner().unwrap()
    };
    std::fs::remove_file(&sparse).unwrap();
    if layer.len() > 1 << 20 {
        eprintln!("skipping: the temporary directory's filesystem keeps no holes");
        return;
    }
    assert_eq!(layer[156], b'S', "not an old GNU sparse entry");
    let rootfs = env.path("work/bomb-rootfs.tar");
    let mut bytes = base[..base.len() - 1024].to_vec();
    bytes.extend_from_slice(&layer);
    std::fs::write(&rootfs, bytes).unwrap();
    let config = config_for(&[digest(&base), digest(&layer)]).to_string();
    let archive = env.path("work/bomb-archive.tar");
    std::fs::write(
        &archive,
        docker_archive("bomb:load", &[&base, &layer], config.as_bytes()),
    )
    .unwrap();

    let before = env.sentinel();
    for (tag, how) in [("bomb:load", "load"), ("bomb:import", "import")] {
        let context = format!("sparse bomb by {how}");
        let out = match how {
            "load" => env.kiln(&["load", "-q", "-i", archive.to_str().unwrap()]),
            _ => env.kiln(&[
                "import",
                "-c",
                "ENV PATH=/bin",
                rootfs.to_str().unwrap(),
                tag,
            ]),
        };
        problems.check(out.ok, || format!("{context}: failed:\n{}", out.text()));
        let start = Instant::now();
        let run = env.kiln(&[
            "run",
            "--rm",
            "--network",
            "none",
            tag,
            "sh",
            "-c",
            "echo $(stat -c %s /bomb) $(head -c 4101 /bomb | tail -c 5)",
        ]);
        let want = format!("{BOMB} start");
        problems.check(run.ok && run.stdout.trim() == want, || {
            format!("{context}: run, expected {want:?}:\n{}", run.text())
        });
        eprintln!("{context}: run took {:?}", start.elapsed());
        env.contained(&mut problems, &env.store(), &before, &context);
    }
    // The unpacked files take a few blocks.
    let unpacked = files_named(&env.store().join("snapshots"), "bomb");
    problems.check(!unpacked.is_empty(), || {
        "no snapshot holds the sparse file".to_owned()
    });
    for path in unpacked {
        let meta = std::fs::metadata(&path).unwrap();
        problems.check(meta.len() == BOMB && meta.blocks() * 512 <= 1 << 20, || {
            format!(
                "{}: {} bytes, {} allocated",
                path.display(),
                meta.len(),
                meta.blocks() * 512
            )
        });
    }
    // A build on it, exported to a directory: the export has holes too.
    let ctx = env.path("work/bomb-ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM bomb:load\nRUN echo ok > /ok\n",
    )
    .unwrap();
    let dest = env.path("work/bomb-out");
    let build = env.kiln(&[
        "build",
        "-q",
        "--network",
        "none",
        "-o",
        &format!("type=local,dest={}", dest.display()),
        ctx.to_str().unwrap(),
    ]);
    problems.check(build.ok, || format!("build on the bomb:\n{}", build.text()));
    let exported = std::fs::metadata(dest.join("bomb"))
        .map(|m| (m.len(), m.blocks() * 512))
        .ok();
    problems.check(
        exported.is_some_and(|(len, allocated)| len == BOMB && allocated <= 1 << 20),
        || format!("exported sparse file (size, allocated): {exported:?}"),
    );
    // Checking the snapshots against their layers reads data, not holes.
    let start = Instant::now();
    env.system_check(&mut problems, &env.store(), "sparse bomb");
    let took = start.elapsed();
    problems.check(took < Duration::from_secs(10), || {
        format!("`kiln system check` took {took:?} over an 8 GiB sparse file: it reads the holes")
    });
    env.contained(&mut problems, &env.store(), &before, "sparse bomb");
    problems.assert_none();
}

// ---------------------------------------------------------------------------
// Many path components: 1200 (2.4 kB, within PATH_MAX) in one entry.

#[test]
fn a_path_of_many_components_unpacks_quickly() {
    if !available() {
        return;
    }
    let env = Env::new();
    let mut problems = Problems::default();
    let base = busybox_tar_with(APPLETS, true, &[]);
    let deep = format!("{}f", "a/".repeat(1200));
    let rootfs = env.path("work/deep.tar");
    std::fs::write(&rootfs, tar_of(Some(&base), &[file(deep.as_str(), "deep")])).unwrap();
    let before = env.sentinel();
    env.ok(&[
        "import",
        "-c",
        "ENV PATH=/bin",
        rootfs.to_str().unwrap(),
        "deep:1",
    ]);
    let start = Instant::now();
    let run = env.kiln(&["run", "--rm", "--network", "none", "deep:1", "true"]);
    let took = start.elapsed();
    problems.check(run.ok, || format!("run: {}", run.text()));
    // Linear or quadratic work is a fraction of a second; unpacking took
    // time cubic in the number of components (every created parent
    // recorded all its prefixes).
    problems.check(took < Duration::from_secs(5), || {
        format!("unpacking one path of 1200 components took {took:?}")
    });
    env.contained(&mut problems, &env.store(), &before, "many components");
    problems.assert_none();
}

// ---------------------------------------------------------------------------
// `ADD archive.tar /`: extracted as BuildKit extracts it.

#[test]
fn add_of_a_hostile_archive_stays_inside_the_root() {
    if !available() {
        return;
    }
    let env = Env::new();
    let mut problems = Problems::default();
    let base = env.path("work/base.tar");
    std::fs::write(&base, busybox_tar_with(APPLETS, true, &[])).unwrap();
    env.ok(&[
        "import",
        "-c",
        "ENV PATH=/bin",
        base.to_str().unwrap(),
        "busybox:test",
    ]);
    let outside = env.abs("outside");
    let archive = tar_of(
        None,
        &[
            file(env.up("outside/pwned-add-dotdot"), "dotdot"),
            file(env.abs("outside/pwned-add-abs"), "abs"),
            file("../../up", "up"),
            file("/abs", "abs"),
            Entry {
                mode: 0o4755,
                ..file("suid", "suid")
            },
            Entry {
                mode: 0o2755,
                ..file("sgid", "sgid")
            },
            node("mem", Kind::Char(1, 1)),
            node("sda", Kind::Block(8, 0)),
            node("fifo", Kind::Fifo),
            symlink("link", &outside),
            hardlink("hl-up", "../../up"),
            hardlink("hl-abs", "/abs"),
            symlink("s", &env.abs("outside/secret")),
            hardlink("hl-sym", "s"),
        ],
    );
    let ctx = env.path("work/add");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("hostile.tar"), &archive).unwrap();
    std::fs::write(ctx.join("Dockerfile"), "FROM scratch\nADD hostile.tar /\n").unwrap();
    let dest = env.path("dest");
    let before = env.sentinel();
    let mut before_dest = before.clone();
    before_dest.1.insert("dest".into());

    let build = env.kiln(&[
        "build",
        "-q",
        "-o",
        &format!("type=local,dest={}", dest.display()),
        ctx.to_str().unwrap(),
    ]);
    env.contained(
        &mut problems,
        &env.store(),
        &before_dest,
        "ADD to a local export",
    );
    problems.check(build.ok, || {
        format!("ADD to a local export failed:\n{}", build.text())
    });
    // Clamped into the root, as BuildKit does.
    let rel = env.relative_root();
    for (path, content) in [
        (format!("{rel}/outside/pwned-add-dotdot"), "dotdot"),
        (format!("{rel}/outside/pwned-add-abs"), "abs"),
        ("up".to_owned(), "up"),
        ("abs".to_owned(), "abs"),
        ("hl-up".to_owned(), "up"),
        ("hl-abs".to_owned(), "abs"),
    ] {
        let got = std::fs::read_to_string(dest.join(&path));
        problems.check(got.as_deref().ok() == Some(content), || {
            format!(
                "ADD: {path} in the export: {got:?}, expected {content:?} (clamped to the root)"
            )
        });
    }
    // Devices skipped, setuid and setgid dropped, links kept as links.
    let devices = devices_below(&dest);
    problems.check(devices.is_empty(), || {
        format!("ADD: devices exported: {devices:?}")
    });
    for name in ["suid", "sgid"] {
        let mode = std::fs::metadata(dest.join(name)).map(|m| m.mode() & 0o7777);
        problems.check(mode.as_ref().is_ok_and(|m| m & 0o6000 == 0), || {
            format!("ADD: {name} exported with mode {mode:?}")
        });
    }
    for name in ["link", "s", "hl-sym"] {
        let t = std::fs::symlink_metadata(dest.join(name)).map(|m| m.file_type().is_symlink());
        problems.check(matches!(t, Ok(true)), || {
            format!("ADD: {name} is not a symbolic link in the export: {t:?}")
        });
    }
    let fifo = std::fs::symlink_metadata(dest.join("fifo")).map(|m| m.file_type().is_fifo());
    problems.check(matches!(fifo, Ok(true)), || format!("ADD: fifo: {fifo:?}"));

    // The same archive into an image, with a step run on it.
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox:test\nADD hostile.tar /\n\
         RUN test ! -e /mem && test ! -e /sda && test -p /fifo && test \"$(cat /up)\" = up\n",
    )
    .unwrap();
    let build = env.kiln(&[
        "build",
        "-q",
        "--network",
        "none",
        "-t",
        "added:1",
        ctx.to_str().unwrap(),
    ]);
    env.contained(&mut problems, &env.store(), &before_dest, "ADD in an image");
    problems.check(build.ok, || {
        format!("ADD in an image failed:\n{}", build.text())
    });

    // A symbolic link to the outside, then an entry below it: refused
    // (BuildKit fails too: the link's target does not exist in the root),
    // or written inside the root.
    std::fs::write(
        ctx.join("hostile.tar"),
        tar_of(
            None,
            &[
                symlink("link", &outside),
                file("link/pwned-add-link", "pwned"),
            ],
        ),
    )
    .unwrap();
    std::fs::write(ctx.join("Dockerfile"), "FROM scratch\nADD hostile.tar /\n").unwrap();
    let dest2 = env.path("dest2");
    before_dest.1.insert("dest2".into());
    let build = env.kiln(&[
        "build",
        "-q",
        "-o",
        &format!("type=local,dest={}", dest2.display()),
        ctx.to_str().unwrap(),
    ]);
    // A failed build may or may not create the destination.
    if !build.ok {
        let _ = std::fs::remove_dir(&dest2);
        problems.check(
            build.text().contains("link/pwned-add-link") && build.text().contains("symbolic link"),
            || {
                format!(
                    "ADD through a symbolic link: the refusal does not name the entry:\n{}",
                    build.text()
                )
            },
        );
    }
    let mut expected = before_dest.clone();
    if !dest2.exists() {
        expected.1.remove("dest2");
    }
    env.contained(
        &mut problems,
        &env.store(),
        &expected,
        "ADD through a symbolic link",
    );
    env.system_check(&mut problems, &env.store(), "after the ADD cases");
    problems.assert_none();
}
