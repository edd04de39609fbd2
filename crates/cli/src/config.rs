//! kiln's configuration file, read in this one place.
//!
//! Two files, both optional, both TOML: the system file
//! `/etc/kiln/config.toml`, then the user file
//! `$XDG_CONFIG_HOME/kiln/config.toml` (`~/.config/kiln/config.toml`).
//! A key set in the user file replaces the system file's value.
//!
//! ```toml
//! registry-mirrors = ["https://mirror.example"]   # for docker.io, tried in order
//! insecure-registries = ["myreg:5000"]            # HTTPS unverified, then HTTP (loopback always is)
//! max-concurrent-downloads = 3
//! max-concurrent-uploads = 5
//! runtime = "runc"                                # OCI runtime: embedded (default), runc or a path
//! ```
//!
//! CA certificates for registries with private CAs are read, as Docker
//! reads `/etc/docker/certs.d`, from `/etc/kiln/certs.d/HOST[:PORT]/*.crt`
//! and `$XDG_CONFIG_HOME/kiln/certs.d/HOST[:PORT]/*.crt`.
//!
//! Every registry client the CLI makes (`pull`, `push`, `login`, `search`,
//! `build`) comes from [`registry_client`].

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::Deserialize;

/// The system-wide configuration file.
pub const SYSTEM_CONFIG: &str = "/etc/kiln/config.toml";

/// The system-wide `certs.d` directory.
pub const SYSTEM_CERTS_DIR: &str = "/etc/kiln/certs.d";

/// The settings of one file; unset keys are `None`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Config {
    /// Mirrors of Docker Hub (`https://mirror.example`), tried in order.
    pub registry_mirrors: Option<Vec<String>>,
    /// Registries (`host[:port]`) spoken to over plain HTTP.
    pub insecure_registries: Option<Vec<String>>,
    /// Layers downloaded at once by a pull.
    pub max_concurrent_downloads: Option<usize>,
    /// Layers uploaded at once by a push.
    pub max_concurrent_uploads: Option<usize>,
    /// The OCI runtime: `embedded`, or a runc-compatible binary (name on
    /// `PATH` or path).
    pub runtime: Option<String>,
    /// A transfer slower than this many bytes per second over
    /// `transfer-stall-seconds` is a stall (0: no minimum).
    pub min_transfer_rate: Option<u64>,
    /// The window of `min-transfer-rate`, in seconds.
    pub transfer_stall_seconds: Option<u64>,
}

impl Config {
    /// The system file overlaid with the user file.
    pub fn load() -> anyhow::Result<Config> {
        let mut config = Config::default();
        for path in std::iter::once(PathBuf::from(SYSTEM_CONFIG)).chain(user_config_path()) {
            if let Some(file) = Config::read(&path)? {
                config = config.overlay(file);
            }
        }
        Ok(config)
    }

    /// Parses one file; `None` when it does not exist.
    pub fn read(path: &Path) -> anyhow::Result<Option<Config>> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(e).with_context(|| format!("failed to read {}", path.display()));
            }
        };
        let config = Config::parse(&text)
            .with_context(|| format!("invalid configuration file {}", path.display()))?;
        tracing::debug!(path = %path.display(), ?config, "read configuration");
        Ok(Some(config))
    }

    /// Parses the text of a file and checks its values.
    pub fn parse(text: &str) -> anyhow::Result<Config> {
        let config: Config = toml::from_str(text)?;
        for (key, value) in [
            ("max-concurrent-downloads", config.max_concurrent_downloads),
            ("max-concurrent-uploads", config.max_concurrent_uploads),
        ] {
            if value == Some(0) {
                anyhow::bail!("{key} must be at least 1");
            }
        }
        if config.runtime.as_deref() == Some("") {
            anyhow::bail!("runtime must not be empty");
        }
        if config.transfer_stall_seconds == Some(0) {
            anyhow::bail!("transfer-stall-seconds must be at least 1");
        }
        Ok(config)
    }

    /// `self` with every key that `top` sets taken from `top`.
    pub fn overlay(self, top: Config) -> Config {
        Config {
            registry_mirrors: top.registry_mirrors.or(self.registry_mirrors),
            insecure_registries: top.insecure_registries.or(self.insecure_registries),
            max_concurrent_downloads: top
                .max_concurrent_downloads
                .or(self.max_concurrent_downloads),
            max_concurrent_uploads: top.max_concurrent_uploads.or(self.max_concurrent_uploads),
            runtime: top.runtime.or(self.runtime),
            min_transfer_rate: top.min_transfer_rate.or(self.min_transfer_rate),
            transfer_stall_seconds: top.transfer_stall_seconds.or(self.transfer_stall_seconds),
        }
    }

    /// The registry client settings these values give.
    pub fn client_config(&self) -> kiln_registry::ClientConfig {
        let mut c = kiln_registry::ClientConfig::default();
        if let Some(m) = &self.registry_mirrors {
            c.mirrors = m.clone();
        }
        if let Some(i) = &self.insecure_registries {
            c.insecure_registries = i.iter().map(|h| strip_scheme(h)).collect();
        }
        if let Some(n) = self.max_concurrent_downloads {
            c.concurrency = n;
        }
        if let Some(n) = self.max_concurrent_uploads {
            c.upload_concurrency = n;
        }
        if let Some(rate) = self.min_transfer_rate {
            c.min_rate_bytes_per_sec = rate;
        }
        if let Some(secs) = self.transfer_stall_seconds {
            c.min_rate_window = std::time::Duration::from_secs(secs);
        }
        c
    }
}

/// `$XDG_CONFIG_HOME/kiln/config.toml`, else `~/.config/kiln/config.toml`.
pub fn user_config_path() -> Option<PathBuf> {
    user_config_dir().map(|d| d.join("config.toml"))
}

/// The `certs.d` directories, system's first: `/etc/kiln/certs.d`, then
/// `$XDG_CONFIG_HOME/kiln/certs.d` (`~/.config/kiln/certs.d`).
pub fn certs_dirs() -> Vec<PathBuf> {
    std::iter::once(PathBuf::from(SYSTEM_CERTS_DIR))
        .chain(user_config_dir().map(|d| d.join("certs.d")))
        .collect()
}

/// `$XDG_CONFIG_HOME/kiln`, else `~/.config/kiln`.
fn user_config_dir() -> Option<PathBuf> {
    if let Some(xdg) = std::env::var_os("XDG_CONFIG_HOME").map(PathBuf::from)
        && xdg.is_absolute()
    {
        return Some(xdg.join("kiln"));
    }
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .filter(|h| h.is_absolute())
        .map(|h| h.join(".config/kiln"))
}

/// `myreg:5000` from `http://myreg:5000/`, as Docker accepts both.
fn strip_scheme(host: &str) -> String {
    let rest = host
        .strip_prefix("http://")
        .or_else(|| host.strip_prefix("https://"))
        .unwrap_or(host);
    rest.trim_end_matches('/').to_owned()
}

/// A registry client with the configuration files' settings and Docker's
/// credential store (`$DOCKER_CONFIG` or `~/.docker`).
pub fn registry_client() -> anyhow::Result<kiln_registry::Client> {
    let config = Config::load()?;
    let credentials = kiln_registry::CredentialStore::from_env().ok();
    let mut client_config = config.client_config();
    client_config.certs_dirs = certs_dirs();
    kiln_registry::Client::new(client_config, credentials)
        .context("failed to create the registry client")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_all_keys() {
        let c = Config::parse(
            r#"
registry-mirrors = ["https://mirror.example"]
insecure-registries = ["http://myreg:5000/", "other:80"]
max-concurrent-downloads = 7
max-concurrent-uploads = 2
runtime = "runc"
min-transfer-rate = 100
transfer-stall-seconds = 30
"#,
        )
        .unwrap();
        assert_eq!(c.runtime.as_deref(), Some("runc"));
        let cc = c.client_config();
        assert_eq!(cc.mirrors, ["https://mirror.example"]);
        assert_eq!(cc.insecure_registries, ["myreg:5000", "other:80"]);
        assert_eq!((cc.concurrency, cc.upload_concurrency), (7, 2));
        assert_eq!(cc.min_rate_bytes_per_sec, 100);
        assert_eq!(cc.min_rate_window, std::time::Duration::from_secs(30));
    }

    #[test]
    fn defaults_and_errors() {
        let cc = Config::parse("").unwrap().client_config();
        assert_eq!((cc.concurrency, cc.upload_concurrency), (3, 5));
        assert!(cc.mirrors.is_empty());
        assert!(Config::parse("max-concurrent-uploads = 0").is_err());
        assert!(Config::parse("transfer-stall-seconds = 0").is_err());
        assert_eq!(cc.min_rate_bytes_per_sec, 1024);
        assert!(Config::parse("registry-mirror = []").is_err());
        assert!(Config::parse("max-concurrent-downloads = \"x\"").is_err());
    }

    #[test]
    fn user_keys_replace_system_keys() {
        let system =
            Config::parse("registry-mirrors = [\"https://a\"]\nmax-concurrent-downloads = 9")
                .unwrap();
        let user = Config::parse("registry-mirrors = []").unwrap();
        let merged = system.overlay(user);
        assert_eq!(merged.registry_mirrors, Some(vec![]));
        assert_eq!(merged.max_concurrent_downloads, Some(9));
    }
}
