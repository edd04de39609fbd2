//! Reading an ignore file: `moby/patternmatcher/ignorefile.ReadAll`.

use super::IgnoreError;
use super::path::clean_path;

/// Go's `bufio.MaxScanTokenSize`: `ReadAll` fails on a line this long.
const MAX_LINE: usize = 64 * 1024;

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// Reads the patterns of a `.dockerignore` file, as Docker's
/// `ignorefile.ReadAll` does.
///
/// - Lines end at `\n`; one `\r` before it is dropped.
/// - A UTF-8 BOM at the start of the first line is stripped.
/// - Lines whose first byte is `#` are comments (` # x` is a pattern).
/// - Whitespace is trimmed and empty lines are skipped.
/// - A leading `!` is kept (the rest is trimmed again), and the pattern is
///   cleaned with [`clean_path`](super::clean_path), then a leading `/` is
///   dropped: `/a/./b` and `a/b` are the same pattern. A lone `!` is
///   returned as is; [`PatternMatcher::new`](super::PatternMatcher::new)
///   rejects it.
///
/// Fails on a line of 64 KiB or more (as Go's scanner does) and on a
/// pattern line that is not UTF-8.
///
/// ```
/// use kiln_patterns::read_ignore_file;
/// let patterns = read_ignore_file(b"# build output\n/target/\n! /target/keep \n").unwrap();
/// assert_eq!(patterns, ["target", "!target/keep"]);
/// ```
pub fn read_ignore_file(content: &[u8]) -> Result<Vec<String>, IgnoreError> {
    let mut patterns = Vec::new();
    for (index, line) in lines(content).enumerate() {
        let number = index + 1;
        if line.len() >= MAX_LINE {
            return Err(IgnoreError::LineTooLong { line: number });
        }
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let line = if index == 0 {
            line.strip_prefix(UTF8_BOM).unwrap_or(line)
        } else {
            line
        };
        if line.starts_with(b"#") {
            continue;
        }
        let line =
            std::str::from_utf8(line).map_err(|_| IgnoreError::InvalidUtf8 { line: number })?;
        if let Some(pattern) = normalize(line) {
            patterns.push(pattern);
        }
    }
    Ok(patterns)
}

/// The lines of `content` as Go's `bufio.ScanLines` yields them, except
/// that the `\r` is still attached (so the length check sees what Go's
/// buffer holds): split at `\n`, and a last line without `\n` only if it is
/// not empty.
fn lines(content: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = content;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        match rest.iter().position(|&b| b == b'\n') {
            Some(i) => {
                let line = &rest[..i];
                rest = &rest[i + 1..];
                Some(line)
            }
            None => {
                let line = rest;
                rest = &[];
                Some(line)
            }
        }
    })
}

/// Trims, keeps `!`, cleans and drops a leading `/`; `None` for a blank
/// line.
fn normalize(line: &str) -> Option<String> {
    let pattern = line.trim();
    if pattern.is_empty() {
        return None;
    }
    let (invert, pattern) = match pattern.strip_prefix('!') {
        Some(rest) => (true, rest.trim()),
        None => (false, pattern),
    };
    let mut out = String::with_capacity(pattern.len() + 1);
    if invert {
        out.push('!');
    }
    if !pattern.is_empty() {
        let cleaned = clean_path(pattern);
        match cleaned.strip_prefix('/') {
            Some(relative) if !relative.is_empty() => out.push_str(relative),
            _ => out.push_str(&cleaned),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(content: &str) -> Vec<String> {
        read_ignore_file(content.as_bytes()).unwrap()
    }

    #[test]
    fn upstream_example() {
        let content = "test1\n/test2\n/a/file/here\n\nlastfile\n# this is a comment\n! /inverted/abs/path\n!\n! ";
        assert_eq!(
            read(content),
            [
                "test1",
                "test2",
                "a/file/here",
                "lastfile",
                "!inverted/abs/path",
                "!",
                "!"
            ]
        );
    }

    #[test]
    fn empty_input() {
        assert!(read("").is_empty());
        assert!(read("\n\n   \n\t\n").is_empty());
    }

    #[test]
    fn bom_only_on_the_first_line() {
        assert_eq!(read("\u{feff}a\n\u{feff}b"), ["a", "\u{feff}b"]);
        // A BOM before a comment: the comment is still a comment.
        assert!(read("\u{feff}# comment").is_empty());
    }

    #[test]
    fn comments_only_in_column_zero() {
        assert_eq!(read("#a\n #b\n\t#c"), ["#b", "#c"]);
    }

    #[test]
    fn crlf_and_whitespace() {
        assert_eq!(read("a\r\nb \r\n\tc\t\r\n"), ["a", "b", "c"]);
        // Only one `\r` is part of the line ending; the rest is whitespace.
        assert_eq!(read("a\r\r\n"), ["a"]);
    }

    #[test]
    fn cleaning_and_leading_slash() {
        assert_eq!(
            read("/\n//\n/.\n./a/../b/\na//b///\n!/\n!./x"),
            ["/", "/", "/", "b", "a/b", "!/", "!x"]
        );
        assert_eq!(read(".\n..\n../a"), [".", "..", "../a"]);
    }

    #[test]
    fn exclamation_spacing() {
        assert_eq!(read("!  a b  \n  !c"), ["!a b", "!c"]);
        assert_eq!(read("!!a"), ["!!a"]);
    }

    #[test]
    fn comment_lines_may_be_binary() {
        assert_eq!(read_ignore_file(b"#\xff\xfe\nok").unwrap(), ["ok"]);
        assert_eq!(
            read_ignore_file(b"ok\nbad\xff\n"),
            Err(IgnoreError::InvalidUtf8 { line: 2 })
        );
    }

    #[test]
    fn line_length_limit_matches_go_scanner() {
        let ok = "a".repeat(MAX_LINE - 1);
        assert_eq!(
            read_ignore_file(format!("{ok}\nb").as_bytes())
                .unwrap()
                .len(),
            2
        );
        assert_eq!(
            read_ignore_file(ok.as_bytes()).unwrap(),
            std::slice::from_ref(&ok)
        );
        let long = "a".repeat(MAX_LINE);
        assert_eq!(
            read_ignore_file(format!("x\n{long}").as_bytes()),
            Err(IgnoreError::LineTooLong { line: 2 })
        );
        // The `\r` counts: Go's buffer holds it until the line is split.
        let with_cr = format!("{ok}\r\n");
        assert_eq!(
            read_ignore_file(with_cr.as_bytes()),
            Err(IgnoreError::LineTooLong { line: 1 })
        );
    }
}
