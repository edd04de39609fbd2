//! Test helpers: images built in a temporary store, a real
//! `docker-registry` on loopback, and a fake registry served by axum.
#![allow(dead_code)]

pub mod servers;

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kiln_oci::{Digest, Reference};
use kiln_registry::{Client, Error, PullOptions, PullResult};
use kiln_store::{ImageRecord, Store};

/// An image written into a store: manifest, config, layers.
pub struct TestImage {
    pub manifest: Vec<u8>,
    pub manifest_digest: Digest,
    pub config: Vec<u8>,
    pub config_digest: Digest,
    pub layers: Vec<(Digest, Vec<u8>)>,
}

/// A tar layer holding one file.
pub fn layer_tar(name: &str, content: &[u8]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(content.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_cksum();
    builder.append_data(&mut header, name, content).unwrap();
    builder.into_inner().unwrap()
}

/// Builds an image with `layers` (name, content) and returns its documents.
pub fn make_image(seed: &str, files: &[(&str, &[u8])]) -> TestImage {
    let layers: Vec<(Digest, Vec<u8>)> = files
        .iter()
        .map(|(n, c)| {
            let tar = layer_tar(n, c);
            (Digest::sha256(&tar), tar)
        })
        .collect();
    let config = serde_json::json!({
        "architecture": "amd64",
        "config": {"Labels": {"seed": seed}},
        "os": "linux",
        "rootfs": {
            "type": "layers",
            "diff_ids": layers.iter().map(|(d, _)| d.to_string()).collect::<Vec<_>>(),
        },
    });
    let config = serde_json::to_vec(&config).unwrap();
    let config_digest = Digest::sha256(&config);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest.to_string(),
            "size": config.len(),
        },
        "layers": layers.iter().map(|(d, b)| serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": d.to_string(),
            "size": b.len(),
        })).collect::<Vec<_>>(),
    });
    let manifest = serde_json::to_vec(&manifest).unwrap();
    TestImage {
        manifest_digest: Digest::sha256(&manifest),
        manifest,
        config,
        config_digest,
        layers,
    }
}

impl TestImage {
    /// Writes the image's blobs into `store` and tags it `tag`.
    pub fn store(&self, store: &Store, tag: &str) -> ImageRecord {
        store.write_blob_bytes(&self.manifest).unwrap();
        store.write_blob_bytes(&self.config).unwrap();
        for (_, b) in &self.layers {
            store.write_blob_bytes(b).unwrap();
        }
        let mut record = ImageRecord::new(self.manifest_digest.clone(), self.config_digest.clone());
        record.tags = vec![Reference::parse_docker_ref(tag).unwrap()];
        store.put_image(record).unwrap()
    }
}

/// Bytes that do not compress and are the same every run.
pub fn noise(len: usize) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn have(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|p| p.join(program).is_file()))
}

/// A `docker-registry` process, killed when dropped.
pub struct RealRegistry {
    child: Option<Child>,
    /// `ip:port` it listens on.
    pub host: String,
    pub addr: std::net::SocketAddr,
    dir: tempfile::TempDir,
    config_path: PathBuf,
}

impl Drop for RealRegistry {
    fn drop(&mut self) {
        self.kill();
    }
}

impl RealRegistry {
    /// The registry's storage root.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// A directory for the test's own files, removed with the registry.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// SIGKILLs the process (nothing flushed, nothing cleaned up).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the process again, with the same configuration and storage.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("registry.log"))
            .unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&self.config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        wait_for_port(self.addr, &self.dir.path().join("registry.log"));
    }

    /// The files of the uploads under way in the registry's storage.
    pub fn upload_files(&self) -> Vec<(PathBuf, u64)> {
        let mut out = Vec::new();
        walk(&self.data_dir(), &mut |p, len| {
            if p.components().any(|c| c.as_os_str() == "_uploads") && p.ends_with("data") {
                out.push((p.to_path_buf(), len));
            }
        });
        out
    }
}

fn walk(dir: &Path, f: &mut dyn FnMut(&Path, u64)) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        match e.metadata() {
            Ok(m) if m.is_dir() => walk(&p, f),
            Ok(m) => f(&p, m.len()),
            Err(_) => {}
        }
    }
}

/// How to start a registry.
#[derive(Default)]
pub struct RegistryOptions<'a> {
    /// htpasswd Basic auth for (user, password).
    pub basic: Option<(&'a str, &'a str)>,
    /// An `auth:` section (token auth).
    pub auth_section: Option<String>,
    /// Serve HTTPS with (certificate, key) PEM files.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Listen on this loopback address rather than 127.0.0.1.
    pub ip: Option<&'a str>,
    /// A directory to create the registry's own in (to keep files the
    /// test wrote before, such as a token bundle, next to it).
    pub dir: Option<tempfile::TempDir>,
}

/// Starts `docker-registry`, optionally with htpasswd Basic auth for
/// (user, password). `None`, with the reason printed, when it is not
/// installed.
pub fn start_registry(basic: Option<(&str, &str)>) -> Option<RealRegistry> {
    start_registry_with(RegistryOptions {
        basic,
        ..Default::default()
    })
}

/// Starts `docker-registry` with `options`; `None` when it is not
/// installed.
pub fn start_registry_with(options: RegistryOptions<'_>) -> Option<RealRegistry> {
    if !have("docker-registry") {
        eprintln!("skipping: docker-registry is not installed (apt-get install docker-registry)");
        return None;
    }
    let dir = options.dir.unwrap_or_else(|| tempfile::tempdir().unwrap());
    let ip = options.ip.unwrap_or("127.0.0.1");
    let port = TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let mut config = format!(
        "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {ip}:{port}\n",
        data.display()
    );
    if let Some((cert, key)) = &options.tls {
        config.push_str(&format!(
            "  tls:\n    certificate: {}\n    key: {}\n",
            cert.display(),
            key.display()
        ));
    }
    if let Some((user, password)) = options.basic {
        let hash = bcrypt::hash(password, 4).unwrap();
        let htpasswd = dir.path().join("htpasswd");
        std::fs::write(&htpasswd, format!("{user}:{hash}\n")).unwrap();
        config.push_str(&format!(
            "auth:\n  htpasswd:\n    realm: kiln-test\n    path: {}\n",
            htpasswd.display()
        ));
    }
    if let Some(section) = &options.auth_section {
        config.push_str(section);
    }
    let config_path = dir.path().join("config.yml");
    std::fs::File::create(&config_path)
        .unwrap()
        .write_all(config.as_bytes())
        .unwrap();
    let addr: std::net::SocketAddr = format!("{ip}:{port}").parse().unwrap();
    let mut registry = RealRegistry {
        child: None,
        host: format!("{ip}:{port}"),
        addr,
        dir,
        config_path,
    };
    registry.spawn();
    Some(registry)
}

fn wait_for_port(addr: std::net::SocketAddr, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(addr).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "docker-registry did not start: {}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

pub fn temp_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store")).unwrap();
    (dir, store)
}

pub fn reference(s: &str) -> Reference {
    Reference::parse_docker_ref(s).unwrap()
}

/// Pulls `image` with default options and no progress output.
pub async fn pull(client: &Client, store: &Store, image: &str) -> Result<PullResult, Error> {
    client
        .pull(store, &reference(image), &PullOptions::default(), &|_| {})
        .await
}

pub fn path_of(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().to_path_buf()
}
