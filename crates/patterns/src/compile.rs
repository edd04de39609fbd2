//! Turning a cleaned pattern into Docker's match strategy and regular
//! expression (`Pattern.compile` in moby/patternmatcher).
//!
//! The rewrite is textual and has no notion of brackets: `*` always becomes
//! `[^/]*`, `?` becomes `[^/]`, `**` becomes `(.*/)?` (or `.*` at the end),
//! the regexp metacharacters `.+()|{}$` are escaped, `\x` is copied as is,
//! and everything else (including `[`, `]` and `^`) is copied verbatim. The
//! result is Go RE2 syntax; [`super::re2`] reads it.

use super::matcher::MatchKind;

/// Characters that are special in a regexp but not in a glob.
const REGEXP_ONLY_META: &str = ".+()|{}$";

/// Classifies `pattern` (already cleaned, without `!`) and builds the Go
/// regular expression Docker would compile for it. The expression is only
/// meaningful for [`MatchKind::Regexp`].
pub(crate) fn compile(pattern: &str) -> (MatchKind, String) {
    let mut regexp = String::with_capacity(pattern.len() * 2 + 2);
    regexp.push('^');
    let mut kind = MatchKind::Exact;
    let mut chars = pattern.chars().peekable();
    // Go reads the pattern with `text/scanner`, which skips a leading BOM.
    chars.next_if_eq(&'\u{feff}');
    let mut index = 0;
    while let Some(ch) = chars.next() {
        match ch {
            '*' if chars.next_if_eq(&'*').is_some() => {
                // `**/` is treated as `**`.
                chars.next_if_eq(&'/');
                if chars.peek().is_none() {
                    // A trailing `**` accepts everything, like .gitignore.
                    if kind == MatchKind::Exact {
                        kind = MatchKind::Prefix;
                    } else {
                        regexp.push_str(".*");
                        kind = MatchKind::Regexp;
                    }
                } else {
                    // Any number of directories, even none.
                    regexp.push_str("(.*/)?");
                    kind = MatchKind::Regexp;
                }
                if index == 0 {
                    kind = MatchKind::Suffix;
                }
            }
            '*' => {
                regexp.push_str("[^/]*");
                kind = MatchKind::Regexp;
            }
            '?' => {
                regexp.push_str("[^/]");
                kind = MatchKind::Regexp;
            }
            _ if REGEXP_ONLY_META.contains(ch) => {
                regexp.push('\\');
                regexp.push(ch);
            }
            '\\' => {
                regexp.push('\\');
                if let Some(next) = chars.next() {
                    regexp.push(next);
                    kind = MatchKind::Regexp;
                }
            }
            '[' | ']' => {
                regexp.push(ch);
                kind = MatchKind::Regexp;
            }
            _ => regexp.push(ch),
        }
        index += 1;
    }
    if kind == MatchKind::Regexp {
        regexp.push('$');
    }
    (kind, regexp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_and_regexp() {
        use MatchKind::*;
        let cases = [
            ("*", Regexp, "^[^/]*$"),
            ("file*", Regexp, "^file[^/]*$"),
            ("*file", Regexp, "^[^/]*file$"),
            ("a*/b", Regexp, "^a[^/]*/b$"),
            ("**", Suffix, "^"),
            ("**/**", Regexp, "^(.*/)?.*$"),
            ("dir/**", Prefix, "^dir/"),
            ("**/dir", Suffix, "^(.*/)?dir"),
            ("**/dir2/*", Regexp, "^(.*/)?dir2/[^/]*$"),
            ("**/dir2/**", Regexp, "^(.*/)?dir2/.*$"),
            ("**file", Suffix, "^(.*/)?file"),
            ("**/file*txt", Regexp, "^(.*/)?file[^/]*txt$"),
            ("**/**/*.txt", Regexp, "^(.*/)?(.*/)?[^/]*\\.txt$"),
            ("a[b-d]e", Regexp, "^a[b-d]e$"),
            (".*", Regexp, "^\\.[^/]*$"),
            ("abc.def", Exact, "^abc\\.def"),
            ("abc?def", Regexp, "^abc[^/]def$"),
            ("a.|)$(}+{bc", Exact, "^a\\.\\|\\)\\$\\(\\}\\+\\{bc"),
            ("[*]", Regexp, "^[[^/]*]$"),
            ("[**]", Regexp, "^[(.*/)?]$"),
            ("a\\*b", Regexp, "^a\\*b$"),
            ("a^b", Exact, "^a^b"),
            ("\u{feff}a*", Regexp, "^a[^/]*$"),
            ("\u{feff}**", Suffix, "^"),
            ("abc**", Prefix, "^abc"),
        ];
        // The expression only matters for `Regexp`, but is checked for all.
        for (pattern, kind, regexp) in cases {
            assert_eq!(compile(pattern), (kind, regexp.to_string()), "{pattern:?}");
        }
    }
}
