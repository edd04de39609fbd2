//! Reading the Go regular expressions that [`super::compile`] produces, the
//! way Go's `regexp/syntax` parser (Perl flags) does, and translating them
//! for the `regex` crate.
//!
//! The two dialects look alike but differ where a pattern can reach: Go
//! treats `[` inside a class as a literal, has no class set operations
//! (`&&`, `--`, `~~`), makes `\d`, `\s`, `\w` and `\b` ASCII-only, and has
//! `\Q...\E`, octal escapes and a different `\pC`. So the expression is
//! parsed here into a small tree ([`Node`]) following Go's rules, and the
//! tree is written back out in unambiguous `regex` syntax (literals
//! escaped, class members spelled as explicit code point ranges).
//!
//! Everything [`super::compile`] can emit is supported: literals, escapes,
//! classes, `.`, `^`, `$`, `\A`, `\z`, `\b`, `\B`, `\Q...\E`, `\pX`, groups,
//! `|` and the `*`, `+`, `?` repetitions. Some things it can't emit, because
//! it escapes `(` and `{`, are reported as errors instead: flag groups
//! `(?...)` and counted repetitions `{n,m}`; and `\p{Name}` only knows the
//! general categories and `Any`, not script names.
//!
//! The tree also gives [`Nfa`], an over-approximating automaton used to
//! decide whether a pattern could match anything below a directory.

use std::fmt::Write as _;

/// Go's `regexp/syntax` nesting limit.
const MAX_DEPTH: usize = 1000;
const MAX_RUNE: u32 = 0x10_FFFF;

/// Why Go's parser would reject the expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Re2Error(pub(crate) &'static str);

/// A parsed expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Node {
    Empty,
    /// A code point. Values that are not Unicode scalar values (surrogates
    /// from an escape) can never match text.
    Literal(u32),
    Class(Class),
    /// `.`: any character except `\n`.
    AnyNotNl,
    Look(Look),
    Repeat(Repeat, Box<Node>),
    Group(Box<Node>),
    Concat(Vec<Node>),
    Alternate(Vec<Node>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Look {
    /// `^` (Go compiles with `OneLine`, so it is the start of the text) or `\A`.
    BeginText,
    /// `$` or `\z`.
    EndText,
    /// `\b`, ASCII word characters only.
    WordBoundary,
    /// `\B`.
    NotWordBoundary,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Repeat {
    Star,
    Plus,
    Quest,
}

/// A character class: the union of `ranges` and `tables`, complemented when
/// `negated`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Class {
    pub(crate) negated: bool,
    /// Inclusive code point ranges; may include surrogates, as Go's do.
    pub(crate) ranges: Vec<(u32, u32)>,
    /// Unicode general categories (`\pL`, `\PN`, ...).
    pub(crate) tables: Vec<Table>,
}

/// A Unicode general category, possibly complemented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Table {
    pub(crate) category: &'static str,
    pub(crate) negated: bool,
}

/// Go's general category names (`unicode.Categories`), in the spelling the
/// `regex` crate accepts too.
const CATEGORIES: &[&str] = &[
    "C", "Cc", "Cf", "Co", "Cs", "L", "Ll", "Lm", "Lo", "Lt", "Lu", "M", "Mc", "Me", "Mn", "N",
    "Nd", "Nl", "No", "P", "Pc", "Pd", "Pe", "Pf", "Pi", "Po", "Ps", "S", "Sc", "Sk", "Sm", "So",
    "Z", "Zl", "Zp", "Zs",
];

const PERL_DIGIT: &[(u32, u32)] = &[(0x30, 0x39)];
const PERL_SPACE: &[(u32, u32)] = &[(0x09, 0x0A), (0x0C, 0x0D), (0x20, 0x20)];
const PERL_WORD: &[(u32, u32)] = &[(0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)];

/// POSIX classes, `[:name:]` inside brackets.
const POSIX: &[(&str, &[(u32, u32)])] = &[
    ("alnum", &[(0x30, 0x39), (0x41, 0x5A), (0x61, 0x7A)]),
    ("alpha", &[(0x41, 0x5A), (0x61, 0x7A)]),
    ("ascii", &[(0x00, 0x7F)]),
    ("blank", &[(0x09, 0x09), (0x20, 0x20)]),
    ("cntrl", &[(0x00, 0x1F), (0x7F, 0x7F)]),
    ("digit", &[(0x30, 0x39)]),
    ("graph", &[(0x21, 0x7E)]),
    ("lower", &[(0x61, 0x7A)]),
    ("print", &[(0x20, 0x7E)]),
    (
        "punct",
        &[(0x21, 0x2F), (0x3A, 0x40), (0x5B, 0x60), (0x7B, 0x7E)],
    ),
    ("space", &[(0x09, 0x0D), (0x20, 0x20)]),
    ("upper", &[(0x41, 0x5A)]),
    (
        "word",
        &[(0x30, 0x39), (0x41, 0x5A), (0x61, 0x7A), (0x5F, 0x5F)],
    ),
    ("xdigit", &[(0x30, 0x39), (0x41, 0x46), (0x61, 0x66)]),
];

/// Parses `src` as Go's `regexp.Compile` would.
pub(crate) fn parse(src: &str) -> Result<Node, Re2Error> {
    let mut parser = Parser { depth: 0 };
    let (node, rest) = parser.alternation(src)?;
    if rest.is_empty() {
        Ok(node)
    } else {
        Err(Re2Error("unexpected )"))
    }
}

struct Parser {
    depth: usize,
}

impl Parser {
    /// `concat ('|' concat)*`, up to an unmatched `)` or the end.
    fn alternation<'a>(&mut self, mut t: &'a str) -> Result<(Node, &'a str), Re2Error> {
        let mut alternatives = Vec::new();
        loop {
            let (node, rest) = self.concatenation(t)?;
            alternatives.push(node);
            match rest.strip_prefix('|') {
                Some(rest) => t = rest,
                None => {
                    t = rest;
                    break;
                }
            }
        }
        let node = if alternatives.len() == 1 {
            alternatives.pop().unwrap_or(Node::Empty)
        } else {
            Node::Alternate(alternatives)
        };
        Ok((node, t))
    }

    fn concatenation<'a>(&mut self, mut t: &'a str) -> Result<(Node, &'a str), Re2Error> {
        let mut items: Vec<Node> = Vec::new();
        // Go refuses a repetition right after another one (`a**`).
        let mut last_was_repeat = false;
        while let Some(c) = t.chars().next() {
            let mut repeat = false;
            match c {
                '|' | ')' => break,
                '(' => {
                    if t[1..].starts_with('?') {
                        return Err(Re2Error("flag groups are not supported"));
                    }
                    self.depth += 1;
                    if self.depth > MAX_DEPTH {
                        return Err(Re2Error("expression nests too deeply"));
                    }
                    let (inner, rest) = self.alternation(&t[1..])?;
                    self.depth -= 1;
                    let Some(rest) = rest.strip_prefix(')') else {
                        return Err(Re2Error("missing closing )"));
                    };
                    items.push(Node::Group(Box::new(inner)));
                    t = rest;
                }
                '^' => {
                    items.push(Node::Look(Look::BeginText));
                    t = &t[1..];
                }
                '$' => {
                    items.push(Node::Look(Look::EndText));
                    t = &t[1..];
                }
                '.' => {
                    items.push(Node::AnyNotNl);
                    t = &t[1..];
                }
                '[' => {
                    let (class, rest) = parse_class(t)?;
                    items.push(Node::Class(class));
                    t = rest;
                }
                '*' | '+' | '?' => {
                    let op = match c {
                        '*' => Repeat::Star,
                        '+' => Repeat::Plus,
                        _ => Repeat::Quest,
                    };
                    // A `?` after the operator makes it non-greedy, which
                    // doesn't change whether there is a match.
                    let after = &t[1..];
                    let after = after.strip_prefix('?').unwrap_or(after);
                    if last_was_repeat {
                        return Err(Re2Error("invalid nested repetition operator"));
                    }
                    let Some(sub) = items.pop() else {
                        return Err(Re2Error("missing argument to repetition operator"));
                    };
                    items.push(Node::Repeat(op, Box::new(sub)));
                    repeat = true;
                    t = after;
                }
                '{' => {
                    if is_counted_repeat(t) {
                        return Err(Re2Error("counted repetition is not supported"));
                    }
                    // Otherwise `{` is a literal.
                    items.push(Node::Literal(u32::from('{')));
                    t = &t[1..];
                }
                '\\' => t = escape(t, &mut items)?,
                _ => {
                    items.push(Node::Literal(u32::from(c)));
                    t = &t[c.len_utf8()..];
                }
            }
            last_was_repeat = repeat;
        }
        let node = match items.len() {
            0 => Node::Empty,
            1 => items.pop().unwrap_or(Node::Empty),
            _ => Node::Concat(items),
        };
        Ok((node, t))
    }
}

/// A `\` outside brackets; pushes what it denotes and returns the rest.
fn escape<'a>(t: &'a str, items: &mut Vec<Node>) -> Result<&'a str, Re2Error> {
    match t.as_bytes().get(1) {
        Some(b'A') => {
            items.push(Node::Look(Look::BeginText));
            return Ok(&t[2..]);
        }
        Some(b'z') => {
            items.push(Node::Look(Look::EndText));
            return Ok(&t[2..]);
        }
        Some(b'b') => {
            items.push(Node::Look(Look::WordBoundary));
            return Ok(&t[2..]);
        }
        Some(b'B') => {
            items.push(Node::Look(Look::NotWordBoundary));
            return Ok(&t[2..]);
        }
        Some(b'C') => return Err(Re2Error("invalid escape sequence \\C")),
        Some(b'Q') => {
            // `\Q...\E`: literal text up to `\E` or the end.
            let (literal, rest) = t[2..].split_once("\\E").unwrap_or((&t[2..], ""));
            items.extend(literal.chars().map(|c| Node::Literal(u32::from(c))));
            return Ok(rest);
        }
        Some(b'p' | b'P') => {
            let (class, rest) = unicode_class(t)?;
            items.push(Node::Class(class));
            return Ok(rest);
        }
        _ => {}
    }
    if let Some((ranges, rest)) = perl_class(t) {
        items.push(Node::Class(Class {
            ranges,
            ..Class::default()
        }));
        return Ok(rest);
    }
    let (rune, rest) = parse_escape(t)?;
    items.push(Node::Literal(rune));
    Ok(rest)
}

/// Whether `t` (starting with `{`) is `{n}`, `{n,}` or `{n,m}`.
fn is_counted_repeat(t: &str) -> bool {
    let Some(inner) = t
        .strip_prefix('{')
        .and_then(|t| t.split_once('}'))
        .map(|(inner, _)| inner)
    else {
        return false;
    };
    let (min, max) = inner.split_once(',').unwrap_or((inner, "0"));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    digits(min) && (max.is_empty() || digits(max))
}

/// A single-character escape (`t` starts with `\`): punctuation, octal,
/// hex, or a C escape.
fn parse_escape(t: &str) -> Result<(u32, &str), Re2Error> {
    let mut chars = t[1..].chars();
    let Some(c) = chars.next() else {
        return Err(Re2Error("trailing backslash"));
    };
    let rest = chars.as_str();
    let invalid = Err(Re2Error("invalid escape sequence"));
    let is_octal = |s: &str| {
        s.as_bytes()
            .first()
            .is_some_and(|b| (b'0'..=b'7').contains(b))
    };
    match c {
        // A single non-zero digit would be a backreference.
        '1'..='7' if !is_octal(rest) => invalid,
        '0'..='7' => {
            // Up to two more octal digits.
            let mut value = u32::from(c) - u32::from('0');
            let mut rest = rest;
            for _ in 0..2 {
                if !is_octal(rest) {
                    break;
                }
                value = value * 8 + u32::from(rest.as_bytes()[0] - b'0');
                rest = &rest[1..];
            }
            Ok((value, rest))
        }
        'x' => {
            let mut chars = rest.chars();
            let Some(first) = chars.next() else {
                return invalid;
            };
            if first == '{' {
                let mut value: u32 = 0;
                let mut digits = 0;
                loop {
                    let Some(c) = chars.next() else {
                        return invalid;
                    };
                    if c == '}' {
                        break;
                    }
                    let Some(v) = c.to_digit(16) else {
                        return invalid;
                    };
                    value = value * 16 + v;
                    if value > MAX_RUNE {
                        return invalid;
                    }
                    digits += 1;
                }
                if digits == 0 {
                    return invalid;
                }
                return Ok((value, chars.as_str()));
            }
            let second = chars.next();
            match (first.to_digit(16), second.and_then(|c| c.to_digit(16))) {
                (Some(x), Some(y)) => Ok((x * 16 + y, chars.as_str())),
                _ => invalid,
            }
        }
        'a' => Ok((0x07, rest)),
        'f' => Ok((0x0C, rest)),
        'n' => Ok((0x0A, rest)),
        'r' => Ok((0x0D, rest)),
        't' => Ok((0x09, rest)),
        'v' => Ok((0x0B, rest)),
        // Escaped punctuation is itself.
        c if c.is_ascii() && !c.is_ascii_alphanumeric() => Ok((u32::from(c), rest)),
        _ => invalid,
    }
}

/// `\d \D \s \S \w \W` at the start of `t`, as ranges.
fn perl_class(t: &str) -> Option<(Vec<(u32, u32)>, &str)> {
    let rest = t.strip_prefix('\\')?;
    let (ranges, negated) = match rest.as_bytes().first()? {
        b'd' => (PERL_DIGIT, false),
        b'D' => (PERL_DIGIT, true),
        b's' => (PERL_SPACE, false),
        b'S' => (PERL_SPACE, true),
        b'w' => (PERL_WORD, false),
        b'W' => (PERL_WORD, true),
        _ => return None,
    };
    let ranges = if negated {
        complement(ranges)
    } else {
        ranges.to_vec()
    };
    Some((ranges, &rest[1..]))
}

/// `\pX`, `\p{Name}`, `\PX`, `\p{^Name}` at the start of `t`.
fn unicode_class(t: &str) -> Result<(Class, &str), Re2Error> {
    let mut negated = t.as_bytes().get(1) == Some(&b'P');
    let after = &t[2..];
    let (name, rest) = match after.chars().next() {
        Some('{') => {
            let Some(end) = after.find('}') else {
                return Err(Re2Error("invalid character class range"));
            };
            (&after[1..end], &after[end + 1..])
        }
        Some(c) => (&after[..c.len_utf8()], &after[c.len_utf8()..]),
        None => ("", after),
    };
    let name = match name.strip_prefix('^') {
        Some(name) => {
            negated = !negated;
            name
        }
        None => name,
    };
    let mut class = Class::default();
    if name == "Any" {
        if !negated {
            class.ranges.push((0, MAX_RUNE));
        }
        return Ok((class, rest));
    }
    let Some(category) = CATEGORIES.iter().find(|&&c| c == name) else {
        return Err(Re2Error("invalid character class range"));
    };
    class.tables.push(Table { category, negated });
    Ok((class, rest))
}

/// A bracketed class at the start of `s` (which starts with `[`).
fn parse_class(s: &str) -> Result<(Class, &str), Re2Error> {
    let mut t = &s[1..];
    let mut class = Class::default();
    if let Some(rest) = t.strip_prefix('^') {
        class.negated = true;
        t = rest;
    }
    // `]` is a literal when it comes first.
    let mut first = true;
    while first || !t.starts_with(']') {
        first = false;
        if t.len() > 2
            && t.starts_with("[:")
            && let Some(end) = t[2..].find(":]")
        {
            let name = &t[2..2 + end];
            let (name, negated) = match name.strip_prefix('^') {
                Some(name) => (name, true),
                None => (name, false),
            };
            let Some((_, ranges)) = POSIX.iter().find(|(n, _)| *n == name) else {
                return Err(Re2Error("invalid character class range"));
            };
            if negated {
                class.ranges.extend(complement(ranges));
            } else {
                class.ranges.extend_from_slice(ranges);
            }
            t = &t[2 + end + 2..];
            continue;
        }
        if t.starts_with("\\p") || t.starts_with("\\P") {
            let (unicode, rest) = unicode_class(t)?;
            class.ranges.extend(unicode.ranges);
            class.tables.extend(unicode.tables);
            t = rest;
            continue;
        }
        if let Some((ranges, rest)) = perl_class(t) {
            class.ranges.extend(ranges);
            t = rest;
            continue;
        }
        let (lo, rest) = class_char(t)?;
        t = rest;
        let mut hi = lo;
        // `[a-]` is `a` and `-`.
        if t.len() >= 2 && t.starts_with('-') && !t[1..].starts_with(']') {
            let (h, rest) = class_char(&t[1..])?;
            if h < lo {
                return Err(Re2Error("invalid character class range"));
            }
            hi = h;
            t = rest;
        }
        class.ranges.push((lo, hi));
    }
    Ok((class, &t[1..]))
}

fn class_char(t: &str) -> Result<(u32, &str), Re2Error> {
    match t.chars().next() {
        None => Err(Re2Error("missing closing ]")),
        Some('\\') => parse_escape(t),
        Some(c) => Ok((u32::from(c), &t[c.len_utf8()..])),
    }
}

/// The code points (0..=U+10FFFF) not in the sorted, disjoint `ranges`.
fn complement(ranges: &[(u32, u32)]) -> Vec<(u32, u32)> {
    let mut sorted = ranges.to_vec();
    sorted.sort_unstable();
    let mut out = Vec::new();
    let mut next = 0u32;
    for (lo, hi) in sorted {
        if lo > next {
            out.push((next, lo - 1));
        }
        next = next.max(hi.saturating_add(1));
    }
    if next <= MAX_RUNE {
        out.push((next, MAX_RUNE));
    }
    out
}

/// Writes `node` in the `regex` crate's syntax.
pub(crate) fn to_regex(node: &Node) -> String {
    let mut out = String::new();
    write_node(node, &mut out);
    out
}

/// A class that matches nothing.
const NOTHING: &str = r"[^\x{0}-\x{10FFFF}]";

fn write_node(node: &Node, out: &mut String) {
    match node {
        Node::Empty => {}
        Node::Literal(rune) => match char::from_u32(*rune) {
            Some(c) => out.push_str(&regex::escape(c.encode_utf8(&mut [0; 4]))),
            None => out.push_str(NOTHING),
        },
        Node::Class(class) => write_class(class, out),
        Node::AnyNotNl => out.push_str(r"[^\n]"),
        Node::Look(look) => out.push_str(match look {
            Look::BeginText => r"\A",
            Look::EndText => r"\z",
            Look::WordBoundary => r"(?-u:\b)",
            Look::NotWordBoundary => r"(?-u:\B)",
        }),
        Node::Repeat(op, sub) => {
            out.push_str("(?:");
            write_node(sub, out);
            out.push_str(match op {
                Repeat::Star => ")*",
                Repeat::Plus => ")+",
                Repeat::Quest => ")?",
            });
        }
        Node::Group(sub) => {
            out.push_str("(?:");
            write_node(sub, out);
            out.push(')');
        }
        Node::Concat(items) => items.iter().for_each(|item| write_node(item, out)),
        Node::Alternate(alternatives) => {
            out.push_str("(?:");
            for (i, alternative) in alternatives.iter().enumerate() {
                if i > 0 {
                    out.push('|');
                }
                write_node(alternative, out);
            }
            out.push(')');
        }
    }
}

fn write_class(class: &Class, out: &mut String) {
    let mut items = String::new();
    for &(lo, hi) in &class.ranges {
        // The regex crate has no surrogates; text never contains them.
        for (lo, hi) in [(lo, hi.min(0xD7FF)), (lo.max(0xE000), hi)] {
            if lo <= hi {
                let _ = write!(items, r"\x{{{lo:X}}}-\x{{{hi:X}}}");
            }
        }
    }
    for table in &class.tables {
        let sign = if table.negated { "^" } else { "" };
        match table.category {
            // Only surrogates: never in text.
            "Cs" => {
                if table.negated {
                    items.push_str(r"\x{0}-\x{10FFFF}");
                }
            }
            // Go's `C` is Cc | Cf | Co | Cs; Unicode's (and the regex
            // crate's) also has Cn, the unassigned code points.
            "C" => {
                let _ = write!(items, r"[{sign}\p{{Cc}}\p{{Cf}}\p{{Co}}]");
            }
            name => {
                let _ = write!(items, r"[{sign}\p{{{name}}}]");
            }
        }
    }
    if items.is_empty() {
        out.push_str(if class.negated {
            r"[\x{0}-\x{10FFFF}]"
        } else {
            NOTHING
        });
    } else {
        out.push('[');
        if class.negated {
            out.push('^');
        }
        out.push_str(&items);
        out.push(']');
    }
}

/// A Thompson automaton for the expression, with zero-width assertions
/// treated as always true. It over-approximates: whatever the expression
/// matches, the automaton accepts.
#[derive(Debug, Clone)]
pub(crate) struct Nfa {
    states: Vec<State>,
    start: usize,
    /// False when the expression isn't anchored at the start of the text,
    /// so it could match after any prefix.
    anchored: bool,
}

#[derive(Debug, Clone)]
enum State {
    Char(Pred, usize),
    Split(usize, usize),
    /// End of text: never passed, since we only ask about texts that go on.
    End,
    Match,
}

#[derive(Debug, Clone)]
enum Pred {
    Literal(u32),
    AnyNotNl,
    Class(Class),
}

impl Pred {
    fn accepts(&self, c: char) -> bool {
        let c = u32::from(c);
        match self {
            Pred::Literal(rune) => *rune == c,
            Pred::AnyNotNl => c != u32::from('\n'),
            // Without the Unicode tables, assume a class with categories
            // matches everything.
            Pred::Class(class) if !class.tables.is_empty() => true,
            Pred::Class(class) => {
                class.ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != class.negated
            }
        }
    }
}

impl Nfa {
    pub(crate) fn new(node: &Node) -> Self {
        let anchored = match node {
            Node::Look(Look::BeginText) => true,
            Node::Concat(items) => matches!(items.first(), Some(Node::Look(Look::BeginText))),
            _ => false,
        };
        let mut states = vec![State::Match];
        let start = build(node, 0, &mut states);
        Nfa {
            states,
            start,
            anchored,
        }
    }

    /// Whether some text that starts with `prefix` and is longer than it
    /// might be matched: false only when no such text can be.
    pub(crate) fn could_match_longer(&self, prefix: &str) -> bool {
        if !self.anchored {
            return true;
        }
        let mut current = Vec::new();
        let mut seen = vec![false; self.states.len()];
        self.add(self.start, &mut current, &mut seen);
        for c in prefix.chars() {
            if current.is_empty() {
                return false;
            }
            // A match before the end: the expression isn't anchored at the
            // end (`\Q` can swallow the `$`), so anything may follow.
            if current
                .iter()
                .any(|&s| matches!(self.states[s], State::Match))
            {
                return true;
            }
            let mut next = Vec::new();
            seen.iter_mut().for_each(|s| *s = false);
            for &s in &current {
                if let State::Char(pred, to) = &self.states[s]
                    && pred.accepts(c)
                {
                    self.add(*to, &mut next, &mut seen);
                }
            }
            current = next;
        }
        // `End` states are never added, so anything left can go on.
        !current.is_empty()
    }

    /// Adds `state` and what it reaches without reading a character.
    fn add(&self, state: usize, set: &mut Vec<usize>, seen: &mut [bool]) {
        let mut stack = vec![state];
        while let Some(s) = stack.pop() {
            if std::mem::replace(&mut seen[s], true) {
                continue;
            }
            match self.states[s] {
                State::Split(a, b) => {
                    stack.push(b);
                    stack.push(a);
                }
                State::Char(..) | State::Match => set.push(s),
                State::End => {}
            }
        }
    }
}

fn push(states: &mut Vec<State>, state: State) -> usize {
    states.push(state);
    states.len() - 1
}

/// Adds the states for `node` that continue to `next`; returns its entry.
fn build(node: &Node, next: usize, states: &mut Vec<State>) -> usize {
    match node {
        Node::Look(Look::EndText) => push(states, State::End),
        Node::Empty | Node::Look(_) => next,
        Node::Literal(rune) => push(states, State::Char(Pred::Literal(*rune), next)),
        Node::AnyNotNl => push(states, State::Char(Pred::AnyNotNl, next)),
        Node::Class(class) => push(states, State::Char(Pred::Class(class.clone()), next)),
        Node::Group(sub) => build(sub, next, states),
        Node::Concat(items) => items
            .iter()
            .rev()
            .fold(next, |next, item| build(item, next, states)),
        Node::Alternate(alternatives) => {
            let entries: Vec<usize> = alternatives
                .iter()
                .map(|a| build(a, next, states))
                .collect();
            entries
                .into_iter()
                .rev()
                .reduce(|rest, entry| push(states, State::Split(entry, rest)))
                .unwrap_or(next)
        }
        Node::Repeat(Repeat::Quest, sub) => {
            let body = build(sub, next, states);
            push(states, State::Split(body, next))
        }
        Node::Repeat(op, sub) => {
            let split = push(states, State::Split(next, next));
            let body = build(sub, split, states);
            states[split] = State::Split(body, next);
            if *op == Repeat::Star { split } else { body }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rust(src: &str) -> String {
        to_regex(&parse(src).unwrap())
    }

    fn is_match(src: &str, text: &str) -> bool {
        regex::Regex::new(&rust(src)).unwrap().is_match(text)
    }

    #[test]
    fn translates_what_compile_emits() {
        assert_eq!(rust("^[^/]*$"), r"\A(?:[^\x{2F}-\x{2F}])*\z");
        assert!(is_match("^(.*/)?dir2/[^/]*$", "a/b/dir2/x"));
        assert!(!is_match("^(.*/)?dir2/[^/]*$", "a/b/dir2/x/y"));
        assert!(is_match(r"^[^/]*\.txt$", "a.txt"));
        assert!(!is_match(r"^[^/]*\.txt$", "atxt"));
    }

    #[test]
    fn classes_follow_go() {
        // `[` inside a class is a literal; `[[^/]` is `[`, `^` or `/`.
        assert!(is_match("^[[^/]*]$", "[^/]"));
        assert!(is_match("^[[^/]*]$", "]"));
        assert!(!is_match("^[[^/]*]$", "a]"));
        // No set operations.
        assert!(is_match("^[a&&b]$", "&"));
        assert!(is_match("^[--a]$", "0"));
        assert!(parse("^[a--b]$").is_err(), "reversed range a..-");
        assert!(is_match("^[~~]$", "~"));
        // POSIX and Perl classes are ASCII.
        assert!(is_match("^[[:alpha:]]$", "a"));
        assert!(!is_match("^[[:alpha:]]$", "é"));
        assert!(is_match("^[[:^alpha:]]$", "é"));
        assert!(is_match(r"^\d$", "7"));
        assert!(!is_match(r"^\d$", "٣"));
        assert!(is_match(r"^[\w]$", "_"));
        assert!(!is_match(r"^\w$", "é"));
        assert!(is_match(r"^\pL$", "é"));
        assert!(!is_match(r"^\PL$", "é"));
        assert!(is_match(r"^[^\pL]$", "1"));
        // `]` first is a literal; `-` at the end is a literal.
        assert!(is_match("^[]a]$", "]"));
        assert!(is_match("^[a-]$", "-"));
        assert!(is_match("^[a-b-c]$", "-"));
        // A negated class matches `\n` in Go too.
        assert!(is_match("^[^a]$", "\n"));
        assert!(!is_match("^.$", "\n"));
    }

    #[test]
    fn escapes_follow_go() {
        assert!(is_match(r"^\Qa.b$", "a.b$"));
        assert!(is_match(r"^\Qa.b$", "a.b$xyz"), "no end anchor after \\Q");
        assert!(is_match(r"^\Qa*\E*$", "a*"));
        assert!(is_match(r"^\Qa*\E*$", "a**"));
        assert!(is_match(r"^\101$", "A"));
        assert!(is_match(r"^\0$", "\0"));
        assert!(is_match(r"^\x41$", "A"));
        assert!(is_match(r"^a\b$", "a"));
        assert!(!is_match(r"^a\bb$", "ab"));
        assert!(is_match(r"^\.$", "."));
        for bad in [
            r"\1",
            r"\8",
            r"\e",
            r"\é",
            r"\C",
            r"\x4",
            r"\xg0",
            r"\pX",
            r"\p{Greek}",
            "\\",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn syntax_errors() {
        for bad in [
            "[",
            "[a",
            "[z-a]",
            "[[:foo:]]",
            "a**",
            "*",
            "(",
            ")",
            "(?i)a",
            "a{2}",
            "|*",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        for ok in ["a{", "a{x}", "^*", "()", "a|", "[[:alpha]", "(a|b)*"] {
            assert!(parse(ok).is_ok(), "{ok:?}");
            regex::Regex::new(&rust(ok)).unwrap();
        }
    }

    #[test]
    fn empty_and_full_classes() {
        assert!(!is_match(r"^[^\pL\PL]$", "a"));
        assert!(is_match(r"^[^\PC\pC]*$", ""));
        assert!(is_match(r"^\p{Any}$", "x"));
        assert!(!is_match(r"^\P{Any}$", "x"));
    }

    #[test]
    fn nfa_prefixes() {
        let nfa = |src: &str| Nfa::new(&parse(src).unwrap());
        assert!(nfa("^a/b/[^/]*$").could_match_longer("a/b/"));
        assert!(nfa("^a/b/[^/]*$").could_match_longer("a/"));
        assert!(!nfa("^a/b/[^/]*$").could_match_longer("a/c/"));
        assert!(!nfa("^a/[^/]*$").could_match_longer("a/b/"));
        assert!(nfa("^(.*/)?keep$").could_match_longer("x/y/"));
        assert!(nfa(r"^\Qab").could_match_longer("ab/"));
        assert!(!nfa(r"^[^/]*\.txt$").could_match_longer("dir/"));
        assert!(!nfa("^a$").could_match_longer("a"));
        assert!(nfa("^a/").could_match_longer("a/"), "no end anchor");
        assert!(!nfa("^a/b$").could_match_longer("a/b"));
        assert!(nfa("^a*b$").could_match_longer("aaa"));
        assert!(nfa("a").could_match_longer("zzz/"), "unanchored");
    }
}
