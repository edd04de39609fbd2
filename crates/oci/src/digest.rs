//! Content digests: `algorithm:hex`, as in OCI descriptors and Docker ids.
//!
//! A [`Digest`] is always valid: it can only be made by parsing a well-formed
//! `sha256:<64 lowercase hex>` string or by hashing bytes. Parsing follows
//! go-digest (the library Docker and BuildKit use), including its error
//! classes and messages:
//!
//! | input | error |
//! |---|---|
//! | no `:`, empty algorithm or empty hex, bad characters | [`DigestError::InvalidFormat`] |
//! | `sha256:` with a hex part that is not 64 characters long | [`DigestError::InvalidLength`] |
//! | a well-formed digest of another algorithm (`sha512:…`, `foo:…`) | [`DigestError::Unsupported`] |
//!
//! Only sha256 is supported: it is what Docker, BuildKit and every registry
//! use for image ids, manifests and layers. go-digest also recognises sha384
//! and sha512 when their hash packages are linked in; kiln does not.
//!
//! For hashing while streaming, see [`Sha256Writer`], [`Sha256Reader`] and
//! [`DigestVerifier`].

use std::fmt;
use std::io::{self, Read, Write};
use std::str::FromStr;

use sha2::Digest as _;

/// A digest algorithm kiln can compute and verify.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Algorithm {
    /// SHA-256: 32 bytes, 64 hex characters.
    Sha256,
}

impl Algorithm {
    /// The name used in digest strings: `sha256`.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
        }
    }

    /// Size of the raw hash in bytes.
    pub fn size(self) -> usize {
        match self {
            Algorithm::Sha256 => 32,
        }
    }

    /// Length of the hex-encoded hash (twice [`size`](Self::size)).
    pub fn encoded_len(self) -> usize {
        self.size() * 2
    }

    fn from_name(name: &str) -> Option<Algorithm> {
        match name {
            "sha256" => Some(Algorithm::Sha256),
            _ => None,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a string is not a valid digest.
///
/// The messages are go-digest's, word for word; the offending input is kept
/// in a field so callers can add it as context.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DigestError {
    /// Not of the form `algorithm:hex`, or the hex part has bad characters.
    #[error("invalid checksum digest format")]
    InvalidFormat { input: String },
    /// A supported algorithm with the wrong number of hex characters.
    #[error("invalid checksum digest length")]
    InvalidLength { input: String },
    /// Well-formed, but of an algorithm kiln does not support.
    #[error("unsupported digest algorithm")]
    Unsupported { input: String },
}

impl DigestError {
    /// The string that failed to parse.
    pub fn input(&self) -> &str {
        match self {
            DigestError::InvalidFormat { input }
            | DigestError::InvalidLength { input }
            | DigestError::Unsupported { input } => input,
        }
    }

    /// The name of the matching go-digest error value, e.g.
    /// `ErrDigestInvalidLength`, for comparison with upstream test data.
    pub fn code(&self) -> &'static str {
        match self {
            DigestError::InvalidFormat { .. } => "ErrDigestInvalidFormat",
            DigestError::InvalidLength { .. } => "ErrDigestInvalidLength",
            DigestError::Unsupported { .. } => "ErrDigestUnsupported",
        }
    }
}

/// A validated content digest such as
/// `sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855`.
///
/// Ordering is the ordering of the string form. Serialises as that string.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    /// The full `algorithm:hex` string.
    repr: String,
    algorithm: Algorithm,
}

impl Digest {
    /// Hashes `bytes` with SHA-256.
    pub fn sha256(bytes: &[u8]) -> Digest {
        Digest::from_sha256_bytes(sha2::Sha256::digest(bytes).into())
    }

    /// The digest whose SHA-256 hash is `hash`.
    pub fn from_sha256_bytes(hash: [u8; 32]) -> Digest {
        let mut repr = String::with_capacity(7 + 64);
        repr.push_str("sha256:");
        repr.push_str(&hex::encode(hash));
        Digest {
            repr,
            algorithm: Algorithm::Sha256,
        }
    }

    /// `sha256:` + `hex`, where `hex` must be 64 lowercase hex characters
    /// (the form of a Docker image id without its prefix).
    pub fn from_sha256_hex(hex: &str) -> Result<Digest, DigestError> {
        Digest::from_str(&format!("sha256:{hex}"))
    }

    /// The algorithm, e.g. [`Algorithm::Sha256`].
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The hex-encoded hash, without the `algorithm:` prefix.
    pub fn hex(&self) -> &str {
        &self.repr[self.algorithm.as_str().len() + 1..]
    }

    /// Length of [`hex`](Self::hex): 64 for sha256.
    pub fn encoded_len(&self) -> usize {
        self.hex().len()
    }

    /// The first 12 hex characters: Docker's short image id.
    pub fn short(&self) -> &str {
        &self.hex()[..12]
    }

    /// The raw hash bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        // The hex part was validated at construction.
        hex::decode(self.hex()).unwrap_or_default()
    }

    /// The full `algorithm:hex` string.
    pub fn as_str(&self) -> &str {
        &self.repr
    }

    /// Whether this digest's hex starts with `prefix`, a string accepted by
    /// [`validate_hex_prefix`] (with or without `sha256:`).
    pub fn has_prefix(&self, prefix: &str) -> bool {
        match validate_hex_prefix(prefix) {
            Ok(hex) => self.hex().starts_with(hex),
            Err(_) => false,
        }
    }
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Digest, DigestError> {
        let invalid = || DigestError::InvalidFormat {
            input: s.to_owned(),
        };
        let Some((name, encoded)) = s.split_once(':') else {
            return Err(invalid());
        };
        if name.is_empty() || encoded.is_empty() {
            return Err(invalid());
        }
        let Some(algorithm) = Algorithm::from_name(name) else {
            return Err(if is_digest_syntax(name, encoded) {
                DigestError::Unsupported {
                    input: s.to_owned(),
                }
            } else {
                invalid()
            });
        };
        if encoded.len() != algorithm.encoded_len() {
            return Err(DigestError::InvalidLength {
                input: s.to_owned(),
            });
        }
        if !is_lower_hex(encoded) {
            return Err(invalid());
        }
        Ok(Digest {
            repr: s.to_owned(),
            algorithm,
        })
    }
}

/// go-digest's general digest syntax:
/// `[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+`.
fn is_digest_syntax(algorithm: &str, encoded: &str) -> bool {
    let algorithm_ok = algorithm.split(['.', '+', '_', '-']).all(|part| {
        !part.is_empty()
            && part
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    });
    let encoded_ok = encoded
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'=' | b'_' | b'-'));
    algorithm_ok && !encoded.is_empty() && encoded_ok
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Checks a user-typed id prefix such as `3f5e7d9c1b3a` or
/// `sha256:3f5e7d9c1b3a` (as in `kiln images`/`kiln rmi` by short id) and
/// returns its hex part.
///
/// The hex part must be 1 to 64 lowercase hex characters.
pub fn validate_hex_prefix(s: &str) -> Result<&str, DigestError> {
    let hex = match s.split_once(':') {
        None => s,
        Some(("sha256", hex)) => hex,
        Some((name, hex)) => {
            return Err(if is_digest_syntax(name, hex) {
                DigestError::Unsupported {
                    input: s.to_owned(),
                }
            } else {
                DigestError::InvalidFormat {
                    input: s.to_owned(),
                }
            });
        }
    };
    if hex.is_empty() || !is_lower_hex(hex) {
        return Err(DigestError::InvalidFormat {
            input: s.to_owned(),
        });
    }
    if hex.len() > Algorithm::Sha256.encoded_len() {
        return Err(DigestError::InvalidLength {
            input: s.to_owned(),
        });
    }
    Ok(hex)
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.repr)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.repr)
    }
}

impl AsRef<str> for Digest {
    fn as_ref(&self) -> &str {
        &self.repr
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.repr)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Digest, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Digest;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a digest string such as \"sha256:<64 hex characters>\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Digest, E> {
                v.parse()
                    .map_err(|e: DigestError| E::custom(format_args!("{e}: {v:?}")))
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

/// A writer that hashes everything written through it with SHA-256 and
/// counts the bytes, passing the data on to `inner`.
///
/// Only bytes that `inner` accepted are hashed, so the digest always
/// describes what reached `inner`. Use `Sha256Writer::new(io::sink())` (or
/// [`Default`]) to hash without writing anywhere.
pub struct Sha256Writer<W = io::Sink> {
    inner: W,
    hasher: sha2::Sha256,
    len: u64,
}

impl<W: Write> Sha256Writer<W> {
    pub fn new(inner: W) -> Self {
        Sha256Writer {
            inner,
            hasher: sha2::Sha256::new(),
            len: 0,
        }
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing has been written yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The wrapped writer.
    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    /// The digest and size of everything written; drops `inner`.
    /// Call [`flush`](Write::flush) first if `inner` buffers.
    pub fn finish(self) -> (Digest, u64) {
        let (_, digest, len) = self.into_parts();
        (digest, len)
    }

    /// The wrapped writer, the digest and the size of everything written.
    pub fn into_parts(self) -> (W, Digest, u64) {
        let digest = Digest::from_sha256_bytes(self.hasher.finalize().into());
        (self.inner, digest, self.len)
    }
}

impl Default for Sha256Writer<io::Sink> {
    fn default() -> Self {
        Sha256Writer::new(io::sink())
    }
}

impl<W: Write> Write for Sha256Writer<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<W> fmt::Debug for Sha256Writer<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sha256Writer")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

/// A reader that hashes everything read through it with SHA-256 and counts
/// the bytes.
pub struct Sha256Reader<R> {
    inner: R,
    hasher: sha2::Sha256,
    len: u64,
}

impl<R: Read> Sha256Reader<R> {
    pub fn new(inner: R) -> Self {
        Sha256Reader {
            inner,
            hasher: sha2::Sha256::new(),
            len: 0,
        }
    }

    /// Bytes read so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing has been read yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The digest and size of everything read so far.
    pub fn finish(self) -> (Digest, u64) {
        let (_, digest, len) = self.into_parts();
        (digest, len)
    }

    /// The wrapped reader, the digest and the size of everything read.
    pub fn into_parts(self) -> (R, Digest, u64) {
        let digest = Digest::from_sha256_bytes(self.hasher.finalize().into());
        (self.inner, digest, self.len)
    }
}

impl<R: Read> Read for Sha256Reader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
}

impl<R> fmt::Debug for Sha256Reader<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sha256Reader")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

/// Content did not match what a descriptor promised.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    #[error("digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("size mismatch: expected {expected} bytes, got {actual}")]
    SizeMismatch { expected: u64, actual: u64 },
}

/// A writer that hashes content on its way to `inner` and, at the end,
/// checks it against an expected digest (and optionally an expected size).
///
/// With an expected size, a write that would go past it fails with
/// [`io::ErrorKind::InvalidData`] before anything reaches `inner`, so an
/// oversized stream is cut off early.
///
/// The usual pattern is: stream into a temporary file through a verifier,
/// call [`verify`](Self::verify), and only then rename the file into place.
#[derive(Debug)]
pub struct DigestVerifier<W = io::Sink> {
    writer: Sha256Writer<W>,
    expected: Digest,
    expected_size: Option<u64>,
}

impl<W: Write> DigestVerifier<W> {
    pub fn new(inner: W, expected: Digest) -> Self {
        DigestVerifier {
            writer: Sha256Writer::new(inner),
            expected,
            expected_size: None,
        }
    }

    /// Also requires exactly `size` bytes.
    pub fn with_size(inner: W, expected: Digest, size: u64) -> Self {
        DigestVerifier {
            writer: Sha256Writer::new(inner),
            expected,
            expected_size: Some(size),
        }
    }

    /// The digest the content must have.
    pub fn expected(&self) -> &Digest {
        &self.expected
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.writer.len()
    }

    /// Whether nothing has been written yet.
    pub fn is_empty(&self) -> bool {
        self.writer.is_empty()
    }

    /// Checks size then digest. On success returns the wrapped writer and
    /// the number of bytes written.
    pub fn verify(self) -> Result<(W, u64), VerifyError> {
        let (inner, actual, len) = self.writer.into_parts();
        if let Some(expected) = self.expected_size
            && expected != len
        {
            return Err(VerifyError::SizeMismatch {
                expected,
                actual: len,
            });
        }
        if actual != self.expected {
            return Err(VerifyError::DigestMismatch {
                expected: self.expected,
                actual,
            });
        }
        Ok((inner, len))
    }
}

impl<W: Write> Write for DigestVerifier<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(expected) = self.expected_size {
            let total = self.writer.len().saturating_add(buf.len() as u64);
            if total > expected {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    VerifyError::SizeMismatch {
                        expected,
                        actual: total,
                    },
                ));
            }
        }
        self.writer.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.writer.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    const HELLO: &str = "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";

    #[test]
    fn hashes_known_values() {
        assert_eq!(Digest::sha256(b"").to_string(), EMPTY);
        assert_eq!(Digest::sha256(b"hello").to_string(), HELLO);
    }

    #[test]
    fn parses_and_exposes_parts() {
        let d: Digest = HELLO.parse().unwrap();
        assert_eq!(d.algorithm(), Algorithm::Sha256);
        assert_eq!(d.algorithm().to_string(), "sha256");
        assert_eq!(d.hex(), &HELLO[7..]);
        assert_eq!(d.short(), "2cf24dba5fb0");
        assert_eq!(d.encoded_len(), 64);
        assert_eq!(d.as_str(), HELLO);
        assert_eq!(d.to_bytes().len(), 32);
        assert_eq!(
            Digest::from_sha256_bytes(d.to_bytes().try_into().unwrap()),
            d
        );
        assert_eq!(Digest::from_sha256_hex(d.hex()).unwrap(), d);
        assert_eq!(format!("{d:?}"), format!("Digest({HELLO})"));
    }

    #[test]
    fn error_classes_follow_go_digest() {
        let f = |s: &str| s.parse::<Digest>().unwrap_err();
        let ff = "f".repeat(64);
        for bad in ["", "sha256", ":", "sha256:", &format!(":{ff}"), "nocolon"] {
            assert!(
                matches!(f(bad), DigestError::InvalidFormat { .. }),
                "{bad:?}"
            );
        }
        // Supported algorithm: length is checked before the characters.
        assert!(matches!(f("sha256:abc"), DigestError::InvalidLength { .. }));
        assert!(matches!(
            f(&format!("sha256:{ff}0")),
            DigestError::InvalidLength { .. }
        ));
        assert!(matches!(
            f(&format!("sha256:{}", "F".repeat(64))),
            DigestError::InvalidFormat { .. }
        ));
        assert!(matches!(
            f(&format!("sha256:{}", "g".repeat(64))),
            DigestError::InvalidFormat { .. }
        ));
        // Other well-formed algorithms are unsupported, malformed ones invalid.
        assert!(matches!(
            f(&format!("sha512:{}", "f".repeat(128))),
            DigestError::Unsupported { .. }
        ));
        assert!(matches!(
            f(&format!("invaliddigest:{ff}")),
            DigestError::Unsupported { .. }
        ));
        assert!(matches!(
            f("multihash+base58:QmRZxt2b1FVZPNqd8hsiykDL3TdBDeTSPX9Kv46HmX4Gx8"),
            DigestError::Unsupported { .. }
        ));
        assert!(matches!(
            f(&format!("SHA256:{ff}")),
            DigestError::InvalidFormat { .. }
        ));
        assert!(matches!(
            f(&format!("sha-:{ff}")),
            DigestError::InvalidFormat { .. }
        ));
        assert!(matches!(f("foo:ab/c"), DigestError::InvalidFormat { .. }));
    }

    #[test]
    fn error_messages_and_codes() {
        let e = "sha256:abc".parse::<Digest>().unwrap_err();
        assert_eq!(e.to_string(), "invalid checksum digest length");
        assert_eq!(e.code(), "ErrDigestInvalidLength");
        assert_eq!(e.input(), "sha256:abc");
        let e = "x".parse::<Digest>().unwrap_err();
        assert_eq!(e.to_string(), "invalid checksum digest format");
        assert_eq!(e.code(), "ErrDigestInvalidFormat");
        let e = format!("sha512:{}", "a".repeat(128))
            .parse::<Digest>()
            .unwrap_err();
        assert_eq!(e.to_string(), "unsupported digest algorithm");
        assert_eq!(e.code(), "ErrDigestUnsupported");
    }

    #[test]
    fn serde_round_trip() {
        let d = Digest::sha256(b"hello");
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(json, format!("\"{HELLO}\""));
        assert_eq!(serde_json::from_str::<Digest>(&json).unwrap(), d);
        let err = serde_json::from_str::<Digest>("\"sha256:abc\"").unwrap_err();
        assert!(
            err.to_string().contains("invalid checksum digest length"),
            "{err}"
        );
        assert!(serde_json::from_str::<Digest>("42").is_err());
    }

    #[test]
    fn ordering_is_string_ordering() {
        let a: Digest = format!("sha256:{}", "0".repeat(64)).parse().unwrap();
        let b: Digest = format!("sha256:{}", "f".repeat(64)).parse().unwrap();
        assert!(a < b);
    }

    #[test]
    fn hex_prefixes() {
        assert_eq!(validate_hex_prefix("2cf24d").unwrap(), "2cf24d");
        assert_eq!(validate_hex_prefix("sha256:2cf24d").unwrap(), "2cf24d");
        assert_eq!(validate_hex_prefix(&HELLO[7..]).unwrap(), &HELLO[7..]);
        assert!(matches!(
            validate_hex_prefix(""),
            Err(DigestError::InvalidFormat { .. })
        ));
        assert!(matches!(
            validate_hex_prefix("sha256:"),
            Err(DigestError::InvalidFormat { .. })
        ));
        assert!(matches!(
            validate_hex_prefix("2CF24D"),
            Err(DigestError::InvalidFormat { .. })
        ));
        assert!(matches!(
            validate_hex_prefix("ubuntu"),
            Err(DigestError::InvalidFormat { .. })
        ));
        assert!(matches!(
            validate_hex_prefix(&"a".repeat(65)),
            Err(DigestError::InvalidLength { .. })
        ));
        assert!(matches!(
            validate_hex_prefix("sha512:abc"),
            Err(DigestError::Unsupported { .. })
        ));
        assert!(matches!(
            validate_hex_prefix("x y:abc"),
            Err(DigestError::InvalidFormat { .. })
        ));

        let d = Digest::sha256(b"hello");
        assert!(d.has_prefix("2cf2"));
        assert!(d.has_prefix("sha256:2cf2"));
        assert!(!d.has_prefix("2cf3"));
        assert!(!d.has_prefix(""));
    }

    #[test]
    fn writer_hashes_and_forwards() {
        let mut w = Sha256Writer::new(Vec::new());
        assert!(w.is_empty());
        w.write_all(b"hel").unwrap();
        w.write_all(b"lo").unwrap();
        assert_eq!(w.len(), 5);
        assert_eq!(w.get_ref(), b"hello");
        let (inner, digest, len) = w.into_parts();
        assert_eq!(inner, b"hello");
        assert_eq!(digest.to_string(), HELLO);
        assert_eq!(len, 5);

        let (digest, len) = Sha256Writer::default().finish();
        assert_eq!((digest.to_string().as_str(), len), (EMPTY, 0));
    }

    /// A writer that accepts at most `n` bytes per call.
    struct Trickle(Vec<u8>, usize);
    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let n = buf.len().min(self.1);
            self.0.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn writer_hashes_only_accepted_bytes() {
        let mut w = Sha256Writer::new(Trickle(Vec::new(), 2));
        assert_eq!(w.write(b"hello").unwrap(), 2);
        w.write_all(b"llo").unwrap();
        let (inner, digest, len) = w.into_parts();
        assert_eq!(inner.0, b"hello");
        assert_eq!((digest.to_string().as_str(), len), (HELLO, 5));
    }

    #[test]
    fn reader_hashes() {
        let mut r = Sha256Reader::new(&b"hello"[..]);
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!(r.len(), 5);
        let (digest, len) = r.finish();
        assert_eq!((digest.to_string().as_str(), len), (HELLO, 5));
    }

    #[test]
    fn verifier_accepts_matching_content() {
        let mut v = DigestVerifier::with_size(Vec::new(), HELLO.parse().unwrap(), 5);
        v.write_all(b"hello").unwrap();
        assert_eq!(v.len(), 5);
        let (inner, len) = v.verify().unwrap();
        assert_eq!((inner.as_slice(), len), (&b"hello"[..], 5));
    }

    #[test]
    fn verifier_rejects_wrong_content() {
        let mut v = DigestVerifier::new(io::sink(), HELLO.parse().unwrap());
        v.write_all(b"hellO").unwrap();
        let err = v.verify().unwrap_err();
        assert!(matches!(err, VerifyError::DigestMismatch { .. }));
        assert!(
            err.to_string()
                .starts_with("digest mismatch: expected sha256:2cf24dba"),
            "{err}"
        );

        let mut v = DigestVerifier::with_size(io::sink(), HELLO.parse().unwrap(), 6);
        v.write_all(b"hello").unwrap();
        assert_eq!(
            v.verify().unwrap_err(),
            VerifyError::SizeMismatch {
                expected: 6,
                actual: 5
            }
        );
    }

    #[test]
    fn verifier_cuts_off_oversized_streams() {
        let mut v = DigestVerifier::with_size(Vec::new(), HELLO.parse().unwrap(), 5);
        v.write_all(b"hell").unwrap();
        let err = v.write_all(b"o!").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert_eq!(
            v.len(),
            4,
            "nothing past the limit reaches the inner writer"
        );
    }
}
