//! Shell-word expansion for Dockerfile instruction arguments, with the
//! semantics of BuildKit's `frontend/dockerfile/shell` lexer.
//!
//! Owns: quote removal, escape handling, `$VAR` / `${VAR...}` expansion,
//! field splitting of unquoted expansion results, and reporting which
//! variables a word referenced (for the `UndefinedVar` check and for
//! deciding which build arguments a stage uses).
//!
//! Must not: run commands, glob files, or know which instruction a word
//! belongs to. Callers decide which instructions expand and with which
//! environment.
//!
//! # What is supported
//!
//! | Form | Result |
//! |------|--------|
//! | `$V`, `${V}` | the value, or empty when unset |
//! | `${V:-w}` / `${V-w}` | `w` when `V` is unset or empty / unset |
//! | `${V:+w}` / `${V+w}` | `w` when `V` is set and not empty / set |
//! | `${V:?m}` / `${V?m}` | error `V: m` when `V` is unset or empty / unset |
//! | `${V#p}` / `${V##p}` | remove the shortest / longest prefix matching `p` |
//! | `${V%p}` / `${V%%p}` | remove the shortest / longest suffix matching `p` |
//! | `${V/p/r}` / `${V//p/r}` | replace the first / every match of `p` with `r` |
//!
//! Positional and special parameters (`$1`, `$@`, `$$`, `$?`, ...) are
//! looked up like any other name, so they expand to empty. A `$` that does
//! not start a name stays literal (`$.` is `$.`).
//!
//! # Where BuildKit differs from a POSIX shell (and kiln follows BuildKit)
//!
//! - Patterns know only `*`, `?` and `\` escapes (`\*`, `\?`, `\\`, and
//!   `\}` / `\/` to protect the delimiters). `[` is a literal character,
//!   and any other `\x` is an invalid pattern. `*` and `?` never match a
//!   newline. Quoting does not make a pattern literal, and a pattern that
//!   comes from a variable is still a pattern.
//! - In patterns and replacements the escape token is kept, so the
//!   replacement in `${V//\//\/}` is `\/`.
//! - In the replacement of `${V//p/r}`, `$$` is `$` and `$0` / `${0}` is
//!   the matched text; any other `$name` or `${name}` is empty (BuildKit
//!   runs it through Go's `Regexp.ReplaceAllString`). `${V/p/r}` inserts
//!   `r` literally.
//! - Field splitting happens only in [`Lexer::process_words`]; a word made
//!   only of empty quotes (`""`) yields no field.
//! - A byte-order mark at the very start of a word is dropped.
//!
//! # Where kiln differs from BuildKit
//!
//! - `${` nested more than [`MAX_NESTING`] levels deep is an error instead
//!   of unbounded recursion.
//! - `${V` at the end of the word reports `missing '}'` (BuildKit reports
//!   an unsupported modifier `�`).
//! - With [`Lexer::skip_unset_env`], an unset `${V//p/r}` is kept as
//!   `${V//p/r}` (BuildKit drops one `/`).
//! - [`Lexer::process_words`] keeps the text before a nested `${V:-...}`
//!   in the same field; current BuildKit shares one buffer between nesting
//!   levels and loses it.

use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{BuildHasher, Hash};
use std::sync::LazyLock;

use regex::Regex;

use crate::quote::go_quote;

/// How deeply `${...}` may nest inside the word of another `${...}`.
pub const MAX_NESTING: usize = 64;

/// The variables a word is expanded against.
///
/// `keys` lists every name that is set, for "did you mean" suggestions
/// next to an undefined-variable warning.
pub trait Env {
    /// The value of `name`, or `None` when it is unset. Set-but-empty is
    /// `Some("")`, which `${V-w}` and `${V:-w}` tell apart.
    fn get(&self, name: &str) -> Option<String>;
    /// Every set name, each once.
    fn keys(&self) -> Vec<String>;
}

impl<E: Env + ?Sized> Env for &E {
    fn get(&self, name: &str) -> Option<String> {
        (**self).get(name)
    }
    fn keys(&self) -> Vec<String> {
        (**self).keys()
    }
}

/// An ordered list of `(name, value)` pairs, like a Dockerfile's `ENV` and
/// `ARG` history: a later entry with the same name wins.
impl<K: AsRef<str>, V: AsRef<str>> Env for [(K, V)] {
    fn get(&self, name: &str) -> Option<String> {
        self.iter()
            .rev()
            .find(|(k, _)| k.as_ref() == name)
            .map(|(_, v)| v.as_ref().to_owned())
    }
    fn keys(&self) -> Vec<String> {
        let mut seen = BTreeSet::new();
        self.iter()
            .map(|(k, _)| k.as_ref())
            .filter(|k| seen.insert(*k))
            .map(str::to_owned)
            .collect()
    }
}

impl<K: AsRef<str>, V: AsRef<str>> Env for Vec<(K, V)> {
    fn get(&self, name: &str) -> Option<String> {
        Env::get(self.as_slice(), name)
    }
    fn keys(&self) -> Vec<String> {
        Env::keys(self.as_slice())
    }
}

impl<K: AsRef<str>, V: AsRef<str>, const N: usize> Env for [(K, V); N] {
    fn get(&self, name: &str) -> Option<String> {
        Env::get(self.as_slice(), name)
    }
    fn keys(&self) -> Vec<String> {
        Env::keys(self.as_slice())
    }
}

impl<K, V, S> Env for HashMap<K, V, S>
where
    K: Borrow<str> + Hash + Eq,
    V: AsRef<str>,
    S: BuildHasher,
{
    fn get(&self, name: &str) -> Option<String> {
        HashMap::get(self, name).map(|v| v.as_ref().to_owned())
    }
    /// Sorted, so suggestions do not depend on the hasher.
    fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = HashMap::keys(self).map(|k| k.borrow().to_owned()).collect();
        keys.sort();
        keys
    }
}

impl<K, V> Env for BTreeMap<K, V>
where
    K: Borrow<str> + Ord,
    V: AsRef<str>,
{
    fn get(&self, name: &str) -> Option<String> {
        BTreeMap::get(self, name).map(|v| v.as_ref().to_owned())
    }
    fn keys(&self) -> Vec<String> {
        BTreeMap::keys(self)
            .map(|k| k.borrow().to_owned())
            .collect()
    }
}

/// Everything one expansion produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessWordResult {
    /// The word with quotes removed and variables expanded, unsplit.
    pub result: String,
    /// The same, split into fields (see [`Lexer::process_words`]).
    pub words: Vec<String>,
    /// Names that were referenced and set (even when set to empty).
    pub matched: BTreeSet<String>,
    /// Names that were referenced but unset.
    pub unmatched: BTreeSet<String>,
}

/// A word that could not be expanded. The cause is the [`source`]
/// (`ShellErrorKind`); printed as a chain it reads like BuildKit:
/// `failed to process "he${PWD": syntax error: missing '}'`.
///
/// [`source`]: std::error::Error::source
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("failed to process {}", go_quote(.word))]
pub struct ShellError {
    word: String,
    #[source]
    kind: ShellErrorKind,
}

impl ShellError {
    /// The word as it was passed in.
    pub fn word(&self) -> &str {
        &self.word
    }

    /// What went wrong.
    pub fn kind(&self) -> &ShellErrorKind {
        &self.kind
    }
}

/// Why a word could not be expanded. The messages are BuildKit's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ShellErrorKind {
    #[error("unexpected end of statement while looking for matching single-quote")]
    UnterminatedSingleQuote,
    #[error("unexpected end of statement while looking for matching double-quote")]
    UnterminatedDoubleQuote,
    /// `${` without its closing brace.
    #[error("syntax error: missing '}}'")]
    MissingBrace,
    /// `${V/pattern` without the `/` that ends the pattern.
    #[error("syntax error: missing '/' in ${{}}")]
    MissingSlash,
    /// `${}`, `${:...}` or `${{...}`.
    #[error("syntax error: bad substitution")]
    BadSubstitution,
    /// `${V=w}`, `${V:=w}`, `${V:#p}`, `${V.}` and every other operator
    /// that is not in the table above. `modifier` includes the `:`.
    #[error("unsupported modifier ({modifier}) in substitution")]
    UnsupportedModifier { modifier: String },
    /// `${V?m}` or `${V:?m}` with `V` unset.
    #[error("{name}: {}", .message.as_deref().unwrap_or("is not allowed to be unset"))]
    RequiredUnset {
        name: String,
        message: Option<String>,
    },
    /// `${V:?m}` with `V` set to the empty string.
    #[error("{name}: {}", .message.as_deref().unwrap_or("is not allowed to be empty"))]
    RequiredEmpty {
        name: String,
        message: Option<String>,
    },
    /// The pattern of `#`, `%` or `/` is not valid.
    #[error("invalid pattern ({pattern}) in substitution")]
    InvalidPattern {
        pattern: String,
        #[source]
        source: PatternError,
    },
    #[error("substitutions are nested more than {limit} levels deep")]
    TooDeep { limit: usize },
}

/// Why a `#`, `%` or `/` pattern is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PatternError {
    /// Only `\*`, `\?`, `\\`, `\}` and `\/` are escapes.
    #[error("invalid escape '\\{0}'")]
    InvalidEscape(char),
    #[error("invalid escape '\\' at the end of the pattern")]
    TrailingEscape,
    /// The pattern compiled to a matcher beyond the size limit.
    #[error("{0}")]
    TooLarge(String),
}

/// Expands shell words the way BuildKit's Dockerfile frontend does.
///
/// ```
/// use kiln_frontend::shell::Lexer;
///
/// let env = vec![("NAME".to_string(), "kiln app".to_string())];
/// let lex = Lexer::new('\\');
/// assert_eq!(lex.process_word("/opt/${NAME// /-}", &env).unwrap(), "/opt/kiln-app");
/// assert_eq!(lex.process_words("a $NAME 'b c'", &env).unwrap(), ["a", "kiln", "app", "b c"]);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lexer {
    /// The escape token: `\` by default, `` ` `` after a `# escape=`` ` ``
    /// directive.
    pub escape: char,
    /// Keep the quote characters in the result (quotes still group).
    pub raw_quotes: bool,
    /// Keep the escape token in the result (it still escapes).
    pub raw_escapes: bool,
    /// Treat `'` and `"` as ordinary characters.
    pub skip_process_quotes: bool,
    /// Leave references to unset variables as they were written
    /// (`$V`, `${V}`, `${V:-w}` with `w` expanded), instead of expanding
    /// them to empty or failing on `${V?m}`.
    pub skip_unset_env: bool,
}

impl Default for Lexer {
    fn default() -> Self {
        Lexer::new('\\')
    }
}

impl Lexer {
    /// A lexer with the given escape token and every option off.
    pub const fn new(escape: char) -> Self {
        Lexer {
            escape,
            raw_quotes: false,
            raw_escapes: false,
            skip_process_quotes: false,
            skip_unset_env: false,
        }
    }

    /// Expands `word` into one string: quotes removed, variables expanded,
    /// no field splitting.
    pub fn process_word(&self, word: &str, env: &dyn Env) -> Result<String, ShellError> {
        self.process(word, env).map(|r| r.result)
    }

    /// Expands `word` and splits it into fields. Unquoted whitespace, and
    /// whitespace in the results of unquoted expansions, separates fields;
    /// whitespace from quotes or escapes does not. Empty fields are dropped.
    pub fn process_words(&self, word: &str, env: &dyn Env) -> Result<Vec<String>, ShellError> {
        self.process(word, env).map(|r| r.words)
    }

    /// Expands `word` and reports which variables it referenced.
    pub fn process_word_with_matches(
        &self,
        word: &str,
        env: &dyn Env,
    ) -> Result<ProcessWordResult, ShellError> {
        self.process(word, env)
    }

    fn process(&self, word: &str, env: &dyn Env) -> Result<ProcessWordResult, ShellError> {
        let mut expander = Expander::new(self, word, env);
        match expander.stop_on(None, self.raw_escapes) {
            Ok((result, fields)) => Ok(ProcessWordResult {
                result,
                words: fields.finish(),
                matched: expander.matched,
                unmatched: expander.unmatched,
            }),
            Err(kind) => Err(ShellError {
                word: word.to_owned(),
                kind,
            }),
        }
    }
}

/// Fields being split out of the top-level word.
#[derive(Default)]
struct Fields {
    done: Vec<String>,
    current: String,
}

impl Fields {
    /// A character subject to splitting.
    fn add_char(&mut self, ch: char) {
        if !ch.is_whitespace() {
            self.current.push(ch);
        } else if !self.current.is_empty() {
            self.done.push(std::mem::take(&mut self.current));
        }
    }

    fn add_str(&mut self, s: &str) {
        s.chars().for_each(|c| self.add_char(c));
    }

    /// Text that was quoted or escaped: never splits.
    fn add_raw_char(&mut self, ch: char) {
        self.current.push(ch);
    }

    fn add_raw_str(&mut self, s: &str) {
        self.current.push_str(s);
    }

    fn finish(mut self) -> Vec<String> {
        if !self.current.is_empty() {
            self.done.push(self.current);
        }
        self.done
    }
}

/// The state of one expansion: a cursor over the word's characters.
struct Expander<'a> {
    lexer: &'a Lexer,
    env: &'a dyn Env,
    chars: Vec<char>,
    pos: usize,
    raw_escapes: bool,
    depth: usize,
    matched: BTreeSet<String>,
    unmatched: BTreeSet<String>,
}

impl<'a> Expander<'a> {
    fn new(lexer: &'a Lexer, word: &str, env: &'a dyn Env) -> Self {
        // Go's text/scanner skips a byte-order mark at the start.
        let word = word.strip_prefix('\u{feff}').unwrap_or(word);
        Expander {
            lexer,
            env,
            chars: word.chars().collect(),
            pos: 0,
            raw_escapes: lexer.raw_escapes,
            depth: 0,
            matched: BTreeSet::new(),
            unmatched: BTreeSet::new(),
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let ch = self.peek();
        if ch.is_some() {
            self.pos += 1;
        }
        ch
    }

    fn at_end(&self) -> bool {
        self.pos >= self.chars.len()
    }

    /// Looks `name` up and records it as matched or unmatched.
    fn lookup(&mut self, name: &str) -> Option<String> {
        let value = self.env.get(name);
        let seen = if value.is_some() {
            &mut self.matched
        } else {
            &mut self.unmatched
        };
        if !seen.contains(name) {
            seen.insert(name.to_owned());
        }
        value
    }

    /// Processes text up to `stop` (consumed) or the end of the word, with
    /// escape tokens kept in the result when `raw_escapes`.
    fn stop_on(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
    ) -> Result<(String, Fields), ShellErrorKind> {
        let saved = std::mem::replace(&mut self.raw_escapes, raw_escapes);
        let result = self.stop_on_inner(stop);
        self.raw_escapes = saved;
        result
    }

    fn stop_on_inner(&mut self, stop: Option<char>) -> Result<(String, Fields), ShellErrorKind> {
        let mut result = String::new();
        let mut fields = Fields::default();
        let quotes = !self.lexer.skip_process_quotes;
        while let Some(ch) = self.peek() {
            if Some(ch) == stop {
                self.pos += 1;
                return Ok((result, fields));
            }
            match ch {
                '$' => {
                    let value = self.dollar()?;
                    fields.add_str(&value);
                    result.push_str(&value);
                }
                '\'' if quotes => {
                    let value = self.single_quote()?;
                    fields.add_raw_str(&value);
                    result.push_str(&value);
                }
                '"' if quotes => {
                    let value = self.double_quote()?;
                    fields.add_raw_str(&value);
                    result.push_str(&value);
                }
                _ => {
                    self.pos += 1;
                    if ch != self.lexer.escape {
                        fields.add_char(ch);
                        result.push(ch);
                        continue;
                    }
                    if self.raw_escapes {
                        fields.add_raw_char(ch);
                        result.push(ch);
                    }
                    // A trailing escape token is dropped.
                    let Some(escaped) = self.bump() else { break };
                    fields.add_raw_char(escaped);
                    result.push(escaped);
                }
            }
        }
        match stop {
            None => Ok((result, fields)),
            Some('/') => Err(ShellErrorKind::MissingSlash),
            Some(_) => Err(ShellErrorKind::MissingBrace),
        }
    }

    /// Everything up to the closing `}` of a `${...}`. Like BuildKit, any
    /// failure that ran to the end of the word is reported as the missing
    /// brace.
    fn brace_word(&mut self, raw_escapes: bool) -> Result<String, ShellErrorKind> {
        self.stop_on(Some('}'), raw_escapes)
            .map(|(word, _)| word)
            .map_err(|e| self.at_end_error(e, ShellErrorKind::MissingBrace))
    }

    fn at_end_error(&self, error: ShellErrorKind, at_end: ShellErrorKind) -> ShellErrorKind {
        if self.at_end() && !matches!(error, ShellErrorKind::TooDeep { .. }) {
            at_end
        } else {
            error
        }
    }

    /// `'...'`: everything literal up to the next `'`.
    fn single_quote(&mut self) -> Result<String, ShellErrorKind> {
        self.pos += 1;
        let mut result = String::new();
        if self.lexer.raw_quotes {
            result.push('\'');
        }
        loop {
            match self.bump() {
                None => return Err(ShellErrorKind::UnterminatedSingleQuote),
                Some('\'') => {
                    if self.lexer.raw_quotes {
                        result.push('\'');
                    }
                    return Ok(result);
                }
                Some(ch) => result.push(ch),
            }
        }
    }

    /// `"..."`: `$` expands; the escape token escapes only `"`, `$` and
    /// itself and is otherwise literal.
    fn double_quote(&mut self) -> Result<String, ShellErrorKind> {
        self.pos += 1;
        let mut result = String::new();
        if self.lexer.raw_quotes {
            result.push('"');
        }
        loop {
            match self.peek() {
                None => return Err(ShellErrorKind::UnterminatedDoubleQuote),
                Some('"') => {
                    self.pos += 1;
                    if self.lexer.raw_quotes {
                        result.push('"');
                    }
                    return Ok(result);
                }
                Some('$') => {
                    let value = self.dollar()?;
                    result.push_str(&value);
                }
                Some(ch) => {
                    self.pos += 1;
                    let escape = self.lexer.escape;
                    if ch != escape {
                        result.push(ch);
                        continue;
                    }
                    if self.raw_escapes {
                        result.push(ch);
                    }
                    match self.peek() {
                        // Dropped; the missing quote is reported next.
                        None => {}
                        Some(next) if next == '"' || next == '$' || next == escape => {
                            self.pos += 1;
                            result.push(next);
                        }
                        Some(_) => result.push(ch),
                    }
                }
            }
        }
    }

    /// `$name`, `${...}`, or a literal `$`. The cursor is on the `$`.
    fn dollar(&mut self) -> Result<String, ShellErrorKind> {
        self.pos += 1;
        if self.peek() != Some('{') {
            let name = self.name();
            if name.is_empty() {
                return Ok("$".to_owned());
            }
            return Ok(match self.lookup(&name) {
                Some(value) => value,
                None if self.lexer.skip_unset_env => format!("${name}"),
                None => String::new(),
            });
        }
        self.pos += 1;
        match self.peek() {
            None => return Err(ShellErrorKind::MissingBrace),
            Some('{' | '}' | ':') => return Err(ShellErrorKind::BadSubstitution),
            Some(_) => {}
        }
        if self.depth >= MAX_NESTING {
            return Err(ShellErrorKind::TooDeep { limit: MAX_NESTING });
        }
        self.depth += 1;
        let result = self.braced();
        self.depth -= 1;
        result
    }

    /// The inside of `${...}`, after the `{`.
    fn braced(&mut self) -> Result<String, ShellErrorKind> {
        let name = self.name();
        let Some(ch) = self.bump() else {
            return Err(ShellErrorKind::MissingBrace);
        };
        match ch {
            '}' => Ok(match self.lookup(&name) {
                Some(value) => value,
                None if self.lexer.skip_unset_env => format!("${{{name}}}"),
                None => String::new(),
            }),
            ':' | '+' | '-' | '?' | '#' | '%' => self.modifier(&name, ch),
            '/' => self.substitution(&name),
            other => Err(ShellErrorKind::UnsupportedModifier {
                modifier: other.to_string(),
            }),
        }
    }

    /// `${name<op>word}` where `first` is the character after the name.
    fn modifier(&mut self, name: &str, first: char) -> Result<String, ShellErrorKind> {
        let null_is_unset = first == ':';
        let op = if null_is_unset {
            // BuildKit reads whatever follows the `:` as the operator and
            // rejects it only after reading the word.
            self.bump().ok_or(ShellErrorKind::MissingBrace)?
        } else {
            first
        };
        let modifier = if null_is_unset {
            format!(":{op}")
        } else {
            op.to_string()
        };
        let is_pattern = op == '#' || op == '%';
        if null_is_unset && is_pattern {
            return Err(ShellErrorKind::UnsupportedModifier { modifier });
        }

        let word = self.brace_word(is_pattern)?;
        let value = self.lookup(name);
        if value.is_none() && self.lexer.skip_unset_env {
            return Ok(format!("${{{name}{modifier}{word}}}"));
        }
        let set = value.is_some();
        let value = value.unwrap_or_default();
        let use_word = !set || (null_is_unset && value.is_empty());
        match op {
            '-' => Ok(if use_word { word } else { value }),
            '+' => Ok(if use_word { String::new() } else { word }),
            '?' if !set => Err(ShellErrorKind::RequiredUnset {
                name: name.to_owned(),
                message: non_empty(word),
            }),
            '?' if use_word => Err(ShellErrorKind::RequiredEmpty {
                name: name.to_owned(),
                message: non_empty(word),
            }),
            '?' => Ok(value),
            // An unset variable is trimmed as the empty string, so an
            // invalid pattern is reported either way.
            '#' | '%' => {
                let (pattern, longest) = match word.strip_prefix(op) {
                    Some(rest) => (rest, true),
                    None => (word.as_str(), false),
                };
                if op == '#' {
                    trim_prefix(pattern, &value, longest)
                } else {
                    trim_suffix(pattern, &value, longest)
                }
            }
            _ => Err(ShellErrorKind::UnsupportedModifier { modifier }),
        }
    }

    /// `${name/pattern/replacement}` or `${name//pattern/replacement}`,
    /// after the first `/`.
    fn substitution(&mut self, name: &str) -> Result<String, ShellErrorKind> {
        let all = self.peek() == Some('/');
        if all {
            self.pos += 1;
        }
        let pattern = self
            .stop_on(Some('/'), true)
            .map(|(word, _)| word)
            .map_err(|e| self.at_end_error(e, ShellErrorKind::MissingSlash))?;
        let replacement = self.brace_word(true)?;
        let value = self.lookup(name);
        if value.is_none() && self.lexer.skip_unset_env {
            let slashes = if all { "//" } else { "/" };
            return Ok(format!("${{{name}{slashes}{pattern}/{replacement}}}"));
        }
        // Unset is the empty string here; an empty pattern still matches it.
        substitute(&pattern, &value.unwrap_or_default(), &replacement, all)
    }

    /// A parameter name: a run of digits, one special-parameter character,
    /// or a run of letters, digits and `_`. Empty when none starts here.
    fn name(&mut self) -> String {
        let mut name = String::new();
        while let Some(ch) = self.peek() {
            if name.is_empty() && is_digit(ch) {
                while let Some(digit) = self.peek().filter(|c| is_digit(*c)) {
                    name.push(digit);
                    self.pos += 1;
                }
                return name;
            }
            if name.is_empty() && is_special_param(ch) {
                self.pos += 1;
                name.push(ch);
                return name;
            }
            if !is_name_char(ch) {
                break;
            }
            name.push(ch);
            self.pos += 1;
        }
        name
    }
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// POSIX special parameters. `0` is here too but digits are read first.
fn is_special_param(ch: char) -> bool {
    matches!(ch, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0')
}

/// Unicode general categories L and Nd, as Go's `unicode.IsLetter` and
/// `unicode.IsDigit` see them. Rust's `is_alphabetic` and `is_numeric` are
/// wider (they include combining marks, `²`, `Ⅻ`).
static LETTER: LazyLock<Option<Regex>> = LazyLock::new(|| Regex::new(r"\A\p{L}\z").ok());
static DIGIT: LazyLock<Option<Regex>> = LazyLock::new(|| Regex::new(r"\A\p{Nd}\z").ok());

fn in_class(class: &LazyLock<Option<Regex>>, ch: char, fallback: fn(char) -> bool) -> bool {
    match class.as_ref() {
        Some(re) => re.is_match(ch.encode_utf8(&mut [0; 4])),
        None => fallback(ch),
    }
}

fn is_digit(ch: char) -> bool {
    match ch {
        '0'..='9' => true,
        '\0'..='\u{ff}' => false,
        _ => in_class(&DIGIT, ch, char::is_numeric),
    }
}

fn is_letter(ch: char) -> bool {
    match ch {
        'a'..='z' | 'A'..='Z' => true,
        '\0'..='\u{7f}' => false,
        _ => in_class(&LETTER, ch, char::is_alphabetic),
    }
}

fn is_name_char(ch: char) -> bool {
    ch == '_' || is_letter(ch) || is_digit(ch)
}

/// Compiles a `#`/`%`/`/` pattern. `*` is shortest-first unless `longest`;
/// `anchored` matches only at the start of the value.
fn compile_pattern(pattern: &str, longest: bool, anchored: bool) -> Result<Regex, ShellErrorKind> {
    pattern_regex(pattern, longest, anchored).map_err(|source| ShellErrorKind::InvalidPattern {
        pattern: pattern.to_owned(),
        source,
    })
}

fn pattern_regex(pattern: &str, longest: bool, anchored: bool) -> Result<Regex, PatternError> {
    let mut re = String::with_capacity(pattern.len() + 8);
    if anchored {
        re.push_str(r"\A");
    }
    let mut chars = pattern.chars().peekable();
    while let Some(ch) = chars.next() {
        match ch {
            '*' => re.push_str(if longest { ".*" } else { ".*?" }),
            '?' => re.push('.'),
            '\\' => {
                // `\}` and `\/` only protected the delimiter from the
                // `${...}` parser: the character is a plain literal.
                if matches!(chars.peek(), Some('}' | '/')) {
                    continue;
                }
                match chars.next() {
                    Some(lit @ ('*' | '?' | '\\')) => push_literal(&mut re, lit),
                    Some(other) => return Err(PatternError::InvalidEscape(other)),
                    None => return Err(PatternError::TrailingEscape),
                }
            }
            lit => push_literal(&mut re, lit),
        }
    }
    Regex::new(&re).map_err(|e| PatternError::TooLarge(e.to_string()))
}

fn push_literal(re: &mut String, ch: char) {
    re.push_str(&regex::escape(ch.encode_utf8(&mut [0; 4])));
}

/// `${V#p}` and `${V##p}`.
fn trim_prefix(pattern: &str, value: &str, longest: bool) -> Result<String, ShellErrorKind> {
    let re = compile_pattern(pattern, longest, true)?;
    Ok(match re.find(value) {
        Some(m) => value[m.end()..].to_owned(),
        None => value.to_owned(),
    })
}

/// `${V%p}` and `${V%%p}`: a prefix trim of the reversed value with the
/// reversed pattern, which finds the shortest suffix the way BuildKit does.
fn trim_suffix(pattern: &str, value: &str, longest: bool) -> Result<String, ShellErrorKind> {
    let reversed_pattern = reverse_pattern(pattern);
    let re = pattern_regex(&reversed_pattern, longest, true).map_err(|source| {
        ShellErrorKind::InvalidPattern {
            pattern: pattern.to_owned(),
            source,
        }
    })?;
    let reversed: String = value.chars().rev().collect();
    let kept = match re.find(&reversed) {
        Some(m) => &reversed[m.end()..],
        None => &reversed,
    };
    Ok(kept.chars().rev().collect())
}

/// Reverses a pattern while keeping each `\x` escape pair in order
/// (`a\*c` becomes `c\*a`). A lone `\` at the end stays a single unit.
fn reverse_pattern(pattern: &str) -> String {
    let chars: Vec<char> = pattern.chars().collect();
    let mut units: Vec<&[char]> = Vec::with_capacity(chars.len());
    let mut i = 0;
    while i < chars.len() {
        let len = if chars[i] == '\\' && i + 1 < chars.len() {
            2
        } else {
            1
        };
        units.push(&chars[i..i + len]);
        i += len;
    }
    units.iter().rev().flat_map(|unit| unit.iter()).collect()
}

/// `${V/p/r}` (first match, `r` literal) and `${V//p/r}` (every match, `r`
/// as a Go replacement template). Matches are leftmost, `*` longest.
fn substitute(
    pattern: &str,
    value: &str,
    replacement: &str,
    all: bool,
) -> Result<String, ShellErrorKind> {
    let re = compile_pattern(pattern, true, false)?;
    if !all {
        return Ok(match re.find(value) {
            Some(m) => [&value[..m.start()], replacement, &value[m.end()..]].concat(),
            None => value.to_owned(),
        });
    }
    Ok(replace_all(&re, value, replacement))
}

/// Go's `Regexp.ReplaceAllString`: an empty match right after a previous
/// match is skipped, and the search always advances by at least one
/// character.
fn replace_all(re: &Regex, value: &str, template: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut last_end = 0;
    let mut search = 0;
    while search <= value.len() {
        let Some(m) = re.find_at(value, search) else {
            break;
        };
        out.push_str(&value[last_end..m.start()]);
        if m.end() > last_end || m.start() == 0 {
            expand_template(&mut out, template, m.as_str());
        }
        last_end = m.end();
        let width = value[search..].chars().next().map_or(0, char::len_utf8);
        search = if search + width > m.end() {
            search + width
        } else if search + 1 > m.end() {
            // Only at the end of the value, where `width` is 0.
            search + 1
        } else {
            m.end()
        };
    }
    out.push_str(&value[last_end..]);
    out
}

/// Go's `Regexp.Expand` for a pattern without groups: `$$` is `$`, `$0` and
/// `${0}` are the match, any other `$name` / `${name}` is empty, and a `$`
/// that starts no name is literal.
fn expand_template(out: &mut String, template: &str, matched: &str) {
    let mut rest = template;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        rest = &rest[dollar + 1..];
        if let Some(after) = rest.strip_prefix('$') {
            out.push('$');
            rest = after;
            continue;
        }
        match template_name(rest) {
            Some((name, after)) => {
                if name == "0" {
                    out.push_str(matched);
                }
                rest = after;
            }
            None => out.push('$'),
        }
    }
    out.push_str(rest);
}

/// The `name` or `{name}` at the start of `s`, and what follows it.
fn template_name(s: &str) -> Option<(&str, &str)> {
    let (braced, body) = match s.strip_prefix('{') {
        Some(body) => (true, body),
        None => (false, s),
    };
    let end = body
        .char_indices()
        .find(|(_, c)| !is_name_char(*c))
        .map_or(body.len(), |(i, _)| i);
    if end == 0 {
        return None;
    }
    let (name, after) = body.split_at(end);
    let after = if braced {
        after.strip_prefix('}')?
    } else {
        after
    };
    Some((name, after))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Vec<(&'static str, &'static str)> {
        vec![("A", "alpha"), ("E", ""), ("S", "a b  c")]
    }

    fn word(input: &str) -> Result<String, ShellErrorKind> {
        Lexer::new('\\')
            .process_word(input, &env())
            .map_err(|e| e.kind().clone())
    }

    #[test]
    fn reverse_pattern_keeps_escape_pairs() {
        assert_eq!(reverse_pattern(r"a\*c"), r"c\*a");
        assert_eq!(reverse_pattern(r"\\\ab"), r"b\a\\");
        assert_eq!(reverse_pattern(r"ab\"), r"\ba");
        assert_eq!(reverse_pattern(r"👽\🚀🖖"), r"🖖\🚀👽");
        assert_eq!(reverse_pattern(r"\\b"), r"b\\");
        assert_eq!(reverse_pattern(""), "");
    }

    #[test]
    fn pattern_regex_escapes_everything_but_wildcards() {
        let re = pattern_regex(r"(()[]{\}^$.\*\?|\\", true, true).unwrap();
        assert!(re.is_match(r"(()[]{}^$.*?|\tail"));
        assert_eq!(pattern_regex("*", true, true).unwrap().as_str(), r"\A.*");
        assert_eq!(pattern_regex("*", false, false).unwrap().as_str(), ".*?");
        assert_eq!(pattern_regex("?", true, true).unwrap().as_str(), r"\A.");
    }

    #[test]
    fn pattern_regex_rejects_bad_escapes() {
        assert_eq!(
            pattern_regex(r"\", true, true).unwrap_err(),
            PatternError::TrailingEscape
        );
        assert_eq!(
            pattern_regex(r"\x", true, true).unwrap_err(),
            PatternError::InvalidEscape('x')
        );
        assert_eq!(
            pattern_regex(r"\\\", true, true).unwrap_err(),
            PatternError::TrailingEscape
        );
    }

    #[test]
    fn wildcards_do_not_match_newlines() {
        // Go's `.` excludes `\n`; BuildKit inherits that.
        let env = [("V", "a\nb")];
        assert_eq!(
            Lexer::default().process_word("${V#*}", &env).unwrap(),
            "a\nb"
        );
        assert_eq!(
            Lexer::default().process_word("${V##*}", &env).unwrap(),
            "\nb"
        );
        assert_eq!(
            Lexer::default().process_word("${V%%?b}", &env).unwrap(),
            "a\nb"
        );
    }

    #[test]
    fn replace_all_follows_go_for_empty_matches() {
        let re = Regex::new(".*").unwrap();
        assert_eq!(replace_all(&re, "xxyy", "-"), "-");
        let re = Regex::new("").unwrap();
        assert_eq!(replace_all(&re, "ab", "-"), "-a-b-");
        assert_eq!(replace_all(&re, "", "-"), "-");
        assert_eq!(replace_all(&re, "한국", "-"), "-한-국-");
        let re = Regex::new("a*").unwrap();
        assert_eq!(replace_all(&re, "baaac", "-"), "-b-c-");
    }

    #[test]
    fn template_expansion_matches_go() {
        let expand = |t: &str| {
            let mut out = String::new();
            expand_template(&mut out, t, "M");
            out
        };
        assert_eq!(expand("plain"), "plain");
        assert_eq!(expand("$$"), "$");
        assert_eq!(expand("$0"), "M");
        assert_eq!(expand("${0}x"), "Mx");
        assert_eq!(expand("$0x"), "");
        assert_eq!(expand("$1"), "");
        assert_eq!(expand("$00"), "");
        assert_eq!(expand("${name}!"), "!");
        assert_eq!(expand("${0"), "${0");
        assert_eq!(expand("a$"), "a$");
        assert_eq!(expand("$-"), "$-");
        assert_eq!(expand(r"\$"), r"\$");
    }

    #[test]
    fn fields_drop_empty_words() {
        let mut fields = Fields::default();
        fields.add_str("  a  b ");
        fields.add_raw_str("");
        fields.add_char(' ');
        fields.add_raw_str(" c ");
        assert_eq!(fields.finish(), ["a", "b", " c "]);
    }

    #[test]
    fn names_follow_go_unicode_classes() {
        assert!(is_letter('한'));
        assert!(is_letter('µ'));
        assert!(!is_letter('²'));
        assert!(!is_digit('²'));
        assert!(is_digit('٣'));
        assert!(!is_name_char('Ⅻ'));
        assert!(!is_name_char('\u{0301}'));
    }

    #[test]
    fn unicode_digits_are_positional() {
        assert_eq!(word("$٣x").unwrap(), "x");
        assert_eq!(word("$²").unwrap(), "$²");
    }

    #[test]
    fn modifiers_need_a_known_operator() {
        assert_eq!(
            word("${A:=x}"),
            Err(ShellErrorKind::UnsupportedModifier {
                modifier: ":=".into()
            })
        );
        assert_eq!(
            word("${A=x}"),
            Err(ShellErrorKind::UnsupportedModifier {
                modifier: "=".into()
            })
        );
        assert_eq!(
            word("${A:#x}"),
            Err(ShellErrorKind::UnsupportedModifier {
                modifier: ":#".into()
            })
        );
        assert_eq!(
            word("${A.}"),
            Err(ShellErrorKind::UnsupportedModifier {
                modifier: ".".into()
            })
        );
        assert_eq!(word("${A"), Err(ShellErrorKind::MissingBrace));
        assert_eq!(word("${A:"), Err(ShellErrorKind::MissingBrace));
        assert_eq!(word("${A/x"), Err(ShellErrorKind::MissingSlash));
        assert_eq!(word("${A/x/"), Err(ShellErrorKind::MissingBrace));
    }

    #[test]
    fn errors_at_end_of_word_become_missing_brace() {
        assert_eq!(word("${A:-\"x}"), Err(ShellErrorKind::MissingBrace));
        assert_eq!(word("${A:-${}}"), Err(ShellErrorKind::BadSubstitution));
    }

    #[test]
    fn nesting_is_bounded() {
        let deep = |n: usize| format!("{}x{}", "${U:-".repeat(n), "}".repeat(n));
        assert_eq!(word(&deep(MAX_NESTING)).unwrap(), "x");
        assert_eq!(
            word(&deep(MAX_NESTING + 1)),
            Err(ShellErrorKind::TooDeep { limit: MAX_NESTING })
        );
        assert_eq!(
            word(&deep(100_000)),
            Err(ShellErrorKind::TooDeep { limit: MAX_NESTING })
        );
    }

    #[test]
    fn leading_byte_order_mark_is_dropped() {
        assert_eq!(word("\u{feff}$A").unwrap(), "alpha");
        assert_eq!(word("x\u{feff}").unwrap(), "x\u{feff}");
    }

    #[test]
    fn error_display_is_a_chain() {
        let err = Lexer::default()
            .process_word("he${PWD", &env())
            .unwrap_err();
        assert_eq!(err.to_string(), r#"failed to process "he${PWD""#);
        let source = std::error::Error::source(&err).unwrap();
        assert_eq!(source.to_string(), "syntax error: missing '}'");
    }
}
