//! Exec ops: a process over the root input's layers (overlay lowers) with
//! the op's extra mounts; the upper directory becomes the new layer.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use kiln_runtime::{BindMount, ExecRequest, Network, OutputChunk, Stream, TmpfsMount};
use kiln_solver::{
    CacheInit, CacheSharing, ExecContext, ExecOp, LogStream, MountKind, NetworkMode, SecretMount,
};
use tokio::sync::mpsc;

use crate::error::{Error, Result, blocking};
use crate::fsref::FsRef;
use crate::paths;
use crate::snapshot::Commit;
use crate::view::View;
use crate::worker::Shared;

/// Everything that must stay alive (mounted, locked) while the process
/// runs; released on drop.
#[derive(Default)]
struct Held {
    views: Vec<View>,
    secrets: Vec<SecretDir>,
    locks: Vec<fs::File>,
}

/// A private directory holding secret files: a tmpfs when one can be
/// mounted, so secrets never touch the disk.
struct SecretDir {
    dir: tempfile::TempDir,
    mounted: bool,
}

impl SecretDir {
    fn new(parent: &Path) -> Result<SecretDir> {
        let dir = tempfile::Builder::new()
            .prefix("secret-")
            .tempdir_in(parent)
            .map_err(|e| Error::io("create temporary directory in", parent, e))?;
        let mounted = rustix::mount::mount(
            "kiln-secret",
            dir.path(),
            "tmpfs",
            rustix::mount::MountFlags::NOEXEC
                | rustix::mount::MountFlags::NOSUID
                | rustix::mount::MountFlags::NODEV,
            Some(c"mode=0700,size=16m"),
        )
        .is_ok();
        if !mounted {
            tracing::debug!(dir = %dir.path().display(), "no tmpfs for secrets; using a private directory");
            fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700))
                .map_err(|e| Error::io("set permissions of", dir.path(), e))?;
        }
        Ok(SecretDir { dir, mounted })
    }
}

impl Drop for SecretDir {
    fn drop(&mut self) {
        if self.mounted
            && let Err(e) =
                rustix::mount::unmount(self.dir.path(), rustix::mount::UnmountFlags::DETACH)
        {
            tracing::warn!(dir = %self.dir.path().display(), error = %e, "failed to unmount secret tmpfs");
        }
    }
}

/// `cache-mounts/<id>` names: ids are paths (`/root/.cache`), so every
/// byte outside `[A-Za-z0-9._-]` is percent-encoded.
pub(crate) fn cache_dir_name(id: &str) -> String {
    let mut s = String::new();
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-') {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    if s.is_empty() || s == "." || s == ".." {
        s = format!("%{s}");
    }
    s
}

/// The host directory of a cache mount, with its lock when held.
async fn cache_mount(
    shared: &Shared,
    id: &str,
    sharing: CacheSharing,
    init: Option<CacheInit>,
) -> Result<(PathBuf, Option<fs::File>)> {
    let base = shared.cache_mounts.clone();
    let name = cache_dir_name(id);
    // A new cache directory gets the mount's owner and mode, as BuildKit's
    // (an existing one keeps what it has).
    let create_dir_all = move |dir: &Path| -> std::io::Result<()> {
        if dir.is_dir() {
            return Ok(());
        }
        fs::create_dir_all(dir)?;
        if let Some(i) = init {
            rustix::fs::chown(
                dir,
                Some(rustix::fs::Uid::from_raw(i.uid)),
                Some(rustix::fs::Gid::from_raw(i.gid)),
            )?;
            fs::set_permissions(dir, fs::Permissions::from_mode(i.mode & 0o7777))?;
        }
        Ok(())
    };
    blocking(move || {
        fs::create_dir_all(&base).map_err(|e| Error::io("create directory", &base, e))?;
        let dir = base.join(&name);
        match sharing {
            CacheSharing::Shared => {
                create_dir_all(&dir).map_err(|e| Error::io("create directory", &dir, e))?;
                Ok((dir, None))
            }
            CacheSharing::Locked => {
                let lock = crate::locks::open(&base.join(format!("{name}.lock")))?;
                // Waits for the other user (another build, or this one).
                lock.lock()
                    .map_err(|e| Error::io("lock", base.join(format!("{name}.lock")), e))?;
                create_dir_all(&dir).map_err(|e| Error::io("create directory", &dir, e))?;
                Ok((dir, Some(lock)))
            }
            CacheSharing::Private => {
                // Instance 0 is the shared directory itself; concurrent
                // users get their own instance.
                for i in 0usize.. {
                    let (d, l) = if i == 0 {
                        (dir.clone(), base.join(format!("{name}.private.lock")))
                    } else {
                        (
                            base.join(format!("{name}.private-{i}")),
                            base.join(format!("{name}.private-{i}.lock")),
                        )
                    };
                    let lock = crate::locks::open(&l)?;
                    if lock.try_lock().is_ok() {
                        create_dir_all(&d).map_err(|e| Error::io("create directory", &d, e))?;
                        return Ok((d, Some(lock)));
                    }
                }
                unreachable!("the loop only ends by returning")
            }
        }
    })
    .await
}

fn write_secret(dir: &Path, name: &str, data: &[u8], m: &SecretMount) -> Result<PathBuf> {
    let path = dir.join(name);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode_0600()
        .open(&path)
        .map_err(|e| Error::io("create", &path, e))?;
    f.write_all(data)
        .map_err(|e| Error::io("write", &path, e))?;
    drop(f);
    crate::copy::set_owner_times(&path, m.uid, m.gid, None)?;
    fs::set_permissions(&path, fs::Permissions::from_mode(m.mode & 0o7777))
        .map_err(|e| Error::io("set permissions of", &path, e))?;
    Ok(path)
}

trait Mode0600 {
    fn mode_0600(&mut self) -> &mut Self;
}

impl Mode0600 for OpenOptions {
    fn mode_0600(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.mode(0o600)
    }
}

/// The host name of a build step's container, as BuildKit names it.
const BUILD_HOSTNAME: &str = "buildkitsandbox";

/// Runs `op` and returns the root stack with the changes on top.
pub(crate) async fn run(
    shared: &Shared,
    op: &ExecOp,
    inputs: &[FsRef],
    ctx: &ExecContext,
) -> Result<FsRef> {
    let root_mount = op.mounts.iter().find(|m| paths::clean_abs(&m.dest) == "/");
    let base = root_mount
        .and_then(|m| m.input)
        .map(|i| inputs[i].clone())
        .unwrap_or_default();

    let mut held = Held::default();
    let mut env = op.env.clone();
    let mut req = ExecRequest::new(base.lowers(), op.args.clone());
    req.cwd = PathBuf::from(if op.cwd.is_empty() { "/" } else { &op.cwd });
    req.user = op.user.clone().filter(|u| !u.is_empty());
    req.network = match op.network {
        NetworkMode::None => Network::None,
        NetworkMode::Host => Network::Host,
        NetworkMode::Default => Network::Default,
    };
    // BuildKit's host name for build steps.
    req.hostname = Some(
        op.hostname
            .clone()
            .unwrap_or_else(|| BUILD_HOSTNAME.to_owned()),
    );
    req.extra_hosts = op
        .extra_hosts
        .iter()
        .map(|h| (h.host.clone(), h.ip.clone()))
        .collect();

    let secrets_parent = shared.tmp.clone();
    let mut secret_dir: Option<usize> = None;
    for m in &op.mounts {
        let dest = paths::clean_abs(&m.dest);
        if dest == "/" && matches!(m.kind, MountKind::Bind) {
            continue;
        }
        let target = PathBuf::from(&dest);
        match &m.kind {
            MountKind::Bind => {
                let fs_ref = m.input.map(|i| inputs[i].clone()).unwrap_or_default();
                let tmp = shared.tmp.clone();
                let writable = !m.readonly;
                let view = blocking(move || View::new(&tmp, &fs_ref, writable)).await?;
                let source = match m.selector.as_deref().filter(|s| !s.is_empty() && *s != "/") {
                    Some(sel) => {
                        let p = paths::resolve(view.path(), sel)
                            .map_err(|e| Error::io("resolve", sel, e))?;
                        if !p.exists() {
                            return Err(Error::NotFound {
                                path: paths::clean_abs(sel),
                            });
                        }
                        p
                    }
                    None => view.path().to_owned(),
                };
                held.views.push(view);
                req.mounts.push(BindMount {
                    source,
                    target,
                    readonly: m.readonly,
                });
            }
            MountKind::Cache { id, sharing, init } => {
                let id = if id.is_empty() { &dest } else { id };
                let (dir, lock) = cache_mount(shared, id, *sharing, *init).await?;
                if let Some(lock) = lock {
                    held.locks.push(lock);
                }
                req.mounts.push(BindMount {
                    source: dir,
                    target,
                    readonly: m.readonly,
                });
            }
            MountKind::Tmpfs { size } => req.tmpfs.push(TmpfsMount {
                target,
                size: *size,
            }),
            MountKind::Secret(s) => {
                let Some(data) = shared.config.secrets.get(&s.id) else {
                    if s.optional {
                        continue;
                    }
                    return Err(Error::SecretNotFound { id: s.id.clone() });
                };
                let idx = match secret_dir {
                    Some(i) => i,
                    None => {
                        held.secrets.push(SecretDir::new(&secrets_parent)?);
                        secret_dir = Some(held.secrets.len() - 1);
                        held.secrets.len() - 1
                    }
                };
                let name = format!("s{}", req.mounts.len());
                let path = write_secret(held.secrets[idx].dir.path(), &name, data, s)?;
                if let Some(var) = &s.env {
                    env.push(format!("{var}={}", String::from_utf8_lossy(data)));
                }
                req.mounts.push(BindMount {
                    source: path,
                    target,
                    readonly: true,
                });
            }
            MountKind::Ssh(s) => {
                let Some(sock) = shared.config.ssh.get(&s.id) else {
                    if s.optional {
                        continue;
                    }
                    return Err(Error::SshNotFound { id: s.id.clone() });
                };
                req.mounts.push(BindMount {
                    source: sock.clone(),
                    target,
                    readonly: true,
                });
            }
        }
    }
    for se in &op.secret_env {
        match shared.config.secrets.get(&se.id) {
            Some(data) => env.push(format!("{}={}", se.name, String::from_utf8_lossy(data))),
            None if se.optional => {}
            None => return Err(Error::SecretNotFound { id: se.id.clone() }),
        }
    }
    req.env = env;

    // Stream output to the solver's progress.
    let (tx, mut rx) = mpsc::channel::<OutputChunk>(64);
    req.output = Some(tx);
    let progress = ctx.progress.clone();
    let forward = tokio::spawn(async move {
        while let Some(chunk) = rx.recv().await {
            let stream = match chunk.stream {
                Stream::Stdout => LogStream::Stdout,
                Stream::Stderr => LogStream::Stderr,
            };
            progress.log(stream, chunk.data);
        }
    });

    let result = shared.runtime.run(req, &ctx.cancel).await;
    let _ = forward.await;
    drop(held);
    let result = match result {
        Ok(r) => r,
        Err(kiln_runtime::Error::Cancelled { .. }) => return Err(Error::Cancelled),
        Err(e) => return Err(e.into()),
    };
    if result.exit_code != 0 {
        return Err(Error::ProcessFailed {
            command: op.args.join(" "),
            code: result.exit_code,
        });
    }
    let store = shared.store.clone();
    let sde = shared.config.source_date_epoch;
    let upper = result.upper;
    let parent = base.clone();
    let layer = blocking(move || {
        Commit {
            store: &store,
            parent: &parent,
            dir: upper.path(),
            placeholders: upper.placeholders(),
            write_blob: true,
            source_date_epoch: sde,
        }
        .run()
    })
    .await?;
    Ok(base.with_layer(layer))
}
