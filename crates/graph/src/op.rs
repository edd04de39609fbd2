//! The closed set of operations a vertex can perform, modelled on
//! BuildKit's LLB (`solver/pb/ops.proto`).
//!
//! Every type here is part of the vertex digest: it is hashed through its
//! canonical JSON encoding (see [`crate::graph`]). The encoding is
//! deterministic by construction: struct fields serialize in declaration
//! order, maps are `BTreeMap`s and ordered lists are `Vec`s. Optional and
//! empty fields are skipped, so adding a new optional field later does not
//! change the digest of existing definitions. Reordering or renaming a field
//! *does* change every digest, and must come with a bump of
//! [`crate::graph::DEFINITION_VERSION`].
//!
//! Inputs are referred to by their index into the vertex's input list
//! (`usize`), never by digest, so an op definition is independent of where
//! its inputs come from.
//!
//! [`OpMetadata`] travels beside the op and is *not* hashed.

use std::collections::BTreeMap;
use std::fmt;

use kiln_oci::Digest;
use serde::{Deserialize, Serialize};

/// Metadata key for a vertex's human-readable name (BuildKit's
/// `llb.customname`), e.g. `[build 3/5] RUN make`.
pub const CUSTOM_NAME: &str = "llb.customname";

fn is_false(b: &bool) -> bool {
    !*b
}

/// One operation of the build graph.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// Produce a filesystem from outside the graph (no inputs).
    Source(SourceOp),
    /// Run a process over mounted inputs.
    Exec(ExecOp),
    /// Apply file actions (copy, mkdir, …) onto an input or scratch.
    File(FileOp),
    /// Stack every input, later inputs winning.
    Merge(MergeOp),
    /// The changes that turn `lower` into `upper`.
    Diff(DiffOp),
}

impl Op {
    /// Short lowercase name of the op kind: `source`, `exec`, `file`,
    /// `merge` or `diff`.
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Source(_) => "source",
            Op::Exec(_) => "exec",
            Op::File(_) => "file",
            Op::Merge(_) => "merge",
            Op::Diff(_) => "diff",
        }
    }

    /// Checks that every input index the op refers to is below `inputs`,
    /// and that the op accepts that many inputs.
    pub fn validate(&self, inputs: usize) -> Result<(), OpError> {
        let check = |field: String, index: usize| {
            if index < inputs {
                Ok(())
            } else {
                Err(OpError::InputOutOfRange {
                    kind: self.kind(),
                    field,
                    index,
                    inputs,
                })
            }
        };
        match self {
            Op::Source(_) => {
                if inputs != 0 {
                    return Err(OpError::InputCount {
                        kind: "source",
                        expected: "no inputs",
                        got: inputs,
                    });
                }
            }
            Op::Exec(exec) => {
                if exec.args.is_empty() {
                    return Err(OpError::EmptyArgs);
                }
                for (i, mount) in exec.mounts.iter().enumerate() {
                    if let Some(input) = mount.input {
                        check(format!("mounts[{i}].input"), input)?;
                    }
                }
            }
            Op::File(file) => {
                if let Some(base) = file.base {
                    check("base".to_owned(), base)?;
                }
                for (i, action) in file.actions.iter().enumerate() {
                    if let FileAction::Copy(copy) = action {
                        check(format!("actions[{i}].src_input"), copy.src_input)?;
                    }
                }
            }
            Op::Merge(_) => {
                if inputs == 0 {
                    return Err(OpError::InputCount {
                        kind: "merge",
                        expected: "at least one input",
                        got: 0,
                    });
                }
            }
            Op::Diff(diff) => {
                check("lower".to_owned(), diff.lower)?;
                check("upper".to_owned(), diff.upper)?;
            }
        }
        Ok(())
    }

    /// The salient fields of the op on one line, for [`crate::Graph::dump`]
    /// and fallback vertex names.
    pub fn summary(&self) -> String {
        match self {
            Op::Source(s) => s.summary(),
            Op::Exec(e) => e.summary(),
            Op::File(f) => f.summary(),
            Op::Merge(_) => String::new(),
            Op::Diff(d) => format!("lower=#{} upper=#{}", d.lower, d.upper),
        }
    }
}

/// An op's definition is invalid for the inputs it was given.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OpError {
    /// An input index points past the vertex's inputs.
    #[error("{kind} op field {field} refers to input {index}, but the vertex has {inputs} inputs")]
    InputOutOfRange {
        kind: &'static str,
        field: String,
        index: usize,
        inputs: usize,
    },
    /// The op takes a different number of inputs.
    #[error("{kind} op takes {expected}, got {got}")]
    InputCount {
        kind: &'static str,
        expected: &'static str,
        got: usize,
    },
    /// An exec op with no command.
    #[error("exec op has no arguments")]
    EmptyArgs,
}

// ---------------------------------------------------------------------------
// Source

/// Where a source op's filesystem comes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceOp {
    /// A container image's root filesystem.
    Image {
        /// The normalised reference, e.g. `docker.io/library/alpine:3.20`.
        reference: String,
        /// The platform to select, e.g. `linux/amd64`.
        platform: String,
        /// The manifest digest the reference resolved to, when known.
        /// Part of the digest: a re-pushed tag yields a new vertex.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resolved_digest: Option<Digest>,
    },
    /// Files from a local directory (the build context or a named context).
    Local {
        name: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        include_patterns: Vec<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        exclude_patterns: Vec<String>,
        /// Only these paths (and their parents) are read.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        follow_paths: Vec<String>,
        /// File modes are not part of the content key: every consumer
        /// sets them (`COPY --chmod=0644`). Left out of the encoding when
        /// false, so existing digests do not change.
        #[serde(default, skip_serializing_if = "is_false")]
        ignore_modes: bool,
    },
    /// A single file downloaded over HTTP(S).
    Http {
        url: String,
        /// Expected digest of the content (`ADD --checksum`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        checksum: Option<Digest>,
        /// Name of the file in the result; defaults to the URL's last
        /// path segment.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        filename: Option<String>,
    },
    /// A Git checkout.
    Git {
        remote: String,
        /// Branch, tag or commit; `None` is the remote's default branch.
        #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
        ref_: Option<String>,
        #[serde(default, skip_serializing_if = "is_false")]
        keep_git_dir: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        subdir: Option<String>,
    },
}

impl SourceOp {
    fn summary(&self) -> String {
        match self {
            SourceOp::Image {
                reference,
                platform,
                resolved_digest,
            } => {
                let mut s = format!("image {reference} platform={platform}");
                if let Some(d) = resolved_digest {
                    s.push_str(&format!(" digest={d}"));
                }
                s
            }
            SourceOp::Local {
                name,
                include_patterns,
                exclude_patterns,
                follow_paths,
                ignore_modes,
            } => {
                let mut s = format!("local {name}");
                push_list(&mut s, "include", include_patterns);
                push_list(&mut s, "exclude", exclude_patterns);
                push_list(&mut s, "follow", follow_paths);
                if *ignore_modes {
                    s.push_str(" ignore-modes");
                }
                s
            }
            SourceOp::Http {
                url,
                checksum,
                filename,
            } => {
                let mut s = format!("http {url}");
                if let Some(c) = checksum {
                    s.push_str(&format!(" checksum={c}"));
                }
                if let Some(f) = filename {
                    s.push_str(&format!(" filename={f}"));
                }
                s
            }
            SourceOp::Git {
                remote,
                ref_,
                keep_git_dir,
                subdir,
            } => {
                let mut s = format!("git {remote}");
                if let Some(r) = ref_ {
                    s.push_str(&format!("#{r}"));
                }
                if let Some(d) = subdir {
                    s.push_str(&format!(":{d}"));
                }
                if *keep_git_dir {
                    s.push_str(" keep-git-dir");
                }
                s
            }
        }
    }
}

fn push_list(s: &mut String, label: &str, list: &[String]) {
    if !list.is_empty() {
        s.push_str(&format!(" {label}={list:?}"));
    }
}

// ---------------------------------------------------------------------------
// Exec

/// Run a process. The root filesystem is the mount whose `dest` is `/`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecOp {
    /// The command and its arguments (`argv`), never empty.
    pub args: Vec<String>,
    /// `KEY=value` entries, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    /// Working directory inside the root mount.
    pub cwd: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "NetworkMode::is_default")]
    pub network: NetworkMode,
    #[serde(default, skip_serializing_if = "SecurityMode::is_default")]
    pub security: SecurityMode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// `--add-host` entries: host name → IP, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_hosts: Vec<ExtraHost>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<ExecMount>,
    /// Secrets exposed as environment variables.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secret_env: Vec<SecretEnv>,
}

impl ExecOp {
    fn summary(&self) -> String {
        let mut s = format!("args={:?} cwd={}", self.args, self.cwd);
        if let Some(u) = &self.user {
            s.push_str(&format!(" user={u}"));
        }
        if self.network != NetworkMode::Default {
            s.push_str(&format!(" network={}", self.network.as_str()));
        }
        if self.security != SecurityMode::Sandbox {
            s.push_str(" security=insecure");
        }
        if !self.env.is_empty() {
            s.push_str(&format!(" env={:?}", self.env));
        }
        let mounts: Vec<String> = self.mounts.iter().map(ExecMount::summary).collect();
        if !mounts.is_empty() {
            s.push_str(&format!(" mounts=[{}]", mounts.join(", ")));
        }
        for se in &self.secret_env {
            s.push_str(&format!(" secret-env={}={}", se.name, se.id));
        }
        s
    }
}

/// The network an exec op sees.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NetworkMode {
    /// The builder's default (sandboxed network with outbound access).
    #[default]
    Default,
    /// No network at all.
    None,
    /// The host's network namespace.
    Host,
}

impl NetworkMode {
    fn is_default(&self) -> bool {
        *self == NetworkMode::Default
    }

    /// The mode as written in `RUN --network=`.
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkMode::Default => "default",
            NetworkMode::None => "none",
            NetworkMode::Host => "host",
        }
    }
}

/// Whether an exec op runs with the default sandbox or with extra
/// privileges (`RUN --security=insecure`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecurityMode {
    #[default]
    Sandbox,
    Insecure,
}

impl SecurityMode {
    fn is_default(&self) -> bool {
        *self == SecurityMode::Sandbox
    }
}

/// An `--add-host` entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtraHost {
    pub host: String,
    pub ip: String,
}

/// A secret exposed to an exec op as an environment variable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretEnv {
    pub id: String,
    /// The variable's name.
    pub name: String,
    #[serde(default, skip_serializing_if = "is_false")]
    pub optional: bool,
}

/// One mount of an exec op.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecMount {
    /// Index of the vertex input mounted here; `None` mounts scratch (or,
    /// for cache/tmpfs/secret/ssh mounts, nothing from the graph).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<usize>,
    /// Absolute path inside the container.
    pub dest: String,
    /// Sub-path of the input to mount (`RUN --mount=source=`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub readonly: bool,
    pub kind: MountKind,
    /// Whether the mount's final state is an output of the vertex (the
    /// root mount of a `RUN` is).
    #[serde(default, skip_serializing_if = "is_false")]
    pub output: bool,
}

impl ExecMount {
    /// The read-write root mount of a `RUN` on input `input`.
    pub fn root(input: usize) -> ExecMount {
        ExecMount {
            input: Some(input),
            dest: "/".to_owned(),
            selector: None,
            readonly: false,
            kind: MountKind::Bind,
            output: true,
        }
    }

    fn summary(&self) -> String {
        let mut s = self.dest.clone();
        match &self.kind {
            MountKind::Bind => {}
            MountKind::Cache { id, sharing, init } => {
                s.push_str(&format!(" cache(id={id}, sharing={}", sharing.as_str()));
                if let Some(i) = init {
                    s.push_str(&format!(
                        ", uid={}, gid={}, mode={:o}",
                        i.uid, i.gid, i.mode
                    ));
                }
                s.push(')');
            }
            MountKind::Tmpfs { size } => match size {
                Some(size) => s.push_str(&format!(" tmpfs(size={size})")),
                None => s.push_str(" tmpfs"),
            },
            MountKind::Secret(o) => s.push_str(&format!(" secret(id={})", o.id)),
            MountKind::Ssh(o) => s.push_str(&format!(" ssh(id={})", o.id)),
        }
        if let Some(input) = self.input {
            s.push_str(&format!(" <- #{input}"));
            if let Some(sel) = &self.selector {
                s.push_str(&format!(":{sel}"));
            }
        }
        if self.readonly {
            s.push_str(" ro");
        }
        if self.output {
            s.push_str(" out");
        }
        s
    }
}

/// What kind of mount an [`ExecMount`] is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MountKind {
    /// The input's filesystem (or scratch).
    Bind,
    /// A persistent cache directory shared between builds. `init` is the
    /// owner and mode it gets when it is first created (root, 0755 when
    /// `None`).
    Cache {
        id: String,
        sharing: CacheSharing,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        init: Option<CacheInit>,
    },
    /// An in-memory filesystem; `size` in bytes.
    Tmpfs {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        size: Option<u64>,
    },
    /// A secret file.
    Secret(SecretMount),
    /// An SSH agent socket.
    Ssh(SecretMount),
}

/// Owner and mode of a new cache directory (`RUN --mount=type=cache,uid=…,gid=…,mode=…`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CacheInit {
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
}

/// How concurrent builds share a cache mount.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheSharing {
    #[default]
    Shared,
    Private,
    Locked,
}

impl CacheSharing {
    /// The value as written in `RUN --mount=type=cache,sharing=`.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheSharing::Shared => "shared",
            CacheSharing::Private => "private",
            CacheSharing::Locked => "locked",
        }
    }
}

/// Options of a secret or SSH mount.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretMount {
    pub id: String,
    /// File mode of the mounted secret or socket.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    #[serde(default, skip_serializing_if = "is_false")]
    pub optional: bool,
    /// Also expose the secret as this environment variable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
}

// ---------------------------------------------------------------------------
// File

/// Apply `actions`, in order, on top of input `base` (scratch if `None`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileOp {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<usize>,
    pub actions: Vec<FileAction>,
}

impl FileOp {
    fn summary(&self) -> String {
        let mut s = match self.base {
            Some(b) => format!("base=#{b}"),
            None => "base=scratch".to_owned(),
        };
        for action in &self.actions {
            s.push_str("; ");
            s.push_str(&action.summary());
        }
        s
    }
}

/// One step of a [`FileOp`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileAction {
    Copy(CopyAction),
    Mkdir {
        path: String,
        mode: u32,
        #[serde(default, skip_serializing_if = "is_false")]
        make_parents: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        owner: Option<ChownOpt>,
    },
    Mkfile {
        path: String,
        mode: u32,
        #[serde(with = "hex_bytes")]
        data: Vec<u8>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        owner: Option<ChownOpt>,
    },
    Rm {
        path: String,
        #[serde(default, skip_serializing_if = "is_false")]
        allow_not_found: bool,
        #[serde(default, skip_serializing_if = "is_false")]
        allow_wildcard: bool,
    },
    Symlink {
        /// The link target.
        old: String,
        /// The link's path.
        new: String,
    },
}

impl FileAction {
    fn summary(&self) -> String {
        match self {
            FileAction::Copy(c) => {
                let mut s = format!("copy #{}:{} -> {}", c.src_input, c.src, c.dest);
                if let Some(o) = &c.chown {
                    s.push_str(&format!(" chown={o}"));
                }
                if let Some(m) = &c.chmod {
                    s.push_str(&format!(" chmod={m}"));
                }
                let flags = [
                    (c.follow_symlinks, "follow-symlinks"),
                    (c.dir_copy_contents, "contents"),
                    (c.create_dest_path, "create-dest"),
                    (c.allow_wildcard, "wildcard"),
                    (c.allow_empty_wildcard, "allow-empty"),
                    (c.always_replace_existing_dest_paths, "replace"),
                    (c.parents, "parents"),
                    (c.unpack_archives, "unpack"),
                ];
                for (set, flag) in flags {
                    if set {
                        s.push(' ');
                        s.push_str(flag);
                    }
                }
                if let Some(t) = c.mtime {
                    s.push_str(&format!(" mtime={t}"));
                }
                push_list(&mut s, "include", &c.include_patterns);
                push_list(&mut s, "exclude", &c.exclude_patterns);
                s
            }
            FileAction::Mkdir {
                path,
                mode,
                make_parents,
                owner,
            } => {
                let mut s = format!("mkdir {path} {mode:04o}");
                if *make_parents {
                    s.push_str(" -p");
                }
                if let Some(o) = owner {
                    s.push_str(&format!(" chown={o}"));
                }
                s
            }
            FileAction::Mkfile {
                path,
                mode,
                data,
                owner,
            } => {
                let mut s = format!("mkfile {path} {mode:04o} ({} bytes)", data.len());
                if let Some(o) = owner {
                    s.push_str(&format!(" chown={o}"));
                }
                s
            }
            FileAction::Rm {
                path,
                allow_not_found,
                allow_wildcard,
            } => {
                let mut s = format!("rm {path}");
                if *allow_not_found {
                    s.push_str(" allow-not-found");
                }
                if *allow_wildcard {
                    s.push_str(" allow-wildcard");
                }
                s
            }
            FileAction::Symlink { old, new } => format!("symlink {new} -> {old}"),
        }
    }
}

/// Copy `src` from input `src_input` to `dest` (`COPY`/`ADD`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyAction {
    pub src_input: usize,
    pub src: String,
    pub dest: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chown: Option<ChownOpt>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chmod: Option<Chmod>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub follow_symlinks: bool,
    /// Copy a directory's contents rather than the directory itself.
    #[serde(default, skip_serializing_if = "is_false")]
    pub dir_copy_contents: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub create_dest_path: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_wildcard: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_empty_wildcard: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include_patterns: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_patterns: Vec<String>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub always_replace_existing_dest_paths: bool,
    /// Keep the source's parent directories (`COPY --parents`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub parents: bool,
    /// Unpack local tar archives (`ADD`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub unpack_archives: bool,
    /// Fixed modification time for created files (`SOURCE_DATE_EPOCH`),
    /// seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtime: Option<i64>,
}

/// A user or group, by number or by name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserOpt {
    Id(u32),
    Name(String),
}

impl fmt::Display for UserOpt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UserOpt::Id(id) => write!(f, "{id}"),
            UserOpt::Name(name) => f.write_str(name),
        }
    }
}

/// `--chown=user[:group]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChownOpt {
    pub user: UserOpt,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<UserOpt>,
}

impl fmt::Display for ChownOpt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.user)?;
        if let Some(g) = &self.group {
            write!(f, ":{g}")?;
        }
        Ok(())
    }
}

/// `--chmod=`: an octal mode or a symbolic one such as `u+x,g-w`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Chmod {
    Octal(u32),
    Symbolic(String),
}

impl fmt::Display for Chmod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Chmod::Octal(m) => write!(f, "{m:04o}"),
            Chmod::Symbolic(s) => f.write_str(s),
        }
    }
}

// ---------------------------------------------------------------------------
// Merge and diff

/// Stack all vertex inputs, in order, later inputs winning.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MergeOp {}

/// The filesystem changes between two inputs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiffOp {
    pub lower: usize,
    pub upper: usize,
}

// ---------------------------------------------------------------------------
// Metadata

/// Data about a vertex that does not change its result and so is not part
/// of its digest.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpMetadata {
    /// Free-form descriptions; [`CUSTOM_NAME`] holds the display name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub description: BTreeMap<String, String>,
    /// Execute even when the cache has a result (`--no-cache`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub ignore_cache: bool,
    /// Groups vertices in progress output (e.g. one stage).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_group: Option<ProgressGroup>,
}

impl OpMetadata {
    /// Metadata with only a display name.
    pub fn named(name: impl Into<String>) -> OpMetadata {
        let mut meta = OpMetadata::default();
        meta.description.insert(CUSTOM_NAME.to_owned(), name.into());
        meta
    }

    /// The display name, if one was set.
    pub fn name(&self) -> Option<&str> {
        self.description.get(CUSTOM_NAME).map(String::as_str)
    }

    pub(crate) fn is_empty(&self) -> bool {
        *self == OpMetadata::default()
    }
}

/// A named group of vertices for progress display.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgressGroup {
    pub id: String,
    pub name: String,
}

/// Serialize bytes as a lowercase hex string.
mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        hex::decode(s.as_bytes()).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_rejects_out_of_range_inputs() {
        let op = Op::Diff(DiffOp { lower: 0, upper: 2 });
        let err = op.validate(2).unwrap_err();
        assert_eq!(
            err.to_string(),
            "diff op field upper refers to input 2, but the vertex has 2 inputs"
        );
        assert!(op.validate(3).is_ok());
    }

    #[test]
    fn validate_rejects_inputs_on_sources_and_empty_merge() {
        let src = Op::Source(SourceOp::Local {
            name: "context".into(),
            include_patterns: vec![],
            exclude_patterns: vec![],
            follow_paths: vec![],
            ignore_modes: false,
        });
        assert!(matches!(
            src.validate(1),
            Err(OpError::InputCount { got: 1, .. })
        ));
        assert!(Op::Merge(MergeOp {}).validate(0).is_err());
        let exec = Op::Exec(ExecOp {
            cwd: "/".into(),
            ..ExecOp::default()
        });
        assert_eq!(exec.validate(0), Err(OpError::EmptyArgs));
    }

    #[test]
    fn skipped_defaults_keep_the_encoding_small() {
        let op = Op::Exec(ExecOp {
            args: vec!["true".into()],
            cwd: "/".into(),
            mounts: vec![ExecMount::root(0)],
            ..ExecOp::default()
        });
        assert_eq!(
            serde_json::to_string(&op).unwrap(),
            r#"{"exec":{"args":["true"],"cwd":"/","mounts":[{"input":0,"dest":"/","kind":"bind","output":true}]}}"#
        );
    }

    #[test]
    fn mkfile_data_is_hex_and_round_trips() {
        let action = FileAction::Mkfile {
            path: "/a".into(),
            mode: 0o644,
            data: b"hi\n".to_vec(),
            owner: None,
        };
        let json = serde_json::to_string(&action).unwrap();
        assert_eq!(
            json,
            r#"{"mkfile":{"path":"/a","mode":420,"data":"68690a"}}"#
        );
        let back: FileAction = serde_json::from_str(&json).unwrap();
        assert_eq!(back, action);
    }
}
