//! Container ids (64 hex digits, random) and generated names
//! (`adjective_surname`, as Docker makes them when `--name` is absent).

use std::io::Read;

const ADJECTIVES: &[&str] = &[
    "agile", "amazing", "brave", "bright", "busy", "calm", "clever", "cool", "curious", "daring",
    "eager", "elated", "epic", "fervent", "festive", "fond", "friendly", "gallant", "gentle",
    "happy", "hopeful", "humble", "jolly", "keen", "kind", "lucid", "merry", "modest", "nimble",
    "noble", "patient", "peaceful", "quirky", "relaxed", "serene", "sharp", "steady", "sweet",
    "tender", "vibrant", "wizardly", "youthful", "zealous",
];

/// Surnames of scientists and engineers.
const SURNAMES: &[&str] = &[
    "agnesi",
    "archimedes",
    "babbage",
    "banach",
    "bardeen",
    "bell",
    "bohr",
    "boole",
    "cannon",
    "carson",
    "cori",
    "curie",
    "darwin",
    "dijkstra",
    "einstein",
    "euclid",
    "euler",
    "faraday",
    "fermat",
    "fermi",
    "feynman",
    "franklin",
    "galileo",
    "gauss",
    "goldberg",
    "goodall",
    "hamilton",
    "hawking",
    "hodgkin",
    "hopper",
    "hypatia",
    "johnson",
    "kepler",
    "knuth",
    "lamarr",
    "lovelace",
    "maxwell",
    "meitner",
    "mendel",
    "morse",
    "newton",
    "noether",
    "pascal",
    "pasteur",
    "planck",
    "ritchie",
    "sammet",
    "shannon",
    "tesla",
    "thompson",
    "turing",
    "volta",
    "wilson",
    "wozniak",
    "yalow",
];

/// Random bytes from the kernel.
pub(crate) fn random_bytes<const N: usize>() -> std::io::Result<[u8; N]> {
    let mut buf = [0u8; N];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf)
}

/// A new container id: 32 random bytes in hex. Never all digits, so a
/// short id is never mistaken for a number (Docker's rule).
pub fn new_id() -> std::io::Result<String> {
    loop {
        let id = hex::encode(random_bytes::<32>()?);
        if id[..12].bytes().any(|b| b.is_ascii_alphabetic()) {
            return Ok(id);
        }
    }
}

/// A generated name; with `retry` > 0 a digit is appended, as Docker does
/// after a collision.
pub fn generate_name(retry: u32) -> std::io::Result<String> {
    let r = random_bytes::<4>()?;
    let a = ADJECTIVES[usize::from(r[0]) % ADJECTIVES.len()];
    let s = SURNAMES[(usize::from(r[1]) << 8 | usize::from(r[2])) % SURNAMES.len()];
    let mut name = format!("{a}_{s}");
    if retry > 0 {
        name.push_str(&(r[3] % 10).to_string());
    }
    Ok(name)
}

/// Whether Docker accepts `name` (`[a-zA-Z0-9][a-zA-Z0-9_.-]+`, an
/// optional leading `/`).
pub fn valid_name(name: &str) -> bool {
    let name = name.strip_prefix('/').unwrap_or(name);
    let mut chars = name.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    first.is_ascii_alphanumeric()
        && name.len() >= 2
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_64_hex() {
        let id = new_id().unwrap();
        assert_eq!(id.len(), 64);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    }

    #[test]
    fn names_look_like_docker_names() {
        for retry in 0..3 {
            let n = generate_name(retry).unwrap();
            let (a, s) = n.split_once('_').unwrap();
            assert!(ADJECTIVES.contains(&a), "{n}");
            let s = s.trim_end_matches(|c: char| c.is_ascii_digit());
            assert!(SURNAMES.contains(&s), "{n}");
            assert!(valid_name(&n));
        }
        assert!(valid_name("web-1.a_b"));
        assert!(!valid_name("_x"));
        assert!(!valid_name("a"));
        assert!(!valid_name("a b"));
    }
}
