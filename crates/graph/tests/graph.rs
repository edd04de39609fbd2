//! Graph dump golden test and definition round-trip.

use std::collections::BTreeMap;

use kiln_graph::{
    CacheSharing, Chmod, ChownOpt, CopyAction, Definition, DiffOp, ExecMount, ExecOp, FileAction,
    FileOp, Graph, MergeOp, MountKind, NetworkMode, Op, OpMetadata, ProgressGroup, SecretEnv,
    SecretMount, SourceOp, UserOpt,
};

/// A graph shaped like a two-stage Dockerfile using most op features.
fn sample() -> Graph {
    let mut g = Graph::new();
    let group = ProgressGroup {
        id: "build".into(),
        name: "stage build".into(),
    };
    let named = |name: &str| {
        let mut meta = OpMetadata::named(name);
        meta.progress_group = Some(group.clone());
        meta
    };

    let golang = g
        .add(
            Op::Source(SourceOp::Image {
                reference: "docker.io/library/golang:1.23".into(),
                platform: "linux/amd64".into(),
                resolved_digest: Some(
                    "sha256:0000000000000000000000000000000000000000000000000000000000000001"
                        .parse()
                        .unwrap(),
                ),
            }),
            vec![],
            named("[build 1/4] FROM docker.io/library/golang:1.23"),
        )
        .unwrap();
    let context = g
        .add(
            Op::Source(SourceOp::Local {
                name: "context".into(),
                include_patterns: vec![],
                exclude_patterns: vec!["target".into(), "*.md".into()],
                follow_paths: vec!["go.mod".into(), "src".into()],
                ignore_modes: false,
            }),
            vec![],
            OpMetadata::named("[internal] load build context"),
        )
        .unwrap();
    let copy = g
        .add(
            Op::File(FileOp {
                base: Some(0),
                actions: vec![
                    FileAction::Mkdir {
                        path: "/app".into(),
                        mode: 0o755,
                        make_parents: true,
                        owner: None,
                    },
                    FileAction::Copy(CopyAction {
                        src_input: 1,
                        src: "/src".into(),
                        dest: "/app/".into(),
                        chown: Some(ChownOpt {
                            user: UserOpt::Name("app".into()),
                            group: Some(UserOpt::Id(1000)),
                        }),
                        chmod: Some(Chmod::Octal(0o644)),
                        dir_copy_contents: true,
                        create_dest_path: true,
                        allow_wildcard: true,
                        ..CopyAction::default()
                    }),
                ],
            }),
            vec![golang, context],
            named("[build 2/4] COPY src /app/"),
        )
        .unwrap();
    let build = g
        .add(
            Op::Exec(ExecOp {
                args: vec!["/bin/sh".into(), "-c".into(), "go build -o /out/app".into()],
                env: vec![
                    "PATH=/usr/local/go/bin:/usr/bin:/bin".into(),
                    "CGO_ENABLED=0".into(),
                ],
                cwd: "/app".into(),
                user: Some("app".into()),
                network: NetworkMode::None,
                mounts: vec![
                    ExecMount::root(0),
                    ExecMount {
                        input: None,
                        dest: "/root/.cache/go-build".into(),
                        selector: None,
                        readonly: false,
                        kind: MountKind::Cache {
                            id: "gobuild".into(),
                            sharing: CacheSharing::Locked,
                            init: None,
                        },
                        output: false,
                    },
                    ExecMount {
                        input: None,
                        dest: "/run/secrets/token".into(),
                        selector: None,
                        readonly: true,
                        kind: MountKind::Secret(SecretMount {
                            id: "token".into(),
                            mode: 0o400,
                            uid: 0,
                            gid: 0,
                            optional: false,
                            env: None,
                        }),
                        output: false,
                    },
                ],
                secret_env: vec![SecretEnv {
                    id: "npm".into(),
                    name: "NPM_TOKEN".into(),
                    optional: true,
                }],
                ..ExecOp::default()
            }),
            vec![copy],
            named("[build 3/4] RUN go build -o /out/app"),
        )
        .unwrap();
    let scratch_file = g
        .add(
            Op::File(FileOp {
                base: None,
                actions: vec![
                    FileAction::Mkfile {
                        path: "/etc/motd".into(),
                        mode: 0o644,
                        data: b"hello\n".to_vec(),
                        owner: None,
                    },
                    FileAction::Symlink {
                        old: "/etc/motd".into(),
                        new: "/motd".into(),
                    },
                    FileAction::Rm {
                        path: "/tmp/*".into(),
                        allow_not_found: true,
                        allow_wildcard: true,
                    },
                ],
            }),
            vec![],
            OpMetadata::named("COPY <<EOF /etc/motd"),
        )
        .unwrap();
    let diff = g
        .add(
            Op::Diff(DiffOp { lower: 0, upper: 1 }),
            vec![copy, build],
            OpMetadata::default(),
        )
        .unwrap();
    let git = g
        .add(
            Op::Source(SourceOp::Git {
                remote: "https://example.invalid/repo.git".into(),
                ref_: Some("v1.2.3".into()),
                keep_git_dir: true,
                subdir: Some("docs".into()),
            }),
            vec![],
            OpMetadata::default(),
        )
        .unwrap();
    let http = g
        .add(
            Op::Source(SourceOp::Http {
                url: "https://example.invalid/tool.tar.gz".into(),
                checksum: Some(
                    "sha256:0000000000000000000000000000000000000000000000000000000000000002"
                        .parse()
                        .unwrap(),
                ),
                filename: Some("tool.tgz".into()),
            }),
            vec![],
            OpMetadata::default(),
        )
        .unwrap();
    let mut meta = OpMetadata::named("[stage-1 2/2] COPY --link --from=build /out/app /app");
    meta.ignore_cache = true;
    meta.description.insert(
        "com.docker.dockerfile.v1.source".into(),
        "Dockerfile:12".into(),
    );
    g.add(
        Op::Merge(MergeOp {}),
        vec![scratch_file, diff, git, http],
        meta,
    )
    .unwrap();
    g
}

#[test]
fn dump_is_stable() {
    insta::assert_snapshot!(sample().dump());
}

#[test]
fn definition_round_trips() {
    let g = sample();
    let def = g.to_definition();
    let json = def.to_json();
    let parsed = Definition::from_json(&json).unwrap();
    assert_eq!(parsed, def);
    let rebuilt = Graph::from_definition(&parsed).unwrap();
    assert_eq!(rebuilt.dump(), g.dump());
    assert_eq!(rebuilt.to_definition().to_json(), json);
    // The pretty form parses to the same definition.
    assert_eq!(Definition::from_json(&def.to_json_pretty()).unwrap(), def);
}

#[test]
fn definition_json_is_canonical() {
    // Digests pin the encoding: a change here changes every cache key and
    // needs a DEFINITION_VERSION bump.
    let def = sample().to_definition();
    insta::assert_snapshot!(def.to_json_pretty());
}

#[test]
fn metadata_does_not_change_digests() {
    let op = || {
        Op::Source(SourceOp::Local {
            name: "context".into(),
            include_patterns: vec![],
            exclude_patterns: vec![],
            follow_paths: vec![],
            ignore_modes: false,
        })
    };
    let mut a = Graph::new();
    let mut b = Graph::new();
    let va = a.add(op(), vec![], OpMetadata::default()).unwrap();
    let mut meta = OpMetadata::named("x");
    meta.description = BTreeMap::from([("k".to_owned(), "v".to_owned())]);
    meta.ignore_cache = true;
    let vb = b.add(op(), vec![], meta).unwrap();
    assert_eq!(
        a.vertex(va).unwrap().digest(),
        b.vertex(vb).unwrap().digest()
    );
}
