//! Go's lexical path functions (`path/filepath` on Unix), which decide how
//! patterns and paths are normalised before matching.

/// Go's `filepath.Clean` on Unix: the shortest path equivalent to `path`,
/// by purely lexical processing.
///
/// - Runs of `/` become one `/`.
/// - `.` elements are removed.
/// - A `..` element removes the non-`..` element before it; `..` right
///   after the root is dropped (`/..` is `/`).
/// - A trailing `/` is removed, except for the root itself.
/// - An empty result is `.`.
///
/// ```
/// use kiln_patterns::clean_path;
/// assert_eq!(clean_path("a//b/./c/.."), "a/b");
/// assert_eq!(clean_path("/../x/"), "/x");
/// assert_eq!(clean_path("../../a"), "../../a");
/// assert_eq!(clean_path(""), ".");
/// ```
pub fn clean_path(path: &str) -> String {
    if path.is_empty() {
        return ".".to_string();
    }
    let bytes = path.as_bytes();
    let n = bytes.len();
    let rooted = bytes[0] == b'/';
    // `out` only ever receives whole elements and ASCII separators, so it
    // stays valid UTF-8.
    let mut out: Vec<u8> = Vec::with_capacity(n);
    let mut r = 0;
    // Index in `out` below which `..` can't backtrack.
    let mut dotdot = 0;
    if rooted {
        out.push(b'/');
        r = 1;
        dotdot = 1;
    }
    while r < n {
        let is_end = |i: usize| i == n || bytes[i] == b'/';
        if bytes[r] == b'/' || (bytes[r] == b'.' && is_end(r + 1)) {
            r += 1;
        } else if bytes[r] == b'.' && r + 1 < n && bytes[r + 1] == b'.' && is_end(r + 2) {
            r += 2;
            if out.len() > dotdot {
                let mut w = out.len() - 1;
                while w > dotdot && out[w] != b'/' {
                    w -= 1;
                }
                out.truncate(w);
            } else if !rooted {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(b"..");
                dotdot = out.len();
            }
        } else {
            if (rooted && out.len() != 1) || (!rooted && !out.is_empty()) {
                out.push(b'/');
            }
            while r < n && bytes[r] != b'/' {
                out.push(bytes[r]);
                r += 1;
            }
        }
    }
    if out.is_empty() {
        return ".".to_string();
    }
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Go's `filepath.Dir` on Unix: everything before the last `/`, cleaned.
/// A path without `/` gives `.`.
pub(crate) fn dir(path: &str) -> String {
    match path.rfind('/') {
        Some(i) => clean_path(&path[..=i]),
        None => ".".to_string(),
    }
}

/// The prefixes of `parent` that end before each `/` and at its end: what
/// Go gets by splitting `parent` on `/` and re-joining the first `i + 1`
/// elements. `a/b/c` gives `a`, `a/b`, `a/b/c`; `/` gives `` and `/`.
pub(crate) fn parent_prefixes(parent: &str) -> impl Iterator<Item = &str> {
    parent
        .match_indices('/')
        .map(|(i, _)| &parent[..i])
        .chain(std::iter::once(parent))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_matches_go() {
        // From Go's path/filepath cleantests (Unix), plus a few of our own.
        let cases = [
            ("abc", "abc"),
            ("abc/def", "abc/def"),
            ("a/b/c", "a/b/c"),
            (".", "."),
            ("..", ".."),
            ("../..", "../.."),
            ("../../abc", "../../abc"),
            ("/abc", "/abc"),
            ("/", "/"),
            ("", "."),
            ("abc/", "abc"),
            ("abc/def/", "abc/def"),
            ("a/b/c/", "a/b/c"),
            ("./", "."),
            ("../", ".."),
            ("../../", "../.."),
            ("/abc/", "/abc"),
            ("abc//def//ghi", "abc/def/ghi"),
            ("//abc", "/abc"),
            ("///abc", "/abc"),
            ("//abc//", "/abc"),
            ("abc//", "abc"),
            ("abc/./def", "abc/def"),
            ("/./abc/def", "/abc/def"),
            ("abc/.", "abc"),
            ("abc/def/ghi/../jkl", "abc/def/jkl"),
            ("abc/def/../ghi/../jkl", "abc/jkl"),
            ("abc/def/..", "abc"),
            ("abc/def/../..", "."),
            ("/abc/def/../..", "/"),
            ("abc/def/../../..", ".."),
            ("/abc/def/../../..", "/"),
            ("abc/def/../../../ghi/jkl/../../../mno", "../../mno"),
            ("/../abc", "/abc"),
            ("a/../b:/../../c", "../c"),
            ("abc/./../def", "def"),
            ("abc//./../def", "def"),
            ("abc/../../././../def", "../../def"),
            ("!foo/../bar", "bar"),
            ("héllo//wörld/.", "héllo/wörld"),
        ];
        for (input, want) in cases {
            assert_eq!(clean_path(input), want, "clean_path({input:?})");
        }
    }

    #[test]
    fn dir_matches_go() {
        let cases = [
            ("", "."),
            ("file", "."),
            ("file/", "file"),
            ("dir/file", "dir"),
            ("dir/file/", "dir/file"),
            ("/", "/"),
            ("/a", "/"),
            ("a//b", "a"),
        ];
        for (input, want) in cases {
            assert_eq!(dir(input), want, "dir({input:?})");
        }
    }

    #[test]
    fn parent_prefixes_rejoin_split_elements() {
        let got: Vec<&str> = parent_prefixes("a/b/c").collect();
        assert_eq!(got, ["a", "a/b", "a/b/c"]);
        let got: Vec<&str> = parent_prefixes("/").collect();
        assert_eq!(got, ["", "/"]);
        let got: Vec<&str> = parent_prefixes("x").collect();
        assert_eq!(got, ["x"]);
    }
}
