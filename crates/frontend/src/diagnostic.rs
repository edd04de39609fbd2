//! Code frames for Dockerfile errors, in BuildKit's layout:
//!
//! ```text
//! Dockerfile:3
//! --------------------
//!    1 |     FROM busybox
//!    2 |
//!    3 | >>> RUNN echo hi
//!    4 |     CMD ["sh"]
//! --------------------
//! ```
//!
//! Formatting only: the CLI decides where it goes.

use crate::parser::Span;

/// Lines of context shown before and after the offending lines.
const CONTEXT: usize = 2;
/// The longest run of offending lines shown in full.
const MAX_MARKED: usize = 8;

/// Renders `span` of `source` (the Dockerfile text named `name`).
pub fn code_frame(name: &str, source: &str, span: Span) -> String {
    let lines: Vec<&str> = source
        .lines()
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .collect();
    let start = span.start_line.max(1);
    let end = span.end_line.max(start);
    let location = if start == end {
        format!("{name}:{start}")
    } else {
        format!("{name}:{start}-{end}")
    };
    let mut out = format!("{location}\n--------------------\n");
    if lines.is_empty() || start > lines.len() {
        out.push_str("--------------------\n");
        return out;
    }
    let end = end.min(lines.len());
    let first = start.saturating_sub(CONTEXT).max(1);
    let last = (end + CONTEXT).min(lines.len());
    let width = last.to_string().len().max(4);
    for n in first..=last {
        let marked = (start..=end).contains(&n);
        if marked && n - start == MAX_MARKED && end - start > MAX_MARKED {
            out.push_str(&format!("{:>width$} | >>> ...\n", ""));
            continue;
        }
        if marked && n - start > MAX_MARKED && n != end {
            continue;
        }
        let text = lines[n - 1];
        let marker = if marked { ">>>" } else { "   " };
        let line = format!("{n:>width$} | {marker} {text}");
        out.push_str(line.trim_end());
        out.push('\n');
        if marked && start == end && span.start_col > 1 && n == start {
            // Point at the column where the instruction starts.
            out.push_str(&format!(
                "{:>width$} |     {}^\n",
                "",
                " ".repeat(span.start_col - 1)
            ));
        }
    }
    out.push_str("--------------------\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_marks_lines() {
        let src = "FROM a\n\nRUNN x\nCMD y\nENV z=1\n";
        let f = code_frame("Dockerfile", src, Span::lines(3, 3));
        assert_eq!(
            f,
            "Dockerfile:3\n--------------------\n   1 |     FROM a\n   2 |\n   3 | >>> RUNN x\n   4 |     CMD y\n   5 |     ENV z=1\n--------------------\n"
        );
        let f = code_frame("Dockerfile", "FROM a\nRUN a \\\n  b\n", Span::lines(2, 3));
        assert!(f.starts_with("Dockerfile:2-3\n"));
        assert!(f.contains("   3 | >>>   b\n"));
    }

    #[test]
    fn frame_survives_bad_spans() {
        assert!(code_frame("D", "", Span::lines(4, 2)).starts_with("D:4"));
        assert!(code_frame("D", "a\n", Span::lines(9, 9)).starts_with("D:9"));
    }
}
