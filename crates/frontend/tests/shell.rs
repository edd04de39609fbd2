//! Shell-word expansion, driven from plain tables.
//!
//! Table rows are `input | env | expected`, fields separated by ` | ` and
//! trimmed:
//! - `env` is `-` for an empty environment, or `NAME=value;NAME=value`
//!   (later entries win).
//! - `expected` is the result, or `error: <text>` where `<text>` must occur
//!   in the error and its causes printed as one line (BuildKit's format).
//!   In the words tables it is the fields separated by `,`; an empty
//!   `expected` is no fields at all.
//! - `␠` stands for a space in any field, so leading and trailing spaces
//!   survive the trimming.
//! - Lines starting with `#` and blank lines are skipped.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::error::Error;

use kiln_frontend::shell::{
    Env, Lexer, MAX_NESTING, PatternError, ProcessWordResult, ShellError, ShellErrorKind,
};
use proptest::prelude::*;

/// `process_word` with the default escape token `\`.
const WORDS: &str = r#"
# quotes and escapes
hello                    | -             | hello
he'll'o                  | -             | hello
"a b"                    | -             | a␠b
'a b'                    | -             | a␠b
a\␠b                     | -             | a␠b
\a\b\c                   | -             | abc
"\a"                     | -             | \a
"\\"                     | -             | \
"\""                     | -             | "
'it''s'                  | -             | its
"it's"                   | -             | it's
'say "hi"'               | -             | say␠"hi"
"x'y'"                   | -             | x'y'
a""b                     | -             | ab
""                       | -             |
''                       | -             |
trailing\                | -             | trailing
"in quotes\"             | -             | error: looking for matching double-quote
"x                       | -             | error: unexpected end of statement while looking for matching double-quote
'x                       | -             | error: unexpected end of statement while looking for matching single-quote
'\'                      | -             | \
he\'llo                  | -             | he'llo
he\\'llo                 | -             | error: matching single-quote

# plain references
$X                       | X=1           | 1
${X}                     | X=1           | 1
$X$Y                     | X=1;Y=2       | 12
$X_Y                     | X=1;X_Y=2     | 2
${X}_Y                   | X=1           | 1_Y
$X-Y                     | X=1           | 1-Y
$X.txt                   | X=a           | a.txt
$X                       | X=1;X=2       | 2
$UNSET                   | -             |
x${UNSET}y               | -             | xy
$X                       | X=한국어       | 한국어
$한                      | 한=k           | k
"$X"                     | X=a␠␠b        | a␠␠b
"${X}"                   | X=1           | 1
"a'$X'"                  | X=1           | a'1'
'$X'                     | X=1           | $X
'${X}'                   | X=1           | ${X}
\$X                      | X=1           | $X
\\$X                     | X=1           | \1
"\$X"                    | X=1           | $X
"\\$X"                   | X=1           | \1
'\$X'                    | X=1           | \$X
\${X}                    | X=1           | ${X}
$"X"                     | -             | $X
$'X'                     | -             | $X

# a `$` that starts no name, positional and special parameters
$                        | -             | $
a$                       | -             | a$
$.                       | -             | $.
$/x                      | -             | $/x
"$"                      | -             | $
$1                       | -             |
$12x                     | -             | x
$1                       | 1=one         | one
$0                       | -             |
${10}                    | -             |
$@                       | -             |
$@@                      | -             | @
$$                       | -             |
$#x                      | -             | x
${#}                     | -             |
${?:-q}                  | -             | q
${*:+q}                  | -             |

# defaults and alternatives
${X:-d}                  | X=            | d
${X-d}                   | X=            |
${X-d}                   | -             | d
${X:-d}                  | X=v           | v
${X:+a}                  | X=v           | a
${X:+a}                  | X=            |
${X+a}                   | X=            | a
${X+a}                   | -             |
${X:-}                   | -             |
${X:-$Y}                 | Y=y           | y
${X:-${Y:-${Z:-deep}}}   | -             | deep
${X:-"a b"}              | -             | a␠b
${X:-'}'}                | -             | }
${X:-\}}                 | -             | }
${X:-a}b}                | -             | ab}
"${X:-"q"}"              | -             | q
${X:+${X}${X}}           | X=ab          | abab
${X:-a}${X:-b}           | -             | ab
${X:-\$Y:}               | Y=y           | $Y:
${X:-\${Y}z}             | Y=y           | ${Yz}

# required variables
${X?}                    | -             | error: X: is not allowed to be unset
${X:?}                   | -             | error: X: is not allowed to be unset
${X:?}                   | X=            | error: X: is not allowed to be empty
${X?}                    | X=            |
${X:?need X}             | -             | error: X: need X
${X:?need X}             | X=            | error: X: need X
${X:?}                   | X=v           | v
${X?$Y!}                 | Y=why         | error: X: why!

# prefix and suffix removal
${F#*/}                  | F=a/b/c       | b/c
${F##*/}                 | F=a/b/c       | c
${F%/*}                  | F=a/b/c       | a/b
${F%%/*}                 | F=a/b/c       | a
${F#a}                   | F=aab         | ab
${F%.tar.gz}             | F=x.tar.gz    | x
${F#?}                   | F=abc         | bc
${F%??}                  | F=abc         | a
${F#\*}                  | F=*x          | x
${F#\?}                  | F=?x          | x
${F#\\}                  | F=\x          | x
${F%\}}                  | F=x}          | x
${F#[a]}                 | F=[a]b        | b
${F#[a]}                 | F=ab          | ab
${F#x}                   | F=abc         | abc
${F#}                    | F=abc         | abc
${F%%}                   | F=abc         | abc
${F#*}                   | F=abc         | abc
${F##*}                  | F=abc         |
${F%*}                   | F=abc         | abc
${F%%*}                  | F=abc         |
${F#*b*}                 | F=abcbd       | cbd
${F##*b*}                | F=abcbd       |
${F%b*}                  | F=abcbd       | abc
${F%%b*}                 | F=abcbd       | a
${F#$P}                  | F=v1.2;P=v    | 1.2
${F#"*"}                 | F=abc         | abc
${F#한}                  | F=한국어       | 국어
${F%어}                  | F=한국어       | 한국
${U#*}                   | -             |
${F#\x}                  | F=a           | error: invalid pattern (\x) in substitution: invalid escape '\x'
${F%$P}                  | F=a;P=\q      | error: invalid pattern (\q) in substitution
${F:#a}                  | F=a           | error: unsupported modifier (:#) in substitution
${F:%a}                  | -             | error: unsupported modifier (:%) in substitution

# substitution
${F/o/0}                 | F=foo         | f0o
${F//o/0}                | F=foo         | f00
${F/x/y}                 | F=foo         | foo
${F//?/.}                | F=abc         | ...
${F/*/x}                 | F=abc         | x
${F/b*/x}                | F=abcb        | ax
${F//\//-}               | F=a/b/c       | a-b-c
${F//\//\/}              | F=a/b         | a\/b
${F/o/}                  | F=foo         | fo
${F//o/}                 | F=foo         | f
${F//␠/_}                | F=a␠b␠c       | a_b_c
${F//o/$R}               | F=foo;R=0     | f00
${F//o/$R}               | F=fo;R=[$0]   | f[o]
${F//o/$R}               | F=fo;R=$$x    | f$x
${F/o/$R}                | F=fo;R=[$0]   | f[$0]
${F/$P/x}                | F=abc;P=      | xabc
${F//[b]/x}              | F=a[b]        | ax
${U/a/b}                 | -             |
${F//o}                  | F=foo         | error: syntax error: missing '/' in ${}
${F/o/x                  | F=foo         | error: syntax error: missing '}'
${F/a/\q}                | F=a           | \q

# syntax errors
${}                      | -             | error: syntax error: bad substitution
${:}                     | -             | error: syntax error: bad substitution
${:-x}                   | -             | error: syntax error: bad substitution
${{X}}                   | -             | error: syntax error: bad substitution
${X                      | -             | error: syntax error: missing '}'
${                       | -             | error: syntax error: missing '}'
${X:-${Y}                | -             | error: syntax error: missing '}'
${X:-"a}                 | -             | error: syntax error: missing '}'
${X:-${}                 | -             | error: syntax error: bad substitution
${X:=a}                  | -             | error: unsupported modifier (:=) in substitution
${X=a}                   | -             | error: unsupported modifier (=) in substitution
${X:YY}                  | -             | error: unsupported modifier (:Y) in substitution
${.}                     | -             | error: unsupported modifier (.) in substitution
${X␠}                    | -             | error: unsupported modifier (␠) in substitution
he${PWD                  | -             | error: failed to process "he${PWD": syntax error: missing '}'
"\x07${                  | -             | error: failed to process "\"\\x07${": syntax error: missing '}'
"${X?gone}"              | -             | error: failed to process "\"${X?gone}\"": X: gone
"#;

/// `process_word` after `# escape=``.
const BACKTICK_WORDS: &str = r#"
a`␠b                     | -             | a␠b
`$X                      | X=1           | $X
\$X                      | X=1           | \1
C:\path\to               | -             | C:\path\to
"a`"b"                   | -             | a"b
"a`b"                    | -             | a`b
"a``b"                   | -             | a`b
"`$X"                    | X=1           | $X
trailing`                | -             | trailing
${X:-`}}                 | -             | }
${F#`*}                  | F=*a          | *a
${F#\*}                  | F=*a          | a
${F//\\//}               | F=C:\x\y      | C:/x/y
'`'                      | -             | `
"#;

/// `process_words` with `\`.
const FIELDS: &str = r#"
a b                      | -             | a,b
␠␠a␠␠␠b␠␠                | -             | a,b
$S                       | S=a␠␠b        | a,b
"$S"                     | S=a␠␠b        | a␠␠b
x$S                      | S=␠a          | x,a
$S                       | S=␠␠          |
$E                       | E=            |
""                       | -             |
''                       | -             |
a "" b                   | -             | a,b
"" x                     | -             | x
'a b' c                  | -             | a␠b,c
a\␠b                     | -             | a␠b
\"a b\"                  | -             | "a,b"
${S:-x}                  | S=1␠2         | 1,2
${U:-1␠2}                | -             | 1,2
"${U:-1␠2}"              | -             | 1␠2
a${S}b                   | S=␠           | a,b
$A$B                     | A=x␠;B=␠y     | x,y
a${N:-${S}}c             | S=1␠2         | a1,2c
pre"mid $S"post          | S=1␠2         | premid␠1␠2post
'$S'                     | S=1␠2         | $S
a"                       | -             | error: matching double-quote
"#;

struct Row {
    line: usize,
    input: String,
    env: Vec<(String, String)>,
    expected: String,
}

fn unspace(s: &str) -> String {
    s.replace('␠', " ")
}

fn rows(table: &str) -> Vec<Row> {
    let mut rows = Vec::new();
    for (index, line) in table.lines().enumerate() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        // The trailing space lets an empty `expected` end the line.
        let padded = format!("{line} ");
        let fields: Vec<&str> = padded.split(" | ").map(str::trim).collect();
        let [input, env, expected] = fields[..] else {
            panic!(
                "table line {}: expected `input | env | expected`: {line:?}",
                index + 1
            );
        };
        let env = match env {
            "-" => Vec::new(),
            env => env
                .split(';')
                .map(|pair| {
                    let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                    (unspace(name), unspace(value))
                })
                .collect(),
        };
        rows.push(Row {
            line: index + 1,
            input: unspace(input),
            env,
            expected: expected.to_owned(),
        });
    }
    rows
}

/// The error and its causes on one line, as BuildKit prints them.
fn chain(error: &ShellError) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Runs every row and reports all mismatches at once.
fn check_table<T: std::fmt::Debug + PartialEq>(
    table: &str,
    run: impl Fn(&str, &Vec<(String, String)>) -> Result<T, ShellError>,
    parse: impl Fn(&str) -> T,
) -> usize {
    let rows = rows(table);
    let mut failures = Vec::new();
    for row in &rows {
        let got = run(&row.input, &row.env);
        let ok = match (&got, row.expected.strip_prefix("error: ")) {
            (Err(e), Some(needle)) => chain(e).contains(&unspace(needle)),
            (Ok(value), None) => *value == parse(&unspace(&row.expected)),
            _ => false,
        };
        if !ok {
            let got = match &got {
                Ok(value) => format!("{value:?}"),
                Err(e) => format!("error: {}", chain(e)),
            };
            failures.push(format!(
                "line {}: {:?} with {:?}: expected {:?}, got {got}",
                row.line, row.input, row.env, row.expected
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
    rows.len()
}

#[test]
fn word_table() {
    let lexer = Lexer::new('\\');
    let count = check_table(
        WORDS,
        |input, env| lexer.process_word(input, env),
        str::to_owned,
    );
    assert!(count >= 150, "{count}");
}

#[test]
fn backtick_word_table() {
    let lexer = Lexer::new('`');
    check_table(
        BACKTICK_WORDS,
        |input, env| lexer.process_word(input, env),
        str::to_owned,
    );
}

#[test]
fn field_table() {
    let lexer = Lexer::new('\\');
    let parse = |expected: &str| -> Vec<String> {
        if expected.is_empty() {
            Vec::new()
        } else {
            expected.split(',').map(str::to_owned).collect()
        }
    };
    check_table(FIELDS, |input, env| lexer.process_words(input, env), parse);
}

#[test]
fn doc_example() {
    let env = vec![("NAME".to_string(), "kiln app".to_string())];
    let lex = Lexer::new('\\');
    assert_eq!(
        lex.process_word("/opt/${NAME// /-}", &env).unwrap(),
        "/opt/kiln-app"
    );
    assert_eq!(
        lex.process_words("a $NAME 'b c'", &env).unwrap(),
        ["a", "kiln", "app", "b c"]
    );
}

fn names(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| n.to_string()).collect()
}

#[test]
fn matches_record_every_lookup() {
    let env = [("A", "1"), ("E", ""), ("P", "x")];
    let result = Lexer::default()
        .process_word_with_matches("$A ${B:-$C} ${E:+$D} ${A#$P} ${U//$P/y} '$Q' \\$R", &env)
        .unwrap();
    assert_eq!(
        result,
        ProcessWordResult {
            result: "1   1  $Q $R".into(),
            words: vec!["1".into(), "1".into(), "$Q".into(), "$R".into()],
            matched: names(&["A", "E", "P"]),
            unmatched: names(&["B", "C", "D", "U"]),
        }
    );
}

#[test]
fn matches_include_positional_and_special_names() {
    let result = Lexer::default()
        .process_word_with_matches("$1$@${#}", &[("1", "one")])
        .unwrap();
    assert_eq!(result.result, "one");
    assert_eq!(result.matched, names(&["1"]));
    assert_eq!(result.unmatched, names(&["#", "@"]));
}

#[test]
fn words_and_result_come_from_one_pass() {
    let result = Lexer::default()
        .process_word_with_matches("a $S 'c d'", &[("S", "b  b")])
        .unwrap();
    assert_eq!(result.result, "a b  b c d");
    assert_eq!(result.words, ["a", "b", "b", "c d"]);
}

#[test]
fn raw_quotes_keep_quote_characters() {
    let lexer = Lexer {
        raw_quotes: true,
        ..Lexer::default()
    };
    let env = [("X", "1")];
    assert_eq!(
        lexer.process_word(r#"'a $X'"b $X""#, &env).unwrap(),
        r#"'a $X'"b 1""#
    );
    assert_eq!(
        lexer.process_words(r#"'a b' "c d""#, &env).unwrap(),
        ["'a b'", "\"c d\""]
    );
}

#[test]
fn raw_escapes_keep_the_escape_token() {
    let lexer = Lexer {
        raw_escapes: true,
        ..Lexer::default()
    };
    let env = [("X", "1")];
    assert_eq!(lexer.process_word(r"a\ b\$X", &env).unwrap(), r"a\ b\$X");
    // Like BuildKit, an escape token that escapes nothing inside double
    // quotes is written twice: once as the raw escape, once as itself.
    assert_eq!(
        lexer.process_word(r#""\$X\"\q""#, &env).unwrap(),
        r#"\$X\"\\q"#
    );
    // The word of `-`, `+` and `?` is always processed with escapes removed.
    assert_eq!(lexer.process_word(r"${U:-\}}", &env).unwrap(), "}");
    let backtick = Lexer {
        raw_escapes: true,
        ..Lexer::new('`')
    };
    assert_eq!(backtick.process_word("`$X", &env).unwrap(), "`$X");
}

#[test]
fn skip_unset_env_keeps_unset_references() {
    let lexer = Lexer {
        skip_unset_env: true,
        ..Lexer::default()
    };
    let env = [("A", "1"), ("E", "")];
    let input = "$U ${U} ${U:-$A} ${U//a/$A} ${U/a/b} ${U?gone} ${U#x} $A ${E:-e} ${A:+set}";
    assert_eq!(
        lexer.process_word(input, &env).unwrap(),
        "$U ${U} ${U:-1} ${U//a/1} ${U/a/b} ${U?gone} ${U#x} 1 e set"
    );
    let result = lexer.process_word_with_matches("$U", &env).unwrap();
    assert_eq!(result.unmatched, names(&["U"]));
}

#[test]
fn skip_process_quotes_makes_quotes_ordinary() {
    let lexer = Lexer {
        skip_process_quotes: true,
        ..Lexer::default()
    };
    let env = [("X", "1")];
    assert_eq!(
        lexer.process_word(r#"'$X' "$X"#, &env).unwrap(),
        r#"'1' "1"#
    );
    assert_eq!(lexer.process_words("'a b'", &env).unwrap(), ["'a", "b'"]);
}

#[test]
fn lexer_defaults() {
    assert_eq!(Lexer::default(), Lexer::new('\\'));
    assert_eq!(Lexer::new('`').escape, '`');
    let lexer = Lexer::new('\\');
    assert!(
        !lexer.raw_quotes
            && !lexer.raw_escapes
            && !lexer.skip_process_quotes
            && !lexer.skip_unset_env
    );
}

#[test]
fn env_implementations_agree() {
    let pairs = vec![
        ("B".to_string(), "old".to_string()),
        ("A".to_string(), "1".to_string()),
        ("B".to_string(), "2".to_string()),
    ];
    let hash: HashMap<String, String> = pairs.iter().cloned().collect();
    let btree: BTreeMap<String, String> = pairs.iter().cloned().collect();
    let slice: &[(String, String)] = &pairs;
    let envs: [&dyn Env; 5] = [&pairs, &slice, &hash, &btree, &[("A", "1"), ("B", "2")]];
    for env in envs {
        assert_eq!(env.get("A").as_deref(), Some("1"));
        assert_eq!(env.get("B").as_deref(), Some("2"));
        assert_eq!(env.get("C"), None);
        let mut keys = env.keys();
        keys.sort();
        assert_eq!(keys, ["A", "B"]);
        assert_eq!(Lexer::default().process_word("$A$B$C", env).unwrap(), "12");
    }
    assert_eq!(Env::keys(&pairs), ["B", "A"], "first-seen order, once each");
    assert_eq!(Env::keys(&hash), ["A", "B"], "sorted");
}

#[test]
fn errors_expose_their_kind() {
    let lexer = Lexer::default();
    let empty: [(&str, &str); 0] = [];
    let cases: [(&str, ShellErrorKind); 8] = [
        ("'x", ShellErrorKind::UnterminatedSingleQuote),
        ("\"x", ShellErrorKind::UnterminatedDoubleQuote),
        ("${X", ShellErrorKind::MissingBrace),
        ("${X/y", ShellErrorKind::MissingSlash),
        ("${}", ShellErrorKind::BadSubstitution),
        (
            "${X:=y}",
            ShellErrorKind::UnsupportedModifier {
                modifier: ":=".into(),
            },
        ),
        (
            "${X?}",
            ShellErrorKind::RequiredUnset {
                name: "X".into(),
                message: None,
            },
        ),
        (
            r"${X#\y}",
            ShellErrorKind::InvalidPattern {
                pattern: r"\y".into(),
                source: PatternError::InvalidEscape('y'),
            },
        ),
    ];
    for (input, kind) in cases {
        let err = lexer.process_word(input, &empty).unwrap_err();
        assert_eq!(err.kind(), &kind, "{input}");
        assert_eq!(err.word(), input);
    }
    let err = lexer
        .process_word("${X:?$M}", &[("X", ""), ("M", "set X")])
        .unwrap_err();
    assert_eq!(
        err.kind(),
        &ShellErrorKind::RequiredEmpty {
            name: "X".into(),
            message: Some("set X".into())
        }
    );
    assert_eq!(chain(&err), r#"failed to process "${X:?$M}": X: set X"#);
}

#[test]
fn nesting_is_bounded_not_a_stack_overflow() {
    let lexer = Lexer::default();
    let empty: [(&str, &str); 0] = [];
    let nested = |n: usize| format!("{}x{}", "\"${U:-".repeat(n), "}\"".repeat(n));
    assert_eq!(
        lexer.process_word(&nested(MAX_NESTING), &empty).unwrap(),
        "x"
    );
    let err = lexer.process_word(&nested(50_000), &empty).unwrap_err();
    assert_eq!(err.kind(), &ShellErrorKind::TooDeep { limit: MAX_NESTING });
}

#[test]
fn long_inputs_stay_linear() {
    let lexer = Lexer::default();
    let env = [("V", "ab".repeat(1_000))];
    let input = format!("{}${{V//a/x}}", "x$V ".repeat(2_000));
    let result = lexer.process_words(&input, &env).unwrap();
    assert_eq!(result.len(), 2_001);
    assert_eq!(result[2_000], "xb".repeat(1_000));
}

/// Characters that steer the lexer, mixed with arbitrary ones.
fn shellish() -> impl Strategy<Value = String> {
    let ch = prop_oneof![
        4 => prop::sample::select(vec![
            '$', '{', '}', ':', '-', '+', '?', '#', '%', '/', '*', '=', '.', '@', '!', '\\', '`',
            '\'', '"', ' ', '\t', '\n', 'A', 'B', 'a', '0', '1', '_', '[', ']', '한', '\u{feff}',
        ]),
        1 => any::<char>(),
    ];
    prop::collection::vec(ch, 0..48).prop_map(String::from_iter)
}

fn arbitrary_env() -> impl Strategy<Value = Vec<(String, String)>> {
    let name = prop::sample::select(vec!["A", "B", "a", "1", "@", "_", ""]).prop_map(str::to_owned);
    prop::collection::vec((name, shellish()), 0..5)
}

fn arbitrary_lexer() -> impl Strategy<Value = Lexer> {
    (prop::sample::select(vec!['\\', '`']), any::<[bool; 4]>()).prop_map(|(escape, flags)| Lexer {
        raw_quotes: flags[0],
        raw_escapes: flags[1],
        skip_process_quotes: flags[2],
        skip_unset_env: flags[3],
        ..Lexer::new(escape)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn never_panics(input in shellish(), env in arbitrary_env(), lexer in arbitrary_lexer()) {
        let word = lexer.process_word(&input, &env);
        let words = lexer.process_words(&input, &env);
        prop_assert_eq!(word.is_ok(), words.is_ok());
        if let Ok(words) = words {
            prop_assert!(words.iter().all(|w| !w.is_empty()));
        }
        if let Err(e) = word {
            prop_assert!(!chain(&e).is_empty());
        }
    }

    #[test]
    fn arbitrary_unicode_never_panics(input in any::<String>(), escape in prop::sample::select(vec!['\\', '`'])) {
        let env = [("A", "1")];
        let _ = Lexer::new(escape).process_word(&input, &env);
        let _ = Lexer::new(escape).process_words(&input, &env);
    }

    #[test]
    fn text_without_special_characters_is_unchanged(
        input in "[a-zA-Z0-9_./:@=,+ -]{0,40}",
        escape in prop::sample::select(vec!['\\', '`']),
    ) {
        let env = [("A", "1")];
        prop_assert_eq!(Lexer::new(escape).process_word(&input, &env).unwrap(), input.clone());
        let fields: Vec<&str> = input.split_whitespace().collect();
        prop_assert_eq!(Lexer::new(escape).process_words(&input, &env).unwrap(), fields);
    }

    #[test]
    fn single_quotes_are_literal(body in "[^']{0,40}") {
        let empty: [(&str, &str); 0] = [];
        let quoted = format!("'{body}'");
        prop_assert_eq!(Lexer::default().process_word(&quoted, &empty).unwrap(), body);
    }
}
