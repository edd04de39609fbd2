//! `--chmod` values: octal (`755`, `0644`, `4755`) or symbolic
//! (`u=rwx,go=rx`, `a+X`, `+x`), as `chmod(1)` reads and applies them.
//! The frontend validates them with [`ModeChange::parse`]; the worker
//! applies them to each copied file with [`ModeChange::apply`].

/// A parsed `--chmod` value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ModeChange {
    Octal(u32),
    Symbolic(Vec<Clause>),
}

/// One symbolic clause: `who` op `perms`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Clause {
    /// Bits of u (0o4700), g (0o2070), o (0o1007) selected; `a` or empty
    /// selects all.
    who: u32,
    op: char,
    perms: String,
}

impl ModeChange {
    /// The change an op's [`crate::Chmod`] describes; `None` for a symbolic
    /// value that does not parse.
    pub fn from_op(chmod: &crate::Chmod) -> Option<ModeChange> {
        match chmod {
            crate::Chmod::Octal(m) => Some(ModeChange::Octal(*m & 0o7777)),
            crate::Chmod::Symbolic(s) => ModeChange::parse(s),
        }
    }

    /// Parses a value; `None` when it is neither octal nor symbolic.
    pub fn parse(s: &str) -> Option<ModeChange> {
        if !s.is_empty() && s.chars().all(|c| c.is_ascii_digit()) {
            let mode = u32::from_str_radix(s, 8).ok()?;
            return (mode <= 0o7777).then_some(ModeChange::Octal(mode));
        }
        let mut clauses = Vec::new();
        for part in s.split(',') {
            let op_pos = part.find(['+', '-', '='])?;
            let (who_s, rest) = part.split_at(op_pos);
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

    /// The mode a file ends up with, given its current permission bits.
    pub fn apply(&self, mode: u32, is_dir: bool) -> u32 {
        let mut mode = mode & 0o7777;
        match self {
            ModeChange::Octal(m) => *m,
            ModeChange::Symbolic(clauses) => {
                for c in clauses {
                    let any_exec = mode & 0o111 != 0;
                    let mut bits = 0;
                    for p in c.perms.chars() {
                        bits |= match p {
                            'r' => 0o444,
                            'w' => 0o222,
                            'x' => 0o111,
                            'X' if is_dir || any_exec => 0o111,
                            'X' => 0,
                            's' => 0o6000,
                            't' => 0o1000,
                            _ => 0,
                        };
                    }
                    let bits = bits & c.who;
                    mode = match c.op {
                        '+' => mode | bits,
                        '-' => mode & !bits,
                        _ => (mode & !(c.who & 0o7777)) | bits,
                    };
                }
                mode
            }
        }
    }

    /// Whether the result depends on the source mode (symbolic modes do;
    /// octal modes make the source mode irrelevant, which matters for
    /// cache keys).
    pub fn is_absolute(&self) -> bool {
        matches!(self, ModeChange::Octal(_))
            || matches!(self, ModeChange::Symbolic(c) if c.iter().all(|c| c.op == '=' && c.who == 0o7777 && !c.perms.contains('X')))
    }
}

#[cfg(test)]
mod tests {
    use super::ModeChange;

    #[test]
    fn octal_and_symbolic() {
        assert_eq!(ModeChange::parse("755"), Some(ModeChange::Octal(0o755)));
        assert_eq!(
            ModeChange::parse("0644").unwrap().apply(0o777, false),
            0o644
        );
        assert!(ModeChange::parse("999").is_none());
        assert!(ModeChange::parse("").is_none());
        assert!(ModeChange::parse("u=rwz").is_none());
        let c = ModeChange::parse("u=rwx,go=rx").unwrap();
        assert_eq!(c.apply(0o600, false), 0o755);
        assert_eq!(ModeChange::parse("+x").unwrap().apply(0o644, false), 0o755);
        assert_eq!(ModeChange::parse("a+X").unwrap().apply(0o644, false), 0o644);
        assert_eq!(ModeChange::parse("a+X").unwrap().apply(0o644, true), 0o755);
        assert_eq!(
            ModeChange::parse("go-w").unwrap().apply(0o666, false),
            0o644
        );
        assert_eq!(
            ModeChange::parse("u+s").unwrap().apply(0o755, false),
            0o4755
        );
        assert!(ModeChange::parse("0755").unwrap().is_absolute());
        assert!(!ModeChange::parse("+x").unwrap().is_absolute());
    }

    #[test]
    fn symbolic_modes_as_chmod_applies_them() {
        let sym = |s: &str| ModeChange::parse(s).unwrap();
        assert_eq!(sym("u+x").apply(0o644, false), 0o744);
        assert_eq!(sym("a=rX").apply(0o700, true), 0o555);
        assert_eq!(sym("a=rX").apply(0o600, false), 0o444);
        assert_eq!(sym("+x").apply(0o600, false), 0o711);
        assert_eq!(sym("o=").apply(0o757, false), 0o750);
        assert!(ModeChange::parse("q+x").is_none());
        assert_eq!(
            ModeChange::from_op(&crate::Chmod::Octal(0o10755)),
            Some(ModeChange::Octal(0o755))
        );
        assert_eq!(
            ModeChange::from_op(&crate::Chmod::Symbolic("u+x".into())),
            Some(sym("u+x"))
        );
    }
}
