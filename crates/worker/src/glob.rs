//! Shell-style wildcards (`*`, `?`, `[...]`, `\` escapes) on path
//! segments, as Go's `filepath.Match` reads them, plus `**` across
//! segments: `COPY` sources and the paths a local source follows.
//! Exclude patterns are `kiln-patterns`' (Docker's `.dockerignore`
//! matcher).

/// Whether `s` contains a wildcard character.
pub(crate) fn has_wildcard(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// Matches one path segment against one pattern segment. A malformed
/// bracket expression never matches.
pub(crate) fn match_segment(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    match_from(&p, &n)
}

fn match_from(p: &[char], n: &[char]) -> bool {
    let (mut pi, mut ni) = (0usize, 0usize);
    // Backtracking point for the last `*`.
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() {
            match p[pi] {
                '*' => {
                    star = Some((pi, ni));
                    pi += 1;
                    continue;
                }
                '?' => {
                    pi += 1;
                    ni += 1;
                    continue;
                }
                '[' => {
                    if let Some((matched, next)) = match_class(&p[pi..], n[ni])
                        && matched
                    {
                        pi += next;
                        ni += 1;
                        continue;
                    }
                }
                '\\' if pi + 1 < p.len() => {
                    if p[pi + 1] == n[ni] {
                        pi += 2;
                        ni += 1;
                        continue;
                    }
                }
                c => {
                    if c == n[ni] {
                        pi += 1;
                        ni += 1;
                        continue;
                    }
                }
            }
        }
        match star {
            Some((sp, sn)) => {
                pi = sp + 1;
                ni = sn + 1;
                star = Some((sp, sn + 1));
            }
            None => return false,
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Matches `c` against the bracket expression at the start of `p`;
/// returns whether it matched and the expression's length.
fn match_class(p: &[char], c: char) -> Option<(bool, usize)> {
    let mut i = 1;
    let negate = matches!(p.get(i), Some('^' | '!'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let mut lo = *p.get(i)?;
        if lo == ']' && !first {
            i += 1;
            break;
        }
        first = false;
        if lo == '\\' {
            i += 1;
            lo = *p.get(i)?;
        }
        i += 1;
        let mut hi = lo;
        if p.get(i) == Some(&'-') && p.get(i + 1).is_some_and(|&h| h != ']') {
            hi = p[i + 1];
            i += 2;
            if hi == '\\' {
                hi = *p.get(i)?;
                i += 1;
            }
        }
        if lo <= c && c <= hi {
            matched = true;
        }
    }
    Some((matched != negate, i))
}

/// Matches a slash-separated relative path against a pattern of the same
/// shape; `**` matches any number of segments.
pub(crate) fn match_path(pattern: &str, path: &str) -> bool {
    let p: Vec<&str> = pattern.split('/').filter(|s| !s.is_empty()).collect();
    let n: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match_segments(&p, &n)
}

fn match_segments(p: &[&str], n: &[&str]) -> bool {
    match p.first() {
        None => n.is_empty(),
        Some(&"**") => (0..=n.len()).any(|k| match_segments(&p[1..], &n[k..])),
        Some(seg) => !n.is_empty() && match_segment(seg, n[0]) && match_segments(&p[1..], &n[1..]),
    }
}

/// Whether a directory `path` could contain a match of `pattern`: its
/// segments match the pattern's first segments.
pub(crate) fn may_contain(pattern: &str, path: &str) -> bool {
    let p: Vec<&str> = pattern.split('/').filter(|s| !s.is_empty()).collect();
    let n: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    prefix_segments(&p, &n)
}

fn prefix_segments(p: &[&str], n: &[&str]) -> bool {
    if n.is_empty() {
        return !p.is_empty();
    }
    match p.first() {
        None => false,
        Some(&"**") => true,
        Some(seg) => match_segment(seg, n[0]) && prefix_segments(&p[1..], &n[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments() {
        assert!(match_segment("*.txt", "a.txt"));
        assert!(!match_segment("*.txt", "a.txt.bak"));
        assert!(match_segment("a?c", "abc"));
        assert!(match_segment("[a-c]x", "bx"));
        assert!(!match_segment("[!a-c]x", "bx"));
        assert!(match_segment("[^a-c]x", "dx"));
        assert!(match_segment("\\*", "*"));
        assert!(!match_segment("\\*", "a"));
        assert!(match_segment("*", ""));
        assert!(match_segment("a*b*c", "axxbyyc"));
    }

    #[test]
    fn paths() {
        assert!(match_path("a/*/c", "a/b/c"));
        assert!(match_path("**/*.go", "x/y/z.go"));
        assert!(match_path("**/*.go", "z.go"));
        assert!(!match_path("a/*", "a/b/c"));
        assert!(may_contain("a/*/c", "a/b"));
        assert!(!may_contain("a/*/c", "b"));
        assert!(may_contain("**/x", "q/r"));
    }
}
