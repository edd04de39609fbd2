//! Layer extraction: hostile tarballs, whiteouts, metadata, compression.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use kiln_store::{
    Compression, ExtractError, ExtractMode, ExtractOptions, LayerStats, decompress, extract_layer,
    is_root, sniff_compression,
};
use tar::{EntryType, Header};

/// Builds tarballs with raw names, so hostile paths survive (the `tar`
/// crate's own setters refuse them).
struct Layer {
    builder: tar::Builder<Vec<u8>>,
}

impl Layer {
    fn new() -> Layer {
        Layer {
            builder: tar::Builder::new(Vec::new()),
        }
    }

    fn header(path: &str, kind: EntryType, link: &str, size: u64, mode: u32) -> Header {
        let mut h = Header::new_gnu();
        {
            let gnu = h.as_gnu_mut().unwrap();
            gnu.name[..path.len()].copy_from_slice(path.as_bytes());
            gnu.linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(mode);
        h.set_mtime(1_600_000_000);
        h.set_uid(0);
        h.set_gid(0);
        h.set_cksum();
        h
    }

    fn file(mut self, path: &str, data: &[u8]) -> Layer {
        self.file_with(path, data, 0o644, |_| {});
        self
    }

    fn file_with(&mut self, path: &str, data: &[u8], mode: u32, f: impl FnOnce(&mut Header)) {
        let mut h = Self::header(path, EntryType::Regular, "", data.len() as u64, mode);
        f(&mut h);
        h.set_cksum();
        self.builder.append(&h, data).unwrap();
    }

    fn dir(mut self, path: &str, mode: u32) -> Layer {
        let h = Self::header(path, EntryType::Directory, "", 0, mode);
        self.builder.append(&h, &[][..]).unwrap();
        self
    }

    fn symlink(mut self, path: &str, target: &str) -> Layer {
        let h = Self::header(path, EntryType::Symlink, target, 0, 0o777);
        self.builder.append(&h, &[][..]).unwrap();
        self
    }

    fn hardlink(mut self, path: &str, target: &str) -> Layer {
        let h = Self::header(path, EntryType::Link, target, 0, 0o644);
        self.builder.append(&h, &[][..]).unwrap();
        self
    }

    fn pax(mut self, exts: &[(&str, &[u8])]) -> Layer {
        self.builder
            .append_pax_extensions(exts.iter().map(|(k, v)| (*k, *v)))
            .unwrap();
        self
    }

    fn bytes(self) -> Vec<u8> {
        self.builder.into_inner().unwrap()
    }
}

fn extract(tar: &[u8], dest: &Path, mode: ExtractMode) -> Result<LayerStats, ExtractError> {
    extract_layer(tar, dest, &ExtractOptions::new(mode))
}

/// A scratch area: `outside/` (must never change) and `dest/`.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Scratch {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("dest")).unwrap();
        fs::create_dir(dir.path().join("outside")).unwrap();
        fs::write(dir.path().join("outside/secret"), b"secret").unwrap();
        Scratch { dir }
    }
    fn dest(&self) -> std::path::PathBuf {
        self.dir.path().join("dest")
    }
    fn outside(&self) -> std::path::PathBuf {
        self.dir.path().join("outside")
    }
    /// Everything outside `dest` is as created.
    fn assert_outside_untouched(&self) {
        let mut top: Vec<_> = fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        top.sort();
        assert_eq!(top, ["dest", "outside"]);
        let names: Vec<_> = fs::read_dir(self.outside())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, ["secret"]);
        assert_eq!(fs::read(self.outside().join("secret")).unwrap(), b"secret");
    }
}

#[test]
fn hostile_paths_are_rejected() {
    type MakeTar = Box<dyn Fn(&Scratch) -> Vec<u8>>;
    let cases: Vec<(&str, MakeTar)> = vec![
        (
            "dotdot",
            Box::new(|_| Layer::new().file("../evil", b"x").bytes()),
        ),
        (
            "absolute",
            Box::new(|_| Layer::new().file("/abs", b"x").bytes()),
        ),
        (
            "clean escapes",
            Box::new(|_| Layer::new().file("a/../../x", b"x").bytes()),
        ),
        (
            "symlink to root then write through",
            Box::new(|_| {
                Layer::new()
                    .symlink("link", "/")
                    .file("link/tmp/kiln-extract-escape-test", b"x")
                    .bytes()
            }),
        ),
        (
            "symlink outside then write through",
            Box::new(|s| {
                Layer::new()
                    .symlink("link", s.outside().to_str().unwrap())
                    .file("link/secret", b"pwned")
                    .bytes()
            }),
        ),
        (
            "symlink to parent then write through",
            Box::new(|_| {
                Layer::new()
                    .symlink("up", "..")
                    .file("up/evil", b"x")
                    .bytes()
            }),
        ),
        (
            "nested symlink to parent",
            Box::new(|_| {
                Layer::new()
                    .dir("a", 0o755)
                    .symlink("a/up", "../..")
                    .file("a/up/evil", b"x")
                    .bytes()
            }),
        ),
        (
            "hardlink to absolute",
            Box::new(|_| Layer::new().hardlink("passwd", "/etc/passwd").bytes()),
        ),
        (
            "hardlink to dotdot",
            Box::new(|_| Layer::new().hardlink("h", "../outside/secret").bytes()),
        ),
        (
            "hardlink through symlink",
            Box::new(|s| {
                Layer::new()
                    .symlink("l", s.outside().to_str().unwrap())
                    .hardlink("h", "l/secret")
                    .bytes()
            }),
        ),
    ];
    for (name, make) in cases {
        for mode in [ExtractMode::Overlay, ExtractMode::Flatten] {
            let s = Scratch::new();
            let tar = make(&s);
            let err = extract(&tar, &s.dest(), mode).expect_err(name);
            assert!(
                matches!(
                    err,
                    ExtractError::UnsafePath { .. }
                        | ExtractError::SymlinkInPath { .. }
                        | ExtractError::UnsafeLinkTarget { .. }
                ),
                "{name}: {err:?}"
            );
            // The error names the entry.
            assert!(err.to_string().contains("tar entry"), "{name}: {err}");
            s.assert_outside_untouched();
        }
    }
    assert!(!Path::new("/tmp/kiln-extract-escape-test").exists());
}

#[test]
fn existing_symlink_in_dest_is_replaced_not_followed() {
    let s = Scratch::new();
    std::os::unix::fs::symlink(s.outside().join("secret"), s.dest().join("victim")).unwrap();
    std::os::unix::fs::symlink(s.outside(), s.dest().join("dirlink")).unwrap();
    let tar = Layer::new().file("victim", b"new content").bytes();
    extract(&tar, &s.dest(), ExtractMode::Flatten).unwrap();
    let meta = fs::symlink_metadata(s.dest().join("victim")).unwrap();
    assert!(meta.is_file());
    assert_eq!(fs::read(s.dest().join("victim")).unwrap(), b"new content");
    s.assert_outside_untouched();

    // A pre-existing symlinked directory is not written through either.
    let tar = Layer::new().file("dirlink/secret", b"pwned").bytes();
    let err = extract(&tar, &s.dest(), ExtractMode::Flatten).unwrap_err();
    assert!(matches!(err, ExtractError::SymlinkInPath { .. }), "{err:?}");
    s.assert_outside_untouched();
}

#[test]
fn safe_links_are_created() {
    let s = Scratch::new();
    let tar = Layer::new()
        .dir("bin", 0o755)
        .file("bin/busybox", b"#!")
        .hardlink("bin/sh", "bin/busybox")
        .hardlink("bin/ls", "./bin/../bin/busybox")
        .symlink("bin/abs", "/etc/passwd")
        .symlink("bin/rel", "../../..")
        .file("a/../clean", b"c")
        .bytes();
    let stats = extract(&tar, &s.dest(), ExtractMode::Overlay).unwrap();
    assert_eq!((stats.hardlinks, stats.symlinks, stats.files), (2, 2, 2));
    let d = s.dest();
    let ino = fs::metadata(d.join("bin/busybox")).unwrap().ino();
    assert_eq!(fs::metadata(d.join("bin/sh")).unwrap().ino(), ino);
    assert_eq!(fs::metadata(d.join("bin/ls")).unwrap().ino(), ino);
    assert_eq!(
        fs::read_link(d.join("bin/abs")).unwrap(),
        Path::new("/etc/passwd")
    );
    assert_eq!(
        fs::read_link(d.join("bin/rel")).unwrap(),
        Path::new("../../..")
    );
    assert_eq!(fs::read(d.join("clean")).unwrap(), b"c");
    s.assert_outside_untouched();
}

#[test]
fn whiteouts_overlay_mode() {
    let s = Scratch::new();
    let tar = Layer::new()
        .dir("dir", 0o755)
        .file("dir/.wh.gone", b"")
        .file(".wh.top", b"")
        .dir("opq", 0o755)
        .file("opq/.wh..wh..opq", b"")
        .file("opq/keep", b"k")
        .bytes();
    let stats = extract(&tar, &s.dest(), ExtractMode::Overlay).unwrap();
    assert_eq!((stats.whiteouts, stats.opaque_dirs), (2, 1));
    let d = s.dest();
    assert!(!d.join("dir/.wh.gone").exists());
    assert_eq!(fs::read(d.join("opq/keep")).unwrap(), b"k");
    if is_root() && stats.unrepresented_whiteouts.is_empty() {
        for p in ["dir/gone", "top"] {
            let meta = fs::symlink_metadata(d.join(p)).unwrap();
            assert!(meta.file_type().is_char_device(), "{p}");
            assert_eq!(meta.rdev(), 0, "{p}");
        }
        if stats.unrepresented_opaques.is_empty() {
            let mut buf = [0u8; 8];
            let n = rustix::fs::lgetxattr(d.join("opq"), "trusted.overlay.opaque", &mut buf[..])
                .unwrap();
            assert_eq!(&buf[..n], b"y");
        }
    } else {
        let mut w = stats.unrepresented_whiteouts.clone();
        w.sort();
        assert_eq!(w, [Path::new("dir/gone"), Path::new("top")]);
        assert_eq!(stats.unrepresented_opaques, [Path::new("opq")]);
        assert!(!d.join("dir/gone").exists());
    }
}

#[test]
fn whiteouts_flatten_mode() {
    let s = Scratch::new();
    let d = s.dest();
    // The lower layers.
    let lower = Layer::new()
        .dir("dir", 0o755)
        .file("dir/gone", b"g")
        .file("dir/stay", b"s")
        .dir("top", 0o755)
        .file("top/sub/f", b"f")
        .dir("opq", 0o755)
        .file("opq/old", b"o")
        .file("opq/sub/old2", b"o2")
        .file("opq/sub/keep2", b"lower")
        .bytes();
    extract(&lower, &d, ExtractMode::Flatten).unwrap();
    let upper = Layer::new()
        // Written before the opaque marker in the same layer: must survive.
        .file("opq/new", b"n")
        .file("dir/.wh.gone", b"")
        .file(".wh.top", b"")
        .file(".wh.never-existed", b"")
        .dir("opq", 0o755)
        .file("opq/.wh..wh..opq", b"")
        .file("opq/sub/keep2", b"upper")
        .bytes();
    let stats = extract(&upper, &d, ExtractMode::Flatten).unwrap();
    assert_eq!((stats.whiteouts, stats.opaque_dirs), (3, 1));
    assert!(!d.join("dir/gone").exists());
    assert_eq!(fs::read(d.join("dir/stay")).unwrap(), b"s");
    assert!(!d.join("top").exists());
    assert_eq!(fs::read(d.join("opq/new")).unwrap(), b"n");
    assert!(!d.join("opq/old").exists());
    assert!(!d.join("opq/sub/old2").exists());
    assert_eq!(fs::read(d.join("opq/sub/keep2")).unwrap(), b"upper");
    assert!(stats.unrepresented_whiteouts.is_empty());
    s.assert_outside_untouched();
}

#[test]
fn invalid_whiteout_is_rejected() {
    let s = Scratch::new();
    for name in ["dir/.wh.", "dir/.wh.."] {
        let tar = Layer::new().file(name, b"").bytes();
        let err = extract(&tar, &s.dest(), ExtractMode::Flatten).unwrap_err();
        assert!(
            matches!(err, ExtractError::InvalidWhiteout { .. }),
            "{name}: {err:?}"
        );
    }
}

fn user_xattrs_supported(dir: &Path) -> bool {
    let probe = dir.join(".xattr-probe");
    fs::write(&probe, b"").unwrap();
    let ok =
        rustix::fs::setxattr(&probe, "user.probe", b"1", rustix::fs::XattrFlags::empty()).is_ok();
    fs::remove_file(probe).unwrap();
    ok
}

#[test]
fn metadata_is_preserved() {
    let s = Scratch::new();
    let d = s.dest();
    let mut layer = Layer::new()
        .dir("sticky", 0o1777)
        .dir("ro", 0o555)
        .file("ro/inside", b"i");
    layer.file_with("suid", b"elf", 0o4755, |h| {
        h.set_uid(1234);
        h.set_gid(5678);
    });
    let layer = layer
        .pax(&[
            ("SCHILY.xattr.user.kiln", b"value"),
            ("SCHILY.xattr.trusted.overlay.redirect", b"/evil"),
            ("mtime", b"1500000000.25"),
        ])
        .file("xattr", b"x")
        .symlink("link", "suid");
    let stats = extract(&layer.bytes(), &d, ExtractMode::Overlay).unwrap();
    assert_eq!(stats.files, 3);

    let meta = |p: &str| fs::symlink_metadata(d.join(p)).unwrap();
    assert_eq!(meta("sticky").permissions().mode() & 0o7777, 0o1777);
    assert_eq!(meta("ro").permissions().mode() & 0o7777, 0o555);
    assert_eq!(fs::read(d.join("ro/inside")).unwrap(), b"i");
    assert_eq!(meta("suid").permissions().mode() & 0o7777, 0o4755);
    for p in ["sticky", "ro", "ro/inside", "suid", "link"] {
        assert_eq!(meta(p).mtime(), 1_600_000_000, "{p}");
    }
    assert_eq!(meta("xattr").mtime(), 1_500_000_000);
    assert_eq!(meta("xattr").mtime_nsec(), 250_000_000);
    if is_root() {
        assert_eq!((meta("suid").uid(), meta("suid").gid()), (1234, 5678));
    }
    if user_xattrs_supported(s.dir.path()) {
        let mut buf = [0u8; 16];
        let n = rustix::fs::getxattr(d.join("xattr"), "user.kiln", &mut buf[..]).unwrap();
        assert_eq!(&buf[..n], b"value");
    }
    if is_root() {
        let mut buf = [0u8; 16];
        assert!(
            rustix::fs::getxattr(d.join("xattr"), "trusted.overlay.redirect", &mut buf[..])
                .is_err(),
            "overlay xattrs from the layer are dropped"
        );
    }
}

#[test]
fn devices_only_when_allowed() {
    let mut layer = Layer::new();
    let mut h = Layer::header("dev/null", EntryType::Char, "", 0, 0o666);
    h.set_device_major(1).unwrap();
    h.set_device_minor(3).unwrap();
    h.set_cksum();
    layer.builder.append(&h, &[][..]).unwrap();
    let fifo = Layer::header("pipe", EntryType::Fifo, "", 0, 0o600);
    layer.builder.append(&fifo, &[][..]).unwrap();
    let tar = layer.bytes();

    let s = Scratch::new();
    let stats = extract(&tar, &s.dest(), ExtractMode::Overlay).unwrap();
    assert_eq!((stats.skipped_devices, stats.nodes), (1, 1));
    assert!(!s.dest().join("dev/null").exists());
    assert!(
        fs::symlink_metadata(s.dest().join("pipe"))
            .unwrap()
            .file_type()
            .is_fifo()
    );

    if is_root() {
        let s = Scratch::new();
        let options = ExtractOptions {
            allow_devices: true,
            ..ExtractOptions::new(ExtractMode::Overlay)
        };
        let stats = extract_layer(&tar[..], &s.dest(), &options).unwrap();
        assert_eq!(stats.nodes, 2);
        let meta = fs::symlink_metadata(s.dest().join("dev/null")).unwrap();
        assert!(meta.file_type().is_char_device());
        assert_eq!(meta.rdev(), rustix::fs::makedev(1, 3));
    }
}

#[test]
fn compression_is_sniffed() {
    let tar = Layer::new().dir("d", 0o755).file("d/f", b"hello").bytes();

    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar).unwrap();
    let gz = gz.finish().unwrap();
    let zst = zstd::encode_all(&tar[..], 3).unwrap();

    assert_eq!(sniff_compression(&tar).unwrap(), Compression::None);
    assert_eq!(sniff_compression(&gz).unwrap(), Compression::Gzip);
    assert_eq!(sniff_compression(&zst).unwrap(), Compression::Zstd);
    assert!(matches!(
        sniff_compression(&[0xfd, b'7', b'z', b'X', b'Z', 0]).unwrap_err(),
        ExtractError::UnsupportedCompression { format: "xz" }
    ));

    for (bytes, want) in [
        (&tar, Compression::None),
        (&gz, Compression::Gzip),
        (&zst, Compression::Zstd),
    ] {
        // Deliver the stream one byte at a time: sniffing must still work.
        struct Trickle<'a>(&'a [u8]);
        impl std::io::Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let Some((&b, rest)) = self.0.split_first() else {
                    return Ok(0);
                };
                buf[0] = b;
                self.0 = rest;
                Ok(1)
            }
        }
        let (got, reader) = decompress(Trickle(bytes)).unwrap();
        assert_eq!(got, want);
        let s = Scratch::new();
        extract_layer(
            reader,
            &s.dest(),
            &ExtractOptions::new(ExtractMode::Flatten),
        )
        .unwrap();
        assert_eq!(fs::read(s.dest().join("d/f")).unwrap(), b"hello");
    }
}

#[test]
fn garbage_is_a_read_error() {
    let s = Scratch::new();
    let err = extract(&[7u8; 1024], &s.dest(), ExtractMode::Flatten).unwrap_err();
    assert!(matches!(err, ExtractError::Read { .. }), "{err:?}");
}

#[test]
fn layer_ending_after_its_last_data_is_complete() {
    // As `umoci insert` writes a layer: the stream stops right after the
    // last file's data, without the padding to the block and the two
    // end-of-archive blocks. Go's archive/tar (Docker, containerd) reads
    // it as complete.
    let full = Layer::new()
        .dir("bin", 0o755)
        .file("bin/hello", b"hello!")
        .bytes();
    let cut = &full[..512 * 2 + 6];
    let s = Scratch::new();
    let stats = extract(cut, &s.dest(), ExtractMode::Flatten).unwrap();
    assert_eq!(stats.files, 1);
    assert_eq!(fs::read(s.dest().join("bin/hello")).unwrap(), b"hello!");

    // Padded, but without the end-of-archive blocks.
    let s = Scratch::new();
    extract(&full[..512 * 3], &s.dest(), ExtractMode::Flatten).unwrap();
    assert_eq!(fs::read(s.dest().join("bin/hello")).unwrap(), b"hello!");

    // A stream that ends inside the data, or inside the padding, is
    // truncated.
    for len in [512 * 2 + 5, 512 * 2 + 7] {
        let s = Scratch::new();
        let err = extract(&full[..len], &s.dest(), ExtractMode::Flatten).unwrap_err();
        assert!(matches!(err, ExtractError::Read { .. }), "{len}: {err:?}");
    }
}
