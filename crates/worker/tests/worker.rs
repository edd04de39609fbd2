//! End-to-end: graphs built by hand, solved with the solver and the
//! worker over a real store, runc and overlayfs.

mod common;

use std::os::unix::fs::MetadataExt;

use common::{Fixture, context, image, inspect, run, run_op, solve, solve_error};
use kiln_solver::{
    CacheSharing, Chmod, ChownOpt, CopyAction, ExecMount, Executor, FileAction, FileOp, Graph,
    MergeOp, MountKind, Op, OpMetadata, SecretMount, UserOpt,
};

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let p = e.path();
        out.push(format!(
            "{} {:o}",
            p.display(),
            e.metadata().unwrap().mode()
        ));
        if e.file_type().unwrap().is_dir() {
            out.extend(walk(&p));
        }
    }
    out
}

fn copy(src_input: usize, src: &str, dest: &str) -> CopyAction {
    CopyAction {
        src_input,
        src: src.into(),
        dest: dest.into(),
        follow_symlinks: true,
        dir_copy_contents: true,
        create_dest_path: true,
        allow_wildcard: true,
        ..CopyAction::default()
    }
}

fn file_op(
    g: &mut Graph,
    base: Option<usize>,
    actions: Vec<FileAction>,
    inputs: Vec<kiln_solver::VertexId>,
) -> kiln_solver::VertexId {
    g.add(
        Op::File(FileOp { base, actions }),
        inputs,
        OpMetadata::named("file"),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(all(kiln_containers, kiln_runc)),
    ignore = "needs root and /bin/busybox and runc"
)]
async fn run_adds_a_layer_and_rebuilds_are_cached_across_workers() {
    require_containers!();
    let fx = Fixture::new();
    let mut g = Graph::new();
    let base = image(&mut g);
    let r = run(&mut g, base, "echo hi > /hello && echo logged");
    let first = solve(&fx.worker(), &g, r).await.unwrap();
    assert_eq!(first.executed, 2);
    assert!(String::from_utf8_lossy(&first.logs).contains("logged"));
    let out = first.output();
    assert_eq!(out.len(), 2);
    let top = &out.layers()[1];
    assert!(!top.empty);
    assert_eq!(
        std::fs::read(top.snapshot_dir.join("hello")).unwrap(),
        b"hi\n"
    );
    let blob = top.blob.as_ref().unwrap();
    assert!(fx.store.has_blob(&blob.digest).unwrap());
    assert_eq!(blob.digest, top.diff_id);
    // No runtime mount stubs in the layer.
    assert!(!top.snapshot_dir.join("etc/hosts").exists());

    // A new worker (as in a new process) finds everything cached.
    let second = solve(&fx.worker(), &g, r).await.unwrap();
    assert_eq!(second.executed, 0);
    assert_eq!(second.output(), out);

    // An exec that changes nothing gives an empty layer (on a first step
    // that gave the minimal image its /dev, /proc and /sys mount points).
    let mut g2 = Graph::new();
    let base = image(&mut g2);
    let first = run(&mut g2, base, "echo first");
    let noop = run(&mut g2, first, "true");
    let s = solve(&fx.worker(), &g2, noop).await.unwrap();
    let top = &s.output().layers()[2];
    let listing: Vec<_> = walk(&top.snapshot_dir);
    assert!(top.empty, "{listing:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(all(kiln_containers, kiln_runc)),
    ignore = "needs root and /bin/busybox and runc"
)]
async fn failing_process_reports_buildkit_wording() {
    require_containers!();
    let fx = Fixture::new();
    let mut g = Graph::new();
    let base = image(&mut g);
    let r = run(&mut g, base, "exit 2");
    let text = solve_error(&fx.worker(), &g, r).await;
    assert!(
        text.contains(r#"process "/bin/sh -c exit 2" did not complete successfully: exit code: 2"#),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(all(kiln_containers, kiln_runc)),
    ignore = "needs root and /bin/busybox and runc"
)]
async fn copy_from_context_follows_buildkit_rules() {
    require_containers!();
    let fx = Fixture::new();
    fx.write("a.txt", b"A");
    fx.write("b.txt", b"B");
    fx.write("c.md", b"C");
    fx.write("dir/sub/x", b"X");
    std::os::unix::fs::symlink("a.txt", fx.context.join("link")).unwrap();
    let mut g = Graph::new();
    let base = image(&mut g);
    let ctx = context(&mut g, &["."]);
    let f = file_op(
        &mut g,
        Some(0),
        vec![
            FileAction::Copy(copy(1, "/*.txt", "/dst/")),
            FileAction::Copy(copy(1, "/dir", "/d2")),
            FileAction::Copy(copy(1, "/c.md", "/named")),
            FileAction::Copy(copy(1, "/c.md", "/dst/")),
            FileAction::Copy(CopyAction {
                follow_symlinks: false,
                ..copy(1, "/link", "/links/")
            }),
            FileAction::Copy(copy(1, "/link", "/followed")),
        ],
        vec![base, ctx],
    );
    let s = solve(&fx.worker(), &g, f).await.unwrap();
    inspect(s.output(), |root| {
        assert_eq!(std::fs::read(root.join("dst/a.txt")).unwrap(), b"A");
        assert_eq!(std::fs::read(root.join("dst/b.txt")).unwrap(), b"B");
        assert_eq!(std::fs::read(root.join("dst/c.md")).unwrap(), b"C");
        assert_eq!(std::fs::read(root.join("d2/sub/x")).unwrap(), b"X");
        assert!(!root.join("d2/dir").exists());
        assert_eq!(std::fs::read(root.join("named")).unwrap(), b"C");
        assert_eq!(
            std::fs::read_link(root.join("links/link"))
                .unwrap()
                .to_str(),
            Some("a.txt")
        );
        let m = std::fs::symlink_metadata(root.join("followed")).unwrap();
        assert!(m.is_file());
        // Context files are owned by root.
        assert_eq!(std::fs::metadata(root.join("dst/a.txt")).unwrap().uid(), 0);
        // The base is still there.
        assert!(root.join("bin/busybox").is_file());
    });

    // No match: BuildKit's message.
    let mut g = Graph::new();
    let base = image(&mut g);
    let ctx = context(&mut g, &["nomatch*"]);
    let f = file_op(
        &mut g,
        Some(0),
        vec![FileAction::Copy(copy(1, "/nomatch*", "/x/"))],
        vec![base, ctx],
    );
    let err = solve_error(&fx.worker(), &g, f).await;
    assert!(err.contains(r#""/nomatch*": not found"#), "{err}");

    // Several sources to a path not spelled as a directory: each is
    // copied to it in turn and the last wins, as in BuildKit.
    let mut g = Graph::new();
    let base = image(&mut g);
    let ctx = context(&mut g, &["."]);
    let f = file_op(
        &mut g,
        Some(0),
        vec![FileAction::Copy(copy(1, "/*.txt", "/onefile"))],
        vec![base, ctx],
    );
    let s = solve(&fx.worker(), &g, f).await.unwrap();
    inspect(s.output(), |root| {
        assert!(root.join("onefile").is_file());
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(all(kiln_containers, kiln_runc)),
    ignore = "needs root and /bin/busybox and runc"
)]
async fn chown_by_name_and_chmod() {
    require_containers!();
    let fx = Fixture::new();
    fx.write("f", b"data");
    fx.write("d/inner", b"i");
    let mut g = Graph::new();
    let base = image(&mut g);
    let ctx = context(&mut g, &["f", "d"]);
    let f = file_op(
        &mut g,
        Some(0),
        vec![
            FileAction::Copy(CopyAction {
                chown: Some(ChownOpt {
                    user: UserOpt::Name("app".into()),
                    group: None,
                }),
                chmod: Some(Chmod::Octal(0o750)),
                ..copy(1, "/f", "/owned")
            }),
            FileAction::Copy(CopyAction {
                chown: Some(ChownOpt {
                    user: UserOpt::Id(7),
                    group: Some(UserOpt::Name("staff".into())),
                }),
                chmod: Some(Chmod::Symbolic("u+x,go-r".into())),
                ..copy(1, "/d", "/dd/")
            }),
        ],
        vec![base, ctx],
    );
    let s = solve(&fx.worker(), &g, f).await.unwrap();
    inspect(s.output(), |root| {
        let m = std::fs::metadata(root.join("owned")).unwrap();
        assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (1000, 1001, 0o750));
        let m = std::fs::metadata(root.join("dd/inner")).unwrap();
        assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (7, 50, 0o700));
    });

    let mut g = Graph::new();
    let base = image(&mut g);
    let ctx = context(&mut g, &["f"]);
    let f = file_op(
        &mut g,
        Some(0),
        vec![FileAction::Copy(CopyAction {
            chown: Some(ChownOpt {
                user: UserOpt::Name("nobody-here".into()),
                group: None,
            }),
            ..copy(1, "/f", "/x")
        })],
        vec![base, ctx],
    );
    // An unknown user is root, as BuildKit resolves it.
    let s = solve(&fx.worker(), &g, f).await.unwrap();
    inspect(s.output(), |root| {
        let m = std::fs::metadata(root.join("x")).unwrap();
        assert_eq!((m.uid(), m.gid()), (0, 0));
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(all(kiln_containers, kiln_runc)),
    ignore = "needs root and /bin/busybox and runc"
)]
async fn add_unpacks_local_archives_and_heredoc_mkfile() {
    require_containers!();
    let fx = Fixture::new();
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(5);
    h.set_mode(0o640);
    tar.append_data(&mut h, "pkg/readme", &b"hello"[..])
        .unwrap();
    let tar = tar.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &tar).unwrap();
    fx.write("bundle.tar.gz", &gz.finish().unwrap());
    fx.write("plain.txt", b"not an archive");

    let mut g = Graph::new();
    let base = image(&mut g);
    let ctx = context(&mut g, &["bundle.tar.gz", "plain.txt"]);
    let heredoc = file_op(
        &mut g,
        None,
        vec![FileAction::Mkfile {
            path: "/script".into(),
            mode: 0o755,
            data: b"#!/bin/sh\necho from heredoc\n".to_vec(),
            owner: None,
        }],
        vec![],
    );
    let f = file_op(
        &mut g,
        Some(0),
        vec![
            FileAction::Copy(CopyAction {
                unpack_archives: true,
                ..copy(1, "/bundle.tar.gz", "/opt/")
            }),
            FileAction::Copy(CopyAction {
                unpack_archives: true,
                ..copy(1, "/plain.txt", "/opt/")
            }),
            FileAction::Copy(copy(2, "/script", "/usr/bin/")),
            FileAction::Mkdir {
                path: "/made/deep".into(),
                mode: 0o700,
                make_parents: true,
                owner: None,
            },
            FileAction::Symlink {
                old: "/usr/bin/script".into(),
                new: "/made/run".into(),
            },
        ],
        vec![base, ctx, heredoc],
    );
    let r = run(&mut g, f, "/made/run > /out");
    let s = solve(&fx.worker(), &g, r).await.unwrap();
    inspect(s.output(), |root| {
        assert_eq!(
            std::fs::read(root.join("opt/pkg/readme")).unwrap(),
            b"hello"
        );
        assert!(!root.join("opt/bundle.tar.gz").exists());
        assert_eq!(
            std::fs::read(root.join("opt/plain.txt")).unwrap(),
            b"not an archive"
        );
        let m = std::fs::metadata(root.join("usr/bin/script")).unwrap();
        assert_eq!(m.mode() & 0o7777, 0o755);
        assert_eq!(
            std::fs::metadata(root.join("made/deep")).unwrap().mode() & 0o7777,
            0o700
        );
        assert_eq!(std::fs::read(root.join("out")).unwrap(), b"from heredoc\n");
    });

    // Removing files.
    let mut g2 = Graph::new();
    let base = image(&mut g2);
    let rm = file_op(
        &mut g2,
        Some(0),
        vec![
            FileAction::Rm {
                path: "/etc/pass*".into(),
                allow_not_found: false,
                allow_wildcard: true,
            },
            FileAction::Rm {
                path: "/nothing".into(),
                allow_not_found: true,
                allow_wildcard: false,
            },
        ],
        vec![base],
    );
    let s = solve(&fx.worker(), &g2, rm).await.unwrap();
    inspect(s.output(), |root| {
        assert!(!root.join("etc/passwd").exists());
        assert!(root.join("etc/group").exists());
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(all(kiln_containers, kiln_runc)),
    ignore = "needs root and /bin/busybox and runc"
)]
async fn cache_mounts_persist_and_secrets_stay_out_of_layers() {
    require_containers!();
    let fx = Fixture::new();
    let cache_mount = ExecMount {
        input: None,
        dest: "/cache".into(),
        selector: None,
        readonly: false,
        kind: MountKind::Cache {
            id: "shared-id".into(),
            sharing: CacheSharing::Locked,
            init: None,
        },
        output: false,
    };
    let mut g = Graph::new();
    let base = image(&mut g);
    let mut op = run_op("echo kept > /cache/x");
    op.mounts.push(cache_mount.clone());
    let w = g
        .add(Op::Exec(op), vec![base], OpMetadata::named("write cache"))
        .unwrap();
    solve(&fx.worker(), &g, w).await.unwrap();

    let mut g = Graph::new();
    let base = image(&mut g);
    let mut op = run_op("cat /cache/x > /from-cache");
    op.mounts.push(cache_mount);
    let r = g
        .add(Op::Exec(op), vec![base], OpMetadata::named("read cache"))
        .unwrap();
    let s = solve(&fx.worker(), &g, r).await.unwrap();
    let top = &s.output().layers()[1];
    assert_eq!(
        std::fs::read(top.snapshot_dir.join("from-cache")).unwrap(),
        b"kept\n"
    );
    assert!(!top.snapshot_dir.join("cache/x").exists());

    // Secrets.
    let mut config = fx.config();
    config.secrets.insert("tok".into(), b"s3cr3t".to_vec());
    let worker = kiln_worker::Worker::new(fx.store.clone(), config).unwrap();
    let secret = ExecMount {
        input: None,
        dest: "/run/secrets/tok".into(),
        selector: None,
        readonly: true,
        kind: MountKind::Secret(SecretMount {
            id: "tok".into(),
            mode: 0o400,
            uid: 0,
            gid: 0,
            optional: false,
            env: Some("TOK".into()),
        }),
        output: false,
    };
    let mut g = Graph::new();
    let base = image(&mut g);
    let mut op = run_op("wc -c < /run/secrets/tok > /len && echo \"$TOK\" | wc -c > /envlen");
    op.mounts.push(secret.clone());
    let r = g
        .add(Op::Exec(op), vec![base], OpMetadata::named("secret"))
        .unwrap();
    let s = solve(&worker, &g, r).await.unwrap();
    let top = &s.output().layers()[1];
    assert_eq!(
        std::fs::read_to_string(top.snapshot_dir.join("len"))
            .unwrap()
            .trim(),
        "6"
    );
    assert_eq!(
        std::fs::read_to_string(top.snapshot_dir.join("envlen"))
            .unwrap()
            .trim(),
        "7"
    );
    assert!(!top.snapshot_dir.join("run/secrets/tok").exists());
    assert!(!top.snapshot_dir.join("run").exists());

    // A missing required secret.
    let mut g = Graph::new();
    let base = image(&mut g);
    let mut op = run_op("true");
    let mut missing = secret;
    if let MountKind::Secret(s) = &mut missing.kind {
        s.id = "nope".into();
    }
    op.mounts.push(missing);
    let r = g
        .add(Op::Exec(op), vec![base], OpMetadata::named("missing"))
        .unwrap();
    let err = solve_error(&fx.worker(), &g, r).await;
    assert!(err.contains("secret nope: not found"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(all(kiln_containers, kiln_runc)),
    ignore = "needs root and /bin/busybox and runc"
)]
async fn local_keys_depend_on_content_not_mtimes() {
    require_containers!();
    let fx = Fixture::new();
    fx.write("src/a", b"aaaa");
    fx.write("src/b", b"bbbb");
    fx.write("other", b"o");
    let mut g = Graph::new();
    let ctx = context(&mut g, &["src"]);
    let vertex = g.vertex(ctx).unwrap().clone();
    let worker = fx.worker();
    let key = || async { worker.cache_key(&vertex, &[]).await.unwrap() };
    let k1 = key().await;
    assert!(
        fx.dir
            .path()
            .join("root/build")
            .read_dir()
            .unwrap()
            .any(|e| e
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("statcache-"))
    );
    // Touching a file keeps the key.
    let f = std::fs::File::options()
        .write(true)
        .open(fx.context.join("src/a"))
        .unwrap();
    f.set_modified(std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(12345))
        .unwrap();
    drop(f);
    assert_eq!(key().await, k1);
    // Files outside the selection do not matter.
    fx.write("other", b"changed");
    assert_eq!(key().await, k1);
    // One byte changes it.
    fx.write("src/b", b"bbbc");
    let k2 = key().await;
    assert_ne!(k2, k1);
    // A mode change too.
    std::fs::set_permissions(
        fx.context.join("src/b"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    assert_ne!(key().await, k2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(all(kiln_containers, kiln_runc)),
    ignore = "needs root and /bin/busybox and runc"
)]
async fn copy_link_is_a_merge_and_diff_takes_the_top() {
    require_containers!();
    let fx = Fixture::new();
    fx.write("linked", b"L");
    let mut g = Graph::new();
    let base = image(&mut g);
    let ctx = context(&mut g, &["linked"]);
    let layer = file_op(
        &mut g,
        None,
        vec![FileAction::Copy(copy(0, "/linked", "/linked"))],
        vec![ctx],
    );
    let merged = g
        .add(
            Op::Merge(MergeOp {}),
            vec![base, layer],
            OpMetadata::named("COPY --link"),
        )
        .unwrap();
    let r = run(&mut g, merged, "cat /linked > /seen");
    let s = solve(&fx.worker(), &g, r).await.unwrap();
    let out = s.output();
    assert_eq!(out.len(), 3);
    let base_ref = &s
        .solution
        .get(&g.vertex(base).unwrap().digest())
        .unwrap()
        .output;
    let layer_ref = &s
        .solution
        .get(&g.vertex(layer).unwrap().digest())
        .unwrap()
        .output;
    assert_eq!(layer_ref.len(), 1);
    assert_eq!(out.layers()[0], base_ref.layers()[0]);
    assert_eq!(out.layers()[1], layer_ref.layers()[0]);
    assert_eq!(
        std::fs::read(out.layers()[2].snapshot_dir.join("seen")).unwrap(),
        b"L"
    );

    let diff = g
        .add(
            Op::Diff(kiln_solver::DiffOp { lower: 0, upper: 1 }),
            vec![merged, r],
            OpMetadata::named("diff"),
        )
        .unwrap();
    let s = solve(&fx.worker(), &g, diff).await.unwrap();
    assert_eq!(s.output().len(), 1);
    assert_eq!(s.output().layers()[0], out.layers()[2]);

    let bad = g
        .add(
            Op::Diff(kiln_solver::DiffOp { lower: 0, upper: 1 }),
            vec![r, layer],
            OpMetadata::named("bad diff"),
        )
        .unwrap();
    let err = solve_error(&fx.worker(), &g, bad).await;
    assert!(err.contains("not a prefix"), "{err}");
}

/// Serves `body` once per connection on a local port, for `n` requests.
fn serve(body: &'static [u8], n: usize) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(n) {
            let mut s = stream.unwrap();
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            s.write_all(head.as_bytes()).unwrap();
            s.write_all(body).unwrap();
        }
    });
    format!("http://{addr}/files/tool.sh")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(all(kiln_containers, kiln_runc)),
    ignore = "needs root and /bin/busybox and runc"
)]
async fn http_sources_download_and_verify() {
    require_containers!();
    let fx = Fixture::new();
    let url = serve(b"#!/bin/sh\necho tool\n", 2);
    let good = kiln_oci::Digest::sha256(b"#!/bin/sh\necho tool\n");
    let mut g = Graph::new();
    let src = g
        .add(
            Op::Source(kiln_solver::SourceOp::Http {
                url: url.clone(),
                checksum: Some(good),
                filename: None,
            }),
            vec![],
            OpMetadata::named("http"),
        )
        .unwrap();
    let s = solve(&fx.worker(), &g, src).await.unwrap();
    let layer = &s.output().layers()[0];
    let m = std::fs::metadata(layer.snapshot_dir.join("tool.sh")).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o600);
    assert!(layer.blob.is_none());

    let mut g = Graph::new();
    let src = g
        .add(
            Op::Source(kiln_solver::SourceOp::Http {
                url,
                checksum: Some(kiln_oci::Digest::sha256(b"other")),
                filename: Some("renamed".into()),
            }),
            vec![],
            OpMetadata::named("http bad"),
        )
        .unwrap();
    let err = solve_error(&fx.worker(), &g, src).await;
    assert!(err.contains("checksum mismatch"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(all(kiln_containers, kiln_runc)),
    ignore = "needs root and /bin/busybox and runc"
)]
async fn git_sources_check_out_a_ref() {
    require_containers!();
    if std::process::Command::new("git")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipping: git is not installed");
        return;
    }
    let fx = Fixture::new();
    let repo = fx.dir.path().join("repo");
    std::fs::create_dir(&repo).unwrap();
    let git = |args: &[&str]| {
        let out = std::process::Command::new("git")
            .args(args)
            .current_dir(&repo)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    git(&["init", "-q", "-b", "main"]);
    std::fs::create_dir(repo.join("sub")).unwrap();
    std::fs::write(repo.join("sub/file"), b"v1").unwrap();
    git(&["add", "."]);
    git(&["commit", "-q", "-m", "one"]);
    git(&["tag", "v1"]);
    std::fs::write(repo.join("sub/file"), b"v2").unwrap();
    git(&["commit", "-q", "-am", "two"]);

    let remote = format!("file://{}", repo.display());
    let mut g = Graph::new();
    let src = g
        .add(
            Op::Source(kiln_solver::SourceOp::Git {
                remote: remote.clone(),
                ref_: Some("v1".into()),
                keep_git_dir: false,
                subdir: Some("sub".into()),
            }),
            vec![],
            OpMetadata::named("git"),
        )
        .unwrap();
    let s = solve(&fx.worker(), &g, src).await.unwrap();
    let dir = &s.output().layers()[0].snapshot_dir;
    assert_eq!(std::fs::read(dir.join("file")).unwrap(), b"v1");

    let mut g = Graph::new();
    let src = g
        .add(
            Op::Source(kiln_solver::SourceOp::Git {
                remote,
                ref_: None,
                keep_git_dir: true,
                subdir: None,
            }),
            vec![],
            OpMetadata::named("git head"),
        )
        .unwrap();
    let s = solve(&fx.worker(), &g, src).await.unwrap();
    let dir = &s.output().layers()[0].snapshot_dir;
    assert_eq!(std::fs::read(dir.join("sub/file")).unwrap(), b"v2");
    assert!(dir.join(".git").is_dir());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(all(kiln_containers, kiln_runc)),
    ignore = "needs root and /bin/busybox and runc"
)]
async fn missing_images_and_pruned_records() {
    require_containers!();
    let fx = Fixture::new();
    let mut g = Graph::new();
    let img = g
        .add(
            Op::Source(kiln_solver::SourceOp::Image {
                reference: "docker.io/library/not-here:1".into(),
                platform: "linux/amd64".into(),
                resolved_digest: None,
            }),
            vec![],
            OpMetadata::named("FROM not-here"),
        )
        .unwrap();
    let err = solve_error(&fx.worker(), &g, img).await;
    assert!(
        err.contains("image not found locally and no registry access"),
        "{err}"
    );

    // A record whose snapshot was removed is a miss, and the op runs again.
    let mut g = Graph::new();
    let base = image(&mut g);
    let r = run(&mut g, base, "echo x > /x");
    let first = solve(&fx.worker(), &g, r).await.unwrap();
    let top = first.output().layers()[1].snapshot_id.clone();
    assert!(fx.store.remove_snapshot(&top).unwrap());
    let again = solve(&fx.worker(), &g, r).await.unwrap();
    assert_eq!(again.executed, 1);
    assert!(again.output().layers()[1].snapshot_dir.join("x").is_file());
}

/// The issue's cache-key table: a symlink target or a file name changes the
/// key; excluded (`.dockerignore`d) files never affect it; with modes set by
/// the consumer (`COPY --chmod=0644`), a source mode change does not either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(all(kiln_containers, kiln_runc)),
    ignore = "needs root and /bin/busybox and runc"
)]
async fn local_keys_follow_the_contract() {
    require_containers!();
    let fx = Fixture::new();
    fx.write("src/a", b"aaaa");
    fx.write("src/secret.key", b"k1");
    std::os::unix::fs::symlink("a", fx.context.join("src/link")).unwrap();
    let source = |excludes: Vec<String>, ignore_modes: bool| {
        let mut g = Graph::new();
        let v = g
            .add(
                Op::Source(kiln_solver::SourceOp::Local {
                    name: "context".into(),
                    include_patterns: vec![],
                    exclude_patterns: excludes,
                    follow_paths: vec!["src".into()],
                    ignore_modes,
                }),
                vec![],
                OpMetadata::named("context"),
            )
            .unwrap();
        g.vertex(v).unwrap().clone()
    };
    let worker = fx.worker();
    let plain = source(vec![], false);
    let ignoring = source(vec!["**/*.key".into()], false);
    let chmod = source(vec![], true);
    let key = |v: &kiln_solver::Vertex| {
        let v = v.clone();
        let w = &worker;
        async move { w.cache_key(&v, &[]).await.unwrap() }
    };
    let (p1, i1, c1) = (key(&plain).await, key(&ignoring).await, key(&chmod).await);

    // An excluded file never affects the key.
    fx.write("src/secret.key", b"k2");
    assert_ne!(key(&plain).await, p1);
    assert_eq!(key(&ignoring).await, i1);

    // A mode change matters, unless the consumer sets modes.
    let c_before = key(&chmod).await;
    assert_ne!(c_before, c1, "secret.key is selected by this source");
    std::fs::set_permissions(
        fx.context.join("src/a"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    assert_eq!(key(&chmod).await, c_before);
    let i2 = key(&ignoring).await;
    assert_ne!(i2, i1);

    // A symlink target changes the key.
    std::fs::remove_file(fx.context.join("src/link")).unwrap();
    std::os::unix::fs::symlink("b", fx.context.join("src/link")).unwrap();
    let i3 = key(&ignoring).await;
    assert_ne!(i3, i2);

    // So does a file name, with the same bytes.
    std::fs::rename(fx.context.join("src/a"), fx.context.join("src/renamed")).unwrap();
    assert_ne!(key(&ignoring).await, i3);
}
