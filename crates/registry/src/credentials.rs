//! Docker-compatible credentials: `config.json` (`auths`, `credsStore`,
//! `credHelpers`) in `$DOCKER_CONFIG` or `~/.docker`.
//!
//! Reads and writes. Writes keep every other key of the file, and replace
//! the file atomically (temp file in the same directory, mode 0600, fsync,
//! rename). Credential helpers (`docker-credential-<name>`) are run as
//! subprocesses with Docker's protocol (`get`, `store`, `erase` on stdin).
//!
//! Keys are normalised as Docker does: Docker Hub (`docker.io`,
//! `index.docker.io`, `registry-1.docker.io`) is `https://index.docker.io/v1/`;
//! other registries are their `host[:port]`.

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Map, Value};

/// The `config.json` key of Docker Hub.
pub const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

/// The user name under which Docker stores an identity (refresh) token.
const IDENTITY_TOKEN_USER: &str = "<token>";

/// Errors of reading and writing credentials.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialError {
    #[error("failed to {action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not a valid Docker config file")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("the auth entry for {registry} in {path} is not valid base64 \"user:password\"")]
    BadAuthEntry { registry: String, path: PathBuf },
    #[error(
        "credential helper docker-credential-{helper} failed to {action} credentials for {registry}: {message}"
    )]
    Helper {
        helper: String,
        action: &'static str,
        registry: String,
        message: String,
    },
    #[error("cannot find the home directory (neither DOCKER_CONFIG nor HOME is set)")]
    NoHome,
}

type Result<T, E = CredentialError> = std::result::Result<T, E>;

/// A user name and password (or token) for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    pub username: String,
    pub password: String,
}

impl Credential {
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Credential {
        Credential {
            username: username.into(),
            password: password.into(),
        }
    }

    /// Docker stores OAuth refresh tokens with user name `<token>`.
    pub fn identity_token(&self) -> Option<&str> {
        (self.username == IDENTITY_TOKEN_USER).then_some(self.password.as_str())
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// The key under which credentials for `registry` (a host, `host:port`, or
/// a URL) are stored.
pub fn server_key(registry: &str) -> String {
    let host = registry_host_of(registry);
    if is_docker_hub_host(&host) {
        DOCKER_HUB_KEY.to_owned()
    } else {
        host
    }
}

/// `host[:port]` of a key or URL, lowercased.
fn registry_host_of(key: &str) -> String {
    let rest = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    rest.split('/').next().unwrap_or(rest).to_ascii_lowercase()
}

fn is_docker_hub_host(host: &str) -> bool {
    matches!(
        host,
        "docker.io" | "index.docker.io" | "registry-1.docker.io"
    )
}

/// Docker's credential configuration, in one directory.
#[derive(Clone, Debug)]
pub struct CredentialStore {
    dir: PathBuf,
}

impl CredentialStore {
    /// The store Docker uses: `$DOCKER_CONFIG`, else `$HOME/.docker`.
    pub fn from_env() -> Result<CredentialStore> {
        if let Some(dir) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
            return Ok(CredentialStore::at(dir));
        }
        let home = std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .ok_or(CredentialError::NoHome)?;
        Ok(CredentialStore::at(Path::new(&home).join(".docker")))
    }

    /// The store in directory `dir` (which holds `config.json`).
    pub fn at(dir: impl Into<PathBuf>) -> CredentialStore {
        CredentialStore { dir: dir.into() }
    }

    /// The path of `config.json`.
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("config.json")
    }

    fn read_config(&self) -> Result<Map<String, Value>> {
        let path = self.config_path();
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Map::new()),
            Err(source) => {
                return Err(CredentialError::Io {
                    action: "read",
                    path,
                    source,
                });
            }
        };
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Map::new());
        }
        match serde_json::from_slice(&bytes) {
            Ok(Value::Object(map)) => Ok(map),
            Ok(_) => Err(CredentialError::Parse {
                path,
                source: serde_json::Error::io(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "top level is not an object",
                )),
            }),
            Err(source) => Err(CredentialError::Parse { path, source }),
        }
    }

    /// The helper responsible for `key`, if any: `credHelpers` first, then
    /// `credsStore`.
    fn helper_for(config: &Map<String, Value>, key: &str) -> Option<String> {
        let host = registry_host_of(key);
        if let Some(Value::Object(helpers)) = config.get("credHelpers") {
            for (k, v) in helpers {
                if server_key(k) == key
                    && let Some(name) = v.as_str()
                {
                    return Some(name.to_owned());
                }
                if registry_host_of(k) == host
                    && let Some(name) = v.as_str()
                {
                    return Some(name.to_owned());
                }
            }
        }
        config
            .get("credsStore")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    }

    /// The credential helper (`docker-credential-<name>`) that holds
    /// credentials for `registry`, if one is configured; `None` means they
    /// are stored in `config.json` itself.
    pub fn helper(&self, registry: &str) -> Result<Option<String>> {
        let config = self.read_config()?;
        Ok(Self::helper_for(&config, &server_key(registry)))
    }

    /// Credentials for `registry`, or `None` when there are none.
    pub fn get(&self, registry: &str) -> Result<Option<Credential>> {
        let key = server_key(registry);
        let config = self.read_config()?;
        if let Some(helper) = Self::helper_for(&config, &key) {
            return helper_get(&helper, &key);
        }
        let Some(Value::Object(auths)) = config.get("auths") else {
            return Ok(None);
        };
        let entry = auths
            .get(&key)
            .or_else(|| {
                auths
                    .iter()
                    .find(|(k, _)| server_key(k) == key)
                    .map(|(_, v)| v)
            })
            .and_then(Value::as_object);
        let Some(entry) = entry else {
            return Ok(None);
        };
        if let Some(token) = entry
            .get("identitytoken")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
        {
            return Ok(Some(Credential::new(IDENTITY_TOKEN_USER, token)));
        }
        if let Some(auth) = entry
            .get("auth")
            .and_then(Value::as_str)
            .filter(|a| !a.is_empty())
        {
            let bad = || CredentialError::BadAuthEntry {
                registry: key.clone(),
                path: self.config_path(),
            };
            let decoded = BASE64.decode(auth.trim()).map_err(|_| bad())?;
            let decoded = String::from_utf8(decoded).map_err(|_| bad())?;
            let (user, password) = decoded.split_once(':').ok_or_else(bad)?;
            return Ok(Some(Credential::new(user, password.trim_end_matches('\n'))));
        }
        match (
            entry.get("username").and_then(Value::as_str),
            entry.get("password").and_then(Value::as_str),
        ) {
            (Some(u), Some(p)) if !u.is_empty() => Ok(Some(Credential::new(u, p))),
            _ => Ok(None),
        }
    }

    /// Stores credentials for `registry` (what `login` does): through the
    /// helper if one is configured, in `auths` otherwise.
    pub fn store(&self, registry: &str, credential: &Credential) -> Result<()> {
        let key = server_key(registry);
        let mut config = self.read_config()?;
        if let Some(helper) = Self::helper_for(&config, &key) {
            let input = serde_json::json!({
                "ServerURL": key,
                "Username": credential.username,
                "Secret": credential.password,
            });
            run_helper(&helper, "store", &key, input.to_string().as_bytes())?;
            return Ok(());
        }
        let auths = config
            .entry("auths")
            .or_insert_with(|| Value::Object(Map::new()));
        if !auths.is_object() {
            *auths = Value::Object(Map::new());
        }
        let Value::Object(auths) = auths else {
            return Ok(());
        };
        // Drop aliases of the same registry so that only one entry remains.
        auths.retain(|k, _| k == &key || server_key(k) != key);
        let mut entry = Map::new();
        if let Some(token) = credential.identity_token() {
            entry.insert("identitytoken".into(), Value::String(token.to_owned()));
        } else {
            let auth = BASE64.encode(format!("{}:{}", credential.username, credential.password));
            entry.insert("auth".into(), Value::String(auth));
        }
        auths.insert(key.clone(), Value::Object(entry));
        self.write_config(&config)?;
        tracing::debug!(registry = %key, path = %self.config_path().display(), "stored credentials");
        Ok(())
    }

    /// Removes credentials for `registry` (what `logout` does). Returns
    /// whether there were any.
    pub fn erase(&self, registry: &str) -> Result<bool> {
        let key = server_key(registry);
        let mut config = self.read_config()?;
        if let Some(helper) = Self::helper_for(&config, &key) {
            let existed = helper_get(&helper, &key)?.is_some();
            if existed {
                run_helper(&helper, "erase", &key, key.as_bytes())?;
            }
            // Docker also leaves an empty `auths` entry next to helper-held
            // credentials; remove it too.
            if let Some(Value::Object(auths)) = config.get_mut("auths") {
                let before = auths.len();
                auths.retain(|k, _| server_key(k) != key);
                if auths.len() != before {
                    self.write_config(&config)?;
                }
            }
            return Ok(existed);
        }
        let Some(Value::Object(auths)) = config.get_mut("auths") else {
            return Ok(false);
        };
        let before = auths.len();
        auths.retain(|k, _| server_key(k) != key);
        if auths.len() == before {
            return Ok(false);
        }
        self.write_config(&config)?;
        tracing::debug!(registry = %key, "erased credentials");
        Ok(true)
    }

    fn write_config(&self, config: &Map<String, Value>) -> Result<()> {
        let io_err = |action, path: &Path| {
            let path = path.to_path_buf();
            move |source| CredentialError::Io {
                action,
                path,
                source,
            }
        };
        fs::create_dir_all(&self.dir).map_err(io_err("create directory", &self.dir))?;
        let mut bytes =
            serde_json::to_vec_pretty(config).map_err(|source| CredentialError::Parse {
                path: self.config_path(),
                source,
            })?;
        bytes.push(b'\n');
        let path = self.config_path();
        let mut file = kiln_fs::AtomicFile::in_dir(&self.dir, &path)
            .map_err(io_err("create temporary file in", &self.dir))?;
        let tmp_path = file.tmp_path().to_path_buf();
        file.set_mode(0o600)
            .map_err(io_err("set permissions of", &tmp_path))?;
        file.write_all(&bytes).map_err(io_err("write", &tmp_path))?;
        file.commit(kiln_fs::Durability::Durable)
            .map_err(io_err("replace", &path))?;
        Ok(())
    }
}

fn helper_get(helper: &str, key: &str) -> Result<Option<Credential>> {
    let out = match run_helper(helper, "get", key, key.as_bytes()) {
        Ok(out) => out,
        Err(CredentialError::Helper { message, .. })
            if message.contains("credentials not found") =>
        {
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    let value: Value = serde_json::from_slice(&out).map_err(|e| CredentialError::Helper {
        helper: helper.to_owned(),
        action: "get",
        registry: key.to_owned(),
        message: format!("invalid output: {e}"),
    })?;
    let username = value.get("Username").and_then(Value::as_str).unwrap_or("");
    let secret = value.get("Secret").and_then(Value::as_str).unwrap_or("");
    if username.is_empty() && secret.is_empty() {
        return Ok(None);
    }
    Ok(Some(Credential::new(username, secret)))
}

/// Runs `docker-credential-<helper> <action>` with `input` on stdin and
/// returns its stdout.
fn run_helper(helper: &str, action: &'static str, key: &str, input: &[u8]) -> Result<Vec<u8>> {
    let program = format!("docker-credential-{helper}");
    let fail = |message: String| CredentialError::Helper {
        helper: helper.to_owned(),
        action,
        registry: key.to_owned(),
        message,
    };
    let mut child = Command::new(&program)
        .arg(action)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(format!("cannot run {program}: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input)
            .map_err(|e| fail(format!("cannot write to {program}: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| fail(format!("cannot wait for {program}: {e}")))?;
    if !out.status.success() {
        let mut message = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if message.is_empty() {
            message = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        }
        if message.is_empty() {
            message = format!("exited with {}", out.status);
        }
        return Err(fail(message));
    }
    Ok(out.stdout)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn keys_are_normalised() {
        assert_eq!(server_key("docker.io"), DOCKER_HUB_KEY);
        assert_eq!(server_key("registry-1.docker.io"), DOCKER_HUB_KEY);
        assert_eq!(server_key("https://index.docker.io/v1/"), DOCKER_HUB_KEY);
        assert_eq!(server_key("https://Ghcr.io/v2/"), "ghcr.io");
        assert_eq!(server_key("localhost:5000"), "localhost:5000");
    }

    #[test]
    fn store_get_erase_round_trip_keeps_other_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        fs::write(
            &path,
            r#"{"auths":{"index.docker.io":{"auth":"b2xkOnB3"}},"psFormat":"table"}"#,
        )
        .unwrap();
        let store = CredentialStore::at(dir.path());
        assert_eq!(
            store.get("docker.io").unwrap(),
            Some(Credential::new("old", "pw"))
        );
        store
            .store("docker.io", &Credential::new("me", "s:cret"))
            .unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let text = fs::read_to_string(&path).unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["psFormat"], "table");
        assert_eq!(v["auths"].as_object().unwrap().len(), 1);
        assert_eq!(
            v["auths"][DOCKER_HUB_KEY]["auth"],
            BASE64.encode("me:s:cret")
        );
        assert_eq!(
            store.get("index.docker.io").unwrap(),
            Some(Credential::new("me", "s:cret"))
        );
        assert!(store.erase("registry-1.docker.io").unwrap());
        assert_eq!(store.get("docker.io").unwrap(), None);
        assert!(!store.erase("docker.io").unwrap());
    }

    #[test]
    fn helpers_are_run() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        fs::create_dir(&bin).unwrap();
        let log = dir.path().join("log");
        let script = format!(
            "#!/bin/sh\ninput=$(cat)\necho \"$1 $input\" >> {log}\ncase $1 in get) if [ \"$input\" = reg.example ]; then echo '{{\"ServerURL\":\"reg.example\",\"Username\":\"u\",\"Secret\":\"s\"}}'; else echo 'credentials not found in native keychain'; exit 1; fi;; esac\n",
            log = log.display()
        );
        let helper = bin.join("docker-credential-fake");
        fs::write(&helper, script).unwrap();
        fs::set_permissions(&helper, fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(
            dir.path().join("config.json"),
            r#"{"credHelpers":{"reg.example":"fake"}}"#,
        )
        .unwrap();
        // The helper is found on PATH; run through an absolute PATH entry.
        let old_path = std::env::var_os("PATH").unwrap_or_default();
        let mut paths = vec![bin.clone()];
        paths.extend(std::env::split_paths(&old_path));
        // SAFETY: this is the only test in this binary touching PATH, and
        // other tests do not read it concurrently.
        #[allow(unsafe_code)]
        unsafe {
            std::env::set_var("PATH", std::env::join_paths(paths).unwrap())
        };
        let store = CredentialStore::at(dir.path());
        assert_eq!(
            store.get("reg.example").unwrap(),
            Some(Credential::new("u", "s"))
        );
        assert_eq!(store.get("other.example").unwrap(), None);
        store
            .store("reg.example", &Credential::new("u2", "s2"))
            .unwrap();
        assert!(store.erase("reg.example").unwrap());
        let log = fs::read_to_string(&log).unwrap();
        assert!(
            log.contains("store {") && log.contains("\"ServerURL\":\"reg.example\""),
            "{log}"
        );
        assert!(log.contains("erase reg.example"), "{log}");
    }
}
