//! The HTTP transport: endpoints, schemes, timeouts, retries with backoff,
//! authentication, and the mapping of responses to typed errors. The
//! minimum transfer rate is in the `rate` module.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use kiln_oci::Digest;
use reqwest::header::{self, HeaderMap};
use reqwest::{Method, RequestBuilder, Response, StatusCode, Url};

use crate::auth::{
    AuthCache, Authorization, Challenge, DEFAULT_TOKEN_LIFETIME, TokenResponse, parse_challenge,
};
use crate::credentials::{Credential, CredentialStore};
use crate::error::{DOCKER_HUB_RATE_LIMIT_HINT, Error, LOGIN_HINT, Result};
use crate::rate::MAX_STALL_RETRIES;

/// Default limit on the size of a manifest or index.
pub const DEFAULT_MAX_MANIFEST_SIZE: u64 = 4 << 20;

/// Registry client settings.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Insecure hosts (`host` or `host:port`), as Docker treats them: HTTPS
    /// without certificate verification first, plain HTTP when the server
    /// does not speak TLS. Loopback hosts (127.0.0.0/8, `localhost`,
    /// `::1`) always are insecure.
    pub insecure_registries: Vec<String>,
    /// Directories laid out like Docker's `certs.d`: the `*.crt` files of
    /// `DIR/HOST[:PORT]/` are CA certificates trusted, besides the
    /// system's, for that registry.
    pub certs_dirs: Vec<PathBuf>,
    /// Fixed addresses for host names, bypassing DNS (as curl's
    /// `--resolve`).
    pub resolve: Vec<(String, SocketAddr)>,
    /// Mirrors of Docker Hub (`https://mirror.example`,
    /// `http://127.0.0.1:5001`), tried in order before Docker Hub itself.
    pub mirrors: Vec<String>,
    /// Time allowed to establish a connection.
    pub connect_timeout: Duration,
    /// Longest wait for the next bytes of a response (an idle timeout, not
    /// a limit on the whole transfer).
    pub read_timeout: Duration,
    /// How often a request failing transiently (connection errors,
    /// timeouts, 5xx, 429) is retried.
    pub max_retries: u32,
    /// First retry delay; doubled at every further attempt.
    pub retry_base_delay: Duration,
    /// Longest delay between retries, including one asked for by
    /// `Retry-After`; a longer `Retry-After` fails at once.
    pub max_retry_delay: Duration,
    /// Blobs downloaded at once (pull).
    pub concurrency: usize,
    /// Blobs uploaded at once (push).
    pub upload_concurrency: usize,
    /// Largest manifest or index accepted.
    pub max_manifest_size: u64,
    /// Upload blobs in chunks of this many bytes (PATCH) rather than in
    /// one PUT. Chunking is also used when a registry refuses a monolithic
    /// upload with 413.
    pub upload_chunk_size: Option<u64>,
    /// `User-Agent` header.
    pub user_agent: String,
    /// The slowest transfer accepted, in bytes a second: blob and manifest
    /// downloads and blob uploads that move fewer bytes than this over the
    /// last [`min_rate_window`](Self::min_rate_window) fail with
    /// [`Error::TransferStalled`]. The read timeout only catches a
    /// transfer that stops completely; this one catches a dribble. No
    /// verdict is given before a whole window has passed, so a transfer
    /// that finishes within it always succeeds. A stalled blob is retried
    /// once at most (a retry starts over). 0 turns the check off.
    pub min_rate_bytes_per_sec: u64,
    /// The span the minimum rate is measured over: a sliding window, the
    /// rate always being the one of the last window (to within a
    /// sixteenth of it).
    pub min_rate_window: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            insecure_registries: Vec::new(),
            certs_dirs: Vec::new(),
            resolve: Vec::new(),
            mirrors: Vec::new(),
            connect_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(60),
            max_retries: 3,
            retry_base_delay: Duration::from_millis(500),
            max_retry_delay: Duration::from_secs(30),
            concurrency: 3,
            upload_concurrency: 5,
            max_manifest_size: DEFAULT_MAX_MANIFEST_SIZE,
            upload_chunk_size: None,
            user_agent: format!("kiln/{}", env!("CARGO_PKG_VERSION")),
            min_rate_bytes_per_sec: 1024,
            min_rate_window: Duration::from_secs(60),
        }
    }
}

/// Where requests for one registry go: `base` is `scheme://host/`, sent
/// with `http` (whose TLS settings suit the host).
#[derive(Clone, Debug)]
pub(crate) struct Endpoint {
    /// `host[:port]`: the key for credentials, tokens and error messages.
    pub host: String,
    pub base: Url,
    pub http: reqwest::Client,
}

impl Endpoint {
    pub(crate) fn url(&self, path: &str) -> Result<Url> {
        self.base.join(path).map_err(|e| Error::InvalidUrl {
            url: format!("{}{path}", self.base),
            reason: e.to_string(),
        })
    }
}

/// Whether `host` (with optional port) is a loopback address.
pub fn is_loopback_host(host: &str) -> bool {
    let bare = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        match host.rsplit_once(':') {
            Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) && !h.contains(':') => h,
            _ => host,
        }
    };
    bare.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Installs ring as the process's rustls crypto provider unless one is
/// installed already. Idempotent; [`Client::new`] calls it.
pub fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race with another installer is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// A registry client. Cheap to clone; clones share connections, tokens
/// and cached credentials.
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    /// HTTPS with the system's roots.
    /// Built on first use: loading the system's CA certificates takes
    /// milliseconds, which a build that needs no registry should not pay.
    http: std::sync::OnceLock<reqwest::Client>,
    /// HTTPS without certificate verification, for insecure registries.
    insecure_http: std::sync::OnceLock<reqwest::Client>,
    /// Clients trusting the CAs of a host's `certs.d` directory, per host
    /// (`None`: the host has none; use `http`).
    host_http: Mutex<HashMap<String, Option<reqwest::Client>>>,
    /// The scheme found to work for each insecure host.
    schemes: Mutex<HashMap<String, &'static str>>,
    pub(crate) config: ClientConfig,
    credentials: Option<CredentialStore>,
    /// Credentials per host: set explicitly, or loaded once from the store.
    cred_cache: Mutex<HashMap<String, Option<Credential>>>,
    auth: AuthCache,
    /// Repositories each blob was last seen in, per registry host: the
    /// candidates for cross-repository mounts.
    pub(crate) blob_sources: Mutex<HashMap<(String, Digest), Vec<String>>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("config", &self.inner.config)
            .field("credentials", &self.inner.credentials)
            .finish_non_exhaustive()
    }
}

/// What a request acts on, for error messages and status mapping.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Target<'a> {
    pub repository: &'a str,
    /// For manifest requests: the tag or digest (404 is `ManifestUnknown`).
    pub manifest: Option<&'a str>,
}

impl Client {
    /// A client with `config`, reading credentials from `credentials`
    /// (usually [`CredentialStore::from_env`]) when a registry asks.
    pub fn new(config: ClientConfig, credentials: Option<CredentialStore>) -> Result<Client> {
        install_crypto_provider();
        Ok(Client {
            inner: Arc::new(Inner {
                http: std::sync::OnceLock::new(),
                insecure_http: std::sync::OnceLock::new(),
                host_http: Mutex::new(HashMap::new()),
                schemes: Mutex::new(HashMap::new()),
                config,
                credentials,
                cred_cache: Mutex::new(HashMap::new()),
                auth: AuthCache::default(),
                blob_sources: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The client's settings.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// The credential store, if any.
    pub fn credential_store(&self) -> Option<&CredentialStore> {
        self.inner.credentials.as_ref()
    }

    /// Uses `credential` for `registry` (`host[:port]`, or `docker.io`)
    /// instead of the credential store.
    pub fn set_credential(&self, registry: &str, credential: Option<Credential>) {
        let host = api_host(registry);
        lock(&self.inner.cred_cache).insert(host, credential);
    }

    /// Whether `host` is an insecure registry: loopback, or configured.
    pub fn is_insecure(&self, host: &str) -> bool {
        is_loopback_host(host)
            || self
                .inner
                .config
                .insecure_registries
                .iter()
                .any(|h| h.eq_ignore_ascii_case(host))
    }

    /// The HTTP client with the system's CAs.
    fn default_http(&self) -> Result<reqwest::Client> {
        lazy_http(&self.inner.http, &self.inner.config, false)
    }

    /// The HTTP client without certificate checks (insecure registries).
    fn insecure_http(&self) -> Result<reqwest::Client> {
        lazy_http(&self.inner.insecure_http, &self.inner.config, true)
    }

    /// The HTTP client for `scheme://host`: without certificate checks for
    /// HTTPS to an insecure registry, with the host's `certs.d` CAs
    /// otherwise.
    pub(crate) fn http_for(&self, scheme: &str, host: &str) -> Result<reqwest::Client> {
        if scheme == "https" && self.is_insecure(host) {
            return self.insecure_http();
        }
        if scheme != "https" || self.inner.config.certs_dirs.is_empty() {
            return self.default_http();
        }
        let key = host.to_ascii_lowercase();
        if let Some(cached) = lock(&self.inner.host_http).get(&key) {
            return match cached.clone() {
                Some(c) => Ok(c),
                None => self.default_http(),
            };
        }
        let roots = host_ca_certificates(&self.inner.config.certs_dirs, &key)?;
        let client = if roots.is_empty() {
            None
        } else {
            tracing::debug!(registry = %host, count = roots.len(), "trusting certs.d CAs");
            Some(build_http(&self.inner.config, roots, false)?)
        };
        lock(&self.inner.host_http).insert(key, client.clone());
        match client {
            Some(c) => Ok(c),
            None => self.default_http(),
        }
    }

    /// The endpoint of a registry host. Secure registries are spoken to
    /// over HTTPS. For insecure ones, as Docker does, HTTPS (without
    /// certificate verification) is tried first and plain HTTP when that
    /// fails; the answer is remembered for the client's life.
    pub(crate) async fn endpoint(&self, host: &str) -> Result<Endpoint> {
        let scheme = if !self.is_insecure(host) {
            "https"
        } else if let Some(s) = lock(&self.inner.schemes).get(host).copied() {
            s
        } else {
            let s = self.probe_https(host).await?;
            lock(&self.inner.schemes).insert(host.to_owned(), s);
            s
        };
        let url = format!("{scheme}://{host}/");
        let base = Url::parse(&url).map_err(|e| Error::InvalidUrl {
            url,
            reason: e.to_string(),
        })?;
        Ok(Endpoint {
            host: host.to_owned(),
            base,
            http: self.http_for(scheme, host)?,
        })
    }

    /// `https` if an insecure registry answers `GET /v2/` over TLS (with
    /// any status), `http` otherwise.
    async fn probe_https(&self, host: &str) -> Result<&'static str> {
        let url = format!("https://{host}/v2/");
        let url = Url::parse(&url).map_err(|e| Error::InvalidUrl {
            url,
            reason: e.to_string(),
        })?;
        match self.insecure_http()?.get(url.clone()).send().await {
            Ok(_) => Ok("https"),
            Err(e) => {
                let err = classify(host, url.as_str(), e);
                tracing::debug!(registry = %host, error = %err, "HTTPS failed; falling back to HTTP");
                Ok("http")
            }
        }
    }

    /// The mirrors' endpoints, in order.
    pub(crate) fn mirror_endpoints(&self) -> Result<Vec<Endpoint>> {
        self.inner
            .config
            .mirrors
            .iter()
            .map(|m| {
                let text = if m.contains("://") {
                    m.clone()
                } else {
                    format!("https://{m}")
                };
                let mut base = Url::parse(&text).map_err(|e| Error::InvalidUrl {
                    url: m.clone(),
                    reason: e.to_string(),
                })?;
                if !base.path().ends_with('/') {
                    let path = format!("{}/", base.path());
                    base.set_path(&path);
                }
                let host = match base.port() {
                    Some(p) => format!("{}:{p}", base.host_str().unwrap_or_default()),
                    None => base.host_str().unwrap_or_default().to_owned(),
                };
                let http = self.http_for(base.scheme(), &host)?;
                Ok(Endpoint { host, base, http })
            })
            .collect()
    }

    async fn credential(&self, host: &str) -> Result<Option<Credential>> {
        if let Some(c) = lock(&self.inner.cred_cache).get(host) {
            return Ok(c.clone());
        }
        let Some(store) = self.inner.credentials.clone() else {
            return Ok(None);
        };
        let key = host.to_owned();
        let found = tokio::task::spawn_blocking(move || store.get(&key))
            .await
            .map_err(|source| Error::Task { source })??;
        lock(&self.inner.cred_cache).insert(host.to_owned(), found.clone());
        Ok(found)
    }

    /// Sends a request built by `build` (called once per attempt), with
    /// authentication for `scopes` and retries. Returns the final response,
    /// whatever its status; see [`check`](Self::check).
    pub(crate) async fn send(
        &self,
        ep: &Endpoint,
        scopes: &[String],
        method: Method,
        url: &Url,
        build: &(dyn Fn(RequestBuilder) -> Result<RequestBuilder> + Send + Sync),
    ) -> Result<Response> {
        let scope_key = scopes.join(" ");
        let mut refreshed = false;
        loop {
            let authorization = self.authorization(ep, scopes, &scope_key, false).await?;
            let resp = self
                .send_with_retries(&ep.host, &ep.http, &|| {
                    let mut rb = ep.http.request(method.clone(), url.clone());
                    if let Some(a) = &authorization {
                        rb = rb.header(header::AUTHORIZATION, a.header_value());
                    }
                    build(rb)
                })
                .await?;
            if resp.status() != StatusCode::UNAUTHORIZED || refreshed {
                return Ok(resp);
            }
            let Some(challenge) = resp
                .headers()
                .get(header::WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_challenge)
            else {
                return Ok(resp);
            };
            tracing::debug!(registry = %ep.host, ?challenge, "authentication challenge");
            let sent_basic = matches!(authorization, Some(Authorization::Basic(_)));
            self.inner.auth.set_challenge(&ep.host, challenge.clone());
            self.inner.auth.forget_token(&ep.host, &scope_key);
            if sent_basic && matches!(challenge, Challenge::Basic { .. }) {
                // The credentials themselves were refused.
                return Ok(resp);
            }
            refreshed = true;
            // Fetch a fresh token (or pick the credentials) now so that
            // errors of the token server surface as such.
            self.authorization(ep, scopes, &scope_key, true).await?;
        }
    }

    /// The `Authorization` to send to `ep` for `scopes`, from what the
    /// registry asked for last time. `None` before the first challenge.
    async fn authorization(
        &self,
        ep: &Endpoint,
        scopes: &[String],
        scope_key: &str,
        after_challenge: bool,
    ) -> Result<Option<Authorization>> {
        let Some(challenge) = self.inner.auth.challenge(&ep.host) else {
            return Ok(None);
        };
        match challenge {
            Challenge::Basic { .. } => {
                let cred = self.credential(&ep.host).await?;
                match cred {
                    Some(c) => Ok(Some(Authorization::Basic(
                        BASE64.encode(format!("{}:{}", c.username, c.password)),
                    ))),
                    None if after_challenge => Err(Error::Unauthorized {
                        registry: ep.host.clone(),
                        repository: repository_of_scopes(scopes),
                        message: None,
                        hint: LOGIN_HINT,
                    }),
                    None => Ok(None),
                }
            }
            Challenge::Bearer {
                realm,
                service,
                scope,
            } => {
                if let Some(token) = self.inner.auth.token(&ep.host, scope_key) {
                    return Ok(Some(Authorization::Bearer(token)));
                }
                let mut all_scopes: Vec<String> = scopes.to_vec();
                if after_challenge
                    && let Some(s) = scope
                    && !all_scopes.contains(&s)
                {
                    all_scopes.push(s);
                }
                let cred = self.credential(&ep.host).await?;
                let (token, lifetime) = self
                    .fetch_token(ep, &realm, service.as_deref(), &all_scopes, cred.as_ref())
                    .await?;
                self.inner
                    .auth
                    .set_token(&ep.host, scope_key, token.clone(), lifetime);
                Ok(Some(Authorization::Bearer(token)))
            }
        }
    }

    /// Gets a bearer token from `realm`.
    async fn fetch_token(
        &self,
        ep: &Endpoint,
        realm: &str,
        service: Option<&str>,
        scopes: &[String],
        cred: Option<&Credential>,
    ) -> Result<(String, Duration)> {
        let mut url = Url::parse(realm).map_err(|e| Error::InvalidUrl {
            url: realm.to_owned(),
            reason: e.to_string(),
        })?;
        let http = self.http_for(url.scheme(), &url_host(&url))?;
        let identity = cred.and_then(Credential::identity_token);
        let resp = if let Some(refresh) = identity {
            // OAuth2 refresh-token grant, as Docker does with identity tokens.
            let mut form = Url::parse("http://form.invalid/").map_err(|e| Error::InvalidUrl {
                url: realm.to_owned(),
                reason: e.to_string(),
            })?;
            {
                let mut q = form.query_pairs_mut();
                q.append_pair("grant_type", "refresh_token")
                    .append_pair("refresh_token", refresh)
                    .append_pair("client_id", "kiln");
                if let Some(s) = service {
                    q.append_pair("service", s);
                }
                if !scopes.is_empty() {
                    q.append_pair("scope", &scopes.join(" "));
                }
            }
            let body = form.query().unwrap_or_default().to_owned();
            self.send_with_retries(&ep.host, &http, &|| {
                Ok(http
                    .post(url.clone())
                    .header(
                        header::CONTENT_TYPE,
                        "application/x-www-form-urlencoded; charset=utf-8",
                    )
                    .body(body.clone()))
            })
            .await?
        } else {
            {
                let mut q = url.query_pairs_mut();
                if let Some(s) = service {
                    q.append_pair("service", s);
                }
                for s in scopes {
                    q.append_pair("scope", s);
                }
            }
            self.send_with_retries(&ep.host, &http, &|| {
                let mut rb = http.get(url.clone());
                if let Some(c) = cred {
                    rb = rb.basic_auth(&c.username, Some(&c.password));
                }
                Ok(rb)
            })
            .await?
        };
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            let message = read_error_message(resp).await.1;
            return Err(Error::Unauthorized {
                registry: ep.host.clone(),
                repository: repository_of_scopes(scopes),
                message: message.or_else(|| {
                    cred.is_some()
                        .then(|| "incorrect username or password".to_owned())
                }),
                hint: LOGIN_HINT,
            });
        }
        if !status.is_success() {
            return Err(self
                .status_error(
                    &ep.host,
                    Method::GET,
                    resp,
                    Target {
                        repository: &repository_of_scopes(scopes).unwrap_or_default(),
                        manifest: None,
                    },
                )
                .await);
        }
        let url_text = resp.url().to_string();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| classify(&ep.host, &url_text, e))?;
        let body: TokenResponse =
            serde_json::from_slice(&bytes).map_err(|e| Error::InvalidResponse {
                registry: ep.host.clone(),
                url: url_text.clone(),
                reason: format!("invalid token response: {e}"),
            })?;
        let token = body
            .token
            .filter(|t| !t.is_empty())
            .or(body.access_token)
            .ok_or_else(|| Error::InvalidResponse {
                registry: ep.host.clone(),
                url: url_text,
                reason: "token response has no token".to_owned(),
            })?;
        let lifetime = body
            .expires_in
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_TOKEN_LIFETIME)
            .max(DEFAULT_TOKEN_LIFETIME);
        tracing::debug!(registry = %ep.host, ?scopes, ?lifetime, "got a bearer token");
        Ok((token, lifetime))
    }

    /// Sends the request built by `build`, retrying transient failures
    /// (connection errors, timeouts, 5xx, 429) with exponential backoff. A
    /// 429 or 5xx that persists is returned as the response.
    pub(crate) async fn send_with_retries(
        &self,
        registry: &str,
        http: &reqwest::Client,
        build: &(dyn Fn() -> Result<RequestBuilder> + Send + Sync),
    ) -> Result<Response> {
        let config = &self.inner.config;
        let mut attempt = 0u32;
        loop {
            let request = build()?
                .build()
                .map_err(|source| Error::Client { source })?;
            let url = request.url().to_string();
            let method = request.method().clone();
            let result = http.execute(request).await;
            let can_retry = attempt < config.max_retries;
            match result {
                Ok(resp) => {
                    let status = resp.status();
                    let transient = status == StatusCode::TOO_MANY_REQUESTS
                        || matches!(status.as_u16(), 500 | 502 | 503 | 504);
                    if !transient || !can_retry {
                        return Ok(resp);
                    }
                    let delay = match retry_after(resp.headers()) {
                        Some(d) if d > config.max_retry_delay => return Ok(resp),
                        Some(d) => d,
                        None => self.backoff(attempt),
                    };
                    tracing::debug!(%registry, %method, %url, %status, ?delay, attempt, "retrying");
                    drop(resp);
                    tokio::time::sleep(delay).await;
                }
                Err(e) => {
                    let err = classify(registry, &url, e);
                    if !can_retry || !err.is_transient() {
                        return Err(err);
                    }
                    let delay = self.backoff(attempt);
                    tracing::debug!(%registry, %method, %url, error = %err, ?delay, attempt, "retrying");
                    tokio::time::sleep(delay).await;
                }
            }
            attempt += 1;
        }
    }

    /// The delay before retry number `attempt + 1`: the base delay doubled
    /// per attempt, capped, with up to 25% jitter.
    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        let config = &self.inner.config;
        let base = config
            .retry_base_delay
            .saturating_mul(1u32 << attempt.min(16))
            .min(config.max_retry_delay);
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let jitter = base.mul_f64(f64::from(nanos % 1000) / 4000.0);
        (base + jitter).min(config.max_retry_delay)
    }

    /// Whether a transfer that failed with `error` after `attempt` retries
    /// (`stalls` of them for stalls) is tried again: transient errors up
    /// to the configured retries, and a stall at most
    /// [`MAX_STALL_RETRIES`] times, since a retry starts the transfer over.
    pub(crate) fn may_retry(&self, error: &Error, attempt: u32, stalls: &mut u32) -> bool {
        if attempt >= self.inner.config.max_retries {
            return false;
        }
        if matches!(error, Error::TransferStalled { .. }) {
            *stalls += 1;
            return *stalls <= MAX_STALL_RETRIES;
        }
        error.is_transient()
    }

    /// The typed error for an unsuccessful response.
    pub(crate) async fn status_error(
        &self,
        registry: &str,
        method: Method,
        resp: Response,
        target: Target<'_>,
    ) -> Error {
        let status = resp.status();
        let url = resp.url().to_string();
        let hub = registry == kiln_oci::reference::DOCKER_HUB_REGISTRY_HOST
            || registry.ends_with(".docker.io");
        let retry = retry_after(resp.headers());
        let (code, message) = read_error_message(resp).await;
        match status {
            StatusCode::UNAUTHORIZED => Error::Unauthorized {
                registry: registry.to_owned(),
                repository: Some(target.repository.to_owned()).filter(|r| !r.is_empty()),
                message,
                hint: LOGIN_HINT,
            },
            StatusCode::FORBIDDEN => Error::Denied {
                registry: registry.to_owned(),
                repository: target.repository.to_owned(),
                message,
            },
            StatusCode::TOO_MANY_REQUESTS => Error::TooManyRequests {
                registry: registry.to_owned(),
                repository: target.repository.to_owned(),
                retry_after: retry,
                hint: if hub {
                    DOCKER_HUB_RATE_LIMIT_HINT.to_owned()
                } else {
                    message.unwrap_or_else(|| "too many requests".to_owned())
                },
            },
            StatusCode::NOT_FOUND if target.manifest.is_some() => Error::ManifestUnknown {
                registry: registry.to_owned(),
                repository: target.repository.to_owned(),
                reference: target.manifest.unwrap_or_default().to_owned(),
            },
            _ => Error::Status {
                registry: registry.to_owned(),
                method: method.to_string(),
                url,
                status: status.as_u16(),
                code,
                message,
            },
        }
    }

    /// Returns `resp` if its status is one of `ok`, the typed error
    /// otherwise.
    pub(crate) async fn check(
        &self,
        registry: &str,
        method: Method,
        resp: Response,
        ok: &[StatusCode],
        target: Target<'_>,
    ) -> Result<Response> {
        if ok.contains(&resp.status()) {
            Ok(resp)
        } else {
            Err(self.status_error(registry, method, resp, target).await)
        }
    }

    /// Checks credentials against a registry (`host[:port]` or `docker.io`):
    /// `GET /v2/` with them, through the token server if the registry uses
    /// one. Does not store them.
    pub async fn check_login(&self, registry: &str, credential: &Credential) -> Result<()> {
        let host = api_host(registry);
        let previous = lock(&self.inner.cred_cache).insert(host.clone(), Some(credential.clone()));
        let result = self.ping(&host).await;
        // Keep the credential for this client if it works.
        if result.is_err() {
            let mut cache = lock(&self.inner.cred_cache);
            match previous {
                Some(p) => cache.insert(host, p),
                None => cache.remove(&host),
            };
        }
        result
    }

    /// `GET /v2/`: whether the registry answers and accepts our
    /// credentials.
    pub async fn ping(&self, registry: &str) -> Result<()> {
        let host = api_host(registry);
        let ep = self.endpoint(&host).await?;
        let url = ep.url("v2/")?;
        let resp = self.send(&ep, &[], Method::GET, &url, &Ok).await?;
        self.check(
            &ep.host,
            Method::GET,
            resp,
            &[StatusCode::OK],
            Target {
                repository: "",
                manifest: None,
            },
        )
        .await?;
        Ok(())
    }

    /// Verifies `credential` against `registry` and stores it in the
    /// credential store (`kiln login`).
    pub async fn login(&self, registry: &str, credential: &Credential) -> Result<()> {
        self.check_login(registry, credential).await?;
        if let Some(store) = self.inner.credentials.clone() {
            let key = registry.to_owned();
            let cred = credential.clone();
            tokio::task::spawn_blocking(move || store.store(&key, &cred))
                .await
                .map_err(|source| Error::Task { source })??;
        }
        Ok(())
    }

    /// Removes stored credentials for `registry` (`kiln logout`). Returns
    /// whether there were any.
    pub async fn logout(&self, registry: &str) -> Result<bool> {
        lock(&self.inner.cred_cache).remove(&api_host(registry));
        let Some(store) = self.inner.credentials.clone() else {
            return Ok(false);
        };
        let key = registry.to_owned();
        let erased = tokio::task::spawn_blocking(move || store.erase(&key))
            .await
            .map_err(|source| Error::Task { source })??;
        Ok(erased)
    }

    pub(crate) fn remember_blob_source(&self, host: &str, digest: &Digest, repository: &str) {
        let mut sources = lock(&self.inner.blob_sources);
        let repos = sources
            .entry((host.to_owned(), digest.clone()))
            .or_default();
        if !repos.iter().any(|r| r == repository) {
            repos.push(repository.to_owned());
        }
    }

    pub(crate) fn blob_sources(&self, host: &str, digest: &Digest) -> Vec<String> {
        lock(&self.inner.blob_sources)
            .get(&(host.to_owned(), digest.clone()))
            .cloned()
            .unwrap_or_default()
    }
}

/// `host[:port]` of a URL.
fn url_host(url: &Url) -> String {
    match url.port() {
        Some(p) => format!("{}:{p}", url.host_str().unwrap_or_default()),
        None => url.host_str().unwrap_or_default().to_owned(),
    }
}

/// An HTTP client with `config`'s timeouts and name overrides, trusting
/// `extra_roots` besides the system's roots, or (with `accept_invalid`)
/// any certificate.
/// The client in `cell`, built on first use (a failed build is retried
/// next time).
fn lazy_http(
    cell: &std::sync::OnceLock<reqwest::Client>,
    config: &ClientConfig,
    insecure: bool,
) -> Result<reqwest::Client> {
    if let Some(c) = cell.get() {
        return Ok(c.clone());
    }
    let built = build_http(config, Vec::new(), insecure)?;
    Ok(cell.get_or_init(|| built).clone())
}

fn build_http(
    config: &ClientConfig,
    extra_roots: Vec<reqwest::Certificate>,
    accept_invalid: bool,
) -> Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .user_agent(config.user_agent.clone())
        .connect_timeout(config.connect_timeout)
        .read_timeout(config.read_timeout);
    for (name, addr) in &config.resolve {
        builder = builder.resolve(name, *addr);
    }
    if accept_invalid {
        builder = builder.tls_danger_accept_invalid_certs(true);
    } else if !extra_roots.is_empty() {
        builder = builder.tls_certs_merge(extra_roots);
    }
    builder.build().map_err(|source| Error::Client { source })
}

/// The CA certificates of `DIR/HOST/*.crt` for every certs.d `DIR`, as
/// Docker reads `/etc/docker/certs.d`. A missing directory has none.
fn host_ca_certificates(dirs: &[PathBuf], host: &str) -> Result<Vec<reqwest::Certificate>> {
    let mut out = Vec::new();
    for dir in dirs {
        let host_dir = dir.join(host);
        let entries = match std::fs::read_dir(&host_dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => {
                return Err(Error::Certificates {
                    path: host_dir,
                    reason: source.to_string(),
                });
            }
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "crt"))
            .collect();
        files.sort();
        for file in files {
            out.extend(read_certificates(&file)?);
        }
    }
    Ok(out)
}

fn read_certificates(path: &Path) -> Result<Vec<reqwest::Certificate>> {
    let bad = |reason: String| Error::Certificates {
        path: path.to_owned(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("no PEM certificate in the file".to_owned()));
    }
    Ok(certs)
}

/// The API host of a registry name as users type it: `docker.io` (and its
/// aliases) → `registry-1.docker.io`; URLs lose their scheme and path.
pub fn api_host(registry: &str) -> String {
    let rest = registry
        .strip_prefix("https://")
        .or_else(|| registry.strip_prefix("http://"))
        .unwrap_or(registry);
    let host = rest.split('/').next().unwrap_or(rest).to_ascii_lowercase();
    match host.as_str() {
        "" | "docker.io" | "index.docker.io" | "registry-1.docker.io" => {
            kiln_oci::reference::DOCKER_HUB_REGISTRY_HOST.to_owned()
        }
        _ => host,
    }
}

fn repository_of_scopes(scopes: &[String]) -> Option<String> {
    scopes.first().and_then(|s| {
        let rest = s.strip_prefix("repository:")?;
        let (repo, _) = rest.rsplit_once(':')?;
        Some(repo.to_owned())
    })
}

/// `Retry-After` as seconds or an HTTP date.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate_parse(value)?;
    Some(when.duration_since(SystemTime::now()).unwrap_or_default())
}

/// Parses an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`).
fn httpdate_parse(s: &str) -> Option<SystemTime> {
    let parts: Vec<&str> = s.split_whitespace().collect();
    if parts.len() != 6 || parts[5] != "GMT" {
        return None;
    }
    let day: u64 = parts[1].parse().ok()?;
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| *m == parts[2])? as u64
        + 1;
    let year: i64 = parts[3].parse().ok()?;
    let hms: Vec<u64> = parts[4]
        .split(':')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    if hms.len() != 3 {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = month as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + (hms[0] * 3600 + hms[1] * 60 + hms[2]) as i64;
    u64::try_from(secs)
        .ok()
        .map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s))
}

/// The first `errors[]` entry of a distribution error body: code and
/// message.
async fn read_error_message(resp: Response) -> (Option<String>, Option<String>) {
    let Ok(bytes) = resp.bytes().await else {
        return (None, None);
    };
    let bytes = &bytes[..bytes.len().min(64 << 10)];
    #[derive(serde::Deserialize)]
    struct Body {
        #[serde(default)]
        errors: Vec<Entry>,
        #[serde(default)]
        details: Option<String>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        #[serde(default)]
        code: Option<String>,
        #[serde(default)]
        message: Option<String>,
    }
    match serde_json::from_slice::<Body>(bytes) {
        Ok(body) => match body.errors.into_iter().next() {
            Some(e) => (e.code, e.message),
            None => (None, body.details),
        },
        Err(_) => {
            let text = String::from_utf8_lossy(bytes).trim().to_owned();
            (None, (!text.is_empty() && text.len() < 500).then_some(text))
        }
    }
}

/// Maps a transport error to a typed error.
pub(crate) fn classify(registry: &str, url: &str, e: reqwest::Error) -> Error {
    let registry = registry.to_owned();
    let url = url.to_owned();
    if e.is_timeout() || chain_has_timeout(&e) {
        return Error::Timeout {
            registry,
            url,
            source: e,
        };
    }
    if chain_has_tls(&e) {
        return Error::Tls {
            registry,
            source: e,
        };
    }
    if chain_has_io_kind(&e, std::io::ErrorKind::ConnectionRefused) {
        return Error::ConnectionRefused {
            registry,
            url,
            source: e,
        };
    }
    Error::Network {
        registry,
        url,
        source: e,
    }
}

fn sources<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> Vec<&'a (dyn std::error::Error + 'static)> {
    let mut out = Vec::new();
    let mut cur = Some(e);
    while let Some(err) = cur {
        out.push(err);
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
        {
            out.push(inner);
            cur = inner.source();
            continue;
        }
        cur = err.source();
    }
    out
}

fn chain_has_tls(e: &reqwest::Error) -> bool {
    sources(e).iter().any(|s| {
        s.downcast_ref::<rustls::Error>().is_some() || {
            let text = s.to_string();
            text.contains("InvalidContentType") || text.contains("invalid peer certificate")
        }
    })
}

fn chain_has_io_kind(e: &reqwest::Error, kind: std::io::ErrorKind) -> bool {
    sources(e).iter().any(|s| {
        s.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == kind)
    })
}

fn chain_has_timeout(e: &reqwest::Error) -> bool {
    chain_has_io_kind(e, std::io::ErrorKind::TimedOut)
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for h in [
            "localhost",
            "localhost:5000",
            "127.0.0.1",
            "127.1.2.3:80",
            "[::1]:5000",
            "::1",
        ] {
            assert!(is_loopback_host(h), "{h}");
        }
        for h in ["example.com", "10.0.0.1:5000", "localhost.example.com"] {
            assert!(!is_loopback_host(h), "{h}");
        }
    }

    #[test]
    fn insecure_hosts() {
        let c = Client::new(
            ClientConfig {
                insecure_registries: vec!["reg.internal:5000".into()],
                ..Default::default()
            },
            None,
        )
        .unwrap();
        assert!(c.is_insecure("127.0.0.1:5000"));
        assert!(c.is_insecure("REG.internal:5000"));
        assert!(!c.is_insecure("reg.internal"));
        assert!(!c.is_insecure("ghcr.io"));
    }

    #[tokio::test]
    async fn secure_hosts_use_https_without_probing() {
        let c = Client::new(ClientConfig::default(), None).unwrap();
        let ep = c.endpoint("ghcr.io").await.unwrap();
        assert_eq!(ep.base.as_str(), "https://ghcr.io/");
    }

    #[test]
    fn certs_d_directories() {
        let dir = tempfile::tempdir().unwrap();
        assert!(
            host_ca_certificates(&[dir.path().to_owned()], "reg:5000")
                .unwrap()
                .is_empty()
        );
        std::fs::create_dir(dir.path().join("reg:5000")).unwrap();
        std::fs::write(dir.path().join("reg:5000/ca.crt"), "not a certificate").unwrap();
        std::fs::write(dir.path().join("reg:5000/client.key"), "ignored").unwrap();
        let err = host_ca_certificates(&[dir.path().to_owned()], "reg:5000").unwrap_err();
        assert!(
            matches!(&err, Error::Certificates { path, .. } if path.ends_with("reg:5000/ca.crt")),
            "{err:?}"
        );
    }

    #[test]
    fn api_hosts() {
        assert_eq!(api_host("docker.io"), "registry-1.docker.io");
        assert_eq!(
            api_host("https://index.docker.io/v1/"),
            "registry-1.docker.io"
        );
        assert_eq!(api_host("localhost:5000"), "localhost:5000");
    }

    #[test]
    fn http_dates() {
        let t = httpdate_parse("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(
            t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs(),
            784_111_777
        );
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let c = Client::new(
            ClientConfig {
                retry_base_delay: Duration::from_millis(100),
                max_retry_delay: Duration::from_secs(1),
                ..Default::default()
            },
            None,
        )
        .unwrap();
        assert!(c.backoff(0) >= Duration::from_millis(100));
        assert!(c.backoff(0) <= Duration::from_millis(125));
        assert!(c.backoff(2) >= Duration::from_millis(400));
        assert_eq!(c.backoff(10), Duration::from_secs(1));
    }
}
