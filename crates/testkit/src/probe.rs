// What the machine offers the tests, probed by the build scripts of the
// packages whose tests need it (they `include!` this file) and turned
// into `cfg`s, so that a test that cannot run here is marked ignored with
// its reason (`#[cfg_attr(not(kiln_root), ignore = "needs root")]`)
// instead of passing without running. Only std: build scripts include it.
//
// The cfgs:
//   kiln_root        the tests run as root (mounts, namespaces, chown)
//   kiln_containers  root and /bin/busybox (busybox-static): containers and RUN steps
//   kiln_runc        runc on PATH
//   kiln_registry    docker-registry on PATH (Debian's distribution build)
//   kiln_skopeo      skopeo on PATH
//   kiln_slirp       slirp4netns on PATH (private networks)
//   kiln_debootstrap debootstrap on PATH
//   kiln_gnu_tar     GNU tar (writes sparse archives)
//   kiln_git         git on PATH

/// Every cfg a build script may set.
pub const CFGS: &[&str] = &[
    "kiln_root",
    "kiln_containers",
    "kiln_runc",
    "kiln_registry",
    "kiln_skopeo",
    "kiln_slirp",
    "kiln_debootstrap",
    "kiln_gnu_tar",
    "kiln_git",
];

/// The executable `name` on PATH, if any.
pub fn which(name: &str) -> Option<std::path::PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Whether this process runs as root (from /proc, so std alone will do).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// The cfgs that hold here.
pub fn probe() -> Vec<&'static str> {
    let mut found = Vec::new();
    let root = is_root();
    if root {
        found.push("kiln_root");
        if std::path::Path::new("/bin/busybox").is_file() {
            found.push("kiln_containers");
        }
    }
    for (cfg, tool) in [
        ("kiln_runc", "runc"),
        ("kiln_registry", "docker-registry"),
        ("kiln_skopeo", "skopeo"),
        ("kiln_slirp", "slirp4netns"),
        ("kiln_debootstrap", "debootstrap"),
        ("kiln_git", "git"),
    ] {
        if which(tool).is_some() {
            found.push(cfg);
        }
    }
    let gnu_tar = std::process::Command::new("tar")
        .arg("--version")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("GNU tar"));
    if gnu_tar {
        found.push("kiln_gnu_tar");
    }
    found
}

/// For a build script: declares the cfgs, sets those that hold, and asks
/// Cargo to probe again when PATH changes or a probed program appears.
pub fn emit_cfgs() {
    for cfg in CFGS {
        println!("cargo::rustc-check-cfg=cfg({cfg})");
    }
    for cfg in probe() {
        println!("cargo::rustc-cfg={cfg}");
    }
    println!("cargo::rerun-if-env-changed=PATH");
    // A program installed later changes these directories.
    for dir in ["/usr/bin", "/usr/sbin", "/usr/local/bin"] {
        if std::path::Path::new(dir).is_dir() {
            println!("cargo::rerun-if-changed={dir}");
        }
    }
}
