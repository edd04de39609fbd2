//! End-to-end runs through overlay, spec and runc with a busybox rootfs.

mod common;

use std::time::{Duration, Instant};

use common::{Fixture, Kind, capture, sh, tar_entries};
use kiln_runtime::{
    BindMount, CancellationToken, Error, ExecRequest, Network, OverlayRootfs, Resources, Runtime,
    RuntimeConfig,
};

both_runtimes!(
    echo_output_is_captured,
    exit_codes_and_stderr,
    env_and_missing_cwd_is_created,
    user_switching,
    diff_has_new_files_whiteouts_and_opaque_dirs,
    network_none_has_only_loopback,
    loopback_is_up,
    generated_files_are_mounted,
    cgroup_limits_apply,
    missing_executable_reports_runc_message,
    two_hundred_layers,
    scratch_with_bind_mount,
    cancellation_kills_and_deletes,
);

async fn echo_output_is_captured(kind: Kind) {
    require_containers!(kind);
    let fx = Fixture::new(kind);
    let base = fx.busybox_layer();
    let (tx, out) = capture();
    let mut req = ExecRequest::new(vec![base], vec!["echo".into(), "hi".into()]);
    req.output = Some(tx);
    let result = fx.exec(req).await.unwrap();
    assert_eq!(result.exit_code, 0);
    let (stdout, stderr) = out.await.unwrap();
    assert_eq!(stdout, "hi\n");
    assert_eq!(stderr, "");
}

async fn exit_codes_and_stderr(kind: Kind) {
    require_containers!(kind);
    let fx = Fixture::new(kind);
    let base = fx.busybox_layer();
    let (tx, out) = capture();
    let mut req = ExecRequest::new(vec![base], sh("echo oops >&2; exit 3"));
    req.output = Some(tx);
    let result = fx.exec(req).await.unwrap();
    assert_eq!(result.exit_code, 3);
    assert_eq!(out.await.unwrap(), (String::new(), "oops\n".to_owned()));
}

async fn env_and_missing_cwd_is_created(kind: Kind) {
    require_containers!(kind);
    let fx = Fixture::new(kind);
    let base = fx.busybox_layer();
    let (tx, out) = capture();
    let mut req = ExecRequest::new(vec![base], sh("echo \"$FOO $HOME\"; pwd; echo $PATH"));
    req.env = vec!["FOO=bar".into()];
    req.cwd = "/work/dir".into();
    req.output = Some(tx);
    let result = fx.exec(req).await.unwrap();
    assert_eq!(result.exit_code, 0);
    let (stdout, _) = out.await.unwrap();
    assert_eq!(
        stdout,
        "bar /root\n/work/dir\n/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"
    );
    let mut tar = Vec::new();
    result.upper.write_diff(&mut tar, Some(0)).unwrap();
    let names: Vec<String> = tar_entries(&tar).into_iter().map(|e| e.0).collect();
    // The runtime's /dev, /proc and /sys mount points stay, as in
    // BuildKit's layers; the stubs of kiln's own mounts go.
    assert_eq!(
        names,
        ["dev/", "etc/", "proc/", "sys/", "work/", "work/dir/"]
    );
}

async fn user_switching(kind: Kind) {
    require_containers!(kind);
    let fx = Fixture::new(kind);
    let base = fx.busybox_layer();
    let (tx, out) = capture();
    let mut req = ExecRequest::new(
        vec![base.clone()],
        sh("id -u; id -g; id -G; echo $HOME; touch mine"),
    );
    req.user = Some("app".into());
    req.cwd = "/home/app".into();
    req.output = Some(tx);
    let result = fx.exec(req).await.unwrap();
    let (stdout, stderr) = out.await.unwrap();
    assert_eq!(result.exit_code, 0, "{stderr}");
    assert_eq!(stdout, "1000\n1000\n1000 10\n/home/app\n");
    let mut tar = Vec::new();
    result.upper.write_diff(&mut tar, None).unwrap();
    let entries = tar_entries(&tar);
    let home = entries.iter().find(|e| e.0 == "home/app/").unwrap();
    assert_eq!(home.2, 1000, "working directory owned by the user");
    let mine = entries.iter().find(|e| e.0 == "home/app/mine").unwrap();
    assert_eq!(mine.2, 1000);

    // Unknown users fail with Docker's message before anything runs.
    let mut req = ExecRequest::new(vec![base], vec!["true".into()]);
    req.user = Some("nobody".into());
    let err = fx.exec(req).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "unable to find user nobody: no matching entries in passwd file"
    );
}

async fn diff_has_new_files_whiteouts_and_opaque_dirs(kind: Kind) {
    require_containers!(kind);
    let fx = Fixture::new(kind);
    let base = fx.busybox_layer();
    let req = ExecRequest::new(
        vec![base],
        sh("echo new > /new && rm /data/old && rm -rf /dir && mkdir /dir && touch /dir/b"),
    );
    let result = fx.exec(req).await.unwrap();
    assert_eq!(result.exit_code, 0);
    let mut tar = Vec::new();
    let summary = result.upper.write_diff(&mut tar, Some(0)).unwrap();
    assert_eq!(summary.size, tar.len() as u64);
    let names: Vec<String> = tar_entries(&tar).into_iter().map(|e| e.0).collect();
    // No stubs of kiln's mounts (etc/hosts…): only the parent directory
    // they were created in, copied up unchanged. The runtime's own mount
    // points missing from the image stay, as in BuildKit's layers.
    assert_eq!(
        names,
        [
            "data/",
            "data/.wh.old",
            "dev/",
            "dir/",
            "dir/.wh..wh..opq",
            "dir/b",
            "etc/",
            "new",
            "proc/",
            "sys/"
        ]
    );
    // Deterministic.
    let mut again = Vec::new();
    result.upper.write_diff(&mut again, Some(0)).unwrap();
    assert_eq!(tar, again);
}

async fn network_none_has_only_loopback(kind: Kind) {
    require_containers!(kind);
    let fx = Fixture::new(kind);
    let base = fx.busybox_layer();
    let (tx, out) = capture();
    let mut req = ExecRequest::new(vec![base], vec!["cat".into(), "/proc/net/dev".into()]);
    req.network = Network::None;
    req.output = Some(tx);
    let result = fx.exec(req).await.unwrap();
    assert_eq!(result.exit_code, 0);
    let (stdout, _) = out.await.unwrap();
    let interfaces: Vec<&str> = stdout
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(str::trim)
        .collect();
    assert_eq!(interfaces, ["lo"]);
}

/// As with runc, the loopback interface is up.
async fn loopback_is_up(kind: Kind) {
    require_containers!(kind);
    let fx = Fixture::new(kind);
    let base = fx.busybox_layer();
    let (tx, out) = capture();
    // IFF_UP is bit 0 of the flags.
    let mut req = ExecRequest::new(vec![base], sh("cat /sys/class/net/lo/flags"));
    req.network = Network::None;
    req.output = Some(tx);
    let result = fx.exec(req).await.unwrap();
    assert_eq!(result.exit_code, 0);
    let (stdout, stderr) = out.await.unwrap();
    let flags = u32::from_str_radix(stdout.trim().trim_start_matches("0x"), 16)
        .unwrap_or_else(|_| panic!("{stdout:?} {stderr:?}"));
    assert_eq!(flags & 1, 1, "lo flags {flags:#x}");
}

async fn generated_files_are_mounted(kind: Kind) {
    require_containers!(kind);
    let fx = Fixture::new(kind);
    let base = fx.busybox_layer();
    let (tx, out) = capture();
    let mut req = ExecRequest::new(
        vec![base],
        sh("cat /etc/hostname /etc/hosts; echo x > /etc/hosts || echo read-only"),
    );
    req.hostname = Some("box".into());
    req.extra_hosts = vec![("db".into(), "10.1.2.3".into())];
    req.output = Some(tx);
    let result = fx.exec(req).await.unwrap();
    assert_eq!(result.exit_code, 0);
    let (stdout, _) = out.await.unwrap();
    assert_eq!(
        stdout,
        "box\n127.0.0.1\tlocalhost box\n::1\tlocalhost ip6-localhost ip6-loopback\n10.1.2.3\tdb\nread-only\n"
    );
}

async fn cgroup_limits_apply(kind: Kind) {
    require_containers!(kind);
    let fx = Fixture::new(kind);
    let base = fx.busybox_layer();
    let (tx, out) = capture();
    let mut req = ExecRequest::new(
        vec![base],
        sh(
            "cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/pids/pids.max 2>/dev/null \
            || cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/pids.max",
        ),
    );
    req.resources = Resources {
        memory: Some(64 << 20),
        pids: Some(50),
        ..Resources::default()
    };
    req.output = Some(tx);
    let result = fx.exec(req).await.unwrap();
    let (stdout, stderr) = out.await.unwrap();
    assert_eq!(result.exit_code, 0, "{stderr}");
    assert_eq!(stdout, format!("{}\n50\n", 64 << 20));
}

async fn missing_executable_reports_runc_message(kind: Kind) {
    require_containers!(kind);
    let fx = Fixture::new(kind);
    let base = fx.busybox_layer();
    let req = ExecRequest::new(vec![base], vec!["foo".into()]);
    let err = fx.exec(req).await.unwrap_err();
    assert!(matches!(err, Error::Start { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "exec: \"foo\": executable file not found in $PATH"
    );
}

async fn two_hundred_layers(kind: Kind) {
    require_containers!(kind);
    let fx = Fixture::new(kind);
    let base = fx.busybox_layer();
    // Layer i (1..=200) adds /l/i and overwrites /top; topmost first.
    let mut lowers = Vec::new();
    for i in (1..=200).rev() {
        let fs = fx.layer(i);
        std::fs::create_dir(fs.join("l")).unwrap();
        std::fs::write(fs.join("l").join(i.to_string()), format!("{i}\n")).unwrap();
        std::fs::write(fs.join("top"), format!("{i}\n")).unwrap();
        lowers.push(fs);
    }
    lowers.push(base);
    let total: usize = lowers.iter().map(|l| l.as_os_str().len() + 1).sum();
    assert!(total > 4096, "the lower paths must not fit one page");
    let (tx, out) = capture();
    let mut req = ExecRequest::new(lowers, sh("cat /top /l/1 /l/200; ls /l | wc -l"));
    req.output = Some(tx);
    let result = fx.exec(req).await.unwrap();
    let (stdout, stderr) = out.await.unwrap();
    assert_eq!(result.exit_code, 0, "{stderr}");
    assert_eq!(stdout, "200\n1\n200\n200\n");
}

async fn scratch_with_bind_mount(kind: Kind) {
    require_containers!(kind);
    let fx = Fixture::new(kind);
    let (tx, out) = capture();
    let mut req = ExecRequest::new(
        Vec::new(),
        vec!["/bin/busybox".into(), "echo".into(), "from scratch".into()],
    );
    req.mounts = vec![BindMount {
        source: common::BUSYBOX.into(),
        target: "/bin/busybox".into(),
        readonly: true,
    }];
    req.output = Some(tx);
    let result = fx.exec(req).await.unwrap();
    assert_eq!(result.exit_code, 0);
    assert_eq!(out.await.unwrap().0, "from scratch\n");
    let mut tar = Vec::new();
    result.upper.write_diff(&mut tar, None).unwrap();
    let names: Vec<String> = tar_entries(&tar).into_iter().map(|e| e.0).collect();
    // The bind mount's stub (/bin/busybox) is removed; the runtime's
    // mount points stay, as in BuildKit's layers.
    assert_eq!(names, ["dev/", "proc/", "sys/"]);
}

async fn cancellation_kills_and_deletes(kind: Kind) {
    require_containers!(kind);
    let fx = Fixture::new(kind);
    let base = fx.busybox_layer();
    let req = ExecRequest::new(vec![base], vec!["sleep".into(), "60".into()]);
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(700)).await;
        trigger.cancel();
    });
    let start = Instant::now();
    let err = fx.runtime.run(req, &cancel).await.unwrap_err();
    assert!(matches!(err, Error::Cancelled { .. }), "{err:?}");
    assert!(start.elapsed() < Duration::from_secs(20));
    // Nothing left behind: no runc state, no container directory.
    let runc_root = fx.dir.path().join("state/runc");
    let left: Vec<_> = std::fs::read_dir(&runc_root).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
    let containers: Vec<_> = std::fs::read_dir(fx.dir.path().join("state/containers"))
        .unwrap()
        .collect();
    assert!(containers.is_empty(), "{containers:?}");
}

#[test]
#[cfg_attr(
    not(all(kiln_containers, kiln_runc)),
    ignore = "needs root and /bin/busybox and runc"
)]
fn overlay_mount_and_unmount() {
    require_containers!();
    let fx = Fixture::new(Kind::Runc);
    let lower = fx.layer(1);
    std::fs::write(lower.join("f"), "lower").unwrap();
    let dir = fx.dir.path().join("c");
    std::fs::create_dir(&dir).unwrap();
    let rootfs = OverlayRootfs::mount(&dir, std::slice::from_ref(&lower)).unwrap();
    assert_eq!(
        std::fs::read_to_string(rootfs.rootfs().join("f")).unwrap(),
        "lower"
    );
    std::fs::write(rootfs.rootfs().join("g"), "upper").unwrap();
    assert!(rootfs.upper().join("g").is_file());
    let merged = rootfs.rootfs().to_owned();
    rootfs.unmount().unwrap();
    assert!(!merged.join("f").exists());
    assert!(!lower.join("g").exists());
    let _ = Runtime::new(RuntimeConfig::new(fx.dir.path().join("unused"))).unwrap();
}
