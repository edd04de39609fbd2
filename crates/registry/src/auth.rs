//! Registry authentication: `WWW-Authenticate` challenges and the token
//! cache.
//!
//! A registry answers an unauthenticated request with 401 and a challenge:
//! `Basic realm="…"` (send the credentials with every request) or
//! `Bearer realm="https://auth/token",service="…",scope="…"` (get a token
//! from the realm for the scopes needed, then send it). Tokens are cached per
//! (registry, scopes) until they expire.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A parsed `WWW-Authenticate` challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Challenge {
    Basic {
        realm: Option<String>,
    },
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

/// Parses a `WWW-Authenticate` header value. Only the first challenge is
/// used; unknown schemes give `None`.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = match header.find(char::is_whitespace) {
        Some(i) => (&header[..i], header[i..].trim_start()),
        None => (header, ""),
    };
    let params = parse_params(rest);
    let get = |k: &str| {
        params
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.clone())
    };
    if scheme.eq_ignore_ascii_case("basic") {
        Some(Challenge::Basic {
            realm: get("realm"),
        })
    } else if scheme.eq_ignore_ascii_case("bearer") {
        Some(Challenge::Bearer {
            realm: get("realm")?,
            service: get("service"),
            scope: get("scope"),
        })
    } else {
        None
    }
}

/// `key=value` and `key="quoted, value"` pairs separated by commas.
fn parse_params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while matches!(chars.peek(), Some(c) if c.is_whitespace() || *c == ',') {
            chars.next();
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c == ',' {
                break;
            }
            key.push(c);
            chars.next();
        }
        if key.is_empty() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'=') {
            chars.next();
            if chars.peek() == Some(&'"') {
                chars.next();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some(n) = chars.next() {
                                value.push(n);
                            }
                        }
                        '"' => break,
                        c => value.push(c),
                    }
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c == ',' {
                        break;
                    }
                    value.push(c);
                    chars.next();
                }
                value = value.trim().to_owned();
            }
        }
        out.push((key.trim().to_owned(), value));
    }
    out
}

/// The token endpoint's answer.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct TokenResponse {
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub access_token: Option<String>,
    #[serde(default)]
    pub expires_in: Option<u64>,
}

/// Tokens live at least this long when the server does not say (the
/// distribution spec's default).
pub(crate) const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);

#[derive(Clone, Debug)]
pub(crate) enum Authorization {
    Basic(String),
    Bearer(String),
}

impl Authorization {
    pub(crate) fn header_value(&self) -> String {
        match self {
            Authorization::Basic(v) => format!("Basic {v}"),
            Authorization::Bearer(t) => format!("Bearer {t}"),
        }
    }
}

#[derive(Debug)]
struct CachedToken {
    token: String,
    expires: Instant,
}

/// What the client knows about authentication, per registry host: the
/// challenge it last saw and the tokens it holds.
#[derive(Debug, Default)]
pub(crate) struct AuthCache {
    challenges: Mutex<HashMap<String, Challenge>>,
    tokens: Mutex<HashMap<(String, String), CachedToken>>,
}

impl AuthCache {
    pub(crate) fn challenge(&self, host: &str) -> Option<Challenge> {
        lock(&self.challenges).get(host).cloned()
    }

    pub(crate) fn set_challenge(&self, host: &str, challenge: Challenge) {
        lock(&self.challenges).insert(host.to_owned(), challenge);
    }

    pub(crate) fn token(&self, host: &str, scopes: &str) -> Option<String> {
        let tokens = lock(&self.tokens);
        let cached = tokens.get(&(host.to_owned(), scopes.to_owned()))?;
        (cached.expires > Instant::now()).then(|| cached.token.clone())
    }

    pub(crate) fn set_token(&self, host: &str, scopes: &str, token: String, lifetime: Duration) {
        // Renew a little early so that a token never expires in flight.
        let margin = (lifetime / 10).min(Duration::from_secs(10));
        let expires = Instant::now() + lifetime.saturating_sub(margin);
        lock(&self.tokens).insert(
            (host.to_owned(), scopes.to_owned()),
            CachedToken { token, expires },
        );
    }

    pub(crate) fn forget_token(&self, host: &str, scopes: &str) {
        lock(&self.tokens).remove(&(host.to_owned(), scopes.to_owned()));
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_challenges() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull,push""#,
        );
        assert_eq!(
            c,
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/busybox:pull,push".into()),
            })
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic {
                realm: Some("Registry Realm".into())
            })
        );
        assert_eq!(
            parse_challenge("basic"),
            Some(Challenge::Basic { realm: None })
        );
        assert_eq!(parse_challenge("Negotiate abc"), None);
        assert_eq!(parse_challenge("Bearer service=x"), None);
    }

    #[test]
    fn tokens_expire() {
        let cache = AuthCache::default();
        cache.set_token("h", "s", "t".into(), Duration::from_secs(60));
        assert_eq!(cache.token("h", "s").as_deref(), Some("t"));
        assert_eq!(cache.token("h", "other"), None);
        cache.set_token("h", "s", "t".into(), Duration::ZERO);
        assert_eq!(cache.token("h", "s"), None);
    }
}
