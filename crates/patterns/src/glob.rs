//! Go's `path/filepath.Match` (Unix flavour).
//!
//! Docker only uses it to validate patterns (`filepath.Match(p, ".")` in
//! `patternmatcher.New`): what it rejects is a bad pattern before any path
//! is matched. Matching itself goes through the regular expression (see
//! [`super::compile`]), which disagrees with `filepath.Match` on some
//! inputs, exactly as in Docker.
//!
//! Everything works on bytes, as Go does: literals compare byte by byte,
//! `?` and classes decode one UTF-8 sequence (an invalid one is U+FFFD of
//! width 1), and `*` backtracks one byte at a time.

/// The pattern is malformed (Go's `filepath.ErrBadPattern`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BadGlob;

/// Reports whether `name` matches the shell pattern `pattern`.
///
/// Like Go, it keeps checking the syntax of the rest of the pattern after a
/// mismatch, so `Err` means the pattern is malformed whatever `name` is.
pub(crate) fn glob_match(pattern: &str, name: &str) -> Result<bool, BadGlob> {
    let mut pattern = pattern.as_bytes();
    let mut name = name.as_bytes();
    'chunks: while !pattern.is_empty() {
        let (star, chunk, rest) = scan_chunk(pattern);
        pattern = rest;
        if star && chunk.is_empty() {
            // A trailing `*` matches the rest of the name unless it has a `/`.
            return Ok(!name.contains(&b'/'));
        }
        // Look for a match at the current position. If this is the last
        // chunk, the name must be used up.
        let (t, ok) = match_chunk(chunk, name)?;
        if ok && (t.is_empty() || !pattern.is_empty()) {
            name = t;
            continue;
        }
        if star {
            // Look for a match skipping i + 1 bytes; `*` can't skip `/`.
            let mut i = 0;
            while i < name.len() && name[i] != b'/' {
                let (t, ok) = match_chunk(chunk, &name[i + 1..])?;
                if ok {
                    if pattern.is_empty() && !t.is_empty() {
                        i += 1;
                        continue;
                    }
                    name = t;
                    continue 'chunks;
                }
                i += 1;
            }
        }
        // No match: still check that the rest of the pattern is well formed.
        while !pattern.is_empty() {
            let (_, chunk, rest) = scan_chunk(pattern);
            pattern = rest;
            match_chunk(chunk, b"")?;
        }
        return Ok(false);
    }
    Ok(name.is_empty())
}

/// Splits off the next chunk: leading stars, then everything up to the next
/// `*` outside brackets.
fn scan_chunk(mut pattern: &[u8]) -> (bool, &[u8], &[u8]) {
    let mut star = false;
    while let [b'*', rest @ ..] = pattern {
        pattern = rest;
        star = true;
    }
    let mut in_range = false;
    let mut i = 0;
    while i < pattern.len() {
        match pattern[i] {
            b'\\'
                // A trailing `\` is reported by `match_chunk`.
                if i + 1 < pattern.len() => {
                    i += 1;
                }
            b'[' => in_range = true,
            b']' => in_range = false,
            b'*' if !in_range => break,
            _ => {}
        }
        i += 1;
    }
    (star, &pattern[..i], &pattern[i..])
}

/// Matches a chunk (no `*`) against the start of `s`; on success returns
/// the rest of `s`.
fn match_chunk<'s>(mut chunk: &[u8], mut s: &'s [u8]) -> Result<(&'s [u8], bool), BadGlob> {
    // After a mismatch the loop keeps going to validate the chunk, without
    // reading `s` any more.
    let mut failed = false;
    while let Some(&first) = chunk.first() {
        if !failed && s.is_empty() {
            failed = true;
        }
        match first {
            b'[' => {
                let mut r: u32 = 0;
                if !failed {
                    let (rune, width) = decode_rune(s);
                    r = rune;
                    s = &s[width..];
                }
                chunk = &chunk[1..];
                let mut negated = false;
                if let [b'^', rest @ ..] = chunk {
                    negated = true;
                    chunk = rest;
                }
                let mut matched = false;
                let mut ranges = 0;
                loop {
                    if let [b']', rest @ ..] = chunk
                        && ranges > 0
                    {
                        chunk = rest;
                        break;
                    }
                    let (lo, rest) = get_esc(chunk)?;
                    chunk = rest;
                    let mut hi = lo;
                    if let [b'-', rest @ ..] = chunk {
                        let (h, rest) = get_esc(rest)?;
                        hi = h;
                        chunk = rest;
                    }
                    if lo <= r && r <= hi {
                        matched = true;
                    }
                    ranges += 1;
                }
                if matched == negated {
                    failed = true;
                }
            }
            b'?' => {
                if !failed {
                    if s[0] == b'/' {
                        failed = true;
                    }
                    let (_, width) = decode_rune(s);
                    s = &s[width..];
                }
                chunk = &chunk[1..];
            }
            _ => {
                if first == b'\\' {
                    chunk = &chunk[1..];
                    if chunk.is_empty() {
                        return Err(BadGlob);
                    }
                }
                if !failed {
                    if chunk[0] != s[0] {
                        failed = true;
                    }
                    s = &s[1..];
                }
                chunk = &chunk[1..];
            }
        }
    }
    if failed {
        Ok((&[], false))
    } else {
        Ok((s, true))
    }
}

/// One (possibly escaped) character of a class; fails on `-`, `]`, an
/// invalid sequence, or when nothing would follow it.
fn get_esc(chunk: &[u8]) -> Result<(u32, &[u8]), BadGlob> {
    let mut chunk = match chunk {
        [] | [b'-' | b']', ..] => return Err(BadGlob),
        [b'\\', rest @ ..] => rest,
        _ => chunk,
    };
    if chunk.is_empty() {
        return Err(BadGlob);
    }
    let (rune, width) = decode_rune(chunk);
    if rune == 0xFFFD && width == 1 {
        return Err(BadGlob);
    }
    chunk = &chunk[width..];
    if chunk.is_empty() {
        return Err(BadGlob);
    }
    Ok((rune, chunk))
}

/// Go's `utf8.DecodeRune`: the first scalar value of `b` and its width;
/// U+FFFD of width 1 for an invalid sequence, width 0 for an empty slice.
pub(crate) fn decode_rune(b: &[u8]) -> (u32, usize) {
    let Some(&first) = b.first() else {
        return (0xFFFD, 0);
    };
    let width = match first {
        0x00..=0x7F => return (u32::from(first), 1),
        0xC2..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF4 => 4,
        _ => return (0xFFFD, 1),
    };
    match b.get(..width).map(std::str::from_utf8) {
        Some(Ok(s)) => (s.chars().next().map_or(0xFFFD, u32::from), width),
        _ => (0xFFFD, 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Go's own `filepath.Match` table (Unix).
    #[test]
    fn go_match_table() {
        let cases: &[(&str, &str, Result<bool, BadGlob>)] = &[
            ("abc", "abc", Ok(true)),
            ("*", "abc", Ok(true)),
            ("*c", "abc", Ok(true)),
            ("a*", "a", Ok(true)),
            ("a*", "abc", Ok(true)),
            ("a*", "ab/c", Ok(false)),
            ("a*/b", "abc/b", Ok(true)),
            ("a*/b", "a/c/b", Ok(false)),
            ("a*b*c*d*e*/f", "axbxcxdxe/f", Ok(true)),
            ("a*b*c*d*e*/f", "axbxcxdxexxx/f", Ok(true)),
            ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", Ok(false)),
            ("a*b*c*d*e*/f", "axbxcxdxexxx/fff", Ok(false)),
            ("a*b?c*x", "abxbbxdbxebxczzx", Ok(true)),
            ("a*b?c*x", "abxbbxdbxebxczzy", Ok(false)),
            ("ab[c]", "abc", Ok(true)),
            ("ab[b-d]", "abc", Ok(true)),
            ("ab[e-g]", "abc", Ok(false)),
            ("ab[^c]", "abc", Ok(false)),
            ("ab[^b-d]", "abc", Ok(false)),
            ("ab[^e-g]", "abc", Ok(true)),
            ("a\\*b", "a*b", Ok(true)),
            ("a\\*b", "ab", Ok(false)),
            ("a?b", "a☺b", Ok(true)),
            ("a[^a]b", "a☺b", Ok(true)),
            ("a???b", "a☺b", Ok(false)),
            ("a[^a][^a][^a]b", "a☺b", Ok(false)),
            ("[a-ζ]*", "α", Ok(true)),
            ("*[a-ζ]", "A", Ok(false)),
            ("a?b", "a/b", Ok(false)),
            ("a*b", "a/b", Ok(false)),
            ("[\\]a]", "]", Ok(true)),
            ("[\\-]", "-", Ok(true)),
            ("[x\\-]", "x", Ok(true)),
            ("[x\\-]", "-", Ok(true)),
            ("[x\\-]", "z", Ok(false)),
            ("[\\-x]", "x", Ok(true)),
            ("[\\-x]", "-", Ok(true)),
            ("[\\-x]", "a", Ok(false)),
            ("[]a]", "]", Err(BadGlob)),
            ("[-]", "-", Err(BadGlob)),
            ("[x-]", "x", Err(BadGlob)),
            ("[x-]", "-", Err(BadGlob)),
            ("[x-]", "z", Err(BadGlob)),
            ("[-x]", "x", Err(BadGlob)),
            ("[-x]", "-", Err(BadGlob)),
            ("[-x]", "a", Err(BadGlob)),
            ("\\", "a", Err(BadGlob)),
            ("[a-b-c]", "a", Err(BadGlob)),
            ("[", "a", Err(BadGlob)),
            ("[^", "a", Err(BadGlob)),
            ("[^bc", "a", Err(BadGlob)),
            ("a[", "a", Err(BadGlob)),
            ("a[", "ab", Err(BadGlob)),
            ("a[", "x", Err(BadGlob)),
            ("a/b[", "x", Err(BadGlob)),
            ("*x", "xxx", Ok(true)),
        ];
        for &(pattern, name, want) in cases {
            assert_eq!(
                glob_match(pattern, name),
                want,
                "Match({pattern:?}, {name:?})"
            );
        }
    }

    #[test]
    fn validation_against_dot() {
        // What `patternmatcher.New` accepts.
        for ok in [
            "*",
            "**",
            "a/**/b",
            "[Local-Only]",
            "[*]",
            "[**]",
            "\\[",
            "a\\b",
            "[[:alpha:]]",
            "é*",
        ] {
            assert_eq!(glob_match(ok, ".").map(|_| ()), Ok(()), "{ok:?}");
        }
        for bad in ["[", "a[", "[]", "[^]", "x\\", "[a-", "[a-]", "*[", "[\\"] {
            assert_eq!(glob_match(bad, "."), Err(BadGlob), "{bad:?}");
        }
    }

    #[test]
    fn decode_rune_like_go() {
        assert_eq!(decode_rune(b""), (0xFFFD, 0));
        assert_eq!(decode_rune(b"a"), (u32::from('a'), 1));
        assert_eq!(decode_rune("é".as_bytes()), (0xE9, 2));
        assert_eq!(decode_rune(&"é".as_bytes()[1..]), (0xFFFD, 1));
        assert_eq!(decode_rune(b"\xE2\x98"), (0xFFFD, 1));
        assert_eq!(decode_rune(b"\xED\xA0\x80"), (0xFFFD, 1));
    }
}
