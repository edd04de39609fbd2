//! Stages and variables: groups instructions into stages, resolves global
//! ARGs, expands FROM lines, finds the target and the stages reachable from
//! it, and expands each instruction's words with Docker's ARG/ENV scoping
//! ([`StageScope`]).

use std::collections::{BTreeMap, BTreeSet};

use crate::instructions::{
    ArgDecl, Command, ErrorKind, Instruction, InstructionError, KeyValue, Mount, parse_all,
    parse_mount,
};
use crate::parser::{Dockerfile, Span};
use crate::shell::{Lexer, ShellError};

/// Proxy arguments: usable in RUN without an ARG, never kept in history.
pub const PROXY_ARGS: &[&str] = &[
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// A platform, split as the predefined `TARGET*`/`BUILD*` args need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformArgs {
    pub os: String,
    pub arch: String,
    pub variant: String,
}

impl PlatformArgs {
    /// `os/arch[/variant]`.
    pub fn platform(&self) -> String {
        if self.variant.is_empty() {
            format!("{}/{}", self.os, self.arch)
        } else {
            format!("{}/{}/{}", self.os, self.arch, self.variant)
        }
    }
}

/// What a named build context (`--build-context NAME=…`) stands for
/// wherever `NAME` is used as a base image or a `--from`/`from=` source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamedContext {
    /// A local directory, read through the source of that name.
    Local,
    /// An image reference (`docker-image://REF`).
    Image(String),
}

/// The named context `name` refers to: by the key as given, or by the
/// same normalised image reference (`alpine` is `docker.io/library/alpine:latest`).
pub fn find_named_context<'a>(
    named: &'a BTreeMap<String, NamedContext>,
    name: &str,
) -> Option<&'a NamedContext> {
    if let Some(c) = named.get(name) {
        return Some(c);
    }
    let want = kiln_oci::Reference::parse_docker_ref(name).ok()?;
    named
        .iter()
        .find(|(k, _)| kiln_oci::Reference::parse_docker_ref(k).is_ok_and(|r| r == want))
        .map(|(_, c)| c)
}

/// What a build asks for, as far as the frontend is concerned.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// `--build-arg K=V` values.
    pub build_args: BTreeMap<String, String>,
    /// `--build-context NAME=…`: names that stand for a directory or an
    /// image instead of the image of that name (a stage of the Dockerfile
    /// with that name still wins).
    pub named_contexts: BTreeMap<String, NamedContext>,
    /// `--target`: a stage name or index; the last stage when absent.
    pub target: Option<String>,
    pub target_platform: PlatformArgs,
    pub build_platform: PlatformArgs,
}

impl BuildOptions {
    /// Options for a build on and for `platform`.
    pub fn for_platform(platform: PlatformArgs) -> Self {
        BuildOptions {
            build_args: BTreeMap::new(),
            named_contexts: BTreeMap::new(),
            target: None,
            target_platform: platform.clone(),
            build_platform: platform,
        }
    }

    /// The predefined platform args (`TARGETPLATFORM`, `BUILDOS`, ...).
    pub fn predefined_args(&self) -> Vec<(String, String)> {
        let mut v = Vec::new();
        for (prefix, p) in [
            ("TARGET", &self.target_platform),
            ("BUILD", &self.build_platform),
        ] {
            v.push((format!("{prefix}PLATFORM"), p.platform()));
            v.push((format!("{prefix}OS"), p.os.clone()));
            v.push((format!("{prefix}ARCH"), p.arch.clone()));
            v.push((format!("{prefix}VARIANT"), p.variant.clone()));
        }
        v
    }
}

/// An error of stage resolution, with the lines it concerns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}")]
pub struct StageError {
    pub kind: StageErrorKind,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StageErrorKind {
    #[error(transparent)]
    Instruction(ErrorKind),
    #[error("{0}")]
    Expansion(String),
    #[error("dockerfile contains no stages to build")]
    NoStages,
    #[error("target stage {0:?} could not be found")]
    TargetNotFound(String),
    #[error("base name ({0}) should not be blank")]
    BlankBase(String),
    #[error(
        "stage {name:?} is defined after it is used in stage {used_in}: stages can only use stages defined before them"
    )]
    LaterStage { name: String, used_in: usize },
    #[error("invalid reference format for {name:?}: {reason}")]
    InvalidReference { name: String, reason: String },
    #[error(
        "variable expansion is not supported for {0}, define a new stage with FROM using ARG from global scope as a workaround"
    )]
    FromExpansion(&'static str),
    #[error("invalid ONBUILD trigger {trigger:?} from the base image: {reason}")]
    Onbuild { trigger: String, reason: String },
    #[error("circular dependency detected on stage: {0}")]
    Cycle(String),
    #[error("invalid from flag value {value}: {reason}")]
    BadFromIndex { value: String, reason: &'static str },
}

impl From<InstructionError> for StageError {
    fn from(e: InstructionError) -> Self {
        StageError {
            kind: StageErrorKind::Instruction(e.kind),
            span: e.span,
        }
    }
}

fn expansion_error(e: ShellError, span: Span) -> StageError {
    let msg = match std::error::Error::source(&e) {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    };
    StageError {
        kind: StageErrorKind::Expansion(msg),
        span,
    }
}

/// A warning found while resolving (BuildKit's build checks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lint {
    /// The rule name (`UndefinedVar`, `StageNameCasing`, ...).
    pub rule: &'static str,
    pub message: String,
    pub span: Span,
}

/// What a stage starts from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Base {
    Scratch,
    /// An earlier stage, by index.
    Stage(usize),
    /// An image reference (as written after expansion, not normalised).
    Image(String),
    /// A named build context's directory, as the stage's root filesystem.
    Local(String),
}

/// A stage of the Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    pub index: usize,
    /// Lowercased name (`AS name`).
    pub name: Option<String>,
    /// The FROM instruction.
    pub from: Instruction,
    /// The FROM image word after expansion with the global ARGs.
    pub base_name: String,
    pub base: Base,
    /// `--platform` after expansion.
    pub platform: Option<String>,
    /// The instructions after FROM.
    pub instructions: Vec<Instruction>,
    /// Earlier stages this one uses (FROM, COPY --from, RUN --mount from).
    pub deps: BTreeSet<usize>,
    /// Images (not stages) named by COPY --from or RUN --mount from.
    pub image_deps: BTreeSet<String>,
}

impl Stage {
    /// `name` or the index, as BuildKit shows stages in progress output.
    pub fn display_name(&self) -> String {
        self.name.clone().unwrap_or_else(|| self.index.to_string())
    }
}

/// A Dockerfile resolved into stages.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Global ARGs (before the first FROM), values resolved.
    pub meta_args: Vec<(String, Option<String>)>,
    pub stages: Vec<Stage>,
    /// Index of the target stage.
    pub target: usize,
    /// Stages the target needs, itself included, in dependency order.
    pub reachable: Vec<usize>,
    pub lints: Vec<Lint>,
    /// `# check=error=true`: findings fail the build.
    pub lint_errors: bool,
    /// `--build-arg` names no reachable ARG declared.
    pub unused_build_args: Vec<String>,
    pub escape: char,
    /// The build's named contexts (see [`BuildOptions::named_contexts`]).
    pub named_contexts: BTreeMap<String, NamedContext>,
}

impl Plan {
    /// The stage a `--from`/`from=` value names: an earlier stage by name or
    /// index, or `None` for an image.
    pub fn stage_by_name(&self, name: &str) -> Option<&Stage> {
        find_stage(&self.stages, name).map(|i| &self.stages[i])
    }

    /// Runs a base image's ONBUILD triggers in stage `index`: each trigger
    /// is parsed as a Dockerfile line and inserted before the stage's own
    /// instructions, then stage dependencies and reachability are computed
    /// again (a trigger may `COPY --from` another stage). Returns the
    /// stages that became reachable, which the caller must resolve too.
    pub fn apply_onbuild(
        &mut self,
        index: usize,
        triggers: &[String],
    ) -> Result<Vec<usize>, StageError> {
        let span = self.stages[index].from.span;
        let mut inserted = Vec::new();
        for trigger in triggers {
            let df = crate::parser::parse(trigger).map_err(|e| StageError {
                kind: StageErrorKind::Onbuild {
                    trigger: trigger.clone(),
                    reason: e.to_string(),
                },
                span,
            })?;
            for node in &df.nodes {
                let mut ins =
                    crate::instructions::parse_instruction(node).map_err(|e| StageError {
                        kind: StageErrorKind::Onbuild {
                            trigger: trigger.clone(),
                            reason: e.to_string(),
                        },
                        span,
                    })?;
                if matches!(
                    ins.command,
                    Command::From(_) | Command::Onbuild(_) | Command::Maintainer(_)
                ) {
                    return Err(StageError {
                        kind: StageErrorKind::Onbuild {
                            trigger: trigger.clone(),
                            reason: format!("{} isn't allowed as an ONBUILD trigger", ins.name()),
                        },
                        span,
                    });
                }
                // Triggers run at the FROM line of the stage that inherits them.
                ins.span = span;
                inserted.push(ins);
            }
        }
        let stage = &mut self.stages[index];
        stage.instructions.splice(0..0, inserted);
        stage
            .deps
            .retain(|d| matches!(stage.base, Base::Stage(b) if b == *d));
        stage.image_deps.clear();
        resolve_refs(&mut self.stages, index, &self.named_contexts)?;
        let before: BTreeSet<usize> = self.reachable.iter().copied().collect();
        self.reachable = reachable_from(&self.stages, self.target);
        Ok(self
            .reachable
            .iter()
            .copied()
            .filter(|i| !before.contains(i))
            .collect())
    }
}

/// The stage of that name; the last one when several have it (BuildKit's
/// later stage wins).
fn find_stage(stages: &[Stage], name: &str) -> Option<usize> {
    let lower = name.to_lowercase();
    stages
        .iter()
        .rposition(|s| s.name.as_deref() == Some(lower.as_str()))
}

/// Builds the stage plan of a parsed Dockerfile.
pub fn plan(df: &Dockerfile, opts: &BuildOptions) -> Result<Plan, StageError> {
    let instructions = parse_all(df)?;
    let lexer = Lexer::new(df.escape);
    let mut lints = Vec::new();

    // Global ARGs, then stages.
    let mut meta: Vec<(String, Option<String>)> = Vec::new();
    let mut meta_decls: Vec<ArgDecl> = Vec::new();
    let mut stages: Vec<Stage> = Vec::new();
    for ins in instructions {
        match (&ins.command, stages.last_mut()) {
            (Command::From(_), _) => {
                let index = stages.len();
                stages.push(new_stage(index, ins, &meta, opts, &lexer, &mut lints)?);
            }
            (Command::Arg(decls), None) => {
                for decl in decls {
                    let env = meta_env(&meta, opts);
                    let key = decl.key.clone();
                    let value = match opts.build_args.get(&key) {
                        Some(v) => Some(v.clone()),
                        None => match &decl.default {
                            Some(d) => Some(
                                lexer
                                    .process_word(d, &env)
                                    .map_err(|e| expansion_error(e, ins.span))?,
                            ),
                            None => None,
                        },
                    };
                    // `ARG X` without a value or build arg keeps what X
                    // already had (an earlier global ARG or a predefined arg).
                    let value = value.or_else(|| {
                        env.iter()
                            .rev()
                            .find(|(k, _)| *k == key)
                            .map(|(_, v)| v.clone())
                    });
                    meta.retain(|(k, _)| *k != key);
                    meta.push((key, value));
                    meta_decls.push(decl.clone());
                }
            }
            (_, None) => {
                return Err(StageError {
                    kind: StageErrorKind::Instruction(ErrorKind::NoStage),
                    span: ins.span,
                });
            }
            (_, Some(stage)) => stage.instructions.push(ins),
        }
    }

    // Names should be unique (case-insensitive); BuildKit builds with
    // the later stage of a name and warns.
    let mut seen = BTreeSet::new();
    for s in &stages {
        if let Some(name) = &s.name
            && !seen.insert(name.clone())
        {
            lints.push(Lint {
                rule: "DuplicateStageName",
                message: format!("Duplicate stage name {name:?}, stage names should be unique"),
                span: s.from.span,
            });
        }
    }

    // FROM <stage> and the other stage references.
    for i in 0..stages.len() {
        resolve_refs(&mut stages, i, &opts.named_contexts)?;
    }

    let Some(last) = stages.len().checked_sub(1) else {
        return Err(StageError {
            kind: StageErrorKind::NoStages,
            span: df.span,
        });
    };
    let target = match &opts.target {
        None => last,
        Some(t) => find_stage(&stages, t)
            .or_else(|| t.parse::<usize>().ok().filter(|&i| i < stages.len()))
            .ok_or_else(|| StageError {
                kind: StageErrorKind::TargetNotFound(t.clone()),
                span: Span::default(),
            })?,
    };
    let reachable = reachable_from(&stages, target);

    // Build args are used when a reachable stage or the global scope declares them.
    let mut declared: BTreeSet<String> = meta.iter().map(|(k, _)| k.clone()).collect();
    for &i in &reachable {
        for ins in &stages[i].instructions {
            if let Command::Arg(decls) = &ins.command {
                declared.extend(decls.iter().map(|d| d.key.clone()));
            }
        }
    }
    let unused_build_args = opts
        .build_args
        .keys()
        .filter(|k| {
            // SOURCE_DATE_EPOCH sets the build's times (BuildKit's builtin).
            !declared.contains(*k)
                && !PROXY_ARGS.contains(&k.as_str())
                && k.as_str() != "SOURCE_DATE_EPOCH"
        })
        .cloned()
        .collect();

    instruction_checks(&stages, &meta_decls, &mut lints);
    let checks = CheckConfig::parse(df.directive("check").unwrap_or_default());
    lints.retain(|l| !checks.skips(l.rule));
    lints.sort_by_key(|l| l.span.start_line);

    Ok(Plan {
        meta_args: meta,
        stages,
        target,
        reachable,
        lints,
        lint_errors: checks.error,
        unused_build_args,
        escape: df.escape,
        named_contexts: opts.named_contexts.clone(),
    })
}

/// The `# check=skip=A,B;error=true` directive.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CheckConfig {
    pub skip_all: bool,
    pub skip: BTreeSet<String>,
    /// Build-check findings fail the build.
    pub error: bool,
}

impl CheckConfig {
    pub fn parse(value: &str) -> CheckConfig {
        let mut c = CheckConfig::default();
        for part in value.split(';') {
            match part.trim().split_once('=') {
                Some(("skip", rules)) => {
                    for r in rules.split(',').map(str::trim).filter(|r| !r.is_empty()) {
                        if r.eq_ignore_ascii_case("all") {
                            c.skip_all = true;
                        } else {
                            c.skip.insert(r.to_string());
                        }
                    }
                }
                Some(("error", v)) => c.error = v.trim().eq_ignore_ascii_case("true"),
                _ => {}
            }
        }
        c
    }

    pub fn skips(&self, rule: &str) -> bool {
        self.skip_all || self.skip.contains(rule)
    }
}

/// BuildKit's `SecretsUsedInArgOrEnv` rule: a name with a secret-looking
/// word (`API_KEY`, `DB_PASSWORD`, `token`), but not a public key.
fn looks_secret(name: &str) -> bool {
    const WORDS: &[&str] = &[
        "apikey",
        "auth",
        "credential",
        "credentials",
        "key",
        "password",
        "pass",
        "secret",
        "token",
    ];
    let lower = name.to_lowercase();
    let parts: Vec<&str> = lower.split(['_', '-']).collect();
    parts.iter().any(|p| WORDS.contains(p)) && !parts.contains(&"public")
}

/// Per-instruction build checks (BuildKit's names and messages).
fn instruction_checks(stages: &[Stage], meta: &[ArgDecl], lints: &mut Vec<Lint>) {
    let secret = |kind: &str, name: &str, span: Span, lints: &mut Vec<Lint>| {
        if looks_secret(name) {
            lints.push(Lint {
                rule: "SecretsUsedInArgOrEnv",
                message: format!(
                    "Do not use ARG or ENV instructions for sensitive data ({kind} \"{name}\")"
                ),
                span,
            });
        }
    };
    for decl in meta {
        secret("ARG", &decl.key, Span::default(), lints);
    }
    for stage in stages {
        let mut custom_shell = false;
        for ins in &stage.instructions {
            match &ins.command {
                Command::Shell(_) => custom_shell = true,
                Command::Cmd(c) | Command::Entrypoint(c)
                    if c.prepend_shell && !custom_shell && !c.args.is_empty() =>
                {
                    lints.push(Lint {
                        rule: "JSONArgsRecommended",
                        message: format!(
                            "JSON arguments recommended for {} to prevent unintended behavior related to OS signals",
                            ins.name()
                        ),
                        span: ins.span,
                    });
                }
                Command::Maintainer(_) => lints.push(Lint {
                    rule: "MaintainerDeprecated",
                    message: "Maintainer instruction is deprecated in favor of using label".into(),
                    span: ins.span,
                }),
                Command::Arg(decls) => {
                    for d in decls {
                        secret("ARG", &d.key, ins.span, lints);
                    }
                }
                Command::Env(kvs) => {
                    for kv in kvs {
                        secret("ENV", &kv.key, ins.span, lints);
                    }
                }
                _ => {}
            }
        }
    }
}

/// The environment FROM lines are expanded in: global ARGs (with
/// `--build-arg` overrides) and the predefined platform args.
fn meta_env(meta: &[(String, Option<String>)], opts: &BuildOptions) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = opts
        .predefined_args()
        .into_iter()
        .map(|(k, v)| {
            let v = opts.build_args.get(&k).cloned().unwrap_or(v);
            (k, v)
        })
        .collect();
    env.extend(
        meta.iter()
            .filter_map(|(k, v)| v.clone().map(|v| (k.clone(), v))),
    );
    env
}

fn new_stage(
    index: usize,
    from: Instruction,
    meta: &[(String, Option<String>)],
    opts: &BuildOptions,
    lexer: &Lexer,
    lints: &mut Vec<Lint>,
) -> Result<Stage, StageError> {
    let Command::From(f) = &from.command else {
        unreachable!("called for FROM only")
    };
    let env = meta_env(meta, opts);
    let expand = |w: &str| -> Result<String, StageError> {
        let r = lexer
            .process_word_with_matches(w, &env)
            .map_err(|e| expansion_error(e, from.span))?;
        Ok(r.result)
    };
    let unmatched = |w: &str| {
        lexer
            .process_word_with_matches(w, &env)
            .map(|r| r.unmatched)
            .unwrap_or_default()
    };
    for name in unmatched(&f.image)
        .into_iter()
        .chain(f.platform.as_deref().map(unmatched).unwrap_or_default())
    {
        // A global ARG declared without a value is declared, just empty.
        if meta.iter().any(|(k, _)| *k == name) {
            continue;
        }
        lints.push(Lint {
            rule: "UndefinedArgInFrom",
            message: format!("FROM argument '{name}' is not declared"),
            span: from.span,
        });
    }
    let base_name = expand(&f.image)?;
    if base_name.is_empty() {
        return Err(StageError {
            kind: StageErrorKind::BlankBase(f.image.clone()),
            span: from.span,
        });
    }
    let platform = f.platform.as_deref().map(expand).transpose()?;
    if let Some(written) = &f.name_as_written
        && written != &written.to_lowercase()
    {
        lints.push(Lint {
            rule: "StageNameCasing",
            message: format!("Stage name '{written}' should be lowercase"),
            span: from.span,
        });
    }
    if let Some(kw) = &f.as_keyword {
        let from_upper = from.keyword == from.keyword.to_uppercase();
        let as_upper = kw == &kw.to_uppercase();
        if from_upper != as_upper {
            lints.push(Lint {
                rule: "FromAsCasing",
                message: format!(
                    "'{kw}' and '{}' keywords' casing do not match",
                    from.keyword
                ),
                span: from.span,
            });
        }
    }
    let base = if base_name.eq_ignore_ascii_case("scratch") {
        Base::Scratch
    } else {
        Base::Image(base_name.clone())
    };
    Ok(Stage {
        index,
        name: f.name.clone(),
        from: from.clone(),
        base_name,
        base,
        platform,
        instructions: Vec::new(),
        deps: BTreeSet::new(),
        image_deps: BTreeSet::new(),
    })
}

/// Links stage `i` to the stages it uses, rejecting forward references and
/// self references.
fn resolve_refs(
    stages: &mut [Stage],
    i: usize,
    named: &BTreeMap<String, NamedContext>,
) -> Result<(), StageError> {
    let lookup = |stages: &[Stage], name: &str, span: Span| -> Result<Option<usize>, StageError> {
        match find_stage(stages, name) {
            Some(j) if j < i => Ok(Some(j)),
            Some(j) if j == i => Err(StageError {
                kind: StageErrorKind::Cycle(name.to_lowercase()),
                span,
            }),
            Some(_) => Err(StageError {
                kind: StageErrorKind::LaterStage {
                    name: name.to_lowercase(),
                    used_in: i,
                },
                span,
            }),
            None => Ok(None),
        }
    };
    let from_span = stages[i].from.span;
    if let Base::Image(name) = &stages[i].base {
        // FROM sees only the stages before it, by name as written: `FROM
        // alpine AS alpine` builds on the image.
        match stages[..i]
            .iter()
            .rposition(|s| s.name.as_deref() == Some(name.as_str()))
        {
            Some(j) => {
                stages[i].base = Base::Stage(j);
                stages[i].deps.insert(j);
            }
            None => match find_named_context(named, name) {
                Some(NamedContext::Local) => stages[i].base = Base::Local(name.clone()),
                Some(NamedContext::Image(r)) => {
                    check_reference(r, from_span)?;
                    stages[i].base = Base::Image(r.clone());
                }
                None => check_reference(name, from_span)?,
            },
        }
    }

    // COPY --from and RUN --mount from= take literal names: BuildKit does not
    // expand them (the graph must be known before any stage runs).
    let mut refs: Vec<(String, Span, bool)> = Vec::new();
    for ins in &stages[i].instructions {
        let not_expandable = |what: &'static str| StageError {
            kind: StageErrorKind::FromExpansion(what),
            span: ins.span,
        };
        match &ins.command {
            Command::Copy(c) => {
                if let Some(from) = &c.from {
                    if from.contains('$') {
                        return Err(not_expandable("--from"));
                    }
                    refs.push((from.clone(), ins.span, true));
                }
            }
            Command::Run(r) => {
                for spec in &r.mounts {
                    if let Some(from) = mount_from(spec) {
                        if from.contains('$') {
                            return Err(not_expandable("from"));
                        }
                        refs.push((from, ins.span, false));
                    }
                }
            }
            _ => {}
        }
    }
    for (name, span, is_copy) in refs {
        if let Some(j) = lookup(stages, &name, span)? {
            stages[i].deps.insert(j);
            continue;
        }
        if is_copy && let Ok(n) = name.parse::<usize>() {
            if n >= i {
                let reason = if n == i {
                    "refers to current build stage"
                } else {
                    "refers to a later build stage"
                };
                return Err(StageError {
                    kind: StageErrorKind::BadFromIndex {
                        value: name,
                        reason,
                    },
                    span,
                });
            }
            stages[i].deps.insert(n);
            continue;
        }
        match find_named_context(named, &name) {
            // Read by the compiler as the source of that name.
            Some(NamedContext::Local) => {}
            Some(NamedContext::Image(r)) => {
                check_reference(r, span)?;
                stages[i].image_deps.insert(r.clone());
            }
            None => {
                check_reference(&name, span)?;
                stages[i].image_deps.insert(name);
            }
        }
    }
    Ok(())
}

/// The literal `from=` field of a `--mount` value, if any.
fn mount_from(spec: &str) -> Option<String> {
    spec.split(',').find_map(|field| {
        let (k, v) = field.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("from")
            .then(|| v.trim_matches('"').to_string())
    })
}

/// An image named by FROM or `--from` must be a valid reference (`ubuntu`,
/// `host:5000/a/b:tag@sha256:…`), as Docker normalises it.
fn check_reference(name: &str, span: Span) -> Result<(), StageError> {
    kiln_oci::Reference::parse_docker_ref(name)
        .map(|_| ())
        .map_err(|e| StageError {
            kind: StageErrorKind::InvalidReference {
                name: name.to_string(),
                reason: e.to_string(),
            },
            span,
        })
}

/// The stages `target` depends on, itself last, each after its deps.
fn reachable_from(stages: &[Stage], target: usize) -> Vec<usize> {
    let mut order = Vec::new();
    let mut seen = BTreeSet::new();
    fn visit(stages: &[Stage], i: usize, seen: &mut BTreeSet<usize>, order: &mut Vec<usize>) {
        if !seen.insert(i) {
            return;
        }
        for &d in &stages[i].deps {
            visit(stages, d, seen, order);
        }
        order.push(i);
    }
    visit(stages, target, &mut seen, &mut order);
    order
}

// ---------------------------------------------------------------------------
// Expansion inside a stage

/// The variables of one stage while its instructions are dispatched, with
/// BuildKit's rules:
///
/// - The *state env* (what words expand against and what RUN sees) starts
///   as the base's env and takes ENV and ARG values in instruction order,
///   so a later ARG overrides an earlier ENV of the same name and vice versa.
/// - The *image env* (what goes into the image config) takes only ENV.
/// - `ARG X` without a default takes `--build-arg X`, else the global value
///   (global ARGs and predefined platform args).
/// - A stage built on another stage inherits its state env and ARGs.
#[derive(Debug, Clone)]
pub struct StageScope<'a> {
    lexer: Lexer,
    opts: &'a BuildOptions,
    meta: &'a [(String, Option<String>)],
    state_env: Vec<(String, String)>,
    image_env: Vec<(String, String)>,
    /// Every ARG declared in this stage or inherited, with its value.
    args: Vec<(String, Option<String>)>,
    /// Variables referenced but unset, for the UndefinedVar check.
    pub undefined: BTreeSet<String>,
}

/// An instruction with its words expanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expanded {
    Env(Vec<(String, String)>),
    Label(Vec<(String, String)>),
    /// ARG: names and resolved values.
    Arg(Vec<(String, Option<String>)>),
    Expose(Vec<String>),
    User(String),
    Workdir(String),
    StopSignal(String),
    Volume(Vec<String>),
    Copy {
        sources: Vec<String>,
        /// Heredoc sources: (name, content after expansion when asked).
        inline: Vec<(String, String)>,
        dest: String,
        from: Option<String>,
        chown: Option<String>,
        chmod: Option<String>,
        excludes: Vec<String>,
        checksum: Option<String>,
    },
    Run {
        mounts: Vec<Mount>,
    },
    /// CMD, ENTRYPOINT, SHELL, HEALTHCHECK, MAINTAINER, ONBUILD: no
    /// expansion.
    Verbatim,
}

fn set(env: &mut Vec<(String, String)>, key: &str, value: &str) {
    env.retain(|(k, _)| k != key);
    env.push((key.to_string(), value.to_string()));
}

impl<'a> StageScope<'a> {
    /// A scope for a stage whose base is an image with env `base_env`
    /// (empty for `scratch`).
    pub fn new(plan: &'a Plan, opts: &'a BuildOptions, base_env: Vec<(String, String)>) -> Self {
        StageScope {
            lexer: Lexer::new(plan.escape),
            opts,
            meta: &plan.meta_args,
            state_env: base_env.clone(),
            image_env: base_env,
            args: Vec::new(),
            undefined: BTreeSet::new(),
        }
    }

    /// A scope for a stage built `FROM` another stage: it starts where the
    /// parent's scope ended.
    pub fn from_parent(parent: &StageScope<'a>) -> Self {
        StageScope {
            undefined: BTreeSet::new(),
            ..parent.clone()
        }
    }

    /// The image config's environment so far.
    pub fn env(&self) -> &[(String, String)] {
        &self.image_env
    }

    /// What words expand against: the state env.
    pub fn expansion_env(&self) -> &[(String, String)] {
        &self.state_env
    }

    /// The environment of a RUN: the state env plus proxy args given with
    /// `--build-arg` (never declared, never in history). As in BuildKit,
    /// a proxy given in either spelling is set in both (`HTTP_PROXY` and
    /// `http_proxy`).
    pub fn run_env(&self) -> Vec<(String, String)> {
        let mut v = self.state_env.clone();
        for pair in PROXY_ARGS.chunks(2) {
            let [upper, lower] = pair else { continue };
            let Some(val) = self
                .opts
                .build_args
                .get(*upper)
                .or_else(|| self.opts.build_args.get(*lower))
            else {
                continue;
            };
            for name in [upper, lower] {
                if !v.iter().any(|(k, _)| k == name) {
                    v.push((name.to_string(), val.clone()));
                }
            }
        }
        v
    }

    /// The `|N k=v …` build-arg list BuildKit puts in front of a RUN's
    /// history entry and cache key: every declared ARG with its current
    /// value (from the state env, else its own value, else empty).
    pub fn build_arg_env(&self) -> Vec<(String, String)> {
        self.args
            .iter()
            .map(|(k, v)| {
                let value = self
                    .state_env
                    .iter()
                    .rev()
                    .find(|(e, _)| e == k)
                    .map(|(_, v)| v.clone())
                    .or_else(|| v.clone())
                    .unwrap_or_default();
                (k.clone(), value)
            })
            .collect()
    }

    /// Expands one word (no field splitting).
    pub fn expand(&mut self, word: &str) -> Result<String, ShellError> {
        let r = self
            .lexer
            .process_word_with_matches(word, &self.state_env)?;
        self.undefined.extend(r.unmatched);
        Ok(r.result)
    }

    fn expand_at(&mut self, word: &str, span: Span) -> Result<String, StageError> {
        self.expand(word).map_err(|e| expansion_error(e, span))
    }

    fn expand_opt(
        &mut self,
        word: &Option<String>,
        span: Span,
    ) -> Result<Option<String>, StageError> {
        word.as_deref().map(|w| self.expand_at(w, span)).transpose()
    }

    fn expand_kvs(
        &mut self,
        kvs: &[KeyValue],
        span: Span,
    ) -> Result<Vec<(String, String)>, StageError> {
        let mut out = Vec::with_capacity(kvs.len());
        for kv in kvs {
            // The legacy `ENV k v w` form has the rest of the line as one
            // value; it expands like any other.
            out.push((
                self.expand_at(&kv.key, span)?,
                self.expand_at(&kv.value, span)?,
            ));
        }
        Ok(out)
    }

    /// The value a global-scope lookup gives `key`: a global ARG's value or
    /// a predefined arg.
    fn global_value(&self, key: &str) -> Option<String> {
        meta_env(self.meta, self.opts)
            .into_iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }

    /// Expands an instruction's words and applies its effect on the scope
    /// (ENV and ARG change what later instructions see).
    pub fn dispatch(&mut self, ins: &Instruction) -> Result<Expanded, StageError> {
        let span = ins.span;
        let err = |kind: ErrorKind| StageError {
            kind: StageErrorKind::Instruction(kind),
            span,
        };
        Ok(match &ins.command {
            Command::Env(kvs) => {
                // All values are expanded against the env before this
                // instruction: `ENV a=1 b=$a` sees the old `a`.
                let pairs = self.expand_kvs(kvs, span)?;
                for (k, v) in &pairs {
                    if k.is_empty() {
                        return Err(err(ErrorKind::BlankName("ENV")));
                    }
                    set(&mut self.state_env, k, v);
                    set(&mut self.image_env, k, v);
                }
                Expanded::Env(pairs)
            }
            Command::Label(kvs) => Expanded::Label(self.expand_kvs(kvs, span)?),
            Command::Arg(decls) => {
                let mut out = Vec::new();
                for d in decls {
                    let key = d.key.clone();
                    let value = if let Some(v) = self.opts.build_args.get(&key) {
                        Some(v.clone())
                    } else if let Some(default) = &d.default {
                        Some(self.expand_at(default, span)?)
                    } else {
                        self.global_value(&key)
                    };
                    if let Some(v) = &value {
                        set(&mut self.state_env, &key, v);
                    }
                    self.args.retain(|(k, _)| *k != key);
                    self.args.push((key.clone(), value.clone()));
                    out.push((key, value));
                }
                Expanded::Arg(out)
            }
            Command::Expose(ports) => {
                let mut out = Vec::new();
                for p in ports {
                    let words = self
                        .lexer
                        .process_words(p, &self.state_env)
                        .map_err(|e| expansion_error(e, span))?;
                    out.extend(words);
                }
                Expanded::Expose(out)
            }
            Command::User(u) => Expanded::User(self.expand_at(u, span)?),
            Command::Workdir(w) => Expanded::Workdir(self.expand_at(w, span)?),
            Command::StopSignal(s) => Expanded::StopSignal(self.expand_at(s, span)?),
            Command::Volume(vs) => {
                let mut out = Vec::new();
                for v in vs {
                    let v = self.expand_at(v, span)?;
                    let v = v.trim();
                    if v.is_empty() {
                        return Err(err(ErrorKind::EmptyVolume));
                    }
                    out.push(v.to_string());
                }
                Expanded::Volume(out)
            }
            Command::Copy(c) => {
                let excludes = c
                    .excludes
                    .iter()
                    .map(|e| self.expand_at(e, span))
                    .collect::<Result<_, _>>()?;
                self.expand_copy(
                    &c.paths,
                    span,
                    c.from.clone(),
                    &c.chown,
                    &c.chmod,
                    excludes,
                    None,
                )?
            }
            Command::Add(a) => {
                let excludes = a
                    .excludes
                    .iter()
                    .map(|e| self.expand_at(e, span))
                    .collect::<Result<_, _>>()?;
                let checksum = self.expand_opt(&a.checksum, span)?;
                self.expand_copy(&a.paths, span, None, &a.chown, &a.chmod, excludes, checksum)?
            }
            Command::Run(r) => {
                let mut mounts = Vec::new();
                for spec in &r.mounts {
                    let lexer = self.lexer;
                    let env = &self.state_env;
                    let mut expand =
                        |s: &str| lexer.process_word(s, env).map_err(|e| e.to_string());
                    mounts.push(parse_mount(spec, &mut expand).map_err(|e| err(e.into()))?);
                }
                Expanded::Run { mounts }
            }
            Command::From(_)
            | Command::Cmd(_)
            | Command::Entrypoint(_)
            | Command::Shell(_)
            | Command::Healthcheck(_)
            | Command::Maintainer(_)
            | Command::Onbuild(_) => Expanded::Verbatim,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn expand_copy(
        &mut self,
        paths: &crate::instructions::SourcesAndDest,
        span: Span,
        from: Option<String>,
        chown: &Option<String>,
        chmod: &Option<String>,
        excludes: Vec<String>,
        checksum: Option<String>,
    ) -> Result<Expanded, StageError> {
        let sources = paths
            .source_paths
            .iter()
            .map(|s| self.expand_at(s, span))
            .collect::<Result<_, _>>()?;
        let dest = self.expand_at(&paths.dest, span)?;
        let mut inline = Vec::new();
        for f in &paths.source_contents {
            let content = f.content();
            let content = if f.expand {
                // Heredoc bodies: quotes are literal, variables expand, and
                // the escape is always `\` (BuildKit's ExpandRaw).
                let mut lexer = Lexer::new('\\');
                lexer.skip_process_quotes = true;
                lexer
                    .process_word(&content, &self.state_env)
                    .map_err(|e| expansion_error(e, span))?
            } else {
                content
            };
            inline.push((f.name.clone(), content));
        }
        let chown = self.expand_opt(chown, span)?;
        let chmod = self.expand_opt(chmod, span)?;
        if let Some(m) = &chmod
            && crate::chmod::Chmod::parse(m).is_none()
        {
            return Err(StageError {
                kind: StageErrorKind::Instruction(ErrorKind::BadChmod(m.clone())),
                span,
            });
        }
        Ok(Expanded::Copy {
            sources,
            inline,
            dest,
            from,
            chown,
            chmod,
            excludes,
            checksum,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parser::parse;

    fn opts() -> BuildOptions {
        BuildOptions::for_platform(PlatformArgs {
            os: "linux".into(),
            arch: "amd64".into(),
            variant: String::new(),
        })
    }

    fn plan_of(src: &str, o: &BuildOptions) -> Result<Plan, StageError> {
        plan(&parse(src).unwrap(), o)
    }

    #[test]
    fn meta_args_expand_from() {
        let mut o = opts();
        o.build_args.insert("TAG".into(), "1.2".into());
        let p = plan_of("ARG TAG=latest\nARG IMG=busybox\nFROM ${IMG}:${TAG} AS b\nFROM --platform=$BUILDPLATFORM b\n", &o).unwrap();
        assert_eq!(p.stages[0].base_name, "busybox:1.2");
        assert_eq!(p.stages[1].base, Base::Stage(0));
        assert_eq!(p.stages[1].platform.as_deref(), Some("linux/amd64"));
        assert_eq!(p.reachable, vec![0, 1]);
    }

    #[test]
    fn target_and_reachability() {
        let src = "FROM scratch AS a\nFROM scratch AS b\nCOPY --from=a / /\nFROM scratch AS c\nCOPY --from=0 / /\n";
        let mut o = opts();
        assert_eq!(plan_of(src, &o).unwrap().reachable, vec![0, 2]);
        o.target = Some("B".into());
        let p = plan_of(src, &o).unwrap();
        assert_eq!((p.target, p.reachable.clone()), (1, vec![0, 1]));
        o.target = Some("nope".into());
        assert_eq!(
            plan_of(src, &o).unwrap_err().kind,
            StageErrorKind::TargetNotFound("nope".into())
        );
    }

    #[test]
    fn stage_errors() {
        let o = opts();
        let dup = plan_of("FROM a AS x\nFROM b AS X\nFROM c\nCOPY --from=x / /\n", &o).unwrap();
        assert!(dup.lints.iter().any(|l| l.rule == "DuplicateStageName"));
        assert_eq!(dup.reachable, vec![1, 2], "the later stage of a name wins");
        assert!(matches!(
            plan_of("FROM a AS x\nCOPY --from=y / /\nFROM b AS y\n", &o)
                .unwrap_err()
                .kind,
            StageErrorKind::LaterStage { .. }
        ));
        assert!(matches!(
            plan_of("FROM a AS x\nCOPY --from=x / /\n", &o)
                .unwrap_err()
                .kind,
            StageErrorKind::Cycle(_)
        ));
        assert!(matches!(
            plan_of("FROM a\nCOPY --from=0 / /\n", &o).unwrap_err().kind,
            StageErrorKind::BadFromIndex { .. }
        ));
        assert_eq!(
            plan_of("RUN x\n", &o).unwrap_err().to_string(),
            "no build stage in current context"
        );
        assert!(matches!(
            plan_of("ARG X\nFROM ${X}\n", &o).unwrap_err().kind,
            StageErrorKind::BlankBase(_)
        ));
        assert_eq!(
            plan_of("ARG X=1\n", &o).unwrap_err().kind,
            StageErrorKind::NoStages
        );
        assert!(matches!(
            plan_of("FROM Busy:Box\n", &o).unwrap_err().kind,
            StageErrorKind::InvalidReference { .. }
        ));
        assert!(matches!(
            plan_of("FROM a\nCOPY --from=a//b / /\n", &o)
                .unwrap_err()
                .kind,
            StageErrorKind::InvalidReference { .. }
        ));
    }

    #[test]
    fn copy_from_image_is_an_image_dep() {
        let p = plan_of(
            "FROM a\nCOPY --from=busybox:1 /bin /bin\nRUN --mount=from=alpine,target=/x true\n",
            &opts(),
        )
        .unwrap();
        assert_eq!(
            p.stages[0].image_deps,
            BTreeSet::from(["busybox:1".to_string(), "alpine".to_string()])
        );
    }

    #[test]
    fn unused_build_args_and_lints() {
        let mut o = opts();
        o.build_args.insert("USED".into(), "1".into());
        o.build_args.insert("UNUSED".into(), "1".into());
        o.build_args.insert("SOURCE_DATE_EPOCH".into(), "0".into());
        o.build_args.insert("HTTP_PROXY".into(), "p".into());
        let p = plan_of("FROM scratch AS Build\nARG USED\n", &o).unwrap();
        assert_eq!(p.unused_build_args, vec!["UNUSED".to_string()]);
        assert_eq!(p.lints[0].rule, "StageNameCasing");
        let p = plan_of("FROM scratch as b\n", &o).unwrap();
        assert_eq!(p.lints[0].rule, "FromAsCasing");
    }

    #[test]
    fn scope_follows_docker_rules() {
        let mut o = opts();
        o.build_args.insert("V".into(), "cli".into());
        let p = plan_of("ARG G=global\nFROM scratch\nARG G\nARG V=default\nARG W=$V\nENV a=1 b=$a\nENV a=2 c=$a\nENV V=env\nWORKDIR /$V/$G/$W\nENV k v w\n", &o).unwrap();
        let mut scope = StageScope::new(&p, &o, vec![("PATH".into(), "/bin".into())]);
        let mut results = Vec::new();
        for ins in &p.stages[0].instructions {
            results.push(scope.dispatch(ins).unwrap());
        }
        assert_eq!(
            results[0],
            Expanded::Arg(vec![("G".into(), Some("global".into()))])
        );
        assert_eq!(
            results[1],
            Expanded::Arg(vec![("V".into(), Some("cli".into()))])
        );
        assert_eq!(
            results[2],
            Expanded::Arg(vec![("W".into(), Some("cli".into()))])
        );
        assert_eq!(
            results[3],
            Expanded::Env(vec![("a".into(), "1".into()), ("b".into(), "".into())])
        );
        assert_eq!(
            results[4],
            Expanded::Env(vec![("a".into(), "2".into()), ("c".into(), "1".into())])
        );
        // ENV shadows ARG.
        assert_eq!(results[6], Expanded::Workdir("/env/global/cli".into()));
        assert_eq!(results[7], Expanded::Env(vec![("k".into(), "v w".into())]));
        assert!(scope.undefined.contains("a"));
        let run_env = scope.run_env();
        assert!(
            run_env.contains(&("V".into(), "env".into()))
                && run_env.contains(&("G".into(), "global".into()))
        );
        assert!(!scope.env().iter().any(|(k, _)| k == "G"));
    }

    #[test]
    fn global_arg_needs_redeclaration() {
        let o = opts();
        let p = plan_of("ARG G=x\nFROM scratch\nWORKDIR /$G\n", &o).unwrap();
        let mut scope = StageScope::new(&p, &o, vec![]);
        assert_eq!(
            scope.dispatch(&p.stages[0].instructions[0]).unwrap(),
            Expanded::Workdir("/".into())
        );
    }

    #[test]
    fn copy_heredoc_expansion() {
        let o = opts();
        let p = plan_of(
            "FROM scratch\nENV X=1\nCOPY <<EOF <<'RAW' /d/\n\"$X\"\nEOF\n$X\nRAW\n",
            &o,
        )
        .unwrap();
        let mut scope = StageScope::new(&p, &o, vec![]);
        scope.dispatch(&p.stages[0].instructions[0]).unwrap();
        let Expanded::Copy { inline, .. } = scope.dispatch(&p.stages[0].instructions[1]).unwrap()
        else {
            panic!()
        };
        assert_eq!(
            inline,
            vec![
                ("EOF".into(), "\"1\"\n".into()),
                ("RAW".into(), "$X\n".into())
            ]
        );
    }

    fn dispatch_all<'a>(scope: &mut StageScope<'a>, stage: &Stage) -> Vec<Expanded> {
        stage
            .instructions
            .iter()
            .map(|ins| scope.dispatch(ins).unwrap())
            .collect()
    }

    #[test]
    fn mount_values_expand_with_the_stage_env() {
        let o = opts();
        let p = plan_of(
            "FROM scratch\nENV C=/root/.cache\nRUN --mount=type=cache,target=$C true\n",
            &o,
        )
        .unwrap();
        let mut scope = StageScope::new(&p, &o, vec![]);
        let out = dispatch_all(&mut scope, &p.stages[0]);
        let Expanded::Run { mounts } = &out[1] else {
            panic!()
        };
        assert_eq!(mounts[0].target, "/root/.cache");
    }

    #[test]
    fn later_arg_overrides_env_in_the_build_but_not_the_image() {
        let o = opts();
        let p = plan_of(
            "FROM scratch\nENV MODE=prod\nARG MODE=dev\nWORKDIR /$MODE\n",
            &o,
        )
        .unwrap();
        let mut scope = StageScope::new(&p, &o, vec![("DEBIAN_FRONTEND".into(), "dialog".into())]);
        let out = dispatch_all(&mut scope, &p.stages[0]);
        assert_eq!(out[2], Expanded::Workdir("/dev".into()));
        assert!(scope.env().contains(&("MODE".into(), "prod".into())));
        assert!(scope.run_env().contains(&("MODE".into(), "dev".into())));
        assert_eq!(
            scope.build_arg_env(),
            vec![("MODE".to_string(), "dev".to_string())]
        );
    }

    #[test]
    fn valueless_args_inherit_global_and_predefined_values() {
        let o = opts();
        let src = "ARG TARGETPLATFORM\nARG V=1\nARG V\nFROM --platform=$TARGETPLATFORM scratch:$V\nARG TARGETPLATFORM\nARG V\nARG foo\nWORKDIR /$TARGETPLATFORM/$V\n";
        let p = plan_of(src, &o).unwrap();
        assert_eq!(p.stages[0].platform.as_deref(), Some("linux/amd64"));
        assert_eq!(p.stages[0].base_name, "scratch:1");
        assert!(p.lints.is_empty(), "{:?}", p.lints);
        let mut scope = StageScope::new(&p, &o, vec![]);
        let out = dispatch_all(&mut scope, &p.stages[0]);
        assert_eq!(out[3], Expanded::Workdir("/linux/amd64/1".into()));
        assert!(
            scope
                .build_arg_env()
                .contains(&("foo".to_string(), String::new()))
        );
    }

    #[test]
    fn child_stage_inherits_parent_args() {
        let o = opts();
        let p = plan_of(
            "FROM scratch AS a\nARG X=1\nENV Y=2\nFROM a\nWORKDIR /$X/$Y\n",
            &o,
        )
        .unwrap();
        let mut parent = StageScope::new(&p, &o, vec![]);
        dispatch_all(&mut parent, &p.stages[0]);
        let mut child = StageScope::from_parent(&parent);
        assert_eq!(
            dispatch_all(&mut child, &p.stages[1]),
            vec![Expanded::Workdir("/1/2".into())]
        );
    }

    #[test]
    fn named_contexts_stand_for_images_and_directories() {
        let mut o = opts();
        o.named_contexts.insert(
            "docker.io/library/alpine:latest".into(),
            NamedContext::Image("busybox:1".into()),
        );
        o.named_contexts.insert("src".into(), NamedContext::Local);
        o.named_contexts
            .insert("tools".into(), NamedContext::Image("tools:2".into()));
        o.named_contexts
            .insert("a".into(), NamedContext::Image("other:3".into()));
        let p = plan_of(
            "FROM alpine AS a\nCOPY --from=tools /t /t\nCOPY --from=src . /s\nFROM src\nFROM a\n",
            &o,
        )
        .unwrap();
        assert_eq!(p.stages[0].base, Base::Image("busybox:1".into()));
        assert_eq!(
            p.stages[0].image_deps,
            BTreeSet::from(["tools:2".to_string()])
        );
        assert_eq!(p.stages[1].base, Base::Local("src".into()));
        // A stage of that name wins over a named context.
        assert_eq!(p.stages[2].base, Base::Stage(0));
    }

    #[test]
    fn from_sees_only_earlier_stages() {
        let p = plan_of("FROM alpine AS alpine\nFROM alpine\n", &opts()).unwrap();
        assert_eq!(p.stages[0].base, Base::Image("alpine".into()));
        assert_eq!(p.stages[1].base, Base::Stage(0));
    }

    #[test]
    fn from_flags_do_not_expand() {
        let o = opts();
        let err = plan_of(
            "ARG S=a\nFROM scratch AS a\nFROM scratch\nCOPY --from=$S /x /x\n",
            &o,
        )
        .unwrap_err();
        assert_eq!(err.kind, StageErrorKind::FromExpansion("--from"));
        let err = plan_of(
            "FROM scratch AS a\nFROM scratch\nRUN --mount=from=${S},target=/x true\n",
            &o,
        )
        .unwrap_err();
        assert_eq!(err.kind, StageErrorKind::FromExpansion("from"));
        let p = plan_of(
            "FROM scratch AS a\nFROM scratch\nRUN --mount=type=bind,from=a,target=/x true\n",
            &o,
        )
        .unwrap();
        assert_eq!(p.stages[1].deps, BTreeSet::from([0]));
    }

    #[test]
    fn build_args_override_predefined_args_in_from() {
        let mut o = opts();
        o.build_args.insert("TARGETARCH".into(), "arm64".into());
        let p = plan_of("FROM scratch:$TARGETARCH\n", &o).unwrap();
        assert_eq!(p.stages[0].base_name, "scratch:arm64");
    }

    #[test]
    fn onbuild_triggers_run_first_and_add_dependencies() {
        let o = opts();
        let mut p = plan_of(
            "FROM scratch AS assets\nFROM scratch AS other\nFROM base-with-triggers\nRUN make\n",
            &o,
        )
        .unwrap();
        assert_eq!(p.reachable, vec![2]);
        let added = p
            .apply_onbuild(
                2,
                &[
                    "COPY --from=assets / /assets".to_string(),
                    "RUN echo triggered".to_string(),
                ],
            )
            .unwrap();
        assert_eq!(added, vec![0]);
        assert_eq!(p.reachable, vec![0, 2]);
        let names: Vec<&str> = p.stages[2].instructions.iter().map(|i| i.name()).collect();
        assert_eq!(names, ["COPY", "RUN", "RUN"]);
        assert_eq!(p.stages[2].instructions[0].span, p.stages[2].from.span);
        let err = p.apply_onbuild(2, &["FROM x".to_string()]).unwrap_err();
        assert!(
            err.to_string()
                .contains("FROM isn't allowed as an ONBUILD trigger"),
            "{err}"
        );
        assert!(p.apply_onbuild(2, &["BOGUS x".to_string()]).is_err());
    }

    #[test]
    fn build_checks_and_the_check_directive() {
        let o = opts();
        let src = "ARG GITHUB_TOKEN\nFROM scratch\nMAINTAINER me\nENV PUBLIC_KEY=x DB_PASSWORD=y\nCMD echo hi\nSHELL [\"/bin/bash\", \"-c\"]\nENTRYPOINT run\n";
        let p = plan_of(src, &o).unwrap();
        let rules: Vec<&str> = p.lints.iter().map(|l| l.rule).collect();
        assert_eq!(
            rules,
            [
                "SecretsUsedInArgOrEnv",
                "MaintainerDeprecated",
                "SecretsUsedInArgOrEnv",
                "JSONArgsRecommended"
            ],
            "{:?}",
            p.lints
        );
        assert!(p.lints[2].message.contains("(ENV \"DB_PASSWORD\")"));
        assert!(!p.lint_errors);
        let p = plan_of(
            &format!("# check=skip=SecretsUsedInArgOrEnv,MaintainerDeprecated;error=true\n{src}"),
            &o,
        )
        .unwrap();
        assert_eq!(
            p.lints.iter().map(|l| l.rule).collect::<Vec<_>>(),
            ["JSONArgsRecommended"]
        );
        assert!(p.lint_errors);
        let p = plan_of(&format!("# check=skip=all\n{src}"), &o).unwrap();
        assert!(p.lints.is_empty());
        assert!(
            looks_secret("aws_secret_access_key")
                && looks_secret("token")
                && !looks_secret("TOKENIZER")
                && !looks_secret("public_key")
        );
    }
}
