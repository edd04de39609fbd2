//! `--chmod` values applied to copied files: an octal mode, or a symbolic
//! one (`u+x,go-w`, `a=rX`) applied to each file's own mode, as chmod(1).

use crate::error::{Error, Result};

/// A parsed `--chmod`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ModeChange {
    Octal(u32),
    Symbolic(Vec<Clause>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Clause {
    /// Bits selected by `u`/`g`/`o`/`a` (all when none given).
    who: u32,
    op: char,
    perms: String,
}

impl ModeChange {
    pub(crate) fn from_op(chmod: &kiln_solver::Chmod) -> Result<ModeChange> {
        match chmod {
            kiln_solver::Chmod::Octal(m) => Ok(ModeChange::Octal(*m & 0o7777)),
            kiln_solver::Chmod::Symbolic(s) => parse_symbolic(s).ok_or_else(|| Error::Invalid {
                what: "chmod",
                value: s.clone(),
                reason: "neither an octal mode nor a symbolic one".to_owned(),
            }),
        }
    }

    /// The permission bits (with setuid/setgid/sticky) a file with mode
    /// `mode` ends up with.
    pub(crate) fn apply(&self, mode: u32, is_dir: bool) -> u32 {
        match self {
            ModeChange::Octal(m) => *m,
            ModeChange::Symbolic(clauses) => {
                let mut cur = mode & 0o7777;
                for c in clauses {
                    let mut bits = 0;
                    for p in c.perms.chars() {
                        bits |= match p {
                            'r' => 0o444,
                            'w' => 0o222,
                            'x' => 0o111,
                            'X' if is_dir || cur & 0o111 != 0 => 0o111,
                            's' => 0o6000,
                            't' => 0o1000,
                            _ => 0,
                        };
                    }
                    let bits = bits & c.who;
                    cur = match c.op {
                        '+' => cur | bits,
                        '-' => cur & !bits,
                        _ => (cur & !(c.who & 0o7777)) | bits,
                    };
                }
                cur
            }
        }
    }
}

fn parse_symbolic(s: &str) -> Option<ModeChange> {
    let mut clauses = Vec::new();
    for part in s.split(',') {
        let pos = part.find(['+', '-', '='])?;
        let (who_s, rest) = part.split_at(pos);
        let mut who = 0;
        for c in who_s.chars() {
            who |= match c {
                'u' => 0o4700,
                'g' => 0o2070,
                'o' => 0o1007,
                'a' => 0o7777,
                _ => return None,
            };
        }
        let mut chars = rest.chars();
        let op = chars.next()?;
        let perms: String = chars.collect();
        if !perms
            .chars()
            .all(|c| matches!(c, 'r' | 'w' | 'x' | 'X' | 's' | 't'))
        {
            return None;
        }
        clauses.push(Clause {
            who: if who == 0 { 0o7777 } else { who },
            op,
            perms,
        });
    }
    (!clauses.is_empty()).then_some(ModeChange::Symbolic(clauses))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sym(s: &str) -> ModeChange {
        parse_symbolic(s).unwrap()
    }

    #[test]
    fn symbolic_modes() {
        assert_eq!(sym("u+x").apply(0o644, false), 0o744);
        assert_eq!(sym("go-w").apply(0o666, false), 0o644);
        assert_eq!(sym("a=rX").apply(0o700, true), 0o555);
        assert_eq!(sym("a=rX").apply(0o600, false), 0o444);
        assert_eq!(sym("+x").apply(0o600, false), 0o711);
        assert_eq!(sym("o=").apply(0o757, false), 0o750);
        assert!(parse_symbolic("q+x").is_none());
        assert_eq!(ModeChange::Octal(0o755).apply(0o600, false), 0o755);
    }
}
