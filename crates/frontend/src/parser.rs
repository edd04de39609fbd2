//! The line-level Dockerfile parser.
//!
//! Turns Dockerfile text into a list of [`Node`]s, one per instruction, the
//! way BuildKit's `frontend/dockerfile/parser` does: parser directives,
//! BOM, CRLF, line continuations with the escape token (comments and blank
//! lines inside continuations), per-instruction argument splitting (JSON
//! exec form with BuildKit's fallback rules, whitespace lists, quote-aware
//! `key=value` words) and heredocs.
//!
//! Every node keeps its source span. [`Node::dump`] prints BuildKit's AST
//! dump format so the parser can be held against BuildKit's golden files.

use std::fmt;

use crate::quote::go_quote;

/// The longest physical line BuildKit accepts (its scanner's buffer).
pub const MAX_LINE_LEN: usize = 65535;

/// Where a node or error sits in the Dockerfile. Lines and columns are
/// 1-based; `end_line` is inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Span {
    pub start_line: usize,
    pub end_line: usize,
    /// Column of the first character of the instruction keyword (1-based,
    /// in characters), or 0 when unknown.
    pub start_col: usize,
}

impl Span {
    pub fn lines(start_line: usize, end_line: usize) -> Self {
        Span {
            start_line,
            end_line,
            start_col: 0,
        }
    }
}

/// A heredoc attached to a RUN, COPY or ADD instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heredoc {
    /// The terminator word, with quotes removed.
    pub name: String,
    /// The body, exactly as written (one `\n` per line), not chomped.
    pub content: String,
    /// False when any part of the terminator word was quoted: the body is
    /// then taken literally, with no variable expansion.
    pub expand: bool,
    /// `<<-`: leading tabs are stripped from the body and the terminator.
    pub chomp: bool,
    /// The file descriptor prefix (`3<<EOF`), 0 when absent.
    pub file_descriptor: u32,
}

impl Heredoc {
    /// The body as the instruction sees it: leading tabs removed from every
    /// line when `chomp` is set.
    pub fn chomped_content(&self) -> String {
        if self.chomp {
            chomp_heredoc_content(&self.content)
        } else {
            self.content.clone()
        }
    }
}

/// Strips leading tabs from every line, as `<<-` asks.
pub fn chomp_heredoc_content(src: &str) -> String {
    src.split_inclusive('\n')
        .map(|line| line.trim_start_matches('\t'))
        .collect()
}

/// One instruction as the parser sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The instruction keyword as written (`RUN`, `run`, `Copy`, ...).
    pub keyword: String,
    /// The logical line after continuation lines were joined.
    pub original: String,
    /// Leading `--flag` words, quotes and escapes already removed.
    pub flags: Vec<String>,
    /// The argument list (see the per-instruction rules in [`parse`]).
    pub args: Vec<String>,
    /// The nested instruction of `ONBUILD`.
    pub sub: Option<Box<Node>>,
    /// The arguments came from a JSON array (exec form).
    pub json: bool,
    pub heredocs: Vec<Heredoc>,
    pub span: Span,
    /// Comment lines directly above the instruction (`#` stripped).
    pub comments: Vec<String>,
}

impl Node {
    /// The keyword, lowercased: the key used to dispatch on instructions.
    pub fn command(&self) -> String {
        self.keyword.to_ascii_lowercase()
    }

    /// BuildKit's `Node.Dump()` of this instruction (without the outer
    /// parentheses the file dump adds).
    pub fn dump(&self) -> String {
        let mut s = self.keyword.to_lowercase();
        if !self.flags.is_empty() {
            s.push_str(" [");
            let quoted: Vec<String> = self.flags.iter().map(|f| go_quote(f)).collect();
            s.push_str(&quoted.join(" "));
            s.push(']');
        }
        for arg in &self.args {
            s.push(' ');
            s.push_str(&go_quote(arg));
        }
        if let Some(sub) = &self.sub {
            s.push_str(" (");
            s.push_str(&sub.dump());
            s.push(')');
        }
        s.trim().to_string()
    }

    fn can_contain_heredoc(&self) -> bool {
        let node = match (&self.sub, self.command().as_str()) {
            (Some(sub), "onbuild") => sub.as_ref(),
            _ => self,
        };
        matches!(node.command().as_str(), "add" | "copy" | "run") && !node.json
    }
}

/// A parser directive (`# syntax=`, `# escape=`, `# check=`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    /// Lowercased name.
    pub name: String,
    pub value: String,
    /// 1-based line.
    pub line: usize,
}

/// A non-fatal finding of the parser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub short: String,
    pub detail: String,
    pub url: String,
    pub span: Span,
}

/// The parsed Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dockerfile {
    pub nodes: Vec<Node>,
    pub directives: Vec<Directive>,
    pub escape: char,
    pub warnings: Vec<Warning>,
    /// First and last line of the instructions.
    pub span: Span,
}

impl Dockerfile {
    /// The value of a directive, if present.
    pub fn directive(&self, name: &str) -> Option<&str> {
        self.directives
            .iter()
            .find(|d| d.name == name)
            .map(|d| d.value.as_str())
    }

    /// BuildKit's dump of the whole AST: one parenthesised line per
    /// instruction, with a final newline.
    pub fn dump(&self) -> String {
        let mut out = String::new();
        for node in &self.nodes {
            out.push('(');
            out.push_str(&node.dump());
            out.push_str(")\n");
        }
        out
    }
}

/// What went wrong while parsing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseErrorKind {
    #[error("file with no instructions")]
    NoInstructions,
    #[error("dockerfile line greater than max allowed size of {MAX_LINE_LEN}")]
    LineTooLong,
    #[error("only one {0} parser directive can be used")]
    DuplicateDirective(String),
    #[error("invalid escape token '{0}' does not match ` or \\")]
    InvalidEscapeToken(String),
    #[error("{0} must have two arguments")]
    MissingValue(String),
    #[error("Syntax error - can't find = in {}. Must be of the form: name=value", go_quote(.0))]
    MissingEquals(String),
    #[error("when using JSON array syntax, arrays must be comprised of strings only")]
    NotStringArray,
    #[error("unterminated heredoc")]
    UnterminatedHeredoc,
    #[error("invalid heredoc {word:?}: {reason}")]
    InvalidHeredoc { word: String, reason: String },
}

/// A parse error with the lines it concerns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}")]
pub struct ParseError {
    pub kind: ParseErrorKind,
    pub span: Span,
}

impl ParseError {
    fn at(kind: ParseErrorKind, start_line: usize, end_line: usize) -> Self {
        ParseError {
            kind,
            span: Span::lines(start_line, end_line),
        }
    }
}

/// The escape token and the directive scanner's state.
struct Directives {
    escape: char,
    scanning_done: bool,
    lines_seen: usize,
    found: Vec<Directive>,
}

impl Directives {
    fn new() -> Self {
        Directives {
            escape: '\\',
            scanning_done: false,
            lines_seen: 0,
            found: Vec::new(),
        }
    }

    /// Feeds one physical line (already trimmed) to the directive scanner.
    fn possible_directive(&mut self, line: &str) -> Result<(), ParseErrorKind> {
        self.lines_seen += 1;
        if self.scanning_done {
            return Ok(());
        }
        if self.lines_seen == 1 && line.starts_with("#!") {
            return Ok(()); // a shebang line does not end directive scanning
        }
        let Some((name, value)) = match_directive(line) else {
            self.scanning_done = true;
            return Ok(());
        };
        let name = name.to_ascii_lowercase();
        if !matches!(name.as_str(), "syntax" | "escape" | "check") {
            self.scanning_done = true;
            return Ok(());
        }
        if self.found.iter().any(|d| d.name == name) {
            return Err(ParseErrorKind::DuplicateDirective(name));
        }
        if name == "escape" {
            self.escape = match value {
                "\\" => '\\',
                "`" => '`',
                other => return Err(ParseErrorKind::InvalidEscapeToken(other.to_string())),
            };
        }
        self.found.push(Directive {
            name,
            value: value.to_string(),
            line: self.lines_seen,
        });
        Ok(())
    }

    /// `([^T])T[ \t]*$` or `^T[ \t]*$`: the line continues on the next one.
    /// Returns the line with the token (and what follows it) removed.
    fn trim_continuation<'a>(&self, line: &'a str) -> (&'a str, bool) {
        let body = line.trim_end_matches([' ', '\t']);
        let Some(before) = body.strip_suffix(self.escape) else {
            return (line, true);
        };
        match before.chars().next_back() {
            None => ("", false),
            Some(c) if c != self.escape => (before, false),
            Some(_) => (line, true),
        }
    }
}

fn match_directive(line: &str) -> Option<(&str, &str)> {
    crate::directives::match_line(line, "#")
}

fn is_comment(line: &str) -> bool {
    line.trim_end_matches(['\r', '\n'])
        .trim_start()
        .starts_with('#')
}

/// Go's `reWhitespace`: `[\t\v\f\r ]+`.
fn is_split_space(c: char) -> bool {
    matches!(c, '\t' | '\u{0b}' | '\u{0c}' | '\r' | ' ')
}

fn split_ws(s: &str) -> Vec<String> {
    s.split(is_split_space)
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

/// Splits at the first run of `[\t\v\f\r ]`.
fn split_ws_once(s: &str) -> (&str, Option<&str>) {
    match s.find(is_split_space) {
        None => (s, None),
        Some(i) => {
            let rest = s[i..].trim_start_matches(is_split_space);
            (&s[..i], Some(rest))
        }
    }
}

/// Parses Dockerfile bytes. Invalid UTF-8 is replaced (U+FFFD), as it
/// cannot be meaningful in a Dockerfile.
pub fn parse_bytes(src: &[u8]) -> Result<Dockerfile, ParseError> {
    parse(&String::from_utf8_lossy(src))
}

/// Parses a Dockerfile.
pub fn parse(src: &str) -> Result<Dockerfile, ParseError> {
    let mut lines = physical_lines(src).into_iter().peekable();
    let mut d = Directives::new();
    let mut current_line = 0usize;
    let mut nodes = Vec::new();
    let mut warnings = Vec::new();
    let mut comments: Vec<String> = Vec::new();

    while let Some(raw) = lines.next() {
        let raw = raw?;
        let raw = if current_line == 0 {
            raw.strip_prefix('\u{feff}').unwrap_or(raw)
        } else {
            raw
        };
        if is_comment(raw) {
            let comment = raw.trim_start().trim_start_matches('#').trim().to_string();
            if comment.is_empty() {
                comments.clear();
            } else {
                comments.push(comment);
            }
        }
        let line = raw.trim_end_matches(['\r', '\n']).trim_start();
        d.possible_directive(line)
            .map_err(|k| ParseError::at(k, current_line + 1, current_line + 1))?;
        let line = if is_comment(line) { "" } else { line };
        current_line += 1;
        let start_line = current_line;
        let start_col = raw.chars().take_while(|c| c.is_whitespace()).count() + 1;

        let (first, mut end_of_line) = d.trim_continuation(line);
        if end_of_line && first.is_empty() {
            continue;
        }
        let mut buf = first.to_string();
        let mut has_empty_continuation = false;
        while !end_of_line {
            let Some(next) = lines.next() else { break };
            let next = next?;
            let trimmed = next.trim_end_matches(['\r', '\n']);
            d.possible_directive(trimmed)
                .map_err(|k| ParseError::at(k, current_line + 1, current_line + 1))?;
            current_line += 1;
            if is_comment(next) {
                continue;
            }
            if trimmed.trim_start().is_empty() {
                has_empty_continuation = true;
                continue;
            }
            let (cont, eol) = d.trim_continuation(trimmed);
            end_of_line = eol;
            buf.push_str(cont);
        }

        if has_empty_continuation {
            warnings.push(Warning {
                short: format!("Empty continuation line found in: {buf}"),
                detail: "Empty continuation lines will become errors in a future release".into(),
                url: "https://docs.docker.com/go/dockerfile/rule/no-empty-continuation/".into(),
                span: Span::lines(current_line, current_line),
            });
        }

        let mut node = node_from_line(&buf, d.escape, std::mem::take(&mut comments))
            .map_err(|k| ParseError::at(k, start_line, current_line))?;

        if node.can_contain_heredoc() && buf.contains("<<") {
            let heredocs = heredocs_from_line(&buf)
                .map_err(|k| ParseError::at(k, start_line, current_line))?;
            for mut heredoc in heredocs {
                let mut terminated = false;
                for body_line in lines.by_ref() {
                    let body_line = body_line?;
                    current_line += 1;
                    let mut candidate = body_line.trim_end_matches(['\r', '\n']);
                    if heredoc.chomp {
                        candidate = candidate.trim_start_matches('\t');
                    }
                    if candidate == heredoc.name {
                        terminated = true;
                        break;
                    }
                    heredoc.content.push_str(body_line);
                    heredoc.content.push('\n');
                }
                if !terminated {
                    return Err(ParseError::at(
                        ParseErrorKind::UnterminatedHeredoc,
                        start_line,
                        current_line,
                    ));
                }
                node.heredocs.push(heredoc);
            }
        }

        node.span = Span {
            start_line,
            end_line: current_line,
            start_col,
        };
        nodes.push(node);
    }

    let (Some(first), Some(last)) = (nodes.first(), nodes.last()) else {
        return Err(ParseError::at(
            ParseErrorKind::NoInstructions,
            current_line,
            current_line,
        ));
    };
    let span = Span {
        start_line: first.span.start_line,
        end_line: last.span.end_line,
        start_col: 0,
    };
    Ok(Dockerfile {
        nodes,
        directives: d.found,
        escape: d.escape,
        warnings,
        span,
    })
}

/// Splits text into physical lines at `\n` (no empty line after a final
/// newline; a trailing `\r` is kept), enforcing BuildKit's line-length
/// limit.
fn physical_lines(src: &str) -> Vec<Result<&str, ParseError>> {
    let mut out = Vec::new();
    let mut rest = src;
    let mut n = 0;
    while !rest.is_empty() {
        n += 1;
        let (line, next) = match rest.find('\n') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, ""),
        };
        if line.len() > MAX_LINE_LEN {
            out.push(Err(ParseError::at(ParseErrorKind::LineTooLong, n, n)));
            break;
        }
        // A `\r` stays: instruction lines trim it, heredoc bodies keep the
        // file's line endings as BuildKit does.
        out.push(Ok(line));
        rest = next;
    }
    out
}

/// Builds a node from one logical line: keyword, flags, arguments.
fn node_from_line(line: &str, escape: char, comments: Vec<String>) -> Result<Node, ParseErrorKind> {
    let (keyword, rest) = split_ws_once(line.trim());
    let (rest, flags) = match rest {
        Some(rest) => extract_flags(rest),
        None => (String::new(), Vec::new()),
    };
    let rest = rest.trim();
    let mut node = Node {
        keyword: keyword.to_string(),
        original: line.to_string(),
        flags,
        args: Vec::new(),
        sub: None,
        json: false,
        heredocs: Vec::new(),
        span: Span::default(),
        comments,
    };
    match keyword.to_ascii_lowercase().as_str() {
        "add" | "copy" | "volume" => {
            (node.args, node.json) = maybe_json_to_list(rest)?;
        }
        "run" | "cmd" | "entrypoint" | "shell" => {
            (node.args, node.json) = maybe_json(rest)?;
        }
        "from" | "expose" => node.args = split_ws(rest),
        "maintainer" | "user" | "workdir" | "stopsignal" => {
            if !rest.is_empty() {
                node.args = vec![rest.to_string()];
            }
        }
        "env" => node.args = name_val(rest, "ENV", escape)?,
        "label" => node.args = name_val(rest, "LABEL", escape)?,
        "arg" => node.args = parse_words(rest, escape),
        "healthcheck" => {
            let sep = rest.find(char::is_whitespace).unwrap_or(rest.len());
            if sep > 0 {
                let (typ, cmd) = rest.split_at(sep);
                let (args, json) = maybe_json(cmd.trim_start())?;
                node.args = std::iter::once(typ.to_string()).chain(args).collect();
                node.json = json;
            }
        }
        "onbuild" => {
            if !rest.is_empty() {
                node.sub = Some(Box::new(node_from_line(rest, escape, Vec::new())?));
            }
        }
        // Unknown instructions parse; the instruction stage rejects them.
        _ => node.args = vec![String::new()],
    }
    Ok(node)
}

/// Takes leading `--flag` words off `line`, returning the remainder and the
/// flags (quotes removed, escapes applied). A bare `--` ends the flags.
/// BuildKit always uses `\` as the escape here, whatever `# escape=` says.
fn extract_flags(line: &str) -> (String, Vec<String>) {
    let escape = '\\';
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote(char),
    }
    let mut words = Vec::new();
    let mut word = String::new();
    let mut blank_ok = false;
    let mut phase = Phase::Spaces;
    let mut chars = line.char_indices().peekable();
    loop {
        let Some((pos, ch)) = chars.next() else {
            if phase != Phase::Spaces && word != "--" && (blank_ok || !word.is_empty()) {
                words.push(word);
            }
            return (String::new(), words);
        };
        match phase {
            Phase::Spaces => {
                if ch.is_whitespace() {
                    continue;
                }
                if ch != '-' || !line[pos + 1..].starts_with('-') {
                    return (line[pos..].to_string(), words);
                }
                phase = Phase::Word;
                word.push(ch);
            }
            Phase::Word => {
                if ch.is_whitespace() {
                    if word == "--" {
                        return (line[pos..].to_string(), words);
                    }
                    if blank_ok || !word.is_empty() {
                        words.push(std::mem::take(&mut word));
                    }
                    word.clear();
                    blank_ok = false;
                    phase = Phase::Spaces;
                } else if ch == '\'' || ch == '"' {
                    blank_ok = true;
                    phase = Phase::Quote(ch);
                } else if ch == escape {
                    if let Some((_, next)) = chars.next() {
                        word.push(next);
                    }
                } else {
                    word.push(ch);
                }
            }
            Phase::Quote(q) => {
                if ch == q {
                    phase = Phase::Word;
                } else if ch == escape {
                    match chars.next() {
                        Some((_, next)) => word.push(next),
                        None => phase = Phase::Word,
                    }
                } else {
                    word.push(ch);
                }
            }
        }
    }
}

/// Parses `rest` as a JSON array of strings. `Ok(None)` when it is not a
/// JSON array at all (the caller falls back to another form).
fn parse_json_array(rest: &str) -> Result<Option<Vec<String>>, ParseErrorKind> {
    let rest = rest.trim_start();
    if !rest.starts_with('[') {
        return Ok(None);
    }
    let Ok(values) = serde_json::from_str::<Vec<serde_json::Value>>(rest) else {
        return Ok(None);
    };
    values
        .into_iter()
        .map(|v| match v {
            serde_json::Value::String(s) => Ok(s),
            _ => Err(ParseErrorKind::NotStringArray),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// RUN, CMD, ENTRYPOINT, SHELL: JSON array, or the whole text verbatim.
fn maybe_json(rest: &str) -> Result<(Vec<String>, bool), ParseErrorKind> {
    if rest.is_empty() {
        return Ok((Vec::new(), false));
    }
    Ok(match parse_json_array(rest)? {
        Some(args) => (args, true),
        None => (vec![rest.to_string()], false),
    })
}

/// ADD, COPY, VOLUME: JSON array, or whitespace-separated words.
fn maybe_json_to_list(rest: &str) -> Result<(Vec<String>, bool), ParseErrorKind> {
    Ok(match parse_json_array(rest)? {
        Some(args) => (args, true),
        None => (split_ws(rest), false),
    })
}

/// ENV and LABEL: `k=v` words as `k v =` triples, or the legacy `KEY value`
/// form as `KEY value ""`.
fn name_val(rest: &str, instruction: &str, escape: char) -> Result<Vec<String>, ParseErrorKind> {
    let words = parse_words(rest, escape);
    let Some(first) = words.first() else {
        return Ok(Vec::new());
    };
    if !first.contains('=') {
        let (key, value) = split_ws_once(rest);
        return match value {
            Some(value) => Ok(vec![key.to_string(), value.to_string(), String::new()]),
            None => Err(ParseErrorKind::MissingValue(instruction.to_string())),
        };
    }
    let mut args = Vec::with_capacity(words.len() * 3);
    for word in words {
        let Some((k, v)) = word.split_once('=') else {
            return Err(ParseErrorKind::MissingEquals(word));
        };
        args.extend([k.to_string(), v.to_string(), "=".to_string()]);
    }
    Ok(args)
}

/// The quote-aware word splitter used for ARG, ENV and LABEL. Quotes and
/// escape tokens stay in the words; removing them is the shell stage's job.
pub fn parse_words(rest: &str, escape: char) -> Vec<String> {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote(char),
    }
    let mut words = Vec::new();
    let mut word = String::new();
    let mut blank_ok = false;
    let mut phase = Phase::Spaces;
    let mut chars = rest.chars().peekable();
    while let Some(ch) = chars.next() {
        if phase == Phase::Spaces {
            if ch.is_whitespace() {
                continue;
            }
            phase = Phase::Word;
        }
        match phase {
            Phase::Spaces => unreachable!("handled above"),
            Phase::Word => {
                if ch.is_whitespace() {
                    phase = Phase::Spaces;
                    if blank_ok || !word.is_empty() {
                        words.push(std::mem::take(&mut word));
                    }
                    blank_ok = false;
                    continue;
                }
                if ch == '\'' || ch == '"' {
                    blank_ok = true;
                    phase = Phase::Quote(ch);
                }
                if ch == escape {
                    match chars.next() {
                        None => continue, // a trailing escape token is dropped
                        Some(next) => {
                            word.push(ch);
                            word.push(next);
                        }
                    }
                    continue;
                }
                word.push(ch);
            }
            Phase::Quote(q) => {
                if ch == q {
                    phase = Phase::Word;
                }
                if ch == escape && q != '\'' {
                    match chars.next() {
                        None => {
                            phase = Phase::Word;
                            continue;
                        }
                        Some(next) => {
                            word.push(ch);
                            word.push(next);
                        }
                    }
                    continue;
                }
                word.push(ch);
            }
        }
    }
    if phase != Phase::Spaces && (blank_ok || !word.is_empty()) {
        words.push(word);
    }
    words
}

/// Finds the heredocs a RUN/COPY/ADD line opens, in order.
pub fn heredocs_from_line(line: &str) -> Result<Vec<Heredoc>, ParseErrorKind> {
    let words = parse_words(line, '\\');
    let mut docs = Vec::new();
    let mut i = 0;
    while i < words.len() {
        let mut word = words[i].clone();
        // `<< EOF` and `<<- EOF`: the operator and the word are apart.
        if is_bare_heredoc_operator(&word) && i + 1 < words.len() {
            word.push(' ');
            word.push_str(&words[i + 1]);
            i += 1;
        }
        if let Some(doc) = parse_heredoc(&word)? {
            docs.push(doc);
        }
        i += 1;
    }
    Ok(docs)
}

fn is_bare_heredoc_operator(word: &str) -> bool {
    let rest = word.trim_start_matches(|c: char| c.is_ascii_digit());
    rest == "<<" || rest == "<<-"
}

/// Parses one heredoc word (`<<EOF`, `<<-'EOF'`, `3<<EOF`, `<< EOF`).
/// `Ok(None)` when the word is not a heredoc.
pub fn parse_heredoc(src: &str) -> Result<Option<Heredoc>, ParseErrorKind> {
    // ^(\d*)<<(-?)\s*([^<]*)$
    let digits = src.len() - src.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    let (fd, rest) = src.split_at(digits);
    let Some(rest) = rest.strip_prefix("<<") else {
        return Ok(None);
    };
    let (chomp, rest) = match rest.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, rest),
    };
    let rest = rest.trim_start();
    if rest.is_empty() || rest.contains('<') {
        return Ok(None);
    }
    let file_descriptor = if fd.is_empty() {
        0
    } else {
        fd.parse().unwrap_or(u32::MAX)
    };
    let invalid = |reason: &str| ParseErrorKind::InvalidHeredoc {
        word: src.to_string(),
        reason: reason.to_string(),
    };
    let words = parse_words(rest, '\\');
    if words.len() != 1 {
        return Ok(None);
    }
    let name = unquote(&words[0], false).map_err(invalid)?;
    let raw = unquote(&words[0], true).map_err(invalid)?;
    let quotes = |s: &str| s.chars().filter(|&c| c == '\'' || c == '"').count();
    Ok(Some(Heredoc {
        expand: quotes(&name) == quotes(&raw),
        name,
        content: String::new(),
        chomp,
        file_descriptor,
    }))
}

/// Shell quote removal for a heredoc word: `'…'` literal, `"…"` with `\`
/// escapes, `\x` → `x`. With `keep_quotes` the quote characters stay.
fn unquote(word: &str, keep_quotes: bool) -> Result<String, &'static str> {
    let mut out = String::new();
    let mut chars = word.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                if keep_quotes {
                    out.push(c);
                }
                loop {
                    match chars.next() {
                        None => {
                            return Err(
                                "unexpected end of statement while looking for matching single-quote",
                            );
                        }
                        Some('\'') => break,
                        Some(c) => out.push(c),
                    }
                }
                if keep_quotes {
                    out.push(c);
                }
            }
            '"' => {
                if keep_quotes {
                    out.push(c);
                }
                loop {
                    match chars.next() {
                        None => {
                            return Err(
                                "unexpected end of statement while looking for matching double-quote",
                            );
                        }
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(n @ ('"' | '\\' | '$' | '`')) => out.push(n),
                            Some(n) => {
                                out.push('\\');
                                out.push(n);
                            }
                            None => {
                                return Err(
                                    "unexpected end of statement while looking for matching double-quote",
                                );
                            }
                        },
                        Some(c) => out.push(c),
                    }
                }
                if keep_quotes {
                    out.push(c);
                }
            }
            '\\' => {
                if let Some(n) = chars.next() {
                    out.push(n);
                }
            }
            c => out.push(c),
        }
    }
    Ok(out)
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.start_line == self.end_line {
            write!(f, "{}", self.start_line)
        } else {
            write!(f, "{}-{}", self.start_line, self.end_line)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dump(src: &str) -> String {
        parse(src).unwrap().dump()
    }

    #[test]
    fn basic_instructions() {
        assert_eq!(
            dump("FROM busybox AS b\nRUN echo hi\n"),
            "(from \"busybox\" \"AS\" \"b\")\n(run \"echo hi\")\n"
        );
        assert_eq!(dump("CMD [\"a\", \"b\"]"), "(cmd \"a\" \"b\")\n");
        assert_eq!(dump("CMD []"), "(cmd)\n");
        assert_eq!(dump("foo bar"), "(foo \"\")\n");
    }

    #[test]
    fn flags_and_double_dash() {
        assert_eq!(
            dump("COPY --doit=true -- foo /tmp/"),
            "(copy [\"--doit=true\"] \"foo\" \"/tmp/\")\n"
        );
        assert_eq!(
            dump("COPY --a=\"x y\" --b= foo /"),
            "(copy [\"--a=x y\" \"--b=\"] \"foo\" \"/\")\n"
        );
        assert_eq!(
            dump("CMD --doit [ \"a\", \"b\" ]"),
            "(cmd [\"--doit\"] \"a\" \"b\")\n"
        );
    }

    #[test]
    fn env_forms() {
        assert_eq!(
            dump("ENV a=1 b=\"x y\""),
            "(env \"a\" \"1\" \"=\" \"b\" \"\\\"x y\\\"\" \"=\")\n"
        );
        assert_eq!(
            dump("ENV PATH /usr/bin  x"),
            "(env \"PATH\" \"/usr/bin  x\" \"\")\n"
        );
        let err = parse("ENV PATH").unwrap_err();
        assert_eq!(err.to_string(), "ENV must have two arguments");
        assert_eq!(err.span.start_line, 1);
        let err = parse("LABEL a=b c").unwrap_err();
        assert_eq!(
            err.to_string(),
            "Syntax error - can't find = in \"c\". Must be of the form: name=value"
        );
    }

    #[test]
    fn continuation_and_comments() {
        let df = parse("RUN a \\\n# comment\n\n  b\nRUN c\\\n").unwrap();
        assert_eq!(df.nodes[0].args, vec!["a   b"]);
        assert_eq!(
            df.nodes[0].span,
            Span {
                start_line: 1,
                end_line: 4,
                start_col: 1
            }
        );
        assert_eq!(df.nodes[1].args, vec!["c"]);
        assert_eq!(df.warnings.len(), 1);
    }

    #[test]
    fn escape_directive() {
        let df = parse("# escape=`\nRUN a `\n b\nCOPY c\\d e").unwrap();
        assert_eq!(df.escape, '`');
        assert_eq!(df.nodes[0].args, vec!["a  b"]);
        assert_eq!(df.nodes[1].args, vec!["c\\d", "e"]);
        assert!(parse("# escape=x\nFROM a").is_err());
        assert!(parse("# escape=`\n# escape=`\nFROM a").is_err());
        // A directive after an instruction is only a comment.
        let df = parse("FROM a\n# escape=`\nRUN b\\\n c").unwrap();
        assert_eq!(df.escape, '\\');
    }

    #[test]
    fn crlf_heredoc_keeps_line_endings() {
        let df = parse("FROM a\r\nCOPY <<EOF /f\r\nline\r\nEOF\r\n").unwrap();
        assert_eq!(df.nodes[1].heredocs[0].content, "line\r\n");
    }

    #[test]
    fn crlf_and_bom() {
        let df = parse("\u{feff}FROM a\r\nRUN b \\\r\n c\r\n").unwrap();
        assert_eq!(df.nodes[0].args, vec!["a"]);
        assert_eq!(df.nodes[1].args, vec!["b  c"]);
    }

    #[test]
    fn heredocs() {
        let df = parse(
            "FROM a\nRUN <<EOF <<-'END'\necho $x\nEOF\n\tliteral\n\tEND\nCOPY <<f1 /d\nx\nf1\n",
        )
        .unwrap();
        let run = &df.nodes[1];
        assert_eq!(run.heredocs.len(), 2);
        assert_eq!(run.heredocs[0].content, "echo $x\n");
        assert!(run.heredocs[0].expand);
        assert_eq!(run.heredocs[1].name, "END");
        assert!(!run.heredocs[1].expand && run.heredocs[1].chomp);
        assert_eq!(run.heredocs[1].chomped_content(), "literal\n");
        assert_eq!(
            run.span,
            Span {
                start_line: 2,
                end_line: 6,
                start_col: 1
            }
        );
        assert_eq!(df.nodes[2].heredocs[0].content, "x\n");
        let err = parse("FROM a\nRUN <<EOF\nno end").unwrap_err();
        assert_eq!(err.kind, ParseErrorKind::UnterminatedHeredoc);
        // JSON form never has heredocs.
        assert!(
            parse("RUN [\"<<EOF\"]").unwrap().nodes[0]
                .heredocs
                .is_empty()
        );
    }

    #[test]
    fn heredoc_words() {
        for w in [
            "<<EOF",
            "<<'EOF'",
            "<<\"EOF\"",
            "<<-EOF",
            "<<EO\"F\"",
            "<< EOF",
            "<<- EOF",
        ] {
            assert_eq!(parse_heredoc(w).unwrap().unwrap().name, "EOF", "{w}");
        }
        for w in ["<<'EOF", "<<\"EOF", "<<EOF'", "<<EOF\""] {
            assert!(parse_heredoc(w).is_err(), "{w}");
        }
        for w in ["", "EOF", "<<", "<<-", "<EOF", "<<<EOF", "<<EOF sh"] {
            assert_eq!(parse_heredoc(w).unwrap(), None, "{w}");
        }
    }

    #[test]
    fn onbuild_nests() {
        assert_eq!(
            dump("ONBUILD RUN [\"echo\", \"test\"]"),
            "(onbuild (run \"echo\" \"test\"))\n"
        );
        let df = parse("ONBUILD COPY <<EOF /x\nhi\nEOF\n").unwrap();
        assert_eq!(df.nodes[0].heredocs.len(), 1);
    }

    #[test]
    fn errors() {
        assert_eq!(parse("").unwrap_err().kind, ParseErrorKind::NoInstructions);
        assert_eq!(
            parse("# just\n\n# comments\n").unwrap_err().kind,
            ParseErrorKind::NoInstructions
        );
        assert_eq!(
            parse("RUN [\"a\", 1]").unwrap_err().kind,
            ParseErrorKind::NotStringArray
        );
        let long = format!("FROM a\nLABEL x={}\n", "a".repeat(70000));
        assert_eq!(parse(&long).unwrap_err().kind, ParseErrorKind::LineTooLong);
        // Invalid JSON falls back to the shell form.
        assert_eq!(dump("RUN [ '/bin/sh' ]"), "(run \"[ '/bin/sh' ]\")\n");
    }

    #[test]
    fn words() {
        assert_eq!(
            parse_words("foo bar 'abc xyz'", '\\'),
            vec!["foo", "bar", "'abc xyz'"]
        );
        assert_eq!(parse_words("foo\\ bar", '\\'), vec!["foo\\ bar"]);
        assert_eq!(parse_words("a\\", '\\'), vec!["a"]);
        assert_eq!(parse_words("x=\"\"", '\\'), vec!["x=\"\""]);
    }

    #[test]
    fn directives_are_recorded() {
        let df = parse("# syntax=docker/dockerfile:1\n# check=skip=all\nFROM a").unwrap();
        assert_eq!(df.directive("syntax"), Some("docker/dockerfile:1"));
        assert_eq!(df.directive("check"), Some("skip=all"));
        let df = parse("#!/bin/kiln\n# syntax=x\nFROM a").unwrap();
        assert_eq!(df.directives[0].line, 2);
    }
}
