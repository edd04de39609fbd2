//! Typed instructions: each parser [`Node`] becomes an [`Instruction`] with
//! its flags checked and its arguments validated, with BuildKit's error
//! messages where BuildKit has one.
//!
//! Words here are still raw (quotes, `$VAR`): expansion happens when a
//! stage is dispatched (see [`crate::stages`]), because it needs the
//! environment of the stage at that point.

use std::time::Duration;

use crate::parser::{Dockerfile, Heredoc, Node, Span, parse_heredoc};

/// An instruction-level error, with the lines it concerns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}")]
pub struct InstructionError {
    pub kind: ErrorKind,
    pub span: Span,
}

/// What is wrong with an instruction.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ErrorKind {
    #[error("unknown instruction: {keyword}{}", did_you_mean(.suggestion))]
    UnknownInstruction {
        keyword: String,
        suggestion: Option<String>,
    },
    #[error("{0} requires exactly one argument")]
    ExactlyOneArgument(&'static str),
    #[error("{0} requires at least one argument")]
    AtLeastOneArgument(&'static str),
    #[error("{0} requires at least two arguments")]
    AtLeastTwoArguments(&'static str),
    #[error(
        "{0} requires at least two arguments, but only one was provided. Destination could not be determined"
    )]
    NoDestination(&'static str),
    #[error("Bad input to {0}, too many arguments")]
    TooManyArguments(&'static str),
    #[error("{0} names can not be blank")]
    BlankName(&'static str),
    #[error("{0} requires the arguments to be in JSON form")]
    NotJson(&'static str),
    #[error("{instruction} cannot accept a heredoc as {what}")]
    BadHeredoc {
        instruction: &'static str,
        what: &'static str,
    },
    #[error("unknown flag: --{flag}{}", did_you_mean(.suggestion))]
    UnknownFlag {
        flag: String,
        suggestion: Option<String>,
    },
    #[error("duplicate flag specified: {0}")]
    DuplicateFlag(String),
    #[error("missing a value on flag: {0}")]
    MissingFlagValue(String),
    #[error("expecting boolean value for flag {flag}, not: {value}")]
    NotBoolean { flag: String, value: String },
    #[error("FROM requires either one or three arguments")]
    FromArguments,
    #[error("invalid name for build stage: {}, name can't start with a number or contain symbols", crate::quote::go_quote(.0))]
    InvalidStageName(String),
    #[error("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")]
    ChainedOnbuild,
    #[error("{0} isn't allowed as an ONBUILD trigger")]
    ForbiddenTrigger(String),
    #[error("HEALTHCHECK NONE takes no arguments")]
    HealthcheckNoneArgs,
    #[error("missing command after HEALTHCHECK CMD")]
    HealthcheckMissingCommand,
    #[error("Unknown type \"{0}\" in HEALTHCHECK (try CMD)")]
    HealthcheckType(String),
    #[error("Interval \"{flag}\" cannot be less than 1ms")]
    IntervalTooSmall { flag: &'static str },
    #[error("invalid duration {value:?} for --{flag}")]
    BadDuration { flag: &'static str, value: String },
    #[error("--retries cannot be negative ({0})")]
    NegativeRetries(i64),
    #[error("invalid value {value:?} for --retries: expected an integer")]
    BadRetries { value: String },
    #[error("VOLUME specified can not be an empty string")]
    EmptyVolume,
    #[error(
        "invalid --chmod value {0:?}: expected an octal mode (e.g. 0755) or a symbolic mode (e.g. u=rwx,go=rx)"
    )]
    BadChmod(String),
    #[error("{0}")]
    Mount(#[from] MountError),
    #[error("no build stage in current context")]
    NoStage,
    #[error("{0}")]
    Parse(crate::parser::ParseErrorKind),
}

fn did_you_mean(s: &Option<String>) -> String {
    s.as_ref()
        .map(|s| format!(" (did you mean {s}?)"))
        .unwrap_or_default()
}

/// A `key=value` pair of ENV or LABEL (raw words).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: String,
    /// The legacy `ENV key value` form (no `=`).
    pub no_delim: bool,
}

/// One name of an ARG instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgDecl {
    pub key: String,
    pub default: Option<String>,
    /// The doc comment (`# key does this`) above the instruction.
    pub doc: String,
}

/// A heredoc body used as an inline file (RUN) or a COPY/ADD source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InlineFile {
    pub name: String,
    /// Raw body (not chomped).
    pub data: String,
    pub chomp: bool,
    pub expand: bool,
}

impl InlineFile {
    /// The body with leading tabs removed when `<<-` asked for it.
    pub fn content(&self) -> String {
        if self.chomp {
            crate::parser::chomp_heredoc_content(&self.data)
        } else {
            self.data.clone()
        }
    }
}

/// A command line of RUN, CMD or ENTRYPOINT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandLine {
    /// Exec form: argv. Shell form: one element, the command text.
    pub args: Vec<String>,
    /// Shell form: run through the stage's SHELL.
    pub prepend_shell: bool,
    /// Heredocs of a RUN.
    pub files: Vec<InlineFile>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub cmd: CommandLine,
    /// Raw `--mount` values, parsed per use with [`parse_mount`] once
    /// variables are known.
    pub mounts: Vec<String>,
    pub network: Option<String>,
    pub security: Option<String>,
    pub flags_used: Vec<String>,
}

/// The sources and destination of COPY and ADD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourcesAndDest {
    pub dest: String,
    pub source_paths: Vec<String>,
    pub source_contents: Vec<InlineFile>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copy {
    pub paths: SourcesAndDest,
    pub from: Option<String>,
    pub chown: Option<String>,
    pub chmod: Option<String>,
    pub link: bool,
    pub parents: bool,
    pub excludes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Add {
    pub paths: SourcesAndDest,
    pub chown: Option<String>,
    pub chmod: Option<String>,
    pub link: bool,
    pub keep_git_dir: bool,
    pub checksum: Option<String>,
    pub excludes: Vec<String>,
    /// `--unpack`: `None` keeps the default (local archives are extracted,
    /// remote ones are not).
    pub unpack: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Healthcheck {
    /// `["NONE"]`, `["CMD", argv…]` or `["CMD-SHELL", text]`.
    pub test: Vec<String>,
    pub interval: Option<Duration>,
    pub timeout: Option<Duration>,
    pub start_period: Option<Duration>,
    pub start_interval: Option<Duration>,
    pub retries: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct From {
    pub image: String,
    /// Lowercased stage name.
    pub name: Option<String>,
    /// The name as written (for the StageNameCasing check).
    pub name_as_written: Option<String>,
    /// The `AS` keyword as written (for the FromAsCasing check).
    pub as_keyword: Option<String>,
    pub platform: Option<String>,
    pub doc: String,
}

/// The typed instructions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    From(From),
    Run(Run),
    Cmd(CommandLine),
    Entrypoint(CommandLine),
    Shell(Vec<String>),
    Env(Vec<KeyValue>),
    Label(Vec<KeyValue>),
    Arg(Vec<ArgDecl>),
    Maintainer(String),
    Expose(Vec<String>),
    User(String),
    Workdir(String),
    StopSignal(String),
    Volume(Vec<String>),
    Copy(Copy),
    Add(Add),
    Healthcheck(Healthcheck),
    /// The trigger expression as it will be stored in the image config.
    Onbuild(String),
}

/// A typed instruction with its source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    pub command: Command,
    /// The instruction keyword as written.
    pub keyword: String,
    /// The logical source line (used for history and errors).
    pub original: String,
    pub span: Span,
    /// The arguments came in JSON (exec) form.
    pub json: bool,
}

impl Instruction {
    /// The upper-case instruction name (`RUN`, `COPY`, ...).
    pub fn name(&self) -> &'static str {
        match &self.command {
            Command::From(_) => "FROM",
            Command::Run(_) => "RUN",
            Command::Cmd(_) => "CMD",
            Command::Entrypoint(_) => "ENTRYPOINT",
            Command::Shell(_) => "SHELL",
            Command::Env(_) => "ENV",
            Command::Label(_) => "LABEL",
            Command::Arg(_) => "ARG",
            Command::Maintainer(_) => "MAINTAINER",
            Command::Expose(_) => "EXPOSE",
            Command::User(_) => "USER",
            Command::Workdir(_) => "WORKDIR",
            Command::StopSignal(_) => "STOPSIGNAL",
            Command::Volume(_) => "VOLUME",
            Command::Copy(_) => "COPY",
            Command::Add(_) => "ADD",
            Command::Healthcheck(_) => "HEALTHCHECK",
            Command::Onbuild(_) => "ONBUILD",
        }
    }
}

/// All instruction keywords kiln knows, lowercased.
pub const KEYWORDS: &[&str] = &[
    "add",
    "arg",
    "cmd",
    "copy",
    "entrypoint",
    "env",
    "expose",
    "from",
    "healthcheck",
    "label",
    "maintainer",
    "onbuild",
    "run",
    "shell",
    "stopsignal",
    "user",
    "volume",
    "workdir",
];

/// Converts every node of a parsed Dockerfile.
pub fn parse_all(df: &Dockerfile) -> Result<Vec<Instruction>, InstructionError> {
    df.nodes.iter().map(parse_instruction).collect()
}

/// Converts one node.
pub fn parse_instruction(node: &Node) -> Result<Instruction, InstructionError> {
    let err = |kind: ErrorKind| InstructionError {
        kind,
        span: node.span,
    };
    let command = parse_command(node).map_err(err)?;
    Ok(Instruction {
        command,
        keyword: node.keyword.clone(),
        original: node.original.trim().to_string(),
        span: node.span,
        json: node.json,
    })
}

/// The declared flags of one instruction and the values given.
struct Flags<'a> {
    given: &'a [String],
    declared: &'static [(&'static str, FlagType)],
    values: Vec<(&'static str, Vec<String>)>,
}

#[derive(Clone, Copy, PartialEq)]
enum FlagType {
    Bool,
    String,
    Strings,
}

impl<'a> Flags<'a> {
    fn parse(
        given: &'a [String],
        declared: &'static [(&'static str, FlagType)],
    ) -> Result<Self, ErrorKind> {
        let mut flags = Flags {
            given,
            declared,
            values: Vec::new(),
        };
        for arg in flags.given {
            let Some(body) = arg.strip_prefix("--") else {
                return Err(ErrorKind::UnknownFlag {
                    flag: arg.clone(),
                    suggestion: None,
                });
            };
            if body.is_empty() {
                break;
            }
            let (name, value) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (body, None),
            };
            let Some(&(decl, ty)) = flags.declared.iter().find(|(n, _)| *n == name) else {
                let suggestion =
                    closest(name, flags.declared.iter().map(|(n, _)| *n)).map(|s| format!("--{s}"));
                return Err(ErrorKind::UnknownFlag {
                    flag: name.to_string(),
                    suggestion,
                });
            };
            let seen = flags.values.iter().position(|(n, _)| *n == decl);
            if seen.is_some() && ty != FlagType::Strings {
                return Err(ErrorKind::DuplicateFlag(name.to_string()));
            }
            let value = match ty {
                FlagType::Bool => match value.map(str::to_ascii_lowercase).as_deref() {
                    None | Some("true") => "true".to_string(),
                    Some("false") => "false".to_string(),
                    Some("") => return Err(ErrorKind::MissingFlagValue(name.to_string())),
                    Some(_) => {
                        return Err(ErrorKind::NotBoolean {
                            flag: name.to_string(),
                            value: value.unwrap_or_default().into(),
                        });
                    }
                },
                FlagType::String | FlagType::Strings => match value {
                    Some(v) => v.to_string(),
                    None => return Err(ErrorKind::MissingFlagValue(name.to_string())),
                },
            };
            match seen {
                Some(i) => flags.values[i].1.push(value),
                None => flags.values.push((decl, vec![value])),
            }
        }
        Ok(flags)
    }

    fn string(&self, name: &str) -> Option<String> {
        self.values
            .iter()
            .find(|(n, _)| *n == name)
            .and_then(|(_, v)| v.last().cloned())
    }

    fn strings(&self, name: &str) -> Vec<String> {
        self.values
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    }

    fn bool(&self, name: &str) -> bool {
        self.string(name).as_deref() == Some("true")
    }

    fn opt_bool(&self, name: &str) -> Option<bool> {
        self.string(name).map(|v| v == "true")
    }

    fn used(&self) -> Vec<String> {
        self.values.iter().map(|(n, _)| n.to_string()).collect()
    }
}

const NO_FLAGS: &[(&str, FlagType)] = &[];

fn parse_command(node: &Node) -> Result<Command, ErrorKind> {
    let args = &node.args;
    let flags = |decl| Flags::parse(&node.flags, decl);
    let exactly_one = |name: &'static str| -> Result<String, ErrorKind> {
        flags(NO_FLAGS)?;
        match args.as_slice() {
            [one] => Ok(one.clone()),
            _ => Err(ErrorKind::ExactlyOneArgument(name)),
        }
    };
    Ok(match node.command().as_str() {
        "from" => {
            let f = flags(&[("platform", FlagType::String)])?;
            let (name, name_as_written, as_keyword) = match args.as_slice() {
                [_] => (None, None, None),
                [_, kw, name] if kw.eq_ignore_ascii_case("as") => {
                    let lower = name.to_lowercase();
                    if !valid_stage_name(&lower) {
                        return Err(ErrorKind::InvalidStageName(name.clone()));
                    }
                    (Some(lower), Some(name.clone()), Some(kw.clone()))
                }
                _ => return Err(ErrorKind::FromArguments),
            };
            let doc = name
                .as_deref()
                .map(|n| doc_comment(&node.comments, n))
                .unwrap_or_default();
            Command::From(From {
                image: args[0].clone(),
                name,
                name_as_written,
                as_keyword,
                platform: f.string("platform"),
                doc,
            })
        }
        "run" => {
            let f = flags(&[
                ("mount", FlagType::Strings),
                ("network", FlagType::String),
                ("security", FlagType::String),
            ])?;
            let mounts = f.strings("mount");
            for m in &mounts {
                // Validate the shape now; values with variables are checked
                // again once expanded.
                if !m.contains('$') {
                    parse_mount(m, &mut |s| Ok(s.to_string()))?;
                }
            }
            Command::Run(Run {
                cmd: command_line(node, false),
                mounts,
                network: f.string("network"),
                security: f.string("security"),
                flags_used: f.used(),
            })
        }
        "cmd" => {
            flags(NO_FLAGS)?;
            Command::Cmd(command_line(node, false))
        }
        "entrypoint" => {
            flags(NO_FLAGS)?;
            Command::Entrypoint(command_line(node, true))
        }
        "shell" => {
            flags(NO_FLAGS)?;
            if args.is_empty() {
                return Err(ErrorKind::AtLeastOneArgument("SHELL"));
            }
            if !node.json {
                return Err(ErrorKind::NotJson("SHELL"));
            }
            Command::Shell(args.clone())
        }
        "env" => {
            flags(NO_FLAGS)?;
            Command::Env(key_values(args, "ENV")?)
        }
        "label" => {
            flags(NO_FLAGS)?;
            Command::Label(key_values(args, "LABEL")?)
        }
        "arg" => {
            flags(NO_FLAGS)?;
            if args.is_empty() {
                return Err(ErrorKind::AtLeastOneArgument("ARG"));
            }
            Command::Arg(
                args.iter()
                    .map(|a| {
                        let (key, default) = match a.split_once('=') {
                            Some((k, v)) => (k.to_string(), Some(v.to_string())),
                            None => (a.clone(), None),
                        };
                        if key.is_empty() {
                            return Err(ErrorKind::BlankName("ARG"));
                        }
                        let doc = doc_comment(&node.comments, &key);
                        Ok(ArgDecl { key, default, doc })
                    })
                    .collect::<Result<_, _>>()?,
            )
        }
        "maintainer" => Command::Maintainer(exactly_one("MAINTAINER")?),
        "user" => Command::User(exactly_one("USER")?),
        "workdir" => Command::Workdir(exactly_one("WORKDIR")?),
        "stopsignal" => Command::StopSignal(exactly_one("STOPSIGNAL")?),
        "expose" => {
            flags(NO_FLAGS)?;
            if args.is_empty() {
                return Err(ErrorKind::AtLeastOneArgument("EXPOSE"));
            }
            Command::Expose(args.clone())
        }
        "volume" => {
            flags(NO_FLAGS)?;
            if args.is_empty() {
                return Err(ErrorKind::AtLeastOneArgument("VOLUME"));
            }
            if args.iter().any(|v| v.trim().is_empty()) {
                return Err(ErrorKind::EmptyVolume);
            }
            Command::Volume(args.clone())
        }
        "copy" => {
            check_copy_args(args, "COPY")?;
            let f = flags(&[
                ("chown", FlagType::String),
                ("from", FlagType::String),
                ("chmod", FlagType::String),
                ("link", FlagType::Bool),
                ("parents", FlagType::Bool),
                ("exclude", FlagType::Strings),
            ])?;
            let chmod = f.string("chmod");
            check_chmod(chmod.as_deref())?;
            Command::Copy(Copy {
                paths: sources_and_dest(node, "COPY")?,
                from: f.string("from"),
                chown: f.string("chown"),
                chmod,
                link: f.bool("link"),
                parents: f.bool("parents"),
                excludes: f.strings("exclude"),
            })
        }
        "add" => {
            check_copy_args(args, "ADD")?;
            let f = flags(&[
                ("chown", FlagType::String),
                ("chmod", FlagType::String),
                ("link", FlagType::Bool),
                ("keep-git-dir", FlagType::Bool),
                ("checksum", FlagType::String),
                ("exclude", FlagType::Strings),
                ("unpack", FlagType::Bool),
            ])?;
            let chmod = f.string("chmod");
            check_chmod(chmod.as_deref())?;
            Command::Add(Add {
                paths: sources_and_dest(node, "ADD")?,
                chown: f.string("chown"),
                chmod,
                link: f.bool("link"),
                keep_git_dir: f.bool("keep-git-dir"),
                checksum: f.string("checksum"),
                excludes: f.strings("exclude"),
                unpack: f.opt_bool("unpack"),
            })
        }
        "healthcheck" => Command::Healthcheck(healthcheck(node)?),
        "onbuild" => {
            flags(NO_FLAGS)?;
            let Some(sub) = &node.sub else {
                return Err(ErrorKind::AtLeastOneArgument("ONBUILD"));
            };
            let trigger = sub.keyword.trim().to_uppercase();
            match trigger.as_str() {
                "ONBUILD" => return Err(ErrorKind::ChainedOnbuild),
                "MAINTAINER" | "FROM" => return Err(ErrorKind::ForbiddenTrigger(trigger)),
                _ => {}
            }
            let mut expression = strip_onbuild_keyword(&node.original).to_string();
            for h in &node.heredocs {
                expression.push('\n');
                expression.push_str(&h.content);
                expression.push_str(&h.name);
            }
            Command::Onbuild(expression)
        }
        _ => {
            let lower = node.keyword.to_lowercase();
            return Err(ErrorKind::UnknownInstruction {
                keyword: node.keyword.clone(),
                suggestion: closest(&lower, KEYWORDS.iter().copied()).map(|s| s.to_uppercase()),
            });
        }
    })
}

fn check_copy_args(args: &[String], name: &'static str) -> Result<(), ErrorKind> {
    match args.len() {
        0 => Err(ErrorKind::AtLeastTwoArguments(name)),
        1 => Err(ErrorKind::NoDestination(name)),
        _ => Ok(()),
    }
}

/// `(?i)^\s*ONBUILD\s*` removed.
fn strip_onbuild_keyword(original: &str) -> &str {
    let s = original.trim_start();
    match s.get(..7) {
        Some(kw) if kw.eq_ignore_ascii_case("onbuild") => s[7..].trim_start(),
        _ => s,
    }
}

fn valid_stage_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'))
}

/// BuildKit's doc-comment rule: a comment line `NAME text` documents NAME.
fn doc_comment(comments: &[String], name: &str) -> String {
    if name.is_empty() {
        return String::new();
    }
    let prefix = format!("{name} ");
    comments
        .iter()
        .find_map(|c| c.strip_prefix(&prefix))
        .unwrap_or_default()
        .to_string()
}

fn key_values(args: &[String], name: &'static str) -> Result<Vec<KeyValue>, ErrorKind> {
    if args.is_empty() {
        return Err(ErrorKind::AtLeastOneArgument(name));
    }
    if !args.len().is_multiple_of(3) {
        return Err(ErrorKind::TooManyArguments(name));
    }
    args.chunks(3)
        .map(|c| {
            if c[0].is_empty() {
                return Err(ErrorKind::BlankName(name));
            }
            Ok(KeyValue {
                key: c[0].clone(),
                value: c[1].clone(),
                no_delim: c[2].is_empty(),
            })
        })
        .collect()
}

fn inline_files(heredocs: &[Heredoc]) -> Vec<InlineFile> {
    heredocs
        .iter()
        .map(|h| InlineFile {
            name: h.name.clone(),
            data: h.content.clone(),
            chomp: h.chomp,
            expand: h.expand,
        })
        .collect()
}

fn command_line(node: &Node, empty_as_none: bool) -> CommandLine {
    let mut args = if node.json || node.args.is_empty() {
        node.args.clone()
    } else {
        vec![node.args.join(" ")]
    };
    if empty_as_none && args.is_empty() {
        args = Vec::new();
    }
    CommandLine {
        args,
        prepend_shell: !node.json,
        files: inline_files(&node.heredocs),
    }
}

fn sources_and_dest(node: &Node, name: &'static str) -> Result<SourcesAndDest, ErrorKind> {
    let (dest, srcs) = node
        .args
        .split_last()
        .ok_or(ErrorKind::NoDestination(name))?;
    let heredoc_word = |w: &str| {
        if node.json {
            None
        } else {
            parse_heredoc(w).ok().flatten()
        }
    };
    if heredoc_word(dest).is_some() {
        return Err(ErrorKind::BadHeredoc {
            instruction: name,
            what: "a destination",
        });
    }
    let mut source_paths = Vec::new();
    let mut source_contents = Vec::new();
    for src in srcs {
        match heredoc_word(src) {
            Some(h) => {
                let body = node.heredocs.iter().find(|d| d.name == h.name);
                source_contents.push(InlineFile {
                    name: h.name.clone(),
                    data: body.map(|b| b.content.clone()).unwrap_or_default(),
                    chomp: h.chomp,
                    expand: h.expand,
                });
            }
            None => source_paths.push(src.clone()),
        }
    }
    Ok(SourcesAndDest {
        dest: dest.clone(),
        source_paths,
        source_contents,
    })
}

fn healthcheck(node: &Node) -> Result<Healthcheck, ErrorKind> {
    let Some((typ, rest)) = node.args.split_first() else {
        return Err(ErrorKind::AtLeastOneArgument("HEALTHCHECK"));
    };
    let typ = typ.to_uppercase();
    if typ == "NONE" {
        // BuildKit ignores flags on HEALTHCHECK NONE.
        if !rest.is_empty() {
            return Err(ErrorKind::HealthcheckNoneArgs);
        }
        return Ok(Healthcheck {
            test: vec![typ],
            interval: None,
            timeout: None,
            start_period: None,
            start_interval: None,
            retries: None,
        });
    }
    let f = Flags::parse(
        &node.flags,
        &[
            ("interval", FlagType::String),
            ("timeout", FlagType::String),
            ("start-period", FlagType::String),
            ("start-interval", FlagType::String),
            ("retries", FlagType::String),
        ],
    )?;
    if typ != "CMD" {
        return Err(ErrorKind::HealthcheckType(typ));
    }
    let cmd: Vec<String> = if node.json || rest.is_empty() {
        rest.to_vec()
    } else {
        vec![rest.join(" ")]
    };
    if cmd.is_empty() {
        return Err(ErrorKind::HealthcheckMissingCommand);
    }
    let test_type = if node.json { "CMD" } else { "CMD-SHELL" };
    let duration = |flag: &'static str| -> Result<Option<Duration>, ErrorKind> {
        let Some(v) = f.string(flag) else {
            return Ok(None);
        };
        if v.is_empty() {
            return Ok(None);
        }
        let d = parse_go_duration(&v).ok_or(ErrorKind::BadDuration {
            flag,
            value: v.clone(),
        })?;
        if !d.is_zero() && d < Duration::from_millis(1) {
            return Err(ErrorKind::IntervalTooSmall { flag });
        }
        Ok(Some(d))
    };
    let retries = match f.string("retries").filter(|v| !v.is_empty()) {
        None => None,
        Some(v) => {
            let n: i64 = v
                .parse()
                .map_err(|_| ErrorKind::BadRetries { value: v.clone() })?;
            if n < 0 {
                return Err(ErrorKind::NegativeRetries(n));
            }
            Some(u32::try_from(n).map_err(|_| ErrorKind::BadRetries { value: v.clone() })?)
        }
    };
    Ok(Healthcheck {
        test: std::iter::once(test_type.to_string()).chain(cmd).collect(),
        interval: duration("interval")?,
        timeout: duration("timeout")?,
        start_period: duration("start-period")?,
        start_interval: duration("start-interval")?,
        retries,
    })
}

/// Parses a Go duration (`300ms`, `1.5h`, `2h45m`, `-1s` rejected). Units:
/// ns, us/µs, ms, s, m, h. A bare `0` is zero.
pub fn parse_go_duration(s: &str) -> Option<Duration> {
    if s == "0" {
        return Some(Duration::ZERO);
    }
    let mut rest = s.strip_prefix('+').unwrap_or(s);
    if rest.is_empty() {
        return None;
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return None;
        }
        let number: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let nanos_per = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += number * nanos_per;
    }
    if !total.is_finite() || total > u64::MAX as f64 {
        return None;
    }
    Some(Duration::from_nanos(total.round() as u64))
}

/// Checks a `--chmod` value: octal (`755`, `0644`) or symbolic
/// (`u=rwx,g+x,o-w`, `a+X`). Variables are checked after expansion.
fn check_chmod(value: Option<&str>) -> Result<(), ErrorKind> {
    match value {
        Some(v) if !v.contains('$') && crate::chmod::Chmod::parse(v).is_none() => {
            Err(ErrorKind::BadChmod(v.to_string()))
        }
        _ => Ok(()),
    }
}

/// Picks the closest known word (for "did you mean" hints).
fn closest<'a>(word: &str, candidates: impl Iterator<Item = &'a str>) -> Option<String> {
    let word = word.to_lowercase();
    candidates
        .map(|c| (levenshtein(&word, c), c))
        .filter(|(d, _)| *d > 0 && *d <= (word.chars().count() / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c.to_string())
}

/// Edit distance counting a transposition of neighbours as one edit
/// (optimal string alignment), so `form` is one edit from `from`.
fn levenshtein(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

// ---------------------------------------------------------------------------
// RUN --mount

/// The kind of a `RUN --mount`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountType {
    Bind,
    Cache,
    Tmpfs,
    Secret,
    Ssh,
}

impl MountType {
    pub fn as_str(self) -> &'static str {
        match self {
            MountType::Bind => "bind",
            MountType::Cache => "cache",
            MountType::Tmpfs => "tmpfs",
            MountType::Secret => "secret",
            MountType::Ssh => "ssh",
        }
    }
}

/// How concurrent builds share a cache mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CacheSharing {
    #[default]
    Shared,
    Private,
    Locked,
}

/// A parsed `RUN --mount`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub kind: MountType,
    pub from: Option<String>,
    pub source: Option<String>,
    pub target: String,
    pub read_only: bool,
    pub id: Option<String>,
    pub sharing: CacheSharing,
    pub required: bool,
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// tmpfs size limit in bytes.
    pub size: Option<u64>,
    /// secret: expose as this environment variable.
    pub env: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MountError {
    #[error("unexpected key '{key}' in '{field}'")]
    UnexpectedKey { key: String, field: String },
    #[error("unexpected key '{key}' for mount type '{kind}'")]
    KeyNotForType { key: String, kind: &'static str },
    #[error("unsupported mount type \"{0}\"")]
    UnsupportedType(String),
    #[error("unsupported sharing value \"{0}\"")]
    UnsupportedSharing(String),
    #[error("invalid cache sharing set for {0} mount")]
    SharingNotCache(&'static str),
    #[error("invalid value {value:?} for {key}")]
    InvalidValue { key: String, value: String },
    #[error("{0} not allowed for \"{1}\" type mounts")]
    NotAllowed(&'static str, &'static str),
    #[error("mount {0} requires a target")]
    MissingTarget(&'static str),
    #[error("secret mount should not have a from")]
    SecretFrom,
    #[error("secret mount requires one of id, source or target")]
    SecretNeedsId,
    #[error("both source and id can't be set")]
    SecretSourceAndId,
    #[error("invalid mount specification: {0}")]
    Syntax(String),
    #[error("{0}")]
    Expansion(String),
}

/// Splits a CSV record (as Go's `encoding/csv` reads one line): fields
/// separated by commas, double quotes around a field, `""` inside quotes.
fn split_csv(s: &str) -> Result<Vec<String>, MountError> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut chars = s.chars().peekable();
    let mut at_start = true;
    while let Some(c) = chars.next() {
        match c {
            '"' if at_start => {
                loop {
                    match chars.next() {
                        None => {
                            return Err(MountError::Syntax(format!("unterminated quote in {s:?}")));
                        }
                        Some('"') if chars.peek() == Some(&'"') => {
                            chars.next();
                            field.push('"');
                        }
                        Some('"') => break,
                        Some(c) => field.push(c),
                    }
                }
                match chars.peek() {
                    None | Some(',') => {}
                    Some(_) => {
                        return Err(MountError::Syntax(format!(
                            "extraneous \" in field of {s:?}"
                        )));
                    }
                }
                at_start = false;
            }
            ',' => {
                fields.push(std::mem::take(&mut field));
                at_start = true;
            }
            c => {
                field.push(c);
                at_start = false;
            }
        }
    }
    fields.push(field);
    Ok(fields)
}

fn parse_bool(key: &str, value: &str) -> Result<bool, MountError> {
    match value {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(MountError::InvalidValue {
            key: key.to_string(),
            value: value.to_string(),
        }),
    }
}

/// Parses a `--mount` value, expanding each value with `expand`.
pub fn parse_mount(
    spec: &str,
    expand: &mut dyn FnMut(&str) -> Result<String, String>,
) -> Result<Mount, MountError> {
    let mut m = Mount {
        kind: MountType::Bind,
        from: None,
        source: None,
        target: String::new(),
        read_only: true,
        id: None,
        sharing: CacheSharing::Shared,
        required: false,
        mode: None,
        uid: None,
        gid: None,
        size: None,
        env: None,
    };
    let mut ro_auto = true;
    let mut sharing_set = false;
    for field in split_csv(spec)? {
        let (key, value) = match field.split_once('=') {
            Some((k, v)) => (k.to_lowercase(), Some(v)),
            None => (field.to_lowercase(), None),
        };
        let Some(value) = value else {
            match key.as_str() {
                "readonly" | "ro" => m.read_only = true,
                "readwrite" | "rw" => m.read_only = false,
                "required" if matches!(m.kind, MountType::Secret | MountType::Ssh) => {
                    m.required = true
                }
                "required" => {
                    return Err(MountError::KeyNotForType {
                        key,
                        kind: m.kind.as_str(),
                    });
                }
                _ => {
                    return Err(MountError::UnexpectedKey {
                        key,
                        field: field.clone(),
                    });
                }
            }
            if key != "required" {
                ro_auto = false;
            }
            continue;
        };
        let value = expand(value).map_err(MountError::Expansion)?;
        let int = |radix: u32| {
            u32::from_str_radix(&value, radix).map_err(|_| MountError::InvalidValue {
                key: key.clone(),
                value: value.clone(),
            })
        };
        match key.as_str() {
            "type" => {
                m.kind = match value.to_lowercase().as_str() {
                    "bind" => MountType::Bind,
                    "cache" => MountType::Cache,
                    "tmpfs" => MountType::Tmpfs,
                    "secret" => MountType::Secret,
                    "ssh" => MountType::Ssh,
                    _ => return Err(MountError::UnsupportedType(value)),
                }
            }
            "from" => m.from = Some(value),
            "source" | "src" => m.source = Some(value),
            "target" | "dst" | "destination" => {
                m.target = value;
            }
            "readonly" | "ro" => {
                m.read_only = parse_bool(&key, &value)?;
                ro_auto = false;
            }
            "readwrite" | "rw" => {
                m.read_only = !parse_bool(&key, &value)?;
                ro_auto = false;
            }
            "required" => {
                if !matches!(m.kind, MountType::Secret | MountType::Ssh) {
                    return Err(MountError::KeyNotForType {
                        key,
                        kind: m.kind.as_str(),
                    });
                }
                m.required = parse_bool(&key, &value)?;
            }
            "sharing" => {
                // Checked against the type after all fields are read, so
                // `sharing=locked,type=cache` works too.
                m.sharing = match value.to_lowercase().as_str() {
                    "shared" => CacheSharing::Shared,
                    "private" => CacheSharing::Private,
                    "locked" => CacheSharing::Locked,
                    _ => return Err(MountError::UnsupportedSharing(value)),
                };
                sharing_set = true;
            }
            "id" => m.id = Some(value),
            "size" => {
                if m.kind != MountType::Tmpfs {
                    return Err(MountError::KeyNotForType {
                        key,
                        kind: m.kind.as_str(),
                    });
                }
                m.size = Some(parse_ram_size(&value).ok_or(MountError::InvalidValue {
                    key: key.clone(),
                    value: value.clone(),
                })?);
            }
            "mode" => m.mode = Some(int(8)?),
            "uid" => m.uid = Some(int(10)?),
            "gid" => m.gid = Some(int(10)?),
            "env" => {
                if m.kind != MountType::Secret {
                    return Err(MountError::KeyNotForType {
                        key,
                        kind: m.kind.as_str(),
                    });
                }
                m.env = Some(value);
            }
            _ => {
                return Err(MountError::UnexpectedKey {
                    key,
                    field: field.clone(),
                });
            }
        }
    }
    let kind = m.kind.as_str();
    let file_info_allowed = matches!(
        m.kind,
        MountType::Secret | MountType::Ssh | MountType::Cache
    );
    if !file_info_allowed {
        if m.mode.is_some() {
            return Err(MountError::NotAllowed("mode", kind));
        }
        if m.uid.is_some() {
            return Err(MountError::NotAllowed("uid", kind));
        }
        if m.gid.is_some() {
            return Err(MountError::NotAllowed("gid", kind));
        }
    }
    if sharing_set && m.kind != MountType::Cache {
        return Err(MountError::SharingNotCache(kind));
    }
    if ro_auto {
        m.read_only = !matches!(m.kind, MountType::Cache | MountType::Tmpfs);
    }
    match m.kind {
        MountType::Secret => {
            if m.from.is_some() {
                return Err(MountError::SecretFrom);
            }
            if m.source.is_some() && m.id.is_some() {
                return Err(MountError::SecretSourceAndId);
            }
            let id = m
                .source
                .clone()
                .or_else(|| m.id.clone())
                .filter(|i| !i.is_empty())
                .or_else(|| (!m.target.is_empty()).then(|| base_name(&m.target)));
            let Some(id) = id else {
                return Err(MountError::SecretNeedsId);
            };
            if m.target.is_empty() && m.env.is_none() {
                m.target = format!("/run/secrets/{}", base_name(&id));
            }
            m.id = Some(id);
        }
        MountType::Ssh => {
            if m.id.is_none() {
                m.id = Some("default".to_string());
            }
        }
        MountType::Cache => {
            if m.target.is_empty() {
                return Err(MountError::MissingTarget(kind));
            }
            if m.id.as_deref().is_none_or(str::is_empty) {
                m.id = Some(m.target.clone());
            }
        }
        MountType::Bind | MountType::Tmpfs => {
            if m.target.is_empty() {
                return Err(MountError::MissingTarget(kind));
            }
        }
    }
    Ok(m)
}

fn base_name(path: &str) -> String {
    path.trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Docker's `units.RAMInBytes`: `64m`, `1g`, `512k`, `1024`, binary units.
pub fn parse_ram_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let num: f64 = num.parse().ok()?;
    let mult: u64 = match unit.trim().to_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        "p" | "pb" | "pib" => 1 << 50,
        _ => return None,
    };
    let v = num * mult as f64;
    (v.is_finite() && v >= 0.0 && v < u64::MAX as f64).then_some(v as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parser::parse;

    fn first(src: &str) -> Result<Instruction, InstructionError> {
        parse_instruction(&parse(src).unwrap().nodes[0])
    }

    fn err(src: &str) -> String {
        first(src).unwrap_err().to_string()
    }

    #[test]
    fn argument_counts() {
        assert_eq!(err("WORKDIR"), "WORKDIR requires exactly one argument");
        assert_eq!(err("ENV"), "ENV requires at least one argument");
        assert_eq!(
            err("COPY a"),
            "COPY requires at least two arguments, but only one was provided. Destination could not be determined"
        );
        assert_eq!(
            err("FROM a b"),
            "FROM requires either one or three arguments"
        );
        assert_eq!(
            err("SHELL /bin/sh -c"),
            "SHELL requires the arguments to be in JSON form"
        );
    }

    #[test]
    fn flags() {
        assert_eq!(err("MAINTAINER --boo joe"), "unknown flag: --boo");
        assert_eq!(
            err("COPY --form=a b c"),
            "unknown flag: --form (did you mean --from?)"
        );
        assert_eq!(
            err("COPY --from=a --from=b c d"),
            "duplicate flag specified: from"
        );
        assert_eq!(
            err("COPY --link=maybe a b"),
            "expecting boolean value for flag link, not: maybe"
        );
        assert_eq!(err("COPY --from a b"), "missing a value on flag: from");
        let Command::Copy(c) = first("COPY --link --exclude=*.md --exclude=x --chmod=0755 a b")
            .unwrap()
            .command
        else {
            panic!()
        };
        assert!(c.link && c.excludes == ["*.md", "x"] && c.chmod.as_deref() == Some("0755"));
        assert_eq!(
            err("COPY --chmod=999 a b").split(':').next(),
            Some("invalid --chmod value \"999\"")
        );
    }

    #[test]
    fn unknown_instruction_suggests() {
        assert_eq!(err("FOO bar"), "unknown instruction: FOO");
        assert_eq!(
            err("RUNN x"),
            "unknown instruction: RUNN (did you mean RUN?)"
        );
    }

    #[test]
    fn onbuild_rules() {
        assert_eq!(
            err("ONBUILD FROM scratch"),
            "FROM isn't allowed as an ONBUILD trigger"
        );
        assert_eq!(
            err("ONBUILD ONBUILD RUN x"),
            "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"
        );
        let Command::Onbuild(e) = first("onbuild  RUN echo hi").unwrap().command else {
            panic!()
        };
        assert_eq!(e, "RUN echo hi");
    }

    #[test]
    fn stage_names() {
        let Command::From(f) = first("FROM busybox AS Build-1").unwrap().command else {
            panic!()
        };
        assert_eq!(f.name.as_deref(), Some("build-1"));
        assert!(err("FROM a AS 1x").starts_with("invalid name for build stage: \"1x\""));
    }

    #[test]
    fn healthcheck() {
        let Command::Healthcheck(h) = first("HEALTHCHECK --interval=5s --retries=3 CMD curl -f x")
            .unwrap()
            .command
        else {
            panic!()
        };
        assert_eq!(h.test, ["CMD-SHELL", "curl -f x"]);
        assert_eq!(h.interval, Some(Duration::from_secs(5)));
        assert_eq!(h.retries, Some(3));
        assert_eq!(
            err("HEALTHCHECK --interval=50ns CMD x"),
            "Interval \"interval\" cannot be less than 1ms"
        );
        assert!(first("HEALTHCHECK --interval=0ms CMD x").is_ok());
        assert_eq!(
            err("HEALTHCHECK NONE x"),
            "HEALTHCHECK NONE takes no arguments"
        );
        assert!(first("HEALTHCHECK --interval=5s NONE").is_ok());
        assert_eq!(err("ARG =x"), "ARG names can not be blank");
        assert_eq!(
            err("HEALTHCHECK FOO x"),
            "Unknown type \"FOO\" in HEALTHCHECK (try CMD)"
        );
        assert_eq!(
            err("HEALTHCHECK --retries=-1 CMD x"),
            "--retries cannot be negative (-1)"
        );
        assert_eq!(parse_go_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("1.5h"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("10"), None);
    }

    #[test]
    fn copy_heredoc_sources() {
        let Command::Copy(c) = first("COPY <<EOF foo.txt /bar\nthis is inline\nEOF")
            .unwrap()
            .command
        else {
            panic!()
        };
        assert_eq!(c.paths.source_paths, ["foo.txt"]);
        assert_eq!(c.paths.source_contents[0].data, "this is inline\n");
        assert_eq!(
            err("COPY /foo <<EOF\nEOF"),
            "COPY cannot accept a heredoc as a destination"
        );
    }

    #[test]
    fn mounts() {
        let mut id = |s: &str| Ok(s.to_string());
        let m = parse_mount("type=cache,target=/root/.cache,sharing=locked", &mut id).unwrap();
        assert_eq!(
            (m.kind, m.id.as_deref(), m.sharing, m.read_only),
            (
                MountType::Cache,
                Some("/root/.cache"),
                CacheSharing::Locked,
                false
            )
        );
        let m = parse_mount("type=secret,id=tok", &mut id).unwrap();
        assert_eq!(m.target, "/run/secrets/tok");
        let m = parse_mount("type=secret,id=tok,env=TOKEN", &mut id).unwrap();
        assert_eq!((m.target.as_str(), m.env.as_deref()), ("", Some("TOKEN")));
        let m = parse_mount("target=/src,from=builder,rw", &mut id).unwrap();
        assert_eq!(
            (m.kind, m.read_only, m.from.as_deref()),
            (MountType::Bind, false, Some("builder"))
        );
        assert_eq!(
            parse_mount("type=tmpfs,target=/t,size=64m", &mut id)
                .unwrap()
                .size,
            Some(64 << 20)
        );
        assert!(parse_mount("type=foo,target=/x", &mut id).is_err());
        assert!(parse_mount("type=bind,target=/x,mode=0700", &mut id).is_err());
        assert!(parse_mount("type=bind,sharing=locked,target=/x", &mut id).is_err());
        assert_eq!(
            parse_mount("sharing=locked,type=cache,target=/x", &mut id)
                .unwrap()
                .sharing,
            CacheSharing::Locked
        );
        assert!(parse_mount("type=cache", &mut id).is_err());
        assert_eq!(
            err("RUN --mount=type=nope,target=/x true"),
            "unsupported mount type \"nope\""
        );
    }
}
