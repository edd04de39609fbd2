//! Parser directives outside a full parse: finding `# syntax=` (and the
//! other directives) at the top of a file, as BuildKit's `DetectSyntax`
//! and `ParseDirective` do. The full parser records directives itself.

/// A directive found at the top of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundDirective {
    /// The value up to the first space (e.g. the frontend image reference).
    pub reference: String,
    /// The whole value.
    pub cmdline: String,
    /// 1-based line of the directive (0 for the JSON form).
    pub line: usize,
}

/// Matches `<prefix>[ \t]*NAME[ \t]*=[ \t]*VALUE[ \t]*` and returns the name
/// (as written) and value.
pub(crate) fn match_line<'a>(line: &'a str, prefix: &str) -> Option<(&'a str, &'a str)> {
    let rest = line.strip_prefix(prefix)?.trim_start_matches([' ', '\t']);
    let name_len = rest
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit())))
        .map_or(rest.len(), |(i, _)| i);
    if name_len == 0 {
        return None;
    }
    let (name, rest) = rest.split_at(name_len);
    let value = rest
        .trim_start_matches([' ', '\t'])
        .strip_prefix('=')?
        .trim_matches([' ', '\t']);
    (!value.is_empty()).then_some((name, value))
}

/// Scans the directive block at the top of `src` for `key`, with comment
/// prefix `prefix`. A leading shebang line is skipped; the first line that
/// is not a directive ends the block.
fn scan(src: &str, key: &str, prefix: &str) -> Option<FoundDirective> {
    let src = src.strip_prefix('\u{feff}').unwrap_or(src);
    for (i, line) in src.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if i == 0 && line.starts_with("#!") {
            continue;
        }
        let (name, value) = match_line(line.trim_start(), prefix)?;
        if name.eq_ignore_ascii_case(key) {
            let reference = value.split(' ').next().unwrap_or_default().to_string();
            return Some(FoundDirective {
                reference,
                cmdline: value.to_string(),
                line: i + 1,
            });
        }
    }
    None
}

/// BuildKit's `DetectSyntax`: `# syntax=`, else `// syntax=`, else a file
/// that is a whole JSON object with a string `syntax` field.
pub fn detect_syntax(src: &str) -> Option<FoundDirective> {
    if let Some(d) = scan(src, "syntax", "#").or_else(|| scan(src, "syntax", "//")) {
        return Some(d);
    }
    let obj: serde_json::Map<String, serde_json::Value> = serde_json::from_str(src).ok()?;
    let value = obj.get("syntax")?.as_str()?;
    let reference = value.split(' ').next().unwrap_or_default().to_string();
    Some(FoundDirective {
        reference,
        cmdline: value.to_string(),
        line: 0,
    })
}

/// BuildKit's `ParseDirective` for a key other than `syntax`: only `#`
/// comments count.
pub fn parse_directive(key: &str, src: &str) -> Option<FoundDirective> {
    scan(src, key, "#")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_syntax() {
        let d = detect_syntax("# syntax = docker/dockerfile:1 // x\nFROM a").unwrap();
        assert_eq!((d.reference.as_str(), d.line), ("docker/dockerfile:1", 1));
        assert_eq!(detect_syntax("#!/bin/sh\n# syntax=a\n").unwrap().line, 2);
        assert!(detect_syntax("#!/bin/sh\n\n# syntax=a\n").is_none());
        assert_eq!(detect_syntax("//syntax=foo").unwrap().reference, "foo");
        assert_eq!(detect_syntax("{\"syntax\": \"j\"}").unwrap().reference, "j");
        assert!(parse_directive("check", "//check=skip=all").is_none());
        assert_eq!(
            parse_directive("check", "#check = skip=all // o")
                .unwrap()
                .reference,
            "skip=all"
        );
    }
}
