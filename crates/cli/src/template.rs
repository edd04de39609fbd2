//! A small subset of Go's `text/template`, enough for Docker's `--format`:
//!
//! - text with actions `{{ … }}` (`{{-` and `-}}` trim the whitespace
//!   around them, as in Go);
//! - values: `.` (the data), `.Field` and `.A.B` (object members),
//!   `"string"` and `` `raw` `` literals, integers;
//! - functions, called as `{{fn arg…}}` or at the end of a pipeline
//!   `{{.X | fn}}`: `json`, `join LIST SEP`, `split STR SEP`, `upper`,
//!   `lower`, `title`, `index X KEY…`, `len`, `println`;
//! - values print as Go prints them: lists `[a b]`, objects `map[k:v]`,
//!   missing members `<no value>`, nulls `<nil>`.
//!
//! The data is a `serde_json::Value`. A field missing from the top-level
//! object is an error (Docker's data there is a Go struct); deeper down it
//! prints `<no value>` (Go maps).

use std::fmt::Write as _;

use serde_json::Value;

/// A parse or execution error, worded like Go's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("template: {0}")]
pub struct TemplateError(String);

#[derive(Debug, Clone, PartialEq)]
enum Arg {
    Field(Vec<String>),
    Literal(Value),
}

#[derive(Debug, Clone, PartialEq)]
enum Cmd {
    Value(Arg),
    Call(String, Vec<Arg>),
}

#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Text(String),
    /// A pipeline: each command gets the previous result as last argument.
    Action(Vec<Cmd>),
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    pieces: Vec<Piece>,
}

const FUNCS: &[&str] = &[
    "json", "join", "split", "upper", "lower", "title", "index", "len", "println",
];

impl Template {
    /// Parses a template.
    pub fn parse(src: &str) -> Result<Template, TemplateError> {
        let mut pieces = Vec::new();
        let mut rest = src;
        let mut trim_next = false;
        while let Some(start) = rest.find("{{") {
            let mut text = &rest[..start];
            if trim_next {
                text = text.trim_start();
            }
            let after = &rest[start + 2..];
            let trim_before = after.starts_with("- ") || after == "-" || after.starts_with("-}");
            if trim_before {
                text = text.trim_end();
            }
            if !text.is_empty() {
                pieces.push(Piece::Text(text.to_owned()));
            }
            let end = after
                .find("}}")
                .ok_or_else(|| TemplateError(":1: unclosed action".to_owned()))?;
            let mut inner = &after[..end];
            if trim_before {
                inner = &inner[1..];
            }
            trim_next = inner.ends_with(" -");
            if trim_next {
                inner = &inner[..inner.len() - 2];
            }
            pieces.push(Piece::Action(parse_pipeline(inner.trim())?));
            rest = &after[end + 2..];
        }
        let text = if trim_next { rest.trim_start() } else { rest };
        if !text.is_empty() {
            pieces.push(Piece::Text(text.to_owned()));
        }
        Ok(Template { pieces })
    }

    /// Renders the template with `data` as `.`.
    pub fn render(&self, data: &Value) -> Result<String, TemplateError> {
        let mut out = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Action(cmds) => {
                    let mut last: Option<Value> = None;
                    for cmd in cmds {
                        last = Some(eval_cmd(cmd, data, last.take())?);
                    }
                    if let Some(v) = last {
                        out.push_str(&go_print(&v));
                    }
                }
            }
        }
        Ok(out)
    }
}

fn parse_pipeline(src: &str) -> Result<Vec<Cmd>, TemplateError> {
    let mut cmds = Vec::new();
    for part in split_outside_quotes(src, '|') {
        let words = tokenize(part.trim())?;
        let Some(first) = words.first() else {
            return Err(TemplateError(format!(
                ":1: missing value for command in {{{{{src}}}}}"
            )));
        };
        let cmd = match first {
            Token::Ident(name) => {
                if !FUNCS.contains(&name.as_str()) {
                    return Err(TemplateError(format!(
                        ":1: function \"{name}\" not defined"
                    )));
                }
                let args = words[1..]
                    .iter()
                    .map(token_arg)
                    .collect::<Result<Vec<_>, _>>()?;
                Cmd::Call(name.clone(), args)
            }
            other => {
                if words.len() > 1 {
                    return Err(TemplateError(format!(
                        ":1: can't give argument to non-function {}",
                        part.trim()
                    )));
                }
                Cmd::Value(token_arg(other)?)
            }
        };
        cmds.push(cmd);
    }
    Ok(cmds)
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    Field(Vec<String>),
    Str(String),
    Num(i64),
}

fn token_arg(t: &Token) -> Result<Arg, TemplateError> {
    Ok(match t {
        Token::Field(p) => Arg::Field(p.clone()),
        Token::Str(s) => Arg::Literal(Value::String(s.clone())),
        Token::Num(n) => Arg::Literal(Value::from(*n)),
        Token::Ident(name) => {
            return Err(TemplateError(format!(
                ":1: function {name} used as an argument is not supported"
            )));
        }
    })
}

fn split_outside_quotes(s: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut quote: Option<char> = None;
    let mut start = 0;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match quote {
            Some(q) => {
                if escaped {
                    escaped = false;
                } else if c == '\\' && q == '"' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                }
            }
            None if c == '"' || c == '`' => quote = Some(c),
            None if c == sep => {
                parts.push(&s[start..i]);
                start = i + c.len_utf8();
            }
            None => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

fn tokenize(s: &str) -> Result<Vec<Token>, TemplateError> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '"' {
            chars.next();
            let mut v = String::new();
            loop {
                match chars.next() {
                    None => return Err(TemplateError(":1: unterminated quoted string".into())),
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some('n') => v.push('\n'),
                        Some('t') => v.push('\t'),
                        Some(other) => v.push(other),
                        None => {
                            return Err(TemplateError(":1: unterminated quoted string".into()));
                        }
                    },
                    Some(other) => v.push(other),
                }
            }
            out.push(Token::Str(v));
        } else if c == '`' {
            chars.next();
            let mut v = String::new();
            loop {
                match chars.next() {
                    None => return Err(TemplateError(":1: unterminated raw quoted string".into())),
                    Some('`') => break,
                    Some(other) => v.push(other),
                }
            }
            out.push(Token::Str(v));
        } else {
            let mut word = String::new();
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                word.push(c);
                chars.next();
            }
            out.push(word_token(&word)?);
        }
    }
    Ok(out)
}

fn word_token(word: &str) -> Result<Token, TemplateError> {
    if word == "." {
        return Ok(Token::Field(Vec::new()));
    }
    if let Some(path) = word.strip_prefix('.') {
        let parts: Vec<String> = path.split('.').map(str::to_owned).collect();
        if parts
            .iter()
            .any(|p| p.is_empty() || !p.chars().all(|c| c.is_alphanumeric() || c == '_'))
        {
            return Err(TemplateError(format!(":1: bad field name {word:?}")));
        }
        return Ok(Token::Field(parts));
    }
    if let Ok(n) = word.parse::<i64>() {
        return Ok(Token::Num(n));
    }
    if word.chars().all(|c| c.is_alphanumeric() || c == '_') {
        return Ok(Token::Ident(word.to_owned()));
    }
    Err(TemplateError(format!(":1: unexpected {word:?} in command")))
}

fn eval_arg(arg: &Arg, data: &Value) -> Result<Value, TemplateError> {
    match arg {
        Arg::Literal(v) => Ok(v.clone()),
        Arg::Field(path) => {
            let mut cur = data;
            for (depth, name) in path.iter().enumerate() {
                match cur {
                    Value::Object(map) => match map.get(name) {
                        Some(v) => cur = v,
                        None if depth == 0 => {
                            return Err(TemplateError(format!(
                                ":1: executing \"\" at <.{}>: can't evaluate field {name}",
                                path.join(".")
                            )));
                        }
                        None => return Ok(Value::Null),
                    },
                    Value::Null => return Ok(Value::Null),
                    _ => {
                        return Err(TemplateError(format!(
                            ":1: executing \"\" at <.{}>: can't evaluate field {name} in a non-object",
                            path.join(".")
                        )));
                    }
                }
            }
            Ok(cur.clone())
        }
    }
}

fn eval_cmd(cmd: &Cmd, data: &Value, piped: Option<Value>) -> Result<Value, TemplateError> {
    match cmd {
        Cmd::Value(arg) => {
            if piped.is_some() {
                return Err(TemplateError(
                    ":1: can't give argument to non-function".to_owned(),
                ));
            }
            eval_arg(arg, data)
        }
        Cmd::Call(name, args) => {
            let mut vals = args
                .iter()
                .map(|a| eval_arg(a, data))
                .collect::<Result<Vec<_>, _>>()?;
            vals.extend(piped);
            call(name, &vals)
        }
    }
}

fn want(name: &str, vals: &[Value], n: usize) -> Result<(), TemplateError> {
    if vals.len() == n {
        Ok(())
    } else {
        Err(TemplateError(format!(
            ":1: wrong number of args for {name}: want {n} got {}",
            vals.len()
        )))
    }
}

fn call(name: &str, vals: &[Value]) -> Result<Value, TemplateError> {
    let text = |v: &Value| go_print(v);
    Ok(match name {
        "json" => {
            want(name, vals, 1)?;
            Value::String(go_json(&vals[0]))
        }
        "join" => {
            want(name, vals, 2)?;
            let items: Vec<String> = match &vals[0] {
                Value::Array(a) => a.iter().map(text).collect(),
                Value::Null => Vec::new(),
                other => vec![text(other)],
            };
            Value::String(items.join(&text(&vals[1])))
        }
        "split" => {
            want(name, vals, 2)?;
            let s = text(&vals[0]);
            let sep = text(&vals[1]);
            Value::Array(
                s.split(sep.as_str())
                    .map(|p| Value::String(p.to_owned()))
                    .collect(),
            )
        }
        "upper" => {
            want(name, vals, 1)?;
            Value::String(text(&vals[0]).to_uppercase())
        }
        "lower" => {
            want(name, vals, 1)?;
            Value::String(text(&vals[0]).to_lowercase())
        }
        "title" => {
            want(name, vals, 1)?;
            let s = text(&vals[0]);
            let mut out = String::with_capacity(s.len());
            let mut start = true;
            for c in s.chars() {
                if start {
                    out.extend(c.to_uppercase());
                } else {
                    out.push(c);
                }
                start = c.is_whitespace();
            }
            Value::String(out)
        }
        "len" => {
            want(name, vals, 1)?;
            let n = match &vals[0] {
                Value::Array(a) => a.len(),
                Value::Object(o) => o.len(),
                Value::String(s) => s.len(),
                Value::Null => 0,
                other => {
                    return Err(TemplateError(format!(
                        ":1: error calling len: len of type {}",
                        go_print(other)
                    )));
                }
            };
            Value::from(n)
        }
        "index" => {
            if vals.is_empty() {
                return Err(TemplateError(
                    ":1: wrong number of args for index: want at least 1 got 0".to_owned(),
                ));
            }
            let mut cur = vals[0].clone();
            for key in &vals[1..] {
                cur = match (&cur, key) {
                    (Value::Object(o), k) => o.get(&text(k)).cloned().unwrap_or(Value::Null),
                    (Value::Array(a), Value::Number(n)) => {
                        let i = n.as_u64().unwrap_or(u64::MAX) as usize;
                        a.get(i).cloned().ok_or_else(|| {
                            TemplateError(format!(
                                ":1: error calling index: index out of range: {n}"
                            ))
                        })?
                    }
                    (Value::Null, _) => Value::Null,
                    _ => {
                        return Err(TemplateError(
                            ":1: error calling index: cannot index this value".to_owned(),
                        ));
                    }
                };
            }
            cur
        }
        "println" => {
            let parts: Vec<String> = vals.iter().map(text).collect();
            Value::String(format!("{}\n", parts.join(" ")))
        }
        other => {
            return Err(TemplateError(format!(
                ":1: function \"{other}\" not defined"
            )));
        }
    })
}

/// Prints a value the way Go's `fmt.Print` prints the Go value it stands for.
pub fn go_print(v: &Value) -> String {
    match v {
        Value::Null => "<nil>".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        Value::Array(a) => {
            let items: Vec<String> = a.iter().map(go_print).collect();
            format!("[{}]", items.join(" "))
        }
        Value::Object(o) => {
            let mut s = String::from("map[");
            for (i, (k, v)) in o.iter().enumerate() {
                if i > 0 {
                    s.push(' ');
                }
                let _ = write!(s, "{k}:{}", go_print(v));
            }
            s.push(']');
            s
        }
    }
}

/// JSON as Go's `encoding/json` writes it: compact, with `<`, `>` and `&`
/// escaped.
pub fn go_json<T: serde::Serialize + ?Sized>(v: &T) -> String {
    go_escape(&serde_json::to_string(v).unwrap_or_default())
}

/// Escapes `<`, `>` and `&` as Go's JSON encoder does (they only occur
/// inside strings in JSON text).
pub fn go_escape(json: &str) -> String {
    json.replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn render(t: &str, v: &Value) -> String {
        Template::parse(t).unwrap().render(v).unwrap()
    }

    #[test]
    fn fields_functions_and_pipes() {
        let v = json!({"ID": "abc", "Config": {"Env": ["A=1", "B=2"], "Labels": {"x": "y"}}, "N": null});
        assert_eq!(render("{{.ID}}!", &v), "abc!");
        assert_eq!(render("{{.Config.Env}}", &v), "[A=1 B=2]");
        assert_eq!(render("{{join .Config.Env \",\"}}", &v), "A=1,B=2");
        assert_eq!(render("{{json .Config.Labels}}", &v), "{\"x\":\"y\"}");
        assert_eq!(render("{{.Config.Labels}}", &v), "map[x:y]");
        assert_eq!(render("{{index .Config.Labels \"x\"}}", &v), "y");
        assert_eq!(render("{{.Config.Nope}}", &v), "<nil>");
        assert_eq!(render("{{.ID | upper}}", &v), "ABC");
        assert_eq!(render("{{upper .ID}} {{len .Config.Env}}", &v), "ABC 2");
        assert_eq!(render("a  {{- .ID -}}  b", &v), "aabcb");
        assert_eq!(
            render("{{json .}}", &json!({"a": "<x>"})),
            "{\"a\":\"\\u003cx\\u003e\"}"
        );
    }

    #[test]
    fn errors_read_like_go() {
        let v = json!({"ID": "abc"});
        let e = Template::parse("{{.Nope}}")
            .unwrap()
            .render(&v)
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "template: :1: executing \"\" at <.Nope>: can't evaluate field Nope"
        );
        assert!(Template::parse("{{.ID").is_err());
        assert!(Template::parse("{{nope .ID}}").is_err());
    }
}
