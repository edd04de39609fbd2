//! Helpers shared by the CLI integration tests that run containers: the
//! OCI runtime under test, the skip check and a small busybox rootfs tar.
#![allow(dead_code)]

use std::path::Path;

/// The OCI runtime under test: `KILN_TEST_RUNTIME` (`embedded`, the
/// default, or `runc`), passed to kiln as `KILN_RUNTIME`. `scripts/test.sh`
/// runs the container and build tests once per runtime.
pub fn test_runtime() -> String {
    std::env::var("KILN_TEST_RUNTIME").unwrap_or_else(|_| "embedded".into())
}

/// Whether containers can run here: root, the runtime under test and
/// /bin/busybox. Prints why not, for the test to return early.
pub fn available() -> bool {
    let root = rustix::process::geteuid().is_root();
    let runtime = test_runtime() == "embedded"
        || std::process::Command::new(test_runtime())
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
    let busybox = Path::new("/bin/busybox").exists();
    if !(root && runtime && busybox) {
        eprintln!(
            "skipping: needs root ({root}), the runtime {} ({runtime}) and /bin/busybox ({busybox})",
            test_runtime()
        );
    }
    root && runtime && busybox
}

/// A rootfs tar with /bin/busybox and `applets` linked to it; with
/// `users`, also /etc/passwd and /etc/group holding root and `app` (1000).
pub fn busybox_tar(applets: &[&str], users: bool) -> Vec<u8> {
    busybox_tar_with(applets, users, &[])
}

/// [`busybox_tar`] plus `files` (path, contents), mode 0644, owned by
/// 1000:1000, their directories created (0755, root).
pub fn busybox_tar_with(applets: &[&str], users: bool, files: &[(&str, &str)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut dirs = std::collections::BTreeSet::new();
    for (path, _) in files {
        let mut p = Path::new(path).parent();
        while let Some(d) = p.filter(|d| !d.as_os_str().is_empty()) {
            dirs.insert(d.to_owned());
            p = d.parent();
        }
    }
    for d in dirs {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_size(0);
        h.set_mode(0o755);
        b.append_data(&mut h, &d, std::io::empty()).unwrap();
    }
    for (path, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_uid(1000);
        h.set_gid(1000);
        b.append_data(&mut h, path, data.as_bytes()).unwrap();
    }
    b.append_path_with_name("/bin/busybox", "bin/busybox")
        .unwrap();
    for applet in applets {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_mode(0o777);
        b.append_link(&mut h, format!("bin/{applet}"), "busybox")
            .unwrap();
    }
    if users {
        let passwd = b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n";
        let group = b"root:x:0:\napp:x:1000:\n";
        for (path, data) in [("etc/passwd", &passwd[..]), ("etc/group", &group[..])] {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            b.append_data(&mut h, path, data).unwrap();
        }
    }
    b.into_inner().unwrap()
}
