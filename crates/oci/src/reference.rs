//! Docker image references: `[domain[:port]/]path[:tag][@digest]`.
//!
//! Implements the grammar and the normalisation rules of Docker's reference
//! library (`distribution/reference`), which the Docker CLI, the daemon and
//! BuildKit share. There are several entry points because Docker has
//! several, and they differ on purpose:
//!
//! | function | Docker name | use it for |
//! |---|---|---|
//! | [`Reference::parse`] | `Parse` | strict grammar, no defaults; the inverse of [`Display`](std::fmt::Display) |
//! | [`Reference::parse_normalized`] | `ParseNormalizedNamed` | user input: `ubuntu` → `docker.io/library/ubuntu` |
//! | [`Reference::parse_docker_ref`] | `ParseDockerRef` | pull/tag/push: also adds `:latest`, drops a tag next to a digest |
//! | [`Reference::parse_named`] | `ParseNamed` | input that must already be canonical |
//! | [`AnyReference::parse`] | `ParseAnyReference` | `docker inspect`-style input: a bare 64-hex id is a digest |
//! | [`Reference::with_name`] | `WithName` | a bare repository name, strict |
//!
//! Normalisation (for `parse_normalized` and everything built on it): the
//! first `/`-separated component is a registry domain only if it contains a
//! `.` or a `:`, is `localhost`, or has an uppercase letter; otherwise the
//! domain is `docker.io`. `index.docker.io` becomes `docker.io`. On Docker
//! Hub a single-component path gets `library/` in front.
//!
//! The domain stays `docker.io` everywhere (names, ids, output). Only the
//! registry client talks to [`DOCKER_HUB_REGISTRY_HOST`]; see
//! [`Reference::registry_host`].
//!
//! Error values and messages are upstream's; [`ReferenceError::code`] gives
//! the Go name of each.

use std::fmt;
use std::str::FromStr;

use crate::digest::{Digest, DigestError};

/// The Docker Hub domain as it appears in normalised names.
pub const DEFAULT_DOMAIN: &str = "docker.io";
/// The old Docker Hub domain, normalised to [`DEFAULT_DOMAIN`].
pub const LEGACY_DEFAULT_DOMAIN: &str = "index.docker.io";
/// The host serving Docker Hub's registry API.
pub const DOCKER_HUB_REGISTRY_HOST: &str = "registry-1.docker.io";
/// The namespace of Docker Hub's official images.
pub const OFFICIAL_REPO_PREFIX: &str = "library/";
/// The tag assumed when none is given.
pub const DEFAULT_TAG: &str = "latest";
/// Maximum length of a repository path (the name without its domain).
pub const NAME_TOTAL_LENGTH_MAX: usize = 255;

/// Why a string is not a valid reference.
///
/// The messages are upstream's, word for word.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReferenceError {
    /// Does not match the reference grammar.
    #[error("invalid reference format")]
    InvalidFormat,
    /// A tag given to [`Reference::with_tag`] is not a valid tag.
    #[error("invalid tag format")]
    TagInvalidFormat,
    /// Would match the grammar if it were lowercase.
    #[error("repository name must be lowercase")]
    NameContainsUppercase,
    /// The input is empty.
    #[error("repository name must have at least one component")]
    NameEmpty,
    /// The repository path is longer than [`NAME_TOTAL_LENGTH_MAX`].
    #[error("repository name must not be more than 255 characters")]
    NameTooLong,
    /// [`Reference::parse_named`] was given a name that is not in canonical form.
    #[error("repository name must be canonical")]
    NameNotCanonical,
    /// [`Reference::parse_normalized`]: the repository part has uppercase letters.
    #[error("invalid reference format: repository name ({remote}) must be lowercase")]
    RemoteNameUppercase { remote: String },
    /// [`Reference::parse_normalized`]: the input is a bare 64-hex id, which
    /// would be ambiguous with an image id.
    #[error("invalid repository name ({name}), cannot specify 64-byte hexadecimal strings")]
    NameIsIdentifier { name: String },
    /// The `@digest` part is not a valid (supported) digest.
    #[error(transparent)]
    Digest(#[from] DigestError),
}

impl ReferenceError {
    /// The Go name of the upstream error value, e.g.
    /// `ErrReferenceInvalidFormat`, for comparison with upstream test data.
    ///
    /// Upstream returns unnamed errors for two cases; kiln names them:
    /// [`RemoteNameUppercase`](Self::RemoteNameUppercase) reports
    /// `ErrNameContainsUppercase` (same meaning) and
    /// [`NameIsIdentifier`](Self::NameIsIdentifier) reports
    /// `ErrNameIsIdentifier`.
    pub fn code(&self) -> &'static str {
        match self {
            ReferenceError::InvalidFormat => "ErrReferenceInvalidFormat",
            ReferenceError::TagInvalidFormat => "ErrTagInvalidFormat",
            ReferenceError::NameContainsUppercase => "ErrNameContainsUppercase",
            ReferenceError::NameEmpty => "ErrNameEmpty",
            ReferenceError::NameTooLong => "ErrNameTooLong",
            ReferenceError::NameNotCanonical => "ErrNameNotCanonical",
            ReferenceError::RemoteNameUppercase { .. } => "ErrNameContainsUppercase",
            ReferenceError::NameIsIdentifier { .. } => "ErrNameIsIdentifier",
            ReferenceError::Digest(e) => e.code(),
        }
    }
}

/// A pattern given to [`Reference::familiar_match`] is malformed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("syntax error in pattern")]
pub struct PatternError {
    pub pattern: String,
}

impl PatternError {
    /// The Go name of the upstream error value: `ErrBadPattern`.
    pub fn code(&self) -> &'static str {
        "ErrBadPattern"
    }
}

/// A named image reference: a repository name with an optional tag and
/// digest.
///
/// Always valid: values come only from the parsing functions and the
/// `with_*` builders. [`Display`](fmt::Display) gives the full string, which
/// [`Reference::parse`] turns back into an equal value; serde uses the same
/// pair.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    /// `domain/path`, or `path` when there is no domain.
    name: String,
    /// Length in bytes of the domain at the start of `name`; 0 when none.
    domain_len: usize,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl Reference {
    /// Strict parse (`reference.Parse`): the grammar only, no defaults.
    ///
    /// The first path component is the domain whenever more components
    /// follow and it is valid domain syntax, so `a/b` has domain `a` and
    /// `ubuntu` has none.
    pub fn parse(s: &str) -> Result<Reference, ReferenceError> {
        let Some((name, tag, digest)) = grammar::split_reference(s) else {
            if s.is_empty() {
                return Err(ReferenceError::NameEmpty);
            }
            if grammar::split_reference(&go_to_lower(s)).is_some() {
                return Err(ReferenceError::NameContainsUppercase);
            }
            return Err(ReferenceError::InvalidFormat);
        };
        let (domain, path) = grammar::split_name(name).unwrap_or((None, name));
        if path.len() > NAME_TOTAL_LENGTH_MAX {
            return Err(ReferenceError::NameTooLong);
        }
        let digest = digest.map(str::parse::<Digest>).transpose()?;
        Ok(Reference::from_parts(
            domain,
            path,
            tag.map(str::to_owned),
            digest,
        ))
    }

    /// Parses user input the way `docker` does (`ParseNormalizedNamed`):
    /// `ubuntu` → `docker.io/library/ubuntu`, `user/app:1` →
    /// `docker.io/user/app:1`, `localhost:5000/app` unchanged. No default
    /// tag is added; see [`parse_docker_ref`](Self::parse_docker_ref).
    ///
    /// As upstream, the result can still lack a domain: when the first
    /// component has a `.` but is not domain syntax (`my_host.com/app`), the
    /// strict parse that follows reads the whole name as a path.
    pub fn parse_normalized(s: &str) -> Result<Reference, ReferenceError> {
        if grammar::is_identifier(s) {
            return Err(ReferenceError::NameIsIdentifier { name: s.to_owned() });
        }
        let (domain, remainder) = split_docker_domain(s);
        let remote = remainder
            .split_once(':')
            .map_or(remainder.as_str(), |(remote, _)| remote);
        if has_uppercase(remote) {
            return Err(ReferenceError::RemoteNameUppercase {
                remote: remote.to_owned(),
            });
        }
        Reference::parse(&format!("{domain}/{remainder}"))
    }

    /// The reference as `docker pull`/`tag`/`push` use it
    /// (`ParseDockerRef`): normalised, with `:latest` when there is neither
    /// tag nor digest, and without the tag when there is a digest.
    pub fn parse_docker_ref(s: &str) -> Result<Reference, ReferenceError> {
        let named = Reference::parse_normalized(s)?;
        Ok(if named.digest.is_some() {
            named.without_tag()
        } else {
            named.with_default_tag()
        })
    }

    /// Accepts only names already in canonical form (`ParseNamed`):
    /// `docker.io/library/ubuntu` but not `ubuntu` or `docker.io/ubuntu`.
    pub fn parse_named(s: &str) -> Result<Reference, ReferenceError> {
        let named = Reference::parse_normalized(s)?;
        if named.to_string() != s {
            return Err(ReferenceError::NameNotCanonical);
        }
        Ok(named)
    }

    /// A bare repository name, strict (`WithName`): no tag, no digest, no
    /// normalisation.
    pub fn with_name(name: &str) -> Result<Reference, ReferenceError> {
        let Some((domain, path)) = grammar::split_name(name) else {
            return Err(ReferenceError::InvalidFormat);
        };
        if path.len() > NAME_TOTAL_LENGTH_MAX {
            return Err(ReferenceError::NameTooLong);
        }
        Ok(Reference::from_parts(domain, path, None, None))
    }

    fn from_parts(
        domain: Option<&str>,
        path: &str,
        tag: Option<String>,
        digest: Option<Digest>,
    ) -> Reference {
        let (name, domain_len) = match domain {
            Some(domain) => (format!("{domain}/{path}"), domain.len()),
            None => (path.to_owned(), 0),
        };
        Reference {
            name,
            domain_len,
            tag,
            digest,
        }
    }

    /// The registry domain, e.g. `docker.io` or `localhost:5000`. Always
    /// present after normalisation; may be absent after a strict parse.
    pub fn domain(&self) -> Option<&str> {
        (self.domain_len > 0).then(|| &self.name[..self.domain_len])
    }

    /// The repository path without the domain, e.g. `library/ubuntu`.
    pub fn path(&self) -> &str {
        match self.domain_len {
            0 => &self.name,
            n => &self.name[n + 1..],
        }
    }

    /// The repository name: domain and path, e.g. `docker.io/library/ubuntu`.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// Neither a tag nor a digest.
    pub fn is_name_only(&self) -> bool {
        self.tag.is_none() && self.digest.is_none()
    }

    /// The same reference with `tag` (replacing any tag; a digest is kept).
    pub fn with_tag(&self, tag: &str) -> Result<Reference, ReferenceError> {
        if !grammar::is_tag(tag) {
            return Err(ReferenceError::TagInvalidFormat);
        }
        Ok(Reference {
            tag: Some(tag.to_owned()),
            ..self.clone()
        })
    }

    /// The same reference with `digest` (replacing any digest; a tag is kept).
    pub fn with_digest(&self, digest: Digest) -> Reference {
        Reference {
            digest: Some(digest),
            ..self.clone()
        }
    }

    /// Adds `:latest` if there is neither tag nor digest (`TagNameOnly`).
    pub fn with_default_tag(&self) -> Reference {
        if self.is_name_only() {
            Reference {
                tag: Some(DEFAULT_TAG.to_owned()),
                ..self.clone()
            }
        } else {
            self.clone()
        }
    }

    /// The same reference without its tag.
    pub fn without_tag(&self) -> Reference {
        Reference {
            tag: None,
            ..self.clone()
        }
    }

    /// The same reference without its digest.
    pub fn without_digest(&self) -> Reference {
        Reference {
            digest: None,
            ..self.clone()
        }
    }

    /// Just the repository name (`TrimNamed`).
    pub fn name_only(&self) -> Reference {
        Reference {
            tag: None,
            digest: None,
            ..self.clone()
        }
    }

    /// The short form Docker shows (`FamiliarName`): `ubuntu`, `user/app`,
    /// `localhost:5000/app`, `library/a/b`.
    pub fn familiar_name(&self) -> String {
        if self.domain() != Some(DEFAULT_DOMAIN) {
            return self.name.clone();
        }
        let path = self.path();
        match path.strip_prefix(OFFICIAL_REPO_PREFIX) {
            Some(rest) if !rest.contains('/') => rest.to_owned(),
            _ => path.to_owned(),
        }
    }

    /// [`familiar_name`](Self::familiar_name) with tag and digest
    /// (`FamiliarString`): `ubuntu:22.04`.
    pub fn familiar_string(&self) -> String {
        let mut s = self.familiar_name();
        self.push_tag_and_digest(&mut s);
        s
    }

    fn push_tag_and_digest(&self, s: &mut String) {
        if let Some(tag) = &self.tag {
            s.push(':');
            s.push_str(tag);
        }
        if let Some(digest) = &self.digest {
            s.push('@');
            s.push_str(digest.as_str());
        }
    }

    /// Docker's `FamiliarMatch`, as used by `images --filter reference=`:
    /// matches `pattern` (Go `path.Match` syntax: `*`, `?`, `[...]`, `\`;
    /// `*` does not cross `/`) against the familiar string and, failing
    /// that, against the familiar name.
    pub fn familiar_match(&self, pattern: &str) -> Result<bool, PatternError> {
        let matched = path_match(pattern, &self.familiar_string())?;
        Ok(matched || path_match(pattern, &self.familiar_name()).unwrap_or(false))
    }

    /// Whether the repository is on Docker Hub: domain `docker.io`,
    /// `index.docker.io`, or none (a strictly parsed short name).
    pub fn is_docker_hub(&self) -> bool {
        matches!(
            self.domain(),
            None | Some(DEFAULT_DOMAIN | LEGACY_DEFAULT_DOMAIN)
        )
    }

    /// The host (with port, if any) to send registry API requests to:
    /// [`DOCKER_HUB_REGISTRY_HOST`] for Docker Hub, the domain otherwise.
    /// Meant for normalised references.
    pub fn registry_host(&self) -> &str {
        match self.domain() {
            Some(domain) if !self.is_docker_hub() => domain,
            _ => DOCKER_HUB_REGISTRY_HOST,
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Reference({self})")
    }
}

impl serde::Serialize for Reference {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Deserialises with the strict [`Reference::parse`], the inverse of
/// serialisation; normalise user input before storing it.
impl<'de> serde::Deserialize<'de> for Reference {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Reference, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Reference;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an image reference string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Reference, E> {
                Reference::parse(v).map_err(|e| E::custom(format_args!("{e}: {v:?}")))
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

/// A reference that is either named or just a digest, as accepted by
/// commands that take "an image" (`ParseAnyReference`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum AnyReference {
    Named(Reference),
    /// A bare 64-hex id or a `sha256:` digest.
    Digest(Digest),
}

impl AnyReference {
    /// A bare 64-character lowercase hex string or a valid `sha256:…`
    /// digest is a digest; anything else goes through
    /// [`Reference::parse_normalized`].
    pub fn parse(s: &str) -> Result<AnyReference, ReferenceError> {
        if grammar::is_identifier(s) {
            return Ok(AnyReference::Digest(Digest::from_sha256_hex(s)?));
        }
        if let Ok(digest) = s.parse::<Digest>() {
            return Ok(AnyReference::Digest(digest));
        }
        Reference::parse_normalized(s).map(AnyReference::Named)
    }

    pub fn as_named(&self) -> Option<&Reference> {
        match self {
            AnyReference::Named(named) => Some(named),
            AnyReference::Digest(_) => None,
        }
    }

    /// The digest of a digest-only reference, or of a named one with `@digest`.
    pub fn digest(&self) -> Option<&Digest> {
        match self {
            AnyReference::Named(named) => named.digest(),
            AnyReference::Digest(digest) => Some(digest),
        }
    }

    /// `FamiliarString`: the familiar form of a named reference, the digest
    /// string otherwise.
    pub fn familiar_string(&self) -> String {
        match self {
            AnyReference::Named(named) => named.familiar_string(),
            AnyReference::Digest(digest) => digest.to_string(),
        }
    }

    /// `FamiliarMatch`; see [`Reference::familiar_match`]. A digest-only
    /// reference is matched against its digest string.
    pub fn familiar_match(&self, pattern: &str) -> Result<bool, PatternError> {
        match self {
            AnyReference::Named(named) => named.familiar_match(pattern),
            AnyReference::Digest(digest) => path_match(pattern, digest.as_str()),
        }
    }
}

impl fmt::Display for AnyReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AnyReference::Named(named) => named.fmt(f),
            AnyReference::Digest(digest) => digest.fmt(f),
        }
    }
}

impl FromStr for AnyReference {
    type Err = ReferenceError;

    /// Same as [`AnyReference::parse`].
    fn from_str(s: &str) -> Result<AnyReference, ReferenceError> {
        AnyReference::parse(s)
    }
}

impl From<Reference> for AnyReference {
    fn from(named: Reference) -> AnyReference {
        AnyReference::Named(named)
    }
}

impl From<Digest> for AnyReference {
    fn from(digest: Digest) -> AnyReference {
        AnyReference::Digest(digest)
    }
}

/// Same as [`AnyReference::parse`].
pub fn parse_any_reference(s: &str) -> Result<AnyReference, ReferenceError> {
    AnyReference::parse(s)
}

/// Docker's domain heuristic (`splitDockerDomain`): returns the domain and
/// the rest (path with any tag and digest), with `library/` added for
/// single-component Docker Hub paths.
fn split_docker_domain(name: &str) -> (&str, String) {
    let (domain, remainder) = match name.split_once('/') {
        // A single component is always a Docker Hub repository, even
        // `localhost` or `example.com:5000` (which is name `example.com`,
        // tag `5000`).
        None => return (DEFAULT_DOMAIN, format!("{OFFICIAL_REPO_PREFIX}{name}")),
        Some(("localhost", rest)) => ("localhost", rest),
        Some((LEGACY_DEFAULT_DOMAIN, rest)) => (DEFAULT_DOMAIN, rest),
        Some((first, rest)) if first.contains(['.', ':']) || has_uppercase(first) => (first, rest),
        Some(_) => (DEFAULT_DOMAIN, name),
    };
    if domain == DEFAULT_DOMAIN && !remainder.contains('/') {
        (domain, format!("{OFFICIAL_REPO_PREFIX}{remainder}"))
    } else {
        (domain, remainder.to_owned())
    }
}

/// Go's `strings.ToLower`: per-character simple lowercase mapping.
fn go_to_lower(s: &str) -> String {
    s.chars().map(simple_lower).collect()
}

fn has_uppercase(s: &str) -> bool {
    s.chars().any(|c| simple_lower(c) != c)
}

/// Unicode simple lowercase mapping. The full mapping differs from the
/// simple one only for U+0130, whose full mapping starts with the simple one.
fn simple_lower(c: char) -> char {
    c.to_lowercase().next().unwrap_or(c)
}

/// The anchored regular expressions of the reference grammar, usable on
/// their own (for example to validate a tag, or by conformance tests).
///
/// ```text
/// reference       := name [ ":" tag ] [ "@" digest ]
/// name            := [ domain-and-port "/" ] path-component ( "/" path-component )*
/// domain-and-port := ( domain-name | "[" ipv6-chars "]" ) [ ":" [0-9]+ ]
/// domain-name     := domain-component ( "." domain-component )*
/// domain-component:= [a-zA-Z0-9] | [a-zA-Z0-9] [a-zA-Z0-9-]* [a-zA-Z0-9]
/// ipv6-chars      := [a-fA-F0-9:]+
/// path-component  := [a-z0-9]+ ( separator [a-z0-9]+ )*
/// separator       := [._] | "__" | "-"+
/// tag             := [A-Za-z0-9_] [A-Za-z0-9_.-]{0,127}
/// digest          := [A-Za-z][A-Za-z0-9]* ( [-_+.] [A-Za-z][A-Za-z0-9]* )* ":" [0-9a-fA-F]{32,}
/// identifier      := [a-f0-9]{64}
/// ```
pub mod grammar {
    use std::sync::LazyLock;

    use regex::Regex;

    const ALPHANUMERIC: &str = "[a-z0-9]+";
    const SEPARATOR: &str = "(?:[._]|__|[-]+)";
    const DOMAIN_COMPONENT: &str = "(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])";
    const IPV6_ADDRESS: &str = r"\[(?:[a-fA-F0-9:]+)\]";
    const OPTIONAL_PORT: &str = "(?::[0-9]+)?";
    // Spelled out: `\w` is Unicode-aware in the regex crate, ASCII in Go.
    const TAG: &str = "[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}";
    const DIGEST: &str = "[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}";

    fn domain_and_port() -> String {
        format!("(?:{DOMAIN_COMPONENT}(?:\\.{DOMAIN_COMPONENT})*|{IPV6_ADDRESS}){OPTIONAL_PORT}")
    }

    fn remote_name() -> String {
        let component = format!("{ALPHANUMERIC}(?:{SEPARATOR}{ALPHANUMERIC})*");
        format!("{component}(?:/{component})*")
    }

    fn compile(pattern: &str) -> Regex {
        // The patterns are constants; a failure here is a bug caught by the
        // unit tests, not an input error.
        Regex::new(pattern).unwrap_or_else(|e| panic!("reference grammar does not compile: {e}"))
    }

    static DOMAIN_AND_PORT: LazyLock<Regex> =
        LazyLock::new(|| compile(&format!("^{}$", domain_and_port())));
    static ANCHORED_NAME: LazyLock<Regex> = LazyLock::new(|| {
        compile(&format!(
            "^(?:({})/)?({})$",
            domain_and_port(),
            remote_name()
        ))
    });
    static REFERENCE: LazyLock<Regex> = LazyLock::new(|| {
        compile(&format!(
            "^((?:{}/)?{})(?::({TAG}))?(?:@({DIGEST}))?$",
            domain_and_port(),
            remote_name()
        ))
    });
    static ANCHORED_TAG: LazyLock<Regex> = LazyLock::new(|| compile(&format!("^{TAG}$")));

    /// `host[:port]`: a domain name, IPv4 address or bracketed IPv6
    /// address, with an optional numeric port.
    pub fn is_domain_and_port(s: &str) -> bool {
        DOMAIN_AND_PORT.is_match(s)
    }

    /// Splits a repository name into its domain (if the first component is
    /// one syntactically and more components follow) and its path. `None`
    /// if `s` is not a valid name.
    pub fn split_name(s: &str) -> Option<(Option<&str>, &str)> {
        let caps = ANCHORED_NAME.captures(s)?;
        Some((caps.get(1).map(|m| m.as_str()), caps.get(2)?.as_str()))
    }

    /// Splits a full reference into name, tag and digest, checking syntax
    /// only (the digest is not validated).
    pub fn split_reference(s: &str) -> Option<(&str, Option<&str>, Option<&str>)> {
        let caps = REFERENCE.captures(s)?;
        Some((
            caps.get(1)?.as_str(),
            caps.get(2).map(|m| m.as_str()),
            caps.get(3).map(|m| m.as_str()),
        ))
    }

    /// A valid tag: up to 128 characters of `[A-Za-z0-9_.-]`, not starting
    /// with `.` or `-`.
    pub fn is_tag(s: &str) -> bool {
        ANCHORED_TAG.is_match(s)
    }

    /// Exactly 64 lowercase hex characters: an image id without `sha256:`.
    pub fn is_identifier(s: &str) -> bool {
        s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    }
}

/// Go's `path.Match`: `*` (any run of non-`/`), `?` (one non-`/`
/// character), `[...]` classes with ranges and `^` negation, `\` escapes.
/// The whole pattern is checked for syntax even when it fails to match early.
fn path_match(pattern: &str, name: &str) -> Result<bool, PatternError> {
    glob::matches(pattern, name).map_err(|glob::BadPattern| PatternError {
        pattern: pattern.to_owned(),
    })
}

mod glob {
    pub(super) struct BadPattern;

    pub(super) fn matches(mut pattern: &str, mut name: &str) -> Result<bool, BadPattern> {
        'pattern: while !pattern.is_empty() {
            let (star, chunk, rest) = scan_chunk(pattern);
            pattern = rest;
            if star && chunk.is_empty() {
                // A trailing star matches the rest unless it has a '/'.
                return Ok(!name.contains('/'));
            }
            // The chunk at the current position; when it is the last one it
            // must consume the whole name.
            if let Some(after) = match_chunk(chunk, name)?
                && (after.is_empty() || !pattern.is_empty())
            {
                name = after;
                continue;
            }
            if star {
                // Let the star eat one more character at a time, never a '/'.
                for (i, c) in name.char_indices() {
                    if c == '/' {
                        break;
                    }
                    if let Some(after) = match_chunk(chunk, &name[i + c.len_utf8()..])? {
                        if pattern.is_empty() && !after.is_empty() {
                            continue;
                        }
                        name = after;
                        continue 'pattern;
                    }
                }
            }
            // No match; still report a malformed rest of the pattern.
            while !pattern.is_empty() {
                let (_, chunk, rest) = scan_chunk(pattern);
                pattern = rest;
                match_chunk(chunk, "")?;
            }
            return Ok(false);
        }
        Ok(name.is_empty())
    }

    /// Splits off leading stars and the following run up to the next star
    /// outside a class.
    fn scan_chunk(pattern: &str) -> (bool, &str, &str) {
        let rest = pattern.trim_start_matches('*');
        let star = rest.len() != pattern.len();
        let bytes = rest.as_bytes();
        let mut in_range = false;
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'\\' if i + 1 < bytes.len() => i += 1,
                b'[' => in_range = true,
                b']' => in_range = false,
                b'*' if !in_range => break,
                _ => {}
            }
            i += 1;
        }
        // `i` is at a '*' or the end, both char boundaries.
        (star, &rest[..i], &rest[i..])
    }

    /// Matches a star-free chunk at the start of `s`; returns what is left
    /// of `s`. After a mismatch it keeps going through the chunk only to
    /// find syntax errors.
    fn match_chunk<'a>(mut chunk: &str, mut s: &'a str) -> Result<Option<&'a str>, BadPattern> {
        let mut failed = false;
        while let Some(c) = chunk.chars().next() {
            if !failed && s.is_empty() {
                failed = true;
            }
            // The next character of `s`, consumed only while still matching.
            let mut take = |failed: bool| -> Option<char> {
                if failed {
                    return None;
                }
                let next = s.chars().next()?;
                s = &s[next.len_utf8()..];
                Some(next)
            };
            match c {
                '[' => {
                    let r = take(failed);
                    chunk = &chunk[1..];
                    let negated = chunk.starts_with('^');
                    if negated {
                        chunk = &chunk[1..];
                    }
                    let mut matched = false;
                    let mut ranges = 0;
                    loop {
                        if ranges > 0 && chunk.starts_with(']') {
                            chunk = &chunk[1..];
                            break;
                        }
                        let (lo, rest) = class_char(chunk)?;
                        chunk = rest;
                        let mut hi = lo;
                        if let Some(rest) = chunk.strip_prefix('-') {
                            (hi, chunk) = class_char(rest)?;
                        }
                        if r.is_some_and(|r| lo <= r && r <= hi) {
                            matched = true;
                        }
                        ranges += 1;
                    }
                    if matched == negated {
                        failed = true;
                    }
                }
                '?' => {
                    if take(failed) == Some('/') {
                        failed = true;
                    }
                    chunk = &chunk[1..];
                }
                _ => {
                    let literal = if c == '\\' {
                        chunk = &chunk[1..];
                        chunk.chars().next().ok_or(BadPattern)?
                    } else {
                        c
                    };
                    if let Some(next) = take(failed)
                        && next != literal
                    {
                        failed = true;
                    }
                    chunk = &chunk[literal.len_utf8()..];
                }
            }
        }
        Ok(if failed { None } else { Some(s) })
    }

    /// One (possibly escaped) character of a class; there must be more
    /// pattern after it.
    fn class_char(chunk: &str) -> Result<(char, &str), BadPattern> {
        let chunk = match chunk.chars().next() {
            None | Some('-' | ']') => return Err(BadPattern),
            Some('\\') => &chunk[1..],
            Some(_) => chunk,
        };
        let c = chunk.chars().next().ok_or(BadPattern)?;
        let rest = &chunk[c.len_utf8()..];
        if rest.is_empty() {
            return Err(BadPattern);
        }
        Ok((c, rest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff";

    fn parts(r: &Reference) -> (Option<&str>, &str, Option<&str>, Option<String>) {
        (
            r.domain(),
            r.path(),
            r.tag(),
            r.digest().map(|d| d.to_string()),
        )
    }

    #[test]
    fn strict_parse_splits_domain_only_with_more_components() {
        let r = Reference::parse("test.com:5000").unwrap();
        assert_eq!(parts(&r), (None, "test.com", Some("5000"), None));
        let r = Reference::parse("a/b").unwrap();
        assert_eq!(parts(&r), (Some("a"), "b", None, None));
        let r = Reference::parse(&format!("localhost:5000/x/y:t@{D}")).unwrap();
        assert_eq!(
            parts(&r),
            (Some("localhost:5000"), "x/y", Some("t"), Some(D.to_owned()))
        );
        assert_eq!(r.name(), "localhost:5000/x/y");
    }

    #[test]
    fn error_precedence() {
        assert_eq!(Reference::parse(""), Err(ReferenceError::NameEmpty));
        assert_eq!(
            Reference::parse("Foo"),
            Err(ReferenceError::NameContainsUppercase)
        );
        assert_eq!(Reference::parse("foo!"), Err(ReferenceError::InvalidFormat));
        let e = Reference::parse("foo@sha256:abcdefabcdefabcdefabcdefabcdefabcdef").unwrap_err();
        assert_eq!(e.code(), "ErrDigestInvalidLength");
    }

    #[test]
    fn error_codes_and_messages() {
        let e = Reference::parse_normalized("docker.io/Foo/bar").unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid reference format: repository name (Foo/bar) must be lowercase"
        );
        assert_eq!(e.code(), "ErrNameContainsUppercase");
        let id = "a".repeat(64);
        let e = Reference::parse_normalized(&id).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("invalid repository name ({id}), cannot specify 64-byte hexadecimal strings")
        );
        assert_eq!(
            ReferenceError::NameTooLong.to_string(),
            "repository name must not be more than 255 characters"
        );
        assert_eq!(
            ReferenceError::NameNotCanonical.code(),
            "ErrNameNotCanonical"
        );
    }

    #[test]
    fn go_lowercase_is_simple_mapping() {
        assert_eq!(go_to_lower("İmage"), "image");
        assert_eq!(go_to_lower("\u{212A}elvin"), "kelvin");
        assert!(has_uppercase("aB"));
        assert!(!has_uppercase("ab-1_ü"));
        assert_eq!(
            Reference::parse("İmage"),
            Err(ReferenceError::NameContainsUppercase)
        );
    }

    #[test]
    fn docker_domain_heuristic() {
        let cases = [
            ("ubuntu", "docker.io", "library/ubuntu"),
            ("ubuntu:22.04", "docker.io", "library/ubuntu:22.04"),
            ("localhost", "docker.io", "library/localhost"),
            ("user/app", "docker.io", "user/app"),
            ("localhost/app", "localhost", "app"),
            ("index.docker.io/app", "docker.io", "library/app"),
            ("docker.io/a/b", "docker.io", "a/b"),
            ("my.reg/app", "my.reg", "app"),
            ("reg:5000/app", "reg:5000", "app"),
            ("Reg/app", "Reg", "app"),
            ("a_b/c", "docker.io", "a_b/c"),
        ];
        for (input, domain, rest) in cases {
            assert_eq!(
                split_docker_domain(input),
                (domain, rest.to_owned()),
                "{input}"
            );
        }
    }

    #[test]
    fn registry_host_and_hub() {
        let r = Reference::parse_normalized("ubuntu").unwrap();
        assert!(r.is_docker_hub());
        assert_eq!(r.registry_host(), DOCKER_HUB_REGISTRY_HOST);
        assert_eq!(r.domain(), Some("docker.io"));
        let r = Reference::parse_normalized("localhost:5000/x").unwrap();
        assert!(!r.is_docker_hub());
        assert_eq!(r.registry_host(), "localhost:5000");
        let r = Reference::parse("index.docker.io/x/y").unwrap();
        assert_eq!(r.registry_host(), DOCKER_HUB_REGISTRY_HOST);
        let r = Reference::parse("ubuntu").unwrap();
        assert!(r.is_docker_hub());
    }

    #[test]
    fn builders() {
        let r = Reference::with_name("example.com/app").unwrap();
        assert!(r.is_name_only());
        let tagged = r.with_tag("v1").unwrap();
        assert_eq!(tagged.to_string(), "example.com/app:v1");
        assert_eq!(r.with_tag(".x"), Err(ReferenceError::TagInvalidFormat));
        assert_eq!(
            r.with_tag(&"a".repeat(129)),
            Err(ReferenceError::TagInvalidFormat)
        );
        assert!(r.with_tag(&"a".repeat(128)).is_ok());
        let both = tagged.with_digest(D.parse().unwrap());
        assert_eq!(both.to_string(), format!("example.com/app:v1@{D}"));
        assert_eq!(
            both.without_tag().to_string(),
            format!("example.com/app@{D}")
        );
        assert_eq!(both.without_digest(), tagged);
        assert_eq!(both.name_only(), r);
        assert_eq!(both.with_default_tag(), both);
        assert_eq!(r.with_default_tag().tag(), Some("latest"));
        assert_eq!(both.without_tag().with_default_tag().tag(), None);
    }

    #[test]
    fn familiar_forms() {
        let f = |s: &str| Reference::parse_normalized(s).unwrap();
        assert_eq!(f("ubuntu").familiar_name(), "ubuntu");
        assert_eq!(
            f("docker.io/library/ubuntu:1").familiar_string(),
            "ubuntu:1"
        );
        assert_eq!(f("library/a/b").familiar_name(), "library/a/b");
        assert_eq!(f("user/app").familiar_name(), "user/app");
        assert_eq!(f("localhost:5000/x").familiar_name(), "localhost:5000/x");
        assert_eq!(
            f(&format!("busybox@{D}")).familiar_string(),
            format!("busybox@{D}")
        );
    }

    #[test]
    fn any_reference() {
        let hex = "f".repeat(64);
        assert_eq!(
            AnyReference::parse(&hex).unwrap(),
            AnyReference::Digest(D.parse().unwrap())
        );
        assert_eq!(AnyReference::parse(D).unwrap().to_string(), D);
        let named = AnyReference::parse("redis").unwrap();
        assert_eq!(named.to_string(), "docker.io/library/redis");
        assert_eq!(named.as_named().unwrap().path(), "library/redis");
        assert_eq!(named.digest(), None);
        // Uppercase hex is not an id, and not a valid name either.
        assert!(AnyReference::parse(&"F".repeat(64)).is_err());
        assert_eq!(
            "redis:7".parse::<AnyReference>().unwrap().familiar_string(),
            "redis:7"
        );
    }

    #[test]
    fn glob_follows_go_path_match() {
        let m = |p: &str, n: &str| glob::matches(p, n).ok();
        let cases: &[(&str, &str, Option<bool>)] = &[
            ("abc", "abc", Some(true)),
            ("*", "abc", Some(true)),
            ("*c", "abc", Some(true)),
            ("a*", "a", Some(true)),
            ("a*", "abc", Some(true)),
            ("a*", "ab/c", Some(false)),
            ("a*/b", "abc/b", Some(true)),
            ("a*/b", "a/c/b", Some(false)),
            ("a*b*c*d*e*/f", "axbxcxdxe/f", Some(true)),
            ("a*b*c*d*e*/f", "axbxcxdxexxx/f", Some(true)),
            ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", Some(false)),
            ("a*b?c*x", "abxbbxdbxebxczzx", Some(true)),
            ("a*b?c*x", "abxbbxdbxebxczzy", Some(false)),
            ("ab[c]", "abc", Some(true)),
            ("ab[b-d]", "abc", Some(true)),
            ("ab[e-g]", "abc", Some(false)),
            ("ab[^c]", "abc", Some(false)),
            ("ab[^b-d]", "abc", Some(false)),
            ("ab[^e-g]", "abc", Some(true)),
            ("a\\*b", "a*b", Some(true)),
            ("a\\*b", "ab", Some(false)),
            ("a?b", "a☺b", Some(true)),
            ("a[^a]b", "a☺b", Some(true)),
            ("a???b", "a☺b", Some(false)),
            ("a[^a][^a][^a]b", "a☺b", Some(false)),
            ("[a-ζ]*", "α", Some(true)),
            ("*[a-ζ]", "A", Some(false)),
            ("a?b", "a/b", Some(false)),
            ("a*b", "a/b", Some(false)),
            ("[\\]a]", "]", Some(true)),
            ("[\\-]", "-", Some(true)),
            ("[x\\-]", "x", Some(true)),
            ("[x\\-]", "-", Some(true)),
            ("[x\\-]", "z", Some(false)),
            ("[\\-x]", "x", Some(true)),
            ("[\\-x]", "-", Some(true)),
            ("[\\-x]", "a", Some(false)),
            ("[]a]", "]", None),
            ("[-]", "-", None),
            ("[x-]", "x", None),
            ("[x-]", "-", None),
            ("[x-]", "z", None),
            ("[-x]", "x", None),
            ("[-x]", "-", None),
            ("[-x]", "a", None),
            ("\\", "a", None),
            ("[a-b-c]", "a", None),
            ("[", "a", None),
            ("[^", "a", None),
            ("[^bc", "a", None),
            ("a[", "a", None),
            ("a[", "ab", None),
            ("a[", "x", None),
            ("a/b[", "x", None),
            ("*x", "xxx", Some(true)),
            ("foo/**/ba[rz]", "foo/a/bar", Some(true)),
            ("foo/**/ba[rz]", "foo/a/b/bar", Some(false)),
        ];
        for &(pattern, name, want) in cases {
            assert_eq!(m(pattern, name), want, "Match({pattern:?}, {name:?})");
        }
    }

    #[test]
    fn familiar_match() {
        let r = Reference::parse_normalized("example.com/foo/c/baz:tag").unwrap();
        assert_eq!(r.familiar_match("*/foo/c/baz"), Ok(true));
        assert_eq!(r.familiar_match("example.com/foo/c/baz"), Ok(true));
        assert_eq!(r.familiar_match("example.com/*/c/baz:t*"), Ok(true));
        assert_eq!(r.familiar_match("foo/c/baz"), Ok(false));
        let e = r.familiar_match("[-x]").unwrap_err();
        assert_eq!(
            (e.to_string().as_str(), e.code()),
            ("syntax error in pattern", "ErrBadPattern")
        );
        let ubuntu = Reference::parse_normalized("ubuntu:22.04").unwrap();
        assert_eq!(ubuntu.familiar_match("ubuntu"), Ok(true));
        assert_eq!(ubuntu.familiar_match("ubu*:22.*"), Ok(true));
        assert_eq!(ubuntu.familiar_match("library/ubuntu"), Ok(false));
        let digest = AnyReference::parse(D).unwrap();
        assert_eq!(digest.familiar_match("sha256:*"), Ok(true));
    }

    #[test]
    fn serde_uses_the_full_string() {
        let r = Reference::parse_docker_ref("ubuntu").unwrap();
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(json, "\"docker.io/library/ubuntu:latest\"");
        assert_eq!(serde_json::from_str::<Reference>(&json).unwrap(), r);
        let e = serde_json::from_str::<Reference>("\"Foo\"").unwrap_err();
        assert!(
            e.to_string().contains("repository name must be lowercase"),
            "{e}"
        );
    }

    #[test]
    fn debug_shows_the_string() {
        let r = Reference::parse("a/b:c").unwrap();
        assert_eq!(format!("{r:?}"), "Reference(a/b:c)");
    }
}
