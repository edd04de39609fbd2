//! Source ops: images from the store (or a registry), local directories,
//! HTTP downloads and git checkouts.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use futures::StreamExt;
use kiln_oci::{Digest, Platform, Reference};
use kiln_solver::ExecContext;
use kiln_store::{ImageRecord, Store};

use crate::error::{Error, Result, blocking};
use crate::fsref::{FsRef, Layer, LayerBlob};
use crate::local::{self, Selection};
use crate::snapshot::{Commit, staging_dir};
use crate::worker::Shared;

/// The image in the store for `reference`, preferring `resolved`.
pub(crate) fn find_image(
    store: &Store,
    reference: &str,
    resolved: Option<&Digest>,
) -> Result<Option<ImageRecord>> {
    if let Some(d) = resolved {
        let found = store.images()?.into_iter().find(|r| {
            &r.manifest_digest == d
                || r.id.digest() == d
                || r.repo_digests.iter().any(|rd| rd.digest() == Some(d))
        });
        // Held for the rest of the build, so no prune removes it meanwhile.
        return match found {
            Some(r) => Ok(store.hold_image(&r.id)?),
            None => Ok(None),
        };
    }
    match store.resolve_held(reference) {
        Ok(r) => Ok(Some(r)),
        Err(kiln_store::Error::ImageNotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

pub(crate) async fn image(
    shared: &Shared,
    reference: &str,
    platform: &str,
    resolved: Option<&Digest>,
    ctx: &ExecContext,
) -> Result<FsRef> {
    let store = shared.store.clone();
    let (r, d) = (reference.to_owned(), resolved.cloned());
    let mut record = blocking(move || find_image(&store, &r, d.as_ref())).await?;
    if record.is_none() {
        let Some(client) = &shared.config.registry else {
            return Err(Error::ImageNotFound {
                reference: reference.to_owned(),
            });
        };
        let invalid = |what, reason: String| Error::Invalid {
            what,
            value: reference.to_owned(),
            reason,
        };
        let mut parsed = Reference::parse_docker_ref(reference)
            .map_err(|e| invalid("image reference", e.to_string()))?;
        if let Some(d) = resolved {
            parsed = parsed.with_digest(d.clone());
        }
        let platform: Option<Platform> = if platform.is_empty() {
            None
        } else {
            Some(
                platform
                    .parse()
                    .map_err(|e: kiln_oci::platform::PlatformError| Error::Invalid {
                        what: "platform",
                        value: platform.to_owned(),
                        reason: e.to_string(),
                    })?,
            )
        };
        let progress = ctx.progress.clone();
        let report = move |ev: kiln_registry::PullEvent| {
            if let kiln_registry::PullProgress::Downloading { current, total } = ev.progress {
                progress.progress(current, Some(total));
            }
        };
        // The pull future is not provably `Send` (higher-ranked closures
        // inside), so it runs on a blocking thread of this runtime.
        let (client, store) = (client.clone(), shared.store.clone());
        let handle = tokio::runtime::Handle::current();
        let pulled = tokio::task::spawn_blocking(move || {
            handle
                .block_on(client.pull(
                    &store,
                    &parsed,
                    &kiln_registry::PullOptions { platform },
                    &report,
                ))
                .map_err(Error::from)
        })
        .await
        .map_err(|e| Error::Join(e.to_string()))??;
        let store = shared.store.clone();
        let id = pulled.image.id.clone();
        record = Some(
            blocking(move || Ok(store.hold_image(&id)?))
                .await?
                .ok_or_else(|| Error::ImageNotFound {
                    reference: reference.to_owned(),
                })?,
        );
    }
    let record = record.expect("found or pulled");
    let store = shared.store.clone();
    blocking(move || {
        let docs = store.image_docs(&record)?;
        let diff_ids = docs.config.rootfs.diff_ids.clone();
        if diff_ids.len() != docs.layers.len() {
            return Err(Error::action(format!(
                "image {} has {} layers but {} diff ids",
                record.id,
                docs.layers.len(),
                diff_ids.len()
            )));
        }
        let chains = kiln_oci::config::chain_ids(&diff_ids);
        let mut layers = Vec::with_capacity(diff_ids.len());
        for (i, desc) in docs.manifest.layers().iter().enumerate() {
            let snapshot = store.prepare_snapshot(&chains[i], &docs.layers[i], &diff_ids[i])?;
            layers.push(Layer {
                diff_id: diff_ids[i].clone(),
                snapshot_id: chains[i].clone(),
                snapshot_dir: snapshot.fs,
                blob: Some(LayerBlob {
                    digest: docs.layers[i].clone(),
                    size: desc.size(),
                    media_type: desc.media_type().to_string(),
                }),
                empty: false,
            });
        }
        Ok(FsRef::from_layers(layers))
    })
    .await
}

/// Commits staged source content as a one-layer stack (no blob).
fn commit_content(store: &Store, content: &Path) -> Result<FsRef> {
    let scratch = FsRef::scratch();
    let layer = Commit {
        store,
        parent: &scratch,
        dir: content,
        placeholders: &[],
        write_blob: false,
        source_date_epoch: None,
    }
    .run()?;
    Ok(scratch.with_layer(layer))
}

/// The directory a local source names.
pub(crate) fn local_dir(shared: &Shared, name: &str) -> Result<PathBuf> {
    shared
        .config
        .contexts
        .get(name)
        .cloned()
        .ok_or_else(|| Error::UnknownLocal {
            name: name.to_owned(),
            known: shared
                .config
                .contexts
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", "),
        })
}

pub(crate) struct LocalSpec {
    /// The source's name (`context`, or a `--build-context` name).
    pub name: String,
    pub dir: PathBuf,
    pub follow: Vec<String>,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    /// Modes are left out of the content key (the consumer sets them).
    pub ignore_modes: bool,
}

/// The selected entries of a local source (blocking).
fn local_entries(shared: &Shared, spec: &LocalSpec) -> Result<Vec<local::Entry>> {
    let matcher = if spec.exclude.is_empty() {
        None
    } else {
        Some(
            (shared.matcher)(&spec.exclude).map_err(|reason| Error::Pattern {
                pattern: spec.exclude.join(", "),
                reason,
            })?,
        )
    };
    let sel = Selection::new(&spec.follow, &spec.include, matcher.as_ref(), &spec.exclude);
    local::select(&spec.dir, &sel)
}

/// The content key of a local source (blocking), and, when it differs
/// from the previous build's key of the same selection, what changed
/// (`context: src/main.c changed`).
pub(crate) fn local_key(shared: &Shared, spec: &LocalSpec) -> Result<([u8; 32], Option<String>)> {
    let entries = local_entries(shared, spec)?;
    let canon = fs::canonicalize(&spec.dir).unwrap_or_else(|_| spec.dir.clone());
    let tag = blake3::hash(canon.as_os_str().as_encoded_bytes()).to_hex();
    // Beside the directory's stat cache, per selection (same parameters):
    // the previous build's selection (`.sel-`, for what changed) and the
    // stat digest it had (`.quick`).
    let mut sel = blake3::Hasher::new();
    for list in [&spec.follow, &spec.include, &spec.exclude] {
        sel.update(&(list.len() as u64).to_le_bytes());
        for p in list {
            sel.update(&(p.len() as u64).to_le_bytes());
            sel.update(p.as_bytes());
        }
    }
    let sel = sel.finalize().to_hex();
    let base = format!("statcache-{}", &tag[..16]);
    let record = shared.build_dir.join(format!("{base}.sel-{}", &sel[..16]));
    let quick_file = shared.build_dir.join(format!(
        "{base}.sel-{}.quick{}",
        &sel[..16],
        if spec.ignore_modes { "-m" } else { "" }
    ));
    let quick = local::quick_digest(&entries, spec.ignore_modes);
    if let Some(key) = local::recorded_quick_key(&quick_file, &quick) {
        tracing::debug!(root = %spec.dir.display(), entries = entries.len(), "local source unchanged since the last build");
        return Ok((key, None));
    }
    let stat_cache = shared.build_dir.join(format!("{base}.json"));
    let (key, hashes) = local::content_key(&spec.dir, &entries, &stat_cache, spec.ignore_modes)?;
    local::record_quick_key(&quick_file, &quick, &key);
    let change = local::diff_selection(&spec.name, &record, &key, &entries, &hashes);
    Ok((key, change))
}

/// Copies a local source's selection into a new layer (blocking).
pub(crate) fn local(shared: &Shared, spec: &LocalSpec) -> Result<FsRef> {
    let entries = local_entries(shared, spec)?;
    let staging = staging_dir(&shared.store, "local-")?;
    let content = staging.path().join("fs");
    fs::create_dir(&content).map_err(|e| Error::io("create directory", &content, e))?;
    local::copy_selection(&spec.dir, &entries, &content)?;
    commit_content(&shared.store, &content)
}

/// Downloads `url` into a new layer holding one file, mode 0600.
pub(crate) async fn http(
    shared: &Shared,
    url: &str,
    checksum: Option<&Digest>,
    filename: Option<&str>,
    ctx: &ExecContext,
) -> Result<FsRef> {
    let name = filename
        .map(str::to_owned)
        .or_else(|| {
            url.split(['?', '#'])
                .next()
                .and_then(|u| u.rsplit('/').next())
                .filter(|s| !s.is_empty() && !s.contains("://"))
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "download".to_owned());
    if name.contains('/') || name == "." || name == ".." {
        return Err(Error::Invalid {
            what: "download file name",
            value: name,
            reason: "must be a plain file name".to_owned(),
        });
    }
    let http_err = |source| Error::Http {
        url: url.to_owned(),
        source,
    };
    let client = shared.http_client().map_err(http_err)?;
    let resp = client.get(url).send().await.map_err(http_err)?;
    if !resp.status().is_success() {
        return Err(Error::HttpStatus {
            url: url.to_owned(),
            status: resp.status().to_string(),
        });
    }
    let total = resp.content_length();
    let staging = staging_dir(&shared.store, "http-")?;
    let content = staging.path().join("fs");
    fs::create_dir(&content).map_err(|e| Error::io("create directory", &content, e))?;
    let path = content.join(&name);
    let file = fs::File::create(&path).map_err(|e| Error::io("create", &path, e))?;
    let mut w = kiln_oci::digest::Sha256Writer::new(std::io::BufWriter::new(file));
    let mut stream = resp.bytes_stream();
    let mut done = 0u64;
    while let Some(chunk) = stream.next().await {
        if ctx.cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        let chunk = chunk.map_err(http_err)?;
        w.write_all(&chunk)
            .map_err(|e| Error::io("write", &path, e))?;
        done += chunk.len() as u64;
        ctx.progress.progress(done, total);
    }
    let (mut inner, digest, _) = w.into_parts();
    inner.flush().map_err(|e| Error::io("write", &path, e))?;
    drop(inner);
    if let Some(expected) = checksum
        && expected != &digest
    {
        return Err(Error::Checksum {
            url: url.to_owned(),
            expected: expected.to_string(),
            actual: digest.to_string(),
        });
    }
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600))
        .map_err(|e| Error::io("set permissions of", &path, e))?;
    let store = shared.store.clone();
    blocking(move || {
        let r = commit_content(&store, &content);
        drop(staging);
        r
    })
    .await
}

async fn git_cmd(remote: &str, dir: &Path, args: &[&str]) -> Result<()> {
    let out = tokio::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::GitMissing {
                    remote: remote.to_owned(),
                }
            } else {
                Error::io("run git in", dir, e)
            }
        })?;
    if !out.status.success() {
        return Err(Error::Git {
            remote: remote.to_owned(),
            command: args.first().copied().unwrap_or("").to_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(())
}

/// Checks `remote` out at `ref_` into a new layer.
pub(crate) async fn git(
    shared: &Shared,
    remote: &str,
    ref_: Option<&str>,
    keep_git_dir: bool,
    subdir: Option<&str>,
) -> Result<FsRef> {
    let staging = staging_dir(&shared.store, "git-")?;
    let repo = staging.path().join("repo");
    fs::create_dir(&repo).map_err(|e| Error::io("create directory", &repo, e))?;
    git_cmd(remote, &repo, &["init", "-q"]).await?;
    git_cmd(remote, &repo, &["remote", "add", "origin", remote]).await?;
    let want = ref_.unwrap_or("HEAD");
    // A shallow fetch of the one ref (branch, tag or, where the server
    // allows it, commit); a full fetch when that fails.
    if git_cmd(
        remote,
        &repo,
        &["fetch", "-q", "--depth", "1", "origin", want],
    )
    .await
    .is_ok()
    {
        git_cmd(remote, &repo, &["checkout", "-q", "FETCH_HEAD"]).await?;
    } else {
        git_cmd(
            remote,
            &repo,
            &[
                "fetch",
                "-q",
                "--tags",
                "origin",
                "+refs/heads/*:refs/remotes/origin/*",
            ],
        )
        .await?;
        let candidates = [format!("origin/{want}"), want.to_owned()];
        let mut ok = false;
        for c in &candidates {
            if git_cmd(remote, &repo, &["checkout", "-q", c]).await.is_ok() {
                ok = true;
                break;
            }
        }
        if !ok {
            return Err(Error::Git {
                remote: remote.to_owned(),
                command: "checkout".to_owned(),
                stderr: format!("reference {want:?} not found"),
            });
        }
    }
    let store = shared.store.clone();
    let subdir = subdir.map(str::to_owned);
    blocking(move || {
        if !keep_git_dir {
            let g = repo.join(".git");
            fs::remove_dir_all(&g).map_err(|e| Error::io("remove", &g, e))?;
        }
        let content = match subdir.as_deref().map(crate::paths::clean_abs) {
            Some(sub) if sub != "/" => {
                let p = crate::paths::resolve(&repo, &sub)
                    .map_err(|e| Error::io("resolve", &sub, e))?;
                if !p.is_dir() {
                    return Err(Error::NotFound { path: sub });
                }
                let out = staging.path().join("fs");
                fs::rename(&p, &out).map_err(|e| Error::io("move", &p, e))?;
                out
            }
            _ => repo,
        };
        chown_tree(&content)?;
        let r = commit_content(&store, &content);
        drop(staging);
        r
    })
    .await
}

/// Gives every entry of a tree to `0:0`.
fn chown_tree(dir: &Path) -> Result<()> {
    crate::copy::set_owner_times(dir, 0, 0, None)?;
    for entry in fs::read_dir(dir).map_err(|e| Error::io("read directory", dir, e))? {
        let entry = entry.map_err(|e| Error::io("read directory", dir, e))?;
        let p = entry.path();
        let ft = entry.file_type().map_err(|e| Error::io("stat", &p, e))?;
        if ft.is_dir() {
            chown_tree(&p)?;
        } else {
            crate::copy::set_owner_times(&p, 0, 0, None)?;
        }
    }
    Ok(())
}
